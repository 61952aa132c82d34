//! Agents, their envelope keys and revocation.

use std::collections::HashSet;

use writeback_control_plane::store::{
    CertificateRenewal, IssuedCertificate, KeyRegistration, NewAgent, Page, ResultKey, StoreError,
};

use crate::harness::TestDb;

fn agent(tenant: &str, domain: &str, id: &str) -> NewAgent {
    NewAgent {
        tenant: tenant.to_owned(),
        domain: domain.to_owned(),
        agent_id: id.to_owned(),
        hostname: format!("{id}.host"),
        version: "0.1.0".to_owned(),
        envelope_public_key: id.bytes().chain([0u8, 255]).collect(),
        cert_fingerprint: format!("fp-{id}"),
        result_signing_key: vec![7; 32],
    }
}

async fn agent_keys_exclude_revoked_agents(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store.add_domain("t1", "contoso.test", &[]).await.unwrap();
    store.add_domain("t1", "fabrikam.test", &[]).await.unwrap();
    store.add_domain("t2", "contoso.test", &[]).await.unwrap();
    for (tenant, domain, id) in [
        ("t1", "contoso.test", "a1"),
        ("t1", "Contoso.Test", "a2"),
        ("t1", "contoso.test", "a3"),
        ("t1", "fabrikam.test", "b1"),
        ("t2", "contoso.test", "c1"),
    ] {
        store
            .insert_agent(&agent(tenant, domain, id))
            .await
            .unwrap();
    }
    let keys = store.agent_keys("t1", "contoso.test").await.unwrap();
    assert_eq!(
        keys,
        vec![
            ("a1".to_owned(), b"a1\x00\xff".to_vec()),
            ("a2".to_owned(), b"a2\x00\xff".to_vec()),
            ("a3".to_owned(), b"a3\x00\xff".to_vec()),
        ]
    );

    let revoked = store.revoke_agent("t1", "a2").await.unwrap();
    assert_eq!(revoked.agent_id, "a2");
    assert_eq!(revoked.domain, "contoso.test");
    assert_eq!(revoked.hostname, "a2.host");
    assert_eq!(revoked.cert_fingerprint, "fp-a2");
    assert!(revoked.is_revoked());
    // Idempotent: the first revocation time stands.
    let again = store.revoke_agent("t1", "a2").await.unwrap();
    assert_eq!(again.revoked_at_ms, revoked.revoked_at_ms);

    let ids: Vec<String> = store
        .agent_keys("t1", "contoso.test")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["a1", "a3"]);
    assert!(store.is_agent_revoked("t1", "a2").await.unwrap());
    assert_eq!(
        store.get_agent("t1", "a2").await.unwrap().as_ref(),
        Some(&again)
    );
    let a1 = store.get_agent("t1", "a1").await.unwrap().unwrap();
    assert_eq!(
        (a1.tenant.as_str(), a1.version.as_str(), a1.revoked_at_ms),
        ("t1", "0.1.0", None)
    );
    assert_eq!(store.get_agent("t2", "a1").await.unwrap(), None);
    assert!(!store.is_agent_revoked("t1", "a1").await.unwrap());

    // Tenant isolation.
    assert!(matches!(
        store.revoke_agent("t2", "a1").await,
        Err(StoreError::NotFound { what: "agent" })
    ));
    assert!(matches!(
        store.is_agent_revoked("t2", "a1").await,
        Err(StoreError::NotFound { what: "agent" })
    ));
    let t2: Vec<String> = store
        .agent_keys("t2", "contoso.test")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(t2, ["c1"]);

    // Duplicates and unknown domains.
    assert!(matches!(
        store.insert_agent(&agent("t1", "contoso.test", "a1")).await,
        Err(StoreError::AlreadyExists { what: "agent" })
    ));
    assert!(matches!(
        store
            .insert_agent(&agent("t2", "fabrikam.test", "z1"))
            .await,
        Err(StoreError::NotFound { what: "domain" })
    ));
}

async fn agents_page_and_filter_by_domain(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store.add_domain("t1", "contoso.test", &[]).await.unwrap();
    store.add_domain("t1", "fabrikam.test", &[]).await.unwrap();
    for i in 0..12 {
        let domain = if i % 3 == 0 {
            "fabrikam.test"
        } else {
            "contoso.test"
        };
        store
            .insert_agent(&agent("t1", domain, &format!("agent-{i:02}")))
            .await
            .unwrap();
    }
    store.revoke_agent("t1", "agent-01").await.unwrap();

    let mut seen = Vec::new();
    let mut page = Page::first(5);
    loop {
        let (rows, next) = store.list_agents("t1", None, page).await.unwrap();
        seen.extend(rows);
        match next {
            Some(token) => page = Page::after(5, token),
            None => break,
        }
    }
    assert_eq!(seen.len(), 12);
    let ids: HashSet<_> = seen.iter().map(|a| a.agent_id.clone()).collect();
    assert_eq!(ids.len(), 12);
    assert_eq!(seen.iter().filter(|a| a.is_revoked()).count(), 1);

    let (fab, next) = store
        .list_agents("t1", Some("FABRIKAM.test"), Page::first(10))
        .await
        .unwrap();
    assert_eq!(next, None);
    assert_eq!(
        fab.iter().map(|a| a.agent_id.as_str()).collect::<Vec<_>>(),
        ["agent-00", "agent-03", "agent-06", "agent-09"]
    );
    let (first, next) = store
        .list_agents("t1", Some("contoso.test"), Page::first(6))
        .await
        .unwrap();
    let (rest, end) = store
        .list_agents("t1", Some("contoso.test"), Page::after(6, next.unwrap()))
        .await
        .unwrap();
    assert_eq!((first.len(), rest.len(), end), (6, 2, None));
    assert!(
        first
            .iter()
            .chain(&rest)
            .all(|a| a.domain == "contoso.test")
    );

    let (none, _) = store
        .list_agents("t2", None, Page::default())
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// The result-signing key: recorded at enrollment, never replaced by a
/// renewal's (the same key is fine, another is a conflict, none is
/// missing), and refused for a revoked or unknown agent.
async fn result_keys_are_recorded_once_and_end_with_revocation(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store.add_domain("t1", "contoso.test", &[]).await.unwrap();
    store
        .insert_agent(&agent("t1", "contoso.test", "a1"))
        .await
        .unwrap();
    assert_eq!(
        store.agent_result_key("t1", "a1").await.unwrap(),
        ResultKey::Key(vec![7; 32])
    );
    for (key, want) in [
        (vec![7; 32], KeyRegistration::Unchanged),
        (vec![8; 32], KeyRegistration::Conflict),
        (Vec::new(), KeyRegistration::Missing),
    ] {
        assert_eq!(
            store.register_result_key("t1", "a1", &key).await.unwrap(),
            want
        );
    }
    assert_eq!(
        store.agent_result_key("t1", "a1").await.unwrap(),
        ResultKey::Key(vec![7; 32]),
        "a conflict keeps the recorded key"
    );
    let mut keyless = agent("t1", "contoso.test", "a2");
    keyless.result_signing_key.clear();
    assert!(matches!(
        store.insert_agent(&keyless).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(
        store.agent_result_key("t1", "a2").await.unwrap(),
        ResultKey::Unknown
    );
    assert_eq!(
        store.agent_result_key("t2", "a1").await.unwrap(),
        ResultKey::Unknown
    );
    store.revoke_agent("t1", "a1").await.unwrap();
    assert_eq!(
        store.agent_result_key("t1", "a1").await.unwrap(),
        ResultKey::Revoked
    );
}

fn issued(fingerprint: &str, key: &str) -> IssuedCertificate {
    IssuedCertificate {
        fingerprint: fingerprint.to_owned(),
        key_fingerprint: key.to_owned(),
    }
}

/// Issue #25 item 9 in the store: only the current certificate renews
/// (one compare-and-set), the one it replaces is superseded and the
/// revocation version goes up with it; the previous certificate may ask
/// again only for the current one's key (a lost answer); superseded
/// certificates are listed until they expire.
async fn only_the_current_certificate_renews_and_the_old_one_is_superseded(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store.add_domain("t1", "contoso.test", &[]).await.unwrap();
    store
        .insert_agent(&agent("t1", "contoso.test", "a1"))
        .await
        .unwrap();
    let version = store.revocation_version("t1").await.unwrap();
    let far = i64::MAX / 2;
    // The enrollment certificate renews into c1 (key k1).
    assert_eq!(
        store
            .renew_agent_certificate("t1", "a1", "fp-a1", &issued("c1", "k1"), "v2", far)
            .await
            .unwrap(),
        CertificateRenewal::Renewed
    );
    let row = store.get_agent("t1", "a1").await.unwrap().unwrap();
    assert_eq!(
        (
            row.cert_fingerprint.as_str(),
            row.previous_cert_fingerprint.as_str()
        ),
        ("c1", "fp-a1")
    );
    assert_eq!(row.version, "v2");
    assert_eq!(store.revocation_version("t1").await.unwrap(), version + 1);
    assert_eq!(
        store.superseded_certificates("t1").await.unwrap(),
        vec!["fp-a1"]
    );
    // The enrollment certificate again, for another key: superseded, and
    // nothing changes.
    assert_eq!(
        store
            .renew_agent_certificate("t1", "a1", "fp-a1", &issued("x", "k9"), "v3", far)
            .await
            .unwrap(),
        CertificateRenewal::Superseded
    );
    // An unknown certificate: the same.
    assert_eq!(
        store
            .renew_agent_certificate("t1", "a1", "nope", &issued("x", "k1"), "v3", far)
            .await
            .unwrap(),
        CertificateRenewal::Superseded
    );
    let row = store.get_agent("t1", "a1").await.unwrap().unwrap();
    assert_eq!(row.cert_fingerprint, "c1");
    assert_eq!(store.revocation_version("t1").await.unwrap(), version + 1);
    // The enrollment certificate asking again for k1 (c1's answer was
    // lost): c2 replaces c1, which is superseded; the previous stays.
    assert_eq!(
        store
            .renew_agent_certificate("t1", "a1", "fp-a1", &issued("c2", "k1"), "v3", far)
            .await
            .unwrap(),
        CertificateRenewal::Reissued
    );
    let row = store.get_agent("t1", "a1").await.unwrap().unwrap();
    assert_eq!(
        (
            row.cert_fingerprint.as_str(),
            row.previous_cert_fingerprint.as_str()
        ),
        ("c2", "fp-a1")
    );
    assert_eq!(
        store.superseded_certificates("t1").await.unwrap(),
        vec!["c1", "fp-a1"]
    );
    // The current one renews on; an expired superseded certificate is no
    // longer listed (and is dropped at the next renewal).
    let now = store.now_ms();
    assert_eq!(
        store
            .renew_agent_certificate("t1", "a1", "c2", &issued("c3", "k3"), "v4", now)
            .await
            .unwrap(),
        CertificateRenewal::Renewed
    );
    assert_eq!(
        store.superseded_certificates("t1").await.unwrap(),
        vec!["c1", "fp-a1"]
    );
    assert!(
        store
            .superseded_certificates("t2")
            .await
            .unwrap()
            .is_empty()
    );
    // Revoked: nothing renews; unknown: not found.
    store.revoke_agent("t1", "a1").await.unwrap();
    assert_eq!(
        store
            .renew_agent_certificate("t1", "a1", "c3", &issued("c4", "k4"), "v5", far)
            .await
            .unwrap(),
        CertificateRenewal::Revoked
    );
    assert!(matches!(
        store
            .renew_agent_certificate("t1", "zz", "c3", &issued("c4", "k4"), "v5", far)
            .await,
        Err(StoreError::NotFound { what: "agent" })
    ));
}

both_backends!(
    agent_keys_exclude_revoked_agents,
    agents_page_and_filter_by_domain,
    result_keys_are_recorded_once_and_end_with_revocation,
    only_the_current_certificate_renews_and_the_old_one_is_superseded,
);
