//! SIP calls with SDP through a proxy under test (UDP, loopback), where the test decides each
//! response: a caller that sends an INVITE with an SDP offer, ACKs and hangs up through the
//! proxy's Record-Route, and a callee that answers with what the test chooses (183 with the
//! SDP answer, then 200...), as the P-CSCF role needs (its AAR follows the 183's SDP).
//! [`crate::sip_call::Phone`] answers every INVITE 200 at once, without SDP. Both sides answer
//! what a proxy may send on its own: BYE (200 OK) and CANCEL (200 OK, then 487 for the INVITE,
//! RFC 3261 §9.2), and ACK the proxy's non-2xx final responses (RFC 3261 §17.1.1.3).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One SIP message received, with the address it came from.
#[derive(Clone, Debug)]
pub struct SipMsg {
    pub text: String,
    pub from: SocketAddr,
}

impl SipMsg {
    /// The start line.
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.first_line().strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.status().is_some() {
            return None;
        }
        self.first_line().split(' ').next()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.head()
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
            })
            .collect()
    }

    /// The first value of header `name`, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers(name).first().copied().unwrap_or("")
    }

    /// The CSeq method (what a response answers).
    pub fn cseq_method(&self) -> &str {
        self.header("CSeq").split_whitespace().nth(1).unwrap_or("")
    }

    /// The message body ("" when none).
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    fn head(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map_or(&self.text, |(h, _)| h)
    }
}

/// A call the [`SdpPhone`] started: what its in-dialog requests need.
#[derive(Clone, Debug)]
pub struct Call {
    pub call_id: String,
    ruri: String,
    from: String,
    proxy: u16,
    cseq: u32,
    /// The INVITE's Via branch, which its CANCEL repeats (RFC 3261 §9.1).
    branch: u64,
}

/// A SIP user agent on 127.0.0.1 that records everything it receives; stopped on drop.
pub struct SdpPhone {
    pub port: u16,
    pub user: String,
    sock: UdpSocket,
    inbox: Arc<Mutex<Vec<SipMsg>>>,
    /// Index in `inbox` of the requests [`SdpPhone::next_request`] returned.
    taken: Mutex<Vec<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const WAIT: Duration = Duration::from_secs(10);

impl SdpPhone {
    pub fn start(user: &str) -> SdpPhone {
        let (sock, port) = crate::sip::loopback_udp(Duration::from_millis(100));
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, ib, st) = (
            sock.try_clone()
                .unwrap_or_else(|e| panic!("udp clone: {e}")),
            inbox.clone(),
            stop.clone(),
        );
        let me = user.to_string();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65535];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let msg = SipMsg {
                    text: String::from_utf8_lossy(&buf[..n]).to_string(),
                    from,
                };
                let earlier = lock(&ib).clone();
                for out in automatic(&msg, &earlier, &me, port) {
                    let _ = s.send_to(out.as_bytes(), from);
                }
                lock(&ib).push(msg);
            }
        });
        SdpPhone {
            port,
            user: user.to_string(),
            sock,
            inbox,
            taken: Mutex::new(Vec::new()),
            stop,
            thread: Some(thread),
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<SipMsg> {
        lock(&self.inbox).clone()
    }

    /// Sends INVITE `ruri` with `sdp` to the proxy on 127.0.0.1:`proxy`.
    pub fn invite(&self, proxy: u16, ruri: &str, sdp: &str) -> Call {
        let tag = format!("{}-{}", self.user, unique());
        let call = Call {
            call_id: format!("{}-{}@test", unique(), self.user),
            ruri: ruri.to_string(),
            from: format!("<sip:{}@test.local>;tag={tag}", self.user),
            proxy,
            cseq: 1,
            branch: unique(),
        };
        let extra = format!(
            "Contact: <sip:{}@127.0.0.1:{}>\r\nContent-Type: application/sdp\r\n",
            self.user, self.port
        );
        let msg = self.initial_request("INVITE", &call, &extra, sdp);
        self.send(&msg, proxy);
        call
    }

    /// The first response for `call` to `method` whose status `want` accepts; a panic showing
    /// what arrived after 10 s.
    pub fn wait_response(&self, call: &Call, method: &str, want: impl Fn(u16) -> bool) -> SipMsg {
        let found = self.wait(|m| {
            m.header("Call-ID") == call.call_id
                && m.cseq_method() == method
                && m.status().is_some_and(&want)
        });
        found.unwrap_or_else(|| panic!("{}: no such {method} response\n{}", self.user, self.dump()))
    }

    /// The final response to the call's INVITE.
    pub fn wait_final(&self, call: &Call) -> SipMsg {
        self.wait_response(call, "INVITE", |s| s >= 200)
    }

    /// CANCEL of the call's INVITE, before its final response (RFC 3261 §9.1: the INVITE's
    /// Request-URI, Call-ID, From, To, CSeq number and Via branch).
    pub fn cancel(&self, call: &Call) {
        let msg = self.initial_request("CANCEL", call, "", "");
        self.send(&msg, call.proxy);
    }

    /// The call's INVITE, or its CANCEL (the same Request-URI, Via branch, From, To, Call-ID
    /// and CSeq number), with `extra` header lines and `body`.
    fn initial_request(&self, method: &str, call: &Call, extra: &str, body: &str) -> String {
        format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{br}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: <{ruri}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 {method}\r\n\
             {extra}Content-Length: {len}\r\n\r\n{body}",
            ruri = call.ruri,
            port = self.port,
            br = call.branch,
            from = call.from,
            cid = call.call_id,
            len = body.len(),
        )
    }

    /// ACK for the 2xx `ok` (RFC 3261 §13.2.2.4): to the Contact, through the route set.
    pub fn ack(&self, call: &Call, ok: &SipMsg) {
        let msg = self.in_dialog("ACK", call, ok, call.cseq);
        self.send(&msg, call.proxy);
    }

    /// BYE in the dialog of `ok`; returns its final response.
    pub fn bye(&self, call: &mut Call, ok: &SipMsg) -> SipMsg {
        call.cseq += 1;
        let msg = self.in_dialog("BYE", call, ok, call.cseq);
        self.send(&msg, call.proxy);
        let cseq = format!("{} BYE", call.cseq);
        self.wait(|m| m.header("Call-ID") == call.call_id && m.header("CSeq") == cseq)
            .filter(|m| m.status().is_some_and(|s| s >= 200))
            .unwrap_or_else(|| panic!("{}: no final response to BYE\n{}", self.user, self.dump()))
    }

    /// The next request of `method` not returned before (retransmissions skipped), waiting
    /// up to 10 s.
    pub fn next_request(&self, method: &str) -> SipMsg {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let inbox = lock(&self.inbox);
                let mut taken = lock(&self.taken);
                // a retransmission: the same method in the same transaction (a CANCEL shares
                // its INVITE's branch, RFC 3261 §9.1)
                let seen: Vec<&str> = taken
                    .iter()
                    .filter(|i| inbox[**i].method() == Some(method))
                    .map(|i| branch(&inbox[*i]))
                    .collect();
                let next = inbox.iter().enumerate().find(|(i, m)| {
                    m.method() == Some(method) && !taken.contains(i) && !seen.contains(&branch(m))
                });
                if let Some((i, m)) = next {
                    let m = m.clone();
                    taken.push(i);
                    return m;
                }
            }
            if Instant::now() > deadline {
                panic!("{}: no new {method}\n{}", self.user, self.dump());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Requests of `method` received for `call_id`, retransmissions included.
    pub fn requests(&self, method: &str, call_id: &str) -> Vec<SipMsg> {
        self.received()
            .into_iter()
            .filter(|m| m.method() == Some(method) && m.header("Call-ID") == call_id)
            .collect()
    }

    /// Answers `req` with `code reason` (and `sdp` as body), as the callee of its dialog.
    pub fn reply(&self, req: &SipMsg, code: u16, reason: &str, sdp: Option<&str>) {
        let body = sdp.unwrap_or("");
        let mut extra = format!("Contact: <sip:{}@127.0.0.1:{}>\r\n", self.user, self.port);
        if sdp.is_some() {
            extra.push_str("Content-Type: application/sdp\r\n");
        }
        let msg = response(req, code, reason, &self.user, &extra, body);
        self.sock
            .send_to(msg.as_bytes(), req.from)
            .unwrap_or_else(|e| panic!("udp send: {e}"));
    }

    fn in_dialog(&self, method: &str, call: &Call, ok: &SipMsg, cseq: u32) -> String {
        let target = unangle(ok.header("Contact"));
        let target = if target.is_empty() {
            call.ruri.as_str()
        } else {
            target
        };
        // RFC 3261 §12.1.2: the UAC's route set is the Record-Route in reverse order
        let mut routes: Vec<&str> = ok
            .headers("Record-Route")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        routes.reverse();
        let mut msg = format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{br}\r\n\
             Max-Forwards: 70\r\n",
            port = self.port,
            br = unique(),
        );
        for r in routes {
            msg.push_str(&format!("Route: {r}\r\n"));
        }
        msg.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            call.from,
            ok.header("To"),
            call.call_id
        ));
        msg
    }

    fn send(&self, msg: &str, port: u16) {
        self.sock
            .send_to(msg.as_bytes(), (Ipv4Addr::LOCALHOST, port))
            .unwrap_or_else(|e| panic!("udp send: {e}"));
    }

    fn wait(&self, pred: impl Fn(&SipMsg) -> bool) -> Option<SipMsg> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(m) = lock(&self.inbox).iter().find(|m| pred(m)) {
                return Some(m.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The start lines received, for failure messages.
    pub fn dump(&self) -> String {
        self.received()
            .iter()
            .map(|m| format!("  {} ({})", m.first_line(), m.header("Call-ID")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for SdpPhone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a user agent sends by itself on receiving `msg` (`earlier`: what it got before).
fn automatic(msg: &SipMsg, earlier: &[SipMsg], user: &str, port: u16) -> Vec<String> {
    let contact = format!("Contact: <sip:{user}@127.0.0.1:{port}>\r\n");
    match msg.method() {
        // stops the proxy's INVITE retransmissions while the test decides (RFC 3261 §17.1.1.2)
        Some("INVITE") if !msg.headers("To").iter().any(|t| t.contains("tag=")) => {
            vec![response(msg, 100, "Trying", user, "", "")]
        }
        Some("BYE") => vec![response(msg, 200, "OK", user, "", "")],
        Some("CANCEL") => {
            let mut out = vec![response(msg, 200, "OK", user, "", "")];
            let invite = earlier.iter().find(|m| {
                m.method() == Some("INVITE")
                    && m.header("Call-ID") == msg.header("Call-ID")
                    && branch(m) == branch(msg)
            });
            if let Some(inv) = invite {
                out.push(response(inv, 487, "Request Terminated", user, &contact, ""));
            }
            out
        }
        None if msg.cseq_method() == "INVITE" && msg.status().is_some_and(|s| s >= 300) => {
            vec![ack_non_2xx(msg)]
        }
        _ => Vec::new(),
    }
}

/// RFC 3261 §17.1.1.3: the ACK of a non-2xx final response, in the INVITE's transaction.
fn ack_non_2xx(resp: &SipMsg) -> String {
    let cseq = resp.header("CSeq").split_whitespace().next().unwrap_or("1");
    // the Request-URI of the INVITE: the To URI here (the caller sends To = Request-URI)
    let ruri = unangle(resp.header("To"));
    format!(
        "ACK {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
         Call-ID: {}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
        resp.header("Via"),
        resp.header("From"),
        resp.header("To"),
        resp.header("Call-ID"),
    )
}

/// A response to `req`: its Via, Record-Route, From, Call-ID and CSeq, To with a tag
/// (RFC 3261 §8.2.6.2, §12.1.1), then `extra` header lines and `body`.
fn response(req: &SipMsg, code: u16, reason: &str, user: &str, extra: &str, body: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.headers("Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    if code > 100 {
        for r in req.headers("Record-Route") {
            out.push_str(&format!("Record-Route: {r}\r\n"));
        }
    }
    let to = req.header("To");
    let to = if to.contains("tag=") || code == 100 {
        to.to_string()
    } else {
        format!("{to};tag={user}-{}", short_hash(req.header("Call-ID")))
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        req.header("From"),
        req.header("Call-ID"),
        req.header("CSeq"),
        body.len()
    ));
    out
}

/// The top Via's branch parameter.
fn branch(m: &SipMsg) -> &str {
    m.header("Via")
        .split(';')
        .find_map(|p| p.trim().strip_prefix("branch="))
        .unwrap_or("")
}

/// `<sip:x>;params` -> `sip:x`.
fn unangle(v: &str) -> &str {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v).trim(),
    }
}

/// The same To tag for every response of a dialog (RFC 3261 §12.1.1).
fn short_hash(s: &str) -> u32 {
    s.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    })
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    u64::from(std::process::id()) * 1_000_000 + n
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
