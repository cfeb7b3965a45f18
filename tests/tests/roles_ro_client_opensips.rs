//! Online charging of calls from OpenSIPS (`cfg-examples/roles/opensips-ro-client.cfg`, the
//! Ro client: RFC 4006 credit control, 3GPP TS 32.299) through the real `dmbridge run`,
//! against the OCS on Erlang/OTP diameter with short grants
//! (`tests/peers/ro_ocs_session.escript`), with SIP phones on loopback. The same scenario as
//! the Kamailio Ro client (`roles_ro_client.rs`), from `tests/src/ro_client.rs`: CCR-Initial
//! (402 on 4012, 503 without an answer, CCR-T of 0 s for a refused call), CCR-Update when the
//! grant is used up (here the dialog module's own timeout route), BYEs both ways and no
//! CCR-Terminate after a refused or unanswered update, CCR-Terminate on BYE, RAR and ASR
//! served, checked at the phones, at the OCS and on the wire (tshark); and a grant whose
//! Validity-Time is shorter than its CC-Time, updated at the Validity-Time.
//!
//! Kamailio's second test, the dialog-timeout safety net, has no counterpart: in this script
//! the dialog's lifetime IS the quota timer (its timeout route renews it), so there is no
//! second timer to fall back on (the cfg's header says why).
//!
//! Needs OPENSIPS_SRC: a built OpenSIPS source tree (3.4 - 4.0) with the modules signaling sl
//! tm rr maxfwd sipmsgops dialog cachedb_local json cfgutils built (3.4/3.5 also need
//! event_route, whose loadmodule the test adds). The test builds the dmbridge module in that
//! tree. Without OPENSIPS_SRC (CI: OpenSIPS is not packaged by Debian), or with modules
//! missing, it says it is skipped, naming what is missing.

use harness::child::ChildGuard;
use harness::opensips::{OpensipsTree, RoleOpensips};
use harness::paths::repo_root;
use harness::ro_client::{
    run_ro_client_scenario, run_validity_time_scenario, start_ocs, validity_ocs_args, RoOcs, CTF,
    OCS, RO_APP,
};
use harness::roles::{opensips_event_route_rewrites, peer_client_bridge, ServerPeer};
use harness::TestDir;

/// The modules opensips-ro-client.cfg loads, besides dmbridge and proto_udp (in the core).
const MODULES: &[&str] = &[
    "signaling",
    "sl",
    "tm",
    "rr",
    "maxfwd",
    "sipmsgops",
    "dialog",
    "cachedb_local",
    "json",
    "cfgutils",
];

/// Runs `scenario` (one of `harness::ro_client`'s) against OpenSIPS with opensips-ro-client.cfg,
/// its bridge and the OCS started with `ocs_args`, in a test directory named `name`; says the
/// test is skipped when OPENSIPS_SRC does not name a tree with [`MODULES`]. Afterwards the
/// OpenSIPS log must hold no ERROR line.
fn run(name: &str, ocs_args: &[String], scenario: fn(RoOcs, u16, &ChildGuard)) {
    let Some(tree) = OpensipsTree::for_test("roles_ro_client_opensips", MODULES) else {
        return;
    };
    let dir = TestDir::new(name);
    // the bridge binary first: the OCS below exits on its own after a while
    let _ = harness::dmbridge::dmbridge_bin();
    tree.build_dmbridge(dir.path());
    let ocs = start_ocs(dir.path(), ocs_args);
    // the bridge as the CTF, the OCS its peer and default route
    let bridge = peer_client_bridge(
        dir.path(),
        CTF,
        RO_APP,
        &ServerPeer {
            peer: &ocs.peer,
            host: OCS,
            port: ocs.port,
        },
        &[],
    );
    // both UDP workers (udp_workers=2) attached (the Timer handler process attaches too)
    let opensips = RoleOpensips::start(
        &tree,
        dir.path(),
        "opensips-ro-client",
        &repo_root().join("cfg-examples/roles/opensips-ro-client.cfg"),
        &bridge,
        &opensips_event_route_rewrites(&tree),
        2,
    );
    scenario(ocs, opensips.sip_port, &opensips.guard);
    let errors = opensips.log_lines("ERROR:");
    assert!(errors.is_empty(), "errors in the OpenSIPS log: {errors:#?}");
}

#[test]
fn ro_client_in_opensips_charges_calls() {
    run("roles-ro-client-opensips", &[], run_ro_client_scenario);
}

/// A Validity-Time shorter than the grant: the dialog's lifetime is the Validity-Time and the
/// CCR-Update says VALIDITY_TIME.
#[test]
fn ro_client_in_opensips_updates_when_the_validity_time_passes() {
    run(
        "roles-ro-client-opensips-validity",
        &validity_ocs_args(),
        run_validity_time_scenario,
    );
}
