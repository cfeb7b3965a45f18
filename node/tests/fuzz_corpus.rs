//! Replays the committed corpus of the `node` fuzz target (`fuzz/corpus/node/`) through the
//! same harness (`fuzz/node_harness.rs`: byte streams of fake connections through framing,
//! the CER/CEA gate, the peer state machines and the endpoint, with time passed in), so what
//! the fuzzer found — and every past crash, once minimised into the corpus — is re-checked
//! by plain `cargo test`, without a fuzzer or a nightly toolchain.

#[path = "../../fuzz/node_harness.rs"]
mod node_harness;
#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn node_corpus() {
    replay::replay("node", node_harness::node);
}
