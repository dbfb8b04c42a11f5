//! **Shared by `tc-server` and `tc-worker`** — the runtime both processes
//! run around their jobs: the worker pool and its supervision, and the
//! operator's HTTP endpoint with the OpenMetrics writer its `/metrics` pages
//! are made of. Nothing here knows of job ports, clients or NATS: a server
//! feeds the pool from its readers, a worker host from the jobs it pulls,
//! and each side serves its own pages ([`crate::server::pages`],
//! [`crate::host::pages`]) on the endpoint.
//!
//! | module | owns |
//! |---|---|
//! | [`pool`] | the workers (threads or processes), the board of what each is doing, the queues they take from, restarts |
//! | [`http`] | `--metrics-addr`: one small tokio runtime serving `/metrics`, `/healthz`, `/readyz` and, on a server, the dashboard's stream |
//! | [`metrics`] | writing an OpenMetrics exposition, one call per family |

pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod pool;
