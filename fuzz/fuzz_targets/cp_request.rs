#![no_main]
//! A control-plane request body through the handlers' checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| writeback_control_plane::api::fuzz::request(data));
