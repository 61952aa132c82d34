//! Trusted OpenID Connect issuers, client registrations, learnt roles and the
//! administrative audit trail, in the store.

use serde_json::json;
use writeback_control_plane::store::{
    ClientApp, ClientRegistration, IssuerConfig, NewAdminEvent, Page, Role, RoleMapping,
    StoreError, StrongAuthPolicy,
};

use crate::harness::TestDb;

fn issuer(id: &str, url: &str) -> IssuerConfig {
    IssuerConfig {
        issuer_id: id.into(),
        issuer_url: url.into(),
        audiences: vec!["writeback".into(), "api://writeback".into()],
        algorithms: vec!["RS256".into()],
        principal_claim: "upn".into(),
        subject_claim: "sub".into(),
        role_claim: "groups".into(),
        role_mappings: vec![RoleMapping {
            value: "helpdesk".into(),
            role: Role::PasswordAdmin,
        }],
        default_role: Some(Role::User),
        clock_skew_seconds: 30,
        strong_auth: StrongAuthPolicy {
            amr_any: vec!["mfa".into()],
            acr_any: vec![],
            max_age_seconds: 600,
            scope_any: vec![],
        },
        updated_at_ms: 0,
    }
}

fn client(issuer: &str, id: &str, app: ClientApp, role: Option<Role>) -> ClientRegistration {
    ClientRegistration {
        issuer_id: issuer.into(),
        client_id: id.into(),
        client_app: app,
        application_role: role,
        updated_at_ms: 0,
    }
}

async fn issuers_and_clients_decide_the_tenant(db: &TestDb) {
    let store = db.store_with_tenants().await;
    let url = "https://idp.example/realms/shared";
    let stored = store.put_issuer("t1", &issuer("kc", url)).await.unwrap();
    assert_eq!(stored.audiences.len(), 2);
    assert_eq!(stored.role_mappings[0].role, Role::PasswordAdmin);
    assert_eq!(stored.strong_auth.max_age_seconds, 600);
    assert!(stored.updated_at_ms > 0);
    // Both tenants trust the same issuer URL; the client id tells them apart.
    store.put_issuer("t2", &issuer("kc", url)).await.unwrap();
    store
        .put_client("t1", &client("kc", "portal-1", ClientApp::Portal, None))
        .await
        .unwrap();
    store
        .put_client(
            "t2",
            &client(
                "kc",
                "daemon-2",
                ClientApp::Graph,
                Some(Role::PasswordAdmin),
            ),
        )
        .await
        .unwrap();
    let (tenant, i, c) = store
        .client_by_issuer_url(url, "daemon-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((tenant.as_str(), i.issuer_id.as_str()), ("t2", "kc"));
    assert_eq!(c.application_role, Some(Role::PasswordAdmin));
    assert_eq!(c.client_app, ClientApp::Graph);
    assert!(
        store
            .client_by_issuer_url(url, "unknown")
            .await
            .unwrap()
            .is_none()
    );
    // A client id is one tenant's per issuer URL.
    assert!(matches!(
        store
            .put_client("t2", &client("kc", "portal-1", ClientApp::Portal, None))
            .await,
        Err(StoreError::AlreadyExists { what: "client" })
    ));
    // Replacing a registration changes it in place.
    store
        .put_client("t1", &client("kc", "portal-1", ClientApp::Powershell, None))
        .await
        .unwrap();
    let (_, _, c) = store
        .client_by_issuer_url(url, "portal-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.client_app, ClientApp::Powershell);
    // A client needs its issuer; an issuer with clients keeps its URL.
    assert!(matches!(
        store
            .put_client("t1", &client("nope", "x", ClientApp::Portal, None))
            .await,
        Err(StoreError::NotFound { what: "issuer" })
    ));
    assert!(matches!(
        store
            .put_issuer("t1", &issuer("kc", "https://elsewhere.example"))
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(store.issuer_url_trusted(url).await.unwrap());
    // Deleting an issuer removes its clients.
    store.delete_issuer("t1", "kc").await.unwrap();
    assert!(store.list_clients("t1", None).await.unwrap().is_empty());
    assert!(
        store
            .client_by_issuer_url(url, "portal-1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store.issuer_url_trusted(url).await.unwrap(),
        "t2 still trusts it"
    );
    store.delete_issuer("t2", "kc").await.unwrap();
    assert!(!store.issuer_url_trusted(url).await.unwrap());
    assert!(matches!(
        store.delete_issuer("t2", "kc").await,
        Err(StoreError::NotFound { what: "issuer" })
    ));
}

async fn learnt_roles_are_only_ever_raised(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store
        .raise_principal_role("t1", "Carol@Contoso.Test", Role::User)
        .await
        .unwrap();
    assert_eq!(
        store
            .principal_role("t1", "carol@contoso.test")
            .await
            .unwrap(),
        Some(Role::User)
    );
    store
        .raise_principal_role("t1", "carol@contoso.test", Role::PasswordAdmin)
        .await
        .unwrap();
    store
        .raise_principal_role("t1", "carol@contoso.test", Role::User)
        .await
        .unwrap();
    assert_eq!(
        store
            .principal_role("t1", "carol@contoso.test")
            .await
            .unwrap(),
        Some(Role::PasswordAdmin)
    );
    assert_eq!(
        store
            .principal_role("t2", "carol@contoso.test")
            .await
            .unwrap(),
        None
    );
}

async fn admin_events_page_newest_first(db: &TestDb) {
    let store = db.store_with_tenants().await;
    for i in 0..5 {
        store
            .record_admin_event(
                "t1",
                NewAdminEvent {
                    principal: "admin@contoso.test",
                    client_app: "portal",
                    action: "issuer.put",
                    object: &format!("issuer:{i}"),
                    details: json!({ "n": i }),
                },
            )
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (first, next) = store.list_admin_events("t1", Page::first(3)).await.unwrap();
    assert_eq!(
        first.iter().map(|e| e.object.as_str()).collect::<Vec<_>>(),
        ["issuer:4", "issuer:3", "issuer:2"]
    );
    let (rest, end) = store
        .list_admin_events("t1", Page::after(3, next.unwrap()))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|e| e.object.as_str()).collect::<Vec<_>>(),
        ["issuer:1", "issuer:0"]
    );
    assert!(end.is_none());
    assert_eq!(rest[1].details, json!({ "n": 0 }));
    assert!(
        store
            .list_admin_events("t2", Page::first(10))
            .await
            .unwrap()
            .0
            .is_empty()
    );
}

/// Read-then-write transactions (an issuer update reads the old URL first)
/// racing with plain inserts from other connections: on SQLite a deferred
/// transaction failed here with "database is locked" (SQLITE_BUSY_SNAPSHOT,
/// which no busy timeout waits out); each must wait its turn and succeed.
async fn concurrent_writers_wait_their_turn(db: &TestDb) {
    let store = db.store_with_tenants().await;
    let url = "https://idp.example/realms/busy";
    store.put_issuer("t1", &issuer("kc", url)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..16 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut i = issuer("kc", url);
            i.clock_skew_seconds = n;
            store.put_issuer("t1", &i).await?;
            let event = NewAdminEvent {
                principal: "admin@example.test",
                client_app: "powershell",
                action: "issuer.put",
                object: "issuer:kc",
                details: json!({ "n": n }),
            };
            store.record_admin_event("t1", event).await.map(|_| ())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let (events, _) = store
        .list_admin_events("t1", Page::first(100))
        .await
        .unwrap();
    assert_eq!(events.len(), 16);
}

/// A person's identifier at an issuer binds to one directory user and a
/// directory user to one identifier, per issuer; the first binding stands,
/// and an issuer whose URL or subject claim changes, or that is removed,
/// forgets its bindings.
async fn identities_bind_one_to_one_per_issuer(db: &TestDb) {
    let store = db.store_with_tenants().await;
    let url = "https://idp.example/realms/bind";
    store.put_issuer("t1", &issuer("kc", url)).await.unwrap();
    assert_eq!(
        store.get_issuer("t1", "kc").await.unwrap().subject_claim,
        "sub"
    );
    assert!(
        store
            .bind_identity("t1", "kc", "s1", "guid:a")
            .await
            .unwrap()
    );
    assert!(
        !store
            .bind_identity("t1", "kc", "s1", "guid:b")
            .await
            .unwrap()
    );
    assert!(
        !store
            .bind_identity("t1", "kc", "s2", "guid:a")
            .await
            .unwrap()
    );
    let both = store
        .identity_bindings("t1", "kc", "s1", "guid:a")
        .await
        .unwrap();
    assert_eq!(both.person_of_subject.as_deref(), Some("guid:a"));
    assert_eq!(both.subject_of_person.as_deref(), Some("s1"));
    let other = store
        .identity_bindings("t1", "kc", "s2", "guid:a")
        .await
        .unwrap();
    assert_eq!(other.person_of_subject, None);
    assert_eq!(other.subject_of_person.as_deref(), Some("s1"));
    // Another tenant, or another issuer, binds on its own.
    store.put_issuer("t2", &issuer("kc", url)).await.unwrap();
    assert!(
        store
            .bind_identity("t2", "kc", "s1", "guid:b")
            .await
            .unwrap()
    );
    store
        .put_issuer("t1", &issuer("okta", "https://okta.example"))
        .await
        .unwrap();
    assert!(
        store
            .bind_identity("t1", "okta", "s1", "guid:b")
            .await
            .unwrap()
    );
    // The same configuration again keeps the bindings; another subject
    // claim forgets them.
    store.put_issuer("t1", &issuer("kc", url)).await.unwrap();
    assert!(
        store
            .identity_bindings("t1", "kc", "s1", "guid:a")
            .await
            .unwrap()
            .person_of_subject
            .is_some()
    );
    let mut oid = issuer("kc", url);
    oid.subject_claim = "oid".into();
    store.put_issuer("t1", &oid).await.unwrap();
    assert_eq!(
        store
            .identity_bindings("t1", "kc", "s1", "guid:a")
            .await
            .unwrap(),
        Default::default()
    );
    store.delete_issuer("t1", "okta").await.unwrap();
    assert_eq!(
        store
            .identity_bindings("t1", "okta", "s1", "guid:b")
            .await
            .unwrap(),
        Default::default()
    );
    assert_eq!(
        store
            .identity_bindings("t2", "kc", "s1", "guid:b")
            .await
            .unwrap()
            .person_of_subject
            .as_deref(),
        Some("guid:b")
    );
}

both_backends!(
    identities_bind_one_to_one_per_issuer,
    issuers_and_clients_decide_the_tenant,
    concurrent_writers_wait_their_turn,
    learnt_roles_are_only_ever_raised,
    admin_events_page_newest_first,
);
