//! The node against a real third-party peer: freeDiameter 1.2.1 (`freeDiameterd` with its
//! `test_app` extension; see shared/peers/README.md), as responder and as initiator.
//!
//! Needs `freeDiameterd` on PATH and `test_app.fdx` + `bind_lo.so` in `$DMBRIDGE_FD_DIR`
//! (default: `build/deps/fd` at the repository root, where scripts/setup.sh puts them). When
//! they are missing the tests say so on stderr and pass without running: the rest of the
//! suite must not depend on a machine's optional packages.
//!
//! Everything listens on 127.0.0.1 on ports picked free; each freeDiameterd is owned by a
//! guard that kills it (by PID) and reaps it, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dmnode::app::{self, AnswerBody, AppHandle, Application, IncomingRequest, Responder};
use dmnode::config;
use dmnode::node::Node;
use dmproto::dict::Dictionary;
use dmproto::{Header, MessageWriter};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TA_APP: u32 = 16777215;
const TA_VENDOR: u32 = 999999;
const TA_CMD: u32 = 16777214;
const TEST_AVP: u32 = 345678;
const M: u8 = 0x40;

fn fd_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("DMBRIDGE_FD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/deps/fd"));
    let ok = dir.join("test_app.fdx").is_file() && dir.join("bind_lo.so").is_file();
    let daemon = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("freeDiameterd").is_file()))
        .unwrap_or(false);
    if ok && daemon {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: freeDiameterd or {}/test_app.fdx missing (run scripts/setup.sh)",
            dir.display()
        );
        None
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A freeDiameterd process, killed and reaped on drop.
struct Fd {
    child: Child,
    log: PathBuf,
}

impl Fd {
    /// `role` "server" (server.test.local, answers test_app) or "client" (client.test.local,
    /// connects to server.test.local at `peer_port`; benchmark on SIGUSR1).
    fn start(
        fd: &Path,
        work: &Path,
        role: &str,
        port: u16,
        peer_port: u16,
        bench: (u32, u32),
    ) -> Fd {
        std::fs::create_dir_all(work).unwrap();
        let ta = work.join(format!("ta_{role}.conf"));
        let mode = if role == "server" {
            "mode = server; benchmark;".to_string()
        } else {
            format!(
                "mode = client; benchmark {} {}; dest-realm = \"test.local\"; dest-host = \"server.test.local\";",
                bench.0, bench.1
            )
        };
        std::fs::write(
            &ta,
            format!("vendor-id = {TA_VENDOR}; appli-id = {TA_APP}; cmd-id = {TA_CMD}; avp-id = {TEST_AVP};\n{mode}\n"),
        )
        .unwrap();
        let acl = work.join("acl_wl.conf");
        std::fs::write(&acl, "ALLOW_IPSEC *.test.local\n").unwrap();
        let mut conf = format!(
            "Identity = \"{role}.test.local\"; Realm = \"test.local\"; Port = {port}; SecPort = 0; No_SCTP; No_IPv6;\n\
             LoadExtension = \"{}\" : \"{}\";\n\
             LoadExtension = \"/usr/lib/freeDiameter/acl_wl.fdx\" : \"{}\";\n\
             TcTimer = 1;\n",
            fd.join("test_app.fdx").display(),
            ta.display(),
            acl.display()
        );
        if role == "client" {
            conf += &format!(
                "ConnectPeer = \"server.test.local\" {{ ConnectTo = \"127.0.0.1\"; No_TLS; No_SCTP; Port = {peer_port}; }};\n"
            );
        }
        let conf_path = work.join(format!("{role}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let log = work.join(format!("{role}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("freeDiameterd")
            .arg("-c")
            .arg(&conf_path)
            .env("LD_PRELOAD", fd.join("bind_lo.so"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Fd { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits (bounded) until the log contains `needle`.
    async fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        self.signal("TERM");
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if std::thread::panicking() {
                eprintln!("--- {} ---\n{}", self.log.display(), self.log());
            }
            self.kill();
        }
    }
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dmbridge-fd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Echoes test_app's Test-AVP, as test_app's own server does.
struct TaEcho(AtomicUsize);

impl Application for TaEcho {
    fn on_request(&self, request: IncomingRequest, responder: Responder) {
        self.0.fetch_add(1, Ordering::SeqCst);
        let mut w = MessageWriter::new(Header::request(0, 0, 0, 0));
        if let Some(a) = request.message.find_ref(TEST_AVP, TA_VENDOR) {
            w.raw(a.raw);
        }
        let avps = w.finish().map(|b| b.slice(20..)).unwrap_or_default();
        responder.answer(AnswerBody {
            avps,
            is_error: false,
        });
    }
}

struct Running {
    handle: AppHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    async fn start(toml: &str, app: Arc<dyn Application>) -> Running {
        let config = config::parse(toml).unwrap_or_else(|e| panic!("{e:?}"));
        let node = Node::bind(config, Dictionary::builtin()).await.unwrap();
        let (handle, subs) = app::channel(1024);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run(app, subs, async move {
            let _ = rx.await;
        }));
        Running {
            handle,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .unwrap()
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

fn test_request(n: i32) -> Bytes {
    let mut w = MessageWriter::new(Header::request(0, 0, 0, 0));
    w.str(263, M, 0, &format!("bridge.test.local;1;{n}"));
    w.str(293, M, 0, "server.test.local");
    w.i32(TEST_AVP, 0, TA_VENDOR, n);
    w.finish().unwrap().slice(20..)
}

/// Sends until one is answered (the peer may still be connecting); bounded.
async fn first_answer(h: &AppHandle) -> dmproto::Message {
    for _ in 0..200 {
        if let Ok(a) = h.send_request(TA_APP, TA_CMD, test_request(0)).await {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never routable to freeDiameter");
}

#[tokio::test]
async fn bridge_initiates_to_freediameter_server_and_reconnects_after_restart() {
    let Some(fd) = fd_dir() else { return };
    let work = workdir("srv");
    let port = free_port();
    let server = Fd::start(&fd, &work, "server", port, 0, (0, 0));
    let node = Running::start(
        &format!(
            r#"
[node]
origin_host = "bridge.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:0"]
[[applications]]
id = {TA_APP}
vendor = {TA_VENDOR}
[[peers]]
host = "server.test.local"
address = "127.0.0.1"
port = {port}
[timers]
tc = "1s"
tw = "6s"
cer_timeout = "3s"
answer_timeout = "3s"
dpa_timeout = "2s"
drain_timeout = "2s"
"#
        ),
        Arc::new(TaEcho(AtomicUsize::new(0))),
    )
    .await;
    let a = first_answer(&node.handle).await;
    assert_eq!(a.find_u32(268, 0), Some(2001));
    for n in 1..=50 {
        let a = node
            .handle
            .send_request(TA_APP, TA_CMD, test_request(n))
            .await
            .unwrap();
        assert_eq!(a.find_u32(268, 0), Some(2001), "answer {n}");
        let echoed = a.find_ref(TEST_AVP, TA_VENDOR).expect("Test-AVP echoed");
        assert_eq!(echoed.data, n.to_be_bytes());
    }

    // The server restarts: the node notices, reconnects (Tc = 1 s), and serves again.
    server.stop();
    let server = Fd::start(&fd, &work.join("again"), "server", port, 0, (0, 0));
    let a = first_answer(&node.handle).await;
    assert_eq!(a.find_u32(268, 0), Some(2001));

    // Our shutdown sends DPR; freeDiameter answers DPA and logs the cause.
    node.stop().await;
    assert!(
        server.wait_log("REBOOTING", Duration::from_secs(5)).await,
        "freeDiameter saw no DPR:\n{}",
        server.log()
    );
    server.stop();
}

#[tokio::test]
async fn freediameter_client_initiates_and_its_requests_are_answered() {
    let Some(fd) = fd_dir() else { return };
    let work = workdir("cli");
    let port = free_port();
    let echo = Arc::new(TaEcho(AtomicUsize::new(0)));
    let node = Running::start(
        &format!(
            r#"
[node]
origin_host = "server.test.local"
origin_realm = "test.local"
listen = ["127.0.0.1:{port}"]
[[applications]]
id = {TA_APP}
vendor = {TA_VENDOR}
[[peers]]
host = "client.test.local"
mode = "accept"
[timers]
tw = "6s"
dpa_timeout = "2s"
drain_timeout = "2s"
"#
        ),
        echo.clone(),
    )
    .await;
    let client = Fd::start(&fd, &work, "client", free_port(), port, (2, 10));
    assert!(
        client.wait_log("STATE_OPEN", Duration::from_secs(10)).await,
        "no capabilities exchange:\n{}",
        client.log()
    );
    client.signal("USR1");
    assert!(
        client
            .wait_log("Test Complete", Duration::from_secs(15))
            .await,
        "benchmark did not complete:\n{}",
        client.log()
    );
    let log = client.log();
    let errors: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("error(s) received"))
        .filter_map(|l| l.split_whitespace().rev().nth(2)?.parse().ok())
        .collect();
    assert!(
        !errors.is_empty() && errors.iter().all(|e| *e == 0),
        "error answers {errors:?}:\n{log}"
    );
    let best = log
        .lines()
        .filter_map(|l| l.split("Throughput:").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(best > 0.0, "no answers counted:\n{log}");
    assert!(echo.0.load(Ordering::SeqCst) > 0);

    // Our shutdown: DPR to the client.
    node.stop().await;
    assert!(
        client.wait_log("DPR", Duration::from_secs(5)).await,
        "{}",
        client.log()
    );
    client.stop();
}
