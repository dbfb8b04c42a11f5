//! Ctrl-C (SIGINT) and SIGTERM while `tc-client` measures.
//!
//! The first signal asks the run to stop: senders send nothing more,
//! receivers give the requests in flight a short grace to be answered, and
//! the client then reports and writes everything that was measured, marked
//! *interrupted*, and exits with [`EXIT_CODE`] — as wrk and oha print what
//! they measured when interrupted. A second signal exits at once.
//!
//! The flag is process-wide because a signal is: the handler thread (from the
//! `ctrlc` crate) sets it, and the run's threads poll it between requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Exit code of an interrupted run (128 + SIGINT, as shells report it).
pub(crate) const EXIT_CODE: u8 = 130;

/// Set by the first SIGINT/SIGTERM. `SeqCst`: set once, read rarely.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process; later calls do nothing).
///
/// # Errors
/// When another signal handler was already installed in this process.
pub(crate) fn install() -> crate::error::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = ctrlc::set_handler(|| {
            if REQUESTED.swap(true, Ordering::SeqCst) {
                crate::client::say!("\ntc-client: interrupted again, exiting without a report");
                std::process::exit(i32::from(EXIT_CODE));
            }
            crate::client::say!(
                "\ntc-client: interrupted, stopping; the report covers what was measured \
                 (press Ctrl-C again to exit at once)"
            );
        })
        .map_err(|e| crate::error::Error::Usage(format!("cannot catch Ctrl-C: {e}")));
    });
    result
}

/// Whether the run was asked to stop (a signal, or [`abort`]).
pub(crate) fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Stops the run as the first Ctrl-C would, from the live view (in raw
/// mode the terminal sends Ctrl-C as a key, not a signal); `why` is said
/// once the terminal is back.
pub(crate) fn request_stop(why: &str) {
    if !REQUESTED.swap(true, Ordering::SeqCst) {
        let _ = STOPPED_BY.set(why.to_string());
    }
}

/// What stopped the run from the live view, to tell the user afterwards.
static STOPPED_BY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Said after the live view has given the terminal back.
pub(crate) fn stopped_by() -> Option<&'static str> {
    STOPPED_BY.get().map(String::as_str)
}

/// Why `--abort-on-fail` stopped the run; set once.
static ABORTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Stops the run as a signal would — senders stop, replies in flight get
/// their grace — but for `reason` (a threshold crossed), so it is
/// reported as aborted, not interrupted.
pub(crate) fn abort(reason: String) {
    if ABORTED.set(reason).is_ok() {
        REQUESTED.store(true, Ordering::SeqCst);
    }
}

/// The reason given to [`abort`], if it was called.
pub(crate) fn aborted() -> Option<String> {
    ABORTED.get().cloned()
}
