//! The Home Subscriber Server scenario both HSS scripts are tested with: the Kamailio one
//! (`tests/tests/roles_hss.rs`, `cfg-examples/roles/kamailio-hss.cfg`) and the OpenSIPS one
//! (`tests/tests/roles_hss_opensips.rs`, `opensips-hss.cfg`). One scenario, so that the two
//! SIP servers are held to the same answers, database and wire (Cx, 3GPP TS 29.228/29.229).
//!
//! An independent Cx client on Erlang/OTP diameter (`tests/peers/cx_cscf.escript`, playing
//! the I-CSCF and the S-CSCF) sends the requests. Asserted on the client's side (what its
//! strict codec decoded: every answer must carry the { Vendor-Specific-Application-Id } and
//! { Auth-Session-State } the answer ABNF requires, which the scripts leave out and the bridge
//! copies from the request), in the database, in the script's log and on the wire (tshark
//! decoding the capture between client and bridge):
//! - a registration as the CSCFs run it: UAR (first registration: Server-Capabilities to pick
//!   an S-CSCF) -> MAR (one SIP Digest vector: the subscriber's HA1; the S-CSCF is stored) ->
//!   UAR again (2002 with that S-CSCF) -> SAR REGISTRATION (profile in User-Data) -> LIR
//!   (Server-Name) -> SAR USER_DEREGISTRATION (nobody serves the user any more);
//! - each error of TS 29.229 §6.2 this HSS gives: unknown user 5001, identities that do not
//!   match 5002, de-registration of a user nobody serves 5003 (experimental), a barred user
//!   5003 (base Result-Code), an unsupported authentication scheme 5006, an assignment type it
//!   does not handle 5007, and LIR for a user not registered 2003 with capabilities.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::bridge::BridgeApp;
use crate::capture::Capture;
use crate::roles::{sqlite, ScriptRole, ScriptedPeer};
use crate::tshark;

/// The HSS's Origin-Host and realm (the client's Destination-Realm).
pub const HSS: &str = "hss.test.local";
/// The S-CSCFs of the scenario's `scscf` table.
pub const SCSCF1: &str = "sip:scscf1.ims.test:6060";
pub const SCSCF2: &str = "sip:scscf2.ims.test:6060";
const CX_APP: u32 = 16_777_216;
const VENDOR_3GPP: u32 = 10_415;

/// Cx (application 16777216, vendor 3GPP), what the bridge advertises for the HSS.
pub const HSS_APP: BridgeApp = BridgeApp {
    id: CX_APP,
    vendor: Some(VENDOR_3GPP),
    acct: false,
};

/// RFC 2617 HA1 = MD5(user ":" realm ":" password), by coreutils' md5sum.
pub fn ha1(user: &str, realm: &str, password: &str) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("md5sum: {e}"));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("md5sum stdin");
        stdin
            .write_all(format!("{user}:{realm}:{password}").as_bytes())
            .unwrap_or_else(|e| panic!("md5sum stdin: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("md5sum: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The schema of the HSS scripts' database (kamailio-hss.cfg's header) and the scenario's
/// subscribers: alice, bob (barred) and carol, password "secret", realm ims.test; the S-CSCFs
/// [`SCSCF1`] (capability 1) and [`SCSCF2`] (capability 2).
pub fn hss_sql() -> String {
    let mut sql = String::from(
        "CREATE TABLE subscriber (impi TEXT PRIMARY KEY, impu TEXT NOT NULL UNIQUE, \
         realm TEXT NOT NULL, ha1 TEXT NOT NULL, barred INTEGER NOT NULL DEFAULT 0, \
         scscf TEXT, registered INTEGER NOT NULL DEFAULT 0);\
         CREATE TABLE scscf (name TEXT PRIMARY KEY, capability INTEGER NOT NULL);",
    );
    for (user, barred) in [("alice", 0), ("bob", 1), ("carol", 0)] {
        sql.push_str(&format!(
            "INSERT INTO subscriber (impi, impu, realm, ha1, barred) VALUES \
             ('{user}@ims.test', 'sip:{user}@ims.test', 'ims.test', '{}', {barred});",
            ha1(&format!("{user}@ims.test"), "ims.test", "secret")
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO scscf VALUES ('{SCSCF1}', 1), ('{SCSCF2}', 2);"
    ));
    sql
}

/// The HSS as a script role (`<server>-hss.cfg`, database `hss.db`) over the database `sql`
/// makes (from [`hss_sql`]), for [`crate::roles::ScriptServer`] and
/// [`crate::opensips::OpensipsScriptServer`].
pub fn hss_role(sql: &str) -> ScriptRole<'_> {
    ScriptRole {
        role: "hss",
        host: HSS,
        app: HSS_APP,
        dictionaries: Vec::new(),
        sql,
    }
}

/// The answer line's fields, after checking the answer decoded under the client's strict
/// codec, carries the Cx application and Auth-Session-State NO_STATE_MAINTAINED, and answers
/// command `cmd` without the E bit.
fn answer(line: &str, cmd: u32) -> impl Fn(&str) -> String + '_ {
    assert!(
        line.starts_with(&format!("ANSWER cmd={cmd} e=0 ")),
        "answer to {cmd}: {line}"
    );
    let f = move |k: &str| ScriptedPeer::field(line, k).to_string();
    assert_eq!(f("vsai"), format!("{VENDOR_3GPP}/{CX_APP}"), "{line}");
    assert_eq!(f("ass"), "1", "Auth-Session-State: {line}");
    f
}

/// Runs the scenario against the HSS served on 127.0.0.1:`port` over the database `db` (made
/// from [`hss_sql`]); `capture` holds that port's conversation from before the client
/// connected; `log_lines(needle)` returns the script's log lines containing `needle` (its
/// Experimental-Result line reads `Experimental-Result 5006`).
pub fn run_hss_scenario(
    dir: &Path,
    port: u16,
    db: &Path,
    capture: Capture,
    log_lines: &dyn Fn(&str) -> Vec<String>,
) {
    let c = ScriptedPeer::client(dir, "cx_cscf.escript", port, HSS);

    let alice = ("alice@ims.test", "sip:alice@ims.test");
    let both = format!("{SCSCF1},{SCSCF2}");
    // I-CSCF, first REGISTER: DIAMETER_FIRST_REGISTRATION with the S-CSCFs to choose from
    let a = c.cmd(&format!("uar {} {}", alice.0, alice.1));
    let f = answer(&a, 300);
    assert_eq!((f("rc"), f("exp")), ("0".into(), "2001".into()), "{a}");
    assert_eq!(f("caps"), both, "{a}");
    assert_eq!(f("mcap"), "1,2", "{a}");
    assert_eq!(f("server"), "-", "{a}");

    // S-CSCF 1 asks for a SIP Digest vector: the subscriber's HA1, realm and qop
    let a = c.cmd(&format!("mar {} {} {SCSCF1}", alice.0, alice.1));
    let f = answer(&a, 303);
    assert_eq!(f("rc"), "2001", "{a}");
    assert_eq!(f("scheme"), "SIP_Digest", "{a}"); // "SIP Digest", spaces shown as _
    assert_eq!(f("ha1"), ha1(alice.0, "ims.test", "secret"), "{a}");
    assert_eq!((f("drealm"), f("qop")), ("ims.test".into(), "auth".into()));
    assert_eq!((f("items"), f("user")), ("1".into(), alice.0.into()), "{a}");
    let stored = |impi: &str| {
        sqlite(
            db,
            &format!(
                "SELECT COALESCE(scscf, '-') || ' ' || registered FROM subscriber \
                 WHERE impi = '{impi}'"
            ),
        )
    };
    assert_eq!(
        stored(alice.0),
        format!("{SCSCF1} 0"),
        "MAR stored the S-CSCF"
    );

    // a second UAR (the re-sent REGISTER) now goes to that S-CSCF
    let a = c.cmd(&format!("uar {} {}", alice.0, alice.1));
    let f = answer(&a, 300);
    assert_eq!(
        (f("exp"), f("server")),
        ("2002".into(), SCSCF1.into()),
        "{a}"
    );

    // SAR REGISTRATION: the profile, naming the user's public identity
    let a = c.cmd(&format!("sar {} {} {SCSCF1} 1", alice.0, alice.1));
    let f = answer(&a, 301);
    assert_eq!((f("rc"), f("udimpu")), ("2001".into(), "1".into()), "{a}");
    assert_eq!(f("user"), alice.0, "{a}");
    assert_eq!(stored(alice.0), format!("{SCSCF1} 1"));

    // LIR for alice (registered): her S-CSCF; for carol (never registered): 2003 + capabilities
    let a = c.cmd(&format!("lir {}", alice.1));
    let f = answer(&a, 302);
    assert_eq!(
        (f("rc"), f("server")),
        ("2001".into(), SCSCF1.into()),
        "{a}"
    );
    let a = c.cmd("lir sip:carol@ims.test");
    let f = answer(&a, 302);
    assert_eq!((f("exp"), f("caps")), ("2003".into(), both.clone()), "{a}");

    // the errors of TS 29.229 §6.2
    let exp = |line: &str, cmd: u32| answer(line, cmd)("exp");
    let rc = |line: &str, cmd: u32| answer(line, cmd)("rc");
    let a = c.cmd("uar nobody@ims.test sip:nobody@ims.test");
    assert_eq!(exp(&a, 300), "5001", "unknown user: {a}");
    let a = c.cmd("lir sip:nobody@ims.test");
    assert_eq!(exp(&a, 302), "5001", "unknown public identity: {a}");
    let a = c.cmd(&format!("uar {} sip:carol@ims.test", alice.0));
    assert_eq!(exp(&a, 300), "5002", "someone else's public identity: {a}");
    let a = c.cmd("uar bob@ims.test sip:bob@ims.test");
    assert_eq!(rc(&a, 300), "5003", "barred: {a}");
    let a = c.cmd("uar carol@ims.test sip:carol@ims.test type=1");
    assert_eq!(
        exp(&a, 300),
        "5003",
        "de-registering a user nobody serves: {a}"
    );
    let a = c.cmd(&format!(
        "mar {} {} {SCSCF1} scheme=Digest-AKAv1-MD5",
        alice.0, alice.1
    ));
    assert_eq!(exp(&a, 303), "5006", "AKA is not offered: {a}");
    let a = c.cmd(&format!("sar {} {} {SCSCF1} 10", alice.0, alice.1));
    assert_eq!(exp(&a, 301), "5007", "AAA_USER_DATA_REQUEST: {a}");
    // a user de-registration: the HSS forgets the S-CSCF
    let a = c.cmd(&format!("sar {} {} {SCSCF1} 5", alice.0, alice.1));
    assert_eq!(rc(&a, 301), "2001", "{a}");
    assert_eq!(stored(alice.0), "- 0");
    let a = c.cmd(&format!("uar {} {} type=1", alice.0, alice.1));
    assert_eq!(exp(&a, 300), "5003", "de-registered: {a}");
    assert!(
        !log_lines("Experimental-Result 5006").is_empty(),
        "the script logged its answer"
    );

    // the wire, as Wireshark decodes it: 15 answers, well formed, the codes above
    let pcap = capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[port]);
    let answers: Vec<_> = msgs
        .iter()
        .filter(|m| (300..=303).contains(&m.cmd_code) && !m.is_request())
        .collect();
    assert_eq!(answers.len(), 15, "one answer per request");
    for m in &answers {
        let problems = m.problems(tshark::EXPERT_WARN, |_| false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(m.app_id, CX_APP, "Cx application id in the header");
    }
    let codes: Vec<String> = answers
        .iter()
        .map(|m| m.result_code().unwrap_or("none").to_string())
        .collect();
    assert_eq!(
        codes,
        [
            "2001", "2001", "2002", "2001", "2001", "2003", "5001", "5001", "5002", "5003", "5003",
            "5006", "5007", "2001", "5003"
        ],
        "codes on the wire"
    );
}
