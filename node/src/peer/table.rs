//! All peers of the node, and the connections not yet tied to one.
//!
//! An accepted connection does not belong to any peer until its CER names one: RFC 6733
//! identifies peers by Origin-Host, not by address. [`Peers`] holds such connections with a
//! deadline (a connection that sends no CER within the CER timeout is closed), reads their
//! CER, and hands it to the matching [`PeerFsm`] as R-Conn-CER — or refuses it: 3010
//! DIAMETER_UNKNOWN_PEER for an Origin-Host not configured (unless `allow_unknown_peers`,
//! which creates an accept-only peer on the fly), or the CER's own decoding error.
//!
//! Who may claim a configured peer's identity is decided here too (DESIGN §10): with TLS
//! the certificate must name the peer, without TLS the connection must come from one of the
//! peer's configured or resolved addresses ([`crate::trust::check_identity`]); otherwise the
//! CER is answered 3010 DIAMETER_UNKNOWN_PEER. Connections not yet identified are capped in
//! number overall and per source address, and each refusal is counted and logged once per
//! cause and source per interval ([`Refusals`]).
//!
//! It also maps every message received on a peer's connection to the right state machine
//! event, so the driver's read loop is: frame, decode, [`Peers::received`], act.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use dmproto::{Header, Message};

use super::capabilities::{result, Capabilities};
use super::fsm::{
    Action, CloseReason, ConnId, ConnIds, DisconnectCause, Event, PeerFsm, PeerSettings, State,
};
use super::wire::{self, BaseKind, WireError};
use crate::config::{Config, PeerAddress, PeerMode, Timers, Transport};
use crate::trust::{self, PeerCert, PeerTrust, Refusal, Refusals};

/// Index of a peer in [`Peers`]; stable for the node's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// What the driver must do: a peer's action, or something about a connection no peer owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeAction {
    /// One peer state machine's action, to carry out as [`Action`] says.
    Peer {
        /// The peer whose state machine asked.
        peer: PeerId,
        /// What it asked.
        action: Action,
    },
    /// Answer the CER whose header is `request` with a CEA carrying `error`, then close.
    RefuseCer {
        /// The connection, which no peer owns.
        conn: ConnId,
        /// The CER's header: the CEA repeats its ids.
        request: Header,
        /// Result-Code (3010, 5004, 5005, ...), Error-Message and Failed-AVP for the CEA.
        error: WireError,
    },
    /// Close a connection that belongs to no peer (no CER in time, or not a CER first).
    Close {
        /// The connection, which no peer owns.
        conn: ConnId,
        /// Why, for the log.
        reason: CloseReason,
    },
}

/// What to do with a received message after [`Peers::received`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Application traffic (or a base request the peer layer does not own) on an open
    /// connection of `peer`: route it, answer it, or match it to a pending request.
    Process {
        /// The peer whose open connection it came on.
        peer: PeerId,
    },
    /// Handled by the peer layer (CER, DWR, ...), or dropped with the connection.
    Consumed,
    /// A request on a connection that is not open: answer it with 3002
    /// DIAMETER_UNABLE_TO_DELIVER rather than leave it unanswered.
    NotOpen,
}

/// What a connection proves about its far end.
#[derive(Clone, Debug, Default)]
pub struct Proof {
    /// The remote address, checked against the peer's configured or resolved addresses
    /// when the connection is not TLS; `None` when the driver could not tell.
    pub source: Option<IpAddr>,
    /// The certificate of TLS at connect, checked against the Origin-Host (and pin) instead.
    pub cert: Option<PeerCert>,
}

/// All peers and all connections.
#[derive(Debug)]
pub struct Peers {
    local: Arc<Capabilities>,
    timers: Timers,
    allow_unknown: bool,
    /// How many peers the configuration names; those after them were admitted as unknown.
    configured: usize,
    /// At most this many unknown peers are admitted (each keeps a state machine), so a
    /// client rotating Origin-Hosts cannot grow the table without bound.
    max_unknown: usize,
    peers: Vec<PeerFsm>,
    by_host: HashMap<String, PeerId>,
    /// Keyed by our own connection ids (no peer chooses them), looked up for every message
    /// received: an unseeded fast hasher (FxHash) is enough, where SipHash cost ~140
    /// instructions a lookup; the same for the other maps keyed by `ConnId` or `PeerId`.
    owner: FxHashMap<ConnId, PeerId>,
    /// Accepted connections waiting for their CER, with the deadline.
    unidentified: FxHashMap<ConnId, Instant>,
    /// What each connection proves: its source address and TLS certificate.
    proofs: FxHashMap<ConnId, Proof>,
    /// How each configured peer proves itself (index = PeerId; unknown peers have none).
    trust: Vec<PeerTrust>,
    refusals: Arc<Refusals>,
    deadlines: BTreeMap<(Instant, ConnId), ()>,
    ids: ConnIds,
    seed: u64,
    actions: VecDeque<NodeAction>,
    /// Held down by the operator or removed by a reload: no reconnection, CERs refused.
    disabled: FxHashSet<PeerId>,
    /// Removed by a reload (also in `disabled`): not shown, not found by name.
    retired: FxHashSet<PeerId>,
}

fn key(host: &str) -> String {
    host.to_ascii_lowercase()
}

impl Peers {
    /// One state machine per configured peer. `seed` feeds the watchdogs' jitter.
    pub fn new(config: &Config, local: Arc<Capabilities>, seed: u64) -> Peers {
        let mut peers = Peers {
            local,
            timers: config.timers,
            allow_unknown: config.node.allow_unknown_peers,
            configured: config.peers.len(),
            max_unknown: config.limits.max_connections,
            peers: Vec::new(),
            by_host: HashMap::new(),
            owner: FxHashMap::default(),
            unidentified: FxHashMap::default(),
            proofs: FxHashMap::default(),
            trust: Vec::new(),
            refusals: Arc::new(Refusals::new()),
            deadlines: BTreeMap::new(),
            ids: ConnIds::default(),
            seed,
            actions: VecDeque::new(),
            disabled: FxHashSet::default(),
            retired: FxHashSet::default(),
        };
        for p in &config.peers {
            let connect_to = match p.mode {
                PeerMode::Connect => p.endpoint(),
                PeerMode::AcceptOnly => None,
            };
            peers.add(&p.host, connect_to);
            peers.trust.push(PeerTrust {
                addresses: match &p.address {
                    Some(PeerAddress::Ip(ip)) => vec![*ip],
                    _ => Vec::new(),
                },
                named: matches!(p.address, Some(PeerAddress::Name(_))),
                tls_required: p.transport == Transport::Tls,
                verify_host: p.tls_verify_host,
                ca: p.tls_ca.clone(),
                pin: p.tls_pin,
            });
        }
        peers
    }

    /// The refusal counters (shared with the driver and the metrics exporter).
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// Counts in the driver's `refusals` instead of our own, so every refusal, whoever
    /// decided it, is counted once.
    pub fn set_refusals(&mut self, refusals: Arc<Refusals>) {
        self.refusals = refusals;
    }

    /// What `host`'s name resolved to (the driver resolves `address` names): a connection
    /// without TLS claiming `host` must come from one of these.
    pub fn set_resolved(&mut self, host: &str, addrs: &[IpAddr]) {
        if let Some(t) = self.by_host(host).and_then(|p| self.trust.get_mut(p.0)) {
            for a in addrs {
                let a = trust::canonical(*a);
                if !t.addresses.contains(&a) {
                    t.addresses.push(a);
                }
            }
        }
    }

    /// Whether `source` is one of a configured peer's (configured or resolved) addresses.
    pub fn is_peer_address(&self, source: Option<IpAddr>) -> bool {
        let Some(ip) = source.map(trust::canonical) else {
            return false;
        };
        self.trust
            .iter()
            .any(|t| t.addresses.iter().any(|a| trust::canonical(*a) == ip))
    }

    /// The trust settings of a configured peer (`None` for an admitted unknown peer).
    pub fn trust(&self, peer: PeerId) -> Option<&PeerTrust> {
        self.trust.get(peer.0)
    }

    /// Whether `peer` was admitted through `allow_unknown_peers`, not configured.
    pub fn is_unknown(&self, peer: PeerId) -> bool {
        peer.0 >= self.configured
    }

    /// Connections not yet identified by a CER, in all and from `source`.
    pub fn strangers(&self, source: Option<IpAddr>) -> (usize, usize) {
        let from = source.map(trust::canonical);
        let same = self
            .unidentified
            .keys()
            .filter(|c| {
                from.is_some()
                    && self
                        .proofs
                        .get(c)
                        .and_then(|p| p.source)
                        .map(trust::canonical)
                        == from
            })
            .count();
        (self.unidentified.len(), same)
    }

    /// The TLS certificate the connection's handshake showed.
    pub fn set_cert(&mut self, conn: ConnId, cert: PeerCert) {
        self.proofs.entry(conn).or_default().cert = Some(cert);
    }

    /// The certificate of a connection, if it has TLS.
    pub fn cert(&self, conn: ConnId) -> Option<&PeerCert> {
        self.proofs.get(&conn).and_then(|p| p.cert.as_ref())
    }

    fn add(&mut self, host: &str, connect_to: Option<crate::config::Endpoint>) -> PeerId {
        let id = PeerId(self.peers.len());
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let settings = PeerSettings {
            host: host.to_string(),
            connect_to,
            timers: self.timers,
            seed: self.seed,
        };
        self.peers.push(PeerFsm::new(settings, self.local.clone()));
        self.by_host.insert(key(host), id);
        id
    }

    /// Peers with a state machine: configured, admitted unknown, and retired ones (whose
    /// slots stay so that ids are stable).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No peer at all (nothing configured, nobody admitted).
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The peer's state machine.
    pub fn get(&self, id: PeerId) -> Option<&PeerFsm> {
        self.peers.get(id.0)
    }

    /// Every peer with its id, retired ones included (see [`Peers::is_retired`]).
    pub fn iter(&self) -> impl Iterator<Item = (PeerId, &PeerFsm)> {
        self.peers.iter().enumerate().map(|(i, p)| (PeerId(i), p))
    }

    /// The peer with this Diameter identity (case-insensitive).
    pub fn by_host(&self, host: &str) -> Option<PeerId> {
        self.by_host.get(&key(host)).copied()
    }

    /// The peer owning a connection.
    pub fn owner(&self, conn: ConnId) -> Option<PeerId> {
        self.owner.get(&conn).copied()
    }

    /// Connections open or being opened (for `max_connections`).
    pub fn connection_count(&self) -> usize {
        self.owner.len() + self.unidentified.len()
    }

    /// Our capabilities, as the next CER/CEA will advertise them.
    pub fn local(&self) -> &Capabilities {
        &self.local
    }

    /// Our capabilities for every peer's next capabilities exchange.
    pub fn set_local(&mut self, local: Arc<Capabilities>) {
        for p in &mut self.peers {
            p.set_local(local.clone());
        }
        self.local = local;
    }

    /// Operator control (`dmbridge ctl peer disable`): the peer drains its pending requests,
    /// sends DPR (Disconnect-Cause BUSY) and stays Closed — no reconnection, and its CERs are
    /// refused — until [`Peers::enable`].
    pub fn disable(&mut self, peer: PeerId, now: Instant) {
        self.disabled.insert(peer);
        self.event(
            peer,
            Event::Stop {
                cause: DisconnectCause::Busy,
            },
            now,
        );
    }

    /// Undoes [`Peers::disable`]: a peer we connect to connects again at once.
    pub fn enable(&mut self, peer: PeerId, now: Instant) {
        if self.disabled.remove(&peer) {
            self.event(peer, Event::Start, now);
        }
    }

    /// Held down by [`Peers::disable`] or a reload ([`Peers::retire`]).
    pub fn is_disabled(&self, peer: PeerId) -> bool {
        self.disabled.contains(&peer)
    }

    /// Peers taken down by the operator or by a reload (they drain, then DPR).
    pub fn held_down(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.disabled.iter().copied()
    }

    /// A reload added a peer to the configuration: a new state machine, started at once.
    pub fn add_configured(
        &mut self,
        host: &str,
        connect_to: Option<crate::config::Endpoint>,
        now: Instant,
    ) -> PeerId {
        let id = self.add(host, connect_to);
        self.configured += 1;
        self.event(id, Event::Start, now);
        id
    }

    /// A reload removed a peer: it is taken down like a disabled one and forgotten by name,
    /// so its next CER is that of an unknown peer. Its slot stays (ids are stable).
    pub fn retire(&mut self, peer: PeerId, now: Instant) {
        if let Some(p) = self.peers.get(peer.0) {
            self.by_host.remove(&key(p.host()));
        }
        self.retired.insert(peer);
        self.disabled.insert(peer);
        self.event(
            peer,
            Event::Stop {
                cause: DisconnectCause::DoNotWantToTalkToYou,
            },
            now,
        );
    }

    /// Removed by a reload: its slot stays (ids are stable), but status and name look-ups
    /// skip it.
    pub fn is_retired(&self, peer: PeerId) -> bool {
        self.retired.contains(&peer)
    }

    /// A reload changed where a configured peer is reached: used from its next connection
    /// attempt on; the open connection, if any, is left alone.
    pub fn set_connect_to(&mut self, peer: PeerId, connect_to: Option<crate::config::Endpoint>) {
        if let Some(p) = self.peers.get_mut(peer.0) {
            p.set_connect_to(connect_to);
        }
    }

    /// Whether `peer` uses in-band TLS after CER/CEA (`tls_inband`; see [`PeerFsm`]).
    pub fn set_inband_tls(&mut self, peer: PeerId, on: bool) {
        if let Some(p) = self.peers.get_mut(peer.0) {
            p.set_inband_tls(on);
        }
    }

    /// The in-band TLS handshake on `conn` succeeded with this certificate, which the caller
    /// checked against the peer's identity: the peer opens (RFC 3588 §2.1).
    pub fn tls_up(&mut self, conn: ConnId, cert: PeerCert, now: Instant) {
        self.set_cert(conn, cert);
        if let Some(peer) = self.owner(conn) {
            self.event(peer, Event::TlsUp { conn }, now);
        }
    }

    /// The in-band TLS handshake on `conn` finished with a certificate the caller refused:
    /// the peer closes the connection and is Closed from now on (see [`Event::TlsRefused`]).
    pub fn tls_refused(&mut self, conn: ConnId, now: Instant) {
        if let Some(peer) = self.owner(conn) {
            self.event(peer, Event::TlsRefused { conn }, now);
        }
    }

    /// Start every peer we connect to.
    pub fn start_all(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            self.event(PeerId(i), Event::Start, now);
        }
    }

    /// Stop every peer (graceful shutdown: drain, DPR). Report [`Peers::drained`] per peer.
    pub fn stop_all(&mut self, cause: DisconnectCause, now: Instant) {
        for i in 0..self.peers.len() {
            self.event(PeerId(i), Event::Stop { cause }, now);
        }
    }

    /// No requests remain pending towards `peer`.
    pub fn drained(&mut self, peer: PeerId, now: Instant) {
        self.event(peer, Event::Drained, now);
    }

    /// Whether every peer is Closed (shutdown complete).
    pub fn all_closed(&self) -> bool {
        self.peers.iter().all(|p| p.state() == State::Closed)
    }

    /// A new inbound connection from `source`: returns its id and arms the CER timer.
    pub fn accepted(&mut self, source: Option<IpAddr>, now: Instant) -> ConnId {
        let conn = self.ids.next_id();
        self.proofs.insert(conn, Proof { source, cert: None });
        let deadline = now + self.timers.cer_timeout;
        self.unidentified.insert(conn, deadline);
        self.deadlines.insert((deadline, conn), ());
        conn
    }

    /// Our connection attempt finished.
    pub fn connect_result(&mut self, conn: ConnId, ok: bool, now: Instant) {
        match self.owner(conn) {
            Some(peer) => {
                let ev = if ok {
                    Event::RcvConnAck { conn }
                } else {
                    Event::RcvConnNack { conn }
                };
                self.event(peer, ev, now);
            }
            None if ok => self.actions.push_back(NodeAction::Close {
                conn,
                reason: CloseReason::Timeout,
            }),
            None => {}
        }
    }

    /// The transport connection closed or failed.
    pub fn disconnected(&mut self, conn: ConnId, now: Instant) {
        self.proofs.remove(&conn);
        if let Some(deadline) = self.unidentified.remove(&conn) {
            self.deadlines.remove(&(deadline, conn));
            return;
        }
        if let Some(peer) = self.owner(conn) {
            self.event(peer, Event::PeerDisc { conn }, now);
            self.owner.remove(&conn);
        }
    }

    /// Whether `conn` was accepted and has sent nothing yet (its first message must be a CER).
    pub fn is_unidentified(&self, conn: ConnId) -> bool {
        self.unidentified.contains_key(&conn)
    }

    /// Whether `conn` is the open connection of its peer (R-Open / I-Open, or Closing).
    pub fn is_open_conn(&self, conn: ConnId) -> bool {
        self.owner(conn)
            .and_then(|p| self.get(p))
            .is_some_and(|f| f.open_conn() == Some(conn))
    }

    /// Refuses the first message of the accepted connection `conn`, a CER that failed
    /// validation (RFC 6733 §7: 3008, 5001, 5005, ...): a CEA with `error`, then the
    /// connection closes, as for every refused CER.
    pub fn refuse_invalid_cer(&mut self, conn: ConnId, request: &Message, error: WireError) {
        if let Some(deadline) = self.unidentified.remove(&conn) {
            self.deadlines.remove(&(deadline, conn));
        }
        self.actions.push_back(NodeAction::RefuseCer {
            conn,
            request: request.header,
            error,
        });
    }

    /// A message arrived on `conn`.
    pub fn received(&mut self, conn: ConnId, msg: &Message, now: Instant) -> Received {
        let kind = wire::classify(&msg.header);
        if let Some(deadline) = self.unidentified.remove(&conn) {
            self.deadlines.remove(&(deadline, conn));
            if kind == BaseKind::Cer {
                self.identify(conn, msg, now);
            } else {
                // RFC 6733 §5.6: nothing but a CER may open a connection.
                self.actions.push_back(NodeAction::Close {
                    conn,
                    reason: CloseReason::ProtocolError,
                });
            }
            return Received::Consumed;
        }
        let Some(peer) = self.owner(conn) else {
            return Received::Consumed;
        };
        let Some(fsm) = self.peers.get(peer.0) else {
            return Received::Consumed;
        };
        // Only on the connection we initiated is a non-CEA "Rcv-Non-CEA"; anything on the
        // responder side before our CEA is a message on a connection that is not open.
        let waiting_cea = matches!(fsm.state(), State::WaitICea | State::WaitReturns)
            && fsm.initiator_conn() == Some(conn);
        let ids = wire::ids_of(&msg.header);
        let event = match kind {
            BaseKind::Cea => {
                let caps = wire::decode_capabilities(msg);
                let code = wire::result_code(msg).unwrap_or(result::UNABLE_TO_COMPLY);
                match caps {
                    Ok(caps) => Event::RcvCea {
                        conn,
                        result_code: code,
                        caps,
                        on_tls: self.cert(conn).is_some(),
                    },
                    Err(_) => Event::RcvNonCea { conn },
                }
            }
            _ if waiting_cea => Event::RcvNonCea { conn },
            BaseKind::Cer => match wire::decode_cer(msg) {
                Ok(cer) => Event::RcvCer { conn, cer },
                Err(_) => Event::RcvNonCea { conn },
            },
            BaseKind::Dwr => Event::RcvDwr { conn, ids },
            BaseKind::Dwa => Event::RcvDwa { conn },
            BaseKind::Dpr => Event::RcvDpr {
                conn,
                ids,
                cause: wire::disconnect_cause(msg),
            },
            BaseKind::Dpa => Event::RcvDpa { conn },
            BaseKind::Other => Event::RcvMessage { conn },
        };
        let is_other = matches!(event, Event::RcvMessage { .. });
        // RFC 6733 §8.16: "Origin-State-Id, if present, MUST reflect the state of the
        // entity indicated by Origin-Host." The peer's own DWR/DWA are where freeDiameter
        // (`p_dw.c`) watches it: a changed value means the peer restarted, and the state
        // machine resets the connection before the DWR/DWA is processed (it is then not
        // answered). Application messages are left alone: a relay's carry their origin's
        // Origin-State-Id, not the peer's.
        if matches!(event, Event::RcvDwr { .. } | Event::RcvDwa { .. }) {
            if let Some(value) = msg.find_u32(wire::avp::ORIGIN_STATE_ID, 0) {
                self.event(peer, Event::RcvOriginStateId { conn, value }, now);
            }
        }
        let process = self.event(peer, event, now);
        if process {
            Received::Process { peer }
        } else if is_other && msg.header.flags.is_request() {
            Received::NotOpen
        } else {
            Received::Consumed
        }
    }

    fn identify(&mut self, conn: ConnId, msg: &Message, now: Instant) {
        let cer = match wire::decode_cer(msg) {
            Ok(cer) => cer,
            Err(error) => {
                self.actions.push_back(NodeAction::RefuseCer {
                    conn,
                    request: msg.header,
                    error,
                });
                return;
            }
        };
        let proof = self.proofs.get(&conn).cloned().unwrap_or_default();
        let peer = match self.by_host(&cer.caps.origin_host) {
            // RFC 6733 §5.3 leaves it to the node to decide whether it trusts a peer; DESIGN
            // §10: the CER's Origin-Host alone proves nothing.
            Some(p) if !self.is_unknown(p) => {
                let verdict = match self.trust.get(p.0) {
                    Some(t) => trust::check_identity(
                        &cer.caps.origin_host,
                        t,
                        proof.source,
                        proof.cert.as_ref(),
                    ),
                    None => Ok(()),
                };
                if let Err((cause, why)) = verdict {
                    self.refusals.record(cause, proof.source, &why, now);
                    let error = WireError {
                        result_code: result::UNKNOWN_PEER,
                        message: why,
                        failed_avp: None,
                    };
                    self.actions.push_back(NodeAction::RefuseCer {
                        conn,
                        request: msg.header,
                        error,
                    });
                    return;
                }
                p
            }
            Some(p) => p,
            None if self.allow_unknown
                && self.peers.len().saturating_sub(self.configured) < self.max_unknown =>
            {
                let source = proof.source.map_or("-".to_string(), |s| s.to_string());
                tracing::info!(
                    peer = %cer.caps.origin_host,
                    source = %source,
                    unknown = true,
                    "admitted unknown peer {} from {source} (allow_unknown_peers)",
                    cer.caps.origin_host
                );
                self.refusals.count_unknown_admitted();
                self.add(&cer.caps.origin_host.clone(), None)
            }
            None if self.allow_unknown => {
                let why = format!("too many unknown peers ({})", self.max_unknown);
                return self.refuse_cer(conn, msg, dmproto::result_code::DIAMETER_TOO_BUSY, why);
            }
            None => {
                let why = format!("unknown peer {:?}", cer.caps.origin_host);
                self.refusals
                    .record(Refusal::UnknownPeer, proof.source, &why, now);
                return self.refuse_cer(conn, msg, result::UNKNOWN_PEER, why);
            }
        };
        if self.disabled.contains(&peer) {
            let why = format!(
                "peer {:?} is disabled by the operator",
                cer.caps.origin_host
            );
            let code = dmproto::result_code::DIAMETER_UNABLE_TO_COMPLY;
            return self.refuse_cer(conn, msg, code, why);
        }
        self.owner.insert(conn, peer);
        let cer = super::fsm::ReceivedCer {
            on_tls: proof.cert.is_some(),
            ..cer
        };
        self.event(peer, Event::RConnCer { conn, cer }, now);
    }

    /// Answers the CER on `conn` with a CEA carrying `result_code`, then closes.
    fn refuse_cer(&mut self, conn: ConnId, msg: &Message, result_code: u32, message: String) {
        self.actions.push_back(NodeAction::RefuseCer {
            conn,
            request: msg.header,
            error: WireError {
                result_code,
                message,
                failed_avp: None,
            },
        });
    }

    /// Feeds one event to a peer and collects its actions. Returns the FSM's verdict.
    fn event(&mut self, peer: PeerId, event: Event, now: Instant) -> bool {
        let Some(fsm) = self.peers.get_mut(peer.0) else {
            return false;
        };
        let process = fsm.handle(event, now, &mut self.ids);
        self.collect(peer);
        process
    }

    fn collect(&mut self, peer: PeerId) {
        let Some(fsm) = self.peers.get_mut(peer.0) else {
            return;
        };
        while let Some(action) = fsm.poll_action() {
            match &action {
                Action::Connect { conn, .. } | Action::Accept { conn } => {
                    self.owner.insert(*conn, peer);
                }
                Action::Close { conn, .. } => {
                    // A rejected second connection may not be this peer's: free it anyway.
                    self.owner.remove(conn);
                }
                _ => {}
            }
            self.actions.push_back(NodeAction::Peer { peer, action });
        }
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<NodeAction> {
        self.actions.pop_front()
    }

    /// The earliest of the peers' timers and the CER deadlines of unidentified connections.
    pub fn next_timeout(&self) -> Option<Instant> {
        let cer = self.deadlines.keys().next().map(|(t, _)| *t);
        self.peers
            .iter()
            .filter_map(PeerFsm::next_timeout)
            .chain(cer)
            .min()
    }

    /// Closes unidentified connections whose CER is overdue (counted as
    /// [`Refusal::CerTimeout`]) and runs every peer's due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((&(t, conn), _)) = self.deadlines.iter().next() {
            if t > now {
                break;
            }
            self.deadlines.remove(&(t, conn));
            self.unidentified.remove(&conn);
            let source = self.proofs.get(&conn).and_then(|p| p.source);
            self.refusals.record(
                Refusal::CerTimeout,
                source,
                &format!("no CER within {:?}", self.timers.cer_timeout),
                now,
            );
            self.actions.push_back(NodeAction::Close {
                conn,
                reason: CloseReason::Timeout,
            });
        }
        for i in 0..self.peers.len() {
            let Some(fsm) = self.peers.get_mut(i) else {
                break;
            };
            if fsm.next_timeout().is_some_and(|t| t <= now) {
                fsm.handle_timeout(now, &mut self.ids);
                self.collect(PeerId(i));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::fsm::Outgoing;
    use crate::peer::wire::encode;
    use std::time::Duration;

    const CONFIG: &str = r#"
[node]
origin_host = "m.example.net"
origin_realm = "example.net"
[[applications]]
id = 4
[[peers]]
host = "known.example.net"
mode = "accept"
[[peers]]
host = "out.example.net"
address = "127.0.0.1"
port = 3999
[timers]
cer_timeout = "3s"
"#;

    fn peers(allow_unknown: bool) -> Peers {
        let mut config = crate::config::parse(CONFIG).unwrap();
        config.node.allow_unknown_peers = allow_unknown;
        let local = Arc::new(Capabilities::local(&config, 1, &[]));
        Peers::new(&config, local, 99)
    }

    fn remote(host: &str) -> Capabilities {
        Capabilities {
            origin_host: host.into(),
            origin_realm: "example.net".into(),
            auth_app_ids: vec![4],
            product_name: "test".into(),
            ..Capabilities::default()
        }
    }

    fn cer_from(host: &str) -> Message {
        Message::decode(encode(&Outgoing::Cer, &remote(host), 1, 2).unwrap()).unwrap()
    }

    fn drain(p: &mut Peers) -> Vec<NodeAction> {
        std::iter::from_fn(|| p.poll_action()).collect()
    }

    #[test]
    fn known_peer_cer_opens_it() {
        let mut p = peers(false);
        let now = Instant::now();
        let conn = p.accepted(None, now);
        assert_eq!(
            p.received(conn, &cer_from("KNOWN.example.net"), now),
            Received::Consumed
        );
        let id = p.by_host("known.example.net").unwrap();
        assert_eq!(p.get(id).unwrap().state(), State::ROpen);
        assert_eq!(p.owner(conn), Some(id));
        let actions = drain(&mut p);
        assert!(actions.contains(&NodeAction::Peer {
            peer: id,
            action: Action::Accept { conn }
        }));
    }

    #[test]
    fn unknown_peer_is_refused_with_3010() {
        let mut p = peers(false);
        let now = Instant::now();
        let conn = p.accepted(None, now);
        p.received(conn, &cer_from("stranger.example.net"), now);
        match drain(&mut p).as_slice() {
            [NodeAction::RefuseCer { conn: c, error, .. }] => {
                assert_eq!(*c, conn);
                assert_eq!(error.result_code, 3010);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.len(), 2);
        assert_eq!(p.connection_count(), 0);
    }

    #[test]
    fn unknown_peer_is_admitted_when_allowed() {
        let mut p = peers(true);
        let now = Instant::now();
        let conn = p.accepted(None, now);
        p.received(conn, &cer_from("stranger.example.net"), now);
        let id = p.by_host("stranger.example.net").expect("created");
        assert_eq!(p.get(id).unwrap().state(), State::ROpen);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn unknown_peers_are_bounded() {
        let mut config = crate::config::parse(CONFIG).unwrap();
        config.node.allow_unknown_peers = true;
        config.limits.max_connections = 2;
        let local = Arc::new(Capabilities::local(&config, 1, &[]));
        let mut p = Peers::new(&config, local, 1);
        let now = Instant::now();
        for i in 0..3 {
            let conn = p.accepted(None, now);
            p.received(conn, &cer_from(&format!("u{i}.example.net")), now);
        }
        assert_eq!(p.len(), 4, "two configured + two unknown");
        let refused: Vec<u32> = drain(&mut p)
            .into_iter()
            .filter_map(|a| match a {
                NodeAction::RefuseCer { error, .. } => Some(error.result_code),
                _ => None,
            })
            .collect();
        assert_eq!(refused, vec![3004]);
    }

    #[test]
    fn no_cer_in_time_closes_the_connection() {
        let mut p = peers(false);
        let now = Instant::now();
        let conn = p.accepted(None, now);
        assert_eq!(p.next_timeout(), Some(now + Duration::from_secs(3)));
        p.handle_timeout(now + Duration::from_secs(2));
        assert_eq!(drain(&mut p), vec![]);
        p.handle_timeout(now + Duration::from_secs(3));
        assert_eq!(
            drain(&mut p),
            vec![NodeAction::Close {
                conn,
                reason: CloseReason::Timeout
            }]
        );
        assert_eq!(p.connection_count(), 0);
        assert_eq!(p.next_timeout(), None);
    }

    #[test]
    fn first_message_not_a_cer_closes() {
        let mut p = peers(false);
        let now = Instant::now();
        let conn = p.accepted(None, now);
        let dwr =
            Message::decode(encode(&Outgoing::Dwr, &remote("known.example.net"), 1, 1).unwrap())
                .unwrap();
        p.received(conn, &dwr, now);
        assert_eq!(
            drain(&mut p),
            vec![NodeAction::Close {
                conn,
                reason: CloseReason::ProtocolError
            }]
        );
    }

    #[test]
    fn undecodable_cer_is_refused_with_its_error() {
        let mut p = peers(false);
        let now = Instant::now();
        let conn = p.accepted(None, now);
        let mut w = dmproto::MessageWriter::new(Header::request(257, 0, 1, 1));
        w.str(296, 0x40, 0, "example.net");
        let msg = Message::decode(w.finish().unwrap()).unwrap();
        p.received(conn, &msg, now);
        match drain(&mut p).as_slice() {
            [NodeAction::RefuseCer { error, .. }] => assert_eq!(error.result_code, 5005),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outgoing_peer_full_handshake_and_traffic() {
        let mut p = peers(false);
        let now = Instant::now();
        p.start_all(now);
        let out = p.by_host("out.example.net").unwrap();
        let conn = match drain(&mut p).as_slice() {
            [NodeAction::Peer {
                peer,
                action: Action::Connect { conn, addr },
            }] => {
                assert_eq!(*peer, out);
                assert_eq!(
                    *addr,
                    crate::config::Endpoint::Addr("127.0.0.1:3999".parse().unwrap())
                );
                *conn
            }
            other => panic!("{other:?}"),
        };
        p.connect_result(conn, true, now);
        assert_eq!(
            drain(&mut p),
            vec![NodeAction::Peer {
                peer: out,
                action: Action::Send {
                    conn,
                    msg: Outgoing::Cer
                }
            }]
        );
        let cea_ids = crate::peer::fsm::MsgIds {
            hop_by_hop: 1,
            end_to_end: 2,
        };
        let cea = Outgoing::Cea {
            ids: cea_ids,
            result_code: 2001,
            error_message: None,
        };
        let cea = Message::decode(encode(&cea, &remote("out.example.net"), 0, 0).unwrap()).unwrap();
        assert_eq!(p.received(conn, &cea, now), Received::Consumed);
        assert_eq!(p.get(out).unwrap().state(), State::IOpen);
        drain(&mut p);
        let mut w = dmproto::MessageWriter::new(Header::request(272, 4, 7, 8));
        w.str(263, 0x40, 0, "s;1");
        let ccr = Message::decode(w.finish().unwrap()).unwrap();
        assert_eq!(p.received(conn, &ccr, now), Received::Process { peer: out });
        // DWR is answered by the peer layer.
        let dwr =
            Message::decode(encode(&Outgoing::Dwr, &remote("out.example.net"), 3, 3).unwrap())
                .unwrap();
        assert_eq!(p.received(conn, &dwr, now), Received::Consumed);
        assert!(matches!(
            drain(&mut p).as_slice(),
            [NodeAction::Peer {
                action: Action::Send {
                    msg: Outgoing::Dwa { .. },
                    ..
                },
                ..
            }]
        ));
        // Transport loss.
        p.disconnected(conn, now);
        assert_eq!(p.get(out).unwrap().state(), State::Closed);
        assert!(drain(&mut p).contains(&NodeAction::Peer {
            peer: out,
            action: Action::Down { conn }
        }));
    }

    #[test]
    fn request_on_the_responder_side_during_an_election_is_refused_not_dropped() {
        let mut p = peers(false);
        let now = Instant::now();
        p.start_all(now);
        let out = p.by_host("out.example.net").unwrap();
        let i = match drain(&mut p).as_slice() {
            [NodeAction::Peer {
                action: Action::Connect { conn, .. },
                ..
            }] => *conn,
            other => panic!("{other:?}"),
        };
        p.connect_result(i, true, now);
        // The peer connects to us too. We are "m.example.net", it is "out.example.net",
        // which is higher: we lose the election and wait for our CEA (Wait-Returns).
        let r = p.accepted(None, now);
        p.received(r, &cer_from("out.example.net"), now);
        assert_eq!(p.get(out).unwrap().state(), State::WaitReturns);
        drain(&mut p);
        let mut w = dmproto::MessageWriter::new(Header::request(272, 4, 7, 8));
        w.str(263, 0x40, 0, "s;1");
        let ccr = Message::decode(w.finish().unwrap()).unwrap();
        assert_eq!(p.received(r, &ccr, now), Received::NotOpen);
        assert_eq!(
            p.get(out).unwrap().state(),
            State::WaitReturns,
            "no error on the I side"
        );
    }

    #[test]
    fn request_on_a_connection_that_is_not_open_must_be_refused() {
        let mut p = peers(false);
        let now = Instant::now();
        p.start_all(now);
        let conn = match drain(&mut p).as_slice() {
            [NodeAction::Peer {
                action: Action::Connect { conn, .. },
                ..
            }] => *conn,
            other => panic!("{other:?}"),
        };
        p.connect_result(conn, true, now);
        let mut w = dmproto::MessageWriter::new(Header::request(272, 4, 7, 8));
        w.str(263, 0x40, 0, "s;1");
        let ccr = Message::decode(w.finish().unwrap()).unwrap();
        // Waiting for CEA: this is Rcv-Non-CEA, which closes the connection.
        assert_eq!(p.received(conn, &ccr, now), Received::Consumed);
        assert_eq!(p.get(PeerId(1)).unwrap().state(), State::Closed);
    }

    fn refused_with(actions: &[NodeAction]) -> Option<(u32, String)> {
        actions.iter().find_map(|a| match a {
            NodeAction::RefuseCer { error, .. } => Some((error.result_code, error.message.clone())),
            _ => None,
        })
    }

    #[test]
    fn a_configured_peer_is_accepted_only_from_its_address_without_tls() {
        let mut p = peers(false);
        let now = Instant::now();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // "out.example.net" is configured at 127.0.0.1: a claim from elsewhere is 3010.
        let c = p.accepted(ip("127.0.0.2"), now);
        p.received(c, &cer_from("out.example.net"), now);
        let (code, why) = refused_with(&drain(&mut p)).expect("refused");
        assert_eq!(code, result::UNKNOWN_PEER);
        assert!(why.contains("not expected from 127.0.0.2"), "{why}");
        assert_eq!(p.refusals().get(Refusal::WrongAddress), 1);
        // From its address (also as an IPv4-mapped IPv6 source) it is accepted.
        let c = p.accepted(ip("::ffff:127.0.0.1"), now);
        p.received(c, &cer_from("out.example.net"), now);
        assert_eq!(refused_with(&drain(&mut p)), None);
        // With a TLS certificate naming it, the address does not matter.
        let mut p = peers(false);
        let c = p.accepted(ip("192.0.2.7"), now);
        p.set_cert(
            c,
            PeerCert {
                dns_names: vec!["out.example.net".into()],
                ..PeerCert::default()
            },
        );
        p.received(c, &cer_from("out.example.net"), now);
        assert_eq!(refused_with(&drain(&mut p)), None);
        // A certificate naming another host: 3010.
        let mut p = peers(false);
        let c = p.accepted(ip("127.0.0.1"), now);
        p.set_cert(
            c,
            PeerCert {
                dns_names: vec!["evil.example.net".into()],
                ..PeerCert::default()
            },
        );
        p.received(c, &cer_from("out.example.net"), now);
        let (code, _) = refused_with(&drain(&mut p)).expect("refused");
        assert_eq!(code, result::UNKNOWN_PEER);
        assert_eq!(p.refusals().get(Refusal::CertNameMismatch), 1);
    }

    #[test]
    fn unknown_peers_are_counted_and_marked() {
        let mut p = peers(true);
        let now = Instant::now();
        let c = p.accepted(None, now);
        p.received(c, &cer_from("stranger.example.net"), now);
        let id = p.by_host("stranger.example.net").expect("admitted");
        assert!(p.is_unknown(id));
        assert!(!p.is_unknown(p.by_host("known.example.net").unwrap()));
        assert_eq!(p.refusals().unknown_admitted(), 1);
        let mut p = peers(false);
        let c = p.accepted(None, now);
        p.received(c, &cer_from("stranger.example.net"), now);
        assert_eq!(p.refusals().get(Refusal::UnknownPeer), 1);
    }

    #[test]
    fn strangers_counted_overall_and_per_source() {
        let mut p = peers(false);
        let now = Instant::now();
        let a = Some("192.0.2.1".parse::<IpAddr>().unwrap());
        let b = Some("192.0.2.2".parse::<IpAddr>().unwrap());
        p.accepted(a, now);
        p.accepted(a, now);
        let c = p.accepted(b, now);
        assert_eq!(p.strangers(a), (3, 2));
        assert_eq!(p.strangers(b), (3, 1));
        p.disconnected(c, now);
        assert_eq!(p.strangers(b), (2, 0));
        p.handle_timeout(now + Duration::from_secs(60));
        assert_eq!(p.strangers(a), (0, 0));
        assert_eq!(p.refusals().get(Refusal::CerTimeout), 2);
    }
}
