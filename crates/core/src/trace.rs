//! OpenTelemetry traces with W3C trace context, one tracer per service.
//!
//! Every service (control plane, relay, agent) builds a [`Tracing`] from its
//! `[tracing]` config section. Each operation is one trace: the control plane
//! starts it (or continues the caller's `traceparent` gRPC metadata), the
//! relay continues it from `OperationRequest.traceparent` and hands the agent
//! its own span's context the same way, and the agent's spans include each
//! LDAP request. With `otlp_endpoint` unset (the default) nothing is exported,
//! but trace ids are still made and carried, so every operation record has
//! one to quote.
//!
//! A service owns its tracer provider instead of installing a global one, so
//! several services in one process (the integration tests' stack) each
//! report under their own `service.name`.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use serde::{Deserialize, Serialize};

pub use opentelemetry::trace::{Span, SpanKind, Status as SpanStatus};

/// The `[tracing]` section of every service's config. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// OTLP/gRPC collector to export spans to, e.g. `http://127.0.0.1:4317`
    /// (a collector next to the service; plain HTTP/2 only). Unset: spans
    /// are not exported.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces sampled, 0.0–1.0. A trace the caller started
    /// follows the caller's sampling decision.
    pub sampling_ratio: f64,
    /// Longest one export may take, seconds.
    pub export_timeout_seconds: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            sampling_ratio: 1.0,
            export_timeout_seconds: 5,
        }
    }
}

impl TracingConfig {
    /// Checks the values without setting anything up.
    pub fn validate(&self) -> Result<(), TracingError> {
        let ratio = self.sampling_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(TracingError::Config(format!(
                "sampling_ratio must be between 0.0 and 1.0, not {ratio}"
            )));
        }
        match &self.otlp_endpoint {
            Some(endpoint) if !endpoint.starts_with("http://") => {
                Err(TracingError::Config(format!(
                    "otlp_endpoint {endpoint:?}: only http:// (OTLP/gRPC to a collector next to the service) is supported"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// A config value is out of range or malformed.
    #[error("tracing config: {0}")]
    Config(String),
    /// The OTLP exporter could not be built.
    #[error("tracing: cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

/// A service's tracer; cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Tracing {
    /// Tracing for `service` (its `service.name`). Must be called inside a
    /// Tokio runtime when an endpoint is set (the gRPC exporter's channel
    /// runs on it).
    pub fn new(service: &'static str, config: &TracingConfig) -> Result<Tracing, TracingError> {
        config.validate()?;
        let ratio = config.sampling_ratio;
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(Tracing::disabled(service));
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TracingError::Exporter(
                "the exporter must be set up inside a Tokio runtime".into(),
            ));
        }
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(config.export_timeout_seconds.max(1)))
            .build()
            .map_err(|e| TracingError::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_resource(resource(service))
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer(service);
        Ok(Tracing { provider, tracer })
    }

    /// Tracing that exports nothing (ids are still made and carried).
    pub fn disabled(service: &'static str) -> Tracing {
        let provider = SdkTracerProvider::builder()
            .with_resource(resource(service))
            .with_sampler(Sampler::AlwaysOff)
            .build();
        let tracer = provider.tracer(service);
        Tracing { provider, tracer }
    }

    /// The service's tracer.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Starts a span named `name` of `kind`, child of `parent`, and returns
    /// the context holding it.
    pub fn start(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: &Context,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// Sends every finished span now (tests; shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "cannot export spans");
        }
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "tracing shutdown");
        }
    }
}

fn resource(service: &'static str) -> Resource {
    Resource::builder_empty()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The context a W3C `traceparent` names; an empty or malformed one gives
/// the empty context (a new trace is started).
pub fn from_traceparent(traceparent: &str) -> Context {
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent" && !self.0.is_empty()).then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    TraceContextPropagator::new().extract(&One(traceparent))
}

/// The context of a gRPC request's `traceparent` (and `tracestate`) metadata.
pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Context {
    struct Meta<'a>(&'a tonic::metadata::MetadataMap);
    impl Extractor for Meta<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    TraceContextPropagator::new().extract(&Meta(metadata))
}

/// The W3C `traceparent` of `cx`'s span; empty when it has none.
pub fn traceparent(cx: &Context) -> String {
    struct Out(Option<String>);
    impl Injector for Out {
        fn set(&mut self, key: &str, value: String) {
            if key == "traceparent" {
                self.0 = Some(value);
            }
        }
    }
    let mut out = Out(None);
    TraceContextPropagator::new().inject_context(cx, &mut out);
    out.0.unwrap_or_default()
}

/// The trace id of `cx`'s span as 32 hex digits; empty when it has none.
pub fn trace_id(cx: &Context) -> String {
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        sc.trace_id().to_string()
    } else {
        String::new()
    }
}

/// Ends `cx`'s span, marking it failed with `reason` unless that is `OK`.
pub fn end(cx: &Context, reason: &str) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("writeback.reason_code", reason.to_owned()));
    if reason != crate::ReasonCode::Ok.as_str() {
        span.set_status(SpanStatus::error(reason.to_owned()));
    }
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_survives_the_round_trip_and_children_keep_the_trace() {
        let tracing = Tracing::disabled("test");
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = from_traceparent(tp);
        assert_eq!(trace_id(&parent), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = tracing.start("child", SpanKind::Internal, &parent, vec![]);
        assert_eq!(trace_id(&child), "4bf92f3577b34da6a3ce929d0e0e4736");
        let out = traceparent(&child);
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(
            !out.contains("00f067aa0ba902b7"),
            "the child has its own span id: {out}"
        );
    }

    #[test]
    fn no_or_bad_traceparent_starts_a_new_trace() {
        let tracing = Tracing::disabled("test");
        for tp in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let parent = from_traceparent(tp);
            assert_eq!(trace_id(&parent), "");
            let root = tracing.start("root", SpanKind::Server, &parent, vec![]);
            assert_eq!(trace_id(&root).len(), 32, "{tp:?}");
        }
    }

    #[test]
    fn out_of_range_sampling_is_refused() {
        let config = TracingConfig {
            sampling_ratio: 1.5,
            ..TracingConfig::default()
        };
        assert!(matches!(
            Tracing::new("test", &config),
            Err(TracingError::Config(_))
        ));
        let config = TracingConfig {
            otlp_endpoint: Some("https://collector:4317".into()),
            ..TracingConfig::default()
        };
        assert!(matches!(
            Tracing::new("test", &config),
            Err(TracingError::Config(_))
        ));
    }
}
