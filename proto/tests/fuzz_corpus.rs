//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same code paths
//! as the fuzz targets (`fuzz/harness.rs`), so every input the fuzzer found interesting —
//! and every past crash, once minimised into the corpus — is re-checked by plain
//! `cargo test`, without a fuzzer or a nightly toolchain.

#[path = "../../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

fn replay(target: &str, f: fn(&[u8])) {
    let files = corpus(target);
    assert!(
        files.len() >= 10,
        "{target}: corpus missing ({} files)",
        files.len()
    );
    for (path, data) in files {
        // Name the file when an input fails.
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(r.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn decode_corpus() {
    replay("decode", harness::decode);
}

#[test]
fn json_encode_corpus() {
    replay("json_encode", harness::json_encode);
}
