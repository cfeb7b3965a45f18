#![no_main]
//! Arbitrary text through JSON->AVP (AVP arrays and message documents; see ../harness.rs).

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::json_encode(data));
