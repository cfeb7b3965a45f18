//! Free TCP ports for tests that run in parallel, in one process or in several.
//!
//! Binding port 0 and handing the number back is racy: another test may get the same number
//! from the kernel between our close and the peer's bind. Instead each process draws from its
//! own block of ports, below the kernel's ephemeral range so outgoing connections never take
//! them, with an in-process counter so two threads never get the same port, and each
//! candidate is checked by binding 127.0.0.1 before it is handed out.
//!
//! The block is claimed with a lock file (`flock`, released when the process exits), starting
//! from the one the PID names: two test binaries running at once (scripts/test-binaries.sh
//! runs two) never share a block. Chosen by PID alone, 110 blocks gave two concurrent
//! processes the same block about once in 110 pairs, and then the same port sequence: a port
//! handed out here and not yet bound by its peer (an Erlang node starting) was handed out
//! there too (peer_lifecycle saw another test's HTTP GET on its peer's port).

use std::fs::File;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// First port of the pool; the kernel's ephemeral range starts at 32768 by default.
const POOL_START: u32 = 10_000;
/// One past the last port of the pool.
const POOL_END: u32 = 32_000;
/// Ports per process block.
const BLOCK: u32 = 200;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// This process's block, and the lock file that holds it for the process's lifetime.
static BLOCK_HELD: OnceLock<(u32, Option<File>)> = OnceLock::new();

/// The first block, from the one the PID names, whose lock file this process could lock;
/// the PID's block unlocked when no lock file can be had (a read-only temp dir).
fn own_block(blocks: u32) -> u32 {
    BLOCK_HELD
        .get_or_init(|| {
            let start = std::process::id() % blocks;
            let dir = std::env::temp_dir().join("dmbridge-test-ports");
            if std::fs::create_dir_all(&dir).is_ok() {
                for i in 0..blocks {
                    let b = (start + i) % blocks;
                    let Ok(f) = File::create(dir.join(format!("{b}.lock"))) else {
                        break;
                    };
                    if f.try_lock().is_ok() {
                        return (b, Some(f));
                    }
                }
            }
            (start, None)
        })
        .0
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago and that no other caller of
/// this function in this process has received (and, with high probability, no other process).
///
/// Panics when no port in the pool is free (never expected).
pub fn free_port() -> u16 {
    let blocks = (POOL_END - POOL_START) / BLOCK;
    let block = own_block(blocks);
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

/// True when 127.0.0.1:`port` can be bound now, by a peer that does not set `SO_REUSEADDR`,
/// and nothing listens on it on any address.
///
/// Without `SO_REUSEADDR`, which std's `TcpListener::bind` sets: a port whose earlier
/// connections are still in TIME_WAIT (a peer of a test that has ended, in a process that
/// held this block before) binds for a peer that sets it (freeDiameter, Kamailio) but not for
/// one that does not (Erlang's `gen_tcp`, by default: an in-band TLS test's Erlang server
/// failed with `eaddrinuse` on a port handed out here).
pub fn port_is_free(port: u16) -> bool {
    let bindable = |ip: Ipv4Addr| {
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .and_then(|s| s.bind(&std::net::SocketAddr::from((ip, port)).into()))
            .is_ok()
    };
    bindable(Ipv4Addr::LOCALHOST) && bindable(Ipv4Addr::UNSPECIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_port_with_connections_in_time_wait_is_not_free() {
        let port = free_port();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        let client = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        // The server's side closes first: its socket on `port` goes to TIME_WAIT.
        drop(server_side);
        drop(listener);
        let mut buf = [0u8; 1];
        let _ = std::io::Read::read(&mut &client, &mut buf); // EOF: the FIN arrived
        drop(client);
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
            "with SO_REUSEADDR (std's bind) the port binds"
        );
        assert!(
            !port_is_free(port),
            "a peer without SO_REUSEADDR could not bind it"
        );
    }

    #[test]
    fn the_block_is_held_against_other_processes() {
        let port = u32::from(free_port());
        let (block, held) = BLOCK_HELD.get().expect("claimed by free_port");
        assert!(held.is_some(), "no lock file in the temp dir");
        assert!((POOL_START + block * BLOCK..POOL_START + (block + 1) * BLOCK).contains(&port));
        // Another open of the same lock file (as another test process would) cannot lock it.
        let path = std::env::temp_dir()
            .join("dmbridge-test-ports")
            .join(format!("{block}.lock"));
        let other = File::create(path).unwrap();
        assert!(other.try_lock().is_err(), "block {block} is not held");
    }
}
