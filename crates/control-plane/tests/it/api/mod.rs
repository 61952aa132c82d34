//! The public gRPC API, served in-process against a fake relay.

mod audit;
mod conventions;
mod matrix;
mod replicas;
mod settings;
mod status;
mod throttle;
mod tokens;
