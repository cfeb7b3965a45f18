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

/// A reference bridge of `slots` slots with two workers attached: a SIP worker that sends,
/// a module worker that receives.
fn sender_and_receiver(name: &str, slots: u32) -> (EchoHandle, Worker, Worker) {
    let bc = cfg(name, slots);
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    let a = Worker::attach(wcfg(&bc, "sip worker")).unwrap();
    let b = Worker::attach(wcfg(&bc, "module worker")).unwrap();
    (h, a, b)
}

/// Three reply-to requests from `a` named to `rb`: answered (token T|1), error answer
/// (T|2), and timed out by the bridge after 30 ms (T|3: that outcome goes to `rb` too).
fn send_each_kind(a: &mut Worker, rb: u64) {
    for (token, cmd, json, timeout) in [
        (T | 1, 272, &b"[1]"[..], 2000),
        (T | 2, CMD_ERROR_ANSWER, b"[2]", 2000),
        (T | 3, CMD_NEVER_ANSWER, b"[]", 30),
    ] {
        a.send_request_reply_to(rb, token, 4, cmd, json, timeout)
            .unwrap();
    }
}

#[test]
fn every_outcome_reaches_the_named_attachment_with_the_token() {
    let (h, mut a, mut b) = sender_and_receiver("deliver", 3);
    let (ra, rb) = (a.reply_address(), b.reply_address());
    assert!(ra != 0 && rb != 0 && ra != rb, "{ra:#x} {rb:#x}");

    send_each_kind(&mut a, rb);
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

/// The worker-side histograms ([`dmshm::times`]) count reply-to requests at the receiver:
/// the sender stamps its send time into the request, the bridge echoes it in the outcome,
/// and the receiving library counts `now - stamp` in both histograms when it hands the
/// outcome out, as it does for its own requests. The sender counts nothing (it never sees
/// the outcome); the bridge's board (what it exports) sums the receiver's counts. Each
/// outcome's `worker_ns` is that round trip: > 0 and within the test's own (the send call
/// entered -> the outcome taken), as a count, not a timing assertion.
#[test]
fn the_receiver_counts_reply_to_outcomes_from_the_senders_stamp() {
    let (h, mut a, mut b) = sender_and_receiver("times", 2);
    let rb = b.reply_address();
    let zero = (
        a.script_times().unwrap().round_trip.count(),
        b.script_times().unwrap().round_trip.count(),
    );
    assert_eq!(zero, (0, 0));

    let t0 = Instant::now();
    send_each_kind(&mut a, rb);
    let got = collect(&mut b, 3);
    let ours = u64::try_from(t0.elapsed().as_nanos()).unwrap();
    for c in &got {
        assert!(
            c.worker_ns > 0 && c.worker_ns <= ours,
            "{c:?}: the library's round trip within the test's {ours} ns"
        );
    }
    let bt = b.script_times().unwrap();
    assert_eq!(bt.round_trip.count(), 3, "every outcome, the timeout too");
    assert_eq!(bt.outside_bridge.count(), 3);
    let sum: u64 = got.iter().map(|c| c.worker_ns).sum();
    assert_eq!(bt.round_trip.sum_ns, sum, "the round trips handed out");
    assert_eq!(
        a.script_times().unwrap().round_trip.count(),
        0,
        "not the sender's"
    );
    let board = h.script_times();
    assert_eq!(
        (board.round_trip.count(), board.outside_bridge.count()),
        (3, 3),
        "the bridge exports the receiver's counts"
    );

    // The worker's own requests keep being counted as before, with their worker_ns.
    let own = b.send_request(4, 272, b"[]", 2000);
    assert!(own.class == 1 && own.worker_ns > 0, "{own:?}");
    let ha = b.send_request_async(4, 272, b"[]", 2000).unwrap();
    let c = collect(&mut b, 1).remove(0);
    assert!(c.handle == ha && c.worker_ns > 0, "{c:?}");
    assert_eq!(b.script_times().unwrap().round_trip.count(), 5);
    h.stop();
}

/// A bridge in this process (the test plays its driver) with one worker attached: the
/// bridge, its watched slots, the events so far and the worker.
fn in_process(
    bc: &BridgeConfig,
) -> (
    dmshm::bridge::Bridge,
    Vec<u32>,
    Vec<dmshm::bridge::BridgeEvent>,
    Worker,
) {
    let mut br = dmshm::bridge::Bridge::create(bc.clone()).unwrap();
    let (mut watched, mut evs) = (Vec::new(), Vec::new());
    let ctl = bc.clone();
    let t = std::thread::spawn(move || Worker::attach(wcfg(&ctl, "module worker")).unwrap());
    common::pump(&mut br, &mut watched, &mut evs, |e| {
        e.iter()
            .any(|e| matches!(e, dmshm::bridge::BridgeEvent::WorkerAttached { .. }))
    });
    (br, watched, evs, t.join().unwrap())
}

/// A send stamp that is not a round trip — in the future (another clock, a damaged
/// record) or absurdly old — is not counted and does not panic: the outcome is handed out
/// as always with `worker_ns` 0. A bridge in process plays the echo so the test chooses
/// the stamp it echoes.
#[test]
fn a_stamp_in_the_future_or_absurdly_old_is_not_counted() {
    use dmshm::bridge::BridgeEvent;
    use dmshm::record::{class, Answer, ReplyTo};
    use dmshm::times::{monotonic_ns, MAX_STAMP_AGE};

    let bc = cfg("stamp", 1);
    let (mut br, mut watched, mut evs, mut w) = in_process(&bc);
    let me = w.reply_address();
    for i in 1..=4 {
        w.send_request_reply_to(me, T | i, 4, 272, b"[]", 2000)
            .unwrap();
    }
    evs.clear();
    let mut requests = Vec::new();
    common::pump(&mut br, &mut watched, &mut evs, |e| {
        e.iter()
            .filter(|e| matches!(e, BridgeEvent::Request { .. }))
            .count()
            == 4
    });
    for e in evs.drain(..) {
        if let BridgeEvent::Request {
            handle, reply_to, ..
        } = e
        {
            requests.push((handle, reply_to.expect("reply-to")));
        }
    }
    let now = monotonic_ns();
    let old = now.checked_sub(u64::try_from(MAX_STAMP_AGE.as_nanos()).unwrap() + 1);
    for (handle, to) in requests {
        assert_eq!(to.address, me);
        assert!(
            to.sent_ns > 0 && to.sent_ns <= now,
            "the sender's stamp: {to:?}"
        );
        let sent_ns = match handle & 0xF {
            1 => to.sent_ns,              // as sent: counted
            2 => now + 3_600_000_000_000, // an hour ahead
            3 => u64::MAX,                // the farthest future
            _ => old.unwrap_or(u64::MAX), // older than any timeout (if the host is)
        };
        let a = Answer {
            handle,
            class: class::SUCCESS,
            result_code: 2001,
            bridge_ns: 1_000,
            peer_ns: 800,
            avps_json: "[]",
            error: "",
            reply_to: None,
        };
        br.push_reply_to(ReplyTo { sent_ns, ..to }, &a).unwrap();
    }
    let mut got = collect(&mut w, 4);
    got.sort_by_key(|c| c.handle);
    let worker_ns: Vec<_> = got.iter().map(|c| (c.handle, c.worker_ns > 0)).collect();
    assert_eq!(
        worker_ns,
        [
            (T | 1, true),
            (T | 2, false),
            (T | 3, false),
            (T | 4, false)
        ]
    );
    let times = w.script_times().unwrap();
    assert_eq!(
        (times.round_trip.count(), times.outside_bridge.count()),
        (1, 1),
        "only the real stamp"
    );
    assert_eq!(times.round_trip.sum_ns, got[0].worker_ns);
}

/// An answer for `handle` with `avps` (its size is what fills a ring).
fn answer<'a>(handle: u64, class: i32, avps: &'a str, error: &'a str) -> dmshm::record::Answer<'a> {
    dmshm::record::Answer {
        handle,
        class,
        result_code: if class == 1 { 2001 } else { 0 },
        bridge_ns: 1_000,
        peer_ns: 0,
        avps_json: avps,
        error,
        reply_to: None,
    }
}

/// What one receiver is owed (`Bridge::accept_reply_to`), in a bridge in process with a
/// bound of 4 and rings of 16 KiB: counted per accepted request until its outcome is in the
/// receiver's ring (queued ones stay owed until they leave the queue), refused beyond the
/// bound, settled once on every path (delivered, too big then the short one, abandoned,
/// queued then read, receiver gone); the not-sent notices of refused requests are queued
/// only while the receiver's queue is shorter than the bound; the receiver gets every
/// outcome and notice once when it reads again.
#[test]
fn what_one_receiver_is_owed_is_bounded_and_settled_once() {
    use dmshm::bridge::{Bridge, BridgeEvent, ReplyToCheck};
    use dmshm::record::{class, ReplyTo};
    use dmshm::times::monotonic_ns;

    let mut bc = cfg("owed", 2);
    bc.max_in_flight = 4;
    let (mut br, mut watched, mut evs, mut w) = in_process(&bc);
    let me = w.reply_address();
    let slot = dmshm::bridge::reply_address_slot(me);
    let to = |sent_ns| ReplyTo {
        address: me,
        sent_ns,
    };
    let owed = |br: &Bridge| {
        let info = br.workers().into_iter().find(|i| i.slot == slot).unwrap();
        assert_eq!(info.reply_to_owed, br.reply_to_owed(slot));
        (info.reply_to_owed, info.queued_answers)
    };
    let mut sent = Vec::new(); // the tokens whose outcome or notice was pushed
    let mut next = T;
    let mut token = || {
        next += 1;
        next
    };

    // The bound: four accepted, the fifth refused; addresses of nobody are gone.
    for _ in 0..4 {
        assert_eq!(br.accept_reply_to(me), ReplyToCheck::Accepted(slot));
    }
    assert_eq!(owed(&br), (4, 0));
    assert_eq!(br.accept_reply_to(me), ReplyToCheck::Full { slot, owed: 4 });
    assert_eq!(br.accept_reply_to(0), ReplyToCheck::Gone);
    assert_eq!(br.accept_reply_to(me + (1 << 12)), ReplyToCheck::Gone);
    assert_eq!(owed(&br), (4, 0), "refusals count nothing");

    // Settled once each: into the ring; too big (still owed), then the short one; abandoned.
    let t1 = token();
    br.push_reply_to(to(monotonic_ns()), &answer(t1, class::SUCCESS, "[1]", ""))
        .unwrap();
    sent.push(t1);
    assert_eq!(owed(&br), (3, 0));
    let huge = "x".repeat(5000);
    let t2 = token();
    assert!(matches!(
        br.push_reply_to(to(monotonic_ns()), &answer(t2, class::SUCCESS, &huge, "")),
        Err(Error::TooBig { .. })
    ));
    assert_eq!(owed(&br), (3, 0), "not settled by a refused push");
    br.push_reply_to(
        to(monotonic_ns()),
        &answer(t2, class::NOT_SENT, "", "too big"),
    )
    .unwrap();
    sent.push(t2);
    assert_eq!(owed(&br), (2, 0));
    br.abandon_reply_to(me);
    assert_eq!(owed(&br), (1, 0));
    br.abandon_reply_to(me + (1 << 12)); // another attachment's: nothing
    assert_eq!(owed(&br), (1, 0));
    assert_eq!(br.accept_reply_to(me), ReplyToCheck::Accepted(slot));
    assert_eq!(br.accept_reply_to(me), ReplyToCheck::Accepted(slot));
    assert_eq!(br.accept_reply_to(me), ReplyToCheck::Accepted(slot));
    assert!(matches!(br.accept_reply_to(me), ReplyToCheck::Full { .. }));

    // The receiver reads nothing. Notices of refused requests fill its ring, then its queue
    // up to the bound (4 records); beyond, they are dropped.
    let big = "y".repeat(3000);
    let mut notices = 0;
    loop {
        let n = token();
        match br.push_reply_to_refusal(
            to(monotonic_ns()),
            &answer(n, class::NOT_SENT, &big, "owed"),
        ) {
            Ok(()) => {
                sent.push(n);
                notices += 1;
            }
            Err(Error::Full) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(notices < 100, "never full");
    }
    assert_eq!(
        owed(&br),
        (4, 4),
        "the queue at the bound, nothing owed for notices"
    );
    assert!(matches!(
        br.push_reply_to_refusal(
            to(monotonic_ns()),
            &answer(token(), class::NOT_SENT, "", "owed")
        ),
        Err(Error::Full)
    ));

    // The four owed outcomes come: queued, still owed; the bound holds.
    for _ in 0..4 {
        let t = token();
        br.push_reply_to(to(monotonic_ns()), &answer(t, class::SUCCESS, &big, ""))
            .unwrap();
        sent.push(t);
    }
    assert_eq!(owed(&br), (4, 8));
    assert!(matches!(br.accept_reply_to(me), ReplyToCheck::Full { .. }));

    // It reads again: every outcome and notice once, in order; the queue empties and it is
    // owed nothing; a new request is accepted.
    let mut got = Vec::new();
    let t0 = Instant::now();
    while got.len() < sent.len() {
        assert!(t0.elapsed() < Duration::from_secs(10), "got {got:?}");
        while br.service(slot, &mut evs) {}
        poll_fd(w.fd(), 10);
        while let Some(c) = w.next_answer() {
            got.push(c.handle);
        }
    }
    nothing_for(&mut w);
    assert_eq!(got, sent);
    assert_eq!(owed(&br), (0, 0));
    assert_eq!(br.accept_reply_to(me), ReplyToCheck::Accepted(slot));
    assert_eq!(br.accept_reply_to(me), ReplyToCheck::Accepted(slot));

    // The receiver leaves: its count goes with it, outcomes still coming are dropped, and
    // its address is gone.
    drop(w);
    evs.clear();
    common::pump(&mut br, &mut watched, &mut evs, |e| {
        e.iter()
            .any(|e| matches!(e, BridgeEvent::WorkerGone { .. }))
    });
    assert!(matches!(
        br.push_reply_to(
            to(monotonic_ns()),
            &answer(token(), class::SUCCESS, "[]", "")
        ),
        Err(Error::Detached(_))
    ));
    assert_eq!(br.accept_reply_to(me), ReplyToCheck::Gone);
    assert_eq!(br.reply_to_owed(slot), 0);
    br.abandon_reply_to(me);
}
