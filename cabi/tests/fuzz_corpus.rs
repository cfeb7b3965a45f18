//! Replays the committed corpus of the `worker` fuzz target (`fuzz/corpus/worker/`) through
//! the same harness (`fuzz/worker_harness.rs`: control messages, ring records, scribbled ring
//! memory, segment files and a script's AVP JSON, as the worker library reads them), so
//! what the fuzzer found is re-checked by plain `cargo test`, without a fuzzer or a nightly
//! toolchain.

#[path = "../../fuzz/replay.rs"]
mod replay;
#[path = "../../fuzz/worker_harness.rs"]
mod worker_harness;

#[test]
fn worker_corpus() {
    // Each input kind (the first byte, modulo 6) must be represented.
    let kinds: std::collections::BTreeSet<u8> = replay::corpus("worker")
        .iter()
        .filter_map(|(_, data)| data.first().map(|k| k % 6))
        .collect();
    assert_eq!(
        kinds.len(),
        6,
        "worker: corpus misses input kinds: {kinds:?}"
    );
    replay::replay("worker", worker_harness::worker);
}
