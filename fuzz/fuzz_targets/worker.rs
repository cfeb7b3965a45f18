//! The worker library's inputs: control messages, ring records, ring memory as a scribbling
//! peer may leave it, segment files and a script's AVP JSON. The logic is in
//! `worker_harness.rs`, shared with the corpus replay run by `cargo test`.
#![no_main]

#[path = "../worker_harness.rs"]
mod worker_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| worker_harness::worker(data));
