//! Locating the `dmbridge` binary from tests in this (other) package.
//!
//! `env!("CARGO_BIN_EXE_dmbridge")` exists only inside the bridge package, so the harness
//! builds it once per test process with the same profile as the running test and finds it in
//! the target directory. `DMBRIDGE_BIN` overrides all of that: `scripts/test-binaries.sh` sets
//! it to the release (thin LTO) binary, as deployed, while the test binaries themselves are
//! built with the `release-tests` profile (no LTO).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::paths::repo_root;

static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The `dmbridge` binary (built on first call), or why it could not be had.
pub fn dmbridge_bin() -> Result<PathBuf, String> {
    BIN.get_or_init(build).clone()
}

/// The directory of the running test's profile (`target/debug`), from the test executable's
/// path (`target/debug/deps/<test>-<hash>`).
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    Some(deps.parent()?.to_path_buf())
}

/// The cargo profile whose output directory is `profile_dir`: the directory's name, except
/// `debug`, which is the `dev` profile's.
fn profile_name(profile_dir: &std::path::Path) -> String {
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(name) => name.to_string(),
    }
}

/// Runs `cargo build --quiet ARGS` with the running test's profile, into its target
/// directory (as cargo built the test itself); returns that profile's directory.
pub(crate) fn cargo_build_this_profile(args: &[&str]) -> Result<PathBuf, String> {
    let profile =
        profile_dir().ok_or("cannot tell the target directory from the test executable")?;
    let mut cmd = crate::paths::cargo_command();
    cmd.current_dir(repo_root())
        .args(["build", "--quiet"])
        .args(args)
        .args(["--profile", &profile_name(&profile)]);
    if let Some(target) = profile.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(profile)
}

fn build() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("DMBRIDGE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let profile = cargo_build_this_profile(&["-p", "dmbridge-bridge", "--bin", "dmbridge"])?;
    let bin = profile.join("dmbridge");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("built dmbridge but {} is missing", bin.display()))
    }
}

/// For the bridge package's own tests, which have cargo's `CARGO_BIN_EXE_dmbridge` (`built`,
/// the binary of the test's own profile): `DMBRIDGE_BIN` if set (the release build under
/// test, as for every other test), else `built`.
pub fn bin_or(built: &str) -> PathBuf {
    std::env::var_os("DMBRIDGE_BIN").map_or_else(|| PathBuf::from(built), PathBuf::from)
}

/// True when `dmbridge --help` lists `subcommand` (tests of tools still being written use this
/// to know whether there is anything to run yet).
pub fn has_subcommand(bin: &std::path::Path, subcommand: &str) -> bool {
    let Ok(out) = Command::new(bin).arg("--help").output() else {
        return false;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(subcommand))
}

/// `dmbridge run --echo` with the configuration written from `opts` to `dir/dmbridge.toml`,
/// once it listens; returns the guard and the configuration's path (for reloads).
pub fn run_echo(
    bin: &std::path::Path,
    dir: &std::path::Path,
    opts: &crate::bridge::BridgeOptions,
) -> (crate::ChildGuard, PathBuf) {
    let config = dir.join("dmbridge.toml");
    std::fs::write(&config, opts.to_toml(dir)).expect("write the bridge's configuration");
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--echo", "--config"]).arg(&config);
    let mut bridge = crate::ChildGuard::spawn("dmbridge", cmd, dir);
    if let Err(e) = bridge.wait_for_line("listening on", std::time::Duration::from_secs(15)) {
        panic!(
            "dmbridge run --echo did not listen: {e}\n{}",
            bridge.tail(30)
        );
    }
    (bridge, config)
}
