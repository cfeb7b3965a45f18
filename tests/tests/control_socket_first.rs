//! Issue 11 item 8: after a bridge restart, the workers' control socket must accept no later
//! than the Diameter port does. Otherwise a script request that arrives once the bridge is up
//! (peers can reach it) still finds no socket and fails with -3.
//!
//! The test restarts the real `dmbridge run` (after a graceful stop, and after SIGKILL, which
//! leaves the old socket file and segment behind) and polls the Diameter port from the moment
//! the process is spawned. The instant a TCP connection to the Diameter port is accepted, a
//! worker attaches through the control socket (dmshm's worker side, what libdmbridge wraps):
//! that must succeed. With the old order (Diameter listeners bound, then the shared-memory
//! segment and socket created) there is a window between the two; it is short, so polling
//! alone catches it only sometimes. The second test makes it deterministic: it runs the bridge
//! under strace and checks the order of the two `listen(2)` calls (`strace` is in
//! `scripts/setup.sh`).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dmshm::worker::{Worker, WorkerConfig};
use harness::bridge::{Bridge, BridgeOptions};
use harness::dmbridge::dmbridge_bin;
use harness::{free_port, ChildGuard, Sig, TestDir};

/// Spawns `dmbridge run` on `config` and returns when its Diameter port first accepts,
/// having tried to attach a worker at that instant: the attach result and how long after the
/// spawn the port accepted.
fn restart_and_race(
    name: &str,
    config: &Path,
    dir: &Path,
    port: u16,
    ctl: &Path,
) -> (ChildGuard, Result<Worker, String>, Duration) {
    let bin = dmbridge_bin().unwrap_or_else(|e| panic!("cannot build dmbridge: {e}"));
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--config").arg(config);
    let spawned = Instant::now();
    let mut g = ChildGuard::spawn(name, cmd, dir);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        // Diameter first, then the socket: if the port accepts at time t, the socket must
        // have been accepting since before t.
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            let at = spawned.elapsed();
            let cfg = WorkerConfig::new(ctl, format!("{name}-first"));
            let w = Worker::attach(cfg).map_err(|e| e.to_string());
            return (g, w, at);
        }
        if !g.is_running() || spawned.elapsed() > Duration::from_secs(15) {
            panic!("{name} never accepted on {port}:\n{}", g.tail(30));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Panics unless the worker attached when the Diameter port first accepted.
fn expect_attached(after: &str, g: &ChildGuard, worker: Result<Worker, String>, at: Duration) {
    match worker {
        Ok(w) => drop(w),
        Err(e) => panic!(
            "after {after}: the Diameter port accepted {at:?} after the spawn, but a worker \
             could not attach through the control socket: {e}\n{}",
            g.tail(30)
        ),
    }
    eprintln!("after {after}: the Diameter port accepted {at:?} after the spawn; worker attached");
}

#[test]
fn after_a_restart_workers_can_attach_as_soon_as_peers_can_connect() {
    let dir = TestDir::new("control_socket_first");
    let port = free_port();
    let opts = BridgeOptions {
        port,
        ..BridgeOptions::default()
    };
    let mut first = Bridge::start(dir.path(), &opts);
    let config = first.config_path().to_path_buf();
    let bdir = config
        .parent()
        .expect("config has a directory")
        .to_path_buf();
    let ctl = bdir.join("control.sock");
    first.guard().stop(Duration::from_secs(10));
    drop(first);

    // Restart after a graceful stop (socket and segment removed by the old bridge).
    let (mut g, worker, at) = restart_and_race("dmbridge-second", &config, &bdir, port, &ctl);
    expect_attached("a graceful stop", &g, worker, at);
    g.wait_for_line("listening on", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("second bridge: {e}"));
    // A crash: the socket file and the segment stay behind.
    g.signal(Sig::Kill).expect("SIGKILL");
    g.wait_exit(Duration::from_secs(10))
        .expect("the killed bridge exits");
    assert!(ctl.exists(), "SIGKILL leaves the old socket file");

    let (mut g, worker, at) = restart_and_race("dmbridge-third", &config, &bdir, port, &ctl);
    expect_attached("SIGKILL", &g, worker, at);
    g.wait_for_line("listening on", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("third bridge: {e}"));
    // Graceful: removes the segment in /dev/shm.
    g.stop(Duration::from_secs(10));
}

/// The order of `listen(2)` calls is the order in which the two sockets start accepting:
/// the workers' control socket must come before the Diameter listener.
#[test]
fn the_control_socket_listens_before_the_diameter_port() {
    let dir = TestDir::new("control_socket_order");
    let port = free_port();
    let bdir = dir.subdir("bridge");
    let config = bdir.join("dmbridge.toml");
    let opts = BridgeOptions {
        port,
        ..BridgeOptions::default()
    };
    std::fs::write(&config, opts.to_toml(&bdir)).expect("write the configuration");
    let ctl = bdir.join("control.sock");
    let trace = bdir.join("strace.txt");
    let bin = dmbridge_bin().unwrap_or_else(|e| panic!("cannot build dmbridge: {e}"));
    let mut cmd = Command::new("strace");
    // -yy: descriptors shown with their socket addresses.
    cmd.args(["-f", "-qq", "-yy", "-e", "trace=listen", "-o"])
        .arg(&trace)
        .arg(bin)
        .arg("run")
        .arg("--config")
        .arg(&config);
    let mut g = ChildGuard::spawn("strace-dmbridge", cmd, &bdir);
    g.wait_for_line("listening on", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("dmbridge under strace did not start: {e}"));
    // The process group gets SIGTERM: the bridge stops gracefully, strace with it.
    g.stop(Duration::from_secs(10));
    let text = std::fs::read_to_string(&trace).expect("strace output");
    let listens: Vec<&str> = text.lines().filter(|l| l.contains(" listen(")).collect();
    let position = |what: &str, pred: &dyn Fn(&str) -> bool| {
        listens
            .iter()
            .position(|l| pred(l))
            .unwrap_or_else(|| panic!("no listen() on the {what} in:\n{text}"))
    };
    let ctl_path = ctl.display().to_string();
    let control = position("control socket", &|l: &str| {
        l.contains("UNIX") && l.contains(&format!("\"{ctl_path}\""))
    });
    let tcp = format!("TCP:[127.0.0.1:{port}]");
    let diameter = position("Diameter port", &|l: &str| l.contains(&tcp));
    assert!(
        control < diameter,
        "the Diameter port listens before the workers' control socket:\n{}",
        listens.join("\n")
    );
}

/// A worker that was attached to the previous bridge and is idle when it restarts (a SIP
/// process between requests: nothing polls its descriptor) makes its first request after
/// the new bridge is up: the request must reach the bridge, not fail with -3 "not attached".
/// (The bridge has no peers here, so it answers "no route": proof that it got the request.)
#[test]
fn an_idle_worker_s_first_request_after_a_restart_reaches_the_bridge() {
    use dmshm::record::class;
    let dir = TestDir::new("control_socket_idle_worker");
    let opts = BridgeOptions {
        port: free_port(),
        ..BridgeOptions::default()
    };
    let mut first = Bridge::start(dir.path(), &opts);
    let ctl = first
        .config_path()
        .parent()
        .expect("config has a directory")
        .join("control.sock");
    let mut w = Worker::attach(WorkerConfig::new(&ctl, "sip-process")).expect("attach");
    first.guard().stop(Duration::from_secs(10));
    drop(first);
    // Up again: Bridge::start returns once it logged "listening on" and its port accepts.
    let _second = Bridge::start(dir.path(), &opts);
    let acr =
        br#"[{"Session-Id":"w;1;1"},{"Accounting-Record-Type":1},{"Accounting-Record-Number":0}]"#;
    let c = w.send_request(3, 271, acr, 1000);
    assert!(
        c.class != class::NOT_SENT || c.error.starts_with("no route"),
        "the first request after the restart did not reach the bridge: {c:?}"
    );
}
