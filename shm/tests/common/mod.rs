//! Helpers shared by the integration tests.

use dmshm::bridge::{Bridge, BridgeConfig, BridgeEvent};
use dmshm::record::IncomingRequest;
use dmshm::worker::WorkerConfig;
use std::time::{Duration, Instant};

/// A bridge configuration of this process's own (`id` tells tests apart): its control socket
/// in the temporary directory, its segments under /dev/shm, two slots of 64 KiB rings and
/// 4 KiB messages.
#[allow(dead_code)] // not every test binary makes its bridge so
pub fn small_bridge_cfg(id: &str) -> BridgeConfig {
    let id = format!("{}-{id}", std::process::id());
    let mut bc = BridgeConfig::new(
        std::env::temp_dir().join(format!("dmb-{id}.sock")),
        std::path::PathBuf::from(format!("/dev/shm/dmb-test-{id}")),
    );
    bc.geometry = dmshm::segment::Geometry {
        slots: 2,
        ring_bytes: 64 * 1024,
        max_msg: 4096,
    };
    bc
}

/// A worker configuration for the bridge `b`, with a short grace.
pub fn wcfg(b: &BridgeConfig, name: &str) -> WorkerConfig {
    let mut w = WorkerConfig::new(&b.control_path, name);
    w.grace = Duration::from_millis(300);
    w
}

/// Waits up to `ms` for `fd` to be readable.
pub fn poll_fd(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Services the bridge (accepting, and every watched slot) until `pred` holds on the
/// collected events; panics after 5 s.
#[allow(dead_code)] // not every test binary pumps
pub fn pump(
    b: &mut Bridge,
    watched: &mut Vec<u32>,
    evs: &mut Vec<BridgeEvent>,
    pred: impl Fn(&[BridgeEvent]) -> bool,
) {
    let t0 = Instant::now();
    while !pred(evs) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "timed out; events so far: {evs:?}"
        );
        watched.extend(b.accept_all(evs).unwrap());
        for s in watched.clone() {
            while b.service(s, evs) {}
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A Push-Profile-Request record as the bridge dispatches it (Cx, from "hss" in "realm",
/// Session-Id "s;1"), its AVPs `json`.
#[allow(dead_code)] // not every test binary dispatches
pub fn ppr(json: &str) -> IncomingRequest<'_> {
    IncomingRequest {
        token: 0,
        app_id: 16777216,
        cmd_code: 305,
        event: "",
        sess_id: "s;1",
        cmd_name: "Push-Profile-Request",
        origin_host: "hss",
        origin_realm: "realm",
        avps_json: json,
    }
}
