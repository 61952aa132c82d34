//! What one source address may take of the portal (`[limits]`,
//! [`PortalLimits`]), and the answer past a limit:
//!
//! | bound | where | past it |
//! |---|---|---|
//! | connections, in all and per source | [`crate::serve`], as each is accepted | closed at once |
//! | TLS handshake time | the same | closed |
//! | time to send a request's headers | hyper's `header_read_timeout` | closed |
//! | sign-ins started per source (rate and burst) | `GET /signin`, [`Limits::sign_in`] | `429`, [`too_many`] |
//! | sessions in all, sign-ins in progress per source | [`crate::session::Sessions::create`] | `503` [`busy`] / `429` |
//!
//! Sources are counted by [`writeback_identity::limits::source_of`] (an
//! IPv6 client by its /64). Every refusal page says when to come back, and
//! so does its `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use writeback_core::rate::KeyedRate;
use writeback_identity::limits::{SourceSlots, source_of};

use crate::config::PortalLimits;
use crate::layout::{Viewer, outcome, page};
use crate::strings;

/// The connection's remote address, put in every request's extensions by
/// [`crate::serve`].
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The portal's rate limits and connection places.
#[derive(Debug)]
pub struct Limits {
    /// The configured bounds.
    pub config: PortalLimits,
    signins: KeyedRate<IpAddr>,
    /// Connections open, in all and per source.
    pub connections: Arc<SourceSlots>,
}

impl Limits {
    /// The bounds of `config`.
    pub fn new(config: &PortalLimits) -> Limits {
        Limits {
            signins: KeyedRate::per_minute(
                config.signins_per_minute_per_source,
                config.signin_burst_per_source,
            ),
            connections: SourceSlots::new(
                config.max_connections,
                config.max_connections_per_source,
            ),
            config: config.clone(),
        }
    }

    /// One sign-in started from `peer`, or the [`too_many`] answer.
    pub(crate) fn sign_in(&self, peer: Option<Peer>) -> Result<(), Box<Response>> {
        let Some(Peer(addr)) = peer else {
            return Ok(());
        };
        self.signins.check(&source_of(addr.ip())).map_err(|wait| {
            tracing::debug!(source = %source_of(addr.ip()), "sign-in refused: the source's rate limit");
            Box::new(too_many(wait))
        })
    }
}

/// `429 Too Many Requests`: the page and `Retry-After` (seconds).
pub(crate) fn too_many(retry_after: Duration) -> Response {
    let when = strings::retry_in(retry_after.as_secs().max(1));
    refusal(
        StatusCode::TOO_MANY_REQUESTS,
        retry_after,
        html! { (outcome("RATE_LIMITED", "", Some(&when))) },
    )
}

/// `503 Service Unavailable`: every session is taken; the page and
/// `Retry-After`.
pub(crate) fn busy(retry_after: Duration) -> Response {
    let when = strings::retry_in(retry_after.as_secs().max(1));
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        retry_after,
        html! { div.outcome.error role="alert" { p { (strings::BUSY) } p { strong { (when) } } } },
    )
}

fn refusal(status: StatusCode, retry_after: Duration, what: maud::Markup) -> Response {
    let seconds = retry_after.as_secs().max(1);
    let body = page(
        strings::TOO_MANY_TITLE,
        &Viewer::default(),
        html! {
            (what)
            a.button href="/me" { (strings::TRY_AGAIN) }
        },
    );
    let mut response = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}
