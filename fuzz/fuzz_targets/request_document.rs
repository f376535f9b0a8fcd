#![no_main]
//! See `regoguard_fuzz::request_document` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| regoguard_fuzz::request_document(data));
