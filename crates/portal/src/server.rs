//! The accept loop: TLS on each connection, then HTTP/1.1 to the router.
//! Each connection takes a place among `limits.max_connections` and its
//! source's `limits.max_connections_per_source` as it is accepted (past
//! either it is closed at once), has `limits.handshake_timeout_seconds` to
//! finish its TLS handshake and `limits.header_read_timeout_seconds` to
//! send each request's headers (also how long a kept-alive connection may
//! sit idle). Every request carries the connection's [`Peer`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use tower::ServiceExt as _;

use crate::App;
use crate::limits::Peer;

/// Puts the connection's [`Peer`] in each of its requests.
fn with_peer<B>(peer: SocketAddr) -> impl Fn(Request<B>) -> Request<B> + Clone {
    move |mut r| {
        r.extensions_mut().insert(Peer(peer));
        r
    }
}

/// Serves `router(app)` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let chain = std::fs::read_to_string(&app.config.tls_cert_file)?;
    let key = std::fs::read_to_string(&app.config.tls_key_file)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        writeback_identity::tls::certs_from_pem(&chain)?,
        writeback_identity::tls::key_from_pem(&key)?,
    )?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let limits = &app.limits.config;
    let handshake_timeout = Duration::from_secs(limits.handshake_timeout_seconds.max(1));
    let header_timeout = Duration::from_secs(limits.header_read_timeout_seconds.max(1));
    let connections = app.limits.connections.clone();
    let service = crate::router(app.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return Ok(()),
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait, never stop serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match connections.take(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%peer, ?why, "connection refused: too many open");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = service.clone().map_request(with_peer(peer));
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Ok(stream)) =
                tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
            else {
                tracing::debug!(%peer, "TLS handshake failed or timed out");
                return;
            };
            let hyper_service = hyper_util::service::TowerToHyperService::new(service);
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .http1_only();
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper_service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}
