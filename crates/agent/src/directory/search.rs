//! The help desk's "find a user": users whose `userPrincipalName`,
//! `sAMAccountName`, `displayName`, `givenName`, `sn` or `mail` starts with a
//! query, within the agent's scope, each with whether writeback may act on it.
//!
//! One subtree search per scope base (one, the domain root, when no OU is
//! configured), with the scope group — when one is configured — as a
//! `memberOf` clause of the same filter (direct members only, as
//! [`super::eligibility`] checks it), and a size limit of one more than asked
//! so "more results than shown" is known without reading them. The query is
//! escaped (RFC 4515, [`ldap3::ldap_escape`]) before it reaches the filter;
//! it is never spliced in raw.
//!
//! Every user found is then judged as an operation on it would be — the
//! protected-account checks of [`super::eligibility`] on its `tokenGroups`
//! (one base search per user, which also reads
//! `msDS-User-Account-Control-Computed` for the lockout state) — and shown
//! with `eligible = false` and the reason an operation would get, rather than
//! left out: a help desk that cannot find an administrator would not know
//! why. Disabled accounts are shown the same way (`ACCOUNT_DISABLED`).

use ldap3::ldap_escape;
use writeback_core::ReasonCode;

use super::eligibility::{USER_ATTRS, User, check_protected, unreadable};
use super::session::Session;
use super::wire::{self, RawEntry};
use super::{Directory, DirectoryError, ProtectedBy};

/// Shortest query: one character would match a large part of any directory.
pub const MIN_QUERY_CHARS: usize = 2;
/// Longest query (longer than any name worth typing).
pub const MAX_QUERY_CHARS: usize = 64;
/// Most users one search returns.
pub const MAX_RESULTS: u32 = 25;

/// The attributes a prefix is matched against.
pub const SEARCHED_ATTRS: &[&str] = &[
    "userPrincipalName",
    "sAMAccountName",
    "displayName",
    "givenName",
    "sn",
    "mail",
];

/// `msDS-User-Account-Control-Computed`'s "locked out" bit.
const UF_LOCKOUT: i64 = 0x10;

/// One user a search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUser {
    /// `userPrincipalName` (empty when unset).
    pub upn: String,
    /// `displayName` (empty when unset).
    pub display_name: String,
    /// `objectGUID`.
    pub guid: Option<uuid::Uuid>,
    /// `sAMAccountName`.
    pub account_name: String,
    /// `mail` (empty when unset).
    pub mail: String,
    /// Not disabled.
    pub enabled: bool,
    /// Locked out now.
    pub locked_out: bool,
    /// Why writeback may not act on the account (the reason and sentence an
    /// operation would get); `None` when it may.
    pub ineligible: Option<(ReasonCode, String)>,
}

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchAnswer {
    /// At most the limit asked, by display name then UPN.
    pub users: Vec<FoundUser>,
    /// More users match than were returned.
    pub truncated: bool,
}

/// Checks a query: trimmed, [`MIN_QUERY_CHARS`] to [`MAX_QUERY_CHARS`]
/// characters, no control characters (NUL included). Returns it trimmed.
pub fn check_query(query: &str) -> Result<&str, DirectoryError> {
    let q = query.trim();
    let n = q.chars().count();
    if n < MIN_QUERY_CHARS {
        return Err(DirectoryError::InvalidRequest(
            "the query is shorter than 2 characters",
        ));
    }
    if n > MAX_QUERY_CHARS {
        return Err(DirectoryError::InvalidRequest(
            "the query is longer than 64 characters",
        ));
    }
    if q.chars().any(char::is_control) {
        return Err(DirectoryError::InvalidRequest(
            "the query contains control characters",
        ));
    }
    Ok(q)
}

/// The filter for users whose searched attributes start with `query`,
/// escaped (RFC 4515): `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`,
/// `\5c` and `\00`; other characters (non-ASCII included) stay as UTF-8,
/// which RFC 4515 allows. With a scope group, only its direct members.
pub fn search_filter(query: &str, scope_group_dn: Option<&str>) -> String {
    let value = ldap_escape(query);
    let any: String = SEARCHED_ATTRS
        .iter()
        .map(|a| format!("({a}={value}*)"))
        .collect();
    let group = scope_group_dn
        .map(|g| format!("(memberOf={})", ldap_escape(g)))
        .unwrap_or_default();
    format!("(&(objectCategory=person)(objectClass=user)(|{any}){group})")
}

impl Directory {
    /// Users of the scope matching `query` (a prefix), at most `limit`
    /// (clamped to 1..=[`MAX_RESULTS`]), each judged eligible or not.
    #[tracing::instrument(skip_all, fields(limit, dc))]
    pub async fn search_users(
        &self,
        query: &str,
        limit: u32,
    ) -> Result<SearchAnswer, DirectoryError> {
        let query = check_query(query)?;
        let limit = limit.clamp(1, MAX_RESULTS);
        with_session!(self, |s| self.search_on(s, query, limit).await)
    }

    async fn search_on(
        &self,
        s: &mut Session,
        query: &str,
        limit: u32,
    ) -> Result<SearchAnswer, DirectoryError> {
        let domain = self.domain(s).await?;
        let filter = search_filter(query, self.inner.config.scope_group_dn.as_deref());
        let bases = if domain.scope_bases.is_empty() {
            vec![domain.root_dn.clone()]
        } else {
            domain.scope_bases.clone()
        };
        let mut attrs: Vec<&str> = USER_ATTRS.to_vec();
        attrs.extend(["userPrincipalName", "mail"]);
        let size = i32::try_from(limit).unwrap_or(i32::MAX).saturating_add(1);
        let mut entries: Vec<RawEntry> = Vec::new();
        let mut truncated = false;
        for base in &bases {
            let (found, cut) = s.search_sized(base, &filter, &attrs, size).await?;
            truncated |= cut;
            for e in found {
                // Nested scope OUs return the same user twice.
                if !entries.iter().any(|k| k.dn.eq_ignore_ascii_case(&e.dn)) {
                    entries.push(e);
                }
            }
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if entries.len() > limit {
            truncated = true;
        }
        let mut found: Vec<(FoundUser, User, bool)> = entries
            .into_iter()
            .map(|e| {
                let upn = e.text("userPrincipalName").unwrap_or_default().to_owned();
                let mail = e.text("mail").unwrap_or_default().to_owned();
                let uac_read = e.first("userAccountControl").is_some();
                let user = User::from_entry(e);
                let found = FoundUser {
                    upn,
                    display_name: user.display_name.clone().unwrap_or_default(),
                    guid: user.guid,
                    account_name: user.sam.clone(),
                    mail,
                    enabled: user.uac & wire::UF_ACCOUNTDISABLE == 0,
                    locked_out: false,
                    ineligible: None,
                };
                (found, user, uac_read)
            })
            .collect();
        found.sort_by(|(a, ..), (b, ..)| {
            let key = |u: &FoundUser| {
                let name = if u.display_name.is_empty() {
                    &u.upn
                } else {
                    &u.display_name
                };
                (name.to_lowercase(), u.upn.to_lowercase())
            };
            key(a).cmp(&key(b))
        });
        found.truncate(limit);
        let mut users = Vec::with_capacity(found.len());
        for (mut f, user, uac_read) in found {
            let (locked_out, verdict) = self.judge(s, &domain, &user, uac_read).await?;
            f.locked_out = locked_out;
            f.ineligible = verdict.map(|e| (e.reason(), e.public_message()));
            users.push(f);
        }
        tracing::info!(found = users.len(), truncated, "directory search answered");
        Ok(SearchAnswer { users, truncated })
    }

    /// Whether `user` is locked out, and why writeback may not act on it
    /// (`None`: it may). Directory failures (not refusals) are errors.
    async fn judge(
        &self,
        s: &mut Session,
        domain: &super::domain::DomainInfo,
        user: &User,
        uac_read: bool,
    ) -> Result<(bool, Option<DirectoryError>), DirectoryError> {
        let protected = |by| DirectoryError::ProtectedAccount {
            dn: user.dn.clone(),
            by,
        };
        // Fail closed, as an operation would.
        if let Some(attr) = unreadable(user, uac_read) {
            return Ok((false, Some(protected(ProtectedBy::Unverifiable(attr)))));
        }
        let entries = s
            .search_ok(
                &user.object_dn,
                ldap3::Scope::Base,
                "(objectClass=*)",
                &["tokenGroups", "msDS-User-Account-Control-Computed"],
            )
            .await?;
        let entry = entries.first();
        let locked_out = entry
            .and_then(|e| e.int("msDS-User-Account-Control-Computed"))
            .is_some_and(|v| v & UF_LOCKOUT != 0);
        let sids = entry
            .map(|e| {
                e.values("tokenGroups")
                    .iter()
                    .filter_map(|v| wire::Sid::from_bytes(v))
                    .collect()
            })
            .unwrap_or_default();
        match check_protected(s, domain, user, sids).await {
            Ok(()) => {}
            Err(e @ DirectoryError::ProtectedAccount { .. }) => return Ok((locked_out, Some(e))),
            Err(e) => return Err(e),
        }
        if user.uac & wire::UF_ACCOUNTDISABLE != 0 {
            return Ok((
                locked_out,
                Some(DirectoryError::AccountDisabled {
                    dn: user.dn.clone(),
                }),
            ));
        }
        Ok((locked_out, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the help desk types stays a value: the filter parses, has
    /// exactly the clauses we built, and the special characters are escaped.
    #[test]
    fn the_query_is_escaped_never_spliced() {
        for (query, escaped) in [
            ("al", "al"),
            ("*", "\\2a"),
            ("a*)(objectClass=*", "a\\2a\\29\\28objectClass=\\2a"),
            ("(cn=x)", "\\28cn=x\\29"),
            ("back\\slash", "back\\5cslash"),
            ("nul\0byte", "nul\\00byte"),
            ("Zoë Ångström", "Zoë Ångström"),
            ("渡辺", "渡辺"),
        ] {
            let f = search_filter(query, None);
            for attr in SEARCHED_ATTRS {
                assert!(
                    f.contains(&format!("({attr}={escaped}*)")),
                    "{query:?}: {f}"
                );
            }
            let parsed = ldap3::parse_filter(&f);
            assert!(parsed.is_ok(), "{query:?}: {f}");
            // Exactly one wildcard per clause: the one we added.
            assert_eq!(
                f.matches('*').count(),
                SEARCHED_ATTRS.len(),
                "{query:?}: {f}"
            );
        }
    }

    #[test]
    fn the_scope_group_is_a_clause_of_the_same_filter() {
        let f = search_filter("al", Some("CN=Help (EU),OU=x,DC=contoso,DC=test"));
        assert!(
            f.ends_with("(memberOf=CN=Help \\28EU\\29,OU=x,DC=contoso,DC=test))"),
            "{f}"
        );
        assert!(ldap3::parse_filter(&f).is_ok());
    }

    #[test]
    fn queries_are_bounded() {
        assert_eq!(check_query("  al ").unwrap(), "al");
        assert_eq!(check_query("渡辺").unwrap(), "渡辺");
        for bad in ["", " ", "a", " a ", "nul\0", "tab\there"] {
            assert!(
                matches!(check_query(bad), Err(DirectoryError::InvalidRequest(_))),
                "{bad:?}"
            );
        }
        assert!(check_query(&"x".repeat(65)).is_err());
        assert!(check_query(&"x".repeat(64)).is_ok());
    }
}
