//! A benchmark's plan, validated: what to send, how fast, for how long.
//!
//! The CLI ([`crate::cli::client`]) only collects flags;
//! [`BenchOptions::from_args`] turns them into the checked, typed form every
//! other part of the client works from, so an impossible combination is
//! refused here, before anything starts, with an [`OptionsError`] that names
//! the flag.

use std::path::PathBuf;
use std::time::Duration;

use super::mix::{CommandMix, ImagePayloads};
use super::stages::{RateArg, Stages};
use super::thresholds::Threshold;
use crate::cli::client::{BenchArgs, DEFAULT_DURATION};
use crate::protocol::{Mode, MAX_BATCH_IMAGES};

/// A benchmark flag out of range, or flags that do not go together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct OptionsError {
    /// The flag at fault, e.g. `--rate`.
    pub(crate) flag: &'static str,
    /// A sentence that names the flag and says what would be accepted.
    pub(crate) message: String,
}

impl From<OptionsError> for crate::error::Error {
    fn from(error: OptionsError) -> Self {
        crate::error::Error::Options { flag: error.flag, message: error.message }
    }
}

impl OptionsError {
    /// An error about `flag`; `message` is the whole sentence.
    pub(crate) fn new(flag: &'static str, message: impl Into<String>) -> Self {
        OptionsError { flag, message: message.into() }
    }

    /// An error about `flag` from a parser's message: `--flag: message`.
    pub(crate) fn about(flag: &'static str, message: impl std::fmt::Display) -> Self {
        OptionsError { flag, message: format!("{flag}: {message}") }
    }
}

/// How requests are paced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pacing {
    /// Each connection keeps `pipeline` requests in flight and sends the next
    /// one when a reply arrives (1 = one at a time, like the original client).
    Closed {
        /// Requests in flight per connection.
        pipeline: usize,
    },
    /// Requests are sent on a fixed schedule, `rate` per second over all
    /// connections, whether or not replies have come (as wrk2 does).
    Open {
        /// Requests per second, all connections together.
        rate: f64,
    },
    /// An open loop whose rate follows a profile (`--stages`, or `--rate
    /// FROM..TO`), on the same connections all along.
    Staged(super::stages::Stages),
}

/// When the measured part of the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopAfter {
    /// After this many measured requests per connection.
    Requests(u64),
    /// After this long (measured part only).
    Duration(Duration),
}

/// What is sent first and left out of every statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Warmup {
    /// No warm-up.
    None,
    /// Requests scheduled during this first stretch of time.
    Duration(Duration),
    /// This many requests per connection.
    Requests(u64),
}

/// Where the target server comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Target {
    /// An already running server.
    Remote {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A server started inside this process on a free loopback port, and
    /// stopped after the run.
    Embedded {
        /// Its pool mode.
        mode: Mode,
        /// Its worker count.
        workers: usize,
        /// Thread mode with a CPython-style GIL (its switch interval).
        gil: Option<Duration>,
    },
}

/// Report files to write. Each is created before the run starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OutputPaths {
    /// Summary row appended per run.
    pub(crate) csv: Option<PathBuf>,
    /// One row per request, streamed.
    pub(crate) requests_csv: Option<PathBuf>,
    /// Percentile distribution in HdrHistogram's text format.
    pub(crate) hgrm: Option<PathBuf>,
    /// HdrHistogram interval log.
    pub(crate) hdr_log: Option<PathBuf>,
    /// The whole result as JSON.
    pub(crate) json: Option<PathBuf>,
}

/// A complete, validated benchmark plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BenchOptions {
    /// Which server.
    pub(crate) target: Target,
    /// Connections, each driven by its own threads.
    pub(crate) concurrency: usize,
    /// Pacing.
    pub(crate) pacing: Pacing,
    /// End of the measured part.
    pub(crate) stop: StopAfter,
    /// Warm-up before it.
    pub(crate) warmup: Warmup,
    /// Which commands, in which proportions.
    pub(crate) mix: CommandMix,
    /// `n` of compute requests.
    pub(crate) size: u64,
    /// A request without a reply after this long counts as a timeout.
    pub(crate) timeout: Duration,
    /// Check compute results against a local computation.
    pub(crate) verify: bool,
    /// Percentiles shown in the summary and the JSON report (0 < p ≤ 100).
    pub(crate) percentiles: Vec<f64>,
    /// Length of one interval of the interval log.
    pub(crate) log_interval: Duration,
    /// Report files.
    pub(crate) outputs: OutputPaths,
    /// Show a progress bar (only honoured when stderr is a terminal).
    pub(crate) progress: bool,
    /// Token to present on every connection (`--auth-token`).
    pub(crate) auth_token: Option<String>,
    /// TLS to a remote server (`--tls` and its flags).
    pub(crate) tls: Option<crate::client::tls::ClientTls>,
    /// `--tls --embedded`: the embedded server serves TLS with a throwaway
    /// certificate, which the run's connections trust.
    pub(crate) embedded_tls: bool,
    /// `--dashboard`: where the embedded server serves its dashboard.
    pub(crate) dashboard: Option<std::net::SocketAddr>,
    /// Images for `predict` and `predict_batch` (`--images`, `--batch`).
    pub(crate) images: ImagePayloads,
    /// `--threshold`: checked when the run is over.
    pub(crate) thresholds: Vec<Threshold>,
}

/// The pacing the flags ask for: `--stages`, `--rate` (constant or a ramp
/// over `stop`'s duration) or a closed loop; the stages set `stop` (their
/// sum is the run's length).
fn pacing_of(args: &BenchArgs, stop: &mut StopAfter) -> Result<Pacing, OptionsError> {
    let stages = args
        .stages
        .as_deref()
        .map(|text| {
            Stages::parse_steps(text)
                .map_err(|e| OptionsError::new("--stages", format!("--stages {text:?}: {e}")))
        })
        .transpose()?;
    let rate = args
        .rate
        .as_deref()
        .map(|text| {
            RateArg::parse(text).map_err(|e| OptionsError::new("--rate", format!("--rate {text:?}: {e}")))
        })
        .transpose()?;
    Ok(match (&stages, rate) {
        (Some(stages), _) => {
            // The stages say how long the run is.
            *stop = StopAfter::Duration(stages.total());
            Pacing::Staged(stages.clone())
        }
        (None, Some(RateArg::Constant(rate))) => Pacing::Open { rate },
        (None, Some(RateArg::Ramp(from, to))) => {
            let StopAfter::Duration(over) = *stop else {
                return Err(OptionsError::new(
                    "--rate",
                    "a ramp (--rate FROM..TO) runs over --duration, not --requests".to_string(),
                ));
            };
            let text = format!("{from}..{to} over {}", humantime::format_duration(over));
            Pacing::Staged(Stages::ramp(from, to, over, &text).map_err(|e| OptionsError::new("--rate", e))?)
        }
        (None, None) => Pacing::Closed { pipeline: args.pipeline.unwrap_or(1) },
    })
}

/// Each `--threshold`, parsed; the error names the one at fault.
fn thresholds_of(args: &BenchArgs) -> Result<Vec<Threshold>, OptionsError> {
    args.thresholds
        .iter()
        .map(|text| {
            Threshold::parse(text)
                .map_err(|e| OptionsError::new("--threshold", format!("--threshold {text:?}: {e}")))
        })
        .collect()
}

/// The most requests per second `--rate` may ask for (defined with the
/// rate profiles, which share it).
pub(crate) use super::stages::MAX_RATE;

/// Memory one request in flight takes in the client at least (its record
/// in the connection's window): the unit `--pipeline` is checked in.
const IN_FLIGHT_RECORD_MEMORY: u64 = 256;

/// Warm-up of an `--embedded` run when `--warmup` is not given.
pub(crate) const DEFAULT_EMBEDDED_WARMUP: Duration = Duration::from_millis(500);

/// A connection sending less often than this is a configuration mistake,
/// not a load test.
pub(crate) const SLOWEST_CONNECTION_INTERVAL: Duration = Duration::from_secs(60);

impl BenchOptions {
    /// The validated plan `args` describe.
    ///
    /// # Errors
    /// An [`OptionsError`] naming the offending flag.
    pub(crate) fn from_args(args: &BenchArgs) -> Result<BenchOptions, OptionsError> {
        if args.stages.is_some() && args.duration.is_some() {
            return Err(OptionsError::new(
                "--duration",
                "--stages sets the run's length (the sum of its stages, after the warm-up); drop --duration"
                    .to_string(),
            ));
        }
        if args.is_lock_cycle() && !args.thresholds.is_empty() {
            return Err(OptionsError::new(
                "--threshold",
                "--threshold checks a benchmark's latency and counts; --cmd lock-cycle reports mutex \
                 cycles instead, and has no thresholds"
                    .to_string(),
            ));
        }
        let target = if args.embedded {
            Target::Embedded {
                mode: args.mode.unwrap_or(Mode::Processes),
                workers: args.workers.unwrap_or_else(crate::work::default_workers),
                gil: args.gil.then_some(args.switch_interval),
            }
        } else {
            Target::Remote {
                host: args.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
                port: args.port.unwrap_or(5050),
            }
        };
        let mut stop = match (args.requests, args.duration) {
            (Some(n), _) => StopAfter::Requests(n),
            (None, Some(d)) => StopAfter::Duration(d),
            (None, None) => StopAfter::Duration(DEFAULT_DURATION),
        };
        let load = pacing_of(args, &mut stop)?;
        let lock_cycle = args.is_lock_cycle();
        // lock-cycle is its own loop (see bench::lock_cycle); its requests are predictions.
        let mix_text = if lock_cycle { "predict" } else { args.mix.as_deref().unwrap_or(&args.cmd) };
        let flag = if args.mix.is_some() { "--mix" } else { "--cmd" };
        let mix = CommandMix::parse(mix_text).map_err(|e| OptionsError::about(flag, e))?;
        let images = if mix.includes_images() {
            let dir = args
                .images
                .clone()
                .unwrap_or_else(|| crate::work::model::default_models_dir().join("samples"));
            ImagePayloads::load(&dir, args.batch).map_err(|e| OptionsError::new("--images", e))?
        } else {
            ImagePayloads::default()
        };
        let options = BenchOptions {
            target,
            concurrency: args.concurrency,
            pacing: load,
            stop,
            warmup: match &args.warmup {
                Some(text) => parse_warmup(text).map_err(|e| OptionsError::about("--warmup", e))?,
                // A farm started for the run is cold (workers starting,
                // caches empty): leave its first moments out by default.
                None if args.embedded => Warmup::Duration(DEFAULT_EMBEDDED_WARMUP),
                None => Warmup::None,
            },
            mix,
            size: args.size,
            timeout: args.timeout,
            verify: args.verify,
            percentiles: parse_percentiles(&args.percentiles)
                .map_err(|e| OptionsError::about("--percentiles", e))?,
            log_interval: args.hdr_log_interval,
            outputs: OutputPaths {
                csv: args.csv.clone(),
                requests_csv: args.requests_csv.clone(),
                hgrm: args.hgrm.clone(),
                hdr_log: args.hdr_log.clone(),
                json: args.json.clone(),
            },
            progress: true,
            auth_token: args.auth_token.clone(),
            tls: if args.embedded {
                None
            } else {
                crate::client::tls::ClientTls::from_args(&args.tls)
                    .map_err(|e| OptionsError::new("--tls", e.to_string()))?
            },
            embedded_tls: args.embedded && args.tls.tls,
            dashboard: args.dashboard,
            images,
            thresholds: thresholds_of(args)?,
        };
        options.validate()?;
        Ok(options)
    }

    /// Checks the plan as a whole.
    ///
    /// # Errors
    /// An [`OptionsError`] naming the flag that is out of range or the flags
    /// that do not go together.
    pub(crate) fn validate(&self) -> Result<(), OptionsError> {
        let machine = crate::machine::Machine::read();
        self.check_connections(&machine)?;
        self.check_pacing(&machine)?;
        self.check_length_and_reports()?;
        self.check_workload()
    }

    /// --concurrency: in range, and the threads it needs on this machine.
    fn check_connections(&self, machine: &crate::machine::Machine) -> Result<(), OptionsError> {
        let fail = |flag, message: String| Err(OptionsError::new(flag, message));
        if self.concurrency == 0 || self.concurrency > super::MAX_CONNECTIONS {
            return fail(
                "--concurrency",
                format!(
                    "--concurrency must be from 1 to {}, not {}",
                    super::MAX_CONNECTIONS,
                    self.concurrency
                ),
            );
        }
        // Each connection is two threads here (sender and receiver) and a
        // socket; each request in flight a record in its window.
        if let Err(refused) = machine.check_threads("--concurrency", self.concurrency as u64, 2) {
            return fail("--concurrency", refused);
        }
        Ok(())
    }

    /// --pipeline's memory (closed loop) or --rate's sense (open loop).
    fn check_pacing(&self, machine: &crate::machine::Machine) -> Result<(), OptionsError> {
        let fail = |flag, message: String| Err(OptionsError::new(flag, message));
        match self.pacing {
            Pacing::Closed { pipeline: 0 } => {
                return fail("--pipeline", "--pipeline must be at least 1".into())
            }
            Pacing::Closed { pipeline } => {
                let each = self.concurrency as u64 * IN_FLIGHT_RECORD_MEMORY;
                let what = format!(
                    "a pipeline slot is one request in flight on each of the {} connections (-c), {} each",
                    self.concurrency,
                    crate::machine::bytes(IN_FLIGHT_RECORD_MEMORY)
                );
                let what = what.as_str();
                if let Err(refused) = machine.check_memory("--pipeline", pipeline as u64, each, what) {
                    return fail("--pipeline", refused);
                }
            }
            Pacing::Staged(ref stages) => {
                if let Warmup::Requests(_) = self.warmup {
                    return fail(
                        "--warmup",
                        "a counted warm-up (100r) does not go with a rate profile: give it as a time (2s), \
                         sent at the first stage's rate"
                            .into(),
                    );
                }
                if let StopAfter::Duration(d) = self.stop {
                    if stages.peak() * d.as_secs_f64() < self.concurrency as f64 {
                        return fail(
                            "--stages",
                            format!(
                                "the profile {stages} sends fewer requests than there are connections ({}); \
                                 raise its rates or lower --concurrency",
                                self.concurrency
                            ),
                        );
                    }
                }
            }
            Pacing::Open { rate } => {
                if !rate.is_finite() || rate <= 0.0 || rate > MAX_RATE {
                    return fail(
                        "--rate",
                        format!(
                            "--rate must be a positive number of requests per second up to {MAX_RATE:e} \
                             (far past what one client sends), not {rate}"
                        ),
                    );
                }
                let per_connection =
                    Duration::try_from_secs_f64(self.concurrency as f64 / rate).unwrap_or(Duration::MAX);
                if per_connection > SLOWEST_CONNECTION_INTERVAL {
                    return fail(
                        "--rate",
                        format!(
                            "--rate {rate} is too low for {} connections: each would send once every {:.0} s; \
                             raise --rate to at least {:.3} or lower --concurrency",
                            self.concurrency,
                            per_connection.as_secs_f64(),
                            self.concurrency as f64 / SLOWEST_CONNECTION_INTERVAL.as_secs_f64()
                        ),
                    );
                }
                if let StopAfter::Duration(d) = self.stop {
                    if rate * d.as_secs_f64() < self.concurrency as f64 {
                        return fail(
                            "--rate",
                            format!(
                                "--rate {rate} for {d:?} sends fewer requests than there are connections ({}); \
                                 raise --rate or --duration, or lower --concurrency",
                                self.concurrency
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// How long the run lasts, its timeout, and what its reports record.
    fn check_length_and_reports(&self) -> Result<(), OptionsError> {
        let fail = |flag, message: String| Err(OptionsError::new(flag, message));
        match self.stop {
            StopAfter::Requests(0) => return fail("--requests", "--requests must be at least 1".into()),
            StopAfter::Duration(d) if d.is_zero() => {
                return fail("--duration", "--duration must be longer than 0".into())
            }
            _ => {}
        }
        if self.timeout.is_zero() {
            return fail("--timeout", "--timeout must be longer than 0".into());
        }
        if self.log_interval < Duration::from_millis(10) {
            return fail("--hdr-log-interval", "--hdr-log-interval must be at least 10ms".into());
        }
        if self.percentiles.is_empty() {
            return fail("--percentiles", "--percentiles needs at least one value".into());
        }
        if let Some(p) = self.percentiles.iter().find(|p| !(**p > 0.0 && **p <= 100.0)) {
            return fail(
                "--percentiles",
                format!("--percentiles values must be above 0 and at most 100 (max), not {p}"),
            );
        }
        Ok(())
    }

    /// What is sent (images, --verify) and, embedded, the farm it runs on.
    fn check_workload(&self) -> Result<(), OptionsError> {
        let fail = |flag, message: String| Err(OptionsError::new(flag, message));
        if self.mix.includes_images() && self.images.is_empty() {
            return fail("--images", "predictions need images: --images DIR".into());
        }
        if self.mix.includes_images() && !(1..=MAX_BATCH_IMAGES).contains(&self.images.batch) {
            return fail("--batch", format!("--batch must be from 1 to {MAX_BATCH_IMAGES}"));
        }
        if self.verify && !self.mix.includes_compute() {
            return fail(
                "--verify",
                "--verify checks compute results, but this run sends no compute request".into(),
            );
        }
        if let Target::Embedded { workers: 0, .. } = self.target {
            return fail("--workers", "--workers must be at least 1".into());
        }
        if let Target::Embedded { mode: Mode::Processes, gil: Some(_), .. } = self.target {
            return fail("--gil", "--gil applies to --mode threads".into());
        }
        Ok(())
    }

    /// A small, valid plan for unit tests: 4 connections × 5 compute
    /// requests against 127.0.0.1:5050, closed loop.
    #[cfg(test)]
    pub(crate) fn example() -> Self {
        BenchOptions {
            target: Target::Remote { host: "127.0.0.1".into(), port: 5050 },
            concurrency: 4,
            pacing: Pacing::Closed { pipeline: 1 },
            stop: StopAfter::Requests(5),
            warmup: Warmup::None,
            mix: CommandMix::parse("compute").expect("a valid mix"),
            size: 500_000,
            timeout: Duration::from_secs(10),
            verify: false,
            percentiles: vec![50.0, 99.0, 100.0],
            log_interval: Duration::from_secs(1),
            outputs: OutputPaths::default(),
            progress: false,
            auth_token: None,
            tls: None,
            embedded_tls: false,
            dashboard: None,
            images: ImagePayloads::default(),
            thresholds: Vec::new(),
        }
    }

    /// How long a timed warm-up lasts (zero for none or a counted one): the
    /// run's intervals start after it.
    pub(crate) fn timed_warmup(&self) -> Duration {
        match self.warmup {
            Warmup::Duration(d) => d,
            Warmup::None | Warmup::Requests(_) => Duration::ZERO,
        }
    }

    /// Requests each connection sends during warm-up, when counted.
    pub(crate) fn warmup_requests(&self) -> u64 {
        match self.warmup {
            Warmup::Requests(n) => n,
            _ => 0,
        }
    }
}

/// Parses `--warmup`: a duration (`2s`, `500ms`, or plain seconds `2`) or a
/// request count per connection with an `r`/`req`/`requests` suffix (`100r`).
///
/// # Errors
/// A message naming both accepted forms.
pub(crate) fn parse_warmup(text: &str) -> Result<Warmup, String> {
    let trimmed = text.trim();
    for suffix in ["requests", "request", "req", "r"] {
        if let Some(count) = trimmed.strip_suffix(suffix) {
            return count
                .trim()
                .parse::<u64>()
                .map(|n| if n == 0 { Warmup::None } else { Warmup::Requests(n) })
                .map_err(|_| warmup_error(text));
        }
    }
    let duration = crate::units::parse_duration(trimmed).map_err(|_| warmup_error(text))?;
    Ok(if duration.is_zero() { Warmup::None } else { Warmup::Duration(duration) })
}

fn warmup_error(text: &str) -> String {
    if text.trim().strip_prefix('-').is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())) {
        return format!(
            "{text:?} must not be negative; give a time (2s, 500ms) or requests per connection (100r)"
        );
    }
    format!("{text:?} is not a warm-up; use a time (2s, 500ms, or plain seconds) or requests per connection (100r)")
}

/// Parses `--percentiles`: a comma-separated list such as `50,90,99,99.9,max`
/// (`max` is 100).
///
/// # Errors
/// A message naming the bad item.
pub(crate) fn parse_percentiles(text: &str) -> Result<Vec<f64>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            if item.eq_ignore_ascii_case("max") {
                Ok(100.0)
            } else {
                item.parse::<f64>().map_err(|_| format!("{item:?} is not a percentile (e.g. 99.9 or max)"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::ClientArgs;
    use clap::Parser;

    fn plan() -> BenchOptions {
        BenchOptions::example()
    }

    #[test]
    fn a_sensible_plan_is_accepted() {
        assert_eq!(plan().validate(), Ok(()));
    }

    #[test]
    fn impossible_plans_are_refused_naming_the_flag() {
        type Change = Box<dyn Fn(&mut BenchOptions)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|o| o.concurrency = 0), "--concurrency"),
            (Box::new(|o| o.pacing = Pacing::Closed { pipeline: 0 }), "--pipeline"),
            (Box::new(|o| o.pacing = Pacing::Open { rate: 0.0 }), "--rate"),
            (Box::new(|o| o.pacing = Pacing::Open { rate: -5.0 }), "--rate"),
            (Box::new(|o| o.pacing = Pacing::Open { rate: f64::NAN }), "--rate"),
            (Box::new(|o| o.pacing = Pacing::Open { rate: 0.01 }), "too low for 4 connections"),
            (
                Box::new(|o| {
                    o.pacing = Pacing::Open { rate: 2.0 };
                    o.stop = StopAfter::Duration(Duration::from_secs(1));
                }),
                "fewer requests than there are connections",
            ),
            (Box::new(|o| o.stop = StopAfter::Requests(0)), "--requests"),
            (Box::new(|o| o.stop = StopAfter::Duration(Duration::ZERO)), "--duration"),
            (Box::new(|o| o.timeout = Duration::ZERO), "--timeout"),
            (Box::new(|o| o.percentiles = vec![0.0]), "--percentiles"),
            (Box::new(|o| o.percentiles = vec![100.5]), "--percentiles"),
            (Box::new(|o| o.percentiles.clear()), "--percentiles"),
            (
                Box::new(|o| {
                    o.verify = true;
                    o.mix = CommandMix::parse("ping").unwrap();
                }),
                "--verify",
            ),
        ];
        for (change, expected) in cases {
            let mut options = plan();
            change(&mut options);
            let error = options.validate().expect_err(expected).to_string();
            assert!(error.contains(expected), "{error:?} should mention {expected:?}");
        }
    }

    #[test]
    fn warmup_takes_a_time_or_a_request_count() {
        assert_eq!(parse_warmup("2s"), Ok(Warmup::Duration(Duration::from_secs(2))));
        assert_eq!(parse_warmup("0.5"), Ok(Warmup::Duration(Duration::from_millis(500))));
        assert_eq!(parse_warmup("100r"), Ok(Warmup::Requests(100)));
        assert_eq!(parse_warmup("100 requests"), Ok(Warmup::Requests(100)));
        assert_eq!(parse_warmup("0"), Ok(Warmup::None));
        assert!(parse_warmup("lots").is_err());
        assert!(parse_warmup("-3r").is_err());
    }

    #[test]
    fn percentiles_parse_with_max_as_100() {
        assert_eq!(parse_percentiles("50, 99.9,max"), Ok(vec![50.0, 99.9, 100.0]));
        assert!(parse_percentiles("50,high").is_err());
    }

    // From the flags: what `tc-client` makes of its command line.

    fn options(args: &[&str]) -> Result<BenchOptions, String> {
        let mut full = vec!["tc-client"];
        full.extend_from_slice(args);
        let parsed = ClientArgs::try_parse_from(full).map_err(|e| e.to_string())?;
        BenchOptions::from_args(&parsed.bench).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_a_ten_second_closed_loop_compute_run() {
        let o = options(&["--embedded"]).unwrap();
        assert_eq!(o.concurrency, 4);
        assert_eq!(o.size, 500_000);
        assert_eq!(o.pacing, Pacing::Closed { pipeline: 1 });
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
