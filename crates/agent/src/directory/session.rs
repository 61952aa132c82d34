//! Connections: TLS trusting only the configured CA, StartTLS for `ldap://`, the
//! agent's bind, failover across URLs, and LDAP operations with a per-operation
//! timeout whose failures come back as [`DirectoryError`]s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, LdapResult, Mod, Scope, StdStream};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use tracing::{debug, warn};

use super::classify::{DcRefusal, classify, rc};
use super::error::{BindRejection, DirectoryError};
use super::wire::RawEntry;

/// LDAP result code `sizeLimitExceeded` (RFC 4511).
const SIZE_LIMIT_EXCEEDED: u32 = 4;

/// How a URL is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// `ldap://` upgraded with StartTLS before anything else is sent.
    StartTls,
}

/// A parsed, accepted DC URL.
#[derive(Debug, Clone)]
pub(crate) struct DcUrl {
    pub(crate) url: String,
    pub(crate) transport: Transport,
    /// `host:port` to dial.
    pub(crate) addr: String,
}

impl DcUrl {
    /// Accept `ldaps://host[:port]` and `ldap://host[:port]` (StartTLS); refuse
    /// anything else, including paths, credentials and query parts.
    pub(crate) fn parse(url: &str) -> Result<DcUrl, DirectoryError> {
        let bad = |why: &str| DirectoryError::Config(format!("directory url {url:?}: {why}"));
        let (transport, rest, port) = if let Some(rest) = url.strip_prefix("ldaps://") {
            (Transport::Ldaps, rest, 636)
        } else if let Some(rest) = url.strip_prefix("ldap://") {
            (Transport::StartTls, rest, 389)
        } else {
            return Err(bad(
                "only ldaps:// (or ldap:// with StartTLS) is accepted; plain LDAP is refused",
            ));
        };
        let host_port = rest.strip_suffix('/').unwrap_or(rest);
        if host_port.is_empty() || host_port.contains(['/', '?', '@', '#']) {
            return Err(bad("expected scheme://host[:port] with nothing after it"));
        }
        // [v6]:port, host:port, or host alone.
        let has_port = match host_port.rfind(':') {
            Some(i) => !host_port[i..].contains(']'),
            None => false,
        };
        let addr = if has_port {
            let (_, p) = host_port.rsplit_once(':').unwrap_or((host_port, ""));
            if p.parse::<u16>().is_err() {
                return Err(bad("the port is not a number"));
            }
            host_port.to_string()
        } else {
            format!("{host_port}:{port}")
        };
        Ok(DcUrl {
            url: url.to_string(),
            transport,
            addr,
        })
    }
}

/// A rustls client configuration trusting only the certificates in `ca_pem` (one or
/// more), with the ring provider. Certificate verification is never disabled.
pub(crate) fn tls_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| DirectoryError::Config(format!("ca_pem: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| DirectoryError::Config(format!("ca_pem: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(DirectoryError::Config(
            "ca_pem holds no certificate".to_string(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DirectoryError::Config(format!("tls: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Why one URL could not be used.
pub(crate) enum ConnectFailure {
    /// Nothing answered, or the connection broke before TLS was up.
    Unreachable(String),
    /// TLS failed (untrusted or mismatched certificate, StartTLS refused, handshake
    /// aborted).
    Tls(String),
    /// The agent's bind was rejected: stop, another DC would say the same and each
    /// attempt counts towards the service account's lockout.
    Bind(DirectoryError),
}

/// An open, bound connection to one DC.
pub(crate) struct Session {
    ldap: Ldap,
    pub(crate) url: String,
    /// Index of the DC's URL in the configuration.
    pub(crate) dc: usize,
    /// When the bind succeeded.
    pub(crate) opened: Instant,
    /// The connection failed or an operation on it timed out: never reuse it.
    pub(crate) broken: bool,
    /// Where request times go (the pool's metrics).
    pub(crate) timings: Option<super::timing::Timings>,
    timeout: Duration,
}

/// Connect to `dc` and bind as the service account.
pub(crate) async fn open(
    dc: &DcUrl,
    tls: &Arc<rustls::ClientConfig>,
    bind_dn: &str,
    bind_password: &SecretString,
    timeout: Duration,
) -> Result<Session, ConnectFailure> {
    // TCP first, on our own, so a failure here is clearly "unreachable" and anything
    // after it is TLS.
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&dc.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(ConnectFailure::Unreachable(format!("connect: {e}"))),
        Err(_) => {
            return Err(ConnectFailure::Unreachable(format!(
                "connect: no answer within {timeout:?}"
            )));
        }
    };
    // One LDAP request, one answer: never hold a small write back (Nagle).
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let tcp = tcp
        .into_std()
        .map_err(|e| ConnectFailure::Unreachable(format!("socket: {e}")))?;
    let settings = LdapConnSettings::new()
        .set_config(Arc::clone(tls))
        .set_starttls(dc.transport == Transport::StartTls)
        .set_conn_timeout(timeout)
        .set_std_stream(StdStream::Tcp(tcp));
    // The whole handshake is bounded too: with a connected stream given,
    // ldap3's connection timeout covers no TLS round trip, and a DC that
    // fell silent (a partition) would hold the operation forever.
    let handshake = LdapConnAsync::with_settings(settings, &dc.url);
    let (conn, mut ldap) = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(tls_failure(e)),
        Err(_) => {
            return Err(ConnectFailure::Unreachable(
                "tls handshake: no answer in time".to_string(),
            ));
        }
    };
    ldap3::drive!(conn);

    let res = ldap
        .with_timeout(timeout)
        .simple_bind(bind_dn, bind_password.expose_secret())
        .await;
    match res {
        Ok(res) if res.rc == rc::SUCCESS => Ok(Session {
            ldap,
            url: dc.url.clone(),
            dc: 0,
            opened: Instant::now(),
            broken: false,
            timings: None,
            timeout,
        }),
        Ok(res) if res.rc == rc::INVALID_CREDENTIALS => {
            let cause = match classify(res.rc, &res.text) {
                DcRefusal::AccountLockedOut => BindRejection::LockedOut,
                DcRefusal::AccountDisabled => BindRejection::Disabled,
                DcRefusal::PasswordExpired | DcRefusal::MustChangePassword => {
                    BindRejection::PasswordExpired
                }
                DcRefusal::AccountExpired => BindRejection::AccountExpired,
                DcRefusal::LogonRestricted => BindRejection::Restricted,
                _ => BindRejection::InvalidCredentials,
            };
            Err(ConnectFailure::Bind(DirectoryError::AgentBind {
                url: dc.url.clone(),
                cause,
                text: res.text,
            }))
        }
        // Busy, unavailable, unwilling (e.g. a DC that wants stronger auth): try the
        // next DC.
        Ok(res) => Err(ConnectFailure::Unreachable(format!(
            "bind returned rc {}: {}",
            res.rc, res.text
        ))),
        Err(LdapError::Timeout { .. }) => Err(ConnectFailure::Unreachable(format!(
            "bind: no answer within {timeout:?}"
        ))),
        Err(e) => Err(ConnectFailure::Unreachable(format!("bind: {e}"))),
    }
}

/// After TCP is up, every failure of connection setup is a TLS failure, except a
/// timeout (the DC stopped answering).
fn tls_failure(e: LdapError) -> ConnectFailure {
    match e {
        LdapError::Timeout { .. } => {
            ConnectFailure::Unreachable("tls handshake: no answer in time".to_string())
        }
        LdapError::Io { source } => {
            let detail = match source
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls) => format!("handshake: {tls}"),
                None => format!("handshake: {source}"),
            };
            ConnectFailure::Tls(detail)
        }
        LdapError::LdapResult { result } => ConnectFailure::Tls(format!(
            "starttls refused: rc {}: {}",
            result.rc, result.text
        )),
        other => ConnectFailure::Tls(other.to_string()),
    }
}

/// The outcome of one LDAP operation that reached the DC.
pub(crate) type Answer<T> = Result<T, LdapResult>;

impl Session {
    /// Search, returning entries (continuation references dropped) or the
    /// non-success result. A referral (rc 10: the DC does not hold the base and names
    /// another server) is a non-success result like any other: the agent never
    /// follows one, and never reads one as an empty answer — an empty answer is what
    /// "not a member" looks like in the protected-account check.
    pub(crate) async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        controls: Vec<RawControl>,
    ) -> Result<Answer<Vec<RawEntry>>, DirectoryError> {
        let mut ldap = self.ldap.clone();
        if !controls.is_empty() {
            ldap.with_controls(controls);
        }
        let started = Instant::now();
        let res = ldap
            .with_timeout(self.timeout)
            .search(base, scope, filter, attrs.to_vec())
            .await;
        self.observe("search", started);
        let res = res.map_err(|e| self.op_error("search", e, false))?;
        let ldap3::SearchResult(entries, result) = res;
        if result.rc != rc::SUCCESS {
            return Ok(Err(result));
        }
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            match RawEntry::parse(entry.0) {
                Some(e) => out.push(e),
                None => {
                    self.broken = true;
                    return Err(DirectoryError::Connection {
                        op: "search",
                        detail: "malformed search entry".to_string(),
                        during_write: false,
                    });
                }
            }
        }
        Ok(Ok(out))
    }

    /// A subtree search that stops after `size_limit` entries (the DC's
    /// `sizeLimitExceeded`, rc 4, is not a failure here): the entries, and
    /// whether the limit cut the answer short.
    pub(crate) async fn search_sized(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        size_limit: i32,
    ) -> Result<(Vec<RawEntry>, bool), DirectoryError> {
        let mut ldap = self.ldap.clone();
        let started = Instant::now();
        let res = ldap
            .with_search_options(ldap3::SearchOptions::new().sizelimit(size_limit))
            .with_timeout(self.timeout)
            .search(base, Scope::Subtree, filter, attrs.to_vec())
            .await;
        self.observe("search", started);
        let ldap3::SearchResult(entries, result) =
            res.map_err(|e| self.op_error("search", e, false))?;
        let cut = result.rc == SIZE_LIMIT_EXCEEDED;
        if result.rc != rc::SUCCESS && !cut {
            return Err(unexpected("search", &self.url, result));
        }
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.is_ref() || entry.is_intermediate() {
                continue;
            }
            let Some(e) = RawEntry::parse(entry.0) else {
                self.broken = true;
                return Err(DirectoryError::Connection {
                    op: "search",
                    detail: "malformed search entry".to_string(),
                    during_write: false,
                });
            };
            out.push(e);
        }
        Ok((out, cut))
    }

    /// Search with the paged-results control (`page_size` entries a page), so a
    /// domain with more users than the DC's size limit is read whole. Entries
    /// (referrals dropped) or the non-success result.
    pub(crate) async fn search_paged(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        controls: Vec<RawControl>,
        page_size: i32,
    ) -> Result<Answer<Vec<RawEntry>>, DirectoryError> {
        let mut ldap = self.ldap.clone();
        if !controls.is_empty() {
            ldap.with_controls(controls);
        }
        let mut stream = ldap
            .with_timeout(self.timeout)
            .streaming_search_with(
                ldap3::adapters::PagedResults::new(page_size),
                base,
                Scope::Subtree,
                filter,
                attrs.to_vec(),
            )
            .await
            .map_err(|e| self.op_error("search", e, false))?;
        let mut out = Vec::new();
        loop {
            match stream.next().await {
                Ok(Some(entry)) if entry.is_ref() || entry.is_intermediate() => {}
                Ok(Some(entry)) => match RawEntry::parse(entry.0) {
                    Some(e) => out.push(e),
                    None => {
                        self.broken = true;
                        return Err(DirectoryError::Connection {
                            op: "search",
                            detail: "malformed search entry".to_string(),
                            during_write: false,
                        });
                    }
                },
                Ok(None) => break,
                Err(e) => return Err(self.op_error("search", e, false)),
            }
        }
        let result = stream.finish().await;
        if result.rc != rc::SUCCESS {
            return Ok(Err(result));
        }
        Ok(Ok(out))
    }

    /// Search and turn a non-success result into a [`DirectoryError::Directory`].
    pub(crate) async fn search_ok(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<RawEntry>, DirectoryError> {
        match self.search(base, scope, filter, attrs, Vec::new()).await? {
            Ok(entries) => Ok(entries),
            Err(res) => Err(unexpected("search", &self.url, res)),
        }
    }

    /// Modify, returning the non-success result for the caller to classify.
    pub(crate) async fn modify(
        &mut self,
        dn: &str,
        mods: Vec<Mod<&[u8]>>,
        controls: Vec<RawControl>,
    ) -> Result<Answer<()>, DirectoryError> {
        let mut ldap = self.ldap.clone();
        if !controls.is_empty() {
            ldap.with_controls(controls);
        }
        let started = Instant::now();
        let res = ldap.with_timeout(self.timeout).modify(dn, mods).await;
        self.observe("modify", started);
        let res = res.map_err(|e| self.op_error("modify", e, true))?;
        if res.rc == rc::SUCCESS {
            Ok(Ok(()))
        } else {
            Ok(Err(res))
        }
    }

    fn op_error(&mut self, op: &'static str, e: LdapError, write: bool) -> DirectoryError {
        self.broken = true;
        match e {
            LdapError::Timeout { .. } => DirectoryError::Timeout {
                op,
                after: self.timeout,
                during_write: write,
            },
            other => {
                warn!(url = %self.url, op, error = %other, "ldap connection failed mid-operation");
                DirectoryError::Connection {
                    op,
                    detail: other.to_string(),
                    during_write: write,
                }
            }
        }
    }

    fn observe(&self, op: &'static str, started: Instant) {
        if let Some(t) = &self.timings {
            t.observe(op, started.elapsed());
        }
        crate::trace::request(op, &self.url, started);
    }

    /// Whether the connection is gone (the DC closed it, or it failed).
    pub(crate) fn is_closed(&mut self) -> bool {
        self.ldap.is_closed()
    }

    /// A read of the rootDSE: the cheapest request that proves the session still
    /// answers.
    pub(crate) async fn probe(&mut self) -> bool {
        matches!(
            self.search("", Scope::Base, "(objectClass=*)", &["1.1"], Vec::new())
                .await,
            Ok(Ok(_))
        )
    }

    /// Unbind, best effort.
    pub(crate) async fn close(mut self) {
        if let Err(e) = self.ldap.unbind().await {
            debug!(url = %self.url, error = %e, "unbind failed");
        }
    }
}

/// A result we have no specific mapping for: logged at warn with the DC text, which
/// stays out of the public message.
pub(crate) fn unexpected(op: &'static str, url: &str, res: LdapResult) -> DirectoryError {
    warn!(url, op, rc = res.rc, text = %res.text, "directory refused the operation");
    DirectoryError::Directory {
        op,
        rc: res.rc,
        text: res.text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_ldaps_or_starttls_only() {
        let u = DcUrl::parse("ldaps://dc1.contoso.test").unwrap();
        assert_eq!(u.transport, Transport::Ldaps);
        assert_eq!(u.addr, "dc1.contoso.test:636");
        let u = DcUrl::parse("ldaps://127.0.0.10:6360/").unwrap();
        assert_eq!(u.addr, "127.0.0.10:6360");
        let u = DcUrl::parse("ldap://dc1.contoso.test").unwrap();
        assert_eq!(u.transport, Transport::StartTls);
        assert_eq!(u.addr, "dc1.contoso.test:389");
        let u = DcUrl::parse("ldaps://[::1]").unwrap();
        assert_eq!(u.addr, "[::1]:636");
        let u = DcUrl::parse("ldaps://[::1]:1636").unwrap();
        assert_eq!(u.addr, "[::1]:1636");
        for bad in [
            "ldapi:///var/run/ldapi",
            "http://dc1",
            "dc1.contoso.test",
            "ldaps://",
            "ldaps://dc1/DC=contoso",
            "ldaps://user@dc1",
            "ldaps://dc1:port",
        ] {
            assert!(DcUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ca_must_hold_a_certificate() {
        assert!(matches!(tls_config(""), Err(DirectoryError::Config(_))));
        assert!(matches!(
            tls_config("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"),
            Err(DirectoryError::Config(_))
        ));
    }
}
