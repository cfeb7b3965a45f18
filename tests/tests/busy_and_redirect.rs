//! RFC 6733 §7.1.3 against real peers: a request the node sends on (here as a relay agent,
//! §6.1.8) that is answered 3004 DIAMETER_TOO_BUSY ("When returned, a Diameter node SHOULD
//! attempt to send the message to an alternate peer") or 3006 DIAMETER_REDIRECT_INDICATION
//! ("the initiator of the request SHOULD direct the request directly to the server", §6.12:
//! "SHOULD forward the request directly to one of the hosts identified in these AVPs") goes
//! to that other peer, and its requester gets that peer's answer, once.
//!
//! The node under test, `edge.test.local` (realm `edge.local`), relays test_app requests for
//! realm `test.local` to two peers: `busy.test.local`, another `dmbridge run` with no SIP
//! worker attached (it answers every request 3004, DESIGN §9), and freeDiameter 1.2.1's
//! test_app server, which answers 2001. Requests for realm `redirect.local` go to a raw peer
//! that answers 3006 naming another raw peer, `target.test.local`, in Redirect-Host; one such
//! 3006 with Redirect-Host-Usage ALL_REALM is cached (§6.12-§6.14), and the next request for
//! the realm goes to the target without visiting the agent.
//!
//! (Erlang/OTP `diameter` is no target here: with its default `strict_mbit` it answers 5001
//! to a relayed request, whose Route-Record carries the M bit as RFC 6733 §4.5 requires but
//! which dia_peer's test_app grammar lists only under `* [ AVP ]`.)

use std::time::Duration;

use harness::bridge::{Bridge, BridgeOptions, BridgePeer};
use harness::peers::freediameter::FreeDiameter;
use harness::prometheus::http_get;
use harness::wait::poll_until;
use harness::wire::{answer_to, test_app, Avp, RawClient, RawMessage, TestRequest};
use harness::{free_port, wait_for_port, TestDir};

const EDGE: (&str, &str) = ("edge.test.local", "edge.local");
const CLIENT: (&str, &str) = ("client.client.local", "client.local");
const REDIR: (&str, &str) = ("redir.test.local", "test.local");
const TARGET: (&str, &str) = ("target.test.local", "target.local");
const BUSY: &str = "busy.test.local";
const FD: &str = "server.test.local";
const WAIT: Duration = Duration::from_secs(20);

/// The value of the metric line starting with `line` (e.g. `name{labels}`), 0 if absent.
fn metric(mport: u16, line: &str) -> f64 {
    let (_, body) = http_get(mport, "/metrics", Duration::from_secs(5)).unwrap_or_default();
    body.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn test_request(c: &mut RawClient, sid: &str, realm: &str, n: i32) -> (Vec<u8>, u32) {
    let id = c.next_id();
    let req = TestRequest {
        session_id: sid,
        origin_host: CLIENT.0,
        origin_realm: CLIENT.1,
        dest_realm: realm,
        dest_host: None,
        test_avp: n,
    };
    (req.encode(id, id), id)
}

fn is_test_request(m: &RawMessage) -> bool {
    m.is_request() && m.cmd_code == test_app::CMD
}

/// Sends a request for realm `redirect.local` and has the redirect agent answer it 3006
/// naming `redirect_uri` (and the `extra` AVPs); returns the request as the agent got it and
/// the client's hop-by-hop id.
fn redirected(
    client: &mut RawClient,
    redir: &mut RawClient,
    sid: &str,
    redirect_uri: &str,
    extra: &[Avp],
) -> (RawMessage, u32) {
    let (req, hbh) = test_request(client, sid, "redirect.local", 9);
    client.send(&req).unwrap();
    let got = redir
        .read_until(WAIT, REDIR, is_test_request)
        .expect("the request at the redirect agent");
    let mut avps = vec![Avp::str(292, redirect_uri)];
    avps.extend_from_slice(extra);
    redir
        .send(&answer_to(&got, 3006, REDIR.0, REDIR.1, &avps))
        .unwrap();
    (got, hbh)
}

/// The target gets a request, answers it 2001, and the client gets that answer for its
/// request `hbh`: the request as the target got it, and the client's answer.
fn served_by_target(
    client: &mut RawClient,
    target: &mut RawClient,
    hbh: u32,
) -> (RawMessage, RawMessage) {
    let again = target
        .read_until(WAIT, TARGET, is_test_request)
        .expect("the request at the target");
    target
        .send(&answer_to(&again, 2001, TARGET.0, TARGET.1, &[]))
        .unwrap();
    let a = client
        .read_until(WAIT, CLIENT, |m| !m.is_request() && m.hbh == hbh)
        .unwrap();
    assert_eq!(a.result_code(), Some(2001), "{a:?}");
    assert_eq!(a.origin_host().as_deref(), Some(TARGET.0));
    (again, a)
}

#[test]
fn requests_answered_3004_or_3006_go_to_the_alternate_peer() {
    let dir = TestDir::new("busy-and-redirect");
    let fd_port = free_port();
    let _fd = FreeDiameter::server(dir.path(), fd_port);
    // The busy node validates what it gets: it must know test_app's Test-AVP (M bit), or it
    // answers 5001 before it would find no worker.
    let dict = dir.path().join("test_app.dict");
    std::fs::write(
        &dict,
        format!(
            "VENDOR {v} TestVendor\nATTRIBUTE Test-AVP {a} integer32 {v}\n",
            v = test_app::VENDOR_ID,
            a = test_app::TEST_AVP
        ),
    )
    .unwrap();
    let busy_port = free_port();
    let _busy = Bridge::start(
        dir.path(),
        &BridgeOptions {
            origin_host: BUSY.into(),
            port: busy_port,
            dictionaries: vec![dict],
            ..BridgeOptions::default()
        },
    );
    let port = free_port();
    let mport = free_port();
    let peer = |host: &str, port| BridgePeer {
        host: host.into(),
        port,
    };
    let opts = BridgeOptions {
        origin_host: EDGE.0.into(),
        origin_realm: EDGE.1.into(),
        port,
        peers: vec![
            peer(BUSY, Some(busy_port)),
            peer(FD, Some(fd_port)),
            peer(REDIR.0, None),
            peer(TARGET.0, None),
        ],
        extra_toml: format!(
            "\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n\n[routing]\nrelay = true\n\n\
             [[routes]]\nrealm = \"test.local\"\npeers = [\"{BUSY}\", \"{FD}\"]\n\n\
             [[routes]]\nrealm = \"redirect.local\"\npeers = [\"{}\"]\n",
            REDIR.0
        ),
        ..BridgeOptions::default()
    };
    let _edge = Bridge::start(dir.path(), &opts);
    wait_for_port(mport, WAIT).unwrap();
    let mut redir = RawClient::connect(port, WAIT).unwrap();
    let cea = redir.handshake(REDIR.0, REDIR.1, WAIT).expect("CEA");
    assert_eq!(cea.result_code(), Some(2001));
    let mut target = RawClient::connect(port, WAIT).unwrap();
    let cea = target.handshake(TARGET.0, TARGET.1, WAIT).expect("CEA");
    assert_eq!(cea.result_code(), Some(2001));
    for host in [BUSY, FD, REDIR.0, TARGET.0] {
        let up = format!("dmbridge_peer_up{{peer=\"{host}\"}}");
        poll_until(&format!("{host} up"), WAIT, || {
            (metric(mport, &up) == 1.0).then_some(())
        })
        .unwrap();
    }
    let mut client = RawClient::connect(port, WAIT).unwrap();
    assert_eq!(
        client
            .handshake(CLIENT.0, CLIENT.1, WAIT)
            .unwrap()
            .result_code(),
        Some(2001)
    );

    // 3004: the requests the edge sends to the busy node first come back from freeDiameter;
    // none reaches the client as 3004.
    for n in 0..4 {
        let (req, hbh) = test_request(&mut client, &format!("c;busy;{n}"), "test.local", n);
        let a = client.request(&req, hbh, CLIENT, WAIT).unwrap();
        assert_eq!(a.result_code(), Some(2001), "request {n}: {a:?}");
        assert_eq!(a.origin_host().as_deref(), Some(FD));
    }
    let resent = metric(mport, "dmbridge_events_total{event=\"busy_resent\"}");
    assert!(resent >= 1.0, "no request went to the busy node first");

    // 3006: the redirect agent names the target, which gets the same request (end-to-end
    // id, AVPs; no T flag) and answers.
    let uri = format!("aaa://{}:3868;transport=tcp", TARGET.0);
    let (got, hbh) = redirected(&mut client, &mut redir, "c;redirect;1", &uri, &[]);
    let (again, a) = served_by_target(&mut client, &mut target, hbh);
    assert_eq!(again.e2e, got.e2e);
    assert_eq!(again.flags, got.flags, "same flags: no T");
    assert_eq!(again.bytes[20..], got.bytes[20..], "same AVPs");
    assert_eq!(a.e2e, hbh, "the client's end-to-end id");
    assert_eq!(
        metric(mport, "dmbridge_events_total{event=\"redirected\"}"),
        1.0
    );

    // A Redirect-Host that is no peer of the edge: the 3006 reaches the client as it came.
    let (_, hbh) = redirected(
        &mut client,
        &mut redir,
        "c;redirect;2",
        "aaa://nowhere.test.local",
        &[],
    );
    let a = client
        .read_until(WAIT, CLIENT, |m| !m.is_request() && m.hbh == hbh)
        .unwrap();
    assert_eq!(a.result_code(), Some(3006), "{a:?}");
    assert_eq!(a.origin_host().as_deref(), Some(REDIR.0));

    // A 3006 with Redirect-Host-Usage ALL_REALM (2) and Redirect-Max-Cache-Time 600 s
    // (§6.12: the server "SHOULD be used for all messages matching the criteria set by the
    // Redirect-Host-Usage AVP"; §6.13, §6.14): the next request for the realm goes straight
    // to the target, without visiting the agent.
    let caching = [Avp::u32(261, 2), Avp::u32(262, 600)];
    let (_, hbh) = redirected(&mut client, &mut redir, "c;redirect;3", &uri, &caching);
    served_by_target(&mut client, &mut target, hbh);
    let (req, hbh) = test_request(&mut client, "c;redirect;4", "redirect.local", 10);
    client.send(&req).unwrap();
    let (again, _) = served_by_target(&mut client, &mut target, hbh);
    assert_eq!(again.session_id().as_deref(), Some("c;redirect;4"));
    // The agent's next request is one sent to it by name after that one: the cached request
    // (sent before, on the same ordered connection) never reached it.
    let marker = TestRequest {
        session_id: "c;marker",
        origin_host: CLIENT.0,
        origin_realm: CLIENT.1,
        dest_realm: "redirect.local",
        dest_host: Some(REDIR.0),
        test_avp: 11,
    };
    let id = client.next_id();
    client.send(&marker.encode(id, id)).unwrap();
    let got = redir
        .read_until(WAIT, REDIR, is_test_request)
        .expect("the request named for the agent");
    assert_eq!(got.session_id().as_deref(), Some("c;marker"));
    redir
        .send(&answer_to(&got, 2001, REDIR.0, REDIR.1, &[]))
        .unwrap();
    let a = client
        .read_until(WAIT, CLIENT, |m| !m.is_request() && m.hbh == id)
        .unwrap();
    assert_eq!(a.result_code(), Some(2001), "{a:?}");
    for (event, n) in [("redirect_cached", 1.0), ("redirect_cache_used", 1.0)] {
        let line = format!("dmbridge_events_total{{event=\"{event}\"}}");
        assert_eq!(metric(mport, &line), n, "{event}");
    }
}
