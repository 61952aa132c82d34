//! Failures as they cross a gRPC boundary, in gRPC's standard rich error
//! model: a `tonic::Status` whose code follows the [`ReasonCode`] and whose
//! `grpc-status-details-bin` holds a `google.rpc.Status` with
//!
//! - a `google.rpc.ErrorInfo`: `reason` is the writeback reason code,
//!   `domain` is [`ERROR_DOMAIN`], `metadata` holds `operation_id` and
//!   `retry_after_seconds` when known — what Python's
//!   `grpc_status.rpc_status.from_call`, Go's `status.FromError(err).Details()`,
//!   Java's `StatusProto.fromThrowable` and grpcurl decode;
//! - a `google.rpc.RetryInfo` when a retry time is known (`THROTTLED`, …);
//! - a `writeback.v1.ErrorInfo` (code, sentence, operation id), for clients of
//!   our own proto.
//!
//! The details are built with tonic-types' generated `google.rpc` messages.
//! Clients read a failure back with [`failure_of`], which also understands the
//! bare `writeback.v1.ErrorInfo` that earlier versions sent.

use std::time::Duration;

use prost::Message;
use prost_types::Any;
use tonic_types::pb;
use writeback_proto::v1::ErrorInfo;

use crate::ReasonCode;

/// `google.rpc.ErrorInfo.domain` of every writeback error.
pub const ERROR_DOMAIN: &str = "writeback.v1";

const GOOGLE_ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const GOOGLE_RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";
const WRITEBACK_ERROR_INFO: &str = "type.googleapis.com/writeback.v1.ErrorInfo";

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
    /// How long to wait before retrying, when known.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure without an operation id.
    pub fn new(reason: ReasonCode, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
            operation_id: None,
            retry_after: None,
        }
    }

    /// Attaches the operation id.
    pub fn with_operation(mut self, id: impl Into<String>) -> Failure {
        self.operation_id = Some(id.into());
        self
    }

    /// Attaches the time after which a retry may succeed.
    pub fn with_retry_after(mut self, after: Duration) -> Failure {
        self.retry_after = Some(after);
        self
    }
}

fn any(type_url: &str, message: &impl Message) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: message.encode_to_vec(),
    }
}

impl From<Failure> for tonic::Status {
    fn from(f: Failure) -> tonic::Status {
        let mut metadata = std::collections::HashMap::new();
        if let Some(id) = &f.operation_id {
            metadata.insert("operation_id".to_owned(), id.clone());
        }
        if let Some(after) = f.retry_after {
            metadata.insert(
                "retry_after_seconds".to_owned(),
                after.as_secs().to_string(),
            );
        }
        let mut details = vec![any(
            GOOGLE_ERROR_INFO,
            &pb::ErrorInfo {
                reason: f.reason.as_str().to_owned(),
                domain: ERROR_DOMAIN.to_owned(),
                metadata,
            },
        )];
        if let Some(after) = f.retry_after {
            details.push(any(
                GOOGLE_RETRY_INFO,
                &pb::RetryInfo {
                    retry_delay: Some(prost_types::Duration {
                        seconds: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                        nanos: 0,
                    }),
                },
            ));
        }
        details.push(any(
            WRITEBACK_ERROR_INFO,
            &ErrorInfo {
                reason_code: f.reason.as_str().to_owned(),
                message: f.message.clone(),
                operation_id: f.operation_id.clone().unwrap_or_default(),
            },
        ));
        let code = f.reason.grpc_code();
        let status = pb::Status {
            code: code as i32,
            message: f.message.clone(),
            details,
        };
        let mut out = tonic::Status::with_details(code, f.message, status.encode_to_vec().into());
        if let Some(after) = f.retry_after
            && let Ok(v) = after.as_secs().to_string().parse()
        {
            out.metadata_mut().insert("retry-after", v);
        }
        out
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
    if let Some(f) = from_rich_status(status) {
        return f;
    }
    // Earlier versions sent a bare writeback.v1.ErrorInfo.
    if let Ok(info) = ErrorInfo::decode(status.details())
        && let Some(reason) = ReasonCode::parse(&info.reason_code)
    {
        return Failure {
            reason,
            message: info.message,
            operation_id: (!info.operation_id.is_empty()).then_some(info.operation_id),
            retry_after: None,
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

/// The failure in a `google.rpc.Status` whose `ErrorInfo` is in our domain.
fn from_rich_status(status: &tonic::Status) -> Option<Failure> {
    let rich = pb::Status::decode(status.details()).ok()?;
    let mut failure: Option<Failure> = None;
    let mut retry_after = None;
    for detail in &rich.details {
        match detail.type_url.as_str() {
            GOOGLE_ERROR_INFO => {
                let info = pb::ErrorInfo::decode(detail.value.as_slice()).ok()?;
                if info.domain != ERROR_DOMAIN {
                    return None;
                }
                let reason = ReasonCode::parse(&info.reason)?;
                let mut f = Failure::new(reason, rich.message.clone());
                f.operation_id = info.metadata.get("operation_id").cloned();
                failure = Some(f);
            }
            GOOGLE_RETRY_INFO => {
                let info = pb::RetryInfo::decode(detail.value.as_slice()).ok()?;
                retry_after = info
                    .retry_delay
                    .and_then(|d| u64::try_from(d.seconds).ok())
                    .map(Duration::from_secs);
            }
            _ => {}
        }
    }
    failure.map(|mut f| {
        f.retry_after = retry_after;
        f
    })
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
        assert_eq!(f.retry_after, None);
    }

    #[test]
    fn the_details_are_a_standard_google_rpc_status() {
        let s: tonic::Status = Failure::new(ReasonCode::Throttled, "slow down")
            .with_operation("op-2")
            .with_retry_after(Duration::from_secs(42))
            .into();
        assert_eq!(s.metadata().get("retry-after").unwrap(), "42");
        // Read with tonic-types' own decoder, not ours.
        use tonic_types::StatusExt;
        let details = s.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "THROTTLED");
        assert_eq!(info.domain, "writeback.v1");
        assert_eq!(info.metadata.get("operation_id").unwrap(), "op-2");
        assert_eq!(info.metadata.get("retry_after_seconds").unwrap(), "42");
        let retry = details.retry_info().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(42)));
        let f = failure_of(&s);
        assert_eq!(f.reason, ReasonCode::Throttled);
        assert_eq!(f.retry_after, Some(Duration::from_secs(42)));
    }

    #[test]
    fn a_bare_writeback_error_info_from_an_older_server_is_read() {
        let info = ErrorInfo {
            reason_code: "USER_NOT_FOUND".into(),
            message: "no such user".into(),
            operation_id: "op-3".into(),
        };
        let s = tonic::Status::with_details(
            tonic::Code::NotFound,
            "no such user",
            info.encode_to_vec().into(),
        );
        let f = failure_of(&s);
        assert_eq!(f.reason, ReasonCode::UserNotFound);
        assert_eq!(f.operation_id.as_deref(), Some("op-3"));
    }

    #[test]
    fn foreign_status_gets_a_derived_reason() {
        let f = failure_of(&tonic::Status::unavailable("connection refused"));
        assert_eq!(f.reason, ReasonCode::Unavailable);
        // Another service's ErrorInfo is not ours.
        let other = pb::Status {
            code: 5,
            message: "gone".into(),
            details: vec![any(
                GOOGLE_ERROR_INFO,
                &pb::ErrorInfo {
                    reason: "USER_NOT_FOUND".into(),
                    domain: "example.com".into(),
                    metadata: Default::default(),
                },
            )],
        };
        let s = tonic::Status::with_details(
            tonic::Code::NotFound,
            "gone",
            other.encode_to_vec().into(),
        );
        assert_eq!(failure_of(&s).reason, ReasonCode::NotFound);
    }
}
