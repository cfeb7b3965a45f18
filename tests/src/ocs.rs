//! The Online Charging System scenario both OCS scripts are tested with: the Kamailio one
//! (`tests/tests/roles_ocs.rs`) and the OpenSIPS one (`tests/tests/roles_ocs_opensips.rs`).
//! One scenario, so that the two SIP servers are held to the same answers, balances and wire.
//!
//! An independent Credit-Control client on Erlang/OTP diameter (`tests/peers/ro_ctf.escript`)
//! sends the CCRs; asserted on the client's side (what it decoded), in the database, in the
//! script's log and on the wire (tshark decoding the capture between the client and the
//! bridge):
//! - CCR-Initial reserves: Granted-Service-Unit = what was asked while the balance pays for
//!   it; the last units carry Final-Unit-Indication (TERMINATE); an empty balance gets 4012
//!   DIAMETER_CREDIT_LIMIT_REACHED, an unknown subscriber 5030, an update for a session never
//!   started 5002.
//! - CCR-Update settles the used units and reserves again; CCR-Terminate refunds what was
//!   reserved and not used (the balance in the database is exact).
//! - Item 8 of the roles issue: a user's vendor dictionary (`cfg-examples/roles/acme.dict`,
//!   aaa_diameter format) reaches the script by name both ways: the script reads
//!   `Acme-Tariff-Class` from the CCR (tariff 3 costs 3 per second) and answers
//!   `Acme-Balance`, which arrives as vendor 99999 code 1002.

use std::path::{Path, PathBuf};

use crate::bridge::BridgeApp;
use crate::capture::Capture;
use crate::paths::repo_root;
use crate::roles::{sqlite, ScriptRole, ScriptedPeer};
use crate::tshark;

/// The OCS's Origin-Host and realm (the client's Destination-Realm).
pub const OCS: &str = "ocs.test.local";

/// Credit-Control (RFC 4006 application 4), what the bridge advertises for the OCS.
pub const OCS_APP: BridgeApp = BridgeApp {
    id: 4,
    vendor: None,
    acct: false,
};

/// The vendor dictionary the bridge loads for the OCS scripts.
pub fn ocs_dictionaries() -> Vec<PathBuf> {
    vec![repo_root().join("cfg-examples/roles/acme.dict")]
}

/// The schema of the OCS scripts' database (kamailio-ocs.cfg's header) and the scenario's
/// accounts: alice 100 s, bob nothing, carol 1000 s.
pub fn ocs_sql() -> String {
    let mut sql = String::from(
        "CREATE TABLE balance (subscriber TEXT PRIMARY KEY, seconds INTEGER NOT NULL);\
         CREATE TABLE reservation (session TEXT PRIMARY KEY, subscriber TEXT NOT NULL, \
         reserved INTEGER NOT NULL, tariff INTEGER NOT NULL);",
    );
    for (sub, secs) in [("4917001", 100), ("4917002", 0), ("4917003", 1000)] {
        sql.push_str(&format!("INSERT INTO balance VALUES ('{sub}', {secs});"));
    }
    sql
}

/// The OCS as a script role (`<server>-ocs.cfg`, database `ocs.db`, acme.dict loaded) over the
/// database `sql` makes (from [`ocs_sql`]), for [`crate::roles::ScriptServer`] and
/// [`crate::opensips::OpensipsScriptServer`].
pub fn ocs_role(sql: &str) -> ScriptRole<'_> {
    ScriptRole {
        role: "ocs",
        host: OCS,
        app: OCS_APP,
        dictionaries: ocs_dictionaries(),
        sql,
    }
}

fn balance(db: &Path, sub: &str) -> i64 {
    sqlite(
        db,
        &format!("SELECT seconds FROM balance WHERE subscriber = '{sub}'"),
    )
    .parse()
    .unwrap_or_else(|e| panic!("balance of {sub}: {e}"))
}

/// `(rc, gsu, fua, balance)` of an ANSWER line, after checking it echoes type and number.
fn cca(line: &str, ty: u32, num: u32) -> (u32, i64, i64, i64) {
    assert!(line.starts_with("ANSWER e=0 "), "CCA: {line}");
    let f = |k: &str| ScriptedPeer::field(line, k).to_string();
    assert_eq!(f("type"), ty.to_string(), "CC-Request-Type echoed: {line}");
    assert_eq!(
        f("num"),
        num.to_string(),
        "CC-Request-Number echoed: {line}"
    );
    let n = |k: &str| -> i64 {
        f(k).parse()
            .unwrap_or_else(|e| panic!("{k} in {line}: {e}"))
    };
    (n("rc") as u32, n("gsu"), n("fua"), n("balance"))
}

/// Runs the scenario against the OCS served on 127.0.0.1:`port` over the database `db` (made
/// from [`ocs_sql`]); `capture` holds that port's conversation from before the client
/// connected; `log_lines(needle)` returns the script's log lines containing `needle` (its
/// per-request line names the tariff it read: `tariff 3`).
pub fn run_ocs_scenario(
    dir: &Path,
    port: u16,
    db: &Path,
    capture: Capture,
    log_lines: &dyn Fn(&str) -> Vec<String>,
) {
    let c = ScriptedPeer::client(dir, "ro_ctf.escript", port, OCS);

    // alice: 100 s. Initial asks 60 -> 60 granted, 40 left
    let a = c.cmd("ccr alice initial 0 4917001 req=60");
    assert_eq!(cca(&a, 1, 0), (2001, 60, -1, 40), "{a}");
    assert_eq!(balance(db, "4917001"), 40);
    // update: used all 60, asks 60 again -> only 40 left: 40 with Final-Unit-Indication
    let a = c.cmd("ccr alice update 1 4917001 req=60 used=60");
    assert_eq!(cca(&a, 2, 1), (2001, 40, 0, 0), "{a}");
    // terminate: used 30 of the 40 -> 10 back
    let a = c.cmd("ccr alice terminate 2 4917001 used=30");
    assert_eq!(cca(&a, 3, 2), (2001, -1, -1, 10), "{a}");
    assert_eq!(balance(db, "4917001"), 10);
    assert_eq!(
        sqlite(db, "SELECT count(*) FROM reservation"),
        "0",
        "the session's reservation is settled"
    );

    // bob has nothing: 4012 DIAMETER_CREDIT_LIMIT_REACHED, nothing reserved
    let a = c.cmd("ccr bob initial 0 4917002 req=60");
    assert_eq!(cca(&a, 1, 0).0, 4012, "{a}");
    assert_eq!(balance(db, "4917002"), 0);
    // no such account: 5030 DIAMETER_USER_UNKNOWN
    let a = c.cmd("ccr nobody initial 0 4917099 req=60");
    assert_eq!(cca(&a, 1, 0).0, 5030, "{a}");
    // an update for a session that never started: 5002 DIAMETER_UNKNOWN_SESSION_ID
    let a = c.cmd("ccr ghost update 1 4917003 used=10 req=10");
    assert_eq!(cca(&a, 2, 1).0, 5002, "{a}");

    // carol (1000 s) at tariff 3, from the vendor dictionary: 100 s cost 300
    let a = c.cmd("ccr carol initial 0 4917003 req=100 tariff=3");
    assert_eq!(cca(&a, 1, 0), (2001, 100, -1, 700), "{a}");
    assert_eq!(balance(db, "4917003"), 700);
    // at tariff 3, 700 pays for 233 s: asking 300 gets the last 233
    let a = c.cmd("ccr carol update 1 4917003 req=300 used=100 tariff=3");
    assert_eq!(cca(&a, 2, 1), (2001, 233, 0, 1), "{a}");
    let lines = log_lines("tariff 3");
    assert_eq!(
        lines.len(),
        2,
        "the script read Acme-Tariff-Class by name: {lines:#?}"
    );

    // the wire, as Wireshark decodes it
    let pcap = capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[port]);
    let answers: Vec<_> = msgs
        .iter()
        .filter(|m| m.cmd_code == 272 && !m.is_request())
        .collect();
    assert_eq!(answers.len(), 8, "one CCA per CCR");
    for m in &answers {
        let problems = m.problems(tshark::EXPERT_WARN, |msg| {
            // Acme's AVPs are not in Wireshark's dictionary
            tshark::is_unknown_to_dictionary(msg)
        });
        assert!(problems.is_empty(), "{problems:?}");
    }
    let codes: Vec<_> = answers
        .iter()
        .map(|m| m.value("Result-Code").unwrap_or("none").to_string())
        .collect();
    assert_eq!(
        codes,
        ["2001", "2001", "2001", "4012", "5030", "5002", "2001", "2001"],
        "Result-Codes on the wire"
    );
    let gsu: Vec<String> = answers[0]
        .find_deep("Granted-Service-Unit")
        .iter()
        .flat_map(|g| g.children.iter())
        .filter(|a| a.code == 420)
        .filter_map(|a| a.value.clone())
        .collect();
    assert_eq!(
        gsu,
        ["60"],
        "CC-Time in the first CCA's Granted-Service-Unit"
    );
    assert!(
        !answers[1].find_deep("Final-Unit-Indication").is_empty(),
        "the last units carry Final-Unit-Indication"
    );
    // Acme-Balance: vendor 99999, code 1002, V and M set, 4-byte value 1
    let acme = answers[7]
        .avps
        .iter()
        .find(|a| a.code == 1002 && a.vendor == Some(99_999))
        .unwrap_or_else(|| panic!("no Acme-Balance in {:?}", answers[7].avps));
    assert_eq!(acme.flags & 0xc0, 0xc0, "V and M bits");
    assert_eq!(acme.data(), [0, 0, 0, 1]);
    // the CCRs the client sent carried the tariff the same way
    let ccr_tariffs = msgs
        .iter()
        .filter(|m| m.cmd_code == 272 && m.is_request())
        .filter(|m| {
            m.avps
                .iter()
                .any(|a| a.code == 1001 && a.vendor == Some(99_999) && a.data() == [0, 0, 0, 3])
        })
        .count();
    assert_eq!(ccr_tariffs, 2);
}
