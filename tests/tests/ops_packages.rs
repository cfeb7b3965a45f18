//! The Debian packages built by `scripts/package-deb.sh`, installed on this machine:
//! contents and dependencies, the installed bridge checks the packaged configuration, the
//! dedicated user exists, `systemd-analyze verify` accepts the packaged unit, and Debian's
//! `kamailio -c` loads the packaged module (Kamailio compares its compile flags and ABI).
//! The packages are purged at the end (also on failure), which runs their maintainer scripts.
//!
//! Needs root (dpkg -i) and scripts/setup.sh (kamailio, its source for the module, dpkg-dev,
//! systemd). Bounded: one package build (release artifacts are reused) and a few commands.

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::paths::repo_root;
use harness::{free_port, TestDir};

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Purges the packages when dropped (also when the test panics).
struct Installed;
impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "dmbridge-kamailio", "dmbridge"])
            .output();
    }
}

#[test]
fn packages_install_verify_and_load_into_kamailio() {
    assert!(
        rustix_is_root(),
        "this test installs Debian packages: run it as root"
    );
    let dir = TestDir::new("ops_packages");
    let out = dir.subdir("debs");
    // The script runs `cargo build --release` of what it packages: without the test process's
    // CARGO_* variables, or ring's build script sees them change and the bridge and the
    // library are rebuilt (134 s of CPU), then rebuilt again by the next plain build.
    // xz level 0: the same format and install path, a sixth of level 6's CPU (the level is a
    // compressor setting, not something the test checks).
    let mut package = Command::new(repo_root().join("scripts/package-deb.sh"));
    // harness::paths::cargo_command() knows which variables those are: it removes them.
    for (key, value) in harness::paths::cargo_command().get_envs() {
        if value.is_none() {
            package.env_remove(key);
        }
    }
    package.arg(&out).env("DMB_DEB_XZ_LEVEL", "0");
    let (ok, text) = run(&mut package);
    assert!(ok, "scripts/package-deb.sh failed:\n{text}");
    let debs: Vec<PathBuf> = text
        .lines()
        .filter(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .collect();
    let find = |prefix: &str| {
        debs.iter()
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no {prefix}*.deb in:\n{text}"))
            .clone()
    };
    let bridge = find("dmbridge_");
    let module = find("dmbridge-kamailio_");

    // Contents and dependencies, as dpkg reads them.
    let (_, contents) = run(Command::new("dpkg-deb").arg("-c").arg(&bridge));
    for path in [
        "./usr/bin/dmbridge",
        "./usr/include/dmbridge.h",
        "./lib/systemd/system/dmbridge.service",
        "./etc/dmbridge/dmbridge.toml",
        "./usr/share/doc/dmbridge/examples/systemd/kamailio.conf",
        "./usr/share/doc/dmbridge/examples/grafana-dmbridge.json",
    ] {
        assert!(
            contents.contains(path),
            "{path} not in {bridge:?}:\n{contents}"
        );
    }
    assert!(
        contents.contains("/libdmbridge.so"),
        "no libdmbridge.so:\n{contents}"
    );
    let (_, deps) = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&bridge)
        .arg("Depends"));
    assert!(deps.contains("libc6"), "bridge Depends: {deps}");
    let (_, mdeps) = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&module)
        .arg("Depends"));
    let (_, kamver) = run(Command::new("dpkg-query").args(["-W", "-f=${Version}", "kamailio"]));
    assert!(
        mdeps.contains(&format!("kamailio (= {})", kamver.trim())),
        "module Depends {mdeps:?} must pin kamailio {kamver}"
    );

    // Install both.
    let _installed = Installed;
    let (ok, text) = run(Command::new("dpkg").arg("-i").arg(&bridge).arg(&module));
    assert!(ok, "dpkg -i failed:\n{text}");
    let (ok, text) = run(Command::new("getent").args(["passwd", "dmbridge"]));
    assert!(ok, "no dmbridge user after install: {text}");

    // The installed binary accepts the packaged configuration, as ExecStartPre runs it.
    let (ok, text) = run(
        Command::new("/usr/bin/dmbridge").args(["check-config", "/etc/dmbridge/dmbridge.toml"])
    );
    assert!(ok, "check-config of the packaged config failed:\n{text}");

    // The unit, checked offline by systemd (works without systemd as PID 1).
    let unit = Path::new("/lib/systemd/system/dmbridge.service");
    let (ok, text) = run(Command::new("systemd-analyze").arg("verify").arg(unit));
    assert!(
        ok && !text.contains("dmbridge.service:"),
        "systemd-analyze verify {}:\n{text}",
        unit.display()
    );
    let unit_text = std::fs::read_to_string(unit).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "RuntimeDirectory=dmbridge",
        "User=dmbridge",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit_text.contains(line), "unit lacks {line}");
    }
    // The example drop-in for Kamailio verifies together with the unit.
    let dropin_dir = dir.subdir("units");
    std::fs::copy(unit, dropin_dir.join("dmbridge.service")).unwrap();
    std::fs::create_dir_all(dropin_dir.join("dmbridge.service.d")).unwrap();
    std::fs::copy(
        "/usr/share/doc/dmbridge/examples/systemd/kamailio.conf",
        dropin_dir.join("dmbridge.service.d/kamailio.conf"),
    )
    .unwrap();
    let (ok, text) = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(dropin_dir.join("dmbridge.service")));
    assert!(ok, "unit with the kamailio drop-in:\n{text}");

    // Debian's kamailio loads the packaged module (check mode parses the cfg, loads the
    // module, runs Kamailio's compile-flags check).
    let so = "/usr/lib/x86_64-linux-gnu/kamailio/modules/dmbridge.so";
    let so = if Path::new(so).exists() {
        so.to_string()
    } else {
        let (_, l) = run(Command::new("dpkg").args(["-L", "dmbridge-kamailio"]));
        l.lines()
            .find(|l| l.ends_with("/dmbridge.so"))
            .unwrap_or_else(|| panic!("dmbridge.so not installed:\n{l}"))
            .to_string()
    };
    let cfg = repo_root().join("cfg-examples/kamailio.cfg");
    let (ok, text) = run(Command::new("kamailio")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .arg("-A")
        .arg(format!("SIP_PORT={}", free_port()))
        .arg("-A")
        .arg(format!("DMB_SO=\"{so}\""))
        .arg("-A")
        .arg("DMB_SOCKET=\"/nonexistent/control.sock\""));
    assert!(
        ok && text.contains("config file ok"),
        "kamailio -c with the packaged module:\n{text}"
    );
    assert!(!text.contains("mismatch"), "{text}");
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
