//! Free TCP ports for tests that run in parallel, in one process or in several.
//!
//! Binding port 0 and handing the number back is racy: another test may get the same number
//! from the kernel between our close and the peer's bind. Instead each process draws from its
//! own block of ports (chosen from its PID), below the kernel's ephemeral range so outgoing
//! connections never take them, with an in-process counter so two threads never get the same
//! port, and each candidate is checked by binding 127.0.0.1 before it is handed out.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// First port of the pool; the kernel's ephemeral range starts at 32768 by default.
const POOL_START: u32 = 10_000;
/// One past the last port of the pool.
const POOL_END: u32 = 32_000;
/// Ports per process block.
const BLOCK: u32 = 200;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago and that no other caller of
/// this function in this process has received (and, with high probability, no other process).
///
/// Panics when no port in the pool is free (never expected).
pub fn free_port() -> u16 {
    let blocks = (POOL_END - POOL_START) / BLOCK;
    let block = std::process::id() % blocks;
    let pool = POOL_END - POOL_START;
    for _ in 0..pool {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Walk our own block first, then the rest of the pool.
        let offset = (block * BLOCK + n) % pool;
        let port = u16::try_from(POOL_START + offset).unwrap_or(0);
        if port != 0 && port_is_free(port) {
            return port;
        }
    }
    panic!("no free TCP port in 127.0.0.1:{POOL_START}..{POOL_END}");
}

/// True when 127.0.0.1:`port` can be bound now and nothing listens on it on any address.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}
