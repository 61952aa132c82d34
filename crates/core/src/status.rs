//! Failures as they cross a gRPC boundary: a `tonic::Status` whose code
//! follows the [`ReasonCode`] and whose details carry an encoded
//! `writeback.v1.ErrorInfo` with the stable code and the sentence. Clients
//! read it back with [`failure_of`].

use prost::Message;
use writeback_proto::v1::ErrorInfo;

use crate::ReasonCode;

/// A failure with a stable reason and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// Stable code.
    pub reason: ReasonCode,
    /// Sentence for a person; never holds a secret or a DN.
    pub message: String,
    /// Operation the failure belongs to, if any.
    pub operation_id: Option<String>,
}

impl Failure {
    /// A failure without an operation id.
    pub fn new(reason: ReasonCode, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
            operation_id: None,
        }
    }

    /// Attaches the operation id.
    pub fn with_operation(mut self, id: impl Into<String>) -> Failure {
        self.operation_id = Some(id.into());
        self
    }
}

impl From<Failure> for tonic::Status {
    fn from(f: Failure) -> tonic::Status {
        let info = ErrorInfo {
            reason_code: f.reason.as_str().to_owned(),
            message: f.message.clone(),
            operation_id: f.operation_id.unwrap_or_default(),
        };
        tonic::Status::with_details(f.reason.grpc_code(), f.message, info.encode_to_vec().into())
    }
}

/// Builds a `tonic::Status` for `reason` with `message`.
pub fn status(reason: ReasonCode, message: impl Into<String>) -> tonic::Status {
    Failure::new(reason, message).into()
}

/// Reads the reason back out of a `tonic::Status`. A status without our
/// details (a transport error, another server) gets a code derived from its
/// gRPC code, so callers always have a stable reason.
pub fn failure_of(status: &tonic::Status) -> Failure {
    if let Ok(info) = ErrorInfo::decode(status.details())
        && let Some(reason) = ReasonCode::parse(&info.reason_code)
    {
        return Failure {
            reason,
            message: info.message,
            operation_id: (!info.operation_id.is_empty()).then_some(info.operation_id),
        };
    }
    let reason = match status.code() {
        tonic::Code::Unauthenticated => ReasonCode::Unauthenticated,
        tonic::Code::PermissionDenied => ReasonCode::PermissionDenied,
        tonic::Code::DeadlineExceeded => ReasonCode::Timeout,
        tonic::Code::Unavailable => ReasonCode::Unavailable,
        tonic::Code::InvalidArgument => ReasonCode::InvalidArgument,
        tonic::Code::NotFound => ReasonCode::NotFound,
        _ => ReasonCode::Internal,
    };
    Failure::new(reason, status.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_survives_the_status_round_trip() {
        let s: tonic::Status = Failure::new(ReasonCode::PasswordTooShort, "too short")
            .with_operation("op-1")
            .into();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        let f = failure_of(&s);
        assert_eq!(f.reason, ReasonCode::PasswordTooShort);
        assert_eq!(f.message, "too short");
        assert_eq!(f.operation_id.as_deref(), Some("op-1"));
    }

    #[test]
    fn foreign_status_gets_a_derived_reason() {
        let f = failure_of(&tonic::Status::unavailable("connection refused"));
        assert_eq!(f.reason, ReasonCode::Unavailable);
    }
}
