//! **Server side** — what the live dashboard shows: every job as a bar on
//! its worker's row, and the farm's state several times a second.
//!
//! ```text
//!  Completer::finish ──JobSpan──▶ Timeline (ring, numbered) ─┐
//!  workers ──board (busy since, which job)──────────────────┤ every 200 ms, while someone watches:
//!  Farm::stats_report ──────────────────────────────────────┴▶ frames::FrameBuilder ──▶ EventHub ──▶ /events
//! ```
//!
//! A job is recorded once, when it is answered: where it ran, when it
//! started and ended, its command and outcome. The [`Timeline`] is a ring
//! of the latest [`TIMELINE_SPANS`] bars, so a page opened late still sees
//! the last minute or so, and memory stays bounded however long the run.
//! Recording costs one short lock per job, and only on a server with a
//! dashboard (`--metrics-addr`). Everything else on the page — worker
//! states, the queue, rates, events such as a worker replaced — is read
//! from the counters the server keeps anyway, by [`frames`], which compares
//! each reading with the one before ([`events`]).

mod events;
pub(crate) mod frames;

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;

use crate::units::micros;

/// Bars kept for pages that open late (at 1,000 jobs/s, the last 16 s).
pub(crate) const TIMELINE_SPANS: usize = 16_384;
/// The longest client id shown on a bar (a longer one is cut).
const MAX_SHOWN_ID: usize = 64;

/// One answered job, as a bar on the task stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct JobSpan {
    /// Its number in the timeline (1, 2, 3, … in the order answered).
    pub(crate) seq: u64,
    /// The worker slot that ran it (on a gateway, the host's slot).
    pub(crate) worker: usize,
    /// The worker host that ran it (gateways only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// The client's id, as the JSON it sent (`"a1"`, `7`).
    pub(crate) id: String,
    /// The command (`compute`, `predict`, …).
    pub(crate) cmd: &'static str,
    /// When it was accepted, started and ended, in µs since the server
    /// started: `[accepted, start)` is its queue wait, `[start, end)` its run.
    pub(crate) accepted_us: u64,
    pub(crate) start_us: u64,
    pub(crate) end_us: u64,
    /// `ok`, or the error code it was answered with.
    pub(crate) outcome: &'static str,
    /// Workers that tried it (more than 1 after a crash).
    pub(crate) attempts: u32,
}

/// What the dashboard records as the server runs.
#[derive(Debug)]
pub(crate) struct Watch {
    started: Instant,
    timeline: Mutex<Timeline>,
}

/// The latest bars, numbered.
#[derive(Debug, Default)]
struct Timeline {
    spans: VecDeque<JobSpan>,
    /// The number of the newest bar (0: none yet).
    newest: u64,
}

/// A finished job, as the completer knows it.
pub(crate) struct Finished<'a> {
    pub(crate) worker: usize,
    pub(crate) host: Option<&'a str>,
    pub(crate) id: &'a str,
    pub(crate) cmd: &'static str,
    pub(crate) queue_us: u64,
    pub(crate) service_us: u64,
    pub(crate) outcome: &'static str,
    pub(crate) attempts: u32,
}

impl Watch {
    pub(crate) fn new() -> Watch {
        Watch { started: Instant::now(), timeline: Mutex::default() }
    }

    /// Microseconds since the server started, now.
    pub(crate) fn now_us(&self) -> u64 {
        micros(self.started.elapsed())
    }

    /// Microseconds since the server started, at `instant`.
    pub(crate) fn us_at(&self, instant: Instant) -> u64 {
        micros(instant.saturating_duration_since(self.started))
    }

    /// Records a job answered just now.
    pub(crate) fn job_finished(&self, job: Finished<'_>) {
        let end_us = self.now_us();
        let start_us = end_us.saturating_sub(job.service_us);
        let mut id = job.id.to_string();
        if id.len() > MAX_SHOWN_ID {
            let cut = (0..=MAX_SHOWN_ID).rev().find(|&i| id.is_char_boundary(i)).unwrap_or(0);
            id.truncate(cut);
            id.push('…');
        }
        let mut timeline = self.timeline.lock().unwrap_or_else(PoisonError::into_inner);
        timeline.newest += 1;
        let span = JobSpan {
            seq: timeline.newest,
            worker: job.worker,
            host: job.host.map(str::to_string),
            id,
            cmd: job.cmd,
            accepted_us: start_us.saturating_sub(job.queue_us),
            start_us,
            end_us,
            outcome: job.outcome,
            attempts: job.attempts,
        };
        if timeline.spans.len() == TIMELINE_SPANS {
            timeline.spans.pop_front();
        }
        timeline.spans.push_back(span);
    }

    /// The time in the farm (accepted to answered, µs) of every job answered
    /// after `since_us`, read from the newest back (no copy of the ring).
    pub(crate) fn latencies_since(&self, since_us: u64) -> Vec<u64> {
        let timeline = self.timeline.lock().unwrap_or_else(PoisonError::into_inner);
        timeline
            .spans
            .iter()
            .rev()
            .take_while(|span| span.end_us > since_us)
            .map(|span| span.end_us.saturating_sub(span.accepted_us))
            .collect()
    }

    /// The bars numbered after `after`, and the newest number.
    pub(crate) fn spans_after(&self, after: u64) -> (Vec<JobSpan>, u64) {
        let timeline = self.timeline.lock().unwrap_or_else(PoisonError::into_inner);
        // The ring is in order: only the newer end is copied.
        let older = timeline.spans.partition_point(|span| span.seq <= after);
        let newer = timeline.spans.range(older..).cloned().collect();
        (newer, timeline.newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(id: &str) -> Finished<'_> {
        Finished {
            worker: 0,
            host: None,
            id,
            cmd: "compute",
            queue_us: 5,
            service_us: 10,
            outcome: "ok",
            attempts: 1,
        }
    }

    #[test]
    fn bars_are_numbered_in_order_and_read_from_a_number_on() {
        let watch = Watch::new();
        // Past the first 15 µs, so that no time is cut at the server's start.
        std::thread::sleep(std::time::Duration::from_millis(1));
        for id in ["1", "2", "3"] {
            watch.job_finished(finished(id));
        }
        let (all, newest) = watch.spans_after(0);
        assert_eq!(newest, 3);
        assert_eq!(all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["1", "2", "3"]);
        let span = &all[0];
        assert_eq!((span.end_us - span.start_us, span.start_us - span.accepted_us), (10, 5));
        let (later, _) = watch.spans_after(2);
        assert_eq!(later.len(), 1);
    }

    #[test]
    fn the_ring_keeps_the_newest_bars_and_long_ids_are_cut() {
        let watch = Watch::new();
        for _ in 0..TIMELINE_SPANS + 5 {
            watch.job_finished(finished("x"));
        }
        let (kept, newest) = watch.spans_after(0);
        assert_eq!((kept.len(), kept[0].seq, newest), (TIMELINE_SPANS, 6, (TIMELINE_SPANS + 5) as u64));
        watch.job_finished(finished(&"é".repeat(100)));
        let (last, _) = watch.spans_after(newest);
        assert!(last[0].id.len() <= MAX_SHOWN_ID + '…'.len_utf8() && last[0].id.ends_with('…'));
    }
}
