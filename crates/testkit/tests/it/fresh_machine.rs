//! The install step itself, on a machine that never had anything installed by
//! hand: a container made from a clean Debian bookworm root file system
//! (`scripts/base-image.sh --clean`, debootstrap'd locally when no registry is
//! reachable) runs `scripts/install-deps.sh`, then the harness's own
//! `writeback-lab` provisions and starts a Samba AD DC in it, and `ldapsearch`
//! binds over LDAPS with the certificate the harness issued, verified; the tests'
//! Python environment (grpcio from PyPI, `scripts/python-env.sh`) imports. A
//! package missing from the script fails this test on any machine.
//!
//! apt's downloads are cached outside the checkout (`~/.cache/writeback/apt-archives`)
//! so repeated runs install from local .deb files; the packages are still
//! unpacked and configured from scratch every time.

use std::time::{Duration, Instant};

use writeback_testkit::docker::{self, Container};

const DOMAIN: &str = "fresh.test";

/// A simple bind as `dn` over verified LDAPS, then a read of `dn`'s own entry
/// (which Samba refuses to anonymous clients).
fn ldapsearch_as(c: &Container, url: &str, dn: &str, password_file: &str) -> std::process::Output {
    c.exec(&[
        "env",
        "LDAPTLS_CACERT=/lab/fresh.test/ca.pem",
        "LDAPTLS_REQCERT=demand",
        "ldapsearch",
        "-LLL",
        "-x",
        "-H",
        url,
        "-D",
        dn,
        "-y",
        password_file,
        "-b",
        dn,
        "-s",
        "base",
        "sAMAccountName",
    ])
    .unwrap()
}

#[test]
fn install_deps_on_a_clean_debian_container_then_a_samba_dc_answers_over_ldaps() {
    let image = docker::base_image(true).expect("the locally built base image");
    let scripts = docker::repo_root().join("scripts");
    let apt_cache = docker::cache_dir().join("apt-archives");
    std::fs::create_dir_all(&apt_cache).unwrap();
    let mounts = [
        format!("{}:/src/scripts:ro", scripts.display()),
        format!(
            "{}:/usr/local/bin/writeback-lab:ro",
            env!("CARGO_BIN_EXE_writeback-lab")
        ),
        format!("{}:/var/cache/apt/archives", apt_cache.display()),
    ];
    // The machine's own trust anchors (an egress proxy's CA, say) belong to the
    // machine, not the project: a fresh machine here has them, so the container
    // gets them too; Debian's ca-certificates adds them to the system store
    // when install-deps installs it.
    let local_cas = std::path::Path::new("/usr/local/share/ca-certificates");
    let mut mounts = mounts.to_vec();
    if local_cas.is_dir() {
        mounts.push(format!(
            "{}:{}:ro",
            local_cas.display(),
            local_cas.display()
        ));
    }
    // NET_ADMIN: the harness adds its DC's address to lo. SYS_ADMIN: provisioning
    // writes the sysvol's NT ACLs as security.* extended attributes.
    let mut options = vec!["--cap-add", "NET_ADMIN", "--cap-add", "SYS_ADMIN"];
    for m in &mounts {
        options.extend(["-v", m.as_str()]);
    }
    let c = Container::run(&options, &image, &["sleep", "infinity"]).unwrap();

    // A clean machine: none of what the project needs is there yet.
    for tool in [
        "samba-tool",
        "ldapwhoami",
        "pg_ctlcluster",
        "kinit",
        "chromedriver",
        "certutil",
    ] {
        let found = c
            .exec(&["sh", "-c", &format!("command -v {tool}")])
            .unwrap();
        assert!(
            !found.status.success(),
            "{tool} is already in the clean image"
        );
    }

    let started = Instant::now();
    let install = c.exec(&["bash", "/src/scripts/install-deps.sh"]).unwrap();
    assert!(
        install.status.success(),
        "scripts/install-deps.sh failed on a clean Debian:\n{}\n{}",
        writeback_testkit::tail_lines(&String::from_utf8_lossy(&install.stdout), 30),
        writeback_testkit::tail_lines(&String::from_utf8_lossy(&install.stderr), 30),
    );
    eprintln!("install-deps.sh on a clean Debian: {:?}", started.elapsed());

    // Re-running is safe and installs nothing.
    let again = c
        .exec_ok(&["bash", "/src/scripts/install-deps.sh"])
        .unwrap();
    assert!(again.contains("nothing to install"), "{again}");

    // The tests' Python gRPC client has its environment.
    c.exec_ok(&[
        "/root/.cache/writeback/venv/bin/python",
        "-c",
        "import grpc, grpc_status, grpc_tools, grpc_reflection, aiosmtpd",
    ])
    .unwrap();

    // The browser tests' tools: chromedriver drives the chromium it came with,
    // certutil fills the browser's NSS trust store (browser.rs).
    let versions = c
        .exec_ok(&[
            "sh",
            "-c",
            "chromium --version 2>/dev/null; chromedriver --version; command -v certutil",
        ])
        .unwrap();
    assert!(
        versions.contains("Chromium ") && versions.contains("ChromeDriver "),
        "{versions}"
    );

    // PostgreSQL answers on 127.0.0.1:5432 for the tests' role, without a password.
    let select = c
        .exec_ok(&[
            "psql",
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "writeback_test",
            "-d",
            "postgres",
            "-c",
            "SELECT 40 + 2",
        ])
        .unwrap();
    assert_eq!(select.trim(), "42");

    // The harness provisions and starts a DC with what the script installed.
    c.spawn(&[
        "sh",
        "-c",
        "exec writeback-lab --dir /lab --domain fresh.test >/lab.log 2>&1",
    ])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !c
        .exec(&["test", "-f", "/lab/ready"])
        .unwrap()
        .status
        .success()
    {
        let running = c.exec(&["pgrep", "-x", "writeback-lab"]).unwrap();
        if !running.status.success() || Instant::now() > deadline {
            let log = c.exec(&["cat", "/lab.log"]).unwrap();
            panic!(
                "writeback-lab did not get a DC ready ({}):\n{}",
                if running.status.success() {
                    "120 s passed"
                } else {
                    "it exited"
                },
                writeback_testkit::tail_lines(&String::from_utf8_lossy(&log.stdout), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    let dir = format!("/lab/{DOMAIN}");
    let url = c.exec_ok(&["cat", &format!("{dir}/ldaps_url")]).unwrap();
    let admin = c.exec_ok(&["cat", &format!("{dir}/admin_dn")]).unwrap();
    assert!(url.starts_with("ldaps://127.0.0."), "{url}");

    // A verified LDAPS simple bind with the harness's password succeeds…
    let ok = ldapsearch_as(&c, &url, &admin, &format!("{dir}/admin_password"));
    assert!(
        ok.status.success(),
        "LDAPS bind failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("sAMAccountName: Administrator"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // …and one with a wrong password is refused as invalid credentials (49).
    c.exec_ok(&["sh", "-c", "printf 'Wrong-Passw0rd!' >/tmp/wrong"])
        .unwrap();
    let wrong = ldapsearch_as(&c, &url, &admin, "/tmp/wrong");
    assert_eq!(wrong.status.code(), Some(49), "{wrong:?}");
}
