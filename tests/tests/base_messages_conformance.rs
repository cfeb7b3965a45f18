//! The base protocol's own requests (CER, DWR, DPR) against RFC 6733, from the real
//! `dmbridge run` over raw frames, the way the error answers of application requests are
//! checked in `error_answers.rs`:
//!
//! - §7 / §7.1: a CER, DWR or DPR is checked against its command's ABNF like any other
//!   request: an unknown AVP with the M bit is 5001 (Failed-AVP holding it), a missing
//!   required AVP 5005 (Failed-AVP an example of it, §7.5), reserved header bits 3008 with the
//!   E bit (§3, §7.1.3). The error answer replaces the CEA / DWA / DPA; the request is not
//!   acted on (freeDiameter does the same: `fd_msg_parse_or_error` on every link-local message
//!   in `p_psm.c`). A refused CER closes the connection, as any refused CER does; a refused
//!   DWR or DPR leaves the open connection as it was.
//! - §5.6.1: a CER on an open connection is R-Rcv-CER / I-Rcv-CER: R-Snd-CEA, the state
//!   stays R-Open / I-Open. The CEA is negative (5012 DIAMETER_UNABLE_TO_COMPLY, as
//!   freeDiameter's `fd_p_ce_msgrcv` answers "No CER allowed in current state"), and the
//!   connection keeps working.
//!
//! Every answer must also pass tshark's Diameter dissector, and every refusal is counted in
//! `dmbridge_refusals_total` (DESIGN §10).

use std::time::Duration;

use harness::bridge::{Bridge, BridgeOptions};
use harness::prometheus::http_get;
use harness::tshark::{decode_offline, is_unknown_to_dictionary, EXPERT_WARN};
use harness::wire::{avp_flags, code, encode_message, flags, Avp, RawClient, RawMessage};
use harness::{free_port, TestDir};

const REALM: &str = "test.local";
const BRIDGE: &str = "bridge.test.local";
const T: Duration = Duration::from_secs(5);

fn cer_avps(host: &str) -> Vec<Avp> {
    vec![
        Avp::str(code::ORIGIN_HOST, host),
        Avp::str(code::ORIGIN_REALM, REALM),
        Avp::ipv4(code::HOST_IP_ADDRESS, std::net::Ipv4Addr::LOCALHOST),
        Avp::u32(code::VENDOR_ID, 0),
        Avp::str(code::PRODUCT_NAME, "base-conformance").flags(0),
        Avp::u32(code::ACCT_APPLICATION_ID, 3),
    ]
}

fn origin(host: &str) -> Vec<Avp> {
    vec![
        Avp::str(code::ORIGIN_HOST, host),
        Avp::str(code::ORIGIN_REALM, REALM),
    ]
}

fn unknown_m() -> Avp {
    Avp::raw(999_999, b"x".to_vec()).flags(avp_flags::MANDATORY)
}

/// A connection that completed its capabilities exchange as `host`.
fn open(port: u16, host: &str) -> RawClient {
    let mut c = RawClient::connect(port, T).unwrap();
    let cea = c.handshake(host, REALM, T).expect("CEA");
    assert_eq!(cea.result_code(), Some(2001), "{host}: {cea:?}");
    c
}

/// The answer to a request sent on `c` with command `cmd`, flags `f` and `avps`.
fn ask(c: &mut RawClient, host: &str, f: u8, cmd: u32, avps: &[Avp]) -> RawMessage {
    let id = c.next_id();
    let req = encode_message(f, cmd, 0, id, id, avps);
    let a = c
        .request(&req, id, (host, REALM), T)
        .unwrap_or_else(|e| panic!("no answer to command {cmd} flags {f:#x}: {e}"));
    assert_eq!((a.hbh, a.e2e), (id, id));
    assert_eq!(a.cmd_code, cmd);
    assert_eq!(a.origin_host().as_deref(), Some(BRIDGE));
    a
}

/// The answer to a CER opening a new connection, which must then close (a refused CER).
fn refused_cer(port: u16, host: &str, f: u8, avps: &[Avp]) -> RawMessage {
    let mut c = RawClient::connect(port, T).unwrap();
    let a = ask(&mut c, host, f, 257, avps);
    assert!(
        c.wait_closed(T).is_ok(),
        "{host}: a refused CER closes the connection"
    );
    a
}

/// The single AVP inside the answer's Failed-AVP.
fn failed_avp(a: &RawMessage) -> (u32, Vec<u8>) {
    let f = a
        .find(code::FAILED_AVP, None)
        .unwrap_or_else(|| panic!("no Failed-AVP: {a:?}"));
    let inner = f.children().expect("Failed-AVP is grouped");
    assert_eq!(inner.len(), 1, "{inner:?}");
    (inner[0].code, inner[0].data.clone())
}

/// The connection still works: a valid DWR gets a 2001 DWA.
fn still_open(c: &mut RawClient, host: &str) {
    let dwa = ask(c, host, flags::REQUEST, 280, &origin(host));
    assert_eq!(dwa.result_code(), Some(2001), "{dwa:?}");
}

#[test]
fn invalid_base_requests_get_error_answers_and_cer_on_open_connection_gets_a_cea() {
    let dir = TestDir::new("base-conformance");
    let port = free_port();
    let mport = free_port();
    let _bridge = Bridge::start(
        dir.path(),
        &BridgeOptions {
            port,
            extra_toml: format!("\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"),
            ..BridgeOptions::default()
        },
    );
    let mut wire = Vec::new();

    // CER with an unknown M-bit AVP: 5001, Failed-AVP holds it.
    let mut avps = cer_avps("cer-unknown.test.local");
    avps.push(unknown_m());
    let a = refused_cer(port, "cer-unknown.test.local", flags::REQUEST, &avps);
    assert_eq!(a.result_code(), Some(5001), "{a:?}");
    assert_eq!(a.flags & flags::ERROR, 0, "5xxx: no E bit (§7.1.5)");
    assert_eq!(failed_avp(&a), (999_999, b"x".to_vec()));
    wire.push(a.bytes);
    // CER without Product-Name: 5005 with an example Product-Name in Failed-AVP (§7.5).
    let mut avps = cer_avps("cer-missing.test.local");
    avps.retain(|a| a.code != code::PRODUCT_NAME);
    let a = refused_cer(port, "cer-missing.test.local", flags::REQUEST, &avps);
    assert_eq!(a.result_code(), Some(5005), "{a:?}");
    assert_eq!(failed_avp(&a).0, code::PRODUCT_NAME);
    wire.push(a.bytes);
    // CER with a reserved header bit: 3008 with the E bit (§3, §7.1.3).
    let avps = cer_avps("cer-hdr.test.local");
    let a = refused_cer(port, "cer-hdr.test.local", flags::REQUEST | 0x01, &avps);
    assert_eq!(a.result_code(), Some(3008), "{a:?}");
    assert_ne!(a.flags & flags::ERROR, 0, "3xxx: E bit (§7.1.3)");
    wire.push(a.bytes);

    let host = "open.test.local";
    let mut c = open(port, host);
    // DWR without Origin-Realm: 5005, Failed-AVP an Origin-Realm; the connection stays.
    let a = ask(
        &mut c,
        host,
        flags::REQUEST,
        280,
        &[Avp::str(code::ORIGIN_HOST, host)],
    );
    assert_eq!(a.result_code(), Some(5005), "{a:?}");
    assert_eq!(failed_avp(&a).0, code::ORIGIN_REALM);
    wire.push(a.bytes);
    still_open(&mut c, host);
    // DWR with an unknown M-bit AVP: 5001.
    let mut avps = origin(host);
    avps.push(unknown_m());
    let a = ask(&mut c, host, flags::REQUEST, 280, &avps);
    assert_eq!(a.result_code(), Some(5001), "{a:?}");
    assert_eq!(failed_avp(&a), (999_999, b"x".to_vec()));
    wire.push(a.bytes);
    // DWR with a reserved header bit: 3008, E bit.
    let a = ask(&mut c, host, flags::REQUEST | 0x02, 280, &origin(host));
    assert_eq!(a.result_code(), Some(3008), "{a:?}");
    assert_ne!(a.flags & flags::ERROR, 0);
    wire.push(a.bytes);
    still_open(&mut c, host);
    // DPR with an unknown M-bit AVP: 5001, and it is not acted on: the connection stays.
    let mut avps = origin(host);
    avps.push(Avp::u32(code::DISCONNECT_CAUSE, 0));
    avps.push(unknown_m());
    let a = ask(&mut c, host, flags::REQUEST, 282, &avps);
    assert_eq!(a.result_code(), Some(5001), "{a:?}");
    wire.push(a.bytes);
    still_open(&mut c, host);

    // A second CER on the open connection (§5.6.1 R-Open, R-Rcv-CER: R-Snd-CEA -> R-Open):
    // a CEA, negative, and the connection keeps working.
    let a = ask(&mut c, host, flags::REQUEST, 257, &cer_avps(host));
    assert_eq!(a.result_code(), Some(5012), "{a:?}");
    assert_eq!(a.flags & flags::ERROR, 0, "{a:?}");
    wire.push(a.bytes);
    still_open(&mut c, host);

    // DESIGN §10: every refusal is counted (and logged): the three refused CERs, the CER on
    // the open connection, and the four invalid DWR/DPR answered by the node.
    let (_, metrics) = http_get(mport, "/metrics", T).unwrap();
    for line in [
        r#"dmbridge_refusals_total{cause="cer_invalid"} 3"#,
        r#"dmbridge_refusals_total{cause="cer_on_open_connection"} 1"#,
        r#"dmbridge_local_answers_total{result_code="5005",cause="invalid_request"} 1"#,
        r#"dmbridge_local_answers_total{result_code="5001",cause="invalid_request"} 2"#,
        r#"dmbridge_local_answers_total{result_code="3008",cause="invalid_request"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }

    let decoded = decode_offline(dir.path(), "base-conformance", &wire);
    assert_eq!(decoded.len(), wire.len());
    for ts in &decoded {
        // §7.5: the example AVP of a 5005 has an empty payload for a string type; the
        // unknown AVP a 5001 reports is unknown to tshark too.
        let problems = ts.problems(EXPERT_WARN, |m| {
            m == "Data is empty" || is_unknown_to_dictionary(m)
        });
        assert!(
            problems.is_empty(),
            "frame {}: tshark: {problems:?}",
            ts.frame
        );
    }
}
