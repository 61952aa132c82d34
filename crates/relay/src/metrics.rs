//! The relay's Prometheus metrics (served on `metrics_listen` when set, see
//! [`writeback_core::metrics`]): operations routed by reason code (`OVERLOADED`
//! among them), the time from dispatch to the agent's answer, and — read from
//! the registry at each scrape — tunnels open, agents online and operations
//! outstanding per domain; and when the relay's certificate expires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use writeback_core::metrics::seconds_histogram;

use crate::registry::Registry;

/// Labels by reason code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason answered (`OK` when an agent answered, whatever it said).
    pub reason: String,
}

/// The relay's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    /// What `/metrics` serves.
    pub registry: Arc<prometheus_client::registry::Registry>,
    dispatches: Family<ReasonLabels, Counter>,
    transit: Histogram,
    certificate_expiry: Gauge,
}

impl Metrics {
    /// Registers every metric, reading tunnels from `tunnels` at each scrape.
    pub fn new(tunnels: Registry) -> Metrics {
        let mut r = writeback_core::metrics::registry();
        let dispatches = Family::<ReasonLabels, Counter>::default();
        r.register(
            "relay_dispatches",
            "Operations the control plane dispatched, by the relay's answer: OK when an \
             agent answered, else the reason it was not routed (OVERLOADED, NO_AGENT_ONLINE, …).",
            dispatches.clone(),
        );
        let transit = seconds_histogram();
        r.register(
            "relay_dispatch_duration_seconds",
            "Time from a dispatch's arrival to the agent's answer (queue, tunnel and agent).",
            transit.clone(),
        );
        r.register_collector(Box::new(TunnelCollector { tunnels }));
        let certificate_expiry = Gauge::default();
        r.register(
            "relay_certificate_expiry_timestamp_seconds",
            "When the relay's certificate expires (Unix seconds): re-issue it with \
             `writeback-control-plane relay-cert` before then; the relay reloads its files.",
            certificate_expiry.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            dispatches,
            transit,
            certificate_expiry,
        }
    }

    /// The certificate being served expires at `unix_seconds`.
    pub fn certificate_expires(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }

    /// A dispatch answered with `reason` after `took`.
    pub fn dispatched(&self, reason: &str, took: Duration) {
        self.dispatches
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
        self.transit.observe(took.as_secs_f64());
    }
}

/// Tunnels and agents, read from the registry at each scrape.
#[derive(Debug)]
struct TunnelCollector {
    tunnels: Registry,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    tenant: String,
    domain: String,
}

impl Collector for TunnelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let open = ConstGauge::new(self.tunnels.len() as i64);
        open.encode(encoder.encode_descriptor(
            "relay_tunnels_open",
            "Agent tunnels open.",
            None,
            open.metric_type(),
        )?)?;
        let mut per_domain: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
        for conn in self.tunnels.all_agents() {
            let e = per_domain
                .entry((conn.identity.tenant.clone(), conn.identity.domain.clone()))
                .or_default();
            e.0 += 1;
            e.1 += i64::try_from(conn.outstanding()).unwrap_or(i64::MAX);
        }
        let mut online = encoder.encode_descriptor(
            "relay_agents_online",
            "Agents with a live tunnel, per domain.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ((tenant, domain), (count, _)) in &per_domain {
            let labels = DomainLabels {
                tenant: tenant.clone(),
                domain: domain.clone(),
            };
            ConstGauge::new(*count).encode(online.encode_family(&labels)?)?;
        }
        let mut queued = encoder.encode_descriptor(
            "relay_outstanding_operations",
            "Operations sent to the domain's agents and not yet answered.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ((tenant, domain), (_, outstanding)) in &per_domain {
            let labels = DomainLabels {
                tenant: tenant.clone(),
                domain: domain.clone(),
            };
            ConstGauge::new(*outstanding).encode(queued.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
