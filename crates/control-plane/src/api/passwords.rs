//! `PasswordService`: resets, changes and unlocks. Each handler turns its
//! request into an [`Ask`] for [`Api::run_operation`], which counts and
//! traces it around the operation's stages (`super::lifecycle`: resolve,
//! authorize, board, record, seal, deliver, finish). A refusal by the
//! policy, the banned list or the throttle is no operation (no record in
//! the operations log) but a security event.

use super::*;

use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt as _;
use writeback_core::trace;

/// One password operation as the handlers hand it to [`Api::run_operation`].
pub(super) struct Ask {
    pub(super) kind: OperationKind,
    pub(super) user: Option<pb::UserRef>,
    pub(super) domain: String,
    pub(super) operation_id: String,
    pub(super) must_change_at_next_logon: bool,
    pub(super) unlock: bool,
    pub(super) new_password: Option<SecretString>,
    pub(super) old_password: Option<SecretString>,
    /// The caller's trace context (`traceparent` metadata), if any.
    pub(super) parent: opentelemetry::Context,
    /// The client's address (for the security trail).
    pub(super) source: Option<std::net::SocketAddr>,
}

#[tonic::async_trait]
impl PasswordService for Api {
    async fn reset_password(
        &self,
        req: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::OperationResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let parent = trace::from_metadata(req.metadata());
        let source = peer_of(&req);
        let mut r = req.into_inner();
        check_password(&r.new_password, "new password")?;
        let ask = Ask {
            source,
            kind: OperationKind::Reset,
            user: r.user.take(),
            domain: std::mem::take(&mut r.domain),
            operation_id: std::mem::take(&mut r.operation_id),
            must_change_at_next_logon: r.must_change_at_next_logon,
            unlock: r.unlock,
            new_password: Some(SecretString::from(std::mem::take(&mut r.new_password))),
            old_password: None,
            parent,
        };
        self.run_operation(caller, ask).await.map(Response::new)
    }

    async fn change_password(
        &self,
        req: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::OperationResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let parent = trace::from_metadata(req.metadata());
        let source = peer_of(&req);
        let mut r = req.into_inner();
        check_password(&r.new_password, "new password")?;
        check_password(&r.old_password, "current password")?;
        let ask = Ask {
            source,
            kind: if r.forced {
                OperationKind::ForcedChange
            } else {
                OperationKind::Change
            },
            user: r.user.take(),
            domain: std::mem::take(&mut r.domain),
            operation_id: std::mem::take(&mut r.operation_id),
            must_change_at_next_logon: false,
            unlock: false,
            new_password: Some(SecretString::from(std::mem::take(&mut r.new_password))),
            old_password: Some(SecretString::from(std::mem::take(&mut r.old_password))),
            parent,
        };
        self.run_operation(caller, ask).await.map(Response::new)
    }

    async fn unlock_account(
        &self,
        req: Request<pb::UnlockAccountRequest>,
    ) -> Result<Response<pb::OperationResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        let parent = trace::from_metadata(req.metadata());
        let source = peer_of(&req);
        let r = req.into_inner();
        let ask = Ask {
            source,
            kind: OperationKind::Unlock,
            user: r.user,
            domain: r.domain,
            operation_id: r.operation_id,
            must_change_at_next_logon: false,
            unlock: false,
            new_password: None,
            old_password: None,
            parent,
        };
        self.run_operation(caller, ask).await.map(Response::new)
    }
}

impl Api {
    /// Queues the e-mail to the user about a finished operation, in the
    /// background: the answer never waits for it (see [`crate::notify`]).
    pub(super) fn notify_finished(&self, tenant: &str, operation_id: &str) {
        let cp = self.cp.clone();
        let (tenant, id) = (tenant.to_owned(), operation_id.to_owned());
        tokio::spawn(async move {
            match cp.store.get_operation(&tenant, &id).await {
                Ok(Some(row)) => {
                    crate::notify::operation_finished(&cp.store, &cp.config.notify, &row).await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the operation to notify about"),
            }
        });
    }

    /// `PASSWORD_BANNED` when `new` fails the tenant's banned list (built-in
    /// common passwords plus the tenant's terms, and the user's own names).
    pub(super) async fn refuse_banned(
        &self,
        caller: &Caller,
        user: &pb::UserRef,
        new: &SecretString,
    ) -> Result<(), Status> {
        let list = self
            .quality
            .banned
            .get(&self.cp.store, &caller.tenant)
            .await
            .map_err(store_status)?;
        let upn = match &user.by {
            Some(user_ref::By::Upn(u)) => u.as_str(),
            _ => "",
        };
        let tokens = crate::quality::user_tokens("", "", upn);
        match crate::quality::banned_problem(&list, new.expose_secret(), &tokens) {
            None => Ok(()),
            Some(p) => {
                tracing::info!(principal = %caller.principal, "operation refused: banned password");
                Err(status(ReasonCode::PasswordBanned, p.message))
            }
        }
    }

    /// The domain of `user` (normalized; by its UPN suffix, or `domain` for
    /// an objectGUID) and who it is relative to the caller, judged on the
    /// spelling ([`Api::judge_spelling`]: an objectGUID is "another end
    /// user" until [`Api::identify`] asks an agent whose it is).
    pub(super) async fn resolve_target(
        &self,
        caller: &Caller,
        user: &pb::UserRef,
        domain: &str,
    ) -> Result<(String, TargetKind), Status> {
        let store = &self.cp.store;
        let key = user_ref_key(user)
            .ok_or_else(|| status(ReasonCode::InvalidArgument, "the request names no user"))?;
        // Independent reads, at once.
        let domain = async {
            Ok::<String, Status>(match &user.by {
                Some(user_ref::By::Upn(upn)) => {
                    let upn = upn.trim().to_lowercase();
                    let suffix = upn_suffix(&upn)?;
                    store
                        .domain_for_upn_suffix(&caller.tenant, suffix)
                        .await
                        .map_err(store_status)?
                        .ok_or_else(|| {
                            status(
                                ReasonCode::DomainNotFound,
                                format!("no registered domain has the UPN suffix {suffix:?}"),
                            )
                        })?
                }
                Some(user_ref::By::ObjectGuid(g)) => {
                    uuid::Uuid::parse_str(g).map_err(|_| {
                        status(ReasonCode::InvalidArgument, "objectGUID is not a GUID")
                    })?;
                    let domain = domain.trim().to_ascii_lowercase();
                    if !store
                        .domain_exists(&caller.tenant, &domain)
                        .await
                        .map_err(store_status)?
                    {
                        return Err(status(
                            ReasonCode::DomainNotFound,
                            "a user given by objectGUID needs a registered domain",
                        ));
                    }
                    domain
                }
                None => {
                    return Err(status(
                        ReasonCode::InvalidArgument,
                        "the request names no user",
                    ));
                }
            })
        };
        let (domain, kind) = tokio::join!(domain, self.judge_spelling(caller, user, &key));
        Ok((domain?, kind?))
    }

    /// [`Api::decide_and_run`], counted in the metrics by kind, domain, origin
    /// and the reason answered.
    async fn run_operation(
        &self,
        caller: Caller,
        ask: Ask,
    ) -> Result<pb::OperationResponse, Status> {
        let started = Instant::now();
        let kind = ask.kind.as_str().to_owned();
        let origin = caller.client_app.to_string();
        let cx = self.cp.tracing.start(
            "writeback.operation",
            trace::SpanKind::Server,
            &ask.parent,
            vec![
                KeyValue::new("writeback.kind", kind.clone()),
                KeyValue::new("writeback.tenant", caller.tenant.clone()),
                KeyValue::new("writeback.origin", origin.clone()),
            ],
        );
        let mut seen = Seen::default();
        let result = self.decide_and_run(caller, ask, &cx, &mut seen).await;
        let reason = match &result {
            Ok(r) => r
                .outcome
                .as_ref()
                .map(|o| o.reason_code.clone())
                .unwrap_or_default(),
            Err(s) => writeback_core::failure_of(s).reason.as_str().to_owned(),
        };
        if let Ok(r) = &result {
            cx.span().set_attribute(KeyValue::new(
                "writeback.operation_id",
                r.operation_id.clone(),
            ));
        }
        cx.span()
            .set_attribute(KeyValue::new("writeback.domain", seen.domain.clone()));
        trace::end(&cx, &reason);
        self.cp.metrics.operation(
            crate::metrics::OperationLabels {
                kind,
                domain: seen.domain,
                origin,
                reason,
            },
            started.elapsed(),
            seen.agent,
        );
        result
    }
}

/// The suffix of a (trimmed, lowercase) UPN: what follows its last `@`, with
/// something before it.
pub(super) fn upn_suffix(upn: &str) -> Result<&str, Status> {
    match upn.rsplit_once('@') {
        Some((local, suffix)) if !local.is_empty() => Ok(suffix),
        _ => Err(status(
            ReasonCode::InvalidArgument,
            "a UPN looks like name@suffix",
        )),
    }
}
