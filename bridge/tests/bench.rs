//! `dmbridge bench` against a tiny Diameter responder written here with proto's codec, on
//! 127.0.0.1 (and ::1) with an ephemeral port. Every run is bounded by `--count` or
//! `--duration`, the process is killed if it outlives its deadline, and the responder's
//! threads end with their connections.
//!
//! The responder decides each request's fate from its arrival number, so the expected
//! counts (answers by Result-Code, timeouts) are exact, not statistical.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dmproto::avp::AvpFlags;
use dmproto::{Framer, Header, Message, MessageWriter};
use serde_json::Value as Json;

const M: u8 = AvpFlags::M;

/// What the responder does with the n-th application request (n from 0, over all
/// connections).
#[derive(Clone, Copy, Debug)]
enum Fate {
    Answer(u32),
    Experimental(u32, u32),
    Drop,
}

/// What the responder saw.
#[derive(Default, Debug)]
struct Seen {
    requests: u32,
    session_ids: HashSet<String>,
    destination_realms: HashSet<String>,
    dpr: u32,
    dwa: u32,
    cer_apps: Vec<u32>,
}

struct Responder {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Clone, Copy)]
struct Behaviour {
    fate: fn(u32) -> Fate,
    cea_result: u32,
    /// Send a DWR right after the CEA and expect the DWA.
    send_dwr: bool,
    connections: usize,
}

impl Responder {
    fn start(bind: &str, b: Behaviour) -> Option<Responder> {
        let listener = TcpListener::bind(bind).ok()?;
        let addr = listener.local_addr().ok()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let counter = Arc::new(AtomicU32::new(0));
        let s2 = seen.clone();
        let accept = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for _ in 0..b.connections {
                let Ok((sock, _)) = listener.accept() else {
                    break;
                };
                let (seen, counter) = (s2.clone(), counter.clone());
                conns.push(std::thread::spawn(move || serve(sock, b, &seen, &counter)));
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Some(Responder {
            addr,
            seen,
            accept: Some(accept),
        })
    }

    fn seen(&mut self) -> std::sync::MutexGuard<'_, Seen> {
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        self.seen.lock().unwrap()
    }
}

fn write(sock: &mut TcpStream, w: MessageWriter) {
    let _ = sock.write_all(&w.finish().unwrap());
}

fn base_answer(req: &Message, result: u32) -> MessageWriter {
    let mut w = MessageWriter::answer_to(&req.header);
    if let Some(sid) = req.find_ref(263, 0) {
        w.avp(263, M, 0, sid.data);
    }
    w.u32(268, M, 0, result)
        .str(264, M, 0, "resp.test.local")
        .str(296, M, 0, "resp.realm");
    w
}

fn serve(mut sock: TcpStream, b: Behaviour, seen: &Mutex<Seen>, counter: &AtomicU32) {
    // A stuck bench must not hang the test: the bench's own deadline is far shorter.
    let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        framer.feed(&buf[..n]).unwrap();
        while let Some(frame) = framer.next_frame().unwrap() {
            let m = Message::decode(frame).unwrap();
            let code = m.header.code;
            if !m.is_request() {
                if code == 280 && m.find_u32(268, 0) == Some(2001) {
                    seen.lock().unwrap().dwa += 1;
                }
                continue;
            }
            match code {
                257 => {
                    let mut apps = Vec::new();
                    for a in m.avp_refs().map(Result::unwrap) {
                        match a.code {
                            258 | 259 => apps.push(u32::from_be_bytes(a.data.try_into().unwrap())),
                            260 => {
                                for k in a.group().map(Result::unwrap) {
                                    if k.code == 258 || k.code == 259 {
                                        apps.push(u32::from_be_bytes(k.data.try_into().unwrap()));
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    seen.lock().unwrap().cer_apps.extend(apps);
                    let mut bytes = base_answer(&m, b.cea_result).finish().unwrap().to_vec();
                    if b.cea_result == 2001 && b.send_dwr {
                        // In the same segment as the CEA: the bench must not lose it.
                        let mut w = MessageWriter::new(Header::request(280, 0, 0xD0D0, 0xD0D0));
                        w.str(264, M, 0, "resp.test.local")
                            .str(296, M, 0, "resp.realm");
                        bytes.extend_from_slice(&w.finish().unwrap());
                    }
                    let _ = sock.write_all(&bytes);
                    if b.cea_result != 2001 {
                        return;
                    }
                }
                280 => write(&mut sock, base_answer(&m, 2001)),
                282 => {
                    seen.lock().unwrap().dpr += 1;
                    write(&mut sock, base_answer(&m, 2001));
                    return;
                }
                _ => {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut s = seen.lock().unwrap();
                        s.requests += 1;
                        if let Some(sid) = m.session_id() {
                            s.session_ids.insert(sid.to_string());
                        }
                        if let Some(r) = m.find_ref(283, 0) {
                            s.destination_realms
                                .insert(String::from_utf8_lossy(r.data).into_owned());
                        }
                    }
                    match (b.fate)(n) {
                        Fate::Answer(rc) => write(&mut sock, base_answer(&m, rc)),
                        Fate::Experimental(vendor, code) => {
                            let mut w = MessageWriter::answer_to(&m.header);
                            w.str(264, M, 0, "resp.test.local")
                                .str(296, M, 0, "resp.realm")
                                .group(297, M, 0, |w| {
                                    w.u32(266, M, 0, vendor).u32(298, M, 0, code);
                                });
                            write(&mut sock, w);
                        }
                        Fate::Drop => {}
                    }
                }
            }
        }
    }
}

/// Kills the bench if the test fails or it outlives its deadline.
struct Bench(Option<Child>);

impl Drop for Bench {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn template_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}-{}.json", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

const CCR: &str = r#"{"cmd_code": 272, "app_id": 4, "avps": [
    {"Auth-Application-Id": 4},
    {"Service-Context-Id": "32260@3gpp.org"},
    {"CC-Request-Type": "INITIAL_REQUEST"},
    {"CC-Request-Number": 0},
    {"Subscription-Id": [{"Subscription-Id-Type": 0}, {"Subscription-Id-Data": "49170{{counter}}"}]}
]}"#;

/// Runs `dmbridge bench` with `args` and returns its output once it exits (killed after 60 s).
fn run_bench(args: &[&str]) -> Output {
    let child = Command::new(harness::dmbridge::bin_or(env!("CARGO_BIN_EXE_dmbridge")))
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Bench(Some(child));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = guard.0.as_mut().unwrap();
        if c.try_wait().unwrap().is_some() {
            return guard.0.take().unwrap().wait_with_output().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "dmbridge bench did not finish in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json_summary(out: &Output) -> Json {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "--json output is not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn behaviour(fate: fn(u32) -> Fate, connections: usize) -> Behaviour {
    Behaviour {
        fate,
        cea_result: 2001,
        send_dwr: false,
        connections,
    }
}

#[test]
fn every_request_answered_counts_exact() {
    let mut r = Responder::start("127.0.0.1:0", behaviour(|_| Fate::Answer(2001), 2)).unwrap();
    let t = template_file("ccr", CCR);
    let addr = r.addr.to_string();
    let out = run_bench(&[
        "--connect",
        &addr,
        "--template",
        t.to_str().unwrap(),
        "--count",
        "3000",
        "--concurrency",
        "64",
        "--connections",
        "2",
        "--json",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_summary(&out);
    assert_eq!(j["sent"], 3000);
    assert_eq!(j["answered"], 3000);
    assert_eq!(j["success"], 3000);
    assert_eq!(j["result_codes"], serde_json::json!({"2001": 3000}));
    assert_eq!(j["timeouts"], 0);
    assert_eq!(j["unanswered"], 0);
    assert_eq!(j["connections"], 2);
    let lat = &j["latency_us"];
    assert!(lat["p50"].as_u64().unwrap() <= lat["p99"].as_u64().unwrap());
    assert!(lat["p99"].as_u64().unwrap() <= lat["max"].as_u64().unwrap());
    let seen = r.seen();
    assert_eq!(seen.requests, 3000);
    assert_eq!(
        seen.session_ids.len(),
        3000,
        "a fresh Session-Id per request"
    );
    // The Destination-Realm was filled from the responder's CEA.
    assert_eq!(
        seen.destination_realms,
        HashSet::from(["resp.realm".to_string()])
    );
    assert_eq!(seen.dpr, 2, "DPR on each connection at the end");
    assert_eq!(seen.cer_apps, [4, 4]);
}

#[test]
fn result_code_histogram_is_exact() {
    let fate = |n: u32| match n % 5 {
        0 => Fate::Answer(5012),
        1 => Fate::Experimental(10415, 5001),
        _ => Fate::Answer(2001),
    };
    let mut r = Responder::start("127.0.0.1:0", behaviour(fate, 1)).unwrap();
    let t = template_file("mix", CCR);
    let addr = r.addr.to_string();
    let out = run_bench(&[
        "--connect",
        &addr,
        "--template",
        t.to_str().unwrap(),
        "--count",
        "1000",
        "--concurrency",
        "10",
        "--json",
        "--quiet",
        "--dest-realm",
        "given.realm",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_summary(&out);
    assert_eq!(
        j["result_codes"],
        serde_json::json!({"2001": 600, "5012": 200, "5001:10415": 200})
    );
    assert_eq!(
        j["errors_by_code"],
        serde_json::json!({"5012": 200, "5001:10415": 200})
    );
    assert_eq!(
        (j["errors"].as_u64(), j["success"].as_u64()),
        (Some(400), Some(600))
    );
    assert_eq!(
        r.seen().destination_realms,
        HashSet::from(["given.realm".to_string()])
    );
}

#[test]
fn dropped_requests_are_timeouts() {
    let fate = |n: u32| {
        if n % 10 == 3 {
            Fate::Drop
        } else {
            Fate::Answer(2001)
        }
    };
    let mut r = Responder::start("127.0.0.1:0", behaviour(fate, 1)).unwrap();
    let t = template_file("drop", CCR);
    let addr = r.addr.to_string();
    let out = run_bench(&[
        "--connect",
        &addr,
        "--template",
        t.to_str().unwrap(),
        "--count",
        "500",
        "--concurrency",
        "20",
        "--timeout-ms",
        "200",
        "--json",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_summary(&out);
    assert_eq!(j["sent"], 500);
    assert_eq!(j["answered"], 450);
    assert_eq!(j["timeouts"], 50);
    assert_eq!(j["unanswered"], 0);
    assert_eq!(j["unmatched_answers"], 0);
    assert_eq!(r.seen().requests, 500);
}

#[test]
fn dwr_is_answered_and_test_app_template_advertises_its_vendor() {
    let mut b = behaviour(|_| Fate::Answer(2001), 1);
    b.send_dwr = true;
    let mut r = Responder::start("127.0.0.1:0", b).unwrap();
    let t = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cfg-examples/bench/test_app.json");
    let addr = r.addr.to_string();
    let out = run_bench(&[
        "--connect",
        &addr,
        "--template",
        t.to_str().unwrap(),
        "--count",
        "200",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_summary(&out);
    assert_eq!(j["dwr_answered"], 1);
    assert_eq!(j["answered"], 200);
    let seen = r.seen();
    assert_eq!(seen.dwa, 1);
    assert_eq!(seen.cer_apps, [16777215]);
    // Without --quiet: the connection line and the summary's progress go to stderr only.
    assert!(String::from_utf8_lossy(&out.stderr).contains("resp.test.local"));
}

#[test]
fn open_loop_sends_exactly_the_schedule() {
    let mut r = Responder::start("127.0.0.1:0", behaviour(|_| Fate::Answer(2001), 2)).unwrap();
    let t = template_file("rate", CCR);
    let addr = r.addr.to_string();
    let out = run_bench(&[
        "--connect",
        &addr,
        "--template",
        t.to_str().unwrap(),
        "--rate",
        "400",
        "--duration",
        "1.2",
        "--connections",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_summary(&out);
    assert_eq!(j["sent"], 480, "1.2 s at 400/s");
    assert_eq!(j["answered"], 480);
    assert_eq!(r.seen().requests, 480);
    // One progress line a second on stderr, none on stdout (which holds only the JSON).
    let err = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert!(
        progress
            .first()
            .is_some_and(|l| l.contains("s] sent ") && l.contains("answered")),
        "{err}"
    );
}

#[test]
fn ipv6_loopback() {
    let Some(mut r) = Responder::start("[::1]:0", behaviour(|_| Fate::Answer(2001), 1)) else {
        panic!("cannot bind [::1]: this machine has no IPv6 loopback");
    };
    let t = template_file("v6", CCR);
    let addr = r.addr.to_string();
    let out = run_bench(&[
        "--connect",
        &addr,
        "--template",
        t.to_str().unwrap(),
        "--count",
        "100",
        "--json",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_summary(&out)["answered"], 100);
    assert_eq!(r.seen().requests, 100);
}

#[test]
fn failed_cea_or_connection_exits_non_zero() {
    let mut b = behaviour(|_| Fate::Answer(2001), 1);
    b.cea_result = 3010;
    let mut r = Responder::start("127.0.0.1:0", b).unwrap();
    let t = template_file("cea", CCR);
    let addr = r.addr.to_string();
    let out = run_bench(&[
        "--connect",
        &addr,
        "--template",
        t.to_str().unwrap(),
        "--count",
        "10",
        "--json",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("3010") && err.contains("DIAMETER_UNKNOWN_PEER"),
        "{err}"
    );
    assert!(json_summary(&out)["error"]
        .as_str()
        .unwrap()
        .contains("3010"));
    assert_eq!(r.seen().requests, 0);

    // Nobody listens on a port we just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = run_bench(&[
        "--connect",
        &addr,
        "--template",
        t.to_str().unwrap(),
        "--count",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect"));

    // A broken template is refused before connecting, naming what is wrong.
    let bad = template_file(
        "bad",
        r#"{"cmd_code": 272, "app_id": 4, "avps": [{"User-Name": "{{nope}}"}]}"#,
    );
    let out = run_bench(&["--connect", &addr, "--template", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("{{nope}}"));
}

#[test]
fn print_request_shows_the_first_request_without_connecting() {
    let t = template_file("print", CCR);
    let out = run_bench(&[
        "--template",
        t.to_str().unwrap(),
        "--print-request",
        "--dest-realm",
        "ocs.realm",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let j: Json = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        (j["cmd_code"].as_u64(), j["flags"].as_str()),
        (Some(272), Some("RP"))
    );
    let avps = j["avps"].as_array().unwrap();
    assert_eq!(avps[0]["Session-Id"], "bench.test.local;0;0");
    assert!(avps.iter().any(|a| a["Destination-Realm"] == "ocs.realm"));
    assert!(avps
        .iter()
        .any(|a| a["Subscription-Id"][1]["Subscription-Id-Data"] == "491700"));
    let hex = lines.next().unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let m = Message::decode(bytes.into()).unwrap();
    assert_eq!(m.session_id(), Some("bench.test.local;0;0"));
    assert_eq!(m.avp_refs().count(), avps.len());
}

#[test]
fn interrupt_stops_sending_drains_and_reports() {
    let mut r = Responder::start("127.0.0.1:0", behaviour(|_| Fate::Answer(2001), 1)).unwrap();
    let t = template_file("int", CCR);
    let addr = r.addr.to_string();
    let child = Command::new(harness::dmbridge::bin_or(env!("CARGO_BIN_EXE_dmbridge")))
        .args([
            "bench",
            "--connect",
            &addr,
            "--template",
            t.to_str().unwrap(),
        ])
        .args(["--rate", "200", "--duration", "30", "--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Bench(Some(child));
    let pid = guard.0.as_ref().unwrap().id().to_string();
    // Wait until it is sending (the responder counts), then interrupt it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.seen.lock().unwrap().requests < 20 {
        assert!(Instant::now() < deadline, "the bench never started sending");
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while guard.0.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "SIGINT did not end the run");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = guard.0.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json_summary(&out);
    let sent = j["sent"].as_u64().unwrap();
    assert!((20..6000).contains(&sent), "{j}");
    assert_eq!(
        j["answered"].as_u64(),
        Some(sent),
        "drained: every request answered"
    );
    assert_eq!(j["unanswered"], 0);
    let seen = r.seen();
    assert_eq!(u64::from(seen.requests), sent);
    assert_eq!(seen.dpr, 1);
}
