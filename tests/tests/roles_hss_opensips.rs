//! The Home Subscriber Server written in the OpenSIPS script (`cfg-examples/roles/
//! opensips-hss.cfg`: Cx, 3GPP TS 29.228/29.229, subscribers in SQLite through sqlops +
//! db_sqlite, the AVPs walked with the json module), served through the real `dmbridge run` to
//! an independent Cx client on Erlang/OTP diameter (`tests/peers/cx_cscf.escript`, playing the
//! I-CSCF and the S-CSCF). The same scenario as the Kamailio HSS (`roles_hss.rs`), from
//! `tests/src/hss.rs`: UAR/MAR/SAR/LIR answered with the Result-Codes and Experimental-Results
//! of TS 29.229 §6.2, answers completed by the bridge to the layout the client's strict codec
//! requires, checked by the client, in the database, in the script's log and on the wire
//! (tshark).
//!
//! Needs OPENSIPS_SRC: a built OpenSIPS source tree (3.4 - 4.0) with the modules sl,
//! sipmsgops, json, db_sqlite and sqlops built (db_sqlite needs libsqlite3-dev: `make
//! modules modules="modules/db_sqlite modules/sqlops"` in the tree; 3.4/3.5 also need
//! event_route, whose loadmodule the test adds). The test builds the dmbridge module in that
//! tree. Without OPENSIPS_SRC (CI: OpenSIPS is not packaged by Debian), or with modules
//! missing, it says it is skipped, naming what is missing.

use harness::capture::Capture;
use harness::hss::{hss_role, hss_sql, run_hss_scenario};
use harness::opensips::{OpensipsScriptServer, OpensipsTree};
use harness::{free_port, TestDir};

/// The modules opensips-hss.cfg loads, besides dmbridge and proto_udp (built into the core).
const MODULES: &[&str] = &["sl", "sipmsgops", "json", "db_sqlite", "sqlops"];

#[test]
fn hss_in_opensips_script() {
    let Some(tree) = OpensipsTree::for_test("roles_hss_opensips", MODULES) else {
        return;
    };
    let dir = TestDir::new("roles-hss-opensips");
    tree.build_dmbridge(dir.path());
    let port = free_port();
    // the client connects to the bridge on port; capture that conversation
    let capture = Capture::start(dir.path(), port);
    let hss = OpensipsScriptServer::start(&tree, dir.path(), port, hss_role(&hss_sql()));
    run_hss_scenario(dir.path(), port, &hss.db, capture, &|needle| {
        hss.opensips.log_lines(needle)
    });
    let errors = hss.opensips.log_lines("ERROR:");
    assert!(errors.is_empty(), "errors in the OpenSIPS log: {errors:#?}");
}
