//! The I-CSCF scenario both I-CSCF scripts are tested with: the Kamailio one
//! (`tests/tests/roles_icscf.rs`, `cfg-examples/roles/kamailio-icscf.cfg`) and the OpenSIPS one
//! (`tests/tests/roles_icscf_opensips.rs`, `opensips-icscf.cfg`). One scenario, so that the two
//! SIP servers are held to the same SIP responses, forwarding and wire.
//!
//! The I-CSCF asks a Cx HSS on Erlang/OTP diameter (`tests/peers/cx_hss.escript`, started with
//! [`hss_options`]) through the real `dmbridge run`; a SIP client and a stand-in S-CSCF (a UAS
//! answering 200) are on loopback. Asserted on the SIP side (the client's final responses, what
//! reached the S-CSCF), in the HSS's log and on the wire (tshark between bridge and HSS):
//! - REGISTER -> UAR; DIAMETER_FIRST_REGISTRATION with Server-Capabilities: the REGISTER is
//!   forwarded to the S-CSCF named inside them; DIAMETER_SUBSEQUENT_REGISTRATION: to the
//!   Server-Name; 5001 USER_UNKNOWN -> 403, nothing forwarded;
//! - INVITE -> LIR; 2001 with Server-Name: forwarded; 5001 -> 404; 5003 IDENTITY_NOT_REGISTERED
//!   -> 480.

use std::time::Duration;

use crate::capture::Capture;
use crate::roles::ScriptedPeer;
use crate::sip::{request, Uas};
use crate::tshark;
use crate::wait::poll_until;

/// The I-CSCF's Origin-Host.
pub const ICSCF: &str = "icscf.test.local";
const CX_APP: u32 = 16_777_216;

/// The HSS peer's options: every S-CSCF it names is `scscf_uri` (the stand-in); dave is
/// registered already (2002), bob unknown (5001); the LIR for nobody is 5001, for carol 5003.
pub fn hss_options(scscf_uri: &str) -> Vec<String> {
    vec![
        "--scscf".into(),
        scscf_uri.into(),
        "--uar".into(),
        "dave=e2002,bob=e5001".into(),
        "--lir".into(),
        "nobody=e5001,carol=e5003".into(),
    ]
}

/// Runs the scenario against the I-CSCF listening for SIP on 127.0.0.1:`sip_port`, whose
/// bridge asks `hss` (on `hss_port`, started with [`hss_options`] naming `scscf`); `capture`
/// holds the HSS port's conversation from before the bridge connected.
pub fn run_icscf_scenario(
    sip_port: u16,
    scscf: &Uas,
    hss: &ScriptedPeer,
    hss_port: u16,
    capture: Capture,
) {
    // first registration: the S-CSCF from Server-Capabilities gets the REGISTER
    let r = request(sip_port, "REGISTER", "sip:test.local", "alice", &[]);
    assert_eq!(r, "SIP/2.0 200 OK", "alice");
    // subsequent registration: Server-Name; the REGISTER answers an S-CSCF's challenge, so
    // the private identity is the whole Authorization username (TS 24.229 §5.3.1.2)
    let auth = "Authorization: Digest username=\"dave@test.local\", realm=\"test.local\", \
                nonce=\"n1\", uri=\"sip:test.local\", response=\"00000000000000000000000000000000\"";
    let r = request(
        sip_port,
        "REGISTER",
        "sip:test.local",
        "dave",
        &[auth.to_string()],
    );
    assert_eq!(r, "SIP/2.0 200 OK", "dave");
    // unknown user: 403, not forwarded
    let r = request(sip_port, "REGISTER", "sip:test.local", "bob", &[]);
    assert_eq!(r, "SIP/2.0 403 Forbidden", "bob");
    // terminating INVITEs: LIR
    let r = request(sip_port, "INVITE", "sip:alice@test.local", "erin", &[]);
    assert_eq!(r, "SIP/2.0 200 OK", "INVITE alice");
    let r = request(sip_port, "INVITE", "sip:nobody@test.local", "erin", &[]);
    assert_eq!(r, "SIP/2.0 404 Not Found", "INVITE nobody");
    let r = request(sip_port, "INVITE", "sip:carol@test.local", "erin", &[]);
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
    // the HSS logs each request as it answers it; its output may reach the file a moment
    // after the answer reached the I-CSCF, so wait (bounded) for the sixth line first
    let cx_lines = || {
        hss.guard
            .output()
            .lines()
            .filter(|l| l.starts_with("UAR ") || l.starts_with("LIR "))
            .count()
    };
    let _ = poll_until(
        "6 Cx requests in the HSS's log",
        Duration::from_secs(5),
        || (cx_lines() >= 6).then_some(()),
    );
    assert_eq!(
        cx_lines(),
        6,
        "one Cx request per SIP request:\n{}",
        hss.guard.output()
    );

    // the wire: UAR/LIR as Wireshark decodes them, from the I-CSCF's bridge
    let pcap = capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[hss_port]);
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
