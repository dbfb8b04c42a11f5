//! The run interval by interval, as the reports keep it: each
//! `--hdr-log-interval` merged over every connection (by
//! [`crate::client::report::interval_log`], while the run goes), reduced to
//! a few figures.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One interval of the run, merged over every connection: how many ok
/// replies it had and their latency from schedule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct IntervalFigures {
    /// When it started, in seconds since the run started.
    pub(crate) start_s: f64,
    /// How much of it was measured, in seconds: `--hdr-log-interval`,
    /// less what fell in the warm-up or after the last reply (the first and
    /// last intervals of a run are partial), 0 for one wholly outside.
    pub(crate) length_s: f64,
    /// Ok replies answered in it.
    pub(crate) ok: u64,
    /// Latency from schedule of those replies; `None` without any.
    pub(crate) p50_us: Option<u64>,
    /// 90th percentile.
    pub(crate) p90_us: Option<u64>,
    /// 99th percentile.
    pub(crate) p99_us: Option<u64>,
    /// The slowest.
    pub(crate) max_us: Option<u64>,
    /// Open loop: the requests per second the schedule asked for in it (a
    /// staged run's profile, averaged over the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) target_rps: Option<f64>,
}

/// Clips each interval's length to the measured part of the run, from
/// `from_s` to `to_s` (seconds since the run started), so that `ok /
/// length_s` is the interval's throughput.
pub(crate) fn clip_to_measured(figures: &mut [IntervalFigures], from_s: f64, to_s: f64) {
    for figure in figures {
        let (start, end) = (figure.start_s.max(from_s), (figure.start_s + figure.length_s).min(to_s));
        figure.length_s = (end - start).max(0.0);
    }
}

impl IntervalFigures {
    pub(crate) fn of(start: Duration, length: Duration, histogram: &Histogram<u64>) -> Self {
        let at = |q: f64| (!histogram.is_empty()).then(|| histogram.value_at_quantile(q));
        IntervalFigures {
            start_s: start.as_secs_f64(),
            length_s: length.as_secs_f64(),
            ok: histogram.len(),
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            max_us: (!histogram.is_empty()).then(|| histogram.max()),
            target_rps: None,
        }
    }
}

/// The run so far, complete interval by complete interval: what
/// `tc-client --metrics-addr` and `--live` show of the latency while the
/// run goes. Written by the thread that merges the intervals, once per
/// interval; read by scrapes and frames. A `Mutex`: one short lock a
/// second on the writing side.
#[derive(Debug)]
pub(crate) struct SoFar {
    /// The ok replies so far (µs), from schedule and from send.
    pub(crate) latency: std::sync::Mutex<super::IntervalLatencies>,
    /// The same, of the last complete interval alone ("the last second").
    pub(crate) last_interval: std::sync::Mutex<super::IntervalLatencies>,
    /// The open loop's target rate in the last complete interval, as f64
    /// bits; `NaN` in a closed loop.
    pub(crate) target_rps: std::sync::atomic::AtomicU64,
}

impl Default for SoFar {
    fn default() -> Self {
        SoFar {
            latency: std::sync::Mutex::default(),
            last_interval: std::sync::Mutex::default(),
            target_rps: std::sync::atomic::AtomicU64::new(f64::NAN.to_bits()),
        }
    }
}
