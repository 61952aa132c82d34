//! `scripts/stack.sh`, the README's one command, for real: `up` with a state
//! directory and ports of the test's own brings up two Samba DCs, the control
//! plane, a relay, an agent per domain, the lab's OpenID provider with its
//! demo people and the portal. The portal answers over HTTPS verified against
//! the lab's CA; the help desk's demo person signs in at glewlwyd's own login
//! page in a real browser, is offered exactly the help desk's pages and
//! resets alice, which an LDAPS bind with the new password proves; `status`
//! reports the portal; `down` stops everything and removes the state.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use writeback_testkit::docker::repo_root;

use crate::support::{curl, free_port, helpdesk_resets_in_browser, text};

/// A stack of the test's own; `down` on drop.
struct Stack {
    dir: tempfile::TempDir,
    ports: [u16; 3],
}

impl Stack {
    fn state(&self) -> PathBuf {
        self.dir.path().join("stack")
    }

    fn portal_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports[2])
    }

    fn run(&self, arg: &str) -> Output {
        Command::new("bash")
            .arg(repo_root().join("scripts/stack.sh"))
            .arg(arg)
            .env("WRITEBACK_STACK_DIR", self.state())
            // scripts/test.sh ran install-deps; run beside other tests' DCs
            // it would take them for foreign ones.
            .env("WRITEBACK_STACK_SKIP_INSTALL", "1")
            .env("WRITEBACK_STACK_CP_PORT", self.ports[0].to_string())
            .env("WRITEBACK_STACK_RELAY_PORT", self.ports[1].to_string())
            .env("WRITEBACK_STACK_PORTAL_PORT", self.ports[2].to_string())
            .output()
            .unwrap()
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.state().join(path))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The warnings and errors in a service's log.
    fn complaints(&self, service: &str) -> String {
        self.read(&format!("logs/{service}.log"))
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A demo person's password from the lab's `idp/users.txt`.
    fn idp_password(&self, who: &str) -> String {
        self.read("lab/idp/users.txt")
            .lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|f| f[0] == who)
            .map(|f| f[1].to_owned())
            .unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let out = self.run("down");
        if !out.status.success() {
            eprintln!("stack.sh down failed:\n{}", text(&out));
        }
    }
}

/// An LDAPS simple bind to `domain`'s DC as `upn` (ldapsearch of the rootDSE),
/// the password from a 0600 file.
fn binds(stack: &Stack, domain: &str, upn: &str, password: &str) -> bool {
    let file = stack.dir.path().join("bind-password");
    std::fs::write(&file, password).unwrap();
    let out = Command::new("ldapsearch")
        .env(
            "LDAPTLS_CACERT",
            stack.state().join(format!("lab/{domain}/ca.pem")),
        )
        .args(["-x", "-H", &stack.read(&format!("lab/{domain}/ldaps_url"))])
        .args(["-D", upn, "-y"])
        .arg(&file)
        .args(["-b", "", "-s", "base", "dnsHostName"])
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    out.status.success()
}

fn pem(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn stack_up_serves_the_portal_and_down_removes_it() {
    let stack = Stack {
        dir: tempfile::tempdir().unwrap(),
        ports: [free_port(), free_port(), free_port()],
    };
    let started = Instant::now();
    let up = stack.run("up");
    assert!(
        up.status.success(),
        "stack.sh up failed:\n{}",
        writeback_testkit::tail_lines(&text(&up), 60)
    );
    eprintln!("stack.sh up: {:?}", started.elapsed());
    let printed = text(&up);
    assert!(
        printed.contains(&format!("The portal: {}", stack.portal_url())),
        "{printed}"
    );
    for who in ["alice", "helpdesk", "itadmin"] {
        assert!(printed.contains(&format!("  {who} ")), "{printed}");
    }

    // The portal over HTTPS, verified against the lab's CA: sign-in first.
    let portal_ca = stack.state().join("lab/portal/ca.pem");
    let me = curl(&portal_ca, &format!("{}/me", stack.portal_url()));
    assert_eq!(
        me,
        format!("303 {}/signin?next=%2Fme&strong=0", stack.portal_url())
    );

    // The help desk signs in at the lab's glewlwyd in a real browser, sees
    // its pages and resets alice.
    let new = "Stack-Portal-Reset-8r!";
    let diag = || {
        format!(
            "portal:\n{}\ncontrol plane:\n{}",
            writeback_testkit::tail_lines(&stack.read("logs/portal.log"), 10),
            stack.complaints("control-plane")
        )
    };
    helpdesk_resets_in_browser(
        &stack.portal_url(),
        &[pem(&portal_ca), pem(&stack.state().join("lab/idp/ca.pem"))],
        &stack.idp_password("helpdesk"),
        "alice@contoso.test",
        new,
        &diag,
    )
    .await;
    assert!(binds(&stack, "contoso.test", "alice@contoso.test", new));
    assert!(!binds(
        &stack,
        "contoso.test",
        "alice@contoso.test",
        "Not-Her-Passw0rd!"
    ));

    let status = text(&stack.run("status"));
    assert!(
        status.contains(&format!("portal: {} answers", stack.portal_url())),
        "{status}"
    );

    // down: nothing left listening, the state removed.
    let portal_ca_copy = stack.dir.path().join("portal-ca.pem");
    std::fs::copy(&portal_ca, &portal_ca_copy).unwrap();
    let down = stack.run("down");
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("stopped portal"), "{}", text(&down));
    assert!(!stack.state().exists());
    assert_eq!(
        curl(&portal_ca_copy, &format!("{}/me", stack.portal_url())),
        "000 ",
        "the portal still answers after down"
    );
}
