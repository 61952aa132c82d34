//! The throttle, part of the record stage: per person and per hour, at
//! most `throttle_per_user_per_hour` resets, `throttle_unlocks_per_user_per_hour`
//! unlocks and `throttle_changes_per_user_per_hour` changes (voluntary and
//! forced together; both default to the reset limit), each kind its own
//! bucket, counted and recorded in one transaction
//! ([`crate::store::Store::insert_operation_within`]).
//!
//! A person, not a spelling: the same user addressed by UPN, by objectGUID
//! or by a case variant of the UPN is one bucket. The control plane learns
//! which spellings name one person from its agents — the user each password
//! write found (`OperationResult.target_guid`/`target_upn`), and the user a
//! lookup found ([`super::identify`]) — and records them as aliases
//! ([`crate::store::Store::link_person`]). Before the first operation on a
//! spelling no agent has named yet, it asks an agent of the domain whom
//! that spelling names (a signed, read-only `OPERATION_KIND_USER_LOOKUP`),
//! so even the first concurrent operations on a never-seen person, some by
//! UPN and some by GUID, count in one bucket. When no agent can answer the
//! lookup, the operation counts under its own spelling (and cannot be
//! applied by an agent either until one answers).

use std::time::Duration;

use writeback_core::{Failure, OperationKind, ReasonCode};
use writeback_proto::v1::{self as pb, user_ref};

use super::super::passwords::Ask;
use super::identify::{lookup, lookup_timeout};
use super::{Resolved, normalize_user, user_ref_key};
use crate::ControlPlaneConfig;
use crate::api::{Api, Caller, Status, store_status, timeout_of};
use crate::store;

const HOUR_MS: i64 = 3_600_000;

impl Api {
    /// Records `record` as pending; it is first counted against the
    /// tenant's limit for its kind of operation per person per hour, in the
    /// same transaction (so concurrent requests cannot both pass the last
    /// free slot).
    pub(super) async fn throttled_insert(
        &self,
        caller: &Caller,
        ask: &Ask,
        r: &Resolved,
        record: &store::NewOperation,
    ) -> Result<(), Status> {
        let store = &self.cp.store;
        let bucket = Bucket::of(&self.cp.config, ask.kind);
        if bucket.limit == 0 {
            return store.insert_operation(record).await.map_err(store_status);
        }
        self.learn_person(&caller.tenant, r).await;
        let window = store::Window {
            max: bucket.limit,
            kinds: bucket.kinds,
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
        let throttled = throttled(&bucket, oldest + HOUR_MS, record.created_at_ms);
        tracing::info!(principal = %caller.principal, target = %r.target_key,
            limit = bucket.limit, kind = %ask.kind, "operation throttled");
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

/// One kind's throttle: its limit, the operation kinds it counts, and how
/// its sentence names them.
struct Bucket {
    limit: u32,
    kinds: &'static [&'static str],
    /// "password resets"…
    plural: &'static str,
    /// "reset"…
    singular: &'static str,
}

impl Bucket {
    /// The bucket operations of `kind` count in.
    fn of(config: &ControlPlaneConfig, kind: OperationKind) -> Bucket {
        let resets = config.throttle_per_user_per_hour;
        match kind {
            OperationKind::Reset => Bucket {
                limit: resets,
                kinds: &["reset"],
                plural: "password resets",
                singular: "reset",
            },
            OperationKind::Unlock => Bucket {
                limit: config.throttle_unlocks_per_user_per_hour.unwrap_or(resets),
                kinds: &["unlock"],
                plural: "account unlocks",
                singular: "unlock",
            },
            OperationKind::Change | OperationKind::ForcedChange => Bucket {
                limit: config.throttle_changes_per_user_per_hour.unwrap_or(resets),
                kinds: &["change", "forced_change"],
                plural: "password changes",
                singular: "change",
            },
        }
    }
}

/// `THROTTLED`, saying when the next operation of the bucket's kind is
/// allowed (`next_ms`): in the message, as `retry-after` seconds in the
/// metadata and as a `google.rpc.RetryInfo`.
fn throttled(bucket: &Bucket, next_ms: i64, now: i64) -> Failure {
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
            "at most {} {} per user per hour; the next {} of this user is allowed at {when}",
            bucket.limit, bucket.plural, bucket.singular
        ),
    )
    .with_retry_after(Duration::from_secs(u64::try_from(wait_s).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_bucket_and_unset_limits_follow_the_resets() {
        let mut config = ControlPlaneConfig {
            throttle_per_user_per_hour: 4,
            ..ControlPlaneConfig::default()
        };
        let limits = |c: &ControlPlaneConfig| {
            [
                OperationKind::Reset,
                OperationKind::Unlock,
                OperationKind::Change,
                OperationKind::ForcedChange,
            ]
            .map(|k| Bucket::of(c, k).limit)
        };
        assert_eq!(limits(&config), [4, 4, 4, 4]);
        config.throttle_unlocks_per_user_per_hour = Some(0);
        config.throttle_changes_per_user_per_hour = Some(9);
        assert_eq!(limits(&config), [4, 0, 9, 9]);
        // Voluntary and forced changes share one bucket; unlocks are not resets.
        assert_eq!(
            Bucket::of(&config, OperationKind::ForcedChange).kinds,
            ["change", "forced_change"]
        );
        assert_eq!(Bucket::of(&config, OperationKind::Unlock).kinds, ["unlock"]);
        let f = throttled(
            &Bucket::of(&config, OperationKind::Unlock),
            7_200_000,
            3_600_000,
        );
        assert!(
            f.message.contains("account unlocks") && f.message.contains("next unlock"),
            "{}",
            f.message
        );
    }
}
