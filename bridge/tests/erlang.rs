//! The node against Erlang/OTP `diameter` (shared/peers/erlang/dia_peer.escript, speaking
//! freeDiameter's test_app), as responder and as initiator.
//!
//! Needs `escript` on PATH (Debian erlang-base, erlang-diameter, erlang-dev) and the shared/
//! directory beside the repository (or `DMBRIDGE_SHARED`). When missing, the tests fail with
//! a message naming scripts/setup.sh, which CI runs first. Loopback only, free ports, every process stopped by its guard.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The Erlang peer script. A missing `escript` or script fails the test naming
/// scripts/setup.sh: CI runs it first, so this is a setup bug, never a silent pass.
fn script() -> PathBuf {
    harness::paths::require_program("escript", "erlang-base erlang-diameter erlang-dev");
    harness::paths::shared_peer_file("erlang/dia_peer.escript")
}

fn erl(script: &PathBuf, args: &[&str], log: &std::path::Path) -> Proc {
    let mut cmd = Command::new("escript");
    cmd.arg(script).args(args);
    Proc::spawn(cmd, log)
}

#[tokio::test]
async fn bridge_initiates_to_erlang_server() {
    let script = script();
    let work = workdir("erl-srv");
    let port = free_port();
    let p = port.to_string();
    let server = erl(
        &script,
        &["server", "--port", &p, "--apps", "ta", "--duration", "60"],
        &work.join("server.log"),
    );
    assert!(
        server
            .wait_log("listening", harness::peers::erlang::VM_START)
            .await,
        "Erlang server did not start:\n{}",
        server.log()
    );
    let node = Running::start(
        &ta_node_toml(
            "bridge.test.local",
            0,
            PeerAt::Connect("erlserver.test.local", port),
        ),
        TaEcho::new(),
    )
    .await;
    let a = first_answer(&node.handle, "erlserver.test.local").await;
    assert_eq!(a.find_u32(268, 0), Some(2001));
    echo_round(&node.handle, "erlserver.test.local", 50).await;
    // Our DPR is answered: the node stops within its DPA timeout, not by the hard deadline.
    let t = std::time::Instant::now();
    node.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "DPA not received: {:?}",
        t.elapsed()
    );
    server.stop();
}

#[tokio::test]
async fn erlang_client_initiates_and_every_request_is_answered() {
    let script = script();
    let work = workdir("erl-cli");
    let port = free_port();
    let echo = TaEcho::new();
    let node = Running::start(
        &ta_node_toml(
            "bridge.test.local",
            port,
            PeerAt::Accept("erlclient.test.local"),
        ),
        echo.clone(),
    )
    .await;
    let p = port.to_string();
    let mut client = erl(
        &script,
        &[
            "client",
            "--rport",
            &p,
            "--n",
            "500",
            "--k",
            "20",
            "--app",
            "ta",
            "--apps",
            "ta",
            "--duration",
            "20",
        ],
        &work.join("client.log"),
    );
    assert!(
        client.wait_exit(Duration::from_secs(40)).await,
        "client did not finish:\n{}",
        client.log()
    );
    let log = client.log();
    let line = log
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .unwrap_or_else(|| panic!("{log}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    assert_eq!((field("ok"), field("err")), (500, 0), "{line}");
    assert_eq!(echo.seen(), 500, "each request handled once");
    node.stop().await;
}
