//! The node's network input end to end, without sockets: byte streams of several fake
//! connections go through the framer (with the pre-CER size limit, then the open one) into
//! the sans-IO core — CER/CEA gate, peer state machines, watchdog, routing, answers — with
//! time passed in. Shared by the `node` fuzz target and the corpus replay in
//! `node/tests/fuzz_corpus.rs`.
//!
//! The input is a little program; each step is one op byte and its operands:
//! - accept a connection from 192.0.2.`b` (`.10` is the configured peer's address);
//! - feed `n` bytes of the input to connection `c`;
//! - feed a ready-made message (CER, DWR, CCR, DPR, CEA, DWA) to connection `c`, so the
//!   fuzzer reaches the open state without having to invent a valid CER;
//! - let time pass (timers: CER timeout, watchdog, reply timeout, pending expiry);
//! - close connection `c` (the peer hung up);
//! - answer or drop a request delivered to the application.
//!
//! Invariants checked on every output: bytes sent are one well-formed Diameter message for
//! a connection that exists; a connection closed by the core gets nothing more; every
//! delivered request is answered at most once.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dmnode::app::{AnswerBody, Reply};
use dmnode::endpoint::{Endpoint, Output, Seeds};
use dmnode::peer::ConnId;
use dmproto::dict::Dictionary;
use dmproto::{samples, Framer, Message, MessageWriter, Validator};

const CONFIG: &str = r#"
[node]
origin_host = "ocs.example.net"
origin_realm = "ims.example.net"
allow_unknown_peers = true
[[applications]]
id = 4
[[peers]]
host = "scscf.ims.example.net"
address = "192.0.2.10"
mode = "accept"
[timers]
tw = "6s"
cer_timeout = "2s"
answer_timeout = "2s"
[limits]
max_pending_connections = 4
max_connections_per_source = 2
max_connections = 8
max_message_size = 65536
"#;

/// What does not depend on the input, built once per process: the parsed configuration and
/// the compiled dictionary (compiling it was ~250 µs of the ~270 µs an input cost, which kept
/// the target near 140 executions/s with ASan). Both are read-only to the endpoint, so inputs
/// stay independent: every input gets a fresh `Endpoint` and fresh connections.
struct Fixed {
    config: dmnode::config::Config,
    validator: Arc<Validator<'static>>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| Fixed {
        config: match dmnode::config::parse(CONFIG) {
            Ok(c) => c,
            Err(e) => panic!("harness config: {e:?}"),
        },
        validator: Arc::new(Validator::new(Dictionary::builtin())),
    })
}

struct Conn {
    framer: Framer,
    open: bool,
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn canned(kind: u8) -> Bytes {
    match kind % 7 {
        0 => samples::cer(),
        1 => samples::dwr(),
        2 => samples::ro_ccr(),
        3 => samples::cea(),
        4 => {
            // DPR (RFC 6733 §5.4.1), Disconnect-Cause REBOOTING.
            let mut w = MessageWriter::with_buffer(
                BytesMut::new(),
                dmproto::Header::request(282, 0, 0x77, 0x77),
            );
            w.str(264, 0x40, 0, "scscf.ims.example.net")
                .str(296, 0x40, 0, "ims.example.net")
                .u32(273, 0x40, 0, 0);
            w.finish().unwrap_or_default()
        }
        5 => {
            // A CER from an unknown host.
            let mut w = MessageWriter::with_buffer(
                BytesMut::new(),
                dmproto::Header::request(257, 0, 0x99, 0x99),
            );
            w.str(264, 0x40, 0, "stranger.example.org")
                .str(296, 0x40, 0, "example.org")
                .avp(257, 0x40, 0, &[0, 1, 192, 0, 2, 99])
                .u32(266, 0x40, 0, 0)
                .str(269, 0, 0, "fuzz")
                .u32(258, 0x40, 0, 4);
            w.finish().unwrap_or_default()
        }
        _ => samples::cx_uar(),
    }
}

/// Runs one input; panics only on an invariant violation.
pub fn node(data: &[u8]) {
    let fixed = fixed();
    let cfg = fixed.config.clone();
    let pre_cer = cfg.limits.max_message_size_before_cer as usize;
    let open_max = cfg.limits.max_message_size as usize;
    let mut core = Endpoint::with_validator(
        cfg,
        Dictionary::builtin(),
        fixed.validator.clone(),
        Seeds {
            start_secs: 1_700_000_000,
            start_micros: 0,
            random: 0x5eed,
        },
    );
    let mut now = Instant::now();
    core.start(now);
    let mut conns: HashMap<ConnId, Conn> = HashMap::new();
    let mut order: Vec<ConnId> = Vec::new();
    let mut closed: HashSet<ConnId> = HashSet::new();
    let mut tokens: Vec<u64> = Vec::new();
    let mut answered: HashSet<u64> = HashSet::new();
    let mut input = Input(data);
    let local = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));

    let pick = |order: &Vec<ConnId>, b: u8| -> Option<ConnId> {
        (!order.is_empty()).then(|| order[usize::from(b) % order.len()])
    };

    let mut steps = 0;
    while let Some(op) = input.byte() {
        steps += 1;
        if steps > 256 {
            break;
        }
        match op % 6 {
            0 => {
                let b = input.byte().unwrap_or(10);
                let source = IpAddr::V4(Ipv4Addr::new(192, 0, 2, b % 16));
                if let Some(conn) = core.accept(local, Some(source), None, now) {
                    conns.insert(
                        conn,
                        Conn {
                            framer: Framer::new(pre_cer),
                            open: false,
                        },
                    );
                    order.push(conn);
                }
            }
            1 | 2 => {
                let c = input.byte().unwrap_or(0);
                let bytes = if op % 6 == 1 {
                    let n = usize::from(input.byte().unwrap_or(0)) * 4;
                    Bytes::copy_from_slice(input.take(n))
                } else {
                    canned(input.byte().unwrap_or(0))
                };
                let Some(conn) = pick(&order, c) else {
                    continue;
                };
                let Some(st) = conns.get_mut(&conn) else {
                    continue;
                };
                let mut frames = Vec::new();
                let mut error = None;
                match st.framer.feed(&bytes) {
                    Err(e) => error = Some(e),
                    Ok(()) => loop {
                        match st.framer.next_frame() {
                            Ok(Some(f)) => frames.push(f),
                            Ok(None) => break,
                            Err(e) => {
                                error = Some(e);
                                break;
                            }
                        }
                    },
                }
                for f in frames {
                    core.frame(conn, f, now);
                }
                if let Some(e) = error {
                    core.frame_error(conn, e, now);
                }
            }
            3 => {
                let ms = u64::from(input.byte().unwrap_or(0)) * 50;
                now += Duration::from_millis(ms);
                core.handle_timeout(now);
            }
            4 => {
                let c = input.byte().unwrap_or(0);
                if let Some(conn) = pick(&order, c) {
                    if conns.remove(&conn).is_some() {
                        order.retain(|x| *x != conn);
                        closed.insert(conn);
                        core.closed(conn, now);
                    }
                }
            }
            5 => {
                let how = input.byte().unwrap_or(0);
                if let Some(i) = (!tokens.is_empty()).then(|| usize::from(how) % tokens.len()) {
                    let token = tokens.swap_remove(i);
                    let reply = if how & 1 == 0 {
                        Reply::Unanswered
                    } else {
                        let mut avps = BytesMut::new();
                        let mut w = MessageWriter::with_buffer(
                            BytesMut::new(),
                            dmproto::Header::request(272, 4, 0, 0).answer(),
                        );
                        w.u32(268, 0x40, 0, if how & 2 == 0 { 2001 } else { 5012 });
                        if let Ok(m) = w.finish_buf() {
                            avps.extend_from_slice(m.get(20..).unwrap_or(&[]));
                        }
                        Reply::Answer(AnswerBody {
                            avps: avps.freeze(),
                            is_error: how & 4 != 0,
                        })
                    };
                    core.reply(token, &reply, now);
                }
            }
            _ => {}
        }
        while let Some(out) = core.poll_output() {
            match out {
                Output::Transmit { conn, bytes } => {
                    assert!(
                        !closed.contains(&conn),
                        "transmit on a connection already closed"
                    );
                    let m = Message::decode(bytes.clone());
                    assert!(m.is_ok(), "the node sent a malformed message: {m:?}");
                    assert!(bytes.len() <= open_max.max(pre_cer) + 4096);
                }
                // No peer of the harness uses in-band TLS; a handshake would fail here.
                Output::Close { conn } | Output::StartTls { conn, .. } => {
                    if conns.remove(&conn).is_some() {
                        order.retain(|x| *x != conn);
                        closed.insert(conn);
                        core.closed(conn, now);
                    }
                }
                Output::Opened { conn } => {
                    if let Some(st) = conns.get_mut(&conn) {
                        st.open = true;
                        st.framer.set_max_message_len(open_max);
                    }
                }
                Output::Connect { conn, .. } => {
                    core.connected(conn, None, now);
                }
                Output::Deliver { token, .. } => {
                    assert!(answered.insert(token), "token delivered twice");
                    tokens.push(token);
                }
                // The harness submits no requests of its own.
                Output::Outcome { .. } => {}
                // Its later reply to a withdrawn token is ignored by the core.
                Output::Withdrawn { .. } => {}
            }
        }
    }
}
