//! The worker's side: what `libdmbridge` wraps for OpenSIPS and Kamailio
//! processes.
//!
//! # The stable descriptor
//!
//! [`Worker::fd`] is an epoll descriptor owned by the worker, created once
//! and never replaced. Inside it are the current control connection (the
//! bridge's doorbell and EOF), an eventfd the library sets while it holds
//! something the caller has not collected yet, and a timerfd for re-attach
//! attempts and answer deadlines. SIP servers register a descriptor in their
//! reactor once (OpenSIPS) or poll it from a loop (Kamailio); because the
//! epoll descriptor outlives bridge restarts, neither needs to know when the
//! connection inside is swapped.
//!
//! # Caller contract
//!
//! One `Worker` per process, used by one thread at a time, created after
//! fork. When `fd()` is readable, call [`Worker::next_request`] and
//! [`Worker::next_answer`] until each returns `None` (each call first
//! services the connection: doorbells, EOF, re-attach, deadlines). At the
//! end of every call that looked at the rings the library either leaves the
//! descriptor readable or tells the bridge it sleeps, so no wake-up is lost.
//!
//! # Bridge restarts
//!
//! EOF on the connection detaches: the mapping is dropped, every outgoing
//! request still in flight completes at once — class -2 ("no answer": it may
//! have reached the peer) if the bridge had taken its record from the ring,
//! class -3 ("not sent") if the record was still there ([`Worker::detach`]),
//! tokens of unreplied incoming requests become invalid (the old bridge
//! instance answered them or died with them), and calls fail fast with
//! [`Error::Detached`]. The worker re-attaches by itself — on any call, at
//! most every `min_retry`, and from the timerfd every `retry_interval` while
//! the caller only waits on the fd — and re-sends its handled names. A
//! re-attach blocks at most `reattach_wait` (100 ms), and only when the
//! bridge's socket accepted the connection: the Hello goes out, the
//! connection joins the epoll set, and the call that started it waits that
//! long for the Welcome (a live bridge answers at once, so the first request
//! after a restart is not lost); otherwise the Welcome is taken when the fd
//! fires. A bridge that is down costs nothing (connect fails at once), a hung
//! one at most `reattach_wait` per attempt.

use crate::control::{
    refusal, Conn, Ctl, Recv, MAX_CONTROL_MSG, MAX_DICTIONARY_BLOB, MAX_HANDLES, MAX_NAME,
};
use crate::error::{Error, Result};
use crate::recent::RecentRoundTrips;
use crate::record::{
    class, Answer, IncomingRequest, OutgoingRequest, Payload, Record, Reply, ReplyStatus, ReplyTo,
};
use crate::ring::{Consumer, Producer, PushError};
use crate::segment::{RingId, Segment, ShmRing, WIRE_VERSION};
use dmdeadline::DeadlineQueue;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How to reach the bridge and how patient to be.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The bridge's control socket.
    pub control_path: PathBuf,
    /// Shown in the bridge's logs and status ("opensips worker 3").
    pub name: String,
    /// Longest wait for the bridge's Welcome.
    pub handshake_timeout: Duration,
    /// Re-attach period while detached and idle (timerfd).
    pub retry_interval: Duration,
    /// Calls made while detached try to re-attach at most this often.
    pub min_retry: Duration,
    /// When a re-attach's connect succeeded (a bridge is listening), how long
    /// the call that started it waits for the Welcome before failing with
    /// [`Error::Detached`]. A live bridge answers the Hello at once, so an
    /// idle worker's first call after a bridge restart goes through instead
    /// of failing with -3; a hung bridge costs at most this per attempt (one
    /// attempt per `handshake_timeout`). Zero: never wait.
    pub reattach_wait: Duration,
    /// Extra time beyond a request's timeout before the library gives up on
    /// the bridge's answer (the bridge itself answers -2 at the timeout).
    pub grace: Duration,
    /// Timeout used when the caller passes 0.
    pub default_timeout_ms: u32,
    /// Most outgoing requests in flight.
    pub max_in_flight: usize,
    /// Longest the sync wait ([`Worker::send_request`]) polls the answers ring before it
    /// sleeps on the doorbell; zero: never poll, always sleep. Adaptive ([`SpinPolicy`]):
    /// it polls only while the recent round trips were shorter than this bound and this is
    /// the only request in flight, so a loaded worker (long round trips) sleeps at once and
    /// leaves the core to the bridge, the peer and the other workers.
    pub sync_spin: Duration,
    /// Poll (up to `sync_spin`) whatever the machine's load: no look at the runnable count
    /// and no stop when a `sched_yield` gave the core away. For tests, whose result must not
    /// depend on what else runs, and for a box whose cores are reserved for the SIP server.
    pub sync_spin_ignores_load: bool,
}

/// The default [`WorkerConfig::sync_spin`], chosen by measurement (BENCHMARKS.md "Session 10:
/// the sync round trip").
pub const DEFAULT_SYNC_SPIN: Duration = Duration::from_micros(DEFAULT_SYNC_SPIN_US);
/// [`DEFAULT_SYNC_SPIN`] in microseconds (the modules' `sync_spin_us` default).
pub const DEFAULT_SYNC_SPIN_US: u64 = 1000;

impl WorkerConfig {
    /// A request's timeout: the caller's, or `default_timeout_ms` for 0.
    fn timeout_ms(&self, requested: u32) -> u32 {
        if requested == 0 {
            self.default_timeout_ms
        } else {
            requested
        }
    }

    /// Sensible defaults for `path` and `name`.
    pub fn new(control_path: impl Into<PathBuf>, name: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            control_path: control_path.into(),
            name: name.into(),
            handshake_timeout: Duration::from_millis(1000),
            retry_interval: Duration::from_millis(250),
            min_retry: Duration::from_millis(20),
            reattach_wait: Duration::from_millis(100),
            grace: Duration::from_millis(2000),
            default_timeout_ms: 5000,
            max_in_flight: 4096,
            sync_spin: DEFAULT_SYNC_SPIN,
            sync_spin_ignores_load: false,
        }
    }
}

/// An incoming request, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The bridge's id for the request; pass it to [`Worker::reply`] exactly once. It is tied to
    /// the bridge instance: after a re-attach, tokens from before are refused.
    pub token: u64,
    /// Application-Id from the header.
    pub app_id: u32,
    /// Command Code from the header.
    pub cmd_code: u32,
    /// The script event to raise: `E_DM_<ABBR>`, `E_DM_<code>` or `E_DM_REQUEST`.
    pub event: String,
    /// Session-Id, empty if the request has none; the script's key for its session state.
    pub sess_id: String,
    /// The command's name from the bridge's dictionary, empty if unknown.
    pub cmd_name: String,
    /// Origin-Host of the request: who asked (already checked by the bridge's peer table).
    pub origin_host: String,
    /// Origin-Realm of the request.
    pub origin_realm: String,
    /// The AVPs as DESIGN §4 JSON.
    pub avps_json: String,
}

/// Most strings [`Worker::reuse_text`] keeps: enough for the answers one drain of the ring
/// queues at a time in the usual case; the rest are freed.
const SPARE_TEXTS: usize = 64;

/// A string whose buffer has grown past this is not kept (one large answer must not pin its
/// memory in every SIP worker).
const SPARE_TEXT_BYTES: usize = 64 * 1024;

/// `s` in a string from `spare` if there is one (no allocation once they have grown to the
/// traffic's sizes), else in a new one.
fn text_in(spare: &mut Vec<String>, s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let mut t = spare.pop().unwrap_or_default();
    t.clear();
    t.push_str(s);
    t
}

/// `r` owned, as [`Worker::next_request`] hands it out.
fn owned(r: &IncomingRequest<'_>) -> Request {
    Request {
        token: r.token,
        app_id: r.app_id,
        cmd_code: r.cmd_code,
        event: r.event.to_owned(),
        sess_id: r.sess_id.to_owned(),
        cmd_name: r.cmd_name.to_owned(),
        origin_host: r.origin_host.to_owned(),
        origin_realm: r.origin_realm.to_owned(),
        avps_json: r.avps_json.to_owned(),
    }
}

/// The outcome of an outgoing request, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The id [`Worker::send_request_async`] returned, so the caller can find its context.
    pub handle: u64,
    /// One of [`crate::record::class`].
    pub class: i32,
    /// The answer's Result-Code (or Experimental-Result-Code), 0 when there was no answer.
    pub result_code: u32,
    /// How long the bridge waited for the Diameter peer's answer, in nanoseconds (the
    /// answer record's `peer_ns`): 0 when no peer answered (timeouts, unsent requests,
    /// local error answers) or the bridge is of a build that does not say. The caller's
    /// round trip less this is what the library, the bridge and the hand-overs added.
    pub peer_ns: u64,
    /// The library's round trip for this outcome, in nanoseconds: for the worker's own
    /// requests its call entered (`send_request`, `send_request_async`) -> the completion
    /// handed back; for a reply-to outcome, the sender's call entered (its send stamp,
    /// [`crate::record::ReplyTo::sent_ns`]) -> handed back here. What the histograms count
    /// ([`crate::times`]); the script's round trip less this is the SIP server's own part
    /// (for the Kamailio async path, the hand-over to the module worker that resumes). 0
    /// when unknown: an outcome the library made itself (not sent, its own timeout, the
    /// bridge gone), or a send stamp that is not a round trip ([`crate::times::stamp_age`]).
    pub worker_ns: u64,
    /// The answer's AVPs as DESIGN §4 JSON; empty for timeouts and unsent requests.
    pub avps_json: String,
    /// Why the request failed or was not sent; empty on success.
    pub error: String,
}

impl Completion {
    /// A request that never reached the bridge (class -3), with the reason.
    pub fn not_sent(handle: u64, error: String) -> Completion {
        Completion {
            handle,
            class: class::NOT_SENT,
            result_code: 0,
            peer_ns: 0,
            worker_ns: 0,
            avps_json: String::new(),
            error,
        }
    }

    /// The outcome an Answer record carries, its texts in strings kept from earlier answers
    /// (`spare`, no allocation per answer once warm); `worker_ns` is set when it is handed out.
    fn of(a: &Answer<'_>, spare: &mut Vec<String>) -> Completion {
        Completion {
            handle: a.handle,
            class: a.class,
            result_code: a.result_code,
            peer_ns: a.peer_ns,
            worker_ns: 0,
            avps_json: text_in(spare, a.avps_json),
            error: text_in(spare, a.error),
        }
    }

    /// No answer, and none coming (class -2): the library's own timeout, or a bridge that
    /// went away after taking the request. It may have reached the peer, which may have
    /// acted on it.
    fn no_answer(handle: u64, error: String) -> Completion {
        Completion {
            handle,
            class: class::TIMEOUT,
            result_code: 0,
            peer_ns: 0,
            worker_ns: 0,
            avps_json: String::new(),
            error,
        }
    }

    /// The library's own timeout: no outcome from the bridge by the request's deadline.
    fn timeout(handle: u64) -> Completion {
        Completion::no_answer(
            handle,
            "no answer from the bridge in time (request timeout plus grace)".into(),
        )
    }
}

/// Counters and state for status output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStatus {
    /// Whether rings are mapped now; false while the bridge is down or restarting.
    pub attached: bool,
    /// [`WorkerConfig::name`].
    pub name: String,
    /// This process's pid.
    pub pid: u32,
    /// The slot the bridge gave this worker, while attached.
    pub slot: Option<u32>,
    /// The bridge instance's generation, while attached.
    pub generation: Option<u64>,
    /// The segment's path as the bridge named it, while attached.
    pub segment: Option<String>,
    /// The control socket path it connects to.
    pub control_socket: String,
    /// The event names it declared (re-sent on every attach).
    pub handles: Vec<String>,
    /// Largest record in bytes, while attached.
    pub max_msg: Option<u32>,
    /// Outgoing requests waiting for an answer.
    pub in_flight: usize,
    /// Answers taken off the ring and not yet collected by [`Worker::next_answer`].
    pub queued_answers: usize,
    /// Incoming requests handed to the caller and not replied yet (each still owes a reply).
    pub unreplied_requests: usize,
    /// Successful attaches since the worker was created (more than 1 means the bridge restarted).
    pub attaches: u64,
    /// Incoming requests taken by the caller.
    pub requests_received: u64,
    /// Replies pushed to the bridge.
    pub replies_sent: u64,
    /// Outgoing requests pushed to the bridge.
    pub requests_sent: u64,
    /// Answers delivered to the caller.
    pub answers_received: u64,
    /// The last failure (connect, refusal, protocol), for the operator.
    pub last_error: Option<String>,
    /// The bridge's own status JSON, if it answered.
    pub bridge: Option<String>,
}

/// One attachment to one bridge instance.
struct Link {
    // Rings and mapping first: dropped before the connection, so the bridge
    // sees EOF only once this process no longer touches the segment.
    req_rx: Consumer<ShmRing>,
    ans_rx: Consumer<ShmRing>,
    tx: Producer<ShmRing>,
    segment: Segment,
    conn: Conn,
    slot: u32,
    max_msg: u32,
}

/// Ring polls between two clock reads (and `sched_yield`s) of the sync wait's spin: a poll is
/// one load of the ring's tail, the clock read is a vDSO call.
const SPIN_POLLS: u32 = 64;
/// A `sched_yield` that took this long let another process run on this core: the sync wait's
/// poll stops and backs off (a yield with nothing else to run returns in about a microsecond).
const CONTENDED_YIELD: Duration = Duration::from_micros(20);

const TAG_CONN: u64 = 1;
const TAG_EVENT: u64 = 2;
const TAG_TIMER: u64 = 3;

/// An outgoing request in flight.
#[derive(Clone, Copy)]
struct Flight {
    /// When the library gives up on the bridge's answer (timeout plus grace).
    deadline: Instant,
    /// When the caller's call entered the library: the start of the round trip the
    /// worker's histograms count ([`crate::times`]).
    sent: Instant,
    /// The ring position just past its record ([`Producer::position`], the producer's own
    /// copy: no shared-memory access on the send path). If the bridge goes away without an
    /// outcome, its consumer position tells whether it took the record ([`Worker::detach`]).
    end: u64,
}

/// How an attachment ended, which decides what its requests in flight were
/// ([`Worker::detach`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parting {
    /// The bridge closed its end (EOF, or the connection reset by a bridge that died with
    /// doorbells unread): nothing takes records from our ring any more (a dead process, or a
    /// bridge that freed our slot first), so its consumer position is final and tells the
    /// requests it took (-2) from those it never saw (-3).
    BridgeClosed,
    /// We drop a bridge that may still run (it broke the protocol, a socket call failed, the
    /// caller detached): until it reads our EOF it may take more records, so every request
    /// in flight may have gone out (-2).
    WeLeft,
}

/// What the histograms need of a completion the bridge delivered: when its request entered
/// the library, and the bridge's round trip from the answer record.
#[derive(Clone, Copy)]
struct Bridged {
    sent: Instant,
    bridge: Duration,
}

/// A completion waiting for the caller, with its [`Bridged`] times when the bridge's answer
/// record made it (not for those the library made itself: timeouts, detaches).
type Done = (Completion, Option<Bridged>);

/// A reply-to outcome waiting for the caller, with what the histograms need of it: the
/// sender's send stamp ([`crate::times::monotonic_ns`]) and the bridge's round trip.
type RepliedToUs = (Completion, u64, Duration);

/// A registered worker process.
pub struct Worker {
    cfg: WorkerConfig,
    link: Option<Link>,
    /// A re-attach in progress: Hello sent, Welcome not read yet.
    pending: Option<(Conn, Instant)>,
    epoll: OwnedFd,
    efd: OwnedFd,
    tfd: OwnedFd,
    efd_set: bool,
    timer_at: Option<Instant>,
    handled: Vec<String>,
    answers: VecDeque<Done>,
    /// Outcomes of other attachments' reply-to requests naming this one
    /// ([`Worker::send_request_reply_to`]), for [`Worker::next_answer`] only: kept apart so
    /// the sync wait ([`Worker::wait_for`]) never takes one for its own (a token may equal
    /// one of our handles) and never drops one.
    replies_to_us: VecDeque<RepliedToUs>,
    /// Strings of completions handed back by the caller ([`Worker::reuse_text`]), filled
    /// again for the next answers instead of allocated (issue 15 item 2).
    spare_texts: Vec<String>,
    /// The requests in flight by handle (ours, sequential: FxHash, not SipHash), with their
    /// answer deadlines and start times.
    in_flight: FxHashMap<u64, Flight>,
    /// Their answer deadlines, earliest first, without a tree insert and remove per request:
    /// a process sends with one timeout (the module's request_timeout), so send order is
    /// deadline order ([`DeadlineQueue`]: a FIFO, an ordered set only for a shorter timeout).
    /// An answered request's record is not searched for: it is dropped when it reaches the
    /// front, or by a compaction when the queue would otherwise grow while they are more than
    /// half of it.
    deadlines: DeadlineQueue<u64>,
    /// The bridge's tokens of the requests taken and not replied yet (chosen by the bridge,
    /// not by a peer): FxHash, not SipHash (an insert, a lookup and a remove per request).
    tokens: FxHashSet<u64>,
    next_handle: u64,
    last_try: Option<Instant>,
    last_error: Option<String>,
    stats: WorkerStatus,
    status_reply: Option<String>,
    /// The bridge's dictionary sources (`Ctl::Dictionary`) for this attachment, numbered by
    /// `dictionary_seq`, which grows with every one received (a restarted bridge counts its
    /// generations from 1 again, so the bridge's number alone would not tell a change).
    dictionary: Option<(u64, Vec<u8>)>,
    dictionary_seq: u64,
    buf: Vec<u8>,
    enc: Vec<u8>,
    ctl: Vec<u8>,
    spin: SpinPolicy,
}

/// When the sync wait polls the answers ring before sleeping, and what it got.
///
/// Sleeping on the doorbell costs the bridge a `sendmsg` and this process a wake-up from
/// `poll`, which on a virtual machine whose vCPU halted while idle is the slow part of the
/// hand-back (BENCHMARKS.md "Session 9: the sync round trip"). Polling the ring instead pays
/// only when the answer comes within the bound, and costs a core while it polls: so the
/// policy polls only when the moving average of the recent round trips (every sync call
/// feeds it, polled or slept) is within the bound, and only for the single request of a
/// blocked worker. Under load the round trips grow past the bound and the worker sleeps at
/// once; when the load goes, the short round trips bring the poll back by themselves.
#[derive(Debug, Default)]
pub struct SpinPolicy {
    /// The bound, and the moving average of the recent sync round trips.
    recent: RecentRoundTrips,
    stats: SpinStats,
    /// Whether the machine had a core to spare at the last look ([`Runnable`]).
    runnable: Runnable,
    /// [`WorkerConfig::sync_spin_ignores_load`].
    ignore_load: bool,
}

/// Whether this machine has more runnable processes than cores: the 4th field of
/// `/proc/loadavg` ("running/total", the kernel's count of runnable tasks now, this one
/// included), read at most every [`RUNNABLE_EVERY`] with one `pread` of a descriptor kept
/// open. A SIP server with more busy workers than cores (a closed loop of 4 workers on 2
/// cores) must not poll: each poll then takes a core from the bridge, the peer or another
/// worker, and the answer comes later, not sooner (measured: BENCHMARKS.md "Session 10").
///
/// Nor does a real-time thread poll (the modules' `sched_fifo_priority`, checked in the
/// same look with one `sched_getattr`): its `sched_yield` hands the core only to threads of
/// its own priority, so a time-sharing bridge or peer woken on that core would wait for the
/// whole bound instead of answering.
#[derive(Debug, Default)]
struct Runnable {
    file: Option<std::fs::File>,
    cores: usize,
    checked: Option<Instant>,
    spare: bool,
}

/// How often [`Runnable`] looks at `/proc/loadavg` (a `pread` of about a microsecond).
const RUNNABLE_EVERY: Duration = Duration::from_millis(1);

impl Runnable {
    fn new() -> Runnable {
        Runnable {
            file: std::fs::File::open("/proc/loadavg").ok(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            checked: None,
            spare: false,
        }
    }

    /// True when, at the last look (at most `RUNNABLE_EVERY` ago), no more processes were
    /// runnable than there are cores. Unreadable: false (never poll).
    fn spare_core(&mut self, now: Instant) -> bool {
        if self
            .checked
            .is_some_and(|t| now.saturating_duration_since(t) < RUNNABLE_EVERY)
        {
            return self.spare;
        }
        self.checked = Some(now);
        self.spare = !realtime() && self.read().is_some_and(|running| running <= self.cores);
        self.spare
    }

    fn read(&self) -> Option<usize> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 128];
        let n = self.file.as_ref()?.read_at(&mut buf, 0).ok()?;
        parse_running(buf.get(..n)?)
    }
}

/// Whether the calling thread runs under a real-time policy; a thread whose policy cannot be
/// read is taken as time-sharing.
fn realtime() -> bool {
    crate::sched::current_thread().is_ok_and(|t| t.is_realtime())
}

/// "0.18 0.99 1.62 2/345 12345" -> 2.
fn parse_running(loadavg: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(loadavg).ok()?;
    let field = text.split_ascii_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

/// Counters of [`SpinPolicy`]: how often the sync wait polled and whether it paid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpinStats {
    /// The answer came while polling (no doorbell, no wake-up).
    pub caught: u64,
    /// The bound ran out and the wait went to sleep on the doorbell.
    pub missed: u64,
    /// Not polled: the bound is zero, the recent round trips were longer, or other requests
    /// were in flight.
    pub skipped: u64,
    /// Stopped because another process needed the core (a `sched_yield` gave it away).
    pub contended: u64,
    /// Not polled: more processes were runnable than there are cores.
    pub busy: u64,
}

impl SpinPolicy {
    fn new(bound: Duration, ignore_load: bool) -> SpinPolicy {
        SpinPolicy {
            recent: RecentRoundTrips::new(bound),
            runnable: Runnable::new(),
            ignore_load,
            ..SpinPolicy::default()
        }
    }

    /// Whether the round trips allow a poll for the answer of a sync request, `in_flight`
    /// counting it (the machine's load is asked separately: [`SpinPolicy::decide`]).
    fn wants(&self, in_flight: usize) -> bool {
        in_flight == 1 && self.recent.within_bound()
    }

    /// [`SpinPolicy::wants`] and a core to spare; counts the calls it says no to.
    fn decide(&mut self, in_flight: usize, now: Instant) -> bool {
        if !self.wants(in_flight) {
            self.stats.skipped += 1;
            return false;
        }
        if !self.ignore_load && !self.runnable.spare_core(now) {
            self.stats.busy += 1;
            return false;
        }
        true
    }

    /// The cores are busy: poll again only after short round trips
    /// ([`RecentRoundTrips::back_off`]).
    fn back_off(&mut self) {
        self.recent.back_off();
    }

    /// Feeds one sync round trip (polled or slept) into the average.
    fn record(&mut self, took: Duration) {
        self.recent.record(took);
    }
}

/// Pushes an OutgoingRequest record `rec` (whose AVPs are `avps_len` bytes of it) and rings
/// the bridge if it sleeps. Too big: the size of what the caller gave and its maximum, not
/// of our record.
fn push_request(link: &mut Link, rec: &[u8], avps_len: usize) -> Result<()> {
    match link.tx.push(&[rec]) {
        Ok(()) => {}
        Err(PushError::TooBig { .. }) => {
            return Err(Error::TooBig {
                len: avps_len,
                max: link.tx.max_record().saturating_sub(rec.len() - avps_len),
            });
        }
        Err(e) => return Err(e.into()),
    }
    if link.tx.needs_wakeup() {
        link.conn.ring();
    }
    Ok(())
}

/// `d` in nanoseconds (saturating: no round trip is 584 years).
fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn sys_fd(rc: libc::c_int, what: &str) -> Result<OwnedFd> {
    if rc < 0 {
        return Err(Error::last_os(what));
    }
    // SAFETY: rc is a fresh descriptor returned to us by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(rc) })
}

fn epoll_ctl(ep: &OwnedFd, op: libc::c_int, fd: RawFd, tag: u64) -> Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: tag,
    };
    // SAFETY: ep is our epoll fd; ev is a valid event struct.
    let rc = unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) };
    if rc < 0 {
        return Err(Error::last_os("epoll_ctl"));
    }
    Ok(())
}

impl Worker {
    /// Creates the worker's descriptors and attaches to the bridge. A bridge
    /// that is not running yet is not an error: the worker starts detached
    /// and attaches by itself later ([`Worker::is_attached`] tells). A
    /// version mismatch, a refusal or a bad path is an error.
    pub fn attach(cfg: WorkerConfig) -> Result<Worker> {
        if cfg.name.len() > 256 {
            return Err(Error::Invalid("worker name longer than 256 bytes".into()));
        }
        // SAFETY: plain syscalls; results checked by sys_fd.
        let epoll = sys_fd(
            unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
            "epoll_create1",
        )?;
        // SAFETY: as above.
        let efd = sys_fd(
            unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) },
            "eventfd",
        )?;
        // SAFETY: as above.
        let tfd = sys_fd(
            unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            },
            "timerfd_create",
        )?;
        epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, efd.as_raw_fd(), TAG_EVENT)?;
        epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, tfd.as_raw_fd(), TAG_TIMER)?;
        let (cfg_spin, cfg_ignore) = (cfg.sync_spin, cfg.sync_spin_ignores_load);
        let stats = WorkerStatus {
            name: cfg.name.clone(),
            pid: std::process::id(),
            control_socket: cfg.control_path.display().to_string(),
            ..WorkerStatus::default()
        };
        let mut w = Worker {
            cfg,
            link: None,
            pending: None,
            epoll,
            efd,
            tfd,
            efd_set: false,
            timer_at: None,
            handled: Vec::new(),
            answers: VecDeque::new(),
            replies_to_us: VecDeque::new(),
            spare_texts: Vec::new(),
            in_flight: FxHashMap::default(),
            deadlines: DeadlineQueue::new(),
            tokens: FxHashSet::default(),
            next_handle: 1,
            last_try: None,
            last_error: None,
            stats,
            status_reply: None,
            dictionary: None,
            dictionary_seq: 0,
            buf: Vec::new(),
            enc: Vec::new(),
            ctl: vec![0; MAX_CONTROL_MSG],
            spin: SpinPolicy::new(cfg_spin, cfg_ignore),
        };
        match w.connect() {
            Ok(()) => {}
            Err(
                e @ (Error::Version { .. }
                | Error::Incompatible(_)
                | Error::Refused(_)
                | Error::Invalid(_)),
            ) => return Err(e),
            Err(e) => w.last_error = Some(e.to_string()),
        }
        w.arm();
        Ok(w)
    }

    /// The descriptor to poll for readability (stable for the worker's life).
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Whether the request `token` was taken and still waits for its reply: what a caller
    /// that frees requests checks before answering one itself, instead of calling
    /// [`Worker::reply`] and getting [`Error::Invalid`] (a `format!`) for every request
    /// already answered.
    pub fn owes_reply(&self, token: u64) -> bool {
        self.tokens.contains(&token)
    }

    /// True while connected to a bridge.
    pub fn is_attached(&self) -> bool {
        self.link.is_some()
    }

    /// Why the last attach failed or the last detach happened.
    pub fn last_attach_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Largest message accepted right now (None while detached).
    pub fn max_msg(&self) -> Option<u32> {
        self.link.as_ref().map(|l| l.max_msg)
    }

    /// Connects and sends Hello (non-blocking).
    fn begin_connect(&mut self) -> Result<Conn> {
        self.last_try = Some(Instant::now());
        let conn = Conn::connect(&self.cfg.control_path)?;
        let hello = Ctl::Hello {
            version: WIRE_VERSION,
            pid: std::process::id(),
            name: self.cfg.name.clone(),
        };
        conn.send_ctl(&hello, None)
            .map_err(|e| Error::io("sending Hello to the bridge", e))?;
        Ok(conn)
    }

    /// The first attach: waits for the Welcome (at most the handshake
    /// timeout), so `dmb_attach` can say whether it is attached.
    fn connect(&mut self) -> Result<()> {
        let conn = self.begin_connect()?;
        let deadline = Instant::now() + self.cfg.handshake_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.no_welcome());
            }
            conn.wait_readable(left)
                .map_err(|e| Error::io("waiting for the bridge's Welcome", e))?;
            if let Some((msg, fd)) = self.read_welcome(&conn)? {
                return self.finish_connect(conn, msg, fd);
            }
        }
    }

    fn no_welcome(&self) -> Error {
        Error::Detached(format!(
            "the bridge at {} did not answer the registration within {:?}",
            self.cfg.control_path.display(),
            self.cfg.handshake_timeout
        ))
    }

    /// One non-blocking read of the handshake answer.
    fn read_welcome(&mut self, conn: &Conn) -> Result<Option<(Ctl, Option<OwnedFd>)>> {
        match conn
            .recv(&mut self.ctl)
            .map_err(|e| Error::io("reading the bridge's Welcome", e))?
        {
            Recv::WouldBlock => Ok(None),
            Recv::Eof => Err(Error::Detached(
                "the bridge closed the connection during registration".into(),
            )),
            Recv::Msg(n, fd) => Ok(Some((Ctl::decode(self.ctl.get(..n).unwrap_or(&[]))?, fd))),
        }
    }

    /// Takes the pending re-attach's Welcome if it is there (without
    /// waiting): otherwise a later `service` picks it up when the fd fires,
    /// so calls made while a (possibly wedged) bridge is starting fail fast
    /// once the first `reattach_wait` is spent.
    fn poll_pending(&mut self) {
        let Some((conn, deadline)) = self.pending.take() else {
            return;
        };
        let outcome = match self.read_welcome(&conn) {
            Ok(Some((msg, fd))) => {
                let _ = epoll_ctl(&self.epoll, libc::EPOLL_CTL_DEL, conn.as_raw_fd(), TAG_CONN);
                self.finish_connect(conn, msg, fd)
            }
            Ok(None) if Instant::now() < deadline => {
                self.pending = Some((conn, deadline));
                return;
            }
            Ok(None) => Err(self.no_welcome()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            // (A conn still registered is removed from epoll when closed.)
            self.last_error = Some(e.to_string());
        }
    }

    /// Validates the Welcome, maps the segment and becomes attached.
    fn finish_connect(&mut self, conn: Conn, msg: Ctl, fd: Option<OwnedFd>) -> Result<()> {
        let (slot, generation, max_msg, path) = match msg {
            Ctl::Welcome { version, .. } if version != WIRE_VERSION => {
                return Err(Error::Version {
                    ours: WIRE_VERSION,
                    theirs: version,
                    detail: "the bridge's Welcome",
                })
            }
            Ctl::Welcome {
                slot,
                generation,
                max_msg,
                segment_path,
                ..
            } => (slot, generation, max_msg, segment_path),
            Ctl::Refused {
                code: refusal::VERSION,
                reason,
            } => {
                return Err(Error::Incompatible(reason));
            }
            Ctl::Refused { reason, .. } => return Err(Error::Refused(reason)),
            other => return Err(Error::Protocol(format!("expected Welcome, got {other:?}"))),
        };
        let Some(fd) = fd else {
            return Err(Error::Protocol(
                "the bridge's Welcome carried no segment descriptor".into(),
            ));
        };
        let path = PathBuf::from(path);
        let segment = Segment::open(crate::control::fd_to_file(fd), &path, generation)?;
        let g = segment.geometry();
        if g.max_msg != max_msg {
            return Err(Error::Protocol(
                "Welcome and segment disagree on max_msg".into(),
            ));
        }
        // The segment is this worker's own (one slot, index 0); `slot` is the
        // bridge's name for the worker, shown in status output.
        if g.slots != 1 {
            return Err(Error::Protocol(format!(
                "the bridge passed a segment of {} slots; a worker's own segment has one",
                g.slots
            )));
        }
        let ring = |id| {
            segment
                .ring(0, id)
                .ok_or_else(|| Error::Protocol("ring outside the segment".into()))
        };
        let max = max_msg as usize;
        let link = Link {
            req_rx: Consumer::new(ring(RingId::Requests)?, max),
            ans_rx: Consumer::new(ring(RingId::Answers)?, max),
            tx: Producer::new(ring(RingId::ToBridge)?, max),
            segment,
            conn,
            slot,
            max_msg,
        };
        if !self.handled.is_empty() {
            link.conn
                .send_ctl(
                    &Ctl::Handles {
                        names: self.handled.clone(),
                    },
                    None,
                )
                .map_err(|e| Error::io("sending handled names", e))?;
        }
        epoll_ctl(
            &self.epoll,
            libc::EPOLL_CTL_ADD,
            link.conn.as_raw_fd(),
            TAG_CONN,
        )?;
        self.link = Some(link);
        self.stats.attaches += 1;
        self.last_error = None;
        Ok(())
    }

    /// Drops the attachment; every request in flight completes now, once, with what is
    /// known of it. A request whose record the bridge had taken from our ring (its consumer
    /// position passed the record's end) may be at the peer, which may have acted on it (an
    /// Ro CCR-Initial reserved credit): "no answer", -2, like a request lost with its peer
    /// connection (RFC 6733 §5.5.4: the sender cannot know whether the peer processed it),
    /// so that a script does not retry it blindly. A record still in the ring when a bridge
    /// that closed its end went away was never seen by it: "not sent", -3 (DESIGN §3, bridge
    /// down), safe to retry. [`Parting`] says whether that position is final.
    fn detach(&mut self, reason: String, parting: Parting) {
        // Every record ending at or before this was taken by the bridge.
        let mut taken_up_to = u64::MAX;
        if let Some(link) = self.link.take() {
            if parting == Parting::BridgeClosed {
                taken_up_to = link.tx.consumed();
            }
            let _ = epoll_ctl(
                &self.epoll,
                libc::EPOLL_CTL_DEL,
                link.conn.as_raw_fd(),
                TAG_CONN,
            );
            drop(link);
        }
        let mut flights: Vec<(u64, Flight)> = self.in_flight.drain().collect();
        flights.sort_unstable_by_key(|(h, _)| *h);
        for (h, f) in flights {
            let c = if f.end > taken_up_to {
                Completion::not_sent(
                    h,
                    format!("bridge went away before taking the request (not sent): {reason}"),
                )
            } else if parting == Parting::BridgeClosed {
                Completion::no_answer(
                    h,
                    format!("no answer: the bridge went away after taking the request, which may have reached the peer: {reason}"),
                )
            } else {
                Completion::no_answer(
                    h,
                    format!("no answer: the library left the bridge, which may have taken the request and sent it to the peer: {reason}"),
                )
            };
            self.answers.push_back((c, None));
        }
        self.deadlines.clear();
        self.tokens.clear();
        // The next bridge sends its own.
        self.dictionary = None;
        self.last_error = Some(reason);
    }

    /// The dictionary sources the bridge runs with ([`crate::control::decode_sources`]
    /// reads them) and a number that changes whenever they do; `None` until the bridge sent
    /// them in this attachment, or after it could not be read.
    pub fn dictionary(&self) -> Option<(u64, &[u8])> {
        self.dictionary
            .as_ref()
            .map(|(seq, b)| (*seq, b.as_slice()))
    }

    /// Explicitly detaches (the bridge sees EOF). The worker re-attaches on
    /// a later call like after a bridge restart; dropping it is final.
    pub fn detach_now(&mut self) {
        self.detach("detached by the caller".into(), Parting::WeLeft);
    }

    fn maybe_reattach(&mut self) {
        if self.link.is_some() {
            return;
        }
        if self.pending.is_none()
            && !matches!(self.last_try, Some(t) if t.elapsed() < self.cfg.min_retry)
        {
            match self.begin_connect() {
                Ok(conn) => {
                    if let Err(e) =
                        epoll_ctl(&self.epoll, libc::EPOLL_CTL_ADD, conn.as_raw_fd(), TAG_CONN)
                    {
                        self.last_error = Some(e.to_string());
                        return;
                    }
                    self.pending = Some((conn, Instant::now() + self.cfg.handshake_timeout));
                    self.wait_welcome(self.cfg.reattach_wait);
                }
                Err(e) => {
                    self.last_error = Some(e.to_string());
                    return;
                }
            }
        }
        self.poll_pending();
    }

    /// Waits at most `limit` for the pending attempt's Welcome (taking it
    /// when it comes): the bridge accepted the connection, so it is alive.
    fn wait_welcome(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((conn, _)) = &self.pending else {
                return;
            };
            if left.is_zero() || !matches!(conn.wait_readable(left), Ok(true)) {
                return;
            }
            self.poll_pending();
        }
    }

    /// Doorbells, EOF, timer, re-attach, deadlines.
    fn service(&mut self) {
        if self.timer_at.is_some_and(|t| t <= Instant::now()) {
            // Expired, so the timerfd is readable: consume that.
            let mut t = [0u8; 8];
            // SAFETY: reading at most 8 bytes into t from our timerfd.
            let _ = unsafe { libc::read(self.tfd.as_raw_fd(), t.as_mut_ptr().cast(), 8) };
            self.timer_at = None;
        }
        self.drain_conn();
        if self.link.is_none() {
            self.maybe_reattach();
        }
        let now = Instant::now();
        // records due in deadline order; an answered request's is stale, skipped here
        while let Some((_, h)) = self.deadlines.pop_due(now) {
            if self.in_flight.remove(&h).is_some() {
                self.answers.push_back((Completion::timeout(h), None));
            }
        }
    }

    /// Reads every queued control message; detaches on EOF.
    fn drain_conn(&mut self) {
        let Some(link) = &self.link else { return };
        let mut gone = None;
        loop {
            match link.conn.recv(&mut self.ctl) {
                Ok(Recv::WouldBlock) => break,
                Ok(Recv::Eof) => {
                    gone = Some((
                        "the bridge closed the connection (stopped or restarting)".to_string(),
                        Parting::BridgeClosed,
                    ));
                    break;
                }
                // A bridge that died with our doorbells unread resets the connection
                // (ECONNRESET instead of EOF): it closed its end all the same.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    gone = Some((
                        format!("the bridge reset the connection (it died): {e}"),
                        Parting::BridgeClosed,
                    ));
                    break;
                }
                Err(e) => {
                    gone = Some((format!("control socket error: {e}"), Parting::WeLeft));
                    break;
                }
                Ok(Recv::Msg(n, fd)) => match Ctl::decode(self.ctl.get(..n).unwrap_or(&[])) {
                    Ok(Ctl::Doorbell) => {}
                    Ok(Ctl::Status { json }) => self.status_reply = Some(json),
                    Ok(Ctl::Dictionary { .. }) => {
                        // Unreadable: replies go as JSON and the bridge checks them itself.
                        self.dictionary_seq += 1;
                        self.dictionary = fd
                            .and_then(|fd| crate::control::read_blob(fd, MAX_DICTIONARY_BLOB).ok())
                            .map(|blob| (self.dictionary_seq, blob));
                    }
                    Ok(other) => {
                        gone = Some((
                            format!("unexpected control message from the bridge: {other:?}"),
                            Parting::WeLeft,
                        ));
                        break;
                    }
                    Err(e) => {
                        gone = Some((e.to_string(), Parting::WeLeft));
                        break;
                    }
                },
            }
        }
        if let Some((reason, parting)) = gone {
            // The answers ring is still mapped: what the bridge put there before it closed
            // (the outcomes it delivered on its way out) is taken first, so a request it
            // answered does not end without its outcome only because the EOF was read
            // before the record.
            self.drain_answers();
            self.detach(reason, parting);
        }
    }

    /// Tells the bridge we sleep, and makes the fd readable if anything is
    /// left for the caller; re-arms the timer.
    fn arm(&mut self) {
        let mut pending = !self.answers.is_empty() || !self.replies_to_us.is_empty();
        if let Some(link) = &mut self.link {
            // Both flags are armed (no short-circuit): a doorbell is wanted
            // for whichever ring gets a record first.
            let req_empty = link.req_rx.prepare_sleep();
            let ans_empty = link.ans_rx.prepare_sleep();
            pending |= !(req_empty && ans_empty);
        }
        if pending != self.efd_set {
            if pending {
                let one = 1u64.to_ne_bytes();
                // SAFETY: writing 8 bytes to our eventfd.
                let _ = unsafe { libc::write(self.efd.as_raw_fd(), one.as_ptr().cast(), 8) };
            } else {
                let mut b = [0u8; 8];
                // SAFETY: reading 8 bytes from our eventfd (non-blocking).
                let _ = unsafe { libc::read(self.efd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
            }
            self.efd_set = pending;
        }
        let in_flight = &self.in_flight;
        let mut next = self
            .deadlines
            .first(|_, h| in_flight.contains_key(&h))
            .map(|(at, _)| at);
        if self.link.is_none() {
            let mut retry = Instant::now() + self.cfg.retry_interval;
            if let Some((_, deadline)) = &self.pending {
                retry = retry.min(*deadline);
            }
            next = Some(next.map_or(retry, |n| n.min(retry)));
        }
        // Re-armed only for an earlier expiry than the armed one: an expiry left armed for a
        // request answered since fires once (service() consumes it, this arms the next one),
        // where re-arming whenever the first deadline moved cost a timerfd_settime(2) per
        // wake-up under load (the earliest request is the one usually answered first).
        let rearm = match (next, self.timer_at) {
            (Some(n), Some(armed)) => n < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if rearm {
            let rel = next.map(|n| {
                n.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            });
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: match rel {
                    Some(d) => libc::timespec {
                        tv_sec: d.as_secs() as libc::time_t,
                        tv_nsec: d.subsec_nanos() as _,
                    },
                    None => libc::timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                },
            };
            // SAFETY: valid itimerspec; old value not requested.
            unsafe { libc::timerfd_settime(self.tfd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
            self.timer_at = next;
        }
    }

    /// Declares the events this worker serves: command abbreviations
    /// (`PPR`) or event names (`E_DM_PPR`), `*`/`E_DM_REQUEST` for every
    /// command. Replaces the previous list; survives re-attaches.
    pub fn set_handled(&mut self, names: &[String]) -> Result<()> {
        if names.len() > MAX_HANDLES {
            return Err(Error::Invalid(format!(
                "{} names, at most {MAX_HANDLES}",
                names.len()
            )));
        }
        for n in names {
            if n.is_empty() || n.len() > MAX_NAME || !n.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::Invalid(format!(
                    "bad event name {n:?}: 1..={MAX_NAME} printable ASCII characters expected"
                )));
            }
        }
        self.handled = names.to_vec();
        if let Some(link) = &self.link {
            if let Err(e) = link.conn.send_ctl(
                &Ctl::Handles {
                    names: self.handled.clone(),
                },
                None,
            ) {
                self.detach(format!("sending handled names: {e}"), Parting::WeLeft);
            }
        }
        Ok(())
    }

    /// The next incoming request, if any (never blocks), owned.
    pub fn next_request(&mut self) -> Result<Option<Request>> {
        Ok(self.next_request_view()?.map(|r| owned(&r)))
    }

    /// The next incoming request, if any (never blocks), as its record holds it: borrowed
    /// from the worker's record buffer until the next call. A caller that keeps buffers of its
    /// own (libdmbridge's C API reuses each `dmb_request`'s) copies the fields without an
    /// allocation per request (issue 15 item 2: none on either side of the seam).
    pub fn next_request_view(&mut self) -> Result<Option<IncomingRequest<'_>>> {
        // Fast path without system calls while records are waiting; the
        // connection (doorbells, EOF, timer) is serviced when the ring runs
        // dry, which is also when a dead bridge shows.
        let mut popped = self.pop_request();
        if matches!(popped, Ok(false)) {
            self.service();
            popped = self.pop_request();
        }
        match popped {
            Ok(true) => {}
            Ok(false) => {
                self.arm();
                return Ok(None);
            }
            Err(e) => {
                self.detach(e.to_string(), Parting::WeLeft);
                self.arm();
                return Err(e.into());
            }
        }
        match Record::decode(&self.buf) {
            Ok(Record::Incoming(r)) => {
                self.tokens.insert(r.token);
                self.stats.requests_received += 1;
                Ok(Some(r))
            }
            Ok(other) => Err(Error::Protocol(format!(
                "unexpected record in the requests ring: {other:?}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Answers an incoming request. `Failed` (with `error`) makes the bridge
    /// answer 5012 at once, for replies the library rejected. A reply larger
    /// than the maximum is turned into such a failure (so the peer still gets
    /// exactly one answer) and reported as [`Error::TooBig`].
    pub fn reply(
        &mut self,
        token: u64,
        status: ReplyStatus,
        form: Payload,
        avps: &[u8],
        error: &str,
    ) -> Result<()> {
        let Some(link) = &mut self.link else {
            return Err(Error::Detached(format!(
                "cannot reply to token {token:#x}: {}",
                self.last_error.as_deref().unwrap_or("bridge not attached")
            )));
        };
        if !self.tokens.contains(&token) {
            return Err(Error::Invalid(format!(
                "unknown token {token:#x}: never received, already replied, or from before a bridge restart"
            )));
        }
        Record::Reply(Reply {
            token,
            status,
            form,
            avps,
            error,
        })
        .encode(&mut self.enc);
        let result = match link.tx.push(&[&self.enc]) {
            Ok(()) => Ok(()),
            Err(PushError::TooBig { len, max }) => {
                let why =
                    format!("reply of {len} bytes exceeds the configured maximum of {max} bytes");
                Record::Reply(Reply {
                    token,
                    status: ReplyStatus::Failed,
                    form: Payload::Json,
                    avps: b"",
                    error: &why,
                })
                .encode(&mut self.enc);
                link.tx.push(&[&self.enc]).map_err(Error::from)?;
                Err(Error::TooBig { len, max })
            }
            Err(e) => return Err(e.into()), // token kept: the caller may retry
        };
        self.tokens.remove(&token);
        self.stats.replies_sent += 1;
        if link.tx.needs_wakeup() {
            link.conn.ring();
        }
        result
    }

    /// Queues an outgoing request; its completion comes from
    /// [`Worker::next_answer`] (the fd becomes readable).
    pub fn send_request_async(
        &mut self,
        app_id: u32,
        cmd_code: u32,
        avps_json: &[u8],
        timeout_ms: u32,
    ) -> Result<u64> {
        // The round trip's start (and the deadline's): the call's entry.
        let t0 = Instant::now();
        if self.link.is_none() {
            self.service();
        }
        let r = self.start(t0, app_id, cmd_code, avps_json, timeout_ms);
        if self.link.is_none() {
            self.arm();
        }
        r
    }

    /// This attachment's reply address: what another attachment of the same bridge names in
    /// [`Worker::send_request_reply_to`] to have an outcome delivered here (as a
    /// [`Completion`] from [`Worker::next_answer`]). The bridge writes it in this worker's
    /// slot header before the Welcome ([`crate::segment::SlotHeader::reply_address`]); 0
    /// while detached, or from a bridge that cannot deliver to another attachment. A
    /// re-attach (a new bridge, or this slot given to another process meanwhile) changes it,
    /// so an old address is never delivered to a stranger.
    pub fn reply_address(&self) -> u64 {
        self.link
            .as_ref()
            .and_then(|l| l.segment.slot_header(0))
            .map_or(0, |h| {
                h.reply_address.load(std::sync::atomic::Ordering::Relaxed)
            })
    }

    /// Sends a request whose outcome goes to the attachment whose
    /// [`Worker::reply_address`] is `reply_to`, as a [`Completion`] with `handle` = `token`
    /// (the caller's: neither checked nor stored here). Nothing is kept in flight and no
    /// deadline is set: the bridge times the request out (`timeout_ms`, 0: the default)
    /// and delivers that outcome to `reply_to` too. `Ok`: the record is in the ring, and
    /// exactly one outcome reaches `reply_to` if that attachment is still the one the
    /// address named when the outcome is ready (otherwise the bridge logs and counts it).
    /// `Err`: nothing was written and no outcome will come — detached, `reply_to` 0, a
    /// bridge without the capability (this attachment's own reply address is 0), ring full,
    /// too big. The caller checked `avps_json` (the bridge converts it and sends a
    /// not-sent outcome for a document it cannot convert).
    pub fn send_request_reply_to(
        &mut self,
        reply_to: u64,
        token: u64,
        app_id: u32,
        cmd_code: u32,
        avps_json: &[u8],
        timeout_ms: u32,
    ) -> Result<()> {
        // The round trip's start, as `t0` of the worker's own requests: the call's entry. The
        // receiver counts from it ([`crate::times`]).
        let sent_ns = crate::times::monotonic_ns();
        if self.link.is_none() {
            self.service();
        }
        let offered = self.reply_address() != 0;
        let Some(link) = &mut self.link else {
            let why = self.last_error.as_deref().unwrap_or("bridge not attached");
            let e = Error::Detached(why.to_owned());
            self.arm();
            return Err(e);
        };
        if reply_to == 0 {
            return Err(Error::Invalid("reply-to address 0 names nobody".into()));
        }
        if !offered {
            return Err(Error::Invalid(
                "the bridge cannot deliver an outcome to another attachment (an older bridge): send with dmb_send_request_async_checked() instead".into(),
            ));
        }
        let timeout_ms = self.cfg.timeout_ms(timeout_ms);
        Record::Outgoing(OutgoingRequest {
            handle: token,
            app_id,
            cmd_code,
            timeout_ms,
            avps_json,
            reads_answer_v3: true,
            reply_to: Some(ReplyTo {
                address: reply_to,
                sent_ns,
            }),
        })
        .encode(&mut self.enc);
        push_request(link, &self.enc, avps_json.len())?;
        self.stats.requests_sent += 1;
        Ok(())
    }

    /// Pushes the request's record; `t0`: when the caller's call entered the library (the
    /// round trip's start, and the deadline's: no clock read here).
    fn start(
        &mut self,
        t0: Instant,
        app_id: u32,
        cmd_code: u32,
        avps_json: &[u8],
        timeout_ms: u32,
    ) -> Result<u64> {
        let Some(link) = &mut self.link else {
            return Err(Error::Detached(
                self.last_error
                    .clone()
                    .unwrap_or_else(|| "bridge not attached".into()),
            ));
        };
        if self.in_flight.len() >= self.cfg.max_in_flight {
            return Err(Error::Invalid(format!(
                "{} requests already in flight",
                self.in_flight.len()
            )));
        }
        let handle = self.next_handle;
        let timeout_ms = self.cfg.timeout_ms(timeout_ms);
        Record::Outgoing(OutgoingRequest {
            handle,
            app_id,
            cmd_code,
            timeout_ms,
            avps_json,
            reads_answer_v3: true,
            reply_to: None,
        })
        .encode(&mut self.enc);
        push_request(link, &self.enc, avps_json.len())?;
        let end = link.tx.position();
        self.next_handle += 1;
        let deadline = t0 + Duration::from_millis(u64::from(timeout_ms)) + self.cfg.grace;
        self.in_flight.insert(
            handle,
            Flight {
                deadline,
                sent: t0,
                end,
            },
        );
        let in_flight = &self.in_flight;
        self.deadlines
            .push(deadline, handle, in_flight.len(), |_, h| {
                in_flight.contains_key(&h)
            });
        self.stats.requests_sent += 1;
        Ok(handle)
    }

    /// Moves every record of the answers ring to the local queue (dropping
    /// answers nobody waits for any more). Detaches on corruption.
    fn drain_answers(&mut self) {
        let Some(link) = &mut self.link else { return };
        let mut bad = None;
        loop {
            match link.ans_rx.pop_into(&mut self.buf) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            }
            match Record::decode(&self.buf) {
                Ok(Record::Answer(a)) if a.reply_to.is_some() => {
                    // Not ours to look up or time out: the bridge timed it (DESIGN §5).
                    self.stats.answers_received += 1;
                    let c = Completion::of(&a, &mut self.spare_texts);
                    let sent_ns = a.reply_to.unwrap_or(0);
                    let bridge = Duration::from_nanos(a.bridge_ns);
                    self.replies_to_us.push_back((c, sent_ns, bridge));
                }
                Ok(Record::Answer(a)) => {
                    // its deadline record goes when it reaches the front (DeadlineQueue)
                    if let Some(f) = self.in_flight.remove(&a.handle) {
                        self.stats.answers_received += 1;
                        let c = Completion::of(&a, &mut self.spare_texts);
                        let bridged = Bridged {
                            sent: f.sent,
                            bridge: Duration::from_nanos(a.bridge_ns),
                        };
                        self.answers.push_back((c, Some(bridged)));
                    }
                }
                Ok(other) => {
                    bad = Some(format!("unexpected record in the answers ring: {other:?}"));
                    break;
                }
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            }
        }
        if link.ans_rx.space_wakeup_needed() {
            link.conn.ring();
        }
        if let Some(reason) = bad {
            self.detach(reason, Parting::WeLeft);
        }
    }

    fn pop_request(&mut self) -> Result<bool, crate::ring::RingError> {
        match &mut self.link {
            Some(link) => link.req_rx.pop_into(&mut self.buf),
            None => Ok(false),
        }
    }

    /// Gives back a string of a [`Completion`] the caller is done with (libdmbridge's C API
    /// copies each answer into buffers of its own): the next answers are written into it
    /// instead of a new allocation (issue 15 item 2). Bounded ([`SPARE_TEXTS`],
    /// [`SPARE_TEXT_BYTES`]); empty strings are not kept (they hold nothing).
    pub fn reuse_text(&mut self, s: String) {
        if s.capacity() > 0
            && s.capacity() <= SPARE_TEXT_BYTES
            && self.spare_texts.len() < SPARE_TEXTS
        {
            self.spare_texts.push(s);
        }
    }

    /// The next completed outgoing request, if any (never blocks). A completion the
    /// bridge answered is counted in the worker's histograms here, as it is handed back
    /// (the one clock read per request the histograms add on this path).
    /// Outcomes of reply-to requests naming this attachment come here too, with the
    /// sender's token as `handle`, and are counted in this worker's histograms from the
    /// sender's send stamp (one CLOCK_MONOTONIC read; a stamp that is not a round trip,
    /// [`crate::times::stamp_age`], is not counted). [`Completion::worker_ns`] is the round
    /// trip counted.
    pub fn next_answer(&mut self) -> Option<Completion> {
        self.drain_answers();
        if self.answers.is_empty() && self.replies_to_us.is_empty() {
            self.service();
            self.drain_answers();
        }
        match self.answers.pop_front() {
            Some((mut c, bridged)) => {
                if let Some(b) = bridged {
                    let took = Instant::now().saturating_duration_since(b.sent);
                    c.worker_ns = duration_ns(took);
                    self.observe(took, b.bridge);
                }
                Some(c)
            }
            None => match self.replies_to_us.pop_front() {
                Some((mut c, sent_ns, bridge)) => {
                    let now_ns = crate::times::monotonic_ns();
                    if let Some(took) = crate::times::stamp_age(now_ns, sent_ns) {
                        c.worker_ns = duration_ns(took);
                        self.observe(took, bridge);
                    }
                    Some(c)
                }
                None => {
                    self.arm();
                    None
                }
            },
        }
    }

    /// Counts one request the bridge answered: the worker's round trip `took` and the
    /// bridge's part of it, into this worker's histograms in its segment ([`crate::times`];
    /// a relaxed load and store per field: this worker is their only writer). Detached: not
    /// counted (the segment, and the bridge reading it, are gone).
    fn observe(&self, took: Duration, bridge: Duration) {
        if let Some(t) = self.link.as_ref().and_then(|l| l.segment.script_times(0)) {
            t.record(took, bridge);
        }
    }

    /// The worker's histograms so far ([`crate::times`]), while attached: what this
    /// worker's requests took, as the bridge will export them.
    pub fn script_times(&self) -> Option<crate::times::ScriptTimesCounts> {
        let link = self.link.as_ref()?;
        Some(link.segment.script_times(0)?.counts())
    }

    fn take_local(&mut self, handle: u64) -> Option<Done> {
        let i = self.answers.iter().position(|(c, _)| c.handle == handle)?;
        self.answers.remove(i)
    }

    /// Sends a request and waits for its outcome. Always returns a
    /// completion: class -3 with the reason when it could not be sent.
    /// Incoming requests that arrive meanwhile stay in their ring (the fd
    /// is readable afterwards); other answers are kept for `next_answer`.
    pub fn send_request(
        &mut self,
        app_id: u32,
        cmd_code: u32,
        avps_json: &[u8],
        timeout_ms: u32,
    ) -> Completion {
        // The round trip's start: the call's entry (the servicing of the connection is the
        // library's time too).
        let t0 = Instant::now();
        self.service();
        let c = match self.start(t0, app_id, cmd_code, avps_json, timeout_ms) {
            Ok(handle) => {
                if self.spin.decide(self.in_flight.len(), t0) {
                    self.spin_for_answer(t0);
                }
                let (mut c, bridged) = self.wait_for(handle);
                // One clock read for both: the poll's average and the histograms.
                let took = t0.elapsed();
                self.spin.record(took);
                if let Some(b) = bridged {
                    c.worker_ns = duration_ns(took);
                    self.observe(took, b.bridge);
                }
                c
            }
            Err(e) => Completion::not_sent(0, e.to_string()),
        };
        self.arm();
        c
    }

    /// Polls the answers ring until a record is there or `sync_spin` since `t0` ran out; the
    /// caller's [`Worker::wait_for`] then takes the answer, or sleeps as without the poll.
    ///
    /// The ring's sleep flag, left armed by the last wait, is withdrawn first, so the bridge
    /// publishes the answer without a doorbell while we poll; `wait_for` arms it again (flag,
    /// fence, re-check: [`Consumer::prepare_sleep`]) before it blocks, so no wake-up is lost
    /// (the loom model `loom_no_lost_wakeup_after_spin`). `sched_yield` between polls lets a
    /// process that became runnable on this core (the bridge, the peer) run first.
    fn spin_for_answer(&mut self, t0: Instant) {
        let Some(link) = &mut self.link else { return };
        link.ans_rx.cancel_sleep();
        let until = t0 + self.spin.recent.bound();
        let mut before_yield: Option<Instant> = None;
        loop {
            for _ in 0..SPIN_POLLS {
                if !link.ans_rx.is_empty() {
                    self.spin.stats.caught += 1;
                    return;
                }
                std::hint::spin_loop();
            }
            let now = Instant::now();
            let gave_away =
                before_yield.is_some_and(|b| now.saturating_duration_since(b) >= CONTENDED_YIELD);
            if gave_away && !self.spin.ignore_load {
                // Another process ran on this core while we yielded: the cores are busy (more
                // runnable processes than cores), and polling takes time from the bridge and
                // the peer that produce the answer. Sleep now, and poll again only after
                // short round trips brought the average back under the bound.
                self.spin.stats.contended += 1;
                self.spin.back_off();
                return;
            }
            if now >= until {
                self.spin.stats.missed += 1;
                return;
            }
            std::thread::yield_now();
            before_yield = Some(Instant::now());
        }
    }

    /// Changes [`WorkerConfig::sync_spin`] (the modules set it from their parameter after
    /// attaching); the moving average of the round trips is kept.
    pub fn set_sync_spin(&mut self, bound: Duration) {
        self.cfg.sync_spin = bound;
        self.spin.recent.set_bound(bound);
    }

    /// What the sync wait's poll did so far ([`WorkerConfig::sync_spin`]).
    pub fn spin_stats(&self) -> SpinStats {
        self.spin.stats
    }

    fn wait_for(&mut self, handle: u64) -> Done {
        loop {
            self.drain_answers();
            if let Some(done) = self.take_local(handle) {
                return done;
            }
            let Some(&Flight { deadline, .. }) = self.in_flight.get(&handle) else {
                let lost = "request lost by the library (bug)".into();
                return (Completion::not_sent(handle, lost), None);
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.in_flight.remove(&handle);
                return (Completion::timeout(handle), None);
            }
            let Some(link) = &mut self.link else { continue };
            if !link.ans_rx.prepare_sleep() {
                continue;
            }
            if let Err(e) = link.conn.wait_readable(left) {
                self.detach(format!("waiting for the bridge: {e}"), Parting::WeLeft);
                continue;
            }
            self.drain_conn();
        }
    }

    /// The worker's counters plus the bridge's own status (asked over the
    /// control socket, waiting at most `timeout`).
    pub fn status(&mut self, timeout: Duration) -> WorkerStatus {
        self.service();
        self.status_reply = None;
        if let Some(link) = &self.link {
            if link.conn.send_ctl(&Ctl::StatusQuery, None).is_ok() {
                let deadline = Instant::now() + timeout;
                while self.status_reply.is_none() && self.link.is_some() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let Some(link) = &self.link else { break };
                    if left.is_zero() || !link.conn.wait_readable(left).unwrap_or(false) {
                        break;
                    }
                    self.drain_conn();
                }
            }
        }
        let mut s = self.stats.clone();
        s.attached = self.link.is_some();
        s.slot = self.link.as_ref().map(|l| l.slot);
        s.generation = self.link.as_ref().map(|l| l.segment.generation());
        s.segment = self
            .link
            .as_ref()
            .map(|l| l.segment.path().display().to_string());
        s.max_msg = self.max_msg();
        s.handles = self.handled.clone();
        s.in_flight = self.in_flight.len();
        s.queued_answers = self.answers.len() + self.replies_to_us.len();
        s.unreplied_requests = self.tokens.len();
        s.last_error = self.last_error.clone();
        s.bridge = self.status_reply.take();
        self.arm();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_running, realtime, Runnable, SpinPolicy};
    use std::time::{Duration, Instant};

    #[test]
    fn a_real_time_thread_never_polls() {
        // Its sched_yield would hand the core only to its own priority (sched_fifo_priority).
        // An idle machine, whatever this one is doing: a loadavg file saying one runnable.
        let idle = || {
            let path = std::env::temp_dir().join(format!("dmb-loadavg-{}", std::process::id()));
            std::fs::write(&path, "0.00 0.00 0.00 1/100 1\n").unwrap();
            let file = std::fs::File::open(&path).ok();
            let _ = std::fs::remove_file(&path);
            Runnable {
                file,
                cores: 2,
                checked: None,
                spare: false,
            }
        };
        assert!(!realtime(), "the test thread is time-sharing");
        assert!(
            idle().spare_core(Instant::now()),
            "time-sharing on an idle machine polls"
        );
        let got = std::thread::spawn(move || {
            let applied = crate::sched::Scheduling {
                fifo_priority: Some(1),
                ..crate::sched::Scheduling::default()
            }
            .apply();
            (
                applied.map(|_| ()),
                realtime(),
                idle().spare_core(Instant::now()),
            )
        })
        .join()
        .unwrap();
        match got {
            (Ok(()), rt, spare) => assert!(rt && !spare, "real-time {rt}, spare core {spare}"),
            // Without CAP_SYS_NICE (not root): the refusal says what it needs.
            (Err(e), rt, _) => {
                assert!(!rt, "refused, yet real-time");
                assert!(e.to_string().contains("RLIMIT_RTPRIO"), "{e}");
            }
        }
    }

    #[test]
    fn runnable_count_from_loadavg() {
        assert_eq!(parse_running(b"0.18 0.99 1.62 2/345 12345\n"), Some(2));
        assert_eq!(parse_running(b"7.35 7.32 5.10 13/1024 99"), Some(13));
        assert_eq!(parse_running(b"0.18 0.99"), None);
        assert_eq!(parse_running(b"a b c x/1 2"), None);
    }

    #[test]
    fn spin_policy_polls_only_for_a_lone_request_after_short_round_trips() {
        let off = SpinPolicy::new(Duration::ZERO, false);
        assert!(!off.wants(1), "a zero bound never polls");
        let mut p = SpinPolicy::new(Duration::from_micros(100), false);
        assert!(p.wants(1), "nothing measured yet: poll");
        assert!(!p.wants(2), "other requests in flight: sleep at once");
        for _ in 0..8 {
            p.record(Duration::from_millis(5));
        }
        assert!(!p.wants(1), "long round trips put the average past 100 us");
        // Short round trips bring the poll back (the average decays by 7/8 per call).
        let mut calls = 0;
        while !p.wants(1) {
            p.record(Duration::from_micros(40));
            calls += 1;
            assert!(calls < 100, "the average never came back under the bound");
        }
        assert!(
            calls > 1,
            "one short round trip does not outvote a long one"
        );
        p.back_off();
        assert!(!p.wants(1), "a contended core stops the poll");
        p.record(Duration::from_micros(40));
        assert!(
            !p.wants(1),
            "and one short round trip does not bring it back"
        );
    }
}
