//! A tenant's custom banned-password terms in the store.

use crate::harness::TestDb;

async fn banned_terms_are_replaced_per_tenant(db: &TestDb) {
    let store = db.store_with_tenants().await;
    assert!(store.banned_terms("t1").await.unwrap().is_empty());
    store
        .set_banned_terms("t1", &["fabrikam".into(), "contoso".into()])
        .await
        .unwrap();
    store
        .set_banned_terms("t2", &["tailspin".into()])
        .await
        .unwrap();
    assert_eq!(
        store.banned_terms("t1").await.unwrap(),
        ["contoso", "fabrikam"]
    );
    store
        .set_banned_terms("t1", &["northwind".into()])
        .await
        .unwrap();
    assert_eq!(store.banned_terms("t1").await.unwrap(), ["northwind"]);
    assert_eq!(store.banned_terms("t2").await.unwrap(), ["tailspin"]);
    store.set_banned_terms("t1", &[]).await.unwrap();
    assert!(store.banned_terms("t1").await.unwrap().is_empty());
    assert!(store.set_banned_terms("nope", &["x".into()]).await.is_err());
}

both_backends!(banned_terms_are_replaced_per_tenant);
