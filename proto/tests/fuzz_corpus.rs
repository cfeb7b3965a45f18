//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same code paths
//! as the fuzz targets (`fuzz/harness.rs`), so every input the fuzzer found interesting —
//! and every past crash, once minimised into the corpus — is re-checked by plain
//! `cargo test`, without a fuzzer or a nightly toolchain.

#[path = "../../fuzz/harness.rs"]
mod harness;
#[path = "../../fuzz/replay.rs"]
mod replay;

use replay::replay;

#[test]
fn decode_corpus() {
    replay("decode", harness::decode);
}

#[test]
fn json_encode_corpus() {
    replay("json_encode", harness::json_encode);
}
