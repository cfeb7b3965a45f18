//! Issue 15 item 2 on the SIP server's side of the seam: what a SIP worker does with each
//! incoming request through libdmbridge's C API — `dmb_next_request`, the getters,
//! `dmb_reply` (the JSON converted with the bridge's dictionary), `dmb_request_free` —
//! allocates nothing in the steady state. Before, each request was a box and six strings, and
//! each reply's AVPs a new buffer grown twice and frozen (10 allocations per request, BENCHMARKS
//! "Session 13: allocation-free seam").
//!
//! A counting global allocator (per thread, switched on only around the worker's calls) over
//! a real bridge (`dmshm::bridge::Bridge`, in process, on another thread's turn) and the C API
//! called as a module calls it. A count, not a time. Its own test binary, so no other test's
//! threads share the allocator.

use dmbridge::{
    dmb_answer_avps_json, dmb_answer_class, dmb_answer_error, dmb_answer_free, dmb_answer_handle,
    dmb_answer_peer_ns, dmb_answer_result_code, dmb_answer_worker_ns, dmb_attach, dmb_detach,
    dmb_fd, dmb_next_answer, dmb_next_request, dmb_reply, dmb_reply_address, dmb_request_avps_json,
    dmb_request_event, dmb_request_free, dmb_request_origin_host, dmb_request_sess_id,
    dmb_request_token, dmb_send_request_async, dmb_send_request_reply_to_checked, dmb_set_handled,
    dmb_worker, DMB_ANSWER_SUCCESS, DMB_E_DETACHED, DMB_E_INVAL, DMB_OK,
};
#[allow(dead_code)] // not every helper is used here
#[path = "../../shm/tests/common/mod.rs"]
mod common;
#[path = "../../shm/tests/counting/mod.rs"]
mod counting;

use common::{poll_fd, pump};
use counting::{counted, uncounted};
use dmshm::bridge::{Bridge, BridgeEvent, Dispatch};
use dmshm::record::{class, Answer, Payload};
use std::ffi::{c_char, CStr, CString};
use std::time::{Duration, Instant};

const PER_ROUND: usize = 8;
const WARM_UP: usize = 100;
const ROUNDS: usize = 300;

fn text(p: *const c_char) -> String {
    // SAFETY: the C API hands NUL-terminated text valid until the request is freed.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A bridge in process with one worker attached through the C API, handling PPR.
fn attached(tag: &str) -> (Bridge, u32, *mut dmb_worker, Vec<BridgeEvent>) {
    let bc = common::small_bridge_cfg(&format!("cabi-{tag}"));
    let mut b = Bridge::create(bc.clone()).unwrap();
    // The built-in dictionary: replies are converted in the worker (`Payload::Avps`).
    b.set_dictionary(&dmshm::control::encode_sources([]))
        .unwrap();
    let mut evs = Vec::with_capacity(4 * PER_ROUND);
    let mut watched = Vec::new();

    let path = CString::new(bc.control_path.to_str().unwrap()).unwrap();
    let t = std::thread::spawn(move || {
        let mut w: *mut dmb_worker = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings and a writable out pointer.
        let rc = unsafe { dmb_attach(path.as_ptr(), c"w1".as_ptr(), &mut w) };
        assert!(rc >= 0, "dmb_attach: {rc}");
        w as usize // the worker is used from the test's thread only after this one ends
    });
    pump(&mut b, &mut watched, &mut evs, |e| {
        e.iter()
            .any(|e| matches!(e, BridgeEvent::WorkerAttached { .. }))
    });
    let w = t.join().unwrap() as *mut dmb_worker;
    let names = [c"PPR".as_ptr()];
    // SAFETY: a live worker; one name.
    assert_eq!(unsafe { dmb_set_handled(w, names.as_ptr(), 1) }, DMB_OK);
    pump(&mut b, &mut watched, &mut evs, |e| {
        e.iter().any(|e| matches!(e, BridgeEvent::Handles { .. }))
    });
    evs.clear();
    (b, watched[0], w, evs)
}

#[test]
fn taking_reading_answering_and_freeing_a_request_allocates_nothing() {
    let (mut b, slot, w, mut evs) = attached("req");
    let json = r#"[{"Session-Id":"s;1"},{"Origin-Host":"hss"},{"User-Name":"alice"}]"#;
    let req = common::ppr(json);
    // A raw value as bench-echo.cfg's route echoes one: decoded in the reader's scratch.
    let answer = c"[{\"Result-Code\":2001},{\"Session-Id\":\"s;1\"},{\"345678:999999\":{\"hex\":\"0000002a\"}}]";
    let mut total = 0;
    let mut as_avps = 0;
    for round in 0..WARM_UP + ROUNDS {
        for _ in 0..PER_ROUND {
            let d = b.dispatch("PPR", &req);
            assert!(matches!(d, Dispatch::Sent { .. }), "{d:?}");
        }
        // As a module's loop does: take until there is none (the empty take services the
        // connection: the bridge's control messages, the dictionary among them, are read then).
        let mut taken = 0;
        let t0 = Instant::now();
        loop {
            assert!(t0.elapsed() < Duration::from_secs(5), "stuck");
            let mut r = std::ptr::null_mut();
            let mut seen = (String::new(), String::new(), String::new());
            let (rc, n) = counted(|| {
                // SAFETY: a live worker, a writable out pointer; `r` is live until freed.
                unsafe {
                    let rc = dmb_next_request(w, &mut r);
                    if rc == 1 {
                        let mut len = 0;
                        let avps = dmb_request_avps_json(r, &mut len);
                        let _ = (dmb_request_event(r), dmb_request_sess_id(r));
                        let host = dmb_request_origin_host(r);
                        // the test's own copies are not counted
                        seen = uncounted(|| (text(avps), text(host), text(dmb_request_sess_id(r))));
                        assert_eq!(len, seen.0.len());
                        let token = dmb_request_token(r);
                        let sent = dmb_reply(w, token, answer.as_ptr(), answer.count_bytes(), 0);
                        assert_eq!(sent, DMB_OK);
                        dmb_request_free(r);
                    }
                    rc
                }
            });
            if rc == 1 {
                assert_eq!(seen.0, json);
                assert_eq!(seen.1, "hss");
                assert_eq!(seen.2, "s;1");
                taken += 1;
                if round >= WARM_UP {
                    total += n;
                }
            } else {
                assert_eq!(rc, 0);
                if round >= WARM_UP {
                    total += n;
                }
                if taken == PER_ROUND {
                    break;
                }
                while b.service(slot, &mut evs) {}
            }
        }
        // The bridge takes the replies (not counted: its side has its own test in dmshm).
        let t0 = Instant::now();
        let mut replies = 0;
        while replies < PER_ROUND {
            assert!(t0.elapsed() < Duration::from_secs(5), "stuck");
            while b.service(slot, &mut evs) {}
            for e in evs.drain(..) {
                if let BridgeEvent::Reply { form, .. } = e {
                    replies += 1;
                    if round >= WARM_UP && form == Payload::Avps {
                        as_avps += 1;
                    }
                }
            }
        }
    }
    // SAFETY: the worker is live and not used after.
    unsafe { dmb_detach(w) };
    let msgs = ROUNDS * PER_ROUND;
    println!("{total} allocations over {msgs} requests taken, read, answered and freed, and the empty takes between");
    assert_eq!(
        as_avps, msgs,
        "every reply converted in the worker with the bridge's dictionary"
    );
    assert_eq!(total, 0, "the C API allocated in the steady state");
}

#[test]
fn sending_a_request_and_taking_and_freeing_its_answer_allocates_nothing() {
    let (mut b, slot, w, mut evs) = attached("ans");
    let json = c"[{\"Session-Id\":\"s;2\"},{\"User-Name\":\"alice\"}]";
    let answer_json = r#"[{"Result-Code":2001},{"Session-Id":"s;2"}]"#;
    let mut total = 0;
    for round in 0..WARM_UP + ROUNDS {
        // The test's own round trip of this round's requests: from before the first send
        // to after each take (dmb_answer_worker_ns is within it).
        let t_send = Instant::now();
        for _ in 0..PER_ROUND {
            let mut handle = 0;
            let (rc, n) = counted(|| {
                // SAFETY: a live worker, `json` of that length, a writable handle.
                unsafe {
                    dmb_send_request_async(
                        w,
                        4,
                        272,
                        json.as_ptr(),
                        json.count_bytes(),
                        5000,
                        &mut handle,
                    )
                }
            });
            assert_eq!(rc, DMB_OK);
            if round >= WARM_UP {
                total += n;
            }
        }
        // The bridge answers each (not counted: its side has its own test in dmshm).
        let t0 = Instant::now();
        let mut answered = 0;
        while answered < PER_ROUND {
            assert!(t0.elapsed() < Duration::from_secs(5), "stuck");
            while b.service(slot, &mut evs) {}
            for e in evs.drain(..) {
                if let BridgeEvent::Request { handle, .. } = e {
                    let a = Answer {
                        handle,
                        class: class::SUCCESS,
                        result_code: 2001,
                        bridge_ns: 1000,
                        peer_ns: 800,
                        avps_json: answer_json,
                        error: "",
                        reply_to: None,
                    };
                    b.push_answer(slot, &a).unwrap();
                    answered += 1;
                }
            }
        }
        // As the module's loop does: take answers until there is none.
        let mut taken = 0;
        let t0 = Instant::now();
        loop {
            assert!(t0.elapsed() < Duration::from_secs(5), "stuck");
            let mut a = std::ptr::null_mut();
            let mut seen = String::new();
            let mut worker_ns = 0;
            let (rc, n) = counted(|| {
                // SAFETY: a live worker, a writable out pointer; `a` is live until freed.
                unsafe {
                    let rc = dmb_next_answer(w, &mut a);
                    if rc == 1 {
                        let mut len = 0;
                        let p = dmb_answer_avps_json(a, &mut len);
                        seen = uncounted(|| text(p));
                        assert_eq!(len, seen.len());
                        assert_eq!(dmb_answer_class(a), DMB_ANSWER_SUCCESS);
                        assert_eq!(dmb_answer_result_code(a), 2001);
                        assert_eq!(dmb_answer_peer_ns(a), 800);
                        assert_eq!(uncounted(|| text(dmb_answer_error(a))), "");
                        worker_ns = dmb_answer_worker_ns(a);
                        dmb_answer_free(a);
                    }
                    rc
                }
            });
            if round >= WARM_UP {
                total += n;
            }
            if rc == 1 {
                assert_eq!(seen, answer_json);
                let ours = t_send.elapsed().as_nanos() as u64;
                assert!(
                    worker_ns > 0 && worker_ns <= ours,
                    "the library's round trip {worker_ns} ns, the test's {ours} ns"
                );
                taken += 1;
            } else {
                assert_eq!(rc, 0);
                if taken == PER_ROUND {
                    break;
                }
                // SAFETY: a live worker.
                poll_fd(unsafe { dmb_fd(w) }, 100);
            }
        }
    }
    // SAFETY: the worker is live and not used after.
    unsafe { dmb_detach(w) };
    let msgs = ROUNDS * PER_ROUND;
    println!("{total} allocations over {msgs} requests sent and answers taken, read and freed, and the empty takes between");
    assert_eq!(total, 0, "the C API allocated in the steady state");
}

/// The reply-to path (DESIGN §5) costs no allocation either: `dmb_send_request_reply_to_checked`
/// on the sending side, and `dmb_next_answer` / the getters / `dmb_answer_free` for the
/// outcome on the receiving side. One attachment is both here (it names its own reply
/// address); the outcome comes back as a reply-to Answer with the token as its handle.
#[test]
fn sending_a_reply_to_request_and_taking_its_outcome_allocates_nothing() {
    let (mut b, slot, w, mut evs) = attached("replyto");
    // SAFETY: a live worker.
    let address = unsafe { dmb_reply_address(w) };
    assert_ne!(address, 0, "this bridge offers reply-to");
    // SAFETY: NULL is allowed (it has no address).
    assert_eq!(unsafe { dmb_reply_address(std::ptr::null()) }, 0);
    let json = c"[{\"Session-Id\":\"s;3\"},{\"User-Name\":\"alice\"}]";
    // SAFETY: a live worker, `json` of that length.
    let zero = unsafe {
        dmb_send_request_reply_to_checked(w, 0, 1, 4, 272, json.as_ptr(), json.count_bytes(), 0)
    };
    assert_eq!(zero, DMB_E_INVAL, "reply_to 0 names nobody");
    let answer_json = r#"[{"Result-Code":2001},{"Session-Id":"s;3"}]"#;
    let mut total = 0;
    let mut token = 1u64 << 63;
    for round in 0..WARM_UP + ROUNDS {
        let t_send = Instant::now();
        for _ in 0..PER_ROUND {
            token += 1;
            let (rc, n) = counted(|| {
                // SAFETY: a live worker, `json` of that length.
                unsafe {
                    dmb_send_request_reply_to_checked(
                        w,
                        address,
                        token,
                        4,
                        272,
                        json.as_ptr(),
                        json.count_bytes(),
                        5000,
                    )
                }
            });
            assert_eq!(rc, DMB_OK);
            if round >= WARM_UP {
                total += n;
            }
        }
        // The bridge delivers each outcome to the address (not counted).
        let t0 = Instant::now();
        let mut answered = 0;
        while answered < PER_ROUND {
            assert!(t0.elapsed() < Duration::from_secs(5), "stuck");
            while b.service(slot, &mut evs) {}
            for e in evs.drain(..) {
                if let BridgeEvent::Request {
                    handle, reply_to, ..
                } = e
                {
                    let to = reply_to.expect("a reply-to request");
                    assert_eq!(b.reply_target(to.address), Some(slot));
                    let a = Answer {
                        handle,
                        class: class::SUCCESS,
                        result_code: 2001,
                        bridge_ns: 1000,
                        peer_ns: 800,
                        avps_json: answer_json,
                        error: "",
                        reply_to: None,
                    };
                    b.push_reply_to(to, &a).unwrap();
                    answered += 1;
                }
            }
        }
        let mut taken = 0;
        let t0 = Instant::now();
        loop {
            assert!(t0.elapsed() < Duration::from_secs(5), "stuck");
            let mut a = std::ptr::null_mut();
            let mut handle = 0;
            let mut worker_ns = 0;
            let (rc, n) = counted(|| {
                // SAFETY: a live worker, a writable out pointer; `a` is live until freed.
                unsafe {
                    let rc = dmb_next_answer(w, &mut a);
                    if rc == 1 {
                        handle = dmb_answer_handle(a);
                        assert_eq!(dmb_answer_class(a), DMB_ANSWER_SUCCESS);
                        assert_eq!(dmb_answer_peer_ns(a), 800);
                        worker_ns = dmb_answer_worker_ns(a);
                        dmb_answer_free(a);
                    }
                    rc
                }
            });
            if round >= WARM_UP {
                total += n;
            }
            if rc == 1 {
                assert_eq!(handle, token - PER_ROUND as u64 + 1 + taken as u64);
                // The sender's stamp -> taken here: the echoed stamp made it a round trip.
                let ours = t_send.elapsed().as_nanos() as u64;
                assert!(
                    worker_ns > 0 && worker_ns <= ours,
                    "the library's round trip {worker_ns} ns, the test's {ours} ns"
                );
                taken += 1;
            } else {
                assert_eq!(rc, 0);
                if taken == PER_ROUND {
                    break;
                }
                // SAFETY: a live worker.
                poll_fd(unsafe { dmb_fd(w) }, 100);
            }
        }
    }
    drop(b);
    // The bridge is gone: once the worker saw it, no address and no send.
    let t0 = Instant::now();
    loop {
        // SAFETY: a live worker, `json` of that length.
        let rc = unsafe {
            dmb_send_request_reply_to_checked(
                w,
                address,
                1,
                4,
                272,
                json.as_ptr(),
                json.count_bytes(),
                0,
            )
        };
        if rc == DMB_E_DETACHED {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "still sending: {rc}");
        // The EOF is seen when the worker services its connection (as the module's loop
        // does when the descriptor fires).
        let mut a = std::ptr::null_mut();
        // SAFETY: a live worker, a writable out pointer.
        if unsafe { dmb_next_answer(w, &mut a) } == 1 {
            // SAFETY: `a` is live.
            unsafe { dmb_answer_free(a) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: a live worker.
    assert_eq!(unsafe { dmb_reply_address(w) }, 0);
    // SAFETY: the worker is live and not used after.
    unsafe { dmb_detach(w) };
    let msgs = ROUNDS * PER_ROUND;
    println!("{total} allocations over {msgs} reply-to requests sent and their outcomes taken, read and freed, and the empty takes between");
    assert_eq!(total, 0, "the C API allocated in the steady state");
}
