//! Allocations per message inside the node (issue 15 item 2: "no per-request allocation on
//! either side of the seam"), counted, not timed: two [`Endpoint`]s wired together in memory,
//! a client that originates requests and a server whose application answers them, each
//! call into each node counted by a counting global allocator (shm/tests/counting, as
//! shm/tests/seam_allocations.rs and cabi/tests/seam_allocations.rs count the seam).
//!
//! What a node does per message, after a warm-up that brings every table to its working
//! size (the duplicate cache to its bound, the pending table, the delivered map):
//! - the server (incoming): `frame` of a request, its `Deliver`, `reply`, the answer's
//!   `Transmit`;
//! - the client (originate): `submit`, the request's `Transmit`, `frame` of the answer,
//!   its `Outcome` dropped.
//!
//! Bytes cross the "wire" as copies made outside the count (a connection reader's buffer
//! in the runtime), so neither node frees or keeps the other's buffers.

#[path = "../../shm/tests/counting/mod.rs"]
mod counting;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use counting::{counted, uncounted};
use dmnode::app::{AnswerBody, OutgoingRequest, Reply, RequestId};
use dmnode::conn::ConnId;
use dmnode::endpoint::{Endpoint, Output, Seeds};
use dmproto::{Message, MessageWriter};

const M: u8 = 0x40;
/// Credit-Control (RFC 4006), application 4: Session-Id first in its ABNF, so the node
/// adds one to each request it originates.
const CCR: u32 = 272;
/// The duplicate cache's bound in this test: small, so the warm-up fills it and the rounds
/// counted run at the bound, where each new request evicts the oldest (as a busy node runs).
const DUP_ENTRIES: usize = 256;

fn config(text: &str) -> dmnode::config::Config {
    dmnode::config::parse(text).unwrap()
}

struct Pair {
    client: Endpoint,
    server: Endpoint,
    /// The client's connection to the server, and the server's side of it.
    c_conn: ConnId,
    s_conn: ConnId,
    now: Instant,
    next_id: u64,
    /// Allocations counted in each node's calls.
    client_allocs: u64,
    server_allocs: u64,
    /// Answers the server's application gave and outcomes the client reported.
    answered: u64,
    outcomes: u64,
    /// The lengths of the answers the server sent, in order.
    answer_lens: Vec<usize>,
}

impl Pair {
    fn new() -> Pair {
        let client = config(
            r#"
[node]
origin_host = "client.example.net"
origin_realm = "example.net"
[[applications]]
id = 4
[[peers]]
host = "server.example.net"
address = "127.0.0.2"
port = 4001
"#,
        );
        let server = config(&format!(
            r#"
[node]
origin_host = "server.example.net"
origin_realm = "example.net"
[[applications]]
id = 4
[limits]
dup_cache_entries = {DUP_ENTRIES}
[[peers]]
host = "client.example.net"
mode = "accept"
"#
        ));
        let dict = dmproto::dict::Dictionary::builtin();
        let seeds = |i: u64| Seeds {
            start_secs: 1_700_000_000,
            start_micros: 0,
            random: 77 + i,
        };
        let mut p = Pair {
            client: Endpoint::new(client, dict, seeds(0)),
            server: Endpoint::new(server, dict, seeds(1)),
            c_conn: ConnId(0),
            s_conn: ConnId(0),
            now: Instant::now(),
            next_id: 0,
            client_allocs: 0,
            server_allocs: 0,
            answered: 0,
            outcomes: 0,
            answer_lens: Vec::new(),
        };
        p.client.start(p.now);
        p.run();
        assert!(
            p.client.status().iter().all(|s| s.usable),
            "{:?}",
            p.client.status()
        );
        p
    }

    /// Moves every output between the nodes until both are quiet; what each node's calls
    /// allocate is counted (the test's own bookkeeping is not).
    fn run(&mut self) {
        let now = self.now;
        for _ in 0..1000 {
            let mut busy = false;
            loop {
                let (out, n) = counted(|| self.client.poll_output());
                self.client_allocs += n;
                let Some(out) = out else { break };
                busy = true;
                self.client_output(out);
            }
            loop {
                let (out, n) = counted(|| self.server.poll_output());
                self.server_allocs += n;
                let Some(out) = out else { break };
                busy = true;
                match out {
                    Output::Transmit { bytes, .. } => {
                        self.answer_lens.push(bytes.len());
                        let wire = wire(&bytes);
                        drop(bytes);
                        let c = self.c_conn;
                        let (_, n) = counted(|| self.client.frame(c, wire, now));
                        self.client_allocs += n;
                    }
                    Output::Deliver { token, request } => {
                        // The application (not the node): its answer's AVPs, built outside
                        // the count as the seam hands them over (an arena slice).
                        let reply = uncounted(|| Reply::Answer(answer_body(&request.message)));
                        drop(request);
                        self.answered += 1;
                        let (_, n) = counted(|| self.server.reply(token, &reply, now));
                        self.server_allocs += n;
                    }
                    Output::Opened { .. } => {}
                    other => panic!("server: {other:?}"),
                }
            }
            if !busy {
                return;
            }
        }
        panic!("never quiet");
    }

    fn client_output(&mut self, out: Output) {
        let now = self.now;
        match out {
            Output::Connect { conn, .. } => {
                self.c_conn = conn;
                // The connections' local address: the CER and CEA carry it as
                // Host-IP-Address, which their ABNF requires and the peer validates.
                let local = Some(std::net::IpAddr::from([127, 0, 0, 1]));
                self.s_conn = self.server.accept(local, None, None, now).unwrap();
                assert!(self.client.connected(conn, Some(local), now));
            }
            Output::Transmit { bytes, .. } => {
                let wire = wire(&bytes);
                drop(bytes);
                let s = self.s_conn;
                let (_, n) = counted(|| self.server.frame(s, wire, now));
                self.server_allocs += n;
            }
            Output::Outcome { result, .. } => {
                let m = result.expect("answered");
                assert_eq!(m.find_u32(268, 0), Some(2001));
                self.outcomes += 1;
            }
            Output::Opened { .. } => {}
            other => panic!("client: {other:?}"),
        }
    }

    /// One round: `batch` requests submitted, sent, answered, their outcomes reported.
    fn round(&mut self, avps: &Bytes, batch: u32) {
        let now = self.now;
        for _ in 0..batch {
            self.next_id += 1;
            let id = RequestId(self.next_id);
            let req = OutgoingRequest {
                app_id: 4,
                cmd_code: CCR,
                avps: avps.clone(),
                timeout: None,
            };
            let (_, n) = counted(|| self.client.submit(req, id, now));
            self.client_allocs += n;
        }
        self.run();
        self.now += Duration::from_millis(1);
    }
}

/// `bytes` as a connection reader hands a frame over: a slice of its shared read buffer
/// (cloning it costs a reference count, as in the runtime).
fn wire(bytes: &[u8]) -> Bytes {
    let mut read = BytesMut::with_capacity(bytes.len());
    read.extend_from_slice(bytes);
    read.split().freeze()
}

/// The CCR's own AVPs, as the seam hands them to the node (the node adds Session-Id,
/// Origin-*, Destination-Realm, Auth-Application-Id).
fn ccr_avps() -> Bytes {
    let mut w = MessageWriter::avps_only();
    w.str(461, M, 0, "32251@3gpp.org");
    w.u32(416, M, 0, 1);
    w.u32(415, M, 0, 0);
    w.finish().unwrap()
}

/// What a script answers: Result-Code and the request's CC-Request-Type and -Number.
fn answer_body(req: &Message) -> AnswerBody {
    let mut w = MessageWriter::avps_only();
    w.u32(268, M, 0, 2001);
    w.u32(416, M, 0, 1);
    w.u32(415, M, 0, req.find_u32(415, 0).unwrap_or(0));
    AnswerBody {
        avps: w.finish().unwrap(),
        is_error: false,
    }
}

/// The allocations [`dmnode::arena::Arena`] makes for answers of these lengths, one after
/// another: a chunk (its buffer, and the shared header its first split makes) whenever
/// less than `ROOM` is left; none for a message that fits.
fn arena_allocations(lens: &[usize], mut left: usize) -> (u64, usize) {
    let mut allocs = 0;
    for &l in lens {
        if left < dmnode::arena::ROOM {
            allocs += 2;
            left = dmnode::arena::CHUNK;
        }
        left -= l;
    }
    (allocs, left)
}

/// Counts `rounds` rounds of `batch` requests each way after `warmup` rounds: the server's
/// allocations must be its answer chunks' and nothing else, the client's none.
fn count(batch: u32, warmup: u32, rounds: u32) {
    let mut p = Pair::new();
    let avps = ccr_avps();
    for _ in 0..warmup {
        p.round(&avps, batch);
    }
    assert_eq!(p.outcomes, u64::from(warmup * batch));
    // Where the chunk being written stands after the warm-up.
    let (_, left) = arena_allocations(&p.answer_lens, 0);
    let warm = p.answer_lens.len();
    p.client_allocs = 0;
    p.server_allocs = 0;
    for _ in 0..rounds {
        p.round(&avps, batch);
    }
    let n = u64::from(rounds * batch);
    assert_eq!(p.outcomes, u64::from((warmup + rounds) * batch));
    assert_eq!(p.answered, p.outcomes);
    let (chunks, _) = arena_allocations(&p.answer_lens[warm..], left);
    println!(
        "{n} requests each way, {batch} in flight: server (incoming) {} allocations ({} of them \
         answer chunks), client (originate) {}",
        p.server_allocs, chunks, p.client_allocs
    );
    // The server: the answers' chunks and nothing else (before the arena: two per answer,
    // the buffer and its shared header; and a Vec for the reply's Result-Code).
    assert_eq!(p.server_allocs, chunks, "server, {n} requests");
    assert!(
        chunks * 40 < n,
        "{chunks} chunk allocations for {n} answers"
    );
    // The client: nothing (before: 9 per request — the request's buffer and its shared
    // header, the header again at its hop-by-hop stamp, the Session-Id, the router's realm
    // copy, candidate list and round-robin key, the list of peers tried).
    assert_eq!(p.client_allocs, 0, "client, {n} requests");
}

#[test]
fn a_node_allocates_nothing_per_message_but_its_answer_chunks() {
    count(8, 2000, 1000);
}

/// As the benchmarks run (100 in flight): the reply deadlines of 100 delivered requests
/// (a B-tree allocated a node about every sixth request there) and 100 requests pending.
#[test]
fn with_100_in_flight_too() {
    count(100, 200, 100);
}
