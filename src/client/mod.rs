//! **Client side** — everything `tc-client` runs: talking to a server,
//! generating load, and reporting what was measured. Nothing here runs inside
//! `tc-server`; the one file that starts a server in-process for
//! `--embedded` is [`bench::embedded`].
//!
//! | module | owns |
//! |---|---|
//! | [`connection`] | one blocking framed connection, and the one-shot `call` |
//! | [`interrupt`] | Ctrl-C during a run: stop, report what was measured, exit 130 |
//! | [`shell`] | the interactive prompt (`tc-client shell`), and `call`'s request |
//! | [`predict`] | `tc-client predict IMAGE...`: the request from files, the reply in words |
//! | [`mod@bench`] | the load generator: options, connection drivers, recording, sweeps |
//! | [`report`] | what a run measured, and one exporter per output format |
//! | [`compare`] | `tc-client compare`: runs' JSON reports side by side, with Welch's t-test |
//! | [`metrics`] | `tc-client --metrics-addr`: the run as Prometheus metrics while it goes |
//! | [`merge`] | `tc-client merge`: several clients' interval logs as one result (histograms added) |
//! | [`plot`] | charts drawn from sweep CSVs and `.hgrm` files |
//! | [`sweep`] | a grid of embedded runs appended to one CSV |
//! | [`progress`] | the live progress bar |
//! | [`live`] | `tc-client --live`: the full-screen view of a run |
//! | [`output`] | how `call`, `kernel` and `model` print their answer |
//! | [`mod@run`] | what each `tc-client` subcommand does with its flags |
//! | [`tls`] | `--tls`: which server certificate to trust, and the client's own |

/// A line for the user on stderr that never stops the client: unlike
/// `eprintln!`, which panics when stderr is closed (a reader that went
/// away, a test that read one line and let go), it drops the line instead.
/// The run and its reports matter more than a message nobody can read.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use say;

pub(crate) mod bench;
pub(crate) mod compare;
pub(crate) mod connection;
pub(crate) mod interrupt;
pub(crate) mod live;
pub(crate) mod merge;
pub(crate) mod metrics;
pub(crate) mod output;
pub(crate) mod plot;
pub(crate) mod predict;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod shell;
pub(crate) mod sweep;
pub(crate) mod tls;

pub use run::{run, RunVerdict};
