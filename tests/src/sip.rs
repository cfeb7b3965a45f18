//! A minimal SIP over UDP (loopback) for the tests that put a SIP server in front of the
//! bridge: a client that sends one request and waits for its final response, and a UAS that
//! answers 200 to everything it gets and remembers what it got (the next hop a SIP script
//! forwards to, e.g. the S-CSCF behind an I-CSCF).

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A UDP socket on 127.0.0.1 with a free port and this read timeout, and its port: every SIP
/// endpoint of the tests starts with one.
pub fn loopback_udp(read_timeout: Duration) -> (UdpSocket, u16) {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| panic!("udp: {e}"));
    s.set_read_timeout(Some(read_timeout))
        .unwrap_or_else(|e| panic!("udp: {e}"));
    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
    (s, port)
}

/// Sends one SIP request `METHOD RURI` from `user@test.local` to 127.0.0.1:`port` (To = the
/// Request-URI's user for INVITE, `user` otherwise) and returns the final response's status
/// line, or "no reply (...)" after 8 s. `extra`: header lines added as they are.
pub fn request(port: u16, method: &str, ruri: &str, user: &str, extra: &[String]) -> String {
    let (s, me) = loopback_udp(Duration::from_secs(8));
    let to = if method == "INVITE" {
        ruri.to_string()
    } else {
        format!("sip:{user}@test.local")
    };
    let mut msg = format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{me}-{user}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@test.local>;tag={me}\r\n\
         To: <{to}>\r\n\
         Call-ID: {me}-{user}@test\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:{user}@127.0.0.1:{me}>\r\n\
         Expires: 600\r\n"
    );
    for h in extra {
        msg.push_str(h);
        msg.push_str("\r\n");
    }
    msg.push_str("Content-Length: 0\r\n\r\n");
    s.send_to(msg.as_bytes(), (Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("udp send: {e}"));
    let mut buf = vec![0u8; 65535];
    loop {
        let n = match s.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => return format!("no reply ({e})"),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let line = text.lines().next().unwrap_or("").to_string();
        if !line.starts_with("SIP/2.0 1") {
            return line;
        }
    }
}

/// A UAS on 127.0.0.1 answering 200 OK to every request; stopped on drop.
pub struct Uas {
    pub port: u16,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Uas {
    pub fn start() -> Uas {
        let (s, port) = loopback_udp(Duration::from_millis(100));
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65535];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                if text.starts_with("SIP/2.0") || text.starts_with("ACK ") {
                    continue;
                }
                let _ = s.send_to(ok_for(&text).as_bytes(), from);
                g.lock().unwrap_or_else(|e| e.into_inner()).push(text);
            }
        });
        Uas {
            port,
            got,
            stop,
            thread: Some(thread),
        }
    }

    /// The requests received so far, whole.
    pub fn received(&self) -> Vec<String> {
        self.got.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// 200 OK to `request`: its Via, From, Call-ID and CSeq, To with a tag (RFC 3261 §8.2.6.2).
fn ok_for(request: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in request.lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("via:")
            || lower.starts_with("from:")
            || lower.starts_with("call-id:")
            || lower.starts_with("cseq:")
        {
            out.push_str(line);
            out.push_str("\r\n");
        } else if lower.starts_with("to:") {
            out.push_str(line);
            out.push_str(";tag=uas\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

impl Uas {
    /// The request lines (`METHOD URI SIP/2.0`) of the requests received so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|m| m.lines().next().unwrap_or("").to_string())
            .collect()
    }
}
