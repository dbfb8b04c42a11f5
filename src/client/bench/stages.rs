//! Load that changes within one run: `--stages 10s@200,30s@1000,10s@0`
//! (steps: 10 s at 200 requests/s, then 30 s at 1,000, then 10 s of
//! silence) or `--rate 100..1200` (a straight ramp over `--duration`), as
//! k6's ramping-arrival-rate and ghz's `--load-schedule` do — on the same
//! connections all the way, so no new handshakes or idle gaps come between
//! the rates (what separate runs per rate cannot avoid).
//!
//! The open-loop schedule follows the profile exactly: request k (counted
//! over all connections) is due when the expected number of requests, the
//! integral of the rate from the start, reaches k; connection i sends
//! requests i, i + c, i + 2c... as with a constant rate. Latency still
//! counts from each request's due time.

use std::fmt;
use std::time::Duration;

/// The most requests per second `--rate` or a stage may ask for: one
/// client sends at most a few hundred thousand per core, so a larger number
/// is a typing mistake, and it would make every scheduled interval zero.
pub(crate) const MAX_RATE: f64 = 1e8;

/// The most stages one run may have.
pub(crate) const MAX_STAGES: usize = 100;

/// One stretch of the profile: `length` long, the rate going straight from
/// `from` to `to` (equal for a step).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stage {
    pub(crate) length: Duration,
    pub(crate) from: f64,
    pub(crate) to: f64,
}

impl Stage {
    /// Requests expected in the first `t` of this stage.
    fn expected_within(&self, t: f64) -> f64 {
        let length = self.length.as_secs_f64();
        let t = t.clamp(0.0, length);
        self.from * t + (self.to - self.from) * t * t / (2.0 * length)
    }

    /// When, within this stage, `need` requests are expected (`need` at most
    /// what the stage holds).
    fn time_of(&self, need: f64) -> f64 {
        let length = self.length.as_secs_f64();
        let slope = (self.to - self.from) / length;
        if slope.abs() < 1e-12 {
            return need / self.from;
        }
        // from·t + slope·t²/2 = need: the root in [0, length].
        let root = (self.from * self.from + 2.0 * slope * need).max(0.0).sqrt();
        ((root - self.from) / slope).clamp(0.0, length)
    }
}

/// A rate profile: stages one after another.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stages {
    stages: Vec<Stage>,
    /// How the user wrote it, for reports: `10s@200,30s@1000` or `100..1200`.
    text: String,
}

impl Stages {
    /// Parses `--stages`: `LENGTH@RATE,...`, each a step.
    ///
    /// # Errors
    /// A sentence saying what is wrong, with an example.
    pub(crate) fn parse_steps(text: &str) -> Result<Stages, String> {
        let example = "e.g. --stages 10s@200,30s@1000,10s@0 (10 s at 200 requests/s, then 30 s at 1000, then 10 s idle)";
        let mut stages = Vec::new();
        for part in text.split(',') {
            let (length, rate) =
                part.split_once('@').ok_or_else(|| format!("{part:?} is not LENGTH@RATE; {example}"))?;
            let length = crate::units::parse_duration(length.trim())
                .map_err(|e| format!("{length:?} in {part:?}: {e}; {example}"))?;
            if length.is_zero() {
                return Err(format!("{part:?}: a stage must last longer than 0; {example}"));
            }
            let rate = parse_rate(rate.trim()).map_err(|e| format!("{e} in {part:?}; {example}"))?;
            stages.push(Stage { length, from: rate, to: rate });
        }
        Stages::checked(stages, text.to_string())
    }

    /// `--rate FROM..TO` over `over`: one straight ramp.
    ///
    /// # Errors
    /// A rate out of range.
    pub(crate) fn ramp(from: f64, to: f64, over: Duration, text: &str) -> Result<Stages, String> {
        Stages::checked(vec![Stage { length: over, from, to }], text.to_string())
    }

    fn checked(stages: Vec<Stage>, text: String) -> Result<Stages, String> {
        if stages.len() > MAX_STAGES {
            return Err(format!("at most {MAX_STAGES} stages, not {}", stages.len()));
        }
        if stages.iter().all(|s| s.from == 0.0 && s.to == 0.0) {
            return Err("every stage has rate 0: nothing would be sent".into());
        }
        Ok(Stages { stages, text })
    }

    /// The whole profile's length.
    pub(crate) fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.length).sum()
    }

    /// The rate it starts at (what a timed warm-up sends at).
    pub(crate) fn first_rate(&self) -> f64 {
        self.stages.first().map_or(0.0, |s| s.from)
    }

    /// The highest rate it reaches.
    pub(crate) fn peak(&self) -> f64 {
        self.stages.iter().map(|s| s.from.max(s.to)).fold(0.0, f64::max)
    }

    /// The same profile after a `warmup` at its first rate.
    pub(crate) fn after_warmup(&self, warmup: Duration) -> Stages {
        let mut stages = self.stages.clone();
        if !warmup.is_zero() {
            let rate = self.first_rate();
            stages.insert(0, Stage { length: warmup, from: rate, to: rate });
        }
        Stages { stages, text: self.text.clone() }
    }

    /// Requests expected from the start to `t` (seconds).
    pub(crate) fn expected_by(&self, t: f64) -> f64 {
        let mut sum = 0.0;
        let mut start = 0.0;
        for stage in &self.stages {
            let length = stage.length.as_secs_f64();
            sum += stage.expected_within(t - start);
            start += length;
            if t <= start {
                break;
            }
        }
        sum
    }

    /// The mean target rate from `from` to `to` (seconds since the start).
    pub(crate) fn mean_rate(&self, from: f64, to: f64) -> f64 {
        if to <= from {
            return 0.0;
        }
        (self.expected_by(to) - self.expected_by(from)) / (to - from)
    }

    /// When request `k` (0-based, over all connections) is due, from the
    /// start; `None` when the profile ends first.
    pub(crate) fn due(&self, k: u64) -> Option<Duration> {
        // Request k is due when k + ½ requests are expected: with a
        // constant rate r that is (k + ½)/r, evenly spaced, and a stage
        // that starts from 0 sends its first request a moment in, not at once.
        let mut need = k as f64 + 0.5;
        let mut start = 0.0;
        for stage in &self.stages {
            let holds = stage.expected_within(stage.length.as_secs_f64());
            if need <= holds {
                return Some(Duration::from_secs_f64(start + stage.time_of(need)));
            }
            need -= holds;
            start += stage.length.as_secs_f64();
        }
        None
    }
}

impl fmt::Display for Stages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A rate: requests per second, from 0 to [`MAX_RATE`].
fn parse_rate(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && (0.0..=MAX_RATE).contains(r))
        .ok_or_else(|| format!("{text:?} is not a rate from 0 to {MAX_RATE:e} requests/s"))
}

/// `--rate`: a constant rate (`500`) or a ramp (`100..1200`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RateArg {
    /// Requests per second all along.
    Constant(f64),
    /// From the first to the second over the run's `--duration`.
    Ramp(f64, f64),
}

impl RateArg {
    /// Parses `--rate`.
    ///
    /// # Errors
    /// Neither a number nor `FROM..TO`.
    pub(crate) fn parse(text: &str) -> Result<RateArg, String> {
        match text.split_once("..") {
            Some((from, to)) => Ok(RateArg::Ramp(parse_rate(from.trim())?, parse_rate(to.trim())?)),
            // A constant rate keeps its own checks (positive, not too low
            // for the connections) in the options' validation.
            None => text.trim().parse::<f64>().map(RateArg::Constant).map_err(|_| {
                format!("{text:?} is not a number of requests per second, or a ramp FROM..TO (100..1200)")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(text: &str) -> Stages {
        Stages::parse_steps(text).unwrap()
    }

    #[test]
    fn steps_are_due_at_each_stages_rate() {
        let stages = steps("2s@10,1s@0,1s@100");
        assert_eq!(stages.total(), Duration::from_secs(4));
        // 10/s for 2 s: requests 0..19 at 0.05, 0.15, ... 1.95 s.
        assert_eq!(stages.due(0), Some(Duration::from_millis(50)));
        assert_eq!(stages.due(19), Some(Duration::from_millis(1950)));
        // Then a second of silence, then 100/s from 3 s.
        let next = stages.due(20).unwrap().as_secs_f64();
        assert!((next - 3.005).abs() < 1e-9, "{next}");
        assert_eq!(stages.due(119).map(|d| (d.as_secs_f64() * 1000.0).round()), Some(3995.0));
        assert_eq!(stages.due(120), None, "the profile is over");
        assert!((stages.mean_rate(0.0, 2.0) - 10.0).abs() < 1e-9);
        assert!(stages.mean_rate(2.0, 3.0).abs() < 1e-9);
        assert!((stages.mean_rate(3.0, 4.0) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn a_ramp_speeds_up_evenly() {
        let ramp = Stages::ramp(0.0, 100.0, Duration::from_secs(10), "0..100").unwrap();
        // 500 requests in all; half the time holds a quarter of them.
        assert!((ramp.expected_by(10.0) - 500.0).abs() < 1e-9);
        assert!((ramp.expected_by(5.0) - 125.0).abs() < 1e-9);
        let quarter = ramp.due(124).unwrap().as_secs_f64();
        assert!((quarter - 5.0).abs() < 0.03, "{quarter}");
        assert!((ramp.mean_rate(9.0, 10.0) - 95.0).abs() < 1e-9);
        // Due times only ever grow.
        let times: Vec<Duration> = (0..499).map(|k| ramp.due(k).unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_warmup_runs_at_the_first_rate_before_the_stages() {
        let stages = steps("1s@10").after_warmup(Duration::from_millis(500));
        assert_eq!(stages.total(), Duration::from_millis(1500));
        assert!((stages.mean_rate(0.0, 0.5) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn bad_stages_say_what_is_wrong() {
        for (text, why) in [
            ("10s", "is not LENGTH@RATE"),
            ("10x@5", "10x"),
            ("0s@5", "longer than 0"),
            ("5s@-1", "is not a rate"),
            ("5s@0,5s@0", "nothing would be sent"),
        ] {
            let error = Stages::parse_steps(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert_eq!(RateArg::parse("100..1200"), Ok(RateArg::Ramp(100.0, 1200.0)));
        assert_eq!(RateArg::parse("250"), Ok(RateArg::Constant(250.0)));
        assert!(RateArg::parse("fast").unwrap_err().contains("FROM..TO"));
    }
}
