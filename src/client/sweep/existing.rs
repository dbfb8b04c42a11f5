//! What a sweep's CSV already holds: which grid points have rows, how many
//! complete runs each has, and what they measured.
//!
//! This is what makes a sweep resumable (a point with k of its `--repeats`
//! runs gets the rest) and what its closing summary is computed from (every
//! complete row of a point counts as one of its runs, older sweeps' rows
//! included, as in the charts).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::GridPoint;
use crate::client::bench::options::Pacing;
use crate::error::{Error, Result};

/// The columns of a CSV row that identify a grid point.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PointKey {
    server_mode: Option<String>,
    server_gil: Option<bool>,
    server_tls: bool,
    server_workers: Option<u64>,
    concurrency: usize,
    size: u64,
    pipeline: Option<usize>,
    rate_rps: Option<String>,
    cmd: String,
}

impl PointKey {
    /// The key the row of a run of `point` will have.
    pub(crate) fn of(point: &GridPoint, cmd: &str, tls: bool) -> Self {
        let (pipeline, rate_rps) = match &point.pacing {
            Pacing::Closed { pipeline } => (Some(*pipeline), None),
            // Written by the csv crate the way it writes every f64 (e.g. 200.0).
            Pacing::Open { rate } => (None, Some(csv_float(*rate))),
            // A sweep's points are constant rates; a profile has no one rate.
            Pacing::Staged(_) => (None, None),
        };
        PointKey {
            server_mode: Some(point.mode.mode().as_str().to_string()),
            server_gil: Some(point.mode.gil().is_some()),
            server_tls: tls,
            server_workers: Some(point.workers as u64),
            concurrency: point.concurrency,
            size: point.size,
            pipeline,
            rate_rps,
            cmd: cmd.to_string(),
        }
    }
}

/// One CSV row, as much as resuming and the summary need.
#[derive(Debug, Deserialize)]
struct Row {
    /// Empty for runs against a server that did not describe itself.
    server_mode: Option<String>,
    server_gil: Option<bool>,
    /// Absent from CSVs written before the column existed: no TLS.
    #[serde(default)]
    server_tls: bool,
    server_workers: Option<u64>,
    concurrency: usize,
    size: u64,
    pipeline: Option<usize>,
    rate_rps: Option<String>,
    cmd: String,
    throughput_rps: f64,
    /// Absent from CSVs written before the column existed: not interrupted.
    #[serde(default)]
    interrupted: bool,
}

impl Row {
    fn key(self) -> PointKey {
        PointKey {
            server_mode: self.server_mode,
            server_gil: self.server_gil,
            server_tls: self.server_tls,
            server_workers: self.server_workers,
            concurrency: self.concurrency,
            size: self.size,
            pipeline: self.pipeline,
            rate_rps: self.rate_rps,
            cmd: self.cmd,
        }
    }
}

/// The throughput of every complete run in the CSV, by grid point. An
/// interrupted run does not count: a resumed sweep runs that point again.
/// A CSV that does not exist yet holds nothing.
///
/// # Errors
/// A file that exists but cannot be read, or is not a tc-client CSV.
pub(crate) fn complete_runs(csv: &Path) -> Result<HashMap<PointKey, Vec<f64>>> {
    let mut runs: HashMap<PointKey, Vec<f64>> = HashMap::new();
    if !csv.exists() {
        return Ok(runs);
    }
    let mut reader = csv::Reader::from_path(csv)
        .map_err(|e| Error::input(csv, format!("(--csv) cannot read it to resume: {e}")))?;
    for row in reader.deserialize::<Row>() {
        let row = row.map_err(|e| Error::input(csv, format!("(--csv) not a tc-client CSV ({e})")))?;
        if !row.interrupted {
            let throughput = row.throughput_rps;
            runs.entry(row.key()).or_default().push(throughput);
        }
    }
    Ok(runs)
}

/// How the csv crate renders an f64 cell.
fn csv_float(value: f64) -> String {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    let _ = writer.serialize([value]);
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_what_the_csv_writer_writes() {
        assert_eq!(csv_float(200.0), "200.0");
        assert_eq!(csv_float(12.5), "12.5");
    }

    #[test]
    fn interrupted_rows_are_not_counted_and_older_csvs_without_the_column_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let header =
            "server_mode,server_gil,server_workers,concurrency,size,pipeline,rate_rps,cmd,throughput_rps";
        std::fs::write(&path, format!("{header}\nthreads,false,1,2,1000,1,,compute,300.0\n")).unwrap();
        let old = complete_runs(&path).unwrap();
        assert_eq!(old.values().collect::<Vec<_>>(), vec![&vec![300.0]]);

        std::fs::write(
            &path,
            format!(
                "{header},interrupted\nthreads,false,1,2,1000,1,,compute,300.0,false\n\
                 threads,false,1,2,1000,1,,compute,50.0,true\n"
            ),
        )
        .unwrap();
        let runs = complete_runs(&path).unwrap();
        assert_eq!(runs.values().collect::<Vec<_>>(), vec![&vec![300.0]], "the interrupted run is left out");
        assert!(complete_runs(&dir.path().join("new.csv")).unwrap().is_empty());
    }
}
