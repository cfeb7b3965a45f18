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
//! there too (peer_lifecycle saw another test's HTTP GET on its peer's port). A process that
//! uses up its block claims another one the same way, never one another process holds.

use std::fs::File;
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// First port of the pool; the kernel's ephemeral range starts at 32768 by default.
const POOL_START: u32 = 10_000;
/// One past the last port of the pool.
const POOL_END: u32 = 32_000;
/// Ports per process block.
const BLOCK: u32 = 200;
/// Blocks in the pool.
const BLOCKS: u32 = (POOL_END - POOL_START) / BLOCK;

/// The blocks this process holds, in the order it claimed them, and how many ports of them
/// it has handed out (or skipped as busy).
struct Held {
    /// Each block and the lock file that holds it for the process's lifetime (`None`: no
    /// lock file could be had, a read-only temp dir).
    blocks: Vec<(u32, Option<File>)>,
    /// Ports of `blocks` used so far, in order: the next one is `blocks[next / BLOCK]`'s
    /// port `next % BLOCK`.
    next: u32,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    blocks: Vec::new(),
    next: 0,
});

impl Held {
    /// Claims one more block: the first, from the one the PID names (the first claim) or
    /// from the one after the last held, whose lock file this process could lock; without
    /// lock files, the next block unlocked.
    ///
    /// Never a block that another process holds: a process that used up its block (the
    /// harness self-test hands out 200 ports in one test) used to walk on into the next
    /// block, whoever held it, and could hand out a port that the block's owner had handed
    /// out too and not bound yet (found in session 18: harness_selftest's 201st to 204th
    /// ports were the first four of the next block).
    fn claim(&mut self) -> Option<u32> {
        // Blocks outside the kernel's ephemeral range first; only on a machine whose range
        // covers every block of the pool, the old behaviour (any block), rather than no port
        // at all: a panic here would fail every test on such a machine.
        self.claim_avoiding(ephemeral_range())
    }

    /// [`Held::claim`] with the ephemeral range given.
    fn claim_avoiding(&mut self, ephemeral: (u32, u32)) -> Option<u32> {
        self.claim_where(|b| !block_overlaps(b, ephemeral))
            .or_else(|| self.claim_where(|_| true))
    }

    /// [`Held::claim`] among the blocks `fits` accepts.
    fn claim_where(&mut self, fits: impl Fn(u32) -> bool) -> Option<u32> {
        let start = match self.blocks.last() {
            None => std::process::id() % BLOCKS,
            Some((b, _)) => (b + 1) % BLOCKS,
        };
        let dir = std::env::temp_dir().join("dmbridge-test-ports");
        let usable = |b: u32, blocks: &[(u32, Option<File>)]| {
            !blocks.iter().any(|(h, _)| *h == b) && fits(b)
        };
        if std::fs::create_dir_all(&dir).is_ok() {
            for i in 0..BLOCKS {
                let b = (start + i) % BLOCKS;
                if !usable(b, &self.blocks) {
                    continue;
                }
                let Ok(f) = File::create(dir.join(format!("{b}.lock"))) else {
                    break;
                };
                if f.try_lock().is_ok() {
                    self.blocks.push((b, Some(f)));
                    return Some(b);
                }
            }
            if self.blocks.iter().any(|(_, f)| f.is_some()) {
                // Lock files work and every other such block is held: none to take.
                return None;
            }
        }
        let b = (0..BLOCKS)
            .map(|i| (start + i) % BLOCKS)
            .find(|b| usable(*b, &self.blocks))?;
        self.blocks.push((b, None));
        Some(b)
    }
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), from which it picks
/// the local port of every outgoing connection; 32768-60999 (Linux's default) when it cannot
/// be read.
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// True when block `b` has a port in the ephemeral range `(low, high)`. Such a block is used
/// only when no other is left (a range over the whole pool): an outgoing connection anywhere
/// on the machine (another test's peer) could take one of its ports as its local port, and a
/// capture filtered on that port would record another test's conversation. The pool sits
/// below Linux's default range; this keeps it apart on a machine whose range was widened.
fn block_overlaps(b: u32, (low, high): (u32, u32)) -> bool {
    let first = POOL_START + b * BLOCK;
    let last = first + BLOCK - 1;
    first <= high && low <= last
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago and that no other caller of
/// this function in this process, nor in another process using this module, has received.
///
/// Panics when no port in the pool is free (never expected).
pub fn free_port() -> u16 {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let index = (held.next / BLOCK) as usize;
        if index >= held.blocks.len() && held.claim().is_none() {
            panic!("no free TCP port in 127.0.0.1:{POOL_START}..{POOL_END}");
        }
        let block = held.blocks[index].0;
        let port = POOL_START + block * BLOCK + held.next % BLOCK;
        held.next += 1;
        let port = u16::try_from(port).expect("the pool is below 65536");
        if port_is_free(port) {
            return port;
        }
    }
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
        let block = (port - POOL_START) / BLOCK;
        let held = HELD.lock().unwrap();
        let lock = held.blocks.iter().find(|(b, _)| *b == block);
        assert!(
            lock.is_some_and(|(_, f)| f.is_some()),
            "port {port}: block {block} not claimed with a lock file"
        );
        drop(held);
        // Another open of the same lock file (as another test process would) cannot lock it.
        let path = std::env::temp_dir()
            .join("dmbridge-test-ports")
            .join(format!("{block}.lock"));
        let other = File::create(path).unwrap();
        assert!(other.try_lock().is_err(), "block {block} is not held");
    }

    #[test]
    fn blocks_in_the_ephemeral_range_are_used_only_when_no_other_is_left() {
        assert!(!block_overlaps(0, (32_768, 60_999)), "the default range");
        assert!(!block_overlaps(BLOCKS - 1, (32_768, 60_999)));
        assert!(block_overlaps(0, (1_024, 65_535)), "a widened range");
        assert!(block_overlaps(5, (11_100, 11_100)), "one port of block 5");
        assert!(!block_overlaps(5, (11_200, 20_000)), "from block 6 on");
        assert!(block_overlaps(BLOCKS - 1, (31_999, 40_000)));
        let port = u32::from(free_port());
        let (low, high) = ephemeral_range();
        let some_outside = (0..BLOCKS).any(|b| !block_overlaps(b, (low, high)));
        assert!(
            !some_outside || port < low || port > high,
            "port {port} in {low}-{high}, though blocks outside it exist"
        );
    }

    /// A machine whose ephemeral range covers the whole pool still gets a block (the one
    /// outside the range it prefers does not exist there), rather than a panic in every test.
    #[test]
    fn a_range_over_the_whole_pool_still_gets_a_block() {
        let mut held = Held {
            blocks: Vec::new(),
            next: 0,
        };
        let b = held.claim_avoiding((1_024, 65_535)).expect("a block");
        assert!(b < BLOCKS);
        let mut narrow = Held {
            blocks: Vec::new(),
            next: 0,
        };
        // Only the pool's first block is outside this range: it is the one taken (unless
        // another process holds it, then one inside).
        let got = narrow
            .claim_avoiding((POOL_START + BLOCK, 65_535))
            .expect("a block");
        let path = std::env::temp_dir()
            .join("dmbridge-test-ports")
            .join("0.lock");
        if got != 0 {
            let other = File::create(path).unwrap();
            assert!(
                other.try_lock().is_err(),
                "block 0 was free but {got} was taken"
            );
        }
    }

    /// More ports than one block holds: the process claims (locks) a second block, and
    /// never hands out a port of a block that another process holds.
    #[test]
    fn a_used_up_block_is_followed_by_another_held_one() {
        let ports: Vec<u32> = (0..BLOCK + 5).map(|_| u32::from(free_port())).collect();
        let held = HELD.lock().unwrap();
        assert!(
            held.blocks.len() >= 2,
            "one block for {} ports",
            ports.len()
        );
        for p in &ports {
            let b = (p - POOL_START) / BLOCK;
            assert!(
                held.blocks.iter().any(|(h, _)| *h == b),
                "port {p} is in block {b}, which this process does not hold"
            );
        }
        for (b, lock) in &held.blocks {
            assert!(lock.is_some(), "block {b} claimed without its lock");
            let path = std::env::temp_dir()
                .join("dmbridge-test-ports")
                .join(format!("{b}.lock"));
            assert!(
                File::create(path).unwrap().try_lock().is_err(),
                "block {b} is not held"
            );
        }
    }
}
