//! What every writeback service shares that is not the wire contract itself:
//! the stable [`ReasonCode`]s every failure is reported with, their mapping
//! to and from `tonic::Status` (with an `ErrorInfo` detail), the operation
//! vocabulary ([`OperationKind`] and friends), figment-based config loading,
//! the one logging setup (`WRITEBACK_LOG`, `WRITEBACK_LOG_FORMAT`) and
//! OpenTelemetry traces with W3C trace context ([`trace`]), and the keyed
//! rate limits of the portal and the API ([`rate`]).

#![forbid(unsafe_code)]

pub mod config;
pub mod harden;
pub mod metrics;
pub mod operation;
pub mod rate;
pub mod reason;
pub mod status;
pub mod telemetry;
pub mod trace;

pub use operation::OperationKind;
pub use reason::ReasonCode;
pub use status::{Failure, failure_of, status};

/// Resolves on Ctrl-C or SIGTERM, for binaries' graceful shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                () = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => ctrl_c.await,
    }
}
