//! The live progress bar of a benchmark, on stderr, drawn only when stderr
//! is a terminal (so piped and CI output stays clean).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::client::bench::options::{BenchOptions, StopAfter, Warmup};
use crate::client::bench::ProgressCounters;

/// The live progress bar on stderr, drawn only when stderr is a terminal.
pub(crate) struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ProgressDisplay {
    /// No progress line (the live view draws instead).
    pub(crate) fn none() -> Self {
        ProgressDisplay { stop: Arc::new(AtomicBool::new(false)), thread: None }
    }

    /// Starts drawing (when asked for and stderr is a terminal).
    pub(crate) fn start(options: &BenchOptions, counters: Arc<ProgressCounters>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !options.progress || !std::io::stderr().is_terminal() {
            return ProgressDisplay { stop, thread: None };
        }
        let (length, by_time) = match options.stop {
            StopAfter::Requests(n) => ((n + options.warmup_requests()) * options.concurrency as u64, false),
            StopAfter::Duration(d) => {
                let warmup = match options.warmup {
                    Warmup::Duration(w) => w,
                    _ => Duration::ZERO,
                };
                (u64::try_from((d + warmup).as_millis()).unwrap_or(u64::MAX), true)
            }
        };
        let bar = indicatif::ProgressBar::new(length);
        let template = if by_time {
            "{elapsed_precise} [{bar:30}] {msg}"
        } else {
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let flag = Arc::clone(&stop);
        // This thread only reads counters the connections bump: `Relaxed`
        // is enough, since a bar a few requests behind is still right. It
        // polls every 100 ms — a person cannot read faster — rather than
        // being woken per request, which would cost the measured path.
        let thread = thread::spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let done = counters.done.load(Ordering::Relaxed);
                let problems = counters.problems.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_position(if by_time { started.elapsed().as_millis() as u64 } else { done });
                bar.set_message(format!("{rate:.0} req/s, {problems} errors"));
                thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        ProgressDisplay { stop, thread: Some(thread) }
    }

    /// Stops drawing and clears the bar.
    pub(crate) fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread {
            let _ = thread.join();
        }
    }
}
