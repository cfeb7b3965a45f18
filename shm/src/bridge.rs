//! The bridge's side of the seam: admitting workers, dispatching incoming
//! requests, collecting replies and outgoing requests, delivering answers.
//!
//! Nothing here blocks or spawns threads. The driver (the bridge's tokio
//! layer, or [`crate::reference`]'s poll loop) watches these descriptors:
//!
//! * [`Bridge::listener_fd`] readable -> [`Bridge::accept_all`], which
//!   admits and registers workers and returns the new slots whose
//!   [`Bridge::worker_fd`] to watch from now on;
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
//! # Admission (DESIGN §10: the local seam trusts only the SIP server)
//!
//! 1. On accept, the connecting process's credentials (SO_PEERCRED, taken by
//!    the kernel at `connect`, not claimed by the peer) are checked against
//!    [`PeerAllow`]: by default the bridge's own uid and the configured
//!    group. Anyone else is refused at once with the reason, before a byte
//!    of theirs is read.
//! 2. An admitted connection waits for its Hello *without holding a slot*:
//!    it sits in a bounded list of pending registrations
//!    ([`BridgeConfig::max_pending`], oldest evicted first) for at most
//!    [`BridgeConfig::handshake_timeout`]. Silent connections therefore
//!    cannot lock workers out of the slots; a real worker sends its Hello
//!    with its connect, and it is read before newer connections are taken.
//!    The listener and the pending connections share one epoll descriptor
//!    (that is what [`Bridge::listener_fd`] returns), so a Hello makes it
//!    readable like a new connection does.
//! 3. A Hello of the right version gets a free slot and a segment of its own:
//!    a sealed memfd holding only that worker's three rings
//!    ([`Segment::create_anonymous`]), passed with the Welcome (SCM_RIGHTS).
//!    No other worker, and no other local user, has a way to map it.
//!
//! Every refusal is a [`BridgeEvent::WorkerRefused`] with pid, uid, gid and
//! a [`RefusalCause`], and is counted in [`SeamCounters`].
//!
//! # Exactly once
//!
//! Per slot: the tokens handed to a worker and not yet replied, and the
//! handles of its outgoing requests not yet answered. When the worker's
//! connection ends both lists come back in [`BridgeEvent::WorkerGone`], so
//! the bridge answers each held request once (5012) and drops the answers it
//! would have delivered. A worker that breaks the protocol (garbage in its
//! rings or on its socket) is dropped the same way; its segment was its own,
//! so the slot is reused at once with a fresh one.
//!
//! A reply-to request is in nobody's in-flight set: per receiving attachment the bridge
//! counts the outcomes it owes ([`Bridge::accept_reply_to`], bounded like a sender's own
//! requests) until each is in that attachment's answers ring, and refuses more beyond the
//! bound; when the attachment leaves, the count goes with it and the outcomes still to come
//! are dropped ([`Bridge::push_reply_to`]: [`Error::Detached`]).

use crate::control::{
    prepare_runtime_dir, refusal, Conn, Ctl, Listener, Recv, RuntimeDir, MAX_CONTROL_MSG,
    RECV_BATCH,
};
use crate::error::{Error, Result};
use crate::record::{self, Answer, IncomingRequest, Payload, Record, ReplyStatus, ReplyTo};
use crate::ring::{Consumer, Producer, PushError};
use crate::segment::{Geometry, RingId, Segment, ShmRing, WIRE_VERSION};
use crate::times_board::ScriptTimesBoard;
use bytes::{Bytes, BytesMut};
use rustc_hash::FxHashSet;
use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Index of a worker slot.
pub type SlotId = u32;

/// Longest worker name accepted in a Hello (the library sends at most 256).
const MAX_WORKER_NAME: usize = 256;

/// A reply address ([`crate::worker::Worker::reply_address`]) names one attachment over
/// time: bits 63..32 the bridge instance's generation (its low 32 bits, so an address of a
/// previous instance is refused), bits 31..12 the slot's attach count (1..=2^20-1, wrapping
/// past 0: the same slot given to another worker gets another address), bits 11..0 the slot
/// (`segment::MAX_SLOTS` is 4096). Never 0 (the count is not), which means "none".
const ADDRESS_SLOT_BITS: u32 = 12;
const ADDRESS_SEQ_BITS: u32 = 20;

fn reply_address(generation: u64, seq: u32, slot: SlotId) -> u64 {
    ((generation & 0xFFFF_FFFF) << 32)
        | (u64::from(seq & ((1 << ADDRESS_SEQ_BITS) - 1)) << ADDRESS_SLOT_BITS)
        | u64::from(slot & ((1 << ADDRESS_SLOT_BITS) - 1))
}

/// The slot a reply address names (whether that attachment is still there is
/// [`Bridge::reply_target`]'s question), for log lines.
pub fn reply_address_slot(address: u64) -> SlotId {
    (address & ((1 << ADDRESS_SLOT_BITS) - 1)) as SlotId
}

/// Where a worker's outgoing request's outcome goes: back to the worker that sent it
/// ([`Bridge::push_answer`]), or to the attachment its reply-to address names
/// ([`Bridge::push_reply_to`]). [`Bridge::push_outcome`] takes either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerTo {
    /// The sender's slot.
    Sender(SlotId),
    /// A reply-to request's address and the sender's send stamp to echo.
    ReplyTo(ReplyTo),
}

impl AnswerTo {
    /// Where the outcome of a request `sender` took with `reply_to` goes.
    pub fn of(sender: SlotId, reply_to: Option<ReplyTo>) -> AnswerTo {
        reply_to.map_or(AnswerTo::Sender(sender), AnswerTo::ReplyTo)
    }

    /// The slot it names (for a reply-to address, whether that attachment is still there
    /// is [`Bridge::reply_target`]'s question), for log lines and counters.
    pub fn slot(&self) -> SlotId {
        match self {
            AnswerTo::Sender(slot) => *slot,
            AnswerTo::ReplyTo(to) => reply_address_slot(to.address),
        }
    }
}

/// What [`Bridge::accept_reply_to`] makes of a reply-to request the bridge took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyToCheck {
    /// Send it: its outcome is owed to the attachment in `slot` from now on, until
    /// [`Bridge::push_reply_to`] has put it in that attachment's answers ring (or dropped it:
    /// the attachment left), or [`Bridge::abandon_reply_to`] says it will not come.
    Accepted(SlotId),
    /// The address names no live attachment (it left, or the address is of a previous
    /// bridge): do not send it; there is nobody to tell.
    Gone,
    /// The attachment in `slot` is owed `owed` outcomes already, the bound
    /// ([`BridgeConfig::max_in_flight`]): do not send it; tell that attachment with
    /// [`Bridge::push_reply_to_refusal`] (a short not-sent outcome, dropped when its queue is
    /// long too).
    Full {
        /// The receiving attachment's slot.
        slot: SlotId,
        /// The outcomes it is owed (the bound).
        owed: usize,
    },
}

/// The size of the buffer the payloads of [`BridgeEvent::Reply`] and [`BridgeEvent::Request`]
/// are sliced from (issue 15 item 2: no allocation per message on the bridge's side of the
/// seam, in either direction).
///
/// Each payload is copied once out of the ring record into the arena and handed over as a
/// [`Bytes`] slice of it: a reference count, no allocation, and for a reply the slice can
/// become the answer's body without a copy, though the node consumes it in another task (a
/// free list the driver hands buffers back to could not get that one back). The arena is
/// rewound to its start whenever no slice of it is alive any more (checked at each
/// [`Bridge::service`], one atomic load), so in the steady state every record is written into
/// the same memory. When it fills while slices are still alive (replies the node has not
/// taken yet), a new buffer of this size (or of the record, if larger: at most `max_msg`) is
/// allocated and the old one is freed when its last slice is dropped.
///
/// The bound: the bridge holds one buffer of this size; older ones live only as long as the
/// replies and requests sliced from them, which are bounded by the requests in flight, so a
/// burst pins no memory once its messages are answered. 64 KiB: a few hundred typical
/// records (a reply or request of a few hundred bytes), one `max_msg` record by default.
pub const ARENA_BYTES: usize = 64 * 1024;

/// Who may attach: a connecting process is admitted if its uid (SO_PEERCRED)
/// is in `uids` or its gid (the effective gid the kernel reports, i.e. the
/// group a SIP server switches to with `-g`/`group=`) is in `gids`.
/// Supplementary group membership is deliberately not enough: it is what
/// lets a user reach a group-mode socket, not a statement that the user is
/// the SIP server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerAllow {
    /// Uids admitted as they are (typically the SIP server's user).
    pub uids: Vec<u32>,
    /// Effective gids admitted (the group the SIP server runs as).
    pub gids: Vec<u32>,
}

impl PeerAllow {
    /// Whether a process with these credentials may attach.
    pub fn permits(&self, uid: u32, gid: u32) -> bool {
        self.uids.contains(&uid) || self.gids.contains(&gid)
    }
}

/// Where and how big.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The control socket workers connect to. Its directory is created
    /// (0700, or 0750 with `group`) when missing: [`prepare_runtime_dir`].
    pub control_path: PathBuf,
    /// Names the per-worker segments (its last component, plus the slot,
    /// is the memfd's name in `/proc/<pid>/maps`). No file is created.
    pub segment_path: PathBuf,
    /// `slots`: most workers attached at once (nothing is reserved for a
    /// slot until a worker registers); ring size, maximum message.
    pub geometry: Geometry,
    /// Group that may attach too (the socket becomes 0660); owner-only if
    /// `None`.
    pub group: Option<u32>,
    /// Who may attach; `None`: the bridge's effective uid, plus `group`.
    pub allow: Option<PeerAllow>,
    /// How long an admitted connection may take to send its Hello.
    pub handshake_timeout: Duration,
    /// Most connections waiting to register at once (beyond: the oldest is
    /// refused). They hold no slot and no memory beyond the socket.
    pub max_pending: usize,
    /// Most outgoing requests one worker may have unanswered; bounds the
    /// answers the bridge may have to hold when that worker's answer ring is
    /// full. Also the most reply-to outcomes one attachment may be owed
    /// ([`Bridge::accept_reply_to`] says why the same number), and the length
    /// of its answers queue beyond which the short notices of reply-to requests
    /// refused for it are dropped ([`Bridge::push_reply_to_refusal`]).
    pub max_in_flight: u32,
    /// Records handled per [`Bridge::service`] call before yielding.
    pub service_budget: u32,
    /// Wire version announced; only tests change it (to check that a
    /// mismatched library is refused).
    #[doc(hidden)]
    pub wire_version: u32,
}

impl BridgeConfig {
    /// Defaults: 32 slots, 256 KiB rings, 64 KiB messages, only the
    /// bridge's own uid admitted, 2 s to register, 64 pending registrations.
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
            allow: None,
            handshake_timeout: Duration::from_secs(2),
            max_pending: 64,
            max_in_flight: 4096,
            service_budget: 1024,
            wire_version: WIRE_VERSION,
        }
    }

    /// The allow list in force: [`BridgeConfig::allow`], or by default the
    /// bridge's effective uid and `group`.
    pub fn effective_allow(&self) -> PeerAllow {
        match &self.allow {
            Some(a) => a.clone(),
            None => PeerAllow {
                // SAFETY: geteuid has no preconditions and cannot fail.
                uids: vec![unsafe { libc::geteuid() }],
                gids: self.group.into_iter().collect(),
            },
        }
    }

    /// Bytes of one worker's segment (header and three rings): what each
    /// attached worker costs in shared memory, at most (pages are touched
    /// as the rings are used).
    pub fn segment_bytes_per_worker(&self) -> u64 {
        Geometry {
            slots: 1,
            ..self.geometry
        }
        .segment_size()
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCause {
    /// Its uid/gid is not in the allow list.
    NotAllowed,
    /// The library speaks another wire version.
    Version,
    /// Every slot is taken.
    NoSlot,
    /// The first message was not a well-formed Hello.
    BadHello,
    /// No Hello within the handshake timeout.
    HandshakeTimeout,
    /// Evicted from a full list of pending registrations.
    PendingFull,
    /// The bridge could not set up the worker's segment.
    Internal,
}

impl RefusalCause {
    /// A short stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCause::NotAllowed => "not_allowed",
            RefusalCause::Version => "version",
            RefusalCause::NoSlot => "no_slot",
            RefusalCause::BadHello => "bad_hello",
            RefusalCause::HandshakeTimeout => "handshake_timeout",
            RefusalCause::PendingFull => "pending_full",
            RefusalCause::Internal => "internal",
        }
    }

    fn code(self) -> u32 {
        match self {
            RefusalCause::NotAllowed => refusal::NOT_ALLOWED,
            RefusalCause::Version => refusal::VERSION,
            RefusalCause::NoSlot => refusal::NO_SLOT,
            _ => refusal::OTHER,
        }
    }
}

/// The seam's counters since the bridge started: plain numbers, for the
/// status document and for metrics exporters ([`Bridge::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeamCounters {
    /// Connections admitted (credentials allowed).
    pub connections_admitted: u64,
    /// [`RefusalCause::NotAllowed`]: uid/gid not in the allow list (DESIGN §10: only the SIP
    /// server's processes attach); a non-zero value is someone else knocking.
    pub refused_not_allowed: u64,
    /// [`RefusalCause::Version`]: a library of another release; someone must upgrade one side.
    pub refused_version: u64,
    /// [`RefusalCause::NoSlot`]: more workers than `slots`; raise it or run fewer workers.
    pub refused_no_slot: u64,
    /// [`RefusalCause::BadHello`]: the first message was not a Hello (not a dmbridge library, or a
    /// broken one).
    pub refused_bad_hello: u64,
    /// [`RefusalCause::HandshakeTimeout`]: connected but sent no Hello in time.
    pub refused_handshake_timeout: u64,
    /// [`RefusalCause::PendingFull`]: evicted because too many connections were registering at
    /// once.
    pub refused_pending_full: u64,
    /// [`RefusalCause::Internal`]: the bridge could not create the worker's segment (memory, fds).
    pub refused_internal: u64,
    /// Connections that closed before registering (not refusals).
    pub handshakes_abandoned: u64,
    /// Workers that registered, over the bridge's life (a re-attaching worker counts again).
    pub workers_attached: u64,
    /// Workers whose connection ended (exit, crash, detach).
    pub workers_gone: u64,
    /// Workers dropped for breaking the protocol (garbage in their rings or
    /// on their socket); included in `workers_gone`.
    pub workers_dropped: u64,
    /// Shared memory of the attached workers' segments now (bytes).
    pub segment_bytes: u64,
}

impl SeamCounters {
    fn refused(&mut self, cause: RefusalCause) {
        let c = match cause {
            RefusalCause::NotAllowed => &mut self.refused_not_allowed,
            RefusalCause::Version => &mut self.refused_version,
            RefusalCause::NoSlot => &mut self.refused_no_slot,
            RefusalCause::BadHello => &mut self.refused_bad_hello,
            RefusalCause::HandshakeTimeout => &mut self.refused_handshake_timeout,
            RefusalCause::PendingFull => &mut self.refused_pending_full,
            RefusalCause::Internal => &mut self.refused_internal,
        };
        *c += 1;
    }

    /// All refusals together.
    pub fn refused_total(&self) -> u64 {
        self.refused_not_allowed
            + self.refused_version
            + self.refused_no_slot
            + self.refused_bad_hello
            + self.refused_handshake_timeout
            + self.refused_pending_full
            + self.refused_internal
    }
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEvent {
    /// A worker registered and got `slot`.
    WorkerAttached {
        /// The slot whose rings and socket are now this worker's.
        slot: SlotId,
        /// The worker's pid as the kernel reports it (SO_PEERCRED), not as it claims.
        pid: u32,
        /// The name from its Hello, for logs and status.
        name: String,
    },
    /// A connection was turned away; pid/uid/gid are the kernel's
    /// (SO_PEERCRED), `reason` is what the worker was told.
    WorkerRefused {
        /// Process id (SO_PEERCRED).
        pid: u32,
        /// User id (SO_PEERCRED), the one checked against [`PeerAllow`].
        uid: u32,
        /// Effective group id (SO_PEERCRED), the other one checked.
        gid: u32,
        /// Why, as a stable label for logs and metrics.
        cause: RefusalCause,
        /// The text sent to the worker in the Refused message.
        reason: String,
    },
    /// The worker declared the events it serves (replaces earlier lists).
    Handles {
        /// The worker that declared them.
        slot: SlotId,
        /// Command abbreviations, event names or `*` (see [`crate::control::Ctl::Handles`]).
        names: Vec<String>,
    },
    /// A worker replied to `token`.
    Reply {
        /// The worker that replied.
        slot: SlotId,
        /// The token its request was dispatched under ([`Dispatch::Sent`]); the driver looks up the
        /// Diameter request it stands for and answers it exactly once.
        token: u64,
        /// Whether the script answered, asked for an error answer, or sent an unusable reply
        /// (answer 5012 at once and log `error`).
        status: ReplyStatus,
        /// What `avps` holds: JSON, or AVPs the library encoded with the dictionary.
        form: Payload,
        /// The reply's AVPs, in the form `form` names: a slice of the bridge's record arena
        /// (no allocation per reply; see [`ARENA_BYTES`]), which can become the answer's body
        /// as it is.
        avps: Bytes,
        /// Why the reply failed, when `status` is [`ReplyStatus::Failed`]; empty otherwise.
        error: String,
    },
    /// A worker wants a request sent; answer with [`Bridge::push_answer`] (or, for a
    /// reply-to request, [`Bridge::accept_reply_to`] first, then [`Bridge::push_reply_to`]).
    Request {
        /// The worker that sent it, where the answer goes (unless `reply_to`).
        slot: SlotId,
        /// The reply address its outcome goes to instead, and the sender's send stamp to echo
        /// in it ([`record::OutgoingRequest::reply_to`]); `handle` is then that attachment's
        /// token. Take it with [`Bridge::accept_reply_to`] before sending: one whose address
        /// names no live attachment, or an attachment owed too many outcomes already, is
        /// refused, not sent.
        reply_to: Option<ReplyTo>,
        /// The worker's id for the request, echoed in the answer so the library finds its caller.
        handle: u64,
        /// Application-Id of the request to send.
        app_id: u32,
        /// Command Code of the request to send.
        cmd_code: u32,
        /// How long to wait for the answer, in milliseconds (0: the node's default); after it
        /// the worker gets a timeout outcome instead.
        timeout_ms: u32,
        /// The request's AVPs as DESIGN §4 JSON: a slice of the bridge's record arena (no
        /// allocation per request; see [`ARENA_BYTES`]).
        avps_json: Bytes,
    },
    /// Something odd but survivable (a reply to an unknown token, ...).
    Warning {
        /// The worker it concerns.
        slot: SlotId,
        /// What happened, for the log line.
        message: String,
    },
    /// The worker is gone (EOF: it died or detached; or it broke the
    /// protocol and was dropped). `tokens` were handed to it and never
    /// replied: each needs exactly one 5012 answer. `handles` were its
    /// outgoing requests still unanswered: drop their answers.
    WorkerGone {
        /// The slot now free again.
        slot: SlotId,
        /// The worker's pid, for the log line.
        pid: u32,
        /// The worker's name, for the log line.
        name: String,
        /// Incoming requests dispatched to it and never replied: each needs exactly one 5012
        /// answer.
        tokens: Vec<u64>,
        /// Its outgoing requests still unanswered: drop their answers when they arrive.
        handles: Vec<u64>,
        /// Why it is gone (EOF, or the protocol fault it was dropped for), for the log line.
        reason: String,
    },
}

/// Where an incoming request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Queued to `slot` under `token`.
    Sent {
        /// The worker it was queued to.
        slot: SlotId,
        /// What its reply will carry (the `token` of [`BridgeEvent::Reply`]): keep the Diameter
        /// request under it.
        token: u64,
        /// The event raised: `E_DM_REQUEST` (the worker's catch-all) when set, else
        /// `E_DM_<name>`. A flag, not the name: no `String` per request.
        catch_all: bool,
    },
    /// Workers are attached but none serves this command: answer 3001.
    Unhandled,
    /// Workers serve it but every ring is full: answer 3004.
    Busy,
    /// No worker is attached at all: answer 3004.
    NoWorker,
    /// The request can never fit a ring (larger than max_msg): answer 5012
    /// (or 3004) and log.
    TooBig {
        /// The request's record size in bytes.
        len: usize,
        /// The segment's max_msg in bytes.
        max: usize,
    },
}

/// Public view of one attached worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its slot.
    pub slot: SlotId,
    /// Its pid (SO_PEERCRED).
    pub pid: u32,
    /// The name from its Hello.
    pub name: String,
    /// The event names it declared it serves (its last Handles).
    pub handles: Vec<String>,
    /// Incoming requests handed over and not replied yet.
    pub outstanding: usize,
    /// Its outgoing requests not answered yet.
    pub in_flight: usize,
    /// Answers waiting for room in its answer ring.
    pub queued_answers: usize,
    /// Reply-to outcomes it is owed: requests others sent naming it, accepted, whose outcome
    /// is not in its answers ring yet (at the peer, or among `queued_answers`); at most
    /// [`BridgeConfig::max_in_flight`] ([`Bridge::accept_reply_to`]).
    pub reply_to_owed: usize,
    /// Bytes waiting in its requests ring (bridge to worker: incoming requests).
    pub ring_requests_bytes: u64,
    /// Bytes waiting in its answers ring (bridge to worker: outcomes of its requests).
    pub ring_answers_bytes: u64,
    /// Bytes waiting in its ring to the bridge (replies, its requests).
    pub ring_to_bridge_bytes: u64,
    /// Times its requests ring had no room for a request since it attached (the request
    /// went to another worker or was answered 3004).
    pub requests_ring_full: u64,
    /// Times its answers ring had no room for an answer since it attached (the answer was
    /// queued, see `queued_answers`).
    pub answers_ring_full: u64,
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
    /// Tokens are the bridge's own (`token_tag | seq`), not chosen by anyone outside:
    /// FxHash instead of SipHash (one insert and one remove per request).
    tokens: FxHashSet<u64>,
    in_flight: HashSet<u64>,
    /// Whether its library reads Answers of record version 3 (with `peer_ns`), as its
    /// OutgoingRequests say; a library of an older build gets version-2 Answers.
    reads_answer_v3: bool,
    /// This attachment's reply address (also in its slot header for the worker to read).
    address: u64,
    /// Answers waiting for room in `ans_tx`; queued only by `Bridge::publish_answer`
    /// (which counts them in `overflow_pushed`), taken in order.
    overflow: VecDeque<Vec<u8>>,
    /// Records ever queued in `overflow` (so `overflow_pushed - overflow.len()` have left it,
    /// in order: the positions below that are in the ring now).
    overflow_pushed: u64,
    /// Reply-to requests naming this attachment that were accepted
    /// ([`Bridge::accept_reply_to`]) and whose outcome was not pushed yet (at the peer).
    reply_to_pending: u32,
    /// The positions in `overflow` (`overflow_pushed` when queued) of the reply-to outcomes
    /// queued there: still owed until they reach the ring. Ascending; the ones that left
    /// are pruned whenever one is added, so it holds at most the owed ones and one more.
    reply_to_queued: VecDeque<u64>,
    /// Ring-full events (see [`WorkerInfo`]): plain counters, read at status time.
    requests_ring_full: u64,
    answers_ring_full: u64,
    /// Set where a broken ring is found but no event can be reported
    /// (dispatch, push_answer); the connection is shut down so the next
    /// `service` of this slot runs and drops the worker.
    broken: Option<String>,
}

impl Attached {
    /// Records taken out of `overflow` into the ring so far.
    fn overflow_left(&self) -> u64 {
        // (Saturating: a record queued other than through `publish_answer` would only make
        // the owed look higher for a while, never wrap.)
        self.overflow_pushed
            .saturating_sub(self.overflow.len() as u64)
    }

    /// Reply-to outcomes owed to this attachment: accepted, not in its ring yet (the queued
    /// ones whose position has left `overflow` are in the ring: no hook in the flush needed).
    fn reply_to_owed(&self) -> usize {
        let left = self.overflow_left();
        let in_ring = self.reply_to_queued.partition_point(|&p| p < left);
        self.reply_to_pending as usize + (self.reply_to_queued.len() - in_ring)
    }
}

enum Slot {
    Free,
    Attached(Box<Attached>),
}

/// A connection admitted by its credentials, waiting for its Hello.
struct Pending {
    conn: Conn,
    since: Instant,
    pid: u32,
    uid: u32,
    gid: u32,
}

/// The bridge's end of the seam. Dropping it closes every worker's
/// connection (they see EOF and fail fast until a new bridge appears) and
/// removes the socket; the workers' segments vanish with their last mapping.
pub struct Bridge {
    cfg: BridgeConfig,
    allow: PeerAllow,
    /// The listener and the pending connections; what the driver polls.
    ep: OwnedFd,
    pending: VecDeque<Pending>,
    listener: Listener,
    runtime_dir: Option<RuntimeDir>,
    generation: u64,
    seg_name: String,
    slots: Vec<Slot>,
    /// Attachments of each slot so far (the middle of a reply address).
    attach_seq: Vec<u32>,
    token_tag: u64,
    next_seq: u64,
    rr: u32,
    buf: Vec<u8>,
    enc: Vec<u8>,
    /// Where the payloads of replies and requests are sliced from ([`ARENA_BYTES`]).
    arena: BytesMut,
    /// The event name of the request being dispatched (reused: no allocation per request).
    event: String,
    /// Control messages are received here: [`RECV_BATCH`] parts of [`MAX_CONTROL_MSG`] for
    /// an attached worker's ([`Conn::recv_batch`]), the first part alone for one-at-a-time
    /// receives (registrations, refused connections).
    ctl: Vec<u8>,
    /// What the last [`Conn::recv_batch`] took (reused: no allocation per wake-up).
    ctl_got: Vec<Recv>,
    status_json: String,
    /// The dictionary sources workers get after their Welcome (a sealed memfd, see
    /// [`Bridge::set_dictionary`]) and its generation; `None` until the driver sets one.
    dictionary: Option<(u64, OwnedFd)>,
    counters: SeamCounters,
    /// The attached workers' request histograms, for the exporter ([`Bridge::script_times`]).
    script_times: Arc<ScriptTimesBoard>,
    /// Refused connections kept open until the worker has read the reason
    /// (closing a socket whose Hello is still unread would make the worker
    /// see ECONNRESET instead of the Refused message).
    refusing: VecDeque<(Conn, Instant)>,
}

/// `data` copied into the arena and handed out as a slice of it ([`ARENA_BYTES`]): no
/// allocation while the arena has room, or can be rewound because no slice of it is alive.
fn slice(arena: &mut BytesMut, data: &[u8]) -> Bytes {
    let want = ARENA_BYTES.max(data.len());
    if arena.capacity() < data.len() && !arena.try_reclaim(want) {
        // Slices of it are still alive: a new buffer; the old one goes with its last slice.
        arena.reserve(want);
    }
    arena.extend_from_slice(data);
    arena.split().freeze()
}

fn normalize(name: &str) -> &str {
    name.strip_prefix("E_DM_").unwrap_or(name)
}

fn is_catch_all(name: &str) -> bool {
    matches!(normalize(name), "*" | "REQUEST")
}

fn ep_ctl(ep: &OwnedFd, op: libc::c_int, fd: RawFd) -> Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: ep is our epoll descriptor; ev is a valid event.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) } < 0 {
        return Err(Error::last_os("epoll_ctl (bridge listener set)"));
    }
    Ok(())
}

impl Bridge {
    /// Prepares the socket's directory, binds the control socket and picks
    /// a new generation. Segments are created per worker, on registration.
    pub fn create(cfg: BridgeConfig) -> Result<Bridge> {
        cfg.geometry.validate()?;
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        let runtime_dir = match cfg.control_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => Some(prepare_runtime_dir(d, cfg.group)?),
            _ => None,
        };
        let listener = Listener::bind(&cfg.control_path, cfg.group)?;
        // SAFETY: plain syscall; the result is checked below.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(Error::last_os("epoll_create1"));
        }
        // SAFETY: a fresh descriptor we own.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        ep_ctl(&ep, libc::EPOLL_CTL_ADD, listener.as_raw_fd())?;
        let seg_name = cfg
            .segment_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "dmbridge".into());
        let slots = (0..cfg.geometry.slots).map(|_| Slot::Free).collect();
        let attach_seq = vec![0; cfg.geometry.slots as usize];
        Ok(Bridge {
            token_tag: (generation & 0xFF_FFFF) << 40,
            allow: cfg.effective_allow(),
            cfg,
            ep,
            pending: VecDeque::new(),
            listener,
            runtime_dir,
            generation,
            seg_name,
            slots,
            attach_seq,
            next_seq: 0,
            rr: 0,
            buf: Vec::new(),
            enc: Vec::new(),
            arena: BytesMut::with_capacity(ARENA_BYTES),
            event: String::new(),
            ctl: vec![0; RECV_BATCH * MAX_CONTROL_MSG],
            ctl_got: Vec::with_capacity(RECV_BATCH + 1),
            status_json: String::from("{}"),
            dictionary: None,
            counters: SeamCounters::default(),
            script_times: ScriptTimesBoard::new(),
            refusing: VecDeque::new(),
        })
    }

    /// The workers' histograms of their requests' round trips ([`crate::times`]): the
    /// attached ones read from their segments, those gone kept; share it with an exporter.
    pub fn script_times(&self) -> Arc<ScriptTimesBoard> {
        self.script_times.clone()
    }

    /// Keeps the workers' histograms on `board` (one an exporter already shows) instead of
    /// the bridge's own; call it before workers attach (those attached before stay on the
    /// previous board).
    pub fn set_script_times(&mut self, board: Arc<ScriptTimesBoard>) {
        self.script_times = board;
    }

    /// This instance's generation (changes on every start).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The configuration in force.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// Who may attach (the configured list or the default).
    pub fn allow(&self) -> &PeerAllow {
        &self.allow
    }

    /// What was done about the control socket's directory (for the log).
    pub fn runtime_dir(&self) -> Option<&RuntimeDir> {
        self.runtime_dir.as_ref()
    }

    /// The seam's counters (refusals by cause, attaches, drops, memory).
    pub fn counters(&self) -> SeamCounters {
        self.counters
    }

    /// Connections admitted and waiting for their Hello.
    pub fn pending_registrations(&self) -> usize {
        self.pending.len()
    }

    /// Readable when workers are connecting or registering (an epoll
    /// descriptor holding the listening socket and the pending
    /// connections): call [`Bridge::accept_all`].
    pub fn listener_fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }

    /// A duplicate of [`Bridge::listener_fd`] owned by the caller, for async runtimes (see
    /// [`Bridge::worker_fd_dup`]).
    pub fn listener_fd_dup(&self) -> std::io::Result<OwnedFd> {
        self.ep.as_fd().try_clone_to_owned()
    }

    /// The descriptor of an attached slot.
    pub fn worker_fd(&self, slot: SlotId) -> Option<RawFd> {
        match self.slots.get(slot as usize)? {
            Slot::Attached(a) => Some(a.conn.as_raw_fd()),
            Slot::Free => None,
        }
    }

    /// A duplicate of [`Bridge::worker_fd`] owned by the caller, for async
    /// runtimes: wrap it in `tokio::io::unix::AsyncFd` and drop it on the
    /// slot's [`BridgeEvent::WorkerGone`]. Owning a duplicate means the
    /// descriptor number cannot be reused by a new connection while the
    /// runtime still has the old one registered.
    pub fn worker_fd_dup(&self, slot: SlotId) -> Option<OwnedFd> {
        match self.slots.get(slot as usize)? {
            Slot::Attached(a) => a.conn.as_fd().try_clone_to_owned().ok(),
            Slot::Free => None,
        }
    }

    /// The JSON a worker gets back from `dmb_status_json` under `"bridge"`
    /// (peers, states, counters: whatever the bridge wants to show).
    pub fn set_status_json(&mut self, json: String) {
        self.status_json = json;
    }

    /// The dictionary workers convert their replies with: `sources` is
    /// [`crate::control::encode_sources`] of the files the bridge loaded on top of the
    /// built-in dictionary. Sent to every attached worker now and to each new one after its
    /// Welcome (DESIGN §9: a reply that does not fit the dictionary is refused in the
    /// library, with an error return to the script). A worker that cannot be told is left
    /// to the bridge's own check of its JSON replies.
    pub fn set_dictionary(&mut self, sources: &[u8]) -> Result<()> {
        let fd = crate::control::sealed_blob("dmbridge-dictionary", sources)?;
        let generation = self.dictionary.as_ref().map_or(1, |(g, _)| g + 1);
        let msg = Ctl::Dictionary { generation };
        for slot in &self.slots {
            if let Slot::Attached(a) = slot {
                // A worker gone meanwhile is found by its next service.
                let _ = a.conn.send_ctl(&msg, Some(fd.as_fd()));
            }
        }
        self.dictionary = Some((generation, fd));
        Ok(())
    }

    /// Admits pending connections by their credentials, registers those
    /// whose Hello arrived, and expires silent ones. Returns the slots that
    /// got a worker (watch their [`Bridge::worker_fd`] from now on).
    pub fn accept_all(&mut self, events: &mut Vec<BridgeEvent>) -> Result<Vec<SlotId>> {
        let now = Instant::now();
        self.sweep_refusing(now);
        let mut new = Vec::new();
        // Hellos already waiting first, so a burst of new connections cannot
        // evict a worker that is registering.
        self.poll_pending(now, events, &mut new);
        let mut fresh = false;
        while let Some(conn) = self
            .listener
            .accept()
            .map_err(|e| Error::io("accepting a worker", e))?
        {
            // Credentials as the kernel recorded them at connect().
            let (pid, uid, gid) = match conn.peer_cred() {
                Ok(c) => (c.pid as u32, c.uid, c.gid),
                Err(_) => (0, u32::MAX, u32::MAX),
            };
            if !self.allow.permits(uid, gid) {
                let reason = format!(
                    "uid {uid} gid {gid} may not attach (allowed uids {:?}, gids {:?}; see the \
                     bridge's [app] allow_users/allow_groups)",
                    self.allow.uids, self.allow.gids
                );
                self.refuse(
                    conn,
                    (pid, uid, gid),
                    RefusalCause::NotAllowed,
                    reason,
                    events,
                );
                continue;
            }
            self.counters.connections_admitted += 1;
            if self.pending.len() >= self.cfg.max_pending.max(1) {
                if let Some(old) = self.pending.pop_front() {
                    let reason = format!(
                        "more than {} connections waiting to register; the oldest is dropped",
                        self.cfg.max_pending
                    );
                    self.refuse_pending(old, RefusalCause::PendingFull, reason, events);
                }
            }
            if let Err(e) = ep_ctl(&self.ep, libc::EPOLL_CTL_ADD, conn.as_raw_fd()) {
                self.refuse(
                    conn,
                    (pid, uid, gid),
                    RefusalCause::Internal,
                    e.to_string(),
                    events,
                );
                continue;
            }
            self.pending.push_back(Pending {
                conn,
                since: now,
                pid,
                uid,
                gid,
            });
            fresh = true;
        }
        if fresh {
            self.poll_pending(now, events, &mut new);
        }
        Ok(new)
    }

    /// When the oldest pending registration expires, if any (a driver may
    /// call [`Bridge::expire_handshakes`] then; `accept_all` also expires).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.pending
            .front()
            .map(|p| p.since + self.cfg.handshake_timeout)
    }

    /// Reads the Hello of every pending connection that has one; expires
    /// the silent ones that are too old.
    fn poll_pending(&mut self, now: Instant, events: &mut Vec<BridgeEvent>, new: &mut Vec<SlotId>) {
        let mut i = 0;
        while i < self.pending.len() {
            let Some(p) = self.pending.get(i) else { break };
            match p.conn.recv(&mut self.ctl[..MAX_CONTROL_MSG]) {
                Ok(Recv::WouldBlock) => {
                    if now.saturating_duration_since(p.since) >= self.cfg.handshake_timeout {
                        if let Some(p) = self.pending.remove(i) {
                            let reason = format!(
                                "no registration within {:?} of connecting",
                                self.cfg.handshake_timeout
                            );
                            self.refuse_pending(p, RefusalCause::HandshakeTimeout, reason, events);
                        }
                    } else {
                        i += 1;
                    }
                }
                Ok(Recv::Eof) | Err(_) => {
                    if let Some(p) = self.pending.remove(i) {
                        let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, p.conn.as_raw_fd());
                        self.counters.handshakes_abandoned += 1;
                    }
                }
                Ok(Recv::Msg(n, _fd)) => {
                    let msg = Ctl::decode(self.ctl.get(..n).unwrap_or(&[]));
                    if let Some(p) = self.pending.remove(i) {
                        let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, p.conn.as_raw_fd());
                        if let Some(slot) = self.register(p, msg, events) {
                            new.push(slot);
                        }
                    }
                }
            }
        }
    }

    fn refuse_pending(
        &mut self,
        p: Pending,
        cause: RefusalCause,
        reason: String,
        events: &mut Vec<BridgeEvent>,
    ) {
        let _ = ep_ctl(&self.ep, libc::EPOLL_CTL_DEL, p.conn.as_raw_fd());
        self.refuse(p.conn, (p.pid, p.uid, p.gid), cause, reason, events);
    }

    /// Tells the peer why, reports and counts the refusal, and keeps the
    /// connection a little so the reason can be read.
    fn refuse(
        &mut self,
        conn: Conn,
        (pid, uid, gid): (u32, u32, u32),
        cause: RefusalCause,
        reason: String,
        events: &mut Vec<BridgeEvent>,
    ) {
        let _ = conn.send_ctl(
            &Ctl::Refused {
                code: cause.code(),
                reason: reason.clone(),
            },
            None,
        );
        self.counters.refused(cause);
        events.push(BridgeEvent::WorkerRefused {
            pid,
            uid,
            gid,
            cause,
            reason,
        });
        self.linger(conn);
    }

    /// Keeps a refused connection until the worker closes it (or a while),
    /// bounded; swept on every accept and handshake expiry.
    fn linger(&mut self, conn: Conn) {
        if self.refusing.len() >= 64 {
            self.refusing.pop_front();
        }
        self.refusing.push_back((conn, Instant::now()));
    }

    fn sweep_refusing(&mut self, now: Instant) {
        let ctl = &mut self.ctl[..MAX_CONTROL_MSG];
        self.refusing.retain(|(conn, since)| {
            // Drain what the peer sent (its Hello), a bounded number of
            // messages per sweep: a refused peer cannot keep us here.
            for _ in 0..8 {
                match conn.recv(ctl) {
                    Ok(Recv::Msg(..)) => continue,
                    Ok(Recv::WouldBlock) => break,
                    Ok(Recv::Eof) | Err(_) => return false,
                }
            }
            now.saturating_duration_since(*since) < Duration::from_secs(2)
        });
    }

    /// Refuses connections that sent no Hello within `max_age` of being
    /// accepted (they hold no slot meanwhile, but a socket each). Call it
    /// from a periodic timer, or at [`Bridge::next_expiry`].
    pub fn expire_handshakes(
        &mut self,
        now: Instant,
        max_age: Duration,
        events: &mut Vec<BridgeEvent>,
    ) {
        self.sweep_refusing(now);
        while let Some(p) = self.pending.front() {
            if now.saturating_duration_since(p.since) < max_age {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                let reason = format!("no registration within {max_age:?} of connecting");
                self.refuse_pending(p, RefusalCause::HandshakeTimeout, reason, events);
            }
        }
    }

    /// Handles everything pending on `slot`: control messages (handles,
    /// status queries, doorbells, EOF) and up to the service budget of ring
    /// records. Returns true if it stopped because of the budget or found
    /// more work after arming its sleep flag: call again soon.
    pub fn service(&mut self, slot: SlotId, events: &mut Vec<BridgeEvent>) -> bool {
        match self.slots.get(slot as usize) {
            Some(Slot::Attached(_)) => match self.service_attached(slot, events) {
                Ok(more) => more,
                Err((reason, breach)) => {
                    self.drop_worker(slot, reason, breach, events);
                    false
                }
            },
            _ => false,
        }
    }

    /// A Hello (or whatever came first) from an admitted connection: a slot
    /// and a segment of its own, or a refusal.
    fn register(
        &mut self,
        p: Pending,
        msg: Result<Ctl>,
        events: &mut Vec<BridgeEvent>,
    ) -> Option<SlotId> {
        match self.check_hello(msg) {
            Ok((slot, name, segment, seg_file)) => {
                self.attach(p, slot, name, segment, seg_file, events)
            }
            Err((cause, reason)) => {
                self.refuse(p.conn, (p.pid, p.uid, p.gid), cause, reason, events);
                None
            }
        }
    }

    /// The Hello is well formed and of our version, a slot is free and its
    /// segment made: (slot, worker name, segment, descriptor to pass).
    fn check_hello(
        &self,
        msg: Result<Ctl>,
    ) -> Result<(SlotId, String, Segment, std::fs::File), (RefusalCause, String)> {
        let name = match msg {
            Ok(Ctl::Hello { version, name, .. }) if version == self.cfg.wire_version => name,
            Ok(Ctl::Hello { version, .. }) => {
                let e = Error::Version {
                    ours: self.cfg.wire_version,
                    theirs: version,
                    detail: "bridge refused the library's Hello",
                };
                return Err((RefusalCause::Version, e.to_string()));
            }
            Ok(other) => {
                return Err((
                    RefusalCause::BadHello,
                    format!("expected Hello, got {other:?}"),
                ))
            }
            Err(e) => return Err((RefusalCause::BadHello, e.to_string())),
        };
        if name.len() > MAX_WORKER_NAME || name.chars().any(char::is_control) {
            return Err((
                RefusalCause::BadHello,
                format!(
                    "worker name must be at most {MAX_WORKER_NAME} bytes without control characters"
                ),
            ));
        }
        let Some(slot) = self.slots.iter().position(|s| matches!(s, Slot::Free)) else {
            return Err((
                RefusalCause::NoSlot,
                format!(
                    "all {} worker slots are in use; raise the bridge's [app] max_workers",
                    self.cfg.geometry.slots
                ),
            ));
        };
        let slot = slot as SlotId;
        let seg_name = format!("{}-slot{slot}", self.seg_name);
        let (segment, seg_file) = Segment::create_anonymous(
            &seg_name,
            self.cfg.geometry,
            self.generation,
            self.cfg.wire_version,
        )
        .map_err(|e| {
            (
                RefusalCause::Internal,
                format!("bridge cannot create the worker's segment: {e}"),
            )
        })?;
        Ok((slot, name, segment, seg_file))
    }

    /// Welcomes the worker with its segment and takes the slot.
    fn attach(
        &mut self,
        p: Pending,
        slot: SlotId,
        name: String,
        segment: Segment,
        seg_file: std::fs::File,
        events: &mut Vec<BridgeEvent>,
    ) -> Option<SlotId> {
        let seq = self.attach_seq.get_mut(slot as usize)?;
        *seq = (*seq + 1) & ((1 << ADDRESS_SEQ_BITS) - 1);
        if *seq == 0 {
            *seq = 1;
        }
        let address = reply_address(self.generation, *seq, slot);
        segment.reset_slot(0, p.pid, address);
        let max = self.cfg.geometry.max_msg as usize;
        let rings = (
            segment.ring(0, RingId::Requests),
            segment.ring(0, RingId::Answers),
            segment.ring(0, RingId::ToBridge),
        );
        let (Some(rq), Some(an), Some(tb)) = rings else {
            return None;
        };
        let welcome = Ctl::Welcome {
            version: self.cfg.wire_version,
            slot,
            generation: self.generation,
            max_msg: self.cfg.geometry.max_msg,
            segment_path: segment.path().display().to_string(),
        };
        // Arm "bridge sleeps" before the worker can publish anything, so its
        // first record comes with a doorbell.
        let mut rx = Consumer::new(tb, max);
        rx.prepare_sleep();
        if p.conn.send_ctl(&welcome, Some(seg_file.as_fd())).is_err() {
            self.counters.handshakes_abandoned += 1;
            return None; // the worker went away during the handshake
        }
        // Our descriptor is no longer needed: the mappings keep the memory.
        drop(seg_file);
        if let Some((generation, fd)) = &self.dictionary {
            let msg = Ctl::Dictionary {
                generation: *generation,
            };
            // Without it the worker sends JSON replies, which the bridge checks itself.
            let _ = p.conn.send_ctl(&msg, Some(fd.as_fd()));
        }
        let s = self.slots.get_mut(slot as usize)?;
        *s = Slot::Attached(Box::new(Attached {
            req_tx: Producer::new(rq, max),
            ans_tx: Producer::new(an, max),
            rx,
            conn: p.conn,
            pid: p.pid,
            name: name.clone(),
            handles: Vec::new(),
            catch_all: false,
            tokens: FxHashSet::default(),
            in_flight: HashSet::new(),
            reads_answer_v3: false,
            address,
            overflow: VecDeque::new(),
            overflow_pushed: 0,
            reply_to_pending: 0,
            reply_to_queued: VecDeque::new(),
            requests_ring_full: 0,
            answers_ring_full: 0,
            broken: None,
        }));
        self.counters.workers_attached += 1;
        self.counters.segment_bytes += segment.geometry().segment_size();
        self.script_times.attached(slot, segment);
        events.push(BridgeEvent::WorkerAttached {
            slot,
            pid: p.pid,
            name,
        });
        Some(slot)
    }

    fn drop_worker(
        &mut self,
        slot: SlotId,
        reason: String,
        breach: bool,
        events: &mut Vec<BridgeEvent>,
    ) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        // The segment was this worker's alone: the slot is free for the
        // next worker at once, who gets a fresh segment, even if this one is
        // still alive and scribbling.
        let old = std::mem::replace(s, Slot::Free);
        if let Slot::Attached(a) = old {
            let a = *a;
            let mut tokens: Vec<u64> = a.tokens.into_iter().collect();
            tokens.sort_unstable();
            let mut handles: Vec<u64> = a.in_flight.into_iter().collect();
            handles.sort_unstable();
            if breach {
                // Make sure the worker sees EOF even while a driver still
                // holds a duplicate of the socket.
                a.conn.shutdown();
                self.counters.workers_dropped += 1;
            }
            self.counters.workers_gone += 1;
            self.script_times.gone(slot);
            self.counters.segment_bytes = self
                .counters
                .segment_bytes
                .saturating_sub(self.cfg.segment_bytes_per_worker());
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

    /// Err((reason, breach)) when the worker must be dropped; `breach`: it
    /// broke the protocol (rather than simply going away).
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
        if let Some(why) = a.broken.take() {
            return Err((why, true));
        }
        // Back to the arena's start if the driver dropped every slice of it (one atomic load;
        // nothing is allocated here either way).
        let _ = self.arena.try_reclaim(ARENA_BYTES);
        // Control messages, up to RECV_BATCH per system call, until one finds the socket
        // empty: a lone doorbell costs one `recvmmsg`, not a `recvmsg` and an `EAGAIN`.
        let each = self.ctl.len() / RECV_BATCH;
        loop {
            let drained = match a.conn.recv_batch(&mut self.ctl, &mut self.ctl_got) {
                Ok(drained) => drained,
                Err(e) => return Err((format!("control socket error: {e}"), true)),
            };
            for (i, got) in self.ctl_got.drain(..).enumerate() {
                let n = match got {
                    Recv::Msg(n, _fd) => n,
                    Recv::WouldBlock => continue,
                    Recv::Eof => {
                        return Err((
                            "connection closed (worker exited or detached)".into(),
                            false,
                        ))
                    }
                };
                let msg = self.ctl.get(i * each..i * each + n).unwrap_or(&[]);
                match Ctl::decode(msg) {
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
                }
            }
            if drained {
                break;
            }
        }
        // Answers that waited for room.
        let mut flushed = false;
        while let Some(rec) = a.overflow.front() {
            match a.ans_tx.push(&[rec]) {
                Ok(()) => {
                    a.overflow.pop_front();
                    flushed = true;
                }
                Err(PushError::Full) => {
                    if !a.ans_tx.arm_space_wakeup(rec.len()) {
                        break;
                    }
                }
                Err(e) => return Err((e.to_string(), true)),
            }
        }
        // Only after publishing something: the sleep flag is armed whenever the worker waits
        // (a sync request arms it on every call), and `needs_wakeup` would otherwise ring it
        // for nothing on every service — one spurious wake-up of the waiting worker per
        // request (issue 15). `push_answer` rings for the answers it publishes itself.
        if flushed && a.ans_tx.needs_wakeup() {
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
                            form: r.form,
                            avps: slice(&mut self.arena, r.avps),
                            // Empty unless the reply failed: no call into the allocator then.
                            error: if r.error.is_empty() {
                                String::new()
                            } else {
                                r.error.to_owned()
                            },
                        });
                    } else {
                        events.push(BridgeEvent::Warning {
                            slot,
                            message: format!(
                                "reply to token {:#x} ignored: not a request this worker holds (another worker's, already answered, or never given)",
                                r.token
                            ),
                        });
                    }
                }
                Ok(Record::Outgoing(r)) => {
                    // A reply-to request is not the sender's: nothing in flight for it here
                    // (its outcome goes to the named attachment, which the driver checks and
                    // counts against that attachment's bound with `accept_reply_to`).
                    if r.reply_to.is_none() {
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
                    }
                    a.reads_answer_v3 = r.reads_answer_v3;
                    events.push(BridgeEvent::Request {
                        slot,
                        reply_to: r.reply_to,
                        handle: r.handle,
                        app_id: r.app_id,
                        cmd_code: r.cmd_code,
                        timeout_ms: r.timeout_ms,
                        avps_json: slice(&mut self.arena, r.avps_json),
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
        // One pass, no allocation (issue 15 item 2): the least-loaded worker serving `name`,
        // else the least-loaded catch-all; ties broken round-robin. Only when that one's ring
        // is full are the others tried, in the same order (`dispatch_others`).
        let mut any_attached = false;
        let mut specific: Option<(usize, u32, SlotId)> = None;
        let mut fallback: Option<(usize, u32, SlotId)> = None;
        let n = self.slots.len() as u32;
        for (i, s) in self.slots.iter().enumerate() {
            if let Slot::Attached(a) = s {
                any_attached = true;
                if a.broken.is_some() {
                    continue;
                }
                let i = i as u32;
                let key = (a.tokens.len(), (i + n - self.rr % n) % n, i);
                let best = if a.handles.iter().any(|h| h == name) {
                    &mut specific
                } else if a.catch_all {
                    &mut fallback
                } else {
                    continue;
                };
                if best.is_none_or(|b| key < b) {
                    *best = Some(key);
                }
            }
        }
        self.rr = self.rr.wrapping_add(1);
        if !any_attached {
            return Dispatch::NoWorker;
        }
        let (first, catch_all) = match (specific, fallback) {
            (Some(k), _) => (k, false),
            (None, Some(k)) => (k, true),
            (None, None) => return Dispatch::Unhandled,
        };
        // The event name written into a buffer kept across requests (not a `format!` each).
        self.event.clear();
        if catch_all {
            self.event.push_str("E_DM_REQUEST");
        } else {
            self.event.push_str("E_DM_");
            self.event.push_str(name);
        }
        let token = self.token_tag | (self.next_seq & 0xFF_FFFF_FFFF);
        let rec = Record::Incoming(IncomingRequest {
            token,
            event: &self.event,
            ..req.clone()
        });
        rec.encode(&mut self.enc);
        match self.push_request(first.2, token, catch_all) {
            Some(d) => d,
            None => self.dispatch_others(name, catch_all, first.2, token),
        }
    }

    /// The encoded request (`self.enc`) pushed to `slot`'s ring under `token`: the outcome, or
    /// `None` when that ring is full or broken (try another worker).
    fn push_request(&mut self, slot: SlotId, token: u64, catch_all: bool) -> Option<Dispatch> {
        let Some(Slot::Attached(a)) = self.slots.get_mut(slot as usize) else {
            return None;
        };
        match a.req_tx.push(&[&self.enc]) {
            Ok(()) => {
                if a.req_tx.needs_wakeup() {
                    a.conn.ring();
                }
                a.tokens.insert(token);
                self.next_seq += 1;
                Some(Dispatch::Sent {
                    slot,
                    token,
                    catch_all,
                })
            }
            Err(PushError::Full) => {
                a.requests_ring_full += 1;
                None
            }
            Err(PushError::TooBig { len, max }) => Some(Dispatch::TooBig { len, max }),
            Err(PushError::Corrupt) => {
                // The worker moved its ring's positions to impossible
                // values. No event can be reported from here: shut its
                // connection so the driver services the slot, which
                // drops the worker (its held requests answered 5012).
                a.broken = Some("its requests ring was corrupted (impossible positions)".into());
                a.conn.shutdown();
                None
            }
        }
    }

    /// The slow path of [`Bridge::dispatch`] (the first choice's ring was full or broken):
    /// the other candidates of the same kind, least-loaded first.
    fn dispatch_others(
        &mut self,
        name: &str,
        catch_all: bool,
        tried: SlotId,
        token: u64,
    ) -> Dispatch {
        let n = self.slots.len() as u32;
        // `rr` was advanced once already: the same order as the first pass.
        let rr = self.rr.wrapping_sub(1);
        let mut cands: Vec<(usize, u32, SlotId)> = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if let Slot::Attached(a) = s {
                let i = i as u32;
                let serves = if catch_all {
                    !a.handles.iter().any(|h| h == name) && a.catch_all
                } else {
                    a.handles.iter().any(|h| h == name)
                };
                if a.broken.is_none() && serves && i != tried {
                    cands.push((a.tokens.len(), (i + n - rr % n) % n, i));
                }
            }
        }
        cands.sort_unstable();
        for (_, _, slot) in cands {
            if let Some(d) = self.push_request(slot, token, catch_all) {
                return d;
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
        if a.reads_answer_v3 {
            Record::Answer(answer.clone()).encode(&mut self.enc);
        } else {
            answer.encode_v2(&mut self.enc);
        }
        Self::fits(a, &self.enc)?;
        a.in_flight.remove(&answer.handle);
        Self::publish_answer(a, &self.enc).map(|_| ())
    }

    /// The slot of the attachment `address` names, if it is still attached (the same
    /// bridge instance, the same slot, the same attachment of that slot): where a reply-to
    /// request's outcome may go. `None`: the address is of a previous bridge, or its
    /// attachment left (the slot may have another worker now, who must not get it).
    pub fn reply_target(&self, address: u64) -> Option<SlotId> {
        if address >> 32 != self.generation & 0xFFFF_FFFF {
            return None;
        }
        let slot = reply_address_slot(address);
        match self.slots.get(slot as usize) {
            Some(Slot::Attached(a)) if a.address == address => Some(slot),
            _ => None,
        }
    }

    /// Takes a reply-to request naming `address` (a [`BridgeEvent::Request`] with `reply_to`):
    /// whether to send it, and if so, counts its outcome as owed to that attachment.
    ///
    /// The bound is [`BridgeConfig::max_in_flight`], the same as for a sender's own
    /// requests: a receiver is owed at most what a sender may have in flight. Without it, every
    /// attachment (each sending reply-to requests without bound, as none is in its in-flight
    /// set) could name one receiver that stopped reading, and the bridge would queue all their
    /// outcomes for it, of up to `max_msg` each. With it, what the bridge holds for one attachment is what it holds for
    /// a sender of its own requests (the outcomes it is owed, plus its own), whoever sent
    /// them: the Kamailio module worker that gets the outcomes of requests the SIP workers
    /// sent (`async_direct 1`) is bounded as when it sends them itself. An outcome is owed
    /// until it is in the receiver's answers ring, not merely queued for it: the queue is
    /// what the bound is for.
    ///
    /// [`ReplyToCheck::Accepted`]: send it; every outcome of it must then go to
    /// [`Bridge::push_reply_to`] (or, if none will come, [`Bridge::abandon_reply_to`]), which
    /// settles the count once. [`ReplyToCheck::Gone`] and [`ReplyToCheck::Full`]: do not send
    /// it (the latter: tell the receiver with [`Bridge::push_reply_to_refusal`]).
    pub fn accept_reply_to(&mut self, address: u64) -> ReplyToCheck {
        let max = self.cfg.max_in_flight as usize;
        let Some(slot) = self.reply_target(address) else {
            return ReplyToCheck::Gone;
        };
        let Some(Slot::Attached(a)) = self.slots.get_mut(slot as usize) else {
            return ReplyToCheck::Gone;
        };
        let owed = a.reply_to_owed();
        if owed >= max {
            return ReplyToCheck::Full { slot, owed };
        }
        a.reply_to_pending += 1;
        ReplyToCheck::Accepted(slot)
    }

    /// The outcome of a reply-to request accepted for `address` will not come (the driver
    /// gave up on it, e.g. even its short error outcome was too big): it is owed no more.
    /// Nothing happens if that attachment left (its count went with it).
    pub fn abandon_reply_to(&mut self, address: u64) {
        let target = self.reply_target(address);
        if let Some(Slot::Attached(a)) = target.and_then(|slot| self.slots.get_mut(slot as usize)) {
            a.reply_to_pending = a.reply_to_pending.saturating_sub(1);
        }
    }

    /// The outcomes owed to the attachment in `slot` ([`Bridge::accept_reply_to`]); 0 for a
    /// free slot.
    pub fn reply_to_owed(&self, slot: SlotId) -> usize {
        match self.slots.get(slot as usize) {
            Some(Slot::Attached(a)) => a.reply_to_owed(),
            _ => 0,
        }
    }

    /// The attachment `to.address` names and `answer` encoded for it in `self.enc` (a
    /// version-3 Answer marked reply-to, the send stamp `to.sent_ns` echoed), checked against
    /// its ring's maximum.
    fn encode_reply_to(&mut self, to: ReplyTo, answer: &Answer<'_>) -> Result<SlotId> {
        let address = to.address;
        let Some(slot) = self.reply_target(address) else {
            return Err(Error::Detached(format!(
                "reply address {address:#x} names no attached worker"
            )));
        };
        let Some(Slot::Attached(a)) = self.slots.get(slot as usize) else {
            return Err(Error::Detached(format!(
                "worker slot {slot} is not attached"
            )));
        };
        Record::Answer(Answer {
            reply_to: Some(to.sent_ns),
            ..answer.clone()
        })
        .encode(&mut self.enc);
        Self::fits(a, &self.enc)?;
        Ok(slot)
    }

    /// Delivers the outcome of a reply-to request to the attachment `to.address` names, as
    /// a version-3 Answer marked reply-to, the sender's send stamp `to.sent_ns` echoed in it
    /// (whatever `answer.reply_to` says; its `handle` is that attachment's token), with the
    /// doorbell as for any answer. Like
    /// [`Bridge::push_answer`] it never loses it while that attachment lives (queued when the
    /// ring is full). Errors: [`Error::Detached`] when the address names no live attachment
    /// any more (drop the outcome), [`Error::TooBig`] for the receiver's ring (deliver a
    /// shorter error answer instead).
    ///
    /// The request must have been accepted ([`Bridge::accept_reply_to`]): this settles what
    /// that attachment is owed, once — at once if the outcome goes into its ring, when it
    /// leaves the queue if queued; not on [`Error::TooBig`] (the shorter answer settles it).
    pub fn push_reply_to(&mut self, to: ReplyTo, answer: &Answer<'_>) -> Result<()> {
        let slot = self.encode_reply_to(to, answer)?;
        let Some(Slot::Attached(a)) = self.slots.get_mut(slot as usize) else {
            return Err(Error::Detached(format!(
                "worker slot {slot} is not attached"
            )));
        };
        // Not counted (pushed without `accept_reply_to`): not tracked either.
        let owed = a.reply_to_pending > 0;
        a.reply_to_pending = a.reply_to_pending.saturating_sub(1);
        let queued = Self::publish_answer(a, &self.enc)?;
        if let (true, Some(position)) = (owed, queued) {
            let left = a.overflow_left();
            while a.reply_to_queued.front().is_some_and(|&p| p < left) {
                a.reply_to_queued.pop_front();
            }
            a.reply_to_queued.push_back(position);
        }
        Ok(())
    }

    /// Delivers the short not-sent outcome of a reply-to request that
    /// [`Bridge::accept_reply_to`] refused ([`ReplyToCheck::Full`]) to the attachment it
    /// named, as [`Bridge::push_reply_to`] would (so its caller resumes with an error instead
    /// of waiting for its own timeout), but only into its ring or a queue shorter than
    /// [`BridgeConfig::max_in_flight`]: beyond, [`Error::Full`] and it is dropped. A receiver
    /// that reads nothing is not helped by more records, and each would be memory held for
    /// it: so at most `max_in_flight` such notices (a few hundred bytes each) wait for one
    /// attachment, next to the outcomes it is owed and those of its own requests. It owes
    /// nothing ([`Bridge::accept_reply_to`] counted nothing). Errors as
    /// [`Bridge::push_reply_to`]'s, and [`Error::Full`].
    pub fn push_reply_to_refusal(&mut self, to: ReplyTo, answer: &Answer<'_>) -> Result<()> {
        let max = self.cfg.max_in_flight as usize;
        let slot = self.encode_reply_to(to, answer)?;
        let Some(Slot::Attached(a)) = self.slots.get_mut(slot as usize) else {
            return Err(Error::Detached(format!(
                "worker slot {slot} is not attached"
            )));
        };
        if a.overflow.len() >= max {
            return Err(Error::Full);
        }
        Self::publish_answer(a, &self.enc).map(|_| ())
    }

    /// Delivers an outgoing request's outcome where it goes: [`Bridge::push_answer`] or
    /// [`Bridge::push_reply_to`], with their errors.
    pub fn push_outcome(&mut self, to: AnswerTo, answer: &Answer<'_>) -> Result<()> {
        match to {
            AnswerTo::Sender(slot) => self.push_answer(slot, answer),
            AnswerTo::ReplyTo(to) => self.push_reply_to(to, answer),
        }
    }

    /// Whether the encoded answer `rec` fits `a`'s answers ring at all ([`Error::TooBig`]:
    /// the caller delivers a shorter error answer instead).
    fn fits(a: &Attached, rec: &[u8]) -> Result<()> {
        let max = a.ans_tx.max_record();
        if rec.len() > max {
            return Err(Error::TooBig {
                len: rec.len(),
                max,
            });
        }
        Ok(())
    }

    /// `rec` into `a`'s answers ring, or its overflow queue while the ring is full:
    /// `Some(position)` (`a.overflow_pushed` before it) when queued.
    fn publish_answer(a: &mut Attached, rec: &[u8]) -> Result<Option<u64>> {
        if a.overflow.is_empty() {
            match a.ans_tx.push(&[rec]) {
                Ok(()) => {
                    if a.ans_tx.needs_wakeup() {
                        a.conn.ring();
                    }
                    return Ok(None);
                }
                Err(PushError::Full) => a.answers_ring_full += 1,
                Err(e) => {
                    a.broken = Some(format!("its answers ring: {e}"));
                    a.conn.shutdown();
                    return Err(e.into());
                }
            }
        }
        let position = a.overflow_pushed;
        a.overflow.push_back(rec.to_vec());
        a.overflow_pushed += 1;
        if a.ans_tx.arm_space_wakeup(rec.len()) {
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
        Ok(Some(position))
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
                    reply_to_owed: a.reply_to_owed(),
                    ring_requests_bytes: a.req_tx.used_bytes(),
                    ring_answers_bytes: a.ans_tx.used_bytes(),
                    ring_to_bridge_bytes: a.rx.used_bytes(),
                    requests_ring_full: a.requests_ring_full,
                    answers_ring_full: a.answers_ring_full,
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
    /// The workers' final counts stay on the board (it may outlive this bridge, in an
    /// exporter), and their mappings go with the bridge.
    fn drop(&mut self) {
        for (i, s) in self.slots.iter().enumerate() {
            if matches!(s, Slot::Attached(_)) {
                self.script_times.gone(i as SlotId);
            }
        }
    }
}

/// Re-exported for drivers building answers.
pub use record::class;
