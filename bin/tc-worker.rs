//! `tc-worker`: a worker host that joins a farm over NATS. See `tc-worker --help`.

use std::process::ExitCode;

use clap::Parser;
use threadcenter::cli::worker::{run, WorkerArgs};

fn main() -> ExitCode {
    // In process mode the workers are this binary, started with --tc-worker.
    threadcenter::work::worker_process::run_if_requested();
    match run(WorkerArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tc-worker: {e:#}");
            ExitCode::from(threadcenter::cli::exit_code_of(&e))
        }
    }
}
