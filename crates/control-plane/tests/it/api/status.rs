//! `status` / `writebackctl status`: per domain, whether the agent set-up
//! is complete (the tutorial's "verify the cloud sync agent set-up is
//! complete"), with every problem in plain words.

use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{self, FakeAgent, Options, TestCp, WAIT};

fn report(version: &str, permissions_ok: bool, dc_ok: bool, warnings: &[&str]) -> pb::HealthReport {
    pb::HealthReport {
        probe_id: String::new(),
        agent_version: version.into(),
        domain_controllers: vec![pb::DcStatus {
            url: "ldaps://dc1.contoso.test:636".into(),
            reachable: dc_ok,
            reason_code: if dc_ok {
                String::new()
            } else {
                "TLS_FAILURE".into()
            },
        }],
        permissions_ok,
        policy_warnings: warnings.iter().map(|w| (*w).to_owned()).collect(),
        clock_offset_ms: Some(-120),
        max_clock_offset_ms: 10_000,
        certificate_not_after: None,
    }
}

async fn domain_status(t: &TestCp, domain: &str, online: u32) -> pb::DomainStatus {
    let admin = t.admin();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = admin
            .settings()
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let d = s
            .domains
            .into_iter()
            .find(|d| d.domain == domain)
            .unwrap_or_else(|| panic!("no status for {domain}"));
        if d.agents_online == online {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{domain} never had {online} agents online: {d:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A reason code such as `TLS_FAILURE` is not plain words.
fn assert_plain_words(lines: &[String]) {
    for line in lines {
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let code_like = word.len() > 3
                && word.contains('_')
                && word.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            assert!(!code_like, "{line:?} is not plain words ({word})");
        }
    }
}

fn mentions(lines: &[String], what: &str) -> bool {
    lines.iter().any(|l| l.contains(what))
}

async fn status_says_per_domain_whether_the_agent_setup_is_complete(db: &TestDb) {
    let t = TestCp::start(
        db,
        Options {
            min_agent_version: "0.2.0".into(),
            // Every step below changes what the agents report and looks at
            // it at once; the health cache has its own test.
            status_health_ttl_seconds: 0,
            ..Options::default()
        },
    )
    .await;
    let admin = t.admin();
    admin.add_domain("contoso.test").await;
    admin.add_domain("fabrikam.test").await;

    let d = domain_status(&t, "fabrikam.test", 0).await;
    assert!(!d.setup_complete);
    assert!(mentions(&d.problems, "no agent is enrolled"), "{d:?}");

    let a1 = t.enroll_agent("contoso.test", "0.2.0").await;
    let a2 = t.enroll_agent("contoso.test", "0.2.0").await;
    let d = domain_status(&t, "contoso.test", 0).await;
    assert_eq!(d.agents_enrolled, 2);
    assert!(!d.setup_complete);
    assert!(
        mentions(&d.problems, "none of the 2 enrolled agents is connected"),
        "{d:?}"
    );

    // One agent online, old, without verified permissions, its DC failing
    // TLS, and the domain's policy with a surprise.
    let min_age = "the domain's minimum password age is 1 day: a user cannot change their password twice within a day";
    t.relay.connect(FakeAgent {
        agent_id: a1.clone(),
        domain: "contoso.test".into(),
        health: Some(pb::HealthReport {
            // Ten days left: it should have renewed long ago.
            certificate_not_after: Some(prost_types::Timestamp {
                seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 10 * 86_400 + 3_600,
                nanos: 0,
            }),
            ..report("0.1.9", false, false, &[min_age])
        }),
    });
    let d = domain_status(&t, "contoso.test", 1).await;
    assert!(!d.setup_complete, "{d:?}");
    assert!(
        mentions(
            &d.problems,
            &format!("agent {a1} runs version 0.1.9, older than the minimum version 0.2.0")
        ),
        "{d:?}"
    );
    assert!(
        mentions(
            &d.problems,
            "has not verified its service account's permissions"
        ),
        "{d:?}"
    );
    assert!(
        mentions(&d.problems, "Unexpire Password on the domain root"),
        "{d:?}"
    );
    assert!(
        mentions(
            &d.problems,
            "ldaps://dc1.contoso.test:636: the TLS handshake failed"
        ),
        "{d:?}"
    );
    assert!(
        mentions(
            &d.warnings,
            &format!("agent {a2} on host-of-contoso.test is enrolled but not connected")
        ),
        "{d:?}"
    );
    assert!(mentions(&d.warnings, "only one agent is online"), "{d:?}");
    assert!(mentions(&d.warnings, min_age), "{d:?}");
    assert!(
        mentions(
            &d.warnings,
            &format!("agent {a1}'s certificate expires in 10 days")
        ),
        "{d:?}"
    );
    assert_plain_words(&d.problems);
    assert_plain_words(&d.warnings);

    // Both online, current, verified, reachable: complete. The policy
    // warning stays a warning; it does not block.
    t.relay.connect(FakeAgent {
        agent_id: a1.clone(),
        domain: "contoso.test".into(),
        health: Some(report("0.2.0", true, true, &[min_age])),
    });
    t.relay.connect(FakeAgent {
        agent_id: a2.clone(),
        domain: "contoso.test".into(),
        health: Some(report("0.10.1", true, true, &[min_age])),
    });
    let d = domain_status(&t, "contoso.test", 2).await;
    assert!(d.setup_complete, "{d:?}");
    assert!(d.problems.is_empty(), "{d:?}");
    assert_eq!(
        d.warnings,
        vec![min_age.to_owned()],
        "reported once per domain"
    );

    let (r, out) = support::ctl(&t, &t.admin_token, &["status"]).await;
    r.unwrap();
    assert!(
        out.contains("domain contoso.test: agents enrolled 2, online 2, set-up complete: yes"),
        "{out}"
    );
    assert!(
        out.contains("domain fabrikam.test: agents enrolled 0, online 0, set-up complete: no"),
        "{out}"
    );
    assert!(
        out.contains("  problem: no agent is enrolled for this domain"),
        "{out}"
    );
    assert!(out.contains(&format!("  warning: {min_age}")), "{out}");

    // An agent that does not answer the health check is a problem.
    t.relay.connect(FakeAgent {
        agent_id: a2.clone(),
        domain: "contoso.test".into(),
        health: None,
    });
    let d = domain_status(&t, "contoso.test", 2).await;
    assert!(!d.setup_complete);
    assert!(
        mentions(
            &d.problems,
            &format!("agent {a2} did not answer the health check")
        ),
        "{d:?}"
    );

    // An agent whose clock is beyond its tolerance refuses everything: a
    // problem, in words, with the direction and the size of the offset.
    let mut skewed = report("0.2.0", true, true, &[]);
    skewed.clock_offset_ms = Some(-75_300);
    t.relay.connect(FakeAgent {
        agent_id: a2.clone(),
        domain: "contoso.test".into(),
        health: Some(skewed),
    });
    let d = domain_status(&t, "contoso.test", 2).await;
    assert!(!d.setup_complete, "{d:?}");
    assert!(
        mentions(
            &d.problems,
            &format!(
                "agent {a2}'s clock is 75.3 s behind its relay's, more than the 10 s it tolerates"
            )
        ),
        "{d:?}"
    );
    assert_plain_words(&d.problems);

    // Going offline is noticed.
    t.relay.disconnect(&a2);
    let d = domain_status(&t, "contoso.test", 1).await;
    assert!(d.setup_complete, "{d:?}");
    assert!(
        mentions(
            &d.warnings,
            &format!("agent {a2} on host-of-contoso.test is enrolled but not connected")
        ),
        "{d:?}"
    );

    // End users do not see the set-up.
    let user = t
        .token(
            "eu@contoso.test",
            writeback_control_plane::store::Role::User,
            writeback_control_plane::store::ClientApp::Portal,
        )
        .await;
    let (r, _) = support::ctl(&t, &user, &["status"]).await;
    assert_eq!(
        r.unwrap_err().reason(),
        Some(writeback_core::ReasonCode::PermissionDenied)
    );
}

/// A burst of `GetStatus` calls makes one health fan-out per domain (the
/// relay sees one probe), and every caller gets the same answer; once the
/// TTL is over, the next call probes again. The burst is timed, so the test
/// runs with a generous TTL to stay inside it.
async fn status_calls_share_one_health_probe(db: &TestDb) {
    let t = TestCp::start(
        db,
        Options {
            status_health_ttl_seconds: 3,
            ..Options::default()
        },
    )
    .await;
    let admin = t.admin();
    admin.add_domain("contoso.test").await;
    let a1 = t.enroll_agent("contoso.test", "0.1.0").await;
    t.relay.connect(FakeAgent {
        agent_id: a1.clone(),
        domain: "contoso.test".into(),
        health: Some(report("0.1.0", true, true, &[])),
    });
    let started = tokio::time::Instant::now();
    let d = domain_status(&t, "contoso.test", 1).await;
    assert!(d.setup_complete, "{d:?}");
    let probes = t.relay.probes();
    assert_eq!(probes, 1);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let admin = t.admin();
        set.spawn(async move {
            admin
                .settings()
                .get_status(pb::GetStatusRequest {})
                .await
                .unwrap()
                .into_inner()
        });
    }
    while let Some(s) = set.join_next().await {
        let s = s.unwrap();
        assert!(s.domains[0].setup_complete, "{s:?}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(
        t.relay.probes(),
        probes,
        "the burst was answered from the cache"
    );

    // Past the TTL, the agent's new report is seen.
    t.relay.connect(FakeAgent {
        agent_id: a1.clone(),
        domain: "contoso.test".into(),
        health: Some(report("0.1.0", false, true, &[])),
    });
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let d = domain_status(&t, "contoso.test", 1).await;
    assert!(!d.setup_complete, "{d:?}");
    assert_eq!(t.relay.probes(), probes + 1);
}

both_backends!(
    status_says_per_domain_whether_the_agent_setup_is_complete,
    status_calls_share_one_health_probe,
);
