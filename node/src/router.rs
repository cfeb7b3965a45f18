//! Where an outgoing request goes (RFC 6733 §6.1): a plain decision over plain data.
//!
//! The router keeps what it needs to know about each peer — its identity and realm, whether
//! it may carry new requests (open, watchdog OKAY, not draining), and the applications it
//! shares with us from CER/CEA — updated by the node from the peer state machines' actions.
//! [`Router::route`] then decides, in this order:
//!
//! 1. **Loop**: our own Origin-Host in a Route-Record → 3005 DIAMETER_LOOP_DETECTED.
//! 2. **Destination-Host**: that peer, if it is usable and shares the application.
//! 3. **Realm table**: the `[[routes]]` entries for the Destination-Realm (with this app id,
//!    or for any app), the lowest priority that has a usable peer sharing the application.
//! 4. **Directly connected peers of that realm** (their Origin-Realm from CER/CEA), when the
//!    realm table has no entry for it — a peer is the obvious route to its own realm.
//! 5. **Default route**.
//!
//! With routing rules (`[routing] rules` / `rules_file`, freeDiameter's `rt_default.conf`
//! syntax, [`crate::rules`]) the order above becomes scores, as freeDiameter's
//! `routing_dispatch.c` does: every usable peer that shares the application is a candidate
//! starting at -2; Destination-Host naming it adds FINALDEST (100), its realm being the
//! Destination-Realm adds REALM (15), being in the most preferred realm-table tier that has a
//! candidate adds DEFAULT_REALM (10), being in the default route adds DEFAULT (5); then every
//! matching rule adds its score. The highest score that is not negative wins; a negative score
//! (NO_DELIVERY) excludes the peer. [`Router::explain`] shows the work.
//!
//! Equal candidates share load round-robin. When nothing fits: 3007
//! DIAMETER_APPLICATION_UNSUPPORTED if some usable peer on the route lacks only the
//! application, 3002 DIAMETER_UNABLE_TO_DELIVER if the route's peers are all unusable, 3003
//! DIAMETER_REALM_NOT_SERVED if no route applies at all.

use foldhash::{HashMap, HashMapExt};

use dmproto::result_code as rc;

use crate::config::Config;
use crate::peer::{AppSet, PeerId};
use crate::rules::{score, Candidate, RequestView, RuleSet};

/// A request, as far as routing cares: what routing rules may look at (the rt_default
/// criteria, [`RequestView`], which carries the destination too) and the Route-Record values
/// for loop detection.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteRequest<'a> {
    /// Destination-Host/-Realm, application and the rule criteria.
    pub view: RequestView<'a>,
    /// Route-Record values; our own Origin-Host among them is a loop (§6.1.3: 3005).
    pub route_records: &'a [&'a str],
}

/// How the routing rules decided (`dmbridge route --explain`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explanation {
    /// The rules that matched the request: line in the rules text, and the rule.
    pub matched: Vec<(usize, String)>,
    /// Every candidate (usable, shares the application, not excluded) with its final score.
    pub scores: Vec<(String, i32)>,
}

/// Why a request cannot be sent: the Result-Code of the local error answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (Result-Code {result_code})")]
pub struct RouteError {
    /// 3002, 3003, 3005 or 3007 (RFC 6733 §7.1.3): what a relayed request is answered, and
    /// what [`crate::app::RequestError::NoRoute`] reports to the script.
    pub result_code: u32,
    /// Why, naming the realm, host or application that had no usable peer (Error-Message).
    pub message: String,
}

/// What the router knows about one peer.
#[derive(Clone, Debug, Default)]
struct PeerInfo {
    host: String,
    /// Origin-Realm from CER/CEA, once open.
    realm: Option<String>,
    usable: bool,
    apps: AppSet,
}

#[derive(Clone, Debug)]
struct Route {
    realm: String,
    app_id: Option<u32>,
    priority: u32,
    peers: Vec<PeerId>,
}

/// Round-robin positions, per group of equal candidates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RrKey {
    /// A realm-table tier, named by the index of its first route in `Router::routes` (one
    /// realm, application and priority give one first route; `set_routes` clears the
    /// positions): no copy of the realm per routed request.
    Table {
        first_route: usize,
        app_id: u32,
        priority: u32,
    },
    /// The directly connected peers of one realm (step 4), named by the first of them (the
    /// lowest id with that realm; ids are never reused): no copy of the realm per routed
    /// request. When that peer goes down the realm's next peer names it, and round-robin
    /// starts over.
    Direct {
        first_peer: PeerId,
        app_id: u32,
    },
    Default {
        app_id: u32,
    },
    /// Peers tied on the best score under the routing rules.
    Scored {
        app_id: u32,
        peers: Vec<PeerId>,
    },
}

/// The routing table and peer view.
#[derive(Debug)]
pub struct Router {
    origin_host: String,
    peers: Vec<PeerInfo>,
    routes: Vec<Route>,
    default: Vec<PeerId>,
    rules: RuleSet,
    /// Round-robin positions, looked up per routed request. Seeded foldhash rather than
    /// SipHash (cheaper): realms in the keys may come from requests, a peer's choice.
    rr: HashMap<RrKey, usize>,
    /// The candidates of one routing step, kept between requests so that gathering them
    /// allocates nothing once it has grown (at most one entry per peer).
    scratch: Vec<PeerId>,
}

impl Router {
    /// Builds the table from the configuration. `peer_id` maps a configured host to the id
    /// the peer table gave it.
    pub fn new(config: &Config, peer_id: impl Fn(&str) -> Option<PeerId>) -> Router {
        let ids = |hosts: &[String]| hosts.iter().filter_map(|h| peer_id(h)).collect::<Vec<_>>();
        let mut router = Router {
            origin_host: config.node.origin_host.clone(),
            peers: Vec::new(),
            routes: config
                .routes
                .iter()
                .map(|r| Route {
                    realm: r.realm.to_ascii_lowercase(),
                    app_id: r.app_id,
                    priority: r.priority,
                    // sorted and deduplicated as a tier's candidates are: a tier of one
                    // route is its list as it stands (`route_table`)
                    peers: {
                        let mut p = ids(&r.peers);
                        p.sort_unstable();
                        p.dedup();
                        p
                    },
                })
                .collect(),
            default: ids(&config.default_route),
            rules: config.routing.rules.clone(),
            rr: HashMap::new(),
            scratch: Vec::new(),
        };
        for p in &config.peers {
            if let Some(id) = peer_id(&p.host) {
                router.info_mut(id).host = p.host.clone();
            }
        }
        router
    }

    /// A reload: the realm table and default route from `config`; what the router learnt
    /// of each peer (up, realm, applications, usable) stays, so open peers keep serving.
    pub fn set_routes(&mut self, config: &Config, peer_id: impl Fn(&str) -> Option<PeerId>) {
        let fresh = Router::new(config, &peer_id);
        self.routes = fresh.routes;
        self.default = fresh.default;
        self.rules = fresh.rules;
        self.rr.clear();
        for p in &config.peers {
            if let Some(id) = peer_id(&p.host) {
                self.info_mut(id).host.clone_from(&p.host);
            }
        }
    }

    fn info_mut(&mut self, id: PeerId) -> &mut PeerInfo {
        if self.peers.len() <= id.0 {
            self.peers.resize_with(id.0 + 1, PeerInfo::default);
        }
        // In range after the resize above. Peer ids come from the peer table, never from
        // the wire, so the resize is bounded by the number of peers.
        &mut self.peers[id.0]
    }

    fn info(&self, id: PeerId) -> Option<&PeerInfo> {
        self.peers.get(id.0)
    }

    /// The peer finished its capabilities exchange: identity, realm, shared applications.
    /// It is not usable until [`Router::set_usable`] says so (watchdog OKAY).
    pub fn peer_up(&mut self, id: PeerId, host: &str, realm: &str, apps: AppSet) {
        let info = self.info_mut(id);
        info.host = host.to_string();
        info.realm = Some(realm.to_ascii_lowercase());
        info.apps = apps;
    }

    /// Whether the peer may take new requests, from the state machine's
    /// [`crate::peer::Action::Usable`]: set at watchdog OKAY (RFC 3539 §3.4), cleared when
    /// the connection turns suspect or the peer is stopping.
    pub fn set_usable(&mut self, id: PeerId, usable: bool) {
        self.info_mut(id).usable = usable;
    }

    /// The peer's connection is gone.
    pub fn peer_down(&mut self, id: PeerId) {
        let info = self.info_mut(id);
        info.usable = false;
        info.realm = None;
        info.apps = AppSet::default();
    }

    /// Whether the peer may take a request of application `app` now: usable, and it
    /// advertised the application (for a request sent to a named peer, not chosen by
    /// [`Router::route`]: the host a 3006 answer redirects to, RFC 6733 §6.12).
    pub fn carries(&self, id: PeerId, app: u32) -> bool {
        self.eligible(id, app, &[])
    }

    /// Whether [`Router::route`] may choose the peer now.
    pub fn is_usable(&self, id: PeerId) -> bool {
        self.info(id).is_some_and(|p| p.usable)
    }

    /// Chooses the peer for `req`.
    pub fn route(&mut self, req: &RouteRequest<'_>) -> Result<PeerId, RouteError> {
        self.route_excluding(req, &[])
    }

    /// Like [`Router::route`], never choosing a peer in `exclude` (used to find an
    /// alternate peer when a request is retransmitted after a failover).
    pub fn route_excluding(
        &mut self,
        req: &RouteRequest<'_>,
        exclude: &[PeerId],
    ) -> Result<PeerId, RouteError> {
        if self.rules.is_empty() {
            self.route_plain(req, exclude)
        } else {
            self.route_scored(req, exclude, None)
        }
    }

    /// Routes `req` as [`Router::route`] does and says how the rules scored the candidates.
    pub fn explain(&mut self, req: &RouteRequest<'_>) -> (Result<PeerId, RouteError>, Explanation) {
        let mut e = Explanation::default();
        let r = if self.rules.is_empty() {
            self.route_plain(req, &[])
        } else {
            self.route_scored(req, &[], Some(&mut e))
        };
        (r, e)
    }

    /// The peer's Diameter identity, as the router knows it.
    pub fn host(&self, id: PeerId) -> Option<&str> {
        self.info(id).map(|p| p.host.as_str())
    }

    /// RFC 6733 §6.1.3: our own identity in a Route-Record is a loop (3005).
    fn check_loop(&self, req: &RouteRequest<'_>) -> Result<(), RouteError> {
        if req
            .route_records
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&self.origin_host))
        {
            return Err(RouteError {
                result_code: rc::DIAMETER_LOOP_DETECTED,
                message: format!("loop: {} is already in Route-Record", self.origin_host),
            });
        }
        Ok(())
    }

    /// Usable, shares the application, not excluded.
    fn eligible(&self, id: PeerId, app: u32, exclude: &[PeerId]) -> bool {
        !exclude.contains(&id)
            && self
                .info(id)
                .is_some_and(|p| p.usable && p.apps.supports(app))
    }

    /// Peer selection by scores (module docs; freeDiameter `routing_dispatch.c`).
    fn route_scored(
        &mut self,
        req: &RouteRequest<'_>,
        exclude: &[PeerId],
        explain: Option<&mut Explanation>,
    ) -> Result<PeerId, RouteError> {
        self.check_loop(req)?;
        let app = req.view.app_id;
        let ids: Vec<PeerId> = (0..self.peers.len())
            .map(PeerId)
            .filter(|id| self.eligible(*id, app, exclude))
            .collect();
        let realm = req.view.destination_realm.map(str::to_ascii_lowercase);
        let best_tier = realm
            .as_deref()
            .and_then(|r| {
                self.tiers(r, app)
                    .into_iter()
                    .map(|(_, t)| t)
                    .find(|t| t.iter().any(|id| ids.contains(id)))
            })
            .unwrap_or_default();
        let mut scores: Vec<i32> = ids
            .iter()
            .map(|id| {
                let p = &self.peers[id.0];
                let mut s = score::INI;
                if req
                    .view
                    .destination_host
                    .is_some_and(|h| h.eq_ignore_ascii_case(&p.host))
                {
                    s += score::FINALDEST;
                }
                if realm.is_some() && p.realm == realm {
                    s += score::REALM;
                }
                if best_tier.contains(id) {
                    s += score::DEFAULT_REALM;
                }
                if self.default.contains(id) {
                    s += score::DEFAULT;
                }
                s
            })
            .collect();
        let candidates: Vec<Candidate<'_>> = ids
            .iter()
            .map(|id| {
                let p = &self.peers[id.0];
                Candidate {
                    host: &p.host,
                    realm: p.realm.as_deref(),
                }
            })
            .collect();
        let matched = self.rules.apply(&req.view, &candidates, &mut scores);
        if let Some(e) = explain {
            e.matched = matched
                .iter()
                .map(|&i| {
                    let r = &self.rules.rules()[i];
                    (r.line, r.to_string())
                })
                .collect();
            e.scores = candidates
                .iter()
                .zip(&scores)
                .map(|(c, s)| (c.host.to_string(), *s))
                .collect();
        }
        let best = scores.iter().copied().max().filter(|b| *b >= 0);
        let Some(best) = best else {
            // No candidate: the RFC order says why (3002, 3003, 3005, 3007). A candidate that
            // the RFC order would take but the rules pushed below 0 is excluded: 3002.
            return match self.route_plain(req, exclude) {
                Err(e) => Err(e),
                Ok(_) => Err(RouteError {
                    result_code: rc::DIAMETER_UNABLE_TO_DELIVER,
                    message: format!(
                        "the routing rules exclude every peer for application {app} (negative score)"
                    ),
                }),
            };
        };
        let tied: Vec<PeerId> = ids
            .iter()
            .zip(&scores)
            .filter(|(_, s)| **s == best)
            .map(|(id, _)| *id)
            .collect();
        let key = RrKey::Scored {
            app_id: app,
            peers: tied.clone(),
        };
        self.pick(key, &tied)
            .ok_or_else(|| self.no_peer("(rules)", app, false))
    }

    /// The RFC 6733 §6.1 order of the module docs, without rules.
    fn route_plain(
        &mut self,
        req: &RouteRequest<'_>,
        exclude: &[PeerId],
    ) -> Result<PeerId, RouteError> {
        let app = req.view.app_id;
        self.check_loop(req)?;
        let ok = |r: &Router, id: PeerId| r.eligible(id, app, exclude);

        if let Some(host) = req.view.destination_host {
            let found = self
                .peers
                .iter()
                .position(|p| p.host.eq_ignore_ascii_case(host))
                .map(PeerId);
            if let Some(id) = found.filter(|id| ok(self, *id)) {
                return Ok(id);
            }
        }

        let mut lacking_app = false;
        if let Some(realm) = req.view.destination_realm {
            if let Some(routed) = self.route_table(realm, app, exclude) {
                return routed;
            }
            // Step 4, the realm's own peers, gathered in the router's scratch list and their
            // realms (kept lower case) compared without a lowered copy of the request's:
            // nothing allocated per request (issue 15 item 2).
            let mut direct = std::mem::take(&mut self.scratch);
            direct.clear();
            direct.extend((0..self.peers.len()).map(PeerId).filter(|id| {
                self.info(*id)
                    .and_then(|p| p.realm.as_deref())
                    .is_some_and(|r| r.eq_ignore_ascii_case(realm))
            }));
            lacking_app |= direct
                .iter()
                .any(|id| self.lacks_only_app(*id, app, exclude));
            let key = direct.first().map(|&first_peer| RrKey::Direct {
                first_peer,
                app_id: app,
            });
            direct.retain(|id| ok(self, *id));
            let picked = key.and_then(|key| self.pick(key, &direct));
            self.scratch = direct;
            if let Some(id) = picked {
                return Ok(id);
            }
        }

        if self.default.is_empty() {
            let realm = req.view.destination_realm.unwrap_or("(none)");
            if lacking_app {
                return Err(self.no_peer(realm, app, true));
            }
            return Err(RouteError {
                result_code: rc::DIAMETER_REALM_NOT_SERVED,
                message: format!("no route to realm {realm} and no default route"),
            });
        }
        let mut default = std::mem::take(&mut self.scratch);
        default.clear();
        default.extend_from_slice(&self.default);
        lacking_app |= default
            .iter()
            .any(|id| self.lacks_only_app(*id, app, exclude));
        default.retain(|id| ok(self, *id));
        let picked = self.pick(RrKey::Default { app_id: app }, &default);
        self.scratch = default;
        match picked {
            Some(id) => Ok(id),
            None => Err(self.no_peer(
                req.view.destination_realm.unwrap_or("(default route)"),
                app,
                lacking_app,
            )),
        }
    }

    /// The realm-table entries for (realm, app), as (priority, peers) from the most preferred.
    /// Step 3, the realm table, as [`Router::tiers`] orders it, without building the tiers
    /// (this runs for every request the node originates): tiers by priority, the lowest
    /// first; in the first tier with a usable peer sharing the application, the next of
    /// them round-robin. A tier of one route is that route's (sorted) list; only a priority
    /// shared by several routes is merged into a new list. `None` when no route applies to
    /// the realm (step 4 follows); the error when routes apply but none has a usable peer.
    fn route_table(
        &mut self,
        realm: &str,
        app: u32,
        exclude: &[PeerId],
    ) -> Option<Result<PeerId, RouteError>> {
        // routes' realms are lower case (Router::new): equal to the request's lowered
        let applies =
            |r: &Route| r.realm.eq_ignore_ascii_case(realm) && r.app_id.is_none_or(|a| a == app);
        let mut lacking_app = false;
        let mut done_up_to: Option<u32> = None;
        loop {
            // the next tier: the lowest priority above those tried, and its first route
            let mut next: Option<(u32, usize)> = None;
            for (i, r) in self.routes.iter().enumerate() {
                if applies(r)
                    && done_up_to.is_none_or(|p| r.priority > p)
                    && next.is_none_or(|(p, _)| r.priority < p)
                {
                    next = Some((r.priority, i));
                }
            }
            let Some((priority, first_route)) = next else {
                break;
            };
            done_up_to = Some(priority);
            let in_tier = |r: &Route| applies(r) && r.priority == priority;
            let merged: Vec<PeerId>;
            let tier: &[PeerId] = if self.routes[first_route + 1..].iter().any(in_tier) {
                let mut v: Vec<PeerId> = self
                    .routes
                    .iter()
                    .filter(|r| in_tier(r))
                    .flat_map(|r| r.peers.iter().copied())
                    .collect();
                v.sort_unstable();
                v.dedup();
                merged = v;
                &merged
            } else {
                &self.routes[first_route].peers
            };
            lacking_app |= tier.iter().any(|id| self.lacks_only_app(*id, app, exclude));
            let usable = tier
                .iter()
                .filter(|id| self.eligible(**id, app, exclude))
                .count();
            if usable == 0 {
                continue;
            }
            let key = RrKey::Table {
                first_route,
                app_id: app,
                priority,
            };
            let position = self.rr.entry(key).or_insert(0);
            let nth = *position % usable;
            *position = position.wrapping_add(1);
            return tier
                .iter()
                .copied()
                .filter(|id| self.eligible(*id, app, exclude))
                .nth(nth)
                .map(Ok);
        }
        done_up_to.map(|_| Err(self.no_peer(&realm.to_ascii_lowercase(), app, lacking_app)))
    }

    fn tiers(&self, realm: &str, app: u32) -> Vec<(u32, Vec<PeerId>)> {
        let mut tiers: Vec<(u32, Vec<PeerId>)> = Vec::new();
        for r in &self.routes {
            if r.realm != realm || r.app_id.is_some_and(|a| a != app) {
                continue;
            }
            match tiers.iter_mut().find(|(p, _)| *p == r.priority) {
                Some((_, peers)) => peers.extend(&r.peers),
                None => tiers.push((r.priority, r.peers.clone())),
            }
        }
        tiers.sort_by_key(|(p, _)| *p);
        for (_, peers) in &mut tiers {
            peers.sort();
            peers.dedup();
        }
        tiers
    }

    /// Usable and not excluded, but without the application.
    fn lacks_only_app(&self, id: PeerId, app: u32, exclude: &[PeerId]) -> bool {
        !exclude.contains(&id)
            && self
                .info(id)
                .is_some_and(|p| p.usable && !p.apps.supports(app))
    }

    fn no_peer(&self, realm: &str, app: u32, lacking_app: bool) -> RouteError {
        if lacking_app {
            RouteError {
                result_code: rc::DIAMETER_APPLICATION_UNSUPPORTED,
                message: format!("no peer for realm {realm} advertised application {app}"),
            }
        } else {
            RouteError {
                result_code: rc::DIAMETER_UNABLE_TO_DELIVER,
                message: format!("no usable peer for realm {realm}, application {app}"),
            }
        }
    }

    fn pick(&mut self, key: RrKey, candidates: &[PeerId]) -> Option<PeerId> {
        if candidates.is_empty() {
            return None;
        }
        let next = self.rr.entry(key).or_insert(0);
        let chosen = candidates.get(*next % candidates.len()).copied();
        *next = next.wrapping_add(1);
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[node]
origin_host = "me.example.net"
origin_realm = "example.net"
[[applications]]
id = 16777216
vendor = 10415
[[peers]]
host = "hss1.ims.net"
address = "192.0.2.1"
[[peers]]
host = "hss2.ims.net"
address = "192.0.2.2"
[[peers]]
host = "hss3.ims.net"
address = "192.0.2.3"
[[peers]]
host = "dra.example.net"
address = "192.0.2.9"
[[peers]]
host = "ocs.billing.net"
mode = "accept"
[[routes]]
realm = "ims.net"
app_id = 16777216
peers = ["hss1.ims.net", "hss2.ims.net"]
priority = 1
[[routes]]
realm = "ims.net"
peers = ["hss3.ims.net"]
priority = 5
"#;

    const CX: u32 = 16777216;
    const SH: u32 = 16777217;

    fn id(host: &str) -> PeerId {
        PeerId(match host {
            "hss1.ims.net" => 0,
            "hss2.ims.net" => 1,
            "hss3.ims.net" => 2,
            "dra.example.net" => 3,
            "ocs.billing.net" => 4,
            _ => 99,
        })
    }

    fn router(default: bool) -> Router {
        let mut config = crate::config::parse(CONFIG).unwrap();
        if default {
            config.default_route = vec!["dra.example.net".into()];
        }
        Router::new(&config, |h| Some(id(h)))
    }

    fn up(r: &mut Router, host: &str, realm: &str, apps: &[u32]) {
        r.peer_up(
            id(host),
            host,
            realm,
            AppSet::from_ids(apps.iter().copied()),
        );
        r.set_usable(id(host), true);
    }

    fn req(
        app: u32,
        host: Option<&'static str>,
        realm: Option<&'static str>,
    ) -> RouteRequest<'static> {
        RouteRequest {
            view: RequestView {
                app_id: app,
                destination_host: host,
                destination_realm: realm,
                ..RequestView::default()
            },
            route_records: &[],
        }
    }

    /// The test router with `rules` (rt_default.conf syntax).
    fn ruled(rules: &str) -> Router {
        let mut config = crate::config::parse(CONFIG).unwrap();
        config.default_route = vec!["dra.example.net".into()];
        config.routing.rules = crate::rules::parse(rules).unwrap();
        let mut r = Router::new(&config, |h| Some(id(h)));
        up(&mut r, "hss1.ims.net", "ims.net", &[CX]);
        up(&mut r, "hss2.ims.net", "ims.net", &[CX]);
        up(&mut r, "hss3.ims.net", "ims.net", &[CX]);
        up(&mut r, "dra.example.net", "example.net", &[CX]);
        r
    }

    fn hosts(r: &mut Router, q: &RouteRequest<'_>, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let id = r.route(q).unwrap();
                r.host(id).unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn rules_add_scores_and_the_best_wins() {
        // Without rules, ims.net goes to the priority-1 tier (hss1/hss2). A rule for
        // User-Name alice moves her to hss3, above the realm-table tier (-2 + 15 + 20).
        let mut r = ruled("un=\"alice\" : \"hss3.ims.net\" += 20 ;\n");
        let mut q = req(CX, None, Some("ims.net"));
        q.view.user_name = Some("alice");
        assert_eq!(hosts(&mut r, &q, 3), ["hss3.ims.net"; 3]);
        let (chosen, e) = r.explain(&q);
        assert_eq!(chosen, Ok(id("hss3.ims.net")));
        assert_eq!(
            e.matched,
            [(1, "un=\"alice\" : \"hss3.ims.net\" += 20 ;".into())]
        );
        let score = |h: &str| e.scores.iter().find(|(x, _)| x == h).map(|(_, s)| *s);
        assert_eq!(score("hss1.ims.net"), Some(-2 + 15 + 10));
        assert_eq!(score("hss3.ims.net"), Some(-2 + 15 + 20));
        assert_eq!(score("dra.example.net"), Some(-2 + 5));
        // Bob matches nothing: the realm table's best tier, shared round-robin.
        let mut q = req(CX, None, Some("ims.net"));
        q.view.user_name = Some("bob");
        let got = hosts(&mut r, &q, 4);
        assert_eq!(
            got,
            [
                "hss1.ims.net",
                "hss2.ims.net",
                "hss1.ims.net",
                "hss2.ims.net"
            ]
        );
    }

    #[test]
    fn equal_rule_scores_take_turns() {
        // A regex over peers and realms: the three HSSs tie (-2 + 15 + 20, plus 10 for the
        // priority-1 tier: lift hss3 to match it).
        let rules = "dr=\"ims.net\" : [\"^hss\"] += 20 ;\n\
                     * : \"hss3.ims.net\" += DEFAULT_REALM ;\n";
        let mut r = ruled(rules);
        let q = req(CX, None, Some("ims.net"));
        let got = hosts(&mut r, &q, 6);
        for h in ["hss1.ims.net", "hss2.ims.net", "hss3.ims.net"] {
            assert_eq!(got.iter().filter(|x| *x == h).count(), 2, "{got:?}");
        }
        assert_eq!(got[0..3], got[3..6], "{got:?}");
    }

    #[test]
    fn negative_scores_exclude() {
        let mut r = ruled("cmd=\"CCR\" : rlm=\"ims.net\" += NO_DELIVERY ;\n");
        let mut q = req(CX, None, Some("ims.net"));
        q.view.cmd_code = 272;
        q.view.cmd_abbrev = Some("CCR");
        // The HSSs are excluded; the default route remains (-2 + 5).
        assert_eq!(hosts(&mut r, &q, 2), ["dra.example.net"; 2]);
        // Even Destination-Host does not override an exclusion (-2 + 100 + 15 + 10 - 70 = 53
        // is still positive: FINALDEST wins over one NO_DELIVERY, as in freeDiameter).
        let mut q2 = q;
        q2.view.destination_host = Some("hss2.ims.net");
        assert_eq!(hosts(&mut r, &q2, 1), ["hss2.ims.net"]);
        // Excluding every peer: 3002 (the RFC order would have delivered it).
        let mut r = ruled("* : [\".\"] += NO_DELIVERY ;\n");
        let e = r.route(&q).unwrap_err();
        assert_eq!(e.result_code, 3002, "{e}");
        // No candidate at all keeps the RFC answer: an app nobody advertised is 3007.
        let e = r.route(&req(SH, None, Some("ims.net"))).unwrap_err();
        assert_eq!(e.result_code, 3007, "{e}");
    }

    #[test]
    fn round_robin_among_equal_priority_peers() {
        let mut r = router(false);
        up(&mut r, "hss1.ims.net", "ims.net", &[CX]);
        up(&mut r, "hss2.ims.net", "ims.net", &[CX]);
        up(&mut r, "hss3.ims.net", "ims.net", &[CX]);
        let picks: Vec<PeerId> = (0..4)
            .map(|_| r.route(&req(CX, None, Some("IMS.net"))).unwrap())
            .collect();
        assert_eq!(
            picks,
            vec![
                id("hss1.ims.net"),
                id("hss2.ims.net"),
                id("hss1.ims.net"),
                id("hss2.ims.net")
            ]
        );
    }

    /// Routes of one realm sharing a priority make one tier: their peers merged, in peer-id
    /// order whatever order each route lists them in, each once; the round-robin skips an
    /// unusable one and goes on where it was. The routes of a tier need not be adjacent.
    #[test]
    fn routes_of_one_priority_share_one_round_robin() {
        let reversed = CONFIG.replace(
            "peers = [\"hss1.ims.net\", \"hss2.ims.net\"]\npriority = 1",
            "peers = [\"hss2.ims.net\", \"hss1.ims.net\"]\npriority = 1",
        );
        assert_ne!(reversed, CONFIG);
        let text = reversed.clone()
            + r#"
[[routes]]
realm = "ims.net"
peers = ["hss3.ims.net", "hss1.ims.net"]
priority = 1
"#;
        let config = crate::config::parse(&text).unwrap();
        let mut r = Router::new(&config, |h| Some(id(h)));
        for h in ["hss1.ims.net", "hss2.ims.net", "hss3.ims.net"] {
            up(&mut r, h, "ims.net", &[CX]);
        }
        let q = req(CX, None, Some("ims.NET"));
        assert_eq!(
            hosts(&mut r, &q, 4),
            [
                "hss1.ims.net",
                "hss2.ims.net",
                "hss3.ims.net",
                "hss1.ims.net"
            ]
        );
        r.set_usable(id("hss3.ims.net"), false);
        // position 4 of the two usable ones: hss1, then hss2
        assert_eq!(hosts(&mut r, &q, 2), ["hss1.ims.net", "hss2.ims.net"]);
        // a tier of one route is in peer-id order too: its list is sorted once, at load
        let mut one = Router::new(&crate::config::parse(&reversed).unwrap(), |h| Some(id(h)));
        up(&mut one, "hss1.ims.net", "ims.net", &[CX]);
        up(&mut one, "hss2.ims.net", "ims.net", &[CX]);
        assert_eq!(
            hosts(&mut one, &req(CX, None, Some("ims.net")), 2),
            ["hss1.ims.net", "hss2.ims.net"]
        );
    }

    #[test]
    fn lower_priority_is_used_when_preferred_peers_are_down() {
        let mut r = router(false);
        up(&mut r, "hss1.ims.net", "ims.net", &[CX]);
        up(&mut r, "hss3.ims.net", "ims.net", &[CX]);
        r.set_usable(id("hss1.ims.net"), false);
        assert_eq!(
            r.route(&req(CX, None, Some("ims.net"))),
            Ok(id("hss3.ims.net"))
        );
        r.set_usable(id("hss1.ims.net"), true);
        assert_eq!(
            r.route(&req(CX, None, Some("ims.net"))),
            Ok(id("hss1.ims.net"))
        );
    }

    #[test]
    fn destination_host_wins_when_open_and_advertised() {
        let mut r = router(false);
        up(&mut r, "hss1.ims.net", "ims.net", &[CX]);
        up(&mut r, "hss2.ims.net", "ims.net", &[CX]);
        for _ in 0..3 {
            assert_eq!(
                r.route(&req(CX, Some("HSS2.ims.net"), Some("ims.net"))),
                Ok(id("hss2.ims.net"))
            );
        }
        // Not usable: falls back to the realm.
        r.peer_down(id("hss2.ims.net"));
        assert_eq!(
            r.route(&req(CX, Some("hss2.ims.net"), Some("ims.net"))),
            Ok(id("hss1.ims.net"))
        );
    }

    #[test]
    fn destination_host_without_the_app_is_not_used() {
        let mut r = router(false);
        up(&mut r, "hss1.ims.net", "ims.net", &[CX]);
        up(&mut r, "hss3.ims.net", "ims.net", &[SH]);
        // hss3 is the Destination-Host but lacks Cx: the realm table gives hss1.
        assert_eq!(
            r.route(&req(CX, Some("hss3.ims.net"), Some("ims.net"))),
            Ok(id("hss1.ims.net"))
        );
    }

    #[test]
    fn only_peers_that_advertised_the_app_are_chosen() {
        let mut r = router(false);
        up(&mut r, "hss1.ims.net", "ims.net", &[SH]);
        up(&mut r, "hss2.ims.net", "ims.net", &[CX]);
        for _ in 0..3 {
            assert_eq!(
                r.route(&req(CX, None, Some("ims.net"))),
                Ok(id("hss2.ims.net"))
            );
        }
    }

    #[test]
    fn relay_peer_takes_any_app() {
        let mut r = router(true);
        up(
            &mut r,
            "dra.example.net",
            "example.net",
            &[crate::config::RELAY_APP_ID],
        );
        assert_eq!(
            r.route(&req(SH, None, Some("elsewhere.net"))),
            Ok(id("dra.example.net"))
        );
    }

    #[test]
    fn application_unsupported_is_3007() {
        let mut r = router(false);
        up(&mut r, "hss1.ims.net", "ims.net", &[SH]);
        up(&mut r, "hss2.ims.net", "ims.net", &[SH]);
        let e = r.route(&req(CX, None, Some("ims.net"))).unwrap_err();
        assert_eq!(e.result_code, 3007);
    }

    #[test]
    fn all_route_peers_down_is_3002() {
        let mut r = router(false);
        let e = r.route(&req(CX, None, Some("ims.net"))).unwrap_err();
        assert_eq!(e.result_code, 3002);
    }

    #[test]
    fn unknown_realm_without_default_is_3003() {
        let mut r = router(false);
        up(&mut r, "hss1.ims.net", "ims.net", &[CX]);
        let e = r.route(&req(CX, None, Some("nowhere.net"))).unwrap_err();
        assert_eq!(e.result_code, 3003);
    }

    #[test]
    fn default_route_catches_other_realms() {
        let mut r = router(true);
        up(&mut r, "dra.example.net", "example.net", &[CX]);
        assert_eq!(
            r.route(&req(CX, None, Some("nowhere.net"))),
            Ok(id("dra.example.net"))
        );
        r.set_usable(id("dra.example.net"), false);
        assert_eq!(
            r.route(&req(CX, None, Some("nowhere.net")))
                .unwrap_err()
                .result_code,
            3002
        );
    }

    #[test]
    fn directly_connected_peer_of_the_realm() {
        let mut r = router(false);
        up(&mut r, "ocs.billing.net", "billing.net", &[4]);
        assert_eq!(
            r.route(&req(4, None, Some("billing.net"))),
            Ok(id("ocs.billing.net"))
        );
        assert_eq!(
            r.route(&req(5, None, Some("billing.net")))
                .unwrap_err()
                .result_code,
            3007
        );
    }

    #[test]
    fn loop_is_3005() {
        let mut r = router(true);
        up(&mut r, "dra.example.net", "example.net", &[CX]);
        let rr = ["dra.example.net", "ME.example.net"];
        let q = RouteRequest {
            route_records: &rr,
            ..req(CX, None, Some("x.net"))
        };
        assert_eq!(r.route(&q).unwrap_err().result_code, 3005);
    }

    #[test]
    fn exclusion_finds_an_alternate() {
        let mut r = router(false);
        up(&mut r, "hss1.ims.net", "ims.net", &[CX]);
        up(&mut r, "hss2.ims.net", "ims.net", &[CX]);
        up(&mut r, "hss3.ims.net", "ims.net", &[CX]);
        let q = req(CX, None, Some("ims.net"));
        for _ in 0..3 {
            assert_eq!(
                r.route_excluding(&q, &[id("hss1.ims.net")]),
                Ok(id("hss2.ims.net"))
            );
        }
        let both = [id("hss1.ims.net"), id("hss2.ims.net")];
        assert_eq!(r.route_excluding(&q, &both), Ok(id("hss3.ims.net")));
        let all = [id("hss1.ims.net"), id("hss2.ims.net"), id("hss3.ims.net")];
        assert_eq!(r.route_excluding(&q, &all).unwrap_err().result_code, 3002);
    }
}
