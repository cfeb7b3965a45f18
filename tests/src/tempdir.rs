//! A temporary directory per test, kept when the test fails so its logs can be read.

use std::path::{Path, PathBuf};

/// A directory under the system temp dir, named after the test.
///
/// Removed on drop when the test passed; kept (and its path printed) when the thread is
/// panicking, or always when `DMBRIDGE_KEEP_TMP` is set.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    /// Creates `dmbridge-<name>-XXXXXX`. Panics if the temp dir cannot be created.
    pub fn new(name: &str) -> TestDir {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("dmbridge-{safe}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for test {name}: {e}"));
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates (if needed) and returns the sub-directory `name`.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let keep = std::thread::panicking() || std::env::var_os("DMBRIDGE_KEEP_TMP").is_some();
        if let Some(dir) = self.dir.take() {
            if keep {
                let path = dir.keep();
                eprintln!("[harness] kept test directory {}", path.display());
            }
        }
    }
}
