//! The worker pool's flags, shared by `tc-server` and `tc-worker` (both
//! run the same pool, so they take the same flags, with the same words).

use std::path::PathBuf;
use std::time::Duration;

use crate::units::{parse_duration, parse_whole_number};

/// How workers are run and supervised.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PoolArgs {
    /// How long a worker process may take to start and connect back
    /// (seconds, or 500ms, 10s, 1m...).
    #[arg(help_heading = "Workers", long, env = "THREADCENTER_SPAWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) spawn_timeout: Duration,

    /// How long one job may run. Past it the client gets TIMEOUT and the
    /// worker is replaced (a process is killed; a thread is written off).
    #[arg(help_heading = "Reliability", long, env = "THREADCENTER_JOB_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub(crate) job_timeout: Duration,

    /// Worker replacements allowed per --restart-window, all workers
    /// together; past it replacements wait (and health says so).
    #[arg(help_heading = "Reliability", long, env = "THREADCENTER_MAX_RESTARTS", default_value_t = 10, value_parser = parse_whole_number::<u32>, allow_negative_numbers = true)]
    pub(crate) max_restarts: u32,

    /// The window of --max-restarts.
    #[arg(help_heading = "Reliability", long, env = "THREADCENTER_RESTART_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub(crate) restart_window: Duration,

    /// Thread mode: give the worker threads a CPython-style global
    /// interpreter lock, so CPU-bound threads take turns like Python threads.
    #[arg(help_heading = "Workers", long, env = "THREADCENTER_GIL")]
    pub(crate) gil: bool,

    /// With --gil: how long a waiting thread lets the holder run before
    /// asking for the lock (CPython's sys.setswitchinterval, default 5 ms).
    #[arg(help_heading = "Workers", long, env = "THREADCENTER_SWITCH_INTERVAL", default_value = "5ms", value_parser = parse_duration)]
    pub(crate) switch_interval: Duration,

    /// Run ONNX models on onnxruntime, loaded from this libonnxruntime.so
    /// (the pip wheel's is in onnxruntime/capi/). Without it, --engine auto
    /// looks in ORT_DYLIB_PATH, then in python3's onnxruntime package.
    #[arg(help_heading = "Predictions", long, env = "THREADCENTER_ONNXRUNTIME", value_name = "LIBRARY")]
    pub(crate) onnxruntime: Option<PathBuf>,

    /// The engine for ONNX models: auto (onnxruntime when one is found,
    /// else tract), onnxruntime (refuse to start without one), or tract
    /// (the pure-Rust engine). model, stats and the log say which runs, and why.
    #[arg(help_heading = "Predictions", long, env = "THREADCENTER_ENGINE", value_enum, default_value_t)]
    pub(crate) engine: crate::work::model::EngineChoice,
}

impl PoolArgs {
    /// `--gil` with its switch interval, or `None`.
    pub(crate) fn gil_switch_interval(&self) -> Option<Duration> {
        self.gil.then_some(self.switch_interval)
    }

    /// Chooses the ONNX engine for this process (and its worker
    /// processes): an explicit library is loaded now, so a bad one fails
    /// at start-up.
    pub(crate) fn load_onnxruntime(&self) -> anyhow::Result<()> {
        // The error itself, not its text: its kind is the exit code.
        crate::work::model::choose_engine(self.engine, self.onnxruntime.as_deref())
            .map_err(anyhow::Error::from)
    }
}
