//! `tc-client`: benchmarks and talks to a ThreadCenter server. See `tc-client --help`.

use std::process::ExitCode;

use threadcenter::cli::client::ClientArgs;
use threadcenter::client::run;

fn main() -> ExitCode {
    // `--embedded` in process mode re-executes this binary as the workers.
    threadcenter::work::worker_process::run_if_requested();
    match run(ClientArgs::parse_command_line()) {
        Ok(verdict) => ExitCode::from(verdict.exit_code()),
        Err(e) => {
            let code = e.exit_code();
            // `{:#}` prints the error and every cause after it, on one line.
            eprintln!("tc-client: {:#}", anyhow::Error::from(e));
            ExitCode::from(code)
        }
    }
}
