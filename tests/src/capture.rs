//! Live loopback capture with `dumpcap`, and extraction of the Diameter messages that crossed
//! the wire, byte for byte.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::child::{ChildGuard, Sig};
use crate::paths::require_program;
use crate::ports::free_port;
use crate::tshark::{fields, tshark_program};
use crate::wait::{poll_until, WaitError};
use crate::wire::{from_hex, split_frames};

/// A running `dumpcap -i lo -f 'tcp port N'`. Stopped (cleanly, so the file is complete) by
/// [`Capture::stop`], or killed on drop.
pub struct Capture {
    guard: ChildGuard,
    pcap: PathBuf,
    port: u16,
    /// The probe port, bound (not listening) for the capture's lifetime: its SYNs are still
    /// answered with a RST, and no outgoing connection on the machine can take the port as
    /// its local port (the kernel skips bound ports), whose conversation the filter would
    /// otherwise record beside the port under test.
    _probe: socket2::Socket,
}

impl Capture {
    /// Starts capturing TCP port `port` on loopback into `<dir>/capture-<port>.pcapng` and
    /// returns once packets are really being recorded.
    ///
    /// dumpcap prints "Capturing on" a moment before its filter is live, so that line is not
    /// enough (packets sent right after it were lost under load). The filter also admits a
    /// private probe port on which nothing listens; the harness connects to it (SYN, RST) until
    /// dumpcap's packet counter moves. The probe never touches the port under test.
    pub fn start(dir: &Path, port: u16) -> Capture {
        let dumpcap = require_program("dumpcap", "tshark");
        let pcap = dir.join(format!("capture-{port}.pcapng"));
        let probe = free_port();
        let probe_socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .and_then(|s| {
                s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, probe)).into())?;
                Ok(s)
            })
            .unwrap_or_else(|e| panic!("cannot hold the capture's probe port {probe}: {e}"));
        let mut cmd = Command::new(dumpcap);
        cmd.args([
            "-i",
            "lo",
            "-f",
            &format!("tcp port {port} or tcp port {probe}"),
            "-w",
        ])
        .arg(&pcap);
        let mut guard =
            ChildGuard::spawn(&format!("dumpcap-{port}"), cmd, dir).with_stop_signal(Sig::Int);
        guard
            .wait_for_line("Capturing on", Duration::from_secs(10))
            .unwrap_or_else(|e| {
                panic!("dumpcap did not start (root or the wireshark group is needed): {e}")
            });
        let live = poll_until(
            "dumpcap to record a probe packet",
            Duration::from_secs(10),
            || {
                let _ = TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, probe)),
                    Duration::from_millis(200),
                );
                std::thread::sleep(Duration::from_millis(100));
                guard.stderr().contains("Packets: ").then_some(())
            },
        );
        if let Err(e) = live {
            panic!("{e}\n{}", guard.tail(10));
        }
        Capture {
            guard,
            pcap,
            port,
            _probe: probe_socket,
        }
    }

    /// Packets recorded so far, from dumpcap's progress counter (updated about twice a
    /// second; includes the start-up probe packets and TCP acks).
    pub fn packets(&self) -> u64 {
        let err = self.guard.stderr();
        err.rsplit("Packets: ")
            .next()
            .filter(|_| err.contains("Packets: "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until at least `n` packets were recorded; returns the count.
    pub fn wait_packets(&self, n: u64, timeout: Duration) -> Result<u64, WaitError> {
        poll_until(
            &format!("{n} captured packets on port {}", self.port),
            timeout,
            || {
                let got = self.packets();
                (got >= n).then_some(got)
            },
        )
    }

    /// The port being captured.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the capture and returns the pcapng path.
    ///
    /// Call it once the traffic of interest has ended. dumpcap drops what it has not yet read
    /// from the kernel when it is interrupted, and a busy machine can leave it behind; so this
    /// first waits (up to 5 s) until its packet counter, updated every ~0.5 s, holds still for
    /// 0.7 s.
    pub fn stop(mut self) -> PathBuf {
        let mut last = self.packets();
        for _ in 0..7 {
            std::thread::sleep(Duration::from_millis(700));
            let now = self.packets();
            if now == last {
                break;
            }
            last = now;
        }
        let status = self.guard.stop(Duration::from_secs(5));
        if !self.pcap.is_file() {
            panic!(
                "dumpcap ({status}) left no {}\n{}",
                self.pcap.display(),
                self.guard.tail(20)
            );
        }
        self.pcap.clone()
    }
}

/// The bytes of one TCP connection, per direction, as reassembled by tshark.
#[derive(Debug, Clone)]
pub struct TcpConversation {
    /// tshark's `tcp.stream` index.
    pub stream: u32,
    /// The connecting side, `ip:port`.
    pub client: String,
    /// The accepting side, `ip:port`.
    pub server: String,
    /// Bytes client -> server.
    pub to_server: Vec<u8>,
    /// Bytes server -> client.
    pub to_client: Vec<u8>,
}

/// Every TCP connection in `pcap` with its payload bytes (`tshark -z follow,tcp,raw`).
pub fn tcp_conversations(pcap: &Path) -> Vec<TcpConversation> {
    let mut streams: Vec<u32> = fields(pcap, &[], "tcp", &["tcp.stream"])
        .into_iter()
        .filter_map(|r| r.first().and_then(|s| s.parse().ok()))
        .collect();
    streams.sort_unstable();
    streams.dedup();
    if streams.is_empty() {
        return Vec::new();
    }
    let mut cmd = Command::new(tshark_program());
    cmd.arg("-r").arg(pcap).arg("-q");
    for s in &streams {
        cmd.arg("-z").arg(format!("follow,tcp,raw,{s}"));
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run tshark: {e}"));
    if !out.status.success() {
        panic!(
            "tshark follow failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_follow(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `-z follow,tcp,raw` output: a block per stream with `Filter: tcp.stream eq N`,
/// `Node 0:`/`Node 1:` lines, then hex lines (tab-indented when from node 1).
fn parse_follow(text: &str) -> Vec<TcpConversation> {
    let mut out: Vec<TcpConversation> = Vec::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("Filter: tcp.stream eq ") {
            out.push(TcpConversation {
                stream: n.trim().parse().unwrap_or(u32::MAX),
                client: String::new(),
                server: String::new(),
                to_server: Vec::new(),
                to_client: Vec::new(),
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if let Some(a) = line.strip_prefix("Node 0: ") {
            cur.client = a.trim().to_string();
        } else if let Some(a) = line.strip_prefix("Node 1: ") {
            cur.server = a.trim().to_string();
        } else if line.starts_with('=') || line.starts_with("Follow:") || line.trim().is_empty() {
            continue;
        } else if let Some(hex) = line.strip_prefix('\t') {
            if let Ok(b) = from_hex(hex) {
                cur.to_client.extend_from_slice(&b);
            }
        } else if let Ok(b) = from_hex(line) {
            cur.to_server.extend_from_slice(&b);
        }
    }
    out
}

/// One Diameter message seen on the wire.
#[derive(Debug, Clone)]
pub struct WireMessage {
    /// tshark's `tcp.stream` index of its connection.
    pub stream: u32,
    /// True when sent by the side that opened the connection.
    pub from_client: bool,
    /// The message bytes exactly as sent.
    pub bytes: Vec<u8>,
}

/// Every Diameter message in `pcap`, split from the reassembled TCP streams by the harness's
/// own framer (per connection: client-to-server messages first, then the other direction).
/// Panics when a stream does not split into whole messages.
pub fn diameter_messages(pcap: &Path) -> Vec<WireMessage> {
    let mut out = Vec::new();
    for conv in tcp_conversations(pcap) {
        for (from_client, bytes) in [(true, &conv.to_server), (false, &conv.to_client)] {
            let (frames, rest) = split_frames(bytes).unwrap_or_else(|e| {
                panic!(
                    "stream {} ({} -> {}): not Diameter: {e}",
                    conv.stream, conv.client, conv.server
                )
            });
            if !rest.is_empty() {
                panic!(
                    "stream {}: {} bytes of a partial message at the end",
                    conv.stream,
                    rest.len()
                );
            }
            out.extend(frames.into_iter().map(|bytes| WireMessage {
                stream: conv.stream,
                from_client,
                bytes,
            }));
        }
    }
    out
}
