//! A real SMTP server for tests: Python's `aiosmtpd` (from PyPI, in the tests'
//! virtual environment that `scripts/python-env.sh` builds) as a child process.
//!
//! [`SmtpServer::start`] gives a test its own server on `127.0.0.1:<port>` (the
//! server binds port 0 and reports the port, or binds the port asked for, e.g.
//! to come back on the port of a server a test stopped) that:
//!
//! - requires **STARTTLS** before anything else, with a certificate for
//!   `localhost` and `127.0.0.1` from a [`TestCa`] (clients trust
//!   [`SmtpServer::ca_pem`]);
//! - requires **AUTH** (PLAIN or LOGIN, over TLS only) as
//!   [`SmtpServer::username`] / [`SmtpServer::password`];
//! - stores every message it accepts as a JSON file in its temporary
//!   directory: envelope sender and recipients, whether the session was TLS,
//!   the AUTH login, the raw message and its decoded `From`, `To`, `Subject`,
//!   `Message-ID` and plain-text body ([`SmtpServer::messages`],
//!   [`SmtpServer::wait_for_messages`]).
//!
//! Readiness is polled with a deadline: the port file the server writes once
//! it listens, then its `220` greeting. The server runs in its own process
//! group with its stdin on a pipe: it exits when the pipe closes (`Drop`, or a
//! test process that died), and `Drop` SIGKILLs the group if it has not within
//! 5 s. Set `WRITEBACK_TESTKIT_KEEP=1` to keep the directory (messages, log).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{debug, info};

use crate::TestkitError;
use crate::pki::TestCa;
use crate::samba::{log_tail, random_alnum, spawn_error, write_file};

const SCRIPT: &str = r#"
import asyncio, email, email.policy, json, os, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

root, host, port, cert, key = sys.argv[1:6]
user = os.environ["SMTP_TEST_USER"].encode()
password = os.environ["SMTP_TEST_PASSWORD"].encode()
messages = os.path.join(root, "messages")
os.makedirs(messages, exist_ok=True)
count = 0

class Handler:
    async def handle_DATA(self, server, session, envelope):
        global count
        count += 1
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "tls": session.ssl is not None,
            "auth_login": session.auth_data.login.decode()
                if isinstance(session.auth_data, LoginPassword) else None,
            "from": str(msg["from"] or ""),
            "to": str(msg["to"] or ""),
            "subject": str(msg["subject"] or ""),
            "message_id": str(msg["message-id"] or ""),
            "body": body.get_content() if body is not None else "",
            "raw": raw.decode("utf-8", "replace"),
        }
        name = "%06d" % count
        tmp = os.path.join(messages, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(messages, name + ".json"))
        return "250 OK"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login == user and auth_data.password == password)
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Handler(), hostname="localhost", tls_context=ctx,
                     require_starttls=True, auth_required=True,
                     auth_require_tls=True, authenticator=authenticator),
        host=host, port=int(port))
    bound = server.sockets[0].getsockname()[1]
    tmp = os.path.join(root, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(bound))
    os.rename(tmp, os.path.join(root, "port"))
    print("listening on %s:%d" % (host, bound), flush=True)
    # The harness holds our stdin: EOF means stop.
    await loop.run_in_executor(None, sys.stdin.read)
    os._exit(0)

asyncio.run(main())
"#;

const LOG: &str = "smtp.log";
const READY_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The Python of the tests' virtual environment (`$WRITEBACK_VENV`, default
/// `~/.cache/writeback/venv`, built by `scripts/python-env.sh`).
pub fn venv_python() -> Result<PathBuf, TestkitError> {
    let venv = match std::env::var_os("WRITEBACK_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| TestkitError::InvalidInput("HOME is not set".into()))?,
        )
        .join(".cache/writeback/venv"),
    };
    let python = venv.join("bin/python");
    if !python.exists() {
        return Err(TestkitError::InvalidInput(format!(
            "{} is missing: run scripts/install-deps.sh (scripts/python-env.sh)",
            python.display()
        )));
    }
    Ok(python)
}

/// How to start an [`SmtpServer`]; [`SmtpServer::options`] gives those of a
/// running one, to start another like it (same port, CA and credentials).
#[derive(Clone)]
pub struct SmtpOptions {
    /// Port on 127.0.0.1; 0 lets the kernel pick a free one.
    pub port: u16,
    /// The AUTH user name.
    pub username: String,
    /// The AUTH password.
    pub password: String,
    /// Issues the server's certificate.
    pub ca: Arc<TestCa>,
}

impl std::fmt::Debug for SmtpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpOptions")
            .field("port", &self.port)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl SmtpOptions {
    /// A free port, a fresh CA, user `writeback-test` with a random password.
    pub fn new() -> Result<SmtpOptions, TestkitError> {
        Ok(SmtpOptions {
            port: 0,
            username: "writeback-test".into(),
            password: format!("smtp-{}", random_alnum(24)?),
            ca: Arc::new(TestCa::new("writeback test CA for smtp")?),
        })
    }
}

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// Envelope recipients (`RCPT TO`).
    pub rcpt_tos: Vec<String>,
    /// Whether the session had switched to TLS (STARTTLS).
    pub tls: bool,
    /// The AUTH login of the session.
    pub auth_login: Option<String>,
    /// Decoded `From` header.
    pub from: String,
    /// Decoded `To` header.
    pub to: String,
    /// Decoded `Subject` header.
    pub subject: String,
    /// `Message-ID` header.
    pub message_id: String,
    /// The decoded text/plain body.
    pub body: String,
    /// The message as received (headers and encoded body).
    pub raw: String,
}

impl ReceivedMail {
    fn from_json(v: &Value) -> Result<ReceivedMail, TestkitError> {
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(ReceivedMail {
            mail_from: text("mail_from"),
            rcpt_tos: v
                .get("rcpt_tos")
                .and_then(Value::as_array)
                .ok_or_else(|| TestkitError::InvalidInput("stored mail without rcpt_tos".into()))?
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
            tls: v.get("tls").and_then(Value::as_bool).unwrap_or(false),
            auth_login: v
                .get("auth_login")
                .and_then(Value::as_str)
                .map(str::to_owned),
            from: text("from"),
            to: text("to"),
            subject: text("subject"),
            message_id: text("message_id"),
            body: text("body"),
            raw: text("raw"),
        })
    }
}

/// One running aiosmtpd (see the module docs).
pub struct SmtpServer {
    options: SmtpOptions,
    port: u16,
    dir_path: PathBuf,
    // Drop stops the child first; the directory goes after.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("port", &self.port)
            .field("dir", &self.dir_path)
            .field("pid", &self.child.as_ref().map(Child::id))
            .finish_non_exhaustive()
    }
}

impl SmtpServer {
    /// Starts a server with [`SmtpOptions::new`].
    pub async fn start() -> Result<SmtpServer, TestkitError> {
        SmtpServer::start_with(SmtpOptions::new()?).await
    }

    /// Starts a server with `options`; returns once it greets clients.
    pub async fn start_with(options: SmtpOptions) -> Result<SmtpServer, TestkitError> {
        let python = venv_python()?;
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("writeback-testkit-smtp-")
            .tempdir()
            .map_err(|e| TestkitError::io("create smtp server directory", e))?;
        let dir_path = dir.path().to_path_buf();
        let (cert_pem, key_pem) = options
            .ca
            .issue_server(&["localhost".to_owned()], &[Ipv4Addr::LOCALHOST.into()])?;
        write_file(&dir_path.join("cert.pem"), cert_pem.as_bytes(), 0o644)?;
        write_file(&dir_path.join("key.pem"), key_pem.as_bytes(), 0o600)?;
        write_file(&dir_path.join("server.py"), SCRIPT.as_bytes(), 0o644)?;

        let log_path = dir_path.join(LOG);
        let log = File::create(&log_path)
            .map_err(|e| TestkitError::io(format!("create {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| TestkitError::io("clone log handle", e))?;
        let mut child = std::process::Command::new(&python)
            .arg(dir_path.join("server.py"))
            .arg(&dir_path)
            .arg("127.0.0.1")
            .arg(options.port.to_string())
            .arg(dir_path.join("cert.pem"))
            .arg(dir_path.join("key.pem"))
            .env("SMTP_TEST_USER", &options.username)
            .env("SMTP_TEST_PASSWORD", &options.password)
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(&dir_path)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| spawn_error(&python.display().to_string(), e))?;
        let stdin = child.stdin.take();
        debug!(pid = child.id(), dir = %dir_path.display(), "spawned aiosmtpd");
        let mut server = SmtpServer {
            options,
            port: 0,
            dir_path,
            child: Some(child),
            stdin,
            dir: Some(dir),
        };
        server.port = server.wait_ready().await?;
        info!(
            port = server.port,
            dir = %server.dir_path.display(),
            ready_ms = started.elapsed().as_millis() as u64,
            "smtp server ready"
        );
        Ok(server)
    }

    /// Polls for the port file, then for the `220` greeting.
    async fn wait_ready(&mut self) -> Result<u16, TestkitError> {
        let started = Instant::now();
        let port_file = self.dir_path.join("port");
        let mut last_error = String::from("no port file yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(None) => {}
                    Ok(Some(status)) => {
                        return Err(TestkitError::Command {
                            command: "aiosmtpd (crates/testkit/src/smtp.rs)".into(),
                            status: status.to_string(),
                            stderr: log_tail(&self.dir_path.join(LOG)),
                        });
                    }
                    Err(e) => return Err(TestkitError::io("poll the smtp server", e)),
                }
            }
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                match text.trim().parse::<u16>() {
                    Ok(port) => match greeting(port) {
                        Ok(()) => return Ok(port),
                        Err(e) => last_error = format!("greeting on port {port}: {e}"),
                    },
                    Err(e) => last_error = format!("port file {text:?}: {e}"),
                }
            }
            if started.elapsed() > READY_DEADLINE {
                return Err(TestkitError::Command {
                    command: format!(
                        "aiosmtpd not ready after {:?} ({last_error})",
                        started.elapsed()
                    ),
                    status: "running".into(),
                    stderr: log_tail(&self.dir_path.join(LOG)),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PEM of the CA its certificate comes from.
    pub fn ca_pem(&self) -> String {
        self.options.ca.cert_pem()
    }

    /// The AUTH user name it accepts.
    pub fn username(&self) -> &str {
        &self.options.username
    }

    /// The AUTH password it accepts.
    pub fn password(&self) -> &str {
        &self.options.password
    }

    /// Its options with the port it got: to start another server like it.
    pub fn options(&self) -> SmtpOptions {
        SmtpOptions {
            port: self.port,
            ..self.options.clone()
        }
    }

    /// Its temporary directory (`messages/`, `smtp.log`).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Result<Vec<ReceivedMail>, TestkitError> {
        let dir = self.dir_path.join("messages");
        let mut names: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(TestkitError::io(format!("read {}", dir.display()), e)),
        };
        names.sort();
        names
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| TestkitError::io(format!("read {}", p.display()), e))?;
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    TestkitError::InvalidInput(format!("stored mail {}: {e}", p.display()))
                })?;
                ReceivedMail::from_json(&v)
            })
            .collect()
    }

    /// Polls until at least `n` messages arrived or `deadline` passed; returns
    /// them all.
    pub async fn wait_for_messages(
        &self,
        n: usize,
        deadline: Duration,
    ) -> Result<Vec<ReceivedMail>, TestkitError> {
        let started = Instant::now();
        loop {
            let got = self.messages()?;
            if got.len() >= n {
                return Ok(got);
            }
            if started.elapsed() > deadline {
                return Err(TestkitError::InvalidInput(format!(
                    "{} of {n} messages arrived within {deadline:?}; server log:\n{}",
                    got.len(),
                    log_tail(&self.dir_path.join(LOG))
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Its log (aiosmtpd's own messages and any Python traceback).
    pub fn log(&self) -> String {
        log_tail(&self.dir_path.join(LOG))
    }
}

/// Connects to 127.0.0.1:`port` and reads a `220` greeting.
fn greeting(port: u16) -> std::io::Result<()> {
    let stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    if line.starts_with("220") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("greeting {line:?}")))
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        crate::child::stop(
            "aiosmtpd",
            self.stdin.take(),
            self.child.take(),
            self.dir.take(),
            &self.dir_path,
        );
    }
}
