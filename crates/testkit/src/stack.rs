//! The whole system in one process for integration tests: a control plane
//! (SQLite in a temp dir, or the database a test names), one or more relays
//! and agents, each on a port-0 listener with PKI minted from the control
//! plane's CA. Agents apply operations to real Samba DCs started with
//! [`crate::SambaDc`]. Everything stops when the [`Stack`] is dropped.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use writeback_agent::directory::{Directory, DirectoryConfig};
use writeback_agent::runtime::RunningAgent;
use writeback_control_plane::store::{ClientApp, Role};
use writeback_control_plane::{ControlPlane, ControlPlaneConfig, bootstrap};
use writeback_core::trace::{Tracing, TracingConfig};
use writeback_identity::{Ca, SpiffeId, tls, transport};
use writeback_proto::v1 as pb;
use writeback_relay::Relay;
use writeback_relay::config::{RelayOptions, RelayTls, SecretPem};

use crate::{SambaDc, TestkitError};

/// How long a test waits for something to come up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running relay.
pub struct RunningRelay {
    /// `https://127.0.0.1:port`.
    pub url: String,
    /// The relay (registry access).
    pub relay: Relay,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    /// Stops the relay (GoAway to its agents) and waits for it to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A bearer-authenticated client channel.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    header: MetadataValue<tonic::metadata::Ascii>,
}

impl Client {
    /// A client of the control plane at `url` (whose certificate the CA
    /// `ca_pem` issued), authenticated with `token`; it connects lazily, so
    /// it keeps working across a restart of that control plane.
    pub fn connect(url: &str, ca_pem: &str, token: &str) -> Result<Client, TestkitError> {
        let config = tls::client_config(
            tls::roots_from_pem(ca_pem).map_err(|e| TestkitError::Stack(e.to_string()))?,
            None,
        )
        .map_err(|e| TestkitError::Stack(e.to_string()))?;
        let channel =
            transport::channel(url, config).map_err(|e| TestkitError::Stack(e.to_string()))?;
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| TestkitError::Stack("token is not ASCII".into()))?;
        Ok(Client { channel, header })
    }

    /// Registers `domain` (as a global administrator) and turns the three
    /// writeback toggles on.
    pub async fn register_domain(&self, domain: &str) -> Result<(), TestkitError> {
        self.domains()
            .add_domain(self.request(pb::AddDomainRequest {
                name: domain.to_owned(),
                upn_suffixes: vec![],
            }))
            .await
            .map_err(|s| TestkitError::Stack(format!("add domain: {s}")))?;
        self.settings()
            .update_settings(self.request(pb::UpdateSettingsRequest {
                cloud_sync_writeback: Some(true),
                sspr_writeback: Some(true),
                unlock_without_reset: Some(true),
            }))
            .await
            .map_err(|s| TestkitError::Stack(format!("settings: {s}")))?;
        Ok(())
    }

    /// Resets `upn`'s password with operation id `id`, retrying with that id
    /// until the answer is definite ([`crate::burst::write_until_known`]).
    /// Returns the final reason and the number of attempts.
    pub async fn reset_until_known(
        &self,
        upn: &str,
        password: &str,
        id: &str,
        patience: Duration,
    ) -> (writeback_core::ReasonCode, u32) {
        let write = crate::burst::Write::Reset {
            upn: upn.to_owned(),
            password: password.to_owned(),
        };
        crate::burst::write_until_known(std::slice::from_ref(self), &write, id, patience).await
    }

    /// Wraps a gRPC request with the bearer token.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", self.header.clone());
        r
    }
    /// PasswordService client.
    pub fn passwords(&self) -> pb::password_service_client::PasswordServiceClient<Channel> {
        pb::password_service_client::PasswordServiceClient::new(self.channel.clone())
    }
    /// SettingsService client.
    pub fn settings(&self) -> pb::settings_service_client::SettingsServiceClient<Channel> {
        pb::settings_service_client::SettingsServiceClient::new(self.channel.clone())
    }
    /// DomainService client.
    pub fn domains(&self) -> pb::domain_service_client::DomainServiceClient<Channel> {
        pb::domain_service_client::DomainServiceClient::new(self.channel.clone())
    }
    /// AgentService client.
    pub fn agents(&self) -> pb::agent_service_client::AgentServiceClient<Channel> {
        pb::agent_service_client::AgentServiceClient::new(self.channel.clone())
    }
    /// DirectoryService client.
    pub fn directory(&self) -> pb::directory_service_client::DirectoryServiceClient<Channel> {
        pb::directory_service_client::DirectoryServiceClient::new(self.channel.clone())
    }
    /// AuditService client.
    pub fn audit(&self) -> pb::audit_service_client::AuditServiceClient<Channel> {
        pb::audit_service_client::AuditServiceClient::new(self.channel.clone())
    }
    /// PasswordQualityService client.
    pub fn password_quality(
        &self,
    ) -> pb::password_quality_service_client::PasswordQualityServiceClient<Channel> {
        pb::password_quality_service_client::PasswordQualityServiceClient::new(self.channel.clone())
    }
    /// IdentityProviderService client.
    pub fn identity_providers(
        &self,
    ) -> pb::identity_provider_service_client::IdentityProviderServiceClient<Channel> {
        pb::identity_provider_service_client::IdentityProviderServiceClient::new(
            self.channel.clone(),
        )
    }
}

/// Control plane + relays + agents in this process.
pub struct Stack {
    /// Temp dir holding the data dir, tokens and agent state.
    pub dir: tempfile::TempDir,
    /// Tenant id.
    pub tenant: String,
    /// The control plane's state.
    pub cp: Arc<ControlPlane>,
    /// `https://127.0.0.1:port` of the client API.
    pub cp_url: String,
    /// Relays, in the order the control plane knows them.
    pub relays: Vec<RunningRelay>,
    /// Path of the global administrator's token (client app portal).
    pub admin_token_file: PathBuf,
    agents: Vec<(watch::Sender<bool>, RunningAgent)>,
    /// Every agent's tracer (they export as the control plane's config says).
    agent_tracing: Vec<Tracing>,
    cp_stop: watch::Sender<bool>,
    cp_task: tokio::task::JoinHandle<()>,
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

fn localhost() -> Vec<IpAddr> {
    vec![IpAddr::from([127, 0, 0, 1])]
}

/// Starts a relay for `tenant` with a certificate from `ca` on `listener`,
/// exporting spans as `tracing` says.
pub fn start_relay(
    ca: &Ca,
    tenant: &str,
    relay_id: &str,
    listener: tokio::net::TcpListener,
    heartbeat: Duration,
    tracing: TracingConfig,
) -> Result<RunningRelay, TestkitError> {
    let addr = listener.local_addr()?;
    let id = SpiffeId::Relay {
        tenant: tenant.to_owned(),
        relay_id: relay_id.to_owned(),
    };
    let (chain, key) = ca
        .issue_service(&id, &["localhost".to_owned()], &localhost())
        .map_err(|e| TestkitError::Stack(e.to_string()))?;
    let relay = Relay::new(RelayOptions {
        relay_id: relay_id.to_owned(),
        tenant: tenant.to_owned(),
        tls: RelayTls {
            chain_pem: chain,
            key_pem: SecretPem::new(key),
            ca_pem: ca.cert_pem().to_owned(),
        },
        heartbeat_interval: heartbeat,
        heartbeat_timeout: heartbeat * 3,
        agent_queue_depth: 64,
        max_message_bytes: 256 * 1024,
        metrics_listen: None,
        tracing,
    });
    let (stop, rx) = watch::channel(false);
    let serving = relay.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = serving.serve(listener, wait_true(rx)).await {
            tracing::error!(error = %e, "relay failed");
        }
    });
    Ok(RunningRelay {
        url: format!("https://{addr}"),
        relay,
        stop,
        task,
    })
}

impl Stack {
    /// A stack with SQLite and `relays` relays.
    pub async fn start(tenant: &str, relays: usize) -> Result<Stack, TestkitError> {
        Stack::start_with(tenant, relays, None).await
    }

    /// A stack on `database_url` (SQLite in the temp dir when `None`).
    pub async fn start_with(
        tenant: &str,
        relays: usize,
        database_url: Option<String>,
    ) -> Result<Stack, TestkitError> {
        Stack::start_configured(tenant, relays, database_url, |_| {}).await
    }

    /// [`Stack::start_with`], with `configure` adjusting the control
    /// plane's configuration first (e.g. the identity providers' CA).
    pub async fn start_configured(
        tenant: &str,
        relays: usize,
        database_url: Option<String>,
        configure: impl FnOnce(&mut ControlPlaneConfig),
    ) -> Result<Stack, TestkitError> {
        writeback_identity::install_crypto_provider();
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("cp");
        let mut listeners = Vec::new();
        for _ in 0..relays {
            listeners
                .push(tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?);
        }
        let relay_urls = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| format!("https://{a}")))
            .collect::<Result<Vec<_>, _>>()?;
        let config = ControlPlaneConfig {
            data_dir: data_dir.clone(),
            database_url: database_url.unwrap_or_default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_dns_names: vec!["localhost".into()],
            tls_ip_addresses: localhost(),
            relay_urls,
            operation_timeout_seconds: 20,
            ..ControlPlaneConfig::default()
        };
        let mut config = config;
        configure(&mut config);
        let admin_token_file = dir.path().join("admin.token");
        bootstrap::init(
            &config,
            tenant,
            "admin@writeback.test",
            ClientApp::Portal,
            &admin_token_file,
        )
        .await
        .map_err(|e| TestkitError::Stack(format!("init: {e}")))?;
        let cp = ControlPlane::open(config)
            .await
            .map_err(|e| TestkitError::Stack(format!("open: {e}")))?;
        let mut running = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            running.push(start_relay(
                &cp.ca,
                tenant,
                &format!("relay-{}", i + 1),
                l,
                Duration::from_secs(5),
                cp.config.tracing.clone(),
            )?);
        }
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let cp_url = format!("https://{}", listener.local_addr()?);
        let (cp_stop, rx) = watch::channel(false);
        let serving = cp.clone();
        let cp_task = tokio::spawn(async move {
            if let Err(e) = serving.serve(listener, wait_true(rx)).await {
                tracing::error!(error = %e, "control plane failed");
            }
        });
        Ok(Stack {
            dir,
            tenant: tenant.to_owned(),
            cp,
            cp_url,
            relays: running,
            admin_token_file,
            agents: Vec::new(),
            agent_tracing: Vec::new(),
            cp_stop,
            cp_task,
        })
    }

    /// A client authenticated with the token in `token_file`.
    pub fn client_with_file(&self, token_file: &Path) -> Result<Client, TestkitError> {
        let token = std::fs::read_to_string(token_file)?;
        self.client_with_token(token.trim())
    }

    /// A client authenticated with `token`.
    pub fn client_with_token(&self, token: &str) -> Result<Client, TestkitError> {
        Client::connect(&self.cp_url, self.cp.ca.cert_pem(), token)
    }

    /// The global administrator (client app portal).
    pub fn admin(&self) -> Result<Client, TestkitError> {
        self.client_with_file(&self.admin_token_file)
    }

    /// Mints a token for `principal` with `role` issued to `app`, returns a client.
    pub async fn client(
        &self,
        principal: &str,
        role: Role,
        app: ClientApp,
    ) -> Result<Client, TestkitError> {
        let file = self.dir.path().join(format!(
            "{}-{}.token",
            principal.replace(['@', '/'], "_"),
            app.as_str()
        ));
        bootstrap::issue_token(
            &self.cp.store,
            &self.tenant,
            principal,
            role,
            app,
            None,
            &file,
        )
        .await
        .map_err(|e| TestkitError::Stack(format!("token: {e}")))?;
        self.client_with_file(&file)
    }

    /// Registers `dc`'s domain, starts one agent for it (bound as the DC's
    /// Administrator), waits until the control plane sees it online and
    /// returns the domain's help desk ([`Stack::helpdesk`]).
    pub async fn serve_domain(&mut self, dc: &SambaDc) -> Result<Client, TestkitError> {
        self.add_domain(dc).await?;
        self.start_agent(dc, &dc.admin_dn(), dc.admin_password())
            .await?;
        self.until_online(dc.domain(), 1).await?;
        self.helpdesk(dc.domain()).await
    }

    /// `helpdesk@{domain}`, a password administrator signed in to the portal.
    pub async fn helpdesk(&self, domain: &str) -> Result<Client, TestkitError> {
        self.client(
            &format!("helpdesk@{domain}"),
            Role::PasswordAdmin,
            ClientApp::Portal,
        )
        .await
    }

    /// Waits (up to [`READY_TIMEOUT`]) until the control plane sees `n`
    /// agents of `domain` online.
    pub async fn until_online(&self, domain: &str, n: usize) -> Result<(), TestkitError> {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while self.cp.dispatcher.online_agents(&self.tenant, domain).len() < n {
            if std::time::Instant::now() >= deadline {
                return Err(TestkitError::Stack(format!(
                    "the control plane never saw {n} agents of {domain} online"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Registers the DC's domain with the control plane and turns writeback on.
    pub async fn add_domain(&self, dc: &SambaDc) -> Result<(), TestkitError> {
        self.register_domain(dc.domain()).await
    }

    /// Registers `domain` (no DC needed) and turns the three writeback toggles on.
    pub async fn register_domain(&self, domain: &str) -> Result<(), TestkitError> {
        self.admin()?.register_domain(domain).await
    }

    /// Enrolls a new agent for `dc`'s domain (through the real enrollment
    /// RPC), binding to the DC as `bind_dn`/`bind_password`, and starts it;
    /// returns once it is connected to a relay. Returns the agent id.
    pub async fn start_agent(
        &mut self,
        dc: &SambaDc,
        bind_dn: &str,
        bind_password: &str,
    ) -> Result<String, TestkitError> {
        self.start_agent_full(dc, bind_dn, bind_password, None, |_| {})
            .await
    }

    /// [`Stack::start_agent`], with `configure` changing the agent's
    /// directory configuration first (its scope OUs or group, deny groups).
    pub async fn start_agent_configured(
        &mut self,
        dc: &SambaDc,
        bind_dn: &str,
        bind_password: &str,
        configure: impl FnOnce(&mut DirectoryConfig),
    ) -> Result<String, TestkitError> {
        self.start_agent_full(dc, bind_dn, bind_password, None, configure)
            .await
    }

    /// [`Stack::start_agent`], the agent dialling `relay_urls` (in that
    /// order) instead of the relays its enrollment names — a relay of its
    /// own choice, or a proxy in front of one that a test can cut.
    pub async fn start_agent_via(
        &mut self,
        dc: &SambaDc,
        bind_dn: &str,
        bind_password: &str,
        relay_urls: Option<Vec<String>>,
    ) -> Result<String, TestkitError> {
        self.start_agent_full(dc, bind_dn, bind_password, relay_urls, |_| {})
            .await
    }

    async fn start_agent_full(
        &mut self,
        dc: &SambaDc,
        bind_dn: &str,
        bind_password: &str,
        relay_urls: Option<Vec<String>>,
        configure: impl FnOnce(&mut DirectoryConfig),
    ) -> Result<String, TestkitError> {
        let admin = self.admin()?;
        let token = admin
            .agents()
            .create_enrollment_token(admin.request(pb::CreateEnrollmentTokenRequest {
                domain: dc.domain().to_owned(),
                ttl_seconds: 600,
            }))
            .await
            .map_err(|s| TestkitError::Stack(format!("enrollment token: {s}")))?
            .into_inner()
            .token;
        // A directory of its own, also after an agent was stopped.
        let mut n = self.agents.len() + 1;
        while self.dir.path().join(format!("agent-{n}")).exists() {
            n += 1;
        }
        let state_dir = self.dir.path().join(format!("agent-{n}"));
        let enrollment = writeback_agent::enroll::enroll(&self.cp_url, &token, &state_dir)
            .await
            .map_err(|e| TestkitError::Stack(format!("enroll: {e}")))?;
        if let Some(urls) = relay_urls {
            let state_error =
                |e: writeback_agent::AgentError| TestkitError::Stack(format!("agent state: {e}"));
            let mut state =
                writeback_agent::state::AgentState::load(&state_dir).map_err(state_error)?;
            state.enrollment.relay_urls = urls;
            state.save(&state_dir).map_err(state_error)?;
        }
        let mut config = DirectoryConfig::new(
            vec![dc.ldaps_url()],
            dc.ca_pem(),
            bind_dn,
            bind_password.to_owned().into(),
        );
        configure(&mut config);
        let directory =
            Directory::new(config).map_err(|e| TestkitError::Stack(format!("directory: {e}")))?;
        let (stop, rx) = watch::channel(false);
        // Metrics are kept (not served): tests read them from `agent_metrics`.
        let mut observability = writeback_agent::runtime::Observability::new(None);
        directory.register_metrics(&mut observability.registry);
        observability.tracing = Tracing::new("writeback-agent", &self.cp.config.tracing)
            .map_err(|e| TestkitError::Stack(format!("agent tracing: {e}")))?;
        self.agent_tracing.push(observability.tracing.clone());
        let mut agent = writeback_agent::runtime::start(
            &state_dir,
            Arc::new(directory),
            16,
            Some(observability),
            wait_true(rx),
        )
        .await
        .map_err(|e| TestkitError::Stack(format!("agent: {e}")))?;
        agent
            .wait_connected(READY_TIMEOUT)
            .await
            .map_err(|e| TestkitError::Stack(format!("agent: {e}")))?;
        self.agents.push((stop, agent));
        Ok(enrollment.agent_id)
    }

    /// Exports every finished span of every service now (the control plane,
    /// the relays and the agents); they export only when the control plane's
    /// config sets `tracing.otlp_endpoint`.
    pub async fn flush_traces(&self) {
        let mut all = vec![self.cp.tracing.clone()];
        all.extend(self.relays.iter().map(|r| r.relay.tracing().clone()));
        all.extend(self.agent_tracing.iter().cloned());
        // A flush blocks until the exporter has sent, and the exporter's
        // channel runs on this runtime: flush off its threads.
        let _ = tokio::task::spawn_blocking(move || all.iter().for_each(Tracing::flush)).await;
    }

    /// The metrics registry of the `index`th agent started.
    pub fn agent_metrics(
        &self,
        index: usize,
    ) -> Option<Arc<prometheus_client::registry::Registry>> {
        self.agents.get(index).and_then(|(_, a)| a.metrics.clone())
    }

    /// Stops the `index`th agent started (its tunnel closes).
    pub async fn stop_agent(&mut self, index: usize) {
        if index < self.agents.len() {
            let (stop, agent) = self.agents.remove(index);
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), agent.task).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (stop, _) in &self.agents {
            let _ = stop.send(true);
        }
        for r in &self.relays {
            let _ = r.stop.send(true);
        }
        let _ = self.cp_stop.send(true);
        self.cp_task.abort();
    }
}
