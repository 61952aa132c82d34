//! The writeback.v1 contract shared by the control plane, the relay, the
//! agents and `writebackctl`: every protobuf message and the tonic client
//! (feature `client`) and server (feature `server`) stubs, generated at build
//! time from `proto/writeback/v1/*.proto`. This crate depends on nothing else
//! of ours, so every service can speak the contract without pulling in the
//! others.

/// Package `writeback.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("writeback.v1");
}

/// Encoded `FileDescriptorSet` of every writeback proto, for the gRPC
/// reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/writeback_descriptor.bin"));

/// Version of the agent tunnel protocol this build speaks (Hello/Welcome).
pub const TUNNEL_PROTOCOL_VERSION: u32 = 1;
