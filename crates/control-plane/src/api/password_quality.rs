//! `PasswordQualityService`: a user's effective password policy (read by the
//! domain's agent, cached briefly), a pre-check of a candidate password that
//! applies nothing and never forwards the password, and the tenant's
//! banned-password list.

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};
use writeback_core::{ReasonCode, status};
use writeback_proto::v1::{
    self as pb, password_quality_service_server::PasswordQualityService, user_ref,
};

use super::{Api, check_password, normalize_user, store_status, timeout_of};
use crate::auth::{require_admin, require_global_admin};
use crate::policy;

/// Most custom banned terms a tenant may have.
const MAX_BANNED_TERMS: usize = 1000;

/// A custom term: trimmed, lowercase, 3 to 64 characters, no control
/// characters.
fn banned_term(t: &str) -> Result<String, Status> {
    let t = t.trim().to_lowercase();
    let n = t.chars().count();
    if !(3..=64).contains(&n) || t.chars().any(char::is_control) {
        return Err(status(
            ReasonCode::InvalidArgument,
            "a banned term is 3 to 64 characters without control characters",
        ));
    }
    Ok(t)
}

fn upn_of(user: &pb::UserRef) -> &str {
    match &user.by {
        Some(user_ref::By::Upn(u)) => u,
        _ => "",
    }
}

impl Api {
    /// The policy report for `user` (normalized), after checking that the
    /// caller may act on them; with the domain it came from.
    async fn user_policy(
        &self,
        caller: &crate::store::Caller,
        user: &pb::UserRef,
        domain: &str,
    ) -> Result<(String, pb::PolicyReport, time::OffsetDateTime), Status> {
        let (domain, mut target) = self.resolve_target(caller, user, domain).await?;
        policy::may_read_policy(caller.role, target)?;
        // An administrator reading "another end user's" policy: whom the
        // spelling names first (it may be another administrator's account).
        if target == policy::TargetKind::OtherEndUser {
            let key = writeback_core::operation::user_ref_key(user).unwrap_or_default();
            target = self.identify(caller, user, &key, &domain).await?.kind;
            policy::may_read_policy(caller.role, target)?;
        }
        let (report, read_at) = self
            .quality
            .policies
            .get(
                &self.cp.dispatcher,
                &caller.tenant,
                &domain,
                Some(user),
                timeout_of(&self.cp.config),
            )
            .await?;
        Ok((domain, report, read_at))
    }
}

fn timestamp(t: time::OffsetDateTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: 0,
    })
}

#[tonic::async_trait]
impl PasswordQualityService for Api {
    async fn get_password_policy(
        &self,
        req: Request<pb::GetPasswordPolicyRequest>,
    ) -> Result<Response<pb::PasswordPolicyResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let r = req.into_inner();
        let (domain, report, read_at) = match r.user {
            Some(user) => {
                let user = normalize_user(user)?;
                self.user_policy(&caller, &user, &r.domain).await?
            }
            None => {
                require_admin(&caller)?;
                let domain = self.registered_domain(&caller.tenant, &r.domain).await?;
                let (report, read_at) = self
                    .quality
                    .policies
                    .get(
                        &self.cp.dispatcher,
                        &caller.tenant,
                        &domain,
                        None,
                        timeout_of(&self.cp.config),
                    )
                    .await?;
                (domain, report, read_at)
            }
        };
        Ok(Response::new(pb::PasswordPolicyResponse {
            domain,
            report: Some(report),
            read_at: timestamp(read_at),
        }))
    }

    async fn validate_password(
        &self,
        req: Request<pb::ValidatePasswordRequest>,
    ) -> Result<Response<pb::ValidatePasswordResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let r = req.into_inner();
        // From here on the candidate is a secret: never logged, stored or
        // forwarded.
        let password = SecretString::from(r.password);
        check_password(password.expose_secret(), "password")?;
        let user =
            normalize_user(r.user.ok_or_else(|| {
                status(ReasonCode::InvalidArgument, "the request names no user")
            })?)?;
        let (_, report, _) = self.user_policy(&caller, &user, &r.domain).await?;
        let banned = self
            .quality
            .banned
            .get(&self.cp.store, &caller.tenant)
            .await
            .map_err(store_status)?;
        let verdict = crate::quality::judge(
            &report,
            upn_of(&user),
            password.expose_secret(),
            r.change,
            self.cp.store.now_ms() / 1000,
            &banned,
            self.cp.config.breached_passwords_dir.as_deref(),
        );
        tracing::info!(tenant = %caller.tenant, principal = %caller.principal,
            ok = verdict.ok, problems = verdict.problems.len(), "password pre-checked");
        Ok(Response::new(verdict))
    }

    async fn get_banned_passwords(
        &self,
        req: Request<pb::GetBannedPasswordsRequest>,
    ) -> Result<Response<pb::BannedPasswords>, Status> {
        let caller = self.authenticate(&req).await?;
        require_admin(&caller)?;
        let terms = self
            .cp
            .store
            .banned_terms(&caller.tenant)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::BannedPasswords {
            terms,
            builtin_terms: builtin_count(),
        }))
    }

    async fn set_banned_passwords(
        &self,
        req: Request<pb::SetBannedPasswordsRequest>,
    ) -> Result<Response<pb::BannedPasswords>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let mut terms = req
            .into_inner()
            .terms
            .iter()
            .map(|t| banned_term(t))
            .collect::<Result<Vec<_>, _>>()?;
        terms.sort();
        terms.dedup();
        if terms.len() > MAX_BANNED_TERMS {
            return Err(status(
                ReasonCode::InvalidArgument,
                format!("at most {MAX_BANNED_TERMS} custom banned terms"),
            ));
        }
        self.cp
            .store
            .set_banned_terms(&caller.tenant, &terms)
            .await
            .map_err(store_status)?;
        self.quality.banned.forget(&caller.tenant);
        self.audit_admin(
            &caller,
            "banned_passwords.set",
            "banned_passwords",
            serde_json::json!({ "terms": terms.len() }),
        )
        .await?;
        Ok(Response::new(pb::BannedPasswords {
            terms,
            builtin_terms: builtin_count(),
        }))
    }
}

fn builtin_count() -> u32 {
    u32::try_from(writeback_password::banned::BannedList::builtin().len()).unwrap_or(u32::MAX)
}
