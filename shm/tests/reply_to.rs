//! Reply-to (DESIGN §5): one attachment sends a request whose outcome the bridge delivers to
//! another attachment of the same bridge, named by its reply address. Against the reference
//! bridge, which drives `dmshm::bridge` as the real driver does: every kind of outcome
//! reaches the named attachment with the sender's token, the sync wait of that attachment
//! never takes one, an address whose attachment left is refused (never delivered to the
//! next worker of the same slot, nor by a restarted bridge), and an outcome whose attachment
//! left meanwhile is dropped.

mod common;

use common::{poll_fd, wcfg};
use dmshm::bridge::BridgeConfig;
use dmshm::reference::{EchoBridge, EchoHandle, EchoStats, CMD_ERROR_ANSWER, CMD_NEVER_ANSWER};
use dmshm::segment::Geometry;
use dmshm::worker::{Completion, Worker, WorkerConfig};
use dmshm::Error;
use std::time::{Duration, Instant};

fn cfg(name: &str, slots: u32) -> BridgeConfig {
    let dir = std::env::temp_dir();
    let id = format!("{}-rt-{name}", std::process::id());
    let mut cfg = BridgeConfig::new(
        dir.join(format!("dmshm-{id}.sock")),
        format!("/dev/shm/dmshm-test-{id}"),
    );
    cfg.geometry = Geometry {
        slots,
        ring_bytes: 16384,
        max_msg: 4096,
    };
    cfg
}

/// Waits (at most 10 s: a hang, not a timing assertion) until `pred` holds on the
/// reference bridge's counters.
fn wait_stats(h: &EchoHandle, pred: impl Fn(&EchoStats) -> bool) -> EchoStats {
    let t0 = Instant::now();
    loop {
        let s = h.stats();
        if pred(&s) {
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{s:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The next `n` outcomes `w` collects through its descriptor (at most 10 s).
fn collect(w: &mut Worker, n: usize) -> Vec<Completion> {
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < n {
        assert!(t0.elapsed() < Duration::from_secs(10), "got {got:?}");
        poll_fd(w.fd(), 100);
        while let Some(c) = w.next_answer() {
            got.push(c);
        }
    }
    got
}

/// `w`'s outcomes within a short look (for "nothing came": the bridge counted the request
/// as refused or dropped before this is called, so nothing can still be on its way).
fn nothing_for(w: &mut Worker) {
    poll_fd(w.fd(), 50);
    assert_eq!(w.next_answer(), None);
}

const T: u64 = 1 << 63;

/// A worker attached as soon as the bridge has freed a slot (it frees one when it sees the
/// previous worker's EOF).
fn attach_when_free(bc: &BridgeConfig, name: &str) -> Worker {
    let t0 = Instant::now();
    loop {
        match Worker::attach(wcfg(bc, name)) {
            Ok(w) => return w,
            Err(Error::Refused(_)) if t0.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn every_outcome_reaches_the_named_attachment_with_the_token() {
    let bc = cfg("deliver", 3);
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    let mut a = Worker::attach(wcfg(&bc, "sip worker")).unwrap();
    let mut b = Worker::attach(wcfg(&bc, "module worker")).unwrap();
    let (ra, rb) = (a.reply_address(), b.reply_address());
    assert!(ra != 0 && rb != 0 && ra != rb, "{ra:#x} {rb:#x}");

    a.send_request_reply_to(rb, T | 1, 4, 272, b"[1]", 2000)
        .unwrap();
    a.send_request_reply_to(rb, T | 2, 4, CMD_ERROR_ANSWER, b"[2]", 2000)
        .unwrap();
    // The bridge's timeout outcome goes to the named attachment too.
    a.send_request_reply_to(rb, T | 3, 4, CMD_NEVER_ANSWER, b"[]", 30)
        .unwrap();
    let mut got = collect(&mut b, 3);
    got.sort_by_key(|c| c.handle);
    let seen: Vec<_> = got
        .iter()
        .map(|c| (c.handle, c.class, c.result_code, c.avps_json.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (T | 1, 1, 2001, "[1]"),
            (T | 2, -1, 5012, "[2]"),
            (T | 3, -2, 0, ""),
        ]
    );
    assert!(got[0].peer_ns > 0, "the peer's wait is carried");
    // The sender keeps nothing and gets nothing.
    nothing_for(&mut a);
    assert_eq!(a.status(Duration::from_millis(500)).in_flight, 0);
    assert_eq!(b.status(Duration::from_millis(500)).in_flight, 0);

    // A reply-to outcome waiting in B's ring while B makes a sync call is kept for
    // next_answer, even when its token equals the sync call's handle (B's first: 1).
    a.send_request_reply_to(rb, 1, 4, 272, b"[\"for b\"]", 2000)
        .unwrap();
    wait_stats(&h, |s| s.requests_answered == 3);
    let sync = b.send_request(4, 272, b"[\"own\"]", 2000);
    assert_eq!((sync.handle, sync.avps_json.as_str()), (1, "[\"own\"]"));
    let got = collect(&mut b, 1);
    assert_eq!(
        (got[0].handle, got[0].avps_json.as_str()),
        (1, "[\"for b\"]")
    );

    // A's own requests are untouched (the path an older module uses).
    assert_eq!(a.send_request(4, 272, b"[]", 2000).class, 1);
    let ha = a.send_request_async(4, 272, b"[9]", 2000).unwrap();
    let got = collect(&mut a, 1);
    assert_eq!((got[0].handle, got[0].avps_json.as_str()), (ha, "[9]"));
    nothing_for(&mut b);

    // Refused by the library, nothing written: address 0, detached.
    assert!(matches!(
        a.send_request_reply_to(0, T, 4, 272, b"[]", 0),
        Err(Error::Invalid(_))
    ));
    let st = h.stop();
    assert_eq!((st.reply_to_refused, st.reply_to_dropped), (0, 0));
    assert!(a.send_request(4, 272, b"[]", 100).class < 0);
    assert_eq!(a.reply_address(), 0, "detached: no address");
    assert!(matches!(
        a.send_request_reply_to(rb, T, 4, 272, b"[]", 0),
        Err(Error::Detached(_))
    ));
}

#[test]
fn an_address_whose_attachment_left_is_never_delivered_to_another() {
    let bc = cfg("stale", 2);
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    let mut a = Worker::attach(wcfg(&bc, "sender")).unwrap();
    let b = Worker::attach(wcfg(&bc, "first module worker")).unwrap();
    let rb = b.reply_address();
    drop(b);
    // B's slot (the only free one) goes to C once the bridge saw B leave.
    let mut c = attach_when_free(&bc, "second module worker");
    let rc = c.reply_address();
    assert_eq!(rc & 0xFFF, rb & 0xFFF, "the same slot");
    assert_ne!(rc, rb, "another attachment, another address");

    // The library cannot know B left: the send succeeds, the bridge refuses it.
    a.send_request_reply_to(rb, T | 7, 4, 272, b"[]", 2000)
        .unwrap();
    wait_stats(&h, |s| s.reply_to_refused == 1);
    nothing_for(&mut c);
    nothing_for(&mut a);

    // Taken while C was attached, C gone before the outcome: dropped, not delivered.
    a.send_request_reply_to(rc, T | 8, 4, CMD_NEVER_ANSWER, b"[]", 300)
        .unwrap();
    // A's records are taken in order: once its next request is answered, the bridge holds
    // that one (it counts nothing until the timeout).
    assert_eq!(a.send_request(4, 272, b"[]", 2000).class, 1);
    drop(c);
    let st = wait_stats(&h, |s| s.reply_to_dropped == 1);
    assert_eq!(st.timeouts, 0, "the timeout outcome was not delivered");

    // A restarted bridge refuses an address of the previous instance, even for the same
    // slot and attach count.
    let mut d = attach_when_free(&bc, "third module worker");
    let rd_old = d.reply_address();
    h.stop();
    let h2 = EchoBridge::spawn(bc.clone()).unwrap();
    // Both re-attach on their next call.
    let t1 = Instant::now();
    while !(a.send_request(4, 272, b"[]", 1000).class == 1
        && d.status(Duration::from_millis(100)).attaches == 2)
    {
        assert!(t1.elapsed() < Duration::from_secs(10));
        poll_fd(d.fd(), 10);
    }
    assert_ne!(d.reply_address(), rd_old);
    a.send_request_reply_to(rd_old, T | 9, 4, 272, b"[]", 2000)
        .unwrap();
    wait_stats(&h2, |s| s.reply_to_refused == 1);
    nothing_for(&mut d);
    // The new address works.
    a.send_request_reply_to(d.reply_address(), T | 10, 4, 272, b"[]", 2000)
        .unwrap();
    assert_eq!(collect(&mut d, 1)[0].handle, T | 10);
    h2.stop();
}

/// A bridge from before reply-to: it never writes the slot header's reply address (those
/// bytes stay zero), played here by a hand-made one (a listener, a segment, a Welcome). The
/// worker attaches as always; its reply address is 0 and a reply-to send fails with a clear
/// error and writes nothing into its ring, while its ordinary requests still go out.
#[test]
fn a_bridge_without_reply_to_gets_no_reply_to_record() {
    use dmshm::control::{Ctl, Listener, Recv};
    use dmshm::record::Record;
    use dmshm::ring::Consumer;
    use dmshm::segment::{RingId, Segment, WIRE_VERSION};
    use std::os::fd::AsFd;

    let bc = cfg("old-bridge", 1);
    let listener = Listener::bind(&bc.control_path, None).unwrap();
    let generation = 0x5eed;
    let (seg, file) =
        Segment::create_anonymous("old-bridge", bc.geometry, generation, WIRE_VERSION).unwrap();
    let ctl = bc.control_path.clone();
    let worker = std::thread::spawn(move || {
        let mut w = Worker::attach(WorkerConfig::new(&ctl, "module worker")).unwrap();
        assert!(w.is_attached());
        assert_eq!(w.reply_address(), 0, "an older bridge offers no reply-to");
        let e = w
            .send_request_reply_to(0x1234_0000_1001, T, 4, 272, b"[]", 0)
            .unwrap_err();
        assert!(
            matches!(e, Error::Invalid(_)) && e.to_string().contains("older bridge"),
            "{e}"
        );
        // The ordinary path still goes out (the only record the bridge will find).
        w.send_request_async(4, 272, b"[\"plain\"]", 1000).unwrap();
        w
    });
    let t0 = Instant::now();
    let conn = loop {
        if let Some(c) = listener.accept().unwrap() {
            break c;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no connection");
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut buf = vec![0; 65536];
    let t0 = Instant::now();
    loop {
        conn.wait_readable(Duration::from_millis(100)).unwrap();
        if let Recv::Msg(n, _) = conn.recv(&mut buf).unwrap() {
            assert!(matches!(Ctl::decode(&buf[..n]).unwrap(), Ctl::Hello { .. }));
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no Hello");
    }
    let welcome = Ctl::Welcome {
        version: WIRE_VERSION,
        slot: 0,
        generation,
        max_msg: bc.geometry.max_msg,
        segment_path: "old-bridge".into(),
    };
    conn.send_ctl(&welcome, Some(file.as_fd())).unwrap();
    let w = worker.join().unwrap();
    let mut rx = Consumer::new(
        seg.ring(0, RingId::ToBridge).unwrap(),
        bc.geometry.max_msg as usize,
    );
    let mut rec = Vec::new();
    assert!(rx.pop_into(&mut rec).unwrap());
    match Record::decode(&rec).unwrap() {
        Record::Outgoing(o) => assert_eq!((o.reply_to, o.avps_json), (None, &b"[\"plain\"]"[..])),
        other => panic!("{other:?}"),
    }
    assert!(!rx.pop_into(&mut rec).unwrap(), "nothing else was written");
    drop(w);
}
