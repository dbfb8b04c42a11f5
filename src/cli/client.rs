//! `tc-client`: flags, and the functions behind each subcommand.

use std::time::Duration;

use clap::{Parser, Subcommand};

use super::units::parse_duration;

/// The ThreadCenter client.
#[derive(Debug, Parser)]
#[command(name = "tc-client", version, about, long_about = None)]
pub struct ClientArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClientCommand,
}

/// `tc-client` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Send one request and print the reply, e.g. tc-client call '{"cmd":"stats"}'.
    /// An "id" is added when the request has none. Exits with 1 when the
    /// reply is an error.
    Call(CallArgs),
}

/// Flags of `tc-client call`.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The request, as a JSON object.
    pub request: String,

    /// Server host.
    #[arg(long, env = "THREADCENTER_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Server port.
    #[arg(long, env = "THREADCENTER_PORT", default_value_t = 5050)]
    pub port: u16,

    /// How long to wait for the connection and the reply (seconds, or 500ms, 10s, 1m...).
    #[arg(long, env = "THREADCENTER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What the process should exit with after a subcommand ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked.
    Success,
    /// The run completed but found a problem (e.g. an error reply).
    Failure,
}

/// Runs a `tc-client` subcommand.
///
/// # Errors
/// A connection or protocol error, as one sentence naming host and port.
pub fn run(args: ClientArgs) -> anyhow::Result<Outcome> {
    match args.command {
        ClientCommand::Call(call) => {
            let reply = crate::client::call(&call.host, call.port, &call.request, call.timeout)?;
            println!("{reply}");
            let is_error = serde_json::from_str::<serde_json::Value>(&reply)
                .map(|v| v.get("error").is_some())
                .unwrap_or(true);
            Ok(if is_error {
                Outcome::Failure
            } else {
                Outcome::Success
            })
        }
    }
}
