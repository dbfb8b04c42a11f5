//! The benchmark's flags: `tc-client` with no subcommand.

use std::path::PathBuf;
use std::time::Duration;

use super::super::LogFormat;
use super::TlsArgs;
use crate::protocol::Mode;
use crate::units::{parse_duration, parse_whole_number};

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

    /// A full-screen view of the run while it goes: throughput per second,
    /// p50/p90/p99 of the last second and of the whole run, the latency
    /// histogram, errors by code, the server's workers and queue. q or
    /// Ctrl-C stops (every report is still written). Only on a terminal:
    /// otherwise the progress line.
    #[arg(long)]
    pub(crate) live: bool,

    /// Serve this client's own metrics while the run goes, at
    /// http://ADDR/metrics (Prometheus/OpenMetrics: requests sent, ok
    /// replies, errors by code, timeouts, latency, target rate); printed at
    /// start. After the run it stays up for one more scrape, or
    /// --metrics-linger.
    #[arg(long, value_name = "ADDR", value_parser = crate::cli::metrics::parse_socket_address)]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,

    /// How long --metrics-addr waits after the run for its final scrape.
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true, requires = "metrics_addr")]
    pub(crate) metrics_linger: Duration,

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
    /// FROM..TO (100..1200) ramps the rate straight from FROM to TO over
    /// --duration.
    #[arg(long, short = 'r', conflicts_with = "pipeline", allow_hyphen_values = true)]
    pub(crate) rate: Option<String>,

    /// Open loop in steps on the same connections: LENGTH@RATE,... e.g.
    /// 10s@200,30s@1000,10s@0 (10 s at 200 requests/s, 30 s at 1000, 10 s
    /// idle); the run lasts their sum, after the warm-up (sent at the first
    /// rate). Each interval of the reports records the target rate.
    #[arg(long, value_name = "STAGES", conflicts_with_all = ["rate", "pipeline", "requests"])]
    pub(crate) stages: Option<String>,

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

    /// A pass/fail criterion, checked when the run is over; repeatable.
    /// METRIC OP VALUE: p99<20ms, p(99.9)<=50ms, send.p99<5ms (latency from
    /// send; from schedule by default), mean, min, max; throughput>=900;
    /// errors==0, errors.BUSY<1%, timeouts<1% (a count, or a share of the
    /// requests sent). One crossed: the summary marks it ✗ and tc-client
    /// exits with 99.
    #[arg(long = "threshold", value_name = "EXPR", allow_hyphen_values = true)]
    pub(crate) thresholds: Vec<String>,

    /// Stop the run at the first --threshold crossed by what was measured
    /// so far, checked after each --hdr-log-interval: latency (from
    /// schedule and send.*), errors, errors.CODE and timeouts (throughput is
    /// judged at the end only). The report is written, marked aborted; exit 99.
    #[arg(long, requires = "thresholds")]
    pub(crate) abort_on_fail: bool,

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
