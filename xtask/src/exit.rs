//! Exit codes are part of the interface: 1 means "the check ran and said no",
//! 2 means "the input or the machine is not usable; nothing was written".

use std::fmt;
use std::process::ExitCode;

/// An error that carries the exit code it must produce.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Bad input or a missing tool: exit 2.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    Failure { code: 2, message: message.into() }.into()
}

/// A verdict that failed (budget breach, drift, uncovered site): exit 1.
pub fn verdict(message: impl Into<String>) -> anyhow::Error {
    Failure { code: 1, message: message.into() }.into()
}

/// What a command returns when it ran to the end: success or a failed verdict
/// whose details were already printed.
pub type Outcome = anyhow::Result<ExitCode>;

pub fn report(result: Outcome) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => match err.downcast_ref::<Failure>() {
            Some(failure) => {
                eprintln!("error: {failure}");
                ExitCode::from(failure.code)
            }
            None => {
                eprintln!("error: {err:#}");
                ExitCode::from(2)
            }
        },
    }
}
