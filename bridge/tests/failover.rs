//! Failover against real third-party peers, counted.
//!
//! Two real servers answer test_app for the realm `test.local`: freeDiameter's test_app
//! (`server1.test.local`) and Erlang/OTP diameter (`erlserver.test.local`). The node
//! originates a bounded load through them from the application seam (an in-process
//! `AppHandle`, 100 requests in flight); mid-load one server hangs (SIGSTOP, so requests are
//! surely in flight on it) and is then killed with SIGKILL (no DPR: its connection just
//! breaks). Then:
//! - every request got exactly one outcome, an answer carrying its own Test-AVP value or a
//!   timeout error; nothing else, none lost, none twice (counted per request);
//! - on the wire (dumpcap on both servers' ports), every request the killed server had
//!   received and not answered was resent to the survivor with the T flag and the same
//!   end-to-end id, only such requests carry the T flag, and the survivor answered each
//!   end-to-end id once.
//!
//! Needs freeDiameterd + test_app.fdx, escript, dumpcap and tshark: scripts/setup.sh
//! installs them; a missing one fails the test with that instruction (see harness::paths).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dmrun::app::RequestError;
use harness::capture::{tcp_conversations, Capture};
use harness::peers::{ErlangPeer, FdOptions, FreeDiameter};
use harness::wire::{split_frames, RawMessage};
use harness::{free_port, Sig, TestDir};

/// Requests in the run, and how many are in flight at once.
const TOTAL: u32 = 3000;
const IN_FLIGHT: usize = 100;
/// The victim is killed once this many requests have an outcome.
const KILL_AFTER: usize = 1000;
const T_FLAG: u8 = 0x10;
const R_FLAG: u8 = 0x80;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Victim {
    FreeDiameter,
    Erlang,
}

/// What one run saw on the application side.
#[derive(Default, Debug)]
struct Outcomes {
    /// Outcomes per request number (index = Test-AVP value).
    per_request: Vec<u32>,
    answered: usize,
    timeouts: usize,
    /// Anything else: wrong Result-Code, wrong echo, other errors.
    wrong: Vec<String>,
}

/// One direction of one captured connection, split into whole messages. A connection broken
/// by SIGKILL may end inside a message; that tail is ignored.
fn messages(bytes: &[u8]) -> Vec<RawMessage> {
    let (frames, tail) = split_frames(bytes).unwrap_or_else(|e| panic!("{e}"));
    if !tail.is_empty() {
        eprintln!(
            "partial message of {} bytes at the end of a stream",
            tail.len()
        );
    }
    frames
        .iter()
        .map(|f| RawMessage::parse(f).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Requests the node sent (the node opened every connection), and answers it received.
fn wire(pcap: &std::path::Path) -> (Vec<RawMessage>, Vec<RawMessage>) {
    let (mut sent, mut answers) = (Vec::new(), Vec::new());
    for conv in tcp_conversations(pcap) {
        for m in messages(&conv.to_server) {
            if m.cmd_code == TA_CMD && m.flags & R_FLAG != 0 {
                sent.push(m);
            }
        }
        for m in messages(&conv.to_client) {
            if m.cmd_code == TA_CMD && m.flags & R_FLAG == 0 {
                answers.push(m);
            }
        }
    }
    (sent, answers)
}

/// The node's runtime. The test's own thread starts and stops the peers and captures: the
/// harness starts children with a parent-death signal, which fires when the *thread* that
/// spawned them ends, so they must not be spawned from a pool thread that may retire.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn run(victim: Victim) {
    let rt = runtime();
    let dir = TestDir::new(&format!("failover-{victim:?}"));
    let root = dir.path().to_path_buf();
    let (fd_port, erl_port) = (free_port(), free_port());
    let mut fd = FreeDiameter::start(
        &root,
        FdOptions {
            identity: "server1.test.local".into(),
            port: fd_port,
            ..FdOptions::default()
        },
    );
    let mut erl = ErlangPeer::server(&root, erl_port, "ta");
    let cap_fd = Capture::start(&root, fd_port);
    let cap_erl = Capture::start(&root, erl_port);

    let node = rt.block_on(Running::start(
        &format!(
            r#"
[node]
origin_host = "bridge.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:0"]
[[applications]]
id = {TA_APP}
vendor = {TA_VENDOR}
[[peers]]
host = "server1.test.local"
address = "127.0.0.1"
port = {fd_port}
[[peers]]
host = "erlserver.test.local"
address = "127.0.0.1"
port = {erl_port}
[[routes]]
realm = "test.local"
peers = ["server1.test.local", "erlserver.test.local"]
[timers]
tc = "1s"
tw = "6s"
cer_timeout = "3s"
answer_timeout = "5s"
dpa_timeout = "1s"
drain_timeout = "2s"
"#
        ),
        TaEcho::new(),
    ));
    // Both servers open before the load starts: each answers a request addressed to it
    // (checked by the answer's Origin-Host: while one is still connecting, the realm route
    // would let the other answer). Bounded.
    let (outcomes, killed_at) = rt.block_on(async {
        for host in ["server1.test.local", "erlserver.test.local"] {
            let mut last = None;
            for _ in 0..100 {
                let a = first_answer(&node.handle, host).await;
                let origin = a.find_ref(264, 0).map(|o| o.data.to_vec());
                last = Some((origin.clone(), a.find_u32(268, 0)));
                if origin.as_deref() == Some(host.as_bytes()) && a.find_u32(268, 0) == Some(2001) {
                    last = None;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(last.is_none(), "{host} never answered itself: {last:?}");
        }

        let outcomes = Arc::new(Mutex::new(Outcomes {
            per_request: vec![0; TOTAL as usize],
            ..Outcomes::default()
        }));
        let next = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..IN_FLIGHT {
            let (h, next, done, outcomes) = (
                node.handle.clone(),
                next.clone(),
                done.clone(),
                outcomes.clone(),
            );
            workers.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= TOTAL {
                        return;
                    }
                    // No Destination-Host: routed by realm, round-robin over both servers.
                    let avps = realm_request(n as i32);
                    let outcome = h.send_request(TA_APP, TA_CMD, avps).await;
                    let mut o = outcomes.lock().unwrap();
                    o.per_request[n as usize] += 1;
                    match outcome {
                        Ok(a) => {
                            let rc = a.find_u32(268, 0);
                            let echo = a.find_ref(TEST_AVP, TA_VENDOR).map(|x| x.data.to_vec());
                            if rc == Some(2001)
                                && echo.as_deref() == Some(&(n as i32).to_be_bytes()[..])
                            {
                                o.answered += 1;
                            } else {
                                o.wrong.push(format!(
                                    "request {n}: Result-Code {rc:?}, echo {echo:?}"
                                ));
                            }
                        }
                        Err(RequestError::Timeout) => o.timeouts += 1,
                        Err(e) => o.wrong.push(format!("request {n}: {e}")),
                    }
                    drop(o);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }

        // Mid-load, the victim hangs (SIGSTOP to its process group), so requests pile up on its
        // connection unanswered, then dies (SIGKILL, no DPR: the kernel resets the connection).
        // Killing a fast server outright often catches nothing in flight (its answers are
        // already in the socket), which would prove nothing.
        let end = Instant::now() + Duration::from_secs(20);
        while done.load(Ordering::SeqCst) < KILL_AFTER {
            assert!(Instant::now() < end, "load did not progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let victim_pid = match victim {
            Victim::FreeDiameter => fd.guard().pid(),
            Victim::Erlang => erl.guard().pid(),
        };
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", "--", &format!("-{victim_pid}")])
            .status()
            .expect("kill -STOP");
        assert!(stopped.success());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed_at = done.load(Ordering::SeqCst);
        match victim {
            Victim::FreeDiameter => fd.guard().signal_group(Sig::Kill).unwrap(),
            Victim::Erlang => erl.guard().signal_group(Sig::Kill).unwrap(),
        }
        for w in workers {
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("every request has an outcome in time")
                .unwrap();
        }
        node.stop().await;
        (outcomes, killed_at)
    });

    let (cap_victim, cap_survivor) = match victim {
        Victim::FreeDiameter => (cap_fd, cap_erl),
        Victim::Erlang => (cap_erl, cap_fd),
    };
    let (victim_pcap, survivor_pcap) = (cap_victim.stop(), cap_survivor.stop());
    drop(fd);
    drop(erl);

    // Application side: one outcome per request, all of them answers or timeouts.
    let o = outcomes.lock().unwrap();
    let twice: Vec<usize> = (0..TOTAL as usize)
        .filter(|&n| o.per_request[n] > 1)
        .collect();
    let lost: Vec<usize> = (0..TOTAL as usize)
        .filter(|&n| o.per_request[n] == 0)
        .collect();
    eprintln!(
        "{victim:?} hung, then killed after {killed_at} outcomes: answered {}, timeouts {}, wrong {}",
        o.answered,
        o.timeouts,
        o.wrong.len()
    );
    assert!(twice.is_empty(), "requests with two outcomes: {twice:?}");
    assert!(lost.is_empty(), "requests without an outcome: {lost:?}");
    assert!(
        o.wrong.is_empty(),
        "{:?}",
        &o.wrong[..o.wrong.len().min(10)]
    );
    assert_eq!(o.answered + o.timeouts, TOTAL as usize);
    // The survivor had all the time it needed: failover saved every request.
    assert_eq!(o.timeouts, 0, "requests timed out instead of failing over");

    // Wire side.
    let (victim_sent, victim_answers) = wire(&victim_pcap);
    let (survivor_sent, survivor_answers) = wire(&survivor_pcap);
    let answered_by_victim: HashSet<u32> = victim_answers.iter().map(|m| m.e2e).collect();
    let sent_to_victim: HashSet<u32> = victim_sent.iter().map(|m| m.e2e).collect();
    let in_flight_on_victim: HashSet<u32> = sent_to_victim
        .difference(&answered_by_victim)
        .copied()
        .collect();
    let resent: Vec<&RawMessage> = survivor_sent
        .iter()
        .filter(|m| m.flags & T_FLAG != 0)
        .collect();
    let resent_e2e: HashSet<u32> = resent.iter().map(|m| m.e2e).collect();
    eprintln!(
        "victim: {} requests, {} answered, {} in flight when killed; survivor: {} requests, {} with T",
        victim_sent.len(),
        victim_answers.len(),
        in_flight_on_victim.len(),
        survivor_sent.len(),
        resent.len()
    );
    assert!(
        !in_flight_on_victim.is_empty(),
        "the kill caught no request in flight on the victim; the test proves nothing"
    );
    let missing: Vec<(u32, bool, usize)> = in_flight_on_victim
        .difference(&resent_e2e)
        .map(|e| {
            (
                *e,
                survivor_sent.iter().any(|m| m.e2e == *e),
                victim_sent.iter().filter(|m| m.e2e == *e).count(),
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "requests in flight on the killed peer not resent with T to the survivor: {missing:?} (e2e, seen at survivor, times sent to victim)"
    );
    // The node may also resend requests it had queued for the victim's connection that never
    // reached the wire (written after the kill); it cannot know, so they carry T as well. What
    // must never carry T: a request the victim had answered, or one the survivor already had.
    let wrongly_resent: Vec<&u32> = resent_e2e.intersection(&answered_by_victim).collect();
    assert!(
        wrongly_resent.is_empty(),
        "requests resent although the killed peer had answered them: {wrongly_resent:?}"
    );
    let first_copies: HashSet<u32> = survivor_sent
        .iter()
        .filter(|m| m.flags & T_FLAG == 0)
        .map(|m| m.e2e)
        .collect();
    let both: Vec<&u32> = resent_e2e.intersection(&first_copies).collect();
    assert!(both.is_empty(), "sent to the survivor twice: {both:?}");
    assert_eq!(resent.len(), resent_e2e.len(), "a request resent twice");
    let mut per_e2e: HashMap<u32, usize> = HashMap::new();
    for a in &survivor_answers {
        *per_e2e.entry(a.e2e).or_default() += 1;
    }
    let dup: Vec<(&u32, &usize)> = per_e2e.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dup.is_empty(),
        "survivor answers per end-to-end id: {dup:?}"
    );
    for m in &resent {
        assert_eq!(per_e2e.get(&m.e2e), Some(&1), "resent request not answered");
    }
}

/// A Test-Request's AVPs without Destination-Host.
fn realm_request(n: i32) -> bytes::Bytes {
    use dmproto::{Header, MessageWriter};
    let mut w = MessageWriter::new(Header::request(0, 0, 0, 0));
    w.str(263, M, 0, &format!("bridge.test.local;2;{n}"));
    w.i32(TEST_AVP, 0, TA_VENDOR, n);
    w.finish().unwrap().slice(20..)
}

#[test]
fn freediameter_killed_mid_load_fails_over_to_erlang_counted() {
    run(Victim::FreeDiameter);
}

#[test]
fn erlang_killed_mid_load_fails_over_to_freediameter_counted() {
    run(Victim::Erlang);
}
