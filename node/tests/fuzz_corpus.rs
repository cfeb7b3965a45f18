//! Replays the committed corpus of the `node` fuzz target (`fuzz/corpus/node/`) through the
//! same harness (`fuzz/node_harness.rs`: byte streams of fake connections through framing,
//! the CER/CEA gate, the peer state machines and the endpoint, with time passed in), so what
//! the fuzzer found — and every past crash, once minimised into the corpus — is re-checked
//! by plain `cargo test`, without a fuzzer or a nightly toolchain.

#[path = "../../fuzz/node_harness.rs"]
mod node_harness;

use std::path::PathBuf;

#[test]
fn node_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/node");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "node: corpus missing ({} files)",
        files.len()
    );
    for path in files {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Name the file when an input fails.
        let r = std::panic::catch_unwind(|| node_harness::node(&data));
        assert!(r.is_ok(), "node: {} fails", path.display());
    }
}
