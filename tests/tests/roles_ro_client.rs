//! Online charging of calls from Kamailio (`cfg-examples/roles/kamailio-ro-client.cfg`, the Ro
//! client: RFC 4006 credit control, 3GPP TS 32.299) through the real `dmbridge run`, against
//! an OCS on Erlang/OTP diameter with a strict codec and short grants
//! (`tests/peers/ro_ocs_session.escript`), with SIP phones on loopback (`harness::sip_call`).
//! The scenario and what it asserts (CCR-I/U/T, 402/503, BYEs on a refused or unanswered
//! update, RAR, ASR, the wire) are in `tests/src/ro_client.rs`, shared with the OpenSIPS Ro
//! client (`roles_ro_client_opensips.rs`); the dialog-timeout safety net, which only the
//! Kamailio script has, is tested here.

use harness::ro_client::{
    assert_both_got_bye, ccrs, run_ro_client_scenario, run_validity_time_scenario, sid_of,
    start_ocs, validity_ocs_args, wait_ccr, RoOcs, CTF, GRANT, OCS, RO_APP,
};
use harness::roles::{PeerClientRole, ServerPeer};
use harness::sip_call::Phone;
use harness::TestDir;

/// The OCS (with its capture, `ocs_args` added to the scenario's) and the Ro client role
/// (bridge + Kamailio with `defines` added to `OCS_REALM`).
fn start(dir: &TestDir, ocs_args: &[String], defines: &[String]) -> (RoOcs, PeerClientRole) {
    let ocs = start_ocs(dir.path(), ocs_args);
    let mut all_defines = vec![format!("OCS_REALM=\"{OCS}\"")];
    all_defines.extend_from_slice(defines);
    let role = PeerClientRole::start(
        dir.path(),
        "ro-client",
        CTF,
        RO_APP,
        ServerPeer {
            peer: &ocs.peer,
            host: OCS,
            port: ocs.port,
        },
        &[],
        &all_defines,
    );
    (ocs, role)
}

#[test]
fn ro_client_in_kamailio_charges_calls() {
    let dir = TestDir::new("roles-ro-client");
    let _ = harness::dmbridge::dmbridge_bin();
    let (ocs, role) = start(&dir, &[], &[]);
    let k = &role.kamailio;
    run_ro_client_scenario(ocs, k.sip_port, &k.guard);
}

/// A Validity-Time shorter than the grant: the timer is armed for the Validity-Time and the
/// CCR-Update says VALIDITY_TIME (`tests/src/ro_client.rs`, run_validity_time_scenario).
#[test]
fn ro_client_updates_when_the_validity_time_passes() {
    let dir = TestDir::new("roles-ro-client-validity");
    let _ = harness::dmbridge::dmbridge_bin();
    let (ocs, role) = start(&dir, &validity_ocs_args(), &[]);
    let k = &role.kamailio;
    run_validity_time_scenario(ocs, k.sip_port, &k.guard);
}

/// The safety net: a dialog whose timeout passes without an update renewing it (here the
/// timeout is set 1 s short of the grant, TIMEOUT_GRACE=-1, so it comes before the update
/// timer) is ended by the script: BYE to both phones, CCR-Terminate with Termination-Cause 8
/// DIAMETER_SESSION_TIMEOUT.
#[test]
fn ro_client_ends_calls_whose_dialog_timed_out() {
    let dir = TestDir::new("roles-ro-client-expiry");
    let _ = harness::dmbridge::dmbridge_bin();
    let (ocs, role) = start(&dir, &[], &["TIMEOUT_GRACE=-1".to_string()]);
    let ocs = &ocs.peer;
    let k = &role.kamailio;
    let callee = Phone::start("callee");
    let harry = Phone::start("harry");
    let h = harry.invite(k.sip_port, &callee.uri());
    assert!(h.answered(), "harry: {}", h.status);
    assert_both_got_bye(&k.guard, [&harry, &callee], &h.call_id);
    let sid = sid_of(ocs, "harry");
    let t = wait_ccr(ocs, "harry's CCR-Terminate", |c| c.ty == 3 && c.sid == sid);
    assert_eq!((t.num, t.rc, t.cause.as_str()), (1, 2001, "8"), "{t:?}");
    assert!(t.usu.is_some_and(|u| u < GRANT + 1), "used: {t:?}");
    // the dialog's timeout came before the update timer (what this test is about)
    let types: Vec<u32> = ccrs(ocs)
        .iter()
        .filter(|c| c.sid == sid)
        .map(|c| c.ty)
        .collect();
    assert_eq!(types, [1, 3], "harry's CCRs");
}
