//! A freeDiameter 1.2.1 DRA (relay agent) on loopback: the scale-out fabric in front of
//! several bridges (DESIGN §7), as operators run it.
//!
//! `freeDiameterd` with no application of its own, routing with the `rt_default` extension
//! (rules in its own `rt_default.conf` syntax, given by the test) and, optionally,
//! `rt_busypeers` (re-sends a request answered 3004 DIAMETER_TOO_BUSY to another candidate
//! peer, Destination-Host or not: a request bound to the busy node then lands on a node that
//! answers 3002; see tests/tests/scale_out.rs). Identity `dra.test.local`, realm
//! `test.local`; connects to every backend over TCP without TLS and admits any
//! `*.test.local` client (`acl_wl`). `bind_lo.so` is preloaded because 1.2.1 ignores
//! `ListenOn` (see the peers README).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::child::ChildGuard;
use crate::paths::{fd_dep, require_program};
use crate::wait::{wait_for_port, WaitError};

use super::REALM;

/// The DRA's Diameter identity.
pub const DRA_IDENTITY: &str = "dra.test.local";

/// How the DRA is set up.
#[derive(Debug, Clone)]
pub struct DraOptions {
    /// Listening port on 127.0.0.1.
    pub port: u16,
    /// The peers it connects to: (identity, port on 127.0.0.1).
    pub backends: Vec<(String, u16)>,
    /// `rt_default.conf` text (`CRITERIA : TARGET += SCORE ;` lines).
    pub rules: String,
    /// Load `rt_busypeers` (with this configuration text, e.g. `RetryMaxPeers = 0;`).
    pub busypeers: Option<String>,
    /// Watchdog Tw in seconds (freeDiameter's minimum is 6).
    pub tw_seconds: u32,
    /// Reconnect timer Tc in seconds.
    pub tc_seconds: u32,
}

/// A running DRA; stopped (SIGTERM: DPR to its peers) on drop.
pub struct Dra {
    guard: ChildGuard,
    port: u16,
}

fn extension(name: &str) -> PathBuf {
    let p = PathBuf::from(format!("/usr/lib/freeDiameter/{name}.fdx"));
    if !p.is_file() {
        panic!(
            "missing {}: run scripts/setup.sh (Debian package freediameter-extensions)",
            p.display()
        );
    }
    p
}

impl Dra {
    /// Writes the configuration into `dir/dra-<port>/` and starts the daemon; returns once
    /// it listens (its connections to the backends are still being set up: see
    /// [`Dra::wait_peer_open`]).
    pub fn start(dir: &Path, opts: &DraOptions) -> Dra {
        let daemon = require_program("freeDiameterd", "freediameterd");
        let bind_lo = fd_dep("bind_lo.so");
        let ddir = dir.join(format!("dra-{}", opts.port));
        std::fs::create_dir_all(&ddir).unwrap_or_else(|e| panic!("mkdir {}: {e}", ddir.display()));
        let write = |name: &str, text: &str| {
            let p = ddir.join(name);
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            p
        };
        let acl = write("acl_wl.conf", "ALLOW_IPSEC *.test.local\n");
        let rules = write("rt_default.conf", &opts.rules);
        let mut conf = format!(
            "Identity = \"{DRA_IDENTITY}\"; Realm = \"{REALM}\"; Port = {}; SecPort = 0; No_SCTP; No_IPv6;\n\
             TwTimer = {}; TcTimer = {};\n",
            opts.port, opts.tw_seconds, opts.tc_seconds
        );
        let ext = |conf: &mut String, name: &str, arg: &Path| {
            let _ = writeln!(
                conf,
                "LoadExtension = \"{}\" : \"{}\";",
                extension(name).display(),
                arg.display()
            );
        };
        ext(&mut conf, "acl_wl", &acl);
        ext(&mut conf, "rt_default", &rules);
        if let Some(b) = &opts.busypeers {
            let p = write("rt_busypeers.conf", b);
            ext(&mut conf, "rt_busypeers", &p);
        }
        for (host, port) in &opts.backends {
            let _ = writeln!(
                conf,
                "ConnectPeer = \"{host}\" {{ ConnectTo = \"127.0.0.1\"; No_TLS; No_SCTP; Port = {port}; }};"
            );
        }
        let conf_path = write("dra.conf", &conf);
        let mut cmd = Command::new(daemon);
        cmd.arg("-c").arg(&conf_path).env("LD_PRELOAD", &bind_lo);
        let mut guard = ChildGuard::spawn("freediameter-dra", cmd, &ddir);
        guard
            .wait_for_line("freeDiameterd daemon initialized", Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("the DRA did not start: {e}"));
        if let Err(e) = wait_for_port(opts.port, Duration::from_secs(10)) {
            panic!("the DRA does not listen: {e}\n{}", guard.tail(30));
        }
        Dra {
            guard,
            port: opts.port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }

    /// Waits until the connection with `peer` is in state OPEN.
    pub fn wait_peer_open(&mut self, peer: &str, timeout: Duration) -> Result<String, WaitError> {
        super::freediameter::wait_state_open(&mut self.guard, peer, timeout)
    }
}
