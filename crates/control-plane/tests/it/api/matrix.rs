//! The authorization matrix: every role × client app × operation × target
//! kind through the public gRPC API, against the exact code the seed's
//! supported/unsupported tables call for.
//!
//! An allowed password operation is recorded as pending, dispatched, and
//! ends here in `NO_AGENT_ONLINE` (the fake relay has no agent). A refused
//! one is answered at once with `PERMISSION_DENIED`, `WRITEBACK_DISABLED` or
//! `UNSUPPORTED_OPERATION` (its code in the status details), never reaches
//! the relay and leaves **no audit record**: a refusal is not an operation
//! (it is logged by the control plane instead), so it neither appears in
//! `operation show` nor counts toward the reset throttle.
//!
//! Decisions where the seed is silent, encoded in [`TABLE`]:
//! - self-service changes (voluntary and forced) are written back from every
//!   client app ("any end-user self-service … change");
//! - an administrator's own reset is self-service from the portal only
//!   ("cannot use the password reset tool … for their own password");
//! - an administrator may unlock an end user from the portal or the Graph
//!   API, like a reset; a change of someone else's password is unsupported;
//! - management calls depend on the role only, not the client app: reading
//!   settings and the audit log needs an administrator, changing settings,
//!   adding domains and issuing enrollment tokens a global administrator;
//! - `operation show` of someone else's operation answers `NOT_FOUND` to an
//!   end user, so it does not reveal that the operation exists.

use writeback_control_plane::config::ApiLimitsConfig;
use writeback_control_plane::store::{ClientApp, Role};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{self, Client, Options, TestCp, reason_in_details, upn_ref};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Reset,
    Change,
    ForcedChange,
    Unlock,
    SettingsRead,
    SettingsUpdate,
    DomainAdd,
    EnrollToken,
    AuditList,
    OperationShow,
}

impl Op {
    fn is_password(self) -> bool {
        matches!(self, Op::Reset | Op::Change | Op::ForcedChange | Op::Unlock)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Own,
    OtherEndUser,
    OtherAdmin,
}

/// The expected answer of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Written back (password operations: reaches dispatch) / answered.
    A,
    /// UNSUPPORTED_OPERATION: the seed does not write it back.
    U,
    /// PERMISSION_DENIED: the caller's role may not.
    P,
    /// NOT_FOUND.
    N,
    /// WRITEBACK_DISABLED: a toggle is off.
    D,
    /// STRONG_AUTHENTICATION_REQUIRED: the tables allow it, but a `wbt1`
    /// token is no sign-in, let alone a strong one.
    S,
}

use Want::{A, N, P, S, U};

const ROLES: [Role; 3] = [Role::User, Role::PasswordAdmin, Role::GlobalAdmin];
const APPS: [ClientApp; 4] = [
    ClientApp::Portal,
    ClientApp::Graph,
    ClientApp::Powershell,
    ClientApp::M365AdminCenter,
];

/// Each row: one operation on one target kind; the twelve cells are
/// `user`, `password_admin`, `global_admin`, each through `portal`, `graph`,
/// `powershell`, `m365_admin_center`, with every toggle on.
#[rustfmt::skip]
const TABLE: &[(Op, Target, [Want; 12])] = &[
    //                                   user          password_admin  global_admin
    //                                   po gr ps m3   po gr ps m3     po gr ps m3
    // Seed, supported: self-service reset from the reset portal (end users
    // and administrators) — after a strong sign-in through the identity
    // provider, which a wbt1 token never is (issue 25; the positive path is
    // tests/it/oidc.rs). Unsupported: an end user resetting their own
    // password through PowerShell or the Graph API; an administrator using
    // the reset tool on their own password.
    (Op::Reset, Target::Own,            [S, U, U, U,   S, U, U, U,     S, U, U, U]),
    // Supported: administrator-initiated end-user reset from the portal and
    // the Graph API. Unsupported: through PowerShell, from the M365 admin
    // center.
    (Op::Reset, Target::OtherEndUser,   [P, P, P, P,   A, A, U, U,     A, A, U, U]),
    // Unsupported: an administrator resetting another administrator.
    (Op::Reset, Target::OtherAdmin,     [P, P, P, P,   U, U, U, U,     U, U, U, U]),
    // Supported: any self-service voluntary change.
    (Op::Change, Target::Own,           [A, A, A, A,   A, A, A, A,     A, A, A, A]),
    (Op::Change, Target::OtherEndUser,  [P, P, P, P,   U, U, U, U,     U, U, U, U]),
    (Op::Change, Target::OtherAdmin,    [P, P, P, P,   U, U, U, U,     U, U, U, U]),
    // Supported: any self-service forced change (expired password).
    (Op::ForcedChange, Target::Own,          [A, A, A, A,   A, A, A, A,     A, A, A, A]),
    (Op::ForcedChange, Target::OtherEndUser, [P, P, P, P,   U, U, U, U,     U, U, U, U]),
    (Op::ForcedChange, Target::OtherAdmin,   [P, P, P, P,   U, U, U, U,     U, U, U, U]),
    // Self-service account unlock in the SSPR portal (a strong sign-in
    // again).
    (Op::Unlock, Target::Own,           [S, U, U, U,   S, U, U, U,     S, U, U, U]),
    (Op::Unlock, Target::OtherEndUser,  [P, P, P, P,   A, A, U, U,     A, A, U, U]),
    (Op::Unlock, Target::OtherAdmin,    [P, P, P, P,   U, U, U, U,     U, U, U, U]),
    // Management: the target kind does not matter (run for each anyway).
    (Op::SettingsRead, Target::Own,          [P, P, P, P,   A, A, A, A,     A, A, A, A]),
    (Op::SettingsRead, Target::OtherEndUser, [P, P, P, P,   A, A, A, A,     A, A, A, A]),
    (Op::SettingsRead, Target::OtherAdmin,   [P, P, P, P,   A, A, A, A,     A, A, A, A]),
    // Seed: cloud sync writeback is enabled "with global administrator credentials".
    (Op::SettingsUpdate, Target::Own,          [P, P, P, P,   P, P, P, P,     A, A, A, A]),
    (Op::SettingsUpdate, Target::OtherEndUser, [P, P, P, P,   P, P, P, P,     A, A, A, A]),
    (Op::SettingsUpdate, Target::OtherAdmin,   [P, P, P, P,   P, P, P, P,     A, A, A, A]),
    (Op::DomainAdd, Target::Own,          [P, P, P, P,   P, P, P, P,     A, A, A, A]),
    (Op::DomainAdd, Target::OtherEndUser, [P, P, P, P,   P, P, P, P,     A, A, A, A]),
    (Op::DomainAdd, Target::OtherAdmin,   [P, P, P, P,   P, P, P, P,     A, A, A, A]),
    (Op::EnrollToken, Target::Own,          [P, P, P, P,   P, P, P, P,     A, A, A, A]),
    (Op::EnrollToken, Target::OtherEndUser, [P, P, P, P,   P, P, P, P,     A, A, A, A]),
    (Op::EnrollToken, Target::OtherAdmin,   [P, P, P, P,   P, P, P, P,     A, A, A, A]),
    // The audit log filtered by the target user.
    (Op::AuditList, Target::Own,          [P, P, P, P,   A, A, A, A,     A, A, A, A]),
    (Op::AuditList, Target::OtherEndUser, [P, P, P, P,   A, A, A, A,     A, A, A, A]),
    (Op::AuditList, Target::OtherAdmin,   [P, P, P, P,   A, A, A, A,     A, A, A, A]),
    // An operation that targeted the target user.
    (Op::OperationShow, Target::Own,          [A, A, A, A,   A, A, A, A,     A, A, A, A]),
    (Op::OperationShow, Target::OtherEndUser, [N, N, N, N,   A, A, A, A,     A, A, A, A]),
    (Op::OperationShow, Target::OtherAdmin,   [N, N, N, N,   A, A, A, A,     A, A, A, A]),
];

fn principal(role: Role) -> &'static str {
    match role {
        Role::User => "eu@contoso.test",
        Role::PasswordAdmin => "pa@contoso.test",
        Role::GlobalAdmin => "ga@contoso.test",
    }
}

/// Another end user (a principal with the user role).
const BOB: &str = "bob@contoso.test";
/// Another administrator. The principal is stored in one letter case and
/// addressed in another: still an administrator.
const OTHER_ADMIN_STORED: &str = "Other-Admin@Contoso.Test";
const OTHER_ADMIN: &str = "other-admin@contoso.test";
const OTHER_ADMIN_AS_TYPED: &str = "other-admin@CONTOSO.test";

fn target_upn(role: Role, target: Target) -> &'static str {
    match target {
        Target::Own => principal(role),
        Target::OtherEndUser => BOB,
        Target::OtherAdmin => OTHER_ADMIN_AS_TYPED,
    }
}

fn want_code(w: Want) -> ReasonCode {
    match w {
        Want::A => ReasonCode::Ok,
        Want::U => ReasonCode::UnsupportedOperation,
        Want::P => ReasonCode::PermissionDenied,
        Want::N => ReasonCode::NotFound,
        Want::D => ReasonCode::WritebackDisabled,
        Want::S => ReasonCode::StrongAuthenticationRequired,
    }
}

struct Matrix {
    t: TestCp,
    /// Global administrator (portal) for the audit checks.
    auditor: Client,
    /// `callers[role][app]`.
    callers: Vec<Vec<Client>>,
    /// Pre-recorded operation per target user, for `operation show`.
    shown: Vec<(String, String)>,
    domains_added: usize,
}

impl Matrix {
    async fn new(db: &TestDb) -> Matrix {
        let t = support::ready(
            db,
            Options {
                // The matrix resets some users many times.
                throttle_per_user_per_hour: 0,
                // And makes hundreds of calls at once from one address and
                // one tenant (the rate limits have tests of their own).
                limits: ApiLimitsConfig {
                    calls_per_minute_per_source: 0,
                    calls_per_minute_per_tenant: 0,
                    ..ApiLimitsConfig::default()
                },
                ..Options::default()
            },
        )
        .await;
        let store = &t.cp.store;
        store
            .create_principal(support::TENANT, BOB, Role::User)
            .await
            .unwrap();
        store
            .create_principal(support::TENANT, OTHER_ADMIN_STORED, Role::PasswordAdmin)
            .await
            .unwrap();
        let mut callers = Vec::new();
        for role in ROLES {
            let mut row = Vec::new();
            for app in APPS {
                row.push(t.client_for(principal(role), role, app).await);
            }
            callers.push(row);
        }
        let mut shown = Vec::new();
        let now = t.cp.store.now_ms();
        for upn in [
            principal(Role::User),
            principal(Role::PasswordAdmin),
            principal(Role::GlobalAdmin),
            BOB,
            OTHER_ADMIN,
        ] {
            let id = uuid::Uuid::new_v4().to_string();
            t.insert_operation(&id, upn, now - 60_000).await;
            shown.push((upn.to_owned(), id));
        }
        let auditor = t.admin();
        Matrix {
            t,
            auditor,
            callers,
            shown,
            domains_added: 0,
        }
    }

    fn shown_for(&self, upn: &str) -> String {
        let upn = upn.to_ascii_lowercase();
        self.shown
            .iter()
            .find(|(u, _)| *u == upn)
            .map(|(_, id)| id.clone())
            .unwrap()
    }

    /// Runs one cell; returns a description of the mismatch, if any.
    async fn cell(
        &mut self,
        ri: usize,
        ai: usize,
        op: Op,
        target: Target,
        want: Want,
    ) -> Option<String> {
        let role = ROLES[ri];
        let c = self.callers[ri][ai].clone();
        let upn = target_upn(role, target);
        let what = format!("{role} via {} {op:?} on {target:?} ({upn})", APPS[ai]);
        let id = uuid::Uuid::new_v4().to_string();
        let answer: Result<(), tonic::Status> = match op {
            Op::Reset => c
                .passwords()
                .reset_password(pb::ResetPasswordRequest {
                    user: Some(upn_ref(upn)),
                    new_password: "Matrix-Passw0rd!1".into(),
                    operation_id: id.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Op::Change | Op::ForcedChange => c
                .passwords()
                .change_password(pb::ChangePasswordRequest {
                    user: Some(upn_ref(upn)),
                    old_password: "Matrix-Old-Passw0rd!1".into(),
                    new_password: "Matrix-Passw0rd!1".into(),
                    operation_id: id.clone(),
                    forced: op == Op::ForcedChange,
                    domain: String::new(),
                })
                .await
                .map(drop),
            Op::Unlock => c
                .passwords()
                .unlock_account(pb::UnlockAccountRequest {
                    user: Some(upn_ref(upn)),
                    operation_id: id.clone(),
                    domain: String::new(),
                })
                .await
                .map(drop),
            Op::SettingsRead => c
                .settings()
                .get_settings(pb::GetSettingsRequest {})
                .await
                .map(drop),
            Op::SettingsUpdate => {
                // Sets the toggles to what they are, so the matrix goes on.
                let now = self
                    .auditor
                    .settings()
                    .get_settings(pb::GetSettingsRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                c.settings()
                    .update_settings(pb::UpdateSettingsRequest {
                        cloud_sync_writeback: Some(now.cloud_sync_writeback),
                        sspr_writeback: Some(now.sspr_writeback),
                        unlock_without_reset: Some(now.unlock_without_reset),
                    })
                    .await
                    .map(drop)
            }
            Op::DomainAdd => {
                self.domains_added += 1;
                c.domains()
                    .add_domain(pb::AddDomainRequest {
                        name: format!("d{}.matrix.test", self.domains_added),
                        upn_suffixes: vec![],
                    })
                    .await
                    .map(drop)
            }
            Op::EnrollToken => c
                .agents()
                .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                    domain: "contoso.test".into(),
                    ttl_seconds: 60,
                })
                .await
                .map(drop),
            Op::AuditList => c
                .audit()
                .list_audit(pb::ListAuditRequest {
                    user: upn.into(),
                    page_size: 5,
                    page_token: String::new(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Op::OperationShow => c
                .audit()
                .get_operation(pb::GetOperationRequest {
                    operation_id: self.shown_for(upn),
                })
                .await
                .map(drop),
        };

        let got = match &answer {
            Ok(()) => ReasonCode::Ok,
            Err(s) => reason_in_details(s),
        };
        if op.is_password() {
            // Allowed password operations reach the relay, which has no agent.
            let expected = match want {
                Want::A => ReasonCode::NoAgentOnline,
                w => want_code(w),
            };
            if got != expected {
                return Some(format!("{what}: got {got}, want {expected}"));
            }
            let dispatched = self.t.relay.dispatched_ids().contains(&id);
            let record = self
                .auditor
                .audit()
                .get_operation(pb::GetOperationRequest {
                    operation_id: id.clone(),
                })
                .await;
            match (want, record) {
                (Want::A, Ok(r)) => {
                    let r = r.into_inner();
                    let reason = r.outcome.clone().map(|o| o.reason_code).unwrap_or_default();
                    if r.state != "failed" || reason != "NO_AGENT_ONLINE" || !dispatched {
                        return Some(format!(
                            "{what}: allowed but recorded {} {reason}, dispatched {dispatched}",
                            r.state
                        ));
                    }
                    if r.client_app != app_pb(APPS[ai]) as i32 || r.principal != principal(role) {
                        return Some(format!("{what}: recorded with the wrong origin: {r:?}"));
                    }
                }
                (Want::A, Err(s)) => {
                    return Some(format!("{what}: allowed but not recorded: {s:?}"));
                }
                (_, Ok(_)) => return Some(format!("{what}: refused but recorded")),
                (_, Err(s)) => {
                    if reason_in_details(&s) != ReasonCode::NotFound || dispatched {
                        return Some(format!(
                            "{what}: refused but dispatched {dispatched} / {s:?}"
                        ));
                    }
                }
            }
        } else if got != want_code(want) {
            return Some(format!("{what}: got {got}, want {}", want_code(want)));
        }
        None
    }

    /// Runs every row selected by `rows`, expecting `adjust(row's want)`.
    async fn pass(
        &mut self,
        name: &str,
        rows: impl Fn(Op) -> bool,
        adjust: impl Fn(Op, Want) -> Want,
    ) -> Vec<String> {
        let mut wrong = Vec::new();
        for (op, target, cells) in TABLE {
            if !rows(*op) {
                continue;
            }
            for ri in 0..ROLES.len() {
                for ai in 0..APPS.len() {
                    let want = adjust(*op, cells[ri * APPS.len() + ai]);
                    if let Some(w) = self.cell(ri, ai, *op, *target, want).await {
                        wrong.push(format!("[{name}] {w}"));
                    }
                }
            }
        }
        wrong
    }
}

fn app_pb(app: ClientApp) -> pb::ClientApp {
    match app {
        ClientApp::Portal => pb::ClientApp::Portal,
        ClientApp::Graph => pb::ClientApp::Graph,
        ClientApp::Powershell => pb::ClientApp::Powershell,
        ClientApp::M365AdminCenter => pb::ClientApp::M365AdminCenter,
    }
}

/// A refusal the caller's role explains stays PERMISSION_DENIED whatever
/// the toggles; anything else is stopped by the toggle first.
fn disabled_unless_denied(w: Want) -> Want {
    if w == P { P } else { Want::D }
}

async fn every_role_app_operation_and_target_gets_the_seeds_answer(db: &TestDb) {
    let mut m = Matrix::new(db).await;
    let mut wrong = m.pass("toggles on", |_| true, |_, w| w).await;

    let admin = m.auditor.clone();
    let set = |u: pb::UpdateSettingsRequest| {
        let admin = admin.clone();
        async move {
            admin.settings().update_settings(u).await.unwrap();
        }
    };
    set(pb::UpdateSettingsRequest {
        unlock_without_reset: Some(false),
        ..Default::default()
    })
    .await;
    wrong.extend(
        m.pass("unlock toggle off", Op::is_password, |op, w| {
            if op == Op::Unlock {
                disabled_unless_denied(w)
            } else {
                w
            }
        })
        .await,
    );
    set(pb::UpdateSettingsRequest {
        unlock_without_reset: Some(true),
        cloud_sync_writeback: Some(false),
        ..Default::default()
    })
    .await;
    wrong.extend(
        m.pass("cloud sync writeback off", Op::is_password, |_, w| {
            disabled_unless_denied(w)
        })
        .await,
    );
    set(pb::UpdateSettingsRequest {
        cloud_sync_writeback: Some(true),
        sspr_writeback: Some(false),
        ..Default::default()
    })
    .await;
    wrong.extend(
        m.pass("sspr writeback off", Op::is_password, |_, w| {
            disabled_unless_denied(w)
        })
        .await,
    );
    assert!(
        wrong.is_empty(),
        "{} cells deviate from the seed:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Every dispatched operation was one the matrix expected to be written
    // back, and a sealed one never carried a password in the clear.
    for op in m.t.relay.dispatched() {
        assert!(!format!("{op:?}").contains("Matrix-Passw0rd!1"));
    }
}

async fn an_end_user_unknown_to_the_control_plane_is_an_end_user(db: &TestDb) {
    let t = support::ready(db, Options::default()).await;
    let admin = t.admin();
    // carol has no principal record: an administrator may reset her.
    assert_eq!(
        admin.reset("carol@contoso.test", "Carol-Passw0rd!1").await,
        Err(ReasonCode::NoAgentOnline)
    );
    // The administrator's own account, typed in another case, is their own
    // account: SSPR from the portal is allowed (after a strong sign-in, which
    // a wbt1 token is not), the reset tool is not.
    assert_eq!(
        admin.reset("Admin@Contoso.Test", "Own-Passw0rd!1").await,
        Err(ReasonCode::StrongAuthenticationRequired)
    );
    let graph = t
        .client_for(support::ADMIN, Role::GlobalAdmin, ClientApp::Graph)
        .await;
    assert_eq!(
        graph.reset("ADMIN@contoso.test", "Own-Passw0rd!1").await,
        Err(ReasonCode::UnsupportedOperation)
    );
    // Unauthenticated callers are refused before anything else.
    let anonymous = t.anonymous();
    let err = anonymous
        .passwords()
        .reset_password(pb::ResetPasswordRequest {
            user: Some(upn_ref("carol@contoso.test")),
            new_password: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::Unauthenticated);
    let forged = t.client("wbt1.0000000000000000000000000000000000000000000000000000000000000000");
    let err = forged
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::Unauthenticated);
}

both_backends!(
    every_role_app_operation_and_target_gets_the_seeds_answer,
    an_end_user_unknown_to_the_control_plane_is_an_end_user,
);
