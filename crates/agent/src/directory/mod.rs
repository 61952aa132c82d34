//! The agent's directory layer: finds the target user on a domain controller over
//! LDAPS, refuses what must never be written back (users outside the configured scope,
//! protected administrative accounts and accounts as powerful ([`privileged`]),
//! disabled accounts), applies resets, changes,
//! unlocks and un-expiries, and turns every refusal into a typed [`DirectoryError`]
//! with a stable [`ReasonCode`](writeback_core::ReasonCode) and a message a help desk
//! can act on.
//!
//! Sessions are kept warm and reused ([`pool`]): TCP, then TLS (or StartTLS for
//! `ldap://`) verified against the configured CA only, then a simple bind as the
//! service account, trying the configured URLs in order — once, not per operation.
//! The lookup, the checks and the write of one operation all happen on one session,
//! and everything after the lookup addresses the user by `<GUID=…>`, so what was
//! checked is what is written to, even if the user is renamed or moved meanwhile. A warm reset, change or unlock is three
//! LDAP round trips: the user search, one base search of the user (`tokenGroups`
//! and the scope group, `eligibility.rs`) and the modify. The domain's facts are
//! cached ([`domain`]); health checks and the policy report reuse the pool. The
//! password policies a user is subject to (domain default, fine-grained policies,
//! the effective one) are read by [`effective`]; the help desk's "find a user"
//! (a prefix search within the scope, each user judged eligible or not) is
//! [`search`].
//!
//! A session that fails before the write, after it was reused, is discarded and the
//! operation runs again on a new one (nothing was written); a failure during the
//! write is reported as such (outcome unknown) and never retried.
//!
//! # What Samba 4.17 does (measured; the integration tests pin it)
//! - A reset replaces `unicodePwd`; `pwdLastSet = 0` (must change) and
//!   `lockoutTime = 0` (unlock) are accepted in the same modify, so a reset with
//!   options is one atomic write.
//! - The policy-hints control is not implemented: sent non-critical it is ignored and
//!   history is not enforced on a reset.
//! - A change (delete the old `unicodePwd` value, add the new one) works when bound
//!   as the service account: the DC checks the old password and the Change Password
//!   right, which the default user DACL grants to Everyone — an ordinary account with
//!   no delegated rights may do it. So the agent never binds as the user. The minimum
//!   password age and history apply to it; a wrong old password is rc 19
//!   `00000056`; a locked-out account is rc 19 `00000775`.
//! - Samba does not run AdminSDHolder; `adminCount` is set on Administrator at
//!   provisioning but not on accounts added to protected groups later, so the group
//!   checks are what catches them.

/// Evaluate `$body` with `$s` bound to a pooled session (`&mut Session`) of
/// `$dir`. If a reused session fails before anything was written (the DC dropped it
/// while idle), `$body` runs once more on a new session; a failure during the write
/// is never retried. A macro rather than a function taking an async closure: the
/// futures of async closures borrowing their argument are not provably `Send`.
macro_rules! with_session {
    ($dir:expr, |$s:ident| $body:expr) => {{
        let pool = &$dir.inner.pool;
        let mut lease = pool.lease().await?;
        tracing::Span::current().record("dc", lease.session().url.as_str());
        let result = {
            let $s = lease.session();
            async move { $body }.await
        };
        if lease.reused() && $crate::directory::failed_before_write(&result) {
            tracing::debug!(url = %lease.session().url, "a reused session failed before the write; retrying on a new one");
            drop(lease);
            let mut lease = pool.lease_new().await?;
            tracing::Span::current().record("dc", lease.session().url.as_str());
            let result = {
                let $s = lease.session();
                async move { $body }.await
            };
            lease.release();
            result
        } else {
            lease.release();
            result
        }
    }};
}

mod classify;
mod dn;
pub mod domain;
mod effective;
mod eligibility;
mod error;
mod explain;
#[doc(hidden)]
pub mod fuzz;
pub mod pool;
mod privileged;
pub(crate) mod sd;
pub mod search;
mod security;
mod session;
mod timing;
mod wire;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Mod, Scope};
use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

pub use classify::{DcRefusal, classify};
pub use effective::{FineGrainedPolicy, PolicyFacts, UserPolicy};
pub use error::{BindRejection, DirectoryError, ProtectedBy, Right};
pub use privileged::PrivilegedAccount;
pub use search::{FoundUser, SearchAnswer};
pub(crate) use security::SecuritySnapshot;

use domain::{DomainCache, DomainInfo};
use explain::{Write, read_policy};
use pool::{Credential, Pool};
use session::{ConnectFailure, DcUrl, Session};
pub(crate) use wire::{Sid, human_duration};

/// Where and how the agent reaches its domain.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// `ldaps://host[:636]`, or `ldap://host[:389]` upgraded with StartTLS; tried in
    /// order, moving to the next on connection failure. Plain LDAP is refused.
    pub urls: Vec<String>,
    /// PEM of the CA(s) that must have issued the DC certificates; verification is
    /// never disabled.
    pub ca_pem: String,
    /// The agent's service account, as a DN or a UPN.
    pub bind_dn: String,
    /// Its password.
    pub bind_password: SecretString,
    /// The file the password came from, if any: read again before every new bind,
    /// so a rotated password is used without a restart.
    pub bind_password_file: Option<PathBuf>,
    /// OUs in scope (subtrees); empty means the whole domain (`defaultNamingContext`).
    pub scope_base_dns: Vec<String>,
    /// Optional group whose direct members only are in scope (membership through
    /// `primaryGroupID` does not count).
    pub scope_group_dn: Option<String>,
    /// Groups whose members — direct, nested or by primary group — are never
    /// written back (refused as protected accounts), whatever the scope says.
    pub deny_group_dns: Vec<String>,
    /// Limit for each LDAP step: TCP connect, TLS setup, bind, each search and modify.
    pub timeout: Duration,
    /// Most sessions open at once (idle or in use); operations beyond it wait.
    pub max_sessions: usize,
}

/// Default [`DirectoryConfig::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 8;

impl DirectoryConfig {
    /// A configuration with the whole domain in scope, a 10 s timeout and
    /// [`DEFAULT_MAX_SESSIONS`].
    pub fn new(
        urls: Vec<String>,
        ca_pem: impl Into<String>,
        bind_dn: impl Into<String>,
        bind_password: SecretString,
    ) -> DirectoryConfig {
        DirectoryConfig {
            urls,
            ca_pem: ca_pem.into(),
            bind_dn: bind_dn.into(),
            bind_password,
            bind_password_file: None,
            scope_base_dns: Vec::new(),
            scope_group_dn: None,
            deny_group_dns: Vec::new(),
            timeout: Duration::from_secs(10),
            max_sessions: DEFAULT_MAX_SESSIONS,
        }
    }
}

/// Who a target user is, read before a password write: the witness of
/// [`crate::ledger`] and the identifiers the control plane's throttle
/// links (a UPN and a GUID that name one person).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The `unicodePwd` version ([`Directory::password_version`]).
    pub password_version: Option<u32>,
    /// `objectGUID`.
    pub guid: Option<uuid::Uuid>,
    /// `userPrincipalName`, as the directory holds it.
    pub upn: Option<String>,
}

/// The user an operation is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// By `userPrincipalName` (matched exactly, case-insensitively, by the DC).
    Upn(String),
    /// By `objectGUID` (the cloud's on-premises immutable id).
    ObjectGuid(uuid::Uuid),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Upn(upn) => write!(f, "upn:{upn}"),
            Target::ObjectGuid(guid) => write!(f, "guid:{guid}"),
        }
    }
}

/// What a reset does besides setting the password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetOptions {
    /// Set `pwdLastSet = 0`: the user must change the password at next logon.
    pub must_change_at_next_logon: bool,
    /// Set `lockoutTime = 0` in the same write.
    pub unlock: bool,
}

/// A password and lockout policy: the domain's (from the domain root object) or a
/// fine-grained password policy's ([`effective`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// `minPwdLength`.
    pub min_length: u32,
    /// `pwdHistoryLength`.
    pub history_length: u32,
    /// `minPwdAge`.
    pub min_age: Duration,
    /// `maxPwdAge`; `None` if passwords never expire.
    pub max_age: Option<Duration>,
    /// `pwdProperties` has `DOMAIN_PASSWORD_COMPLEX`.
    pub complexity: bool,
    /// `lockoutThreshold`; 0 means never locked out.
    pub lockout_threshold: u32,
    /// `lockoutDuration`; `None` if an administrator must unlock.
    pub lockout_duration: Option<Duration>,
}

/// What the agent reports about its domain (health, pre-flight policy report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainReport {
    /// The URL that answered.
    pub dc_url: String,
    /// `defaultNamingContext`.
    pub root_dn: String,
    /// The password policy.
    pub policy: PasswordPolicy,
    /// Whether the DC advertises the policy-hints control (1.2.840.113556.1.4.2239 or
    /// .2066) that makes it enforce history on resets. Samba does not.
    pub policy_hints_supported: bool,
}

/// Handle to the domain's controllers; cheap to clone.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("urls", &self.inner.config.urls)
            .field("bind_dn", &self.inner.config.bind_dn)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: DirectoryConfig,
    pool: Pool,
    domain: DomainCache,
}

impl Directory {
    /// Validate `config` and build the handle. Nothing is contacted yet.
    pub fn new(config: DirectoryConfig) -> Result<Directory, DirectoryError> {
        if config.urls.is_empty() {
            return Err(DirectoryError::Config("no directory url".to_string()));
        }
        let urls = config
            .urls
            .iter()
            .map(|u| DcUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if config.bind_dn.trim().is_empty() {
            return Err(DirectoryError::Config("empty bind_dn".to_string()));
        }
        if config.bind_password.expose_secret().is_empty() {
            // An empty password is an unauthenticated bind, which "succeeds".
            return Err(DirectoryError::Config("empty bind_password".to_string()));
        }
        if config.max_sessions == 0 {
            return Err(DirectoryError::Config("max_sessions is 0".to_string()));
        }
        if config.timeout.is_zero() {
            return Err(DirectoryError::Config("zero timeout".to_string()));
        }
        if config.scope_base_dns.iter().any(|dn| dn.trim().is_empty()) {
            return Err(DirectoryError::Config("empty scope base DN".to_string()));
        }
        if config.deny_group_dns.iter().any(|dn| dn.trim().is_empty()) {
            return Err(DirectoryError::Config("empty deny group DN".to_string()));
        }
        let tls = session::tls_config(&config.ca_pem)?;
        let pool = Pool::new(
            urls,
            tls,
            config.bind_dn.clone(),
            Credential::new(
                config.bind_password.clone(),
                config.bind_password_file.clone(),
            ),
            config.timeout,
            config.max_sessions,
        );
        Ok(Directory {
            inner: Arc::new(Inner {
                config,
                pool,
                domain: DomainCache::default(),
            }),
        })
    }

    /// Reset the user's password (administrator reset or SSPR), optionally forcing a
    /// change at next logon and unlocking, in one write.
    #[tracing::instrument(skip_all, fields(%target, must_change = opts.must_change_at_next_logon, unlock = opts.unlock, dc))]
    pub async fn reset_password(
        &self,
        target: &Target,
        new_password: &SecretString,
        opts: ResetOptions,
    ) -> Result<(), DirectoryError> {
        require_password(new_password)?;
        let result = with_session!(self, |s| self.reset_on(s, target, new_password, opts).await);
        log_outcome("reset", &result);
        result
    }

    /// Change the user's password knowing the old one: one modify deleting the old
    /// `unicodePwd` value and adding the new, bound as the service account (the DC
    /// verifies the old password; see the module docs).
    #[tracing::instrument(skip_all, fields(%target, dc))]
    pub async fn change_password(
        &self,
        target: &Target,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<(), DirectoryError> {
        require_password(old)?;
        require_password(new)?;
        let result = with_session!(self, |s| self.change_on(s, target, old, new).await);
        log_outcome("change", &result);
        result
    }

    /// Unlock the account: `lockoutTime = 0`.
    #[tracing::instrument(skip_all, fields(%target, dc))]
    pub async fn unlock(&self, target: &Target) -> Result<(), DirectoryError> {
        let result = with_session!(self, |s| self.attribute_on(s, target, Write::Unlock).await);
        log_outcome("unlock", &result);
        result
    }

    /// Un-expire the password: `pwdLastSet = -1` (the DC stores "now").
    #[tracing::instrument(skip_all, fields(%target, dc))]
    pub async fn unexpire(&self, target: &Target) -> Result<(), DirectoryError> {
        let result = with_session!(self, |s| self
            .attribute_on(s, target, Write::Unexpire)
            .await);
        log_outcome("unexpire", &result);
        result
    }

    /// For health: whether every configured DC answers, concurrently, reusing an
    /// idle session to it (a rootDSE read) or else connecting and binding; one
    /// result per URL, in configuration order.
    #[tracing::instrument(skip_all)]
    pub async fn check_reachable(&self) -> Vec<(String, Result<(), DirectoryError>)> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.inner.pool.dc_count() {
            let inner = Arc::clone(&self.inner);
            set.spawn(async move { (i, inner.pool.probe(i).await) });
        }
        let mut out = Vec::with_capacity(self.inner.pool.dc_count());
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(r) => out.push(r),
                Err(e) => warn!(error = %e, "reachability check task failed"),
            }
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter()
            .map(|(i, r)| (self.inner.pool.url(i).to_string(), r))
            .collect()
    }

    /// How many times the password of `target` was written: the version of
    /// `unicodePwd` in the user's `replPropertyMetaData`, which every
    /// password write raises by one. The witness that tells, after the agent
    /// stopped in the middle of an operation, whether its write reached the
    /// directory (see `crate::ledger`). `None` when the user or the metadata
    /// cannot be read.
    pub async fn password_version(&self, target: &Target) -> Result<Option<u32>, DirectoryError> {
        Ok(self
            .identify(target)
            .await?
            .and_then(|i| i.password_version))
    }

    /// Who `target` is, in one search: its password version (see
    /// [`Directory::password_version`]), `objectGUID` and
    /// `userPrincipalName`. `None` when no single user matches.
    #[tracing::instrument(skip_all, fields(dc))]
    pub async fn identify(&self, target: &Target) -> Result<Option<Identity>, DirectoryError> {
        with_session!(self, |s| {
            let root_dn = self.domain(s).await?.root_dn.clone();
            let filter = eligibility::user_filter(target)?;
            let found = s
                .search_ok(
                    &root_dn,
                    Scope::Subtree,
                    &filter,
                    &["replPropertyMetaData", "objectGUID", "userPrincipalName"],
                )
                .await?;
            Ok(match found.as_slice() {
                [user] => Some(Identity {
                    password_version: user
                        .first("replPropertyMetaData")
                        .and_then(wire::unicode_pwd_version),
                    guid: user
                        .first("objectGUID")
                        .and_then(|b| uuid::Uuid::from_slice_le(b).ok()),
                    upn: user.text("userPrincipalName").map(str::to_owned),
                }),
                _ => None,
            })
        })
    }

    /// Unbind and close the idle sessions (at shutdown; sessions in use close when
    /// their operation ends).
    pub async fn close(&self) {
        self.inner.pool.close_idle().await;
    }

    /// The domain's password policy and whether the DC honours policy hints.
    #[tracing::instrument(skip_all, fields(dc))]
    pub async fn domain_report(&self) -> Result<DomainReport, DirectoryError> {
        with_session!(self, |s| {
            let root = s
                .search_ok(
                    "",
                    Scope::Base,
                    "(objectClass=*)",
                    &["defaultNamingContext", "supportedControl"],
                )
                .await?;
            let root = root.into_iter().next().unwrap_or_default();
            let controls = root.texts("supportedControl");
            let policy_hints_supported = controls
                .iter()
                .any(|c| *c == wire::POLICY_HINTS_OID || *c == wire::POLICY_HINTS_DEPRECATED_OID);
            let root_dn = self.domain(s).await?.root_dn.clone();
            let policy = read_policy(s, &root_dn).await?;
            Ok(DomainReport {
                dc_url: s.url.clone(),
                root_dn,
                policy,
                policy_hints_supported,
            })
        })
    }

    // ---- the operations, on an open session ----

    async fn reset_on(
        &self,
        s: &mut Session,
        target: &Target,
        new_password: &SecretString,
        opts: ResetOptions,
    ) -> Result<(), DirectoryError> {
        let user = self.eligible_user(s, target).await?;
        let pwd = wire::unicode_pwd(new_password);
        let mut mods: Vec<Mod<&[u8]>> = vec![Mod::Replace(
            b"unicodePwd".as_slice(),
            HashSet::from([pwd.as_slice()]),
        )];
        if opts.must_change_at_next_logon {
            mods.push(Mod::Replace(
                b"pwdLastSet".as_slice(),
                HashSet::from([b"0".as_slice()]),
            ));
        }
        if opts.unlock {
            mods.push(Mod::Replace(
                b"lockoutTime".as_slice(),
                HashSet::from([b"0".as_slice()]),
            ));
        }
        // Non-critical: Windows then applies history to the reset, Samba ignores it.
        let controls = vec![wire::policy_hints_control()];
        match s.modify(&user.object_dn, mods, controls).await? {
            Ok(()) => Ok(()),
            Err(res) => Err(self
                .explain(s, Write::Reset(opts), &user, res, Some(new_password))
                .await),
        }
    }

    async fn change_on(
        &self,
        s: &mut Session,
        target: &Target,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<(), DirectoryError> {
        let user = self.eligible_user(s, target).await?;
        let old_pwd = wire::unicode_pwd(old);
        let new_pwd = wire::unicode_pwd(new);
        let mods: Vec<Mod<&[u8]>> = vec![
            Mod::Delete(
                b"unicodePwd".as_slice(),
                HashSet::from([old_pwd.as_slice()]),
            ),
            Mod::Add(
                b"unicodePwd".as_slice(),
                HashSet::from([new_pwd.as_slice()]),
            ),
        ];
        match s.modify(&user.object_dn, mods, Vec::new()).await? {
            Ok(()) => Ok(()),
            Err(res) => Err(self.explain(s, Write::Change, &user, res, Some(new)).await),
        }
    }

    async fn attribute_on(
        &self,
        s: &mut Session,
        target: &Target,
        write: Write,
    ) -> Result<(), DirectoryError> {
        let user = self.eligible_user(s, target).await?;
        let (attr, value): (&[u8], &[u8]) = match write {
            Write::Unlock => (b"lockoutTime", b"0"),
            _ => (b"pwdLastSet", b"-1"),
        };
        let mods = vec![Mod::Replace(attr, HashSet::from([value]))];
        match s.modify(&user.object_dn, mods, Vec::new()).await? {
            Ok(()) => Ok(()),
            Err(res) => Err(self.explain(s, write, &user, res, None).await),
        }
    }

    async fn domain(&self, s: &mut Session) -> Result<Arc<DomainInfo>, DirectoryError> {
        self.inner
            .domain
            .get(
                s,
                &self.inner.config.scope_base_dns,
                &self.inner.config.deny_group_dns,
                &self.inner.config.bind_dn,
            )
            .await
    }
}

fn require_password(p: &SecretString) -> Result<(), DirectoryError> {
    if p.expose_secret().is_empty() {
        Err(DirectoryError::InvalidRequest("empty password"))
    } else {
        Ok(())
    }
}

fn log_outcome(op: &'static str, result: &Result<(), DirectoryError>) {
    match result {
        Ok(()) => info!(op, "directory write applied"),
        Err(e) => info!(op, reason = %e.reason(), error = %e, "directory operation refused"),
    }
}

/// The session broke (connection lost or no answer) before any write was sent.
pub(crate) fn failed_before_write<T>(result: &Result<T, DirectoryError>) -> bool {
    matches!(
        result,
        Err(DirectoryError::Connection {
            during_write: false,
            ..
        } | DirectoryError::Timeout {
            during_write: false,
            ..
        })
    )
}

pub(crate) fn failure_error(url: &str, f: ConnectFailure) -> DirectoryError {
    match f {
        ConnectFailure::Unreachable(detail) => DirectoryError::Unreachable {
            attempts: vec![format!("{url}: {detail}")],
        },
        ConnectFailure::Tls(detail) => DirectoryError::Tls {
            url: url.to_string(),
            detail,
        },
        ConnectFailure::Bind(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn config_is_validated() {
        let base = || {
            DirectoryConfig::new(
                vec!["ldaps://127.0.0.1:636".into()],
                "",
                "CN=svc,DC=contoso,DC=test",
                pw("x"),
            )
        };
        // No CA.
        assert!(matches!(
            Directory::new(base()),
            Err(DirectoryError::Config(_))
        ));
        let mut c = base();
        c.urls = vec![];
        assert!(matches!(Directory::new(c), Err(DirectoryError::Config(_))));
        let mut c = base();
        c.urls = vec!["ldapi:///x".into()];
        assert!(matches!(Directory::new(c), Err(DirectoryError::Config(_))));
        let mut c = base();
        c.max_sessions = 0;
        assert!(matches!(Directory::new(c), Err(DirectoryError::Config(_))));
        let mut c = base();
        c.bind_password = pw("");
        assert!(matches!(Directory::new(c), Err(DirectoryError::Config(_))));
    }

    #[test]
    fn debug_output_has_no_password() {
        let c = DirectoryConfig::new(vec![], "", "svc@contoso.test", pw("Sup3r-Secret!"));
        assert!(!format!("{c:?}").contains("Sup3r-Secret!"));
    }
}
