//! `--csv`: one summary row per run, appended to a file that collects many
//! runs (a sweep), so results can be plotted straight from it.
//!
//! [`SummaryRow`] *is* the column list: one field per column, in order, with
//! the unit in the name (`_us`, `_s`, `_rps`). Latency columns always hold
//! the same fixed percentiles (50, 90, 99, 99.9, 99.99, max) whatever
//! `--percentiles` says, so rows from different runs line up.

use std::fs::File;
use std::io::Write;

use serde::Serialize;

use super::{Exporter, LatencyStats, RunReport, Workload};
use crate::client::bench::BenchRun;
use crate::error::{Error, Result};

/// The percentiles every CSV row carries.
pub(crate) const CSV_PERCENTILES: [f64; 6] = [50.0, 90.0, 99.0, 99.9, 99.99, 100.0];

/// One run, one row: who measured what where, the [`Workload`] (declared
/// once, in [`super::RunParameters`]), and what was measured. Serialized
/// as a tuple of the three, which the `csv` crate writes as one flat row.
/// Empty cells mean "does not apply" (e.g. `rate_rps` in a closed loop).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SummaryRow {
    /// The columns before the workload.
    pub(crate) origin: RowOrigin,
    /// `cmd` … `timeout_s`.
    pub(crate) workload: Workload,
    /// The columns after it.
    pub(crate) measured: RowMeasured,
}

/// The first columns: when, with which tool, against which server.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RowOrigin {
    /// Start of the run, RFC 3339 UTC.
    pub(crate) started_at: String,
    /// tc-client version.
    pub(crate) tool_version: String,
    /// `host:port` of the server.
    pub(crate) server_address: String,
    /// Server pool mode, as the server reported it.
    pub(crate) server_mode: String,
    /// Server worker count, as the server reported it (a gateway: its own
    /// workers plus those of its live worker hosts).
    pub(crate) server_workers: u64,
    /// Whether the server's worker threads share a GIL (`--gil`).
    pub(crate) server_gil: bool,
    /// Whether the connections used TLS (`--tls`).
    pub(crate) server_tls: bool,
    /// Whether the server was started by this client.
    pub(crate) embedded: bool,
}

/// The last columns: counts, time, throughput and latency percentiles.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct RowMeasured {
    /// Measured requests sent.
    pub(crate) sent: u64,
    /// Good replies.
    pub(crate) ok: u64,
    /// Error replies (all codes).
    pub(crate) error_replies: u64,
    /// Timeouts.
    pub(crate) timeouts: u64,
    /// Wrong compute results (`--verify`).
    pub(crate) mismatches: u64,
    /// Duplicate replies.
    pub(crate) duplicates: u64,
    /// Replies matching no request.
    pub(crate) unknown: u64,
    /// Requests lost with a closed connection.
    pub(crate) missing: u64,
    /// Error replies by code, e.g. `BUSY:3;TIMEOUT:1`.
    pub(crate) errors_by_code: String,
    /// Measured seconds.
    pub(crate) measured_s: f64,
    /// Replies per second.
    pub(crate) throughput_rps: f64,
    /// Latency from schedule.
    pub(crate) p50_us: u64,
    /// Latency from schedule.
    pub(crate) p90_us: u64,
    /// Latency from schedule.
    pub(crate) p99_us: u64,
    /// Latency from schedule.
    pub(crate) p99_9_us: u64,
    /// Latency from schedule.
    pub(crate) p99_99_us: u64,
    /// Latency from schedule.
    pub(crate) max_us: u64,
    /// Latency from schedule.
    pub(crate) mean_us: f64,
    /// Latency from send.
    pub(crate) uncorrected_p50_us: u64,
    /// Latency from send.
    pub(crate) uncorrected_p90_us: u64,
    /// Latency from send.
    pub(crate) uncorrected_p99_us: u64,
    /// Latency from send.
    pub(crate) uncorrected_p99_9_us: u64,
    /// Latency from send.
    pub(crate) uncorrected_p99_99_us: u64,
    /// Latency from send.
    pub(crate) uncorrected_max_us: u64,
    /// Latency from send.
    pub(crate) uncorrected_mean_us: f64,
    /// Server queue wait.
    pub(crate) queue_p50_us: u64,
    /// Server queue wait.
    pub(crate) queue_p99_us: u64,
    /// Server queue wait.
    pub(crate) queue_mean_us: f64,
    /// Worker service time.
    pub(crate) service_p50_us: u64,
    /// Worker service time.
    pub(crate) service_p99_us: u64,
    /// Worker service time.
    pub(crate) service_mean_us: f64,
    /// Network, framing and threads.
    pub(crate) rest_p50_us: u64,
    /// Network, framing and threads.
    pub(crate) rest_p99_us: u64,
    /// Network, framing and threads.
    pub(crate) rest_mean_us: f64,
}

/// Rounds for display in a CSV cell (`digits` after the point).
fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

impl SummaryRow {
    /// The row of a finished run.
    pub(crate) fn new(run: &BenchRun, report: &RunReport) -> Self {
        let recorder = &run.recorder;
        let fixed = |h| LatencyStats::of(h, &CSV_PERCENTILES);
        let (latency, uncorrected) = (fixed(&recorder.corrected), fixed(&recorder.uncorrected));
        let (queue, service, rest) =
            (fixed(&recorder.queue), fixed(&recorder.service), fixed(&recorder.rest));
        let at = |stats: &LatencyStats, p: f64| stats.at(p).unwrap_or(0);
        let counts = &report.counts;
        let origin = RowOrigin {
            started_at: report.started_at.clone(),
            tool_version: report.tool_version.clone(),
            server_address: report.server.address.clone(),
            server_mode: report.server.mode.clone(),
            server_workers: report.server.workers,
            server_gil: report.server.gil,
            server_tls: report.server.tls,
            embedded: report.server.embedded,
        };
        let measured = RowMeasured {
            sent: counts.sent,
            ok: counts.ok,
            error_replies: counts.error_replies(),
            timeouts: counts.timeouts,
            mismatches: counts.mismatches,
            duplicates: counts.duplicates,
            unknown: counts.unknown,
            missing: counts.missing,
            errors_by_code: counts
                .errors
                .iter()
                .map(|(code, n)| format!("{code}:{n}"))
                .collect::<Vec<_>>()
                .join(";"),
            measured_s: round(report.measured_s, 3),
            throughput_rps: round(report.throughput_rps, 1),
            p50_us: at(&latency, 50.0),
            p90_us: at(&latency, 90.0),
            p99_us: at(&latency, 99.0),
            p99_9_us: at(&latency, 99.9),
            p99_99_us: at(&latency, 99.99),
            max_us: latency.max_us,
            mean_us: round(latency.mean_us, 1),
            uncorrected_p50_us: at(&uncorrected, 50.0),
            uncorrected_p90_us: at(&uncorrected, 90.0),
            uncorrected_p99_us: at(&uncorrected, 99.0),
            uncorrected_p99_9_us: at(&uncorrected, 99.9),
            uncorrected_p99_99_us: at(&uncorrected, 99.99),
            uncorrected_max_us: uncorrected.max_us,
            uncorrected_mean_us: round(uncorrected.mean_us, 1),
            queue_p50_us: at(&queue, 50.0),
            queue_p99_us: at(&queue, 99.0),
            queue_mean_us: round(queue.mean_us, 1),
            service_p50_us: at(&service, 50.0),
            service_p99_us: at(&service, 99.0),
            service_mean_us: round(service.mean_us, 1),
            rest_p50_us: at(&rest, 50.0),
            rest_p99_us: at(&rest, 99.0),
            rest_mean_us: round(rest.mean_us, 1),
        };
        SummaryRow { origin, workload: report.parameters.workload.clone(), measured }
    }

    /// Writes this row, preceded by the header line when `with_header`.
    ///
    /// # Errors
    /// Whatever the writer returns.
    pub(crate) fn write<W: Write>(&self, out: W, with_header: bool) -> csv::Result<()> {
        let mut writer = csv::WriterBuilder::new().has_headers(with_header).from_writer(out);
        writer.serialize((&self.origin, &self.workload, &self.measured))?;
        writer.flush()?;
        Ok(())
    }
}

/// `--csv`: the file, opened for appending before the run, and whether it
/// was empty (and so needs the header line).
pub(crate) struct CsvRow {
    file: File,
    is_new: bool,
}

impl CsvRow {
    /// The exporter for an already opened file.
    pub(crate) fn new(file: File, is_new: bool) -> Self {
        CsvRow { file, is_new }
    }
}

impl Exporter for CsvRow {
    fn finish(self: Box<Self>, run: &BenchRun, report: &RunReport) -> Result<()> {
        SummaryRow::new(run, report)
            .write(self.file, self.is_new)
            .map_err(|e| Error::io("writing --csv", std::io::Error::other(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::report::tests::sample_run;

    #[test]
    fn the_row_has_the_documented_columns_and_values() {
        let run = sample_run();
        let report = RunReport::new(&run);
        let row = SummaryRow::new(&run, &report);
        let mut out = Vec::new();
        row.write(&mut out, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "started_at,tool_version,server_address,server_mode,server_workers,server_gil,server_tls,embedded,cmd,size,\
             concurrency,load_model,pipeline,rate_rps,requests_per_connection,duration_s,warmup,timeout_s,\
             sent,ok,error_replies,timeouts,mismatches,duplicates,unknown,missing,errors_by_code,\
             measured_s,throughput_rps,p50_us,p90_us,p99_us,p99_9_us,p99_99_us,max_us,mean_us,\
             uncorrected_p50_us,uncorrected_p90_us,uncorrected_p99_us,uncorrected_p99_9_us,\
             uncorrected_p99_99_us,uncorrected_max_us,uncorrected_mean_us,queue_p50_us,queue_p99_us,\
             queue_mean_us,service_p50_us,service_p99_us,service_mean_us,rest_p50_us,rest_p99_us,rest_mean_us"
        );
        assert_eq!(
            lines.next().unwrap(),
            "2026-01-02T03:04:05Z,0.1.0,127.0.0.1:5050,processes,2,false,false,true,compute,500000,\
             4,closed,1,,5,,none,10.0,\
             1002,1000,2,0,0,0,0,0,BUSY:2,\
             2.0,501.0,500,900,990,1000,1000,1000,500.5,\
             1000,1800,1980,2000,2000,2000,1001.0,\
             50,99,49.6,125,247,124.8,825,1634,826.6"
        );
        assert!(lines.next().is_none());
        // Appending to an existing file: no second header.
        let mut more = Vec::new();
        row.write(&mut more, false).unwrap();
        assert_eq!(String::from_utf8(more).unwrap().lines().count(), 1);
    }
}
