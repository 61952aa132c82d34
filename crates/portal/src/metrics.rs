//! The portal's Prometheus metrics (served on `metrics_listen` when set, see
//! [`writeback_core::metrics`]): requests by route, method and status and
//! their time, sign-ins by outcome, live sessions, and the process figures.
//! Labels are route templates (`/helpdesk/user`), never a path with a user
//! name or a query string in it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use writeback_core::metrics::seconds_histogram;

use crate::App;
use crate::session::Sessions;

/// Labels of one answered request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

/// Labels by route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// Labels of a sign-in's end.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// How a sign-in ended, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInOutcome {
    /// Signed in.
    Ok,
    /// The provider refused (`error` in the answer).
    Refused,
    /// The answer did not match a sign-in in progress (no session, wrong
    /// state, no code).
    Mismatched,
    /// The code exchange or the ID token check failed.
    Failed,
}

impl SignInOutcome {
    fn label(self) -> &'static str {
        match self {
            SignInOutcome::Ok => "ok",
            SignInOutcome::Refused => "refused",
            SignInOutcome::Mismatched => "mismatched",
            SignInOutcome::Failed => "failed",
        }
    }
}

/// The portal's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    /// What `/metrics` serves.
    pub registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    sign_ins: Family<OutcomeLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Registers every metric (and a gauge of `sessions`) in a new registry.
    pub fn new(sessions: Arc<Sessions>) -> Metrics {
        let mut r = writeback_core::metrics::registry();
        let requests = Family::<RequestLabels, Counter>::default();
        r.register(
            "portal_requests",
            "Requests answered, by route template, method and HTTP status.",
            requests.clone(),
        );
        let duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        r.register(
            "portal_request_duration_seconds",
            "Time to answer a request (control-plane calls included), by route template.",
            duration.clone(),
        );
        let sign_ins = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "portal_sign_ins",
            "Sign-ins through the identity provider that came back, by outcome (ok, refused, \
             mismatched, failed).",
            sign_ins.clone(),
        );
        r.register_collector(Box::new(SessionCollector(sessions)));
        Metrics {
            registry: Arc::new(r),
            requests,
            duration,
            sign_ins,
        }
    }

    /// A sign-in came back and ended with `outcome`.
    pub fn sign_in(&self, outcome: SignInOutcome) {
        self.sign_ins
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    fn answered(&self, route: String, method: String, status: u16, started: Instant) {
        self.duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }
}

/// Middleware: counts and times every request by its route template
/// (`unmatched` for a path no route serves).
pub(crate) async fn count(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics
        .answered(route, method, response.status().as_u16(), started);
    response
}

#[derive(Debug)]
struct SessionCollector(Arc<Sessions>);

impl Collector for SessionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (anonymous, signed_in) = self.0.counts();
        let mut family = encoder.encode_descriptor(
            "portal_sessions",
            "Sessions held, signed in or not (a sign-in in progress), expired ones included \
             until they are next swept.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (state, n) in [("anonymous", anonymous), ("signed_in", signed_in)] {
            let g = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            g.encode(family.encode_family(&StateLabels { state })?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}
