//! Charts for the classroom studies (`tc-client plot`), drawn with plotters
//! into PNG and SVG files, with titles, axis labels and units:
//! - `throughput`: throughput vs workers, one line per farm configuration,
//!   with the ideal (linear) line for reference and the machine's cores —
//!   from a sweep CSV;
//! - `latency`: p50 / p99 / p99.9 vs connections — from a sweep CSV;
//! - `percentiles`: the latency percentile curve of `.hgrm` files on the
//!   HdrHistogram plotter's log "1/(1-percentile)" axis, several runs at once;
//! - `timeline`: latency over time from an `--hdr-log` interval log, and
//!   for an open loop (`--rate`, `--stages`) the load asked for against the
//!   load answered, in `OUT-load` — the "find the knee" pair;
//! - `breakdown`: queue wait / service / rest of each run — from a CSV;
//! - `workers`: a bar per job on its worker's row — from a `--requests-csv`
//!   ([`workers`], which also writes a Chrome trace with `--trace`).
//!
//! The files, in the order the data flows: [`rows`] reads CSV rows and
//! groups the runs of each grid point (median and range of repeats);
//! [`charts`] turns rows, `.hgrm` files and interval logs into charts as
//! plain data ([`LineChart`]); [`mod@draw`] draws them; [`breakdown`] draws the
//! stacked bars of the breakdown chart. This file is the command:
//! it checks every input and the output directory before drawing anything,
//! and reports all the problems of one invocation together.

mod breakdown;
mod charts;
mod draw;
mod rows;
mod workers;

pub(crate) use breakdown::write_breakdown_chart;
pub(crate) use charts::{latency_chart, percentile_chart, throughput_chart, timeline_chart, LineChart};
pub(crate) use draw::write_line_chart;
pub(crate) use rows::{read_rows, RunRow};

use std::path::{Path, PathBuf};

use crate::cli::client::{ChartKind, PlotArgs};
use crate::error::{Error, Result};

/// What a chart is made from, once read.
enum Chart {
    /// A line chart (throughput, latency, percentiles, timeline).
    Lines(LineChart),
    /// The timeline, and beside it, for an open loop, the load asked for
    /// and answered (`OUT-load.png`).
    Timeline(LineChart, Option<LineChart>),
    /// Stacked bars, one per CSV row.
    Breakdown(Vec<RunRow>),
    /// The jobs of a requests CSV on their workers' rows, and how many
    /// requests had no server timing.
    Workers(Vec<workers::Placed>, usize),
}

/// The word a user types for `kind`.
fn name(kind: ChartKind) -> &'static str {
    match kind {
        ChartKind::Throughput => "throughput",
        ChartKind::Latency => "latency",
        ChartKind::Percentiles => "percentiles",
        ChartKind::Timeline => "timeline",
        ChartKind::Breakdown => "breakdown",
        ChartKind::Workers => "workers",
    }
}

/// Draws the chart `args` ask for; returns the files written.
///
/// Nothing is written until everything is known to work: the inputs are
/// read and the chart is made, the output directory is checked, and if
/// anything is wrong every problem is reported in one error — so a typo in
/// the input and a missing output directory are fixed in one go.
///
/// # Errors
/// The problems, as one sentence (a missing or unreadable input, an input
/// the chart does not use, a chart with nothing to draw, a missing output
/// directory, `--log-y` on the breakdown chart); or a file that cannot be
/// written.
pub(crate) fn draw(args: &PlotArgs) -> Result<Vec<PathBuf>> {
    let mut problems = unused_flags(args);
    let chart = match read_chart(args) {
        Ok(chart) => Some(chart),
        Err(problem) => {
            problems.push(problem);
            None
        }
    };
    if let Some(problem) = missing_directory(&args.out) {
        problems.push(problem);
    }
    match (chart, problems.len()) {
        (Some(Chart::Lines(mut chart)), 0) => {
            if args.log_y && !chart.log_y {
                chart.log_y = true;
                chart.y_label = log_scale_label(&chart.y_label);
            }
            write_line_chart(&chart, &args.out)
        }
        (Some(Chart::Timeline(mut latency, load)), 0) => {
            if args.log_y {
                latency.log_y = true;
                latency.y_label = log_scale_label(&latency.y_label);
            }
            let mut files = write_line_chart(&latency, &args.out)?;
            if let Some(load) = load {
                let stem = args.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                files.extend(write_line_chart(&load, &args.out.with_file_name(format!("{stem}-load")))?);
            }
            Ok(files)
        }
        (Some(Chart::Breakdown(rows)), 0) => write_breakdown_chart(&rows, &args.out),
        (Some(Chart::Workers(jobs, left_out)), 0) => {
            let mut files = workers::write_workers_chart(&jobs, left_out, &args.out)?;
            if let Some(path) = &args.trace {
                let text = workers::trace(&jobs).to_string();
                std::fs::write(path, text)
                    .map_err(|e| Error::input(path, format!("cannot write --trace: {e}")))?;
                files.push(path.clone());
            }
            Ok(files)
        }
        (_, 1) => Err(problems.remove(0)),
        _ => Err(Error::Usage(format!(
            "{} problems, nothing drawn: {}",
            problems.len(),
            problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        ))),
    }
}

/// `latency (ms)` becomes `latency (ms, log scale)`.
fn log_scale_label(label: &str) -> String {
    match label.strip_suffix(')') {
        Some(start) => format!("{start}, log scale)"),
        None => format!("{label} (log scale)"),
    }
}

/// Reads the inputs of the chart and makes it.
fn read_chart(args: &PlotArgs) -> Result<Chart> {
    let chart = name(args.chart);
    let needs =
        |flag: &str, what: &str| Error::Usage(format!("the {chart} chart needs {flag} FILE ({what})"));
    let csv = || -> Result<Vec<RunRow>> {
        let path = args.csv.as_deref().ok_or_else(|| needs("--csv", "a CSV from --csv or sweep"))?;
        read_rows(path).map_err(|e| flagged("--csv", e))
    };
    Ok(match args.chart {
        ChartKind::Throughput => Chart::Lines(throughput_chart(&csv()?)?),
        ChartKind::Latency => Chart::Lines(latency_chart(&csv()?)?),
        ChartKind::Breakdown => Chart::Breakdown(csv()?),
        ChartKind::Percentiles => {
            if args.hgrm.is_empty() {
                return Err(needs("--hgrm", "from --hgrm; repeat it for several runs"));
            }
            Chart::Lines(percentile_chart(&args.hgrm).map_err(|e| flagged("--hgrm", e))?)
        }
        ChartKind::Timeline => {
            let log = args
                .hdr_log
                .as_deref()
                .ok_or_else(|| needs("--hdr-log", "an interval log from --hdr-log"))?;
            let (latency, load) = timeline_chart(log).map_err(|e| flagged("--hdr-log", e))?;
            Chart::Timeline(latency, load)
        }
        ChartKind::Workers => {
            let path = args.requests_csv.as_deref().ok_or_else(|| {
                needs("--requests-csv", "one row per request, from tc-client --requests-csv")
            })?;
            let (jobs, left_out) = workers::read_jobs(path).map_err(|e| flagged("--requests-csv", e))?;
            Chart::Workers(jobs, left_out)
        }
    })
}

/// An input file's error, with the flag that named the file in front.
fn flagged(flag: &str, error: Error) -> Error {
    match error {
        Error::Input { path, message } => {
            Error::Input { message, path: format!("{flag} {}", path.display()).into() }
        }
        other => other,
    }
}

/// Flags given that the chart does not use: most likely the wrong chart or
/// the wrong flag, and silently ignoring them would draw the wrong thing.
fn unused_flags(args: &PlotArgs) -> Vec<Error> {
    let chart = args.chart;
    let reads_csv = matches!(chart, ChartKind::Throughput | ChartKind::Latency | ChartKind::Breakdown);
    let given = [
        ("--csv", args.csv.is_some() && !reads_csv),
        ("--hgrm", !args.hgrm.is_empty() && !matches!(chart, ChartKind::Percentiles)),
        ("--hdr-log", args.hdr_log.is_some() && !matches!(chart, ChartKind::Timeline)),
        ("--requests-csv", args.requests_csv.is_some() && !matches!(chart, ChartKind::Workers)),
        ("--trace", args.trace.is_some() && !matches!(chart, ChartKind::Workers)),
    ];
    let mut problems: Vec<Error> = given
        .into_iter()
        .filter(|(_, unused)| *unused)
        .map(|(flag, _)| Error::Usage(format!("the {} chart does not read {flag}", name(chart))))
        .collect();
    if args.log_y && matches!(chart, ChartKind::Workers) {
        problems
            .push(Error::Usage("--log-y does not apply to the workers chart: its rows are workers".into()));
    }
    if args.log_y && matches!(chart, ChartKind::Breakdown) {
        problems.push(Error::Usage(
            "--log-y does not apply to the breakdown chart: its bars stack, which needs a linear axis".into(),
        ));
    }
    problems
}

/// The problem with `-o/--out` when its directory does not exist: charts
/// are written last, and a drawing library's error would not name it.
fn missing_directory(out: &Path) -> Option<Error> {
    let directory = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    (!directory.is_dir()).then(|| {
        Error::input(
            directory,
            format!(
                "the directory for -o/--out does not exist; create it first (mkdir -p {})",
                directory.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(chart: ChartKind, out: PathBuf) -> PlotArgs {
        PlotArgs {
            chart,
            csv: None,
            hgrm: Vec::new(),
            hdr_log: None,
            requests_csv: None,
            trace: None,
            out,
            log_y: false,
        }
    }

    #[test]
    fn a_missing_input_and_a_missing_output_directory_are_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("no/dir/x");
        let plot = PlotArgs { csv: Some(dir.path().join("missing.csv")), ..args(ChartKind::Throughput, out) };
        let error = draw(&plot).unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("2 problems, nothing drawn: --csv "), "{text}");
        assert!(text.contains("missing.csv: cannot read the CSV"), "{text}");
        assert!(text.contains("no/dir: the directory for -o/--out does not exist"), "{text}");
        assert_eq!(error.exit_code(), crate::error::EXIT_USAGE);
    }

    #[test]
    fn every_problem_of_one_invocation_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let plot = PlotArgs {
            hgrm: vec![dir.path().join("run.hgrm")],
            ..args(ChartKind::Timeline, dir.path().join("nowhere/t"))
        };
        let text = draw(&plot).unwrap_err().to_string();
        assert!(text.starts_with("3 problems"), "{text}");
        assert!(text.contains("the timeline chart does not read --hgrm"), "{text}");
        assert!(text.contains("the timeline chart needs --hdr-log FILE"), "{text}");
        assert!(text.contains("nowhere: the directory for -o/--out"), "{text}");

        let breakdown = PlotArgs { log_y: true, ..args(ChartKind::Breakdown, dir.path().join("b")) };
        let text = draw(&breakdown).unwrap_err().to_string();
        assert!(text.starts_with("2 problems"), "{text}");
        assert!(text.contains("--log-y does not apply to the breakdown chart"), "{text}");
        assert!(text.contains("the breakdown chart needs --csv FILE"), "{text}");

        // One problem is reported on its own, as it was.
        let text = draw(&args(ChartKind::Latency, dir.path().join("l"))).unwrap_err().to_string();
        assert_eq!(text, "the latency chart needs --csv FILE (a CSV from --csv or sweep)");
    }
}
