//! A domain controller that stops answering after the agent has connected and bound:
//! the per-step timeout ends the wait with `TIMEOUT`, nothing is retried on another
//! DC, and nothing is written.
//!
//! The stall comes from a TCP proxy on the DC's own address (so the certificate's IP
//! SAN matches and TLS stays verified) that forwards both ways and withholds one
//! chosen LDAP request. It cannot read the encrypted LDAP, but it can count TLS
//! records: the agent sends one application-data record (type 23) per LDAP message
//! and waits for each answer, so the n-th application-data record the client sends
//! after its handshake is its n-th LDAP request — the bind being the first. Under TLS
//! 1.3 the client's Finished is an application-data record too, so the proxy reads
//! the version from the ServerHello (which it relays before the client can send any
//! application data) and skips that record. Nothing waits on the clock: the proxy
//! reports the request it withheld, and the test checks it.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use writeback_agent::directory::{DirectoryError, ResetOptions};
use writeback_core::ReasonCode;

use crate::{admin_config, directory, pw, refused, start_dc, upn};

const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dc_that_stalls_after_the_bind_times_out_and_nothing_is_written() {
    let dc = start_dc().await;
    let alice = dc.create_user("alice", "Start-Passw0rd!").await.unwrap();
    dc.create_user("bob", "Start-Passw0rd!").await.unwrap();
    let reset = ResetOptions::default();

    // Pass-through: how many requests a reset on a fresh handle makes (it reads the
    // domain first). The last is the unbind, so the modify is the one before it.
    let mut proxy = StallProxy::start(dc.ip(), None).await;
    let mut cfg = admin_config(&dc);
    cfg.urls = vec![proxy.url()];
    cfg.timeout = TIMEOUT;
    let fresh = directory(cfg.clone());
    fresh
        .reset_password(&upn(&dc, "bob"), &pw("Bob-Passw0rd-1"), reset)
        .await
        .unwrap();
    // The session stays open for the next operation until the handle is closed.
    fresh.close().await;
    let requests = match proxy.next().await {
        Event::Closed { requests, tls13 } => {
            eprintln!("a reset on a fresh handle: {requests} LDAP requests, TLS 1.3: {tls13}");
            requests
        }
        other => panic!("{other:?}"),
    };
    assert!(
        dc.try_bind("bob@contoso.test", "Bob-Passw0rd-1")
            .await
            .unwrap()
    );
    // bind, at least one search, modify, unbind
    assert!(requests >= 4, "{requests} requests");
    let modify = requests - 1;

    // The first request after the bind (a search) is withheld: TIMEOUT, not
    // DC_UNREACHABLE, and the user is untouched.
    let mut proxy = StallProxy::start(dc.ip(), Some(2)).await;
    cfg.urls = vec![proxy.url()];
    let started = Instant::now();
    let result = directory(cfg.clone())
        .reset_password(&upn(&dc, "alice"), &pw("Alice-Passw0rd-1"), reset)
        .await;
    let took = started.elapsed();
    assert_eq!(proxy.next().await, Event::Withheld { request: 2 });
    let e = refused(result, ReasonCode::Timeout);
    assert!(
        matches!(e, DirectoryError::Timeout { op: "search", after, .. } if after == TIMEOUT),
        "{e:?}"
    );
    assert_eq!(
        e.public_message(),
        "the domain controller did not answer within 2 seconds; nothing was changed"
    );
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(10),
        "{took:?}"
    );
    assert!(dc.try_bind(&alice, "Start-Passw0rd!").await.unwrap());

    // The modify itself is withheld, with the real DC listed next: TIMEOUT, outcome
    // unknown as far as the agent can tell, and no retry elsewhere — the DC never
    // saw the write and no other DC was asked, so the old password still works.
    let mut proxy = StallProxy::start(dc.ip(), Some(modify)).await;
    cfg.urls = vec![proxy.url(), dc.ldaps_url()];
    let started = Instant::now();
    let result = directory(cfg.clone())
        .reset_password(&upn(&dc, "alice"), &pw("Alice-Passw0rd-1"), reset)
        .await;
    let took = started.elapsed();
    assert_eq!(proxy.next().await, Event::Withheld { request: modify });
    let e = refused(result, ReasonCode::Timeout);
    assert!(
        matches!(e, DirectoryError::Timeout { op: "modify", after, .. } if after == TIMEOUT),
        "{e:?}"
    );
    assert_eq!(
        e.public_message(),
        "the domain controller did not answer within 2 seconds while the change was being \
         written; its outcome is unknown — check the account before retrying"
    );
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(10),
        "{took:?}"
    );
    assert!(dc.try_bind(&alice, "Start-Passw0rd!").await.unwrap());
    assert!(!dc.try_bind(&alice, "Alice-Passw0rd-1").await.unwrap());
}

/// What the proxy saw on one connection.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// The client's `request`-th LDAP request was not forwarded, nor anything after it.
    Withheld { request: usize },
    /// The client closed the connection after `requests` LDAP requests, all forwarded.
    Closed { requests: usize, tls13: bool },
}

const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// A TCP proxy on `ip`, port chosen by the OS, to `ip:636`.
struct StallProxy {
    ip: Ipv4Addr,
    port: u16,
    events: mpsc::UnboundedReceiver<Event>,
    accept: tokio::task::JoinHandle<()>,
}

impl StallProxy {
    /// Forward everything, or withhold the client's `withhold`-th LDAP request (1 is
    /// the bind) and everything it sends after it, keeping both connections open.
    async fn start(ip: Ipv4Addr, withhold: Option<usize>) -> StallProxy {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, events) = mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let server = TcpStream::connect((ip, 636)).await.unwrap();
                tokio::spawn(relay(client, server, withhold, tx.clone()));
            }
        });
        StallProxy {
            ip,
            port,
            events,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("ldaps://{}:{}", self.ip, self.port)
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await
            .expect("the proxy reports within 30 s")
            .expect("the proxy is running")
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    withhold: Option<usize>,
    events: mpsc::UnboundedSender<Event>,
) {
    let tls13 = Arc::new(AtomicBool::new(false));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Runs until the DC closes; its half of the client connection stays open till then.
    tokio::spawn(server_to_client(
        server_read,
        client_write,
        Arc::clone(&tls13),
    ));
    let event = client_to_server(client_read, server_write, withhold, &tls13).await;
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
    withhold: Option<usize>,
    tls13: &AtomicBool,
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
                    if Some(requests) == withhold {
                        // Keep both connections open and drain the client, so it
                        // sees a DC that simply stopped answering.
                        drop(tokio::spawn(async move {
                            let _keep = to;
                            let mut sink = vec![0u8; 16 * 1024];
                            while matches!(from.read(&mut sink).await, Ok(n) if n > 0) {}
                        }));
                        return Event::Withheld { request: requests };
                    }
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
