//! A network partition between two real processes that talk TCP: a proxy
//! on 127.0.0.1 that forwards bytes both ways until [`Partition::cut`],
//! then forwards nothing — in either direction, on existing connections or
//! new ones — until [`Partition::heal`], when everything held back flows
//! again, in order. Nothing is dropped or reset by the proxy itself: like a
//! cut cable, the ends learn of the partition only from their own timeouts
//! (a relay's heartbeat limit, an HTTP/2 keep-alive), and bytes sent into
//! it arrive late once it heals, as TCP's retransmissions would deliver
//! them. A process closing its end is passed on, also only once healed.
//!
//! Written here (no crate does it) because the partition must hold bytes,
//! not refuse connections, and cut exactly one link: the tests run agents
//! in their own process, where a network namespace cannot put one agent on
//! the far side, and a firewall rule on the loopback would cut every test
//! running beside it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::TestkitError;

/// A proxy to one upstream address that a test can cut and heal.
pub struct Partition {
    addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    /// Armed by [`Partition::cut_after_downstream`]: the size of chunk
    /// from the upstream that cuts the link once it is through.
    trip: Arc<Mutex<Option<usize>>>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Partition {
    /// Listens on 127.0.0.1 (port chosen by the OS) and forwards every
    /// connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Partition, TestkitError> {
        Partition::start_on(Ipv4Addr::LOCALHOST, upstream).await
    }

    /// [`Partition::start`], listening on `ip` — the upstream's own
    /// address, say, so that a TLS client checking the upstream's
    /// certificate for that IP connects through the proxy unchanged.
    pub async fn start_on(ip: Ipv4Addr, upstream: SocketAddr) -> Result<Partition, TestkitError> {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(watch::channel(false).0);
        let trip = Arc::new(Mutex::new(None));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let (cut_tx, trip2, spawned) = (Arc::clone(&cut), Arc::clone(&trip), Arc::clone(&tasks));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (cut, spawned2) = (cut_tx.subscribe(), Arc::clone(&spawned));
                let tripwire = Tripwire {
                    armed: Arc::clone(&trip2),
                    cut: Arc::clone(&cut_tx),
                };
                let task = tokio::spawn(async move {
                    // A connection made during the partition reaches nobody
                    // until it heals.
                    open(&cut).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pump(cr, sw, cut.clone(), None));
                    let down = tokio::spawn(pump(sr, cw, cut, Some(tripwire)));
                    track(&spawned2, up.abort_handle());
                    track(&spawned2, down.abort_handle());
                });
                track(&spawned, task.abort_handle());
            }
        });
        track(&tasks, accept.abort_handle());
        Ok(Partition {
            addr,
            cut,
            trip,
            tasks,
        })
    }

    /// Where to connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://` and [`Partition::addr`].
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops every byte, both ways, on every connection.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }

    /// Cuts the link as soon as a chunk of at least `min_bytes` from the
    /// upstream has reached the client (an operation sent down a tunnel,
    /// not a heartbeat), and returns once it is cut — `None` if no such
    /// chunk came within `within`. A test cuts the link with an operation
    /// in the far end's hands, whatever the timing of what came before.
    pub async fn cut_after_downstream(&self, min_bytes: usize, within: Duration) -> Option<()> {
        *self.trip.lock().unwrap_or_else(|e| e.into_inner()) = Some(min_bytes);
        let mut cut = self.cut.subscribe();
        let tripped = tokio::time::timeout(within, cut.wait_for(|c| *c)).await;
        *self.trip.lock().unwrap_or_else(|e| e.into_inner()) = None;
        tripped.ok().map(|_| ())
    }

    /// Lets the bytes flow again, those held back first.
    pub fn heal(&self) {
        let _ = self.cut.send(false);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
    }
}

fn track(tasks: &Mutex<Vec<AbortHandle>>, task: AbortHandle) {
    tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
}

/// The downstream side of [`Partition::cut_after_downstream`].
struct Tripwire {
    armed: Arc<Mutex<Option<usize>>>,
    cut: Arc<watch::Sender<bool>>,
}

impl Tripwire {
    /// Cuts the link (and disarms) when it is armed and a chunk of `n`
    /// bytes is at least the armed size.
    fn passed(&self, n: usize) {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if armed.is_some_and(|min| n >= min) {
            *armed = None;
            let _ = self.cut.send(true);
        }
    }
}

/// Returns once the link is not cut.
async fn open(cut: &watch::Receiver<bool>) {
    let mut cut = cut.clone();
    let _ = cut.wait_for(|c| !*c).await;
}

/// Copies `from` to `to`, holding each chunk while the link is cut (what
/// is not read meanwhile waits in the kernel's buffers); each chunk
/// through is shown to the `tripwire`, if any.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: watch::Receiver<bool>,
    tripwire: Option<Tripwire>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        open(&cut).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                open(&cut).await;
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        open(&cut).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let Some(tripwire) = &tripwire {
            tripwire.passed(n);
        }
    }
}
