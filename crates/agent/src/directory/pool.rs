//! Warm, bound sessions to the domain controllers, reused across operations.
//!
//! A TLS connection plus a simple bind costs Samba ~55 ms, more than the searches
//! and the write of a reset together, so sessions are opened once and kept:
//! - at most `max_sessions` are open (in use or idle) at once; an operation waits
//!   for one to come free;
//! - an operation takes an idle session to the first DC in configuration order;
//!   when none is idle it opens one, trying the URLs in order and skipping DCs in
//!   backoff (the DC failover of one connection per operation, kept);
//! - sessions are kept only to the preferred DC (the first not in backoff), so
//!   after a failover the pool moves back once the first DC answers again;
//! - a session idle for more than [`PROBE_AFTER`] is probed (a rootDSE read) before
//!   reuse; one idle for [`MAX_IDLE`] or open for [`MAX_LIFETIME`] is closed, so
//!   the service account binds again regularly and a disabled account or a new
//!   password takes effect;
//! - a session whose connection failed or timed out is never reused; a lease
//!   dropped without `Lease::release` (a cancelled operation) closes its
//!   connection;
//! - a DC that could not be connected to is skipped for [`BACKOFF_FIRST`], doubling
//!   to [`BACKOFF_MAX`]; a successful connection or health probe clears it. The
//!   dials of one outage count once (a failure while the DC is already in backoff
//!   — a concurrent dial that failed first — does not double it), so a burst of
//!   operations during a two-second restart does not shut the DC out for a
//!   minute; and when every DC is in backoff, the one whose backoff ends first
//!   is tried anyway rather than answering "unreachable" without trying;
//! - a rejected bind closes a gate: no new bind with the same password for
//!   [`BIND_RETRY_WRONG_PASSWORD`] (doubling to [`BIND_RETRY_MAX`]) after a wrong
//!   password — each attempt counts towards the account's lockout — or
//!   [`BIND_RETRY_OTHER`] after a disabled, locked-out or expired account. The
//!   password is read again from its file for every new session, and a changed
//!   password is tried at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::error::{BindRejection, DirectoryError};
use super::session::{self, ConnectFailure, DcUrl, Session};
use super::timing::Timings;

/// Idle time after which a session is probed before reuse.
pub const PROBE_AFTER: Duration = Duration::from_secs(10);
/// Idle time after which a session is closed instead of reused.
pub const MAX_IDLE: Duration = Duration::from_secs(120);
/// Age after which a session is closed when released.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// First backoff of a DC that could not be connected to.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest backoff of a DC.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// No new bind with a password the DC called wrong for this long (doubling).
pub const BIND_RETRY_WRONG_PASSWORD: Duration = Duration::from_secs(300);
/// Longest wait before a wrong password is tried again.
pub const BIND_RETRY_MAX: Duration = Duration::from_secs(1800);
/// No new bind for this long after any other bind rejection.
pub const BIND_RETRY_OTHER: Duration = Duration::from_secs(30);

/// Where the service account's password comes from.
pub(crate) struct Credential {
    last: Mutex<SecretString>,
    file: Option<PathBuf>,
}

impl Credential {
    pub(crate) fn new(initial: SecretString, file: Option<PathBuf>) -> Credential {
        Credential {
            last: Mutex::new(initial),
            file,
        }
    }

    /// The password to bind with: read again from its file when there is one (the
    /// last one read if the file is unreadable or empty).
    fn current(&self) -> SecretString {
        if let Some(path) = &self.file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let pw = text.trim_end_matches(['\r', '\n']);
                    if pw.is_empty() {
                        warn!(path = %path.display(), "the service account's password file is empty; binding with the last password read");
                    } else {
                        *lock(&self.last) = SecretString::from(pw.to_owned());
                    }
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot read the service account's password file; binding with the last password read");
                }
            }
        }
        lock(&self.last).clone()
    }
}

/// The pool; one per [`super::Directory`].
pub(crate) struct Pool {
    urls: Vec<DcUrl>,
    tls: Arc<rustls::ClientConfig>,
    bind_dn: String,
    password: Credential,
    timeout: Duration,
    permits: Arc<Semaphore>,
    max_sessions: usize,
    returned: Notify,
    state: Mutex<State>,
    timings: Timings,
}

struct State {
    idle: Vec<Idle>,
    dcs: Vec<DcHealth>,
    refusal: Option<Refusal>,
}

struct Idle {
    session: Session,
    permit: OwnedSemaphorePermit,
    since: Instant,
}

/// Connection failures of one DC.
#[derive(Default)]
struct DcHealth {
    failures: u32,
    retry_at: Option<Instant>,
    /// The last failure: whether it was TLS, and what happened.
    last: Option<(bool, String)>,
}

/// The last rejected bind.
struct Refusal {
    password: SecretString,
    url: String,
    cause: BindRejection,
    text: String,
    count: u32,
    retry_at: Instant,
}

impl Refusal {
    fn error(&self) -> DirectoryError {
        DirectoryError::AgentBind {
            url: self.url.clone(),
            cause: self.cause,
            text: self.text.clone(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data that is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A session taken from the pool. [`Lease::release`] returns it; dropping the lease
/// instead closes the connection (an operation cancelled half-way leaves the
/// session in an unknown state).
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    session: Session,
    permit: OwnedSemaphorePermit,
    reused: bool,
}

impl Lease<'_> {
    pub(crate) fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Whether the session served an earlier operation (so a failure may just mean
    /// the DC dropped it while idle).
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Give the session back, or close it if it broke, is too old, or is to a DC
    /// other than the preferred one.
    pub(crate) fn release(self) {
        let Lease {
            pool,
            mut session,
            permit,
            ..
        } = self;
        if session.broken || session.is_closed() {
            debug!(url = %session.url, "not reusing a broken session");
            return;
        }
        if session.opened.elapsed() >= MAX_LIFETIME || Some(session.dc) != pool.preferred() {
            tokio::spawn(async move {
                session.close().await;
                drop(permit);
            });
            return;
        }
        lock(&pool.state).idle.push(Idle {
            session,
            permit,
            since: Instant::now(),
        });
        // Every waiter looks again (each registered before it last looked):
        // one woken that loses the session to an operation that did not wait
        // must not leave the others asleep beside an idle session.
        pool.returned.notify_waiters();
    }
}

impl Pool {
    pub(crate) fn new(
        urls: Vec<DcUrl>,
        tls: Arc<rustls::ClientConfig>,
        bind_dn: String,
        password: Credential,
        timeout: Duration,
        max_sessions: usize,
    ) -> Pool {
        let dcs = urls.iter().map(|_| DcHealth::default()).collect();
        Pool {
            urls,
            tls,
            bind_dn,
            password,
            timeout,
            permits: Arc::new(Semaphore::new(max_sessions.max(1))),
            max_sessions: max_sessions.max(1),
            returned: Notify::new(),
            timings: Timings::default(),
            state: Mutex::new(State {
                idle: Vec::new(),
                dcs,
                refusal: None,
            }),
        }
    }

    /// A session for one operation: an idle one when there is one, else a new one.
    pub(crate) async fn lease(&self) -> Result<Lease<'_>, DirectoryError> {
        self.lease_inner(true).await
    }

    /// A new session, never an idle one (the retry after a reused one failed).
    pub(crate) async fn lease_new(&self) -> Result<Lease<'_>, DirectoryError> {
        self.lease_inner(false).await
    }

    async fn lease_inner(&self, reuse: bool) -> Result<Lease<'_>, DirectoryError> {
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if reuse && let Some(lease) = self.take_idle(None).await {
                return Ok(lease);
            }
            let permit = match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(p) => p,
                Err(_) if !reuse => self.make_room().await,
                Err(_) => tokio::select! {
                    p = Arc::clone(&self.permits).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return Err(DirectoryError::Config("session pool closed".into())),
                    },
                    () = &mut returned => continue,
                },
            };
            let session = self.open().await?;
            return Ok(Lease {
                pool: self,
                session,
                permit,
                reused: false,
            });
        }
    }

    /// A permit for a new session, closing an idle one if every permit is
    /// taken. It waits for a permit or for a session given back: a session
    /// returned to the idle list keeps its permit, so while every permit
    /// sits with an idle session only that wakes it (waiting for a permit
    /// alone hung an operation retrying on a new session beside a full idle
    /// list, for good).
    async fn make_room(&self) -> OwnedSemaphorePermit {
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            let idle = {
                let mut state = lock(&self.state);
                state.idle.pop()
            };
            if let Some(idle) = idle {
                drop(idle.session);
                return idle.permit;
            }
            tokio::select! {
                p = Arc::clone(&self.permits).acquire_owned() => {
                    if let Ok(p) = p {
                        return p;
                    }
                }
                () = &mut returned => {}
            }
        }
    }

    /// An idle, live session (to `dc` only, when given, and then always probed),
    /// preferring the first DC.
    async fn take_idle(&self, dc: Option<usize>) -> Option<Lease<'_>> {
        loop {
            let (candidate, expired) = {
                let mut state = lock(&self.state);
                let now = Instant::now();
                let (keep, expired): (Vec<Idle>, Vec<Idle>) = state.idle.drain(..).partition(|i| {
                    now.duration_since(i.since) < MAX_IDLE
                        && i.session.opened.elapsed() < MAX_LIFETIME
                });
                state.idle = keep;
                let best = state
                    .idle
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| dc.is_none_or(|d| i.session.dc == d))
                    .min_by_key(|(_, i)| i.session.dc)
                    .map(|(at, _)| at);
                (best.map(|at| state.idle.swap_remove(at)), expired)
            };
            for old in expired {
                debug!(url = %old.session.url, "closing an expired idle session");
                tokio::spawn(async move {
                    old.session.close().await;
                    drop(old.permit);
                });
            }
            let mut idle = candidate?;
            if idle.session.is_closed() {
                debug!(url = %idle.session.url, "an idle session was closed by the DC");
                continue;
            }
            // A health check (`dc` given) always probes; an operation only
            // after the session sat idle for a while.
            let stale = dc.is_some() || idle.since.elapsed() >= PROBE_AFTER;
            if stale && !idle.session.probe().await {
                debug!(url = %idle.session.url, "an idle session failed its probe");
                continue;
            }
            return Some(Lease {
                pool: self,
                session: idle.session,
                permit: idle.permit,
                reused: true,
            });
        }
    }

    /// The first DC not in backoff.
    fn preferred(&self) -> Option<usize> {
        let state = lock(&self.state);
        let now = Instant::now();
        state
            .dcs
            .iter()
            .position(|d| d.retry_at.is_none_or(|t| t <= now))
    }

    /// The DC whose backoff ends first.
    fn due_first(&self) -> Option<usize> {
        let state = lock(&self.state);
        state
            .dcs
            .iter()
            .enumerate()
            .min_by_key(|(_, d)| d.retry_at)
            .map(|(i, _)| i)
    }

    /// A new bound session: the first DC that works, skipping those in backoff
    /// (all of them in backoff: the one due first).
    async fn open(&self) -> Result<Session, DirectoryError> {
        let password = self.gate()?;
        let mut attempts = Vec::new();
        let mut first_tls: Option<(String, String)> = None;
        let mut dialed = false;
        for (i, dc) in self.urls.iter().enumerate() {
            if let Some((waiting, tls, detail)) = self.backing_off(i) {
                attempts.push(format!(
                    "{}: not tried for another {waiting:.1?} after failing ({detail})",
                    dc.url
                ));
                if tls {
                    first_tls.get_or_insert((dc.url.clone(), detail));
                }
                continue;
            }
            dialed = true;
            match self.dial(i, &password).await {
                Ok(s) => {
                    if i > 0 {
                        info!(url = %s.url, skipped = i, "using a domain controller other than the first");
                    }
                    return Ok(s);
                }
                Err(ConnectFailure::Bind(e)) => return Err(e),
                Err(ConnectFailure::Tls(detail)) => {
                    attempts.push(format!("{}: tls: {detail}", dc.url));
                    first_tls.get_or_insert((dc.url.clone(), detail));
                }
                Err(ConnectFailure::Unreachable(detail)) => {
                    attempts.push(format!("{}: {detail}", dc.url));
                }
            }
        }
        // Every DC in backoff: try the one due first rather than answer
        // "unreachable" without asking any (the only DC may be back already).
        if !dialed && let Some(i) = self.due_first() {
            match self.dial(i, &password).await {
                Ok(s) => return Ok(s),
                Err(ConnectFailure::Bind(e)) => return Err(e),
                Err(ConnectFailure::Tls(detail)) => {
                    first_tls.get_or_insert((self.url(i).to_owned(), detail));
                }
                Err(ConnectFailure::Unreachable(detail)) => {
                    attempts.push(format!("{}: {detail}", self.url(i)));
                }
            }
        }
        // A certificate problem is more actionable than "unreachable".
        Err(match first_tls {
            Some((url, detail)) => DirectoryError::Tls { url, detail },
            None => DirectoryError::Unreachable { attempts },
        })
    }

    /// Connect to DC `i` and bind, recording the outcome (backoff, bind gate).
    async fn dial(&self, i: usize, password: &SecretString) -> Result<Session, ConnectFailure> {
        let Some(dc) = self.urls.get(i) else {
            return Err(ConnectFailure::Unreachable("no such DC".into()));
        };
        let started = Instant::now();
        let result = session::open(dc, &self.tls, &self.bind_dn, password, self.timeout).await;
        self.timings.observe("connect", started.elapsed());
        crate::trace::request("connect", &dc.url, started);
        let mut state = lock(&self.state);
        match result {
            Ok(mut s) => {
                s.dc = i;
                s.timings = Some(self.timings.clone());
                if let Some(h) = state.dcs.get_mut(i) {
                    *h = DcHealth::default();
                }
                state.refusal = None;
                Ok(s)
            }
            Err(ConnectFailure::Bind(e)) => {
                if let DirectoryError::AgentBind { url, cause, text } = &e {
                    let count = match &state.refusal {
                        Some(r) if same(&r.password, password) => r.count + 1,
                        _ => 1,
                    };
                    let wait = bind_retry(*cause, count);
                    warn!(
                        error = %e,
                        retry_in = ?wait,
                        "service account bind rejected; no new bind with this password until \
                         then, unless its file changes"
                    );
                    state.refusal = Some(Refusal {
                        password: password.clone(),
                        url: url.clone(),
                        cause: *cause,
                        text: text.clone(),
                        count,
                        retry_at: Instant::now() + wait,
                    });
                }
                Err(ConnectFailure::Bind(e))
            }
            Err(f) => {
                let (tls, detail) = match &f {
                    ConnectFailure::Tls(d) => (true, d.clone()),
                    ConnectFailure::Unreachable(d) => (false, d.clone()),
                    ConnectFailure::Bind(_) => (false, String::new()),
                };
                warn!(url = %dc.url, tls, %detail, "cannot connect to the domain controller");
                if let Some(h) = state.dcs.get_mut(i) {
                    // A dial begun before a concurrent one failed saw the same
                    // outage: one failure per backoff period escalates it.
                    let now = Instant::now();
                    if h.retry_at.is_none_or(|t| t <= now) {
                        h.failures = h.failures.saturating_add(1);
                        h.retry_at = Some(now + backoff(h.failures));
                    }
                    h.last = Some((tls, detail));
                }
                Err(f)
            }
        }
    }

    /// The password to bind with, or the last refusal while its gate is closed.
    fn gate(&self) -> Result<SecretString, DirectoryError> {
        let password = self.password.current();
        let state = lock(&self.state);
        match &state.refusal {
            Some(r) if same(&r.password, &password) && Instant::now() < r.retry_at => {
                debug!("bind gate closed: the password was rejected and has not changed");
                Err(r.error())
            }
            _ => Ok(password),
        }
    }

    /// `(time left, was TLS, detail)` while DC `i` is in backoff.
    fn backing_off(&self, i: usize) -> Option<(Duration, bool, String)> {
        let state = lock(&self.state);
        let h = state.dcs.get(i)?;
        let left = h.retry_at?.checked_duration_since(Instant::now())?;
        let (tls, detail) = h.last.clone().unwrap_or_default();
        Some((left, tls, detail))
    }

    /// For health: whether each DC answers, in configuration order, reusing an idle
    /// session to it when there is one. Backoff is ignored (a probe is how a DC
    /// leaves it); the bind gate is not.
    pub(crate) async fn probe(&self, i: usize) -> Result<(), DirectoryError> {
        // An idle session to DC `i` comes back probed (see `take_idle`).
        if let Some(lease) = self.take_idle(Some(i)).await {
            self.clear_backoff(i);
            lease.release();
            return Ok(());
        }
        let password = self.gate()?;
        let url = self.urls.get(i).map(|d| d.url.clone()).unwrap_or_default();
        match self.dial(i, &password).await {
            Ok(session) => {
                match Arc::clone(&self.permits).try_acquire_owned() {
                    Ok(permit) => Lease {
                        pool: self,
                        session,
                        permit,
                        reused: false,
                    }
                    .release(),
                    Err(_) => session.close().await,
                }
                Ok(())
            }
            Err(f) => Err(super::failure_error(&url, f)),
        }
    }

    fn clear_backoff(&self, i: usize) {
        if let Some(h) = lock(&self.state).dcs.get_mut(i) {
            *h = DcHealth::default();
        }
    }

    /// The request times (for the metrics).
    pub(crate) fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Sessions (idle, in use).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let idle = lock(&self.state).idle.len();
        let free = self.permits.available_permits();
        (idle, self.max_sessions.saturating_sub(free + idle))
    }

    /// Each configured DC's URL and whether its last connection attempt
    /// succeeded (true before any attempt; false from a failed connection
    /// until a connection or probe succeeds), in configuration order.
    pub(crate) fn dc_states(&self) -> Vec<(String, bool)> {
        let state = lock(&self.state);
        self.urls
            .iter()
            .enumerate()
            .map(|(i, dc)| {
                let up = state.dcs.get(i).is_none_or(|h| h.failures == 0);
                (dc.url.clone(), up)
            })
            .collect()
    }

    /// The number of configured DCs.
    pub(crate) fn dc_count(&self) -> usize {
        self.urls.len()
    }

    /// URL of DC `i`.
    pub(crate) fn url(&self, i: usize) -> &str {
        self.urls.get(i).map_or("", |d| d.url.as_str())
    }

    /// Unbind and close every idle session.
    pub(crate) async fn close_idle(&self) {
        let idle = std::mem::take(&mut lock(&self.state).idle);
        for i in idle {
            i.session.close().await;
        }
    }
}

fn same(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

/// Backoff after `failures` consecutive failed connections.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// How long to wait before binding again with a password rejected `count` times.
fn bind_retry(cause: BindRejection, count: u32) -> Duration {
    match cause {
        BindRejection::InvalidCredentials => {
            let doublings = count.saturating_sub(1).min(16);
            BIND_RETRY_WRONG_PASSWORD
                .saturating_mul(1 << doublings)
                .min(BIND_RETRY_MAX)
        }
        _ => BIND_RETRY_OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_ceiling() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(6), Duration::from_secs(32));
        assert_eq!(backoff(7), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_wrong_password_waits_longer_than_a_locked_account() {
        let wrong = BindRejection::InvalidCredentials;
        assert_eq!(bind_retry(wrong, 1), Duration::from_secs(300));
        assert_eq!(bind_retry(wrong, 2), Duration::from_secs(600));
        assert_eq!(bind_retry(wrong, 4), BIND_RETRY_MAX);
        assert_eq!(bind_retry(wrong, u32::MAX), BIND_RETRY_MAX);
        assert_eq!(
            bind_retry(BindRejection::LockedOut, 9),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn the_password_is_read_again_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "First-Passw0rd!\n").unwrap();
        let c = Credential::new(SecretString::from("Initial!"), Some(path.clone()));
        assert_eq!(c.current().expose_secret(), "First-Passw0rd!");
        std::fs::write(&path, "Second-Passw0rd!\r\n").unwrap();
        assert_eq!(c.current().expose_secret(), "Second-Passw0rd!");
        // Empty or missing: the last one read, never an empty (anonymous) bind.
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(c.current().expose_secret(), "Second-Passw0rd!");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.current().expose_secret(), "Second-Passw0rd!");
        let fixed = Credential::new(SecretString::from("Fixed!"), None);
        assert_eq!(fixed.current().expose_secret(), "Fixed!");
    }

    /// An operation retrying on a new session while every place is taken
    /// is woken when a session is given back to the idle list (which keeps
    /// its place): with one place, A holds it, B asks for a new session,
    /// A is released — B gets the place instead of waiting for good (an
    /// operation hung that way after a DC partition).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_given_back_wakes_a_wait_for_a_new_one() {
        writeback_identity::install_crypto_provider();
        let dc = writeback_testkit::SambaDc::start("contoso.test")
            .await
            .expect("samba DC (scripts/install-deps.sh)");
        let mut config = crate::directory::DirectoryConfig::new(
            vec![dc.ldaps_url()],
            dc.ca_pem(),
            dc.admin_dn(),
            dc.admin_password().to_owned().into(),
        );
        config.max_sessions = 1;
        let directory = crate::directory::Directory::new(config).unwrap();
        let pool = &directory.inner.pool;
        let a = pool.lease().await.unwrap();
        let waiting = pool.lease_new();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut waiting)
                .await
                .is_err(),
            "no place is free yet"
        );
        a.release();
        let mut b = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken by the session given back")
            .unwrap();
        assert!(!b.reused(), "a new session");
        assert!(b.session().probe().await);
    }
}
