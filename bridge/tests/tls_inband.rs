//! In-band TLS after CER/CEA (RFC 3588 §2.1; RFC 6733 §6.10, §13) against freeDiameter 1.2.1
//! configured with `TLS_old_method`, with certificates made by the test.
//!
//! - The node dials a freeDiameter server that admits peers only with in-band TLS
//!   (acl_wl `ALLOW_OLD_TLS`): plain TCP, CER/CEA with Inband-Security-Id TLS, the node's
//!   handshake as the client, then test_app answers the node's requests over TLS.
//! - On the node's plain port, for a peer configured `tls_inband = true`: a CER offering
//!   only NO_INBAND_SECURITY is answered 5017 DIAMETER_NO_COMMON_SECURITY (read with our
//!   decoder) and closed; a client that agrees on TLS but then shows a certificate naming
//!   another host, or one from another CA, is refused with a log line and counted.
//! - Then a freeDiameter client with `TLS_old_method` dials the same plain port: the node
//!   is the TLS server after its CEA, and the client's Test-Request is answered — the
//!   listener kept serving.
//!
//! Needs freeDiameterd + test_app.fdx + bind_lo.so (scripts/setup.sh).

mod common;

use std::io::Write as _;

use common::tls::*;
use common::*;
use dmnode::trust::Refusal;
use harness::certs::{Ca, Validity};
use harness::peers::{FdOptions, FdTls, FdTlsConnect, FreeDiameter};
use harness::{free_port, TestDir};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Inband-Security-Id values (RFC 6733 §6.10).
const NO_INBAND_SECURITY: u32 = 0;
const TLS: u32 = 1;

#[test]
fn inband_tls_with_freediameter_both_ways_and_refusals() {
    let lines = capture_logs(tracing::Level::INFO, true);
    let dir = TestDir::new("tls-inband");
    let d = dir.path();
    let ca = Ca::new(d, "good");
    let rogue = Ca::new(d, "rogue");
    let bridge_cert = ca.issue(d, "bridge", "bridge.test.local", Validity::Current);
    let fd_server_cert = ca.issue(d, "fdserver", "server.test.local", Validity::Current);
    let fd_client_cert = ca.issue(d, "fdclient", "client.test.local", Validity::Current);
    let other_cert = ca.issue(d, "other", "other.test.local", Validity::Current);
    let rogue_cert = rogue.issue(d, "rogue", "legacy.test.local", Validity::Current);

    // freeDiameter server: admits *.test.local only with in-band TLS.
    let fd_port = free_port();
    let _fd_server = FreeDiameter::start(
        d,
        FdOptions {
            port: fd_port,
            tls: Some(FdTls {
                cert_file: fd_server_cert.cert_file.clone(),
                key_file: fd_server_cert.key_file.clone(),
                ca_file: ca.cert_file.clone(),
                sec_port: free_port(),
                connect: FdTlsConnect::Inband,
            }),
            accept_inband_tls: true,
            ..FdOptions::default()
        },
    );

    let plain_port = free_port();
    let toml = format!(
        r#"
[node]
origin_host = "bridge.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:{plain_port}"]
[tls]
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
[[applications]]
id = {TA_APP}
vendor = {TA_VENDOR}
[[peers]]
host = "server.test.local"
address = "127.0.0.1"
port = {fd_port}
tls_inband = true
[[peers]]
host = "client.test.local"
mode = "accept"
tls_inband = true
[[peers]]
host = "legacy.test.local"
mode = "accept"
tls_inband = true
{FAST_TIMERS}"#,
        ca = ca.cert_file.display(),
        cert = bridge_cert.cert_file.display(),
        key = bridge_cert.key_file.display(),
    );
    let (rt, node) = start_node(&toml);
    let refusals = node.refusals.clone();
    let plain = format!("127.0.0.1:{plain_port}");

    rt.block_on(async {
        // We dial freeDiameter: in-band TLS as the client, then test_app answers over TLS.
        first_answer(&node.handle, "server.test.local").await;
        echo_round(&node.handle, "server.test.local", 3).await;
        lines.wait("in-band TLS agreed in CER/CEA").await;

        // A peer that must use in-band TLS offers only NO_INBAND_SECURITY: 5017, closed.
        let mut tcp = TcpStream::connect(&plain).await.unwrap();
        tcp.write_all(&cer_offering("legacy.test.local", &[NO_INBAND_SECURITY]))
            .await
            .unwrap();
        let cea = read_message(&mut tcp).await.expect("a CEA");
        assert_eq!(
            cea.find_u32(268, 0),
            Some(5017),
            "DIAMETER_NO_COMMON_SECURITY"
        );
        assert!(
            read_message(&mut tcp).await.is_none(),
            "closed after the 5017 CEA"
        );
        lines
            .wait("CER answered DIAMETER_NO_COMMON_SECURITY: no common security: in-band TLS is required for legacy.test.local")
            .await;
        // Offering nothing means NO_INBAND_SECURITY too (RFC 6733 §6.10).
        let mut tcp = TcpStream::connect(&plain).await.unwrap();
        tcp.write_all(&cer("legacy.test.local")).await.unwrap();
        let cea = read_message(&mut tcp).await.expect("a CEA");
        assert_eq!(cea.find_u32(268, 0), Some(5017));

        // Agrees on TLS, then shows a good chain that names another host: refused after the
        // handshake, with a log line.
        let (mut tls, cea) = inband_client(&plain, &client_tls(&ca.cert_file, &other_cert))
            .await
            .expect("the chain itself is good");
        assert_eq!(cea.find_u32(268, 0), Some(2001));
        assert_eq!(cea.find_u32(299, 0), Some(TLS), "the CEA agrees on TLS");
        assert!(
            read_message(&mut tls).await.is_none(),
            "closed: no Diameter over this TLS"
        );
        lines
            .wait("in-band TLS: certificate (SAN=other.test.local) does not name Origin-Host legacy.test.local")
            .await;
        assert_eq!(refusals.get(Refusal::CertNameMismatch), 1);

        // Another CA: the handshake itself fails, counted and logged like at connect.
        let before = refusals.get(Refusal::TlsHandshake);
        if let Some((mut tls, _)) =
            inband_client(&plain, &client_tls(&ca.cert_file, &rogue_cert)).await
        {
            let _ = tls.write_all(&cer("legacy.test.local")).await;
            assert!(read_message(&mut tls).await.is_none());
        }
        lines
            .wait("in-band TLS with legacy.test.local after CER/CEA: peer certificate is not signed by a trusted CA")
            .await;
        assert_eq!(refusals.get(Refusal::TlsHandshake), before + 1);
    });

    // The listener still serves: freeDiameter dials the plain port with TLS_old_method.
    let fd = fd_tls_client_answered(
        d,
        &fd_client_cert,
        &ca.cert_file,
        plain_port,
        FdTlsConnect::Inband,
        &lines,
    );
    assert!(
        lines.text().contains("role=Server"),
        "the node was the TLS server for the client's connection"
    );
    // freeDiameter's own view: the connection it opened went through the TLS handshake.
    let fd_log = fd.log();
    assert!(fd_log.contains("STATE_OPEN_HANDSHAKE"), "{fd_log}");

    let mut out = std::io::stderr();
    let _ = writeln!(out, "refusals: {:?}", refusals.snapshot());
    rt.block_on(node.stop());
}

/// A raw in-band client `legacy.test.local`: CER offering TLS on the plain port, the CEA,
/// then the TLS handshake as the client on the same connection. `None` if the handshake
/// failed on our side.
async fn inband_client(
    plain: &str,
    tls: &dmrun::tls::Tls,
) -> Option<(tokio_rustls::TlsStream<TcpStream>, dmproto::Message)> {
    let mut tcp = TcpStream::connect(plain).await.unwrap();
    tcp.write_all(&cer_offering("legacy.test.local", &[TLS]))
        .await
        .unwrap();
    let cea = read_message(&mut tcp).await.expect("a CEA");
    assert_eq!(cea.find_u32(268, 0), Some(2001), "{cea:?}");
    let (s, _) = tls
        .connect(tcp, "bridge.test.local", None, true)
        .await
        .ok()?;
    Some((s, cea))
}
