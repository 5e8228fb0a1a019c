//! `ephemera_fuzz_checks::admission_review` on the fuzzer's inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ephemera_fuzz_checks::admission_review(data));
