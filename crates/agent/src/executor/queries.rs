//! The read-only requests an agent answers besides operations: policy
//! queries (`OPERATION_KIND_POLICY_QUERY`), directory searches
//! (`OPERATION_KIND_DIRECTORY_SEARCH`) and user lookups
//! (`OPERATION_KIND_USER_LOOKUP`). Each is checked like an operation (the
//! signature first, in [`Executor::execute`], then tenant, domain and
//! expiry), writes nothing, and is neither remembered nor deduplicated.

use std::time::Instant;

use writeback_core::{Failure, ReasonCode};
use writeback_proto::v1::{OperationOutcome, OperationRequest, OperationResult};

use super::{Executor, elapsed_ms, outcome_of, target_of};

impl Executor {
    /// A policy query: read-only, so it is neither remembered nor deduplicated;
    /// it is checked like an operation (tenant, domain, expiry, target).
    pub(super) async fn answer_policy_query(
        &self,
        op: OperationRequest,
        started: Instant,
    ) -> OperationResult {
        let report = async {
            self.check_destination(&op)?;
            let target = match op.target.as_ref().and_then(|t| t.by.as_ref()) {
                None => None,
                Some(_) => Some(target_of(&op)?),
            };
            self.applier.policy(target.as_ref()).await
        }
        .await;
        self.answered(
            op.operation_id,
            "policy_query",
            started,
            report,
            |report, r| {
                r.policy_report = Some(Box::new(report));
                "the password policy was read".to_owned()
            },
        )
    }

    /// A directory search: read-only like a policy query (neither remembered
    /// nor deduplicated), checked for tenant, domain and expiry.
    pub(super) async fn answer_search(
        &self,
        op: OperationRequest,
        started: Instant,
    ) -> OperationResult {
        let answer = async {
            self.check_destination(&op)?;
            let search = op.search.as_ref().ok_or_else(|| {
                Failure::new(ReasonCode::InvalidArgument, "the search carries no query")
            })?;
            self.applier.search(&search.query, search.limit).await
        }
        .await;
        self.answered(
            op.operation_id,
            "directory_search",
            started,
            answer,
            |found, r| {
                let message = format!("{} users found", found.users.len());
                r.search_result = Some(Box::new(found));
                message
            },
        )
    }

    /// A user lookup: read-only like a policy query (neither remembered nor
    /// deduplicated), checked for tenant, domain, expiry and target; answered
    /// with the one user the target names, its `objectGUID` and UPN.
    pub(super) async fn answer_lookup(
        &self,
        op: OperationRequest,
        started: Instant,
    ) -> OperationResult {
        let found = async {
            self.check_destination(&op)?;
            let target = target_of(&op)?;
            self.applier.lookup(&target).await
        }
        .await;
        self.answered(op.operation_id, "user_lookup", started, found, |who, r| {
            r.target_guid = who.guid.map(|g| g.to_string()).unwrap_or_default();
            r.target_upn = who.upn.unwrap_or_default();
            "the user was found".to_owned()
        })
    }

    /// The result of query `id` of `kind` (its metrics label): `OK` with the
    /// sentence `ok` returns after putting the answer in the result, or the
    /// failure; logged and counted.
    fn answered<T>(
        &self,
        id: String,
        kind: &'static str,
        started: Instant,
        answer: Result<T, Failure>,
        ok: impl FnOnce(T, &mut OperationResult) -> String,
    ) -> OperationResult {
        let mut result = OperationResult {
            operation_id: id,
            agent_id: self.enrollment.agent_id.clone(),
            ..OperationResult::default()
        };
        let outcome = match answer {
            Ok(answer) => OperationOutcome {
                reason_code: ReasonCode::Ok.as_str().to_owned(),
                message: ok(answer, &mut result),
                applied: false,
            },
            Err(f) => outcome_of(Err(f)),
        };
        tracing::info!(reason = %outcome.reason_code, kind, "query answered");
        if let Some(m) = &self.metrics {
            m.operation(kind, &outcome.reason_code, started.elapsed());
        }
        result.outcome = Some(outcome);
        result.agent_duration_ms = elapsed_ms(started);
        result
    }
}
