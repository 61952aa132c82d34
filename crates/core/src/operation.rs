//! The operation vocabulary shared by the control plane, relay and agent,
//! with conversions to and from the wire enums.

use std::fmt;

use writeback_proto::v1;

/// The most an agent's clock may be off the control plane's and still apply
/// operations (an agent's `max_clock_offset_seconds` is capped at it), so
/// the most after its expiry, by the control plane's clock, that an agent
/// can still apply an operation. The control plane concludes that no agent
/// ran an operation, or runs an expired one again, only once its expiry plus
/// this (and a margin for transit) has passed.
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(10);

/// What an operation does to the on-premises account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// Reset without the old password (SSPR or administrator).
    Reset,
    /// Voluntary change with the old password.
    Change,
    /// Forced change of an expired password.
    ForcedChange,
    /// Unlock without reset.
    Unlock,
}

impl OperationKind {
    /// Stable lowercase name used in audit records and associated data.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Reset => "reset",
            OperationKind::Change => "change",
            OperationKind::ForcedChange => "forced_change",
            OperationKind::Unlock => "unlock",
        }
    }

    /// Parses [`OperationKind::as_str`]'s output.
    pub fn parse(s: &str) -> Option<OperationKind> {
        Some(match s {
            "reset" => OperationKind::Reset,
            "change" => OperationKind::Change,
            "forced_change" => OperationKind::ForcedChange,
            "unlock" => OperationKind::Unlock,
            _ => return None,
        })
    }

    /// From the wire enum; `None` for UNSPECIFIED or unknown values.
    pub fn from_wire(value: i32) -> Option<OperationKind> {
        match v1::OperationKind::try_from(value).ok()? {
            // Policy and outcome queries, directory searches and user lookups are not operations
            // (the agent answers them before treating anything as one).
            v1::OperationKind::Unspecified
            | v1::OperationKind::PolicyQuery
            | v1::OperationKind::OutcomeQuery
            | v1::OperationKind::DirectorySearch
            | v1::OperationKind::UserLookup => None,
            v1::OperationKind::Reset => Some(OperationKind::Reset),
            v1::OperationKind::Change => Some(OperationKind::Change),
            v1::OperationKind::ForcedChange => Some(OperationKind::ForcedChange),
            v1::OperationKind::Unlock => Some(OperationKind::Unlock),
        }
    }

    /// To the wire enum.
    pub fn to_wire(self) -> v1::OperationKind {
        match self {
            OperationKind::Reset => v1::OperationKind::Reset,
            OperationKind::Change => v1::OperationKind::Change,
            OperationKind::ForcedChange => v1::OperationKind::ForcedChange,
            OperationKind::Unlock => v1::OperationKind::Unlock,
        }
    }

    /// True when the operation carries a password envelope.
    pub fn carries_password(self) -> bool {
        !matches!(self, OperationKind::Unlock)
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stable text form of a [`v1::UserRef`] used in associated data and
/// audit records: `upn:alice@contoso.test` or `guid:…`. `None` when empty.
pub fn user_ref_key(user: &v1::UserRef) -> Option<String> {
    match user.by.as_ref()? {
        v1::user_ref::By::Upn(upn) if !upn.is_empty() => Some(format!("upn:{upn}")),
        v1::user_ref::By::ObjectGuid(g) if !g.is_empty() => Some(format!("guid:{g}")),
        _ => None,
    }
}

/// Current time as a protobuf timestamp.
pub fn now_timestamp() -> prost_types::Timestamp {
    to_timestamp(time::OffsetDateTime::now_utc())
}

/// Converts an `OffsetDateTime` to a protobuf timestamp.
pub fn to_timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in [
            OperationKind::Reset,
            OperationKind::Change,
            OperationKind::ForcedChange,
            OperationKind::Unlock,
        ] {
            assert_eq!(OperationKind::parse(k.as_str()), Some(k));
            assert_eq!(OperationKind::from_wire(k.to_wire() as i32), Some(k));
        }
        assert_eq!(OperationKind::from_wire(0), None);
        assert_eq!(OperationKind::from_wire(99), None);
    }

    #[test]
    fn user_ref_key_names_the_kind() {
        let u = v1::UserRef {
            by: Some(v1::user_ref::By::Upn("alice@contoso.test".into())),
        };
        assert_eq!(user_ref_key(&u).as_deref(), Some("upn:alice@contoso.test"));
        assert_eq!(user_ref_key(&v1::UserRef { by: None }), None);
    }
}
