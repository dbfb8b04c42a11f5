//! The server's pages on the operator's endpoint ([`crate::runtime::http`]):
//! `/metrics` read from its farm, `/healthz`, `/readyz`, and the live
//! dashboard with its stream (`--dashboard`, see [`super::watch`]).

use std::sync::Arc;

use super::{metrics, Farm};
use crate::runtime::http::{EventHub, Greeter, Live, Pages};
use crate::runtime::metrics::render;

/// The dashboard: one page, styles and script inline, compiled in (a
/// classroom may have no internet, so nothing is fetched from elsewhere).
const DASHBOARD: &str = include_str!("watch/dashboard.html");

/// The server's pages: its farm, and the registry that reads it.
pub(super) struct ServerPages {
    farm: Arc<Farm>,
    registry: prometheus_client::registry::Registry,
    /// The dashboard's stream and its greeter, when the server has one.
    live: Option<(Arc<EventHub>, Arc<dyn Greeter>)>,
}

impl ServerPages {
    /// The pages of `farm`, with the dashboard's stream when there is one.
    pub(super) fn new(farm: Arc<Farm>, live: Option<(Arc<EventHub>, Arc<dyn Greeter>)>) -> ServerPages {
        let registry = metrics::registry(Arc::clone(&farm));
        ServerPages { farm, registry, live }
    }
}

impl Pages for ServerPages {
    fn metrics(&self) -> String {
        render(&self.registry)
    }

    fn health(&self) -> serde_json::Value {
        let farm = &self.farm;
        serde_json::json!({
            "status": "ok",
            "instance": farm.stats.instance(),
            "uptime_s": farm.stats.uptime_s(),
            "draining": farm.draining.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    fn readiness(&self) -> (bool, serde_json::Value) {
        let readiness = self.farm.readiness();
        (readiness.is_ready(), serde_json::to_value(&readiness).unwrap_or_default())
    }

    fn live(&self) -> Option<Live<'_>> {
        self.live.as_ref().map(|(hub, greeter)| Live { page: DASHBOARD, hub, greeter: greeter.as_ref() })
    }
}
