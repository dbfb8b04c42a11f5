//! The rows of a tc-client CSV, as the charts read them, and how the rows of
//! one grid point become one point on a chart.
//!
//! A sweep with `--repeats` (or a resumed or `--force`d one) leaves several
//! rows for the same point. The charts plot their median, with the range as
//! an error bar. An interrupted run is left out when its point has a
//! complete run (it measured a cut-short run, and its re-run is the real
//! one); a point with only interrupted runs is still drawn from them, and
//! the chart says so in a note.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::client::sweep::repeats::Spread;
use crate::error::{Error, Result};

/// One CSV row, as much as the charts need. Columns added to the CSV after
/// its first version have defaults, so older files still draw.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RunRow {
    /// `threads` or `processes` (empty: a server that does not answer
    /// `stats`; such rows are left out of the charts).
    pub(crate) server_mode: String,
    /// Whether the threads shared a GIL.
    #[serde(default, deserialize_with = "empty_is_false")]
    pub(crate) server_gil: bool,
    /// Whether the connections used TLS.
    #[serde(default, deserialize_with = "empty_is_false")]
    pub(crate) server_tls: bool,
    /// Workers (0 when unknown).
    #[serde(default, deserialize_with = "empty_is_zero")]
    pub(crate) server_workers: u64,
    /// The command sent (`compute`, `ping`, a mix...).
    #[serde(default)]
    pub(crate) cmd: String,
    /// Connections.
    pub(crate) concurrency: usize,
    /// Compute `n`.
    pub(crate) size: u64,
    /// Closed-loop pipeline (empty in an open loop).
    #[serde(default)]
    pub(crate) pipeline: Option<usize>,
    /// Open-loop rate (empty in a closed loop).
    #[serde(default)]
    pub(crate) rate_rps: Option<f64>,
    /// Replies per second.
    pub(crate) throughput_rps: f64,
    /// Latency percentiles from schedule, µs.
    pub(crate) p50_us: u64,
    /// 99th percentile, µs.
    pub(crate) p99_us: u64,
    /// 99.9th percentile, µs.
    pub(crate) p99_9_us: u64,
    /// Mean queue wait, µs.
    pub(crate) queue_mean_us: f64,
    /// Mean service time, µs.
    pub(crate) service_mean_us: f64,
    /// Mean of the rest, µs.
    pub(crate) rest_mean_us: f64,
    /// Whether Ctrl-C or SIGTERM cut the run short.
    #[serde(default, deserialize_with = "empty_is_false")]
    pub(crate) interrupted: bool,
}

impl RunRow {
    /// `threads`, `threads + GIL` or `processes`.
    pub(crate) fn configuration(&self) -> String {
        if self.server_gil {
            format!("{} + GIL", self.server_mode)
        } else {
            self.server_mode.clone()
        }
    }

    /// Everything that makes two rows runs of the same grid point, as text
    /// that sorts the same way every time.
    fn point(&self) -> String {
        format!(
            "{}|{}|{}|{:>9}|{:>6}|{:?}|{:?}|{}",
            self.configuration(),
            self.server_tls,
            self.cmd,
            self.size,
            self.concurrency,
            self.pipeline,
            self.rate_rps.map(f64::to_bits),
            self.server_workers
        )
    }
}

fn empty_is_false<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

fn empty_is_zero<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

/// Reads the rows of a tc-client CSV (`--csv` or `sweep`), leaving out runs
/// against servers that did not say what they are (no mode, no workers).
///
/// # Errors
/// A file that cannot be read, is not a tc-client CSV, or has no usable row.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<RunRow>> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| Error::input(path, format!("cannot read the CSV: {e}")))?;
    let rows: Vec<RunRow> = reader
        .deserialize()
        .map(|row| row.map_err(|e| Error::input(path, format!("not a tc-client CSV: {e}"))))
        .collect::<Result<_>>()?;
    let known: Vec<RunRow> = rows.iter().filter(|r| !r.server_mode.is_empty()).cloned().collect();
    if known.is_empty() {
        let why = if rows.is_empty() {
            "has no runs yet"
        } else {
            "has only runs against servers that did not say their mode and workers"
        };
        return Err(Error::input(path, format!("{why}; nothing to chart")));
    }
    Ok(known)
}

/// The runs of one grid point that a chart uses.
#[derive(Debug)]
pub(crate) struct PointRuns<'a> {
    /// The complete runs, or the interrupted ones when there is no other.
    pub(crate) rows: Vec<&'a RunRow>,
    /// Whether `rows` are interrupted runs (the point has no complete one).
    pub(crate) interrupted_only: bool,
}

impl PointRuns<'_> {
    /// Any of the runs, for what they all share (configuration, workers...).
    pub(crate) fn first(&self) -> &RunRow {
        self.rows[0]
    }

    /// Median and range of `value` over the runs.
    pub(crate) fn spread(&self, value: impl Fn(&RunRow) -> f64) -> Spread {
        let values: Vec<f64> = self.rows.iter().map(|r| value(r)).collect();
        Spread::of(&values).expect("a point has at least one run")
    }
}

/// The rows grouped by grid point, in a stable order, with the interrupted
/// runs left out of every point that has a complete run.
pub(crate) fn points(rows: &[RunRow]) -> Vec<PointRuns<'_>> {
    let mut by_point: BTreeMap<String, Vec<&RunRow>> = BTreeMap::new();
    for row in rows {
        by_point.entry(row.point()).or_default().push(row);
    }
    by_point
        .into_values()
        .map(|all| {
            let complete: Vec<&RunRow> = all.iter().copied().filter(|r| !r.interrupted).collect();
            if complete.is_empty() {
                PointRuns { rows: all, interrupted_only: true }
            } else {
                PointRuns { rows: complete, interrupted_only: false }
            }
        })
        .collect()
}

/// The chart's notes about how its points were made from the rows: medians
/// of repeats, and points drawn from interrupted runs only.
pub(crate) fn repeat_notes(points: &[PointRuns<'_>]) -> Vec<String> {
    let mut notes = Vec::new();
    if points.iter().any(|p| p.rows.len() > 1) {
        notes.push(
            "Points with several runs: the median, with a bar from the slowest to the fastest run.".into(),
        );
    }
    let cut_short = points.iter().filter(|p| p.interrupted_only).count();
    if cut_short > 0 {
        let which = if cut_short == 1 { "1 point comes" } else { "points come" };
        notes.push(format!(
            "{which} only from interrupted runs (cut short); resume the sweep to measure {}.",
            if cut_short == 1 { "it" } else { "them" }
        ));
    }
    notes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A complete run of `mode` with `workers` and 8 connections.
    pub(crate) fn row(mode: &str, gil: bool, workers: u64, rps: f64) -> RunRow {
        RunRow {
            server_mode: mode.into(),
            server_gil: gil,
            server_tls: false,
            server_workers: workers,
            cmd: "compute".into(),
            concurrency: 8,
            size: 500_000,
            pipeline: Some(1),
            rate_rps: None,
            throughput_rps: rps,
            p50_us: 100,
            p99_us: 200,
            p99_9_us: 300,
            queue_mean_us: 10.0,
            service_mean_us: 80.0,
            rest_mean_us: 10.0,
            interrupted: false,
        }
    }

    #[test]
    fn an_interrupted_run_gives_way_to_its_rerun_but_stands_alone() {
        let cut = RunRow { interrupted: true, ..row("threads", false, 1, 40.0) };
        let rows = [cut.clone(), row("threads", false, 1, 400.0), RunRow { server_workers: 2, ..cut }];
        let points = points(&rows);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].rows.len(), 1);
        assert_eq!(points[0].first().throughput_rps, 400.0, "the re-run, not the interrupted run");
        assert!(!points[0].interrupted_only);
        assert!(points[1].interrupted_only, "2 workers: only an interrupted run");
        let notes = repeat_notes(&points);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("1 point comes only from interrupted runs"), "{notes:?}");
    }

    #[test]
    fn an_older_csv_without_the_newer_columns_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.csv");
        std::fs::write(
            &path,
            "server_mode,server_workers,server_gil,concurrency,size,throughput_rps,p50_us,p99_us,p99_9_us,\
             queue_mean_us,service_mean_us,rest_mean_us\nthreads,2,false,8,500000,950.0,1,2,3,1.0,2.0,3.0\n",
        )
        .unwrap();
        let rows = read_rows(&path).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(!rows[0].interrupted && !rows[0].server_tls && rows[0].pipeline.is_none());
    }
}
