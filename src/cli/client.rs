//! `tc-client`: flags, and the functions behind each subcommand.
//!
//! With no subcommand, `tc-client` runs a benchmark (see [`crate::client::bench`]);
//! `call` sends one request; `shell` opens an interactive prompt.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::client::bench::mix::{CommandMix, ImagePayloads};
use crate::client::bench::options::{
    parse_percentiles, parse_warmup, BenchOptions, LoadModel, OutputPaths, StopAfter, Target, Warmup,
};
use crate::client::bench::sweep::{run_sweep, SweepMode, SweepPlan};
use crate::client::bench::{self, ProgressCounters, RunSinks};
use crate::client::report::csv_row::SummaryRow;
use crate::client::report::files::ReportFiles;
use crate::client::report::{hgrm, streams, summary, RunReport};
use crate::protocol::Mode;
use crate::units::parse_duration;

/// Length of a run when neither --requests nor --duration is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

const EXAMPLES: &str = "\
Examples:
  tc-client --embedded                                  # benchmark a farm started for the run
  tc-client --embedded --mode threads --workers 2 -c 8 -d 30s --csv results/runs.csv
  tc-client --port 5050 --concurrency 4 --requests 5 --size 500000   # as the original client
  tc-client --embedded --rate 300 -d 20s --hgrm open.hgrm           # open loop, wrk2-style
  tc-client --embedded --cmd ping --pipeline 16
  tc-client call '{\"cmd\":\"stats\"}'
  tc-client shell";

/// The ThreadCenter benchmark client: measures a server's throughput and
/// latency (HdrHistogram), with CSV, JSON and .hgrm reports.
#[derive(Debug, Parser)]
#[command(name = "tc-client", version, about, long_about = None, after_help = EXAMPLES,
          args_conflicts_with_subcommands = true)]
pub struct ClientArgs {
    /// `call` or `shell`; without one, run a benchmark.
    #[command(subcommand)]
    pub command: Option<ClientCommand>,

    /// Benchmark flags.
    #[command(flatten)]
    pub bench: BenchArgs,
}

/// `tc-client` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Send one request and print the reply, e.g. tc-client call '{"cmd":"stats"}'.
    /// An "id" is added when the request has none. Exits with 1 when the
    /// reply is an error.
    Call(CallArgs),
    /// An interactive prompt: type ping, compute 500000, stats, health, or
    /// raw JSON, and see each reply with its round-trip time.
    Shell(ShellArgs),
    /// Measure the compute kernel on one thread, in this process, with no
    /// server: the reference for "ideal" farm throughput (workers × this).
    Kernel(KernelArgs),
    /// Run a grid of benchmarks, each against its own embedded server, and
    /// append one row per run to a CSV (the columns of --csv). Runs already
    /// in the CSV are skipped, so a stopped sweep can be resumed.
    Sweep(SweepArgs),
    /// Draw a chart (PNG and SVG) from CSV reports, .hgrm files or an
    /// interval log.
    Plot(PlotArgs),
}

/// The charts `tc-client plot` draws.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ChartKind {
    /// Throughput vs workers per configuration, with the ideal line (--csv).
    Throughput,
    /// p50 / p99 / p99.9 vs connections (--csv).
    Latency,
    /// Latency by percentile on a log 1/(1-p) axis (--hgrm, several).
    Percentiles,
    /// Latency over time (--hdr-log).
    Timeline,
    /// Queue wait / service / rest per run (--csv).
    Breakdown,
}

/// Flags of `tc-client plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// Which chart.
    #[arg(value_enum)]
    pub chart: ChartKind,

    /// A CSV from --csv or sweep (throughput, latency, breakdown).
    #[arg(long)]
    pub csv: Option<PathBuf>,

    /// A .hgrm file from --hgrm (percentiles); repeat for several runs.
    #[arg(long)]
    pub hgrm: Vec<PathBuf>,

    /// An interval log from --hdr-log (timeline).
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,

    /// Output path without extension: OUT.png and OUT.svg are written.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
}

/// Draws the chart `args` asks for; returns the files written.
fn plot(args: &PlotArgs) -> anyhow::Result<Vec<PathBuf>> {
    use crate::client::plot;
    let need_csv = || -> anyhow::Result<Vec<plot::RunRow>> {
        let path = args.csv.as_deref().ok_or_else(|| anyhow::anyhow!("this chart needs --csv FILE"))?;
        Ok(plot::read_rows(path)?)
    };
    let written = match args.chart {
        ChartKind::Throughput => plot::write_line_chart(&plot::throughput_chart(&need_csv()?), &args.out)?,
        ChartKind::Latency => plot::write_line_chart(&plot::latency_chart(&need_csv()?), &args.out)?,
        ChartKind::Breakdown => plot::write_breakdown_chart(&need_csv()?, &args.out)?,
        ChartKind::Percentiles => {
            anyhow::ensure!(!args.hgrm.is_empty(), "the percentiles chart needs at least one --hgrm FILE");
            plot::write_line_chart(&plot::percentile_chart(&args.hgrm)?, &args.out)?
        }
        ChartKind::Timeline => {
            let log = args
                .hdr_log
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("the timeline chart needs --hdr-log FILE"))?;
            plot::write_line_chart(&plot::timeline_chart(log)?, &args.out)?
        }
    };
    Ok(written)
}

/// Flags of `tc-client sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Farm configurations: threads, threads-gil, processes.
    #[arg(long, value_delimiter = ',', default_value = "threads,threads-gil,processes", value_parser = SweepMode::parse)]
    pub modes: Vec<SweepMode>,

    /// Worker counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,

    /// Connection counts.
    #[arg(long, short = 'c', value_delimiter = ',', default_value = "8")]
    pub concurrency: Vec<usize>,

    /// Compute sizes (n).
    #[arg(long, short = 's', value_delimiter = ',', default_value = "500000")]
    pub sizes: Vec<u64>,

    /// Closed-loop pipeline depths.
    #[arg(long, value_delimiter = ',', default_value = "1", conflicts_with = "rates")]
    pub pipelines: Vec<usize>,

    /// Open-loop rates (requests per second); makes the sweep open-loop.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,

    /// Measured time of each run.
    #[arg(long, short = 'd', default_value = "3s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Warm-up of each run: a time (1s) or requests per connection (50r).
    #[arg(long, default_value = "1s", value_parser = parse_warmup)]
    pub warmup: Warmup,

    /// Command to send: compute, ping, stats or health.
    #[arg(long, default_value = "compute")]
    pub cmd: String,

    /// A request without a reply after this long counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// The CSV the rows are appended to (created with a header if new).
    #[arg(long, default_value = "results/sweep.csv")]
    pub csv: PathBuf,
}

impl SweepArgs {
    /// The validated sweep these flags describe.
    ///
    /// # Errors
    /// A sentence naming the offending flag.
    pub fn to_plan(&self) -> Result<SweepPlan, String> {
        for (flag, empty) in [
            ("--modes", self.modes.is_empty()),
            ("--workers", self.workers.is_empty()),
            ("--concurrency", self.concurrency.is_empty()),
            ("--sizes", self.sizes.is_empty()),
        ] {
            if empty {
                return Err(format!("{flag} needs at least one value"));
            }
        }
        let template = BenchOptions {
            target: Target::Embedded { mode: Mode::Threads, workers: 1, gil: None },
            concurrency: 1,
            load: LoadModel::Closed { pipeline: 1 },
            stop: StopAfter::Duration(self.duration),
            warmup: self.warmup,
            mix: CommandMix::parse(&self.cmd).map_err(|e| format!("--cmd: {e}"))?,
            size: 1,
            timeout: self.timeout,
            verify: false,
            percentiles: vec![50.0, 90.0, 99.0, 99.9, 99.99, 100.0],
            log_interval: Duration::from_secs(1),
            outputs: OutputPaths::default(),
            progress: false,
            auth_token: None,
            images: ImagePayloads::default(),
        };
        let plan = SweepPlan {
            modes: self.modes.clone(),
            workers: self.workers.clone(),
            concurrency: self.concurrency.clone(),
            sizes: self.sizes.clone(),
            pipelines: self.pipelines.clone(),
            rates: self.rates.clone(),
            template,
            csv: self.csv.clone(),
        };
        // Every point must be a valid benchmark on its own.
        for point in plan.points() {
            let options = BenchOptions {
                target: Target::Embedded { mode: Mode::Threads, workers: point.workers, gil: None },
                concurrency: point.concurrency,
                load: point.load,
                ..plan.template.clone()
            };
            options.validate()?;
        }
        Ok(plan)
    }
}

/// Flags of `tc-client kernel`.
#[derive(Debug, clap::Args)]
pub struct KernelArgs {
    /// `n` of each computation.
    #[arg(long, short = 's', default_value_t = 500_000)]
    pub size: u64,

    /// How long to measure.
    #[arg(long, short = 'd', default_value = "3s", value_parser = parse_duration)]
    pub duration: Duration,
}

/// Where the server is.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerAddress {
    /// Server host.
    #[arg(long, env = "THREADCENTER_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Server port.
    #[arg(long, env = "THREADCENTER_PORT", default_value_t = 5050)]
    pub port: u16,

    /// Shared secret of a server started with --auth-token.
    #[arg(long, env = "THREADCENTER_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
}

/// Flags of `tc-client call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The request, as a JSON object.
    pub request: String,

    /// Where the server is.
    #[command(flatten)]
    pub server: ServerAddress,

    /// How long to wait for the connection and the reply (seconds, or 500ms, 10s, 1m...).
    #[arg(long, env = "THREADCENTER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Flags of `tc-client shell`.
#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// Where the server is.
    #[command(flatten)]
    pub server: ServerAddress,

    /// How long to wait for each reply (seconds, or 500ms, 10s, 1m...).
    #[arg(long, env = "THREADCENTER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Benchmark flags (no subcommand).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Server host (not with --embedded).
    #[arg(long, env = "THREADCENTER_HOST", conflicts_with = "embedded")]
    pub host: Option<String>,

    /// Server port (not with --embedded).
    #[arg(long, env = "THREADCENTER_PORT", conflicts_with = "embedded")]
    pub port: Option<u16>,

    /// Start a real tc-server on a free loopback port for this run, and stop
    /// it afterwards.
    #[arg(long, short = 'e')]
    pub embedded: bool,

    /// Pool mode of the embedded server [default: processes].
    #[arg(long, env = "THREADCENTER_MODE", value_enum, requires = "embedded")]
    pub mode: Option<Mode>,

    /// Workers of the embedded server [default: number of CPUs].
    #[arg(long, env = "THREADCENTER_WORKERS", requires = "embedded")]
    pub workers: Option<usize>,

    /// Embedded server in thread mode with a CPython-style GIL.
    #[arg(long, requires = "embedded")]
    pub gil: bool,

    /// With --gil: the GIL's switch interval.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub switch_interval: Duration,

    /// Connections, each with its own threads.
    #[arg(long, short = 'c', env = "THREADCENTER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,

    /// Stop after this many measured requests per connection.
    #[arg(long, short = 'n', conflicts_with = "duration")]
    pub requests: Option<u64>,

    /// Stop after this long (seconds, or 500ms, 30s, 1m...) [default: 10s
    /// when --requests is not given].
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Send but leave out of every statistic: a time (2s, or plain seconds)
    /// or requests per connection (100r).
    #[arg(long, value_parser = parse_warmup)]
    pub warmup: Option<Warmup>,

    /// Open loop: send this many requests per second (all connections
    /// together) on a fixed schedule; latency counts from the scheduled time.
    #[arg(long, short = 'r', conflicts_with = "pipeline")]
    pub rate: Option<f64>,

    /// Closed loop: requests in flight per connection [default: 1].
    #[arg(long, short = 'p')]
    pub pipeline: Option<usize>,

    /// Command to send: compute, ping, stats, health, predict, predict_batch,
    /// or lock-cycle (each connection acquires the mutex, predicts, releases).
    #[arg(long, default_value = "compute", conflicts_with = "mix")]
    pub cmd: String,

    /// Images for predict, predict_batch and lock-cycle: every png/jpg/bmp/gif
    /// file in DIR, sent in turn [default: the shipped samples, models/samples].
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,

    /// Images per predict_batch request.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,

    /// Weighted mix of commands instead of --cmd, e.g. compute:80,ping:20.
    #[arg(long)]
    pub mix: Option<String>,

    /// `n` of compute requests.
    #[arg(long, short = 's', default_value_t = 500_000)]
    pub size: u64,

    /// A request without a reply after this long counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Check every compute result against a local computation.
    #[arg(long)]
    pub verify: bool,

    /// Percentiles in the summary and JSON report (max = 100).
    #[arg(long, default_value = "50,90,99,99.9,99.99,max", value_parser = parse_percentile_list)]
    pub percentiles: PercentileList,

    /// Append one summary row per run to this CSV file (header when new).
    #[arg(long)]
    pub csv: Option<PathBuf>,

    /// Write one row per request to this CSV file, as the run goes.
    #[arg(long)]
    pub requests_csv: Option<PathBuf>,

    /// Write the latency percentile distribution (HdrHistogram .hgrm text).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,

    /// Write an HdrHistogram interval log (one histogram per interval).
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,

    /// Interval of --hdr-log.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub hdr_log_interval: Duration,

    /// Write the whole result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Shared secret of a server started with --auth-token (with
    /// --embedded, the embedded server requires it too).
    #[arg(long, env = "THREADCENTER_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Log level of the embedded server (error, warn, info, debug, trace).
    #[arg(long, env = "THREADCENTER_LOG_LEVEL", default_value = "warn")]
    pub log_level: String,

    /// The embedded server's log lines: human-readable text, or JSON.
    #[arg(long, env = "THREADCENTER_LOG_FORMAT", value_enum, default_value_t = super::LogFormat::Text)]
    pub log_format: super::LogFormat,
}

/// `--percentiles` as one value (clap would read a `Vec` as repeated flags).
#[derive(Debug, Clone, PartialEq)]
pub struct PercentileList(pub Vec<f64>);

fn parse_percentile_list(text: &str) -> Result<PercentileList, String> {
    parse_percentiles(text).map(PercentileList)
}

impl BenchArgs {
    /// The validated plan these flags describe.
    ///
    /// Whether `--cmd lock-cycle` was asked for.
    pub fn is_lock_cycle(&self) -> bool {
        self.mix.is_none() && self.cmd == "lock-cycle"
    }

    /// # Errors
    /// A sentence naming the offending flag.
    pub fn to_options(&self) -> Result<BenchOptions, String> {
        let target = if self.embedded {
            Target::Embedded {
                mode: self.mode.unwrap_or(Mode::Processes),
                workers: self.workers.unwrap_or_else(|| crate::server::ServerConfig::default().workers),
                gil: self.gil.then_some(self.switch_interval),
            }
        } else {
            Target::Remote {
                host: self.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
                port: self.port.unwrap_or(5050),
            }
        };
        let load = match self.rate {
            Some(rate) => LoadModel::Open { rate },
            None => LoadModel::Closed { pipeline: self.pipeline.unwrap_or(1) },
        };
        let stop = match (self.requests, self.duration) {
            (Some(n), _) => StopAfter::Requests(n),
            (None, Some(d)) => StopAfter::Duration(d),
            (None, None) => StopAfter::Duration(DEFAULT_DURATION),
        };
        let lock_cycle = self.is_lock_cycle();
        // lock-cycle is its own loop (see bench::lock_cycle); its requests are predictions.
        let mix_text = if lock_cycle { "predict" } else { self.mix.as_deref().unwrap_or(&self.cmd) };
        let flag = if self.mix.is_some() { "--mix" } else { "--cmd" };
        let mix = CommandMix::parse(mix_text).map_err(|e| format!("{flag}: {e}"))?;
        let images = if mix.includes_images() {
            let dir = self
                .images
                .clone()
                .unwrap_or_else(|| crate::work::model::default_models_dir().join("samples"));
            ImagePayloads::load(&dir, self.batch)?
        } else {
            ImagePayloads::default()
        };
        let options = BenchOptions {
            target,
            concurrency: self.concurrency,
            load,
            stop,
            warmup: self.warmup.unwrap_or(Warmup::None),
            mix,
            size: self.size,
            timeout: self.timeout,
            verify: self.verify,
            percentiles: self.percentiles.0.clone(),
            log_interval: self.hdr_log_interval,
            outputs: OutputPaths {
                csv: self.csv.clone(),
                requests_csv: self.requests_csv.clone(),
                hgrm: self.hgrm.clone(),
                hdr_log: self.hdr_log.clone(),
                json: self.json.clone(),
            },
            progress: true,
            auth_token: self.auth_token.clone(),
            images,
        };
        options.validate()?;
        Ok(options)
    }
}

/// What the process should exit with after a subcommand ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunVerdict {
    /// Everything worked.
    Success,
    /// The run completed but found a problem (an error reply, a timeout, a
    /// wrong or missing reply, a broken connection).
    Failure,
}

/// Runs `tc-client`.
///
/// # Errors
/// Anything that prevents the command from running at all (bad flags, no
/// server, an unwritable report file), as one sentence.
pub fn run(args: ClientArgs) -> anyhow::Result<RunVerdict> {
    match args.command {
        Some(ClientCommand::Call(call)) => {
            let server = &call.server;
            let token = server.auth_token.as_deref();
            let reply = crate::client::connection::call(
                &server.host,
                server.port,
                &call.request,
                call.timeout,
                token,
            )?;

            println!("{reply}");
            let is_error = serde_json::from_str::<serde_json::Value>(&reply)
                .map(|v| v.get("error").is_some())
                .unwrap_or(true);
            Ok(if is_error { RunVerdict::Failure } else { RunVerdict::Success })
        }
        Some(ClientCommand::Shell(shell)) => {
            let server = &shell.server;
            crate::client::shell::run(
                &server.host,
                server.port,
                shell.timeout,
                server.auth_token.as_deref(),
            )?;
            Ok(RunVerdict::Success)
        }
        Some(ClientCommand::Kernel(kernel)) => {
            let measured = crate::work::compute::measure_rate(kernel.size, kernel.duration);
            println!(
                "{{\"size\":{},\"computations\":{},\"seconds\":{:.6},\"per_second\":{:.3}}}",
                kernel.size,
                measured.computations,
                measured.elapsed.as_secs_f64(),
                measured.per_second()
            );
            Ok(RunVerdict::Success)
        }
        Some(ClientCommand::Plot(args)) => {
            for path in plot(&args)? {
                println!("wrote {}", path.display());
            }
            Ok(RunVerdict::Success)
        }
        Some(ClientCommand::Sweep(sweep)) => {
            let plan = sweep.to_plan().map_err(anyhow::Error::msg)?;
            super::init_logging(Some("warn"), super::LogFormat::Text)?;
            let summary = run_sweep(&plan, |line| println!("{line}"))?;
            println!(
                "sweep: {} runs appended to {}, {} already there, {} with problems",
                summary.ran,
                plan.csv.display(),
                summary.skipped,
                summary.failed
            );
            Ok(if summary.failed > 0 { RunVerdict::Failure } else { RunVerdict::Success })
        }
        None => run_benchmark(&args.bench),
    }
}

/// Runs a benchmark and writes every report asked for.
fn run_benchmark(args: &BenchArgs) -> anyhow::Result<RunVerdict> {
    let options = args.to_options().map_err(anyhow::Error::msg)?;
    if args.embedded {
        // The embedded server logs to stderr, quietly by default.
        super::init_logging(Some(&args.log_level), args.log_format)?;
    }
    if args.is_lock_cycle() {
        return run_lock_cycle(&options);
    }
    // Every output file exists before the first request is sent.
    let mut files = ReportFiles::create(&options.outputs).map_err(anyhow::Error::msg)?;
    let started_at = std::time::SystemTime::now();

    let mut sinks = RunSinks::default();
    let requests_writer = files.requests_csv.take().map(|file| {
        let (tx, handle) = streams::start_requests_csv(file);
        sinks.requests = Some(tx);
        handle
    });
    let log_writer = files.hdr_log.take().map(|file| {
        let (tx, handle) =
            streams::start_interval_log(file, options.concurrency, started_at, options.log_interval);
        sinks.intervals = Some(tx);
        handle
    });
    let progress = ProgressDisplay::start(&options, Arc::clone(&sinks.progress));

    let result = bench::run(options, sinks);
    progress.finish();
    // The run's senders are gone now, so the writers drain and end.
    let requests_written =
        requests_writer.map(|h| h.join().map_err(|_| anyhow::anyhow!("the --requests-csv writer panicked")));
    let intervals_written =
        log_writer.map(|h| h.join().map_err(|_| anyhow::anyhow!("the --hdr-log writer panicked")));
    let run = result?;
    if let Some(written) = requests_written {
        written?.context("writing --requests-csv")?;
    }
    if let Some(written) = intervals_written {
        written?.context("writing --hdr-log")?;
    }

    let report = RunReport::new(&run);
    let mut stdout = std::io::stdout().lock();
    summary::write_summary(&report, &mut stdout)?;
    stdout.flush()?;
    if let Some(mut file) = files.hgrm.take() {
        hgrm::write_percentile_distribution(&run.recorder.corrected, &mut file)
            .and_then(|()| file.flush())
            .context("writing --hgrm")?;
    }
    if let Some(mut file) = files.json.take() {
        serde_json::to_writer_pretty(&mut file, &report).context("writing --json")?;
        writeln!(file).and_then(|()| file.flush()).context("writing --json")?;
    }
    if let Some((file, is_new)) = files.csv.take() {
        SummaryRow::new(&run, &report).write(file, is_new).context("writing --csv")?;
    }
    Ok(if run.failed() { RunVerdict::Failure } else { RunVerdict::Success })
}

/// `--cmd lock-cycle`: prints the summary, writes `--json` if asked.
fn run_lock_cycle(options: &BenchOptions) -> anyhow::Result<RunVerdict> {
    let mut files = ReportFiles::create(&options.outputs).map_err(anyhow::Error::msg)?;
    let report = bench::lock_cycle::run(options)?;
    print!("{}", report.summary());
    if let Some(mut file) = files.json.take() {
        serde_json::to_writer_pretty(&mut file, &report).context("writing --json")?;
        writeln!(file).and_then(|()| file.flush()).context("writing --json")?;
    }
    Ok(if report.failed() { RunVerdict::Failure } else { RunVerdict::Success })
}

/// The live progress bar on stderr, drawn only when stderr is a terminal.
struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ProgressDisplay {
    fn start(options: &BenchOptions, counters: Arc<ProgressCounters>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !options.progress || !std::io::stderr().is_terminal() {
            return ProgressDisplay { stop, thread: None };
        }
        let (length, by_time) = match options.stop {
            StopAfter::Requests(n) => ((n + options.warmup_requests()) * options.concurrency as u64, false),
            StopAfter::Duration(d) => {
                let warmup = match options.warmup {
                    Warmup::Duration(w) => w,
                    _ => Duration::ZERO,
                };
                (u64::try_from((d + warmup).as_millis()).unwrap_or(u64::MAX), true)
            }
        };
        let bar = indicatif::ProgressBar::new(length);
        let template = if by_time {
            "{elapsed_precise} [{bar:30}] {msg}"
        } else {
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let done = counters.done.load(Ordering::Relaxed);
                let problems = counters.problems.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_position(if by_time { started.elapsed().as_millis() as u64 } else { done });
                bar.set_message(format!("{rate:.0} req/s, {problems} errors"));
                thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        ProgressDisplay { stop, thread: Some(thread) }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flag_definitions_are_consistent() {
        ClientArgs::command().debug_assert();
    }

    fn options(args: &[&str]) -> Result<BenchOptions, String> {
        let mut full = vec!["tc-client"];
        full.extend_from_slice(args);
        let parsed = ClientArgs::try_parse_from(full).map_err(|e| e.to_string())?;
        parsed.bench.to_options()
    }

    #[test]
    fn defaults_are_a_ten_second_closed_loop_compute_run() {
        let o = options(&["--embedded"]).unwrap();
        assert_eq!(o.concurrency, 4);
        assert_eq!(o.size, 500_000);
        assert_eq!(o.load, LoadModel::Closed { pipeline: 1 });
        assert_eq!(o.stop, StopAfter::Duration(DEFAULT_DURATION));
        assert_eq!(o.percentiles, vec![50.0, 90.0, 99.0, 99.9, 99.99, 100.0]);
        assert!(matches!(o.target, Target::Embedded { mode: Mode::Processes, .. }));
    }

    #[test]
    fn the_original_clients_flags_work() {
        let o = options(&[
            "--host",
            "127.0.0.1",
            "--port",
            "5050",
            "--concurrency",
            "4",
            "--requests",
            "5",
            "--size",
            "500000",
        ])
        .unwrap();
        assert_eq!(o.target, Target::Remote { host: "127.0.0.1".into(), port: 5050 });
        assert_eq!(o.stop, StopAfter::Requests(5));
    }

    #[test]
    fn flags_that_do_not_go_together_are_refused() {
        for args in [
            &["--rate", "100", "--pipeline", "4"][..],
            &["--requests", "5", "--duration", "2s"][..],
            &["--cmd", "ping", "--mix", "ping:1,compute:1"][..],
            &["--embedded", "--port", "5050"][..],
            &["--mode", "threads"][..],
            &["--workers", "2"][..],
            &["--cmd", "launch"][..],
            &["--percentiles", "50,high"][..],
            &["--warmup", "soon"][..],
        ] {
            assert!(options(args).is_err(), "{args:?} must be refused");
        }
    }
}
