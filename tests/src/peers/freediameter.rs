//! freeDiameter 1.2.1 (`freeDiameterd`) with its test_app extension.
//!
//! Re-implements `shared/peers/freediameter/run.sh` in Rust (same config lines) so tests can
//! vary the identity, the watchdog timer and the client mode. Facts from the peers README that
//! shape it: `ListenOn` is ignored in 1.2.1, so `bind_lo.so` is preloaded to bind loopback;
//! `SecPort = 0`, `No_TLS`, `No_SCTP`; `acl_wl` with `ALLOW_IPSEC *.test.local` so peers
//! without inband security are admitted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::child::{ChildGuard, Sig};
use crate::paths::{fd_dep, require_program};
use crate::wait::{wait_for_port, WaitError};
use crate::wire::test_app;

use super::REALM;

/// test_app client benchmark settings (started by [`FreeDiameter::start_benchmark`]).
#[derive(Debug, Clone, Copy)]
pub struct Benchmark {
    /// Duration of the run.
    pub seconds: u32,
    /// Requests in flight.
    pub concurrency: u32,
}

/// Options for one node. `Default` is a server `server.test.local`.
#[derive(Debug, Clone)]
pub struct FdOptions {
    /// Diameter identity (must end in `.test.local` for the peers' ACLs).
    pub identity: String,
    /// Listening port (every node listens, clients too).
    pub port: u16,
    /// Connect to this peer: (identity, port on 127.0.0.1).
    pub connect_to: Option<(String, u16)>,
    /// test_app client mode: send requests to this Destination-Host. `None`: server mode.
    pub client_dest_host: Option<String>,
    /// With `client_dest_host`: benchmark on SIGUSR1 instead of one request per SIGUSR1.
    pub benchmark: Option<Benchmark>,
    /// Watchdog timer Tw in seconds (freeDiameter's minimum is 6; default 30).
    pub tw_seconds: Option<u32>,
    /// Reconnect timer Tc in seconds (default 30).
    pub tc_seconds: Option<u32>,
    /// TLS (GnuTLS in freeDiameter). `None`: no TLS at all (`SecPort = 0`, `No_TLS`).
    pub tls: Option<FdTls>,
    /// Peers connecting to it (`*.test.local`, through acl_wl) must use in-band TLS after
    /// CER/CEA (`ALLOW_OLD_TLS`) instead of being admitted in clear (`ALLOW_IPSEC`). Needs
    /// `tls`.
    pub accept_inband_tls: bool,
}

/// freeDiameter's TLS settings: its credentials, the CA it trusts, and how it secures the
/// connection it opens (`connect_to`).
#[derive(Debug, Clone)]
pub struct FdTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    /// Its TLS-at-connect listening port (`SecPort`, RFC 6733 §13).
    pub sec_port: u16,
    /// How the connection to `connect_to` is secured.
    pub connect: FdTlsConnect,
}

/// How freeDiameter secures a connection it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdTlsConnect {
    /// TLS from the first byte (RFC 6733 §13; freeDiameter's default without `No_TLS`);
    /// `connect_to`'s port is then the peer's TLS port.
    AtConnect,
    /// `TLS_old_method`: plain CER/CEA with Inband-Security-Id TLS, then TLS (RFC 3588).
    Inband,
}

impl Default for FdOptions {
    fn default() -> Self {
        FdOptions {
            identity: "server.test.local".into(),
            port: 3868,
            connect_to: None,
            client_dest_host: None,
            benchmark: None,
            tw_seconds: None,
            tc_seconds: None,
            tls: None,
            accept_inband_tls: false,
        }
    }
}

/// A running `freeDiameterd`; stopped (SIGTERM, so it sends DPR) on drop.
pub struct FreeDiameter {
    guard: ChildGuard,
    identity: String,
    port: u16,
    conf: PathBuf,
}

impl FreeDiameter {
    /// A test_app server `server.test.local` on 127.0.0.1:`port`; returns once it listens.
    pub fn server(dir: &Path, port: u16) -> FreeDiameter {
        FreeDiameter::start(
            dir,
            FdOptions {
                port,
                ..FdOptions::default()
            },
        )
    }

    /// A test_app client `client.test.local` listening on `port`, connected to
    /// `server.test.local` at 127.0.0.1:`peer_port`, in benchmark mode (2 s, 10 in flight;
    /// start it with [`FreeDiameter::start_benchmark`]).
    pub fn client(dir: &Path, port: u16, peer_port: u16) -> FreeDiameter {
        FreeDiameter::start(
            dir,
            FdOptions::client(
                port,
                peer_port,
                Some(Benchmark {
                    seconds: 2,
                    concurrency: 10,
                }),
            ),
        )
    }

    /// Starts a node with `opts`; returns once it listens on its port.
    pub fn start(dir: &Path, opts: FdOptions) -> FreeDiameter {
        let daemon = require_program("freeDiameterd", "freediameterd");
        let test_app_fdx = fd_dep("test_app.fdx");
        let bind_lo = fd_dep("bind_lo.so");
        let acl_fdx = PathBuf::from("/usr/lib/freeDiameter/acl_wl.fdx");
        if !acl_fdx.is_file() {
            panic!(
                "missing {}: run scripts/setup.sh (Debian package freediameter-extensions)",
                acl_fdx.display()
            );
        }
        let short = opts
            .identity
            .split('.')
            .next()
            .unwrap_or("node")
            .to_string();
        let node_dir = dir.join(format!("fd-{short}-{}", opts.port));
        std::fs::create_dir_all(&node_dir)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", node_dir.display()));
        let write = |name: &str, text: String| {
            let p = node_dir.join(name);
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            p
        };

        let mut ta = format!(
            "vendor-id = {}; appli-id = {}; cmd-id = {}; avp-id = {};\n",
            test_app::VENDOR_ID,
            test_app::APP_ID,
            test_app::CMD,
            test_app::TEST_AVP
        );
        match (&opts.client_dest_host, opts.benchmark) {
            (None, _) => ta.push_str("mode = server; benchmark;\n"),
            (Some(dh), Some(b)) => {
                let _ = writeln!(
                    ta,
                    "mode = client; benchmark {} {}; dest-realm = \"{REALM}\"; dest-host = \"{dh}\";",
                    b.seconds, b.concurrency
                );
            }
            (Some(dh), None) => {
                let _ = writeln!(
                    ta,
                    "mode = client; dest-realm = \"{REALM}\"; dest-host = \"{dh}\";"
                );
            }
        }
        let ta_conf = write("test_app.conf", ta);
        // acl_wl.c: with both flags a peer gets IPsec (clear), so only one at a time.
        let acl_flag = if opts.accept_inband_tls {
            "ALLOW_OLD_TLS"
        } else {
            "ALLOW_IPSEC"
        };
        let acl = write("acl_wl.conf", format!("{acl_flag} *.test.local\n"));

        let sec_port = opts.tls.as_ref().map_or(0, |t| t.sec_port);
        let mut conf = format!(
            "Identity = \"{}\"; Realm = \"{REALM}\"; Port = {}; SecPort = {sec_port}; No_SCTP; No_IPv6;\n",
            opts.identity, opts.port
        );
        if let Some(t) = &opts.tls {
            let _ = writeln!(
                conf,
                "TLS_Cred = \"{}\", \"{}\";\nTLS_CA = \"{}\";",
                t.cert_file.display(),
                t.key_file.display(),
                t.ca_file.display()
            );
        }
        if let Some(tw) = opts.tw_seconds {
            let _ = writeln!(conf, "TwTimer = {tw};");
        }
        if let Some(tc) = opts.tc_seconds {
            let _ = writeln!(conf, "TcTimer = {tc};");
        }
        let _ = writeln!(
            conf,
            "LoadExtension = \"{}\" : \"{}\";",
            test_app_fdx.display(),
            ta_conf.display()
        );
        let _ = writeln!(
            conf,
            "LoadExtension = \"{}\" : \"{}\";",
            acl_fdx.display(),
            acl.display()
        );
        if let Some((peer, port)) = &opts.connect_to {
            let security = match opts.tls.as_ref().map(|t| t.connect) {
                None => "No_TLS;",
                Some(FdTlsConnect::AtConnect) => "",
                Some(FdTlsConnect::Inband) => "TLS_old_method;",
            };
            let _ = writeln!(
                conf,
                "ConnectPeer = \"{peer}\" {{ ConnectTo = \"127.0.0.1\"; {security} No_SCTP; Port = {port}; }};"
            );
        }
        let conf_path = write("freeDiameter.conf", conf);

        let mut cmd = Command::new(daemon);
        cmd.arg("-c").arg(&conf_path).env("LD_PRELOAD", &bind_lo);
        let name = format!("freediameter-{short}");
        let mut guard = ChildGuard::spawn(&name, cmd, &node_dir);
        guard
            .wait_for_line("freeDiameterd daemon initialized", Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("freeDiameterd did not start: {e}"));
        if let Err(e) = wait_for_port(opts.port, Duration::from_secs(10)) {
            panic!("freeDiameterd does not listen: {e}\n{}", guard.tail(30));
        }
        FreeDiameter {
            guard,
            identity: opts.identity,
            port: opts.port,
            conf: conf_path,
        }
    }

    /// The node's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The node's listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated `freeDiameter.conf`.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The process guard (log access, signals).
    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }

    /// The log so far (freeDiameterd logs to stdout).
    pub fn log(&self) -> String {
        self.guard.output()
    }

    /// Waits until the connection to/from `peer` is in state OPEN.
    pub fn wait_peer_open(&mut self, peer: &str, timeout: Duration) -> Result<String, WaitError> {
        wait_state_open(&mut self.guard, peer, timeout)
    }

    /// Client without benchmark: sends one Test-Request (SIGUSR1).
    pub fn send_test_request(&self) {
        self.guard
            .signal(Sig::Usr1)
            .unwrap_or_else(|e| panic!("cannot signal freeDiameterd: {e}"));
    }

    /// Client without benchmark: waits until `n` answers were logged (`RECV ... Status: N`)
    /// and returns those lines.
    pub fn wait_answers(&mut self, n: usize, timeout: Duration) -> Result<Vec<String>, WaitError> {
        let what = format!("{n} test_app answers (RECV lines)");
        let guard = &mut self.guard;
        crate::wait::poll_until(&what, timeout, || {
            let lines: Vec<String> = guard
                .output()
                .lines()
                .filter(|l| l.starts_with("RECV "))
                .map(str::to_string)
                .collect();
            (lines.len() >= n).then_some(lines)
        })
        .map_err(|e| e.with_context(self.guard.tail(20)))
    }

    /// Client with benchmark: starts it (SIGUSR1).
    pub fn start_benchmark(&self) {
        self.send_test_request();
    }

    /// Client with benchmark: waits for the `Throughput: N messages / sec` line and returns N.
    pub fn wait_throughput(&mut self, timeout: Duration) -> Result<u64, WaitError> {
        let line = self.guard.wait_for_line("Throughput:", timeout)?;
        parse_throughput(&line).ok_or_else(|| WaitError::new(format!("cannot parse {line:?}")))
    }

    /// Stops the node (SIGTERM: freeDiameter sends DPR to its peers first), waiting up to
    /// `grace` before SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        self.guard.stop(grace);
    }
}

/// Waits until freeDiameter logs the connection to/from `peer` entering state OPEN.
pub fn wait_state_open(
    guard: &mut ChildGuard,
    peer: &str,
    timeout: Duration,
) -> Result<String, WaitError> {
    let what = format!("-> 'STATE_OPEN' for {peer}");
    let quoted = format!("'{peer}'");
    guard.wait_for_line_matching(&what, timeout, |l| {
        l.contains("-> 'STATE_OPEN'") && l.contains(&quoted)
    })
}

/// Parses `... Throughput: 7791 messages / sec`.
pub fn parse_throughput(line: &str) -> Option<u64> {
    let rest = line.split("Throughput:").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

impl FdOptions {
    /// Options for a test_app client `client.test.local` on `port` connecting to
    /// `server.test.local` at `peer_port`; `benchmark: None` sends one request per
    /// [`FreeDiameter::send_test_request`].
    pub fn client(port: u16, peer_port: u16, benchmark: Option<Benchmark>) -> FdOptions {
        FdOptions {
            identity: "client.test.local".into(),
            port,
            connect_to: Some(("server.test.local".into(), peer_port)),
            client_dest_host: Some("server.test.local".into()),
            benchmark,
            tw_seconds: None,
            tc_seconds: None,
            tls: None,
            accept_inband_tls: false,
        }
    }
}
