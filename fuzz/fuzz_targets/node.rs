//! The node's network input end to end: byte streams of fake connections through framing,
//! the CER/CEA gate, the peer state machines and the endpoint, with time passed in. The
//! logic is in `node_harness.rs`, shared with the corpus replay run by `cargo test`.
#![no_main]

#[path = "../node_harness.rs"]
mod node_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| node_harness::node(data));
