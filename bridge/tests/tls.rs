//! TLS at connect (RFC 6733 §13) against real peers, with certificates made by the test.
//!
//! One node with a TLS listener and a plain one. On the TLS port, in turn:
//! - a client whose certificate is signed by another CA, one whose certificate has expired,
//!   one whose certificate names another host than the Origin-Host its CER claims, and a
//!   plain-TCP client sending a CER: each is refused, counted, and logged with a line that
//!   says why;
//! - then freeDiameter 1.2.1 (GnuTLS) connects with TLS at connect and its Test-Request is
//!   answered, and an Erlang/OTP diameter client (diameter_tcp with ssl options) gets its
//!   requests answered: the listener kept serving.
//!
//! The node also dials freeDiameter's TLS port (`SecPort`) itself and its requests are
//! answered there.
//!
//! A peer configured `tls_inband = true` that dials the TLS-at-connect listener instead is
//! served there: the connection is TLS already, so its CER's Inband-Security-Id is ignored,
//! the CEA does not ask for TLS again and no second handshake follows (RFC 6733 §13,
//! §6.10; freeDiameter's `p_ce.c` likewise adds no Inband-Security-Id "if we're already
//! using TLS").
//!
//! Needs freeDiameterd + test_app.fdx + bind_lo.so and escript (scripts/setup.sh).

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use common::tls::*;
use common::*;
use dmnode::trust::Refusal;
use harness::certs::{Ca, Validity};
use harness::peers::{FdOptions, FdTls, FdTlsConnect, FreeDiameter};
use harness::{free_port, TestDir};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
fn tls_at_connect_refusals_and_interop() {
    let lines = shared_logs();
    let dir = TestDir::new("tls-at-connect");
    let d = dir.path();
    let ca = Ca::new(d, "good");
    let rogue = Ca::new(d, "rogue");
    let bridge_cert = ca.issue(d, "bridge", "bridge.test.local", Validity::Current);
    let fd_client_cert = ca.issue(d, "fdclient", "client.test.local", Validity::Current);
    let fd_server_cert = ca.issue(d, "fdserver", "server.test.local", Validity::Current);
    let erl_cert = ca.issue(d, "erl", "erlclient.test.local", Validity::Current);
    let rogue_cert = rogue.issue(d, "rogue", "client.test.local", Validity::Current);
    let expired_cert = ca.issue(d, "expired", "client.test.local", Validity::Expired);
    let other_cert = ca.issue(d, "other", "other.test.local", Validity::Current);

    // freeDiameter server with a TLS port, for the node to dial.
    let fd_sec_port = free_port();
    let _fd_server = FreeDiameter::start(
        d,
        FdOptions {
            port: free_port(),
            tls: Some(FdTls {
                cert_file: fd_server_cert.cert_file.clone(),
                key_file: fd_server_cert.key_file.clone(),
                ca_file: ca.cert_file.clone(),
                sec_port: fd_sec_port,
                connect: FdTlsConnect::AtConnect,
            }),
            ..FdOptions::default()
        },
    );

    let tls_port = free_port();
    let toml = tls_node_toml(
        &ca.cert_file,
        &bridge_cert,
        0,
        Some(tls_port),
        &format!(
            r#"
[[peers]]
host = "client.test.local"
mode = "accept"
transport = "tls"
[[peers]]
host = "erlclient.test.local"
mode = "accept"
transport = "tls"
[[peers]]
host = "server.test.local"
address = "127.0.0.1"
port = {fd_sec_port}
transport = "tls""#
        ),
    );
    let (rt, node) = start_node(&toml);
    let refusals = node.refusals.clone();
    let tls_addr = format!("127.0.0.1:{tls_port}");

    rt.block_on(async {
        // The node dials freeDiameter's TLS port; test_app answers there.
        first_answer(&node.handle, "server.test.local").await;
        echo_round(&node.handle, "server.test.local", 3).await;

        // Wrong CA.
        let t = client_tls(&ca.cert_file, &rogue_cert);
        let tcp = TcpStream::connect(&tls_addr).await.unwrap();
        if let Ok((mut s, _)) = t.connect(tcp, "bridge.test.local", None, true).await {
            let _ = s.write_all(&cer("client.test.local")).await;
            assert!(
                read_message(&mut s).await.is_none(),
                "no CEA for a rogue CA"
            );
        }
        lines.wait("not signed by a trusted CA").await;
        assert_eq!(refusals.get(Refusal::TlsHandshake), 1);

        // Expired.
        let t = client_tls(&ca.cert_file, &expired_cert);
        let tcp = TcpStream::connect(&tls_addr).await.unwrap();
        if let Ok((mut s, _)) = t.connect(tcp, "bridge.test.local", None, true).await {
            let _ = s.write_all(&cer("client.test.local")).await;
            assert!(read_message(&mut s).await.is_none(), "no CEA when expired");
        }
        lines.wait("peer certificate has expired").await;
        assert_eq!(refusals.get(Refusal::TlsHandshake), 2);

        // A good chain, but it names another host than the CER's Origin-Host: 3010.
        let t = client_tls(&ca.cert_file, &other_cert);
        let tcp = TcpStream::connect(&tls_addr).await.unwrap();
        let (mut s, _) = t
            .connect(tcp, "bridge.test.local", None, true)
            .await
            .expect("the chain itself is good");
        s.write_all(&cer("client.test.local")).await.unwrap();
        let cea = read_message(&mut s).await.expect("an error CEA");
        assert_eq!(cea.find_u32(268, 0), Some(3010), "DIAMETER_UNKNOWN_PEER");
        lines
            .wait("certificate (SAN=other.test.local) does not name Origin-Host client.test.local")
            .await;
        assert_eq!(refusals.get(Refusal::CertNameMismatch), 1);

        // Plain TCP to the TLS port.
        let mut tcp = TcpStream::connect(&tls_addr).await.unwrap();
        tcp.write_all(&cer("client.test.local")).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the node closes");
        assert!(
            !matches!(n, Ok(n) if n > 0 && buf[0] == 1),
            "no Diameter answer on the TLS port"
        );
        lines.wait("not TLS (plain Diameter on a TLS port?)").await;
        assert_eq!(refusals.get(Refusal::TlsHandshake), 3);
    });

    // The listener still serves: freeDiameter (GnuTLS) with TLS at connect.
    let _fd = fd_tls_client_answered(
        d,
        &fd_client_cert,
        &ca.cert_file,
        tls_port,
        FdTlsConnect::AtConnect,
        &lines,
    );

    // And Erlang/OTP diameter over TLS (diameter_tcp + ssl).
    erl_tls_client_answered(d, tls_port, &erl_cert, &ca.cert_file, false, &lines);

    let mut out = std::io::stderr();
    let _ = writeln!(out, "refusals: {:?}", refusals.snapshot());
    rt.block_on(node.stop());
}

/// Issue 12 item 3: a `tls_inband = true` peer on the TLS-at-connect listener. RFC 6733 §13:
/// TLS at connect protects the CER/CEA too, and §6.10 deprecates Inband-Security-Id; a
/// connection that is TLS from its first byte has its security already. So a CER offering
/// Inband-Security-Id TLS there is answered 2001 without Inband-Security-Id (nothing more to
/// negotiate; freeDiameter's `p_ce.c` echoes TLS there and then fails its own second
/// handshake, which is what we must not do) and Diameter flows at once over the same TLS
/// stream: a request is answered, no second handshake. freeDiameter (GnuTLS, TLS at
/// connect) is served the same way.
#[test]
fn inband_peer_on_the_tls_at_connect_listener() {
    let lines = shared_logs();
    let dir = TestDir::new("tls-inband-on-tls-port");
    let d = dir.path();
    let ca = Ca::new(d, "good");
    let bridge_cert = ca.issue(d, "bridge", "bridge.test.local", Validity::Current);
    let legacy_cert = ca.issue(d, "legacy", "legacy.test.local", Validity::Current);
    let fd_cert = ca.issue(d, "fdclient", "client.test.local", Validity::Current);
    let tls_port = free_port();
    let toml = tls_node_toml(
        &ca.cert_file,
        &bridge_cert,
        0,
        Some(tls_port),
        r#"
[[peers]]
host = "legacy.test.local"
mode = "accept"
tls_inband = true
[[peers]]
host = "client.test.local"
mode = "accept"
tls_inband = true"#,
    );
    let (rt, node) = start_node(&toml);
    let refusals = node.refusals.clone();
    rt.block_on(async {
        let t = client_tls(&ca.cert_file, &legacy_cert);
        let tcp = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
        let (mut s, _) = t
            .connect(tcp, "bridge.test.local", None, true)
            .await
            .expect("TLS at connect");
        // An RFC 3588 peer asks for in-band TLS, on a connection that has it already.
        s.write_all(&cer_offering("legacy.test.local", &[1]))
            .await
            .unwrap();
        let cea = read_message(&mut s).await.expect("a CEA");
        assert_eq!(cea.find_u32(268, 0), Some(2001), "{cea:?}");
        assert_eq!(
            cea.find_u32(299, 0),
            None,
            "no Inband-Security-Id on a TLS connection: nothing more to agree on"
        );
        // Diameter at once on the same TLS stream: had the node waited for a second
        // handshake, this request would be taken for a ClientHello and the connection lost.
        s.write_all(&raw_test_request(7, "legacy.test.local"))
            .await
            .unwrap();
        let answer = read_message(&mut s)
            .await
            .expect("an answer over the TLS stream");
        assert_eq!(answer.header.code, TA_CMD);
        assert_eq!(answer.find_u32(268, 0), Some(2001), "{answer:?}");
        lines
            .wait("peer open (capabilities exchanged) peer=\"legacy.test.local\"")
            .await;
        assert!(
            !lines.text().contains(
                "in-band TLS agreed in CER/CEA: TLS handshake peer=\"legacy.test.local\""
            ),
            "no in-band handshake on a TLS connection"
        );
    });
    // freeDiameter, TLS at connect, although we would take it in-band on the plain port.
    let _fd = fd_tls_client_answered(
        d,
        &fd_cert,
        &ca.cert_file,
        tls_port,
        FdTlsConnect::AtConnect,
        &lines,
    );
    assert_eq!(refusals.get(Refusal::NoCommonSecurity), 0);
    assert_eq!(refusals.get(Refusal::TlsHandshake), 0);
    rt.block_on(node.stop());
}

/// A test_app request from `host` to the node, with its own Origin-* (as a peer sends it).
fn raw_test_request(n: i32, host: &str) -> Vec<u8> {
    let mut w = dmproto::MessageWriter::new(dmproto::Header::request(TA_CMD, TA_APP, 77, 77));
    w.str(263, M, 0, &format!("{host};1;{n}"))
        .u32(258, M, 0, TA_APP)
        .str(264, M, 0, host)
        .str(296, M, 0, "test.local")
        .str(283, M, 0, "test.local")
        .str(293, M, 0, "bridge.test.local")
        .i32(TEST_AVP, 0, TA_VENDOR, n);
    w.finish().unwrap().to_vec()
}

/// Issue 12 item 1, "certificate reload on `reload`", against the real binary: `dmbridge run`
/// with a TLS listener; its certificate and key files are replaced by another certificate
/// (same CA, another key and serial) and `dmbridge ctl reload` is run. A new TLS connection
/// then receives the new certificate and is served, the connection opened before the reload
/// keeps working, and a reload with a broken key file is refused with a clear line while
/// the certificate in use stays the second one.
#[test]
fn certificate_reload_end_to_end() {
    let dir = TestDir::new("tls-reload");
    let d = dir.path();
    let ca = Ca::new(d, "good");
    let first = ca.issue(d, "bridge1", "bridge.test.local", Validity::Current);
    let second = ca.issue(d, "bridge2", "bridge.test.local", Validity::Current);
    let clients: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|c| ca.issue(d, c, &format!("{c}.test.local"), Validity::Current))
        .collect();
    // The files the node reads, replaced in place as an operator's renewal would.
    let cert_file = d.join("node-cert.pem");
    let key_file = d.join("node-key.pem");
    let install = |c: &harness::certs::NodeCert| {
        std::fs::copy(&c.cert_file, &cert_file).unwrap();
        std::fs::copy(&c.key_file, &key_file).unwrap();
    };
    install(&first);
    let tls_port = free_port();
    let opts = harness::bridge::BridgeOptions {
        port: free_port(),
        allow_unknown_peers: false,
        peers: ["a", "b", "c"]
            .iter()
            .map(|c| harness::bridge::BridgePeer {
                host: format!("{c}.test.local"),
                port: None,
            })
            .collect(),
        extra_toml: format!(
            "\n[tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\nlisten = [\"127.0.0.1:{tls_port}\"]\n",
            ca.cert_file.display().to_string(),
            cert_file.display().to_string(),
            key_file.display().to_string()
        ),
        ..Default::default()
    };
    let bin = harness::dmbridge::bin_or(env!("CARGO_BIN_EXE_dmbridge"));
    let (mut bridge, config) = harness::dmbridge::run_echo(&bin, d, &opts);
    let ctl_reload = || {
        let out = std::process::Command::new(&bin)
            .args(["ctl", "--timeout", "10", "--config"])
            .arg(&config)
            .arg("reload")
            .output()
            .expect("run dmbridge ctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let sha = |c: &harness::certs::NodeCert| {
        let der = CertificateDer::from_pem_slice(c.pem.as_bytes()).unwrap();
        dmrun::tls::describe(&der).sha256
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Before: the first certificate; peer a opens and is served.
        let (mut a, seen) = open_tls_peer(tls_port, &ca.cert_file, &clients[0], "a").await;
        assert_eq!(seen, sha(&first), "the first certificate before the reload");
        ask(&mut a, 1, "a.test.local").await;

        install(&second);
        let (ok, text) = ctl_reload();
        assert!(ok, "reload: {text}\n{}", bridge.tail(20));

        // A new connection gets the new certificate and is served.
        let (mut b, seen) = open_tls_peer(tls_port, &ca.cert_file, &clients[1], "b").await;
        assert_eq!(seen, sha(&second), "the new certificate after the reload");
        assert!(text.contains("\"tls\":\"reloaded\""), "{text}");
        assert_ne!(sha(&first), sha(&second));
        ask(&mut b, 2, "b.test.local").await;
        // The connection opened before the reload keeps working, on its old session.
        ask(&mut a, 3, "a.test.local").await;

        // A broken key file: refused, said so, and the second certificate stays in use.
        std::fs::write(
            &key_file,
            b"-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let (ok, text) = ctl_reload();
        assert!(!ok, "a reload with a broken key is refused: {text}");
        assert!(
            text.contains("TLS material not reloaded, the running certificate stays"),
            "{text}"
        );
        let (mut c, seen) = open_tls_peer(tls_port, &ca.cert_file, &clients[2], "c").await;
        assert_eq!(seen, sha(&second), "still the second certificate");
        ask(&mut c, 4, "c.test.local").await;
        ask(&mut a, 5, "a.test.local").await;
    });
    bridge
        .wait_for_line(
            "reload refused, the running configuration stays: TLS material not reloaded",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| {
            panic!(
                "no log line for the refused reload: {e}\n{}",
                bridge.tail(30)
            )
        });
    bridge
        .wait_for_line("TLS material reloaded", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no log line for the reload: {e}\n{}", bridge.tail(30)));
}

/// Dials the node's TLS port as `name`.test.local with `cert`, exchanges CER/CEA (2001):
/// the stream and the fingerprint of the certificate the node presented.
async fn open_tls_peer(
    port: u16,
    ca: &Path,
    cert: &harness::certs::NodeCert,
    name: &str,
) -> (tokio_rustls::TlsStream<TcpStream>, [u8; 32]) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut s, server) = client_tls(ca, cert)
        .connect(tcp, "bridge.test.local", None, true)
        .await
        .expect("TLS handshake");
    s.write_all(&cer(&format!("{name}.test.local")))
        .await
        .unwrap();
    let cea = read_message(&mut s).await.expect("a CEA");
    assert_eq!(cea.find_u32(268, 0), Some(2001), "{cea:?}");
    (s, server.sha256)
}

/// One test_app request from `host` on `s`, answered 2001.
async fn ask(s: &mut tokio_rustls::TlsStream<TcpStream>, n: i32, host: &str) {
    s.write_all(&raw_test_request(n, host)).await.unwrap();
    let answer = read_message(s).await.expect("an answer");
    assert_eq!(answer.header.code, TA_CMD);
    assert_eq!(answer.find_u32(268, 0), Some(2001), "{answer:?}");
}
