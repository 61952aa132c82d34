//! E-mail notifications against a real SMTP server (aiosmtpd from the tests'
//! virtual environment, STARTTLS with a test CA, AUTH), on SQLite and
//! PostgreSQL: what is queued after a real reset, unlock and refused
//! administrator-on-administrator reset served by the API, what arrives,
//! that no password or token is in any mail, outbox row or log line, retries
//! while the relay is down, giving up, and that two senders on one database
//! never send one row twice.
//!
//! These tests run on a current-thread runtime so that one scoped tracing
//! subscriber sees every log line of the control plane and the sender.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use writeback_control_plane::config::{NotifyConfig, SmtpTls};
use writeback_control_plane::notify::{self, Pass, Sender};
use writeback_control_plane::store::{
    ClientApp, Clock, Finish, NewOperation, NotificationRow, NotificationState, OperationState,
    Page, Role, Store,
};
use writeback_core::ReasonCode;
use writeback_testkit::smtp::{ReceivedMail, SmtpServer};

use crate::harness::TestDb;
use crate::support::{ADMIN, Mode, Options, TENANT, WAIT, ready};

/// Generates `sqlite::<name>` and `postgres::<name>` current-thread tests.
macro_rules! both_backends_one_thread {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "current_thread")]
                async fn $name() {
                    let db = crate::harness::TestDb::sqlite();
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "current_thread")]
                async fn $name() {
                    let db = crate::harness::TestDb::postgres().await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

both_backends_one_thread!(
    notifications_reach_a_real_smtp_server_without_secrets,
    mail_waits_in_the_outbox_while_the_relay_is_down,
    two_senders_never_send_one_row_twice,
);

/// Every log line written while it is alive (all targets, debug and up).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Notifications to `server` over STARTTLS (trusting its CA) with AUTH.
fn config_for(server: &SmtpServer, dir: &Path) -> NotifyConfig {
    let ca = dir.join("smtp-ca.pem");
    std::fs::write(&ca, server.ca_pem()).unwrap();
    let password = dir.join("smtp-password");
    std::fs::write(&password, format!("{}\n", server.password())).unwrap();
    NotifyConfig {
        enabled: true,
        smtp_host: server.host().into(),
        smtp_port: server.port(),
        tls: SmtpTls::Starttls,
        ca_file: Some(ca),
        username: Some(server.username().into()),
        password_file: Some(password),
        from: "writeback <writeback@contoso.test>".into(),
        admin_recipients: vec!["secops@contoso.test".into(), "ciso@contoso.test".into()],
        timeout_seconds: 5,
        ..NotifyConfig::default()
    }
}

async fn outbox(store: &Store) -> Vec<NotificationRow> {
    store
        .list_notifications(TENANT, Page::first(1000))
        .await
        .unwrap()
        .0
}

fn mail_to<'a>(mails: &'a [ReceivedMail], rcpt: &str) -> Vec<&'a ReceivedMail> {
    mails.iter().filter(|m| m.rcpt_tos == [rcpt]).collect()
}

/// A reset through the API (admin → alice), a help desk's unlock (bob; a
/// self-service unlock needs an identity provider's strong sign-in, which a
/// `wbt1` token is not, and is proven in tests/it/oidc.rs), a
/// refused reset of another administrator: their mails arrive over STARTTLS
/// with AUTH, say what happened, and nothing anywhere holds a secret.
async fn notifications_reach_a_real_smtp_server_without_secrets(db: &TestDb) {
    let logs = Captured::default();
    let _guard = logs.install();
    let server = SmtpServer::start().await.unwrap();
    // The control plane's own wiring does the work: the API queues, the
    // server's background sender sends.
    let files = tempfile::tempdir().unwrap();
    let config = NotifyConfig {
        poll_interval_seconds: 1,
        ..config_for(&server, files.path())
    };
    let t = ready(
        db,
        Options {
            notify: config.clone(),
            ..Options::default()
        },
    )
    .await;
    let store = t.cp.store.clone();
    t.relay.set_mode(Mode::Answer(ReasonCode::Ok));
    let admin = t.admin();
    let password = format!("Notify-Pw-{}!", uuid::Uuid::new_v4().simple());

    // An administrator's reset of an end user.
    let reset_id = admin.reset("alice@contoso.test", &password).await.unwrap();
    let reset = store
        .get_operation(TENANT, &reset_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reset.state, OperationState::Succeeded);

    // The help desk unlocks bob's account through the portal.
    let helpdesk_token = t
        .token(
            "helpdesk@contoso.test",
            Role::PasswordAdmin,
            ClientApp::Portal,
        )
        .await;
    let unlock_id = t
        .client(&helpdesk_token)
        .passwords()
        .unlock_account(writeback_proto::v1::UnlockAccountRequest {
            user: Some(crate::support::upn_ref("bob@contoso.test")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .operation_id;
    let unlock = store
        .get_operation(TENANT, &unlock_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unlock.state, OperationState::Succeeded);

    // Nothing for a user given by objectGUID, a failed operation, or when
    // notifications are off.
    let by_guid = writeback_control_plane::store::OperationRow {
        target: "guid:6f0c1f3e-9c1b-4d4e-9a51-0d5b8f7c2a10".into(),
        ..reset.clone()
    };
    notify::operation_finished(&store, &config, &by_guid).await;
    let failed = writeback_control_plane::store::OperationRow {
        state: OperationState::Failed,
        ..reset.clone()
    };
    notify::operation_finished(&store, &config, &failed).await;
    notify::operation_finished(&store, &NotifyConfig::default(), &reset).await;

    // An administrator tries to reset another administrator: refused.
    t.token(
        "admin2@contoso.test",
        Role::PasswordAdmin,
        ClientApp::Portal,
    )
    .await;
    assert_eq!(
        admin.reset("admin2@contoso.test", &password).await,
        Err(ReasonCode::UnsupportedOperation)
    );
    let mails = server.wait_for_messages(4, WAIT).await.unwrap();
    assert_eq!(mails.len(), 4, "server log:\n{}", server.log());
    assert_eq!(outbox(&store).await.len(), 4, "nothing else was queued");
    for m in &mails {
        assert!(m.tls, "sent without STARTTLS: {m:?}");
        assert_eq!(m.auth_login.as_deref(), Some(server.username()));
        assert_eq!(m.mail_from, "writeback@contoso.test");
        assert!(m.from.contains("writeback@contoso.test"), "{}", m.from);
    }

    let alice = mail_to(&mails, "alice@contoso.test");
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].subject, "Your password was reset");
    assert!(
        alice[0]
            .body
            .contains("The password of your account alice@contoso.test was reset at "),
        "{}",
        alice[0].body
    );
    assert!(
        alice[0]
            .body
            .contains("by an administrator from the portal."),
        "{}",
        alice[0].body
    );
    assert!(
        alice[0]
            .body
            .contains("If this wasn't you, contact your help desk")
    );
    assert!(alice[0].body.contains(&reset_id), "{}", alice[0].body);

    let bob = mail_to(&mails, "bob@contoso.test");
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].subject, "Your account was unlocked");
    assert!(
        bob[0]
            .body
            .contains("Your account bob@contoso.test was unlocked at "),
        "{}",
        bob[0].body
    );
    assert!(
        bob[0].body.contains("by an administrator"),
        "{}",
        bob[0].body
    );

    for rcpt in ["secops@contoso.test", "ciso@contoso.test"] {
        let alert = mail_to(&mails, rcpt);
        assert_eq!(alert.len(), 1, "{rcpt}");
        assert_eq!(
            alert[0].subject,
            "Refused: admin@contoso.test tried to reset the password of admin2@contoso.test"
        );
        assert!(
            alert[0].body.contains(
                "admin@contoso.test tried to reset the password of the administrator \
                 admin2@contoso.test from the portal at "
            ),
            "{}",
            alert[0].body
        );
        assert!(
            alert[0].body.contains("it was refused"),
            "{}",
            alert[0].body
        );
    }

    // The server holds a mail before its sender records it as sent: wait
    // for the records too.
    let deadline = tokio::time::Instant::now() + WAIT;
    let rows = loop {
        let rows = outbox(&store).await;
        if rows.iter().all(|r| r.state == NotificationState::Sent)
            || tokio::time::Instant::now() >= deadline
        {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for row in &rows {
        assert_eq!(row.state, NotificationState::Sent, "{row:?}");
        assert_eq!(row.attempts, 1);
        assert!(row.sent_at_ms.is_some());
        assert!(row.last_error.is_none());
        assert!(
            mails.iter().any(|m| m.message_id.contains(&row.id)),
            "no mail with the Message-ID of {row:?}"
        );
    }

    // No secret anywhere: the reset's password, the SMTP password, the
    // administrator's bearer token.
    let log_text = logs.text();
    assert!(log_text.contains("notification sent"), "{log_text}");
    for secret in [password.as_str(), server.password(), t.admin_token.as_str()] {
        for m in &mails {
            assert!(!m.raw.contains(secret) && !m.body.contains(secret), "{m:?}");
        }
        for row in &rows {
            assert!(
                !format!("{row:?}").contains(secret),
                "a secret in the outbox: {row:?}"
            );
        }
        assert!(!log_text.contains(secret), "a secret in the log");
    }
    // Nor encoded (AUTH PLAIN is base64 of the credentials).
    let auth_plain = base64_of(&format!("\0{}\0{}", server.username(), server.password()));
    assert!(!log_text.contains(&auth_plain));
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Records a succeeded reset of `upn` by `ADMIN` directly in the store.
async fn finished_reset(store: &Store, upn: &str) -> writeback_control_plane::store::OperationRow {
    let id = uuid::Uuid::new_v4().to_string();
    let now = store.now_ms();
    store
        .insert_operation(&NewOperation {
            id: id.clone(),
            tenant: TENANT.into(),
            kind: "reset".into(),
            target: format!("upn:{upn}"),
            domain: "contoso.test".into(),
            principal: ADMIN.into(),
            client_app: ClientApp::Graph,
            created_at_ms: now,
            deadline_at_ms: now + 30_000,
            trace_id: String::new(),
            rule: String::new(),
        })
        .await
        .unwrap();
    store
        .finish_operation(
            TENANT,
            &id,
            &Finish {
                state: OperationState::Succeeded,
                reason_code: ReasonCode::Ok,
                message: "done".into(),
                agent_id: None,
                relay_id: None,
                finished_at_ms: now,
                agent_duration_ms: None,
                hops: Default::default(),
            },
        )
        .await
        .unwrap();
    store.get_operation(TENANT, &id).await.unwrap().unwrap()
}

/// A port nothing listens on right now.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// With the relay stopped, a mail stays queued with its attempt counted and
/// the error kept, is not retried before its backoff, and is delivered once
/// a server is back on the port; one that keeps failing is given up after
/// `max_attempts`; a wrong SMTP password or an untrusted certificate is a
/// failed attempt too, and never lands in the outbox.
async fn mail_waits_in_the_outbox_while_the_relay_is_down(db: &TestDb) {
    let logs = Captured::default();
    let _guard = logs.install();
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let store = db.store_with_tenants().await.with_clock(clock.clone());

    let server = SmtpServer::start().await.unwrap();
    let config = config_for(&server, dir.path());
    let again = server.options();
    drop(server);
    let sender = Sender::new(store.clone(), config.clone()).unwrap();

    let op = finished_reset(&store, "carol@contoso.test").await;
    notify::operation_finished(&store, &config, &op).await;
    let queued_at = store.now_ms();
    let pass = sender.send_due().await.unwrap();
    assert_eq!(
        pass,
        Pass {
            retried: 1,
            ..Pass::default()
        }
    );
    let row = outbox(&store).await.remove(0);
    assert_eq!(row.state, NotificationState::Queued);
    assert_eq!(row.attempts, 1);
    let error = row.last_error.clone().unwrap();
    assert!(!error.is_empty());
    assert!(row.next_attempt_at_ms >= queued_at + 30_000, "{row:?}");
    assert!(row.next_attempt_at_ms <= store.now_ms() + 30_000, "{row:?}");
    // Not due again before the backoff.
    assert_eq!(sender.send_due().await.unwrap(), Pass::default());

    // A server comes back on the same port; the retry delivers.
    let server = SmtpServer::start_with(again).await.unwrap();
    assert_eq!(server.port(), config.smtp_port);
    clock.advance(Duration::from_secs(31));
    assert_eq!(sender.send_due().await.unwrap().sent, 1);
    let mails = server.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(mails[0].rcpt_tos, ["carol@contoso.test"]);
    assert!(
        mails[0]
            .body
            .contains("by an administrator from the Graph API")
    );
    let row = store
        .get_notification(TENANT, &row.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, NotificationState::Sent);
    assert_eq!(row.attempts, 2);
    assert!(row.sent_at_ms.is_some());

    // A wrong AUTH password and an untrusted certificate are failed attempts
    // (the wrong password is in no error, row or log line).
    let wrong = dir.path().join("wrong-password");
    let wrong_password = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&wrong, &wrong_password).unwrap();
    let cases = [
        (
            "wrong password",
            NotifyConfig {
                password_file: Some(wrong),
                ..config.clone()
            },
        ),
        (
            "untrusted certificate",
            NotifyConfig {
                ca_file: None,
                ..config.clone()
            },
        ),
    ];
    for (what, bad) in cases {
        let op = finished_reset(&store, "dave@contoso.test").await;
        notify::operation_finished(&store, &bad, &op).await;
        let pass = Sender::new(store.clone(), bad)
            .unwrap()
            .send_due()
            .await
            .unwrap();
        assert_eq!(pass.retried, 1, "{what}: {pass:?}");
        let row = outbox(&store)
            .await
            .into_iter()
            .find(|r| r.state == NotificationState::Queued)
            .unwrap();
        let error = row.last_error.clone().unwrap();
        assert!(!error.contains(&wrong_password), "{what}: {error}");
        eprintln!("{what}: {error}");
        // Out of the way of the next case.
        clock.advance(Duration::from_secs(3600));
        let pass = sender.send_due().await.unwrap();
        assert_eq!(pass.sent, 1, "{what}: the good config delivers it");
    }
    assert_eq!(server.wait_for_messages(3, WAIT).await.unwrap().len(), 3);
    assert!(!logs.text().contains(&wrong_password));

    // Keeps failing: given up after max_attempts, the error kept.
    let unreachable = NotifyConfig {
        smtp_port: closed_port(),
        max_attempts: 2,
        ..config.clone()
    };
    let failing = Sender::new(store.clone(), unreachable.clone()).unwrap();
    let op = finished_reset(&store, "erin@contoso.test").await;
    notify::operation_finished(&store, &unreachable, &op).await;
    assert_eq!(failing.send_due().await.unwrap().retried, 1);
    clock.advance(Duration::from_secs(61));
    assert_eq!(failing.send_due().await.unwrap().given_up, 1);
    let row = outbox(&store)
        .await
        .into_iter()
        .find(|r| r.recipient == "erin@contoso.test")
        .unwrap();
    assert_eq!(row.state, NotificationState::Failed);
    assert_eq!(row.attempts, 2);
    assert!(row.last_error.is_some());
    clock.advance(Duration::from_secs(7200));
    assert_eq!(failing.send_due().await.unwrap(), Pass::default());
    assert_eq!(sender.send_due().await.unwrap(), Pass::default());
}

/// Two senders on one database (two pools, as two replicas have) share the
/// due rows: every row is sent once, none twice.
async fn two_senders_never_send_one_row_twice(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let store = db.store_with_tenants().await;
    let other = db.store().await;
    let server = SmtpServer::start().await.unwrap();
    let config = NotifyConfig {
        admin_recipients: (0..12).map(|i| format!("admin{i}@contoso.test")).collect(),
        ..config_for(&server, dir.path())
    };
    notify::admin_reset_attempted(
        &store,
        &config,
        TENANT,
        ADMIN,
        "admin2@contoso.test",
        ClientApp::Graph,
    )
    .await;
    let a = Sender::new(store.clone(), config.clone()).unwrap();
    let b = Sender::new(other, config.clone()).unwrap();
    let (pa, pb) = tokio::join!(a.send_due(), b.send_due());
    let (pa, pb) = (pa.unwrap(), pb.unwrap());
    assert_eq!(pa.sent + pb.sent, 12, "{pa:?} {pb:?}");
    // The server stores a message before it answers 250, so every mail sent
    // is there once both passes returned.
    let mails = server.messages().unwrap();
    assert_eq!(mails.len(), 12, "{} mails", mails.len());
    let mut ids: Vec<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    let rows = outbox(&store).await;
    assert!(
        rows.iter()
            .all(|r| r.state == NotificationState::Sent && r.attempts == 1),
        "{rows:?}"
    );
}
