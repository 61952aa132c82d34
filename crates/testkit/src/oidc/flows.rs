//! Signing users and clients in at the provider: the authorization URL
//! with PKCE, the password, client-credentials and MFA (password + HOTP,
//! then the authorization code flow) grants, and what a user's authenticator
//! would show.

use super::*;

impl OidcProvider {
    /// `<issuer>/auth?response_type=code&…` for a browser: `scope` space-separated
    /// (`openid` first is usual), the PKCE challenge (S256) of `pkce`, and
    /// `resource` = [`AUDIENCE`] so the access token's `aud` is [`AUDIENCE`].
    pub fn authorization_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
        state: &str,
        pkce: &Pkce,
    ) -> Result<url::Url, TestkitError> {
        let mut auth = url::Url::parse(&format!("{}/auth", self.issuer))
            .map_err(|e| TestkitError::InvalidInput(format!("auth url: {e}")))?;
        auth.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", scope)
            .append_pair("resource", AUDIENCE)
            .append_pair("state", state)
            .append_pair("nonce", &random_alnum(16)?)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(auth)
    }

    /// `<base>/login.html`: glewlwyd's own login page (served from the package's
    /// web app, see the module docs), where `/auth` sends a browser to sign in.
    pub fn login_page_url(&self) -> String {
        format!("{}/login.html", self.public_base)
    }

    /// The next HOTP code of `user` (added with [`OidcProvider::add_user`]), as
    /// their authenticator app would show it; the counter moves on, so each code
    /// is handed out once.
    pub async fn next_hotp_code(&self, user: &str) -> Result<String, TestkitError> {
        let mut otp = self.otp.lock().await;
        let hotp = otp.get_mut(user).ok_or_else(|| {
            TestkitError::InvalidInput(format!("{user} was not added with add_user"))
        })?;
        let code = hotp_code(&hotp.secret, hotp.counter)?;
        hotp.counter += 1;
        Ok(code)
    }

    /// The `otpauth://hotp/…` URI of `user`'s HOTP secret (added with
    /// [`OidcProvider::add_user`]) at its current counter, for an authenticator
    /// app; the local stack hands it to its demo users (a secret: keep it in a
    /// 0600 file, never in a log line).
    pub async fn hotp_uri(&self, user: &str) -> Result<String, TestkitError> {
        let otp = self.otp.lock().await;
        let hotp = otp.get(user).ok_or_else(|| {
            TestkitError::InvalidInput(format!("{user} was not added with add_user"))
        })?;
        Ok(format!(
            "otpauth://hotp/writeback:{user}?secret={}&counter={}&digits=6&algorithm=SHA1&issuer=writeback",
            base32(&hotp.secret),
            hotp.counter
        ))
    }

    /// An access token from the password grant (no MFA): scope and `aud`
    /// [`AUDIENCE`].
    pub async fn password_token(
        &self,
        client_id: &str,
        secret: &str,
        user: &str,
        password: &str,
    ) -> Result<String, TestkitError> {
        let body = self
            .token_request(
                "password grant",
                client_id,
                secret,
                &[
                    ("grant_type", "password"),
                    ("username", user),
                    ("password", password),
                    ("scope", AUDIENCE),
                ],
            )
            .await?;
        access_token("password grant", &body)
    }

    /// An access token for the client itself (client-credentials grant): scope and
    /// `aud` [`AUDIENCE`], `sub` = `client_id`.
    pub async fn client_credentials_token(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<String, TestkitError> {
        let body = self
            .token_request(
                "client credentials grant",
                client_id,
                secret,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", AUDIENCE),
                    ("resource", AUDIENCE),
                ],
            )
            .await?;
        access_token("client credentials grant", &body)
    }

    /// An access token after password + HOTP: a fresh session signs in with both
    /// through glewlwyd's auth API, grants the client the scopes, and runs the
    /// authorization code flow with plain requests. The token has `aud`
    /// [`AUDIENCE`] and scope [`AUDIENCE`] + [`MFA_SCOPE`] (+ `openid`); the flow's
    /// id_token must show `amr` `["password", "otp"]`, else this fails.
    pub async fn mfa_token(
        &self,
        client_id: &str,
        secret: &str,
        user: &str,
        password: &str,
    ) -> Result<String, TestkitError> {
        let cookie = self.sign_in(user, password).await?;
        let mut otp = self.otp.lock().await;
        let hotp = otp.get_mut(user).ok_or_else(|| {
            TestkitError::InvalidInput(format!("{user} was not added with add_user"))
        })?;
        let code = hotp_code(&hotp.secret, hotp.counter)?;
        self.user_auth(
            "hotp sign-in",
            &cookie,
            json!({
                "username": user,
                "scheme_type": "otp",
                "scheme_name": OTP_SCHEME,
                "value": {"value": code},
            }),
        )
        .await?;
        hotp.counter += 1;
        drop(otp);

        let scope = format!("openid {AUDIENCE} {MFA_SCOPE}");
        let req = self
            .http
            .put(format!("{}/api/auth/grant/{client_id}", self.base))
            .header(header::COOKIE, &cookie)
            .json(&json!({ "scope": scope }));
        expect_ok("grant scopes", self.send("grant scopes", req).await?).await?;

        let state = random_alnum(16)?;
        let nonce = random_alnum(16)?;
        let mut auth = url::Url::parse(&format!("{}/auth", self.issuer))
            .map_err(|e| TestkitError::InvalidInput(format!("auth url: {e}")))?;
        auth.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("scope", &scope)
            .append_pair("resource", AUDIENCE)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            // What the login page adds once the user is through: "go on, don't show me".
            .append_pair("g_continue", "");
        let resp = self
            .send(
                "authorization request",
                self.http.get(auth).header(header::COOKIE, &cookie),
            )
            .await?;
        let code = authorization_code(resp, &state).await?;

        let body = self
            .token_request(
                "authorization code grant",
                client_id,
                secret,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT_URI),
                ],
            )
            .await?;
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| api_error("authorization code grant", 200, &body))?;
        let (_, claims) = jwt_parts(id_token)?;
        let amr = claims.get("amr").cloned().unwrap_or(Value::Null);
        if !amr
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m == OTP_SCHEME))
        {
            return Err(TestkitError::OidcApi {
                op: "authorization code grant".into(),
                status: 200,
                body: format!("id_token amr {amr} does not show the otp scheme"),
            });
        }
        access_token("authorization code grant", &body)
    }

    /// A new session signed in as `user` with the password; returns its cookie.
    pub(super) async fn sign_in(&self, user: &str, password: &str) -> Result<String, TestkitError> {
        let resp = self
            .send(
                "password sign-in",
                self.http
                    .post(format!("{}/api/auth/", self.base))
                    .json(&json!({"username": user, "password": password})),
            )
            .await?;
        let cookie = session_cookie(&resp);
        expect_ok("password sign-in", resp).await?;
        cookie.ok_or_else(|| TestkitError::OidcApi {
            op: "password sign-in".into(),
            status: 200,
            body: format!("no {SESSION_COOKIE} cookie"),
        })
    }

    pub(super) async fn user_auth(
        &self,
        op: &str,
        cookie: &str,
        body: Value,
    ) -> Result<(), TestkitError> {
        let req = self
            .http
            .post(format!("{}/api/auth/", self.base))
            .header(header::COOKIE, cookie)
            .json(&body);
        expect_ok(op, self.send(op, req).await?).await
    }

    /// POST to the token endpoint with HTTP Basic client authentication; the JSON
    /// body of a 200.
    pub(super) async fn token_request(
        &self,
        op: &str,
        client_id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> Result<Value, TestkitError> {
        let req = self
            .http
            .post(self.token_endpoint())
            .basic_auth(client_id, Some(secret))
            .form(form);
        json_body(op, self.send(op, req).await?).await
    }
}

/// The `code` from the authorization endpoint's redirect to [`REDIRECT_URI`].
pub(super) async fn authorization_code(
    resp: reqwest::Response,
    state: &str,
) -> Result<String, TestkitError> {
    let op = "authorization request";
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(location) = location.clone().filter(|l| l.starts_with(REDIRECT_URI)) else {
        // Anything else (the login page, an error page) means the session was not
        // good enough for the scopes.
        let text = resp.text().await.unwrap_or_default();
        return Err(TestkitError::OidcApi {
            op: op.into(),
            status: status.as_u16(),
            body: format!("no redirect to the client: location {location:?}, body {text}"),
        });
    };
    let url = url::Url::parse(&location)
        .map_err(|e| TestkitError::InvalidInput(format!("redirect {location}: {e}")))?;
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if query.get("state").map(String::as_str) != Some(state) {
        return Err(TestkitError::OidcApi {
            op: op.into(),
            status: status.as_u16(),
            body: format!("redirect without our state: {location}"),
        });
    }
    query
        .get("code")
        .cloned()
        .ok_or_else(|| TestkitError::OidcApi {
            op: op.into(),
            status: status.as_u16(),
            body: format!("redirect without a code: {location}"),
        })
}

pub(super) fn access_token(op: &str, body: &Value) -> Result<String, TestkitError> {
    body.get("access_token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| api_error(op, 200, body))
}
