//! Cores wired together in memory: whole-node behaviour (capabilities, requests both ways,
//! timeouts, failover, drain-then-DPR, watchdog, reconnection) with simulated time and no
//! sockets.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use dmproto::{Header, MessageWriter};

use super::*;
use crate::app::{self, AnswerBody};
use crate::peer::wire::BaseKind;

const M: u8 = 0x40;
const CCR: u32 = 272;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    /// Answer at once with 2001 and the CC-Request-Number.
    Echo,
    /// Keep the request unanswered until the test releases it.
    Hold,
    /// Answer 3004 DIAMETER_TOO_BUSY (E bit), as a loaded server or a DRA does.
    Busy,
    /// Answer 3006 DIAMETER_REDIRECT_INDICATION naming this host in Redirect-Host.
    Redirect(&'static str),
    /// Answer 3006 naming this host, with this Redirect-Host-Usage and (if `Some`)
    /// Redirect-Max-Cache-Time in seconds (RFC 6733 §6.13, §6.14).
    RedirectCaching(&'static str, u32, Option<u32>),
}

struct Node {
    core: Endpoint,
    behaviour: Behaviour,
    addr: SocketAddr,
    held: Vec<u64>,
    /// Tokens the core answered itself and told the application so ([`Output::Withdrawn`]).
    withdrawn: Vec<u64>,
    delivered: Vec<Message>,
    /// The peer each delivered request came from, as the application got it.
    delivered_from: Vec<Arc<app::PeerInfo>>,
    up: bool,
}

/// The outcomes the cores reported ([`Output::Outcome`]), by request id.
type Outcomes = Rc<RefCell<HashMap<RequestId, Result<Message, RequestError>>>>;

/// A submitted request, to look for its outcome.
struct PendingAnswer {
    id: RequestId,
    outcomes: Outcomes,
}

impl PendingAnswer {
    fn try_take(&mut self) -> Option<Result<Message, RequestError>> {
        self.outcomes.borrow_mut().remove(&self.id)
    }
}

/// A message seen on a link.
struct Seen {
    from: usize,
    msg: Message,
}

struct Net {
    nodes: Vec<Node>,
    /// Nodes whose traffic is silently lost (a partition, not a close).
    muted: std::collections::HashSet<usize>,
    /// (node, conn) -> (node, conn)
    links: HashMap<(usize, ConnId), (usize, ConnId)>,
    seen: Vec<Seen>,
    now: Instant,
    outcomes: Outcomes,
    /// The time each answered request waited for its answer ([`Output::Outcome`]'s `waited`).
    waits: HashMap<RequestId, Option<Duration>>,
    /// Every id ever reported, to check each request gets exactly one outcome.
    reported: std::collections::HashSet<RequestId>,
    next_id: u64,
    /// In-band TLS handshakes asked for ([`Output::StartTls`]) and not run yet: node,
    /// connection, the peer's host.
    handshakes: Vec<(usize, ConnId, String)>,
    /// `Some`: a core's [`Output::Close`] is held here instead of being reported back at once,
    /// as a driver tearing a socket down does later ([`Net::release_closes`]).
    held_closes: Option<Vec<(usize, ConnId)>>,
}

fn config(host: &str, peers: &[(&str, SocketAddr)], accept: &[&str]) -> Config {
    let mut s = format!(
        r#"
[node]
origin_host = "{host}"
origin_realm = "example.net"
[[applications]]
id = 4
[timers]
tc = "5s"
tw = "30s"
answer_timeout = "3s"
cer_timeout = "2s"
dpa_timeout = "1s"
drain_timeout = "4s"
"#
    );
    for (h, a) in peers {
        s += &format!(
            "[[peers]]\nhost = \"{h}\"\naddress = \"{}\"\nport = {}\n",
            a.ip(),
            a.port()
        );
    }
    for h in accept {
        s += &format!("[[peers]]\nhost = \"{h}\"\nmode = \"accept\"\n");
    }
    crate::config::parse(&s).unwrap()
}

/// The local address of every test connection: our CER and CEA carry it as Host-IP-Address,
/// which their ABNF requires (RFC 6733 §5.3.1) and the peer's validator checks.
const LOCAL_IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], 4000 + i))
}

impl Net {
    fn new() -> Net {
        Net {
            nodes: Vec::new(),
            muted: Default::default(),
            links: HashMap::new(),
            seen: Vec::new(),
            now: Instant::now(),
            outcomes: Outcomes::default(),
            waits: HashMap::new(),
            reported: Default::default(),
            next_id: 0,
            handshakes: Vec::new(),
            held_closes: None,
        }
    }

    fn add(&mut self, config: Config, behaviour: Behaviour) -> usize {
        let i = self.nodes.len();
        let seeds = Seeds {
            start_secs: 1_700_000_000 + i as u32,
            start_micros: 0,
            random: 77 + i as u64,
        };
        self.nodes.push(Node {
            core: Endpoint::new(config, dmproto::dict::Dictionary::builtin(), seeds),
            behaviour,
            addr: addr(i as u16),
            held: Vec::new(),
            withdrawn: Vec::new(),
            delivered: Vec::new(),
            delivered_from: Vec::new(),
            up: true,
        });
        i
    }

    fn start(&mut self) {
        for n in &mut self.nodes {
            n.core.start(self.now);
        }
        self.run();
    }

    /// Processes outputs until every core is quiet.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].core.poll_output() {
                    busy = true;
                    self.output(i, out);
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    fn output(&mut self, i: usize, out: Output) {
        let now = self.now;
        match out {
            Output::Transmit { conn, bytes } => {
                if let Some(&(j, peer_conn)) = self.links.get(&(i, conn)) {
                    if self.muted.contains(&i) || self.muted.contains(&j) {
                        return;
                    }
                    self.seen.push(Seen {
                        from: i,
                        msg: Message::decode(bytes.clone()).unwrap(),
                    });
                    self.nodes[j].core.frame(peer_conn, bytes, now);
                }
            }
            Output::Close { conn } => match &mut self.held_closes {
                Some(held) => held.push((i, conn)),
                None => self.cut(i, conn),
            },
            Output::Opened { .. } => {}
            Output::StartTls { conn, peer, .. } => self.handshakes.push((i, conn, peer.host)),
            Output::Connect { conn, addr } => {
                let target = self
                    .nodes
                    .iter()
                    .position(|n| crate::config::Endpoint::Addr(n.addr) == addr && n.up);
                match target.and_then(|j| {
                    self.nodes[j]
                        .core
                        .accept(Some(LOCAL_IP), None, None, now)
                        .map(|c| (j, c))
                }) {
                    Some((j, their)) => {
                        self.links.insert((i, conn), (j, their));
                        self.links.insert((j, their), (i, conn));
                        if !self.nodes[i]
                            .core
                            .connected(conn, Some(Some(LOCAL_IP)), now)
                        {
                            self.cut(i, conn);
                        }
                    }
                    None => {
                        self.nodes[i].core.connected(conn, None, now);
                    }
                }
            }
            Output::Deliver { token, request } => {
                let msg = request.message;
                self.nodes[i].delivered.push(msg.clone());
                self.nodes[i].delivered_from.push(request.peer);
                match self.nodes[i].behaviour {
                    Behaviour::Echo => {
                        let reply = Reply::Answer(echo_body(&msg));
                        self.nodes[i].core.reply(token, &reply, now);
                    }
                    Behaviour::Hold => self.nodes[i].held.push(token),
                    Behaviour::Busy => {
                        let reply = Reply::Answer(error_body(3004, None));
                        self.nodes[i].core.reply(token, &reply, now);
                    }
                    Behaviour::Redirect(to) => {
                        let reply = Reply::Answer(error_body(3006, Some(to)));
                        self.nodes[i].core.reply(token, &reply, now);
                    }
                    Behaviour::RedirectCaching(to, usage, secs) => {
                        let mut body = error_body(3006, Some(to));
                        let mut w = MessageWriter::avps_only();
                        w.u32(261, M, 0, usage);
                        if let Some(secs) = secs {
                            w.u32(262, M, 0, secs);
                        }
                        let extra = w.finish().unwrap();
                        body.avps = [&body.avps[..], &extra[..]].concat().into();
                        self.nodes[i].core.reply(token, &Reply::Answer(body), now);
                    }
                }
            }
            Output::Withdrawn { tokens } => {
                for t in tokens {
                    assert!(!self.nodes[i].withdrawn.contains(&t), "withdrawn twice");
                    self.nodes[i].withdrawn.push(t);
                }
            }
            Output::Outcome { id, result, waited } => {
                assert!(self.reported.insert(id), "a second outcome for {id:?}");
                self.waits.insert(id, waited);
                self.outcomes.borrow_mut().insert(id, result);
            }
        }
    }

    /// Closes a link from both ends.
    fn cut(&mut self, i: usize, conn: ConnId) {
        let now = self.now;
        if let Some((j, their)) = self.links.remove(&(i, conn)) {
            self.links.remove(&(j, their));
            self.nodes[j].core.closed(their, now);
        }
        self.nodes[i].core.closed(conn, now);
    }

    /// Reports the held closes ([`Net::held_closes`]) and closes no longer wait.
    fn release_closes(&mut self) {
        for (i, conn) in self.held_closes.take().unwrap_or_default() {
            self.cut(i, conn);
        }
        self.run();
    }

    /// Kills node `j`: every link to it breaks, and it accepts nothing until revived.
    fn kill(&mut self, j: usize) {
        self.nodes[j].up = false;
        let mine: Vec<(usize, ConnId)> = self
            .links
            .keys()
            .filter(|(n, _)| *n == j)
            .copied()
            .collect();
        let now = self.now;
        for (n, c) in mine {
            if let Some((other, their)) = self.links.remove(&(n, c)) {
                self.links.remove(&(other, their));
                self.nodes[other].core.closed(their, now);
            }
            // Its own side of the connections is gone with it.
            self.nodes[n].core.closed(c, now);
        }
        self.run();
    }

    /// Advances simulated time to `now + d`, firing every timer on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.core.next_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for n in &mut self.nodes {
                        if n.core.next_timeout().is_some_and(|x| x <= t) {
                            n.core.handle_timeout(t);
                        }
                    }
                    self.run();
                }
                _ => break,
            }
        }
        self.now = end;
        self.run();
    }

    fn submit(&mut self, i: usize, n: u32) -> PendingAnswer {
        let req = app::OutgoingRequest {
            app_id: 4,
            cmd_code: CCR,
            avps: ccr_avps(n),
            timeout: None,
        };
        let p = self.submit_request(i, req);
        self.run();
        p
    }

    /// Submits to node `i` under a fresh id (the driver's job in the runtime).
    fn submit_request(&mut self, i: usize, req: app::OutgoingRequest) -> PendingAnswer {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        self.nodes[i].core.submit(req, id, self.now);
        PendingAnswer {
            id,
            outcomes: self.outcomes.clone(),
        }
    }

    fn release(&mut self, i: usize) {
        let held = std::mem::take(&mut self.nodes[i].held);
        let now = self.now;
        for token in held {
            // Echo whatever the request was: find it among the delivered ones.
            let body = echo_body(self.nodes[i].delivered.last().unwrap());
            self.nodes[i].core.reply(token, &Reply::Answer(body), now);
        }
        self.run();
    }

    /// Runs the pending in-band handshakes: each side shows a certificate naming what
    /// `name(node)` says (the peer's host for a good one).
    fn finish_tls(&mut self, name: impl Fn(usize) -> String) {
        let now = self.now;
        for (i, conn, _) in std::mem::take(&mut self.handshakes) {
            // The certificate node i sees is its peer's, i.e. that of the other end.
            let Some(&(j, _)) = self.links.get(&(i, conn)) else {
                continue;
            };
            let cert = PeerCert {
                dns_names: vec![name(j)],
                ..PeerCert::default()
            };
            self.nodes[i].core.inband_tls_up(conn, cert, None, now);
        }
        self.run();
    }

    fn sent_by(&self, i: usize, kind: BaseKind) -> usize {
        self.seen
            .iter()
            .filter(|s| s.from == i && wire::classify(&s.msg.header) == kind)
            .count()
    }
}

fn ccr_avps(n: u32) -> Bytes {
    let mut w = MessageWriter::avps_only();
    w.str(461, M, 0, "32251@3gpp.org");
    w.u32(416, M, 0, 1);
    w.u32(415, M, 0, n);
    w.finish().unwrap()
}

fn echo_body(req: &Message) -> AnswerBody {
    let mut w = MessageWriter::avps_only();
    if let Some(n) = req.find_u32(415, 0) {
        w.u32(415, M, 0, n);
    }
    w.u32(416, M, 0, 1);
    AnswerBody {
        avps: w.finish().unwrap(),
        is_error: false,
    }
}

/// A protocol-error reply (E bit) with `code`, and a Redirect-Host URI for `redirect`.
fn error_body(code: u32, redirect: Option<&str>) -> AnswerBody {
    let mut w = MessageWriter::avps_only();
    w.u32(268, M, 0, code);
    if let Some(h) = redirect {
        w.str(292, M, 0, &format!("aaa://{h}:3868;transport=tcp"));
    }
    AnswerBody {
        avps: w.finish().unwrap(),
        is_error: true,
    }
}

fn answered(p: &mut PendingAnswer) -> Option<Result<Message, RequestError>> {
    p.try_take()
}

/// client (0) connecting to servers 1.. (each accepting the client).
fn net(servers: &[Behaviour]) -> Net {
    net_cfg(servers, |_| {}, |_| {})
}

fn net_cfg(
    servers: &[Behaviour],
    client_tweak: impl FnOnce(&mut Config),
    server_tweak: impl Fn(&mut Config),
) -> Net {
    let mut net = Net::new();
    let peers: Vec<(String, SocketAddr)> = (0..servers.len())
        .map(|k| (format!("s{}.example.net", k + 1), addr(k as u16 + 1)))
        .collect();
    let refs: Vec<(&str, SocketAddr)> = peers.iter().map(|(h, a)| (h.as_str(), *a)).collect();
    let mut client = config("client.example.net", &refs, &[]);
    client.routes.push(crate::config::RouteConfig {
        realm: "example.net".into(),
        app_id: None,
        peers: peers.iter().map(|(h, _)| h.clone()).collect(),
        priority: 0,
    });
    client_tweak(&mut client);
    net.add(client, Behaviour::Echo);
    for (k, b) in servers.iter().enumerate() {
        let mut server = config(
            &format!("s{}.example.net", k + 1),
            &[],
            &["client.example.net"],
        );
        server_tweak(&mut server);
        net.add(server, *b);
    }
    net.start();
    net
}

#[test]
fn capabilities_exchange_then_request_and_answer() {
    let mut net = net(&[Behaviour::Echo]);
    assert_eq!(net.sent_by(0, BaseKind::Cer), 1);
    assert_eq!(net.sent_by(1, BaseKind::Cea), 1);
    let mut p = net.submit(0, 42);
    let a = answered(&mut p).expect("answered at once").unwrap();
    assert_eq!(a.find_u32(268, 0), Some(2001));
    assert_eq!(a.find_u32(415, 0), Some(42));
    // The server saw a complete request: Session-Id first, our Origin-Host, its realm.
    let req = &net.nodes[1].delivered[0];
    assert!(req.session_id().unwrap().starts_with("client.example.net;"));
    assert_eq!(req.find_ref(264, 0).unwrap().data, b"client.example.net");
    assert_eq!(req.find_ref(283, 0).unwrap().data, b"example.net");
}

#[test]
fn requests_from_one_peer_share_its_names() {
    // The application gets the peer's names from its CER with every request, as one shared
    // value, not two strings per request (issue 15 item 2).
    let mut net = net(&[Behaviour::Echo]);
    let mut p1 = net.submit(0, 1);
    let mut p2 = net.submit(0, 2);
    assert!(answered(&mut p1).unwrap().is_ok());
    assert!(answered(&mut p2).unwrap().is_ok());
    let from = &net.nodes[1].delivered_from;
    assert_eq!(from.len(), 2);
    assert_eq!(from[0].host, "client.example.net");
    assert_eq!(from[0].realm, "example.net");
    assert!(Arc::ptr_eq(&from[0], &from[1]));
}

#[test]
fn an_answer_reports_how_long_it_was_waited_for() {
    // The driver subtracts this from the script's round trip (the bridge's own time).
    let mut net = net(&[Behaviour::Hold]);
    let mut p = net.submit(0, 1);
    let mut t = net.submit(0, 2);
    net.advance(Duration::from_millis(700));
    net.release(1);
    assert!(answered(&mut p).expect("answered").is_ok());
    assert!(answered(&mut t).expect("answered").is_ok());
    assert_eq!(net.waits[&p.id], Some(Duration::from_millis(700)));
    // No answer, no wait to report.
    let mut q = net.submit(0, 3);
    net.advance(Duration::from_millis(3100));
    assert_eq!(answered(&mut q), Some(Err(RequestError::Timeout)));
    assert_eq!(net.waits[&q.id], None);
}

#[test]
fn answer_timeout_gives_exactly_one_timeout() {
    let mut net = net(&[Behaviour::Hold]);
    let mut p = net.submit(0, 1);
    net.advance(Duration::from_millis(2900));
    assert!(answered(&mut p).is_none());
    net.advance(Duration::from_millis(200));
    assert_eq!(answered(&mut p), Some(Err(RequestError::Timeout)));
    // The late answer is dropped, not delivered twice (the harness also fails on a
    // second Output::Outcome for one id).
    net.release(1);
    assert_eq!(answered(&mut p), None, "one outcome only");
}

#[test]
fn connection_loss_resends_pending_with_t_flag_to_the_other_peer() {
    let mut net = net(&[Behaviour::Hold, Behaviour::Echo]);
    let mut ps: Vec<PendingAnswer> = (0..6).map(|n| net.submit(0, n)).collect();
    let held = net.nodes[1].held.len();
    assert_eq!(held, 3, "round-robin sent half to s1");
    net.kill(1);
    for (n, p) in ps.iter_mut().enumerate() {
        let a = answered(p).expect("answered after failover").unwrap();
        assert_eq!(a.find_u32(415, 0), Some(n as u32));
    }
    let resent: Vec<&Message> = net.nodes[2]
        .delivered
        .iter()
        .filter(|m| m.header.flags.is_retransmit())
        .collect();
    assert_eq!(resent.len(), held);
    // Same end-to-end ids as the originals sent to s1.
    let mut orig: Vec<u32> = net
        .seen
        .iter()
        .filter(|s| s.from == 0 && s.msg.header.code == CCR && !s.msg.header.flags.is_retransmit())
        .map(|s| s.msg.header.end_to_end)
        .collect();
    orig.sort();
    for m in resent {
        assert!(orig.binary_search(&m.header.end_to_end).is_ok());
    }
}

#[test]
fn failover_without_alternate_fails_clearly() {
    // Sent, then lost with its only peer: "no answer" with the reason, never "no route" (which
    // says the request never left).
    let mut net = net(&[Behaviour::Hold]);
    let mut p = net.submit(0, 1);
    net.kill(1);
    match answered(&mut p) {
        Some(Err(RequestError::ConnectionLost(why))) => {
            assert!(why.contains("no usable peer"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stop_drains_pending_requests_before_dpr() {
    let mut net = net(&[Behaviour::Hold]);
    let mut p = net.submit(0, 5);
    net.nodes[0].core.stop(net.now);
    net.run();
    assert_eq!(
        net.sent_by(0, BaseKind::Dpr),
        0,
        "no DPR while a request is pending"
    );
    // New requests are refused while stopping.
    let mut refused = net.submit(0, 6);
    assert_eq!(answered(&mut refused), Some(Err(RequestError::NodeDown)));
    net.release(1);
    assert!(answered(&mut p).unwrap().is_ok());
    assert_eq!(net.sent_by(0, BaseKind::Dpr), 1);
    assert_eq!(net.sent_by(1, BaseKind::Dpa), 1);
    assert!(net.nodes[0].core.is_finished());
}

#[test]
fn stop_sends_dpr_after_drain_timeout_and_fails_the_rest() {
    let mut net = net(&[Behaviour::Hold]);
    let mut p = net.submit(0, 5);
    net.nodes[0].core.stop(net.now);
    net.run();
    // The answer timeout (3 s) comes before the drain timeout (4 s).
    net.advance(Duration::from_secs(3));
    assert_eq!(answered(&mut p), Some(Err(RequestError::Timeout)));
    assert_eq!(net.sent_by(0, BaseKind::Dpr), 1, "drained by the timeout");
    assert!(net.nodes[0].core.is_finished());
}

#[test]
fn stop_with_a_request_still_at_the_peer_after_the_drain_ends_it_as_no_answer() {
    // The client stops while the server holds its request past the drain timeout (the
    // answer timeout is longer): DPR, the connection closes, and the request ends as
    // ConnectionLost ("no answer": it was sent), not NodeDown ("never sent").
    let long = |c: &mut Config| c.timers.answer_timeout = Duration::from_secs(300);
    let mut net = net_cfg(&[Behaviour::Hold], long, |_| {});
    let mut p = net.submit(0, 5);
    net.nodes[0].core.stop(net.now);
    let drain = net.nodes[0].core.config().timers.drain_timeout;
    let dpa = net.nodes[0].core.config().timers.dpa_timeout;
    net.advance(drain + dpa + Duration::from_secs(1));
    assert_eq!(net.sent_by(0, BaseKind::Dpr), 1);
    match answered(&mut p) {
        Some(Err(RequestError::ConnectionLost(why))) => assert!(why.contains("stopp"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn idle_connection_is_watched_with_dwr() {
    let mut net = net(&[Behaviour::Echo]);
    net.advance(Duration::from_secs(33));
    // Whichever side's Tw expires first sends DWR; the DWR is traffic for the other side,
    // which then has no reason to send its own.
    let dwr = net.sent_by(0, BaseKind::Dwr) + net.sent_by(1, BaseKind::Dwr);
    let dwa = net.sent_by(0, BaseKind::Dwa) + net.sent_by(1, BaseKind::Dwa);
    assert!(dwr >= 1 && dwa == dwr, "{dwr} DWR, {dwa} DWA");
    let mut p = net.submit(0, 1);
    assert!(answered(&mut p).unwrap().is_ok(), "still usable");
}

#[test]
fn reconnects_after_the_peer_comes_back() {
    let mut net = net(&[Behaviour::Echo]);
    net.kill(1);
    let mut p = net.submit(0, 1);
    assert!(matches!(
        answered(&mut p),
        Some(Err(RequestError::NoRoute { .. }))
    ));
    net.nodes[1].up = true;
    net.advance(Duration::from_secs(6)); // Tc = 5 s
    assert_eq!(net.sent_by(0, BaseKind::Cer), 2);
    // Reopened after a failure: three DWAs before it carries requests (RFC 3539 REOPEN).
    let mut p = net.submit(0, 2);
    assert!(matches!(
        answered(&mut p),
        Some(Err(RequestError::NoRoute { .. }))
    ));
    net.advance(Duration::from_secs(100));
    let mut p = net.submit(0, 3);
    assert!(answered(&mut p).unwrap().is_ok());
}

#[test]
fn retransmitted_request_is_answered_from_cache() {
    let mut net = net(&[Behaviour::Echo]);
    let mut p = net.submit(0, 9);
    assert!(answered(&mut p).unwrap().is_ok());
    // Replay the client's request with T to the server on the same link.
    let original = net
        .seen
        .iter()
        .find(|s| s.from == 0 && s.msg.header.code == CCR)
        .map(|s| s.msg.to_bytes())
        .unwrap();
    let again = pending::retransmission(&original, 0xabcdef).unwrap();
    let (&(_, client_conn), &(_, server_conn)) =
        net.links.iter().find(|((n, _), _)| *n == 0).unwrap();
    let _ = client_conn;
    let now = net.now;
    net.nodes[1].core.frame(server_conn, again, now);
    net.run();
    assert_eq!(net.nodes[1].delivered.len(), 1, "handled once");
    let replies: Vec<&Seen> = net
        .seen
        .iter()
        .filter(|s| s.from == 1 && s.msg.header.code == CCR)
        .collect();
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[1].msg.header.hop_by_hop, 0xabcdef);
    assert_eq!(replies[0].msg.body, replies[1].msg.body, "the same answer");
}

#[test]
fn stop_without_pending_requests_sends_dpr_at_once() {
    let mut net = net(&[Behaviour::Echo, Behaviour::Echo]);
    net.nodes[0].core.stop(net.now);
    net.run();
    assert_eq!(net.sent_by(0, BaseKind::Dpr), 2);
    assert_eq!(
        net.sent_by(1, BaseKind::Dpa) + net.sent_by(2, BaseKind::Dpa),
        2
    );
    assert!(net.nodes[0].core.is_finished());
    // The servers were told REBOOTING: they keep no connection and do not reconnect
    // (they are accept-only for the client).
    assert!(net.links.is_empty());
}

/// Client 0 and one server built from `server`'s config tweak.
fn net_with(server_tweak: impl FnOnce(&mut Config), behaviour: Behaviour) -> Net {
    let mut net = Net::new();
    let mut client = config("client.example.net", &[("s1.example.net", addr(1))], &[]);
    client.routes.push(crate::config::RouteConfig {
        realm: "example.net".into(),
        app_id: None,
        peers: vec!["s1.example.net".into()],
        priority: 0,
    });
    net.add(client, Behaviour::Echo);
    let mut server = config("s1.example.net", &[], &["client.example.net"]);
    server_tweak(&mut server);
    net.add(server, behaviour);
    net.start();
    net
}

#[test]
fn application_silence_is_answered_5012_after_the_reply_timeout() {
    let mut net = net_with(
        |c| c.app.reply_timeout = Duration::from_secs(1),
        Behaviour::Hold,
    );
    let mut p = net.submit(0, 1);
    net.advance(Duration::from_millis(999));
    assert!(answered(&mut p).is_none());
    net.advance(Duration::from_millis(2));
    let a = answered(&mut p).unwrap().unwrap();
    assert_eq!(a.find_u32(268, 0), Some(5012));
    // The application answering late changes nothing: one answer per request.
    let before = net
        .seen
        .iter()
        .filter(|s| s.from == 1 && s.msg.header.code == CCR)
        .count();
    net.release(1);
    let after = net
        .seen
        .iter()
        .filter(|s| s.from == 1 && s.msg.header.code == CCR)
        .count();
    assert_eq!(before, after);
}

#[test]
fn too_many_requests_in_the_application_is_3004() {
    let mut net = net_with(|c| c.limits.max_pending_requests = 2, Behaviour::Hold);
    let mut ps: Vec<PendingAnswer> = (0..3).map(|n| net.submit(0, n)).collect();
    assert!(answered(&mut ps[0]).is_none());
    assert!(answered(&mut ps[1]).is_none());
    let busy = answered(&mut ps[2]).unwrap().unwrap();
    assert_eq!(busy.find_u32(268, 0), Some(3004));
    assert!(busy.header.flags.is_error());
    net.release(1);
    assert!(answered(&mut ps[0]).unwrap().is_ok());
}

#[test]
fn an_answer_must_match_its_request_to_complete_it() {
    let mut net = net(&[Behaviour::Hold]);
    let counted = Counted::default();
    net.nodes[0].core.set_observer(Box::new(counted.clone()));
    let mut p = net.submit(0, 1);
    let req = net
        .seen
        .iter()
        .find(|s| s.from == 0 && s.msg.header.code == CCR)
        .map(|s| s.msg.clone())
        .unwrap();
    let (&(_, client_conn), _) = net.links.iter().find(|((n, _), _)| *n == 0).unwrap();
    // Same hop-by-hop id, wrong end-to-end id, then wrong command, then a hop-by-hop id
    // nothing waits for: all dropped (RFC 6733 §6.2) and counted (DESIGN §10).
    let (hbh, e2e) = (req.header.hop_by_hop, req.header.end_to_end);
    for (code, hop_by_hop, end_to_end) in [
        (CCR, hbh, e2e ^ 1),
        (271, hbh, e2e),
        (CCR, hbh ^ 0x5a5a, e2e),
    ] {
        let mut h = req.header.answer();
        h.code = code;
        h.hop_by_hop = hop_by_hop;
        h.end_to_end = end_to_end;
        let mut w = MessageWriter::new(h);
        w.str(263, M, 0, req.session_id().unwrap());
        w.u32(268, M, 0, 2001);
        w.str(264, M, 0, "s1.example.net");
        w.str(296, M, 0, "example.net");
        let now = net.now;
        net.nodes[0]
            .core
            .frame(client_conn, w.finish().unwrap(), now);
        net.run();
        assert!(
            answered(&mut p).is_none(),
            "a mismatched answer completed the request"
        );
    }
    assert_eq!(counted.count("answer_unmatched"), 3);
    net.release(1);
    assert!(answered(&mut p).unwrap().is_ok());
    assert_eq!(counted.count("answer_unmatched"), 3);
}

#[test]
fn stop_waits_for_the_application_to_answer_the_peer_before_dpr() {
    // Server 1 holds the client's request; the *server* stops: its DPR must wait until its
    // application answered, so the client gets the answer, then DPR.
    let mut net = net(&[Behaviour::Hold]);
    let mut p = net.submit(0, 3);
    net.nodes[1].core.stop(net.now);
    net.run();
    assert_eq!(net.sent_by(1, BaseKind::Dpr), 0, "DPR before the answer");
    net.release(1);
    assert!(answered(&mut p).unwrap().is_ok());
    assert_eq!(net.sent_by(1, BaseKind::Dpr), 1);
    assert!(net.nodes[1].core.is_finished());
}

/// A client and a holding server that both wait 300 s (the client's answer timeout, the
/// server's reply timeout): only what a test does ends a request.
fn patient_net() -> Net {
    let long = |c: &mut Config| c.timers.answer_timeout = Duration::from_secs(300);
    let patient = |c: &mut Config| c.app.reply_timeout = Duration::from_secs(300);
    net_cfg(&[Behaviour::Hold], long, patient)
}

#[test]
fn stop_answers_what_the_application_still_holds_at_the_drain_timeout_before_dpr() {
    // The server's application never answers within the drain time (its reply timeout is
    // longer): at the drain timeout the request is answered 5012 once, before the DPR, and
    // the application's late reply sends nothing more.
    let mut net = patient_net();
    let mut p = net.submit(0, 3);
    net.nodes[1].core.stop(net.now);
    net.run();
    assert_eq!(
        net.sent_by(1, BaseKind::Dpr),
        0,
        "DPR before the drain timeout"
    );
    let drain = net.nodes[1].core.config().timers.drain_timeout;
    net.advance(drain + Duration::from_secs(1));
    let a = answered(&mut p).expect("answered").unwrap();
    assert_eq!(a.find_u32(268, 0), Some(5012));
    let answers_from_1 = |net: &Net| {
        net.seen
            .iter()
            .enumerate()
            .filter(|(_, s)| s.from == 1 && s.msg.header.code == CCR)
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let answers = answers_from_1(&net);
    let dpr = net
        .seen
        .iter()
        .position(|s| s.from == 1 && wire::classify(&s.msg.header) == BaseKind::Dpr);
    assert_eq!(answers.len(), 1);
    assert!(
        dpr.is_some_and(|d| answers[0] < d),
        "the answer before the DPR"
    );
    // The application is told, once, which of its held requests the node answered.
    assert_eq!(net.nodes[1].withdrawn, net.nodes[1].held);
    assert_eq!(net.nodes[1].held.len(), 1);
    net.release(1);
    assert_eq!(answers_from_1(&net).len(), 1, "the late reply sent nothing");
}

#[test]
fn watchdog_suspicion_moves_requests_to_an_alternate_peer() {
    let long = |c: &mut Config| c.timers.answer_timeout = Duration::from_secs(300);
    let mut net = net_cfg(&[Behaviour::Hold, Behaviour::Echo], long, |_| {});
    let mut ps: Vec<PendingAnswer> = (0..4).map(|n| net.submit(0, n)).collect();
    assert_eq!(net.nodes[1].held.len(), 2);
    // s1 goes silent without closing: DWR unanswered, then SUSPECT (2 Tw) moves its requests.
    net.muted.insert(1);
    net.advance(Duration::from_secs(70));
    assert_each_echoed(&mut ps);
    assert_eq!(retransmitted_to(&net, 2), 2);
}

/// Each request `n` of `ps` was answered once, with its own CC-Request-Number.
fn assert_each_echoed(ps: &mut [PendingAnswer]) {
    for (n, p) in ps.iter_mut().enumerate() {
        let a = answered(p).expect("answered").unwrap();
        assert_eq!(a.find_u32(415, 0), Some(n as u32));
    }
}

/// How many requests node `j` received with the T flag.
fn retransmitted_to(net: &Net, j: usize) -> usize {
    net.nodes[j]
        .delivered
        .iter()
        .filter(|m| m.header.flags.is_retransmit())
        .count()
}

#[test]
fn watchdog_suspicion_without_alternate_keeps_waiting_for_the_answer() {
    // The server's application takes its time too (no 5012 while the link is silent).
    let mut net = patient_net();
    let mut p = net.submit(0, 8);
    net.muted.insert(1);
    // Past SUSPECT (2 Tw ~ 60 s) but before DOWN (3 Tw ~ 90 s).
    net.advance(Duration::from_secs(66));
    assert!(
        answered(&mut p).is_none(),
        "not failed early: the peer may still answer"
    );
    net.muted.clear();
    net.release(1);
    let a = answered(&mut p).expect("the late answer matched").unwrap();
    assert_eq!(a.find_u32(415, 0), Some(8));
}

#[test]
fn a_request_may_bring_its_own_timeout() {
    let mut net = net(&[Behaviour::Hold]);
    let req = app::OutgoingRequest {
        app_id: 4,
        cmd_code: CCR,
        avps: ccr_avps(1),
        timeout: Some(Duration::from_millis(500)),
    };
    let mut p = net.submit_request(0, req);
    net.run();
    net.advance(Duration::from_millis(499));
    assert!(answered(&mut p).is_none());
    net.advance(Duration::from_millis(2));
    assert_eq!(answered(&mut p), Some(Err(RequestError::Timeout)));
}

#[test]
fn request_for_an_application_we_do_not_advertise_is_3007() {
    let mut net = net(&[Behaviour::Echo]);
    let (&(_, _), &(_, server_conn)) = net.links.iter().find(|((n, _), _)| *n == 0).unwrap();
    let mut w = MessageWriter::new(Header::request(300, 16777216, 5, 6)); // Cx UAR
    w.str(263, M, 0, "client.example.net;1;9");
    w.str(264, M, 0, "client.example.net");
    w.str(296, M, 0, "example.net");
    let now = net.now;
    net.nodes[1]
        .core
        .frame(server_conn, w.finish().unwrap(), now);
    net.run();
    let a = &net.seen.last().unwrap().msg;
    assert_eq!(net.seen.last().unwrap().from, 1);
    assert_eq!((a.header.hop_by_hop, a.find_u32(268, 0)), (5, Some(3007)));
    assert!(a.header.flags.is_error());
    assert!(net.nodes[1].delivered.is_empty());
}

#[test]
fn status_reports_each_peer() {
    let mut net = net(&[Behaviour::Hold, Behaviour::Echo]);
    let v0 = net.nodes[0].core.status_version();
    assert!(v0 > 0, "peers came up");
    let _p = net.submit(0, 1); // held by s1
    let st = net.nodes[0].core.status();
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].host, "s1.example.net");
    assert_eq!(st[0].state, crate::peer::State::IOpen);
    assert!(st[0].usable);
    assert_eq!(st[0].apps, vec![4]);
    assert_eq!(st.iter().map(|s| s.pending).sum::<usize>(), 1);
    net.kill(1);
    assert!(net.nodes[0].core.status_version() > v0);
    let st = net.nodes[0].core.status();
    assert_eq!(st[0].state, crate::peer::State::Closed);
    assert!(!st[0].usable);
}

/// A CCR with extra routing AVPs (Destination-Host/Realm, Route-Record, Proxy-Info...).
fn ccr_with(n: u32, extra: impl FnOnce(&mut MessageWriter)) -> app::OutgoingRequest {
    let mut w = MessageWriter::avps_only();
    extra(&mut w);
    w.str(461, M, 0, "32251@3gpp.org");
    w.u32(416, M, 0, 1);
    w.u32(415, M, 0, n);
    app::OutgoingRequest {
        app_id: 4,
        cmd_code: CCR,
        avps: w.finish().unwrap(),
        timeout: None,
    }
}

#[test]
fn requests_for_another_host_or_realm_are_3002_or_3003_and_never_delivered() {
    // RFC 6733 §6.1.4 / DESIGN §9: s1 is not the destination and is no relay.
    let mut net = Net::new();
    let mut client = config("client.example.net", &[("s1.example.net", addr(1))], &[]);
    for realm in ["example.net", "far.net"] {
        client.routes.push(crate::config::RouteConfig {
            realm: realm.into(),
            app_id: None,
            peers: vec!["s1.example.net".into()],
            priority: 0,
        });
    }
    net.add(client, Behaviour::Echo);
    net.add(
        config("s1.example.net", &[], &["client.example.net"]),
        Behaviour::Echo,
    );
    net.start();
    let mut other_host = net.submit_request(
        0,
        ccr_with(1, |w| {
            w.str(293, M, 0, "s9.example.net");
        }),
    );
    net.run();
    let a = answered(&mut other_host).unwrap().unwrap();
    assert_eq!(a.find_u32(268, 0), Some(3002));
    assert!(a.header.flags.is_error(), "3xxx: E bit");
    assert_eq!(a.find_u32(416, 0), None, "generic layout, not the CCA's");
    // A foreign realm, routed to s1 by the client's table.
    let mut foreign = net.submit_request(
        0,
        ccr_with(2, |w| {
            w.str(283, M, 0, "far.net");
        }),
    );
    net.run();
    let a = answered(&mut foreign).unwrap().unwrap();
    assert_eq!(a.find_u32(268, 0), Some(3003));
    assert!(a.header.flags.is_error());
    // Ours (Destination-Host names s1, any case): delivered as usual.
    let mut ours = net.submit_request(
        0,
        ccr_with(3, |w| {
            w.str(293, M, 0, "S1.example.NET");
        }),
    );
    net.run();
    assert_eq!(
        answered(&mut ours).unwrap().unwrap().find_u32(268, 0),
        Some(2001)
    );
    assert_eq!(net.nodes[1].delivered.len(), 1, "only the request for s1");
}

/// client (0) -> relay (1) -> server (2) in realm far.net.
fn relay_net() -> Net {
    let mut net = Net::new();
    let mut client = config("client.example.net", &[("relay.example.net", addr(1))], &[]);
    client.default_route = vec!["relay.example.net".into()];
    net.add(client, Behaviour::Echo);
    let mut relay = config(
        "relay.example.net",
        &[("s2.far.net", addr(2))],
        &["client.example.net"],
    );
    relay.routing.relay = true;
    net.add(relay, Behaviour::Echo);
    let mut server = config("s2.far.net", &[], &["relay.example.net"]);
    server.node.origin_realm = "far.net".into();
    net.add(server, Behaviour::Echo);
    net.start();
    net
}

#[test]
fn relay_forwards_with_route_record_its_own_hop_by_hop_and_restores_the_answer() {
    let mut net = relay_net();
    let mut p = net.submit_request(
        0,
        ccr_with(7, |w| {
            w.str(283, M, 0, "far.net");
            w.group(284, M, 0, |w| {
                w.str(280, M, 0, "proxy.example.net");
                w.str(33, M, 0, "state");
            });
        }),
    );
    net.run();
    let a = answered(&mut p).expect("answered").unwrap();
    assert_eq!(a.find_u32(268, 0), Some(2001));
    assert_eq!(
        a.find_ref(264, 0).unwrap().data,
        b"s2.far.net",
        "the server's answer"
    );
    assert_eq!(
        net.nodes[1].delivered.len(),
        0,
        "the relay's application saw nothing"
    );
    let fwd = &net.nodes[2].delivered[0];
    let rr: Vec<&[u8]> = fwd
        .avp_refs()
        .map_while(Result::ok)
        .filter(|a| a.code == 282)
        .map(|a| a.data)
        .collect();
    assert_eq!(rr, [&b"client.example.net"[..]], "§6.1.8 Route-Record");
    assert!(
        fwd.find_ref(284, 0).is_some(),
        "Proxy-Info relayed untouched"
    );
    // Its own hop-by-hop id on the second hop, the end-to-end id kept.
    let first = net
        .seen
        .iter()
        .find(|s| s.from == 0 && s.msg.header.code == CCR)
        .unwrap();
    let second = net
        .seen
        .iter()
        .find(|s| s.from == 1 && s.msg.header.code == CCR && s.msg.is_request())
        .unwrap();
    assert_ne!(first.msg.header.hop_by_hop, second.msg.header.hop_by_hop);
    assert_eq!(first.msg.header.end_to_end, second.msg.header.end_to_end);
    let back = net
        .seen
        .iter()
        .find(|s| s.from == 1 && s.msg.header.code == CCR && !s.msg.is_request())
        .unwrap();
    assert_eq!(
        back.msg.header.hop_by_hop, first.msg.header.hop_by_hop,
        "§6.2.2"
    );
}

/// RFC 6733 §3: a request whose P bit is clear "MUST be locally processed": the relay does
/// not forward it, and not being its destination answers as a node that relays nothing
/// (3003 for a realm not its own, DESIGN §9). Until session 19 it was relayed.
#[test]
fn relay_does_not_forward_a_request_whose_p_bit_is_clear() {
    let mut net = relay_net();
    let (&(_, _), &(_, at_relay)) = net
        .links
        .iter()
        .find(|((i, _), (j, _))| *i == 0 && *j == 1)
        .expect("client -> relay link");
    let (hbh, e2e) = (0x5150, 0x5151);
    let mut w = MessageWriter::new(Header::request(CCR, 4, hbh, e2e));
    w.str(263, M, 0, "client.example.net;not-proxiable");
    w.str(264, M, 0, "client.example.net");
    w.str(296, M, 0, "example.net");
    w.str(283, M, 0, "far.net");
    w.u32(258, M, 0, 4);
    w.str(461, M, 0, "32251@3gpp.org");
    w.u32(416, M, 0, 1);
    w.u32(415, M, 0, 0);
    let now = net.now;
    net.nodes[1].core.frame(at_relay, w.finish().unwrap(), now);
    net.run();
    let a = &net
        .seen
        .iter()
        .find(|s| s.from == 1 && !s.msg.is_request() && s.msg.header.hop_by_hop == hbh)
        .expect("the relay answers it")
        .msg;
    assert_eq!(a.header.end_to_end, e2e);
    assert_eq!(a.find_u32(268, 0), Some(3003), "{a:?}");
    assert!(a.header.flags.is_error());
    assert!(
        !a.header.flags.is_proxiable(),
        "§6.2: the answer keeps P clear"
    );
    assert_eq!(net.nodes[2].delivered.len(), 0, "not relayed");
    assert!(
        !net.seen
            .iter()
            .any(|s| s.from == 1 && s.msg.is_request() && s.msg.header.code == CCR),
        "nothing forwarded"
    );
}

/// The answer to a request for far.net that already went through `record`.
fn relayed_after(net: &mut Net, record: &str) -> Message {
    let mut p = net.submit_request(
        0,
        ccr_with(1, |w| {
            w.str(283, M, 0, "far.net");
            w.str(282, M, 0, record);
        }),
    );
    net.run();
    answered(&mut p).unwrap().unwrap()
}

#[test]
fn relay_detects_loops_and_answers_what_it_cannot_deliver() {
    let mut net = relay_net();
    let a = relayed_after(&mut net, "RELAY.example.net");
    assert_eq!(a.find_u32(268, 0), Some(3005), "DIAMETER_LOOP_DETECTED");
    assert!(a.header.flags.is_error());
    // §6.1.7 predictive loop avoidance: the only next hop is already in Route-Record, so
    // it is not chosen; no route, and the server sees nothing.
    let a = relayed_after(&mut net, "S2.far.net");
    assert!(matches!(a.find_u32(268, 0), Some(3002 | 3003)), "{a:?}");
    assert_eq!(net.nodes[2].delivered.len(), 0);
    let mut nowhere = net.submit_request(
        0,
        ccr_with(2, |w| {
            w.str(283, M, 0, "nowhere.net");
        }),
    );
    net.run();
    let a = answered(&mut nowhere).unwrap().unwrap();
    assert_eq!(a.find_u32(268, 0), Some(3003));
    assert_eq!(net.nodes[2].delivered.len(), 0);
    // The server dies with a relayed request in flight: the relay answers it.
    net.nodes[2].behaviour = Behaviour::Hold;
    let mut lost = net.submit_request(
        0,
        ccr_with(3, |w| {
            w.str(283, M, 0, "far.net");
        }),
    );
    net.run();
    assert!(answered(&mut lost).is_none());
    net.kill(2);
    let a = answered(&mut lost).unwrap().unwrap();
    // Failover finds no other route: with its only peer gone the realm is unreachable
    // (the router's 3003); either way one error answer, at once, with the E bit.
    assert!(matches!(a.find_u32(268, 0), Some(3002 | 3003)), "{a:?}");
    assert!(a.header.flags.is_error());
}

/// A DWR from node `from` on its link to node `to`, as if sent with Origin-State-Id `osi`.
fn inject_dwr(net: &mut Net, from: usize, to: usize, osi: u32) {
    let (&(_, their), _) = net
        .links
        .iter()
        .find(|(&(n, _), &(m, _))| n == from && m == to)
        .expect("a link");
    let to_conn = net.links[&(from, their)].1;
    let host = format!("s{from}.example.net");
    let mut w = MessageWriter::new(Header::request(280, 0, 0x5151, 0x5252));
    w.str(264, M, 0, &host);
    w.str(296, M, 0, "example.net");
    w.u32(278, M, 0, osi);
    let bytes = w.finish().unwrap();
    let now = net.now;
    net.nodes[to].core.frame(to_conn, bytes, now);
    net.run();
}

#[test]
fn a_peer_that_restarted_is_reset_and_its_pending_requests_fail_over_once() {
    let long = |c: &mut Config| c.timers.answer_timeout = Duration::from_secs(300);
    let mut net = net_cfg(&[Behaviour::Hold, Behaviour::Echo], long, |_| {});
    let mut ps: Vec<PendingAnswer> = (0..4).map(|n| net.submit(0, n)).collect();
    assert_eq!(net.nodes[1].held.len(), 2, "s1 holds its half");
    let dwas_before = net.sent_by(0, BaseKind::Dwa);
    // s1's DWR with the Origin-State-Id it sent in its CEA: nothing happens but the DWA.
    inject_dwr(&mut net, 1, 0, 1_700_000_001);
    assert_eq!(net.sent_by(0, BaseKind::Dwa), dwas_before + 1);
    assert_eq!(net.outcomes.borrow().len(), 2, "s1's two are still waiting");
    // Now with another value: s1 restarted (RFC 6733 §8.16).
    inject_dwr(&mut net, 1, 0, 1_700_009_999);
    assert_eq!(
        net.sent_by(0, BaseKind::Dwa),
        dwas_before + 1,
        "the DWR that showed the restart is not answered"
    );
    assert_eq!(
        net.sent_by(0, BaseKind::Dpr),
        0,
        "reset without DPR, as freeDiameter"
    );
    assert!(
        !net.links.keys().any(|&(n, _)| n == 1),
        "the connection to s1 is closed"
    );
    assert_each_echoed(&mut ps);
    assert_eq!(
        retransmitted_to(&net, 2),
        2,
        "the two held by s1 went to s2 with the T flag"
    );
    // s1 answering late changes nothing: its connection is gone (and the harness fails on a
    // second outcome for any request).
    net.release(1);
    // Reconnection after Tc (5 s here); the new connection is used at once.
    let cers = net.sent_by(0, BaseKind::Cer);
    net.advance(Duration::from_secs(6));
    assert_eq!(
        net.sent_by(0, BaseKind::Cer),
        cers + 1,
        "reconnected after Tc"
    );
    let mut more: Vec<PendingAnswer> = (10..14).map(|n| net.submit(0, n)).collect();
    assert_eq!(net.nodes[1].held.len(), 2, "s1 carries requests again");
    net.release(1);
    for p in &mut more {
        assert!(answered(p).expect("answered").is_ok());
    }
}

/// Client and server both configured for in-band TLS with each other (as `tweak` leaves it).
fn inband_net(client: bool, server: bool) -> Net {
    net_cfg(
        &[Behaviour::Echo],
        |c| c.peers[0].tls_inband = client,
        |c| c.peers[0].tls_inband = server,
    )
}

fn isi(net: &Net, from: usize, kind: BaseKind) -> Vec<u32> {
    let m = net
        .seen
        .iter()
        .find(|s| s.from == from && wire::classify(&s.msg.header) == kind)
        .map(|s| s.msg.clone())
        .expect("message seen");
    wire::decode_capabilities(&m).unwrap().inband_security_ids
}

/// The Result-Code of the server's CEA.
fn cea_result(net: &Net) -> Option<u32> {
    net.seen
        .iter()
        .find(|s| s.from == 1 && wire::classify(&s.msg.header) == BaseKind::Cea)
        .and_then(|s| s.msg.find_u32(268, 0))
}

fn host_of(i: usize) -> String {
    if i == 0 {
        "client.example.net".into()
    } else {
        format!("s{i}.example.net")
    }
}

#[test]
fn inband_tls_opens_only_after_the_handshake() {
    let mut net = inband_net(true, true);
    // RFC 3588 §2.1: CER and CEA both say TLS; then the handshake, the CER sender as client.
    assert_eq!(isi(&net, 0, BaseKind::Cer), vec![1]);
    assert_eq!(isi(&net, 1, BaseKind::Cea), vec![1]);
    let roles: Vec<usize> = net.handshakes.iter().map(|h| h.0).collect();
    assert_eq!(
        roles,
        vec![1, 0],
        "the server (CEA sender) first, then the client"
    );
    for n in 0..2 {
        let st = net.nodes[n].core.status();
        assert_eq!(st[0].state, crate::peer::State::TlsHandshake);
        assert!(!st[0].usable, "nothing is routed before the handshake");
    }
    // No DWR either, however long the handshake takes (within the CER timeout).
    net.advance(Duration::from_millis(1500));
    assert_eq!(
        net.sent_by(0, BaseKind::Dwr) + net.sent_by(1, BaseKind::Dwr),
        0
    );
    net.finish_tls(host_of);
    for n in 0..2 {
        let st = net.nodes[n].core.status();
        assert!(st[0].usable, "{:?}", st[0]);
    }
    let mut p = net.submit(0, 7);
    let a = answered(&mut p).expect("answered").unwrap();
    assert_eq!(a.find_u32(268, 0), Some(2001));
}

#[test]
fn inband_tls_with_a_certificate_for_another_host_is_refused() {
    let mut net = inband_net(true, true);
    let refusals = net.nodes[1].core.refusals();
    // The client's certificate names someone else; the server's is fine.
    net.finish_tls(|j| {
        if j == 0 {
            "intruder.example.net".into()
        } else {
            host_of(j)
        }
    });
    assert_eq!(refusals.get(Refusal::CertNameMismatch), 1);
    assert!(net.links.is_empty(), "the connection is closed");
    let st = net.nodes[1].core.status();
    assert_eq!(st[0].state, crate::peer::State::Closed);
}

/// The server refuses the client's in-band certificate; before the driver has reported that
/// connection closed, the same Origin-Host dials again. The peer must be Closed as soon as the
/// close is decided, so the new CER is answered (2001, TLS) at once instead of being rejected
/// as a second connection of a busy peer (RFC 6733 §5.6.4 R-Reject, closed without CEA); and
/// the late close of the refused connection must not take the new one down.
#[test]
fn a_redial_right_after_a_refused_inband_handshake_is_accepted() {
    let mut net = inband_net(true, true);
    net.held_closes = Some(Vec::new());
    net.finish_tls(|j| {
        if j == 0 {
            "intruder.example.net".into()
        } else {
            host_of(j)
        }
    });
    let held = net.held_closes.clone().unwrap_or_default();
    assert_eq!(held.len(), 1, "the server closes the refused connection");
    let refused = held[0].1;
    assert_eq!(
        net.nodes[1].core.status()[0].state,
        crate::peer::State::Closed,
        "Closed when the close is decided, not when the socket is reported gone"
    );
    // The same Origin-Host dials again while the refused connection is still being torn down.
    let mut again = config("client.example.net", &[("s1.example.net", addr(1))], &[]);
    again.peers[0].tls_inband = true;
    again.routes.push(crate::config::RouteConfig {
        realm: "example.net".into(),
        app_id: None,
        peers: vec!["s1.example.net".into()],
        priority: 0,
    });
    let k = net.add(again, Behaviour::Echo);
    let ceas = net.sent_by(1, BaseKind::Cea);
    let now = net.now;
    net.nodes[k].core.start(now);
    net.run();
    assert_eq!(
        net.sent_by(1, BaseKind::Cea),
        ceas + 1,
        "the redial is answered"
    );
    let cea = net
        .seen
        .iter()
        .rev()
        .find(|s| s.from == 1 && wire::classify(&s.msg.header) == BaseKind::Cea)
        .map(|s| s.msg.clone())
        .expect("a CEA");
    assert_eq!(cea.find_u32(268, 0), Some(2001));
    assert!(
        net.handshakes.iter().any(|h| h.0 == 1),
        "the server starts the in-band handshake on the new connection"
    );
    // The refused connection's close arrives now: it is not the peer's connection any more.
    net.release_closes();
    // Node k is client.example.net too.
    net.finish_tls(|j| host_of(if j == k { 0 } else { j }));
    let st = net.nodes[1].core.status();
    assert!(st[0].usable, "{:?}", st[0]);
    assert!(net.links.keys().all(|&(n, c)| !(n == 1 && c == refused)));
    let mut p = net.submit(k, 9);
    let a = answered(&mut p).expect("answered").unwrap();
    assert_eq!(a.find_u32(268, 0), Some(2001));
}

#[test]
fn inband_tls_not_finished_in_time_closes() {
    let mut net = inband_net(true, true);
    net.advance(Duration::from_millis(2100));
    assert!(net.links.is_empty());
    // A late success changes nothing: the connection is no longer wanted.
    net.finish_tls(host_of);
    assert!(net.nodes[0].core.status()[0].state != crate::peer::State::IOpen);
}

#[test]
fn no_common_security_is_5017_either_way() {
    // We require in-band TLS; the peer offers nothing (NO_INBAND_SECURITY).
    let net = inband_net(false, true);
    assert_eq!(isi(&net, 0, BaseKind::Cer), Vec::<u32>::new());
    assert_eq!(cea_result(&net), Some(5017));
    assert!(net.handshakes.is_empty());
    assert!(net.links.is_empty());
    // The peer insists on TLS, which we were not told to use with it.
    let net = inband_net(true, false);
    assert_eq!(isi(&net, 0, BaseKind::Cer), vec![1]);
    assert_eq!(cea_result(&net), Some(5017));
    assert!(net.handshakes.is_empty());
}

/// A frame that makes the core close a connection, then a framing error on a request header
/// read in the same batch: nothing may be sent on the connection after the core's Close
/// (found by the `node` fuzz target: the 5011 answer to the bad header went out after it).
#[test]
fn nothing_is_sent_on_a_connection_after_the_core_closed_it() {
    let cfg = config("ocs.example.net", &[], &["scscf.example.net"]);
    let seeds = Seeds {
        start_secs: 1_700_000_000,
        start_micros: 0,
        random: 1,
    };
    let mut core = Endpoint::new(cfg, dmproto::dict::Dictionary::builtin(), seeds);
    let now = Instant::now();
    core.start(now);
    let conn = core.accept(None, None, None, now).expect("accepted");
    // RFC 6733 §5.3: the first message on an accepted connection must be a CER; an answer
    // gets the connection closed.
    core.frame(conn, dmproto::samples::cea(), now);
    let mut bad = dmproto::samples::ro_ccr().to_vec();
    bad[0] = 0;
    let mut framer = dmproto::Framer::new(65_536);
    let error = match framer.feed(&bad) {
        Err(e) => e,
        Ok(()) => framer.next_frame().expect_err("version 0 is refused"),
    };
    core.frame_error(conn, error, now);
    let mut closed = false;
    while let Some(out) = core.poll_output() {
        match out {
            Output::Close { conn: c } if c == conn => closed = true,
            Output::Transmit { conn: c, .. } if c == conn => {
                assert!(!closed, "transmit after the core closed the connection")
            }
            _ => {}
        }
    }
    assert!(closed, "the CEA before CER closes the connection");
}

/// `dmbridge ctl peer disable|enable` refusals are typed (issue 10 item 7: no `String`
/// errors at the node's seam); the admin socket shows their text unchanged.
#[test]
fn operator_peer_commands_refuse_unknown_hosts_and_needless_enables() {
    let mut net = net(&[Behaviour::Echo]);
    let now = net.now;
    let core = &mut net.nodes[0].core;
    assert_eq!(
        core.enable_peer("s1.example.net", now),
        Err(PeerAdminError::NotDisabled("s1.example.net".into()))
    );
    assert_eq!(
        core.disable_peer("nobody.example.net", now),
        Err(PeerAdminError::NoSuchPeer("nobody.example.net".into()))
    );
    assert_eq!(core.disable_peer("s1.example.net", now), Ok(()));
    assert_eq!(core.enable_peer("s1.example.net", now), Ok(()));
    assert_eq!(
        PeerAdminError::NoSuchPeer("hss1".into()).to_string(),
        "no peer named hss1"
    );
}

/// Counts what the core reports as refusals and events (by label).
#[derive(Clone, Default)]
struct Counted(Arc<std::sync::Mutex<Vec<&'static str>>>);

impl Observer for Counted {
    fn refusal(&mut self, cause: &'static str) {
        self.0.lock().unwrap().push(cause);
    }
    fn event(&mut self, event: &'static str) {
        self.0.lock().unwrap().push(event);
    }
}

impl Counted {
    fn count(&self, label: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| **l == label)
            .count()
    }
}

/// The client's requests as they went out (CCRs), in order.
fn ccrs_sent(net: &Net) -> Vec<&Message> {
    net.seen
        .iter()
        .filter(|s| s.from == 0 && s.msg.header.code == CCR && s.msg.is_request())
        .map(|s| &s.msg)
        .collect()
}

#[test]
fn a_too_busy_answer_sends_the_request_to_an_alternate_peer() {
    // RFC 6733 §7.1.3, DIAMETER_TOO_BUSY: "When returned, a Diameter node SHOULD attempt to
    // send the message to an alternate peer."
    let mut net = net(&[Behaviour::Busy, Behaviour::Echo]);
    let counted = Counted::default();
    net.nodes[0].core.set_observer(Box::new(counted.clone()));
    let mut ps: Vec<PendingAnswer> = (0..4).map(|n| net.submit(0, n)).collect();
    for (n, p) in ps.iter_mut().enumerate() {
        let a = answered(p).expect("one outcome").unwrap();
        assert_eq!(a.find_u32(268, 0), Some(2001), "request {n}");
        assert_eq!(a.find_u32(415, 0), Some(n as u32));
    }
    let busy = net.nodes[1].delivered.len();
    assert!(busy >= 1, "some went to the busy s1 first");
    assert_eq!(net.nodes[2].delivered.len(), 4, "s2 served them all");
    assert_eq!(counted.count("busy_resent"), busy);
    // The resent request is the same request (end-to-end id, AVPs), not a retransmission
    // after a link failure: no T flag.
    for m in &net.nodes[1].delivered {
        let again: Vec<&Message> = net.nodes[2]
            .delivered
            .iter()
            .filter(|d| d.header.end_to_end == m.header.end_to_end)
            .collect();
        assert_eq!(again.len(), 1);
        assert!(!again[0].header.flags.is_retransmit());
        assert_eq!(again[0].session_id(), m.session_id());
    }
}

#[test]
fn a_too_busy_answer_without_alternate_reaches_the_requester() {
    // No alternate peer: the 3004 answer is the outcome, once.
    let mut net = net(&[Behaviour::Busy]);
    let mut p = net.submit(0, 1);
    let a = answered(&mut p).expect("one outcome").unwrap();
    assert_eq!(a.find_u32(268, 0), Some(3004));
    assert!(a.header.flags.is_error());
    // Every peer busy: each tried once, then the last 3004 is the outcome.
    let mut two = net_cfg(&[Behaviour::Busy, Behaviour::Busy], |_| {}, |_| {});
    let mut p = two.submit(0, 2);
    let a = answered(&mut p).expect("one outcome").unwrap();
    assert_eq!(a.find_u32(268, 0), Some(3004));
    assert_eq!(two.nodes[1].delivered.len(), 1);
    assert_eq!(two.nodes[2].delivered.len(), 1);
}

#[test]
fn a_redirect_indication_sends_the_request_to_the_redirect_host() {
    // RFC 6733 §6.12: "the receiving Diameter node SHOULD forward the request directly to
    // one of the hosts identified in these AVPs". s1 alone is in the realm table; it
    // redirects to s3, a peer of ours.
    let only_s1 = |c: &mut Config| c.routes[0].peers = vec!["s1.example.net".into()];
    let servers = [
        Behaviour::Redirect("s3.example.net"),
        Behaviour::Echo,
        Behaviour::Echo,
    ];
    let mut net = net_cfg(&servers, only_s1, |_| {});
    let counted = Counted::default();
    net.nodes[0].core.set_observer(Box::new(counted.clone()));
    let mut p = net.submit(0, 5);
    let a = answered(&mut p).expect("one outcome").unwrap();
    assert_eq!(a.find_u32(268, 0), Some(2001));
    assert_eq!(a.find_ref(264, 0).unwrap().data, b"s3.example.net");
    assert_eq!(net.nodes[1].delivered.len(), 1);
    assert_eq!(net.nodes[2].delivered.len(), 0);
    assert_eq!(net.nodes[3].delivered.len(), 1);
    assert_eq!(counted.count("redirected"), 1);
    let sent = ccrs_sent(&net);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].header.end_to_end, sent[1].header.end_to_end);
    assert!(!sent[1].header.flags.is_retransmit());

    // A Redirect-Host we have no connection to: the 3006 reaches the requester as it came.
    let servers = [
        Behaviour::Redirect("elsewhere.example.org"),
        Behaviour::Echo,
    ];
    let mut net = net_cfg(&servers, only_s1, |_| {});
    let mut p = net.submit(0, 6);
    let a = answered(&mut p).expect("one outcome").unwrap();
    assert_eq!(a.find_u32(268, 0), Some(3006));
    assert!(a.header.flags.is_error());
    assert_eq!(net.nodes[2].delivered.len(), 0);
}

/// Each server's delivered requests, as counts (server 1 is `nodes[1]`).
fn delivered_counts(net: &Net) -> Vec<usize> {
    net.nodes[1..].iter().map(|n| n.delivered.len()).collect()
}

/// A CCR of session `sid` (and User-Name `user`), with its outcome's Result-Code and
/// Origin-Host.
fn ccr_outcome(net: &mut Net, n: u32, sid: &str, user: &str, realm: &str) -> (u32, String) {
    let req = ccr_with(n, |w| {
        w.str(263, M, 0, sid);
        w.str(1, M, 0, user);
        w.str(283, M, 0, realm);
    });
    let mut p = net.submit_request(0, req);
    net.run();
    let a = answered(&mut p).expect("one outcome").unwrap();
    let host = a
        .find_ref(264, 0)
        .map(|h| String::from_utf8_lossy(h.data).into_owned());
    (a.find_u32(268, 0).unwrap(), host.unwrap_or_default())
}

/// client -> s1 (the realm table's only peer; a redirect agent behaving as `agent`), s2,
/// s3 (peers of the client the agent may redirect to, echoing unless given), with
/// Counted events.
fn redirect_net(agent: Behaviour, s2: Behaviour) -> (Net, Counted) {
    redirect_net_with(agent, s2, |_| {})
}

/// [`redirect_net`] with the client's configuration tweaked by `tweak` too.
fn redirect_net_with(
    agent: Behaviour,
    s2: Behaviour,
    tweak: impl FnOnce(&mut Config),
) -> (Net, Counted) {
    let only_s1 = |c: &mut Config| {
        tweak(c);
        c.routes[0].peers = vec!["s1.example.net".into()];
        c.routes.push(crate::config::RouteConfig {
            realm: "far.net".into(),
            app_id: None,
            peers: vec!["s1.example.net".into()],
            priority: 0,
        });
    };
    let mut net = net_cfg(&[agent, s2, Behaviour::Echo], only_s1, |_| {});
    let counted = Counted::default();
    net.nodes[0].core.set_observer(Box::new(counted.clone()));
    (net, counted)
}

const S3: &str = "s3.example.net";

#[test]
fn a_cached_all_realm_redirect_sends_later_requests_straight_to_the_host_until_it_expires() {
    // RFC 6733 §6.12: "The server contained in the selected Redirect-Host AVP SHOULD be used
    // for all messages matching the criteria set by the Redirect-Host-Usage AVP"; §6.13
    // ALL_REALM: "All messages destined for the realm requested"; §6.14: at most
    // Redirect-Max-Cache-Time seconds.
    let (mut net, counted) =
        redirect_net(Behaviour::RedirectCaching(S3, 2, Some(60)), Behaviour::Echo);
    assert_eq!(
        ccr_outcome(&mut net, 1, "c;1", "u1", "example.net"),
        (2001, S3.into())
    );
    assert_eq!(delivered_counts(&net), [1, 0, 1]);
    assert_eq!(counted.count("redirect_cached"), 1);
    // Other sessions and users of the realm: straight to s3, the agent not visited.
    for n in 2..5 {
        let sid = format!("c;{n}");
        assert_eq!(
            ccr_outcome(&mut net, n, &sid, "u2", "example.net"),
            (2001, S3.into())
        );
    }
    assert_eq!(delivered_counts(&net), [1, 0, 4]);
    assert_eq!(counted.count("redirect_cache_used"), 3);
    assert_eq!(counted.count("redirected"), 1);
    // Another realm is not matched: it goes to s1 (which serves example.net only: 3003).
    assert_eq!(
        ccr_outcome(&mut net, 5, "c;5", "u2", "far.net"),
        (3003, "s1.example.net".into())
    );
    // Expired (the watchdogs keep the connections up meanwhile): the agent again.
    net.advance(Duration::from_secs(61));
    assert_eq!(
        ccr_outcome(&mut net, 6, "c;6", "u2", "example.net"),
        (2001, S3.into())
    );
    assert_eq!(delivered_counts(&net), [2, 0, 5]);
    assert_eq!(counted.count("redirected"), 2);
    assert_eq!(counted.count("redirect_cache_used"), 3);
}

#[test]
fn a_redirect_is_cached_no_longer_than_the_configured_cap() {
    // §6.14 lets the agent ask for up to 2^32-1 s; `[limits] redirect_cache_max_time` keeps
    // it to 2 minutes here: used within them, gone after, and the cut is counted.
    let agent = Behaviour::RedirectCaching(S3, 2, Some(u32::MAX));
    let cap = |c: &mut Config| c.limits.redirect_cache_max_time = Duration::from_secs(120);
    let (mut net, counted) = redirect_net_with(agent, Behaviour::Echo, cap);
    assert_eq!(ccr_outcome(&mut net, 1, "c;1", "u1", "example.net").0, 2001);
    assert_eq!(counted.count("redirect_cached"), 1);
    assert_eq!(counted.count("redirect_cache_time_capped"), 1);
    net.advance(Duration::from_secs(100));
    assert_eq!(ccr_outcome(&mut net, 2, "c;2", "u1", "example.net").0, 2001);
    assert_eq!(delivered_counts(&net), [1, 0, 2], "cached within the cap");
    assert_eq!(counted.count("redirect_cache_used"), 1);
    net.advance(Duration::from_secs(21));
    assert_eq!(ccr_outcome(&mut net, 3, "c;3", "u1", "example.net").0, 2001);
    assert_eq!(
        delivered_counts(&net),
        [2, 0, 3],
        "past the cap: the agent again"
    );
    assert_eq!(counted.count("redirect_cache_used"), 1);
    assert_eq!(counted.count("redirected"), 2);
    // The default cap (1 h) leaves a shorter time alone.
    let agent = Behaviour::RedirectCaching(S3, 2, Some(60));
    let (mut net, counted) = redirect_net(agent, Behaviour::Echo);
    assert_eq!(ccr_outcome(&mut net, 1, "c;1", "u1", "example.net").0, 2001);
    assert_eq!(counted.count("redirect_cached"), 1);
    assert_eq!(counted.count("redirect_cache_time_capped"), 0);
}

#[test]
fn no_redirect_is_cached_when_the_cache_has_no_entries() {
    // `[limits] redirect_cache_entries = 0`: each 3006 still sends its request to the
    // Redirect-Host (§6.12), but later requests go by the routes (to the agent) again.
    let agent = Behaviour::RedirectCaching(S3, 2, Some(60));
    let off = |c: &mut Config| c.limits.redirect_cache_entries = 0;
    let (mut net, counted) = redirect_net_with(agent, Behaviour::Echo, off);
    for n in 1..4 {
        let sid = format!("c;{n}");
        assert_eq!(
            ccr_outcome(&mut net, n, &sid, "u1", "example.net"),
            (2001, S3.into())
        );
    }
    assert_eq!(delivered_counts(&net), [3, 0, 3]);
    assert_eq!(counted.count("redirected"), 3);
    assert_eq!(counted.count("redirect_cached"), 0);
    assert_eq!(counted.count("redirect_cache_used"), 0);
}

#[test]
fn a_cached_session_or_user_redirect_is_used_for_that_session_or_user_only() {
    // §6.13 ALL_SESSION: "All messages within the same session, as defined by the same value
    // of the Session-ID AVP"; ALL_USER: "All messages for the user requested".
    for (usage, same, other) in [
        (1, ("c;1", "u2"), ("c;2", "u1")),
        (6, ("c;2", "u1"), ("c;3", "u2")),
    ] {
        let agent = Behaviour::RedirectCaching(S3, usage, Some(60));
        let (mut net, counted) = redirect_net(agent, Behaviour::Echo);
        assert_eq!(ccr_outcome(&mut net, 1, "c;1", "u1", "example.net").0, 2001);
        assert_eq!(delivered_counts(&net), [1, 0, 1], "usage {usage}");
        let (sid, user) = same;
        assert_eq!(ccr_outcome(&mut net, 2, sid, user, "example.net").0, 2001);
        assert_eq!(delivered_counts(&net), [1, 0, 2], "usage {usage}: cached");
        let (sid, user) = other;
        assert_eq!(ccr_outcome(&mut net, 3, sid, user, "example.net").0, 2001);
        assert_eq!(
            delivered_counts(&net),
            [2, 0, 3],
            "usage {usage}: not matched"
        );
        assert_eq!(counted.count("redirect_cache_used"), 1);
        assert_eq!(counted.count("redirect_cached"), 2);
    }
}

#[test]
fn a_cached_realm_and_application_redirect_matches_that_realm() {
    // §6.13 REALM_AND_APPLICATION: "All messages for the application requested to the realm
    // specified".
    let agent = Behaviour::RedirectCaching(S3, 3, Some(60));
    let (mut net, counted) = redirect_net(agent, Behaviour::Echo);
    assert_eq!(ccr_outcome(&mut net, 1, "c;1", "u1", "example.net").0, 2001);
    assert_eq!(
        ccr_outcome(&mut net, 2, "c;2", "u2", "EXAMPLE.net"),
        (2001, S3.into())
    );
    assert_eq!(delivered_counts(&net), [1, 0, 2]);
    assert_eq!(
        ccr_outcome(&mut net, 3, "c;3", "u2", "far.net").1,
        "s1.example.net"
    );
    assert_eq!(counted.count("redirect_cache_used"), 1);
}

#[test]
fn a_session_redirect_takes_precedence_over_a_realm_redirect() {
    // §6.13: when several cached routes match, "ALL_SESSION" comes first, "ALL_REALM" fourth.
    // s1 redirects the realm to s2; s2 redirects the session to s3.
    let (mut net, counted) = redirect_net(
        Behaviour::RedirectCaching("s2.example.net", 2, Some(60)),
        Behaviour::RedirectCaching(S3, 1, Some(60)),
    );
    assert_eq!(
        ccr_outcome(&mut net, 1, "c;1", "u1", "example.net"),
        (2001, S3.into())
    );
    assert_eq!(delivered_counts(&net), [1, 1, 1]);
    assert_eq!(counted.count("redirect_cached"), 2);
    // The session: both entries match; ALL_SESSION wins (s3, s2 not visited).
    assert_eq!(
        ccr_outcome(&mut net, 2, "c;1", "u1", "example.net"),
        (2001, S3.into())
    );
    assert_eq!(delivered_counts(&net), [1, 1, 2]);
    // Another session: ALL_REALM to s2, which redirects it to s3 in turn.
    assert_eq!(
        ccr_outcome(&mut net, 3, "c;2", "u1", "example.net"),
        (2001, S3.into())
    );
    assert_eq!(delivered_counts(&net), [1, 2, 3]);
    assert_eq!(counted.count("redirect_cache_used"), 2);
}

#[test]
fn a_caching_redirect_without_max_cache_time_is_not_cached_and_counted() {
    // §6.14: Redirect-Max-Cache-Time "MUST be present" when Redirect-Host-Usage is not
    // DONT_CACHE; without it, how long to cache is unknown: DONT_CACHE.
    let agent = Behaviour::RedirectCaching(S3, 2, None);
    let (mut net, counted) = redirect_net(agent, Behaviour::Echo);
    for n in 1..3 {
        let sid = format!("c;{n}");
        assert_eq!(
            ccr_outcome(&mut net, n, &sid, "u1", "example.net"),
            (2001, S3.into())
        );
    }
    assert_eq!(delivered_counts(&net), [2, 0, 2], "the agent saw both");
    assert_eq!(counted.count("redirect_cache_time_missing"), 2);
    assert_eq!(counted.count("redirect_cached"), 0);
}

#[test]
fn a_cached_redirect_to_a_peer_that_went_down_is_deleted() {
    // §6.14: "once a host is no longer reachable, any associated cache ... entries MUST be
    // deleted"; meanwhile the normal routes apply.
    let agent = Behaviour::RedirectCaching(S3, 2, Some(3600));
    let (mut net, counted) = redirect_net(agent, Behaviour::Echo);
    assert_eq!(ccr_outcome(&mut net, 1, "c;1", "u1", "example.net").0, 2001);
    net.kill(3);
    // s3 is gone: the agent answers 3006 naming it, which reaches the requester.
    assert_eq!(ccr_outcome(&mut net, 2, "c;2", "u1", "example.net").0, 3006);
    assert_eq!(delivered_counts(&net), [2, 0, 1]);
    // s3 back (redialled after Tc, usable after three DWAs, RFC 3539 REOPEN; well within
    // the entry's hour): the entry is gone, so the agent is asked again.
    net.nodes[3].up = true;
    net.advance(Duration::from_secs(100));
    assert!(
        net.nodes[0].core.status().iter().all(|p| p.usable),
        "s3 open again"
    );
    assert_eq!(
        ccr_outcome(&mut net, 3, "c;3", "u1", "example.net"),
        (2001, S3.into())
    );
    assert_eq!(delivered_counts(&net), [3, 0, 2]);
    assert_eq!(counted.count("redirect_cache_used"), 0);
}
