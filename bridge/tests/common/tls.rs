//! TLS helpers of the interop tests: a TLS client, raw CERs, a freeDiameter TLS client round
//! and the node start (log capture and the message reader are in the parent module).

use std::path::Path;

use std::time::Duration;

use dmrun::tls::{Tls, TlsSettings};
use harness::certs::NodeCert;
use harness::free_port;
use harness::peers::{FdOptions, FdTls, FdTlsConnect, FreeDiameter};

use super::{Lines, M, TA_APP, TA_VENDOR};

pub fn client_tls(ca: &Path, cert: &NodeCert) -> Tls {
    Tls::load(TlsSettings {
        ca_file: ca.into(),
        cert_file: cert.cert_file.clone(),
        key_file: cert.key_file.clone(),
        handshake_timeout: Duration::from_secs(5),
        peer_cas: Vec::new(),
    })
    .unwrap()
}

/// A CER from `host` (RFC 6733 §5.3.1), as a peer would send it.
pub fn cer(host: &str) -> Vec<u8> {
    cer_offering(host, &[])
}

/// A CER from `host` with these Inband-Security-Id values (RFC 6733 §6.10).
pub fn cer_offering(host: &str, inband_security_ids: &[u32]) -> Vec<u8> {
    let mut w = dmproto::MessageWriter::new(dmproto::Header::request(257, 0, 1, 1));
    ce_avps(&mut w, host, inband_security_ids);
    w.finish().unwrap().to_vec()
}

/// The AVPs of a CER or CEA from `host` (RFC 6733 §5.3.1, §5.3.2) offering test_app.
fn ce_avps(w: &mut dmproto::MessageWriter, host: &str, inband_security_ids: &[u32]) {
    w.str(264, M, 0, host)
        .str(296, M, 0, "test.local")
        .avp(257, M, 0, &[0, 1, 127, 0, 0, 1])
        .u32(266, M, 0, 0)
        .str(269, 0, 0, "tls-test")
        .u32(258, M, 0, TA_APP);
    for v in inband_security_ids {
        w.u32(299, M, 0, *v);
    }
}

/// freeDiameter `client.test.local` (certificate `cert`, trusting `ca_file`) dials
/// `bridge.test.local` on `port` with TLS as `connect` says; once open, its Test-Request
/// must be answered 2001. Returned running (dropping it stops it).
pub fn fd_tls_client_answered(
    dir: &Path,
    cert: &NodeCert,
    ca_file: &Path,
    port: u16,
    connect: FdTlsConnect,
    lines: &Lines,
) -> FreeDiameter {
    let mut fd = FreeDiameter::start(
        dir,
        FdOptions {
            tls: Some(FdTls {
                cert_file: cert.cert_file.clone(),
                key_file: cert.key_file.clone(),
                ca_file: ca_file.into(),
                sec_port: free_port(),
                connect,
            }),
            connect_to: Some(("bridge.test.local".into(), port)),
            client_dest_host: Some("bridge.test.local".into()),
            ..FdOptions::client(free_port(), port, None)
        },
    );
    fd.wait_peer_open("bridge.test.local", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("freeDiameter over TLS ({connect:?}): {e}\n{}", lines.text()));
    fd.send_test_request();
    // The RECV line may be read while test_app is still writing it: poll until whole.
    let started = std::time::Instant::now();
    let answer = loop {
        let a = fd
            .wait_answers(1, Duration::from_secs(10))
            .unwrap()
            .remove(0);
        if a.contains("Status:") || started.elapsed() > Duration::from_secs(10) {
            break a;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answer.contains("Status: 2001"), "{answer:?}");
    fd
}

/// A CEA answering `cer` with `result_code` from `host`, carrying these Inband-Security-Id
/// values (RFC 6733 §5.3.2, §6.10), as a scripted peer sends it.
pub fn cea_offering(
    cer: &dmproto::Message,
    host: &str,
    result_code: u32,
    inband_security_ids: &[u32],
) -> Vec<u8> {
    let mut w = dmproto::MessageWriter::answer_to(&cer.header);
    w.u32(268, M, 0, result_code);
    ce_avps(&mut w, host, inband_security_ids);
    w.finish().unwrap().to_vec()
}

/// The log capture of this test binary, shared by its tests (one subscriber per process:
/// a second [`super::capture_logs`] would get a buffer nobody writes to).
pub fn shared_logs() -> Lines {
    static LINES: std::sync::OnceLock<Lines> = std::sync::OnceLock::new();
    LINES
        .get_or_init(|| super::capture_logs(tracing::Level::INFO, true))
        .clone()
}

/// The config of node `bridge.test.local` serving test_app with TLS material `cert` (trusting
/// `ca`), a plain listener on `plain_port` (0: any), a TLS-at-connect one on `tls_port` if
/// any, these `[[peers]]` (TOML text) and [`FAST_TIMERS`].
pub fn tls_node_toml(
    ca: &Path,
    cert: &NodeCert,
    plain_port: u16,
    tls_port: Option<u16>,
    peers: &str,
) -> String {
    let tls_listen = tls_port
        .map(|p| format!("listen = [\"127.0.0.1:{p}\"]\n"))
        .unwrap_or_default();
    format!(
        r#"
[node]
origin_host = "bridge.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:{plain_port}"]
[tls]
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
{tls_listen}[[applications]]
id = {TA_APP}
vendor = {TA_VENDOR}
{peers}
{FAST_TIMERS}"#,
        ca = ca.display(),
        cert = cert.cert_file.display(),
        key = cert.key_file.display(),
    )
}

/// Erlang/OTP diameter client `erlclient.test.local` (tests/peers/tls_client.escript) with
/// certificate `cert` trusting `ca`, dialling `port` with TLS at connect or, `inband`, plain
/// then TLS after CER/CEA; its 5 Test-Requests to the node must all be answered.
pub fn erl_tls_client_answered(
    dir: &Path,
    port: u16,
    cert: &NodeCert,
    ca: &Path,
    inband: bool,
    lines: &Lines,
) {
    let port = port.to_string();
    let args = [
        "--rport",
        &port,
        "--host",
        "erlclient.test.local",
        "--dest-host",
        "bridge.test.local",
        "--inband",
        if inband { "1" } else { "0" },
        "--n",
        "5",
    ];
    let mut erl = erl_tls_peer(dir, "erl-tls-client", "tls_client.escript", cert, ca, &args);
    let line = erl
        .wait_for_line("RESULT", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("Erlang TLS client: {e}\n{}\n{}", erl.tail(20), lines.text()));
    assert!(line.contains("ok=5 err=0"), "{line}\n{}", erl.tail(20));
}

/// Starts the Erlang/OTP diameter peer tests/peers/`script` (an escript) as `name` in
/// `dir`, with certificate `cert`, CA bundle `ca` and `args`.
pub fn erl_tls_peer(
    dir: &Path,
    name: &str,
    script: &str,
    cert: &NodeCert,
    ca: &Path,
    args: &[&str],
) -> harness::ChildGuard {
    let escript = harness::paths::require_program("escript", "erlang-base erlang-diameter");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers")
        .join(script);
    let mut cmd = std::process::Command::new(escript);
    cmd.arg(script).args(args).args([
        "--cert".as_ref(),
        cert.cert_file.as_os_str(),
        "--key".as_ref(),
        cert.key_file.as_os_str(),
        "--ca".as_ref(),
        ca.as_os_str(),
    ]);
    harness::ChildGuard::spawn(name, cmd, dir)
}

/// Short timers for the TLS tests' nodes (quick reconnection and shutdown).
pub const FAST_TIMERS: &str =
    "[timers]\ntc = \"1s\"\ntw = \"6s\"\ndpa_timeout = \"1s\"\ndrain_timeout = \"1s\"\n";

/// A two-thread runtime and the node of `toml` running in it, answering test_app.
pub fn start_node(toml: &str) -> (tokio::runtime::Runtime, super::Running) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = rt.block_on(super::Running::start(toml, super::TaEcho::new()));
    (rt, node)
}
