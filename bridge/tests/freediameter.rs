//! The node against a real third-party peer: freeDiameter 1.2.1 (`freeDiameterd` with its
//! `test_app` extension; see shared/peers/README.md), as responder and as initiator.
//!
//! Needs `freeDiameterd` on PATH and `test_app.fdx` + `bind_lo.so` in `$DMBRIDGE_FD_DEPS`
//! (default: `build/deps/fd` at the repository root, where scripts/setup.sh puts them). When
//! they are missing the tests fail and name scripts/setup.sh: CI runs it first, so a missing
//! peer is a setup bug, never a silent pass.
//!
//! Everything listens on 127.0.0.1 on ports picked free; each freeDiameterd is owned by a
//! guard that kills it (by PID) and reaps it, also when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The directory with test_app.fdx and bind_lo.so. A missing piece fails the test with the
/// command that installs it: CI runs scripts/setup.sh first, so it is a setup bug, never a
/// reason to pass without running.
fn fd_dir() -> PathBuf {
    harness::paths::require_program("freeDiameterd", "freediameterd freediameter-extensions");
    let test_app = harness::paths::fd_dep("test_app.fdx");
    harness::paths::fd_dep("bind_lo.so");
    test_app.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Starts freeDiameterd with test_app, as shared/peers/freediameter/run.sh does.
struct Fd;

impl Fd {
    /// `role` "server" (server.test.local, answers test_app) or "client" (client.test.local,
    /// connects to server.test.local at `peer_port`; benchmark on SIGUSR1).
    fn start(
        fd: &Path,
        work: &Path,
        role: &str,
        port: u16,
        peer_port: u16,
        bench: (u32, u32),
    ) -> Proc {
        std::fs::create_dir_all(work).unwrap();
        let ta = work.join(format!("ta_{role}.conf"));
        let mode = if role == "server" {
            "mode = server; benchmark;".to_string()
        } else {
            format!(
                "mode = client; benchmark {} {}; dest-realm = \"test.local\"; dest-host = \"server.test.local\";",
                bench.0, bench.1
            )
        };
        std::fs::write(
            &ta,
            format!("vendor-id = {TA_VENDOR}; appli-id = {TA_APP}; cmd-id = {TA_CMD}; avp-id = {TEST_AVP};\n{mode}\n"),
        )
        .unwrap();
        let acl = work.join("acl_wl.conf");
        std::fs::write(&acl, "ALLOW_IPSEC *.test.local\n").unwrap();
        let mut conf = format!(
            "Identity = \"{role}.test.local\"; Realm = \"test.local\"; Port = {port}; SecPort = 0; No_SCTP; No_IPv6;\n\
             LoadExtension = \"{}\" : \"{}\";\n\
             LoadExtension = \"/usr/lib/freeDiameter/acl_wl.fdx\" : \"{}\";\n\
             TcTimer = 1;\n",
            fd.join("test_app.fdx").display(),
            ta.display(),
            acl.display()
        );
        if role == "client" {
            conf += &format!(
                "ConnectPeer = \"server.test.local\" {{ ConnectTo = \"127.0.0.1\"; No_TLS; No_SCTP; Port = {peer_port}; }};\n"
            );
        }
        let conf_path = work.join(format!("{role}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new("freeDiameterd");
        cmd.arg("-c")
            .arg(&conf_path)
            .env("LD_PRELOAD", fd.join("bind_lo.so"));
        Proc::spawn(cmd, &work.join(format!("{role}.log")))
    }
}

#[tokio::test]
async fn bridge_initiates_to_freediameter_server_and_reconnects_after_restart() {
    let fd = fd_dir();
    let work = workdir("fd-srv");
    let port = free_port();
    let server = Fd::start(&fd, &work, "server", port, 0, (0, 0));
    let node = Running::start(
        &ta_node_toml(
            "bridge.test.local",
            0,
            PeerAt::Connect("server.test.local", port),
        ),
        TaEcho::new(),
    )
    .await;
    let a = first_answer(&node.handle, "server.test.local").await;
    assert_eq!(a.find_u32(268, 0), Some(2001));
    echo_round(&node.handle, "server.test.local", 50).await;

    // The server restarts: the node notices, reconnects (Tc = 1 s), and serves again.
    server.stop();
    let server = Fd::start(&fd, &work.join("again"), "server", port, 0, (0, 0));
    let a = first_answer(&node.handle, "server.test.local").await;
    assert_eq!(a.find_u32(268, 0), Some(2001));

    // Our shutdown sends DPR; freeDiameter answers DPA and logs the cause.
    node.stop().await;
    assert!(
        server.wait_log("REBOOTING", Duration::from_secs(5)).await,
        "freeDiameter saw no DPR:\n{}",
        server.log()
    );
    server.stop();
}

#[tokio::test]
async fn freediameter_client_initiates_and_its_requests_are_answered() {
    let fd = fd_dir();
    let work = workdir("fd-cli");
    let port = free_port();
    let echo = TaEcho::new();
    let node = Running::start(
        &ta_node_toml(
            "server.test.local",
            port,
            PeerAt::Accept("client.test.local"),
        ),
        echo.clone(),
    )
    .await;
    let client = Fd::start(&fd, &work, "client", free_port(), port, (2, 10));
    assert!(
        client.wait_log("STATE_OPEN", Duration::from_secs(10)).await,
        "no capabilities exchange:\n{}",
        client.log()
    );
    client.signal("USR1");
    assert!(
        client
            .wait_log("Test Complete", Duration::from_secs(15))
            .await,
        "benchmark did not complete:\n{}",
        client.log()
    );
    let log = client.log();
    let errors: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("error(s) received"))
        .filter_map(|l| l.split_whitespace().rev().nth(2)?.parse().ok())
        .collect();
    assert!(
        !errors.is_empty() && errors.iter().all(|e| *e == 0),
        "error answers {errors:?}:\n{log}"
    );
    let best = log
        .lines()
        .filter_map(|l| l.split("Throughput:").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(best > 0.0, "no answers counted:\n{log}");
    assert!(echo.seen() > 0);

    // Our shutdown: DPR to the client.
    node.stop().await;
    assert!(
        client.wait_log("DPR", Duration::from_secs(5)).await,
        "{}",
        client.log()
    );
    client.stop();
}

#[tokio::test]
async fn both_sides_connecting_with_freediameter_converge_on_one_connection() {
    let fd = fd_dir();
    let work = workdir("fd-elect");
    let (node_port, fd_port) = (free_port(), free_port());
    // freeDiameter's client role connects to "server.test.local" at node_port; the node (with
    // that identity) connects back to client.test.local at fd_port. Both start at once; which
    // CER arrives first decides whether an election happens (the state machine tests cover
    // both outcomes deterministically). Either way one connection must survive.
    let client = Fd::start(&fd, &work, "client", fd_port, node_port, (1, 5));
    let node = Running::start(
        &ta_node_toml(
            "server.test.local",
            node_port,
            PeerAt::Connect("client.test.local", fd_port),
        ),
        TaEcho::new(),
    )
    .await;
    assert!(
        client.wait_log("STATE_OPEN", Duration::from_secs(15)).await,
        "no open connection after the election:\n{}",
        client.log()
    );
    // One connection survives and carries freeDiameter's requests.
    client.signal("USR1");
    assert!(
        client
            .wait_log("Test Complete", Duration::from_secs(15))
            .await,
        "benchmark did not complete:\n{}",
        client.log()
    );
    let log = client.log();
    assert!(
        log.contains("0 error(s) received") && !log.contains(" 1 error(s)"),
        "{log}"
    );
    node.stop().await;
    client.stop();
}
