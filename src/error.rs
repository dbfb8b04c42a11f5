//! **Shared** — the library's error type.
//!
//! Errors that stay inside one connection (a bad frame, a bad request) are not
//! `Error`s: they become error *replies* (see [`crate::protocol::ReplyError`]).
//! This type is for failures that stop an operation of the server or client as
//! a whole: a socket that cannot be bound, a worker process that cannot be
//! spawned, a flag out of range, a report file that cannot be read.
//!
//! Each variant means one thing, and its message is a sentence a person can
//! act on. The cause of an [`Error::Io`] is its `source`, which the binaries
//! print after it with anyhow's `{:#}` ("connecting to 127.0.0.1:1:
//! Connection refused (os error 111)").

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the library outside of one request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error, with what we were doing at the time.
    /// (`Display` shows the context; the cause is the error's `source`.)
    #[error("{context}")]
    Io {
        /// What the library was doing, e.g. "connecting to 127.0.0.1:5050".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A frame could not be read or written (see [`crate::frame::FrameError`]).
    #[error(transparent)]
    Frame(#[from] crate::frame::FrameError),

    /// A worker process could not be started or did not complete its handshake.
    #[error("worker {worker}: {message}")]
    WorkerSpawn {
        /// The worker slot that failed.
        worker: usize,
        /// What went wrong, in words.
        message: String,
    },

    /// A peer — a server or a worker process — sent or did something the
    /// protocol does not allow (a reply that is not JSON, a closed connection
    /// before the reply).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A server setting is out of range or inconsistent (the message names
    /// the flag).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A benchmark option is out of range or inconsistent (the client's
    /// `OptionsError`, which names the flag).
    #[error("{message}")]
    Options {
        /// The flag at fault, e.g. `--rate`.
        flag: &'static str,
        /// The sentence.
        message: String,
    },

    /// A model file could not be loaded (the worker side's `ModelError`, as
    /// a sentence naming the file).
    #[error("{0}")]
    Model(String),

    /// An input file (a CSV, a `.hgrm`, an interval log) cannot be used.
    #[error("{}: {message}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// NATS (the engine of worker hosts and gateways) failed us: it cannot be
    /// reached, has no JetStream, or sent something we cannot read.
    #[error("{0}")]
    Remote(String),

    /// A chart could not be drawn.
    #[error("drawing the chart: {0}")]
    Chart(String),

    /// What the user typed cannot be sent (e.g. `tc-client call` with text
    /// that is not a JSON object).
    #[error("{0}")]
    Usage(String),

    /// The terminal cannot be used (the interactive shell).
    #[error("the terminal: {0}")]
    Terminal(String),
}

impl Error {
    /// Wraps an I/O error with a description of what was being attempted.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// The process exit code for this error, as documented in
    /// `docs/MESSAGES.md`: [`EXIT_USAGE`] when what was typed cannot work
    /// (flags, configuration, input files, a model file), [`EXIT_FAILED`]
    /// when it could but did not (no server there, a broken connection, a
    /// peer's error).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_)
            | Error::Options { .. }
            | Error::Config(_)
            | Error::Input { .. }
            | Error::Model(_) => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }

    /// An input file that cannot be used, and why.
    pub(crate) fn input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Input { path: path.into(), message: message.into() }
    }
}

/// Exit code: it ran, or tried to, and failed (a benchmark with problems, an
/// error reply to `call`, a server that cannot be reached or cannot listen).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the command line, a configuration value or an input file is
/// wrong; nothing was done.
pub const EXIT_USAGE: u8 = 2;

/// The library's `Result`, with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
