//! `--csv`: one summary row per run, appended to a file that collects many
//! runs (a sweep), so results can be plotted straight from it.
//!
//! [`SummaryRow`] *is* the column list: one field per column, in order, with
//! the unit in the name (`_us`, `_s`, `_rps`). Latency columns always hold
//! the same fixed percentiles (50, 90, 99, 99.9, 99.99, max) whatever
//! `--percentiles` says, so rows from different runs line up.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

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
    /// Server pool mode, as the server reported it (empty: a server that
    /// does not answer `stats`).
    pub(crate) server_mode: Option<String>,
    /// Server worker count, as the server reported it (a gateway: its own
    /// workers plus those of its live worker hosts); empty when unknown.
    pub(crate) server_workers: Option<u64>,
    /// Whether the server's worker threads share a GIL (`--gil`); empty
    /// when unknown.
    pub(crate) server_gil: Option<bool>,
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
    /// Requests lost with a broken connection.
    pub(crate) missing: u64,
    /// Requests the server never read (it closed the connection in order).
    pub(crate) unread: u64,
    /// Requests in flight when the run was interrupted.
    pub(crate) cancelled: u64,
    /// Error replies by code, e.g. `BUSY:3;TIMEOUT:1`.
    pub(crate) errors_by_code: String,
    /// Measured seconds.
    pub(crate) measured_s: f64,
    /// Good replies (results) per second.
    pub(crate) throughput_rps: f64,
    /// Every reply, errors included, per second.
    pub(crate) replies_rps: f64,
    /// Latency from schedule: the smallest.
    pub(crate) min_us: u64,
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
    /// Latency from schedule: standard deviation.
    pub(crate) stdev_us: f64,
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
    /// Whether Ctrl-C or SIGTERM cut the run short.
    pub(crate) interrupted: bool,
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
            unread: counts.unread,
            cancelled: counts.cancelled,
            errors_by_code: counts
                .errors
                .iter()
                .map(|(code, n)| format!("{code}:{n}"))
                .collect::<Vec<_>>()
                .join(";"),
            measured_s: round(report.measured_s, 3),
            throughput_rps: round(report.throughput_rps, 1),
            replies_rps: round(report.replies_rps, 1),
            min_us: latency.min_us,
            p50_us: at(&latency, 50.0),
            p90_us: at(&latency, 90.0),
            p99_us: at(&latency, 99.0),
            p99_9_us: at(&latency, 99.9),
            p99_99_us: at(&latency, 99.99),
            max_us: latency.max_us,
            mean_us: round(latency.mean_us, 1),
            stdev_us: round(latency.stdev_us, 1),
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
            interrupted: report.interrupted,
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

/// A CSV of runs opened for appending: the file, and the columns its first
/// line already names (`None` for a new, empty file).
pub(crate) struct CsvFile {
    path: PathBuf,
    file: File,
    header: Option<Vec<String>>,
}

impl CsvFile {
    /// Opens `path` for appending, creating it if needed, and reads the
    /// header it already has.
    ///
    /// # Errors
    /// A path that cannot be opened, named with `flag` and what to do.
    pub(crate) fn open(path: &Path, flag: &str) -> Result<Self> {
        let cannot = |e: std::io::Error| super::cannot_open(flag, path, e);
        let file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(cannot)?;
        let mut first_line = String::new();
        BufReader::new(&file).read_line(&mut first_line).map_err(cannot)?;
        let header = (!first_line.trim().is_empty())
            .then(|| first_line.trim_end().split(',').map(str::to_string).collect());
        Ok(CsvFile { path: path.to_path_buf(), file, header })
    }

    /// Appends `row`. A file written by an older tc-client keeps its
    /// columns: the row is written in that header's order, columns the file
    /// does not have are left out, and columns the row does not have stay
    /// empty — so old and new runs stay in one readable, resumable file.
    ///
    /// # Errors
    /// The file cannot be written.
    pub(crate) fn append(&mut self, row: &SummaryRow) -> Result<()> {
        let failed = |e: csv::Error| {
            Error::io(format!("writing the CSV {}", self.path.display()), std::io::Error::other(e))
        };
        match &self.header {
            None => {
                row.write(&mut self.file, true).map_err(failed)?;
                let mut lines = Vec::new();
                row.write(&mut lines, true).map_err(failed)?;
                let header = String::from_utf8_lossy(&lines).lines().next().unwrap_or_default().to_string();
                self.header = Some(header.split(',').map(str::to_string).collect());
                Ok(())
            }
            Some(header) => {
                let (names, values) = row.cells().map_err(failed)?;
                let cells: Vec<&str> = header
                    .iter()
                    .map(|column| names.iter().position(|n| n == column).map_or("", |i| values[i].as_str()))
                    .collect();
                let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(&mut self.file);
                writer.write_record(&cells).map_err(failed)?;
                writer.flush().map_err(|e| failed(e.into()))
            }
        }
    }
}

impl SummaryRow {
    /// The row as (column names, cell texts).
    fn cells(&self) -> csv::Result<(Vec<String>, Vec<String>)> {
        let mut text = Vec::new();
        self.write(&mut text, true)?;
        let mut reader = csv::Reader::from_reader(text.as_slice());
        let names = reader.headers()?.iter().map(str::to_string).collect();
        let values = reader.records().next().transpose()?.map(|r| r.iter().map(str::to_string).collect());
        Ok((names, values.unwrap_or_default()))
    }
}

/// `--csv`: the file, opened for appending before the run.
pub(crate) struct CsvRow {
    file: CsvFile,
}

impl CsvRow {
    /// The exporter for an already opened file.
    pub(crate) fn new(file: CsvFile) -> Self {
        CsvRow { file }
    }
}

impl Exporter for CsvRow {
    fn finish(mut self: Box<Self>, run: &BenchRun, report: &RunReport) -> Result<()> {
        self.file.append(&SummaryRow::new(run, report))
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
             sent,ok,error_replies,timeouts,mismatches,duplicates,unknown,missing,unread,cancelled,\
             errors_by_code,measured_s,throughput_rps,replies_rps,min_us,\
             p50_us,p90_us,p99_us,p99_9_us,p99_99_us,max_us,mean_us,stdev_us,\
             uncorrected_p50_us,uncorrected_p90_us,uncorrected_p99_us,uncorrected_p99_9_us,\
             uncorrected_p99_99_us,uncorrected_max_us,uncorrected_mean_us,queue_p50_us,queue_p99_us,\
             queue_mean_us,service_p50_us,service_p99_us,service_mean_us,rest_p50_us,rest_p99_us,rest_mean_us,\
             interrupted"
        );
        assert_eq!(
            lines.next().unwrap(),
            "2026-01-02T03:04:05Z,0.1.0,127.0.0.1:5050,processes,2,false,false,true,compute,500000,\
             4,closed,1,,5,,none,10.0,\
             1002,1000,2,0,0,0,0,0,0,0,BUSY:2,\
             2.0,500.0,501.0,1,500,900,990,1000,1000,1000,500.5,288.7,\
             1000,1800,1980,2000,2000,2000,1001.0,\
             50,99,49.6,125,247,124.8,825,1634,826.6,false"
        );
        assert!(lines.next().is_none());
        // Appending to an existing file: no second header.
        let mut more = Vec::new();
        row.write(&mut more, false).unwrap();
        assert_eq!(String::from_utf8(more).unwrap().lines().count(), 1);
    }

    #[test]
    fn appending_to_an_older_csv_keeps_its_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.csv");
        std::fs::write(&path, "server_mode,ok,gone_column\nthreads,7,x\n").unwrap();
        let run = sample_run();
        let report = RunReport::new(&run);
        let mut file = CsvFile::open(&path, "--csv").unwrap();
        file.append(&SummaryRow::new(&run, &report)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "server_mode,ok,gone_column\nthreads,7,x\nprocesses,1000,\n");

        let fresh = dir.path().join("new.csv");
        let mut file = CsvFile::open(&fresh, "--csv").unwrap();
        file.append(&SummaryRow::new(&run, &report)).unwrap();
        file.append(&SummaryRow::new(&run, &report)).unwrap();
        let text = std::fs::read_to_string(&fresh).unwrap();
        assert_eq!(text.lines().count(), 3, "one header, two rows");
        assert!(text.lines().nth(2).unwrap().ends_with(",false"));
    }

    #[test]
    fn a_csv_in_a_missing_directory_is_refused_with_its_path() {
        let error = CsvFile::open(Path::new("/nonexistent-dir/runs.csv"), "--csv").err().unwrap();
        let text = format!("{:#}", anyhow::Error::from(error));
        assert!(text.contains("/nonexistent-dir/runs.csv: cannot open the file for --csv"), "{text}");
        assert!(text.contains("directory exist"), "{text}");
    }
}
