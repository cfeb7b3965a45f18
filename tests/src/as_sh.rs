//! The Application Server scenario both AS scripts are tested with: the Kamailio one
//! (`tests/tests/roles_as.rs`, `cfg-examples/roles/kamailio-as.cfg`) and the OpenSIPS one
//! (`tests/tests/roles_as_opensips.rs`, `opensips-as.cfg`). One scenario, so that the two SIP
//! servers are held to the same SIP outcomes, Sh requests and answers on the wire.
//!
//! The AS reads its call-forwarding data over Sh from an HSS on Erlang/OTP diameter
//! (`tests/peers/sh_hss.escript`, per-user Sh-Data XML files) through the real `dmbridge run`,
//! with a SIP client and three stand-in next hops on loopback: the S-CSCF (calls not
//! forwarded) and two forwarding targets.
//!
//! Asserted on the SIP side (final responses, which next hop got which INVITE), in the HSS's
//! log (what its strict codec decoded, the subscriptions it holds), in the script's log (the
//! name it found User-Data under) and on the wire (tshark between bridge and HSS):
//! - INVITE -> UDR (User-Identity, Data-Reference RepositoryData, Service-Indication); the
//!   UDA's User-Data names the target the INVITE is forwarded to; Experimental-Result 4100
//!   (no data) -> the S-CSCF; 5001 -> 404; 5100 -> 403; no answer -> 504;
//! - forwarding on condition "not-registered": a second UDR, Data-Reference IMSUserState
//!   (11), forwarded only when the HSS says the callee is not registered;
//! - a third-party REGISTER -> UDR and SNR before the first call, 200 also without data; a
//!   re-registration and the user's first call then send nothing; the de-registration
//!   (Expires: 0) -> SNR Subs-Req-Type 1, and a later PNR for the user -> 5107;
//! - the first UDA of a user -> SNR (Subs-Req-Type 0, the same Data-Reference and
//!   Service-Indication); the next INVITE reads the cache, no UDR;
//! - PNR with new User-Data -> PNA 2001 and the next INVITE goes to the new target; PNR for a
//!   user without subscription -> 5107; PNR whose document is not the service's repository
//!   data -> 5100 and the data stays;
//! - a subscription the HSS bounds (Expiry-Time in the SNA, TS 29.328 §6.1.3) ends for the AS
//!   too: once it has passed, a PNR gets 5107 and the next INVITE reads and subscribes again;
//! - the served user sets a new target (SIP MESSAGE with Call-Forwarding-Target) -> PUR with
//!   the document and the next SequenceNumber (Data-Reference RepositoryData): PUA 2001 -> the
//!   HSS stores it and the next INVITE follows it; a PUR out of sync with the HSS's document
//!   -> 5105, SIP 500, and the next INVITE reads the HSS's document again.
//!
//! Each test runs it twice: with the bridge's default names (User-Data is `Sh-User-Data`) and
//! under `cfg-examples/freediameter-names.dict` (`User-Data-29.329`, aaa_diameter's name): the
//! scripts must find User-Data under either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bridge::BridgeApp;
use crate::paths::repo_root;
use crate::roles::{captured_server, ScriptedPeer, ServerPeer, SipServerUnderTest};
use crate::sip_call::Phone;
use crate::sip_register::third_party_register;
use crate::tshark::{self, TsMessage};
use crate::wait::poll_until;
use crate::TestDir;

/// The HSS's Origin-Host and realm (the AS's Destination-Realm).
pub const HSS: &str = "hss.test.local";
/// The AS's bridge: Origin-Host.
pub const AS: &str = "as.test.local";
/// Sh's application id.
pub const SH_APP: u32 = 16_777_217;
/// Sh (TS 29.329 §6.1: application 16777217, vendor 10415) as the AS's bridge advertises it.
pub const SH_BRIDGE_APP: BridgeApp = BridgeApp {
    id: SH_APP,
    vendor: Some(10_415),
    acct: false,
};
/// The Service-Indication of the example's repository data.
pub const SERVICE: &str = "call-forwarding";

/// A Sh-Data document (TS 29.328 Annex D) with the example's call-forwarding repository data,
/// over several lines as an HSS may store it.
fn sh_data(seq: u32, active: bool, target: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Sh-Data>\n  <RepositoryData>\n    \
         <ServiceIndication>{SERVICE}</ServiceIndication>\n    <SequenceNumber>{seq}</SequenceNumber>\n    \
         <ServiceData>\n      <CallForwarding>\n        <Active>{active}</Active>\n        \
         <Target>{target}</Target>\n      </CallForwarding>\n    </ServiceData>\n  \
         </RepositoryData>\n</Sh-Data>\n"
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Request lines of the INVITEs a next hop received, one per request: Kamailio's tm
/// retransmits an INVITE the stand-in has not answered within T1 (RFC 3261 §17.1.1.2), which
/// happens on a loaded machine, and a retransmission is the same bytes again.
fn request_lines(hop: &Phone) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    hop.received()
        .into_iter()
        .filter(|m| m.starts_with("INVITE ") && seen.insert(m.clone()))
        .map(|m| m.lines().next().unwrap_or("").to_string())
        .collect()
}

/// The Public-Identity inside a message's User-Identity.
fn impu_of(m: &TsMessage) -> Option<String> {
    m.avp("User-Identity").and_then(|g| {
        g.children
            .iter()
            .find(|c| c.name.as_deref() == Some("Public-Identity"))
            .and_then(|c| c.value.clone())
    })
}

/// Data-Reference and Service-Indication of a UDR or SNR: one each, RepositoryData (0) and
/// the service's name.
fn assert_repository_ref(m: &TsMessage) {
    let drefs: Vec<_> = m
        .avps
        .iter()
        .filter(|a| a.name.as_deref() == Some("Data-Reference"))
        .collect();
    assert_eq!(drefs.len(), 1, "one Data-Reference in frame {}", m.frame);
    assert_eq!(drefs[0].data(), [0, 0, 0, 0], "RepositoryData (0)");
    assert_eq!(drefs[0].vendor, Some(10_415));
    let si = m
        .avp("Service-Indication")
        .unwrap_or_else(|| panic!("Service-Indication in frame {}", m.frame));
    assert_eq!(si.data(), SERVICE.as_bytes());
}

/// The bridge's dictionaries, and the name the script then finds Sh's User-Data under.
pub struct ShNames {
    pub dictionaries: Vec<PathBuf>,
    pub user_data: &'static str,
}

impl ShNames {
    /// The bridge's own names: User-Data is `Sh-User-Data`.
    pub fn builtin() -> ShNames {
        ShNames {
            dictionaries: Vec::new(),
            user_data: "Sh-User-Data",
        }
    }

    /// `NAMES freediameter` (`cfg-examples/freediameter-names.dict`), as a script written for
    /// OpenSIPS aaa_diameter expects them: User-Data is `User-Data-29.329`.
    pub fn freediameter() -> ShNames {
        ShNames {
            dictionaries: vec![repo_root().join("cfg-examples/freediameter-names.dict")],
            user_data: "User-Data-29.329",
        }
    }
}

/// What the scenario gives the test's start function for the AS under test.
pub struct AsSetup<'a> {
    /// The test's directory.
    pub dir: &'a Path,
    /// The HSS, listening: the AS's bridge connects to it (its only peer and default route).
    pub hss: ServerPeer<'a>,
    /// Dictionary files the AS's bridge loads.
    pub dictionaries: &'a [PathBuf],
    /// Where calls the service does not forward go (the stand-in S-CSCF), a SIP URI.
    pub next_hop: String,
}

/// Runs the scenario in a new test directory `name` under `names`; `start` starts the AS
/// (after the phones and the HSS) and returns it ready for SIP.
pub fn run_as_scenario(
    name: &str,
    names: ShNames,
    start: &dyn Fn(&AsSetup<'_>) -> Box<dyn SipServerUnderTest>,
) {
    let dir = TestDir::new(name);
    let _ = crate::dmbridge::dmbridge_bin();
    // the caller matches responses to its INVITE and ACKs failures (no tm retransmissions of
    // a 404 left to reach a later request); the next hops answer 200
    let caller = Phone::start("zoe");
    let scscf = Phone::start("scscf");
    let voicemail = Phone::start("voicemail");
    let mobile = Phone::start("mobile");
    let vm_target = format!("sip:alice-vm@127.0.0.1:{}", voicemail.port);
    let mobile_target = format!("sip:alice-mobile@127.0.0.1:{}", mobile.port);

    let data = dir.subdir("sh-data");
    write(&data.join("alice.xml"), &sh_data(1, true, &vm_target));
    write(&data.join("erin.xml"), &sh_data(1, false, &vm_target));
    write(&data.join("frank.xml"), &sh_data(1, true, &vm_target));
    // forwarding on not registered: hank is registered, ivy is not (the HSS's --state)
    let ivy_target = format!("sip:ivy-vm@127.0.0.1:{}", voicemail.port);
    let not_registered = |doc: String| {
        doc.replace(
            "<Target>",
            "<Condition>not-registered</Condition>\n        <Target>",
        )
    };
    write(
        &data.join("hank.xml"),
        &not_registered(sh_data(1, true, &vm_target)),
    );
    write(
        &data.join("ivy.xml"),
        &not_registered(sh_data(1, true, &ivy_target)),
    );
    let jack_target = format!("sip:jack-vm@127.0.0.1:{}", voicemail.port);
    write(&data.join("jack.xml"), &sh_data(1, true, &jack_target));
    let kim_target = format!("sip:kim-vm@127.0.0.1:{}", voicemail.port);
    write(&data.join("kim.xml"), &sh_data(1, true, &kim_target));

    let (hss, hss_port, capture) = captured_server(
        dir.path(),
        "sh_hss.escript",
        HSS,
        &[
            "--data-dir".into(),
            data.display().to_string(),
            "--udr".into(),
            "carol=e5001,dave=e5100,gina=drop".into(),
            "--state".into(),
            "ivy=0".into(),
            // the HSS bounds kim's subscriptions: 2 s, said in the SNA's Expiry-Time
            "--expiry".into(),
            "kim=2".into(),
        ],
    );

    let server = start(&AsSetup {
        dir: dir.path(),
        hss: ServerPeer {
            peer: &hss,
            host: HSS,
            port: hss_port,
        },
        dictionaries: &names.dictionaries,
        next_hop: format!("sip:127.0.0.1:{}", scscf.port),
    });
    let sip_port = server.sip_port();
    let invite = |user: &str| {
        caller
            .invite(sip_port, &format!("sip:{user}@test.local"))
            .status
    };

    // first call to alice: UDR, forwarded to the target in her data, SNR
    assert_eq!(invite("alice"), "SIP/2.0 200 OK", "INVITE alice (UDR)");
    // second call: from the htable, same target
    assert_eq!(invite("alice"), "SIP/2.0 200 OK", "INVITE alice (cached)");
    // no repository data (4100): not forwarded, to the S-CSCF
    assert_eq!(invite("bob"), "SIP/2.0 200 OK", "INVITE bob");
    assert_eq!(
        invite("carol"),
        "SIP/2.0 404 Not Found",
        "INVITE carol (5001)"
    );
    assert_eq!(
        invite("dave"),
        "SIP/2.0 403 Forbidden",
        "INVITE dave (5100)"
    );
    // the HSS does not answer: the module's request_timeout, 504
    assert_eq!(
        invite("gina"),
        "SIP/2.0 504 HSS Timeout",
        "INVITE gina (no UDA)"
    );
    // data with the service off: to the S-CSCF, subscribed all the same
    assert_eq!(invite("erin"), "SIP/2.0 200 OK", "INVITE erin");
    // conditional forwarding: UDR IMSUserState; registered hank gets the call himself
    assert_eq!(invite("hank"), "SIP/2.0 200 OK", "INVITE hank");
    // ivy is not registered: forwarded, on the first call (after UDR, SNR) and from the cache
    assert_eq!(invite("ivy"), "SIP/2.0 200 OK", "INVITE ivy");
    assert_eq!(invite("ivy"), "SIP/2.0 200 OK", "INVITE ivy (cached)");
    // third-party REGISTER from the S-CSCF: UDR and SNR before any call, 200 whatever the
    // HSS says; a re-registration and the first call need no Diameter
    let register = |user: &str| third_party_register(sip_port, user, 600);
    assert_eq!(register("jack"), "SIP/2.0 200 OK", "REGISTER jack");
    assert_eq!(register("jack"), "SIP/2.0 200 OK", "REGISTER jack again");
    assert_eq!(invite("jack"), "SIP/2.0 200 OK", "INVITE jack");
    assert_eq!(register("bob"), "SIP/2.0 200 OK", "REGISTER bob (no data)");
    assert_eq!(
        hss.cmd("subs"),
        "SUBS sip:alice@test.local/call-forwarding,sip:erin@test.local/call-forwarding,\
         sip:hank@test.local/call-forwarding,sip:ivy@test.local/call-forwarding,\
         sip:jack@test.local/call-forwarding",
        "the subscriptions the HSS holds after the SNRs"
    );

    // alice's data changes in the HSS: PNR, and the next call follows it
    write(&data.join("alice.xml"), &sh_data(2, true, &mobile_target));
    let pna = hss.cmd("pnr alice");
    assert_eq!(ScriptedPeer::field(&pna, "rc"), "2001", "{pna}");
    assert_eq!(ScriptedPeer::field(&pna, "errors"), "0", "{pna}");
    assert_eq!(invite("alice"), "SIP/2.0 200 OK", "INVITE alice after PNR");
    // no subscription for frank: 5107
    // a PNR the AS refuses: the Experimental-Result-Code of its PNA, without the E bit
    let pnr_refused = |user: &str, exp: &str| {
        let pna = hss.cmd(&format!("pnr {user}"));
        assert_eq!(ScriptedPeer::field(&pna, "exp"), exp, "{pna}");
        assert_eq!(ScriptedPeer::field(&pna, "e"), "0", "{pna}");
    };
    pnr_refused("frank", "5107");
    // erin's document is no longer this service's repository data: 5100, old data kept
    write(
        &data.join("erin.xml"),
        "<Sh-Data><PublicIdentifiers><IMSPublicIdentity>sip:erin@test.local\
         </IMSPublicIdentity></PublicIdentifiers></Sh-Data>",
    );
    pnr_refused("erin", "5100");
    assert_eq!(
        invite("erin"),
        "SIP/2.0 200 OK",
        "INVITE erin after a refused PNR"
    );
    // jack de-registers: SNR Subs-Req-Type 1, and the HSS's next PNR for him is refused
    assert_eq!(
        third_party_register(sip_port, "jack", 0),
        "SIP/2.0 200 OK",
        "de-REGISTER jack"
    );
    assert_eq!(
        hss.cmd("subs"),
        "SUBS sip:alice@test.local/call-forwarding,sip:erin@test.local/call-forwarding,\
         sip:hank@test.local/call-forwarding,sip:ivy@test.local/call-forwarding",
        "jack unsubscribed"
    );
    pnr_refused("jack", "5107");

    // kim's subscription ends (the SNA's Expiry-Time): after that the AS no longer trusts its
    // copy, a PNR gets 5107 and the next call reads and subscribes again
    let kim_subscribed = || hss.cmd("subs").contains("sip:kim@test.local/");
    assert_eq!(invite("kim"), "SIP/2.0 200 OK", "INVITE kim (UDR, SNR)");
    assert!(kim_subscribed(), "kim subscribed");
    poll_until(
        "the HSS ends kim's subscription",
        Duration::from_secs(15),
        || (!kim_subscribed()).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // past the end on the AS's clock too: it reads whole seconds (OpenSIPS's cachedb_local
    // expires an entry in the second after its time)
    std::thread::sleep(Duration::from_millis(2500));
    pnr_refused("kim", "5107");
    assert_eq!(
        invite("kim"),
        "SIP/2.0 200 OK",
        "INVITE kim after the subscription ended (UDR, SNR again)"
    );
    assert!(kim_subscribed(), "kim subscribed again");

    // alice sets a new target herself (MESSAGE -> PUR): the AS writes it with the next
    // SequenceNumber (her document is at 2 since the PNR), and her next call follows it
    let alice_new = format!("sip:alice-new@127.0.0.1:{}", mobile.port);
    let set_target = |user: &str, target: &str| {
        crate::sip::request(
            sip_port,
            "MESSAGE",
            "sip:call-forwarding@as.test.local",
            user,
            &[format!("Call-Forwarding-Target: {target}")],
        )
    };
    assert_eq!(
        set_target("alice", &alice_new),
        "SIP/2.0 200 OK",
        "MESSAGE alice (PUR)"
    );
    let stored = std::fs::read_to_string(data.join("alice.xml"))
        .unwrap_or_else(|e| panic!("alice.xml: {e}"));
    assert!(
        stored.contains(&format!("<Target>{alice_new}</Target>"))
            && stored.contains("<SequenceNumber>3</SequenceNumber>"),
        "the HSS stored the AS's document: {stored}"
    );
    assert_eq!(invite("alice"), "SIP/2.0 200 OK", "INVITE alice after PUR");
    // the HSS's document moves on without a PNR (another AS wrote it): the AS's next PUR is
    // out of sync (5105), it drops its copy, and the next call reads the HSS's document
    write(&data.join("alice.xml"), &sh_data(7, true, &mobile_target));
    assert_eq!(
        set_target("alice", &vm_target),
        "SIP/2.0 500 Service Data Out Of Sync",
        "MESSAGE alice (PUR, 5105)"
    );
    assert_eq!(
        invite("alice"),
        "SIP/2.0 200 OK",
        "INVITE alice after the refused PUR (UDR)"
    );
    // no PUR for a user whose data the AS does not hold
    assert_eq!(
        set_target("frank", &vm_target),
        "SIP/2.0 403 Service Data Not Held",
        "MESSAGE frank"
    );

    // SIP: who got which INVITE
    assert_eq!(
        request_lines(&voicemail),
        [
            format!("INVITE {vm_target} SIP/2.0"),
            format!("INVITE {vm_target} SIP/2.0"),
            format!("INVITE {ivy_target} SIP/2.0"),
            format!("INVITE {ivy_target} SIP/2.0"),
            format!("INVITE {jack_target} SIP/2.0"),
            format!("INVITE {kim_target} SIP/2.0"),
            format!("INVITE {kim_target} SIP/2.0")
        ],
        "alice's first target (before the PNR), ivy's (not registered), jack's, kim's"
    );
    assert_eq!(
        request_lines(&mobile),
        [
            format!("INVITE {mobile_target} SIP/2.0"),
            format!("INVITE {alice_new} SIP/2.0"),
            format!("INVITE {mobile_target} SIP/2.0")
        ],
        "alice's target after the PNR, after her PUR, after the refused PUR"
    );
    let forwarded = voicemail.received().into_iter().chain(mobile.received());
    for m in forwarded.filter(|m| m.starts_with("INVITE ")) {
        let diversion = if m.starts_with("INVITE sip:ivy-vm@") {
            "Diversion: <sip:ivy@test.local>;reason=unavailable"
        } else if m.starts_with("INVITE sip:jack-vm@") {
            "Diversion: <sip:jack@test.local>;reason=unconditional"
        } else if m.starts_with("INVITE sip:kim-vm@") {
            "Diversion: <sip:kim@test.local>;reason=unconditional"
        } else {
            "Diversion: <sip:alice@test.local>;reason=unconditional"
        };
        assert!(
            m.contains(diversion),
            "a forwarded INVITE says from whom and why: {m}"
        );
    }
    assert_eq!(
        request_lines(&scscf),
        [
            "INVITE sip:bob@test.local SIP/2.0",
            "INVITE sip:erin@test.local SIP/2.0",
            "INVITE sip:hank@test.local SIP/2.0",
            "INVITE sip:erin@test.local SIP/2.0"
        ],
        "calls not forwarded, to the S-CSCF"
    );

    // the script found User-Data under the name the bridge's dictionary gives it (alice's
    // two UDAs: her first call, and the read after the refused PUR)
    let found = format!("sip:alice@test.local: {} of ", names.user_data);
    assert_eq!(server.log_lines(&found).len(), 2, "UDA {found}");
    let found = format!("new data for sip:alice@test.local ({})", names.user_data);
    assert_eq!(server.log_lines(&found).len(), 1, "PNR {found}");

    // the HSS's log: one UDR for repository data per uncached call and one for IMSUserState
    // per conditional forwarding, one SNR per user with data, all decoded clean
    let log = hss.guard.output();
    let lines = |prefix: &str, part: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.starts_with(prefix) && l.contains(part))
            .map(str::to_string)
            .collect()
    };
    let repository = " dref=[0] si=call-forwarding errors=0 ";
    assert_eq!(lines("UDR ", "").len(), 16, "UDRs:\n{log}");
    assert_eq!(lines("UDR ", repository).len(), 13, "UDRs:\n{log}");
    assert_eq!(
        lines("PUR ", ""),
        [
            "PUR impu=sip:alice@test.local dref=0 seq=3 stored=2 errors=0 -> Result-Code 2001",
            "PUR impu=sip:alice@test.local dref=0 seq=4 stored=7 errors=0 -> \
             Experimental-Result-Code 5105"
        ],
        "PURs:\n{log}"
    );
    assert_eq!(
        lines("UDR ", " dref=[11] si= errors=0 -> Result-Code 2001"),
        lines("UDR ", " dref=[11] "),
        "IMSUserState UDRs:\n{log}"
    );
    assert_eq!(lines("SNR ", "").len(), 8, "SNRs:\n{log}");
    assert_eq!(lines("SNR ", repository).len(), 8, "SNRs:\n{log}");
    assert_eq!(
        lines("SNR ", " type=1 "),
        lines("SNR ", "impu=sip:jack@test.local type=1 "),
        "one unsubscription, jack's:\n{log}"
    );
    assert_eq!(lines("SNR ", " type=1 ").len(), 1, "SNRs:\n{log}");

    // the wire, as Wireshark decodes it
    let pcap = capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[hss_port]);
    for m in msgs.iter().filter(|m| m.app_id == SH_APP) {
        let problems = m.problems(tshark::EXPERT_WARN, |_| false);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            m.avp("Vendor-Specific-Application-Id").is_some(),
            "Vendor-Specific-Application-Id in frame {}",
            m.frame
        );
    }
    let requests = |code: u32| -> Vec<&TsMessage> {
        msgs.iter()
            .filter(|m| m.cmd_code == code && m.is_request())
            .collect()
    };
    let users =
        |ms: &[&TsMessage]| -> Vec<String> { ms.iter().filter_map(|m| impu_of(m)).collect() };
    let (udr_state, udr): (Vec<&TsMessage>, Vec<&TsMessage>) = requests(306)
        .into_iter()
        .partition(|m| m.avp("Data-Reference").map(|a| a.data()) == Some(&[0, 0, 0, 11][..]));
    assert_eq!(
        users(&udr),
        [
            "sip:alice@test.local",
            "sip:bob@test.local",
            "sip:carol@test.local",
            "sip:dave@test.local",
            "sip:gina@test.local",
            "sip:erin@test.local",
            "sip:hank@test.local",
            "sip:ivy@test.local",
            "sip:jack@test.local",
            "sip:bob@test.local",
            "sip:kim@test.local",
            "sip:kim@test.local",
            "sip:alice@test.local"
        ],
        "UDR (RepositoryData) User-Identity/Public-Identity"
    );
    assert_eq!(
        users(&udr_state),
        [
            "sip:hank@test.local",
            "sip:ivy@test.local",
            "sip:ivy@test.local"
        ],
        "UDR (IMSUserState) User-Identity/Public-Identity"
    );
    for m in &udr_state {
        assert!(
            m.avp("Service-Indication").is_none(),
            "no Service-Indication for IMSUserState"
        );
    }
    let snr = requests(308);
    assert_eq!(
        users(&snr),
        [
            "sip:alice@test.local",
            "sip:erin@test.local",
            "sip:hank@test.local",
            "sip:ivy@test.local",
            "sip:jack@test.local",
            "sip:jack@test.local",
            "sip:kim@test.local",
            "sip:kim@test.local"
        ],
        "SNR User-Identity/Public-Identity"
    );
    // the SNAs: Expiry-Time (Time, vendor 10415) in kim's two only, the end the HSS set
    let snas: Vec<_> = msgs
        .iter()
        .filter(|m| m.cmd_code == 308 && !m.is_request())
        .collect();
    assert_eq!(snas.len(), snr.len(), "one SNA per SNR");
    let bounded: Vec<_> = snas
        .iter()
        .filter(|m| m.avp("Expiry-Time").is_some())
        .map(|m| m.hbh)
        .collect();
    let kims: Vec<_> = snr[snr.len() - 2..].iter().map(|m| m.hbh).collect();
    assert_eq!(bounded, kims, "Expiry-Time in the SNAs of kim's SNRs only");
    for m in udr.iter().chain(snr.iter()).chain(udr_state.iter()) {
        assert_eq!(m.value("Origin-Host"), Some(AS));
        assert_eq!(m.value("Destination-Realm"), Some(HSS));
    }
    for m in udr.iter().chain(snr.iter()) {
        assert_repository_ref(m);
    }
    let types: Vec<_> = snr
        .iter()
        .map(|m| {
            m.avp("Subs-Req-Type")
                .expect("Subs-Req-Type")
                .data()
                .to_vec()
        })
        .collect();
    // Subscribe (0) five times, jack's Unsubscribe (1), kim's two Subscribes
    let mut want = vec![vec![0u8, 0, 0, 0]; 5];
    want.push(vec![0, 0, 0, 1]);
    want.extend([vec![0, 0, 0, 0], vec![0, 0, 0, 0]]);
    assert_eq!(types, want, "Subs-Req-Type of each SNR");
    // PUR: Data-Reference RepositoryData, no Service-Indication (it is in the document);
    // the PUAs 2001, then 5105
    let pur = requests(307);
    assert_eq!(
        users(&pur),
        ["sip:alice@test.local"; 2],
        "PUR User-Identity"
    );
    for m in &pur {
        assert_eq!(
            m.avp("Data-Reference").map(|a| a.data()),
            Some(&[0, 0, 0, 0][..])
        );
        assert!(m.avp("Service-Indication").is_none(), "frame {}", m.frame);
    }
    let pua: Vec<_> = msgs
        .iter()
        .filter(|m| m.cmd_code == 307 && !m.is_request())
        .map(|m| m.result_code().unwrap_or("none").to_string())
        .collect();
    assert_eq!(pua, ["2001", "5105"], "PUA outcomes");
    let pnr = msgs
        .iter()
        .filter(|m| m.cmd_code == 309 && m.is_request())
        .count();
    assert_eq!(pnr, 5, "PNRs from the HSS");
    let pna: Vec<_> = msgs
        .iter()
        .filter(|m| m.cmd_code == 309 && !m.is_request())
        .collect();
    assert_eq!(
        pna.iter()
            .map(|m| m.result_code().unwrap_or("none").to_string())
            .collect::<Vec<_>>(),
        ["2001", "5107", "5100", "5107", "5107"],
        "PNA outcomes"
    );
    for m in &pna {
        assert_eq!(m.flags & 0x20, 0, "PNA without the E bit");
        assert_eq!(m.value("Origin-Host"), Some(AS));
        assert!(
            m.avp("Auth-Session-State").is_some(),
            "Auth-Session-State in PNA"
        );
    }
    let errors = server.log_errors();
    assert!(errors.is_empty(), "errors in the AS's log: {errors:#?}");
    // the AS (SIP server, then its bridge) before the HSS and the phones
    drop(server);
}
