//! `writeback-bench`: the relay benchmark. It is a program, not a timed
//! test. It mints a throwaway PKI, starts the real `writeback-relay` binary
//! as a separate process, opens thousands of real agent tunnels
//! (`writeback_agent::tunnel::run` over an applier that answers at once)
//! from this process, and measures, on the relay process only:
//!
//! - resident memory per tunnel (`VmRSS` from `/proc/<relay>/status`
//!   before and after the tunnels are up);
//! - throughput: operations per second routed with a closed loop of
//!   concurrent dispatches, and the relay's CPU use meanwhile;
//! - latency: client-observed Dispatch round trip (control plane → relay →
//!   agent → relay → control plane) at a fixed rate, an upper bound on what
//!   the relay adds.
//!
//! Build with `cargo build --release -p writeback-relay -p writeback-bench`
//! and run `target/release/writeback-bench --help`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::sync::watch;
use tonic::transport::Channel;
use writeback_agent::executor::{Apply, Executor, ValidOperation};
use writeback_agent::state::Enrollment;
use writeback_agent::tunnel::{TunnelOptions, TunnelState};
use writeback_core::Failure;
use writeback_envelope::signing::OperationSigner;
use writeback_identity::{Ca, SpiffeId, tls, transport};
use writeback_proto::v1 as pb;
use writeback_proto::v1::relay_dispatch_client::RelayDispatchClient;

const TENANT: &str = "bench";

/// Relay benchmark (see the crate docs).
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Agent tunnels to hold.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Domains the agents are spread over.
    #[arg(long, default_value_t = 1_000)]
    domains: usize,
    /// Tunnels opened at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_batch: usize,
    /// The relay binary (default: `writeback-relay` next to this one).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Seconds of the closed-loop throughput run.
    #[arg(long, default_value_t = 10)]
    throughput_seconds: u64,
    /// Dispatches in flight during the throughput run.
    #[arg(long, default_value_t = 1024)]
    concurrency: usize,
    /// HTTP/2 connections the control-plane side spreads dispatches over.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Operations per second of the latency run (half the 10,000 ops/s
    /// target by default; 0: half the measured throughput).
    #[arg(long, default_value_t = 5_000)]
    latency_rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Extra environment for the relay, e.g. `MALLOC_ARENA_MAX=2`.
    #[arg(long = "relay-env", value_parser = parse_env)]
    relay_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

/// Answers every operation at once.
struct Noop;

#[tonic::async_trait]
impl Apply for Noop {
    async fn apply(
        &self,
        _op: &ValidOperation,
        _secrets: Option<&writeback_envelope::Secrets>,
    ) -> Result<(), Failure> {
        Ok(())
    }
    async fn health(&self) -> Vec<pb::DcStatus> {
        Vec::new()
    }
}

/// The relay child process; killed if the bench stops early.
struct RelayProcess {
    child: Child,
}

impl RelayProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmRSS` of `pid`, bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("while reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// User + system CPU seconds of `pid` (`self` for this process).
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 (1-based), in USER_HZ (100 on Linux).
    let rest = stat.rsplit_once(')').context("bad stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

fn raise_fd_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(l.local_addr()?.port())
}

fn client_tls(ca: &Ca, chain: &str, key: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    Ok(tls::client_config(
        tls::roots_from_pem(ca.cert_pem())?,
        Some((chain, key)),
    )?)
}

fn write_relay_config(dir: &Path, ca: &Ca, port: u16) -> anyhow::Result<PathBuf> {
    let id = SpiffeId::Relay {
        tenant: TENANT.into(),
        relay_id: "bench-relay".into(),
    };
    let (chain, key) = ca.issue_service(
        &id,
        &["localhost".to_owned()],
        &[IpAddr::from([127, 0, 0, 1])],
    )?;
    std::fs::write(dir.join("relay.pem"), chain)?;
    std::fs::write(dir.join("relay.key"), key)?;
    std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
    let toml = format!(
        "relay_id = \"bench-relay\"\n\
         tenant = \"{TENANT}\"\n\
         listen = \"127.0.0.1:{port}\"\n\
         cert_file = \"{d}/relay.pem\"\n\
         key_file = \"{d}/relay.key\"\n\
         ca_file = \"{d}/ca.pem\"\n\
         heartbeat_interval_seconds = 15\n\
         heartbeat_misses = 3\n\
         agent_queue_depth = 256\n\
         max_message_bytes = 262144\n\
         max_tunnels_per_agent = 4\n\
         shutdown_grace_seconds = 2\n",
        d = dir.display()
    );
    let path = dir.join("relay.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

async fn wait_ready(url: &str, cp_tls: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut health = HealthClient::new(transport::channel(url, cp_tls.clone())?);
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "writeback.v1.RelayDispatch".into(),
            })
            .await;
        if let Ok(r) = answer
            && r.into_inner().status == ServingStatus::Serving as i32
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the relay did not become healthy within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Agents {
    states: Vec<watch::Receiver<TunnelState>>,
    _stop: watch::Sender<bool>,
}

fn domain_name(i: usize) -> String {
    format!("d{i}.bench")
}

async fn start_agents(
    args: &Args,
    ca: &Ca,
    signer: &OperationSigner,
    url: &str,
) -> anyhow::Result<Agents> {
    let (stop, stop_rx) = watch::channel(false);
    let mut states = Vec::with_capacity(args.agents);
    let started = Instant::now();
    for batch in (0..args.agents)
        .collect::<Vec<_>>()
        .chunks(args.connect_batch)
    {
        let mut waiting = Vec::new();
        for &i in batch {
            let domain = domain_name(i % args.domains);
            let agent_id = format!("a{i}");
            let (csr, key) = writeback_identity::generate_csr()?;
            let cert = ca.sign_agent_csr(
                &csr,
                &SpiffeId::Agent {
                    tenant: TENANT.into(),
                    domain: domain.clone(),
                    agent_id: agent_id.clone(),
                },
            )?;
            let options = TunnelOptions {
                relay_urls: vec![url.to_owned()],
                tls: client_tls(ca, &cert, &key)?,
                identity: pb::AgentIdentity {
                    tenant: TENANT.into(),
                    domain: domain.clone(),
                    agent_id: agent_id.clone(),
                },
                max_in_flight: 64,
                backoff_min: Duration::from_millis(200),
                backoff_max: Duration::from_secs(5),
                max_message_bytes: 256 * 1024,
                clock: Default::default(),
            };
            let executor = Arc::new(Executor::new(
                Enrollment {
                    tenant: TENANT.into(),
                    domain,
                    agent_id,
                    relay_urls: options.relay_urls.clone(),
                    operation_signing_keys: vec![hex::encode(signer.public_key())],
                    control_plane_url: String::new(),
                    result_signing_key_registered: false,
                },
                writeback_envelope::KeyPair::generate(),
                Arc::new(Noop),
            ));
            let (tx, rx) = watch::channel(TunnelState::Connecting);
            let mut stop_rx = stop_rx.clone();
            tokio::spawn(writeback_agent::tunnel::run(
                options,
                executor,
                tx,
                async move {
                    let _ = stop_rx.wait_for(|v| *v).await;
                },
            ));
            waiting.push(rx.clone());
            states.push(rx);
        }
        for mut rx in waiting {
            tokio::time::timeout(
                Duration::from_secs(120),
                rx.wait_for(|s| matches!(s, TunnelState::Connected(_))),
            )
            .await
            .context("an agent did not connect within 120 s")??;
        }
        if states.len() % 1000 < args.connect_batch {
            eprintln!(
                "  {} tunnels up after {:.1} s",
                states.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(Agents {
        states,
        _stop: stop,
    })
}

fn connected(agents: &Agents) -> usize {
    agents
        .states
        .iter()
        .filter(|s| matches!(*s.borrow(), TunnelState::Connected(_)))
        .count()
}

fn operation(domain: String) -> pb::OperationRequest {
    let expires = time::OffsetDateTime::now_utc() + Duration::from_secs(30);
    pb::OperationRequest {
        operation_id: uuid::Uuid::new_v4().to_string(),
        tenant: TENANT.into(),
        domain,
        kind: pb::OperationKind::Unlock as i32,
        target: Some(pb::UserRef {
            by: Some(pb::user_ref::By::Upn("user@bench".into())),
        }),
        must_change_at_next_logon: false,
        unlock: false,
        expires_at: Some(prost_types::Timestamp {
            seconds: expires.unix_timestamp(),
            nanos: 0,
        }),
        envelope: None,
        traceparent: String::new(),
        signature: Vec::new(),
        signing_key_id: String::new(),
        search: None,
        agent_id: String::new(),
        issued_at: None,
    }
}

/// The control plane's side: several HTTP/2 connections to the relay.
struct Dispatchers {
    clients: Vec<RelayDispatchClient<Channel>>,
    signer: Arc<OperationSigner>,
    next: AtomicUsize,
    domains: usize,
}

impl Dispatchers {
    async fn dispatch(&self) -> Result<Duration, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut client = self.clients[n % self.clients.len()].clone();
        let mut op = operation(domain_name(n % self.domains));
        self.signer.sign(&mut op);
        let started = Instant::now();
        let r = client
            .dispatch(pb::DispatchRequest {
                operation: Some(op),
                min_revocation_version: 0,
                agent_id: String::new(),
            })
            .await;
        let took = started.elapsed();
        match r {
            Ok(resp) => {
                let reason = resp
                    .into_inner()
                    .result
                    .and_then(|r| r.outcome)
                    .map(|o| o.reason_code)
                    .unwrap_or_default();
                if reason == "OK" {
                    Ok(took)
                } else {
                    Err(reason)
                }
            }
            Err(s) => Err(writeback_core::failure_of(&s).reason.as_str().to_owned()),
        }
    }
}

struct Throughput {
    ops: u64,
    errors: u64,
    seconds: f64,
    relay_cpu: f64,
    bench_cpu: f64,
}

async fn throughput(
    d: &Arc<Dispatchers>,
    concurrency: usize,
    seconds: u64,
    relay_pid: u32,
) -> anyhow::Result<Throughput> {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let relay_cpu0 = cpu_seconds(&relay_pid.to_string())?;
    let bench_cpu0 = cpu_seconds("self")?;
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let workers = (0..concurrency).map(|_| {
        let (d, ok, errors) = (d.clone(), ok.clone(), errors.clone());
        tokio::spawn(async move {
            while Instant::now() < end {
                match d.dispatch().await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    });
    futures::future::join_all(workers).await;
    let secs = started.elapsed().as_secs_f64();
    Ok(Throughput {
        ops: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds: secs,
        relay_cpu: (cpu_seconds(&relay_pid.to_string())? - relay_cpu0) / secs,
        bench_cpu: (cpu_seconds("self")? - bench_cpu0) / secs,
    })
}

struct Latency {
    sent: u64,
    errors: u64,
    achieved_rate: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    relay_cpu: f64,
}

async fn latency(
    d: &Arc<Dispatchers>,
    rate: u64,
    seconds: u64,
    relay_pid: u32,
) -> anyhow::Result<Latency> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let relay_cpu0 = cpu_seconds(&relay_pid.to_string())?;
    let started = Instant::now();
    let total = rate * seconds;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        ticker.tick().await;
        let (d, tx) = (d.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(d.dispatch().await);
        });
    }
    let send_secs = started.elapsed().as_secs_f64();
    drop(tx);
    let mut took = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut errors = 0;
    while let Some(r) = rx.recv().await {
        match r {
            Ok(t) => took.push(t),
            Err(_) => errors += 1,
        }
    }
    let relay_cpu =
        (cpu_seconds(&relay_pid.to_string())? - relay_cpu0) / started.elapsed().as_secs_f64();
    took.sort();
    let at = |q: f64| -> Duration {
        if took.is_empty() {
            return Duration::ZERO;
        }
        let i = ((took.len() as f64 - 1.0) * q).round() as usize;
        took[i.min(took.len() - 1)]
    };
    Ok(Latency {
        sent: total,
        errors,
        achieved_rate: total as f64 / send_secs,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: took.last().copied().unwrap_or_default(),
        relay_cpu,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn run(args: Args) -> anyhow::Result<()> {
    writeback_identity::install_crypto_provider();
    let fds = raise_fd_limit().context("while raising the open-file limit")?;
    if fds < args.agents as u64 + 1000 {
        bail!(
            "the open-file limit is {fds}; {} tunnels need more (raise the hard limit)",
            args.agents
        );
    }
    let relay_bin = match &args.relay_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent dir")?
            .join("writeback-relay"),
    };
    let dir = tempfile::tempdir()?;
    let ca = Ca::generate(TENANT)?;
    let (signer, _) = OperationSigner::generate()
        .map_err(|e| anyhow::anyhow!("while generating the operation-signing key: {e}"))?;
    let signer = Arc::new(signer);
    let port = free_port()?;
    let config = write_relay_config(dir.path(), &ca, port)?;
    let url = format!("https://127.0.0.1:{port}");
    let mut relay_cmd = Command::new(&relay_bin);
    relay_cmd
        .arg("--config")
        .arg(&config)
        .env("WRITEBACK_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in &args.relay_env {
        relay_cmd.env(k, v);
    }
    let relay = RelayProcess {
        child: relay_cmd
            .spawn()
            .with_context(|| format!("while starting {}", relay_bin.display()))?,
    };
    let cp_id = SpiffeId::ControlPlane {
        tenant: TENANT.into(),
    };
    let (cp_chain, cp_key) = ca.issue_service(&cp_id, &[], &[])?;
    let cp_tls = client_tls(&ca, &cp_chain, &cp_key)?;
    wait_ready(&url, cp_tls.clone()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss(relay.pid())?;
    eprintln!(
        "relay pid {} up, RSS {:.1} MiB; opening {} tunnels over {} domains",
        relay.pid(),
        rss_before as f64 / 1048576.0,
        args.agents,
        args.domains
    );
    let connect_started = Instant::now();
    let agents = start_agents(&args, &ca, &signer, &url).await?;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up = connected(&agents);
    let rss_after = rss(relay.pid())?;
    let per_tunnel = rss_after.saturating_sub(rss_before) as f64 / up.max(1) as f64;

    let clients = (0..args.channels.max(1))
        .map(|_| {
            transport::channel(&url, cp_tls.clone()).map(|c| {
                RelayDispatchClient::new(c)
                    .max_decoding_message_size(256 * 1024)
                    .max_encoding_message_size(256 * 1024)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let d = Arc::new(Dispatchers {
        clients,
        signer,
        next: AtomicUsize::new(0),
        domains: args.domains,
    });
    eprintln!("warming up");
    throughput(&d, args.concurrency, 2, relay.pid()).await?;
    eprintln!("throughput run ({} s)", args.throughput_seconds);
    let t = throughput(&d, args.concurrency, args.throughput_seconds, relay.pid()).await?;
    let ops_per_sec = t.ops as f64 / t.seconds;
    let rate = if args.latency_rate > 0 {
        args.latency_rate
    } else {
        ((ops_per_sec / 2.0) as u64).max(1)
    };
    eprintln!("latency run at {rate} ops/s ({} s)", args.latency_seconds);
    let l = latency(&d, rate, args.latency_seconds, relay.pid()).await?;
    let up_after = connected(&agents);
    let rss_end = rss(relay.pid())?;

    println!("## writeback relay benchmark");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| agent tunnels held | {up} (of {}; {} still up after the load) |",
        args.agents, up_after
    );
    println!("| time to open them | {connect_secs:.1} s |");
    println!(
        "| relay RSS before / with tunnels / after load | {:.1} / {:.1} / {:.1} MiB |",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        rss_end as f64 / 1048576.0
    );
    println!("| relay RSS per tunnel | {:.1} KiB |", per_tunnel / 1024.0);
    println!(
        "| throughput (closed loop, {} in flight, {} s) | {:.0} ops/s, {} errors |",
        args.concurrency, args.throughput_seconds, ops_per_sec, t.errors
    );
    println!(
        "| CPU during throughput: relay / bench (agents + load) | {:.2} / {:.2} cores |",
        t.relay_cpu, t.bench_cpu
    );
    println!(
        "| latency run | {} ops at {:.0} ops/s, {} errors, relay CPU {:.2} cores |",
        l.sent, l.achieved_rate, l.errors, l.relay_cpu
    );
    println!(
        "| Dispatch round trip p50 / p90 / p99 / p99.9 / max | {} / {} / {} / {} / {} |",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max)
    );
    relay.stop();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}
