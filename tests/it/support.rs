//! Helpers the script-driven tests (compose, stack) share.

use std::path::Path;
use std::process::{Command, Output};

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A finished command's stdout and stderr, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `curl` of `url` trusting only `ca`: "<status> <redirect>" (`000 ` when
/// nothing answers).
pub fn curl(ca: &Path, url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The help desk's demo person signs in at glewlwyd's own login page in a
/// real browser (trusting only `cas`: the portal's and the provider's),
/// lands on the help desk page for `user`, is offered exactly the help desk's
/// pages and resets `user` to `new`, unticking "must change at next
/// sign-in" (ticked by default) so that a bind with `new` can prove it; the
/// portal answers `OK`. `diag` says what the services logged when a step fails.
pub async fn helpdesk_resets_in_browser(
    portal_url: &str,
    cas: &[String],
    password: &str,
    user: &str,
    new: &str,
    diag: &dyn Fn() -> String,
) {
    use writeback_testkit::browser::{Browser, Viewport, sign_in_at_glewlwyd_by_password};
    const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

    let browser = Browser::start(cas).await.unwrap();
    let s = browser.session(Viewport::Desktop).await.unwrap();
    s.goto(&format!("{portal_url}/helpdesk?user={user}"))
        .await
        .unwrap();
    sign_in_at_glewlwyd_by_password(&s, "helpdesk", password, portal_url)
        .await
        .unwrap_or_else(|e| panic!("sign-in at the provider: {e}\n{}", diag()));
    s.wait_for("#hd-new", WAIT)
        .await
        .unwrap_or_else(|e| panic!("the help desk page: {e}\n{}", diag()));
    let page = s.source().await.unwrap();
    assert!(page.contains("helpdesk@"), "{page}");
    let nav = s
        .execute(
            "return Array.from(document.querySelectorAll('header nav a')).map(a => a.getAttribute('href'));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        nav,
        serde_json::json!(["/me", "/helpdesk", "/admin/audit"]),
        "{}",
        diag()
    );
    s.fill("#hd-new", new).await.unwrap();
    s.click("input[name=must_change]").await.unwrap(); // untick
    s.click("form[action='/helpdesk/reset'] button")
        .await
        .unwrap();
    s.wait_for("div.outcome", WAIT).await.unwrap();
    let reason = s
        .execute(
            "return document.querySelector('div.outcome').getAttribute('data-reason');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(reason, "OK", "{}\n{}", s.text().await.unwrap(), diag());
}
