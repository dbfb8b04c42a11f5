//! The flags of `tc-client`'s subcommands (call, shell, predict, kernel,
//! model, sweep, plot) and of reaching a running server.

use std::path::PathBuf;
use std::time::Duration;

use crate::units::{parse_duration, parse_whole_number};

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

    /// A full-screen view of each run while the sweep goes (as
    /// `tc-client --live`), with the runs finished so far; q or Ctrl-C
    /// stops the sweep (a resumed sweep runs the cut run again). Only on a
    /// terminal: otherwise a line per run, as without it.
    #[arg(long)]
    pub(crate) live: bool,

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

    /// The engine: auto (onnxruntime when one is found: --onnxruntime,
    /// ORT_DYLIB_PATH, python3's onnxruntime package; else tract),
    /// onnxruntime, or tract.
    #[arg(long, env = "THREADCENTER_ENGINE", value_enum, default_value_t)]
    pub(crate) engine: crate::work::model::EngineChoice,

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

/// Flags of `tc-client compare`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// `--json` reports of runs; the first is the baseline.
    #[arg(required = true, num_args = 2.., value_name = "RUN.json")]
    pub(crate) runs: Vec<PathBuf>,

    /// Exit with 99 when a run's throughput is lower than the baseline's by
    /// more than PCT percent, and significantly so (Welch's t-test) — for CI.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub(crate) fail_if_slower: Option<f64>,

    /// Compare runs whose workloads differ (command, size, connections,
    /// pacing); refused otherwise.
    #[arg(long)]
    pub(crate) allow_different_workloads: bool,
}

/// A percentage from 0 to 100 (`5`, `2.5`, `5%`).
fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix('%').unwrap_or(text);
    number
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("a percentage from 0 to 100 (5, 2.5 or 5%), not {text:?}"))
}

/// Flags of `tc-client merge`.
#[derive(Debug, clap::Args)]
pub(crate) struct MergeArgs {
    /// Interval logs (`--hdr-log`) of runs against one farm, e.g. one per
    /// client process or machine.
    #[arg(required = true, num_args = 1.., value_name = "RUN.hlog")]
    pub(crate) logs: Vec<PathBuf>,

    /// Write the merged result as JSON.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,

    /// Write the merged interval log (one histogram per interval, every
    /// log's replies in it).
    #[arg(long, value_name = "FILE")]
    pub(crate) hdr_log: Option<PathBuf>,
}
