//! The P-CSCF scenario both P-CSCF scripts are tested with: the Kamailio one
//! (`tests/tests/roles_pcscf.rs`) and the OpenSIPS one (`tests/tests/roles_pcscf_opensips.rs`).
//! One scenario, so that the two SIP servers are held to the same SIP behaviour and the same
//! Rx messages on the wire.
//!
//! A P-CSCF asking a PCRF on Erlang/OTP diameter (`tests/peers/rx_pcrf.escript`) over Rx
//! through the real `dmbridge run`, with a caller and a callee (`crate::sip_media`) on
//! loopback. Asserted on the SIP side (what each phone receives), in the PCRF's log (its strict
//! codec decodes every AAR and STR), in the P-CSCF's log and on the wire (tshark between
//! bridge and PCRF):
//! - the 183's SDP answer -> AAR whose Media-Component-Descriptions are the SDP's media: number,
//!   type, b=AS as Max-Requested-Bandwidth-UL (answer) and -DL (offer), Flow-Status from the
//!   direction attribute, the RTP and RTCP Flow-Descriptions from c=/m= of offer and answer;
//!   Framed-IP-Address, Subscription-Id. AAA 2001: the caller gets the 183 and the 200;
//! - AAA 5063 REQUESTED_SERVICE_NOT_AUTHORIZED, 5065 IP-CAN_SESSION_NOT_AVAILABLE, or no AAA
//!   at all: the caller gets 503, the callee a CANCEL; a refusal of media first answered in a
//!   200: BYE to both sides after the ACK;
//! - RAR for the call: RAA 2001 and the Specific-Action logged; for an unknown session 5002;
//! - BYE -> STR (DIAMETER_LOGOUT) for the AAR's Session-Id, the BYE reaches the callee;
//! - ASR: ASA 2001, BYE to caller and callee, STR (DIAMETER_ADMINISTRATIVE).
//! - CANCEL before the answer: of a call whose media was authorised on the 183, STR
//!   (DIAMETER_LOGOUT); of a call that only rang (no SDP answer, no AAR), no STR.

use std::path::Path;
use std::time::Duration;

use crate::pcrf::{PCRF, RX_APP};
use crate::roles::{captured_server, ScriptedPeer, ServerPeer, SipServerUnderTest};
use crate::sip_media::{Call, SdpPhone, SipMsg};
use crate::tshark::{self, TsAvp, TsMessage};

/// The P-CSCF's Origin-Host (realm `test.local`).
pub const PCSCF: &str = "pcscf.test.local";

/// One m= line of an SDP the test sends.
struct Media {
    kind: &'static str,
    port: u16,
    /// Its own c= address, when not the session's.
    addr: Option<&'static str>,
    /// b=AS, kbit/s.
    kbps: u32,
    /// Direction attribute, if any.
    dir: Option<&'static str>,
}

struct Sdp {
    addr: &'static str,
    media: Vec<Media>,
}

impl Sdp {
    fn text(&self) -> String {
        let mut s = format!(
            "v=0\r\no=- 1 1 IN IP4 {a}\r\ns=-\r\nc=IN IP4 {a}\r\nt=0 0\r\n",
            a = self.addr
        );
        for m in &self.media {
            let pt = if m.kind == "audio" { 0 } else { 96 };
            s.push_str(&format!("m={} {} RTP/AVP {pt}\r\n", m.kind, m.port));
            if let Some(a) = m.addr {
                s.push_str(&format!("c=IN IP4 {a}\r\n"));
            }
            s.push_str(&format!("b=AS:{}\r\n", m.kbps));
            if let Some(d) = m.dir {
                s.push_str(&format!("a={d}\r\n"));
            }
        }
        s
    }

    fn addr_of(&self, i: usize) -> &str {
        self.media[i].addr.unwrap_or(self.addr)
    }
}

/// The UE's offer: audio, and video it only sends.
fn offer() -> Sdp {
    Sdp {
        addr: "10.1.0.11",
        media: vec![
            Media {
                kind: "audio",
                port: 49_170,
                addr: None,
                kbps: 64,
                dir: None,
            },
            Media {
                kind: "video",
                port: 51_372,
                addr: None,
                kbps: 512,
                dir: Some("sendonly"),
            },
        ],
    }
}

/// The callee's answer: its video on an address of its own.
fn answer() -> Sdp {
    Sdp {
        addr: "10.2.0.22",
        media: vec![
            Media {
                kind: "audio",
                port: 3_456,
                addr: None,
                kbps: 80,
                dir: Some("sendrecv"),
            },
            Media {
                kind: "video",
                port: 3_458,
                addr: Some("10.2.0.23"),
                kbps: 384,
                dir: Some("recvonly"),
            },
        ],
    }
}

/// The values of the members named `name` of a grouped AVP.
fn members<'a>(g: &'a TsAvp, name: &str) -> Vec<&'a str> {
    g.children
        .iter()
        .filter(|a| a.name.as_deref() == Some(name))
        .filter_map(|a| a.value.as_deref())
        .collect()
}

/// Checks one AAR against the SDP offer and answer it was made from (TS 29.213 §6.2).
fn check_aar(aar: &TsMessage, caller: &str) {
    let (o, a) = (offer(), answer());
    let mcds = aar.find_deep("Media-Component-Description");
    assert_eq!(mcds.len(), o.media.len(), "one MCD per m= line");
    for (i, mcd) in mcds.iter().enumerate() {
        let (om, am) = (&o.media[i], &a.media[i]);
        let want = |name: &str, v: String| {
            assert_eq!(members(mcd, name), [v.as_str()], "MCD {} {name}", i + 1);
        };
        want("Media-Component-Number", (i + 1).to_string());
        want(
            "Media-Type",
            (if om.kind == "audio" { "0" } else { "1" }).into(),
        );
        want("Max-Requested-Bandwidth-UL", (am.kbps * 1000).to_string());
        want("Max-Requested-Bandwidth-DL", (om.kbps * 1000).to_string());
        let status = match om.dir {
            Some("sendonly") => 0,
            Some("recvonly") => 1,
            _ => 2,
        };
        want("Flow-Status", status.to_string());
        let subs: Vec<&TsAvp> = mcd
            .children
            .iter()
            .filter(|c| c.name.as_deref() == Some("Media-Sub-Component"))
            .collect();
        assert_eq!(subs.len(), 2, "RTP and RTCP flows of MCD {}", i + 1);
        for (d, sub) in subs.iter().enumerate() {
            let (op, ap) = (om.port + d as u16, am.port + d as u16);
            let (oa, aa) = (o.addr_of(i), a.addr_of(i));
            assert_eq!(members(sub, "Flow-Number"), [(d + 1).to_string()]);
            assert_eq!(members(sub, "Flow-Usage"), [d.to_string()]);
            assert_eq!(
                members(sub, "Flow-Description"),
                [
                    format!("permit out 17 from {aa} {ap} to {oa} {op}"),
                    format!("permit in 17 from {oa} {op} to {aa} {ap}")
                ],
                "flows of MCD {}",
                i + 1
            );
        }
    }
    let framed = aar.avp("Framed-IP-Address").expect("Framed-IP-Address");
    let ue: Vec<u8> = o.addr.split('.').map(|x| x.parse().unwrap_or(0)).collect();
    assert_eq!(framed.data(), ue.as_slice(), "the UE's address");
    let data = aar.find_deep("Subscription-Id-Data");
    assert_eq!(
        data.first().and_then(|a| a.value.as_deref()),
        Some(format!("sip:{caller}@test.local").as_str())
    );
    assert_eq!(
        aar.find_deep("Subscription-Id-Type")
            .first()
            .and_then(|a| a.value.as_deref()),
        Some("2"),
        "END_USER_SIP_URI"
    );
}

fn session_of(m: &TsMessage) -> String {
    m.value("Session-Id").unwrap_or("").to_string()
}

/// A call from `caller` to `callee` through the P-CSCF on `pcscf` whose media the PCRF
/// authorises: the callee's 183 with the SDP answer reaches the caller, then its 200, which
/// the caller ACKs. Returns the call and the 200.
fn answered_call(caller: &SdpPhone, callee: &SdpPhone, pcscf: u16) -> (Call, SipMsg) {
    let (o, a) = (offer().text(), answer().text());
    let call = caller.invite(pcscf, "sip:bob@test.local", &o);
    let inv = callee.next_request("INVITE");
    assert_eq!(inv.body(), o, "the offer reaches the callee unchanged");
    callee.reply(&inv, 183, "Session Progress", Some(&a));
    let early = caller.wait_response(&call, "INVITE", |s| s == 183 || s >= 200);
    assert_eq!(early.status(), Some(183), "{}", caller.dump());
    assert_eq!(early.body(), a, "the answer reaches the caller unchanged");
    callee.reply(&inv, 200, "OK", Some(&a));
    let ok = caller.wait_final(&call);
    assert_eq!(ok.status(), Some(200), "{}", caller.dump());
    caller.ack(&call, &ok);
    assert_eq!(callee.next_request("ACK").header("Call-ID"), call.call_id);
    (call, ok)
}

/// Waits for the PCRF's log to show the STR of Rx session `sid` with Termination-Cause
/// `cause`, for a session it knew and decoded without error; `what` names the event in the
/// panic.
fn wait_str(pcrf: &mut ScriptedPeer, sid: &str, cause: u32, what: &str) {
    pcrf.guard
        .wait_for_line(
            &format!("STR sid={sid} cause={cause} known=1 errors=0"),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("no STR {what}: {e}\n{}", pcrf.guard.tail(20)));
}

/// Runs the scenario in `dir`: the PCRF (`tests/peers/rx_pcrf.escript`, refusing mallory
/// 5063, eve 5065, trudy 5063 and not answering dave) listening with a capture of its port,
/// the callee bob, and the P-CSCF that `start(pcrf, bob_port)` starts: its bridge connected
/// to `pcrf` as the peer and default route, its SIP server sending originating requests to
/// 127.0.0.1:`bob_port` (the S-CSCF's place).
pub fn run_pcscf_scenario(
    dir: &Path,
    start: &dyn Fn(ServerPeer<'_>, u16) -> Box<dyn SipServerUnderTest>,
) {
    let bob = SdpPhone::start("bob");
    let (mut pcrf, pcrf_port, capture) = captured_server(
        dir,
        "rx_pcrf.escript",
        PCRF,
        &[
            "--aar".into(),
            "mallory=e5063,eve=e5065,dave=drop,trudy=e5063".into(),
        ],
    );
    let role = start(
        ServerPeer {
            peer: &pcrf,
            host: PCRF,
            port: pcrf_port,
        },
        bob.port,
    );
    let k = role.as_ref();
    let sip = k.sip_port();
    let (o, a) = (offer().text(), answer().text());

    // call 1, authorised: 183 and 200 reach the caller
    let alice = SdpPhone::start("alice");
    let (mut call, ok) = answered_call(&alice, &bob, sip);
    let sid1 = pcrf.cmd("last");
    let sid1 = sid1
        .strip_prefix("SESSION ")
        .unwrap_or_else(|| panic!("no session authorised: {sid1}"))
        .to_string();

    // RAR for the call: answered by the script, the Specific-Action logged
    let r = pcrf.cmd(&format!("rar {sid1} 2"));
    assert!(r.starts_with("ANSWER cmd=258 e=0 rc=2001 "), "{r}");
    assert_eq!(
        k.log_lines(&format!(
            "RAR {sid1} call {}: Specific-Action 2",
            call.call_id
        ))
        .len(),
        1,
        "the script logged the RAR's Specific-Action"
    );
    let r = pcrf.cmd(&format!("rar {PCSCF};1;999 4"));
    assert!(r.starts_with("ANSWER cmd=258 e=0 rc=5002 "), "{r}");

    // BYE -> STR, then the BYE reaches the callee
    let bye_ok = alice.bye(&mut call, &ok);
    assert_eq!(bye_ok.status(), Some(200), "{}", alice.dump());
    assert_eq!(bob.next_request("BYE").header("Call-ID"), call.call_id);
    wait_str(&mut pcrf, &sid1, 1, "on BYE");

    // calls 2 to 4, refused on the 183 (5063, 5065, no AAA before the timeout): 503 to the
    // caller, CANCEL to the callee
    for (user, outcome) in [
        ("mallory", "Experimental-Result-Code 5063"),
        ("eve", "Experimental-Result-Code 5065"),
        ("dave", "no answer"),
    ] {
        let caller = SdpPhone::start(user);
        let c = caller.invite(sip, "sip:bob@test.local", &o);
        let inv = bob.next_request("INVITE");
        bob.reply(&inv, 183, "Session Progress", Some(&a));
        let fin = caller.wait_final(&c);
        assert_eq!(fin.status(), Some(503), "{user}: {}", caller.dump());
        assert!(
            !caller.received().iter().any(|m| m.status() == Some(183)),
            "{user}: the refused 183 is held back"
        );
        let cancel = bob.next_request("CANCEL");
        assert_eq!(cancel.header("Call-ID"), c.call_id);
        // the proxy ACKs the callee's 487 (RFC 3261 §17.1.1.3)
        assert_eq!(bob.next_request("ACK").header("Call-ID"), c.call_id);
        // (waited for: the PCRF logs its AAR after answering it, which may be after the
        // caller has its 503)
        pcrf.guard
            .wait_for_line(
                &format!("sub=sip:{user}@test.local mcd=2 errors=0 -> {outcome}"),
                Duration::from_secs(10),
            )
            .unwrap_or_else(|e| panic!("{user}: {e}"));
    }

    // call 5, refused when the media is first answered in a 200: it cannot be held back,
    // the call is released with a BYE to each side once the ACK passed
    let trudy = SdpPhone::start("trudy");
    let c5 = trudy.invite(sip, "sip:bob@test.local", &o);
    let inv = bob.next_request("INVITE");
    bob.reply(&inv, 200, "OK", Some(&a));
    let ok5 = trudy.wait_final(&c5);
    assert_eq!(ok5.status(), Some(200), "{}", trudy.dump());
    trudy.ack(&c5, &ok5);
    assert_eq!(bob.next_request("ACK").header("Call-ID"), c5.call_id);
    let bye = trudy.next_request("BYE");
    assert_eq!(bye.header("Call-ID"), c5.call_id);
    let bye = bob.next_request("BYE");
    assert_eq!(bye.header("Call-ID"), c5.call_id);

    // call 6, authorised, then aborted by the PCRF: ASA, BYE both ways, STR
    let (c6, _) = answered_call(&alice, &bob, sip);
    let sid6 = pcrf.cmd("last");
    let sid6 = sid6.strip_prefix("SESSION ").unwrap_or("").to_string();
    assert_ne!(sid6, sid1, "a new Rx session per call");
    let r = pcrf.cmd(&format!("asr {sid6}"));
    assert!(r.starts_with("ANSWER cmd=274 e=0 rc=2001 "), "{r}");
    let to_alice = alice.next_request("BYE");
    let to_bob = bob.next_request("BYE");
    for m in [&to_alice, &to_bob] {
        assert_eq!(m.header("Call-ID"), c6.call_id, "{}", m.text);
    }
    wait_str(&mut pcrf, &sid6, 4, "after ASR");

    // call 7, authorised on the 183, then cancelled by the caller before the answer: CANCEL
    // to the callee, 487 to the caller, and the Rx session is released with an STR
    // (DIAMETER_LOGOUT) as for a BYE
    let c7 = alice.invite(sip, "sip:bob@test.local", &o);
    let inv = bob.next_request("INVITE");
    bob.reply(&inv, 183, "Session Progress", Some(&a));
    let early = alice.wait_response(&c7, "INVITE", |s| s == 183 || s >= 200);
    assert_eq!(early.status(), Some(183), "{}", alice.dump());
    let sid7 = pcrf.cmd("last");
    let sid7 = sid7.strip_prefix("SESSION ").unwrap_or("").to_string();
    assert_ne!(sid7, sid6, "a new Rx session per call");
    alice.cancel(&c7);
    assert_eq!(bob.next_request("CANCEL").header("Call-ID"), c7.call_id);
    let fin = alice.wait_final(&c7);
    assert_eq!(fin.status(), Some(487), "{}", alice.dump());
    wait_str(&mut pcrf, &sid7, 1, "after CANCEL");
    // call 8, cancelled while ringing without SDP: no AAR was sent, so no STR either (the
    // wire's STR list below has none for it)
    let c8 = alice.invite(sip, "sip:bob@test.local", &o);
    let inv = bob.next_request("INVITE");
    bob.reply(&inv, 180, "Ringing", None);
    alice.wait_response(&c8, "INVITE", |s| s == 180);
    alice.cancel(&c8);
    assert_eq!(bob.next_request("CANCEL").header("Call-ID"), c8.call_id);
    let fin = alice.wait_final(&c8);
    assert_eq!(fin.status(), Some(487), "{}", alice.dump());

    let errors = k.log_errors();
    assert!(
        errors.is_empty(),
        "the P-CSCF logged errors:\n{}",
        errors.join("\n")
    );

    // the wire, as Wireshark decodes it
    let pcap = capture.stop();
    let msgs = tshark::decode_pcap(&pcap, &[pcrf_port]);
    let rx: Vec<&TsMessage> = msgs
        .iter()
        .filter(|m| matches!(m.cmd_code, 258 | 265 | 274 | 275))
        .collect();
    for m in &rx {
        let problems = m.problems(tshark::EXPERT_WARN, |_| false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(m.app_id, RX_APP.id);
    }
    let aars: Vec<&&TsMessage> = rx
        .iter()
        .filter(|m| m.cmd_code == 265 && m.is_request())
        .collect();
    let callers = ["alice", "mallory", "eve", "dave", "trudy", "alice", "alice"];
    assert_eq!(aars.len(), callers.len(), "one AAR per call");
    for (m, caller) in aars.iter().zip(callers) {
        assert_eq!(m.value("Origin-Host"), Some(PCSCF));
        assert_eq!(m.value("Destination-Realm"), Some(PCRF));
        check_aar(m, caller);
    }
    assert_eq!(session_of(aars[0]), sid1);
    assert_eq!(session_of(aars[5]), sid6);
    assert_eq!(session_of(aars[6]), sid7);
    // the STR goes to the PCRF that answered the AAR (its Origin-Host kept with the dialog)
    let strs: Vec<(String, String)> = rx
        .iter()
        .filter(|m| m.cmd_code == 275 && m.is_request())
        .map(|m| {
            assert_eq!(
                m.value("Destination-Host"),
                Some(PCRF),
                "STR Destination-Host"
            );
            (
                session_of(m),
                m.value("Termination-Cause").unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        strs,
        [
            (sid1.clone(), "1".to_string()),
            (sid6.clone(), "4".to_string()),
            (sid7.clone(), "1".to_string())
        ],
        "STR on BYE (DIAMETER_LOGOUT), after ASR (DIAMETER_ADMINISTRATIVE) and after the CANCEL \
         of an authorised call (DIAMETER_LOGOUT), no other"
    );
    let codes = |cmd: u32| -> Vec<String> {
        rx.iter()
            .filter(|m| m.cmd_code == cmd && !m.is_request())
            .map(|m| m.result_code().unwrap_or("none").to_string())
            .collect()
    };
    let rar = rx
        .iter()
        .find(|m| m.cmd_code == 258 && m.is_request())
        .expect("RAR");
    assert_eq!(session_of(rar), sid1);
    assert_eq!(rar.value("Specific-Action"), Some("2"));
    assert_eq!(codes(258), ["2001", "5002"], "RAAs from the script");
    assert_eq!(codes(274), ["2001"], "ASA from the script");
}
