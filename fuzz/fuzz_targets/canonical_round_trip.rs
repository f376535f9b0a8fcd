#![no_main]
//! See `regoguard_fuzz::canonical_round_trip` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| regoguard_fuzz::canonical_round_trip(data));
