//! Relay configuration: the TOML/env form ([`RelayConfig`]) and the
//! resolved form the library runs with ([`RelayOptions`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use writeback_core::trace::TracingConfig;

use serde::{Deserialize, Serialize};

/// The relay's config file (`writeback-relay --config relay.toml`), with
/// `WRITEBACK_RELAY_…` environment overrides.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Instance id, reported to the control plane and in audit records.
    pub relay_id: String,
    /// Tenant whose agents and control plane this relay serves.
    pub tenant: String,
    /// Address to listen on for agents and the control plane.
    pub listen: SocketAddr,
    /// Certificate chain (PEM) with the relay identity and its DNS/IP SANs.
    pub cert_file: PathBuf,
    /// Private key (PEM) of `cert_file`.
    pub key_file: PathBuf,
    /// Tenant CA (PEM); clients must present certificates from it.
    pub ca_file: PathBuf,
    /// Seconds between heartbeats agents are asked to send.
    pub heartbeat_interval_seconds: u32,
    /// Heartbeats an agent may miss before its tunnel is dropped.
    pub heartbeat_misses: u32,
    /// Operations sent to one agent and not yet answered (running or waiting
    /// for one of its slots) before new ones get OVERLOADED.
    pub agent_queue_depth: usize,
    /// Largest gRPC message accepted or sent, bytes.
    pub max_message_bytes: usize,
    /// Tunnels one agent identity may be opening or holding at once (a
    /// reconnect storm gets OVERLOADED beyond it).
    pub max_tunnels_per_agent: usize,
    /// Seconds in-flight operations may still finish after a shutdown
    /// told every agent GoAway.
    pub shutdown_grace_seconds: u32,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP); off when
    /// unset. Use loopback or a management network.
    pub metrics_listen: Option<SocketAddr>,
    /// OpenTelemetry trace export (off by default).
    pub tracing: TracingConfig,
}

impl RelayConfig {
    /// The limits this config asks for.
    pub fn limits(&self) -> crate::Limits {
        crate::Limits {
            queue_depth: self.agent_queue_depth.max(1),
            max_tunnels_per_agent: self.max_tunnels_per_agent.max(1),
            shutdown_grace: Duration::from_secs(u64::from(self.shutdown_grace_seconds)),
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            relay_id: "relay-1".into(),
            tenant: String::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            cert_file: PathBuf::from("relay.pem"),
            key_file: PathBuf::from("relay.key"),
            ca_file: PathBuf::from("ca.pem"),
            heartbeat_interval_seconds: 15,
            heartbeat_misses: 3,
            agent_queue_depth: 256,
            max_message_bytes: 256 * 1024,
            max_tunnels_per_agent: 4,
            shutdown_grace_seconds: 10,
            metrics_listen: None,
            tracing: TracingConfig::default(),
        }
    }
}

/// TLS material in memory.
#[derive(Clone)]
pub struct RelayTls {
    /// Certificate chain PEM.
    pub chain_pem: String,
    /// Private key PEM.
    pub key_pem: SecretPem,
    /// Tenant CA PEM.
    pub ca_pem: String,
}

/// A PEM private key that never prints.
#[derive(Clone)]
pub struct SecretPem(String);

impl SecretPem {
    /// Wraps a key.
    pub fn new(pem: String) -> SecretPem {
        SecretPem(pem)
    }
    /// The key PEM, for the TLS config only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(..)")
    }
}

/// Resolved options the relay runs with.
#[derive(Clone)]
pub struct RelayOptions {
    /// Instance id.
    pub relay_id: String,
    /// Tenant served.
    pub tenant: String,
    /// TLS material.
    pub tls: RelayTls,
    /// Heartbeat interval asked of agents.
    pub heartbeat_interval: Duration,
    /// Silence after which a tunnel is dropped.
    pub heartbeat_timeout: Duration,
    /// Operations outstanding per agent before OVERLOADED (see
    /// [`RelayConfig::agent_queue_depth`]).
    pub agent_queue_depth: usize,
    /// Max gRPC message size.
    pub max_message_bytes: usize,
    /// Where to serve Prometheus metrics; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// OpenTelemetry trace export.
    pub tracing: TracingConfig,
}

impl RelayOptions {
    /// Resolves a config, reading the files it names.
    pub fn from_config(c: &RelayConfig) -> Result<RelayOptions, crate::RelayError> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map_err(|e| crate::RelayError::Config(format!("{}: {e}", p.display())))
        };
        if c.tenant.is_empty() {
            return Err(crate::RelayError::Config("tenant must be set".into()));
        }
        Ok(RelayOptions {
            relay_id: c.relay_id.clone(),
            tenant: c.tenant.clone(),
            tls: RelayTls {
                chain_pem: read(&c.cert_file)?,
                key_pem: SecretPem::new(read(&c.key_file)?),
                ca_pem: read(&c.ca_file)?,
            },
            heartbeat_interval: Duration::from_secs(u64::from(c.heartbeat_interval_seconds.max(1))),
            heartbeat_timeout: Duration::from_secs(
                u64::from(c.heartbeat_interval_seconds.max(1))
                    * u64::from(c.heartbeat_misses.max(1) + 1),
            ),
            agent_queue_depth: c.agent_queue_depth.max(1),
            max_message_bytes: c.max_message_bytes.max(4096),
            metrics_listen: c.metrics_listen,
            tracing: {
                c.tracing
                    .validate()
                    .map_err(|e| crate::RelayError::Config(e.to_string()))?;
                c.tracing.clone()
            },
        })
    }
}
