//! `tc-server`: the compute farm. See `tc-server --help`.

use std::process::ExitCode;

use clap::Parser;
use threadcenter::cli::server::{run, ServerArgs};

fn main() -> ExitCode {
    // A worker process is this same binary, started with --tc-worker.
    threadcenter::work::worker_process::run_if_requested();
    match run(ServerArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tc-server: {e:#}");
            ExitCode::from(threadcenter::cli::exit_code_of(&e))
        }
    }
}
