//! E-mail notifications, queued in the store's outbox and sent in the
//! background, so that mail never delays or fails a writeback.
//!
//! What is sent, when `[notify] enabled = true`:
//!
//! - after a password **reset** or an account **unlock** succeeded
//!   ([`operation_finished`]): a mail to the user at their UPN (writeback
//!   addresses users by UPN, so the UPN must be a deliverable address; a user
//!   given by objectGUID gets no mail), telling what happened, when, by whom
//!   (the user through self-service, or an administrator) and from which
//!   origin;
//! - when an administrator tried to reset another administrator's password,
//!   which the policy refuses ([`admin_reset_attempted`]): a mail to each of
//!   `admin_recipients`.
//!
//! Queuing is one insert; a failure to queue is logged and never reaches the
//! caller. [`Sender`] (spawned by the server when notifications are on)
//! claims due rows, sends them through the SMTP relay (`notify/smtp.rs`: STARTTLS
//! required unless a loopback relay is configured with `tls = "none"`,
//! optional AUTH) and marks them sent, or schedules the next attempt with
//! exponential backoff (`retry_initial_seconds` doubling up to
//! `retry_max_seconds`) until `max_attempts`, after which the row is kept as
//! `failed` with its last error. Replicas sharing a database never send one
//! row twice while its claim holds (see `store::notifications`); a sender
//! that dies between the relay's acceptance and the record of it leaves the
//! row to be sent again once its lease runs out (at least once, not exactly
//! once), with the same `Message-ID`.
//!
//! No password and no token is ever given to this module, so none can end up
//! in a mail, the outbox or a log line.

mod smtp;

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::format_description;

use crate::config::NotifyConfig;
use crate::store::{ClientApp, NewNotification, OperationRow, OperationState, Store, StoreError};

/// `kind` of the mail after a reset.
pub const KIND_RESET: &str = "reset";
/// `kind` of the mail after an unlock.
pub const KIND_UNLOCK: &str = "unlock";
/// `kind` of the administrators' alert.
pub const KIND_ADMIN_RESET_ATTEMPT: &str = "admin_reset_attempt";

/// Rows claimed per pass of the sender.
const BATCH: usize = 50;
/// How often sent and given-up mail older than `retention_days` is deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Why mail could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The `[notify]` configuration is unusable (a file cannot be read, an
    /// address does not parse…).
    #[error("{0}")]
    Config(String),
    /// The SMTP relay could not be reached or refused the mail.
    #[error("{0}")]
    Smtp(String),
    /// The outbox could not be read or written.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// Queues the user's mail after an operation finished, when notifications
/// are on and `op` is a **succeeded reset or unlock** of a user given by
/// **UPN**; does nothing otherwise. Call it with the finished record (state,
/// `finished_at_ms`). Never fails: a problem is logged.
pub async fn operation_finished(store: &Store, config: &NotifyConfig, op: &OperationRow) {
    if !config.enabled {
        return;
    }
    let Some(n) = user_message(config, op) else {
        return;
    };
    enqueue(store, n, &op.id).await;
}

/// Queues the administrators' alert that `by` tried to reset the password
/// of the administrator `target_upn` from `origin` (and was refused), one
/// mail per `admin_recipients` entry, when notifications are on. Call it
/// when the policy refused a reset whose target is another administrator.
/// Never fails: a problem is logged.
pub async fn admin_reset_attempted(
    store: &Store,
    config: &NotifyConfig,
    tenant: &str,
    by: &str,
    target_upn: &str,
    origin: ClientApp,
) {
    if !config.enabled || config.admin_recipients.is_empty() {
        return;
    }
    let at_ms = store.now_ms();
    for n in admin_messages(config, tenant, by, target_upn, origin, at_ms) {
        enqueue(store, n, "").await;
    }
}

async fn enqueue(store: &Store, n: NewNotification, operation_id: &str) {
    match store.enqueue_notification(&n).await {
        Ok(id) => tracing::info!(tenant = %n.tenant, notification_id = %id, kind = %n.kind,
            operation_id, "notification queued"),
        Err(e) => tracing::warn!(tenant = %n.tenant, kind = %n.kind, operation_id,
            error = %e, "cannot queue a notification; it is not sent"),
    }
}

/// The user's mail for a finished operation, if it gets one.
pub fn user_message(config: &NotifyConfig, op: &OperationRow) -> Option<NewNotification> {
    if op.state != OperationState::Succeeded {
        return None;
    }
    let (kind, subject, what) = match op.kind.as_str() {
        "reset" => (
            KIND_RESET,
            "Your password was reset",
            "The password of your account",
        ),
        "unlock" => (KIND_UNLOCK, "Your account was unlocked", "Your account"),
        _ => return None,
    };
    let Some(upn) = op.target.strip_prefix("upn:") else {
        tracing::debug!(operation_id = %op.id, "no notification: the user was given by objectGUID");
        return None;
    };
    if upn.parse::<lettre::Address>().is_err() {
        tracing::warn!(operation_id = %op.id, "no notification: the UPN is not an e-mail address");
        return None;
    }
    let done = if kind == KIND_RESET {
        "was reset"
    } else {
        "was unlocked"
    };
    let who = if op.principal.eq_ignore_ascii_case(upn) {
        "by you, through self-service,"
    } else {
        "by an administrator"
    };
    let at = when(op.finished_at_ms.unwrap_or(op.created_at_ms));
    let help = if config.help_desk.trim().is_empty() {
        "your help desk".to_owned()
    } else {
        clean(&config.help_desk)
    };
    let body = format!(
        "Hello,\n\
         \n\
         {what} {upn} {done} at {at} {who} from {origin}.\n\
         \n\
         If this wasn't you, contact {help} at once.\n\
         \n\
         -- \n\
         Password writeback (operation {id})\n",
        upn = clean(upn),
        origin = origin_words(op.client_app),
        id = clean(&op.id),
    );
    Some(NewNotification {
        tenant: op.tenant.clone(),
        kind: kind.to_owned(),
        recipient: upn.to_owned(),
        subject: subject.to_owned(),
        body,
    })
}

/// The administrators' alerts, one per recipient.
pub fn admin_messages(
    config: &NotifyConfig,
    tenant: &str,
    by: &str,
    target_upn: &str,
    origin: ClientApp,
    at_ms: i64,
) -> Vec<NewNotification> {
    let (by, target) = (clean(by), clean(target_upn));
    let subject = format!("Refused: {by} tried to reset the password of {target}");
    let body = format!(
        "{by} tried to reset the password of the administrator {target} from {origin} \
         at {at}; it was refused (UNSUPPORTED_OPERATION: an administrator's password \
         cannot be reset by another administrator through writeback).\n\
         \n\
         If this was not expected, review the administrative accounts of tenant {tenant}.\n\
         \n\
         -- \n\
         Password writeback\n",
        origin = origin_words(origin),
        at = when(at_ms),
        tenant = clean(tenant),
    );
    config
        .admin_recipients
        .iter()
        .map(|r| NewNotification {
            tenant: tenant.to_owned(),
            kind: KIND_ADMIN_RESET_ATTEMPT.to_owned(),
            recipient: r.clone(),
            subject: subject.clone(),
            body: body.clone(),
        })
        .collect()
}

/// The origin as a reader knows it.
fn origin_words(app: ClientApp) -> &'static str {
    match app {
        ClientApp::Portal => "the portal",
        ClientApp::Graph => "the Graph API",
        ClientApp::Powershell => "PowerShell",
        ClientApp::M365AdminCenter => "the Microsoft 365 admin center",
    }
}

/// `2025-06-01 12:00:00 UTC`.
fn when(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
    ))
    .unwrap_or_default()
}

/// A value put into a mail with every control character (line breaks
/// included) replaced, so it cannot add header lines or fake paragraphs.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// What one pass of the [`Sender`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Accepted by the relay.
    pub sent: usize,
    /// Failed, queued again.
    pub retried: usize,
    /// Failed for the last allowed time.
    pub given_up: usize,
    /// Claimed by another sender first.
    pub skipped: usize,
}

/// The background sender: every `poll_interval_seconds` it claims the due
/// rows of the outbox, sends them and records the outcome.
#[derive(Debug, Clone)]
pub struct Sender {
    store: Store,
    config: NotifyConfig,
}

impl Sender {
    /// A sender over `store` with `config` (which must be enabled and valid;
    /// its CA file is read once here to check it).
    pub fn new(store: Store, config: NotifyConfig) -> Result<Sender, NotifyError> {
        if !config.enabled {
            return Err(NotifyError::Config("notifications are not enabled".into()));
        }
        config.validate().map_err(NotifyError::Config)?;
        smtp::tls_parameters(&config)?;
        Ok(Sender { store, config })
    }

    /// Sends what is due until the task is dropped; purges old rows hourly.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(
            self.config.poll_interval_seconds.max(1),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge: Option<tokio::time::Instant> = None;
        tracing::info!(relay = %self.config.smtp_host, port = self.config.smtp_port,
            tls = ?self.config.tls, "notification sender started");
        loop {
            tick.tick().await;
            if let Err(e) = self.send_due().await {
                tracing::warn!(error = %e, "cannot send notifications");
            }
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_INTERVAL) {
                last_purge = Some(tokio::time::Instant::now());
                self.purge().await;
            }
        }
    }

    /// One pass: claims and sends the rows due now (up to 50).
    pub async fn send_due(&self) -> Result<Pass, NotifyError> {
        let mut pass = Pass::default();
        let due = self
            .store
            .due_notifications(self.store.now_ms(), BATCH)
            .await?;
        if due.is_empty() {
            return Ok(pass);
        }
        let mailer = smtp::Mailer::new(&self.config)?;
        for row in due {
            let lease_until = self.store.now_ms().saturating_add(self.lease_ms());
            let Some(claimed) = self.store.claim_notification(&row, lease_until).await? else {
                pass.skipped += 1;
                continue;
            };
            match mailer.send(&claimed).await {
                Ok(()) => {
                    if !self
                        .store
                        .notification_sent(&claimed, self.store.now_ms())
                        .await?
                    {
                        tracing::warn!(tenant = %claimed.tenant, notification_id = %claimed.id,
                            "notification sent after its claim ran out");
                    }
                    tracing::info!(tenant = %claimed.tenant, notification_id = %claimed.id,
                        kind = %claimed.kind, attempts = claimed.attempts, "notification sent");
                    pass.sent += 1;
                }
                Err(e) => {
                    let error = e.to_string();
                    let last = claimed.attempts >= i64::from(self.config.max_attempts);
                    let retry_at = (!last).then(|| {
                        self.store
                            .now_ms()
                            .saturating_add(self.delay_ms(claimed.attempts))
                    });
                    self.store
                        .notification_failed(&claimed, &error, retry_at)
                        .await?;
                    if last {
                        tracing::warn!(tenant = %claimed.tenant, notification_id = %claimed.id,
                            kind = %claimed.kind, attempts = claimed.attempts, error = %error,
                            "notification given up");
                        pass.given_up += 1;
                    } else {
                        tracing::info!(tenant = %claimed.tenant, notification_id = %claimed.id,
                            kind = %claimed.kind, attempts = claimed.attempts, error = %error,
                            retry_at_ms = retry_at, "notification not sent; will retry");
                        pass.retried += 1;
                    }
                }
            }
        }
        Ok(pass)
    }

    /// How long a claim holds: longer than one send can take.
    fn lease_ms(&self) -> i64 {
        let send = smtp::send_timeout(&self.config);
        i64::try_from(send.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(60_000)
    }

    /// The wait after the `attempts`-th failure: `retry_initial_seconds`
    /// doubled per earlier failure, at most `retry_max_seconds`.
    fn delay_ms(&self, attempts: i64) -> i64 {
        retry_delay_ms(&self.config, attempts)
    }

    async fn purge(&self) {
        if self.config.retention_days == 0 {
            return;
        }
        let keep_ms = i64::try_from(self.config.retention_days)
            .unwrap_or(i64::MAX)
            .saturating_mul(86_400_000);
        match self
            .store
            .purge_notifications(self.store.now_ms().saturating_sub(keep_ms))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "old notifications deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete old notifications"),
        }
    }
}

/// See [`Sender`]: `retry_initial_seconds · 2^(attempts−1)`, capped.
fn retry_delay_ms(config: &NotifyConfig, attempts: i64) -> i64 {
    let initial = i64::try_from(config.retry_initial_seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let max = i64::try_from(config.retry_max_seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 62)).unwrap_or(62);
    initial
        .saturating_mul(2_i64.saturating_pow(doublings))
        .min(max)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn config() -> NotifyConfig {
        NotifyConfig {
            enabled: true,
            smtp_host: "smtp.contoso.test".into(),
            from: "writeback@contoso.test".into(),
            admin_recipients: vec!["secops@contoso.test".into(), "ciso@contoso.test".into()],
            ..NotifyConfig::default()
        }
    }

    fn op(kind: &str, target: &str, principal: &str, state: OperationState) -> OperationRow {
        OperationRow {
            id: "0b6f2c1e-0000-4000-8000-000000000001".into(),
            tenant: "t1".into(),
            kind: kind.into(),
            target: target.into(),
            domain: "contoso.test".into(),
            principal: principal.into(),
            client_app: ClientApp::Portal,
            state,
            reason_code: Some("OK".into()),
            message: Some("done".into()),
            agent_id: None,
            relay_id: None,
            created_at_ms: 1_748_779_200_000,
            deadline_at_ms: 1_748_779_230_000,
            finished_at_ms: Some(1_748_779_201_000),
            agent_duration_ms: None,
            trace_id: String::new(),
            rule: String::new(),
            hops: Default::default(),
            reconcile_after_ms: None,
        }
    }

    #[test]
    fn a_self_service_reset_tells_the_user_at_their_upn() {
        let n = user_message(
            &config(),
            &op(
                "reset",
                "upn:alice@contoso.test",
                "Alice@contoso.test",
                OperationState::Succeeded,
            ),
        )
        .unwrap();
        assert_eq!(n.recipient, "alice@contoso.test");
        assert_eq!(n.kind, "reset");
        assert_eq!(n.subject, "Your password was reset");
        assert!(n.body.contains(
            "The password of your account alice@contoso.test was reset at 2025-06-01 12:00:01 UTC \
             by you, through self-service, from the portal."
        ), "{}", n.body);
        assert!(n.body.contains("contact your help desk"), "{}", n.body);
    }

    #[test]
    fn an_unlock_by_an_administrator_says_so() {
        let mut o = op(
            "unlock",
            "upn:bob@contoso.test",
            "admin@contoso.test",
            OperationState::Succeeded,
        );
        o.client_app = ClientApp::Graph;
        let c = NotifyConfig {
            help_desk: "the help desk at +1 555 0100".into(),
            ..config()
        };
        let n = user_message(&c, &o).unwrap();
        assert_eq!(n.subject, "Your account was unlocked");
        assert!(n.body.contains("was unlocked at"), "{}", n.body);
        assert!(
            n.body.contains("by an administrator from the Graph API"),
            "{}",
            n.body
        );
        assert!(
            n.body.contains("the help desk at +1 555 0100"),
            "{}",
            n.body
        );
        assert!(!n.body.contains("admin@contoso.test"), "{}", n.body);
    }

    #[test]
    fn only_succeeded_resets_and_unlocks_of_upns_are_told() {
        let c = config();
        let ok = OperationState::Succeeded;
        assert!(
            user_message(
                &c,
                &op("reset", "upn:a@contoso.test", "x", OperationState::Failed)
            )
            .is_none()
        );
        assert!(
            user_message(
                &c,
                &op("reset", "upn:a@contoso.test", "x", OperationState::Pending)
            )
            .is_none()
        );
        assert!(user_message(&c, &op("change", "upn:a@contoso.test", "x", ok)).is_none());
        assert!(user_message(&c, &op("forced_change", "upn:a@contoso.test", "x", ok)).is_none());
        assert!(
            user_message(
                &c,
                &op(
                    "reset",
                    "guid:2f1c3d4e-0000-4000-8000-000000000000",
                    "x",
                    ok
                )
            )
            .is_none()
        );
        assert!(user_message(&c, &op("reset", "upn:not an address", "x", ok)).is_none());
    }

    #[test]
    fn the_admin_alert_goes_to_every_admin_recipient() {
        let list = admin_messages(
            &config(),
            "t1",
            "admin@contoso.test",
            "admin2@contoso.test",
            ClientApp::Powershell,
            1_748_779_200_000,
        );
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].recipient, "secops@contoso.test");
        assert_eq!(list[1].recipient, "ciso@contoso.test");
        assert_eq!(
            list[0].subject,
            "Refused: admin@contoso.test tried to reset the password of admin2@contoso.test"
        );
        assert!(
            list[0].body.starts_with(
                "admin@contoso.test tried to reset the password of the administrator \
             admin2@contoso.test from PowerShell at 2025-06-01 12:00:00 UTC; it was refused"
            ),
            "{}",
            list[0].body
        );
    }

    #[test]
    fn values_cannot_add_lines() {
        let list = admin_messages(
            &config(),
            "t1",
            "evil\r\nBcc: x@example.test",
            "a@contoso.test",
            ClientApp::Portal,
            0,
        );
        assert!(!list[0].subject.contains('\n') && !list[0].subject.contains('\r'));
        assert!(list[0].subject.contains("evil??Bcc"));
    }

    #[test]
    fn retries_back_off_exponentially_to_the_cap() {
        let c = config();
        assert_eq!(retry_delay_ms(&c, 1), 30_000);
        assert_eq!(retry_delay_ms(&c, 2), 60_000);
        assert_eq!(retry_delay_ms(&c, 5), 480_000);
        assert_eq!(retry_delay_ms(&c, 8), 3_600_000);
        assert_eq!(retry_delay_ms(&c, 1000), 3_600_000);
    }
}
