//! **Client side** — everything `tc-client` runs: talking to a server,
//! generating load, and reporting what was measured. Nothing here runs inside
//! `tc-server`; the one file that starts a server in-process for
//! `--embedded` is [`bench::embedded`].
//!
//! | module | owns |
//! |---|---|
//! | [`connection`] | one blocking framed connection, and the one-shot `call` |
//! | [`shell`] | the interactive prompt (`tc-client shell`) |
//! | [`bench`] | the load generator: options, connection drivers, recording, sweeps |
//! | [`report`] | what a run measured, and one exporter per output format |
//! | [`plot`] | charts drawn from sweep CSVs and `.hgrm` files |
//! | [`sweep`] | a grid of embedded runs appended to one CSV |
//! | [`progress`] | the live progress bar |
//! | [`run`] | what each `tc-client` subcommand does with its flags |

pub mod bench;
pub mod connection;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run;
pub mod shell;
pub mod sweep;

pub use run::{run, RunVerdict};
