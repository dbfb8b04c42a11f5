//! `tc-client`: benchmarks and talks to a ThreadCenter server. See `tc-client --help`.

use std::process::ExitCode;

use clap::Parser;
use threadcenter::cli::client::{run, ClientArgs, RunVerdict};

fn main() -> ExitCode {
    // `--embedded` in process mode re-executes this binary as the workers.
    threadcenter::work::worker_process::run_if_requested();
    match run(ClientArgs::parse()) {
        Ok(RunVerdict::Success) => ExitCode::SUCCESS,
        Ok(RunVerdict::Failure) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tc-client: {e:#}");
            ExitCode::from(2)
        }
    }
}
