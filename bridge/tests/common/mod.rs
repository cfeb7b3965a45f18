//! Shared by the interop tests: a guard for third-party peer processes, a node runner, and a
//! test_app-compatible application.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dmnode::config;
use dmproto::dict::Dictionary;
use dmproto::{Header, Message, MessageWriter};
use dmrun::app::{self, AnswerBody, AppHandle, Application, IncomingRequest, Responder};
use dmrun::driver::Node;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod tls;

/// freeDiameter's test_app (also spoken by the Erlang peer's `ta`).
pub const TA_APP: u32 = 16777215;
pub const TA_VENDOR: u32 = 999999;
pub const TA_CMD: u32 = 16777214;
pub const TEST_AVP: u32 = 345678;
pub const M: u8 = 0x40;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A scratch directory for one test, removed when the test passes (kept, and named on
/// stderr, when it fails, for its logs).
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl std::ops::Deref for WorkDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn workdir(name: &str) -> WorkDir {
    let d = std::env::temp_dir().join(format!("dmbridge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    WorkDir(d)
}

/// A child process in its own process group, stopped (whole group, by PID) and reaped on
/// drop; its output goes to a log file, printed when a test fails.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the process (not its group).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits (bounded) until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits (bounded) for the process to exit by itself.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &group])
                    .stderr(Stdio::null())
                    .status();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if std::thread::panicking() {
                eprintln!("--- {} ---\n{}", self.log.display(), self.log());
            }
            self.kill();
        }
    }
}

/// Echoes test_app's Test-AVP, as test_app's own server does, counting requests.
pub struct TaEcho(pub AtomicUsize);

impl TaEcho {
    pub fn new() -> Arc<TaEcho> {
        Arc::new(TaEcho(AtomicUsize::new(0)))
    }

    pub fn seen(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

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

/// A node running in the test's runtime; stopped gracefully by [`Running::stop`], aborted on
/// drop.
pub struct Running {
    pub handle: AppHandle,
    pub addrs: Vec<std::net::SocketAddr>,
    /// The `[tls] listen` addresses.
    pub tls_addrs: Vec<std::net::SocketAddr>,
    /// The node's refusal counters.
    pub refusals: Arc<dmnode::trust::Refusals>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub async fn start(toml: &str, app: Arc<dyn Application>) -> Running {
        let config = config::parse(toml).unwrap_or_else(|e| panic!("{e:?}"));
        let node = Node::bind(config, Dictionary::builtin()).await.unwrap();
        let addrs = node.local_addrs();
        let tls_addrs = node.tls_addrs();
        let refusals = node.refusals();
        let (handle, subs) = app::channel(1024);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(node.run(app, subs, async move {
            let _ = rx.await;
        }));
        Running {
            handle,
            addrs,
            tls_addrs,
            refusals,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
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

/// How the node of [`ta_node_toml`] reaches its one peer.
pub enum PeerAt<'a> {
    /// The node opens the connection to `host` at 127.0.0.1:`port` (and may accept one).
    Connect(&'a str, u16),
    /// The node only accepts the peer `host`'s connection.
    Accept(&'a str),
}

/// The config of a node named `me`, listening on 127.0.0.1:`listen_port` (0: any free
/// port), serving test_app with one peer, with timers short enough for tests: Tc 1 s, so a
/// restarted peer is reconnected quickly, and DPA/drain 2 s, so a stop is prompt.
pub fn ta_node_toml(me: &str, listen_port: u16, peer: PeerAt<'_>) -> String {
    let (peer, timers) = match peer {
        PeerAt::Connect(host, port) => (
            format!("host = \"{host}\"\naddress = \"127.0.0.1\"\nport = {port}"),
            "tc = \"1s\"\ncer_timeout = \"4s\"\nanswer_timeout = \"3s\"\n",
        ),
        PeerAt::Accept(host) => (format!("host = \"{host}\"\nmode = \"accept\""), ""),
    };
    format!(
        r#"
[node]
origin_host = "{me}"
origin_realm = "test.local"
listen = ["127.0.0.1:{listen_port}"]
[[applications]]
id = {TA_APP}
vendor = {TA_VENDOR}
[[peers]]
{peer}
[timers]
{timers}tw = "6s"
dpa_timeout = "2s"
drain_timeout = "2s"
"#
    )
}

/// Sends Test-Requests 1..=`n` to `dest_host` one after the other: each must be answered
/// 2001 by `dest_host`, echoing its Test-AVP.
pub async fn echo_round(h: &AppHandle, dest_host: &str, n: i32) {
    for i in 1..=n {
        let a = h
            .send_request(TA_APP, TA_CMD, test_request(i, dest_host))
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e:?}"));
        assert_eq!(a.find_u32(268, 0), Some(2001), "answer {i}");
        let origin = a.find_ref(264, 0).map(|o| o.data.to_vec());
        assert_eq!(origin.as_deref(), Some(dest_host.as_bytes()), "answer {i}");
        let echoed = a.find_ref(TEST_AVP, TA_VENDOR).expect("Test-AVP echoed");
        assert_eq!(echoed.data, i.to_be_bytes(), "answer {i}");
    }
}

/// A Test-Request's AVPs (the node adds Origin-*, Destination-Realm).
pub fn test_request(n: i32, dest_host: &str) -> Bytes {
    let mut w = MessageWriter::new(Header::request(0, 0, 0, 0));
    w.str(263, M, 0, &format!("bridge.test.local;1;{n}"));
    w.str(293, M, 0, dest_host);
    w.i32(TEST_AVP, 0, TA_VENDOR, n);
    w.finish().unwrap().slice(20..)
}

/// Sends until one is answered (the peer may still be connecting); bounded.
pub async fn first_answer(h: &AppHandle, dest_host: &str) -> Message {
    let mut last = None;
    for _ in 0..200 {
        match h
            .send_request(TA_APP, TA_CMD, test_request(0, dest_host))
            .await
        {
            Ok(a) => return a,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never answered: {last:?}");
}

/// The node's log lines, captured by the test's tracing subscriber (in production the
/// binary's logging module installs its own). `echo` also copies them to stderr.
#[derive(Clone, Default)]
pub struct Lines {
    buf: Arc<std::sync::Mutex<Vec<u8>>>,
    echo: bool,
}

impl Lines {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Waits (5 s at most) for a line containing `needle`; panics with the log otherwise.
    pub async fn wait(&self, needle: &str) {
        for _ in 0..100 {
            if self.text().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line with {needle:?} in:\n{}", self.text());
    }

    /// [`Lines::wait`], then the first line containing `needle` (to check its fields).
    pub async fn wait_line(&self, needle: &str) -> String {
        self.wait(needle).await;
        let text = self.text();
        let line = text.lines().find(|l| l.contains(needle)).unwrap_or("");
        line.to_string()
    }
}

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.lock().unwrap().extend_from_slice(buf);
        if self.echo {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs a subscriber that keeps every line at `level` and above (once per test binary).
pub fn capture_logs(level: tracing::Level, echo: bool) -> Lines {
    let lines = Lines {
        echo,
        ..Lines::default()
    };
    let w = lines.clone();
    let _ = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(level)
        .try_init();
    lines
}

/// Reads one Diameter message (5 s for its header at most); `None` if the node closed first
/// or the bytes do not decode.
pub async fn read_message<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Message> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
    let mut rest = vec![0u8; len.saturating_sub(4)];
    s.read_exact(&mut rest).await.ok()?;
    let mut all = head.to_vec();
    all.extend_from_slice(&rest);
    Message::decode(Bytes::from(all)).ok()
}
