//! Reports written *while* the run goes, each by its own thread, so memory
//! does not grow with the length of the run:
//! - `--requests-csv`: one row per request, as requests settle;
//! - `--hdr-log`: an HdrHistogram interval log, one histogram per interval.
//!
//! Connections hand their data over bounded channels; if a disk is slower
//! than the run, the connections wait for it rather than buffer without
//! limit.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::bench::recorder::latency_histogram;
use crate::client::bench::{IntervalMessage, RequestRecord};

/// Capacity of the channels from the connections to the writers.
const CHANNEL_CAPACITY: usize = 64 * 1024;

/// One line of `--requests-csv`. Times are microseconds since the run
/// started; empty latency cells mean no reply came.
#[derive(Debug, Serialize)]
struct RequestRow {
    connection: usize,
    id: u64,
    cmd: &'static str,
    warmup: bool,
    scheduled_us: u64,
    sent_us: u64,
    latency_us: Option<u64>,
    uncorrected_us: Option<u64>,
    queue_us: Option<u64>,
    service_us: Option<u64>,
    worker: Option<u64>,
    outcome: String,
}

/// Starts the `--requests-csv` writer; returns where to send rows and the
/// thread, which yields the number of rows written once every sender is gone.
pub fn start_requests_csv<W: Write + Send + 'static>(
    out: W,
) -> (Sender<RequestRecord>, JoinHandle<io::Result<u64>>) {
    let (tx, rx) = crossbeam_channel::bounded::<RequestRecord>(CHANNEL_CAPACITY);
    let handle = thread::spawn(move || write_request_rows(out, rx));
    (tx, handle)
}

fn write_request_rows<W: Write>(out: W, rows: Receiver<RequestRecord>) -> io::Result<u64> {
    let mut writer = csv::Writer::from_writer(out);
    let mut written = 0;
    for record in rows {
        writer
            .serialize(RequestRow {
                connection: record.connection,
                id: record.id,
                cmd: record.command.as_str(),
                warmup: record.warmup,
                scheduled_us: record.scheduled_us,
                sent_us: record.sent_us,
                latency_us: record.latency_us,
                uncorrected_us: record.uncorrected_us,
                queue_us: record.queue_us,
                service_us: record.service_us,
                worker: record.worker,
                outcome: record.outcome.label(),
            })
            .map_err(io::Error::other)?;
        written += 1;
    }
    writer.flush()?;
    Ok(written)
}

/// Starts the `--hdr-log` writer for `connections` connections.
///
/// The log follows Java HdrHistogram's `HistogramLogWriter`: a `StartTime`
/// and `BaseTime` header, the column legend, then one line per interval
/// (start offset in seconds, length, max in milliseconds, and the
/// base64-encoded compressed histogram of latencies in microseconds).
pub fn start_interval_log<W: Write + Send + 'static>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::bench::recorder::record_us;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use std::sync::{Arc, Mutex};

    /// A `Write` whose bytes can be read after the writer thread is done.
    #[derive(Clone, Default)]
    struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

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

    #[test]
    fn request_rows_stream_with_a_header() {
        let buffer = SharedBuffer::default();
        let (tx, handle) = start_requests_csv(buffer.clone());
        tx.send(RequestRecord {
            connection: 1,
            id: 7,
            command: crate::client::bench::mix::BenchCommand::Compute,
            warmup: false,
            scheduled_us: 10,
            sent_us: 12,
            latency_us: Some(500),
            uncorrected_us: Some(498),
            queue_us: Some(20),
            service_us: Some(400),
            worker: Some(0),
            outcome: crate::client::bench::RequestOutcome::Ok,
        })
        .unwrap();
        tx.send(RequestRecord {
            connection: 0,
            id: 3,
            command: crate::client::bench::mix::BenchCommand::Ping,
            warmup: true,
            scheduled_us: 5,
            sent_us: 5,
            latency_us: None,
            uncorrected_us: None,
            queue_us: None,
            service_us: None,
            worker: None,
            outcome: crate::client::bench::RequestOutcome::Timeout,
        })
        .unwrap();
        drop(tx);
        assert_eq!(handle.join().unwrap().unwrap(), 2);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "connection,id,cmd,warmup,scheduled_us,sent_us,latency_us,uncorrected_us,queue_us,service_us,worker,outcome\n\
             1,7,compute,false,10,12,500,498,20,400,0,ok\n\
             0,3,ping,true,5,5,,,,,,timeout\n"
        );
    }
}
