//! Who a connection proves to be, and what refusing a stranger costs (DESIGN §10).
//!
//! Plain data and pure functions, no sockets, no clock, no TLS library: the driver fills a
//! [`PeerCert`] from the TLS handshake and passes the connection's source address; the core
//! decides with [`check_identity`] whether the peer a CER names may use this connection.
//! Every refusal has a [`Refusal`] cause, is counted in [`Refusals`] (atomics, so the metrics
//! exporter reads them from any thread) and is logged through [`Refusals::record`] at most once
//! per cause and source address per [`LOG_INTERVAL`], with the number suppressed meanwhile —
//! a flood of 10^5 refused connections makes a handful of lines, not 10^5.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the peer's TLS certificate says, as read by the driver after a completed handshake
/// in which the chain was verified against the node's CA bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// subjectAltName dNSName entries (lower case).
    pub dns_names: Vec<String>,
    /// The subject's CN, used only when there is no dNSName (RFC 6125 §6.4.4).
    pub common_name: Option<String>,
    /// SHA-256 of the end-entity certificate (DER), for `tls_pin`.
    pub sha256: [u8; 32],
    /// The per-peer CA bundles (`tls_ca` of a `[[peers]]` entry, by path as configured) the
    /// chain also verifies against.
    pub cas: Vec<String>,
}

impl PeerCert {
    /// Whether the certificate names `host` (a Diameter identity, an FQDN). dNSName entries
    /// are matched case-insensitively, with a wildcard allowed as the whole left-most label
    /// only (RFC 6125 §6.4.3); the CN is consulted only if there is no dNSName at all.
    pub fn names(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.dns_names.is_empty() {
            return self
                .common_name
                .as_deref()
                .is_some_and(|cn| name_matches(cn, &host));
        }
        self.dns_names.iter().any(|n| name_matches(n, &host))
    }

    /// The names to quote in a refusal.
    pub fn describe(&self) -> String {
        if self.dns_names.is_empty() {
            format!("CN={}", self.common_name.as_deref().unwrap_or("(none)"))
        } else {
            format!("SAN={}", self.dns_names.join(","))
        }
    }
}

fn name_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest && rest.contains('.')),
        None => pattern == host,
    }
}

/// How a configured peer proves itself on a connection (from its `[[peers]]` entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerTrust {
    /// Addresses the peer may connect from when the connection has no TLS: the configured
    /// address, or what its name resolved to. Empty: no address is known, nothing to check
    /// (`check-config` warns about such a peer).
    pub addresses: Vec<IpAddr>,
    /// The configured address is a name: until it resolved (`addresses` empty), a plain
    /// connection claiming the peer is refused rather than trusted.
    pub named: bool,
    /// The peer must use TLS (`transport = "tls"` or in-band TLS required).
    pub tls_required: bool,
    /// Check that the certificate names the peer's Origin-Host (default true).
    pub verify_host: bool,
    /// The chain must also verify against this per-peer CA bundle (its configured path).
    pub ca: Option<String>,
    /// The end-entity certificate's SHA-256 must be this.
    pub pin: Option<[u8; 32]>,
}

/// Why a connection or a CER was refused. One counter and one log key each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// Too many connections that have not finished CER/CEA.
    PendingCap,
    /// Too many not-yet-identified connections from this source address.
    PerSourceCap,
    /// The global connection cap (`max_connections`).
    ConnectionCap,
    /// No CER within the CER timeout.
    CerTimeout,
    /// A message's header arrived but the rest did not within `message_timeout`.
    MessageTimeout,
    /// A message larger than the limit (the small pre-CER one, or `max_message_size`).
    MessageTooLarge,
    /// The global budget of buffered bytes is spent.
    BufferBudget,
    /// A configured peer's CER came from an address that is not one of the peer's.
    WrongAddress,
    /// The CER's Origin-Host is not configured (and unknown peers are not allowed).
    UnknownPeer,
    /// The peer requires TLS and the connection has none.
    TlsRequired,
    /// The certificate does not name the peer's Origin-Host.
    CertNameMismatch,
    /// The certificate does not chain to the peer's own CA (`tls_ca`).
    CertWrongCa,
    /// The certificate is not the pinned one (`tls_pin`).
    CertPinMismatch,
    /// The TLS handshake failed: unknown CA, expired, no certificate, not TLS at all...
    TlsHandshake,
    /// No common Inband-Security-Id in CER/CEA (RFC 6733 §6.10, §7.1.5: 5017 answered to
    /// a CER, or a CEA that would have us talk clear text to a peer starting TLS).
    NoCommonSecurity,
}

impl Refusal {
    /// Every cause, for export. The counters are indexed by position here: a new variant
    /// missing from this list would be counted as the first one.
    pub const ALL: [Refusal; 15] = [
        Refusal::PendingCap,
        Refusal::PerSourceCap,
        Refusal::ConnectionCap,
        Refusal::CerTimeout,
        Refusal::MessageTimeout,
        Refusal::MessageTooLarge,
        Refusal::BufferBudget,
        Refusal::WrongAddress,
        Refusal::UnknownPeer,
        Refusal::TlsRequired,
        Refusal::CertNameMismatch,
        Refusal::CertWrongCa,
        Refusal::CertPinMismatch,
        Refusal::TlsHandshake,
        Refusal::NoCommonSecurity,
    ];

    /// A stable snake_case name, for metrics labels and log fields.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::PendingCap => "pending_cap",
            Refusal::PerSourceCap => "per_source_cap",
            Refusal::ConnectionCap => "connection_cap",
            Refusal::CerTimeout => "cer_timeout",
            Refusal::MessageTimeout => "message_timeout",
            Refusal::MessageTooLarge => "message_too_large",
            Refusal::BufferBudget => "buffer_budget",
            Refusal::WrongAddress => "wrong_address",
            Refusal::UnknownPeer => "unknown_peer",
            Refusal::TlsRequired => "tls_required",
            Refusal::CertNameMismatch => "cert_name_mismatch",
            Refusal::CertWrongCa => "cert_wrong_ca",
            Refusal::CertPinMismatch => "cert_pin_mismatch",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::NoCommonSecurity => "no_common_security",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Decides whether the peer a CER names (`trust`) may use a connection from `source` with
/// the certificate `cert` (None: no TLS). `Err` carries the cause and a sentence for the
/// log and the CEA's Error-Message.
pub fn check_identity(
    host: &str,
    trust: &PeerTrust,
    source: Option<IpAddr>,
    cert: Option<&PeerCert>,
) -> Result<(), (Refusal, String)> {
    match cert {
        Some(cert) => {
            if trust.verify_host && !cert.names(host) {
                return Err((
                    Refusal::CertNameMismatch,
                    format!(
                        "certificate ({}) does not name Origin-Host {host}",
                        cert.describe()
                    ),
                ));
            }
            if let Some(ca) = &trust.ca {
                if !cert.cas.iter().any(|c| c == ca) {
                    return Err((
                        Refusal::CertWrongCa,
                        format!("certificate of {host} does not chain to its CA {ca}"),
                    ));
                }
            }
            if let Some(pin) = &trust.pin {
                if *pin != cert.sha256 {
                    return Err((
                        Refusal::CertPinMismatch,
                        format!("certificate of {host} is not the pinned one"),
                    ));
                }
            }
            Ok(())
        }
        None if trust.tls_required => Err((
            Refusal::TlsRequired,
            format!("{host} must connect with TLS"),
        )),
        None => match source {
            // An IPv4 peer may reach a dual-stack socket as ::ffff:a.b.c.d.
            Some(ip) if !trust.addresses.is_empty() => {
                let ip = canonical(ip);
                if trust.addresses.iter().any(|a| canonical(*a) == ip) {
                    Ok(())
                } else {
                    Err((
                        Refusal::WrongAddress,
                        format!("{host} is not expected from {ip}"),
                    ))
                }
            }
            _ if trust.named && trust.addresses.is_empty() => Err((
                Refusal::WrongAddress,
                format!("{host}'s address has not resolved yet"),
            )),
            _ => Ok(()),
        },
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, so a configured IPv4 address matches either form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// At most one log line per cause and source address per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Sources remembered for rate limiting; beyond, entries older than the interval are
/// dropped, and if none is, the cause alone is the key (a flood from many addresses still
/// logs once per cause per interval).
const MAX_LOG_KEYS: usize = 4096;

/// Refusal counters (monotonic, never reset) and the log rate limiter. Shared by the
/// driver, its connections' tasks and the core through an `Arc`: every refusal, whoever
/// made it, is counted here once, and reported to the [`RefusalSink`] (the metrics
/// exporter's `dmbridge_refusals_total`) in the same step, so the two never disagree.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
    /// Connections admitted from `allow_unknown_peers` peers.
    unknown_peers_admitted: AtomicU64,
    log: Mutex<HashMap<LogKey, LogSlot>>,
    sink: OnceLock<RefusalSink>,
}

/// Where counted refusals are also reported: the metrics exporter, which the node crate
/// knows nothing of (set once, when metrics are on).
pub struct RefusalSink(pub Box<dyn Fn(Refusal) + Send + Sync>);

impl std::fmt::Debug for RefusalSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusalSink")
    }
}

/// What one log line stands for: a cause, its kind (e.g. which TLS failure; may be empty),
/// and the source address (`None` once too many sources are remembered).
type LogKey = (Refusal, &'static str, Option<IpAddr>);

#[derive(Debug)]
struct LogSlot {
    last: Instant,
    suppressed: u64,
}

impl Refusals {
    /// All counts zero, no sink.
    pub fn new() -> Refusals {
        Refusals::default()
    }

    /// Times `cause` happened since start.
    pub fn get(&self, cause: Refusal) -> u64 {
        self.counts[cause.index()].load(Ordering::Relaxed)
    }

    /// Every cause with its count, for export.
    pub fn snapshot(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL.iter().map(|r| (*r, self.get(*r))).collect()
    }

    /// Connections admitted as unknown peers (`allow_unknown_peers`).
    pub fn unknown_admitted(&self) -> u64 {
        self.unknown_peers_admitted.load(Ordering::Relaxed)
    }

    /// Reports every later refusal to `sink` too. A second call is ignored (one exporter
    /// per process): returns whether this one took effect.
    pub fn set_sink(&self, sink: impl Fn(Refusal) + Send + Sync + 'static) -> bool {
        self.sink.set(RefusalSink(Box::new(sink))).is_ok()
    }

    /// Counts one connection admitted under `allow_unknown_peers`: not a refusal, but the
    /// number an operator watches to see who relies on the open door.
    pub fn count_unknown_admitted(&self) {
        self.unknown_peers_admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refusal and logs it (warn) unless one of the same cause from the same
    /// source was logged less than [`LOG_INTERVAL`] ago; the next line then says how many
    /// were not logged.
    pub fn record(&self, cause: Refusal, source: Option<IpAddr>, detail: &str, now: Instant) {
        self.record_kind(cause, "", source, detail, now);
    }

    /// [`Refusals::record`] with a finer log key: refusals of one cause but of different
    /// `kind` (a TLS handshake failing for an unknown CA, then for an expired certificate)
    /// each get their line, so the first does not hide the second from the operator. The
    /// counter is still the cause's.
    pub fn record_kind(
        &self,
        cause: Refusal,
        kind: &'static str,
        source: Option<IpAddr>,
        detail: &str,
        now: Instant,
    ) {
        self.counts[cause.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(sink) = self.sink.get() {
            (sink.0)(cause);
        }
        if let Some(suppressed) = self.should_log(cause, kind, source.map(canonical), now) {
            let source = source.map(|s| s.to_string());
            let source = source.as_deref().unwrap_or("-");
            if suppressed > 0 {
                tracing::warn!(
                    cause = cause.name(),
                    source,
                    suppressed,
                    "refused: {detail} ({suppressed} more like it from {source} not logged)"
                );
            } else {
                tracing::warn!(cause = cause.name(), source, "refused: {detail}");
            }
        }
    }

    /// `Some(suppressed since the last line)` when a line is due.
    fn should_log(
        &self,
        cause: Refusal,
        kind: &'static str,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Option<u64> {
        let Ok(mut log) = self.log.lock() else {
            return Some(0);
        };
        let mut key = (cause, kind, source);
        if !log.contains_key(&key) && log.len() >= MAX_LOG_KEYS {
            log.retain(|_, s| now.saturating_duration_since(s.last) < LOG_INTERVAL);
            if log.len() >= MAX_LOG_KEYS {
                key = (cause, kind, None);
            }
        }
        match log.get_mut(&key) {
            Some(slot) if now.saturating_duration_since(slot.last) < LOG_INTERVAL => {
                slot.suppressed += 1;
                None
            }
            Some(slot) => {
                let n = slot.suppressed;
                slot.last = now;
                slot.suppressed = 0;
                Some(n)
            }
            None => {
                log.insert(
                    key,
                    LogSlot {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str], cn: Option<&str>) -> PeerCert {
        PeerCert {
            dns_names: names.iter().map(|s| s.to_string()).collect(),
            common_name: cn.map(str::to_string),
            ..PeerCert::default()
        }
    }

    #[test]
    fn san_then_cn_and_wildcards() {
        let c = cert(&["hss.example.net", "*.pool.example.net"], Some("other"));
        assert!(c.names("HSS.example.net"));
        assert!(c.names("a.pool.example.net"));
        assert!(!c.names("a.b.pool.example.net"), "a wildcard is one label");
        assert!(!c.names("pool.example.net"));
        assert!(!c.names("other"), "CN is ignored when a dNSName is present");
        assert!(cert(&[], Some("hss.example.net")).names("hss.example.net"));
        assert!(!cert(&[], None).names("hss.example.net"));
        assert!(
            !cert(&["*.net"], None).names("example.net"),
            "no bare-TLD wildcard"
        );
    }

    #[test]
    fn identity_rules() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let by_addr = PeerTrust {
            addresses: vec![ip("192.0.2.1")],
            verify_host: true,
            ..PeerTrust::default()
        };
        assert!(check_identity("p", &by_addr, Some(ip("192.0.2.1")), None).is_ok());
        assert!(check_identity("p", &by_addr, Some(ip("::ffff:192.0.2.1")), None).is_ok());
        assert_eq!(
            check_identity("p", &by_addr, Some(ip("192.0.2.2")), None).map_err(|e| e.0),
            Err(Refusal::WrongAddress)
        );
        // With TLS the certificate, not the address, decides.
        let good = cert(&["p.example"], None);
        assert!(check_identity("p.example", &by_addr, Some(ip("192.0.2.2")), Some(&good)).is_ok());
        assert_eq!(
            check_identity("q.example", &by_addr, None, Some(&good)).map_err(|e| e.0),
            Err(Refusal::CertNameMismatch)
        );
        let lax = PeerTrust {
            verify_host: false,
            ..by_addr.clone()
        };
        assert!(check_identity("q.example", &lax, None, Some(&good)).is_ok());
        let tls = PeerTrust {
            tls_required: true,
            ..by_addr.clone()
        };
        assert_eq!(
            check_identity("p", &tls, Some(ip("192.0.2.1")), None).map_err(|e| e.0),
            Err(Refusal::TlsRequired)
        );
        let pinned = PeerTrust {
            pin: Some([7; 32]),
            ca: None,
            ..by_addr.clone()
        };
        assert_eq!(
            check_identity("p.example", &pinned, None, Some(&good)).map_err(|e| e.0),
            Err(Refusal::CertPinMismatch)
        );
        let own_ca = PeerTrust {
            ca: Some("p-ca.pem".into()),
            ..by_addr
        };
        assert_eq!(
            check_identity("p.example", &own_ca, None, Some(&good)).map_err(|e| e.0),
            Err(Refusal::CertWrongCa)
        );
        let chained = PeerCert {
            cas: vec!["p-ca.pem".into()],
            ..good
        };
        assert!(check_identity("p.example", &own_ca, None, Some(&chained)).is_ok());
    }

    #[test]
    fn logged_once_per_cause_and_source_per_interval() {
        let r = Refusals::new();
        let t0 = Instant::now();
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("192.0.2.2".parse().unwrap());
        assert_eq!(r.should_log(Refusal::PendingCap, "", a, t0), Some(0));
        assert_eq!(r.should_log(Refusal::PendingCap, "", a, t0), None);
        assert_eq!(r.should_log(Refusal::PendingCap, "", b, t0), Some(0));
        assert_eq!(r.should_log(Refusal::CerTimeout, "", a, t0), Some(0));
        assert_eq!(
            r.should_log(Refusal::PendingCap, "", a, t0 + LOG_INTERVAL),
            Some(1)
        );
        // Another kind of the same cause gets its own line.
        assert_eq!(
            r.should_log(Refusal::TlsHandshake, "unknown_ca", a, t0),
            Some(0)
        );
        assert_eq!(
            r.should_log(Refusal::TlsHandshake, "expired", a, t0),
            Some(0)
        );
        assert_eq!(r.should_log(Refusal::TlsHandshake, "expired", a, t0), None);
        for _ in 0..3 {
            r.record(Refusal::WrongAddress, a, "x", t0);
        }
        assert_eq!(r.get(Refusal::WrongAddress), 3);
    }

    #[test]
    fn the_sink_sees_each_refusal_once_whatever_its_log_fate() {
        let r = Refusals::new();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        assert!(r.set_sink(move |c| s2.lock().unwrap().push(c)));
        assert!(!r.set_sink(|_| {}), "one sink per process");
        let t0 = Instant::now();
        let a = Some("192.0.2.1".parse().unwrap());
        // The second line is suppressed in the log, not in the count or the sink.
        r.record(Refusal::CerTimeout, a, "x", t0);
        r.record(Refusal::CerTimeout, a, "x", t0);
        r.record_kind(Refusal::TlsHandshake, "expired", a, "y", t0);
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Refusal::CerTimeout,
                Refusal::CerTimeout,
                Refusal::TlsHandshake
            ]
        );
        assert_eq!(r.get(Refusal::CerTimeout), 2);
    }
}
