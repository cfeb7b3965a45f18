//! Scale-out (DESIGN §7, §9): a freeDiameter 1.2.1 DRA (`freeDiameterd` with `rt_default`
//! rules in its own syntax and `rt_busypeers`) in front of three SIP nodes, each a
//! `dmbridge run` with its own Origin-Host and a SIP-server stand-in (the C echo worker on
//! libdmbridge). `dmbridge bench` drives Ro credit-control sessions through the DRA:
//! CCR-Initial without Destination-Host (the DRA picks a node), then CCR-Update and
//! CCR-Terminate with the Destination-Host the CCA named (RFC 4006 §5.5: the session's
//! server).
//!
//! What must hold, counted by the bench: every follow-up is answered by the node that
//! answered its session's initial request; when a node dies mid-load, new sessions go to the
//! others and the follow-ups of the sessions bound to it get an error answer (3002 from the
//! node the DRA hands them to, which is not their destination: RFC 6733 §6.1), never a
//! silent wrong-node success, a timeout or a second answer; when a node's SIP server stops
//! (its bridge stays), it answers 3004 and the DRA retries the requests that were not bound
//! to it on another node, where they succeed.
//!
//! The requests bound to the busy node by Destination-Host come back as 3002 answered by the
//! *other* node, not as the busy node's 3004 (issue 11 item 6; the bench reports the
//! Origin-Host of every error answer, which is how this was established):
//! - RFC 6733 §7.1.3, DIAMETER_TOO_BUSY: "When returned, a Diameter node SHOULD attempt to
//!   send the message to an alternate peer. This error MUST only be used when a specific
//!   server is requested, and it cannot provide the requested service." A bound request is
//!   exactly the case 3004 is for, and the agent's retry is what the RFC asks of it.
//! - freeDiameter 1.2.1 `rt_busypeers` (`extensions/rt_busypeers/rtbusy.c`,
//!   `rt_busy_process_busy`) does that without looking at Destination-Host: on a 3004 with
//!   the E bit it removes the answering peer (and its Origin-Host) from the request's
//!   candidates (`fd_rtd_error_add`) and, while a candidate with a score >= 0 remains and
//!   `RetryMaxPeers` (0 = no limit) is not reached, sends the request again, dropping the
//!   3004. The DRA's routing (`score_destination_avp`: +15 for a peer in Destination-Realm;
//!   `rt_default`'s DEFAULT +5 here) leaves every other open node a candidate.
//! - The node that gets the retry is not the Destination-Host and is no relay, so RFC 6733
//!   §6.1 ("If none of the above is successful, an answer is returned with the Result-Code
//!   set to DIAMETER_UNABLE_TO_DELIVER, with the E-bit set") and DESIGN §9 make it answer
//!   3002, which `rt_busypeers` does not act on: the DRA forwards it to the client.
//!   The busy node's 3004 reaches the client only when no other node is open.
//!
//! (DESIGN §9 says the DRA "does not [re-route] when it was" the Destination-Host; with
//! rt_busypeers 1.2.1 it does, and the client sees 3002 from the node it landed on.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::bridge::{Bridge, BridgeApp, BridgeOptions};
use harness::dmbridge::dmbridge_bin;
use harness::echo_worker::build_c_echo_worker;
use harness::peers::{Dra, DraOptions};
use harness::wire::{code, dpr, encode_message, flags, Avp, RawClient, RawMessage};
use harness::{free_port, ChildGuard, Sig, TestDir};
use serde_json::Value as Json;

/// Ro / Diameter Credit-Control (RFC 4006): application 4, CCR/CCA 272.
const CC_APP: u32 = 4;

/// The DRA's routing, as an operator writes it for freeDiameter.
const RULES: &str = r#"# rt_default.conf: SIP nodes behind the DRA.
# New sessions (no Destination-Host): any SIP node of the realm; equal scores share.
dr="test.local" : ["^node[0-9]+\.test\.local$"] += DEFAULT ;
# Requests never go back to a client.
* : ["^bench"] += NO_DELIVERY ;
"#;

struct Node {
    host: String,
    bridge: Bridge,
    worker: Option<ChildGuard>,
}

fn start_node(dir: &Path, worker_prog: &Path, i: u32, workers: u32) -> Node {
    let host = format!("node{i}.test.local");
    let opts = BridgeOptions {
        origin_host: host.clone(),
        port: free_port(),
        applications: vec![BridgeApp {
            id: CC_APP,
            vendor: None,
            acct: false,
        }],
        ..BridgeOptions::default()
    };
    let mut bridge = Bridge::start(dir, &opts);
    let ctl = bridge
        .config_path()
        .parent()
        .expect("config has a directory")
        .join("control.sock");
    // Each worker answers a CCR with 2001 and the request's CC-Request-Number.
    let mut cmd = Command::new(worker_prog);
    cmd.arg(&ctl)
        .arg(workers.to_string())
        .arg("*")
        .arg("CC-Request-Number");
    let worker = ChildGuard::spawn(&format!("worker-{i}"), cmd, dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge.guard().output().matches(" handles [").count() < workers as usize {
        assert!(
            Instant::now() < deadline,
            "workers of {host} did not attach:\n{}",
            bridge.guard().tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Node {
        host,
        bridge,
        worker: Some(worker),
    }
}

fn start_dra(dir: &Path, nodes: &[Node]) -> Dra {
    let mut dra = Dra::start(
        dir,
        &DraOptions {
            port: free_port(),
            backends: nodes
                .iter()
                .map(|n| (n.host.clone(), n.bridge.port()))
                .collect(),
            rules: RULES.into(),
            // Defaults: retry a 3004 from a directly connected peer on every other candidate.
            busypeers: Some("# rt_busypeers defaults\n".into()),
            tw_seconds: 6,
            tc_seconds: 30,
        },
    );
    for n in nodes {
        dra.wait_peer_open(&n.host, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("DRA to {}: {e}", n.host));
    }
    dra
}

/// The CCR templates (DESIGN §8 message JSON): Initial, Update, Terminate.
fn write_templates(dir: &Path) -> Vec<PathBuf> {
    let ccr = |t: u32| {
        serde_json::json!({"cmd_code": 272, "app_id": CC_APP, "avps": [
            {"Session-Id": "{{session}}"},
            {"Auth-Application-Id": CC_APP},
            {"Service-Context-Id": "32260@3gpp.org"},
            {"CC-Request-Type": t},
            {"CC-Request-Number": t - 1},
            {"Subscription-Id": [{"Subscription-Id-Type": 0}, {"Subscription-Id-Data": "4670{{counter}}"}]}
        ]})
    };
    ["ccr-i", "ccr-u", "ccr-t"]
        .iter()
        .zip(1..)
        .map(|(name, t)| {
            let p = dir.join(format!("{name}.json"));
            std::fs::write(&p, ccr(t).to_string()).expect("write template");
            p
        })
        .collect()
}

/// Starts `dmbridge bench` through the DRA with sessions (I, U, T).
fn start_bench(
    dir: &Path,
    name: &str,
    dra: &Dra,
    templates: &[PathBuf],
    concurrency: u32,
    seconds: f64,
) -> ChildGuard {
    let bin = dmbridge_bin().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(bin);
    cmd.arg("bench")
        .arg("--connect")
        .arg(format!("127.0.0.1:{}", dra.port()))
        .arg("--origin-realm")
        .arg("clients.test.local")
        .arg("--template")
        .arg(&templates[0])
        .arg("--then")
        .arg(&templates[1])
        .arg("--then")
        .arg(&templates[2])
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--duration")
        .arg(seconds.to_string())
        .arg("--timeout-ms")
        .arg("4000")
        .arg("--json")
        .arg("--quiet");
    ChildGuard::spawn(name, cmd, dir)
}

/// One CCR-Update (RFC 4006 §3.1, as the bench's `ccr-u` template) bound to `dest_host`,
/// sent through the DRA by a client of its own, which then leaves with DPR/DPA; returns the
/// answer. Not as the bench's Origin-Host: the DRA would take the bench's next connection for
/// this one's successor and hold it in REOPEN (its answers not sent until three DWAs).
fn bound_followup(dra: &Dra, dest_host: &str) -> RawMessage {
    let me = ("probe.test.local", "clients.test.local");
    let mut c = RawClient::connect(dra.port(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to the DRA: {e}"));
    let cea = c
        .handshake(me.0, me.1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("CER to the DRA: {e}"));
    assert_eq!(cea.result_code(), Some(2001), "the DRA's CEA: {cea:?}");
    let id = c.next_id();
    let ccr = encode_message(
        flags::REQUEST | flags::PROXIABLE,
        272,
        CC_APP,
        id,
        id,
        &[
            Avp::str(
                code::SESSION_ID,
                "bench.test.local;scale-out;bound-followup",
            ),
            Avp::str(code::ORIGIN_HOST, me.0),
            Avp::str(code::ORIGIN_REALM, me.1),
            Avp::str(code::DESTINATION_REALM, "test.local"),
            Avp::str(code::DESTINATION_HOST, dest_host),
            Avp::u32(code::AUTH_APPLICATION_ID, CC_APP),
            Avp::str(461, "32260@3gpp.org"), // Service-Context-Id
            Avp::u32(416, 2),                // CC-Request-Type UPDATE_REQUEST
            Avp::u32(415, 1),                // CC-Request-Number
        ],
    );
    let answer = c
        .request(&ccr, id, me, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the bound CCR-Update through the DRA: {e}"));
    let id = c.next_id();
    let dpa = c
        .request(&dpr(me.0, me.1, id, id), id, me, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("DPR to the DRA: {e}"));
    assert_eq!(dpa.result_code(), Some(2001), "the DRA's DPA: {dpa:?}");
    answer
}

/// Waits for the bench to finish and returns its JSON summary.
fn bench_result(mut bench: ChildGuard, limit: Duration) -> Json {
    let st = bench
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("bench did not finish:\n{}", bench.tail(20)));
    let out = bench.stdout();
    let line = out.lines().last().unwrap_or_default();
    let j: Json = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("bench output ({st}) is not JSON: {e}\n{}", bench.tail(20)));
    eprintln!("bench: {j}");
    j
}

/// The hosts of a `{host: count}` object (empty when absent).
fn hosts(by_host: &Json) -> Vec<String> {
    by_host
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn n(j: &Json, path: &[&str]) -> u64 {
    let mut v = j;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or(0)
}

/// Items 5 and 6 of the scale-out contract, in one bounded run (~15 s of load).
#[test]
fn dra_keeps_sessions_on_their_node_and_reroutes_around_dead_and_busy_nodes() {
    let dir = TestDir::new("scale-out");
    let prog = build_c_echo_worker(dir.path());
    let templates = write_templates(dir.path());
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| start_node(dir.path(), &prog, i, 2))
        .collect();
    let dra = start_dra(dir.path(), &nodes);

    // Phase 1: sessions through the DRA; node2 is killed (SIGKILL) mid-load.
    let bench = start_bench(dir.path(), "bench-kill", &dra, &templates, 30, 4.0);
    std::thread::sleep(Duration::from_millis(1500));
    let killed = nodes[1].bridge.guard().signal(Sig::Kill);
    assert!(killed.is_ok(), "kill node2: {killed:?}");
    let j = bench_result(bench, Duration::from_secs(20));
    assert_eq!(j["failures"], serde_json::json!([]), "{j}");
    for k in ["timeouts", "unanswered", "unmatched_answers"] {
        assert_eq!(n(&j, &[k]), 0, "{k}: {j}");
    }
    assert_eq!(n(&j, &["sessions", "wrong_host"]), 0, "{j}");
    let by = &j["sessions"]["answers_by_origin_host"];
    for h in ["node1.test.local", "node2.test.local", "node3.test.local"] {
        assert!(by[h].as_u64().unwrap_or(0) > 0, "{h} served sessions: {j}");
    }
    // The sessions bound to node2 got an error answer: 3002 (not delivered), and only they,
    // answered by the surviving node the DRA handed them to (RFC 6733 §6.1), not by the DRA.
    let from_3002 = hosts(&j["errors_by_code_origin_host"]["3002"]);
    assert!(
        from_3002
            .iter()
            .all(|h| h == "node1.test.local" || h == "node3.test.local"),
        "3002 only from the surviving nodes: {j}"
    );
    let fe = n(&j, &["sessions", "followup_errors"]);
    // Whether the bench itself sends a follow-up bound to node2 after the kill depends on
    // where node2's sessions are at that instant (session 18, at load 15: none did, the
    // bench saw no error at all). One such follow-up, sent now that node2 is surely gone:
    // the DRA hands it to a surviving node, which answers 3002 (RFC 6733 §6.1).
    let a = bound_followup(&dra, "node2.test.local");
    assert_eq!(
        a.result_code(),
        Some(3002),
        "a follow-up bound to the dead node2: {a:?}"
    );
    assert!(
        matches!(
            a.origin_host().as_deref(),
            Some("node1.test.local" | "node3.test.local")
        ),
        "3002 from a surviving node, not the DRA: {a:?}"
    );
    assert_ne!(a.flags & flags::ERROR, 0, "3002 with the E bit: {a:?}");
    let errors = n(&j, &["errors"]);
    let by_code = j["errors_by_code"].as_object().cloned().unwrap_or_default();
    assert!(
        by_code.keys().all(|k| k == "3002"),
        "only 3002 DIAMETER_UNABLE_TO_DELIVER: {j}"
    );
    assert_eq!(
        errors, fe,
        "new sessions were all rerouted (no initial request failed): {j}"
    );
    assert!(
        n(&j, &["sessions", "completed"]) > 0 && n(&j, &["answered"]) == n(&j, &["sent"]),
        "{j}"
    );

    // Phase 2: node3's SIP server stops (its bridge stays up): node3 answers 3004; the DRA
    // (rt_busypeers) retries every such request on node1, the only other open node: those
    // without Destination-Host succeed there, the follow-ups bound to node3 are answered 3002
    // by node1 (see the module docs for why).
    let bench = start_bench(dir.path(), "bench-busy", &dra, &templates, 30, 4.0);
    std::thread::sleep(Duration::from_millis(1500));
    let mut w = nodes[2].worker.take().expect("node3 worker");
    w.stop(Duration::from_secs(5));
    let j = bench_result(bench, Duration::from_secs(20));
    assert_eq!(j["failures"], serde_json::json!([]), "{j}");
    for k in ["timeouts", "unanswered", "unmatched_answers"] {
        assert_eq!(n(&j, &[k]), 0, "{k}: {j}");
    }
    assert_eq!(n(&j, &["sessions", "wrong_host"]), 0, "{j}");
    // A request node3's worker held when it stopped is answered 5012 by node3 (DESIGN §9:
    // the worker took it and gave no answer), whether or not it was bound; node3's log
    // counts them, and the bench must see exactly that many, no more.
    let node3_log = nodes[2].bridge.guard().output();
    let held_5012: u64 = node3_log
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" gone: ")?;
            let (_, rest) = rest.split_once("; ")?;
            rest.split_once(" requests it held answered 5012")?
                .0
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(
        n(&j, &["errors_by_code", "5012"]),
        held_5012,
        "5012 only for the requests node3's worker held when it stopped: {j}"
    );
    let fe_busy = n(&j, &["sessions", "followup_errors"]);
    // Exactly who answers what: 3002 from node1 (the retry's landing place), 5012 from node3
    // (held requests), and no 3004 at all (rt_busypeers retried every one while node1 was
    // open, and dropped it).
    let by_host = &j["errors_by_code_origin_host"];
    let codes: Vec<&String> = by_host
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert!(
        codes.iter().all(|k| *k == "3002" || *k == "5012"),
        "only 3002 and 5012, no 3004 reaches the client: {j}"
    );
    assert!(
        hosts(&by_host["3002"])
            .iter()
            .all(|h| h == "node1.test.local"),
        "3002 answered by node1, where the DRA retried node3's 3004: {j}"
    );
    // Whether the bench itself sends a follow-up bound to node3 after its worker is gone
    // depends on where node3's sessions are at that instant: one whose request node3's
    // worker held ends with that 5012 (session 18, at load 13: all 7 node3 sessions did, and
    // the bench saw no 3002). One such follow-up, sent now that the worker is surely gone:
    // node3 answers 3004, the DRA retries it on node1, the only other open node, and node1
    // answers 3002 as it is not the Destination-Host (RFC 6733 §6.1).
    let a = bound_followup(&dra, "node3.test.local");
    assert_eq!(
        (a.result_code(), a.origin_host().as_deref()),
        (Some(3002), Some("node1.test.local")),
        "a follow-up bound to the busy node3: {a:?}"
    );
    assert_ne!(a.flags & flags::ERROR, 0, "3002 with the E bit: {a:?}");
    assert!(
        hosts(&by_host["5012"])
            .iter()
            .all(|h| h == "node3.test.local"),
        "5012 only from node3: {j}"
    );
    assert_eq!(
        n(
            &j,
            &[
                "sessions",
                "followup_errors_by_code_origin_host",
                "3002",
                "node1.test.local"
            ]
        ),
        n(&j, &["errors_by_code", "3002"]),
        "every 3002 is a follow-up bound to node3: {j}"
    );
    let fe_5012 = n(&j, &["sessions", "followup_errors_by_code", "5012"]);
    assert_eq!(
        n(&j, &["errors"]) - held_5012,
        fe_busy - fe_5012,
        "no request without Destination-Host failed: the DRA retried node3's 3004 elsewhere: {j}"
    );
    assert!(
        !node3_log.contains("panicked"),
        "node3 stays up:\n{node3_log}"
    );
}

/// Answers/s through the DRA with 1, 2 and 3 nodes (sessions I/U/T, 100 in flight, 5 s
/// each), printed for BENCHMARKS.md. Not a CI test: it only measures.
#[test]
#[ignore = "benchmark: prints answers/s through the DRA for 1, 2 and 3 nodes"]
fn dra_throughput_with_1_2_3_nodes() {
    let dir = TestDir::new("scale-out-bench");
    let prog = build_c_echo_worker(dir.path());
    let templates = write_templates(dir.path());
    let mut report = Vec::new();
    for count in 1..=3u32 {
        let nodes: Vec<Node> = (1..=count)
            .map(|i| start_node(dir.path(), &prog, i, 2))
            .collect();
        let dra = start_dra(dir.path(), &nodes);
        let bench = start_bench(
            dir.path(),
            &format!("bench-{count}"),
            &dra,
            &templates,
            100,
            5.0,
        );
        let j = bench_result(bench, Duration::from_secs(30));
        report.push(format!(
            "{count} node(s): {} answers/s, {} errors, {} timeouts, by node {}",
            j["answers_per_sec"],
            j["errors"],
            j["timeouts"],
            j["sessions"]["answers_by_origin_host"]
        ));
        drop(dra);
        drop(nodes);
    }
    for l in &report {
        println!("scale-out through freeDiameter DRA: {l}");
    }
}
