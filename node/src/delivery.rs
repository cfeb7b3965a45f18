//! Who a request is for (RFC 6733 §6.1), decided before any application sees it, and what
//! a relay agent does to the requests it forwards (§6.1.8) and the answers it returns
//! (§6.2.2). Plain functions over plain data; the endpoint applies them.
//!
//! RFC 6733 §6.1.4: "A request is known to be for local consumption when one of the
//! following conditions occurs:
//! - The Destination-Host AVP contains the local host's identity;
//! - The Destination-Host AVP is not present, the Destination-Realm AVP contains a realm the
//!   server is configured to process locally, and the Diameter application is locally
//!   supported; or
//! - Both the Destination-Host and the Destination-Realm are not present."
//!
//! Anything else is not ours: §6.1.5 (forwarding, Destination-Host is a peer) and §6.1.6
//! (routing by realm) apply when this node is configured as a relay agent; otherwise the
//! request is answered 3002 DIAMETER_UNABLE_TO_DELIVER when it names another host, 3003
//! DIAMETER_REALM_NOT_SERVED when its realm is foreign (§7.1.3), so a DRA in front can tell
//! the two apart. A local request for an application we do not serve is answered 3007 by
//! the endpoint (the application check comes after this decision).

use bytes::{BufMut, Bytes, BytesMut};
use dmproto::avp::AvpFlags;
use dmproto::header::HEADER_LEN;
use dmproto::result_code as rc;
use dmproto::Message;
use std::borrow::Cow;

use dmproto::avp_code::{DESTINATION_HOST, DESTINATION_REALM, REDIRECT_HOST, ROUTE_RECORD};

/// The outcome of the §6.1 decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// For this node (§6.1.4).
    Local,
    /// For someone else: relay it (when configured) or answer with [`NotOurs::result_code`].
    Elsewhere(NotOurs),
}

/// Why a request is not ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotOurs {
    /// Destination-Host names another node.
    OtherHost(String),
    /// No Destination-Host (or ours is not named) and the Destination-Realm is not ours.
    ForeignRealm(String),
}

impl NotOurs {
    /// The answer when we do not relay: 3002 for another host (§7.1.3: "the request ... the
    /// Destination-Host ... could not be delivered"), 3003 for a realm we do not serve.
    pub fn result_code(&self) -> u32 {
        match self {
            NotOurs::OtherHost(_) => rc::DIAMETER_UNABLE_TO_DELIVER,
            NotOurs::ForeignRealm(_) => rc::DIAMETER_REALM_NOT_SERVED,
        }
    }

    /// The Error-Message of that answer.
    pub fn message(&self) -> String {
        match self {
            NotOurs::OtherHost(h) => format!("Destination-Host {h} is not this node"),
            NotOurs::ForeignRealm(r) => format!("Destination-Realm {r} is not served here"),
        }
    }
}

/// The request's Destination-Host and Destination-Realm, as text (lossy: a value that is
/// not UTF-8 cannot name us, and is reported as it is). Borrowed from the message when the
/// value is UTF-8, as it is in practice: read for every incoming request, so no allocation
/// (issue 15 item 2).
pub struct Destination<'m> {
    /// Destination-Host (RFC 6733 §6.5); `None`: any host of the realm may answer.
    pub host: Option<Cow<'m, str>>,
    /// Destination-Realm (§6.6); `None` with no Destination-Host either: the request is for
    /// this node (§6.1.4, third case).
    pub realm: Option<Cow<'m, str>>,
}

impl<'m> Destination<'m> {
    /// Reads both AVPs (the first of each) from `msg`.
    pub fn of(msg: &'m Message) -> Destination<'m> {
        let text = |code| {
            msg.find_ref(code, 0)
                .map(|a| String::from_utf8_lossy(a.data))
        };
        Destination {
            host: text(DESTINATION_HOST),
            realm: text(DESTINATION_REALM),
        }
    }
}

/// §6.1.4 for a node with identity `me` serving `realms` (DiameterIdentity comparisons
/// ignore ASCII case: DNS names).
pub fn decide(dest: &Destination, me: &str, realms: &[&str]) -> Delivery {
    let ours = |r: &str| realms.iter().any(|x| x.eq_ignore_ascii_case(r));
    match (&dest.host, &dest.realm) {
        (Some(h), _) if h.eq_ignore_ascii_case(me) => Delivery::Local,
        (Some(h), _) => Delivery::Elsewhere(NotOurs::OtherHost(h.to_string())),
        (None, Some(r)) if ours(r) => Delivery::Local,
        (None, Some(r)) => Delivery::Elsewhere(NotOurs::ForeignRealm(r.to_string())),
        (None, None) => Delivery::Local,
    }
}

/// The Route-Record values of a request, in order.
pub fn route_records(msg: &Message) -> Vec<String> {
    msg.avp_refs()
        .map_while(Result::ok)
        .filter(|a| a.code == ROUTE_RECORD && a.vendor == 0)
        .map(|a| String::from_utf8_lossy(a.data).into_owned())
        .collect()
}

/// §6.1.8: "A relay or proxy agent MUST check for forwarding loops when receiving requests.
/// A loop is detected if the server finds its own identity in a Route-Record AVP."
pub fn is_loop(records: &[String], me: &str) -> bool {
    records.iter().any(|r| r.eq_ignore_ascii_case(me))
}

/// The request as forwarded (§6.1.8): a relay appends a Route-Record AVP holding the
/// identity of the peer the request was received from, so the next agent can detect a loop;
/// the message length is patched; hop-by-hop id, end-to-end id, flags and every
/// other AVP unchanged (relays "MUST NOT modify non-routing AVPs", and Proxy-Info is left as
/// it is). The hop-by-hop id is replaced when the request is sent (pending table). `None`
/// when the result would exceed `max_len`.
pub fn forwarded(request: &[u8], received_from: &str, max_len: usize) -> Option<Bytes> {
    if request.len() < HEADER_LEN {
        return None;
    }
    let data = received_from.as_bytes();
    let avp_len = 8 + data.len();
    let padded = (avp_len + 3) & !3;
    let total = request.len() + padded;
    if total > max_len.min(0xff_ffff) {
        return None;
    }
    let mut b = BytesMut::with_capacity(total);
    b.extend_from_slice(request);
    b.put_u32(ROUTE_RECORD);
    // M bit: Route-Record is a base AVP that "MUST" be understood (§4.5 table).
    b.put_u32((u32::from(AvpFlags::M) << 24) | avp_len as u32);
    b.extend_from_slice(data);
    b.put_bytes(0, padded - avp_len);
    b[1..4].copy_from_slice(&(total as u32).to_be_bytes()[1..]);
    Some(b.freeze())
}

/// §6.2.2: "If the answer is for a request that was proxied or relayed, the agent MUST
/// restore the original value of the Diameter header's Hop-by-Hop Identifier field." The
/// rest of the answer is relayed as it came (a relay does not add or remove Proxy-Info).
pub fn restored(answer: &Bytes, original_hop_by_hop: u32) -> Bytes {
    crate::pending::with_hop_by_hop(answer, original_hop_by_hop)
}

/// The hosts a 3006 DIAMETER_REDIRECT_INDICATION answer names, in order: the FQDN of each
/// Redirect-Host (§6.12), a DiameterURI (§4.3.1: `"aaa://" / "aaas://"` FQDN, then an
/// optional `:port` and `;transport=` / `;protocol=` parameters). A value without the scheme
/// is read as a bare identity, as some agents send it.
pub fn redirect_hosts(answer: &Message) -> Vec<String> {
    answer
        .avp_refs()
        .map_while(Result::ok)
        .filter(|a| a.code == REDIRECT_HOST && a.vendor == 0)
        .filter_map(|a| std::str::from_utf8(a.data).ok().map(uri_host))
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The FQDN of a DiameterURI (see [`redirect_hosts`]).
fn uri_host(uri: &str) -> &str {
    let rest = ["aaas://", "aaa://"]
        .iter()
        .find_map(|scheme| {
            uri.get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &uri[scheme.len()..])
        })
        .unwrap_or(uri);
    rest.split([':', ';', '/']).next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::{Header, MessageWriter};

    fn msg(dh: Option<&str>, dr: Option<&str>) -> Message {
        let mut w = MessageWriter::new(Header::request(272, 4, 7, 8));
        w.str(263, AvpFlags::M, 0, "s;1");
        if let Some(h) = dh {
            w.str(DESTINATION_HOST, AvpFlags::M, 0, h);
        }
        if let Some(r) = dr {
            w.str(DESTINATION_REALM, AvpFlags::M, 0, r);
        }
        Message::decode(w.finish().unwrap()).unwrap()
    }

    #[test]
    fn local_delivery_rules_of_6_1_4() {
        let me = "node1.example.net";
        let realms = ["example.net"];
        let d = |dh, dr| decide(&Destination::of(&msg(dh, dr)), me, &realms);
        assert_eq!(
            d(Some("NODE1.example.net"), Some("other.net")),
            Delivery::Local
        );
        assert_eq!(d(None, Some("Example.NET")), Delivery::Local);
        assert_eq!(d(None, None), Delivery::Local);
        let other = d(Some("node2.example.net"), Some("example.net"));
        assert_eq!(
            other,
            Delivery::Elsewhere(NotOurs::OtherHost("node2.example.net".into()))
        );
        let Delivery::Elsewhere(n) = other else {
            unreachable!()
        };
        assert_eq!(n.result_code(), 3002);
        let Delivery::Elsewhere(n) = d(None, Some("other.net")) else {
            panic!("foreign realm is not local")
        };
        assert_eq!(n, NotOurs::ForeignRealm("other.net".into()));
        assert_eq!(n.result_code(), 3003);
    }

    #[test]
    fn forwarded_request_gets_route_record_and_keeps_the_rest() {
        let m = msg(Some("hss.example.net"), Some("example.net"));
        let fwd = forwarded(&m.to_bytes(), "client.example.net", 65536).unwrap();
        let f = Message::decode(fwd.clone()).unwrap();
        assert_eq!(f.header.hop_by_hop, 7);
        assert_eq!(f.header.end_to_end, 8);
        assert_eq!(f.header.flags, m.header.flags);
        assert_eq!(route_records(&f), ["client.example.net"]);
        assert_eq!(
            &fwd[HEADER_LEN..m.to_bytes().len()],
            &m.to_bytes()[HEADER_LEN..]
        );
        assert!(is_loop(&route_records(&f), "CLIENT.example.net"));
        assert!(!is_loop(&route_records(&f), "relay.example.net"));
        // Two relays: two records, in order; the length stays consistent.
        let f2 = Message::decode(forwarded(&fwd, "relay1.x", 65536).unwrap()).unwrap();
        assert_eq!(route_records(&f2), ["client.example.net", "relay1.x"]);
        assert!(forwarded(&fwd, "relay1.x", fwd.len() + 4).is_none());
    }

    #[test]
    fn redirect_hosts_are_the_fqdns_of_the_uris() {
        let mut w = MessageWriter::new(Header::request(272, 4, 7, 8).answer());
        for uri in [
            "aaa://hss1.example.net:3868;transport=tcp;protocol=diameter",
            "AAAS://hss2.example.net;transport=sctp",
            "hss3.example.net",
            "aaa://",
        ] {
            w.str(REDIRECT_HOST, AvpFlags::M, 0, uri);
        }
        let m = Message::decode(w.finish().unwrap()).unwrap();
        assert_eq!(
            redirect_hosts(&m),
            ["hss1.example.net", "hss2.example.net", "hss3.example.net"]
        );
    }
}
