//! A burst of password resets for the fault tests, and the invariants they
//! check against the directory itself: users `{prefix}0…` of a DC, each
//! reset once with its own operation id while the test kills and restarts a
//! component; afterwards every caller's answer, every record and the
//! directory must agree — the new password binds, and the user's
//! `unicodePwd` version rose by exactly one (applied once, never twice).

// Test assertions: a failure here is the calling test's failure.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use writeback_control_plane::store::{OperationState, Store};
use writeback_core::ReasonCode;

use crate::SambaDc;
use crate::stack::Client;

/// How long a caller keeps retrying its id for a definite answer.
const PATIENCE: Duration = Duration::from_secs(120);

/// The users of a burst, created on a DC, with their password versions.
pub struct Burst {
    prefix: String,
    domain: String,
    dns: Vec<String>,
    before: Vec<u32>,
}

/// One caller's end: user index, operation id, final reason, attempts.
pub type Answer = (usize, String, ReasonCode, u32);

impl Burst {
    /// Creates `users` users `{prefix}N` with password `start` on `dc`.
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
            dns,
            before: Vec::new(),
        }
    }

    /// The `i`th user's UPN.
    pub fn upn(&self, i: usize) -> String {
        format!("{}{i}@{}", self.prefix, self.domain)
    }

    /// The `i`th user's new password.
    pub fn password(&self, i: usize) -> String {
        format!("{}-{i}-New-1!", self.prefix)
    }

    /// Reads every user's password version (call just before the burst).
    pub async fn remember(&mut self, dc: &SambaDc) {
        self.before.clear();
        for dn in &self.dns {
            self.before
                .push(dc.password_writes(dn).await.expect("password version"));
        }
    }

    /// Resets every user, 2 ms apart, each caller retrying its id until the
    /// answer is definite ([`Client::reset_until_known`]); `interrupt` runs
    /// meanwhile (it kills and restarts something). Returns the answers in
    /// user order and the time until the last one.
    pub async fn run(
        &self,
        client: &Client,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> (Vec<Answer>, Duration) {
        let started = Instant::now();
        let mut burst = tokio::task::JoinSet::new();
        for i in 0..self.dns.len() {
            let c = client.clone();
            let (upn, password) = (self.upn(i), self.password(i));
            let id = uuid::Uuid::new_v4().to_string();
            burst.spawn(async move {
                tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
                let (reason, attempts) = c.reset_until_known(&upn, &password, &id, PATIENCE).await;
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

    /// Asserts the invariants: every caller was told `OK`, every record
    /// says succeeded and is not unknown, every new password binds, and
    /// every password was written exactly once.
    pub async fn assert_applied_once(
        &self,
        dc: &SambaDc,
        store: &Store,
        tenant: &str,
        answers: &[Answer],
    ) {
        for (i, id, reason, _) in answers {
            let upn = self.upn(*i);
            assert_eq!(*reason, ReasonCode::Ok, "{upn}: the caller's answer");
            let row = store
                .get_operation(tenant, id)
                .await
                .expect("store")
                .expect("one record");
            assert_eq!(row.state, OperationState::Succeeded, "{upn}: {row:?}");
            assert!(!row.outcome_unknown(), "{upn}: {row:?}");
            assert!(
                dc.try_bind(&upn, &self.password(*i)).await.expect("bind"),
                "{upn}: the new password binds"
            );
            assert_eq!(
                dc.password_writes(&self.dns[*i])
                    .await
                    .expect("password version"),
                self.before[*i] + 1,
                "{upn}: the password was written exactly once"
            );
        }
    }
}
