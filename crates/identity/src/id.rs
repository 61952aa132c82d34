//! SPIFFE-style identities carried in certificate URI SANs.

use std::fmt;
use std::str::FromStr;

use crate::Error;

const PREFIX: &str = "spiffe://writeback/tenant/";

/// The control plane's API: one identity for the whole installation (the
/// API serves every tenant), distinct from each tenant's
/// `…/tenant/<t>/control-plane` (the dispatcher's relay-client identity).
const CONTROL_PLANE_API: &str = "spiffe://writeback/control-plane/api";

/// What a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpiffeId {
    /// An on-premises agent of one domain.
    Agent {
        /// Tenant id.
        tenant: String,
        /// AD domain DNS name.
        domain: String,
        /// Agent id.
        agent_id: String,
    },
    /// A relay instance.
    Relay {
        /// Tenant id.
        tenant: String,
        /// Relay id.
        relay_id: String,
    },
    /// The tenant's control plane as a client of its relays (the
    /// dispatcher).
    ControlPlane {
        /// Tenant id.
        tenant: String,
    },
    /// The control plane's client-facing API (enrollment, renewal, every
    /// service people and programs call): what an agent checks before it
    /// sends a CSR or takes an operation-signing key. A server-only
    /// certificate: it cannot dial a relay, and no relay admits it.
    ControlPlaneApi,
}

impl SpiffeId {
    /// The tenant the identity belongs to (none for the control plane's
    /// API, which serves every tenant).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            SpiffeId::Agent { tenant, .. }
            | SpiffeId::Relay { tenant, .. }
            | SpiffeId::ControlPlane { tenant } => Some(tenant),
            SpiffeId::ControlPlaneApi => None,
        }
    }

    /// An agent identity, validating each segment.
    pub fn agent(tenant: &str, domain: &str, agent_id: &str) -> Result<SpiffeId, Error> {
        let id = SpiffeId::Agent {
            tenant: tenant.to_owned(),
            domain: domain.to_ascii_lowercase(),
            agent_id: agent_id.to_owned(),
        };
        id.validate()?;
        Ok(id)
    }

    fn validate(&self) -> Result<(), Error> {
        let segments: Vec<&str> = match self {
            SpiffeId::Agent {
                tenant,
                domain,
                agent_id,
            } => vec![tenant, domain, agent_id],
            SpiffeId::Relay { tenant, relay_id } => vec![tenant, relay_id],
            SpiffeId::ControlPlane { tenant } => vec![tenant],
            SpiffeId::ControlPlaneApi => vec![],
        };
        for s in segments {
            if !valid_segment(s) {
                return Err(Error::InvalidId(
                    self.to_string(),
                    "segments are 1-63 characters of a-z, 0-9, '.', '-' or '_'",
                ));
            }
        }
        Ok(())
    }
}

/// Lowercase DNS-ish labels only, so an id can never smuggle a `/`.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpiffeId::Agent {
                tenant,
                domain,
                agent_id,
            } => write!(f, "{PREFIX}{tenant}/domain/{domain}/agent/{agent_id}"),
            SpiffeId::Relay { tenant, relay_id } => write!(f, "{PREFIX}{tenant}/relay/{relay_id}"),
            SpiffeId::ControlPlane { tenant } => write!(f, "{PREFIX}{tenant}/control-plane"),
            SpiffeId::ControlPlaneApi => f.write_str(CONTROL_PLANE_API),
        }
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<SpiffeId, Error> {
        let bad = |why| Error::InvalidId(s.to_owned(), why);
        if s == CONTROL_PLANE_API {
            return Ok(SpiffeId::ControlPlaneApi);
        }
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("not a writeback identity"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let id = match parts.as_slice() {
            [t, "domain", d, "agent", a] => SpiffeId::Agent {
                tenant: (*t).to_owned(),
                domain: (*d).to_owned(),
                agent_id: (*a).to_owned(),
            },
            [t, "relay", r] => SpiffeId::Relay {
                tenant: (*t).to_owned(),
                relay_id: (*r).to_owned(),
            },
            [t, "control-plane"] => SpiffeId::ControlPlane {
                tenant: (*t).to_owned(),
            },
            _ => return Err(bad("unknown identity shape")),
        };
        id.validate()?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for s in [
            "spiffe://writeback/tenant/t1/domain/contoso.test/agent/a-1",
            "spiffe://writeback/tenant/t1/relay/r1",
            "spiffe://writeback/tenant/t1/control-plane",
        ] {
            let id: SpiffeId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
            assert_eq!(id.tenant(), Some("t1"));
        }
        let api: SpiffeId = "spiffe://writeback/control-plane/api".parse().unwrap();
        assert_eq!(api, SpiffeId::ControlPlaneApi);
        assert_eq!(api.to_string(), "spiffe://writeback/control-plane/api");
        assert_eq!(api.tenant(), None);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for s in [
            "spiffe://other/tenant/t1/control-plane",
            "spiffe://writeback/tenant/t1/domain/contoso.test/agent/a/extra",
            "spiffe://writeback/tenant/T1/control-plane",
            "spiffe://writeback/tenant//control-plane",
            "spiffe://writeback/tenant/t1/domain/x/agent/a%2f",
            "spiffe://writeback/control-plane",
            "spiffe://writeback/control-plane/api/",
            "spiffe://writeback/tenant/t1/control-plane/api",
        ] {
            assert!(s.parse::<SpiffeId>().is_err(), "{s}");
        }
    }
}
