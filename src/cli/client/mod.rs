//! `tc-client`'s flags and the parsing of its command line, and nothing
//! else (as hyperfine's `cli.rs`).
//!
//! Every value that needs more than a type to be valid is kept as the user
//! typed it; [`crate::client::bench::options`] turns these flags into a
//! validated plan, with an error that names the flag. With no subcommand,
//! `tc-client` runs a benchmark; [`crate::client::run()`] runs each
//! subcommand.
//!
//! This file holds the command line as a whole (the subcommands, and the
//! help for a flag given in the wrong place); the benchmark's flags are in
//! [`bench`], the subcommands' in [`subcommands`].

use std::ffi::OsString;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod bench;
mod subcommands;

pub(crate) use bench::BenchArgs;
pub(crate) use subcommands::{
    CallArgs, ChartKind, CompareArgs, KernelArgs, MergeArgs, ModelArgs, PlotArgs, PredictArgs, ShellArgs,
    SweepArgs, TlsArgs,
};

/// Length of a run when neither --requests nor --duration is given.
pub(crate) const DEFAULT_DURATION: Duration = Duration::from_secs(10);

const EXAMPLES: &str = "\
Examples:
  tc-client --embedded                                  # benchmark a farm started for the run
  tc-client --embedded --mode threads --workers 2 -c 8 -d 30s --csv results/runs.csv
  tc-client --port 5050 --concurrency 4 --requests 5 --size 500000   # against a running tc-server
  tc-client --embedded --rate 300 -d 20s --hgrm open.hgrm           # open loop, wrk2-style
  tc-client --embedded --stages 10s@200,10s@600,10s@1000 --hdr-log k.hlog  # find the knee
  tc-client --embedded --cmd ping --pipeline 16
  tc-client --embedded --threshold 'p99<20ms' --threshold 'errors==0'   # CI: exit 99 when one is crossed
  tc-client call compute 1000                           # one request (also: JSON in single quotes, @FILE, -)
  tc-client predict models/samples/*.png                # label and score of each image
  tc-client shell
Ctrl-C during a run prints and writes what was measured, then exits with 130.";

/// The ThreadCenter benchmark client: measures a server's throughput and
/// latency (HdrHistogram), with CSV, JSON and .hgrm reports.
#[derive(Debug, Parser)]
#[command(name = "tc-client", version, long_about = None, after_help = EXAMPLES,
          args_conflicts_with_subcommands = true)]
pub struct ClientArgs {
    /// A subcommand (call, shell, predict...); without one, run a benchmark.
    #[command(subcommand)]
    pub(crate) command: Option<ClientCommand>,

    /// Benchmark flags.
    #[command(flatten)]
    pub(crate) bench: BenchArgs,
}

impl ClientArgs {
    /// Parses the process's command line; on a mistake, prints clap's
    /// message and exits with 2.
    ///
    /// A subcommand's own flags written before it (`tc-client --port 5070
    /// call ping`) are read as if written after it: clap would otherwise
    /// refuse them as benchmark flags that "cannot be used with" `call`.
    pub fn parse_command_line() -> ClientArgs {
        Self::try_parse_moving_flags(std::env::args_os().collect()).unwrap_or_else(|e| e.exit())
    }

    /// [`ClientArgs::parse_command_line`] on `args`, returning clap's error.
    fn try_parse_moving_flags(args: Vec<OsString>) -> Result<ClientArgs, clap::Error> {
        ClientArgs::try_parse_from(&args)
            .or_else(|error| match flags_moved_after_subcommand(&args, &error) {
                Some(moved) => ClientArgs::try_parse_from(moved),
                None => Err(error),
            })
            .map_err(|error| explain_benchmark_only_flag(&args, error))
            .and_then(|parsed| embedded_flags_need_embedded(&args, parsed))
    }
}

/// `--mode`, `--workers`, `--gil` and `--dashboard` shape the farm that
/// `--embedded` starts; with a server of one's own they would do nothing.
/// clap's `requires = "embedded"` does not see this once `--port` or
/// `--host` is given (they conflict with `--embedded`, and clap lets a
/// conflict waive a requirement), so it is checked here, for the flags on
/// the command line. Not for their environment forms: `THREADCENTER_MODE`
/// and `THREADCENTER_WORKERS` also shape `tc-server`, and a shell that set
/// them for the server must still run the client.
fn embedded_flags_need_embedded(raw: &[OsString], args: ClientArgs) -> Result<ClientArgs, clap::Error> {
    use clap::CommandFactory;
    if args.command.is_some() || args.bench.embedded {
        return Ok(args);
    }
    let written = |flag: &str| {
        raw.iter().skip(1).any(|arg| {
            let arg = arg.to_string_lossy();
            arg == flag || arg.strip_prefix(flag).is_some_and(|rest| rest.starts_with('='))
        })
    };
    let Some(flag) = ["--mode", "--workers", "--gil", "--dashboard"].into_iter().find(|flag| written(flag))
    else {
        return Ok(args);
    };
    let hint = if flag == "--dashboard" {
        "a server of your own serves its dashboard itself: start it with `tc-server --metrics-addr 127.0.0.1:9464` \
         and open http://127.0.0.1:9464/"
    } else {
        "a server of your own keeps the mode and workers it was started with"
    };
    let message =
        format!("{flag} shapes the farm that --embedded starts for the run; add --embedded, or: {hint}");
    Err(ClientArgs::command().error(clap::error::ErrorKind::ArgumentConflict, message))
}

/// clap's "unexpected argument '--embedded'" under a subcommand, said as
/// what it is: `--embedded` (and `--mode`, `--workers`, which shape the
/// embedded farm) belong to the benchmark, and each subcommand has its own
/// reason not to take them. Any other error is returned unchanged.
fn explain_benchmark_only_flag(args: &[OsString], error: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if error.kind() != ErrorKind::UnknownArgument {
        return error;
    }
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else { return error };
    let flag = flag.split('=').next().unwrap_or_default().to_string();
    if !["--embedded", "--mode", "--workers"].contains(&flag.as_str()) {
        return error;
    }
    const SUBCOMMANDS: [&str; 6] = ["sweep", "kernel", "model", "call", "shell", "predict"];
    let Some(subcommand) =
        args.iter().skip(1).filter_map(|arg| arg.to_str()).find(|arg| SUBCOMMANDS.contains(arg))
    else {
        return error;
    };
    let why = match subcommand {
        "sweep" => {
            "a sweep always starts its own embedded server for each run, so it needs no --embedded, and \
                    its --modes and --workers are lists that choose the grid"
                .to_string()
        }
        "kernel" | "model" => {
            format!("`tc-client {subcommand}` measures in this process, with no server at all")
        }
        "call" | "shell" | "predict" => format!(
            "`tc-client {subcommand}` talks to a server that is already running: start one with \
             `tc-server --port 5050` in another terminal (its --mode and --workers choose the farm) and give \
             that --port here"
        ),
        _ => return error,
    };
    ClientArgs::command().error(
        ErrorKind::UnknownArgument,
        format!("{flag} belongs to the benchmark (tc-client --embedded ...), which starts a farm for the run; {why}"),
    )
}

/// `tc-client FLAGS... SUBCOMMAND REST...` as `tc-client SUBCOMMAND FLAGS...
/// REST...`, when `error` is clap's "the subcommand cannot be used with"
/// (flags before a subcommand are taken as the benchmark's); `None` for any
/// other error.
fn flags_moved_after_subcommand(args: &[OsString], error: &clap::Error) -> Option<Vec<OsString>> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::ArgumentConflict {
        return None;
    }
    let Some(ContextValue::String(subcommand)) = error.get(ContextKind::InvalidSubcommand) else {
        return None;
    };
    let at = args.iter().skip(1).position(|arg| arg == subcommand.as_str())? + 1;
    let mut moved = vec![args[0].clone(), args[at].clone()];
    moved.extend_from_slice(&args[1..at]);
    moved.extend_from_slice(&args[at + 1..]);
    Some(moved)
}

/// `tc-client` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientCommand {
    /// Send one request and print the reply, e.g. tc-client call '{"cmd":"stats"}'.
    /// An "id" is added when the request has none. On a terminal, a reply
    /// whose result is an object (stats, health) is indented. Exits with 1
    /// when the reply is an error.
    Call(CallArgs),
    /// An interactive prompt: type ping, compute 500000, stats, health, or
    /// raw JSON, and see each reply with its round-trip time.
    Shell(ShellArgs),
    /// Classify image files with the server's model: one line per file with
    /// its label and score (several files go as one predict_batch).
    Predict(PredictArgs),
    /// Measure the compute kernel on one thread, in this process, with no
    /// server: the reference for "ideal" farm throughput (workers × this).
    Kernel(KernelArgs),
    /// Measure a model's forward pass in this process, with no server and no
    /// image decoding: images/s for one batch size, on --threads threads.
    Model(ModelArgs),
    /// Run a grid of benchmarks, each against its own embedded server, and
    /// append one row per run to a CSV (the columns of --csv). Runs already
    /// in the CSV are skipped (unless --force), so a stopped sweep can be
    /// resumed; --repeats runs each point several times.
    Sweep(SweepArgs),
    /// Draw a chart (PNG and SVG) from CSV reports, .hgrm files or an
    /// interval log.
    Plot(PlotArgs),
    /// Compare runs' --json reports side by side, the first as the baseline:
    /// throughput, p50 and p99 as mean ± stdev over each run's intervals,
    /// their ratios, and Welch's t-test on whether they differ.
    Compare(CompareArgs),
    /// Merge the --hdr-log interval logs of several client processes or
    /// machines against one farm into one result: histograms added (never
    /// percentiles averaged), intervals lined up by wall-clock time.
    Merge(MergeArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flag_definitions_are_consistent() {
        ClientArgs::command().debug_assert();
    }

    #[test]
    fn a_subcommands_flags_may_come_before_it() {
        let parse =
            |line: &str| ClientArgs::try_parse_moving_flags(line.split(' ').map(OsString::from).collect());
        let Ok(ClientArgs { command: Some(ClientCommand::Call(call)), .. }) =
            parse("tc-client --port 5070 --timeout 2s call compute 1000")
        else {
            panic!("parsed as call");
        };
        assert_eq!(
            (call.server.port, call.timeout, call.request),
            (5070, Duration::from_secs(2), vec!["compute".to_string(), "1000".to_string()])
        );
        // A benchmark flag is still refused, now by the subcommand itself.
        let error = parse("tc-client -c 4 call ping").unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument, "{error}");
    }

    #[test]
    fn a_flag_of_the_embedded_farm_without_embedded_is_refused_naming_it() {
        for (flag, extra) in
            [("--dashboard", None), ("--gil", None), ("--mode", Some("threads")), ("--workers", Some("2"))]
        {
            for target in [&["--port", "5050"][..], &[][..]] {
                let mut args: Vec<OsString> = vec!["tc-client".into()];
                args.extend(target.iter().map(OsString::from));
                args.push(flag.into());
                args.extend(extra.map(OsString::from));
                let error = ClientArgs::try_parse_moving_flags(args.clone()).expect_err(flag);
                assert_eq!(error.exit_code(), 2, "{args:?}");
                assert!(error.to_string().contains(flag), "{args:?}: {error}");
            }
        }
        let with_embedded = ["tc-client", "--embedded", "--dashboard", "--mode", "threads", "--gil"];
        assert!(
            ClientArgs::try_parse_moving_flags(with_embedded.iter().map(OsString::from).collect()).is_ok()
        );
    }

    #[test]
    fn embedded_under_a_subcommand_says_it_belongs_to_the_benchmark() {
        let parse =
            |line: &str| ClientArgs::try_parse_moving_flags(line.split(' ').map(OsString::from).collect());
        for (line, why) in [
            ("tc-client call --embedded ping", "talks to a server that is already running"),
            ("tc-client --embedded call ping", "talks to a server that is already running"),
            ("tc-client shell --workers 4", "start one with `tc-server --port 5050`"),
            ("tc-client sweep --embedded", "a sweep always starts its own embedded server"),
            ("tc-client kernel --embedded", "with no server at all"),
        ] {
            let error = parse(line).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument, "{line}: {error}");
            let text = error.to_string();
            assert!(text.contains("belongs to the benchmark (tc-client --embedded ...)"), "{line}: {text}");
            assert!(text.contains(why), "{line}: {text}");
        }
    }
}
