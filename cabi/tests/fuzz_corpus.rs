//! Replays the committed corpus of the `worker` fuzz target (`fuzz/corpus/worker/`) through
//! the same harness (`fuzz/worker_harness.rs`: control messages, ring records, scribbled ring
//! memory, segment files and a script's AVP JSON, as the worker library reads them), so
//! what the fuzzer found is re-checked by plain `cargo test`, without a fuzzer or a nightly
//! toolchain.

#[path = "../../fuzz/worker_harness.rs"]
mod worker_harness;

use std::path::PathBuf;

#[test]
fn worker_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/worker");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    // Each input kind (the first byte, modulo 6) must be represented.
    let kinds: std::collections::BTreeSet<u8> = files
        .iter()
        .filter_map(|p| std::fs::read(p).ok()?.first().map(|k| k % 6))
        .collect();
    assert_eq!(
        kinds.len(),
        6,
        "worker: corpus misses input kinds: {kinds:?}"
    );
    for path in files {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Name the file when an input fails.
        let r = std::panic::catch_unwind(|| worker_harness::worker(&data));
        assert!(r.is_ok(), "worker: {} fails", path.display());
    }
}
