use super::*;
use crate::bench::template::Identity;
use dmproto::avp::AvpFlags;
use dmproto::dict::Dictionary;
use dmproto::{Framer, Header, MessageWriter};
use serde_json::json;

const MS: Duration = Duration::from_millis(1);

fn template() -> Arc<Template> {
    let msg = json!({"cmd_code": 16777214, "app_id": 16777215, "avps": [
        {"User-Name": "u{{counter}}"}
    ]});
    let id = Identity {
        origin_host: "bench.test.local".into(),
        origin_realm: "test.local".into(),
        destination_realm: "test.local".into(),
        destination_host: None,
        session_high: 1,
    };
    Arc::new(Template::compile(&msg, &id, Dictionary::builtin()).unwrap())
}

fn node() -> Arc<LocalNode> {
    Arc::new(LocalNode {
        origin_host: "bench.test.local".into(),
        origin_realm: "test.local".into(),
        origin_state_id: 1,
    })
}

fn client(pace: Pace, limit: u64, t0: Instant) -> (Client, Arc<Shared>) {
    let shared = Arc::new(Shared::new(limit));
    let plan = Plan {
        conn: 0,
        pace,
        timeout: 100 * MS,
        start: t0,
        stop_at: t0 + Duration::from_secs(10),
        max_in_flight: 1000,
        first_hop_by_hop: 1000,
        first_end_to_end: 5,
        seed: 42,
    };
    (
        Client::new(plan, template(), node(), shared.clone()),
        shared,
    )
}

/// The messages written to `out` (and `out` emptied).
fn take(out: &mut BytesMut) -> Vec<Message> {
    let mut f = Framer::default();
    f.feed(out).unwrap();
    out.clear();
    let mut v = Vec::new();
    while let Some(b) = f.next_frame().unwrap() {
        v.push(Message::decode(b).unwrap());
    }
    assert_eq!(f.buffered(), 0, "only whole messages are written");
    v
}

fn answer(req: &Message, result: u32) -> Bytes {
    let mut w = MessageWriter::answer_to(&req.header);
    w.u32(268, AvpFlags::M, 0, result);
    w.finish().unwrap()
}

fn request(code: u32, hbh: u32) -> Bytes {
    let mut w = MessageWriter::new(Header::request(code, 0, hbh, hbh));
    w.str(264, AvpFlags::M, 0, "server.test.local");
    w.finish().unwrap()
}

#[test]
fn closed_loop_keeps_k_in_flight_and_ends_with_dpr() {
    let t0 = Instant::now();
    let (mut c, shared) = client(Pace::Concurrency(3), 5, t0);
    let mut out = BytesMut::new();
    c.poll(t0, &mut out);
    let reqs = take(&mut out);
    assert_eq!(reqs.len(), 3);
    assert_eq!(c.in_flight(), 3);
    let hbh: Vec<u32> = reqs.iter().map(|m| m.header.hop_by_hop).collect();
    assert_eq!(hbh, [1000, 1001, 1002]);
    let e2e: Vec<u32> = reqs.iter().map(|m| m.header.end_to_end).collect();
    assert_eq!(e2e, [6, 7, 8]);
    assert_eq!(reqs[2].find_ref(1, 0).unwrap().data, b"u2");
    assert_eq!(c.next_wakeup(t0), Some(t0 + 100 * MS), "the first timeout");

    // Answers out of order, one an error; each frees a slot for the next request.
    c.on_frame(t0 + 2 * MS, answer(&reqs[1], 5012), &mut out)
        .unwrap();
    c.on_frame(t0 + 3 * MS, answer(&reqs[0], 2001), &mut out)
        .unwrap();
    c.poll(t0 + 3 * MS, &mut out);
    let more = take(&mut out);
    assert_eq!(more.len(), 2, "count 5: only two more");
    assert_eq!(
        shared.issued.load(Relaxed),
        5,
        "window full: no sixth claim yet"
    );
    for m in [&reqs[2], &more[0], &more[1]] {
        c.on_frame(t0 + 4 * MS, answer(m, 2001), &mut out).unwrap();
    }
    // Count exhausted and nothing in flight: DPR.
    c.poll(t0 + 4 * MS, &mut out);
    assert_eq!(shared.issued.load(Relaxed), 6, "the sixth claim failed");
    let dpr = take(&mut out);
    assert_eq!(dpr.len(), 1);
    assert_eq!((dpr[0].header.code, dpr[0].is_request()), (282, true));
    assert!(!c.is_done());
    let mut w = MessageWriter::answer_to(&dpr[0].header);
    w.u32(268, AvpFlags::M, 0, 2001);
    c.on_frame(t0 + 5 * MS, w.finish().unwrap(), &mut out)
        .unwrap();
    assert!(c.is_done());
    let t = &c.tally;
    assert_eq!(
        (t.sent, t.answered, t.errors(), t.timeouts, t.unmatched),
        (5, 5, 1, 0, 0)
    );
    assert_eq!(t.latency.max(), t.latency.highest_equivalent(4000));
    assert_eq!(shared.live.answered.load(Relaxed), 5);
    assert_eq!(shared.live.errors.load(Relaxed), 1);
    assert!(c.failure.is_none());
}

#[test]
fn timeouts_free_slots_and_late_answers_are_unmatched() {
    let t0 = Instant::now();
    let (mut c, shared) = client(Pace::Concurrency(2), 3, t0);
    let mut out = BytesMut::new();
    c.poll(t0, &mut out);
    let reqs = take(&mut out);
    c.poll(t0 + 99 * MS, &mut out);
    assert!(take(&mut out).is_empty());
    c.poll(t0 + 100 * MS, &mut out);
    assert_eq!(c.tally.timeouts, 2);
    assert_eq!(shared.live.timeouts.load(Relaxed), 2);
    let last = take(&mut out);
    assert_eq!(last.len(), 1, "one left of the count");
    c.on_frame(t0 + 101 * MS, answer(&reqs[0], 2001), &mut out)
        .unwrap();
    assert_eq!((c.tally.answered, c.tally.unmatched), (0, 1));
    // The connection drops with the last request in flight.
    c.end(Some("the peer closed the connection".into()));
    assert_eq!(c.tally.unanswered, 1);
    assert_eq!(c.failure.as_deref(), Some("the peer closed the connection"));
    assert!(c.is_done());
}

#[test]
fn open_loop_follows_the_schedule_and_measures_from_it() {
    let t0 = Instant::now();
    // 100/s over 2 connections: this one (offset 1) sends at 10, 30, 50, ... ms.
    let pace = Pace::Rate {
        per_sec: 100.0,
        stride: 2,
        offset: 1,
    };
    let (mut c, _) = client(pace, u64::MAX, t0);
    let mut out = BytesMut::new();
    c.poll(t0, &mut out);
    assert!(take(&mut out).is_empty());
    assert_eq!(c.next_wakeup(t0), Some(t0 + 10 * MS));
    // Late wake-up: everything due goes out at once.
    c.poll(t0 + 55 * MS, &mut out);
    let reqs = take(&mut out);
    assert_eq!(reqs.len(), 3);
    assert_eq!(c.next_wakeup(t0 + 55 * MS), Some(t0 + 70 * MS));
    // Answered at 60 ms: latencies from the schedule (10 and 30 ms ago... 50, 30, 10).
    for m in &reqs {
        c.on_frame(t0 + 60 * MS, answer(m, 2001), &mut out).unwrap();
    }
    let h = &c.tally.latency;
    assert_eq!(h.max(), h.highest_equivalent(50_000));
    assert_eq!(h.min(), h.lowest_equivalent(10_000));
    // Waking long after the end still sends what was scheduled before it, then drains:
    // 70, 90, ..., 9990 ms is 497 more requests.
    let mut n = 0;
    for _ in 0..10 {
        c.poll(t0 + Duration::from_secs(11), &mut out);
        n += take(&mut out).len();
    }
    assert_eq!(n, 497);
    assert_eq!(c.tally.sent, 500);
}

#[test]
fn stop_drains_within_the_timeout_then_dpr() {
    let t0 = Instant::now();
    let (mut c, shared) = client(Pace::Concurrency(1), u64::MAX, t0);
    let mut out = BytesMut::new();
    c.poll(t0, &mut out);
    assert_eq!(take(&mut out).len(), 1);
    shared.stop.store(true, Relaxed);
    c.poll(t0 + 10 * MS, &mut out);
    assert!(
        take(&mut out).is_empty(),
        "draining: nothing new, the request is in flight"
    );
    assert_eq!(c.next_wakeup(t0 + 10 * MS), Some(t0 + 100 * MS));
    c.poll(t0 + 100 * MS, &mut out);
    assert_eq!(c.tally.timeouts, 1);
    let dpr = take(&mut out);
    assert_eq!(dpr.len(), 1);
    assert_eq!(dpr[0].header.code, 282);
    // No DPA: done after the bounded wait, not a failure.
    assert_eq!(c.next_wakeup(t0 + 100 * MS), Some(t0 + 100 * MS + DPA_WAIT));
    c.poll(t0 + 100 * MS + DPA_WAIT, &mut out);
    assert!(c.is_done());
    assert!(c.failure.is_none());
    assert_eq!(c.next_wakeup(t0), None);
}

#[test]
fn duration_ends_sending() {
    let t0 = Instant::now();
    let (mut c, _) = client(Pace::Concurrency(1), u64::MAX, t0);
    let mut out = BytesMut::new();
    c.poll(t0, &mut out);
    let req = take(&mut out);
    c.on_frame(t0 + MS, answer(&req[0], 2001), &mut out)
        .unwrap();
    assert_eq!(c.next_wakeup(t0 + MS), Some(t0 + Duration::from_secs(10)));
    c.poll(t0 + Duration::from_secs(10), &mut out);
    let dpr = take(&mut out);
    assert_eq!((dpr.len(), dpr[0].header.code), (1, 282));
    assert_eq!(c.tally.sent, 1);
}

#[test]
fn peer_requests_get_exactly_one_answer() {
    let t0 = Instant::now();
    let (mut c, _) = client(Pace::Concurrency(1), u64::MAX, t0);
    let mut out = BytesMut::new();
    c.poll(t0, &mut out);
    take(&mut out);
    c.on_frame(t0, request(280, 77), &mut out).unwrap();
    c.on_frame(t0, request(999, 78), &mut out).unwrap();
    let answers = take(&mut out);
    assert_eq!(answers.len(), 2);
    assert_eq!(
        (answers[0].header.code, answers[0].header.hop_by_hop),
        (280, 77)
    );
    assert_eq!(answers[0].find_u32(268, 0), Some(2001));
    assert_eq!(answers[1].find_u32(268, 0), Some(3001));
    assert!(answers[1].header.flags.is_error());
    assert_eq!(c.tally.dwr_answered, 1);
    // DPR from the peer: DPA, the request in flight is unanswered, the run failed.
    c.on_frame(t0, request(282, 79), &mut out).unwrap();
    let dpa = take(&mut out);
    assert_eq!(
        (dpa.len(), dpa[0].header.code, dpa[0].is_request()),
        (1, 282, false)
    );
    assert!(c.is_done());
    assert_eq!(c.tally.unanswered, 1);
    assert!(c.failure.as_deref().unwrap().contains("DPR"));
    // Garbage is an error for the driver to close on.
    assert!(c
        .on_frame(t0, Bytes::from_static(&[2, 0, 0, 20]), &mut out)
        .is_err());
}

#[test]
fn batches_are_bounded() {
    let t0 = Instant::now();
    let (mut c, _) = client(Pace::Concurrency(MAX_BATCH + 10), u64::MAX, t0);
    let mut out = BytesMut::new();
    c.poll(t0, &mut out);
    assert_eq!(take(&mut out).len(), MAX_BATCH);
    assert_eq!(c.next_wakeup(t0), Some(t0), "more is due at once");
    c.poll(t0, &mut out);
    assert_eq!(take(&mut out).len(), 10);
}

/// Counts heap allocations made by the current thread (other tests run on other threads).
/// The binary's one `unsafe` (tests only, see main.rs).
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        pub static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }

    // SAFETY: delegates every call to the system allocator unchanged; the thread-local
    // counter is const-initialised, so touching it never allocates or recurses.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as ours, passed through.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: same contract as ours, passed through.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as ours, passed through.
            unsafe { System.realloc(p, l, n) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    pub fn count() -> u64 {
        ALLOCS.with(Cell::get)
    }
}

#[test]
fn steady_state_allocates_nothing_per_request() {
    const K: usize = 16;
    const ROUNDS: usize = 200;
    let t0 = Instant::now();
    let (mut c, _) = client(Pace::Concurrency(K), u64::MAX, t0);
    let mut out = BytesMut::with_capacity(64 * 1024);
    // Answers for every request the run will send, built before measuring: hop-by-hop ids
    // are sequential from 1000. The template's request is the answer's model.
    c.poll(t0, &mut out);
    let model = take(&mut out).remove(0);
    let answers: Vec<Bytes> = (0..(ROUNDS + 2) * K)
        .map(|i| {
            let mut h = model.header;
            h.hop_by_hop = 1000 + i as u32;
            let mut w = MessageWriter::answer_to(&h);
            w.u32(268, AvpFlags::M, 0, if i % 7 == 0 { 5012 } else { 2001 });
            w.finish().unwrap()
        })
        .collect();
    // Warm-up round: the window, the outcome list and the buffer reach their working size.
    let mut next = 0;
    for a in &answers[..K] {
        c.on_frame(t0, a.clone(), &mut out).unwrap();
        next += 1;
    }
    c.poll(t0, &mut out);
    out.clear();
    let before = counting::count();
    for _ in 0..ROUNDS {
        for a in &answers[next..next + K] {
            c.on_frame(t0 + MS, a.clone(), &mut out).unwrap();
        }
        next += K;
        c.poll(t0 + MS, &mut out);
        assert!(!out.is_empty());
        out.clear();
    }
    let allocs = counting::count() - before;
    // The counter does see this thread's allocations.
    let probe = counting::count();
    let v = std::hint::black_box(vec![1u8; 10]);
    assert_eq!(counting::count(), probe + 1);
    drop(v);
    assert_eq!(c.tally.answered as usize, next);
    assert_eq!(
        allocs,
        0,
        "{allocs} allocations for {} requests and answers",
        ROUNDS * K
    );
}

fn answer_from(req: &Message, result: u32, origin: &str) -> Bytes {
    let mut w = MessageWriter::answer_to(&req.header);
    if let Some(s) = req.find_ref(263, 0) {
        w.raw(s.raw);
    }
    w.u32(268, AvpFlags::M, 0, result);
    w.str(264, AvpFlags::M, 0, origin);
    w.finish().unwrap()
}

#[test]
fn session_mode_binds_followups_to_the_host_that_answered() {
    let t0 = Instant::now();
    let id = Identity {
        origin_host: "bench.test.local".into(),
        origin_realm: "test.local".into(),
        destination_realm: "test.local".into(),
        destination_host: None,
        session_high: 1,
    };
    let d = Dictionary::builtin();
    let ccr = |t: u32| {
        json!({"cmd_code": 272, "app_id": 4, "avps": [
            {"Session-Id": "{{session}}"}, {"Auth-Application-Id": 4},
            {"CC-Request-Type": t}, {"CC-Request-Number": t - 1}
        ]})
    };
    let main = Template::compile(&ccr(1), &id, d).unwrap();
    let then = vec![
        Template::compile(&ccr(2), &id, d).unwrap(),
        Template::compile(&ccr(3), &id, d).unwrap(),
    ];
    let shared = Arc::new(Shared::new(2));
    let plan = Plan {
        conn: 0,
        pace: Pace::Concurrency(2),
        timeout: 100 * MS,
        start: t0,
        stop_at: t0 + Duration::from_secs(10),
        max_in_flight: 1000,
        first_hop_by_hop: 1,
        first_end_to_end: 5,
        seed: 42,
    };
    let mut c = Client::new(plan, Arc::new(main), node(), shared).with_followups(Arc::new(then));
    let mut out = BytesMut::new();
    c.poll(t0, &mut out);
    let first = take(&mut out);
    assert_eq!(first.len(), 2);
    let sids: Vec<String> = first
        .iter()
        .map(|m| m.session_id().unwrap().to_string())
        .collect();
    assert_ne!(sids[0], sids[1]);
    // Session 0 answered by node2, session 1 by node3.
    c.on_frame(t0, answer_from(&first[0], 2001, "node2"), &mut out)
        .unwrap();
    c.on_frame(t0, answer_from(&first[1], 2001, "node3"), &mut out)
        .unwrap();
    c.poll(t0, &mut out);
    let ups = take(&mut out);
    assert_eq!(ups.len(), 2, "one update per session");
    for (u, (sid, host)) in ups.iter().zip([(&sids[0], "node2"), (&sids[1], "node3")]) {
        assert_eq!(u.session_id(), Some(sid.as_str()));
        assert_eq!(u.find_ref(293, 0).unwrap().data, host.as_bytes());
        assert_eq!(u.find_u32(416, 0), Some(2), "CC-Request-Type UPDATE");
        assert_eq!(u.avp_refs().next().unwrap().unwrap().code, 263);
    }
    // Session 0's update answered by the wrong host; session 1's update fails.
    c.on_frame(t0, answer_from(&ups[0], 2001, "node3"), &mut out)
        .unwrap();
    c.on_frame(t0, answer_from(&ups[1], 3002, "dra"), &mut out)
        .unwrap();
    c.poll(t0, &mut out);
    let terms = take(&mut out);
    assert_eq!(terms.len(), 1, "a failed step ends its session");
    assert_eq!(terms[0].find_u32(416, 0), Some(3));
    assert_eq!(terms[0].find_ref(293, 0).unwrap().data, b"node2");
    c.on_frame(t0, answer_from(&terms[0], 2001, "node2"), &mut out)
        .unwrap();
    c.poll(t0, &mut out);
    assert_eq!(c.tally.sessions, 2);
    assert_eq!(
        c.tally.sent, 5,
        "2 initial + 3 follow-ups, each counted once"
    );
    assert_eq!(c.tally.followups_sent, 3);
    assert_eq!(c.tally.wrong_host, 1);
    assert_eq!(c.tally.followup_errors, 1);
    assert_eq!(c.tally.sessions_completed, 1);
    assert_eq!(c.in_flight(), 0);
    // The error is counted with the Origin-Host that answered it, as a follow-up's too.
    let dra = (Outcome::Result(3002), Bytes::from_static(b"dra"));
    assert_eq!(c.tally.error_origins, vec![(dra.clone(), 1)]);
    assert_eq!(c.tally.followup_error_origins, vec![(dra, 1)]);
}
