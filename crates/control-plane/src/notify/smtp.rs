//! The SMTP side of notifications: lettre over tokio and rustls (ring).
//!
//! `tls = "starttls"` (the default) makes STARTTLS required: lettre refuses
//! to go on if the relay does not offer it, and the relay's certificate must
//! verify for `smtp_host` against the system's roots plus `ca_file`.
//! `tls = "none"` (accepted by the config only for a loopback relay) talks
//! plain SMTP. With `username`, AUTH PLAIN or LOGIN is used, with the
//! password read from `password_file` each time a batch is sent; it is held
//! in a `SecretString` and handed only to lettre's credentials (whose Debug
//! prints nothing). lettre's `tracing` feature stays off: it would log the
//! SMTP dialogue, AUTH included.

use std::path::Path;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::NotifyError;
use crate::config::{NotifyConfig, SmtpTls};
use crate::store::NotificationRow;

/// SMTP round trips of one mail (greeting, EHLO, STARTTLS, EHLO, AUTH, MAIL,
/// RCPT, DATA), each bounded by `timeout_seconds`.
const ROUND_TRIPS: u32 = 8;

/// The longest one mail may take to send.
pub(super) fn send_timeout(config: &NotifyConfig) -> Duration {
    Duration::from_secs(config.timeout_seconds.max(1)) * ROUND_TRIPS
}

/// The TLS parameters for STARTTLS (`None` for `tls = "none"`): the system's
/// roots plus those in `ca_file`, checked against `smtp_host`.
pub(super) fn tls_parameters(config: &NotifyConfig) -> Result<Option<TlsParameters>, NotifyError> {
    if config.tls == SmtpTls::None {
        return Ok(None);
    }
    let mut builder = TlsParameters::builder(config.smtp_host.trim().to_owned());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            NotifyError::Config(format!(
                "cannot read notify.ca_file {}: {e}",
                path.display()
            ))
        })?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| NotifyError::Config(format!("notify.ca_file {}: {e}", path.display())))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map(Some)
        .map_err(|e| NotifyError::Config(format!("notify TLS: {}", error_text(&e))))
}

fn read_password(path: &Path) -> Result<SecretString, NotifyError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        NotifyError::Config(format!(
            "cannot read notify.password_file {}: {e}",
            path.display()
        ))
    })?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(NotifyError::Config(format!(
            "notify.password_file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(password.to_owned()))
}

/// A connection recipe to the relay (lettre connects per mail).
pub(super) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    total: Duration,
}

impl Mailer {
    /// Reads the CA and password files and prepares the transport.
    pub(super) fn new(config: &NotifyConfig) -> Result<Mailer, NotifyError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| NotifyError::Config(format!("notify.from: {e}")))?;
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.smtp_host.trim())
                .port(config.smtp_port)
                .timeout(Some(Duration::from_secs(config.timeout_seconds.max(1))));
        builder = match tls_parameters(config)? {
            Some(params) => builder.tls(Tls::Required(params)),
            None => builder.tls(Tls::None),
        };
        if let (Some(user), Some(file)) = (&config.username, &config.password_file) {
            let password = read_password(file)?;
            builder = builder
                .credentials(Credentials::new(
                    user.clone(),
                    password.expose_secret().to_owned(),
                ))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            total: send_timeout(config),
        })
    }

    /// Sends one claimed row as a plain-text mail whose `Message-ID` is the
    /// same on every attempt.
    pub(super) async fn send(&self, row: &NotificationRow) -> Result<(), NotifyError> {
        let to: Mailbox = row
            .recipient
            .parse()
            .map_err(|e| NotifyError::Smtp(format!("the recipient is not an address: {e}")))?;
        let message = Message::builder()
            .message_id(Some(format!("<{}@{}>", row.id, self.from.email.domain())))
            .from(self.from.clone())
            .to(to)
            .subject(row.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(row.body.clone())
            .map_err(|e| NotifyError::Smtp(format!("cannot build the message: {e}")))?;
        match tokio::time::timeout(self.total, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(NotifyError::Smtp(error_text(&e))),
            Err(_) => Err(NotifyError::Smtp(format!(
                "sending took longer than {:?}",
                self.total
            ))),
        }
    }
}

/// An error and its sources on one line.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = s.source();
    }
    text
}
