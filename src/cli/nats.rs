//! The NATS connection flags shared by `tc-server --nats` and `tc-worker`:
//! the options the engine itself supports, passed through.

use std::path::PathBuf;

use crate::remote::connect::NatsOptions;

/// How to authenticate to NATS and verify it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NatsAuthArgs {
    /// NATS credentials file (JWT and nkey seed, as `nsc` writes it).
    #[arg(help_heading = "Worker hosts (NATS)", long, env = "THREADCENTER_NATS_CREDS")]
    pub(crate) nats_creds: Option<PathBuf>,

    /// NATS user name (with --nats-password).
    #[arg(
        help_heading = "Worker hosts (NATS)",
        long,
        env = "THREADCENTER_NATS_USER",
        requires = "nats_password"
    )]
    pub(crate) nats_user: Option<String>,

    /// NATS password (with --nats-user).
    #[arg(
        help_heading = "Worker hosts (NATS)",
        long,
        env = "THREADCENTER_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub(crate) nats_password: Option<String>,

    /// NATS token.
    #[arg(
        help_heading = "Worker hosts (NATS)",
        long,
        env = "THREADCENTER_NATS_TOKEN",
        hide_env_values = true
    )]
    pub(crate) nats_token: Option<String>,

    /// CA certificate (PEM) of a NATS server that uses TLS; turns TLS on.
    #[arg(help_heading = "Worker hosts (NATS)", long, env = "THREADCENTER_NATS_TLS_CA")]
    pub(crate) nats_tls_ca: Option<PathBuf>,

    /// The farm's shared secret (a file of at least 32 bytes, the same on
    /// every gateway and host; make one with head -c 32 /dev/urandom |
    /// base64): every job, result and heartbeat is signed with it and
    /// unsigned ones are dropped. Without it anyone who can publish to the
    /// NATS server can give the farm work (a warning says so at start).
    #[arg(help_heading = "Worker hosts (NATS)", long, env = "THREADCENTER_FARM_KEY", value_name = "FILE")]
    pub(crate) farm_key: Option<PathBuf>,
}

impl NatsAuthArgs {
    /// The connection options for `url`.
    pub(crate) fn options(&self, url: &str) -> NatsOptions {
        NatsOptions {
            url: url.to_string(),
            creds: self.nats_creds.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            farm_key: self.farm_key.clone(),
        }
    }
}
