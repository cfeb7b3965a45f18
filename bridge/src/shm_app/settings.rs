//! `[app]` settings -> the shared-memory bridge's configuration.
//!
//! The typed keys of [`ShmSettings`] (segment, control_socket, reply_timeout, max_workers,
//! ring_size) come from the node's configuration parser; two more keys are read here from its
//! `extra` list, because only the shared-memory side gives them meaning:
//!
//! - `group = "kamailio"` (a group name or a numeric gid): the segment and the control socket
//!   become 0660 with that group, so SIP-server workers running as another user of that group
//!   can attach. Without it both are owner-only (0600): DESIGN §5, permissions follow the SIP
//!   server's user.
//! - `max_message_size = 262144` (bytes): the largest record in a ring — a request's JSON
//!   plus its parameters, or a reply. Defaults to a quarter of `ring_size`; at most half.

use std::time::Duration;

use dmshm::bridge::BridgeConfig;
use dmshm::segment::Geometry;

use crate::config::ShmSettings;

/// The `[app]` keys read here rather than by the node's parser.
const EXTRA_KEYS: [&str; 2] = ["group", "max_message_size"];

/// Everything the shared-memory application needs from the configuration.
#[derive(Clone, Debug)]
pub struct ShmOptions {
    pub bridge: BridgeConfig,
    /// How long a worker may take to reply to an incoming request.
    pub reply_timeout: Duration,
}

/// The raw TOML text of an `extra` key, if present.
fn extra<'a>(s: &'a ShmSettings, key: &str) -> Option<&'a str> {
    s.extra
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
}

/// A TOML string literal's content (basic or literal quotes, no escapes needed for names).
fn toml_str(raw: &str) -> Option<&str> {
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
}

/// A group name or gid -> gid, looked up in `/etc/group` (the bridge links no libc name
/// service: local groups are what SIP servers run under).
fn resolve_group(raw: &str, etc_group: &str) -> Result<u32, String> {
    if let Ok(gid) = raw.parse::<u32>() {
        return Ok(gid);
    }
    let name = toml_str(raw).ok_or_else(|| {
        format!("[app] group: expected a group name in quotes or a numeric gid, got {raw}")
    })?;
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    etc_group
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (n == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("[app] group: no group named {name:?} in /etc/group"))
}

impl ShmOptions {
    /// From the `[app]` section; errors say which key is wrong and why.
    pub fn from_settings(s: &ShmSettings) -> Result<ShmOptions, String> {
        // The node's parser keeps unknown `[app]` keys for us; a misspelt one must not be
        // silently ignored.
        if let Some((k, _)) = s
            .extra
            .iter()
            .find(|(k, _)| !EXTRA_KEYS.contains(&k.as_str()))
        {
            return Err(format!(
                "[app]: unknown key {k:?} (known: segment, control_socket, reply_timeout, max_workers, ring_size, {})",
                EXTRA_KEYS.join(", ")
            ));
        }
        let group = match extra(s, "group") {
            None => None,
            Some(raw) => {
                let etc = std::fs::read_to_string("/etc/group").unwrap_or_default();
                Some(resolve_group(raw, &etc)?)
            }
        };
        let ring_bytes = s.ring_size.max(4096).next_power_of_two();
        let max_msg = match extra(s, "max_message_size") {
            None => (ring_bytes / 4).max(256),
            Some(raw) => raw.replace('_', "").parse::<u32>().map_err(|_| {
                format!("[app] max_message_size: expected a number of bytes, got {raw}")
            })?,
        };
        let geometry = Geometry {
            slots: s.max_workers,
            ring_bytes,
            max_msg,
        };
        geometry
            .validate()
            .map_err(|e| format!("[app] (max_workers, ring_size, max_message_size): {e}"))?;
        let mut bridge = BridgeConfig::new(&s.control_socket, &s.segment);
        bridge.geometry = geometry;
        bridge.group = group;
        Ok(ShmOptions {
            bridge,
            reply_timeout: s.reply_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &[(&str, &str)]) -> ShmSettings {
        ShmSettings {
            ring_size: 1 << 20,
            max_workers: 8,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ShmSettings::default()
        }
    }

    #[test]
    fn defaults_are_owner_only_and_a_quarter_ring_messages() {
        let o = ShmOptions::from_settings(&settings(&[])).unwrap();
        assert_eq!(o.bridge.group, None);
        assert_eq!(o.bridge.geometry.max_msg, 1 << 18);
        assert_eq!(o.bridge.geometry.slots, 8);
    }

    #[test]
    fn group_by_name_or_gid() {
        let etc = "root:x:0:\nkamailio:x:123:\nopensips:x:456:a,b\n";
        assert_eq!(resolve_group("\"kamailio\"", etc), Ok(123));
        assert_eq!(resolve_group("'opensips'", etc), Ok(456));
        assert_eq!(resolve_group("77", etc), Ok(77));
        assert!(resolve_group("\"nobody-here\"", etc)
            .unwrap_err()
            .contains("nobody-here"));
        assert!(resolve_group("kamailio", etc).is_err());
    }

    #[test]
    fn message_size_is_checked_against_the_ring() {
        let o = ShmOptions::from_settings(&settings(&[("max_message_size", "65536")])).unwrap();
        assert_eq!(o.bridge.geometry.max_msg, 65536);
        let e =
            ShmOptions::from_settings(&settings(&[("max_message_size", "900000")])).unwrap_err();
        assert!(e.contains("max_msg"), "{e}");
        assert!(ShmOptions::from_settings(&settings(&[("max_message_size", "big")])).is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = ShmOptions::from_settings(&settings(&[("max_mesage_size", "1")])).unwrap_err();
        assert!(e.contains("max_mesage_size"), "{e}");
    }
}
