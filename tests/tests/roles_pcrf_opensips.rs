//! The PCRF written in the OpenSIPS script (`cfg-examples/roles/opensips-pcrf.cfg`: Rx, 3GPP
//! TS 29.214, Gx-less: IP-CAN sessions and AF sessions in SQLite through sqlops + db_sqlite,
//! the AVPs walked with the json module), served through the real `dmbridge run` to an
//! independent Rx client on Erlang/OTP diameter (`tests/peers/rx_af.escript`, playing the
//! P-CSCF). The same scenario as the Kamailio PCRF (`roles_pcrf.rs`), from `tests/src/pcrf.rs`:
//! AARs authorised against the user's IP-CAN session, 5063 with Acceptable-Service-Info, the
//! smaller retry, an update replacing its own share, 5002 and 5065, STR releasing, checked by
//! the client, in the database, in the script's log and on the wire (tshark).
//!
//! Needs OPENSIPS_SRC: a built OpenSIPS source tree (3.4 - 4.0) with the modules sl,
//! sipmsgops, json, db_sqlite and sqlops built (db_sqlite needs libsqlite3-dev: `make
//! modules modules="modules/db_sqlite modules/sqlops"` in the tree; 3.4/3.5 also need
//! event_route, which the test loads when the tree has it). The test builds the dmbridge module
//! in that tree. Without OPENSIPS_SRC (CI: OpenSIPS is not packaged by Debian), or with modules
//! missing, it says it is skipped, naming what is missing.

use harness::capture::Capture;
use harness::opensips::{OpensipsScriptServer, OpensipsTree};
use harness::pcrf::{pcrf_role, run_pcrf_scenario};
use harness::{free_port, TestDir};

/// The modules opensips-pcrf.cfg loads, besides dmbridge and proto_udp (built into the core).
const MODULES: &[&str] = &["sl", "sipmsgops", "json", "db_sqlite", "sqlops"];

#[test]
fn pcrf_in_opensips_script() {
    let Some(tree) = OpensipsTree::for_test("roles_pcrf_opensips", MODULES) else {
        return;
    };
    let dir = TestDir::new("roles-pcrf-opensips");
    tree.build_dmbridge(dir.path());
    let port = free_port();
    // the client connects to the bridge on port; capture that conversation
    let capture = Capture::start(dir.path(), port);
    let pcrf = OpensipsScriptServer::start(&tree, dir.path(), port, pcrf_role());
    run_pcrf_scenario(dir.path(), port, &pcrf.db, capture, &|needle| {
        pcrf.opensips.log_lines(needle)
    });
    let errors = pcrf.opensips.log_lines("ERROR:");
    assert!(errors.is_empty(), "errors in the OpenSIPS log: {errors:#?}");
}
