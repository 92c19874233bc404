//! The one place a process is started through `std::process` rather than run by xshell. xshell's
//! `Cmd` runs a process to its end (`run`, `read`, `output`); the processes started here must run
//! beside us: the browsers, the aiortc peer and the lab's driver are spawned, spoken to over pipes
//! and killed or waited for later. And `build` needs idf.py's exit status for its own message
//! while the output streams to the terminal, where xshell's `run` turns a failure into an error
//! of its own. Their command lines are still written with `cmd!`; this module only starts them.

use std::fs::File;
use std::process::{Child, Command, ExitStatus, Stdio};

/// Where a background process's standard stream goes.
pub enum Io {
    Piped,
    Null,
    File(File),
}

impl From<Io> for Stdio {
    fn from(io: Io) -> Stdio {
        match io {
            Io::Piped => Stdio::piped(),
            Io::Null => Stdio::null(),
            Io::File(file) => file.into(),
        }
    }
}

/// Starts `cmd` in the background with stdin, stdout and stderr as given.
pub fn spawn(cmd: xshell::Cmd<'_>, stdin: Io, stdout: Io, stderr: Io) -> std::io::Result<Child> {
    Command::from(cmd).stdin(stdin).stdout(stdout).stderr(stderr).spawn()
}

/// Runs `cmd` to its end on the terminal's streams; its exit status.
pub fn status(cmd: xshell::Cmd<'_>) -> std::io::Result<ExitStatus> {
    Command::from(cmd).status()
}
