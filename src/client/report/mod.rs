//! Reports of a benchmark run: one data model, one exporter per format.
//!
//! [`RunReport`] is the whole result as plain data (it is what `--json`
//! writes). Each format is one file with one [`Exporter`]:
//! - [`summary`]: the human summary on stdout;
//! - [`json`]: the whole [`RunReport`] (`--json`);
//! - [`csv_row`]: one summary row per run, appended to `--csv`;
//! - [`hgrm`]: the percentile distribution (`--hgrm`), in the text format of
//!   Java HdrHistogram's `outputPercentileDistribution`;
//! - [`requests_csv`] and [`interval_log`]: written *during* the run — one
//!   row per request (`--requests-csv`) and the HdrHistogram interval log
//!   (`--hdr-log`).
//!
//! [`files::Outputs`] is the one place that creates every output file
//! before the run starts (so a bad path fails at once, not after a long
//! run), attaches the streaming exporters to the run, and has every
//! exporter write once it is over.

pub(crate) mod csv_row;
pub(crate) mod files;
pub(crate) mod hgrm;
pub(crate) mod interval_log;
pub(crate) mod json;
pub(crate) mod requests_csv;
pub(crate) mod summary;

use std::fs::File;
use std::io::{self, BufWriter};
use std::thread::JoinHandle;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::bench::options::{Pacing, StopAfter, Warmup};
use crate::client::bench::recorder::Counts;
use crate::client::bench::{BenchRun, RunSinks, ServerInfo};
use crate::error::{Error, Result};

/// Capacity of the channels from the connections to the streaming writers.
const CHANNEL_CAPACITY: usize = 64 * 1024;

/// One output format. An exporter owns its destination (a file created
/// before the run, or stdout); [`files::Outputs`] calls `attach` before the
/// run and `finish` after it, in a fixed order.
pub(crate) trait Exporter {
    /// Hooks into the run before it starts. Only formats written while the
    /// run goes (one row per request, the interval log) need this.
    fn attach(&mut self, _live: &mut LiveRun<'_>) {}

    /// Writes this format once the run is over.
    ///
    /// # Errors
    /// The destination could not be written; the error names the flag.
    fn finish(self: Box<Self>, run: &BenchRun, report: &RunReport) -> Result<()>;
}

/// A report file written by its own thread while the run goes (one row per
/// request, the interval log), so memory does not grow with the run: the
/// file is created before the run, its writer starts with the run, and it
/// is joined — and its error reported under its flag — after.
pub(crate) struct Streamed {
    flag: &'static str,
    file: Option<BufWriter<File>>,
    writer: Option<JoinHandle<io::Result<u64>>>,
}

impl Streamed {
    /// The file of `flag`, already created.
    pub(crate) fn new(flag: &'static str, file: BufWriter<File>) -> Self {
        Streamed { flag, file: Some(file), writer: None }
    }

    /// Starts the writer thread on the file (once): `spawn` returns where
    /// the connections send their data, and the thread.
    pub(crate) fn start<T>(
        &mut self,
        spawn: impl FnOnce(BufWriter<File>) -> (T, JoinHandle<io::Result<u64>>),
    ) -> Option<T> {
        let (sender, writer) = spawn(self.file.take()?);
        self.writer = Some(writer);
        Some(sender)
    }

    /// Waits for the writer (the run's senders are gone by now, so it drains
    /// and ends).
    ///
    /// # Errors
    /// The writer failed or panicked; the error names the flag.
    pub(crate) fn join(self) -> Result<()> {
        let Some(writer) = self.writer else { return Ok(()) };
        let flag = self.flag;
        let written = writer.join().map_err(|_| {
            Error::io(format!("writing {flag}"), io::Error::other(format!("the {flag} writer panicked")))
        })?;
        written.map(|_| ()).map_err(|e| Error::io(format!("writing {flag}"), e))
    }
}

/// A report file that cannot be opened: its path, the flag, the OS's reason
/// and what to check (a usage error: exit code 2).
pub(crate) fn cannot_open(flag: &str, path: &std::path::Path, error: io::Error) -> Error {
    Error::input(path, format!("cannot open the file for {flag} ({error}); does its directory exist?"))
}

/// What an exporter may hook into before the run starts.
pub(crate) struct LiveRun<'a> {
    /// Where the connections stream rows (`--requests-csv`).
    pub(crate) sinks: &'a mut RunSinks,
}

/// A latency distribution, summarised (microseconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct LatencyStats {
    /// Values recorded.
    pub(crate) count: u64,
    /// Smallest.
    pub(crate) min_us: u64,
    /// Mean.
    pub(crate) mean_us: f64,
    /// Standard deviation.
    pub(crate) stdev_us: f64,
    /// Largest.
    pub(crate) max_us: u64,
    /// The requested percentiles, in order.
    pub(crate) percentiles: Vec<PercentileValue>,
}

/// One percentile of a distribution.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct PercentileValue {
    /// E.g. 99.9 (100 is the maximum).
    pub(crate) percentile: f64,
    /// Microseconds.
    pub(crate) value_us: u64,
}

impl LatencyStats {
    /// Summarises `histogram` at the given percentiles.
    pub(crate) fn of(histogram: &Histogram<u64>, percentiles: &[f64]) -> Self {
        let empty = histogram.is_empty();
        LatencyStats {
            count: histogram.len(),
            min_us: if empty { 0 } else { histogram.min() },
            mean_us: if empty { 0.0 } else { histogram.mean() },
            stdev_us: if empty { 0.0 } else { histogram.stdev() },
            max_us: if empty { 0 } else { histogram.max() },
            percentiles: percentiles
                .iter()
                .map(|&p| PercentileValue {
                    percentile: p,
                    value_us: if empty { 0 } else { histogram.value_at_percentile(p) },
                })
                .collect(),
        }
    }

    /// Values needed before `percentile` can differ from the maximum: a
    /// p99.9 needs 1,000 of them (below that it *is* the maximum).
    pub(crate) fn samples_needed(percentile: f64) -> u64 {
        if percentile >= 100.0 {
            1
        } else {
            // (less a hair: 100 / 0.1 is 1000.000…1 in floating point)
            (100.0 / (100.0 - percentile) - 1e-9).ceil() as u64
        }
    }

    /// The requested percentiles that have too few values to mean more than
    /// the maximum does.
    pub(crate) fn thin_percentiles(&self) -> Vec<f64> {
        self.percentiles
            .iter()
            .map(|p| p.percentile)
            .filter(|&p| p < 100.0 && self.count < Self::samples_needed(p))
            .collect()
    }

    /// The value at `percentile`, if it was requested.
    pub(crate) fn at(&self, percentile: f64) -> Option<u64> {
        self.percentiles.iter().find(|p| p.percentile == percentile).map(|p| p.value_us)
    }
}

/// Latency split into the server's queue wait, its service time, and the
/// rest (network, framing, threads on both sides), from `"timing": true`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Breakdown {
    /// Waiting for a free worker.
    pub(crate) queue: LatencyStats,
    /// Running on the worker.
    pub(crate) service: LatencyStats,
    /// Everything else: latency from send − queue − service.
    pub(crate) rest: LatencyStats,
}

/// The run's parameters, as reports show them: the workload, and whether
/// results were verified.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RunParameters {
    /// What was sent, how fast, for how long (in the JSON, these fields
    /// stand directly in `parameters`).
    #[serde(flatten)]
    pub(crate) workload: Workload,
    /// Whether compute results were verified.
    pub(crate) verify: bool,
}

/// The workload of a run, declared once for every report: the JSON report's
/// `parameters` and the CSV row's columns `cmd` … `timeout_s` are these
/// fields, in this order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Workload {
    /// The command or mix, e.g. `compute` or `compute:80,ping:20`.
    pub(crate) cmd: String,
    /// `n` of compute requests.
    pub(crate) size: u64,
    /// Connections.
    pub(crate) concurrency: usize,
    /// `closed` or `open`.
    pub(crate) load_model: String,
    /// Requests in flight per connection (closed loop).
    pub(crate) pipeline: Option<usize>,
    /// Target requests per second (open loop).
    pub(crate) rate_rps: Option<f64>,
    /// The rate profile of a staged open loop (`--stages`, `--rate
    /// FROM..TO`), as given; the target of each interval is in `intervals`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stages: Option<String>,
    /// Measured requests per connection, when the run stops by count.
    pub(crate) requests_per_connection: Option<u64>,
    /// Measured seconds, when the run stops by time.
    pub(crate) duration_s: Option<f64>,
    /// Warm-up, e.g. `2s`, `100r` or `none`.
    pub(crate) warmup: String,
    /// Per-request timeout.
    pub(crate) timeout_s: f64,
    /// Images each request carries, when every request carries the same
    /// number (`predict`: 1, `predict_batch`: `--batch`): the summary shows
    /// images/s beside requests/s. Not a report column.
    #[serde(skip)]
    pub(crate) images_per_request: Option<usize>,
}

/// The whole result of a run (what `--json` writes).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunReport {
    /// tc-client's version.
    pub(crate) tool_version: String,
    /// Start of the run, RFC 3339 UTC.
    pub(crate) started_at: String,
    /// The server measured.
    pub(crate) server: ServerInfo,
    /// What was asked for.
    pub(crate) parameters: RunParameters,
    /// How requests ended.
    pub(crate) counts: Counts,
    /// Measured part: first measured send to last measured reply.
    pub(crate) measured_s: f64,
    /// Whole run, warm-up included.
    pub(crate) wall_s: f64,
    /// Good replies (results) per second of measured time.
    pub(crate) throughput_rps: f64,
    /// Every reply (results and error replies) per second of measured time.
    pub(crate) replies_rps: f64,
    /// Latency from the scheduled send (coordinated-omission corrected).
    pub(crate) latency: LatencyStats,
    /// Latency from the actual send.
    pub(crate) latency_uncorrected: LatencyStats,
    /// Queue / service / rest.
    pub(crate) breakdown: Breakdown,
    /// Connections that stopped early, and why.
    pub(crate) connection_errors: Vec<String>,
    /// Whether the run counts as failed (non-zero exit code).
    pub(crate) failed: bool,
    /// Whether Ctrl-C or SIGTERM cut the run short (exit code 130).
    pub(crate) interrupted: bool,
    /// Why `--abort-on-fail` stopped the run (exit code 99); `null` when it
    /// did not.
    pub(crate) aborted: Option<String>,
    /// Each `--threshold`, checked (none: the key is left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) thresholds: Vec<crate::client::bench::thresholds::Verdict>,
    /// The run interval by interval: ok replies and latency from schedule
    /// per `--hdr-log-interval`, warm-up intervals included (empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) intervals: Vec<crate::client::bench::intervals::IntervalFigures>,
}

impl RunReport {
    /// Builds the report of a finished run.
    pub(crate) fn new(run: &BenchRun) -> Self {
        let options = &run.options;
        let percentiles = &options.percentiles;
        let recorder = &run.recorder;
        let (load_model, pipeline, rate_rps, stages) = match &options.pacing {
            Pacing::Closed { pipeline } => ("closed", Some(*pipeline), None, None),
            Pacing::Open { rate } => ("open", None, Some(*rate), None),
            Pacing::Staged(stages) => ("open", None, None, Some(stages.to_string())),
        };
        let (requests_per_connection, duration_s) = match options.stop {
            StopAfter::Requests(n) => (Some(n), None),
            StopAfter::Duration(d) => (None, Some(d.as_secs_f64())),
        };
        let warmup = match options.warmup {
            Warmup::None => "none".to_string(),
            Warmup::Duration(d) => format!("{}s", d.as_secs_f64()),
            Warmup::Requests(n) => format!("{n}r"),
        };
        RunReport {
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: humantime::format_rfc3339_seconds(run.started_at).to_string(),
            server: run.server.clone(),
            parameters: RunParameters {
                workload: Workload {
                    cmd: options.mix.to_string(),
                    size: options.size,
                    concurrency: options.concurrency,
                    load_model: load_model.to_string(),
                    pipeline,
                    rate_rps,
                    stages,
                    requests_per_connection,
                    duration_s,
                    warmup,
                    timeout_s: options.timeout.as_secs_f64(),
                    images_per_request: options.mix.images_per_request(options.images.batch),
                },
                verify: options.verify,
            },
            counts: recorder.counts.clone(),
            measured_s: run.measured_time().as_secs_f64(),
            wall_s: run.wall_time.as_secs_f64(),
            throughput_rps: run.throughput(),
            replies_rps: run.replies_per_second(),
            latency: LatencyStats::of(&recorder.corrected, percentiles),
            latency_uncorrected: LatencyStats::of(&recorder.uncorrected, percentiles),
            breakdown: Breakdown {
                queue: LatencyStats::of(&recorder.queue, percentiles),
                service: LatencyStats::of(&recorder.service, percentiles),
                rest: LatencyStats::of(&recorder.rest, percentiles),
            },
            connection_errors: run.connection_errors.clone(),
            failed: run.failed(),
            interrupted: run.interrupted,
            aborted: run.aborted.clone(),
            thresholds: options.thresholds.iter().map(|threshold| threshold.check(run)).collect(),
            intervals: run.intervals.clone(),
        }
    }

    /// Whether a `--threshold` was crossed, at the end or by
    /// `--abort-on-fail` (exit code 99).
    pub(crate) fn crossed_a_threshold(&self) -> bool {
        self.aborted.is_some() || self.thresholds.iter().any(|verdict| !verdict.passed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::bench::options::{BenchOptions, Target};
    use crate::client::bench::recorder::{latency_histogram, record_us, Recorder, Sample};
    use crate::protocol::Mode;
    use std::io::{self, Write};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, UNIX_EPOCH};

    /// A `Write` whose bytes can be read after the writer thread is done.
    #[derive(Clone, Default)]
    pub(crate) struct SharedBuffer(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A finished run with known numbers, for the exporters' exact-text tests:
    /// 1000 good replies with latencies 1..=1000 µs from schedule (twice that
    /// from send; queue us/10, service us/4), 2 BUSY replies, over exactly 2
    /// measured seconds.
    pub(crate) fn sample_run() -> BenchRun {
        let mut recorder = Recorder::default();
        for us in 1..=1000 {
            recorder.record_ok(Sample {
                corrected_us: us,
                uncorrected_us: 2 * us,
                queue_us: Some(us / 10),
                service_us: Some(us / 4),
            });
        }
        recorder.counts.sent = 1002;
        recorder.counts.errors.insert("BUSY".into(), 2);
        recorder.counts.error_messages.insert("BUSY".into(), "the job queue is full".into());
        let t0 = Instant::now();
        recorder.extend_span(t0, t0 + Duration::from_secs(2));
        BenchRun {
            options: BenchOptions {
                target: Target::Embedded { mode: Mode::Processes, workers: 2, gil: None },
                ..BenchOptions::example()
            },
            server: ServerInfo {
                address: "127.0.0.1:5050".into(),
                mode: Some("processes".into()),
                workers: Some(2),
                instance: "test".into(),
                embedded: true,
                gil: Some(false),
                tls: false,
                hosts: None,
            },
            started_at: UNIX_EPOCH + Duration::from_secs(1_767_323_045), // 2026-01-02T03:04:05Z
            recorder,
            wall_time: Duration::from_millis(2500),
            connection_errors: Vec::new(),
            interrupted: false,
            intervals: Vec::new(),
            aborted: None,
            measured_window: None,
        }
    }

    #[test]
    fn latency_stats_report_the_requested_percentiles() {
        let mut h = latency_histogram();
        for us in 1..=1000 {
            record_us(&mut h, us);
        }
        let stats = LatencyStats::of(&h, &[50.0, 99.0, 100.0]);
        assert_eq!(stats.count, 1000);
        assert_eq!(stats.at(50.0), Some(500));
        assert_eq!(stats.at(99.0), Some(990));
        assert_eq!(stats.at(100.0), Some(1000));
        assert_eq!(stats.max_us, 1000);
        assert_eq!(stats.min_us, 1);
        assert!((stats.stdev_us - 288.7).abs() < 1.0, "{}", stats.stdev_us);
        assert!(stats.thin_percentiles().is_empty(), "1000 values are enough for p99");
        let thin = LatencyStats::of(&h, &[50.0, 99.9, 99.99, 100.0]);
        assert_eq!(thin.thin_percentiles(), vec![99.99], "p99.99 needs 10,000 values");
        assert!((stats.mean_us - 500.5).abs() < 1.0);
        let empty = LatencyStats::of(&latency_histogram(), &[50.0]);
        assert_eq!((empty.count, empty.max_us, empty.at(50.0)), (0, 0, Some(0)));
    }
}
