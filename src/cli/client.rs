//! `tc-client`'s flags and the parsing of its command line, and nothing
//! else (as hyperfine's `cli.rs`).
//!
//! Every value that needs more than a type to be valid is kept as the user
//! typed it; [`crate::client::bench::options`] turns these flags into a
//! validated plan, with an error that names the flag. With no subcommand,
//! `tc-client` runs a benchmark; [`crate::client::run()`] runs each
//! subcommand.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::LogFormat;
use crate::protocol::Mode;
use crate::units::{parse_duration, parse_whole_number};

/// Length of a run when neither --requests nor --duration is given.
pub(crate) const DEFAULT_DURATION: Duration = Duration::from_secs(10);

const EXAMPLES: &str = "\
Examples:
  tc-client --embedded                                  # benchmark a farm started for the run
  tc-client --embedded --mode threads --workers 2 -c 8 -d 30s --csv results/runs.csv
  tc-client --port 5050 --concurrency 4 --requests 5 --size 500000   # against a running tc-server
  tc-client --embedded --rate 300 -d 20s --hgrm open.hgrm           # open loop, wrk2-style
  tc-client --embedded --cmd ping --pipeline 16
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
}

/// The charts `tc-client plot` draws.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ChartKind {
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
    /// One row per worker, a bar per job with its queue wait before it: the
    /// dashboard's task stream of a finished run (--requests-csv).
    Workers,
}

/// Flags of `tc-client plot`.
#[derive(Debug, clap::Args)]
pub(crate) struct PlotArgs {
    /// Which chart.
    #[arg(value_enum)]
    pub(crate) chart: ChartKind,

    /// A CSV from --csv or sweep (throughput, latency, breakdown).
    #[arg(long)]
    pub(crate) csv: Option<PathBuf>,

    /// A .hgrm file from --hgrm (percentiles); repeat for several runs.
    #[arg(long)]
    pub(crate) hgrm: Vec<PathBuf>,

    /// An interval log from --hdr-log (timeline).
    #[arg(long)]
    pub(crate) hdr_log: Option<PathBuf>,

    /// A CSV from --requests-csv (workers).
    #[arg(long)]
    pub(crate) requests_csv: Option<PathBuf>,

    /// With workers: also write the run in the Chrome trace-event format
    /// (JSON) to this file, for Perfetto (ui.perfetto.dev) or chrome://tracing.
    #[arg(long)]
    pub(crate) trace: Option<PathBuf>,

    /// Output path without extension: OUT.png and OUT.svg are written.
    #[arg(long, short = 'o')]
    pub(crate) out: PathBuf,

    /// A logarithmic y axis (timeline, latency, throughput), for values that
    /// span decades, such as a latency spike; percentiles always has one.
    #[arg(long)]
    pub(crate) log_y: bool,
}

/// Flags of `tc-client sweep`.
#[derive(Debug, clap::Args)]
pub(crate) struct SweepArgs {
    /// Farm configurations: threads, threads-gil, processes.
    #[arg(long, value_delimiter = ',', default_value = "threads,threads-gil,processes")]
    pub(crate) modes: Vec<String>,

    /// Worker counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4", value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) workers: Vec<usize>,

    /// Connection counts.
    #[arg(long, short = 'c', value_delimiter = ',', default_value = "8", value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) concurrency: Vec<usize>,

    /// Compute sizes (n).
    #[arg(long, short = 's', value_delimiter = ',', default_value = "500000", value_parser = parse_whole_number::<u64>, allow_negative_numbers = true)]
    pub(crate) sizes: Vec<u64>,

    /// Closed-loop pipeline depths.
    #[arg(long, value_delimiter = ',', default_value = "1", conflicts_with = "rates", value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) pipelines: Vec<usize>,

    /// Open-loop rates (requests per second); makes the sweep open-loop.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub(crate) rates: Vec<f64>,

    /// Measured time of each run.
    #[arg(long, short = 'd', default_value = "3s", value_parser = parse_duration)]
    pub(crate) duration: Duration,

    /// Warm-up of each run: a time (1s) or requests per connection (50r).
    #[arg(long, default_value = "1s")]
    pub(crate) warmup: String,

    /// Command to send: compute, ping, stats or health.
    #[arg(long, default_value = "compute")]
    pub(crate) cmd: String,

    /// A request without a reply after this long counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,

    /// Every run's embedded server serves TLS (a throwaway certificate per
    /// run); rows say so in their `server_tls` column.
    #[arg(long)]
    pub(crate) tls: bool,

    /// The CSV the rows are appended to (created with a header if new).
    #[arg(long, default_value = "results/sweep.csv")]
    pub(crate) csv: PathBuf,

    /// Runs of each grid point (1 to 100), taken round-robin over the grid;
    /// the summary and the charts give each point's median and range.
    #[arg(long, default_value_t = 1, value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) repeats: usize,

    /// Run every point --repeats more times even if the CSV already has its
    /// runs; the older rows stay and count as more runs of their point.
    #[arg(long)]
    pub(crate) force: bool,
}

/// Parses `--batch` and `--threads` of `tc-client model`: a whole number
/// from 1 to 256, with the same sentences as every other count flag.
fn parse_one_to_256(text: &str) -> Result<u32, String> {
    match parse_whole_number::<u32>(text)? {
        n @ 1..=256 => Ok(n),
        _ => Err("must be from 1 to 256".to_string()),
    }
}

/// Flags of `tc-client kernel`.
#[derive(Debug, clap::Args)]
pub(crate) struct KernelArgs {
    /// `n` of each computation.
    #[arg(long, short = 's', default_value_t = 500_000, value_parser = parse_whole_number::<u64>, allow_negative_numbers = true)]
    pub(crate) size: u64,

    /// How long to measure.
    #[arg(long, short = 'd', default_value = "3s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) duration: Duration,

    /// Print the measurement as one JSON object instead of a sentence.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Flags of `tc-client model`.
#[derive(Debug, clap::Args)]
pub(crate) struct ModelArgs {
    /// The model file (.onnx or .safetensors).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/models/fire-cnn.onnx"))]
    pub(crate) model: PathBuf,

    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = parse_one_to_256, allow_negative_numbers = true)]
    pub(crate) batch: u32,

    /// Threads the batch is split across (rayon).
    #[arg(long, default_value_t = 1, value_parser = parse_one_to_256, allow_negative_numbers = true)]
    pub(crate) threads: u32,

    /// How long to measure (after one warm-up pass).
    #[arg(long, short = 'd', default_value = "3s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) duration: Duration,

    /// Run ONNX models on onnxruntime, loaded from this libonnxruntime.so.
    #[arg(long, env = "THREADCENTER_ONNXRUNTIME", value_name = "LIBRARY")]
    pub(crate) onnxruntime: Option<PathBuf>,

    /// Print the measurement as one JSON object instead of a sentence.
    #[arg(long)]
    pub(crate) json: bool,
}

/// TLS to the server (`tc-server --tls-cert`).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TlsArgs {
    /// Connect over TLS.
    #[arg(long, env = "THREADCENTER_TLS")]
    pub(crate) tls: bool,

    /// The PEM CA that signed the server's certificate [default: the system's roots].
    #[arg(long, env = "THREADCENTER_TLS_CA", value_name = "FILE", requires = "tls")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// The name the server's certificate must carry [default: --host].
    #[arg(long, env = "THREADCENTER_TLS_SERVER_NAME", value_name = "NAME", requires = "tls")]
    pub(crate) tls_server_name: Option<String>,

    /// Client certificate (PEM) for a server with --tls-client-ca; needs --tls-key.
    #[arg(long = "tls-cert", env = "THREADCENTER_TLS_CLIENT_CERT", value_name = "FILE", requires_all = ["tls", "tls_client_key"])]
    pub(crate) tls_client_cert: Option<PathBuf>,

    /// The client certificate's PEM private key.
    #[arg(
        long = "tls-key",
        env = "THREADCENTER_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert"
    )]
    pub(crate) tls_client_key: Option<PathBuf>,

    /// DANGER: accept any server certificate, unchecked (self-signed test setups only).
    #[arg(long, requires = "tls")]
    pub(crate) tls_insecure: bool,
}

/// Where the server is.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerAddress {
    /// Server host.
    #[arg(long, env = "THREADCENTER_HOST", default_value = "127.0.0.1")]
    pub(crate) host: String,

    /// Server port.
    #[arg(long, env = "THREADCENTER_PORT", default_value_t = 5050, value_parser = parse_whole_number::<u16>, allow_negative_numbers = true)]
    pub(crate) port: u16,

    /// Shared secret of a server started with --auth-token.
    #[arg(long, env = "THREADCENTER_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<String>,

    /// TLS to the server.
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

/// Flags of `tc-client call`.
#[derive(Debug, clap::Args)]
pub(crate) struct CallArgs {
    /// The request: a JSON object ('{"cmd":"ping"}'), the shell's shorthand
    /// (ping, stats, health, compute 1000), @FILE to read it from a file, or
    /// - to read it from standard input.
    #[arg(required = true, num_args = 1.., allow_negative_numbers = true)]
    pub(crate) request: Vec<String>,

    /// Where the server is.
    #[command(flatten)]
    pub(crate) server: ServerAddress,

    /// How long to wait for the connection and the reply (seconds, or 500ms, 10s, 1m...).
    #[arg(long, env = "THREADCENTER_TIMEOUT", default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) timeout: Duration,
}

/// Flags of `tc-client predict`.
#[derive(Debug, clap::Args)]
pub(crate) struct PredictArgs {
    /// Image files (PNG, JPEG, BMP, GIF).
    #[arg(required = true, num_args = 1.., value_name = "IMAGE")]
    pub(crate) images: Vec<PathBuf>,

    /// Print the server's reply as it came (one JSON line) instead of one
    /// line per file.
    #[arg(long)]
    pub(crate) json: bool,

    /// Where the server is.
    #[command(flatten)]
    pub(crate) server: ServerAddress,

    /// How long to wait for the connection and the reply (seconds, or 500ms, 10s, 1m...).
    #[arg(long, env = "THREADCENTER_TIMEOUT", default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) timeout: Duration,
}

/// Flags of `tc-client shell`.
#[derive(Debug, clap::Args)]
pub(crate) struct ShellArgs {
    /// Where the server is.
    #[command(flatten)]
    pub(crate) server: ServerAddress,

    /// How long to wait for each reply (seconds, or 500ms, 10s, 1m...).
    #[arg(long, env = "THREADCENTER_TIMEOUT", default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) timeout: Duration,
}

/// Benchmark flags (no subcommand).
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// TLS to the server (with --embedded: the embedded server serves TLS
    /// with a throwaway certificate made for the run).
    #[command(flatten)]
    pub(crate) tls: TlsArgs,

    /// Server host (not with --embedded).
    #[arg(long, env = "THREADCENTER_HOST", conflicts_with = "embedded")]
    pub(crate) host: Option<String>,

    /// Server port (not with --embedded).
    #[arg(long, env = "THREADCENTER_PORT", conflicts_with = "embedded", value_parser = parse_whole_number::<u16>, allow_negative_numbers = true)]
    pub(crate) port: Option<u16>,

    /// Start a real tc-server on a free loopback port for this run, and stop
    /// it afterwards.
    #[arg(long, short = 'e')]
    pub(crate) embedded: bool,

    /// Pool mode of the embedded server [default: processes].
    #[arg(long, env = "THREADCENTER_MODE", value_enum, requires = "embedded")]
    pub(crate) mode: Option<Mode>,

    /// Workers of the embedded server [default: number of CPUs].
    #[arg(long, env = "THREADCENTER_WORKERS", requires = "embedded", value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) workers: Option<usize>,

    /// Serve the embedded farm's live dashboard (and /metrics) while the run
    /// goes, at ADDR [default: 127.0.0.1 on a free port]; its address is
    /// printed at start. Open it in a browser to watch the workers.
    #[arg(long, requires = "embedded", num_args = 0..=1, default_missing_value = "127.0.0.1:0",
          value_parser = crate::cli::metrics::parse_socket_address)]
    pub(crate) dashboard: Option<std::net::SocketAddr>,

    /// Embedded server in thread mode with a CPython-style GIL.
    #[arg(long, requires = "embedded")]
    pub(crate) gil: bool,

    /// With --gil: the GIL's switch interval.
    #[arg(long, default_value = "5ms", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) switch_interval: Duration,

    /// Connections, each with its own threads.
    #[arg(long, short = 'c', env = "THREADCENTER_CONCURRENCY", default_value_t = 4, value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) concurrency: usize,

    /// Stop after this many measured requests per connection.
    #[arg(long, short = 'n', conflicts_with = "duration", value_parser = parse_whole_number::<u64>, allow_negative_numbers = true)]
    pub(crate) requests: Option<u64>,

    /// Stop after this long (seconds, or 500ms, 30s, 1m...) [default: 10s
    /// when --requests is not given].
    #[arg(long, short = 'd', value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) duration: Option<Duration>,

    /// Send but leave out of every statistic: a time (2s, or plain seconds)
    /// or requests per connection (100r) [default: 0.5s with --embedded,
    /// none otherwise; 0 turns it off].
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) warmup: Option<String>,

    /// Open loop: send this many requests per second (all connections
    /// together) on a fixed schedule; latency counts from the scheduled time.
    #[arg(long, short = 'r', conflicts_with = "pipeline", allow_negative_numbers = true)]
    pub(crate) rate: Option<f64>,

    /// Closed loop: requests in flight per connection [default: 1].
    #[arg(long, short = 'p', value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) pipeline: Option<usize>,

    /// Command to send: compute, ping, stats, health, predict, predict_batch,
    /// or lock-cycle (each connection acquires the mutex, predicts, releases).
    #[arg(long, default_value = "compute", conflicts_with = "mix")]
    pub(crate) cmd: String,

    /// Images for predict, predict_batch and lock-cycle: every png/jpg/bmp/gif
    /// file in DIR, sent in turn [default: the shipped samples, models/samples].
    #[arg(long, value_name = "DIR")]
    pub(crate) images: Option<PathBuf>,

    /// Images per predict_batch request.
    #[arg(long, default_value_t = 8, value_parser = parse_whole_number::<usize>, allow_negative_numbers = true)]
    pub(crate) batch: usize,

    /// Weighted mix of commands instead of --cmd, e.g. compute:80,ping:20.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) mix: Option<String>,

    /// `n` of compute requests.
    #[arg(long, short = 's', default_value_t = 500_000, value_parser = parse_whole_number::<u64>, allow_negative_numbers = true)]
    pub(crate) size: u64,

    /// A request without a reply after this long counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) timeout: Duration,

    /// Check every compute result against a local computation.
    #[arg(long)]
    pub(crate) verify: bool,

    /// Percentiles in the summary and JSON report (max = 100).
    #[arg(long, default_value = "50,90,99,99.9,99.99,max", allow_hyphen_values = true)]
    pub(crate) percentiles: String,

    /// Append one summary row per run to this CSV file (header when new).
    #[arg(long)]
    pub(crate) csv: Option<PathBuf>,

    /// Write one row per request to this CSV file, as the run goes.
    #[arg(long)]
    pub(crate) requests_csv: Option<PathBuf>,

    /// Write the latency percentile distribution (HdrHistogram .hgrm text).
    #[arg(long)]
    pub(crate) hgrm: Option<PathBuf>,

    /// Write an HdrHistogram interval log (one histogram per interval).
    #[arg(long)]
    pub(crate) hdr_log: Option<PathBuf>,

    /// Interval of --hdr-log.
    #[arg(long, default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub(crate) hdr_log_interval: Duration,

    /// Write the whole result as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,

    /// Shared secret of a server started with --auth-token (with
    /// --embedded, the embedded server requires it too).
    #[arg(long, env = "THREADCENTER_AUTH_TOKEN", hide_env_values = true)]
    pub(crate) auth_token: Option<String>,

    /// Log level of the embedded server (error, warn, info, debug, trace).
    #[arg(long, env = "THREADCENTER_LOG_LEVEL", default_value = "warn")]
    pub(crate) log_level: String,

    /// The embedded server's log lines: human-readable text, or JSON.
    #[arg(long, env = "THREADCENTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

impl BenchArgs {
    /// Whether `--cmd lock-cycle` was asked for.
    pub(crate) fn is_lock_cycle(&self) -> bool {
        self.mix.is_none() && self.cmd == "lock-cycle"
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
