//! The redirect cache (RFC 6733 §6.12-§6.14): where a 3006 DIAMETER_REDIRECT_INDICATION
//! sends later requests, not just the redirected one.
//!
//! §6.12: "The server contained in the selected Redirect-Host AVP SHOULD be used for all
//! messages matching the criteria set by the Redirect-Host-Usage AVP." §6.13 names the
//! criteria ([`Usage`]) and, when several cached routes match, the order in which they are
//! considered: ALL_SESSION, ALL_USER, REALM_AND_APPLICATION, ALL_REALM, ALL_APPLICATION,
//! ALL_HOST. §6.14: Redirect-Max-Cache-Time is "the maximum number of seconds the peer and
//! route table entries, created as a result of the Redirect-Host, SHOULD be cached", and
//! "once a host is no longer reachable, any associated cache, peer, and routing table entries
//! MUST be deleted" ([`RedirectCache::forget_host`]).
//!
//! Sans-IO like the rest of the crate: the caller passes `now`. The cache only stores and
//! matches; the endpoint decides whether an entry's host may take the request (an open peer
//! of ours carrying the application, not already tried) and otherwise routes as usual.
//! Bounded: at most `limit` entries (`[limits] redirect_cache_entries`; 0 caches nothing); a
//! full cache drops what expired, then the entry that would expire first, so a peer answering
//! 3006 with ever new Session-Ids cannot grow it. Kept for at most `max_time`
//! (`[limits] redirect_cache_max_time`, [`DEFAULT_MAX_TIME`]) whatever Redirect-Max-Cache-Time
//! asks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dmproto::avp_code::{ORIGIN_HOST, REDIRECT_HOST_USAGE, REDIRECT_MAX_CACHE_TIME};
use dmproto::Message;

use crate::rules::RequestView;

/// The default bound on cached redirects (entries of every usage together),
/// `[limits] redirect_cache_entries`.
pub const DEFAULT_LIMIT: usize = 4096;

/// The default cap on how long a redirect is cached, `[limits] redirect_cache_max_time`: one
/// hour. Redirect-Max-Cache-Time is an Unsigned32 of seconds (RFC 6733 §6.14), up to 136
/// years, and a cached entry overrides the routing table until it expires or its host becomes
/// unreachable (§6.12, §6.14): uncapped, any redirect agent could pin a realm, application or
/// user to a host for as long as that host stays up, past any change of the agent's mind or
/// of our configuration. The AVP is "the maximum number of seconds" an entry SHOULD be
/// cached, so keeping it less is within the RFC; an hour costs one extra 3006 round trip an
/// hour per cached key, and bounds how long a stale redirect outlives the agent's decision.
pub const DEFAULT_MAX_TIME: Duration = Duration::from_secs(3600);

/// Redirect-Host-Usage values that cache (§6.13; DONT_CACHE, 0, is the default and caches
/// nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Usage {
    /// ALL_SESSION (1): messages with the same Session-Id.
    Session,
    /// ALL_REALM (2): messages for the Destination-Realm of the redirected request.
    Realm,
    /// REALM_AND_APPLICATION (3): that realm and the request's application.
    RealmAndApplication,
    /// ALL_APPLICATION (4): the request's application.
    Application,
    /// ALL_HOST (5): messages "that would be sent to the host that generated the
    /// Redirect-Host" (the 3006's Origin-Host): matched against the next hop the normal
    /// routes choose ([`RedirectCache::for_next_hop`]).
    Host,
    /// ALL_USER (6): messages with the same User-Name.
    User,
}

impl Usage {
    /// The Redirect-Host-Usage value; `None` for DONT_CACHE (0) and for values the RFC does
    /// not define (taken as the default, DONT_CACHE).
    pub fn from_value(v: u32) -> Option<Usage> {
        Some(match v {
            1 => Usage::Session,
            2 => Usage::Realm,
            3 => Usage::RealmAndApplication,
            4 => Usage::Application,
            5 => Usage::Host,
            6 => Usage::User,
            _ => return None,
        })
    }

    /// Its place in [`RedirectCache`]'s per-usage counts.
    fn index(self) -> usize {
        self as usize
    }

    /// The RFC's name, for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Usage::Session => "ALL_SESSION",
            Usage::Realm => "ALL_REALM",
            Usage::RealmAndApplication => "REALM_AND_APPLICATION",
            Usage::Application => "ALL_APPLICATION",
            Usage::Host => "ALL_HOST",
            Usage::User => "ALL_USER",
        }
    }
}

/// What a 3006 answer asked of the cache, as [`RedirectCache::learn`] took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Cached under this usage, for the Redirect-Max-Cache-Time it asked.
    Cached(Usage),
    /// Cached under this usage, but for the cache's `max_time` instead of the `asked`
    /// seconds, which were longer.
    Capped {
        /// The Redirect-Host-Usage.
        usage: Usage,
        /// The Redirect-Max-Cache-Time it asked, in seconds.
        asked: u32,
    },
    /// A caching usage while caching is off (`redirect_cache_entries = 0`): nothing cached.
    Disabled(Usage),
    /// No Redirect-Host-Usage, DONT_CACHE, or a value §6.13 does not define: nothing cached.
    DontCache,
    /// A caching usage without Redirect-Max-Cache-Time, which §6.14 says "MUST be present":
    /// taken as DONT_CACHE (how long to keep it is unknown).
    NoCacheTime(Usage),
    /// A Redirect-Max-Cache-Time of 0, or a request without what the usage keys on (ALL_USER
    /// without User-Name, ALL_SESSION without Session-Id, a realm usage without
    /// Destination-Realm): nothing cached.
    NotKeyed(Usage),
}

/// What an entry matches. Realms and hosts are kept in lower case (DiameterIdentity compares
/// without case, RFC 6733 §4.3.1 / §6.1); Session-Id and User-Name as they came.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Session(String),
    User(String),
    RealmAndApplication(String, u32),
    Realm(String),
    Application(u32),
    Host(String),
}

impl Key {
    fn usage(&self) -> Usage {
        match self {
            Key::Session(_) => Usage::Session,
            Key::User(_) => Usage::User,
            Key::RealmAndApplication(..) => Usage::RealmAndApplication,
            Key::Realm(_) => Usage::Realm,
            Key::Application(_) => Usage::Application,
            Key::Host(_) => Usage::Host,
        }
    }

    /// The key of `usage` for a request `req` of application `app`; `None` when the request
    /// lacks what the usage keys on, and for ALL_HOST, which keys on a host, not the request.
    fn of_request(usage: Usage, req: &RequestView<'_>, app: u32) -> Option<Key> {
        let realm = || req.destination_realm.map(str::to_ascii_lowercase);
        Some(match usage {
            Usage::Session => Key::Session(req.session_id?.to_owned()),
            Usage::User => Key::User(req.user_name?.to_owned()),
            Usage::RealmAndApplication => Key::RealmAndApplication(realm()?, app),
            Usage::Realm => Key::Realm(realm()?),
            Usage::Application => Key::Application(app),
            Usage::Host => return None,
        })
    }

    /// The ALL_HOST key of `host`.
    fn host(host: &str) -> Key {
        Key::Host(host.to_ascii_lowercase())
    }
}

#[derive(Clone, Debug)]
struct Entry {
    /// The selected Redirect-Host's DiameterIdentity.
    host: String,
    expires: Instant,
}

/// The cache; see the module docs.
#[derive(Debug)]
pub struct RedirectCache {
    entries: HashMap<Key, Entry>,
    /// Entries held per [`Usage`]: a lookup builds (and allocates) the key of a usage only
    /// when an entry of that usage exists, so a cache holding one ALL_REALM entry does not
    /// cost every request a copy of its Session-Id and User-Name.
    per_usage: [usize; 6],
    /// Most entries; 0: caching is off.
    limit: usize,
    /// Longest an entry is kept, whatever its Redirect-Max-Cache-Time.
    max_time: Duration,
}

impl Default for RedirectCache {
    fn default() -> Self {
        RedirectCache::new(DEFAULT_LIMIT, DEFAULT_MAX_TIME)
    }
}

impl RedirectCache {
    /// An empty cache holding at most `limit` entries (0: it caches nothing), each for at most
    /// `max_time`.
    pub fn new(limit: usize, max_time: Duration) -> RedirectCache {
        RedirectCache {
            entries: HashMap::new(),
            per_usage: [0; 6],
            limit,
            max_time,
        }
    }

    /// New settings (a reload), applied at once: entries beyond a smaller `limit` are dropped
    /// as a full cache drops them, and none is kept past `now + max_time`.
    pub fn configure(&mut self, limit: usize, max_time: Duration, now: Instant) {
        self.limit = limit;
        self.max_time = max_time;
        if limit == 0 {
            self.retain(|_| false);
        }
        while self.entries.len() > limit {
            self.make_room(now);
        }
        if let Some(latest) = now.checked_add(max_time) {
            for e in self.entries.values_mut() {
                e.expires = e.expires.min(latest);
            }
        }
    }

    /// How many entries are held (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached: then routing costs no lookup.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes a 3006 `answer` to the request `req` (application `app`), whose Redirect-Host
    /// `host` was selected and the request sent to, and caches it as its
    /// Redirect-Host-Usage and Redirect-Max-Cache-Time ask.
    pub fn learn(
        &mut self,
        answer: &Message,
        req: &RequestView<'_>,
        app: u32,
        host: &str,
        now: Instant,
    ) -> Learned {
        let Some(usage) = answer
            .find_u32(REDIRECT_HOST_USAGE, 0)
            .and_then(Usage::from_value)
        else {
            return Learned::DontCache;
        };
        if self.limit == 0 {
            return Learned::Disabled(usage);
        }
        let Some(secs) = answer.find_u32(REDIRECT_MAX_CACHE_TIME, 0) else {
            return Learned::NoCacheTime(usage);
        };
        let key = match usage {
            Usage::Host => answer.find_str(ORIGIN_HOST, 0).map(Key::host),
            u => Key::of_request(u, req, app),
        };
        let asked = Duration::from_secs(secs.into());
        let expires = now.checked_add(asked.min(self.max_time));
        let (Some(key), Some(expires)) = (key, expires.filter(|_| secs > 0)) else {
            return Learned::NotKeyed(usage);
        };
        if !self.entries.contains_key(&key) && self.entries.len() >= self.limit {
            self.make_room(now);
        }
        let host = host.to_ascii_lowercase();
        if self.entries.insert(key, Entry { host, expires }).is_none() {
            self.per_usage[usage.index()] += 1;
        }
        if asked > self.max_time {
            Learned::Capped { usage, asked: secs }
        } else {
            Learned::Cached(usage)
        }
    }

    /// The cached host for `req` (application `app`), of the matching entries the first in
    /// §6.13's order whose host `take` accepts (returning what it made of it); ALL_HOST is
    /// left to [`RedirectCache::for_next_hop`]. Expired entries met on the way are dropped.
    pub fn lookup<T>(
        &mut self,
        req: &RequestView<'_>,
        app: u32,
        now: Instant,
        mut take: impl FnMut(&str) -> Option<T>,
    ) -> Option<(Usage, T)> {
        let present = self.per_usage;
        // §6.13's order: ALL_SESSION, ALL_USER, REALM_AND_APPLICATION, ALL_REALM,
        // ALL_APPLICATION (ALL_HOST, last, is matched after routing).
        [
            Usage::Session,
            Usage::User,
            Usage::RealmAndApplication,
            Usage::Realm,
            Usage::Application,
        ]
        .into_iter()
        .filter(|u| present[u.index()] > 0)
        .find_map(|u| {
            let key = Key::of_request(u, req, app)?;
            Some((u, self.take_live(&key, now, &mut take)?))
        })
    }

    /// ALL_HOST: the cached host for a request the normal routes send to `next_hop`, if
    /// `take` accepts it.
    pub fn for_next_hop<T>(
        &mut self,
        next_hop: &str,
        now: Instant,
        take: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        if self.per_usage[Usage::Host.index()] == 0 {
            return None;
        }
        self.take_live(&Key::host(next_hop), now, take)
    }

    /// §6.14: "once a host is no longer reachable, any associated cache ... entries MUST be
    /// deleted": the entries sending requests to `host` (its connection went down). Returns
    /// how many.
    pub fn forget_host(&mut self, host: &str) -> usize {
        let before = self.entries.len();
        self.retain(|e| !e.host.eq_ignore_ascii_case(host));
        before - self.entries.len()
    }

    /// The entry under `key` if it has not expired (dropping it if it has) and `take`
    /// accepts its host.
    fn take_live<T>(
        &mut self,
        key: &Key,
        now: Instant,
        mut take: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let e = self.entries.get(key)?;
        if now >= e.expires {
            self.remove(key);
            return None;
        }
        take(&e.host)
    }

    /// Room for one more: drop the expired entries; if none had, the one that would expire
    /// first (the least time left to serve).
    fn make_room(&mut self, now: Instant) {
        self.retain(|e| now < e.expires);
        if self.entries.len() < self.limit {
            return;
        }
        let first = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.expires)
            .map(|(k, _)| k.clone());
        if let Some(k) = first {
            self.remove(&k);
        }
    }

    fn remove(&mut self, key: &Key) {
        if self.entries.remove(key).is_some() {
            self.per_usage[key.usage().index()] -= 1;
        }
    }

    /// Keeps the entries `keep` accepts, the per-usage counts with them.
    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        let per_usage = &mut self.per_usage;
        self.entries.retain(|k, e| {
            let kept = keep(e);
            if !kept {
                per_usage[k.usage().index()] -= 1;
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::{AvpFlags, Header, MessageWriter};

    fn answer(usage: Option<u32>, secs: Option<u32>) -> Message {
        let mut w = MessageWriter::new(Header::request(272, 4, 7, 8).answer());
        w.str(264, AvpFlags::M, 0, "agent.example.net");
        w.u32(268, AvpFlags::M, 0, 3006);
        w.str(292, AvpFlags::M, 0, "aaa://s3.example.net");
        if let Some(u) = usage {
            w.u32(REDIRECT_HOST_USAGE, AvpFlags::M, 0, u);
        }
        if let Some(s) = secs {
            w.u32(REDIRECT_MAX_CACHE_TIME, AvpFlags::M, 0, s);
        }
        Message::decode(w.finish().unwrap()).unwrap()
    }

    fn view<'a>(session: &'a str, realm: &'a str) -> RequestView<'a> {
        RequestView {
            session_id: Some(session),
            destination_realm: Some(realm),
            ..RequestView::default()
        }
    }

    fn any(h: &str) -> Option<String> {
        Some(h.to_owned())
    }

    #[test]
    fn usages_without_a_cache_time_or_key_cache_nothing() {
        let now = Instant::now();
        let mut c = RedirectCache::default();
        let v = view("s;1", "example.net");
        let learn = |c: &mut RedirectCache, u, s| c.learn(&answer(u, s), &v, 4, "s3", now);
        assert_eq!(learn(&mut c, None, Some(60)), Learned::DontCache);
        assert_eq!(learn(&mut c, Some(0), Some(60)), Learned::DontCache);
        assert_eq!(learn(&mut c, Some(7), Some(60)), Learned::DontCache);
        assert_eq!(
            learn(&mut c, Some(2), None),
            Learned::NoCacheTime(Usage::Realm)
        );
        assert_eq!(
            learn(&mut c, Some(2), Some(0)),
            Learned::NotKeyed(Usage::Realm)
        );
        assert_eq!(
            learn(&mut c, Some(6), Some(60)),
            Learned::NotKeyed(Usage::User),
            "no User-Name"
        );
        assert!(c.is_empty());
    }

    #[test]
    fn all_host_matches_the_next_hop_that_sent_the_3006() {
        let now = Instant::now();
        let mut c = RedirectCache::default();
        let v = view("s;1", "example.net");
        assert_eq!(
            c.learn(&answer(Some(5), Some(60)), &v, 4, "S3.example.net", now),
            Learned::Cached(Usage::Host)
        );
        assert_eq!(c.lookup(&v, 4, now, any), None, "not keyed on the request");
        assert_eq!(
            c.for_next_hop("AGENT.example.net", now, any).as_deref(),
            Some("s3.example.net")
        );
        assert_eq!(c.for_next_hop("s1.example.net", now, any), None);
        assert_eq!(c.forget_host("s3.example.net"), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn the_cache_is_bounded_and_drops_what_expires_first() {
        let now = Instant::now();
        let mut c = RedirectCache::new(2, DEFAULT_MAX_TIME);
        let a = answer(Some(1), Some(60));
        let b = answer(Some(1), Some(30));
        c.learn(&a, &view("s;1", "r"), 4, "h1", now);
        c.learn(&b, &view("s;2", "r"), 4, "h2", now);
        c.learn(&a, &view("s;3", "r"), 4, "h3", now);
        assert_eq!(c.len(), 2);
        let got = |c: &mut RedirectCache, s| c.lookup(&view(s, "r"), 4, now, any).map(|x| x.1);
        assert_eq!(got(&mut c, "s;2"), None, "the 30 s one made room");
        assert_eq!(got(&mut c, "s;1").as_deref(), Some("h1"));
        assert_eq!(got(&mut c, "s;3").as_deref(), Some("h3"));
        // Expired entries go first, whatever else is held.
        let later = now + Duration::from_secs(61);
        c.learn(&b, &view("s;4", "r"), 4, "h4", later);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_cache_time_beyond_the_cap_is_cut_to_it_and_said_so() {
        let now = Instant::now();
        let cap = Duration::from_secs(3600);
        let mut c = RedirectCache::new(16, cap);
        let got = |c: &mut RedirectCache, s, at| c.lookup(&view(s, "r"), 4, at, any).map(|x| x.1);
        // 136 years asked: kept for the cap, and the caller learns it was cut.
        assert_eq!(
            c.learn(
                &answer(Some(1), Some(u32::MAX)),
                &view("s;1", "r"),
                4,
                "h1",
                now
            ),
            Learned::Capped {
                usage: Usage::Session,
                asked: u32::MAX
            }
        );
        // Exactly the cap, or less: as asked.
        assert_eq!(
            c.learn(
                &answer(Some(1), Some(3600)),
                &view("s;2", "r"),
                4,
                "h2",
                now
            ),
            Learned::Cached(Usage::Session)
        );
        assert_eq!(
            c.learn(&answer(Some(1), Some(60)), &view("s;3", "r"), 4, "h3", now),
            Learned::Cached(Usage::Session)
        );
        let before = now + cap - Duration::from_secs(1);
        assert_eq!(got(&mut c, "s;1", before).as_deref(), Some("h1"));
        assert_eq!(got(&mut c, "s;2", before).as_deref(), Some("h2"));
        assert_eq!(got(&mut c, "s;1", now + cap), None, "gone at the cap");
        assert_eq!(got(&mut c, "s;2", now + cap), None);
        assert_eq!(got(&mut c, "s;3", now + cap), None);
    }

    #[test]
    fn no_entries_means_no_caching() {
        let now = Instant::now();
        let mut c = RedirectCache::new(0, DEFAULT_MAX_TIME);
        let v = view("s;1", "r");
        assert_eq!(
            c.learn(&answer(Some(2), Some(60)), &v, 4, "h1", now),
            Learned::Disabled(Usage::Realm)
        );
        assert_eq!(
            c.learn(&answer(None, Some(60)), &v, 4, "h1", now),
            Learned::DontCache
        );
        assert!(c.is_empty());
        assert_eq!(c.lookup(&v, 4, now, any), None);
    }

    #[test]
    fn new_settings_apply_to_what_is_cached() {
        let now = Instant::now();
        let mut c = RedirectCache::default();
        for (i, secs) in [600u32, 60, 6000].into_iter().enumerate() {
            let sid = format!("s;{i}");
            c.learn(&answer(Some(1), Some(secs)), &view(&sid, "r"), 4, "h", now);
        }
        assert_eq!(c.len(), 3);
        // A smaller bound drops the entries expiring first; a shorter cap shortens the rest.
        c.configure(2, Duration::from_secs(120), now);
        assert_eq!(c.len(), 2);
        let got = |c: &mut RedirectCache, s, at| c.lookup(&view(s, "r"), 4, at, any).map(|x| x.1);
        assert_eq!(got(&mut c, "s;1", now), None, "the 60 s one went");
        let t = now + Duration::from_secs(119);
        assert!(got(&mut c, "s;0", t).is_some() && got(&mut c, "s;2", t).is_some());
        assert_eq!(got(&mut c, "s;0", now + Duration::from_secs(120)), None);
        assert_eq!(got(&mut c, "s;2", now + Duration::from_secs(120)), None);
        // 0: everything goes, nothing more is cached.
        c.learn(&answer(Some(1), Some(60)), &view("s;9", "r"), 4, "h", now);
        c.configure(0, DEFAULT_MAX_TIME, now);
        assert!(c.is_empty());
        assert_eq!(
            c.learn(&answer(Some(1), Some(60)), &view("s;9", "r"), 4, "h", now),
            Learned::Disabled(Usage::Session)
        );
    }
}
