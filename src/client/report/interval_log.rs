//! `--hdr-log`: an HdrHistogram interval log, one histogram per interval,
//! written by its own thread while the run goes.
//!
//! Connections hand their interval histograms over a bounded channel; the
//! writer merges them per interval and writes each interval once every
//! running connection has reported it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use super::{Exporter, LiveRun, RunReport, Streamed, CHANNEL_CAPACITY};
use crate::client::bench::recorder::latency_histogram;
use crate::client::bench::{BenchRun, IntervalMessage};
use crate::error::Result;

/// Starts the `--hdr-log` writer for `connections` connections.
///
/// The log follows Java HdrHistogram's `HistogramLogWriter`: a `StartTime`
/// and `BaseTime` header, the column legend, then one line per interval
/// (start offset in seconds, length, max in milliseconds, and the
/// base64-encoded compressed histogram of latencies in microseconds).
pub(crate) fn start_interval_log<W: Write + Send + 'static>(
    out: W,
    connections: usize,
    started_at: SystemTime,
    interval: Duration,
) -> (Sender<IntervalMessage>, JoinHandle<io::Result<u64>>) {
    let (tx, rx) = crossbeam_channel::bounded::<IntervalMessage>(CHANNEL_CAPACITY);
    let handle = thread::spawn(move || write_interval_log(out, rx, connections, started_at, interval));
    (tx, handle)
}

fn write_interval_log<W: Write>(
    mut out: W,
    messages: Receiver<IntervalMessage>,
    connections: usize,
    started_at: SystemTime,
    interval: Duration,
) -> io::Result<u64> {
    let epoch = started_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    writeln!(out, "#[Logged with tc-client {}]", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "#[Histogram values are latencies from the scheduled send, in microseconds]")?;
    writeln!(
        out,
        "#[StartTime: {epoch:.3} (seconds since epoch), {}]",
        humantime::format_rfc3339_seconds(started_at)
    )?;
    writeln!(out, "#[BaseTime: {epoch:.3} (seconds since epoch)]")?;
    writeln!(
        out,
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    )?;
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut out, &mut serializer)?;

    // Each connection reports its intervals in order (0, 1, 2, ...). An
    // interval is complete once every connection still running has reported
    // it; complete intervals are written in order and forgotten, so only the
    // intervals between the slowest and the fastest connection are held.
    let mut pending: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    let mut reported_up_to: Vec<Option<u64>> = vec![None; connections];
    let mut finished = vec![false; connections];
    let mut written = 0u64;
    for message in messages {
        match message {
            IntervalMessage::Interval { connection, index, histogram } => {
                let slot = pending.entry(index).or_insert_with(latency_histogram);
                if let Some(h) = histogram {
                    slot.add(&*h).map_err(|e| io::Error::other(format!("{e:?}")))?;
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
            let (index, histogram) = entry.remove_entry();
            let start = interval.mul_f64(index as f64);
            log.write_histogram(&histogram, start, interval, None)
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
            written += 1;
        }
    }
    // Connections that ended without saying so (a panic) leave intervals
    // behind: write them too.
    for (index, histogram) in pending {
        let start = interval.mul_f64(index as f64);
        log.write_histogram(&histogram, start, interval, None)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        written += 1;
    }
    drop(log);
    out.flush()?;
    Ok(written)
}

/// `--hdr-log`: written by its own thread while the run goes.
pub(crate) struct IntervalLog(Streamed);

impl IntervalLog {
    /// The exporter for an already created file.
    pub(crate) fn new(file: BufWriter<File>) -> Self {
        IntervalLog(Streamed::new("--hdr-log", file))
    }
}

impl Exporter for IntervalLog {
    fn attach(&mut self, live: &mut LiveRun<'_>) {
        let (connections, interval) = (live.options.concurrency, live.options.log_interval);
        let started_at = live.started_at;
        live.sinks.intervals =
            self.0.start(|file| start_interval_log(file, connections, started_at, interval));
    }

    fn finish(self: Box<Self>, _run: &BenchRun, _report: &RunReport) -> Result<()> {
        self.0.join()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::bench::recorder::record_us;
    use crate::client::report::tests::SharedBuffer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    fn histogram_of(values: &[u64]) -> Option<Box<Histogram<u64>>> {
        let mut h = latency_histogram();
        values.iter().for_each(|v| record_us(&mut h, *v));
        Some(Box::new(h))
    }

    #[test]
    fn interval_log_merges_connections_per_interval_and_reads_back() {
        let buffer = SharedBuffer::default();
        let (tx, handle) = start_interval_log(buffer.clone(), 2, UNIX_EPOCH, Duration::from_secs(1));
        let interval = |connection, index, values: &[u64]| IntervalMessage::Interval {
            connection,
            index,
            histogram: if values.is_empty() { None } else { histogram_of(values) },
        };
        tx.send(interval(0, 0, &[100, 200])).unwrap();
        tx.send(interval(1, 0, &[300])).unwrap();
        tx.send(interval(0, 1, &[])).unwrap();
        tx.send(IntervalMessage::Finished { connection: 0 }).unwrap();
        tx.send(interval(1, 1, &[5000])).unwrap();
        tx.send(IntervalMessage::Finished { connection: 1 }).unwrap();
        drop(tx);
        assert_eq!(handle.join().unwrap().unwrap(), 2);

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
