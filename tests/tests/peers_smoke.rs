//! The peer launchers and the raw client work against the real programs: every launcher
//! starts its peer bound to loopback only, the peer answers, and it is gone after drop.
//! These are the building blocks of every later end-to-end test (issue 3).

use std::time::Duration;

use harness::peers::{Benchmark, ErlangPeer, FdOptions, FreeDiameter, KamailioIms};
use harness::wait::listening_addrs;
use harness::wire::{self, test_app, RawClient, TestRequest};
use harness::{free_port, TestDir};

const ORIGIN: (&str, &str) = ("raw.test.local", "test.local");

/// CER/CEA, DWR/DWA and one Test-Request through the harness's raw client; the answer must
/// echo the Test-AVP. Returns the CEA's Origin-Host.
fn talk_test_app(port: u16, dest_host: Option<&str>) -> String {
    let mut c = RawClient::connect(port, Duration::from_secs(3)).unwrap();
    let cea = c
        .handshake(ORIGIN.0, ORIGIN.1, Duration::from_secs(10))
        .unwrap();
    assert_eq!(cea.result_code(), Some(2001), "CEA refused us");
    let id = c.next_id();
    let dwa = c
        .request(
            &wire::dwr(ORIGIN.0, ORIGIN.1, id, id),
            id,
            ORIGIN,
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        (dwa.cmd_code, dwa.result_code()),
        (wire::cmd::DWR, Some(2001))
    );
    let id = c.next_id();
    let sid = format!("{};{id};smoke", ORIGIN.0);
    let req = TestRequest {
        session_id: &sid,
        origin_host: ORIGIN.0,
        origin_realm: ORIGIN.1,
        dest_realm: "test.local",
        dest_host,
        test_avp: 0x1234_5678,
    };
    let ans = c
        .request(&req.encode(id, id), id, ORIGIN, Duration::from_secs(5))
        .unwrap();
    assert_eq!(ans.result_code(), Some(2001));
    assert_eq!(ans.session_id().as_deref(), Some(sid.as_str()));
    let echoed = ans
        .find(test_app::TEST_AVP, Some(test_app::VENDOR_ID))
        .and_then(|a| a.as_i32());
    assert_eq!(echoed, Some(0x1234_5678));
    cea.origin_host().unwrap()
}

fn assert_gone(port: u16) {
    assert!(
        listening_addrs(port).is_empty(),
        "something still listens on {port} after drop"
    );
}

#[test]
fn freediameter_server_answers_the_raw_client_and_binds_loopback_only() {
    let dir = TestDir::new("fd-raw");
    let port = free_port();
    {
        let _fd = FreeDiameter::server(dir.path(), port);
        assert_eq!(
            listening_addrs(port),
            vec!["127.0.0.1".to_string()],
            "bind_lo.so not effective"
        );
        assert_eq!(
            talk_test_app(port, Some("server.test.local")),
            "server.test.local"
        );
    }
    assert_gone(port);
}

#[test]
fn freediameter_benchmark_reports_throughput() {
    let dir = TestDir::new("fd-bench");
    let (sp, cp) = (free_port(), free_port());
    let _server = FreeDiameter::server(dir.path(), sp);
    let mut client = FreeDiameter::start(
        dir.path(),
        FdOptions::client(
            cp,
            sp,
            Some(Benchmark {
                seconds: 1,
                concurrency: 5,
            }),
        ),
    );
    client
        .wait_peer_open("server.test.local", Duration::from_secs(10))
        .unwrap();
    client.start_benchmark();
    let tput = client.wait_throughput(Duration::from_secs(10)).unwrap();
    assert!(tput > 0, "no answers in the benchmark:\n{}", client.log());
}

#[test]
fn erlang_server_answers_the_raw_client() {
    let dir = TestDir::new("erl-raw");
    let port = free_port();
    {
        let _erl = ErlangPeer::server(dir.path(), port, "ta,acct");
        assert_eq!(listening_addrs(port), vec!["127.0.0.1".to_string()]);
        assert_eq!(talk_test_app(port, None), "erlserver.test.local");
    }
    assert_gone(port);
}

#[test]
fn kamailio_ims_answers_the_raw_client_from_its_script() {
    let dir = TestDir::new("kamailio-raw");
    let (port, sip) = (free_port(), free_port());
    {
        // cdp accepts unknown peers (AcceptUnknownPeers=1); peer_port is only cdp's placeholder.
        let _k = KamailioIms::start(dir.path(), port, free_port(), 1, sip);
        assert_eq!(listening_addrs(port), vec!["127.0.0.1".to_string()]);
        assert_eq!(
            talk_test_app(port, Some("server.test.local")),
            "server.test.local"
        );
    }
    assert_gone(port);
}
