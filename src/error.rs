//! The library's error type.
//!
//! Errors that stay inside one connection (a bad frame, a bad request) are not
//! `Error`s: they become error *replies* (see [`crate::protocol::ErrorCode`]).
//! This type is for failures that stop an operation of the server or client as
//! a whole: a socket that cannot be bound, a worker process that cannot be
//! spawned, an I/O error while talking to a server.

use std::io;

/// Everything that can go wrong in the library outside of one request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error, with what we were doing at the time.
    /// (`Display` shows the context; the cause is the error's `source`, which
    /// `anyhow`'s `{:#}` prints after it.)
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

    /// A peer sent something that is not valid protocol.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Wraps an I/O error with a description of what was being attempted.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

impl Error {
    /// The message with every underlying cause, e.g. "connecting to
    /// 127.0.0.1:1: Connection refused (os error 111)".
    pub fn full_message(&self) -> String {
        let mut message = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(inner) = cause {
            let text = inner.to_string();
            if !message.ends_with(&text) {
                message = format!("{message}: {text}");
            }
            cause = inner.source();
        }
        message
    }
}

/// The library's `Result`, with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_message_names_the_context_and_the_cause_once() {
        let e = Error::io(
            "connecting to 127.0.0.1:1",
            io::Error::new(io::ErrorKind::ConnectionRefused, "refused"),
        );
        assert_eq!(e.to_string(), "connecting to 127.0.0.1:1");
        assert_eq!(e.full_message(), "connecting to 127.0.0.1:1: refused");
    }
}
