//! Bounded waiting: every wait in the harness has a timeout and a message saying what it
//! waited for.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A wait that timed out (or a waited-for process that died), with everything known about
/// why. Its `Debug` is its message, so `.unwrap()` in a test prints it readably.
pub struct WaitError {
    message: String,
}

impl WaitError {
    pub(crate) fn new(message: String) -> WaitError {
        WaitError { message }
    }

    pub(crate) fn with_context(mut self, context: String) -> WaitError {
        self.message.push('\n');
        self.message.push_str(&context);
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WaitError {}

/// Calls `probe` every 25 ms until it returns `Some`, or fails after `timeout`.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, WaitError> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(WaitError::new(format!(
                "timed out after {:.1}s waiting for {what}",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until something listens on TCP `port` (any local address), read from
/// `/proc/net/tcp{,6}` so that no connection disturbs the server. Returns the listening
/// addresses (e.g. `"127.0.0.1"`), which lets a test check that a server bound loopback only.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<Vec<String>, WaitError> {
    poll_until(&format!("a TCP listener on port {port}"), timeout, || {
        let addrs = listening_addrs(port);
        (!addrs.is_empty()).then_some(addrs)
    })
}

/// The local addresses on which a TCP socket is listening on `port` right now.
pub fn listening_addrs(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; st 0A = LISTEN
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            if *state != "0A" {
                continue;
            }
            let Some((addr_hex, port_hex)) = local.split_once(':') else {
                continue;
            };
            if u16::from_str_radix(port_hex, 16).ok() != Some(port) {
                continue;
            }
            out.push(proc_addr(addr_hex, v6));
        }
    }
    out
}

/// Decodes a /proc/net/tcp address (little-endian 32-bit words) to text.
fn proc_addr(hex: &str, v6: bool) -> String {
    let words: Vec<u32> = (0..hex.len() / 8)
        .filter_map(|i| hex.get(i * 8..i * 8 + 8))
        .filter_map(|w| u32::from_str_radix(w, 16).ok())
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    if !v6 {
        if let Ok(b) = <[u8; 4]>::try_from(bytes.as_slice()) {
            return std::net::Ipv4Addr::from(b).to_string();
        }
    } else if let Ok(b) = <[u8; 16]>::try_from(bytes.as_slice()) {
        return std::net::Ipv6Addr::from(b).to_string();
    }
    hex.to_string()
}

/// Waits until a line of the file at `path` contains `needle`; returns the line.
pub fn wait_for_log_line(
    path: &Path,
    needle: &str,
    timeout: Duration,
) -> Result<String, WaitError> {
    poll_until(
        &format!("{needle:?} in {}", path.display()),
        timeout,
        || {
            let text = std::fs::read(path).ok()?;
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        },
    )
}
