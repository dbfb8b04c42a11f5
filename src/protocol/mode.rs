//! The two ways a server runs its workers, as `--mode` takes them and as
//! `stats` and `health` report them (`"mode": "processes"`).

use serde::{Deserialize, Serialize};

/// How workers are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Worker subprocesses connected with ipc-channel.
    Processes,
    /// Worker threads inside the server.
    Threads,
}

impl Mode {
    /// The mode's name as used by `--mode` and in `stats`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Processes => "processes",
            Mode::Threads => "threads",
        }
    }
}
