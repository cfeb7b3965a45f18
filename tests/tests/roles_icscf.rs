//! An I-CSCF in Kamailio (`cfg-examples/roles/kamailio-icscf.cfg`) asking a Cx HSS on
//! Erlang/OTP diameter (`tests/peers/cx_hss.escript`) through the real `dmbridge run`, with a
//! SIP client and a stand-in S-CSCF (a UAS answering 200) on loopback. The scenario and what
//! it asserts (REGISTER -> UAR and the S-CSCF from Server-Capabilities or Server-Name, 403 on
//! 5001; INVITE -> LIR, forwarded, 404 on 5001, 480 on 5003; the HSS's log; the wire) are in
//! `tests/src/icscf.rs`, shared with the OpenSIPS I-CSCF (`roles_icscf_opensips.rs`).

use harness::icscf::{hss_options, run_icscf_scenario, ICSCF};
use harness::roles::CxRole;
use harness::sip::Uas;
use harness::TestDir;

#[test]
fn icscf_in_kamailio_asks_the_hss() {
    let dir = TestDir::new("roles-icscf");
    let _ = harness::dmbridge::dmbridge_bin();
    let scscf = Uas::start();
    let scscf_uri = format!("sip:127.0.0.1:{}", scscf.port);
    let cx = CxRole::start(dir.path(), "icscf", ICSCF, &hss_options(&scscf_uri), &[]);
    run_icscf_scenario(
        cx.role.kamailio.sip_port,
        &scscf,
        &cx.hss,
        cx.hss_port,
        cx.capture,
    );
}
