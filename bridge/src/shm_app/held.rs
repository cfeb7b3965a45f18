//! Incoming requests handed to workers and not replied yet, with their reply deadlines.
//!
//! Plain data (time passed in), so the exactly-once rules are tested without rings or
//! runtimes: a request leaves this table exactly once — replied ([`Held::take`]), given up
//! at its deadline ([`Held::expire`]) or released because its worker died
//! ([`Held::take_all`]) — and whatever leaves it is answered by whoever took it. A reply that
//! finds nothing here is late (or a duplicate) and must be dropped.
//!
//! A request the node answered itself while its worker still held it (5012 at the drain
//! before a DPR, RFC 6733 §5.4) is *withdrawn* ([`Held::withdraw`]): its responder leaves, its
//! entry stays until its deadline so that the worker's reply, when it comes, is known for what
//! it is — late, not an answer ([`Found::Withdrawn`]) — and no reply timeout is counted for it.
//!
//! Every request shares one reply timeout, so arrival order is deadline order and a queue
//! suffices (no heap): the FIFO of a [`DeadlineQueue`], its ordered set never used. Replied
//! requests leave their queue entry behind; [`Held::next_deadline`] drops such entries from
//! the front, so the timer is armed only for a request that still waits (under steady load it
//! would otherwise fire once per request) and the queue is only as long as the span since the
//! oldest outstanding request (and the queue drops them all rather than grow while they are
//! more than half of it).

use dmdeadline::DeadlineQueue;
use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

/// The table; `R` is what answers the request (the node's `Responder`).
#[derive(Debug)]
pub struct Held<R> {
    /// Keyed by the bridge's own tokens (`token_tag | seq`, chosen by no peer): FxHash, not
    /// SipHash (an insert and a remove per request). `None`: withdrawn.
    by_token: FxHashMap<u64, (Option<R>, u32)>,
    /// Reply deadlines by token, in arrival order.
    deadlines: DeadlineQueue<u64>,
    /// Entries of `by_token` that are withdrawn (no responder).
    withdrawn: usize,
    timeout: Duration,
}

/// What a worker's reply found in the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<R> {
    /// The request still waits: its responder, and the worker's slot.
    Held(R, u32),
    /// The node already answered the request itself ([`Held::withdraw`]): the reply is late.
    Withdrawn,
}

impl<R> Held<R> {
    /// An empty table whose requests may wait `timeout` for their reply.
    pub fn new(timeout: Duration) -> Held<R> {
        Held {
            by_token: FxHashMap::default(),
            deadlines: DeadlineQueue::new(),
            withdrawn: 0,
            timeout,
        }
    }

    /// The one reply timeout every request shares (`[app] reply_timeout`); the reason arrival order
    /// is deadline order.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Requests waiting for their reply (withdrawn ones not counted).
    pub fn len(&self) -> usize {
        self.by_token.len() - self.withdrawn
    }

    /// No request waits for a reply.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A request handed to the worker in `slot` under `token` at `now`.
    pub fn insert(&mut self, token: u64, slot: u32, responder: R, now: Instant) {
        match self.by_token.insert(token, (Some(responder), slot)) {
            None => {
                let by_token = &self.by_token;
                self.deadlines
                    .push(now + self.timeout, token, by_token.len(), |_, t| {
                        by_token.contains_key(&t)
                    });
            }
            Some((None, _)) => self.withdrawn -= 1,
            Some((Some(_), _)) => {}
        }
    }

    /// Removes `token`'s entry, keeping the withdrawn count right.
    fn remove(&mut self, token: u64) -> Option<(Option<R>, u32)> {
        let e = self.by_token.remove(&token);
        if matches!(e, Some((None, _))) {
            self.withdrawn -= 1;
        }
        e
    }

    /// What the reply to `token` finds: the request waiting (its reply arrived in time), or
    /// withdrawn; `None` if it is not here (after its deadline, a duplicate, never given).
    pub fn take(&mut self, token: u64) -> Option<Found<R>> {
        self.remove(token).map(|(r, slot)| match r {
            Some(r) => Found::Held(r, slot),
            None => Found::Withdrawn,
        })
    }

    /// The requests among `tokens` that still wait (their worker is gone); withdrawn ones
    /// leave without a responder.
    pub fn take_all(&mut self, tokens: &[u64]) -> Vec<(u64, R)> {
        tokens
            .iter()
            .filter_map(|t| self.remove(*t).and_then(|(r, _)| Some((*t, r?))))
            .collect()
    }

    /// The requests whose deadline is at or before `now`: (token, slot, responder). Withdrawn
    /// ones leave silently: their answer was given.
    pub fn expire(&mut self, now: Instant) -> Vec<(u64, u32, R)> {
        let mut out = Vec::new();
        while let Some((_, token)) = self.deadlines.pop_due(now) {
            if let Some((Some(r), slot)) = self.remove(token) {
                out.push((token, slot, r));
            }
        }
        out
    }

    /// Withdraws the waiting requests whose responder `pick` chooses (the node answered them
    /// itself): their responders are returned, and a reply that comes for one before its
    /// deadline finds [`Found::Withdrawn`]. A scan of the table: called once per DPR, not per
    /// request.
    pub fn withdraw(&mut self, mut pick: impl FnMut(&R) -> bool) -> Vec<R> {
        let mut out = Vec::new();
        for (r, _) in self.by_token.values_mut() {
            if r.as_ref().is_some_and(&mut pick) {
                out.extend(r.take());
            }
        }
        self.withdrawn += out.len();
        out
    }

    /// The earliest deadline of a request that still waits.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        let by_token = &self.by_token;
        self.deadlines
            .first(|_, t| by_token.contains_key(&t))
            .map(|(at, _)| at)
    }

    /// Queue entries kept (for tests: bounded by the outstanding span).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.deadlines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn each_request_leaves_exactly_once() {
        let t0 = Instant::now();
        let mut h = Held::new(T);
        h.insert(1, 0, "a", t0);
        h.insert(2, 0, "b", t0);
        h.insert(3, 1, "c", t0);
        assert_eq!(h.take(1), Some(Found::Held("a", 0)));
        assert_eq!(h.take(1), None, "a second reply finds nothing");
        assert_eq!(h.take_all(&[3, 99]), vec![(3, "c")]);
        let expired = h.expire(t0 + T);
        assert_eq!(expired, vec![(2, 0, "b")]);
        assert!(h.expire(t0 + T + T).is_empty());
        assert_eq!(h.take(2), None, "a late reply finds nothing");
        assert!(h.is_empty());
    }

    #[test]
    fn deadlines_follow_arrival_and_skip_replied_requests() {
        let t0 = Instant::now();
        let mut h = Held::new(T);
        for i in 0..100u64 {
            h.insert(i, 0, i, t0 + Duration::from_millis(i));
        }
        for i in 0..99u64 {
            assert!(h.take(i).is_some());
        }
        // Only request 99 waits: the timer is for it, and the replied entries are gone.
        assert_eq!(h.next_deadline(), Some(t0 + Duration::from_millis(99) + T));
        assert_eq!(h.queued(), 1);
        assert!(h.expire(t0 + T).is_empty());
        assert_eq!(h.expire(t0 + Duration::from_millis(99) + T).len(), 1);
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn a_withdrawn_request_finds_its_late_reply_and_never_times_out() {
        let t0 = Instant::now();
        let mut h = Held::new(T);
        h.insert(1, 0, "a", t0);
        h.insert(2, 0, "b", t0);
        h.insert(3, 1, "c", t0);
        let mut out = h.withdraw(|r| *r != "b");
        out.sort_unstable();
        assert_eq!(out, vec!["a", "c"]);
        assert!(h.withdraw(|_| true) == vec!["b"], "each is withdrawn once");
        assert_eq!(h.len(), 0, "none waits for a reply");
        assert!(h.is_empty());
        assert_eq!(h.take(1), Some(Found::Withdrawn), "the late reply knows it");
        assert_eq!(h.take(1), None, "a second reply finds nothing");
        assert!(
            h.take_all(&[2]).is_empty(),
            "a worker gone: nothing to answer"
        );
        assert!(h.expire(t0 + T).is_empty(), "no reply timeout for them");
        assert_eq!(h.take(3), None, "after its deadline the entry is gone");
        assert_eq!(h.withdrawn, 0);
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn a_token_inserted_twice_keeps_one_deadline() {
        let t0 = Instant::now();
        let mut h = Held::new(T);
        h.insert(7, 0, 'x', t0);
        h.insert(7, 1, 'y', t0);
        assert_eq!(h.len(), 1);
        assert_eq!(h.expire(t0 + T), vec![(7, 1, 'y')]);
    }
}
