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
//!
//! Two rules keep a relay that lies from getting a write applied twice or
//! an outcome recorded on its word (security round two, issue 25):
//!
//! - **one agent per write**: a reset, change or unlock is bound to the one
//!   agent the dispatcher chose ([`Dispatcher::choose_agent`]: one that
//!   presence reports online, else an enrolled one), signed into the
//!   operation (`OperationRequest.agent_id`) and pinned in the dispatch;
//!   every other agent refuses it. The binding is never changed within a
//!   delivery: the copy signed for the first agent stays valid until it
//!   expires, whatever a relay said about it. A later run of the same id
//!   (reopened only once every agent said "never seen" past the expiry and
//!   the agents' clock tolerance) is signed again, possibly for another agent.
//! - **a relay's refusal is not an outcome**: a relay handed the signed
//!   operation that answers with a refusal of its own may have delivered
//!   it all the same. "No agent right now" (`NO_AGENT_ONLINE`,
//!   `OVERLOADED`, …) is sent again within the deadline, and if it is the
//!   last word the caller is told the relay's reason but the delivery ends
//!   [`Delivery::Unconfirmed`]: the record is marked for the reconciler,
//!   which replaces it with what the agents' signed ledgers say, and it is
//!   never reopened on the relay's word. Any other refusal
//!   (`OPERATION_EXPIRED`, …) is treated like a lost answer: the agents are
//!   asked at once. Only a signed answer from an agent records a final
//!   outcome.

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
/// How long after the relay links are made a write waits for their
/// presence streams to answer before choosing among the enrolled agents.
const PRESENCE_SETTLE: Duration = Duration::from_secs(2);
const PRESENCE_POLL: Duration = Duration::from_millis(50);

/// Relay refusals that mean "no agent can take it right now": the same
/// signed operation is sent again (to the same agent) within the deadline,
/// and the last one is the caller's answer, unconfirmed. Any other refusal
/// of a relay that was handed the operation sends the dispatcher to the
/// agents' ledgers.
fn retryable(reason: ReasonCode) -> bool {
    matches!(
        reason,
        ReasonCode::NoAgentOnline
            | ReasonCode::Overloaded
            | ReasonCode::Unavailable
            | ReasonCode::RevocationStale
    )
}

/// A relay's refusal as the caller hears it: its reason, and that it is the
/// relay's word.
fn unconfirmed(f: Failure) -> Failure {
    let message = format!(
        "{} (a relay's answer, not an agent's: the control plane asks the domain's agents \
         and records what they say; retry with the same operation id to learn it)",
        f.message
    );
    Failure { message, ..f }
}

/// How delivering an operation ended.
#[derive(Debug)]
pub enum Delivery {
    /// An agent answered (with any reason).
    Answered(Box<DispatchResponse>),
    /// It reached no agent (the control plane never handed it to a relay):
    /// the failure is the outcome.
    Refused(Failure),
    /// A relay was handed it and refused it with a reason of its own: the
    /// relay's word, not an agent's. The failure is the answer, but the
    /// outcome is not known until the agents' ledgers confirm it.
    Unconfirmed(Failure),
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
    /// Binds `op` to one agent of its domain, signs it and delivers it
    /// exactly once before `deadline` (see the module docs). `created_ms`
    /// is when the operation was accepted: an agent's "never seen" counts
    /// only if its ledger reaches back that far.
    pub async fn deliver(
        &self,
        mut op: OperationRequest,
        deadline: tokio::time::Instant,
        created_ms: i64,
    ) -> Delivery {
        op.agent_id = match self.choose_agent(&op, deadline).await {
            Ok(agent) => agent,
            Err(f) => return Delivery::Refused(f),
        };
        tracing::debug!(agent_id = %op.agent_id, "operation bound to an agent");
        self.inner.signer.sign(&mut op);
        let mut maybe_delivered = false;
        // A relay was handed it and may have delivered it: no failure is
        // the outcome until an agent says so.
        let mut handed_over = false;
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
                } else if handed_over {
                    Delivery::Unconfirmed(unconfirmed(last))
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
                let relay = lock(&self.inner.presence)
                    .get(&(op.tenant.clone(), op.domain.clone()))
                    .and_then(|agents| agents.get(&op.agent_id).cloned());
                let pin = Some((relay.as_deref(), op.agent_id.as_str()));
                match self.dispatch_signed(&op, deadline - now, pin).await {
                    Ok(answer) => return Delivery::Answered(Box::new(answer)),
                    Err(Missed {
                        failure,
                        maybe_delivered: true,
                        ..
                    }) => {
                        tracing::info!(reason = %failure.reason,
                            "the operation may have reached an agent; asking the agents");
                        maybe_delivered = true;
                        handed_over = true;
                        last = failure;
                        continue;
                    }
                    Err(Missed {
                        failure,
                        relay_refused: true,
                        ..
                    }) if !retryable(failure.reason) => {
                        // A relay's refusal that is not "no agent right
                        // now" (expired, say): it may have delivered it
                        // all the same, so the agents are asked.
                        tracing::warn!(reason = %failure.reason,
                            "a relay refused the operation it was handed; asking the agents");
                        maybe_delivered = true;
                        handed_over = true;
                        last = Failure::new(
                            ReasonCode::Timeout,
                            format!(
                                "a relay refused the operation after it was handed it ({}: {}), \
                                 which is its word, not an agent's, and no agent has answered; \
                                 the change may or may not have been applied",
                                failure.reason, failure.message
                            ),
                        );
                        continue;
                    }
                    Err(Missed {
                        failure,
                        relay_refused: refused,
                        ..
                    }) if self.agent_was_recently_online(&op) => {
                        tracing::info!(reason = %failure.reason,
                            "no agent reachable right now; retrying within the deadline");
                        handed_over |= refused;
                        last = failure;
                    }
                    Err(Missed {
                        failure,
                        relay_refused: refused,
                        ..
                    }) => {
                        return if refused || handed_over {
                            tracing::warn!(reason = %failure.reason,
                                "a relay refused the operation it was handed; not an outcome \
                                 until the agents confirm it");
                            Delivery::Unconfirmed(unconfirmed(failure))
                        } else {
                            Delivery::Refused(failure)
                        };
                    }
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// The agent `op` (a write) is bound to: one that presence reports
    /// online (taking turns), else — while presence is still arriving from
    /// the relays just after start, or names none — an enrolled one, taking
    /// turns; `NO_AGENT_ONLINE` when none is enrolled.
    pub(super) async fn choose_agent(
        &self,
        op: &OperationRequest,
        deadline: tokio::time::Instant,
    ) -> Result<String, Failure> {
        let key = (op.tenant.clone(), op.domain.clone());
        let links = self.links(&op.tenant)?;
        loop {
            let mut online: Vec<String> = lock(&self.inner.presence)
                .get(&key)
                .map(|a| a.keys().cloned().collect())
                .unwrap_or_default();
            if !online.is_empty() {
                online.sort();
                return Ok(self.take_turn(online));
            }
            // Just after start, each relay's presence stream first has to
            // answer (its snapshot follows at once).
            let settling = links.created.elapsed() < PRESENCE_SETTLE
                && links.relays.iter().any(|l| {
                    !l.presence_answered
                        .load(std::sync::atomic::Ordering::Acquire)
                });
            if !settling || tokio::time::Instant::now() + PRESENCE_POLL >= deadline {
                break;
            }
            tokio::time::sleep(PRESENCE_POLL).await;
        }
        let mut enrolled = self
            .agents_of(&op.tenant, &op.domain)
            .await
            .map_err(|why| {
                tracing::error!(why, "cannot read the domain's agents");
                Failure::new(
                    ReasonCode::Internal,
                    "the control plane cannot read its agents",
                )
            })?;
        if enrolled.is_empty() {
            return Err(Failure::new(
                ReasonCode::NoAgentOnline,
                format!(
                    "no agent of domain {} is connected to any relay or enrolled",
                    op.domain
                ),
            ));
        }
        enrolled.sort();
        Ok(self.take_turn(enrolled))
    }

    /// One of `agents` (not empty), in turn.
    fn take_turn(&self, mut agents: Vec<String>) -> String {
        let turn = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let i = turn % agents.len();
        agents.swap_remove(i)
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
