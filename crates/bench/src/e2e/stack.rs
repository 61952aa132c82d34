//! The system under test, as an operator runs it: two Samba AD domains
//! (writeback-testkit's DCs, each its own `samba` process), and the release
//! binaries `writeback-control-plane`, `writeback-relay` and `writeback-agent` as
//! separate processes, set up with `writebackctl` and the agents' own `enroll` and
//! `permissions grant`, exactly as `scripts/stack.sh` does. Everything stops when
//! the [`Stack`] is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use writeback_testkit::SambaDc;

/// The tenant the benchmark creates.
pub const TENANT: &str = "bench";
/// The service account the agents bind as, in every domain.
const SVC: &str = "svc-writeback";
const SVC_PASSWORD: &str = "Svc-Bench-Passw0rd!";
/// The password every benchmark user starts with.
pub const START_PASSWORD: &str = "Start-Bench-Passw0rd!";

/// One domain: its DC and its users' UPNs and DNs.
pub struct Domain {
    pub dc: SambaDc,
    pub users: Vec<(String, String)>,
    pub svc_upn: String,
}

/// A child process, killed when dropped.
struct Process {
    name: String,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            tracing::warn!(name = %self.name, "did not stop on SIGTERM; killing");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The running system.
pub struct Stack {
    pub dir: PathBuf,
    pub domains: Vec<Domain>,
    /// `https://127.0.0.1:port` of the control plane.
    pub cp_url: String,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
    bin: PathBuf,
    // Dropped first: agents, then control plane and relay.
    processes: Vec<Process>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        while let Some(p) = self.processes.pop() {
            drop(p);
        }
    }
}

/// How the stack is shaped.
pub struct Shape {
    pub domains: Vec<String>,
    pub users: usize,
    /// Agents per domain, in `domains` order.
    pub agents: Vec<usize>,
}

impl Stack {
    pub async fn start(bin: &Path, dir: &Path, shape: &Shape) -> anyhow::Result<Stack> {
        let mut domains = Vec::new();
        for name in &shape.domains {
            domains.push(start_domain(name, shape.users).await?);
        }
        let cp_port = free_port()?;
        let relay_port = free_port()?;
        let mut stack = Stack {
            dir: dir.to_path_buf(),
            domains,
            cp_url: format!("https://127.0.0.1:{cp_port}"),
            ca_file: dir.join("cp/ca.pem"),
            token_file: dir.join("admin.token"),
            bin: bin.to_path_buf(),
            processes: Vec::new(),
        };
        stack.start_services(cp_port, relay_port)?;
        stack.configure()?;
        for (d, &count) in shape.agents.iter().enumerate() {
            for n in 0..count {
                stack.start_agent(d, n)?;
            }
        }
        let expected: usize = shape.agents.iter().sum();
        stack.wait_agents(expected).await?;
        Ok(stack)
    }

    fn start_services(&mut self, cp_port: u16, relay_port: u16) -> anyhow::Result<()> {
        let d = &self.dir;
        let cp_toml = d.join("cp.toml");
        std::fs::write(
            &cp_toml,
            format!(
                "data_dir = \"{dir}/cp\"\n\
                 listen = \"127.0.0.1:{cp_port}\"\n\
                 relay_urls = [\"https://127.0.0.1:{relay_port}\"]\n\
                 tls_dns_names = [\"localhost\"]\n\
                 tls_ip_addresses = [\"127.0.0.1\"]\n\
                 # The benchmark resets each user many times an hour.\n\
                 throttle_per_user_per_hour = 0\n\
                 # One client on loopback calls as fast as the API answers.\n\
                 [limits]\n\
                 calls_per_minute_per_source = 0\n\
                 calls_per_minute_per_tenant = 0\n",
                dir = d.display()
            ),
        )?;
        let cp = |args: &[&str]| {
            let mut all = vec!["--config", path_str(&cp_toml)];
            all.extend_from_slice(args);
            self.run("writeback-control-plane", &all)
        };
        cp(&[
            "init",
            "--tenant",
            TENANT,
            "--admin",
            "admin@bench.test",
            "--client-app",
            "portal",
            "--token-file",
            path_str(&self.token_file),
        ])?;
        let relay_dir = d.join("relay");
        cp(&[
            "relay-cert",
            "--tenant",
            TENANT,
            "--relay-id",
            "relay-1",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out-dir",
            path_str(&relay_dir),
        ])?;
        let relay_toml = d.join("relay.toml");
        std::fs::write(
            &relay_toml,
            format!(
                "relay_id = \"relay-1\"\ntenant = \"{TENANT}\"\nlisten = \"127.0.0.1:{relay_port}\"\n\
                 cert_file = \"{r}/relay.pem\"\nkey_file = \"{r}/relay.key\"\nca_file = \"{r}/ca.pem\"\n",
                r = relay_dir.display()
            ),
        )?;
        self.spawn(
            "relay",
            "writeback-relay",
            &["--config", path_str(&relay_toml)],
        )?;
        self.spawn(
            "control-plane",
            "writeback-control-plane",
            &["--config", path_str(&cp_toml), "serve"],
        )?;
        wait_port(relay_port)?;
        wait_port(cp_port)?;
        Ok(())
    }

    fn configure(&self) -> anyhow::Result<()> {
        for d in &self.domains {
            self.ctl(&["domain", "add", d.dc.domain()])?;
        }
        self.ctl(&[
            "settings",
            "set",
            "--cloud-sync-writeback",
            "on",
            "--sspr-writeback",
            "on",
            "--unlock-without-reset",
            "on",
        ])?;
        Ok(())
    }

    fn start_agent(&mut self, d: usize, n: usize) -> anyhow::Result<()> {
        let domain = self.domains.get(d).context("no such domain")?;
        let name = format!("agent-{}-{n}", domain.dc.domain());
        let dir = self.dir.join(&name);
        std::fs::create_dir_all(&dir)?;
        let answer = self.ctl(&[
            "agent",
            "enroll-token",
            "--domain",
            domain.dc.domain(),
            // Captured here, written to a 0600 file below.
            "--stdout",
        ])?;
        let token = answer.lines().next().context("no enrollment token")?;
        let token_file = dir.join("token");
        write_secret(&token_file, token)?;
        let state = dir.join("state");
        self.run(
            "writeback-agent",
            &[
                "enroll",
                "--control-plane",
                &self.cp_url,
                "--token-file",
                path_str(&token_file),
                "--state-dir",
                path_str(&state),
            ],
        )?;
        std::fs::remove_file(&token_file)?;
        let ca = dir.join("dc-ca.pem");
        std::fs::write(&ca, domain.dc.ca_pem())?;
        let svc_pw = dir.join("bind-password");
        write_secret(&svc_pw, SVC_PASSWORD)?;
        let admin_pw = dir.join("admin-password");
        write_secret(&admin_pw, domain.dc.admin_password())?;
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{state}\"\n[directory]\nurls = [\"{url}\"]\nca_file = \"{ca}\"\n\
                 bind_dn = \"{svc}\"\nbind_password_file = \"{pw}\"\n",
                state = state.display(),
                url = domain.dc.ldaps_url(),
                ca = ca.display(),
                svc = domain.svc_upn,
                pw = svc_pw.display(),
            ),
        )?;
        if n == 0 {
            self.run(
                "writeback-agent",
                &[
                    "--config",
                    path_str(&config),
                    "permissions",
                    "grant",
                    "--admin-dn",
                    &domain.dc.admin_dn(),
                    "--admin-password-file",
                    path_str(&admin_pw),
                ],
            )?;
        }
        std::fs::remove_file(&admin_pw)?;
        self.spawn(
            &name,
            "writeback-agent",
            &["--config", path_str(&config), "run"],
        )
    }

    async fn wait_agents(&self, expected: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self.ctl(&["agent", "list"])?;
            let online = list.lines().filter(|l| l.contains("online")).count();
            if online >= expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{online} of {expected} agents online after 60 s; logs in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `writebackctl` as the global administrator; its standard output.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec![
            "--control-plane",
            &self.cp_url,
            "--ca-file",
            path_str(&self.ca_file),
            "--token-file",
            path_str(&self.token_file),
        ];
        all.extend_from_slice(args);
        self.run("writebackctl", &all)
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join(program))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("while running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {} failed: {}{}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn spawn(&mut self, name: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = Command::new(self.bin.join(program))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("while starting {program}"))?;
        self.processes.push(Process {
            name: name.to_owned(),
            child,
        });
        Ok(())
    }
}

/// A DC with the service account and `users` users, a policy that lets a user be
/// reset many times a minute.
async fn start_domain(name: &str, users: usize) -> anyhow::Result<Domain> {
    let dc = SambaDc::start(name)
        .await
        .with_context(|| format!("while starting a Samba DC for {name}"))?;
    dc.set_password_settings(&["--min-pwd-age=0", "--history-length=0"])
        .await?;
    dc.create_user(SVC, SVC_PASSWORD).await?;
    let mut list = Vec::with_capacity(users);
    for chunk in (0..users).collect::<Vec<_>>().chunks(8) {
        let created = futures::future::join_all(chunk.iter().map(|i| {
            let dc = &dc;
            async move {
                let sam = format!("u{i:04}");
                let dn = dc.create_user(&sam, START_PASSWORD).await?;
                anyhow::Ok((format!("{sam}@{}", dc.domain()), dn))
            }
        }))
        .await;
        for c in created {
            list.push(c?);
        }
    }
    Ok(Domain {
        svc_upn: format!("{SVC}@{}", dc.domain()),
        dc,
        users: list,
    })
}

/// The service account's password, for the raw LDAPS client.
pub fn svc_password() -> &'static str {
    SVC_PASSWORD
}

/// `value` and a newline in a new 0600 file (writeback-identity's atomic writer).
fn write_secret(path: &Path, value: &str) -> anyhow::Result<()> {
    writeback_identity::ca::write_file(path, format!("{value}\n").as_bytes(), true)?;
    Ok(())
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(l.local_addr()?.port())
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
