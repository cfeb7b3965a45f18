//! The tokio driver: sockets, timers, and the application around the sans-IO [`Endpoint`].
//!
//! One task (the *node loop*) owns the [`Endpoint`], so no protocol state needs a lock. Around
//! it: a listener task per listen address, a connect task per connection attempt, a reader
//! and a writer task per connection ([`crate::transport`]), and a small task per incoming
//! request that waits (with the reply timeout) for the application's answer. The loop feeds
//! each input to the core and carries out the core's [`Output`]s; it makes no protocol
//! decision of its own.
//!
//! TLS (RFC 6733 §13, TLS at connect): connections accepted on a `[tls] listen` address are
//! admitted by the core first (so handshakes in progress count against the caps on strangers),
//! then the handshake runs in its own task, bounded by `handshake_timeout`; a failed one is
//! counted and logged with its cause and closes only that connection. Connections to a
//! `transport = "tls"` peer are dialled with TLS and the peer's name checked in the
//! handshake. [`Node::tls`] is the handle for reloading the certificates.
//!
//! In-band TLS (RFC 3588 §2.1, `tls_inband`): plain connections that may turn to TLS are
//! started with [`transport::spawn_upgradable`]; when the core says [`Output::StartTls`],
//! the plain reader and writer are stopped after our CEA is flushed (or right after the
//! peer's CEA was read), the TCP stream is taken back with whatever was read past the
//! CER/CEA (replayed first by [`transport::Rewound`]), the rustls handshake runs in its own
//! task with the same [`Tls`] material, and new tasks are started over the TLS stream
//! before the core hears [`Endpoint::inband_tls_up`]. A failed handshake is counted and
//! logged like one at connect ([`Endpoint::tls_refused`]) and closes only that connection.

use rustc_hash::FxHashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmproto::dict::Dictionary;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::alarm::Alarm;
use crate::app::{Application, Completion, Reply, ReplyQueue, Responder, Submission, Submissions};
use crate::due::{Gate, TaskWaker};
use crate::tls::{HandshakeError, Tls};
use crate::transport::{self, ConnEvent, ConnHandle, Rewound, Upgrade};
use dmnode::app::RequestId;
use dmnode::config::{self, AppAdvert, Config};
use dmnode::endpoint::{Endpoint, Output, PeerStatus, Seeds};
use dmnode::peer::capabilities::TlsRole;
use dmnode::peer::ConnId;
use dmnode::trust::{PeerCert, Refusal, Refusals};

/// Most queued inputs of one kind handled per wake-up of the node loop.
const BATCH: usize = 64;

/// A connection we opened: plain, or after a TLS handshake with the peer's certificate.
enum Dialled {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>, PeerCert),
}

/// A connection turned to TLS after CER/CEA: bytes read past the CER/CEA come first.
type InbandStream = tokio_rustls::TlsStream<Rewound<TcpStream>>;

/// Inputs of the node loop other than connection events.
enum Input {
    Accepted {
        stream: TcpStream,
        from: SocketAddr,
        tls: bool,
    },
    /// The TLS handshake of an accepted connection finished.
    Handshaken {
        conn: ConnId,
        source: Option<std::net::IpAddr>,
        // Boxed: the TLS state is large and this enum travels through a channel.
        result: Result<(Box<tokio_rustls::TlsStream<TcpStream>>, PeerCert), HandshakeError>,
    },
    Connected {
        conn: ConnId,
        result: io::Result<Dialled>,
    },
    /// The in-band TLS handshake after CER/CEA finished.
    InbandTls {
        conn: ConnId,
        source: Option<std::net::IpAddr>,
        host: String,
        // Boxed: the TLS state is large and this enum travels through a channel.
        result: Result<(Box<InbandStream>, PeerCert), HandshakeError>,
    },
    /// A peer's `address` name resolved to these addresses.
    Resolved {
        host: String,
        addrs: Vec<std::net::IpAddr>,
    },
    /// The applications to advertise beside the configured ones changed
    /// ([`Node::advertise_also`]).
    Advertised(Vec<AppAdvert>),
}

/// How often peers' address names are resolved again (for the source-address check).
const RESOLVE_EVERY: Duration = Duration::from_secs(300);

/// Binds one listening socket. IPv6 sockets are IPv6-only, so that `0.0.0.0:3868` and
/// `[::]:3868` can be listed together (Linux would otherwise refuse the second with
/// EADDRINUSE); SO_REUSEADDR lets a restarted node bind at once despite TIME_WAIT.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Opens a TCP connection to a peer. A name is resolved now (every attempt, so a peer that
/// moved is found again) and its addresses are tried in order.
/// This run's seeds: the start time from the system clock, the randomness from the
/// operating system (std's `RandomState` keys come from it), mixed with the clock and the
/// process id. It also seeds the duplicate cache's hasher, whose keys a peer chooses, so it
/// must not be guessable from the start time.
fn seeds_from_clock() -> Seeds {
    use std::hash::BuildHasher;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let random =
        std::collections::hash_map::RandomState::new().hash_one((t.as_nanos(), std::process::id()));
    Seeds {
        start_secs: t.as_secs() as u32,
        start_micros: t.subsec_micros(),
        random,
    }
}

async fn connect(endpoint: &config::Endpoint) -> io::Result<TcpStream> {
    match endpoint {
        config::Endpoint::Addr(a) => TcpStream::connect(a).await,
        config::Endpoint::Name { host, port } => TcpStream::connect((host.as_str(), *port)).await,
    }
}

/// Opens a connection to a peer, with TLS when `tls` says so (`transport = "tls"`). A failed
/// handshake is counted and logged, and reported as a failed connection (the peer state
/// machine then retries after Tc).
async fn dial(
    addr: &config::Endpoint,
    limit: Duration,
    tls: Option<(dmnode::endpoint::TlsDial, Option<Arc<Tls>>)>,
    refusals: &Refusals,
) -> io::Result<Dialled> {
    let tcp = match tokio::time::timeout(limit, connect(addr)).await {
        Ok(r) => r?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
    };
    let _ = tcp.set_nodelay(true);
    let Some((dial, tls)) = tls else {
        return Ok(Dialled::Plain(tcp));
    };
    // Configuration checks make this impossible: a TLS peer needs [tls].
    let Some(tls) = tls else {
        return Err(io::Error::other(format!(
            "{} needs TLS and no [tls] section is configured",
            dial.host
        )));
    };
    let source = tcp.peer_addr().ok().map(|a| a.ip());
    match tls
        .connect(tcp, &dial.host, dial.ca.as_deref(), dial.verify_host)
        .await
    {
        Ok((s, cert)) => Ok(Dialled::Tls(Box::new(s), cert)),
        Err(e) => {
            let why = format!("TLS to {}: {e}", dial.host);
            refusals.record_kind(
                Refusal::TlsHandshake,
                e.kind(),
                source,
                &why,
                Instant::now(),
            );
            Err(io::Error::other(why))
        }
    }
}

/// A bound, not yet running node.
pub struct Node {
    config: Config,
    dict: &'static Dictionary,
    listeners: Vec<TcpListener>,
    /// `[tls] listen`: TLS from the first byte.
    tls_listeners: Vec<TcpListener>,
    tls: Option<Arc<Tls>>,
    refusals: Arc<Refusals>,
    status: watch::Sender<Vec<PeerStatus>>,
    advertised: Option<watch::Receiver<Vec<AppAdvert>>>,
    observer: Option<Box<dyn dmnode::observe::Observer>>,
    admin: Option<mpsc::Receiver<crate::ops::NodeCall>>,
}

impl Node {
    /// Binds the listen addresses of `config`.
    pub async fn bind(config: Config, dict: &'static Dictionary) -> io::Result<Node> {
        Node::bind_with_status(config, dict, watch::channel(Vec::new()).0).await
    }

    /// [`Node::bind`], publishing the peers' states on `status` ([`Node::status`] subscribes
    /// to it). Made by the caller so that what shows the peers to others — the workers'
    /// status document — can be started before the node binds: `dmbridge run` opens the
    /// workers' control socket before the Diameter listeners (issue 11 item 8).
    pub async fn bind_with_status(
        config: Config,
        dict: &'static Dictionary,
        status: watch::Sender<Vec<PeerStatus>>,
    ) -> io::Result<Node> {
        let mut listeners = Vec::new();
        for addr in &config.node.listen {
            let l = listen(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
            listeners.push(l);
        }
        let mut tls_listeners = Vec::new();
        let tls = match &config.tls {
            Some(t) => {
                let settings = crate::tls::TlsSettings {
                    ca_file: t.ca_file.clone(),
                    cert_file: t.cert_file.clone(),
                    key_file: t.key_file.clone(),
                    handshake_timeout: t.handshake_timeout,
                    peer_cas: config
                        .peers
                        .iter()
                        .filter_map(|p| p.tls_ca.clone())
                        .collect(),
                };
                let tls = Tls::load(settings)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                for addr in &t.listen {
                    let l = listen(*addr).map_err(|e| {
                        io::Error::new(e.kind(), format!("TLS listen on {addr}: {e}"))
                    })?;
                    tls_listeners.push(l);
                }
                Some(Arc::new(tls))
            }
            None => None,
        };
        Ok(Node {
            config,
            dict,
            listeners,
            tls_listeners,
            tls,
            refusals: Arc::new(Refusals::new()),
            status,
            advertised: None,
            observer: None,
            admin: None,
        })
    }

    /// Where the endpoint's per-request counts and latencies go (the metrics recorder).
    pub fn set_observer(&mut self, observer: Box<dyn dmnode::observe::Observer>) {
        self.observer = Some(observer);
    }

    /// The channel of admin calls the node loop answers between inputs (`dmbridge ctl`,
    /// reloads, the systemd watchdog's ping).
    pub fn admin(&mut self) -> mpsc::Sender<crate::ops::NodeCall> {
        let (tx, rx) = mpsc::channel(16);
        self.admin = Some(rx);
        tx
    }

    /// The peers' states, republished whenever one changes (open, usable, down); the
    /// pending counts are as of that moment. For monitoring (`dm_status`).
    pub fn status(&self) -> watch::Receiver<Vec<PeerStatus>> {
        self.status.subscribe()
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The TLS listeners' addresses.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The TLS material, for `reload`/SIGHUP: call [`Tls::reload`] on it (new handshakes use
    /// the re-read files; a failed reload keeps the old ones and returns why).
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.clone()
    }

    /// Refusal counters (every cause of DESIGN §10), for status and metrics; live for the
    /// node's lifetime.
    pub fn refusals(&self) -> Arc<Refusals> {
        self.refusals.clone()
    }

    /// Also advertises the applications `rx` holds, from now on and whenever they change
    /// (the shared-memory application publishes those of the commands its workers serve);
    /// see [`Endpoint::advertise_extra`] for when peers see them.
    pub fn advertise_also(&mut self, rx: watch::Receiver<Vec<AppAdvert>>) {
        self.advertised = Some(rx);
    }

    /// Runs until `shutdown` resolves, then stops gracefully (drain, DPR) and returns.
    pub async fn run(
        self,
        app: Arc<dyn Application>,
        submissions: Submissions,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let (conn_tx, conn_rx) = mpsc::channel(4096);
        let (input_tx, input_rx) = mpsc::channel(4096);
        let mut accept_tasks = Vec::new();
        let listeners = self.listeners.into_iter().map(|l| (l, false));
        let tls_listeners = self.tls_listeners.into_iter().map(|l| (l, true));
        for (l, tls) in listeners.chain(tls_listeners) {
            let tx = input_tx.clone();
            accept_tasks.push(tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((stream, from)) => {
                            if tx
                                .send(Input::Accepted { stream, from, tls })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        // Out of descriptors and the like: wait a little rather than spin.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        // Peers configured by name: the source-address check needs their addresses.
        let names: Vec<(String, String, u16)> = self
            .config
            .peers
            .iter()
            .filter_map(|p| match &p.address {
                Some(config::PeerAddress::Name(n)) => Some((p.host.clone(), n.clone(), p.port)),
                _ => None,
            })
            .collect();
        if !names.is_empty() {
            let tx = input_tx.clone();
            accept_tasks.push(tokio::spawn(async move {
                loop {
                    for (host, name, port) in &names {
                        if let Ok(found) = tokio::net::lookup_host((name.as_str(), *port)).await {
                            let addrs = found.map(|a| a.ip()).collect();
                            let host = host.clone();
                            if tx.send(Input::Resolved { host, addrs }).await.is_err() {
                                return;
                            }
                        }
                    }
                    tokio::time::sleep(RESOLVE_EVERY).await;
                }
            }));
        }
        let (reply_tx, reply_rx) = mpsc::unbounded_channel();
        // The applications to advertise beside the configured ones: the set there is now, and
        // each change after it as an input, from a task of its own. In the loop's `select!` a
        // `watch::Receiver::changed()` future was made, registered and dropped on every turn,
        // whichever branch woke the loop (BENCHMARKS.md "Session 18: the cost of a bridge
        // wake-up"); the input queue is polled anyway.
        let mut forwarder = None;
        let advertised = match self.advertised {
            Some(mut rx) => {
                let first = rx.borrow_and_update().clone();
                let tx = input_tx.clone();
                forwarder = Some(tokio::spawn(async move {
                    while rx.changed().await.is_ok() {
                        let extra = rx.borrow_and_update().clone();
                        if tx.send(Input::Advertised(extra)).await.is_err() {
                            return;
                        }
                    }
                }));
                Some(first)
            }
            None => None,
        };
        let budget = Arc::new(transport::Budget::new(
            self.config.limits.max_buffered_bytes,
        ));
        let mut endpoint = Endpoint::new(self.config, self.dict, seeds_from_clock());
        if let Some(o) = self.observer {
            endpoint.set_observer(o);
        }
        endpoint.set_refusals(self.refusals.clone());
        if let Some(extra) = &advertised {
            endpoint.advertise_extra(extra);
        }
        let (admin_open, admin) = match self.admin {
            Some(rx) => (true, rx),
            None => (false, mpsc::channel(1).1),
        };
        let mut driver = Driver {
            endpoint,
            admin,
            admin_open,
            close_log: dmnode::log_limit::LogLimit::refusals(),
            tls: self.tls,
            conns: FxHashMap::default(),
            app,
            conn_tx,
            input_tx,
            reply_tx,
            status: self.status,
            status_version: u64::MAX,
            completions: FxHashMap::default(),
            upgrades: FxHashMap::default(),
            next_request: 0,
            budget,
            refusals: self.refusals,
        };
        let result = driver
            .run(
                conn_rx,
                input_rx,
                reply_rx,
                submissions,
                shutdown,
                &accept_tasks,
            )
            .await;
        for t in accept_tasks {
            t.abort();
        }
        if let Some(t) = forwarder {
            t.abort();
        }
        result
    }
}

struct Driver {
    endpoint: Endpoint,
    /// Admin calls ([`Node::admin`]); the branch is disabled without a sender.
    admin: mpsc::Receiver<crate::ops::NodeCall>,
    admin_open: bool,
    /// Flood control of the per-connection close lines.
    close_log: dmnode::log_limit::LogLimit,
    /// Keyed by the node's own ids (connections, requests), looked up per message: FxHash
    /// (no peer chooses these keys), where SipHash cost ~140 instructions a lookup.
    conns: FxHashMap<ConnId, ConnHandle>,
    app: Arc<dyn Application>,
    conn_tx: mpsc::Sender<ConnEvent>,
    input_tx: mpsc::Sender<Input>,
    /// Where every [`Responder`] reports (the core bounds how many are outstanding).
    reply_tx: ReplyQueue,
    status: watch::Sender<Vec<PeerStatus>>,
    /// The core's status version last published.
    status_version: u64,
    /// The submitters of requests in flight, by the id the endpoint reports their outcome
    /// under ([`Output::Outcome`]).
    completions: FxHashMap<RequestId, Completion>,
    /// Plain connections that may still turn to TLS (in-band), until open or closed: how
    /// to take their stream back, and their remote address.
    upgrades: FxHashMap<ConnId, (Upgrade<TcpStream>, Option<std::net::IpAddr>)>,
    next_request: u64,
    budget: Arc<transport::Budget>,
    refusals: Arc<Refusals>,
    tls: Option<Arc<Tls>>,
}

impl Driver {
    async fn run(
        &mut self,
        mut conn_rx: mpsc::Receiver<ConnEvent>,
        mut input_rx: mpsc::Receiver<Input>,
        mut reply_rx: mpsc::UnboundedReceiver<(u64, Reply)>,
        mut submissions: Submissions,
        shutdown: impl Future<Output = ()>,
        accept_tasks: &[tokio::task::JoinHandle<()>],
    ) -> io::Result<()> {
        tokio::pin!(shutdown);
        self.endpoint.start(Instant::now());
        self.outputs();
        // One timer, re-armed only when the core's next deadline changes.
        let mut alarm = Alarm::new();
        let mut hard_deadline: Option<Instant> = None;
        // The channels' branches are gated (crate::due): polled only when their own waker
        // fired, not on every turn whichever branch woke the loop.
        let task = Arc::new(TaskWaker::default());
        let gates = [(); 5].map(|()| Gate::new(&task));
        let [conn_gate, input_gate, admin_gate, reply_gate, submit_gate] = &gates;
        loop {
            let next = [self.endpoint.next_timeout(), hard_deadline]
                .into_iter()
                .flatten()
                .min();
            alarm.set(next.map(Into::into));
            // Before any gate is polled: the waker its wake-ups go to.
            task.set_current().await;
            // Not `biased`: under a steady stream of frames, replies, submissions and timers
            // must still get their turn (tokio picks a ready branch at random).
            tokio::select! {
                _ = &mut shutdown, if !self.endpoint.is_stopping() => {
                    for t in accept_tasks {
                        t.abort();
                    }
                    submissions.close();
                    let now = Instant::now();
                    let t = self.endpoint.config().timers;
                    hard_deadline =
                        Some(now + t.drain_timeout + t.dpa_timeout + Duration::from_secs(1));
                    self.endpoint.stop(now);
                }
                // Each branch also takes what else is already queued (up to BATCH), so that
                // under load one wake-up serves many messages.
                Some(ev) = conn_gate.ready(|cx| conn_rx.poll_recv(cx)) => {
                    self.on_conn_event(ev);
                    for _ in 1..BATCH {
                        let Ok(ev) = conn_rx.try_recv() else { break };
                        self.on_conn_event(ev);
                    }
                }
                Some(input) = input_gate.ready(|cx| input_rx.poll_recv(cx)) => {
                    self.on_input(input)
                }
                call = admin_gate.ready(|cx| self.admin.poll_recv(cx)),
                    if self.admin_open => match call {
                    Some(call) => self.on_admin(call),
                    None => self.admin_open = false,
                },
                Some((token, reply)) = reply_gate.ready(|cx| reply_rx.poll_recv(cx)) => {
                    let now = Instant::now();
                    self.endpoint.reply(token, &reply, now);
                    for _ in 1..BATCH {
                        let Ok((token, reply)) = reply_rx.try_recv() else { break };
                        self.endpoint.reply(token, &reply, now);
                    }
                }
                Some(sub) = submit_gate.ready(|cx| submissions.poll_recv(cx)),
                    if !self.endpoint.is_stopping() => {
                    let now = Instant::now();
                    self.submit(sub, now);
                    for _ in 1..BATCH {
                        let Some(sub) = submissions.try_recv() else { break };
                        self.submit(sub, now);
                    }
                }
                () = alarm.ring() => {
                    let now = Instant::now();
                    self.endpoint.handle_timeout(now);
                    if hard_deadline.is_some_and(|d| d <= now) {
                        self.outputs();
                        break;
                    }
                }
            }
            self.outputs();
            if self.endpoint.status_version() != self.status_version {
                self.status_version = self.endpoint.status_version();
                self.status.send_replace(self.endpoint.status());
            }
            if self.endpoint.is_finished() {
                break;
            }
        }
        self.endpoint.abandon();
        self.outputs();
        // Any submitter still waiting reads NodeDown when its completion is dropped.
        self.completions.clear();
        Ok(())
    }

    /// A request from the application: into the endpoint under a fresh id, unless its
    /// submitter stopped waiting already.
    fn submit(&mut self, sub: Submission, now: Instant) {
        if !sub.is_wanted() {
            return;
        }
        let (req, completion) = sub.into_parts();
        self.next_request = self.next_request.wrapping_add(1);
        let id = RequestId(self.next_request);
        self.completions.insert(id, completion);
        self.endpoint.submit(req, id, now);
    }

    fn on_conn_event(&mut self, ev: ConnEvent) {
        let now = Instant::now();
        match ev {
            ConnEvent::Frame { conn, frame } => self.endpoint.frame(conn, frame, now),
            ConnEvent::FrameError { conn, error } => self.endpoint.frame_error(conn, error, now),
            ConnEvent::Closed { conn, error } => {
                if let Some(error) = error {
                    if let Some(suppressed) = self.close_log.admit(now) {
                        tracing::info!(conn = conn.0, suppressed, "connection closed: {error}");
                    }
                } else {
                    tracing::debug!(conn = conn.0, "connection closed");
                }
                // What the core queued for this connection before it closed (an error answer
                // to its last frame) must reach the writer before the handle goes: the writer
                // drains its queue when the handle is dropped.
                self.outputs();
                self.conns.remove(&conn);
                self.upgrades.remove(&conn);
                self.endpoint.closed(conn, now);
            }
        }
    }

    fn on_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Accepted { stream, from, tls } => {
                let local = stream.local_addr().ok().map(|a| a.ip());
                let source = stream.peer_addr().ok().map(|a| a.ip());
                let Some(conn) = self.endpoint.accept(local, source, None, now) else {
                    return; // refused (counted and logged by the core): the socket closes
                };
                tracing::debug!(conn = conn.0, %from, tls, "connection accepted");
                self.endpoint.set_remote(conn, from);
                match (&self.tls, tls) {
                    (Some(t), true) => {
                        let (t, tx) = (t.clone(), self.input_tx.clone());
                        tokio::spawn(async move {
                            let _ = stream.set_nodelay(true);
                            let result = t.accept(stream).await.map(|(s, c)| (Box::new(s), c));
                            let _ = tx
                                .send(Input::Handshaken {
                                    conn,
                                    source,
                                    result,
                                })
                                .await;
                        });
                    }
                    _ => {
                        let _ = stream.set_nodelay(true);
                        self.attach_plain(conn, stream, source);
                    }
                }
            }
            Input::Handshaken {
                conn,
                source,
                result,
            } => match result {
                Ok((stream, cert)) => {
                    self.endpoint.accepted_tls(conn, cert);
                    let ack = self.quick_ack(stream.get_ref().0);
                    self.attach(conn, stream, source, ack);
                }
                Err(e) => {
                    self.endpoint
                        .tls_refused(e.kind(), source, &e.to_string(), now);
                    self.endpoint.closed(conn, now);
                }
            },
            Input::InbandTls {
                conn,
                source,
                host,
                result,
            } => match result {
                Ok((stream, cert)) => {
                    // Attach first: opening makes the core write (DWR) on the TLS stream.
                    let ack = self.quick_ack(stream.get_ref().0.get_ref());
                    self.attach(conn, *stream, source, ack);
                    self.endpoint.inband_tls_up(conn, cert, source, now);
                }
                Err(e) => {
                    let why = format!("in-band TLS with {host} after CER/CEA: {e}");
                    self.endpoint.tls_refused(e.kind(), source, &why, now);
                    self.endpoint.closed(conn, now);
                }
            },
            Input::Connected { conn, result } => {
                let dialled = match result {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::info!(conn = conn.0, "connection attempt failed: {e}");
                        self.endpoint.connected(conn, None, now);
                        return;
                    }
                };
                let (local, remote) = match &dialled {
                    Dialled::Plain(s) => (s.local_addr(), s.peer_addr()),
                    Dialled::Tls(s, _) => (s.get_ref().0.local_addr(), s.get_ref().0.peer_addr()),
                };
                // The address we dialled, as for accepted connections: refusals of this
                // connection (a CEA with no common security, a pin mismatch) name it.
                if let Ok(remote) = remote {
                    self.endpoint.set_remote(conn, remote);
                }
                let (local, source) = (local.ok().map(|a| a.ip()), remote.ok().map(|a| a.ip()));
                // Attach first: the core answers with a CER on this connection.
                match dialled {
                    Dialled::Plain(s) => {
                        let _ = s.set_nodelay(true);
                        self.attach_plain(conn, s, source);
                    }
                    Dialled::Tls(s, cert) => {
                        if !self.endpoint.dialled_cert(conn, cert, now) {
                            self.endpoint.connected(conn, None, now);
                            return;
                        }
                        let ack = self.quick_ack(s.get_ref().0);
                        self.attach(conn, *s, source, ack);
                    }
                }
                if !self.endpoint.connected(conn, Some(local), now) {
                    if let Some(h) = self.conns.remove(&conn) {
                        h.close();
                    }
                }
            }
            Input::Resolved { host, addrs } => self.endpoint.set_resolved(&host, &addrs),
            Input::Advertised(extra) => self.endpoint.advertise_extra(&extra),
        }
    }

    /// The handle for immediate ACKs on `tcp` ([`transport::quick_ack`]), unless `[limits]
    /// quick_ack` is off.
    fn quick_ack(&self, tcp: &TcpStream) -> Option<Arc<socket2::Socket>> {
        if self.endpoint.config().limits.quick_ack {
            transport::quick_ack(tcp)
        } else {
            None
        }
    }

    fn read_limits(
        &self,
        source: Option<std::net::IpAddr>,
        ack: Option<Arc<socket2::Socket>>,
    ) -> transport::ReadLimits {
        let l = self.endpoint.config().limits;
        transport::ReadLimits {
            ack,
            before_open: l.max_message_size_before_cer as usize,
            message_timeout: l.message_timeout,
            budget: self.budget.clone(),
            refusals: self.refusals.clone(),
            source,
        }
    }

    /// `ack`: the TCP socket under `stream` ([`Driver::quick_ack`]).
    fn attach<S>(
        &mut self,
        conn: ConnId,
        stream: S,
        source: Option<std::net::IpAddr>,
        ack: Option<Arc<socket2::Socket>>,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let limits = self.read_limits(source, ack);
        let handle = transport::spawn(conn, stream, limits, self.conn_tx.clone());
        self.conns.insert(conn, handle);
    }

    /// A plain TCP connection: one that may turn to TLS after CER/CEA (in-band TLS, with
    /// TLS material loaded) keeps the way to take its stream back.
    fn attach_plain(&mut self, conn: ConnId, stream: TcpStream, source: Option<std::net::IpAddr>) {
        let ack = self.quick_ack(&stream);
        let limits = self.read_limits(source, ack);
        if self.tls.is_none() || !self.endpoint.may_start_tls(conn) {
            let handle = transport::spawn_plain(conn, stream, limits, self.conn_tx.clone());
            self.conns.insert(conn, handle);
            return;
        }
        let (handle, upgrade) =
            transport::spawn_upgradable(conn, stream, limits, self.conn_tx.clone());
        self.conns.insert(conn, handle);
        self.upgrades.insert(conn, (upgrade, source));
    }

    /// [`Output::StartTls`]: stop the plain tasks once the CEA is written, take the stream
    /// back, and run the handshake in its own task (reported as [`Input::InbandTls`]).
    fn start_tls(&mut self, conn: ConnId, role: TlsRole, peer: dmnode::endpoint::TlsDial) {
        let handle = self.conns.remove(&conn);
        let (Some(handle), Some((upgrade, source)), Some(tls)) =
            (handle, self.upgrades.remove(&conn), self.tls.clone())
        else {
            // Not a connection that can turn to TLS (cannot happen: the core asks only for
            // plain connections of in-band peers, which are started upgradable): close it.
            tracing::warn!(
                conn = conn.0,
                "in-band TLS asked on a connection that cannot do it"
            );
            if let Some(h) = self.conns.get(&conn) {
                h.close();
            }
            return;
        };
        if !handle.release() {
            return; // aborted: its Closed event comes from the reader
        }
        let tx = self.input_tx.clone();
        tokio::spawn(async move {
            let result = match upgrade.wait().await {
                None => Err(HandshakeError::Other(
                    "the connection ended before the handshake".into(),
                )),
                Some((tcp, leftover)) => {
                    let io = Rewound::new(leftover, tcp);
                    let done = match role {
                        TlsRole::Server => tls.accept(io).await,
                        TlsRole::Client => {
                            let ca = peer.ca.as_deref();
                            tls.connect(io, &peer.host, ca, peer.verify_host).await
                        }
                    };
                    done.map(|(s, c)| (Box::new(s), c))
                }
            };
            let host = peer.host;
            let _ = tx
                .send(Input::InbandTls {
                    conn,
                    source,
                    host,
                    result,
                })
                .await;
        });
    }

    /// An admin call, answered between two inputs.
    fn on_admin(&mut self, call: crate::ops::NodeCall) {
        use crate::ops::{self, NodeRequest};
        use serde_json::json;
        let now = Instant::now();
        let answer = match call.request {
            NodeRequest::Ping => Ok(serde_json::Value::Null),
            NodeRequest::Status => Ok(ops::status_json(
                self.endpoint.config(),
                &self.endpoint.status(),
                self.endpoint.is_stopping(),
            )),
            NodeRequest::Peers => Ok(ops::peers_json(&self.endpoint.status())),
            NodeRequest::Routes => Ok(ops::routes_json(self.endpoint.config())),
            NodeRequest::PeerDisable(host) => self
                .endpoint
                .disable_peer(&host, now)
                .map(|()| json!(format!("peer {host} disabled: draining, then DPR")))
                .map_err(ops::OpsError::Peer),
            NodeRequest::PeerEnable(host) => self
                .endpoint
                .enable_peer(&host, now)
                .map(|()| json!(format!("peer {host} enabled")))
                .map_err(ops::OpsError::Peer),
            NodeRequest::Reload(config, dict) => 'reload: {
                // The certificate, key and CA bundles first (issue 12: "certificate reload
                // on `reload`"): a file that does not load refuses the whole reload, so the
                // running certificate and configuration stay together. New handshakes use
                // the new material; open TLS connections keep theirs.
                if let Some(tls) = &self.tls {
                    if let Err(e) = tls.reload() {
                        break 'reload Err(ops::OpsError::Tls(e));
                    }
                }
                if let Some(d) = dict {
                    self.endpoint.set_dictionary(d);
                }
                let r = self.endpoint.reconfigure(*config, now);
                for what in &r.restart_needed {
                    tracing::warn!("reload: {what} changed: takes effect at the next restart");
                }
                Ok(json!({
                    "added": r.added,
                    "removed": r.removed,
                    "changed": r.changed,
                    "restart_needed": r.restart_needed,
                    "tls": self.tls.as_ref().map(|_| "reloaded"),
                }))
            }
        };
        let _ = call.reply.send(answer);
    }

    /// Carries out what the core asked for.
    fn outputs(&mut self) {
        while let Some(out) = self.endpoint.poll_output() {
            match out {
                Output::Transmit { conn, bytes } => {
                    if let Some(h) = self.conns.get(&conn) {
                        if !h.send(bytes) {
                            // The peer does not read: cut it off rather than queue without
                            // bound. Its Closed event tells the core.
                            h.abort();
                        }
                    }
                }
                Output::Close { conn } => {
                    if let Some(h) = self.conns.get(&conn) {
                        h.close();
                    }
                }
                Output::Opened { conn } => {
                    self.upgrades.remove(&conn);
                    if let Some(h) = self.conns.get(&conn) {
                        h.open(self.endpoint.config().limits.max_message_size as usize);
                    }
                }
                Output::StartTls { conn, role, peer } => self.start_tls(conn, role, peer),
                Output::Connect { conn, addr } => {
                    let tx = self.input_tx.clone();
                    let limit = self.endpoint.config().timers.cer_timeout;
                    let tls = self.endpoint.dial_tls(conn).map(|d| (d, self.tls.clone()));
                    let refusals = self.refusals.clone();
                    tokio::spawn(async move {
                        let result = dial(&addr, limit, tls, &refusals).await;
                        let _ = tx.send(Input::Connected { conn, result }).await;
                    });
                }
                Output::Deliver { token, request } => {
                    let responder = Responder::queued(token, self.reply_tx.clone());
                    self.app.on_request(request, responder);
                }
                Output::Withdrawn { tokens } => self.app.withdrawn(tokens),
                Output::Outcome { id, result, waited } => {
                    if let Some(c) = self.completions.remove(&id) {
                        c.complete_after(result, waited);
                    }
                }
            }
        }
    }
}
