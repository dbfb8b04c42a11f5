//! Charts for the classroom studies (`tc-client plot`), drawn with plotters
//! into PNG and SVG files, with titles, axis labels and units:
//! - `throughput`: throughput vs workers, one line per farm configuration,
//!   with the ideal (linear) line for reference — from a sweep CSV;
//! - `latency`: p50 / p99 / p99.9 vs connections — from a sweep CSV;
//! - `percentiles`: the latency percentile curve of `.hgrm` files on the
//!   HdrHistogram plotter's log "1/(1-percentile)" axis, several runs at once;
//! - `timeline`: latency over time from an `--hdr-log` interval log;
//! - `breakdown`: queue wait / service / rest of each run — from a CSV.
//!
//! This file reads the inputs (CSV rows, `.hgrm` percentiles, interval logs)
//! and turns them into charts as plain data ([`LineChart`]);
//! [`draw`] draws them. Text is drawn with an embedded DejaVu font, so no
//! system fonts are needed.

mod draw;

pub(crate) use draw::{write_breakdown_chart, write_line_chart};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// One CSV row, as much as the charts need.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RunRow {
    /// `threads` or `processes` (empty: a server that does not answer
    /// `stats`; such rows are left out of the charts).
    pub(crate) server_mode: String,
    /// Whether the threads shared a GIL.
    #[serde(default, deserialize_with = "empty_is_false")]
    pub(crate) server_gil: bool,
    /// Workers (0 when unknown).
    #[serde(default, deserialize_with = "empty_is_zero")]
    pub(crate) server_workers: u64,
    /// Connections.
    pub(crate) concurrency: usize,
    /// Compute `n`.
    pub(crate) size: u64,
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

/// What the x axis of a line chart measures, which decides its ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XAxis {
    /// Whole numbers (workers, connections): a tick and a label at each
    /// value that has data, and nowhere else.
    Counts,
    /// Percentiles on HdrHistogram's log 1/(1-p) axis, labelled p50, p90,
    /// p99... (the latency axis is then logarithmic too).
    Percentiles,
    /// Seconds, on an ordinary linear axis.
    Seconds,
}

/// A line on a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Legend text.
    pub(crate) label: String,
    /// Points, in x order.
    pub(crate) points: Vec<(f64, f64)>,
    /// Drawn dashed-looking (thin, grey): reference lines.
    pub(crate) reference: bool,
}

/// A line chart, ready to draw.
#[derive(Debug, Clone)]
pub(crate) struct LineChart {
    /// Title.
    pub(crate) title: String,
    /// X axis label, with unit.
    pub(crate) x_label: String,
    /// Y axis label, with unit.
    pub(crate) y_label: String,
    /// What the x axis measures.
    pub(crate) x_axis: XAxis,
    /// The lines.
    pub(crate) series: Vec<Series>,
}

/// Throughput vs workers, one line per configuration (and size and
/// connection count, when the CSV has several), with the ideal: the first
/// configuration's one-worker throughput times the workers.
///
/// # Errors
/// A CSV whose runs all have the same number of workers: there is no line
/// to draw, and the sentence says which sweep makes one.
pub(crate) fn throughput_chart(rows: &[RunRow]) -> Result<LineChart> {
    needs_several(rows, |r| r.server_workers, "workers", "tc-client sweep --workers 1,2,4")?;
    let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for row in rows {
        let key = format!("{} (n={}, {} conn)", row.configuration(), row.size, row.concurrency);
        groups.entry(key).or_default().push((row.server_workers as f64, row.throughput_rps));
    }
    let mut series: Vec<Series> = groups
        .into_iter()
        .map(|(label, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { label, points, reference: false }
        })
        .collect();
    // The ideal: perfect scaling of the best one-worker throughput.
    let one_worker =
        rows.iter().filter(|r| r.server_workers == 1).map(|r| r.throughput_rps).fold(0.0, f64::max);
    // Only at the worker counts measured: a point at 3 workers where no run
    // had 3 would suggest a measurement that was never made.
    let measured: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.server_workers).collect();
    if one_worker > 0.0 {
        let points = measured.iter().map(|&w| (w as f64, one_worker * w as f64)).collect();
        series.push(Series { label: "ideal (linear scaling)".into(), points, reference: true });
    }
    Ok(LineChart {
        title: "Throughput as workers grow".into(),
        x_label: "workers".into(),
        y_label: "throughput (ok replies/s)".into(),
        x_axis: XAxis::Counts,
        series,
    })
}

/// Refuses a chart of something against `what` when every row has the same
/// `what`: one x value draws no line, only a column of dots.
fn needs_several(rows: &[RunRow], value: impl Fn(&RunRow) -> u64, what: &str, sweep: &str) -> Result<()> {
    let values: std::collections::BTreeSet<u64> = rows.iter().map(value).collect();
    match values.iter().next() {
        Some(only) if values.len() == 1 => Err(Error::Usage(format!(
            "every run in the CSV has {only} {what}, so there is no line to draw against {what}; \
             measure several (e.g. {sweep}), or draw `tc-client plot breakdown` or `plot percentiles` instead"
        ))),
        _ => Ok(()),
    }
}

/// p50, p99 and p99.9 vs connections, per configuration.
///
/// # Errors
/// A CSV whose runs all have the same number of connections.
pub(crate) fn latency_chart(rows: &[RunRow]) -> Result<LineChart> {
    needs_several(rows, |r| r.concurrency as u64, "connections", "tc-client sweep --concurrency 1,4,16")?;
    let mut series = Vec::new();
    let mut groups: BTreeMap<String, Vec<&RunRow>> = BTreeMap::new();
    for row in rows {
        groups
            .entry(format!("{}, {} workers", row.configuration(), row.server_workers))
            .or_default()
            .push(row);
    }
    for (label, mut group) in groups {
        group.sort_by_key(|r| r.concurrency);
        for (name, pick) in [("p50", 0), ("p99", 1), ("p99.9", 2)] {
            let points = group
                .iter()
                .map(|r| (r.concurrency as f64, [r.p50_us, r.p99_us, r.p99_9_us][pick] as f64 / 1000.0))
                .collect();
            series.push(Series { label: format!("{label} {name}"), points, reference: false });
        }
    }
    Ok(LineChart {
        title: "Latency as connections grow".into(),
        x_label: "connections".into(),
        y_label: "latency (ms)".into(),
        x_axis: XAxis::Counts,
        series,
    })
}

/// Reads a `.hgrm` file: (1/(1-percentile), value in ms) for every line
/// below 100%.
///
/// # Errors
/// A file that cannot be read or has no data lines.
pub(crate) fn read_hgrm(path: &Path) -> Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::input(path, format!("cannot read it: {e}")))?;
    let points: Vec<(f64, f64)> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            match columns.as_slice() {
                [value, _, _, inverse] => Some((inverse.parse().ok()?, value.parse().ok()?)),
                _ => None,
            }
        })
        .collect();
    if points.is_empty() {
        return Err(Error::input(path, "no percentile lines (is it a .hgrm file?)"));
    }
    Ok(points)
}

/// Latency by percentile, several runs on one log-scale chart.
///
/// # Errors
/// An unreadable `.hgrm` file.
pub(crate) fn percentile_chart(files: &[PathBuf]) -> Result<LineChart> {
    let series = files
        .iter()
        .map(|path| {
            let label = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Ok(Series { label, points: read_hgrm(path)?, reference: false })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(LineChart {
        title: "Latency by percentile".into(),
        x_label: "percentile (log scale of 1/(1-p))".into(),
        y_label: "latency (ms, log scale)".into(),
        x_axis: XAxis::Percentiles,
        series,
    })
}

/// p50, p99 and max of each interval of an interval log.
///
/// # Errors
/// An unreadable or malformed log.
pub(crate) fn timeline_chart(path: &Path) -> Result<LineChart> {
    use base64::Engine;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    let bytes = std::fs::read(path).map_err(|e| Error::input(path, format!("cannot read it: {e}")))?;
    let mut deserializer = Deserializer::new();
    let (mut p50, mut p99, mut max) = (Vec::new(), Vec::new(), Vec::new());
    for entry in IntervalLogIterator::new(&bytes) {
        let bad = |what: String| Error::input(path, what);
        let LogEntry::Interval(interval) = entry.map_err(|e| bad(format!("not an interval log ({e:?})")))?
        else {
            continue;
        };
        let encoded = base64::engine::general_purpose::STANDARD
            .decode(interval.encoded_histogram())
            .map_err(|e| bad(format!("bad base64: {e}")))?;
        let histogram: hdrhistogram::Histogram<u64> = deserializer
            .deserialize(&mut encoded.as_slice())
            .map_err(|e| bad(format!("bad histogram: {e:?}")))?;
        if histogram.is_empty() {
            continue;
        }
        let t = interval.start_timestamp().as_secs_f64();
        p50.push((t, histogram.value_at_quantile(0.5) as f64 / 1000.0));
        p99.push((t, histogram.value_at_quantile(0.99) as f64 / 1000.0));
        max.push((t, histogram.max() as f64 / 1000.0));
    }
    if p50.is_empty() {
        return Err(Error::input(path, "no interval with data"));
    }
    let line = |label: &str, points| Series { label: label.into(), points, reference: false };
    Ok(LineChart {
        title: "Latency over time".into(),
        x_label: "time since the start of the run (s)".into(),
        y_label: "latency (ms)".into(),
        x_axis: XAxis::Seconds,
        series: vec![line("p50", p50), line("p99", p99), line("max", max)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: &str, gil: bool, workers: u64, rps: f64) -> RunRow {
        RunRow {
            server_mode: mode.into(),
            server_gil: gil,
            server_workers: workers,
            concurrency: 8,
            size: 500_000,
            throughput_rps: rps,
            p50_us: 100,
            p99_us: 200,
            p99_9_us: 300,
            queue_mean_us: 10.0,
            service_mean_us: 80.0,
            rest_mean_us: 10.0,
        }
    }

    #[test]
    fn the_throughput_chart_has_a_line_per_configuration_and_the_ideal() {
        let rows = [
            row("threads", false, 1, 480.0),
            row("threads", false, 2, 950.0),
            row("threads", true, 2, 470.0),
        ];
        let chart = throughput_chart(&rows).unwrap();
        assert_eq!(chart.series.len(), 3);
        let ideal = chart.series.iter().find(|s| s.reference).unwrap();
        assert_eq!(ideal.points, vec![(1.0, 480.0), (2.0, 960.0)]);
        assert!(chart.series.iter().any(|s| s.label.starts_with("threads + GIL")));
    }

    #[test]
    fn a_chart_against_one_x_value_is_refused_with_the_sweep_that_fixes_it() {
        let rows = [row("threads", false, 2, 480.0), row("processes", false, 2, 950.0)];
        let error = throughput_chart(&rows).unwrap_err().to_string();
        assert!(
            error.contains("every run in the CSV has 2 workers") && error.contains("--workers 1,2,4"),
            "{error}"
        );
        let error = latency_chart(&rows).unwrap_err().to_string();
        assert!(error.contains("8 connections") && error.contains("--concurrency"), "{error}");
    }

    #[test]
    fn hgrm_lines_become_points_and_the_100_percent_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.hgrm");
        std::fs::write(
            &path,
            "       Value     Percentile TotalCount 1/(1-Percentile)\n\n\
                    0.500 0.000000000000          1           1.00\n\
                    2.000 0.900000000000         90          10.00\n\
                    9.000 1.000000000000        100\n\
             #[Mean    =        1.000, StdDeviation   =        0.500]\n",
        )
        .unwrap();
        assert_eq!(read_hgrm(&path).unwrap(), vec![(1.0, 0.5), (10.0, 2.0)]);
    }
}
