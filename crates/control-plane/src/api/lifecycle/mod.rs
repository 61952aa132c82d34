//! The life of one password operation in the control plane, stage by stage.
//! Each stage is a function; what it hands on is a named value:
//!
//! | stage | function | hands on | a refusal here |
//! |---|---|---|---|
//! | resolve | [`Api::resolve`] | [`Resolved`]: the normalized user, its domain, who it is to the caller — the person an agent says the spelling names, before an administrator may act on "another end user" ([`identify`]) — the id's record | `INVALID_ARGUMENT`, `DOMAIN_NOT_FOUND`; for an objectGUID no agent could identify, the lookup's reason (`NO_AGENT_ONLINE`, `UNAVAILABLE`…) |
//! | authorize | [`Api::authorize`] | the policy rule that allows it | `UNSUPPORTED_OPERATION`, `WRITEBACK_DISABLED`, `STRONG_AUTHENTICATION_REQUIRED`, `PASSWORD_BANNED`, `PRINCIPAL_NOT_MAPPED` (an identity-provider user's [`binding`] points at another directory user) — no record, a security event |
//! | board | `flights.board` | one request per operation id at a time | `OPERATION_IN_PROGRESS` |
//! | record | [`Api::record`] | [`Admission`]: a [`Recorded`] operation (new, or reopened after `NOT_APPLIED`), or the answer of the id's earlier record | `THROTTLED` (per person: the [`throttle`] asks an agent whom a never-seen spelling names, then counts and records in one transaction), `ALREADY_EXISTS` |
//! | seal | [`Api::seal`] | the `OperationRequest`, its password sealed to the domain's agents | `NO_AGENT_ONLINE` (none enrolled), a toggle switched off meanwhile |
//! | deliver | [`crate::dispatcher::Dispatcher::deliver`] (bound to one agent, signed) | [`Delivery`]: answered (signed by the agent), refused (never handed to a relay), unconfirmed (a relay's own refusal) or unknown | — |
//! | finish | [`Api::finish`] | the record's final state, or `TIMEOUT` (or a relay's refusal) marked for [`crate::reconcile`]; a first identity [`binding`] after an `OK` on the caller's own account; the answer | — |

use super::*;

use super::passwords::Ask;
use crate::dispatcher::Delivery;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt as _;
use writeback_core::trace;

mod binding;
mod identify;
mod throttle;

pub(super) use identify::same_name;

/// The target resolved and the id's earlier record read.
pub(super) struct Resolved {
    /// The user, normalized (UPN trimmed and lowercase, GUID canonical).
    user: pb::UserRef,
    /// The audit log's and the throttle's key for it (`upn:…`, `guid:…`).
    target_key: String,
    /// Its domain.
    domain: String,
    /// Who it is relative to the caller: the person an agent said the
    /// spelling names, whenever the policy would otherwise let the caller
    /// act on "another end user" ([`identify`]).
    target_kind: TargetKind,
    /// The person's UPN as the directory holds it, when an agent said.
    person_upn: Option<String>,
    /// The caller's operation id, canonical; `None` for a new one.
    operation_id: Option<String>,
    /// The record of that id, if any.
    existing: Option<store::OperationRow>,
    /// The tenant's toggles.
    settings: store::Settings,
}

/// An operation recorded as pending, about to be sealed and delivered.
pub(super) struct Recorded {
    operation_id: String,
    deadline_ms: i64,
    /// The domain's agents' keys, read while the record was written (for
    /// operations that carry a password).
    keys: Option<AgentKeys>,
}

/// What the record stage decided.
pub(super) enum Admission {
    /// Run it.
    Run(Recorded),
    /// The id's earlier record answers.
    Answered(Result<pb::OperationResponse, Status>),
}

impl Api {
    /// Runs one operation through every stage (see the module docs).
    #[tracing::instrument(skip_all, fields(tenant = %caller.tenant, operation_id, domain, kind = %ask.kind))]
    pub(super) async fn decide_and_run(
        &self,
        caller: Caller,
        ask: Ask,
        cx: &opentelemetry::Context,
        seen: &mut Seen,
    ) -> Result<pb::OperationResponse, Status> {
        let started = Instant::now();
        let resolved = self.resolve(&caller, &ask).await?;
        seen.domain.clone_from(&resolved.domain);
        tracing::Span::current().record("domain", resolved.domain.as_str());
        let rule = self.authorize(&caller, &ask, &resolved).await?;
        // One request per caller-chosen id at a time, once this caller may run
        // it (see `flight`); one that waited reads the record again, which the
        // request before it has finished.
        let flight = match &resolved.operation_id {
            None => None,
            Some(id) => Some(
                self.cp
                    .flights
                    .board(&caller.tenant, id, timeout_of(&self.cp.config))
                    .await
                    .map_err(Status::from)?,
            ),
        };
        let waited = flight.as_ref().is_some_and(|f| f.waited);
        let resolved = resolved_after(resolved, waited, self, &caller).await?;
        let recorded = match self.record(&caller, &ask, &resolved, rule, cx).await? {
            Admission::Run(r) => r,
            Admission::Answered(answer) => return answer,
        };
        let delivery = self
            .seal_and_deliver(&caller, &ask, &resolved, &recorded, cx)
            .await;
        let bind = binding::own_subject(&caller, resolved.target_kind);
        let answer = self.finish(&caller, &recorded, delivery, bind, seen).await;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis(),
            "operation finished"
        );
        drop(flight);
        answer
    }

    /// The resolve stage: the user normalized, its domain and relation to
    /// the caller, the settings and the id's record, read at once.
    async fn resolve(&self, caller: &Caller, ask: &Ask) -> Result<Resolved, Status> {
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
        let (resolved, settings, existing) = tokio::join!(
            self.resolve_target(caller, &user, &ask.domain),
            store.settings(&caller.tenant),
            existing
        );
        self.cp.metrics.store_read(reads.elapsed());
        let (domain, target_kind) = resolved?;
        let settings = settings.map_err(store_status)?;
        let existing = existing.map_err(store_status)?;
        // Whom the spelling names, before the policy lets an administrator
        // act on "another end user": it may be their own account or another
        // administrator's under an objectGUID or another spelling. Not for a
        // request the policy refuses whoever the target is (it never costs
        // an agent's time).
        let (target_kind, person_upn) = if target_kind == TargetKind::OtherEndUser
            && policy::decide(
                &settings,
                caller.role,
                caller.client_app,
                target_kind,
                ask.kind,
            )
            .is_ok()
        {
            let who = self.identify(caller, &user, &target_key, &domain).await?;
            (who.kind, who.upn)
        } else {
            (target_kind, None)
        };
        Ok(Resolved {
            user,
            target_key,
            domain,
            target_kind,
            person_upn,
            operation_id,
            existing,
            settings,
        })
    }

    /// The authorize stage: the seed's policy, the strong sign-in a
    /// self-service operation needs, the banned-password list and an
    /// identity-provider user's binding to their directory user. A refusal
    /// never becomes an operation: no record, no dispatch, not counted by
    /// the throttle; it is answered at once and goes to the security trail.
    async fn authorize(
        &self,
        caller: &Caller,
        ask: &Ask,
        r: &Resolved,
    ) -> Result<&'static str, Status> {
        let decided = policy::decide(
            &r.settings,
            caller.role,
            caller.client_app,
            r.target_kind,
            ask.kind,
        )
        .and_then(|rule| {
            policy::check_sign_in(&caller.sign_in, r.target_kind, ask.kind).map(|()| rule)
        });
        let rule = match decided {
            Ok(rule) => rule,
            Err(refusal) => {
                tracing::info!(principal = %caller.principal, client_app = %caller.client_app,
                target = %r.target_key, target_kind = ?r.target_kind, reason = %refusal.reason,
                "operation refused by policy");
                let upn = match (&r.person_upn, &r.user.by) {
                    (Some(upn), _) | (None, Some(user_ref::By::Upn(upn))) => Some(upn),
                    _ => None,
                };
                if r.target_kind == TargetKind::OtherAdministrator
                    && ask.kind == OperationKind::Reset
                    && refusal.reason == ReasonCode::UnsupportedOperation
                    && let Some(upn) = upn
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
                    caller,
                    ask.kind.as_str(),
                    &r.target_key,
                    refusal.reason,
                    "policy",
                    &refusal.message,
                    ask.source,
                );
                return Err(refusal.into());
            }
        };
        // A new password built on a banned term never leaves the control
        // plane.
        if let Some(new) = &ask.new_password
            && let Err(refused) = self.refuse_banned(caller, &r.user, new).await
        {
            if writeback_core::failure_of(&refused).reason == ReasonCode::PasswordBanned {
                // Not the answer's sentence: it names the banned terms the
                // password is built on, which are a part of the password.
                self.cp.security.operation_refused(
                    caller,
                    ask.kind.as_str(),
                    &r.target_key,
                    ReasonCode::PasswordBanned,
                    "banned_password",
                    "the new password is too close to commonly used or banned passwords",
                    ask.source,
                );
            }
            return Err(refused);
        }
        // Last, as it may ask an agent whom the principal names.
        if let Err(refusal) = self.check_binding(caller, r).await {
            if refusal.reason == ReasonCode::PrincipalNotMapped {
                tracing::info!(principal = %caller.principal, target = %r.target_key,
                    "operation refused: the sign-in is bound to another directory user");
                self.cp.security.operation_refused(
                    caller,
                    ask.kind.as_str(),
                    &r.target_key,
                    refusal.reason,
                    "identity_binding",
                    &refusal.message,
                    ask.source,
                );
            }
            return Err(refusal.into());
        }
        Ok(rule)
    }

    /// The record stage: a new id is throttled and recorded as pending in
    /// one step; a repeated one is answered from its record — after asking
    /// the agents when that record's outcome is unknown — or, when the
    /// record says `NOT_APPLIED`, put back to pending and run again.
    async fn record(
        &self,
        caller: &Caller,
        ask: &Ask,
        r: &Resolved,
        rule: &'static str,
        cx: &opentelemetry::Context,
    ) -> Result<Admission, Status> {
        let store = &self.cp.store;
        let operation_id = r
            .operation_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        tracing::Span::current().record("operation_id", operation_id.as_str());
        let now = store.now_ms();
        let timeout = timeout_of(&self.cp.config);
        let deadline_ms = now + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        // The agents' keys (to seal the password to) are read while the record is
        // written.
        let keys = async {
            match ask.new_password {
                Some(_) => Some(store.agent_keys(&caller.tenant, &r.domain).await),
                None => None,
            }
        };
        let run = |keys| {
            Admission::Run(Recorded {
                operation_id: operation_id.clone(),
                deadline_ms,
                keys,
            })
        };
        let admission = match &r.existing {
            Some(row) if row.target != r.target_key || row.kind != ask.kind.as_str() => {
                return Err(Failure::new(
                    ReasonCode::AlreadyExists,
                    "this operation id was already used for another operation",
                )
                .with_operation(operation_id.clone())
                .into());
            }
            Some(row) => {
                let row = self.settle(row).await?;
                if let Some(deadline_ms) = self.reopen_not_applied(caller, &row).await? {
                    tracing::info!("operation known not applied; running it again");
                    Admission::Run(Recorded {
                        operation_id: operation_id.clone(),
                        deadline_ms,
                        keys: keys.await,
                    })
                } else if row.state == store::OperationState::Pending {
                    // Another replica runs it (its record is still pending).
                    return Err(Failure::new(
                        ReasonCode::OperationInProgress,
                        "another request with this operation id is still running; retry with \
                         the same id to get its outcome",
                    )
                    .with_operation(operation_id.clone())
                    .into());
                } else {
                    tracing::info!("repeated operation id answered from the audit log");
                    Admission::Answered(answer(
                        &operation_id,
                        row.reason_code.as_deref().unwrap_or_default(),
                        row.message.clone().unwrap_or_default(),
                    ))
                }
            }
            None => {
                let record = store::NewOperation {
                    id: operation_id.clone(),
                    tenant: caller.tenant.clone(),
                    kind: ask.kind.as_str().to_owned(),
                    target: r.target_key.clone(),
                    domain: r.domain.clone(),
                    principal: caller.principal.clone(),
                    client_app: caller.client_app,
                    created_at_ms: now,
                    deadline_at_ms: deadline_ms,
                    trace_id: trace::trace_id(cx),
                    rule: rule.to_owned(),
                };
                let insert = async {
                    let started = Instant::now();
                    let inserted = self.throttled_insert(caller, ask, r, &record).await;
                    self.cp.metrics.store_write("record", started.elapsed());
                    inserted
                };
                let (inserted, keys) = tokio::join!(insert, keys);
                inserted?;
                run(keys)
            }
        };
        Ok(admission)
    }

    /// `row` as the agents know it: a record whose outcome is unknown is
    /// reconciled first (the agents are asked now) and read again.
    async fn settle(&self, row: &store::OperationRow) -> Result<store::OperationRow, Status> {
        if !row.outcome_unknown() {
            return Ok(row.clone());
        }
        match crate::reconcile::reconcile_one(&self.cp, row).await {
            Ok(true) => {}
            Ok(false) => {
                // "Never seen" becomes final only past the expiry and the
                // agents' clock tolerance: when that is near, wait for it
                // and ask again rather than answer "unknown".
                let wait = row
                    .deadline_at_ms
                    .saturating_add(crate::reconcile::EXPIRY_MARGIN_MS)
                    .saturating_sub(self.cp.store.now_ms());
                if wait > 0 && wait <= crate::reconcile::EXPIRY_MARGIN_MS {
                    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
                        .await;
                    if let Err(e) = crate::reconcile::reconcile_one(&self.cp, row).await {
                        tracing::warn!(error = %e, "cannot reconcile the repeated operation");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reconcile the repeated operation"),
        }
        Ok(self
            .cp
            .store
            .get_operation(&row.tenant, &row.id)
            .await
            .map_err(store_status)?
            .unwrap_or_else(|| row.clone()))
    }

    /// Puts a record of an operation known never to have run back to
    /// pending with a new deadline ([`store::Store::reopen_operation`]:
    /// `NOT_APPLIED`, or `OPERATION_EXPIRED` — it expired on its way, in a
    /// partition say, and the agent it was bound to refused it untouched,
    /// signed; a relay's word reopens nothing: such a record waits for the
    /// reconciler); true when this request did (it then runs the
    /// operation). An expired one is run again only once its expiry and
    /// the agents' clock tolerance have passed (waiting for that when it is
    /// near), so no agent can still take the old copy for a live one.
    async fn reopen_not_applied(
        &self,
        caller: &Caller,
        row: &store::OperationRow,
    ) -> Result<Option<i64>, Status> {
        if !store::NEVER_RAN
            .iter()
            .any(|r| row.reason_code.as_deref() == Some(r.as_str()))
            || row.outcome_unknown()
        {
            return Ok(None);
        }
        let margin = crate::reconcile::EXPIRY_MARGIN_MS;
        let expired = row.reason_code.as_deref() == Some(ReasonCode::OperationExpired.as_str());
        let wait = row
            .deadline_at_ms
            .saturating_add(margin)
            .saturating_sub(self.cp.store.now_ms());
        if expired && wait > margin {
            return Ok(None);
        }
        if expired && wait > 0 {
            tracing::info!(
                wait_ms = wait,
                "waiting out the agents' clock tolerance before running an expired operation again"
            );
            tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
        }
        let timeout = i64::try_from(timeout_of(&self.cp.config).as_millis()).unwrap_or(i64::MAX);
        let now = self.cp.store.now_ms();
        let deadline_ms = now.saturating_add(timeout);
        let reopened = self
            .cp
            .store
            .reopen_operation(
                &caller.tenant,
                &row.id,
                deadline_ms,
                now.saturating_sub(margin),
            )
            .await
            .map_err(store_status)?;
        Ok(reopened.then_some(deadline_ms))
    }

    /// The seal and deliver stages, in the operation's `writeback.dispatch`
    /// span.
    async fn seal_and_deliver(
        &self,
        caller: &Caller,
        ask: &Ask,
        r: &Resolved,
        rec: &Recorded,
        cx: &opentelemetry::Context,
    ) -> Delivery {
        let op = match self.seal(caller, ask, r, rec).await {
            Ok(op) => op,
            Err(f) => return Delivery::Refused(f),
        };
        let dispatch = self.cp.tracing.start(
            "writeback.dispatch",
            trace::SpanKind::Client,
            cx,
            vec![KeyValue::new(
                "writeback.operation_id",
                rec.operation_id.clone(),
            )],
        );
        let op = pb::OperationRequest {
            traceparent: trace::traceparent(&dispatch),
            ..op
        };
        let created_ms = self.cp.store.now_ms();
        let deadline = tokio::time::Instant::now() + timeout_of(&self.cp.config);
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
            Delivery::Refused(f) | Delivery::Unconfirmed(f) | Delivery::Unknown(f) => {
                f.reason.as_str().to_owned()
            }
        };
        trace::end(&dispatch, &reason);
        delivered
    }

    /// The seal stage: the password sealed to every enrolled agent of the
    /// domain, bound to the operation; then the last toggle check.
    async fn seal(
        &self,
        caller: &Caller,
        ask: &Ask,
        r: &Resolved,
        rec: &Recorded,
    ) -> Result<pb::OperationRequest, Failure> {
        let expires_at = rec.deadline_ms.div_euclid(1000);
        let envelope = match (&ask.new_password, &rec.keys) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Failure::new(
                    ReasonCode::Internal,
                    "the agents' keys were not read",
                ));
            }
            (Some(new_password), Some(keys)) => {
                let keys = keys.as_ref().map_err(|e| {
                    tracing::error!(error = %e, "cannot read agent keys");
                    Failure::new(ReasonCode::Internal, "the control plane's storage failed")
                })?;
                if keys.is_empty() {
                    return Err(Failure::new(
                        ReasonCode::NoAgentOnline,
                        format!(
                            "no agent is enrolled for domain {}; enroll one with `writebackctl agent enroll-token --domain {}`",
                            r.domain, r.domain
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
                    domain: &r.domain,
                    operation_id: &rec.operation_id,
                    target: &r.target_key,
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
            operation_id: rec.operation_id.clone(),
            tenant: caller.tenant.clone(),
            domain: r.domain.clone(),
            kind: ask.kind.to_wire() as i32,
            target: Some(r.user.clone()),
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

    /// The finish stage: the delivery's outcome recorded — final, or
    /// `TIMEOUT` marked for reconciliation when it is not known (an answer
    /// lost after the operation may have reached an agent, or an agent that
    /// has it in doubt) — the user notified, `bind` (an identity-provider
    /// user acting on their own account) bound to the user written when it
    /// was, and the answer.
    async fn finish(
        &self,
        caller: &Caller,
        rec: &Recorded,
        delivery: Delivery,
        bind: Option<&store::Subject>,
        seen: &mut Seen,
    ) -> Result<pb::OperationResponse, Status> {
        let store = &self.cp.store;
        // When the reconciler asks the agents: at once for an unknown
        // outcome; for a relay's refusal (its word, not an agent's), once
        // "never seen" could be final — past the expiry and the agents'
        // clock tolerance.
        let reconcile_after = match &delivery {
            Delivery::Unknown(_) => Some(store.now_ms()),
            Delivery::Answered(d) => d
                .result
                .as_ref()
                .and_then(|r| r.outcome.as_ref())
                .is_some_and(|o| o.reason_code == ReasonCode::Timeout.as_str())
                .then(|| store.now_ms()),
            Delivery::Unconfirmed(_) => Some(
                rec.deadline_ms
                    .saturating_add(crate::reconcile::EXPIRY_MARGIN_MS),
            ),
            Delivery::Refused(_) => None,
        };
        let found = match &delivery {
            Delivery::Answered(d) => d
                .result
                .as_ref()
                .map(|r| (r.target_guid.clone(), r.target_upn.clone())),
            _ => None,
        };
        let (fin, message) = finish_of(delivery, store.now_ms());
        if let Some(ms) = fin.agent_duration_ms.filter(|ms| *ms > 0) {
            seen.agent = Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        }
        let ok = fin.state == store::OperationState::Succeeded;
        let reason = fin.reason_code;
        // The record is the operation's truth: a storage hiccup (a busy
        // database under load) is retried a few times before the record is
        // left pending for the sweep and the reconciler.
        let mut attempt = 0u32;
        let started = Instant::now();
        let finished = loop {
            let done = store
                .finish_operation_then(&caller.tenant, &rec.operation_id, &fin, reconcile_after)
                .await;
            match done {
                Err(store::StoreError::Database(e)) if attempt < 2 => {
                    tracing::warn!(error = %e, attempt, "cannot record the outcome yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    attempt += 1;
                }
                done => break done,
            }
        };
        self.cp.metrics.store_write("finish", started.elapsed());
        match finished {
            Ok(()) if ok && self.cp.config.notify.enabled => {
                self.notify_finished(&caller.tenant, &rec.operation_id);
            }
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "cannot record the operation's outcome"),
        }
        tracing::info!(reason = %reason, "operation outcome recorded");
        if let Some((guid, upn)) = found {
            self.link_person(&caller.tenant, &guid, &upn, None).await;
            if let Some(subject) = bind.filter(|_| ok) {
                self.bind_identity(&caller.tenant, subject, &guid).await;
            }
        }
        answer(&rec.operation_id, reason.as_str(), message)
    }
}

/// The id's record read again when this request waited for another with
/// the same id (that one has finished it since).
async fn resolved_after(
    mut r: Resolved,
    waited: bool,
    api: &Api,
    caller: &Caller,
) -> Result<Resolved, Status> {
    if let (true, Some(id)) = (waited, &r.operation_id) {
        r.existing = api
            .cp
            .store
            .get_operation(&caller.tenant, id)
            .await
            .map_err(store_status)?;
    }
    Ok(r)
}

/// The record's final state from a delivery, and the answer's sentence.
fn finish_of(delivery: Delivery, now_ms: i64) -> (store::Finish, String) {
    let ms = |d: u64| (d > 0).then(|| i64::try_from(d).unwrap_or(i64::MAX));
    let (reason, message, agent_id, relay_id, agent_ms, hops) = match delivery {
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
        Delivery::Refused(f) | Delivery::Unconfirmed(f) | Delivery::Unknown(f) => (
            f.reason.as_str().to_owned(),
            f.message,
            String::new(),
            String::new(),
            0,
            store::Hops::default(),
        ),
    };
    let reason_code = ReasonCode::parse(&reason).unwrap_or_else(|| {
        tracing::warn!(reason, "unknown reason code from an agent");
        ReasonCode::Internal
    });
    let fin = store::Finish {
        state: if reason_code == ReasonCode::Ok {
            store::OperationState::Succeeded
        } else {
            store::OperationState::Failed
        },
        reason_code,
        message: message.clone(),
        agent_id: (!agent_id.is_empty()).then_some(agent_id),
        relay_id: (!relay_id.is_empty()).then_some(relay_id),
        finished_at_ms: now_ms,
        agent_duration_ms: Some(i64::try_from(agent_ms).unwrap_or(i64::MAX)),
        hops,
    };
    (fin, message)
}

/// The answer to the caller: the outcome when it is `OK`, else the failure.
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
