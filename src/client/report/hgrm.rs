//! The percentile distribution as Java HdrHistogram's
//! `outputPercentileDistribution` prints it (also wrk2's "Detailed Percentile
//! spectrum"), so the public HdrHistogram plotter reads our `.hgrm` files.
//!
//! Values are recorded in microseconds and printed in milliseconds (a
//! scaling ratio of 1000), as wrk2 does.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use hdrhistogram::Histogram;

use super::{Exporter, RunReport};
use crate::client::bench::BenchRun;
use crate::error::{Error, Result};

/// Steps per half-distance to 100%, as in the Java default.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Writes `histogram` (µs) as a percentile distribution in milliseconds.
///
/// # Errors
/// Whatever the writer returns.
pub(crate) fn write_percentile_distribution<W: Write>(
    histogram: &Histogram<u64>,
    out: &mut W,
) -> io::Result<()> {
    write_scaled(histogram, 1000.0, out)
}

/// Writes `histogram` with values divided by `scale`.
///
/// # Errors
/// Whatever the writer returns.
pub(crate) fn write_scaled<W: Write>(histogram: &Histogram<u64>, scale: f64, out: &mut W) -> io::Result<()> {
    writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    let mut total = 0u64;
    if !histogram.is_empty() {
        for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += step.count_since_last_iteration();
            let quantile = step.quantile_iterated_to();
            let value = step.value_iterated_to() as f64 / scale;
            if quantile < 1.0 {
                writeln!(out, "{value:12.3} {quantile:2.12} {total:10} {:14.2}", 1.0 / (1.0 - quantile))?;
            } else {
                writeln!(out, "{value:12.3} {quantile:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if histogram.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (histogram.mean() / scale, histogram.stdev() / scale, histogram.max() as f64 / scale)
    };
    writeln!(out, "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]")?;
    writeln!(out, "#[Max     = {max:12.3}, Total count    = {:12}]", histogram.len())?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_bucket_count(histogram)
    )?;
    Ok(())
}

/// The sub-bucket count HdrHistogram derives from the precision: the
/// smallest power of two ≥ 2 × 10^digits (2048 for 3 digits).
fn sub_bucket_count(histogram: &Histogram<u64>) -> u64 {
    (2 * 10u64.pow(u32::from(histogram.sigfig()))).next_power_of_two()
}

/// `--hgrm`: the percentile distribution of the latency from schedule.
pub(crate) struct Hgrm {
    file: BufWriter<File>,
}

impl Hgrm {
    /// The exporter for an already created file.
    pub(crate) fn new(file: BufWriter<File>) -> Self {
        Hgrm { file }
    }
}

impl Exporter for Hgrm {
    fn finish(mut self: Box<Self>, run: &BenchRun, _report: &RunReport) -> Result<()> {
        write_percentile_distribution(&run.recorder.corrected, &mut self.file)
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io("writing --hgrm", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::bench::recorder::{latency_histogram, record_us};

    fn render(histogram: &Histogram<u64>) -> String {
        let mut out = Vec::new();
        write_percentile_distribution(histogram, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn layout_matches_java_hdrhistogram() {
        let mut h = latency_histogram();
        for us in 1..=10_000 {
            record_us(&mut h, us);
        }
        let text = render(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "       Value     Percentile TotalCount 1/(1-Percentile)");
        assert_eq!(lines[1], "");
        // First data line: the smallest value, 0th percentile, count 1.
        assert_eq!(lines[2], "       0.001 0.000000000000          1           1.00");
        // The median line (value 5.000 ms = 5000 µs, 50%, 5000 values).
        assert!(lines.contains(&"       5.003 0.500000000000       5003           2.00"), "{text}");
        // The last data line reaches 100% with every value and no 1/(1-p).
        let last_data = lines.iter().rev().find(|l| !l.starts_with('#')).unwrap();
        assert_eq!(*last_data, "      10.007 1.000000000000      10000");
        let footer = &lines[lines.len() - 3..];
        assert_eq!(footer[0], "#[Mean    =        5.001, StdDeviation   =        2.887]");
        assert_eq!(footer[1], "#[Max     =       10.007, Total count    =        10000]");
        assert!(footer[2].starts_with("#[Buckets = "), "{}", footer[2]);
        assert!(footer[2].ends_with("SubBuckets     =         2048]"), "{}", footer[2]);
    }

    #[test]
    fn an_empty_histogram_still_gives_a_valid_file() {
        let text = render(&latency_histogram());
        assert!(text.starts_with("       Value"));
        assert!(text.contains("Total count    =            0]"));
    }
}
