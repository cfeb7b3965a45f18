//! The in-flight window of one connection: requests keyed by hop-by-hop id, in send order.
//!
//! The bench allocates hop-by-hop ids sequentially per connection, and every request gets the
//! same timeout, so both the ids and the deadlines of in-flight requests increase from the
//! front of a queue to its back. That makes a `VecDeque` indexed by `id - base` a complete
//! pending table: matching an answer is one subtraction, expiring timeouts pops from the front,
//! and the memory is reused once the window has reached its working size (no per-request
//! allocation, no hashing). Answers out of order leave holes that are trimmed when they reach
//! the front; a hole never outlives the timeout of the request in front of it.

use std::collections::VecDeque;
use std::time::Instant;

/// One request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// When the request was meant to go out (the schedule's time in rate mode, the actual
    /// send time in concurrency mode): latency is measured from here, so a client that falls
    /// behind its schedule shows it in the latency instead of hiding it (coordinated omission).
    pub intended: Instant,
    /// When the request was actually written out. In rate mode requests leave at the pacer's
    /// ticks (tens of µs, `pacer.rs`; tokio's 1 ms timer at low rates), so latency from
    /// `intended` includes up to one tick's wait; latency from here is the server's share
    /// (and the client's own reading) alone.
    pub sent: Instant,
    /// When the request counts as timed out.
    pub deadline: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct Window {
    /// Hop-by-hop id of `slots[0]`.
    base: u32,
    slots: VecDeque<Option<Slot>>,
    live: usize,
}

impl Window {
    /// An empty window whose first request gets hop-by-hop id `first`.
    pub fn new(first: u32) -> Window {
        Window {
            base: first,
            slots: VecDeque::new(),
            live: 0,
        }
    }

    /// Requests in flight.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Slots held, holes included (bounded by what was sent within one timeout).
    pub fn span(&self) -> usize {
        self.slots.len()
    }

    /// Registers a request and returns its hop-by-hop id.
    pub fn push(&mut self, slot: Slot) -> u32 {
        let id = self.base.wrapping_add(self.slots.len() as u32);
        self.slots.push_back(Some(slot));
        self.live += 1;
        id
    }

    /// Removes the request with this hop-by-hop id; `None` if it is not in flight (already
    /// answered, timed out, or never sent).
    pub fn take(&mut self, hop_by_hop: u32) -> Option<Slot> {
        let idx = hop_by_hop.wrapping_sub(self.base) as usize;
        let slot = self.slots.get_mut(idx)?.take()?;
        self.live -= 1;
        self.trim();
        Some(slot)
    }

    /// Removes every request whose deadline is at or before `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(Some(s)) = self.slots.front() {
            if s.deadline > now {
                break;
            }
            self.pop_front();
            self.live -= 1;
            n += 1;
            self.trim();
        }
        n
    }

    /// The earliest deadline in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.front().copied().flatten().map(|s| s.deadline)
    }

    /// Forgets every request in flight (the connection is gone); returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.live;
        self.base = self.base.wrapping_add(self.slots.len() as u32);
        self.slots.clear();
        self.live = 0;
        n
    }

    fn pop_front(&mut self) {
        if self.slots.pop_front().is_some() {
            self.base = self.base.wrapping_add(1);
        }
    }

    /// Drops answered holes at the front, so the front is always a live request.
    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slot(t0: Instant, ms: u64) -> Slot {
        Slot {
            intended: t0 + Duration::from_millis(ms),
            sent: t0 + Duration::from_millis(ms),
            deadline: t0 + Duration::from_millis(ms + 100),
        }
    }

    #[test]
    fn ids_are_sequential_and_answers_match() {
        let t0 = Instant::now();
        let mut w = Window::new(7);
        let a = w.push(slot(t0, 0));
        let b = w.push(slot(t0, 1));
        assert_eq!((a, b), (7, 8));
        assert_eq!(w.take(b), Some(slot(t0, 1)));
        assert_eq!(w.take(b), None, "answered twice");
        assert_eq!(w.take(99), None, "never sent");
        assert_eq!(w.live(), 1);
        assert_eq!(w.span(), 2, "hole kept behind the live front");
        assert_eq!(w.take(a), Some(slot(t0, 0)));
        assert_eq!((w.live(), w.span()), (0, 0));
        assert_eq!(w.push(slot(t0, 2)), 9);
    }

    #[test]
    fn ids_wrap_around() {
        let t0 = Instant::now();
        let mut w = Window::new(u32::MAX);
        let a = w.push(slot(t0, 0));
        let b = w.push(slot(t0, 1));
        assert_eq!((a, b), (u32::MAX, 0));
        assert!(w.take(0).is_some());
        assert!(w.take(u32::MAX).is_some());
        assert_eq!(w.push(slot(t0, 2)), 1);
    }

    #[test]
    fn expiry_pops_in_deadline_order_and_skips_holes() {
        let t0 = Instant::now();
        let mut w = Window::new(0);
        for ms in 0..5 {
            w.push(slot(t0, ms * 10));
        }
        w.take(1);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(w.expire(t0 + Duration::from_millis(99)), 0);
        // Deadlines 100, (110 answered), 120 have passed at 125.
        assert_eq!(w.expire(t0 + Duration::from_millis(125)), 2);
        assert_eq!(w.live(), 2);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_millis(130)));
        assert_eq!(w.take(0), None, "a timed-out request is not matched later");
        assert!(w.take(3).is_some());
        assert_eq!(w.clear(), 1);
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.push(slot(t0, 0)), 5, "ids are never reused after a clear");
    }
}
