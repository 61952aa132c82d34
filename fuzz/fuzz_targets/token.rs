#![no_main]
//! A bearer header (wbt1 API token or JWT), an enrollment token, a SPIFFE id.

libfuzzer_sys::fuzz_target!(|data: &[u8]| writeback_control_plane::api::fuzz::token(data));
