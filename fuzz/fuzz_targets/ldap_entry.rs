#![no_main]
//! A BER-encoded LDAP SearchResultEntry from a DC and the per-attribute decoders.

libfuzzer_sys::fuzz_target!(|data: &[u8]| writeback_agent::fuzz::search_entry(data));
