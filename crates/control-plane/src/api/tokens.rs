//! `TokenService`: the control plane's own `wbt1` bearer tokens — minted
//! for a principal (shown once), listed and revoked; every change recorded in
//! the administrative audit trail. `WhoAmI` tells any caller who their token
//! names.

use super::*;

fn token_pb(t: store::TokenRow) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: t.token_id,
        principal: t.principal,
        role: role_pb(t.role) as i32,
        client_app: client_app_pb(t.client_app) as i32,
        created_at: ts(t.created_at_ms),
        expires_at: t.expires_at_ms.and_then(ts),
        revoked_at: t.revoked_at_ms.and_then(ts),
    }
}

#[tonic::async_trait]
impl TokenService for Api {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let r = req.into_inner();
        let principal = crate::auth::normalize_principal(&r.principal)
            .map_err(|why| status(ReasonCode::InvalidArgument, why))?;
        let role = role_of(r.role).ok_or_else(|| {
            status(
                ReasonCode::InvalidArgument,
                "a role is global_admin, password_admin or user",
            )
        })?;
        let app = client_app_of(r.client_app).ok_or_else(|| {
            status(
                ReasonCode::InvalidArgument,
                "a client app is portal, graph, powershell or m365_admin_center",
            )
        })?;
        let expires_at_ms = (r.ttl_seconds > 0).then(|| {
            self.cp
                .store
                .now_ms()
                .saturating_add(i64::from(r.ttl_seconds) * 1000)
        });
        let store = &self.cp.store;
        store
            .ensure_principal_with_role(&caller.tenant, &principal, role)
            .await
            .map_err(store_status)?;
        let (token, hash) = crate::auth::new_api_token();
        let token_id = store
            .create_api_token(&caller.tenant, &principal, app, &hash, expires_at_ms)
            .await
            .map_err(store_status)?;
        let info = store
            .get_api_token(&caller.tenant, &token_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| status(ReasonCode::Internal, "the new token vanished"))?;
        tracing::info!(tenant = %caller.tenant, by = %caller.principal, principal = %principal,
            token_id = %token_id, role = %role, client_app = %app, "api token minted");
        self.audit_admin(
            &caller,
            "token.create",
            &format!("token:{token_id}"),
            serde_json::json!({
                "principal": principal,
                "role": role.as_str(),
                "client_app": app.as_str(),
                "expires_at_ms": expires_at_ms,
            }),
        )
        .await?;
        Ok(Response::new(pb::CreatedToken {
            token,
            info: Some(token_pb(info)),
        }))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        require_global_admin(&caller)?;
        let r = req.into_inner();
        let principal = (!r.principal.trim().is_empty()).then_some(r.principal.as_str());
        let (rows, next) = self
            .cp
            .store
            .list_api_tokens(&caller.tenant, principal, page(r.page_size, r.page_token))
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: rows.into_iter().map(token_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = self.authenticate(&req).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            principal: caller.principal,
            role: role_pb(caller.role) as i32,
            client_app: client_app_pb(caller.client_app) as i32,
            sign_in: caller.sign_in.as_str().to_owned(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let caller = self.authenticate(&req).await?;
        let id = req.into_inner().token_id;
        let id = if id.trim().is_empty() {
            if caller.sign_in != store::SignIn::ApiToken {
                return Err(status(
                    ReasonCode::InvalidArgument,
                    "this request was made with an identity provider's token, which writeback cannot revoke; sign out at the identity provider, or name a wbt1 token id",
                ));
            }
            caller.token_id.clone()
        } else {
            id.trim().to_owned()
        };
        let store = &self.cp.store;
        let not_found = || status(ReasonCode::NotFound, format!("no token {id}"));
        let row = store
            .get_api_token(&caller.tenant, &id)
            .await
            .map_err(store_status)?
            .ok_or_else(not_found)?;
        if caller.role != store::Role::GlobalAdmin
            && !row.principal.eq_ignore_ascii_case(&caller.principal)
        {
            // Other principals' tokens are not even acknowledged to exist.
            return Err(not_found());
        }
        store
            .revoke_api_token(&caller.tenant, &id)
            .await
            .map_err(store_status)?;
        let row = store
            .get_api_token(&caller.tenant, &id)
            .await
            .map_err(store_status)?
            .ok_or_else(not_found)?;
        tracing::info!(tenant = %caller.tenant, by = %caller.principal, token_id = %id,
            principal = %row.principal, "api token revoked");
        self.audit_admin(
            &caller,
            "token.revoke",
            &format!("token:{id}"),
            serde_json::json!({ "principal": row.principal }),
        )
        .await?;
        Ok(Response::new(token_pb(row)))
    }
}
