//! The identity binding, part of the authorize and finish stages: a person
//! signed in through an identity provider is one directory user.
//!
//! The principal claim (`upn`, a verified `email`…) says which directory
//! user a token speaks for, but a provider may let the user, or one of its
//! administrators, change it. The issuer's subject claim (`sub`, `oid`,
//! `uid`) never changes. So the first operation a person completes on their
//! own account binds their subject to the directory user the agent wrote —
//! its objectGUID, from the agent's signed result ([`Api::bind_identity`]);
//! from then on ([`Api::check_binding`], before anything is recorded):
//!
//! | the token's subject is bound to | the named user is bound to | answer |
//! |---|---|---|
//! | nothing, or the named user | nothing, or this subject | go on |
//! | another directory user | — | `PRINCIPAL_NOT_MAPPED` |
//! | — | another subject | `PRINCIPAL_NOT_MAPPED` |
//!
//! The named user's objectGUID comes from the aliases the agents reported
//! (`person_aliases`), or, for a spelling no agent has named yet, from a
//! signed lookup asked of an agent of the domain now; when none can answer,
//! the operation is refused with the lookup's reason (it could not have run
//! either). `wbt1` tokens and applications have no subject: the policy
//! refuses them self-service resets and unlocks anyway.

use writeback_core::{Failure, ReasonCode};
use writeback_proto::v1::{self as pb, user_ref};

use super::identify::{lookup, lookup_timeout};
use super::{Resolved, normalize_user, user_ref_key};
use crate::api::{Api, Caller, timeout_of};
use crate::policy::TargetKind;
use crate::store::Subject;

fn not_mapped(why: String) -> Failure {
    Failure::new(ReasonCode::PrincipalNotMapped, why)
}

fn storage(e: crate::store::StoreError) -> Failure {
    tracing::error!(error = %e, "cannot read the identity bindings");
    Failure::new(ReasonCode::Internal, "the control plane's storage failed")
}

/// The `guid:…` key of the directory user with objectGUID `guid`.
pub(super) fn person_key(guid: &str) -> Option<String> {
    normalize_user(pb::UserRef {
        by: Some(user_ref::By::ObjectGuid(guid.to_owned())),
    })
    .ok()
    .and_then(|u| user_ref_key(&u))
}

/// The subject to check and bind: an identity-provider user acting on
/// their own account.
pub(super) fn own_subject(caller: &Caller, target: TargetKind) -> Option<&Subject> {
    caller
        .subject
        .as_ref()
        .filter(|_| target == TargetKind::Own)
}

impl Api {
    /// Refuses an identity-provider user's operation on their own account
    /// when their subject is bound to another directory user, or the user
    /// their principal names is bound to another subject (see the module
    /// docs).
    pub(super) async fn check_binding(&self, caller: &Caller, r: &Resolved) -> Result<(), Failure> {
        let Some(subject) = own_subject(caller, r.target_kind) else {
            return Ok(());
        };
        let person = self.person_named(&caller.tenant, r).await?;
        let bound = self
            .cp
            .store
            .identity_bindings(&caller.tenant, &subject.issuer_id, &subject.value, &person)
            .await
            .map_err(storage)?;
        if bound
            .person_of_subject
            .as_ref()
            .is_some_and(|p| *p != person)
        {
            return Err(not_mapped(format!(
                "your account at the identity provider {:?} is bound to another directory account \
                 (the one writeback first wrote for you); the name your sign-in now carries, {}, is a \
                 different account, so writeback does not act on it. If your directory account was \
                 replaced, ask the help desk to reset its password",
                subject.issuer_id, caller.principal
            )));
        }
        if bound
            .subject_of_person
            .as_ref()
            .is_some_and(|s| *s != subject.value)
        {
            return Err(not_mapped(format!(
                "the directory account {} is bound to another account at the identity provider {:?} \
                 (the one that first reset, changed or unlocked it through writeback); a sign-in that \
                 merely carries its name does not act on it. If your identity-provider account was \
                 replaced, ask the help desk to reset the password",
                caller.principal, subject.issuer_id
            )));
        }
        Ok(())
    }

    /// The `guid:…` key of the directory user `r` names: as the agents
    /// reported it, else asked of an agent now (and recorded).
    async fn person_named(&self, tenant: &str, r: &Resolved) -> Result<String, Failure> {
        if let Some(person) = self
            .cp
            .store
            .person_of(tenant, &r.target_key)
            .await
            .map_err(storage)?
        {
            return Ok(person);
        }
        let timeout = lookup_timeout(timeout_of(&self.cp.config));
        let (guid, upn) = lookup(&self.cp.dispatcher, tenant, &r.domain, &r.user, timeout)
            .await
            .map_err(|f| {
                tracing::warn!(target = %r.target_key, reason = %f.reason,
                    "cannot learn which directory user the caller's principal names");
                Failure::new(
                    f.reason,
                    format!(
                        "writeback could not ask the directory which account your sign-in names: {}",
                        f.message
                    ),
                )
            })?;
        self.link_person(tenant, &guid, &upn, Some(&r.target_key))
            .await;
        person_key(&guid).ok_or_else(|| {
            Failure::new(
                ReasonCode::Internal,
                "the agent named the user with a malformed objectGUID",
            )
        })
    }

    /// Binds `subject` to the directory user an agent's signed result says
    /// it wrote (`guid`), unless either is bound already.
    pub(super) async fn bind_identity(&self, tenant: &str, subject: &Subject, guid: &str) {
        let Some(person) = person_key(guid) else {
            return;
        };
        match self
            .cp
            .store
            .bind_identity(tenant, &subject.issuer_id, &subject.value, &person)
            .await
        {
            Ok(true) => {
                tracing::info!(issuer = %subject.issuer_id, "a person's sign-in bound to their directory user");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot record the identity binding"),
        }
    }
}
