#![no_main]
//! See `regoguard_fuzz::l2_entry` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| regoguard_fuzz::l2_entry(data));
