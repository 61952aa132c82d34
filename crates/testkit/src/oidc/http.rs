//! HTTP helpers of the harness's calls to the provider: a client trusting
//! only the provider's CA, session cookies, and errors that name the call
//! and carry the provider's answer.

use super::*;

/// An HTTP client that trusts only the test CA and follows no redirects.
pub(super) fn http_client(ca_pem: &str) -> Result<reqwest::Client, TestkitError> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
        .map_err(|e| TestkitError::InvalidInput(format!("test CA PEM: {e}")))?;
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(http_error("build http client"))
}

/// `GLEWLWYD2_SESSION_ID=<value>` from a response's Set-Cookie headers. glewlwyd
/// sends `Domain=` (empty), which a cookie store may refuse, so the harness keeps
/// the one cookie it needs itself.
pub(super) fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| {
            pair.split_once('=')
                .is_some_and(|(name, value)| name.trim() == SESSION_COOKIE && !value.is_empty())
        })
        .map(|pair| pair.trim().to_string())
}

pub(super) async fn expect_ok(op: &str, resp: reqwest::Response) -> Result<(), TestkitError> {
    let status = resp.status();
    if status == StatusCode::OK {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(TestkitError::OidcApi {
        op: op.into(),
        status: status.as_u16(),
        body,
    })
}

pub(super) async fn json_body(op: &str, resp: reqwest::Response) -> Result<Value, TestkitError> {
    let status = resp.status();
    let text = resp.text().await.map_err(http_error(op))?;
    if status != StatusCode::OK {
        return Err(TestkitError::OidcApi {
            op: op.into(),
            status: status.as_u16(),
            body: text,
        });
    }
    serde_json::from_str(&text).map_err(|e| TestkitError::OidcApi {
        op: op.into(),
        status: status.as_u16(),
        body: format!("{e}: {text}"),
    })
}

pub(super) fn api_error(op: &str, status: u16, body: &Value) -> TestkitError {
    TestkitError::OidcApi {
        op: op.into(),
        status,
        body: body.to_string(),
    }
}

pub(super) fn http_error(op: &str) -> impl FnOnce(reqwest::Error) -> TestkitError {
    let op = op.to_string();
    move |e| TestkitError::Http {
        op,
        detail: error_chain(&e),
    }
}

/// An error with its causes ("a: b: c"); reqwest's own message is only the top.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
