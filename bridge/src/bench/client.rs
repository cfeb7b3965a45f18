//! One bench connection as a sans-IO state machine: what to send and when, what an incoming
//! message means. The tokio driver (`conn.rs`) owns the socket and the clock and calls
//! [`Client::poll`] / [`Client::on_frame`] with the current time; tests drive it by hand.
//!
//! Life of a connection (after CER/CEA): `Running` sends requests as the pace allows until the
//! duration is over, the shared count is used up, or a stop is asked; `Draining` sends nothing
//! and waits for the requests in flight (each ends as an answer or a timeout, so this is
//! bounded by the timeout); `Closing` has sent DPR and waits a bounded time for the DPA;
//! `Done`. A DPR from the peer is answered and ends the connection at once.
//!
//! Session mode (`--then`): each request of the main template opens a session; when its
//! answer is a success, the follow-up templates are sent one after the other, each after the
//! previous one's answer, with the session's Session-Id and, as Destination-Host, the
//! Origin-Host of the answer before (RFC 4006 §5.5/§8: the CCR-Update and CCR-Terminate of a
//! session go to the server that answered its CCR-Initial; DESIGN §7: the node holding the
//! session's state). An answer to a follow-up from another host is counted as `wrong_host`;
//! a failed step ends its session. Follow-ups queued when the sending phase ends are still
//! sent (the sessions are terminated), within the drain.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dmproto::Message;

use super::capabilities::{self as caps, cmd, LocalNode};
use super::pending::{Slot, Window};
use super::stats::{Live, Outcome, Tally};
use super::template::{Subst, Template};

/// How long to wait for the DPA after our DPR.
pub const DPA_WAIT: Duration = Duration::from_secs(2);
/// Most requests written per `poll`: keeps a client that is far behind its schedule reading
/// answers between batches instead of only writing.
pub const MAX_BATCH: usize = 1024;

/// How requests are paced on one connection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Closed loop: keep this many requests in flight.
    Concurrency(usize),
    /// Open loop at a fixed global rate shared by `stride` connections; this one sends the
    /// requests `offset, offset + stride, ...` of the global schedule, so the connections'
    /// sends interleave evenly.
    Rate {
        per_sec: f64,
        stride: u64,
        offset: u64,
    },
}

/// State shared by all connections of a run.
#[derive(Debug)]
pub struct Shared {
    /// Requests claimed so far; a request's `{{counter}}` is its claim number.
    pub issued: AtomicU64,
    /// `--count` (u64::MAX when unbounded).
    pub limit: u64,
    /// Set to stop sending early (e.g. Ctrl-C); connections drain and close.
    pub stop: AtomicBool,
    pub live: Live,
}

impl Shared {
    pub fn new(limit: u64) -> Shared {
        Shared {
            issued: AtomicU64::new(0),
            limit,
            stop: AtomicBool::new(false),
            live: Live::default(),
        }
    }

    fn claim(&self) -> Option<u64> {
        let n = self.issued.fetch_add(1, Relaxed);
        (n < self.limit).then_some(n)
    }
}

/// Fixed settings of one connection.
#[derive(Clone, Debug)]
pub struct Plan {
    pub conn: u32,
    pub pace: Pace,
    pub timeout: Duration,
    /// Start of the load (the rate schedule's time zero).
    pub start: Instant,
    /// End of the sending phase (`--duration`).
    pub stop_at: Instant,
    /// Rate mode: most requests in flight (further sends wait; their latency still counts
    /// from the schedule).
    pub max_in_flight: usize,
    /// First hop-by-hop and end-to-end ids (random per connection).
    pub first_hop_by_hop: u32,
    pub first_end_to_end: u32,
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Draining,
    Closing { deadline: Instant, hop_by_hop: u32 },
    Done,
}

/// A session in progress (session mode): its Session-Id, the step its request in flight is
/// (0 = the main template), and the host its follow-ups are bound to.
#[derive(Clone, Debug)]
struct Session {
    id: Bytes,
    step: usize,
    bound: Option<Bytes>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Client {
    plan: Plan,
    template: Arc<Template>,
    /// Session mode: the follow-up templates, in order (empty: no sessions).
    followups: Arc<Vec<Template>>,
    /// Session mode: the session of each request in flight, by hop-by-hop id.
    sessions: HashMap<u32, Session>,
    /// Session mode: follow-ups due (their previous step was answered), sent before new
    /// sessions.
    ready: VecDeque<Session>,
    node: Arc<LocalNode>,
    shared: Arc<Shared>,
    window: Window,
    state: State,
    /// Rate mode: index of this connection's next request in its share of the schedule.
    next_k: u64,
    /// A batch hit [`MAX_BATCH`] with more due: poll again at once.
    more_due: bool,
    end_to_end: u32,
    rng: u64,
    pub tally: Tally,
    /// Why the connection ended early, if it did.
    pub failure: Option<String>,
}

impl Client {
    pub fn new(
        plan: Plan,
        template: Arc<Template>,
        node: Arc<LocalNode>,
        shared: Arc<Shared>,
    ) -> Client {
        Client {
            followups: Arc::new(Vec::new()),
            sessions: HashMap::new(),
            ready: VecDeque::new(),
            window: Window::new(plan.first_hop_by_hop),
            end_to_end: plan.first_end_to_end,
            rng: plan.seed | 1,
            plan,
            template,
            node,
            shared,
            state: State::Running,
            next_k: 0,
            more_due: false,
            tally: Tally::default(),
            failure: None,
        }
    }

    /// Session mode: `followups` are sent after each successful answer (module docs).
    pub fn with_followups(mut self, followups: Arc<Vec<Template>>) -> Client {
        self.followups = followups;
        self
    }

    fn session_mode(&self) -> bool {
        !self.followups.is_empty()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.window.live()
    }

    /// Advances timers and writes what is due (requests, DPR) to `out`.
    pub fn poll(&mut self, now: Instant, out: &mut BytesMut) {
        self.more_due = false;
        if matches!(self.state, State::Running | State::Draining) {
            let expired = self.window.expire(now) as u64;
            if expired > 0 {
                self.tally.timeouts += expired;
                Live::add(&self.shared.live.timeouts, expired);
            }
        }
        if self.state == State::Running {
            // In rate mode the schedule itself ends at `stop_at` (send_due drains there), so
            // requests scheduled before it still go out after a late wake-up.
            let over = matches!(self.plan.pace, Pace::Concurrency(_)) && now >= self.plan.stop_at;
            if over || self.shared.stop.load(Relaxed) {
                self.state = State::Draining;
            } else {
                self.send_due(now, out);
            }
        }
        if self.state == State::Draining && !self.ready.is_empty() {
            self.send_followups(now, out, usize::MAX);
        }
        if self.state == State::Draining && self.window.live() == 0 && self.ready.is_empty() {
            self.close(now, out);
        }
        if let State::Closing { deadline, .. } = self.state {
            if now >= deadline {
                // No DPA: the run is over all the same; not worth failing it for.
                self.state = State::Done;
            }
        }
    }

    /// The schedule time of this connection's `k`-th request (rate mode).
    fn scheduled(&self, k: u64) -> Option<Instant> {
        match self.plan.pace {
            Pace::Rate {
                per_sec,
                stride,
                offset,
            } => {
                let i = k.saturating_mul(stride).saturating_add(offset);
                let secs = i as f64 / per_sec;
                // Past ~292 years from now Duration would overflow; such a time is never due.
                let d = Duration::try_from_secs_f64(secs).ok()?;
                self.plan.start.checked_add(d)
            }
            Pace::Concurrency(_) => None,
        }
    }

    /// Session mode: sends queued follow-ups while fewer than `limit` are in flight.
    fn send_followups(&mut self, now: Instant, out: &mut BytesMut, limit: usize) -> usize {
        let mut sent = 0;
        while self.window.live() < limit && sent < MAX_BATCH {
            let Some(sess) = self.ready.pop_front() else {
                break;
            };
            let followups = self.followups.clone();
            let Some(t) = followups.get(sess.step - 1) else {
                continue;
            };
            let hop_by_hop = self.window.push(Slot {
                intended: now,
                sent: now,
                deadline: now + self.plan.timeout,
            });
            self.end_to_end = self.end_to_end.wrapping_add(1);
            let subst = Subst {
                counter: self.tally.followups_sent,
                random: self.random(),
                conn: self.plan.conn,
            };
            let mut buf = BytesMut::new();
            t.write(&mut buf, hop_by_hop, self.end_to_end, &subst);
            match bind_to_session(&buf, &sess.id, sess.bound.as_deref()) {
                Some(b) => out.extend_from_slice(&b),
                None => {
                    self.window.take(hop_by_hop);
                    continue;
                }
            }
            self.sessions.insert(hop_by_hop, sess);
            self.tally.followups_sent += 1;
            sent += 1;
        }
        if sent > 0 {
            self.tally.sent += sent as u64;
            Live::add(&self.shared.live.sent, sent as u64);
        }
        sent
    }

    fn send_due(&mut self, now: Instant, out: &mut BytesMut) {
        let mut sent = 0usize;
        if self.session_mode() && !self.ready.is_empty() {
            let limit = match self.plan.pace {
                Pace::Concurrency(k) => k,
                Pace::Rate { .. } => self.plan.max_in_flight,
            };
            // Counted in `tally.sent` there; here only for the batch limit.
            let followups = self.send_followups(now, out, limit);
            if followups >= MAX_BATCH {
                self.more_due = true;
                return;
            }
        }
        loop {
            if sent == MAX_BATCH {
                self.more_due = true;
                break;
            }
            let intended = match self.plan.pace {
                Pace::Concurrency(k) => {
                    if self.window.live() >= k {
                        break;
                    }
                    now
                }
                Pace::Rate { .. } => {
                    let Some(t) = self.scheduled(self.next_k) else {
                        self.state = State::Draining;
                        break;
                    };
                    if t >= self.plan.stop_at {
                        self.state = State::Draining;
                        break;
                    }
                    if t > now || self.window.span() >= self.plan.max_in_flight {
                        break;
                    }
                    t
                }
            };
            let Some(counter) = self.shared.claim() else {
                self.state = State::Draining;
                break;
            };
            self.next_k += 1;
            let hop_by_hop = self.window.push(Slot {
                intended,
                sent: now,
                deadline: now + self.plan.timeout,
            });
            self.end_to_end = self.end_to_end.wrapping_add(1);
            let subst = Subst {
                counter,
                random: self.random(),
                conn: self.plan.conn,
            };
            let at = out.len();
            self.template
                .write(out, hop_by_hop, self.end_to_end, &subst);
            if self.session_mode() {
                if let Some(id) = session_id(&out[at..]) {
                    self.tally.sessions += 1;
                    let sess = Session {
                        id,
                        step: 0,
                        bound: None,
                    };
                    self.sessions.insert(hop_by_hop, sess);
                }
            }
            sent += 1;
        }
        if sent > 0 {
            self.tally.sent += sent as u64;
            Live::add(&self.shared.live.sent, sent as u64);
        }
    }

    /// xorshift64*: a few cycles per request, plenty for `{{random}}`.
    fn random(&mut self) -> u32 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    fn close(&mut self, now: Instant, out: &mut BytesMut) {
        let hop_by_hop = self.window.push(Slot {
            intended: now,
            sent: now,
            deadline: now + DPA_WAIT,
        });
        // The DPR is not a bench request: keep it out of the window's accounting.
        self.window.take(hop_by_hop);
        self.end_to_end = self.end_to_end.wrapping_add(1);
        match caps::dpr(
            &self.node,
            hop_by_hop,
            self.end_to_end,
            caps::DISCONNECT_DO_NOT_WANT_TO_TALK_TO_YOU,
        ) {
            Ok(b) => {
                out.extend_from_slice(&b);
                self.state = State::Closing {
                    deadline: now + DPA_WAIT,
                    hop_by_hop,
                };
            }
            Err(_) => self.state = State::Done,
        }
    }

    /// When [`poll`](Self::poll) next has something to do (`None`: only on input).
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        if self.more_due {
            return Some(now);
        }
        let deadline = self.window.next_deadline();
        let min = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match self.state {
            State::Running => {
                let mut t = min(deadline, Some(self.plan.stop_at));
                if matches!(self.plan.pace, Pace::Rate { .. })
                    && self.window.span() < self.plan.max_in_flight
                {
                    t = min(t, self.scheduled(self.next_k));
                }
                t
            }
            State::Draining => deadline,
            State::Closing { deadline, .. } => Some(deadline),
            State::Done => None,
        }
    }

    /// Handles one framed message from the peer; answers to the peer's requests go to `out`.
    /// An error means the peer sent something that is not a Diameter message: the caller
    /// closes the connection.
    pub fn on_frame(
        &mut self,
        now: Instant,
        frame: Bytes,
        out: &mut BytesMut,
    ) -> Result<(), String> {
        let m = Message::decode(frame)
            .map_err(|e| format!("undecodable message from the peer: {e}"))?;
        if m.is_request() {
            let answer = match m.header.code {
                cmd::DWR => {
                    self.tally.dwr_answered += 1;
                    caps::dwa(&self.node, &m)
                }
                cmd::DPR => {
                    let cause = caps::disconnect_cause(&m);
                    self.end(Some(format!(
                        "the peer sent DPR (Disconnect-Cause {})",
                        cause.map_or("absent".into(), |c| c.to_string())
                    )));
                    caps::dpa(&self.node, &m)
                }
                _ => caps::unsupported(&self.node, &m),
            };
            let answer = answer.map_err(|e| format!("encoding an answer: {e}"))?;
            out.extend_from_slice(&answer);
            return Ok(());
        }
        if let State::Closing { hop_by_hop, .. } = self.state {
            if m.header.code == cmd::DPR && m.header.hop_by_hop == hop_by_hop {
                self.state = State::Done;
                return Ok(());
            }
        }
        match self.window.take(m.header.hop_by_hop) {
            Some(slot) => {
                let outcome = caps::outcome(&m);
                let latency = now.saturating_duration_since(slot.intended);
                self.tally.record_answer(outcome, latency, now);
                self.tally
                    .record_from_send(now.saturating_duration_since(slot.sent));
                Live::add(&self.shared.live.answered, 1);
                let sess = self.sessions.remove(&m.header.hop_by_hop);
                if !outcome.is_success() {
                    Live::add(&self.shared.live.errors, 1);
                    // Who answered the error (behind a DRA: the server, the agent, or
                    // another server the agent retried on).
                    let host = m
                        .find_ref(super::template::code::ORIGIN_HOST, 0)
                        .map_or(&b""[..], |a| a.data);
                    let followup = sess.as_ref().is_some_and(|s| s.step > 0);
                    self.tally.count_error_origin(outcome, host, followup);
                }
                if let Some(sess) = sess {
                    self.session_answer(sess, &m, outcome);
                }
            }
            None => self.tally.unmatched += 1,
        }
        Ok(())
    }

    /// Session mode: accounts an answer to a session's request and queues its next step.
    fn session_answer(&mut self, mut sess: Session, answer: &Message, outcome: Outcome) {
        let success = outcome.is_success();
        let origin = answer
            .find_ref(super::template::code::ORIGIN_HOST, 0)
            .map(|a| Bytes::copy_from_slice(a.data));
        if let Some(o) = &origin {
            self.tally.count_origin(o);
        }
        if sess.step > 0 {
            if !success {
                self.tally.followup_errors += 1;
                self.tally.count_followup_error(outcome);
            }
            if success && origin.is_some() && origin != sess.bound {
                self.tally.wrong_host += 1;
            }
        }
        if success && sess.step < self.followups.len() {
            if sess.bound.is_none() {
                sess.bound = origin;
            }
            sess.step += 1;
            self.ready.push_back(sess);
        } else if success {
            self.tally.sessions_completed += 1;
        }
    }

    /// The connection is gone (or must go): requests in flight are unanswered; `why` is
    /// recorded as a failure unless the run had reached its DPR already.
    pub fn end(&mut self, why: Option<String>) {
        self.tally.unanswered += self.window.clear() as u64;
        self.sessions.clear();
        self.ready.clear();
        let expected = matches!(self.state, State::Closing { .. } | State::Done);
        if !expected && self.failure.is_none() {
            self.failure = why;
        }
        self.state = State::Done;
    }
}

/// The Session-Id of an encoded request.
fn session_id(request: &[u8]) -> Option<Bytes> {
    let m = Message::decode(Bytes::copy_from_slice(request)).ok()?;
    m.find_ref(super::template::code::SESSION_ID, 0)
        .map(|a| Bytes::copy_from_slice(a.data))
}

/// A rendered follow-up request re-addressed to its session: the Session-Id replaced by
/// `session` (and put first, RFC 6733 §8.8), the Destination-Host by `bound` (added when the
/// template has none); every other AVP as rendered.
fn bind_to_session(rendered: &[u8], session: &[u8], bound: Option<&[u8]>) -> Option<Bytes> {
    use super::template::code::{DESTINATION_HOST, SESSION_ID};
    use dmproto::avp::AvpFlags;
    let m = Message::decode(Bytes::copy_from_slice(rendered)).ok()?;
    let mut w = dmproto::MessageWriter::new(m.header);
    w.avp(SESSION_ID, AvpFlags::M, 0, session);
    let mut has_dh = false;
    for a in m.avp_refs() {
        let a = a.ok()?;
        match (a.code, a.vendor) {
            (SESSION_ID, 0) => {}
            (DESTINATION_HOST, 0) => {
                has_dh = true;
                match bound {
                    Some(h) => w.avp(DESTINATION_HOST, AvpFlags::M, 0, h),
                    None => w.raw(a.raw),
                };
            }
            _ => {
                w.raw(a.raw);
            }
        }
    }
    if let (false, Some(h)) = (has_dh, bound) {
        w.avp(DESTINATION_HOST, AvpFlags::M, 0, h);
    }
    w.finish().ok()
}

#[cfg(test)]
mod tests;
