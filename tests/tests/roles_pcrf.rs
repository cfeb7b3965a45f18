//! A PCRF written in the Kamailio script (`cfg-examples/roles/kamailio-pcrf.cfg`: Rx, 3GPP TS
//! 29.214, Gx-less: IP-CAN sessions and AF sessions in SQLite through sqlops + db_sqlite),
//! served through the real `dmbridge run` to an independent Rx client on Erlang/OTP diameter
//! (`tests/peers/rx_af.escript`, playing the P-CSCF). The scenario and what it asserts
//! (answers with 5063 / Acceptable-Service-Info, 5065, 5002, the database, the script's log,
//! the wire) are in `tests/src/pcrf.rs`, shared with the OpenSIPS PCRF
//! (`roles_pcrf_opensips.rs`).

use harness::capture::Capture;
use harness::pcrf::{pcrf_role, run_pcrf_scenario};
use harness::roles::ScriptServer;
use harness::{free_port, TestDir};

#[test]
fn pcrf_in_kamailio_script() {
    let dir = TestDir::new("roles-pcrf");
    let _ = harness::dmbridge::dmbridge_bin();
    let port = free_port();
    // the client connects to the bridge on port; capture that conversation
    let capture = Capture::start(dir.path(), port);
    let pcrf = ScriptServer::start(dir.path(), port, pcrf_role());
    run_pcrf_scenario(dir.path(), pcrf.port, &pcrf.db, capture, &|needle| {
        pcrf.kamailio.log_lines(needle)
    });
}
