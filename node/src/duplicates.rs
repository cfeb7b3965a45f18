//! Duplicate detection for the requests *peers* sent us (RFC 6733 §5.5.4, §6.1.1).
//!
//! [`DupCache`] remembers recent requests by (Origin-Host, end-to-end id), so that a
//! retransmission (T flag) after a failover gets the answer already given instead of being
//! handled twice, and a copy that arrives while the original is still being handled gets the
//! same answer when it is ready. Entries are bounded in number, in cached bytes, and in age.
//!
//! The answers kept are the very bytes sent ([`Bytes`], no copy): slices of the chunks the
//! endpoint encodes its answers into ([`crate::arena`]). The byte bound counts the answers'
//! own bytes; a kept answer also keeps its chunk alive, so an entry evicted is what lets a
//! chunk go (the arena's docs give the bound on what that pins: never longer than the TTL).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use foldhash::fast::FixedState;

use bytes::Bytes;

use crate::conn::ConnId;
#[cfg(test)]
use crate::pending::with_hop_by_hop;

/// Where a copy of a request came from, to answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requester {
    /// The connection the copy arrived on: the answer goes back on it (RFC 6733 §6.2).
    pub conn: ConnId,
    /// The copy's own hop-by-hop id, which its answer must carry (§6.2); each copy may
    /// have a different one, as the peer sent it on another connection or as a new hop.
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
    /// Already answered: send this answer (re-addressed with [`crate::pending::with_hop_by_hop`]).
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
///
/// Keyed in two levels, Origin-Host then end-to-end id, so that a request from a host already
/// present costs no allocation: the host is looked up as the `&str` the request carries
/// (lowercased only when it has capitals), and the insertion-order queue shares the map's
/// `Arc<str>`. The maps use a seeded hasher (foldhash), as the keys are the peers' choice;
/// the seed is the node's ([`crate::endpoint::Seeds::random`]: the operating system's
/// randomness in the bridge, fixed in tests, so that a test's table layouts, and with them
/// the moment a map grows, are the same in every run).
#[derive(Debug)]
pub struct DupCache {
    hosts: HashMap<Arc<str>, HostEntries, FixedState>,
    hasher: FixedState,
    /// Entries in all hosts' maps.
    count: usize,
    /// Insertion order, for age and size eviction; stale items are skipped by `seq`.
    order: VecDeque<(Instant, u64, Arc<str>, u32)>,
    seq: u64,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    ttl: Duration,
}

/// One Origin-Host's entries, by end-to-end id. The host's key is kept beside them, so a
/// new entry of a known host takes the `Arc<str>` for the queue from the one lookup that
/// finds the map (std's map gives no key with a mutable value; without this the host was
/// hashed twice more per request).
#[derive(Debug)]
struct HostEntries {
    key: Arc<str>,
    by_e2e: HashMap<u32, DupEntry, FixedState>,
}

/// Origin-Host as the cache keys it: DiameterIdentity compares case-insensitively
/// (RFC 6733 §4.3.1, FQDNs), and most peers already send lowercase.
fn host_key(origin_host: &str) -> std::borrow::Cow<'_, str> {
    if origin_host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(origin_host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(origin_host)
    }
}

/// At most this many waiting copies per request: a peer resending one request more often
/// than that is misbehaving, and extra copies are simply not answered twice.
const MAX_WAITERS: usize = 8;

impl DupCache {
    /// An empty cache holding at most `max_entries` requests (`[limits] dup_cache_entries`;
    /// at least 1), `max_bytes` of cached answers (an answer larger than that is not kept),
    /// each for `ttl` (`[limits] dup_cache_ttl`); `hash_seed` seeds its maps' hasher.
    pub fn new(max_entries: usize, max_bytes: usize, ttl: Duration, hash_seed: u64) -> DupCache {
        let hasher = FixedState::with_seed(hash_seed);
        DupCache {
            hosts: HashMap::with_hasher(hasher.clone()),
            hasher,
            count: 0,
            order: VecDeque::new(),
            seq: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            bytes: 0,
            ttl,
        }
    }

    /// Requests remembered, in progress or answered.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No request is remembered.
    pub fn is_empty(&self) -> bool {
        self.count == 0
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
        let host = host_key(origin_host);
        if retransmit {
            let state = self
                .hosts
                .get_mut(host.as_ref())
                .and_then(|h| h.by_e2e.get_mut(&end_to_end))
                .map(|e| &mut e.state);
            match state {
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
        // Room first: the eviction may drop this host's map. When the request replaces an
        // entry of its own key, that makes the cache one entry smaller than the bound, at
        // most (the bound is what matters, and a reused end-to-end id is rare).
        while self.count >= self.max_entries {
            if !self.evict_oldest() {
                break;
            }
        }
        self.seq += 1;
        let entry = DupEntry {
            seq: self.seq,
            state: DupState::InProgress(Vec::new()),
        };
        // One hash of the host for a known one: the map found gives the key for the queue.
        let key = match self.hosts.get_mut(host.as_ref()) {
            Some(h) => {
                if let Some(old) = h.by_e2e.insert(end_to_end, entry) {
                    // A new request without the T flag replaces the old entry (see above).
                    self.count -= 1;
                    if let DupState::Answered(a) = old.state {
                        self.bytes -= a.len();
                    }
                }
                h.key.clone()
            }
            None => {
                let key: Arc<str> = Arc::from(host.as_ref());
                let mut by_e2e = HashMap::with_hasher(self.hasher.clone());
                by_e2e.insert(end_to_end, entry);
                let entries = HostEntries {
                    key: key.clone(),
                    by_e2e,
                };
                self.hosts.insert(key.clone(), entries);
                key
            }
        };
        self.count += 1;
        self.order.push_back((now, self.seq, key, end_to_end));
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
        let host = host_key(origin_host);
        let Some(entry) = self
            .hosts
            .get_mut(host.as_ref())
            .and_then(|h| h.by_e2e.get_mut(&end_to_end))
        else {
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
            self.remove(host.as_ref(), end_to_end);
        }
        waiters
    }

    fn remove(&mut self, host: &str, end_to_end: u32) {
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        if let Some(old) = h.by_e2e.remove(&end_to_end) {
            self.count -= 1;
            if let DupState::Answered(a) = old.state {
                self.bytes -= a.len();
            }
        }
        if h.by_e2e.is_empty() {
            self.hosts.remove(host);
        }
    }

    /// Whether the queue item `(seq, host, e2e)` is still the live entry.
    fn is_live(&self, seq: u64, host: &str, end_to_end: u32) -> bool {
        self.hosts
            .get(host)
            .and_then(|h| h.by_e2e.get(&end_to_end))
            .is_some_and(|e| e.seq == seq)
    }

    /// Drops the oldest live entry; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((_, seq, host, e2e)) = self.order.pop_front() {
            if self.is_live(seq, &host, e2e) {
                self.remove(&host, e2e);
                return true;
            }
        }
        false
    }

    /// Drops entries older than the TTL.
    pub fn purge(&mut self, now: Instant) {
        while let Some((t, ..)) = self.order.front() {
            if now.saturating_duration_since(*t) < self.ttl {
                break;
            }
            let Some((_, seq, host, e2e)) = self.order.pop_front() else {
                break;
            };
            if self.is_live(seq, &host, e2e) {
                self.remove(&host, e2e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::{Header, Message, MessageWriter};

    fn req(conn: u64, hbh: u32) -> Requester {
        Requester {
            conn: ConnId(conn),
            hop_by_hop: hbh,
        }
    }

    #[test]
    fn duplicate_with_t_flag_gets_the_cached_answer() {
        let mut c = DupCache::new(100, 1 << 20, Duration::from_secs(240), 7);
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
        let mut c = DupCache::new(100, 1 << 20, Duration::from_secs(240), 7);
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
        let mut c = DupCache::new(100, 1 << 20, Duration::from_secs(240), 7);
        let now = Instant::now();
        c.check("hss.net", 7, false, req(1, 1), now);
        c.complete("hss.net", 7, Bytes::from_static(b"a"));
        assert_eq!(c.check("hss.net", 7, false, req(1, 2), now), DupCheck::New);
    }

    #[test]
    fn bounded_by_count_bytes_and_age() {
        let now = Instant::now();
        let mut c = DupCache::new(2, 1 << 20, Duration::from_secs(10), 7);
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

        let mut c = DupCache::new(100, 10, Duration::from_secs(10), 7);
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

        let mut c = DupCache::new(100, 1 << 20, Duration::from_secs(10), 7);
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
