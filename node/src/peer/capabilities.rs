//! Capabilities exchange (RFC 6733 §5.3): what a CER/CEA says, and whether two nodes can talk.
//!
//! [`Capabilities`] is the typed content of a CER or CEA; its conversion to and from Diameter
//! messages lives in [`super::wire`] so that this module (and the state machine using it)
//! does not depend on the codec. [`negotiate`] is the `Process-CER` / `Process-CEA` decision.

use std::net::IpAddr;

use crate::config::{AppAdvert, AppKind, Config, RELAY_APP_ID};

/// Result-Code values used by the peer layer (RFC 6733 §7.1), under short names: aliases
/// of `dmproto::result_code`, the one home of the values.
pub mod result {
    use dmproto::result_code as rc;
    /// 2001: the only CEA Result-Code that opens the peer.
    pub const SUCCESS: u32 = rc::DIAMETER_SUCCESS;
    /// 3002 DIAMETER_UNABLE_TO_DELIVER (§7.1.3).
    pub const UNABLE_TO_DELIVER: u32 = rc::DIAMETER_UNABLE_TO_DELIVER;
    /// 3010: a CER from an Origin-Host not configured (and `allow_unknown_peers` off).
    pub const UNKNOWN_PEER: u32 = rc::DIAMETER_UNKNOWN_PEER;
    /// 4003 (RFC 6733 §7.1.4): the §5.6.4 election was lost. Not sent by us: the losing
    /// connection is closed without an answer, as the §5.6 table's R-Disc/I-Disc says.
    pub const ELECTION_LOST: u32 = rc::ELECTION_LOST;
    /// 5010: no application in common (§5.3).
    pub const NO_COMMON_APPLICATION: u32 = rc::DIAMETER_NO_COMMON_APPLICATION;
    /// 5012: also what a CEA without a Result-Code is taken as.
    pub const UNABLE_TO_COMPLY: u32 = rc::DIAMETER_UNABLE_TO_COMPLY;
    /// 5017: no Inband-Security-Id in common (§6.10, §7.1.5).
    pub const NO_COMMON_SECURITY: u32 = rc::DIAMETER_NO_COMMON_SECURITY;
}

/// Inband-Security-Id values (RFC 6733 §6.10).
pub mod inband {
    /// NO_INBAND_SECURITY: what a CER/CEA without the AVP means.
    pub const NO_INBAND_SECURITY: u32 = 0;
    /// TLS, started on the connection right after CER/CEA (RFC 3588 §2.1).
    pub const TLS: u32 = 1;
}

/// Which end of the in-band TLS handshake this node plays (RFC 3588 §2.1 / RFC 6733 §13:
/// the CER sender is the client, as freeDiameter's `p_ce.c` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRole {
    /// We sent the CER: we start the handshake once the CEA is read.
    Client,
    /// We sent the CEA: we wait for the peer's ClientHello right after it.
    Server,
}

/// The security of one connection, as the capabilities exchange leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Nothing more to do: plain TCP agreed (NO_INBAND_SECURITY), or the connection is
    /// already TLS from its first byte (Inband-Security-Id is then ignored, as RFC 6733
    /// §6.10 deprecates it and freeDiameter ignores it there).
    AsIs,
    /// A TLS handshake follows on the same connection, before the peer is open.
    InbandTls,
}

/// The Inband-Security-Id half of `Process-CER` / `Process-CEA` (RFC 6733 §6.10, §5.3).
///
/// `inband_tls`: the peer is configured for in-band TLS (`tls_inband = true`), which is then
/// required; `on_tls`: the connection is TLS already; `offered`: the Inband-Security-Id
/// values the peer sent (none means NO_INBAND_SECURITY).
///
/// - on a TLS connection, whatever is offered: as is;
/// - in-band TLS wanted: TLS offered → handshake; otherwise 5017;
/// - not wanted: nothing, or NO_INBAND_SECURITY among the offers → plain; only TLS (or
///   values we do not know) → 5017, since a peer insisting on TLS would otherwise start a
///   handshake we do not expect.
///
/// RFC 6733 §7.1.5: DIAMETER_NO_COMMON_SECURITY "is returned when a CER message is
/// received, and there are no common security mechanisms supported between the peers".
pub fn negotiate_security(
    inband_tls: bool,
    on_tls: bool,
    offered: &[u32],
    peer: &str,
) -> Result<Security, CapabilitiesError> {
    let none = offered.is_empty() || offered.contains(&inband::NO_INBAND_SECURITY);
    let tls = offered.contains(&inband::TLS);
    match (on_tls, inband_tls) {
        (true, _) => Ok(Security::AsIs),
        (false, true) if tls => Ok(Security::InbandTls),
        (false, false) if none => Ok(Security::AsIs),
        (false, want) => Err(CapabilitiesError {
            result_code: result::NO_COMMON_SECURITY,
            message: if want {
                format!(
                    "no common security: in-band TLS is required for {peer}, which offers Inband-Security-Id {offered:?} (NO_INBAND_SECURITY when empty)"
                )
            } else {
                format!(
                    "no common security: {peer} offers only Inband-Security-Id {offered:?}, and in-band TLS is not configured for it (tls_inband)"
                )
            },
        }),
    }
}

/// One Vendor-Specific-Application-Id: a Vendor-Id and exactly one of Auth-/Acct-Application-Id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VendorApp {
    /// The Vendor-Id inside the group (10415 for 3GPP's applications).
    pub vendor_id: u32,
    /// Whether the group holds Auth- or Acct-Application-Id.
    pub kind: AppKind,
    /// The application id.
    pub app_id: u32,
}

/// The content of a CER or CEA (RFC 6733 §5.3.1, §5.3.2), without the Result-Code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Origin-Host: the identity the peer table knows the sender by (3010 if unknown).
    pub origin_host: String,
    /// Origin-Realm: the realm routing reaches the peer for (step 4 of [`crate::router`]).
    pub origin_realm: String,
    /// Host-IP-Address values (§5.3.5; at least one in a valid CER/CEA).
    pub host_ip_addresses: Vec<IpAddr>,
    /// Vendor-Id (§5.3.3): the sender's vendor, informative.
    pub vendor_id: u32,
    /// Product-Name (§5.3.7), informative.
    pub product_name: String,
    /// Origin-State-Id (§8.16): grows at each restart of the sender; a new value on an open
    /// peer means it lost its state, and its old connection is reset.
    pub origin_state_id: Option<u32>,
    /// Supported-Vendor-Id (§5.3.6): vendors whose AVPs the sender understands.
    pub supported_vendor_ids: Vec<u32>,
    /// Auth-Application-Id values (§6.8).
    pub auth_app_ids: Vec<u32>,
    /// Acct-Application-Id values (§6.9).
    pub acct_app_ids: Vec<u32>,
    /// Vendor-Specific-Application-Id groups (§6.11), as 3GPP applications are advertised.
    pub vendor_specific_apps: Vec<VendorApp>,
    /// Inband-Security-Id values (§6.10); empty means NO_INBAND_SECURITY.
    pub inband_security_ids: Vec<u32>,
    /// Firmware-Revision (§5.3.4), informative.
    pub firmware_revision: Option<u32>,
}

impl Capabilities {
    /// Our own capabilities, from the configuration. `origin_state_id` should change on every
    /// restart (RFC 6733 §8.16: the start time is the usual choice) so peers can tell that our
    /// state was lost. `host_ips` are used when the configuration lists none (the driver
    /// passes the connection's local address).
    pub fn local(config: &Config, origin_state_id: u32, host_ips: &[IpAddr]) -> Capabilities {
        let node = &config.node;
        let mut caps = Capabilities {
            origin_host: node.origin_host.clone(),
            origin_realm: node.origin_realm.clone(),
            host_ip_addresses: if node.host_ip_addresses.is_empty() {
                host_ips.to_vec()
            } else {
                node.host_ip_addresses.clone()
            },
            vendor_id: node.vendor_id,
            product_name: node.product_name.clone(),
            origin_state_id: Some(origin_state_id),
            firmware_revision: node.firmware_revision,
            ..Capabilities::default()
        };
        for app in &config.applications {
            caps.advertise(*app);
        }
        if config.routing.relay {
            // RFC 6733 §2.4: "Relay and redirect agents MUST advertise the Relay
            // Application Id" (0xffffffff).
            caps.advertise(AppAdvert {
                id: RELAY_APP_ID,
                kind: AppKind::Auth,
                vendor: None,
            });
        }
        caps
    }

    /// Adds one application in the AVP the RFC wants for it.
    pub fn advertise(&mut self, app: AppAdvert) {
        match (app.vendor, app.kind) {
            (Some(vendor_id), kind) => {
                self.vendor_specific_apps.push(VendorApp {
                    vendor_id,
                    kind,
                    app_id: app.id,
                });
                if vendor_id != 0 && !self.supported_vendor_ids.contains(&vendor_id) {
                    self.supported_vendor_ids.push(vendor_id);
                }
            }
            (None, AppKind::Auth) => self.auth_app_ids.push(app.id),
            (None, AppKind::Acct) => self.acct_app_ids.push(app.id),
        }
    }

    /// Every application id advertised, in any of the three AVPs.
    pub fn applications(&self) -> AppSet {
        AppSet::from_ids(
            self.auth_app_ids
                .iter()
                .chain(&self.acct_app_ids)
                .chain(self.vendor_specific_apps.iter().map(|v| &v.app_id))
                .copied(),
        )
    }
}

/// A set of application ids, with the relay application (0xffffffff) as "everything".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppSet {
    /// Sorted, without duplicates, without the relay id.
    ids: Vec<u32>,
    relay: bool,
}

impl AppSet {
    /// The set of `ids`; 0xffffffff among them makes it the relay set.
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> AppSet {
        let mut set = AppSet::default();
        for id in ids {
            if id == RELAY_APP_ID {
                set.relay = true;
            } else {
                set.ids.push(id);
            }
        }
        set.ids.sort_unstable();
        set.ids.dedup();
        set
    }

    /// The relay application: every application is accepted.
    pub fn relay() -> AppSet {
        AppSet {
            ids: Vec::new(),
            relay: true,
        }
    }

    /// Whether the relay application is in the set (it then supports everything).
    pub fn is_relay(&self) -> bool {
        self.relay
    }

    /// Nothing is supported (but base protocol): a capabilities exchange fails with 5010.
    pub fn is_empty(&self) -> bool {
        !self.relay && self.ids.is_empty()
    }

    /// Whether a request of application `app_id` may be sent to a peer with this set.
    /// The base protocol (application 0) is always supported.
    pub fn supports(&self, app_id: u32) -> bool {
        app_id == 0 || self.relay || self.ids.binary_search(&app_id).is_ok()
    }

    /// The explicit ids, sorted, without the relay id (for status and logs).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The applications both sides can use (RFC 6733 §5.3: a relay takes everything).
    pub fn common(&self, other: &AppSet) -> AppSet {
        match (self.relay, other.relay) {
            (true, true) => AppSet::relay(),
            (true, false) => other.clone(),
            (false, true) => self.clone(),
            (false, false) => AppSet {
                ids: self
                    .ids
                    .iter()
                    .copied()
                    .filter(|id| other.supports(*id))
                    .collect(),
                relay: false,
            },
        }
    }
}

/// Why a capabilities exchange failed, as the Result-Code to put in the CEA (or the one a CEA
/// carried).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapabilitiesError {
    /// 5010 or 5017 (or the failed CEA's own code): what the CEA says.
    pub result_code: u32,
    /// Error-Message for the CEA and our log: what each side advertised.
    pub message: String,
}

/// `Process-CER` / `Process-CEA`: the applications we and the peer share, or 5010.
pub fn negotiate(local: &Capabilities, remote: &Capabilities) -> Result<AppSet, CapabilitiesError> {
    let common = local.applications().common(&remote.applications());
    if common.is_empty() {
        Err(CapabilitiesError {
            result_code: result::NO_COMMON_APPLICATION,
            message: format!(
                "no common application: we advertise {:?}, {} advertises {:?}",
                local.applications().ids(),
                remote.origin_host,
                remote.applications().ids()
            ),
        })
    } else {
        Ok(common)
    }
}

/// RFC 6733 §5.6.4: the election is won by the node whose Origin-Host is higher. Identities
/// are compared as octet strings, except that ASCII letters compare case-insensitively (DNS
/// names are case-insensitive, and the RFC asks for exactly that).
pub fn wins_election(local_host: &str, remote_host: &str) -> bool {
    let fold = |s: &str| {
        s.bytes()
            .map(|b| b.to_ascii_lowercase())
            .collect::<Vec<u8>>()
    };
    fold(local_host) > fold(remote_host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(host: &str, auth: &[u32], acct: &[u32], vsa: &[(u32, u32)]) -> Capabilities {
        Capabilities {
            origin_host: host.into(),
            origin_realm: "example.net".into(),
            auth_app_ids: auth.to_vec(),
            acct_app_ids: acct.to_vec(),
            vendor_specific_apps: vsa
                .iter()
                .map(|&(vendor_id, app_id)| VendorApp {
                    vendor_id,
                    kind: AppKind::Auth,
                    app_id,
                })
                .collect(),
            ..Capabilities::default()
        }
    }

    #[test]
    fn common_application_through_any_avp() {
        let local = caps("a", &[4], &[], &[(10415, 16777216)]);
        let remote = caps("b", &[], &[], &[(10415, 16777216), (10415, 16777217)]);
        let common = negotiate(&local, &remote).unwrap();
        assert_eq!(common.ids(), &[16777216]);
        assert!(common.supports(16777216));
        assert!(!common.supports(4));
        assert!(common.supports(0), "base protocol is always there");
    }

    #[test]
    fn no_common_application_is_5010() {
        let local = caps("a", &[4], &[], &[]);
        let remote = caps("b", &[16777238], &[3], &[]);
        let err = negotiate(&local, &remote).unwrap_err();
        assert_eq!(err.result_code, result::NO_COMMON_APPLICATION);
    }

    #[test]
    fn relay_peer_shares_all_our_applications() {
        let local = caps("a", &[4, 16777216], &[], &[]);
        let remote = caps("dra", &[RELAY_APP_ID], &[], &[]);
        let common = negotiate(&local, &remote).unwrap();
        assert_eq!(common.ids(), &[4, 16777216]);
        assert!(!common.is_relay());
        let both = AppSet::relay().common(&AppSet::relay());
        assert!(both.is_relay() && both.supports(12345));
    }

    #[test]
    fn inband_security_table() {
        use inband::{NO_INBAND_SECURITY as NONE, TLS};
        let n = |want, on_tls, offered: &[u32]| negotiate_security(want, on_tls, offered, "p");
        let err = |r: Result<Security, CapabilitiesError>| r.unwrap_err().result_code;
        // In-band TLS wanted, on a plain connection.
        assert_eq!(n(true, false, &[TLS]), Ok(Security::InbandTls));
        assert_eq!(n(true, false, &[NONE, TLS]), Ok(Security::InbandTls));
        assert_eq!(err(n(true, false, &[NONE])), result::NO_COMMON_SECURITY);
        assert_eq!(
            err(n(true, false, &[])),
            5017,
            "absent = NO_INBAND_SECURITY"
        );
        // Not wanted.
        assert_eq!(n(false, false, &[]), Ok(Security::AsIs));
        assert_eq!(n(false, false, &[NONE]), Ok(Security::AsIs));
        assert_eq!(n(false, false, &[NONE, TLS]), Ok(Security::AsIs));
        assert_eq!(err(n(false, false, &[TLS])), 5017);
        assert_eq!(err(n(false, false, &[7])), 5017);
        // TLS from the first byte: the AVP does not matter.
        for want in [true, false] {
            for offered in [&[][..], &[NONE], &[TLS]] {
                assert_eq!(n(want, true, offered), Ok(Security::AsIs));
            }
        }
        let e = n(true, false, &[NONE]).unwrap_err();
        assert!(e.message.contains("in-band TLS is required for p"), "{e:?}");
    }

    #[test]
    fn election_compares_origin_hosts_case_insensitively() {
        assert!(wins_election("b.example.net", "a.example.net"));
        assert!(!wins_election("a.example.net", "b.example.net"));
        assert!(wins_election("B.example.net", "a.example.net"));
        assert!(!wins_election("A.example.net", "b.example.net"));
        // A longer string with the same prefix is higher.
        assert!(wins_election("a.example.net.x", "a.example.net"));
        assert!(
            !wins_election("a.example.net", "A.EXAMPLE.NET"),
            "equal is not a win"
        );
    }

    #[test]
    fn local_capabilities_from_config() {
        let text = r#"
[node]
origin_host = "me.example.net"
origin_realm = "example.net"
vendor_id = 10415
firmware_revision = 7
[[applications]]
id = 16777216
vendor = 10415
[[applications]]
id = 3
kind = "acct"
[[applications]]
id = 4
"#;
        let config = crate::config::parse(text).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let c = Capabilities::local(&config, 1234, &[ip]);
        assert_eq!(c.origin_host, "me.example.net");
        assert_eq!(c.host_ip_addresses, vec![ip]);
        assert_eq!(c.origin_state_id, Some(1234));
        assert_eq!(c.firmware_revision, Some(7));
        assert_eq!(c.auth_app_ids, vec![4]);
        assert_eq!(c.acct_app_ids, vec![3]);
        assert_eq!(
            c.vendor_specific_apps,
            vec![VendorApp {
                vendor_id: 10415,
                kind: AppKind::Auth,
                app_id: 16777216
            }]
        );
        assert_eq!(c.supported_vendor_ids, vec![10415]);
        assert_eq!(c.applications().ids(), &[3, 4, 16777216]);
    }
}
