//! The S-CSCF scenario both S-CSCF scripts are tested with: the Kamailio one
//! (`cfg-examples/roles/kamailio-scscf.cfg`, `tests/tests/roles_scscf.rs`) and the OpenSIPS
//! one (`opensips-scscf.cfg`, `tests/tests/roles_scscf_opensips.rs`). One scenario, so that
//! the two SIP servers are held to the same responses, Cx requests and wire.
//!
//! The S-CSCF registers users with SIP Digest vectors from a Cx HSS on Erlang/OTP diameter
//! (`tests/peers/cx_hss.escript`, a strict codec for MAR, started with [`hss_options`]),
//! through the real `dmbridge run`, with a SIP client that answers the challenge (RFC 2617
//! digest with qop=auth) and a stand-in UE (a UAS answering 200) behind the registered
//! contact. Asserted on the SIP side (the client's responses, what reached the UE), in the
//! HSS's log and on the wire (tshark between bridge and HSS):
//! - REGISTER -> MAR (SIP Digest, one item, User-Name/Public-Identity/Server-Name) -> 401
//!   with the HSS's realm and qop=auth -> REGISTER with the right response -> SAR
//!   REGISTRATION -> 200 with the binding's Contact;expires and Service-Route; an INVITE for
//!   the user reaches its contact; a re-registration is challenged again and sends
//!   RE_REGISTRATION, a de-registration (Expires: 0) USER_DEREGISTRATION and removes the
//!   binding (a later INVITE: 404);
//! - a wrong password: 401 then 403, and a SAR AUTHENTICATION_FAILURE tells the HSS;
//! - a user the HSS does not know (MAA 5001): 403 without a challenge; an HSS that does not
//!   answer the MAR: 504; an SAR not answered: 504, refused (SAA 5001): 403;
//! - PPR from the HSS: PPA 2001 for the registered user (profile stored), 5001 for another;
//! - RTR from the HSS: RTA 2001 naming the IMPI, and a later INVITE for the user gets 404.

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::capture::Capture;
use crate::roles::{CxRole, ScriptedPeer};
use crate::sip::{loopback_udp, request, Uas};
use crate::tshark;

const HSS: &str = CxRole::HSS;
/// The S-CSCF's Origin-Host (its bridge's).
pub const SCSCF: &str = "scscf.test.local";
/// The S-CSCF's SIP URI, its Server-Name in MAR and SAR.
pub const SCSCF_NAME: &str = "sip:scscf.test.local";
/// The realm of the HSS's SIP Digest vectors.
pub const DIGEST_REALM: &str = "ims.test.local";
const CX_APP: u32 = 16_777_216;

/// `cx_hss.escript`'s options for the scenario: the subscribers and their passwords, the
/// digest realm, slow's MAR never answered, erin's SAR never answered and frank's refused.
pub fn hss_options() -> Vec<String> {
    [
        "--subscribers",
        "alice:alice-secret,carol:carol-secret,dave:dave-secret,erin:erin-secret,frank:frank-secret",
        "--digest-realm",
        DIGEST_REALM,
        "--mar",
        "slow=drop",
        "--sar",
        "erin=drop,frank=e5001",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The S-CSCF under test: its SIP port, the HSS it asks (started with [`hss_options`]) and
/// its port, the capture of that port (from before the bridge connected), and how to read
/// the profile (User-Data) the S-CSCF stored for an IMPI.
pub struct ScscfUnderTest<'a> {
    pub sip_port: u16,
    pub hss: &'a ScriptedPeer,
    pub hss_port: u16,
    pub capture: Capture,
    pub profile: &'a dyn Fn(&str) -> String,
}

/// Lower-case hex MD5 of `text` (RFC 2617 digests), by coreutils' md5sum.
pub fn md5_hex(text: &str) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("md5sum: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("md5sum stdin: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("md5sum: {e}"));
    let hex = String::from_utf8_lossy(&out.stdout);
    hex.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `name="value"` or `name=value` of a Digest challenge.
pub fn digest_param(challenge: &str, name: &str) -> Option<String> {
    let at = challenge.find(&format!("{name}="))? + name.len() + 1;
    let rest = &challenge[at..];
    let v = match rest.strip_prefix('"') {
        Some(q) => &q[..q.find('"')?],
        None => rest.split([',', '\r', '\n']).next()?,
    };
    Some(v.trim().to_string())
}

/// A UE registering `user`@test.local (IMPI and IMPU) with the S-CSCF on `port`, its
/// Contact pointing at `contact_port`: one Call-ID for the whole exchange.
pub struct Ue {
    sock: UdpSocket,
    port: u16,
    user: String,
    contact_port: u16,
    cseq: u32,
    /// The Expires header of the next REGISTER (0: de-register).
    pub expires: u32,
}

impl Ue {
    pub fn new(port: u16, user: &str, contact_port: u16) -> Ue {
        let (sock, _) = loopback_udp(Duration::from_secs(8));
        Ue {
            sock,
            port,
            user: user.into(),
            contact_port,
            cseq: 0,
            expires: 600,
        }
    }

    /// Sends a REGISTER (with `authorization` when given) and returns the final response.
    pub fn register(&mut self, authorization: Option<&str>) -> String {
        self.cseq += 1;
        let me = self.sock.local_addr().map(|a| a.port()).unwrap_or(0);
        let (user, cseq, contact, expires) =
            (&self.user, self.cseq, self.contact_port, self.expires);
        let mut msg = format!(
            "REGISTER sip:test.local SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{me}-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@test.local>;tag={me}\r\n\
             To: <sip:{user}@test.local>\r\n\
             Call-ID: {me}-{user}@ue\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@127.0.0.1:{contact}>\r\n\
             Expires: {expires}\r\n"
        );
        if let Some(a) = authorization {
            msg.push_str(&format!("Authorization: {a}\r\n"));
        }
        msg.push_str("Content-Length: 0\r\n\r\n");
        self.sock
            .send_to(msg.as_bytes(), (Ipv4Addr::LOCALHOST, self.port))
            .unwrap_or_else(|e| panic!("udp send: {e}"));
        let mut buf = vec![0u8; 65535];
        loop {
            let n = match self.sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => return format!("no reply ({e})"),
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if !text.starts_with("SIP/2.0 1") {
                return text;
            }
        }
    }

    /// The Authorization answering `challenge` (a 401's WWW-Authenticate value) with
    /// `password`: RFC 2617 §3.2.2, qop=auth when offered.
    pub fn authorization(&self, challenge: &str, password: &str) -> String {
        let impi = format!("{}@test.local", self.user);
        let realm = digest_param(challenge, "realm").expect("realm in the challenge");
        let nonce = digest_param(challenge, "nonce").expect("nonce in the challenge");
        let uri = "sip:test.local";
        let ha1 = md5_hex(&format!("{impi}:{realm}:{password}"));
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        let cnonce = format!("c{}", self.cseq);
        let qop_auth = digest_param(challenge, "qop")
            .is_some_and(|q| q.split(',').any(|v| v.trim() == "auth"));
        if qop_auth {
            let response = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
            format!(
                "Digest username=\"{impi}\", realm=\"{realm}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, \
                 nc=00000001, cnonce=\"{cnonce}\""
            )
        } else {
            let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
            format!(
                "Digest username=\"{impi}\", realm=\"{realm}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", response=\"{response}\", algorithm=MD5"
            )
        }
    }

    /// REGISTER, expect 401, answer it with `password`: (challenge, final response).
    pub fn register_with(&mut self, password: &str) -> (String, String) {
        let first = self.register(None);
        assert!(
            status(&first) == "SIP/2.0 401 Unauthorized",
            "{}: first REGISTER: {first}",
            self.user
        );
        let challenge = header(&first, "WWW-Authenticate").expect("WWW-Authenticate in the 401");
        let auth = self.authorization(&challenge, password);
        (challenge, self.register(Some(&auth)))
    }
}

pub fn status(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

pub fn header(resp: &str, name: &str) -> Option<String> {
    resp.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Runs the scenario (the module's header) against the S-CSCF `s`.
pub fn run_scscf_scenario(s: ScscfUnderTest<'_>) {
    let ue = Uas::start();
    let (port, hss) = (s.sip_port, s.hss);

    // alice: 401 with the HSS's realm and qop, then 200 with the right password
    let mut alice = Ue::new(port, "alice", ue.port);
    let (challenge, ok) = alice.register_with("alice-secret");
    assert_eq!(
        digest_param(&challenge, "realm").as_deref(),
        Some(DIGEST_REALM),
        "{challenge}"
    );
    assert_eq!(
        digest_param(&challenge, "qop").as_deref(),
        Some("auth"),
        "{challenge}"
    );
    assert_eq!(status(&ok), "SIP/2.0 200 OK", "alice: {ok}");
    assert_eq!(
        header(&ok, "Service-Route").as_deref(),
        Some(format!("<{SCSCF_NAME};lr>").as_str()),
        "{ok}"
    );
    assert_eq!(
        header(&ok, "Contact"),
        Some(format!("<sip:alice@127.0.0.1:{}>;expires=600", ue.port)),
        "the 200 lists the binding: {ok}"
    );
    // a terminating INVITE reaches alice's contact
    let r = request(port, "INVITE", "sip:alice@test.local", "erin", &[]);
    assert_eq!(r, "SIP/2.0 200 OK", "INVITE alice");

    // dave registers, re-registers (a fresh challenge: one vector per registration) and
    // de-registers (Expires: 0); afterwards a request for him finds no binding
    let mut dave = Ue::new(port, "dave", ue.port);
    for (expires, what) in [
        (600, "registers"),
        (600, "re-registers"),
        (0, "de-registers"),
    ] {
        dave.expires = expires;
        let (_, r) = dave.register_with("dave-secret");
        assert_eq!(status(&r), "SIP/2.0 200 OK", "dave {what}: {r}");
    }
    let r = request(port, "INVITE", "sip:dave@test.local", "erin", &[]);
    assert_eq!(
        r, "SIP/2.0 404 Not Found",
        "INVITE dave after de-registration"
    );

    // carol: a wrong password -> 403 after the challenge
    let mut carol = Ue::new(port, "carol", ue.port);
    let (_, bad) = carol.register_with("not-carols");
    assert_eq!(status(&bad), "SIP/2.0 403 Forbidden", "carol: {bad}");
    // bob is unknown to the HSS: 403 without a challenge
    let r = Ue::new(port, "bob", ue.port).register(None);
    assert_eq!(status(&r), "SIP/2.0 403 Forbidden", "bob: {r}");
    // the HSS never answers slow's MAR: a server error, no challenge
    let r = Ue::new(port, "slow", ue.port).register(None);
    assert_eq!(status(&r), "SIP/2.0 504 Server Time-out", "slow: {r}");

    // authenticated, but the HSS does not answer the SAR (504) or refuses it (403)
    let (_, r) = Ue::new(port, "erin", ue.port).register_with("erin-secret");
    assert_eq!(status(&r), "SIP/2.0 504 Server Time-out", "erin: {r}");
    let (_, r) = Ue::new(port, "frank", ue.port).register_with("frank-secret");
    assert_eq!(status(&r), "SIP/2.0 403 Forbidden", "frank: {r}");

    // PPR: alice is served here (2001, her new profile stored), dave is not (5001)
    let a = hss.cmd("ppr alice@test.local");
    assert!(a.starts_with("ANSWER cmd=305 e=0 "), "{a}");
    assert_eq!(ScriptedPeer::field(&a, "rc"), "2001", "{a}");
    let stored = (s.profile)("alice@test.local");
    assert!(
        stored.contains("IMSSubscription") && stored.contains("alice@test.local"),
        "the PPR's User-Data stored: {stored}"
    );
    let a = hss.cmd("ppr dave@test.local");
    assert!(a.starts_with("ANSWER cmd=305 "), "{a}");
    assert_eq!(ScriptedPeer::field(&a, "exp"), "5001", "{a}");

    // RTR: alice's registration ends; the RTA names her IMPI; a new INVITE finds no binding
    let a = hss.cmd("rtr alice@test.local sip:alice@test.local");
    assert!(a.starts_with("ANSWER cmd=304 e=0 "), "{a}");
    assert_eq!(ScriptedPeer::field(&a, "rc"), "2001", "{a}");
    assert_eq!(ScriptedPeer::field(&a, "assoc"), "alice@test.local", "{a}");
    let r = request(port, "INVITE", "sip:alice@test.local", "erin", &[]);
    assert_eq!(r, "SIP/2.0 404 Not Found", "INVITE alice after RTR");

    assert_eq!(
        ue.request_lines(),
        ["INVITE sip:alice@test.local SIP/2.0"],
        "what reached the UE's contact"
    );

    // the HSS's view: the MARs decoded under its strict codec, the SARs' assignment types
    let out = hss.guard.output();
    let mars: Vec<&str> = out.lines().filter(|l| l.starts_with("MAR ")).collect();
    assert_eq!(
        mars.len(),
        9,
        "one MAR per unauthenticated REGISTER:\n{out}"
    );
    for (user, outcome) in [
        ("alice", "vector"),
        ("carol", "vector"),
        ("dave", "vector"),
        ("erin", "vector"),
        ("frank", "vector"),
        ("bob", "Experimental-Result-Code 5001"),
        ("slow", "no answer"),
    ] {
        let want = format!(
            "MAR user={user}@test.local impu=sip:{user}@test.local scheme=SIP_Digest items=1 \
             server={SCSCF_NAME} errors=[] -> {outcome}"
        );
        assert!(mars.contains(&want.as_str()), "{want}\n{out}");
    }
    let sars: Vec<&str> = out.lines().filter(|l| l.starts_with("SAR ")).collect();
    assert_eq!(
        sars,
        [
            "SAR user=alice@test.local impu=sip:alice@test.local sat=1 -> Result-Code 2001",
            "SAR user=dave@test.local impu=sip:dave@test.local sat=1 -> Result-Code 2001",
            "SAR user=dave@test.local impu=sip:dave@test.local sat=2 -> Result-Code 2001",
            "SAR user=dave@test.local impu=sip:dave@test.local sat=5 -> Result-Code 2001",
            "SAR user=carol@test.local impu=sip:carol@test.local sat=9 -> Result-Code 2001",
            "SAR user=erin@test.local impu=sip:erin@test.local sat=1 -> no answer",
            "SAR user=frank@test.local impu=sip:frank@test.local sat=1 -> \
             Experimental-Result-Code 5001",
        ],
        "REGISTRATION, RE_REGISTRATION, USER_DEREGISTRATION, AUTHENTICATION_FAILURE"
    );

    // the wire, as Wireshark decodes it
    let cx = cx_on_the_wire(
        s.capture,
        s.hss_port,
        9,
        &[
            ("alice@test.local", "1"),
            ("dave@test.local", "1"),
            ("dave@test.local", "2"),
            ("dave@test.local", "5"),
            ("carol@test.local", "9"),
            ("erin@test.local", "1"),
            ("frank@test.local", "1"),
        ],
    );
    // alice's vector as the S-CSCF received it: the HA1 of her password in the HSS's realm
    let alice_ha1 = md5_hex(&format!("alice@test.local:{DIGEST_REALM}:alice-secret"));
    let vectors: Vec<_> = cx
        .iter()
        .filter(|m| m.cmd_code == 303 && !m.is_request())
        .flat_map(|m| m.find_deep("Digest-HA1"))
        .filter_map(|a| a.value.as_deref())
        .collect();
    assert!(vectors.contains(&alice_ha1.as_str()), "{vectors:?}");
    // the answers to the HSS's PPRs and RTR, from the S-CSCF's bridge
    let answers = |code: u32| -> Vec<String> {
        cx.iter()
            .filter(|m| m.cmd_code == code && !m.is_request())
            .map(|m| m.result_code().unwrap_or("-").to_string())
            .collect()
    };
    assert_eq!(answers(304), ["2001"], "RTA");
    let ppa = answers(305);
    assert_eq!(ppa.len(), 2, "PPAs: {ppa:?}");
    assert_eq!(ppa[0], "2001", "PPA for alice");
}

/// The Cx messages between the S-CSCF's bridge and the HSS in `capture` (of `hss_port`), as
/// Wireshark decodes them, after checking that Wireshark finds no problem in any, that there
/// are `mars` MARs, each asking for one SIP Digest vector for user@test.local /
/// sip:user@test.local with this S-CSCF's Origin-Host and Server-Name, and one SAR per
/// `(User-Name, Server-Assignment-Type)` of `sars`, in that order.
fn cx_on_the_wire(
    capture: Capture,
    hss_port: u16,
    mars: usize,
    sars: &[(&str, &str)],
) -> Vec<tshark::TsMessage> {
    let pcap = capture.stop();
    let cx: Vec<_> = tshark::decode_pcap(&pcap, &[hss_port])
        .into_iter()
        .filter(|m| m.app_id == CX_APP)
        .collect();
    for m in &cx {
        let problems = m.problems(tshark::EXPERT_WARN, |_| false);
        assert!(problems.is_empty(), "cmd {}: {problems:?}", m.cmd_code);
    }
    let mar: Vec<_> = cx
        .iter()
        .filter(|m| m.cmd_code == 303 && m.is_request())
        .collect();
    assert_eq!(mar.len(), mars, "MARs on the wire");
    for m in &mar {
        assert_eq!(m.value("Origin-Host"), Some(SCSCF));
        assert_eq!(m.value("Destination-Realm"), Some(HSS));
        assert_eq!(m.value("Server-Name"), Some(SCSCF_NAME));
        assert_eq!(m.value("3GPP-SIP-Number-Auth-Items"), Some("1"));
        let user = m.value("User-Name").expect("User-Name");
        let local = user
            .strip_suffix("@test.local")
            .expect("IMPI user@test.local");
        assert_eq!(
            m.value("Public-Identity"),
            Some(format!("sip:{local}@test.local").as_str())
        );
        // Wireshark's names for TS 29.229's SIP-Auth-Data-Item and SIP-Authentication-Scheme
        let item = m
            .avp("3GPP-SIP-Auth-Data-Item")
            .expect("SIP-Auth-Data-Item");
        let scheme = item
            .children
            .iter()
            .find(|a| a.name.as_deref() == Some("3GPP-SIP-Authentication-Scheme"));
        assert_eq!(
            scheme.and_then(|a| a.value.as_deref()),
            Some("SIP Digest"),
            "{item:?}"
        );
    }
    let sar: Vec<_> = cx
        .iter()
        .filter(|m| m.cmd_code == 301 && m.is_request())
        .collect();
    assert_eq!(sar.len(), sars.len(), "SARs on the wire");
    for (m, &(user, sat)) in sar.iter().zip(sars) {
        assert_eq!(m.value("User-Name"), Some(user));
        let t = m
            .value("Server-Assignment-Type")
            .expect("Server-Assignment-Type");
        assert!(
            t == sat || t.ends_with(&format!("({sat})")),
            "Server-Assignment-Type {t}, want {sat}"
        );
        assert_eq!(m.value("Server-Name"), Some(SCSCF_NAME));
    }
    cx
}

/// The stale-nonce path against the S-CSCF `s` whose nonces live `nonce_expire` (shortened
/// by the test; the HSS's vector is kept 60 s by both scripts): alice answers her challenge
/// after the nonce expired, with the right password. RFC 2617 §3.2.1: the S-CSCF challenges
/// again with a new nonce and stale=true (the UE recomputes the response without asking the
/// user); the vector still held is used, so no second MAR reaches the HSS (TS 24.229
/// §5.4.1.2.1A leaves the vector's reuse to the S-CSCF while it is valid). Her answer to the
/// new nonce registers her: one MAR and one SAR REGISTRATION, on the HSS and on the wire.
pub fn run_stale_nonce_scenario(s: ScscfUnderTest<'_>, nonce_expire: Duration) {
    let ue = Uas::start();
    let mut alice = Ue::new(s.sip_port, "alice", ue.port);
    let first = alice.register(None);
    assert_eq!(status(&first), "SIP/2.0 401 Unauthorized", "alice: {first}");
    let challenge = header(&first, "WWW-Authenticate").expect("WWW-Authenticate in the 401");
    assert_eq!(digest_param(&challenge, "stale"), None, "{challenge}");
    // past the nonce's lifetime (no timed assertion: only the order of events matters)
    std::thread::sleep(nonce_expire + Duration::from_millis(1500));
    let late = alice.authorization(&challenge, "alice-secret");
    let again = alice.register(Some(&late));
    assert_eq!(
        status(&again),
        "SIP/2.0 401 Unauthorized",
        "an expired nonce, right password: {again}"
    );
    let renewed = header(&again, "WWW-Authenticate").expect("WWW-Authenticate in the 401");
    assert_eq!(
        digest_param(&renewed, "stale").map(|v| v.to_ascii_lowercase()),
        Some("true".to_string()),
        "{renewed}"
    );
    assert_eq!(
        digest_param(&renewed, "realm").as_deref(),
        Some(DIGEST_REALM),
        "{renewed}"
    );
    assert_ne!(
        digest_param(&renewed, "nonce"),
        digest_param(&challenge, "nonce"),
        "a new nonce"
    );
    let answer = alice.authorization(&renewed, "alice-secret");
    let ok = alice.register(Some(&answer));
    assert_eq!(status(&ok), "SIP/2.0 200 OK", "alice, new nonce: {ok}");

    // The HSS prints its SAR line after it has sent the SAA, and the 200 OK can overtake
    // that write to its log: wait for the line instead of reading the log once (a read at
    // load 12-16 found it not there yet).
    let _ = crate::wait::poll_until("the HSS's SAR line", Duration::from_secs(5), || {
        s.hss
            .guard
            .output()
            .lines()
            .any(|l| l.starts_with("SAR "))
            .then_some(())
    });
    let out = s.hss.guard.output();
    let mars = out.lines().filter(|l| l.starts_with("MAR ")).count();
    assert_eq!(mars, 1, "the vector is reused, no second MAR:\n{out}");
    let sars: Vec<&str> = out.lines().filter(|l| l.starts_with("SAR ")).collect();
    assert_eq!(
        sars,
        ["SAR user=alice@test.local impu=sip:alice@test.local sat=1 -> Result-Code 2001"]
    );
    cx_on_the_wire(s.capture, s.hss_port, 1, &[("alice@test.local", "1")]);
}
