//! The CPU-bound job of the original ThreadCenter, bit for bit.
//!
//! The kernel is a Fibonacci-like recurrence folded into a checksum. It is
//! deliberately sequential (each step needs the previous one), so the only
//! way to do more of it per second is to run more jobs at once: exactly what
//! a farm of workers is for.

use std::ops::ControlFlow;

/// Modulus of the Fibonacci-like sequence (a prime, as in the original).
const SEQUENCE_MODULUS: u64 = 10_000_019;
/// Modulus of the running checksum.
const CHECKSUM_MODULUS: u64 = 1_000_000_007;

/// Runs the original ThreadCenter job for `n` steps and returns its checksum.
///
/// acc = 0, a = 0, b = 1; repeat max(1, n) times:
/// (a, b) = (b, (a + b) mod 10000019); acc = (acc + 31a + 17b) mod 1000000007.
///
/// Every intermediate value fits easily in a `u64` (a, b < 10^7 and
/// acc < 10^9), so no step can overflow.
///
/// ```
/// assert_eq!(threadcenter::work::compute::compute(10), 8360);
/// ```
pub fn compute(n: u64) -> u64 {
    let (mut acc, mut a, mut b) = (0u64, 0u64, 1u64);
    for _ in 0..n.max(1) {
        (a, b) = (b, (a + b) % SEQUENCE_MODULUS);
        acc = (acc + 31 * a + 17 * b) % CHECKSUM_MODULUS;
    }
    acc
}

/// [`compute`] in chunks of `chunk` steps, asking `between` after each full
/// chunk whether to go on: the same result, with room to yield (the GIL
/// mode's checkpoints) and to stop. `None` when `between` said stop.
///
/// A thread cannot be killed, so this is how a worker thread gives up a job
/// that ran past its `--job-timeout`: its chunks are ~20 µs of work apart, so
/// the thread stops that soon after it is told to instead of computing on
/// (for minutes, or for ever with a huge `n`) for nobody. The steps run in an
/// inner loop with no check of their own, so chunking costs nothing per step.
pub(crate) fn compute_in_chunks(
    n: u64,
    chunk: u64,
    mut between: impl FnMut() -> ControlFlow<()>,
) -> Option<u64> {
    let (mut acc, mut a, mut b) = (0u64, 0u64, 1u64);
    let chunk = chunk.max(1);
    let mut left = n.max(1);
    while left > 0 {
        let steps = left.min(chunk);
        for _ in 0..steps {
            (a, b) = (b, (a + b) % SEQUENCE_MODULUS);
            acc = (acc + 31 * a + 17 * b) % CHECKSUM_MODULUS;
        }
        left -= steps;
        if steps == chunk && between().is_break() {
            return None;
        }
    }
    Some(acc)
}

/// How fast [`compute`] runs on one thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KernelRate {
    /// Computations finished.
    pub(crate) computations: u64,
    /// Time they took.
    pub(crate) elapsed: std::time::Duration,
}

impl KernelRate {
    /// Computations per second.
    pub(crate) fn per_second(&self) -> f64 {
        self.computations as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `compute(n)` back to back on the calling thread for about `duration`
/// (at least once) and reports the rate. `black_box` keeps the optimizer
/// from skipping work whose result is unused.
pub(crate) fn measure_rate(n: u64, duration: std::time::Duration) -> KernelRate {
    let started = std::time::Instant::now();
    let mut computations = 0;
    loop {
        std::hint::black_box(compute(std::hint::black_box(n)));
        computations += 1;
        if started.elapsed() >= duration {
            break;
        }
    }
    KernelRate { computations, elapsed: started.elapsed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference values published with the original Python project.
    #[test]
    fn matches_the_original_reference_values() {
        let expected = [
            (0, 48),
            (1, 48),
            (2, 113),
            (10, 8360),
            (1000, 933_214_789),
            (500_000, 869_502_129),
            (1_000_000, 734_284_044),
        ];
        for (n, want) in expected {
            assert_eq!(compute(n), want, "compute({n})");
        }
    }

    #[test]
    fn chunked_computation_gives_the_same_results() {
        for n in [0, 1, 2, 9, 10, 11, 1000, 12_345] {
            let mut calls = 0;
            let chunked = compute_in_chunks(n, 10, || {
                calls += 1;
                ControlFlow::Continue(())
            });
            assert_eq!(chunked, Some(compute(n)), "n={n}");
            assert_eq!(calls, n.max(1) / 10, "n={n}");
        }
    }

    #[test]
    fn a_chunked_computation_stops_when_told() {
        let mut calls = 0;
        let stopped = compute_in_chunks(u64::MAX, 10, || {
            calls += 1;
            if calls == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!((stopped, calls), (None, 3));
    }

    #[test]
    fn measuring_the_rate_runs_at_least_once() {
        let rate = measure_rate(10, std::time::Duration::ZERO);
        assert_eq!(rate.computations, 1);
        assert!(rate.per_second() > 0.0);
    }
}
