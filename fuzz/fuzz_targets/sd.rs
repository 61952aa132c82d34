#![no_main]
//! A self-relative security descriptor (nTSecurityDescriptor) from a DC: parse, write back, edit.

libfuzzer_sys::fuzz_target!(|data: &[u8]| writeback_agent::fuzz::security_descriptor(data));
