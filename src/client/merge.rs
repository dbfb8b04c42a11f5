//! `tc-client merge A.hlog B.hlog ...`: the interval logs of several
//! client processes (or machines) against one farm, made into one result —
//! as vegeta merges its result files and k6 users ask for (#140).
//!
//! Histograms are *added*, never percentiles averaged: the p99 of two runs
//! is not the mean of their p99s. Every interval of every log is decoded
//! and added into one histogram for the whole (the report), and into the
//! interval of the merged log it falls in by wall-clock time: each log's
//! `BaseTime` (seconds since the epoch) plus the interval's offset, so logs
//! started at different moments line up — on several machines, as well as
//! their clocks agree.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::bench::intervals::IntervalFigures;
use crate::client::bench::recorder::latency_histogram;
use crate::client::report::interval_log::{self, LoggedInterval};
use crate::client::report::LatencyStats;
use crate::error::{Error, Result};

/// The percentiles the merged report gives (as a run's default).
const PERCENTILES: [f64; 6] = [50.0, 90.0, 99.0, 99.9, 99.99, 100.0];

/// One interval log, read.
struct Log {
    /// `BaseTime` (or `StartTime`): what its offsets count from.
    base: Duration,
    intervals: Vec<LoggedInterval>,
}

fn read_log(path: &Path) -> Result<Log> {
    let (base, intervals) = interval_log::read_log(path)?;
    let base = base.ok_or_else(|| {
        Error::input(path, "it has no StartTime or BaseTime, so its intervals cannot be placed in time")
    })?;
    Ok(Log { base, intervals })
}

/// The merged result, as `--json` writes it.
#[derive(Debug, Serialize)]
pub(crate) struct Merged {
    /// The logs merged, as given.
    pub(crate) logs: Vec<String>,
    /// Latency from schedule of every ok reply in every log (µs).
    pub(crate) latency: LatencyStats,
    /// The merged log's intervals: every log's replies in each.
    pub(crate) intervals: Vec<IntervalFigures>,
    /// Ok replies per second, every log together, over the merged log's
    /// full intervals (its first and last are partial).
    pub(crate) throughput_rps: f64,
    #[serde(skip)]
    whole: Histogram<u64>,
    #[serde(skip)]
    start: Duration,
    #[serde(skip)]
    length: Duration,
    #[serde(skip)]
    by_interval: BTreeMap<u64, Histogram<u64>>,
    #[serde(skip)]
    targets: BTreeMap<u64, f64>,
    #[serde(skip)]
    full_intervals: usize,
}

/// Merges the interval logs at `paths`.
///
/// # Errors
/// A log that cannot be read or decoded, or whose intervals differ in
/// length from the others' (they could not be added interval by interval).
pub(crate) fn merge(paths: &[PathBuf]) -> Result<Merged> {
    // One log given twice would count its requests twice.
    for (i, path) in paths.iter().enumerate() {
        if paths[..i].iter().any(|earlier| same_file(earlier, path)) {
            return Err(Error::input(path, "given twice: its requests would be counted twice"));
        }
    }
    let logs: Vec<Log> = paths.iter().map(|p| read_log(p)).collect::<Result<_>>()?;
    let length = logs
        .iter()
        .flat_map(|log| log.intervals.iter().map(|i| i.length))
        .max()
        .ok_or_else(|| Error::input(&paths[0], "the logs hold no interval at all"))?;
    for (log, path) in logs.iter().zip(paths) {
        // The last interval of a log may be shorter; the others must agree.
        if let Some(other) = log.intervals.iter().rev().skip(1).map(|i| i.length).find(|l| *l != length) {
            return Err(Error::input(
                path,
                format!(
                    "its intervals last {other:?}, another log's {length:?}: merge logs written with the same \
                     --hdr-log-interval"
                ),
            ));
        }
    }
    let start = logs
        .iter()
        .flat_map(|log| log.intervals.first().map(|i| log.base + i.start))
        .min()
        .unwrap_or_default();
    let mut whole = latency_histogram();
    let mut by_interval: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    // Several open-loop clients: the farm was asked for the sum of them.
    let mut targets: BTreeMap<u64, f64> = BTreeMap::new();
    let add = |into: &mut Histogram<u64>, from: &Histogram<u64>| {
        into.add(from)
            .map_err(|e| Error::input(&paths[0], format!("histograms that cannot be added ({e:?})")))
    };
    for log in &logs {
        for LoggedInterval { start: at, histogram, target_rps: target, .. } in &log.intervals {
            add(&mut whole, histogram)?;
            // Which interval of the merged log: by wall-clock time, to the
            // nearest interval (two clients rarely start on the same ms).
            let offset = (log.base + *at).saturating_sub(start);
            let index = (offset.as_secs_f64() / length.as_secs_f64()).round() as u64;
            add(by_interval.entry(index).or_insert_with(latency_histogram), histogram)?;
            if let Some(target) = target {
                *targets.entry(index).or_default() += target;
            }
        }
    }
    // Throughput over the full intervals: the first and last are partial
    // (each log's first reply, its last), and their lengths are not logged.
    let counts: Vec<u64> = by_interval.values().map(Histogram::len).collect();
    let inner = if counts.len() > 2 { &counts[1..counts.len() - 1] } else { &counts[..] };
    let throughput_rps = inner.iter().sum::<u64>() as f64 / (length.as_secs_f64() * inner.len() as f64);
    let intervals = by_interval
        .iter()
        .map(|(index, histogram)| {
            let mut figures = IntervalFigures::of(length.mul_f64(*index as f64), length, histogram);
            figures.target_rps = targets.get(index).copied();
            figures
        })
        .collect();
    Ok(Merged {
        logs: paths.iter().map(|p| p.display().to_string()).collect(),
        latency: LatencyStats::of(&whole, &PERCENTILES),
        intervals,
        throughput_rps,
        whole,
        start,
        length,
        by_interval,
        targets,
        full_intervals: inner.len(),
    })
}

/// Whether two paths name one file (as given, or once resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

impl Merged {
    /// The merged summary, for stdout.
    pub(crate) fn summary(&self) -> String {
        let l = &self.latency;
        let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
        let mut text = format!(
            "tc-client merge: {} ok replies from {}, {} of {:?}; {:.1} ok replies/s together over the {}\n\n",
            self.whole.len(),
            crate::units::count(self.logs.len() as u64, "log", "logs"),
            crate::units::count(self.by_interval.len() as u64, "interval", "intervals"),
            self.length,
            self.throughput_rps,
            crate::units::count(self.full_intervals as u64, "full interval", "full intervals"),
        );
        text.push_str("  Latency (ms)             min");
        for p in &l.percentiles {
            let label = if p.percentile >= 100.0 { "max".into() } else { format!("p{}", p.percentile) };
            text.push_str(&format!("{label:>10}"));
        }
        text.push_str(&format!("{:>10}{:>10}\n    from schedule    {:>10}", "mean", "stdev", ms(l.min_us)));
        for p in &l.percentiles {
            text.push_str(&format!("{:>10}", ms(p.value_us)));
        }
        text.push_str(&format!("{:>10.3}{:>10.3}\n", l.mean_us / 1000.0, l.stdev_us / 1000.0));
        text.push_str("    (histograms added, not percentiles averaged)\n");
        text
    }

    /// Writes the merged interval log: one histogram per interval, every
    /// log's replies in it, from the earliest log's start.
    ///
    /// # Errors
    /// The file cannot be written.
    pub(crate) fn write_log(&self, out: &mut impl Write) -> std::io::Result<()> {
        let started_at = UNIX_EPOCH + self.start;
        let epoch = self.start.as_secs_f64();
        writeln!(out, "#[Merged by tc-client {} from {}]", env!("CARGO_PKG_VERSION"), self.logs.join(", "))?;
        writeln!(out, "#[Histogram values are latencies from the scheduled send, in microseconds]")?;
        writeln!(
            out,
            "#[StartTime: {epoch:.3} (seconds since epoch), {}]",
            humantime::format_rfc3339_seconds(started_at.max(SystemTime::UNIX_EPOCH))
        )?;
        writeln!(out, "#[BaseTime: {epoch:.3} (seconds since epoch)]")?;
        writeln!(
            out,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )?;
        let mut serializer = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut *out, &mut serializer)?;
        for (index, histogram) in &self.by_interval {
            let tag_text = self.targets.get(index).map(|rate| format!("target_rps={rate:.3}"));
            let tag = tag_text.as_deref().and_then(hdrhistogram::serialization::interval_log::Tag::new);
            log.write_histogram(histogram, self.length.mul_f64(*index as f64), self.length, tag)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
        drop(log);
        out.flush()
    }
}
