//! `tc-client`: benchmarks and talks to a ThreadCenter server. See `tc-client --help`.

use std::process::ExitCode;

use clap::Parser;
use threadcenter::cli::client::{run, ClientArgs, Outcome};

fn main() -> ExitCode {
    // `--embedded` in process mode re-executes this binary as the workers.
    threadcenter::pool::worker_process::run_if_requested();
    match run(ClientArgs::parse()) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tc-client: {e:#}");
            ExitCode::from(2)
        }
    }
}
