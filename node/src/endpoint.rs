//! The whole node as one sans-IO state machine (the analogue of quinn-proto's `Endpoint`).
//!
//! [`Endpoint`] ties the pieces together — the peer table and its state machines, the router,
//! the pending table, the duplicate cache, request completion and answer building — and
//! exposes them as inputs (a connection was accepted, a frame arrived, the application
//! replied, a request was submitted, time passed) and [`Output`]s (transmit these bytes on
//! that connection, close it, connect there, deliver this request to the application, this
//! is the outcome of a request we sent). The
//! tokio driver in the runtime crate (`dmbridge-bridge`, its `driver`) only moves bytes and
//! time between sockets and this type; every protocol decision is here and unit-tested
//! without sockets by wiring endpoints together in memory.
//!
//! Outcomes of originated requests leave as [`Output::Outcome`] with the [`RequestId`] they
//! were submitted under, as soon as they are known — polled like everything else, symmetric
//! with incoming requests ([`Output::Deliver`] with a token): no channel, no task per request.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dmdeadline::DeadlineQueue;
use dmproto::dict::Dictionary;
use dmproto::{FrameError, Message, Validator};
use rustc_hash::FxHashMap;

use crate::answer::{self, Origin};
use crate::app::{IncomingRequest, OutgoingRequest, PeerInfo, Reply, RequestError, RequestId};
use crate::arena::{Arena, Pool};
use crate::config::{AppAdvert, Config, PeerMode};
use crate::delivery::{self, Delivery};
use crate::duplicates::{DupCache, DupCheck, Requester};
use crate::log_limit::LogLimit;
use crate::observe::{Direction, LocalCause, Nothing, Observer};
use crate::outgoing::{self, RequestContext, SessionIds};
use crate::peer::capabilities::{inband, TlsRole};
use crate::peer::fsm::{Action, DisconnectCause};
use crate::peer::table::{NodeAction, PeerId, Peers, Received};
use crate::peer::{wire, Capabilities, ConnId};
use crate::pending::{self, PendingEntry, PendingTable};
use crate::redirect::{Learned, RedirectCache};
use crate::router::Router;
use crate::trust::{self, PeerCert, Refusal, Refusals};

/// How to dial a `transport = "tls"` peer ([`Endpoint::dial_tls`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsDial {
    /// The name its certificate must carry.
    pub host: String,
    /// Its own CA bundle, if configured.
    pub ca: Option<String>,
    /// The peer's `tls_verify_host` (default true): check that the certificate names
    /// `host`; operators turn it off for peers whose certificates name something else.
    pub verify_host: bool,
}

/// Why an operator's `dmbridge ctl peer disable|enable` was refused: the admin socket
/// shows the text, so an operator can tell a typo in the host from a peer in the wrong state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerAdminError {
    /// No configured or connected peer has this Origin-Host (or it was removed by a reload).
    #[error("no peer named {0}")]
    NoSuchPeer(String),
    /// `enable` of a peer that was never disabled: nothing to undo.
    #[error("peer {0} is not disabled")]
    NotDisabled(String),
}

/// What the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Queue one encoded message on the connection.
    Transmit {
        /// The connection, open or still in its capabilities exchange.
        conn: ConnId,
        /// One whole Diameter message, hop-by-hop id already set for this connection.
        bytes: Bytes,
    },
    /// Close the connection after what is queued has been written.
    Close {
        /// The connection; the endpoint sends nothing more on it. Report
        /// [`Endpoint::closed`] once the socket is gone, as for a close by the peer.
        conn: ConnId,
    },
    /// Open a connection to `addr`, then report [`Endpoint::connected`].
    Connect {
        /// The id the endpoint gave the attempt: report it back with the result.
        conn: ConnId,
        /// The peer's address; a name is resolved now, by the driver.
        addr: crate::config::Endpoint,
    },
    /// The capabilities exchange opened the connection: the driver lifts the small
    /// pre-CER message size limit to `max_message_size` (DESIGN §10).
    Opened {
        /// The connection now in state I-Open or R-Open (RFC 6733 §5.6).
        conn: ConnId,
    },
    /// In-band TLS (RFC 3588 §2.1): once what is queued on the plain connection (our CEA)
    /// is written, stop reading it as Diameter and run the TLS handshake on it in `role`
    /// (as a client, the server certificate must satisfy `peer`); then report
    /// [`Endpoint::inband_tls_up`] with the new stream attached, or [`Endpoint::tls_refused`]
    /// and [`Endpoint::closed`]. Bytes read past the CER/CEA belong to the handshake.
    StartTls {
        /// The plain connection that CER/CEA just agreed to secure.
        conn: ConnId,
        /// Client if we sent the CER (we initiated the connection), server otherwise.
        role: TlsRole,
        /// What the peer's certificate must satisfy (as for TLS at connect).
        peer: TlsDial,
    },
    /// Hand the request to the application; report its reply with [`Endpoint::reply`] under
    /// `token`. The core applies the reply timeout itself (5012 when it passes; a later
    /// reply is ignored).
    Deliver {
        /// Names this delivery in [`Endpoint::reply`]; never reused in a run.
        token: u64,
        /// The validated request and the peer it came from.
        request: IncomingRequest,
    },
    /// The requests delivered under `tokens` were answered by the node itself, without the
    /// application: 5012 at the drain timeout just before our DPR (RFC 6733 §5.4, §7.1.5;
    /// [`Endpoint::reply`] now ignores their replies). Told so that an application that
    /// still holds them counts a reply that comes later as late, not as an answer sent; one
    /// output per DPR, not per request.
    Withdrawn {
        /// Tokens of [`Output::Deliver`]s, each withdrawn once.
        tokens: Vec<u64>,
    },
    /// The one outcome of the request submitted under `id` ([`Endpoint::submit`]): its
    /// answer, or why there is none.
    Outcome {
        /// The id the driver submitted it under.
        id: RequestId,
        /// The answer (any Result-Code: an error answer is still an answer), or why none came.
        result: Result<Message, RequestError>,
        /// For an answer: how long the request waited for it, from its first write to a
        /// connection to the answer read (failover resends included). The driver subtracts
        /// it from the submitter's round trip to tell the node's own time, request by request.
        waited: Option<Duration>,
    },
}

/// A request handed to the application and not answered yet.
struct Delivered {
    conn: ConnId,
    /// The peer it came from (its host labels the answer's metrics without a lookup of
    /// the connection's owner).
    peer: PeerId,
    request: Message,
    deadline: Instant,
    /// When it was handed over (script reply latency).
    at: Instant,
}

/// One peer as reported by [`Endpoint::status`] (for `dm_status`-style monitoring).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its Diameter identity (as configured, or from the CER of an unknown peer).
    pub host: String,
    /// The RFC 6733 §5.6 state.
    pub state: crate::peer::State,
    /// The RFC 3539 watchdog state.
    pub watchdog: crate::peer::watchdog::WatchdogState,
    /// New requests may be routed to it.
    pub usable: bool,
    /// Shared applications (ids), while open.
    pub apps: Vec<u32>,
    /// Requests of ours waiting for its answers.
    pub pending: usize,
    /// Admitted through `allow_unknown_peers`, not configured.
    pub unknown: bool,
    /// Held down by the operator (`ctl peer disable`) until enabled.
    pub disabled: bool,
}

/// What a reload changed ([`Endpoint::reconfigure`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Peers (by host) new in the file: dialled now when `mode = "connect"`, as at startup.
    pub added: Vec<String>,
    /// Peers gone from the file: retired (they drain their pending requests, then DPR).
    pub removed: Vec<String>,
    /// Peers whose address, port or mode changed (used from their next connection).
    pub changed: Vec<String>,
    /// Settings that changed in the file but keep their running value until a restart.
    pub restart_needed: Vec<&'static str>,
}

/// Whom the outcome of a request we sent is for.
enum Owner {
    /// The application's request, submitted under this id.
    App(RequestId),
    /// A request we relay (RFC 6733 §6.1.8) for a peer.
    Relay(Relayed),
}

/// Where a relayed request came from (§6.1.8: "The source of the request is also saved"),
/// to send its answer back with the original hop-by-hop id (§6.2.2).
struct Relayed {
    conn: ConnId,
    hop_by_hop: u32,
    /// The request as received, for a local error answer if it cannot be delivered.
    request: Message,
}

/// A request we sent, as kept in the pending table.
struct Inflight {
    /// Whom the outcome is for.
    owner: Owner,
    /// The encoded request, for a resend after failover.
    request: Bytes,
    app_id: u32,
    cmd_code: u32,
    /// Peers it was sent to, so a resend goes elsewhere.
    tried: Tried,
    /// When it was first sent (answer latency).
    sent: Instant,
}

/// The peers a request went to, so that a resend after failover goes elsewhere: the first
/// few inline (a request is sent once, or a few times after failovers), so recording one
/// costs no allocation (issue 15 item 2); more spill into a `Vec`.
#[derive(Debug, Default)]
struct Tried {
    inline: [Option<PeerId>; TRIED_INLINE],
    /// All of them, once there are more than fit inline.
    more: Vec<PeerId>,
}

const TRIED_INLINE: usize = 4;

impl Tried {
    fn push(&mut self, peer: PeerId) {
        if self.more.is_empty() {
            if let Some(slot) = self.inline.iter_mut().find(|p| p.is_none()) {
                *slot = Some(peer);
                return;
            }
            self.more.extend(self.inline.iter().flatten());
        }
        self.more.push(peer);
    }

    /// Every peer tried, in a slice for the router.
    fn with_slice<R>(&self, f: impl FnOnce(&[PeerId]) -> R) -> R {
        if self.more.is_empty() {
            let mut ids = [PeerId(0); TRIED_INLINE];
            let mut n = 0;
            for p in self.inline.iter().flatten() {
                ids[n] = *p;
                n += 1;
            }
            f(&ids[..n])
        } else {
            f(&self.more)
        }
    }
}

/// Seeds for one run of the node: they make ids differ across restarts. The driver makes
/// them from the system clock and the process id; tests pass fixed ones.
#[derive(Clone, Copy, Debug)]
pub struct Seeds {
    /// Seconds since the epoch at start: Origin-State-Id, Session-Id high part.
    pub start_secs: u32,
    /// The microseconds within that second (0..1_000_000): where the Session-Id low part
    /// starts ([`SessionIds::new`]), so two runs started within one second do not make the
    /// same Session-Ids (RFC 6733 §8.8: "globally and eternally unique").
    pub start_micros: u32,
    /// Randomness for hop-by-hop and end-to-end ids, the watchdog jitter and the seed of the
    /// duplicate cache's hasher (whose keys the peers choose): unpredictable in a running
    /// node.
    pub random: u64,
}

/// The node's protocol state. See the module docs.
pub struct Endpoint {
    config: Arc<Config>,
    dict: &'static Dictionary,
    /// The dictionary's ABNFs compiled once: every incoming request is validated with it
    /// (same result as `dmproto::validate_request`, about half the cost). Shared, so a
    /// caller building many endpoints over one dictionary compiles it once
    /// ([`Endpoint::with_validator`]).
    validator: Arc<Validator<'static>>,
    local: Arc<Capabilities>,
    /// The applications we advertise: requests for others are answered 3007.
    apps: crate::peer::AppSet,
    peers: Peers,
    router: Router,
    pending: PendingTable<Inflight>,
    dup: DupCache,
    /// Buffers for the requests we originate, given back by their answers (bounded: see
    /// [`crate::arena::Pool`]).
    requests: Pool,
    /// The answers we build, encoded into shared chunks: no allocation per answer although
    /// the duplicate cache keeps each one (see [`crate::arena`] for the bound).
    answers: Arena,
    sessions: SessionIds,
    /// Open transport connections, with their local address (for Host-IP-Address). Looked up
    /// for every message sent; the keys are ids we allocate, not a peer's choice, so an
    /// unseeded fast hasher (FxHash) is enough, where SipHash cost ~140 instructions a lookup.
    conns: FxHashMap<ConnId, Option<IpAddr>>,
    /// Hop-by-hop ids of our base requests (CER, DWR, DPR), which the peer layer matches by
    /// command code, not through the pending table.
    base_hbh: u32,
    end_to_end: u32,
    stopping: bool,
    /// Requests delivered to the application, by token, with their reply deadlines. Tokens
    /// are our own counter (no peer chooses them): FxHash, as for `conns`.
    delivered: FxHashMap<u64, Delivered>,
    /// Each peer's names as handed to the application with its requests, kept so that a
    /// request costs a reference count, not two strings (issue 15 item 2). Checked against
    /// the peer's current capabilities at each use (a reconnect may bring a new CER). At
    /// most one per peer of the table, whose ids are never reused.
    peer_infos: FxHashMap<PeerId, Arc<PeerInfo>>,
    /// The reply deadlines of `delivered`: `[app] reply_timeout` after each delivery, so a
    /// FIFO in the order delivered ([`DeadlineQueue`]); a B-tree insert and remove per request
    /// allocated a node about every sixth request at 100 in flight (issue 15 item 2).
    delivered_deadlines: DeadlineQueue<u64>,
    next_token: u64,
    status_version: u64,
    out: VecDeque<Output>,
    /// Per-request counts and latencies go here (the runtime's metrics).
    observer: Box<dyn Observer>,
    /// The applications last given to [`Endpoint::advertise_extra`] (kept across reloads).
    extra: Vec<AppAdvert>,
    /// Source addresses of connections, as the driver reported them (for log lines). Keyed
    /// by our connection ids: FxHash, as for `conns`.
    remotes: FxHashMap<ConnId, std::net::SocketAddr>,
    /// Flood control of refusal lines (connections, CERs, frames) and of bridge-made
    /// error answers: each kind is logged at most 10 times per 10 s, then summarised.
    refusal_log: LogLimit,
    local_answer_log: LogLimit,
    /// Where 3006 answers send later requests (RFC 6733 §6.12-§6.14), and flood control of
    /// the lines about 3006 answers that break §6.14 (no Redirect-Max-Cache-Time) and,
    /// apart so they cannot hide those, about cache times cut to the cap.
    redirects: RedirectCache,
    redirect_log: LogLimit,
    redirect_cap_log: LogLimit,
}

impl Endpoint {
    /// A node for `config` (already validated), speaking `dict`; nothing happens until
    /// [`Endpoint::start`] (peers to dial) or [`Endpoint::accept`] (a peer dialled us).
    pub fn new(config: Config, dict: &'static Dictionary, seeds: Seeds) -> Endpoint {
        Endpoint::with_validator(config, dict, Arc::new(Validator::new(dict)), seeds)
    }

    /// [`Endpoint::new`] with `dict` already compiled into `validator` (which must come from
    /// the same `dict`). Compiling the built-in dictionary costs about 250 µs, most of an
    /// endpoint's construction: the fuzz harness builds one endpoint per input and shares
    /// one validator between them.
    pub fn with_validator(
        config: Config,
        dict: &'static Dictionary,
        validator: Arc<Validator<'static>>,
        seeds: Seeds,
    ) -> Endpoint {
        let local = Arc::new(Capabilities::local(&config, seeds.start_secs, &[]));
        let mut peers = Peers::new(&config, local.clone(), seeds.random);
        for p in &config.peers {
            if let Some(id) = peers.by_host(&p.host) {
                peers.set_inband_tls(id, p.tls_inband);
            }
        }
        let router = Router::new(&config, |h| peers.by_host(h));
        let limits = config.limits;
        let apps = local.applications();
        Endpoint {
            apps,
            local,
            router,
            pending: PendingTable::new(limits.max_pending_requests, seeds.random as u32),
            dup: DupCache::new(
                limits.dup_cache_entries,
                limits.dup_cache_entries.saturating_mul(4096),
                limits.dup_cache_ttl,
                seeds.random,
            ),
            answers: Arena::new(),
            requests: Pool::new(),
            sessions: SessionIds::new(
                &config.node.origin_host,
                seeds.start_secs,
                seeds.start_micros,
            ),
            peers,
            conns: FxHashMap::default(),
            // RFC 6733 §3: the high 12 bits of end-to-end ids from the clock, the low 20
            // random then counting, so ids do not repeat across restarts.
            end_to_end: (seeds.start_secs << 20) ^ (seeds.random as u32 & 0xfffff),
            base_hbh: (seeds.random >> 32) as u32,
            stopping: false,
            delivered: FxHashMap::default(),
            peer_infos: FxHashMap::default(),
            delivered_deadlines: DeadlineQueue::new(),
            next_token: 0,
            status_version: 0,
            out: VecDeque::new(),
            observer: Box::new(Nothing),
            extra: Vec::new(),
            remotes: FxHashMap::default(),
            refusal_log: LogLimit::refusals(),
            local_answer_log: LogLimit::refusals(),
            redirects: RedirectCache::new(
                limits.redirect_cache_entries,
                limits.redirect_cache_max_time,
            ),
            redirect_log: LogLimit::refusals(),
            redirect_cap_log: LogLimit::refusals(),
            config: Arc::new(config),
            dict,
            validator,
        }
    }

    /// The configuration in force (the last one given to [`Endpoint::reconfigure`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where per-request counts and latencies go (default: nowhere).
    pub fn set_observer(&mut self, observer: Box<dyn Observer>) {
        self.observer = observer;
    }

    /// The far end of a connection: the source address of an accepted one, the address we
    /// dialled for ours (named in refusal log lines).
    pub fn set_remote(&mut self, conn: ConnId, addr: std::net::SocketAddr) {
        self.remotes.insert(conn, addr);
    }

    fn remote(&self, conn: ConnId) -> String {
        self.remotes
            .get(&conn)
            .map_or_else(|| "-".to_string(), ToString::to_string)
    }

    fn peer_host(&self, conn: ConnId) -> &str {
        self.peers
            .owner(conn)
            .and_then(|p| self.peers.get(p))
            .map_or("", |p| p.host())
    }

    /// Counts and logs (rate-limited, debug per request otherwise) an answer the node made
    /// itself.
    fn local_answer(&mut self, code: u32, cause: LocalCause, now: Instant) {
        self.observer.local_answer(code, cause);
        tracing::debug!(
            result_code = code,
            cause = cause.as_str(),
            "answered by the node"
        );
        if code >= 3004 && code != 3007 {
            if let Some(suppressed) = self.local_answer_log.admit(now) {
                tracing::warn!(
                    result_code = code,
                    cause = cause.as_str(),
                    suppressed,
                    "request answered by the node, not the application"
                );
            }
        }
    }

    fn max_len(&self) -> usize {
        self.config.limits.max_message_size as usize
    }

    fn origin(&self) -> Origin<'_> {
        Origin {
            host: &self.config.node.origin_host,
            realm: &self.config.node.origin_realm,
        }
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Starts the peers we connect to.
    pub fn start(&mut self, now: Instant) {
        self.peers.start_all(now);
        self.act(now);
    }

    /// Graceful shutdown: no new requests; peers drain their pending requests, then DPR.
    pub fn stop(&mut self, now: Instant) {
        if !self.stopping {
            self.stopping = true;
            self.peers.stop_all(DisconnectCause::Rebooting, now);
            self.act(now);
            self.after(now);
        }
    }

    /// [`Endpoint::stop`] was called: new requests are refused while peers drain.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Advertises `extra` applications beside the configured `[[applications]]` (those of
    /// the commands the SIP server's workers serve: DESIGN §2, "the CER advertises the
    /// applications of the handled commands plus the configured ones"). Takes effect for
    /// every capabilities exchange from now on — new connections and reconnections; a
    /// connection already open keeps what it negotiated, since RFC 6733 has no way to
    /// renegotiate on an open connection. Requests for the added applications are accepted
    /// from now on (no 3007). An application already configured keeps its configured form.
    pub fn advertise_extra(&mut self, extra: &[AppAdvert]) {
        self.extra = extra.to_vec();
        let state_id = self.local.origin_state_id.unwrap_or(0);
        let mut caps = Capabilities::local(&self.config, state_id, &[]);
        for a in extra {
            if !caps.applications().ids().contains(&a.id) {
                caps.advertise(*a);
            }
        }
        self.apps = caps.applications();
        let local = Arc::new(caps);
        self.peers.set_local(local.clone());
        self.local = local;
    }

    /// Every peer's state, for monitoring.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .filter(|(id, _)| !self.peers.is_retired(*id))
            .map(|(id, p)| PeerStatus {
                host: p.host().to_string(),
                state: p.state(),
                watchdog: p.watchdog().state(),
                usable: p.send_target().is_some(),
                apps: p.apps().ids().to_vec(),
                pending: p.open_conn().map_or(0, |c| self.pending.count_on(c)),
                disabled: self.peers.is_disabled(id),
                unknown: self.peers.is_unknown(id),
            })
            .collect()
    }

    /// Incremented whenever a peer's state or usability changes (cheap change detection
    /// for publishing [`Endpoint::status`]).
    pub fn status_version(&self) -> u64 {
        self.status_version
    }

    /// Stopped and nothing left to wait for.
    pub fn is_finished(&self) -> bool {
        self.stopping && self.peers.all_closed() && self.pending.is_empty()
    }

    /// Fails whatever is still pending (the driver gives up waiting).
    pub fn abandon(&mut self) {
        for e in self.pending.take_all() {
            // Sent already: "no answer" (the peer may have acted on it), not NodeDown.
            let why = "the node stopped before its answer came".to_string();
            self.complete(e.data.owner, Err(RequestError::ConnectionLost(why)));
        }
        for conn in self.conns.keys().copied().collect::<Vec<_>>() {
            self.close(conn);
        }
    }

    /// When to call [`Endpoint::handle_timeout`] next: the earliest of the peers' timers
    /// (reconnect, watchdog, CER, drain and DPA timeouts), request deadlines and reply
    /// deadlines; `None`
    /// when nothing is timed (the driver then waits for input only).
    pub fn next_timeout(&self) -> Option<Instant> {
        // Every change drops the stale front: the earliest record is live.
        let reply = self.delivered_deadlines.peek().map(|(t, _)| t);
        [
            self.peers.next_timeout(),
            self.pending.next_deadline(),
            reply,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every timer due at `now`: unanswered deliveries get 5012, peers run their
    /// watchdog and reconnect timers, expired requests end in [`RequestError::Timeout`].
    /// Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((t, token)) = self.delivered_deadlines.pop_due(now) {
            // A stale record (replied to in time) is skipped.
            if reply_live(&self.delivered, t, token) {
                self.reply(token, &Reply::Unanswered, now);
            }
        }
        let delivered = &self.delivered;
        self.delivered_deadlines
            .drop_stale(|t, k| reply_live(delivered, t, k));
        self.peers.handle_timeout(now);
        for e in self.pending.expire(now) {
            self.complete(e.data.owner, Err(RequestError::Timeout));
        }
        self.observer.pending(self.pending.len());
        if let Some(n) = self.refusal_log.flush(now) {
            tracing::warn!(suppressed = n, "refusals not logged in the last 10 s");
        }
        if let Some(n) = self.local_answer_log.flush(now) {
            tracing::warn!(
                suppressed = n,
                "node-made answers not logged in the last 10 s"
            );
        }
        self.act(now);
        self.after(now);
    }

    /// A connection was accepted from `source`, with the certificate its TLS handshake
    /// showed (TLS at connect). `None`: refuse it (close the socket) — stopping, or a cap
    /// reached: all connections (`max_connections`), those that have not finished CER/CEA
    /// (`max_pending_connections`), or those from this source address
    /// (`max_connections_per_source`). Each refusal is counted and logged.
    pub fn accept(
        &mut self,
        local_ip: Option<IpAddr>,
        source: Option<IpAddr>,
        cert: Option<PeerCert>,
        now: Instant,
    ) -> Option<ConnId> {
        if self.stopping {
            return None;
        }
        let l = &self.config.limits;
        let (strangers, from_source) = self.peers.strangers(source);
        let refused = if self.peers.connection_count() >= l.max_connections {
            Some((
                Refusal::ConnectionCap,
                format!("{} connections open", l.max_connections),
            ))
        } else if strangers >= l.max_pending_connections && !self.peers.is_peer_address(source) {
            // A configured peer's own address is not held back by strangers filling the
            // pending cap (it still has its per-source cap): the real peer can always
            // reconnect while strangers are flooding.
            Some((
                Refusal::PendingCap,
                format!("{strangers} connections have not finished CER/CEA"),
            ))
        } else if source.is_some() && from_source >= l.max_connections_per_source {
            Some((
                Refusal::PerSourceCap,
                format!("{from_source} connections from this address have not finished CER/CEA"),
            ))
        } else {
            None
        };
        if let Some((cause, why)) = refused {
            // Counted once, in `Refusals`, which reports to the metrics exporter too.
            self.peers.refusals().record(cause, source, &why, now);
            return None;
        }
        let conn = self.peers.accepted(source, now);
        if let Some(cert) = cert {
            self.peers.set_cert(conn, cert);
        }
        self.conns.insert(conn, local_ip);
        Some(conn)
    }

    /// The refusal counters (DESIGN §10), shared with the driver, which counts what it
    /// refuses itself (TLS handshakes, message timeouts, the buffer budget) in the same
    /// place, and with the metrics exporter.
    pub fn refusals(&self) -> Arc<Refusals> {
        self.peers.refusals().clone()
    }

    /// Counts refusals in `refusals` (the driver's, so that both count in one place).
    pub fn set_refusals(&mut self, refusals: Arc<Refusals>) {
        self.peers.set_refusals(refusals);
    }

    /// The TLS handshake of an accepted connection finished: its certificate is what the
    /// CER's Origin-Host will be checked against.
    pub fn accepted_tls(&mut self, conn: ConnId, cert: PeerCert) {
        self.peers.set_cert(conn, cert);
    }

    /// What a peer's `address` name resolved to (see [`Peers::set_resolved`]).
    pub fn set_resolved(&mut self, host: &str, addrs: &[IpAddr]) {
        self.peers.set_resolved(host, addrs);
    }

    /// For a connection we are opening: the TLS settings to dial it with, when its peer has
    /// `transport = "tls"`.
    pub fn dial_tls(&self, conn: ConnId) -> Option<TlsDial> {
        let peer = self.peers.owner(conn)?;
        let t = self.peers.trust(peer).filter(|t| t.tls_required)?;
        Some(TlsDial {
            host: self.peers.get(peer)?.host().to_string(),
            ca: t.ca.clone(),
            verify_host: t.verify_host,
        })
    }

    /// The TLS handshake of a connection we opened finished with this certificate (the
    /// handshake already checked the chain and the name): check the peer's pin. False: the
    /// connection must not be used (the caller reports it failed).
    pub fn dialled_cert(&mut self, conn: ConnId, cert: PeerCert, now: Instant) -> bool {
        let Some(peer) = self.peers.owner(conn) else {
            return false;
        };
        let host = self.peers.get(peer).map(|p| p.host().to_string());
        if let (Some(host), Some(t)) = (host, self.peers.trust(peer)) {
            if let Err((cause, why)) = trust::check_identity(&host, t, None, Some(&cert)) {
                let source = self.remotes.get(&conn).map(|a| a.ip());
                self.peers.refusals().record(cause, source, &why, now);
                return false;
            }
        }
        self.peers.set_cert(conn, cert);
        true
    }

    /// Whether a plain connection may turn to TLS after its CER/CEA (in-band TLS): the driver
    /// then reads nothing past the CER or CEA until told to go on ([`Output::Opened`]) or
    /// to hand the connection to TLS ([`Output::StartTls`]), so that no handshake byte is
    /// taken for Diameter. Ours: its peer uses in-band TLS; accepted and not identified yet:
    /// some configured peer does.
    pub fn may_start_tls(&self, conn: ConnId) -> bool {
        match self.peers.owner(conn) {
            Some(p) => self.peers.get(p).is_some_and(|p| p.inband_tls()),
            None => self.config.peers.iter().any(|p| p.tls_inband),
        }
    }

    /// The in-band TLS handshake asked by [`Output::StartTls`] finished with this (verified)
    /// certificate, and the driver attached the TLS stream to `conn`. The certificate must
    /// name the peer the CER/CEA identified, as with TLS at connect
    /// ([`trust::check_identity`]); otherwise the refusal is counted and logged and the
    /// connection closed. Then the peer opens.
    pub fn inband_tls_up(
        &mut self,
        conn: ConnId,
        cert: PeerCert,
        source: Option<IpAddr>,
        now: Instant,
    ) {
        let owner = self.peers.owner(conn);
        let waiting = owner
            .and_then(|p| self.peers.get(p))
            .is_some_and(|p| p.state() == crate::peer::State::TlsHandshake);
        let Some(peer) = owner.filter(|_| waiting) else {
            // Given up meanwhile (handshake timeout, stop): not wanted any more.
            self.close(conn);
            return;
        };
        let host = self.peers.get(peer).map(|p| p.host().to_string());
        if let (Some(host), Some(t)) = (host, self.peers.trust(peer)) {
            if let Err((cause, why)) = trust::check_identity(&host, t, None, Some(&cert)) {
                // Counted once, in `Refusals`, which reports to the metrics exporter too.
                self.peers
                    .refusals()
                    .record(cause, source, &format!("in-band TLS: {why}"), now);
                // The peer closes the connection (its Close action) and is Closed now, so
                // that a redial is not rejected while the driver tears this one down.
                self.peers.tls_refused(conn, now);
                self.act(now);
                if self.conns.contains_key(&conn) {
                    // Not the peer's handshake connection after all: close it anyway.
                    self.close(conn);
                }
                self.after(now);
                return;
            }
        }
        self.peers.tls_up(conn, cert, now);
        self.act(now);
        self.after(now);
    }

    /// A TLS handshake failed (at connect, or in-band after CER/CEA): counted in
    /// [`Refusals`] under `kind` (one log line per kind, cause and source per interval),
    /// which reports it to the metrics' refusals. The driver then reports the connection closed.
    pub fn tls_refused(
        &mut self,
        kind: &'static str,
        source: Option<IpAddr>,
        why: &str,
        now: Instant,
    ) {
        // Counted once, in `Refusals`, which reports to the metrics exporter too.
        self.peers
            .refusals()
            .record_kind(Refusal::TlsHandshake, kind, source, why, now);
    }

    /// Our connection attempt finished: `Some(local ip)` on success. Returns false when the
    /// connection is no longer wanted (the attempt timed out meanwhile): drop the socket.
    pub fn connected(
        &mut self,
        conn: ConnId,
        result: Option<Option<IpAddr>>,
        now: Instant,
    ) -> bool {
        let wanted = self.peers.owner(conn).is_some();
        let keep = match result {
            Some(local_ip) if wanted => {
                self.conns.insert(conn, local_ip);
                self.peers.connect_result(conn, true, now);
                true
            }
            Some(_) => false,
            None => {
                // No connection: nothing will report it closed.
                self.remotes.remove(&conn);
                self.peers.connect_result(conn, false, now);
                false
            }
        };
        self.act(now);
        keep
    }

    /// The connection closed (either side, or an error).
    pub fn closed(&mut self, conn: ConnId, now: Instant) {
        self.conns.remove(&conn);
        self.remotes.remove(&conn);
        self.peers.disconnected(conn, now);
        // The peer layer's Down (in `act`) fails pending requests over after the router has
        // learnt the peer is gone; anything still on `conn` goes then too.
        self.act(now);
        self.failover(conn, now);
        self.after(now);
    }

    /// The connection's stream cannot be framed any more.
    pub fn frame_error(&mut self, conn: ConnId, error: FrameError, now: Instant) {
        if !self.conns.contains_key(&conn) {
            // Already closed by us (see `close`).
            return;
        }
        // Over the size limit: the transport counted it as `Refusal::MessageTooLarge`.
        if !error.is_size_limit() {
            self.observer.refusal("frame_error");
        }
        if let Some(suppressed) = self.refusal_log.admit(now) {
            tracing::warn!(
                conn = conn.0,
                from = %self.remote(conn),
                peer = self.peer_host(conn),
                result_code = error.result_code(),
                suppressed,
                "framing error, connection closed: {error}"
            );
        }
        if let (Some(code), Some(header)) = (error.result_code(), error.header) {
            if header.flags.is_request() {
                let req = Message {
                    header,
                    body: Bytes::new(),
                };
                if let Some(b) = self.error_answer(&req, code, &error.to_string(), None) {
                    self.transmit(conn, b);
                }
            }
        }
        self.close(conn);
        self.after(now);
    }

    /// One complete message arrived on `conn`.
    pub fn frame(&mut self, conn: ConnId, frame: Bytes, now: Instant) {
        if !self.conns.contains_key(&conn) {
            // Closed by us (see `close`): what was read after is not acted on.
            return;
        }
        match Message::decode(frame) {
            Ok(msg) => self.message(conn, msg, now),
            // The framer checked version and length; anything else cannot be answered.
            Err(_) => self.close(conn),
        }
        self.act(now);
        self.after(now);
    }

    /// Asks the driver to close `conn`. From here on the connection gets nothing more from
    /// the core: [`Endpoint::transmit`] skips it and frames or framing errors the driver
    /// still reports for it (read in the same batch) are dropped, so a garbage frame
    /// followed by a request is not answered on a connection already being closed.
    fn close(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        self.out.push_back(Output::Close { conn });
    }

    fn transmit(&mut self, conn: ConnId, bytes: Bytes) {
        if self.conns.contains_key(&conn) {
            self.out.push_back(Output::Transmit { conn, bytes });
        }
    }

    fn message(&mut self, conn: ConnId, msg: Message, now: Instant) {
        if msg.is_request() && self.refused_base_request(conn, &msg, now) {
            return;
        }
        match self.peers.received(conn, &msg, now) {
            Received::Consumed => {}
            Received::NotOpen => {
                let code = dmproto::result_code::DIAMETER_UNABLE_TO_DELIVER;
                self.local_answer(code, LocalCause::NotOpen, now);
                if let Some(b) = self.error_answer(&msg, code, "connection not open", None) {
                    self.transmit(conn, b);
                }
            }
            Received::Process { peer } if msg.is_request() => self.incoming(conn, peer, msg, now),
            Received::Process { .. } => {
                // Unmatched answers (late, after a timeout or a failover) are dropped: their
                // request already has its outcome. An answer whose command or end-to-end id
                // is not the request's is not its answer (a confused or hostile peer): it is
                // dropped too, and the request keeps waiting for its own.
                let hbh = msg.header.hop_by_hop;
                let matches = self.pending.get(conn, hbh).is_some_and(|e| {
                    e.end_to_end == msg.header.end_to_end
                        && e.data.cmd_code == msg.header.code
                        && e.data.app_id == msg.header.app_id
                });
                if matches {
                    if let Some(entry) = self.pending.answer(conn, hbh) {
                        let code = result_code(&msg.body);
                        let host = self.peers.owner(conn).and_then(|p| self.peers.get(p));
                        let waited = now.saturating_duration_since(entry.data.sent);
                        self.observer.answer(
                            host.map_or("", |p| p.host()),
                            msg.header.app_id,
                            msg.header.code,
                            Direction::In,
                            code,
                            Some(waited),
                        );
                        let Some(entry) = self.try_elsewhere(entry, &msg, code, now) else {
                            return;
                        };
                        // Its buffer is kept for the next request, once written.
                        self.requests.give(entry.data.request);
                        self.complete_after(entry.data.owner, Ok(msg), Some(waited));
                        self.observer.pending(self.pending.len());
                    }
                } else {
                    // Counted and logged (rate-limited, DESIGN §10): a late answer is the
                    // sign of a peer slower than our answer timeout.
                    self.observer.event("answer_unmatched");
                    if let Some(suppressed) = self.refusal_log.admit(now) {
                        tracing::warn!(
                            conn = conn.0,
                            hop_by_hop = hbh,
                            suppressed,
                            "answer dropped: no request of ours waits for it (late, after its timeout or a failover; or not an answer to ours)"
                        );
                    }
                }
            }
        }
    }

    /// RFC 6733 §7: the base protocol's own requests (CER, DWR, DPR) are checked against
    /// their command's ABNF like any other request (§3 reserved header bits 3008, an unknown
    /// M-bit AVP 5001, a missing AVP 5005, ...) before the peer layer acts on them, as
    /// freeDiameter does (`fd_msg_parse_or_error` on every link-local message, `p_psm.c`).
    /// The error answer takes the place of the CEA / DWA / DPA and the request is not acted
    /// on: a CER opening a connection is refused and the connection closed, as every refused
    /// CER is; a DWR, a DPR or a CER on the open connection is answered and the connection
    /// goes on as it was. Base requests on a connection in any other state are left to the
    /// peer layer (which closes). Returns whether `msg` was refused. Off the per-request path:
    /// application requests return at the first test.
    fn refused_base_request(&mut self, conn: ConnId, msg: &Message, now: Instant) -> bool {
        use wire::BaseKind;
        let kind = wire::classify(&msg.header);
        if !matches!(kind, BaseKind::Cer | BaseKind::Dwr | BaseKind::Dpr) {
            return false;
        }
        let first = kind == BaseKind::Cer && self.peers.is_unidentified(conn);
        if !first && !self.peers.is_open_conn(conn) {
            return false;
        }
        let Err(e) = self.validator.validate_request(msg) else {
            if kind == BaseKind::Cer && !first {
                // A valid CER on the open connection: the peer layer answers it 5012
                // (§5.6.1 R-Rcv-CER, `peer::fsm`); a refusal, logged and counted here
                // (DESIGN §10).
                self.observer.refusal("cer_on_open_connection");
                if let Some(suppressed) = self.refusal_log.admit(now) {
                    tracing::warn!(
                        conn = conn.0,
                        peer = self.peer_host(conn),
                        suppressed,
                        "CER on an open connection answered 5012, the connection kept"
                    );
                }
            }
            return false;
        };
        let error = wire::WireError {
            result_code: e.result_code,
            message: e.message,
            failed_avp: e.failed_avp,
        };
        if first {
            // Logged and counted with the other refused CERs (`act`).
            self.peers.refuse_invalid_cer(conn, msg, error);
            return true;
        }
        self.local_answer(error.result_code, LocalCause::Invalid, now);
        tracing::debug!(
            conn = conn.0,
            command = msg.header.code,
            result_code = error.result_code,
            "invalid base protocol request: {}",
            error.message
        );
        let answer = if kind == BaseKind::Cer {
            wire::encode_cea_error(&msg.header, &self.local_for(conn), &error).ok()
        } else {
            self.error_answer(
                msg,
                error.result_code,
                &error.message,
                error.failed_avp.as_deref(),
            )
        };
        if let Some(b) = answer {
            self.transmit(conn, b);
        }
        true
    }

    /// The names of `peer` for the application ([`IncomingRequest::peer`]): the kept ones
    /// while they are still the peer's (two short comparisons), else made and kept anew.
    fn peer_info(&mut self, peer: PeerId) -> Arc<PeerInfo> {
        let (host, realm) = match self.peers.get(peer).and_then(|p| p.remote()) {
            Some(r) => (r.origin_host.as_str(), r.origin_realm.as_str()),
            None => ("", ""),
        };
        match self.peer_infos.get(&peer) {
            Some(i) if i.host == host && i.realm == realm => Arc::clone(i),
            _ => {
                let info = Arc::new(PeerInfo {
                    host: host.to_owned(),
                    realm: realm.to_owned(),
                });
                self.peer_infos.insert(peer, Arc::clone(&info));
                info
            }
        }
    }

    /// A request from a peer. RFC 6733 §6.1 decides first, before any application sees it
    /// (DESIGN §9): a request for another host or realm is relayed when this node is a relay
    /// agent (§6.1.8), else answered 3002 / 3003; then an application we do not serve is
    /// answered 3007 (§6.1.4 needs "the Diameter application is locally supported"); then
    /// the dictionary's ABNF (3xxx/5xxx, §7); then duplicates (§5.6.4 / §9.4); only then the
    /// application.
    fn incoming(&mut self, conn: ConnId, peer: PeerId, msg: Message, now: Instant) {
        let relay = self.config.routing.relay;
        let dest = delivery::Destination::of(&msg);
        let realms = [self.config.node.origin_realm.as_str()];
        // RFC 6733 §3, the P bit: "If cleared, the message MUST be locally processed". A
        // relay forwards only proxiable requests; one with the P bit clear that is not ours is
        // answered as by a node that relays nothing (§6.1 step 4, DESIGN §9: 3002 / 3003),
        // and one of an application we do not serve gets 3007.
        let relay = relay && msg.header.flags.is_proxiable();
        if let Delivery::Elsewhere(why) =
            delivery::decide(&dest, &self.config.node.origin_host, &realms)
        {
            if relay {
                return self.relay(conn, peer, msg, now);
            }
            tracing::debug!(
                result_code = why.result_code(),
                "not for this node (no relay configured): {}",
                why.message()
            );
            self.local_answer(why.result_code(), LocalCause::NotForThisNode, now);
            if let Some(b) = self.error_answer(&msg, why.result_code(), &why.message(), None) {
                self.transmit(conn, b);
            }
            return;
        }
        if !self.apps.supports(msg.header.app_id) {
            if relay {
                // Ours by realm but not by application: §6.1.6 routes it on.
                return self.relay(conn, peer, msg, now);
            }
            // RFC 6733 §6.1: an application we did not advertise is not ours to serve.
            let unsupported = dmproto::result_code::DIAMETER_APPLICATION_UNSUPPORTED;
            let why = format!("application {} is not supported here", msg.header.app_id);
            self.local_answer(unsupported, LocalCause::ApplicationUnsupported, now);
            if let Some(b) = self.error_answer(&msg, unsupported, &why, None) {
                self.transmit(conn, b);
            }
            return;
        }
        if let Err(e) = self.validator.validate_request(&msg) {
            self.local_answer(e.result_code, LocalCause::Invalid, now);
            tracing::debug!(
                result_code = e.result_code,
                "invalid request: {}",
                e.message
            );
            if let Some(b) =
                self.error_answer(&msg, e.result_code, &e.message, e.failed_avp.as_deref())
            {
                self.transmit(conn, b);
            }
            return;
        }
        // Borrowed: the cache keeps its own key for a host it has not seen (issue 15 item 2).
        let origin_host = origin_host(&msg);
        let from = Requester {
            conn,
            hop_by_hop: msg.header.hop_by_hop,
        };
        let retransmit = msg.header.flags.is_retransmit();
        match self
            .dup
            .check(origin_host, msg.header.end_to_end, retransmit, from, now)
        {
            DupCheck::New => {
                let host = self.peers.get(peer).map_or("", |p| p.host());
                self.observer
                    .request(host, msg.header.app_id, msg.header.code, Direction::In);
            }
            DupCheck::InProgress => {
                self.observer.event("duplicate");
                tracing::debug!(origin_host = %origin_host, e2e = msg.header.end_to_end, "duplicate of a request in progress");
                return;
            }
            DupCheck::Answered(a) => {
                self.observer.event("duplicate");
                tracing::debug!(origin_host = %origin_host, e2e = msg.header.end_to_end, "duplicate answered from the cache");
                self.transmit(conn, pending::with_hop_by_hop(&a, msg.header.hop_by_hop));
                return;
            }
        }
        if self.delivered.len() >= self.config.limits.max_pending_requests {
            // The application is that far behind: say so rather than queue without bound.
            let busy = dmproto::result_code::DIAMETER_TOO_BUSY;
            self.local_answer(busy, LocalCause::Overloaded, now);
            self.finish(
                conn,
                peer,
                &msg,
                Err((busy, "too many requests in progress".into())),
            );
            return;
        }
        let info = self.peer_info(peer);
        self.next_token = self.next_token.wrapping_add(1);
        let token = self.next_token;
        let deadline = now + self.config.app.reply_timeout;
        self.delivered.insert(
            token,
            Delivered {
                conn,
                peer,
                request: msg.clone(),
                deadline,
                at: now,
            },
        );
        let delivered = &self.delivered;
        self.delivered_deadlines
            .push(deadline, token, delivered.len(), |t, k| {
                reply_live(delivered, t, k)
            });
        self.out.push_back(Output::Deliver {
            token,
            request: IncomingRequest {
                peer: info,
                message: msg,
            },
        });
    }

    /// The application's reply to the request delivered under `token` (or `Unanswered`).
    /// A reply after the reply timeout (or a second one) is ignored: the peer already has
    /// its one answer.
    pub fn reply(&mut self, token: u64, reply: &Reply, now: Instant) {
        let Some(d) = self.delivered.remove(&token) else {
            return;
        };
        self.delivered_deadlines.remove(d.deadline, token);
        let delivered = &self.delivered;
        self.delivered_deadlines
            .drop_stale(|t, k| reply_live(delivered, t, k));
        let unable = dmproto::result_code::DIAMETER_UNABLE_TO_COMPLY;
        let outcome = match reply {
            Reply::Answer(body) => {
                self.observer
                    .reply_latency(now.saturating_duration_since(d.at));
                let built = self.app_answer(&d.request, body);
                if built.is_err() {
                    self.local_answer(unable, LocalCause::BadReply, now);
                }
                built
            }
            Reply::Unanswered if now >= d.deadline => {
                self.local_answer(unable, LocalCause::ReplyTimeout, now);
                Err((unable, "no answer from the application in time".to_string()))
            }
            Reply::Unanswered => {
                self.local_answer(unable, LocalCause::NoReply, now);
                Err((unable, "the application gave no answer".to_string()))
            }
        };
        self.finish(d.conn, d.peer, &d.request, outcome);
        self.after(now);
    }

    /// Before our DPR on `conn` (a stop, `peer disable`, a reload that removes the peer —
    /// after the drain timeout), each request from it that the application still holds is
    /// answered 5012 DIAMETER_UNABLE_TO_COMPLY (RFC 6733 §7.1.5), as after a reply timeout:
    /// the DPR announces the connection's close (§5.4), so a reply the application sends
    /// later would find no connection and the peer would get no answer at all. A reply that
    /// comes later is ignored like any late one; logged once per DPR and counted per request
    /// (`drain_timeout`). The application is told ([`Output::Withdrawn`]), so it does not
    /// count such a reply as an answer.
    fn answer_undrained(&mut self, conn: ConnId, host: &str, now: Instant) {
        let mut tokens: Vec<u64> = self
            .delivered
            .iter()
            .filter(|(_, d)| d.conn == conn)
            .map(|(t, _)| *t)
            .collect();
        if tokens.is_empty() {
            return;
        }
        tokens.sort_unstable();
        tracing::warn!(
            peer = host,
            conn = conn.0,
            requests = tokens.len(),
            "drain timeout: {} requests the application has not answered are answered 5012 before our DPR",
            tokens.len()
        );
        let unable = dmproto::result_code::DIAMETER_UNABLE_TO_COMPLY;
        for &token in &tokens {
            let Some(d) = self.delivered.remove(&token) else {
                continue;
            };
            self.delivered_deadlines.remove(d.deadline, token);
            self.local_answer(unable, LocalCause::DrainTimeout, now);
            let why = "the application gave no answer before the connection closed";
            self.finish(d.conn, d.peer, &d.request, Err((unable, why.to_string())));
        }
        let delivered = &self.delivered;
        self.delivered_deadlines
            .drop_stale(|t, k| reply_live(delivered, t, k));
        self.out.push_back(Output::Withdrawn { tokens });
    }

    /// Sends the answer to `request` (or a local error answer), also to the copies of it
    /// that arrived meanwhile, and caches it for later retransmissions.
    fn finish(
        &mut self,
        conn: ConnId,
        peer: PeerId,
        request: &Message,
        outcome: Result<Bytes, (u32, String)>,
    ) {
        let bytes = match outcome {
            Ok(b) => b,
            Err((code, why)) => match self.error_answer(request, code, &why, None) {
                Some(b) => b,
                None => return,
            },
        };
        let code = result_code(bytes.get(20..).unwrap_or_default());
        let host = self.peers.get(peer);
        self.observer.answer(
            host.map_or("", |p| p.host()),
            request.header.app_id,
            request.header.code,
            Direction::Out,
            code,
            None,
        );
        let e2e = request.header.end_to_end;
        for waiter in self.dup.complete(origin_host(request), e2e, bytes.clone()) {
            self.transmit(
                waiter.conn,
                pending::with_hop_by_hop(&bytes, waiter.hop_by_hop),
            );
        }
        self.transmit(conn, bytes);
    }

    /// Its one outcome: for a request of the application, an output for the driver to pass
    /// on; for a relayed request, the answer (or an error answer) to the peer it came from.
    fn complete(&mut self, owner: Owner, result: Result<Message, RequestError>) {
        self.complete_after(owner, result, None);
    }

    /// [`Endpoint::complete`] with the time the request waited for its answer.
    fn complete_after(
        &mut self,
        owner: Owner,
        result: Result<Message, RequestError>,
        waited: Option<Duration>,
    ) {
        match owner {
            Owner::App(id) => self.out.push_back(Output::Outcome { id, result, waited }),
            Owner::Relay(r) => self.relayed_outcome(r, result),
        }
    }

    /// A local error answer to `request` in the layout its Result-Code needs (see
    /// [`answer::error_answer`]); `None` if it cannot be encoded (too large).
    fn error_answer(
        &mut self,
        request: &Message,
        code: u32,
        why: &str,
        failed_avp: Option<&[u8]>,
    ) -> Option<Bytes> {
        self.in_answers(|arena, origin, max_len, dict| {
            answer::error_answer(arena, request, origin, code, why, failed_avp, max_len, dict)
        })
        .ok()
    }

    /// `write` given the answers' arena, our identity, `max_message_size` and the dictionary:
    /// the arena is out of `self` meanwhile, as the identity borrows the configuration.
    fn in_answers<R>(
        &mut self,
        write: impl FnOnce(&mut Arena, Origin<'_>, usize, &Dictionary) -> R,
    ) -> R {
        let mut arena = std::mem::take(&mut self.answers);
        let built = write(&mut arena, self.origin(), self.max_len(), self.dict);
        self.answers = arena;
        built
    }

    /// The answer built from the application's reply, or the reason to answer 5012 instead
    /// (DESIGN §9: a reply that would make an invalid answer is refused, logged, and the
    /// peer gets 5012 DIAMETER_UNABLE_TO_COMPLY, never a malformed answer). Besides the
    /// result-AVP rules of [`answer::app_answer`], the built answer goes through the
    /// dictionary's ABNF: AVPs of the wrong type or length (5004/5014) and AVPs that occur
    /// more often than the answer's ABNF allows (5009) refuse it. A required AVP the reply
    /// left out is copied from the request when it has one ([`answer::app_answer`]); one
    /// neither has (5005) does not refuse it: the script may answer tersely, and 5012 would
    /// not be better.
    fn app_answer(
        &mut self,
        request: &Message,
        body: &crate::app::AnswerBody,
    ) -> Result<Bytes, (u32, String)> {
        use dmproto::result_code as rc;
        let refuse = |why: String| {
            tracing::warn!(
                command = request.header.code,
                application = request.header.app_id,
                "application reply refused, answering 5012: {why}"
            );
            (rc::DIAMETER_UNABLE_TO_COMPLY, why)
        };
        let bytes = self
            .in_answers(|arena, origin, max_len, dict| {
                answer::app_answer(arena, request, origin, body, max_len, dict)
            })
            .map_err(|e| refuse(e.to_string()))?;
        if let Ok(m) = Message::decode(bytes.clone()) {
            if let Err(e) = self.validator.validate_answer(&m) {
                if matches!(
                    e.result_code,
                    rc::DIAMETER_INVALID_AVP_VALUE
                        | rc::DIAMETER_INVALID_AVP_LENGTH
                        | rc::DIAMETER_AVP_OCCURS_TOO_MANY_TIMES
                ) {
                    return Err(refuse(format!(
                        "the answer would fail validation ({}): {}",
                        e.result_code, e.message
                    )));
                }
            }
        }
        Ok(bytes)
    }

    /// An application request: complete it, route it, send it — or fail it at once. Its
    /// outcome comes back as [`Output::Outcome`] under `id`, exactly once.
    pub fn submit(&mut self, req: OutgoingRequest, id: RequestId, now: Instant) {
        if self.stopping {
            return self.complete(Owner::App(id), Err(RequestError::NodeDown));
        }
        self.end_to_end = self.end_to_end.wrapping_add(1);
        let e2e = self.end_to_end;
        // Its own handle: the route facts borrow from the configuration while `self` routes.
        let config = Arc::clone(&self.config);
        let ctx = RequestContext {
            origin: Origin {
                host: &config.node.origin_host,
                realm: &config.node.origin_realm,
            },
            destination_realm: Some(config.node.default_destination_realm()),
            applications: &config.applications,
            dict: self.dict,
            max_len: config.limits.max_message_size as usize,
        };
        // Out of `self` while the route facts borrow the Session-Id it wrote.
        let mut sessions = std::mem::take(&mut self.sessions);
        let buf = self.requests.take();
        let built = outgoing::build_request(&ctx, &req, e2e, &mut sessions, buf);
        match built {
            Ok(outgoing::Built {
                bytes,
                mut route,
                session,
            }) => {
                if session.is_some() {
                    route.view.session_id = session;
                }
                let inflight = Inflight {
                    owner: Owner::App(id),
                    request: bytes,
                    app_id: req.app_id,
                    cmd_code: req.cmd_code,
                    tried: Tried::default(),
                    sent: now,
                };
                let deadline = now + req.timeout.unwrap_or(config.timers.answer_timeout);
                self.dispatch(inflight, &route, deadline, e2e, now);
            }
            Err(e) => self.complete(Owner::App(id), Err(e)),
        }
        self.sessions = sessions;
    }

    /// Relay agent (RFC 6733 §6.1.8), for a request that is not ours when `[routing] relay`
    /// is on. "A relay or proxy agent MUST check for forwarding loops when receiving
    /// requests. A loop is detected if the server finds its own identity in a Route-Record
    /// AVP": 3005. Otherwise the request goes on by the routing table (Destination-Host
    /// when it is a peer, §6.1.5; else the realm table and default route, §6.1.6), with a
    /// Route-Record naming the peer it came from appended, its end-to-end id and every other
    /// AVP unchanged (Proxy-Info included: a relay does not touch it), and a hop-by-hop id of
    /// ours from the pending table; the original is kept to restore on the answer (§6.2.2).
    /// It never goes back to the peer it came from, nor to a peer already in its
    /// Route-Record. No route: the router's 3002/3003/3005/3007, answered here.
    fn relay(&mut self, conn: ConnId, from: PeerId, msg: Message, now: Instant) {
        use dmproto::result_code as rc;
        let records = delivery::route_records(&msg);
        let refuse = |e: &mut Self, code: u32, why: &str| {
            tracing::debug!(result_code = code, "relay refused: {why}");
            e.local_answer(code, LocalCause::RelayFailed, now);
            if let Some(b) = e.error_answer(&msg, code, why, None) {
                e.transmit(conn, b);
            }
        };
        if delivery::is_loop(&records, &self.config.node.origin_host) {
            let why = format!(
                "loop: {} is already in Route-Record",
                self.config.node.origin_host
            );
            return refuse(self, rc::DIAMETER_LOOP_DETECTED, &why);
        }
        let from_host = self
            .peers
            .get(from)
            .and_then(|p| p.remote())
            .map(|r| r.origin_host.clone())
            .unwrap_or_default();
        let Some(bytes) = delivery::forwarded(&msg.to_bytes(), &from_host, self.max_len()) else {
            let why = "too large to relay with a Route-Record";
            return refuse(self, rc::DIAMETER_UNABLE_TO_DELIVER, why);
        };
        let mut tried = Tried::default();
        tried.push(from);
        for p in records.iter().filter_map(|r| self.peers.by_host(r)) {
            tried.push(p);
        }
        let inflight = Inflight {
            owner: Owner::Relay(Relayed {
                conn,
                hop_by_hop: msg.header.hop_by_hop,
                request: msg.clone(),
            }),
            request: bytes,
            app_id: msg.header.app_id,
            cmd_code: msg.header.code,
            tried,
            sent: now,
        };
        // The routing facts of the request as forwarded: the received one's, plus the
        // Route-Record just appended.
        let mut route = outgoing::route_info(&msg);
        route.route_records.push(&from_host);
        let deadline = now + self.config.timers.answer_timeout;
        let e2e = msg.header.end_to_end;
        self.dispatch(inflight, &route, deadline, e2e, now);
    }

    /// The outcome of a relayed request goes back to the peer it came from: the answer with
    /// the original hop-by-hop id restored and nothing else changed (§6.2.2: "If a relay or
    /// proxy agent receives an answer with a Result-Code AVP indicating a failure, it MUST
    /// NOT modify the contents of the AVP"), or our own error answer when it could not be
    /// delivered: the router's Result-Code, 3004 when our pending table is full, 3002 on a
    /// timeout or shutdown (the next hop did not deliver it).
    fn relayed_outcome(&mut self, r: Relayed, result: Result<Message, RequestError>) {
        use dmproto::result_code as rc;
        match result {
            Ok(answer) => {
                let b = delivery::restored(&answer.to_bytes(), r.hop_by_hop);
                self.transmit(r.conn, b);
            }
            Err(e) => {
                let (code, why) = match e {
                    RequestError::NoRoute {
                        result_code,
                        message,
                    } => (result_code, message),
                    RequestError::TooBusy => (rc::DIAMETER_TOO_BUSY, e.to_string()),
                    other => (rc::DIAMETER_UNABLE_TO_DELIVER, other.to_string()),
                };
                // Counted here; logged at debug (no clock here for the rate limit).
                self.observer.local_answer(code, LocalCause::RelayFailed);
                tracing::debug!(result_code = code, "relayed request failed: {why}");
                if let Some(b) = self.error_answer(&r.request, code, &why, None) {
                    self.transmit(r.conn, b);
                }
            }
        }
    }

    /// Routes and sends a new request; `route`: its routing facts as the builder returned
    /// them. (A resend after failover is routed in [`Endpoint::failover`], which ends it
    /// differently when no peer can take it.)
    fn dispatch(
        &mut self,
        inflight: Inflight,
        route: &outgoing::RouteInfo<'_>,
        deadline: Instant,
        e2e: u32,
        now: Instant,
    ) {
        match self.route_new(&inflight, route, now) {
            Ok((peer, conn)) => self.send_to(inflight, peer, conn, deadline, e2e, None),
            Err(e) => self.complete(inflight.owner, Err(e)),
        }
    }

    /// A new request's route: a cached redirect that matches it (RFC 6733 §6.12: "The
    /// server contained in the selected Redirect-Host AVP SHOULD be used for all messages
    /// matching the criteria set by the Redirect-Host-Usage AVP"; §6.13's order when several
    /// match), else the normal routes. An entry is used only when its host is an open peer
    /// of ours carrying the application and not yet tried (a relayed request's sender and
    /// Route-Record hosts); otherwise the normal routes apply. Not when the request names a
    /// Destination-Host that is such a peer: §6.1.5 sends it there, as freeDiameter's
    /// FINALDEST score outweighs every REDIR_* one. ALL_HOST applies to the next hop the
    /// normal routes chose ("All messages that would be sent to the host that generated
    /// the Redirect-Host"). Failover and 3004 resends keep to the normal routes.
    fn route_new(
        &mut self,
        inflight: &Inflight,
        info: &outgoing::RouteInfo<'_>,
        now: Instant,
    ) -> Result<(PeerId, ConnId), RequestError> {
        if self.redirects.is_empty() {
            return self.route(inflight, info);
        }
        let app = inflight.app_id;
        let view = &info.view;
        let to_named_peer = view
            .destination_host
            .and_then(|h| self.peers.by_host(h))
            .is_some_and(|p| self.router.carries(p, app));
        let cached = if to_named_peer {
            None
        } else {
            self.redirects.lookup(view, app, now, |h| {
                redirect_target(&self.peers, &self.router, &inflight.tried, app, h)
            })
        };
        let (usage, (peer, conn)) = match cached {
            Some((usage, target)) => (usage, target),
            None => {
                let (peer, conn) = self.route(inflight, info)?;
                let hop = self.peers.get(peer).map_or("", |p| p.host());
                let cached = self.redirects.for_next_hop(hop, now, |h| {
                    redirect_target(&self.peers, &self.router, &inflight.tried, app, h)
                });
                match cached {
                    Some(target) => (crate::redirect::Usage::Host, target),
                    None => return Ok((peer, conn)),
                }
            }
        };
        self.observer.event("redirect_cache_used");
        tracing::debug!(
            usage = usage.name(),
            to = self.peers.get(peer).map_or("", |p| p.host()),
            "request sent to a cached Redirect-Host"
        );
        Ok((peer, conn))
    }

    /// [`route`](Self::route) for a stored request (failover): the facts decoded from it.
    fn route_stored(&mut self, inflight: &Inflight) -> Result<(PeerId, ConnId), RequestError> {
        let msg = Message::decode(inflight.request.clone())
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        self.route(inflight, &outgoing::route_info(&msg))
    }

    /// The peer and connection for a request with these routing facts (excluding the peers
    /// it already went to).
    fn route(
        &mut self,
        inflight: &Inflight,
        info: &outgoing::RouteInfo<'_>,
    ) -> Result<(PeerId, ConnId), RequestError> {
        let abbrev = self
            .dict
            .command(inflight.app_id, inflight.cmd_code)
            .map(|c| &*c.request_abbr);
        let request = info.request(inflight.app_id, abbrev);
        let peer = inflight
            .tried
            .with_slice(|tried| self.router.route_excluding(&request, tried))
            .map_err(|e| RequestError::NoRoute {
                result_code: e.result_code,
                message: e.message,
            })?;
        let conn = self
            .peers
            .get(peer)
            .and_then(|p| p.send_target())
            .ok_or_else(|| RequestError::NoRoute {
                result_code: dmproto::result_code::DIAMETER_UNABLE_TO_DELIVER,
                message: "the chosen peer is not open".into(),
            })?;
        Ok((peer, conn))
    }

    /// Registers and transmits a routed request.
    fn send_to(
        &mut self,
        mut inflight: Inflight,
        peer: PeerId,
        conn: ConnId,
        deadline: Instant,
        e2e: u32,
        resend: Option<u32>,
    ) {
        inflight.tried.push(peer);
        let host = self.peers.get(peer).map_or("", |p| p.host());
        match resend {
            None => self
                .observer
                .request(host, inflight.app_id, inflight.cmd_code, Direction::Out),
            Some(n) => {
                self.observer.event("retransmission");
                tracing::debug!(
                    peer = host,
                    retransmissions = n,
                    "request sent again with the T flag"
                );
            }
        }
        // The hop-by-hop id is ours, per connection (RFC 6733 §3); a resend after failover
        // carries the T flag (§5.5.4). Written into the stored request while the pending table
        // stores it, in place when nothing else holds the buffer (a request just built): the
        // transmitted bytes are the stored ones, not a copy.
        let mut wire = None;
        let stamp = |i: &mut Inflight, hbh: u32| {
            if pending::stamp(&mut i.request, hbh, resend.is_some()) {
                wire = Some(i.request.clone());
            }
        };
        let inserted = match resend {
            None => self
                .pending
                .insert_with(conn, e2e, deadline, inflight, stamp),
            Some(retransmissions) => self.pending.insert_retransmission_with(
                conn,
                PendingEntry {
                    conn,
                    hop_by_hop: 0,
                    end_to_end: e2e,
                    deadline,
                    retransmissions,
                    data: inflight,
                },
                stamp,
            ),
        };
        let hbh = match inserted {
            Ok(h) => h,
            Err(pending::Full(i)) => return self.complete(i.owner, Err(RequestError::TooBusy)),
        };
        match wire {
            Some(b) => self.transmit(conn, b),
            None => {
                if let Some(e) = self.pending.answer(conn, hbh) {
                    self.complete(e.data.owner, Err(RequestError::Invalid("truncated".into())));
                }
            }
        }
    }

    /// The connection is gone: resends what was pending on it to other peers (T flag), or
    /// fails it.
    fn failover(&mut self, conn: ConnId, now: Instant) {
        let lost = self.pending.connection_lost(conn);
        if !lost.is_empty() {
            self.observer.event("failover");
            tracing::info!(
                conn = conn.0,
                requests = lost.len(),
                "connection lost with requests pending: failing them over (T flag) or failing them"
            );
        }
        for e in lost {
            let (deadline, e2e, n) = (e.deadline, e.end_to_end, e.retransmissions);
            if self.stopping {
                // Sent already: "no answer", not NodeDown (which says it never went out).
                let why = "the node is stopping".to_string();
                self.complete(e.data.owner, Err(RequestError::ConnectionLost(why)));
            } else if now >= deadline {
                self.complete(e.data.owner, Err(RequestError::Timeout));
            } else {
                // Sent once already: without an alternate it ends as "no answer", never as
                // "not sent" (a caller that retries the latter might make the peer act twice).
                match self.route_stored(&e.data) {
                    Ok((peer, to)) => self.send_to(e.data, peer, to, deadline, e2e, Some(n)),
                    Err(why) => {
                        let why = match why {
                            RequestError::NoRoute { message, .. } => message,
                            other => other.to_string(),
                        };
                        self.complete(e.data.owner, Err(RequestError::ConnectionLost(why)));
                    }
                }
            }
        }
    }

    /// The watchdog suspects `conn` (RFC 3539 `Failover()`): requests pending on it move to
    /// an alternate peer when there is one. Without one they stay where they are — the
    /// suspect connection may still answer, and failing them early would be worse.
    fn suspect(&mut self, conn: ConnId, now: Instant) {
        let lost = self.pending.connection_lost(conn);
        if !lost.is_empty() {
            self.observer.event("failover");
            tracing::warn!(
                conn = conn.0,
                peer = self.peer_host(conn),
                requests = lost.len(),
                "watchdog suspects the connection: moving its pending requests to an alternate peer"
            );
        }
        for e in lost {
            if self.stopping || now >= e.deadline {
                // Its timer (or the shutdown) decides; keep it where it was.
                if let Err(pending::Full(lost)) = self.pending.restore(e) {
                    self.complete(lost.owner, Err(RequestError::NodeDown));
                }
                continue;
            }
            match self.route_stored(&e.data) {
                Ok((peer, to)) => {
                    let (deadline, e2e, n) = (e.deadline, e.end_to_end, e.retransmissions);
                    self.send_to(e.data, peer, to, deadline, e2e, Some(n));
                }
                Err(_) => {
                    if let Err(pending::Full(lost)) = self.pending.restore(e) {
                        self.complete(lost.owner, Err(RequestError::TooBusy));
                    }
                }
            }
        }
    }

    /// RFC 6733 §7.1.3: protocol errors that ask the sender to try another peer. Returns the
    /// entry when the answer stays the request's outcome, `None` when the request went on.
    ///
    /// - 3004 DIAMETER_TOO_BUSY: "When returned, a Diameter node SHOULD attempt to send the
    ///   message to an alternate peer": to one the router chooses among those the request has
    ///   not been to. Also when the request names the busy node in Destination-Host: the
    ///   RFC makes no exception ("This error MUST only be used when a specific server is
    ///   requested", so that is its usual case), and freeDiameter 1.2.1's rt_busypeers does
    ///   the same (see tests/tests/scale_out.rs). DESIGN §9's "does not [re-route] when it
    ///   was" the Destination-Host is not followed here: an alternate agent may still reach
    ///   the host, and a server that is not it answers 3002.
    /// - 3006 DIAMETER_REDIRECT_INDICATION: "the initiator of the request SHOULD direct the
    ///   request directly to the server" named in Redirect-Host (§6.12: "SHOULD forward the
    ///   request directly to one of the hosts identified in these AVPs"): the first that is
    ///   a peer of ours, open, carrying the application and not tried yet. A host we have
    ///   no connection to cannot be reached (no dynamic peer discovery here), and the 3006
    ///   goes to the requester.
    ///
    /// The request goes unchanged but for its hop-by-hop id, without the T flag (§3: T marks
    /// requests "not yet acknowledged"; this one was answered). A relayed request is handled
    /// the same way (§6.1.8: the relay "MUST" route it like its own). Without an alternate,
    /// past its deadline or while stopping, the answer is the outcome as it came.
    ///
    /// The selected Redirect-Host is then cached as the 3006's Redirect-Host-Usage asks
    /// ([`Endpoint::learn_redirect`], used by [`Endpoint::route_new`]).
    fn try_elsewhere(
        &mut self,
        entry: PendingEntry<Inflight>,
        answer: &Message,
        code: u32,
        now: Instant,
    ) -> Option<PendingEntry<Inflight>> {
        use dmproto::result_code as rc;
        if !answer.header.flags.is_error()
            || !matches!(
                code,
                rc::DIAMETER_TOO_BUSY | rc::DIAMETER_REDIRECT_INDICATION
            )
            || self.stopping
            || now >= entry.deadline
        {
            return Some(entry);
        }
        let busy = code == rc::DIAMETER_TOO_BUSY;
        let target = if busy {
            self.route_stored(&entry.data).ok()
        } else {
            let app = entry.data.app_id;
            delivery::redirect_hosts(answer)
                .iter()
                .find_map(|h| redirect_target(&self.peers, &self.router, &entry.data.tried, app, h))
        };
        let Some((peer, conn)) = target else {
            return Some(entry);
        };
        if busy {
            self.observer.event("busy_resent");
        } else {
            self.learn_redirect(&entry.data, answer, peer, now);
            self.observer.event("redirected");
        }
        tracing::debug!(
            result_code = code,
            from = origin_host(answer),
            to = self.peers.get(peer).map_or("", |p| p.host()),
            "request sent to an alternate peer"
        );
        let (deadline, e2e) = (entry.deadline, entry.end_to_end);
        self.send_to(entry.data, peer, conn, deadline, e2e, None);
        None
    }

    /// Caches the Redirect-Host selected for a 3006 (`peer`, where the request now goes) as
    /// its Redirect-Host-Usage asks (RFC 6733 §6.12-§6.14, [`crate::redirect`]). A caching
    /// usage without Redirect-Max-Cache-Time, which §6.14 says "MUST be present", is taken as
    /// DONT_CACHE (for how long is unknown), counted and logged. One longer than
    /// `[limits] redirect_cache_max_time` is cached for that long (the AVP is a maximum,
    /// §6.14), counted and logged too.
    fn learn_redirect(
        &mut self,
        inflight: &Inflight,
        answer: &Message,
        peer: PeerId,
        now: Instant,
    ) {
        let Ok(req) = Message::decode(inflight.request.clone()) else {
            return;
        };
        let info = outgoing::route_info(&req);
        let host = self.peers.get(peer).map_or("", |p| p.host());
        let learned = self
            .redirects
            .learn(answer, &info.view, inflight.app_id, host, now);
        match learned {
            Learned::Cached(usage) => {
                self.observer.event("redirect_cached");
                tracing::debug!(
                    usage = usage.name(),
                    to = host,
                    max_cache_time = answer.find_u32(dmproto::avp_code::REDIRECT_MAX_CACHE_TIME, 0),
                    "Redirect-Host cached"
                );
            }
            Learned::Capped { usage, asked } => {
                self.observer.event("redirect_cached");
                self.observer.event("redirect_cache_time_capped");
                if let Some(suppressed) = self.redirect_cap_log.admit(now) {
                    tracing::info!(
                        suppressed,
                        usage = usage.name(),
                        to = host,
                        from = origin_host(answer),
                        max_cache_time = asked,
                        cap_s = self.config.limits.redirect_cache_max_time.as_secs(),
                        "Redirect-Host cached for [limits] redirect_cache_max_time, less than its Redirect-Max-Cache-Time"
                    );
                }
            }
            Learned::Disabled(usage) => tracing::debug!(
                usage = usage.name(),
                "Redirect-Host not cached: [limits] redirect_cache_entries = 0"
            ),
            Learned::NoCacheTime(usage) => {
                self.observer.event("redirect_cache_time_missing");
                if let Some(suppressed) = self.redirect_log.admit(now) {
                    tracing::warn!(
                        suppressed,
                        usage = usage.name(),
                        from = origin_host(answer),
                        "3006 answer with Redirect-Host-Usage but no Redirect-Max-Cache-Time \
                         (RFC 6733 §6.14: MUST be present): not cached"
                    );
                }
            }
            Learned::NotKeyed(usage) => tracing::debug!(
                usage = usage.name(),
                "Redirect-Host not cached: Max-Cache-Time 0, or the request lacks what the usage keys on"
            ),
            Learned::DontCache => {}
        }
    }

    /// `dmbridge ctl peer disable`: the peer drains (no new requests are routed to it, its
    /// pending ones are answered or time out), then gets DPR and stays down until
    /// [`Endpoint::enable_peer`]. Its CERs meanwhile are refused.
    pub fn disable_peer(&mut self, host: &str, now: Instant) -> Result<(), PeerAdminError> {
        let peer = self.peer_named(host)?;
        tracing::info!(
            peer = host,
            "peer disabled by the operator: draining, then DPR"
        );
        self.peers.disable(peer, now);
        self.status_version += 1;
        self.act(now);
        self.after(now);
        Ok(())
    }

    /// Undoes [`Endpoint::disable_peer`]: a peer we connect to is connected again at once.
    pub fn enable_peer(&mut self, host: &str, now: Instant) -> Result<(), PeerAdminError> {
        let peer = self.peer_named(host)?;
        if !self.peers.is_disabled(peer) {
            return Err(PeerAdminError::NotDisabled(host.to_string()));
        }
        tracing::info!(peer = host, "peer enabled by the operator");
        self.peers.enable(peer, now);
        self.status_version += 1;
        self.act(now);
        Ok(())
    }

    fn peer_named(&self, host: &str) -> Result<PeerId, PeerAdminError> {
        self.peers
            .by_host(host)
            .filter(|p| !self.peers.is_retired(*p))
            .ok_or_else(|| PeerAdminError::NoSuchPeer(host.to_string()))
    }

    /// Replaces the dictionary (a reload that changed a dictionary file): requests from now
    /// on are validated and built with it. Borrowed for the life of the process, so nothing
    /// still holding the old one is left dangling.
    pub fn set_dictionary(&mut self, dict: &'static Dictionary) {
        self.dict = dict;
        self.validator = Arc::new(Validator::new(dict));
    }

    /// A reload: applies a new configuration without dropping what it does not change.
    /// Peers added are started; peers removed drain, get DPR and leave the table; a changed
    /// address is used from the peer's next connection attempt; the realm table, default
    /// route, applications, timers of new requests and limits are replaced. What the running
    /// process cannot change (identity, listen addresses, the shared-memory seam, table
    /// sizes, the metrics and admin endpoints) keeps its running value
    /// and is listed in [`Reconfigured::restart_needed`].
    pub fn reconfigure(&mut self, mut new: Config, now: Instant) -> Reconfigured {
        let old = self.config.clone();
        let mut r = Reconfigured::default();
        let mut keep = |changed: bool, what: &'static str| {
            if changed {
                r.restart_needed.push(what);
            }
            changed
        };
        if keep(
            new.node.origin_host != old.node.origin_host
                || new.node.origin_realm != old.node.origin_realm,
            "[node] origin_host, origin_realm",
        ) {
            new.node.origin_host.clone_from(&old.node.origin_host);
            new.node.origin_realm.clone_from(&old.node.origin_realm);
        }
        if keep(new.node.listen != old.node.listen, "[node] listen") {
            new.node.listen.clone_from(&old.node.listen);
        }
        // `[node] dictionaries` is applied by the driver with [`Endpoint::set_dictionary`].
        if keep(new.app != old.app, "[app]") {
            new.app = old.app.clone();
        }
        if keep(
            new.limits.max_pending_requests != old.limits.max_pending_requests
                || new.limits.dup_cache_entries != old.limits.dup_cache_entries
                || new.limits.dup_cache_ttl != old.limits.dup_cache_ttl,
            "[limits] max_pending_requests, dup_cache_*",
        ) {
            new.limits.max_pending_requests = old.limits.max_pending_requests;
            new.limits.dup_cache_entries = old.limits.dup_cache_entries;
            new.limits.dup_cache_ttl = old.limits.dup_cache_ttl;
        }
        if keep(
            new.ops.metrics_listen != old.ops.metrics_listen
                || new.ops.admin_socket != old.ops.admin_socket,
            "[metrics] listen, [admin] socket",
        ) {
            new.ops.metrics_listen = old.ops.metrics_listen;
            new.ops.admin_socket.clone_from(&old.ops.admin_socket);
        }
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        for p in &old.peers {
            if !new.peers.iter().any(|n| same(&n.host, &p.host)) {
                if let Some(id) = self.peers.by_host(&p.host) {
                    tracing::info!(peer = %p.host, "reload: peer removed: draining, then DPR");
                    self.peers.retire(id, now);
                    r.removed.push(p.host.clone());
                }
            }
        }
        for p in &new.peers {
            let connect_to = match p.mode {
                PeerMode::Connect => p.endpoint(),
                PeerMode::AcceptOnly => None,
            };
            match old.peers.iter().find(|o| same(&o.host, &p.host)) {
                None => {
                    match self.peers.by_host(&p.host) {
                        // Admitted earlier as an unknown peer: now configured.
                        Some(id) => {
                            self.peers.set_connect_to(id, connect_to);
                            self.peers.set_inband_tls(id, p.tls_inband);
                            self.peers.enable(id, now);
                        }
                        None => {
                            let id = self.peers.add_configured(&p.host, connect_to, now);
                            self.peers.set_inband_tls(id, p.tls_inband);
                        }
                    }
                    tracing::info!(peer = %p.host, "reload: peer added");
                    r.added.push(p.host.clone());
                }
                Some(o) if o != p => {
                    if let Some(id) = self.peers.by_host(&p.host) {
                        self.peers.set_connect_to(id, connect_to);
                        self.peers.set_inband_tls(id, p.tls_inband);
                    }
                    tracing::info!(peer = %p.host, "reload: peer changed (used from its next connection)");
                    r.changed.push(p.host.clone());
                }
                Some(_) => {}
            }
        }
        // Unchanged settings change nothing: every entry already fits them.
        self.redirects.configure(
            new.limits.redirect_cache_entries,
            new.limits.redirect_cache_max_time,
            now,
        );
        self.config = Arc::new(new);
        let peers = &self.peers;
        self.router.set_routes(&self.config, |h| peers.by_host(h));
        let extra = std::mem::take(&mut self.extra);
        self.advertise_extra(&extra);
        self.status_version += 1;
        self.act(now);
        self.after(now);
        r
    }

    /// After each input: while stopping, tell peers with nothing in flight that they drained.
    fn after(&mut self, now: Instant) {
        // While stopping, every peer; otherwise the peers the operator (or a reload) takes
        // down that are still open — usually none, so this costs nothing per message.
        let held: Vec<PeerId> = if self.stopping {
            self.peers.iter().map(|(id, _)| id).collect()
        } else {
            self.peers
                .held_down()
                .filter(|id| self.peers.get(*id).is_some_and(|p| p.open_conn().is_some()))
                .collect()
        };
        if held.is_empty() {
            return;
        }
        // Drained both ways: no request of ours waits for this peer's answer, and no request
        // of the peer waits for the application's (its answer must go out before DPR).
        let busy = |c: ConnId| {
            self.pending.count_on(c) > 0 || self.delivered.values().any(|d| d.conn == c)
        };
        let ready: Vec<PeerId> = held
            .into_iter()
            .filter(|id| {
                self.peers
                    .get(*id)
                    .and_then(|p| p.open_conn())
                    .is_some_and(|c| !busy(c))
            })
            .collect();
        for id in ready {
            self.peers.drained(id, now);
        }
        self.act(now);
    }

    /// Carries out the peer layer's actions.
    fn act(&mut self, now: Instant) {
        while let Some(action) = self.peers.poll_action() {
            match action {
                NodeAction::Peer { peer, action } => self.peer_action(peer, action, now),
                NodeAction::RefuseCer {
                    conn,
                    request,
                    error,
                } => {
                    // A 3010 was counted by the peer table under its finer `Refusal` cause
                    // (wrong address, certificate, unknown peer); the others only here.
                    let cause = match error.result_code {
                        dmproto::result_code::DIAMETER_UNKNOWN_PEER => None,
                        dmproto::result_code::DIAMETER_TOO_BUSY => {
                            Some("cer_too_many_unknown_peers")
                        }
                        dmproto::result_code::DIAMETER_UNABLE_TO_COMPLY => {
                            Some("cer_peer_disabled")
                        }
                        _ => Some("cer_invalid"),
                    };
                    if let Some(cause) = cause {
                        self.observer.refusal(cause);
                    }
                    let _conn = crate::spans::conn(conn).entered();
                    if let Some(suppressed) = self.refusal_log.admit(now) {
                        tracing::warn!(
                            conn = conn.0,
                            from = %self.remote(conn),
                            result_code = error.result_code,
                            suppressed,
                            "CER refused: {}",
                            error.message
                        );
                    }
                    let local = self.local_for(conn);
                    if let Ok(b) = wire::encode_cea_error(&request, &local, &error) {
                        self.transmit(conn, b);
                    }
                    self.close(conn);
                }
                NodeAction::Close { conn, reason } => {
                    // A CER timeout was counted by the peer table (`Refusal::CerTimeout`).
                    if reason != crate::peer::fsm::CloseReason::Timeout {
                        self.observer.refusal("not_cer_first");
                    }
                    let _conn = crate::spans::conn(conn).entered();
                    if let Some(suppressed) = self.refusal_log.admit(now) {
                        tracing::warn!(
                            conn = conn.0,
                            from = %self.remote(conn),
                            reason = ?reason,
                            suppressed,
                            "connection closed before a capabilities exchange"
                        );
                    }
                    self.close(conn);
                }
            }
        }
    }

    /// Our capabilities as sent on `conn` (Host-IP-Address = the connection's local address
    /// unless the configuration names addresses).
    fn local_for(&self, conn: ConnId) -> Capabilities {
        let mut caps = (*self.local).clone();
        // RFC 6733 §6.10 / RFC 3588 §2.1: on a plain connection of an in-band TLS peer, the
        // CER (and the CEA that agrees) carries Inband-Security-Id TLS, and only that, as
        // freeDiameter does for a `TLS_old_method` peer without `No_TLS`.
        let peer = self.peers.owner(conn).and_then(|p| self.peers.get(p));
        if peer.is_some_and(|p| p.inband_tls()) && self.peers.cert(conn).is_none() {
            caps.inband_security_ids = vec![inband::TLS];
        }
        if caps.host_ip_addresses.is_empty() {
            if let Some(Some(ip)) = self.conns.get(&conn) {
                caps.host_ip_addresses.push(*ip);
            }
        }
        caps
    }

    fn peer_action(&mut self, peer: PeerId, action: Action, now: Instant) {
        if matches!(
            action,
            Action::Up { .. }
                | Action::Usable { .. }
                | Action::Down { .. }
                | Action::Failover { .. }
        ) {
            self.status_version += 1;
        }
        let host = self
            .peers
            .get(peer)
            .map_or_else(String::new, |p| p.host().to_string());
        let host = host.as_str();
        // Everything logged from here on is in the peer's and the connection's context.
        let _peer = crate::spans::peer(host).entered();
        let _conn = crate::spans::conn(action.conn()).entered();
        match action {
            Action::Connect { conn, addr } => {
                tracing::debug!(peer = host, conn = conn.0, addr = ?addr, "connecting");
                self.out.push_back(Output::Connect { conn, addr })
            }
            Action::Accept { .. } => {}
            Action::Send { conn, msg } => {
                tracing::debug!(peer = host, conn = conn.0, msg = ?msg, "base protocol message");
                if matches!(msg, crate::peer::fsm::Outgoing::Dpr { .. }) {
                    self.answer_undrained(conn, host, now);
                }
                if let crate::peer::fsm::Outgoing::Cea {
                    result_code: crate::peer::capabilities::result::NO_COMMON_SECURITY,
                    error_message: Some(why),
                    ..
                } = &msg
                {
                    if let Some(suppressed) = self.refusal_log.admit(now) {
                        tracing::warn!(
                            peer = host,
                            conn = conn.0,
                            from = %self.remote(conn),
                            result_code = 5017,
                            suppressed,
                            "CER answered DIAMETER_NO_COMMON_SECURITY: {why}"
                        );
                    }
                }
                self.base_hbh = self.base_hbh.wrapping_add(1);
                self.end_to_end = self.end_to_end.wrapping_add(1);
                let local = self.local_for(conn);
                if let Ok(b) = wire::encode(&msg, &local, self.base_hbh, self.end_to_end) {
                    self.transmit(conn, b);
                }
            }
            Action::Close { conn, reason } => {
                let state = self.peers.get(peer).map_or("?", |p| p.state().name());
                use crate::peer::fsm::CloseReason as R;
                if reason == R::NoCommonSecurity {
                    // Counted and logged once per source and interval; the metrics see it
                    // through the refusals' sink, under the same name as before.
                    let why = format!("no common security with {host} (Inband-Security-Id in CER/CEA, RFC 6733 §6.10)");
                    let source = self.remotes.get(&conn).map(|a| a.ip());
                    self.peers
                        .refusals()
                        .record(Refusal::NoCommonSecurity, source, &why, now);
                }
                if matches!(
                    reason,
                    R::Watchdog
                        | R::ProtocolError
                        | R::Timeout
                        | R::Capabilities
                        | R::PeerRestarted
                        | R::NoCommonSecurity
                ) {
                    tracing::warn!(peer = host, conn = conn.0, reason = ?reason, state, "peer connection closed");
                } else {
                    tracing::info!(peer = host, conn = conn.0, reason = ?reason, state, "peer connection closed");
                }
                self.close(conn);
            }
            Action::Up { conn, remote, apps } => {
                let state = self.peers.get(peer).map_or("?", |p| p.state().name());
                tracing::info!(
                    peer = host,
                    conn = conn.0,
                    realm = %remote.origin_realm,
                    apps = ?apps.ids(),
                    state,
                    "peer open (capabilities exchanged)"
                );
                self.out.push_back(Output::Opened { conn });
                if self.peers.is_unknown(peer) {
                    tracing::info!(
                        peer = %remote.origin_host,
                        unknown = true,
                        "unknown peer {} open (allow_unknown_peers)",
                        remote.origin_host
                    );
                }
                self.router
                    .peer_up(peer, &remote.origin_host, &remote.origin_realm, apps);
            }
            Action::Usable { conn, usable } => {
                let watchdog = self.peers.get(peer).map(|p| p.watchdog().state());
                tracing::info!(peer = host, conn = conn.0, usable, watchdog = ?watchdog, "peer usability changed (watchdog or stop)");
                self.router.set_usable(peer, usable);
            }
            Action::Failover { conn } => {
                tracing::warn!(
                    peer = host,
                    conn = conn.0,
                    "watchdog: connection suspect (no answer to DWR)"
                );
                self.suspect(conn, now);
            }
            Action::Down { conn } => {
                let state = self.peers.get(peer).map_or("?", |p| p.state().name());
                tracing::info!(peer = host, conn = conn.0, state, "peer down");
                self.router.peer_down(peer);
                // RFC 6733 §6.14: "once a host is no longer reachable, any associated cache
                // ... entries MUST be deleted."
                let forgotten = self.redirects.forget_host(host);
                if forgotten > 0 {
                    tracing::debug!(
                        peer = host,
                        forgotten,
                        "cached redirects to the peer deleted"
                    );
                }
                self.failover(conn, now);
            }
            Action::StartTls { conn, role } => {
                tracing::info!(peer = host, conn = conn.0, role = ?role, "in-band TLS agreed in CER/CEA: TLS handshake");
                let trust = self.peers.trust(peer);
                let tls = TlsDial {
                    host: host.to_string(),
                    ca: trust.and_then(|t| t.ca.clone()),
                    verify_host: trust.is_none_or(|t| t.verify_host),
                };
                self.out.push_back(Output::StartTls {
                    conn,
                    role,
                    peer: tls,
                });
            }
        }
    }
}

/// Whether a reply-deadline record still stands for a request the application holds: it is
/// delivered, with this deadline.
fn reply_live(delivered: &FxHashMap<u64, Delivered>, deadline: Instant, token: u64) -> bool {
    delivered
        .get(&token)
        .is_some_and(|d| d.deadline == deadline)
}

/// The Result-Code of a message body (AVPs after the header), 0 when it has none: a walk
/// over the top-level AVP headers, no decoding and no allocation (for the answer counters).
fn result_code(body: &[u8]) -> u32 {
    let mut at = 0usize;
    while let Some(h) = body.get(at..at + 8) {
        let code = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let vendor = h[4] & 0x80 != 0;
        let len = usize::from(h[5]) << 16 | usize::from(h[6]) << 8 | usize::from(h[7]);
        let data = at + if vendor { 12 } else { 8 };
        if len < data - at {
            return 0;
        }
        if code == dmproto::avp_code::RESULT_CODE && !vendor && len == 12 {
            return body
                .get(data..data + 4)
                .map_or(0, |v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        }
        at += (len + 3) & !3;
    }
    0
}

/// A cached Redirect-Host's peer and connection, when it may take a request of `app` now:
/// a peer of ours, open, carrying the application, not tried yet.
fn redirect_target(
    peers: &Peers,
    router: &Router,
    tried: &Tried,
    app: u32,
    host: &str,
) -> Option<(PeerId, ConnId)> {
    let p = peers.by_host(host)?;
    if tried.with_slice(|t| t.contains(&p)) || !router.carries(p, app) {
        return None;
    }
    Some((p, peers.get(p)?.send_target()?))
}

fn origin_host(msg: &Message) -> &str {
    msg.find_str(wire::avp::ORIGIN_HOST, 0).unwrap_or("")
}

#[cfg(test)]
mod tests;
