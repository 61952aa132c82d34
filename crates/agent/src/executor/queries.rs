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
use crate::directory::Identity;

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
        let (outcome, policy_report) = match report {
            Ok(report) => (
                OperationOutcome {
                    reason_code: ReasonCode::Ok.as_str().to_owned(),
                    message: "the password policy was read".to_owned(),
                    applied: false,
                },
                Some(Box::new(report)),
            ),
            Err(f) => (outcome_of(Err(f)), None),
        };
        tracing::info!(reason = %outcome.reason_code, "policy query answered");
        if let Some(m) = &self.metrics {
            m.operation("policy_query", &outcome.reason_code, started.elapsed());
        }
        OperationResult {
            operation_id: op.operation_id,
            outcome: Some(outcome),
            agent_id: self.enrollment.agent_id.clone(),
            agent_duration_ms: elapsed_ms(started),
            policy_report,
            ..OperationResult::default()
        }
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
        let (outcome, search_result) = match answer {
            Ok(found) => (
                OperationOutcome {
                    reason_code: ReasonCode::Ok.as_str().to_owned(),
                    message: format!("{} users found", found.users.len()),
                    applied: false,
                },
                Some(Box::new(found)),
            ),
            Err(f) => (outcome_of(Err(f)), None),
        };
        tracing::info!(reason = %outcome.reason_code, "directory search answered");
        if let Some(m) = &self.metrics {
            m.operation("directory_search", &outcome.reason_code, started.elapsed());
        }
        OperationResult {
            operation_id: op.operation_id,
            outcome: Some(outcome),
            agent_id: self.enrollment.agent_id.clone(),
            agent_duration_ms: elapsed_ms(started),
            search_result,
            ..OperationResult::default()
        }
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
        let (outcome, who) = match found {
            Ok(who) => (
                OperationOutcome {
                    reason_code: ReasonCode::Ok.as_str().to_owned(),
                    message: "the user was found".to_owned(),
                    applied: false,
                },
                who,
            ),
            Err(f) => (outcome_of(Err(f)), Identity::default()),
        };
        tracing::info!(reason = %outcome.reason_code, "user lookup answered");
        if let Some(m) = &self.metrics {
            m.operation("user_lookup", &outcome.reason_code, started.elapsed());
        }
        OperationResult {
            operation_id: op.operation_id,
            outcome: Some(outcome),
            agent_id: self.enrollment.agent_id.clone(),
            agent_duration_ms: elapsed_ms(started),
            target_guid: who.guid.map(|g| g.to_string()).unwrap_or_default(),
            target_upn: who.upn.unwrap_or_default(),
            ..OperationResult::default()
        }
    }
}
