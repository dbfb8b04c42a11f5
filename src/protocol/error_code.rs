//! The error codes a client can receive, one per distinct thing it can do about it.

use serde::{Deserialize, Serialize};

/// The `code` of an error reply `{"id", "error": {"code", "message"}}`.
///
/// Codes are stable strings (`BAD_JSON`, ...) that clients can match on; the
/// `message` next to them is for people and may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The frame itself is malformed (e.g. a zero length). The connection stays open.
    BadFrame,
    /// The frame announced more than `--max-frame` bytes. The server replies,
    /// then closes the connection: it cannot find the next frame boundary.
    FrameTooLarge,
    /// The payload is not valid UTF-8 JSON. The connection stays usable.
    BadJson,
    /// Valid JSON, but not a valid request (not an object, a missing or
    /// wrong-typed field, a value out of range).
    BadRequest,
    /// `cmd` names no command this server knows.
    UnknownCommand,
    /// The job queue is full; try again later (or lower the load).
    Busy,
    /// The worker process running the job died before answering (after the
    /// retries allowed by `--retries`, for jobs that may be retried).
    WorkerCrashed,
    /// The job ran longer than `--job-timeout`; its worker was replaced.
    Timeout,
    /// This client sent more than `--rate-limit` allows.
    RateLimited,
    /// The connection did not authenticate with the server's `--auth-token`.
    Unauthorized,
    /// The server is stopping and no longer takes jobs.
    ShuttingDown,
    /// A fault inside the server; the message says what.
    Internal,
    /// An image that cannot be decoded (bad base64, not PNG/JPEG/BMP/GIF, corrupt).
    BadImage,
    /// An image larger than `--max-image-bytes` once decoded from base64.
    ImageTooLarge,
    /// No model is loaded, or the model file could not be loaded.
    ModelUnavailable,
    /// The accelerator mutex is required and the caller does not hold it
    /// (or shows a stale fencing token).
    LockRequired,
    /// The request names something the server refuses to touch (a model
    /// path outside `--models-dir`).
    Forbidden,
    /// The connection owed nothing and sent nothing for `--idle-timeout`;
    /// the server closed it. Connect again to go on.
    IdleTimeout,
}

/// An error reply's two parts: a stable code for programs and a sentence for
/// people. This one type carries an error from wherever it is found — the
/// parser, a command, the job queue, a worker — to the reply encoder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    /// What kind of mistake it is.
    pub code: ErrorCode,
    /// A sentence a person can act on.
    pub message: String,
}

impl ReplyError {
    /// An error reply with this code and message.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ReplyError { code, message: message.into() }
    }
}

impl ErrorCode {
    /// Every code, in a fixed order (used to index counters).
    pub(crate) const ALL: [ErrorCode; 18] = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::BadJson,
        ErrorCode::BadRequest,
        ErrorCode::UnknownCommand,
        ErrorCode::Busy,
        ErrorCode::WorkerCrashed,
        ErrorCode::Timeout,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::BadImage,
        ErrorCode::ImageTooLarge,
        ErrorCode::ModelUnavailable,
        ErrorCode::LockRequired,
        ErrorCode::Forbidden,
        ErrorCode::IdleTimeout,
    ];

    /// The code as it appears on the wire, e.g. `"BAD_JSON"`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::BadJson => "BAD_JSON",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::UnknownCommand => "UNKNOWN_COMMAND",
            ErrorCode::Busy => "BUSY",
            ErrorCode::WorkerCrashed => "WORKER_CRASHED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::BadImage => "BAD_IMAGE",
            ErrorCode::ImageTooLarge => "IMAGE_TOO_LARGE",
            ErrorCode::ModelUnavailable => "MODEL_UNAVAILABLE",
            ErrorCode::LockRequired => "LOCK_REQUIRED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::IdleTimeout => "IDLE_TIMEOUT",
        }
    }

    /// Position of this code in [`ErrorCode::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde_and_all_is_in_index_order() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i);
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
