//! Repeated runs of one grid point: their median and how far apart they are.
//!
//! A busy machine makes single runs lie (a sweep once measured threads at
//! 302, 158 and 39 replies/s for 1, 2 and 4 workers; the rerun said 409,
//! 814, 810). So a sweep can run each point several times (`--repeats`),
//! and both its closing summary and the charts report the median of a
//! point's runs with their range, the way hyperfine reports a command.

/// The largest `--repeats`: enough for a stable median, small enough that a
/// typo (`--repeats 1000`) does not start a day-long sweep.
pub(crate) const MAX_REPEATS: usize = 100;

/// When the runs of one point differ by more than this fraction of their
/// median ((max − min) / median), the summary says so: such a spread means
/// the machine was doing something else, not that the farm changed.
pub(crate) const SPREAD_WARNING: f64 = 0.10;

/// The runs of one point, as numbers: how many, the median, the extremes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    /// How many runs.
    pub(crate) runs: usize,
    /// The middle value (the mean of the two middle values for an even
    /// count): one slow run does not move it, unlike the mean.
    pub(crate) median: f64,
    /// The smallest value.
    pub(crate) min: f64,
    /// The largest value.
    pub(crate) max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub(crate) fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let middle = sorted.len() / 2;
        let median =
            if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 };
        Some(Spread { runs: sorted.len(), median, min, max })
    }

    /// (max − min) / median: 0.25 means the runs span a quarter of their
    /// median. Zero for a single run or a zero median.
    pub(crate) fn relative(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / self.median
        } else {
            0.0
        }
    }

    /// Whether the runs disagree by more than [`SPREAD_WARNING`].
    pub(crate) fn disagrees(&self) -> bool {
        self.relative() > SPREAD_WARNING
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_ignores_one_slow_run_and_the_spread_shows_it() {
        let spread = Spread::of(&[409.0, 39.0, 405.0]).unwrap();
        assert_eq!(spread, Spread { runs: 3, median: 405.0, min: 39.0, max: 409.0 });
        assert!(spread.disagrees());
        let even = Spread::of(&[100.0, 104.0]).unwrap();
        assert_eq!(even.median, 102.0);
        assert!((even.relative() - 4.0 / 102.0).abs() < 1e-12);
        assert!(!even.disagrees(), "4% is within the 10% threshold");
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[7.0]).unwrap().relative(), 0.0);
    }
}
