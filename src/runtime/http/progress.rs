//! How far one connection has got — request asked, answer started, stream
//! last read — kept in atomics, so the connection's watcher can close one
//! that stalls without locking anything the answer uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::STREAM_STALL;

/// How far one connection has got, shared by its service and its watcher.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Set when the request head has arrived.
    asked: std::sync::atomic::AtomicBool,
    /// When the answer started (ms since `EPOCH`), 0 before.
    answer_started_ms: AtomicU64,
    /// A stream's last frame taken by the browser (ms since `EPOCH`); 0 for
    /// an ordinary answer.
    stream_read_ms: AtomicU64,
}

/// The clock the progress marks are kept in.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Progress {
    pub(super) fn asked(&self) {
        self.asked.store(true, Ordering::Relaxed);
        self.answer_started_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(super) fn has_asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }

    pub(super) fn streamed(&self) {
        self.stream_read_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the answer has taken too long to go out: an ordinary one
    /// longer than `timeout`, a stream with nothing read for [`STREAM_STALL`].
    pub(super) fn overdue(&self, timeout: Duration) -> bool {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        match (self.answer_started_ms.load(Ordering::Relaxed), self.stream_read_ms.load(Ordering::Relaxed)) {
            (0, _) => false,
            (started, 0) => now.saturating_sub(started) > ms(timeout),
            (_, read) => now.saturating_sub(read) > ms(STREAM_STALL),
        }
    }
}
