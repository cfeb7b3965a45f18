//! A small synchronous reference bridge that answers everything, for tests
//! of the worker side and of the C library without the real bridge (and an
//! executable description of how a driver uses [`crate::bridge`]).
//!
//! Outgoing requests from workers are answered by command code:
//!
//! | cmd_code | answer |
//! |----------|--------|
//! | [`CMD_NEVER_ANSWER`] | none until `timeout_ms`, then class -2 (timeout) |
//! | [`CMD_ERROR_ANSWER`] | class -1, Result-Code 5012, the AVPs echoed |
//! | [`CMD_INJECT`] | dispatches `app_id` incoming requests for the command named in `avps_json` as `[{"inject":"PPR"}]`, then class 1 with `[{"sent":n},{"busy":n},{"unhandled":n},{"no_worker":n}]` |
//! | anything else | class 1, Result-Code 2001, the AVPs echoed |
//!
//! A reply-to request ([`crate::record::OutgoingRequest::reply_to`]) is answered the same
//! way, to the attachment its address names, if it is still attached when the request is
//! taken and owed fewer than `max_in_flight` outcomes ([`Bridge::accept_reply_to`]; else
//! refused: counted in [`EchoStats::reply_to_refused`], not sent, the receiver told with a
//! short not-sent outcome if it is still there) and when the outcome is ready (else dropped:
//! [`EchoStats::reply_to_dropped`]).
//!
//! Injected requests carry `sess_id` `ref;<n>`; a reply whose JSON contains
//! its request's `sess_id` counts as matched in [`EchoStats`].

use crate::bridge::{
    AnswerTo, Bridge, BridgeConfig, BridgeEvent, Dispatch, RefusalCause, ReplyToCheck,
    SeamCounters, SlotId,
};
use crate::error::Result;
use crate::record::{class, Answer, IncomingRequest, ReplyStatus};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Held until its timeout, then answered with class -2.
pub const CMD_NEVER_ANSWER: u32 = 999_001;
/// Answered with class -1 / 5012.
pub const CMD_ERROR_ANSWER: u32 = 999_002;
/// Makes the bridge dispatch incoming requests (see module docs).
pub const CMD_INJECT: u32 = 999_003;

/// What the reference bridge saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Workers that completed registration.
    pub attached: u64,
    /// The reason text of every refused registration, in order (what the worker's
    /// `dmb_last_error()` shows).
    pub refused: Vec<String>,
    /// (cause, pid, uid) of every refusal, in order.
    pub refusals: Vec<(RefusalCause, u32, u32)>,
    /// The bridge's own counters, as of the last poll.
    pub seam: SeamCounters,
    /// Outgoing requests answered (echo, 5012 or inject), timeouts excluded.
    pub requests_answered: u64,
    /// [`CMD_NEVER_ANSWER`] requests answered with class -2 when their timeout passed.
    pub timeouts: u64,
    /// Incoming requests dispatched to workers by [`CMD_INJECT`].
    pub injected: u64,
    /// Replies with status Ok whose JSON contains their request's `sess_id`: the reply reached the
    /// right request.
    pub replies_matched: u64,
    /// Replies with status Ok that did not contain their request's `sess_id` (a mix-up between
    /// requests).
    pub replies_mismatched: u64,
    /// Replies with status Error (the script asked for an error answer).
    pub replies_error: u64,
    /// The error text of every Failed reply (the script's reply could not be used).
    pub replies_failed: Vec<String>,
    /// Every bridge warning (e.g. a malformed record), in order.
    pub warnings: Vec<String>,
    /// (pid, worker name, unreplied tokens, unanswered handles) per gone worker.
    pub gone: Vec<(u32, String, Vec<u64>, Vec<u64>)>,
    /// Reply-to requests refused when taken: their address named no live attachment, or one
    /// owed `max_in_flight` outcomes already.
    pub reply_to_refused: u64,
    /// Reply-to outcomes dropped: the attachment their address named left meanwhile.
    pub reply_to_dropped: u64,
    /// Tokens dispatched, by worker pid (to compare with `gone`).
    pub dispatched_to: HashMap<u32, Vec<u64>>,
}

/// The reference bridge's state; drive it with [`EchoBridge::poll_once`] or
/// run it on a thread with [`EchoBridge::spawn`].
pub struct EchoBridge {
    bridge: Bridge,
    watched: Vec<SlotId>,
    held: Vec<(Instant, AnswerTo, u64)>,
    sess_of: HashMap<u64, String>,
    seq: u64,
    stats: Arc<Mutex<EchoStats>>,
    events: Vec<BridgeEvent>,
    verbose: bool,
}

impl EchoBridge {
    /// Binds the control socket (segments are made per worker).
    pub fn new(cfg: BridgeConfig) -> Result<EchoBridge> {
        Ok(EchoBridge {
            bridge: Bridge::create(cfg)?,
            watched: Vec::new(),
            held: Vec::new(),
            sess_of: HashMap::new(),
            seq: 0,
            stats: Arc::new(Mutex::new(EchoStats::default())),
            events: Vec::new(),
            verbose: false,
        })
    }

    /// Print every event on stdout (the example binary does).
    pub fn set_verbose(&mut self, v: bool) {
        self.verbose = v;
    }

    /// Shared view of the counters.
    pub fn stats(&self) -> Arc<Mutex<EchoStats>> {
        self.stats.clone()
    }

    /// The underlying bridge.
    pub fn bridge(&mut self) -> &mut Bridge {
        &mut self.bridge
    }

    /// Waits up to `max_wait` for activity and handles it.
    pub fn poll_once(&mut self, max_wait: Duration) -> Result<()> {
        let now = Instant::now();
        let mut wait = max_wait;
        for (at, _, _) in &self.held {
            wait = wait.min(at.saturating_duration_since(now));
        }
        let mut fds = vec![libc::pollfd {
            fd: self.bridge.listener_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        self.watched.retain(|s| self.bridge.worker_fd(*s).is_some());
        for s in &self.watched {
            if let Some(fd) = self.bridge.worker_fd(*s) {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        // SAFETY: fds is a valid array of pollfd of the given length.
        let rc = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis() as libc::c_int,
            )
        };
        if rc > 0 {
            if fds.first().is_some_and(|p| p.revents != 0) {
                let new = self.bridge.accept_all(&mut self.events)?;
                self.watched.extend(new);
            }
            let ready: Vec<SlotId> = fds
                .iter()
                .skip(1)
                .zip(self.watched.iter())
                .filter(|(p, _)| p.revents != 0)
                .map(|(_, s)| *s)
                .collect();
            for s in ready {
                while self.bridge.service(s, &mut self.events) {}
            }
        }
        self.expire();
        self.bridge
            .expire_handshakes(Instant::now(), Duration::from_secs(2), &mut self.events);
        // The counters first: whoever sees an event's effect in the stats (a refusal listed)
        // then also sees the counters that count it (a test read the two in between).
        let seam = self.bridge.counters();
        self.lock().seam = seam;
        let events = std::mem::take(&mut self.events);
        for ev in events {
            self.handle(ev);
        }
        Ok(())
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(at, _, _)| *at <= now);
        self.held = keep;
        for (_, slot, handle) in due {
            let a = Answer {
                handle,
                class: class::TIMEOUT,
                result_code: 0,
                // (the time it was held is not measured here)
                bridge_ns: 0,
                peer_ns: 0,
                avps_json: "",
                error: "timeout (reference bridge)",
                reply_to: None,
            };
            if self.push(slot, &a).is_ok() {
                self.lock().timeouts += 1;
            }
        }
    }

    /// `a` to its requester: the sender, or the attachment a reply-to address names (a
    /// reply-to outcome whose attachment left is counted as dropped).
    fn push(&mut self, to: AnswerTo, a: &Answer<'_>) -> Result<()> {
        let r = self.bridge.push_outcome(to, a);
        if matches!(to, AnswerTo::ReplyTo(_)) && matches!(r, Err(crate::Error::Detached(_))) {
            self.lock().reply_to_dropped += 1;
        }
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EchoStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&mut self, ev: BridgeEvent) {
        if self.verbose {
            println!("{ev:?}");
        }
        match ev {
            BridgeEvent::WorkerAttached { .. } => self.lock().attached += 1,
            BridgeEvent::WorkerRefused {
                reason,
                cause,
                pid,
                uid,
                ..
            } => {
                let mut st = self.lock();
                st.refused.push(reason);
                st.refusals.push((cause, pid, uid));
            }
            BridgeEvent::Handles { .. } => {}
            BridgeEvent::Warning { message, .. } => self.lock().warnings.push(message),
            BridgeEvent::Reply {
                token,
                status,
                avps: avps_json,
                error,
                ..
            } => {
                let sess = self.sess_of.remove(&token).unwrap_or_default();
                let mut st = self.lock();
                match status {
                    ReplyStatus::Failed => st.replies_failed.push(error),
                    ReplyStatus::Error => st.replies_error += 1,
                    ReplyStatus::Ok => {
                        let text = String::from_utf8_lossy(&avps_json);
                        if !sess.is_empty() && text.contains(&sess) {
                            st.replies_matched += 1;
                        } else {
                            st.replies_mismatched += 1;
                        }
                    }
                }
            }
            BridgeEvent::WorkerGone {
                pid,
                name,
                tokens,
                handles,
                ..
            } => {
                for t in &tokens {
                    self.sess_of.remove(t);
                }
                self.held.retain(|(_, to, h)| {
                    !(matches!(to, AnswerTo::Sender(_)) && handles.contains(h))
                });
                self.lock().gone.push((pid, name, tokens, handles));
            }
            BridgeEvent::Request {
                slot,
                reply_to,
                handle,
                app_id,
                cmd_code,
                timeout_ms,
                avps_json,
            } => {
                if let Some(to) = reply_to {
                    match self.bridge.accept_reply_to(to.address) {
                        ReplyToCheck::Accepted(_) => {}
                        ReplyToCheck::Gone => {
                            self.lock().reply_to_refused += 1;
                            return;
                        }
                        // Owed too many outcomes: not sent; a short not-sent outcome while
                        // its queue is short (dropped beyond), as the real driver does.
                        ReplyToCheck::Full { .. } => {
                            self.lock().reply_to_refused += 1;
                            let a = Answer::not_sent(
                                handle,
                                "not sent: the receiver is owed too many outcomes",
                            );
                            let _ = self.bridge.push_reply_to_refusal(to, &a);
                            return;
                        }
                    }
                }
                let to = AnswerTo::of(slot, reply_to);
                self.request(to, handle, app_id, cmd_code, timeout_ms, &avps_json)
            }
        }
    }

    fn request(
        &mut self,
        answer_to: AnswerTo,
        handle: u64,
        app_id: u32,
        cmd_code: u32,
        timeout_ms: u32,
        json: &[u8],
    ) {
        // The reference's own round trip, as the real bridge puts it in the answer record.
        let taken = Instant::now();
        let text = String::from_utf8_lossy(json).into_owned();
        let answer = match cmd_code {
            CMD_NEVER_ANSWER => {
                let at = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
                self.held.push((at, answer_to, handle));
                return;
            }
            CMD_ERROR_ANSWER => (class::ERROR_ANSWER, 5012, text),
            CMD_INJECT => {
                let name = text
                    .split_once("\"inject\":\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map_or_else(String::new, |(n, _)| n.to_owned());
                let (mut sent, mut busy, mut unhandled, mut none) = (0, 0, 0, 0);
                for _ in 0..app_id.min(100_000) {
                    self.seq += 1;
                    let sess = format!("ref;{}", self.seq);
                    let avps = format!(
                        "[{{\"Session-Id\":\"{sess}\"}},{{\"Origin-Host\":\"hss.reference\"}}]"
                    );
                    let req = IncomingRequest {
                        token: 0,
                        app_id: 16_777_216,
                        cmd_code: 305,
                        event: "",
                        sess_id: &sess,
                        cmd_name: "Push-Profile-Request",
                        origin_host: "hss.reference",
                        origin_realm: "reference",
                        avps_json: &avps,
                    };
                    match self.bridge.dispatch(&name, &req) {
                        Dispatch::Sent {
                            slot: to, token, ..
                        } => {
                            sent += 1;
                            self.sess_of.insert(token, sess);
                            let pid = self
                                .bridge
                                .workers()
                                .iter()
                                .find(|w| w.slot == to)
                                .map_or(0, |w| w.pid);
                            self.lock()
                                .dispatched_to
                                .entry(pid)
                                .or_default()
                                .push(token);
                        }
                        Dispatch::Busy | Dispatch::TooBig { .. } => busy += 1,
                        Dispatch::Unhandled => unhandled += 1,
                        Dispatch::NoWorker => none += 1,
                    }
                }
                self.lock().injected += sent;
                let body = format!("[{{\"sent\":{sent}}},{{\"busy\":{busy}}},{{\"unhandled\":{unhandled}}},{{\"no_worker\":{none}}}]");
                (class::SUCCESS, 2001, body)
            }
            _ => (class::SUCCESS, 2001, text),
        };
        let bridge_ns = u64::try_from(taken.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // The reference plays the peer: its whole time on an echo or error answer is the
        // "wait for the peer" (at least 1 ns, so that an answered request reads as one);
        // the inject command's answer is its own, as a local answer of the real bridge.
        let peer_ns = if cmd_code == CMD_INJECT {
            0
        } else {
            bridge_ns.max(1)
        };
        let a = Answer {
            handle,
            class: answer.0,
            result_code: answer.1,
            bridge_ns,
            peer_ns,
            avps_json: &answer.2,
            error: "",
            reply_to: None,
        };
        let ok = match self.push(answer_to, &a) {
            Err(crate::Error::TooBig { .. }) => {
                let short = Answer {
                    bridge_ns,
                    ..Answer::not_sent(handle, "answer too large")
                };
                self.push(answer_to, &short).is_ok()
            }
            r => r.is_ok(),
        };
        if ok {
            self.lock().requests_answered += 1;
        }
    }

    /// Runs the bridge on a thread until the handle is stopped or dropped.
    pub fn spawn(cfg: BridgeConfig) -> Result<EchoHandle> {
        let mut me = EchoBridge::new(cfg)?;
        let stats = me.stats();
        let script_times = me.bridge().script_times();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("echo-bridge".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    if let Err(e) = me.poll_once(Duration::from_millis(20)) {
                        eprintln!("echo bridge: {e}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
            .map_err(|e| crate::Error::io("spawning the echo bridge thread", e))?;
        Ok(EchoHandle {
            stop,
            thread: Some(thread),
            stats,
            script_times,
        })
    }
}

/// A running [`EchoBridge`]; stopping it (or dropping the handle) drops the
/// bridge, which closes every worker connection and removes its files.
pub struct EchoHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Mutex<EchoStats>>,
    script_times: Arc<crate::times_board::ScriptTimesBoard>,
}

impl EchoHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> EchoStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The workers' request histograms as the bridge sums them ([`crate::times`]).
    pub fn script_times(&self) -> crate::times::ScriptTimesCounts {
        self.script_times.sum()
    }

    /// Stops the bridge and waits for its thread.
    pub fn stop(mut self) -> EchoStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EchoHandle {
    fn drop(&mut self) {
        self.halt();
    }
}
