//! What one source address and one tenant may take of the API (`[limits]`,
//! [`ApiLimitsConfig`]):
//!
//! | bound | where | past it |
//! |---|---|---|
//! | connections, in all and per source | `transport::tls_incoming_with` | closed as soon as accepted |
//! | TLS handshakes per source, and their time | the same | closed at once; cut at the timeout |
//! | calls per source (rate and burst) | [`PerSourceLayer`], before the call is authenticated | `RESOURCE_EXHAUSTED`, `RATE_LIMITED` |
//! | calls per tenant (rate and burst) | [`ApiLimits::check_tenant`], as each call is authenticated | the same |
//! | calls at once per connection, time per call | tonic (`max_requests_per_connection`, `request_timeout_seconds`) | wait their turn; `DEADLINE_EXCEEDED` |
//!
//! A refusal carries a retry time (`retry-after`, `google.rpc.RetryInfo`).
//! Sources are counted by [`writeback_identity::limits::source_of`] (an
//! IPv6 client by its /64).

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, Ready, ready};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use writeback_core::rate::KeyedRate;
use writeback_core::{Failure, ReasonCode};
use writeback_identity::limits::source_of;
use writeback_identity::transport::HandshakeLimits;

use crate::config::ApiLimitsConfig;

/// The API's rate limits, shared by every connection.
#[derive(Debug)]
pub struct ApiLimits {
    per_source: KeyedRate<IpAddr>,
    per_tenant: KeyedRate<String>,
}

impl ApiLimits {
    /// The rates of `config`.
    pub fn new(config: &ApiLimitsConfig) -> Arc<ApiLimits> {
        Arc::new(ApiLimits {
            per_source: KeyedRate::per_minute(
                config.calls_per_minute_per_source,
                config.burst_per_source,
            ),
            per_tenant: KeyedRate::per_minute(
                config.calls_per_minute_per_tenant,
                config.burst_per_tenant,
            ),
        })
    }

    /// One call from `ip`, or `RATE_LIMITED`.
    pub fn check_source(&self, ip: IpAddr) -> Result<(), Status> {
        self.per_source.check(&source_of(ip)).map_err(|wait| {
            tracing::debug!(source = %source_of(ip), "call refused: the source's rate limit");
            rate_limited("from this address", wait)
        })
    }

    /// One call of `tenant`'s, or `RATE_LIMITED`.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), Status> {
        self.per_tenant.check(&tenant.to_owned()).map_err(|wait| {
            tracing::info!(tenant, "call refused: the tenant's rate limit");
            rate_limited("for this tenant", wait)
        })
    }

    /// A layer refusing the calls of a source past its rate.
    pub fn per_source_layer(self: &Arc<Self>) -> PerSourceLayer {
        PerSourceLayer(self.clone())
    }
}

fn rate_limited(whose: &str, wait: Duration) -> Status {
    Failure::new(
        ReasonCode::RateLimited,
        format!(
            "too many calls {whose}; retry in {} s",
            wait.as_secs().max(1)
        ),
    )
    .with_retry_after(wait)
    .into()
}

/// The handshake and connection bounds of `config` for the TLS listener.
pub fn handshake_limits(config: &ApiLimitsConfig) -> HandshakeLimits {
    HandshakeLimits {
        max_in_flight_per_source: config.max_handshakes_per_source,
        timeout: Duration::from_secs(config.handshake_timeout_seconds),
        max_connections: config.max_connections,
        max_connections_per_source: config.max_connections_per_source,
        ..HandshakeLimits::default()
    }
}

/// Refuses a call whose source ([`writeback_identity::PeerInfo`]) is past
/// its rate, before any service sees it.
#[derive(Debug, Clone)]
pub struct PerSourceLayer(Arc<ApiLimits>);

impl<S> tower::Layer<S> for PerSourceLayer {
    type Service = PerSource<S>;

    fn layer(&self, inner: S) -> PerSource<S> {
        PerSource {
            inner,
            limits: self.0.clone(),
        }
    }
}

/// The service of [`PerSourceLayer`].
#[derive(Debug, Clone)]
pub struct PerSource<S> {
    inner: S,
    limits: Arc<ApiLimits>,
}

impl<S> tower::Service<http::Request<Body>> for PerSource<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<http::Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let source = req
            .extensions()
            .get::<writeback_identity::PeerInfo>()
            .map(|p| p.remote_addr.ip());
        if let Some(ip) = source
            && let Err(status) = self.limits.check_source(ip)
        {
            return Either::Left(ready(Ok(status.into_http())));
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_rate_limited_with_a_retry_time() {
        let limits = ApiLimits::new(&ApiLimitsConfig {
            calls_per_minute_per_tenant: 1,
            burst_per_tenant: 1,
            ..ApiLimitsConfig::default()
        });
        assert!(limits.check_tenant("t1").is_ok());
        let refused = limits.check_tenant("t1").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let f = writeback_core::failure_of(&refused);
        assert_eq!(f.reason, ReasonCode::RateLimited);
        assert!(f.retry_after.is_some_and(|d| d.as_secs() >= 1));
        assert!(limits.check_tenant("t2").is_ok());
    }
}
