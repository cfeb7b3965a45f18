//! Origin-State-Id (RFC 6733 §8.16), end to end with the real `dmbridge run`: a peer whose
//! Origin-State-Id changes has restarted, and the bridge resets its connection as freeDiameter
//! (`p_dw.c`, `p_psm.c`) does. The peer is the harness's raw client (its own codec), so the
//! test controls the values exactly; what happens to requests pending on the reset connection
//! (failed over with the T flag, each answered once) is covered by the node's in-memory tests.
//!
//! - A DWR carrying another value than the CER: the connection is closed, the DWR is not
//!   answered, and the restarted peer's new CER is accepted.
//! - A CER on a second connection carrying another value while the first is open (the first
//!   is the previous incarnation's, half-open): the new one is accepted and the old one closed;
//!   a CER with the *same* value is still refused (RFC 6733 §5.6.4, R-Reject).
//! - With a real peer: freeDiameter 1.2.1 (its Origin-State-Id is its start time) connects
//!   through a proxy, is killed, and the proxy keeps the bridge's side open as a host that
//!   vanished would (half-open); restarted, freeDiameter's CER carries a new value and the
//!   bridge takes it at once instead of refusing it until its watchdog gives the old
//!   connection up (~3 Tw) and freeDiameter's Tc (30 s) brings it back.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::bridge::{Bridge, BridgeOptions, BridgePeer};
use harness::peers::{FdOptions, FreeDiameter};
use harness::wire::{self, cmd, code, encode_message, flags, Avp, RawClient, RawMessage};
use harness::{free_port, TestDir};

const PEER: (&str, &str) = ("peer.test.local", "test.local");
const WAIT: Duration = Duration::from_secs(5);

fn bridge(dir: &TestDir) -> Bridge {
    let opts = BridgeOptions {
        port: free_port(),
        allow_unknown_peers: false,
        peers: vec![BridgePeer {
            host: PEER.0.into(),
            port: None,
        }],
        ..BridgeOptions::default()
    };
    Bridge::start(dir.path(), &opts)
}

/// `base` (a CER or DWR from the harness) with Origin-State-Id `osi` appended.
fn with_osi(base: &[u8], osi: u32) -> Vec<u8> {
    let m = RawMessage::parse(base).expect("harness message");
    let mut avps: Vec<Avp> = m
        .avps()
        .expect("harness AVPs")
        .iter()
        .map(|a| Avp::raw(a.code, a.data.clone()).flags(a.flags))
        .collect();
    avps.push(Avp::u32(code::ORIGIN_STATE_ID, osi));
    encode_message(m.flags, m.cmd_code, m.app_id, m.hbh, m.e2e, &avps)
}

/// Connects and exchanges capabilities with Origin-State-Id `osi`; returns the CEA.
fn open(b: &Bridge, osi: u32) -> (RawClient, RawMessage) {
    let mut c = RawClient::connect(b.port(), WAIT).expect("connect");
    let id = c.next_id();
    c.send(&with_osi(&wire::cer(PEER.0, PEER.1, id, id), osi))
        .expect("send CER");
    let cea = c
        .read_until(WAIT, PEER, |m| m.cmd_code == cmd::CER && !m.is_request())
        .expect("CEA");
    (c, cea)
}

fn dwr(c: &mut RawClient, osi: u32) -> u32 {
    let id = c.next_id();
    c.send(&with_osi(&wire::dwr(PEER.0, PEER.1, id, id), osi))
        .expect("send DWR");
    id
}

fn is_dwa(m: &RawMessage) -> bool {
    m.cmd_code == cmd::DWR && m.flags & flags::REQUEST == 0
}

#[test]
fn a_dwr_with_a_new_origin_state_id_resets_the_connection_unanswered() {
    let dir = TestDir::new("osi-dwr");
    let mut b = bridge(&dir);
    let (mut c, cea) = open(&b, 100);
    assert_eq!(cea.result_code(), Some(2001));
    // Same value: an ordinary DWR, answered.
    let id = dwr(&mut c, 100);
    let dwa = c
        .read_until(WAIT, PEER, |m| is_dwa(m) && m.hbh == id)
        .expect("DWA to the DWR with the same Origin-State-Id");
    assert_eq!(dwa.result_code(), Some(2001));
    // Another value: the peer restarted.
    dwr(&mut c, 101);
    let seen = c
        .wait_closed(WAIT)
        .expect("the bridge closes the connection");
    assert!(
        !seen.iter().any(is_dwa),
        "the DWR that showed the restart is not answered: {seen:?}"
    );
    assert!(
        !seen.iter().any(|m| m.cmd_code == cmd::DPR),
        "no DPR (freeDiameter's psm_reset does not send one): {seen:?}"
    );
    // The restarted peer connects again and is accepted at once.
    let (_c2, cea2) = open(&b, 101);
    assert_eq!(cea2.result_code(), Some(2001));
    let log = b.guard().output();
    assert!(
        log.contains("peer restarted (Origin-State-Id changed)"),
        "the reset is logged:\n{log}"
    );
}

#[test]
fn a_cer_with_a_new_origin_state_id_replaces_the_half_open_connection() {
    let dir = TestDir::new("osi-cer");
    let b = bridge(&dir);
    let (mut old, cea) = open(&b, 100);
    assert_eq!(cea.result_code(), Some(2001));
    // The same incarnation on a second connection: R-Reject, the first stays.
    let mut dup = RawClient::connect(b.port(), WAIT).expect("connect");
    let id = dup.next_id();
    dup.send(&with_osi(&wire::cer(PEER.0, PEER.1, id, id), 100))
        .expect("send CER");
    let seen = dup.wait_closed(WAIT).expect("second connection refused");
    assert!(
        !seen.iter().any(|m| m.result_code() == Some(2001)),
        "no CEA 2001 for a second connection of the same incarnation: {seen:?}"
    );
    let id = dwr(&mut old, 100);
    old.read_until(WAIT, PEER, |m| is_dwa(m) && m.hbh == id)
        .expect("the first connection still works");
    // The peer restarted and its old connection is half-open: the new CER is accepted...
    let (mut new, cea) = open(&b, 200);
    assert_eq!(
        cea.result_code(),
        Some(2001),
        "the restarted peer is accepted"
    );
    // ...and the old connection closed.
    old.wait_closed(WAIT)
        .expect("the previous incarnation's connection is closed");
    let id = dwr(&mut new, 200);
    new.read_until(WAIT, PEER, |m| is_dwa(m) && m.hbh == id)
        .expect("the new connection is open");
}

/// A TCP proxy to `port` that never closes the side it dialled: when a client goes away,
/// its upstream connection stays open and silent (what the bridge sees of a peer whose host
/// vanished without a FIN). The upstream sockets are kept until the proxy is dropped.
struct HalfOpenProxy {
    port: u16,
    kept: Arc<Mutex<Vec<TcpStream>>>,
}

impl HalfOpenProxy {
    fn start(port: u16) -> HalfOpenProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the proxy");
        let local = listener.local_addr().expect("proxy address").port();
        let kept: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let k = kept.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                let clones = (client.try_clone(), up.try_clone(), up.try_clone());
                let (Ok(client2), Ok(up2), Ok(up3)) = clones else {
                    continue;
                };
                // The kept descriptor holds the upstream socket open whatever the pumps do.
                k.lock().expect("proxy lock").push(up3);
                std::thread::spawn(move || pump(client, up));
                std::thread::spawn(move || pump(up2, client2));
            }
        });
        HalfOpenProxy { port: local, kept }
    }
}

impl Drop for HalfOpenProxy {
    fn drop(&mut self) {
        for s in self.kept.lock().expect("proxy lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` until `from` ends or `to` fails; never shuts `to` down.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn freediameter_restarted_behind_a_half_open_connection_is_taken_at_once() {
    let dir = TestDir::new("osi-freediameter");
    let opts = BridgeOptions {
        origin_host: "server.test.local".into(),
        port: free_port(),
        allow_unknown_peers: false,
        peers: vec![BridgePeer {
            host: "client.test.local".into(),
            port: None,
        }],
        ..BridgeOptions::default()
    };
    let mut b = Bridge::start(dir.path(), &opts);
    let proxy = HalfOpenProxy::start(b.port());
    let fd_opts = |port: u16| FdOptions::client(port, proxy.port, None);
    let first = dir.subdir("fd1");
    let mut fd = FreeDiameter::start(&first, fd_opts(free_port()));
    fd.wait_peer_open("server.test.local", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("first freeDiameter: {e}\n{}", fd.log()));
    // The host goes away: no FIN reaches the bridge (the proxy keeps its side open).
    fd.guard().signal(harness::Sig::Kill).expect("SIGKILL");
    fd.guard().wait_exit(Duration::from_secs(10));
    drop(fd);
    // Its Origin-State-Id is time(NULL) at start: make sure the next one differs.
    std::thread::sleep(Duration::from_millis(1100));
    let second = dir.subdir("fd2");
    let restarted = Instant::now();
    let mut fd = FreeDiameter::start(&second, fd_opts(free_port()));
    fd.wait_peer_open("server.test.local", Duration::from_secs(5))
        .unwrap_or_else(|e| {
            panic!(
                "the restarted freeDiameter was not taken at once: {e}\n{}\n--- bridge ---\n{}",
                fd.log(),
                b.guard().tail(20)
            )
        });
    eprintln!(
        "restarted freeDiameter open {:?} after its start",
        restarted.elapsed()
    );
    let log = b.guard().output();
    assert!(
        log.contains("peer restarted (Origin-State-Id changed)"),
        "the bridge saw the restart:\n{log}"
    );
    drop(fd);
    drop(proxy);
}
