//! The configuration model: what a validated configuration file says, as plain types. The
//! reader ([`super::reader`]) and the section readers ([`super::sections`]) build it;
//! everything else in the node only reads it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The Diameter relay application id (RFC 6733 §2.4): a peer advertising it accepts every
/// application.
pub const RELAY_APP_ID: u32 = 0xffff_ffff;

/// The IANA port for Diameter over TCP/SCTP (RFC 6733 §2.1).
pub const DEFAULT_PORT: u16 = 3868;

/// One problem in a configuration file, with its 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line of the offending key or value (1 when the error is about the file as
    /// a whole, e.g. a missing table).
    pub line: usize,
    /// 1-based column, in characters, on that line.
    pub column: usize,
    /// What is wrong and, where there is one, what was expected.
    pub message: String,
}

impl ConfigError {
    /// The error `message` about the bytes at `span` of `src` (the file's start when `span`
    /// is `None`), placed by line and column. Also for readers of tables the node does not
    /// own (the bridge's `[scheduling]`), so every error of one file is placed alike.
    pub fn at(src: &str, span: Option<std::ops::Range<usize>>, message: impl Into<String>) -> Self {
        let offset = span.map(|s| s.start).unwrap_or(0).min(src.len());
        let before = src.get(..offset).unwrap_or("");
        ConfigError {
            line: before.matches('\n').count() + 1,
            column: before
                .rsplit('\n')
                .next()
                .map(|l| l.chars().count())
                .unwrap_or(0)
                + 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The whole node configuration, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `[node]`: our identity (CER/CEA, every answer's Origin-*) and listening addresses.
    pub node: NodeConfig,
    /// `[[applications]]`: what CER/CEA advertise (RFC 6733 §5.3); a peer sharing none of
    /// them (a relay, application 0xffffffff, shares all) is answered 5010 DIAMETER_NO_COMMON_APPLICATION.
    pub applications: Vec<AppAdvert>,
    /// `[[peers]]`: the peers we know by name; others are refused with 3010 unless
    /// `allow_unknown_peers`.
    pub peers: Vec<PeerConfig>,
    /// `[[routes]]`: the realm-based routing table (RFC 6733 §2.7).
    pub routes: Vec<RouteConfig>,
    /// Peers (by host) used when neither Destination-Host nor the realm table decides.
    pub default_route: Vec<String>,
    /// `[timers]`: Tc, Tw and the node's own timeouts.
    pub timers: Timers,
    /// `[limits]`: the bounds on every queue, cache and buffer (DESIGN §10).
    pub limits: Limits,
    /// `[app]`: the shared-memory seam to the SIP server's workers.
    pub app: ShmSettings,
    /// `[log]`, `[metrics]`, `[admin]`.
    pub ops: OpsSettings,
    /// `[routing]`: relay mode and rule-based peer selection.
    pub routing: Routing,
    /// `[tls]`: absent means no TLS.
    pub tls: Option<TlsConfig>,
}

/// `[routing]`: relay agent mode and rt_default-style peer selection rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routing {
    /// Relay agent (RFC 6733 §6.1.8): requests for other hosts or realms are forwarded by
    /// the routing table instead of answered 3002/3003. Off by default: a SIP node is an
    /// end node.
    pub relay: bool,
    /// `rules_file`: a file in freeDiameter's `rt_default.conf` syntax, relative to the
    /// configuration file. The node does no I/O: the driver reads it and puts its rules in
    /// [`Routing::rules`] (`dmrun::config_file`).
    pub rules_file: Option<PathBuf>,
    /// The rules (from `rules = """..."""` inline, or from `rules_file` once read).
    /// Empty: the plain RFC 6733 §6.1 order of [`crate::router`].
    pub rules: crate::rules::RuleSet,
}

/// `[tls]`: this node's certificate and the CAs it trusts (RFC 6733 §13, TLS at connect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM bundle of the CAs peers' certificates must chain to.
    pub ca_file: PathBuf,
    /// Our certificate chain (PEM, end entity first); its SAN should be our Origin-Host.
    pub cert_file: PathBuf,
    /// The private key of `cert_file` (PEM); keep it readable by the bridge's user only.
    pub key_file: PathBuf,
    /// Where TLS-at-connect connections are accepted (port 5658 by convention).
    pub listen: Vec<SocketAddr>,
    /// A handshake not finished by then is abandoned.
    pub handshake_timeout: Duration,
}

/// Who this node is and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Our DiameterIdentity (RFC 6733 §6.3 Origin-Host): what peers list us as and what
    /// their Destination-Host names. Required.
    pub origin_host: String,
    /// Our realm (§6.4 Origin-Realm): requests with this Destination-Realm are ours to
    /// answer (§6.1.4). Required.
    pub origin_realm: String,
    /// Product-Name in CER/CEA (§5.3.7), for the peer's logs; default `dmbridge`.
    pub product_name: String,
    /// Vendor-Id in CER/CEA (§5.3.3): our vendor's IANA enterprise number; default 0
    /// (none). Not the vendor of the applications we advertise: that is [`AppAdvert::vendor`].
    pub vendor_id: u32,
    /// Firmware-Revision in CER/CEA (§5.3.4), sent only when set; default absent.
    pub firmware_revision: Option<u32>,
    /// Addresses to accept connections on; IPv4 and IPv6 both allowed.
    pub listen: Vec<SocketAddr>,
    /// Host-IP-Address values for CER/CEA. Empty: the driver uses the local address of each
    /// connection (the usual choice).
    pub host_ip_addresses: Vec<IpAddr>,
    /// Accept CERs from Origin-Hosts not listed in `[[peers]]` instead of answering 3010.
    pub allow_unknown_peers: bool,
    /// Destination-Realm for originated requests that give none (default: our realm).
    pub destination_realm: Option<String>,
    /// Dictionary files (OpenSIPS `aaa_diameter` format) loaded over the built-ins, in order.
    /// Relative paths are relative to the configuration file.
    pub dictionaries: Vec<PathBuf>,
}

impl NodeConfig {
    /// The Destination-Realm to add to originated requests that have none.
    pub fn default_destination_realm(&self) -> &str {
        self.destination_realm
            .as_deref()
            .unwrap_or(&self.origin_realm)
    }
}

/// Whether an application is advertised in Auth-Application-Id or Acct-Application-Id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AppKind {
    /// Auth-Application-Id (RFC 6733 §6.8): authentication/authorization applications —
    /// every 3GPP interface the SIP servers use (Cx, Sh, Rx, Ro's credit control). The default.
    Auth,
    /// Acct-Application-Id (§6.9): accounting applications (base accounting, Rf).
    Acct,
}

/// One advertised application. `vendor: Some(v)` advertises it inside a
/// Vendor-Specific-Application-Id with Vendor-Id `v` (as 3GPP applications require).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppAdvert {
    /// The application id (IANA registry; 3GPP's are 16777xxx, e.g. Cx 16777216).
    pub id: u32,
    /// Which AVP advertises it; `kind = "auth"` (default) or `"acct"`.
    pub kind: AppKind,
    /// Vendor-Id of the Vendor-Specific-Application-Id (10415 for 3GPP); `None`: advertised
    /// bare, as IETF applications are.
    pub vendor: Option<u32>,
}

/// Whether we open the connection to a peer or only wait for it to connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    /// `mode = "connect"` (default): we dial the peer and redial while it is closed, with
    /// backoff from Tc (RFC 6733 §2.1, §12); it may dial us too, and the election (§5.6.4)
    /// keeps one connection.
    Connect,
    /// `mode = "accept"`: we never dial; the peer is known (its CER is accepted) but must
    /// connect to us: for peers we cannot reach (behind NAT, dynamic addresses).
    AcceptOnly,
}

/// The transport to a peer: TCP, or TLS from the first byte (RFC 6733 §13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP (default port 3868); TLS may still follow CER/CEA in band
    /// ([`PeerConfig::tls_inband`]).
    Tcp,
    /// TLS at connect (default port 5658), as RFC 6733 §13 recommends; needs `[tls]`.
    Tls,
}

/// A peer's address as configured: an IP address, or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAddress {
    /// A literal IPv4 or IPv6 address: connected to as is.
    Ip(IpAddr),
    /// A DNS name, resolved by the driver at each connection attempt.
    Name(String),
}

/// Where to connect to a peer. A name is resolved at every attempt (the driver's job), so
/// a peer that moves is found again on reconnection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A literal address and port.
    Addr(SocketAddr),
    /// A name to resolve, with the peer's port.
    Name {
        /// The DNS name as configured.
        host: String,
        /// The peer's `port`.
        port: u16,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(a) => write!(f, "{a}"),
            Endpoint::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// One configured peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's Diameter identity (its Origin-Host in CER/CEA).
    pub host: String,
    /// Where to connect; required in `Connect` mode, optional (unused) for accept-only.
    pub address: Option<PeerAddress>,
    /// The peer's port; default 3868 for TCP, 5658 for TLS (RFC 6733 §2.1, §13).
    pub port: u16,
    /// Whether we dial it (default) or only accept it.
    pub mode: PeerMode,
    /// TCP (default) or TLS at connect; SCTP is refused with an explanation.
    pub transport: Transport,
    /// TLS: the certificate must name the peer's Origin-Host (default true).
    pub tls_verify_host: bool,
    /// TLS: the peer's chain must also verify against this CA bundle (path as written).
    pub tls_ca: Option<String>,
    /// TLS: SHA-256 of the peer's end-entity certificate (DER).
    pub tls_pin: Option<[u8; 32]>,
    /// In-band TLS (RFC 3588 §2.1 / RFC 6733 §6.10; freeDiameter's `TLS_old_method`): plain
    /// TCP, CER/CEA with Inband-Security-Id TLS, then the TLS handshake on the same
    /// connection before the peer is open. A CER without Inband-Security-Id TLS is answered
    /// 5017 DIAMETER_NO_COMMON_SECURITY. Needs `[tls]`; `transport` stays "tcp".
    pub tls_inband: bool,
}

impl PeerConfig {
    /// Where to connect, when there is an address.
    pub fn endpoint(&self) -> Option<Endpoint> {
        match &self.address {
            Some(PeerAddress::Ip(ip)) => Some(Endpoint::Addr(SocketAddr::new(*ip, self.port))),
            Some(PeerAddress::Name(host)) => Some(Endpoint::Name {
                host: host.clone(),
                port: self.port,
            }),
            None => None,
        }
    }
}

/// An address as written in `[[peers]]`: an IP address, or a host name. Strings that look
/// like an IP address but are not one (`192.0.2.300`, anything with `:`) are refused rather
/// than looked up as names.
pub fn parse_peer_address(text: &str) -> Option<PeerAddress> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(PeerAddress::Ip(ip));
    }
    let looks_numeric = text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if looks_numeric || text.contains(':') || !is_diameter_identity(text) {
        return None;
    }
    Some(PeerAddress::Name(text.to_string()))
}

/// One realm-table entry: requests for `realm` (and `app_id`, if given) go to `peers`.
/// Lower `priority` is preferred; peers of equal priority share load round-robin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// The Destination-Realm this entry serves (RFC 6733 §2.7 Realm Name), matched exactly.
    pub realm: String,
    /// `None`: any application.
    pub app_id: Option<u32>,
    /// The peers (by `[[peers]] host`) that serve the realm; each must be configured.
    pub peers: Vec<String>,
    /// Default 0. Entries with the lowest priority that has a usable peer win; operators
    /// give backups a higher number.
    pub priority: u32,
}

/// The protocol timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Tc: reconnect interval (RFC 6733 §12), the base of the exponential backoff.
    pub tc: Duration,
    /// Tw: watchdog interval (RFC 3539 §3.4.1); at least 6 s.
    pub tw: Duration,
    /// How long an outgoing request waits for its answer.
    pub answer_timeout: Duration,
    /// How long a connection may stay without CER (responder) or CEA (initiator).
    pub cer_timeout: Duration,
    /// How long we wait for a DPA before closing anyway; also how long, after our DPA to the
    /// peer's DPR, we wait for the peer to close the connection (RFC 6733 §5.4).
    pub dpa_timeout: Duration,
    /// On shutdown, how long pending requests may drain before DPR is sent regardless.
    pub drain_timeout: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            tc: Duration::from_secs(30),
            tw: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(5),
            cer_timeout: Duration::from_secs(5),
            dpa_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Resource limits: every queue and cache in the node is bounded by one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message in bytes we accept from an identified peer or build ourselves
    /// (default 1 MiB, range 4096..2^24-1; DESIGN §10). RFC 6733 §3 allows up to the 24-bit
    /// Message Length; the bound is our memory policy, as each connection may buffer one.
    pub max_message_size: u32,
    /// Maximum message size until the capabilities exchange identified the peer (DESIGN
    /// §10: a CER fits in a few kB; a stranger cannot make us buffer a megabyte).
    pub max_message_size_before_cer: u32,
    /// Connections that have not finished CER/CEA, from all sources together (a configured
    /// peer's own address is exempt, so the real peer can reconnect during a flood).
    pub max_pending_connections: usize,
    /// Connections that have not finished CER/CEA from one source address.
    pub max_connections_per_source: usize,
    /// Once a message's first bytes arrived, the rest must arrive within this (a peer
    /// trickling bytes cannot hold a connection until the watchdog gives up).
    pub message_timeout: Duration,
    /// Bytes all connections' readers may hold in partial messages together.
    pub max_buffered_bytes: usize,
    /// Requests in progress each way (default 65536): requests we sent awaiting answers
    /// (beyond it a submission fails [`crate::app::RequestError::TooBusy`]) and requests
    /// delivered to the application awaiting its reply (beyond it: 3004 DIAMETER_TOO_BUSY).
    pub max_pending_requests: usize,
    /// Open connections of every kind together (default 256); also the most unknown
    /// peers admitted under `allow_unknown_peers`. Beyond it new connections are refused.
    pub max_connections: usize,
    /// Answers remembered for duplicate detection (default 16384); raise it when the
    /// request rate times `dup_cache_ttl` exceeds it, or retransmissions get re-executed.
    pub dup_cache_entries: usize,
    /// How long an answer is remembered (default 240 s, RFC 6733 §3's four minutes of
    /// end-to-end uniqueness).
    pub dup_cache_ttl: Duration,
    /// Acknowledge what each read took at once (default true; `TCP_QUICKACK`), so a peer
    /// with Nagle's algorithm on does not hold its answers until our next request carries
    /// the ACK (the bridge's `transport::quick_ack` says what it buys and costs). `false`:
    /// the kernel's delayed ACKs, some CPU back at saturation, ms more latency below it.
    pub quick_ack: bool,
    /// Redirects remembered (default 4096; RFC 6733 §6.12-§6.14, [`crate::redirect`]): a
    /// full cache drops the entry expiring first, so 3006s with ever new keys cannot grow
    /// it. 0: no 3006 is cached (each redirected request still goes to its Redirect-Host).
    pub redirect_cache_entries: usize,
    /// Longest a redirect is cached (default 1 h, [`crate::redirect::DEFAULT_MAX_TIME`]
    /// says why), whatever its Redirect-Max-Cache-Time asks (§6.14: up to 2^32-1 s).
    pub redirect_cache_max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 1 << 20,
            max_message_size_before_cer: 8192,
            max_pending_connections: 64,
            max_connections_per_source: 8,
            message_timeout: Duration::from_secs(10),
            max_buffered_bytes: 64 << 20,
            max_pending_requests: 65_536,
            max_connections: 256,
            dup_cache_entries: 16_384,
            // RFC 6733 §3: end-to-end ids stay unique for at least 4 minutes.
            dup_cache_ttl: Duration::from_secs(240),
            quick_ack: true,
            redirect_cache_entries: crate::redirect::DEFAULT_LIMIT,
            redirect_cache_max_time: crate::redirect::DEFAULT_MAX_TIME,
        }
    }
}

/// Settings of the shared-memory seam (`[app]`), read by the same typed reader as every
/// other section: an unknown or mistyped key is an error with its line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmSettings {
    /// The shared-memory segment's path.
    pub segment: PathBuf,
    /// The control socket the workers attach through.
    pub control_socket: PathBuf,
    /// How long a worker may take to reply to an incoming request.
    pub reply_timeout: Duration,
    /// How many workers can attach at once (one ring pair each).
    pub max_workers: u32,
    /// Each ring's size in bytes (rounded up to a power of two by the shm side).
    pub ring_size: u32,
    /// `group = "kamailio"` (a group name or a numeric gid): the segment and the control
    /// socket become 0660 with that group, so SIP-server workers running as another user of
    /// that group can attach. Without it both are owner-only (0600): DESIGN §5, permissions
    /// follow the SIP server's user. A name is looked up when the bridge starts.
    pub group: Option<GroupSpec>,
    /// `max_message_size = 262144` (bytes): the largest record in a ring — a request's JSON
    /// plus its parameters, or a reply. `None`: a quarter of `ring_size` (the shm side checks
    /// it against the ring: at most half).
    pub max_message_size: Option<u32>,
    /// `allow_users = ["kamailio", "1001"]`: users (names or numeric uids) whose processes
    /// may attach besides the bridge's own user (SO_PEERCRED uid, DESIGN §10). Names are
    /// looked up in /etc/passwd when the bridge starts (and by `check-config`).
    pub allow_users: Vec<String>,
    /// `allow_groups = ["opensips"]`: groups (names or gids) whose processes may attach, by
    /// the effective gid the kernel reports, besides `group`.
    pub allow_groups: Vec<String>,
    /// `busy_poll_us = 50`: after sending a worker's request to a peer, the bridge polls for
    /// the answer this long (without sleeping in epoll) when the recent round trips were
    /// shorter and it is the only request in flight; 0: never. Measured default:
    /// [`DEFAULT_BUSY_POLL`].
    pub busy_poll: Duration,
}

/// The default `[app] busy_poll_us`, chosen by measurement (BENCHMARKS.md "Session 10: the sync
/// round trip").
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(0);

/// A group as written in `[app] group`: a numeric gid, or a name to look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupSpec {
    /// `group = 123` or `group = "123"`.
    Gid(u32),
    /// `group = "kamailio"`.
    Name(String),
}

impl Default for ShmSettings {
    fn default() -> Self {
        ShmSettings {
            segment: PathBuf::from("/dev/shm/dmbridge"),
            control_socket: PathBuf::from("/run/dmbridge/control.sock"),
            reply_timeout: Duration::from_secs(5),
            max_workers: 64,
            ring_size: 1 << 20,
            group: None,
            max_message_size: None,
            allow_users: Vec::new(),
            allow_groups: Vec::new(),
            busy_poll: DEFAULT_BUSY_POLL,
        }
    }
}

/// `[log]`, `[metrics]`, `[admin]`: operating the running node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsSettings {
    /// `[log] level`: a `RUST_LOG`-style filter (`info`, `warn,dmnode::peer=debug`); the
    /// `RUST_LOG` environment variable wins over it. Default `info`.
    pub log_level: String,
    /// `[log] format`: `"text"` (default) or `"json"` lines.
    pub log_format: String,
    /// `[metrics] listen`: where the Prometheus exporter listens; `None` (default): off.
    pub metrics_listen: Option<SocketAddr>,
    /// `[admin] socket`: the admin socket (`dmbridge ctl`); default `admin.sock` beside
    /// `[app] control_socket`.
    pub admin_socket: Option<PathBuf>,
}

impl Default for OpsSettings {
    fn default() -> Self {
        OpsSettings {
            log_level: "info".into(),
            log_format: "text".into(),
            metrics_listen: None,
            admin_socket: None,
        }
    }
}

/// RFC 6733 DiameterIdentity: a FQDN or realm. We accept the DNS host-name alphabet (letters,
/// digits, `-`, `.`, and `_` which some deployments use) and refuse empty labels.
pub fn is_diameter_identity(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
