//! Sweeps: a grid of benchmark runs, each against its own embedded server,
//! appended as rows of one CSV with exactly the columns of `--csv` — so a
//! whole study (threads vs processes vs threads-with-GIL, as workers and
//! connections grow) is one command, and its CSV feeds the plots directly.
//!
//! A sweep can be stopped and started again: before each run it looks for a
//! row with the same server mode, GIL, workers, connections, size, pipeline,
//! rate and command already in the CSV, and skips the runs that are done.
//!
//! It lives beside the load generator ([`crate::client::bench`]) rather than
//! in it because it also writes reports: the generator knows nothing of them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::client::SweepArgs;
use crate::client::bench::mix::{CommandMix, ImagePayloads};
use crate::client::bench::options::{
    parse_warmup, BenchOptions, OptionsError, OutputPaths, Pacing, StopAfter, Target,
};
use crate::client::bench::{run, RunSinks};
use crate::client::report::csv_row::{CsvFile, SummaryRow};
use crate::client::report::RunReport;
use crate::error::{Error, Result};
use crate::protocol::Mode;

/// A farm configuration to sweep over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SweepMode {
    /// Worker threads.
    Threads,
    /// Worker threads sharing a CPython-style GIL (5 ms switch interval).
    ThreadsGil,
    /// Worker processes.
    Processes,
}

impl SweepMode {
    /// Parses `threads`, `threads-gil` or `processes`.
    ///
    /// # Errors
    /// A message naming the accepted words.
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        match text.trim() {
            "threads" => Ok(SweepMode::Threads),
            "threads-gil" | "gil" => Ok(SweepMode::ThreadsGil),
            "processes" => Ok(SweepMode::Processes),
            other => Err(format!("{other:?} is not a mode; use threads, threads-gil or processes")),
        }
    }

    fn mode(self) -> Mode {
        match self {
            SweepMode::Processes => Mode::Processes,
            _ => Mode::Threads,
        }
    }

    fn gil(self) -> Option<Duration> {
        (self == SweepMode::ThreadsGil).then_some(Duration::from_millis(5))
    }

    /// The word a user types for it.
    fn name(self) -> &'static str {
        match self {
            SweepMode::Threads => "threads",
            SweepMode::ThreadsGil => "threads-gil",
            SweepMode::Processes => "processes",
        }
    }
}

/// One grid point in words, for the progress lines:
/// `threads, 2 workers, 8 connections, n=500000, pipeline 1`.
fn describe(point: &GridPoint) -> String {
    let pacing = match point.pacing {
        Pacing::Closed { pipeline } => format!("pipeline {pipeline}"),
        Pacing::Open { rate } => format!("open loop at {rate} requests/s"),
    };
    let workers =
        if point.workers == 1 { "1 worker".to_string() } else { format!("{} workers", point.workers) };
    format!("{}, {workers}, {} connections, n={}, {pacing}", point.mode.name(), point.concurrency, point.size)
}

/// The grid and what every run shares.
#[derive(Debug, Clone)]
pub(crate) struct SweepPlan {
    /// Farm configurations.
    pub(crate) modes: Vec<SweepMode>,
    /// Worker counts.
    pub(crate) workers: Vec<usize>,
    /// Connection counts.
    pub(crate) concurrency: Vec<usize>,
    /// Compute sizes.
    pub(crate) sizes: Vec<u64>,
    /// Closed-loop pipelines (used when `rates` is empty).
    pub(crate) pipelines: Vec<usize>,
    /// Open-loop rates (when given, the sweep is open-loop).
    pub(crate) rates: Vec<f64>,
    /// Everything else (duration, warm-up, command, timeout, percentiles).
    pub(crate) template: BenchOptions,
    /// The CSV the rows go to.
    pub(crate) csv: PathBuf,
}

/// One run of the grid.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GridPoint {
    /// Farm configuration.
    pub(crate) mode: SweepMode,
    /// Workers.
    pub(crate) workers: usize,
    /// Connections.
    pub(crate) concurrency: usize,
    /// Compute `n`.
    pub(crate) size: u64,
    /// Closed or open loop.
    pub(crate) pacing: Pacing,
}

impl SweepPlan {
    /// The validated sweep `args` describe.
    ///
    /// # Errors
    /// An [`OptionsError`] naming the offending flag.
    pub(crate) fn from_args(args: &SweepArgs) -> std::result::Result<SweepPlan, OptionsError> {
        for (flag, empty) in [
            ("--modes", args.modes.is_empty()),
            ("--workers", args.workers.is_empty()),
            ("--concurrency", args.concurrency.is_empty()),
            ("--sizes", args.sizes.is_empty()),
        ] {
            if empty {
                return Err(OptionsError::new(flag, format!("{flag} needs at least one value")));
            }
        }
        let template = BenchOptions {
            target: Target::Embedded { mode: Mode::Threads, workers: 1, gil: None },
            concurrency: 1,
            pacing: Pacing::Closed { pipeline: 1 },
            stop: StopAfter::Duration(args.duration),
            warmup: parse_warmup(&args.warmup).map_err(|e| OptionsError::about("--warmup", e))?,
            mix: CommandMix::parse(&args.cmd).map_err(|e| OptionsError::about("--cmd", e))?,
            size: 1,
            timeout: args.timeout,
            verify: false,
            percentiles: vec![50.0, 90.0, 99.0, 99.9, 99.99, 100.0],
            log_interval: Duration::from_secs(1),
            outputs: OutputPaths::default(),
            progress: false,
            auth_token: None,
            tls: None,
            embedded_tls: args.tls,
            images: ImagePayloads::default(),
        };
        let plan = SweepPlan {
            modes: args
                .modes
                .iter()
                .map(|text| SweepMode::parse(text))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| OptionsError::about("--modes", e))?,
            workers: args.workers.clone(),
            concurrency: args.concurrency.clone(),
            sizes: args.sizes.clone(),
            pipelines: args.pipelines.clone(),
            rates: args.rates.clone(),
            template,
            csv: args.csv.clone(),
        };
        // Every point must be a valid benchmark on its own.
        for point in plan.points() {
            let options = BenchOptions {
                target: Target::Embedded { mode: Mode::Threads, workers: point.workers, gil: None },
                concurrency: point.concurrency,
                pacing: point.pacing,
                ..plan.template.clone()
            };
            options.validate()?;
        }
        Ok(plan)
    }
}

impl SweepPlan {
    /// Every point of the grid, in the order they run.
    pub(crate) fn points(&self) -> Vec<GridPoint> {
        let loads: Vec<Pacing> = if self.rates.is_empty() {
            self.pipelines.iter().map(|&pipeline| Pacing::Closed { pipeline }).collect()
        } else {
            self.rates.iter().map(|&rate| Pacing::Open { rate }).collect()
        };
        let mut points = Vec::new();
        for &mode in &self.modes {
            for &workers in &self.workers {
                for &size in &self.sizes {
                    for &concurrency in &self.concurrency {
                        for &pacing in &loads {
                            points.push(GridPoint { mode, workers, concurrency, size, pacing });
                        }
                    }
                }
            }
        }
        points
    }

    fn options_for(&self, point: &GridPoint) -> BenchOptions {
        BenchOptions {
            target: Target::Embedded {
                mode: point.mode.mode(),
                workers: point.workers,
                gil: point.mode.gil(),
            },
            concurrency: point.concurrency,
            size: point.size,
            pacing: point.pacing,
            progress: false,
            ..self.template.clone()
        }
    }
}

/// The columns of a CSV row that identify a grid point.
#[derive(Debug, Deserialize, PartialEq, Eq, Hash)]
struct DoneKey {
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
    /// An interrupted run does not count as done: resuming runs it again.
    #[serde(default)]
    interrupted: bool,
}

impl DoneKey {
    fn of(point: &GridPoint, cmd: &str, tls: bool) -> Self {
        let (pipeline, rate_rps) = match point.pacing {
            Pacing::Closed { pipeline } => (Some(pipeline), None),
            // Written by the csv crate the way it writes every f64 (e.g. 200.0).
            Pacing::Open { rate } => (None, Some(csv_float(rate))),
        };
        DoneKey {
            server_mode: Some(point.mode.mode().as_str().to_string()),
            server_gil: Some(point.mode.gil().is_some()),
            server_tls: tls,
            server_workers: Some(point.workers as u64),
            concurrency: point.concurrency,
            size: point.size,
            pipeline,
            rate_rps,
            cmd: cmd.to_string(),
            interrupted: false,
        }
    }
}

/// How the csv crate renders an f64 cell.
fn csv_float(value: f64) -> String {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    let _ = writer.serialize([value]);
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default().trim().to_string()
}

/// The grid points already in the CSV (none if it does not exist yet).
fn done(csv: &Path) -> Result<HashSet<DoneKey>> {
    if !csv.exists() {
        return Ok(HashSet::new());
    }
    let mut reader = csv::Reader::from_path(csv)
        .map_err(|e| Error::input(csv, format!("(--csv) cannot read it to resume: {e}")))?;
    reader
        .deserialize::<DoneKey>()
        .map(|row| row.map_err(|e| Error::input(csv, format!("(--csv) not a tc-client CSV ({e})"))))
        .collect()
}

/// What a sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SweepSummary {
    /// Runs made and appended.
    pub(crate) ran: usize,
    /// Runs already in the CSV.
    pub(crate) skipped: usize,
    /// Runs that found problems (their rows are appended all the same).
    pub(crate) failed: usize,
}

/// Runs every grid point not already in the CSV, appending a row after each
/// run (so an interrupted sweep keeps what it measured). `say` gets one line
/// per point.
///
/// # Errors
/// A CSV that cannot be read or written, or a run that cannot start at all.
pub(crate) fn run_sweep(plan: &SweepPlan, mut say: impl FnMut(&str)) -> Result<SweepSummary> {
    let cmd = plan.template.mix.to_string();
    let already = done(&plan.csv)?;
    let points = plan.points();
    let mut summary = SweepSummary::default();
    for (index, point) in points.iter().enumerate() {
        if crate::client::interrupt::requested() {
            break;
        }
        let label = format!("[{}/{}] {}", index + 1, points.len(), describe(point));
        if already.contains(&DoneKey::of(point, &cmd, plan.template.embedded_tls)) {
            summary.skipped += 1;
            say(&format!("{label}: already in {}, skipped", plan.csv.display()));
            continue;
        }
        let result = run(plan.options_for(point), RunSinks::default())?;
        let report = RunReport::new(&result);
        CsvFile::open(&plan.csv, "--csv")?.append(&SummaryRow::new(&result, &report))?;
        summary.ran += 1;
        if result.failed() {
            summary.failed += 1;
        }
        let ms = |us: Option<u64>| us.unwrap_or(0) as f64 / 1000.0;
        say(&format!(
            "{label}: {:.1} ok replies/s, p50 {:.3} ms, p99 {:.3} ms{}{}",
            report.throughput_rps,
            ms(report.latency.at(50.0)),
            ms(report.latency.at(99.0)),
            if result.failed() { " (with problems)" } else { "" },
            if result.interrupted { " (interrupted; a resumed sweep runs it again)" } else { "" }
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> SweepPlan {
        SweepPlan {
            modes: vec![SweepMode::Threads, SweepMode::Processes],
            workers: vec![1, 2],
            concurrency: vec![1, 4, 16],
            sizes: vec![500_000],
            pipelines: vec![1],
            rates: vec![],
            template: BenchOptions::example(),
            csv: PathBuf::from("unused.csv"),
        }
    }

    #[test]
    fn the_grid_is_the_cartesian_product() {
        let points = plan().points();
        assert_eq!(points.len(), 2 * 2 * 3);
        assert_eq!(
            points[0],
            GridPoint {
                mode: SweepMode::Threads,
                workers: 1,
                concurrency: 1,
                size: 500_000,
                pacing: Pacing::Closed { pipeline: 1 }
            }
        );
        let open = SweepPlan { rates: vec![100.0, 200.0], ..plan() };
        assert!(open.points().iter().all(|p| matches!(p.pacing, Pacing::Open { .. })));
        assert_eq!(open.points().len(), 2 * 2 * 3 * 2);
    }

    #[test]
    fn keys_match_what_the_csv_writer_writes() {
        assert_eq!(csv_float(200.0), "200.0");
        assert_eq!(csv_float(12.5), "12.5");
        assert_eq!(SweepMode::parse("threads-gil"), Ok(SweepMode::ThreadsGil));
        assert!(SweepMode::parse("fibers").is_err());
    }
}
