//! An I-CSCF in Kamailio (`cfg-examples/roles/kamailio-icscf.cfg`) asking a Cx HSS on
//! Erlang/OTP diameter (`tests/peers/cx_hss.escript`) through the real `dmbridge run`, with a
//! SIP client and a stand-in S-CSCF (a UAS answering 200) on loopback.
//!
//! Asserted on the SIP side (the client's final responses, what reached the S-CSCF), in the
//! HSS's log and on the wire (tshark between bridge and HSS):
//! - REGISTER -> UAR; DIAMETER_FIRST_REGISTRATION with Server-Capabilities: the REGISTER is
//!   forwarded to the S-CSCF named inside them; DIAMETER_SUBSEQUENT_REGISTRATION: to the
//!   Server-Name; 5001 USER_UNKNOWN -> 403, nothing forwarded;
//! - INVITE -> LIR; 2001 with Server-Name: forwarded; 5001 -> 404; 5003 IDENTITY_NOT_REGISTERED
//!   -> 480.

use harness::roles::CxRole;
use harness::sip::{request, Uas};
use harness::{tshark, TestDir};

const ICSCF: &str = "icscf.test.local";
const CX_APP: u32 = 16_777_216;

#[test]
fn icscf_in_kamailio_asks_the_hss() {
    let dir = TestDir::new("roles-icscf");
    let _ = harness::dmbridge::dmbridge_bin();
    let scscf = Uas::start();
    let scscf_uri = format!("sip:127.0.0.1:{}", scscf.port);
    let cx = CxRole::start(
        dir.path(),
        "icscf",
        ICSCF,
        &[
            "--scscf".into(),
            scscf_uri.clone(),
            "--uar".into(),
            "dave=e2002,bob=e5001".into(),
            "--lir".into(),
            "nobody=e5001,carol=e5003".into(),
        ],
        &[],
    );
    let (k, hss) = (&cx.role.kamailio, &cx.hss);

    // first registration: the S-CSCF from Server-Capabilities gets the REGISTER
    let r = request(k.sip_port, "REGISTER", "sip:test.local", "alice", &[]);
    assert_eq!(r, "SIP/2.0 200 OK", "alice");
    // subsequent registration: Server-Name; the REGISTER answers an S-CSCF's challenge, so
    // the private identity is the whole Authorization username (TS 24.229 §5.3.1.2)
    let auth = "Authorization: Digest username=\"dave@test.local\", realm=\"test.local\", \
                nonce=\"n1\", uri=\"sip:test.local\", response=\"00000000000000000000000000000000\"";
    let r = request(
        k.sip_port,
        "REGISTER",
        "sip:test.local",
        "dave",
        &[auth.to_string()],
    );
    assert_eq!(r, "SIP/2.0 200 OK", "dave");
    // unknown user: 403, not forwarded
    let r = request(k.sip_port, "REGISTER", "sip:test.local", "bob", &[]);
    assert_eq!(r, "SIP/2.0 403 Forbidden", "bob");
    // terminating INVITEs: LIR
    let r = request(k.sip_port, "INVITE", "sip:alice@test.local", "erin", &[]);
    assert_eq!(r, "SIP/2.0 200 OK", "INVITE alice");
    let r = request(k.sip_port, "INVITE", "sip:nobody@test.local", "erin", &[]);
    assert_eq!(r, "SIP/2.0 404 Not Found", "INVITE nobody");
    let r = request(k.sip_port, "INVITE", "sip:carol@test.local", "erin", &[]);
    assert_eq!(r, "SIP/2.0 480 Temporarily Unavailable", "INVITE carol");

    assert_eq!(
        scscf.request_lines(),
        [
            "REGISTER sip:test.local SIP/2.0",
            "REGISTER sip:test.local SIP/2.0",
            "INVITE sip:alice@test.local SIP/2.0"
        ],
        "what reached the S-CSCF"
    );
    for user in ["alice", "dave"] {
        assert!(
            scscf
                .received()
                .iter()
                .any(|m| m.contains(&format!("To: <sip:{user}@test.local>"))),
            "{user}'s REGISTER was forwarded"
        );
    }
    assert_eq!(
        hss.guard
            .output()
            .lines()
            .filter(|l| l.starts_with("UAR ") || l.starts_with("LIR "))
            .count(),
        6,
        "one Cx request per SIP request:\n{}",
        hss.guard.output()
    );

    // the wire: UAR/LIR as Wireshark decodes them, from the I-CSCF's bridge
    let pcap = cx.capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[cx.hss_port]);
    let reqs: Vec<_> = msgs
        .iter()
        .filter(|m| matches!(m.cmd_code, 300 | 302) && m.is_request())
        .collect();
    let uar_users: Vec<_> = reqs
        .iter()
        .filter(|m| m.cmd_code == 300)
        .map(|m| m.value("User-Name").unwrap_or("-"))
        .collect();
    assert_eq!(
        uar_users,
        ["alice@test.local", "dave@test.local", "bob@test.local"],
        "UAR User-Name: the private identity"
    );
    assert_eq!(reqs.iter().filter(|m| m.cmd_code == 302).count(), 3);
    for m in &reqs {
        let problems = m.problems(tshark::EXPERT_WARN, |_| false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(m.app_id, CX_APP);
        assert_eq!(m.value("Origin-Host"), Some(ICSCF));
        assert!(
            !m.find_deep("Public-Identity").is_empty(),
            "Public-Identity in every request"
        );
    }
}
