//! The offline admin commands of `writeback-control-plane` — `init`,
//! `token`, `relay-cert`, `signing-key rotate|promote` — as the binary runs
//! them: each does its work ([`crate::bootstrap`]) and then records it in
//! the administrative trail of the tenant it concerns (for the
//! operation-signing key, which every tenant shares, of every tenant), like
//! a change made through the API. The one who acted is the operating-system
//! account that ran the command (`offline:<name>`, client app `offline`,
//! with its uid and the host in the details): these commands need the data
//! dir and the database, not a token, so they can mint a global
//! administrator's token, a relay's certificate or a signing key that no
//! API call would have recorded. A command whose record cannot be written
//! fails, saying that its work was done but not recorded (the same rule as
//! [`crate::api::Api`]'s `audit_admin`); `relay-cert` checks the tenant
//! first and issues nothing for a tenant the database does not have.
//! `signing-key status` only reads and records nothing.

use std::net::IpAddr;
use std::path::Path;

use serde_json::json;

use crate::bootstrap::{self, Initialized};
use crate::store::{ClientApp, NewAdminEvent, Role, Store};
use crate::{ControlPlaneConfig, ControlPlaneError};

/// The client app of the offline commands' records.
pub const CLIENT_APP: &str = "offline";

/// Who ran an offline command: the operating-system account.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The account's name (`SUDO_USER`, `USER` or `LOGNAME`, else
    /// `uid:<n>`).
    pub name: String,
    /// The process's real uid, when it can be read.
    pub uid: Option<u32>,
    /// The host's name, when it can be read.
    pub host: Option<String>,
}

impl Operator {
    /// The account running this process.
    pub fn current() -> Operator {
        use std::os::unix::fs::MetadataExt as _;
        let uid = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
        let name = ["SUDO_USER", "USER", "LOGNAME"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .map(|n| n.trim().chars().take(64).collect::<String>())
            .find(|n| !n.is_empty() && !n.chars().any(char::is_control))
            .or_else(|| uid.map(|u| format!("uid:{u}")))
            .unwrap_or_else(|| "unknown".to_owned());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        Operator { name, uid, host }
    }

    /// The principal the trail names: `offline:<name>`.
    pub fn principal(&self) -> String {
        format!("offline:{}", self.name)
    }
}

/// Records offline command `action` on `object` in `tenant`'s
/// administrative trail, by `who`.
pub async fn record(
    store: &Store,
    tenant: &str,
    who: &Operator,
    action: &str,
    object: &str,
    details: serde_json::Value,
) -> Result<(), ControlPlaneError> {
    let mut details = details;
    if let Some(map) = details.as_object_mut() {
        map.insert("uid".into(), json!(who.uid));
        map.insert("host".into(), json!(who.host));
    }
    store
        .record_admin_event(
            tenant,
            NewAdminEvent {
                principal: &who.principal(),
                client_app: CLIENT_APP,
                action,
                object,
                details,
            },
        )
        .await
        .map_err(|e| {
            ControlPlaneError::Config(format!(
                "{action} was done, but the administrative audit trail of tenant {tenant} could \
                 not record it ({e}); record it by hand and check the database"
            ))
        })?;
    tracing::info!(tenant, by = %who.principal(), action, object, "offline command recorded");
    Ok(())
}

/// `init`, recorded: `tenant.init` (what was created) and `token.create`
/// (the administrator's token).
pub async fn init(
    config: &ControlPlaneConfig,
    tenant: &str,
    admin: &str,
    client_app: ClientApp,
    token_file: &Path,
    who: &Operator,
) -> Result<Initialized, ControlPlaneError> {
    let done = bootstrap::init(config, tenant, admin, client_app, token_file).await?;
    let store = Store::connect(&config.database_url()).await?;
    record(
        &store,
        tenant,
        who,
        "tenant.init",
        &format!("tenant:{tenant}"),
        json!({
            "created_tenant": done.created_tenant,
            "created_ca": done.created_ca,
            "ca_fingerprint": done.ca_fingerprint,
            "created_signing_key": done.created_signing_key,
        }),
    )
    .await?;
    record(
        &store,
        tenant,
        who,
        "token.create",
        &format!("token:{}", done.token_id),
        json!({
            "principal": crate::auth::normalize_principal(admin).unwrap_or_default(),
            "role": Role::GlobalAdmin.as_str(),
            "client_app": client_app.as_str(),
            "expires_at_ms": null,
        }),
    )
    .await?;
    Ok(done)
}

/// `token`, recorded as `token.create`.
#[allow(clippy::too_many_arguments)]
pub async fn token(
    store: &Store,
    tenant: &str,
    principal: &str,
    role: Role,
    client_app: ClientApp,
    expires_at_ms: Option<i64>,
    token_file: &Path,
    who: &Operator,
) -> Result<(), ControlPlaneError> {
    if !store.tenant_exists(tenant).await? {
        return Err(no_tenant(tenant));
    }
    let token_id = bootstrap::issue_token(
        store,
        tenant,
        principal,
        role,
        client_app,
        expires_at_ms,
        token_file,
    )
    .await?;
    record(
        store,
        tenant,
        who,
        "token.create",
        &format!("token:{token_id}"),
        json!({
            "principal": crate::auth::normalize_principal(principal).unwrap_or_default(),
            "role": role.as_str(),
            "client_app": client_app.as_str(),
            "expires_at_ms": expires_at_ms,
        }),
    )
    .await
}

/// `relay-cert`, recorded as `relay.issue_certificate`; refused for a tenant
/// the database does not have.
pub async fn relay_cert(
    config: &ControlPlaneConfig,
    tenant: &str,
    relay_id: &str,
    dns: &[String],
    ips: &[IpAddr],
    out_dir: &Path,
    who: &Operator,
) -> Result<(), ControlPlaneError> {
    let store = Store::connect(&config.database_url()).await?;
    if !store.tenant_exists(tenant).await? {
        return Err(no_tenant(tenant));
    }
    let fingerprint = bootstrap::issue_relay_cert(config, tenant, relay_id, dns, ips, out_dir)?;
    record(
        &store,
        tenant,
        who,
        "relay.issue_certificate",
        &format!("relay:{relay_id}"),
        json!({
            "dns_names": dns,
            "ip_addresses": ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "cert_fingerprint": fingerprint,
            "out_dir": out_dir.display().to_string(),
        }),
    )
    .await
}

/// `signing-key rotate`, recorded as `signing_key.rotate` in every tenant;
/// returns the next key's id.
pub async fn rotate_signing_key(
    config: &ControlPlaneConfig,
    who: &Operator,
) -> Result<String, ControlPlaneError> {
    let store = Store::connect(&config.database_url()).await?;
    let id = bootstrap::rotate_signing_key(&config.data_dir)?;
    record_everywhere(
        &store,
        who,
        "signing_key.rotate",
        &format!("signing_key:{id}"),
        json!({ "next_key_id": id }),
    )
    .await?;
    Ok(id)
}

/// `signing-key promote`, recorded as `signing_key.promote` in every
/// tenant; returns (old key id, new key id).
pub async fn promote_signing_key(
    config: &ControlPlaneConfig,
    who: &Operator,
) -> Result<(String, String), ControlPlaneError> {
    let store = Store::connect(&config.database_url()).await?;
    let (old, new) = bootstrap::promote_signing_key(&config.data_dir)?;
    record_everywhere(
        &store,
        who,
        "signing_key.promote",
        &format!("signing_key:{new}"),
        json!({ "retired_key_id": old, "signing_key_id": new }),
    )
    .await?;
    Ok((old, new))
}

/// [`record`] in every tenant's trail (the signing key is every tenant's).
async fn record_everywhere(
    store: &Store,
    who: &Operator,
    action: &str,
    object: &str,
    details: serde_json::Value,
) -> Result<(), ControlPlaneError> {
    for tenant in store.tenant_ids().await? {
        record(store, &tenant, who, action, object, details.clone()).await?;
    }
    Ok(())
}

fn no_tenant(tenant: &str) -> ControlPlaneError {
    ControlPlaneError::Config(format!(
        "the database has no tenant {tenant:?}: create it with `writeback-control-plane init \
         --tenant {tenant}` first"
    ))
}
