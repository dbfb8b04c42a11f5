//! The host as a NATS "micro" service, so NATS's own tools list the hosts:
//! `nats micro ls` and `nats micro stats tc-worker` (or a request to
//! `$SRV.PING`, `$SRV.INFO.tc-worker`, `$SRV.STATS.tc-worker`). Each host is
//! one instance of the service `tc-worker`, with its name, mode and slots in
//! the metadata, and one endpoint, `tc.host.<name>.status`, that answers
//! with the host's latest heartbeat (also the `data` of its stats).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_nats::service::ServiceExt;
use futures_util::StreamExt;

use super::HostConfig;
use crate::error::{Error, Result};
use crate::remote::wire::Heartbeat;

/// The service's name on NATS.
pub(crate) const SERVICE_NAME: &str = "tc-worker";

/// Registers the service and starts answering its endpoint; the returned
/// task is aborted when the host stops.
///
/// # Errors
/// NATS refuses the service's subscriptions.
pub(crate) async fn register(
    client: &async_nats::Client,
    config: &HostConfig,
    status: Arc<Mutex<Heartbeat>>,
) -> Result<tokio::task::JoinHandle<()>> {
    let metadata = HashMap::from([
        ("host".to_string(), config.name.clone()),
        ("mode".to_string(), config.pool.mode.as_str().to_string()),
        ("slots".to_string(), config.pool.workers.to_string()),
    ]);
    let for_stats = Arc::clone(&status);
    let service = client
        .service_builder()
        .description("ThreadCenter worker host")
        .metadata(metadata)
        .stats_handler(move |_endpoint, _stats| {
            serde_json::to_value(&*for_stats.lock().unwrap_or_else(PoisonError::into_inner))
                .unwrap_or_default()
        })
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| Error::Remote(format!("cannot register the NATS service {SERVICE_NAME}: {e}")))?;
    let subject = format!("tc.host.{}.status", config.name);
    let mut endpoint = service
        .endpoint(subject.as_str())
        .await
        .map_err(|e| Error::Remote(format!("cannot serve {subject}: {e}")))?;
    Ok(tokio::spawn(async move {
        // The service lives as long as this task holds it.
        let _service = service;
        while let Some(request) = endpoint.next().await {
            let body = serde_json::to_vec(&*status.lock().unwrap_or_else(PoisonError::into_inner))
                .unwrap_or_default();
            let _ = request.respond(Ok(body.into())).await;
        }
    }))
}
