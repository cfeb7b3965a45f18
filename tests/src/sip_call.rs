//! SIP phones on loopback UDP for the tests that need whole calls through a SIP server (the
//! Ro client role: INVITE, ACK, BYE in both directions), where [`crate::sip`] only has one
//! request and a UAS without dialogs.
//!
//! A [`Phone`] answers on its own thread, so a BYE the server sends (the OCS ended the call)
//! gets its 200 while the test waits elsewhere: INVITE -> 200 OK with a Contact and the
//! Record-Route copied (RFC 3261 §12.1.1), any other request -> 200 OK, ACK -> nothing. It
//! records every request it got. As a caller it sends INVITE through the server, ACKs the
//! final response (RFC 3261 §13.2.2.4 for 2xx, §17.1.1.3 for the others) and can send BYE
//! along the route set.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A SIP user agent on 127.0.0.1 (`user@test.local`); stopped on drop.
pub struct Phone {
    pub port: u16,
    pub user: String,
    sock: Arc<UdpSocket>,
    requests: Arc<Mutex<Vec<String>>>,
    responses: Arc<Mutex<Vec<String>>>,
    seq: AtomicU32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// An INVITE's outcome as the caller saw it, and what an in-dialog request needs.
#[derive(Debug, Clone)]
pub struct Call {
    /// The final response's status line.
    pub status: String,
    pub call_id: String,
    from: String,
    to: String,
    /// The callee's Contact (remote target), "" when the call failed.
    target: String,
    /// Route set: the Record-Route of the 2xx, reversed (RFC 3261 §12.1.2).
    route: Vec<String>,
}

impl Call {
    /// A 2xx answered the INVITE.
    pub fn answered(&self) -> bool {
        self.status.starts_with("SIP/2.0 2")
    }
}

impl Phone {
    pub fn start(user: &str) -> Phone {
        Phone::spawn(user, None)
    }

    /// A phone that refuses every INVITE with `code` (e.g. 486 Busy Here): the call fails
    /// after the SIP server has let it through.
    pub fn rejecting(user: &str, code: u16) -> Phone {
        Phone::spawn(user, Some(code))
    }

    fn spawn(user: &str, reject: Option<u16>) -> Phone {
        let (s, port) = crate::sip::loopback_udp(Duration::from_millis(100));
        let sock = Arc::new(s);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let responses = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, rq, rs, st) = (
            sock.clone(),
            requests.clone(),
            responses.clone(),
            stop.clone(),
        );
        let me = user.to_string();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65535];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = s2.recv_from(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                if text.starts_with("SIP/2.0 ") {
                    rs.lock().unwrap_or_else(|e| e.into_inner()).push(text);
                    continue;
                }
                if !text.starts_with("ACK ") {
                    let answer = match reject {
                        Some(code) if text.starts_with("INVITE ") => answer_200(&text, &me, port)
                            .replacen("SIP/2.0 200 OK", &format!("SIP/2.0 {code} Rejected"), 1)
                            .replace(&format!("Contact: <sip:{me}@127.0.0.1:{port}>\r\n"), ""),
                        _ => answer_200(&text, &me, port),
                    };
                    let _ = s2.send_to(answer.as_bytes(), from);
                }
                rq.lock().unwrap_or_else(|e| e.into_inner()).push(text);
            }
        });
        Phone {
            port,
            user: user.to_string(),
            sock,
            requests,
            responses,
            seq: AtomicU32::new(0),
            stop,
            thread: Some(thread),
        }
    }

    /// This phone's address as a SIP URI, to call it.
    pub fn uri(&self) -> String {
        format!("sip:{}@127.0.0.1:{}", self.user, self.port)
    }

    /// The requests received so far, whole.
    pub fn received(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `secs` for a request `method` of the call `call_id`.
    pub fn wait_request(&self, method: &str, call_id: &str, secs: u64) -> Option<String> {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let found = self.received().into_iter().find(|m| {
                m.starts_with(&format!("{method} ")) && header(m, "Call-ID") == Some(call_id)
            });
            if found.is_some() || Instant::now() >= end {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends INVITE `ruri` to the SIP server on 127.0.0.1:`server`, waits up to 10 s for the
    /// final response and ACKs it.
    pub fn invite(&self, server: u16, ruri: &str) -> Call {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let call_id = format!("{}-{}-{n}@test", self.user, self.port);
        let from = format!("<sip:{}@test.local>;tag=f{}-{n}", self.user, self.port);
        let branch = self.branch();
        let invite = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContact: <{}>\r\nContent-Length: 0\r\n\r\n",
            self.port,
            self.uri()
        );
        self.send(server, &invite);
        let Some(resp) = self.final_response(&call_id, "INVITE", 10) else {
            return Call {
                status: "no final response".into(),
                call_id,
                from,
                to: String::new(),
                target: String::new(),
                route: Vec::new(),
            };
        };
        let status = resp.lines().next().unwrap_or("").to_string();
        let to = header(&resp, "To").unwrap_or("").to_string();
        let mut call = Call {
            status,
            call_id,
            from,
            to,
            target: String::new(),
            route: Vec::new(),
        };
        if call.answered() {
            call.target = header(&resp, "Contact")
                .map(uri_of)
                .unwrap_or_default()
                .to_string();
            call.route = headers(&resp, "Record-Route")
                .iter()
                .flat_map(|h| h.split(','))
                .map(|r| r.trim().to_string())
                .collect();
            call.route.reverse();
            // RFC 3261 §13.2.2.4: the ACK of a 2xx is a new transaction along the route set
            let ack = self.in_dialog(&call, "ACK", 1);
            self.send(server, &ack);
        } else {
            // RFC 3261 §17.1.1.3: the ACK of a failure reuses the INVITE's branch and R-URI
            let ack = format!(
                "ACK {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={branch}\r\n\
                 Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\n\
                 Content-Length: 0\r\n\r\n",
                self.port, call.from, call.to, call.call_id
            );
            self.send(server, &ack);
        }
        call
    }

    /// Sends BYE for `call` through the server (the first hop of its route set) and returns
    /// the final response's status line.
    pub fn bye(&self, server: u16, call: &Call) -> String {
        let bye = self.in_dialog(call, "BYE", 2);
        self.send(server, &bye);
        self.final_response(&call.call_id, "BYE", 10)
            .map(|r| r.lines().next().unwrap_or("").to_string())
            .unwrap_or_else(|| "no final response".into())
    }

    fn in_dialog(&self, call: &Call, method: &str, cseq: u32) -> String {
        let mut m = format!(
            "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={}\r\n\
             Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n",
            call.target,
            self.port,
            self.branch(),
            call.from,
            call.to,
            call.call_id
        );
        for r in &call.route {
            m.push_str(&format!("Route: {r}\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    }

    fn branch(&self) -> String {
        format!(
            "z9hG4bK-{}-{}",
            self.port,
            self.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn send(&self, server: u16, msg: &str) {
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, server));
        self.sock
            .send_to(msg.as_bytes(), to)
            .unwrap_or_else(|e| panic!("udp send: {e}"));
    }

    /// The first final (non-1xx) response for `call_id` and `method`, waiting up to `secs`.
    fn final_response(&self, call_id: &str, method: &str, secs: u64) -> Option<String> {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let found = self
                .responses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|r| {
                    !r.starts_with("SIP/2.0 1")
                        && header(r, "Call-ID") == Some(call_id)
                        && header(r, "CSeq").is_some_and(|c| c.ends_with(method))
                })
                .cloned();
            if found.is_some() || Instant::now() >= end {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of the first header `name` (case-insensitive), trimmed.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    headers(msg, name).into_iter().next()
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

/// `<sip:x@h:p>;expires=..` -> `sip:x@h:p`
fn uri_of(h: &str) -> &str {
    match (h.find('<'), h.find('>')) {
        (Some(a), Some(b)) if a < b => &h[a + 1..b],
        _ => h.split(';').next().unwrap_or(h).trim(),
    }
}

/// 200 OK to `request` (RFC 3261 §8.2.6): Via, From, Call-ID, CSeq as they came, To with a
/// tag when it had none; for an INVITE also a Contact and the Record-Route (§12.1.1).
fn answer_200(request: &str, user: &str, port: u16) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    let invite = request.starts_with("INVITE ");
    for line in request.lines().take_while(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("via:")
            || lower.starts_with("from:")
            || lower.starts_with("call-id:")
            || lower.starts_with("cseq:")
            || (invite && lower.starts_with("record-route:"))
        {
            out.push_str(line);
            out.push_str("\r\n");
        } else if lower.starts_with("to:") {
            out.push_str(line);
            if !lower.contains("tag=") {
                out.push_str(&format!(";tag=t{port}"));
            }
            out.push_str("\r\n");
        }
    }
    if invite {
        out.push_str(&format!("Contact: <sip:{user}@127.0.0.1:{port}>\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}
