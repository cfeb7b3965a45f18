//! The P-CSCF in OpenSIPS (`cfg-examples/roles/opensips-pcscf.cfg`: tm, dialog, the SDP read
//! with the core's sdp transformations, dm_send_request from the reply route, async() for the
//! STR, dlg_end_dlg through mi_script for the BYEs) asking a PCRF on Erlang/OTP diameter
//! (`tests/peers/rx_pcrf.escript`) over Rx through the real `dmbridge run`. The same scenario
//! as the Kamailio P-CSCF (`roles_pcscf.rs`), from `tests/src/pcscf.rs`: the AAR's
//! Media-Component-Descriptions derived from the SDP, AAA 2001 relays the call, 5063 / 5065 /
//! no answer -> 503 to the caller and CANCEL to the callee, a refused 200 -> BYEs after the
//! ACK, RAR served, BYE -> STR, ASR -> BYE both ways and STR; checked at both phones, in
//! both logs and on the wire (tshark).
//!
//! Needs OPENSIPS_SRC: a built OpenSIPS source tree (3.4 - 4.0) with the modules tm sl rr
//! dialog maxfwd sipmsgops json and mi_script built (`make modules modules="modules/mi_script"`
//! in the tree; 3.4/3.5 also need event_route, which the test loads when the tree has it).
//! The test builds the dmbridge module in that tree. Without OPENSIPS_SRC (CI: OpenSIPS is
//! not packaged by Debian), or with modules missing, it says it is skipped, naming what is
//! missing.

use harness::opensips::{OpensipsTree, OpensipsWithBridge, RoleOpensips};
use harness::paths::repo_root;
use harness::pcrf::RX_APP;
use harness::pcscf::{run_pcscf_scenario, PCSCF};
use harness::roles::{opensips_event_route_rewrites, peer_client_bridge};
use harness::TestDir;

/// The modules opensips-pcscf.cfg loads, besides dmbridge and proto_udp (built into the core).
const MODULES: &[&str] = &[
    "tm",
    "sl",
    "rr",
    "dialog",
    "maxfwd",
    "sipmsgops",
    "json",
    "mi_script",
];

#[test]
fn pcscf_in_opensips_asks_the_pcrf() {
    let Some(tree) = OpensipsTree::for_test("roles_pcscf_opensips", MODULES) else {
        return;
    };
    let dir = TestDir::new("roles-pcscf-opensips");
    tree.build_dmbridge(dir.path());
    run_pcscf_scenario(dir.path(), &|pcrf, bob_port| {
        let bridge = peer_client_bridge(dir.path(), PCSCF, RX_APP, &pcrf, &[]);
        let mut rewrites = vec![(
            "sip:scscf.test.local:5060",
            format!("sip:127.0.0.1:{bob_port}"),
        )];
        rewrites.extend(opensips_event_route_rewrites(&tree));
        // both UDP workers (udp_workers=2) serve the PCRF's requests
        let opensips = RoleOpensips::start(
            &tree,
            dir.path(),
            "opensips-pcscf",
            &repo_root().join("cfg-examples/roles/opensips-pcscf.cfg"),
            &bridge,
            &rewrites,
            2,
        );
        Box::new(OpensipsWithBridge { opensips, bridge })
    });
}
