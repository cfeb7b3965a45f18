//! TLS helpers of the interop tests: the node's log lines, a TLS client, a raw CER and a
//! bounded message reader.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmrun::tls::{Tls, TlsSettings};
use harness::certs::NodeCert;
use tokio::io::AsyncReadExt;

use super::{M, TA_APP};

/// Log lines of the node (the test installs the subscriber; in production ops13's does).
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<u8>>>);

impl Lines {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    pub async fn wait(&self, needle: &str) {
        for _ in 0..100 {
            if self.text().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line with {needle:?} in:\n{}", self.text());
    }
}

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_logs() -> Lines {
    let lines = Lines::default();
    let w = lines.clone();
    let _ = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .try_init();
    lines
}

pub fn client_tls(ca: &Path, cert: &NodeCert) -> Tls {
    Tls::load(TlsSettings {
        ca_file: ca.into(),
        cert_file: cert.cert_file.clone(),
        key_file: cert.key_file.clone(),
        handshake_timeout: Duration::from_secs(5),
        peer_cas: Vec::new(),
    })
    .unwrap()
}

/// A CER from `host` (RFC 6733 §5.3.1), as a peer would send it.
pub fn cer(host: &str) -> Vec<u8> {
    cer_offering(host, &[])
}

/// A CER from `host` with these Inband-Security-Id values (RFC 6733 §6.10).
pub fn cer_offering(host: &str, inband_security_ids: &[u32]) -> Vec<u8> {
    let mut w = dmproto::MessageWriter::new(dmproto::Header::request(257, 0, 1, 1));
    w.str(264, M, 0, host)
        .str(296, M, 0, "test.local")
        .avp(257, M, 0, &[0, 1, 127, 0, 0, 1])
        .u32(266, M, 0, 0)
        .str(269, 0, 0, "tls-test")
        .u32(258, M, 0, TA_APP);
    for v in inband_security_ids {
        w.u32(299, M, 0, *v);
    }
    w.finish().unwrap().to_vec()
}

/// Reads one Diameter message (bounded wait); `None` if the node closed first.
pub async fn read_message<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<dmproto::Message> {
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
    dmproto::Message::decode(bytes::Bytes::from(all)).ok()
}
