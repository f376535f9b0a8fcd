#![no_main]
//! See `regoguard_fuzz::canonical_decode` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| regoguard_fuzz::canonical_decode(data));
