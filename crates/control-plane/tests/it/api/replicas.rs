//! Several control-plane replicas on one PostgreSQL database serve one
//! tenant consistently: each has its own listener, and whatever one
//! accepts, the others see at once.

use writeback_core::ReasonCode;
use writeback_proto::v1 as pb;

use crate::harness::TestDb;
use crate::support::{self, Options, reason_in_details};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_database_serve_the_same_tenant() {
    let db = TestDb::postgres().await;
    let a = support::ready(&db, Options::default()).await;
    let b = a.replica().await;
    assert_ne!(a.url, b.url, "each replica has its own listener");
    let (on_a, on_b) = (a.admin(), b.admin());

    // A toggle set through one is in force through the other.
    on_a.settings()
        .update_settings(pb::UpdateSettingsRequest {
            cloud_sync_writeback: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let seen = on_b
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!seen.cloud_sync_writeback && seen.sspr_writeback);
    assert_eq!(
        on_b.reset("bob@contoso.test", "Replica-Passw0rd!1").await,
        Err(ReasonCode::WritebackDisabled)
    );
    on_b.settings()
        .update_settings(pb::UpdateSettingsRequest {
            cloud_sync_writeback: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        on_a.reset("bob@contoso.test", "Replica-Passw0rd!1").await,
        Err(ReasonCode::NoAgentOnline),
        "back on through the other replica"
    );

    // An operation recorded by one is shown by the other, and the throttle
    // counts across replicas.
    let id = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        on_b.reset_with_id("bob@contoso.test", "Replica-Passw0rd!2", &id)
            .await,
        Err(ReasonCode::NoAgentOnline)
    );
    let record = on_a
        .audit()
        .get_operation(pb::GetOperationRequest {
            operation_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.state, "failed");
    for (i, c) in [&on_a, &on_b, &on_a].into_iter().enumerate() {
        assert_eq!(
            c.reset("bob@contoso.test", &format!("Replica-Passw0rd!{i}"))
                .await,
            Err(ReasonCode::NoAgentOnline)
        );
    }
    assert_eq!(
        on_b.reset("bob@contoso.test", "Replica-Passw0rd!9").await,
        Err(ReasonCode::Throttled),
        "five resets of bob across both replicas"
    );

    // Domains and tokens are shared too.
    on_b.add_domain("fabrikam.test").await;
    let domains = on_a
        .domains()
        .list_domains(pb::ListDomainsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .domains;
    assert!(domains.iter().any(|d| d.name == "fabrikam.test"));
    let minted = on_a
        .tokens()
        .create_token(pb::CreateTokenRequest {
            principal: "helpdesk@contoso.test".into(),
            role: pb::Role::PasswordAdmin as i32,
            client_app: pb::ClientApp::Graph as i32,
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let helpdesk_on_b = b.client(&minted.token);
    helpdesk_on_b
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await
        .expect("a token minted on one replica works on the other");
    on_b.tokens()
        .revoke_token(pb::RevokeTokenRequest {
            token_id: minted.info.unwrap().token_id,
        })
        .await
        .unwrap();
    let err = a
        .client(&minted.token)
        .settings()
        .get_settings(pb::GetSettingsRequest {})
        .await
        .unwrap_err();
    assert_eq!(reason_in_details(&err), ReasonCode::Unauthenticated);
    b.stop().await;
}
