//! Prometheus metrics: the registry, the per-request recorder, and the HTTP exporter.
//!
//! Names follow the Prometheus conventions (`dmbridge_` prefix, base units, `_total` for
//! counters, `_seconds` for durations); the exposition is OpenMetrics text from
//! `prometheus-client`. Served on `[metrics] listen` (off unless configured; the example
//! binds loopback), at `/metrics`.
//!
//! Per-request cost: the node loop owns a [`Recorder`] that resolves each label set once
//! (first time a peer/application/command/Result-Code combination is seen) into a counter
//! handle kept in its own map; afterwards a request costs a comparison with the previous
//! request's labels (steady traffic repeats them: one-entry caches), else a look-up in that
//! map (FxHash of a few integers; the peer's name is hashed only when it changes), and relaxed
//! atomic increments — no allocation, no lock. The latency histograms are
//! [`LatencyHistogram`]s, plain atomics per bucket (the crate's own `Histogram` takes a lock
//! per observation). Gauges that describe state (peer and watchdog state, workers, rings,
//! process) are read at scrape time from the sources the driver registers.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

pub use dmnode::observe::{Direction, LocalCause, Observer};

/// Upper bounds (microseconds) of the latency buckets: those of [`dmshm::times::BOUNDS_US`]
/// (why these: there), which the workers' own histograms in shared memory use too, so every
/// `dmbridge_script_request_*` histogram can be subtracted from another bucket by bucket.
const LATENCY_BOUNDS_US: [u64; 22] = dmshm::times::BOUNDS_US;

/// The shm driver's histograms of the originate path (requests the scripts send), made
/// before the exporter exists and shared with it.
#[derive(Clone, Debug, Default)]
pub struct ScriptRequestLatency {
    /// A worker's request record taken -> its outcome record ready to publish, every request
    /// (answers, timeouts and requests refused before sending alike); the peer's own time is
    /// in it.
    pub round_trip: LatencyHistogram,
    /// For each answered request, the round trip minus the time the node waited for the
    /// peer's answer (our request written -> its answer read): what the bridge itself adds
    /// to a script's request, request by request (issue 15 item 3 asks it at load).
    pub bridge: LatencyHistogram,
    /// The SIP-server side of the same requests, kept by the workers in their segments
    /// ([`dmshm::times`]) and summed at scrape time: each request's round trip as the
    /// library saw it (call entered -> completion handed back), and that minus the round
    /// trip above (what the SIP server's process and the hops between the processes add).
    pub workers: Arc<dmshm::times_board::ScriptTimesBoard>,
    /// Script requests the bridge refused to send, by cause (`dmbridge_shm_refused_total`):
    /// `reply_to_gone`, a reply-to request whose address named no live attachment (DESIGN
    /// §5; the request is not sent and nobody gets an outcome); `reply_to_full`, a reply-to
    /// request whose receiver was owed `max_in_flight` outcomes already (not sent; the
    /// receiver gets a not-sent outcome while its queue is short, else it is dropped).
    pub refused: Family<CauseLabels, Counter>,
}

/// The `cause` of [`ScriptRequestLatency::refused`] for a reply-to request whose attachment
/// was gone.
pub const REFUSED_REPLY_TO_GONE: &str = "reply_to_gone";

/// The `cause` of [`ScriptRequestLatency::refused`] for a reply-to request whose receiver
/// was owed the most outcomes the bridge holds for one worker
/// (`dmshm::bridge::Bridge::accept_reply_to`).
pub const REFUSED_REPLY_TO_FULL: &str = "reply_to_full";

/// Which of a worker's two histograms ([`dmshm::times::ScriptTimes`]).
#[derive(Clone, Copy, Debug)]
enum WorkerPart {
    RoundTrip,
    OutsideBridge,
}

/// One of the workers' histograms, summed over the workers (and those gone) when scraped.
#[derive(Clone, Debug)]
struct WorkerHistogram {
    board: Arc<dmshm::times_board::ScriptTimesBoard>,
    part: WorkerPart,
}

impl TypedMetric for WorkerHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for WorkerHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let sum = self.board.sum();
        let h = match self.part {
            WorkerPart::RoundTrip => sum.round_trip,
            WorkerPart::OutsideBridge => sum.outside_bridge,
        };
        encode_latency(encoder, |i| h.buckets[i], h.sum_ns as f64 / 1e9)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A latency histogram on atomics: `observe` is a bucket search and three relaxed
/// increments. Clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<HistInner>);

#[derive(Debug, Default)]
struct HistInner {
    /// Non-cumulative counts; the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one latency; durations over the last bound land in +Inf, so a timeout still shows.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // The first bound >= us (len: +Inf), as the workers' histograms count.
        self.0.buckets[dmshm::times::bucket(d)].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let sum = self.0.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encode_latency(encoder, |i| self.0.buckets[i].load(Ordering::Relaxed), sum)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A latency histogram on [`LATENCY_BOUNDS_US`]: `count(i)` is bucket `i`'s non-cumulative
/// count (the last +Inf), `sum` the observations' sum in seconds. The count exported is the
/// buckets' sum, so a scrape racing an observation stays coherent.
fn encode_latency(
    mut encoder: MetricEncoder,
    count: impl Fn(usize) -> u64,
    sum: f64,
) -> Result<(), std::fmt::Error> {
    let mut buckets = [(0.0, 0u64); LATENCY_BOUNDS_US.len() + 1];
    for (i, b) in buckets.iter_mut().enumerate() {
        let bound = LATENCY_BOUNDS_US
            .get(i)
            .map_or(f64::MAX, |&us| us as f64 / 1e6);
        *b = (bound, count(i));
    }
    let total = buckets.iter().map(|b| b.1).sum();
    encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, total, &buckets, None)
}

fn direction_label(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MsgLabels {
    peer: String,
    app: String,
    command: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    peer: String,
    app: String,
    command: String,
    direction: String,
    result_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerAppLabels {
    peer: String,
    app: String,
}

/// The `cause` label of the refusal counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// A short stable name (`reply_to_gone`, `cer_unknown_peer`, ...).
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LocalAnswerLabels {
    result_code: String,
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

/// One peer as the gauges show it (read at scrape time).
#[derive(Clone, Debug, Default)]
pub struct PeerGauge {
    /// The peer's Origin-Host, the `peer` label.
    pub host: String,
    /// The RFC 6733 §5.6 state, e.g. "I-Open", "Closed".
    pub state: String,
    /// The RFC 3539 watchdog state, e.g. "Okay", "Suspect".
    pub watchdog: String,
    /// Whether new requests may be routed to it (open, watchdog OKAY, not being stopped).
    pub usable: bool,
    /// Our requests waiting for its answers: a growing number means the peer is slow or gone.
    pub pending: u64,
    /// Held down by `ctl peer disable`.
    pub disabled: bool,
}

/// One attached worker as the gauges show it.
#[derive(Clone, Debug, Default)]
pub struct WorkerGauge {
    /// The worker's slot, the `slot` label.
    pub slot: u32,
    /// The worker's pid, so a gauge can be matched with `ps`.
    pub pid: u32,
    /// The worker's name from its Hello.
    pub name: String,
    /// Requests handed to it and not replied to.
    pub in_flight: u64,
    /// Reply-to outcomes it is owed: requests other attachments sent naming it, accepted and
    /// not yet in its answers ring (at most `max_in_flight`; a worker that stops taking its
    /// answers shows it here before the refusals start).
    pub reply_to_owed: u64,
    /// Bytes waiting in its requests ring (bridge to worker).
    pub ring_requests_bytes: u64,
    /// Bytes waiting in its answers ring (bridge to worker).
    pub ring_answers_bytes: u64,
    /// Bytes waiting in its ring to the bridge.
    pub ring_to_bridge_bytes: u64,
    /// Requests its ring had no room for, since it attached.
    pub requests_ring_full: u64,
    /// Answers its answers ring had no room for (queued), since it attached.
    pub answers_ring_full: u64,
}

type Source<T> = Box<dyn Fn() -> Vec<T> + Send + Sync>;

#[derive(Default)]
struct Sources {
    peers: Option<Source<PeerGauge>>,
    workers: Option<Source<WorkerGauge>>,
}

/// Everything the registry shows; shared by the node loop (through [`Recorder`]), the
/// shared-memory driver and the exporter.
pub struct Metrics {
    registry: Registry,
    requests: Family<MsgLabels, Counter>,
    answers: Family<AnswerLabels, Counter>,
    answer_latency: Family<PeerAppLabels, LatencyHistogram>,
    /// The bridge's and the SIP server's time per incoming request: from the node loop
    /// taking the request's frame (its delivery to the worker) to the node loop taking the
    /// script's reply (and building the answer, which it hands to the writer in the same
    /// turn). It leaves out only the hops between the socket and the node loop on either
    /// side (reader -> loop, loop -> writer), which `dmbridge run --echo` has as well.
    pub script_reply_latency: LatencyHistogram,
    /// The originate path's round trip through the bridge: from the shm driver taking a
    /// worker's request record to the driver publishing its outcome record (one per request:
    /// answers, timeouts and requests refused before sending alike). The peer's own
    /// time is in it too; `dmbridge_answer_latency_seconds` (our request written -> its
    /// answer read, by the node loop) is that part; `script_request_latency.bridge` is the
    /// difference, taken request by request.
    pub script_request_latency: ScriptRequestLatency,
    refusals: Family<CauseLabels, Counter>,
    local_answers: Family<LocalAnswerLabels, Counter>,
    events: Family<EventLabels, Counter>,
    pending: Gauge<i64, AtomicI64>,
    reloads: Family<[(&'static str, &'static str); 1], Counter>,
    sources: Arc<Mutex<Sources>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every dmbridge family registered and zero values; share it between the node
    /// loop's [`Recorder`] and the exporter.
    pub fn new() -> Metrics {
        Metrics::with_script_request_latency(ScriptRequestLatency::default())
    }

    /// [`Metrics::new`] showing `script_request_latency`, the histograms the shm driver was
    /// started with (they exist before the exporter).
    pub fn with_script_request_latency(script_request_latency: ScriptRequestLatency) -> Metrics {
        let mut registry = Registry::default();
        let requests: Family<MsgLabels, Counter> =
            family(&mut registry, "dmbridge_requests", "Diameter requests (not base protocol) by peer, application, command and direction (in: from the peer, out: ours)");
        let answers: Family<AnswerLabels, Counter> =
            family(&mut registry, "dmbridge_answers", "Diameter answers by peer, application, command, direction (in: to our requests, out: ours) and Result-Code");
        let answer_latency = Family::<PeerAppLabels, LatencyHistogram>::default();
        registry.register(
            "dmbridge_answer_latency_seconds",
            "Time from sending our request to the peer's answer",
            answer_latency.clone(),
        );
        let script_reply_latency = LatencyHistogram::default();
        registry.register(
            "dmbridge_script_reply_latency_seconds",
            "Time from handing an incoming request to a SIP-server worker to its script's reply",
            script_reply_latency.clone(),
        );
        registry.register(
            "dmbridge_script_request_latency_seconds",
            "Time from a SIP-server worker's request reaching the bridge to its answer handed back (the peer's time included)",
            script_request_latency.round_trip.clone(),
        );
        registry.register(
            "dmbridge_script_request_bridge_seconds",
            "The bridge's own part of each answered script request: its round trip through the bridge minus the time waited for the peer's answer",
            script_request_latency.bridge.clone(),
        );
        registry.register(
            "dmbridge_script_request_worker_seconds",
            "A script's request as the SIP-server worker's library saw it, from the call to the outcome handed back to the module (requests the bridge answered; the peer's time included; a reply-to request from the sending worker's call to the outcome handed back to the receiving worker)",
            WorkerHistogram {
                board: script_request_latency.workers.clone(),
                part: WorkerPart::RoundTrip,
            },
        );
        registry.register(
            "dmbridge_script_request_outside_bridge_seconds",
            "The SIP-server side of each script request the bridge answered: the worker's round trip minus the bridge's (the library, the rings, doorbells and wake-ups)",
            WorkerHistogram {
                board: script_request_latency.workers.clone(),
                part: WorkerPart::OutsideBridge,
            },
        );
        // Shown at 0 from the start, so an alert on its rate needs no "absent" case.
        for cause in [REFUSED_REPLY_TO_GONE, REFUSED_REPLY_TO_FULL] {
            let _ = script_request_latency.refused.get_or_create(&CauseLabels {
                cause: cause.to_string(),
            });
        }
        registry.register(
            "dmbridge_shm_refused",
            "Script requests the bridge refused to send, by cause (reply_to_gone: the reply-to address named an attachment no longer attached; reply_to_full: that attachment was owed the most outcomes the bridge holds for one worker)",
            script_request_latency.refused.clone(),
        );
        let refusals: Family<CauseLabels, Counter> = family(
            &mut registry,
            "dmbridge_refusals",
            "Connections, messages and peers refused, by cause",
        );
        let local_answers: Family<LocalAnswerLabels, Counter> = family(
            &mut registry,
            "dmbridge_local_answers",
            "Answers the bridge made itself (no script involved), by Result-Code and cause",
        );
        let events: Family<EventLabels, Counter> =
            family(&mut registry, "dmbridge_events", "Protocol events: duplicate (answered from the duplicate cache), retransmission (sent again with the T flag after failover), failover, answer_unmatched (an answer no request of ours waits for: late, after its timeout or a failover, and dropped)");
        let pending = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "dmbridge_pending_requests",
            "Our requests waiting for an answer",
            pending.clone(),
        );
        let reloads = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "dmbridge_config_reloads",
            "Configuration reloads by result (ok, refused)",
            reloads.clone(),
        );
        let sources = Arc::new(Mutex::new(Sources::default()));
        registry.register_collector(Box::new(StateCollector {
            sources: sources.clone(),
        }));
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            requests,
            answers,
            answer_latency,
            script_reply_latency,
            script_request_latency,
            refusals,
            local_answers,
            events,
            pending,
            reloads,
            sources,
        }
    }

    /// Where the peer gauges come from (the node's status).
    pub fn set_peer_source(&self, f: impl Fn() -> Vec<PeerGauge> + Send + Sync + 'static) {
        lock(&self.sources).peers = Some(Box::new(f));
    }

    /// Where the worker and ring gauges come from (the shared-memory driver).
    pub fn set_worker_source(&self, f: impl Fn() -> Vec<WorkerGauge> + Send + Sync + 'static) {
        lock(&self.sources).workers = Some(Box::new(f));
    }

    /// A refusal (not per request: connections, CERs, frames), counted by cause.
    pub fn refusal(&self, cause: &str) {
        self.refusals
            .get_or_create(&CauseLabels {
                cause: cause.to_string(),
            })
            .inc();
    }

    /// A configuration reload, accepted or refused.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&[("result", if ok { "ok" } else { "refused" })])
            .inc();
    }

    /// The exposition, OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }
}

/// A counter family registered under `name`.
fn family<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

/// Increments the counter kept in `cache` under `key`; the first time, it is made in `family`
/// from `labels()` and kept, so later calls hash a small key instead of the label strings (see
/// [`Recorder`]).
fn inc_cached<K, L>(
    cache: &mut HashMap<K, Counter>,
    key: K,
    family: &Family<L, Counter>,
    labels: impl FnOnce() -> L,
) where
    K: std::hash::Hash + Eq,
    L: Clone + std::hash::Hash + Eq,
{
    cache
        .entry(key)
        .or_insert_with(|| family.get_or_create(&labels()).clone())
        .inc();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Label values of an application id and command code, resolved once per combination.
pub trait Names {
    /// e.g. "CCR"/"CCA" (or the decimal code when the dictionary has no name).
    fn command(&self, app: u32, cmd: u32, request: bool) -> String;
}

/// (peer index, application, command, direction).
type RequestKey = (u32, u32, u32, Direction);
/// (peer index, application, command, direction, Result-Code).
type AnswerKey = (u32, u32, u32, Direction, u32);

/// The node loop's handle on the metrics: counters resolved once per label set and kept
/// here, so a request costs map look-ups and atomic increments (see the module docs).
pub struct Recorder {
    m: Arc<Metrics>,
    names: Box<dyn Names + Send>,
    peers: FxHashMap<Box<str>, u32>,
    peer_names: Vec<String>,
    requests: FxHashMap<RequestKey, Counter>,
    answers: FxHashMap<AnswerKey, Counter>,
    latency: FxHashMap<(u32, u32), LatencyHistogram>,
    /// The previous message's peer and handles (see the module docs).
    last_peer: Option<u32>,
    last_request: Option<(RequestKey, Counter)>,
    last_answer: Option<(AnswerKey, Counter)>,
    last_latency: Option<((u32, u32), LatencyHistogram)>,
    local: HashMap<(u32, &'static str), Counter>,
    events: HashMap<&'static str, Counter>,
    refusals: HashMap<&'static str, Counter>,
}

impl Recorder {
    /// The node loop's recorder over `m`; `names` turns application and command codes into label
    /// values once per combination.
    pub fn new(m: Arc<Metrics>, names: Box<dyn Names + Send>) -> Recorder {
        Recorder {
            m,
            names,
            peers: FxHashMap::default(),
            peer_names: Vec::new(),
            requests: FxHashMap::default(),
            answers: FxHashMap::default(),
            latency: FxHashMap::default(),
            last_peer: None,
            last_request: None,
            last_answer: None,
            last_latency: None,
            local: HashMap::new(),
            events: HashMap::new(),
            refusals: HashMap::new(),
        }
    }

    /// The registry the recorder writes to, for gauges and the exporter.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.m
    }

    fn peer(&mut self, host: &str) -> u32 {
        if let Some(i) = self.last_peer {
            if self.peer_names[i as usize] == host {
                return i;
            }
        }
        let i = match self.peers.get(host) {
            Some(&i) => i,
            None => {
                let i = self.peer_names.len() as u32;
                self.peer_names.push(host.to_string());
                self.peers.insert(host.into(), i);
                i
            }
        };
        self.last_peer = Some(i);
        i
    }

    /// A request received from (`In`) or sent to (`Out`) `peer`.
    pub fn request(&mut self, peer: &str, app: u32, cmd: u32, dir: Direction) {
        let key = (self.peer(peer), app, cmd, dir);
        if let Some((k, c)) = &self.last_request {
            if *k == key {
                c.inc();
                return;
            }
        }
        let c = match self.requests.get(&key) {
            Some(c) => c.clone(),
            None => {
                let labels = MsgLabels {
                    peer: self.peer_names[key.0 as usize].clone(),
                    app: app.to_string(),
                    command: self.names.command(app, cmd, true),
                    direction: direction_label(dir).to_string(),
                };
                let c = self.m.requests.get_or_create(&labels).clone();
                self.requests.insert(key, c.clone());
                c
            }
        };
        c.inc();
        self.last_request = Some((key, c));
    }

    /// An answer received (`In`, to our request, with its latency) or sent (`Out`).
    pub fn answer(
        &mut self,
        peer: &str,
        app: u32,
        cmd: u32,
        dir: Direction,
        result_code: u32,
        latency: Option<Duration>,
    ) {
        let p = self.peer(peer);
        let key = (p, app, cmd, dir, result_code);
        match &self.last_answer {
            Some((k, c)) if *k == key => {
                c.inc();
            }
            _ => {
                let c = match self.answers.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let labels = AnswerLabels {
                            peer: self.peer_names[p as usize].clone(),
                            app: app.to_string(),
                            command: self.names.command(app, cmd, false),
                            direction: direction_label(dir).to_string(),
                            result_code: result_code.to_string(),
                        };
                        let c = self.m.answers.get_or_create(&labels).clone();
                        self.answers.insert(key, c.clone());
                        c
                    }
                };
                c.inc();
                self.last_answer = Some((key, c));
            }
        }
        let Some(d) = latency else { return };
        let key = (p, app);
        if let Some((k, h)) = &self.last_latency {
            if *k == key {
                h.observe(d);
                return;
            }
        }
        let h = match self.latency.get(&key) {
            Some(h) => h.clone(),
            None => {
                let labels = PeerAppLabels {
                    peer: self.peer_names[p as usize].clone(),
                    app: app.to_string(),
                };
                let h = self.m.answer_latency.get_or_create(&labels).clone();
                self.latency.insert(key, h.clone());
                h
            }
        };
        h.observe(d);
        self.last_latency = Some((key, h));
    }

    /// An answer the bridge made itself (3001, 3002, 3004, 5012...), with why.
    pub fn local_answer(&mut self, result_code: u32, cause: LocalCause) {
        let cause = cause.as_str();
        inc_cached(
            &mut self.local,
            (result_code, cause),
            &self.m.local_answers,
            || LocalAnswerLabels {
                result_code: result_code.to_string(),
                cause: cause.to_string(),
            },
        );
    }

    /// A protocol event: "duplicate", "retransmission", "failover", "answer_unmatched",
    /// "busy_resent", "redirected", "redirect_cached", "redirect_cache_used",
    /// "redirect_cache_time_missing", "redirect_cache_time_capped".
    pub fn event(&mut self, event: &'static str) {
        inc_cached(&mut self.events, event, &self.m.events, || EventLabels {
            event: event.to_string(),
        });
    }

    /// Our requests waiting for answers, now.
    pub fn pending(&self, n: usize) {
        self.m.pending.set(n as i64);
    }
}

impl Observer for Recorder {
    fn request(&mut self, peer: &str, app: u32, cmd: u32, dir: Direction) {
        Recorder::request(self, peer, app, cmd, dir);
    }
    fn answer(
        &mut self,
        peer: &str,
        app: u32,
        cmd: u32,
        dir: Direction,
        result_code: u32,
        latency: Option<Duration>,
    ) {
        Recorder::answer(self, peer, app, cmd, dir, result_code, latency);
    }
    fn local_answer(&mut self, result_code: u32, cause: LocalCause) {
        Recorder::local_answer(self, result_code, cause);
    }
    fn refusal(&mut self, cause: &'static str) {
        inc_cached(&mut self.refusals, cause, &self.m.refusals, || {
            CauseLabels {
                cause: cause.to_string(),
            }
        });
    }
    fn event(&mut self, event: &'static str) {
        Recorder::event(self, event);
    }
    fn pending(&mut self, count: usize) {
        Recorder::pending(self, count);
    }
    fn reply_latency(&mut self, latency: Duration) {
        self.m.script_reply_latency.observe(latency);
    }
}

/// Peer, watchdog, worker and ring gauges, read from the registered sources at scrape time.
struct StateCollector {
    sources: Arc<Mutex<Sources>>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

/// The states a peer can be in (RFC 6733 §5.6), each exported as 0/1 so that every state
/// has a series (a missing series is not a 0 in PromQL).
const PEER_STATES: [&str; 8] = [
    "Closed",
    "Wait-Conn-Ack",
    "Wait-I-CEA",
    "Wait-Conn-Ack/Elect",
    "Wait-Returns",
    "I-Open",
    "R-Open",
    "Closing",
];
const WATCHDOG_STATES: [&str; 5] = ["Initial", "Okay", "Suspect", "Down", "Reopen"];

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (peers, workers) = {
            let s = lock(&self.sources);
            (
                s.peers.as_ref().map(|f| f()).unwrap_or_default(),
                s.workers.as_ref().map(|f| f()).unwrap_or_default(),
            )
        };
        per_peer_state(
            &mut encoder,
            "dmbridge_peer_state",
            "RFC 6733 peer state (1 for the current one)",
            &peers,
            &PEER_STATES,
            |p| &p.state,
        )?;
        per_peer_state(
            &mut encoder,
            "dmbridge_peer_watchdog_state",
            "RFC 3539 watchdog state (1 for the current one)",
            &peers,
            &WATCHDOG_STATES,
            |p| &p.watchdog,
        )?;
        per_peer(
            &mut encoder,
            "dmbridge_peer_up",
            "1 when new requests may be routed to the peer (open, watchdog okay, not disabled)",
            &peers,
            |p| i64::from(p.usable),
        )?;
        per_peer(
            &mut encoder,
            "dmbridge_peer_disabled",
            "1 when an operator disabled the peer (dmbridge ctl peer disable)",
            &peers,
            |p| i64::from(p.disabled),
        )?;
        per_peer(
            &mut encoder,
            "dmbridge_peer_pending_requests",
            "Our requests waiting for this peer's answer (as of the peer's last state change)",
            &peers,
            |p| p.pending as i64,
        )?;
        encoder
            .encode_descriptor(
                "dmbridge_workers_attached",
                "SIP-server worker processes attached over shared memory",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(workers.len() as i64))?;
        per_worker(
            &mut encoder,
            "dmbridge_worker_in_flight_requests",
            "Requests handed to the worker and not replied to",
            &workers,
            |w| w.in_flight,
        )?;
        per_worker(
            &mut encoder,
            "dmbridge_worker_reply_to_owed",
            "Reply-to outcomes the worker is owed (requests other workers sent naming it, \
             accepted, not yet in its answers ring; at most 4096, then they are refused)",
            &workers,
            |w| w.reply_to_owed,
        )?;
        per_worker_ring(
            &mut encoder,
            "dmbridge_worker_ring_depth_bytes",
            "Bytes waiting in a worker's ring, frames included (ring: requests and answers \
             from the bridge to the worker, to_bridge from the worker), as of the bridge's last \
             status publication (at least once a second while workers are attached)",
            MetricType::Gauge,
            &workers,
            |w| {
                [
                    ("requests", w.ring_requests_bytes),
                    ("answers", w.ring_answers_bytes),
                    ("to_bridge", w.ring_to_bridge_bytes),
                ]
            },
        )?;
        per_worker_ring(
            &mut encoder,
            "dmbridge_worker_ring_full",
            "Times a worker's ring had no room since it attached (ring=requests: the request \
             went to another worker or was answered 3004; ring=answers: the answer was queued)",
            MetricType::Counter,
            &workers,
            |w| {
                [
                    ("requests", w.requests_ring_full),
                    ("answers", w.answers_ring_full),
                ]
            },
        )?;
        Ok(())
    }
}

/// A gauge per attached worker (labels `slot`, `name`).
fn per_worker(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    workers: &[WorkerGauge],
    value: impl Fn(&WorkerGauge) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for w in workers {
        let slot = w.slot.to_string();
        e.encode_family(&[("slot", slot.as_str()), ("name", w.name.as_str())])?
            .encode_gauge(&(value(w) as i64))?;
    }
    Ok(())
}

/// A gauge or counter per worker and ring (labels `slot`, `name`, `ring`).
fn per_worker_ring<const N: usize>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    workers: &[WorkerGauge],
    values: impl Fn(&WorkerGauge) -> [(&'static str, u64); N],
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, kind)?;
    for w in workers {
        let slot = w.slot.to_string();
        for (ring, v) in values(w) {
            let labels = [
                ("slot", slot.as_str()),
                ("name", w.name.as_str()),
                ("ring", ring),
            ];
            let mut m = e.encode_family(&labels)?;
            match kind {
                MetricType::Counter => {
                    m.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)?
                }
                _ => m.encode_gauge(&(v as i64))?,
            }
        }
    }
    Ok(())
}

/// One gauge with a `peer` label, a value per peer.
fn per_peer(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    peers: &[PeerGauge],
    value: impl Fn(&PeerGauge) -> i64,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for p in peers {
        e.encode_family(&[("peer", p.host.as_str())])?
            .encode_gauge(&value(p))?;
    }
    Ok(())
}

/// A 0/1 gauge per peer and known state (labels `peer`, `state`), 1 for the current one.
fn per_peer_state(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    peers: &[PeerGauge],
    known: &[&str],
    current: impl Fn(&PeerGauge) -> &String,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for p in peers {
        let now = current(p);
        for st in known_or(known, now) {
            e.encode_family(&[("peer", p.host.as_str()), ("state", st)])?
                .encode_gauge(&i64::from(st == now.as_str()))?;
        }
    }
    Ok(())
}

/// The known states, plus `current` when it is not one of them.
fn known_or<'a>(known: &'a [&'a str], current: &'a str) -> Vec<&'a str> {
    let mut v = known.to_vec();
    if !known.contains(&current) {
        v.push(current);
    }
    v
}

/// The standard `process_*` metrics, from /proc/self.
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        encoder
            .encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                &p.cpu_seconds,
                None,
            )?;
        for (name, help, v) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.rss_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.vsize_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                p.threads,
            ),
        ] {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&(v as i64))?;
        }
        encoder
            .encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&p.start_time_seconds)?;
        Ok(())
    }
}

struct ProcessStats {
    cpu_seconds: f64,
    rss_bytes: u64,
    vsize_bytes: u64,
    open_fds: u64,
    max_fds: u64,
    threads: u64,
    start_time_seconds: f64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces and parentheses).
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state): utime 14, stime 15, threads 20, starttime 22, vsize 23,
        // rss 24 (pages).
        let field = |n: usize| f.get(n - 3).and_then(|s| s.parse::<u64>().ok());
        let utime = field(14)?;
        let stime = field(15)?;
        let threads = field(20)?;
        let start_ticks = field(22)?;
        let vsize = field(23)?;
        let rss_pages = field(24)?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|s| s.trim().parse::<u64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|s| s.parse().ok())
            })
            .unwrap_or(0);
        Some(ProcessStats {
            cpu_seconds: (utime + stime) as f64 / USER_HZ,
            rss_bytes: rss_pages * 4096,
            vsize_bytes: vsize,
            open_fds,
            max_fds,
            threads,
            start_time_seconds: boot as f64 + start_ticks as f64 / USER_HZ,
        })
    }
}

/// The HTTP exporter: `GET /metrics` (OpenMetrics text), anything else 404. One request per
/// connection; the request head must arrive within 5 s and fit 8 kB. Bind it to loopback or a
/// management network: it has no authentication (the example configuration leaves it off).
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer_http(stream, &m)).await;
        });
    }
}

async fn answer_http(mut s: tokio::net::TcpStream, m: &Metrics) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let path = path.map(|p| p.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, ctype, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            m.encode(),
        ),
        (Some(b"GET"), _) => ("404 Not Found", "text/plain", "see /metrics\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let mut resp = String::with_capacity(body.len() + 128);
    let _ = write!(
        resp,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    resp.push_str(&body);
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Codes;
    impl Names for Codes {
        fn command(&self, _app: u32, cmd: u32, request: bool) -> String {
            format!("{cmd}{}", if request { "R" } else { "A" })
        }
    }

    #[test]
    fn interleaved_label_sets_are_each_counted_exactly() {
        // The one-entry caches must never count a message under the previous one's labels.
        let m = Arc::new(Metrics::new());
        let mut r = Recorder::new(m.clone(), Box::new(Codes));
        let d = Some(Duration::from_micros(10));
        for i in 0..10u32 {
            let peer = if i % 2 == 0 { "a" } else { "bb" };
            let cmd = if i % 3 == 0 { 301 } else { 302 };
            r.request(peer, 4, cmd, Direction::Out);
            r.answer(peer, 4, cmd, Direction::In, 2001 + i % 2, d);
        }
        let text = m.encode();
        // i even -> peer a, 2001; i % 3 == 0 -> 301: a/301 = {0, 6}, a/302 = {2, 4, 8},
        // bb/301 = {3, 9}, bb/302 = {1, 5, 7}.
        for (peer, cmd, code, n) in [
            ("a", 301, 2001, 2),
            ("a", 302, 2001, 3),
            ("bb", 301, 2002, 2),
            ("bb", 302, 2002, 3),
        ] {
            let req = format!(
                r#"dmbridge_requests_total{{peer="{peer}",app="4",command="{cmd}R",direction="out"}} {n}"#
            );
            let ans = format!(
                r#"dmbridge_answers_total{{peer="{peer}",app="4",command="{cmd}A",direction="in",result_code="{code}"}} {n}"#
            );
            assert!(text.contains(&req), "missing {req} in\n{text}");
            assert!(text.contains(&ans), "missing {ans} in\n{text}");
        }
        for (peer, n) in [("a", 5), ("bb", 5)] {
            let lat =
                format!(r#"dmbridge_answer_latency_seconds_count{{peer="{peer}",app="4"}} {n}"#);
            assert!(text.contains(&lat), "missing {lat} in\n{text}");
        }
    }

    #[test]
    fn recorder_counts_reuse_handles_and_encode_as_prometheus_names() {
        let m = Arc::new(Metrics::new());
        let mut r = Recorder::new(m.clone(), Box::new(Codes));
        for _ in 0..3 {
            r.request("hss1", 16777216, 301, Direction::Out);
            r.answer(
                "hss1",
                16777216,
                301,
                Direction::In,
                2001,
                Some(Duration::from_micros(700)),
            );
        }
        r.answer("hss1", 16777216, 301, Direction::In, 5012, None);
        r.local_answer(3004, LocalCause::Application("no_worker"));
        r.event("duplicate");
        r.pending(7);
        m.refusal("cer_unknown_peer");
        m.set_peer_source(|| {
            vec![PeerGauge {
                host: "hss1".into(),
                state: "I-Open".into(),
                watchdog: "Okay".into(),
                usable: true,
                pending: 2,
                disabled: false,
            }]
        });
        assert_eq!(r.requests.len(), 1);
        let text = m.encode();
        for want in [
            r#"dmbridge_requests_total{peer="hss1",app="16777216",command="301R",direction="out"} 3"#,
            r#"dmbridge_answers_total{peer="hss1",app="16777216",command="301A",direction="in",result_code="2001"} 3"#,
            r#"dmbridge_answers_total{peer="hss1",app="16777216",command="301A",direction="in",result_code="5012"} 1"#,
            r#"dmbridge_answer_latency_seconds_bucket{le="0.001",peer="hss1",app="16777216"} 3"#,
            r#"dmbridge_answer_latency_seconds_count{peer="hss1",app="16777216"} 3"#,
            r#"dmbridge_local_answers_total{result_code="3004",cause="no_worker"} 1"#,
            r#"dmbridge_events_total{event="duplicate"} 1"#,
            r#"dmbridge_pending_requests 7"#,
            r#"dmbridge_refusals_total{cause="cer_unknown_peer"} 1"#,
            r#"dmbridge_peer_state{peer="hss1",state="I-Open"} 1"#,
            r#"dmbridge_peer_state{peer="hss1",state="Closed"} 0"#,
            r#"dmbridge_peer_up{peer="hss1"} 1"#,
            r#"dmbridge_workers_attached 0"#,
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut reg = Registry::default();
        reg.register("t_seconds", "t", h.clone());
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &reg).unwrap();
        assert!(s.contains(r#"t_seconds_bucket{le="0.00005"} 0"#), "{s}");
        assert!(s.contains(r#"t_seconds_bucket{le="0.0001"} 1"#), "{s}");
        assert!(s.contains(r#"t_seconds_bucket{le="0.00025"} 1"#), "{s}");
        assert!(s.contains(r#"t_seconds_bucket{le="0.005"} 2"#), "{s}");
        assert!(s.contains(r#"t_seconds_bucket{le="+Inf"} 3"#), "{s}");
        assert!(s.contains("t_seconds_count 3"), "{s}");
        assert_eq!(h.count(), 3);
    }
}
