//! The peer state machine of RFC 6733 §5.6, with the election of §5.6.4, sans-IO.
//!
//! One [`PeerFsm`] per configured (or accepted unknown) peer. It never touches a socket: the
//! driver feeds it [`Event`]s — a connection attempt succeeded, a CER arrived on an accepted
//! connection, a DPR came in — together with the current time, and drains the resulting
//! [`Action`]s with [`PeerFsm::poll_action`]: connect, send this CEA on that connection, close
//! that one, the peer is up with these applications. Connections are named by [`ConnId`] so
//! that, during an election, the driver knows which of the two sockets an action is about.
//!
//! The states and transitions are those of the §5.6 table; each arm below cites its row. Where
//! the RFC is silent we chose, and say so in place:
//!
//! - `Process-CER` can fail (no common application, 5010): we answer the CER with that
//!   Result-Code, close that connection, and stay in the state we were in.
//! - A CEA with an error in Wait-Returns, where a good responder connection waits, falls back
//!   to that connection (R-Snd-CEA, R-Open) rather than dropping both.
//! - `Stop` is accepted in every state. In an open state it first *drains*: the peer is
//!   marked unusable for new requests, and DPR is sent when the driver reports
//!   [`Event::Drained`] (no more pending requests) or the drain timeout passes.
//! - A connect timeout in Wait-Conn-Ack/Elect counts as I-Rcv-Conn-Nack (answer the
//!   waiting responder connection and open on it) rather than the table's Error.
//! - Reconnection (Closed with a `connect` peer) waits Tc after a failure-free close, and
//!   doubles it per consecutive failure up to 16×Tc. A peer's DPR cause is honoured:
//!   REBOOTING reconnects after Tc, BUSY backs off starting at 4×Tc, and
//!   DO_NOT_WANT_TO_TALK_TO_YOU stops reconnecting until [`Event::Start`] comes again
//!   (operator restart). The peer may still connect to us.
//! - After our DPA the peer closes (RFC 6733 §5.4, §5.6.1: Rcv-DPR, Snd-DPA -> Closing);
//!   the DPA timeout bounds the wait, a DPR in Closing is answered too (see `rcv_dpr`).
//! - The RFC 3539 watchdog ([`super::watchdog`]) runs while open; it decides whether the peer
//!   may carry new requests ([`Action::Usable`]) and when to fail over or close.
//!
//! - In-band TLS (RFC 3588 §2.1, RFC 6733 §6.10; freeDiameter's `TLS_old_method`): when the
//!   capabilities exchange agrees on Inband-Security-Id TLS ([`negotiate_security`]), the
//!   peer enters [`State::TlsHandshake`] instead of R-Open/I-Open: [`Action::StartTls`] asks
//!   the driver for the handshake on the same connection (the CER sender is the client),
//!   and only [`Event::TlsUp`] opens the peer — no request is routed to it and no DWR is
//!   sent before. RFC 6733 §13: the handshake "begins when both ends successfully reach the
//!   open state after the CER/CEA exchange"; like freeDiameter (`STATE_OPEN_HANDSHAKE`), we
//!   count the peer open only once it is done. A failed handshake is a Peer-Disc; one not
//!   done within the CER timeout closes the connection (Error -> Closed); one whose
//!   certificate does not name the peer is [`Event::TlsRefused`], Closed as soon as the core
//!   decides to close it (so that a redial is not rejected meanwhile).
//!
//! Unknown peers (3010) are refused before a state machine exists: see [`super::table`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capabilities::{
    negotiate, negotiate_security, result, wins_election, AppSet, Capabilities, Security, TlsRole,
};
pub use super::disconnect::DisconnectCause;
use super::disconnect::Reconnect;
use super::watchdog::{Watchdog, WatchdogAction};
use crate::config::{Endpoint, Timers};
pub use crate::conn::{ConnId, ConnIds};

/// The states of RFC 6733 §5.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No connection. A `connect` peer leaves it on Start or its reconnect timer
    /// (I-Snd-Conn-Req); any peer leaves it on R-Conn-CER (R-Accept, Process-CER,
    /// R-Snd-CEA -> R-Open).
    Closed,
    /// We are opening a connection: I-Rcv-Conn-Ack sends our CER (-> Wait-I-CEA), a Nack or
    /// the connect timeout goes back to Closed, the peer's own CER meanwhile goes to
    /// Wait-Conn-Ack/Elect.
    WaitConnAck,
    /// Our CER is sent on our connection: I-Rcv-CEA opens it (-> I-Open); the peer's CER
    /// on a connection of its own starts the election (-> Wait-Returns).
    WaitICea,
    /// The peer's CER arrived (and is held unanswered) while our connection is still being
    /// opened: our Conn-Ack sends our CER and holds the election (-> Wait-Returns); a Nack
    /// answers the held CER instead (-> R-Open).
    WaitConnAckElect,
    /// Two connections, each with a CER on it (§5.6.4 election): if we win, our connection
    /// is dropped and the peer's CER answered (-> R-Open); otherwise we wait for the CEA on
    /// ours, and drop theirs when it comes (-> I-Open).
    WaitReturns,
    /// Open on the connection the peer initiated (we sent the CEA): requests flow, the
    /// watchdog runs.
    ROpen,
    /// Open on the connection we initiated (we received the CEA); otherwise as R-Open.
    IOpen,
    /// We sent DPR (after draining) and wait for the DPA, or we answered the peer's DPR and
    /// wait for it to close the connection (RFC 6733 §5.4: "The receiver of the
    /// Disconnect-Peer-Answer message initiates the transport disconnect"); either way for
    /// at most the DPA timeout. Messages still arrive and are processed, new requests are
    /// not sent.
    Closing,
    /// CER/CEA agreed on in-band TLS; the handshake runs (freeDiameter's
    /// STATE_OPEN_HANDSHAKE). Not open: nothing is routed to the peer yet.
    TlsHandshake,
}

impl State {
    /// The state's name as RFC 6733 §5.6 writes it (logs, metrics, `ctl peers`).
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "Closed",
            State::WaitConnAck => "Wait-Conn-Ack",
            State::WaitICea => "Wait-I-CEA",
            State::WaitConnAckElect => "Wait-Conn-Ack/Elect",
            State::WaitReturns => "Wait-Returns",
            State::ROpen => "R-Open",
            State::IOpen => "I-Open",
            State::Closing => "Closing",
            State::TlsHandshake => "TLS-Handshake",
        }
    }
}

/// The identifiers of a received request, needed to answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgIds {
    /// The request's hop-by-hop id, which its answer must repeat (RFC 6733 §3).
    pub hop_by_hop: u32,
    /// The request's end-to-end id, which its answer must repeat (§3).
    pub end_to_end: u32,
}

/// A CER, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedCer {
    /// To answer it with the CEA.
    pub ids: MsgIds,
    /// What the peer advertised: identity, applications, security, Origin-State-Id.
    pub caps: Capabilities,
    /// The connection is TLS from its first byte (Inband-Security-Id is then ignored).
    pub on_tls: bool,
}

/// What a [`PeerFsm`] reacts to: the events of the §5.6 table (the I-/R- prefixes are
/// implied by which connection `conn` is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start: connect to the peer (ignored for accept-only peers).
    Start,
    /// R-Conn-CER: an accepted connection sent this CER and its Origin-Host is this peer.
    RConnCer {
        /// The accepted connection, not yet any peer's.
        conn: ConnId,
        /// Its first message.
        cer: ReceivedCer,
    },
    /// Rcv-Conn-Ack: our connection attempt succeeded.
    RcvConnAck {
        /// The id [`Action::Connect`] gave the attempt.
        conn: ConnId,
    },
    /// Rcv-Conn-Nack: our connection attempt failed (refused, unreachable, name not
    /// resolved, TLS handshake failed).
    RcvConnNack {
        /// The id [`Action::Connect`] gave the attempt.
        conn: ConnId,
    },
    /// Rcv-CEA.
    RcvCea {
        /// The connection we initiated, where our CER went.
        conn: ConnId,
        /// Its Result-Code: anything but 2001 fails the exchange (§5.3.2, §7.1).
        result_code: u32,
        /// What the peer advertised.
        caps: Capabilities,
        /// The connection is TLS from its first byte (Inband-Security-Id is then ignored).
        on_tls: bool,
    },
    /// Rcv-Non-CEA: something other than a CEA arrived while we waited for one.
    RcvNonCea {
        /// The connection we initiated.
        conn: ConnId,
    },
    /// Rcv-CER on an already established connection (a protocol error).
    RcvCer {
        /// The connection it came on: closed if it is the open one.
        conn: ConnId,
        /// The CER (unused: it is not answered).
        cer: ReceivedCer,
    },
    /// Peer-Disc: the connection closed or failed.
    PeerDisc {
        /// Which of the peer's connections (initiator, responder, open, handshaking).
        conn: ConnId,
    },
    /// Rcv-DPR.
    RcvDpr {
        /// The open connection.
        conn: ConnId,
        /// To answer it with the DPA.
        ids: MsgIds,
        /// Disconnect-Cause: how soon (or whether) to reconnect (§5.4.3).
        cause: DisconnectCause,
    },
    /// Rcv-DPA.
    RcvDpa {
        /// The connection our DPR went on.
        conn: ConnId,
    },
    /// Rcv-DWR (Process-DWR, Snd-DWA).
    RcvDwr {
        /// The open connection.
        conn: ConnId,
        /// To answer it with the DWA.
        ids: MsgIds,
    },
    /// Rcv-DWA (Process-DWA).
    RcvDwa {
        /// The open connection.
        conn: ConnId,
    },
    /// Rcv-Message: any other message; see [`PeerFsm::handle`]'s return value.
    RcvMessage {
        /// The connection it came on (processed only if it is the open one).
        conn: ConnId,
    },
    /// A message the peer itself sent (its DWR or DWA) carried Origin-State-Id `value`. Fed
    /// before the message's own event: when the value changed the peer restarted, and the
    /// connection is reset before the message is processed (see [`PeerFsm::handle`]).
    RcvOriginStateId {
        /// The open connection.
        conn: ConnId,
        /// The Origin-State-Id (§8.16): it only grows, at each restart of the peer.
        value: u32,
    },
    /// Stop: shut this peer down, telling it why.
    Stop {
        /// Sent in our DPR: whether the peer should reconnect to us (§5.4.3).
        cause: DisconnectCause,
    },
    /// No request we sent to this peer is pending any more (after Stop).
    Drained,
    /// The in-band TLS handshake asked by [`Action::StartTls`] succeeded, and the
    /// certificate names the peer: open.
    TlsUp {
        /// The connection of [`Action::StartTls`].
        conn: ConnId,
    },
    /// The in-band TLS handshake on `conn` finished but is refused (its certificate does not
    /// name the peer): the core closes the connection now, without waiting for the driver
    /// to report it closed.
    TlsRefused {
        /// The connection of [`Action::StartTls`].
        conn: ConnId,
    },
}

/// A base-protocol message the driver must build and send (the driver owns the hop-by-hop
/// counter and our [`Capabilities`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// Capabilities-Exchange-Request (§5.3.1), with our [`Capabilities`].
    Cer,
    /// Capabilities-Exchange-Answer (§5.3.2).
    Cea {
        /// The CER's ids.
        ids: MsgIds,
        /// 2001, or why the exchange failed (5010 no common application, 5017 no common
        /// security); with an error the connection is closed after it.
        result_code: u32,
        /// Error-Message text for a failed exchange, for the peer's operator.
        error_message: Option<String>,
    },
    /// Device-Watchdog-Request (§5.5.1), sent by the watchdog after Tw without traffic.
    Dwr,
    /// Device-Watchdog-Answer (§5.5.2).
    Dwa {
        /// The DWR's ids.
        ids: MsgIds,
    },
    /// Disconnect-Peer-Request (§5.4.1).
    Dpr {
        /// Our Disconnect-Cause.
        cause: DisconnectCause,
    },
    /// Disconnect-Peer-Answer (§5.4.2); the peer closes the connection after it (§5.4),
    /// or the DPA timeout does.
    Dpa {
        /// The DPR's ids.
        ids: MsgIds,
    },
}

/// Why a connection is closed (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Connect or CER/CEA did not complete in time.
    Timeout,
    /// We won the election and drop the connection we initiated, or lost it and drop theirs.
    Election,
    /// A second connection from a peer we already talk to (R-Reject).
    Rejected,
    /// The capabilities exchange failed (error CEA sent or received).
    Capabilities,
    /// No common security (RFC 6733 §6.10): 5017 answered to the CER, or the CEA of an
    /// in-band TLS peer did not agree on TLS.
    NoCommonSecurity,
    /// The peer broke the protocol (e.g. a non-CEA before CEA, a CER on an open connection).
    ProtocolError,
    /// The watchdog declared the connection dead.
    Watchdog,
    /// DPR/DPA completed, or the DPA (or, after our DPA, the peer's close) did not come in
    /// time.
    Disconnect,
    /// Stop while not open.
    Stopped,
    /// The peer's Origin-State-Id changed (RFC 6733 §8.16): it restarted, and what was sent
    /// on this connection is lost with its previous state.
    PeerRestarted,
    /// The in-band TLS handshake ended with a certificate that does not name the peer
    /// (counted and logged as a refusal where it was decided).
    TlsRefused,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Snd-Conn-Req: open a transport connection, then report RcvConnAck / RcvConnNack.
    Connect {
        /// A fresh id for the attempt, to report the result under.
        conn: ConnId,
        /// The peer's configured address.
        addr: Endpoint,
    },
    /// R-Accept: the accepted connection now belongs to this peer.
    Accept {
        /// The accepted connection.
        conn: ConnId,
    },
    /// Snd-CER, Snd-CEA, Snd-DWR/DWA, Snd-DPR/DPA: encode and queue the message.
    Send {
        /// The connection to send it on.
        conn: ConnId,
        /// What to build.
        msg: Outgoing,
    },
    /// Close after flushing what was queued before (so a CEA/DPA goes out first).
    Close {
        /// The connection; it is no longer the peer's, so a later Peer-Disc for it is
        /// ignored.
        conn: ConnId,
        /// Why, for the log and the refusal counters.
        reason: CloseReason,
    },
    /// Capabilities exchanged: the peer is open on `conn` with these shared applications.
    Up {
        /// The open connection.
        conn: ConnId,
        /// What the peer advertised (boxed: the other actions are small).
        remote: Box<Capabilities>,
        /// The applications we both support: what may be routed to it.
        apps: AppSet,
    },
    /// Whether new requests may be routed to the peer (watchdog OKAY and not stopping).
    Usable {
        /// The open connection.
        conn: ConnId,
        /// True at watchdog OKAY; false when suspect or stopping.
        usable: bool,
    },
    /// The watchdog suspects `conn`: resend its pending requests elsewhere (T flag).
    Failover {
        /// The suspect connection: it stays open (RFC 3539 §3.4.1: a DWA may yet bring it
        /// back to OKAY), but what was pending on it moves.
        conn: ConnId,
    },
    /// The open connection is gone; requests still pending on it must be failed over.
    Down {
        /// The connection that was open.
        conn: ConnId,
    },
    /// CER/CEA agreed on in-band TLS: once what is queued (our CEA) is written, run the TLS
    /// handshake on `conn` in this role, then report [`Event::TlsUp`] (or close it).
    StartTls {
        /// The plain connection of the capabilities exchange.
        conn: ConnId,
        /// Client if we sent the CER, server if we answered it (RFC 3588 §2.1).
        role: TlsRole,
    },
}

impl Action {
    /// The connection the action is about.
    pub fn conn(&self) -> ConnId {
        match self {
            Action::Connect { conn, .. }
            | Action::Accept { conn }
            | Action::Send { conn, .. }
            | Action::Close { conn, .. }
            | Action::Up { conn, .. }
            | Action::Usable { conn, .. }
            | Action::Failover { conn }
            | Action::Down { conn }
            | Action::StartTls { conn, .. } => *conn,
        }
    }
}

/// The per-peer settings a state machine needs.
#[derive(Clone, Debug)]
pub struct PeerSettings {
    /// The peer's Diameter identity.
    pub host: String,
    /// `Some` for peers we connect to; `None` for accept-only peers.
    pub connect_to: Option<Endpoint>,
    /// Tc, Tw, CER and DPA timeouts (`[timers]`).
    pub timers: Timers,
    /// Seed for the watchdog's jitter.
    pub seed: u64,
}

/// The CER received on the responder connection, kept until we answer it.
#[derive(Clone, Debug)]
struct PendingCer {
    ids: MsgIds,
    caps: Capabilities,
    apps: AppSet,
    security: Security,
}

/// A connection in [`State::TlsHandshake`], and what it opens as once the handshake is done.
#[derive(Clone, Debug)]
struct InbandTls {
    conn: ConnId,
    /// R-Open or I-Open.
    opens_as: State,
    caps: Capabilities,
    apps: AppSet,
}

/// The RFC 6733 §5.6 state machine of one peer.
#[derive(Debug)]
pub struct PeerFsm {
    settings: PeerSettings,
    local: Arc<Capabilities>,
    state: State,
    /// The connection we initiated (I-side).
    i_conn: Option<ConnId>,
    /// The connection the peer initiated (R-side).
    r_conn: Option<ConnId>,
    r_cer: Option<PendingCer>,
    /// The connection of R-Open / I-Open / Closing.
    open_conn: Option<ConnId>,
    remote: Option<Capabilities>,
    apps: AppSet,
    /// The state's timer: connect/CEA/election timeout, drain, DPA timeout, or reconnect.
    deadline: Option<Instant>,
    watchdog: Watchdog,
    /// Consecutive failures, for the reconnect backoff.
    failures: u32,
    reconnect: Reconnect,
    /// Stop was requested: no reconnecting; in an open state, draining.
    stopping: Option<DisconnectCause>,
    /// In Closing: we sent our DPR (its DPA disconnects).
    sent_dpr: bool,
    /// In Closing: we answered the peer's DPR (the peer disconnects, RFC 6733 §5.4).
    sent_dpa: bool,
    /// The peer is configured for in-band TLS (`tls_inband`).
    inband_tls: bool,
    /// The connection whose in-band TLS handshake runs.
    handshake: Option<InbandTls>,
    actions: VecDeque<Action>,
}

impl PeerFsm {
    /// A peer in Closed; nothing happens until [`Event::Start`] or an R-Conn-CER.
    pub fn new(settings: PeerSettings, local: Arc<Capabilities>) -> PeerFsm {
        let watchdog = Watchdog::new(settings.timers.tw, settings.seed);
        PeerFsm {
            settings,
            local,
            state: State::Closed,
            i_conn: None,
            r_conn: None,
            r_cer: None,
            open_conn: None,
            remote: None,
            apps: AppSet::default(),
            deadline: None,
            watchdog,
            failures: 0,
            reconnect: Reconnect::Normal,
            stopping: None,
            sent_dpr: false,
            sent_dpa: false,
            inband_tls: false,
            handshake: None,
            actions: VecDeque::new(),
        }
    }

    /// In-band TLS after CER/CEA is required with this peer (`tls_inband`), from its next
    /// capabilities exchange on.
    pub fn set_inband_tls(&mut self, on: bool) {
        self.inband_tls = on;
    }

    /// Whether in-band TLS is required with this peer (`tls_inband`).
    pub fn inband_tls(&self) -> bool {
        self.inband_tls
    }

    /// The current §5.6 state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Where the peer is reached from the next connection attempt on (a reload changed it).
    pub fn set_connect_to(&mut self, connect_to: Option<Endpoint>) {
        self.settings.connect_to = connect_to;
    }

    /// Replaces our capabilities for capabilities exchanges from now on (the applications
    /// advertised can grow while the node runs; see `Endpoint::advertise_extra`). What an open
    /// connection negotiated stays as it was.
    pub fn set_local(&mut self, local: Arc<Capabilities>) {
        self.local = local;
    }

    /// The peer's Diameter identity (its configured `host`).
    pub fn host(&self) -> &str {
        &self.settings.host
    }

    /// The RFC 3539 watchdog of the open connection (its state for status and metrics).
    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    /// The peer's capabilities, while open.
    pub fn remote(&self) -> Option<&Capabilities> {
        self.remote.as_ref()
    }

    /// The applications shared with the peer, while open.
    pub fn apps(&self) -> &AppSet {
        &self.apps
    }

    /// The connection of the open state (also while closing).
    pub fn open_conn(&self) -> Option<ConnId> {
        self.open_conn
    }

    /// The connection we initiated and whose CEA we may be waiting for.
    pub fn initiator_conn(&self) -> Option<ConnId> {
        self.i_conn
    }

    /// Send-Message: the connection a new request may be sent on — open, watchdog OKAY, and
    /// not shutting down. Answers to the peer's requests may use [`PeerFsm::open_conn`].
    pub fn send_target(&self) -> Option<ConnId> {
        match self.state {
            State::ROpen | State::IOpen if self.stopping.is_none() && self.watchdog.is_usable() => {
                self.open_conn
            }
            _ => None,
        }
    }

    /// Whether `conn` is one of this peer's connections.
    pub fn owns(&self, conn: ConnId) -> bool {
        let tls = self.handshake.as_ref().map(|h| h.conn);
        [self.i_conn, self.r_conn, self.open_conn, tls].contains(&Some(conn))
    }

    /// The next action for the driver, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`PeerFsm::handle_timeout`] must be called next.
    pub fn next_timeout(&self) -> Option<Instant> {
        let wd = match self.state {
            State::ROpen | State::IOpen => self.watchdog.deadline(),
            _ => None,
        };
        match (self.deadline, wd) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, ids: &mut ConnIds) {
        if matches!(self.state, State::ROpen | State::IOpen) {
            if let Some(action) = self.watchdog.on_timeout(now) {
                self.watchdog_action(action, now);
            }
        }
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.timeout(now, ids);
        }
    }

    /// Feeds one event. Returns whether a received message should be processed (handed to
    /// routing or the application): true only for [`Event::RcvMessage`] on the open
    /// connection; messages on a connection that is not open must be refused by the driver.
    pub fn handle(&mut self, event: Event, now: Instant, ids: &mut ConnIds) -> bool {
        use State::*;
        match event {
            Event::Start => {
                let was_draining = self.stopping.take().is_some();
                self.reconnect = Reconnect::Normal;
                match self.state {
                    Closed => {
                        self.deadline = None;
                        self.start(now, ids);
                    }
                    // A Start while draining cancels the stop.
                    ROpen | IOpen if was_draining => {
                        self.deadline = None;
                        if let (Some(conn), true) = (self.open_conn, self.watchdog.is_usable()) {
                            self.actions
                                .push_back(Action::Usable { conn, usable: true });
                        }
                    }
                    _ => {}
                }
            }
            Event::RConnCer { conn, cer } => self.r_conn_cer(conn, cer, now),
            Event::RcvConnAck { conn } if Some(conn) == self.i_conn => match self.state {
                // Wait-Conn-Ack, I-Rcv-Conn-Ack: I-Snd-CER -> Wait-I-CEA
                WaitConnAck => {
                    self.send(conn, Outgoing::Cer);
                    self.state = WaitICea;
                    self.deadline = Some(now + self.settings.timers.cer_timeout);
                }
                // Wait-Conn-Ack/Elect, I-Rcv-Conn-Ack: I-Snd-CER, Elect -> Wait-Returns
                WaitConnAckElect => {
                    self.send(conn, Outgoing::Cer);
                    self.state = WaitReturns;
                    self.deadline = Some(now + self.settings.timers.cer_timeout);
                    self.elect(now);
                }
                _ => {}
            },
            Event::RcvConnNack { conn } if Some(conn) == self.i_conn => match self.state {
                // Wait-Conn-Ack, I-Rcv-Conn-Nack: Cleanup -> Closed
                WaitConnAck => {
                    self.i_conn = None;
                    self.closed(now, true);
                }
                // Wait-Conn-Ack/Elect, I-Rcv-Conn-Nack: R-Snd-CEA -> R-Open
                WaitConnAckElect => {
                    self.i_conn = None;
                    self.r_snd_cea_open(now);
                }
                _ => {}
            },
            Event::RcvCea {
                conn,
                result_code,
                caps,
                on_tls,
            } if Some(conn) == self.i_conn => self.rcv_cea(conn, result_code, caps, on_tls, now),
            Event::RcvNonCea { conn } if Some(conn) == self.i_conn => match self.state {
                // Wait-I-CEA, I-Rcv-Non-CEA: Error -> Closed
                WaitICea => {
                    self.i_disc(CloseReason::ProtocolError);
                    self.closed(now, true);
                }
                // Not in the table: treat like I-Peer-Disc, keeping the responder side.
                WaitReturns => {
                    self.i_disc(CloseReason::ProtocolError);
                    self.r_snd_cea_open(now);
                }
                _ => {}
            },
            // R-Open, R-Rcv-CER: R-Snd-CEA -> R-Open (and I-Open, I-Rcv-CER: I-Snd-CEA ->
            // I-Open): RFC 6733 §5.6.1 answers a CER on the open connection and keeps it.
            // The CEA is negative, 5012 DIAMETER_UNABLE_TO_COMPLY, as freeDiameter's
            // `fd_p_ce_msgrcv` answers ("No CER allowed in current state"): RFC 6733 has no
            // capabilities update (that is RFC 6737), so what was agreed stays agreed.
            Event::RcvCer { conn, cer } if Some(conn) == self.open_conn => {
                self.send(
                    conn,
                    Outgoing::Cea {
                        ids: cer.ids,
                        result_code: result::UNABLE_TO_COMPLY,
                        error_message: Some("no CER allowed on an open connection".into()),
                    },
                );
                if let Some(a) = self.watchdog.on_traffic(now) {
                    self.watchdog_action(a, now);
                }
            }
            Event::RcvCer { .. } => {}
            Event::PeerDisc { conn } => self.peer_disc(conn, now),
            Event::RcvDpr {
                conn,
                ids: msg,
                cause,
            } if Some(conn) == self.open_conn => self.rcv_dpr(conn, msg, cause, now),
            Event::RcvDpa { conn }
                if Some(conn) == self.open_conn && self.state == Closing && self.sent_dpr =>
            {
                // Closing, Rcv-DPA: Disc -> Closed (a DPA for a DPR we never sent is
                // ignored, as freeDiameter's p_dp.c does: "Ignoring DPA received in state")
                self.actions.push_back(Action::Close {
                    conn,
                    reason: CloseReason::Disconnect,
                });
                self.watchdog.reset();
                self.leave_open(now, false);
            }
            Event::RcvDwr { conn, ids: msg } if Some(conn) == self.open_conn => {
                // Process-DWR, Snd-DWA; any message is traffic for the watchdog.
                self.send(conn, Outgoing::Dwa { ids: msg });
                if let Some(a) = self.watchdog.on_traffic(now) {
                    self.watchdog_action(a, now);
                }
            }
            Event::RcvDwa { conn } if Some(conn) == self.open_conn => {
                // Process-DWA
                if let Some(a) = self.watchdog.on_dwa(now) {
                    self.watchdog_action(a, now);
                }
            }
            Event::RcvMessage { conn } if Some(conn) == self.open_conn => {
                // Process (also in Closing: answers to our requests still arrive).
                if let Some(a) = self.watchdog.on_traffic(now) {
                    self.watchdog_action(a, now);
                }
                return true;
            }
            Event::RcvOriginStateId { conn, value }
                if Some(conn) == self.open_conn && matches!(self.state, ROpen | IOpen) =>
            {
                self.origin_state_id(value, now);
            }
            Event::TlsUp { conn }
                if self.state == TlsHandshake
                    && self.handshake.as_ref().is_some_and(|h| h.conn == conn) =>
            {
                if let Some(h) = self.handshake.take() {
                    self.open(h.opens_as, conn, h.caps, h.apps, now);
                }
            }
            // Not in RFC 6733's table (TLS-Handshake is freeDiameter's STATE_OPEN_HANDSHAKE);
            // written as the table's rows are:
            //
            //   state          event                  action     next state
            //   -------------  ---------------------  ---------  ----------
            //   TLS-Handshake  TLS-Refused            Disc       Closed
            //   TLS-Handshake  Peer-Disc              (none)     Closed
            //
            // Closed when the close is decided, not when the driver reports the socket gone:
            // in between, a redial's CER (R-Conn-CER) would find the peer still busy and be
            // rejected (R-Reject, §5.6.4). Its later Peer-Disc is for a connection that is
            // no longer ours and is ignored.
            Event::TlsRefused { conn }
                if self.state == TlsHandshake
                    && self.handshake.as_ref().is_some_and(|h| h.conn == conn) =>
            {
                self.tls_disc(CloseReason::TlsRefused);
                self.closed(now, true);
            }
            Event::Stop { cause } => self.stop(cause, now),
            Event::Drained => {
                if matches!(self.state, ROpen | IOpen) {
                    if let Some(cause) = self.stopping {
                        self.snd_dpr(cause, now);
                    }
                }
            }
            // Events about connections that are not (or no longer) ours: stale, ignore.
            Event::RcvConnAck { conn } | Event::RcvConnNack { conn } => {
                if !self.owns(conn) {
                    // A late connect result for an attempt we gave up on: close it.
                    self.actions.push_back(Action::Close {
                        conn,
                        reason: CloseReason::Timeout,
                    });
                }
            }
            Event::RcvCea { .. }
            | Event::RcvNonCea { .. }
            | Event::RcvDpr { .. }
            | Event::RcvDpa { .. }
            | Event::RcvDwr { .. }
            | Event::RcvDwa { .. }
            | Event::RcvMessage { .. }
            | Event::RcvOriginStateId { .. }
            | Event::TlsUp { .. }
            | Event::TlsRefused { .. } => {}
        }
        false
    }

    /// Rcv-DPR on the open connection. RFC 6733 §5.6.1 (RFC 3588's table closed at once,
    /// "I-Snd-DPA, I-Disc -> Closed"; RFC 6733 waits for the DPR's sender to close):
    ///
    ///   state    event       action     next state
    ///   -------  ----------  ---------  ----------
    ///   I-Open   I-Rcv-DPR   I-Snd-DPA  Closing
    ///   R-Open   R-Rcv-DPR   R-Snd-DPA  Closing
    ///   Closing  I-Peer-Disc I-Disc     Closed
    ///   Closing  R-Peer-Disc R-Disc     Closed
    ///   Closing  Timeout     Error      Closed
    ///
    /// §5.4: "The receiver of the Disconnect-Peer-Answer message initiates the transport
    /// disconnect. The sender of the Disconnect-Peer-Answer should be able to detect the
    /// transport closure and clean up the connection." The Timeout is the DPA timeout
    /// (`[timers] dpa_timeout`), the bound we already give a peer to answer our own DPR:
    /// a peer that never closes costs no more than one that never answers, also when the
    /// node shuts down meanwhile. The Disconnect-Cause is kept for the reconnect timer
    /// armed in Closed (§5.4.3).
    ///
    /// In Closing, what the peer still sends is processed as in the open state (answers to
    /// our pending requests, which then need no failover; requests, answered): the RFC
    /// defines nothing, and freeDiameter's STATE_CLOSING_GRACE accepts routable messages
    /// the same way ("Accepted a message while not in OPEN state"). No new request is
    /// routed to the peer ([`Action::Usable`] false, [`PeerFsm::send_target`] none).
    ///
    /// Not in the table: a DPR in Closing (DPRs crossing after our own DPR, or a repeated
    /// one) is answered too (every request gets its answer) and Closing goes on with its
    /// deadline unchanged: after crossing DPRs each side is a DPA receiver and disconnects
    /// on the DPA it gets.
    fn rcv_dpr(&mut self, conn: ConnId, ids: MsgIds, cause: DisconnectCause, now: Instant) {
        self.send(conn, Outgoing::Dpa { ids });
        self.reconnect = Reconnect::after(cause);
        self.sent_dpa = true;
        if matches!(self.state, State::ROpen | State::IOpen) {
            if self.send_target().is_some() {
                self.actions.push_back(Action::Usable {
                    conn,
                    usable: false,
                });
            }
            self.state = State::Closing;
            self.deadline = Some(now + self.settings.timers.dpa_timeout);
        }
        tracing::info!(
            peer = %self.settings.host,
            conn = conn.0,
            cause = ?cause,
            "DPR answered: waiting for the peer to close the connection (RFC 6733 §5.4)"
        );
    }

    fn send(&mut self, conn: ConnId, msg: Outgoing) {
        self.actions.push_back(Action::Send { conn, msg });
    }

    /// Closed, Start: I-Snd-Conn-Req -> Wait-Conn-Ack (accept-only peers stay Closed).
    fn start(&mut self, now: Instant, ids: &mut ConnIds) {
        let Some(addr) = self.settings.connect_to.clone() else {
            return;
        };
        let conn = ids.next_id();
        self.i_conn = Some(conn);
        self.actions.push_back(Action::Connect { conn, addr });
        self.state = State::WaitConnAck;
        self.deadline = Some(now + self.settings.timers.cer_timeout);
    }

    fn r_conn_cer(&mut self, conn: ConnId, cer: ReceivedCer, now: Instant) {
        use State::*;
        match self.state {
            // Closed, R-Conn-CER: R-Accept, Process-CER, R-Snd-CEA -> R-Open
            Closed => {
                if let Some(pending) = self.accept_and_process(conn, cer) {
                    self.r_cer = Some(pending);
                    self.r_snd_cea_open(now);
                }
            }
            // Wait-Conn-Ack, R-Conn-CER: R-Accept, Process-CER -> Wait-Conn-Ack/Elect
            WaitConnAck => {
                if let Some(pending) = self.accept_and_process(conn, cer) {
                    self.r_cer = Some(pending);
                    self.state = WaitConnAckElect;
                }
            }
            // Wait-I-CEA, R-Conn-CER: R-Accept, Process-CER, Elect -> Wait-Returns
            WaitICea => {
                if let Some(pending) = self.accept_and_process(conn, cer) {
                    self.r_cer = Some(pending);
                    self.state = WaitReturns;
                    self.elect(now);
                }
            }
            // Not in the table: a CER from a peer that is open, with another Origin-State-Id
            // than its open connection's. RFC 6733 §8.16: "A Diameter entity issuing this AVP
            // MUST create a higher value for this AVP each time its state is reset": the peer
            // restarted, and the open connection is its previous incarnation's, half-open
            // (nothing sent on it will be answered). Reset it and take the new one as in
            // Closed, instead of rejecting the peer until our watchdog gives up on the old one.
            ROpen | IOpen if self.restarted(cer.caps.origin_state_id) => {
                self.log_restart(cer.caps.origin_state_id.unwrap_or(0));
                self.peer_restarted(now);
                self.r_conn_cer(conn, cer, now);
            }
            // Wait-Conn-Ack/Elect, Wait-Returns, R-Open, I-Open, R-Conn-CER: R-Reject.
            // Closing too: we are leaving, a new connection is not wanted.
            WaitConnAckElect | WaitReturns | ROpen | IOpen | Closing | TlsHandshake => {
                self.actions.push_back(Action::Close {
                    conn,
                    reason: CloseReason::Rejected,
                });
            }
        }
    }

    /// R-Accept and Process-CER. On failure the CER is answered with the error and the
    /// connection closed; the state does not change.
    fn accept_and_process(&mut self, conn: ConnId, cer: ReceivedCer) -> Option<PendingCer> {
        self.actions.push_back(Action::Accept { conn });
        // Applications first (5010), then security (5017), as freeDiameter's p_ce.c does.
        let security = negotiate_security(
            self.inband_tls,
            cer.on_tls,
            &cer.caps.inband_security_ids,
            &cer.caps.origin_host,
        );
        match negotiate(&self.local, &cer.caps).and_then(|apps| Ok((security?, apps))) {
            Ok((security, apps)) => {
                self.r_conn = Some(conn);
                Some(PendingCer {
                    ids: cer.ids,
                    caps: cer.caps,
                    apps,
                    security,
                })
            }
            Err(e) => {
                let reason = if e.result_code == result::NO_COMMON_SECURITY {
                    CloseReason::NoCommonSecurity
                } else {
                    CloseReason::Capabilities
                };
                self.send(
                    conn,
                    Outgoing::Cea {
                        ids: cer.ids,
                        result_code: e.result_code,
                        error_message: Some(e.message),
                    },
                );
                self.actions.push_back(Action::Close { conn, reason });
                None
            }
        }
    }

    /// Elect: if we win, Win-Election follows at once (Wait-Returns only: in
    /// Wait-Conn-Ack/Elect the election waits for our own CER to be sent).
    fn elect(&mut self, now: Instant) {
        let Some(pending) = &self.r_cer else { return };
        if self.state == State::WaitReturns
            && wins_election(&self.local.origin_host, &pending.caps.origin_host)
        {
            // Wait-Returns, Win-Election: I-Disc, R-Snd-CEA -> R-Open
            self.i_disc(CloseReason::Election);
            self.r_snd_cea_open(now);
        }
    }

    /// R-Snd-CEA and enter R-Open with the stored CER.
    fn r_snd_cea_open(&mut self, now: Instant) {
        let (Some(conn), Some(pending)) = (self.r_conn.take(), self.r_cer.take()) else {
            self.closed(now, true);
            return;
        };
        self.send(
            conn,
            Outgoing::Cea {
                ids: pending.ids,
                result_code: result::SUCCESS,
                error_message: None,
            },
        );
        match pending.security {
            // RFC 3588 §2.1: TLS starts right after the CEA; we answered, we are the server.
            Security::InbandTls => self.start_tls(
                State::ROpen,
                conn,
                pending.caps,
                pending.apps,
                TlsRole::Server,
                now,
            ),
            Security::AsIs => self.open(State::ROpen, conn, pending.caps, pending.apps, now),
        }
    }

    /// Enter TLS-Handshake on `conn`: the driver runs the handshake, [`Event::TlsUp`] opens.
    fn start_tls(
        &mut self,
        opens_as: State,
        conn: ConnId,
        caps: Capabilities,
        apps: AppSet,
        role: TlsRole,
        now: Instant,
    ) {
        self.state = State::TlsHandshake;
        self.deadline = Some(now + self.settings.timers.cer_timeout);
        self.handshake = Some(InbandTls {
            conn,
            opens_as,
            caps,
            apps,
        });
        self.actions.push_back(Action::StartTls { conn, role });
    }

    /// I-side of the security negotiation (`Process-CEA`), with the same table as the
    /// R-side ([`negotiate_security`]):
    /// - to an in-band peer our CER offered TLS only, so its CEA must carry
    ///   Inband-Security-Id TLS (freeDiameter's CEA does when it agreed);
    /// - to any other peer on a plain connection our CER said nothing (NO_INBAND_SECURITY):
    ///   a CEA that answers TLS only (or values we do not know) means the peer is about to
    ///   start a TLS handshake we never asked for. RFC 6733 §6.10: the values advertise
    ///   "support of the security portion of the application"; §7.1.5: with none in common
    ///   there is DIAMETER_NO_COMMON_SECURITY. We do not follow the peer into TLS it chose
    ///   alone (freeDiameter's `p_ce.c` gives up too when TLS is not allowed with that peer:
    ///   "Clear connection with remote peer '%s' is not (explicitly) allowed"): refused,
    ///   counted and closed, rather than talking clear text to a peer reading TLS.
    /// - on a TLS connection (transport = "tls") the value is ignored, as by freeDiameter.
    fn cea_security(&self, caps: &Capabilities, on_tls: bool) -> Result<Security, String> {
        negotiate_security(
            self.inband_tls,
            on_tls,
            &caps.inband_security_ids,
            &caps.origin_host,
        )
        .map_err(|e| e.message)
    }

    /// Open on `conn` as `state`, or first run the in-band handshake as the client.
    fn open_or_tls(
        &mut self,
        state: State,
        conn: ConnId,
        caps: Capabilities,
        apps: AppSet,
        security: Security,
        now: Instant,
    ) {
        match security {
            Security::InbandTls => self.start_tls(state, conn, caps, apps, TlsRole::Client, now),
            Security::AsIs => self.open(state, conn, caps, apps, now),
        }
    }

    fn rcv_cea(
        &mut self,
        conn: ConnId,
        result_code: u32,
        caps: Capabilities,
        on_tls: bool,
        now: Instant,
    ) {
        use State::*;
        let mut failed = CloseReason::Capabilities;
        let accepted = if result_code == result::SUCCESS {
            negotiate(&self.local, &caps).ok().and_then(|apps| {
                match self.cea_security(&caps, on_tls) {
                    Ok(security) => Some((apps, security)),
                    Err(why) => {
                        // Counted (Refusal::NoCommonSecurity) where the close is acted on.
                        tracing::warn!(
                            peer = %self.settings.host,
                            conn = conn.0,
                            "CEA refused (RFC 6733 §6.10, §7.1.5): {why}"
                        );
                        failed = CloseReason::NoCommonSecurity;
                        None
                    }
                }
            })
        } else {
            None
        };
        match (self.state, accepted) {
            // Wait-I-CEA, I-Rcv-CEA: Process-CEA -> I-Open
            (WaitICea, Some((apps, security))) => {
                self.i_conn = None;
                self.open_or_tls(IOpen, conn, caps, apps, security, now);
            }
            (WaitICea, None) => {
                self.i_disc(failed);
                self.closed(now, true);
            }
            // Wait-Returns, I-Rcv-CEA: R-Disc -> I-Open (we lost the election)
            (WaitReturns, Some((apps, security))) => {
                self.r_disc(CloseReason::Election);
                self.i_conn = None;
                self.open_or_tls(IOpen, conn, caps, apps, security, now);
            }
            // Not in the table: the responder connection is still good, use it.
            (WaitReturns, None) => {
                self.i_disc(failed);
                self.r_snd_cea_open(now);
            }
            _ => {}
        }
    }

    fn peer_disc(&mut self, conn: ConnId, now: Instant) {
        use State::*;
        let is_i = Some(conn) == self.i_conn;
        let is_r = Some(conn) == self.r_conn;
        let is_open = Some(conn) == self.open_conn;
        let is_tls = self.handshake.as_ref().is_some_and(|h| h.conn == conn);
        match self.state {
            // Wait-Conn-Ack: the attempt failed (same as Nack).
            WaitConnAck if is_i => {
                self.i_conn = None;
                self.closed(now, true);
            }
            // Wait-I-CEA, I-Peer-Disc: I-Disc -> Closed
            WaitICea if is_i => {
                self.i_conn = None;
                self.closed(now, true);
            }
            // Wait-Conn-Ack/Elect, R-Peer-Disc: R-Disc -> Wait-Conn-Ack
            WaitConnAckElect if is_r => {
                self.r_conn = None;
                self.r_cer = None;
                self.state = WaitConnAck;
            }
            // (our connect attempt failed: same as I-Rcv-Conn-Nack)
            WaitConnAckElect if is_i => {
                self.i_conn = None;
                self.r_snd_cea_open(now);
            }
            // Wait-Returns, I-Peer-Disc: I-Disc, R-Snd-CEA -> R-Open
            WaitReturns if is_i => {
                self.i_conn = None;
                self.r_snd_cea_open(now);
            }
            // Wait-Returns, R-Peer-Disc: R-Disc -> Wait-I-CEA
            WaitReturns if is_r => {
                self.r_conn = None;
                self.r_cer = None;
                self.state = WaitICea;
            }
            // The handshake failed or the peer left during it: never open, nothing to fail over.
            TlsHandshake if is_tls => {
                self.handshake = None;
                self.closed(now, true);
            }
            // R-Open / I-Open / Closing, Peer-Disc: Disc -> Closed
            ROpen | IOpen | Closing if is_open => {
                self.open_conn = None;
                let failure = self.state != Closing;
                if failure {
                    self.watchdog.connection_down();
                } else {
                    self.watchdog.reset();
                }
                if self.state == Closing && self.sent_dpa {
                    tracing::info!(
                        peer = %self.settings.host,
                        conn = conn.0,
                        "peer closed the connection after our DPA (RFC 6733 §5.4)"
                    );
                }
                self.actions.push_back(Action::Down { conn });
                self.closed(now, failure);
            }
            _ => {}
        }
    }

    /// Whether `value`, an Origin-State-Id the peer sent, says it restarted since the
    /// capabilities exchange of the open connection.
    ///
    /// RFC 6733 §8.16: "If an access device does not intend for such inferences to be made,
    /// it MUST either not include Origin-State-Id in any message, or set its value to 0." So
    /// an absent or zero value on either side proves nothing. Any other difference counts,
    /// not only a higher value (as freeDiameter's `check_state_id` in `p_dw.c`): a peer whose
    /// clock went back after a reboot has still lost its state.
    fn restarted(&self, value: Option<u32>) -> bool {
        let known = self.remote.as_ref().and_then(|r| r.origin_state_id);
        matches!((known, value), (Some(k), Some(v)) if k != 0 && v != 0 && k != v)
    }

    /// R-Open / I-Open: the peer's own DWR or DWA carried Origin-State-Id `value`.
    fn origin_state_id(&mut self, value: u32, now: Instant) {
        if self.restarted(Some(value)) {
            self.log_restart(value);
            self.peer_restarted(now);
            return;
        }
        // Not in its CER/CEA (or 0 there): the first non-zero value seen is the one to keep,
        // as freeDiameter's `check_state_id` does.
        if let Some(remote) = self.remote.as_mut() {
            if value != 0 && remote.origin_state_id.unwrap_or(0) == 0 {
                remote.origin_state_id = Some(value);
            }
        }
    }

    /// Logs the restart with both values (once per reset).
    fn log_restart(&self, value: u32) {
        let known = self.remote.as_ref().and_then(|r| r.origin_state_id);
        tracing::warn!(
            peer = %self.settings.host,
            origin_state_id = value,
            previous = known.unwrap_or(0),
            "peer restarted (Origin-State-Id changed): resetting its connection, failing over its pending requests"
        );
    }

    /// The peer restarted (RFC 6733 §8.16: "By including Origin-State-Id in a message, it
    /// allows other Diameter entities to infer that sessions associated with a lower
    /// Origin-State-Id are no longer active"): reset the connection as freeDiameter does
    /// (`p_dw.c` fails the DWR/DWA, `p_psm.c` jumps to `psm_reset`: the peer goes to CLOSED
    /// without DPR, its pending requests are failed over, and it is reconnected).
    ///
    /// Here: close the open connection without DPR (the state DPR would close is gone) and
    /// without answering the message that showed the change; [`Action::Down`] makes the
    /// endpoint fail the requests pending on it over (RFC 6733 §5.5.4, T flag). The
    /// watchdog starts over trusted (INITIAL, not REOPEN): the transport did not fail, the
    /// peer restarted — freeDiameter does not mark such a reset as a connection problem
    /// either. We reconnect after Tc, as after a DPR with REBOOTING.
    fn peer_restarted(&mut self, now: Instant) {
        self.watchdog.reset();
        self.reconnect = Reconnect::after(DisconnectCause::Rebooting);
        self.close_open(CloseReason::PeerRestarted, now, false);
    }

    fn stop(&mut self, cause: DisconnectCause, now: Instant) {
        use State::*;
        match self.state {
            // R-Open / I-Open, Stop: drain, then Snd-DPR -> Closing.
            ROpen | IOpen => {
                if self.stopping.is_none() {
                    self.stopping = Some(cause);
                    if let Some(conn) = self.open_conn {
                        self.actions.push_back(Action::Usable {
                            conn,
                            usable: false,
                        });
                    }
                    self.deadline = Some(now + self.settings.timers.drain_timeout);
                }
            }
            // Already leaving (our DPR, or our DPA to the peer's): no reconnect after it; the
            // DPA timeout bounds the wait.
            Closing => {
                self.stopping.get_or_insert(cause);
            }
            // Not in the table: Cleanup -> Closed, and stay there.
            Closed | WaitConnAck | WaitICea | WaitConnAckElect | WaitReturns | TlsHandshake => {
                self.stopping = Some(cause);
                self.i_disc(CloseReason::Stopped);
                self.r_disc(CloseReason::Stopped);
                self.tls_disc(CloseReason::Stopped);
                self.closed(now, false);
            }
        }
    }

    /// Snd-DPR -> Closing.
    fn snd_dpr(&mut self, cause: DisconnectCause, now: Instant) {
        let Some(conn) = self.open_conn else { return };
        self.send(conn, Outgoing::Dpr { cause });
        self.sent_dpr = true;
        self.state = State::Closing;
        self.deadline = Some(now + self.settings.timers.dpa_timeout);
    }

    fn timeout(&mut self, now: Instant, ids: &mut ConnIds) {
        use State::*;
        match self.state {
            // Reconnect timer.
            Closed => self.start(now, ids),
            // Wait-Conn-Ack/Elect, Timeout: the table says Error -> Closed, dropping the
            // good responder connection too. Our connect attempt timing out is a failed
            // attempt, i.e. I-Rcv-Conn-Nack, whose row is R-Snd-CEA -> R-Open: we follow
            // that, so a peer that reached us is not turned away for our own failure.
            WaitConnAckElect => {
                self.i_disc(CloseReason::Timeout);
                self.r_snd_cea_open(now);
            }
            // Wait-Conn-Ack / Wait-I-CEA / Wait-Returns, Timeout: Error -> Closed
            WaitConnAck | WaitICea | WaitReturns => {
                self.i_disc(CloseReason::Timeout);
                self.r_disc(CloseReason::Timeout);
                self.closed(now, true);
            }
            // Draining took too long: DPR anyway.
            ROpen | IOpen => {
                if let Some(cause) = self.stopping {
                    self.snd_dpr(cause, now);
                }
            }
            // The in-band handshake did not finish in time: Error -> Closed.
            TlsHandshake => {
                self.tls_disc(CloseReason::Timeout);
                self.closed(now, true);
            }
            // Closing, Timeout: Error -> Closed
            Closing => {
                self.watchdog.reset();
                self.close_open(CloseReason::Disconnect, now, false);
            }
        }
    }

    fn watchdog_action(&mut self, action: WatchdogAction, now: Instant) {
        let Some(conn) = self.open_conn else { return };
        match action {
            WatchdogAction::SendDwr => self.send(conn, Outgoing::Dwr),
            WatchdogAction::Failover => {
                self.actions.push_back(Action::Usable {
                    conn,
                    usable: false,
                });
                self.actions.push_back(Action::Failover { conn });
            }
            WatchdogAction::Failback => {
                if self.stopping.is_none() {
                    self.actions
                        .push_back(Action::Usable { conn, usable: true });
                }
            }
            WatchdogAction::Close => self.close_open(CloseReason::Watchdog, now, true),
        }
    }

    /// Enter R-Open or I-Open.
    fn open(
        &mut self,
        state: State,
        conn: ConnId,
        remote: Capabilities,
        apps: AppSet,
        now: Instant,
    ) {
        self.state = state;
        self.open_conn = Some(conn);
        self.deadline = None;
        self.failures = 0;
        self.reconnect = Reconnect::Normal;
        self.actions.push_back(Action::Up {
            conn,
            remote: Box::new(remote.clone()),
            apps: apps.clone(),
        });
        self.remote = Some(remote);
        self.apps = apps;
        if let Some(WatchdogAction::SendDwr) = self.watchdog.connection_up(now) {
            self.send(conn, Outgoing::Dwr);
        }
        if self.watchdog.is_usable() {
            self.actions
                .push_back(Action::Usable { conn, usable: true });
        }
    }

    /// Close the open connection ourselves and go to Closed.
    fn close_open(&mut self, reason: CloseReason, now: Instant, failure: bool) {
        if let Some(conn) = self.open_conn {
            self.actions.push_back(Action::Close { conn, reason });
            if failure {
                self.watchdog.connection_down();
            }
        }
        self.leave_open(now, failure);
    }

    /// Leave R-Open/I-Open/Closing for Closed, announcing Down.
    fn leave_open(&mut self, now: Instant, failure: bool) {
        if let Some(conn) = self.open_conn.take() {
            self.actions.push_back(Action::Down { conn });
        }
        self.closed(now, failure);
    }

    fn i_disc(&mut self, reason: CloseReason) {
        if let Some(conn) = self.i_conn.take() {
            self.actions.push_back(Action::Close { conn, reason });
        }
    }

    fn tls_disc(&mut self, reason: CloseReason) {
        if let Some(h) = self.handshake.take() {
            self.actions.push_back(Action::Close {
                conn: h.conn,
                reason,
            });
        }
    }

    fn r_disc(&mut self, reason: CloseReason) {
        self.r_cer = None;
        if let Some(conn) = self.r_conn.take() {
            self.actions.push_back(Action::Close { conn, reason });
        }
    }

    /// Enter Closed and arm the reconnect timer when we should reconnect.
    fn closed(&mut self, now: Instant, failure: bool) {
        self.state = State::Closed;
        self.sent_dpr = false;
        self.sent_dpa = false;
        self.remote = None;
        self.apps = AppSet::default();
        self.deadline = None;
        if failure {
            self.failures = self.failures.saturating_add(1);
        }
        if self.stopping.is_some() || self.settings.connect_to.is_none() {
            return;
        }
        if let Some(delay) = self.reconnect_delay() {
            self.deadline = Some(now + delay);
        }
    }

    /// See [`Reconnect::delay`].
    fn reconnect_delay(&self) -> Option<Duration> {
        self.reconnect.delay(self.settings.timers.tc, self.failures)
    }
}

#[cfg(test)]
mod tests;
