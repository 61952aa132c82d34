//! Stable reason codes. The string form (`PASSWORD_TOO_SHORT`) is the
//! contract: it appears in `ErrorInfo.reason_code`, in
//! `OperationOutcome.reason_code`, in the audit log and in `writebackctl`'s
//! output, and it never changes meaning once released.

use std::fmt;

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $variant:ident => $text:literal, $grpc:ident; )*) => {
        /// Every outcome writeback reports, as a stable code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ReasonCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ReasonCode {
            /// All codes, for docs and exhaustive tests.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant,)*];

            /// The stable wire form, e.g. `"PASSWORD_TOO_SHORT"`.
            pub fn as_str(self) -> &'static str {
                match self { $( ReasonCode::$variant => $text, )* }
            }

            /// Parses the wire form; unknown strings are `None`.
            pub fn parse(s: &str) -> Option<ReasonCode> {
                match s { $( $text => Some(ReasonCode::$variant), )* _ => None }
            }

            /// The gRPC status code a failure with this reason travels with.
            pub fn grpc_code(self) -> tonic::Code {
                match self { $( ReasonCode::$variant => tonic::Code::$grpc, )* }
            }
        }
    };
}

reason_codes! {
    /// The operation was applied.
    Ok => "OK", Ok;
    /// The request is malformed (missing user, bad id, empty password...).
    InvalidArgument => "INVALID_ARGUMENT", InvalidArgument;
    /// No valid bearer token, or the token expired or was revoked.
    Unauthenticated => "UNAUTHENTICATED", Unauthenticated;
    /// The identity provider's token expired; get a fresh one.
    TokenExpired => "TOKEN_EXPIRED", Unauthenticated;
    /// The token's client application is not registered with writeback for
    /// the token's issuer.
    ClientNotRegistered => "CLIENT_NOT_REGISTERED", PermissionDenied;
    /// The token is valid but names no usable principal, or no role mapping
    /// applies and the issuer has no default role.
    PrincipalNotMapped => "PRINCIPAL_NOT_MAPPED", PermissionDenied;
    /// A self-service reset or unlock without the old password needs a
    /// stronger or more recent sign-in (the issuer's amr/acr/auth_time policy).
    StrongAuthenticationRequired => "STRONG_AUTHENTICATION_REQUIRED", Unauthenticated;
    /// The token's issuer (discovery or keys) could not be reached.
    IssuerUnreachable => "ISSUER_UNREACHABLE", Unavailable;
    /// The caller's role may not do this.
    PermissionDenied => "PERMISSION_DENIED", PermissionDenied;
    /// The named object (operation, agent) does not exist.
    NotFound => "NOT_FOUND", NotFound;
    /// The object exists already (domain name, UPN suffix).
    AlreadyExists => "ALREADY_EXISTS", AlreadyExists;
    /// No registered domain owns the user's UPN suffix.
    DomainNotFound => "DOMAIN_NOT_FOUND", NotFound;
    /// A directory search's query is shorter than the minimum (2 characters):
    /// it would match too much of the directory to be of use.
    QueryTooShort => "QUERY_TOO_SHORT", InvalidArgument;
    /// Password writeback is switched off for the tenant.
    WritebackDisabled => "WRITEBACK_DISABLED", FailedPrecondition;
    /// The seed's policy does not write this operation back.
    UnsupportedOperation => "UNSUPPORTED_OPERATION", PermissionDenied;
    /// Too many operations for this user; retry later.
    Throttled => "THROTTLED", ResourceExhausted;
    /// Too many calls or sign-ins from one source address, or calls of one
    /// tenant, in a short time (the portal's and the API's rate limits);
    /// nothing was done. Retry after the time the answer gives.
    RateLimited => "RATE_LIMITED", ResourceExhausted;
    /// No agent of the target domain is connected to any relay.
    NoAgentOnline => "NO_AGENT_ONLINE", Unavailable;
    /// The relay or agent queue is full.
    Overloaded => "OVERLOADED", ResourceExhausted;
    /// The operation's deadline passed before an answer.
    Timeout => "TIMEOUT", DeadlineExceeded;
    /// Another request with the same operation id is still running; retry
    /// with the same id to get its outcome.
    OperationInProgress => "OPERATION_IN_PROGRESS", Aborted;
    /// The operation expired before it could be applied; nothing was written.
    OperationExpired => "OPERATION_EXPIRED", DeadlineExceeded;
    /// Known for certain not to have been applied: no agent of the domain
    /// received the operation before it expired (its outcome was first
    /// unknown, then every agent's ledger said so). A retry with the same
    /// operation id runs it again.
    NotApplied => "NOT_APPLIED", Aborted;
    /// The password envelope could not be opened (tampered, moved to another
    /// operation, or sealed to another agent).
    EnvelopeInvalid => "ENVELOPE_INVALID", InvalidArgument;
    /// The operation was routed to an agent of another domain or tenant.
    WrongDomain => "WRONG_DOMAIN", PermissionDenied;
    /// The agent refused an operation the control plane did not sign with a
    /// key the agent pinned at enrollment (unsigned, signed by another key,
    /// or altered after signing); nothing was written.
    OperationUnauthenticated => "OPERATION_UNAUTHENTICATED", PermissionDenied;
    /// The control plane refused an agent's result that was not signed
    /// with the result-signing key it recorded for that agent (unsigned,
    /// another agent's key, altered or moved to another operation — by a
    /// relay, say — or from an agent that has not registered a key). Never
    /// an operation's outcome: such a result counts as no answer (the
    /// outcome is `TIMEOUT` until the agents' ledgers are asked again); it
    /// is the reason of the security event recorded.
    ResultUnauthenticated => "RESULT_UNAUTHENTICATED", PermissionDenied;
    /// A relay holds (or was sent) a list of revoked agents older than the
    /// control plane's current one; the operation was not routed through it.
    RevocationStale => "REVOCATION_STALE", FailedPrecondition;
    /// The enrollment token is unknown or malformed.
    EnrollmentTokenInvalid => "ENROLLMENT_TOKEN_INVALID", Unauthenticated;
    /// The enrollment token was already used.
    EnrollmentTokenUsed => "ENROLLMENT_TOKEN_USED", Unauthenticated;
    /// The enrollment token expired.
    EnrollmentTokenExpired => "ENROLLMENT_TOKEN_EXPIRED", Unauthenticated;
    /// The server's certificate does not match the CA the token pins.
    CaMismatch => "CA_MISMATCH", Unauthenticated;
    /// The agent was revoked.
    AgentRevoked => "AGENT_REVOKED", PermissionDenied;
    /// The agent presented a certificate the control plane has since
    /// replaced (a renewal issued a newer one): an old copy of the agent's
    /// key. Relays refuse its tunnels and the control plane renews only the
    /// current certificate.
    CertificateSuperseded => "CERTIFICATE_SUPERSEDED", PermissionDenied;
    /// The server an agent took for the control plane (to enroll or renew)
    /// presented a certificate from the right CA that does not name the
    /// control plane's API (a relay's, say); nothing was sent to it.
    NotControlPlane => "NOT_CONTROL_PLANE", Unauthenticated;
    /// A renewal offered an operation-signing key that no key the agent
    /// pins has endorsed; the agent did not pin it.
    SigningKeyUnendorsed => "SIGNING_KEY_UNENDORSED", PermissionDenied;
    /// The agent's clock differs from the relay's by more than the agent
    /// tolerates, so it cannot trust an operation's expiry; it refuses.
    ClockSkew => "CLOCK_SKEW", FailedPrecondition;
    /// Peer speaks a protocol version this build does not.
    ProtocolMismatch => "PROTOCOL_MISMATCH", FailedPrecondition;
    /// The password does not meet the domain's complexity rules.
    PasswordComplexity => "PASSWORD_COMPLEXITY", FailedPrecondition;
    /// The password is shorter than the domain's minimum length.
    PasswordTooShort => "PASSWORD_TOO_SHORT", FailedPrecondition;
    /// The password is, or is too close to, a banned term (the built-in
    /// list of common passwords or the tenant's own).
    PasswordBanned => "PASSWORD_BANNED", FailedPrecondition;
    /// The password appears in the breached-password corpus the
    /// administrator installed.
    PasswordBreached => "PASSWORD_BREACHED", FailedPrecondition;
    /// The password was used recently (password history).
    PasswordInHistory => "PASSWORD_IN_HISTORY", FailedPrecondition;
    /// The password was changed more recently than the minimum password age.
    PasswordTooYoung => "PASSWORD_MIN_AGE", FailedPrecondition;
    /// The old password given for a change is wrong.
    WrongOldPassword => "WRONG_OLD_PASSWORD", FailedPrecondition;
    /// No user matches the target.
    UserNotFound => "USER_NOT_FOUND", NotFound;
    /// More than one user matches the target; nothing was guessed.
    UserAmbiguous => "USER_AMBIGUOUS", FailedPrecondition;
    /// The user is outside the OUs or group configured for writeback.
    UserNotInScope => "USER_NOT_IN_SCOPE", FailedPrecondition;
    /// The user is a protected (administrative) account; never written back.
    ProtectedAccount => "PROTECTED_ACCOUNT", PermissionDenied;
    /// The account is disabled.
    AccountDisabled => "ACCOUNT_DISABLED", FailedPrecondition;
    /// The account is locked out.
    AccountLockedOut => "ACCOUNT_LOCKED_OUT", FailedPrecondition;
    /// The agent's service account lacks a right on the user or domain.
    InsufficientAccess => "INSUFFICIENT_ACCESS", FailedPrecondition;
    /// Inheritance is disabled on the user object, so the agent's rights do not reach it.
    InheritanceDisabled => "INHERITANCE_DISABLED", FailedPrecondition;
    /// No domain controller answered.
    DcUnreachable => "DC_UNREACHABLE", Unavailable;
    /// TLS to the domain controller (or a peer) failed, e.g. an untrusted certificate.
    TlsFailure => "TLS_FAILURE", Unavailable;
    /// The agent's own bind to the directory failed (bad service-account credentials).
    AgentBindFailed => "AGENT_BIND_FAILED", FailedPrecondition;
    /// The directory refused the change for a reason without a specific code.
    DirectoryError => "DIRECTORY_ERROR", Internal;
    /// A peer is unavailable (relay down, control plane unreachable).
    Unavailable => "UNAVAILABLE", Unavailable;
    /// A bug or an unexpected condition; details are in the service log.
    Internal => "INTERNAL", Internal;
}

impl ReasonCode {
    /// True for [`ReasonCode::Ok`].
    pub fn is_ok(self) -> bool {
        self == ReasonCode::Ok
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_string() {
        for code in ReasonCode::ALL {
            assert_eq!(ReasonCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(ReasonCode::parse("NOPE"), None);
    }

    #[test]
    fn codes_are_unique_and_shouting_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ReasonCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "duplicate {s}");
            assert!(s.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{s}");
        }
    }

    #[test]
    fn only_ok_maps_to_grpc_ok() {
        for code in ReasonCode::ALL {
            assert_eq!(code.grpc_code() == tonic::Code::Ok, code.is_ok(), "{code}");
        }
    }
}
