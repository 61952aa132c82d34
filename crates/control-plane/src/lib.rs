//! The writeback control plane: it owns the tenants and their three writeback
//! toggles, the supported-operation policy, agent enrollment, the dispatch of
//! each operation to a relay and the durable audit log. State lives in SQLite
//! (embedded, the default) or PostgreSQL (when several replicas share it),
//! behind [`store::Store`]. Callers authenticate with the control plane's
//! own `wbt1` tokens ([`auth`]) or with the JWT access tokens of the OpenID
//! Connect issuers a tenant trusts ([`oidc`]). [`metrics`] counts every
//! operation by kind, domain, origin and reason, served on `metrics_listen`
//! when set. [`notify`] e-mails users after resets and unlocks, and
//! administrators about refused attempts on other administrators, through a
//! durable outbox and a background sender (off unless `[notify]` enables it).
//! [`security_audit`] records refused authentications, password operations
//! and enrollments in the security trail, in the background and
//! rate-limited (`[security_events]`). Operations reach agents exactly once
//! through relay crashes and broken tunnels ([`dispatcher`]'s delivery:
//! retries within the deadline, and the agents' ledgers asked before any
//! resend); an outcome still unknown is resolved later by [`reconcile`].
//! No result is recorded on a relay's word: each must be signed by the agent
//! it names with the result-signing key recorded at its enrollment (or the
//! renewal that registered it); a refused one counts as no answer and lands
//! in the security trail.
//! Read-only questions go to the agents the same way, signed, without an
//! envelope or an operation record: a user's password policy
//! ([`password_policy`]) and the help desk's directory search
//! (`DirectoryService.SearchUsers`, in [`api`]; every search is recorded
//! in the administrative trail). Before the policy lets an administrator
//! act on another user, an agent says whom the target names, so the
//! own-account and other-administrator rules judge the person, not the
//! spelling. The offline admin commands ([`offline`]) are recorded in the
//! administrative trail too.
//! What one source address or one tenant may take of the API — connections,
//! handshakes, calls per minute — is bounded by [`limits`] (`[limits]`).
//! The checks a request passes before anything else — bearer tokens, JWT
//! headers, request fields — are fuzzed through `api::fuzz` (`fuzz/`).

#![forbid(unsafe_code)]

pub mod store;

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod dispatcher;
pub mod flight;
pub mod health_cache;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod offline;
pub mod oidc;
pub mod password_policy;
pub mod policy;
pub mod quality;
pub mod reconcile;
pub mod security_audit;
pub mod server;

use std::sync::Arc;

pub use config::ControlPlaneConfig;
use writeback_envelope::signing::OperationSigner;
use writeback_identity::Ca;

use crate::dispatcher::Dispatcher;
use crate::store::{Store, StoreError};

/// Errors that stop the control plane or its admin commands.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// Storage.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// CA, certificates, TLS.
    #[error("identity: {0}")]
    Identity(#[from] writeback_identity::Error),
    /// The gRPC server.
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Configuration.
    #[error("config: {0}")]
    Config(String),
}

/// The running control plane's shared state.
pub struct ControlPlane {
    /// Durable state.
    pub store: Store,
    /// The CA that issues agent certificates.
    pub ca: Arc<Ca>,
    /// Signs every operation dispatched; agents pin its public key at
    /// enrollment.
    pub signer: Arc<OperationSigner>,
    /// The next operation-signing key's public half (`signing-key rotate`),
    /// published to agents beside the current one but not used to sign.
    pub next_signing_key: Option<Vec<u8>>,
    /// Each promoted key's endorsement by the key it replaced
    /// (`op-signing.endorsements`), published with the keys.
    pub endorsement_chain: Vec<writeback_envelope::endorsement::Endorsement>,
    /// Links to the relays.
    pub dispatcher: Dispatcher,
    /// Config.
    pub config: ControlPlaneConfig,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// Operation ids in flight (one request per id at a time).
    pub flights: flight::Flights,
    /// Verifies identity-provider tokens.
    pub oidc: oidc::Verifier,
    /// The operations' traces.
    pub tracing: writeback_core::trace::Tracing,
    /// Records refused authentications, operations and enrollments.
    pub security: security_audit::SecurityAudit,
    /// The agents' health by (tenant, domain), probed at most once per
    /// `status_health_ttl_seconds` however many `GetStatus` calls ask.
    pub health: health_cache::TtlCache<(String, String), Vec<writeback_proto::v1::AgentHealth>>,
}

impl ControlPlane {
    /// The operation-signing public keys agents should pin: the current one
    /// and, after `signing-key rotate`, the next.
    pub fn operation_signing_keys(&self) -> Vec<Vec<u8>> {
        let mut keys = vec![self.signer.public_key()];
        keys.extend(self.next_signing_key.clone());
        keys
    }

    /// The endorsements published with [`ControlPlane::operation_signing_keys`]:
    /// the next key signed by the current one (made now), then the chain
    /// of promotions back. An agent pins a key it does not pin yet only
    /// through one of these (`writeback_envelope::endorsement::accept`).
    pub fn signing_key_endorsements(&self) -> Vec<writeback_proto::v1::SigningKeyEndorsement> {
        let next = self
            .next_signing_key
            .as_deref()
            .map(|k| self.signer.endorse(k));
        next.iter()
            .chain(self.endorsement_chain.iter().rev())
            .map(|e| writeback_proto::v1::SigningKeyEndorsement {
                public_key: e.public_key.clone(),
                endorser_key_id: e.endorser_key_id.clone(),
                signature: e.signature.clone(),
            })
            .collect()
    }

    /// Opens the database and the CA named by `config`.
    pub async fn open(config: ControlPlaneConfig) -> Result<Arc<ControlPlane>, ControlPlaneError> {
        let ca = Arc::new(Ca::load(&config.data_dir).map_err(|e| {
            ControlPlaneError::Config(format!(
                "cannot load the CA from {} ({e}); run `writeback-control-plane init` first",
                config.data_dir.display()
            ))
        })?);
        config
            .notify
            .validate()
            .map_err(|e| ControlPlaneError::Config(format!("notify: {e}")))?;
        let signer = Arc::new(bootstrap::load_signing_key(&config.data_dir)?);
        let next_signing_key = bootstrap::load_next_signing_key(&config.data_dir)?;
        let endorsement_chain = bootstrap::load_endorsements(&config.data_dir)?;
        config
            .security_events
            .validate()
            .map_err(ControlPlaneError::Config)?;
        config
            .validate_limits()
            .map_err(ControlPlaneError::Config)?;
        let store = Store::connect(&config.database_url()).await?;
        let dispatcher = Dispatcher::with_store(
            ca.clone(),
            signer.clone(),
            config.relay_urls.clone(),
            store.clone(),
        );
        let oidc = oidc::Verifier::new(&config.oidc)
            .map_err(|e| ControlPlaneError::Config(format!("oidc: {e:#}")))?;
        let tracing =
            writeback_core::trace::Tracing::new("writeback-control-plane", &config.tracing)
                .map_err(|e| ControlPlaneError::Config(e.to_string()))?;
        let security = security_audit::SecurityAudit::start(store.clone(), &config.security_events);
        let health = health_cache::TtlCache::new(std::time::Duration::from_secs(
            config.status_health_ttl_seconds,
        ));
        let cp = Arc::new(ControlPlane {
            security,
            store,
            ca,
            signer,
            next_signing_key,
            endorsement_chain,
            dispatcher,
            config,
            metrics: metrics::Metrics::new(),
            flights: flight::Flights::default(),
            oidc,
            tracing,
            health,
        });
        cp.report_refused_results();
        Ok(cp)
    }

    /// Sends every result the dispatcher refuses for its signature to the
    /// security trail (`result_refused`) and the `results_refused` metric.
    /// [`ControlPlane::open`] calls it; a control plane assembled by hand
    /// (tests) must too.
    pub fn report_refused_results(&self) {
        let (security, metrics) = (self.security.clone(), self.metrics.clone());
        self.dispatcher
            .on_refused_result(Arc::new(move |op, claimed, relay, detail, message| {
                metrics.result_refused(detail);
                security.result_refused(op, claimed, relay, detail, message);
            }));
    }
}
