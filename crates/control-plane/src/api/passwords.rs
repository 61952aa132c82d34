//! `PasswordService`: resets, changes and unlocks through
//! [`Api::run_operation`] — the target resolved, the policy and the
//! strong-sign-in check, the banned-password refusal, one flight per
//! operation id, the throttle, the pending audit record, sealing, a last
//! toggle check, dispatch through a relay, the recorded outcome and the
//! notification. A refusal by the policy, the banned list or the throttle
//! is no operation (no record in the operations log) but a security event.

use super::*;

use crate::dispatcher::Delivery;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt as _;
use writeback_core::trace;

/// One password operation as the handlers hand it to [`Api::run_operation`].
struct Ask {
    kind: OperationKind,
    user: Option<pb::UserRef>,
    domain: String,
    operation_id: String,
    must_change_at_next_logon: bool,
    unlock: bool,
    new_password: Option<SecretString>,
    old_password: Option<SecretString>,
    /// The caller's trace context (`traceparent` metadata), if any.
    parent: opentelemetry::Context,
    /// The client's address (for the security trail).
    source: Option<std::net::SocketAddr>,
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
    fn notify_finished(&self, tenant: &str, operation_id: &str) {
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
    async fn refuse_banned(
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

    /// The domain of `user` (by its UPN suffix, or `domain` for an
    /// objectGUID) and who it is relative to the caller.
    pub(super) async fn resolve_target(
        &self,
        caller: &Caller,
        user: &pb::UserRef,
        domain: &str,
    ) -> Result<(String, TargetKind), Status> {
        let store = &self.cp.store;
        let resolved = match &user.by {
            Some(user_ref::By::Upn(upn)) => {
                let upn = upn.trim().to_ascii_lowercase();
                let Some((local, suffix)) = upn.rsplit_once('@') else {
                    return Err(status(
                        ReasonCode::InvalidArgument,
                        "a UPN looks like name@suffix",
                    ));
                };
                if local.is_empty() {
                    return Err(status(
                        ReasonCode::InvalidArgument,
                        "a UPN looks like name@suffix",
                    ));
                }
                // Independent reads, at once.
                let (domain, role) = tokio::join!(
                    store.domain_for_upn_suffix(&caller.tenant, suffix),
                    store.principal_role(&caller.tenant, &upn),
                );
                let domain = domain.map_err(store_status)?.ok_or_else(|| {
                    status(
                        ReasonCode::DomainNotFound,
                        format!("no registered domain has the UPN suffix {suffix:?}"),
                    )
                })?;
                let kind = if upn == caller.principal.to_ascii_lowercase() {
                    TargetKind::Own
                } else if role
                    .map_err(store_status)?
                    .is_some_and(store::Role::is_admin)
                {
                    TargetKind::OtherAdministrator
                } else {
                    TargetKind::OtherEndUser
                };
                (domain, kind)
            }
            Some(user_ref::By::ObjectGuid(g)) => {
                uuid::Uuid::parse_str(g)
                    .map_err(|_| status(ReasonCode::InvalidArgument, "objectGUID is not a GUID"))?;
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
                // A GUID cannot be matched to a principal here, so it is
                // treated as another end user: administrators only.
                (domain, TargetKind::OtherEndUser)
            }
            None => {
                return Err(status(
                    ReasonCode::InvalidArgument,
                    "the request names no user",
                ));
            }
        };
        Ok(resolved)
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

    /// Resolves, authorizes, throttles, records, seals and dispatches one
    /// operation, and records its outcome.
    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, operation_id, domain, kind = %ask.kind))]
    async fn decide_and_run(
        &self,
        caller: Caller,
        ask: Ask,
        cx: &opentelemetry::Context,
        seen: &mut Seen,
    ) -> Result<pb::OperationResponse, Status> {
        let started = Instant::now();
        let store = &self.cp.store;
        // One spelling per user: UPNs trimmed and lowercase (AD compares
        // them without regard to case), GUIDs in canonical form. The
        // normalized reference is what the audit log, the throttle and the
        // envelope binding see, and what the agent receives.
        let user =
            normalize_user(ask.user.clone().ok_or_else(|| {
                status(ReasonCode::InvalidArgument, "the request names no user")
            })?)?;
        let target_key = user_ref_key(&user)
            .ok_or_else(|| status(ReasonCode::InvalidArgument, "the request names no user"))?;
        let resolve = self.resolve_target(&caller, &user, &ask.domain);
        // The operation id first (it costs no read), so the record of a repeated
        // id is read together with everything else the decision needs.
        let operation_id = if ask.operation_id.is_empty() {
            None
        } else {
            Some(
                uuid::Uuid::parse_str(&ask.operation_id)
                    .map_err(|_| status(ReasonCode::InvalidArgument, "an operation id is a UUID"))?
                    .to_string(),
            )
        };
        let existing = async {
            match &operation_id {
                Some(id) => store.get_operation(&caller.tenant, id).await,
                // A new id was never used.
                None => Ok(None),
            }
        };
        let reads = Instant::now();
        let (resolved, settings, existing) =
            tokio::join!(resolve, store.settings(&caller.tenant), existing);
        self.cp.metrics.store_read(reads.elapsed());
        let (domain, target_kind) = resolved?;
        seen.domain.clone_from(&domain);
        let span = tracing::Span::current();
        span.record("domain", domain.as_str());

        let settings = settings.map_err(store_status)?;
        let decided = policy::decide(
            &settings,
            caller.role,
            caller.client_app,
            target_kind,
            ask.kind,
        )
        .and_then(|rule| {
            policy::check_sign_in(&caller.sign_in, target_kind, ask.kind).map(|()| rule)
        });
        let rule = match decided {
            Ok(rule) => rule,
            Err(refusal) => {
                // A refused operation never becomes an operation: no audit
                // record, no dispatch, and it does not count toward the
                // throttle. The refusal is answered at once, logged here and
                // recorded in the security trail (in the background).
                tracing::info!(principal = %caller.principal, client_app = %caller.client_app,
                target = %target_key, target_kind = ?target_kind, reason = %refusal.reason,
                "operation refused by policy");
                if target_kind == TargetKind::OtherAdministrator
                    && ask.kind == OperationKind::Reset
                    && refusal.reason == ReasonCode::UnsupportedOperation
                    && let Some(user_ref::By::Upn(upn)) = &user.by
                {
                    crate::notify::admin_reset_attempted(
                        &self.cp.store,
                        &self.cp.config.notify,
                        &caller.tenant,
                        &caller.principal,
                        upn,
                        caller.client_app,
                    )
                    .await;
                }
                self.cp.security.operation_refused(
                    &caller,
                    ask.kind.as_str(),
                    &target_key,
                    refusal.reason,
                    "policy",
                    &refusal.message,
                    ask.source,
                );
                return Err(refusal.into());
            }
        };

        // A new password built on a banned term never leaves the control
        // plane: refused like the policy's refusals (not recorded, not
        // counted by the throttle).
        if let Some(new) = &ask.new_password
            && let Err(refused) = self.refuse_banned(&caller, &user, new).await
        {
            if writeback_core::failure_of(&refused).reason == ReasonCode::PasswordBanned {
                // Not the answer's sentence: it names the banned terms the
                // password is built on, which are a part of the password.
                self.cp.security.operation_refused(
                    &caller,
                    ask.kind.as_str(),
                    &target_key,
                    ReasonCode::PasswordBanned,
                    "banned_password",
                    "the new password is too close to commonly used or banned passwords",
                    ask.source,
                );
            }
            return Err(refused);
        }

        // One request per caller-chosen id at a time, once this caller may run
        // it (see `flight`); one that waited reads the record again, which the
        // request before it has finished.
        let _flight = match &operation_id {
            None => None,
            Some(id) => Some(
                self.cp
                    .flights
                    .board(&caller.tenant, id, timeout_of(&self.cp.config))
                    .await
                    .map_err(Status::from)?,
            ),
        };
        let existing = match (&_flight, &operation_id) {
            (Some(f), Some(id)) if f.waited => store.get_operation(&caller.tenant, id).await,
            _ => existing,
        };
        let operation_id = operation_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        span.record("operation_id", operation_id.as_str());
        let fail = |f: Failure| -> Status { f.with_operation(operation_id.clone()).into() };

        let now = store.now_ms();
        let timeout = timeout_of(&self.cp.config);
        let deadline_ms = now + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        // The agents' keys (to seal the password to) are read while the record is
        // written.
        let keys = async {
            match ask.new_password {
                Some(_) => Some(store.agent_keys(&caller.tenant, &domain).await),
                None => None,
            }
        };
        let keys = match existing.map_err(store_status)? {
            Some(row) if row.target != target_key || row.kind != ask.kind.as_str() => {
                return Err(fail(Failure::new(
                    ReasonCode::AlreadyExists,
                    "this operation id was already used for another operation",
                )));
            }
            Some(row) if row.outcome_unknown() => {
                // Ask the agents now; the record then holds what they know.
                if let Err(e) = crate::reconcile::reconcile_one(&self.cp, &row).await {
                    tracing::warn!(error = %e, "cannot reconcile the repeated operation");
                }
                let row = store
                    .get_operation(&caller.tenant, &operation_id)
                    .await
                    .map_err(store_status)?
                    .unwrap_or(row);
                if row.reason_code.as_deref() == Some(ReasonCode::NotApplied.as_str())
                    && store
                        .reopen_operation(&caller.tenant, &operation_id, deadline_ms)
                        .await
                        .map_err(store_status)?
                {
                    tracing::info!("operation known not applied; running it again");
                    keys.await
                } else {
                    tracing::info!("repeated operation id answered from the audit log");
                    return answer(
                        &operation_id,
                        &row.reason_code.unwrap_or_default(),
                        row.message.unwrap_or_default(),
                    );
                }
            }
            Some(row)
                if row.reason_code.as_deref() == Some(ReasonCode::NotApplied.as_str())
                    && store
                        .reopen_operation(&caller.tenant, &operation_id, deadline_ms)
                        .await
                        .map_err(store_status)? =>
            {
                tracing::info!("operation known not applied; running it again");
                keys.await
            }
            Some(row) if row.state != store::OperationState::Pending => {
                tracing::info!("repeated operation id answered from the audit log");
                return answer(
                    &operation_id,
                    &row.reason_code.unwrap_or_default(),
                    row.message.unwrap_or_default(),
                );
            }
            Some(_) => keys.await,
            None => {
                if ask.kind == OperationKind::Reset
                    && let Err(throttled) = self.throttle(&caller, &target_key, now).await
                {
                    let failure = writeback_core::failure_of(&throttled);
                    if failure.reason == ReasonCode::Throttled {
                        self.cp.security.operation_refused(
                            &caller,
                            ask.kind.as_str(),
                            &target_key,
                            ReasonCode::Throttled,
                            "throttle",
                            &failure.message,
                            ask.source,
                        );
                    }
                    return Err(throttled);
                }
                let record = store::NewOperation {
                    id: operation_id.clone(),
                    tenant: caller.tenant.clone(),
                    kind: ask.kind.as_str().to_owned(),
                    target: target_key.clone(),
                    domain: domain.clone(),
                    principal: caller.principal.clone(),
                    client_app: caller.client_app,
                    created_at_ms: now,
                    deadline_at_ms: deadline_ms,
                    trace_id: trace::trace_id(cx),
                    rule: rule.to_owned(),
                };
                let (inserted, keys) = tokio::join!(store.insert_operation(&record), keys);
                inserted.map_err(store_status)?;
                keys
            }
        };

        let result = self
            .seal_and_dispatch(
                keys,
                &caller,
                &ask,
                &user,
                &target_key,
                &domain,
                &operation_id,
                deadline_ms,
                timeout,
                cx,
            )
            .await;
        let ms = |d: u64| (d > 0).then(|| i64::try_from(d).unwrap_or(i64::MAX));
        // An outcome that is not known (an answer lost after the operation
        // may have reached an agent, or an agent that has it in doubt) is
        // recorded as TIMEOUT and reconciled from the agents' ledgers.
        let unknown = match &result {
            Delivery::Unknown(_) => true,
            Delivery::Answered(d) => d
                .result
                .as_ref()
                .and_then(|r| r.outcome.as_ref())
                .is_some_and(|o| o.reason_code == ReasonCode::Timeout.as_str()),
            Delivery::Refused(_) => false,
        };
        let (reason, message, agent_id, relay_id, agent_ms, hops) = match result {
            Delivery::Answered(d) => {
                let r = d.result.unwrap_or_default();
                let o = r.outcome.unwrap_or_default();
                let hops = store::Hops {
                    relay_duration_ms: ms(d.relay_duration_ms),
                    directory_duration_ms: ms(r.directory_duration_ms),
                    dc_url: (!r.dc_url.is_empty()).then_some(r.dc_url),
                };
                (
                    o.reason_code,
                    o.message,
                    r.agent_id,
                    d.relay_id,
                    r.agent_duration_ms,
                    hops,
                )
            }
            Delivery::Refused(f) | Delivery::Unknown(f) => (
                f.reason.as_str().to_owned(),
                f.message,
                String::new(),
                String::new(),
                0,
                store::Hops::default(),
            ),
        };
        if agent_ms > 0 {
            seen.agent = Some(Duration::from_millis(agent_ms));
        }
        let ok = reason == ReasonCode::Ok.as_str();
        let finished = store
            .finish_operation_then(
                &caller.tenant,
                &operation_id,
                &store::Finish {
                    state: if ok {
                        store::OperationState::Succeeded
                    } else {
                        store::OperationState::Failed
                    },
                    reason_code: ReasonCode::parse(&reason).unwrap_or(ReasonCode::Internal),
                    message: message.clone(),
                    agent_id: (!agent_id.is_empty()).then_some(agent_id),
                    relay_id: (!relay_id.is_empty()).then_some(relay_id),
                    finished_at_ms: store.now_ms(),
                    agent_duration_ms: Some(i64::try_from(agent_ms).unwrap_or(i64::MAX)),
                    hops,
                },
                unknown.then(|| store.now_ms()),
            )
            .await;
        match finished {
            Ok(()) if ok && self.cp.config.notify.enabled => {
                self.notify_finished(&caller.tenant, &operation_id);
            }
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "cannot record the operation's outcome"),
        }
        tracing::info!(reason = %reason, elapsed_ms = started.elapsed().as_millis(), "operation finished");
        answer(&operation_id, &reason, message)
    }

    /// Refuses a reset of `target` with `THROTTLED` once the tenant's limit
    /// of resets per user per hour is reached (every recorded reset counts,
    /// whatever its outcome; refused and throttled attempts are not recorded
    /// and so do not count). The answer says when the next reset is allowed,
    /// in the message, as `retry-after` seconds in the metadata and as a
    /// `google.rpc.RetryInfo`.
    async fn throttle(&self, caller: &Caller, target: &str, now: i64) -> Result<(), Status> {
        let limit = self.cp.config.throttle_per_user_per_hour;
        if limit == 0 {
            return Ok(());
        }
        const HOUR_MS: i64 = 3_600_000;
        let (count, oldest) = self
            .cp
            .store
            .count_operations_since(&caller.tenant, target, &["reset"], now - HOUR_MS)
            .await
            .map_err(store_status)?;
        if count < i64::from(limit) {
            return Ok(());
        }
        let next_ms = oldest.unwrap_or(now) + HOUR_MS;
        let next_s = next_ms.div_euclid(1000) + i64::from(next_ms.rem_euclid(1000) > 0);
        let when = time::OffsetDateTime::from_unix_timestamp(next_s)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        tracing::info!(principal = %caller.principal, target, limit, "reset throttled");
        self.cp.metrics.throttled();
        let wait_s = (next_s * 1000 - now).max(0).div_euclid(1000);
        Err(Failure::new(
            ReasonCode::Throttled,
            format!(
                "at most {limit} password resets per user per hour; the next reset of this user \
                 is allowed at {when}"
            ),
        )
        .with_retry_after(Duration::from_secs(u64::try_from(wait_s).unwrap_or(0)))
        .into())
    }

    #[allow(clippy::too_many_arguments)]
    async fn seal_and_dispatch(
        &self,
        keys: Option<AgentKeys>,
        caller: &Caller,
        ask: &Ask,
        user: &pb::UserRef,
        target_key: &str,
        domain: &str,
        operation_id: &str,
        deadline_ms: i64,
        timeout: Duration,
        cx: &opentelemetry::Context,
    ) -> Delivery {
        let sealed = self
            .seal(
                keys,
                caller,
                ask,
                user,
                target_key,
                domain,
                operation_id,
                deadline_ms,
            )
            .await;
        let op = match sealed {
            Ok(op) => op,
            Err(f) => return Delivery::Refused(f),
        };
        let dispatch = self.cp.tracing.start(
            "writeback.dispatch",
            trace::SpanKind::Client,
            cx,
            vec![KeyValue::new(
                "writeback.operation_id",
                operation_id.to_owned(),
            )],
        );
        let op = pb::OperationRequest {
            traceparent: trace::traceparent(&dispatch),
            ..op
        };
        let created_ms = self.cp.store.now_ms();
        let deadline = tokio::time::Instant::now() + timeout;
        let delivered = self.cp.dispatcher.deliver(op, deadline, created_ms).await;
        let reason = match &delivered {
            Delivery::Answered(d) => {
                dispatch
                    .span()
                    .set_attribute(KeyValue::new("writeback.relay_id", d.relay_id.clone()));
                d.result
                    .as_ref()
                    .and_then(|r| r.outcome.as_ref())
                    .map(|o| o.reason_code.clone())
                    .unwrap_or_default()
            }
            Delivery::Refused(f) | Delivery::Unknown(f) => f.reason.as_str().to_owned(),
        };
        trace::end(&dispatch, &reason);
        delivered
    }

    /// Seals the password to the domain's agents and builds the operation;
    /// the last toggle check happens here.
    #[allow(clippy::too_many_arguments)]
    async fn seal(
        &self,
        keys: Option<AgentKeys>,
        caller: &Caller,
        ask: &Ask,
        user: &pb::UserRef,
        target_key: &str,
        domain: &str,
        operation_id: &str,
        deadline_ms: i64,
    ) -> Result<pb::OperationRequest, Failure> {
        let expires_at = deadline_ms.div_euclid(1000);
        let envelope = match (&ask.new_password, keys) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Failure::new(
                    ReasonCode::Internal,
                    "the agents' keys were not read",
                ));
            }
            (Some(new_password), Some(keys)) => {
                let keys = keys.map_err(|e| {
                    tracing::error!(error = %e, "cannot read agent keys");
                    Failure::new(ReasonCode::Internal, "the control plane's storage failed")
                })?;
                if keys.is_empty() {
                    return Err(Failure::new(
                        ReasonCode::NoAgentOnline,
                        format!(
                            "no agent is enrolled for domain {domain}; enroll one with `writebackctl agent enroll-token --domain {domain}`"
                        ),
                    ));
                }
                let recipients: Vec<Recipient<'_>> = keys
                    .iter()
                    .map(|(id, pk)| Recipient {
                        agent_id: id,
                        public_key: pk,
                    })
                    .collect();
                let binding = Binding {
                    tenant: &caller.tenant,
                    domain,
                    operation_id,
                    target: target_key,
                    kind: ask.kind.as_str(),
                    must_change_at_next_logon: ask.must_change_at_next_logon,
                    unlock: ask.unlock,
                    expires_at,
                };
                let secrets = Secrets {
                    new_password: new_password.clone(),
                    old_password: ask.old_password.clone(),
                };
                Some(
                    writeback_envelope::seal(&recipients, &binding, &secrets).map_err(|e| {
                        tracing::error!(error = %e, "sealing failed");
                        Failure::new(
                            ReasonCode::Internal,
                            "the password could not be sealed to the domain's agents",
                        )
                    })?,
                )
            }
        };
        let op = pb::OperationRequest {
            operation_id: operation_id.to_owned(),
            tenant: caller.tenant.clone(),
            domain: domain.to_owned(),
            kind: ask.kind.to_wire() as i32,
            target: Some(user.clone()),
            must_change_at_next_logon: ask.must_change_at_next_logon,
            unlock: ask.unlock,
            expires_at: Some(prost_types::Timestamp {
                seconds: expires_at,
                nanos: 0,
            }),
            envelope,
            ..pb::OperationRequest::default()
        };
        // The last gate: writeback switched off since the policy check
        // (while recording and sealing) stops the operation here, so nothing
        // accepted before the switch is handed to a relay after it.
        let settings = self.cp.store.settings(&caller.tenant).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the settings");
            Failure::new(ReasonCode::Internal, "the control plane's storage failed")
        })?;
        policy::check_toggles(&settings, ask.kind)?;
        Ok(op)
    }
}

fn answer(
    operation_id: &str,
    reason: &str,
    message: String,
) -> Result<pb::OperationResponse, Status> {
    match ReasonCode::parse(reason) {
        Some(ReasonCode::Ok) => Ok(pb::OperationResponse {
            operation_id: operation_id.to_owned(),
            outcome: Some(pb::OperationOutcome {
                reason_code: reason.to_owned(),
                message,
                applied: true,
            }),
        }),
        Some(code) => Err(Failure::new(code, message)
            .with_operation(operation_id)
            .into()),
        None => {
            tracing::warn!(reason, "unknown reason code from an agent");
            Err(Failure::new(ReasonCode::Internal, message)
                .with_operation(operation_id)
                .into())
        }
    }
}
