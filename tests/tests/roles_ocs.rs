//! An Online Charging System written in the Kamailio script (`cfg-examples/roles/
//! kamailio-ocs.cfg`: Ro / RFC 4006 credit control, balances in SQLite through sqlops +
//! db_sqlite), served through the real `dmbridge run` to an independent Credit-Control client
//! on Erlang/OTP diameter (`tests/peers/ro_ctf.escript`). The scenario and what it asserts
//! (answers, balances, the script's log, the wire, the vendor dictionary by name) are in
//! `tests/src/ocs.rs`, shared with the OpenSIPS OCS (`roles_ocs_opensips.rs`).

use harness::capture::Capture;
use harness::ocs::{ocs_role, ocs_sql, run_ocs_scenario};
use harness::roles::ScriptServer;
use harness::{free_port, TestDir};

#[test]
fn ocs_in_kamailio_script() {
    let dir = TestDir::new("roles-ocs");
    let _ = harness::dmbridge::dmbridge_bin();
    let ocs_port = free_port();
    // the client connects to the bridge on ocs_port; capture that conversation
    let capture = Capture::start(dir.path(), ocs_port);
    // the OCS: bridge (with acme.dict) + Kamailio running kamailio-ocs.cfg over a fresh database
    let ocs = ScriptServer::start(dir.path(), ocs_port, ocs_role(&ocs_sql()));
    run_ocs_scenario(dir.path(), ocs.port, &ocs.db, capture, &|needle| {
        ocs.kamailio.log_lines(needle)
    });
}
