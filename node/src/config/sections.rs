//! One reader per section of the file (`[node]`, `[[applications]]`, `[[peers]]`,
//! `[[routes]]`, `[default_route]`, `[timers]`, `[limits]`, `[app]`), each with the keys it
//! knows; semantic checks across sections (routes naming unknown peers) happen here too.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::Table;

use super::model::*;
use super::reader::{sub_table, table_list, Cx, Section, Tbl};
use crate::rules::RuleSet;

const ROOT_KEYS: &[&str] = &[
    "node",
    "applications",
    "peers",
    "routes",
    "default_route",
    "timers",
    "limits",
    "app",
    "log",
    "metrics",
    "admin",
    "routing",
    "tls",
    // read by the bridge, not the node (dmrun::config_file::scheduling)
    "scheduling",
];
const ROUTING_KEYS: &[&str] = &["relay", "rules", "rules_file"];
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
const PEER_KEYS: &[&str] = &[
    "host",
    "address",
    "port",
    "mode",
    "transport",
    "tls_verify_host",
    "tls_ca",
    "tls_pin",
    "tls_inband",
];
const TLS_KEYS: &[&str] = &[
    "ca_file",
    "cert_file",
    "key_file",
    "listen",
    "handshake_timeout",
];
/// The TLS port by convention (RFC 6733 §13, IANA "diameters").
pub const DEFAULT_TLS_PORT: u16 = 5658;
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
    "max_message_size_before_cer",
    "max_pending_connections",
    "max_connections_per_source",
    "message_timeout",
    "max_buffered_bytes",
    "max_pending_requests",
    "max_connections",
    "dup_cache_entries",
    "dup_cache_ttl",
    "quick_ack",
    "redirect_cache_entries",
    "redirect_cache_max_time",
];
const LOG_KEYS: &[&str] = &["level", "format"];
const METRICS_KEYS: &[&str] = &["listen"];
const ADMIN_KEYS: &[&str] = &["socket"];
const SHM_KEYS: &[&str] = &[
    "segment",
    "control_socket",
    "reply_timeout",
    "max_workers",
    "ring_size",
    "group",
    "max_message_size",
    "allow_users",
    "allow_groups",
    "busy_poll_us",
];

pub(super) fn read_config(cx: &mut Cx<'_>, root: &Table) -> Config {
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
    let ops = read_ops(cx, root);
    let routing = read_routing(cx, root);
    let tls = read_tls(cx, root);
    if tls.is_none() && peers.iter().any(|p| p.transport == Transport::Tls) {
        cx.error(
            None,
            "a peer has transport = \"tls\" but there is no [tls] section",
        );
    }
    if tls.is_none() {
        if let Some(p) = peers.iter().find(|p| p.tls_inband) {
            cx.error(
                None,
                format!(
                    "peer {} has tls_inband = true but there is no [tls] section (the in-band handshake needs its certificate and CA)",
                    p.host
                ),
            );
        }
    }
    Config {
        routing,
        tls,
        node,
        applications,
        peers,
        routes,
        default_route,
        timers,
        limits,
        app,
        ops,
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
            Some("tls") => Some(Transport::Tls),
            Some("sctp") => {
                let span = s.item("transport").and_then(|i| i.0);
                cx.error(
                    span,
                    "transport \"sctp\" is not supported yet (only \"tcp\" and \"tls\")",
                );
                None
            }
            Some(other) => {
                let span = s.item("transport").and_then(|i| i.0);
                cx.error(
                    span,
                    format!("`transport` = {other:?}: expected \"tcp\" or \"tls\""),
                );
                None
            }
        };
        let tls_verify_host = s.bool(cx, "tls_verify_host").unwrap_or(true);
        let tls_ca = s.string(cx, "tls_ca");
        let tls_inband = s.bool(cx, "tls_inband").unwrap_or(false);
        if tls_inband && transport == Some(Transport::Tls) {
            let span = s.item("tls_inband").and_then(|i| i.0);
            cx.error(
                span,
                "tls_inband = true needs transport = \"tcp\": in-band TLS starts on a plain connection after CER/CEA (transport = \"tls\" is TLS from the first byte)",
            );
        }
        let tls_pin = match s.string(cx, "tls_pin") {
            None => None,
            Some(text) => match parse_pin(&text) {
                Some(p) => Some(p),
                None => {
                    let span = s.item("tls_pin").and_then(|i| i.0);
                    cx.error(
                        span,
                        format!("bad tls_pin {text:?}: expected \"sha256:\" and 64 hex digits"),
                    );
                    None
                }
            },
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
            None if transport == Some(Transport::Tls) => Some(DEFAULT_TLS_PORT),
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
            tls_verify_host,
            tls_ca,
            tls_pin,
            tls_inband,
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

/// `[routing]`: `relay` (RFC 6733 §6.1.8 relay agent mode, off by default).
fn read_routing(cx: &mut Cx<'_>, root: Tbl<'_>) -> Routing {
    let mut r = Routing::default();
    let Some(tbl) = sub_table(cx, root, "routing") else {
        return r;
    };
    let s = Section::new(cx, tbl, "[routing]".into(), ROUTING_KEYS);
    r.relay = s.bool(cx, "relay").unwrap_or(false);
    r.rules_file = s.path(cx, "rules_file");
    if let Some((span, _)) = s.item("rules") {
        if r.rules_file.is_some() {
            cx.error(
                span.clone(),
                "[routing] takes `rules` or `rules_file`, not both",
            );
        }
        if let Some(text) = s.string(cx, "rules") {
            r.rules = inline_rules(cx, span, &text);
        }
    }
    r
}

/// `rules = """..."""`: parsed, each bad rule reported at its line in the configuration file
/// (the string's first line, plus one when the newline after the opening delimiter is
/// trimmed, as TOML does for multi-line strings).
fn inline_rules(cx: &mut Cx<'_>, span: Option<std::ops::Range<usize>>, text: &str) -> RuleSet {
    match crate::rules::parse(text) {
        Ok(r) => r,
        Err(errors) => {
            let start = span.map_or(0, |s| s.start).min(cx.src.len());
            let raw = &cx.src[start..];
            let first = cx.src[..start].matches('\n').count() + 1;
            let trimmed = (raw.starts_with("\"\"\"") || raw.starts_with("'''"))
                && (raw[3..].starts_with('\n') || raw[3..].starts_with("\r\n"));
            for e in errors {
                cx.errors.push(ConfigError {
                    line: first + e.line - 1 + usize::from(trimmed),
                    column: e.column,
                    message: format!("[routing] rules: {}", e.message),
                });
            }
            RuleSet::default()
        }
    }
}

/// `sha256:` and 64 hex digits (colons allowed between bytes, as tools print them).
pub fn parse_pin(text: &str) -> Option<[u8; 32]> {
    let hex: String = text
        .strip_prefix("sha256:")?
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn read_tls(cx: &mut Cx<'_>, root: Tbl<'_>) -> Option<TlsConfig> {
    let tbl = sub_table(cx, root, "tls")?;
    let s = Section::new(cx, tbl, "[tls]".into(), TLS_KEYS);
    let ca = s.required_string(cx, "ca_file");
    let cert = s.required_string(cx, "cert_file");
    let key = s.required_string(cx, "key_file");
    let mut listen = Vec::new();
    for (text, span) in s.strings(cx, "listen").unwrap_or_default() {
        match text.parse::<SocketAddr>() {
            Ok(a) if listen.contains(&a) => {
                cx.error(span, format!("TLS listen address {text} is given twice"))
            }
            Ok(a) => listen.push(a),
            Err(_) => cx.error(
                span,
                format!("bad TLS listen address {text:?}: expected IP:PORT, e.g. \"0.0.0.0:5658\""),
            ),
        }
    }
    let handshake_timeout = s
        .duration(cx, "handshake_timeout")
        .unwrap_or(Duration::from_secs(5));
    Some(TlsConfig {
        ca_file: PathBuf::from(ca?),
        cert_file: PathBuf::from(cert?),
        key_file: PathBuf::from(key?),
        listen,
        handshake_timeout,
    })
}

/// Settings that are valid but risky on a port reachable by strangers (DESIGN §10);
/// `check-config` prints them as warnings. The node starts anyway.
pub fn warnings(c: &Config) -> Vec<String> {
    let mut w = Vec::new();
    let l = &c.limits;
    if l.max_message_size > 4 << 20 {
        w.push(format!(
            "[limits] max_message_size = {} bytes: every open connection may make the node buffer that much (no real peer sends more than a few hundred kB)",
            l.max_message_size
        ));
    }
    if l.max_message_size_before_cer > 64 << 10 {
        w.push(format!(
            "[limits] max_message_size_before_cer = {} bytes: a CER fits in a few kB; strangers may make the node buffer this much each",
            l.max_message_size_before_cer
        ));
    }
    if l.max_pending_connections > 1024 {
        w.push(format!(
            "[limits] max_pending_connections = {}: that many strangers may hold sockets and buffers",
            l.max_pending_connections
        ));
    }
    if l.max_connections_per_source > 64 {
        w.push(format!(
            "[limits] max_connections_per_source = {}: one address may take that many pending slots",
            l.max_connections_per_source
        ));
    }
    if c.timers.cer_timeout > Duration::from_secs(30) {
        w.push(format!(
            "[timers] cer_timeout = {:?}: a silent connection holds its slot that long",
            c.timers.cer_timeout
        ));
    }
    if l.message_timeout > Duration::from_secs(60) {
        w.push(format!(
            "[limits] message_timeout = {:?}: a peer trickling bytes holds its buffer that long",
            l.message_timeout
        ));
    }
    if l.max_buffered_bytes > 1 << 30 {
        w.push(format!(
            "[limits] max_buffered_bytes = {}: more than 1 GiB of partial messages may be held",
            l.max_buffered_bytes
        ));
    }
    if c.node.allow_unknown_peers && c.tls.is_none() {
        w.push(
            "[node] allow_unknown_peers without TLS: anyone who reaches the port becomes a peer"
                .into(),
        );
    }
    for p in &c.peers {
        if p.address.is_none() && p.transport == Transport::Tcp && !p.tls_inband {
            w.push(format!(
                "peer {}: no address and no TLS, so anyone who reaches the port can claim to be it",
                p.host
            ));
        }
        if p.transport == Transport::Tls && !p.tls_verify_host {
            w.push(format!(
                "peer {}: tls_verify_host = false, any certificate from the CA can claim to be it",
                p.host
            ));
        }
    }
    w
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
    if let Some(v) = s.int(cx, "max_message_size_before_cer", 1024, 0xff_ffff) {
        l.max_message_size_before_cer = u32::try_from(v).unwrap_or(l.max_message_size_before_cer);
    }
    if let Some(v) = count(cx, "max_pending_connections") {
        l.max_pending_connections = v;
    }
    if let Some(v) = count(cx, "max_connections_per_source") {
        l.max_connections_per_source = v;
    }
    if let Some(v) = s.duration(cx, "message_timeout") {
        l.message_timeout = v;
    }
    if let Some(v) = s.int(cx, "max_buffered_bytes", 65536, 1 << 40) {
        l.max_buffered_bytes = usize::try_from(v).unwrap_or(l.max_buffered_bytes);
    }
    if let Some(v) = count(cx, "dup_cache_entries") {
        l.dup_cache_entries = v;
    }
    if let Some(v) = s.duration(cx, "dup_cache_ttl") {
        l.dup_cache_ttl = v;
    }
    if let Some(v) = s.bool(cx, "quick_ack") {
        l.quick_ack = v;
    }
    // 0 is allowed: no redirect is cached.
    if let Some(v) = s.int(cx, "redirect_cache_entries", 0, 100_000_000) {
        l.redirect_cache_entries = usize::try_from(v).unwrap_or(l.redirect_cache_entries);
    }
    if let Some(v) = s.duration(cx, "redirect_cache_max_time") {
        if v < Duration::from_secs(1) {
            let span = s.item("redirect_cache_max_time").and_then(|i| i.0);
            cx.error(
                span,
                "`redirect_cache_max_time` must be at least 1s: Redirect-Max-Cache-Time counts whole seconds (RFC 6733 §6.14); to cache nothing, set `redirect_cache_entries = 0`",
            );
        } else {
            l.redirect_cache_max_time = v;
        }
    }
    l
}

fn read_shm(cx: &mut Cx<'_>, root: Tbl<'_>) -> ShmSettings {
    let mut shm = ShmSettings::default();
    let Some(tbl) = sub_table(cx, root, "app") else {
        return shm;
    };
    let s = Section::new(cx, tbl, "[app]".into(), SHM_KEYS);
    if let Some(p) = s.path(cx, "segment") {
        shm.segment = p;
    }
    if let Some(p) = s.path(cx, "control_socket") {
        shm.control_socket = p;
    }
    if let Some(d) = s.duration(cx, "reply_timeout") {
        shm.reply_timeout = d;
    }
    if let Some(v) = s.int(cx, "busy_poll_us", 0, 10_000) {
        shm.busy_poll = Duration::from_micros(u64::try_from(v).unwrap_or(0));
    }
    if let Some(v) = s.int(cx, "max_workers", 1, 4096) {
        shm.max_workers = u32::try_from(v).unwrap_or(shm.max_workers);
    }
    if let Some(v) = s.int(cx, "ring_size", 4096, 1 << 30) {
        shm.ring_size = u32::try_from(v).unwrap_or(shm.ring_size);
    }
    shm.group = read_group(cx, &s);
    shm.max_message_size = s.u32(cx, "max_message_size");
    shm.allow_users = read_principals(cx, &s, "allow_users");
    shm.allow_groups = read_principals(cx, &s, "allow_groups");
    shm
}

/// `allow_users` / `allow_groups`: names or numeric ids, each a plausible passwd/group
/// entry name (the lookup itself happens when the bridge starts, `check-config` included).
fn read_principals(cx: &mut Cx<'_>, s: &Section<'_>, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (text, span) in s.strings(cx, key).unwrap_or_default() {
        if text.is_empty() || text.contains([':', '\n', ' ']) {
            cx.error(
                span,
                format!("`{key}` entry {text:?} is not a user or group name or id"),
            );
        } else if !out.contains(&text) {
            out.push(text);
        }
    }
    out
}

/// `group = 123`, `group = "123"` or `group = "kamailio"`.
fn read_group(cx: &mut Cx<'_>, s: &Section<'_>) -> Option<GroupSpec> {
    let (span, item) = s.item("group")?;
    if let Some(v) = item.as_integer() {
        return match u32::try_from(v) {
            Ok(gid) => Some(GroupSpec::Gid(gid)),
            Err(_) => {
                cx.error(
                    span,
                    format!("`group` = {v} is not a gid (0..={})", u32::MAX),
                );
                None
            }
        };
    }
    match item.as_str() {
        Some("") => {
            cx.error(span, "`group` must not be empty");
            None
        }
        Some(name) => Some(match name.parse::<u32>() {
            Ok(gid) => GroupSpec::Gid(gid),
            Err(_) => GroupSpec::Name(name.to_string()),
        }),
        None => {
            cx.error(
                span,
                "`group` in [app] must be a group name (a string) or a numeric gid",
            );
            None
        }
    }
}

/// `[log]`, `[metrics]` and `[admin]`: how the running node is operated (the driver's
/// business; the protocol core only carries them).
fn read_ops(cx: &mut Cx<'_>, root: Tbl<'_>) -> OpsSettings {
    let mut ops = OpsSettings::default();
    if let Some(tbl) = sub_table(cx, root, "log") {
        let s = Section::new(cx, tbl, "[log]".into(), LOG_KEYS);
        if let Some(level) = s.string(cx, "level") {
            ops.log_level = level;
        }
        if let Some(format) = s.string(cx, "format") {
            match format.as_str() {
                "text" | "json" => ops.log_format = format,
                other => {
                    let span = s.item("format").and_then(|(span, _)| span);
                    cx.error(
                        span,
                        format!("`format` in [log] must be \"text\" or \"json\", not {other:?}"),
                    );
                }
            }
        }
    }
    if let Some(tbl) = sub_table(cx, root, "metrics") {
        let s = Section::new(cx, tbl, "[metrics]".into(), METRICS_KEYS);
        if let Some(listen) = s.string(cx, "listen") {
            match listen.parse::<SocketAddr>() {
                Ok(a) => ops.metrics_listen = Some(a),
                Err(_) => {
                    let span = s.item("listen").and_then(|(span, _)| span);
                    cx.error(
                        span,
                        format!("`listen` in [metrics] = {listen:?} is not an address:port (e.g. \"127.0.0.1:9464\")"),
                    );
                }
            }
        }
    }
    if let Some(tbl) = sub_table(cx, root, "admin") {
        let s = Section::new(cx, tbl, "[admin]".into(), ADMIN_KEYS);
        ops.admin_socket = s.path(cx, "socket");
    }
    ops
}
