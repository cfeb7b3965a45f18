//! `[app]` settings -> the shared-memory bridge's configuration.
//!
//! The node's configuration reader checks every `[app]` key's type and range, with its line
//! ([`ShmSettings`]); what only the shared-memory side can check happens here: the group
//! name exists in `/etc/group`, and the maximum message fits the ring
//! (`dmshm::segment::Geometry::validate`).

use std::time::Duration;

use dmshm::bridge::{BridgeConfig, PeerAllow};
use dmshm::segment::Geometry;

use dmnode::config::{GroupSpec, ShmSettings};

/// Everything the shared-memory application needs from the configuration.
#[derive(Clone, Debug)]
pub struct ShmOptions {
    /// The segment geometry, control socket and who may attach, for [`dmshm::bridge::Bridge`].
    pub bridge: BridgeConfig,
    /// How long a worker may take to reply to an incoming request.
    pub reply_timeout: Duration,
    /// `[app] busy_poll_us`: the driver's poll for a peer's answer ([`super::driver`]).
    pub busy_poll: Duration,
}

/// Why the `[app]` settings cannot make a shared-memory configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// `[app] group` names a group `/etc/group` does not have.
    #[error("[app] group: no group named {0:?} in /etc/group")]
    UnknownGroup(String),
    /// `[app] allow_users` / `allow_groups` names a user or group the system does not have.
    #[error("[app] {key}: no entry named {name:?} in {file}")]
    UnknownId {
        /// The `[app]` key at fault (`allow_users` or `allow_groups`).
        key: &'static str,
        /// The name that was not found.
        name: String,
        /// Where it was looked up (`/etc/passwd` or `/etc/group`).
        file: &'static str,
    },
    /// `max_workers`, `ring_size` and `max_message_size` do not make a valid segment.
    #[error("[app] (max_workers, ring_size, max_message_size): {0}")]
    Geometry(String),
}

/// A name or numeric id -> id, names looked up in `etc` (the text of `/etc/passwd` or
/// `/etc/group`: both have the id in the third field). The bridge links no libc name
/// service: local users and groups are what SIP servers run under.
fn lookup_id(name: &str, etc: &str) -> Option<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Some(id);
    }
    etc.lines().find_map(|l| {
        let mut f = l.split(':');
        let n = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (n == name).then_some(id)
    })
}

/// A group name or gid -> gid.
fn resolve_group(group: &GroupSpec, etc_group: &str) -> Result<u32, SettingsError> {
    match group {
        GroupSpec::Gid(gid) => Ok(*gid),
        GroupSpec::Name(name) => {
            lookup_id(name, etc_group).ok_or_else(|| SettingsError::UnknownGroup(name.clone()))
        }
    }
}

fn read_etc(file: &str) -> String {
    std::fs::read_to_string(file).unwrap_or_default()
}

impl ShmOptions {
    /// From the `[app]` section; errors say which key is wrong and why.
    pub fn from_settings(s: &ShmSettings) -> Result<ShmOptions, SettingsError> {
        let etc_group = read_etc("/etc/group");
        let group = match &s.group {
            None => None,
            Some(g) => Some(resolve_group(g, &etc_group)?),
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
        bridge.allow = allow_list(s, &bridge, &read_etc("/etc/passwd"), &etc_group)?;
        Ok(ShmOptions {
            bridge,
            reply_timeout: s.reply_timeout,
            busy_poll: s.busy_poll,
        })
    }
}

/// `allow_users` / `allow_groups` extend the default allow list (the bridge's own uid and
/// `group`); without them the shm side's default stands (`None`).
fn allow_list(
    s: &ShmSettings,
    bridge: &BridgeConfig,
    etc_passwd: &str,
    etc_group: &str,
) -> Result<Option<PeerAllow>, SettingsError> {
    if s.allow_users.is_empty() && s.allow_groups.is_empty() {
        return Ok(None);
    }
    let mut allow = bridge.effective_allow();
    let resolve = |name: &String, etc: &str, key, file| {
        lookup_id(name, etc).ok_or_else(|| SettingsError::UnknownId {
            key,
            name: name.clone(),
            file,
        })
    };
    for u in &s.allow_users {
        allow
            .uids
            .push(resolve(u, etc_passwd, "allow_users", "/etc/passwd")?);
    }
    for g in &s.allow_groups {
        allow
            .gids
            .push(resolve(g, etc_group, "allow_groups", "/etc/group")?);
    }
    allow.uids.dedup();
    allow.gids.dedup();
    Ok(Some(allow))
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
    fn allow_users_and_groups_extend_the_default_list() {
        let passwd = "root:x:0:0::/root:/bin/sh\nkamailio:x:1001:1001::/:/bin/false\n";
        let group = "root:x:0:\nopensips:x:456:\n";
        let mut s = settings(None);
        let o = ShmOptions::from_settings(&s).unwrap();
        assert_eq!(o.bridge.allow, None, "no keys: the shm side's default");
        let own = o.bridge.effective_allow();
        s.allow_users = vec!["kamailio".into(), "2002".into()];
        s.allow_groups = vec!["opensips".into()];
        let a = allow_list(&s, &o.bridge, passwd, group).unwrap().unwrap();
        let mut uids = own.uids.clone();
        uids.extend([1001, 2002]);
        assert_eq!(a.uids, uids, "own uid kept, users added");
        assert_eq!(a.gids, vec![456]);
        assert!(a.permits(1001, 9999) && a.permits(9999, 456) && !a.permits(9999, 9999));
        s.allow_users = vec!["nobody-here".into()];
        let e = allow_list(&s, &o.bridge, passwd, group).unwrap_err();
        assert_eq!(
            e,
            SettingsError::UnknownId {
                key: "allow_users",
                name: "nobody-here".into(),
                file: "/etc/passwd"
            }
        );
        assert!(e.to_string().contains("allow_users"), "{e}");
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
