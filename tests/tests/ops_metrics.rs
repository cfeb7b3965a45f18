//! Metrics end to end: `dmbridge run --echo` with `[metrics] listen` on loopback, a real
//! Prometheus (Debian's package) scraping it every 500 ms, `dmbridge bench` sending a counted
//! number of requests; PromQL through Prometheus' HTTP API must return exactly the counts the
//! client saw (requests in, answers out by Result-Code), the peer's state series and the
//! process metrics. Bounded: 3000 requests, waits of a few seconds.

use std::process::Command;
use std::time::Duration;

use harness::bridge::BridgeOptions;
use harness::dmbridge::dmbridge_bin;
use harness::paths::repo_root;
use harness::prometheus::{http_get, Prometheus};
use harness::{free_port, wait_for_port, TestDir};

const COUNT: u64 = 3000;

#[test]
fn prometheus_scrapes_the_counts_a_bench_run_caused() {
    let bin = dmbridge_bin().unwrap_or_else(|e| panic!("{e}"));
    let dir = TestDir::new("ops_metrics");
    let port = free_port();
    let mport = free_port();
    let opts = BridgeOptions {
        port,
        extra_toml: format!("\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"),
        ..BridgeOptions::default()
    };
    let (bridge, _config) = harness::dmbridge::run_echo(&bin, dir.path(), &opts);
    wait_for_port(mport, Duration::from_secs(5)).unwrap();

    // The exporter itself: OpenMetrics text, 404 elsewhere.
    let (status, body) = http_get(mport, "/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE dmbridge_requests counter"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert_eq!(http_get(mport, "/", Duration::from_secs(5)).unwrap().0, 404);

    let prom = Prometheus::start(
        dir.path(),
        &[format!("127.0.0.1:{mport}")],
        Duration::from_millis(500),
    );
    assert_eq!(
        prom.wait_value("up{job=\"dmbridge\"}", 1.0, Duration::from_secs(10)),
        Some(1.0),
        "Prometheus does not scrape the bridge"
    );

    // Load: a counted run.
    let out = Command::new(&bin)
        .args(["bench", "--connect"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--template")
        .arg(repo_root().join("cfg-examples/bench/test_app.json"))
        .args(["--concurrency", "50", "--json", "--quiet", "--count"])
        .arg(COUNT.to_string())
        .output()
        .unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench summary: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(summary["sent"], COUNT, "{summary}");
    assert_eq!(summary["answered"], COUNT, "{summary}");
    let ok = summary["result_codes"]["2001"].as_u64().unwrap_or(0);
    assert_eq!(ok, COUNT, "{summary}");

    let peer = "bench.test.local";
    let q_in = format!(
        "sum(dmbridge_requests_total{{job=\"dmbridge\",peer=\"{peer}\",direction=\"in\"}})"
    );
    assert_eq!(
        prom.wait_value(&q_in, COUNT as f64, Duration::from_secs(10)),
        Some(COUNT as f64),
        "{q_in}\n{}",
        bridge.tail(20)
    );
    let q_ans = format!(
        "sum(dmbridge_answers_total{{peer=\"{peer}\",direction=\"out\",result_code=\"2001\"}})"
    );
    assert_eq!(
        prom.wait_value(&q_ans, ok as f64, Duration::from_secs(10)),
        Some(ok as f64),
        "{q_ans}"
    );
    // The command label comes from the dictionary (test_app's request).
    let by_cmd = prom
        .query("sum by (command, app) (dmbridge_requests_total{direction=\"in\"})")
        .unwrap();
    assert_eq!(by_cmd.len(), 1, "{by_cmd:?}");
    assert_eq!(by_cmd[0]["metric"]["app"], "16777215", "{by_cmd:?}");
    // Process metrics.
    // Present, not necessarily above 0: the kernel counts a process's CPU in ticks of
    // 1/USER_HZ (10 ms), as Prometheus's own process collectors read it, and since the
    // one-thread runtime the bridge can start and answer these 3,000 requests in less than
    // one tick (a clean-clone CI run read 0).
    let cpu = prom
        .value("process_cpu_seconds_total{job=\"dmbridge\"}")
        .unwrap();
    assert!(
        matches!(cpu, Some(c) if c >= 0.0),
        "no process_cpu_seconds_total: {cpu:?}"
    );
    let rss = prom
        .value("process_resident_memory_bytes{job=\"dmbridge\"}")
        .unwrap()
        .unwrap_or(0.0);
    assert!(rss > 1e6, "resident memory {rss}");
    // No request of ours is pending.
    assert_eq!(
        prom.value("dmbridge_pending_requests{job=\"dmbridge\"}")
            .unwrap(),
        Some(0.0)
    );
}

/// `dmbridge_refusals_total{cause}` as the exporter says it now (0 when absent).
fn refusals(mport: u16, cause: &str) -> u64 {
    let (_, body) = http_get(mport, "/metrics", Duration::from_secs(5)).unwrap();
    let series = format!("dmbridge_refusals_total{{cause=\"{cause}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{l:?}: {e}", l = v))
        })
}

/// Refusals made outside the node loop (the connection's reader: a message over the pre-CER
/// size limit) and inside it (the peer table: no CER in time; the core: a framing error)
/// reach the exporter, each counted once under one cause (DESIGN §10: every refusal is
/// counted in metrics).
#[test]
fn every_refusal_reaches_the_exporter_once() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let bin = dmbridge_bin().unwrap_or_else(|e| panic!("{e}"));
    let dir = TestDir::new("ops_metrics_refusals");
    let port = free_port();
    let mport = free_port();
    let opts = BridgeOptions {
        port,
        timers: vec![("cer_timeout".into(), "1s".into())],
        extra_toml: format!("\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"),
        ..BridgeOptions::default()
    };
    let (bridge, _config) = harness::dmbridge::run_echo(&bin, dir.path(), &opts);
    wait_for_port(mport, Duration::from_secs(5)).unwrap();
    let causes = ["message_too_large", "cer_timeout", "frame_error"];
    for c in causes {
        assert_eq!(refusals(mport, c), 0, "{c} before any refusal");
    }
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    // The closed connection reads EOF or a reset; what came before it is returned.
    let read_to_close = |s: &mut TcpStream| {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    // A CER-less request header declaring 1 MiB: over the pre-CER limit, answered 5015.
    let mut s = connect();
    let mut head = vec![1u8, 0x10, 0, 0, 0x80, 0, 1, 1];
    head.extend_from_slice(&[0; 12]);
    s.write_all(&head).unwrap();
    let got = read_to_close(&mut s);
    assert!(got.len() >= 20, "no answer to the oversize header: {got:?}");
    // A frame of an unknown version: the peer's framing error.
    let mut s = connect();
    let mut bad = vec![2u8, 0, 0, 20, 0x80, 0, 1, 1];
    bad.extend_from_slice(&[0; 12]);
    s.write_all(&bad).unwrap();
    let _ = read_to_close(&mut s);
    // A silent connection: closed at the CER timeout.
    let mut s = connect();
    let t0 = std::time::Instant::now();
    let _ = read_to_close(&mut s);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "not closed at the CER timeout"
    );

    let want = [1u64, 1, 1];
    let mut got = [0u64; 3];
    for _ in 0..50 {
        got = causes.map(|c| refusals(mport, c));
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, want, "{causes:?}\n{}", bridge.tail(30));
    // Each once: nothing counted twice under another name.
    let (_, body) = http_get(mport, "/metrics", Duration::from_secs(5)).unwrap();
    let total: u64 = body
        .lines()
        .filter(|l| l.starts_with("dmbridge_refusals_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 3, "{body}");
}
