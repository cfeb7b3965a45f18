//! A Home Subscriber Server written in the Kamailio script (`cfg-examples/roles/
//! kamailio-hss.cfg`: Cx, 3GPP TS 29.228/29.229, subscribers in SQLite through sqlops +
//! db_sqlite), served through the real `dmbridge run` to an independent Cx client on Erlang/OTP
//! diameter (`tests/peers/cx_cscf.escript`, playing the I-CSCF and the S-CSCF). The scenario
//! and what it asserts (a registration UAR -> MAR -> UAR -> SAR -> LIR -> SAR de-registration,
//! each error of TS 29.229 §6.2 the HSS gives, the database, the script's log, the wire) are in
//! `tests/src/hss.rs`, shared with the OpenSIPS HSS (`roles_hss_opensips.rs`).

use harness::capture::Capture;
use harness::hss::{hss_role, hss_sql, run_hss_scenario};
use harness::roles::ScriptServer;
use harness::{free_port, TestDir};

#[test]
fn hss_in_kamailio_script() {
    let dir = TestDir::new("roles-hss");
    let _ = harness::dmbridge::dmbridge_bin();
    let port = free_port();
    let capture = Capture::start(dir.path(), port);
    // the HSS: bridge serving Cx + Kamailio running kamailio-hss.cfg over a fresh database
    let hss = ScriptServer::start(dir.path(), port, hss_role(&hss_sql()));
    run_hss_scenario(dir.path(), hss.port, &hss.db, capture, &|needle| {
        hss.kamailio.log_lines(needle)
    });
}
