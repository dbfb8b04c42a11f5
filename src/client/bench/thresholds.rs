//! `--threshold`: pass/fail criteria on a run's results, for CI (as k6's
//! thresholds and artillery's `ensure`).
//!
//! An expression is `METRIC OP VALUE`:
//!
//! | metric | value | from |
//! |---|---|---|
//! | `p50`, `p99`, `p99.9`, `p(99)`, `mean`, `min`, `max` | a time with its unit: `800us`, `20ms`, `1.5s` | latency from schedule (the coordinated-omission corrected row); prefix `send.` for latency from send (`send.p99<5ms`) |
//! | `throughput` | ok replies per second (`900`, `900/s`) | the summary's throughput |
//! | `errors`, `errors.CODE` | a count (`0`) or a share of the requests sent (`1%`) | error replies, all codes or one (`errors.BUSY`) |
//! | `timeouts` | a count or a share | requests with no reply within `--timeout` |
//!
//! `OP` is `<`, `<=`, `>`, `>=` or `==`. Each threshold is checked once the
//! run is over, on the measured part (warm-up excluded); a latency needs
//! at least one ok reply, and without one the threshold is crossed.

use std::fmt;

use hdrhistogram::Histogram;

use crate::client::bench::BenchRun;

/// The exit code of a run whose report is complete but which crossed a
/// threshold (k6's code for the same, so CI scripts read it alike).
pub const EXIT_CODE: u8 = 99;

/// One `--threshold`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Threshold {
    /// As the user wrote it (whitespace removed).
    pub(crate) text: String,
    metric: Metric,
    op: Op,
    limit: f64,
    /// Whether `limit` is a share of the requests sent (`1%`).
    percent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    Schedule,
    Send,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stat {
    Percentile(f64),
    Mean,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
enum Metric {
    Latency(Row, Stat),
    Throughput,
    Errors(Option<String>),
    Timeouts,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
}

impl Op {
    fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Op::Less => observed < limit,
            Op::LessOrEqual => observed <= limit,
            Op::Greater => observed > limit,
            Op::GreaterOrEqual => observed >= limit,
            // Counts and rounded figures: equal within a millionth.
            Op::Equal => (observed - limit).abs() <= limit.abs() * 1e-6,
        }
    }
}

/// What is allowed, for every refusal.
const ALLOWED: &str = "a threshold is METRIC OP VALUE: p50, p99, p99.9, p(99), mean, min or max with a time \
     (20ms, 800us, 1.5s; latency from schedule, or send.p99 from send), throughput with ok replies/s (900), \
     errors, errors.CODE or timeouts with a count (0) or a share of the requests sent (1%); OP is <, <=, >, >= or ==; \
     e.g. --threshold 'p99<20ms' --threshold 'errors==0'";

impl Threshold {
    /// Parses one `--threshold`.
    ///
    /// # Errors
    /// A sentence saying what is wrong and what is allowed.
    pub(crate) fn parse(text: &str) -> Result<Threshold, String> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        // The options prefix the flag and the value: the sentence says why.
        let refuse = |why: &str| format!("{why}; {ALLOWED}");
        let at = text.find(['<', '>', '=']).ok_or_else(|| refuse("no comparison in it"))?;
        let (name, rest) = text.split_at(at);
        let (op, value) = [
            ("<=", Op::LessOrEqual),
            (">=", Op::GreaterOrEqual),
            ("==", Op::Equal),
            ("<", Op::Less),
            (">", Op::Greater),
        ]
        .into_iter()
        .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|value| (op, value)))
        .ok_or_else(|| {
            refuse(if rest.starts_with("=<") || rest.starts_with("=>") {
                "=< and => are written <= and >="
            } else {
                "a single = compares nothing (write ==)"
            })
        })?;
        let metric = Metric::parse(name).map_err(|why| refuse(&why))?;
        let (limit, percent) = match &metric {
            Metric::Latency(..) => (
                parse_time_us(value)
                    .ok_or_else(|| refuse(&format!("{value:?} is not a time with its unit")))?,
                false,
            ),
            Metric::Throughput => {
                let number = value.strip_suffix("/s").unwrap_or(value);
                (
                    parse_number(number)
                        .ok_or_else(|| refuse(&format!("{value:?} is not a number of replies/s")))?,
                    false,
                )
            }
            Metric::Errors(_) | Metric::Timeouts => match value.strip_suffix('%') {
                Some(share) => (
                    parse_number(share)
                        .filter(|p| *p <= 100.0)
                        .ok_or_else(|| refuse(&format!("{value:?} is not a share from 0% to 100%")))?,
                    true,
                ),
                None => {
                    (parse_number(value).ok_or_else(|| refuse(&format!("{value:?} is not a count")))?, false)
                }
            },
        };
        Ok(Threshold { text, metric, op, limit, percent })
    }

    /// Checks this threshold against a finished run.
    pub(crate) fn check(&self, run: &BenchRun) -> Verdict {
        let counts = &run.recorder.counts;
        let observed: Option<(f64, String)> = match &self.metric {
            Metric::Latency(row, stat) => {
                let histogram = match row {
                    Row::Schedule => &run.recorder.corrected,
                    Row::Send => &run.recorder.uncorrected,
                };
                latency_us(histogram, *stat).map(|us| (us, format!("{} was {}", self.metric, shown_us(us))))
            }
            Metric::Throughput => {
                let rate = run.throughput();
                Some((rate, format!("throughput was {rate:.1} ok replies/s")))
            }
            Metric::Errors(code) => {
                let n = match code {
                    None => counts.error_replies(),
                    Some(code) => counts.errors.get(code).copied().unwrap_or(0),
                };
                Some(self.count(n, counts.sent))
            }
            Metric::Timeouts => Some(self.count(counts.timeouts, counts.sent)),
        };
        match observed {
            Some((value, sentence)) => Verdict {
                threshold: self.text.clone(),
                passed: self.op.holds(value, self.limit),
                observed: Some(value),
                observed_text: sentence,
            },
            None => Verdict {
                threshold: self.text.clone(),
                passed: false,
                observed: None,
                observed_text: "no ok replies, so no latency to compare".into(),
            },
        }
    }

    /// A count as the threshold compares it: itself, or its share of `sent`.
    fn count(&self, n: u64, sent: u64) -> (f64, String) {
        let what = match &self.metric {
            Metric::Timeouts => crate::units::count(n, "timeout", "timeouts"),
            Metric::Errors(Some(code)) => format!("{n} {code}"),
            _ => crate::units::count(n, "error reply", "error replies"),
        };
        if self.percent {
            let share = if sent == 0 { 0.0 } else { 100.0 * n as f64 / sent as f64 };
            (share, format!("{what} = {share:.3}% of {sent} sent"))
        } else {
            (n as f64, what)
        }
    }
}

impl Metric {
    fn parse(name: &str) -> Result<Metric, String> {
        match name {
            "throughput" => return Ok(Metric::Throughput),
            "errors" => return Ok(Metric::Errors(None)),
            "timeouts" => return Ok(Metric::Timeouts),
            _ => {}
        }
        if let Some(code) = name.strip_prefix("errors.") {
            // A typo in a code would pass forever: only the protocol's codes.
            let codes: Vec<&str> = crate::protocol::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
            if codes.contains(&code) {
                return Ok(Metric::Errors(Some(code.to_string())));
            }
            let upper = code.to_ascii_uppercase();
            return Err(if codes.contains(&upper.as_str()) {
                format!("error codes are upper case: errors.{upper}")
            } else {
                format!("{code:?} is not an error code (the codes: {})", codes.join(", "))
            });
        }
        let not_a_metric = || format!("{name:?} is not a metric");
        let (row, stat) = match name.strip_prefix("send.") {
            Some(stat) => (Row::Send, stat),
            None => (Row::Schedule, name.strip_prefix("schedule.").unwrap_or(name)),
        };
        let stat = match stat {
            "mean" => Stat::Mean,
            "min" => Stat::Min,
            "max" => Stat::Max,
            _ => {
                let digits = stat.strip_prefix('p').ok_or_else(not_a_metric)?;
                let digits = digits.strip_prefix('(').and_then(|d| d.strip_suffix(')')).unwrap_or(digits);
                let p = parse_number(digits).ok_or_else(not_a_metric)?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(format!("{name:?}: a percentile is above 0 and at most 100"));
                }
                Stat::Percentile(p)
            }
        };
        Ok(Metric::Latency(row, stat))
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Latency(row, stat) => {
                match stat {
                    Stat::Percentile(p) => write!(f, "p{p}")?,
                    Stat::Mean => write!(f, "mean")?,
                    Stat::Min => write!(f, "min")?,
                    Stat::Max => write!(f, "max")?,
                }
                match row {
                    Row::Schedule => write!(f, " latency from schedule"),
                    Row::Send => write!(f, " latency from send"),
                }
            }
            Metric::Throughput => write!(f, "throughput"),
            Metric::Errors(None) => write!(f, "errors"),
            Metric::Errors(Some(code)) => write!(f, "errors.{code}"),
            Metric::Timeouts => write!(f, "timeouts"),
        }
    }
}

/// What `--abort-on-fail` can read while the run goes: the latency from
/// schedule of every complete interval so far, and the counters.
pub(crate) struct SoFar<'a> {
    /// Latency of the ok replies so far, from schedule and from send.
    pub(crate) latency: &'a super::IntervalLatencies,
    /// Measured requests settled so far.
    pub(crate) settled: u64,
    /// Error replies so far, and by code.
    pub(crate) error_replies: u64,
    pub(crate) errors_by_code: &'a std::collections::BTreeMap<String, super::ErrorTally>,
    /// Timeouts so far.
    pub(crate) timeouts: u64,
}

impl Threshold {
    /// Whether the run so far crosses this threshold; `None` for the one
    /// only the end can judge: throughput (a rate mid-run, mid-ramp, says
    /// nothing of the run's).
    pub(crate) fn crossed_so_far(&self, so_far: &SoFar<'_>) -> Option<(bool, String)> {
        let (value, what) = match &self.metric {
            Metric::Latency(row, stat) => {
                let histogram = match row {
                    Row::Schedule => &so_far.latency.from_schedule,
                    Row::Send => &so_far.latency.from_send,
                };
                match latency_us(histogram, *stat) {
                    Some(us) => (us, format!("{} was {}", self.metric, shown_us(us))),
                    // Requests settled and none was ok: no latency to meet it.
                    None => return Some((true, "no ok replies so far".into())),
                }
            }
            Metric::Errors(None) => self.count(so_far.error_replies, so_far.settled),
            Metric::Errors(Some(code)) => {
                let n = so_far.errors_by_code.get(code).map_or(0, |tally| tally.count);
                self.count(n, so_far.settled)
            }
            Metric::Timeouts => self.count(so_far.timeouts, so_far.settled),
            _ => return None,
        };
        Some((!self.op.holds(value, self.limit), what))
    }
}

/// A threshold's outcome, for the summary and the JSON report.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub(crate) struct Verdict {
    /// The expression, as given.
    pub(crate) threshold: String,
    /// Whether the run met it.
    pub(crate) passed: bool,
    /// The figure compared: µs for a latency, ok replies/s, a count, or a
    /// percentage for a share; `None` when there was none (no ok replies).
    pub(crate) observed: Option<f64>,
    /// The figure in words.
    #[serde(rename = "observed_as")]
    pub(crate) observed_text: String,
}

/// A latency statistic in µs; `None` for an empty histogram.
fn latency_us(histogram: &Histogram<u64>, stat: Stat) -> Option<f64> {
    if histogram.is_empty() {
        return None;
    }
    Some(match stat {
        Stat::Percentile(p) => histogram.value_at_quantile(p / 100.0) as f64,
        Stat::Mean => histogram.mean(),
        Stat::Min => histogram.min() as f64,
        Stat::Max => histogram.max() as f64,
    })
}

/// In milliseconds as the summary's latency table shows them (`0.850 ms`,
/// `12.345 ms`), or seconds past one (`1.200 s`).
fn shown_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.3} s", us / 1e6)
    } else {
        format!("{:.3} ms", us / 1e3)
    }
}

/// A plain, finite, non-negative number.
fn parse_number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0 && !text.starts_with('+'))
}

/// `800us`, `800µs`, `20ms`, `1.5s` in µs; a bare number is refused (which
/// unit would it be?).
fn parse_time_us(text: &str) -> Option<f64> {
    let units = [("us", 1.0), ("µs", 1.0), ("ms", 1e3), ("s", 1e6)];
    units
        .into_iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).and_then(parse_number).map(|v| v * scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::report::tests::sample_run;

    fn verdict(text: &str) -> Verdict {
        Threshold::parse(text).unwrap().check(&sample_run())
    }

    #[test]
    fn each_form_passes_and_fails_on_the_sample_run() {
        // The sample run: p50 0.5 ms and p99 0.99 ms from schedule, 1.98 ms
        // p99 from send, 500 ok replies/s, 2 BUSY of 1002 sent, no timeout.
        for (text, passed) in [
            ("p99<1ms", true),
            ("p99<900us", false),
            ("p(50)<=0.6ms", true),
            ("send.p99<1ms", false),
            ("send.p99<2ms", true),
            ("max<1.5s", true),
            ("mean>1ms", false),
            ("throughput>=450", true),
            ("throughput>=600/s", false),
            ("errors==0", false),
            ("errors<=2", true),
            ("errors.BUSY<1%", true),
            ("errors.BUSY<0.1%", false),
            ("errors.BAD_REQUEST==0", true),
            ("timeouts==0", true),
            ("timeouts>0", false),
        ] {
            assert_eq!(verdict(text).passed, passed, "{text}: {:?}", verdict(text));
        }
    }

    #[test]
    fn the_verdict_says_which_row_and_the_figure() {
        let v = verdict("p99 < 900us");
        assert_eq!(v.threshold, "p99<900us");
        assert!(v.observed_text.starts_with("p99 latency from schedule was 0."), "{}", v.observed_text);
        assert_eq!(verdict("errors.BUSY<1%").observed_text, "2 BUSY = 0.200% of 1002 sent");
    }

    #[test]
    fn the_run_so_far_judges_every_form_but_throughput() {
        // What --abort-on-fail sees after an interval: the sample run's
        // histograms and counts, as the interval thread keeps them.
        let run = sample_run();
        let latency = crate::client::bench::IntervalLatencies {
            from_schedule: run.recorder.corrected.clone(),
            from_send: run.recorder.uncorrected.clone(),
        };
        let busy = crate::client::bench::ErrorTally { count: 2, first_message: None };
        let errors_by_code = [("BUSY".to_string(), busy)].into_iter().collect();
        let so_far = SoFar {
            latency: &latency,
            settled: 1002,
            error_replies: 2,
            errors_by_code: &errors_by_code,
            timeouts: 0,
        };
        let crossed = |text: &str| Threshold::parse(text).unwrap().crossed_so_far(&so_far).map(|(c, _)| c);
        for (text, expected) in [
            ("p99<1ms", Some(false)),
            ("p99<900us", Some(true)),
            ("send.p99<1ms", Some(true)),
            ("send.p99<2ms", Some(false)),
            ("errors.BUSY<0.1%", Some(true)),
            ("errors.BAD_REQUEST==0", Some(false)),
            ("timeouts==0", Some(false)),
            ("throughput>=600", None),
        ] {
            assert_eq!(crossed(text), expected, "{text}");
        }
    }

    #[test]
    fn without_ok_replies_a_latency_threshold_is_crossed() {
        let mut run = sample_run();
        run.recorder = crate::client::bench::Recorder::default();
        let v = Threshold::parse("p99<1s").unwrap().check(&run);
        assert!(!v.passed);
        assert_eq!(v.observed, None);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong_and_what_is_allowed() {
        for (text, why) in [
            ("p99", "no comparison"),
            ("p99=20ms", "a single = compares nothing"),
            ("p99<20", "not a time with its unit"),
            ("p101<20ms", "a percentile is above 0 and at most 100"),
            ("p99=<20ms", "=< and => are written <= and >="),
            ("errors.NOPE<1%", "is not an error code (the codes: BAD_FRAME"),
            ("latency<20ms", "is not a metric"),
            ("errors<-1", "not a count"),
            ("timeouts<150%", "not a share"),
            ("throughput>fast", "not a number"),
            ("errors.busy==0", "error codes are upper case: errors.BUSY"),
        ] {
            let error = Threshold::parse(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
            assert!(error.contains("a threshold is METRIC OP VALUE"), "{text}: {error}");
        }
    }
}
