//! Compiles `proto/writeback/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler, so no `protoc` has to be installed) and generates prost messages
//! plus tonic stubs. The encoded descriptor set is written to OUT_DIR for the
//! gRPC reflection service.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "writeback/v1/common.proto",
        "writeback/v1/tunnel.proto",
        "writeback/v1/relay.proto",
        "writeback/v1/control_plane.proto",
        "writeback/v1/identity.proto",
        "writeback/v1/password_quality.proto",
        "writeback/v1/directory.proto",
    ];
    // Relative to this crate, so a build of another checkout sharing the
    // target directory (CI's fresh clone) checks its own files, not ours.
    println!("cargo:rerun-if-changed=build.rs");
    for f in &files {
        println!("cargo:rerun-if-changed=../../proto/{f}");
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("writeback_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Rarely set and large: boxed, so every OperationResult stays small.
        .boxed(".writeback.v1.OperationResult.policy_report")
        .boxed(".writeback.v1.OperationResult.search_result")
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .compile_fds(fds)?;
    Ok(())
}
