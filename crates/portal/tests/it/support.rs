//! A portal on `127.0.0.1:<port>`, and a raw HTTPS client that dials it
//! from a chosen loopback address (every `127.0.0.0/8` address is on `lo`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{
    CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreResponseType,
    CoreSubjectIdentifierType,
};
use openidconnect::{
    AuthUrl, EmptyAdditionalProviderMetadata, IssuerUrl, JsonWebKeySetUrl, ResponseTypes, TokenUrl,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use writeback_identity::{Ca, tls};
use writeback_portal::config::{OidcConfig, PortalConfig, PortalLimits};
use writeback_portal::{App, signin::SignIn};

/// The provider's authorization endpoint (never reached).
pub const AUTHORIZE: &str = "https://idp.invalid/authorize";

/// A portal serving on loopback until dropped.
pub struct TestPortal {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub app: Arc<App>,
    client: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestPortal {
    /// Serves a portal with `limits`.
    pub async fn start(limits: PortalLimits) -> TestPortal {
        writeback_identity::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("portal").unwrap();
        let (chain, key) = ca
            .issue_server(&[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let config = PortalConfig {
            listen: addr,
            public_url: format!("https://{addr}"),
            tls_cert_file: file("portal.pem", &chain),
            tls_key_file: file("portal.key", &key),
            control_plane_url: "https://127.0.0.1:9".into(),
            control_plane_ca_file: file("cp-ca.pem", ca.cert_pem()),
            oidc: OidcConfig {
                issuer: "https://idp.invalid".into(),
                client_secret_file: file("secret", "s3cret"),
                ..OidcConfig::default()
            },
            limits,
            ..PortalConfig::default()
        };
        let metadata = CoreProviderMetadata::new(
            IssuerUrl::new("https://idp.invalid".into()).unwrap(),
            AuthUrl::new(AUTHORIZE.into()).unwrap(),
            JsonWebKeySetUrl::new("https://idp.invalid/jwks".into()).unwrap(),
            vec![ResponseTypes::new(vec![CoreResponseType::Code])],
            vec![CoreSubjectIdentifierType::Public],
            vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256],
            EmptyAdditionalProviderMetadata {},
        )
        .set_token_endpoint(Some(
            TokenUrl::new("https://idp.invalid/token".into()).unwrap(),
        ))
        .set_jwks(CoreJsonWebKeySet::new(vec![]));
        let http = reqwest::Client::builder().build().unwrap();
        let signin =
            SignIn::with_metadata(metadata, &config.oidc, &config.public_url, http).unwrap();
        let app = App::with_sign_in(config, signin).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(writeback_portal::serve(app.clone(), listener, async {
            let _ = stopped.await;
        }));
        let mut client = (*tls::client_config(tls::roots_from_pem(ca.cert_pem()).unwrap(), None)
            .unwrap())
        .clone();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        TestPortal {
            addr,
            app,
            client: Arc::new(client),
            _dir: dir,
            _stop: stop,
        }
    }

    /// The TLS client config trusting the portal.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// A TCP connection to the portal from `source`, nothing sent.
    pub async fn dial(&self, source: Ipv4Addr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        socket.connect(self.addr).await.unwrap()
    }

    /// `GET path` from `source` over a connection of its own: the status
    /// and the whole answer (head and body); `None` when the connection is
    /// refused or closed before an answer.
    pub async fn get(&self, source: Ipv4Addr, path: &str) -> Option<(u16, String)> {
        let tcp = self.dial(source).await;
        let connector = tokio_rustls::TlsConnector::from(self.client.clone());
        let name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let mut tls = connector.connect(name, tcp).await.ok()?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        tls.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.split(' ').nth(1)?.parse().ok()?;
        Some((status, answer))
    }
}

/// Whether the server closed `tcp` (EOF or reset) within `within`.
pub async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, tcp.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// A header of a raw HTTP answer, by its lowercase name.
pub fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        (n.trim().eq_ignore_ascii_case(name)).then(|| v.trim())
    })
}
