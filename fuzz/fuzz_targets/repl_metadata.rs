#![no_main]
//! A replPropertyMetaData value: the unicodePwd version the ledger's witness rests on; binary SIDs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| writeback_agent::fuzz::repl_metadata(data));
