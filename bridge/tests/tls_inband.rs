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
//! And, with a scripted peer: our plain CER to a peer NOT set to in-band TLS answered by a CEA
//! that says TLS only is refused, counted and closed (not opened in clear text while the peer
//! starts a handshake).
//!
//! With Erlang/OTP diameter (escripts in tests/peers/): OTP dials the plain port and upgrades
//! as the TLS client; the node dials an OTP server and upgrades as the client. The latter
//! needs `{active, once}` in OTP's ssl_options because of a race in OTP 25's diameter_tcp
//! (erlang_inband_tls_server_stock_otp, ignored, says where).
//!
//! Needs freeDiameterd + test_app.fdx + bind_lo.so (scripts/setup.sh), escript.

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
    let lines = shared_logs();
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
    let toml = tls_node_toml(
        &ca.cert_file,
        &bridge_cert,
        plain_port,
        None,
        &format!(
            r#"
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
tls_inband = true"#
        ),
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

/// Issue 12: we dial a peer not set to in-band TLS; our CER offers no Inband-Security-Id
/// (NO_INBAND_SECURITY); the peer's CEA says 2001 with Inband-Security-Id TLS only, i.e. it
/// will start a TLS handshake now. RFC 6733 §6.10, §7.1.5: no common security. The node must
/// close at once (not open the peer and wait for its watchdog), count the refusal and log why.
#[test]
fn plain_peer_whose_cea_says_tls_only_is_refused() {
    let lines = shared_logs();
    // The scripted peer's port, taken before the node is configured to dial it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (rt, node) = start_node(&ta_node_toml(
        "bridge.test.local",
        0,
        PeerAt::Connect("tlsonly.test.local", port),
    ));
    let listener = rt
        .block_on(async { tokio::net::TcpListener::from_std(listener) })
        .unwrap();
    let refusals = node.refusals.clone();
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let (mut tcp, _) = tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept())
            .await
            .expect("the node dials")
            .unwrap();
        let cer = read_message(&mut tcp).await.expect("a CER");
        assert_eq!(cer.header.code, 257);
        let offered: Vec<u32> = cer
            .avp_refs()
            .map_while(Result::ok)
            .filter(|a| a.code == 299)
            .filter_map(|a| a.data.try_into().ok().map(u32::from_be_bytes))
            .collect();
        assert!(
            !offered.contains(&TLS),
            "the CER to a plain peer does not offer TLS: {offered:?}"
        );
        tcp.write_all(&cea_offering(&cer, "tlsonly.test.local", 2001, &[TLS]))
            .await
            .unwrap();
        // Closed at once: no DWR, no request in clear text (the watchdog would only speak
        // after Tw, 6 s in this config, so a timeout here means the peer was opened).
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the node closes the connection instead of opening the peer");
        assert!(
            matches!(got, Ok(0) | Err(_)),
            "nothing but a close after the CEA: {got:?}"
        );
        lines
            .wait("CEA refused (RFC 6733 §6.10, §7.1.5): no common security: tlsonly.test.local offers only Inband-Security-Id [1]")
            .await;
        // The refusal names the address we dialled (it was "-" for connections we open).
        let line = lines
            .wait_line("refused: no common security with tlsonly.test.local")
            .await;
        assert!(
            line.contains("source=\"127.0.0.1\""),
            "the refusal names the dialled address: {line}"
        );
        assert_eq!(refusals.get(Refusal::NoCommonSecurity), 1);
    });
    let open = rt.block_on(node.handle.send_request(
        TA_APP,
        TA_CMD,
        test_request(1, "tlsonly.test.local"),
    ));
    assert!(open.is_err(), "the peer is not open: {open:?}");
    rt.block_on(node.stop());
}

/// A raw in-band client `legacy.test.local`: CER offering TLS on the plain port, the CEA,
/// then the TLS handshake as the client on the same connection. `None` if the handshake
/// failed on our side.
async fn inband_client(
    plain: &str,
    tls: &dmrun::tls::Tls,
) -> Option<(tokio_rustls::TlsStream<TcpStream>, dmproto::Message)> {
    // A real peer redials when its CER is rejected (RFC 6733 §5.6.4 R-Reject, closed without
    // CEA), and so does this client (70c41d9: a CI run once found the previous case's
    // connection for the same Origin-Host still in the peer's TLS-Handshake state). The node
    // no longer makes it necessary: the peer is Closed as soon as the core refuses the
    // previous handshake, not when the socket is reported gone (node unit test
    // a_redial_right_after_a_refused_inband_handshake_is_accepted). So the first dial must
    // be answered; the loop stays to tell "rejected, then answered" from "never answered".
    let mut attempt = 0;
    let (tcp, cea) = loop {
        attempt += 1;
        let mut tcp = TcpStream::connect(plain).await.unwrap();
        tcp.write_all(&cer_offering("legacy.test.local", &[TLS]))
            .await
            .unwrap();
        match read_message(&mut tcp).await {
            Some(cea) => break (tcp, cea),
            None if attempt < 20 => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            None => panic!("no CEA in {attempt} attempts"),
        }
    };
    assert_eq!(attempt, 1, "the CEA came only on dial {attempt}");
    assert_eq!(cea.find_u32(268, 0), Some(2001), "{cea:?}");
    let (s, _) = tls
        .connect(tcp, "bridge.test.local", None, true)
        .await
        .ok()?;
    Some((s, cea))
}

/// Issue 12: Erlang/OTP diameter over in-band TLS (RFC 3588 style): diameter_tcp with
/// `{ssl_options, Opts}` and Inband-Security-Id TLS in its capabilities dials the node's
/// plain port; CER/CEA agree on TLS, OTP upgrades the connection as the client and the node
/// is the TLS server; its Test-Requests are answered over the TLS stream.
#[test]
fn erlang_inband_tls_client() {
    let lines = shared_logs();
    let dir = TestDir::new("tls-inband-erl");
    let d = dir.path();
    let ca = Ca::new(d, "good");
    let bridge_cert = ca.issue(d, "bridge", "bridge.test.local", Validity::Current);
    let erl_cert = ca.issue(d, "erl", "erlclient.test.local", Validity::Current);
    let plain_port = free_port();
    let toml = tls_node_toml(
        &ca.cert_file,
        &bridge_cert,
        plain_port,
        None,
        "[[peers]]\nhost = \"erlclient.test.local\"\nmode = \"accept\"\ntls_inband = true",
    );
    let (rt, node) = start_node(&toml);
    erl_tls_client_answered(d, plain_port, &erl_cert, &ca.cert_file, true, &lines);
    assert!(
        lines.text().lines().any(|l| l.contains(
            "in-band TLS agreed in CER/CEA: TLS handshake peer=\"erlclient.test.local\""
        ) && l.contains("role=Server")),
        "the answers went over the in-band TLS stream, the node as the TLS server"
    );
    assert_eq!(node.refusals.get(Refusal::TlsHandshake), 0);
    rt.block_on(node.stop());
}

/// The other way: the node dials an Erlang/OTP diameter server that listens with
/// `{ssl_options, Opts}` and advertises Inband-Security-Id TLS (tests/peers/tls_server.escript):
/// CER/CEA agree on TLS, the node is the TLS client after the CEA, and the server's test_app
/// answers the node's requests over the TLS stream.
///
/// The server runs with `{active, once}` in its `ssl_options`, the work-around for the OTP
/// 25 race documented at [`erlang_inband_tls_server_stock_otp`].
#[test]
fn erlang_inband_tls_server() {
    erlang_inband_tls_server_answers(&["--active-once", "1"]);
}

/// The same with OTP's diameter_tcp as configured by the book: OTP 25.2.3 (diameter 2.2.7,
/// ssl 10.8.7) then answers nothing over TLS, neither our DWR nor our requests, with TLS 1.3
/// or 1.2. Not ours to fix: it is a race in OTP's server-side upgrade, and we follow RFC 6733
/// §13 / RFC 3588 §2.1 (the handshake "begins when both ends successfully reach the open
/// state after the CER/CEA exchange"; the client is open once it has read the CEA, as
/// freeDiameter's client also starts its handshake at once).
///
/// In diameter-2.2.7/src/transport/diameter_tcp.erl:
/// - after the CER, `recv/2` re-arms the plain socket (line 746,
///   `B andalso setopts(M, Sock)`: `{active, once}`) and records `active = B` (line 749);
/// - on `{diameter, {tls, ...}}` from the peer FSM (after its CEA is sent), `tls_handshake/3`
///   calls `ssl:handshake(Sock, Opts)` (lines 716, 730) and keeps `active = true`.
///
/// Our ClientHello, sent as soon as the CEA is read, can reach the socket before
/// `ssl:handshake` takes it: the armed `{active, once}` delivers it to the transport process
/// (gen_tcp's controlling_process later hands it to ssl, so the handshake still completes)
/// and the socket is left `{active, false}`. ssl copies the socket's current options into
/// the TLS socket (ssl-10.8.7/src/ssl.erl lines 2611-2613, `tls_socket:getopts` merged into
/// the emulated options), so the TLS socket starts `{active, false}`; diameter_tcp believes a
/// read is armed (`active = true`, so `setopts/1`, line 919 `when B, not A`, never re-arms)
/// and nothing read over TLS is ever delivered. Observed with a trace of
/// `tls_socket:getopts/3` in `ssl:handshake`: `{active,false}` in the failing runs,
/// `{active,once}` when the node waited 300 ms before its ClientHello (then answered); 3 s
/// after "peer up" in a failing run the TLS socket is `{active,false}`, the transport's state
/// `#transport{active = true, recv = true, frag = <<>>}` and its mailbox empty, while OTP's
/// ssl log shows our DWR and requests arriving as application records (tls_server.escript's
/// TLS_SERVER_DEBUG and TLS_SERVER_TRACE).
///
/// Work-around on the OTP side: `{active, once}` in `ssl_options` (an emulated option of
/// ssl's, which wins over the socket's value), as [`erlang_inband_tls_server`] does.
#[test]
#[ignore = "Erlang/OTP 25 diameter_tcp race: the TLS socket starts {active,false} when the ClientHello arrives before ssl:handshake (see the doc comment); run with --ignored to see it"]
fn erlang_inband_tls_server_stock_otp() {
    erlang_inband_tls_server_answers(&[]);
}

/// Starts tls_server.escript with `extra` arguments, the node dialling it with in-band TLS,
/// and checks that requests are answered over the TLS stream.
fn erlang_inband_tls_server_answers(extra: &[&str]) {
    let lines = shared_logs();
    let dir = TestDir::new("tls-inband-erl-server");
    let d = dir.path();
    let ca = Ca::new(d, "good");
    let bridge_cert = ca.issue(d, "bridge", "bridge.test.local", Validity::Current);
    let erl_cert = ca.issue(d, "erlsrv", "erlserver.test.local", Validity::Current);
    let erl_port = free_port();
    let port = erl_port.to_string();
    let mut args = vec![
        "--port",
        &port,
        "--host",
        "erlserver.test.local",
        "--seconds",
        "60",
    ];
    args.extend_from_slice(extra);
    let mut erl = erl_tls_peer(
        d,
        "erl-inband-server",
        "tls_server.escript",
        &erl_cert,
        &ca.cert_file,
        &args,
    );
    erl.wait_for_line("listening", harness::peers::erlang::VM_START)
        .unwrap_or_else(|e| panic!("Erlang in-band TLS server: {e}\n{}", erl.tail(20)));
    let toml = tls_node_toml(
        &ca.cert_file,
        &bridge_cert,
        0,
        None,
        &format!("[[peers]]\nhost = \"erlserver.test.local\"\naddress = \"127.0.0.1\"\nport = {erl_port}\ntls_inband = true"),
    );
    let (rt, node) = start_node(&toml);
    rt.block_on(async {
        first_answer(&node.handle, "erlserver.test.local").await;
        echo_round(&node.handle, "erlserver.test.local", 3).await;
    });
    assert!(
        lines.text().lines().any(|l| l.contains(
            "in-band TLS agreed in CER/CEA: TLS handshake peer=\"erlserver.test.local\""
        ) && l.contains("role=Client")),
        "the node was the TLS client after the CEA\n{}",
        erl.tail(20)
    );
    assert_eq!(node.refusals.get(Refusal::TlsHandshake), 0);
    rt.block_on(node.stop());
}
