//! Helpers shared by the integration tests.

use dmshm::bridge::BridgeConfig;
use dmshm::worker::WorkerConfig;
use std::time::Duration;

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
