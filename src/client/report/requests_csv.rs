//! `--requests-csv`: one row per request, written by its own thread as
//! requests settle, so memory does not grow with the length of the run.
//!
//! Connections hand their rows over a bounded channel; if the disk is slower
//! than the run, the connections wait for it rather than buffer without
//! limit.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use super::{Exporter, LiveRun, RunReport, Streamed, CHANNEL_CAPACITY};
use crate::client::bench::{BenchRun, RequestRecord};
use crate::error::Result;

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
pub(crate) fn start_requests_csv<W: Write + Send + 'static>(
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

/// `--requests-csv`: written by its own thread while the run goes.
pub(crate) struct RequestsCsv(Streamed);

impl RequestsCsv {
    /// The exporter for an already created file.
    pub(crate) fn new(file: BufWriter<File>) -> Self {
        RequestsCsv(Streamed::new("--requests-csv", file))
    }
}

impl Exporter for RequestsCsv {
    fn attach(&mut self, live: &mut LiveRun<'_>) {
        live.sinks.requests = self.0.start(start_requests_csv);
    }

    fn finish(self: Box<Self>, _run: &BenchRun, _report: &RunReport) -> Result<()> {
        self.0.join()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::report::tests::SharedBuffer;

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
            outcome: crate::client::bench::receiver::RequestOutcome::Ok,
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
            outcome: crate::client::bench::receiver::RequestOutcome::Timeout,
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
