#![no_main]
//! An OperationRequest off the relay's stream: signature check, target, envelope opening.

libfuzzer_sys::fuzz_target!(|data: &[u8]| writeback_agent::fuzz::operation(data));
