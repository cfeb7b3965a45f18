//! The tokio driver: sockets, timers, and the application seam around the sans-IO core.
//!
//! One task (the *node loop*) owns all protocol state — [`Peers`], [`Router`], the
//! [`PendingTable`] and the [`DupCache`] — so none of it needs a lock. Around it:
//! - a listener task per listen address, handing accepted streams to the loop;
//! - a connect task per connection attempt;
//! - a reader and a writer task per connection ([`crate::transport`]);
//! - a small task per incoming request waiting (with the reply timeout) for the
//!   application's answer.
//!
//! The loop turns each input (a frame, a closed connection, an application reply, a
//! submission, a timer) into calls on the core, then carries out the actions the core
//! returns. Every request ends in exactly one outcome: incoming ones get one answer (the
//! application's, a validation error, 5012 when the application fails or is too slow, 3002
//! when the connection is not open), outgoing ones one answer or one [`RequestError`].

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dmproto::dict::Dictionary;
use dmproto::{validate_request, Message};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::answer::{self, Origin};
use crate::app::{
    AnswerBody, Application, Completion, IncomingRequest, PeerInfo, Reply, RequestError, Responder,
    Submissions,
};
use crate::config::Config;
use crate::outgoing::{self, RequestContext, SessionIds};
use crate::peer::fsm::{Action, DisconnectCause};
use crate::peer::table::{NodeAction, PeerId, Peers, Received};
use crate::peer::{wire, Capabilities, ConnId};
use crate::pending::{self, DupCache, DupCheck, PendingEntry, PendingTable, Requester};
use crate::router::Router;
use crate::transport::{self, ConnEvent, ConnHandle};

/// Inputs of the node loop other than connection events.
enum Input {
    Accepted(TcpStream),
    Connected {
        conn: ConnId,
        result: io::Result<TcpStream>,
    },
    Reply {
        conn: ConnId,
        request: Message,
        reply: Reply,
    },
}

/// A request we sent, as kept in the pending table.
struct Inflight {
    completion: Completion,
    /// The encoded request, for a resend after failover.
    request: Bytes,
    app_id: u32,
    /// Peers it was sent to, so a resend goes elsewhere.
    tried: Vec<PeerId>,
}

struct Conn {
    handle: ConnHandle,
    local_ip: Option<IpAddr>,
}

/// A bound, not yet running node.
pub struct Node {
    config: Config,
    dict: &'static Dictionary,
    listeners: Vec<TcpListener>,
}

impl Node {
    /// Binds the listen addresses of `config`.
    pub async fn bind(config: Config, dict: &'static Dictionary) -> io::Result<Node> {
        let mut listeners = Vec::new();
        for addr in &config.node.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
            listeners.push(l);
        }
        Ok(Node {
            config,
            dict,
            listeners,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
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
        for l in self.listeners {
            let tx = input_tx.clone();
            accept_tasks.push(tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((stream, _)) => {
                            if tx.send(Input::Accepted(stream)).await.is_err() {
                                return;
                            }
                        }
                        // Out of descriptors and the like: wait a little rather than spin.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        let mut driver = Driver::new(self.config, self.dict, app, conn_tx, input_tx);
        let result = driver
            .run(conn_rx, input_rx, submissions, shutdown, &accept_tasks)
            .await;
        for t in accept_tasks {
            t.abort();
        }
        result
    }
}

struct Driver {
    config: Arc<Config>,
    dict: &'static Dictionary,
    app: Arc<dyn Application>,
    local: Arc<Capabilities>,
    peers: Peers,
    router: Router,
    pending: PendingTable<Inflight>,
    dup: DupCache,
    sessions: SessionIds,
    conns: HashMap<ConnId, Conn>,
    conn_tx: mpsc::Sender<ConnEvent>,
    input_tx: mpsc::Sender<Input>,
    /// Hop-by-hop ids of our base requests (CER, DWR, DPR), which the peer layer matches by
    /// command code, not through the pending table.
    base_hbh: u32,
    end_to_end: u32,
    stopping: bool,
}

fn seed() -> (u32, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        now.as_secs() as u32,
        now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32,
    )
}

impl Driver {
    fn new(
        config: Config,
        dict: &'static Dictionary,
        app: Arc<dyn Application>,
        conn_tx: mpsc::Sender<ConnEvent>,
        input_tx: mpsc::Sender<Input>,
    ) -> Driver {
        let (secs, seed) = seed();
        let local = Arc::new(Capabilities::local(&config, secs, &[]));
        let peers = Peers::new(&config, local.clone(), seed);
        let router = Router::new(&config, |h| peers.by_host(h));
        let limits = config.limits;
        Driver {
            local,
            router,
            pending: PendingTable::new(limits.max_pending_requests, seed as u32),
            dup: DupCache::new(
                limits.dup_cache_entries,
                limits.dup_cache_entries.saturating_mul(4096),
                limits.dup_cache_ttl,
            ),
            sessions: SessionIds::new(&config.node.origin_host, secs),
            peers,
            conns: HashMap::new(),
            conn_tx,
            input_tx,
            // RFC 6733 §3: the high 12 bits of end-to-end ids from the clock, the rest a
            // counter, so ids do not repeat across restarts.
            end_to_end: (secs << 20) ^ (seed as u32 & 0xfffff),
            base_hbh: (seed >> 32) as u32,
            stopping: false,
            config: Arc::new(config),
            dict,
            app,
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

    async fn run(
        &mut self,
        mut conn_rx: mpsc::Receiver<ConnEvent>,
        mut input_rx: mpsc::Receiver<Input>,
        mut submissions: Submissions,
        shutdown: impl Future<Output = ()>,
        accept_tasks: &[JoinHandle<()>],
    ) -> io::Result<()> {
        tokio::pin!(shutdown);
        self.peers.start_all(Instant::now());
        self.act();
        let mut hard_deadline: Option<Instant> = None;
        loop {
            let next = [
                self.peers.next_timeout(),
                self.pending.next_deadline(),
                hard_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut shutdown, if !self.stopping => {
                    for t in accept_tasks {
                        t.abort();
                    }
                    submissions.close();
                    let now = Instant::now();
                    let t = self.config.timers;
                    hard_deadline = Some(now + t.drain_timeout + t.dpa_timeout + Duration::from_secs(1));
                    self.stop(now);
                }
                Some(ev) = conn_rx.recv() => self.on_conn_event(ev),
                Some(input) = input_rx.recv() => self.on_input(input),
                Some(sub) = submissions.recv(), if !self.stopping => {
                    let (req, completion) = sub.into_parts();
                    self.originate(req, completion);
                }
                _ = sleep => {
                    let now = Instant::now();
                    self.peers.handle_timeout(now);
                    for e in self.pending.expire(now) {
                        e.data.completion.complete(Err(RequestError::Timeout));
                    }
                    if hard_deadline.is_some_and(|d| d <= now) {
                        break;
                    }
                }
            }
            self.act();
            if self.stopping {
                self.check_drained();
                if self.peers.all_closed() && self.pending.is_empty() {
                    break;
                }
            }
        }
        // Whatever is left fails clearly.
        let now = Instant::now();
        for e in self.pending.expire(now + Duration::from_secs(86400 * 365)) {
            e.data.completion.complete(Err(RequestError::NodeDown));
        }
        for (_, c) in self.conns.drain() {
            c.handle.close();
        }
        Ok(())
    }

    fn stop(&mut self, now: Instant) {
        self.stopping = true;
        self.peers.stop_all(DisconnectCause::Rebooting, now);
    }

    /// While stopping: tell each peer with nothing pending that it has drained.
    fn check_drained(&mut self) {
        let now = Instant::now();
        let ready: Vec<PeerId> = self
            .peers
            .iter()
            .filter_map(|(id, p)| {
                p.open_conn()
                    .filter(|c| self.pending.count_on(*c) == 0)
                    .map(|_| id)
            })
            .collect();
        for id in ready {
            self.peers.drained(id, now);
        }
        self.act();
    }

    fn on_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Accepted(stream) => {
                if self.stopping
                    || self.peers.connection_count() >= self.config.limits.max_connections
                {
                    drop(stream);
                    return;
                }
                let conn = self.peers.accepted(now);
                self.attach(conn, stream);
            }
            Input::Connected { conn, result } => match result {
                Ok(stream) if self.peers.owner(conn).is_some() => {
                    self.attach(conn, stream);
                    self.peers.connect_result(conn, true, now);
                }
                Ok(stream) => drop(stream),
                Err(_) => self.peers.connect_result(conn, false, now),
            },
            Input::Reply {
                conn,
                request,
                reply,
            } => self.on_reply(conn, request, reply),
        }
    }

    fn attach(&mut self, conn: ConnId, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let local_ip = stream.local_addr().ok().map(|a| a.ip());
        let handle = transport::spawn(conn, stream, self.max_len(), self.conn_tx.clone());
        self.conns.insert(conn, Conn { handle, local_ip });
    }

    fn send(&mut self, conn: ConnId, bytes: Bytes) {
        let stuck = match self.conns.get(&conn) {
            Some(c) => !c.handle.send(bytes),
            None => false,
        };
        if stuck {
            // The peer does not read: cut it off rather than queue without bound.
            if let Some(c) = self.conns.get(&conn) {
                c.handle.abort();
            }
        }
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            c.handle.close();
        }
    }

    fn on_conn_event(&mut self, ev: ConnEvent) {
        let now = Instant::now();
        match ev {
            ConnEvent::Frame { conn, frame } => match Message::decode(frame) {
                Ok(msg) => self.on_message(conn, msg, now),
                // The framer checked version and length; anything else is unframeable.
                Err(_) => self.close(conn),
            },
            ConnEvent::FrameError { conn, error } => {
                if let (Some(code), Some(header)) = (error.result_code(), error.header) {
                    if header.flags.is_request() {
                        let req = Message {
                            header,
                            body: Bytes::new(),
                        };
                        if let Ok(b) = answer::error_answer(
                            &req,
                            self.origin(),
                            code,
                            &error.to_string(),
                            None,
                            self.max_len(),
                        ) {
                            self.send(conn, b);
                        }
                    }
                }
                self.close(conn);
            }
            ConnEvent::Closed { conn, .. } => {
                self.conns.remove(&conn);
                self.peers.disconnected(conn, now);
                // The peer layer's Down (in `act`) fails pending requests over, after the
                // router has learnt the peer is gone; anything still on `conn` then goes too.
                self.act();
                self.failover(conn);
            }
        }
    }

    fn on_message(&mut self, conn: ConnId, msg: Message, now: Instant) {
        match self.peers.received(conn, &msg, now) {
            Received::Consumed => {}
            Received::NotOpen => {
                if let Ok(b) = answer::error_answer(
                    &msg,
                    self.origin(),
                    dmproto::result_code::DIAMETER_UNABLE_TO_DELIVER,
                    "connection not open",
                    None,
                    self.max_len(),
                ) {
                    self.send(conn, b);
                }
            }
            Received::Process { peer } if msg.is_request() => self.incoming(conn, peer, msg, now),
            Received::Process { peer } => self.answer_received(conn, peer, msg),
        }
    }

    fn answer_received(&mut self, conn: ConnId, _peer: PeerId, msg: Message) {
        // Unmatched answers (late, after a timeout or failover) are dropped: their request
        // already has its outcome.
        if let Some(entry) = self.pending.answer(conn, msg.header.hop_by_hop) {
            entry.data.completion.complete(Ok(msg));
        }
    }

    fn incoming(&mut self, conn: ConnId, peer: PeerId, msg: Message, now: Instant) {
        if let Err(e) = validate_request(&msg, self.dict) {
            if let Ok(b) = answer::error_answer(
                &msg,
                self.origin(),
                e.result_code,
                &e.message,
                e.failed_avp.as_deref(),
                self.max_len(),
            ) {
                self.send(conn, b);
            }
            return;
        }
        let origin_host = msg
            .find_ref(wire::avp::ORIGIN_HOST, 0)
            .and_then(|a| std::str::from_utf8(a.data).ok())
            .unwrap_or("")
            .to_string();
        let from = Requester {
            conn,
            hop_by_hop: msg.header.hop_by_hop,
        };
        let retransmit = msg.header.flags.is_retransmit();
        match self
            .dup
            .check(&origin_host, msg.header.end_to_end, retransmit, from, now)
        {
            DupCheck::New => {}
            DupCheck::InProgress => return,
            DupCheck::Answered(a) => {
                self.send(conn, pending::with_hop_by_hop(&a, msg.header.hop_by_hop));
                return;
            }
        }
        let info = match self.peers.get(peer).and_then(|p| p.remote()) {
            Some(r) => PeerInfo {
                host: r.origin_host.clone(),
                realm: r.origin_realm.clone(),
            },
            None => PeerInfo {
                host: String::new(),
                realm: String::new(),
            },
        };
        let (responder, rx) = Responder::new();
        self.app.on_request(
            IncomingRequest {
                peer: info,
                message: msg.clone(),
            },
            responder,
        );
        let timeout = self.config.app.reply_timeout;
        let tx = self.input_tx.clone();
        tokio::spawn(async move {
            let reply = tokio::time::timeout(timeout, rx)
                .await
                .unwrap_or(Reply::Unanswered);
            let _ = tx
                .send(Input::Reply {
                    conn,
                    request: msg,
                    reply,
                })
                .await;
        });
    }

    fn on_reply(&mut self, conn: ConnId, request: Message, reply: Reply) {
        let built = match &reply {
            Reply::Answer(body) => {
                answer::app_answer(&request, self.origin(), body, self.max_len())
                    .map_err(|e| e.to_string())
            }
            Reply::Unanswered => Err("the application gave no answer".to_string()),
        };
        let bytes = match built {
            Ok(b) => b,
            Err(why) => match answer::error_answer(
                &request,
                self.origin(),
                dmproto::result_code::DIAMETER_UNABLE_TO_COMPLY,
                &why,
                None,
                self.max_len(),
            ) {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        let origin_host = request
            .find_ref(wire::avp::ORIGIN_HOST, 0)
            .and_then(|a| std::str::from_utf8(a.data).ok())
            .unwrap_or("");
        for waiter in self
            .dup
            .complete(origin_host, request.header.end_to_end, bytes.clone())
        {
            self.send(
                waiter.conn,
                pending::with_hop_by_hop(&bytes, waiter.hop_by_hop),
            );
        }
        self.send(conn, bytes);
    }

    /// An application request: complete it, route it, send it.
    fn originate(&mut self, req: crate::app::OutgoingRequest, completion: Completion) {
        if !completion.is_wanted() {
            return;
        }
        self.end_to_end = self.end_to_end.wrapping_add(1);
        let e2e = self.end_to_end;
        let ctx = RequestContext {
            origin: Origin {
                host: &self.config.node.origin_host,
                realm: &self.config.node.origin_realm,
            },
            destination_realm: Some(self.config.node.default_destination_realm()),
            applications: &self.config.applications,
            dict: self.dict,
            max_len: self.config.limits.max_message_size as usize,
        };
        let bytes = match outgoing::build_request(&ctx, &req, 0, e2e, &mut self.sessions) {
            Ok(b) => b,
            Err(e) => return completion.complete(Err(e)),
        };
        let inflight = Inflight {
            completion,
            request: bytes,
            app_id: req.app_id,
            tried: Vec::new(),
        };
        let deadline = Instant::now() + self.config.timers.answer_timeout;
        self.dispatch(inflight, deadline, e2e, None);
    }

    /// Routes and sends a request (new, or a resend after failover when `entry` is given).
    fn dispatch(
        &mut self,
        mut inflight: Inflight,
        deadline: Instant,
        e2e: u32,
        resend: Option<u32>,
    ) {
        let msg = match Message::decode(inflight.request.clone()) {
            Ok(m) => m,
            Err(e) => {
                return inflight
                    .completion
                    .complete(Err(RequestError::Invalid(e.to_string())))
            }
        };
        let info = outgoing::route_info(&msg);
        let choice = self
            .router
            .route_excluding(&info.request(inflight.app_id), &inflight.tried);
        let peer = match choice {
            Ok(p) => p,
            Err(e) => {
                return inflight.completion.complete(Err(RequestError::NoRoute {
                    result_code: e.result_code,
                    message: e.message,
                }))
            }
        };
        let Some(conn) = self.peers.get(peer).and_then(|p| p.send_target()) else {
            return inflight.completion.complete(Err(RequestError::NoRoute {
                result_code: dmproto::result_code::DIAMETER_UNABLE_TO_DELIVER,
                message: "the chosen peer is not open".into(),
            }));
        };
        inflight.tried.push(peer);
        let request = inflight.request.clone();
        let inserted = match resend {
            None => self.pending.insert(conn, e2e, deadline, inflight),
            Some(retransmissions) => self.pending.insert_retransmission(
                conn,
                PendingEntry {
                    conn,
                    hop_by_hop: 0,
                    end_to_end: e2e,
                    deadline,
                    retransmissions,
                    data: inflight,
                },
            ),
        };
        let hbh = match inserted {
            Ok(h) => h,
            Err(pending::Full(i)) => return i.completion.complete(Err(RequestError::TooBusy)),
        };
        let bytes = if resend.is_some() {
            pending::retransmission(&request, hbh)
        } else {
            Some(pending::with_hop_by_hop(&request, hbh))
        };
        match bytes {
            Some(b) => self.send(conn, b),
            None => {
                if let Some(e) = self.pending.answer(conn, hbh) {
                    e.data
                        .completion
                        .complete(Err(RequestError::Invalid("truncated".into())));
                }
            }
        }
    }

    /// Resends what was pending on `conn` to other peers (T flag), or fails it.
    fn failover(&mut self, conn: ConnId) {
        for e in self.pending.connection_lost(conn) {
            let (deadline, e2e, n) = (e.deadline, e.end_to_end, e.retransmissions);
            if self.stopping || Instant::now() >= deadline {
                e.data.completion.complete(Err(if self.stopping {
                    RequestError::NodeDown
                } else {
                    RequestError::Timeout
                }));
                continue;
            }
            self.dispatch(e.data, deadline, e2e, Some(n));
        }
    }

    /// Carries out the peer layer's actions.
    fn act(&mut self) {
        while let Some(action) = self.peers.poll_action() {
            match action {
                NodeAction::Peer { peer, action } => self.peer_action(peer, action),
                NodeAction::RefuseCer {
                    conn,
                    request,
                    error,
                } => {
                    let local = self.local_for(conn);
                    if let Ok(b) = wire::encode_cea_error(&request, &local, &error) {
                        self.send(conn, b);
                    }
                    self.close(conn);
                }
                NodeAction::Close { conn, .. } => self.close(conn),
            }
        }
    }

    /// Our capabilities as sent on `conn` (Host-IP-Address = the connection's local
    /// address unless the configuration names addresses).
    fn local_for(&self, conn: ConnId) -> Capabilities {
        let mut caps = (*self.local).clone();
        if caps.host_ip_addresses.is_empty() {
            if let Some(ip) = self.conns.get(&conn).and_then(|c| c.local_ip) {
                caps.host_ip_addresses.push(ip);
            }
        }
        caps
    }

    fn peer_action(&mut self, peer: PeerId, action: Action) {
        match action {
            Action::Connect { conn, addr } => {
                let tx = self.input_tx.clone();
                let limit = self.config.timers.cer_timeout;
                tokio::spawn(async move {
                    let result = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
                        Ok(r) => r,
                        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
                    };
                    let _ = tx.send(Input::Connected { conn, result }).await;
                });
            }
            Action::Accept { .. } => {}
            Action::Send { conn, msg } => {
                self.base_hbh = self.base_hbh.wrapping_add(1);
                self.end_to_end = self.end_to_end.wrapping_add(1);
                let local = self.local_for(conn);
                if let Ok(b) = wire::encode(&msg, &local, self.base_hbh, self.end_to_end) {
                    self.send(conn, b);
                }
            }
            Action::Close { conn, .. } => self.close(conn),
            Action::Up { remote, apps, .. } => {
                self.router
                    .peer_up(peer, &remote.origin_host, &remote.origin_realm, apps);
            }
            Action::Usable { usable, .. } => self.router.set_usable(peer, usable),
            Action::Failover { conn } => self.failover(conn),
            Action::Down { conn } => {
                self.router.peer_down(peer);
                self.failover(conn);
            }
        }
    }
}

/// An [`Application`] for a node with no application attached: every request is answered
/// 3001 DIAMETER_COMMAND_UNSUPPORTED (DESIGN §3: never leave a peer waiting).
pub struct Unsupported;

impl Application for Unsupported {
    fn on_request(&self, _request: IncomingRequest, responder: Responder) {
        let mut w = dmproto::MessageWriter::new(dmproto::Header::request(0, 0, 0, 0));
        w.u32(wire::avp::RESULT_CODE, dmproto::avp::AvpFlags::M, 0, 3001);
        let avps = w
            .finish()
            .map(|b| b.slice(dmproto::header::HEADER_LEN..))
            .unwrap_or_default();
        responder.answer(AnswerBody {
            avps,
            is_error: true,
        });
    }
}
