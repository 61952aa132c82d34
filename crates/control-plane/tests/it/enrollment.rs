//! One-time enrollment tokens.

use writeback_control_plane::store::StoreError;

use crate::harness::{TestDb, h};

const NOW: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

async fn enrollment_token_is_consumed_once(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store.add_domain("t1", "contoso.test", &[]).await.unwrap();
    store
        .create_enrollment_token("t1", "Contoso.Test", "tok1", &h("s1"), NOW + HOUR)
        .await
        .unwrap();

    // A wrong secret is invalid, and does not use the token up.
    assert!(matches!(
        store
            .consume_enrollment_token("tok1", &h("wrong"), NOW)
            .await,
        Err(StoreError::TokenInvalid)
    ));
    assert!(matches!(
        store.consume_enrollment_token("nope", &h("s1"), NOW).await,
        Err(StoreError::TokenInvalid)
    ));
    assert!(matches!(
        store.consume_enrollment_token("tok1", "s1", NOW).await,
        Err(StoreError::TokenInvalid)
    ));

    assert_eq!(
        store
            .consume_enrollment_token("tok1", &h("s1"), NOW)
            .await
            .unwrap(),
        ("t1".to_owned(), "contoso.test".to_owned())
    );
    assert!(matches!(
        store.consume_enrollment_token("tok1", &h("s1"), NOW).await,
        Err(StoreError::TokenUsed)
    ));
    // Used wins over expired; invalid wins over used.
    assert!(matches!(
        store
            .consume_enrollment_token("tok1", &h("s1"), NOW + 2 * HOUR)
            .await,
        Err(StoreError::TokenUsed)
    ));
    assert!(matches!(
        store
            .consume_enrollment_token("tok1", &h("wrong"), NOW)
            .await,
        Err(StoreError::TokenInvalid)
    ));
}

async fn enrollment_token_expires(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store.add_domain("t1", "contoso.test", &[]).await.unwrap();
    store
        .create_enrollment_token("t1", "contoso.test", "tok2", &h("s2"), NOW + HOUR)
        .await
        .unwrap();
    assert!(matches!(
        store
            .consume_enrollment_token("tok2", &h("s2"), NOW + HOUR)
            .await,
        Err(StoreError::TokenExpired)
    ));
    // Still expired (not used) afterwards.
    assert!(matches!(
        store
            .consume_enrollment_token("tok2", &h("s2"), NOW + 2 * HOUR)
            .await,
        Err(StoreError::TokenExpired)
    ));
    // Unknown domain, duplicate id, plaintext secret.
    assert!(matches!(
        store
            .create_enrollment_token("t1", "other.test", "tok3", &h("s3"), NOW + HOUR)
            .await,
        Err(StoreError::NotFound { what: "domain" })
    ));
    assert!(matches!(
        store
            .create_enrollment_token("t2", "contoso.test", "tok3", &h("s3"), NOW + HOUR)
            .await,
        Err(StoreError::NotFound { what: "domain" })
    ));
    assert!(matches!(
        store
            .create_enrollment_token("t1", "contoso.test", "tok2", &h("s3"), NOW + HOUR)
            .await,
        Err(StoreError::AlreadyExists {
            what: "enrollment token"
        })
    ));
    assert!(matches!(
        store
            .create_enrollment_token("t1", "contoso.test", "tok4", "secret", NOW + HOUR)
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
}

async fn concurrent_consumers_exactly_one_wins(db: &TestDb) {
    let store = db.store_with_tenants().await;
    store.add_domain("t2", "fabrikam.test", &[]).await.unwrap();
    for round in 0..3 {
        let token_id = format!("race{round}");
        store
            .create_enrollment_token("t2", "fabrikam.test", &token_id, &h("s"), NOW + HOUR)
            .await
            .unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let barrier = barrier.clone();
                let token_id = token_id.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .consume_enrollment_token(&token_id, &h("s"), NOW)
                        .await
                })
            })
            .collect();
        let mut won = 0;
        let mut used = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok((tenant, domain)) => {
                    assert_eq!((tenant.as_str(), domain.as_str()), ("t2", "fabrikam.test"));
                    won += 1;
                }
                Err(StoreError::TokenUsed) => used += 1,
                Err(e) => panic!("unexpected error: {e:?}"),
            }
        }
        assert_eq!((won, used), (1, 7), "round {round}");
    }
}

both_backends!(
    enrollment_token_is_consumed_once,
    enrollment_token_expires,
    concurrent_consumers_exactly_one_wins,
);
