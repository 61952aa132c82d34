//! The provider's administration through glewlwyd's admin REST API: its
//! first configuration (scopes, the HOTP scheme, the OpenID Connect plugin
//! and its signing key), key rotation and token lifetimes.

use super::*;

impl OidcProvider {
    /// Replace the signing key with a fresh RSA key while the provider runs; returns
    /// the new `kid`, which the JWKS lists (alone) from then on.
    pub async fn rotate_signing_key(&mut self) -> Result<String, TestkitError> {
        let old = self.kid.clone();
        let (key, cert) = self.new_signing_key().await?;
        self.update_plugin(vec![
            ("key", Value::String(key)),
            ("cert", Value::String(cert)),
        ])
        .await?;
        self.kid = self.published_kid().await?;
        if self.kid == old {
            return Err(TestkitError::OidcApi {
                op: "rotate signing key".into(),
                status: 200,
                body: format!("jwks still lists only kid {old}"),
            });
        }
        info!(old_kid = %old, new_kid = %self.kid, "rotated oidc signing key");
        Ok(self.kid.clone())
    }

    /// Access tokens issued from now on live `seconds` (3600 at start), so a
    /// test can hold one that expires.
    pub async fn set_access_token_duration(&self, seconds: u64) -> Result<(), TestkitError> {
        self.update_plugin(vec![("access-token-duration", Value::from(seconds))])
            .await
    }

    /// Sets properties of the user `name` — e.g. `{"upn": …}` or `{"email": …}`
    /// — as a user editing their profile, or one of the provider's
    /// administrators, would: tokens issued from then on carry the new values
    /// (the user's `sub` stays).
    pub async fn update_user(&self, name: &str, set: Value) -> Result<(), TestkitError> {
        let op = format!("update user {name}");
        let mut user = self
            .admin(&op, Method::GET, &format!("user/{name}"), None)
            .await?;
        let (Some(fields), Some(set)) = (user.as_object_mut(), set.as_object()) else {
            return Err(api_error(&op, 200, &user));
        };
        for (k, v) in set {
            fields.insert(k.clone(), v.clone());
        }
        self.admin(&op, Method::PUT, &format!("user/{name}"), Some(user))
            .await?;
        Ok(())
    }

    /// Sets parameters of the OpenID Connect plugin and re-initialises it (it
    /// reads its parameters, keys included, only then).
    pub(super) async fn update_plugin(&self, set: Vec<(&str, Value)>) -> Result<(), TestkitError> {
        let mut plugin = self
            .admin(
                "get oidc plugin",
                Method::GET,
                &format!("mod/plugin/{PLUGIN}"),
                None,
            )
            .await?;
        let Some(params) = plugin.get_mut("parameters").and_then(Value::as_object_mut) else {
            return Err(api_error("get oidc plugin", 200, &plugin));
        };
        for (name, value) in set {
            params.insert(name.into(), value);
        }
        self.admin(
            "update oidc plugin",
            Method::PUT,
            &format!("mod/plugin/{PLUGIN}"),
            Some(plugin),
        )
        .await?;
        self.admin(
            "reset oidc plugin",
            Method::PUT,
            &format!("mod/plugin/{PLUGIN}/reset"),
            None,
        )
        .await?;
        Ok(())
    }

    /// Everything after the admin could sign in: API key, admin password, HOTP
    /// scheme, scopes, OIDC plugin.
    pub(super) async fn configure(&mut self, admin_cookie: &str) -> Result<(), TestkitError> {
        let req = self
            .http
            .post(format!("{}/api/key/", self.base))
            .header(header::COOKIE, admin_cookie);
        let key = json_body("create api key", self.send("create api key", req).await?).await?;
        self.api_key = key
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| api_error("create api key", 200, &key))?
            .to_string();
        // Nobody else on this machine signs in with the package default.
        self.admin(
            "set admin password",
            Method::PUT,
            &format!("user/{}", DEFAULT_ADMIN.0),
            Some(json!({
                "name": "Administrator",
                "enabled": true,
                "scope": ["g_admin", "g_profile"],
                "password": format!("Wb!{}", random_alnum(24)?),
            })),
        )
        .await?;
        self.admin(
            "add hotp scheme",
            Method::POST,
            "mod/scheme/",
            Some(json!({
                "module": "otp",
                "name": OTP_SCHEME,
                "display_name": "HOTP/TOTP",
                "expiration": 600,
                "max_use": 0,
                "allow_user_register": true,
                "parameters": {
                    "otp-length": 6,
                    "issuer": "writeback-test",
                    "secret-minimum-size": 20,
                    "hotp-allow": true,
                    "hotp-window": 10,
                    "totp-allow": false,
                    "totp-window": 30,
                    "totp-start-offset": 0,
                },
            })),
        )
        .await?;
        for (name, scheme) in [
            (AUDIENCE, json!({})),
            (
                MFA_SCOPE,
                json!({"0": [{"scheme_type": "otp", "scheme_name": OTP_SCHEME}]}),
            ),
        ] {
            self.admin(
                &format!("add scope {name}"),
                Method::POST,
                "scope/",
                Some(json!({
                    "name": name,
                    "display_name": name,
                    "description": "writeback test scope",
                    "password_required": true,
                    "password_max_age": 0,
                    "scheme": scheme,
                })),
            )
            .await?;
        }
        let (key, cert) = self.new_signing_key().await?;
        self.admin(
            "add oidc plugin",
            Method::POST,
            "mod/plugin/",
            Some(json!({
                "module": "oidc",
                "name": PLUGIN,
                "display_name": "OpenID Connect",
                "enabled": true,
                "parameters": {
                    "iss": self.issuer,
                    "jwt-type": "rsa",
                    "jwt-key-size": "256",
                    "key": key,
                    "cert": cert,
                    "jwks-show": true,
                    "subject-type": "public",
                    "access-token-duration": 3600,
                    "refresh-token-duration": 1209600,
                    "code-duration": 600,
                    "refresh-token-rolling": false,
                    "allow-non-oidc": true,
                    "auth-type-code-enabled": true,
                    "auth-type-token-enabled": false,
                    "auth-type-id-token-enabled": true,
                    "auth-type-password-enabled": true,
                    "auth-type-client-enabled": true,
                    "auth-type-refresh-enabled": true,
                    "resource-allowed": true,
                    // PKCE (RFC 7636): S256 only; a code issued for a challenge is
                    // exchanged only with its verifier; public clients must use it.
                    "pkce-allowed": true,
                    "pkce-method-plain-allowed": false,
                    "pkce-required-public-client": true,
                    "resource-scope": {AUDIENCE: [AUDIENCE], MFA_SCOPE: [AUDIENCE]},
                    "resource-scope-and-client-property": false,
                    "additional-parameters": [
                        {"user-parameter": "upn", "token-parameter": "upn"},
                        {"user-parameter": "groups", "token-parameter": "groups"},
                        {"user-parameter": "email", "token-parameter": "email"},
                    ],
                },
            })),
        )
        .await?;
        self.kid = self.published_kid().await?;
        Ok(())
    }

    /// A fresh RSA-2048 key pair (PEM private key, PEM public key) from openssl.
    pub(super) async fn new_signing_key(&mut self) -> Result<(String, String), TestkitError> {
        self.key_seq += 1;
        let key = self
            .dir_path
            .join(format!("keys/sign-{}.key", self.key_seq));
        let kept = self.kept_key.as_ref().filter(|_| self.key_seq == 1);
        if let Some(kept) = kept.filter(|k| k.exists()) {
            std::fs::copy(kept, &key)
                .map_err(|e| TestkitError::io(format!("copy {}", kept.display()), e))?;
        } else {
            let out = tokio::process::Command::new("openssl")
                .args(["genpkey", "-quiet", "-algorithm", "RSA"])
                .args(["-pkeyopt", "rsa_keygen_bits:2048", "-out"])
                .arg(&key)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| spawn_error("openssl", e))?;
            command_ok("openssl genpkey -algorithm RSA", &out)?;
            if let Some(kept) = kept {
                let pem = std::fs::read(&key)
                    .map_err(|e| TestkitError::io(format!("read {}", key.display()), e))?;
                write_file(kept, &pem, 0o600)?;
            }
        }
        let out = tokio::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| spawn_error("openssl", e))?;
        command_ok("openssl pkey -pubout", &out)?;
        let private = std::fs::read_to_string(&key)
            .map_err(|e| TestkitError::io(format!("read {}", key.display()), e))?;
        Ok((private, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// The single `kid` the JWKS lists.
    pub(super) async fn published_kid(&self) -> Result<String, TestkitError> {
        let jwks = self.jwks().await?;
        match jwks
            .get("keys")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([key]) => key
                .get("kid")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| api_error("get jwks", 200, &jwks)),
            _ => Err(api_error("get jwks", 200, &jwks)),
        }
    }

    /// An admin API call authenticated by the API key; the JSON body, if any.
    pub(super) async fn admin(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, TestkitError> {
        let mut req = self
            .http
            .request(method, format!("{}/api/{path}", self.base))
            .header(header::AUTHORIZATION, format!("token {}", self.api_key));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = self.send(op, req).await?;
        let status = resp.status();
        let text = resp.text().await.map_err(http_error(op))?;
        if status != StatusCode::OK {
            return Err(TestkitError::OidcApi {
                op: op.into(),
                status: status.as_u16(),
                body: self.with_log(text),
            });
        }
        debug!(op, "glewlwyd admin call ok");
        if text.trim().is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_str(&text).map_err(|e| TestkitError::OidcApi {
                op: op.into(),
                status: 200,
                body: format!("{e}: {text}"),
            })
        }
    }

    pub(super) async fn send(
        &self,
        op: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, TestkitError> {
        req.send().await.map_err(http_error(op))
    }

    /// `text` followed by the tail of glewlwyd's log, which says why it refused.
    pub(super) fn with_log(&self, text: String) -> String {
        format!(
            "{text}\nglewlwyd log tail:\n{}",
            tail_lines(&log_tail(&self.dir_path.join(LOG)), 10)
        )
    }
}
