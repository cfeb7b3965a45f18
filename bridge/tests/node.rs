//! The node over real loopback sockets: a raw Diameter client against it, and nodes talking
//! to each other. Ports are chosen by the OS (port 0, 127.0.0.1 only); every node is shut
//! down at the end of its test, and every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dmnode::config;
use dmnode::peer::fsm::Outgoing;
use dmnode::peer::wire;
use dmnode::peer::Capabilities;
use dmproto::dict::Dictionary;
use dmproto::{Flags, Framer, Header, Message, MessageWriter};
use dmrun::app::{
    self, AnswerBody, AppHandle, Application, IncomingRequest, RequestError, Responder,
};
use dmrun::driver::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
const M: u8 = 0x40;
const CCA: u32 = 272;

/// Answers every request with its own AVPs plus a marker, counting them.
struct Echo {
    name: &'static str,
    seen: AtomicUsize,
}

impl Application for Echo {
    fn on_request(&self, request: IncomingRequest, responder: Responder) {
        self.seen.fetch_add(1, Ordering::SeqCst);
        let mut w = MessageWriter::new(Header::request(0, 0, 0, 0));
        w.str(1, M, 0, self.name); // User-Name: who answered
        if let Some(n) = request.message.find_u32(415, 0) {
            w.u32(415, M, 0, n); // CC-Request-Number echoed
        }
        let avps = w.finish().unwrap().slice(20..);
        responder.answer(AnswerBody {
            avps,
            is_error: false,
        });
    }
}

/// Drops every responder: the node must answer 5012.
struct Mute;
impl Application for Mute {
    fn on_request(&self, _: IncomingRequest, _: Responder) {}
}

struct Running {
    addr: SocketAddr,
    handle: AppHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            timeout(Duration::from_secs(20), t)
                .await
                .expect("node stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn start(toml: &str, app: Arc<dyn Application>) -> Running {
    let config = config::parse(toml).unwrap_or_else(|e| panic!("{e:?}"));
    let node = Node::bind(config, Dictionary::builtin()).await.unwrap();
    let addr = node.local_addrs()[0];
    let (handle, subs) = app::channel(1024);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(node.run(app, subs, async move {
        let _ = stop_rx.await;
    }));
    Running {
        addr,
        handle,
        stop: Some(stop_tx),
        task: Some(task),
    }
}

fn server_config(host: &str, extra: &str) -> String {
    format!(
        r#"
[node]
origin_host = "{host}"
origin_realm = "example.net"
listen = ["127.0.0.1:0"]
[[applications]]
id = 4
[[peers]]
host = "client.example.net"
mode = "accept"
[[peers]]
host = "a.example.net"
mode = "accept"
[timers]
tw = "6s"
answer_timeout = "3s"
cer_timeout = "2s"
dpa_timeout = "1s"
drain_timeout = "2s"
[app]
reply_timeout = "1s"
{extra}
"#
    )
}

/// A raw Diameter peer over TCP.
struct Raw {
    s: TcpStream,
    framer: Framer,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            framer: Framer::new(1 << 20),
        }
    }

    async fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }

    /// The next message, or None on EOF.
    async fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.framer.next_frame().unwrap() {
                return Some(Message::decode(f).unwrap());
            }
            let n = timeout(WAIT, self.s.read(&mut buf))
                .await
                .expect("read in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.framer.feed(&buf[..n]).unwrap();
        }
    }

    async fn handshake(addr: SocketAddr, host: &str) -> (Raw, Message) {
        let mut r = Raw::connect(addr).await;
        r.send(&wire::encode(&Outgoing::Cer, &caps(host), 1, 1).unwrap())
            .await;
        let cea = r.recv().await.expect("CEA");
        (r, cea)
    }
}

fn caps(host: &str) -> Capabilities {
    Capabilities {
        origin_host: host.into(),
        origin_realm: "example.net".into(),
        host_ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        vendor_id: 0,
        product_name: "raw".into(),
        auth_app_ids: vec![4],
        ..Capabilities::default()
    }
}

fn ccr(hbh: u32, e2e: u32, n: u32) -> Bytes {
    let mut h = Header::request(CCA, 4, hbh, e2e);
    h.flags = h.flags.with(Flags::P);
    let mut w = MessageWriter::new(h);
    w.str(263, M, 0, &format!("client.example.net;1;{e2e}"));
    w.str(264, M, 0, "client.example.net");
    w.str(296, M, 0, "example.net");
    w.str(283, M, 0, "example.net");
    w.u32(258, M, 0, 4);
    w.str(461, M, 0, "32251@3gpp.org");
    w.u32(416, M, 0, 1);
    w.u32(415, M, 0, n);
    w.finish().unwrap()
}

#[tokio::test]
async fn raw_peer_exchanges_capabilities_requests_watchdog_and_disconnect() {
    let echo = Arc::new(Echo {
        name: "srv",
        seen: AtomicUsize::new(0),
    });
    let node = start(&server_config("srv.example.net", ""), echo.clone()).await;
    let (mut r, cea) = Raw::handshake(node.addr, "client.example.net").await;
    assert_eq!(wire::classify(&cea.header), wire::BaseKind::Cea);
    assert_eq!(wire::result_code(&cea), Some(2001));
    let their = wire::decode_capabilities(&cea).unwrap();
    assert_eq!(their.origin_host, "srv.example.net");
    assert_eq!(their.auth_app_ids, vec![4]);
    assert_eq!(
        their.host_ip_addresses,
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );

    // Requests get their answer, matched by hop-by-hop id.
    for i in 0..5u32 {
        r.send(&ccr(100 + i, 200 + i, i)).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let a = r.recv().await.unwrap();
        assert!(!a.is_request());
        assert_eq!(a.find_u32(268, 0), Some(2001));
        assert_eq!(
            a.session_id(),
            Some(format!("client.example.net;1;{}", a.header.end_to_end).as_str())
        );
        assert_eq!(a.find_u32(415, 0), Some(a.header.hop_by_hop - 100));
        got.push(a.header.hop_by_hop);
    }
    got.sort();
    assert_eq!(got, vec![100, 101, 102, 103, 104]);
    assert_eq!(echo.seen.load(Ordering::SeqCst), 5);

    // A retransmission (T flag, same end-to-end id) gets the cached answer, not a new one.
    let mut again = ccr(300, 200, 0).to_vec();
    again[4] |= Flags::T;
    r.send(&again).await;
    let a = r.recv().await.unwrap();
    assert_eq!((a.header.hop_by_hop, a.header.end_to_end), (300, 200));
    assert_eq!(echo.seen.load(Ordering::SeqCst), 5, "not handled twice");

    // DWR -> DWA.
    r.send(&wire::encode(&Outgoing::Dwr, &caps("client.example.net"), 7, 7).unwrap())
        .await;
    let dwa = r.recv().await.unwrap();
    assert_eq!(wire::classify(&dwa.header), wire::BaseKind::Dwa);
    assert_eq!(dwa.header.hop_by_hop, 7);

    // DPR -> DPA; the node then waits for us to close (RFC 6733 §5.4) and, as we do not,
    // closes itself after dpa_timeout (dpr_closing.rs tests the order).
    let dpr = Outgoing::Dpr {
        cause: dmnode::peer::fsm::DisconnectCause::Rebooting,
    };
    r.send(&wire::encode(&dpr, &caps("client.example.net"), 8, 8).unwrap())
        .await;
    let dpa = r.recv().await.unwrap();
    assert_eq!(wire::classify(&dpa.header), wire::BaseKind::Dpa);
    assert!(r.recv().await.is_none(), "closed after DPA and dpa_timeout");
    node.stop().await;
}

#[tokio::test]
async fn unknown_peer_gets_3010_and_silent_connection_is_closed() {
    let node = start(&server_config("srv.example.net", ""), Arc::new(Mute)).await;
    let (mut r, cea) = Raw::handshake(node.addr, "stranger.example.net").await;
    assert_eq!(wire::result_code(&cea), Some(3010));
    assert!(cea.header.flags.is_error());
    assert!(r.recv().await.is_none());

    // No CER within cer_timeout (2 s): closed.
    let mut silent = Raw::connect(node.addr).await;
    assert!(silent.recv().await.is_none());
    node.stop().await;
}

#[tokio::test]
async fn dropped_responder_is_answered_5012_and_bad_requests_get_errors() {
    let node = start(&server_config("srv.example.net", ""), Arc::new(Mute)).await;
    let (mut r, _) = Raw::handshake(node.addr, "client.example.net").await;
    r.send(&ccr(1, 1, 0)).await;
    let a = r.recv().await.unwrap();
    assert_eq!(a.find_u32(268, 0), Some(5012));
    assert_eq!(a.header.hop_by_hop, 1);

    // Missing mandatory AVPs (CC-Request-Type, ...): 5005 from validation.
    let mut w = MessageWriter::new(Header::request(CCA, 4, 2, 2));
    w.str(263, M, 0, "x;1");
    w.str(264, M, 0, "client.example.net");
    r.send(&w.finish().unwrap()).await;
    let a = r.recv().await.unwrap();
    assert_eq!(a.find_u32(268, 0), Some(5005));

    // Unknown AVP with the M bit: 5001.
    let mut req = ccr(3, 3, 0).to_vec();
    let mut w = MessageWriter::new(Header::request(0, 0, 0, 0));
    w.u32(99999, M, 0, 1);
    let extra = w.finish().unwrap();
    req.extend_from_slice(&extra[20..]);
    let len = req.len() as u32;
    req[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    r.send(&req).await;
    let a = r.recv().await.unwrap();
    assert_eq!(a.find_u32(268, 0), Some(5001));
    node.stop().await;
}

#[tokio::test]
async fn hostile_bytes_close_one_connection_and_the_node_keeps_serving() {
    let echo = Arc::new(Echo {
        name: "srv",
        seen: AtomicUsize::new(0),
    });
    let node = start(&server_config("srv.example.net", ""), echo).await;
    let (mut good, _) = Raw::handshake(node.addr, "client.example.net").await;

    // Wrong version in an open connection: answered 5011 (header readable), then closed.
    let (mut bad, _) = Raw::handshake(node.addr, "a.example.net").await;
    let mut req = ccr(9, 9, 0).to_vec();
    req[0] = 2;
    bad.send(&req).await;
    let a = bad.recv().await.unwrap();
    assert_eq!(a.find_u32(268, 0), Some(5011));
    assert!(bad.recv().await.is_none());

    // Garbage, a huge length, and a truncated header (then silence, until the CER timeout)
    // before any CER: closed.
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[1, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        &[1, 0, 0, 64, 0x80, 0, 1, 1, 0, 0],
    ] {
        let mut r = Raw::connect(node.addr).await;
        r.send(junk).await;
        assert!(r.recv().await.is_none());
    }

    // The first peer still gets answers.
    good.send(&ccr(50, 50, 1)).await;
    assert_eq!(good.recv().await.unwrap().find_u32(268, 0), Some(2001));
    node.stop().await;
}

fn client_config(servers: &[(&str, SocketAddr)]) -> String {
    let mut s = String::from(
        r#"
[node]
origin_host = "client.example.net"
origin_realm = "example.net"
listen = ["127.0.0.1:0"]
[[applications]]
id = 4
[timers]
tc = "1s"
tw = "6s"
answer_timeout = "3s"
cer_timeout = "2s"
dpa_timeout = "1s"
drain_timeout = "2s"
"#,
    );
    for (host, addr) in servers {
        s += &format!(
            "[[peers]]\nhost = \"{host}\"\naddress = \"{}\"\nport = {}\n",
            addr.ip(),
            addr.port()
        );
    }
    let names: Vec<String> = servers.iter().map(|(h, _)| format!("\"{h}\"")).collect();
    s += &format!(
        "[[routes]]\nrealm = \"example.net\"\npeers = [{}]\n",
        names.join(", ")
    );
    s
}

fn request_avps(n: u32) -> Bytes {
    let mut w = MessageWriter::new(Header::request(0, 0, 0, 0));
    w.str(461, M, 0, "32251@3gpp.org");
    w.u32(416, M, 0, 1);
    w.u32(415, M, 0, n);
    w.finish().unwrap().slice(20..)
}

/// Waits until the client node can route requests (CER/CEA done with every server).
async fn until_routable(client: &Running, servers: usize) {
    let mut ok = std::collections::HashSet::new();
    for _ in 0..200 {
        if let Ok(a) = client.handle.send_request(4, CCA, request_avps(0)).await {
            if let Some(name) = a.find_ref(1, 0) {
                ok.insert(name.data.to_vec());
            }
            if ok.len() == servers {
                return;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("not routable to {servers} servers: {ok:?}");
}

#[tokio::test]
async fn nodes_originate_route_round_robin_and_fail_over() {
    let s1_echo = Arc::new(Echo {
        name: "s1",
        seen: AtomicUsize::new(0),
    });
    let s2_echo = Arc::new(Echo {
        name: "s2",
        seen: AtomicUsize::new(0),
    });
    let s1 = start(&server_config("s1.example.net", ""), s1_echo.clone()).await;
    let s2 = start(&server_config("s2.example.net", ""), s2_echo.clone()).await;
    let client_cfg = client_config(&[("s1.example.net", s1.addr), ("s2.example.net", s2.addr)]);
    // The servers must know the client: it is "client.example.net", listed as accept-only.
    let client = start(&client_cfg, Arc::new(Mute)).await;
    until_routable(&client, 2).await;

    // Round-robin: both servers get a share.
    let before = (
        s1_echo.seen.load(Ordering::SeqCst),
        s2_echo.seen.load(Ordering::SeqCst),
    );
    for i in 0..20 {
        let a = client
            .handle
            .send_request(4, CCA, request_avps(i))
            .await
            .unwrap();
        assert_eq!(a.find_u32(268, 0), Some(2001));
        assert_eq!(a.find_u32(415, 0), Some(i));
    }
    let d1 = s1_echo.seen.load(Ordering::SeqCst) - before.0;
    let d2 = s2_echo.seen.load(Ordering::SeqCst) - before.1;
    assert_eq!(d1 + d2, 20);
    assert!(d1 >= 5 && d2 >= 5, "round-robin: {d1} / {d2}");

    // s1 stops (DPR) while requests flow: every request gets exactly one outcome.
    let mut tasks = Vec::new();
    let mut s1 = Some(s1);
    let mut stopper = None;
    for i in 0..200u32 {
        let h = client.handle.clone();
        tasks.push(tokio::spawn(async move {
            h.send_request(4, CCA, request_avps(i)).await
        }));
        if i == 50 {
            stopper = s1.take().map(|s| tokio::spawn(s.stop()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut answered = 0;
    let mut failed = 0;
    for t in tasks {
        match timeout(WAIT, t)
            .await
            .expect("one outcome in time")
            .unwrap()
        {
            Ok(a) => {
                assert_eq!(a.find_u32(268, 0), Some(2001));
                answered += 1;
            }
            Err(
                RequestError::NoRoute { .. }
                | RequestError::Timeout
                | RequestError::ConnectionLost(_),
            ) => failed += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(answered + failed, 200);
    timeout(Duration::from_secs(20), stopper.unwrap())
        .await
        .unwrap()
        .unwrap();
    // With s1 gone, everything goes to s2.
    let before2 = s2_echo.seen.load(Ordering::SeqCst);
    for i in 0..10 {
        let a = client
            .handle
            .send_request(4, CCA, request_avps(i))
            .await
            .unwrap();
        assert_eq!(a.find_ref(1, 0).unwrap().data, b"s2");
    }
    assert_eq!(s2_echo.seen.load(Ordering::SeqCst) - before2, 10);
    client.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn no_route_and_timeout_are_reported() {
    let client = start(
        &client_config(&[]).replace("[[routes]]\nrealm = \"example.net\"\npeers = []\n", ""),
        Arc::new(Mute),
    )
    .await;
    match client.handle.send_request(4, CCA, request_avps(1)).await {
        Err(RequestError::NoRoute { result_code, .. }) => assert_eq!(result_code, 3003),
        other => panic!("{other:?}"),
    }
    client.stop().await;

    // A server whose application never answers in time: the client times out (3 s), while
    // the server answers 5012 after its reply timeout (1 s) — so set the server's reply
    // timeout above the client's answer timeout.
    struct Slow;
    impl Application for Slow {
        fn on_request(&self, _: IncomingRequest, r: Responder) {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(4));
                drop(r);
            });
        }
    }
    let server = start(
        &server_config("s1.example.net", "")
            .replace("reply_timeout = \"1s\"", "reply_timeout = \"8s\""),
        Arc::new(Slow),
    )
    .await;
    let client = start(
        &client_config(&[("s1.example.net", server.addr)]),
        Arc::new(Mute),
    )
    .await;
    let mut outcome = None;
    for _ in 0..100 {
        match client.handle.send_request(4, CCA, request_avps(1)).await {
            Err(RequestError::NoRoute { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => {
                outcome = Some(other);
                break;
            }
        }
    }
    assert_eq!(outcome, Some(Err(RequestError::Timeout)));
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn both_nodes_connecting_to_each_other_converge_and_talk_both_ways() {
    // Two nodes configured to connect to each other.
    let cfg = |me: &str, other: &str, port: u16| {
        format!(
            r#"
[node]
origin_host = "{me}"
origin_realm = "example.net"
listen = ["127.0.0.1:{port}"]
[[applications]]
id = 4
[[peers]]
host = "{other}"
address = "127.0.0.1"
port = {{OTHER}}
[[routes]]
realm = "example.net"
peers = ["{other}"]
[timers]
tc = "1s"
tw = "6s"
cer_timeout = "2s"
dpa_timeout = "1s"
drain_timeout = "1s"
"#
        )
    };
    // Reserve two ports by binding and releasing them.
    let p1 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p2 = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let a_echo = Arc::new(Echo {
        name: "a",
        seen: AtomicUsize::new(0),
    });
    let b_echo = Arc::new(Echo {
        name: "b",
        seen: AtomicUsize::new(0),
    });
    let a = start(
        &cfg("a.example.net", "b.example.net", p1).replace("{OTHER}", &p2.to_string()),
        a_echo.clone(),
    )
    .await;
    let b = start(
        &cfg("b.example.net", "a.example.net", p2).replace("{OTHER}", &p1.to_string()),
        b_echo.clone(),
    )
    .await;
    // Requests both ways succeed over whichever connection survived the election.
    for _ in 0..100 {
        let x = a.handle.send_request(4, CCA, request_avps(1)).await;
        let y = b.handle.send_request(4, CCA, request_avps(2)).await;
        if x.is_ok() && y.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let x = a
            .handle
            .send_request(4, CCA, request_avps(1))
            .await
            .unwrap();
        assert_eq!(x.find_ref(1, 0).unwrap().data, b"b");
        let y = b
            .handle
            .send_request(4, CCA, request_avps(2))
            .await
            .unwrap();
        assert_eq!(y.find_ref(1, 0).unwrap().data, b"a");
    }
    a.stop().await;
    b.stop().await;
}

/// Keeps every responder unanswered (a server that hangs).
struct Hold(std::sync::Mutex<Vec<Responder>>);
impl Application for Hold {
    fn on_request(&self, _: IncomingRequest, r: Responder) {
        if let Ok(mut v) = self.0.lock() {
            v.push(r);
        }
    }
}

/// Counts requests and how many carried the T flag.
struct Count {
    all: AtomicUsize,
    retransmitted: AtomicUsize,
}
impl Application for Count {
    fn on_request(&self, request: IncomingRequest, responder: Responder) {
        self.all.fetch_add(1, Ordering::SeqCst);
        if request.message.header.flags.is_retransmit() {
            self.retransmitted.fetch_add(1, Ordering::SeqCst);
        }
        responder.answer(AnswerBody::default());
    }
}

#[tokio::test]
async fn abrupt_peer_loss_resends_pending_requests_with_t_flag() {
    let hold = Arc::new(Hold(std::sync::Mutex::new(Vec::new())));
    let count = Arc::new(Count {
        all: AtomicUsize::new(0),
        retransmitted: AtomicUsize::new(0),
    });
    let s1 = start(
        &server_config("s1.example.net", "")
            .replace("reply_timeout = \"1s\"", "reply_timeout = \"8s\""),
        hold.clone(),
    )
    .await;
    let s2 = start(&server_config("s2.example.net", ""), count.clone()).await;
    let client = start(
        &client_config(&[("s1.example.net", s1.addr), ("s2.example.net", s2.addr)]),
        Arc::new(Mute),
    )
    .await;
    // Wait until both servers are open: requests to s1 hang, so probe s2 by Destination-Host
    // first, then look at s1's held responders.
    let mut to_s2 = request_avps(0).to_vec();
    let mut w = MessageWriter::new(Header::request(0, 0, 0, 0));
    w.str(293, M, 0, "s2.example.net");
    to_s2.extend_from_slice(&w.finish().unwrap()[20..]);
    let to_s2 = Bytes::from(to_s2);
    let mut up = false;
    for _ in 0..200 {
        if client
            .handle
            .send_request(4, CCA, to_s2.clone())
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "s2 never routable");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let h = client.handle.clone();
        tasks.push(tokio::spawn(async move {
            h.send_request(4, CCA, request_avps(7)).await
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
        if hold.0.lock().unwrap().len() >= 20 {
            break;
        }
    }
    let held = hold.0.lock().unwrap().len();
    assert!(held >= 20, "s1 never got requests ({held})");
    // s1 dies without DPR: its connections just close.
    drop(s1);
    let n = tasks.len();
    let mut ok = 0;
    for t in tasks {
        match timeout(WAIT, t).await.expect("an outcome in time").unwrap() {
            Ok(a) => {
                assert_eq!(a.find_u32(268, 0), Some(2001));
                ok += 1;
            }
            Err(e) => panic!("request lost to the failover: {e:?}"),
        }
    }
    assert_eq!(ok, n, "every request answered once");
    assert!(
        count.retransmitted.load(Ordering::SeqCst) >= held,
        "the {held} requests pending on s1 were resent with T: {}",
        count.retransmitted.load(Ordering::SeqCst)
    );
    client.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn ipv6_listen_and_connect() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback");
        return;
    }
    let echo = Arc::new(Echo {
        name: "v6",
        seen: AtomicUsize::new(0),
    });
    let cfg = server_config("s1.example.net", "")
        .replace("listen = [\"127.0.0.1:0\"]", "listen = [\"[::1]:0\"]");
    let server = start(&cfg, echo).await;
    assert!(server.addr.is_ipv6());
    // A raw peer over IPv6 gets its CEA with an IPv6 Host-IP-Address.
    let (_raw, cea) = Raw::handshake(server.addr, "client.example.net").await;
    assert_eq!(wire::result_code(&cea), Some(2001));
    let caps = wire::decode_capabilities(&cea).unwrap();
    assert_eq!(
        caps.host_ip_addresses,
        vec!["::1".parse::<std::net::IpAddr>().unwrap()]
    );
    drop(_raw);
    // A node connects to it over IPv6 and gets answers.
    let client = start(
        &client_config(&[("s1.example.net", server.addr)]),
        Arc::new(Mute),
    )
    .await;
    until_routable(&client, 1).await;
    client.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn status_is_published_when_peers_come_up() {
    let server = start(&server_config("s1.example.net", ""), Arc::new(Mute)).await;
    let config = config::parse(&client_config(&[("s1.example.net", server.addr)])).unwrap();
    let node = Node::bind(config, Dictionary::builtin()).await.unwrap();
    let mut status = node.status();
    let (_handle, subs) = app::channel(8);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(node.run(Arc::new(Mute), subs, async move {
        let _ = stop_rx.await;
    }));
    let up = timeout(WAIT, async {
        loop {
            status.changed().await.unwrap();
            let s = status.borrow_and_update().clone();
            if s.iter().any(|p| p.usable) {
                return s;
            }
        }
    })
    .await
    .expect("status in time");
    assert_eq!(up[0].host, "s1.example.net");
    assert_eq!(up[0].apps, vec![4]);
    let _ = stop_tx.send(());
    timeout(WAIT, task).await.unwrap().unwrap().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn ipv4_and_ipv6_wildcards_on_one_port_both_bind() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = server_config("s1.example.net", "").replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:{port}\", \"[::1]:{port}\"]"),
    );
    let node = start(&cfg, Arc::new(Mute)).await;
    // Two different peers (both configured), one per address family.
    let v4 = Raw::handshake(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "client.example.net",
    );
    let (_r4, cea4) = v4.await;
    let v6 = Raw::handshake(format!("[::1]:{port}").parse().unwrap(), "a.example.net");
    let (_r6, cea6) = v6.await;
    assert_eq!(wire::result_code(&cea4), Some(2001));
    assert_eq!(wire::result_code(&cea6), Some(2001));
    node.stop().await;
}

#[tokio::test]
async fn peer_address_may_be_a_host_name() {
    let echo = Arc::new(Echo {
        name: "named",
        seen: AtomicUsize::new(0),
    });
    let server = start(&server_config("s1.example.net", ""), echo.clone()).await;
    let cfg = client_config(&[("s1.example.net", server.addr)])
        .replace("address = \"127.0.0.1\"", "address = \"localhost\"");
    assert!(cfg.contains("\"localhost\""));
    let client = start(&cfg, Arc::new(Mute)).await;
    until_routable(&client, 1).await;
    assert!(echo.seen.load(Ordering::SeqCst) >= 1);
    client.stop().await;
    server.stop().await;
}

/// The code of the first AVP inside a Failed-AVP (279), if any.
fn failed_avp_code(m: &Message) -> Option<u32> {
    let f = m.find_ref(279, 0)?;
    let code = f.data.get(..4)?;
    Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]))
}

/// A CCR without the AVP `skip`, plus `extra` encoded AVPs.
fn ccr_with(hbh: u32, skip: u32, extra: &[u8]) -> Vec<u8> {
    let full = ccr(hbh, hbh, 0);
    let msg = Message::decode(full.clone()).unwrap();
    let mut out = full[..20].to_vec();
    for a in msg.avps().flatten() {
        if a.code != skip {
            out.extend_from_slice(&a.raw);
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
    }
    out.extend_from_slice(extra);
    let len = out.len() as u32;
    out[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    out
}

/// Drains `r` until the node closes it (bounded by `Raw::recv`'s timeout); returns the
/// messages it sent before closing.
async fn until_closed(r: &mut Raw) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(m) = r.recv().await {
        got.push(m);
        assert!(got.len() < 10, "the node keeps talking to a hostile peer");
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_errors_or_a_disconnect_while_another_peer_is_served() {
    let extra = "[[peers]]\nhost = \"b.example.net\"\nmode = \"accept\"\n\
                 [[peers]]\nhost = \"c.example.net\"\nmode = \"accept\"\n\
                 [[peers]]\nhost = \"d.example.net\"\nmode = \"accept\"\n";
    let echo = Arc::new(Echo {
        name: "srv",
        seen: AtomicUsize::new(0),
    });
    let node = start(&server_config("srv.example.net", extra), echo.clone()).await;

    // The other peer: a steady stream of requests in batches of 20 the whole time, each
    // answered 2001 with its own hop-by-hop id, counted.
    let (mut good, _) = Raw::handshake(node.addr, "client.example.net").await;
    let served = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (served2, stop2) = (served.clone(), stop.clone());
    let other = tokio::spawn(async move {
        let mut hbh = 1000u32;
        while !stop2.load(Ordering::SeqCst) {
            let first = hbh;
            let mut batch = Vec::new();
            for _ in 0..20 {
                batch.extend_from_slice(&ccr(hbh, hbh, 1));
                hbh += 1;
            }
            good.send(&batch).await;
            for want in first..hbh {
                let a = good.recv().await.expect("the other peer's answer");
                assert_eq!(a.header.hop_by_hop, want);
                assert_eq!(a.find_u32(268, 0), Some(2001));
                served2.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        good
    });
    // After each hostile case, the other peer must have been served some more.
    let still_served = |what: &'static str| {
        let served = served.clone();
        async move {
            let before = served.load(Ordering::SeqCst);
            let end = std::time::Instant::now() + WAIT;
            while served.load(Ordering::SeqCst) < before + 40 {
                assert!(
                    std::time::Instant::now() < end,
                    "the other peer starved after {what}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    // Before any CER: garbage, a huge length, a wrong version, a truncated header (then
    // silence until the CER timeout): each connection is closed, nothing answered.
    for (what, junk) in [
        ("garbage", &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]),
        (
            "huge length",
            &[1, 0xff, 0xff, 0xff, 0x80, 0, 1, 1, 0, 0, 0, 0][..],
        ),
        (
            "wrong version",
            &[
                2, 0, 0, 20, 0x80, 0, 1, 1, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 1,
            ][..],
        ),
        ("truncated header", &[1, 0, 0, 64, 0x80, 0, 1, 1, 0, 0][..]),
    ] {
        let mut r = Raw::connect(node.addr).await;
        r.send(junk).await;
        let got = until_closed(&mut r).await;
        assert!(
            got.iter()
                .all(|m| m.find_u32(268, 0).is_some_and(|rc| rc >= 3000)),
            "{what}: {got:?}"
        );
        still_served(what).await;
    }

    // On open connections.
    // Unknown AVP with the M bit: 5001 naming it in Failed-AVP; the connection stays usable.
    let (mut a, _) = Raw::handshake(node.addr, "a.example.net").await;
    let mut w = MessageWriter::new(Header::request(0, 0, 0, 0));
    w.u32(99999, M, 0, 1);
    let unknown = w.finish().unwrap();
    a.send(&ccr_with(7, 0, &unknown[20..])).await;
    let ans = a.recv().await.unwrap();
    assert_eq!(
        (ans.header.hop_by_hop, ans.find_u32(268, 0)),
        (7, Some(5001))
    );
    assert_eq!(failed_avp_code(&ans), Some(99999));
    // Missing mandatory CC-Request-Type (416): 5005 naming it in Failed-AVP.
    a.send(&ccr_with(8, 416, &[])).await;
    let ans = a.recv().await.unwrap();
    assert_eq!(
        (ans.header.hop_by_hop, ans.find_u32(268, 0)),
        (8, Some(5005))
    );
    assert_eq!(failed_avp_code(&ans), Some(416));
    a.send(&ccr(9, 9, 1)).await;
    assert_eq!(a.recv().await.unwrap().find_u32(268, 0), Some(2001));
    still_served("5001/5005").await;

    // Wrong version, a huge length, garbage, a header cut short by the peer's close: each
    // ends that connection (after an error answer where the header was readable).
    let mut bad_version = ccr(10, 10, 0).to_vec();
    bad_version[0] = 2;
    let mut huge = ccr(11, 11, 0).to_vec();
    huge[1..4].copy_from_slice(&[0xff, 0xff, 0xff]);
    for (host, what, junk) in [
        ("b.example.net", "wrong version", bad_version),
        ("c.example.net", "huge length", huge),
        (
            "d.example.net",
            "garbage",
            b"\x01garbage that is not Diameter at all".to_vec(),
        ),
    ] {
        let (mut r, _) = Raw::handshake(node.addr, host).await;
        r.send(&junk).await;
        let got = until_closed(&mut r).await;
        assert!(
            got.iter()
                .all(|m| m.find_u32(268, 0).is_some_and(|rc| rc >= 3000)),
            "{what}: {got:?}"
        );
        still_served(what).await;
    }

    stop.store(true, Ordering::SeqCst);
    let mut good = timeout(WAIT, other)
        .await
        .expect("other peer done")
        .unwrap();
    // And the other peer's connection is still fine.
    good.send(&ccr(1, 1, 1)).await;
    assert_eq!(good.recv().await.unwrap().find_u32(268, 0), Some(2001));
    assert!(served.load(Ordering::SeqCst) >= 9 * 40);
    node.stop().await;
}
