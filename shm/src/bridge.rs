//! The bridge's side of the segment: accepting workers, dispatching incoming
//! requests, collecting replies and outgoing requests, delivering answers.
//!
//! Nothing here blocks or spawns threads. The driver (the bridge's tokio
//! layer, or [`crate::reference`]'s poll loop) watches these descriptors:
//!
//! * [`Bridge::listener_fd`] readable -> [`Bridge::accept_all`], which
//!   returns the new slots whose [`Bridge::worker_fd`] to watch from now on;
//! * [`Bridge::worker_fd`] readable -> [`Bridge::service`] for that slot,
//!   which turns doorbells, control messages, ring records and EOF into
//!   [`BridgeEvent`]s, and returns whether it stopped early (budget) so the
//!   driver calls it again without waiting for the fd.
//!
//! Both are plain raw descriptors, so `tokio::io::unix::AsyncFd` can wrap
//! them (after `service` returns `false` the ring's "bridge sleeps" flag is
//! armed, so the next record comes with a doorbell that makes the fd
//! readable again).
//!
//! Exactly-once bookkeeping lives here, per slot: the tokens handed to a
//! worker and not yet replied, and the handles of its outgoing requests not
//! yet answered. When the worker's connection ends both lists come back in
//! [`BridgeEvent::WorkerGone`], so the bridge answers each held request once
//! (5012) and drops the answers it would have delivered.

use crate::control::{refusal, Conn, Ctl, Listener, Recv, MAX_CONTROL_MSG};
use crate::error::{Error, Result};
use crate::record::{self, Answer, IncomingRequest, Record, ReplyStatus};
use crate::ring::{Consumer, Producer, PushError};
use crate::segment::{CreateOptions, Geometry, RingId, Segment, ShmRing, WIRE_VERSION};
use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;

/// Index of a worker slot in the segment.
pub type SlotId = u32;

/// Where and how big.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The control socket workers connect to.
    pub control_path: PathBuf,
    /// The segment file (normally under `/dev/shm`).
    pub segment_path: PathBuf,
    /// Slots, ring size, maximum message.
    pub geometry: Geometry,
    /// Group that may attach too (files become 0660); owner-only if `None`.
    pub group: Option<u32>,
    /// Most outgoing requests one worker may have unanswered; bounds the
    /// answers the bridge may have to hold when that worker's answer ring is
    /// full.
    pub max_in_flight: u32,
    /// Records handled per [`Bridge::service`] call before yielding.
    pub service_budget: u32,
    /// Wire version announced; only tests change it (to check that a
    /// mismatched library is refused).
    #[doc(hidden)]
    pub wire_version: u32,
}

impl BridgeConfig {
    /// Defaults: 32 slots, 256 KiB rings, 64 KiB messages.
    pub fn new(control_path: impl Into<PathBuf>, segment_path: impl Into<PathBuf>) -> BridgeConfig {
        BridgeConfig {
            control_path: control_path.into(),
            segment_path: segment_path.into(),
            geometry: Geometry {
                slots: 32,
                ring_bytes: 256 * 1024,
                max_msg: 64 * 1024,
            },
            group: None,
            max_in_flight: 4096,
            service_budget: 1024,
            wire_version: WIRE_VERSION,
        }
    }
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// A worker registered and got `slot`.
    WorkerAttached {
        slot: SlotId,
        pid: u32,
        name: String,
    },
    /// A connection was turned away (version mismatch, no free slot, ...).
    WorkerRefused { pid: u32, reason: String },
    /// The worker declared the events it serves (replaces earlier lists).
    Handles { slot: SlotId, names: Vec<String> },
    /// A worker replied to `token`.
    Reply {
        slot: SlotId,
        token: u64,
        status: ReplyStatus,
        avps_json: Vec<u8>,
        error: String,
    },
    /// A worker wants a request sent; answer with [`Bridge::push_answer`].
    Request {
        slot: SlotId,
        handle: u64,
        app_id: u32,
        cmd_code: u32,
        timeout_ms: u32,
        avps_json: Vec<u8>,
    },
    /// Something odd but survivable (a reply to an unknown token, ...).
    Warning { slot: SlotId, message: String },
    /// The worker is gone (EOF: it died or detached; or it broke the
    /// protocol and was dropped). `tokens` were handed to it and never
    /// replied: each needs exactly one 5012 answer. `handles` were its
    /// outgoing requests still unanswered: drop their answers.
    WorkerGone {
        slot: SlotId,
        pid: u32,
        name: String,
        tokens: Vec<u64>,
        handles: Vec<u64>,
        reason: String,
    },
}

/// Where an incoming request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Queued to `slot` under `token`, raising `event`.
    Sent {
        slot: SlotId,
        token: u64,
        event: String,
    },
    /// Workers are attached but none serves this command: answer 3001.
    Unhandled,
    /// Workers serve it but every ring is full: answer 3004.
    Busy,
    /// No worker is attached at all: answer 3004.
    NoWorker,
    /// The request can never fit a ring (larger than max_msg): answer 5012
    /// (or 3004) and log.
    TooBig { len: usize, max: usize },
}

/// Public view of one attached worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub slot: SlotId,
    pub pid: u32,
    pub name: String,
    pub handles: Vec<String>,
    /// Incoming requests handed over and not replied yet.
    pub outstanding: usize,
    /// Its outgoing requests not answered yet.
    pub in_flight: usize,
    /// Answers waiting for room in its answer ring.
    pub queued_answers: usize,
}

struct Attached {
    // Rings first: dropped before the connection (order of fields).
    req_tx: Producer<ShmRing>,
    ans_tx: Producer<ShmRing>,
    rx: Consumer<ShmRing>,
    conn: Conn,
    pid: u32,
    name: String,
    handles: Vec<String>,
    catch_all: bool,
    tokens: HashSet<u64>,
    in_flight: HashSet<u64>,
    overflow: VecDeque<Vec<u8>>,
}

enum Slot {
    Free,
    /// Connected, Hello not read yet.
    Handshaking(Conn, std::time::Instant),
    Attached(Box<Attached>),
    /// Dropped for breaking the protocol while possibly still alive: never
    /// reused by this bridge instance, so a confused worker cannot write
    /// into a ring a new worker owns.
    Quarantined,
}

/// The bridge's end of one segment. Dropping it closes every worker's
/// connection (they see EOF and fail fast until a new bridge appears) and
/// removes the segment file and socket.
pub struct Bridge {
    cfg: BridgeConfig,
    listener: Listener,
    segment: Segment,
    slots: Vec<Slot>,
    token_tag: u64,
    next_seq: u64,
    rr: u32,
    buf: Vec<u8>,
    enc: Vec<u8>,
    ctl: Vec<u8>,
    status_json: String,
    /// Refused connections kept open until the worker has read the reason
    /// (closing a socket whose Hello is still unread would make the worker
    /// see ECONNRESET instead of the Refused message).
    refusing: VecDeque<(Conn, std::time::Instant)>,
}

fn normalize(name: &str) -> &str {
    name.strip_prefix("E_DM_").unwrap_or(name)
}

fn is_catch_all(name: &str) -> bool {
    matches!(normalize(name), "*" | "REQUEST")
}

impl Bridge {
    /// Creates the segment (new generation) and binds the control socket.
    pub fn create(cfg: BridgeConfig) -> Result<Bridge> {
        cfg.geometry.validate()?;
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        let segment = Segment::create(&CreateOptions {
            path: cfg.segment_path.clone(),
            geometry: cfg.geometry,
            group: cfg.group,
            generation,
            version: cfg.wire_version,
        })?;
        let listener = match Listener::bind(&cfg.control_path, cfg.group) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(&cfg.segment_path);
                return Err(e);
            }
        };
        let slots = (0..cfg.geometry.slots).map(|_| Slot::Free).collect();
        Ok(Bridge {
            token_tag: (generation & 0xFF_FFFF) << 40,
            cfg,
            listener,
            segment,
            slots,
            next_seq: 0,
            rr: 0,
            buf: Vec::new(),
            enc: Vec::new(),
            ctl: vec![0; MAX_CONTROL_MSG],
            status_json: String::from("{}"),
            refusing: VecDeque::new(),
        })
    }

    /// This instance's generation (changes on every start).
    pub fn generation(&self) -> u64 {
        self.segment.generation()
    }

    /// The configuration in force.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// Readable when workers are connecting.
    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// The descriptor of a connected slot (handshaking or attached).
    pub fn worker_fd(&self, slot: SlotId) -> Option<RawFd> {
        match self.slots.get(slot as usize)? {
            Slot::Handshaking(c, _) => Some(c.as_raw_fd()),
            Slot::Attached(a) => Some(a.conn.as_raw_fd()),
            Slot::Free | Slot::Quarantined => None,
        }
    }

    /// A duplicate of [`Bridge::worker_fd`] owned by the caller, for async
    /// runtimes: wrap it in `tokio::io::unix::AsyncFd` and drop it on the
    /// slot's [`BridgeEvent::WorkerGone`]. Owning a duplicate means the
    /// descriptor number cannot be reused by a new connection while the
    /// runtime still has the old one registered.
    pub fn worker_fd_dup(&self, slot: SlotId) -> Option<std::os::fd::OwnedFd> {
        let fd = self.worker_fd(slot)?;
        // SAFETY: fd is open (owned by the slot's connection) for this call.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        borrowed.try_clone_to_owned().ok()
    }

    /// The JSON a worker gets back from `dmb_status_json` under `"bridge"`
    /// (peers, states, counters: whatever the bridge wants to show).
    pub fn set_status_json(&mut self, json: String) {
        self.status_json = json;
    }

    /// Accepts every pending connection. Returns the slots to watch from
    /// now on (each is readable once its Hello arrives). Connections beyond
    /// the slot count are refused with a reason.
    pub fn accept_all(&mut self, events: &mut Vec<BridgeEvent>) -> Result<Vec<SlotId>> {
        let mut new = Vec::new();
        while let Some(conn) = self
            .listener
            .accept()
            .map_err(|e| Error::io("accepting a worker", e))?
        {
            match self.slots.iter().position(|s| matches!(s, Slot::Free)) {
                Some(i) => {
                    if let Some(s) = self.slots.get_mut(i) {
                        *s = Slot::Handshaking(conn, std::time::Instant::now());
                        new.push(i as SlotId);
                    }
                }
                None => {
                    let reason = format!(
                        "all {} worker slots are in use; raise the bridge's shm slots setting",
                        self.cfg.geometry.slots
                    );
                    let pid = conn.peer_cred().map(|c| c.pid as u32).unwrap_or(0);
                    let _ = conn.send_ctl(
                        &Ctl::Refused {
                            code: refusal::NO_SLOT,
                            reason: reason.clone(),
                        },
                        None,
                    );
                    events.push(BridgeEvent::WorkerRefused { pid, reason });
                    self.linger(conn);
                }
            }
        }
        Ok(new)
    }

    /// Keeps a refused connection until the worker closes it (or a while),
    /// bounded; swept on every accept and handshake expiry.
    fn linger(&mut self, conn: Conn) {
        if self.refusing.len() >= 64 {
            self.refusing.pop_front();
        }
        self.refusing.push_back((conn, std::time::Instant::now()));
        self.sweep_refusing(std::time::Instant::now());
    }

    fn sweep_refusing(&mut self, now: std::time::Instant) {
        let ctl = &mut self.ctl;
        self.refusing.retain(|(conn, since)| {
            loop {
                match conn.recv(ctl) {
                    Ok(Recv::Msg(..)) => continue, // the Hello: drained
                    Ok(Recv::WouldBlock) => break,
                    Ok(Recv::Eof) | Err(_) => return false,
                }
            }
            now.saturating_duration_since(*since) < std::time::Duration::from_secs(2)
        });
    }

    /// Frees slots whose connection sent no Hello within `max_age` of being
    /// accepted (a stuck or hostile local client must not hold a slot). Call
    /// it from a periodic timer, e.g. every second with `max_age` 2 s.
    pub fn expire_handshakes(
        &mut self,
        now: std::time::Instant,
        max_age: std::time::Duration,
        events: &mut Vec<BridgeEvent>,
    ) {
        self.sweep_refusing(now);
        for s in self.slots.iter_mut() {
            if let Slot::Handshaking(conn, since) = s {
                if now.saturating_duration_since(*since) >= max_age {
                    let pid = conn.peer_cred().map(|c| c.pid as u32).unwrap_or(0);
                    let reason = format!("no registration within {max_age:?} of connecting");
                    let _ = conn.send_ctl(
                        &Ctl::Refused {
                            code: refusal::OTHER,
                            reason: reason.clone(),
                        },
                        None,
                    );
                    events.push(BridgeEvent::WorkerRefused { pid, reason });
                    *s = Slot::Free;
                }
            }
        }
    }

    /// Handles everything pending on `slot`: control messages (Hello,
    /// handles, status queries, doorbells, EOF) and up to the service budget
    /// of ring records. Returns true if it stopped because of the budget or
    /// found more work after arming its sleep flag: call again soon.
    pub fn service(&mut self, slot: SlotId, events: &mut Vec<BridgeEvent>) -> bool {
        match self.slots.get(slot as usize) {
            Some(Slot::Handshaking(..)) => {
                self.handshake(slot, events);
                false
            }
            Some(Slot::Attached(_)) => match self.service_attached(slot, events) {
                Ok(more) => more,
                Err((reason, quarantine)) => {
                    self.drop_worker(slot, reason, quarantine, events);
                    false
                }
            },
            _ => false,
        }
    }

    fn handshake(&mut self, slot: SlotId, events: &mut Vec<BridgeEvent>) {
        let Some(Slot::Handshaking(conn, _)) = self.slots.get(slot as usize) else {
            return;
        };
        let pid_cred = conn.peer_cred().map(|c| c.pid as u32).unwrap_or(0);
        let n = match conn.recv(&mut self.ctl) {
            Ok(Recv::WouldBlock) => return,
            Ok(Recv::Msg(n, _)) => n,
            Ok(Recv::Eof) | Err(_) => {
                self.free(slot);
                return;
            }
        };
        let msg = Ctl::decode(self.ctl.get(..n).unwrap_or(&[]));
        let (verdict, name) = match msg {
            Ok(Ctl::Hello { version, name, .. }) if version == self.cfg.wire_version => {
                (None, name)
            }
            Ok(Ctl::Hello { version, .. }) => (
                Some((
                    refusal::VERSION,
                    Error::Version {
                        ours: self.cfg.wire_version,
                        theirs: version,
                        detail: "bridge refused the library's Hello",
                    }
                    .to_string(),
                )),
                String::new(),
            ),
            Ok(other) => (
                Some((refusal::OTHER, format!("expected Hello, got {other:?}"))),
                String::new(),
            ),
            Err(e) => (Some((refusal::OTHER, e.to_string())), String::new()),
        };
        if let Some((code, reason)) = verdict {
            let _ = conn.send_ctl(
                &Ctl::Refused {
                    code,
                    reason: reason.clone(),
                },
                None,
            );
            events.push(BridgeEvent::WorkerRefused {
                pid: pid_cred,
                reason,
            });
            self.free(slot);
            return;
        }
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let Slot::Handshaking(conn, _) = std::mem::replace(s, Slot::Free) else {
            return;
        };
        self.segment.reset_slot(slot, pid_cred);
        let max = self.cfg.geometry.max_msg as usize;
        let rings = (
            self.segment.ring(slot, RingId::Requests),
            self.segment.ring(slot, RingId::Answers),
            self.segment.ring(slot, RingId::ToBridge),
        );
        let (Some(rq), Some(an), Some(tb)) = rings else {
            return;
        };
        let welcome = Ctl::Welcome {
            version: self.cfg.wire_version,
            slot,
            generation: self.segment.generation(),
            max_msg: self.cfg.geometry.max_msg,
            segment_path: self.segment.path().display().to_string(),
        };
        let seg_file = match std::fs::File::options()
            .read(true)
            .write(true)
            .open(self.segment.path())
        {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("bridge cannot reopen its segment: {e}");
                let _ = conn.send_ctl(
                    &Ctl::Refused {
                        code: refusal::OTHER,
                        reason: reason.clone(),
                    },
                    None,
                );
                events.push(BridgeEvent::WorkerRefused {
                    pid: pid_cred,
                    reason,
                });
                return;
            }
        };
        // Arm "bridge sleeps" before the worker can publish anything, so its
        // first record comes with a doorbell.
        let mut rx = Consumer::new(tb, max);
        rx.prepare_sleep();
        if conn.send_ctl(&welcome, Some(seg_file.as_fd())).is_err() {
            return; // the worker went away during the handshake
        }
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        *s = Slot::Attached(Box::new(Attached {
            req_tx: Producer::new(rq, max),
            ans_tx: Producer::new(an, max),
            rx,
            conn,
            pid: pid_cred,
            name: name.clone(),
            handles: Vec::new(),
            catch_all: false,
            tokens: HashSet::new(),
            in_flight: HashSet::new(),
            overflow: VecDeque::new(),
        }));
        events.push(BridgeEvent::WorkerAttached {
            slot,
            pid: pid_cred,
            name,
        });
    }

    fn free(&mut self, slot: SlotId) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Slot::Free;
        }
    }

    fn drop_worker(
        &mut self,
        slot: SlotId,
        reason: String,
        quarantine: bool,
        events: &mut Vec<BridgeEvent>,
    ) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let old = std::mem::replace(
            s,
            if quarantine {
                Slot::Quarantined
            } else {
                Slot::Free
            },
        );
        if let Slot::Attached(a) = old {
            let a = *a;
            let mut tokens: Vec<u64> = a.tokens.into_iter().collect();
            tokens.sort_unstable();
            let mut handles: Vec<u64> = a.in_flight.into_iter().collect();
            handles.sort_unstable();
            if !quarantine {
                self.segment.reset_slot(slot, 0);
            }
            events.push(BridgeEvent::WorkerGone {
                slot,
                pid: a.pid,
                name: a.name,
                tokens,
                handles,
                reason,
            });
        }
    }

    /// Err((reason, quarantine)) when the worker must be dropped.
    fn service_attached(
        &mut self,
        slot: SlotId,
        events: &mut Vec<BridgeEvent>,
    ) -> Result<bool, (String, bool)> {
        let max_in_flight = self.cfg.max_in_flight as usize;
        let budget = self.cfg.service_budget.max(1);
        let Some(Slot::Attached(a)) = self.slots.get_mut(slot as usize) else {
            return Ok(false);
        };
        // Control messages.
        loop {
            match a.conn.recv(&mut self.ctl) {
                Ok(Recv::WouldBlock) => break,
                Ok(Recv::Eof) => {
                    return Err((
                        "connection closed (worker exited or detached)".into(),
                        false,
                    ))
                }
                Err(e) => return Err((format!("control socket error: {e}"), true)),
                Ok(Recv::Msg(n, _fd)) => match Ctl::decode(self.ctl.get(..n).unwrap_or(&[])) {
                    Ok(Ctl::Doorbell) => {}
                    Ok(Ctl::Handles { names }) => {
                        a.catch_all = names.iter().any(|n| is_catch_all(n));
                        a.handles = names.iter().map(|n| normalize(n).to_owned()).collect();
                        events.push(BridgeEvent::Handles { slot, names });
                    }
                    Ok(Ctl::StatusQuery) => {
                        let mut json = self.status_json.clone();
                        if json.len() > MAX_CONTROL_MSG - 16 {
                            json = String::from("{\"error\":\"status too large\"}");
                        }
                        let _ = a.conn.send_ctl(&Ctl::Status { json }, None);
                    }
                    Ok(other) => {
                        return Err((format!("unexpected control message {other:?}"), true))
                    }
                    Err(e) => return Err((e.to_string(), true)),
                },
            }
        }
        // Answers that waited for room.
        while let Some(rec) = a.overflow.front() {
            match a.ans_tx.push(&[rec]) {
                Ok(()) => {
                    a.overflow.pop_front();
                }
                Err(PushError::Full) => {
                    if !a.ans_tx.arm_space_wakeup(rec.len()) {
                        break;
                    }
                }
                Err(e) => return Err((e.to_string(), true)),
            }
        }
        if a.ans_tx.needs_wakeup() {
            a.conn.ring();
        }
        // Records from the worker.
        let mut done = 0;
        loop {
            if done >= budget {
                return Ok(true);
            }
            match a.rx.pop_into(&mut self.buf) {
                Err(e) => return Err((e.to_string(), true)),
                Ok(false) => {
                    if a.rx.space_wakeup_needed() {
                        a.conn.ring();
                    }
                    if a.rx.prepare_sleep() {
                        return Ok(false);
                    }
                    continue;
                }
                Ok(true) => done += 1,
            }
            match Record::decode(&self.buf) {
                Ok(Record::Reply(r)) => {
                    if a.tokens.remove(&r.token) {
                        events.push(BridgeEvent::Reply {
                            slot,
                            token: r.token,
                            status: r.status,
                            avps_json: r.avps_json.to_vec(),
                            error: r.error.to_owned(),
                        });
                    } else {
                        events.push(BridgeEvent::Warning {
                            slot,
                            message: format!(
                                "reply to unknown or already answered token {:#x} ignored",
                                r.token
                            ),
                        });
                    }
                }
                Ok(Record::Outgoing(r)) => {
                    if a.in_flight.len() >= max_in_flight {
                        return Err((
                            format!("more than {max_in_flight} requests in flight"),
                            true,
                        ));
                    }
                    if !a.in_flight.insert(r.handle) {
                        events.push(BridgeEvent::Warning {
                            slot,
                            message: format!("duplicate request handle {} ignored", r.handle),
                        });
                        continue;
                    }
                    events.push(BridgeEvent::Request {
                        slot,
                        handle: r.handle,
                        app_id: r.app_id,
                        cmd_code: r.cmd_code,
                        timeout_ms: r.timeout_ms,
                        avps_json: r.avps_json.to_vec(),
                    });
                }
                Ok(other) => {
                    return Err((format!("worker sent a bridge-only record {other:?}"), true))
                }
                Err(e) => return Err((e.to_string(), true)),
            }
        }
    }

    /// Hands an incoming request to the least-loaded worker serving `name`
    /// (the command's abbreviation like `PPR`, or its code), falling back to
    /// workers serving `E_DM_REQUEST`/`*`. `req.event` and `req.token` are
    /// filled in here.
    pub fn dispatch(&mut self, name: &str, req: &IncomingRequest<'_>) -> Dispatch {
        let name = normalize(name);
        let mut any_attached = false;
        let mut specific: Vec<(usize, u32, SlotId)> = Vec::new();
        let mut fallback: Vec<(usize, u32, SlotId)> = Vec::new();
        let n = self.slots.len() as u32;
        for (i, s) in self.slots.iter().enumerate() {
            if let Slot::Attached(a) = s {
                any_attached = true;
                let i = i as u32;
                let key = (a.tokens.len(), (i + n - self.rr % n) % n, i);
                if a.handles.iter().any(|h| h == name) {
                    specific.push(key);
                } else if a.catch_all {
                    fallback.push(key);
                }
            }
        }
        self.rr = self.rr.wrapping_add(1);
        if !any_attached {
            return Dispatch::NoWorker;
        }
        let (mut cands, event) = if !specific.is_empty() {
            (specific, format!("E_DM_{name}"))
        } else if !fallback.is_empty() {
            (fallback, String::from("E_DM_REQUEST"))
        } else {
            return Dispatch::Unhandled;
        };
        cands.sort_unstable();
        let token = self.token_tag | (self.next_seq & 0xFF_FFFF_FFFF);
        let rec = Record::Incoming(IncomingRequest {
            token,
            event: &event,
            ..req.clone()
        });
        rec.encode(&mut self.enc);
        for (_, _, slot) in cands {
            let Some(Slot::Attached(a)) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            match a.req_tx.push(&[&self.enc]) {
                Ok(()) => {
                    if a.req_tx.needs_wakeup() {
                        a.conn.ring();
                    }
                    a.tokens.insert(token);
                    self.next_seq += 1;
                    return Dispatch::Sent { slot, token, event };
                }
                Err(PushError::Full) => continue,
                Err(PushError::TooBig { len, max }) => return Dispatch::TooBig { len, max },
                Err(PushError::Corrupt) => continue, // noticed on the next service
            }
        }
        Dispatch::Busy
    }

    /// Delivers the outcome of a worker's outgoing request. Never loses it:
    /// if the answer ring is full it is queued (bounded by `max_in_flight`)
    /// and delivered when the worker frees space. Errors: the worker is gone
    /// or never sent this handle (drop the answer), or the answer is larger
    /// than the maximum (deliver a shorter error answer instead).
    pub fn push_answer(&mut self, slot: SlotId, answer: &Answer<'_>) -> Result<()> {
        let Some(Slot::Attached(a)) = self.slots.get_mut(slot as usize) else {
            return Err(Error::Detached(format!(
                "worker slot {slot} is not attached"
            )));
        };
        if !a.in_flight.contains(&answer.handle) {
            return Err(Error::Invalid(format!(
                "slot {slot} has no request with handle {}",
                answer.handle
            )));
        }
        Record::Answer(answer.clone()).encode(&mut self.enc);
        if self.enc.len() > a.ans_tx.max_record() {
            return Err(Error::TooBig {
                len: self.enc.len(),
                max: a.ans_tx.max_record(),
            });
        }
        a.in_flight.remove(&answer.handle);
        if a.overflow.is_empty() {
            match a.ans_tx.push(&[&self.enc]) {
                Ok(()) => {
                    if a.ans_tx.needs_wakeup() {
                        a.conn.ring();
                    }
                    return Ok(());
                }
                Err(PushError::Full) => {}
                Err(e) => return Err(e.into()),
            }
        }
        a.overflow.push_back(self.enc.clone());
        if a.ans_tx.arm_space_wakeup(self.enc.len()) {
            // Space appeared meanwhile; the next service flushes. Make sure
            // one happens by poking ourselves through the worker's doorbell
            // path is not possible, so flush right here.
            while let Some(rec) = a.overflow.front() {
                if a.ans_tx.push(&[rec]).is_err() {
                    break;
                }
                a.overflow.pop_front();
            }
            if a.ans_tx.needs_wakeup() {
                a.conn.ring();
            }
        }
        Ok(())
    }

    /// Attached workers, for status output.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Attached(a) => Some(WorkerInfo {
                    slot: i as SlotId,
                    pid: a.pid,
                    name: a.name.clone(),
                    handles: a.handles.clone(),
                    outstanding: a.tokens.len(),
                    in_flight: a.in_flight.len(),
                    queued_answers: a.overflow.len(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The event names served by at least one attached worker (for the CER:
    /// the bridge advertises the applications of these commands).
    pub fn handled_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Attached(a) => Some(a.handles.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.segment.path());
    }
}

/// Re-exported for drivers building answers.
pub use record::class;
