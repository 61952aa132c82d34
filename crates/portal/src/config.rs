//! The portal's configuration (`writeback-portal serve --config portal.toml`,
//! with `WRITEBACK_PORTAL_…` environment overrides).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The portal's config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// Where to listen (HTTPS).
    pub listen: SocketAddr,
    /// The URL people use, e.g. `https://passwords.contoso.com`; the
    /// sign-in redirect URI is `<public_url>/callback`.
    pub public_url: String,
    /// The portal's TLS certificate chain (PEM).
    pub tls_cert_file: PathBuf,
    /// Its private key (PEM).
    pub tls_key_file: PathBuf,
    /// The control plane's API, `https://host:port`.
    pub control_plane_url: String,
    /// The CA the control plane's certificate chains to (the tenant CA).
    pub control_plane_ca_file: PathBuf,
    /// The tenant's OpenID Connect provider.
    pub oidc: OidcConfig,
    /// Idle sessions end after this many seconds (and never outlive the
    /// access token).
    pub session_idle_seconds: u64,
    /// Prometheus `GET /metrics` (plain HTTP, unauthenticated: loopback or a
    /// management network); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// What one source address may take of the portal (see `limits`).
    pub limits: PortalLimits,
}

/// `[limits]`: bounds on what one source address can take of the portal,
/// so that one of them cannot keep it busy for everyone. Sources are IPv4
/// addresses and IPv6 /64 prefixes as the portal sees them: behind a NAT
/// or a reverse proxy everyone behind it is one source, so raise the
/// per-source limits to match. A sign-in past a limit is answered `429`
/// (`503` when all sessions are taken) with a page and `Retry-After`; a
/// connection past a cap is closed as soon as it is accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalLimits {
    /// Sessions held at once, signed in or not (a hard cap: past it, after
    /// the idle ones are dropped, no sign-in starts).
    pub max_sessions: usize,
    /// Sessions of sign-ins started from one source and not finished.
    pub max_pending_signins_per_source: usize,
    /// Sign-ins (`GET /signin`) one source may start per minute on average
    /// (0: no limit).
    pub signins_per_minute_per_source: u32,
    /// Sign-ins one source may start at once above that average.
    pub signin_burst_per_source: u32,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one source (a browser opens a few).
    pub max_connections_per_source: usize,
    /// Time a client gets to finish its TLS handshake, seconds.
    pub handshake_timeout_seconds: u64,
    /// Time a client gets to send a request's headers, seconds (also how
    /// long an idle kept-alive connection waits for its next request).
    pub header_read_timeout_seconds: u64,
}

impl Default for PortalLimits {
    fn default() -> Self {
        PortalLimits {
            max_sessions: 100_000,
            max_pending_signins_per_source: 100,
            signins_per_minute_per_source: 30,
            signin_burst_per_source: 20,
            max_connections: 4096,
            max_connections_per_source: 64,
            handshake_timeout_seconds: 10,
            header_read_timeout_seconds: 10,
        }
    }
}

/// Signing people in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The issuer URL (discovery is fetched from it).
    pub issuer: String,
    /// The portal's client id (registered with writeback as origin
    /// "portal": `writebackctl idp client add … --client-app portal`).
    pub client_id: String,
    /// File holding the client secret.
    pub client_secret_file: PathBuf,
    /// Extra CA certificates for the provider's https, beside the system's.
    pub ca_file: Option<PathBuf>,
    /// Scopes asked for at every sign-in besides `openid`, e.g. the API's
    /// audience scope.
    pub scopes: Vec<String>,
    /// Scopes asked for a strong sign-in (self-service reset and unlock),
    /// e.g. one the provider grants only after MFA.
    pub strong_scopes: Vec<String>,
    /// `acr_values` asked for a strong sign-in, when the provider uses them.
    pub strong_acr_values: Vec<String>,
    /// The ID-token claim holding the user's UPN.
    pub principal_claim: String,
    /// An RFC 8707 resource indicator sent with the authorization and token
    /// requests (the control plane's audience), for providers that set `aud`
    /// from it.
    pub resource: Option<String>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8444)),
            public_url: "https://localhost:8444".into(),
            tls_cert_file: PathBuf::from("/etc/writeback/portal.pem"),
            tls_key_file: PathBuf::from("/etc/writeback/portal.key"),
            control_plane_url: "https://127.0.0.1:8443".into(),
            control_plane_ca_file: PathBuf::from("/var/lib/writeback/ca.pem"),
            oidc: OidcConfig::default(),
            session_idle_seconds: 900,
            metrics_listen: None,
            limits: PortalLimits::default(),
        }
    }
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: String::new(),
            client_id: "writeback-portal".into(),
            client_secret_file: PathBuf::from("/etc/writeback/portal-client-secret"),
            ca_file: None,
            scopes: Vec::new(),
            strong_scopes: Vec::new(),
            strong_acr_values: Vec::new(),
            principal_claim: "upn".into(),
            resource: None,
        }
    }
}
