//! Where things live: the repository, the shared peer configs, built third-party pieces, and
//! the programs the tests run.
//!
//! Tests never skip silently when a program is missing: CI runs the setup script first, so a
//! missing program is a setup bug and the failure message says which command installs it.

use std::env;
use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is <root>/tests at compile time of this crate.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The team's `shared/` directory (peer configs, DESIGN.md): `$DMBRIDGE_SHARED`, else
/// `<repo root>/../shared`.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = env::var_os("DMBRIDGE_SHARED") {
        return PathBuf::from(dir);
    }
    repo_root().join("..").join("shared")
}

/// `shared/peers/<rel>`, panicking with a clear message when it does not exist.
pub fn shared_peer_file(rel: &str) -> PathBuf {
    let path = shared_dir().join("peers").join(rel);
    if !path.exists() {
        panic!(
            "missing {}: the tests expect the team's shared/ directory beside the repository \
             (or DMBRIDGE_SHARED pointing at it)",
            path.display()
        );
    }
    path
}

/// Directory with freeDiameter's `test_app.fdx` and `bind_lo.so`:
/// `$DMBRIDGE_FD_DEPS`, else `<repo root>/build/deps/fd` (where the setup script builds them).
pub fn fd_deps_dir() -> PathBuf {
    if let Some(dir) = env::var_os("DMBRIDGE_FD_DEPS") {
        return PathBuf::from(dir);
    }
    repo_root().join("build").join("deps").join("fd")
}

/// Returns `fd_deps_dir()/<file>`, panicking with the build command when it is missing.
pub fn fd_dep(file: &str) -> PathBuf {
    let path = fd_deps_dir().join(file);
    if !path.is_file() {
        panic!(
            "missing {}: build it with `sh {} {}` (scripts/setup.sh runs this)",
            path.display(),
            shared_dir()
                .join("peers/freediameter/build-test-app.sh")
                .display(),
            fd_deps_dir().display()
        );
    }
    path
}

/// Finds `program` in `$PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Finds `program` in `$PATH` or panics naming the Debian package and the setup command.
pub fn require_program(program: &str, debian_package: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!(
            "this test needs `{program}`, which is not in PATH: run scripts/setup.sh \
             (it installs the Debian package `{debian_package}`: \
             `apt-get install -y {debian_package}`)"
        )
    })
}

/// `cargo` (the one running the tests) for building a program a test needs, in the running
/// test's environment minus what cargo set for the test process itself.
///
/// A test runs with `CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ... of the tests crate in its
/// environment. Build scripts that declare `rerun-if-env-changed` on such variables (ring's
/// does on `CARGO_MANIFEST_DIR`) see them change between the test's build and a plain
/// `cargo build`, and everything above them (rustls, the bridge) is rebuilt each time the two
/// alternate: minutes per test run. Without them the nested build finds the work done.
pub fn cargo_command() -> std::process::Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_for_the_test = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_CRATE_")
            || key.starts_with("CARGO_BIN_")
            || matches!(key, "CARGO_TARGET_TMPDIR" | "CARGO_PRIMARY_PACKAGE");
        if set_for_the_test {
            cmd.env_remove(key);
        }
    }
    cmd
}
