//! Launchers for the IMS role tests (`tests/tests/roles_*.rs`): a Kamailio running one of the
//! `cfg-examples/roles/` scripts with the dmbridge module, and the line-based control port of
//! the scripted Erlang/OTP peers in `tests/peers/`.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bridge::{Bridge, BridgeApp, BridgeOptions};
use crate::child::ChildGuard;
use crate::paths::{repo_root, require_program};
use crate::ports::free_port;
use crate::wait::poll_until;

/// `build/kamailio/dmbridge.so`, or a panic naming the build commands.
pub fn kamailio_module() -> PathBuf {
    let so = repo_root().join("build/kamailio/dmbridge.so");
    assert!(
        so.is_file(),
        "{} is missing: build it with `cargo build --release -p dmbridge-cabi && make -C \
         module-glue/kamailio` (scripts/test.sh does)",
        so.display()
    );
    so
}

/// A foreground Kamailio with the dmbridge module and a role cfg; stopped on drop.
pub struct RoleKamailio {
    pub guard: ChildGuard,
    pub run_dir: PathBuf,
    pub sip_port: u16,
}

impl RoleKamailio {
    /// Starts `kamailio -DD -E -f CFG` with `-A SIP_PORT=.. -A DMB_SO=.. -A DMB_SOCKET=..` and
    /// each of `defines` as one more `-A`; returns once its ctl socket exists and `workers`
    /// module workers are attached to the bridge (status RPC).
    pub fn start(
        dir: &Path,
        name: &str,
        cfg: &Path,
        socket: &Path,
        defines: &[String],
        workers: u32,
    ) -> RoleKamailio {
        let kamailio = require_program("kamailio", "kamailio kamailio-extra-modules");
        let so = kamailio_module();
        let sip_port = free_port();
        let run_dir = dir.join(format!("{name}-run"));
        std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let mut cmd = Command::new(kamailio);
        cmd.args(["-DD", "-E", "-Y"])
            .arg(&run_dir)
            .arg("-f")
            .arg(cfg)
            .arg("-A")
            .arg(format!("SIP_PORT={sip_port}"))
            .arg("-A")
            .arg(format!("DMB_SO=\"{}\"", so.display()))
            .arg("-A")
            .arg(format!("DMB_SOCKET=\"{}\"", socket.display()));
        for d in defines {
            cmd.arg("-A").arg(d);
        }
        let guard = ChildGuard::spawn(name, cmd, dir);
        let k = RoleKamailio {
            guard,
            run_dir,
            sip_port,
        };
        let want = format!("workers_attached: {workers}");
        let up = poll_until(
            "kamailio attached to the bridge",
            Duration::from_secs(25),
            || {
                if !k.run_dir.join("kamailio_ctl").exists() {
                    return None;
                }
                let st = k.kamcmd(&["dmbridge.status"]);
                (st.contains("attached: yes") && st.lines().any(|l| l.trim() == want)).then_some(())
            },
        );
        if let Err(e) = up {
            panic!(
                "kamailio did not start and attach: {e}\n{}\n{}",
                k.kamcmd(&["dmbridge.status"]),
                k.guard.tail(40)
            );
        }
        k
    }

    /// `kamcmd -s unix:<run>/kamailio_ctl ARGS...`, stdout and stderr.
    pub fn kamcmd(&self, args: &[&str]) -> String {
        let kamcmd = require_program("kamcmd", "kamailio");
        let out = Command::new(kamcmd)
            .arg("-s")
            .arg(format!(
                "unix:{}",
                self.run_dir.join("kamailio_ctl").display()
            ))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("kamcmd: {e}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.guard
            .output()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// A Diameter server role written in the Kamailio script (`cfg-examples/roles/`).
pub struct ScriptRole<'a> {
    /// `hss`: the script is `kamailio-hss.cfg`, its database `hss.db`, passed as
    /// `HSS_DB="hss=>sqlite://..."` (the script's sqlops connection is named after the role).
    pub role: &'a str,
    /// Origin-Host and Origin-Realm of the bridge.
    pub host: &'a str,
    pub app: BridgeApp,
    /// Dictionaries the bridge loads besides the built-in ones.
    pub dictionaries: Vec<PathBuf>,
    /// SQL that makes the role's database.
    pub sql: &'a str,
}

/// A role served by a Kamailio script: the database made from [`ScriptRole::sql`], the bridge
/// serving [`ScriptRole::app`] on `port`, and Kamailio with the role's cfg and two workers
/// attached. Dropped in field order: Kamailio first, then the bridge.
pub struct ScriptServer {
    pub kamailio: RoleKamailio,
    pub bridge: Bridge,
    pub port: u16,
    pub db: PathBuf,
}

impl ScriptServer {
    pub fn start(dir: &Path, port: u16, role: ScriptRole<'_>) -> ScriptServer {
        let name = role.role;
        let db = dir.join(format!("{name}.db"));
        sqlite(&db, role.sql);
        let mut opts = BridgeOptions {
            origin_host: role.host.into(),
            origin_realm: role.host.into(),
            port,
            applications: vec![role.app],
            dictionaries: role.dictionaries,
            ..BridgeOptions::default()
        };
        opts.extra_toml = "reply_timeout = \"3s\"\n".into();
        let bridge = Bridge::start(dir, &opts);
        let socket = dir.join(format!("bridge-{port}")).join("control.sock");
        let kamailio = RoleKamailio::start(
            dir,
            &format!("kamailio-{name}"),
            &repo_root().join(format!("cfg-examples/roles/kamailio-{name}.cfg")),
            &socket,
            &[format!(
                "{}_DB=\"{name}=>sqlite://{}\"",
                name.to_ascii_uppercase(),
                db.display()
            )],
            2,
        );
        ScriptServer {
            kamailio,
            bridge,
            port,
            db,
        }
    }
}

/// A scripted Erlang/OTP Diameter peer from `tests/peers/` with a line-based control port:
/// one command line in, one line back.
pub struct ScriptedPeer {
    pub guard: ChildGuard,
    ctl: u16,
}

impl ScriptedPeer {
    /// `escript tests/peers/SCRIPT ARGS... --ctl-port C`; returns once it printed `ready`
    /// (a line of its own start-up output).
    pub fn start(dir: &Path, script: &str, args: &[String], ready: &str) -> ScriptedPeer {
        let escript = require_program("escript", "erlang-base erlang-diameter erlang-dev");
        let ctl = free_port();
        let mut cmd = Command::new(escript);
        cmd.arg(repo_root().join("tests/peers").join(script))
            .args(args)
            .args(["--ctl-port", &ctl.to_string()]);
        let mut guard = ChildGuard::spawn(&format!("{script}-{ctl}"), cmd, dir);
        guard
            .wait_for_line(ready, crate::peers::erlang::VM_START)
            .unwrap_or_else(|e| panic!("{script} did not start: {e}"));
        ScriptedPeer { guard, ctl }
    }

    /// A scripted Diameter client (`ro_ctf`, `cx_cscf`, `rx_af`): connects to the server
    /// under test on 127.0.0.1:`port`, sends requests to `dest_realm`, exits after 90 s;
    /// returns once its peer is up (panics with its output otherwise).
    pub fn client(dir: &Path, script: &str, port: u16, dest_realm: &str) -> ScriptedPeer {
        let c = ScriptedPeer::start(
            dir,
            script,
            &[
                "--connect".into(),
                port.to_string(),
                "--dest-realm".into(),
                dest_realm.into(),
                "--duration".into(),
                "90".into(),
            ],
            "connecting to",
        );
        let up = c.cmd("up 15");
        assert!(
            up.starts_with("UP "),
            "{script} not connected: {up}\n{}",
            c.guard.tail(20)
        );
        c
    }

    /// One control command, its one-line reply.
    pub fn cmd(&self, line: &str) -> String {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.ctl))
            .unwrap_or_else(|e| panic!("control port: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
        s.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("control write: {e}"));
        let mut reply = String::new();
        BufReader::new(s)
            .read_line(&mut reply)
            .unwrap_or_else(|e| panic!("control read ({line}): {e}"));
        reply.trim().to_string()
    }

    /// `key=value` of a reply line, or a panic showing the line.
    pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
    }
}

/// `sqlite3 DB SQL`: the script servers' databases, set up and checked by the role tests.
/// Returns stdout, trimmed; panics with sqlite3's message on failure.
pub fn sqlite(db: &Path, sql: &str) -> String {
    let sqlite3 = require_program("sqlite3", "sqlite3");
    let out = Command::new(sqlite3)
        .arg(db)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| panic!("sqlite3: {e}"));
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A SIP role that is the Diameter client of one scripted server peer (the AS of
/// `roles_as.rs` asking its HSS): the bridge as `origin_host` (realm `test.local`) with
/// `app`, the peer `peer_host` on 127.0.0.1:`peer_port` as its default route and connected
/// (the peer's `up`), the dictionary files `dictionaries` loaded, and Kamailio with
/// `cfg-examples/roles/kamailio-<role>.cfg` and `defines`, two workers attached. Dropped in
/// field order: Kamailio first, then the bridge.
pub struct PeerClientRole {
    pub kamailio: RoleKamailio,
    pub bridge: Bridge,
}

/// A SIP server under test, started by a role test with the role's script and its bridge
/// attached: what the scenarios shared by the Kamailio and OpenSIPS tests of a role
/// ([`crate::as_sh`], [`crate::pcscf`]) need of it. Dropped before the peers and phones.
pub trait SipServerUnderTest {
    /// The port of its SIP socket on 127.0.0.1.
    fn sip_port(&self) -> u16;
    /// Its log lines containing `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String>;
    /// The lines of its log at error level (the scenarios want none).
    fn log_errors(&self) -> Vec<String>;
}

/// Kamailio running a role's cfg (`kamailio-as.cfg`, `kamailio-pcscf.cfg`, ...).
impl SipServerUnderTest for PeerClientRole {
    fn sip_port(&self) -> u16 {
        self.kamailio.sip_port
    }
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.kamailio.log_lines(needle)
    }
    fn log_errors(&self) -> Vec<String> {
        self.kamailio.log_lines(" ERROR: ")
    }
}

/// Who [`PeerClientRole::start`] connects to: the scripted peer, its Origin-Host and port.
pub struct ServerPeer<'a> {
    pub peer: &'a ScriptedPeer,
    pub host: &'a str,
    pub port: u16,
}

impl PeerClientRole {
    pub fn start(
        dir: &Path,
        role: &str,
        origin_host: &str,
        app: BridgeApp,
        server: ServerPeer<'_>,
        dictionaries: &[PathBuf],
        defines: &[String],
    ) -> PeerClientRole {
        let bridge = peer_client_bridge(dir, origin_host, app, &server, dictionaries);
        let socket = dir
            .join(format!("bridge-{}", bridge.port()))
            .join("control.sock");
        let kamailio = RoleKamailio::start(
            dir,
            &format!("kamailio-{role}"),
            &repo_root().join(format!("cfg-examples/roles/kamailio-{role}.cfg")),
            &socket,
            defines,
            2,
        );
        PeerClientRole { kamailio, bridge }
    }
}

/// A scripted Diameter server peer (`cx_hss`, `sh_hss`...) as `host` (its realm too) on a
/// free port, with a loopback capture of that port started first so the capture holds the
/// capabilities exchange; `extra` are the script's own options. Returns the peer, its port and
/// the capture.
pub fn captured_server(
    dir: &Path,
    script: &str,
    host: &str,
    extra: &[String],
) -> (ScriptedPeer, u16, crate::capture::Capture) {
    let port = free_port();
    let capture = crate::capture::Capture::start(dir, port);
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--host",
        host,
        "--realm",
        host,
        "--duration",
        "90",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    let peer = ScriptedPeer::start(dir, script, &args, "listening 127.0.0.1:");
    (peer, port, capture)
}

/// A Cx client role (I-CSCF, S-CSCF) against the Cx HSS `tests/peers/cx_hss.escript`
/// (`hss.test.local`, started by [`captured_server`] with `hss_options`): Kamailio with
/// `kamailio-<role>.cfg` as `origin_host`, given `HSS_REALM` and `defines`. Dropped in field
/// order: the role (Kamailio, bridge), then the HSS, then the capture.
pub struct CxRole {
    pub role: PeerClientRole,
    pub hss: ScriptedPeer,
    pub hss_port: u16,
    pub capture: crate::capture::Capture,
}

impl CxRole {
    pub const HSS: &'static str = "hss.test.local";

    pub fn start(
        dir: &Path,
        role: &str,
        origin_host: &str,
        hss_options: &[String],
        defines: &[String],
    ) -> CxRole {
        let (hss, hss_port, capture) =
            captured_server(dir, "cx_hss.escript", Self::HSS, hss_options);
        let mut all = vec![format!("HSS_REALM=\"{}\"", Self::HSS)];
        all.extend_from_slice(defines);
        let role = PeerClientRole::start(
            dir,
            role,
            origin_host,
            BridgeApp {
                id: 16_777_216,
                vendor: Some(10_415),
                acct: false,
            },
            ServerPeer {
                peer: &hss,
                host: Self::HSS,
                port: hss_port,
            },
            &[],
            &all,
        );
        CxRole {
            role,
            hss,
            hss_port,
            capture,
        }
    }
}

/// The bridge of a SIP role that is the Diameter client of one scripted server peer (the
/// Kamailio roles' [`PeerClientRole`], the OpenSIPS ones directly): `origin_host` (realm
/// `test.local`) with `app`, the peer as its one peer and default route, `dictionaries`
/// loaded; returns once the peer says the connection is up.
pub fn peer_client_bridge(
    dir: &Path,
    origin_host: &str,
    app: BridgeApp,
    server: &ServerPeer<'_>,
    dictionaries: &[PathBuf],
) -> Bridge {
    let opts = BridgeOptions {
        origin_host: origin_host.into(),
        origin_realm: "test.local".into(),
        port: free_port(),
        applications: vec![app],
        peers: vec![crate::bridge::BridgePeer {
            host: server.host.into(),
            port: Some(server.port),
        }],
        default_route: vec![server.host.into()],
        dictionaries: dictionaries.to_vec(),
        ..BridgeOptions::default()
    };
    let bridge = Bridge::start(dir, &opts);
    let up = server.peer.cmd("up 15");
    assert!(
        up.starts_with("UP "),
        "bridge not connected to {}: {up}",
        server.host
    );
    bridge
}

/// The rewrite an OpenSIPS role cfg with event routes needs in `tree` for
/// [`crate::opensips::RoleOpensips::start`]: OpenSIPS 3.4/3.5 run event routes only with the
/// event_route module (in the core from 3.6 on), so where the tree has it, its loadmodule goes
/// before dmbridge's.
pub fn opensips_event_route_rewrites(
    tree: &crate::opensips::OpensipsTree,
) -> Vec<(&'static str, String)> {
    if !tree.src.join("modules/event_route").is_dir() {
        return Vec::new();
    }
    vec![(
        "loadmodule \"dmbridge.so\"",
        "loadmodule \"event_route.so\"\nloadmodule \"dmbridge.so\"".into(),
    )]
}
