//! The C echo worker (`tests/c/dmb_echo_worker.c`): a SIP-server stand-in on libdmbridge.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles `tests/c/dmb_echo_worker.c` through `include/dmbridge.h` against the libdmbridge
/// in `$DMB_LIBDIR` (`scripts/test-binaries.sh` sets it to the release build's directory, the
/// library as deployed), else against one built for this test's profile; returns the program.
pub fn build_c_echo_worker(dir: &Path) -> PathBuf {
    let root = crate::paths::repo_root();
    let libdir = match std::env::var_os("DMB_LIBDIR") {
        Some(libdir) => PathBuf::from(libdir),
        None => build_libdmbridge(),
    };
    let cc = crate::paths::require_program("cc", "gcc");
    let bin = dir.join("dmb_echo_worker");
    let out = Command::new(cc)
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg("-o")
        .arg(&bin)
        .arg(root.join("tests/c/dmb_echo_worker.c"))
        .arg(format!("-L{}", libdir.display()))
        .arg("-ldmbridge")
        // DT_RPATH, not DT_RUNPATH: searched before LD_LIBRARY_PATH, which cargo (and
        // test-binaries.sh) set to the test profile's directories, which hold a
        // libdmbridge.so of their own.
        .arg("-Wl,--disable-new-dtags")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "compiling dmb_echo_worker.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Builds libdmbridge with the running test's profile; returns that profile's directory.
fn build_libdmbridge() -> PathBuf {
    crate::dmbridge::cargo_build_this_profile(&["-p", "dmbridge-cabi"])
        .unwrap_or_else(|e| panic!("{e}"))
}
