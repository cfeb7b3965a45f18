//! The Online Charging System written in the OpenSIPS script (`cfg-examples/roles/
//! opensips-ocs.cfg`: Ro / RFC 4006 credit control, balances in SQLite through sqlops +
//! db_sqlite, the AVPs walked with the json module), served through the real `dmbridge run`
//! to an independent Credit-Control client on Erlang/OTP diameter
//! (`tests/peers/ro_ctf.escript`). The same scenario as the Kamailio OCS (`roles_ocs.rs`),
//! from `tests/src/ocs.rs`: CCR-I/U/T answered with the right Granted-Service-Unit and
//! balances, Final-Unit-Indication on the last units, 4012 on an empty balance, 5030, 5002,
//! the vendor AVPs of acme.dict by name both ways, checked by the client, in the database, in
//! the script's log and on the wire (tshark).
//!
//! Needs OPENSIPS_SRC: a built OpenSIPS source tree (3.4 - 4.0) with the modules sl,
//! sipmsgops, json, db_sqlite and sqlops built (db_sqlite needs libsqlite3-dev: `make
//! modules modules="modules/db_sqlite modules/sqlops"` in the tree; 3.4/3.5 also need
//! event_route, whose loadmodule the test adds, as tests/opensips/run.sh does). The test
//! builds the dmbridge module in that tree. Without OPENSIPS_SRC (CI: OpenSIPS is not packaged
//! by Debian), or with modules missing, it says it is skipped, naming what is missing.

use harness::capture::Capture;
use harness::ocs::{ocs_role, ocs_sql, run_ocs_scenario};
use harness::opensips::{OpensipsScriptServer, OpensipsTree};
use harness::{free_port, TestDir};

/// The modules opensips-ocs.cfg loads, besides dmbridge and proto_udp (built into the core).
const MODULES: &[&str] = &["sl", "sipmsgops", "json", "db_sqlite", "sqlops"];

#[test]
fn ocs_in_opensips_script() {
    let Some(tree) = OpensipsTree::for_test("roles_ocs_opensips", MODULES) else {
        return;
    };
    let dir = TestDir::new("roles-ocs-opensips");
    tree.build_dmbridge(dir.path());
    let ocs_port = free_port();
    // the client connects to the bridge on ocs_port; capture that conversation
    let capture = Capture::start(dir.path(), ocs_port);
    // the bridge (with acme.dict) + OpenSIPS running opensips-ocs.cfg over a fresh database,
    // both UDP workers (udp_workers=2) serving Diameter requests
    let ocs = OpensipsScriptServer::start(&tree, dir.path(), ocs_port, ocs_role(&ocs_sql()));
    run_ocs_scenario(dir.path(), ocs_port, &ocs.db, capture, &|needle| {
        ocs.opensips.log_lines(needle)
    });
    let errors = ocs.opensips.log_lines("ERROR:");
    assert!(errors.is_empty(), "errors in the OpenSIPS log: {errors:#?}");
}
