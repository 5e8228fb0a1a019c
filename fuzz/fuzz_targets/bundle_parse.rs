//! `ephemera_fuzz_checks::bundle_parse` on the fuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ephemera_fuzz_checks::bundle_parse(data));
