//! A real Prometheus server (Debian's `prometheus`) scraping targets on loopback, and PromQL
//! through its HTTP API. For the metrics end-to-end test.
//!
//! `Prometheus::start(dir, &["127.0.0.1:PORT"], scrape)` writes a configuration with one job
//! (`dmbridge`), a fresh TSDB in `dir`, listens on a free 127.0.0.1 port and returns once
//! `/-/ready` answers; stopped (SIGTERM, then SIGKILL) on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::child::ChildGuard;
use crate::ports::free_port;

pub struct Prometheus {
    guard: ChildGuard,
    port: u16,
}

/// A plain HTTP/1.1 GET on 127.0.0.1 (Connection: close); (status, body).
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    // Chunked bodies (Prometheus' API answers): join the chunks.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n).ok_or("short chunk")?);
            rest = after.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every `scrape` (job `dmbridge`, path /metrics).
    pub fn start(dir: &Path, targets: &[String], scrape: Duration) -> Prometheus {
        let bin = "prometheus";
        if Command::new(bin).arg("--version").output().is_err() {
            panic!("prometheus missing: run scripts/setup.sh (apt-get install prometheus)");
        }
        let port = free_port();
        let secs = format!("{}ms", scrape.as_millis());
        let cfg = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: {secs}\n  scrape_timeout: {secs}\n  evaluation_interval: {secs}\n\
                 scrape_configs:\n  - job_name: dmbridge\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let data = dir.join("prometheus-data");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let guard = ChildGuard::spawn("prometheus", cmd, dir);
        let p = Prometheus { guard, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(port, "/-/ready", Duration::from_secs(2)) {
                return p;
            }
            if Instant::now() > deadline {
                panic!("prometheus not ready on {port}:\n{}", p.guard.tail(30));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// An instant PromQL query: the `data.result` array.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", urlencode(promql)),
            Duration::from_secs(5),
        )?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("{promql}: HTTP {status}: {body}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of a scalar-like query (`sum(...)`), `None` when it has no series.
    pub fn value(&self, promql: &str) -> Result<Option<f64>, String> {
        let r = self.query(promql)?;
        Ok(r.first().and_then(|s| s["value"][1].as_str()?.parse().ok()))
    }

    /// Polls `promql` until its value is `want` (or `timeout`); returns the last value seen.
    pub fn wait_value(&self, promql: &str, want: f64, timeout: Duration) -> Option<f64> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            last = self.value(promql).ok().flatten().or(last);
            if last == Some(want) || Instant::now() > deadline {
                return last;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }
}
