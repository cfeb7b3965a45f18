//! The admin socket under load: `dmbridge ctl` (peers, routes, status, reload, peer disable /
//! enable, log-level) and SIGHUP reloads against a running `dmbridge run --echo` while
//! `dmbridge bench` keeps 50 requests in flight on its own connection. The client counts:
//! every request answered exactly once (no timeout, nothing unanswered, no unmatched or
//! duplicate answer), and its connection never dropped. The configured peer is a real
//! Erlang/OTP diameter server: added by a reload, taken down by `peer disable` (DPR, stays
//! down), brought back by `peer enable`, removed by SIGHUP. A broken file is refused with its
//! line and the running configuration kept. Bounded: ~10 s of load, waits of seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use harness::bridge::BridgeOptions;
use harness::dmbridge::{dmbridge_bin, run_echo};
use harness::paths::repo_root;
use harness::peers::erlang::ErlangPeer;
use harness::{free_port, Sig, TestDir};
use serde_json::Value;

struct Ctl {
    bin: PathBuf,
    socket: PathBuf,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "ctl {args:?}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        if out.status.success() {
            Ok(v)
        } else {
            Err(v["error"].as_str().unwrap_or("?").to_string())
        }
    }

    fn peer(&self, host: &str) -> Option<Value> {
        self.json(&["peers"])
            .ok()?
            .as_array()?
            .iter()
            .find(|p| p["host"] == host)
            .cloned()
    }

    fn wait_peer(&self, host: &str, what: &str, ok: impl Fn(Option<&Value>) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let p = self.peer(host);
            if ok(p.as_ref()) {
                return p.unwrap_or(Value::Null);
            }
            assert!(Instant::now() < deadline, "peer {host}: not {what}: {p:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn write_config(path: &Path, opts: &BridgeOptions, dir: &Path) {
    std::fs::write(path, opts.to_toml(dir)).unwrap();
}

#[test]
fn reload_disable_enable_and_log_level_under_load_lose_nothing() {
    let bin = dmbridge_bin().unwrap_or_else(|e| panic!("{e}"));
    let dir = TestDir::new("ops_admin");
    let erl_port = free_port();
    let erl = ErlangPeer::server(dir.path(), erl_port, "ta");
    let erl_host = erl.host().to_string();

    let port = free_port();
    let base = BridgeOptions {
        port,
        ..BridgeOptions::default()
    };
    let (bridge, config) = run_echo(&bin, dir.path(), &base);
    let ctl = Ctl {
        bin: bin.clone(),
        socket: dir.join("admin.sock"),
    };
    // Owner-only socket.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&ctl.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "admin socket mode {mode:o}");

    // Load on its own connection for the whole test.
    let bench = {
        let bin = bin.clone();
        std::thread::spawn(move || {
            Command::new(bin)
                .args(["bench", "--connect"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--template")
                .arg(repo_root().join("cfg-examples/bench/test_app.json"))
                .args([
                    "--concurrency",
                    "50",
                    "--duration",
                    "10",
                    "--json",
                    "--quiet",
                ])
                .output()
                .unwrap()
        })
    };
    let bench_peer = "bench.test.local";
    ctl.wait_peer(bench_peer, "open", |p| {
        p.is_some_and(|p| p["state"] == "R-Open")
    });

    // 1. Reload adds a peer and a route: it connects; the bench connection stays.
    let with_erl = BridgeOptions {
        peers: vec![harness::bridge::BridgePeer {
            host: erl_host.clone(),
            port: Some(erl_port),
        }],
        default_route: vec![erl_host.clone()],
        ..base.clone()
    };
    write_config(&config, &with_erl, dir.path());
    let r = ctl.json(&["reload"]).unwrap();
    assert!(r.to_string().contains("added"), "{r}");
    ctl.wait_peer(&erl_host, "open", |p| {
        p.is_some_and(|p| p["state"] == "I-Open" && p["usable"] == true)
    });
    let routes = ctl.json(&["routes"]).unwrap();
    assert_eq!(routes["default_route"][0], erl_host.as_str(), "{routes}");
    let table = String::from_utf8(ctl.run(&["peers"]).stdout).unwrap();
    assert!(
        table.starts_with("PEER") && table.contains(&erl_host),
        "{table}"
    );

    // 2. Log filter changes at run time; a bad one is refused.
    ctl.json(&["log-level", "debug"]).unwrap();
    ctl.json(&["log-level", "info,dmnode::peer=debug"]).unwrap();
    let e = ctl.json(&["log-level", "dmnode=loud"]).unwrap_err();
    assert!(e.contains("loud"), "{e}");
    let status = ctl.json(&["status"]).unwrap();
    assert_eq!(status["log_filter"], "info,dmnode::peer=debug", "{status}");

    // 3. Disable: DPR to the peer, and it stays down; enable brings it back.
    ctl.json(&["peer", "disable", &erl_host]).unwrap();
    ctl.wait_peer(&erl_host, "closed", |p| {
        p.is_some_and(|p| p["state"] == "Closed" && p["disabled"] == true)
    });
    std::thread::sleep(Duration::from_secs(2));
    let p = ctl.peer(&erl_host).unwrap();
    assert_eq!(p["state"], "Closed", "a disabled peer reconnected: {p}");
    assert!(
        bridge.output().contains("disabled"),
        "no log line for the disable"
    );
    ctl.json(&["peer", "enable", &erl_host]).unwrap();
    ctl.wait_peer(&erl_host, "open again", |p| {
        p.is_some_and(|p| p["state"] == "I-Open" && p["disabled"] == false)
    });
    assert!(ctl.json(&["peer", "disable", "nobody.test.local"]).is_err());

    // 4. A broken file is refused with its line; the running configuration stays.
    std::fs::write(
        &config,
        format!("{}\n[[peers]]\nhost = 42\n", with_erl.to_toml(dir.path())),
    )
    .unwrap();
    let e = ctl.json(&["reload"]).unwrap_err();
    assert!(e.contains("dmbridge.toml:"), "no file:line in {e}");
    assert!(ctl.peer(&erl_host).is_some_and(|p| p["state"] == "I-Open"));

    // 5. SIGHUP with the peer removed: it is disconnected and leaves the table.
    write_config(&config, &base, dir.path());
    bridge.signal(Sig::Hup).unwrap();
    ctl.wait_peer(&erl_host, "removed", |p| p.is_none());
    assert!(ctl.peer(bench_peer).is_some_and(|p| p["state"] == "R-Open"));

    // The client's count: all answered once, its connection never dropped.
    let out = bench.join().unwrap();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench summary: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let sent = s["sent"].as_u64().unwrap();
    assert!(sent > 500, "too little load to mean anything: {s}");
    assert_eq!(s["answered"], sent, "{s}");
    assert_eq!(s["timeouts"], 0, "{s}");
    assert_eq!(s["unanswered"], 0, "{s}");
    assert_eq!(s["unmatched_answers"], 0, "{s}");
    assert_eq!(s["connections"], 1, "{s}");
    assert_eq!(s["result_codes"]["2001"], sent, "{s}");
    let log = bridge.output();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("reload refused"), "{log}");
}

/// A vendor AVP (Acme, vendor 99999) with the M bit, in a test_app request: accepted (2001)
/// when the running dictionary knows it, 5001 DIAMETER_AVP_UNSUPPORTED when not (RFC 6733
/// §7.1.5, unknown AVP with the M bit).
fn acme_request(c: &mut harness::wire::RawClient, code: u32) -> u32 {
    use harness::wire::{self, avp_flags, flags, test_app, Avp};
    let id = c.next_id();
    let req = wire::encode_message(
        flags::REQUEST | flags::PROXIABLE,
        test_app::CMD,
        test_app::APP_ID,
        id,
        id,
        &[
            Avp::str(
                wire::code::SESSION_ID,
                &format!("client.test.local;dict;{id}"),
            ),
            Avp::str(wire::code::ORIGIN_HOST, "client.test.local"),
            Avp::str(wire::code::ORIGIN_REALM, "test.local"),
            Avp::str(wire::code::DESTINATION_REALM, "test.local"),
            Avp::u32(code, 7)
                .vendor(99_999)
                .flags(avp_flags::VENDOR | avp_flags::MANDATORY),
        ],
    );
    let a = c
        .request(
            &req,
            id,
            ("client.test.local", "test.local"),
            Duration::from_secs(5),
        )
        .unwrap();
    a.result_code().unwrap_or(0)
}

#[test]
fn dictionary_reload_changes_what_is_accepted_and_a_bad_file_keeps_the_running_one() {
    let bin = dmbridge_bin().unwrap_or_else(|e| panic!("{e}"));
    let dir = TestDir::new("ops_dict_reload");
    let dict = dir.join("acme.dict");
    let acme = |attrs: &str| format!("VENDOR 99999 Acme\n{attrs}");
    std::fs::write(&dict, acme("ATTRIBUTE Acme-A 1001 unsigned32 99999\n")).unwrap();
    let port = free_port();
    let opts = BridgeOptions {
        port,
        dictionaries: vec![dict.clone()],
        ..BridgeOptions::default()
    };
    let (bridge, _config) = run_echo(&bin, dir.path(), &opts);
    let ctl = Ctl {
        bin: bin.clone(),
        socket: dir.join("admin.sock"),
    };
    // One connection for the whole test: a reload does not drop it.
    let mut c = harness::wire::RawClient::connect(port, Duration::from_secs(5)).unwrap();
    let cea = c
        .handshake("client.test.local", "test.local", Duration::from_secs(5))
        .unwrap();
    assert_eq!(cea.result_code(), Some(2001));
    assert_eq!(acme_request(&mut c, 1001), 2001, "known at start");
    assert_eq!(acme_request(&mut c, 1002), 5001, "unknown at start");

    // Unchanged files: nothing rebuilt.
    let r = ctl.json(&["reload"]).unwrap();
    assert_eq!(r["dictionaries"], "unchanged", "{r}");

    // The file changes: Acme-A goes, Acme-B comes; the running bridge follows.
    std::fs::write(&dict, acme("ATTRIBUTE Acme-B 1002 unsigned32 99999\n")).unwrap();
    let r = ctl.json(&["reload"]).unwrap();
    assert_eq!(r["dictionaries"], "reloaded", "{r}");
    assert_eq!(acme_request(&mut c, 1002), 2001, "Acme-B after the reload");
    assert_eq!(acme_request(&mut c, 1001), 5001, "Acme-A after the reload");

    // A bad file: refused with file and line, the running dictionary (with Acme-B) stays.
    std::fs::write(
        &dict,
        acme("ATTRIBUTE Acme-A 1001 unsigned32 99999\nATTRIBUTE Acme-C 1003 nosuchtype 99999\n"),
    )
    .unwrap();
    let e = ctl.json(&["reload"]).unwrap_err();
    assert!(e.contains("acme.dict:3"), "no file:line in {e}");
    assert_eq!(
        acme_request(&mut c, 1002),
        2001,
        "the running dictionary was kept"
    );
    assert_eq!(
        acme_request(&mut c, 1001),
        5001,
        "the refused file was not applied"
    );

    // SIGHUP does the same.
    std::fs::write(&dict, acme("ATTRIBUTE Acme-A 1001 unsigned32 99999\n")).unwrap();
    bridge.signal(Sig::Hup).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge.output().matches("configuration reloaded").count() < 3 {
        assert!(Instant::now() < deadline, "{}", bridge.tail(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(acme_request(&mut c, 1001), 2001, "Acme-A after SIGHUP");
    assert_eq!(acme_request(&mut c, 1002), 5001, "Acme-B after SIGHUP");
    let log = bridge.output();
    assert!(log.contains("reload refused"), "{log}");
}

/// JSON log lines written while the node acts for a peer carry its context as tracing spans:
/// `peer{host}` and, inside it, `conn{id}` — the same connection id on its open and its close.
#[test]
fn json_log_lines_in_a_peer_context_carry_the_peer_and_connection_spans() {
    let bin = dmbridge_bin().unwrap_or_else(|e| panic!("{e}"));
    let dir = TestDir::new("ops_spans");
    let port = free_port();
    let opts = BridgeOptions {
        port,
        extra_toml: "\n[log]\nformat = \"json\"\nlevel = \"info\"\n".into(),
        ..BridgeOptions::default()
    };
    let (bridge, _config) = run_echo(&bin, dir.path(), &opts);
    let host = "spans.test.local";
    let mut c = harness::wire::RawClient::connect(port, Duration::from_secs(5)).unwrap();
    let cea = c
        .handshake(host, "test.local", Duration::from_secs(5))
        .unwrap();
    assert_eq!(cea.result_code(), Some(2001));
    drop(c);
    // The lines of this peer, by message, once both are there.
    let find = |message: &str| -> Option<Value> {
        bridge
            .output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| {
                v["message"] == message
                    && v["spans"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s["host"] == host))
            })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (open, closed) = loop {
        match (
            find("peer open (capabilities exchanged)"),
            find("peer down").or_else(|| find("peer connection closed")),
        ) {
            (Some(o), Some(c)) => break (o, c),
            _ => {
                assert!(Instant::now() < deadline, "{}", bridge.tail(20));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    for line in [&open, &closed] {
        let spans = line["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2, "{line}");
        assert_eq!(spans[0]["name"], "peer", "{line}");
        assert_eq!(spans[0]["host"], host, "{line}");
        assert_eq!(spans[1]["name"], "conn", "{line}");
        assert!(spans[1]["id"].is_u64(), "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
    }
    assert_eq!(open["spans"][1]["id"], closed["spans"][1]["id"]);
}
