//! Authenticating agents' results. Every answer a relay hands back — an
//! operation's outcome, an outcome query's ledger state, a policy report —
//! must be signed by the agent it names, with the result-signing key the
//! store recorded for that agent at enrollment (or at the renewal that
//! registered it), over the result and a digest of the very operation the
//! dispatcher sent (`writeback_envelope::results`). A revoked or unknown
//! agent, an agent that has not registered a key, a missing or bad
//! signature, a result naming another operation, or another agent than the
//! one a query was pinned to: the result is refused. A refused result is
//! treated like no answer from an agent that may have the operation
//! (`TIMEOUT`: the delivery asks the agents' ledgers, and the reconciler
//! asks again later) — never recorded — and is reported to the hook
//! ([`Dispatcher::on_refused_result`]: the security trail and a metric).
//! A relay can therefore delay or drop an outcome, but not forge one.
//!
//! A dispatcher without a store (relay-level tests) holds no keys and
//! checks nothing.

use std::sync::Arc;

use writeback_core::{Failure, ReasonCode};
use writeback_envelope::signing::{SigningError, TrustedKey};
use writeback_proto::v1::{DispatchResponse, OperationRequest, OperationResult};

use super::{Dispatcher, Missed};
use crate::store::ResultKey;

/// Told of every refused result: the operation sent, the result as the
/// relay delivered it (if any), the relay's URL, why (a stable detail
/// word) and a sentence. Secret-free: results carry no password.
pub type RefusedResultHook =
    Arc<dyn Fn(&OperationRequest, Option<&OperationResult>, &str, &str, &str) + Send + Sync>;

/// Why a result was not accepted.
enum Check {
    /// Refused: a stable detail word and a sentence.
    Refused(&'static str, String),
    /// The key could not be read (the store is down): not a forgery.
    Unreadable,
}

impl Dispatcher {
    /// Calls `hook` for every refused result from now on (set once; later
    /// calls are ignored).
    pub fn on_refused_result(&self, hook: RefusedResultHook) {
        let _ = self.inner.refused_results.set(hook);
    }

    /// Accepts `answer` to `op` (pinned to agent `pinned`, for outcome
    /// queries) only when its agent signed it (module docs); otherwise the
    /// pass missed, and the operation may have reached an agent.
    pub(super) async fn authenticate_result(
        &self,
        op: &OperationRequest,
        answer: &DispatchResponse,
        pinned: Option<&str>,
        relay: &str,
    ) -> Result<(), Missed> {
        let check = match self.check_result(op, answer.result.as_ref(), pinned).await {
            Ok(()) => return Ok(()),
            Err(c) => c,
        };
        let why = match check {
            Check::Refused(detail, message) => {
                tracing::warn!(tenant = %op.tenant, operation_id = %op.operation_id,
                    agent_id = %answer.result.as_ref().map(|r| r.agent_id.as_str()).unwrap_or(""),
                    relay = %relay, detail, "result refused: not signed by the agent it names");
                if let Some(hook) = self.inner.refused_results.get() {
                    hook(op, answer.result.as_ref(), relay, detail, &message);
                }
                format!(
                    "relay {relay} returned a result that is not signed by the agent it names \
                     ({message}); it was not recorded, and the change may or may not have been \
                     applied"
                )
            }
            Check::Unreadable => "the agent's result-signing key could not be read, so its \
                                  result was not recorded; the change may or may not have been \
                                  applied"
                .to_owned(),
        };
        Err(Missed {
            failure: Failure::new(ReasonCode::Timeout, why),
            maybe_delivered: true,
            relay_refused: false,
        })
    }

    async fn check_result(
        &self,
        op: &OperationRequest,
        result: Option<&OperationResult>,
        pinned: Option<&str>,
    ) -> Result<(), Check> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let refused = |detail, message: &str| Check::Refused(detail, message.to_owned());
        let Some(result) = result else {
            return Err(refused("no_result", "the answer holds no result"));
        };
        if result.operation_id != op.operation_id {
            return Err(refused(
                "wrong_operation",
                "the result names another operation",
            ));
        }
        if pinned.is_some_and(|p| p != result.agent_id) {
            return Err(refused(
                "wrong_agent",
                "the result names another agent than the one asked",
            ));
        }
        let key = match store.agent_result_key(&op.tenant, &result.agent_id).await {
            Ok(ResultKey::Key(k)) => k,
            Ok(ResultKey::Unregistered) => {
                return Err(refused(
                    "unregistered_agent",
                    "the agent has not registered a result-signing key (it enrolled before \
                     results were signed; it registers one when it renews its certificate)",
                ));
            }
            Ok(ResultKey::Revoked) => {
                return Err(refused("revoked_agent", "the agent is revoked"));
            }
            Ok(ResultKey::Unknown) => {
                return Err(refused("unknown_agent", "no such agent is enrolled"));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read an agent's result-signing key");
                return Err(Check::Unreadable);
            }
        };
        let key = TrustedKey::new(&key).map_err(|_| Check::Unreadable)?;
        writeback_envelope::results::verify(op, result, &key).map_err(|e| match e {
            SigningError::Unsigned => refused("unsigned", "the result is not signed"),
            SigningError::UnknownKey => refused(
                "unknown_key",
                "the result is signed with another key than the agent's",
            ),
            _ => refused(
                "bad_signature",
                "the result's signature does not match its contents and the operation sent",
            ),
        })
    }
}
