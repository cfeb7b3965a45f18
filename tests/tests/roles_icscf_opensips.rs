//! The I-CSCF in OpenSIPS (`cfg-examples/roles/opensips-icscf.cfg`: REGISTER -> UAR, INVITE ->
//! LIR with async(dm_send_request(...)), the answers read with the json module) asking a Cx
//! HSS on Erlang/OTP diameter (`tests/peers/cx_hss.escript`) through the real `dmbridge run`,
//! with a SIP client and a stand-in S-CSCF (a UAS answering 200) on loopback. The same
//! scenario as the Kamailio I-CSCF (`roles_icscf.rs`), from `tests/src/icscf.rs`: the S-CSCF
//! picked from Server-Capabilities or Server-Name gets the REGISTER, the callee's S-CSCF the
//! INVITE; 403/404/480 on the HSS's errors; the HSS's log and the wire (tshark).
//!
//! Needs OPENSIPS_SRC: a built OpenSIPS source tree (3.4 - 4.0) with the modules sl, tm,
//! maxfwd, sipmsgops and json built (no event_route: this cfg serves no Diameter requests). The
//! test builds the dmbridge module in that tree. Without OPENSIPS_SRC (CI: OpenSIPS is not
//! packaged by Debian), or with modules missing, it says it is skipped, naming what is
//! missing.

use harness::icscf::{hss_options, run_icscf_scenario, ICSCF};
use harness::opensips::{CxRoleOpensips, OpensipsTree};
use harness::sip::Uas;
use harness::TestDir;

/// The modules opensips-icscf.cfg loads, besides dmbridge and proto_udp (built into the core).
const MODULES: &[&str] = &["sl", "tm", "maxfwd", "sipmsgops", "json"];

#[test]
fn icscf_in_opensips_asks_the_hss() {
    let Some(tree) = OpensipsTree::for_test("roles_icscf_opensips", MODULES) else {
        return;
    };
    let dir = TestDir::new("roles-icscf-opensips");
    tree.build_dmbridge(dir.path());
    let scscf = Uas::start();
    let scscf_uri = format!("sip:127.0.0.1:{}", scscf.port);
    let cx = CxRoleOpensips::start(
        &tree,
        dir.path(),
        "icscf",
        ICSCF,
        &hss_options(&scscf_uri),
        &[],
    );
    run_icscf_scenario(
        cx.opensips.sip_port,
        &scscf,
        &cx.hss,
        cx.hss_port,
        cx.capture,
    );
    let errors = cx.opensips.log_lines("ERROR:");
    assert!(errors.is_empty(), "errors in the OpenSIPS log: {errors:#?}");
}
