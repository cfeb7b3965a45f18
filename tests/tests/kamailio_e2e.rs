//! Kamailio end-to-end: Debian's real `kamailio` with `dmbridge.so` (built by
//! `make -C module-glue/kamailio`, which `scripts/test.sh` runs first), the real `dmbridge run`,
//! a Cx HSS on Erlang/OTP `diameter` (`tests/peers/cx_hss.escript`) and a SIP client (UDP on
//! loopback, in this file).
//!
//! - `cx_example_end_to_end`: `cfg-examples/kamailio.cfg` as is. The HSS's PPR and RTR reach
//!   the event routes with their exact AVPs (vendor and grouped ones, read back from the
//!   script's log line); the HSS receives the answers the script built (Experimental-Result
//!   5001 for an unknown user, Associated-Identities in the RTA); SIP REGISTER sends the
//!   async SAR and is answered 200 or 403 after what the HSS answered; a command with no route
//!   gets 3001; `kamcmd dmbridge.status` shows the attachment, the HSS peer and the counters.
//! - `kamailio_faults_counted`: `tests/kamailio/faults.cfg` (a script that misbehaves on
//!   purpose). A request the script never answers gets exactly one 5012, after the reply
//!   timeout; invalid reply JSON is refused (-1 and a log line) and the peer still gets exactly
//!   one answer; the bridge killed and restarted under a running Kamailio: SIP keeps being
//!   served, `dm_send_request` returns -3 meanwhile, and everything works again without
//!   restarting Kamailio.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::bridge::{Bridge, BridgeApp, BridgeOptions, BridgePeer};
use harness::capture::Capture;
use harness::paths::{repo_root, require_program};
use harness::tshark;
use harness::wire::{encode_message, flags, Avp, RawClient, RawMessage};
use harness::{free_port, ChildGuard, Sig, TestDir};
use serde_json::{json, Value};

const VENDOR_3GPP: u32 = 10415;
const CX_APP: u32 = 16_777_216;
const CMD_PPR: u32 = 305;
const SCSCF: &str = "scscf.test.local";
const HSS: &str = "hss.test.local";

// ------------------------------------------------------------------------------------------
// The Cx HSS (Erlang/OTP diameter)

/// `tests/peers/cx_hss.escript`: listens for the bridge, answers SAR (per-user outcome),
/// sends PPR/RTR/UAR when told to on its control port.
struct Hss {
    guard: ChildGuard,
    ctl: u16,
}

impl Hss {
    fn start(dir: &Path, port: u16, sar: &str) -> Hss {
        let escript = require_program("escript", "erlang-base erlang-diameter erlang-dev");
        let script = repo_root().join("tests/peers/cx_hss.escript");
        let ctl = free_port();
        let mut cmd = Command::new(escript);
        cmd.arg(&script).args([
            "--port",
            &port.to_string(),
            "--ctl-port",
            &ctl.to_string(),
            "--host",
            HSS,
            "--realm",
            HSS,
            "--sar",
            sar,
            "--duration",
            "120",
        ]);
        let mut guard = ChildGuard::spawn(&format!("cx-hss-{port}"), cmd, dir);
        guard
            .wait_for_line("listening 127.0.0.1:", harness::peers::erlang::VM_START)
            .unwrap_or_else(|e| panic!("the Erlang HSS did not start: {e}"));
        Hss { guard, ctl }
    }

    /// One control command, one line back.
    fn cmd(&self, line: &str) -> String {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.ctl))
            .unwrap_or_else(|e| panic!("HSS control port: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
        s.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("HSS control write: {e}"));
        let mut reply = String::new();
        BufReader::new(s)
            .read_line(&mut reply)
            .unwrap_or_else(|e| panic!("HSS control read ({line}): {e}"));
        reply.trim().to_string()
    }

    /// Waits until the bridge's connection is up (CER/CEA done).
    fn wait_up(&self, secs: u32) {
        let r = self.cmd(&format!("up {secs}"));
        assert!(
            r.starts_with("UP "),
            "HSS: no Diameter peer came up: {r}\n{}",
            self.guard.tail(20)
        );
    }
}

/// An `ANSWER cmd=.. e=.. rc=.. exp=.. assoc=.. sid=..` line from the HSS.
#[derive(Debug)]
struct HssAnswer {
    cmd: u32,
    e: u32,
    rc: u32,
    exp: u32,
    assoc: String,
    sid: String,
}

fn parse_answer(line: &str) -> HssAnswer {
    let get = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {k}= in HSS answer line {line:?}"))
            .to_string()
    };
    assert!(line.starts_with("ANSWER "), "HSS request failed: {line}");
    let num = |k: &str| -> u32 {
        get(k)
            .parse()
            .unwrap_or_else(|e| panic!("{k} in {line:?}: {e}"))
    };
    HssAnswer {
        cmd: num("cmd"),
        e: num("e"),
        rc: num("rc"),
        exp: num("exp"),
        assoc: get("assoc"),
        sid: get("sid"),
    }
}

// ------------------------------------------------------------------------------------------
// Kamailio

fn module_so() -> PathBuf {
    let so = repo_root().join("build/kamailio/dmbridge.so");
    assert!(
        so.is_file(),
        "{} is missing: build it with `cargo build --release -p dmbridge-cabi && make -C \
         module-glue/kamailio` (scripts/test.sh does)",
        so.display()
    );
    so
}

/// A foreground Kamailio with the module; returns once its ctl socket exists (module workers
/// are forked by then; [`wait_attached`] waits for them to attach).
struct Kamailio {
    guard: ChildGuard,
    run_dir: PathBuf,
    sip_port: u16,
}

impl Kamailio {
    fn start(dir: &Path, name: &str, cfg: &Path, socket: &Path) -> Kamailio {
        Kamailio::start_with(dir, name, cfg, socket, false)
    }

    /// `echo_regex`: also `-A ECHO_REGEX` (tests/kamailio/bench-echo.cfg's regex variant).
    fn start_with(dir: &Path, name: &str, cfg: &Path, socket: &Path, echo_regex: bool) -> Kamailio {
        let kamailio = require_program("kamailio", "kamailio kamailio-extra-modules");
        let so = module_so();
        let sip_port = free_port();
        let run_dir = dir.join(format!("{name}-run"));
        std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        // DMB_VALGRIND_DIR=<dir>: Kamailio (and the processes it forks) under valgrind, one
        // report per process in <dir> (the valgrind count in tests/README.md)
        let mut cmd = match std::env::var_os("DMB_VALGRIND_DIR") {
            Some(vg) => {
                let mut c = Command::new("valgrind");
                c.args([
                    "--leak-check=full",
                    "--show-leak-kinds=definite",
                    "--errors-for-leak-kinds=none",
                    "--num-callers=40",
                ])
                .arg(format!(
                    "--log-file={}/vg-{name}.%p",
                    Path::new(&vg).display()
                ))
                .arg(kamailio);
                c
            }
            None => Command::new(kamailio),
        };
        cmd.arg("-DD")
            .arg("-E")
            .arg("-Y")
            .arg(&run_dir)
            .arg("-f")
            .arg(cfg)
            .arg("-A")
            .arg(format!("SIP_PORT={sip_port}"))
            .arg("-A")
            .arg(format!("DMB_SO=\"{}\"", so.display()))
            .arg("-A")
            .arg(format!("DMB_SOCKET=\"{}\"", socket.display()));
        if echo_regex {
            cmd.arg("-A").arg("ECHO_REGEX");
        }
        let guard = ChildGuard::spawn(name, cmd, dir);
        let ctl = run_dir.join("kamailio_ctl");
        let up = retry(
            "kamailio's ctl socket",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || ctl.exists().then_some(()),
        );
        if let Err(e) = up {
            panic!("kamailio did not start: {e}\n{}", guard.tail(30));
        }
        Kamailio {
            guard,
            run_dir,
            sip_port,
        }
    }

    /// `kamcmd -s unix:<run>/kamailio_ctl ARGS...`
    fn kamcmd(&self, args: &[&str]) -> String {
        let kamcmd = require_program("kamcmd", "kamailio");
        let out = Command::new(kamcmd)
            .arg("-s")
            .arg(format!(
                "unix:{}",
                self.run_dir.join("kamailio_ctl").display()
            ))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("kamcmd: {e}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Log lines containing `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.guard
            .output()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    fn wait_log(&mut self, needle: &str, secs: u64) -> String {
        self.guard
            .wait_for_line(needle, Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("kamailio log: {e}"))
    }
}

/// Waits until both module workers of `k` (the cfgs here have 2) are attached to the bridge
/// (status RPC).
/// `handled` is how the bridge's status lists what they declared, e.g. `["PPR","RTR"]`.
fn wait_attached(k: &Kamailio, handled: &str) {
    let handled = format!("\"handled\":{handled}");
    let r = retry(
        "attached",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let st = k.kamcmd(&["dmbridge.status"]);
            let workers = st.lines().any(|l| l.trim() == "workers_attached: 2");
            (st.contains("attached: yes") && workers && st.contains(&handled)).then_some(st)
        },
    );
    if let Err(e) = r {
        panic!(
            "kamailio did not attach to the bridge: {e:?}\n{}\n{}",
            k.kamcmd(&["dmbridge.status"]),
            k.guard.tail(30)
        );
    }
}

/// Calls `probe` every `every` until it returns `Some`, or `Err` with the last `None` after
/// `timeout` (for probes that cost a process or a round trip, unlike `harness::wait`'s 25 ms).
fn retry<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(every);
    }
}

// ------------------------------------------------------------------------------------------
// SIP client (UDP, loopback)

/// Sends one SIP request as `user@test.local` and returns the final response's status line.
fn sip(port: u16, method: &str, user: &str, extra: &[String]) -> String {
    harness::sip::request(port, method, "sip:test.local", user, extra)
}

// ------------------------------------------------------------------------------------------
// The bridge

fn bridge_options(port: u16, hss_port: u16) -> BridgeOptions {
    let mut o = BridgeOptions {
        origin_host: SCSCF.into(),
        origin_realm: "test.local".into(),
        port,
        ..BridgeOptions::default()
    };
    o.applications.push(BridgeApp {
        id: CX_APP,
        vendor: Some(VENDOR_3GPP),
        acct: false,
    });
    o.peers.push(BridgePeer {
        host: HSS.into(),
        port: Some(hss_port),
    });
    o.default_route = vec![HSS.into()];
    o.timers = vec![
        ("tw".into(), "6s".into()),
        ("tc".into(), "1s".into()),
        ("answer_timeout".into(), "3s".into()),
    ];
    // lands in the [app] section, which to_toml writes last
    o.extra_toml = "reply_timeout = \"2s\"\n".into();
    o
}

// ------------------------------------------------------------------------------------------
// JSON checks

/// The AVP list the script logged for the request whose log line starts with `prefix`
/// ("PPR <sid> from <host>: <json>"), parsed.
fn logged_avps(k: &Kamailio, prefix: &str, sid: &str) -> Vec<Value> {
    let marker = format!("{prefix} {sid} from {HSS}: ");
    let lines = k.log_lines(&marker);
    assert_eq!(
        lines.len(),
        1,
        "expected one log line with {marker:?}, got {lines:#?}"
    );
    let json = lines[0]
        .split_once(&marker)
        .map(|(_, j)| j.trim())
        .unwrap_or("");
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Array(a)) => a,
        other => panic!("the logged AVPs are not a JSON array: {other:?} in {json}"),
    }
}

fn keys(avps: &[Value]) -> Vec<String> {
    avps.iter()
        .map(|o| {
            o.as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_else(|| panic!("not a single-key object: {o}"))
        })
        .collect()
}

fn assert_has(avps: &[Value], want: &Value) {
    assert!(
        avps.iter().any(|a| a == want),
        "AVP {want} not in {}",
        Value::Array(avps.to_vec())
    );
}

// ------------------------------------------------------------------------------------------

#[test]
fn cx_example_end_to_end() {
    let dir = TestDir::new("kamailio-cx-e2e");
    let _ = harness::dmbridge::dmbridge_bin();
    let hss_port = free_port();
    // the HSS's side of the wire, for tshark (Wireshark's dissector) as the oracle
    let capture = Capture::start(dir.path(), hss_port);
    let mut hss = Hss::start(dir.path(), hss_port, "bob=e5001,carol=5012");
    let bport = free_port();
    let opts = bridge_options(bport, hss_port);
    let _bridge = Bridge::start(dir.path(), &opts);
    let socket = dir
        .path()
        .join(format!("bridge-{bport}"))
        .join("control.sock");
    let cfg = repo_root().join("cfg-examples/kamailio.cfg");
    let mut k = Kamailio::start(dir.path(), "kamailio-example", &cfg, &socket);
    hss.wait_up(15);
    wait_attached(&k, r#"["PPR","RTR"]"#);

    // PPR for a user the S-CSCF does not know: the script's Experimental-Result 5001
    let a = parse_answer(&hss.cmd("ppr alice@test.local"));
    assert_eq!((a.cmd, a.e, a.rc, a.exp), (305, 0, 0, 5001), "{a:?}");
    k.wait_log("PPR for unknown user [alice@test.local]: 5001", 5);

    // the event route saw the exact AVPs, vendor and grouped ones, in wire order
    let avps = logged_avps(&k, "PPR", &a.sid);
    assert_eq!(
        keys(&avps),
        [
            "Session-Id",
            "Vendor-Specific-Application-Id",
            "Auth-Session-State",
            "Origin-Host",
            "Origin-Realm",
            "Destination-Host",
            "Destination-Realm",
            "User-Name",
            "Supported-Features",
            "User-Data",
            "Charging-Information"
        ]
    );
    assert_has(&avps, &json!({"Session-Id": a.sid}));
    assert_has(
        &avps,
        &json!({"Vendor-Specific-Application-Id":[{"Vendor-Id":10415},{"Auth-Application-Id":16777216}]}),
    );
    assert_has(&avps, &json!({"Destination-Host": SCSCF}));
    assert_has(&avps, &json!({"User-Name":"alice@test.local"}));
    assert_has(
        &avps,
        &json!({"Supported-Features":[{"Vendor-Id":10415},{"Feature-List-ID":1},{"Feature-List":1}]}),
    );
    let profile = "<IMSSubscription><PrivateID>alice@test.local</PrivateID><ServiceProfile>\
                   <PublicIdentity><Identity>sip:alice@test.local</Identity></PublicIdentity>\
                   </ServiceProfile></IMSSubscription>";
    assert_has(&avps, &json!({ "User-Data": profile }));
    assert_has(
        &avps,
        &json!({"Charging-Information":[
            {"Primary-Event-Charging-Function-Name":"aaa://ecf.test.local:3868"},
            {"Primary-Charging-Collection-Function-Name":"aaa://ccf.test.local:3868"}]}),
    );

    // SIP REGISTER -> async SAR; 200 or 403 after the HSS's answer
    let r = sip(k.sip_port, "REGISTER", "alice", &[]);
    assert_eq!(r, "SIP/2.0 200 OK", "{}", k.guard.tail(20));
    hss.guard
        .wait_for_line(
            "SAR user=alice@test.local impu=sip:alice@test.local sat=1 -> Result-Code 2001",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("HSS did not see alice's SAR: {e}"));
    // the example logs the HSS's time from $dm(peer_us): a real answer took more than 0 us
    let line = k.wait_log("SAA for sip:alice@test.local: result 1 code 2001 in ", 5);
    let hss_us = line
        .rsplit(" in ")
        .next()
        .and_then(|t| t.trim_end().strip_suffix(" us"))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(hss_us.is_some_and(|us| us > 0), "{line}");
    let r = sip(k.sip_port, "REGISTER", "bob", &[]);
    assert_eq!(r, "SIP/2.0 403 Forbidden");
    hss.guard
        .wait_for_line(
            "SAR user=bob@test.local impu=sip:bob@test.local sat=1 -> Experimental-Result-Code 5001",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("HSS did not see bob's SAR: {e}"));
    let r = sip(k.sip_port, "REGISTER", "carol", &[]);
    assert_eq!(r, "SIP/2.0 403 Forbidden");
    k.wait_log("SAA for sip:carol@test.local: result -1 code 5012", 5);

    // PPR for the registered user: stored, 2001
    let a = parse_answer(&hss.cmd("ppr alice@test.local"));
    assert_eq!((a.cmd, a.e, a.rc, a.exp), (305, 0, 2001, 0), "{a:?}");
    let stored = k.kamcmd(&["htable.get", "profile", "alice@test.local"]);
    assert!(
        stored.contains("<PrivateID>alice@test.local</PrivateID>"),
        "{stored}"
    );

    // RTR: the binding goes; the RTA carries the script's Associated-Identities
    let a = parse_answer(&hss.cmd("rtr alice@test.local sip:alice@test.local"));
    assert_eq!((a.cmd, a.e, a.rc), (304, 0, 2001), "{a:?}");
    assert_eq!(a.assoc, "alice@test.local");
    k.wait_log("RTR removed 1 binding(s) of alice@test.local", 5);
    let avps = logged_avps(&k, "RTR", &a.sid);
    assert_has(
        &avps,
        &json!({"Associated-Identities":[{"User-Name":"alice@test.local"}]}),
    );
    assert_has(&avps, &json!({"Public-Identity":"sip:alice@test.local"}));
    assert_has(
        &avps,
        &json!({"Deregistration-Reason":[{"Reason-Code":0},{"Reason-Info":"subscription ended"}]}),
    );
    // ... so the next PPR finds no registration
    let a = parse_answer(&hss.cmd("ppr alice@test.local"));
    assert_eq!((a.rc, a.exp), (0, 5001), "{a:?}");

    // a command the script has no route for: 3001 with the E bit, from the bridge
    let a = parse_answer(&hss.cmd("uar alice@test.local sip:alice@test.local"));
    assert_eq!((a.cmd, a.e, a.rc), (300, 1, 3001), "{a:?}");

    // dmbridge.status: attached, the HSS peer and its state, the counters
    let st = k.kamcmd(&["dmbridge.status"]);
    assert!(st.contains("attached: yes"), "{st}");
    assert!(st.contains(HSS), "status does not name the HSS peer: {st}");
    assert!(
        st.to_ascii_lowercase().contains("open"),
        "status does not show the peer's state: {st}"
    );
    for (counter, want) in [
        ("requests_in", 4),
        ("replies", 4),
        ("auto_replies", 0),
        ("sent_async", 3),
        ("answers_ok", 1),
        ("answers_error", 2),
        ("timeouts", 0),
        ("not_sent", 0),
    ] {
        let line = format!("{counter}: {want}");
        assert!(
            st.lines().any(|l| l.trim() == line),
            "dmbridge.status: want {line:?} in\n{st}"
        );
    }

    // dmbridge.peers: the bridge's peer table, one struct per peer
    let peers = k.kamcmd(&["dmbridge.peers"]);
    let want = [
        format!("host: {HSS}"),
        "watchdog: Okay".to_string(),
        "usable: yes".to_string(),
        "pending: 0".to_string(),
    ];
    for line in &want {
        assert!(
            peers.lines().any(|l| l.trim() == line),
            "dmbridge.peers: want {line:?} in\n{peers}"
        );
    }
    // ROpen or IOpen (RFC 6733 §5.6): which side connected first is a race
    assert!(
        peers
            .lines()
            .any(|l| l.trim() == "state: ROpen" || l.trim() == "state: IOpen"),
        "dmbridge.peers: the peer is open in\n{peers}"
    );
    assert!(
        peers
            .lines()
            .any(|l| l.trim().starts_with("apps: [") && l.contains(&CX_APP.to_string())),
        "dmbridge.peers: the peer's applications include Cx in\n{peers}"
    );
    assert!(k.guard.is_running());

    // on the wire: every Cx request got exactly one answer, the script's answers are what the
    // HSS reported, and Wireshark finds nothing malformed
    let pcap = capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[hss_port]);
    let cx: Vec<_> = msgs.iter().filter(|m| m.app_id == CX_APP).collect();
    let mut answers_of = std::collections::BTreeMap::new();
    for m in &cx {
        let e = answers_of.entry((m.cmd_code, m.hbh)).or_insert((0, 0));
        if m.is_request() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    for ((cmd, hbh), (req, ans)) in &answers_of {
        assert_eq!(
            (*req, *ans),
            (1, 1),
            "cmd {cmd} hbh {hbh:#x}: requests/answers"
        );
    }
    let count = |cmd: u32, req: bool| {
        cx.iter()
            .filter(|m| m.cmd_code == cmd && m.is_request() == req)
            .count()
    };
    // 3 PPR, 1 RTR, 1 UAR from the HSS; 3 SAR from the S-CSCF
    assert_eq!(
        (
            count(305, true),
            count(304, true),
            count(300, true),
            count(301, true)
        ),
        (3, 1, 1, 3)
    );
    let ppa: Vec<String> = cx
        .iter()
        .filter(|m| m.cmd_code == 305 && !m.is_request())
        .map(|m| {
            let exp = m.find_deep("Experimental-Result-Code");
            match (
                m.value("Result-Code"),
                exp.first().and_then(|a| a.value.as_deref()),
            ) {
                (Some(rc), _) => format!("rc {rc}"),
                (None, Some(e)) => format!("exp {e}"),
                _ => "none".into(),
            }
        })
        .collect();
    let ppa_codes: Vec<String> = ppa
        .iter()
        .map(|s| s.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(ppa_codes.len(), 3, "{ppa:?}");
    assert!(ppa_codes[0].starts_with("exp 5001"), "{ppa:?}");
    assert!(ppa_codes[1].starts_with("rc 2001"), "{ppa:?}");
    assert!(ppa_codes[2].starts_with("exp 5001"), "{ppa:?}");
    let rta = cx
        .iter()
        .find(|m| m.cmd_code == 304 && !m.is_request())
        .unwrap_or_else(|| panic!("no RTA on the wire"));
    let names: Vec<_> = rta
        .find_deep("User-Name")
        .iter()
        .filter_map(|a| a.value.clone())
        .collect();
    assert!(
        names.iter().any(|n| n == "alice@test.local"),
        "RTA User-Names {names:?}"
    );
    let uaa = cx
        .iter()
        .find(|m| m.cmd_code == 300 && !m.is_request())
        .unwrap_or_else(|| panic!("no UAA on the wire"));
    assert!(uaa.flags & 0x20 != 0, "3001 without the E bit");
    assert_eq!(
        uaa.value("Result-Code")
            .map(|v| v.split_whitespace().next().unwrap_or("")),
        Some("3001")
    );
    for m in &msgs {
        let p = m.problems(tshark::EXPERT_WARN, tshark::is_unknown_to_dictionary);
        assert!(p.is_empty(), "tshark: {p:?}");
    }
}

// ------------------------------------------------------------------------------------------
// Faults

/// A peer on a raw socket that sends PPRs to the bridge and reads *every* message back, to
/// count answers exactly.
struct RawHss {
    c: RawClient,
}

const RAW_HOST: &str = "rawhss.test.local";

impl RawHss {
    fn connect(port: u16) -> RawHss {
        let mut c = RawClient::connect(port, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to the bridge: {e}"));
        let cea = c
            .handshake(RAW_HOST, "test.local", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("CER/CEA: {e}"));
        assert_eq!(cea.result_code(), Some(2001), "CEA");
        RawHss { c }
    }

    /// Sends a Cx PPR for `user`; returns its hop-by-hop id.
    fn send_ppr(&mut self, user: &str) -> u32 {
        let id = self.c.next_id();
        let v = |a: Avp| a.vendor(VENDOR_3GPP);
        let msg = encode_message(
            flags::REQUEST | flags::PROXIABLE,
            CMD_PPR,
            CX_APP,
            id,
            id,
            &[
                Avp::str(263, &format!("{RAW_HOST};{id}")),
                Avp::grouped(260, &[Avp::u32(266, VENDOR_3GPP), Avp::u32(258, CX_APP)]),
                Avp::u32(277, 1),
                Avp::str(264, RAW_HOST),
                Avp::str(296, "test.local"),
                Avp::str(293, SCSCF),
                Avp::str(283, "test.local"),
                Avp::str(1, user),
                v(Avp::str(606, "<IMSSubscription/>")),
            ],
        );
        self.c
            .send(&msg)
            .unwrap_or_else(|e| panic!("send PPR: {e}"));
        id
    }

    /// Every answer received within `window` (DWRs answered on the way), as (hbh, message,
    /// arrival time).
    fn answers_for(&mut self, window: Duration) -> Vec<(u32, RawMessage, Instant)> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self
                .c
                .read_until(left, (RAW_HOST, "test.local"), |m| !m.is_request())
            {
                Ok(m) => out.push((m.hbh, m, Instant::now())),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return out,
                Err(e) => panic!("reading answers: {e}"),
            }
        }
    }
}

/// The faults rig: a Cx HSS (Erlang), the bridge, Kamailio with tests/kamailio/faults.cfg and
/// its two module workers attached.
struct Faults {
    dir: TestDir,
    hss: Hss,
    opts: BridgeOptions,
    bridge: Bridge,
    socket: PathBuf,
    cfg: PathBuf,
    k: Kamailio,
}

impl Faults {
    fn start(name: &str) -> Faults {
        let dir = TestDir::new(name);
        let _ = harness::dmbridge::dmbridge_bin();
        let hss_port = free_port();
        let hss = Hss::start(dir.path(), hss_port, "");
        let bport = free_port();
        let opts = bridge_options(bport, hss_port);
        let bridge = Bridge::start(dir.path(), &opts);
        let socket = dir
            .path()
            .join(format!("bridge-{bport}"))
            .join("control.sock");
        let cfg = repo_root().join("tests/kamailio/faults.cfg");
        let k = Kamailio::start(dir.path(), name, &cfg, &socket);
        hss.wait_up(15);
        wait_attached(&k, r#"["PPR"]"#);
        Faults {
            dir,
            hss,
            opts,
            bridge,
            socket,
            cfg,
            k,
        }
    }
}

#[test]
fn kamailio_faults_counted() {
    let Faults {
        dir,
        hss,
        opts,
        mut bridge,
        mut k,
        ..
    } = Faults::start("kamailio-faults");
    let kpid = k.guard.pid();

    // the synchronous path works: 1 and the SAA's code
    let sar = "X-Json: [{\"User-Name\":\"alice@test.local\"},{\"Public-Identity\":\"sip:alice@test.local\"},\
               {\"Server-Name\":\"sip:scscf.test.local\"},{\"Server-Assignment-Type\":1},\
               {\"User-Data-Already-Available\":0},{\"Auth-Session-State\":1},\
               {\"Destination-Realm\":\"hss.test.local\"}]"
        .to_string();
    let r = sip(k.sip_port, "OPTIONS", "alice", std::slice::from_ref(&sar));
    assert!(r.starts_with("SIP/2.0 299 rc=1 code=2001"), "{r}");

    // three misbehaving replies at once; every request gets exactly one answer
    let mut raw = RawHss::connect(bridge.port());
    let t0 = Instant::now();
    let silent = raw.send_ppr("silent@test.local");
    let badjson = raw.send_ppr("badjson@test.local");
    let badonly = raw.send_ppr("badonly@test.local");
    let fine = raw.send_ppr("fine@test.local");
    let badtype = raw.send_ppr("badtype@test.local");
    let badname = raw.send_ppr("badname@test.local");
    let ebit5 = raw.send_ppr("ebit5@test.local");
    let ebit3 = raw.send_ppr("ebit3@test.local");
    let twice = raw.send_ppr("twice@test.local");
    // reply_timeout is 2 s: wait past it, long enough to see any duplicate
    let got = raw.answers_for(Duration::from_millis(4500));
    let count = |id: u32| got.iter().filter(|(h, _, _)| *h == id).count();
    for (what, id) in [
        ("silent", silent),
        ("badjson", badjson),
        ("badonly", badonly),
        ("fine", fine),
        ("badtype", badtype),
        ("badname", badname),
        ("ebit5", ebit5),
        ("ebit3", ebit3),
        ("twice", twice),
    ] {
        assert_eq!(count(id), 1, "{what}: answers {got:#?}");
    }
    assert_eq!(got.len(), 9, "unexpected extra answers: {got:#?}");
    let answer = |id: u32| {
        got.iter()
            .find(|(h, _, _)| *h == id)
            .map(|(_, m, t)| (m.result_code(), t.duration_since(t0)))
            .unwrap_or_else(|| panic!("no answer for {id}"))
    };
    // auto_reply_code 0: the module sends nothing, and libdmbridge answers 5012 when the
    // module frees the unanswered request, at once rather than at the bridge's 2 s reply
    // timeout (which then finds nothing to answer: still exactly one answer, counted above)
    let (rc, after) = answer(silent);
    assert_eq!(rc, Some(5012), "unanswered request");
    assert!(
        after < Duration::from_millis(1800),
        "5012 came from the bridge's reply timeout, not from the library: {after:?}"
    );
    assert_eq!(
        answer(badjson).0,
        Some(2002),
        "valid reply after a refused one"
    );
    assert_eq!(answer(badonly).0, Some(5012), "only a refused reply");
    assert_eq!(answer(fine).0, Some(2001));
    // A second dm_send_reply: refused with a log line, the first one's answer is the only one
    assert_eq!(answer(twice).0, Some(2001));
    assert_eq!(k.log_lines("first of two replies: rc=1").len(), 1);
    assert_eq!(k.log_lines("second of two replies: rc=-1").len(), 1);
    assert_eq!(
        k.log_lines("dm_send_reply: this request was already answered")
            .len(),
        1
    );
    // DESIGN §9: a reply that does not fit the dictionary is refused by dm_send_reply itself
    // (the library converts it with the dictionary the bridge sent), and the peer gets 5012
    // at once, not after the reply timeout
    for (what, id, line) in [
        ("badtype", badtype, "wrong type refused: rc=-1"),
        ("badname", badname, "unknown name refused: rc=-1"),
        // is_error with 5012: the E bit needs a 3xxx (RFC 6733 §7.2)
        ("ebit5", ebit5, "E bit with 5012 refused: rc=-1"),
    ] {
        let (rc, after) = answer(id);
        assert_eq!(rc, Some(5012), "{what}");
        assert!(after < Duration::from_millis(1800), "{what}: {after:?}");
        assert_eq!(k.log_lines(line).len(), 1, "{what}: {}", k.guard.tail(40));
    }
    let why = k.log_lines("dm_send_reply: reply to token");
    assert!(
        why.iter().any(|l| l.contains("Result-Code"))
            && why.iter().any(|l| l.contains("No-Such-AVP-Name")),
        "the module logs the library's reason, naming the AVP: {why:#?}"
    );
    assert!(
        why.iter().any(|l| l.contains("3xxx") && l.contains("7.2")),
        "the module logs why the E bit was refused: {why:#?}"
    );
    // is_error with 3002: sent, with the E bit
    let e3 = got.iter().find(|(h, _, _)| *h == ebit3).map(|(_, m, _)| m);
    assert_eq!(e3.and_then(|m| m.result_code()), Some(3002));
    assert!(
        e3.is_some_and(|m| m.flags & harness::wire::flags::ERROR != 0),
        "3xxx with the E bit"
    );
    assert_eq!(k.log_lines("E bit with 3002: rc=1").len(), 1);
    // the bridge counts the refusals (badtype, badname, ebit5 refused by the library;
    // silent and badonly freed unanswered) and logs each
    let st = k.kamcmd(&["dmbridge.status"]);
    assert!(st.contains("\"answered_5012_bad_reply\":5"), "{st}");
    // the module counts every refused dm_send_reply: badjson's and badonly's invalid JSON,
    // badtype, badname, ebit5, and twice's second reply
    assert!(
        st.contains("replies_refused: 6"),
        "module counter replies_refused: {st}"
    );
    let blog = bridge.guard().output();
    assert!(blog.contains("3xxx Result-Code"), "bridge log:\n{blog}");
    let refused = k.log_lines("invalid reply refused: rc=-1");
    assert_eq!(refused.len(), 2, "{refused:#?}");
    let why = k.log_lines("dm_send_reply: invalid AVP JSON at offset");
    assert_eq!(
        why.len(),
        2,
        "a log line naming the offset per refused reply: {why:#?}"
    );
    assert_eq!(k.log_lines("second reply: rc=1").len(), 1);
    drop(raw);

    // the bridge dies under a running Kamailio
    bridge
        .guard()
        .signal(Sig::Kill)
        .unwrap_or_else(|e| panic!("kill: {e}"));
    bridge.guard().wait_exit(Duration::from_secs(5));
    let mut served = 0;
    let mut not_sent = 0;
    for i in 0..5 {
        if sip(k.sip_port, "OPTIONS", &format!("u{i}"), &[]) == "SIP/2.0 200 OK" {
            served += 1;
        }
        let r = sip(k.sip_port, "OPTIONS", "alice", std::slice::from_ref(&sar));
        if r.starts_with("SIP/2.0 299 rc=-3 ") {
            not_sent += 1;
        } else {
            panic!("dm_send_request with the bridge down: {r}");
        }
    }
    assert_eq!((served, not_sent), (5, 5));

    // ... and comes back: same Kamailio process, everything works again
    drop(bridge);
    let bridge = Bridge::start(dir.path(), &opts);
    hss.wait_up(15);
    let ok = retry(
        "rc=1 after the restart",
        Duration::from_secs(15),
        Duration::from_millis(300),
        || {
            let r = sip(k.sip_port, "OPTIONS", "alice", std::slice::from_ref(&sar));
            r.starts_with("SIP/2.0 299 rc=1 code=2001").then_some(r)
        },
    );
    assert!(ok.is_ok(), "dm_send_request after the restart: {ok:?}");
    let ok = retry(
        "the module workers declared PPR to the restarted bridge",
        Duration::from_secs(10),
        Duration::from_millis(300),
        || {
            let st = k.kamcmd(&["dmbridge.status"]);
            // the bridge's own status (inside the module's) lists what its workers handle
            (st.contains("attached: yes") && st.contains("\"handled\":[\"PPR\"]")).then_some(st)
        },
    );
    assert!(ok.is_ok(), "status after the restart: {ok:?}");
    let mut raw = RawHss::connect(bridge.port());
    let id = raw.send_ppr("again@test.local");
    let got = raw.answers_for(Duration::from_millis(2500));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!((got[0].0, got[0].1.result_code()), (id, Some(2001)));
    assert_eq!(k.guard.pid(), kpid);
    assert!(k.guard.is_running(), "kamailio died: {}", k.guard.tail(30));
    let _ = k.wait_log("PPR for [again@test.local]", 2);
}

/// The whole Kamailio killed (SIGKILL to every process) while its module workers hold
/// incoming requests in their event routes: the bridge answers each 5012 once (its workers are
/// gone), nothing more; a new Kamailio attaches and its workers serve the next request.
#[test]
fn kamailio_killed_holding_requests_each_gets_one_5012_and_a_new_one_serves() {
    let Faults {
        dir,
        bridge,
        socket,
        cfg,
        mut k,
        ..
    } = Faults::start("kamailio-killed");
    let mut raw = RawHss::connect(bridge.port());
    // one for each of the two module workers
    let held = [
        raw.send_ppr("hold@test.local"),
        raw.send_ppr("hold@test.local"),
    ];
    let in_routes = retry(
        "both requests in a module worker's route",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || (k.log_lines("PPR held").len() == 2).then_some(()),
    );
    assert!(in_routes.is_ok(), "{in_routes:?}\n{}", k.guard.tail(20));
    k.guard
        .signal_group(Sig::Kill)
        .unwrap_or_else(|e| panic!("kill: {e}"));
    k.guard.wait_exit(Duration::from_secs(10));
    // well within the route's 30 s sleep and the bridge's reply timeout: no duplicate later
    let got = raw.answers_for(Duration::from_millis(3000));
    for id in held {
        let a: Vec<_> = got.iter().filter(|(h, _, _)| *h == id).collect();
        assert_eq!(a.len(), 1, "{got:#?}");
        assert_eq!(a[0].1.result_code(), Some(5012), "{got:#?}");
    }
    assert_eq!(got.len(), 2, "{got:#?}");
    let k2 = Kamailio::start(dir.path(), "kamailio-b", &cfg, &socket);
    wait_attached(&k2, r#"["PPR"]"#);
    let id = raw.send_ppr("after@test.local");
    let got = raw.answers_for(Duration::from_millis(2500));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!((got[0].0, got[0].1.result_code()), (id, Some(2001)));
}

// ------------------------------------------------------------------------------------------
// The benchmark's echo route (scripts/bench-kamailio.sh) really echoes

#[test]
fn bench_echo_route_echoes_the_test_avp() {
    use harness::wire::{avp_flags, test_app};
    let dir = TestDir::new("kamailio-bench-echo");
    let _ = harness::dmbridge::dmbridge_bin();
    let bport = free_port();
    let opts = BridgeOptions {
        origin_host: "server.test.local".into(),
        port: bport,
        ..BridgeOptions::default()
    };
    let _bridge = Bridge::start(dir.path(), &opts);
    let socket = dir
        .path()
        .join(format!("bridge-{bport}"))
        .join("control.sock");
    let cfg = repo_root().join("tests/kamailio/bench-echo.cfg");
    for (name, regex) in [("echo-strings", false), ("echo-regex", true)] {
        let mut k = Kamailio::start_with(dir.path(), name, &cfg, &socket, regex);
        wait_attached(&k, r#"["16777214"]"#);
        let mut c = RawClient::connect(bport, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect: {e}"));
        c.handshake("bench.test.local", "test.local", Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("CER: {e}"));
        for v in [42, -7, 0x7fff_ffff] {
            let id = c.next_id();
            let sid = format!("bench.test.local;{name};{id}");
            // Test-AVP with the V bit only, as test_app sends it (with M, the bridge would
            // refuse this AVP it has no dictionary entry for: 5001)
            let req = encode_message(
                flags::REQUEST | flags::PROXIABLE,
                test_app::CMD,
                test_app::APP_ID,
                id,
                id,
                &[
                    Avp::str(263, &sid),
                    Avp::str(264, "bench.test.local"),
                    Avp::str(296, "test.local"),
                    Avp::str(283, "test.local"),
                    Avp::i32(test_app::TEST_AVP, v)
                        .vendor(test_app::VENDOR_ID)
                        .flags(avp_flags::VENDOR),
                ],
            );
            let a = c
                .request(
                    &req,
                    id,
                    ("bench.test.local", "test.local"),
                    Duration::from_secs(5),
                )
                .unwrap_or_else(|e| panic!("{name}: no answer: {e}\n{}", k.guard.tail(20)));
            assert_eq!(a.result_code(), Some(2001), "{name}");
            assert_eq!(a.session_id().as_deref(), Some(sid.as_str()), "{name}");
            let echoed = a
                .find(test_app::TEST_AVP, Some(test_app::VENDOR_ID))
                .and_then(|x| x.as_i32());
            assert_eq!(echoed, Some(v), "{name}: Test-AVP not echoed");
        }
        k.guard.stop(Duration::from_secs(5));
    }
}
