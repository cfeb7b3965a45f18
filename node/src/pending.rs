//! Sent requests: the requests *we* sent, waiting for their answers (RFC 6733 §5.5.4, §6.2).
//!
//! [`PendingTable`]: the requests *we* sent, waiting for answers. An answer is matched by the
//! connection it arrives on and the hop-by-hop id we allocated for that connection — never by
//! Session-Id, which many requests share and which a peer may reuse (the defect that makes
//! `aaa_diameter` answer the wrong caller). Each entry has a deadline (the answer timeout);
//! [`PendingTable::expire`] hands back the ones that passed it, each to be failed exactly once.
//! When a connection is lost, [`PendingTable::connection_lost`] hands back its entries to be
//! resent to an alternate peer with the T flag, keeping their end-to-end id (RFC 6733 §5.5.4)
//! and their original deadline, so a request fails over at most until its caller gives up.
//! The table is bounded: beyond `max` entries, [`PendingTable::insert`] refuses (the caller
//! answers 3004 DIAMETER_TOO_BUSY rather than queue without bound).
//!
//! The other direction — requests *peers* sent us, and their retransmissions — is
//! [`crate::duplicates`].

use std::collections::hash_map::Entry;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use dmdeadline::DeadlineQueue;
use dmproto::Flags;
use rustc_hash::FxHashMap;

use crate::conn::ConnId;

/// One request waiting for its answer. `data` is the caller's: typically the encoded request
/// (for a resend) and where the answer must go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEntry<T> {
    /// The connection it was sent on: only an answer arriving there can match it.
    pub conn: ConnId,
    /// The hop-by-hop id we gave it on that connection (RFC 6733 §3); the answer echoes it.
    pub hop_by_hop: u32,
    /// Its end-to-end id, kept across failover resends so that the receiver's duplicate
    /// detection recognises them (§5.5.4).
    pub end_to_end: u32,
    /// When the caller gives up: the request's own timeout or `[timers] answer_timeout`,
    /// from the first send (resends do not extend it).
    pub deadline: Instant,
    /// How many times it has been resent after a failover.
    pub retransmissions: u32,
    /// The caller's: what it needs to resend the request or complete its outcome.
    pub data: T,
}

/// The table is full: the request is handed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

/// Requests we sent, keyed by (connection, hop-by-hop id).
#[derive(Debug)]
pub struct PendingTable<T> {
    /// Looked up by every answer and written by every request we send: a hash map rather
    /// than a B-tree (one insert and one remove cost ~1,360 instructions per request in the
    /// B-tree, BENCHMARKS "Session 9"). FxHash, unseeded, as the endpoint's maps keyed by
    /// our own ids: the keys stored are our connection ids and the hop-by-hop ids we
    /// allocate; a peer chooses only the ids it looks up with, never what is stored.
    /// The per-connection questions (`count_on`, `connection_lost`) walk the map: they
    /// come with draining and losing a peer, not with each message.
    entries: FxHashMap<(ConnId, u32), PendingEntry<T>>,
    /// The answer deadlines ([`DeadlineQueue`]), in the order they were scheduled, which is
    /// deadline order for requests sent with the same timeout (a monotonic clock plus a
    /// constant): a push at the back of a FIFO per request, instead of a B-tree insert and
    /// remove (~700 instructions per originated call, BENCHMARKS "Session 10"). Only a
    /// deadline earlier than the FIFO's last (a shorter timeout than the one before it, a
    /// failover resend keeping its first deadline) goes to its ordered set, and is removed
    /// from it exactly. An answer does not search the FIFO: a record whose entry is gone (or
    /// carries another deadline) is stale and dropped when it reaches the front; `answer`,
    /// `expire` and `connection_lost` drop the stale front, so the front is live and
    /// `next_deadline` wakes nobody early. Behind a live front the records of requests
    /// answered since then wait for it: at most one per request sent within one answer
    /// timeout, and the queue drops them all (compacts) rather than grow while they are more
    /// than half of it.
    deadlines: DeadlineQueue<(ConnId, u32)>,
    next_hbh: u32,
    max: usize,
}

impl<T> PendingTable<T> {
    /// `first_hop_by_hop` should be random (RFC 6733 §3 suggests it), so ids do not repeat
    /// across restarts while old answers may still be in flight.
    pub fn new(max: usize, first_hop_by_hop: u32) -> PendingTable<T> {
        PendingTable {
            entries: FxHashMap::default(),
            deadlines: DeadlineQueue::new(),
            next_hbh: first_hop_by_hop,
            max,
        }
    }

    /// Requests waiting for an answer, on all connections.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No request is waiting for an answer.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Requests pending on `conn` (a peer has drained when this reaches 0).
    pub fn count_on(&self, conn: ConnId) -> usize {
        self.entries.keys().filter(|(c, _)| *c == conn).count()
    }

    /// Registers a request about to be sent on `conn`; returns the hop-by-hop id to put in
    /// its header.
    pub fn insert(
        &mut self,
        conn: ConnId,
        end_to_end: u32,
        deadline: Instant,
        data: T,
    ) -> Result<u32, Full<T>> {
        self.insert_with(conn, end_to_end, deadline, data, |_, _| {})
    }

    /// [`insert`](Self::insert), with `stamp` given the data and the new hop-by-hop id
    /// before the entry is stored: the caller writes the id into its encoded request while
    /// that buffer is still its own ([`stamp`]), so the request is not copied to carry it.
    pub fn insert_with(
        &mut self,
        conn: ConnId,
        end_to_end: u32,
        deadline: Instant,
        data: T,
        stamp: impl FnOnce(&mut T, u32),
    ) -> Result<u32, Full<T>> {
        self.insert_entry(conn, end_to_end, deadline, 0, data, stamp)
    }

    /// Registers the resend of an entry returned by [`PendingTable::connection_lost`] on
    /// another connection, keeping its end-to-end id and deadline. Returns the new
    /// hop-by-hop id (the header must also carry the T flag: see [`retransmission`]).
    pub fn insert_retransmission(
        &mut self,
        conn: ConnId,
        entry: PendingEntry<T>,
    ) -> Result<u32, Full<T>> {
        self.insert_retransmission_with(conn, entry, |_, _| {})
    }

    /// [`insert_retransmission`](Self::insert_retransmission) with a `stamp`, as
    /// [`insert_with`](Self::insert_with).
    pub fn insert_retransmission_with(
        &mut self,
        conn: ConnId,
        entry: PendingEntry<T>,
        stamp: impl FnOnce(&mut T, u32),
    ) -> Result<u32, Full<T>> {
        self.insert_entry(
            conn,
            entry.end_to_end,
            entry.deadline,
            entry.retransmissions.saturating_add(1),
            entry.data,
            stamp,
        )
    }

    fn insert_entry(
        &mut self,
        conn: ConnId,
        end_to_end: u32,
        deadline: Instant,
        retransmissions: u32,
        mut data: T,
        stamp: impl FnOnce(&mut T, u32),
    ) -> Result<u32, Full<T>> {
        if self.entries.len() >= self.max {
            return Err(Full(data));
        }
        // Skip ids still in use on this connection (only after 2^32 requests could the
        // counter come back to a live one; then a few probes find a free one).
        let mut hbh = self.next_hbh;
        while self.entries.contains_key(&(conn, hbh)) {
            hbh = hbh.wrapping_add(1);
        }
        self.next_hbh = hbh.wrapping_add(1);
        stamp(&mut data, hbh);
        self.schedule(deadline, conn, hbh);
        self.entries.insert(
            (conn, hbh),
            PendingEntry {
                conn,
                hop_by_hop: hbh,
                end_to_end,
                deadline,
                retransmissions,
                data,
            },
        );
        Ok(hbh)
    }

    /// Puts back an entry taken by [`PendingTable::connection_lost`] under its own key
    /// (connection, hop-by-hop id, deadline unchanged), e.g. when no alternate peer exists.
    pub fn restore(&mut self, entry: PendingEntry<T>) -> Result<(), Full<T>> {
        let key = (entry.conn, entry.hop_by_hop);
        if self.entries.len() >= self.max || self.entries.contains_key(&key) {
            return Err(Full(entry.data));
        }
        self.schedule(entry.deadline, entry.conn, entry.hop_by_hop);
        self.entries.insert(key, entry);
        Ok(())
    }

    /// Records a deadline: at the back of the FIFO when it is not earlier than the last one
    /// there, else in the ordered set.
    fn schedule(&mut self, deadline: Instant, conn: ConnId, hbh: u32) {
        let entries = &self.entries;
        self.deadlines
            .push(deadline, (conn, hbh), entries.len(), |t, k| {
                live(entries, t, k)
            });
    }

    /// Drops the stale records at the front.
    fn drop_stale_front(&mut self) {
        let entries = &self.entries;
        self.deadlines.drop_stale(|t, k| live(entries, t, k));
    }

    /// Forgets the deadline of an entry just removed from `entries`.
    fn unschedule(&mut self, deadline: Instant, conn: ConnId, hbh: u32) {
        self.deadlines.remove(deadline, (conn, hbh));
        self.drop_stale_front();
    }

    /// The answer with this hop-by-hop id arrived on `conn`: the entry, once. An answer
    /// nobody waits for (late, duplicate, or forged) gives `None` and is to be dropped.
    pub fn answer(&mut self, conn: ConnId, hop_by_hop: u32) -> Option<PendingEntry<T>> {
        let entry = self.entries.remove(&(conn, hop_by_hop))?;
        self.unschedule(entry.deadline, conn, hop_by_hop);
        Some(entry)
    }

    /// The entry waiting on (`conn`, `hop_by_hop`), without removing it.
    pub fn get(&self, conn: ConnId, hop_by_hop: u32) -> Option<&PendingEntry<T>> {
        self.entries.get(&(conn, hop_by_hop))
    }

    /// The earliest answer deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        // every change drops the stale front: the earliest record is live
        self.deadlines.peek().map(|(t, _)| t)
    }

    /// Removes and returns every entry whose deadline is at or before `now`, in deadline
    /// order.
    pub fn expire(&mut self, now: Instant) -> Vec<PendingEntry<T>> {
        let mut out = Vec::new();
        while let Some((t, key)) = self.deadlines.pop_due(now) {
            // a stale record (answered, or rescheduled with another deadline) is skipped
            if let Entry::Occupied(e) = self.entries.entry(key) {
                if e.get().deadline == t {
                    out.push(e.remove());
                }
            }
        }
        self.drop_stale_front();
        out
    }

    /// Removes and returns every entry (when the node gives up at shutdown).
    pub fn take_all(&mut self) -> Vec<PendingEntry<T>> {
        self.deadlines.clear();
        let mut all: Vec<PendingEntry<T>> =
            std::mem::take(&mut self.entries).into_values().collect();
        // in (connection, hop-by-hop id) order, as before the map was hashed
        all.sort_unstable_by_key(|e| (e.conn, e.hop_by_hop));
        all
    }

    /// The connection is gone: removes and returns its entries, oldest id first, for resending
    /// elsewhere (or failing, if no alternate peer exists).
    pub fn connection_lost(&mut self, conn: ConnId) -> Vec<PendingEntry<T>> {
        let mut keys: Vec<(ConnId, u32)> = self
            .entries
            .keys()
            .filter(|(c, _)| *c == conn)
            .copied()
            .collect();
        keys.sort_unstable();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(e) = self.entries.remove(&k) {
                self.deadlines.remove(e.deadline, (e.conn, e.hop_by_hop));
                out.push(e);
            }
        }
        self.drop_stale_front();
        out
    }
}

/// Whether a deadline record still stands for a waiting entry: the entry is there, with this
/// deadline.
fn live<T>(
    entries: &FxHashMap<(ConnId, u32), PendingEntry<T>>,
    deadline: Instant,
    key: (ConnId, u32),
) -> bool {
    entries.get(&key).is_some_and(|e| e.deadline == deadline)
}

/// Writes `hop_by_hop` into an encoded message's header, and the T flag when `retransmit`
/// (RFC 6733 §3: "The T flag ... MUST be set when resending requests not yet acknowledged";
/// the end-to-end id and everything else stay as they are). In place when `msg` is the only
/// handle on its buffer (a request just built), so setting the id costs no copy; on a copy
/// when the buffer is shared (a cached answer, a request still queued on another
/// connection). Returns `false`, leaving `msg` as it was, if it is shorter than a header.
pub fn stamp(msg: &mut Bytes, hop_by_hop: u32, retransmit: bool) -> bool {
    if msg.len() < dmproto::header::HEADER_LEN {
        return false;
    }
    let mut b = match std::mem::take(msg).try_into_mut() {
        Ok(own) => own,
        Err(shared) => BytesMut::from(&shared[..]),
    };
    if retransmit {
        if let Some(flags) = b.get_mut(4) {
            *flags |= Flags::T;
        }
    }
    if let Some(slot) = b.get_mut(12..16) {
        slot.copy_from_slice(&hop_by_hop.to_be_bytes());
    }
    *msg = b.freeze();
    true
}

/// An encoded request prepared for resending: the T flag set and a new hop-by-hop id (see
/// [`stamp`]), on a copy. Returns `None` if `request` is shorter than a header.
pub fn retransmission(request: &[u8], hop_by_hop: u32) -> Option<Bytes> {
    let mut b = Bytes::copy_from_slice(request);
    stamp(&mut b, hop_by_hop, true).then_some(b)
}

/// A message re-addressed with another hop-by-hop id: a cached answer for another copy of
/// the request (see [`crate::duplicates`]). `answer` stays as it was (the copy is a new
/// buffer when `answer` shares its own with the cache).
pub fn with_hop_by_hop(answer: &Bytes, hop_by_hop: u32) -> Bytes {
    let mut b = answer.clone();
    stamp(&mut b, hop_by_hop, false);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::{Header, Message, MessageWriter};
    use std::time::Duration;

    const A: ConnId = ConnId(1);
    const B: ConnId = ConnId(2);

    fn table(max: usize) -> (PendingTable<&'static str>, Instant) {
        (PendingTable::new(max, 1000), Instant::now())
    }

    #[test]
    fn answer_matches_connection_and_hop_by_hop_once() {
        let (mut t, now) = table(10);
        let d = now + Duration::from_secs(5);
        let h1 = t.insert(A, 77, d, "first").unwrap();
        let h2 = t.insert(A, 78, d, "second").unwrap();
        assert_ne!(h1, h2);
        assert_eq!(
            t.answer(B, h1),
            None,
            "same id on another connection is not ours"
        );
        assert_eq!(t.answer(A, h2).map(|e| e.data), Some("second"));
        assert_eq!(t.answer(A, h2), None, "answered once");
        let e = t.answer(A, h1).unwrap();
        assert_eq!((e.data, e.end_to_end), ("first", 77));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn deadlines_expire_in_order() {
        let (mut t, now) = table(10);
        t.insert(A, 1, now + Duration::from_secs(3), "c").unwrap();
        t.insert(A, 2, now + Duration::from_secs(1), "a").unwrap();
        let hb = t.insert(B, 3, now + Duration::from_secs(2), "b").unwrap();
        assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(1)));
        assert_eq!(t.expire(now), vec![]);
        let gone: Vec<_> = t
            .expire(now + Duration::from_secs(2))
            .into_iter()
            .map(|e| e.data)
            .collect();
        assert_eq!(gone, vec!["a", "b"]);
        assert_eq!(
            t.answer(B, hb),
            None,
            "an expired request cannot be answered too"
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn answered_requests_leave_no_deadline_behind() {
        let (mut t, now) = table(100);
        let at = |s: u64| now + Duration::from_millis(s);
        let ids: Vec<u32> = (0..10)
            .map(|i| t.insert(A, i, at(100 + u64::from(i)), "x").unwrap())
            .collect();
        // answered out of order, the first last: its deadline stays the next one
        for &h in ids.iter().skip(1).rev() {
            assert!(t.answer(A, h).is_some());
            assert_eq!(t.next_deadline(), Some(at(100)));
        }
        assert!(t.answer(A, ids[0]).is_some());
        assert_eq!(t.next_deadline(), None, "nothing waits, no early wake-up");
        assert_eq!(t.deadlines.len(), 0, "stale records dropped");
        // a slow first request: the answered ones behind it go when it does
        let slow = t.insert(A, 20, at(200), "slow").unwrap();
        let quick: Vec<u32> = (0..5)
            .map(|i| t.insert(A, 21 + i, at(201 + u64::from(i)), "q").unwrap())
            .collect();
        for &h in &quick {
            t.answer(A, h);
        }
        assert_eq!(t.next_deadline(), Some(at(200)));
        let gone: Vec<_> = t
            .expire(at(1000))
            .into_iter()
            .map(|e| e.hop_by_hop)
            .collect();
        assert_eq!(gone, vec![slow], "only the live one expires");
        assert_eq!((t.deadlines.len(), t.next_deadline()), (0, None));
    }

    #[test]
    fn earlier_deadlines_after_later_ones_expire_in_deadline_order() {
        let (mut t, now) = table(100);
        let at = |s: u64| now + Duration::from_secs(s);
        t.insert(A, 1, at(5), "e5").unwrap();
        t.insert(A, 2, at(2), "e2").unwrap(); // shorter timeout: before the queue's last
        t.insert(A, 3, at(6), "e6").unwrap();
        let h = t.insert(B, 4, at(1), "e1").unwrap();
        t.insert(A, 5, at(4), "e4").unwrap();
        assert_eq!(t.next_deadline(), Some(at(1)));
        assert_eq!(t.answer(B, h).map(|e| e.data), Some("e1"));
        assert_eq!(t.next_deadline(), Some(at(2)));
        let gone: Vec<_> = t.expire(at(5)).into_iter().map(|e| e.data).collect();
        assert_eq!(gone, vec!["e2", "e4", "e5"]);
        assert_eq!(t.next_deadline(), Some(at(6)));
        // a failover resend keeps its first deadline, earlier than the queue's last
        let lost = t.connection_lost(A);
        assert_eq!(t.next_deadline(), None);
        let h6 = t
            .insert_retransmission(B, lost.into_iter().next().unwrap())
            .unwrap();
        t.insert(B, 7, at(9), "e9").unwrap();
        t.insert(B, 8, at(7), "e7").unwrap();
        assert_eq!(t.next_deadline(), Some(at(6)));
        let gone: Vec<_> = t
            .expire(at(8))
            .into_iter()
            .map(|e| (e.data, e.hop_by_hop == h6))
            .collect();
        assert_eq!(gone, vec![("e6", true), ("e7", false)]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_restored_entry_expires_once() {
        let (mut t, now) = table(10);
        let d = now + Duration::from_secs(1);
        t.insert(A, 1, d, "x").unwrap();
        let e = t.connection_lost(A).pop().unwrap();
        t.restore(e).unwrap();
        t.insert(A, 2, d, "y").unwrap();
        let gone: Vec<_> = t.expire(d).into_iter().map(|e| e.data).collect();
        assert_eq!(gone, vec!["x", "y"]);
        assert!(t.is_empty() && t.next_deadline().is_none());
    }

    #[test]
    fn bounded_by_max() {
        let (mut t, now) = table(2);
        t.insert(A, 1, now, "a").unwrap();
        t.insert(A, 2, now, "b").unwrap();
        assert_eq!(t.insert(A, 3, now, "c"), Err(Full("c")));
        t.expire(now);
        assert!(t.insert(A, 3, now, "c").is_ok());
    }

    #[test]
    fn connection_loss_hands_back_entries_for_retransmission() {
        let (mut t, now) = table(10);
        let d = now + Duration::from_secs(5);
        let h1 = t.insert(A, 500, d, "x").unwrap();
        t.insert(B, 501, d, "y").unwrap();
        let h3 = t.insert(A, 502, d, "z").unwrap();
        assert_eq!(t.count_on(A), 2);
        let lost = t.connection_lost(A);
        assert_eq!(
            lost.iter().map(|e| e.hop_by_hop).collect::<Vec<_>>(),
            vec![h1, h3]
        );
        assert_eq!(t.count_on(A), 0);
        assert_eq!(t.len(), 1);
        // Resent on B: same end-to-end id and deadline, a new hop-by-hop id.
        let e = lost.into_iter().next().unwrap();
        let h = t.insert_retransmission(B, e).unwrap();
        let back = t.answer(B, h).unwrap();
        assert_eq!(
            (back.end_to_end, back.deadline, back.retransmissions),
            (500, d, 1)
        );
        assert_eq!(t.answer(A, h1), None);
    }

    #[test]
    fn restore_puts_an_entry_back_under_its_own_key() {
        let (mut t, now) = table(10);
        let d = now + Duration::from_secs(5);
        let h = t.insert(A, 9, d, "x").unwrap();
        let e = t.connection_lost(A).pop().unwrap();
        assert!(t.is_empty());
        t.restore(e).unwrap();
        assert_eq!(t.next_deadline(), Some(d));
        assert_eq!(
            t.answer(A, h).map(|e| (e.data, e.end_to_end)),
            Some(("x", 9))
        );
    }

    #[test]
    fn hop_by_hop_ids_skip_live_ones_on_wraparound() {
        let mut t: PendingTable<()> = PendingTable::new(10, u32::MAX);
        let now = Instant::now();
        let a = t.insert(A, 0, now, ()).unwrap();
        let b = t.insert(A, 0, now, ()).unwrap();
        assert_eq!((a, b), (u32::MAX, 0));
        t.next_hbh = u32::MAX; // force a collision with a live id
        let c = t.insert(A, 0, now, ()).unwrap();
        assert_eq!(c, 1);
    }

    #[test]
    fn retransmission_sets_t_flag_and_new_hop_by_hop() {
        let mut w = MessageWriter::new(Header::request(272, 4, 10, 20));
        w.str(263, 0x40, 0, "s;1");
        let orig = w.finish().unwrap();
        let again = Message::decode(retransmission(&orig, 99).unwrap()).unwrap();
        assert!(again.header.flags.is_retransmit());
        assert!(again.header.flags.is_request());
        assert_eq!((again.header.hop_by_hop, again.header.end_to_end), (99, 20));
        assert_eq!(again.session_id(), Some("s;1"));
        assert_eq!(retransmission(&orig[..10], 1), None);
    }

    #[test]
    fn stamp_writes_in_place_when_unique_and_copies_when_shared() {
        let mut w = MessageWriter::new(Header::request(272, 4, 0, 20));
        w.str(263, 0x40, 0, "s;1");
        let mut req = w.finish().unwrap();
        let at = req.as_ptr();
        assert!(stamp(&mut req, 7, false));
        assert_eq!(req.as_ptr(), at, "a request only we hold is not copied");
        let m = Message::decode(req.clone()).unwrap();
        assert_eq!((m.header.hop_by_hop, m.header.end_to_end), (7, 20));
        assert!(!m.header.flags.is_retransmit());
        // `req` is shared now (with `m`): the resend goes on a copy, `m` keeps its id.
        let mut resend = req.clone();
        assert!(stamp(&mut resend, 8, true));
        assert_ne!(resend.as_ptr(), at);
        let again = Message::decode(resend).unwrap();
        assert_eq!((again.header.hop_by_hop, again.header.end_to_end), (8, 20));
        assert!(again.header.flags.is_retransmit());
        assert_eq!(Message::decode(req).unwrap().header.hop_by_hop, 7);
        let mut short = Bytes::from_static(&[1, 2, 3]);
        assert!(!stamp(&mut short, 1, true));
        assert_eq!(&short[..], &[1, 2, 3]);
    }

    #[test]
    fn insert_with_stamps_the_data_with_the_id_it_stores() {
        let (mut t, now) = table(4);
        let mut seen = None;
        let h = t
            .insert_with(A, 1, now, "req", |d, id| seen = Some((*d, id)))
            .unwrap();
        assert_eq!(seen, Some(("req", h)));
        assert_eq!(t.get(A, h).map(|e| e.hop_by_hop), Some(h));
    }
}
