//! `dmb_answer_worker_ns()` through the C ABI, against the reference bridge (`dmshm::reference`,
//! on its own thread): the library's round trip of an answer is > 0 and within the round
//! trip the test measured around the same calls, for a sync request (the call -> its return),
//! an async one (the send -> `dmb_next_answer`) and a reply-to outcome (the sender's send stamp
//! -> taken by the receiving attachment), and 0 for an answer the library made itself (a
//! request refused before it was sent) and for NULL. Bounds, not timings.

use dmbridge::{
    dmb_answer_class, dmb_answer_free, dmb_answer_handle, dmb_answer_worker_ns, dmb_attach,
    dmb_detach, dmb_fd, dmb_next_answer, dmb_reply_address, dmb_send_request,
    dmb_send_request_async, dmb_send_request_reply_to_checked, dmb_worker, DMB_ANSWER_NOT_SENT,
    DMB_ANSWER_SUCCESS, DMB_OK,
};
#[allow(dead_code)] // not every helper is used here
#[path = "../../shm/tests/common/mod.rs"]
mod common;

use dmshm::reference::EchoBridge;
use std::ffi::CString;
use std::time::{Duration, Instant};

fn attach(path: &CString, name: &std::ffi::CStr) -> *mut dmb_worker {
    let mut w: *mut dmb_worker = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings and a writable out pointer.
    let rc = unsafe { dmb_attach(path.as_ptr(), name.as_ptr(), &mut w) };
    assert!(rc >= 0, "dmb_attach: {rc}");
    w
}

/// The next answer of `w` (at most 10 s: a hang, not a timing assertion): (handle, class,
/// worker_ns), the answer freed.
fn next(w: *mut dmb_worker) -> (u64, i32, u64) {
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(10), "no answer");
        let mut a = std::ptr::null_mut();
        // SAFETY: a live worker, a writable out pointer; `a` is live until freed.
        unsafe {
            if dmb_next_answer(w, &mut a) == 1 {
                let got = (
                    dmb_answer_handle(a),
                    dmb_answer_class(a),
                    dmb_answer_worker_ns(a),
                );
                dmb_answer_free(a);
                return got;
            }
            common::poll_fd(dmb_fd(w), 100);
        }
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

#[test]
fn the_librarys_round_trip_of_own_and_reply_to_answers() {
    let bc = common::small_bridge_cfg("cabi-worker-ns");
    let h = EchoBridge::spawn(bc.clone()).unwrap();
    let path = CString::new(bc.control_path.to_str().unwrap()).unwrap();
    let sip = attach(&path, c"sip worker");
    let module = attach(&path, c"module worker");
    let json = c"[{\"User-Name\":\"alice\"}]";

    // SAFETY: NULL is allowed.
    assert_eq!(unsafe { dmb_answer_worker_ns(std::ptr::null()) }, 0);

    // Sync: the call -> its return.
    let mut a = std::ptr::null_mut();
    let t0 = Instant::now();
    // SAFETY: a live worker, `json` of that length, a writable out pointer.
    let class =
        unsafe { dmb_send_request(sip, 4, 272, json.as_ptr(), json.count_bytes(), 2000, &mut a) };
    let ours = ns(t0.elapsed());
    assert_eq!(class, DMB_ANSWER_SUCCESS);
    // SAFETY: `a` is live until freed.
    let worker_ns = unsafe { dmb_answer_worker_ns(a) };
    // SAFETY: `a` is live and not used after.
    unsafe { dmb_answer_free(a) };
    assert!(
        worker_ns > 0 && worker_ns <= ours,
        "sync {worker_ns} ns, the test's {ours} ns"
    );

    // Async: the send -> taken.
    let mut handle = 0;
    let t0 = Instant::now();
    // SAFETY: a live worker, `json` of that length, a writable handle.
    let rc = unsafe {
        dmb_send_request_async(
            sip,
            4,
            272,
            json.as_ptr(),
            json.count_bytes(),
            2000,
            &mut handle,
        )
    };
    assert_eq!(rc, DMB_OK);
    let (got, class, worker_ns) = next(sip);
    let ours = ns(t0.elapsed());
    assert_eq!((got, class), (handle, DMB_ANSWER_SUCCESS));
    assert!(
        worker_ns > 0 && worker_ns <= ours,
        "async {worker_ns} ns, the test's {ours} ns"
    );

    // Reply-to: the sender's call -> taken by the module worker.
    // SAFETY: a live worker.
    let to = unsafe { dmb_reply_address(module) };
    assert_ne!(to, 0);
    let token = (1u64 << 63) | 7;
    let t0 = Instant::now();
    // SAFETY: a live worker, `json` of that length.
    let rc = unsafe {
        dmb_send_request_reply_to_checked(
            sip,
            to,
            token,
            4,
            272,
            json.as_ptr(),
            json.count_bytes(),
            2000,
        )
    };
    assert_eq!(rc, DMB_OK);
    let (got, class, worker_ns) = next(module);
    let ours = ns(t0.elapsed());
    assert_eq!((got, class), (token, DMB_ANSWER_SUCCESS));
    assert!(
        worker_ns > 0 && worker_ns <= ours,
        "reply-to {worker_ns} ns, the test's {ours} ns"
    );

    // An answer the library made itself (refused before sending: bad JSON): unknown, 0.
    let bad = c"[{\"User-Name\":";
    let mut a = std::ptr::null_mut();
    // SAFETY: a live worker, `bad` of that length, a writable out pointer.
    let class =
        unsafe { dmb_send_request(sip, 4, 272, bad.as_ptr(), bad.count_bytes(), 2000, &mut a) };
    assert_eq!(class, DMB_ANSWER_NOT_SENT);
    // SAFETY: `a` is live until freed, then not used.
    unsafe {
        assert_eq!(dmb_answer_worker_ns(a), 0);
        dmb_answer_free(a);
    }

    // SAFETY: live workers, not used after.
    unsafe {
        dmb_detach(sip);
        dmb_detach(module);
    }
    h.stop();
}
