//! `dmbridge bench` against real third-party Diameter servers: freeDiameter's test_app and
//! Erlang/OTP diameter's test_app-compatible server. Bounded by `--count`; the servers and
//! the bench are stopped by their guards, also when a test fails. Counts are asserted, never
//! speed (that goes to BENCHMARKS.md).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use harness::dmbridge::dmbridge_bin;
use harness::paths::repo_root;
use harness::peers::erlang::ErlangPeer;
use harness::peers::freediameter::FreeDiameter;
use harness::{free_port, ChildGuard, TestDir};
use serde_json::Value as Json;

fn test_app_template() -> PathBuf {
    repo_root().join("cfg-examples/bench/test_app.json")
}

/// Runs the bench to completion (killed after 60 s) and returns its `--json` summary.
fn bench(dir: &TestDir, port: u16, args: &[&str]) -> Json {
    let bin = dmbridge_bin().unwrap_or_else(|e| panic!("dmbridge binary: {e}"));
    let mut cmd = Command::new(bin);
    cmd.arg("bench")
        .args(["--connect", &format!("127.0.0.1:{port}")])
        .arg("--template")
        .arg(test_app_template())
        .args(["--json", "--quiet"])
        .args(args);
    let mut guard = ChildGuard::spawn("dmbridge-bench", cmd, dir.path());
    let status = guard
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("dmbridge bench did not finish in 60 s\n{}", guard.tail(20)));
    assert!(
        status.success(),
        "dmbridge bench failed: {status}\n{}",
        guard.tail(20)
    );
    let out = guard.stdout();
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("--json is not one JSON object ({e}): {out}"))
}

#[test]
fn bench_against_freediameter_test_app() {
    let dir = TestDir::new("bench-freediameter");
    let port = free_port();
    let mut server = FreeDiameter::server(dir.path(), port);
    let j = bench(
        &dir,
        port,
        &[
            "--count",
            "3000",
            "--concurrency",
            "50",
            "--connections",
            "2",
        ],
    );
    assert_eq!(j["sent"], 3000, "{j}");
    assert_eq!(j["answered"], 3000, "{j}");
    assert_eq!(j["result_codes"], serde_json::json!({"2001": 3000}), "{j}");
    assert_eq!(j["timeouts"], 0, "{j}");
    assert_eq!(j["unanswered"], 0, "{j}");
    // freeDiameter saw our capabilities and our DPR on both connections.
    let log = server.log();
    assert!(
        log.matches("Peer 'bench.test.local' sent a DPR").count() >= 1,
        "{}",
        server.guard().tail(30)
    );
    assert!(
        log.contains("Product-Name(269)[--]=\"dmbridge bench\"")
            || log.contains("bench.test.local")
    );
}

#[test]
fn bench_against_erlang_diameter() {
    let dir = TestDir::new("bench-erlang");
    let port = free_port();
    let _server = ErlangPeer::server(dir.path(), port, "ta");
    let j = bench(&dir, port, &["--count", "1000", "--concurrency", "20"]);
    assert_eq!(j["sent"], 1000, "{j}");
    assert_eq!(j["answered"], 1000, "{j}");
    assert_eq!(j["result_codes"], serde_json::json!({"2001": 1000}), "{j}");
    assert_eq!(j["timeouts"], 0, "{j}");
}
