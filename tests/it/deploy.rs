//! docker-compose.yml and deploy/ stay in step with the code: the compose
//! file validates, every file it names exists, its ports match the example
//! configs, and the example configs load with the services' own config types
//! (which refuse unknown keys).

use std::path::{Path, PathBuf};
use std::process::Command;

use writeback_agent::config::AgentConfig;
use writeback_control_plane::ControlPlaneConfig;
use writeback_relay::RelayConfig;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn compose_file_validates_with_docker_compose() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .output()
        .expect("docker-compose must be installed (scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let services = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "--services"])
        .current_dir(root())
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8(services.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "agent-contoso",
            "agent-fabrikam",
            "control-plane",
            "control-plane-init",
            "dc-contoso",
            "dc-fabrikam",
            "egress-contoso",
            "egress-fabrikam",
            "idp",
            "portal",
            "postgres",
            "relay",
            "setup",
            "setup-contoso",
            "setup-fabrikam",
            "setup-idp",
        ]
    );
}

#[test]
fn every_file_the_compose_file_names_exists() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut checked = 0;
    for token in text.split(|c: char| {
        c.is_whitespace() || c == '"' || c == '\'' || c == ',' || c == '[' || c == ']'
    }) {
        let path = token.split(':').next().unwrap_or("");
        let path = path.trim_start_matches("./");
        if !(path.starts_with("deploy/")) || path.starts_with("deploy/secrets/") {
            continue;
        }
        assert!(
            root().join(path).exists(),
            "docker-compose.yml names {path}, which does not exist"
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "expected several deploy/ paths, found {checked}"
    );
    // Every COPY source of the Dockerfiles exists too (the main Dockerfile's
    // binaries are staged by scripts/compose.sh; its other sources are files).
    for image in ["samba", "postgres", "egress"] {
        let dir = root().join("deploy/docker").join(image);
        let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        for line in text.lines().filter(|l| l.starts_with("COPY ")) {
            let src = line.split_whitespace().nth(1).unwrap();
            assert!(dir.join(src).exists(), "deploy/docker/{image}: {src}");
        }
    }
    let main = std::fs::read_to_string(root().join("deploy/docker/Dockerfile")).unwrap();
    let mut staged = 0;
    for line in main.lines().filter(|l| l.starts_with("COPY ")) {
        for src in line
            .split_whitespace()
            .skip(1)
            .filter(|w| !w.starts_with('/'))
        {
            if src.starts_with(".local/docker/bin/") {
                staged += 1;
            } else {
                assert!(root().join(src).exists(), "{src}");
            }
        }
    }
    assert!(staged >= 6, "the runtime images copy the staged binaries");
    let compose_sh = std::fs::read_to_string(root().join("scripts/compose.sh")).unwrap();
    for bin in [
        "writeback-control-plane",
        "writeback-relay",
        "writeback-agent",
        "writebackctl",
        "writeback-portal",
        "writeback-lab",
    ] {
        assert!(main.contains(&format!(".local/docker/bin/{bin}")), "{bin}");
        assert!(compose_sh.contains(bin), "scripts/compose.sh stages {bin}");
    }
}

fn load<T: serde::de::DeserializeOwned + serde::Serialize + Default>(
    file: &str,
    prefix: &str,
) -> T {
    writeback_core::config::load(Some(&root().join(file)), prefix)
        .unwrap_or_else(|e| panic!("{file} does not load: {e}"))
}

#[test]
fn example_configs_load_and_match_the_compose_ports() {
    let cp: ControlPlaneConfig = load("deploy/config/control-plane.toml", "WRITEBACK_TEST_UNUSED_");
    let relay: RelayConfig = load("deploy/config/relay.toml", "WRITEBACK_TEST_UNUSED_");
    let agent: AgentConfig = load("deploy/config/agent.toml", "WRITEBACK_TEST_UNUSED_");
    let portal: writeback_portal::PortalConfig =
        load("deploy/config/portal.toml", "WRITEBACK_TEST_UNUSED_");
    assert!(
        portal
            .control_plane_url
            .ends_with(&format!(":{}", cp.listen.port()))
    );
    assert!(!portal.oidc.issuer.is_empty());
    // The compose file's portal: the same control plane port, the idp
    // service's issuer on the port it publishes, its audience and step-up
    // scope (the testkit's provider's).
    let compose_portal: writeback_portal::PortalConfig = load(
        "deploy/config/portal-compose.toml",
        "WRITEBACK_TEST_UNUSED_",
    );
    assert_eq!(
        compose_portal.control_plane_url,
        format!("https://control-plane:{}", cp.listen.port())
    );
    assert_eq!(
        compose_portal.oidc.issuer,
        "https://idp.localhost:8445/api/oidc"
    );
    assert_eq!(
        compose_portal.oidc.scopes,
        [writeback_testkit::oidc::AUDIENCE]
    );
    assert_eq!(
        compose_portal.oidc.strong_scopes,
        [writeback_testkit::oidc::MFA_SCOPE]
    );
    assert!(!agent.directory.urls.is_empty());
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let cp_port = cp.listen.port();
    let relay_port = relay.listen.port();
    assert!(
        compose.contains(&format!(
            "\"127.0.0.1:${{WRITEBACK_CP_PORT:-{cp_port}}}:{cp_port}\""
        )),
        "compose publishes the control plane's port {cp_port} on loopback"
    );
    assert!(
        cp.relay_urls
            .iter()
            .any(|u| u == &format!("https://relay:{relay_port}")),
        "the control plane dials the relay's port"
    );
    let egress = std::fs::read_to_string(root().join("deploy/docker/egress/Dockerfile")).unwrap();
    assert!(
        egress.contains(&format!("UPSTREAM=relay-upstream:{relay_port}"))
            && egress.contains(&format!("LISTEN_PORT={relay_port}")),
        "the egress gateways forward the relay's port {relay_port}"
    );
    for published in [
        "\"127.0.0.1:${WRITEBACK_PORTAL_PORT:-8444}:8444\"",
        "\"127.0.0.1:${WRITEBACK_IDP_PORT:-8445}:${WRITEBACK_IDP_PORT:-8445}\"",
        "WRITEBACK_PORTAL_OIDC__ISSUER: https://idp.localhost:${WRITEBACK_IDP_PORT:-8445}/api/oidc",
        "aliases: [idp.localhost]",
    ] {
        assert!(
            compose.contains(published),
            "docker-compose.yml: {published}"
        );
    }
    assert!(
        cp.tls_dns_names.iter().any(|n| n == "control-plane"),
        "the API certificate names the compose service"
    );
}

/// Every service has a systemd unit, and every unit carries the hardening
/// the security review asked for (no core dumps, no new privileges, a
/// read-only system, no capabilities, a system-call filter). The filter must
/// leave `setrlimit`/`prctl` allowed: each binary turns its own core dumps
/// off at start, and a denied call would kill it.
#[test]
fn every_service_has_a_hardened_systemd_unit() {
    let dir = root().join("deploy/systemd");
    for service in ["control-plane", "relay", "agent", "portal"] {
        let path = dir.join(format!("writeback-{service}.service"));
        let unit =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            unit.contains(&format!("ExecStart=/usr/local/bin/writeback-{service} ")),
            "{}",
            path.display()
        );
        for directive in [
            "User=writeback",
            "NoNewPrivileges=yes",
            "LimitCORE=0",
            "UMask=0077",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "CapabilityBoundingSet=\n",
            "MemoryDenyWriteExecute=yes",
            "RestrictNamespaces=yes",
            "SystemCallFilter=@system-service",
        ] {
            assert!(
                unit.contains(directive),
                "{} lacks {directive:?}",
                path.display()
            );
        }
        assert!(!unit.contains("@resources"), "setrlimit must stay allowed");
    }
}

/// Every `writebackctl idp issuer add` the README shows, joined across its
/// continuation lines, split into arguments.
fn readme_issuer_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in readme.lines() {
        // Commands, not prose that names one.
        let line = line.trim();
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .iter()
        .filter(|l| l.starts_with("writebackctl idp issuer add"))
        .map(|l| {
            // Comments and the synopsis's optional parts are not arguments.
            let l = l.split("   #").next().unwrap_or(l.as_str());
            let mut depth = 0;
            let required: String = l
                .chars()
                .filter(|c| {
                    match c {
                        '[' => depth += 1,
                        ']' => depth -= 1,
                        _ => return depth == 0,
                    }
                    false
                })
                .collect();
            required.split_whitespace().map(str::to_owned).collect()
        })
        .collect()
}

/// Issue 25: the safe setting is the default in the lab and the README's
/// examples. Every issuer they trust names a strong-sign-in method (an
/// issuer without one allows no self-service reset or unlock), takes the
/// principal from a claim the user cannot edit, and binds people by an
/// immutable subject claim; each README example parses with writebackctl
/// itself. `scripts/stack.sh` and docker compose's `setup-idp` both trust
/// the lab's provider through `deploy/docker/setup.sh idp`.
#[test]
fn the_lab_and_the_readme_trust_issuers_with_a_strong_sign_in_method() {
    use clap::Parser as _;
    let commands = readme_issuer_commands();
    assert!(commands.len() >= 3, "{commands:?}");
    for args in &commands {
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        assert!(
            ["--strong-amr", "--strong-acr", "--strong-scope"]
                .iter()
                .any(|f| value(f).is_some_and(|v| !v.starts_with('-'))),
            "no strong-sign-in method: {args:?}"
        );
        let principal = value("--principal-claim").unwrap_or_default();
        assert!(
            principal == "upn",
            "principal claim {principal:?}: {args:?}"
        );
        let subject = value("--subject-claim").unwrap_or_else(|| "sub".into());
        assert!(
            ["sub", "oid", "uid"].contains(&subject.as_str()),
            "subject claim {subject:?}: {args:?}"
        );
        let argv = std::iter::once("writebackctl".to_owned()).chain(args[1..].iter().cloned());
        writeback_cli::Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("the README's {args:?} does not parse: {e}"));
    }

    let setup = std::fs::read_to_string(root().join("deploy/docker/setup.sh")).unwrap();
    let add = setup
        .split("ctl idp issuer add")
        .nth(1)
        .and_then(|rest| rest.split(">/dev/null").next())
        .expect("setup.sh trusts the lab's provider");
    assert!(
        add.contains("--strong-scope \"$(cat \"$d/strong_scope\")\""),
        "{add}"
    );
    assert!(add.contains("--principal-claim upn"), "{add}");
    assert!(
        !add.contains("--subject-claim") || add.contains("--subject-claim sub"),
        "{add}"
    );
    let stack = std::fs::read_to_string(root().join("scripts/stack.sh")).unwrap();
    assert!(stack.contains("deploy/docker/setup.sh idp"), "stack.sh");
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    assert!(
        compose.contains("command: [\"idp\"]"),
        "compose's setup-idp"
    );
}
