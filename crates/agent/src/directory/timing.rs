//! How long each LDAP request takes, by kind (`connect` covers TCP, TLS and the
//! bind of a new session), how many sessions the pool holds and whether each
//! DC answered its last connection — the directory's part of the agent's
//! metrics ([`crate::metrics`]).

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use writeback_core::metrics::seconds_histogram;

use super::Directory;

/// Labels by LDAP request kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    op: String,
}

/// Request times; cheap to clone.
#[derive(Clone)]
pub(crate) struct Timings(Family<RequestLabels, Histogram>);

impl Default for Timings {
    fn default() -> Self {
        Timings(Family::new_with_constructor(seconds_histogram as fn() -> _))
    }
}

impl Timings {
    pub(crate) fn observe(&self, op: &str, took: Duration) {
        self.0
            .get_or_create(&RequestLabels { op: op.to_owned() })
            .observe(took.as_secs_f64());
    }
}

impl Directory {
    /// Registers the directory's request times and session counts in `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "agent_ldap_request_duration_seconds",
            "Time of each LDAP request to a domain controller, by kind (connect: TCP, TLS and bind).",
            self.inner.pool.timings().0.clone(),
        );
        registry.register_collector(Box::new(SessionCollector {
            directory: self.clone(),
        }));
    }
}

#[derive(Debug)]
struct SessionCollector {
    directory: Directory,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DcLabels {
    dc: String,
}

impl Collector for SessionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (idle, in_use) = self.directory.inner.pool.counts();
        let mut family = encoder.encode_descriptor(
            "agent_ldap_sessions",
            "LDAPS sessions to the domain controllers, idle or in use.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (state, n) in [("idle", idle), ("in_use", in_use)] {
            let g = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            g.encode(family.encode_family(&StateLabels { state })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "agent_dc_up",
            "1 unless the last connection to this domain controller failed (it is then \
             skipped with a backoff until a connection or health probe succeeds).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (dc, up) in self.directory.inner.pool.dc_states() {
            let g = ConstGauge::new(i64::from(up));
            g.encode(family.encode_family(&DcLabels { dc })?)?;
        }
        Ok(())
    }
}
