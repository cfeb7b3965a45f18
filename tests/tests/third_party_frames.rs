//! Frames produced by real third-party Diameter stacks decode correctly (issue 2, "Must
//! show"): freeDiameter and Erlang/OTP `diameter` talk to each other on loopback while dumpcap
//! records; every message that crossed the wire is decoded by `dmproto::Message::decode` and
//! compared, header field by header field and AVP by AVP, with tshark's decoding.
//!
//! A handful of the captured frames are kept in `tests/fixtures/frames/*.hex` for a fast test
//! that needs no peer (`DMBRIDGE_UPDATE_FIXTURES=1` rewrites them from a live run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::capture::{diameter_messages, Capture, WireMessage};
use harness::oracle::compare_decode_with_tshark;
use harness::peers::{ErlClientOptions, ErlangPeer, FdOptions, FreeDiameter};
use harness::tshark::{
    decode_offline, decode_pcap, is_unknown_to_dictionary, TsMessage, EXPERT_WARN,
};
use harness::wire::{self, code, test_app, RawMessage};
use harness::{free_port, TestDir};

const TEST_REQUESTS: usize = 3;

/// A short label for a message kind: command abbreviation plus R/A.
fn label(m: &RawMessage) -> String {
    let name = match m.cmd_code {
        257 => "CE",
        280 => "DW",
        282 => "DP",
        271 => "AC",
        test_app::CMD => "T",
        other => return format!("{other}{}", if m.is_request() { "R" } else { "A" }),
    };
    format!("{name}{}", if m.is_request() { "R" } else { "A" })
}

/// Decodes every message with tshark and with dmproto and asserts they agree; returns
/// tshark's view and the count of each kind.
fn check_against_tshark(
    dir: &Path,
    name: &str,
    msgs: &[Vec<u8>],
) -> (Vec<TsMessage>, BTreeMap<String, usize>) {
    let decoded = decode_offline(dir, name, msgs);
    let mut kinds = BTreeMap::new();
    let mut values = 0;
    for (bytes, ts) in msgs.iter().zip(&decoded) {
        let raw =
            RawMessage::parse(bytes).unwrap_or_else(|e| panic!("{name} frame {}: {e}", ts.frame));
        *kinds.entry(label(&raw)).or_insert(0) += 1;
        let problems = ts.problems(EXPERT_WARN, is_unknown_to_dictionary);
        assert!(
            problems.is_empty(),
            "{name}: tshark objects to a third-party frame: {problems:?}"
        );
        let cmp = compare_decode_with_tshark(bytes, ts);
        cmp.assert_ok(&format!("{name} frame {} ({})", ts.frame, label(&raw)));
        values += cmp.values;
        for n in &cmp.notes {
            eprintln!("[{name} frame {}] note: {n}", ts.frame);
        }
    }
    assert!(
        values >= msgs.len(),
        "{name}: only {values} AVP values compared over {} messages",
        msgs.len()
    );
    (decoded, kinds)
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("frames")
}

/// With `DMBRIDGE_UPDATE_FIXTURES` set, keeps the first message of each kind as a fixture.
fn maybe_update_fixtures(source: &str, msgs: &[WireMessage]) {
    if std::env::var_os("DMBRIDGE_UPDATE_FIXTURES").is_none() {
        return;
    }
    let mut seen = BTreeMap::new();
    for m in msgs {
        if let Ok(raw) = RawMessage::parse(&m.bytes) {
            seen.entry(label(&raw))
                .or_insert_with(|| wire::to_hex(&m.bytes));
        }
    }
    let mut text = format!(
        "# Diameter frames captured from {source} on loopback (tests/tests/third_party_frames.rs).\n\
         # One frame per line: <kind> <hex>. Regenerate with DMBRIDGE_UPDATE_FIXTURES=1.\n"
    );
    for (k, hex) in seen {
        text.push_str(&format!("{k} {hex}\n"));
    }
    std::fs::create_dir_all(fixtures_dir()).unwrap();
    std::fs::write(fixtures_dir().join(format!("{source}.hex")), text).unwrap();
}

fn both_directions(msgs: &[WireMessage]) -> Vec<Vec<u8>> {
    msgs.iter().map(|m| m.bytes.clone()).collect()
}

#[test]
fn freediameter_frames_decode_like_tshark() {
    let dir = TestDir::new("fd-frames");
    let server_port = free_port();
    let client_port = free_port();
    let capture = Capture::start(dir.path(), server_port);

    // Tw = 6 s (freeDiameter's minimum) so a DWR/DWA exchange happens within the test.
    let mut server = FreeDiameter::start(
        dir.path(),
        FdOptions {
            port: server_port,
            tw_seconds: Some(6),
            ..FdOptions::default()
        },
    );
    let mut client = FreeDiameter::start(
        dir.path(),
        FdOptions {
            tw_seconds: Some(6),
            ..FdOptions::client(client_port, server_port, None)
        },
    );
    client
        .wait_peer_open("server.test.local", Duration::from_secs(10))
        .unwrap();
    for i in 1..=TEST_REQUESTS {
        client.send_test_request();
        let answers = client.wait_answers(i, Duration::from_secs(5)).unwrap();
        assert!(answers[i - 1].contains("Status: 2001"), "{answers:?}");
    }
    // Wait for the watchdog: freeDiameter sends DWR 4-7 s after the last traffic. Nothing
    // else is sent meanwhile, so once dumpcap's counter (updated every ~0.5 s) has settled,
    // two more packets are the DWR and its DWA.
    std::thread::sleep(Duration::from_millis(1200));
    let before = capture.packets();
    capture
        .wait_packets(before + 2, Duration::from_secs(10))
        .unwrap();
    client.stop(Duration::from_secs(5)); // SIGTERM: the client sends DPR first
    server.stop(Duration::from_secs(5));
    let pcap = capture.stop();

    let msgs = diameter_messages(&pcap);
    let live = decode_pcap(&pcap, &[server_port]);
    assert_eq!(
        live.len(),
        msgs.len(),
        "tshark and the harness framer count different messages"
    );
    maybe_update_fixtures("freediameter", &msgs);
    let (decoded, kinds) =
        check_against_tshark(dir.path(), "freediameter", &both_directions(&msgs));

    for k in ["CER", "CEA", "DWR", "DWA", "DPR", "DPA"] {
        assert!(kinds.contains_key(k), "no {k} captured: {kinds:?}");
    }
    assert_eq!(kinds.get("TR"), Some(&TEST_REQUESTS), "{kinds:?}");
    assert_eq!(kinds.get("TA"), Some(&TEST_REQUESTS), "{kinds:?}");
    // Semantics, through the independent parser: answers echo the request's Test-AVP.
    let mut requests = BTreeMap::new();
    for m in &msgs {
        let raw = RawMessage::parse(&m.bytes).unwrap();
        let tavp = raw
            .find(test_app::TEST_AVP, Some(test_app::VENDOR_ID))
            .and_then(|a| a.as_i32());
        if raw.cmd_code == test_app::CMD && raw.is_request() {
            requests.insert(raw.hbh, tavp);
        }
    }
    for m in &msgs {
        let raw = RawMessage::parse(&m.bytes).unwrap();
        if raw.cmd_code == test_app::CMD && !raw.is_request() {
            assert_eq!(raw.result_code(), Some(2001));
            let tavp = raw
                .find(test_app::TEST_AVP, Some(test_app::VENDOR_ID))
                .and_then(|a| a.as_i32());
            assert_eq!(
                requests.get(&raw.hbh),
                Some(&tavp),
                "answer does not echo its request's Test-AVP"
            );
        }
    }
    let cea = decoded
        .iter()
        .find(|d| d.cmd_code == 257 && !d.is_request())
        .unwrap();
    assert_eq!(cea.value("Result-Code"), Some("2001"));
    assert_eq!(cea.value("Origin-Host"), Some("server.test.local"));
    assert_eq!(cea.value("Product-Name"), Some("freeDiameter"));
}

#[test]
fn erlang_frames_decode_like_tshark() {
    let dir = TestDir::new("erl-frames");
    let port = free_port();
    let capture = Capture::start(dir.path(), port);
    let _server = ErlangPeer::server(dir.path(), port, "ta,acct");
    let opts = |app: &str, host: &str| ErlClientOptions {
        rport: port,
        n: TEST_REQUESTS as u32,
        k: 1,
        duration: 10,
        app: app.into(),
        host: host.into(),
        ..ErlClientOptions::default()
    };
    let mut ta = ErlangPeer::client(dir.path(), &opts("ta", "erlta.test.local"));
    let mut acct = ErlangPeer::client(dir.path(), &opts("acct", "erlacct.test.local"));
    // OTP diameter (this version) sometimes drops a request that reaches the server in the
    // same instant as its CEA goes out (seen on a loaded machine: the client's first ACR, sent
    // 0.2 ms after the CEA, never answered, the client timed out after 5 s). This test is
    // about decoding the frames, so one such loss is tolerated; every request must still be
    // on the wire and every answer must match one.
    for c in [&mut ta, &mut acct] {
        let r = c.wait_result().unwrap();
        assert_eq!(r.ok + r.err, TEST_REQUESTS as u64, "{}", r.line);
        assert!(r.ok + 1 >= TEST_REQUESTS as u64, "{}", r.line);
        c.guard().wait_exit(Duration::from_secs(5));
    }
    let pcap = capture.stop();

    let msgs = diameter_messages(&pcap);
    maybe_update_fixtures("erlang", &msgs);
    let (decoded, kinds) = check_against_tshark(dir.path(), "erlang", &both_directions(&msgs));
    let order: Vec<String> = msgs
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m.stream,
                label(&RawMessage::parse(&m.bytes).unwrap())
            )
        })
        .collect();
    for k in ["CER", "CEA"] {
        assert_eq!(kinds.get(k), Some(&2), "{kinds:?} in {order:?}");
    }
    for k in ["TR", "ACR"] {
        assert_eq!(kinds.get(k), Some(&TEST_REQUESTS), "{kinds:?} in {order:?}");
    }
    for k in ["TA", "ACA"] {
        let n = kinds.get(k).copied().unwrap_or(0);
        assert!(n + 1 >= TEST_REQUESTS, "{kinds:?} in {order:?}");
    }
    let requests: std::collections::BTreeSet<(u32, u32, u32)> = msgs
        .iter()
        .filter_map(|m| RawMessage::parse(&m.bytes).ok().map(|r| (m, r)))
        .filter(|(_, r)| r.is_request())
        .map(|(m, r)| (m.stream, r.hbh, r.e2e))
        .collect();
    for m in &msgs {
        let r = RawMessage::parse(&m.bytes).unwrap();
        if !r.is_request() {
            assert!(
                requests.contains(&(m.stream, r.hbh, r.e2e)),
                "answer without request: {r:?}"
            );
        }
    }
    let aca: Vec<&TsMessage> = decoded
        .iter()
        .filter(|d| d.cmd_code == wire::cmd::ACR && !d.is_request())
        .collect();
    let mut numbers: Vec<&str> = aca
        .iter()
        .filter_map(|d| d.value("Accounting-Record-Number"))
        .collect();
    numbers.sort_unstable();
    assert!(numbers.len() + 1 >= TEST_REQUESTS, "{numbers:?}");
    for d in &aca {
        assert_eq!(d.value("Result-Code"), Some("2001"));
        assert_eq!(d.value("Origin-Host"), Some("erlserver.test.local"));
        assert_eq!(d.value("Accounting-Record-Type"), Some("2"));
    }
    let _ = code::SESSION_ID;
}

fn fixture_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap_or_else(|e| panic!("{}: {e}", fixtures_dir().display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected fixtures from freeDiameter and Erlang: {files:?}"
    );
    files
}

/// Reads `<kind> <hex>` lines, checking each kind label against the frame.
fn read_fixture(f: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(f).unwrap();
    let mut msgs = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (kind, hex) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("{}: bad line {line:?}", f.display()));
        let bytes = wire::from_hex(hex).unwrap();
        assert_eq!(
            label(&RawMessage::parse(&bytes).unwrap()),
            kind,
            "{}",
            f.display()
        );
        msgs.push(bytes);
    }
    assert!(
        msgs.len() >= 6,
        "{}: only {} frames",
        f.display(),
        msgs.len()
    );
    msgs
}

/// The saved frames, without any peer: dmproto agrees with tshark and with the harness's own
/// parser on every one.
#[test]
fn saved_third_party_frames_decode_like_tshark() {
    let dir = TestDir::new("fixture-frames");
    for f in fixture_files() {
        let msgs = read_fixture(&f);
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let (decoded, _) = check_against_tshark(dir.path(), &name, &msgs);
        for (bytes, ts) in msgs.iter().zip(&decoded) {
            // dmproto's DESIGN §8 JSON (what `dmbridge decode` prints) agrees with tshark.
            let msg = dmproto::Message::decode(bytes::Bytes::copy_from_slice(bytes)).unwrap();
            let mut json = String::new();
            dmproto::json::write_message(&mut json, &msg, dmproto::dict::Dictionary::builtin())
                .unwrap_or_else(|e| panic!("{name} frame {}: write_message: {e}", ts.frame));
            let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
            harness::oracle::compare_json_with_tshark(&doc, ts)
                .assert_ok(&format!("dmproto JSON, {name} frame {}", ts.frame));
        }
        for bytes in &msgs {
            // dmproto and the harness parser agree on the AVP layout too.
            let ours = dmproto::Message::decode(bytes::Bytes::copy_from_slice(bytes)).unwrap();
            let theirs = RawMessage::parse(bytes).unwrap().avps().unwrap();
            let top: Vec<(u32, u32, usize)> = ours
                .avp_refs()
                .map(|a| a.unwrap())
                .map(|a| (a.code, a.vendor, a.data.len()))
                .collect();
            let raw: Vec<(u32, u32, usize)> = theirs
                .iter()
                .map(|a| (a.code, a.vendor.unwrap_or(0), a.data.len()))
                .collect();
            assert_eq!(top, raw);
        }
    }
}

/// `dmbridge decode` (DESIGN §8) on the saved third-party frames, as raw binary (all frames
/// of a file concatenated: one JSON document per line out) and as `--hex`: each document
/// agrees with tshark. Runs once the subcommand exists.
#[test]
fn saved_third_party_frames_decode_with_the_dmbridge_binary() {
    let bin =
        harness::dmbridge::dmbridge_bin().unwrap_or_else(|e| panic!("cannot build dmbridge: {e}"));
    if !harness::dmbridge::has_subcommand(&bin, "decode") {
        eprintln!("dmbridge has no decode subcommand yet; nothing to run");
        return;
    }
    let dir = TestDir::new("fixture-frames-bin");
    for f in fixture_files() {
        let msgs = read_fixture(&f);
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let decoded = decode_offline(dir.path(), &name, &msgs);
        let all: Vec<u8> = msgs.concat();
        let binary = run_tool(&bin, &["decode"], &all);
        let hex = run_tool(&bin, &["decode", "--hex"], wire::to_hex(&all).as_bytes());
        assert_eq!(binary, hex, "{name}: decode and decode --hex differ");
        let docs: Vec<serde_json::Value> = String::from_utf8(binary)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}"))
            })
            .collect();
        assert_eq!(
            docs.len(),
            msgs.len(),
            "{name}: one JSON document per message"
        );
        for (doc, ts) in docs.iter().zip(&decoded) {
            let cmp = harness::oracle::compare_json_with_tshark(doc, ts);
            cmp.assert_ok(&format!("dmbridge decode, {name} frame {}", ts.frame));
        }
    }
}

fn run_tool(bin: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dmbridge {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
