//! Requests in flight, both ways.
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
//! [`DupCache`]: the requests *peers* sent us, by (Origin-Host, end-to-end id), so that a
//! retransmission (T flag) after a failover gets the answer already given instead of being
//! handled twice. Entries are bounded in number, in cached bytes, and in age.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dmproto::Flags;

use crate::peer::ConnId;

/// One request waiting for its answer. `data` is the caller's: typically the encoded request
/// (for a resend) and where the answer must go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEntry<T> {
    pub conn: ConnId,
    pub hop_by_hop: u32,
    pub end_to_end: u32,
    pub deadline: Instant,
    /// How many times it has been resent after a failover.
    pub retransmissions: u32,
    pub data: T,
}

/// The table is full: the request is handed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Full<T>(pub T);

/// Requests we sent, keyed by (connection, hop-by-hop id).
#[derive(Debug)]
pub struct PendingTable<T> {
    entries: BTreeMap<(ConnId, u32), PendingEntry<T>>,
    deadlines: BTreeSet<(Instant, ConnId, u32)>,
    next_hbh: u32,
    max: usize,
}

impl<T> PendingTable<T> {
    /// `first_hop_by_hop` should be random (RFC 6733 §3 suggests it), so ids do not repeat
    /// across restarts while old answers may still be in flight.
    pub fn new(max: usize, first_hop_by_hop: u32) -> PendingTable<T> {
        PendingTable {
            entries: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_hbh: first_hop_by_hop,
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Requests pending on `conn` (a peer has drained when this reaches 0).
    pub fn count_on(&self, conn: ConnId) -> usize {
        self.entries.range((conn, 0)..=(conn, u32::MAX)).count()
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
        self.insert_entry(conn, end_to_end, deadline, 0, data)
    }

    /// Registers the resend of an entry returned by [`PendingTable::connection_lost`] on
    /// another connection, keeping its end-to-end id and deadline. Returns the new
    /// hop-by-hop id (the header must also carry the T flag: see [`retransmission`]).
    pub fn insert_retransmission(
        &mut self,
        conn: ConnId,
        entry: PendingEntry<T>,
    ) -> Result<u32, Full<T>> {
        self.insert_entry(
            conn,
            entry.end_to_end,
            entry.deadline,
            entry.retransmissions.saturating_add(1),
            entry.data,
        )
    }

    fn insert_entry(
        &mut self,
        conn: ConnId,
        end_to_end: u32,
        deadline: Instant,
        retransmissions: u32,
        data: T,
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
        self.deadlines.insert((deadline, conn, hbh));
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
        self.deadlines
            .insert((entry.deadline, entry.conn, entry.hop_by_hop));
        self.entries.insert(key, entry);
        Ok(())
    }

    /// The answer with this hop-by-hop id arrived on `conn`: the entry, once. An answer
    /// nobody waits for (late, duplicate, or forged) gives `None` and is to be dropped.
    pub fn answer(&mut self, conn: ConnId, hop_by_hop: u32) -> Option<PendingEntry<T>> {
        let entry = self.entries.remove(&(conn, hop_by_hop))?;
        self.deadlines.remove(&(entry.deadline, conn, hop_by_hop));
        Some(entry)
    }

    /// The entry waiting on (`conn`, `hop_by_hop`), without removing it.
    pub fn get(&self, conn: ConnId, hop_by_hop: u32) -> Option<&PendingEntry<T>> {
        self.entries.get(&(conn, hop_by_hop))
    }

    /// The earliest answer deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().next().map(|(t, _, _)| *t)
    }

    /// Removes and returns every entry whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<PendingEntry<T>> {
        let mut out = Vec::new();
        while let Some(&(t, conn, hbh)) = self.deadlines.iter().next() {
            if t > now {
                break;
            }
            self.deadlines.remove(&(t, conn, hbh));
            if let Some(e) = self.entries.remove(&(conn, hbh)) {
                out.push(e);
            }
        }
        out
    }

    /// Removes and returns every entry (when the node gives up at shutdown).
    pub fn take_all(&mut self) -> Vec<PendingEntry<T>> {
        self.deadlines.clear();
        std::mem::take(&mut self.entries).into_values().collect()
    }

    /// The connection is gone: removes and returns its entries, oldest id first, for resending
    /// elsewhere (or failing, if no alternate peer exists).
    pub fn connection_lost(&mut self, conn: ConnId) -> Vec<PendingEntry<T>> {
        let keys: Vec<(ConnId, u32)> = self
            .entries
            .range((conn, 0)..=(conn, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(e) = self.entries.remove(&k) {
                self.deadlines.remove(&(e.deadline, e.conn, e.hop_by_hop));
                out.push(e);
            }
        }
        out
    }
}

/// An encoded request prepared for resending: the T flag set and a new hop-by-hop id; the
/// end-to-end id and everything else unchanged. Returns `None` if `request` is shorter than
/// a header.
pub fn retransmission(request: &[u8], hop_by_hop: u32) -> Option<Bytes> {
    if request.len() < dmproto::header::HEADER_LEN {
        return None;
    }
    let mut b = BytesMut::from(request);
    if let Some(flags) = b.get_mut(4) {
        *flags |= Flags::T;
    }
    b.get_mut(12..16)?
        .copy_from_slice(&hop_by_hop.to_be_bytes());
    Some(b.freeze())
}

/// A cached answer re-addressed to another copy of the request (its own hop-by-hop id).
pub fn with_hop_by_hop(answer: &Bytes, hop_by_hop: u32) -> Bytes {
    let mut b = BytesMut::from(&answer[..]);
    if let Some(slot) = b.get_mut(12..16) {
        slot.copy_from_slice(&hop_by_hop.to_be_bytes());
    }
    b.freeze()
}

/// Where a copy of a request came from, to answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requester {
    pub conn: ConnId,
    pub hop_by_hop: u32,
}

/// What the duplicate cache says about an incoming request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DupCheck {
    /// Handle it (and call [`DupCache::complete`] with the answer).
    New,
    /// The original is still being handled; this copy will get the same answer from
    /// [`DupCache::complete`]. Do not handle it.
    InProgress,
    /// Already answered: send this answer (re-addressed with [`with_hop_by_hop`]).
    Answered(Bytes),
}

#[derive(Debug)]
enum DupState {
    InProgress(Vec<Requester>),
    Answered(Bytes),
}

#[derive(Debug)]
struct DupEntry {
    seq: u64,
    state: DupState,
}

/// Recently seen incoming requests, by (Origin-Host, end-to-end id).
#[derive(Debug)]
pub struct DupCache {
    entries: HashMap<(String, u32), DupEntry>,
    /// Insertion order, for age and size eviction; stale items are skipped by `seq`.
    order: VecDeque<(Instant, u64, (String, u32))>,
    seq: u64,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    ttl: Duration,
}

/// At most this many waiting copies per request: a peer resending one request more often
/// than that is misbehaving, and extra copies are simply not answered twice.
const MAX_WAITERS: usize = 8;

impl DupCache {
    pub fn new(max_entries: usize, max_bytes: usize, ttl: Duration) -> DupCache {
        DupCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            bytes: 0,
            ttl,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of cached answers.
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// Looks up an incoming request. Only requests with the T flag (`retransmit`) are
    /// matched against the cache: without it, RFC 6733 §6.1 gives no reason to suspect a
    /// duplicate, and the request replaces any old entry. Every new request is recorded,
    /// because the first copy of a request arrives *without* the T flag.
    pub fn check(
        &mut self,
        origin_host: &str,
        end_to_end: u32,
        retransmit: bool,
        from: Requester,
        now: Instant,
    ) -> DupCheck {
        self.purge(now);
        let key = (origin_host.to_ascii_lowercase(), end_to_end);
        if retransmit {
            match self.entries.get_mut(&key).map(|e| &mut e.state) {
                Some(DupState::Answered(answer)) => return DupCheck::Answered(answer.clone()),
                Some(DupState::InProgress(waiters)) => {
                    if waiters.len() < MAX_WAITERS {
                        waiters.push(from);
                    }
                    return DupCheck::InProgress;
                }
                None => {}
            }
        }
        self.remove(&key);
        while self.entries.len() >= self.max_entries {
            if !self.evict_oldest() {
                break;
            }
        }
        self.seq += 1;
        self.entries.insert(
            key.clone(),
            DupEntry {
                seq: self.seq,
                state: DupState::InProgress(Vec::new()),
            },
        );
        self.order.push_back((now, self.seq, key));
        DupCheck::New
    }

    /// The request was answered with `answer`: caches it and returns the copies that arrived
    /// meanwhile, each to be sent the answer under its own hop-by-hop id.
    pub fn complete(
        &mut self,
        origin_host: &str,
        end_to_end: u32,
        answer: Bytes,
    ) -> Vec<Requester> {
        let key = (origin_host.to_ascii_lowercase(), end_to_end);
        let Some(entry) = self.entries.get_mut(&key) else {
            return Vec::new();
        };
        let waiters = match &mut entry.state {
            DupState::InProgress(w) => std::mem::take(w),
            DupState::Answered(_) => return Vec::new(),
        };
        if answer.len() <= self.max_bytes {
            self.bytes += answer.len();
            entry.state = DupState::Answered(answer);
            while self.bytes > self.max_bytes {
                if !self.evict_oldest() {
                    break;
                }
            }
        } else {
            // Too big to cache: forget it (a retransmission will be handled again).
            self.remove(&key);
        }
        waiters
    }

    fn remove(&mut self, key: &(String, u32)) {
        if let Some(old) = self.entries.remove(key) {
            if let DupState::Answered(a) = old.state {
                self.bytes -= a.len();
            }
        }
    }

    /// Drops the oldest live entry; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((_, seq, key)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                self.remove(&key);
                return true;
            }
        }
        false
    }

    /// Drops entries older than the TTL.
    pub fn purge(&mut self, now: Instant) {
        while let Some((t, seq, key)) = self.order.front() {
            if now.saturating_duration_since(*t) < self.ttl {
                break;
            }
            let (seq, key) = (*seq, key.clone());
            self.order.pop_front();
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                self.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::{Header, Message, MessageWriter};

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

    fn req(conn: u64, hbh: u32) -> Requester {
        Requester {
            conn: ConnId(conn),
            hop_by_hop: hbh,
        }
    }

    #[test]
    fn duplicate_with_t_flag_gets_the_cached_answer() {
        let mut c = DupCache::new(100, 1 << 20, Duration::from_secs(240));
        let now = Instant::now();
        assert_eq!(c.check("hss.net", 7, false, req(1, 1), now), DupCheck::New);
        assert!(c
            .complete("hss.net", 7, Bytes::from_static(b"answer"))
            .is_empty());
        assert_eq!(
            c.check("HSS.net", 7, true, req(2, 50), now),
            DupCheck::Answered(Bytes::from_static(b"answer"))
        );
        // Another end-to-end id, or another origin, is new.
        assert_eq!(c.check("hss.net", 8, true, req(2, 51), now), DupCheck::New);
        assert_eq!(
            c.check("other.net", 7, true, req(2, 52), now),
            DupCheck::New
        );
    }

    #[test]
    fn duplicate_while_in_progress_waits_for_the_answer() {
        let mut c = DupCache::new(100, 1 << 20, Duration::from_secs(240));
        let now = Instant::now();
        assert_eq!(c.check("hss.net", 7, false, req(1, 1), now), DupCheck::New);
        assert_eq!(
            c.check("hss.net", 7, true, req(2, 9), now),
            DupCheck::InProgress
        );
        assert_eq!(
            c.complete("hss.net", 7, Bytes::from_static(b"a")),
            vec![req(2, 9)]
        );
        assert!(
            c.complete("hss.net", 7, Bytes::from_static(b"a"))
                .is_empty(),
            "once"
        );
    }

    #[test]
    fn without_t_flag_the_request_is_handled_again() {
        let mut c = DupCache::new(100, 1 << 20, Duration::from_secs(240));
        let now = Instant::now();
        c.check("hss.net", 7, false, req(1, 1), now);
        c.complete("hss.net", 7, Bytes::from_static(b"a"));
        assert_eq!(c.check("hss.net", 7, false, req(1, 2), now), DupCheck::New);
    }

    #[test]
    fn bounded_by_count_bytes_and_age() {
        let now = Instant::now();
        let mut c = DupCache::new(2, 1 << 20, Duration::from_secs(10));
        for e2e in 0..3 {
            c.check("h", e2e, false, req(1, e2e), now);
            c.complete("h", e2e, Bytes::from_static(b"abc"));
        }
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.check("h", 0, true, req(1, 9), now),
            DupCheck::New,
            "oldest evicted"
        );

        let mut c = DupCache::new(100, 10, Duration::from_secs(10));
        for e2e in 0..4 {
            c.check("h", e2e, false, req(1, e2e), now);
            c.complete("h", e2e, Bytes::from_static(b"abcd"));
        }
        assert!(c.cached_bytes() <= 10, "{}", c.cached_bytes());
        assert!(matches!(
            c.check("h", 3, true, req(1, 9), now),
            DupCheck::Answered(_)
        ));
        assert_eq!(c.check("h", 0, true, req(1, 9), now), DupCheck::New);

        let mut c = DupCache::new(100, 1 << 20, Duration::from_secs(10));
        c.check("h", 1, false, req(1, 1), now);
        c.complete("h", 1, Bytes::from_static(b"x"));
        let later = now + Duration::from_secs(10);
        assert_eq!(
            c.check("h", 1, true, req(1, 2), later),
            DupCheck::New,
            "expired"
        );
        assert_eq!(c.cached_bytes(), 0);
    }

    #[test]
    fn cached_answer_is_readdressed() {
        let mut w = MessageWriter::new(Header::request(272, 4, 10, 20).answer());
        w.u32(268, 0x40, 0, 2001);
        let a = w.finish().unwrap();
        let b = Message::decode(with_hop_by_hop(&a, 4242)).unwrap();
        assert_eq!((b.header.hop_by_hop, b.header.end_to_end), (4242, 20));
    }
}
