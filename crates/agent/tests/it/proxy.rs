//! A TCP proxy in front of a DC's LDAPS port that sees what the agent does on the
//! wire: how many connections it opens, how many LDAP requests it sends, and, on
//! demand, withholds one chosen request (a DC that stops answering) or severs every
//! connection (a DC that restarts or drops idle sessions).
//!
//! It listens on the DC's own address (so the certificate's IP SAN matches and TLS
//! stays verified) and forwards both ways. It cannot read the encrypted LDAP, but it
//! can count TLS records: the agent sends one application-data record (type 23) per
//! LDAP message and waits for each answer, so the n-th application-data record the
//! client sends after its handshake is its n-th LDAP request — the bind being the
//! first. Under TLS 1.3 the client's Finished is an application-data record too, so
//! the proxy reads the version from the ServerHello (which it relays before the
//! client can send any application data) and skips that record.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

/// What the proxy saw on one connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The client's `request`-th LDAP request was not forwarded, nor anything after it.
    Withheld { request: usize },
    /// The client's `request`-th LDAP request is held until [`StallProxy::release`].
    Held { request: usize },
    /// The client closed the connection after `requests` LDAP requests, all forwarded.
    Closed { requests: usize, tls13: bool },
}

const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// A TCP proxy on `ip`, port chosen by the OS, to `ip:636`.
pub struct StallProxy {
    ip: Ipv4Addr,
    port: u16,
    events: mpsc::UnboundedReceiver<Event>,
    accept: tokio::task::JoinHandle<()>,
    counts: Arc<Counts>,
    release: Arc<Notify>,
}

/// What the proxy has seen so far, over all connections.
#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Counts {
    fn track(&self, task: AbortHandle) {
        self.tasks.lock().unwrap().push(task);
    }
}

impl StallProxy {
    /// Forward everything, or withhold the client's `withhold`-th LDAP request (1 is
    /// the bind) and everything it sends after it, keeping both connections open.
    pub async fn start(ip: Ipv4Addr, withhold: Option<usize>) -> StallProxy {
        StallProxy::with(ip, withhold.map(|n| (n, false))).await
    }

    /// Hold the client's `request`-th LDAP request (reported as [`Event::Held`])
    /// until [`StallProxy::release`], then forward it and everything after it.
    pub async fn hold(ip: Ipv4Addr, request: usize) -> StallProxy {
        StallProxy::with(ip, Some((request, true))).await
    }

    /// Forward the held request.
    pub fn release(&self) {
        self.release.notify_one();
    }

    async fn with(ip: Ipv4Addr, stall: Option<(usize, bool)>) -> StallProxy {
        let release = Arc::new(Notify::new());
        let held = Arc::clone(&release);
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, events) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts::default());
        let seen = Arc::clone(&counts);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                seen.connections.fetch_add(1, Ordering::SeqCst);
                let server = TcpStream::connect((ip, 636)).await.unwrap();
                let task = tokio::spawn(relay(
                    client,
                    server,
                    stall.map(|(n, hold)| (n, hold.then(|| Arc::clone(&held)))),
                    tx.clone(),
                    Arc::clone(&seen),
                ));
                seen.track(task.abort_handle());
            }
        });
        StallProxy {
            ip,
            port,
            events,
            accept,
            counts,
            release,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    /// LDAP requests forwarded so far, over all connections.
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Drop every open connection at once, both ways (what a DC restart does).
    pub fn sever(&self) {
        for task in self.counts.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn url(&self) -> String {
        format!("ldaps://{}:{}", self.ip, self.port)
    }

    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .expect("the proxy reports within 30 s")
            .expect("the proxy is running")
    }
}

/// How many LDAP requests a reset of `sam` (to `Bob-Passw0rd-1`) makes on a fresh
/// handle with `config` through a pass-through proxy, its final unbind included.
pub async fn requests_of_a_fresh_reset(
    dc: &writeback_testkit::SambaDc,
    config: &writeback_agent::directory::DirectoryConfig,
    sam: &str,
) -> usize {
    let mut proxy = StallProxy::start(dc.ip(), None).await;
    let mut cfg = config.clone();
    cfg.urls = vec![proxy.url()];
    let fresh = crate::directory(cfg);
    fresh
        .reset_password(
            &crate::upn(dc, sam),
            &crate::pw("Bob-Passw0rd-1"),
            writeback_agent::directory::ResetOptions::default(),
        )
        .await
        .unwrap();
    // The session stays open for the next operation until the handle is closed.
    fresh.close().await;
    match proxy.next().await {
        Event::Closed { requests, tls13 } => {
            eprintln!("a reset on a fresh handle: {requests} LDAP requests, TLS 1.3: {tls13}");
            requests
        }
        other => panic!("{other:?}"),
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Which request to stall, and whether to hold it for a release (else withhold it
/// for good).
type Stall = Option<(usize, Option<Arc<Notify>>)>;

async fn relay(
    client: TcpStream,
    server: TcpStream,
    stall: Stall,
    events: mpsc::UnboundedSender<Event>,
    counts: Arc<Counts>,
) {
    let tls13 = Arc::new(AtomicBool::new(false));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Runs until the DC closes; its half of the client connection stays open till then.
    let back = tokio::spawn(server_to_client(
        server_read,
        client_write,
        Arc::clone(&tls13),
    ));
    counts.track(back.abort_handle());
    let event = client_to_server(client_read, server_write, stall, &tls13, &counts, &events).await;
    let _ = events.send(event);
}

/// Relay the DC's bytes, noting from its ServerHello whether TLS 1.3 was chosen
/// before the ServerHello reaches the client.
async fn server_to_client(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, tls13: Arc<AtomicBool>) {
    let mut first = Records::default();
    let mut seen_hello = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if !seen_hello {
            first.push(&buf[..n]);
            if let Some((kind, body)) = first.next() {
                assert_eq!(kind, HANDSHAKE, "the DC's first record is its ServerHello");
                tls13.store(server_hello_is_tls13(&body), Ordering::SeqCst);
                seen_hello = true;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Relay the client's bytes record by record, counting its LDAP requests.
async fn client_to_server(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    stall: Stall,
    tls13: &AtomicBool,
    counts: &Counts,
    events: &mpsc::UnboundedSender<Event>,
) -> Event {
    let mut records = Records::default();
    let mut app_data = 0;
    let mut requests = 0;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                let tls13 = tls13.load(Ordering::SeqCst);
                // Under TLS 1.3 the close_notify alert sent on shutdown is an
                // application-data record as well.
                let requests = if tls13 { requests - 1 } else { requests };
                return Event::Closed { requests, tls13 };
            }
            Ok(n) => n,
        };
        records.push(&buf[..n]);
        while let Some((kind, record)) = records.next_raw() {
            if kind == APPLICATION_DATA {
                app_data += 1;
                let finished = tls13.load(Ordering::SeqCst) && app_data == 1;
                if !finished {
                    requests += 1;
                    if let Some((n, Some(release))) = &stall
                        && *n == requests
                    {
                        let _ = events.send(Event::Held { request: requests });
                        release.notified().await;
                    } else if stall.as_ref().is_some_and(|(n, _)| *n == requests) {
                        // Keep both connections open and drain the client, so it
                        // sees a DC that simply stopped answering.
                        let drain = tokio::spawn(async move {
                            let _keep = to;
                            let mut sink = vec![0u8; 16 * 1024];
                            while matches!(from.read(&mut sink).await, Ok(n) if n > 0) {}
                        });
                        counts.track(drain.abort_handle());
                        return Event::Withheld { request: requests };
                    }
                    counts.requests.fetch_add(1, Ordering::SeqCst);
                }
            }
            if to.write_all(&record).await.is_err() {
                return Event::Closed {
                    requests,
                    tls13: tls13.load(Ordering::SeqCst),
                };
            }
        }
    }
}

/// `supported_versions` (43) in a ServerHello saying 0x0304.
fn server_hello_is_tls13(handshake: &[u8]) -> bool {
    // type(1) length(3) legacy_version(2) random(32)
    let mut at = 4 + 2 + 32;
    assert_eq!(handshake.first(), Some(&2), "a ServerHello");
    let sid_len = usize::from(handshake[at]);
    at += 1 + sid_len + 2 + 1; // session id, cipher suite, compression
    if at + 2 > handshake.len() {
        return false; // no extensions: TLS 1.2 or older
    }
    let end = at + 2 + usize::from(u16::from_be_bytes([handshake[at], handshake[at + 1]]));
    at += 2;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([handshake[at], handshake[at + 1]]);
        let len = usize::from(u16::from_be_bytes([handshake[at + 2], handshake[at + 3]]));
        if kind == 43 {
            return handshake[at + 4..at + 4 + len] == [0x03, 0x04];
        }
        at += 4 + len;
    }
    false
}

/// TLS record framing over a byte stream: type(1) version(2) length(2) body.
#[derive(Default)]
struct Records {
    buf: Vec<u8>,
}

impl Records {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete record, header included.
    fn next_raw(&mut self) -> Option<(u8, Vec<u8>)> {
        if self.buf.len() < 5 {
            return None;
        }
        let len = 5 + usize::from(u16::from_be_bytes([self.buf[3], self.buf[4]]));
        if self.buf.len() < len {
            return None;
        }
        let record: Vec<u8> = self.buf.drain(..len).collect();
        Some((record[0], record))
    }

    /// The next complete record's type and body.
    fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        self.next_raw()
            .map(|(kind, record)| (kind, record[5..].to_vec()))
    }
}
