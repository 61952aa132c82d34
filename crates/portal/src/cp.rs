//! The portal is a client of the control plane's gRPC API like any other
//! integrator: TLS to the tenant CA, and each call carries the signed-in
//! person's access token, so the control plane decides what they may do.

use std::path::Path;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use writeback_core::failure_of;
use writeback_identity::{tls, transport};
use writeback_proto::v1 as pb;

/// A failure as the portal shows it: the stable reason and the sentence.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// e.g. `PASSWORD_TOO_SHORT`.
    pub reason: String,
    /// The control plane's sentence.
    pub message: String,
    /// Seconds to wait, when the answer says.
    pub retry_after: Option<u64>,
}

impl From<tonic::Status> for Refusal {
    fn from(s: tonic::Status) -> Refusal {
        let f = failure_of(&s);
        Refusal {
            reason: f.reason.as_str().to_owned(),
            message: f.message,
            retry_after: f.retry_after.map(|d| d.as_secs()),
        }
    }
}

/// The control plane's API.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    channel: Channel,
}

macro_rules! service {
    ($name:ident, $client:ty) => {
        /// A client of this service.
        pub fn $name(&self) -> $client {
            <$client>::new(self.channel.clone())
        }
    };
}

impl ControlPlane {
    /// A (lazy) channel to `url`, trusting the CA in `ca_file`.
    pub fn connect(url: &str, ca_file: &Path) -> anyhow::Result<ControlPlane> {
        let ca = std::fs::read_to_string(ca_file)
            .with_context(|| format!("reading {}", ca_file.display()))?;
        let config = tls::client_config(tls::roots_from_pem(&ca)?, None)?;
        Ok(ControlPlane {
            channel: transport::channel(url, config)?,
        })
    }

    /// `msg` with the person's bearer token.
    pub fn request<T>(&self, token: &SecretString, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Ok(mut v) = MetadataValue::try_from(format!("Bearer {}", token.expose_secret())) {
            v.set_sensitive(true);
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    /// `ResetPassword` as `token`'s holder.
    pub async fn reset(
        &self,
        token: &SecretString,
        req: pb::ResetPasswordRequest,
    ) -> Result<pb::OperationResponse, Refusal> {
        let r = self
            .passwords()
            .reset_password(self.request(token, req))
            .await;
        r.map(tonic::Response::into_inner).map_err(Refusal::from)
    }

    /// `ChangePassword` as `token`'s holder.
    pub async fn change(
        &self,
        token: &SecretString,
        req: pb::ChangePasswordRequest,
    ) -> Result<pb::OperationResponse, Refusal> {
        let r = self
            .passwords()
            .change_password(self.request(token, req))
            .await;
        r.map(tonic::Response::into_inner).map_err(Refusal::from)
    }

    /// `UnlockAccount` as `token`'s holder.
    pub async fn unlock(
        &self,
        token: &SecretString,
        req: pb::UnlockAccountRequest,
    ) -> Result<pb::OperationResponse, Refusal> {
        let r = self
            .passwords()
            .unlock_account(self.request(token, req))
            .await;
        r.map(tonic::Response::into_inner).map_err(Refusal::from)
    }

    /// `WhoAmI`: the role the control plane gives `token`'s holder.
    pub async fn role(&self, token: &SecretString) -> Result<pb::Role, Refusal> {
        let r = self
            .tokens()
            .who_am_i(self.request(token, pb::WhoAmIRequest {}))
            .await;
        r.map(|r| r.into_inner().role()).map_err(Refusal::from)
    }

    /// `SearchUsers` as `token`'s holder (every domain of the tenant).
    pub async fn search_users(
        &self,
        token: &SecretString,
        query: &str,
    ) -> Result<pb::SearchUsersResponse, Refusal> {
        let r = self
            .directory()
            .search_users(self.request(
                token,
                pb::SearchUsersRequest {
                    query: query.to_owned(),
                    ..Default::default()
                },
            ))
            .await;
        r.map(tonic::Response::into_inner).map_err(Refusal::from)
    }

    service!(
        directory,
        pb::directory_service_client::DirectoryServiceClient<Channel>
    );
    service!(
        passwords,
        pb::password_service_client::PasswordServiceClient<Channel>
    );
    service!(
        quality,
        pb::password_quality_service_client::PasswordQualityServiceClient<Channel>
    );
    service!(
        settings,
        pb::settings_service_client::SettingsServiceClient<Channel>
    );
    service!(
        agents,
        pb::agent_service_client::AgentServiceClient<Channel>
    );
    service!(audit, pb::audit_service_client::AuditServiceClient<Channel>);
    service!(
        tokens,
        pb::token_service_client::TokenServiceClient<Channel>
    );
}
