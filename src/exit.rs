//! The exit status that `check` and `scan` share: what CI pipelines branch on.

use std::process::ExitCode;

/// What a run found, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Bad usage or input, or a cluster that cannot be read: 2.
    Error,
    /// Something would be denied: 1.
    Denied,
    /// Nothing would be denied: 0.
    Clean,
}

impl Exit {
    /// Errors outrank denials: a partial verdict is not a verdict.
    pub fn of(errors: usize, denied: usize) -> Self {
        if errors > 0 {
            Self::Error
        } else if denied > 0 {
            Self::Denied
        } else {
            Self::Clean
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        match exit {
            Exit::Error => ExitCode::from(2),
            Exit::Denied => ExitCode::from(1),
            Exit::Clean => ExitCode::SUCCESS,
        }
    }
}
