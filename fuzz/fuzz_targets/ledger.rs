#![no_main]
//! The agent's ledger.jsonl as it may be found after a crash.

libfuzzer_sys::fuzz_target!(|data: &[u8]| writeback_agent::fuzz::ledger(data));
