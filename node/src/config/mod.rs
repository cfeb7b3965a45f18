//! The node's configuration: one TOML file, checked as a whole.
//!
//! Why a hand-written walker over `toml_edit` instead of `#[derive(Deserialize)]`: serde stops
//! at the first error, and `dmbridge check-config` must print *every* error with its line (a
//! typo in one peer must not hide a bad address in the next). `toml_edit`'s `ImDocument` keeps
//! the byte span of every key and value, so each problem — syntax, type, range, or semantic
//! (unknown peer in a route, duplicate peer, bad address) — is reported where it is.
//!
//! Layout (see `cfg-examples/dmbridge.toml` for a commented example):
//!
//! ```toml
//! [node]          # origin_host, origin_realm, product_name, vendor_id, firmware_revision,
//!                 # listen, host_ip_addresses, allow_unknown_peers
//! [[applications]]  # id, kind = "auth"|"acct", vendor (=> Vendor-Specific-Application-Id)
//! [[peers]]       # host, address, port, mode = "connect"|"accept", transport = "tcp"
//! [[routes]]      # realm, app_id (optional), peers, priority
//! [default_route] # peers
//! [timers]        # tc, tw, answer_timeout, cer_timeout, dpa_timeout, drain_timeout
//! [limits]        # max_message_size, max_pending_requests, max_connections, dup_cache_*
//! [app]           # the shared-memory seam: segment, control_socket, reply_timeout, ...
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::{ImDocument, InlineTable, Item, Key, Table, Value};

/// The Diameter relay application id (RFC 6733 §2.4): a peer advertising it accepts every
/// application.
pub const RELAY_APP_ID: u32 = 0xffff_ffff;

/// The IANA port for Diameter over TCP/SCTP (RFC 6733 §2.1).
pub const DEFAULT_PORT: u16 = 3868;

/// One problem in a configuration file, with its 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    pub message: String,
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
    pub node: NodeConfig,
    pub applications: Vec<AppAdvert>,
    pub peers: Vec<PeerConfig>,
    pub routes: Vec<RouteConfig>,
    /// Peers (by host) used when neither Destination-Host nor the realm table decides.
    pub default_route: Vec<String>,
    pub timers: Timers,
    pub limits: Limits,
    pub app: ShmSettings,
}

/// Who this node is and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub origin_host: String,
    pub origin_realm: String,
    pub product_name: String,
    pub vendor_id: u32,
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
    Auth,
    Acct,
}

/// One advertised application. `vendor: Some(v)` advertises it inside a
/// Vendor-Specific-Application-Id with Vendor-Id `v` (as 3GPP applications require).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppAdvert {
    pub id: u32,
    pub kind: AppKind,
    pub vendor: Option<u32>,
}

/// Whether we open the connection to a peer or only wait for it to connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    Connect,
    AcceptOnly,
}

/// The transport to a peer. Only TCP today; the enum is the seam for TLS and SCTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
}

/// A peer's address as configured: an IP address, or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAddress {
    Ip(IpAddr),
    Name(String),
}

/// Where to connect to a peer. A name is resolved at every attempt (the driver's job), so
/// a peer that moves is found again on reconnection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
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
    pub port: u16,
    pub mode: PeerMode,
    pub transport: Transport,
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
    pub realm: String,
    /// `None`: any application.
    pub app_id: Option<u32>,
    pub peers: Vec<String>,
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
    /// How long we wait for a DPA before closing anyway.
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
            cer_timeout: Duration::from_secs(10),
            dpa_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Resource limits: every queue and cache in the node is bounded by one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_message_size: u32,
    pub max_pending_requests: usize,
    pub max_connections: usize,
    pub dup_cache_entries: usize,
    pub dup_cache_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 1 << 20,
            max_pending_requests: 65_536,
            max_connections: 256,
            dup_cache_entries: 16_384,
            // RFC 6733 §3: end-to-end ids stay unique for at least 4 minutes.
            dup_cache_ttl: Duration::from_secs(240),
        }
    }
}

/// Settings of the shared-memory seam. The known keys are typed; anything else in `[app]` is
/// kept, as raw TOML text, in `extra` for the shm side to interpret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmSettings {
    pub segment: PathBuf,
    pub control_socket: PathBuf,
    pub reply_timeout: Duration,
    pub max_workers: u32,
    pub ring_size: u32,
    pub extra: Vec<(String, String)>,
}

impl Default for ShmSettings {
    fn default() -> Self {
        ShmSettings {
            segment: PathBuf::from("/dev/shm/dmbridge"),
            control_socket: PathBuf::from("/run/dmbridge/control.sock"),
            reply_timeout: Duration::from_secs(5),
            max_workers: 64,
            ring_size: 1 << 20,
            extra: Vec::new(),
        }
    }
}

/// Every error in `text`, each with its line. Empty means the file is valid.
pub fn check(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

/// Parses and validates a configuration, returning every error found.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut cx = Cx {
        src: text,
        errors: Vec::new(),
    };
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            cx.error(e.span(), e.message().trim_end().to_string());
            return Err(cx.errors);
        }
    };
    let config = read_config(&mut cx, doc.as_table());
    if cx.errors.is_empty() {
        Ok(config)
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        Err(cx.errors)
    }
}

/// Collects errors and turns byte spans into lines.
struct Cx<'s> {
    src: &'s str,
    errors: Vec<ConfigError>,
}

impl Cx<'_> {
    fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let offset = span.map(|s| s.start).unwrap_or(0).min(self.src.len());
        let before = self.src.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        self.errors.push(ConfigError {
            line,
            column,
            message: message.into(),
        });
    }
}

/// A table or an inline table, with the name used in messages (`[node]`, `[[peers]] #2`).
#[derive(Clone, Copy)]
enum Tbl<'a> {
    Table(&'a Table),
    Inline(&'a InlineTable),
}

impl<'a> Tbl<'a> {
    fn of(item: &'a Item) -> Option<Tbl<'a>> {
        match item {
            Item::Table(t) => Some(Tbl::Table(t)),
            Item::Value(Value::InlineTable(t)) => Some(Tbl::Inline(t)),
            _ => None,
        }
    }

    fn span(&self) -> Option<Range<usize>> {
        match self {
            Tbl::Table(t) => t.span(),
            Tbl::Inline(t) => t.span(),
        }
    }

    fn get(&self, key: &str) -> Option<(&'a Key, &'a Item)> {
        match self {
            Tbl::Table(t) => t.get_key_value(key),
            Tbl::Inline(t) => t.get_key_value(key),
        }
    }

    fn keys(&self) -> Vec<(&'a Key, &'a Item)> {
        match self {
            Tbl::Table(t) => t.iter().filter_map(|(k, _)| t.get_key_value(k)).collect(),
            Tbl::Inline(t) => t.iter().filter_map(|(k, _)| t.get_key_value(k)).collect(),
        }
    }
}

/// Reads the keys of one table, remembering which were known so the rest can be reported.
struct Section<'a> {
    tbl: Tbl<'a>,
    name: String,
    known: &'static [&'static str],
}

impl<'a> Section<'a> {
    fn new(cx: &mut Cx<'_>, tbl: Tbl<'a>, name: String, known: &'static [&'static str]) -> Self {
        for (key, _) in tbl.keys() {
            if !known.contains(&key.get()) {
                cx.error(
                    key.span(),
                    format!(
                        "unknown key `{}` in {name} (known: {})",
                        key.get(),
                        known.join(", ")
                    ),
                );
            }
        }
        Section { tbl, name, known }
    }

    fn item(&self, key: &str) -> Option<(Option<Range<usize>>, &'a Item)> {
        debug_assert!(self.known.contains(&key));
        self.tbl.get(key).map(|(_, item)| (item.span(), item))
    }

    fn missing(&self, cx: &mut Cx<'_>, key: &str) {
        cx.error(
            self.tbl.span(),
            format!("{} is missing required key `{key}`", self.name),
        );
    }

    fn string(&self, cx: &mut Cx<'_>, key: &str) -> Option<String> {
        let (span, item) = self.item(key)?;
        match item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                cx.error(span, format!("`{key}` in {} must be a string", self.name));
                None
            }
        }
    }

    fn required_string(&self, cx: &mut Cx<'_>, key: &str) -> Option<String> {
        if self.item(key).is_none() {
            self.missing(cx, key);
            return None;
        }
        self.string(cx, key)
    }

    fn bool(&self, cx: &mut Cx<'_>, key: &str) -> Option<bool> {
        let (span, item) = self.item(key)?;
        let b = item.as_bool();
        if b.is_none() {
            cx.error(
                span,
                format!("`{key}` in {} must be true or false", self.name),
            );
        }
        b
    }

    /// An integer in `min..=max`.
    fn int(&self, cx: &mut Cx<'_>, key: &str, min: i64, max: i64) -> Option<i64> {
        let (span, item) = self.item(key)?;
        match item.as_integer() {
            Some(v) if (min..=max).contains(&v) => Some(v),
            Some(v) => {
                cx.error(span, format!("`{key}` = {v} is out of range {min}..={max}"));
                None
            }
            None => {
                cx.error(span, format!("`{key}` in {} must be an integer", self.name));
                None
            }
        }
    }

    fn u32(&self, cx: &mut Cx<'_>, key: &str) -> Option<u32> {
        self.int(cx, key, 0, u32::MAX.into())
            .and_then(|v| u32::try_from(v).ok())
    }

    /// A duration: an integer number of seconds, or a string with a unit (`"500ms"`, `"30s"`,
    /// `"2m"`, `"1h"`). Must be positive.
    fn duration(&self, cx: &mut Cx<'_>, key: &str) -> Option<Duration> {
        let (span, item) = self.item(key)?;
        let d = match (item.as_integer(), item.as_str()) {
            (Some(secs), _) => u64::try_from(secs).ok().map(Duration::from_secs),
            (_, Some(s)) => parse_duration(s),
            _ => None,
        };
        match d {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                cx.error(
                    span,
                    format!(
                        "`{key}` must be a positive duration: seconds, or a string like \"500ms\", \"30s\", \"2m\""
                    ),
                );
                None
            }
        }
    }

    fn strings(&self, cx: &mut Cx<'_>, key: &str) -> Option<Vec<(String, Option<Range<usize>>)>> {
        let (span, item) = self.item(key)?;
        let Some(array) = item.as_array() else {
            cx.error(
                span,
                format!("`{key}` in {} must be an array of strings", self.name),
            );
            return None;
        };
        let mut out = Vec::new();
        for v in array.iter() {
            match v.as_str() {
                Some(s) => out.push((s.to_string(), v.span())),
                None => cx.error(v.span(), format!("`{key}` entries must be strings")),
            }
        }
        Some(out)
    }

    fn path(&self, cx: &mut Cx<'_>, key: &str) -> Option<PathBuf> {
        let (span, _) = self.item(key)?;
        let s = self.string(cx, key)?;
        if s.is_empty() {
            cx.error(span, format!("`{key}` must not be empty"));
            return None;
        }
        Some(PathBuf::from(s))
    }
}

/// `"500ms"`, `"30s"`, `"2m"`, `"1h"`, or bare seconds `"30"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
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

/// The sub-tables of an array-of-tables key (`[[peers]]`), also accepting an inline array of
/// inline tables (`peers = [{...}]`).
fn table_list<'a>(cx: &mut Cx<'_>, root: Tbl<'a>, key: &str) -> Vec<Tbl<'a>> {
    let Some((_, item)) = root.get(key) else {
        return Vec::new();
    };
    match item {
        Item::ArrayOfTables(list) => list.iter().map(Tbl::Table).collect(),
        Item::Value(Value::Array(array)) => {
            let mut out = Vec::new();
            for v in array.iter() {
                match v {
                    Value::InlineTable(t) => out.push(Tbl::Inline(t)),
                    other => cx.error(other.span(), format!("`{key}` entries must be tables")),
                }
            }
            out
        }
        other => {
            cx.error(
                other.span(),
                format!("`{key}` must be written as [[{key}]] tables"),
            );
            Vec::new()
        }
    }
}

fn sub_table<'a>(cx: &mut Cx<'_>, root: Tbl<'a>, key: &str) -> Option<Tbl<'a>> {
    let (_, item) = root.get(key)?;
    let t = Tbl::of(item);
    if t.is_none() {
        cx.error(item.span(), format!("`{key}` must be a table ([{key}])"));
    }
    t
}

const ROOT_KEYS: &[&str] = &[
    "node",
    "applications",
    "peers",
    "routes",
    "default_route",
    "timers",
    "limits",
    "app",
];
const NODE_KEYS: &[&str] = &[
    "origin_host",
    "origin_realm",
    "product_name",
    "vendor_id",
    "firmware_revision",
    "listen",
    "host_ip_addresses",
    "allow_unknown_peers",
    "destination_realm",
    "dictionaries",
];
const APP_KEYS: &[&str] = &["id", "kind", "vendor"];
const PEER_KEYS: &[&str] = &["host", "address", "port", "mode", "transport"];
const ROUTE_KEYS: &[&str] = &["realm", "app_id", "peers", "priority"];
const DEFAULT_ROUTE_KEYS: &[&str] = &["peers"];
const TIMER_KEYS: &[&str] = &[
    "tc",
    "tw",
    "answer_timeout",
    "cer_timeout",
    "dpa_timeout",
    "drain_timeout",
];
const LIMIT_KEYS: &[&str] = &[
    "max_message_size",
    "max_pending_requests",
    "max_connections",
    "dup_cache_entries",
    "dup_cache_ttl",
];
const SHM_KEYS: &[&str] = &[
    "segment",
    "control_socket",
    "reply_timeout",
    "max_workers",
    "ring_size",
];

fn read_config(cx: &mut Cx<'_>, root: &Table) -> Config {
    let root = Tbl::Table(root);
    Section::new(cx, root, "the file".into(), ROOT_KEYS);

    let node = read_node(cx, root);
    let applications = read_applications(cx, root);
    let (peers, peer_names) = read_peers(cx, root);
    let routes = read_routes(cx, root, &peer_names);
    let default_route = read_default_route(cx, root, &peer_names);
    let timers = read_timers(cx, root);
    let limits = read_limits(cx, root);
    let app = read_shm(cx, root);
    Config {
        node,
        applications,
        peers,
        routes,
        default_route,
        timers,
        limits,
        app,
    }
}

fn identity(cx: &mut Cx<'_>, s: &Section<'_>, key: &str, required: bool) -> Option<String> {
    let v = if required {
        s.required_string(cx, key)
    } else {
        s.string(cx, key)
    }?;
    if !is_diameter_identity(&v) {
        let span = s.item(key).and_then(|(span, _)| span);
        cx.error(
            span,
            format!("`{key}` = {v:?} is not a valid DiameterIdentity (FQDN)"),
        );
        return None;
    }
    Some(v)
}

fn read_node(cx: &mut Cx<'_>, root: Tbl<'_>) -> NodeConfig {
    let mut node = NodeConfig {
        origin_host: String::new(),
        origin_realm: String::new(),
        product_name: "dmbridge".into(),
        vendor_id: 0,
        firmware_revision: None,
        listen: vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))],
        host_ip_addresses: Vec::new(),
        allow_unknown_peers: false,
        destination_realm: None,
        dictionaries: Vec::new(),
    };
    let Some(tbl) = sub_table(cx, root, "node") else {
        if root.get("node").is_none() {
            cx.error(None, "missing [node] table (origin_host, origin_realm)");
        }
        return node;
    };
    let s = Section::new(cx, tbl, "[node]".into(), NODE_KEYS);
    node.origin_host = identity(cx, &s, "origin_host", true).unwrap_or_default();
    node.origin_realm = identity(cx, &s, "origin_realm", true).unwrap_or_default();
    if let Some(p) = s.string(cx, "product_name") {
        if p.is_empty() {
            cx.error(
                s.item("product_name").and_then(|i| i.0),
                "`product_name` must not be empty",
            );
        }
        node.product_name = p;
    }
    if let Some(v) = s.u32(cx, "vendor_id") {
        node.vendor_id = v;
    }
    node.firmware_revision = s.u32(cx, "firmware_revision");
    if let Some(list) = s.strings(cx, "listen") {
        node.listen.clear();
        for (text, span) in list {
            match text.parse::<SocketAddr>() {
                Ok(addr) if node.listen.contains(&addr) => {
                    cx.error(span, format!("listen address {text} is given twice"))
                }
                Ok(addr) => node.listen.push(addr),
                Err(_) => cx.error(
                    span,
                    format!(
                        "bad listen address {text:?}: expected IP:PORT, e.g. \"0.0.0.0:3868\" or \"[::]:3868\""
                    ),
                ),
            }
        }
    }
    if let Some(list) = s.strings(cx, "host_ip_addresses") {
        for (text, span) in list {
            match text.parse::<IpAddr>() {
                Ok(ip) => node.host_ip_addresses.push(ip),
                Err(_) => cx.error(span, format!("bad IP address {text:?}")),
            }
        }
    }
    if let Some(b) = s.bool(cx, "allow_unknown_peers") {
        node.allow_unknown_peers = b;
    }
    node.destination_realm = identity(cx, &s, "destination_realm", false);
    if let Some(list) = s.strings(cx, "dictionaries") {
        for (path, span) in list {
            if path.is_empty() {
                cx.error(span, "empty dictionary path");
            } else {
                node.dictionaries.push(PathBuf::from(path));
            }
        }
    }
    node
}

fn read_applications(cx: &mut Cx<'_>, root: Tbl<'_>) -> Vec<AppAdvert> {
    let tables = table_list(cx, root, "applications");
    if tables.is_empty() && root.get("applications").is_none() {
        cx.error(
            None,
            "no [[applications]] advertised: every peer would answer CER with 5010 DIAMETER_NO_COMMON_APPLICATION",
        );
    }
    let mut apps: Vec<AppAdvert> = Vec::new();
    for (i, tbl) in tables.into_iter().enumerate() {
        let s = Section::new(cx, tbl, format!("[[applications]] #{}", i + 1), APP_KEYS);
        let id = if s.item("id").is_none() {
            s.missing(cx, "id");
            None
        } else {
            s.u32(cx, "id")
        };
        let kind = match s.string(cx, "kind").as_deref() {
            None | Some("auth") => Some(AppKind::Auth),
            Some("acct") => Some(AppKind::Acct),
            Some(other) => {
                let span = s.item("kind").and_then(|i| i.0);
                cx.error(
                    span,
                    format!("`kind` = {other:?}: expected \"auth\" or \"acct\""),
                );
                None
            }
        };
        let vendor = s.u32(cx, "vendor");
        if let (Some(id), Some(kind)) = (id, kind) {
            let app = AppAdvert { id, kind, vendor };
            if apps.iter().any(|a| a.id == id && a.kind == kind) {
                cx.error(tbl.span(), format!("application {id} is advertised twice"));
            } else {
                apps.push(app);
            }
        }
    }
    apps
}

/// The valid peers, and the host names of all `[[peers]]` entries whose host was readable:
/// routes are checked against the names, so a peer with a bad address is reported once, not
/// again as "unknown" in every route that names it.
fn read_peers(cx: &mut Cx<'_>, root: Tbl<'_>) -> (Vec<PeerConfig>, Vec<String>) {
    let mut peers: Vec<PeerConfig> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, tbl) in table_list(cx, root, "peers").into_iter().enumerate() {
        let s = Section::new(cx, tbl, format!("[[peers]] #{}", i + 1), PEER_KEYS);
        let host = identity(cx, &s, "host", true);
        let mode = match s.string(cx, "mode").as_deref() {
            None | Some("connect") => Some(PeerMode::Connect),
            Some("accept") => Some(PeerMode::AcceptOnly),
            Some(other) => {
                let span = s.item("mode").and_then(|i| i.0);
                cx.error(
                    span,
                    format!("`mode` = {other:?}: expected \"connect\" or \"accept\""),
                );
                None
            }
        };
        let transport = match s.string(cx, "transport").as_deref() {
            None | Some("tcp") => Some(Transport::Tcp),
            Some(t @ ("tls" | "sctp")) => {
                let span = s.item("transport").and_then(|i| i.0);
                cx.error(
                    span,
                    format!("transport {t:?} is not supported yet (only \"tcp\")"),
                );
                None
            }
            Some(other) => {
                let span = s.item("transport").and_then(|i| i.0);
                cx.error(span, format!("`transport` = {other:?}: expected \"tcp\""));
                None
            }
        };
        let address = match s.string(cx, "address") {
            None => None,
            Some(text) => match parse_peer_address(&text) {
                Some(a) => Some(a),
                None => {
                    let span = s.item("address").and_then(|i| i.0);
                    cx.error(
                        span,
                        format!(
                            "bad address {text:?}: expected an IPv4 or IPv6 address or a host name"
                        ),
                    );
                    None
                }
            },
        };
        let port = match s.item("port") {
            None => Some(DEFAULT_PORT),
            Some(_) => s
                .int(cx, "port", 1, 65535)
                .and_then(|p| u16::try_from(p).ok()),
        };
        if mode == Some(PeerMode::Connect) && s.item("address").is_none() {
            cx.error(
                tbl.span(),
                format!(
                    "{} has mode \"connect\" but no `address` (use mode = \"accept\" for peers that connect to us)",
                    s.name
                ),
            );
        }
        let Some(host) = host else { continue };
        if names.iter().any(|n| n.eq_ignore_ascii_case(&host)) {
            let host_span = s.item("host").and_then(|i| i.0);
            cx.error(host_span, format!("duplicate peer {host:?}"));
            continue;
        }
        names.push(host.clone());
        let (Some(mode), Some(transport), Some(port)) = (mode, transport, port) else {
            continue;
        };
        if s.item("address").is_some() && address.is_none() {
            continue;
        }
        peers.push(PeerConfig {
            host,
            address,
            port,
            mode,
            transport,
        });
    }
    (peers, names)
}

fn peer_refs(cx: &mut Cx<'_>, s: &Section<'_>, peers: &[String], what: &str) -> Vec<String> {
    let Some(list) = s.strings(cx, "peers") else {
        s.missing(cx, "peers");
        return Vec::new();
    };
    if list.is_empty() {
        let span = s.item("peers").and_then(|i| i.0);
        cx.error(span, format!("{what} has an empty `peers` list"));
    }
    let mut out: Vec<String> = Vec::new();
    for (name, span) in list {
        match peers.iter().find(|p| p.eq_ignore_ascii_case(&name)) {
            None => cx.error(
                span,
                format!("unknown peer {name:?} in {what} (not in [[peers]])"),
            ),
            Some(p) if out.contains(p) => {
                cx.error(span, format!("peer {name:?} is listed twice in {what}"))
            }
            Some(p) => out.push(p.clone()),
        }
    }
    out
}

fn read_routes(cx: &mut Cx<'_>, root: Tbl<'_>, peers: &[String]) -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    for (i, tbl) in table_list(cx, root, "routes").into_iter().enumerate() {
        let name = format!("[[routes]] #{}", i + 1);
        let s = Section::new(cx, tbl, name.clone(), ROUTE_KEYS);
        let realm = identity(cx, &s, "realm", true);
        let app_id = s.u32(cx, "app_id");
        let priority = s.u32(cx, "priority").unwrap_or(0);
        let refs = peer_refs(cx, &s, peers, &name);
        if let Some(realm) = realm {
            routes.push(RouteConfig {
                realm,
                app_id,
                peers: refs,
                priority,
            });
        }
    }
    routes
}

fn read_default_route(cx: &mut Cx<'_>, root: Tbl<'_>, peers: &[String]) -> Vec<String> {
    let Some(tbl) = sub_table(cx, root, "default_route") else {
        return Vec::new();
    };
    let s = Section::new(cx, tbl, "[default_route]".into(), DEFAULT_ROUTE_KEYS);
    peer_refs(cx, &s, peers, "[default_route]")
}

fn read_timers(cx: &mut Cx<'_>, root: Tbl<'_>) -> Timers {
    let mut t = Timers::default();
    let Some(tbl) = sub_table(cx, root, "timers") else {
        return t;
    };
    let s = Section::new(cx, tbl, "[timers]".into(), TIMER_KEYS);
    let fields: [(&str, &mut Duration); 6] = [
        ("tc", &mut t.tc),
        ("tw", &mut t.tw),
        ("answer_timeout", &mut t.answer_timeout),
        ("cer_timeout", &mut t.cer_timeout),
        ("dpa_timeout", &mut t.dpa_timeout),
        ("drain_timeout", &mut t.drain_timeout),
    ];
    for (key, slot) in fields {
        if let Some(d) = s.duration(cx, key) {
            *slot = d;
        }
    }
    if t.tw < Duration::from_secs(6) {
        let span = s.item("tw").and_then(|i| i.0);
        cx.error(span, "`tw` must be at least 6s (RFC 3539 §3.4.1)");
    }
    t
}

fn read_limits(cx: &mut Cx<'_>, root: Tbl<'_>) -> Limits {
    let mut l = Limits::default();
    let Some(tbl) = sub_table(cx, root, "limits") else {
        return l;
    };
    let s = Section::new(cx, tbl, "[limits]".into(), LIMIT_KEYS);
    // The Diameter header's length field is 24 bits; 4 KiB is the floor so CER/CEA fit.
    if let Some(v) = s.int(cx, "max_message_size", 4096, 0xff_ffff) {
        l.max_message_size = u32::try_from(v).unwrap_or(l.max_message_size);
    }
    let count = |cx: &mut Cx<'_>, key: &str| {
        s.int(cx, key, 1, 100_000_000)
            .and_then(|v| usize::try_from(v).ok())
    };
    if let Some(v) = count(cx, "max_pending_requests") {
        l.max_pending_requests = v;
    }
    if let Some(v) = count(cx, "max_connections") {
        l.max_connections = v;
    }
    if let Some(v) = count(cx, "dup_cache_entries") {
        l.dup_cache_entries = v;
    }
    if let Some(v) = s.duration(cx, "dup_cache_ttl") {
        l.dup_cache_ttl = v;
    }
    l
}

fn read_shm(cx: &mut Cx<'_>, root: Tbl<'_>) -> ShmSettings {
    let mut shm = ShmSettings::default();
    let Some(tbl) = sub_table(cx, root, "app") else {
        return shm;
    };
    // Unknown keys are the shm side's business: keep them, do not report them.
    for (key, item) in tbl.keys() {
        if !SHM_KEYS.contains(&key.get()) {
            let raw = item.span().and_then(|r| cx.src.get(r)).unwrap_or("");
            shm.extra
                .push((key.get().to_string(), raw.trim().to_string()));
        }
    }
    let s = Section {
        tbl,
        name: "[app]".into(),
        known: SHM_KEYS,
    };
    if let Some(p) = s.path(cx, "segment") {
        shm.segment = p;
    }
    if let Some(p) = s.path(cx, "control_socket") {
        shm.control_socket = p;
    }
    if let Some(d) = s.duration(cx, "reply_timeout") {
        shm.reply_timeout = d;
    }
    if let Some(v) = s.int(cx, "max_workers", 1, 4096) {
        shm.max_workers = u32::try_from(v).unwrap_or(shm.max_workers);
    }
    if let Some(v) = s.int(cx, "ring_size", 4096, 1 << 30) {
        shm.ring_size = u32::try_from(v).unwrap_or(shm.ring_size);
    }
    shm
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
origin_host = "bridge.example.net"
origin_realm = "example.net"
vendor_id = 10415
listen = ["127.0.0.1:3868", "[::1]:3868"]

[[applications]]
id = 16777216
vendor = 10415

[[applications]]
id = 3
kind = "acct"

[[peers]]
host = "hss1.example.net"
address = "192.0.2.10"

[[peers]]
host = "hss2.example.net"
address = "2001:db8::2"
port = 3869

[[peers]]
host = "pcrf.example.net"
mode = "accept"

[[routes]]
realm = "example.net"
app_id = 16777216
peers = ["hss1.example.net", "hss2.example.net"]
priority = 1

[default_route]
peers = ["hss1.example.net"]

[timers]
tc = "10s"
answer_timeout = "1500ms"
tw = 6

[limits]
max_pending_requests = 100

[app]
segment = "/dev/shm/dm-test"
ring_size = 65536
something_else = { a = 1 }
"#;

    #[test]
    fn good_config_parses_with_every_section() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.node.origin_host, "bridge.example.net");
        assert_eq!(c.node.vendor_id, 10415);
        assert_eq!(c.node.listen.len(), 2);
        assert!(c.node.listen[1].is_ipv6());
        assert_eq!(
            c.applications,
            vec![
                AppAdvert {
                    id: 16777216,
                    kind: AppKind::Auth,
                    vendor: Some(10415)
                },
                AppAdvert {
                    id: 3,
                    kind: AppKind::Acct,
                    vendor: None
                },
            ]
        );
        assert_eq!(c.peers.len(), 3);
        assert_eq!(
            c.peers[1].endpoint(),
            Some(Endpoint::Addr("[2001:db8::2]:3869".parse().unwrap()))
        );
        assert_eq!(c.peers[2].mode, PeerMode::AcceptOnly);
        assert_eq!(c.peers[0].port, DEFAULT_PORT);
        assert_eq!(c.routes[0].app_id, Some(16777216));
        assert_eq!(c.routes[0].priority, 1);
        assert_eq!(c.default_route, vec!["hss1.example.net".to_string()]);
        assert_eq!(c.timers.tc, Duration::from_secs(10));
        assert_eq!(c.timers.answer_timeout, Duration::from_millis(1500));
        assert_eq!(c.timers.tw, Duration::from_secs(6));
        assert_eq!(c.timers.dpa_timeout, Timers::default().dpa_timeout);
        assert_eq!(c.limits.max_pending_requests, 100);
        assert_eq!(c.app.ring_size, 65536);
        assert_eq!(
            c.app.extra,
            vec![("something_else".into(), "{ a = 1 }".into())]
        );
        assert!(check(GOOD).is_empty());
    }

    fn lines(text: &str) -> Vec<(usize, String)> {
        check(text)
            .into_iter()
            .map(|e| (e.line, e.message))
            .collect()
    }

    #[test]
    fn syntax_error_has_its_line() {
        let errs = lines("[node]\norigin_host = \"a\"\norigin_realm = = \"b\"\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, 3);
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_line() {
        let text = r#"[node]
origin_host = "bridge.example.net"
origin_realm = "bad realm"
listen = ["1.2.3.4"]
[[applications]]
id = 4
[[peers]]
host = "a.example.net"
address = "192.0.2.300"
[[peers]]
host = "A.example.net"
address = "192.0.2.1"
[[peers]]
host = "c.example.net"
[[routes]]
realm = "example.net"
peers = ["a.example.net", "nobody.example.net"]
[timers]
tw = "2s"
colour = "blue"
"#;
        let errs = lines(text);
        let at = |line: usize, needle: &str| {
            assert!(
                errs.iter().any(|(l, m)| *l == line && m.contains(needle)),
                "no error containing {needle:?} on line {line}: {errs:#?}"
            )
        };
        at(3, "not a valid DiameterIdentity");
        at(4, "bad listen address");
        at(9, "bad address");
        at(11, "duplicate peer");
        at(13, "no `address`");
        at(17, "unknown peer \"nobody.example.net\"");
        at(19, "at least 6s");
        at(20, "unknown key `colour`");
        // "a.example.net" has a bad address, reported once: not again as unknown in the route.
        assert_eq!(errs.len(), 8, "{errs:#?}");
    }

    #[test]
    fn type_and_range_errors() {
        let text = r#"[node]
origin_host = 5
origin_realm = "r.net"
vendor_id = -1
[[applications]]
kind = "both"
[[peers]]
host = "p.net"
address = "192.0.2.1"
port = 70000
transport = "sctp"
[limits]
max_message_size = 10
[timers]
tc = "3 fortnights"
"#;
        let errs = lines(text);
        let at = |line: usize, needle: &str| {
            assert!(
                errs.iter().any(|(l, m)| *l == line && m.contains(needle)),
                "no error containing {needle:?} on line {line}: {errs:#?}"
            )
        };
        at(2, "must be a string");
        at(4, "out of range");
        at(5, "missing required key `id`");
        at(6, "expected \"auth\" or \"acct\"");
        at(10, "out of range");
        at(11, "not supported yet");
        at(13, "out of range");
        at(15, "positive duration");
    }

    #[test]
    fn missing_node_and_applications_are_reported() {
        let errs = lines("");
        assert!(errs.iter().any(|(_, m)| m.contains("missing [node]")));
        assert!(errs.iter().any(|(_, m)| m.contains("no [[applications]]")));
    }

    #[test]
    fn inline_peer_tables_are_accepted() {
        let text = r#"
applications = [{ id = 4 }]
peers = [{ host = "p.net", address = "::1" }]
[node]
origin_host = "h.net"
origin_realm = "net"
"#;
        let c = parse(text).unwrap();
        assert_eq!(
            c.peers[0].address,
            Some(PeerAddress::Ip("::1".parse().unwrap()))
        );
    }

    #[test]
    fn peer_addresses_are_ips_or_host_names() {
        assert_eq!(
            parse_peer_address("192.0.2.1"),
            Some(PeerAddress::Ip([192, 0, 2, 1].into()))
        );
        assert!(matches!(
            parse_peer_address("2001:db8::1"),
            Some(PeerAddress::Ip(_))
        ));
        assert_eq!(
            parse_peer_address("hss1.ims.example.net"),
            Some(PeerAddress::Name("hss1.ims.example.net".into()))
        );
        for bad in [
            "192.0.2.300",
            "1.2.3",
            "2001:db8::zz",
            "a b",
            "",
            "host..net",
        ] {
            assert_eq!(parse_peer_address(bad), None, "{bad:?}");
        }
        let text = r#"
applications = [{ id = 4 }]
peers = [{ host = "p.net", address = "localhost", port = 3999 }]
[node]
origin_host = "h.net"
origin_realm = "net"
"#;
        let c = parse(text).unwrap();
        assert_eq!(
            c.peers[0].endpoint(),
            Some(Endpoint::Name {
                host: "localhost".into(),
                port: 3999
            })
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration("ms"), None);
    }

    #[test]
    fn identities() {
        assert!(is_diameter_identity(
            "hss-1.ims.mnc001.mcc001.3gppnetwork.org"
        ));
        assert!(!is_diameter_identity("a..b"));
        assert!(!is_diameter_identity("a b"));
        assert!(!is_diameter_identity(""));
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../cfg-examples/dmbridge.toml");
        assert_eq!(check(text), Vec::new());
    }
}
