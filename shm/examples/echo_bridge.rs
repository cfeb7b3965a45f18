//! Runs the reference bridge (dmshm::reference) in the foreground, printing
//! every event: a stand-in for the real bridge when trying libdmbridge or a
//! SIP-server module by hand.
//!
//! `cargo run -p dmbridge-shm --example echo_bridge -- CONTROL_SOCKET SEGMENT [SLOTS]`
//! e.g. `... -- /tmp/dmb.sock dmb-try 8` (SEGMENT names the per-worker
//! memfds; no file is made); stop with Ctrl-C (which leaves the socket file
//! behind; the next start replaces it).

use dmshm::bridge::BridgeConfig;
use dmshm::reference::EchoBridge;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(control), Some(segment)) = (args.first(), args.get(1)) else {
        eprintln!("usage: echo_bridge CONTROL_SOCKET SEGMENT_NAME [SLOTS]");
        std::process::exit(2);
    };
    let mut cfg = BridgeConfig::new(control, segment);
    if let Some(slots) = args.get(2) {
        match slots.parse() {
            Ok(n) => cfg.geometry.slots = n,
            Err(e) => {
                eprintln!("bad SLOTS {slots:?}: {e}");
                std::process::exit(2);
            }
        }
    }
    let mut bridge = match EchoBridge::new(cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("echo_bridge: {e}");
            std::process::exit(1);
        }
    };
    bridge.set_verbose(true);
    println!("echo bridge listening on {control}, segment {segment}");
    loop {
        if let Err(e) = bridge.poll_once(Duration::from_millis(500)) {
            eprintln!("echo_bridge: {e}");
        }
    }
}
