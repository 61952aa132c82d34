//! The throttle, part of the record stage: at most
//! `throttle_per_user_per_hour` resets of one person per hour, counted and
//! recorded in one transaction ([`crate::store::Store::insert_operation_within`]).
//!
//! A person, not a spelling: the same user addressed by UPN, by objectGUID
//! or by a case variant of the UPN is one bucket. The control plane learns
//! which spellings name one person from its agents — the user each password
//! write found (`OperationResult.target_guid`/`target_upn`) — and records
//! them as aliases ([`crate::store::Store::link_person`]). Before the first
//! reset of a spelling no agent has named yet, it asks an agent of the
//! domain whom that spelling names (a signed, read-only
//! `OPERATION_KIND_USER_LOOKUP`), so even the first concurrent resets of a
//! never-seen person, some by UPN and some by GUID, count in one bucket.
//! When no agent can answer the lookup, the reset counts under its own
//! spelling (and cannot be applied by an agent either until one answers).

use std::time::Duration;

use writeback_core::{Failure, OperationKind, ReasonCode};
use writeback_proto::v1::{self as pb, user_ref};

use super::super::passwords::Ask;
use super::{Resolved, normalize_user, user_ref_key};
use crate::api::{Api, Caller, Status, store_status, timeout_of};
use crate::dispatcher::Dispatcher;
use crate::store;

const HOUR_MS: i64 = 3_600_000;

impl Api {
    /// Records `record` as pending; a reset is first counted against the
    /// tenant's limit of resets per person per hour, in the same transaction
    /// (so concurrent requests cannot both pass the last free slot).
    pub(super) async fn throttled_insert(
        &self,
        caller: &Caller,
        ask: &Ask,
        r: &Resolved,
        record: &store::NewOperation,
    ) -> Result<(), Status> {
        let store = &self.cp.store;
        let limit = self.cp.config.throttle_per_user_per_hour;
        if ask.kind != OperationKind::Reset || limit == 0 {
            return store.insert_operation(record).await.map_err(store_status);
        }
        self.learn_person(&caller.tenant, r).await;
        let window = store::Window {
            max: limit,
            kinds: &["reset"],
            since_ms: record.created_at_ms - HOUR_MS,
        };
        let oldest = match store
            .insert_operation_within(record, &window)
            .await
            .map_err(store_status)?
        {
            None => return Ok(()),
            Some(oldest) => oldest,
        };
        let throttled = throttled(limit, oldest + HOUR_MS, record.created_at_ms);
        tracing::info!(principal = %caller.principal, target = %r.target_key, limit, "reset throttled");
        self.cp.metrics.throttled();
        self.cp.security.operation_refused(
            caller,
            ask.kind.as_str(),
            &r.target_key,
            ReasonCode::Throttled,
            "throttle",
            &throttled.message,
            ask.source,
        );
        Err(throttled.into())
    }

    /// Makes sure the throttle knows whom `r`'s spelling names: when no
    /// agent has said yet, one of the domain's agents is asked now and the
    /// answer recorded. A failed lookup is logged and leaves the spelling
    /// its own bucket.
    async fn learn_person(&self, tenant: &str, r: &Resolved) {
        match self.cp.store.person_of(tenant, &r.target_key).await {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read whom the target names");
                return;
            }
        }
        let timeout = lookup_timeout(timeout_of(&self.cp.config));
        match lookup(&self.cp.dispatcher, tenant, &r.domain, &r.user, timeout).await {
            Ok((guid, upn)) => {
                tracing::info!(target = %r.target_key, "an agent said whom the target names");
                self.link_person(tenant, &guid, &upn, Some(&r.target_key))
                    .await;
            }
            Err(f) => {
                // The reason only: the dispatcher's sentences speak of changes.
                tracing::warn!(target = %r.target_key, reason = %f.reason,
                    "cannot learn whom the target names; it is counted under its own spelling");
            }
        }
    }

    /// Records that the user an agent found — `guid`, and `upn` — is one
    /// person for the throttle, together with the spelling `asked` for it
    /// (nothing when the agent found no one).
    pub(super) async fn link_person(
        &self,
        tenant: &str,
        guid: &str,
        upn: &str,
        asked: Option<&str>,
    ) {
        let key = |by| {
            normalize_user(pb::UserRef { by: Some(by) })
                .ok()
                .and_then(|u| user_ref_key(&u))
        };
        let Some(person) = key(user_ref::By::ObjectGuid(guid.to_owned())) else {
            return;
        };
        let mut aliases = vec![person.clone()];
        aliases.extend(key(user_ref::By::Upn(upn.to_owned())));
        aliases.extend(asked.map(str::to_owned));
        aliases.sort();
        aliases.dedup();
        if let Err(e) = self.cp.store.link_person(tenant, &person, &aliases).await {
            tracing::warn!(error = %e, "cannot record whom the target names");
        }
    }
}

/// How long a lookup may take: a third of the operation's time, at most 10 s
/// (the rest is the reset's own).
pub(super) fn lookup_timeout(operation: Duration) -> Duration {
    (operation / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Asks an agent of `domain` whom `user` names: its objectGUID and UPN, as
/// the agent signed them (the dispatcher refuses an answer whose signature
/// does not verify).
pub(super) async fn lookup(
    dispatcher: &Dispatcher,
    tenant: &str,
    domain: &str,
    user: &pb::UserRef,
    timeout: Duration,
) -> Result<(String, String), Failure> {
    let op = pb::OperationRequest {
        tenant: tenant.to_owned(),
        domain: domain.to_owned(),
        kind: pb::OperationKind::UserLookup as i32,
        target: Some(user.clone()),
        ..pb::OperationRequest::default()
    };
    let result = dispatcher.ask(op, timeout).await?;
    if result.target_guid.is_empty() {
        return Err(Failure::new(
            ReasonCode::Internal,
            "the agent answered the lookup without a user",
        ));
    }
    Ok((result.target_guid, result.target_upn))
}

/// `THROTTLED`, saying when the next reset is allowed (`next_ms`): in the
/// message, as `retry-after` seconds in the metadata and as a
/// `google.rpc.RetryInfo`.
fn throttled(limit: u32, next_ms: i64, now: i64) -> Failure {
    let next_s = next_ms.div_euclid(1000) + i64::from(next_ms.rem_euclid(1000) > 0);
    let when = time::OffsetDateTime::from_unix_timestamp(next_s)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let wait_s = (next_s * 1000 - now).max(0).div_euclid(1000);
    Failure::new(
        ReasonCode::Throttled,
        format!(
            "at most {limit} password resets per user per hour; the next reset of this user \
             is allowed at {when}"
        ),
    )
    .with_retry_after(Duration::from_secs(u64::try_from(wait_s).unwrap_or(0)))
}
