//! How the replica runs its tools: the 32-bit compilers with the flags every lab artifact gets,
//! cmake configure / build-and-install, one build log with a progress line per step, artifacts
//! written whole, and the flock that gives each cache directory one writer.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use xshell::{cmd, Shell};

/// The compilers for -m32 (g++-multilib); cmake is given the same.
pub const CC: &str = "x86_64-linux-gnu-gcc";
pub const CXX: &str = "x86_64-linux-gnu-g++";

/// What every lab artifact (recorder, driver, port_host) is compiled with: optimised, with the
/// DWARF and frame pointers the symbolizer walks, 32-bit like the MCU, warnings off (`-w`: our
/// lab code is not what is measured for warnings). These are the flags the `cc` crate gave for
/// i686-unknown-linux-gnu with opt_level 2 and debug, kept so figures stay the same.
pub const ARTIFACT_FLAGS: &[&str] = &[
    "-O2",
    "-ffunction-sections",
    "-fdata-sections",
    "-fPIC",
    "-g",
    "-gdwarf-4",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-m32",
    "-march=i686",
    "-w",
];

/// The flags cmake's CMAKE_<LANG>_FLAGS start from (CMAKE_BUILD_TYPE=RelWithDebInfo adds
/// `-O2 -g -DNDEBUG`); the stack adds its knob definitions, mbedTLS adds `-w`.
pub const CMAKE_BASE_FLAGS: &[&str] =
    &["-fasynchronous-unwind-tables", "-ffunction-sections", "-fdata-sections", "-fPIC", "-m32", "-march=i686"];

/// `gcc`/`g++` with ARTIFACT_FLAGS, for tests' fixtures: the caller adds sources and outputs.
#[cfg(test)]
pub fn compiler(sh: &Shell, cpp: bool) -> xshell::Cmd<'_> {
    let cc = if cpp { CXX } else { CC };
    cmd!(sh, "{cc} {ARTIFACT_FLAGS...}")
}

/// One policy's build output: a log file under $ESP_DC_CACHE/host/logs (the terminal, with
/// `--verbose`) and one progress line per step on stderr.
pub struct BuildLog {
    name: String,
    log: Option<(std::fs::File, PathBuf)>,
    progress: Option<Progress>,
}

/// `--verbose`: the build's full output on the terminal instead of progress lines and a log.
pub static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl BuildLog {
    pub fn start(name: &str) -> Result<BuildLog> {
        let mut log = BuildLog { name: name.to_string(), log: None, progress: None };
        if !VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
            let dir = super::cache_root().join("host/logs");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            // One per build while it runs (tests build in parallel threads, runs in parallel
            // processes), renamed to the policy's last build log when it succeeds.
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!("{name}-{}-{n}.log", std::process::id()));
            let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            log.log = Some((file, path));
        }
        log.step("checking");
        Ok(log)
    }

    /// Ends the previous step's progress line (with its time) and starts one for `what`.
    pub fn step(&mut self, what: &str) {
        if let Some(mut p) = self.progress.take() {
            p.done();
        }
        self.progress = Some(Progress::start(format!("host replica ({}): {what}", self.name)));
    }

    /// Runs `cmd` to the end, its output into the log; an error names the command and shows
    /// the log's last lines.
    pub fn run(&mut self, mut cmd: Command) -> Result<()> {
        let line = format!("$ {cmd:?}");
        match &mut self.log {
            Some((file, _)) => {
                writeln!(file, "{line}")?;
                cmd.stdout(file.try_clone()?).stderr(file.try_clone()?);
            }
            // stdout is for the lab's report.
            None => {
                eprintln!("{line}");
                cmd.stdout(std::io::stderr());
            }
        }
        let status = cmd.status().with_context(|| format!("starting {line}"))?;
        if status.success() {
            return Ok(());
        }
        if let Some(p) = &mut self.progress {
            p.failed();
        }
        let detail = match &self.log {
            Some((_, path)) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "; its last lines:\n{}\nthe whole output is in {} (or run again with --verbose)",
                    lines[lines.len().saturating_sub(20)..].join("\n"),
                    path.display()
                )
            }
            None => " (output above)".to_string(),
        };
        Err(crate::exit::bad_input(format!("the host build for `{}` failed ({status}): {line}{detail}", self.name)))
    }

    /// The last step is done: its time on the terminal, the log kept as `<policy>.log`.
    pub fn finish(mut self) -> Result<()> {
        if let Some(mut p) = self.progress.take() {
            p.done();
        }
        if let Some((file, path)) = self.log.take() {
            drop(file);
            let last = path.with_file_name(format!("{}.log", self.name));
            std::fs::rename(&path, &last).with_context(|| format!("keeping the build log as {}", last.display()))?;
        }
        Ok(())
    }
}

/// `cmake -S src -B build -G Ninja` for -m32 with RelWithDebInfo, `-D` `defines` and `flags` for
/// C and C++, compile_commands.json exported, then `cmake --build build --target install`.
/// CMAKE_SYSTEM_NAME/PROCESSOR say what the target is (as for a cross build: -m32 binaries do
/// not run every configure check a native build would), CMAKE_PREFIX_PATH from the environment
/// is cleared so no host package leaks in.
pub fn cmake_build(
    log: &mut BuildLog,
    src: &Path,
    build: &Path,
    prefix: &Path,
    flags: &[&str],
    defines: &[(&str, &str)],
) -> Result<()> {
    let sh = Shell::new()?;
    let flags = flags.join(" ");
    let asm_flags = [&CMAKE_BASE_FLAGS[1..], &["-w"]].concat().join(" ");
    let defines: Vec<String> = defines.iter().map(|(k, v)| format!("-D{k}={v}")).collect();
    let configure = cmd!(
        sh,
        "cmake -S {src} -B {build} -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
         -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=x86
         -DCMAKE_C_COMPILER={CC} -DCMAKE_CXX_COMPILER={CXX} -DCMAKE_ASM_COMPILER={CC}
         -DCMAKE_C_FLAGS={flags} -DCMAKE_CXX_FLAGS={flags} -DCMAKE_ASM_FLAGS={asm_flags}
         -DCMAKE_INSTALL_PREFIX={prefix} -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
         {defines...}"
    )
    .env("CMAKE_PREFIX_PATH", "")
    .env("LC_ALL", "C");
    log.run(configure.into())?;
    log.run(cmd!(sh, "cmake --build {build} --target install --parallel 2").env("LC_ALL", "C").into())
}

/// One progress line: "lab: <what>… 1m02s" on stderr, its time added when the step ends.
pub struct Progress {
    started: std::time::Instant,
    open: bool,
}

impl Progress {
    pub fn start(what: String) -> Progress {
        eprint!("lab: {what}… ");
        Progress { started: std::time::Instant::now(), open: true }
    }

    pub fn done(&mut self) {
        if std::mem::take(&mut self.open) {
            eprintln!("{}", elapsed(self.started.elapsed()));
        }
    }

    pub fn failed(&mut self) {
        if std::mem::take(&mut self.open) {
            eprintln!("failed after {}", elapsed(self.started.elapsed()));
        }
    }
}

impl Drop for Progress {
    /// A step left by an error (`?`) still ends its line, so the error starts on its own.
    fn drop(&mut self) {
        self.failed();
    }
}

pub fn elapsed(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Held while this process writes one cache directory; another process (a second test binary,
/// a second clone's run) or thread that wants the same directory waits, with a message. The
/// kernel drops it when the process dies, so a killed build leaves no stale lock.
pub fn lock_artifact(dir: &Path, log: &mut BuildLog) -> Result<std::fs::File> {
    let path = dir.with_extension("lock");
    crate::fsutil::lock_file(&path, "set ESP_DC_CACHE to a local directory", || {
        log.step(&format!("waiting for another build (it holds {})", path.display()))
    })
}

/// Compiles one artifact unless it exists: the compiler writes a unique temporary file beside
/// it, renamed into place when whole, so no reader sees half a library and two writers (tests
/// in parallel, a second clone) each rename a complete one. `command` gets the path to write.
/// A failure says which: no compiler, or the compiler's own error.
pub(crate) fn compile_artifact(out: &Path, what: &str, command: impl FnOnce(&Path) -> Command) -> Result<()> {
    if out.exists() {
        return Ok(());
    }
    let dir = out.parent().expect("an artifact lives in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A name no other writer uses (process, then a counter for this process's threads), not a
    // created file: the linker makes the output itself, with an executable's mode.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = out.file_name().expect("an artifact has a name").to_string_lossy();
    let partial = tempfile::TempPath::try_from_path(dir.join(format!(".{name}.{}-{n}.partial", std::process::id())))?;
    let mut cmd = command(&partial);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(crate::exit::bad_input(format!(
                "building {what}: no compiler `{program}`; run `bash scripts/setup.sh` (g++-multilib)"
            )))
        }
        Err(e) => return Err(e).with_context(|| format!("building {what}: starting `{program}`")),
    };
    if !output.status.success() {
        bail!(
            "building {what} failed: `{program}` exited with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    partial.persist(out).with_context(|| format!("moving {what} into place at {}", out.display()))?;
    Ok(())
}

pub fn check_multilib() -> Result<()> {
    if !Path::new("/usr/lib/gcc/x86_64-linux-gnu").exists() || !Path::new("/usr/include/x86_64-linux-gnu").exists() {
        return Ok(());
    }
    if !Path::new("/usr/lib32").exists() && !Path::new("/usr/lib/i386-linux-gnu").exists() {
        return Err(crate::exit::bad_input(
            "the 32-bit host replica needs g++-multilib: run `bash scripts/setup.sh` (or `apt-get install g++-multilib`)",
        ));
    }
    Ok(())
}
