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
