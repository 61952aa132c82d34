//! TLS transports for tonic built on our own rustls configs, so the
//! verifiers in [`crate::tls`] decide who may connect.
//!
//! - Servers: [`tls_incoming`] turns a `TcpListener` into the stream of
//!   authenticated connections `serve_with_incoming` wants. Handshakes run
//!   concurrently (a slow client cannot stall the accept loop), at most
//!   [`MAX_HANDSHAKES`] at once and each within [`HANDSHAKE_TIMEOUT`]: a
//!   flood of connections that never finish their handshake (or cost the
//!   server a certificate verification each) waits in the kernel's backlog
//!   instead of taking memory and CPU without bound. With
//!   [`tls_incoming_with`] one source address may also be held to a share
//!   of the handshakes and of the open connections, and the connections to
//!   a total ([`HandshakeLimits`], counted by [`crate::limits::SourceSlots`]):
//!   a connection past a cap is closed as soon as it is accepted. Failures
//!   are logged and dropped. Every request's extensions then hold a
//!   [`PeerInfo`] with the client certificate's identity.
//! - Clients: [`channel`] builds a lazy tonic `Channel` whose connector
//!   dials TCP and performs the TLS handshake with the given config.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::limits::{SourceSlot, SourceSlots};
use crate::{Error, SpiffeId};

/// How long a client gets to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes a server runs at once; further connections are not
/// accepted until one ends.
pub const MAX_HANDSHAKES: usize = 256;

/// Limits on the handshakes and connections of [`tls_incoming_with`].
/// The default bounds handshakes only: [`MAX_HANDSHAKES`] at once, each
/// within [`HANDSHAKE_TIMEOUT`].
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// Handshakes in progress at once (at least 1).
    pub max_in_flight: usize,
    /// Handshakes in progress at once from one source address
    /// ([`crate::limits::source_of`]); a connection past it is closed at once.
    pub max_in_flight_per_source: usize,
    /// Time a client gets to finish its handshake.
    pub timeout: Duration,
    /// Connections open at once (in handshake or handshaken, until closed);
    /// a connection past it is closed at once.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_connections_per_source: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_in_flight: MAX_HANDSHAKES,
            max_in_flight_per_source: MAX_HANDSHAKES,
            timeout: HANDSHAKE_TIMEOUT,
            max_connections: usize::MAX,
            max_connections_per_source: usize::MAX,
        }
    }
}

/// Who is on the other end of a server connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Identity from the verified client certificate, if one was presented.
    pub identity: Option<SpiffeId>,
    /// SHA-256 (lowercase hex) of that certificate's DER, if one was
    /// presented ([`crate::tls::fingerprint_of`]): which of an agent's
    /// certificates this is (a renewed one, or one it superseded).
    pub cert_fingerprint: Option<String>,
    /// Remote socket address.
    pub remote_addr: SocketAddr,
}

/// A server-side TLS connection that reports its [`PeerInfo`] to tonic.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
    /// Its place among the connections, given back when it closes.
    _slot: SourceSlot,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Starts accepting on `listener` and returns the stream of handshaken
/// connections for `serve_with_incoming`; the accept task ends when the
/// stream is dropped. Handshakes are limited by [`HandshakeLimits::default`].
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    tls_incoming_with(listener, config, HandshakeLimits::default())
}

/// [`tls_incoming`] with explicit handshake limits.
pub fn tls_incoming_with(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: HandshakeLimits,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight.max(1)));
    let connections = SourceSlots::new(limits.max_connections, limits.max_connections_per_source);
    let handshakes = SourceSlots::new(usize::MAX, limits.max_in_flight_per_source);
    tokio::spawn(async move {
        loop {
            // A slot first: past the limit, connections wait in the backlog.
            let slot = tokio::select! {
                s = Arc::clone(&slots).acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
                () = tx.closed() => return,
            };
            let (tcp, remote_addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            // Past a cap the connection is closed at once: it holds no
            // handshake slot and no memory.
            let conn_slot = match connections.take(remote_addr.ip()) {
                Ok(s) => s,
                Err(why) => {
                    tracing::debug!(%remote_addr, ?why, "connection refused: too many open");
                    continue;
                }
            };
            let Ok(source_handshake) = handshakes.take(remote_addr.ip()) else {
                tracing::debug!(%remote_addr, "connection refused: too many handshakes from its source");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(limits.timeout, acceptor.accept(tcp)).await;
                drop(slot);
                drop(source_handshake);
                match handshake {
                    Ok(Ok(inner)) => {
                        let leaf = inner
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first());
                        let peer = PeerInfo {
                            identity: leaf.and_then(crate::tls::spiffe_id_of),
                            cert_fingerprint: leaf.map(crate::tls::fingerprint_of),
                            remote_addr,
                        };
                        let conn = TlsConn {
                            inner,
                            peer,
                            _slot: conn_slot,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%remote_addr, error = %e, "tls handshake refused")
                    }
                    Err(_) => tracing::info!(%remote_addr, "tls handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Host and port of an `https://host:port` URL.
pub fn host_port(url: &str) -> Result<(String, u16), Error> {
    let bad = |why: &str| Error::Url(url.to_owned(), why.to_owned());
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// A lazy channel to `url` (`https://host:port`) over TLS with `config`.
/// The server name checked against the certificate is the URL's host.
pub fn channel(url: &str, config: Arc<rustls::ClientConfig>) -> Result<Channel, Error> {
    let (host, port) = host_port(url)?;
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| Error::Url(url.to_owned(), "invalid server name".into()))?;
    let connector = TlsConnector::from(config);
    let endpoint = Endpoint::from_shared(format!("http://{}", authority(&host, port)))
        .map_err(|e| Error::Url(url.to_owned(), e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let addr = authority(&host, port);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let addr = addr.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        })),
    )
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connects to `url` and completes a TLS handshake with `config`, then
/// hangs up: a pre-flight that turns a certificate problem into a precise
/// error before any RPC is attempted.
pub async fn check_handshake(url: &str, config: Arc<rustls::ClientConfig>) -> Result<(), Error> {
    let (host, port) = host_port(url)?;
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| Error::Url(url.to_owned(), "invalid server name".into()))?;
    let io = |e: io::Error| Error::Io(url.to_owned(), e);
    let tcp = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TcpStream::connect(authority(&host, port)),
    )
    .await
    .map_err(|_| io(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
    .map_err(io)?;
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| {
        io(io::Error::new(
            io::ErrorKind::TimedOut,
            "tls handshake timed out",
        ))
    })?
    .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use tokio_stream::StreamExt;

    use super::*;

    /// One handshake slot: a client that connects and says nothing holds it,
    /// so a real client's handshake waits until the silent one times out —
    /// then completes and reaches the server.
    #[tokio::test]
    async fn handshakes_beyond_the_limit_wait_for_a_slot() {
        crate::install_crypto_provider();
        let ca = crate::Ca::generate("t").unwrap();
        let (chain, key) = ca
            .issue_server(&[], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        let server = crate::tls::server_config(&chain, &key, None).unwrap();
        let client =
            crate::tls::client_config(crate::tls::roots_from_pem(ca.cert_pem()).unwrap(), None)
                .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let limits = HandshakeLimits {
            max_in_flight: 1,
            timeout: Duration::from_secs(2),
            ..HandshakeLimits::default()
        };
        let mut incoming = tls_incoming_with(listener, server, limits);

        let silent = TcpStream::connect(url.trim_start_matches("https://"))
            .await
            .unwrap();
        // Let the accept loop take the silent connection first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let handshake = tokio::spawn({
            let (url, client) = (url.clone(), client.clone());
            async move { check_handshake(&url, client).await }
        });
        let conn = tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let waited = started.elapsed();
        handshake.await.unwrap().unwrap();
        assert!(
            waited >= Duration::from_millis(1500),
            "the second handshake ran beside the first: {waited:?}"
        );
        assert_eq!(conn.peer.remote_addr.ip().to_string(), "127.0.0.1");
        drop(silent);

        // With the slot free, a handshake proceeds at once.
        let started = Instant::now();
        check_handshake(&url, client).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// The control plane's API certificate passes both ways an agent dials
    /// it (enrollment, pinned by CA fingerprint; renewal, with the CA); a
    /// relay's certificate from the same CA with the same host name fails
    /// both with [`crate::tls::NOT_THE_CONTROL_PLANE`], and so does one
    /// with no identity (what the API presented before it had one).
    #[tokio::test]
    async fn only_the_control_plane_api_passes_for_the_control_plane() {
        crate::install_crypto_provider();
        let ca = crate::Ca::generate("t").unwrap();
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let relay = SpiffeId::Relay {
            tenant: "t".into(),
            relay_id: "r1".into(),
        };
        let servers = [
            ("api", ca.issue_control_plane_api(&[], &[ip]).unwrap()),
            ("relay", ca.issue_service(&relay, &[], &[ip]).unwrap()),
            ("no identity", ca.issue_server(&[], &[ip]).unwrap()),
        ];
        let renewing = crate::tls::control_plane_client_config(
            crate::tls::roots_from_pem(ca.cert_pem()).unwrap(),
            None,
        )
        .unwrap();
        let enrolling = crate::tls::pinned_client_config(&ca.fingerprint()).unwrap();
        for (what, (chain, key)) in servers {
            let server = crate::tls::server_config(&chain, &key, None).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("https://{}", listener.local_addr().unwrap());
            let _incoming = tls_incoming(listener, server);
            for client in [renewing.clone(), enrolling.clone()] {
                let r = check_handshake(&url, client).await;
                if what == "api" {
                    assert!(r.is_ok(), "{what}: {r:?}");
                } else {
                    let e = r.unwrap_err().to_string();
                    assert!(e.contains(crate::tls::NOT_THE_CONTROL_PLANE), "{what}: {e}");
                }
            }
        }
    }

    #[test]
    fn urls_must_be_https_with_a_host() {
        assert_eq!(
            host_port("https://127.0.0.1:7443").unwrap(),
            ("127.0.0.1".to_owned(), 7443)
        );
        assert_eq!(host_port("https://[::1]:9").unwrap(), ("::1".to_owned(), 9));
        assert!(host_port("http://127.0.0.1:1").is_err());
        assert!(host_port("nonsense").is_err());
    }
}
