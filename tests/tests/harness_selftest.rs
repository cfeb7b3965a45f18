//! Tests of the harness itself: if these fail, no end-to-end result can be trusted.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::capture::{diameter_messages, Capture};
use harness::tshark::{decode_offline, is_unknown_to_dictionary, EXPERT_ERROR, EXPERT_WARN};
use harness::wire::{self, code, flags, test_app, Avp, RawClient, RawMessage, TestRequest};
use harness::{free_port, wait_for_log_line, wait_for_port, ChildGuard, TestDir};

fn alive(pid: u32) -> bool {
    // A reaped child has no /proc entry; a zombie would still have one with state Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn free_ports_are_distinct_and_bindable_across_threads() {
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(|| (0..25).map(|_| free_port()).collect::<Vec<u16>>()))
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("thread"));
    }
    let unique: HashSet<u16> = all.iter().copied().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "free_port handed out a port twice: {all:?}"
    );
    for p in all.iter().take(20) {
        TcpListener::bind((Ipv4Addr::LOCALHOST, *p))
            .unwrap_or_else(|e| panic!("port {p} not free: {e}"));
        assert!(*p < 32768, "port {p} is in the kernel's ephemeral range");
    }
}

#[test]
fn child_guard_stops_the_whole_process_group_on_drop() {
    let dir = TestDir::new("guard-drop");
    let pidfile = dir.join("grandchild.pid");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "sleep 60 & echo $! > {}; echo started; wait",
        pidfile.display()
    ));
    let mut guard = ChildGuard::spawn("sh-sleeper", cmd, dir.path());
    guard
        .wait_for_line("started", Duration::from_secs(5))
        .unwrap();
    let pid = guard.pid();
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid) && alive(grandchild));
    drop(guard);
    // The grandchild is reparented (not our child): give init a moment to reap it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(grandchild) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "child {pid} survived the guard");
    assert!(
        !alive(grandchild),
        "grandchild {grandchild} survived the guard"
    );
}

#[test]
fn child_guard_stops_the_child_when_the_test_panics() {
    let dir = TestDir::new("guard-panic");
    let pidfile = dir.join("pid");
    let pidfile2 = pidfile.clone();
    let path = dir.path().to_path_buf();
    let res = std::thread::spawn(move || {
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let guard = ChildGuard::spawn("sleeper", cmd, &path);
        std::fs::write(&pidfile2, guard.pid().to_string()).unwrap();
        panic!("deliberate panic with a running child");
    })
    .join();
    assert!(res.is_err());
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    assert!(!alive(pid), "child {pid} survived a panicking test");
}

#[test]
fn waits_time_out_with_a_message_and_fail_early_when_the_child_exits() {
    let dir = TestDir::new("waits");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo hello; echo to-stderr >&2; sleep 60");
    let mut g = ChildGuard::spawn("talker", cmd, dir.path());
    assert_eq!(
        g.wait_for_line("to-stderr", Duration::from_secs(5))
            .unwrap(),
        "to-stderr"
    );
    let t = Instant::now();
    let err = g
        .wait_for_line("never printed", Duration::from_millis(300))
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(
        err.message().contains("timed out") && err.message().contains("hello"),
        "{err}"
    );

    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("echo bye; exit 3");
    let mut quitter = ChildGuard::spawn("quitter", cmd, dir.path());
    let t = Instant::now();
    let err = quitter
        .wait_for_line("never printed", Duration::from_secs(20))
        .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "did not notice the exit"
    );
    assert!(err.message().contains("exited"), "{err}");

    let log = dir.join("x.log");
    std::fs::write(&log, "a\nready now\n").unwrap();
    assert_eq!(
        wait_for_log_line(&log, "ready", Duration::from_secs(1)).unwrap(),
        "ready now"
    );
    assert!(wait_for_log_line(&log, "absent", Duration::from_millis(100)).is_err());
}

#[test]
fn wait_for_port_sees_a_listener_and_its_address() {
    let port = free_port();
    assert!(wait_for_port(port, Duration::from_millis(100)).is_err());
    let _l = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    assert_eq!(
        wait_for_port(port, Duration::from_secs(2)).unwrap(),
        vec!["127.0.0.1".to_string()]
    );
}

fn sample_messages() -> Vec<Vec<u8>> {
    let tr = TestRequest {
        session_id: "client.test.local;1;2;harness",
        origin_host: "client.test.local",
        origin_realm: "test.local",
        dest_realm: "test.local",
        dest_host: Some("server.test.local"),
        test_avp: -123_456,
    };
    vec![
        wire::cer("client.test.local", "test.local", 1, 2),
        wire::dwr("client.test.local", "test.local", 3, 4),
        wire::dpr("client.test.local", "test.local", 5, 6),
        tr.encode(7, 8),
    ]
}

/// The hand-rolled encoder agrees with Wireshark, so it can serve as a second opinion.
#[test]
fn hand_rolled_encoder_agrees_with_tshark() {
    let dir = TestDir::new("wire-vs-tshark");
    let msgs = sample_messages();
    let decoded = decode_offline(dir.path(), "harness", &msgs);
    for d in &decoded {
        // test_app's private command/AVP are unknown to Wireshark: warnings, nothing else.
        let problems = d.problems(EXPERT_WARN, is_unknown_to_dictionary);
        assert!(problems.is_empty(), "tshark objects: {problems:?}");
    }
    assert_eq!(decoded[3].experts.len(), 4, "{:?}", decoded[3].experts);
    for d in &decoded[..3] {
        assert!(d.experts.is_empty(), "{:?}", d.experts);
    }
    for (bytes, ts) in msgs.iter().zip(&decoded) {
        let m = RawMessage::parse(bytes).unwrap();
        assert_eq!(
            (ts.flags, ts.cmd_code, ts.app_id, ts.hbh, ts.e2e),
            (m.flags, m.cmd_code, m.app_id, m.hbh, m.e2e)
        );
        assert_eq!(ts.length, bytes.len());
        let avps = m.avps().unwrap();
        assert_eq!(avps.len(), ts.avps.len());
        for (a, t) in avps.iter().zip(&ts.avps) {
            assert_eq!(
                (a.code, a.flags, a.vendor, a.len),
                (t.code, t.flags, t.vendor, t.len)
            );
            assert_eq!(a.data, t.data());
        }
    }
    assert_eq!(decoded[0].value("Origin-Host"), Some("client.test.local"));
    assert_eq!(
        decoded[0]
            .avp("Host-IP-Address")
            .and_then(|a| a.detail("IPv4")),
        Some("127.0.0.1")
    );
    let vsai = decoded[0].avp("Vendor-Specific-Application-Id").unwrap();
    assert_eq!(vsai.children.len(), 2);
    assert_eq!(
        vsai.children[1].value.as_deref(),
        Some(test_app::APP_ID.to_string().as_str())
    );
    assert_eq!(decoded[2].value("Disconnect-Cause"), Some("2"));
    assert_eq!(
        decoded[3].value("Session-Id"),
        Some("client.test.local;1;2;harness")
    );
    let test_avp = decoded[3]
        .avps
        .iter()
        .find(|a| a.code == test_app::TEST_AVP)
        .unwrap();
    assert_eq!(test_avp.vendor, Some(test_app::VENDOR_ID));
    assert_eq!(test_avp.data(), (-123_456i32).to_be_bytes());
    assert_eq!(decoded[3].flags, flags::REQUEST | flags::PROXIABLE);
}

/// The oracle can fail: a wrong AVP length and an AVP shorter than its header are flagged.
#[test]
fn tshark_flags_bad_encodings() {
    let dir = TestDir::new("tshark-bad");
    let good = wire::dwr("a.test.local", "test.local", 1, 1);
    let mut badlen = good.clone();
    badlen[20 + 5..20 + 8].copy_from_slice(&[0, 0, 200]);
    let mut short = good.clone();
    short[20 + 5..20 + 8].copy_from_slice(&[0, 0, 3]);
    let decoded = decode_offline(dir.path(), "bad", &[good, badlen, short]);
    assert!(decoded[0].problems(EXPERT_WARN, |_| false).is_empty());
    for d in &decoded[1..] {
        let p = d.problems(EXPERT_ERROR, |_| false);
        assert!(!p.is_empty(), "frame {} not flagged", d.frame);
    }
    let via_filter = harness::tshark::bad_frames(&dir.join("bad.pcap"), &[3868]);
    assert_eq!(via_filter.len(), 2, "{via_filter:?}");
}

#[test]
fn parser_rejects_bad_lengths() {
    let mut m = wire::dwr("a.test.local", "test.local", 1, 1);
    assert!(RawMessage::parse(&m[..19]).is_err());
    m[20 + 7] = 200; // Origin-Host claims more bytes than there are
    assert!(RawMessage::parse(&m).unwrap().avps().is_err());
    let (frames, rest) =
        wire::split_frames(&[wire::dwr("a", "b", 1, 1), vec![1, 0]].concat()).unwrap();
    assert_eq!((frames.len(), rest.len()), (1, 2));
    assert!(wire::split_frames(&[2, 0, 0, 20]).is_err());
    let g = Avp::grouped(260, &[Avp::u32(code::VENDOR_ID, 7)]);
    assert_eq!(g.len(), 8 + 12);
}

/// A live capture returns exactly the bytes that crossed loopback, split into messages.
#[test]
fn capture_returns_the_exact_bytes_exchanged() {
    let dir = TestDir::new("capture");
    let port = free_port();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    let cap = Capture::start(dir.path(), port);
    // A tiny responder: answers each request with a 2001 answer, until EOF.
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut sent = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let (frames, rest) = wire::split_frames(&buf).unwrap();
            buf = rest;
            for f in frames {
                let req = RawMessage::parse(&f).unwrap();
                let ans = wire::answer_to(&req, 2001, "srv.test.local", "test.local", &[]);
                s.write_all(&ans).unwrap();
                sent.push(ans);
            }
        }
        sent
    });
    let mut c = RawClient::connect(port, Duration::from_secs(2)).unwrap();
    let cea = c
        .handshake("cli.test.local", "test.local", Duration::from_secs(5))
        .unwrap();
    assert_eq!(cea.result_code(), Some(2001));
    let id = c.next_id();
    let dwa = c
        .request(
            &wire::dwr("cli.test.local", "test.local", id, id),
            id,
            ("cli.test.local", "test.local"),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(dwa.cmd_code, wire::cmd::DWR);
    drop(c);
    let answers = server.join().unwrap();
    let pcap = cap.stop();
    let msgs = diameter_messages(&pcap);
    let to_server: Vec<&Vec<u8>> = msgs
        .iter()
        .filter(|m| m.from_client)
        .map(|m| &m.bytes)
        .collect();
    let to_client: Vec<&Vec<u8>> = msgs
        .iter()
        .filter(|m| !m.from_client)
        .map(|m| &m.bytes)
        .collect();
    assert_eq!(to_client, answers.iter().collect::<Vec<_>>());
    assert_eq!(to_server.len(), 2);
    assert_eq!(
        RawMessage::parse(to_server[0]).unwrap().cmd_code,
        wire::cmd::CER
    );
    assert!(Path::new(&pcap).starts_with(dir.path()));
}

/// The JSON comparison (for `dmbridge decode` output) accepts a correct DESIGN §8 document
/// and catches wrong values, flags, keys and structure.
#[test]
fn json_comparison_accepts_the_contract_and_catches_errors() {
    use harness::oracle::compare_json_with_tshark;
    let dir = TestDir::new("json-vs-tshark");
    let cer = wire::cer("client.test.local", "test.local", 1, 2);
    let ts = &decode_offline(dir.path(), "cer", &[cer])[0];
    let good = serde_json::json!({
        "cmd_code": 257, "app_id": 0, "flags": "R", "hop_by_hop": 1, "end_to_end": 2,
        "avps": [
            {"Origin-Host": "client.test.local"}, {"296": "test.local"},
            {"Host-IP-Address": "127.0.0.1"}, {"Vendor-Id": 0},
            {"Product-Name": "dmbridge-harness"}, {"Supported-Vendor-Id": 999_999},
            {"Auth-Application-Id": 16_777_215},
            {"Vendor-Specific-Application-Id": [{"Vendor-Id": 999_999}, {"Auth-Application-Id": {"hex": "00ffffff"}}]}
        ]
    });
    let cmp = compare_json_with_tshark(&good, ts);
    cmp.assert_ok("hand-written CER JSON");
    assert!(cmp.values >= 9, "{cmp:?}");

    let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut doc = good.clone();
        f(&mut doc);
        compare_json_with_tshark(&doc, ts).mismatches
    };
    assert!(!mutate(&|d| d["flags"] = "RP".into()).is_empty());
    assert!(!mutate(&|d| d["hop_by_hop"] = 7.into()).is_empty());
    assert!(!mutate(&|d| d["avps"][0]["Origin-Host"] = "other.test.local".into()).is_empty());
    assert!(!mutate(&|d| d["avps"][2]["Host-IP-Address"] = "127.0.0.2".into()).is_empty());
    assert!(!mutate(&|d| d["avps"][1] = serde_json::json!({"264": "test.local"})).is_empty());
    assert!(!mutate(
        &|d| d["avps"][7]["Vendor-Specific-Application-Id"][0]["Vendor-Id"] = 1.into()
    )
    .is_empty());
    assert!(!mutate(&|d| {
        d["avps"].as_array_mut().unwrap().pop();
    })
    .is_empty());
}

#[test]
fn raw_client_sees_a_disconnect_and_the_last_answer_before_it() {
    let port = free_port();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap(); // garbage arrives
        let req = RawMessage::parse(&wire::dwr("x", "y", 9, 9)).unwrap();
        s.write_all(&wire::answer_to(
            &req,
            3009,
            "srv.test.local",
            "test.local",
            &[],
        ))
        .unwrap();
        // dropping `s` closes the connection
    });
    let mut c = RawClient::connect(port, Duration::from_secs(2)).unwrap();
    c.send(b"junk").unwrap();
    let seen = c.wait_closed(Duration::from_secs(5)).unwrap();
    server.join().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].result_code(), Some(3009));
    assert_ne!(
        seen[0].flags & flags::ERROR,
        0,
        "3xxx answers carry the E bit"
    );
}
