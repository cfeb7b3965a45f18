//! The IMS Application Server in OpenSIPS (`cfg-examples/roles/opensips-as.cfg`: Sh client
//! through the real `dmbridge run`, the data cached in cachedb_local, the Sh-Data XML read with
//! the xml module, the AVPs with the json module) against an HSS on Erlang/OTP diameter
//! (`tests/peers/sh_hss.escript`). The same scenario as the Kamailio AS (`roles_as.rs`), from
//! `tests/src/as_sh.rs`: UDR on INVITE (repository data, IMSUserState for conditional
//! forwarding), SNR after the first read and unsubscription on de-registration, third-party
//! REGISTER, PNR served (2001 / 5107 / 5100) changing later routing, UDA 5001 -> 404, 5100 ->
//! 403, no answer -> 504, a subscription bounded by the SNA's Expiry-Time renewed after it
//! ends, PUR on the user's MESSAGE (2001, 5105); checked on the SIP side, in the HSS's log, in the script's log and
//! on the wire (tshark).
//!
//! Run twice, the second time under `NAMES freediameter`: an aaa_diameter script finds Sh's
//! User-Data as `User-Data-29.329`, the drop-in case for OpenSIPS. The script reads it through a
//! `$json` path whose key is a variable (a literal dotted key is refused, see the cfg's header).
//!
//! Needs OPENSIPS_SRC: a built OpenSIPS source tree (3.4 - 4.0) with the modules sl, tm, maxfwd,
//! sipmsgops, cachedb_local, json and xml built (xml needs libxml2-dev: `make modules
//! modules="modules/xml"` in the tree; 3.4/3.5 also need event_route, whose loadmodule the test
//! adds, as tests/opensips/run.sh does). The test builds the dmbridge module in that tree.
//! Without OPENSIPS_SRC (CI: OpenSIPS is not packaged by Debian), or with modules missing, it
//! says it is skipped, naming what is missing.

use harness::as_sh::{run_as_scenario, AsSetup, ShNames, AS, SH_BRIDGE_APP};
use harness::opensips::{OpensipsTree, OpensipsWithBridge, RoleOpensips};
use harness::paths::repo_root;
use harness::roles::{opensips_event_route_rewrites, peer_client_bridge, SipServerUnderTest};

/// The modules opensips-as.cfg loads, besides dmbridge and proto_udp (built into the core).
const MODULES: &[&str] = &[
    "sl",
    "tm",
    "maxfwd",
    "sipmsgops",
    "cachedb_local",
    "json",
    "xml",
];

/// The OpenSIPS AS of `tree` for the scenario, or a skip message.
fn opensips_as(test: &str, name: &str, names: ShNames) {
    let Some(tree) = OpensipsTree::for_test(test, MODULES) else {
        return;
    };
    let start = |setup: &AsSetup<'_>| -> Box<dyn SipServerUnderTest> {
        tree.build_dmbridge(setup.dir);
        let bridge =
            peer_client_bridge(setup.dir, AS, SH_BRIDGE_APP, &setup.hss, setup.dictionaries);
        // the next hop is the test's stand-in S-CSCF
        let mut rewrites = vec![(
            "\"sip:scscf.test.local\"",
            format!("\"{}\"", setup.next_hop),
        )];
        rewrites.extend(opensips_event_route_rewrites(&tree));
        // both UDP workers (udp_workers=2) attach: either may get the PNRs
        let opensips = RoleOpensips::start(
            &tree,
            setup.dir,
            "opensips-as",
            &repo_root().join("cfg-examples/roles/opensips-as.cfg"),
            &bridge,
            &rewrites,
            2,
        );
        Box::new(OpensipsWithBridge { opensips, bridge })
    };
    run_as_scenario(name, names, &start);
}

#[test]
fn application_server_in_opensips_reads_sh_data() {
    opensips_as("roles_as_opensips", "roles-as-opensips", ShNames::builtin());
}

/// The drop-in case: the bridge writes freeDiameter's names (`NAMES freediameter`), as an
/// aaa_diameter script expects them; User-Data is `User-Data-29.329`.
#[test]
fn application_server_in_opensips_reads_sh_data_under_freediameter_names() {
    opensips_as(
        "roles_as_opensips (freeDiameter names)",
        "roles-as-opensips-fdnames",
        ShNames::freediameter(),
    );
}
