//! The agent's Prometheus metrics (served on `metrics_listen` when set, see
//! [`writeback_core::metrics`]): operations by kind and reason code and the
//! agent's time per operation ([`crate::executor`]), every LDAP request's time
//! by kind and the sessions open ([`crate::directory`]), and — read at each
//! scrape from the last background checks — whether the service account holds
//! its rights and how many policy warnings stand; and when its certificate
//! expires.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use writeback_core::metrics::{KindLabels, seconds_histogram};

use crate::health::HealthHandle;

/// Labels of one operation's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// reset, change, forced_change, unlock (empty if unreadable).
    pub kind: String,
    /// The reason code answered.
    pub reason: String,
}

/// The executor's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    operations: Family<OperationLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
}

impl Metrics {
    /// Registers the operation metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "agent_operations",
            "Operations this agent answered, by kind and reason code.",
            operations.clone(),
        );
        let duration =
            Family::<KindLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        registry.register(
            "agent_operation_duration_seconds",
            "Time the agent spent on an operation, directory round trips included.",
            duration.clone(),
        );
        Metrics {
            operations,
            duration,
        }
    }

    /// One operation answered.
    pub fn operation(&self, kind: &str, reason: &str, took: Duration) {
        self.operations
            .get_or_create(&OperationLabels {
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}

/// Registers the health figures, read from `checks` at each scrape.
pub fn register_health(registry: &mut Registry, checks: HealthHandle) {
    registry.register_collector(Box::new(HealthCollector { checks }));
}

/// Registers `writeback_agent_certificate_expiry_timestamp_seconds`, read
/// from `certificate` (the runtime's, updated at each renewal) at each
/// scrape.
pub fn register_certificate(
    registry: &mut Registry,
    certificate: tokio::sync::watch::Receiver<writeback_identity::Validity>,
) {
    registry.register_collector(Box::new(CertificateCollector { certificate }));
}

#[derive(Debug)]
struct CertificateCollector {
    certificate: tokio::sync::watch::Receiver<writeback_identity::Validity>,
}

impl Collector for CertificateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let expiry = ConstGauge::new(self.certificate.borrow().not_after.unix_timestamp());
        expiry.encode(encoder.encode_descriptor(
            "agent_certificate_expiry_timestamp_seconds",
            "When the agent's certificate expires (Unix seconds); it renews it with a third \
             of its lifetime left.",
            None,
            expiry.metric_type(),
        )?)?;
        Ok(())
    }
}

#[derive(Debug)]
struct HealthCollector {
    checks: HealthHandle,
}

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = self.checks.current();
        if c.checked_at.is_none() {
            return Ok(());
        }
        let ok = ConstGauge::new(i64::from(c.permissions_ok));
        ok.encode(encoder.encode_descriptor(
            "agent_permissions_ok",
            "1 when the service account held every right writeback needs at the last check.",
            None,
            ok.metric_type(),
        )?)?;
        let warnings = ConstGauge::new(i64::try_from(c.policy_warnings.len()).unwrap_or(i64::MAX));
        warnings.encode(encoder.encode_descriptor(
            "agent_policy_warnings",
            "Password-policy warnings at the last check.",
            None,
            warnings.metric_type(),
        )?)?;
        Ok(())
    }
}

/// A whole agent's registry: the process, the directory (when given) and the
/// executor's metrics.
pub fn registry() -> (Registry, Metrics) {
    let mut r = writeback_core::metrics::registry();
    let m = Metrics::register(&mut r);
    (r, m)
}
