#![no_main]
//! Arbitrary bytes through framer, decode, validate and AVP<->JSON (see ../harness.rs).

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::decode(data));
