//! Turning unknown outcomes into known ones. An operation whose answer was
//! lost after it may have reached an agent — a relay or tunnel broke, the
//! deadline passed while an agent worked, a control plane stopped with it in
//! flight — is recorded as failed with `TIMEOUT` ("may or may not have been
//! applied") and marked for reconciliation; so is one a relay refused with
//! a reason of its own after it was handed the operation (recorded with
//! the relay's reason, which is not an outcome: the relay may have
//! delivered it anyway), from its expiry plus the margin on. [`reconcile_due`] (run every few
//! seconds by every control plane; replicas sharing a database race safely,
//! since only an unknown record is ever resolved) asks the domain's agents'
//! ledgers ([`crate::dispatcher::Dispatcher::ask_outcome`]) and records:
//!
//! - **the agent's outcome** when one finished the operation (success or
//!   the directory's refusal), with the agent that did it;
//! - **`NOT_APPLIED`** when every enrolled agent answered, signed, that it
//!   never received the operation, and its expiry plus the agents' clock
//!   tolerance has passed ([`EXPIRY_MARGIN_MS`]: so no agent can still
//!   apply it); a retry with the same operation id then runs it;
//! - nothing yet otherwise (an agent is offline, or has it in doubt): it
//!   asks again later, backing off to every [`MAX_PAUSE`], for as long as
//!   the agents keep their ledgers ([`GIVE_UP_AFTER`]), then leaves the
//!   `TIMEOUT` as the final word.

use std::time::Duration;

use writeback_core::ReasonCode;

use crate::ControlPlane;
use crate::dispatcher::Verdict;
use crate::store::{self, OperationRow, OperationState};

/// How many unknown outcomes one round looks at.
const BATCH: u32 = 50;
/// Longest pause between two questions about one operation.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// After this long an unknown outcome stays `TIMEOUT` (the agents' ledgers
/// keep 7 days).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Margin past an operation's expiry before "never seen" is final, and
/// before an expired operation runs again: agents compare the expiry with
/// the later of their clock and the control plane's signed time, and apply
/// nothing while their clock is more than
/// [`writeback_core::operation::MAX_CLOCK_SKEW`] behind it, so no agent
/// applies an operation later than that past its expiry; 2 s more for the
/// operation's transit and the replicas' own clocks.
pub const EXPIRY_MARGIN_MS: i64 = MAX_CLOCK_SKEW_MS + 2_000;
const MAX_CLOCK_SKEW_MS: i64 = writeback_core::operation::MAX_CLOCK_SKEW.as_millis() as i64;

/// The sentence of a `NOT_APPLIED` outcome.
pub const NOT_APPLIED_MESSAGE: &str = "not applied: no agent of the domain received the operation before it expired, so nothing was written; retry with the same operation id to run it again";

/// What a reconciliation round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Outcomes now known.
    pub resolved: usize,
    /// Still unknown, asked again later.
    pub postponed: usize,
}

/// Asks about every unknown outcome that is due; see the module docs.
pub async fn reconcile_due(cp: &ControlPlane) -> Result<Round, store::StoreError> {
    let now = cp.store.now_ms();
    let mut round = Round::default();
    for row in cp.store.operations_to_reconcile(now, BATCH).await? {
        if reconcile_one(cp, &row).await? {
            round.resolved += 1;
        } else {
            round.postponed += 1;
        }
    }
    if round.resolved > 0 || round.postponed > 0 {
        tracing::info!(
            resolved = round.resolved,
            postponed = round.postponed,
            "reconciled unknown outcomes"
        );
    }
    Ok(round)
}

/// Asks the agents about `row` (an unknown outcome) and records what they
/// say; true when the outcome is now known.
pub async fn reconcile_one(
    cp: &ControlPlane,
    row: &OperationRow,
) -> Result<bool, store::StoreError> {
    let verdict = cp
        .dispatcher
        .ask_outcome(&row.tenant, &row.domain, &row.id, row.created_at_ms)
        .await;
    let now = cp.store.now_ms();
    let finish = match verdict {
        Verdict::Finished(answer) => {
            let result = answer.result.unwrap_or_default();
            let outcome = result.outcome.unwrap_or_default();
            let reason = ReasonCode::parse(&outcome.reason_code).unwrap_or(ReasonCode::Internal);
            tracing::info!(tenant = %row.tenant, operation_id = %row.id, agent_id = %result.agent_id,
                reason = %reason, "unknown outcome resolved from an agent's ledger");
            store::Finish {
                state: if reason == ReasonCode::Ok {
                    OperationState::Succeeded
                } else {
                    OperationState::Failed
                },
                reason_code: reason,
                message: outcome.message,
                agent_id: (!result.agent_id.is_empty()).then_some(result.agent_id),
                relay_id: (!answer.relay_id.is_empty()).then_some(answer.relay_id),
                finished_at_ms: now,
                agent_duration_ms: None,
                hops: store::Hops::default(),
            }
        }
        Verdict::NotSeen if now >= row.deadline_at_ms + EXPIRY_MARGIN_MS => {
            tracing::info!(tenant = %row.tenant, operation_id = %row.id,
                "unknown outcome resolved: no agent received the operation");
            store::Finish {
                state: OperationState::Failed,
                reason_code: ReasonCode::NotApplied,
                message: NOT_APPLIED_MESSAGE.to_owned(),
                agent_id: None,
                relay_id: None,
                finished_at_ms: now,
                agent_duration_ms: None,
                hops: store::Hops::default(),
            }
        }
        Verdict::NotSeen => {
            // It could still arrive somewhere before it expires.
            let next = row.deadline_at_ms + EXPIRY_MARGIN_MS;
            cp.store
                .postpone_reconcile(&row.tenant, &row.id, Some(next))
                .await?;
            return Ok(false);
        }
        Verdict::Unknown(why) => {
            let age = now.saturating_sub(row.created_at_ms);
            let give_up = i64::try_from(GIVE_UP_AFTER.as_millis()).unwrap_or(i64::MAX);
            let next = if age > give_up {
                tracing::warn!(tenant = %row.tenant, operation_id = %row.id, why,
                    "outcome still unknown after the agents' ledger retention; TIMEOUT stands");
                None
            } else {
                // Back off with the operation's age: 5 s, then a tenth of its
                // age, at most MAX_PAUSE.
                let max = i64::try_from(MAX_PAUSE.as_millis()).unwrap_or(i64::MAX);
                Some(now + (age / 10).clamp(5_000, max))
            };
            tracing::debug!(tenant = %row.tenant, operation_id = %row.id, why, "outcome still unknown");
            cp.store
                .postpone_reconcile(&row.tenant, &row.id, next)
                .await?;
            return Ok(false);
        }
    };
    // False: another replica (or request) recorded the truth first; known
    // either way.
    if !cp
        .store
        .resolve_operation(&row.tenant, &row.id, &finish)
        .await?
    {
        tracing::debug!(tenant = %row.tenant, operation_id = %row.id, "resolved elsewhere first");
    }
    Ok(true)
}
