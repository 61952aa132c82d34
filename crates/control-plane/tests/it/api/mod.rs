//! The public gRPC API, served in-process against a fake relay.

mod admin_trail;
mod audit;
mod conventions;
mod enroll;
mod limits;
mod matrix;
mod replicas;
mod security_trail;
mod settings;
mod status;
mod throttle;
mod tokens;
