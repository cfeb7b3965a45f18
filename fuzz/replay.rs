//! The committed corpus of a fuzz target (`fuzz/corpus/<target>/`) run through its harness
//! by a plain `cargo test`: included (`#[path]`) by the corpus replay test of each crate a
//! target covers (proto, node, cabi), all of which sit next to `fuzz/`.

#![allow(dead_code)]

use std::path::PathBuf;

/// The corpus files of `target`, sorted by name, with their bytes.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
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

/// Runs every corpus input of `target` through `f`; fails naming the first input that
/// panics, or when the corpus has fewer than 10 files (it went missing).
pub fn replay(target: &str, f: fn(&[u8])) {
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
