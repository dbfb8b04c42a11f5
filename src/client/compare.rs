//! `tc-client compare A.json B.json ...`: runs side by side, the first as
//! the baseline, with how sure the difference is (as hyperfine's "1.92 ±
//! 0.06 times faster" and its Welch test script).
//!
//! The spread comes from inside each run: its JSON report carries the run
//! interval by interval ([`IntervalFigures`]), and each full interval is
//! one sample of throughput, p50 and p99. The first and last intervals of
//! a run are partial (the warm-up's edge, the last reply) and left out: an
//! interval counts when it was measured whole. For each figure this prints
//! the mean ± standard deviation over the intervals, the ratio to the
//! baseline with its uncertainty (relative deviations added in quadrature,
//! as hyperfine does), and Welch's t-test (two-sided; unequal variances):
//! a p-value under 0.05 calls the difference significant.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::client::bench::intervals::IntervalFigures;
use crate::client::bench::{farm_text, FarmHosts};
use crate::error::{Error, Result};

/// Below this p-value a difference is called significant.
const SIGNIFICANCE: f64 = 0.05;
/// The workload fields that must agree for two runs to be compared.
const WORKLOAD_FIELDS: [&str; 7] =
    ["cmd", "size", "concurrency", "load_model", "pipeline", "rate_rps", "images_per_request"];

/// What compare reads of a JSON report.
#[derive(Debug, Deserialize)]
struct Report {
    server: Server,
    /// The run's parameters: the workload's fields and `verify`.
    parameters: serde_json::Map<String, serde_json::Value>,
    throughput_rps: f64,
    #[serde(default)]
    intervals: Vec<IntervalFigures>,
    #[serde(default)]
    interrupted: bool,
    #[serde(default)]
    aborted: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Server {
    mode: Option<String>,
    workers: Option<u64>,
    gil: Option<bool>,
    /// A gateway's hosts (absent for any other server, and in older reports).
    #[serde(default)]
    hosts: Option<FarmHosts>,
}

/// One run, read and reduced to its samples.
struct Run {
    name: String,
    report: Report,
    throughput: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
}

impl Run {
    fn read(path: &Path) -> Result<Run> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::input(path, format!("cannot read it: {e}")))?;
        let report: Report = serde_json::from_str(&text).map_err(|e| {
            Error::input(
                path,
                format!("not a tc-client --json report ({e}); write one with tc-client --json FILE"),
            )
        })?;
        // Full intervals only: the first and last of a run are partial (the
        // warm-up's edge, the last reply), and their rates are not samples
        // of the same thing. `length_s` says how much of each was measured.
        let longest = report.intervals.iter().map(|i| i.length_s).fold(0.0, f64::max);
        let inner: Vec<&IntervalFigures> =
            report.intervals.iter().filter(|i| i.length_s > 0.0 && i.length_s >= longest * 0.95).collect();
        let name =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        Ok(Run {
            name,
            throughput: inner.iter().map(|i| i.ok as f64 / i.length_s).collect(),
            p50_us: inner.iter().filter_map(|i| i.p50_us).map(|v| v as f64).collect(),
            p99_us: inner.iter().filter_map(|i| i.p99_us).map(|v| v as f64).collect(),
            report,
        })
    }

    /// "threads, 2 workers" as the server reported it, and whether the run
    /// was cut short (its figures cover less than was asked).
    fn farm(&self) -> String {
        let server = &self.report.server;
        let cut = match (&self.report.aborted, self.report.interrupted) {
            (Some(_), _) => "; ABORTED by --abort-on-fail",
            (None, true) => "; INTERRUPTED",
            (None, false) => "",
        };
        let farm = match (&server.mode, server.workers) {
            (Some(mode), Some(workers)) => farm_text(mode, workers, server.gil, server.hosts.as_ref()),
            _ => "a server that did not say its mode".into(),
        };
        format!("{farm}{cut}")
    }
}

/// What `compare` found: the text to print and whether `--fail-if-slower`
/// was crossed.
pub(crate) struct Comparison {
    /// The table, ready to print.
    pub(crate) text: String,
    /// A run slower than the baseline by more than `--fail-if-slower`.
    pub(crate) slower: bool,
}

/// Compares `paths` (the first is the baseline).
///
/// # Errors
/// A file that cannot be read or is not a report; runs of different
/// workloads (unless `allow_different` is set), naming the difference.
pub(crate) fn compare(
    paths: &[PathBuf],
    fail_if_slower: Option<f64>,
    allow_different: bool,
) -> Result<Comparison> {
    let runs: Vec<Run> = paths.iter().map(|p| Run::read(p)).collect::<Result<_>>()?;
    let (baseline, others) = runs.split_first().ok_or_else(|| Error::Options {
        flag: "compare",
        message: "give at least two --json reports".into(),
    })?;
    if !allow_different {
        for run in others {
            if let Some(difference) = workload_difference(baseline, run) {
                return Err(Error::Options {
                    flag: "compare",
                    message: format!(
                        "{} and {} ran different workloads ({difference}): their figures do not compare; \
                         add --allow-different-workloads to compare them anyway",
                        baseline.name, run.name
                    ),
                });
            }
        }
    }
    let mut text = String::new();
    let workload = &baseline.report.parameters;
    let _ = writeln!(
        text,
        "baseline {}: {}; {} n={}, {} connections, {} loop",
        baseline.name,
        baseline.farm(),
        workload.get("cmd").and_then(|v| v.as_str()).unwrap_or("?"),
        workload.get("size").map_or("?".into(), |v| v.to_string()),
        workload.get("concurrency").map_or("?".into(), |v| v.to_string()),
        workload.get("load_model").and_then(|v| v.as_str()).unwrap_or("?"),
    );
    let _ = writeln!(
        text,
        "  (each figure: mean ± stdev over a run's full intervals; ratio to the baseline; Welch's t-test, \
         significant below p = {SIGNIFICANCE})"
    );
    let mut slower = false;
    for run in others {
        let _ = writeln!(
            text,
            "\n{} ({}; {} against {}):",
            run.name,
            run.farm(),
            crate::units::count(run.throughput.len() as u64, "interval", "intervals"),
            crate::units::count(baseline.throughput.len() as u64, "interval", "intervals"),
        );
        for (what, a, b, higher_is_better, scale, unit) in [
            ("throughput", &baseline.throughput, &run.throughput, true, 1.0, "ok replies/s"),
            ("p50 latency", &baseline.p50_us, &run.p50_us, false, 1e-3, "ms"),
            ("p99 latency", &baseline.p99_us, &run.p99_us, false, 1e-3, "ms"),
        ] {
            let line = figure_line(what, a, b, higher_is_better, scale, unit);
            let _ = writeln!(text, "  {line}");
        }
        let (a, b) = (
            mean(&baseline.throughput).unwrap_or(baseline.report.throughput_rps),
            mean(&run.throughput).unwrap_or(run.report.throughput_rps),
        );
        if let Some(limit) = fail_if_slower {
            let drop_pct = 100.0 * (a - b) / a.max(f64::MIN_POSITIVE);
            let significant = welch_p(&baseline.throughput, &run.throughput).is_none_or(|p| p < SIGNIFICANCE);
            if drop_pct > limit && significant {
                slower = true;
                let _ = writeln!(
                    text,
                    "  ✗ {:.1}% less throughput than {}: more than --fail-if-slower {limit}%",
                    drop_pct, baseline.name
                );
            }
        }
    }
    Ok(Comparison { text, slower })
}

/// The first workload field two runs disagree on, in words.
fn workload_difference(a: &Run, b: &Run) -> Option<String> {
    let (wa, wb) = (&a.report.parameters, &b.report.parameters);
    WORKLOAD_FIELDS.iter().find_map(|field| {
        let (va, vb) = (wa.get(*field), wb.get(*field));
        (va != vb).then(|| {
            let shown = |v: Option<&serde_json::Value>| v.map_or("none".into(), |v| v.to_string());
            format!("{field} {} vs {}", shown(va), shown(vb))
        })
    })
}

/// One figure of one run against the baseline's.
fn figure_line(what: &str, a: &[f64], b: &[f64], higher_is_better: bool, scale: f64, unit: &str) -> String {
    let shown = |samples: &[f64]| match (mean(samples), stdev(samples)) {
        (Some(m), Some(s)) => format!("{} ± {}", tidy(m * scale), tidy(s * scale)),
        (Some(m), None) => tidy(m * scale),
        _ => "–".into(),
    };
    let mut line = format!("{what:<12} {:>20} → {:>20} {unit:<13}", shown(a), shown(b));
    let (Some(ma), Some(mb)) = (mean(a), mean(b)) else {
        line.push_str(" (no samples to compare)");
        return line;
    };
    let ratio = mb / ma;
    let relative = |samples: &[f64], m: f64| stdev(samples).map(|s| s / m);
    match (relative(a, ma), relative(b, mb)) {
        (Some(ra), Some(rb)) => {
            let _ = write!(line, "  {:.2} ± {:.2} ×", ratio, ratio * (ra * ra + rb * rb).sqrt());
        }
        _ => {
            let _ = write!(line, "  {ratio:.2} ×");
        }
    }
    match welch_p(a, b) {
        Some(p) if p < SIGNIFICANCE => {
            let better = (ratio > 1.0) == higher_is_better;
            let _ = write!(line, "  p {}: {}", p_text(p), if better { "better" } else { "worse" });
        }
        Some(p) => {
            let _ = write!(line, "  p {}: no significant difference", p_text(p));
        }
        None => line.push_str("  (too few intervals for a test: run longer)"),
    }
    line
}

/// `= 0.011`, or `< 0.001` for the smallest.
fn p_text(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("= {p:.3}")
    }
}

/// `1007.8`, `3.929`, `0.05`: enough digits to read, no more.
fn tidy(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.1}"),
        v if v >= 1.0 => format!("{value:.3}"),
        _ => format!("{value:.4}"),
    }
}

fn mean(samples: &[f64]) -> Option<f64> {
    (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64)
}

/// The sample standard deviation (n - 1); `None` for fewer than two.
fn stdev(samples: &[f64]) -> Option<f64> {
    let m = mean(samples)?;
    (samples.len() >= 2)
        .then(|| (samples.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (samples.len() - 1) as f64).sqrt())
}

/// Welch's two-sided t-test: the p-value of "the means are equal"; `None`
/// with fewer than two samples on either side.
fn welch_p(a: &[f64], b: &[f64]) -> Option<f64> {
    let (ma, mb, sa, sb) = (mean(a)?, mean(b)?, stdev(a)?, stdev(b)?);
    let (va, vb) = (sa * sa / a.len() as f64, sb * sb / b.len() as f64);
    if va + vb == 0.0 {
        return Some(if ma == mb { 1.0 } else { 0.0 });
    }
    let t = (ma - mb) / (va + vb).sqrt();
    let df = (va + vb).powi(2) / (va * va / (a.len() - 1) as f64 + vb * vb / (b.len() - 1) as f64);
    Some(student_t_two_sided(t, df))
}

/// P(|T| > |t|) for Student's t with `df` degrees of freedom: the
/// regularized incomplete beta I_x(df/2, 1/2) at x = df / (df + t²).
fn student_t_two_sided(t: f64, df: f64) -> f64 {
    incomplete_beta(df / 2.0, 0.5, df / (df + t * t)).clamp(0.0, 1.0)
}

/// The regularized incomplete beta function I_x(a, b), by its continued
/// fraction (modified Lentz), using the symmetry I_x(a,b) = 1 - I_{1-x}(b,a)
/// where the fraction converges slowly.
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + numerator / c;
            c = if c.abs() < TINY { TINY } else { c };
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-12 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7; ~15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // The reflection formula: Γ(x)Γ(1-x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = G[1..].iter().enumerate().fold(G[0], |acc, (i, g)| acc + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_t_distribution_matches_its_tables() {
        // Two-sided p-values from any t table.
        for (t, df, p) in [
            (2.0, 10.0, 0.0734),
            (2.228, 10.0, 0.05),
            (1.0, 5.0, 0.3632),
            (0.0, 7.0, 1.0),
            (3.5, 30.0, 0.00146),
        ] {
            let got = student_t_two_sided(t, df);
            assert!((got - p).abs() < 5e-4, "t={t} df={df}: {got} vs {p}");
        }
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn welch_tells_a_real_difference_from_noise() {
        let a = [100.0, 102.0, 98.0, 101.0, 99.0];
        let shifted = [120.0, 122.0, 118.0, 121.0, 119.0];
        let same = [101.0, 99.0, 100.0, 98.0, 102.0];
        assert!(welch_p(&a, &shifted).unwrap() < 0.001);
        assert!(welch_p(&a, &same).unwrap() > 0.5);
        assert_eq!(welch_p(&a, &[100.0]), None, "one sample has no spread");
        assert_eq!(stdev(&a).map(|s| (s * 1000.0).round()), Some(1581.0));
    }
}
