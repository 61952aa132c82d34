//! The agent killed (SIGKILL) with resets in flight: the `writeback-agent`
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

use writeback_control_plane::store::{ClientApp, Role};
use writeback_proto::v1 as pb;
use writeback_testkit::burst::Burst;
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

/// Waits until the control plane sees an agent of `domain` online.
async fn until_online(stack: &Stack, domain: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.cp.dispatcher.online_agents(TENANT, domain).is_empty() {
        assert!(Instant::now() < deadline, "the agent never came online");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_mid_burst_applies_everything_exactly_once() {
    crate::init_tracing();
    writeback_identity::install_crypto_provider();
    let dc = SambaDc::start("contoso.test")
        .await
        .expect("samba DC (scripts/install-deps.sh)");
    dc.set_password_settings(&["--min-pwd-age=0"])
        .await
        .unwrap();
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
    until_online(&stack, dc.domain()).await;
    let helpdesk: Client = stack
        .client(
            "helpdesk@contoso.test",
            Role::PasswordAdmin,
            ClientApp::Portal,
        )
        .await
        .unwrap();
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
