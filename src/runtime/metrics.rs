//! Writing an OpenMetrics exposition: what both `/metrics` pages (the
//! server's, [`crate::server::metrics`], and a worker host's,
//! [`crate::host::pages`]) are made with. Nothing here knows what is
//! counted; each side's collector reads its own state on every scrape and
//! writes it through [`Families`], one call per metric family.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The metric name prefix.
pub(crate) const PREFIX: &str = "threadcenter";

/// The content type of the exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes the whole exposition, ending with OpenMetrics' `# EOF`.
pub(crate) fn render(registry: &Registry) -> String {
    let mut text = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; an error here would be a bug in a
    // collector, and a scrape is better answered partly than not at all.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    text
}

/// Writes metric families into an encoder, one call per family (shared by
/// the server's and the worker host's collectors).
pub(crate) struct Families<'a, 'e> {
    pub(crate) encoder: &'a mut DescriptorEncoder<'e>,
}

impl Families<'_, '_> {
    /// A counter.
    pub(crate) fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let metric = ConstCounter::new(value);
        metric.encode(self.encoder.encode_descriptor(name, help, None, metric.metric_type())?)
    }

    /// A counter family with one sample per label set.
    pub(crate) fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) -> fmt::Result {
        let mut family = self.encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A histogram family in seconds, one histogram per command.
    pub(crate) fn histograms<'h>(
        &mut self,
        name: &str,
        help: &str,
        by_command: impl IntoIterator<Item = (&'static str, &'h Histogram)>,
    ) -> fmt::Result {
        let unit = Some(&Unit::Seconds);
        let mut family = self.encoder.encode_descriptor(name, help, unit, MetricType::Histogram)?;
        for (command, histogram) in by_command {
            histogram.encode(family.encode_family(&[("command", command)])?)?;
        }
        Ok(())
    }

    /// A gauge.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        let metric = ConstGauge::new(value);
        metric.encode(self.encoder.encode_descriptor(name, help, None, metric.metric_type())?)
    }

    /// A gauge family with one sample per label set.
    pub(crate) fn gauges<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, i64)>,
    ) -> fmt::Result {
        let mut family = self.encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge in seconds.
    pub(crate) fn gauge_seconds(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        let metric = ConstGauge::new(value);
        metric.encode(self.encoder.encode_descriptor(
            name,
            help,
            Some(&Unit::Seconds),
            metric.metric_type(),
        )?)
    }

    /// An info metric: `NAME_info{labels} 1`.
    pub(crate) fn info(&mut self, name: &str, help: &str, labels: &[(&str, &str)]) -> fmt::Result {
        let mut metric = self.encoder.encode_descriptor(name, help, None, MetricType::Info)?;
        metric.encode_info(&labels)
    }
}
