//! Control plane configuration (`writeback-control-plane serve --config
//! cp.toml`, with `WRITEBACK_CP_…` environment overrides).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use writeback_core::trace::TracingConfig;

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
    /// Longest any API call may run, seconds; must exceed
    /// `operation_timeout_seconds` (a synchronous reset waits for its agent).
    pub request_timeout_seconds: u64,
    /// API calls one client connection may have running at once; more wait
    /// their turn on that connection.
    pub max_requests_per_connection: usize,
    /// How long the agents' health, probed for `GetStatus`, is reused for
    /// the same domain, seconds (0: probe on every call).
    pub status_health_ttl_seconds: u64,
    /// Password resets allowed per target user per hour (every recorded
    /// reset counts, whatever its outcome); 0 turns the throttle off.
    pub throttle_per_user_per_hour: u32,
    /// Account unlocks allowed per target user per hour, counted like
    /// resets in a bucket of their own; unset: `throttle_per_user_per_hour`;
    /// 0 turns this throttle off.
    pub throttle_unlocks_per_user_per_hour: Option<u32>,
    /// Password changes (voluntary and forced together) allowed per user per
    /// hour, in a bucket of their own; unset: `throttle_per_user_per_hour`;
    /// 0 turns this throttle off.
    pub throttle_changes_per_user_per_hour: Option<u32>,
    /// Lifetime of enrollment tokens, seconds (default for requests that give none).
    pub enrollment_token_ttl_seconds: u64,
    /// Oldest agent version considered complete in `status`.
    pub min_agent_version: String,
    /// Lifetime of the certificates issued to agents at enrollment and at
    /// renewal, seconds (365 days; at least 60). Agents renew when less
    /// than a third of it is left.
    pub agent_certificate_validity_seconds: u64,
    /// A directory of breached-password hash ranges (the k-anonymity layout:
    /// files named by 5 hex digits of the SHA-1, lines `SUFFIX:COUNT`)
    /// downloaded separately by an administrator; when set, passwords found
    /// there are refused (`PASSWORD_BREACHED`). Never fetched by writeback.
    pub breached_passwords_dir: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP); off when
    /// unset. Use loopback or a management network.
    pub metrics_listen: Option<SocketAddr>,
    /// Sign-in through OpenID Connect providers (the issuers themselves are
    /// configured per tenant through the API).
    pub oidc: OidcConfig,
    /// E-mail notifications through an SMTP relay (off by default).
    pub notify: NotifyConfig,
    /// OpenTelemetry trace export (off by default).
    pub tracing: TracingConfig,
    /// How many security events are written (see `security_audit`).
    pub security_events: SecurityEventsConfig,
    /// What one source address or one tenant may take of the API (see
    /// `limits`).
    pub limits: ApiLimitsConfig,
}

/// `[limits]`: bounds on what one source address, and one tenant, can take
/// of the API, so that one of them cannot keep it busy for everyone.
/// Sources are IPv4 addresses and IPv6 /64 prefixes as the control plane
/// sees them (behind a NAT or a proxy, everyone behind it is one source:
/// raise the per-source limits to match). An over-limit call is answered
/// `RESOURCE_EXHAUSTED` with the reason `RATE_LIMITED` and a retry time; a
/// connection past a cap is closed as soon as it is accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimitsConfig {
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one source.
    pub max_connections_per_source: usize,
    /// TLS handshakes in progress at once from one source (in all: 256).
    pub max_handshakes_per_source: usize,
    /// Time a client gets to finish its TLS handshake, seconds.
    pub handshake_timeout_seconds: u64,
    /// Calls per minute from one source on average (0: no limit), checked
    /// before the call is authenticated. The portal calls for all its
    /// users from its own address: leave it room.
    pub calls_per_minute_per_source: u32,
    /// Calls one source may make at once above that average.
    pub burst_per_source: u32,
    /// Calls per minute of one tenant on average (0: no limit), checked
    /// once the caller is authenticated, wherever the calls come from.
    pub calls_per_minute_per_tenant: u32,
    /// Calls one tenant may make at once above that average.
    pub burst_per_tenant: u32,
}

impl Default for ApiLimitsConfig {
    fn default() -> Self {
        ApiLimitsConfig {
            max_connections: 4096,
            max_connections_per_source: 256,
            max_handshakes_per_source: 32,
            handshake_timeout_seconds: 10,
            calls_per_minute_per_source: 6000,
            burst_per_source: 200,
            calls_per_minute_per_tenant: 6000,
            burst_per_tenant: 200,
        }
    }
}

/// The security trail's limits (see `security_audit`): refusals are
/// recorded in the background, at most `per_key_per_window` alike and
/// `per_tenant_per_window` in all per tenant in each window of
/// `window_seconds`; what is held back is counted and written as one summary
/// row per kind of refusal when the window ends. So a tenant's trail grows
/// by at most `2 × per_tenant_per_window` rows per window (events plus
/// summaries) however many refusals arrive, and rows older than
/// `retention_days` are deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityEventsConfig {
    /// Length of one rate-limit window, seconds.
    pub window_seconds: u64,
    /// Events written per window for one tenant, kind, reason and principal
    /// (or client address, when there is no principal).
    pub per_key_per_window: u32,
    /// Events written per window for one tenant (refusals no tenant could be
    /// told of count as one more tenant), summary rows aside.
    pub per_tenant_per_window: u32,
    /// Events waiting to be written; when the queue is full an event is
    /// dropped and counted (one `events_dropped` row says how many).
    pub queue_capacity: usize,
    /// Events older than this many days are deleted; 0 keeps them.
    pub retention_days: u64,
}

impl Default for SecurityEventsConfig {
    fn default() -> Self {
        SecurityEventsConfig {
            window_seconds: 60,
            per_key_per_window: 5,
            per_tenant_per_window: 100,
            queue_capacity: 1024,
            retention_days: 90,
        }
    }
}

impl SecurityEventsConfig {
    /// Checks the limits; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.window_seconds == 0 {
            return Err("security_events.window_seconds must be at least 1".into());
        }
        if self.per_key_per_window == 0 || self.per_tenant_per_window == 0 {
            return Err(
                "security_events.per_key_per_window and per_tenant_per_window must be at least 1"
                    .into(),
            );
        }
        if self.queue_capacity == 0 {
            return Err("security_events.queue_capacity must be at least 1".into());
        }
        Ok(())
    }
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

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// STARTTLS, required: no mail (and no credential) leaves without TLS,
    /// and the relay's certificate must verify for `smtp_host`.
    #[default]
    Starttls,
    /// Plain SMTP; accepted only for a relay on a loopback address.
    None,
}

/// E-mail notifications (see `notify`): after a password reset or an
/// account unlock is written back, the user is told at their UPN (which must
/// therefore be a deliverable address); when an administrator tries to reset
/// another administrator's password, `admin_recipients` are told. Mail is
/// queued in the database and sent by a background task, so it never delays
/// or fails an operation. No mail contains a password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Nothing is queued or sent unless this is true.
    pub enabled: bool,
    /// The SMTP relay's host name (checked against its certificate).
    pub smtp_host: String,
    /// The SMTP relay's port (submission, 587, by default).
    pub smtp_port: u16,
    /// `starttls` (default) or `none` (loopback relays only).
    pub tls: SmtpTls,
    /// Extra CA certificates (PEM) trusted for the relay, beside the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// SMTP AUTH user name (PLAIN or LOGIN); no AUTH when unset.
    pub username: Option<String>,
    /// File holding the SMTP AUTH password (read before each batch of mail,
    /// so it can be rotated); required with `username`.
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `writeback <writeback@contoso.test>`.
    pub from: String,
    /// Who is told about refused attempts by an administrator to reset
    /// another administrator's password; nobody when empty.
    pub admin_recipients: Vec<String>,
    /// Who the user should contact when they did not make the change
    /// (e.g. `the help desk at +1 555 0100`); "your help desk" when empty.
    pub help_desk: String,
    /// Sending attempts per mail before it is given up (its last error
    /// stays in the outbox).
    pub max_attempts: u32,
    /// Delay before the second attempt, seconds; doubles with every failure.
    pub retry_initial_seconds: u64,
    /// Longest delay between two attempts, seconds.
    pub retry_max_seconds: u64,
    /// How often the outbox is checked for mail that is due, seconds.
    pub poll_interval_seconds: u64,
    /// Timeout of each SMTP command, seconds.
    pub timeout_seconds: u64,
    /// Sent and given-up mail is deleted from the outbox after this many
    /// days; 0 keeps it.
    pub retention_days: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: false,
            smtp_host: String::new(),
            smtp_port: 587,
            tls: SmtpTls::Starttls,
            ca_file: None,
            username: None,
            password_file: None,
            from: String::new(),
            admin_recipients: Vec::new(),
            help_desk: String::new(),
            max_attempts: 8,
            retry_initial_seconds: 30,
            retry_max_seconds: 3600,
            poll_interval_seconds: 5,
            timeout_seconds: 30,
            retention_days: 30,
        }
    }
}

impl NotifyConfig {
    /// Checks an enabled configuration; the error names the field. A
    /// disabled one is always valid.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.smtp_host.trim().is_empty() {
            return Err("notify.smtp_host is empty".into());
        }
        if self.tls == SmtpTls::None && !is_loopback_host(&self.smtp_host) {
            return Err(format!(
                "notify.tls = \"none\" is accepted only for a relay on a loopback address, not {:?}; use \"starttls\"",
                self.smtp_host
            ));
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(format!(
                "notify.from {:?} is not an e-mail address",
                self.from
            ));
        }
        for r in &self.admin_recipients {
            if r.parse::<lettre::message::Mailbox>().is_err() {
                return Err(format!(
                    "notify.admin_recipients: {r:?} is not an e-mail address"
                ));
            }
        }
        match (&self.username, &self.password_file) {
            (Some(_), None) => return Err("notify.username needs notify.password_file".into()),
            (None, Some(_)) => return Err("notify.password_file needs notify.username".into()),
            _ => {}
        }
        if self.max_attempts == 0 {
            return Err("notify.max_attempts must be at least 1".into());
        }
        Ok(())
    }
}

/// `localhost` or a loopback IP address.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
            request_timeout_seconds: 60,
            max_requests_per_connection: 32,
            status_health_ttl_seconds: crate::health_cache::HEALTH_TTL.as_secs(),
            throttle_per_user_per_hour: 5,
            throttle_unlocks_per_user_per_hour: None,
            throttle_changes_per_user_per_hour: None,
            enrollment_token_ttl_seconds: 3600,
            min_agent_version: "0.1.0".into(),
            agent_certificate_validity_seconds: 365 * 24 * 3600,
            breached_passwords_dir: None,
            metrics_listen: None,
            oidc: OidcConfig::default(),
            notify: NotifyConfig::default(),
            tracing: TracingConfig::default(),
            security_events: SecurityEventsConfig::default(),
            limits: ApiLimitsConfig::default(),
        }
    }
}

impl ControlPlaneConfig {
    /// The limits of the API server that the rest of the config must respect.
    pub fn validate_limits(&self) -> Result<(), String> {
        if self.request_timeout_seconds <= self.operation_timeout_seconds {
            return Err(format!(
                "request_timeout_seconds ({}) must be greater than operation_timeout_seconds ({})",
                self.request_timeout_seconds, self.operation_timeout_seconds
            ));
        }
        if self.max_requests_per_connection == 0 {
            return Err("max_requests_per_connection must be at least 1".to_string());
        }
        let l = &self.limits;
        if l.max_connections == 0
            || l.max_connections_per_source == 0
            || l.max_handshakes_per_source == 0
            || l.handshake_timeout_seconds == 0
        {
            return Err(
                "limits.max_connections, max_connections_per_source, max_handshakes_per_source \
                 and handshake_timeout_seconds must be at least 1"
                    .to_string(),
            );
        }
        if self.agent_certificate_validity_seconds < 60 {
            return Err(format!(
                "agent_certificate_validity_seconds ({}) must be at least 60",
                self.agent_certificate_validity_seconds
            ));
        }
        Ok(())
    }

    /// How long agent certificates are valid.
    pub fn agent_certificate_validity(&self) -> time::Duration {
        time::Duration::seconds(
            i64::try_from(self.agent_certificate_validity_seconds).unwrap_or(i64::MAX / 1000),
        )
    }

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn enabled() -> NotifyConfig {
        NotifyConfig {
            enabled: true,
            smtp_host: "smtp.contoso.test".into(),
            from: "writeback <writeback@contoso.test>".into(),
            ..NotifyConfig::default()
        }
    }

    #[test]
    fn notifications_are_off_by_default_and_checked_when_on() {
        assert!(!ControlPlaneConfig::default().notify.enabled);
        NotifyConfig::default().validate().unwrap();
        enabled().validate().unwrap();
        let no_host = NotifyConfig {
            smtp_host: String::new(),
            ..enabled()
        };
        assert!(no_host.validate().unwrap_err().contains("smtp_host"));
        let bad_from = NotifyConfig {
            from: "not an address".into(),
            ..enabled()
        };
        assert!(bad_from.validate().unwrap_err().contains("from"));
        let half_auth = NotifyConfig {
            username: Some("wb".into()),
            ..enabled()
        };
        assert!(half_auth.validate().unwrap_err().contains("password_file"));
    }

    #[test]
    fn plain_smtp_only_to_a_loopback_relay() {
        let remote = NotifyConfig {
            tls: SmtpTls::None,
            ..enabled()
        };
        assert!(remote.validate().unwrap_err().contains("loopback"));
        for host in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            NotifyConfig {
                tls: SmtpTls::None,
                smtp_host: host.into(),
                ..enabled()
            }
            .validate()
            .unwrap();
        }
    }

    #[test]
    fn the_notify_section_reads_from_toml() {
        let config: ControlPlaneConfig = toml::from_str(
            r#"
            [notify]
            enabled = true
            smtp_host = "smtp.contoso.test"
            tls = "none"
            from = "writeback@contoso.test"
            admin_recipients = ["secops@contoso.test"]
            "#,
        )
        .unwrap();
        assert_eq!(config.notify.tls, SmtpTls::None);
        assert_eq!(config.notify.smtp_port, 587);
        assert_eq!(config.notify.admin_recipients, ["secops@contoso.test"]);
        assert!(toml::from_str::<ControlPlaneConfig>("[notify]\nsmtp_hots = \"x\"\n").is_err());
    }

    #[test]
    fn the_limits_section_reads_from_toml_and_caps_are_at_least_one() {
        let config: ControlPlaneConfig = toml::from_str(
            "[limits]\ncalls_per_minute_per_source = 0\nmax_connections_per_source = 8\n",
        )
        .unwrap();
        assert_eq!(config.limits.calls_per_minute_per_source, 0);
        assert_eq!(config.limits.max_connections_per_source, 8);
        assert_eq!(config.limits.burst_per_tenant, 200);
        assert!(config.validate_limits().is_ok());
        assert!(toml::from_str::<ControlPlaneConfig>("[limits]\ncalls_per_minute = 1\n").is_err());
        let mut zero = ControlPlaneConfig::default();
        zero.limits.max_handshakes_per_source = 0;
        assert!(zero.validate_limits().unwrap_err().contains("limits."));
    }

    #[test]
    fn server_limits_must_leave_room_for_an_operation() {
        let c = ControlPlaneConfig::default();
        assert!(c.validate_limits().is_ok());
        assert!(c.request_timeout_seconds > c.operation_timeout_seconds);
        let c = ControlPlaneConfig {
            request_timeout_seconds: 30,
            ..ControlPlaneConfig::default()
        };
        let e = c.validate_limits().unwrap_err();
        assert!(e.contains("request_timeout_seconds (30)"), "{e}");
        let c = ControlPlaneConfig {
            max_requests_per_connection: 0,
            ..ControlPlaneConfig::default()
        };
        assert!(c.validate_limits().is_err());
    }

    #[test]
    fn security_event_limits_have_defaults_and_refuse_zero() {
        let config: ControlPlaneConfig =
            toml::from_str("[security_events]\nper_key_per_window = 3\n").unwrap();
        assert_eq!(config.security_events.per_key_per_window, 3);
        assert_eq!(config.security_events.window_seconds, 60);
        config.security_events.validate().unwrap();
        let zero = SecurityEventsConfig {
            per_tenant_per_window: 0,
            ..SecurityEventsConfig::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .contains("per_tenant_per_window")
        );
        assert!(toml::from_str::<ControlPlaneConfig>("[security_events]\nper_key = 3\n").is_err());
    }
}
