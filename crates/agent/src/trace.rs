//! The agent's part of an operation's trace: one span per operation,
//! continuing the relay's (`OperationRequest.traceparent`), and inside it
//! one span per LDAP request (connect, search, modify) to the domain
//! controller. The spans of the LDAP requests are made where their time is
//! already measured (`directory::session`, `directory::pool`), from the
//! operation's context, which travels with the operation's future; the same
//! place adds up the time spent in the directory and notes the DC that
//! answered, which the result reports to the control plane.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use writeback_core::trace::{self, Tracing};
use writeback_proto::v1::{OperationRequest, OperationResult};

/// What one operation's LDAP requests added up to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DirectoryTime {
    /// Time in LDAP requests (connect included).
    pub total: Duration,
    /// The DC of the last request.
    pub dc_url: Option<String>,
}

/// Carried in the operation's [`Context`] while it runs.
#[derive(Clone)]
struct RequestTrace {
    tracing: Tracing,
    time: Arc<Mutex<DirectoryTime>>,
}

/// Runs `work` (the agent's handling of `op`) inside a span continuing the
/// operation's trace, and fills in the result's directory time and DC.
pub async fn traced<F>(tracing: &Tracing, op: &OperationRequest, work: F) -> OperationResult
where
    F: Future<Output = OperationResult>,
{
    let cx = tracing.start(
        "writeback.agent.apply",
        SpanKind::Server,
        &trace::from_traceparent(&op.traceparent),
        vec![
            KeyValue::new("writeback.operation_id", op.operation_id.clone()),
            KeyValue::new("writeback.domain", op.domain.clone()),
        ],
    );
    // `op` is only read above: `work` may own its own copy.
    let requests = RequestTrace {
        tracing: tracing.clone(),
        time: Arc::default(),
    };
    let mut result = work.with_context(cx.with_value(requests.clone())).await;
    let time = requests
        .time
        .lock()
        .map(|t| t.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    result.directory_duration_ms = u64::try_from(time.total.as_millis()).unwrap_or(u64::MAX);
    result.dc_url = time.dc_url.unwrap_or_default();
    cx.span()
        .set_attribute(KeyValue::new("writeback.agent_id", result.agent_id.clone()));
    if !result.dc_url.is_empty() {
        cx.span()
            .set_attribute(KeyValue::new("server.address", result.dc_url.clone()));
    }
    let reason = result
        .outcome
        .as_ref()
        .map_or("", |o| o.reason_code.as_str());
    trace::end(&cx, reason);
    result
}

/// Records one LDAP request of kind `op` (connect, search, modify) to `url`
/// that began at `started`, when it belongs to a traced operation.
pub(crate) fn request(op: &'static str, url: &str, started: Instant) {
    let took = started.elapsed();
    let cx = Context::current();
    let Some(requests) = cx.get::<RequestTrace>() else {
        return;
    };
    let tracer = requests.tracing.tracer();
    let mut span = tracer
        .span_builder(format!("ldap {op}"))
        .with_kind(SpanKind::Client)
        .with_start_time(SystemTime::now() - took)
        .with_attributes(vec![
            KeyValue::new("ldap.operation", op),
            KeyValue::new("server.address", url.to_owned()),
        ])
        .start_with_context(tracer, &cx);
    opentelemetry::trace::Span::end(&mut span);
    let mut time = requests.time.lock().unwrap_or_else(|e| e.into_inner());
    time.total += took;
    time.dc_url = Some(url.to_owned());
}
