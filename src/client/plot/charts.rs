//! The line charts as plain data ([`LineChart`]): which lines, which points,
//! which notes — made from CSV rows, `.hgrm` files and interval logs.
//! [`mod@super::draw`] turns them into pictures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::rows::{self, PointRuns, RunRow};
use crate::client::sweep::repeats::Spread;
use crate::error::{Error, Result};

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

/// The range of the runs behind one point: a vertical bar at `x` from
/// `low` to `high`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RangeBar {
    /// Where the point is.
    pub(crate) x: f64,
    /// The slowest run.
    pub(crate) low: f64,
    /// The fastest run.
    pub(crate) high: f64,
}

/// A line on a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Legend text.
    pub(crate) label: String,
    /// Points, in x order.
    pub(crate) points: Vec<(f64, f64)>,
    /// The range of the runs at the points that have several.
    pub(crate) ranges: Vec<RangeBar>,
    /// Drawn dashed-looking (thin, grey): reference lines.
    pub(crate) reference: bool,
}

impl Series {
    /// A line through `points`, with no ranges.
    pub(crate) fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { label: label.into(), points, ranges: Vec::new(), reference: false }
    }

    /// Adds the point at `x` for `spread`: its median, and its range when
    /// there were several runs.
    fn push(&mut self, x: f64, spread: Spread) {
        self.points.push((x, spread.median));
        if spread.runs > 1 {
            self.ranges.push(RangeBar { x, low: spread.min, high: spread.max });
        }
    }

    fn sorted(mut self) -> Self {
        self.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        self
    }
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
    /// A logarithmic y axis (`--log-y`; the percentile chart always has one).
    pub(crate) log_y: bool,
    /// The lines.
    pub(crate) series: Vec<Series>,
    /// Sentences printed beside the chart: how to read it.
    pub(crate) notes: Vec<String>,
}

/// Reads one percentile of a run row (for one line of the latency chart).
type Percentile = fn(&RunRow) -> u64;
/// The cores of the machine drawing the chart (1 if it cannot tell).
pub(crate) fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// "1 worker", "4 workers".
fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// How a row loads the server, when the CSV has several kinds of load:
/// `ping, pipeline 4`, `compute, 300 req/s`.
fn load(row: &RunRow) -> String {
    match (row.rate_rps, row.pipeline) {
        (Some(rate), _) => format!("{}, {rate} req/s", row.cmd),
        (None, Some(pipeline)) => format!("{}, pipeline {pipeline}", row.cmd),
        (None, None) => row.cmd.clone(),
    }
}

/// Whether the points differ in their load, so labels must say it.
fn loads_differ(points: &[PointRuns<'_>]) -> bool {
    points.iter().map(|p| load(p.first())).collect::<BTreeSet<_>>().len() > 1
}

/// Throughput vs workers, one line per configuration (and size and
/// connection count, when the CSV has several), with the ideal: the best
/// one-worker throughput times the workers. Each point is the median of its
/// runs, with their range; the notes give the cores of the machine that
/// draws the chart (the CSV does not record them), where CPU-bound
/// throughput stops rising.
///
/// # Errors
/// A CSV whose runs all have the same number of workers: there is no line
/// to draw, and the sentence says which sweep makes one.
pub(crate) fn throughput_chart(rows: &[RunRow]) -> Result<LineChart> {
    throughput_chart_on(rows, machine_cores())
}

/// [`throughput_chart`], for a machine with `cores` cores.
fn throughput_chart_on(rows: &[RunRow], cores: usize) -> Result<LineChart> {
    needs_several(rows, |r| r.server_workers, ("worker", "workers"), "tc-client sweep --workers 1,2,4")?;
    let points = rows::points(rows);
    let with_load = loads_differ(&points);
    let mut groups: BTreeMap<String, Series> = BTreeMap::new();
    let mut one_worker: f64 = 0.0;
    for point in &points {
        let row = point.first();
        let load = if with_load { format!(", {}", load(row)) } else { String::new() };
        let label = format!("{} (n={}, {} conn{load})", row.configuration(), row.size, row.concurrency);
        let spread = point.spread(|r| r.throughput_rps);
        if row.server_workers == 1 {
            one_worker = one_worker.max(spread.median);
        }
        groups
            .entry(label.clone())
            .or_insert_with(|| Series::line(label, Vec::new()))
            .push(row.server_workers as f64, spread);
    }
    let mut series: Vec<Series> = groups.into_values().map(Series::sorted).collect();
    // The ideal: perfect scaling of the best one-worker median. Only at the
    // worker counts measured: a point at 3 workers where no run had 3 would
    // suggest a measurement that was never made.
    let measured: BTreeSet<u64> = rows.iter().map(|r| r.server_workers).collect();
    if one_worker > 0.0 {
        let points = measured.iter().map(|&w| (w as f64, one_worker * w as f64)).collect();
        series.push(Series { reference: true, ..Series::line("ideal (linear scaling)", points) });
    }
    let mut notes = vec![format!(
        "This machine has {}: CPU-bound work cannot scale past {} (the cores of the machine that drew \
         this chart; the CSV does not record the measuring machine's).",
        count(cores as u64, "core", "cores"),
        count(cores as u64, "worker", "workers"),
    )];
    notes.extend(rows::repeat_notes(&points));
    Ok(LineChart {
        title: format!("Throughput as workers grow ({}-core machine)", cores),
        x_label: "workers".into(),
        y_label: "throughput (ok replies/s)".into(),
        x_axis: XAxis::Counts,
        log_y: false,
        series,
        notes,
    })
}

/// Refuses a chart of something against `what` when every row has the same
/// `what`: one x value draws no line, only a column of dots.
fn needs_several(
    rows: &[RunRow],
    value: impl Fn(&RunRow) -> u64,
    (singular, plural): (&str, &str),
    sweep: &str,
) -> Result<()> {
    let values: BTreeSet<u64> = rows.iter().map(value).collect();
    match values.iter().next() {
        Some(&only) if values.len() == 1 => Err(Error::Usage(format!(
            "every run in the CSV has {}, so there is no line to draw against {plural}; \
             measure several (e.g. {sweep}), or draw `tc-client plot breakdown` or `plot percentiles` instead",
            count(only, singular, plural)
        ))),
        _ => Ok(()),
    }
}

/// p50, p99 and p99.9 vs connections, per configuration: the median of each
/// point's runs, with their range.
///
/// # Errors
/// A CSV whose runs all have the same number of connections.
pub(crate) fn latency_chart(rows: &[RunRow]) -> Result<LineChart> {
    needs_several(
        rows,
        |r| r.concurrency as u64,
        ("connection", "connections"),
        "tc-client sweep --concurrency 1,4,16",
    )?;
    let points = rows::points(rows);
    let with_load = loads_differ(&points);
    let mut groups: BTreeMap<String, [Series; 3]> = BTreeMap::new();
    let percentiles: [(&str, Percentile); 3] =
        [("p50", |r| r.p50_us), ("p99", |r| r.p99_us), ("p99.9", |r| r.p99_9_us)];
    for point in &points {
        let row = point.first();
        let load = if with_load { format!(", {}", load(row)) } else { String::new() };
        let label =
            format!("{}, {}{load}", row.configuration(), count(row.server_workers, "worker", "workers"));
        let lines = groups.entry(label.clone()).or_insert_with(|| {
            percentiles.map(|(name, _)| Series::line(format!("{label} {name}"), Vec::new()))
        });
        for (line, (_, value)) in lines.iter_mut().zip(percentiles) {
            line.push(row.concurrency as f64, point.spread(|r| value(r) as f64 / 1000.0));
        }
    }
    Ok(LineChart {
        title: "Latency as connections grow".into(),
        x_label: "connections".into(),
        y_label: "latency (ms)".into(),
        x_axis: XAxis::Counts,
        log_y: false,
        series: groups.into_values().flatten().map(Series::sorted).collect(),
        notes: rows::repeat_notes(&points),
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
            Ok(Series::line(label, read_hgrm(path)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(LineChart {
        title: "Latency by percentile".into(),
        x_label: "percentile (log scale of 1/(1-p))".into(),
        y_label: "latency (ms, log scale)".into(),
        x_axis: XAxis::Percentiles,
        log_y: true,
        series,
        notes: Vec::new(),
    })
}

/// p50, p99 and max of each interval of an interval log, each at the
/// interval's start. A request is in the interval in which its reply
/// arrived (the recorder files it when the reply comes, as HdrHistogram
/// interval logs do), which the chart says.
///
/// # Errors
/// An unreadable or malformed log.
pub(crate) fn timeline_chart(path: &Path) -> Result<(LineChart, Option<LineChart>)> {
    let (_, intervals) = crate::client::report::interval_log::read_log(path)?;
    let (mut p50, mut p99, mut max) = (Vec::new(), Vec::new(), Vec::new());
    // An open loop's log tags each interval with its target rate.
    let (mut target, mut achieved) = (Vec::new(), Vec::new());
    for interval in &intervals {
        let (t, histogram) = (interval.start.as_secs_f64(), &interval.histogram);
        if let Some(rate) = interval.target_rps {
            target.push((t, rate));
            achieved.push((t, histogram.len() as f64 / interval.length.as_secs_f64().max(1e-9)));
        }
        if histogram.is_empty() {
            continue;
        }
        p50.push((t, histogram.value_at_quantile(0.5) as f64 / 1000.0));
        p99.push((t, histogram.value_at_quantile(0.99) as f64 / 1000.0));
        max.push((t, histogram.max() as f64 / 1000.0));
    }
    if p50.is_empty() {
        return Err(Error::input(path, "no interval with data"));
    }
    let latency = LineChart {
        title: "Latency over time".into(),
        x_label: "time the replies arrived (s since measuring began, after any warm-up)".into(),
        y_label: "latency (ms)".into(),
        x_axis: XAxis::Seconds,
        log_y: false,
        series: vec![Series::line("p50", p50), Series::line("p99", p99), Series::line("max", max)],
        notes: vec![
            "Each point is one interval of the log (--hdr-log-interval), drawn at the interval's start."
                .into(),
            "A request counts in the interval in which its reply arrived, not the one in which it was \
             sent: a slow request shows up late, when it completes."
                .into(),
        ],
    };
    let load = (!target.is_empty()).then(|| LineChart {
        title: "Load over time: asked for and answered".into(),
        x_label: "time (s since measuring began, after any warm-up)".into(),
        y_label: "requests per second".into(),
        x_axis: XAxis::Seconds,
        log_y: false,
        series: vec![
            Series { reference: true, ..Series::line("target (the schedule)", target) },
            Series::line("ok replies/s", achieved),
        ],
        notes: vec![
            "The target is the open loop's schedule in each interval (--rate or --stages); ok replies/s \
             is what came back."
                .into(),
            "The knee: where ok replies stop following the target, and the latency chart's p99 climbs."
                .into(),
        ],
    });
    Ok((latency, load))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::plot::rows::tests::row;

    #[test]
    fn the_throughput_chart_has_a_line_per_configuration_and_the_ideal() {
        let rows = [
            row("threads", false, 1, 480.0),
            row("threads", false, 2, 950.0),
            row("threads", true, 2, 470.0),
        ];
        let chart = throughput_chart_on(&rows, 2).unwrap();
        assert_eq!(chart.series.len(), 3);
        let ideal = chart.series.iter().find(|s| s.reference).unwrap();
        assert_eq!(ideal.points, vec![(1.0, 480.0), (2.0, 960.0)]);
        assert!(chart.series.iter().any(|s| s.label.starts_with("threads + GIL")));
        assert!(chart.series.iter().all(|s| s.ranges.is_empty()), "one run per point: no range bars");
    }

    #[test]
    fn repeated_runs_are_drawn_as_their_median_with_their_range() {
        // The busy machine of issue #22: one 4-worker run at 39 replies/s.
        let rows = [
            row("threads", false, 1, 302.5),
            row("threads", false, 1, 409.0),
            row("threads", false, 1, 405.0),
            row("threads", false, 4, 39.0),
            row("threads", false, 4, 810.0),
            row("threads", false, 4, 812.0),
        ];
        let chart = throughput_chart_on(&rows, 2).unwrap();
        let threads = &chart.series[0];
        assert_eq!(threads.points, vec![(1.0, 405.0), (4.0, 810.0)]);
        assert_eq!(
            threads.ranges,
            vec![RangeBar { x: 1.0, low: 302.5, high: 409.0 }, RangeBar { x: 4.0, low: 39.0, high: 812.0 }]
        );
        assert!(chart.notes.iter().any(|n| n.contains("the median")), "{:?}", chart.notes);
    }

    #[test]
    fn an_interrupted_run_is_not_plotted_beside_its_rerun() {
        let cut_short = RunRow { interrupted: true, ..row("threads", false, 2, 150.0) };
        let rows = [row("threads", false, 1, 480.0), cut_short, row("threads", false, 2, 950.0)];
        let chart = throughput_chart_on(&rows, 2).unwrap();
        assert_eq!(chart.series[0].points, vec![(1.0, 480.0), (2.0, 950.0)]);
        assert!(chart.series[0].ranges.is_empty());
    }

    #[test]
    fn the_throughput_chart_states_the_cores() {
        let rows = [row("threads", false, 1, 480.0), row("threads", false, 2, 950.0)];
        let chart = throughput_chart_on(&rows, 2).unwrap();
        assert!(chart.title.contains("2-core machine"), "{}", chart.title);
        assert!(chart.notes[0]
            .starts_with("This machine has 2 cores: CPU-bound work cannot scale past 2 workers"));
        let one = throughput_chart_on(&rows, 1).unwrap();
        assert!(
            one.notes[0].starts_with("This machine has 1 core: CPU-bound work cannot scale past 1 worker ")
        );
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
        let one =
            [row("threads", false, 1, 480.0), RunRow { concurrency: 1, ..row("threads", false, 1, 9.0) }];
        let error = throughput_chart(&one).unwrap_err().to_string();
        assert!(error.contains("every run in the CSV has 1 worker,"), "{error}");
    }

    #[test]
    fn the_latency_chart_says_1_worker_and_takes_medians() {
        let rows = [
            RunRow { concurrency: 1, p50_us: 1000, ..row("threads", false, 1, 1.0) },
            RunRow { concurrency: 1, p50_us: 3000, ..row("threads", false, 1, 1.0) },
            RunRow { concurrency: 1, p50_us: 2000, ..row("threads", false, 1, 1.0) },
            row("threads", false, 1, 1.0),
        ];
        let chart = latency_chart(&rows).unwrap();
        assert_eq!(chart.series.len(), 3);
        assert_eq!(chart.series[0].label, "threads, 1 worker p50");
        assert_eq!(chart.series[0].points, vec![(1.0, 2.0), (8.0, 0.1)]);
        assert_eq!(chart.series[0].ranges, vec![RangeBar { x: 1.0, low: 1.0, high: 3.0 }]);
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
