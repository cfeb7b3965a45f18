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

use std::time::Duration;

use harness::bridge::{Bridge, BridgeOptions, BridgePeer};
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
