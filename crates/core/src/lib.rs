//! What every writeback service shares that is not the wire contract itself:
//! the stable [`ReasonCode`]s every failure is reported with, their mapping
//! to and from `tonic::Status` (with an `ErrorInfo` detail), the operation
//! vocabulary ([`OperationKind`] and friends), figment-based config loading
//! and the one telemetry setup (`WRITEBACK_LOG`, `WRITEBACK_LOG_FORMAT`).

#![forbid(unsafe_code)]

pub mod config;
pub mod operation;
pub mod reason;
pub mod status;
pub mod telemetry;

pub use operation::OperationKind;
pub use reason::ReasonCode;
pub use status::{Failure, failure_of, status};
