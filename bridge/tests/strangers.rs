//! What strangers can consume, and who may claim a configured peer (DESIGN §10), with the
//! attacks of the issue run against a node in this process, bounded in count and time:
//! - 256 silent connections from 32 source addresses (127.0.0.2..): each source holds at
//!   most `max_connections_per_source`, all together at most `max_pending_connections`; the
//!   rest are refused at once, and the silent ones closed after `cer_timeout`;
//! - a peer that sends a header and then trickles one byte every 200 ms: closed after
//!   `message_timeout`, not kept until the watchdog gives up;
//! - a header announcing a 1 MiB message before CER: refused at once (pre-CER limit);
//! - a client from another address claiming the configured peer's Origin-Host: 3010;
//!   meanwhile the legitimate peer (from its configured address, 127.0.0.1) connects and
//!   its requests are answered, and every refusal is counted and logged once per cause and
//!   source per interval.
//!
//! The footprint of the same attacks at full size (RSS and fds before, during and after)
//! is measured against the real binary by `scripts/bench-strangers.sh` (BENCHMARKS.md).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::time::{Duration, Instant};

use common::*;
use dmnode::trust::Refusal;
use dmproto::{Header, Message, MessageWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn node_toml() -> String {
    format!(
        r#"
[node]
origin_host = "bridge.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:0"]
[[applications]]
id = {TA_APP}
vendor = {TA_VENDOR}
[[peers]]
host = "client.test.local"
address = "127.0.0.1"
mode = "accept"
[timers]
cer_timeout = "3s"
tw = "30s"
dpa_timeout = "1s"
drain_timeout = "1s"
[limits]
message_timeout = "2s"
"#
    )
}

/// A TCP connection from 127.0.0.`last` (any 127/8 address is loopback).
async fn connect_from(last: u8, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
        0,
    ))?;
    s.connect(to).await
}

fn cer(host: &str) -> Vec<u8> {
    let mut w = MessageWriter::new(Header::request(257, 0, 1, 1));
    w.str(264, M, 0, host)
        .str(296, M, 0, "test.local")
        .avp(257, M, 0, &[0, 1, 127, 0, 0, 1])
        .u32(266, M, 0, 0)
        .str(269, 0, 0, "strangers-test")
        .u32(265, M, 0, TA_VENDOR)
        .group(260, M, 0, |w| {
            w.u32(266, M, 0, TA_VENDOR).u32(258, M, 0, TA_APP);
        });
    w.finish().unwrap().to_vec()
}

fn test_request(n: i32) -> Vec<u8> {
    let mut w = MessageWriter::new(Header {
        app_id: TA_APP,
        ..Header::request(TA_CMD, TA_APP, 100 + n as u32, 100 + n as u32)
    });
    w.str(263, M, 0, &format!("client.test.local;1;{n}"))
        .str(264, M, 0, "client.test.local")
        .str(296, M, 0, "test.local")
        .str(283, M, 0, "test.local")
        .str(293, M, 0, "bridge.test.local")
        .group(260, M, 0, |w| {
            w.u32(266, M, 0, TA_VENDOR).u32(258, M, 0, TA_APP);
        })
        .i32(TEST_AVP, 0x80, TA_VENDOR, n);
    w.finish().unwrap().to_vec()
}

/// The next answer, answering the node's DWRs meanwhile: a peer that comes back after a
/// lost connection is in the watchdog's REOPEN state and gets DWRs first (RFC 3539 §3.4.1).
async fn read_answer(s: &mut TcpStream) -> Option<Message> {
    loop {
        let m = read_message(s).await?;
        if m.header.flags.is_request() && m.header.code == 280 {
            let mut w = MessageWriter::new(m.header.answer());
            w.u32(268, M, 0, 2001)
                .str(264, M, 0, "client.test.local")
                .str(296, M, 0, "test.local");
            s.write_all(&w.finish().unwrap()).await.ok()?;
            continue;
        }
        return Some(m);
    }
}

/// Whether the node closed the connection within `limit` (EOF or reset).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// The legitimate peer: CER from its address, then `n` test requests, each answered 2001.
async fn legitimate_round(to: SocketAddr, n: i32) {
    let mut s = connect_from(1, to).await.expect("the peer connects");
    s.write_all(&cer("client.test.local")).await.unwrap();
    let cea = read_message(&mut s).await.expect("CEA");
    assert_eq!(cea.find_u32(268, 0), Some(2001), "CEA for the real peer");
    for i in 1..=n {
        s.write_all(&test_request(i)).await.unwrap();
        let a = read_answer(&mut s).await.expect("answer");
        assert_eq!(a.find_u32(268, 0), Some(2001), "answer {i}");
    }
}

/// The attacks; returns the connections still held (so the caller decides when they go).
async fn attack(to: SocketAddr, silent: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..silent {
        let last = 2 + (i % 32) as u8;
        if let Ok(s) = connect_from(last, to).await {
            held.push(s);
        }
    }
    held
}

#[test]
fn strangers_are_bounded_and_the_real_peer_is_served() {
    let lines = capture_logs(
        tracing::Level::DEBUG,
        std::env::var_os("STRANGERS_LOG").is_some(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = Running::start(&node_toml(), TaEcho::new()).await;
        let to = node.addrs[0];
        let r = node.refusals.clone();

        // 256 silent connections from 32 addresses.
        let mut held = attack(to, 256).await;
        // The node closes the refused ones at once; count what stays open a moment later.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut open = 0;
        for s in &mut held {
            if !closed_within(s, Duration::from_millis(5)).await {
                open += 1;
            }
        }
        assert!(
            open <= 64,
            "{open} strangers held (max_pending_connections 64)"
        );
        assert!(
            r.get(Refusal::PendingCap) + r.get(Refusal::PerSourceCap) >= 192,
            "{:?}",
            r.snapshot()
        );

        // The legitimate peer connects and is served meanwhile.
        legitimate_round(to, 3).await;

        // The silent ones are closed after the CER timeout, which frees the
        // pending slots for the next strangers.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for s in &mut held {
            assert!(
                closed_within(s, Duration::from_secs(1)).await,
                "CER timeout"
            );
        }
        assert!(r.get(Refusal::CerTimeout) >= 1);
        drop(held);

        // Trickling: a header, then a byte every 200 ms.
        let mut t = connect_from(40, to).await.unwrap();
        let big = cer("client.test.local");
        t.write_all(&big[..24]).await.unwrap();
        let started = Instant::now();
        let trickle = async {
            for b in &big[24..] {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if t.write_all(std::slice::from_ref(b)).await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(6), trickle).await;
        assert!(closed_within(&mut t, Duration::from_secs(1)).await);
        assert!(started.elapsed() < Duration::from_secs(6), "cut off early");
        assert_eq!(r.get(Refusal::MessageTimeout), 1, "{:?}", r.snapshot());

        // A 1 MiB message announced before CER.
        let mut b = connect_from(41, to).await.unwrap();
        let mut h = Header::request(257, 0, 9, 9);
        h.length = 1 << 20;
        let mut head = bytes::BytesMut::new();
        h.encode(&mut head);
        b.write_all(&head).await.unwrap();
        let answer = read_message(&mut b).await.expect("5015 answer");
        assert_eq!(answer.find_u32(268, 0), Some(5015));
        assert!(closed_within(&mut b, Duration::from_secs(2)).await);
        assert_eq!(r.get(Refusal::MessageTooLarge), 1);

        // An impostor claiming the configured peer from another address: 3010.
        let mut imp = connect_from(50, to).await.unwrap();
        imp.write_all(&cer("client.test.local")).await.unwrap();
        let cea = read_message(&mut imp).await.expect("error CEA");
        assert_eq!(cea.find_u32(268, 0), Some(3010));
        assert_eq!(r.get(Refusal::WrongAddress), 1);

        // Still served after everything.
        legitimate_round(to, 2).await;
        node.stop().await;
    });

    // Logged once per cause and source per interval: at most one pending-cap line per
    // source (32 of them), not one per refused connection.
    let text = lines.text();
    let cap_lines = text
        .lines()
        .filter(|l| l.contains("pending_cap") || l.contains("per_source_cap"))
        .count();
    assert!(
        (1..=64).contains(&cap_lines),
        "{cap_lines} cap lines:\n{text}"
    );
    assert!(
        text.contains("client.test.local is not expected from 127.0.0.50"),
        "{text}"
    );
    assert!(text.contains("message incomplete"), "{text}");
}
