//! The S-CSCF written in the OpenSIPS script (`cfg-examples/roles/opensips-scscf.cfg`: Cx
//! MAR/SAR through `async(dm_send_request(...))`, the digest checked by the auth module's
//! pv_www_authorize against the HSS's HA1, the state in cachedb_local, PPR and RTR served in
//! event routes) registering users with SIP Digest vectors from a Cx HSS on Erlang/OTP
//! diameter (`tests/peers/cx_hss.escript`), through the real `dmbridge run`. The same scenario
//! as the Kamailio S-CSCF (`roles_scscf.rs`), from `tests/src/scscf.rs`: MAR -> 401 -> SAR
//! REGISTRATION / RE_REGISTRATION / USER_DEREGISTRATION / AUTHENTICATION_FAILURE, 403 on MAA
//! 5001 and on a refused SAR, 504 when the HSS does not answer, PPR stored, RTR removing the
//! binding (a later INVITE: 404); checked on the SIP side, in the HSS's log and on the wire
//! (tshark on every MAR and SAR). The stored profile is read over MI (`cache_fetch`). A
//! second test takes the stale-nonce path (the copy's nonce_expire rewritten to 2 s): a new
//! 401 with stale=true from the auth module, no second MAR.
//!
//! Needs OPENSIPS_SRC: a built OpenSIPS source tree (3.4 - 4.0) with the modules signaling
//! sl tm maxfwd sipmsgops auth cachedb_local json mi_fifo built (3.4/3.5 also need
//! event_route, whose loadmodule the test adds, as tests/opensips/run.sh does). The test
//! builds the dmbridge module in that tree. Without OPENSIPS_SRC (CI: OpenSIPS is not packaged
//! by Debian), or with modules missing, it says it is skipped, naming what is missing.

use std::path::Path;
use std::time::Duration;

use harness::opensips::{mi_fifo, CxRoleOpensips, OpensipsTree, RoleOpensips};
use harness::roles::opensips_event_route_rewrites;
use harness::scscf::{
    hss_options, run_scscf_scenario, run_stale_nonce_scenario, ScscfUnderTest, SCSCF,
};
use harness::TestDir;

/// The modules opensips-scscf.cfg loads, besides dmbridge and proto_udp (built into the core).
const MODULES: &[&str] = &[
    "signaling",
    "sl",
    "tm",
    "maxfwd",
    "sipmsgops",
    "auth",
    "cachedb_local",
    "json",
    "mi_fifo",
];

/// The tree OPENSIPS_SRC names, or None after saying the test is skipped and why.
fn tree() -> Option<OpensipsTree> {
    OpensipsTree::for_test("roles_scscf_opensips", MODULES)
}

/// The S-CSCF on OpenSIPS in `dir` with the cfg's `rewrites` besides the MI FIFO's path (in
/// `dir`, returned) and, for 3.4/3.5, the event_route module.
fn start(
    tree: &OpensipsTree,
    dir: &Path,
    extra: &[(&str, String)],
) -> (CxRoleOpensips, std::path::PathBuf) {
    // once per process: both tests of this file use the one build
    tree.build_dmbridge(dir);
    let fifo = dir.join("opensips-scscf.fifo");
    let mut rewrites = vec![("/run/opensips/opensips_fifo", fifo.display().to_string())];
    rewrites.extend(opensips_event_route_rewrites(tree));
    rewrites.extend(extra.iter().cloned());
    let cx = CxRoleOpensips::start(tree, dir, "scscf", SCSCF, &hss_options(), &rewrites);
    (cx, fifo)
}

/// The PPR's User-Data as the cfg keeps it (cachedb_local, profile_<impi>), over MI.
fn profile(fifo: &Path, impi: &str) -> String {
    mi_fifo(
        fifo,
        "cache_fetch",
        &serde_json::json!({"system": "local", "attr": format!("profile_{impi}")}),
    )
}

fn assert_no_errors(opensips: &RoleOpensips) {
    let errors = opensips.log_lines("ERROR:");
    assert!(errors.is_empty(), "errors in the OpenSIPS log: {errors:#?}");
}

#[test]
fn scscf_in_opensips_registers_with_digest_from_the_hss() {
    let Some(tree) = tree() else { return };
    let dir = TestDir::new("roles-scscf-opensips");
    let (cx, fifo) = start(&tree, dir.path(), &[]);
    run_scscf_scenario(ScscfUnderTest {
        sip_port: cx.opensips.sip_port,
        hss: &cx.hss,
        hss_port: cx.hss_port,
        capture: cx.capture,
        profile: &|impi| profile(&fifo, impi),
    });
    assert_no_errors(&cx.opensips);
}

#[test]
fn scscf_in_opensips_challenges_a_stale_nonce_again() {
    let Some(tree) = tree() else { return };
    let dir = TestDir::new("roles-scscf-opensips-stale");
    let nonce_expire = Duration::from_secs(2);
    let (cx, fifo) = start(
        &tree,
        dir.path(),
        &[(
            "modparam(\"auth\", \"nonce_expire\", 60)",
            format!(
                "modparam(\"auth\", \"nonce_expire\", {})",
                nonce_expire.as_secs()
            ),
        )],
    );
    run_stale_nonce_scenario(
        ScscfUnderTest {
            sip_port: cx.opensips.sip_port,
            hss: &cx.hss,
            hss_port: cx.hss_port,
            capture: cx.capture,
            profile: &|impi| profile(&fifo, impi),
        },
        nonce_expire,
    );
    assert_no_errors(&cx.opensips);
}
