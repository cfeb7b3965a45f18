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
//! [[peers]]       # host, address, port, mode = "connect"|"accept", transport = "tcp"|"tls",
//!                 # tls_verify_host, tls_ca, tls_pin, tls_inband (TLS after CER/CEA)
//! [[routes]]      # realm, app_id (optional), peers, priority
//! [default_route] # peers
//! [timers]        # tc, tw, answer_timeout, cer_timeout, dpa_timeout, drain_timeout
//! [limits]        # max_message_size, max_pending_requests, max_connections, dup_cache_*,
//!                 # quick_ack, redirect_cache_entries, redirect_cache_max_time
//! [app]           # the shared-memory seam: segment, control_socket, reply_timeout,
//!                 # max_workers, ring_size, group, max_message_size
//! ```

mod model;
mod reader;
mod sections;

pub use model::is_diameter_identity;
pub use model::*;
pub use reader::parse_duration;

use toml_edit::ImDocument;

use reader::Cx;
use sections::read_config;
pub use sections::{parse_pin, warnings, DEFAULT_TLS_PORT};

/// Every error in `text`, each with its line. Empty means the file is valid.
pub fn check(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

/// Parses and validates a configuration, returning every error found.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    parse_document(text, &document(text)?)
}

/// `text` as a TOML document, or its syntax error. With [`parse_document`], for an embedder
/// that reads tables of its own from the same file (the bridge's `[scheduling]`): one parse
/// serves both readers.
pub fn document(text: &str) -> Result<ImDocument<&str>, Vec<ConfigError>> {
    ImDocument::parse(text)
        .map_err(|e| vec![ConfigError::at(text, e.span(), e.message().trim_end())])
}

/// Validates the configuration in `doc`, the [`document`] of `text` (which places errors).
pub fn parse_document(text: &str, doc: &ImDocument<&str>) -> Result<Config, Vec<ConfigError>> {
    let mut cx = Cx {
        src: text,
        errors: Vec::new(),
    };
    let config = read_config(&mut cx, doc.as_table());
    if cx.errors.is_empty() {
        Ok(config)
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        Err(cx.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
group = "kamailio"
max_message_size = 16_384
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
        assert_eq!(c.app.group, Some(GroupSpec::Name("kamailio".into())));
        assert_eq!(c.app.max_message_size, Some(16384));
        assert!(check(GOOD).is_empty());
    }

    #[test]
    fn quick_ack_is_on_unless_turned_off_and_must_be_a_boolean() {
        assert!(parse(GOOD).unwrap().limits.quick_ack);
        let off = GOOD.replace(
            "max_pending_requests = 100",
            "max_pending_requests = 100\nquick_ack = false",
        );
        assert!(!parse(&off).unwrap().limits.quick_ack);
        let bad = GOOD.replace(
            "max_pending_requests = 100",
            "max_pending_requests = 100\nquick_ack = 1",
        );
        let e = lines(&bad);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].1.contains("quick_ack"), "{e:?}");
    }

    #[test]
    fn redirect_cache_settings_have_defaults_and_bad_values_are_refused() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.limits.redirect_cache_entries, 4096);
        assert_eq!(
            c.limits.redirect_cache_max_time,
            std::time::Duration::from_secs(3600)
        );
        let set = |extra: &str| {
            GOOD.replace(
                "max_pending_requests = 100",
                &format!("max_pending_requests = 100\n{extra}"),
            )
        };
        let c = parse(&set(
            "redirect_cache_entries = 0\nredirect_cache_max_time = \"10m\"",
        ))
        .unwrap();
        assert_eq!(c.limits.redirect_cache_entries, 0, "0 turns caching off");
        assert_eq!(
            c.limits.redirect_cache_max_time,
            std::time::Duration::from_secs(600)
        );
        for (bad, says) in [
            ("redirect_cache_entries = -1", "out of range"),
            ("redirect_cache_entries = \"many\"", "must be an integer"),
            ("redirect_cache_max_time = \"0s\"", "positive duration"),
            ("redirect_cache_max_time = \"forever\"", "positive duration"),
            ("redirect_cache_max_time = \"500ms\"", "at least 1s"),
        ] {
            let e = lines(&set(bad));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            let key = bad.split(' ').next().unwrap();
            assert!(
                e[0].1.contains(key) && e[0].1.contains(says),
                "{bad}: {e:?}"
            );
        }
    }

    fn lines(text: &str) -> Vec<(usize, String)> {
        check(text)
            .into_iter()
            .map(|e| (e.line, e.message))
            .collect()
    }

    #[test]
    fn app_section_is_read_by_the_typed_reader_with_lines() {
        let base = "[node]\norigin_host = \"a.example.net\"\norigin_realm = \"example.net\"\n[[applications]]\nid = 4\n";
        let errs = lines(&format!(
            "{base}[app]\nmax_mesage_size = 1\ngroup = [1]\nmax_message_size = \"big\"\n"
        ));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].0 == 7 && errs[0].1.contains("unknown key `max_mesage_size` in [app]"));
        assert!(errs[1].0 == 8 && errs[1].1.contains("`group`"), "{errs:?}");
        assert!(errs[2].0 == 9 && errs[2].1.contains("`max_message_size`"));
        for (text, group) in [
            ("group = 123", GroupSpec::Gid(123)),
            ("group = \"123\"", GroupSpec::Gid(123)),
            ("group = 'opensips'", GroupSpec::Name("opensips".into())),
        ] {
            let c = parse(&format!("{base}[app]\n{text}\n")).unwrap();
            assert_eq!(c.app.group, Some(group));
        }
        // The seam's allow list: names or ids, strings only, no empty or passwd-breaking ones.
        let c = parse(&format!(
            "{base}[app]\nallow_users = [\"kamailio\", \"1001\"]\nallow_groups = [\"opensips\"]\n"
        ))
        .unwrap();
        assert_eq!(c.app.allow_users, vec!["kamailio", "1001"]);
        assert_eq!(c.app.allow_groups, vec!["opensips"]);
        assert!(
            parse(base).unwrap().app.allow_users.is_empty(),
            "default: none"
        );
        let errs = lines(&format!(
            "{base}[app]\nallow_users = \"kamailio\"\nallow_groups = [\"\", \"a:b\", 7]\n"
        ));
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs[0].0 == 7 && errs[0].1.contains("`allow_users`"),
            "{errs:?}"
        );
        assert!(errs.iter().skip(1).all(|e| e.0 == 8), "{errs:?}");
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
    fn log_metrics_admin_sections() {
        let base = "[node]\norigin_host = \"b.example.net\"\norigin_realm = \"example.net\"\n\
                    [[applications]]\nid = 4\n";
        let c = parse(base).unwrap();
        assert_eq!(c.ops, OpsSettings::default());
        assert_eq!(
            c.ops.metrics_listen, None,
            "metrics are off unless configured"
        );
        let c = parse(&format!(
            "{base}[log]\nlevel = \"warn,dmnode::peer=debug\"\nformat = \"json\"\n\
             [metrics]\nlisten = \"127.0.0.1:9464\"\n[admin]\nsocket = \"/run/x/admin.sock\"\n"
        ))
        .unwrap();
        assert_eq!(c.ops.log_level, "warn,dmnode::peer=debug");
        assert_eq!(c.ops.log_format, "json");
        assert_eq!(
            c.ops.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(c.ops.admin_socket, Some("/run/x/admin.sock".into()));
        let errs = lines(&format!(
            "{base}[log]\nformat = \"xml\"\n[metrics]\nlisten = \"localhost\"\nport = 1\n"
        ));
        assert!(
            errs.iter()
                .any(|(l, m)| *l == 7 && m.contains("\"text\" or \"json\"")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|(l, m)| *l == 9 && m.contains("address:port")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|(l, m)| *l == 10 && m.contains("unknown key `port`")),
            "{errs:?}"
        );
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
        let text = include_str!("../../../cfg-examples/dmbridge.toml");
        assert_eq!(check(text), Vec::new());
    }

    #[test]
    fn inline_rules_are_parsed_and_bad_ones_reported_at_their_config_line() {
        let ok = format!(
            "{GOOD}\n[routing]\nrules = \"\"\"\n# rt_default.conf\n* : \"hss1.example.net\" += DEFAULT ;\n\"\"\"\n"
        );
        let c = parse(&ok).unwrap();
        assert_eq!(c.routing.rules.rules().len(), 1);
        let base = GOOD.lines().count() + 3;
        let bad = format!(
            "{GOOD}\n[routing]\nrules = \"\"\"\n* : \"a\" += 1 ;\ndh=[\"(\"] : \"a\" += 1 ;\n* : \"a\" += LOTS ;\n\"\"\"\nrules_file = \"x\"\n"
        );
        let e = parse(&bad).unwrap_err();
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [base, base + 2, base + 3], "{e:?}");
        assert!(e[0].message.contains("not both"), "{e:?}");
        assert!(e[1].message.contains("regular expression"), "{e:?}");
        assert!(e[2].message.contains("LOTS"), "{e:?}");
    }

    #[test]
    fn tls_inband_needs_tls_section_and_tcp() {
        let base = "[node]\norigin_host = \"a.example.net\"\norigin_realm = \"example.net\"\n[[applications]]\nid = 4\n[[peers]]\nhost = \"fd.example.net\"\naddress = \"192.0.2.1\"\ntls_inband = true\n";
        let errs = lines(base);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .1
                .contains("tls_inband = true but there is no [tls] section"),
            "{errs:?}"
        );
        let tls = "[tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let c = parse(&format!("{base}{tls}")).unwrap();
        assert!(c.peers[0].tls_inband);
        assert_eq!(c.peers[0].transport, Transport::Tcp);
        assert_eq!(c.peers[0].port, 3868, "in-band TLS uses the plain port");
        let errs = lines(&format!("{base}transport = \"tls\"\n{tls}"));
        assert!(
            errs.iter()
                .any(|(l, m)| *l == 9 && m.contains("needs transport = \"tcp\"")),
            "{errs:?}"
        );
    }
}
