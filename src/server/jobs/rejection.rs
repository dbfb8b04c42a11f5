//! Why a job was not accepted into the queue.

use crate::protocol::{ErrorCode, ReplyError};

/// Why a job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The queue is full (`BUSY`).
    Busy,
    /// The worker pool has stopped (`SHUTTING_DOWN`).
    Closed,
}

impl Rejection {
    /// The error the client gets.
    pub(crate) fn to_error(self, capacity: usize) -> ReplyError {
        match self {
            Rejection::Busy => ReplyError::new(
                ErrorCode::Busy,
                format!(
                    "the job queue is full ({} waiting); retry later or lower the load",
                    crate::units::count(capacity as u64, "job", "jobs")
                ),
            ),
            Rejection::Closed => {
                ReplyError::new(ErrorCode::ShuttingDown, "the server is shutting down and takes no new jobs")
            }
        }
    }
}
