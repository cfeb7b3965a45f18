//! The `dmbridge decode | encode | dict` binaries, run as a user runs them (DESIGN §8).
//!
//! Every child is waited for with a deadline and killed by its guard on the way out, also
//! when an assertion fails; inputs live in a per-test directory removed on drop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dmproto::{samples, Flags, Header, MessageWriter};

/// A scratch directory for one test, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tools-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create test dir");
        TestDir(p)
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).expect("write test input");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the child (by PID, through its handle) unless it was reaped.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Out {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }
}

/// Runs `dmbridge args...` with `stdin` (a file in `dir`), for at most 30 s.
fn run(dir: &TestDir, args: &[&str], stdin: &[u8]) -> Out {
    // One stdin file per run (a name made of the arguments outgrows NAME_MAX with paths).
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let input = dir.file(&format!("stdin-{n}"), stdin);
    let child = Command::new(harness::dmbridge::bin_or(env!("CARGO_BIN_EXE_dmbridge")))
        .args(args)
        .stdin(std::fs::File::open(&input).expect("open stdin file"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dmbridge");
    let mut guard = ChildGuard(Some(child));
    let c = guard.0.as_mut().expect("child");
    // Read the pipes on threads so a large output cannot block the child.
    let mut so = c.stdout.take().expect("stdout");
    let mut se = c.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = c.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "dmbridge {args:?} did not finish in 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    guard.0 = None;
    Out {
        ok: status.success(),
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A small CCR built by hand, and its JSON as DESIGN §8 spells it.
fn small_ccr() -> (Bytes, &'static str) {
    let mut w = MessageWriter::new(Header {
        flags: Flags(Flags::R | Flags::P),
        ..Header::request(272, 4, 1, 2)
    });
    w.str(263, 0x40, 0, "a;1")
        .u32(416, 0x40, 0, 1)
        .group(443, 0x40, 0, |w| {
            w.u32(450, 0x40, 0, 0).str(444, 0x40, 0, "123");
        })
        .avp(999_999, 0, 10415, &[0xDE, 0xAD]);
    (
        w.finish().expect("encodes"),
        r#"{"cmd_code":272,"app_id":4,"flags":"RP","hop_by_hop":1,"end_to_end":2,"avps":[{"Session-Id":"a;1"},{"CC-Request-Type":1},{"Subscription-Id":[{"Subscription-Id-Type":0},{"Subscription-Id-Data":"123"}]},{"999999:10415":{"hex":"dead"}}]}"#,
    )
}

#[test]
fn decode_binary_from_stdin_and_file() {
    let dir = TestDir::new("decode-bin");
    let (wire, json) = small_ccr();
    let o = run(&dir, &["decode"], &wire);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.text(), format!("{json}\n"));
    let f = dir.file("ccr.bin", &wire);
    let o = run(&dir, &["decode", f.to_str().unwrap()], b"");
    assert_eq!(o.text(), format!("{json}\n"));
    let o = run(&dir, &["decode", "-"], &wire);
    assert_eq!(o.text(), format!("{json}\n"));
}

#[test]
fn decode_concatenated_messages_one_line_each() {
    let dir = TestDir::new("decode-many");
    let (wire, json) = small_ccr();
    let dwr = samples::dwr();
    let all = [&wire[..], &dwr[..], &wire[..]].concat();
    let o = run(&dir, &["decode"], &all);
    assert!(o.ok, "{}", o.stderr);
    let text = o.text();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], json);
    assert!(
        lines[1].starts_with(r#"{"cmd_code":280,"app_id":0,"flags":"R","#),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], json);
}

#[test]
fn decode_hex_ignores_whitespace() {
    let dir = TestDir::new("decode-hex");
    let (wire, json) = small_ccr();
    let mut spaced = String::new();
    for (i, pair) in hex(&wire).as_bytes().chunks(2).enumerate() {
        spaced.push_str(std::str::from_utf8(pair).unwrap());
        spaced.push(if i % 16 == 15 { '\n' } else { ' ' });
    }
    let o = run(&dir, &["decode", "--hex"], spaced.as_bytes());
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.text(), format!("{json}\n"));
}

#[test]
fn decode_bad_input_names_the_offset() {
    let dir = TestDir::new("decode-bad");
    let (wire, json) = small_ccr();
    // A truncated second message: the first is still printed, then the error.
    let n = wire.len();
    let cut = [&wire[..], &wire[..n - 8]].concat();
    let o = run(&dir, &["decode"], &cut);
    assert!(!o.ok);
    assert_eq!(o.text(), format!("{json}\n"));
    assert_eq!(
        o.stderr.trim(),
        format!(
            "dmbridge decode: truncated message at offset {n}: its length is {n} bytes but only {} remain",
            n - 8
        )
    );
    // An AVP whose length overruns the message: the AVP's offset in the input.
    let mut bad = wire.to_vec();
    bad[20 + 5..20 + 8].copy_from_slice(&[0, 0x10, 0]);
    let input = [&wire[..], &bad[..]].concat();
    let o = run(&dir, &["decode"], &input);
    assert!(!o.ok);
    assert_eq!(
        o.stderr.trim(),
        format!(
            "dmbridge decode: message at offset {n}: AVP length runs past the end of its container at offset {} (AVP code 263, vendor 0)",
            n + 20
        )
    );
    // Bad hex.
    let o = run(&dir, &["decode", "--hex"], b"0100 00zz");
    assert!(!o.ok);
    assert_eq!(
        o.stderr.trim(),
        "dmbridge decode: invalid hex character 'z' at byte 7 of the input"
    );
    // Not Diameter at all.
    let o = run(&dir, &["decode"], b"GET / HTTP/1.1\r\n\r\n....");
    assert!(!o.ok);
    assert!(
        o.stderr
            .contains("message at offset 0: unsupported Diameter version 71"),
        "{}",
        o.stderr
    );
    // A missing file.
    let o = run(&dir, &["decode", "/nonexistent/x.bin"], b"");
    assert!(!o.ok);
    assert!(
        o.stderr
            .starts_with("dmbridge decode: /nonexistent/x.bin: "),
        "{}",
        o.stderr
    );
}

#[test]
fn encode_binary_and_hex() {
    let dir = TestDir::new("encode");
    let (wire, json) = small_ccr();
    let o = run(&dir, &["encode"], json.as_bytes());
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, wire.to_vec());
    let o = run(&dir, &["encode", "--hex"], json.as_bytes());
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.text(), format!("{}\n", hex(&wire)));
    // Names, numbers and pretty-printing are all accepted on input.
    let pretty = r#"{
      "cmd_code": 272, "app_id": 4, "flags": "PR", "hop_by_hop": 1, "end_to_end": 2,
      "avps": [
        {"263": "a;1"},
        {"CC-Request-Type": "INITIAL_REQUEST"},
        {"Subscription-Id": [{"Subscription-Id-Type": 0}, {"Subscription-Id-Data": "123"}]},
        {"999999:10415": {"base64": "3q0="}}
      ]
    }"#;
    let o = run(&dir, &["encode"], pretty.as_bytes());
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout, wire.to_vec());
}

#[test]
fn encode_bad_input_names_the_json_path() {
    let dir = TestDir::new("encode-bad");
    let o = run(
        &dir,
        &["encode"],
        br#"{"cmd_code":272,"app_id":4,"flags":"R","avps":[{"Session-Id":"s"},{"Subscription-Id":[{"Subscription-Id-Type":0},{"Subscription-Id-Data":5}]}]}"#,
    );
    assert!(!o.ok);
    assert!(o.stdout.is_empty(), "nothing written on error");
    assert_eq!(
        o.stderr.trim(),
        "dmbridge encode: avps[1].Subscription-Id[1].Subscription-Id-Data: expected string at byte 137"
    );
    let o = run(&dir, &["encode"], br#"{"cmd_code":272,"app_id":4}"#);
    assert!(!o.ok);
    assert_eq!(
        o.stderr.trim(),
        "dmbridge encode: missing member \"flags\" at byte 27"
    );
    let o = run(&dir, &["encode"], b"\xff");
    assert!(!o.ok);
    assert_eq!(
        o.stderr.trim(),
        "dmbridge encode: input is not UTF-8 (at byte 0)"
    );
}

#[test]
fn decode_then_encode_gives_back_every_sample() {
    let dir = TestDir::new("roundtrip");
    for (name, wire) in samples::all() {
        let o = run(&dir, &["decode"], &wire);
        assert!(o.ok, "{name}: {}", o.stderr);
        let json = o.text();
        assert_eq!(json.lines().count(), 1, "{name}");
        let o = run(&dir, &["encode"], json.as_bytes());
        assert!(o.ok, "{name}: {}", o.stderr);
        if json.contains("\"hex\"") {
            // An AVP the dictionary does not know (yet) loses its M bit; the JSON survives.
            let again = run(&dir, &["decode"], &o.stdout);
            assert_eq!(again.text(), json, "{name}");
        } else {
            assert_eq!(o.stdout, wire.to_vec(), "{name}");
        }
    }
}

#[test]
fn dict_prints_definitions() {
    let dir = TestDir::new("dict");
    let o = run(&dir, &["dict", "Session-Id"], b"");
    assert!(o.ok, "{}", o.stderr);
    assert!(o.text().contains("Session-Id"), "{}", o.text());
    assert!(o.text().contains("263"), "{}", o.text());
    let by_code = run(&dir, &["dict", "263"], b"");
    assert!(by_code.ok);
    assert!(by_code.text().contains("Session-Id"));
    let o = run(&dir, &["dict", "CCR"], b"");
    assert!(o.ok, "{}", o.stderr);
    assert!(o.text().contains("Credit-Control"), "{}", o.text());
    let o = run(&dir, &["dict", "No-Such-Thing"], b"");
    assert!(!o.ok);
    assert_eq!(
        o.stderr.trim(),
        "dmbridge dict: \"No-Such-Thing\": no AVP, command or application by that name or code"
    );
}

#[test]
fn user_dictionaries_name_their_avps() {
    let dir = TestDir::new("userdict");
    let d = dir.file(
        "my.dict",
        b"VENDOR 99999 Example\nATTRIBUTE My-Counter 4242 Unsigned64 99999\n",
    );
    let d = d.to_str().unwrap();
    let o = run(&dir, &["dict", "--dict", d, "My-Counter"], b"");
    assert!(o.ok, "{}", o.stderr);
    assert!(o.text().contains("4242"), "{}", o.text());
    let doc = r#"{"cmd_code":272,"app_id":4,"flags":"R","hop_by_hop":0,"end_to_end":0,"avps":[{"My-Counter":18446744073709551615}]}"#;
    let enc = run(&dir, &["encode", "--dict", d], doc.as_bytes());
    assert!(enc.ok, "{}", enc.stderr);
    let dec = run(&dir, &["decode", "--dict", d], &enc.stdout);
    assert_eq!(dec.text(), format!("{doc}\n"));
    // Without the file the AVP is unknown: kept, by code.
    let dec = run(&dir, &["decode"], &enc.stdout);
    assert!(
        dec.text()
            .contains(r#"{"4242:99999":{"hex":"ffffffffffffffff"}}"#),
        "{}",
        dec.text()
    );
    // A broken dictionary is reported with file and line.
    let bad = dir.file(
        "bad.dict",
        b"ATTRIBUTE Fine 4243 Unsigned32\nATTRIBUTE Broken x\n",
    );
    let o = run(&dir, &["decode", "--dict", bad.to_str().unwrap()], b"");
    assert!(!o.ok);
    assert!(
        o.stderr
            .starts_with(&format!("dmbridge decode: {}:2: ", bad.display())),
        "{}",
        o.stderr
    );
}

/// The routing rules end to end through the binary: `check-config` names each bad rule's file
/// and line, `route --explain` prints the matching rules, the scores and the peer chosen,
/// equal scores take turns only at run time (one explain = one choice), a negative score
/// excludes.
#[test]
fn routing_rules_check_config_and_route_explain() {
    let dir = TestDir::new("route-explain");
    let config = "[node]\norigin_host = \"sip1.test.local\"\norigin_realm = \"test.local\"\n\
        [[applications]]\nid = 4\n\
        [[peers]]\nhost = \"ocs1.billing.net\"\naddress = \"192.0.2.1\"\n\
        [[peers]]\nhost = \"ocs2.billing.net\"\naddress = \"192.0.2.2\"\n\
        [[peers]]\nhost = \"dra.test.local\"\naddress = \"192.0.2.9\"\n\
        [default_route]\npeers = [\"dra.test.local\"]\n\
        [routing]\nrules_file = \"rt_default.conf\"\n";
    let cfg = dir.file("dmbridge.toml", config.as_bytes());
    let cfg = cfg.to_str().expect("utf-8 path");
    // Bad rules: each reported with the rules file's name and its line.
    let rt = dir.file(
        "rt_default.conf",
        b"# billing\ndr=\"billing.net\" : [\"^ocs\"] += REALM ;\nxx=\"a\" : \"b\" += 1 ;\n\n* : \"b\" += 1\n",
    );
    let out = run(&dir, &["check-config", cfg], b"");
    assert!(!out.ok, "bad rules must fail check-config: {}", out.stderr);
    let rt_name = rt.display().to_string();
    assert!(
        out.stderr
            .contains(&format!("{rt_name}:3:1: unknown criteria")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{rt_name}:5:1: expected ;")),
        "{}",
        out.stderr
    );
    // Good rules: alice's requests go to ocs2; ocs1 is never used for User-Name bob.
    dir.file(
        "rt_default.conf",
        b"# billing\ndr=\"billing.net\" : [\"^ocs\"] += REALM ;\nun=\"alice\" : \"ocs2.billing.net\" += 20 ;\nun=\"bob\" : \"ocs1.billing.net\" += NO_DELIVERY ;\n",
    );
    let out = run(&dir, &["check-config", cfg], b"");
    assert!(out.ok, "{}", out.stderr);
    let ccr = |user: &str| {
        format!(
            r#"{{"cmd_code":272,"app_id":4,"flags":"RP","avps":[{{"Session-Id":"s;1"}},{{"Origin-Host":"sip1.test.local"}},{{"Origin-Realm":"test.local"}},{{"Destination-Realm":"billing.net"}},{{"Auth-Application-Id":4}},{{"Service-Context-Id":"32260@3gpp.org"}},{{"CC-Request-Type":1}},{{"CC-Request-Number":0}},{{"User-Name":"{user}"}}]}}"#
        )
    };
    let alice = dir.file("alice.json", ccr("alice").as_bytes());
    let out = run(
        &dir,
        &[
            "route",
            "--config",
            cfg,
            "--explain",
            alice.to_str().unwrap(),
        ],
        b"",
    );
    let text = out.text();
    assert!(out.ok, "{text}{}", out.stderr);
    assert!(
        text.contains("line 2: dr=\"billing.net\" : [\"^ocs\"] += 15 ;"),
        "{text}"
    );
    assert!(
        text.contains("line 3: un=\"alice\" : \"ocs2.billing.net\" += 20 ;"),
        "{text}"
    );
    assert!(!text.contains("line 4:"), "{text}");
    // -2 + 15 (rule) + 15 (realm billing.net, the domain of its identity) + 20.
    assert!(text.contains("   48  ocs2.billing.net"), "{text}");
    assert!(text.contains("   28  ocs1.billing.net"), "{text}");
    assert!(text.contains("    3  dra.test.local"), "{text}");
    assert!(
        text.trim_end().ends_with("chosen: ocs2.billing.net"),
        "{text}"
    );
    // Bob: ocs1 excluded (negative), ocs2 chosen; the JSON given inline.
    let out = run(
        &dir,
        &["route", "--config", cfg, "--explain", &ccr("bob")],
        b"",
    );
    let text = out.text();
    assert!(out.ok, "{text}{}", out.stderr);
    assert!(text.contains("ocs1.billing.net  (excluded)"), "{text}");
    assert!(
        text.trim_end().ends_with("chosen: ocs2.billing.net"),
        "{text}"
    );
    // Everything excluded: no route, exit status 1, the Result-Code said.
    dir.file("rt_default.conf", b"* : [\".\"] += NO_DELIVERY ;\n");
    let out = run(
        &dir,
        &["route", "--config", cfg, "--explain", "-"],
        ccr("carol").as_bytes(),
    );
    let text = out.text();
    assert!(!out.ok, "{text}");
    assert!(
        text.contains("no route:") && text.contains("3002"),
        "{text}"
    );
}
