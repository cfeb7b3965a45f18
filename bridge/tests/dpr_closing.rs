//! The receiver of a DPR, against the real `dmbridge` binary and a raw client (RFC 6733 §5.4,
//! §5.6.1): the node answers the DPA and then waits in Closing for the DPR's sender to close
//! the transport ("The receiver of the Disconnect-Peer-Answer message initiates the transport
//! disconnect"), bounded by the DPA timeout:
//! - the client sends DPR, reads the DPA, and finds the connection still open (and served:
//!   a DWR is answered) 200 ms later; then the client closes, the node's side goes to
//!   Closed ("peer down"), and the peer's next connection is accepted;
//! - a client that never closes after the DPA does not hold the node's shutdown: on SIGTERM
//!   the node closes that connection itself (Closing, Timeout) and exits.
//!
//! Only the order of events is asserted, never a speed: the 200 ms look can only miss a
//! close that comes later (a false pass on a slow machine), never invent one. Every wait is
//! bounded; the node listens on a free port of 127.0.0.1 and is stopped by PID (guard).

use std::io::ErrorKind;
use std::time::Duration;

use harness::bridge::{Bridge, BridgeOptions, BridgePeer};
use harness::wire::{self, cmd, RawClient};
use harness::{free_port, Sig, TestDir};

const CLIENT: &str = "client.test.local";
const REALM: &str = "test.local";
const WAIT: Duration = Duration::from_secs(10);

fn start(dir: &TestDir, dpa_timeout: &str) -> Bridge {
    let mut opts = BridgeOptions {
        port: free_port(),
        peers: vec![BridgePeer {
            host: CLIENT.into(),
            port: None,
        }],
        ..BridgeOptions::default()
    };
    opts.timers.push(("dpa_timeout".into(), dpa_timeout.into()));
    Bridge::start(dir.path(), &opts)
}

/// Connects, exchanges capabilities, sends DPR and returns the client once the DPA is read.
fn connect_and_send_dpr(bridge: &mut Bridge) -> RawClient {
    let mut c = RawClient::connect(bridge.port(), WAIT).expect("connect");
    let cea = c.handshake(CLIENT, REALM, WAIT).expect("CEA");
    assert_eq!(cea.result_code(), Some(2001), "CEA");
    let id = c.next_id();
    c.send(&wire::dpr(CLIENT, REALM, id, id)).expect("send DPR");
    let dpa = c
        .read_until(WAIT, (CLIENT, REALM), |m| {
            m.cmd_code == cmd::DPR && !m.is_request()
        })
        .unwrap_or_else(|e| panic!("no DPA: {e}\n{}", bridge.guard().tail(30)));
    assert_eq!(dpa.result_code(), Some(2001), "DPA");
    assert_eq!(dpa.hbh, id, "the DPA answers our DPR");
    c
}

#[test]
fn dpr_receiver_waits_for_the_sender_to_close() {
    let dir = TestDir::new("dpr-closing-wait");
    // The Closing bound, far beyond the 200 ms look below.
    let mut bridge = start(&dir, "10s");
    let mut c = connect_and_send_dpr(&mut bridge);

    // 200 ms after the DPA the node has not closed: the close is ours to make (§5.4).
    match c.read_message(Duration::from_millis(200)) {
        Err(e) if e.kind() == ErrorKind::TimedOut => {}
        other => panic!(
            "the node closed (or spoke) after its DPA instead of waiting for us: {other:?}\n{}",
            bridge.guard().tail(30)
        ),
    }
    // Still served in Closing: a DWR is answered.
    let id = c.next_id();
    let dwa = c
        .request(&wire::dwr(CLIENT, REALM, id, id), id, (CLIENT, REALM), WAIT)
        .unwrap_or_else(|e| panic!("no DWA in Closing: {e}\n{}", bridge.guard().tail(30)));
    assert_eq!(dwa.result_code(), Some(2001), "DWA");

    // We close; the node's side leaves Closing for Closed.
    drop(c);
    bridge
        .guard()
        .wait_for_line("peer closed the connection after our DPA", WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    bridge
        .guard()
        .wait_for_line("peer down", WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    // Closed: the peer's next connection is accepted (in Closing it would be rejected).
    let mut again = RawClient::connect(bridge.port(), WAIT).expect("connect again");
    let cea = again.handshake(CLIENT, REALM, WAIT).expect("CEA again");
    assert_eq!(cea.result_code(), Some(2001), "the peer is accepted again");
    drop(again);
    let status = bridge.guard().stop(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", bridge.guard().tail(30));
}

#[test]
fn shutdown_does_not_wait_for_a_peer_that_keeps_the_connection_after_our_dpa() {
    let dir = TestDir::new("dpr-closing-shutdown");
    let mut bridge = start(&dir, "1s");
    let mut c = connect_and_send_dpr(&mut bridge);

    // The client keeps its connection; the node is told to stop.
    bridge.guard().signal(Sig::Term).expect("SIGTERM");
    // The node closes it itself (Closing, Timeout: Error -> Closed) and exits.
    let sent = c.wait_closed(Duration::from_secs(30)).unwrap_or_else(|e| {
        panic!(
            "the node kept the connection: {e}\n{}",
            bridge.guard().tail(30)
        )
    });
    assert!(
        sent.iter().all(|m| m.cmd_code != cmd::DPR),
        "no DPR after the peer's: {sent:?}"
    );
    let status = bridge
        .guard()
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the node did not exit\n{}", bridge.guard().tail(30)));
    assert!(status.success(), "{status}\n{}", bridge.guard().tail(30));
}
