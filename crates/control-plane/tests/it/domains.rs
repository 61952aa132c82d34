//! Domains and UPN suffixes.

use std::collections::HashSet;

use writeback_control_plane::store::{Page, StoreError};

use crate::harness::TestDb;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

async fn upn_suffix_belongs_to_one_domain(db: &TestDb) {
    let store = db.store_with_tenants().await;
    let d = store
        .add_domain("t1", "Contoso.Test", &s(&["contoso.test", "@Contoso.COM"]))
        .await
        .unwrap();
    assert_eq!(d.name, "contoso.test");
    assert_eq!(d.upn_suffixes, s(&["contoso.com", "contoso.test"]));

    // A suffix of another domain of the same tenant is refused, and nothing
    // of the new domain is written.
    let err = store
        .add_domain("t1", "fabrikam.test", &s(&["fabrikam.test", "CONTOSO.com"]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { what: "upn suffix" }),
        "{err:?}"
    );
    assert!(!store.domain_exists("t1", "fabrikam.test").await.unwrap());
    assert_eq!(
        store
            .domain_for_upn_suffix("t1", "fabrikam.test")
            .await
            .unwrap(),
        None
    );

    // Another tenant may use the same domain and suffixes.
    store
        .add_domain("t2", "contoso.test", &s(&["contoso.com"]))
        .await
        .unwrap();

    // Lookups are case-insensitive and scoped to the tenant.
    assert_eq!(
        store
            .domain_for_upn_suffix("t1", "CONTOSO.com")
            .await
            .unwrap()
            .as_deref(),
        Some("contoso.test")
    );
    assert_eq!(
        store
            .domain_for_upn_suffix("t2", "contoso.test")
            .await
            .unwrap(),
        None
    );
    assert!(store.domain_exists("t1", "CONTOSO.TEST").await.unwrap());
    assert!(!store.domain_exists("t1", "other.test").await.unwrap());

    // The same domain twice.
    assert!(matches!(
        store
            .add_domain("t1", "contoso.test", &s(&["x.test"]))
            .await,
        Err(StoreError::AlreadyExists { what: "domain" })
    ));
    // No suffix means the domain's own name.
    let d = store.add_domain("t1", "north.test", &[]).await.unwrap();
    assert_eq!(d.upn_suffixes, s(&["north.test"]));
    // Unknown tenant.
    assert!(matches!(
        store.add_domain("nope", "a.test", &[]).await,
        Err(StoreError::NotFound { what: "tenant" })
    ));
}

async fn domains_page_without_duplicates(db: &TestDb) {
    let store = db.store_with_tenants().await;
    for i in 0..23 {
        let name = format!("d{i:02}.test");
        store
            .add_domain("t1", &name, &[name.clone(), format!("alt{i:02}.test")])
            .await
            .unwrap();
    }
    store.add_domain("t2", "other.test", &[]).await.unwrap();
    let mut seen = Vec::new();
    let mut page = Page::first(5);
    let mut pages = 0;
    loop {
        let (rows, next) = store.list_domains("t1", page.clone()).await.unwrap();
        assert!(rows.len() <= 5);
        pages += 1;
        for r in &rows {
            assert_eq!(r.upn_suffixes.len(), 2, "{r:?}");
            assert!(r.upn_suffixes.contains(&r.name));
        }
        seen.extend(rows.into_iter().map(|r| r.name));
        match next {
            Some(token) => page = Page::after(5, token),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 23);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);

    let (all, next) = store.list_domains("t1", Page::default()).await.unwrap();
    assert_eq!((all.len(), next), (23, None));
    assert!(matches!(
        store
            .list_domains("t1", Page::after(5, "not-a-token"))
            .await,
        Err(StoreError::InvalidPageToken)
    ));
}

both_backends!(
    upn_suffix_belongs_to_one_domain,
    domains_page_without_duplicates,
);
