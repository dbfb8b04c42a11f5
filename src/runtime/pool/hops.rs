//! Where a job's time goes between its acceptance and its reply, hop by
//! hop: `stats` → `hops`, one histogram per hop.
//!
//! A thread-mode job makes one hop a process-mode job makes three of:
//!
//! ```text
//! threads:   queue ─▶ worker thread runs it ─▶ reply
//! processes: queue ─▶ driver ─ipc─▶ worker process runs it ─ipc─▶ driver ─▶ reply
//!                     to_worker  behind_in_worker  held_in_worker  to_driver
//! ```
//!
//! The hops across the process boundary are timed with `CLOCK_MONOTONIC`,
//! which every process on a machine reads alike, so the driver's send and
//! the worker's receive are two readings of one clock. Each worker records
//! into its own histograms (a lock nobody else takes while jobs run), and
//! `stats` adds them up.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A duration in nanoseconds, as the histograms take it.
pub(crate) fn nanos(took: Duration) -> u64 {
    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
}

/// A job's hops, in the order it makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    /// Accepted → taken by a worker thread or a driver (waiting for a free
    /// worker, and the wake-up of the one that takes it).
    Queue,
    /// Process mode: the driver sent it → the worker process received it
    /// (the ipc message and the worker's wake-up).
    ToWorker,
    /// Process mode: waiting inside the worker behind the jobs sent before
    /// it in the same message.
    BehindInWorker,
    /// Running.
    Run,
    /// Process mode: done → its result sent (short jobs' results wait to go
    /// back together).
    HeldInWorker,
    /// Process mode: the results message sent → the driver read it (the ipc
    /// message and the driver's wake-up).
    ToDriver,
    /// Done (or read back by the driver) → the reply handed to the socket:
    /// the registry, encoding, the write.
    Reply,
}

impl Hop {
    const ALL: [Hop; 7] = [
        Hop::Queue,
        Hop::ToWorker,
        Hop::BehindInWorker,
        Hop::Run,
        Hop::HeldInWorker,
        Hop::ToDriver,
        Hop::Reply,
    ];

    fn name(self) -> &'static str {
        match self {
            Hop::Queue => "queue",
            Hop::ToWorker => "to_worker",
            Hop::BehindInWorker => "behind_in_worker",
            Hop::Run => "run",
            Hop::HeldInWorker => "held_in_worker",
            Hop::ToDriver => "to_driver",
            Hop::Reply => "reply",
        }
    }
}

/// Histograms count tenths of a microsecond...
const TICK_NS: u64 = 100;
/// ... up to 10 s; longer is counted as 10 s.
const MOST_TICKS: u64 = 100_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MOST_TICKS, 2).expect("constant histogram bounds are valid")
}

/// Every worker's hop histograms.
#[derive(Debug)]
pub(crate) struct Hops {
    per_worker: Vec<Mutex<[Histogram<u64>; 7]>>,
}

/// One hop as `stats` shows it, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct HopReport {
    /// `queue`, `to_worker`, `behind_in_worker`, `run`, `held_in_worker`,
    /// `to_driver` or `reply`.
    pub(crate) hop: String,
    /// Jobs timed.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_us: f64,
    /// 99th percentile.
    pub(crate) p99_us: f64,
    /// Mean.
    pub(crate) mean_us: f64,
}

impl Hops {
    /// Histograms for `workers` workers, all empty.
    pub(crate) fn new(workers: usize) -> Hops {
        Hops { per_worker: (0..workers).map(|_| Mutex::new(std::array::from_fn(|_| histogram()))).collect() }
    }

    /// Records how many nanoseconds each hop took on worker `id`, under one
    /// lock (a job's hops, or a batch's queue waits).
    pub(crate) fn record_all(&self, id: usize, hops: &[(Hop, u64)]) {
        let Some(slot) = self.per_worker.get(id) else { return };
        let mut histograms = slot.lock().unwrap_or_else(PoisonError::into_inner);
        for &(hop, ns) in hops {
            let ticks = (ns / TICK_NS).clamp(1, MOST_TICKS);
            histograms[hop as usize].saturating_record(ticks);
        }
    }

    /// Every hop that has been timed, in a job's order, summed over the
    /// workers.
    pub(crate) fn report(&self) -> Vec<HopReport> {
        let mut sums: [Histogram<u64>; 7] = std::array::from_fn(|_| histogram());
        for slot in &self.per_worker {
            let histograms = slot.lock().unwrap_or_else(PoisonError::into_inner);
            for (sum, histogram) in sums.iter_mut().zip(histograms.iter()) {
                // Same bounds on both sides: adding cannot fail.
                let _ = sum.add(histogram);
            }
        }
        // Ticks to microseconds, to a tenth.
        let us = |ticks: f64| (ticks * TICK_NS as f64 / 100.0).round() / 10.0;
        Hop::ALL
            .iter()
            .zip(sums.iter())
            .filter(|(_, histogram)| !histogram.is_empty())
            .map(|(hop, histogram)| HopReport {
                hop: hop.name().to_string(),
                count: histogram.len(),
                p50_us: us(histogram.value_at_quantile(0.5) as f64),
                p99_us: us(histogram.value_at_quantile(0.99) as f64),
                mean_us: us(histogram.mean()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_are_summed_over_workers_in_a_jobs_order_and_shown_in_microseconds() {
        let hops = Hops::new(2);
        hops.record_all(1, &[(Hop::Reply, 3_000)]);
        hops.record_all(0, &[(Hop::Queue, 10_000), (Hop::Run, 2_000)]);
        hops.record_all(1, &[(Hop::Queue, 10_000)]);
        let report = hops.report();
        let names: Vec<&str> = report.iter().map(|r| r.hop.as_str()).collect();
        assert_eq!(names, ["queue", "run", "reply"], "untimed hops are left out");
        assert_eq!(report[0].count, 2, "both workers' queue waits");
        assert_eq!(report[0].p50_us, 10.0);
        assert_eq!(report[2].p50_us, 3.0);
    }
}
