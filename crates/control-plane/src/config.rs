//! Control plane configuration (`writeback-control-plane serve --config
//! cp.toml`, with `WRITEBACK_CP_…` environment overrides).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The control plane's config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlPlaneConfig {
    /// Holds the CA (`ca.pem`, `ca.key`) and, by default, the SQLite database.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty means `<data_dir>/writeback.db`.
    pub database_url: String,
    /// Address for the client-facing gRPC API (TLS, bearer tokens).
    pub listen: SocketAddr,
    /// DNS names in the API's server certificate.
    pub tls_dns_names: Vec<String>,
    /// IP addresses in the API's server certificate.
    pub tls_ip_addresses: Vec<IpAddr>,
    /// Relays the control plane dispatches through, `https://host:port`.
    pub relay_urls: Vec<String>,
    /// Relay URLs handed to agents at enrollment; empty means `relay_urls`.
    pub agent_relay_urls: Vec<String>,
    /// How long an operation may take end to end, seconds.
    pub operation_timeout_seconds: u64,
    /// Password resets allowed per target user per hour (every recorded
    /// reset counts, whatever its outcome); 0 turns the throttle off.
    pub throttle_per_user_per_hour: u32,
    /// Lifetime of enrollment tokens, seconds (default for requests that give none).
    pub enrollment_token_ttl_seconds: u64,
    /// Oldest agent version considered complete in `status`.
    pub min_agent_version: String,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP); off when
    /// unset. Use loopback or a management network.
    pub metrics_listen: Option<SocketAddr>,
    /// Sign-in through OpenID Connect providers (the issuers themselves are
    /// configured per tenant through the API).
    pub oidc: OidcConfig,
}

/// How the control plane talks to identity providers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// Extra CA certificates (PEM) trusted for identity providers' https,
    /// beside the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Keys older than this are fetched again, seconds.
    pub jwks_refresh_seconds: u64,
    /// An issuer's keys are fetched at most once per this many seconds
    /// (also when tokens name unknown key ids).
    pub jwks_min_refetch_seconds: u64,
    /// Timeout of each request to an identity provider, seconds.
    pub http_timeout_seconds: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            ca_file: None,
            jwks_refresh_seconds: 3600,
            jwks_min_refetch_seconds: 10,
            http_timeout_seconds: 5,
        }
    }
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            data_dir: PathBuf::from("/var/lib/writeback"),
            database_url: String::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls_dns_names: vec!["localhost".into()],
            tls_ip_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            relay_urls: Vec::new(),
            agent_relay_urls: Vec::new(),
            operation_timeout_seconds: 30,
            throttle_per_user_per_hour: 5,
            enrollment_token_ttl_seconds: 3600,
            min_agent_version: "0.1.0".into(),
            metrics_listen: None,
            oidc: OidcConfig::default(),
        }
    }
}

impl ControlPlaneConfig {
    /// The database URL, defaulting to SQLite in the data dir.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("writeback.db").display()
            )
        } else {
            self.database_url.clone()
        }
    }

    /// Relay URLs for agents.
    pub fn agent_relay_urls(&self) -> Vec<String> {
        if self.agent_relay_urls.is_empty() {
            self.relay_urls.clone()
        } else {
            self.agent_relay_urls.clone()
        }
    }
}
