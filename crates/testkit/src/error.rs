//! The one error type of the testkit.

use std::path::PathBuf;

/// Everything that can go wrong while starting or talking to a test domain controller
/// or the test OpenID provider.
///
/// Messages carry the context a failing test needs (stderr of a tool, the tail of the
/// Samba log) so that a red test explains itself.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A filesystem or process-spawning operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A required program (samba, samba-tool, kinit, ip …) is not installed.
    #[error("`{program}` not found ({source}); run scripts/install-deps.sh as root")]
    MissingTool {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// An external command ran but failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// The caller passed something the harness cannot work with.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// Generating keys or certificates failed.
    #[error("test PKI: {0}")]
    Pki(#[from] rcgen::Error),

    /// Building a rustls configuration failed.
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// The LDAP connection itself failed (connect, TLS handshake, protocol).
    #[error("ldap {op}: {source}")]
    Ldap {
        op: &'static str,
        #[source]
        source: Box<ldap3::LdapError>,
    },

    /// The directory answered an operation with a non-success result code.
    #[error("ldap {op} returned rc {rc}: {text}")]
    LdapResult {
        op: &'static str,
        rc: u32,
        text: String,
    },

    /// kinit failed for a reason other than a wrong password.
    #[error("kinit {principal} failed ({status}): {stderr}")]
    Kinit {
        principal: String,
        status: String,
        stderr: String,
    },

    /// Every loopback address 127.0.0.10..=250 is held by another test DC.
    #[error("no free loopback address in 127.0.0.10..=250 (all locked under {0})")]
    NoFreeAddress(PathBuf),

    /// The samba process exited before it became ready.
    #[error("samba exited early ({status}); log tail:\n{log_tail}")]
    SambaExited { status: String, log_tail: String },

    /// The domain controller did not become ready before the deadline.
    #[error("samba not ready after {waited:?}: last error: {last_error}; log tail:\n{log_tail}")]
    NotReady {
        waited: std::time::Duration,
        last_error: String,
        log_tail: String,
    },

    /// The test OpenID provider (glewlwyd) exited before it became ready.
    #[error("glewlwyd exited early ({status}); log tail:\n{log_tail}")]
    OidcExited { status: String, log_tail: String },

    /// The test OpenID provider did not become ready before the deadline.
    #[error("glewlwyd not ready after {waited:?}: last error: {last_error}; log tail:\n{log_tail}")]
    OidcNotReady {
        waited: std::time::Duration,
        last_error: String,
        log_tail: String,
    },

    /// An HTTP request to the test OpenID provider failed (connect, TLS, body); the
    /// detail carries the whole error chain.
    #[error("oidc {op}: {detail}")]
    Http { op: String, detail: String },

    /// The test OpenID provider answered with an unexpected status or body.
    #[error("oidc {op} returned {status}: {body}")]
    OidcApi {
        op: String,
        status: u16,
        body: String,
    },

    /// chromedriver exited before it became ready.
    #[error("chromedriver exited early ({status}); log tail:\n{log_tail}")]
    BrowserExited { status: String, log_tail: String },

    /// A WebDriver command, or a page the test waited for, failed; the detail
    /// carries the WebDriver error and, where it helps, the page's URL and text.
    #[error("browser {op}: {detail}")]
    Browser { op: String, detail: String },

    /// The in-process stack (control plane, relay, agents) failed.
    #[error("stack: {0}")]
    Stack(String),
}

impl TestkitError {
    pub(crate) fn ldap(op: &'static str) -> impl FnOnce(ldap3::LdapError) -> TestkitError {
        move |source| TestkitError::Ldap {
            op,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TestkitError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<std::io::Error> for TestkitError {
    fn from(e: std::io::Error) -> Self {
        TestkitError::Stack(format!("i/o: {e}"))
    }
}
