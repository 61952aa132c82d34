//! The agent killed (SIGKILL) with resets in flight — and, in the second test,
//! the Samba DC it writes to killed and restarted: the `writeback-agent`
//! binary as a child process (its state directory, with the durable ledger,
//! survives), an in-process control plane and relay, a real Samba AD DC.
//! Each caller retries with its operation id until the answer is definite;
//! every one ends `OK`, and the directory shows each password written
//! exactly once: an operation the agent had begun when it died is decided
//! at restart from the user's password version (applied → its outcome;
//! not applied → run again), never applied twice. The schedule is fixed:
//! resets start 2 ms apart, the kill lands 40 ms in (the agent is then busy
//! with the first ones), the agent is back 1 s later.

use std::path::Path;
use std::time::{Duration, Instant};

use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;
use writeback_testkit::burst::{self, Burst};
use writeback_testkit::stack::{Client, Stack};
use writeback_testkit::{SambaDc, ServiceProcess};

const TENANT: &str = "t1";
const START: &str = "Start-Pass-1!";
const USERS: usize = 16;

/// Enrolls an agent for `dc` into `dir/state` and writes its config (the
/// DC, its CA, the bind password in a 0600 file, a metrics listener on
/// `metrics` so the harness can tell when it is up).
async fn enrolled_agent(stack: &Stack, dc: &SambaDc, dir: &Path, metrics: &str) -> ServiceProcess {
    let admin = stack.admin().unwrap();
    let token = admin
        .agents()
        .create_enrollment_token(admin.request(pb::CreateEnrollmentTokenRequest {
            domain: dc.domain().to_owned(),
            ttl_seconds: 600,
        }))
        .await
        .unwrap()
        .into_inner()
        .token;
    let state = dir.join("state");
    writeback_agent::enroll::enroll(&stack.cp_url, &token, &state)
        .await
        .unwrap();
    std::fs::write(dir.join("dc-ca.pem"), dc.ca_pem()).unwrap();
    let password_file = dir.join("bind.password");
    std::fs::write(&password_file, dc.admin_password()).unwrap();
    std::fs::set_permissions(
        &password_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\nmetrics_listen = \"{metrics}\"\n\n[directory]\n\
             urls = [\"{}\"]\nca_file = \"{}\"\nbind_dn = \"{}\"\nbind_password_file = \"{}\"\n",
            state.display(),
            dc.ldaps_url(),
            dir.join("dc-ca.pem").display(),
            dc.admin_dn(),
            password_file.display(),
        ),
    )
    .unwrap();
    ServiceProcess::new(
        env!("CARGO_BIN_EXE_writeback-agent"),
        ["--config".into(), config.into_os_string(), "run".into()],
        metrics,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_mid_burst_applies_everything_exactly_once() {
    crate::init_tracing();
    writeback_identity::install_crypto_provider();
    let dc = burst::fault_dc("contoso.test").await;
    let mut burst = Burst::create(&dc, "kill", USERS, START).await;
    let stack = Stack::start(TENANT, 1).await.unwrap();
    stack.add_domain(&dc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut agent = enrolled_agent(&stack, &dc, dir.path(), &metrics).await;
    agent.start().await.unwrap();
    stack.until_online(dc.domain(), 1).await.unwrap();
    let helpdesk: Client = stack.helpdesk(dc.domain()).await.unwrap();
    burst.remember(&dc).await;
    let (answers, took) = burst
        .run(&helpdesk, async {
            tokio::time::sleep(Duration::from_millis(40)).await;
            agent.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            agent.start().await.unwrap();
        })
        .await;
    burst
        .assert_applied_once(&dc, &stack.cp.store, TENANT, &answers)
        .await;
    let retried = answers.iter().filter(|(.., n)| *n > 1).count();
    eprintln!("agent crash: {USERS} resets, {retried} retried, all OK in {took:?}");
}

/// The DC killed (SIGKILL, its whole process group) mid-burst and started
/// again 2 s later: every caller gets a true answer — `OK` for a reset the
/// DC applied (recorded succeeded, the new password binds), a clear reason
/// for one that could not reach it (recorded failed, nothing written) —
/// and once it is back nothing was applied twice and the ones that failed
/// succeed when asked again. The schedule is fixed: resets start 2 ms
/// apart, the kill lands as soon as the first one is in the directory
/// (the agent is busy with the next ones, unless a fast machine finished
/// them all), and one more reset is asked while the DC is down, so the
/// failure path is taken on every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dc_killed_mid_burst_gets_every_caller_a_true_answer() {
    crate::init_tracing();
    writeback_identity::install_crypto_provider();
    let mut dc = burst::fault_dc("contoso.test").await;
    let mut burst = Burst::create(&dc, "dcdown", USERS, START).await;
    let mut stack = Stack::start(TENANT, 1).await.unwrap();
    let helpdesk: Client = stack.serve_domain(&dc).await.unwrap();
    // A warm-up: connections open and the first-use costs paid.
    dc.create_user("warm", START).await.unwrap();
    dc.create_user("late", START).await.unwrap();
    let (warm, _) = helpdesk
        .reset_until_known(
            "warm@contoso.test",
            "Warm-Up-Pass-1!",
            &uuid::Uuid::new_v4().to_string(),
            burst::PATIENCE,
        )
        .await;
    assert_eq!(warm, ReasonCode::Ok);
    burst.remember(&dc).await;
    let late = std::sync::Mutex::new(None);
    let (answers, took) = {
        let dc = &mut dc;
        let first = &burst;
        let (late, helpdesk2) = (&late, &helpdesk);
        burst
            .run(&helpdesk, async move {
                // The kill lands as soon as the first reset is in the directory.
                let deadline = Instant::now() + Duration::from_secs(20);
                while !first.applied(dc, 0).await {
                    assert!(Instant::now() < deadline, "the first reset never landed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                dc.kill();
                let asked = Instant::now();
                let (reason, _) = helpdesk2
                    .reset_until_known(
                        "late@contoso.test",
                        "Late-Passw0rd-1!",
                        &uuid::Uuid::new_v4().to_string(),
                        burst::PATIENCE,
                    )
                    .await;
                *late.lock().unwrap() = Some(reason);
                tokio::time::sleep(Duration::from_secs(2).saturating_sub(asked.elapsed())).await;
                dc.restart().await.unwrap();
            })
            .await
    };
    let tally = burst.check(&dc, &stack.cp.store, TENANT, &answers).await;
    eprintln!(
        "DC crash: {USERS} resets, {} OK, failed {:?}, in {took:?}",
        tally.ok, tally.failed
    );
    // The reset asked while the DC was down failed with a true reason and
    // wrote nothing.
    let late = late
        .into_inner()
        .unwrap()
        .expect("the late reset was asked");
    assert!(
        matches!(
            late,
            ReasonCode::DcUnreachable | ReasonCode::DirectoryError | ReasonCode::TlsFailure
        ),
        "a reset while the DC is down: {late}"
    );
    assert!(
        dc.try_bind("late@contoso.test", START).await.unwrap(),
        "the late reset wrote nothing"
    );
    assert!(tally.ok > 0, "the DC applied nothing before the kill");
    for (_, reason) in &tally.failed {
        assert!(
            // TLS_FAILURE: a DC coming back accepts connections before its
            // TLS is ready.
            matches!(
                reason,
                ReasonCode::DcUnreachable | ReasonCode::DirectoryError | ReasonCode::TlsFailure
            ),
            "a reason that says the DC could not be reached: {reason}"
        );
    }
    // Back: the ones that failed run now (a new id each), once.
    for (i, _) in &tally.failed {
        let (reason, _) = helpdesk
            .reset_until_known(
                &burst.upn(*i),
                &burst.password(*i),
                &uuid::Uuid::new_v4().to_string(),
                burst::PATIENCE,
            )
            .await;
        assert_eq!(
            reason,
            ReasonCode::Ok,
            "{} after the restart",
            burst.upn(*i)
        );
    }
    burst.assert_each_written_once(&dc).await;
}
