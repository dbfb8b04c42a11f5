//! The run's intervals: every connection's latencies cut into
//! `--hdr-log-interval` slices (1 s by default), merged per interval by one
//! thread while the run goes. Each complete interval is written to the
//! `--hdr-log` file when one was asked for, and summed up in
//! [`IntervalFigures`] for the JSON report (what `tc-client compare` reads
//! its spread from).
//!
//! Connections hand their interval histograms over a bounded channel; an
//! interval is complete once every running connection has reported it.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::serialization::interval_log::{IntervalLogWriter, IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use super::CHANNEL_CAPACITY;
use crate::client::bench::intervals::IntervalFigures;
use crate::client::bench::options::{BenchOptions, Pacing};
use crate::client::bench::{IntervalLatencies, IntervalMessage};

/// The most intervals kept for the report (28 hours of 1 s intervals);
/// past it the log still gets every interval, the report no more.
pub(crate) const MAX_FIGURES: usize = 100_000;

/// The target rate of an open loop between two times (seconds since the
/// run started): requests per second the schedule asked for.
pub(crate) type TargetRate = Box<dyn Fn(f64, f64) -> f64 + Send>;

/// An open loop's target rate over time, for its intervals; `None` in a
/// closed loop.
pub(crate) fn target_rate(options: &BenchOptions) -> Option<TargetRate> {
    match &options.pacing {
        Pacing::Closed { .. } => None,
        Pacing::Open { rate } => {
            let rate = *rate;
            Some(Box::new(move |_, _| rate))
        }
        // The intervals start when the stages do, after a timed warm-up.
        Pacing::Staged(stages) => {
            let profile = stages.clone();
            Some(Box::new(move |from, to| profile.mean_rate(from, to)))
        }
    }
}

/// The run as it goes, kept after each complete interval: the latency so
/// far (for `--metrics-addr`) and, with `--abort-on-fail`, the thresholds
/// checked on it.
pub(crate) struct RunSoFar {
    /// The thresholds to stop the run on (`--abort-on-fail`); empty
    /// without it.
    pub(crate) thresholds: Vec<crate::client::bench::thresholds::Threshold>,
    /// The connections' live counters, and the latency so far kept in them.
    pub(crate) progress: std::sync::Arc<crate::client::bench::ProgressCounters>,
}

impl RunSoFar {
    /// Adds a complete interval to the run so far (with its target rate),
    /// then checks the thresholds on it.
    fn add(&self, latencies: &IntervalLatencies, rate: Option<f64>, end: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let so_far = &self.progress.so_far;
        let mut latency = so_far.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        latency.add(latencies);
        so_far.last_interval.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone_from(latencies);
        so_far.target_rps.store(rate.unwrap_or(f64::NAN).to_bits(), Relaxed);
        // Judged once measured requests have settled (not on a counted
        // warm-up's empty intervals) — with or without ok replies.
        if !self.thresholds.is_empty() && self.progress.measured.load(Relaxed) > 0 {
            self.check(&latency, end);
        }
    }

    /// Stops the run at the first threshold the run so far crosses.
    fn check(&self, latency: &IntervalLatencies, at: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let errors_by_code =
            self.progress.errors_by_code.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let so_far = crate::client::bench::thresholds::SoFar {
            latency,
            settled: self.progress.measured.load(Relaxed),
            error_replies: self.progress.error_replies.load(Relaxed),
            errors_by_code: &errors_by_code,
            timeouts: self.progress.timeouts.load(Relaxed),
        };
        for threshold in &self.thresholds {
            if let Some((true, what)) = threshold.crossed_so_far(&so_far) {
                crate::client::interrupt::abort(format!(
                    "{} crossed {:.1} s into the run ({what})",
                    threshold.text,
                    at.as_secs_f64()
                ));
                return;
            }
        }
    }
}

/// Starts the thread that merges the intervals of `connections`
/// connections, writing them to `log` (the `--hdr-log` file) if there is
/// one, each tagged `target_rps=N` in an open loop (`target`). It ends
/// when every sender is gone and returns the figures.
///
/// The log follows Java HdrHistogram's `HistogramLogWriter`: a `StartTime`
/// and `BaseTime` header, the column legend, then one line per interval
/// (start offset in seconds, length, max in milliseconds, and the
/// base64-encoded compressed histogram of latencies in microseconds).
pub(crate) fn start_intervals<W: Write + Send + 'static>(
    log: Option<W>,
    connections: usize,
    started_at: SystemTime,
    interval: Duration,
    target: Option<TargetRate>,
    live: Option<RunSoFar>,
) -> (Sender<IntervalMessage>, JoinHandle<io::Result<Vec<IntervalFigures>>>) {
    let (tx, rx) = crossbeam_channel::bounded::<IntervalMessage>(CHANNEL_CAPACITY);
    let handle =
        thread::spawn(move || merge_intervals(log, rx, connections, (started_at, interval), (target, live)));
    (tx, handle)
}

/// The log's header lines, before the first interval.
fn write_header<W: Write>(out: &mut W, started_at: SystemTime) -> io::Result<()> {
    let epoch = started_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    writeln!(out, "#[Logged with tc-client {}]", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "#[Histogram values are latencies from the scheduled send, in microseconds]")?;
    writeln!(
        out,
        "#[StartTime: {epoch:.3} (seconds since epoch), {}]",
        humantime::format_rfc3339_seconds(started_at)
    )?;
    writeln!(out, "#[BaseTime: {epoch:.3} (seconds since epoch)]")?;
    writeln!(out, "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"")
}

/// What the merging thread does with each complete interval: into the
/// log, the run so far and the report's figures.
struct Completed<'w, W: Write> {
    writer: Option<IntervalLogWriter<'w, 'w, W, V2DeflateSerializer>>,
    interval: Duration,
    target: Option<TargetRate>,
    live: Option<RunSoFar>,
    figures: Vec<IntervalFigures>,
}

impl<W: Write> Completed<'_, W> {
    fn complete(&mut self, index: u64, latencies: &IntervalLatencies) -> io::Result<()> {
        let interval = self.interval;
        let start = interval.mul_f64(index as f64);
        let rate =
            self.target.as_ref().map(|rate| rate(start.as_secs_f64(), (start + interval).as_secs_f64()));
        if let Some(live) = &self.live {
            live.add(latencies, rate, start + interval);
        }
        let histogram = &latencies.from_schedule;
        if let Some(writer) = self.writer.as_mut() {
            let tag_text = rate.map(|rate| format!("target_rps={rate:.3}"));
            let tag = tag_text.as_deref().and_then(Tag::new);
            writer
                .write_histogram(histogram, start, interval, tag)
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
        }
        if self.figures.len() < MAX_FIGURES {
            let mut figure = IntervalFigures::of(start, interval, histogram);
            figure.target_rps = rate;
            self.figures.push(figure);
        }
        Ok(())
    }
}

fn merge_intervals<W: Write>(
    mut log: Option<W>,
    messages: Receiver<IntervalMessage>,
    connections: usize,
    (started_at, interval): (SystemTime, Duration),
    (target, live): (Option<TargetRate>, Option<RunSoFar>),
) -> io::Result<Vec<IntervalFigures>> {
    if let Some(out) = log.as_mut() {
        write_header(out, started_at)?;
    }
    let mut serializer = V2DeflateSerializer::new();
    let writer = match log.as_mut() {
        Some(out) => Some(
            IntervalLogWriterBuilder::new()
                .with_max_value_divisor(1000.0)
                .begin_log_with(out, &mut serializer)?,
        ),
        None => None,
    };
    let mut completed = Completed { writer, interval, target, live, figures: Vec::new() };

    // Each connection reports its intervals in order (0, 1, 2, ...). An
    // interval is complete once every connection still running has reported
    // it; complete intervals are handed on in order and forgotten, so only
    // the intervals between the slowest and the fastest connection are held.
    let mut pending: BTreeMap<u64, IntervalLatencies> = BTreeMap::new();
    let mut reported_up_to: Vec<Option<u64>> = vec![None; connections];
    let mut finished = vec![false; connections];
    for message in messages {
        match message {
            IntervalMessage::Interval { connection, index, latencies } => {
                let slot = pending.entry(index).or_default();
                if let Some(l) = latencies {
                    slot.add(&l);
                }
                if let Some(progress) = reported_up_to.get_mut(connection) {
                    *progress = Some(index);
                }
            }
            IntervalMessage::Finished { connection } => {
                if let Some(done) = finished.get_mut(connection) {
                    *done = true;
                }
            }
        }
        // The last interval every running connection has reported.
        let complete_up_to = (0..connections)
            .filter(|&c| !finished[c])
            .map(|c| reported_up_to[c])
            .min()
            .unwrap_or(Some(u64::MAX)); // every connection finished: all complete
        while let (Some(limit), Some(entry)) = (complete_up_to, pending.first_entry()) {
            if *entry.key() > limit {
                break;
            }
            let (index, latencies) = entry.remove_entry();
            completed.complete(index, &latencies)?;
        }
    }
    // Connections that ended without saying so (a panic) leave intervals
    // behind: hand them on too.
    for (index, latencies) in std::mem::take(&mut pending) {
        completed.complete(index, &latencies)?;
    }
    let figures = std::mem::take(&mut completed.figures);
    drop(completed);
    if let Some(out) = log.as_mut() {
        mark_cut_short(out)?;
    }
    Ok(figures)
}

/// A run cut short says so at the end of its log, as its other reports do.
fn mark_cut_short<W: Write>(out: &mut W) -> io::Result<()> {
    if let Some(why) = crate::client::interrupt::aborted() {
        writeln!(out, "#[Aborted by --abort-on-fail: {why}]")?;
    } else if crate::client::interrupt::requested() {
        writeln!(out, "#[Interrupted (Ctrl-C or SIGTERM): the log covers what was measured until then]")?;
    }
    out.flush()
}

/// One interval of a log, read back.
pub(crate) struct LoggedInterval {
    /// Its offset from the log's base time.
    pub(crate) start: Duration,
    /// Its length, as logged.
    pub(crate) length: Duration,
    /// Latency from schedule of its ok replies (µs).
    pub(crate) histogram: Histogram<u64>,
    /// An open loop's target rate (its `target_rps=` tag).
    pub(crate) target_rps: Option<f64>,
}

/// Reads an interval log back (this writer's, or any HdrHistogram one):
/// its base time (`BaseTime`, else `StartTime`; seconds since the epoch)
/// and its intervals. What `tc-client merge` and `plot timeline` read.
///
/// # Errors
/// A file that cannot be read, or is not an interval log.
pub(crate) fn read_log(
    path: &std::path::Path,
) -> crate::error::Result<(Option<Duration>, Vec<LoggedInterval>)> {
    use base64::Engine;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    let bad = |message: String| crate::error::Error::input(path, message);
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let (mut base, mut start) = (None, None);
    let mut intervals = Vec::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|_| {
            bad("not an HdrHistogram interval log (a line could not be read as one); write one with \
                 tc-client --hdr-log FILE"
                .to_string())
        })?;
        match entry {
            LogEntry::BaseTime(at) => base = Some(at),
            LogEntry::StartTime(at) => start = Some(at),
            LogEntry::Interval(interval) => {
                let compressed = base64::engine::general_purpose::STANDARD
                    .decode(interval.encoded_histogram())
                    .map_err(|e| bad(format!("an interval's histogram is not base64 ({e})")))?;
                let histogram: Histogram<u64> = deserializer
                    .deserialize(&mut compressed.as_slice())
                    .map_err(|e| bad(format!("an interval's histogram cannot be decoded ({e:?})")))?;
                let target_rps = interval
                    .tag()
                    .and_then(|tag| tag.as_str().strip_prefix("target_rps=")?.parse::<f64>().ok());
                intervals.push(LoggedInterval {
                    start: interval.start_timestamp(),
                    length: interval.duration(),
                    histogram,
                    target_rps,
                });
            }
        }
    }
    Ok((base.or(start), intervals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::bench::recorder::record_us;
    use crate::client::report::tests::SharedBuffer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    fn latencies_of(values: &[u64]) -> Option<Box<IntervalLatencies>> {
        let mut l = IntervalLatencies::default();
        values.iter().for_each(|v| record_us(&mut l.from_schedule, *v));
        Some(Box::new(l))
    }

    #[test]
    fn interval_log_merges_connections_per_interval_and_reads_back() {
        let buffer = SharedBuffer::default();
        let (tx, handle) =
            start_intervals(Some(buffer.clone()), 2, UNIX_EPOCH, Duration::from_secs(1), None, None);
        let interval = |connection, index, values: &[u64]| IntervalMessage::Interval {
            connection,
            index,
            latencies: if values.is_empty() { None } else { latencies_of(values) },
        };
        tx.send(interval(0, 0, &[100, 200])).unwrap();
        tx.send(interval(1, 0, &[300])).unwrap();
        tx.send(interval(0, 1, &[])).unwrap();
        tx.send(IntervalMessage::Finished { connection: 0 }).unwrap();
        tx.send(interval(1, 1, &[5000])).unwrap();
        tx.send(IntervalMessage::Finished { connection: 1 }).unwrap();
        drop(tx);
        let figures = handle.join().unwrap().unwrap();
        assert_eq!(figures.iter().map(|f| (f.start_s, f.ok)).collect::<Vec<_>>(), [(0.0, 3), (1.0, 1)]);
        assert_eq!(figures[0].max_us.map(|us| us >= 300), Some(true));

        let bytes = buffer.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("#[StartTime: 0.000 (seconds since epoch)"), "{text}");
        assert!(text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\""), "{text}");
        let mut deserializer = Deserializer::new();
        let intervals: Vec<(f64, u64, u64)> = IntervalLogIterator::new(&bytes)
            .filter_map(|entry| match entry.expect("valid log line") {
                LogEntry::Interval(h) => {
                    let decoded = base64_decode(h.encoded_histogram());
                    let histogram: Histogram<u64> =
                        deserializer.deserialize(&mut decoded.as_slice()).unwrap();
                    Some((h.start_timestamp().as_secs_f64(), histogram.len(), histogram.max()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(intervals.len(), 2);
        assert_eq!((intervals[0].0, intervals[0].1), (0.0, 3), "interval 0 merges both connections");
        assert_eq!(intervals[1].1, 1);
        assert!(intervals[1].2 >= 5000);
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(text).unwrap()
    }
}
