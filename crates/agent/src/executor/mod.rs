//! Turns one `OperationRequest` into one `OperationResult`, exactly once
//! per operation id. First of all it checks the control plane's signature
//! (`writeback_envelope::signing`) against the keys pinned at enrollment (the list a renewal brings replaces
//! them, [`Executor::pin_signing_keys`]): an
//! operation that is unsigned, signed by another key or altered after
//! signing — by a relay, say, or invented by one — is refused with
//! `OPERATION_UNAUTHENTICATED`, and, since it is not the control plane's,
//! it is neither remembered nor allowed to occupy its operation id. A
//! replayed signed operation gets the first result (same id) or
//! `OPERATION_EXPIRED`. Then, before anything touches the directory, it checks that
//! the operation is for this agent's tenant and domain, has not expired,
//! names a user, and that its envelope opens with this agent's key under the
//! operation's own binding; a refusal of its tenant, domain or expiry is not
//! remembered (nothing was touched, and the control plane may send the id
//! again with a new expiry). A repeated id — a relay failing over, a retry —
//! is answered with the first result; a concurrent duplicate waits for the
//! first attempt instead of running again. With a [`Ledger`] (the agent's
//! state directory), every operation is recorded as begun before it touches
//! the directory and as finished with its outcome, durably, so a restarted
//! agent answers a repeated id from the ledger instead of applying it again;
//! an operation begun but never finished (the agent stopped in between, or
//! its DC died mid-write and none answers since) is in doubt and never run
//! blindly again: it is settled from the user's password version (raised:
//! applied; unchanged: not) at start-up, right after a lost write, on its
//! next delivery, or when an outcome query asks about it while it is not
//! running; an in-doubt answer is not remembered. An outcome query
//! (`OPERATION_KIND_OUTCOME_QUERY`) is answered from memory and the ledger:
//! finished (with the outcome), in doubt or never seen. A policy query
//! (`OPERATION_KIND_POLICY_QUERY`) writes nothing: it is checked the same way
//! (minus the envelope) and answered with the policies the DC enforces; so
//! is a directory search (`OPERATION_KIND_DIRECTORY_SEARCH`, the help desk's
//! "find a user"), answered with the users of the agent's scope that match,
//! and a user lookup (`OPERATION_KIND_USER_LOOKUP`), answered with the
//! `objectGUID` and UPN of the user a target names (the [`queries`] module).
//! Right after the signature, the operation's signed control-plane time
//! (`issued_at`) is checked against the agent's clock and kept as the
//! reference for every expiry check ([`crate::clock::SignedTime`]:
//! `CLOCK_SKEW` when the agent's clock is behind beyond its tolerance), and
//! an operation bound to another agent (`agent_id`, signed: the control
//! plane chooses one agent per write) is refused with
//! `OPERATION_UNAUTHENTICATED` — so a relay cannot have one signed write
//! applied by two agents of a domain, each of which de-duplicates only its
//! own ids. Neither refusal is remembered.
//! Every result leaves signed with the agent's result-signing key
//! ([`Executor::with_result_signer`], `writeback_envelope::results`), bound
//! to the signed operation it answers, so the control plane can tell it
//! from one a relay forged.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OnceCell;
use writeback_core::operation::user_ref_key;
use writeback_core::trace::Tracing;
use writeback_core::{Failure, OperationKind, ReasonCode};
use writeback_envelope::results::ResultSigner;
use writeback_envelope::signing::{SigningError, TrustedKey};
use writeback_envelope::{Binding, Secrets};
use writeback_proto::v1::{
    self as v1, DcStatus, DirectorySearchResult, OperationOutcome, OperationRequest,
    OperationResult, PolicyReport, user_ref,
};

use crate::clock::{ClockCheck, SignedTime};
use crate::directory::{Identity, Target};
use crate::health::{Checks, HealthHandle};
use crate::ledger::{Begun, Entry, Ledger};
use crate::state::Enrollment;

mod queries;

/// How many finished operations are remembered for deduplication.
const REMEMBERED: usize = 100_000;

/// An operation that passed every check and is ready to apply.
pub struct ValidOperation {
    /// Operation id.
    pub id: String,
    /// What to do.
    pub kind: OperationKind,
    /// Whom to do it to.
    pub target: Target,
    /// pwdLastSet = 0 after a reset.
    pub must_change_at_next_logon: bool,
    /// Also unlock.
    pub unlock: bool,
}

/// Applies validated operations to a directory. The production
/// implementation is [`crate::directory::Directory`]; the trait exists so
/// the tunnel can be exercised without a DC in relay unit tests.
#[tonic::async_trait]
pub trait Apply: Send + Sync + 'static {
    /// Applies `op`; `secrets` is present for every kind that carries a password.
    async fn apply(&self, op: &ValidOperation, secrets: Option<&Secrets>) -> Result<(), Failure>;
    /// Reachability of each configured DC (live, per probe).
    async fn health(&self) -> Vec<DcStatus>;
    /// The slow checks behind health: the service account's rights and the password
    /// policy's pitfalls. Run by [`crate::health::HealthMonitor`] every few minutes,
    /// never per probe. The default verifies nothing.
    async fn checks(&self) -> Checks {
        Checks::default()
    }
    /// How many times `target`'s password was written, from the directory
    /// (the witness of [`crate::ledger`]'s in-doubt operations); `None` when
    /// it cannot be told. The default tells nothing.
    async fn password_version(&self, _target: &Target) -> Option<u32> {
        None
    }
    /// Who `target` is: its password version, `objectGUID` and UPN, read
    /// before a password write. The default knows only the password version.
    async fn identity(&self, target: &Target) -> Identity {
        Identity {
            password_version: self.password_version(target).await,
            ..Identity::default()
        }
    }
    /// The domain's password policies and, for `target`, the user's effective
    /// one (an `OPERATION_KIND_POLICY_QUERY`). The default reads nothing.
    async fn policy(&self, _target: Option<&Target>) -> Result<PolicyReport, Failure> {
        Err(Failure::new(
            ReasonCode::Unavailable,
            "this agent cannot read password policies",
        ))
    }
    /// The one user `target` names: its `objectGUID` and UPN (an
    /// `OPERATION_KIND_USER_LOOKUP`); `USER_NOT_FOUND` when none or several
    /// match. The default finds no one.
    async fn lookup(&self, _target: &Target) -> Result<Identity, Failure> {
        Err(Failure::new(
            ReasonCode::Unavailable,
            "this agent cannot look users up",
        ))
    }
    /// Users of the agent's scope whose names start with `query`, at most
    /// `limit` (an `OPERATION_KIND_DIRECTORY_SEARCH`). The default finds nothing.
    async fn search(&self, _query: &str, _limit: u32) -> Result<DirectorySearchResult, Failure> {
        Err(Failure::new(
            ReasonCode::Unavailable,
            "this agent cannot search the directory",
        ))
    }
}

type Cell = Arc<OnceCell<OperationOutcome>>;

#[derive(Default)]
struct Memory {
    cells: HashMap<String, Cell>,
    order: VecDeque<String>,
    /// Operations received and not yet answered (waiting for a slot or
    /// running), by id, with how many deliveries of each.
    arrived: HashMap<String, usize>,
}

/// Held from the moment an operation arrives on a tunnel until it is
/// answered: an outcome query meanwhile says "in doubt", never "not seen".
pub struct Arrival {
    memory: Arc<Mutex<Memory>>,
    id: String,
}

impl Drop for Arrival {
    fn drop(&mut self) {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.arrived.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                m.arrived.remove(&self.id);
            }
        }
    }
}

/// Executes operations for one enrolled agent.
pub struct Executor {
    enrollment: Enrollment,
    /// Replaced when a renewal brings the control plane's current list.
    trusted_keys: std::sync::RwLock<Vec<TrustedKey>>,
    envelope_key: writeback_envelope::KeyPair,
    applier: Arc<dyn Apply>,
    checks: HealthHandle,
    memory: Arc<Mutex<Memory>>,
    ledger: Option<Ledger>,
    /// When this executor started (Unix ms): memory is complete from here.
    started_ms: i64,
    metrics: Option<crate::metrics::Metrics>,
    tracing: Tracing,
    /// Signs every result; without one results leave unsigned (and the
    /// control plane refuses them).
    result_signer: Option<ResultSigner>,
    /// The agent's clock and the offset it tolerates.
    clock: ClockCheck,
    /// The control plane's time, from the operations' signatures.
    signed_time: SignedTime,
}

impl Executor {
    /// An executor for the enrolled identity. It applies only operations
    /// signed by one of `enrollment.operation_signing_keys` (a malformed key
    /// is ignored: [`crate::state::AgentState::load`] refuses it first, and
    /// with no usable key every operation is refused).
    pub fn new(
        enrollment: Enrollment,
        envelope_key: writeback_envelope::KeyPair,
        applier: Arc<dyn Apply>,
    ) -> Executor {
        let trusted_keys = enrollment.trusted_keys().unwrap_or_else(|e| {
            tracing::error!(error = %e, "no usable operation-signing key; every operation will be refused");
            Vec::new()
        });
        Executor {
            enrollment,
            trusted_keys: std::sync::RwLock::new(trusted_keys),
            envelope_key,
            applier,
            checks: HealthHandle::unchecked(),
            memory: Arc::new(Mutex::new(Memory::default())),
            ledger: None,
            started_ms: now_ms(),
            metrics: None,
            tracing: Tracing::disabled("writeback-agent"),
            result_signer: None,
            clock: ClockCheck::default(),
            signed_time: SignedTime::default(),
        }
    }

    /// Reads time from `clock` and tolerates its offset from the control
    /// plane's signed time (the default: the system clock, 10 s).
    pub fn with_clock(mut self, clock: ClockCheck) -> Executor {
        self.clock = clock;
        self
    }

    /// Signs every result with `signer` (the agent's `result.key`, whose
    /// public half the control plane recorded).
    pub fn with_result_signer(mut self, signer: ResultSigner) -> Executor {
        self.result_signer = Some(signer);
        self
    }

    /// Signs `result`, the answer to `request` as it arrived.
    fn signed(&self, request: &OperationRequest, mut result: OperationResult) -> OperationResult {
        if let Some(signer) = &self.result_signer {
            signer.sign(request, &mut result);
        }
        result
    }

    /// Pins `keys` instead of the operation-signing keys pinned so far (the
    /// list a certificate renewal brought, see [`crate::renew`]); operations
    /// signed by a key no longer listed are refused from now on.
    pub fn pin_signing_keys(&self, keys: Vec<TrustedKey>) {
        *self.trusted_keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// Records every operation in `ledger` and answers from it.
    pub fn with_ledger(mut self, ledger: Ledger) -> Executor {
        self.ledger = Some(ledger);
        self
    }

    /// Notes that operation `op` arrived; until the returned guard drops,
    /// an outcome query for it is answered "in doubt". Queries (policy and
    /// outcome) are not operations: `None`.
    pub fn arrive(&self, op: &OperationRequest) -> Option<Arrival> {
        if OperationKind::from_wire(op.kind).is_none() || op.operation_id.is_empty() {
            return None;
        }
        let id = op.operation_id.clone();
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        *m.arrived.entry(id.clone()).or_default() += 1;
        Some(Arrival {
            memory: Arc::clone(&self.memory),
            id,
        })
    }

    /// Exports the operations' spans through `tracing`.
    pub fn with_tracing(mut self, tracing: Tracing) -> Executor {
        self.tracing = tracing;
        self
    }

    /// Report the checks kept by `handle` in health reports.
    pub fn with_checks(mut self, handle: HealthHandle) -> Executor {
        self.checks = handle;
        self
    }

    /// Counts every operation answered in `metrics`.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Executor {
        self.metrics = Some(metrics);
        self
    }

    /// The applier (for health reports).
    pub fn applier(&self) -> &Arc<dyn Apply> {
        &self.applier
    }

    /// The last permission and policy checks (for health reports; never waits).
    pub fn checks(&self) -> Checks {
        self.checks.current()
    }

    /// The same, but right after start-up waits up to `limit` for the first round.
    pub async fn settled_checks(&self, limit: std::time::Duration) -> Checks {
        self.checks.settled(limit).await
    }

    fn cell(&self, id: &str) -> Cell {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.cells.get(id) {
            return c.clone();
        }
        let c = Cell::default();
        m.cells.insert(id.to_owned(), c.clone());
        m.order.push_back(id.to_owned());
        while m.order.len() > REMEMBERED {
            if let Some(old) = m.order.pop_front() {
                m.cells.remove(&old);
            }
        }
        c
    }

    /// Drops `cell` as the memory of `id` (if it still is).
    fn forget_cell(&self, id: &str, cell: &Cell) {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if m.cells.get(id).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            m.cells.remove(id);
        }
    }

    /// Runs `op` once and answers every request for its id with that result,
    /// in a span continuing the operation's trace ([`crate::trace`]); the
    /// result is signed.
    pub async fn execute(&self, op: OperationRequest) -> OperationResult {
        let head = OperationRequest {
            operation_id: op.operation_id.clone(),
            domain: op.domain.clone(),
            traceparent: op.traceparent.clone(),
            ..OperationRequest::default()
        };
        let request = op.clone();
        let result = crate::trace::traced(&self.tracing, &head, self.execute_untraced(op)).await;
        self.signed(&request, result)
    }

    #[tracing::instrument(skip_all, fields(operation_id = %op.operation_id, domain = %op.domain))]
    async fn execute_untraced(&self, op: OperationRequest) -> OperationResult {
        let started = Instant::now();
        let verified = {
            let keys = self.trusted_keys.read().unwrap_or_else(|p| p.into_inner());
            writeback_envelope::signing::verify(&op, &keys)
        };
        if let Err(e) = verified {
            tracing::warn!(error = %e, signing_key_id = %op.signing_key_id,
                "operation refused: not signed by the control plane");
            return self.refusal(op, started, unauthenticated(&e));
        }
        if let Err(f) = self.check_signed_binding(&op) {
            tracing::warn!(reason = %f.reason, signed_for = %op.agent_id, "operation refused");
            return self.refusal(op, started, f);
        }
        if op.kind == v1::OperationKind::PolicyQuery as i32 {
            return self.answer_policy_query(op, started).await;
        }
        if op.kind == v1::OperationKind::OutcomeQuery as i32 {
            return self.answer_outcome_query(op, started).await;
        }
        if op.kind == v1::OperationKind::DirectorySearch as i32 {
            return self.answer_search(op, started).await;
        }
        if op.kind == v1::OperationKind::UserLookup as i32 {
            return self.answer_lookup(op, started).await;
        }
        let id = op.operation_id.clone();
        // Who the target is, when this request is the one that ran it.
        let mut who = Identity::default();
        let outcome = if id.is_empty() {
            outcome_of(Err(Failure::new(
                ReasonCode::InvalidArgument,
                "the operation has no id",
            )))
        } else {
            let cell = self.cell(&id);
            let mut first = false;
            let outcome = cell
                .get_or_init(|| {
                    first = true;
                    async {
                        let (outcome, identity) = self.run_once(&op).await;
                        who = identity;
                        outcome
                    }
                })
                .await
                .clone();
            if !first {
                tracing::info!("repeated operation id answered with the first result");
            }
            // An outcome still in doubt is not remembered: the next
            // delivery or outcome query asks the ledger, which decides it
            // from the directory once the DC answers.
            if matches!(
                self.ledger.as_ref().and_then(|l| l.get(&id)),
                Some(Entry::Begun(_))
            ) {
                self.forget_cell(&id, &cell);
            }
            // Nor is a refusal for its destination (another tenant or
            // domain, expired): it never touched the directory, and the
            // control plane may send the id again, signed with a new expiry
            // (it reopens an operation known not to have run), to run it.
            if is_destination_refusal(&outcome) {
                self.forget_cell(&id, &cell);
            }
            outcome
        };
        tracing::info!(reason = %outcome.reason_code, applied = outcome.applied, "operation finished");
        if let Some(m) = &self.metrics {
            let kind = OperationKind::from_wire(op.kind).map_or("", OperationKind::as_str);
            m.operation(kind, &outcome.reason_code, started.elapsed());
        }
        OperationResult {
            operation_id: id,
            outcome: Some(outcome),
            agent_id: self.enrollment.agent_id.clone(),
            agent_duration_ms: elapsed_ms(started),
            policy_report: None,
            target_guid: who.guid.map(|g| g.to_string()).unwrap_or_default(),
            target_upn: who.upn.unwrap_or_default(),
            ..OperationResult::default()
        }
    }

    /// Answers `op` with `failure` without remembering it; signed.
    pub(crate) fn refused(
        &self,
        op: OperationRequest,
        started: Instant,
        failure: Failure,
    ) -> OperationResult {
        let request = op.clone();
        let result = self.refusal(op, started, failure);
        self.signed(&request, result)
    }

    /// [`Executor::refused`] before signing.
    fn refusal(&self, op: OperationRequest, started: Instant, failure: Failure) -> OperationResult {
        let outcome = outcome_of(Err(failure));
        if let Some(m) = &self.metrics {
            let kind = OperationKind::from_wire(op.kind).map_or("", OperationKind::as_str);
            m.operation(kind, &outcome.reason_code, started.elapsed());
        }
        OperationResult {
            operation_id: op.operation_id,
            outcome: Some(outcome),
            agent_id: self.enrollment.agent_id.clone(),
            agent_duration_ms: elapsed_ms(started),
            policy_report: None,
            ..OperationResult::default()
        }
    }

    /// Runs `op` unless the ledger knows it, recording it as begun (with
    /// the target's password version, the witness) before and finished
    /// after. Without a ledger, memory alone deduplicates.
    async fn run_once(&self, op: &OperationRequest) -> (OperationOutcome, Identity) {
        let Some(ledger) = &self.ledger else {
            return (outcome_of(self.run(op).await), Identity::default());
        };
        match ledger.get(&op.operation_id) {
            Some(Entry::Done(outcome)) => {
                tracing::info!("repeated operation id answered from the ledger");
                return (outcome, Identity::default());
            }
            Some(Entry::Begun(begun)) => {
                match self.settle(ledger, &op.operation_id, &begun).await {
                    Settled::Applied(outcome) => return (outcome, Identity::default()),
                    Settled::NotApplied => {}
                    Settled::InDoubt => {
                        tracing::warn!(
                            "operation begun before a restart and never finished; not run again"
                        );
                        return (in_doubt(), Identity::default());
                    }
                }
            }
            None => {}
        }
        // Refused before it begins (see `is_destination_refusal`): not in
        // the ledger.
        if let Err(f) = self.check_destination(op) {
            return (outcome_of(Err(f)), Identity::default());
        }
        let (begun, identity) = self.begun(op).await;
        if let Err(e) = ledger.begin(&op.operation_id, begun.clone()).await {
            tracing::error!(error = %e, "cannot record the operation in the ledger; refused");
            let refused = outcome_of(Err(Failure::new(
                ReasonCode::Internal,
                "the agent cannot write its operation ledger; nothing was written to the directory",
            )));
            return (refused, Identity::default());
        }
        let mut outcome = outcome_of(self.run(op).await);
        // A password write has a witness; an unlock's failure stands (run
        // again, it does no harm).
        if begun.witness.is_some() && may_have_landed(&outcome) {
            match self.witnessed(&begun).await {
                Witnessed::Raised => outcome = applied_after_loss(),
                Witnessed::Unchanged => {}
                Witnessed::Unknown => {
                    // Kept begun: a later outcome query (or a restart)
                    // decides it from the witness once the DC answers.
                    tracing::warn!("the write's outcome is unknown until the DC answers again");
                    return (in_doubt_after_loss(), identity);
                }
            }
        }
        if let Err(e) = ledger.finish(&op.operation_id, &outcome).await {
            tracing::error!(error = %e, "cannot record the operation's outcome in the ledger");
        }
        (outcome, identity)
    }

    /// Whether a password write's target shows a new password since
    /// `begun` (its password version raised), read from the directory now.
    async fn witnessed(&self, begun: &Begun) -> Witnessed {
        let (Some(before), Some(target)) = (begun.witness, target_from_key(&begun.target)) else {
            return Witnessed::Unknown;
        };
        match self.applier.password_version(&target).await {
            Some(now) if now > before => Witnessed::Raised,
            Some(_) => Witnessed::Unchanged,
            None => Witnessed::Unknown,
        }
    }

    /// The ledger's record of `op` about to begin: its expiry, target and
    /// kind, and — for a password write — the target's password version;
    /// with who the target is (its GUID and UPN, read in the same search).
    async fn begun(&self, op: &OperationRequest) -> (Begun, Identity) {
        let valid = self.validate(op).ok();
        let identity = match &valid {
            Some(v) if v.kind.carries_password() => self.applier.identity(&v.target).await,
            _ => Identity::default(),
        };
        let witness = identity.password_version;
        let begun = Begun {
            expires_ms: op
                .expires_at
                .as_ref()
                .map_or(0, |t| t.seconds.saturating_mul(1000)),
            target: op
                .target
                .as_ref()
                .and_then(user_ref_key)
                .unwrap_or_default(),
            kind: valid.map_or("", |v| v.kind.as_str()).to_owned(),
            witness,
        };
        (begun, identity)
    }

    /// Decides an operation begun before a restart from the directory: its
    /// password version raised since (applied: recorded as finished),
    /// unchanged (not applied: forgotten, to run again) or unknown. An
    /// unlock is idempotent: run again.
    async fn settle(&self, ledger: &Ledger, id: &str, begun: &Begun) -> Settled {
        if begun.kind == OperationKind::Unlock.as_str() {
            return match ledger.forget(id).await {
                Ok(()) => Settled::NotApplied,
                Err(_) => Settled::InDoubt,
            };
        }
        let raised = match self.witnessed(begun).await {
            Witnessed::Raised => true,
            Witnessed::Unchanged => false,
            Witnessed::Unknown => return Settled::InDoubt,
        };
        if raised {
            let outcome = OperationOutcome {
                reason_code: ReasonCode::Ok.as_str().to_owned(),
                message: "the change was written to the directory (found applied after the \
                          agent restarted)"
                    .to_owned(),
                applied: true,
            };
            if ledger.finish(id, &outcome).await.is_err() {
                return Settled::InDoubt;
            }
            tracing::info!(operation_id = id, "in-doubt operation found applied");
            Settled::Applied(outcome)
        } else {
            if ledger.forget(id).await.is_err() {
                return Settled::InDoubt;
            }
            tracing::info!(operation_id = id, "in-doubt operation found not applied");
            Settled::NotApplied
        }
    }

    /// An outcome query's view of operation `id`: an operation begun and
    /// not running here (a write whose connection was lost, or one begun
    /// before a restart) is settled from the directory first, so the
    /// answer is the truth as soon as the DC answers again.
    async fn settled_entry(&self, id: &str) -> Option<Entry> {
        let ledger = self.ledger.as_ref()?;
        let entry = ledger.get(id);
        if let Some(Entry::Begun(begun)) = &entry {
            let running = self
                .memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .arrived
                .contains_key(id);
            if !running {
                let settled = self.settle(ledger, id, begun).await;
                tracing::info!(operation_id = %id, settled = settled.word(), "in-doubt operation settled for an outcome query");
                return ledger.get(id);
            }
        }
        entry
    }

    /// Settles every operation the ledger holds in doubt (at start-up,
    /// before the tunnel opens, so outcome queries get the truth).
    pub async fn settle_ledger(&self) {
        let Some(ledger) = &self.ledger else { return };
        for (id, begun) in ledger.in_doubt() {
            let settled = self.settle(ledger, &id, &begun).await;
            tracing::info!(operation_id = %id, settled = settled.word(), "in-doubt operation settled");
        }
    }

    /// "What happened to operation X?": finished (with its outcome), in
    /// doubt (arrived and unanswered, or begun before a restart) or never
    /// seen since the ledger's `since`. Read-only; checked for tenant,
    /// domain and expiry like an operation.
    async fn answer_outcome_query(
        &self,
        op: OperationRequest,
        started: Instant,
    ) -> OperationResult {
        if let Err(f) = self.check_destination(&op) {
            return self.refusal(op, started, f);
        }
        let id = op.operation_id.as_str();
        // A finished outcome first: the delivery that finished it may not
        // have let go of its arrival yet.
        let remembered = {
            let m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            match m.cells.get(id).map(|c| c.get().cloned()) {
                Some(Some(outcome)) => Some(Some(outcome)),
                _ if m.arrived.contains_key(id) => Some(None),
                other => other,
            }
        };
        let known = match remembered {
            Some(Some(outcome)) => Some(Entry::Done(outcome)),
            Some(None) => Some(Entry::Begun(Begun::default())),
            None => self.settled_entry(id).await,
        };
        let (state, outcome) = match known {
            Some(Entry::Done(o)) => (v1::LedgerState::Finished, o),
            Some(Entry::Begun(_)) => (v1::LedgerState::InDoubt, in_doubt()),
            None => (
                v1::LedgerState::NotSeen,
                OperationOutcome {
                    reason_code: ReasonCode::Ok.as_str().to_owned(),
                    message: "this agent never received the operation".to_owned(),
                    applied: false,
                },
            ),
        };
        tracing::info!(ledger_state = ?state, "outcome query answered");
        // Without a ledger, memory is all there is: complete since start-up.
        let since = self
            .ledger
            .as_ref()
            .map_or(self.started_ms, Ledger::since_ms);
        OperationResult {
            operation_id: op.operation_id,
            outcome: Some(outcome),
            agent_id: self.enrollment.agent_id.clone(),
            agent_duration_ms: elapsed_ms(started),
            ledger_state: state as i32,
            ledger_since_ms: since,
            ..OperationResult::default()
        }
    }

    async fn run(&self, op: &OperationRequest) -> Result<(), Failure> {
        let valid = self.validate(op)?;
        let secrets = if valid.kind.carries_password() {
            Some(self.open(op, &valid)?)
        } else {
            None
        };
        self.applier.apply(&valid, secrets.as_ref()).await
    }

    fn validate(&self, op: &OperationRequest) -> Result<ValidOperation, Failure> {
        self.check_destination(op)?;
        let kind = OperationKind::from_wire(op.kind)
            .ok_or_else(|| Failure::new(ReasonCode::InvalidArgument, "unknown operation kind"))?;
        Ok(ValidOperation {
            id: op.operation_id.clone(),
            kind,
            target: target_of(op)?,
            must_change_at_next_logon: op.must_change_at_next_logon,
            unlock: op.unlock,
        })
    }

    /// What the signature binds beyond the operation itself: the control
    /// plane's time (not more than the tolerance in this agent's future)
    /// and the agent it is for (this one). Both are absent only from what a
    /// control plane older than this agent signs — a relay cannot remove
    /// them from what this version signs — and then only the agent's own
    /// clock and the relay's time judge it, as before.
    fn check_signed_binding(&self, op: &OperationRequest) -> Result<(), Failure> {
        if let Some(issued) = &op.issued_at {
            self.signed_time
                .observe(issued, (self.clock.now)(), self.clock.max_offset)?;
        }
        if !op.agent_id.is_empty() && op.agent_id != self.enrollment.agent_id {
            return Err(Failure::new(
                ReasonCode::OperationUnauthenticated,
                format!(
                    "the operation is signed for agent {}, not for this agent ({}): a relay \
                     delivered it to the wrong agent; nothing was written",
                    op.agent_id, self.enrollment.agent_id
                ),
            ));
        }
        Ok(())
    }

    /// This agent's tenant and domain, and not expired by the later of its
    /// clock and the control plane's signed time.
    fn check_destination(&self, op: &OperationRequest) -> Result<(), Failure> {
        if op.tenant != self.enrollment.tenant
            || !op.domain.eq_ignore_ascii_case(&self.enrollment.domain)
        {
            return Err(Failure::new(
                ReasonCode::WrongDomain,
                format!(
                    "this agent serves domain {}, not {}; the operation was not applied",
                    self.enrollment.domain, op.domain
                ),
            ));
        }
        let expires = op.expires_at.as_ref().ok_or_else(|| {
            Failure::new(ReasonCode::InvalidArgument, "the operation has no expiry")
        })?;
        let expires_ms = expires
            .seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(expires.nanos) / 1_000_000);
        if self.signed_time.now_ms((self.clock.now)()) >= expires_ms {
            return Err(Failure::new(
                ReasonCode::OperationExpired,
                "the operation expired before it reached the agent; nothing was written",
            ));
        }
        Ok(())
    }

    fn open(&self, op: &OperationRequest, valid: &ValidOperation) -> Result<Secrets, Failure> {
        open_envelope(
            op,
            valid.kind,
            &self.enrollment.agent_id,
            &self.envelope_key,
        )
    }
}

/// Opens the password envelope of `op` (of `kind`) with this agent's key,
/// bound to the operation's fields as they arrived: a ciphertext moved to
/// another operation, or fields altered in transit, do not open. A change
/// must carry the current password.
pub(crate) fn open_envelope(
    op: &OperationRequest,
    kind: OperationKind,
    agent_id: &str,
    key: &writeback_envelope::KeyPair,
) -> Result<Secrets, Failure> {
    let envelope = op.envelope.as_ref().ok_or_else(|| {
        Failure::new(
            ReasonCode::EnvelopeInvalid,
            "the operation carries no password envelope",
        )
    })?;
    let target = op
        .target
        .as_ref()
        .and_then(user_ref_key)
        .unwrap_or_default();
    let binding = Binding {
        tenant: &op.tenant,
        domain: &op.domain,
        operation_id: &op.operation_id,
        target: &target,
        kind: kind.as_str(),
        must_change_at_next_logon: op.must_change_at_next_logon,
        unlock: op.unlock,
        expires_at: op.expires_at.as_ref().map_or(0, |t| t.seconds),
    };
    let secrets = writeback_envelope::open(envelope, agent_id, key, &binding).map_err(|e| {
        tracing::warn!(error = %e, "password envelope refused");
        Failure::new(ReasonCode::EnvelopeInvalid, e.to_string())
    })?;
    if matches!(kind, OperationKind::Change | OperationKind::ForcedChange)
        && secrets.old_password.is_none()
    {
        return Err(Failure::new(
            ReasonCode::InvalidArgument,
            "a password change needs the current password",
        ));
    }
    Ok(secrets)
}

/// The failure for an operation whose signature did not verify.
fn unauthenticated(e: &SigningError) -> Failure {
    let why = match e {
        SigningError::NoTrustedKey => {
            "this agent pins no operation-signing key (enroll it again); nothing was written"
        }
        SigningError::Unsigned => {
            "the operation is not signed by the control plane; nothing was written"
        }
        SigningError::UnknownKey => {
            "the operation is signed by a key this agent does not trust; nothing was written"
        }
        SigningError::BadSignature | SigningError::InvalidKey => {
            "the operation was altered after the control plane signed it; nothing was written"
        }
    };
    Failure::new(ReasonCode::OperationUnauthenticated, why)
}

/// How an operation begun before a restart was decided.
enum Settled {
    Applied(OperationOutcome),
    NotApplied,
    InDoubt,
}

impl Settled {
    fn word(&self) -> &'static str {
        match self {
            Settled::Applied(_) => "applied",
            Settled::NotApplied => "not applied",
            Settled::InDoubt => "in doubt",
        }
    }
}

/// The target of a ledger key (`upn:…` or `guid:…`).
fn target_from_key(key: &str) -> Option<Target> {
    match key.split_once(':')? {
        ("upn", upn) if !upn.is_empty() => Some(Target::Upn(upn.to_owned())),
        ("guid", g) => uuid::Uuid::parse_str(g).ok().map(Target::ObjectGuid),
        _ => None,
    }
}

/// The user an operation names.
pub(crate) fn target_of(op: &OperationRequest) -> Result<Target, Failure> {
    match op.target.as_ref().and_then(|t| t.by.as_ref()) {
        Some(user_ref::By::Upn(upn)) if !upn.is_empty() => Ok(Target::Upn(upn.clone())),
        Some(user_ref::By::ObjectGuid(g)) => {
            Ok(Target::ObjectGuid(uuid::Uuid::parse_str(g).map_err(
                |_| Failure::new(ReasonCode::InvalidArgument, "objectGUID is not a GUID"),
            )?))
        }
        _ => Err(Failure::new(
            ReasonCode::InvalidArgument,
            "the operation names no user",
        )),
    }
}

/// Whether `outcome` is [`Executor::check_destination`]'s refusal (another
/// tenant or domain, or expired before it arrived): nothing touched the
/// directory, so it is neither remembered nor recorded in the ledger.
fn is_destination_refusal(outcome: &OperationOutcome) -> bool {
    [ReasonCode::WrongDomain, ReasonCode::OperationExpired]
        .iter()
        .any(|r| outcome.reason_code == r.as_str())
}

/// Milliseconds since `started`, for `OperationResult.agent_duration_ms`.
fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// What the directory shows of a password write now.
enum Witnessed {
    Raised,
    Unchanged,
    Unknown,
}

/// A failure after which the write may still have reached the DC: the
/// connection lost or the DC silent while it was being written.
fn may_have_landed(outcome: &OperationOutcome) -> bool {
    [ReasonCode::DirectoryError, ReasonCode::Timeout]
        .iter()
        .any(|r| outcome.reason_code == r.as_str())
}

/// A write found applied after its answer was lost.
fn applied_after_loss() -> OperationOutcome {
    OperationOutcome {
        reason_code: ReasonCode::Ok.as_str().to_owned(),
        message: "the change was written to the directory (confirmed after the connection to \
                  the domain controller was lost)"
            .to_owned(),
        applied: true,
    }
}

/// A write whose connection was lost and whose DC cannot be asked yet.
fn in_doubt_after_loss() -> OperationOutcome {
    OperationOutcome {
        reason_code: ReasonCode::Timeout.as_str().to_owned(),
        message: "the connection to the domain controller was lost while the change was being \
                  written and it cannot be asked yet; the outcome is decided when it answers \
                  again (retry with the same operation id)"
            .to_owned(),
        applied: false,
    }
}

/// The answer for an operation begun and never finished.
fn in_doubt() -> OperationOutcome {
    OperationOutcome {
        reason_code: ReasonCode::Timeout.as_str().to_owned(),
        message: "the agent began this operation and stopped before recording its outcome; \
                  it may or may not have been applied, so check the account before retrying"
            .to_owned(),
        applied: false,
    }
}

fn outcome_of(r: Result<(), Failure>) -> OperationOutcome {
    match r {
        Ok(()) => OperationOutcome {
            reason_code: ReasonCode::Ok.as_str().to_owned(),
            message: "the change was written to the directory".to_owned(),
            applied: true,
        },
        Err(f) => OperationOutcome {
            reason_code: f.reason.as_str().to_owned(),
            message: f.message,
            applied: false,
        },
    }
}

#[cfg(test)]
mod tests;
