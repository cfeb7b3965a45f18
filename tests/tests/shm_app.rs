//! `dmbridge run` serving SIP-server workers over shared memory, end to end: a raw Diameter
//! client (the harness's independent codec) sends requests to the real binary, worker
//! *processes* (this test executable re-run as `worker_process`, using dmshm's worker side —
//! what libdmbridge wraps) serve them, and a raw Diameter peer answers the requests the
//! workers originate.
//!
//! Every fault test counts: each request sent gets exactly one answer (by hop-by-hop id), of
//! the expected kind, and nothing more arrives afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::bridge::{Bridge, BridgeOptions, BridgePeer};
use harness::wire::{
    self, answer_to, code, encode_message, flags, test_app, Avp, RawClient, RawMessage,
};
use harness::{free_port, ChildGuard, Sig, TestDir};

const WORKER_ENV: &str = "DMB_E2E_WORKER";
const WAIT: Duration = Duration::from_secs(10);
const CLIENT: (&str, &str) = ("client.test.local", "test.local");
const PEER: (&str, &str) = ("peer.test.local", "test.local");
/// test_app's command has no abbreviation in the dictionary: its event is E_DM_<code>.
const TA_EVENT: &str = "16777214";

/// The worker process of the other tests: they start this executable again with
/// `worker_process --exact --ignored` and the mode in `DMB_E2E_WORKER`.
#[test]
#[ignore = "the worker process of the other tests in this file (they start it themselves)"]
fn worker_process() {
    if let Ok(mode) = std::env::var(WORKER_ENV) {
        worker::main(&mode);
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up helpers

fn options(port: u16, app_toml: &str) -> BridgeOptions {
    BridgeOptions {
        port,
        peers: vec![BridgePeer {
            host: PEER.0.into(),
            port: None,
        }],
        default_route: vec![PEER.0.into()],
        extra_toml: if app_toml.contains("max_workers") {
            app_toml.to_string()
        } else {
            format!("max_workers = 8\n{app_toml}")
        },
        ..BridgeOptions::default()
    }
}

fn control_socket(b: &Bridge) -> PathBuf {
    b.config_path()
        .parent()
        .expect("config has a directory")
        .join("control.sock")
}

/// Starts a worker process: `mode` (see [`worker`]), serving `handles` (comma-separated).
fn spawn_worker(
    dir: &Path,
    name: &str,
    ctl: &Path,
    mode: &str,
    handles: &str,
    env: &[(&str, String)],
) -> ChildGuard {
    let exe = std::env::current_exe().expect("test executable");
    let mut cmd = Command::new(exe);
    cmd.args([
        "worker_process",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(WORKER_ENV, mode)
    .env("DMB_CTL", ctl)
    .env("DMB_NAME", name)
    .env("DMB_HANDLES", handles);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut g = ChildGuard::spawn(name, cmd, dir).with_stop_signal(Sig::Kill);
    if let Err(e) = g.wait_for_line("W attached true", WAIT) {
        panic!("worker {name} did not attach: {e}");
    }
    g
}

/// Waits until the bridge's log shows `n` lines containing `needle`.
fn wait_log_count(b: &mut Bridge, needle: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let count = b.guard().output().matches(needle).count();
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bridge log has {count} of {n} lines with {needle:?}:\n{}",
            b.guard().tail(40)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of a worker's stdout starting with `prefix`.
fn worker_lines(g: &ChildGuard, prefix: &str) -> Vec<String> {
    g.stdout()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn wait_worker_lines(g: &ChildGuard, prefix: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = worker_lines(g, prefix);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "worker {} printed {} of {n} {prefix:?} lines:\n{}",
            g.name(),
            lines.len(),
            g.tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client(b: &Bridge) -> RawClient {
    let mut c = RawClient::connect(b.port(), WAIT).expect("connect to the bridge");
    let cea = c.handshake(CLIENT.0, CLIENT.1, WAIT).expect("CEA");
    assert_eq!(cea.result_code(), Some(2001), "CEA");
    c
}

/// A test_app request with `extra` AVPs after the routing ones; returns (bytes, hop-by-hop).
fn ta_request(c: &mut RawClient, sid: &str, extra: &[Avp]) -> (Vec<u8>, u32) {
    let id = c.next_id();
    let mut avps = vec![
        Avp::str(code::SESSION_ID, sid),
        Avp::str(code::ORIGIN_HOST, CLIENT.0),
        Avp::str(code::ORIGIN_REALM, CLIENT.1),
        Avp::str(code::DESTINATION_REALM, "test.local"),
    ];
    avps.extend_from_slice(extra);
    let bytes = encode_message(
        flags::REQUEST | flags::PROXIABLE,
        test_app::CMD,
        test_app::APP_ID,
        id,
        id,
        &avps,
    );
    (bytes, id)
}

/// Sends `n` test_app requests pipelined (Session-Id `client;<tag>;<i>`); returns their
/// hop-by-hop ids in order.
fn send_requests(c: &mut RawClient, tag: &str, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            let (req, id) = ta_request(c, &format!("client;{tag};{i}"), &[]);
            c.send(&req).unwrap();
            id
        })
        .collect()
}

/// Reads answers until every id in `ids` has one (answering DWRs), failing on duplicates or
/// strangers; returns the Result-Code by hop-by-hop id.
fn collect_answers(c: &mut RawClient, ids: &[u32], timeout: Duration) -> HashMap<u32, RawMessage> {
    let mut got: HashMap<u32, RawMessage> = HashMap::new();
    let deadline = Instant::now() + timeout;
    while got.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = c
            .read_until(left, CLIENT, |m| !m.is_request())
            .unwrap_or_else(|e| panic!("{} of {} answers, then: {e}", got.len(), ids.len()));
        assert!(ids.contains(&m.hbh), "answer to an unknown id {:#x}", m.hbh);
        assert!(
            got.insert(m.hbh, m).is_none(),
            "a second answer for one request"
        );
    }
    got
}

/// Fails if any message other than a DWR arrives within `quiet`.
fn assert_no_more_answers(c: &mut RawClient, quiet: Duration) {
    match c.read_until(quiet, CLIENT, |m| !m.is_request()) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        Err(e) => panic!("connection trouble while checking for extra answers: {e}"),
        Ok(m) => panic!(
            "unexpected extra answer: hbh {:#x}, Result-Code {:?}",
            m.hbh,
            m.result_code()
        ),
    }
}

fn codes_of(answers: &HashMap<u32, RawMessage>) -> HashMap<u32, usize> {
    let mut by = HashMap::new();
    for m in answers.values() {
        *by.entry(m.result_code().unwrap_or(0)).or_insert(0) += 1;
    }
    by
}

// ---------------------------------------------------------------------------------------------
// Incoming requests

/// Every AVP kind the JSON mapping must carry exactly: vendor (known and unknown), grouped,
/// 64-bit, binary OctetString.
fn rich_avps() -> Vec<Avp> {
    vec![
        Avp::str(1, "alice"),
        Avp::i32(test_app::TEST_AVP, 7)
            .vendor(test_app::VENDOR_ID)
            .flags(wire::avp_flags::VENDOR),
        Avp::grouped(443, &[Avp::u32(450, 0), Avp::str(444, "123")]),
        Avp::str(601, "sip:alice@test.local")
            .vendor(10415)
            .flags(wire::avp_flags::VENDOR | wire::avp_flags::MANDATORY),
        Avp::grouped(
            code::VENDOR_SPECIFIC_APPLICATION_ID,
            &[
                Avp::u32(code::VENDOR_ID, 10415),
                Avp::u32(code::AUTH_APPLICATION_ID, 16777216),
            ],
        ),
        Avp::u64(363, (1u64 << 63) + 5),
        Avp::raw(25, vec![0u8, 1, 2, 0xff]),
        // Proxy-Info: the node copies it into the answer itself (RFC 6733 §6.2).
        Avp::grouped(
            284,
            &[
                Avp::str(280, "proxy1.test.local"),
                Avp::raw(33, b"state-1".to_vec()),
            ],
        ),
    ]
}

#[test]
fn requests_are_served_by_workers_with_exact_avps_both_ways() {
    let dir = TestDir::new("shm-roundtrip");
    let mut b = Bridge::start(dir.path(), &options(free_port(), ""));
    let ctl = control_socket(&b);
    let w = spawn_worker(
        dir.path(),
        "w-echo",
        &ctl,
        "echo",
        TA_EVENT,
        &[("DMB_VERBOSE", "1".into())],
    );
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);

    let (req, id) = ta_request(&mut c, "client;rt;1", &rich_avps());
    let ans = c.request(&req, id, CLIENT, WAIT).expect("answer");
    assert_eq!(ans.result_code(), Some(2001));
    assert_eq!(ans.flags & flags::ERROR, 0);
    assert_eq!(ans.session_id().as_deref(), Some("client;rt;1"));
    assert_eq!(ans.origin_host().as_deref(), Some("bridge.test.local"));
    // The answer carries every AVP the script replied with, byte for byte as sent (the
    // script echoed the JSON it was given).
    let sent = RawMessage::parse(&req).unwrap().avps().unwrap();
    let answered = ans.avps().unwrap();
    for a in sent
        .iter()
        .filter(|a| ![263, 264, 296, 283].contains(&a.code))
    {
        let back = answered
            .iter()
            .find(|x| x.code == a.code && x.vendor == a.vendor)
            .unwrap_or_else(|| panic!("AVP {}:{:?} missing from the answer", a.code, a.vendor));
        assert_eq!(
            back.data, a.data,
            "payload of AVP {}:{:?}",
            a.code, a.vendor
        );
    }

    assert_eq!(
        answered.iter().filter(|a| a.code == 284).count(),
        1,
        "Proxy-Info once"
    );

    // What the script saw: event name, parameters, DESIGN §4 JSON.
    let line = wait_worker_lines(&w, "W req ", 1).remove(0);
    let v: serde_json::Value =
        serde_json::from_str(line.trim_start_matches("W req ")).expect("worker line is JSON");
    assert_eq!(v["event"], "E_DM_16777214");
    assert_eq!(v["sess_id"], "client;rt;1");
    assert_eq!(v["origin_host"], CLIENT.0);
    assert_eq!(v["origin_realm"], CLIENT.1);
    assert_eq!(v["app_id"], test_app::APP_ID);
    assert_eq!(v["cmd_code"], test_app::CMD);
    let avps: serde_json::Value =
        serde_json::from_str(v["avps_json"].as_str().unwrap()).expect("avps_json is JSON");
    let want = serde_json::json!([
        {"Session-Id": "client;rt;1"},
        {"Origin-Host": CLIENT.0},
        {"Origin-Realm": CLIENT.1},
        {"Destination-Realm": "test.local"},
        {"User-Name": "alice"},
        {"345678:999999": {"hex": "00000007"}},
        {"Subscription-Id": [{"Subscription-Id-Type": 0}, {"Subscription-Id-Data": "123"}]},
        {"Public-Identity": "sip:alice@test.local"},
        {"Vendor-Specific-Application-Id": [{"Vendor-Id": 10415}, {"Auth-Application-Id": 16777216}]},
        {"Accounting-Input-Octets": 9223372036854775813u64},
        {"Class": {"hex": "000102ff"}},
        {"Proxy-Info": [{"Proxy-Host": "proxy1.test.local"}, {"Proxy-State": "state-1"}]},
    ]);
    assert_eq!(avps, want);
}

/// User + system CPU time of `pid`, in clock ticks (/proc/PID/stat fields 14 and 15; 100 a
/// second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("bridge's stat");
    // After the command name in parentheses (which may hold spaces): state is field 3.
    let rest = &stat[stat.rfind(')').expect("stat has the command") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn named_events_unhandled_commands_and_no_worker() {
    let dir = TestDir::new("shm-3001");
    let mut b = Bridge::start(dir.path(), &options(free_port(), ""));
    let ctl = control_socket(&b);
    let mut c = client(&b);

    // No worker attached at all: 3004 with the E bit.
    let (req, id) = ta_request(&mut c, "client;nw;1", &[]);
    let ans = c.request(&req, id, CLIENT, WAIT).unwrap();
    assert_eq!(ans.result_code(), Some(3004));
    assert_ne!(ans.flags & flags::ERROR, 0);

    // The refusal's status refresh (1 s later) was the only deadline of a bridge with no
    // worker: the timer, completed and never re-armed, made its loop turn without sleeping
    // at 100% of a core from then on. Idle now, it must use next to no CPU (a spinning loop
    // uses all 250 ticks of 2.5 s; an idle one ~0; the bound leaves room for a loaded box).
    let pid = b.guard().pid();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(2500));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 60,
        "the idle bridge used {used} of 250 CPU ticks in 2.5 s: a busy loop"
    );

    // A worker that serves only accounting: test_app requests get 3001 at once (E bit); an
    // ACR raises E_DM_ACR.
    let w = spawn_worker(
        dir.path(),
        "w-acr",
        &ctl,
        "echo",
        "ACR",
        &[("DMB_VERBOSE", "1".into())],
    );
    wait_log_count(&mut b, " handles [", 1);
    let (req, id) = ta_request(&mut c, "client;un;1", &[]);
    let ans = c.request(&req, id, CLIENT, WAIT).unwrap();
    assert_eq!(ans.result_code(), Some(3001));
    assert_ne!(ans.flags & flags::ERROR, 0, "3001 carries the E bit");
    assert_eq!(ans.session_id().as_deref(), Some("client;un;1"));

    let id = c.next_id();
    let acr = encode_message(
        flags::REQUEST | flags::PROXIABLE,
        wire::cmd::ACR,
        3,
        id,
        id,
        &[
            Avp::str(code::SESSION_ID, "client;acr;1"),
            Avp::str(code::ORIGIN_HOST, CLIENT.0),
            Avp::str(code::ORIGIN_REALM, CLIENT.1),
            Avp::str(code::DESTINATION_REALM, "test.local"),
            Avp::u32(480, 2),
            Avp::u32(485, 0),
            Avp::u32(code::ACCT_APPLICATION_ID, 3),
        ],
    );
    let ans = c.request(&acr, id, CLIENT, WAIT).unwrap();
    assert_eq!(ans.result_code(), Some(2001));
    assert_eq!(ans.find(480, None).and_then(|a| a.as_u32()), Some(2));
    let line = wait_worker_lines(&w, "W req ", 1).remove(0);
    let v: serde_json::Value = serde_json::from_str(line.trim_start_matches("W req ")).unwrap();
    assert_eq!(v["event"], "E_DM_ACR");
    assert_eq!(v["cmd_name"], "Accounting-Request");

    // A catch-all worker (E_DM_REQUEST) takes what nobody else serves.
    let _all = spawn_worker(dir.path(), "w-all", &ctl, "echo", "E_DM_REQUEST", &[]);
    wait_log_count(&mut b, " handles [", 2);
    let (req, id) = ta_request(&mut c, "client;all;1", &[]);
    let ans = c.request(&req, id, CLIENT, WAIT).unwrap();
    assert_eq!(ans.result_code(), Some(2001));
}

#[test]
fn bad_replies_get_one_5012_and_script_result_codes_are_kept() {
    let dir = TestDir::new("shm-badreply");
    let mut b = Bridge::start(dir.path(), &options(free_port(), ""));
    let ctl = control_socket(&b);
    let _w = spawn_worker(dir.path(), "w-echo", &ctl, "echo", TA_EVENT, &[]);
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    let mut ids = Vec::new();
    let mut want = HashMap::new();
    for (user, rc) in [
        ("bad-avp", 5012),     // JSON naming an AVP no dictionary has
        ("broken-json", 5012), // not JSON at all
        ("huge", 5012),        // larger than the ring's maximum message: the library's TooBig
        ("failed", 5012),      // the library's "Failed" reply
        ("error-5003", 5012),  // is_error with a 5xxx: refused (RFC 6733 §7.2), DESIGN §9
        ("error-3002", 3002),  // is_error with a 3xxx: the script's own protocol error
        ("fine", 2001),
    ] {
        let (req, id) = ta_request(&mut c, &format!("client;{user}"), &[Avp::str(1, user)]);
        c.send(&req).unwrap();
        ids.push(id);
        want.insert(id, rc);
    }
    let answers = collect_answers(&mut c, &ids, WAIT);
    for (id, m) in &answers {
        assert_eq!(m.result_code(), Some(want[id]), "answer {id:#x}");
        // RFC 6733 §3 / §7.2: the E bit on the 3xxx answer only
        let e = m.flags & harness::wire::flags::ERROR != 0;
        assert_eq!(e, want[id] / 1000 == 3, "answer {id:#x}");
    }
    assert_no_more_answers(&mut c, Duration::from_millis(300));
    // The worker can read why (dmb_status_json): its entry names its last refused reply
    // (the requests went in this order, so that is the "failed" one).
    let status = wait_status(&ctl);
    let me = status["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["name"] == "w-echo"))
        .cloned()
        .unwrap_or_default();
    let last = me["last_reply_error"].as_str().unwrap_or("");
    assert!(last.contains("failed reply: script error"), "{status}");
    assert_eq!(status["counters"]["answered_5012_bad_reply"], 4, "{status}");
    let log = b.guard().output();
    assert!(
        log.contains("invalid reply JSON"),
        "bad reply logged:\n{log}"
    );
    assert!(log.contains("failed reply"), "failed reply logged:\n{log}");
    // the E bit with 5003: the node's backstop refuses it, with a log line
    assert!(
        log.contains("application reply refused") && log.contains("Result-Code 5003"),
        "E bit refusal logged:\n{log}"
    );
}

#[test]
fn worker_killed_holding_requests_each_gets_exactly_one_5012() {
    const N: usize = 25;
    let dir = TestDir::new("shm-kill9");
    let mut b = Bridge::start(
        dir.path(),
        // One slot only: the replacement worker below attaches only if the dead one's slot
        // was reclaimed.
        &options(free_port(), "reply_timeout = \"3s\"\nmax_workers = 1\n"),
    );
    let ctl = control_socket(&b);
    let w = spawn_worker(dir.path(), "w-hold", &ctl, "hold", TA_EVENT, &[]);
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    let ids = send_requests(&mut c, "k", N);
    // The worker holds all N (read from its ring, never replied).
    wait_worker_lines(&w, "W held ", N);
    w.signal(Sig::Kill).unwrap();
    let answers = collect_answers(&mut c, &ids, WAIT);
    assert_eq!(codes_of(&answers), HashMap::from([(5012, N)]));
    // Past the reply timeout too: nothing is answered twice.
    assert_no_more_answers(&mut c, Duration::from_millis(3500));
    let log = b.guard().output();
    assert!(
        log.contains(&format!("{N} requests it held answered 5012")),
        "{log}"
    );
    // The slot is free again (the only one): a new worker attaches and serves.
    a_new_echo_worker_serves(dir.path(), &ctl, &mut b, &mut c, 2, "client;k;after");
}

/// An echo worker started now attaches (the bridge's `attached`-th " handles [" line) and
/// answers a request 2001: what a test runs after a worker went away.
fn a_new_echo_worker_serves(
    dir: &Path,
    ctl: &Path,
    b: &mut Bridge,
    c: &mut RawClient,
    attached: usize,
    sid: &str,
) {
    let _w = spawn_worker(dir, "w-echo", ctl, "echo", TA_EVENT, &[]);
    wait_log_count(b, " handles [", attached);
    let (req, id) = ta_request(c, sid, &[]);
    assert_eq!(
        c.request(&req, id, CLIENT, WAIT).unwrap().result_code(),
        Some(2001)
    );
}

#[test]
fn reply_timeout_answers_5012_once_and_late_replies_are_dropped() {
    let dir = TestDir::new("shm-timeout");
    let mut b = Bridge::start(
        dir.path(),
        &options(free_port(), "reply_timeout = \"500ms\"\n"),
    );
    let ctl = control_socket(&b);
    let w = spawn_worker(
        dir.path(),
        "w-late",
        &ctl,
        "late",
        TA_EVENT,
        &[("DMB_DELAY_MS", "1200".into())],
    );
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    let ids = send_requests(&mut c, "t", 3);
    let answers = collect_answers(&mut c, &ids, WAIT);
    assert_eq!(codes_of(&answers), HashMap::from([(5012, 3)]));
    // The worker does reply, late: dropped with a log line, no second answer.
    wait_worker_lines(&w, "W replied ", 3);
    assert_no_more_answers(&mut c, Duration::from_millis(500));
    wait_log_count(&mut b, "late reply from worker", 3);
}

#[test]
fn full_rings_answer_3004_and_lose_nothing() {
    const N: usize = 120;
    const RING: f64 = 4096.0;
    const MAX_MSG: f64 = 1024.0;
    let dir = TestDir::new("shm-ringfull");
    // 4 KiB rings, 1 KiB messages: a handful of requests fill a worker's ring. Metrics on,
    // scraped by a real Prometheus: the ring's depth and its full events as PromQL sees them.
    let mport = free_port();
    let opts = options(
        free_port(),
        &format!(
            "ring_size = {RING}\nmax_message_size = {MAX_MSG}\nreply_timeout = \"20s\"\n\
             \n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"
        ),
    );
    let mut b = Bridge::start(dir.path(), &opts);
    harness::wait_for_port(mport, WAIT).unwrap();
    let prom = harness::prometheus::Prometheus::start(
        dir.path(),
        &[format!("127.0.0.1:{mport}")],
        Duration::from_millis(300),
    );
    let ctl = control_socket(&b);
    let go = dir.join("go");
    let w = spawn_worker(
        dir.path(),
        "w-gated",
        &ctl,
        "gated",
        TA_EVENT,
        &[("DMB_GO", go.display().to_string())],
    );
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    let ids: Vec<u32> = (0..N)
        .map(|i| {
            let (req, id) = ta_request(&mut c, &format!("client;f;{i}"), &[Avp::str(1, "x")]);
            c.send(&req).unwrap();
            id
        })
        .collect();
    // The worker reads nothing yet: whatever does not fit is answered 3004 now (read until
    // the bridge has been quiet for a while; correctness does not depend on that wait, the
    // totals below do the counting).
    let mut early = HashMap::new();
    while let Ok(m) = c.read_until(Duration::from_millis(700), CLIENT, |m| !m.is_request()) {
        assert_eq!(
            m.result_code(),
            Some(3004),
            "only 3004 while the worker sleeps"
        );
        assert_ne!(m.flags & flags::ERROR, 0);
        assert!(early.insert(m.hbh, m).is_none(), "answered twice");
    }
    assert!(!early.is_empty(), "no 3004 although the ring is tiny");
    // One worker: each 3004 is one request its ring had no room for, counted per worker.
    let full = "sum(dmbridge_worker_ring_full_total{name=\"w-gated\",ring=\"requests\"})";
    assert_eq!(
        prom.wait_value(full, early.len() as f64, WAIT),
        Some(early.len() as f64),
        "ring-full events vs the 3004 answers the client got"
    );
    // The ring is as full as the last refused record made it: less than one record of room
    // left, never more than its size.
    let depth = "sum(dmbridge_worker_ring_depth_bytes{name=\"w-gated\",ring=\"requests\"})";
    let d = prom_until(&prom, depth, |v| v > 0.0);
    assert!(
        d > RING - (MAX_MSG + 8.0) && d <= RING,
        "requests ring depth {d} while the worker sleeps"
    );
    // Now the worker reads: each request in its ring is answered 2001; every request has
    // exactly one answer in total, none is lost.
    std::fs::write(&go, b"go").unwrap();
    let rest: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|i| !early.contains_key(i))
        .collect();
    assert!(!rest.is_empty(), "the ring took nothing");
    let answers = collect_answers(&mut c, &rest, WAIT);
    assert_no_more_answers(&mut c, Duration::from_millis(300));
    let replied = worker_lines(&w, "W replied ").len();
    let by = codes_of(&answers);
    assert_eq!(by.get(&2001).copied().unwrap_or(0), replied, "{by:?}");
    assert_eq!(early.len() + answers.len(), N);
    assert!(by.keys().all(|k| *k == 2001 || *k == 3004), "{by:?}");
    // Drained: depth back to 0, and no ring-full event beyond those the test caused.
    assert_eq!(prom_until(&prom, depth, |v| v == 0.0), 0.0);
    assert_eq!(
        prom.value(full).unwrap(),
        Some(early.len() as f64 + by.get(&3004).copied().unwrap_or(0) as f64)
    );
}

/// Polls a PromQL query until its value satisfies `pred`; returns it.
fn prom_until(
    prom: &harness::prometheus::Prometheus,
    promql: &str,
    pred: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = prom.value(promql).ok().flatten();
        if let Some(v) = v.filter(|v| pred(*v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "{promql}: last value {v:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Outgoing requests (workers -> bridge -> peer)

/// A Diameter peer on its own thread: connects to the bridge as `peer.test.local` (again
/// after every disconnect, until stopped) and answers test_app requests by their User-Name:
/// `err` -> 5012, `exp` -> Experimental-Result 2001 only, `noanswer` -> nothing, else 2001
/// echoing Test-AVP.
struct Peer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Peer {
    fn start(port: u16) -> Peer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut answered = 0;
            while !s.load(Ordering::Relaxed) {
                let Ok(mut c) = RawClient::connect(port, Duration::from_millis(500)) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                if c.handshake(PEER.0, PEER.1, Duration::from_secs(3)).is_err() {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                while !s.load(Ordering::Relaxed) {
                    let m = match c.read_message(Duration::from_millis(100)) {
                        Ok(m) => m,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                        Err(_) => break,
                    };
                    if !m.is_request() {
                        continue;
                    }
                    let reply = match m.cmd_code {
                        wire::cmd::DWR | wire::cmd::DPR => answer_to(&m, 2001, PEER.0, PEER.1, &[]),
                        _ => {
                            let user = m.find(1, None).and_then(|a| a.as_str().map(String::from));
                            match user.as_deref() {
                                Some("noanswer") => continue,
                                Some("err") => answer_to(&m, 5012, PEER.0, PEER.1, &[]),
                                Some("exp") => exp_answer(&m),
                                _ => {
                                    let echo: Vec<Avp> = m
                                        .find(test_app::TEST_AVP, Some(test_app::VENDOR_ID))
                                        .map(|a| {
                                            Avp::raw(test_app::TEST_AVP, a.data)
                                                .vendor(test_app::VENDOR_ID)
                                                .flags(wire::avp_flags::VENDOR)
                                        })
                                        .into_iter()
                                        .collect();
                                    answer_to(&m, 2001, PEER.0, PEER.1, &echo)
                                }
                            }
                        }
                    };
                    if c.send(&reply).is_err() {
                        break;
                    }
                    answered += 1;
                }
            }
            answered
        });
        Peer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An answer with Experimental-Result (3GPP style) and no Result-Code.
fn exp_answer(req: &RawMessage) -> Vec<u8> {
    let mut avps = Vec::new();
    if let Some(sid) = req.find(code::SESSION_ID, None) {
        avps.push(Avp::raw(code::SESSION_ID, sid.data));
    }
    avps.push(Avp::grouped(
        297,
        &[Avp::u32(code::VENDOR_ID, 10415), Avp::u32(298, 2001)],
    ));
    avps.push(Avp::str(code::ORIGIN_HOST, PEER.0));
    avps.push(Avp::str(code::ORIGIN_REALM, PEER.1));
    encode_message(
        req.flags & flags::PROXIABLE,
        req.cmd_code,
        req.app_id,
        req.hbh,
        req.e2e,
        &avps,
    )
}

/// The bridge's status document as a worker reads it (`dmb_status_json`: Kamailio
/// dmbridge.status, OpenSIPS dm_status), through a probe worker attached from the test process,
/// once `pred` holds on it (counters are republished at most once a second).
fn status_until(
    ctl: &Path,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    use dmshm::worker::{Worker, WorkerConfig};
    let mut probe = Worker::attach(WorkerConfig::new(ctl, "status-probe")).expect("probe attaches");
    let deadline = Instant::now() + WAIT;
    loop {
        let st = probe.status(Duration::from_millis(500));
        let doc: serde_json::Value = st
            .bridge
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        if pred(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "{what}; status: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status once it counts replies.
fn wait_status(ctl: &Path) -> serde_json::Value {
    status_until(ctl, "no counted replies in the status", |doc| {
        doc["counters"]["replies"].as_u64().unwrap_or(0) > 0
    })
}

/// The status once it shows the peer open.
fn wait_peer_open(ctl: &Path) -> serde_json::Value {
    status_until(ctl, "peer never open", |doc| {
        doc["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["host"] == PEER.0 && p["usable"] == true)
        })
    })
}

#[test]
fn outgoing_requests_get_their_outcome_class_in_their_own_worker() {
    outgoing_outcomes("shm-outgoing", "", |_| {});
}

#[test]
fn outgoing_requests_get_the_same_outcomes_with_the_busy_poll() {
    // `[app] busy_poll_us` (issue 15 item 1): the driver polls for a lone request's answer
    // instead of sleeping in epoll. Every outcome is the same as without it, among them the
    // timeout, which outlasts the 10 ms poll (the driver then sleeps and is woken by the
    // timer); the status counts the polls, and answers taken while polling.
    outgoing_outcomes("shm-outgoing-poll", "busy_poll_us = 10000\n", |ctl| {
        status_until(ctl, "no busy poll answered", |doc| {
            let p = &doc["counters"]["busy_poll"];
            p["polls"].as_u64().unwrap_or(0) > 0
                && p["answered_while_polling"].as_u64().unwrap_or(0) > 0
        });
    });
}

/// A worker's seven outgoing requests (`outgoing` mode) through a bridge with `app_toml`,
/// each with the outcome class and Result-Code it must get; then `after` with the control
/// socket, while the bridge still runs.
fn outgoing_outcomes(name: &str, app_toml: &str, after: impl FnOnce(&Path)) {
    let dir = TestDir::new(name);
    let b = Bridge::start(dir.path(), &options(free_port(), app_toml));
    let ctl = control_socket(&b);
    let _peer = Peer::start(b.port());
    let status = wait_peer_open(&ctl);
    // The status document workers read (Kamailio dmbridge.status, OpenSIPS dm_status).
    assert_eq!(status["origin_host"], "bridge.test.local");
    assert_eq!(status["state"], "running");
    assert!(status["counters"]["requests_sent"].is_u64(), "{status}");
    assert!(status["workers"].is_array(), "{status}");
    let w = spawn_worker(dir.path(), "w-out", &ctl, "outgoing", "", &[]);
    let lines = wait_worker_lines(&w, "W out ", 9);
    let get = |label: &str| -> serde_json::Value {
        let l = lines
            .iter()
            .find(|l| l.starts_with(&format!("W out {label} ")))
            .unwrap_or_else(|| panic!("no outcome for {label}: {lines:?}"));
        serde_json::from_str(l.splitn(4, ' ').nth(3).unwrap()).unwrap()
    };
    let ok = get("ok");
    assert_eq!(
        (ok["class"].as_i64(), ok["rc"].as_u64()),
        (Some(1), Some(2001)),
        "{ok}"
    );
    let avps = ok["json"].as_str().unwrap();
    assert!(
        avps.contains(r#"{"345678:999999":{"hex":"00000007"}}"#),
        "{avps}"
    );
    assert!(
        avps.contains(r#"{"Origin-Host":"peer.test.local"}"#),
        "{avps}"
    );
    let exp = get("exp");
    assert_eq!(
        (exp["class"].as_i64(), exp["rc"].as_u64()),
        (Some(1), Some(2001)),
        "{exp}"
    );
    let err = get("err");
    assert_eq!(
        (err["class"].as_i64(), err["rc"].as_u64()),
        (Some(-1), Some(5012)),
        "{err}"
    );
    let to = get("timeout");
    assert_eq!(to["class"].as_i64(), Some(-2), "{to}");
    let bad = get("badjson");
    assert_eq!(bad["class"].as_i64(), Some(-3), "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("No-Such-AVP"),
        "{bad}"
    );
    for label in ["notjson", "notarray"] {
        let o = get(label);
        assert_eq!(o["class"].as_i64(), Some(-3), "{o}");
        assert!(
            o["error"]
                .as_str()
                .unwrap()
                .contains("invalid request JSON"),
            "{o}"
        );
    }
    let nr = get("noroute");
    assert_eq!(nr["class"].as_i64(), Some(-3), "{nr}");
    let big = get("toobig");
    assert_eq!(big["class"].as_i64(), Some(-3), "{big}");
    assert!(big["error"].as_str().unwrap().contains("exceeds"), "{big}");
    // The bridge's wait for the peer (record version 3, issue 15 item 3): there for every
    // answer the peer gave (its 5012 too), 0 where no peer answered (a timeout, a request
    // not sent).
    for o in [&ok, &exp, &err] {
        assert!(o["peer_ns"].as_u64().unwrap() > 0, "{o}");
    }
    for o in [&to, &bad, &nr, &big] {
        assert_eq!(o["peer_ns"].as_u64(), Some(0), "{o}");
    }
    for label in ["notjson", "notarray"] {
        assert_eq!(get(label)["peer_ns"].as_u64(), Some(0));
    }
    after(&ctl);
}

/// A bridge serving `[metrics]` on a free port, with a peer whose connection is open: the
/// test directory, the bridge, its control socket, the metrics port and the peer.
fn bridge_with_metrics(name: &str) -> (TestDir, Bridge, PathBuf, u16, Peer) {
    bridge_with_metrics_and(name, "")
}

/// [`bridge_with_metrics`] with `app_toml` in its `[app]` section.
fn bridge_with_metrics_and(name: &str, app_toml: &str) -> (TestDir, Bridge, PathBuf, u16, Peer) {
    let dir = TestDir::new(name);
    let mport = free_port();
    let metrics = format!("{app_toml}\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n");
    let b = Bridge::start(dir.path(), &options(free_port(), &metrics));
    let ctl = control_socket(&b);
    let peer = Peer::start(b.port());
    wait_peer_open(&ctl);
    (dir, b, ctl, mport, peer)
}

/// The value of the sample `name` (no labels) in a scrape.
fn value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// Each request the bridge takes from a worker is one observation of its originate round
/// trip, `dmbridge_script_request_latency_seconds` (issue 15 item 3): answered, timed out or
/// refused alike.
#[test]
fn originate_round_trips_are_observed_once_per_request() {
    let (dir, _b, ctl, mport, _peer) = bridge_with_metrics("shm-outgoing-metrics");
    let w = spawn_worker(dir.path(), "w-out", &ctl, "outgoing", "", &[]);
    wait_worker_lines(&w, "W out ", 7);
    // The status counts the requests the bridge took (republished within a second); a
    // request the library refuses itself never reaches the bridge.
    let count =
        |body: &str| value(body, "dmbridge_script_request_latency_seconds_count").map(|v| v as u64);
    use dmshm::worker::{Worker, WorkerConfig};
    let mut probe =
        Worker::attach(WorkerConfig::new(&ctl, "status-probe")).expect("probe attaches");
    let deadline = Instant::now() + WAIT;
    loop {
        let body = harness::prometheus::http_get(mport, "/metrics", WAIT)
            .map(|(_, b)| b)
            .unwrap_or_default();
        let doc: serde_json::Value = probe
            .status(Duration::from_millis(500))
            .bridge
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let (n, sent) = (count(&body), doc["counters"]["requests_sent"].as_u64());
        if n.is_some_and(|n| n > 0) && n == sent {
            // The bridge's own part: one per request a peer answered (success or error
            // answer), never longer in sum than the round trips it is part of.
            let c = &doc["counters"]["outcomes"];
            let answered =
                c["success"].as_u64().unwrap_or(0) + c["error_answer"].as_u64().unwrap_or(0);
            let own = value(&body, "dmbridge_script_request_bridge_seconds_count");
            if own.map(|v| v as u64) != Some(answered) || answered == 0 {
                assert!(
                    Instant::now() < deadline,
                    "bridge part count {own:?}, answered {answered}:\n{body}\n{doc}"
                );
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let own_sum = value(&body, "dmbridge_script_request_bridge_seconds_sum").unwrap();
            let all_sum = value(&body, "dmbridge_script_request_latency_seconds_sum").unwrap();
            assert!(
                own_sum <= all_sum,
                "own part {own_sum} > round trips {all_sum}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "script_request_latency count {n:?}, requests taken {sent:?}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workers' side of each script request (issue 15 item 3), exported by the real binary:
/// `dmbridge_script_request_worker_seconds` and `..._outside_bridge_seconds` count one
/// observation per outcome the bridge handed to a worker, sync (`outgoing`: eight requests
/// reach the bridge, the ninth the library refuses) and async (`load`) alike, so their
/// counts equal the bridge's own round-trip count; the part outside the bridge is never
/// longer in sum than the round trips; and the counts stay when the workers are killed.
#[test]
fn script_requests_are_counted_by_their_workers_sync_and_async() {
    let (dir, _b, ctl, mport, _peer) = bridge_with_metrics("shm-worker-times");
    let sync = spawn_worker(dir.path(), "w-sync", &ctl, "outgoing", "", &[]);
    let load_env = [
        ("DMB_SECS", "1".to_string()),
        ("DMB_INFLIGHT", "4".to_string()),
    ];
    let asynch = spawn_worker(dir.path(), "w-async", &ctl, "load", "", &load_env);
    wait_worker_lines(&sync, "W out ", 9);
    let summary = wait_worker_lines(&asynch, "W summary ", 1);
    assert!(
        summary[0].contains(" pending=0 ") && !summary[0].contains(" ok=0 "),
        "{summary:?}"
    );
    let scrape = || {
        harness::prometheus::http_get(mport, "/metrics", WAIT)
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let counts = |body: &str| {
        [
            "dmbridge_script_request_latency_seconds_count",
            "dmbridge_script_request_worker_seconds_count",
            "dmbridge_script_request_outside_bridge_seconds_count",
        ]
        .map(|n| value(body, n).map(|v| v as u64))
    };
    let deadline = Instant::now() + WAIT;
    let (n, body) = loop {
        let body = scrape();
        let [bridge, worker, outside] = counts(&body);
        // 8 sync requests reached the bridge, and the async ones (at least one answered)
        if bridge.is_some_and(|n| n > 8) && worker == bridge && outside == bridge {
            break (bridge.unwrap(), body);
        }
        assert!(
            Instant::now() < deadline,
            "bridge {bridge:?}, worker {worker:?}, outside {outside:?}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let sum = |name| value(&body, name).unwrap();
    let (worker_sum, outside_sum) = (
        sum("dmbridge_script_request_worker_seconds_sum"),
        sum("dmbridge_script_request_outside_bridge_seconds_sum"),
    );
    assert!(
        0.0 < outside_sum && outside_sum <= worker_sum,
        "outside {outside_sum}, round trips {worker_sum}"
    );
    for name in [
        "dmbridge_script_request_worker_seconds",
        "dmbridge_script_request_outside_bridge_seconds",
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} histogram")),
            "{name}:\n{body}"
        );
        assert!(
            body.contains(&format!("{name}_bucket{{le=\"0.000025\"}}")),
            "the bridge's buckets:\n{body}"
        );
    }
    // Killed workers (SIGKILL): their counts are kept, not reset.
    drop(sync);
    drop(asynch);
    status_until(&ctl, "the killed workers are still attached", |doc| {
        doc["workers"].as_array().is_some_and(|w| w.len() == 1)
    });
    let body = scrape();
    assert_eq!(counts(&body), [Some(n); 3], "{body}");
}

/// Reply-to (DESIGN §5) through the real binary and a real peer: a request one attachment
/// sends naming another's reply address gets its outcome, of every kind (answer, error
/// answer, timeout, not sent), at that other attachment with the sender's token; once that
/// attachment left, a request naming it is not sent, and the refusal is counted in the
/// status and in `/metrics` (`dmbridge_shm_refused_total{cause="reply_to_gone"}`). The
/// workers' histograms count the reply-to requests (the receiver, from the sender's send
/// stamp the bridge echoes): `dmbridge_script_request_worker_seconds` and
/// `..._outside_bridge_seconds` have one observation per outcome, as many as the bridge's
/// own round trips.
#[test]
fn reply_to_outcomes_reach_the_named_worker_and_stale_addresses_are_refused() {
    use dmshm::worker::{Completion, Worker, WorkerConfig};
    let (_dir, _b, ctl, mport, _peer) = bridge_with_metrics("shm-reply-to");
    let mut sip = Worker::attach(WorkerConfig::new(&ctl, "sip worker")).expect("attaches");
    let mut module = Worker::attach(WorkerConfig::new(&ctl, "module worker")).expect("attaches");
    let to = module.reply_address();
    assert_ne!(to, 0, "the bridge offers reply-to");
    const T: u64 = 1 << 63;
    let (ta, cmd) = (test_app::APP_ID, test_app::CMD);
    let cases: [(u64, u32, &[u8], u32); 4] = [
        (T | 1, ta, br#"[{"User-Name":"ok"}]"#, 2000),
        (T | 2, ta, br#"[{"User-Name":"err"}]"#, 2000),
        (T | 3, ta, br#"[{"User-Name":"noanswer"}]"#, 300),
        // Cx: neither we nor the peer advertise it, so no route: not sent (3007, the
        // bridge's own answer).
        (T | 4, 16777216, br#"[{"User-Name":"x"}]"#, 2000),
    ];
    for (token, app, json, timeout) in cases {
        sip.send_request_reply_to(to, token, app, cmd, json, timeout)
            .expect("sent");
    }
    let mut got: Vec<Completion> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < cases.len() {
        assert!(Instant::now() < deadline, "outcomes so far: {got:?}");
        std::thread::sleep(Duration::from_millis(10));
        while let Some(c) = module.next_answer() {
            got.push(c);
        }
    }
    got.sort_by_key(|c| c.handle);
    let seen: Vec<(u64, i32, u32)> = got
        .iter()
        .map(|c| (c.handle, c.class, c.result_code))
        .collect();
    assert_eq!(
        seen,
        [
            (T | 1, 1, 2001),
            (T | 2, -1, 5012),
            (T | 3, -2, 0),
            (T | 4, -3, 3007)
        ]
    );
    assert!(got[0].peer_ns > 0 && got[2].peer_ns == 0, "{got:?}");
    assert_eq!(sip.next_answer(), None, "the sender gets nothing");
    assert!(got.iter().all(|c| c.worker_ns > 0), "{got:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        let body = harness::prometheus::http_get(mport, "/metrics", WAIT)
            .map(|(_, b)| b)
            .unwrap_or_default();
        let counts = [
            "dmbridge_script_request_latency_seconds_count",
            "dmbridge_script_request_worker_seconds_count",
            "dmbridge_script_request_outside_bridge_seconds_count",
        ]
        .map(|n| value(&body, n).map(|v| v as u64));
        if counts == [Some(4); 3] {
            let sum = value(&body, "dmbridge_script_request_worker_seconds_sum").unwrap();
            let ours: u64 = got.iter().map(|c| c.worker_ns).sum();
            assert!(
                (sum - ours as f64 / 1e9).abs() < 1e-6,
                "exported {sum} s, handed out {ours} ns"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{counts:?}:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The module worker leaves: its address is refused, not sent, counted.
    drop(module);
    status_until(&ctl, "the module worker still attached", |doc| {
        doc["workers"]
            .as_array()
            .is_some_and(|w| !w.iter().any(|w| w["name"] == "module worker"))
    });
    sip.send_request_reply_to(to, T | 5, ta, cmd, br#"[{"User-Name":"ok"}]"#, 2000)
        .expect("the library cannot know");
    let doc = status_until(&ctl, "no reply-to refusal counted", |doc| {
        doc["counters"]["requests_refused_reply_to_gone"].as_u64() == Some(1)
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let body = harness::prometheus::http_get(mport, "/metrics", WAIT)
            .map(|(_, b)| b)
            .unwrap_or_default();
        if value(
            &body,
            r#"dmbridge_shm_refused_total{cause="reply_to_gone"}"#,
        ) == Some(1.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Only the requests it took were sent to the peer (5 taken, the refused one not sent).
    assert_eq!(doc["counters"]["requests_sent"].as_u64(), Some(4), "{doc}");
}

/// What the bridge holds for one receiver of reply-to requests is bounded (DESIGN §10: nobody
/// can exhaust the node): a module worker stops reading and a SIP worker floods it with
/// reply-to requests the peer answers at once. The outcomes it is owed stop at the bound
/// (`max_in_flight`, 4096: the status's `reply_to_owed`), so its queue in the bridge stays
/// within twice that (the owed outcomes and the short notices of refused requests); the
/// requests beyond are not sent, counted in the status and in `/metrics`
/// (`dmbridge_shm_refused_total{cause="reply_to_full"}`), each settled once (a not-sent
/// notice to the receiver or, its queue being full, dropped and counted). When it reads again
/// it gets every outcome and notice exactly once, is owed nothing, and a new request reaches
/// it. Counts only, no timing.
#[test]
fn a_receiver_that_stops_reading_is_owed_at_most_the_bound_and_gets_each_outcome_once() {
    use dmshm::worker::{Worker, WorkerConfig};
    use std::collections::HashSet;
    /// `BridgeConfig::max_in_flight` (the `dmbridge run` default).
    const BOUND: u64 = 4096;
    const T: u64 = 1 << 63;
    // Rings of 16 KiB: the receiver's holds about a hundred outcomes, the rest is the bridge's.
    let (_dir, _b, ctl, mport, _peer) =
        bridge_with_metrics_and("shm-reply-to-bound", "ring_size = 16384\n");
    let mut sip = Worker::attach(WorkerConfig::new(&ctl, "sip worker")).expect("attaches");
    let mut module = Worker::attach(WorkerConfig::new(&ctl, "module worker")).expect("attaches");
    let to = module.reply_address();
    let (ta, cmd) = (test_app::APP_ID, test_app::CMD);
    let n = BOUND + 1500;
    let deadline = Instant::now() + 6 * WAIT;
    for i in 1..=n {
        loop {
            match sip.send_request_reply_to(to, T | i, ta, cmd, br#"[{"User-Name":"ok"}]"#, 5000) {
                Ok(()) => break,
                // Its ring to the bridge is full for a moment: the bridge is taking them.
                Err(dmshm::Error::Full) => {
                    assert!(Instant::now() < deadline, "the bridge took nothing more");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("request {i}: {e}"),
            }
        }
    }
    let module_of = |doc: &serde_json::Value| -> serde_json::Value {
        doc["workers"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["name"] == "module worker").cloned())
            .unwrap_or_default()
    };
    let count = |doc: &serde_json::Value, path: &[&str]| -> u64 {
        path.iter()
            .fold(&doc["counters"], |v, k| &v[*k])
            .as_u64()
            .unwrap_or(0)
    };
    let outcomes = |doc: &serde_json::Value| -> u64 {
        [
            "success",
            "error_answer",
            "timeout",
            "not_sent",
            "dropped_worker_gone",
            "dropped_receiver_full",
        ]
        .iter()
        .map(|k| count(doc, &["outcomes", k]))
        .sum()
    };
    // Every request taken, and each settled once: an outcome for each one sent, a notice or
    // a drop for each one refused.
    let doc = status_until(&ctl, "not every request taken and settled", |doc| {
        let (sent, refused) = (
            count(doc, &["requests_sent"]),
            count(doc, &["requests_refused_reply_to_full"]),
        );
        sent + refused == n && outcomes(doc) == n
    });
    let sent = count(&doc, &["requests_sent"]);
    let refused = count(&doc, &["requests_refused_reply_to_full"]);
    let dropped = count(&doc, &["outcomes", "dropped_receiver_full"]);
    let m = module_of(&doc);
    assert!(refused > 0 && sent >= BOUND, "{doc}");
    assert_eq!(m["reply_to_owed"].as_u64(), Some(BOUND), "{m}");
    let queued = m["queued_answers"].as_u64().unwrap();
    assert!(
        (BOUND..=2 * BOUND).contains(&queued),
        "the owed outcomes and at most {BOUND} notices: {m}"
    );
    assert_eq!(count(&doc, &["requests_refused_reply_to_gone"]), 0);
    eprintln!(
        "reply-to bound: {n} requests, {sent} sent, {refused} refused ({dropped} of their \
         notices dropped); the receiver owed {BOUND}, {queued} records queued for it"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let body = harness::prometheus::http_get(mport, "/metrics", WAIT)
            .map(|(_, b)| b)
            .unwrap_or_default();
        let v = value(
            &body,
            r#"dmbridge_shm_refused_total{cause="reply_to_full"}"#,
        );
        // The receiver's gauge shows what the status shows: owed the bound.
        let owed = value(
            &body,
            &format!(
                r#"dmbridge_worker_reply_to_owed{{slot="{}",name="{}"}}"#,
                m["slot"],
                m["name"].as_str().unwrap_or("")
            ),
        );
        if v == Some(refused as f64) && owed == Some(BOUND as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{v:?} {owed:?}, status {refused} and {BOUND}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // It reads again: every outcome of a request sent, and every notice kept, once.
    let want = sent + (refused - dropped);
    let mut seen = HashSet::new();
    let (mut answered, mut notices) = (0, 0);
    let deadline = Instant::now() + 3 * WAIT;
    while (seen.len() as u64) < want {
        assert!(Instant::now() < deadline, "{} of {want}", seen.len());
        let mut any = false;
        while let Some(c) = module.next_answer() {
            any = true;
            assert!(c.handle & T != 0 && c.handle & !T <= n, "{c:?}");
            assert!(seen.insert(c.handle), "twice: {c:?}");
            if c.class == 1 {
                answered += 1;
            } else {
                assert!(c.class == -3 && c.error.contains("owed"), "{c:?}");
                notices += 1;
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!((answered, notices), (sent, refused - dropped));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(module.next_answer(), None, "nothing more");
    status_until(&ctl, "still owed after reading", |doc| {
        let m = module_of(doc);
        m["reply_to_owed"].as_u64() == Some(0) && m["queued_answers"].as_u64() == Some(0)
    });
    // The bound is free again.
    sip.send_request_reply_to(to, T | (n + 1), ta, cmd, br#"[{"User-Name":"ok"}]"#, 5000)
        .expect("sent");
    let deadline = Instant::now() + WAIT;
    let c = loop {
        if let Some(c) = module.next_answer() {
            break c;
        }
        assert!(Instant::now() < deadline, "no outcome");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!((c.handle, c.class), (T | (n + 1), 1));
}

#[test]
fn outcomes_never_reach_the_next_tenant_of_a_dead_workers_slot() {
    let dir = TestDir::new("shm-epoch");
    // One slot: the second worker gets the first one's slot, and (a new process) the same
    // request handle numbers.
    let mut b = Bridge::start(dir.path(), &options(free_port(), "max_workers = 1\n"));
    let ctl = control_socket(&b);
    let _peer = Peer::start(b.port());
    wait_peer_open(&ctl);
    let async_env = [
        ("DMB_ASYNC", "1".to_string()),
        ("DMB_TIMEOUT_MS", "1000".to_string()),
    ];
    let mut first = spawn_worker(dir.path(), "w-first", &ctl, "unanswered", "", &async_env);
    let sent = wait_worker_lines(&first, "W sent ", 1).remove(0);
    first.signal(Sig::Kill).unwrap();
    let _ = first.wait_exit(WAIT);
    // (The status probe of wait_peer_open left before: its departure is the first "gone:".)
    wait_log_count(&mut b, "gone:", 2);
    // Its request times out in the bridge about 1 s after it was sent; the new tenant's
    // request (same handle) must wait for its own timeout of 3 s, not take that outcome.
    let sync_env = [("DMB_TIMEOUT_MS", "3000".to_string())];
    let second = spawn_worker(dir.path(), "w-second", &ctl, "unanswered", "", &sync_env);
    let done = wait_worker_lines(&second, "W done ", 1).remove(0);
    let kv = parse_kv(done.trim_start_matches("W done "));
    assert_eq!(
        kv["handle"].to_string(),
        sent.trim_start_matches("W sent "),
        "same handle number in both workers"
    );
    assert_eq!(kv["class"], -2, "{done}");
    assert!(kv["ms"] >= 2500, "got the dead worker's outcome: {done}");
    assert!(
        b.guard().output().contains("\"w-first\" (pid"),
        "the first worker was seen"
    );
}

// ---------------------------------------------------------------------------------------------
// Bridge restarts under load

fn last_tick(g: &ChildGuard) -> HashMap<String, i64> {
    worker_lines(g, "W tick ")
        .last()
        .map(|l| parse_kv(l.trim_start_matches("W tick ")))
        .unwrap_or_default()
}

fn parse_kv(s: &str) -> HashMap<String, i64> {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Waits until every worker's success count passed `floor[i] + 20`.
fn wait_progress(ws: &[ChildGuard], floor: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for (w, f) in ws.iter().zip(floor) {
        loop {
            let ok = last_tick(w).get("ok").copied().unwrap_or(0);
            if ok > f + 20 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "worker {} made no progress (ok {ok}, before {f}):\n{}",
                w.name(),
                w.tail(10)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn bridge_restarts_under_load_every_outgoing_request_ends_and_workers_resume() {
    let dir = TestDir::new("shm-restart");
    let opts = options(free_port(), "");
    let mut b = Bridge::start(dir.path(), &opts);
    let ctl = control_socket(&b);
    let _peer = Peer::start(b.port());
    wait_peer_open(&ctl);
    let stop = dir.join("stop-load");
    let env = [
        ("DMB_SECS", "60".to_string()),
        ("DMB_INFLIGHT", "16".to_string()),
        ("DMB_STOP", stop.display().to_string()),
    ];
    let ws: Vec<ChildGuard> = (0..2)
        .map(|i| spawn_worker(dir.path(), &format!("w-load{i}"), &ctl, "load", "", &env))
        .collect();
    let zero = vec![0, 0];
    wait_progress(&ws, &zero);

    // 1: graceful restart (SIGTERM: drain, DPR), then a new bridge on the same paths.
    let floor: Vec<i64> = ws.iter().map(|w| last_tick(w)["ok"]).collect();
    let st = b.guard().stop(Duration::from_secs(10));
    assert!(st.success(), "bridge exit status {st:?}");
    drop(b);
    let mut b = Bridge::start(dir.path(), &opts);
    wait_progress(&ws, &floor);

    // 2: the bridge is killed (no drain at all), then started again.
    let floor: Vec<i64> = ws.iter().map(|w| last_tick(w)["ok"]).collect();
    b.guard().signal(Sig::Kill).unwrap();
    let _ = b.guard().wait_exit(WAIT);
    drop(b);
    let b = Bridge::start(dir.path(), &opts);
    wait_progress(&ws, &floor);
    std::fs::write(&stop, b"stop").unwrap();

    // Every request each worker sent ended in exactly one outcome; the failures while the
    // bridge was away came fast (well before the request's own timeout of 2 s).
    for w in &ws {
        let line = wait_worker_lines(w, "W summary ", 1).remove(0);
        let s = parse_kv(line.trim_start_matches("W summary "));
        assert_eq!(s["pending"], 0, "{}: {line}", w.name());
        assert_eq!(
            s["sent"],
            s["ok"] + s["err"] + s["timeout"] + s["notsent"],
            "{}: {line}",
            w.name()
        );
        assert!(s["ok"] > 60, "{}: {line}", w.name());
        assert!(
            s["notsent"] + s["sendfail"] > 0,
            "{}: the restarts were noticed: {line}",
            w.name()
        );
        assert!(
            s["max_notsent_ms"] < 2000,
            "{}: failures come before the timeout: {line}",
            w.name()
        );
        assert_eq!(
            s["attaches"],
            3,
            "{}: attached to each bridge: {line}",
            w.name()
        );
    }
    drop(b);
}

// ---------------------------------------------------------------------------------------------
// The worker processes

mod worker {
    use super::*;
    use dmshm::record::ReplyStatus;
    use dmshm::worker::{Worker, WorkerConfig};
    use std::io::Write as _;

    fn env(k: &str) -> String {
        std::env::var(k).unwrap_or_default()
    }

    fn say(line: String) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    pub fn main(mode: &str) {
        let cfg = WorkerConfig::new(env("DMB_CTL"), env("DMB_NAME"));
        let mut w = match Worker::attach(cfg) {
            Ok(w) => w,
            Err(e) => {
                say(format!("W attach failed: {e}"));
                std::process::exit(1);
            }
        };
        let handles: Vec<String> = env("DMB_HANDLES")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if !handles.is_empty() {
            w.set_handled(&handles).expect("set_handled");
        }
        say(format!("W attached {}", w.is_attached()));
        match mode {
            "echo" | "hold" | "late" | "gated" => serve(&mut w, mode),
            "outgoing" => outgoing(&mut w),
            "unanswered" => unanswered(&mut w),
            "gone" => gone(&mut w),
            "load" => load(&mut w),
            other => say(format!("W unknown mode {other}")),
        }
    }

    /// The script's reply: the request's AVPs minus those the bridge sets itself; special
    /// User-Names ask for bad replies.
    fn echo_reply(json: &str) -> (ReplyStatus, Vec<u8>, String) {
        let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        let user = v
            .as_array()
            .and_then(|a| a.iter().find_map(|o| o.get("User-Name")?.as_str()))
            .unwrap_or("");
        match user {
            "bad-avp" => (
                ReplyStatus::Ok,
                br#"[{"No-Such-AVP":1}]"#.to_vec(),
                String::new(),
            ),
            "broken-json" => (ReplyStatus::Ok, b"[{".to_vec(), String::new()),
            // More than the segment's maximum message (262144 bytes by default).
            "huge" => (
                ReplyStatus::Ok,
                format!(
                    r#"[{{"Result-Code":2001}},{{"User-Name":"{}"}}]"#,
                    "x".repeat(300_000)
                )
                .into_bytes(),
                String::new(),
            ),
            "failed" => (ReplyStatus::Failed, Vec::new(), "script error".into()),
            "error-5003" => (
                ReplyStatus::Error,
                br#"[{"Result-Code":5003}]"#.to_vec(),
                String::new(),
            ),
            "error-3002" => (
                ReplyStatus::Error,
                br#"[{"Result-Code":3002}]"#.to_vec(),
                String::new(),
            ),
            _ => {
                let skip = [
                    "Session-Id",
                    "Origin-Host",
                    "Origin-Realm",
                    "Destination-Host",
                    "Destination-Realm",
                    "Route-Record",
                    "Proxy-Info",
                ];
                let kept: Vec<serde_json::Value> = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter(|o| {
                                o.as_object()
                                    .and_then(|m| m.keys().next())
                                    .is_some_and(|k| !skip.contains(&k.as_str()))
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    ReplyStatus::Ok,
                    serde_json::to_vec(&kept).unwrap_or_default(),
                    String::new(),
                )
            }
        }
    }

    fn serve(w: &mut Worker, mode: &str) {
        let verbose = !env("DMB_VERBOSE").is_empty();
        let delay = Duration::from_millis(env("DMB_DELAY_MS").parse().unwrap_or(0));
        let go = PathBuf::from(env("DMB_GO"));
        let mut later: Vec<(Instant, u64, String)> = Vec::new();
        loop {
            if mode == "gated" && !go.exists() {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let mut idle = true;
            while let Ok(Some(r)) = w.next_request() {
                idle = false;
                if verbose {
                    let doc = serde_json::json!({
                        "event": r.event, "sess_id": r.sess_id, "app_id": r.app_id,
                        "cmd_code": r.cmd_code, "cmd_name": r.cmd_name,
                        "origin_host": r.origin_host, "origin_realm": r.origin_realm,
                        "avps_json": r.avps_json,
                    });
                    say(format!("W req {doc}"));
                }
                match mode {
                    "hold" => say(format!("W held {}", r.token)),
                    "late" => later.push((Instant::now() + delay, r.token, r.avps_json)),
                    _ => {
                        let (st, json, err) = echo_reply(&r.avps_json);
                        match w.reply(r.token, st, dmshm::record::Payload::Json, &json, &err) {
                            Ok(()) => say(format!("W replied {}", r.token)),
                            Err(e) => say(format!("W reply failed {e}")),
                        }
                    }
                }
            }
            let now = Instant::now();
            while let Some(i) = later.iter().position(|(t, ..)| *t <= now) {
                let (_, token, json) = later.remove(i);
                let (st, json, err) = echo_reply(&json);
                match w.reply(token, st, dmshm::record::Payload::Json, &json, &err) {
                    Ok(()) => say(format!("W replied {token}")),
                    Err(e) => say(format!("W reply failed {e}")),
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn outgoing(w: &mut Worker) {
        let ta = test_app::APP_ID;
        let cmd = test_app::CMD;
        let big = format!(r#"[{{"User-Name":"{}"}}]"#, "x".repeat(300_000));
        let cases: Vec<(&str, u32, String, u32)> = vec![
            (
                "ok",
                ta,
                r#"[{"User-Name":"ok"},{"345678:999999":{"hex":"00000007"}}]"#.into(),
                2000,
            ),
            ("exp", ta, r#"[{"User-Name":"exp"}]"#.into(), 2000),
            ("err", ta, r#"[{"User-Name":"err"}]"#.into(), 2000),
            ("timeout", ta, r#"[{"User-Name":"noanswer"}]"#.into(), 300),
            ("badjson", ta, r#"[{"No-Such-AVP":1}]"#.into(), 2000),
            // what a worker that skipped its check could send (the modules send with
            // dmb_send_request(_async)_checked): the bridge refuses it, it does not send it
            ("notjson", ta, r#"[{"User-Name":"x"}"#.into(), 2000),
            ("notarray", ta, r#"{"User-Name":"x"}"#.into(), 2000),
            // Cx: neither we nor the peer advertise it.
            ("noroute", 16777216, r#"[{"User-Name":"x"}]"#.into(), 2000),
            ("toobig", ta, big, 2000),
        ];
        for (label, app, json, timeout) in cases {
            let c = w.send_request(app, cmd, json.as_bytes(), timeout);
            let doc = serde_json::json!({
                "class": c.class, "rc": c.result_code, "json": c.avps_json, "error": c.error,
                "peer_ns": c.peer_ns,
            });
            say(format!("W out {label} {doc}"));
        }
        loop {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one request the peer never answers (timeout `DMB_TIMEOUT_MS`): asynchronously
    /// with `DMB_ASYNC` (then waits to be killed), else synchronously, printing the outcome's
    /// class and how long it took.
    fn unanswered(w: &mut Worker) {
        let timeout: u32 = env("DMB_TIMEOUT_MS").parse().unwrap_or(1000);
        let json = br#"[{"User-Name":"noanswer"}]"#;
        if !env("DMB_ASYNC").is_empty() {
            match w.send_request_async(test_app::APP_ID, test_app::CMD, json, timeout) {
                Ok(h) => say(format!("W sent {h}")),
                Err(e) => say(format!("W send failed {e}")),
            }
        } else {
            let t0 = Instant::now();
            let c = w.send_request(test_app::APP_ID, test_app::CMD, json, timeout);
            say(format!(
                "W done handle={} class={} ms={}",
                c.handle,
                c.class,
                t0.elapsed().as_millis()
            ));
        }
        loop {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends request A asynchronously ("W sent A"), waits for the file `DMB_GO`, sends
    /// request B asynchronously ("W queued B": its record is in the ring when the call
    /// returns), then prints each outcome as it comes ("W done handle=.. class=.. error=..")
    /// and waits to be killed. The peer never answers either (timeout 20 s).
    fn gone(w: &mut Worker) {
        let go = PathBuf::from(env("DMB_GO"));
        let json = br#"[{"User-Name":"noanswer"}]"#;
        let mut send = |what: &str| match w.send_request_async(
            test_app::APP_ID,
            test_app::CMD,
            json,
            20_000,
        ) {
            Ok(h) => say(format!("W {what} {h}")),
            Err(e) => say(format!("W send failed {e}")),
        };
        send("sent A");
        while !go.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
        send("queued B");
        // next_answer services the connection: the bridge's EOF ends what is in flight.
        loop {
            while let Some(c) = w.next_answer() {
                say(format!(
                    "W done handle={} class={} error={}",
                    c.handle, c.class, c.error
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Keeps `DMB_INFLIGHT` async requests going for `DMB_SECS`, counting outcomes; then
    /// waits for the last ones and prints a summary.
    fn load(w: &mut Worker) {
        let secs: u64 = env("DMB_SECS").parse().unwrap_or(10);
        let max: usize = env("DMB_INFLIGHT").parse().unwrap_or(8);
        let stop = PathBuf::from(env("DMB_STOP"));
        let mut end = Instant::now() + Duration::from_secs(secs);
        let mut started: HashMap<u64, Instant> = HashMap::new();
        let (mut sent, mut ok, mut err, mut timeout, mut notsent, mut sendfail) =
            (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
        let mut max_notsent_ms = 0u128;
        let mut last_tick = Instant::now();
        let json = br#"[{"User-Name":"load"},{"345678:999999":{"hex":"00000001"}}]"#;
        loop {
            let mut now = Instant::now();
            if now < end && stop.is_file() {
                end = now;
                now = Instant::now();
            }
            let running = now < end;
            while running && started.len() < max {
                match w.send_request_async(test_app::APP_ID, test_app::CMD, json, 2000) {
                    Ok(h) => {
                        sent += 1;
                        started.insert(h, Instant::now());
                    }
                    Err(_) => {
                        // Fails at once while no bridge is there (-3 in script terms).
                        sendfail += 1;
                        break;
                    }
                }
            }
            let mut any = false;
            while let Some(c) = w.next_answer() {
                any = true;
                let t0 = started.remove(&c.handle);
                match c.class {
                    1 => ok += 1,
                    -1 => err += 1,
                    -2 => timeout += 1,
                    _ => {
                        notsent += 1;
                        if let Some(t0) = t0 {
                            max_notsent_ms = max_notsent_ms.max(t0.elapsed().as_millis());
                        }
                    }
                }
            }
            if last_tick.elapsed() >= Duration::from_millis(100) {
                last_tick = Instant::now();
                say(format!(
                    "W tick ok={ok} err={err} timeout={timeout} notsent={notsent} sendfail={sendfail} inflight={}",
                    started.len()
                ));
            }
            if !running && started.is_empty() {
                break;
            }
            if !running && now > end + Duration::from_secs(6) {
                break; // reported as pending
            }
            if !any {
                std::thread::sleep(Duration::from_millis(if w.is_attached() { 1 } else { 5 }));
            }
        }
        let st = w.status(Duration::from_millis(500));
        say(format!(
            "W summary sent={sent} ok={ok} err={err} timeout={timeout} notsent={notsent} sendfail={sendfail} pending={} max_notsent_ms={max_notsent_ms} attaches={}",
            started.len(),
            st.attaches
        ));
        loop {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Capabilities: the applications of the commands workers serve

/// Application ids a CEA advertises (Auth-, Acct- and inside Vendor-Specific-Application-Id).
fn cea_apps(cea: &RawMessage) -> Vec<u32> {
    let mut ids = Vec::new();
    for a in cea.avps().unwrap() {
        match a.code {
            code::AUTH_APPLICATION_ID | code::ACCT_APPLICATION_ID => ids.extend(a.as_u32()),
            code::VENDOR_SPECIFIC_APPLICATION_ID => {
                for c in a.children().unwrap() {
                    if c.code == code::AUTH_APPLICATION_ID || c.code == code::ACCT_APPLICATION_ID {
                        ids.extend(c.as_u32());
                    }
                }
            }
            _ => {}
        }
    }
    ids
}

#[test]
fn cer_advertises_the_applications_of_served_commands_from_then_on() {
    const CX: u32 = 16_777_216;
    let dir = TestDir::new("shm-cer");
    let mut b = Bridge::start(dir.path(), &options(free_port(), ""));
    let ctl = control_socket(&b);
    let mut c1 = RawClient::connect(b.port(), WAIT).unwrap();
    let cea = c1.handshake(CLIENT.0, CLIENT.1, WAIT).unwrap();
    assert!(
        !cea_apps(&cea).contains(&CX),
        "Cx before any worker serves it"
    );

    let w = spawn_worker(
        dir.path(),
        "w-cx",
        &ctl,
        "echo",
        "PPR,RTR",
        &[("DMB_VERBOSE", "1".into())],
    );
    wait_log_count(&mut b, "advertising the applications of served commands", 1);
    // A connection made from now on sees Cx advertised (vendor-specific, 3GPP).
    let mut c2 = RawClient::connect(b.port(), WAIT).unwrap();
    let cea = c2
        .handshake("client2.test.local", "test.local", WAIT)
        .unwrap();
    assert_eq!(cea.result_code(), Some(2001));
    assert!(
        cea_apps(&cea).contains(&CX),
        "Cx advertised after PPR is served"
    );
    let vsai = cea
        .avps()
        .unwrap()
        .into_iter()
        .filter(|a| a.code == code::VENDOR_SPECIFIC_APPLICATION_ID)
        .find(|a| a.children().unwrap().iter().any(|c| c.as_u32() == Some(CX)))
        .expect("Cx in a Vendor-Specific-Application-Id");
    assert!(vsai
        .children()
        .unwrap()
        .iter()
        .any(|c| c.code == code::VENDOR_ID && c.as_u32() == Some(10415)));

    // And a Cx PPR is served by the worker (not refused 3007).
    let id = c2.next_id();
    let ppr = encode_message(
        flags::REQUEST | flags::PROXIABLE,
        305,
        CX,
        id,
        id,
        &[
            Avp::str(code::SESSION_ID, "client2;ppr;1"),
            Avp::grouped(
                code::VENDOR_SPECIFIC_APPLICATION_ID,
                &[
                    Avp::u32(code::VENDOR_ID, 10415),
                    Avp::u32(code::AUTH_APPLICATION_ID, CX),
                ],
            ),
            Avp::u32(277, 1),
            Avp::str(code::ORIGIN_HOST, "client2.test.local"),
            Avp::str(code::ORIGIN_REALM, "test.local"),
            Avp::str(code::DESTINATION_HOST, "bridge.test.local"),
            Avp::str(code::DESTINATION_REALM, "test.local"),
            Avp::str(1, "alice@test.local"),
        ],
    );
    let ans = c2
        .request(&ppr, id, ("client2.test.local", "test.local"), WAIT)
        .unwrap();
    assert_eq!(ans.result_code(), Some(2001), "PPA");
    let line = wait_worker_lines(&w, "W req ", 1).remove(0);
    let v: serde_json::Value = serde_json::from_str(line.trim_start_matches("W req ")).unwrap();
    assert_eq!(v["event"], "E_DM_PPR");
    assert_eq!(v["cmd_name"], "Push-Profile-Request");
}

#[test]
fn requests_larger_than_the_queue_maximum_get_a_clear_5012() {
    let dir = TestDir::new("shm-toobig");
    let opts = options(free_port(), "ring_size = 4096\nmax_message_size = 1024\n");
    let mut b = Bridge::start(dir.path(), &opts);
    let ctl = control_socket(&b);
    let _w = spawn_worker(dir.path(), "w-echo", &ctl, "echo", TA_EVENT, &[]);
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    let (req, id) = ta_request(&mut c, "client;big;1", &[Avp::str(1, &"u".repeat(3000))]);
    let ans = c.request(&req, id, CLIENT, WAIT).unwrap();
    assert_eq!(ans.result_code(), Some(5012));
    let msg = ans
        .find(281, None)
        .and_then(|a| a.as_str().map(String::from))
        .unwrap_or_default();
    assert!(
        msg.contains("too large") && msg.contains("max_message_size"),
        "{msg}"
    );
    assert!(b.guard().output().contains("request too large"));
    // A request that fits is still served.
    let (req, id) = ta_request(&mut c, "client;big;2", &[Avp::str(1, "small")]);
    assert_eq!(
        c.request(&req, id, CLIENT, WAIT).unwrap().result_code(),
        Some(2001)
    );
}

#[test]
fn control_socket_is_owner_only_unless_a_group_is_configured_and_no_segment_file_exists() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("shm-perms");
    let port = free_port();
    let b = Bridge::start(dir.path(), &options(port, ""));
    // Segments are per-worker memfds passed over the socket: nothing in /dev/shm to open.
    let seg = PathBuf::from(format!(
        "/dev/shm/dmbridge-test-{}-{port}",
        std::process::id()
    ));
    assert!(!seg.exists(), "{}", seg.display());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&control_socket(&b)), 0o600);
    drop(b);

    // With a group (ours, so the test needs no privileges): 0660 and that group.
    let gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(dir.path()).unwrap());
    let b = Bridge::start(
        dir.path(),
        &options(free_port(), &format!("group = {gid}\n")),
    );
    assert_eq!(mode(&control_socket(&b)), 0o660);
    drop(b);

    // A misspelt [app] key is refused with its name, not ignored.
    let bad = options(free_port(), "max_mesage_size = 1\n");
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, bad.to_toml(dir.path())).unwrap();
    let bin = harness::dmbridge::dmbridge_bin().unwrap();
    let out = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_mesage_size"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The C library: workers written in C on libdmbridge (what the SIP-server modules link)

use harness::echo_worker::build_c_echo_worker;

/// Sends `n` test_app requests pipelined, each with its own Test-AVP value, and checks every
/// answer: 2001 and the value echoed by the C worker.
fn echo_round(c: &mut RawClient, tag: &str, n: usize) {
    let mut want = HashMap::new();
    let ids: Vec<u32> = (0..n)
        .map(|i| {
            let v = i as i32 * 7 + 1;
            let (req, id) = ta_request(
                c,
                &format!("client;{tag};{i}"),
                &[Avp::i32(test_app::TEST_AVP, v)
                    .vendor(test_app::VENDOR_ID)
                    .flags(wire::avp_flags::VENDOR)],
            );
            c.send(&req).unwrap();
            want.insert(id, v);
            id
        })
        .collect();
    let answers = collect_answers(c, &ids, WAIT);
    for (id, m) in &answers {
        assert_eq!(m.result_code(), Some(2001), "{tag}: answer {id:#x}");
        let echoed = m
            .find(test_app::TEST_AVP, Some(test_app::VENDOR_ID))
            .and_then(|a| a.as_i32());
        assert_eq!(echoed, Some(want[id]), "{tag}: Test-AVP of {id:#x}");
    }
}

#[test]
fn c_workers_on_libdmbridge_serve_and_survive_a_bridge_restart() {
    let dir = TestDir::new("shm-c-workers");
    let prog = build_c_echo_worker(dir.path());
    let opts = options(free_port(), "");
    let mut b = Bridge::start(dir.path(), &opts);
    let ctl = control_socket(&b);
    let mut cmd = Command::new(&prog);
    cmd.arg(&ctl).arg("2").arg("*");
    let _workers = ChildGuard::spawn("c-workers", cmd, dir.path());
    wait_log_count(&mut b, " handles [", 2);
    let mut c = client(&b);
    echo_round(&mut c, "before", 200);

    // The bridge restarts; the C workers are not touched and re-attach by themselves.
    drop(c);
    let st = b.guard().stop(Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    drop(b);
    let mut b = Bridge::start(dir.path(), &opts);
    wait_log_count(&mut b, " handles [", 2);
    let mut c = client(&b);
    echo_round(&mut c, "after", 200);
}

/// The status document a worker reads is refreshed while nothing but counters and time move
/// (no peer or worker change in between): `dispatched` and `replies` count the requests
/// served and `uptime_s` advances. And a worker attached but not yet declared means "not
/// ready": 3004 (transient), and 3001 only once it had its time to declare.
#[test]
fn status_counters_and_uptime_move_and_undeclared_workers_mean_busy_not_unsupported() {
    use dmshm::worker::{Worker, WorkerConfig};
    let dir = TestDir::new("shm-status-live");
    let mut b = Bridge::start(dir.path(), &options(free_port(), ""));
    let ctl = control_socket(&b);
    let mut c = client(&b);

    // A worker that attaches and declares nothing (yet): a request now is "not ready".
    let mut probe = Worker::attach(WorkerConfig::new(&ctl, "status-probe")).expect("attaches");
    // Barrier: a status round trip over the control socket is served by the bridge's driver
    // loop, so once it returns the bridge has handled the attachment (Worker::attach may
    // finish its handshake lazily, and the bridge learns of it in its own loop).
    let barrier = Instant::now() + Duration::from_secs(5);
    while !probe.status(Duration::from_millis(500)).attached && Instant::now() < barrier {
        std::thread::sleep(Duration::from_millis(10));
    }
    let attached = Instant::now();
    let (req, id) = ta_request(&mut c, "client;early;1", &[]);
    let ans = c.request(&req, id, CLIENT, WAIT).expect("answer");
    // (Only judged if it arrived well within the bridge's 2 s declaration grace.)
    if attached.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            ans.result_code(),
            Some(3004),
            "undeclared worker: too busy; bridge log:\n{}",
            b.guard().output()
        );
        assert_ne!(ans.flags & flags::ERROR, 0);
    }
    // Bounded: a worker that never declares (it only originates) does not hide 3001 forever.
    std::thread::sleep(Duration::from_millis(2100));
    let (req, id) = ta_request(&mut c, "client;late;1", &[]);
    let ans = c.request(&req, id, CLIENT, WAIT).expect("answer");
    assert_eq!(
        ans.result_code(),
        Some(3001),
        "nobody serves it: unsupported"
    );

    let _w = spawn_worker(dir.path(), "w-echo", &ctl, "echo", TA_EVENT, &[]);
    wait_log_count(&mut b, " handles [", 1);
    let read = |probe: &mut Worker| -> serde_json::Value {
        let st = probe.status(Duration::from_millis(500));
        st.bridge
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default()
    };
    let before = read(&mut probe);
    let n = 3u64;
    for i in 0..n {
        let (req, id) = ta_request(&mut c, &format!("client;st;{i}"), &[]);
        let ans = c.request(&req, id, CLIENT, WAIT).expect("answer");
        assert_eq!(ans.result_code(), Some(2001));
    }
    // No worker or peer changes from here on: only the periodic refresh can show these.
    let count = |d: &serde_json::Value, k: &str| d["counters"][k].as_u64().unwrap_or(0);
    let up0 = before["uptime_s"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + WAIT;
    loop {
        let doc = read(&mut probe);
        if count(&doc, "dispatched") >= count(&before, "dispatched") + n
            && count(&doc, "replies") >= count(&before, "replies") + n
            && doc["uptime_s"].as_u64().unwrap_or(0) > up0
        {
            assert_eq!(count(&doc, "answered_3004_busy"), 1, "{doc}");
            assert_eq!(count(&doc, "answered_3001_unhandled"), 1, "{doc}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the served requests / uptime: before {before}, now {doc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A local client that registers by hand (Hello, then the Welcome with its segment), with no
/// library checks: its control connection (the bridge drops it when this closes) and the
/// producer of its own requests ring (each attachment has a segment of its own: slot 0).
fn attach_by_hand(
    ctl: &Path,
    name: &str,
) -> (
    dmshm::control::Conn,
    dmshm::ring::Producer<dmshm::segment::ShmRing>,
) {
    use dmshm::control::{Conn, Ctl, Recv};
    let s = Conn::connect(ctl).unwrap();
    s.send_ctl(
        &Ctl::Hello {
            version: dmshm::segment::WIRE_VERSION,
            pid: std::process::id(),
            name: name.into(),
        },
        None,
    )
    .unwrap();
    let mut buf = vec![0u8; dmshm::control::MAX_CONTROL_MSG];
    let (generation, file) = loop {
        assert!(s.wait_readable(WAIT).unwrap(), "no Welcome");
        if let Recv::Msg(n, Some(fd)) = s.recv(&mut buf).unwrap() {
            match Ctl::decode(&buf[..n]).unwrap() {
                Ctl::Welcome { generation, .. } => break (generation, std::fs::File::from(fd)),
                other => panic!("{other:?}"),
            }
        }
    };
    let seg = dmshm::segment::Segment::open(file, Path::new(name), generation).unwrap();
    let p =
        dmshm::ring::Producer::new(seg.ring(0, dmshm::segment::RingId::ToBridge).unwrap(), 1024);
    (s, p)
}

/// Local clients attacking the seam while a worker serves: a hundred connections that never
/// register, and a registered client that writes garbage records into its ring. The worker
/// keeps answering every request; the garbage writer is dropped and counted; the silent ones
/// hold no slot (max_workers = 3: the worker, the scribbler and the status probe) and are
/// refused when their registration time is up, counted.
#[test]
fn silent_and_scribbling_local_clients_leave_the_worker_served() {
    use dmshm::control::Conn;
    let dir = TestDir::new("shm-attacks");
    let mut b = Bridge::start(dir.path(), &options(free_port(), "max_workers = 3\n"));
    let ctl = control_socket(&b);
    let mut silent = Vec::new();
    let t0 = Instant::now();
    while silent.len() < 100 {
        match Conn::connect(&ctl) {
            Ok(c) => silent.push(c),
            // The listen backlog is full until the bridge accepts: try again.
            Err(e) => {
                assert!(t0.elapsed() < WAIT, "{e}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let _w = spawn_worker(dir.path(), "w-echo", &ctl, "echo", TA_EVENT, &[]);
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    echo_round(&mut c, "silent", 20);

    // The scribbler: registers by hand and publishes well-framed garbage in its own ring.
    let (s, mut p) = attach_by_hand(&ctl, "scribbler");
    p.push(&[b"\xff garbage, not a record"]).unwrap();
    s.send(&[0x01], None).unwrap(); // its doorbell
    wait_log_count(&mut b, "\"scribbler\" (pid", 2); // attached, then gone
    echo_round(&mut c, "scribbled", 20);

    let doc = status_until(&ctl, "attacks counted", |d| {
        let seam = &d["counters"]["seam"];
        seam["workers_dropped_protocol"] == 1
            && seam["refused"]["handshake_timeout"].as_u64().unwrap_or(0)
                + seam["refused"]["pending_full"].as_u64().unwrap_or(0)
                >= 100
    });
    assert_eq!(doc["workers"].as_array().map(Vec::len), Some(2), "{doc}");
    drop(silent);
}

/// A bridge whose stops and disabled peers drain for 1 s (then DPR, DPA awaited 2 s), with
/// this `[app] reply_timeout`; its directory, itself and its control socket.
fn bridge_draining_in_1s(name: &str, reply_timeout: &str) -> (TestDir, Bridge, PathBuf) {
    let dir = TestDir::new(name);
    let mut opts = options(
        free_port(),
        &format!("reply_timeout = \"{reply_timeout}\"\n"),
    );
    opts.timers.push(("drain_timeout".into(), "1s".into()));
    opts.timers.push(("dpa_timeout".into(), "2s".into()));
    let b = Bridge::start(dir.path(), &opts);
    let ctl = control_socket(&b);
    (dir, b, ctl)
}

/// SIGTERM on the bridge while a worker holds requests it will not reply to within the drain
/// time (`reply_timeout` longer than `drain_timeout`): each request still gets exactly one
/// answer, 5012 DIAMETER_UNABLE_TO_COMPLY (RFC 6733 §7.1.5), before the bridge's DPR
/// (§5.4), and the bridge exits.
#[test]
fn sigterm_with_held_requests_answers_each_once_before_the_dpr() {
    const N: usize = 5;
    let (dir, mut b, ctl) = bridge_draining_in_1s("shm-sigterm-held", "60s");
    let w = spawn_worker(dir.path(), "w-hold", &ctl, "hold", TA_EVENT, &[]);
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    let ids = send_requests(&mut c, "term", N);
    wait_worker_lines(&w, "W held ", N);
    b.guard().signal(Sig::Term).unwrap();
    each_answered_5012_before_the_dpr(&mut c, &ids);
    b.guard().wait_exit(WAIT);
    let log = b.guard().output();
    assert!(log.contains("answered 5012"), "{log}");
    // The node answered them at the drain and told the shm driver so: none is left for the
    // driver to count as unreplied at its stop.
    assert!(!log.contains("requests unreplied"), "{log}");
}

/// Reads everything the bridge sends `c` until it closes (answering its DPR): each of `ids`
/// has exactly one answer, 5012, before the DPR, and there is a DPR.
fn each_answered_5012_before_the_dpr(c: &mut RawClient, ids: &[u32]) {
    let mut seen: Vec<RawMessage> = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the bridge did not close: {seen:#?}");
        match c.read_message(left) {
            Ok(m) => {
                if m.is_request() && m.cmd_code == wire::cmd::DPR {
                    c.send(&answer_to(&m, 2001, CLIENT.0, CLIENT.1, &[]))
                        .unwrap();
                }
                seen.push(m);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break
            }
            Err(e) => panic!("reading: {e}; so far {seen:#?}"),
        }
    }
    let dpr_at = seen
        .iter()
        .position(|m| m.is_request() && m.cmd_code == wire::cmd::DPR);
    for id in ids {
        let answers: Vec<(usize, &RawMessage)> = seen
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_request() && m.hbh == *id)
            .collect();
        assert_eq!(answers.len(), 1, "request {id:#x}: {seen:#?}");
        assert_eq!(answers[0].1.result_code(), Some(5012), "{seen:#?}");
        assert!(
            dpr_at.is_none_or(|d| answers[0].0 < d),
            "answer after the DPR: {seen:#?}"
        );
    }
    assert!(dpr_at.is_some(), "no DPR: {seen:#?}");
}

/// `peer disable` of a peer whose requests a worker holds past the drain time: the node
/// answers each 5012 before its DPR (RFC 6733 §5.4, §7.1.5), and the bridge keeps running.
/// When the worker's replies come afterwards, nothing more goes on the wire and the status
/// tells the truth: each request counted once as drained and its reply as late — not as a
/// reply, and no reply timeout later.
#[test]
fn replies_after_the_drain_5012_are_counted_late_not_as_replies() {
    const N: usize = 3;
    let (dir, mut b, ctl) = bridge_draining_in_1s("shm-drain-late", "4s");
    let w = spawn_worker(
        dir.path(),
        "w-late",
        &ctl,
        "late",
        TA_EVENT,
        &[("DMB_DELAY_MS", "2000".into()), ("DMB_VERBOSE", "1".into())],
    );
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    let ids = send_requests(&mut c, "drain", N);
    let sent = Instant::now();
    // Taken by the worker (its replies come 2 s later, past the 1 s drain).
    wait_worker_lines(&w, "W req ", N);
    let out = Command::new(harness::dmbridge::dmbridge_bin().expect("dmbridge binary"))
        .arg("ctl")
        .arg("--config")
        .arg(b.config_path())
        .args(["peer", "disable", CLIENT.0])
        .output()
        .unwrap();
    assert!(out.status.success(), "peer disable: {out:?}");
    each_answered_5012_before_the_dpr(&mut c, &ids);
    wait_worker_lines(&w, "W replied ", N);
    let doc = status_until(&ctl, "the late replies are counted", |d| {
        let k = |n: &str| d["counters"][n].as_u64().unwrap_or(0);
        k("late_replies_dropped") + k("replies") >= N as u64
    });
    let k = |n: &str| doc["counters"][n].as_u64().unwrap_or(u64::MAX);
    assert_eq!(k("dispatched"), N as u64, "{doc}");
    assert_eq!(k("replies"), 0, "{doc}");
    assert_eq!(k("late_replies_dropped"), N as u64, "{doc}");
    assert_eq!(k("answered_5012_drain"), N as u64, "{doc}");
    wait_log_count(&mut b, "5012 at the drain before our DPR", 1);
    // Past the requests' 4 s reply timeout: none of them is given up on a second time.
    std::thread::sleep((sent + Duration::from_secs(5)).saturating_duration_since(Instant::now()));
    let doc = status_until(&ctl, "status", |d| d["counters"].is_object());
    assert_eq!(doc["counters"]["answered_5012_reply_timeout"], 0, "{doc}");
    let log = b.guard().output();
    assert!(!log.contains("no reply from worker"), "{log}");
}

/// A worker that replies to another worker's request (its token read from that worker; a
/// process on the seam that skips libdmbridge's own token check): the reply is ignored, so the
/// peer is not answered with it; it is counted (`worker_records_ignored`) and logged; the
/// request's owner still decides its one answer (here it dies holding it: one 5012).
#[test]
fn a_reply_to_another_workers_request_is_ignored_logged_and_counted() {
    use dmshm::record::{Payload, Record, Reply, ReplyStatus};
    let dir = TestDir::new("shm-foreign-reply");
    let mut b = Bridge::start(
        dir.path(),
        &options(free_port(), "reply_timeout = \"30s\"\n"),
    );
    let ctl = control_socket(&b);
    let owner = spawn_worker(dir.path(), "w-hold", &ctl, "hold", TA_EVENT, &[]);
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    let (req, id) = ta_request(&mut c, "client;foreign;1", &[]);
    c.send(&req).unwrap();
    let held = wait_worker_lines(&owner, "W held ", 1);
    let token: u64 = held[0]["W held ".len()..].trim().parse().unwrap();

    // The other worker: attaches by hand and replies to the owner's token, twice.
    let (s, mut p) = attach_by_hand(&ctl, "intruder");
    let mut rec = Vec::new();
    Record::Reply(Reply {
        token,
        status: ReplyStatus::Ok,
        form: Payload::Json,
        avps: br#"[{"Result-Code":2001}]"#,
        error: "",
    })
    .encode(&mut rec);
    for _ in 0..2 {
        p.push(&[&rec]).unwrap();
    }
    s.send(&[0x01], None).unwrap(); // its doorbell
    let doc = status_until(&ctl, "the foreign replies counted", |d| {
        d["counters"]["worker_records_ignored"] == 2
    });
    assert_eq!(doc["counters"]["replies"], 0, "{doc}");
    assert_no_more_answers(&mut c, Duration::from_millis(300));
    let log = b.guard().output();
    assert!(
        log.contains(&format!("reply to token {token:#x} ignored")),
        "logged:\n{log}"
    );
    // The owner dies holding it: the request's one answer.
    owner.signal(Sig::Kill).unwrap();
    let answers = collect_answers(&mut c, &[id], WAIT);
    assert_eq!(codes_of(&answers), HashMap::from([(5012, 1)]));
    assert_no_more_answers(&mut c, Duration::from_millis(300));
    drop(s);
}

/// A raw peer connected to `b` (CER/CEA done, open in the status) and a worker that sends one
/// synchronous request with `timeout_ms` (`unanswered` mode); returns once the peer has the
/// request, unanswered: the peer, the worker, the request.
fn peer_holding_a_scripts_request(
    dir: &Path,
    b: &Bridge,
    timeout_ms: u32,
) -> (RawClient, ChildGuard, RawMessage) {
    let ctl = control_socket(b);
    let mut peer = RawClient::connect(b.port(), WAIT).unwrap();
    assert_eq!(
        peer.handshake(PEER.0, PEER.1, WAIT).unwrap().result_code(),
        Some(2001)
    );
    wait_peer_open(&ctl);
    let w = spawn_worker(
        dir,
        "w-unanswered",
        &ctl,
        "unanswered",
        "",
        &[("DMB_TIMEOUT_MS", timeout_ms.to_string())],
    );
    let req = peer
        .read_until(WAIT, PEER, |m| {
            m.is_request() && m.cmd_code == test_app::CMD
        })
        .unwrap();
    (peer, w, req)
}

/// Waits for the outcome of the `unanswered` worker `w`'s sync request: "no answer" (class
/// -2), ended by what happened, before its `timeout_ms`.
fn ended_as_no_answer_before_its_timeout(w: &ChildGuard, timeout_ms: u64) {
    let done = wait_worker_lines(w, "W done ", 1);
    assert!(done[0].contains("class=-2"), "{done:?}");
    let ms: u64 = done[0]
        .rsplit("ms=")
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(ms < timeout_ms, "ended by its timeout: {done:?}");
}

/// A script's request the peer answers only after its timeout: the script gets the timeout
/// (class -2) once, and the late answer is dropped, logged and counted
/// (`dmbridge_events_total{event="answer_unmatched"}`), never delivered.
#[test]
fn a_late_answer_to_a_scripts_request_is_dropped_logged_and_counted() {
    let dir = TestDir::new("shm-late-answer");
    let mport = free_port();
    let metrics = format!("\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n");
    let mut b = Bridge::start(dir.path(), &options(free_port(), &metrics));
    let (mut peer, w, req) = peer_holding_a_scripts_request(dir.path(), &b, 300);
    let done = wait_worker_lines(&w, "W done ", 1);
    assert!(done[0].contains("class=-2"), "{done:?}");
    peer.send(&answer_to(&req, 2001, PEER.0, PEER.1, &[]))
        .unwrap();
    let unmatched = r#"dmbridge_events_total{event="answer_unmatched"}"#;
    let deadline = Instant::now() + WAIT;
    loop {
        let body = harness::prometheus::http_get(mport, "/metrics", WAIT)
            .map(|(_, b)| b)
            .unwrap_or_default();
        if value(&body, unmatched) == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{unmatched} not 1:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_log_count(&mut b, "answer dropped: no request of ours waits for it", 1);
    // The script had its one outcome; nothing more reached it.
    assert_eq!(worker_lines(&w, "W ").len(), 1, "{}", w.tail(10));
}

/// The peer's connection drops while it holds a script's request and no other peer can take
/// it (RFC 6733 §5.5.4: failover needs an alternate): the script gets its one outcome at
/// once, as "no answer" (class -2: the request went out, the peer may have acted on it),
/// not "not sent" (-3, which says it never left and invites a blind retry).
#[test]
fn a_scripts_request_lost_with_its_only_peer_ends_as_no_answer_not_as_not_sent() {
    let dir = TestDir::new("shm-peer-lost");
    let mut b = Bridge::start(dir.path(), &options(free_port(), ""));
    let (peer, w, _) = peer_holding_a_scripts_request(dir.path(), &b, 20_000);
    drop(peer);
    ended_as_no_answer_before_its_timeout(&w, 20_000);
    assert_eq!(worker_lines(&w, "W ").len(), 1, "{}", w.tail(10));
    let _ = b.guard().output();
}

/// The bridge killed (SIGKILL) while scripts' requests are in flight: each ends at once, by
/// whether the bridge had taken it from the worker's ring. The sync call whose request the
/// peer holds, and the async request A the peer holds, end as "no answer" (class -2: they
/// went out, the peer may have acted on them, a blind retry may act twice); request B, queued
/// while the bridge was stopped (SIGSTOP: it took nothing more), ends as "not sent" (-3: the
/// bridge never saw it, DESIGN §3 bridge down; safe to retry). None waits for its timeout.
#[test]
fn a_killed_bridge_ends_what_it_took_as_no_answer_and_what_it_never_took_as_not_sent() {
    let dir = TestDir::new("shm-bridge-killed");
    let mut b = Bridge::start(dir.path(), &options(free_port(), ""));
    let ctl = control_socket(&b);
    let (mut peer, sync_w, _) = peer_holding_a_scripts_request(dir.path(), &b, 20_000);
    let go = dir.join("go");
    let w = spawn_worker(
        dir.path(),
        "w-gone",
        &ctl,
        "gone",
        "",
        &[("DMB_GO", go.display().to_string())],
    );
    let a: u64 = wait_worker_lines(&w, "W sent A ", 1)[0]
        .trim_start_matches("W sent A ")
        .parse()
        .unwrap();
    peer.read_until(WAIT, PEER, |m| {
        m.is_request() && m.cmd_code == test_app::CMD
    })
    .unwrap();
    // Stopped, the bridge takes nothing more from the rings.
    let stop = Command::new("kill")
        .args(["-STOP", &b.guard().pid().to_string()])
        .status()
        .unwrap();
    assert!(stop.success());
    std::fs::write(&go, b"go").unwrap();
    let queued: u64 = wait_worker_lines(&w, "W queued B ", 1)[0]
        .trim_start_matches("W queued B ")
        .parse()
        .unwrap();
    b.guard().signal(Sig::Kill).unwrap();
    assert!(
        b.guard().wait_exit(WAIT).is_some(),
        "the bridge did not die"
    );

    ended_as_no_answer_before_its_timeout(&sync_w, 20_000);
    let done = wait_worker_lines(&w, "W done ", 2);
    assert_eq!(done.len(), 2, "one outcome each: {done:?}");
    let class_of = |h: u64| {
        let l = done
            .iter()
            .find(|l| l.starts_with(&format!("W done handle={h} ")))
            .unwrap_or_else(|| panic!("no outcome for {h}: {done:?}"));
        (
            l.split("class=")
                .nth(1)
                .and_then(|v| v.split(' ').next())
                .unwrap_or("")
                .to_string(),
            l.clone(),
        )
    };
    let (ca, la) = class_of(a);
    assert_eq!(ca, "-2", "A was at the peer: {la}");
    assert!(la.contains("after taking the request"), "{la}");
    let (cb, lb) = class_of(queued);
    assert_eq!(cb, "-3", "B was never taken: {lb}");
    assert!(lb.contains("before taking the request (not sent)"), "{lb}");
}

/// `[limits] max_pending_requests` reached (the workers hold that many): each further request
/// is answered 3004 DIAMETER_TOO_BUSY with the E bit at once (RFC 6733 §7.1.3), counted
/// (`dmbridge_local_answers_total{cause="too_many_in_progress"}`); the held ones still get
/// their one answer (here 5012 when their worker dies), and the table drains: a request
/// after that is served.
#[test]
fn a_full_pending_table_answers_3004_counts_it_and_drains() {
    const LIMIT: usize = 3;
    const N: usize = 7;
    let dir = TestDir::new("shm-pending-full");
    let mport = free_port();
    let toml = format!(
        "reply_timeout = \"30s\"\n\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n\n[limits]\nmax_pending_requests = {LIMIT}\n"
    );
    let mut b = Bridge::start(dir.path(), &options(free_port(), &toml));
    let ctl = control_socket(&b);
    let holder = spawn_worker(dir.path(), "w-hold", &ctl, "hold", TA_EVENT, &[]);
    wait_log_count(&mut b, " handles [", 1);
    let mut c = client(&b);
    let ids = send_requests(&mut c, "pf", N);
    let busy = collect_answers(&mut c, &ids[LIMIT..], WAIT);
    assert_eq!(codes_of(&busy), HashMap::from([(3004, N - LIMIT)]));
    assert!(busy.values().all(|m| m.flags & flags::ERROR != 0));
    wait_worker_lines(&holder, "W held ", LIMIT);
    let deadline = Instant::now() + WAIT;
    loop {
        let body = harness::prometheus::http_get(mport, "/metrics", WAIT)
            .map(|(_, b)| b)
            .unwrap_or_default();
        let n: f64 = body
            .lines()
            .filter(|l| {
                l.contains("dmbridge_local_answers_total") && l.contains("too_many_in_progress")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if n == (N - LIMIT) as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "local answers too_many_in_progress: {n}\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    holder.signal(Sig::Kill).unwrap();
    let lost = collect_answers(&mut c, &ids[..LIMIT], WAIT);
    assert_eq!(codes_of(&lost), HashMap::from([(5012, LIMIT)]));
    assert_no_more_answers(&mut c, Duration::from_millis(300));
    a_new_echo_worker_serves(dir.path(), &ctl, &mut b, &mut c, 2, "client;pf;after");
}

/// SIGTERM while the peer holds a script's request past the drain time: the bridge sends DPR
/// (RFC 6733 §5.4) and the request ends for the script as "no answer" (class -2: it went out,
/// the peer may have acted on it), not "not sent" (-3); the bridge exits.
#[test]
fn sigterm_with_a_scripts_request_at_the_peer_ends_it_as_no_answer() {
    let dir = TestDir::new("shm-sigterm-out");
    let mut opts = options(free_port(), "");
    opts.timers.push(("drain_timeout".into(), "1s".into()));
    opts.timers.push(("dpa_timeout".into(), "2s".into()));
    let mut b = Bridge::start(dir.path(), &opts);
    let (mut peer, w, _) = peer_holding_a_scripts_request(dir.path(), &b, 20_000);
    b.guard().signal(Sig::Term).unwrap();
    let dpr = peer
        .read_until(WAIT, PEER, |m| {
            m.is_request() && m.cmd_code == wire::cmd::DPR
        })
        .unwrap();
    peer.send(&answer_to(&dpr, 2001, PEER.0, PEER.1, &[]))
        .unwrap();
    let done = wait_worker_lines(&w, "W done ", 1);
    assert!(done[0].contains("class=-2"), "{done:?}");
    assert!(
        b.guard().wait_exit(WAIT).is_some(),
        "the bridge did not exit"
    );
}
