//! The agent's directory layer: finds the target user on a domain controller over
//! LDAPS, refuses what must never be written back (users outside the configured scope,
//! protected administrative accounts, disabled accounts), applies resets, changes,
//! unlocks and un-expiries, and turns every refusal into a typed [`DirectoryError`]
//! with a stable [`ReasonCode`](writeback_core::ReasonCode) and a message a help desk
//! can act on.
//!
//! Each operation opens its own connection: TCP, then TLS (or StartTLS for `ldap://`)
//! verified against the configured CA only, then a simple bind as the service account,
//! trying the configured URLs in order. The lookup, the checks and the write all
//! happen on that one DC, so what was read is what is written to. Operations are rare
//! (people resetting passwords), so there is no pool to keep healthy.
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

mod classify;
mod error;
pub(crate) mod sd;
mod security;
mod session;
mod wire;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapResult, Mod, Scope, ldap_escape};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

pub use classify::{DcRefusal, classify};
pub use error::{BindRejection, DirectoryError, ProtectedBy, Right};
pub(crate) use security::SecuritySnapshot;

use session::{ConnectFailure, DcUrl, Session, unexpected};
use wire::RawEntry;
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
    /// OUs in scope (subtrees); empty means the whole domain (`defaultNamingContext`).
    pub scope_base_dns: Vec<String>,
    /// Optional group whose direct members only are in scope (membership through
    /// `primaryGroupID` does not count).
    pub scope_group_dn: Option<String>,
    /// Limit for each LDAP step: TCP connect, TLS setup, bind, each search and modify.
    pub timeout: Duration,
}

impl DirectoryConfig {
    /// A configuration with the whole domain in scope and a 10 s timeout.
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
            scope_base_dns: Vec::new(),
            scope_group_dn: None,
            timeout: Duration::from_secs(10),
        }
    }
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

/// The domain's password and lockout policy (from the domain root object; fine-grained
/// password policies are not read).
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
    urls: Vec<DcUrl>,
    tls: Arc<rustls::ClientConfig>,
    domain: OnceCell<DomainInfo>,
}

/// Facts about the domain read once and kept.
#[derive(Debug, Clone)]
struct DomainInfo {
    root_dn: String,
    /// Protected groups found in this domain: (DN, well-known name).
    protected_groups: Vec<(String, &'static str)>,
}

/// BUILTIN aliases whose members are protected (AdminSDHolder's list).
const PROTECTED_BUILTIN: &[(u32, &str)] = &[
    (544, "Administrators"),
    (548, "Account Operators"),
    (549, "Server Operators"),
    (550, "Print Operators"),
    (551, "Backup Operators"),
    (552, "Replicator"),
];

/// Domain groups (by RID) whose members are protected.
const PROTECTED_DOMAIN_RIDS: &[(u32, &str)] = &[
    (512, "Domain Admins"),
    (516, "Domain Controllers"),
    (518, "Schema Admins"),
    (519, "Enterprise Admins"),
    (521, "Read-only Domain Controllers"),
    (526, "Key Admins"),
    (527, "Enterprise Key Admins"),
];

/// Accounts (by RID) that are protected themselves: Administrator, krbtgt.
const PROTECTED_ACCOUNT_RIDS: &[u32] = &[500, 502];

const USER_ATTRS: &[&str] = &[
    "objectGUID",
    "sAMAccountName",
    "displayName",
    "userAccountControl",
    "adminCount",
    "objectSid",
    "primaryGroupID",
    "pwdLastSet",
];

/// The target user as read before any write.
#[derive(Debug, Clone)]
struct User {
    dn: String,
    guid: Vec<u8>,
    sam: String,
    display_name: Option<String>,
    uac: u32,
    admin_count: i64,
    sid: Option<Sid>,
    primary_group_id: Option<u32>,
    pwd_last_set: Option<i64>,
}

impl User {
    fn from_entry(entry: RawEntry) -> User {
        User {
            guid: entry
                .first("objectGUID")
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            sam: entry.text("sAMAccountName").unwrap_or_default().to_string(),
            display_name: entry.text("displayName").map(str::to_string),
            uac: entry
                .int("userAccountControl")
                .and_then(|v| u32::try_from(v & 0xffff_ffff).ok())
                .unwrap_or(0),
            admin_count: entry.int("adminCount").unwrap_or(0),
            sid: entry.first("objectSid").and_then(Sid::from_bytes),
            primary_group_id: entry
                .int("primaryGroupID")
                .and_then(|v| u32::try_from(v).ok()),
            pwd_last_set: entry.int("pwdLastSet"),
            dn: entry.dn,
        }
    }
}

/// The write an operation makes, for explaining its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Reset(ResetOptions),
    Change,
    Unlock,
    Unexpire,
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
        if config.timeout.is_zero() {
            return Err(DirectoryError::Config("zero timeout".to_string()));
        }
        if config.scope_base_dns.iter().any(|dn| dn.trim().is_empty()) {
            return Err(DirectoryError::Config("empty scope base DN".to_string()));
        }
        let tls = session::tls_config(&config.ca_pem)?;
        Ok(Directory {
            inner: Arc::new(Inner {
                config,
                urls,
                tls,
                domain: OnceCell::new(),
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
        let mut s = self.session().await?;
        let result = self.reset_on(&mut s, target, new_password, opts).await;
        s.close().await;
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
        let mut s = self.session().await?;
        let result = self.change_on(&mut s, target, old, new).await;
        s.close().await;
        log_outcome("change", &result);
        result
    }

    /// Unlock the account: `lockoutTime = 0`.
    #[tracing::instrument(skip_all, fields(%target, dc))]
    pub async fn unlock(&self, target: &Target) -> Result<(), DirectoryError> {
        let mut s = self.session().await?;
        let result = self.attribute_on(&mut s, target, Write::Unlock).await;
        s.close().await;
        log_outcome("unlock", &result);
        result
    }

    /// Un-expire the password: `pwdLastSet = -1` (the DC stores "now").
    #[tracing::instrument(skip_all, fields(%target, dc))]
    pub async fn unexpire(&self, target: &Target) -> Result<(), DirectoryError> {
        let mut s = self.session().await?;
        let result = self.attribute_on(&mut s, target, Write::Unexpire).await;
        s.close().await;
        log_outcome("unexpire", &result);
        result
    }

    /// For health: TLS connect and bind to every configured URL, concurrently; one
    /// result per URL, in configuration order.
    #[tracing::instrument(skip_all)]
    pub async fn check_reachable(&self) -> Vec<(String, Result<(), DirectoryError>)> {
        let mut set = tokio::task::JoinSet::new();
        for (i, dc) in self.inner.urls.iter().enumerate() {
            let dc = dc.clone();
            let inner = Arc::clone(&self.inner);
            set.spawn(async move {
                let cfg = &inner.config;
                let result = match session::open(
                    &dc,
                    &inner.tls,
                    &cfg.bind_dn,
                    &cfg.bind_password,
                    cfg.timeout,
                )
                .await
                {
                    Ok(s) => {
                        s.close().await;
                        Ok(())
                    }
                    Err(f) => Err(failure_error(&dc.url, f)),
                };
                (i, dc.url, result)
            });
        }
        let mut out = Vec::with_capacity(self.inner.urls.len());
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(r) => out.push(r),
                Err(e) => warn!(error = %e, "reachability check task failed"),
            }
        }
        out.sort_by_key(|(i, _, _)| *i);
        out.into_iter().map(|(_, url, r)| (url, r)).collect()
    }

    /// The domain's password policy and whether the DC honours policy hints.
    #[tracing::instrument(skip_all, fields(dc))]
    pub async fn domain_report(&self) -> Result<DomainReport, DirectoryError> {
        let mut s = self.session().await?;
        let result = async {
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
            let root_dn = self.domain(&mut s).await?.root_dn;
            let policy = read_policy(&mut s, &root_dn).await?;
            Ok(DomainReport {
                dc_url: s.url.clone(),
                root_dn,
                policy,
                policy_hints_supported,
            })
        }
        .await;
        s.close().await;
        result
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
        match s.modify(&user.dn, mods, controls).await? {
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
        match s.modify(&user.dn, mods, Vec::new()).await? {
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
        match s.modify(&user.dn, mods, Vec::new()).await? {
            Ok(()) => Ok(()),
            Err(res) => Err(self.explain(s, write, &user, res, None).await),
        }
    }

    // ---- connection, domain facts, lookup, refusals ----

    /// A bound session to the first DC that works.
    async fn session(&self) -> Result<Session, DirectoryError> {
        let cfg = &self.inner.config;
        let mut attempts = Vec::new();
        let mut first_tls: Option<(String, String)> = None;
        for dc in &self.inner.urls {
            match session::open(
                dc,
                &self.inner.tls,
                &cfg.bind_dn,
                &cfg.bind_password,
                cfg.timeout,
            )
            .await
            {
                Ok(s) => {
                    tracing::Span::current().record("dc", s.url.as_str());
                    if !attempts.is_empty() {
                        info!(url = %s.url, skipped = attempts.len(), "failed over to the next domain controller");
                    }
                    return Ok(s);
                }
                Err(ConnectFailure::Bind(e)) => {
                    warn!(error = %e, "service account bind rejected");
                    return Err(e);
                }
                Err(ConnectFailure::Tls(detail)) => {
                    warn!(url = %dc.url, %detail, "tls with domain controller failed");
                    attempts.push(format!("{}: tls: {detail}", dc.url));
                    first_tls.get_or_insert((dc.url.clone(), detail));
                }
                Err(ConnectFailure::Unreachable(detail)) => {
                    warn!(url = %dc.url, %detail, "domain controller unreachable");
                    attempts.push(format!("{}: {detail}", dc.url));
                }
            }
        }
        // A certificate problem is more actionable than "unreachable".
        Err(match first_tls {
            Some((url, detail)) => DirectoryError::Tls { url, detail },
            None => DirectoryError::Unreachable { attempts },
        })
    }

    async fn domain(&self, s: &mut Session) -> Result<DomainInfo, DirectoryError> {
        self.inner
            .domain
            .get_or_try_init(|| load_domain(s))
            .await
            .cloned()
    }

    /// Find the target and apply every refusal rule; nothing has been written yet.
    async fn eligible_user(
        &self,
        s: &mut Session,
        target: &Target,
    ) -> Result<User, DirectoryError> {
        let domain = self.domain(s).await?;
        let filter = user_filter(target)?;
        // Domain-wide first: a UPN held by two users is ambiguous wherever they are.
        let mut found = s
            .search_ok(&domain.root_dn, Scope::Subtree, &filter, USER_ATTRS)
            .await?;
        let entry = match found.len() {
            0 => return Err(DirectoryError::UserNotFound),
            1 => found.remove(0),
            count => {
                let dns: Vec<&str> = found.iter().map(|e| e.dn.as_str()).collect();
                warn!(
                    count,
                    ?dns,
                    "target matches several users; refusing to guess"
                );
                return Err(DirectoryError::UserAmbiguous { count });
            }
        };
        let user = User::from_entry(entry);
        debug!(dn = %user.dn, "target user found");
        self.check_scope(s, &user).await?;
        check_protected(s, &domain, &user).await?;
        if user.uac & wire::UF_ACCOUNTDISABLE != 0 {
            return Err(DirectoryError::AccountDisabled { dn: user.dn });
        }
        Ok(user)
    }

    async fn check_scope(&self, s: &mut Session, user: &User) -> Result<(), DirectoryError> {
        let cfg = &self.inner.config;
        let not_in_scope = || DirectoryError::UserNotInScope {
            dn: user.dn.clone(),
        };
        if !cfg.scope_base_dns.is_empty() {
            if user.guid.is_empty() {
                return Err(not_in_scope());
            }
            let by_guid = format!("(objectGUID={})", wire::escape_bytes(&user.guid));
            let mut inside = false;
            for base in &cfg.scope_base_dns {
                match s
                    .search(base, Scope::Subtree, &by_guid, &["1.1"], Vec::new())
                    .await?
                {
                    Ok(entries) if !entries.is_empty() => {
                        inside = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(res) if res.rc == classify::rc::NO_SUCH_OBJECT => {
                        warn!(base = %base, "configured scope base does not exist");
                        return Err(DirectoryError::Config(format!(
                            "scope base {base:?} does not exist in the directory"
                        )));
                    }
                    Err(res) => return Err(unexpected("search", &s.url, res)),
                }
            }
            if !inside {
                return Err(not_in_scope());
            }
        }
        if let Some(group) = &cfg.scope_group_dn {
            let filter = format!("(memberOf={})", ldap_escape(group.as_str()));
            let hits = s
                .search_ok(&user.dn, Scope::Base, &filter, &["1.1"])
                .await?;
            if hits.is_empty() {
                return Err(not_in_scope());
            }
        }
        Ok(())
    }

    /// Turn a refused write into the most precise error we can, reading what is
    /// needed to explain it (policy, DACL, effective attributes).
    async fn explain(
        &self,
        s: &mut Session,
        write: Write,
        user: &User,
        res: LdapResult,
        new_password: Option<&SecretString>,
    ) -> DirectoryError {
        let refusal = classify(res.rc, &res.text);
        debug!(rc = res.rc, ?refusal, "write refused");
        match refusal {
            DcRefusal::PasswordTooShort => DirectoryError::PasswordTooShort {
                min_length: match classify::stated_min_length(&res.text) {
                    Some(n) => Some(n),
                    None => self.policy(s).await.map(|p| p.min_length),
                },
            },
            DcRefusal::PasswordComplexity => DirectoryError::PasswordComplexity,
            DcRefusal::PasswordInHistory => DirectoryError::PasswordInHistory {
                history_length: self.policy(s).await.map(|p| p.history_length),
            },
            DcRefusal::PasswordTooYoung => {
                let min_age = self.policy(s).await.map(|p| p.min_age);
                too_young(min_age, user.pwd_last_set)
            }
            DcRefusal::PasswordPolicy => match (self.policy(s).await, new_password) {
                (Some(policy), Some(pw)) => {
                    diagnose_policy(&policy, pw, user, write, OffsetDateTime::now_utc())
                        .unwrap_or_else(|| unexpected("modify", &s.url, res))
                }
                _ => unexpected("modify", &s.url, res),
            },
            DcRefusal::WrongOldPassword => DirectoryError::WrongOldPassword,
            DcRefusal::AccountLockedOut => DirectoryError::AccountLockedOut,
            DcRefusal::AccountDisabled => DirectoryError::AccountDisabled {
                dn: user.dn.clone(),
            },
            DcRefusal::InsufficientAccess => explain_access(s, write, user, res.text).await,
            DcRefusal::NoSuchObject => DirectoryError::UserNotFound,
            _ => unexpected("modify", &s.url, res),
        }
    }

    async fn policy(&self, s: &mut Session) -> Option<PasswordPolicy> {
        let root_dn = match self.domain(s).await {
            Ok(d) => d.root_dn,
            Err(_) => return None,
        };
        match read_policy(s, &root_dn).await {
            Ok(p) => Some(p),
            Err(e) => {
                debug!(error = %e, "cannot read the password policy");
                None
            }
        }
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

fn failure_error(url: &str, f: ConnectFailure) -> DirectoryError {
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

/// `(&(objectCategory=person)(objectClass=user)(...))` for the target, values escaped.
fn user_filter(target: &Target) -> Result<String, DirectoryError> {
    let clause = match target {
        Target::Upn(upn) => {
            if upn.trim().is_empty() {
                return Err(DirectoryError::InvalidRequest("empty user principal name"));
            }
            format!("(userPrincipalName={})", ldap_escape(upn.as_str()))
        }
        Target::ObjectGuid(guid) => {
            format!("(objectGUID={})", wire::escape_bytes(&guid.to_bytes_le()))
        }
    };
    Ok(format!(
        "(&(objectCategory=person)(objectClass=user){clause})"
    ))
}

async fn load_domain(s: &mut Session) -> Result<DomainInfo, DirectoryError> {
    let root = s
        .search_ok(
            "",
            Scope::Base,
            "(objectClass=*)",
            &["defaultNamingContext"],
        )
        .await?;
    let root_dn = root
        .first()
        .and_then(|e| e.text("defaultNamingContext"))
        .map(str::to_string)
        .ok_or_else(|| DirectoryError::Directory {
            op: "search",
            rc: 0,
            text: "rootDSE has no defaultNamingContext".to_string(),
        })?;
    let domain = s
        .search_ok(&root_dn, Scope::Base, "(objectClass=*)", &["objectSid"])
        .await?;
    let domain_sid = domain
        .first()
        .and_then(|e| e.first("objectSid"))
        .and_then(Sid::from_bytes);
    let mut wanted: Vec<(Sid, &'static str)> = PROTECTED_BUILTIN
        .iter()
        .map(|(rid, name)| (Sid::builtin(*rid), *name))
        .collect();
    if let Some(sid) = &domain_sid {
        wanted.extend(
            PROTECTED_DOMAIN_RIDS
                .iter()
                .map(|(rid, name)| (sid.with_rid(*rid), *name)),
        );
    }
    let clauses: String = wanted
        .iter()
        .map(|(sid, _)| format!("(objectSid={})", wire::escape_bytes(&sid.to_bytes())))
        .collect();
    let filter = format!("(&(objectClass=group)(|{clauses}))");
    let groups = s
        .search_ok(&root_dn, Scope::Subtree, &filter, &["objectSid"])
        .await?;
    let protected_groups = groups
        .into_iter()
        .filter_map(|g| {
            let sid = g.first("objectSid").and_then(Sid::from_bytes)?;
            let name = wanted.iter().find(|(w, _)| *w == sid)?.1;
            Some((g.dn, name))
        })
        .collect::<Vec<_>>();
    info!(
        root_dn = %root_dn,
        domain_sid = ?domain_sid.as_ref().map(ToString::to_string),
        protected_groups = protected_groups.len(),
        "domain facts loaded"
    );
    Ok(DomainInfo {
        root_dn,
        protected_groups,
    })
}

/// The well-known name of a protected group SID, if it is one.
fn protected_group_name(sid: &Sid) -> Option<&'static str> {
    let rid = sid.rid()?;
    if sid.is_builtin() {
        PROTECTED_BUILTIN
            .iter()
            .find(|(r, _)| *r == rid)
            .map(|(_, n)| *n)
    } else if sid.is_domain_account() {
        PROTECTED_DOMAIN_RIDS
            .iter()
            .find(|(r, _)| *r == rid)
            .map(|(_, n)| *n)
    } else {
        None
    }
}

/// Protected accounts are never written back: `adminCount=1`, the built-in
/// Administrator and krbtgt, and members — direct, nested or by primary group — of
/// the protected groups. Membership is read from `tokenGroups` (transitive, includes
/// the primary group and universal groups of other domains) and checked again with
/// `LDAP_MATCHING_RULE_IN_CHAIN` against the groups found in this domain, in case
/// the service account may not read `tokenGroups`.
async fn check_protected(
    s: &mut Session,
    domain: &DomainInfo,
    user: &User,
) -> Result<(), DirectoryError> {
    let protected = |by| DirectoryError::ProtectedAccount {
        dn: user.dn.clone(),
        by,
    };
    if user.admin_count == 1 {
        return Err(protected(ProtectedBy::AdminCount));
    }
    if let Some(sid) = &user.sid
        && sid.is_domain_account()
        && sid
            .rid()
            .is_some_and(|rid| PROTECTED_ACCOUNT_RIDS.contains(&rid))
    {
        return Err(protected(ProtectedBy::BuiltinAccount));
    }
    if let Some(pg) = user.primary_group_id
        && let Some((_, name)) = PROTECTED_DOMAIN_RIDS.iter().find(|(r, _)| *r == pg)
    {
        return Err(protected(ProtectedBy::Group(name)));
    }
    let token = s
        .search_ok(&user.dn, Scope::Base, "(objectClass=*)", &["tokenGroups"])
        .await?;
    let sids: Vec<Sid> = token
        .first()
        .map(|e| {
            e.values("tokenGroups")
                .iter()
                .filter_map(|v| Sid::from_bytes(v))
                .collect()
        })
        .unwrap_or_default();
    if sids.is_empty() {
        debug!("tokenGroups not readable; relying on the in-chain check");
    }
    if let Some(name) = sids.iter().find_map(protected_group_name) {
        return Err(protected(ProtectedBy::Group(name)));
    }
    if domain.protected_groups.is_empty() {
        return Ok(());
    }
    let any: String = domain
        .protected_groups
        .iter()
        .map(|(dn, _)| in_chain_clause(dn))
        .collect();
    let hits = s
        .search_ok(&user.dn, Scope::Base, &format!("(|{any})"), &["1.1"])
        .await?;
    if hits.is_empty() {
        return Ok(());
    }
    // Name the group (rare path: only for protected users).
    for (dn, name) in &domain.protected_groups {
        let hit = s
            .search_ok(&user.dn, Scope::Base, &in_chain_clause(dn), &["1.1"])
            .await?;
        if !hit.is_empty() {
            return Err(protected(ProtectedBy::Group(name)));
        }
    }
    Err(protected(ProtectedBy::Group("a protected group")))
}

fn in_chain_clause(group_dn: &str) -> String {
    format!(
        "(memberOf:{}:={})",
        wire::IN_CHAIN_RULE,
        ldap_escape(group_dn)
    )
}

async fn read_policy(s: &mut Session, root_dn: &str) -> Result<PasswordPolicy, DirectoryError> {
    let entries = s
        .search_ok(
            root_dn,
            Scope::Base,
            "(objectClass=*)",
            &[
                "minPwdLength",
                "pwdHistoryLength",
                "minPwdAge",
                "maxPwdAge",
                "pwdProperties",
                "lockoutThreshold",
                "lockoutDuration",
            ],
        )
        .await?;
    let e = entries.into_iter().next().unwrap_or_default();
    Ok(policy_from_entry(&e))
}

fn policy_from_entry(e: &RawEntry) -> PasswordPolicy {
    let count = |name| e.int(name).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    let interval = |name| e.int(name).and_then(wire::interval_to_duration);
    PasswordPolicy {
        min_length: count("minPwdLength"),
        history_length: count("pwdHistoryLength"),
        min_age: interval("minPwdAge").unwrap_or(Duration::ZERO),
        max_age: interval("maxPwdAge").filter(|d| !d.is_zero()),
        complexity: e.int("pwdProperties").unwrap_or(0) & 1 != 0,
        lockout_threshold: count("lockoutThreshold"),
        lockout_duration: interval("lockoutDuration"),
    }
}

fn too_young(min_age: Option<Duration>, pwd_last_set: Option<i64>) -> DirectoryError {
    let next_change = match (min_age, pwd_last_set.and_then(wire::filetime_to_datetime)) {
        (Some(age), Some(set)) => Some(set + age),
        _ => None,
    };
    DirectoryError::PasswordTooYoung {
        min_age,
        next_change,
    }
}

/// Explain an opaque `0000052D` (Windows says nothing more) from the policy: length
/// and complexity are checked here, the minimum age from `pwdLastSet`; what is left is
/// history, the one rule only the DC can check. `None` if no rule explains it.
fn diagnose_policy(
    policy: &PasswordPolicy,
    new_password: &SecretString,
    user: &User,
    write: Write,
    now: OffsetDateTime,
) -> Option<DirectoryError> {
    let pw = new_password.expose_secret();
    let len = u32::try_from(pw.chars().count()).unwrap_or(u32::MAX);
    if len < policy.min_length {
        return Some(DirectoryError::PasswordTooShort {
            min_length: Some(policy.min_length),
        });
    }
    if policy.complexity && !wire::meets_complexity(pw, &user.sam, user.display_name.as_deref()) {
        return Some(DirectoryError::PasswordComplexity);
    }
    if write == Write::Change
        && !policy.min_age.is_zero()
        && let Some(set) = user.pwd_last_set.and_then(wire::filetime_to_datetime)
        && set + policy.min_age > now
    {
        return Some(too_young(Some(policy.min_age), user.pwd_last_set));
    }
    if policy.history_length > 0 {
        return Some(DirectoryError::PasswordInHistory {
            history_length: Some(policy.history_length),
        });
    }
    None
}

/// rc 50: first, a protected DACL (inheritance disabled) explains it; otherwise name
/// the rights this write needs that `allowedAttributesEffective` shows missing, or
/// the extended right if every attribute is writable.
async fn explain_access(
    s: &mut Session,
    write: Write,
    user: &User,
    text: String,
) -> DirectoryError {
    let dn = user.dn.clone();
    let sd = s
        .search(
            &user.dn,
            Scope::Base,
            "(objectClass=*)",
            &["nTSecurityDescriptor"],
            vec![wire::sd_flags_dacl_control()],
        )
        .await;
    if let Ok(Ok(entries)) = &sd
        && let Some(bytes) = entries
            .first()
            .and_then(|e| e.first("nTSecurityDescriptor"))
        && sd::dacl_protected(bytes) == Some(true)
    {
        warn!(%dn, %text, "insufficient access on a user whose DACL does not inherit");
        return DirectoryError::InheritanceDisabled { dn, text };
    }
    let writable: HashSet<String> = match s
        .search(
            &user.dn,
            Scope::Base,
            "(objectClass=*)",
            &["allowedAttributesEffective"],
            Vec::new(),
        )
        .await
    {
        Ok(Ok(entries)) => entries
            .first()
            .map(|e| {
                e.texts("allowedAttributesEffective")
                    .into_iter()
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default(),
        _ => HashSet::new(),
    };
    let missing = missing_rights(write, &writable);
    warn!(%dn, ?missing, %text, "insufficient access");
    DirectoryError::InsufficientAccess { dn, missing, text }
}

/// Which rights `write` needs that are missing, given the lowercase names of the
/// attributes the service account may write on the user.
fn missing_rights(write: Write, writable: &HashSet<String>) -> Vec<Right> {
    let can = |attr: &str| writable.contains(attr);
    let mut missing = Vec::new();
    match write {
        Write::Reset(opts) => {
            if opts.must_change_at_next_logon && !can("pwdlastset") {
                missing.push(Right::WritePwdLastSet);
            }
            if opts.unlock && !can("lockouttime") {
                missing.push(Right::WriteLockoutTime);
            }
            if missing.is_empty() {
                missing.push(Right::ResetPassword);
            }
        }
        Write::Change => missing.push(Right::ChangePassword),
        Write::Unlock => missing.push(Right::WriteLockoutTime),
        Write::Unexpire => {
            if can("pwdlastset") {
                missing.push(Right::UnexpirePassword);
            } else {
                missing.push(Right::WritePwdLastSet);
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            dn: "CN=alice,OU=Staff,DC=contoso,DC=test".into(),
            guid: vec![1; 16],
            sam: "alice".into(),
            display_name: Some("Alice Wonder".into()),
            uac: 512,
            admin_count: 0,
            sid: None,
            primary_group_id: Some(513),
            // 2026-11-24 20:53:34 UTC
            pwd_last_set: Some(134_400_272_144_271_010),
        }
    }

    fn policy() -> PasswordPolicy {
        PasswordPolicy {
            min_length: 7,
            history_length: 24,
            min_age: Duration::from_secs(86_400),
            max_age: Some(Duration::from_secs(42 * 86_400)),
            complexity: true,
            lockout_threshold: 0,
            lockout_duration: None,
        }
    }

    fn pw(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn filters_escape_what_the_caller_sends() {
        let f = user_filter(&Target::Upn("*)(sAMAccountName=*".into())).unwrap();
        assert_eq!(
            f,
            "(&(objectCategory=person)(objectClass=user)(userPrincipalName=\\2a\\29\\28sAMAccountName=\\2a))"
        );
        assert!(ldap3::parse_filter(&f).is_ok());
        let guid = uuid::Uuid::parse_str("01020304-0506-0708-090a-0b0c0d0e0f10").unwrap();
        let f = user_filter(&Target::ObjectGuid(guid)).unwrap();
        assert!(f.contains("(objectGUID=\\04\\03\\02\\01\\06\\05\\08\\07\\09\\0a"));
        assert!(matches!(
            user_filter(&Target::Upn(" ".into())),
            Err(DirectoryError::InvalidRequest(_))
        ));
        let c = in_chain_clause("CN=Admins (EU),OU=x,DC=contoso,DC=test");
        assert_eq!(
            c,
            "(memberOf:1.2.840.113556.1.4.1941:=CN=Admins \\28EU\\29,OU=x,DC=contoso,DC=test)"
        );
        assert!(ldap3::parse_filter(&c).is_ok());
    }

    #[test]
    fn the_policy_is_read_from_the_domain_root() {
        // Samba 4.17's defaults after provisioning.
        let e = RawEntry::with(
            "DC=contoso,DC=test",
            &[
                ("minPwdLength", &[b"7"]),
                ("pwdHistoryLength", &[b"24"]),
                ("minPwdAge", &[b"-864000000000"]),
                ("maxPwdAge", &[b"-36288000000000"]),
                ("pwdProperties", &[b"1"]),
                ("lockoutThreshold", &[b"0"]),
                ("lockoutDuration", &[b"-18000000000"]),
            ],
        );
        let p = policy_from_entry(&e);
        assert_eq!(p.min_length, 7);
        assert_eq!(p.history_length, 24);
        assert_eq!(p.min_age, Duration::from_secs(86_400));
        assert_eq!(p.max_age, Some(Duration::from_secs(42 * 86_400)));
        assert!(p.complexity);
        assert_eq!(p.lockout_duration, Some(Duration::from_secs(30 * 60)));
        let never = RawEntry::with(
            "DC=x",
            &[
                ("maxPwdAge", &[b"-9223372036854775808"]),
                ("lockoutDuration", &[b"-9223372036854775808"]),
            ],
        );
        let p = policy_from_entry(&never);
        assert_eq!(p.max_age, None);
        assert_eq!(p.lockout_duration, None);
    }

    #[test]
    fn protected_groups_are_known_by_sid() {
        assert_eq!(
            protected_group_name(&Sid::builtin(544)),
            Some("Administrators")
        );
        assert_eq!(
            protected_group_name(&Sid::builtin(551)),
            Some("Backup Operators")
        );
        assert_eq!(protected_group_name(&Sid::builtin(545)), None); // Users
        let domain = Sid::from_bytes(&[
            1, 4, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0,
        ])
        .unwrap();
        assert_eq!(
            protected_group_name(&domain.with_rid(512)),
            Some("Domain Admins")
        );
        assert_eq!(
            protected_group_name(&domain.with_rid(519)),
            Some("Enterprise Admins")
        );
        assert_eq!(protected_group_name(&domain.with_rid(513)), None); // Domain Users
        assert_eq!(protected_group_name(&domain), None);
    }

    #[test]
    fn an_opaque_policy_failure_is_explained_from_the_policy() {
        let now = wire::filetime_to_datetime(134_400_272_144_271_010).unwrap()
            + Duration::from_secs(3_600);
        let reset = Write::Reset(ResetOptions::default());
        let d = |p: &str, w| diagnose_policy(&policy(), &pw(p), &user(), w, now);
        assert!(matches!(
            d("Ab1!", reset),
            Some(DirectoryError::PasswordTooShort {
                min_length: Some(7)
            })
        ));
        assert!(matches!(
            d("alllowercase", reset),
            Some(DirectoryError::PasswordComplexity)
        ));
        assert!(matches!(
            d("Alice-Passw0rd!", reset),
            Some(DirectoryError::PasswordComplexity)
        ));
        // A change an hour after the last one, with a one-day minimum age.
        match d("Fresh-Passw0rd!", Write::Change) {
            Some(DirectoryError::PasswordTooYoung {
                min_age,
                next_change,
            }) => {
                assert_eq!(min_age, Some(Duration::from_secs(86_400)));
                assert_eq!(
                    next_change.map(wire::human_time).as_deref(),
                    Some("2026-11-25 20:53 UTC")
                );
            }
            other => panic!("{other:?}"),
        }
        // A reset is not subject to the minimum age: history is what is left.
        assert!(matches!(
            d("Fresh-Passw0rd!", reset),
            Some(DirectoryError::PasswordInHistory {
                history_length: Some(24)
            })
        ));
        let no_history = PasswordPolicy {
            history_length: 0,
            ..policy()
        };
        assert!(
            diagnose_policy(&no_history, &pw("Fresh-Passw0rd!"), &user(), reset, now).is_none()
        );
    }

    #[test]
    fn missing_rights_are_named_per_write() {
        let none = HashSet::new();
        let both: HashSet<String> = ["pwdlastset".to_string(), "lockouttime".to_string()].into();
        let reset = |must, unlock| {
            Write::Reset(ResetOptions {
                must_change_at_next_logon: must,
                unlock,
            })
        };
        assert_eq!(
            missing_rights(reset(false, false), &none),
            vec![Right::ResetPassword]
        );
        assert_eq!(
            missing_rights(reset(true, true), &none),
            vec![Right::WritePwdLastSet, Right::WriteLockoutTime]
        );
        assert_eq!(
            missing_rights(reset(true, true), &both),
            vec![Right::ResetPassword]
        );
        assert_eq!(
            missing_rights(Write::Change, &both),
            vec![Right::ChangePassword]
        );
        assert_eq!(
            missing_rights(Write::Unlock, &none),
            vec![Right::WriteLockoutTime]
        );
        assert_eq!(
            missing_rights(Write::Unexpire, &none),
            vec![Right::WritePwdLastSet]
        );
        assert_eq!(
            missing_rights(Write::Unexpire, &both),
            vec![Right::UnexpirePassword]
        );
    }

    #[test]
    fn the_next_allowed_change_is_last_set_plus_min_age() {
        match too_young(
            Some(Duration::from_secs(2 * 86_400)),
            Some(134_400_272_144_271_010),
        ) {
            DirectoryError::PasswordTooYoung { next_change, .. } => assert_eq!(
                next_change.map(wire::human_time).as_deref(),
                Some("2026-11-26 20:53 UTC")
            ),
            other => panic!("{other:?}"),
        }
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
        c.bind_password = pw("");
        assert!(matches!(Directory::new(c), Err(DirectoryError::Config(_))));
    }

    #[test]
    fn debug_output_has_no_password() {
        let c = DirectoryConfig::new(vec![], "", "svc@contoso.test", pw("Sup3r-Secret!"));
        assert!(!format!("{c:?}").contains("Sup3r-Secret!"));
    }
}
