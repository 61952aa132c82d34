//! `DirectoryService`: the help desk's "find a user". A read-only search
//! that goes to the domain's agent the way a policy query does — an
//! `OPERATION_KIND_DIRECTORY_SEARCH`, signed, through the relays, no
//! envelope, no operation record, no throttle — and is answered with the
//! users of the agent's scope whose names start with the query. Password
//! administrators and global administrators only. With no domain named,
//! every domain of the tenant is searched at once; domains that fail are
//! listed as problems, and the call fails only when none answered. Every
//! search is recorded in the administrative trail (`directory.search`: the
//! query, the domains, and each user shown — UPN, objectGUID, lockout
//! state) before its answer goes out, and a search that cannot be recorded
//! shows nothing. The tenant's other administrators are shown as not
//! eligible (`UNSUPPORTED_OPERATION`).

use std::time::Duration;

use tonic::{Request, Response, Status};
use writeback_core::{Failure, ReasonCode, status};
use writeback_proto::v1::{
    self as pb, DirectorySearch, OperationRequest, directory_service_server::DirectoryService,
};

use super::lifecycle::same_name;
use super::{Api, store_status, timeout_of};
use crate::dispatcher::Dispatcher;
use crate::store::{MAX_PAGE_SIZE, Page};

/// Shortest query (the agent refuses shorter ones too).
pub const MIN_QUERY_CHARS: usize = 2;
/// Longest query.
pub const MAX_QUERY_CHARS: usize = 64;
/// Default and largest number of users returned.
pub const MAX_RESULTS: u32 = 25;

/// The query, trimmed, or why it is refused.
fn check_query(query: &str) -> Result<&str, Status> {
    let q = query.trim();
    let n = q.chars().count();
    if n < MIN_QUERY_CHARS {
        return Err(status(
            ReasonCode::QueryTooShort,
            format!(
                "type at least {MIN_QUERY_CHARS} characters of a name, account name or e-mail \
                 address"
            ),
        ));
    }
    if n > MAX_QUERY_CHARS {
        return Err(status(
            ReasonCode::InvalidArgument,
            format!("the query is longer than {MAX_QUERY_CHARS} characters"),
        ));
    }
    if q.chars().any(char::is_control) {
        return Err(status(
            ReasonCode::InvalidArgument,
            "the query contains control characters",
        ));
    }
    Ok(q)
}

/// Asks an agent of `domain` for the users matching `query`.
async fn search_domain(
    dispatcher: &Dispatcher,
    tenant: &str,
    domain: &str,
    query: &str,
    limit: u32,
    timeout: Duration,
) -> Result<pb::DirectorySearchResult, Failure> {
    let op = OperationRequest {
        tenant: tenant.to_owned(),
        domain: domain.to_owned(),
        kind: pb::OperationKind::DirectorySearch as i32,
        search: Some(DirectorySearch {
            query: query.to_owned(),
            limit,
        }),
        ..OperationRequest::default()
    };
    let result = dispatcher.ask(op, timeout).await?;
    let mut found = result.search_result.map(|r| *r).ok_or_else(|| {
        Failure::new(
            ReasonCode::Internal,
            "the agent answered the search without a result",
        )
    })?;
    for u in &mut found.users {
        u.domain = domain.to_owned();
    }
    Ok(found)
}

/// Display name (else UPN), then UPN, case-insensitively.
fn sort_key(u: &pb::DirectoryUser) -> (String, String) {
    let name = if u.display_name.is_empty() {
        &u.upn
    } else {
        &u.display_name
    };
    (name.to_lowercase(), u.upn.to_lowercase())
}

impl Api {
    /// Every domain of `tenant`, by name.
    async fn all_domains(&self, tenant: &str) -> Result<Vec<String>, Status> {
        let mut names = Vec::new();
        let mut page = Page::first(MAX_PAGE_SIZE);
        loop {
            let (rows, next) = self
                .cp
                .store
                .list_domains(tenant, page)
                .await
                .map_err(store_status)?;
            names.extend(rows.into_iter().map(|d| d.name));
            match next {
                Some(token) => page = Page::after(MAX_PAGE_SIZE, token),
                None => return Ok(names),
            }
        }
    }
}

impl Api {
    /// Marks the tenant's other administrators among `users` as not
    /// eligible: the policy refuses any operation on them
    /// (`UNSUPPORTED_OPERATION`), whatever the agent judged.
    async fn mark_administrators(
        &self,
        caller: &crate::store::Caller,
        users: &mut [pb::DirectoryUser],
    ) -> Result<(), Status> {
        let admins = self
            .cp
            .store
            .admin_principals(&caller.tenant)
            .await
            .map_err(store_status)?;
        for u in users.iter_mut() {
            if u.upn.is_empty() || same_name(&u.upn, &caller.principal) {
                continue;
            }
            if admins.iter().any(|a| same_name(a, &u.upn)) {
                u.eligible = false;
                u.ineligible_reason = ReasonCode::UnsupportedOperation.as_str().to_owned();
                u.ineligible_message = "the user is a writeback administrator; an administrator \
                    cannot use password writeback for another administrator's password"
                    .to_owned();
            }
        }
        Ok(())
    }

    /// Records a search in the administrative trail (`directory.search`):
    /// who searched, for what, in which domains, and whom it showed. A
    /// search that cannot be recorded shows nothing.
    async fn audit_search(
        &self,
        caller: &crate::store::Caller,
        query: &str,
        domains: &[String],
        users: &[pb::DirectoryUser],
        truncated: bool,
        problems: &[pb::DomainSearchProblem],
    ) -> Result<(), Status> {
        let object = match domains {
            [one] => format!("domain:{one}"),
            _ => "domains:*".to_owned(),
        };
        let details = serde_json::json!({
            "query": query,
            "domains": domains,
            "found": users.len(),
            "truncated": truncated,
            "users": users
                .iter()
                .map(|u| serde_json::json!({
                    "upn": u.upn,
                    "object_guid": u.object_guid,
                    "domain": u.domain,
                    "locked_out": u.locked_out,
                }))
                .collect::<Vec<_>>(),
            "failed_domains": problems
                .iter()
                .map(|p| serde_json::json!({ "domain": p.domain, "reason": p.reason_code }))
                .collect::<Vec<_>>(),
        });
        self.cp
            .store
            .record_admin_event(
                &caller.tenant,
                crate::store::NewAdminEvent {
                    principal: &caller.principal,
                    client_app: caller.client_app.as_str(),
                    action: "directory.search",
                    object: &object,
                    details,
                },
            )
            .await
            .map_err(|e| {
                tracing::error!(tenant = %caller.tenant, by = %caller.principal, error = %e,
                    "a directory search could not be recorded; its results are withheld");
                status(
                    ReasonCode::Internal,
                    "the search could not be recorded in the administrative audit trail, so \
                     its results are withheld; see the control plane's log and retry",
                )
            })?;
        Ok(())
    }
}

#[tonic::async_trait]
impl DirectoryService for Api {
    async fn search_users(
        &self,
        req: Request<pb::SearchUsersRequest>,
    ) -> Result<Response<pb::SearchUsersResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        if !caller.role.is_admin() {
            return Err(status(
                ReasonCode::PermissionDenied,
                "searching the directory needs the password administrator or global \
                 administrator role; you can act on your own account only",
            ));
        }
        let r = req.into_inner();
        let query = check_query(&r.query)?;
        let limit = if r.limit == 0 {
            MAX_RESULTS
        } else {
            r.limit.min(MAX_RESULTS)
        };
        let domains = if r.domain.trim().is_empty() {
            let all = self.all_domains(&caller.tenant).await?;
            if all.is_empty() {
                return Err(status(
                    ReasonCode::DomainNotFound,
                    "the tenant has no registered domain to search",
                ));
            }
            all
        } else {
            vec![self.registered_domain(&caller.tenant, &r.domain).await?]
        };
        let timeout = timeout_of(&self.cp.config);
        let answers = futures::future::join_all(domains.iter().map(|d| {
            search_domain(
                &self.cp.dispatcher,
                &caller.tenant,
                d,
                query,
                limit,
                timeout,
            )
        }))
        .await;
        let mut users = Vec::new();
        let mut truncated = false;
        let mut problems = Vec::new();
        let mut first_failure = None;
        for (domain, answer) in domains.iter().zip(answers) {
            match answer {
                Ok(found) => {
                    truncated |= found.truncated;
                    users.extend(found.users);
                }
                Err(f) => {
                    problems.push(pb::DomainSearchProblem {
                        domain: domain.clone(),
                        reason_code: f.reason.as_str().to_owned(),
                        message: f.message.clone(),
                    });
                    first_failure.get_or_insert(f);
                }
            }
        }
        tracing::info!(tenant = %caller.tenant, principal = %caller.principal,
            domains = domains.len(), failed = problems.len(), found = users.len(),
            query_chars = query.chars().count(), "directory searched");
        users.sort_by_key(sort_key);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if users.len() > limit {
            truncated = true;
            users.truncate(limit);
        }
        self.mark_administrators(&caller, &mut users).await?;
        // What the caller was shown is recorded before they see it.
        self.audit_search(&caller, query, &domains, &users, truncated, &problems)
            .await?;
        if problems.len() == domains.len()
            && let Some(f) = first_failure
        {
            return Err(f.into());
        }
        Ok(Response::new(pb::SearchUsersResponse {
            users,
            truncated,
            problems,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked_with_their_own_reason() {
        let short = check_query(" a ").unwrap_err();
        assert_eq!(
            writeback_core::failure_of(&short).reason,
            ReasonCode::QueryTooShort
        );
        assert_eq!(check_query(" al ").unwrap(), "al");
        for bad in ["nul\0x", &"x".repeat(65)] {
            let e = check_query(bad).unwrap_err();
            assert_eq!(
                writeback_core::failure_of(&e).reason,
                ReasonCode::InvalidArgument
            );
        }
    }
}
