//! The C echo worker (`tests/c/dmb_echo_worker.c`): a SIP-server stand-in on libdmbridge,
//! built for the running test's profile.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds libdmbridge (this test's profile) and `tests/c/dmb_echo_worker.c` against it
/// through `include/dmbridge.h`; returns the program.
pub fn build_c_echo_worker(dir: &Path) -> PathBuf {
    let root = crate::paths::repo_root();
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let release = profile.file_name().is_some_and(|n| n == "release");
    let mut cmd = crate::paths::cargo_command();
    cmd.current_dir(&root)
        .args(["build", "--quiet", "-p", "dmbridge-cabi"]);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = profile.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build -p dmbridge-cabi: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cc = crate::paths::require_program("cc", "gcc");
    let bin = dir.join("dmb_echo_worker");
    let out = Command::new(cc)
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg("-o")
        .arg(&bin)
        .arg(root.join("tests/c/dmb_echo_worker.c"))
        .arg(format!("-L{}", profile.display()))
        .arg("-ldmbridge")
        .arg(format!("-Wl,-rpath,{}", profile.display()))
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "compiling dmb_echo_worker.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}
