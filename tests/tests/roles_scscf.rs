//! An S-CSCF in Kamailio (`cfg-examples/roles/kamailio-scscf.cfg`) registering users with SIP
//! Digest vectors from a Cx HSS on Erlang/OTP diameter (`tests/peers/cx_hss.escript`, a strict
//! codec for MAR), through the real `dmbridge run`. The scenario and what it asserts (MAR ->
//! 401 -> SAR REGISTRATION / RE_REGISTRATION / USER_DEREGISTRATION / AUTHENTICATION_FAILURE,
//! 403/504 on the HSS's errors, PPR and RTR served, the SIP side, the HSS's log and the wire)
//! are in `tests/src/scscf.rs`, shared with the OpenSIPS S-CSCF (`roles_scscf_opensips.rs`).
//! A second test takes the stale-nonce path (nonces shortened to 2 s with `-A
//! NONCE_EXPIRE=2`): a new 401 with stale=true, no second MAR.

use harness::roles::CxRole;
use std::time::Duration;

use harness::scscf::{
    hss_options, run_scscf_scenario, run_stale_nonce_scenario, ScscfUnderTest, SCSCF, SCSCF_NAME,
};
use harness::TestDir;

#[test]
fn scscf_in_kamailio_registers_with_digest_from_the_hss() {
    let dir = TestDir::new("roles-scscf");
    let _ = harness::dmbridge::dmbridge_bin();
    let cx = CxRole::start(
        dir.path(),
        "scscf",
        SCSCF,
        &hss_options(),
        &[format!("SCSCF_NAME=\"{SCSCF_NAME}\"")],
    );
    let k = &cx.role.kamailio;
    run_scscf_scenario(ScscfUnderTest {
        sip_port: k.sip_port,
        hss: &cx.hss,
        hss_port: cx.hss_port,
        capture: cx.capture,
        // the PPR's User-Data, as the cfg keeps it (htable "profile", by IMPI)
        profile: &|impi| k.kamcmd(&["htable.get", "profile", impi]),
    });
}

#[test]
fn scscf_in_kamailio_challenges_a_stale_nonce_again() {
    let dir = TestDir::new("roles-scscf-stale");
    let _ = harness::dmbridge::dmbridge_bin();
    let nonce_expire = Duration::from_secs(2);
    let cx = CxRole::start(
        dir.path(),
        "scscf",
        SCSCF,
        &hss_options(),
        &[
            format!("SCSCF_NAME=\"{SCSCF_NAME}\""),
            format!("NONCE_EXPIRE={}", nonce_expire.as_secs()),
        ],
    );
    let k = &cx.role.kamailio;
    run_stale_nonce_scenario(
        ScscfUnderTest {
            sip_port: k.sip_port,
            hss: &cx.hss,
            hss_port: cx.hss_port,
            capture: cx.capture,
            profile: &|impi| k.kamcmd(&["htable.get", "profile", impi]),
        },
        nonce_expire,
    );
}
