//! `[app]` settings -> the shared-memory bridge's configuration.
//!
//! The node's configuration reader checks every `[app]` key's type and range, with its line
//! ([`ShmSettings`]); what only the shared-memory side can check happens here: the group
//! name exists in `/etc/group`, and the maximum message fits the ring
//! (`dmshm::segment::Geometry::validate`).

use std::time::Duration;

use dmshm::bridge::BridgeConfig;
use dmshm::segment::Geometry;

use dmnode::config::{GroupSpec, ShmSettings};

/// Everything the shared-memory application needs from the configuration.
#[derive(Clone, Debug)]
pub struct ShmOptions {
    pub bridge: BridgeConfig,
    /// How long a worker may take to reply to an incoming request.
    pub reply_timeout: Duration,
}

/// Why the `[app]` settings cannot make a shared-memory configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// `[app] group` names a group `/etc/group` does not have.
    #[error("[app] group: no group named {0:?} in /etc/group")]
    UnknownGroup(String),
    /// `max_workers`, `ring_size` and `max_message_size` do not make a valid segment.
    #[error("[app] (max_workers, ring_size, max_message_size): {0}")]
    Geometry(String),
}

/// A group name or gid -> gid, names looked up in `/etc/group` (the bridge links no libc name
/// service: local groups are what SIP servers run under).
fn resolve_group(group: &GroupSpec, etc_group: &str) -> Result<u32, SettingsError> {
    let name = match group {
        GroupSpec::Gid(gid) => return Ok(*gid),
        GroupSpec::Name(name) => name,
    };
    etc_group
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (n == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| SettingsError::UnknownGroup(name.clone()))
}

impl ShmOptions {
    /// From the `[app]` section; errors say which key is wrong and why.
    pub fn from_settings(s: &ShmSettings) -> Result<ShmOptions, SettingsError> {
        let group = match &s.group {
            None => None,
            Some(g) => {
                let etc = std::fs::read_to_string("/etc/group").unwrap_or_default();
                Some(resolve_group(g, &etc)?)
            }
        };
        let ring_bytes = s.ring_size.max(4096).next_power_of_two();
        let max_msg = s.max_message_size.unwrap_or((ring_bytes / 4).max(256));
        let geometry = Geometry {
            slots: s.max_workers,
            ring_bytes,
            max_msg,
        };
        geometry
            .validate()
            .map_err(|e| SettingsError::Geometry(e.to_string()))?;
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

    fn settings(max_message_size: Option<u32>) -> ShmSettings {
        ShmSettings {
            ring_size: 1 << 20,
            max_workers: 8,
            max_message_size,
            ..ShmSettings::default()
        }
    }

    #[test]
    fn defaults_are_owner_only_and_a_quarter_ring_messages() {
        let o = ShmOptions::from_settings(&settings(None)).unwrap();
        assert_eq!(o.bridge.group, None);
        assert_eq!(o.bridge.geometry.max_msg, 1 << 18);
        assert_eq!(o.bridge.geometry.slots, 8);
    }

    #[test]
    fn group_by_name_or_gid() {
        let etc = "root:x:0:\nkamailio:x:123:\nopensips:x:456:a,b\n";
        let name = |n: &str| GroupSpec::Name(n.into());
        assert_eq!(resolve_group(&name("kamailio"), etc), Ok(123));
        assert_eq!(resolve_group(&name("opensips"), etc), Ok(456));
        assert_eq!(resolve_group(&GroupSpec::Gid(77), etc), Ok(77));
        assert_eq!(
            resolve_group(&name("nobody-here"), etc),
            Err(SettingsError::UnknownGroup("nobody-here".into()))
        );
    }

    #[test]
    fn message_size_is_checked_against_the_ring() {
        let o = ShmOptions::from_settings(&settings(Some(65536))).unwrap();
        assert_eq!(o.bridge.geometry.max_msg, 65536);
        let e = ShmOptions::from_settings(&settings(Some(900_000))).unwrap_err();
        assert!(matches!(e, SettingsError::Geometry(_)), "{e}");
        assert!(e.to_string().contains("max_msg"), "{e}");
    }
}
