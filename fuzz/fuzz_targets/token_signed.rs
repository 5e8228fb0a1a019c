//! `ephemera_fuzz_checks::token_signed` on the fuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ephemera_fuzz_checks::token_signed(data));
