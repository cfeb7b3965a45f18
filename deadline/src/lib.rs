//! Deadlines of requests in flight, earliest first, without a tree insert and remove per
//! request.
//!
//! Three tables keep one deadline per request and must know the earliest that still matters:
//! the requests the node sent, waiting for their answers (`dmnode::pending`: failed at the
//! answer deadline, RFC 6733 §5.5.4 and §6.2; a failover resend keeps its first deadline), the
//! requests a SIP server sent through libdmbridge (`dmshm::worker`, in the SIP server's
//! process), and the incoming requests the bridge handed to SIP workers and waits to reply to
//! (`dmrun::shm_app::held`). This crate is theirs alone: no dependencies, no `unsafe`, no
//! runtime, so the bridge and the C servers' static library link the same code.
//!
//! **A FIFO is deadline order.** Each table schedules with one timeout or a few (a monotonic
//! clock plus a constant: the module's request timeout or the script's `timeout_ms` per call,
//! `[timers] answer_timeout` or the peer's, `[app] reply_timeout`), so for one timeout the
//! order of scheduling is the order of the deadlines: a [`DeadlineQueue`] pushes at the back
//! of a FIFO (a `VecDeque` push, no search). A B-tree insert and remove per request cost ~700
//! instructions per originated call in the node (BENCHMARKS "Session 10: the originate path's
//! cost"); the FIFO costs a few.
//!
//! **A FIFO per timeout.** A deadline earlier than a FIFO's last cannot go behind it. With one
//! FIFO, one request of a longer timeout (a script's call with 60 s among 5 s ones) would send
//! every later push of the shorter timeout to the ordered set until that deadline passed. So
//! the queue has [`LANES`] FIFOs ("lanes"): a push goes to the lane whose last deadline is the
//! latest one not after it (best fit: a lane keeps to one timeout), or opens an empty lane,
//! and only a deadline that fits no lane goes to an ordered set (a `BTreeSet`): more timeouts
//! in use at once than lanes, or a failover resend keeping its first deadline. With a
//! monotonic clock, deadlines that must go to different lanes (each earlier than the one
//! before) have pairwise different timeouts, so up to [`LANES`] timeouts never reach the set.
//! Lanes that emptied are closed at the next push that needs more than the first one, so with
//! one timeout in use (again) a push compares with one lane's last deadline, as before; the
//! other lanes' fronts are looked at only while they are open. Equal deadlines leave in the
//! order pushed within a lane, then by lane, then the set's by key.
//!
//! **Stale at the front.** A request answered in time is not searched for: its record stays,
//! *stale* (the owner's table no longer holds its key, or holds it with another deadline).
//! The queue does not see the table; the owner passes a liveness test.
//! [`DeadlineQueue::first`] drops the stale records at the front, so the deadline it reports
//! belongs to a request that still waits and a timer armed for it wakes nobody early (armed
//! for stale records, it would fire about once per request under steady load).
//! [`DeadlineQueue::pop_due`] hands back the records due, stale ones included, for the owner to
//! skip: a live one leaves the owner's table when it expires, so its other records (if any)
//! are stale from then on and nothing expires twice. An owner that knows a record may be in the
//! ordered set removes it exactly ([`DeadlineQueue::remove`]), a `BTreeSet` search only when
//! that set is not empty.
//!
//! **The bound.** Behind a live front wait the stale records of the requests answered since:
//! at most one per request scheduled within one timeout, which with long timeouts may be many
//! times the requests in flight. Stale records cost memory only when they make the queue
//! allocate, so that is when [`DeadlineQueue::push`] looks at them: before a lane reallocates
//! (it is full) and before a record goes into the ordered set, it compacts (drops every stale
//! record) if the records outnumber `2 x live + SLACK` (live = the requests the owner has in
//! flight). A lane's capacity therefore doubles only while at least about half the records are
//! live: each stays within `2 x (2 x peak + SLACK)` records (peak = the most requests in
//! flight at a push; a `VecDeque` never shrinks, so its memory follows the peak in any case),
//! and the ordered set holds at most `2 x live + SLACK + 1` records after a push into it. A
//! compaction keeps at most the live records, less than half of those it scans, so its cost is
//! at most twice the stale records it drops, each dropped once: a constant per push,
//! amortised. A push into a FIFO with room costs its store and one comparison with the FIFO's
//! last deadline, no more (libdmbridge's bound of BENCHMARKS "Session 11: the OpenSIPS async
//! path" checked the count at every push; "Session 12: one deadline queue" measured the
//! difference).
//!
//! Time is a type parameter (`Instant` by default), so the tests use plain integers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

/// Records kept beyond twice the live ones before a compaction: a short queue is not worth
/// scanning.
pub const SLACK: usize = 64;

/// FIFOs ("lanes", crate documentation): the most timeouts in use at once whose deadlines
/// stay off the ordered set. The users have one or a few (libdmbridge: the scripts'
/// `timeout_ms`; the node: its answer timeout and a peer's); four keeps the scan of the lanes'
/// last deadlines, done only when more than one is open, to four comparisons.
pub const LANES: usize = 4;

/// Deadlines (`T`) of keys (`K`), earliest first: a FIFO per timeout for deadlines scheduled
/// in order, an ordered set for the others (see the crate documentation).
#[derive(Clone, Debug)]
pub struct DeadlineQueue<K, T = Instant> {
    /// FIFOs, each in deadline order (nothing is pushed behind a later deadline); those from
    /// `open` on are empty.
    lanes: [VecDeque<(T, K)>; LANES],
    /// Lanes that may hold records: 1 to [`LANES`].
    open: usize,
    /// Deadlines that fit no lane when pushed, in order.
    early: BTreeSet<(T, K)>,
}

impl<K, T> Default for DeadlineQueue<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, T> DeadlineQueue<K, T> {
    /// An empty queue (allocates nothing until the first push).
    pub const fn new() -> Self {
        DeadlineQueue {
            lanes: [
                VecDeque::new(),
                VecDeque::new(),
                VecDeque::new(),
                VecDeque::new(),
            ],
            open: 1,
            early: BTreeSet::new(),
        }
    }

    /// Records held, stale ones included.
    #[inline]
    pub fn len(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum::<usize>() + self.early.len()
    }

    /// No record held.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty) && self.early.is_empty()
    }

    /// Forgets every record (the owner dropped every request).
    pub fn clear(&mut self) {
        self.lanes.iter_mut().for_each(VecDeque::clear);
        self.open = 1;
        self.early.clear();
    }

    /// Records in the ordered set (the slow path): for tests and diagnostics.
    pub fn ordered_len(&self) -> usize {
        self.early.len()
    }

    /// Lanes open (crate documentation): for tests and diagnostics.
    pub fn open_lanes(&self) -> usize {
        self.open
    }
}

impl<K: Ord + Copy, T: Ord + Copy> DeadlineQueue<K, T> {
    /// Schedules `key` at `at`: at the back of the lane whose last deadline is the latest not
    /// after `at`, or of an empty lane, else in the ordered set. `live_count` (the requests the
    /// owner has in flight) and `live` (whether a record still stands for a waiting request)
    /// are used only when the queue would allocate: it compacts instead if the records
    /// outnumber `2 x live_count + SLACK`.
    #[inline]
    pub fn push(&mut self, at: T, key: K, live_count: usize, live: impl FnMut(T, K) -> bool) {
        // One lane open (one timeout): one comparison, as with a single FIFO.
        if self.open == 1 && self.lanes[0].back().is_none_or(|&(last, _)| last <= at) {
            self.push_lane(0, at, key, live_count, live);
        } else {
            self.push_lanes(at, key, live_count, live);
        }
    }

    #[inline]
    fn push_lane(
        &mut self,
        lane: usize,
        at: T,
        key: K,
        live_count: usize,
        live: impl FnMut(T, K) -> bool,
    ) {
        if self.lanes[lane].len() == self.lanes[lane].capacity() {
            self.make_room(live_count, live);
        }
        self.lanes[lane].push_back((at, key));
    }

    /// [`push`](Self::push) with more than one lane to consider (out of line: another
    /// timeout in use).
    #[inline(never)]
    fn push_lanes(&mut self, at: T, key: K, live_count: usize, live: impl FnMut(T, K) -> bool) {
        // Close the lanes that emptied (the last open one takes the place of each).
        let mut i = 0;
        while i < self.open {
            if self.lanes[i].is_empty() && self.open > 1 {
                self.open -= 1;
                self.lanes.swap(i, self.open);
            } else {
                i += 1;
            }
        }
        // Best fit: the lane whose last deadline is the latest not after `at`.
        let mut best: Option<(T, usize)> = None;
        for (i, lane) in self.lanes[..self.open].iter().enumerate() {
            match lane.back() {
                None => {
                    // Only the first lane can be open and empty (when it is the only one).
                    best = best.or(Some((at, i)));
                    break;
                }
                Some(&(last, _)) if last <= at && best.is_none_or(|(b, _)| last > b) => {
                    best = Some((last, i));
                }
                Some(_) => {}
            }
        }
        match best {
            Some((_, lane)) => self.push_lane(lane, at, key, live_count, live),
            None if self.open < LANES => {
                self.open += 1;
                self.push_lane(self.open - 1, at, key, live_count, live);
            }
            None => {
                self.make_room(live_count, live);
                self.early.insert((at, key));
            }
        }
    }

    /// Compacts if the stale records are more than half (plus `SLACK`): before an allocation.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, live_count: usize, live: impl FnMut(T, K) -> bool) {
        if self.len() > live_count.saturating_mul(2).saturating_add(SLACK) {
            self.compact(live);
        }
    }

    /// Drops every stale record (order kept).
    pub fn compact(&mut self, mut live: impl FnMut(T, K) -> bool) {
        for lane in &mut self.lanes[..self.open] {
            lane.retain(|&(t, k)| live(t, k));
        }
        self.early.retain(|&(t, k)| live(t, k));
    }

    /// The earliest record, stale or not, dropping nothing: for an owner that keeps the
    /// fronts live itself (after each change, [`first`](Self::first) and exact
    /// [`remove`](Self::remove)s).
    #[inline]
    pub fn peek(&self) -> Option<(T, K)> {
        self.front().map(|(r, _)| r)
    }

    /// The earliest record and where it is (`Some(lane)`, or `None`: the ordered set); on
    /// equal records the first lane's.
    #[inline]
    fn front(&self) -> Option<((T, K), Option<usize>)> {
        let mut best = self.lanes[0].front().map(|&r| (r, Some(0)));
        if self.open > 1 {
            best = self.front_of_lanes(best);
        }
        match (best, self.early.first()) {
            (Some((a, at)), Some(&b)) => Some(if a <= b { (a, at) } else { (b, None) }),
            (a, b) => a.or(b.map(|&b| (b, None))),
        }
    }

    /// [`front`](Self::front) over the other open lanes (out of line: more than one timeout).
    #[inline(never)]
    fn front_of_lanes(
        &self,
        mut best: Option<((T, K), Option<usize>)>,
    ) -> Option<((T, K), Option<usize>)> {
        for (i, lane) in self.lanes[..self.open].iter().enumerate().skip(1) {
            if let Some(&r) = lane.front() {
                if best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, Some(i)));
                }
            }
        }
        best
    }

    /// The earliest record for which `live` holds, after dropping the stale records in front
    /// of it (in the FIFO and in the ordered set).
    #[inline]
    pub fn first(&mut self, live: impl FnMut(T, K) -> bool) -> Option<(T, K)> {
        self.drop_stale(live);
        self.peek()
    }

    /// Drops the stale records at the fronts of the lanes and of the ordered set: after it,
    /// [`peek`](Self::peek) gives a live record (or none). For an owner that does not need the
    /// record now (an answer arrived), this is [`first`](Self::first) without comparing the
    /// fronts.
    #[inline]
    pub fn drop_stale(&mut self, mut live: impl FnMut(T, K) -> bool) {
        drop_stale_front(&mut self.lanes[0], &mut live);
        if self.open > 1 {
            for lane in &mut self.lanes[1..self.open] {
                drop_stale_front(lane, &mut live);
            }
        }
        if !self.early.is_empty() {
            self.drop_stale_early(live);
        }
    }

    /// [`drop_stale`](Self::drop_stale) in the ordered set (out of line: usually empty).
    #[inline(never)]
    fn drop_stale_early(&mut self, mut live: impl FnMut(T, K) -> bool) {
        while let Some(&(t, k)) = self.early.first() {
            if live(t, k) {
                break;
            }
            self.early.pop_first();
        }
    }

    /// Removes and returns the earliest record if it is due (at or before `now`), stale or
    /// not: the owner skips the stale ones. Called until `None`, it gives every record due in
    /// deadline order (equal deadlines: a lane's in the order pushed, the first lane's first,
    /// the set's by key).
    #[inline]
    pub fn pop_due(&mut self, now: T) -> Option<(T, K)> {
        match self.front()? {
            ((t, _), _) if t > now => None,
            (_, Some(lane)) => self.lanes[lane].pop_front(),
            (_, None) => self.early.pop_first(),
        }
    }

    /// Forgets the record (`at`, `key`) if it is in the ordered set (exactly, a search only
    /// when that set is not empty). One in a lane stays, stale, until it reaches the front or
    /// a compaction: the lanes are never searched.
    #[inline]
    pub fn remove(&mut self, at: T, key: K) {
        if !self.early.is_empty() {
            self.early.remove(&(at, key));
        }
    }
}

/// Drops the stale records at a lane's front.
#[inline]
fn drop_stale_front<K: Copy, T: Copy>(
    lane: &mut VecDeque<(T, K)>,
    live: &mut impl FnMut(T, K) -> bool,
) {
    while let Some(&(t, k)) = lane.front() {
        if live(t, k) {
            break;
        }
        lane.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The owner's table in the tests: key -> its deadline.
    type Table = BTreeMap<u32, u64>;

    fn live(table: &Table) -> impl FnMut(u64, u32) -> bool + '_ {
        |t, k| table.get(&k) == Some(&t)
    }

    fn push(q: &mut DeadlineQueue<u32, u64>, table: &mut Table, at: u64, key: u32) {
        table.insert(key, at);
        q.push(at, key, table.len(), live(table));
    }

    /// [`push`] and whether the bound holds after it (crate documentation): the FIFO's
    /// capacity within `2 x (2 x peak + SLACK)` (at least the `VecDeque`'s first allocation),
    /// the ordered set, when pushed into, within `2 x live + SLACK + 1`. `peak`: the most keys
    /// in `table` at any push, kept up to date here.
    fn push_bounded(
        q: &mut DeadlineQueue<u32, u64>,
        table: &mut Table,
        at: u64,
        key: u32,
        peak: &mut usize,
    ) -> bool {
        let early = q.early.len();
        push(q, table, at, key);
        *peak = (*peak).max(table.len());
        q.lanes
            .iter()
            .all(|l| l.capacity() <= (2 * (2 * *peak + SLACK)).max(4))
            && (q.early.len() <= early || q.early.len() <= 2 * table.len() + SLACK + 1)
    }

    /// Every record due at `now`, live ones removed from `table`: what expired, in order.
    fn expire(q: &mut DeadlineQueue<u32, u64>, table: &mut Table, now: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while let Some((t, k)) = q.pop_due(now) {
            if table.get(&k) == Some(&t) {
                table.remove(&k);
                out.push((t, k));
            }
        }
        out
    }

    #[test]
    fn in_order_deadlines_queue_in_the_fifo() {
        let (mut q, mut table) = (DeadlineQueue::new(), Table::new());
        for (k, t) in [(1, 10), (2, 10), (3, 11), (4, 15)] {
            push(&mut q, &mut table, t, k);
        }
        assert!(q.early.is_empty(), "no tree for deadlines in order");
        assert_eq!(q.open_lanes(), 1);
        assert_eq!(q.peek(), Some((10, 1)));
        assert_eq!(q.first(live(&table)), Some((10, 1)));
        assert_eq!(
            expire(&mut q, &mut table, 11),
            vec![(10, 1), (10, 2), (11, 3)]
        );
        assert_eq!(q.pop_due(14), None, "not due yet");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn an_earlier_deadline_opens_a_lane_and_beyond_the_lanes_goes_to_the_set() {
        let (mut q, mut table) = (DeadlineQueue::new(), Table::new());
        push(&mut q, &mut table, 50, 1);
        push(&mut q, &mut table, 20, 2); // a shorter timeout: a lane of its own
        push(&mut q, &mut table, 60, 3); // best fit: after 50, not after 20
        push(&mut q, &mut table, 25, 4); // after 20
        assert_eq!((q.open_lanes(), q.ordered_len()), (2, 0));
        assert_eq!(
            q.lanes[..2].iter().map(VecDeque::len).collect::<Vec<_>>(),
            [2, 2]
        );
        push(&mut q, &mut table, 15, 5);
        push(&mut q, &mut table, 10, 6); // all lanes open: each had a later last deadline
        assert_eq!((q.open_lanes(), q.ordered_len()), (LANES, 0));
        push(&mut q, &mut table, 5, 7); // a failover resend keeping its first deadline
        push(&mut q, &mut table, 60, 8); // equal to a lane's last: that lane
        assert_eq!(q.ordered_len(), 1, "fits no lane: the set");
        assert_eq!(q.first(live(&table)), Some((5, 7)));
        assert_eq!(
            expire(&mut q, &mut table, 60),
            vec![
                (5, 7),
                (10, 6),
                (15, 5),
                (20, 2),
                (25, 4),
                (50, 1),
                (60, 3),
                (60, 8)
            ]
        );
        assert!(q.is_empty());
    }

    /// The case of a lone FIFO: after one push with a long deadline, every push of the short
    /// timeout was earlier than the FIFO's last and went to the B-tree until that deadline
    /// passed. Now the short ones take a lane of their own, and once the long one is gone the
    /// queue is back to one lane.
    #[test]
    fn after_one_long_deadline_the_short_ones_stay_off_the_set() {
        let (mut q, mut table) = (DeadlineQueue::new(), Table::new());
        let (short, long) = (5_000u64, 60_000u64);
        push(&mut q, &mut table, long, 0);
        for now in 1..=20_000u64 {
            let k = now as u32;
            push(&mut q, &mut table, now + short, k);
            // answered at once, as most are: stale until the front
            if now % 2 == 0 {
                table.remove(&k);
            }
            q.drop_stale(live(&table));
            expire(&mut q, &mut table, now);
            assert_eq!(q.ordered_len(), 0, "at {now}: a short push went to the set");
        }
        assert_eq!(q.open_lanes(), 2);
        assert_eq!(q.first(live(&table)), Some((20_001, 15_001)));
        // the long one answered: dropped once at its lane's front; the next push that needs
        // another lane closes the empty one
        table.remove(&0);
        q.drop_stale(live(&table));
        assert_eq!(q.peek(), Some((20_001, 15_001)));
        push(&mut q, &mut table, 100, 99_999); // earlier than the short lane's last
        assert_eq!((q.open_lanes(), q.ordered_len()), (2, 0));
        expire(&mut q, &mut table, 100);
        push(&mut q, &mut table, 25_001, 99_998);
        assert_eq!(q.open_lanes(), 1, "the emptied lane closed");
    }

    #[test]
    fn first_drops_stale_records_in_front_of_both_parts() {
        let (mut q, mut table) = (DeadlineQueue::new(), Table::new());
        push(&mut q, &mut table, 10, 1);
        push(&mut q, &mut table, 30, 2);
        push(&mut q, &mut table, 5, 3);
        push(&mut q, &mut table, 20, 4);
        table.remove(&1); // answered: not searched for
        table.remove(&3);
        assert_eq!(q.peek(), Some((5, 3)), "peek drops nothing");
        assert_eq!(q.first(live(&table)), Some((20, 4)));
        assert_eq!(q.len(), 2, "the two stale fronts are gone");
        // rescheduled with another deadline: the old record is stale
        push(&mut q, &mut table, 40, 4);
        assert_eq!(q.first(live(&table)), Some((30, 2)));
        table.clear();
        assert_eq!(q.first(live(&table)), None);
        assert!(q.is_empty());
    }

    #[test]
    fn pop_due_hands_back_stale_records_and_stops_at_the_first_not_due() {
        let (mut q, mut table) = (DeadlineQueue::new(), Table::new());
        push(&mut q, &mut table, 10, 1);
        push(&mut q, &mut table, 20, 2);
        push(&mut q, &mut table, 30, 3);
        table.remove(&1);
        table.remove(&3);
        assert_eq!(q.pop_due(25), Some((10, 1)), "stale: the owner skips it");
        assert_eq!(q.pop_due(25), Some((20, 2)));
        assert_eq!(q.pop_due(25), None, "a stale record not due stays");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn remove_is_exact_in_the_set_and_leaves_the_lanes_alone() {
        let (mut q, mut table) = (DeadlineQueue::new(), Table::new());
        // one record per lane, each earlier than the last: the next earlier one goes to the set
        for (k, t) in [(1, 50), (2, 40), (3, 35), (4, 32)] {
            push(&mut q, &mut table, t, k);
        }
        push(&mut q, &mut table, 20, 5);
        push(&mut q, &mut table, 30, 6);
        assert_eq!(q.ordered_len(), 2);
        q.remove(20, 5);
        q.remove(30, 9); // not there: nothing happens
        q.remove(50, 1); // in a lane: stays until the front
        assert_eq!((q.len(), q.ordered_len()), (5, 1));
        assert_eq!(q.peek(), Some((30, 6)));
        let mut empty = DeadlineQueue::<u32, u64>::new();
        empty.remove(1, 1);
        assert!(empty.is_empty());
    }

    #[test]
    fn push_compacts_before_allocating_when_most_records_are_stale() {
        let (mut q, mut table, mut peak) = (DeadlineQueue::new(), Table::new(), 0);
        // one slow request in front, then many answered at once: their records wait behind it
        assert!(push_bounded(&mut q, &mut table, 0, 0, &mut peak));
        for k in 1..1000u32 {
            assert!(push_bounded(&mut q, &mut table, u64::from(k), k, &mut peak));
            table.remove(&k);
        }
        assert_eq!(peak, 2);
        assert!(
            q.lanes[0].capacity() <= 2 * (2 * 2 + SLACK),
            "no growth past the bound"
        );
        assert!(q.len() <= q.lanes[0].capacity());
        // the live ones kept, in order, the other lanes' and the set's too
        assert!(push_bounded(&mut q, &mut table, 2000, 5000, &mut peak));
        for (t, k) in [(10, 5001), (9, 5002), (8, 5003)] {
            assert!(push_bounded(&mut q, &mut table, t, k, &mut peak));
        }
        assert_eq!(q.open_lanes(), LANES);
        for k in 1..=200u32 {
            assert!(push_bounded(&mut q, &mut table, 3000, k + 6000, &mut peak));
            table.remove(&(k + 6000));
        }
        // deadlines earlier than every lane's last, all answered: the set is compacted too
        for k in 1..=500u32 {
            assert!(push_bounded(&mut q, &mut table, 2, k + 7000, &mut peak));
            table.remove(&(k + 7000));
        }
        assert!(q.early.len() <= 2 * table.len() + SLACK + 1);
        assert_eq!(
            expire(&mut q, &mut table, u64::MAX),
            vec![(0, 0), (8, 5003), (9, 5002), (10, 5001), (2000, 5000)]
        );
    }

    #[test]
    fn clear_forgets_everything() {
        let (mut q, mut table) = (DeadlineQueue::default(), Table::new());
        push(&mut q, &mut table, 2, 1);
        push(&mut q, &mut table, 1, 2);
        q.clear();
        assert!(q.is_empty() && q.peek().is_none() && q.pop_due(u64::MAX).is_none());
    }

    #[test]
    fn instants_by_default() {
        let mut q: DeadlineQueue<u64> = DeadlineQueue::new();
        let now = Instant::now();
        q.push(now, 7, 1, |_, _| true);
        assert_eq!(q.pop_due(now), Some((now, 7)));
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Schedule a new key at now + offset (out of order when the offsets differ).
        Push(u64),
        /// Reschedule a waiting key (the n-th, modulo) later: its old record goes stale (a
        /// key given another deadline).
        Reschedule(usize, u64),
        /// The n-th waiting key answered; with `true` its record removed exactly as well.
        Answer(usize, bool),
        /// Time passes by this much, then the records due are expired.
        Expire(u64),
        /// The earliest live deadline asked for.
        First,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Short timeouts (due within the run) and long ones (waiting behind which the answered
        // requests' records pile up: the compaction's case); as many answers as requests.
        prop_oneof![
            3 => (0..100u64).prop_map(Op::Push),
            1 => (0..5000u64).prop_map(Op::Push),
            1 => (any::<usize>(), 0..100u64).prop_map(|(i, o)| Op::Reschedule(i, o)),
            4 => (any::<usize>(), any::<bool>()).prop_map(|(i, r)| Op::Answer(i, r)),
            2 => (0..40u64).prop_map(Op::Expire),
            1 => Just(Op::First),
        ]
    }

    /// Against the model (the table itself, sorted): the same expiry order, nothing lost,
    /// nothing expired twice, the earliest live deadline, the bound after every push.
    /// `timeouts`: none, the pushes at now + their offset (out of order); else every push at
    /// now + one of them (the offset picks which): with up to [`LANES`] of them the ordered set
    /// is never used (crate documentation), and with one longer than the run nothing is due
    /// before the end: the answered requests' records pile up in the lanes and only the
    /// compactions before one grows keep it within its bound.
    fn against_the_model(ops: Vec<Op>, timeouts: &[u64]) -> Result<(), TestCaseError> {
        let (mut q, mut table) = (DeadlineQueue::<u32, u64>::new(), Table::new());
        let (mut now, mut next_key, mut peak) = (0u64, 0u32, 0usize);
        let mut expired = std::collections::BTreeSet::new();
        for op in ops {
            match op {
                Op::Push(off) => {
                    let at = now
                        + match timeouts.len() {
                            0 => off,
                            n => timeouts[off as usize % n],
                        };
                    prop_assert!(push_bounded(&mut q, &mut table, at, next_key, &mut peak));
                    if timeouts.len() <= LANES && !timeouts.is_empty() {
                        prop_assert_eq!(q.ordered_len(), 0, "a timeout of a lane in the set");
                    }
                    next_key += 1;
                }
                Op::Reschedule(i, off) => {
                    let pick = table.iter().nth(i % table.len().max(1));
                    // (not with timeouts: it would push at another distance from now)
                    if let Some((&k, &t)) = pick.filter(|_| timeouts.is_empty()) {
                        // later than its current deadline: an earlier record of the key
                        // never looks live again
                        let at = t.max(now) + 1 + off;
                        prop_assert!(push_bounded(&mut q, &mut table, at, k, &mut peak));
                    }
                }
                Op::Answer(i, exact) => {
                    if let Some(&k) = table.keys().nth(i % table.len().max(1)) {
                        let t = table.remove(&k).unwrap();
                        if exact {
                            q.remove(t, k);
                        }
                    }
                }
                Op::Expire(dt) => {
                    now += dt;
                    let mut model: Vec<(u64, u32)> = table
                        .iter()
                        .filter(|(_, &t)| t <= now)
                        .map(|(&k, &t)| (t, k))
                        .collect();
                    model.sort_unstable();
                    let mut got = expire(&mut q, &mut table, now);
                    prop_assert!(
                        got.windows(2).all(|w| w[0].0 <= w[1].0),
                        "deadline order: {got:?}"
                    );
                    for &(_, k) in &got {
                        prop_assert!(expired.insert(k), "key {k} expired twice");
                    }
                    got.sort_unstable();
                    prop_assert_eq!(got, model, "exactly the waiting ones due");
                    prop_assert!(table.values().all(|&t| t > now), "nothing due left");
                }
                Op::First => {
                    let model = table.iter().map(|(&k, &t)| (t, k)).min().map(|(t, _)| t);
                    let got = q.first(live(&table));
                    prop_assert_eq!(got.map(|(t, _)| t), model);
                    if let Some((t, k)) = got {
                        prop_assert_eq!(table.get(&k), Some(&t), "a live record");
                    }
                }
            }
        }
        // Nothing lost: at the end of time every waiting key expires, once.
        let left: Vec<u32> = table.keys().copied().collect();
        let got = expire(&mut q, &mut table, u64::MAX);
        let mut keys: Vec<u32> = got.iter().map(|&(_, k)| k).collect();
        keys.sort_unstable();
        prop_assert_eq!(keys, left);
        for (_, k) in got {
            prop_assert!(expired.insert(k));
        }
        prop_assert!(q.is_empty() && table.is_empty());
        Ok(())
    }

    proptest! {
        #[test]
        fn behaves_as_a_sorted_table(ops in proptest::collection::vec(op(), 1..1500)) {
            against_the_model(ops, &[])?;
        }

        #[test]
        fn stays_bounded_with_a_timeout_longer_than_the_run(
            ops in proptest::collection::vec(op(), 1..1500)
        ) {
            against_the_model(ops, &[1 << 20])?;
        }

        /// Up to [`LANES`] timeouts: the set stays empty (asserted at every push).
        #[test]
        fn keeps_a_few_timeouts_in_lanes(
            ops in proptest::collection::vec(op(), 1..1500),
            timeouts in proptest::collection::vec(1..3000u64, 1..=LANES),
        ) {
            against_the_model(ops, &timeouts)?;
        }

        /// More timeouts than lanes: the set takes what fits no lane, in order still.
        #[test]
        fn behaves_as_a_sorted_table_with_many_timeouts(
            ops in proptest::collection::vec(op(), 1..1500),
            timeouts in proptest::collection::vec(1..3000u64, LANES + 1..12),
        ) {
            against_the_model(ops, &timeouts)?;
        }
    }
}
