//! The control plane's Prometheus metrics (served on `metrics_listen` when set,
//! see [`writeback_core::metrics`]): every password operation by kind, domain,
//! origin (client app) and reason code, the control plane's total time and the
//! agent's time per operation, throttle refusals, authentication failures,
//! agents' results refused for their signature, and how long the store takes
//! to answer an operation's reads and to write its record (`record`: the
//! pending record, with the throttle's count; `finish`: the outcome).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use writeback_core::metrics::{KindLabels, seconds_histogram};

/// Labels of one operation's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// reset, change, forced_change, unlock.
    pub kind: String,
    /// The target's domain; empty when the request was refused before it was known.
    pub domain: String,
    /// The client app (the seed's "origin").
    pub origin: String,
    /// The reason code answered.
    pub reason: String,
}

/// Labels of one store write of an operation's life.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `record` (the pending record) or `finish` (the outcome).
    pub stage: &'static str,
}

/// The control plane's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    /// What `/metrics` serves.
    pub registry: Arc<Registry>,
    operations: Family<OperationLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    agent_duration: Family<KindLabels, Histogram>,
    store_reads: Histogram,
    store_writes: Family<WriteLabels, Histogram>,
    throttled: Counter,
    auth_failures: Counter,
    results_refused: Family<DetailLabels, Counter>,
}

/// Why a result was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetailLabels {
    /// `unsigned`, `bad_signature`, `unregistered_agent`… (see
    /// [`crate::security_audit::SecurityAudit::result_refused`]).
    pub detail: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Metrics {
        let mut r = writeback_core::metrics::registry();
        let operations = Family::<OperationLabels, Counter>::default();
        r.register(
            "operations",
            "Password operations answered, by kind, domain, origin and reason code.",
            operations.clone(),
        );
        let duration =
            Family::<KindLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        r.register(
            "operation_duration_seconds",
            "Time from request to answer in the control plane, per operation.",
            duration.clone(),
        );
        let agent_duration =
            Family::<KindLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        r.register(
            "agent_duration_seconds",
            "Time the agent spent on an operation (directory round trips included), as it reported.",
            agent_duration.clone(),
        );
        let store_reads = seconds_histogram();
        r.register(
            "store_read_duration_seconds",
            "Time the store took for the reads that decide an operation.",
            store_reads.clone(),
        );
        let store_writes =
            Family::<WriteLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        r.register(
            "store_write_duration_seconds",
            "Time the store took to write an operation's record, by stage (record: pending, \
             with the throttle's count; finish: the outcome).",
            store_writes.clone(),
        );
        let throttled = Counter::default();
        r.register(
            "throttled",
            "Password resets refused with THROTTLED.",
            throttled.clone(),
        );
        let auth_failures = Counter::default();
        r.register(
            "authentication_failures",
            "Requests refused for a missing, unknown, expired or revoked bearer token.",
            auth_failures.clone(),
        );
        let results_refused = Family::<DetailLabels, Counter>::default();
        r.register(
            "results_refused",
            "Agents' results refused because they were not signed with the agent's recorded \
             result-signing key (forged or altered in transit, or an unregistered agent), by why.",
            results_refused.clone(),
        );
        Metrics {
            results_refused,
            registry: Arc::new(r),
            operations,
            duration,
            agent_duration,
            store_reads,
            store_writes,
            throttled,
            auth_failures,
        }
    }

    /// One operation answered.
    pub fn operation(&self, labels: OperationLabels, took: Duration, agent: Option<Duration>) {
        let kind = KindLabels {
            kind: labels.kind.clone(),
        };
        self.operations.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&kind)
            .observe(took.as_secs_f64());
        if let Some(a) = agent {
            self.agent_duration
                .get_or_create(&kind)
                .observe(a.as_secs_f64());
        }
    }

    /// The store answered an operation's reads after `took`.
    pub fn store_read(&self, took: Duration) {
        self.store_reads.observe(took.as_secs_f64());
    }

    /// The store wrote an operation's record at `stage` after `took`.
    pub fn store_write(&self, stage: &'static str, took: Duration) {
        self.store_writes
            .get_or_create(&WriteLabels { stage })
            .observe(took.as_secs_f64());
    }

    /// A reset refused with THROTTLED.
    pub fn throttled(&self) {
        self.throttled.inc();
    }

    /// A result refused for its signature (`detail` says why).
    pub fn result_refused(&self, detail: &str) {
        self.results_refused
            .get_or_create(&DetailLabels {
                detail: detail.to_owned(),
            })
            .inc();
    }

    /// A request refused for its bearer token.
    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }
}
