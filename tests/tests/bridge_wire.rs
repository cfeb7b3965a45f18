//! The bridge's own messages on the wire, judged by tshark and by real peers: a raw client
//! and a freeDiameter test_app client talk to `dmbridge run` while dumpcap records; every
//! message the bridge sent must decode cleanly in tshark, agree with dmproto, and every request
//! must get exactly one answer with its hop-by-hop and end-to-end ids.

use std::collections::BTreeMap;
use std::time::Duration;

use harness::bridge::{Bridge, BridgeOptions};
use harness::capture::{diameter_messages, Capture};
use harness::oracle::compare_decode_with_tshark;
use harness::peers::{FdOptions, FreeDiameter};
use harness::tshark::{decode_offline, is_unknown_to_dictionary, EXPERT_WARN};
use harness::wire::{self, code, RawClient, RawMessage, TestRequest};
use harness::{free_port, TestDir};

const ME: (&str, &str) = ("raw.test.local", "test.local");

#[test]
fn bridge_answers_every_request_once_and_its_bytes_pass_the_tshark_oracle() {
    let dir = TestDir::new("bridge-wire");
    let port = free_port();
    let capture = Capture::start(dir.path(), port);
    let _bridge = Bridge::start(
        dir.path(),
        &BridgeOptions {
            port,
            ..BridgeOptions::default()
        },
    );

    // A raw client: CER, DWR, two test_app requests, DPR.
    let mut c = RawClient::connect(port, Duration::from_secs(3)).unwrap();
    let cea = c.handshake(ME.0, ME.1, Duration::from_secs(5)).unwrap();
    assert_eq!(cea.result_code(), Some(2001), "CEA");
    assert_eq!(cea.origin_host().as_deref(), Some("bridge.test.local"));
    let id = c.next_id();
    let dwa = c
        .request(
            &wire::dwr(ME.0, ME.1, id, id),
            id,
            ME,
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        (dwa.cmd_code, dwa.result_code()),
        (wire::cmd::DWR, Some(2001))
    );
    for n in 0..2 {
        let id = c.next_id();
        let sid = format!("{};{id};{n}", ME.0);
        let req = TestRequest {
            session_id: &sid,
            origin_host: ME.0,
            origin_realm: ME.1,
            dest_realm: "test.local",
            dest_host: Some("bridge.test.local"),
            test_avp: n,
        };
        let ans = c
            .request(&req.encode(id, id), id, ME, Duration::from_secs(5))
            .unwrap();
        assert_eq!(ans.e2e, id);
        assert!(ans.result_code().is_some(), "answer without Result-Code");
        let first = ans.avps().unwrap().into_iter().next().map(|a| a.code);
        assert_eq!(first, Some(code::SESSION_ID), "Session-Id must come first");
        assert_eq!(ans.session_id().as_deref(), Some(sid.as_str()));
    }
    let id = c.next_id();
    let dpa = c
        .request(
            &wire::dpr(ME.0, ME.1, id, id),
            id,
            ME,
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        (dpa.cmd_code, dpa.result_code()),
        (wire::cmd::DPR, Some(2001))
    );
    drop(c);

    // A real peer: freeDiameter connects, exchanges capabilities and sends test_app requests.
    let mut fd = FreeDiameter::start(
        dir.path(),
        FdOptions {
            connect_to: Some(("bridge.test.local".into(), port)),
            client_dest_host: Some("bridge.test.local".into()),
            ..FdOptions::client(free_port(), port, None)
        },
    );
    fd.wait_peer_open("bridge.test.local", Duration::from_secs(10))
        .unwrap();
    for i in 1..=2 {
        fd.send_test_request();
        fd.wait_answers(i, Duration::from_secs(5)).unwrap();
    }
    fd.stop(Duration::from_secs(5));
    let pcap = capture.stop();

    let msgs = diameter_messages(&pcap);
    let bytes: Vec<Vec<u8>> = msgs.iter().map(|m| m.bytes.clone()).collect();
    let decoded = decode_offline(dir.path(), "bridge", &bytes);
    let mut requests = BTreeMap::new();
    let mut answers: BTreeMap<(u32, u32, u32), usize> = BTreeMap::new();
    for (m, ts) in msgs.iter().zip(&decoded) {
        let raw = RawMessage::parse(&m.bytes).unwrap();
        let key = (m.stream, raw.hbh, raw.e2e);
        if m.from_client {
            assert!(raw.is_request(), "peer sent an answer first? {raw:?}");
            requests.insert(key, raw.cmd_code);
            continue;
        }
        if raw.is_request() {
            continue; // the bridge's own DWR/DPR
        }
        *answers.entry(key).or_default() += 1;
        // Everything the bridge sent is clean for tshark (test_app's private ids aside) and
        // decodes the same in dmproto.
        let problems = ts.problems(EXPERT_WARN, is_unknown_to_dictionary);
        assert!(
            problems.is_empty(),
            "bridge frame {}: {problems:?}",
            ts.frame
        );
        compare_decode_with_tshark(&m.bytes, ts).assert_ok(&format!("bridge frame {}", ts.frame));
        assert_eq!(ts.value("Origin-Host"), Some("bridge.test.local"));
    }
    assert!(
        requests.len() >= 9,
        "too few requests captured: {requests:?}"
    );
    for (key, cmd) in &requests {
        assert_eq!(
            answers.get(key),
            Some(&1),
            "request {cmd} {key:?}: answers {:?}",
            answers.get(key)
        );
    }
    assert_eq!(answers.len(), requests.len(), "answers without a request");
}
