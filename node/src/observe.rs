//! What the core tells an observer (metrics) as requests and answers pass, without knowing
//! who listens: the driver plugs in its Prometheus recorder; tests can count.
//!
//! Every method has an empty default, so an observer implements what it needs. The core
//! calls these on its own thread with plain values (peer identity as `&str`, ids, codes,
//! durations) and no allocation; an implementation must not block (the node loop waits on
//! it): the bridge's resolves label sets once and then only increments atomics.

use std::time::Duration;

/// Which way a message went, from the node's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from a peer: requests to serve, answers to our requests.
    In,
    /// Sent to a peer: our requests, our answers.
    Out,
}

/// Why the node answered a request itself (the cause of a bridge-made answer class).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalCause {
    /// 3007: an application we do not advertise.
    ApplicationUnsupported,
    /// 3xxx/5xxx from the dictionary check (missing AVP, bad value...).
    Invalid,
    /// 3002: a request on a connection that is not open.
    NotOpen,
    /// 3004: too many requests waiting for the application.
    Overloaded,
    /// 3002/3003: Destination-Host or Destination-Realm names someone else and this node
    /// is not a relay (RFC 6733 §6.1.4).
    NotForThisNode,
    /// A request this node would relay (RFC 6733 §6.1.8) answered here instead: loop
    /// (3005), no route, too large, next hop failed.
    RelayFailed,
    /// 5012: the application's reply could not make a valid answer.
    BadReply,
    /// 5012: no reply from the application in time.
    ReplyTimeout,
    /// 5012: the application dropped the request without replying (worker died, stopping).
    NoReply,
    /// 5012: still unanswered by the application when our DPR closes its connection (the
    /// drain timeout of a stop, a disabled or removed peer).
    DrainTimeout,
    /// The application answered with an error of its own choosing (3001 no script route,
    /// 3004 no worker): reported by the application with its own cause.
    Application(&'static str),
}

impl LocalCause {
    /// The metric label / log field value.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalCause::ApplicationUnsupported => "application_unsupported",
            LocalCause::Invalid => "invalid_request",
            LocalCause::NotOpen => "connection_not_open",
            LocalCause::Overloaded => "too_many_in_progress",
            LocalCause::NotForThisNode => "not_for_this_node",
            LocalCause::RelayFailed => "relay_failed",
            LocalCause::BadReply => "bad_reply",
            LocalCause::ReplyTimeout => "reply_timeout",
            LocalCause::NoReply => "no_reply",
            LocalCause::DrainTimeout => "drain_timeout",
            LocalCause::Application(s) => s,
        }
    }
}

/// Receives the core's per-request events. See the module docs.
pub trait Observer: Send {
    /// A request received from (`In`) or sent to (`Out`) `peer`.
    fn request(&mut self, _peer: &str, _app: u32, _cmd: u32, _dir: Direction) {}
    /// An answer received (`In`, to our request, with the time since we sent it) or sent
    /// (`Out`) with its Result-Code (0 when it has none).
    fn answer(
        &mut self,
        _peer: &str,
        _app: u32,
        _cmd: u32,
        _dir: Direction,
        _result_code: u32,
        _latency: Option<Duration>,
    ) {
    }
    /// The node answered a request itself, with this Result-Code, for this cause.
    fn local_answer(&mut self, _result_code: u32, _cause: LocalCause) {}
    /// A refusal that is not an answer to a request: a connection over the limit, a CER
    /// refused, a framing error. `cause` is a short snake_case label.
    fn refusal(&mut self, _cause: &'static str) {}
    /// "duplicate" (answered from the duplicate cache), "failover" (a connection's pending
    /// requests moved), "retransmission" (one request sent again with the T flag),
    /// "answer_unmatched" (an answer no request of ours waits for, dropped), "busy_resent" /
    /// "redirected" (a request answered 3004 / 3006 sent to another peer, RFC 6733 §7.1.3),
    /// "redirect_cached" (a 3006's Redirect-Host kept for later requests, §6.12-§6.14),
    /// "redirect_cache_used" (a request sent to a cached Redirect-Host),
    /// "redirect_cache_time_missing" (a caching 3006 without Redirect-Max-Cache-Time: not
    /// cached), "redirect_cache_time_capped" (a 3006 cached for `[limits]
    /// redirect_cache_max_time`, less than its Redirect-Max-Cache-Time; also counted in
    /// "redirect_cached").
    fn event(&mut self, _event: &'static str) {}
    /// The application replied to an incoming request this long after it was handed over
    /// (the SIP-server script's reply time, through the shared-memory seam).
    fn reply_latency(&mut self, _latency: Duration) {}
    /// Our requests waiting for answers, after a change.
    fn pending(&mut self, _count: usize) {}
}

/// The observer that ignores everything (the default).
pub struct Nothing;
impl Observer for Nothing {}
