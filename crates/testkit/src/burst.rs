//! A burst of operations for the fault tests, and the invariants they
//! check against the directory itself: users `{prefix}0…` of a DC, each
//! the target of one operation with its own operation id — a help-desk
//! reset; for the first [`Burst::with_changes`] users a change (old → new)
//! by the user; with [`Burst::with_every_kind`], resets, changes, forced
//! changes of an expired password and help-desk unlocks of a locked-out
//! account in turn — while the test kills, restarts or partitions a
//! component; afterwards every caller's answer, every record and the
//! directory must agree:
//!
//! 1. every operation has exactly one record, final and not unknown;
//! 2. the record agrees with the directory: for a password write, `OK` ⇔
//!    the new password binds and the user's `unicodePwd` version rose by
//!    one (and, for a forced change, `pwdLastSet` is no longer 0); a
//!    failure ⇔ the version did not move and the new password does not
//!    bind; for an unlock, `OK` ⇔ `lockoutTime` is 0, a failure ⇔ the
//!    account is still locked, and the password is never written;
//! 3. no password was written twice (the version never rose by more than one);
//! 4. the caller's reason is the record's reason.

// Test assertions: a failure here is the calling test's failure.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use ldap3::Mod;
use writeback_control_plane::store::{OperationRow, OperationState, Store};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::SambaDc;
use crate::stack::Client;

/// How long a caller keeps retrying its id for a definite answer.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The users of a burst, created on a DC, with their password versions.
pub struct Burst {
    prefix: String,
    domain: String,
    start: String,
    dns: Vec<String>,
    kinds: Vec<Kind>,
    before: Vec<u32>,
}

/// What a burst does to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A help desk resets the password.
    Reset,
    /// The user changes the password (old → new).
    Change,
    /// The user changes an expired password (`pwdLastSet` = 0 beforehand).
    ForcedChange,
    /// A help desk unlocks the locked-out account.
    Unlock,
}

impl Kind {
    /// Whether the user asks for it (else a help desk does).
    pub fn is_self_service(self) -> bool {
        matches!(self, Kind::Change | Kind::ForcedChange)
    }
}

/// One caller's end: user index, operation id, final reason, attempts.
pub type Answer = (usize, String, ReasonCode, u32);

/// One password write a caller makes.
#[derive(Debug, Clone)]
pub enum Write {
    /// A reset of `upn` to `password` (by a help desk).
    Reset { upn: String, password: String },
    /// A change of `upn`'s password from `old` to `new` (by the user);
    /// `forced` for the change of an expired password.
    Change {
        upn: String,
        old: String,
        new: String,
        forced: bool,
    },
    /// An unlock of `upn`'s account (by a help desk).
    Unlock { upn: String },
}

/// Sends `write` with operation id `id` to `clients[0]`, retrying with that
/// id until the answer is definite, as a client should when a control
/// plane, relay or agent fails: a broken connection (no writeback error
/// details; the next client — another control-plane replica — is tried),
/// `OPERATION_IN_PROGRESS` and `TIMEOUT` (outcome not known yet) are
/// retried every 500 ms for up to `patience`. Returns the final reason and
/// the number of attempts.
pub async fn write_until_known(
    clients: &[Client],
    write: &Write,
    id: &str,
    patience: Duration,
) -> (ReasonCode, u32) {
    let deadline = Instant::now() + patience;
    let mut attempts = 0;
    let mut at = 0;
    loop {
        attempts += 1;
        let c = &clients[at % clients.len()];
        let user = |upn: &str| {
            Some(pb::UserRef {
                by: Some(pb::user_ref::By::Upn(upn.to_owned())),
            })
        };
        let answer = match write {
            Write::Reset { upn, password } => c
                .passwords()
                .reset_password(c.request(pb::ResetPasswordRequest {
                    user: user(upn),
                    new_password: password.clone(),
                    operation_id: id.to_owned(),
                    ..Default::default()
                }))
                .await
                .map(|_| ()),
            Write::Change {
                upn,
                old,
                new,
                forced,
            } => c
                .passwords()
                .change_password(c.request(pb::ChangePasswordRequest {
                    user: user(upn),
                    old_password: old.clone(),
                    new_password: new.clone(),
                    operation_id: id.to_owned(),
                    forced: *forced,
                    ..Default::default()
                }))
                .await
                .map(|_| ()),
            Write::Unlock { upn } => c
                .passwords()
                .unlock_account(c.request(pb::UnlockAccountRequest {
                    user: user(upn),
                    operation_id: id.to_owned(),
                    ..Default::default()
                }))
                .await
                .map(|_| ()),
        };
        let reason = match answer {
            Ok(()) => return (ReasonCode::Ok, attempts),
            Err(s) if s.details().is_empty() => {
                at += 1;
                None
            }
            Err(s) => Some(writeback_core::failure_of(&s).reason),
        };
        match reason {
            None | Some(ReasonCode::OperationInProgress | ReasonCode::Timeout)
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            None => return (ReasonCode::Unavailable, attempts),
            Some(other) => return (other, attempts),
        }
    }
}

/// The record of every answer's operation, in answer order.
pub async fn records(store: &Store, tenant: &str, answers: &[Answer]) -> Vec<OperationRow> {
    let mut rows = Vec::new();
    for (_, id, ..) in answers {
        rows.push(
            store
                .get_operation(tenant, id)
                .await
                .expect("store")
                .expect("one record"),
        );
    }
    rows
}

/// A DC for `domain` for a fault test: started (panicking, never
/// skipping, when Samba cannot start) with no minimum password age, so a
/// burst may write a password set moments before.
pub async fn fault_dc(domain: &str) -> SambaDc {
    let dc = SambaDc::start(domain)
        .await
        .expect("samba DC (scripts/install-deps.sh)");
    dc.set_password_settings(&["--min-pwd-age=0"])
        .await
        .expect("samba-tool domain passwordsettings");
    dc
}

/// A [`fault_dc`] for a burst of every kind ([`Burst::with_every_kind`]):
/// its accounts also lock after 3 wrong passwords, so there are locked-out
/// accounts to unlock.
pub async fn every_kind_dc(domain: &str) -> SambaDc {
    let dc = fault_dc(domain).await;
    dc.set_password_settings(&["--account-lockout-threshold=3"])
        .await
        .expect("samba-tool domain passwordsettings");
    dc
}

/// What a burst ended with, once every invariant held.
#[derive(Debug, Default)]
pub struct Tally {
    /// Applied once, answered and recorded `OK`.
    pub ok: usize,
    /// Not applied, answered and recorded with this reason: (user, reason).
    pub failed: Vec<(usize, ReasonCode)>,
    /// Callers that needed more than one attempt.
    pub retried: usize,
}

impl Burst {
    /// Creates `users` users `{prefix}N` with password `start` on `dc`;
    /// every one is reset by a help desk.
    pub async fn create(dc: &SambaDc, prefix: &str, users: usize, start: &str) -> Burst {
        let mut dns = Vec::new();
        for i in 0..users {
            dns.push(
                dc.create_user(&format!("{prefix}{i}"), start)
                    .await
                    .expect("burst user"),
            );
        }
        Burst {
            prefix: prefix.to_owned(),
            domain: dc.domain().to_owned(),
            start: start.to_owned(),
            kinds: vec![Kind::Reset; dns.len()],
            dns,
            before: Vec::new(),
        }
    }

    /// The first `n` users change their own password (old → new) instead.
    pub fn with_changes(mut self, n: usize) -> Burst {
        for kind in self.kinds.iter_mut().take(n) {
            *kind = Kind::Change;
        }
        self
    }

    /// User `i` gets a reset, a change, a forced change or an unlock, in
    /// turn (`i` mod 4). Call [`Burst::prepare`] before the burst: it
    /// expires and locks out the users those need.
    pub fn with_every_kind(mut self) -> Burst {
        const TURN: [Kind; 4] = [Kind::Reset, Kind::Change, Kind::ForcedChange, Kind::Unlock];
        for (i, kind) in self.kinds.iter_mut().enumerate() {
            *kind = TURN[i % TURN.len()];
        }
        self
    }

    /// Puts the users in the state their operation needs: a forced change's
    /// password expired (`pwdLastSet` = 0), an unlock's account locked out
    /// by wrong passwords (the DC needs an account-lockout threshold of at
    /// most 3). Panics, saying why, when the DC does not comply.
    pub async fn prepare(&self, dc: &SambaDc) {
        for (i, dn) in self.dns.iter().enumerate() {
            match self.kinds[i] {
                Kind::ForcedChange => {
                    let mut ldap = dc.ldap_admin().await.expect("LDAP");
                    ldap.modify(dn, vec![Mod::Replace("pwdLastSet", ["0"].into())])
                        .await
                        .and_then(|r| r.success())
                        .expect("expire the password");
                    let _ = ldap.unbind().await;
                }
                Kind::Unlock => {
                    for _ in 0..3 {
                        assert!(
                            !dc.try_bind(dn, "Wrong-Pass-0!").await.expect("bind"),
                            "a wrong password binds"
                        );
                    }
                    assert!(
                        self.locked_out(dc, i).await,
                        "{}: not locked out after 3 wrong passwords (set the DC's \
                         --account-lockout-threshold=3)",
                        self.upn(i)
                    );
                }
                Kind::Reset | Kind::Change => {}
            }
        }
    }

    /// Whether user `i`'s account is locked out (`lockoutTime` > 0).
    async fn locked_out(&self, dc: &SambaDc, i: usize) -> bool {
        let entry = dc
            .read_entry(&self.dns[i], &["lockoutTime", "pwdLastSet"])
            .await
            .expect("read the user");
        attr(&entry, "lockoutTime") > 0
    }

    /// How many users the burst writes.
    pub fn len(&self) -> usize {
        self.dns.len()
    }

    /// Whether the burst has no users.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty()
    }

    /// What the burst does to the `i`th user.
    pub fn kind(&self, i: usize) -> Kind {
        self.kinds[i]
    }

    /// Whether the `i`th user asks for its operation (rather than a help
    /// desk).
    pub fn is_self_service(&self, i: usize) -> bool {
        self.kinds[i].is_self_service()
    }

    /// The `i`th user's UPN.
    pub fn upn(&self, i: usize) -> String {
        format!("{}{i}@{}", self.prefix, self.domain)
    }

    /// The `i`th user's new password.
    pub fn password(&self, i: usize) -> String {
        format!("{}-{i}-New-1!", self.prefix)
    }

    /// The `i`th user's write.
    pub fn write(&self, i: usize) -> Write {
        let upn = self.upn(i);
        match self.kinds[i] {
            Kind::Reset => Write::Reset {
                upn,
                password: self.password(i),
            },
            Kind::Change | Kind::ForcedChange => Write::Change {
                upn,
                old: self.start.clone(),
                new: self.password(i),
                forced: self.kinds[i] == Kind::ForcedChange,
            },
            Kind::Unlock => Write::Unlock { upn },
        }
    }

    /// Reads every user's password version (call just before the burst).
    pub async fn remember(&mut self, dc: &SambaDc) {
        self.before.clear();
        for dn in &self.dns {
            self.before
                .push(dc.password_writes(dn).await.expect("password version"));
        }
    }

    /// Whether the `i`th user's password was written since [`Burst::remember`].
    pub async fn applied(&self, dc: &SambaDc, i: usize) -> bool {
        dc.password_writes(&self.dns[i])
            .await
            .is_ok_and(|v| v > self.before[i])
    }

    /// [`Burst::run_with`], every write sent to `client`.
    pub async fn run(
        &self,
        client: &Client,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> (Vec<Answer>, Duration) {
        self.run_with(|_| vec![client.clone()], interrupt).await
    }

    /// Writes every user, 2 ms apart, each caller retrying its id until the
    /// answer is definite ([`write_until_known`]) through the clients
    /// `callers(i)` gives for user `i` (its own for a change, a help desk's
    /// for a reset; several when there are replicas); `interrupt` runs
    /// meanwhile (it kills, restarts or cuts something). Returns the
    /// answers in user order and the time until the last one.
    pub async fn run_with(
        &self,
        callers: impl Fn(usize) -> Vec<Client>,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> (Vec<Answer>, Duration) {
        let started = Instant::now();
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..self.dns.len() {
            let clients = callers(i);
            let write = self.write(i);
            let id = uuid::Uuid::new_v4().to_string();
            burst.spawn(async move {
                tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
                let (reason, attempts) = write_until_known(&clients, &write, &id, PATIENCE).await;
                (i, id, reason, attempts)
            });
        }
        interrupt.await;
        let mut answers = Vec::new();
        while let Some(done) = burst.join_next().await {
            answers.push(done.expect("burst task"));
        }
        answers.sort_by_key(|(i, ..)| *i);
        (answers, started.elapsed())
    }

    /// Asserts the four invariants (see the module docs) for every answer
    /// and says how the burst ended.
    pub async fn check(
        &self,
        dc: &SambaDc,
        store: &Store,
        tenant: &str,
        answers: &[Answer],
    ) -> Tally {
        let mut tally = Tally::default();
        for (i, id, reason, attempts) in answers {
            let upn = self.upn(*i);
            if *attempts > 1 {
                tally.retried += 1;
            }
            let row = store
                .get_operation(tenant, id)
                .await
                .expect("store")
                .unwrap_or_else(|| panic!("{upn}: no record of {id} ({reason})"));
            assert_ne!(row.state, OperationState::Pending, "{upn}: {row:?}");
            assert!(!row.outcome_unknown(), "{upn}: still unknown: {row:?}");
            assert_eq!(
                row.reason_code.as_deref(),
                Some(reason.as_str()),
                "{upn}: the caller was told {reason}, the record says {row:?}"
            );
            let writes = dc
                .password_writes(&self.dns[*i])
                .await
                .expect("password version");
            assert!(
                writes <= self.before[*i] + 1,
                "{upn}: the password was written {} times",
                writes - self.before[*i]
            );
            let ok = *reason == ReasonCode::Ok;
            let expected = if ok {
                OperationState::Succeeded
            } else {
                OperationState::Failed
            };
            assert_eq!(row.state, expected, "{upn}: {row:?}");
            let applied = match self.kinds[*i] {
                Kind::Unlock => self.unlocked(dc, *i, writes).await,
                _ => self.password_written(dc, *i, writes).await,
            };
            assert_eq!(
                applied,
                ok,
                "{upn}: recorded {reason} ({:?}), but the directory shows it {}applied",
                row.message,
                if applied { "" } else { "not " }
            );
            if ok {
                tally.ok += 1;
            } else {
                tally.failed.push((*i, *reason));
            }
        }
        tally
    }

    /// Whether user `i`'s password write shows in the directory (`writes`,
    /// its password version now): the new password binds and the version
    /// rose by one (and a forced change left the password unexpired); panics
    /// when the directory shows half of that.
    async fn password_written(&self, dc: &SambaDc, i: usize, writes: u32) -> bool {
        let upn = self.upn(i);
        let binds = dc.try_bind(&upn, &self.password(i)).await.expect("bind");
        let raised = writes == self.before[i] + 1;
        assert_eq!(
            binds, raised,
            "{upn}: the new password binds: {binds}, the version rose: {raised}"
        );
        if binds && self.kinds[i] == Kind::ForcedChange {
            let entry = dc
                .read_entry(&self.dns[i], &["pwdLastSet"])
                .await
                .expect("read the user");
            assert!(attr(&entry, "pwdLastSet") > 0, "{upn}: still expired");
        }
        binds
    }

    /// Whether user `i`'s unlock shows in the directory: `lockoutTime` is 0
    /// and the unchanged password binds. An unlock never writes the
    /// password (`writes` is its version now).
    async fn unlocked(&self, dc: &SambaDc, i: usize, writes: u32) -> bool {
        let upn = self.upn(i);
        assert_eq!(
            writes, self.before[i],
            "{upn}: an unlock wrote the password"
        );
        if self.locked_out(dc, i).await {
            return false;
        }
        assert!(
            dc.try_bind(&upn, &self.start).await.expect("bind"),
            "{upn}: unlocked, but the unchanged password does not bind"
        );
        true
    }

    /// Asserts that every user's operation shows in the directory exactly
    /// once since [`Burst::remember`], whatever ids did it: the new password
    /// binds and was written once, or the account is unlocked and its
    /// password untouched.
    pub async fn assert_each_written_once(&self, dc: &SambaDc) {
        for (i, dn) in self.dns.iter().enumerate() {
            let upn = self.upn(i);
            let writes = dc.password_writes(dn).await.expect("password version");
            assert!(
                writes <= self.before[i] + 1,
                "{upn}: the password was written {} times",
                writes - self.before[i]
            );
            let done = match self.kinds[i] {
                Kind::Unlock => self.unlocked(dc, i, writes).await,
                _ => self.password_written(dc, i, writes).await,
            };
            assert!(done, "{upn}: {:?} not applied", self.kinds[i]);
        }
    }

    /// Asserts the invariants and that every caller was told `OK`.
    pub async fn assert_applied_once(
        &self,
        dc: &SambaDc,
        store: &Store,
        tenant: &str,
        answers: &[Answer],
    ) -> Tally {
        let tally = self.check(dc, store, tenant, answers).await;
        assert!(
            tally.failed.is_empty(),
            "not every write succeeded: {tally:?}"
        );
        tally
    }
}

/// The first value of a numeric attribute of `entry` (0 when absent).
fn attr(entry: &ldap3::SearchEntry, name: &str) -> i64 {
    entry
        .attrs
        .get(name)
        .and_then(|v| v.first())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
