//! `tc-client`: talks to a ThreadCenter server. See `tc-client --help`.

use std::process::ExitCode;

use clap::Parser;
use threadcenter::cli::client::{run, ClientArgs, Outcome};

fn main() -> ExitCode {
    match run(ClientArgs::parse()) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tc-client: {e:#}");
            ExitCode::from(2)
        }
    }
}
