//! **Client side** — everything `tc-client` runs: talking to a server,
//! generating load, and reporting what was measured. Nothing here runs inside
//! `tc-server`.
//!
//! | module | owns |
//! |---|---|
//! | [`connection`] | one blocking framed connection, and the one-shot `call` |
//! | [`shell`] | the interactive prompt (`tc-client shell`) |
//! | [`bench`] | the load generator: options, connection drivers, recording, sweeps |
//! | [`report`] | what a run measured, and one exporter per output format |
//! | [`plot`] | charts drawn from sweep CSVs and `.hgrm` files |

pub mod bench;
pub mod connection;
pub mod plot;
pub mod report;
pub mod shell;
