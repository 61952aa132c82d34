//! Users' password policies as the domain's agent reads them from the DC,
//! fetched with an `OPERATION_KIND_POLICY_QUERY` through the relays (read
//! only: no envelope, no audit record, no throttle) and cached for
//! [`CACHE_TTL`], so a portal checking a password as the user types does not
//! query the directory each time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use writeback_core::{Failure, ReasonCode};
use writeback_proto::v1::{self as pb, OperationRequest, PolicyReport};

use crate::dispatcher::Dispatcher;

/// How long a policy read from the DC is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries kept before the cache is emptied (it only saves round trips).
const CACHE_CAP: usize = 10_000;

/// (tenant, domain, user key or "" for the domain's policies).
type Key = (String, String, String);

/// Recently read policies.
#[derive(Debug, Default)]
pub struct PolicyCache {
    entries: Mutex<HashMap<Key, (Instant, time::OffsetDateTime, PolicyReport)>>,
}

impl PolicyCache {
    /// The policy report for `user` (the domain's alone when `None`) of
    /// `domain`, with the time it was read: from the cache when fresh, else
    /// from an agent within `timeout`.
    pub async fn get(
        &self,
        dispatcher: &Dispatcher,
        tenant: &str,
        domain: &str,
        user: Option<&pb::UserRef>,
        timeout: Duration,
    ) -> Result<(PolicyReport, time::OffsetDateTime), Failure> {
        let user_key = user
            .and_then(writeback_core::operation::user_ref_key)
            .unwrap_or_default();
        let key = (tenant.to_owned(), domain.to_owned(), user_key);
        if let Some((at, read_at, report)) = self.lock().get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok((report.clone(), *read_at));
        }
        let report = query(dispatcher, tenant, domain, user, timeout).await?;
        let read_at = time::OffsetDateTime::now_utc();
        let mut entries = self.lock();
        if entries.len() >= CACHE_CAP {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), read_at, report.clone()));
        Ok((report, read_at))
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, time::OffsetDateTime, PolicyReport)>>
    {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Asks an agent of `domain` for the policies.
async fn query(
    dispatcher: &Dispatcher,
    tenant: &str,
    domain: &str,
    user: Option<&pb::UserRef>,
    timeout: Duration,
) -> Result<PolicyReport, Failure> {
    let op = OperationRequest {
        tenant: tenant.to_owned(),
        domain: domain.to_owned(),
        kind: pb::OperationKind::PolicyQuery as i32,
        target: user.cloned(),
        ..OperationRequest::default()
    };
    let result = dispatcher.ask(op, timeout).await?;
    result.policy_report.map(|r| *r).ok_or_else(|| {
        Failure::new(
            ReasonCode::Internal,
            "the agent answered the policy query without a policy",
        )
    })
}
