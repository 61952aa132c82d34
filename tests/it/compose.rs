//! The docker-compose evaluation, for real: `scripts/compose.sh up` builds the
//! images and brings the whole project up from scratch (a project name, port,
//! secrets and state of the test's own), the seed's validation scenarios run
//! through the containers with `writebackctl` against the published control
//! plane, each outcome is proven inside the containerized directory (an LDAPS
//! bind with the new password succeeds and with the old one fails, attributes
//! read back from the DC), the network isolation is checked from inside the
//! containers, a DC restart keeps its domain, the portal answers on its
//! published port and sends the browser to the `idp` service's issuer
//! (`https://idp.localhost:<port>`), the help desk's demo person signs in
//! there in a real browser and resets alice through the portal (proven by an
//! LDAPS bind), no secret shows in the services' logs, and
//! `scripts/compose.sh down` removes everything. A second test runs the
//! PostgreSQL profile.
//!
//! Both tests share one nextest group of one thread (.config/nextest.toml):
//! two projects at once would only compete for the machine's two cores.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use writeback_core::ReasonCode;
use writeback_testkit::docker;

use crate::support::{curl, free_port, helpdesk_resets_in_browser, text};

const FORESTS: [(&str, &str); 2] = [("contoso", "contoso.test"), ("fabrikam", "fabrikam.test")];

/// One compose project of the test's own; `down` on drop.
struct Project {
    name: String,
    port: u16,
    portal_port: u16,
    idp_port: u16,
    secrets: tempfile::TempDir,
    state: tempfile::TempDir,
    tokens: tempfile::TempDir,
}

impl Project {
    /// `scripts/compose.sh up [--postgres]` for a new project.
    fn up(postgres: bool) -> Project {
        let p = Project {
            name: format!("wbit{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            port: free_port(),
            portal_port: free_port(),
            idp_port: free_port(),
            secrets: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
            tokens: tempfile::tempdir().unwrap(),
        };
        let started = Instant::now();
        let mut args = vec!["up"];
        if postgres {
            args.push("--postgres");
        }
        let out = p.script(&args);
        assert!(
            out.status.success(),
            "scripts/compose.sh up failed:\n{}",
            writeback_testkit::tail_lines(&text(&out), 80)
        );
        eprintln!(
            "compose up ({}): {:?}",
            if postgres { "PostgreSQL" } else { "SQLite" },
            started.elapsed()
        );
        p
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(docker::repo_root().join("scripts/compose.sh"))
            .args(args)
            .env("WRITEBACK_COMPOSE_PROJECT", &self.name)
            .env("WRITEBACK_CP_PORT", self.port.to_string())
            .env("WRITEBACK_PORTAL_PORT", self.portal_port.to_string())
            .env("WRITEBACK_IDP_PORT", self.idp_port.to_string())
            .env("WRITEBACK_SECRETS_DIR", self.secrets.path())
            .env("WRITEBACK_COMPOSE_STATE", self.state.path())
            .env(
                "WRITEBACK_CARGO_PROFILE",
                std::env::var("WRITEBACK_CARGO_PROFILE").unwrap_or_else(|_| "dev".into()),
            )
            .stdin(Stdio::null())
            .output()
            .expect("bash")
    }

    fn container(&self, service: &str) -> String {
        let out = self.script(&["ps", "-q", service]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(!id.is_empty(), "no container for {service}: {}", text(&out));
        id
    }

    fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.secrets.path().join(name)).unwrap()
    }

    /// `writebackctl` (the real CLI, in-process) against the published control
    /// plane with `token`'s file, `input` on its stdin.
    async fn ctl(&self, token: &str, args: &[&str], input: &str) -> Result<String, ReasonCode> {
        let url = format!("https://127.0.0.1:{}", self.port);
        let ca = self.state.path().join("ca.pem");
        let token_file = if token == "admin" {
            self.state.path().join("admin.token")
        } else {
            self.tokens.path().join(token)
        };
        let mut argv = vec![
            "writebackctl".to_owned(),
            "--control-plane".into(),
            url,
            "--ca-file".into(),
            ca.display().to_string(),
            "--token-file".into(),
            token_file.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let cli = writeback_cli::Cli::try_parse_from(argv).unwrap();
        let mut out = Vec::new();
        match writeback_cli::run(cli, &mut input.as_bytes(), &mut out).await {
            Ok(()) => Ok(String::from_utf8_lossy(&out).into_owned()),
            Err(e) => Err(e
                .reason()
                .unwrap_or_else(|| panic!("writebackctl {args:?}: {e}"))),
        }
    }

    /// A token for `principal` (role, client app) in a file named `name`.
    async fn token(&self, name: &str, principal: &str, role: &str, app: &str) {
        let out: PathBuf = self.tokens.path().join(name);
        let out = out.display().to_string();
        self.ctl(
            "admin",
            &[
                "token",
                "create",
                "--principal",
                principal,
                "--role",
                role,
                "--client-app",
                app,
                "--out",
                &out,
            ],
            "",
        )
        .await
        .unwrap();
    }

    /// A token for carol, the forest's password administrator on the portal;
    /// returns its name.
    async fn password_admin(&self, forest: &str) -> String {
        let name = format!("carol-{forest}");
        let principal = format!("carol@{}", domain_of(forest));
        self.token(&name, &principal, "password_admin", "portal")
            .await;
        name
    }

    /// An LDAPS simple bind as `user` inside the forest's DC container,
    /// certificate verified; the password goes through stdin to a 0600 file.
    fn binds(&self, forest: &str, user: &str, password: &str) -> bool {
        let domain = domain_of(forest);
        let script = format!(
            "umask 077; f=$(mktemp); cat >\"$f\"; \
             LDAPTLS_CACERT=/var/lib/samba/tls/ca.pem LDAPTLS_REQCERT=demand \
             ldapsearch -LLL -x -o nettimeout=10 -H ldaps://dc-{forest} -D {user}@{domain} -y \"$f\" \
             -b '' -s base dnsHostName >/dev/null 2>\"$f.err\"; rc=$?; \
             cat \"$f.err\" >&2; rm -f \"$f\" \"$f.err\"; exit $rc"
        );
        let dc = self.container(&format!("dc-{forest}"));
        let out = docker::output_with_input(
            "docker",
            &["exec", "-i", &dc, "bash", "-c", &script],
            password.as_bytes(),
        )
        .unwrap();
        match out.status.code() {
            Some(0) => true,
            Some(49) => false,
            _ => panic!("ldapsearch as {user}@{domain}: {}", text(&out)),
        }
    }

    /// An integer attribute of `user` read in the DC's own database (0 when
    /// absent, as AD reads a missing lockoutTime).
    fn attr(&self, forest: &str, user: &str, name: &str) -> i64 {
        self.attr_text(forest, user, name)
            .map_or(0, |v| v.parse().unwrap())
    }

    /// An attribute of `user` read in the DC's own database.
    fn attr_text(&self, forest: &str, user: &str, name: &str) -> Option<String> {
        let dc = self.container(&format!("dc-{forest}"));
        let out = docker::run(
            "docker",
            &[
                "exec",
                &dc,
                "samba-tool",
                "user",
                "show",
                user,
                &format!("--attributes={name}"),
                "-s",
                "/var/lib/samba/etc/smb.conf",
            ],
        )
        .unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim().to_owned())
    }

    /// What connecting from `service`'s container to `host:port` gives:
    /// "open", "refused" (reachable, nothing listens) or "unreachable".
    fn connect_from(&self, service: &str, host: &str, port: u16) -> &'static str {
        let id = self.container(service);
        let probe = format!(
            "timeout 3 bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/tmp/probe.err; rc=$?; \
             if [ $rc -eq 0 ]; then echo open; \
             elif grep -q 'Connection refused' /tmp/probe.err; then echo refused; \
             else echo unreachable; fi"
        );
        let out = docker::run("docker", &["exec", &id, "bash", "-c", &probe]).unwrap();
        match out.trim() {
            "open" => "open",
            "refused" => "refused",
            _ => "unreachable",
        }
    }

    /// The container's address on the project's network `network`.
    fn address(&self, service: &str, network: &str) -> String {
        let id = self.container(service);
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}_{network}\").IPAddress}}}}",
            self.name
        );
        docker::run("docker", &["inspect", "-f", &format, &id])
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `restart service`, then wait until its health check passes again.
    fn restart(&self, service: &str, within: Duration) {
        let out = self.script(&["restart", service]);
        assert!(out.status.success(), "{}", text(&out));
        let deadline = Instant::now() + within;
        while !self.healthy(service) {
            assert!(
                Instant::now() < deadline,
                "{service} is not healthy {within:?} after restart"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn healthy(&self, service: &str) -> bool {
        let id = self.container(service);
        docker::run(
            "docker",
            &["inspect", "-f", "{{.State.Health.Status}}", &id],
        )
        .map(|s| s.trim() == "healthy")
        .unwrap_or(false)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let out = self.script(&["down"]);
        if !out.status.success() {
            eprintln!("scripts/compose.sh down: {}", text(&out));
        }
    }
}

fn domain_of(forest: &str) -> &'static str {
    FORESTS
        .iter()
        .find(|(f, _)| *f == forest)
        .map(|(_, d)| *d)
        .unwrap()
}

/// The seed's scenarios in one forest, each proven in its DC.
async fn scenarios(p: &Project, forest: &str) {
    let domain = domain_of(forest);
    let alice = format!("alice@{domain}");
    let bob = format!("bob@{domain}");
    let demo = p.secret("demo-password");
    p.token(&format!("alice-{forest}"), &alice, "user", "portal")
        .await;
    p.token(&format!("alice-graph-{forest}"), &alice, "user", "graph")
        .await;
    p.token(&format!("bob-{forest}"), &bob, "user", "portal")
        .await;
    let carol_t = p.password_admin(forest).await;
    let (alice_t, graph_t, bob_t) = (
        format!("alice-{forest}"),
        format!("alice-graph-{forest}"),
        format!("bob-{forest}"),
    );
    assert!(
        p.binds(forest, "alice", &demo),
        "alice starts with the demo password"
    );

    // SSPR reset needs a strong sign-in through the identity provider
    // (the portal's sign-in at the idp service; tests/it/oidc.rs proves it
    // with real tokens): a wbt1 token is none, and nothing is written.
    let sspr = format!("Sspr-{forest}-Passw0rd!1");
    let err = p
        .ctl(&alice_t, &["password", "reset", "--user", &alice], &sspr)
        .await
        .unwrap_err();
    assert_eq!(err, ReasonCode::StrongAuthenticationRequired);
    assert!(p.binds(forest, "alice", &demo));
    assert!(!p.binds(forest, "alice", &sspr));

    // Administrator reset from the portal, with "must change at next logon".
    let temp = format!("Temp-{forest}-Passw0rd!2");
    p.ctl(
        &carol_t,
        &["password", "reset", "--user", &alice, "--must-change"],
        &temp,
    )
    .await
    .expect("administrator reset");
    assert_eq!(p.attr(forest, "alice", "pwdLastSet"), 0, "must change");

    // The forced change of that password, then a regular change.
    let forced = format!("Forced-{forest}-Passw0rd!3");
    p.ctl(
        &alice_t,
        &["password", "change", "--user", &alice, "--forced"],
        &format!("{temp}\n{forced}\n"),
    )
    .await
    .expect("forced change");
    assert_ne!(p.attr(forest, "alice", "pwdLastSet"), 0);
    assert!(p.binds(forest, "alice", &forced));
    assert!(!p.binds(forest, "alice", &temp));
    let regular = format!("Regular-{forest}-Passw0rd!4");
    p.ctl(
        &alice_t,
        &["password", "change", "--user", &alice],
        &format!("{forced}\n{regular}\n"),
    )
    .await
    .expect("regular change");
    assert!(p.binds(forest, "alice", &regular));
    assert!(!p.binds(forest, "alice", &forced));

    // An administrator reset of another user.
    let bobs = format!("Bob-{forest}-Passw0rd!5");
    p.ctl(&carol_t, &["password", "reset", "--user", &bob], &bobs)
        .await
        .expect("administrator reset of bob");
    assert!(p.binds(forest, "bob", &bobs));
    assert!(!p.binds(forest, "bob", &demo));

    // An unlock by the help desk (a self-service one needs the identity
    // provider's strong sign-in, like a self-service reset): the DC locks
    // bob out after 5 bad passwords.
    for _ in 0..6 {
        assert!(!p.binds(forest, "bob", "Wrong-Passw0rd!0"));
    }
    assert_ne!(p.attr(forest, "bob", "lockoutTime"), 0, "bob is locked out");
    assert!(!p.binds(forest, "bob", &bobs), "locked out");
    let err = p
        .ctl(&bob_t, &["account", "unlock", "--user", &bob], "")
        .await
        .unwrap_err();
    assert_eq!(err, ReasonCode::StrongAuthenticationRequired);
    assert_ne!(p.attr(forest, "bob", "lockoutTime"), 0, "still locked out");
    p.ctl(&carol_t, &["account", "unlock", "--user", &bob], "")
        .await
        .expect("help desk unlock");
    assert_eq!(p.attr(forest, "bob", "lockoutTime"), 0);
    assert!(p.binds(forest, "bob", &bobs));

    // Unsupported: an end user resetting their own password through the
    // Graph-like API is refused, and the directory is unchanged.
    let refused = format!("Graph-{forest}-Passw0rd!6");
    let err = p
        .ctl(&graph_t, &["password", "reset", "--user", &alice], &refused)
        .await
        .unwrap_err();
    assert_eq!(err, ReasonCode::UnsupportedOperation);
    assert!(p.binds(forest, "alice", &regular));
    assert!(!p.binds(forest, "alice", &refused));
}

/// Agents reach their DC and the relay only; nothing reaches an agent; the
/// forests cannot reach each other; no agent port is published.
fn network_isolation(p: &Project) {
    for (forest, _) in FORESTS {
        let agent = format!("agent-{forest}");
        let other = if forest == "contoso" {
            "fabrikam"
        } else {
            "contoso"
        };
        assert_eq!(p.connect_from(&agent, &format!("dc-{forest}"), 636), "open");
        assert_eq!(
            p.connect_from(&agent, "relay", 7443),
            "open",
            "relay via egress"
        );
        // The cloud side and the other forest are out of reach, by address too.
        let cp = p.address("control-plane", "cloud");
        assert_eq!(
            p.connect_from(&agent, &cp, 8443),
            "unreachable",
            "{agent} → control plane"
        );
        let other_dc = p.address(&format!("dc-{other}"), other);
        assert_eq!(
            p.connect_from(&agent, &other_dc, 636),
            "unreachable",
            "{agent} → dc-{other}"
        );
        assert_eq!(
            p.connect_from(&format!("dc-{forest}"), &other_dc, 636),
            "unreachable",
            "dc-{forest} → dc-{other}"
        );
        // Nothing on the cloud side can open a connection to the agent.
        let agent_ip = p.address(&agent, forest);
        for from in ["relay", "control-plane"] {
            assert_eq!(
                p.connect_from(from, &agent_ip, 443),
                "unreachable",
                "{from} → {agent}"
            );
        }
        let ports = docker::run("docker", &["port", &p.container(&agent)]).unwrap();
        assert!(ports.trim().is_empty(), "{agent} publishes {ports}");
    }
}

/// The portal and its OpenID provider: the portal answers on its published
/// port over HTTPS verified against the portal's CA and sends the browser to
/// the provider under the issuer every container uses, which the host reaches
/// too; the help desk signs in there in a real browser and resets alice
/// (whose password is `alices_password`); no secret is in any service's log.
async fn portal(p: &Project, alices_password: &str) {
    let portal_url = format!("https://127.0.0.1:{}", p.portal_port);
    let portal_ca = p.state.path().join("portal-ca.pem");
    let idp_ca = p.state.path().join("idp-ca.pem");
    assert_eq!(
        curl(&portal_ca, &format!("{portal_url}/me")),
        format!("303 {portal_url}/signin?next=%2Fme&strong=0")
    );
    let to_idp = curl(
        &portal_ca,
        &format!("{portal_url}/signin?next=%2Fme&strong=0"),
    );
    let issuer = format!("https://idp.localhost:{}/api/oidc", p.idp_port);
    let auth = to_idp
        .strip_prefix(&format!("303 {issuer}/auth?"))
        .unwrap_or_else(|| panic!("the portal sends the browser to {issuer}: {to_idp}"));
    assert!(
        auth.contains("client_id=writeback-portal") && auth.contains("code_challenge_method=S256"),
        "{auth}"
    );
    let login = curl(&idp_ca, &format!("{issuer}/auth?{auth}"));
    assert!(
        login.starts_with(&format!(
            "302 https://idp.localhost:{}/login.html?",
            p.idp_port
        )),
        "the host reaches the provider at its issuer URL: {login}"
    );

    let new = "Compose-Portal-Reset-8r!";
    let diag = || {
        let out = p.script(&[
            "logs",
            "--no-color",
            "--tail",
            "15",
            "portal",
            "idp",
            "control-plane",
        ]);
        text(&out)
    };
    helpdesk_resets_in_browser(
        &portal_url,
        &[
            std::fs::read_to_string(&portal_ca).unwrap(),
            std::fs::read_to_string(&idp_ca).unwrap(),
        ],
        &p.secret("idp-password"),
        "alice@contoso.test",
        new,
        &diag,
    )
    .await;
    assert!(p.binds("contoso", "alice", new));
    assert!(!p.binds("contoso", "alice", alices_password));
    assert_ne!(
        p.attr("contoso", "alice", "pwdLastSet"),
        0,
        "\"must change\" was unticked"
    );

    // A restart of the provider keeps its certificate and signing key: the
    // portal, which read them at start, keeps trusting it.
    let jwks = || {
        let out = Command::new("curl")
            .args(["-fsS", "--cacert"])
            .arg(&idp_ca)
            .arg(format!("{issuer}/jwks"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let before = jwks();
    assert!(before.contains("\"kid\""), "{before}");
    p.restart("idp", Duration::from_secs(60));
    assert_eq!(jwks(), before, "the same signing key after a restart");

    let logs = text(&p.script(&["logs", "--no-color"]));
    assert!(
        logs.contains("the portal's client is registered"),
        "setup-idp ran"
    );
    for secret in ["idp-password", "portal-client-secret", "demo-password"] {
        assert!(!logs.contains(&p.secret(secret)), "{secret} in the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_up_scenarios_in_both_forests_isolation_restart_and_down() {
    writeback_identity::install_crypto_provider();
    let p = Project::up(false);
    let agents = p.ctl("admin", &["agent", "list"], "").await.unwrap();
    assert_eq!(agents.matches("online").count(), 2, "{agents}");

    for (forest, _) in FORESTS {
        scenarios(&p, forest).await;
    }
    network_isolation(&p);

    // A DC restart keeps its domain: same domain SID, the new password.
    let sid = |p: &Project| {
        p.attr_text("contoso", "Administrator", "objectSid")
            .unwrap()
    };
    let before = sid(&p);
    p.restart("dc-contoso", Duration::from_secs(120));
    assert_eq!(sid(&p), before, "the same domain after restart");
    assert!(p.binds("contoso", "alice", "Regular-contoso-Passw0rd!4"));
    // And writeback still reaches it.
    let after = "After-restart-Passw0rd!7";
    p.ctl(
        "carol-contoso",
        &["password", "reset", "--user", "alice@contoso.test"],
        after,
    )
    .await
    .expect("reset after the DC restart");
    assert!(p.binds("contoso", "alice", after));

    portal(&p, after).await;

    let name = p.name.clone();
    drop(p);
    let left = docker::run(
        "docker",
        &[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={name}"),
        ],
    )
    .unwrap();
    assert!(left.trim().is_empty(), "containers left after down: {left}");
    let volumes = docker::run(
        "docker",
        &[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={name}"),
        ],
    )
    .unwrap();
    assert!(
        volumes.trim().is_empty(),
        "volumes left after down: {volumes}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_postgres_profile_writes_back_in_both_forests() {
    writeback_identity::install_crypto_provider();
    let p = Project::up(true);
    // The control plane really runs on PostgreSQL: its operations are rows there.
    for (forest, domain) in FORESTS {
        let user = format!("bob@{domain}");
        let carol = p.password_admin(forest).await;
        let new = format!("Pg-{forest}-Passw0rd!1");
        p.ctl(&carol, &["password", "reset", "--user", &user], &new)
            .await
            .expect("reset");
        assert!(p.binds(forest, "bob", &new));
        assert!(!p.binds(forest, "bob", &p.secret("demo-password")));
    }
    let pg = p.container("postgres");
    let count = docker::run(
        "docker",
        &[
            "exec",
            &pg,
            "sh",
            "-c",
            "PGPASSWORD=\"$(cat /run/secrets/postgres-password)\" exec psql -X -At -h 127.0.0.1 \
             -U writeback -d writeback -c 'SELECT count(*) FROM operations'",
        ],
    );
    let count = count.expect("read the operations table in the postgres container");
    assert!(count.trim().parse::<i64>().unwrap() >= 2, "{count}");
}
