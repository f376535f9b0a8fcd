#![no_main]
//! See `regoguard_fuzz::pubsub_message` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| regoguard_fuzz::pubsub_message(data));
