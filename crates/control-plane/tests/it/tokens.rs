//! Principals and bearer tokens.

use writeback_control_plane::store::{ClientApp, Role, StoreError};

use crate::harness::{TestDb, h};

const NOW: i64 = 1_700_000_000_000;

async fn token_authenticates_until_expired_or_revoked(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store
        .create_principal("t1", "admin@contoso.test", Role::GlobalAdmin)
        .await
        .unwrap();
    store
        .create_principal("t1", "alice@contoso.test", Role::User)
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_principal("t1", "alice@contoso.test", Role::PasswordAdmin)
            .await,
        Err(StoreError::AlreadyExists { what: "principal" })
    ));

    let admin_id = store
        .create_api_token(
            "t1",
            "admin@contoso.test",
            ClientApp::Portal,
            &h("admin-token"),
            None,
        )
        .await
        .unwrap();
    let alice_id = store
        .create_api_token(
            "t1",
            "alice@contoso.test",
            ClientApp::Graph,
            &h("alice-token"),
            Some(NOW + 1_000),
        )
        .await
        .unwrap();

    let caller = store
        .authenticate(&h("admin-token"), NOW)
        .await
        .unwrap()
        .expect("admin token is valid");
    assert_eq!(caller.tenant, "t1");
    assert_eq!(caller.principal, "admin@contoso.test");
    assert_eq!(caller.role, Role::GlobalAdmin);
    assert_eq!(caller.client_app, ClientApp::Portal);
    assert_eq!(caller.token_id, admin_id);

    // Upper-case hex is the same hash.
    let alice = store
        .authenticate(&h("alice-token").to_uppercase(), NOW + 999)
        .await
        .unwrap()
        .expect("alice's token is valid before expiry");
    assert_eq!(
        (alice.role, alice.client_app),
        (Role::User, ClientApp::Graph)
    );
    // Expired at expires_at_ms.
    assert_eq!(
        store
            .authenticate(&h("alice-token"), NOW + 1_000)
            .await
            .unwrap(),
        None
    );
    // Unknown or malformed.
    assert_eq!(store.authenticate(&h("nope"), NOW).await.unwrap(), None);
    assert_eq!(store.authenticate("admin-token", NOW).await.unwrap(), None);

    // Another tenant cannot revoke it.
    assert!(matches!(
        store.revoke_api_token("t2", &admin_id).await,
        Err(StoreError::NotFound { what: "api token" })
    ));
    assert!(
        store
            .authenticate(&h("admin-token"), NOW)
            .await
            .unwrap()
            .is_some()
    );
    store.revoke_api_token("t1", &admin_id).await.unwrap();
    store.revoke_api_token("t1", &admin_id).await.unwrap();
    assert_eq!(
        store.authenticate(&h("admin-token"), NOW).await.unwrap(),
        None
    );
    assert_ne!(admin_id, alice_id);
}

async fn tokens_are_stored_only_as_hashes(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store
        .create_principal("t1", "admin@contoso.test", Role::PasswordAdmin)
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_api_token(
                "t1",
                "admin@contoso.test",
                ClientApp::Powershell,
                "plaintext-token",
                None
            )
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store
            .create_api_token("t1", "ghost", ClientApp::Portal, &h("x"), None)
            .await,
        Err(StoreError::NotFound { what: "principal" })
    ));
    // A principal of t1 does not exist in t2.
    assert!(matches!(
        store
            .create_api_token("t2", "admin@contoso.test", ClientApp::Portal, &h("y"), None)
            .await,
        Err(StoreError::NotFound { what: "principal" })
    ));
    store
        .create_api_token(
            "t1",
            "admin@contoso.test",
            ClientApp::M365AdminCenter,
            &h("z"),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_api_token("t1", "admin@contoso.test", ClientApp::Portal, &h("z"), None)
            .await,
        Err(StoreError::AlreadyExists { what: "api token" })
    ));
    assert_eq!(
        store
            .authenticate(&h("z"), NOW)
            .await
            .unwrap()
            .map(|c| c.client_app),
        Some(ClientApp::M365AdminCenter)
    );
    assert!(matches!(
        store.create_principal("nope", "x", Role::User).await,
        Err(StoreError::NotFound { what: "tenant" })
    ));
}

both_backends!(
    token_authenticates_until_expired_or_revoked,
    tokens_are_stored_only_as_hashes,
);
