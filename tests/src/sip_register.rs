//! Third-party REGISTERs as an S-CSCF sends them to an Application Server (3GPP TS 24.229
//! §5.4.1.7): Request-URI the AS, From and Contact the S-CSCF, To the user who registered,
//! Expires the registration's, 0 when the user de-registered. [`crate::sip::request`] always
//! says `Expires: 600` and takes any final response; this one waits for its own (Call-ID).

use std::net::Ipv4Addr;
use std::time::Duration;

/// Sends the third-party REGISTER for `user@test.local` with `expires` to the AS on
/// 127.0.0.1:`port`; returns the status line of its final response, or "no reply (...)"
/// after 8 s.
pub fn third_party_register(port: u16, user: &str, expires: u32) -> String {
    let (s, me) = crate::sip::loopback_udp(Duration::from_secs(8));
    let call_id = format!("3pr-{me}-{user}-{expires}@scscf.test.local");
    let msg = format!(
        "REGISTER sip:as.test.local SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-3pr-{me}-{expires}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:scscf.test.local>;tag=3pr-{me}\r\n\
         To: <sip:{user}@test.local>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:scscf.test.local>\r\n\
         Expires: {expires}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    s.send_to(msg.as_bytes(), (Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("udp send: {e}"));
    let mut buf = vec![0u8; 65535];
    let datagrams = std::iter::from_fn(|| {
        let n = s.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    let ours = |text: &String| {
        text.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("call-id:") && l.contains(&call_id))
    };
    datagrams
        .filter(ours)
        .map(|text| text.lines().next().unwrap_or("").to_string())
        .find(|status| !status.starts_with("SIP/2.0 1"))
        .unwrap_or_else(|| "no reply (nothing for this Call-ID in 8 s)".into())
}
