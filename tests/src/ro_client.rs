//! The Ro client scenario both SIP servers' online-charging scripts are tested with:
//! Kamailio's (`cfg-examples/roles/kamailio-ro-client.cfg`, `tests/tests/roles_ro_client.rs`)
//! and OpenSIPS's (`cfg-examples/roles/opensips-ro-client.cfg`,
//! `tests/tests/roles_ro_client_opensips.rs`). One scenario, so that the two are held to the
//! same CCRs, SIP outcomes and wire.
//!
//! The OCS is Erlang/OTP diameter with a strict codec and short grants
//! (`tests/peers/ro_ocs_session.escript`, [`start_ocs`]); the SIP phones are on loopback
//! (`harness::sip_call`). Asserted on the SIP side (what each phone got), in the OCS's log (its
//! decoded CCRs and its session checks) and on the wire (tshark between bridge and OCS):
//! - INVITE -> CCR-Initial (Service-Context-Id, Subscription-Id of the caller,
//!   Requested-Service-Unit, IMS-Information with the calling and called party) -> 2001: the
//!   call is connected; 4012 -> 402 Payment Required, nothing forwarded, no dialog, no CCR-T;
//!   no answer -> 503. A charged call the callee refuses (486) gets a CCR-Terminate with 0
//!   seconds used (the reservation is released). A CCR-Update left unanswered ends the call
//!   (Credit-Control-Failure-Handling TERMINATE), without CCR-Terminate.
//! - The granted seconds run out: CCR-Update with Used-Service-Unit (QUOTA_EXHAUSTED) of at
//!   least the grant; an update answered 4012 ends the call with BYEs to both phones and no
//!   CCR-Terminate (the failed answer closed the session).
//! - RAR -> RAA 2001 and a CCR-Update (FORCED_REAUTHORISATION) follows; RAR for an unknown
//!   session -> 5002. ASR -> ASA 2001, BYEs to both phones, CCR-Terminate.
//! - BYE -> CCR-Terminate with the last used seconds; per call one Session-Id and
//!   CC-Request-Numbers 0, 1, 2... (the OCS checks the sequence); the used seconds reported
//!   in a call add up to no more than the call lasted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::bridge::BridgeApp;
use crate::capture::Capture;
use crate::child::ChildGuard;
use crate::roles::{captured_server, ScriptedPeer};
use crate::sip_call::Phone;
use crate::tshark;
use crate::wait::poll_until;

/// The OCS's Origin-Host and realm (the scripts' Destination-Realm).
pub const OCS: &str = "ocs.test.local";
/// The bridge's Origin-Host on the SIP server's side.
pub const CTF: &str = "ctf.test.local";
/// Seconds the OCS grants per request: short, so updates happen within the test.
pub const GRANT: u32 = 2;
/// Credit-Control (RFC 4006 application 4), what the client's bridge advertises.
pub const RO_APP: BridgeApp = BridgeApp {
    id: 4,
    vendor: None,
    acct: false,
};

/// One CCR as the OCS printed it.
#[derive(Debug, Clone)]
pub struct Ccr {
    pub ty: u32,
    pub num: u32,
    pub sid: String,
    pub user: String,
    pub ctx: String,
    pub rsu: String,
    pub usu: Option<u32>,
    pub reason: String,
    pub calling: String,
    pub called: String,
    /// Termination-Cause, "-" when none
    pub cause: String,
    pub seq_ok: bool,
    pub rc: u32,
}

pub fn ccrs(ocs: &ScriptedPeer) -> Vec<Ccr> {
    ocs.guard
        .output()
        .lines()
        .filter(|l| l.starts_with("CCR "))
        .map(|l| {
            let f = |k: &str| ScriptedPeer::field(l, k).to_string();
            let int = |k: &str| {
                f(k).parse::<u32>()
                    .unwrap_or_else(|e| panic!("{k} in {l}: {e}"))
            };
            Ccr {
                ty: int("type"),
                num: int("num"),
                sid: f("sid"),
                user: f("user"),
                ctx: f("ctx"),
                rsu: f("rsu"),
                usu: f("usu").parse().ok(),
                reason: f("reason"),
                calling: f("calling"),
                called: f("called"),
                cause: f("cause"),
                seq_ok: f("seq") == "ok",
                // 0: not answered (--drop)
                rc: l
                    .rsplit("-> ")
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    .map(|r| r.parse().unwrap_or(0))
                    .unwrap_or_else(|| panic!("no outcome in {l}")),
            }
        })
        .collect()
}

/// Waits until the OCS has printed a CCR matching `want`.
pub fn wait_ccr(ocs: &ScriptedPeer, what: &str, want: impl Fn(&Ccr) -> bool) -> Ccr {
    poll_until(what, Duration::from_secs(15), || {
        ccrs(ocs).into_iter().find(|c| want(c))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", ocs.guard.tail(30)))
}

/// Both phones of the call `call_id` got a BYE from the script (within 10 s); `server` is the
/// SIP server's process, whose log tail the failure shows.
pub fn assert_both_got_bye(server: &ChildGuard, phones: [&Phone; 2], call_id: &str) {
    for p in phones {
        assert!(
            p.wait_request("BYE", call_id, 10).is_some(),
            "{} got no BYE for {call_id}\n{}",
            p.user,
            server.tail(30)
        );
    }
}

/// Unsigned32/Enumerated value of a decoded AVP.
fn u32_of(a: &tshark::TsAvp) -> u32 {
    let d = a.data();
    assert_eq!(d.len(), 4, "AVP {} is not 32-bit: {d:?}", a.code);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// The scenario's OCS, with a capture of its port started before it.
pub struct RoOcs {
    pub peer: ScriptedPeer,
    pub port: u16,
    pub capture: Capture,
}

/// Starts the OCS as [`OCS`] with the scenario's users and `extra` options: bob gets 4012 on
/// the CCR-I, carol on the CCR-U; frank's CCR-I and gina's CCR-U are never answered; grants
/// of [`GRANT`] seconds.
pub fn start_ocs(dir: &std::path::Path, extra: &[String]) -> RoOcs {
    let mut args: Vec<String> = [
        "--grant",
        &GRANT.to_string(),
        "--deny",
        "bob",
        "--deny-update",
        "carol",
        "--drop",
        "frank",
        "--drop-update",
        "gina",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    let (peer, port, capture) = captured_server(dir, "ro_ocs_session.escript", OCS, &args);
    RoOcs {
        peer,
        port,
        capture,
    }
}

/// The Session-Id of `user`'s last CCR-Initial, as the OCS saw it.
pub fn sid_of(ocs: &ScriptedPeer, user: &str) -> String {
    let r = ocs.cmd(&format!("sid {user}"));
    r.strip_prefix("SID ")
        .unwrap_or_else(|| panic!("no session for {user}: {r}"))
        .to_string()
}

/// The whole scenario (see the module's doc) against a SIP server on 127.0.0.1:`sip` whose
/// process is `server` (its log tail goes into failures), attached to a bridge connected to
/// `ocs`.
pub fn run_ro_client_scenario(ocs: RoOcs, sip: u16, server: &ChildGuard) {
    let RoOcs {
        peer: ocs,
        port: ocs_port,
        capture,
    } = ocs;
    let callee = Phone::start("callee");
    // the OCS never answers frank's CCR-Initial: 503 after the module's request_timeout;
    // in its own thread, so the other calls go on meanwhile
    let uri = callee.uri();
    let frank_call = std::thread::spawn(move || Phone::start("frank").invite(sip, &uri));
    let [alice, bob, carol, dave, gina] =
        ["alice", "bob", "carol", "dave", "gina"].map(Phone::start);
    let sid_of = |user: &str| sid_of(&ocs, user);

    // no credit: 4012 on the CCR-Initial -> 402, the callee never hears of it
    let b = bob.invite(sip, &callee.uri());
    assert_eq!(b.status, "SIP/2.0 402 Payment Required", "bob");
    // charged, then refused by the callee: the CCR-Terminate releases the reservation
    let busy = Phone::rejecting("busy", 486);
    let e = Phone::start("erin").invite(sip, &busy.uri());
    assert_eq!(e.status, "SIP/2.0 486 Rejected", "erin");

    let a = alice.invite(sip, &callee.uri());
    let alice_started = Instant::now();
    assert!(a.answered(), "alice: {}\n{}", a.status, server.tail(30));
    let c = carol.invite(sip, &callee.uri());
    assert!(c.answered(), "carol: {}", c.status);
    let d = dave.invite(sip, &callee.uri());
    assert!(d.answered(), "dave: {}", d.status);
    let g = gina.invite(sip, &callee.uri());
    assert!(g.answered(), "gina: {}", g.status);
    for call in [&a, &c, &d, &g] {
        // the dialog is confirmed (the ACK went through) before the OCS acts on it
        assert!(
            callee.wait_request("ACK", &call.call_id, 10).is_some(),
            "no ACK relayed for {}",
            call.call_id
        );
    }
    let (asid, csid, dsid) = (sid_of("alice"), sid_of("carol"), sid_of("dave"));

    // ASR: dave's call is ended by the OCS: BYE to both sides, then the CCR-Terminate
    let r = ocs.cmd(&format!("asr {dsid}"));
    assert!(r.starts_with("ANSWER cmd=274 rc=2001 "), "ASA: {r}");
    assert_both_got_bye(server, [&dave, &callee], &d.call_id);
    wait_ccr(&ocs, "dave's CCR-Terminate", |c| c.ty == 3 && c.sid == dsid);

    // the grant runs out: CCR-Update; carol's is refused (4012), her call is ended
    wait_ccr(&ocs, "alice's CCR-Update (quota used up)", |c| {
        c.ty == 2 && c.sid == asid && c.reason == "3"
    });
    wait_ccr(&ocs, "carol's CCR-Update", |c| c.ty == 2 && c.sid == csid);
    assert_both_got_bye(server, [&carol, &callee], &c.call_id);
    // gina's CCR-Update is never answered: Credit-Control-Failure-Handling TERMINATE
    // (RFC 4006 §5.7), the call is ended after the module's request_timeout, no CCR-T
    assert_both_got_bye(server, [&gina, &callee], &g.call_id);

    // RAR: answered, and a CCR-Update (FORCED_REAUTHORISATION) follows at once
    let r = ocs.cmd(&format!("rar {asid}"));
    assert!(r.starts_with("ANSWER cmd=258 rc=2001 "), "RAA: {r}");
    wait_ccr(&ocs, "alice's CCR-Update after the RAR", |c| {
        c.ty == 2 && c.sid == asid && c.reason == "7"
    });
    let r = ocs.cmd("rar ctf.test.local;1;404");
    assert!(
        r.starts_with("ANSWER cmd=258 rc=5002 "),
        "RAA, unknown: {r}"
    );

    // alice hangs up: the BYE reaches the callee, the CCR-Terminate reports the rest
    assert_eq!(alice.bye(sip, &a), "SIP/2.0 200 OK", "alice's BYE");
    let alice_secs = alice_started.elapsed().as_secs_f64().ceil() as u32;
    assert!(
        callee.wait_request("BYE", &a.call_id, 10).is_some(),
        "alice's BYE was not relayed"
    );
    wait_ccr(&ocs, "alice's CCR-Terminate", |c| {
        c.ty == 3 && c.sid == asid
    });
    assert_eq!(
        callee
            .received()
            .iter()
            .filter(|m| m.starts_with("INVITE "))
            .count(),
        4,
        "INVITEs forwarded (not bob's nor frank's)"
    );

    // the OCS's view: per session the types, numbers, outcomes
    let all = ccrs(&ocs);
    let mut by_sid: BTreeMap<&str, Vec<&Ccr>> = BTreeMap::new();
    for c in &all {
        by_sid.entry(c.sid.as_str()).or_default().push(c);
        assert!(c.seq_ok, "CC-Request-Number out of sequence: {c:?}");
        assert_eq!(c.ctx, "32260@3gpp.org", "Service-Context-Id: {c:?}");
    }
    assert_eq!(by_sid.len(), 7, "one Session-Id per call: {all:#?}");
    let shape = |sid: &str| -> Vec<(u32, u32, u32)> {
        by_sid[sid].iter().map(|c| (c.ty, c.num, c.rc)).collect()
    };
    let bob_ccrs: Vec<_> = all.iter().filter(|c| c.user == "bob").collect();
    assert_eq!(bob_ccrs.len(), 1, "bob: {bob_ccrs:?}");
    assert_eq!((bob_ccrs[0].ty, bob_ccrs[0].rc), (1, 4012));
    assert_eq!(
        shape(&csid),
        [(1, 0, 2001), (2, 1, 4012)],
        "carol: no CCR-T after the 4012"
    );
    assert_eq!(shape(&dsid), [(1, 0, 2001), (3, 1, 2001)], "dave");
    assert_eq!(
        by_sid[dsid.as_str()][1].cause,
        "4",
        "ADMINISTRATIVE after the ASR"
    );
    let gsid = sid_of("gina");
    assert_eq!(
        shape(&gsid),
        [(1, 0, 2001), (2, 1, 0)],
        "gina: the unanswered update, no CCR-T (RFC 4006 §7: PendingU -> Idle)"
    );
    let esid = sid_of("erin");
    assert_eq!(shape(&esid), [(1, 0, 2001), (3, 1, 2001)], "erin");
    assert_eq!(by_sid[esid.as_str()][1].usu, Some(0), "erin used nothing");
    let frank = frank_call
        .join()
        .unwrap_or_else(|_| panic!("frank's call panicked"));
    assert_eq!(frank.status, "SIP/2.0 503 Charging Unavailable", "frank");
    assert_eq!(
        shape(&sid_of("frank")),
        [(1, 0, 0)],
        "frank: one CCR, unanswered"
    );
    let alice_ccrs = &by_sid[asid.as_str()];
    let n = alice_ccrs.len() as u32;
    assert!(n >= 4, "alice: I, U (quota), U (RAR), T: {alice_ccrs:#?}");
    for (i, c) in alice_ccrs.iter().enumerate() {
        let i = i as u32;
        let ty = if i == 0 {
            1
        } else if i == n - 1 {
            3
        } else {
            2
        };
        assert_eq!((c.ty, c.num, c.rc), (ty, i, 2001), "alice #{i}: {c:?}");
        if ty == 1 {
            assert_eq!(c.usu, None);
            assert_eq!(c.rsu, "60", "Requested-Service-Unit");
            assert_eq!(c.calling, "sip:alice@test.local");
            assert_eq!(c.called, callee.uri());
        } else {
            assert!(c.usu.is_some(), "Used-Service-Unit in {c:?}");
        }
        if c.reason == "3" {
            // the timer fires when the grant is used up, never before
            assert!(
                c.usu >= Some(GRANT),
                "QUOTA_EXHAUSTED before the grant: {c:?}"
            );
        }
    }
    assert_eq!(alice_ccrs[n as usize - 1].reason, "2", "FINAL in the CCR-T");
    assert_eq!(alice_ccrs[n as usize - 1].cause, "1", "LOGOUT after a BYE");
    let used: u32 = alice_ccrs.iter().filter_map(|c| c.usu).sum();
    assert!(
        used <= alice_secs + 1,
        "alice reported {used} s for a call of at most {alice_secs} s: {alice_ccrs:#?}"
    );

    // the wire: the CCRs as Wireshark decodes them, and the script's RAA/ASA
    let pcap = capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[ocs_port]);
    let wire_ccrs: Vec<_> = msgs
        .iter()
        .filter(|m| m.cmd_code == 272 && m.is_request())
        .collect();
    assert_eq!(wire_ccrs.len(), all.len(), "CCRs on the wire");
    for (m, c) in wire_ccrs.iter().zip(&all) {
        let problems = m.problems(tshark::EXPERT_WARN, |_| false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(m.app_id, 4);
        assert_eq!(m.value("Origin-Host"), Some(CTF));
        assert_eq!(m.value("Session-Id"), Some(c.sid.as_str()));
        // a top-level Unsigned32/Enumerated AVP by code, as Wireshark decoded it
        let top_u32 = |code: u32, name: &str| {
            m.avps
                .iter()
                .find(|a| a.code == code)
                .map(u32_of)
                .unwrap_or_else(|| panic!("no {name} in frame {}", m.frame))
        };
        let ty = top_u32(416, "CC-Request-Type");
        let num = top_u32(415, "CC-Request-Number");
        assert_eq!((ty, num), (c.ty, c.num), "frame {}", m.frame);
        let usu = m.find_deep("Used-Service-Unit");
        assert_eq!(
            usu.is_empty(),
            ty == 1,
            "Used-Service-Unit in frame {}",
            m.frame
        );
        // the used seconds as sent are what the OCS decoded
        let used: Vec<u32> = usu
            .iter()
            .flat_map(|u| u.children.iter())
            .filter(|a| a.code == 420)
            .map(u32_of)
            .collect();
        assert_eq!(
            used,
            c.usu.into_iter().collect::<Vec<_>>(),
            "frame {}",
            m.frame
        );
        assert_eq!(m.value("Service-Context-Id"), Some("32260@3gpp.org"));
        // every request names who pays: the caller's From URI
        let payer: Vec<_> = m
            .find_deep("Subscription-Id-Data")
            .iter()
            .filter_map(|a| a.value.clone())
            .collect();
        assert_eq!(
            payer,
            [format!("sip:{}@test.local", c.user)],
            "frame {}",
            m.frame
        );
        if ty == 1 {
            assert!(!m.find_deep("Requested-Service-Unit").is_empty());
            let party = |name: &str| {
                m.find_deep(name)
                    .first()
                    .and_then(|a| a.value.clone())
                    .unwrap_or_default()
            };
            assert_eq!(
                party("Calling-Party-Address"),
                c.calling,
                "frame {}",
                m.frame
            );
            assert_eq!(party("Called-Party-Address"), c.called, "frame {}", m.frame);
        }
    }
    let server_answers: Vec<(u32, String)> = msgs
        .iter()
        .filter(|m| matches!(m.cmd_code, 258 | 274) && !m.is_request())
        .map(|m| {
            assert_eq!(m.value("Origin-Host"), Some(CTF));
            (
                m.cmd_code,
                m.value("Result-Code").unwrap_or("none").to_string(),
            )
        })
        .collect();
    assert_eq!(
        server_answers,
        [
            (274, "2001".to_string()),
            (258, "2001".to_string()),
            (258, "5002".to_string())
        ],
        "ASA and RAAs from the script"
    );
}

/// The grant of the Validity-Time scenario ([`run_validity_time_scenario`]): longer than the
/// scenario lasts.
pub const LONG_GRANT: u32 = 6;
/// The Validity-Time that comes with [`LONG_GRANT`]: the grant's own expiry, shorter.
pub const VALIDITY: u32 = 2;

/// The OCS options ([`start_ocs`]) of the Validity-Time scenario: grants of [`LONG_GRANT`]
/// seconds valid for [`VALIDITY`] seconds.
pub fn validity_ocs_args() -> Vec<String> {
    [
        "--grant".to_string(),
        LONG_GRANT.to_string(),
        "--validity".to_string(),
        VALIDITY.to_string(),
    ]
    .to_vec()
}

/// A grant whose Validity-Time is shorter than its CC-Time (an OCS started with
/// [`validity_ocs_args`]): RFC 4006 §8.33, the client must ask again when the Validity-Time
/// passes, used up or not. The CCR-Update comes at the Validity-Time, not at the grant's end
/// (reporting at least [`VALIDITY`] and less than [`LONG_GRANT`] seconds), with
/// Reporting-Reason 4 VALIDITY_TIME (TS 32.299 §7.2) in the OCS's decoding and on the wire;
/// then a BYE gets the CCR-Terminate. Same arguments as [`run_ro_client_scenario`].
pub fn run_validity_time_scenario(ro_ocs: RoOcs, sip: u16, server: &ChildGuard) {
    let ocs = &ro_ocs.peer;
    let (callee, ivan) = (Phone::start("callee"), Phone::start("ivan"));
    let call = ivan.invite(sip, &callee.uri());
    assert!(
        call.answered(),
        "ivan: {}\n{}",
        call.status,
        server.tail(30)
    );
    let sid = sid_of(ocs, "ivan");
    let u = wait_ccr(ocs, "ivan's CCR-Update at the Validity-Time", |c| {
        c.ty == 2 && c.sid == sid
    });
    assert_eq!((u.num, u.rc, u.reason.as_str()), (1, 2001, "4"), "{u:?}");
    assert!(
        u.usu >= Some(VALIDITY) && u.usu < Some(LONG_GRANT),
        "the update came at the Validity-Time ({VALIDITY} s), not at the grant's end \
         ({LONG_GRANT} s): {u:?}"
    );
    assert_eq!(ivan.bye(sip, &call), "SIP/2.0 200 OK", "ivan's BYE");
    let t = wait_ccr(ocs, "ivan's CCR-Terminate", |c| c.ty == 3 && c.sid == sid);
    assert_eq!((t.num, t.rc, t.reason.as_str()), (2, 2001, "2"), "{t:?}");
    // the update as sent: Reporting-Reason VALIDITY_TIME in its Used-Service-Unit
    let pcap = ro_ocs.capture.stop();
    let reasons: Vec<u32> = tshark::decode_pcap(&pcap, &[ro_ocs.port])
        .iter()
        .filter(|m| m.cmd_code == 272 && m.is_request())
        .flat_map(|m| {
            m.find_deep("Used-Service-Unit")
                .into_iter()
                .flat_map(|u| u.children.iter())
                .filter(|a| a.code == 872)
                .map(u32_of)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        reasons,
        [4, 2],
        "Reporting-Reasons of the CCR-U and the CCR-T"
    );
}
