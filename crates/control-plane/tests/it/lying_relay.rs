//! A compromised relay lying about what it delivered (security round two,
//! issue 25, items 6 and 7): the control plane in-process over SQLite, a
//! real relay, two real agents of one domain on it, each bound to the same
//! real Samba AD DC, and between the control plane and the relay the rig's
//! fake relay playing the compromised one.
//!
//! - It forwards a reset, which an agent applies, and then answers a
//!   refusal of its own, unsigned: `OPERATION_EXPIRED` (which used to be a
//!   final outcome that reopened the id, so the caller's retry with the id
//!   ran the reset again on the other agent) or `NO_AGENT_ONLINE` (recorded
//!   as the outcome: the audit said "not applied" of an applied reset). Now
//!   the first sends the control plane to the agents' signed ledgers at
//!   once (the caller gets the agent's `OK`), and the second is the
//!   caller's answer but not the record's truth: the record is marked for
//!   the reconciler, and the caller's retry with the id gets the agent's
//!   `OK` — each password written once (the DC's `unicodePwd` write count).
//! - It hands one signed reset to both agents at once. The control plane
//!   signs the agent it chose into the operation, so the other agent
//!   refuses it (`OPERATION_UNAUTHENTICATED`): written once.

use std::sync::Arc;
use std::time::Duration;

use writeback_agent::directory::{Directory, DirectoryConfig};
use writeback_agent::runtime::RunningAgent;
use writeback_control_plane::store::OperationState;
use writeback_core::ReasonCode;
use writeback_testkit::SambaDc;
use writeback_testkit::stack::{RunningRelay, start_relay};

use crate::harness::TestDb;
use crate::support::{FakeAgent, Mode, Options, TENANT, TestCp};

const START: &str = "Start-Pass-1!";
const DOMAIN: &str = "contoso.test";

/// The rig: the control plane behind the fake relay, the real relay, two
/// real agents on it (reported online by the fake relay), and a user.
struct Rig {
    t: TestCp,
    _db: TestDb,
    dc: SambaDc,
    relay: Option<RunningRelay>,
    agents: Vec<(String, tokio::sync::watch::Sender<bool>, RunningAgent)>,
    dn: String,
    upn: String,
}

impl Rig {
    async fn start(user: &str) -> Rig {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()),
            ))
            .with_test_writer()
            .try_init();
        let db = TestDb::sqlite();
        let dc = SambaDc::start(DOMAIN)
            .await
            .expect("samba DC (scripts/install-deps.sh)");
        let dn = dc.create_user(user, START).await.unwrap();
        let t = TestCp::start(
            &db,
            Options {
                throttle_per_user_per_hour: 0,
                operation_timeout_seconds: 4,
                ..Options::default()
            },
        )
        .await;
        let admin = t.admin();
        admin.add_domain(DOMAIN).await;
        admin.set_all_toggles(true).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = start_relay(
            &t.cp.ca,
            TENANT,
            "relay-1",
            listener,
            Duration::from_secs(5),
            Default::default(),
        )
        .unwrap();
        t.relay.forward_to(&t.cp.ca, &relay.url);
        let mut agents = Vec::new();
        for name in ["agent-a", "agent-b"] {
            agents.push(start_agent(&t, &dc, &relay.url, name).await);
        }
        let ids: Vec<&str> = agents.iter().map(|(id, ..)| id.as_str()).collect();
        // The fake relay reports what the real one holds, and routes (when
        // the control plane names no agent) in this order.
        for id in &ids {
            t.relay.connect(FakeAgent {
                agent_id: (*id).to_owned(),
                domain: DOMAIN.into(),
                health: None,
            });
        }
        t.relay.set_route(&ids);
        Rig {
            t,
            _db: db,
            dc,
            relay: Some(relay),
            agents,
            dn,
            upn: format!("{user}@{DOMAIN}"),
        }
    }

    fn agent_ids(&self) -> Vec<String> {
        self.agents.iter().map(|(id, ..)| id.clone()).collect()
    }

    async fn writes(&self) -> u32 {
        self.dc.password_writes(&self.dn).await.unwrap()
    }

    async fn stop(mut self) {
        for (_, stop, agent) in self.agents.drain(..) {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), agent.task).await;
        }
        if let Some(relay) = self.relay.take() {
            relay.stop().await;
        }
        self.t.stop().await;
    }
}

/// Enrolls a real agent of the domain (its state pointed at the real
/// relay) and starts it against `dc`.
async fn start_agent(
    t: &TestCp,
    dc: &SambaDc,
    relay_url: &str,
    name: &str,
) -> (String, tokio::sync::watch::Sender<bool>, RunningAgent) {
    let state_dir = t.dir.path().join(name);
    let token = t.enrollment_token(DOMAIN).await;
    let enrollment = writeback_agent::enroll::enroll(&t.url, &token, &state_dir)
        .await
        .unwrap();
    let state_file = state_dir.join("state.toml");
    let mut state: toml::Table =
        toml::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    state.insert(
        "relay_urls".into(),
        toml::Value::Array(vec![toml::Value::String(relay_url.to_owned())]),
    );
    std::fs::write(&state_file, toml::to_string(&state).unwrap()).unwrap();
    let directory = Directory::new(DirectoryConfig::new(
        vec![dc.ldaps_url()],
        dc.ca_pem(),
        dc.admin_dn(),
        dc.admin_password().to_owned().into(),
    ))
    .unwrap();
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let mut agent =
        writeback_agent::runtime::start(&state_dir, Arc::new(directory), 4, None, async move {
            let _ = rx.wait_for(|v| *v).await;
        })
        .await
        .unwrap();
    agent.wait_connected(Duration::from_secs(30)).await.unwrap();
    (enrollment.agent_id, stop, agent)
}

/// Item 6: a relay's refusal after it delivered a write is not an outcome,
/// and never reopens the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_refusal_after_delivery_is_never_the_outcome() {
    let rig = Rig::start("lied").await;
    let admin = rig.t.admin();
    let agents = rig.agent_ids();

    // "Expired", after the agent applied it; then the caller retries with
    // the id, as an expired operation invites.
    rig.t
        .relay
        .set_mode(Mode::Lie(ReasonCode::OperationExpired));
    let before = rig.writes().await;
    let id = uuid::Uuid::new_v4().to_string();
    let first = admin.reset_with_id(&rig.upn, "Lied-Pass-1!", &id).await;
    let retried = admin.reset_with_id(&rig.upn, "Lied-Pass-1!", &id).await;
    assert_eq!(
        rig.writes().await,
        before + 1,
        "written once, not again by the other agent on the retry \
         (first answer {first:?}, retry {retried:?})"
    );
    assert_eq!(
        first,
        Ok(id.clone()),
        "the agent's signed OK, not the relay's word"
    );
    assert_eq!(retried, Ok(id.clone()));
    let row = rig
        .t
        .cp
        .store
        .get_operation(TENANT, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, OperationState::Succeeded);
    assert!(agents.contains(row.agent_id.as_ref().unwrap()), "{row:?}");
    assert!(rig.dc.try_bind(&rig.dn, "Lied-Pass-1!").await.unwrap());

    // "No agent online", after the agent applied it: the caller hears the
    // relay's reason, but the record waits for the agents, and the retry
    // with the id learns the truth from their signed ledgers.
    rig.t.relay.set_mode(Mode::Lie(ReasonCode::NoAgentOnline));
    let id = uuid::Uuid::new_v4().to_string();
    let first = admin.reset_with_id(&rig.upn, "Lied-Pass-2!", &id).await;
    assert_eq!(first, Err(ReasonCode::NoAgentOnline));
    let row = rig
        .t
        .cp
        .store
        .get_operation(TENANT, &id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.outcome_unknown(),
        "a relay's refusal is recorded for the reconciler, not as the outcome: {row:?}"
    );
    assert!(
        row.message
            .as_deref()
            .unwrap_or_default()
            .contains("a relay's answer, not an agent's"),
        "{row:?}"
    );
    let retried = admin.reset_with_id(&rig.upn, "Lied-Pass-2!", &id).await;
    assert_eq!(
        retried,
        Ok(id.clone()),
        "the agent's ledger says it was applied"
    );
    let row = rig
        .t
        .cp
        .store
        .get_operation(TENANT, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, OperationState::Succeeded, "{row:?}");
    assert!(!row.outcome_unknown());
    assert!(agents.contains(row.agent_id.as_ref().unwrap()), "{row:?}");
    assert_eq!(rig.writes().await, before + 2, "each reset written once");
    assert!(rig.dc.try_bind(&rig.dn, "Lied-Pass-2!").await.unwrap());
    rig.stop().await;
}

/// Item 7: a relay that hands one signed write to both agents of the
/// domain gets it applied once: the operation names the agent it is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_copying_a_signed_write_to_two_agents_gets_it_applied_once() {
    let rig = Rig::start("copied").await;
    let admin = rig.t.admin();
    rig.t.relay.set_mode(Mode::Duplicate);
    let before = rig.writes().await;
    let id = uuid::Uuid::new_v4().to_string();
    let answer = admin.reset_with_id(&rig.upn, "Copied-Pass-1!", &id).await;
    let copies = rig.t.relay.duplicates();
    assert_eq!(
        rig.writes().await,
        before + 1,
        "one signed reset, one write (the copy's answer: {copies:?})"
    );
    assert_eq!(answer, Ok(id.clone()));
    let [(other, reason)] = copies.try_into().expect("one copy, to the other agent");
    assert_eq!(reason, "OPERATION_UNAUTHENTICATED", "{other}");
    let row = rig
        .t
        .cp
        .store
        .get_operation(TENANT, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, OperationState::Succeeded);
    assert_ne!(row.agent_id.as_deref(), Some(other.as_str()));
    assert!(rig.dc.try_bind(&rig.dn, "Copied-Pass-1!").await.unwrap());
    rig.stop().await;
}
