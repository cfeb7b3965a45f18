//! An Online Charging System written in the Kamailio script (`cfg-examples/roles/
//! kamailio-ocs.cfg`: Ro / RFC 4006 credit control, balances in SQLite through sqlops +
//! db_sqlite), served through the real `dmbridge run` to an independent Credit-Control client
//! on Erlang/OTP diameter (`tests/peers/ro_ctf.escript`).
//!
//! Asserted on the client's side (what it decoded), in the database, in the script's log and
//! on the wire (tshark decoding the capture between the client and the bridge):
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

use std::path::Path;

use harness::bridge::BridgeApp;
use harness::capture::Capture;
use harness::paths::repo_root;
use harness::roles::{sqlite, ScriptRole, ScriptServer, ScriptedPeer};
use harness::{free_port, tshark, TestDir};

const OCS: &str = "ocs.test.local";

fn balance(db: &Path, sub: &str) -> i64 {
    sqlite(
        db,
        &format!("SELECT seconds FROM balance WHERE subscriber = '{sub}'"),
    )
    .parse()
    .unwrap_or_else(|e| panic!("balance of {sub}: {e}"))
}

/// The OCS: bridge (with acme.dict) + Kamailio running kamailio-ocs.cfg over a fresh database.
fn start_ocs(dir: &Path, port: u16, balances: &[(&str, i64)]) -> ScriptServer {
    let mut sql = String::from(
        "CREATE TABLE balance (subscriber TEXT PRIMARY KEY, seconds INTEGER NOT NULL);\
         CREATE TABLE reservation (session TEXT PRIMARY KEY, subscriber TEXT NOT NULL, \
         reserved INTEGER NOT NULL, tariff INTEGER NOT NULL);",
    );
    for (sub, secs) in balances {
        sql.push_str(&format!("INSERT INTO balance VALUES ('{sub}', {secs});"));
    }
    ScriptServer::start(
        dir,
        port,
        ScriptRole {
            role: "ocs",
            host: OCS,
            app: BridgeApp {
                id: 4,
                vendor: None,
                acct: false,
            },
            dictionaries: vec![repo_root().join("cfg-examples/roles/acme.dict")],
            sql: &sql,
        },
    )
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

#[test]
fn ocs_in_kamailio_script() {
    let dir = TestDir::new("roles-ocs");
    let _ = harness::dmbridge::dmbridge_bin();
    let ocs_port = free_port();
    // the client connects to the bridge on ocs_port; capture that conversation
    let capture = Capture::start(dir.path(), ocs_port);
    let ocs = start_ocs(
        dir.path(),
        ocs_port,
        &[("4917001", 100), ("4917002", 0), ("4917003", 1000)],
    );
    let c = ScriptedPeer::client(dir.path(), "ro_ctf.escript", ocs.port, OCS);

    // alice: 100 s. Initial asks 60 -> 60 granted, 40 left
    let a = c.cmd("ccr alice initial 0 4917001 req=60");
    assert_eq!(cca(&a, 1, 0), (2001, 60, -1, 40), "{a}");
    assert_eq!(balance(&ocs.db, "4917001"), 40);
    // update: used all 60, asks 60 again -> only 40 left: 40 with Final-Unit-Indication
    let a = c.cmd("ccr alice update 1 4917001 req=60 used=60");
    assert_eq!(cca(&a, 2, 1), (2001, 40, 0, 0), "{a}");
    // terminate: used 30 of the 40 -> 10 back
    let a = c.cmd("ccr alice terminate 2 4917001 used=30");
    assert_eq!(cca(&a, 3, 2), (2001, -1, -1, 10), "{a}");
    assert_eq!(balance(&ocs.db, "4917001"), 10);
    assert_eq!(
        sqlite(&ocs.db, "SELECT count(*) FROM reservation"),
        "0",
        "the session's reservation is settled"
    );

    // bob has nothing: 4012 DIAMETER_CREDIT_LIMIT_REACHED, nothing reserved
    let a = c.cmd("ccr bob initial 0 4917002 req=60");
    assert_eq!(cca(&a, 1, 0).0, 4012, "{a}");
    assert_eq!(balance(&ocs.db, "4917002"), 0);
    // no such account: 5030 DIAMETER_USER_UNKNOWN
    let a = c.cmd("ccr nobody initial 0 4917099 req=60");
    assert_eq!(cca(&a, 1, 0).0, 5030, "{a}");
    // an update for a session that never started: 5002 DIAMETER_UNKNOWN_SESSION_ID
    let a = c.cmd("ccr ghost update 1 4917003 used=10 req=10");
    assert_eq!(cca(&a, 2, 1).0, 5002, "{a}");

    // carol (1000 s) at tariff 3, from the vendor dictionary: 100 s cost 300
    let a = c.cmd("ccr carol initial 0 4917003 req=100 tariff=3");
    assert_eq!(cca(&a, 1, 0), (2001, 100, -1, 700), "{a}");
    assert_eq!(balance(&ocs.db, "4917003"), 700);
    // at tariff 3, 700 pays for 233 s: asking 300 gets the last 233
    let a = c.cmd("ccr carol update 1 4917003 req=300 used=100 tariff=3");
    assert_eq!(cca(&a, 2, 1), (2001, 233, 0, 1), "{a}");
    let lines = ocs.kamailio.log_lines("tariff 3");
    assert_eq!(
        lines.len(),
        2,
        "the script read Acme-Tariff-Class by name: {lines:#?}"
    );

    // the wire, as Wireshark decodes it
    let pcap = capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[ocs.port]);
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
