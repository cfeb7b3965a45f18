//! For the tests of what happens to originated requests when something stops
//! (`tests/tests/originate_stops*.rs`): a Diameter peer that holds the requests it gets until
//! the test tells it to answer them, a SIP client that sends many requests at once and
//! collects their final replies, and the bridge's own view (`dmbridge ctl --json`) of its
//! workers, counters and pending requests.
//!
//! The peer is [`RawClient`] connected to the bridge (`mode = "accept"` in the bridge's
//! configuration, its default route): CER/CEA, DWRs answered while it reads, every request
//! of test_app kept until [`HeldPeer::answer_all`]. Nothing is answered behind the test's back.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bridge::{Bridge, BridgeOptions, BridgePeer};
use crate::child::{ChildGuard, Sig};
use crate::dmbridge::dmbridge_bin;
use crate::wire::{answer_to, cmd, test_app, RawClient, RawMessage};

/// The held peer's Diameter identity.
pub const HELD_HOST: &str = "held.test.local";
/// Its realm (the bridge's too).
pub const HELD_REALM: &str = "test.local";

/// Bridge options for a held peer: the defaults (test_app advertised), the peer accepted
/// under [`HELD_HOST`] and made the default route, and `extra_toml` appended to `[app]`.
pub fn held_bridge_options(port: u16, extra_toml: &str) -> BridgeOptions {
    let mut o = BridgeOptions {
        port,
        ..BridgeOptions::default()
    };
    o.peers.push(BridgePeer {
        host: HELD_HOST.into(),
        port: None,
    });
    o.default_route = vec![HELD_HOST.into()];
    o.timers = vec![
        ("tw".into(), "6s".into()),
        ("answer_timeout".into(), "20s".into()),
    ];
    o.extra_toml = extra_toml.into();
    o
}

/// A peer connected to the bridge that answers nothing until told to.
pub struct HeldPeer {
    c: RawClient,
    held: Vec<RawMessage>,
}

impl HeldPeer {
    /// Connects to the bridge on `port` and exchanges CER/CEA; panics if the bridge refuses.
    pub fn connect(port: u16) -> HeldPeer {
        let mut c = RawClient::connect(port, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("held peer: connect to the bridge: {e}"));
        let cea = c
            .handshake(HELD_HOST, HELD_REALM, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("held peer: CER/CEA: {e}"));
        assert_eq!(cea.result_code(), Some(2001), "held peer: CEA");
        HeldPeer {
            c,
            held: Vec::new(),
        }
    }

    /// Reads until it holds `n` test_app requests (DWRs and DPRs answered on the way); returns
    /// how many it holds when `timeout` ran out (or the bridge closed the connection) first.
    pub fn hold(&mut self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.held.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.c.read_until(left, (HELD_HOST, HELD_REALM), |m| {
                m.is_request() && (m.cmd_code == test_app::CMD || m.cmd_code == cmd::DPR)
            }) {
                // a bridge that stops says goodbye (RFC 6733 §5.4): DPA, then it closes
                Ok(m) if m.cmd_code == cmd::DPR => {
                    let dpa = answer_to(&m, 2001, HELD_HOST, HELD_REALM, &[]);
                    self.c
                        .send(&dpa)
                        .unwrap_or_else(|e| panic!("held peer: DPA: {e}"));
                }
                Ok(m) => self.held.push(m),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                Err(e) => panic!("held peer: reading requests: {e}"),
            }
        }
        self.held.len()
    }

    /// How many requests it holds.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Answers every held request 2001 (and forgets them); returns how many.
    pub fn answer_all(&mut self) -> usize {
        let held = std::mem::take(&mut self.held);
        for m in &held {
            let a = answer_to(m, 2001, HELD_HOST, HELD_REALM, &[]);
            self.c
                .send(&a)
                .unwrap_or_else(|e| panic!("held peer: answering: {e}"));
        }
        held.len()
    }

    /// Answers DWRs and holds requests for `window` (keeps the connection alive while a test
    /// waits for something else).
    pub fn idle(&mut self, window: Duration) {
        let _ = self.hold(usize::MAX, window);
    }
}

/// Sends `n` SIP MESSAGEs for `sip:<user>@test.local` to 127.0.0.1:`port` from one socket at
/// once; their final replies (status line and the reply's whole text) are read by
/// [`SipBatch::finals`].
pub struct SipBatch {
    s: UdpSocket,
    n: usize,
}

impl SipBatch {
    /// Sends the requests (Call-IDs `<tag>-<i>`), nothing read yet.
    pub fn send(port: u16, user: &str, tag: &str, n: usize) -> SipBatch {
        let (s, me) = crate::sip::loopback_udp(Duration::from_millis(200));
        for i in 0..n {
            let msg = format!(
                "MESSAGE sip:{user}@test.local SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{tag}-{i}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:{tag}@test.local>;tag={tag}{i}\r\n\
                 To: <sip:{user}@test.local>\r\n\
                 Call-ID: {tag}-{i}@test\r\n\
                 CSeq: 1 MESSAGE\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            s.send_to(msg.as_bytes(), (Ipv4Addr::LOCALHOST, port))
                .unwrap_or_else(|e| panic!("udp send: {e}"));
        }
        SipBatch { s, n }
    }

    /// The final replies that came within `timeout`, one per Call-ID (retransmissions
    /// dropped), as (call index, status line): stops early once every request has one.
    pub fn finals(&self, timeout: Duration) -> Vec<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut got: Vec<(usize, String)> = Vec::new();
        let mut buf = vec![0u8; 65535];
        while got.len() < self.n && Instant::now() < deadline {
            let Ok(n) = self.s.recv(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let line = text.lines().next().unwrap_or("").to_string();
            if line.starts_with("SIP/2.0 1") {
                continue;
            }
            let idx = text
                .lines()
                .find_map(|l| {
                    let l = l
                        .strip_prefix("Call-ID:")
                        .or_else(|| l.strip_prefix("i:"))?;
                    let id = l.trim().split('@').next()?;
                    id.rsplit('-').next()?.parse::<usize>().ok()
                })
                .unwrap_or(usize::MAX);
            if !got.iter().any(|(i, _)| *i == idx) {
                got.push((idx, line));
            }
        }
        got.sort();
        got
    }
}

/// `dmbridge ctl --config CONFIG --json WHAT`, parsed; `Value::Null` when the bridge does
/// not answer (stopped, or not yet listening).
pub fn ctl_json(config: &Path, what: &str) -> Value {
    let Ok(bin) = dmbridge_bin() else {
        return Value::Null;
    };
    let Ok(out) = Command::new(bin)
        .arg("ctl")
        .arg("--config")
        .arg(config)
        .args(["--json", "--timeout", "5", what])
        .output()
    else {
        return Value::Null;
    };
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The workers attached to the bridge as (pid, name).
pub fn bridge_workers(config: &Path) -> Vec<(u32, String)> {
    let v = ctl_json(config, "workers");
    let list = if v.is_array() { &v } else { &v["workers"] };
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|w| {
                    (
                        w["pid"].as_u64().unwrap_or(0) as u32,
                        w["name"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The lines of `text` containing any of `needles` (a SIP server's log and the words of a
/// crash).
pub fn lines_with_any(text: &str, needles: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| needles.iter().any(|c| l.contains(c)))
        .map(str::to_string)
        .collect()
}

/// The outgoing requests the bridge's log says its departed workers abandoned: the sum of
/// the "N of its outgoing requests abandoned" of its "gone" lines.
pub fn abandoned(bridge_log: &str) -> u64 {
    bridge_log
        .lines()
        .filter(|l| l.contains(") gone: "))
        .filter_map(|l| {
            let head = l.split(" of its outgoing requests abandoned").next()?;
            head.rsplit(", ").next()?.trim().parse::<u64>().ok()
        })
        .sum()
}

/// Waits (up to 10 s) until `bridge` has no worker attached and its departed workers
/// abandoned at least `n` requests; returns how many they abandoned.
pub fn wait_all_gone(bridge: &mut Bridge, n: u64) -> u64 {
    let config = bridge.config_path().to_path_buf();
    let r = crate::wait::poll_until(
        "the bridge reaped every attachment",
        Duration::from_secs(10),
        || {
            let gone = abandoned(&bridge.guard().output());
            (gone >= n && bridge_workers(&config).is_empty()).then_some(gone)
        },
    );
    r.unwrap_or_else(|e| panic!("{e}\n{}", bridge.guard().tail(20)))
}

/// What a SIP server's log must never say, in Kamailio's and OpenSIPS's words.
pub const CRASH_WORDS: &[&str] = &[
    "BUG",
    "CRITICAL",
    "segfault",
    "core was generated",
    "shutdown timeout triggered",
];

/// Sends `sig` to `server` and waits up to `within` for it to exit; returns its exit status
/// and its log (stdout and stderr), and panics with the log's tail if it does not exit.
pub fn signal_and_wait_exit(
    server: &mut ChildGuard,
    sig: Sig,
    within: Duration,
) -> (ExitStatus, String) {
    server
        .signal(sig)
        .unwrap_or_else(|e| panic!("signalling {}: {e}", server.name()));
    let st = server.wait_exit(within).unwrap_or_else(|| {
        panic!(
            "{} did not exit within {within:?}\n{}",
            server.name(),
            server.tail(40)
        )
    });
    (st, server.output())
}

/// SIGTERM to the SIP server `server`, then asserts it exited 0 within `within` and that its
/// output has none of `crash` (a crash, a child the shutdown had to kill); returns the output.
pub fn terminates_cleanly(server: &mut ChildGuard, within: Duration, crash: &[&str]) -> String {
    let (st, log) = signal_and_wait_exit(server, Sig::Term, within);
    assert!(
        st.success(),
        "{} exited with {st:?}\n{}",
        server.name(),
        server.tail(30)
    );
    assert_eq!(lines_with_any(&log, crash), Vec::<String>::new());
    log
}

/// Sends `n_async` SIP MESSAGEs to `sip:async@` and `n_sync` to `sip:sync@` (the scripts of
/// the originate_stops tests) to 127.0.0.1:`sip_port` and waits (up to 10 s) until `peer`
/// holds all their Diameter requests; returns the two batches. `server` is the SIP server,
/// for its log's tail if the requests do not all arrive.
pub fn calls_at_the_peer(
    peer: &mut HeldPeer,
    server: &ChildGuard,
    sip_port: u16,
    n_async: usize,
    n_sync: usize,
) -> (SipBatch, SipBatch) {
    let a = SipBatch::send(sip_port, "async", "a", n_async);
    let y = SipBatch::send(sip_port, "sync", "y", n_sync);
    let n = n_async + n_sync;
    let got = peer.hold(n, Duration::from_secs(10));
    assert_eq!(
        got,
        n,
        "the peer did not get every request\n{}",
        server.tail(30)
    );
    (a, y)
}

/// One SIP MESSAGE to `sip:<user>@` (`async` or `sync`), whose Diameter request `peer`
/// answers 2001: asserts the SIP client gets 200 OK (within 10 s each way).
pub fn call_answered(peer: &mut HeldPeer, server: &ChildGuard, sip_port: u16, user: &str) {
    let b = SipBatch::send(sip_port, user, &format!("answered-{user}"), 1);
    let got = peer.hold(1, Duration::from_secs(10));
    assert_eq!(
        got,
        1,
        "{user}: no request at the peer\n{}",
        server.tail(20)
    );
    peer.answer_all();
    let f = b.finals(Duration::from_secs(10));
    assert_eq!(
        f,
        [(0, "SIP/2.0 200 OK".to_string())],
        "{user}\n{}",
        server.tail(20)
    );
}

/// The log (stderr) of the bridge `Bridge::start(dir, ..)` started on `port`, read from its
/// file (no `&mut Bridge` needed).
pub fn bridge_log(dir: &Path, port: u16) -> String {
    let log = dir.join(format!("bridge-{port}/dmbridge-{port}.stderr"));
    std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()))
}
