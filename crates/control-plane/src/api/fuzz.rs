//! The entry point of the `cp_request` fuzz target (`fuzz/`, see the README's
//! "Fuzzing and supply chain"): a request as a client could send it — its
//! protobuf body, decoded the way tonic decodes it — through the checks the
//! handlers run before they touch the store, the CA or a relay. Not an API:
//! the checks stay private and this module is `#[doc(hidden)]`.

use prost::Message;
use writeback_identity::{Ca, EnrollmentToken, SpiffeId};
use writeback_proto::v1 as pb;

use crate::auth::{Bearer, Presented, bearer, normalize_principal, presented_header};
use crate::store::{decode_page_token, encode_page_token};

/// The page-token kinds the store hands out.
const PAGE_KINDS: [char; 6] = ['a', 'd', 'k', 'n', 'o', 's'];

/// The first byte picks the request, the rest is its protobuf body. Each
/// check must not panic, and what it accepts must be accepted again unchanged
/// (a normalized value is a fixed point), so a request stored and re-read or
/// forwarded to an agent means the same thing.
pub fn request(bytes: &[u8]) {
    let Some((&which, body)) = bytes.split_first() else {
        return;
    };
    match which % 7 {
        0 => {
            if let Ok(r) = pb::ResetPasswordRequest::decode(body) {
                password(&r.new_password);
                user(r.user);
            }
        }
        1 => {
            if let Ok(r) = pb::ChangePasswordRequest::decode(body) {
                password(&r.new_password);
                password(&r.old_password);
                user(r.user);
            }
        }
        2 => {
            if let Ok(r) = pb::UnlockAccountRequest::decode(body) {
                user(r.user);
                principal(&r.domain);
            }
        }
        3 => {
            if let Ok(r) = pb::AddDomainRequest::decode(body)
                && let Ok((name, suffixes)) = super::domain_names(&r)
            {
                let again = pb::AddDomainRequest {
                    name: name.clone(),
                    upn_suffixes: suffixes.clone(),
                };
                let Ok(twice) = super::domain_names(&again) else {
                    panic!("accepted domain names refused on a second look: {name:?}");
                };
                assert_eq!(twice, (name, suffixes));
            }
        }
        4 => {
            if let Ok(r) = pb::EnrollRequest::decode(body) {
                if let Ok(token) = EnrollmentToken::parse(&r.token) {
                    assert_eq!(EnrollmentToken::parse(&token.expose()).ok(), Some(token));
                }
                let _ = Ca::check_csr(&r.csr_pem);
            }
        }
        5 => {
            if let Ok(r) = pb::Issuer::decode(body)
                && let Ok(issuer) = super::identity::issuer_of(r)
            {
                let again = super::identity::issuer_of(super::identity::issuer_pb(issuer.clone()));
                assert_eq!(again.ok(), Some(issuer), "an accepted issuer changed");
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            for kind in PAGE_KINDS {
                if let Ok(key) = decode_page_token(kind, &text) {
                    let again = decode_page_token(kind, &encode_page_token(kind, &key));
                    assert_eq!(again.ok(), Some(key));
                }
            }
            principal(&text);
        }
    }
}

/// A credential as it arrives: the value of an `authorization` header (an API
/// token `wbt1.…` or an identity provider's JWT, read unverified for routing
/// and for the security trail, then refused by the signature check), an
/// enrollment token `wbe1.…`, and a certificate's SPIFFE identity. Whatever
/// the security trail records of a refused credential never holds the
/// credential itself.
pub fn token(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let presented = presented_header(text);
    match bearer(text) {
        Some(Bearer::Jwt(jwt)) => {
            crate::oidc::fuzz_token(jwt);
            assert!(matches!(presented, Presented::Jwt { .. }));
            // No false positive here: every printed field is a claim decoded
            // from the token's payload, which is shorter than the token.
            if jwt.len() >= 16 {
                assert!(
                    !format!("{presented:?}").contains(jwt),
                    "the trail holds the token"
                );
            }
        }
        Some(Bearer::ApiToken(api)) => {
            let hash = writeback_identity::token::sha256_hex(api.as_bytes());
            assert_eq!(presented, Presented::ApiToken { hash });
        }
        None => assert_eq!(presented, Presented::Malformed),
    }
    if let Ok(token) = EnrollmentToken::parse(text) {
        assert_eq!(
            EnrollmentToken::parse(&token.expose()).ok(),
            Some(token.clone())
        );
        debug_hides_secret(token);
    }
    if let Ok(id) = text.parse::<SpiffeId>() {
        assert_eq!(id.to_string().parse::<SpiffeId>().ok(), Some(id));
    }
}

/// `Debug` of an enrollment token must not show its secret. The input's own
/// secret cannot be the probe: `Debug` prints the token id and the CA
/// fingerprint, and a secret equal to the fingerprint (both are 64 hex
/// digits) "appears" without leaking (the false positive a fresh machine's
/// fuzz run once found, `fuzz/corpus/token/regression-secret-is-fingerprint`).
/// So the check plants a secret that no printed field can hold: every digit
/// of the fingerprint moved one step along the hex alphabet, which differs
/// from the fingerprint in every place, and no other run of 64 hex digits is
/// printed.
fn debug_hides_secret(mut token: EnrollmentToken) {
    token.secret = token
        .ca_fingerprint
        .chars()
        .map(|c| {
            let next = c.to_digit(16).map_or(0, |d| (d + 1) % 16);
            char::from_digit(next, 16).unwrap_or('0')
        })
        .collect();
    assert!(
        !format!("{token:?}").contains(&token.secret),
        "Debug shows the secret"
    );
}

fn password(p: &str) {
    if super::check_password(p, "password").is_ok() {
        assert!(!p.is_empty() && !p.contains('\0'));
        assert!(p.chars().count() <= super::MAX_PASSWORD_CHARS);
    }
}

fn user(u: Option<pb::UserRef>) {
    let Some(u) = u else { return };
    let Ok(once) = super::normalize_user(u) else {
        return;
    };
    if let Some(pb::user_ref::By::Upn(upn)) = &once.by
        && let Ok(suffix) = super::passwords::upn_suffix(upn)
    {
        assert!(!suffix.contains('@'), "{upn:?}");
    }
    let twice = super::normalize_user(once.clone()).ok();
    assert_eq!(twice.as_ref(), Some(&once), "a normalized user changed");
}

fn principal(name: &str) {
    if let Ok(once) = normalize_principal(name) {
        assert_eq!(normalize_principal(&once).as_deref(), Ok(once.as_str()));
    }
}

#[cfg(test)]
mod tests {
    /// The `cp_request` and `token` seeds pass their checks here as well as
    /// under libFuzzer, so a change to a check that breaks a seed shows in
    /// the ordinary test run.
    #[test]
    fn the_seed_corpus_passes() {
        writeback_envelope::fuzz::run_seeds(&[
            ("cp_request", super::request as fn(&[u8])),
            ("token", super::token),
        ]);
    }
}
