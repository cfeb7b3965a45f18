//! The seam between the node and "the application" (the SIP server's script, reached over
//! shared memory — or an in-process handler in tests and benchmarks), as plain values.
//!
//! Both directions are polled, as in quinn-proto: nothing here is a channel or a task.
//!
//! **Incoming requests** leave the endpoint as [`crate::endpoint::Output::Deliver`] with a
//! token; the driver reports the application's [`Reply`] under that token
//! ([`crate::endpoint::Endpoint::reply`]) — or [`Reply::Unanswered`], which the endpoint
//! answers 5012 DIAMETER_UNABLE_TO_COMPLY: every request gets exactly one answer. The
//! endpoint applies the reply timeout itself (`[app] reply_timeout`, 5012 too).
//!
//! **Outgoing requests** enter with [`crate::endpoint::Endpoint::submit`] under a
//! [`RequestId`] the driver chooses; each ends in exactly one
//! [`crate::endpoint::Output::Outcome`] with that id: the answer message, or a
//! [`RequestError`] (timeout, no route, too busy, node down).
//!
//! The runtime crate wraps both in channels for applications that live elsewhere (a
//! responder object per incoming request, a handle to submit requests from any task).

use bytes::Bytes;
use dmproto::Message;

/// The peer an incoming request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's Origin-Host from CER/CEA (the previous hop, not necessarily the
    /// request's originator: see the request's own Origin-Host for that).
    pub host: String,
    /// The peer's Origin-Realm from CER/CEA.
    pub realm: String,
}

/// An incoming request handed to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingRequest {
    /// The connection's peer: what the script sees as the previous hop. Shared: the node
    /// keeps one per peer and hands out a reference count per request, not two strings.
    pub peer: std::sync::Arc<PeerInfo>,
    /// The whole request, already validated against the dictionary.
    pub message: Message,
}

/// The application's answer to an incoming request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnswerBody {
    /// Encoded AVPs (concatenated, each padded) to put in the answer. The node adds
    /// Session-Id (first), Origin-Host, Origin-Realm and the request's Proxy-Info; it adds
    /// Result-Code 2001 unless these AVPs contain a Result-Code or Experimental-Result.
    pub avps: Bytes,
    /// Set the E bit (a protocol error answer).
    pub is_error: bool,
}

/// What the node receives for an incoming request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The application answered: the node completes it ([`crate::answer`]) and sends it on
    /// the connection the request came from (RFC 6733 §6.2).
    Answer(AnswerBody),
    /// The responder was dropped unanswered: the node answers 5012.
    Unanswered,
}

/// A request the application wants sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingRequest {
    /// Application-Id for the header (RFC 6733 §3); also what routing matches peers'
    /// advertised applications against (§6.1.1: 3007 if none supports it).
    pub app_id: u32,
    /// Command-Code for the header; the R bit is set by the node.
    pub cmd_code: u32,
    /// Encoded AVPs. The node fills in what is missing: Session-Id (for commands whose
    /// ABNF starts with it), Origin-Host, Origin-Realm, Destination-Realm, and the
    /// application-id AVP matching how we advertise the application.
    pub avps: Bytes,
    /// How long to wait for the answer (the script's own timeout); `None`: the configured
    /// answer timeout. Failover resends count against the same deadline.
    pub timeout: Option<std::time::Duration>,
}

/// Why an outgoing request got no answer. Each request ends in exactly one of these or an
/// answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No answer before the deadline ([`OutgoingRequest::timeout`] or `[timers]
    /// answer_timeout`), failover resends included; the caller must not assume the peer
    /// did not act on it.
    #[error("no answer within the answer timeout")]
    Timeout,
    /// No peer can take it: 3002, 3003, 3005 or 3007 with the reason.
    #[error("no route: {message} (Result-Code {result_code})")]
    NoRoute {
        /// The Result-Code the node would have answered with (RFC 6733 §7.1.3).
        result_code: u32,
        /// Why, for the caller's log: which realm or application had no peer.
        message: String,
    },
    /// Too many requests pending, or the node's queue is full.
    #[error("too busy")]
    TooBusy,
    /// The request itself is unusable (bad AVPs, too large).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The node stopped (or is stopping) before the request was sent (a request that was
    /// sent ends in [`RequestError::ConnectionLost`] instead).
    #[error("the node is down")]
    NodeDown,
    /// Sent, but its connection was lost before the answer and no alternate peer could take
    /// it (RFC 6733 §5.5.4 fails pending requests over only to an alternate). Like
    /// [`RequestError::Timeout`], the caller must not assume the peer did not act on it.
    #[error("no answer: the connection to the peer was lost after sending, and {0}")]
    ConnectionLost(String),
}

/// Names one request the application submitted: its [`crate::endpoint::Output::Outcome`]
/// carries the same id. Chosen by the driver (unique among its requests in flight).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);
