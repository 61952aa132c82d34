//! The agent's config file (`writeback-agent run --config agent.toml`), with
//! `WRITEBACK_AGENT_…` environment overrides (nested keys split on `__`,
//! e.g. `WRITEBACK_AGENT_DIRECTORY__URLS`). The service account's password
//! is never a config value: `bind_password_file` names a file holding it.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::AgentError;
use crate::directory::DirectoryConfig;

/// Top-level agent config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Where `enroll` wrote the identity, keys and relay URLs.
    pub state_dir: PathBuf,
    /// Operations applied at once.
    pub max_in_flight: u32,
    /// Largest offset of the agent's clock from the control plane's (and
    /// its relay's), seconds; beyond it every operation is refused with
    /// `CLOCK_SKEW` (see `clock`). At most 10 (the window the control plane
    /// allows past an operation's expiry).
    pub max_clock_offset_seconds: u64,
    /// The domain controllers and the service account.
    pub directory: DirectorySection,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP); off when
    /// unset. Use loopback or a management network.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// OpenTelemetry trace export (off by default).
    pub tracing: writeback_core::trace::TracingConfig,
}

/// How the agent reaches Active Directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectorySection {
    /// `ldaps://dc:636` (or `ldap://dc:389`, upgraded with StartTLS) URLs,
    /// tried in order.
    pub urls: Vec<String>,
    /// CA (PEM) that issued the DCs' certificates.
    pub ca_file: PathBuf,
    /// The service account (DN or UPN) the agent binds as.
    pub bind_dn: String,
    /// File holding the service account's password.
    pub bind_password_file: PathBuf,
    /// OUs in scope for writeback; empty means the whole domain.
    pub scope_base_dns: Vec<String>,
    /// Only members of this group are in scope, when set.
    pub scope_group_dn: Option<String>,
    /// Members of these groups (direct, nested or by primary group) are never
    /// written back, refused with `PROTECTED_ACCOUNT`; a group that does not exist
    /// stops every operation (configuration error) rather than being ignored.
    pub deny_group_dns: Vec<String>,
    /// Per-LDAP-operation timeout, seconds.
    pub timeout_seconds: u64,
    /// Most LDAPS sessions kept open to the domain controllers (idle or in use);
    /// operations beyond it wait for one.
    pub max_sessions: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: crate::state::default_state_dir(),
            max_in_flight: 16,
            max_clock_offset_seconds: crate::clock::DEFAULT_MAX_CLOCK_OFFSET.as_secs(),
            directory: DirectorySection::default(),
            metrics_listen: None,
            tracing: writeback_core::trace::TracingConfig::default(),
        }
    }
}

impl Default for DirectorySection {
    fn default() -> Self {
        DirectorySection {
            urls: Vec::new(),
            ca_file: PathBuf::from("/etc/writeback/dc-ca.pem"),
            bind_dn: String::new(),
            bind_password_file: PathBuf::from("/etc/writeback/bind-password"),
            scope_base_dns: Vec::new(),
            scope_group_dn: None,
            deny_group_dns: Vec::new(),
            timeout_seconds: 10,
            max_sessions: crate::directory::DEFAULT_MAX_SESSIONS,
        }
    }
}

impl DirectorySection {
    /// Reads the files the section names and builds the directory config.
    pub fn resolve(&self) -> Result<DirectoryConfig, AgentError> {
        self.validate()?;
        let password = std::fs::read_to_string(&self.bind_password_file).map_err(|e| {
            AgentError::Config(format!(
                "cannot read {}: {e}",
                self.bind_password_file.display()
            ))
        })?;
        let password = SecretString::from(password.trim_end_matches(['\r', '\n']).to_owned());
        let mut config = self.resolve_as(&self.bind_dn, password)?;
        config.bind_password_file = Some(self.bind_password_file.clone());
        Ok(config)
    }

    /// The same domain controllers, CA, scope and timeout, bound as another account
    /// (an administrator, for `permissions grant`); `bind_password_file` is not read.
    pub fn resolve_as(
        &self,
        bind_dn: &str,
        password: SecretString,
    ) -> Result<DirectoryConfig, AgentError> {
        self.validate()?;
        let ca_pem = std::fs::read_to_string(&self.ca_file).map_err(|e| {
            AgentError::Config(format!("cannot read {}: {e}", self.ca_file.display()))
        })?;
        Ok(DirectoryConfig {
            urls: self.urls.clone(),
            ca_pem,
            bind_dn: bind_dn.to_owned(),
            bind_password: password,
            bind_password_file: None,
            scope_base_dns: self.scope_base_dns.clone(),
            scope_group_dn: self.scope_group_dn.clone(),
            deny_group_dns: self.deny_group_dns.clone(),
            timeout: Duration::from_secs(self.timeout_seconds.max(1)),
            max_sessions: self.max_sessions.max(1),
        })
    }

    fn validate(&self) -> Result<(), AgentError> {
        if self.urls.is_empty() {
            return Err(AgentError::Config(
                "directory.urls must name at least one domain controller".into(),
            ));
        }
        if self.bind_dn.is_empty() {
            return Err(AgentError::Config(
                "directory.bind_dn must name the service account".into(),
            ));
        }
        Ok(())
    }
}
