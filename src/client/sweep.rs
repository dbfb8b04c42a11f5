//! Sweeps: a grid of benchmark runs, each against its own embedded server,
//! appended as rows of one CSV with exactly the columns of `--csv` — so a
//! whole study (threads vs processes vs threads-with-GIL, as workers and
//! connections grow) is one command, and its CSV feeds the plots directly.
//!
//! Each point can run several times (`--repeats N`). The runs are taken
//! round-robin over the grid — the first run of every point, then the
//! second of every point... — so a slow spell of a busy machine spreads over
//! all points instead of sinking one. The closing summary gives each point's
//! median and range ([`repeats`]).
//!
//! A sweep can be stopped and started again: it counts the complete rows
//! each point (same server mode, GIL, TLS, workers, connections, size,
//! pipeline, rate and command) already has in the CSV, and a point with k
//! of its N runs gets only the N − k missing ones ([`existing`]). `--force`
//! runs every point N more times whatever the CSV holds; the older rows stay
//! and count as more runs of their point, in the summary as in the charts.
//!
//! It lives beside the load generator ([`crate::client::bench`]) rather than
//! in it because it also writes reports: the generator knows nothing of them.

mod existing;
pub(crate) mod repeats;
mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) use summary::SweepSummary;

use crate::cli::client::SweepArgs;
use crate::client::bench::intervals::IntervalFigures;
use crate::client::bench::mix::{CommandMix, ImagePayloads};
use crate::client::bench::options::{
    parse_warmup, BenchOptions, OptionsError, OutputPaths, Pacing, StopAfter, Target,
};
use crate::client::bench::{run, ProgressCounters, RunSinks};
use crate::client::live::LiveView;
use crate::client::report::csv_row::{CsvFile, SummaryRow};
use crate::client::report::interval_log::{start_intervals, target_rate, RunSoFar};
use crate::client::report::RunReport;
use crate::error::Result;
use crate::protocol::Mode;
use existing::{complete_runs, PointKey};
use repeats::{Spread, MAX_REPEATS};
use summary::{count, repeats_report};

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
    /// What one worker of this mode costs the machine.
    fn worker_kind(self) -> crate::machine::WorkerKind {
        match self {
            SweepMode::Threads | SweepMode::ThreadsGil => crate::machine::WorkerKind::Thread,
            SweepMode::Processes => crate::machine::WorkerKind::Process,
        }
    }

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
        Pacing::Staged(ref stages) => format!("open loop, stages {stages}"),
    };
    format!(
        "{}, {}, {}, n={}, {pacing}",
        point.mode.name(),
        count(point.workers, "worker", "workers"),
        count(point.concurrency, "connection", "connections"),
        point.size
    )
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
    /// Runs of each point (`--repeats`, 1 to [`MAX_REPEATS`]).
    pub(crate) repeats: usize,
    /// Run every point `repeats` more times, whatever the CSV holds.
    pub(crate) force: bool,
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
        let modes: Vec<SweepMode> = args
            .modes
            .iter()
            .map(|text| SweepMode::parse(text))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| OptionsError::about("--modes", e))?;
        check_workers(&args.workers, &modes)?;
        if !(1..=MAX_REPEATS).contains(&args.repeats) {
            return Err(OptionsError::new(
                "--repeats",
                format!(
                    "--repeats must be from 1 to {MAX_REPEATS} (runs of each grid point), not {}",
                    args.repeats
                ),
            ));
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
            dashboard: None,
            images: ImagePayloads::default(),
            thresholds: Vec::new(),
        };
        let plan = SweepPlan {
            modes,
            workers: args.workers.clone(),
            concurrency: args.concurrency.clone(),
            sizes: args.sizes.clone(),
            pipelines: args.pipelines.clone(),
            rates: args.rates.clone(),
            repeats: args.repeats,
            force: args.force,
            template,
            csv: args.csv.clone(),
        };
        // Every point must be a valid benchmark on its own.
        for point in plan.points() {
            let options = BenchOptions {
                target: Target::Embedded { mode: Mode::Threads, workers: point.workers, gil: None },
                concurrency: point.concurrency,
                pacing: point.pacing.clone(),
                ..plan.template.clone()
            };
            options.validate()?;
        }
        Ok(plan)
    }
}

/// Every worker count is checked against the machine now, before the first
/// run, not when its turn comes (it would take the machine down), with the
/// same costs tc-server counts: each worker of each mode in the grid with
/// its own copy of the model the runs serve.
fn check_workers(counts: &[usize], modes: &[SweepMode]) -> std::result::Result<(), OptionsError> {
    let machine = crate::machine::Machine::read();
    let served_model =
        crate::work::model::default_models_dir().join(crate::work::model::default_model_file());
    let model_bytes = crate::machine::model_file_bytes(Some(&served_model));
    for &workers in counts {
        for mode in modes {
            machine
                .check_workers("--workers", workers, mode.worker_kind(), model_bytes)
                .map_err(|refused| OptionsError::new("--workers", refused))?;
        }
    }
    Ok(())
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
                        for pacing in &loads {
                            let pacing = pacing.clone();
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
            pacing: point.pacing.clone(),
            progress: false,
            ..self.template.clone()
        }
    }
}

/// Runs each grid point until the CSV holds `repeats` complete runs of it
/// (with `force`: `repeats` more runs), round-robin over the grid, appending
/// a row after each run (so an interrupted sweep keeps what it measured).
/// `say` gets one line per point skipped, one per run, and at the end the
/// per-point medians when a point has several runs.
///
/// # Errors
/// A CSV that cannot be read or written, or a run that cannot start at all.
pub(crate) fn run_sweep(
    plan: &SweepPlan,
    live: Option<&LiveView>,
    mut say: impl FnMut(&str),
) -> Result<SweepSummary> {
    let cmd = plan.template.mix.to_string();
    let key = |point: &GridPoint| PointKey::of(point, &cmd, plan.template.embedded_tls);
    let already = complete_runs(&plan.csv)?;
    let points = plan.points();
    let mut summary = SweepSummary { csv: plan.csv.clone(), ..SweepSummary::default() };
    if plan.force {
        let earlier = points.iter().map(|point| already.get(&key(point)).map_or(0, Vec::len)).sum();
        summary.forced_beside = Some(earlier);
    }

    // How many runs each point still needs.
    let needed: Vec<usize> = points
        .iter()
        .map(|point| {
            let done = already.get(&key(point)).map_or(0, Vec::len);
            if plan.force {
                plan.repeats
            } else {
                summary.skipped += done.min(plan.repeats);
                if done >= plan.repeats {
                    say(&format!(
                        "{}: already in {} ({}), skipped",
                        describe(point),
                        plan.csv.display(),
                        count(done, "complete run", "complete runs")
                    ));
                }
                plan.repeats.saturating_sub(done)
            }
        })
        .collect();

    // Round r runs every point that needs more than r runs, in grid order.
    let total: usize = needed.iter().sum();
    let mut started = 0;
    'rounds: for round in 0..plan.repeats {
        for (point, _) in points.iter().zip(&needed).filter(|(_, &n)| n > round) {
            if crate::client::interrupt::requested() {
                break 'rounds;
            }
            started += 1;
            let repeat = if needed.iter().any(|&n| n > 1) {
                format!(" (run {} of {})", round + 1, plan.repeats)
            } else {
                String::new()
            };
            let label = format!("[{started}/{total}] {}{repeat}", describe(point));
            let result = run_point(plan, point, live, &label)?;
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
    }

    // The medians, from every complete row of each point now in the CSV.
    let measured = complete_runs(&plan.csv)?;
    let spreads: Vec<(String, Spread)> = points
        .iter()
        .filter_map(|point| {
            let spread = Spread::of(measured.get(&key(point))?)?;
            Some((describe(point), spread))
        })
        .collect();
    for line in repeats_report(&spreads) {
        say(&line);
    }
    Ok(summary)
}

/// One run of a grid point, shown by the live view when there is one.
fn run_point(
    plan: &SweepPlan,
    point: &GridPoint,
    live: Option<&LiveView>,
    label: &str,
) -> Result<crate::client::bench::BenchRun> {
    let options = plan.options_for(point);
    let (sinks, intervals) = live_sinks(live, &options, label);
    let result = run(options, sinks);
    if let Some(intervals) = intervals {
        // Ended with the run's senders; what it kept went to the view.
        let _ = intervals.join();
    }
    result
}

/// A sweep's run's sinks: with the live view, counters and intervals of
/// the run's own, shown by the view (intervals for its last second);
/// without it, none.
fn live_sinks(
    live: Option<&LiveView>,
    options: &BenchOptions,
    label: &str,
) -> (RunSinks, Option<JoinHandle<std::io::Result<Vec<IntervalFigures>>>>) {
    let Some(view) = live else { return (RunSinks::default(), None) };
    let progress = Arc::new(ProgressCounters::default());
    let (intervals, handle) = start_intervals(
        None::<std::io::Sink>,
        options.concurrency,
        std::time::SystemTime::now() + options.timed_warmup(),
        options.log_interval,
        target_rate(options),
        Some(RunSoFar { thresholds: Vec::new(), progress: Arc::clone(&progress) }),
    );
    view.begin(options, Arc::clone(&progress), Some(label));
    (RunSinks { progress, intervals: Some(intervals), requests: None }, Some(handle))
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
            repeats: 1,
            force: false,
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
    fn modes_are_parsed_from_the_words_users_type() {
        assert_eq!(SweepMode::parse("threads-gil"), Ok(SweepMode::ThreadsGil));
        assert!(SweepMode::parse("fibers").is_err());
    }
}
