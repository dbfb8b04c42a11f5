//! What one connection measured, and how measurements are merged.
//!
//! Each connection's receiver thread owns a [`Recorder`] and records into it
//! without any lock; when the run ends the recorders are merged (histograms
//! added, counts summed), as oha does. A histogram's size depends only on the
//! largest value it holds (3 significant digits, values clamped at one hour),
//! never on how many values it holds, so memory does not grow with the
//! length of the run. Histograms start small and grow to the range actually
//! seen, which keeps 1,000 connections cheap.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency tracked exactly (one hour, in µs); larger values are
/// clamped to it.
pub(crate) const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits, growing to
/// the range it needs.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

/// Records `us` microseconds, clamped to 1 ..= [`MAX_LATENCY_US`].
pub(crate) fn record_us(histogram: &mut Histogram<u64>, us: u64) {
    let value = us.clamp(1, MAX_LATENCY_US);
    // `record` grows an auto-resizing histogram to fit the value
    // (`saturating_record` would clamp it to the current top instead).
    if histogram.record(value).is_err() {
        histogram.saturating_record(value);
    }
}

/// How each request ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counts {
    /// Measured requests sent (warm-up excluded).
    pub(crate) sent: u64,
    /// Measured requests answered with a result (and, with `--verify`, the
    /// right one).
    pub(crate) ok: u64,
    /// Measured requests answered with an error, by error code.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Requests with no reply within `--timeout`.
    pub(crate) timeouts: u64,
    /// Compute results that differ from the local computation (`--verify`).
    pub(crate) mismatches: u64,
    /// Replies for a request that had already been answered.
    pub(crate) duplicates: u64,
    /// Replies whose id matches no request this client sent, or that are
    /// not valid protocol.
    pub(crate) unknown: u64,
    /// Replies that came after their request had timed out (the timeout is
    /// already counted).
    pub(crate) late: u64,
    /// Requests left without a reply because the connection broke.
    pub(crate) missing: u64,
    /// Requests left without a reply because the server closed the
    /// connection in order (end of stream) before reading them: a server that
    /// stops cleanly, like a draining tc-server, answers everything it read
    /// first, so these never reached it.
    pub(crate) unread: u64,
    /// Requests still in flight when the run was interrupted (Ctrl-C) and the
    /// grace for their replies ran out; not a problem of the server.
    pub(crate) cancelled: u64,
    /// Warm-up requests answered (any outcome; not in any statistic).
    pub(crate) warmup: u64,
    /// The first message the server gave with each error code, e.g. why a
    /// request was `BAD_REQUEST`.
    pub(crate) error_messages: BTreeMap<String, String>,
}

impl Counts {
    /// Server errors, all codes together.
    pub(crate) fn error_replies(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Everything that should make the run fail: error replies, timeouts,
    /// wrong results, duplicate, unknown and missing replies, requests the
    /// server never read. (Requests cancelled by Ctrl-C are not problems.)
    pub(crate) fn problems(&self) -> u64 {
        self.error_replies()
            + self.timeouts
            + self.mismatches
            + self.duplicates
            + self.unknown
            + self.missing
            + self.unread
    }

    /// Measured requests that were answered (ok or error).
    pub(crate) fn answered(&self) -> u64 {
        self.ok + self.error_replies() + self.mismatches
    }

    fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (code, count) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += count;
        }
        self.timeouts += other.timeouts;
        self.mismatches += other.mismatches;
        self.duplicates += other.duplicates;
        self.unknown += other.unknown;
        self.late += other.late;
        self.missing += other.missing;
        self.unread += other.unread;
        self.cancelled += other.cancelled;
        self.warmup += other.warmup;
        for (code, message) in &other.error_messages {
            self.error_messages.entry(code.clone()).or_insert_with(|| message.clone());
        }
    }
}

/// One connection's measurements (or, after merging, the whole run's).
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    /// Latency from the *scheduled* send time (coordinated-omission
    /// corrected; the same as `uncorrected` in a closed loop).
    pub(crate) corrected: Histogram<u64>,
    /// Latency from the actual send time.
    pub(crate) uncorrected: Histogram<u64>,
    /// Server-reported wait for a worker.
    pub(crate) queue: Histogram<u64>,
    /// Server-reported time on the worker.
    pub(crate) service: Histogram<u64>,
    /// What is left: network, framing, both sides' threads.
    pub(crate) rest: Histogram<u64>,
    /// Outcomes.
    pub(crate) counts: Counts,
    /// Earliest scheduled send of a measured request.
    pub(crate) first_measured: Option<Instant>,
    /// Latest reply (or timeout) of a measured request.
    pub(crate) last_measured: Option<Instant>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            corrected: latency_histogram(),
            uncorrected: latency_histogram(),
            queue: latency_histogram(),
            service: latency_histogram(),
            rest: latency_histogram(),
            counts: Counts::default(),
            first_measured: None,
            last_measured: None,
        }
    }
}

/// Latency components of one successful reply, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// From the scheduled send.
    pub(crate) corrected_us: u64,
    /// From the actual send.
    pub(crate) uncorrected_us: u64,
    /// Server-reported queue wait, when the reply carried it.
    pub(crate) queue_us: Option<u64>,
    /// Server-reported service time, when the reply carried it.
    pub(crate) service_us: Option<u64>,
}

impl Recorder {
    /// Records a successful reply's latencies.
    pub(crate) fn record_ok(&mut self, sample: Sample) {
        self.counts.ok += 1;
        record_us(&mut self.corrected, sample.corrected_us);
        record_us(&mut self.uncorrected, sample.uncorrected_us);
        if let (Some(queue), Some(service)) = (sample.queue_us, sample.service_us) {
            record_us(&mut self.queue, queue);
            record_us(&mut self.service, service);
            record_us(&mut self.rest, sample.uncorrected_us.saturating_sub(queue + service));
        }
    }

    /// Widens the measured time span to include `scheduled` .. `done`.
    pub(crate) fn extend_span(&mut self, scheduled: Instant, done: Instant) {
        self.first_measured = Some(self.first_measured.map_or(scheduled, |t| t.min(scheduled)));
        self.last_measured = Some(self.last_measured.map_or(done, |t| t.max(done)));
    }

    /// Adds another recorder's measurements to this one.
    pub(crate) fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in [
            (&mut self.corrected, &other.corrected),
            (&mut self.uncorrected, &other.uncorrected),
            (&mut self.queue, &other.queue),
            (&mut self.service, &other.service),
            (&mut self.rest, &other.rest),
        ] {
            mine.add(theirs).expect("all recorders use the same histogram bounds");
        }
        self.counts.add(&other.counts);
        if let (Some(first), Some(last)) = (other.first_measured, other.last_measured) {
            self.extend_span(first, last);
        }
    }

    /// Length of the measured part of the run.
    pub(crate) fn measured_span(&self) -> Duration {
        match (self.first_measured, self.last_measured) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(us: u64) -> Sample {
        Sample { corrected_us: us, uncorrected_us: us, queue_us: Some(us / 10), service_us: Some(us / 2) }
    }

    #[test]
    fn merging_adds_histograms_counts_and_spans() {
        let start = Instant::now();
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for us in 1..=500 {
            a.record_ok(sample(us));
        }
        for us in 501..=1000 {
            b.record_ok(sample(us));
        }
        a.counts.errors.insert("BUSY".into(), 2);
        b.counts.errors.insert("BUSY".into(), 3);
        b.counts.timeouts = 1;
        a.extend_span(start, start + Duration::from_millis(10));
        b.extend_span(start + Duration::from_millis(5), start + Duration::from_millis(40));

        a.merge(&b);
        assert_eq!(a.corrected.len(), 1000);
        assert_eq!(a.corrected.value_at_quantile(0.5), 500);
        assert_eq!(a.corrected.max(), 1000);
        assert_eq!(a.counts.ok, 1000);
        assert_eq!(a.counts.errors["BUSY"], 5);
        assert_eq!(a.counts.problems(), 6);
        assert_eq!(a.measured_span(), Duration::from_millis(40));
        // rest = total - queue - service = us - us/10 - us/2
        let largest_rest = (1..=1000u64).map(|us| us - us / 10 - us / 2).max().unwrap();
        assert_eq!(a.rest.max(), largest_rest);
    }

    #[test]
    fn zero_and_huge_latencies_are_kept_not_dropped() {
        let mut r = Recorder::default();
        r.record_ok(Sample { corrected_us: 0, uncorrected_us: u64::MAX, queue_us: None, service_us: None });
        assert_eq!(r.corrected.len(), 1);
        assert_eq!(r.uncorrected.len(), 1);
        assert!(r.uncorrected.max() >= MAX_LATENCY_US);
        assert!(r.uncorrected.max() < MAX_LATENCY_US + MAX_LATENCY_US / 100, "clamped at one hour");
        assert_eq!(r.queue.len(), 0, "no breakdown without timing fields");
    }
}
