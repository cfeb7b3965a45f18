//! Issue 15 item 2: no allocation per message on the bridge's side of the seam, in either
//! direction. A counting global allocator (per thread, switched on only around the bridge's
//! calls) counts what `Bridge::dispatch`, `Bridge::service` (replies and the workers' own
//! requests, handed over as `BridgeEvent`s), the events' drop and `Bridge::push_answer` (the
//! outcomes) allocate in the steady state: nothing. The worker's side (libdmbridge) is counted
//! too: taking a request (borrowed), replying, sending and taking an answer allocate nothing
//! (BENCHMARKS.md "Session 13: allocation-free seam"; the C API's own part is counted in
//! cabi/tests/seam_allocations.rs).
//!
//! A count, not a time: the assertion holds on any machine. Its own test binary, so no other
//! test's threads share the allocator.

mod common;
mod counting;

use common::{poll_fd, pump, wcfg};
use counting::counted;
use dmshm::bridge::{Bridge, BridgeConfig, BridgeEvent, Dispatch, SlotId};
use dmshm::record::{class, Answer, Payload, ReplyStatus};
use dmshm::segment::Geometry;
use dmshm::worker::Worker;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn cfg() -> BridgeConfig {
    let dir = std::env::temp_dir();
    let id = format!("{}-alloc", std::process::id());
    let mut cfg = BridgeConfig::new(
        dir.join(format!("dmshm-{id}.sock")),
        PathBuf::from(format!("/dev/shm/dmshm-test-{id}")),
    );
    cfg.geometry = Geometry {
        slots: 2,
        ring_bytes: 64 * 1024,
        max_msg: 4096,
    };
    cfg
}

/// Messages per round in each direction (several slices of the arena alive at once).
const PER_ROUND: usize = 8;
const WARM_UP: usize = 200;
const ROUNDS: usize = 500;

/// Allocations per round, on each side.
#[derive(Default, Debug)]
struct Counts {
    bridge: u64,
    worker_next_request: u64,
    worker_reply: u64,
    worker_send_async: u64,
    worker_next_answer: u64,
}

/// One round: `PER_ROUND` incoming requests dispatched, taken and replied by the worker;
/// `PER_ROUND` requests of the worker's, each answered by the bridge.
fn round(b: &mut Bridge, slot: SlotId, w: &mut Worker, evs: &mut Vec<BridgeEvent>) -> Counts {
    let mut n = Counts::default();
    let json = r#"[{"Session-Id":"s;1"},{"User-Name":"alice"}]"#;
    let reply_avps = [0u8; 96];
    let req = common::ppr(json);
    for _ in 0..PER_ROUND {
        let (d, a) = counted(|| b.dispatch("PPR", &req));
        assert!(matches!(d, Dispatch::Sent { .. }), "{d:?}");
        n.bridge += a;
    }
    for _ in 0..PER_ROUND {
        // As libdmbridge's C API takes it: borrowed, copied into buffers the C API keeps
        // (counted in cabi/tests/seam_allocations.rs).
        let (token, a) = counted(|| {
            let r = w.next_request_view().unwrap().unwrap();
            assert_eq!(r.avps_json, json);
            r.token
        });
        n.worker_next_request += a;
        let (r, a) = counted(|| w.reply(token, ReplyStatus::Ok, Payload::Avps, &reply_avps, ""));
        r.unwrap();
        n.worker_reply += a;
        let (h, a) = counted(|| w.send_request_async(4, 272, json.as_bytes(), 5000));
        h.unwrap();
        n.worker_send_async += a;
    }
    // The bridge's turn: both directions, and the outcomes of the worker's requests.
    let t0 = Instant::now();
    let mut replies = 0;
    let mut requests = 0;
    while replies < PER_ROUND || requests < PER_ROUND {
        assert!(t0.elapsed() < Duration::from_secs(10), "stuck");
        let ((), a) = counted(|| {
            while b.service(slot, evs) {}
            for e in evs.iter() {
                match e {
                    BridgeEvent::Reply { avps, .. } => {
                        assert_eq!(&avps[..], &reply_avps[..]);
                        replies += 1;
                    }
                    BridgeEvent::Request {
                        handle, avps_json, ..
                    } => {
                        assert_eq!(&avps_json[..], json.as_bytes());
                        requests += 1;
                        let answer = Answer {
                            handle: *handle,
                            class: class::SUCCESS,
                            result_code: 2001,
                            bridge_ns: 1000,
                            peer_ns: 800,
                            avps_json: r#"[{"Result-Code":2001}]"#,
                            error: "",
                            reply_to: None,
                        };
                        b.push_answer(slot, &answer).unwrap();
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            // The driver's end of an event: dropped (the slices go back to the arena).
            evs.clear();
        });
        n.bridge += a;
    }
    let mut answers = 0;
    let t0 = Instant::now();
    while answers < PER_ROUND {
        assert!(t0.elapsed() < Duration::from_secs(10), "stuck");
        // As the C API takes it: copied into a reused `dmb_answer`, the strings given back
        // (counted in cabi/tests/seam_allocations.rs).
        let (c, a) = counted(|| {
            let c = w.next_answer()?;
            let class = c.class;
            w.reuse_text(c.avps_json);
            w.reuse_text(c.error);
            Some(class)
        });
        n.worker_next_answer += a;
        match c {
            Some(c) => {
                assert_eq!(c, class::SUCCESS);
                answers += 1;
            }
            None => {
                poll_fd(w.fd(), 100);
            }
        }
    }
    n
}

#[test]
fn the_bridge_allocates_nothing_per_message_in_either_direction() {
    let bc = cfg();
    let mut b = Bridge::create(bc.clone()).unwrap();
    let mut evs = Vec::with_capacity(4 * PER_ROUND);
    let mut watched = Vec::new();
    let wc = wcfg(&bc, "w1");
    let t = std::thread::spawn(move || Worker::attach(wc).unwrap());
    pump(&mut b, &mut watched, &mut evs, |e| {
        e.iter()
            .any(|e| matches!(e, BridgeEvent::WorkerAttached { .. }))
    });
    let mut w = t.join().unwrap();
    w.set_handled(&["PPR".into()]).unwrap();
    pump(&mut b, &mut watched, &mut evs, |e| {
        e.iter().any(|e| matches!(e, BridgeEvent::Handles { .. }))
    });
    evs.clear();
    let slot = watched[0];

    for _ in 0..WARM_UP {
        round(&mut b, slot, &mut w, &mut evs);
    }
    let mut total = Counts::default();
    for _ in 0..ROUNDS {
        let n = round(&mut b, slot, &mut w, &mut evs);
        total.bridge += n.bridge;
        total.worker_next_request += n.worker_next_request;
        total.worker_reply += n.worker_reply;
        total.worker_send_async += n.worker_send_async;
        total.worker_next_answer += n.worker_next_answer;
    }
    let msgs = (ROUNDS * PER_ROUND) as f64;
    println!(
        "per message, after {WARM_UP} rounds of warm-up, over {ROUNDS} rounds of {PER_ROUND} \
         replies and {PER_ROUND} requests: bridge (dispatch, service, events dropped, \
         push_answer) {} allocations in all; worker next_request {:.2}, reply {:.2}, \
         send_request_async {:.2}, next_answer {:.2}",
        total.bridge,
        total.worker_next_request as f64 / msgs,
        total.worker_reply as f64 / msgs,
        total.worker_send_async as f64 / msgs,
        total.worker_next_answer as f64 / msgs,
    );
    assert_eq!(
        total.bridge, 0,
        "the bridge's side of the seam allocated in the steady state"
    );
    // The library's side: taking a request (borrowed) or an answer (its strings given back
    // for the next ones, as the C API does) allocates nothing.
    assert_eq!(total.worker_next_request, 0, "per incoming request");
    assert_eq!(total.worker_next_answer, 0, "per answer");
    assert_eq!(total.worker_reply, 0, "a reply");
    assert_eq!(total.worker_send_async, 0, "an async request");
}
