//! Erlang/OTP `diameter` through `shared/peers/erlang/dia_peer.escript`: a server answering
//! test_app (`ta`) and base accounting (`acct`), and a bounded load client that prints one
//! `RESULT` line.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::child::ChildGuard;
use crate::paths::{require_program, shared_peer_file};
use crate::wait::WaitError;

/// A running `dia_peer.escript` (server or client); stopped on drop.
pub struct ErlangPeer {
    guard: ChildGuard,
    host: String,
    port: Option<u16>,
    /// A client's cap on its sending phase (`--duration`), seconds.
    duration: Option<u32>,
}

/// How long an Erlang VM may take to start the script and its `diameter` service on a busy
/// machine: a server's "listening" line, a client's connection. Session 18: with two test
/// binaries and a CPU hog at load 10, a client's first SYN came 25 s after its start (its
/// `RESULT` after 25.3 s, past the 20 s the test waited for it in all); at load 13-21, four
/// escript peers (dia_peer server, cx_hss) did not print their ready line within 30 s. A
/// bound for a hang, not a timing check: a start that works takes a few seconds.
pub const VM_START: Duration = Duration::from_secs(60);

/// How long the client script waits for its peer to come up (`after 10000` in
/// dia_peer.escript) before it gives up.
const CLIENT_UP: Duration = Duration::from_secs(10);

/// Client options; `Default` is 100 `ta` requests, 10 in flight, 10 s cap.
#[derive(Debug, Clone)]
pub struct ErlClientOptions {
    /// Server port on 127.0.0.1.
    pub rport: u16,
    /// Requests to send.
    pub n: u32,
    /// Requests in flight.
    pub k: u32,
    /// Hard cap on the sending phase, seconds.
    pub duration: u32,
    /// `ta` or `acct`.
    pub app: String,
    /// Apps to advertise in CER (`ta,acct`).
    pub apps: String,
    /// Origin-Host.
    pub host: String,
    /// Destination-Host (default: the peer's Origin-Host from CEA).
    pub dest_host: Option<String>,
}

impl Default for ErlClientOptions {
    fn default() -> Self {
        ErlClientOptions {
            rport: 3868,
            n: 100,
            k: 10,
            duration: 10,
            app: "ta".into(),
            apps: "ta,acct".into(),
            host: "erlclient.test.local".into(),
            dest_host: None,
        }
    }
}

/// The client's `RESULT` line.
#[derive(Debug, Clone, PartialEq)]
pub struct ErlResult {
    pub ok: u64,
    pub err: u64,
    pub wall_s: f64,
    pub rps: f64,
    pub lat_us_p50: u64,
    pub p99: u64,
    pub max: u64,
    /// The whole line.
    pub line: String,
}

fn escript_cmd() -> Command {
    let escript = require_program("escript", "erlang-base erlang-diameter erlang-dev");
    let script = shared_peer_file("erlang/dia_peer.escript");
    let mut cmd = Command::new(escript);
    cmd.arg(script);
    cmd
}

impl ErlangPeer {
    /// A server `erlserver.test.local` on 127.0.0.1:`port` advertising `apps` (`"ta,acct"`);
    /// returns once it listens. Stopped on drop; as a last resort it exits by itself after
    /// 600 s (long enough for a test that builds the bridge binary after starting it).
    pub fn server(dir: &Path, port: u16, apps: &str) -> ErlangPeer {
        ErlangPeer::server_as(dir, port, apps, "erlserver.test.local")
    }

    /// Like [`ErlangPeer::server`] with another Origin-Host.
    ///
    /// The script checks its listener 300 ms after starting the transport and gives up with
    /// "listen failed" when the machine is too busy to have it up by then; that is retried
    /// (twice) rather than failing the test.
    pub fn server_as(dir: &Path, port: u16, apps: &str, host: &str) -> ErlangPeer {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cmd = escript_cmd();
            cmd.args([
                "server",
                "--port",
                &port.to_string(),
                "--apps",
                apps,
                "--host",
                host,
                "--duration",
                "600",
            ]);
            let name = format!("erlang-server-{port}-{attempt}");
            let mut guard = ChildGuard::spawn(&name, cmd, dir);
            match guard.wait_for_line("listening 127.0.0.1:", VM_START) {
                Ok(_) => {
                    return ErlangPeer {
                        guard,
                        host: host.to_string(),
                        port: Some(port),
                        duration: None,
                    }
                }
                Err(_) if attempt < 3 && guard.output().contains("listen failed") => continue,
                Err(e) => panic!("Erlang diameter server did not start: {e}"),
            }
        }
    }

    /// Starts a load client; read its outcome with [`ErlangPeer::wait_result`].
    pub fn client(dir: &Path, opts: &ErlClientOptions) -> ErlangPeer {
        let mut cmd = escript_cmd();
        cmd.args([
            "client",
            "--rport",
            &opts.rport.to_string(),
            "--n",
            &opts.n.to_string(),
            "--k",
            &opts.k.to_string(),
            "--duration",
            &opts.duration.to_string(),
            "--app",
            &opts.app,
            "--apps",
            &opts.apps,
            "--host",
            &opts.host,
        ]);
        if let Some(dh) = &opts.dest_host {
            cmd.args(["--dest-host", dh]);
        }
        let name = format!(
            "erlang-client-{}-{}",
            opts.host.split('.').next().unwrap_or("c"),
            opts.rport
        );
        let guard = ChildGuard::spawn(&name, cmd, dir);
        ErlangPeer {
            guard,
            host: opts.host.clone(),
            port: None,
            duration: Some(opts.duration),
        }
    }

    /// The peer's Origin-Host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's port (`None` for a client).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The process guard.
    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }

    /// Client: waits for the `RESULT` line and parses it. The wait is bounded by what the
    /// script bounds itself to, after its VM started: its peer coming up and its sending
    /// phase (`duration`), plus a second to print.
    pub fn wait_result(&mut self) -> Result<ErlResult, WaitError> {
        let sending = Duration::from_secs(self.duration.map_or(60, u64::from));
        let timeout = VM_START + CLIENT_UP + sending + Duration::from_secs(1);
        let line = self.guard.wait_for_line("RESULT ", timeout)?;
        parse_result(&line).ok_or_else(|| WaitError::new(format!("cannot parse {line:?}")))
    }
}

/// Parses `RESULT app=ta n=.. k=.. ok=N err=N wall_s=F rps=F lat_us_p50=N p99=N max=N ...`.
pub fn parse_result(line: &str) -> Option<ErlResult> {
    let get = |key: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    Some(ErlResult {
        ok: get("ok")?.parse().ok()?,
        err: get("err")?.parse().ok()?,
        wall_s: get("wall_s")?.parse().ok()?,
        rps: get("rps")?.parse().ok()?,
        lat_us_p50: get("lat_us_p50")?.parse().ok()?,
        p99: get("p99")?.parse().ok()?,
        max: get("max")?.parse().ok()?,
        line: line.to_string(),
    })
}
