//! The shm driver: one tokio task owning `dmshm::bridge::Bridge` (see the [module
//! docs](super) for what it guarantees).
//!
//! It sleeps in one `select!` on: the node's requests, the readiness of the control listener
//! and of every worker connection (`AsyncFd`), the outcomes of outgoing requests (one queue
//! for all of them, [`crate::app::OutcomeQueue`]: no task per request),
//! the node's peer status, and one timer (the earliest reply deadline, handshake expiry,
//! the next status refresh). Readiness is cleared *before* a slot is serviced and
//! `Bridge::service` reads until the socket would block and then arms the ring's sleep flag,
//! so a record published after that comes with a doorbell: no wake-up is lost and none is
//! spent on an idle ring. A slot that used up its service budget is serviced again on the
//! next turn without waiting for its descriptor (other work gets its turn in between).

use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dmproto::dict::Dictionary;
use dmproto::json::JsonReader;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use dmshm::bridge::{AnswerTo, Bridge, BridgeEvent, Dispatch, ReplyToCheck, SlotId};
use dmshm::recent::RecentRoundTrips;
use dmshm::record::{self, Payload, ReplyStatus, ReplyTo};

use super::convert::{self, Outcome};
use super::held::{Found, Held};
use super::policy::{OwnAnswerKind, Policy};
use super::refusals::RefusalLog;
use super::status::{self, Counters, Identity};
use super::ShmOptions;
use crate::alarm::Alarm;
use crate::app::{
    AppHandle, IncomingRequest, OutcomeQueue, OutgoingRequest, QueuedOutcome, Responder,
};
use crate::dictionary::CurrentDictionary;
use crate::due::{Gate, TaskWaker};
use crate::metrics::ScriptRequestLatency;
use dmnode::config::AppAdvert;
use dmnode::endpoint::PeerStatus;

/// Most queued requests taken per wake-up (others get their turn in between).
const BATCH: usize = 256;
/// Most (application, command) event names kept.
const MAX_CACHED_NAMES: usize = 1024;
/// Counters alone republish the status at most this often; while workers are attached it is
/// also refreshed this often so `uptime_s` moves (one render a second, no busy loop).
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long after attaching a worker that has not declared its events yet counts as "not
/// ready" (3004) rather than "serves nothing" (3001): a worker of an older module that only
/// originates requests may never send a Handles record, so the wait must end
/// ([`Policy::unhandled`]).
const DECLARE_GRACE: Duration = Duration::from_secs(2);

/// What the driver needs to know about the node.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Our Origin-Host, written into answers built from workers' replies and into requests built
    /// from their JSON (scripts do not write it).
    pub origin_host: String,
    /// Our Origin-Realm, likewise.
    pub origin_realm: String,
    /// Bound for answers built from workers' replies and requests from their JSON.
    pub max_message_size: usize,
}

/// A worker's outgoing request in flight: whom its outcome is for.
struct Asker {
    /// The sender's slot (where the outcome goes unless `reply_to`).
    slot: SlotId,
    epoch: u64,
    handle: u64,
    /// The reply address the outcome goes to instead of the sender (the bridge checks the
    /// attachment is still there when it delivers; the sender's epoch is not looked at), and
    /// the sender's send stamp, echoed in the outcome for the receiver's histograms.
    reply_to: Option<ReplyTo>,
    /// When the driver took the worker's request record: the round trip observed in
    /// `script_request_latency` and fed to [`BusyPoll`] (one clock read per request).
    at: Instant,
}

/// The driver's poll for a peer's answer (`[app] busy_poll_us`).
///
/// A worker blocked in `dm_send_request` waits for the one request it sent; if the driver
/// sleeps in epoll meanwhile, the peer's answer first has to wake this thread, which on a
/// virtual machine whose vCPU halted while idle is one of the slow hops of the sync round
/// trip (BENCHMARKS.md "Session 9: the sync round trip"). While polling, the driver yields to
/// the runtime instead of sleeping: tokio then polls its I/O driver without blocking
/// (`epoll_wait` with a zero timeout) and runs the connection's reader as soon as the answer
/// is there. It polls only when it pays: one request in flight (a blocked worker's, not a
/// loaded bridge's, which has other work anyway), and the recent round trips (moving
/// average, every answer feeds it) no longer than the bound, so a slow peer or a loaded box
/// turns it off by itself.
struct BusyPoll {
    /// The bound, and the moving average of the recent request -> outcome times.
    recent: RecentRoundTrips,
    /// Polling until then.
    until: Option<Instant>,
}

impl BusyPoll {
    fn new(bound: Duration) -> BusyPoll {
        BusyPoll {
            recent: RecentRoundTrips::new(bound),
            until: None,
        }
    }

    /// A request went out with `in_flight` requests (itself included) waiting: poll?
    fn start(&mut self, now: Instant, in_flight: usize) -> bool {
        let go = in_flight == 1 && self.recent.within_bound();
        self.until = go.then(|| now + self.recent.bound());
        go
    }

    /// An outcome came at `now` for a request sent at `sent`; returns whether the driver was
    /// still polling for it. The round trip feeds the moving average (as the worker's
    /// `SpinPolicy` does: [`RecentRoundTrips`]).
    fn answered(&mut self, now: Instant, sent: Instant) -> bool {
        self.recent.record(now.saturating_duration_since(sent));
        self.until.take().is_some_and(|t| now < t)
    }

    /// Whether to keep polling at `now` (false once the bound ran out); the clock is read
    /// only while a poll runs, so the loop's other turns (the incoming path) pay nothing.
    fn polling(&mut self, now: impl FnOnce() -> Instant) -> bool {
        let Some(t) = self.until else { return false };
        if now() < t {
            return true;
        }
        self.until = None;
        false
    }
}

/// One worker connection the driver waits on.
///
/// Its readiness is registered with a [`Gate`]'s waker: a turn polls only the descriptors
/// whose readiness fired (or that were ready last turn, to register again), not every attached
/// worker's. With the SIP workers sending their own requests (Kamailio `async_direct`, 4 + 2
/// descriptors instead of 2) polling each descriptor on every turn was 1.5k of the bridge's
/// 24k instructions per call (BENCHMARKS.md "Session 17: the bridge with more rings").
struct Watched {
    fd: AsyncFd<OwnedFd>,
    gate: Gate,
}

/// The descriptors the driver waits on. Declared before the `Bridge` in [`Driver`]: dropped
/// (deregistered) first.
struct Fds {
    /// A duplicate of the bridge's listener (`Bridge::listener_fd_dup`).
    listener: AsyncFd<OwnedFd>,
    /// A duplicate of each connected slot's socket (`Bridge::worker_fd_dup`).
    workers: HashMap<SlotId, Watched>,
    task: Arc<TaskWaker>,
    /// The slots found readable by the last poll (kept: no allocation per turn).
    ready: Vec<SlotId>,
}

impl Fds {
    fn new(listener: AsyncFd<OwnedFd>) -> Fds {
        Fds {
            listener,
            workers: HashMap::new(),
            task: Arc::default(),
            ready: Vec::new(),
        }
    }

    /// Starts waiting on `fd` for `slot` (replacing a previous one): polled on the next turn.
    fn watch(&mut self, slot: SlotId, fd: AsyncFd<OwnedFd>) {
        let gate = Gate::new(&self.task);
        self.workers.insert(slot, Watched { fd, gate });
    }

    /// Whether the listener is readable; the readable slots are left in `ready`.
    ///
    /// A worker descriptor is polled only when its [`Gate`] says it is due: new, woken by the
    /// runtime (its readiness fired), or ready on its last poll (see [`crate::due`]). The
    /// task's waker (`task`) is set at the start of each turn of [`Driver::run`].
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut listener = false;
        if let Poll::Ready(r) = self.listener.poll_read_ready(cx) {
            if let Ok(mut g) = r {
                g.clear_ready();
            }
            listener = true;
        }
        self.ready.clear();
        for (slot, w) in &self.workers {
            if let Poll::Ready(r) = w.gate.poll(|wcx| w.fd.poll_read_ready(wcx)) {
                // Cleared before servicing: data arriving after this raises readiness anew,
                // data before it is read by `service`, which reads until it would block.
                if let Ok(mut g) = r {
                    g.clear_ready();
                }
                self.ready.push(*slot);
            }
        }
        if listener || !self.ready.is_empty() {
            Poll::Ready(listener)
        } else {
            Poll::Pending
        }
    }
}

/// The driver's state. Field order matters: `fds` before `bridge`.
pub struct Driver {
    fds: Fds,
    bridge: Bridge,
    node: NodeView,
    dict: &'static Dictionary,
    reader: JsonReader<'static>,
    /// The AVPs read from workers' JSON (their requests, and replies in JSON form), split
    /// off one chunk that is rewound once the node has dropped them: no allocation per
    /// message ([`convert::json_to_avps`] gives the bound).
    avps: dmnode::arena::Arena,
    /// Where a reload puts a new dictionary, and the generation `dict` is from.
    current_dict: CurrentDictionary,
    dict_generation: u64,
    handle: AppHandle,
    /// The originate path's round trip through the bridge: the worker's request record
    /// taken -> its answer record ready to publish (`dmbridge_script_request_latency_seconds`).
    script_request_latency: ScriptRequestLatency,
    peers: watch::Receiver<Vec<PeerStatus>>,
    /// The applications of the commands attached workers serve (for CER/CEA).
    adverts: watch::Sender<Vec<AppAdvert>>,
    /// The status document as last published to workers (for `ctl workers` and metrics).
    status_doc: watch::Sender<String>,
    /// A worker's handled names changed, or a worker left: recompute `adverts`.
    handles_changed: bool,
    /// Incoming requests waiting for their worker's reply, by token, with their deadlines.
    held: Held<Responder>,
    /// Refusals logged per cause and uid per interval.
    refusals: RefusalLog,
    /// Epochs, declarations (3001 or 3004), handshake checks: the decisions, time passed in.
    policy: Policy,
    /// Outgoing requests in flight by tag, and the queue their outcomes arrive on. Keyed by
    /// our own tags, looked up twice per request: FxHash, as the node loop's maps (no peer
    /// chooses these keys), where SipHash cost ~130 instructions a lookup (BENCHMARKS.md
    /// "Session 18: the cost of a bridge wake-up").
    asked: FxHashMap<u64, Asker>,
    next_tag: u64,
    busy_poll: BusyPoll,
    outcomes: OutcomeQueue,
    /// Slots whose service stopped at its budget: serviced again without waiting.
    hot: Vec<SlotId>,
    events: Vec<BridgeEvent>,
    /// Event names of the commands seen so far (see `incoming`).
    names: HashMap<(u32, u32), convert::EventName>,
    /// Why each worker's last unusable reply was refused, for the status document: a reply
    /// whose JSON parses but does not fit the dictionary is only found out here, after the
    /// library accepted it, so this is where the SIP server can read it (`dmb_status_json`).
    last_reply_error: HashMap<SlotId, String>,
    json: String,
    /// The JSON of the outcomes of workers' requests, written here and kept across answers
    /// (`convert::outcome_in`): as large as the largest answer so far, which
    /// `[app] max_message_size` bounds.
    answer_json: String,
    counters: Counters,
    started: Instant,
    stopping: bool,
    /// Workers or peers changed: publish the status now.
    status_dirty: bool,
    /// Only counters changed: publish at `status_due`.
    counters_dirty: bool,
    status_due: Instant,
}

/// A state change of the seam (workers attaching, leaving, declaring; start and stop):
/// bounded by the number of workers, never per request.
fn log(msg: std::fmt::Arguments<'_>) {
    tracing::info!(target: "dmbridge::shm", "{msg}");
}

/// A fault that can come once per request (reply timeouts, bad or late replies, requests
/// that cannot be converted): rate-limited, the suppressed ones counted in the next line.
/// The lock is taken on this fault path only.
fn fault(msg: std::fmt::Arguments<'_>) {
    static LIMIT: std::sync::Mutex<dmnode::log_limit::LogLimit> =
        std::sync::Mutex::new(dmnode::log_limit::LogLimit::refusals());
    let admitted = LIMIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(std::time::Instant::now());
    if let Some(suppressed) = admitted {
        tracing::warn!(target: "dmbridge::shm", suppressed, "{msg}");
    }
}

/// Gives the workers the dictionary (DESIGN §9: the library converts replies with it and
/// refuses, with an error return, one that does not fit). If that fails, the workers send
/// JSON, which the driver converts and checks itself: nothing is lost but the error return.
fn tell_dictionary(bridge: &mut Bridge, current: &CurrentDictionary) {
    if let Err(e) = bridge.set_dictionary(&current.sources_blob()) {
        fault(format_args!(
            "cannot pass the dictionary to the workers ({e}): their replies are checked here only"
        ));
    }
}

impl Driver {
    /// Creates the segment and the control socket; must run inside a tokio runtime.
    pub fn new(
        options: &ShmOptions,
        node: NodeView,
        current_dict: CurrentDictionary,
        handle: AppHandle,
        peers: watch::Receiver<Vec<PeerStatus>>,
        outcomes: OutcomeQueue,
        script_request_latency: ScriptRequestLatency,
    ) -> Result<Driver, super::StartError> {
        let dict_generation = current_dict.generation();
        let dict = current_dict.get();
        let cfg = options.bridge.clone();
        let bridge = Bridge::create(cfg.clone()).map_err(|source| super::StartError::Create {
            segment: cfg.segment_path.clone(),
            socket: cfg.control_path.clone(),
            source,
        })?;
        let mut bridge = bridge;
        // The workers' own histograms, on the board the exporter shows.
        bridge.set_script_times(script_request_latency.workers.clone());
        tell_dictionary(&mut bridge, &current_dict);
        let listener = bridge
            .listener_fd_dup()
            .and_then(dmshm::reactor::register)
            .map_err(super::StartError::Register)?;
        let now = Instant::now();
        Ok(Driver {
            fds: Fds::new(listener),
            bridge,
            node,
            dict,
            reader: JsonReader::new(dict),
            avps: dmnode::arena::Arena::with_chunk(convert::AVPS_CHUNK),
            current_dict,
            dict_generation,
            handle,
            script_request_latency,
            peers,
            adverts: watch::channel(Vec::new()).0,
            status_doc: watch::channel(String::new()).0,
            handles_changed: false,
            held: Held::new(options.reply_timeout),
            refusals: RefusalLog::default(),
            policy: Policy::new(DECLARE_GRACE),
            asked: FxHashMap::default(),
            next_tag: 0,
            busy_poll: BusyPoll::new(options.busy_poll),
            outcomes,
            hot: Vec::new(),
            events: Vec::new(),
            names: HashMap::new(),
            last_reply_error: HashMap::new(),
            json: String::new(),
            answer_json: String::new(),
            counters: Counters::default(),
            started: now,
            stopping: false,
            status_dirty: true,
            counters_dirty: false,
            status_due: now,
        })
    }

    /// The shared-memory bridge's instance generation (new at each start), shown in status so an
    /// operator can tell a restart.
    pub fn generation(&self) -> u64 {
        self.bridge.generation()
    }

    /// The applications of the commands the attached workers serve, republished whenever
    /// that set changes (see [`super::ShmService::advertised`]).
    pub fn advertised(&self) -> watch::Receiver<Vec<AppAdvert>> {
        self.adverts.subscribe()
    }

    /// The status document ([`status::render`]) each time it is published.
    pub fn status_doc(&self) -> watch::Receiver<String> {
        self.status_doc.subscribe()
    }

    /// Runs until `stop` fires (or its sender is dropped).
    pub async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<super::FromNode>,
        mut outcomes: mpsc::UnboundedReceiver<QueuedOutcome>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let cfg = self.bridge.config();
        if let Some(dmshm::control::RuntimeDir::Created { mode, group }) = self.bridge.runtime_dir()
        {
            log(format_args!(
                "created the control socket directory {} (mode {mode:04o}, group {group:?})",
                cfg.control_path
                    .parent()
                    .unwrap_or(cfg.control_path.as_path())
                    .display()
            ));
        }
        let allow = self.bridge.allow();
        log(format_args!(
            "serving workers on {} (up to {} workers, each with its own segment of {} bytes: rings {} bytes, messages up to {} bytes; reply timeout {:?}; workers allowed: uids {:?}, gids {:?})",
            cfg.control_path.display(),
            cfg.geometry.slots,
            cfg.segment_bytes_per_worker(),
            cfg.geometry.ring_bytes,
            cfg.geometry.max_msg,
            self.held.timeout(),
            allow.uids,
            allow.gids,
        ));
        let mut alarm = Alarm::new();
        let mut requests_open = true;
        let mut peers_open = true;
        // The node's peer status changes reach this loop through a queue of one, from a task
        // of its own: a `watch::Receiver::changed()` future in the `select!` below was made,
        // registered and dropped on every turn, whichever branch woke the driver (BENCHMARKS.md
        // "Session 18: the cost of a bridge wake-up"). Changes while one is queued coalesce:
        // the status is rendered from the latest.
        let (peers_tx, mut peers_changed) = mpsc::channel::<()>(1);
        let mut peers = self.peers.clone();
        let forwarder = tokio::spawn(async move {
            while peers.changed().await.is_ok() {
                if let Err(mpsc::error::TrySendError::Closed(())) = peers_tx.try_send(()) {
                    return;
                }
            }
        });
        self.publish_status();
        // The channels' branches are gated (crate::due): polled only when their own waker fired.
        let gates = [(); 3].map(|()| Gate::new(&self.fds.task));
        let [requests_gate, outcomes_gate, peers_gate] = &gates;
        loop {
            self.follow_dictionary();
            self.service_hot();
            // Before anything else is taken in: a worker attached there (its Welcome already
            // sent) must count before a request that may have raced in (see `incoming`).
            self.handle_events();
            alarm.set(self.next_deadline());
            let hot = !self.hot.is_empty();
            let poll = self.busy_poll.polling(Instant::now);
            // Before any gate is polled: the waker its wake-ups go to.
            self.fds.task.set_current().await;
            tokio::select! {
                _ = &mut stop => break,
                r = requests_gate.ready(|cx| requests.poll_recv(cx)),
                    if requests_open => match r {
                    Some(first) => {
                        self.take_from_node(first);
                        for _ in 1..BATCH {
                            let Ok(next) = requests.try_recv() else { break };
                            self.take_from_node(next);
                        }
                    }
                    None => requests_open = false,
                },
                listener = std::future::poll_fn(|cx| self.fds.poll_ready(cx)) => {
                    if listener {
                        self.accept();
                    }
                    let ready = std::mem::take(&mut self.fds.ready);
                    for &slot in &ready {
                        self.service(slot);
                    }
                    self.fds.ready = ready;
                }
                Some(outcome) = outcomes_gate.ready(|cx| outcomes.poll_recv(cx)) => {
                    self.complete(outcome);
                    for _ in 1..BATCH {
                        let Ok(outcome) = outcomes.try_recv() else { break };
                        self.complete(outcome);
                    }
                }
                r = peers_gate.ready(|cx| peers_changed.poll_recv(cx)),
                    if peers_open => match r {
                    Some(()) => self.status_dirty = true,
                    None => peers_open = false,
                },
                () = alarm.ring() => self.timers(),
                _ = std::future::ready(()), if hot => {}
                // Pending once: the runtime polls its I/O without blocking and runs what
                // became ready, then this loop turns again (BusyPoll).
                _ = tokio::task::yield_now(), if poll && !hot => {}
            }
            self.handle_events();
            self.sync_fds();
            if std::mem::take(&mut self.handles_changed) {
                let apps = convert::handled_applications(self.dict, &self.bridge.handled_names());
                // Only ever grows while the bridge runs: a SIP server restarting (all workers
                // gone for a moment) must not make new connections drop its applications.
                self.adverts.send_if_modified(|cur| {
                    let before = cur.len();
                    for a in apps {
                        if !cur.iter().any(|c| c.id == a.id) {
                            cur.push(a);
                        }
                    }
                    let changed = cur.len() != before;
                    if changed {
                        log(format_args!(
                            "advertising the applications of served commands: {cur:?}"
                        ));
                    }
                    changed
                });
            }
            self.maybe_publish();
        }
        forwarder.abort();
        // The node loop has returned before `stop` fires (main.rs): the outcomes it completed
        // on its way out (its final abandon() among them, "no answer" for a request still at
        // the peer) are all queued. Delivered now, before the segment goes, so each worker
        // reads its request's own outcome instead of the "bridge went away" its library gives
        // whatever is left unanswered at EOF (-2 "no answer" for a request this bridge took,
        // which says less than the outcome itself). The `select!` above is not
        // biased: `stop` could win over outcomes queued just before it.
        while let Ok(outcome) = outcomes.try_recv() {
            self.complete(outcome);
        }
        // Likewise the node's last withdrawals (its drain 5012s before the DPRs of the stop),
        // so the final status and the line below count only what it did not answer. A request
        // still queued here is dropped with the channel: 5012 if the node still runs.
        while let Ok(m) = requests.try_recv() {
            if let super::FromNode::Withdrawn(tokens) = m {
                self.withdrawn(&tokens);
            }
        }
        self.stopping = true;
        let held = self.held.len();
        if held > 0 {
            log(format_args!(
                "stopping with {held} requests unreplied: each is answered 5012"
            ));
        }
        self.publish_status();
        // Drops the responders (5012 each, if the node still runs), the descriptors and then
        // the bridge, which removes the segment and the socket. Outcomes still to come find
        // no receiver.
    }

    /// Takes a dictionary a reload installed (one atomic load per turn; between requests, so
    /// each request is converted with one dictionary): the JSON reader, the cached event
    /// names and the advertised applications follow it.
    fn follow_dictionary(&mut self) {
        let generation = self.current_dict.generation();
        if generation == self.dict_generation {
            return;
        }
        self.dict_generation = generation;
        self.dict = self.current_dict.get();
        self.reader = JsonReader::new(self.dict);
        tell_dictionary(&mut self.bridge, &self.current_dict);
        self.names.clear();
        self.handles_changed = true;
        log(format_args!(
            "dictionary reloaded: requests and replies are converted with it from now on"
        ));
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let reply = self.held.next_deadline().map(Instant::from_std);
        let status = (self.counters_dirty || self.workers_attached()).then_some(self.status_due);
        // Registrations that never said Hello hold no slot; refuse them when their time is up.
        let expiry = self.bridge.next_expiry().map(Instant::from_std);
        [reply, expiry, status].into_iter().flatten().min()
    }

    fn accept(&mut self) {
        match self.bridge.accept_all(&mut self.events) {
            Ok(slots) => {
                // Registered workers (their WorkerAttached events are queued).
                for slot in slots {
                    self.watch(slot);
                }
            }
            Err(e) => fault(format_args!("accepting workers: {e}")),
        }
    }

    /// Starts waiting on a slot's connection (replacing a previous tenant's descriptor).
    fn watch(&mut self, slot: SlotId) {
        let Some(fd) = self.bridge.worker_fd_dup(slot) else {
            return;
        };
        match dmshm::reactor::register(fd) {
            Ok(a) => {
                self.fds.watch(slot, a);
                // A new connection may already have its Hello waiting.
                self.hot.push(slot);
            }
            Err(e) => fault(format_args!("watching worker slot {slot}: {e}")),
        }
    }

    fn service(&mut self, slot: SlotId) {
        if self.bridge.service(slot, &mut self.events) && !self.hot.contains(&slot) {
            self.hot.push(slot);
        }
    }

    /// One more round for slots that stopped at their budget (or are new).
    fn service_hot(&mut self) {
        if self.hot.is_empty() {
            return;
        }
        let hot = std::mem::take(&mut self.hot);
        for slot in hot {
            self.service(slot);
        }
    }

    /// Drops the descriptors of slots the bridge no longer has a connection for (gone,
    /// refused, quarantined): our duplicate must not keep the socket open, or the worker
    /// would not see EOF.
    fn sync_fds(&mut self) {
        let bridge = &self.bridge;
        self.fds
            .workers
            .retain(|slot, _| bridge.worker_fd(*slot).is_some());
        self.hot.retain(|slot| bridge.worker_fd(*slot).is_some());
    }

    fn timers(&mut self) {
        let now = Instant::now();
        for (token, slot, responder) in self.held.expire(now.into_std()) {
            // Dropping the responder: the node answers 5012 (if its own reply timer did not
            // already).
            self.counters.reply_timeouts += 1;
            self.counters_dirty = true;
            fault(format_args!(
                "no reply from worker slot {slot} within {:?} (token {token:#x}): answered 5012",
                self.held.timeout()
            ));
            drop(responder);
        }
        if self
            .bridge
            .next_expiry()
            .is_some_and(|t| t <= now.into_std())
        {
            let max = self.bridge.config().handshake_timeout;
            self.bridge
                .expire_handshakes(now.into_std(), max, &mut self.events);
        }
    }

    fn take_from_node(&mut self, m: super::FromNode) {
        match m {
            super::FromNode::Request(req, responder) => self.incoming(req, responder),
            super::FromNode::Withdrawn(tokens) => self.withdrawn(&tokens),
        }
    }

    /// The node answered these requests itself (5012 at the drain before its DPR, RFC 6733
    /// §5.4): those a worker still holds stop waiting, so that the worker's reply is counted
    /// as late (`late_replies_dropped`), not as a reply, and no reply timeout is counted for
    /// them. Counted in `answered_5012_drain`; the node logged the drain once per DPR.
    fn withdrawn(&mut self, tokens: &[u64]) {
        let tokens: rustc_hash::FxHashSet<u64> = tokens.iter().copied().collect();
        let gone = self
            .held
            .withdraw(|r| r.token().is_some_and(|t| tokens.contains(&t)));
        self.counters.drained += gone.len() as u64;
        self.counters_dirty = true;
        // Dropped: the node ignores what they send (it no longer waits for these tokens).
        drop(gone);
    }

    /// An incoming request from the node: to a worker, or answered here.
    fn incoming(&mut self, req: IncomingRequest, responder: Responder) {
        let msg = &req.message;
        let (app_id, cmd_code) = (msg.header.app_id, msg.header.code);
        // Event names by (application, command): looked up once, not per request. Bounded:
        // a peer cycling through unknown command codes only costs the lookups.
        let key = (app_id, cmd_code);
        if !self.names.contains_key(&key) && self.names.len() < MAX_CACHED_NAMES {
            self.names
                .insert(key, convert::event_name(self.dict, app_id, cmd_code));
        }
        let computed;
        let ev = match self.names.get(&key) {
            Some(e) => e,
            None => {
                computed = convert::event_name(self.dict, app_id, cmd_code);
                &computed
            }
        };
        self.json.clear();
        if let Err(e) = dmproto::json::write_avps(&mut self.json, msg.avp_refs(), self.dict) {
            // Validation ran before delivery, so this is not expected; still one answer.
            fault(format_args!("request {ev:?} not convertible to JSON: {e}"));
            responder.answer(convert::local_answer(
                dmproto::result_code::DIAMETER_UNABLE_TO_COMPLY,
                "request not convertible for the application",
            ));
            return;
        }
        let (sess_id, origin_host, origin_realm) = convert::request_ids(msg);
        let rec = record::IncomingRequest {
            token: 0,
            app_id,
            cmd_code,
            event: "",
            sess_id,
            cmd_name: &ev.cmd_name,
            origin_host,
            origin_realm,
            avps_json: &self.json,
        };
        self.counters_dirty = true;
        let dispatch = self.bridge.dispatch(&ev.name, &rec);
        if let Dispatch::Sent { slot, token, .. } = dispatch {
            self.counters.dispatched += 1;
            self.held
                .insert(token, slot, responder, std::time::Instant::now());
            return;
        }
        let Some(own) = self
            .policy
            .own_answer(&dispatch, &ev.name, std::time::Instant::now())
        else {
            // Only `Sent` has none (handled above); were it otherwise, the dropped responder
            // would still answer the peer 5012.
            return;
        };
        match own.kind {
            OwnAnswerKind::Busy => self.counters.busy += 1,
            OwnAnswerKind::Unhandled => self.counters.unhandled += 1,
            OwnAnswerKind::TooBig => {
                self.counters.too_big += 1;
                fault(format_args!("E_DM_{}: {}", ev.name, own.message));
            }
        }
        responder.answer(convert::local_answer(own.code, &own.message));
    }

    fn handle_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            self.event(ev);
        }
        // Keep the allocation (handling an event queues no new ones).
        if self.events.is_empty() {
            self.events = events;
        }
    }

    fn event(&mut self, ev: BridgeEvent) {
        match ev {
            BridgeEvent::WorkerAttached { slot, pid, name } => {
                self.policy.attached(slot, std::time::Instant::now());
                self.last_reply_error.remove(&slot);
                self.counters.workers_attached += 1;
                self.status_dirty = true;
                log(format_args!(
                    "worker {name:?} (pid {pid}) attached in slot {slot}"
                ));
            }
            BridgeEvent::WorkerRefused {
                pid,
                uid,
                gid,
                cause,
                reason,
            } => {
                // Counted by the bridge (SeamCounters, published under counters.seam).
                self.counters_dirty = true;
                if let Some(suppressed) = self.refusals.admit(cause, uid, Instant::now().into_std())
                {
                    log(format_args!(
                        "worker connection refused ({}): pid {pid} uid {uid} gid {gid}: {reason}{}",
                        cause.as_str(),
                        if suppressed > 0 {
                            format!(" ({suppressed} more of this cause and uid not logged)")
                        } else {
                            String::new()
                        }
                    ));
                }
            }
            BridgeEvent::Handles { slot, names } => {
                self.policy.declared(slot, !names.is_empty());
                self.status_dirty = true;
                self.handles_changed = true;
                log(format_args!("worker slot {slot} handles {names:?}"));
            }
            // One per record a worker may send in a loop (a reply to a token that is not its
            // own, a duplicate handle): counted, and logged rate-limited (DESIGN §10).
            BridgeEvent::Warning { slot, message } => {
                self.counters.records_ignored += 1;
                self.counters_dirty = true;
                fault(format_args!("worker slot {slot}: {message}"));
            }
            BridgeEvent::Reply {
                slot,
                token,
                status,
                form,
                avps,
                error,
            } => self.reply(slot, token, status, form, avps, &error),
            BridgeEvent::Request {
                slot,
                reply_to,
                handle,
                app_id,
                cmd_code,
                timeout_ms,
                avps_json,
            } => {
                // Counted against the receiver's bound from here until its outcome is in
                // its ring: every path below ends in `deliver` (`Bridge::push_reply_to`).
                if let Some(to) = reply_to {
                    match self.bridge.accept_reply_to(to.address) {
                        ReplyToCheck::Accepted(_) => {}
                        ReplyToCheck::Gone => {
                            return self.refuse_reply_to(slot, to.address, handle);
                        }
                        ReplyToCheck::Full {
                            slot: receiver,
                            owed,
                        } => return self.refuse_reply_to_full(slot, receiver, owed, to, handle),
                    }
                }
                self.request(
                    slot, reply_to, handle, app_id, cmd_code, timeout_ms, &avps_json,
                )
            }
            BridgeEvent::WorkerGone {
                slot,
                pid,
                name,
                tokens,
                handles,
                reason,
            } => {
                // Dropped: the node answers each 5012, once.
                self.policy.gone(slot);
                let answered = self.held.take_all(&tokens).len() as u64;
                self.counters.worker_lost += answered;
                self.counters.workers_gone += 1;
                self.status_dirty = true;
                self.handles_changed = true;
                log(format_args!(
                    "worker {name:?} (pid {pid}, slot {slot}) gone: {reason}; {answered} requests it held answered 5012, {} of its outgoing requests abandoned",
                    handles.len()
                ));
            }
        }
    }

    fn reply(
        &mut self,
        slot: SlotId,
        token: u64,
        status: ReplyStatus,
        form: Payload,
        avps: Bytes,
        error: &str,
    ) {
        self.counters_dirty = true;
        let responder = match self.held.take(token) {
            Some(Found::Held(responder, _)) => responder,
            found => {
                // Nothing goes on the wire for it: the peer has its one answer.
                let when = match found {
                    Some(Found::Withdrawn) => "at the drain before our DPR",
                    _ => "after the reply timeout",
                };
                self.counters.late_replies += 1;
                fault(format_args!(
                    "late reply from worker slot {slot} (token {token:#x}) dropped: the peer already got 5012 {when}"
                ));
                return;
            }
        };
        let unable = dmproto::result_code::DIAMETER_UNABLE_TO_COMPLY;
        let body = match status {
            ReplyStatus::Failed => Err(format!("the worker reported a failed reply: {error}")),
            ReplyStatus::Ok | ReplyStatus::Error => match form {
                Payload::Json => convert::reply_body(
                    &mut self.avps,
                    &mut self.reader,
                    &avps,
                    status == ReplyStatus::Error,
                    self.node.max_message_size,
                )
                .map_err(|e| format!("invalid reply JSON: {e}")),
                // The record's slice of the bridge's arena becomes the answer's body (no copy,
                // no allocation: `dmshm::bridge::ARENA_BYTES`).
                Payload::Avps => convert::reply_avps(
                    self.dict,
                    avps,
                    status == ReplyStatus::Error,
                    self.node.max_message_size,
                )
                .map_err(|e| format!("invalid reply: {e}")),
            },
        };
        match body {
            Ok(body) => {
                self.counters.replies += 1;
                responder.answer(body);
            }
            Err(why) => {
                self.counters.bad_replies += 1;
                self.status_dirty = true;
                self.last_reply_error
                    .insert(slot, format!("token {token:#x}: {why}"));
                fault(format_args!(
                    "worker slot {slot}, token {token:#x}: {why}; the peer is answered 5012"
                ));
                responder.answer(convert::local_answer(
                    unable,
                    "the application's answer was invalid",
                ));
            }
        }
    }

    /// A script request refused before sending, in `dmbridge_shm_refused_total{cause}` (its
    /// status counter is the caller's).
    fn count_refused(&mut self, cause: &str) {
        self.counters_dirty = true;
        self.script_request_latency
            .refused
            .get_or_create(&crate::metrics::CauseLabels {
                cause: cause.to_string(),
            })
            .inc();
    }

    /// A reply-to request whose address names no live attachment (the worker it named left,
    /// its slot may have another worker now, or the address is of a previous bridge): not
    /// sent, nobody is told (the owner of the address is gone), logged and counted.
    fn refuse_reply_to(&mut self, slot: SlotId, address: u64, token: u64) {
        self.counters.reply_to_refused += 1;
        self.count_refused(crate::metrics::REFUSED_REPLY_TO_GONE);
        fault(format_args!(
            "request of worker slot {slot} (token {token:#x}) not sent: its reply-to address {address:#x} names no attached worker (it left)"
        ));
    }

    /// A reply-to request whose receiver is owed `max_in_flight` outcomes already
    /// (`Bridge::accept_reply_to`: a receiver is owed at most what a sender may have in
    /// flight): not sent, logged and counted, and the receiver told with a short not-sent
    /// outcome (class -3, the receiver's token, the sender's stamp) so the call it suspended
    /// resumes with an error instead of waiting for its own timeout — while its queue is
    /// shorter than that bound; beyond, dropped and counted (a receiver that reads nothing is
    /// not helped by more records, and each would be memory held for it;
    /// `Bridge::push_reply_to_refusal`). Each refused request is thus one outcome delivered
    /// (`outcomes.not_sent`) or one dropped (`outcomes.dropped_receiver_full`).
    fn refuse_reply_to_full(
        &mut self,
        slot: SlotId,
        receiver: SlotId,
        owed: usize,
        to: ReplyTo,
        token: u64,
    ) {
        let at = Instant::now();
        self.counters.reply_to_refused_full += 1;
        self.count_refused(crate::metrics::REFUSED_REPLY_TO_FULL);
        let why = format!(
            "not sent: the worker in slot {receiver} that gets its outcome is owed {owed} outcomes already, the most the bridge holds for one worker (it is not taking its answers)"
        );
        let round_trip = at.elapsed();
        let answer = record::Answer {
            bridge_ns: u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX),
            ..record::Answer::not_sent(token, &why)
        };
        match self.bridge.push_reply_to_refusal(to, &answer) {
            Ok(()) => {
                self.counters.outcome_not_sent += 1;
                self.script_request_latency.round_trip.observe(round_trip);
                fault(format_args!(
                    "request of worker slot {slot} (token {token:#x}) {why}; that worker gets a not-sent outcome"
                ));
            }
            Err(e) => {
                self.counters.outcomes_dropped_receiver_full += 1;
                fault(format_args!(
                    "request of worker slot {slot} (token {token:#x}) {why}; its not-sent outcome is dropped too ({e})"
                ));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        slot: SlotId,
        reply_to: Option<ReplyTo>,
        handle: u64,
        app_id: u32,
        cmd_code: u32,
        timeout_ms: u32,
        json: &[u8],
    ) {
        let at = Instant::now();
        let to = AnswerTo::of(slot, reply_to);
        self.counters.requests_sent += 1;
        self.counters_dirty = true;
        let epoch = self.policy.epoch(slot);
        let avps = match convert::json_to_avps(
            &mut self.avps,
            &mut self.reader,
            json,
            self.node.max_message_size,
        ) {
            Ok(a) => a,
            Err(e) => {
                let o = Outcome::not_sent(format!("invalid request JSON: {e}"));
                return self.deliver(to, handle, &o, at, None);
            }
        };
        let req = OutgoingRequest {
            app_id,
            cmd_code,
            avps,
            timeout: (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms))),
        };
        self.next_tag = self.next_tag.wrapping_add(1);
        let tag = self.next_tag;
        match self.handle.submit_queued(req, tag, &self.outcomes) {
            Ok(()) => {
                self.asked.insert(
                    tag,
                    Asker {
                        slot,
                        epoch,
                        handle,
                        reply_to,
                        at,
                    },
                );
                if self.busy_poll.start(at, self.asked.len()) {
                    self.counters.busy_polls += 1;
                }
            }
            Err(e) => {
                let o = convert::outcome(self.dict, Err(e));
                self.deliver(to, handle, &o, at, None);
            }
        }
    }

    fn complete(&mut self, outcome: QueuedOutcome) {
        let QueuedOutcome {
            tag,
            result,
            waited,
        } = outcome;
        let Some(asker) = self.asked.remove(&tag) else {
            return;
        };
        if self.busy_poll.answered(Instant::now(), asker.at) {
            self.counters.busy_poll_answers += 1;
        }
        if asker.reply_to.is_none() && !self.policy.is_current(asker.slot, asker.epoch) {
            // Its worker left (the count of its requests abandoned is in the "gone" line):
            // never delivered to whoever holds the slot now.
            self.counters.outcomes_dropped += 1;
            self.counters_dirty = true;
            fault(format_args!(
                "the outcome of request {} of worker slot {} dropped: that worker is gone",
                asker.handle, asker.slot
            ));
            return;
        }
        let json = std::mem::take(&mut self.answer_json);
        let o = convert::outcome_in(self.dict, result, json);
        let to = AnswerTo::of(asker.slot, asker.reply_to);
        self.deliver(to, asker.handle, &o, asker.at, waited);
        // The answers' JSON buffer, kept (not one allocation per answer).
        self.answer_json = o.avps_json;
    }

    /// Puts an outcome in the worker's answers ring; one too large for it becomes a -3 that
    /// says so. `at`: when the request's record was taken (the round trip is observed);
    /// `waited`: how long the node waited for the peer's answer, if one came (the round trip
    /// less that is the bridge's own part); the record carries it to the worker as `peer_ns`,
    /// so the script sees, request by request, what the bridge and module added.
    ///
    /// The round trip is read once, before the record is encoded: the record carries it to
    /// the worker (which subtracts it from its own round trip, [`dmshm::times`]) and the
    /// histograms count the same value, so the worker's "outside the bridge" part and the
    /// bridge's histograms add up (the push and its doorbell fall in the worker's part).
    ///
    /// `to`: the sender's slot, or a reply-to address ([`Bridge::push_reply_to`]: a
    /// reply-to-marked version-3 Answer, sized against the receiver's ring; an attachment
    /// that left is refused there and the outcome dropped and counted as for a gone sender).
    fn deliver(
        &mut self,
        to: AnswerTo,
        handle: u64,
        o: &Outcome,
        at: Instant,
        waited: Option<Duration>,
    ) {
        self.counters_dirty = true;
        let round_trip = at.elapsed();
        let bridge_ns = u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX);
        // The node's wait for the peer, which it measured anyway (no clock read here): 0
        // says no peer answered, so an answer read in under the clock's step counts as 1 ns.
        let peer_ns = waited.map_or(0, |w| {
            u64::try_from(w.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        let answer = record::Answer {
            handle,
            class: o.class,
            result_code: o.result_code,
            bridge_ns,
            peer_ns,
            avps_json: &o.avps_json,
            error: &o.error,
            reply_to: None,
        };
        let slot = to.slot();
        let r = match self.bridge.push_outcome(to, &answer) {
            Err(dmshm::Error::TooBig { len, max }) => {
                let why = format!(
                    "the answer ({len} bytes as JSON) exceeds the SIP-server queue's maximum of {max} bytes (raise [app] max_message_size); Result-Code {}",
                    o.result_code
                );
                fault(format_args!("worker slot {slot}, handle {handle}: {why}"));
                let short = record::Answer {
                    result_code: o.result_code,
                    bridge_ns,
                    peer_ns,
                    ..record::Answer::not_sent(handle, &why)
                };
                let r = self.bridge.push_outcome(to, &short);
                if let (AnswerTo::ReplyTo(rt), Err(dmshm::Error::TooBig { .. })) = (to, &r) {
                    // Not even the short one fits (a tiny max_msg): owed no more.
                    self.bridge.abandon_reply_to(rt.address);
                }
                r.map(|_| record::class::NOT_SENT)
            }
            r => r.map(|_| o.class),
        };
        match r {
            Ok(c) => match c {
                record::class::SUCCESS => self.counters.outcome_success += 1,
                record::class::ERROR_ANSWER => self.counters.outcome_error += 1,
                record::class::TIMEOUT => self.counters.outcome_timeout += 1,
                _ => self.counters.outcome_not_sent += 1,
            },
            // Mostly a worker that detached after its request was taken, its departure not
            // yet seen by `complete`: dropped like the outcomes of a worker known to be gone,
            // and logged like them.
            Err(e) => {
                self.counters.outcomes_dropped += 1;
                let why = match e {
                    dmshm::Error::Detached(_) => "that worker is gone",
                    _ => "the worker's queue refused it",
                };
                fault(format_args!(
                    "the outcome of request {handle} of worker slot {slot} dropped: {why} ({e})"
                ));
            }
        }
        self.script_request_latency.round_trip.observe(round_trip);
        if let Some(w) = waited {
            self.script_request_latency
                .bridge
                .observe(round_trip.saturating_sub(w));
        }
    }

    /// Workers are attached (someone may read the status): keep `uptime_s` fresh.
    fn workers_attached(&self) -> bool {
        self.counters.workers_attached > self.counters.workers_gone
    }

    fn maybe_publish(&mut self) {
        let due = Instant::now() >= self.status_due;
        if self.status_dirty || (due && (self.counters_dirty || self.workers_attached())) {
            self.publish_status();
        }
    }

    fn publish_status(&mut self) {
        self.counters.seam = self.bridge.counters();
        let peers = self.peers.borrow().clone();
        let id = Identity {
            origin_host: &self.node.origin_host,
            origin_realm: &self.node.origin_realm,
            generation: self.bridge.generation(),
            uptime_secs: self.started.elapsed().as_secs(),
            stopping: self.stopping,
        };
        let json = status::render(
            &id,
            &peers,
            &self.bridge.workers(),
            &self.last_reply_error,
            &self.bridge.handled_names(),
            &self.counters,
        );
        self.status_doc.send_replace(json.clone());
        self.bridge.set_status_json(json);
        self.status_dirty = false;
        self.counters_dirty = false;
        self.status_due = Instant::now() + STATUS_EVERY;
    }
}

#[cfg(test)]
mod tests {
    use super::BusyPoll;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn busy_poll_runs_for_a_lone_request_within_its_bound_and_backs_off() {
        let t0 = Instant::now();
        let us = Duration::from_micros;
        let mut off = BusyPoll::new(Duration::ZERO);
        assert!(!off.start(t0, 1), "a zero bound never polls");
        assert!(!off.polling(|| t0));

        let mut p = BusyPoll::new(us(100));
        assert!(!p.start(t0, 2), "another request in flight: no poll");
        assert!(!p.polling(|| t0));
        assert!(p.start(t0, 1));
        assert!(p.polling(|| t0 + us(99)));
        assert!(!p.polling(|| t0 + us(100)), "the bound is honoured");
        assert!(!p.polling(|| t0 + us(50)), "and stays ended");
        assert!(
            !p.answered(t0 + us(150), t0),
            "answered after the poll ended"
        );

        assert!(p.start(t0, 1));
        assert!(p.answered(t0 + us(30), t0), "answered while polling");
        assert!(!p.polling(|| t0 + us(31)), "the answer ends the poll");

        // Slow answers (5 ms) turn the poll off until short round trips bring it back.
        for _ in 0..8 {
            p.start(t0, 1);
            p.answered(t0 + Duration::from_millis(5), t0);
        }
        assert!(
            !p.start(t0, 1),
            "the recent round trips are longer than the bound"
        );
        let mut calls = 0;
        while !p.start(t0, 1) {
            p.answered(t0 + us(20), t0);
            calls += 1;
            assert!(calls < 100, "never came back");
        }
        assert!(calls > 1);
    }
}
