//! The PCRF scenario both PCRF scripts are tested with: the Kamailio one
//! (`tests/tests/roles_pcrf.rs`) and the OpenSIPS one (`tests/tests/roles_pcrf_opensips.rs`).
//! One scenario, so that the two SIP servers are held to the same answers, database and wire.
//!
//! An independent Rx client on Erlang/OTP diameter (`tests/peers/rx_af.escript`, playing the
//! P-CSCF) sends the AARs and STRs. Asserted on the client's side (its strict codec needs the
//! { Auth-Application-Id } the AAA ABNF requires, which the scripts leave out and the bridge
//! copies from the request), in the database and on the wire (tshark):
//! - AAR authorises media while the user's IP-CAN session has bandwidth left (the sum of
//!   Max-Requested-Bandwidth over every Media-Component-Description and over the user's other
//!   AF sessions); beyond it 5063 REQUESTED_SERVICE_NOT_AUTHORIZED with Acceptable-Service-Info
//!   holding what is left, and the P-CSCF's smaller retry is authorised;
//! - an update replaces the session's own share; an update of an unknown session 5002; a user
//!   without an IP-CAN session 5065 IP-CAN_SESSION_NOT_AVAILABLE;
//! - STR releases the session (2001), a second STR for it 5002; nothing is left in the table.

use std::path::Path;

use crate::bridge::BridgeApp;
use crate::capture::Capture;
use crate::roles::{sqlite, ScriptRole, ScriptedPeer};
use crate::tshark;

/// The PCRF's Origin-Host and realm (the client's Destination-Realm).
pub const PCRF: &str = "pcrf.test.local";

/// Rx (3GPP TS 29.214), what the bridge advertises for the PCRF.
pub const RX_APP: BridgeApp = BridgeApp {
    id: 16_777_236,
    vendor: Some(10_415),
    acct: false,
};

/// The schema of the PCRF scripts' database (kamailio-pcrf.cfg's header) and the scenario's
/// one IP-CAN session: alice, 200 kbit/s up, 400 kbit/s down.
pub const PCRF_SQL: &str = "CREATE TABLE ipcan (subscriber TEXT PRIMARY KEY, \
     max_ul INTEGER NOT NULL, max_dl INTEGER NOT NULL);\
     CREATE TABLE af_session (session TEXT PRIMARY KEY, subscriber TEXT NOT NULL, \
     ul INTEGER NOT NULL, dl INTEGER NOT NULL);\
     INSERT INTO ipcan VALUES ('sip:alice@ims.test', 200000, 400000);";

/// The PCRF as a script role (`kamailio-pcrf.cfg`, `opensips-pcrf.cfg`): its host, Rx, no
/// dictionary file, [`PCRF_SQL`].
pub fn pcrf_role() -> ScriptRole<'static> {
    ScriptRole {
        role: "pcrf",
        host: PCRF,
        app: RX_APP,
        dictionaries: Vec::new(),
        sql: PCRF_SQL,
    }
}

/// `(cmd, rc, exp, asi_ul, asi_dl)` of an answer line, after checking it decoded under the
/// client's strict codec and names the Rx application.
fn answer(line: &str) -> (u32, u32, u32, i64, i64) {
    assert!(line.starts_with("ANSWER cmd="), "{line}");
    assert!(!line.contains("undecoded"), "{line}");
    let f = |k: &str| ScriptedPeer::field(line, k).to_string();
    let n = |k: &str| -> i64 {
        f(k).parse()
            .unwrap_or_else(|e| panic!("{k} in {line}: {e}"))
    };
    assert_eq!(f("e"), "0", "{line}");
    if n("cmd") == 265 {
        assert_eq!(
            n("app"),
            i64::from(RX_APP.id),
            "Auth-Application-Id: {line}"
        );
    }
    (
        n("cmd") as u32,
        n("rc") as u32,
        n("exp") as u32,
        n("asi_ul"),
        n("asi_dl"),
    )
}

/// `(cmd, rc, exp)` of an answer line ([`answer`]).
fn head(line: &str) -> (u32, u32, u32) {
    let (cmd, rc, exp, _, _) = answer(line);
    (cmd, rc, exp)
}

/// Runs the scenario against the PCRF served on 127.0.0.1:`port` over the database `db` (made
/// from [`PCRF_SQL`]); `capture` holds that port's conversation from before the client
/// connected; `log_lines(needle)` returns the script's log lines containing `needle` (it logs
/// its refusal for lack of bandwidth with `-> 5063`).
pub fn run_pcrf_scenario(
    dir: &Path,
    port: u16,
    db: &Path,
    capture: Capture,
    log_lines: &dyn Fn(&str) -> Vec<String>,
) {
    let af = ScriptedPeer::client(dir, "rx_af.escript", port, PCRF);
    let alice = "sip:alice@ims.test";
    let held = || {
        sqlite(
            db,
            "SELECT COALESCE(SUM(ul), 0) || ' ' || COALESCE(SUM(dl), 0) FROM af_session",
        )
    };

    // call 1: one audio stream, 64 kbit/s each way
    let a = af.cmd(&format!("aar call1 {alice} media=64000:64000"));
    assert_eq!(head(&a), (265, 2001, 0), "{a}");
    assert!(a.contains(" ass=0 "), "STATE_MAINTAINED: {a}");
    // call 2 asks audio + video beyond what is left (136k up, 336k down): 5063 with the rest
    let a = af.cmd(&format!(
        "aar call2 {alice} media=64000:64000,100000:300000"
    ));
    assert_eq!(answer(&a), (265, 0, 5063, 136_000, 336_000), "{a}");
    assert_eq!(held(), "64000 64000", "a refused session holds nothing");
    // the P-CSCF retries within Acceptable-Service-Info
    let a = af.cmd(&format!("aar call2 {alice} media=64000:64000,64000:200000"));
    assert_eq!(answer(&a).1, 2001, "{a}");
    assert_eq!(held(), "192000 328000");
    // call 1 re-INVITEs down to a narrow codec: its own share is replaced
    let a = af.cmd(&format!("aar call1 {alice} type=1 media=8000:8000"));
    assert_eq!(answer(&a).1, 2001, "{a}");
    assert_eq!(held(), "136000 272000");
    // an update of a session never authorised; a user without an IP-CAN session
    let a = af.cmd(&format!("aar ghost {alice} type=1 media=1:1"));
    assert_eq!(answer(&a).1, 5002, "{a}");
    let a = af.cmd("aar call3 sip:bob@ims.test media=1000:1000");
    assert_eq!(head(&a), (265, 0, 5065), "{a}");
    // BYE: STR releases; the same STR again is for a session no longer known
    let a = af.cmd("str call1");
    assert_eq!(head(&a), (275, 2001, 0), "{a}");
    let a = af.cmd("str call1");
    assert_eq!(answer(&a).1, 5002, "{a}");
    let a = af.cmd("str call2");
    assert_eq!(answer(&a).1, 2001, "{a}");
    assert_eq!(held(), "0 0", "every session released");
    assert_eq!(
        log_lines("-> 5063").len(),
        1,
        "the script logged its refusal"
    );

    // the wire, as Wireshark decodes it
    let pcap = capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[port]);
    let answers: Vec<_> = msgs
        .iter()
        .filter(|m| matches!(m.cmd_code, 265 | 275) && !m.is_request())
        .collect();
    assert_eq!(answers.len(), 9, "one answer per request");
    for m in &answers {
        let problems = m.problems(tshark::EXPERT_WARN, |_| false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(m.app_id, RX_APP.id);
    }
    let codes: Vec<String> = answers
        .iter()
        .map(|m| m.result_code().unwrap_or("none").to_string())
        .collect();
    assert_eq!(
        codes,
        ["2001", "5063", "2001", "2001", "5002", "5065", "2001", "5002", "2001"],
        "codes on the wire"
    );
    let asi = answers[1].find_deep("Acceptable-Service-Info");
    assert_eq!(
        asi.len(),
        1,
        "the 5063 answer carries Acceptable-Service-Info"
    );
}
