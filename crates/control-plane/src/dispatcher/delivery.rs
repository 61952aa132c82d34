//! Delivering an operation exactly once through relays that may crash and
//! tunnels that may break, and asking the agents what happened when an
//! answer was lost.
//!
//! [`Dispatcher::deliver`] sends an operation (same id, same signature)
//! until an agent answers or its deadline passes:
//!
//! - a relay that found **no agent** (`NO_AGENT_ONLINE`, or unreachable) is
//!   retried with backoff while the domain had an agent online in the last
//!   [`RECONNECT_GRACE`] — agents reconnect within seconds when a relay
//!   restarts — and otherwise answers at once;
//! - a dispatch that **may have reached an agent** (the relay's own
//!   `TIMEOUT`, a tunnel that broke after the send, a relay that died
//!   mid-call) is never simply sent again: another agent of the domain
//!   could apply it a second time. The dispatcher first asks every enrolled
//!   agent of the domain ([`Dispatcher::ask_outcome`], an
//!   `OPERATION_KIND_OUTCOME_QUERY` pinned to each agent, answered from its
//!   durable ledger). One that finished it gives the answer; when all say
//!   "never seen", sending again is safe; otherwise it asks again until the
//!   deadline, and the outcome stays unknown for the reconciler
//!   (`crate::reconcile`).

use std::collections::HashMap;

use writeback_proto::v1::{LedgerState, OperationKind};

use super::{Dispatcher, Missed, lock};
use writeback_core::{Failure, ReasonCode};
use writeback_proto::v1::{DispatchResponse, OperationRequest};

use std::time::Duration;

/// How long after a domain's last agent left a dispatch that finds none
/// keeps retrying (within the operation's deadline).
pub const RECONNECT_GRACE: Duration = Duration::from_secs(15);
/// First and largest pause between attempts.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long one agent gets to answer an outcome query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How delivering an operation ended.
#[derive(Debug)]
pub enum Delivery {
    /// An agent answered (with any reason).
    Answered(Box<DispatchResponse>),
    /// It reached no agent: the failure is the outcome.
    Refused(Failure),
    /// It may have reached an agent, and no answer came before the
    /// deadline: the outcome is unknown (`TIMEOUT`) until reconciled.
    Unknown(Failure),
}

/// What the domain's agents say of an operation id.
#[derive(Debug)]
pub enum Verdict {
    /// An agent finished it; its answer.
    Finished(Box<DispatchResponse>),
    /// Every enrolled agent answered, and none ever received it.
    NotSeen,
    /// Not known: why (an agent could not be asked, or is in doubt).
    Unknown(String),
}

impl Dispatcher {
    /// Signs `op` and delivers it exactly once before `deadline` (see the
    /// module docs). `created_ms` is when the operation was accepted: an
    /// agent's "never seen" counts only if its ledger reaches back that far.
    pub async fn deliver(
        &self,
        mut op: OperationRequest,
        deadline: tokio::time::Instant,
        created_ms: i64,
    ) -> Delivery {
        self.inner.signer.sign(&mut op);
        let mut maybe_delivered = false;
        let mut last = Failure::new(
            ReasonCode::NoAgentOnline,
            format!("no agent of domain {} answered", op.domain),
        );
        let mut pause = RETRY_MIN;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return if maybe_delivered {
                    Delivery::Unknown(last)
                } else {
                    Delivery::Refused(last)
                };
            }
            if maybe_delivered {
                match self
                    .ask_outcome(&op.tenant, &op.domain, &op.operation_id, created_ms)
                    .await
                {
                    Verdict::Finished(answer) => {
                        tracing::info!("an agent's ledger holds the outcome");
                        return Delivery::Answered(answer);
                    }
                    Verdict::NotSeen => {
                        tracing::info!("no agent received the operation; sending it again");
                        maybe_delivered = false;
                        continue;
                    }
                    Verdict::Unknown(why) => {
                        tracing::debug!(why, "outcome not known yet");
                    }
                }
            } else {
                match self.dispatch_signed(&op, deadline - now, None).await {
                    Ok(answer) => return Delivery::Answered(Box::new(answer)),
                    Err(Missed {
                        failure,
                        maybe_delivered: true,
                    }) => {
                        tracing::info!(reason = %failure.reason,
                            "the operation may have reached an agent; asking the agents");
                        maybe_delivered = true;
                        last = failure;
                        continue;
                    }
                    Err(Missed { failure, .. }) if self.agent_was_recently_online(&op) => {
                        tracing::info!(reason = %failure.reason,
                            "no agent reachable right now; retrying within the deadline");
                        last = failure;
                    }
                    Err(Missed { failure, .. }) => return Delivery::Refused(failure),
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Whether a dispatch that found no agent is worth trying again: the
    /// domain has an agent in presence now, or lost its last one lately.
    fn agent_was_recently_online(&self, op: &OperationRequest) -> bool {
        let key = (op.tenant.clone(), op.domain.clone());
        if lock(&self.inner.presence)
            .get(&key)
            .is_some_and(|a| !a.is_empty())
        {
            return true;
        }
        lock(&self.inner.last_online)
            .get(&key)
            .is_some_and(|t| t.elapsed() < RECONNECT_GRACE)
    }

    /// The domain's agents that may hold operations: enrolled and not
    /// revoked (from the store), or those in presence without one.
    async fn agents_of(&self, tenant: &str, domain: &str) -> Result<Vec<String>, String> {
        let Some(store) = &self.inner.store else {
            return Ok(lock(&self.inner.presence)
                .get(&(tenant.to_owned(), domain.to_owned()))
                .map(|a| a.keys().cloned().collect())
                .unwrap_or_default());
        };
        // The agents the envelope is sealed to: enrolled and not revoked.
        store
            .agent_keys(tenant, domain)
            .await
            .map(|keys| keys.into_iter().map(|(id, _)| id).collect())
            .map_err(|e| format!("cannot read the agents: {e}"))
    }

    /// Asks every enrolled agent of `domain` what became of operation `id`
    /// (accepted at `created_ms`), each through the relay presence says it
    /// is on (or through every relay). Revoked agents are not asked (no relay
    /// lets them in).
    pub async fn ask_outcome(
        &self,
        tenant: &str,
        domain: &str,
        id: &str,
        created_ms: i64,
    ) -> Verdict {
        let agents = match self.agents_of(tenant, domain).await {
            Ok(a) if a.is_empty() => {
                return Verdict::Unknown(format!("domain {domain} has no enrolled agent"));
            }
            Ok(a) => a,
            Err(why) => return Verdict::Unknown(why),
        };
        let online: HashMap<String, String> = lock(&self.inner.presence)
            .get(&(tenant.to_owned(), domain.to_owned()))
            .cloned()
            .unwrap_or_default();
        let mut query = OperationRequest {
            operation_id: id.to_owned(),
            tenant: tenant.to_owned(),
            domain: domain.to_owned(),
            kind: OperationKind::OutcomeQuery as i32,
            expires_at: Some(writeback_core::operation::to_timestamp(
                time::OffsetDateTime::now_utc() + QUERY_TIMEOUT * 2,
            )),
            ..OperationRequest::default()
        };
        self.inner.signer.sign(&mut query);
        let asks = agents.iter().map(|agent| {
            // Through the relay presence names; when it names none (its
            // watch may still be reconnecting after a relay restart),
            // through every relay in turn.
            let relay = online.get(agent).cloned();
            let query = &query;
            async move {
                let answer = self
                    .dispatch_signed(query, QUERY_TIMEOUT, Some((relay.as_deref(), agent)))
                    .await
                    .ok();
                (agent.clone(), answer)
            }
        });
        let answers = futures::future::join_all(asks).await;
        let mut unknown = Vec::new();
        for (agent, answer) in answers {
            let Some(answer) = answer else {
                unknown.push(format!("agent {agent} could not be asked"));
                continue;
            };
            let result = answer.result.clone().unwrap_or_default();
            match LedgerState::try_from(result.ledger_state) {
                Ok(LedgerState::Finished) => return Verdict::Finished(Box::new(answer)),
                Ok(LedgerState::NotSeen) if result.ledger_since_ms <= created_ms => {}
                Ok(LedgerState::NotSeen) => {
                    unknown.push(format!("agent {agent}'s ledger starts after the operation"));
                }
                Ok(LedgerState::InDoubt) => {
                    unknown.push(format!("agent {agent} has the operation in doubt"));
                }
                _ => unknown.push(format!("agent {agent} did not answer the query")),
            }
        }
        if unknown.is_empty() {
            Verdict::NotSeen
        } else {
            Verdict::Unknown(unknown.join("; "))
        }
    }
}
