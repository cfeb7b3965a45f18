//! The product under test: `dmbridge run` with a configuration written per test.
//!
//! The TOML is generated from [`BridgeOptions`] (format: `cfg-examples/dmbridge.toml`);
//! `extra_toml` appends anything the options do not cover. Listens on 127.0.0.1 only; the
//! shared-memory segment and control socket live in the test's directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::child::ChildGuard;
use crate::dmbridge::dmbridge_bin;
use crate::wait::wait_for_port;
use crate::wire::test_app;

/// An application advertised in CER/CEA.
#[derive(Debug, Clone)]
pub struct BridgeApp {
    /// Application id.
    pub id: u32,
    /// Vendor for Vendor-Specific-Application-Id.
    pub vendor: Option<u32>,
    /// True for an accounting application (Acct-Application-Id).
    pub acct: bool,
}

/// A configured peer.
#[derive(Debug, Clone)]
pub struct BridgePeer {
    /// Its Diameter identity.
    pub host: String,
    /// Port on 127.0.0.1 to connect to; `None`: accept-only.
    pub port: Option<u16>,
}

/// What to put in the bridge's configuration. `Default`: `bridge.test.local` in realm
/// `test.local`, unknown peers allowed, advertising test_app (vendor 999999) and base
/// accounting, no peers, Tw 6 s, answer timeout 2 s.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    pub origin_host: String,
    pub origin_realm: String,
    /// Listening port on 127.0.0.1.
    pub port: u16,
    pub allow_unknown_peers: bool,
    pub applications: Vec<BridgeApp>,
    pub peers: Vec<BridgePeer>,
    /// `[default_route] peers`.
    pub default_route: Vec<String>,
    /// `[timers]` entries, e.g. `("tw", "6s")`.
    pub timers: Vec<(String, String)>,
    /// Appended verbatim.
    pub extra_toml: String,
    /// `[node] dictionaries`: extra dictionary files (aaa_diameter format).
    pub dictionaries: Vec<PathBuf>,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            origin_host: "bridge.test.local".into(),
            origin_realm: "test.local".into(),
            port: 3868,
            allow_unknown_peers: true,
            applications: vec![
                BridgeApp {
                    id: test_app::APP_ID,
                    vendor: Some(test_app::VENDOR_ID),
                    acct: false,
                },
                BridgeApp {
                    id: 3,
                    vendor: None,
                    acct: true,
                },
            ],
            peers: Vec::new(),
            default_route: Vec::new(),
            timers: vec![
                ("tw".into(), "6s".into()),
                ("answer_timeout".into(), "2s".into()),
            ],
            extra_toml: String::new(),
            dictionaries: Vec::new(),
        }
    }
}

impl BridgeOptions {
    /// The TOML text.
    pub fn to_toml(&self, dir: &Path) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "[node]");
        let _ = writeln!(t, "origin_host = {:?}", self.origin_host);
        let _ = writeln!(t, "origin_realm = {:?}", self.origin_realm);
        let _ = writeln!(t, "listen = [\"127.0.0.1:{}\"]", self.port);
        let _ = writeln!(t, "host_ip_addresses = [\"127.0.0.1\"]");
        let _ = writeln!(t, "allow_unknown_peers = {}", self.allow_unknown_peers);
        if !self.dictionaries.is_empty() {
            let files: Vec<String> = self
                .dictionaries
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let _ = writeln!(t, "dictionaries = {files:?}");
        }
        for a in &self.applications {
            let _ = writeln!(t, "\n[[applications]]\nid = {}", a.id);
            if let Some(v) = a.vendor {
                let _ = writeln!(t, "vendor = {v}");
            }
            if a.acct {
                let _ = writeln!(t, "kind = \"acct\"");
            }
        }
        for p in &self.peers {
            let _ = writeln!(t, "\n[[peers]]\nhost = {:?}", p.host);
            match p.port {
                Some(port) => {
                    let _ = writeln!(t, "address = \"127.0.0.1\"\nport = {port}");
                }
                None => {
                    let _ = writeln!(t, "mode = \"accept\"");
                }
            }
        }
        if !self.default_route.is_empty() {
            let _ = writeln!(t, "\n[default_route]\npeers = {:?}", self.default_route);
        }
        if !self.timers.is_empty() {
            let _ = writeln!(t, "\n[timers]");
            for (k, v) in &self.timers {
                let _ = writeln!(t, "{k} = {v:?}");
            }
        }
        let _ = writeln!(
            t,
            "\n[app]\nsegment = {:?}\ncontrol_socket = {:?}",
            format!(
                "/dev/shm/dmbridge-test-{}-{}",
                std::process::id(),
                self.port
            ),
            dir.join("control.sock").display().to_string()
        );
        t.push_str(&self.extra_toml);
        t
    }
}

/// A running `dmbridge run`; stopped with SIGTERM (graceful: drain, DPR) on drop.
pub struct Bridge {
    guard: ChildGuard,
    port: u16,
    config: PathBuf,
}

impl Bridge {
    /// Writes the configuration into `dir/bridge-<port>/` and starts the node; returns once it
    /// listens. Panics (with its output) if it does not start.
    pub fn start(dir: &Path, opts: &BridgeOptions) -> Bridge {
        let bin = dmbridge_bin().unwrap_or_else(|e| panic!("cannot build dmbridge: {e}"));
        let bdir = dir.join(format!("bridge-{}", opts.port));
        std::fs::create_dir_all(&bdir).unwrap_or_else(|e| panic!("mkdir {}: {e}", bdir.display()));
        let config = bdir.join("dmbridge.toml");
        std::fs::write(&config, opts.to_toml(&bdir))
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let mut cmd = Command::new(bin);
        cmd.arg("run").arg("--config").arg(&config);
        let mut guard = ChildGuard::spawn(&format!("dmbridge-{}", opts.port), cmd, &bdir);
        guard
            .wait_for_line("listening on", Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("dmbridge did not start: {e}"));
        if let Err(e) = wait_for_port(opts.port, Duration::from_secs(5)) {
            panic!("dmbridge does not listen: {e}\n{}", guard.tail(30));
        }
        Bridge {
            guard,
            port: opts.port,
            config,
        }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The process guard (log, signals, stop).
    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }
}
