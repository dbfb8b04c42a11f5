//! What `tc-client` does with its flags: one function per subcommand, and
//! the benchmark — create the report files, run, write every report.
//!
//! The binary parses the flags ([`crate::cli::client`]) and calls [`run`];
//! everything here returns the library's [`Error`],
//! which the binary prints as one line.

use std::io::IsTerminal;
use std::sync::Arc;

use crate::cli::client::{
    BenchArgs, CallArgs, ClientArgs, ClientCommand, MergeArgs, ModelArgs, PredictArgs, SweepArgs,
};
use crate::cli::{init_logging, LogFormat};
use crate::client::bench::intervals::clip_to_measured;
use crate::client::bench::options::BenchOptions;
use crate::client::bench::{self, RunSinks};
use crate::client::connection::suggest_embedded;
use crate::client::metrics::{ClientPages, RunState};
use crate::client::output;
use crate::client::progress::ProgressDisplay;
use crate::client::report::files::{attach_all, finish_all, Outputs};
use crate::client::report::interval_log::{start_intervals, target_rate, RunSoFar};
use crate::client::report::{LiveRun, RunReport};
use crate::client::sweep::{run_sweep, SweepPlan};
use crate::error::{Error, Result};
use crate::runtime::http::{HttpLimits, MetricsEndpoint};

/// What the process should exit with after a subcommand ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunVerdict {
    /// Everything worked.
    Success,
    /// The run completed but found a problem (an error reply, a timeout, a
    /// wrong or missing reply, a broken connection).
    Failure,
    /// Ctrl-C or SIGTERM stopped the run; what was measured was reported.
    Interrupted,
    /// The run completed and was reported, but crossed a `--threshold`.
    ThresholdCrossed,
}

impl RunVerdict {
    /// The process exit code: 0, 1, 99 or 130 (see the exit-code table in
    /// `docs/MESSAGES.md`; usage errors exit with 2).
    pub fn exit_code(self) -> u8 {
        match self {
            RunVerdict::Success => 0,
            RunVerdict::Failure => 1,
            RunVerdict::Interrupted => crate::client::interrupt::EXIT_CODE,
            RunVerdict::ThresholdCrossed => crate::client::bench::thresholds::EXIT_CODE,
        }
    }
}

/// Runs `tc-client`.
///
/// # Errors
/// Anything that prevents the command from running at all (bad flags, no
/// server, an unwritable report file), as one sentence.
pub fn run(args: ClientArgs) -> Result<RunVerdict> {
    match args.command {
        Some(ClientCommand::Call(call)) => run_call(&call),
        Some(ClientCommand::Predict(predict)) => run_predict(&predict),
        Some(ClientCommand::Shell(shell)) => {
            let server = &shell.server;
            let tls = crate::client::tls::ClientTls::from_args(&server.tls)?;
            crate::client::shell::run(
                &server.host,
                server.port,
                shell.timeout,
                server.auth_token.as_deref(),
                tls.as_ref(),
            )?;
            Ok(RunVerdict::Success)
        }
        Some(ClientCommand::Kernel(kernel)) => {
            let measured = crate::work::compute::measure_rate(kernel.size, kernel.duration);
            let shown = match kernel.json {
                true => output::kernel_rate_json(kernel.size, &measured),
                false => output::kernel_rate_sentence(kernel.size, &measured),
            };
            println!("{shown}");
            Ok(RunVerdict::Success)
        }
        Some(ClientCommand::Model(model)) => run_model(&model),
        Some(ClientCommand::Plot(args)) => {
            for path in crate::client::plot::draw(&args)? {
                println!("wrote {}", path.display());
            }
            Ok(RunVerdict::Success)
        }
        Some(ClientCommand::Sweep(sweep)) => run_sweep_command(&sweep),
        Some(ClientCommand::Merge(args)) => run_merge(&args),
        Some(ClientCommand::Compare(args)) => {
            let comparison = crate::client::compare::compare(
                &args.runs,
                args.fail_if_slower,
                args.allow_different_workloads,
            )?;
            print!("{}", comparison.text);
            Ok(if comparison.slower { RunVerdict::ThresholdCrossed } else { RunVerdict::Success })
        }
        None => run_benchmark(&args.bench),
    }
}

/// `tc-client call`: one request, its reply printed; an error reply fails.
fn run_call(call: &CallArgs) -> Result<RunVerdict> {
    let server = &call.server;
    let token = server.auth_token.as_deref();
    let tls = crate::client::tls::ClientTls::from_args(&server.tls)?;
    let request = crate::client::shell::request_from_words(&call.request)?;
    let reply = crate::client::connection::call(
        &server.host,
        server.port,
        request,
        call.timeout,
        token,
        tls.as_ref(),
    )?;

    println!("{}", output::reply_for_display(&reply, std::io::stdout().is_terminal()));
    let is_error =
        serde_json::from_str::<serde_json::Value>(&reply).map(|v| v.get("error").is_some()).unwrap_or(true);
    Ok(if is_error { RunVerdict::Failure } else { RunVerdict::Success })
}

/// `tc-client predict`: the files as one request, a line per file; any
/// file left unclassified fails.
fn run_predict(predict: &PredictArgs) -> Result<RunVerdict> {
    let server = &predict.server;
    let tls = crate::client::tls::ClientTls::from_args(&server.tls)?;
    let request = crate::client::predict::request_for(&predict.images)?;
    let reply = crate::client::connection::call(
        &server.host,
        server.port,
        request,
        predict.timeout,
        server.auth_token.as_deref(),
        tls.as_ref(),
    )?;
    let parsed: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| Error::Protocol(format!("the reply is not JSON: {e}")))?;
    let (text, all_classified) = crate::client::predict::describe(&predict.images, &parsed);
    if predict.json {
        println!("{reply}");
    } else {
        print!("{text}");
    }
    Ok(if all_classified { RunVerdict::Success } else { RunVerdict::Failure })
}

/// `tc-client model`: a model's forward pass measured in this process.
fn run_model(args: &ModelArgs) -> Result<RunVerdict> {
    crate::work::model::choose_engine(args.engine, args.onnxruntime.as_deref())?;
    let rate = crate::work::model::measure_forward(
        &args.model,
        args.batch as usize,
        args.threads as usize,
        args.duration,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&rate).expect("plain numbers and strings"));
    } else {
        println!("{}", output::forward_rate_sentence(&rate));
    }
    Ok(RunVerdict::Success)
}

/// `tc-client merge`: the logs as one result, its files written.
fn run_merge(args: &MergeArgs) -> Result<RunVerdict> {
    use std::io::Write;
    // Both files exist before anything is read: a bad path fails at once.
    let create = |flag: &str, path: &Option<std::path::PathBuf>| {
        path.as_deref()
            .map(|p| {
                std::fs::File::create(p)
                    .map(std::io::BufWriter::new)
                    .map_err(|e| crate::client::report::cannot_open(flag, p, e))
            })
            .transpose()
    };
    let (json, hdr_log) = (create("--json", &args.json)?, create("--hdr-log", &args.hdr_log)?);
    let merged = crate::client::merge::merge(&args.logs)?;
    print!("{}", merged.summary());
    if let Some(mut out) = json {
        serde_json::to_writer_pretty(&mut out, &merged)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("writing --json", e))?;
    }
    if let Some(mut out) = hdr_log {
        merged.write_log(&mut out).map_err(|e| Error::io("writing --hdr-log", e))?;
    }
    Ok(RunVerdict::Success)
}

/// `tc-client sweep`: the grid, a line per run; a failed run fails the sweep.
fn run_sweep_command(sweep: &SweepArgs) -> Result<RunVerdict> {
    // The engine first: the grid's memory check counts the model it serves.
    crate::client::bench::embedded::choose_engine_from_env()?;
    let plan = SweepPlan::from_args(sweep)?;
    init_logging(Some("warn"), LogFormat::Text)?;
    crate::client::interrupt::install()?;
    // With --live a sweep's lines go to the view's sweep pane, and are
    // printed once the terminal is back.
    let view = if sweep.live { crate::client::live::LiveView::for_sweep() } else { None };
    if sweep.live && view.is_none() {
        crate::client::say!("tc-client: --live needs stdout to be a terminal; a line per run instead");
    }
    let mut lines = Vec::new();
    let result = run_sweep(&plan, view.as_ref(), |line| match &view {
        Some(view) => {
            view.say(line);
            lines.push(line.to_string());
        }
        None => println!("{line}"),
    });
    drop(view);
    lines.iter().for_each(|line| println!("{line}"));
    let summary = result?;
    println!("{summary}");
    Ok(if crate::client::interrupt::requested() {
        RunVerdict::Interrupted
    } else if summary.failed > 0 {
        RunVerdict::Failure
    } else {
        RunVerdict::Success
    })
}

/// Runs a benchmark and writes every report asked for.
fn run_benchmark(args: &BenchArgs) -> Result<RunVerdict> {
    let options = BenchOptions::from_args(args)?;
    if args.embedded {
        // The embedded server logs to stderr, quietly by default.
        init_logging(Some(&args.log_level), args.log_format)?;
    }
    if args.is_lock_cycle() {
        return run_lock_cycle(&options);
    }
    // From here on, Ctrl-C stops the run and reports what was measured.
    crate::client::interrupt::install()?;
    // Every output file exists before the first request is sent.
    let mut outputs = Outputs::create(&options.outputs)?;
    let started_at = std::time::SystemTime::now();
    let sinks_progress = Arc::new(crate::client::bench::ProgressCounters::default());
    // The run's intervals are merged while it goes: for the JSON report,
    // and into the --hdr-log file when there is one.
    let (interval_sink, intervals) = start_intervals(
        outputs.take_hdr_log(),
        options.concurrency,
        // The log's base time: where its intervals start counting.
        started_at + options.timed_warmup(),
        options.log_interval,
        target_rate(&options),
        Some(RunSoFar {
            thresholds: if args.abort_on_fail { options.thresholds.clone() } else { Vec::new() },
            progress: Arc::clone(&sinks_progress),
        }),
    );
    let mut exporters = outputs.into_exporters();
    let mut sinks =
        RunSinks { intervals: Some(interval_sink), progress: sinks_progress, ..RunSinks::default() };
    let mut live = LiveRun { sinks: &mut sinks };
    attach_all(&mut exporters, &mut live);
    let display = Display::start(args.live, &options, &sinks.progress);
    let metrics = args.metrics_addr.map(|addr| serve_metrics(addr, &sinks.progress)).transpose()?;

    let result = bench::run(options, sinks);
    display.finish();
    // The run's senders are gone now, so the interval thread and the
    // streaming writers drain and end.
    let intervals = intervals.join().map_err(|_| {
        Error::io("merging the run's intervals", std::io::Error::other("the interval thread panicked"))
    })?;
    let mut run = result.map_err(suggest_embedded)?;
    if let Some((state, _)) = &metrics {
        state.finish();
    }
    run.intervals = intervals.map_err(|e| Error::io("writing --hdr-log", e))?;
    // The intervals count from the end of a timed warm-up.
    let warmup_s = run.options.timed_warmup().as_secs_f64();
    let (from_s, to_s) = run
        .measured_window
        .map_or((0.0, 0.0), |(from, to)| (from.as_secs_f64() - warmup_s, to.as_secs_f64() - warmup_s));
    clip_to_measured(&mut run.intervals, from_s, to_s);
    let report = RunReport::new(&run);
    finish_all(exporters, &run, &report)?;
    if let Some((state, endpoint)) = metrics {
        state.linger(args.metrics_linger, endpoint.local_addr());
        endpoint.stop();
    }
    Ok(verdict_of(&run, &report))
}

/// The exit code a run earned. A threshold the user set is the verdict
/// they asked for: it comes before the run's own failure (an errors==0
/// threshold and an error reply exit 99, not 1).
fn verdict_of(run: &bench::BenchRun, report: &RunReport) -> RunVerdict {
    if run.interrupted {
        RunVerdict::Interrupted
    } else if report.crossed_a_threshold() {
        RunVerdict::ThresholdCrossed
    } else if run.failed() {
        RunVerdict::Failure
    } else {
        RunVerdict::Success
    }
}

/// What the user watches while a run goes: the live view where asked and
/// possible, the progress line otherwise.
struct Display {
    live: Option<crate::client::live::LiveView>,
    progress: ProgressDisplay,
}

impl Display {
    fn start(asked: bool, options: &BenchOptions, progress: &Arc<bench::ProgressCounters>) -> Display {
        let live =
            if asked { crate::client::live::LiveView::start(options, Arc::clone(progress)) } else { None };
        if asked && live.is_none() {
            crate::client::say!(
                "tc-client: --live needs stdout to be a terminal; showing the progress line instead"
            );
        }
        let progress = match live {
            Some(_) => ProgressDisplay::none(),
            None => ProgressDisplay::start(options, Arc::clone(progress)),
        };
        Display { live, progress }
    }

    /// The terminal back before anything is printed on it.
    fn finish(self) {
        self.progress.finish();
        if let Some(view) = self.live {
            view.finish();
            if let Some(why) = crate::client::interrupt::stopped_by() {
                crate::client::say!("tc-client: {why}: stopped; the report covers what was measured");
            }
        }
    }
}

/// Starts `--metrics-addr`: the run's counters as Prometheus metrics.
fn serve_metrics(
    addr: std::net::SocketAddr,
    progress: &Arc<crate::client::bench::ProgressCounters>,
) -> Result<(Arc<RunState>, MetricsEndpoint)> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::io(format!("--metrics-addr {addr}: cannot listen there"), e))?;
    let state = RunState::new(Arc::clone(progress));
    let pages = Arc::new(ClientPages::new(Arc::clone(&state)));
    let endpoint = MetricsEndpoint::serve(listener, pages, HttpLimits::default())?;
    crate::client::say!("tc-client metrics on http://{}/metrics", endpoint.local_addr());
    Ok((state, endpoint))
}

/// `--cmd lock-cycle`: prints the summary, writes `--json` if asked.
fn run_lock_cycle(options: &BenchOptions) -> Result<RunVerdict> {
    let json = Outputs::create(&options.outputs)?.into_json();
    let report = bench::lock_cycle::run(options).map_err(suggest_embedded)?;
    print!("{}", report.summary());
    if let Some(json) = json {
        json.write(&report)?;
    }
    Ok(if report.failed() { RunVerdict::Failure } else { RunVerdict::Success })
}
