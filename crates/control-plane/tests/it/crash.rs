//! The control plane killed (SIGKILL) with operations in flight: the
//! `writeback-control-plane` binary as a child process on a SQLite store,
//! an in-process relay and agents bound to real Samba AD DCs. With one
//! control plane, operations of every kind (resets, changes, forced
//! changes, unlocks) in two forests; with two replicas on PostgreSQL,
//! resets. Each caller retries with its operation id until it gets a
//! definite answer (as the API tells it to); every one ends `OK`, and each
//! directory shows every operation applied exactly once. The schedule is
//! fixed: operations start 2 ms apart, the kill lands 100 ms in, the
//! control plane is back 1 s later.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use writeback_agent::directory::{Directory, DirectoryConfig};
use writeback_control_plane::store::{ClientApp, Role};
use writeback_control_plane::{ControlPlane, ControlPlaneConfig, bootstrap};
use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;
use writeback_testkit::burst::{self, Burst};
use writeback_testkit::stack::{Client, start_relay};
use writeback_testkit::{SambaDc, ServiceProcess};

const TENANT: &str = "t1";
const START: &str = "Start-Pass-1!";
const USERS: usize = 10;
/// How long a caller keeps retrying for a definite answer.
const PATIENCE: Duration = Duration::from_secs(120);

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Writes the configs of `replicas` control planes (one data directory,
/// `database_url` or SQLite in it, each its own listener), initializes the
/// tenant and returns the replicas (child processes, not started), the
/// control plane opened in-process (for its CA and store; the children
/// serve the API) and the administrator's token.
async fn prepare(
    dir: &Path,
    relay_url: &str,
    database_url: Option<&str>,
    replicas: usize,
    timeout_seconds: u64,
) -> (Vec<ServiceProcess>, Arc<ControlPlane>, String) {
    let data_dir = dir.join("cp");
    let mut children = Vec::new();
    let mut first = None;
    for n in 0..replicas {
        let addr = free_addr();
        let config = ControlPlaneConfig {
            data_dir: data_dir.clone(),
            database_url: database_url.unwrap_or_default().to_owned(),
            listen: addr,
            tls_dns_names: vec!["localhost".into()],
            tls_ip_addresses: vec![[127, 0, 0, 1].into()],
            relay_urls: vec![relay_url.to_owned()],
            operation_timeout_seconds: timeout_seconds,
            ..ControlPlaneConfig::default()
        };
        let config_file = dir.join(format!("cp-{n}.toml"));
        let database = database_url
            .map(|u| format!("database_url = \"{u}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            &config_file,
            format!(
                "data_dir = \"{}\"\n{database}listen = \"{addr}\"\nrelay_urls = [\"{relay_url}\"]\n\
                 tls_dns_names = [\"localhost\"]\ntls_ip_addresses = [\"127.0.0.1\"]\n\
                 operation_timeout_seconds = {timeout_seconds}\n",
                data_dir.display()
            ),
        )
        .unwrap();
        children.push(ServiceProcess::new(
            env!("CARGO_BIN_EXE_writeback-control-plane"),
            [
                "--config".into(),
                config_file.into_os_string(),
                "serve".into(),
            ],
            &addr.to_string(),
        ));
        first.get_or_insert(config);
    }
    let config = first.expect("at least one replica");
    let token_file = dir.join("admin.token");
    bootstrap::init(
        &config,
        TENANT,
        "admin@writeback.test",
        ClientApp::Portal,
        &token_file,
    )
    .await
    .unwrap();
    let cp = ControlPlane::open(config).await.unwrap();
    let token = std::fs::read_to_string(&token_file).unwrap();
    (children, cp, token.trim().to_owned())
}

/// A token of `helpdesk@contoso.test`, a password administrator.
async fn helpdesk_token(cp: &ControlPlane, dir: &Path) -> String {
    token(cp, dir, "helpdesk@contoso.test", Role::PasswordAdmin).await
}

/// A portal token of `principal` with `role`.
async fn token(cp: &ControlPlane, dir: &Path, principal: &str, role: Role) -> String {
    let token_file = dir.join(format!("{principal}.token"));
    bootstrap::issue_token(
        &cp.store,
        TENANT,
        principal,
        role,
        ClientApp::Portal,
        None,
        &token_file,
    )
    .await
    .unwrap();
    std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned()
}

/// Enrolls an agent for `dc` through the child's API and starts it.
async fn start_agent(
    cp_url: &str,
    admin: &Client,
    dc: &SambaDc,
    state_dir: &Path,
) -> (
    tokio::sync::watch::Sender<bool>,
    writeback_agent::runtime::RunningAgent,
) {
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
    writeback_agent::enroll::enroll(cp_url, &token, state_dir)
        .await
        .unwrap();
    let directory = Directory::new(DirectoryConfig::new(
        vec![dc.ldaps_url()],
        dc.ca_pem(),
        dc.admin_dn(),
        dc.admin_password().to_owned().into(),
    ))
    .unwrap();
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let mut agent =
        writeback_agent::runtime::start(state_dir, Arc::new(directory), 16, None, async move {
            let _ = rx.wait_for(|v| *v).await;
        })
        .await
        .unwrap();
    agent.wait_connected(Duration::from_secs(30)).await.unwrap();
    (stop, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_control_plane_killed_mid_burst_of_every_kind_in_two_forests_leaves_no_outcome_unknown() {
    writeback_identity::install_crypto_provider();
    let (contoso, fabrikam) = tokio::join!(
        burst::every_kind_dc("contoso.test"),
        burst::every_kind_dc("fabrikam.test")
    );
    let forests = [&contoso, &fabrikam];
    let mut bursts = Vec::new();
    for (dc, prefix) in forests.into_iter().zip(["crash", "fab"]) {
        bursts.push(
            Burst::create(dc, prefix, USERS, START)
                .await
                .with_every_kind(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("https://{}", relay_listener.local_addr().unwrap());
    let (mut children, cp, admin_token) = prepare(dir.path(), &relay_url, None, 1, 20).await;
    let mut child = children.remove(0);
    let relay = start_relay(
        &cp.ca,
        TENANT,
        "relay-1",
        relay_listener,
        Duration::from_secs(5),
        Default::default(),
    )
    .unwrap();
    child.start().await.unwrap();
    let cp_url = format!("https://{}", cp.config.listen);
    let admin = Client::connect(&cp_url, cp.ca.cert_pem(), &admin_token).unwrap();
    let helpdesk = Client::connect(
        &cp_url,
        cp.ca.cert_pem(),
        &helpdesk_token(&cp, dir.path()).await,
    )
    .unwrap();
    let mut agents = Vec::new();
    let mut callers = Vec::new();
    for (dc, burst) in forests.into_iter().zip(&mut bursts) {
        admin.register_domain(dc.domain()).await.unwrap();
        let state = dir.path().join(format!("agent-{}", dc.domain()));
        agents.push(start_agent(&cp_url, &admin, dc, &state).await);
        // The control plane knows the agent is online once a warm-up goes
        // through (an unlock of a user the burst resets).
        let (warm, _) = burst::write_until_known(
            std::slice::from_ref(&helpdesk),
            &burst::Write::Unlock { upn: burst.upn(0) },
            &uuid::Uuid::new_v4().to_string(),
            PATIENCE,
        )
        .await;
        assert_eq!(warm, ReasonCode::Ok, "{}", dc.domain());
        let mut clients = Vec::new();
        for i in 0..burst.len() {
            clients.push(if burst.is_self_service(i) {
                let token = token(&cp, dir.path(), &burst.upn(i), Role::User).await;
                Client::connect(&cp_url, cp.ca.cert_pem(), &token).unwrap()
            } else {
                helpdesk.clone()
            });
        }
        callers.push(clients);
        burst.prepare(dc).await;
        burst.remember(dc).await;
    }
    let interrupt = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        child.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        child.start().await.unwrap();
    };
    let ((contoso_answers, took_c), (fabrikam_answers, took_f)) = tokio::join!(
        bursts[0].run_with(|i| vec![callers[0][i].clone()], interrupt),
        bursts[1].run_with(|i| vec![callers[1][i].clone()], async {}),
    );
    let mut retried = 0;
    for ((dc, burst), answers) in forests
        .into_iter()
        .zip(&bursts)
        .zip([&contoso_answers, &fabrikam_answers])
    {
        let tally = burst
            .assert_applied_once(dc, &cp.store, TENANT, answers)
            .await;
        retried += tally.retried;
    }
    assert!(retried > 0, "the kill interrupted no request");
    eprintln!(
        "control-plane crash: {} operations of every kind in two forests, {retried} retried, \
         all OK in {:?}",
        2 * USERS,
        took_c.max(took_f)
    );
    relay.stop().await;
}

/// One of two control-plane replicas sharing a real PostgreSQL database is
/// killed mid-burst and stays down: its callers retry with the same
/// operation id against the other replica, which answers
/// `OPERATION_IN_PROGRESS` while the dead replica's record is pending, then
/// (past its deadline and the sweep's grace) asks the agent's ledger and
/// records the truth. Every caller ends `OK`, every password written once.
/// Half the callers start on each replica; the kill lands as soon as the
/// doomed one has recorded the first reset sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_replicas_killed_mid_burst_on_postgres_fails_nothing() {
    writeback_identity::install_crypto_provider();
    let db = crate::harness::TestDb::postgres().await;
    let dc = burst::fault_dc("contoso.test").await;
    dc.create_user("warm", START).await.unwrap();
    let mut burst = Burst::create(&dc, "replica", USERS, START).await;
    let dir = tempfile::tempdir().unwrap();
    let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("https://{}", relay_listener.local_addr().unwrap());
    let (mut replicas, cp, admin_token) =
        prepare(dir.path(), &relay_url, Some(db.url()), 2, 10).await;
    let relay = start_relay(
        &cp.ca,
        TENANT,
        "relay-1",
        relay_listener,
        Duration::from_secs(5),
        Default::default(),
    )
    .unwrap();
    for r in &mut replicas {
        r.start().await.unwrap();
    }
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| format!("https://{}", r.addr()))
        .collect();
    let admin = Client::connect(&urls[1], cp.ca.cert_pem(), &admin_token).unwrap();
    admin.register_domain(dc.domain()).await.unwrap();
    let (_stop_agent, _agent) = start_agent(&urls[1], &admin, &dc, &dir.path().join("agent")).await;
    let token = helpdesk_token(&cp, dir.path()).await;
    let helpdesks: Vec<Client> = urls
        .iter()
        .map(|u| Client::connect(u, cp.ca.cert_pem(), &token).unwrap())
        .collect();
    // Each replica knows the agent is online once a warm-up goes through it.
    for (n, h) in helpdesks.iter().enumerate() {
        let (warm, _) = h
            .reset_until_known(
                "warm@contoso.test",
                &format!("Warm-Up-Pass-{n}!"),
                &uuid::Uuid::new_v4().to_string(),
                PATIENCE,
            )
            .await;
        assert_eq!(warm, ReasonCode::Ok);
    }
    burst.remember(&dc).await;
    let (answers, took) = {
        let doomed = &mut replicas[0];
        let (first, store) = (&burst, &cp.store);
        burst
            .run_with(
                |i| {
                    let mut order = helpdesks.clone();
                    order.rotate_left(i % 2);
                    order
                },
                async move {
                    // As soon as the doomed replica has recorded user 0's reset
                    // (pending): it is in flight there.
                    let deadline = std::time::Instant::now() + Duration::from_secs(20);
                    let key = format!("upn:{}", first.upn(0));
                    while store
                        .count_operations_since(TENANT, &key, &[], 0)
                        .await
                        .unwrap()
                        .0
                        == 0
                    {
                        assert!(std::time::Instant::now() < deadline, "nothing recorded");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    doomed.kill();
                },
            )
            .await
    };
    let tally = burst
        .assert_applied_once(&dc, &cp.store, TENANT, &answers)
        .await;
    let longest = answers.iter().map(|(.., n)| *n).max().unwrap_or(0);
    eprintln!(
        "one of two replicas killed (PostgreSQL): {USERS} resets, {} OK, {} retried \
         (at most {longest} attempts), all in {took:?}",
        tally.ok, tally.retried
    );
    assert!(tally.retried > 0, "the kill interrupted no request");
    relay.stop().await;
}
