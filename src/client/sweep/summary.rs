//! What a sweep says when it ends: how many runs it made, and — when a point
//! has several runs — each point's median, its range, and a note when the
//! runs of a point disagree more than [`SPREAD_WARNING`] allows.

use std::fmt;
use std::path::PathBuf;

use super::repeats::{Spread, SPREAD_WARNING};

/// "1 run", "2 runs": a count with its noun in the right number.
pub(crate) fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// What a sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SweepSummary {
    /// Runs made and appended.
    pub(crate) ran: usize,
    /// Runs not made because the CSV already had them.
    pub(crate) skipped: usize,
    /// With `--force`: the runs the CSV already had, kept beside the new
    /// ones (none is skipped then, so "already there" would mislead).
    pub(crate) forced_beside: Option<usize>,
    /// Runs that found problems (their rows are appended all the same).
    pub(crate) failed: usize,
    /// The CSV the rows went to.
    pub(crate) csv: PathBuf,
}

/// `sweep: 1 run appended to results/sweep.csv, 2 already there, 0 with problems`,
/// or with `--force`: `sweep: 1 run appended to results/sweep.csv beside 2
/// earlier runs (--force keeps them), 0 with problems`.
impl fmt::Display for SweepSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ran = count(self.ran, "run", "runs");
        let csv = self.csv.display();
        match self.forced_beside {
            Some(earlier) => write!(
                f,
                "sweep: {ran} appended to {csv} beside {} (--force keeps them), {} with problems",
                count(earlier, "earlier run", "earlier runs"),
                self.failed
            ),
            None => write!(
                f,
                "sweep: {ran} appended to {csv}, {} already there, {} with problems",
                self.skipped, self.failed
            ),
        }
    }
}

/// The closing table of a sweep with repeats: one line per grid point
/// (`label` says which), then a note if some point's runs disagree. Empty
/// when no point has more than one complete run: a single run has no
/// spread to report, and its line was printed when it ended.
pub(crate) fn repeats_report(points: &[(String, Spread)]) -> Vec<String> {
    if points.iter().all(|(_, spread)| spread.runs < 2) {
        return Vec::new();
    }
    let mut lines =
        vec!["median ok replies/s per point (min–max, spread = (max − min) / median):".to_string()];
    for (label, spread) in points {
        lines.push(format!(
            "  {label}: {:.1} over {} ({:.1}–{:.1}, spread {:.0}%){}",
            spread.median,
            count(spread.runs, "run", "runs"),
            spread.min,
            spread.max,
            100.0 * spread.relative(),
            if spread.disagrees() { " !" } else { "" }
        ));
    }
    let disagreeing = points.iter().filter(|(_, spread)| spread.disagrees()).count();
    if disagreeing > 0 {
        lines.push(format!(
            "note: the runs of {} disagree by more than {:.0}% (marked !): something else was using the \
             machine's cores; trust the medians less, and rerun on a quieter machine or with more --repeats",
            count(disagreeing, "point", "points"),
            100.0 * SPREAD_WARNING
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_is_singular() {
        let summary =
            SweepSummary { ran: 1, skipped: 2, csv: PathBuf::from("s.csv"), ..SweepSummary::default() };
        assert_eq!(summary.to_string(), "sweep: 1 run appended to s.csv, 2 already there, 0 with problems");
    }

    #[test]
    fn a_forced_sweep_counts_the_earlier_runs_it_kept_not_skipped_ones() {
        let summary = SweepSummary {
            ran: 2,
            forced_beside: Some(1),
            csv: PathBuf::from("s.csv"),
            ..SweepSummary::default()
        };
        assert_eq!(
            summary.to_string(),
            "sweep: 2 runs appended to s.csv beside 1 earlier run (--force keeps them), 0 with problems"
        );
        let summary = SweepSummary { ran: 3, ..summary };
        assert!(summary.to_string().starts_with("sweep: 3 runs appended"));
    }

    #[test]
    fn the_report_gives_medians_and_notes_points_whose_runs_disagree() {
        let spread = |values: &[f64]| Spread::of(values).unwrap();
        let report = repeats_report(&[
            ("threads, 1 worker".into(), spread(&[302.5, 409.0, 405.0])),
            ("threads, 2 workers".into(), spread(&[810.0, 814.0])),
        ]);
        assert_eq!(report.len(), 4, "{report:#?}");
        assert_eq!(report[1], "  threads, 1 worker: 405.0 over 3 runs (302.5–409.0, spread 26%) !");
        assert_eq!(report[2], "  threads, 2 workers: 812.0 over 2 runs (810.0–814.0, spread 0%)");
        assert!(
            report[3].starts_with("note: the runs of 1 point disagree by more than 10%"),
            "{}",
            report[3]
        );
        assert!(report[3].contains("--repeats"), "{}", report[3]);

        let calm = repeats_report(&[("threads, 2 workers".into(), spread(&[810.0, 814.0]))]);
        assert!(calm.iter().all(|line| !line.starts_with("note:")), "{calm:#?}");
        assert!(repeats_report(&[("one".into(), spread(&[5.0]))]).is_empty(), "one run: no table");
    }
}
