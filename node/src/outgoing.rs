//! Completing the requests the application originates (DESIGN §2): the script gives the
//! AVPs that matter to it, the node adds what the protocol requires.
//!
//! - **Session-Id** first: the script's, moved to the front, or a new one (RFC 6733 §8.8
//!   format `<Origin-Host>;<high 32 bits>;<low 32 bits>`) when the command's ABNF begins with
//!   `< Session-Id >`.
//! - **Origin-Host / Origin-Realm**: always ours (answers must find their way back to this
//!   node); the script's, if any, are dropped.
//! - **Destination-Realm** from the configuration when the script gives none.
//! - **The application-id AVP** the ABNF asks for (Auth-Application-Id, Acct-Application-Id or
//!   Vendor-Specific-Application-Id), matching how we advertise the application, when absent.
//! - The **P bit** from the dictionary's command definition.
//!
//! The builder returns, with the bytes, the routing facts it wrote ([`Built::route`]): the
//! router reads those rather than decoding what was just encoded. [`route_info`] reads them
//! from an encoded request (a received one to relay, a stored one to resend after failover).

use bytes::{Bytes, BytesMut};
use dmproto::avp::AvpFlags;
use dmproto::dict::Dictionary;
use dmproto::{AvpRefs, Flags, Header, Message, MessageWriter};

use crate::answer::{Origin, SESSION_ID};
use crate::app::{OutgoingRequest, RequestError};
use crate::config::{AppAdvert, AppKind};
use crate::peer::wire::avp;
use crate::router::RouteRequest;
use crate::rules::RequestView;

const M: u8 = AvpFlags::M;

/// Generates Session-Ids unique to this node run.
#[derive(Clone, Debug, Default)]
pub struct SessionIds {
    host: String,
    high: u32,
    low: u32,
    /// The last id, written in place: no allocation per request once it has grown.
    last: String,
}

impl SessionIds {
    /// `high` should differ per run: the start time in seconds, as RFC 6733 §8.8 recommends.
    /// The low part starts from `start_micros` (the microseconds within that second) times
    /// 4096, where the RFC's recommended method starts it at zero: two runs started in the
    /// same second (a crash and a restart by systemd) would then make the same ids, which
    /// §8.8 forbids ("MUST be globally and eternally unique"). Runs even 1 ms apart start
    /// 4 million ids apart, more than a run that lasted under a second can make; 999_999 x
    /// 4096 still leaves 199 million ids before the low part carries into the high one.
    pub fn new(origin_host: &str, high: u32, start_micros: u32) -> SessionIds {
        SessionIds {
            host: origin_host.to_string(),
            high,
            low: start_micros.min(999_999) << 12,
            last: String::new(),
        }
    }

    /// The next `<Origin-Host>;<high 32 bits>;<low 32 bits>` (RFC 6733 §8.8's recommended
    /// form); the low part counts, carrying into the high part.
    pub fn next_id(&mut self) -> String {
        self.next_in_place().to_owned()
    }

    /// [`SessionIds::next_id`] written into a buffer the generator keeps (issue 15 item 2).
    pub fn next_in_place(&mut self) -> &str {
        use std::fmt::Write;
        self.low = self.low.wrapping_add(1);
        if self.low == 0 {
            self.high = self.high.wrapping_add(1);
        }
        self.last.clear();
        let _ = write!(self.last, "{};{};{}", self.host, self.high, self.low);
        &self.last
    }
}

/// What completing a request needs from the node.
#[derive(Clone, Copy, Debug)]
pub struct RequestContext<'a> {
    /// Our Origin-Host/-Realm: they replace any the script wrote (RFC 6733 §6.3: the
    /// originator's identity is the node's, not the script's to choose).
    pub origin: Origin<'a>,
    /// Destination-Realm for requests that give none.
    pub destination_realm: Option<&'a str>,
    /// How we advertise each application: decides whether the application-id AVP added
    /// to a request is Vendor-Specific-Application-Id or a bare Auth/Acct-Application-Id.
    pub applications: &'a [AppAdvert],
    /// The command's ABNF: whether it starts with Session-Id, which application-id AVP it
    /// lists, whether it is proxiable (the P bit).
    pub dict: &'a Dictionary,
    /// `[limits] max_message_size`, in bytes: a larger request fails
    /// [`RequestError::Invalid`] instead of being sent.
    pub max_len: usize,
}

/// A request built by [`build_request`], with the routing facts it carries.
pub struct Built<'a> {
    /// The encoded request, hop-by-hop id 0: it is written when the request is sent on a
    /// connection ([`crate::pending::stamp`]), the id being per connection (RFC 6733 §3).
    pub bytes: Bytes,
    /// What [`route_info`] would read from `bytes`, borrowed from the context and the
    /// script's AVPs; its Session-Id is `None` when the node generated one (`session`).
    pub route: RouteInfo<'a>,
    /// The Session-Id the node generated, if it did (the generator's buffer).
    pub session: Option<&'a str>,
}

/// Builds the complete request into `buf` (empty: [`crate::arena::Pool::take`]).
pub fn build_request<'a>(
    ctx: &RequestContext<'a>,
    req: &'a OutgoingRequest,
    end_to_end: u32,
    sessions: &'a mut SessionIds,
    buf: BytesMut,
) -> Result<Built<'a>, RequestError> {
    let mut session = None;
    let mut has_dest_realm = false;
    let mut has_app_avp = false;
    // The facts as `route_info` reads them from the finished request: ours for Origin-*
    // (the script's are dropped), the script's others, the last occurrence winning.
    let mut route = RouteInfo::default();
    route.view.cmd_code = req.cmd_code;
    route.view.origin_host = Some(ctx.origin.host);
    route.view.origin_realm = Some(ctx.origin.realm);
    for a in AvpRefs::new(&req.avps, 0) {
        let a = a.map_err(|e| RequestError::Invalid(format!("malformed AVPs: {e}")))?;
        if a.vendor != 0 {
            continue;
        }
        let text = || std::str::from_utf8(a.data).ok();
        let v = &mut route.view;
        match a.code {
            SESSION_ID => {
                session = session.or(Some(a.raw));
                v.session_id = text();
            }
            avp::DESTINATION_REALM => {
                has_dest_realm = true;
                v.destination_realm = text();
            }
            avp::AUTH_APPLICATION_ID
            | avp::ACCT_APPLICATION_ID
            | avp::VENDOR_SPECIFIC_APPLICATION_ID => has_app_avp = true,
            avp::DESTINATION_HOST => v.destination_host = text(),
            avp::ROUTE_RECORD => route.route_records.extend(text()),
            avp::USER_NAME => v.user_name = text(),
            _ => {}
        }
    }
    let command = ctx.dict.command(req.app_id, req.cmd_code);
    let mut header = Header::request(req.cmd_code, req.app_id, 0, end_to_end);
    if !matches!(command, Some(c) if !c.proxiable) {
        header.flags = header.flags.with(Flags::P);
    }
    let mut w = MessageWriter::with_buffer(buf, header).max_len(ctx.max_len);
    let rules = command.map(|c| &c.request.rules[..]).unwrap_or(&[]);
    let listed = |code: u32| rules.iter().any(|r| r.code == code && r.vendor == 0);

    let mut generated = None;
    match session {
        Some(raw) => {
            w.raw(raw);
        }
        None if rules
            .first()
            .is_some_and(|r| r.code == SESSION_ID && r.vendor == 0) =>
        {
            let id = sessions.next_in_place();
            w.str(SESSION_ID, M, 0, id);
            generated = Some(id);
        }
        None => {}
    }
    if !has_app_avp {
        let advert = ctx.applications.iter().find(|a| a.id == req.app_id);
        match advert {
            Some(a) if a.vendor.is_some() && listed(avp::VENDOR_SPECIFIC_APPLICATION_ID) => {
                let code = match a.kind {
                    AppKind::Auth => avp::AUTH_APPLICATION_ID,
                    AppKind::Acct => avp::ACCT_APPLICATION_ID,
                };
                w.group(avp::VENDOR_SPECIFIC_APPLICATION_ID, M, 0, |w| {
                    w.u32(avp::VENDOR_ID, M, 0, a.vendor.unwrap_or(0));
                    w.u32(code, M, 0, req.app_id);
                });
            }
            _ if listed(avp::AUTH_APPLICATION_ID) => {
                w.u32(avp::AUTH_APPLICATION_ID, M, 0, req.app_id);
            }
            _ if listed(avp::ACCT_APPLICATION_ID) => {
                w.u32(avp::ACCT_APPLICATION_ID, M, 0, req.app_id);
            }
            _ => {}
        }
    }
    w.str(avp::ORIGIN_HOST, M, 0, ctx.origin.host);
    w.str(avp::ORIGIN_REALM, M, 0, ctx.origin.realm);
    if !has_dest_realm {
        if let Some(realm) = ctx.destination_realm {
            w.str(avp::DESTINATION_REALM, M, 0, realm);
            route.view.destination_realm = Some(realm);
        }
    }
    let mut first_session = true;
    for a in AvpRefs::new(&req.avps, 0).map_while(Result::ok) {
        if a.vendor == 0 {
            match a.code {
                SESSION_ID if first_session => {
                    first_session = false;
                    continue;
                }
                avp::ORIGIN_HOST | avp::ORIGIN_REALM => continue,
                _ => {}
            }
        }
        w.raw(a.raw);
    }
    let bytes = w
        .finish()
        .map_err(|e| RequestError::Invalid(e.to_string()))?;
    Ok(Built {
        bytes,
        route,
        session: generated,
    })
}

/// The routing-relevant AVPs of a request: what routing rules may look at (Destination-Host
/// and -Realm, Origin-Host and -Realm, User-Name, Session-Id, the command) as the rules' own
/// [`RequestView`], and the Route-Record values (as text; invalid UTF-8 ones are skipped).
#[derive(Default)]
pub struct RouteInfo<'m> {
    /// What the rules and the realm table match on; `app_id` and `cmd_abbrev` are filled by
    /// [`RouteInfo::request`].
    pub view: RequestView<'m>,
    /// Route-Record values, in order: the hosts the request has passed; our own among them
    /// is a loop (RFC 6733 §6.1.3: 3005 DIAMETER_LOOP_DETECTED).
    pub route_records: Vec<&'m str>,
}

/// Reads a finished request's routing facts: for relayed requests and failover resends,
/// whose bytes are all we have (a request we build reports them from [`build_request`]).
pub fn route_info(msg: &Message) -> RouteInfo<'_> {
    let mut info = RouteInfo::default();
    info.view.cmd_code = msg.header.code;
    let v = &mut info.view;
    for a in msg.avp_refs().map_while(Result::ok) {
        if a.vendor != 0 {
            continue;
        }
        let text = || std::str::from_utf8(a.data).ok();
        match a.code {
            avp::DESTINATION_HOST => v.destination_host = text(),
            avp::DESTINATION_REALM => v.destination_realm = text(),
            avp::ROUTE_RECORD => info.route_records.extend(text()),
            avp::ORIGIN_HOST => v.origin_host = text(),
            avp::ORIGIN_REALM => v.origin_realm = text(),
            avp::USER_NAME => v.user_name = text(),
            avp::SESSION_ID => v.session_id = text(),
            _ => {}
        }
    }
    info
}

impl RouteInfo<'_> {
    /// The router's view; `cmd_abbrev` is the command's request abbreviation from the
    /// dictionary, for rules written `cmd="CCR"`.
    pub fn request<'a>(&'a self, app_id: u32, cmd_abbrev: Option<&'a str>) -> RouteRequest<'a> {
        RouteRequest {
            view: RequestView {
                app_id,
                cmd_abbrev,
                ..self.view
            },
            route_records: &self.route_records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CX: u32 = 16777216;
    const ORIGIN: Origin<'static> = Origin {
        host: "bridge.example.net",
        realm: "example.net",
    };

    fn apps() -> Vec<AppAdvert> {
        vec![
            AppAdvert {
                id: CX,
                kind: AppKind::Auth,
                vendor: Some(10415),
            },
            AppAdvert {
                id: 4,
                kind: AppKind::Auth,
                vendor: None,
            },
        ]
    }

    fn avps(f: impl FnOnce(&mut MessageWriter)) -> Bytes {
        let mut w = MessageWriter::avps_only();
        f(&mut w);
        w.finish().unwrap()
    }

    fn build(app_id: u32, cmd: u32, body: Bytes) -> Message {
        let apps = apps();
        let ctx = RequestContext {
            origin: ORIGIN,
            destination_realm: Some("ims.example.net"),
            applications: &apps,
            dict: Dictionary::builtin(),
            max_len: 65536,
        };
        let mut sessions = SessionIds::new("bridge.example.net", 1700000000, 0);
        let req = OutgoingRequest {
            app_id,
            cmd_code: cmd,
            avps: body,
            timeout: None,
        };
        let built = build_request(&ctx, &req, 8, &mut sessions, BytesMut::new()).unwrap();
        let m = Message::decode(built.bytes.clone()).unwrap();
        // The facts the builder returns are the ones the router would read from the bytes.
        let mut facts = built.route;
        facts.view.session_id = facts.view.session_id.or(built.session);
        let read = route_info(&m);
        assert_eq!(facts.view, read.view);
        assert_eq!(facts.route_records, read.route_records);
        m
    }

    fn codes(m: &Message) -> Vec<u32> {
        m.avp_refs().map(|a| a.unwrap().code).collect()
    }

    #[test]
    fn cx_uar_gets_session_vsai_origin_and_destination() {
        // UAR (300) of Cx: < Session-Id > first, [ Vendor-Specific-Application-Id ].
        let m = build(
            CX,
            300,
            avps(|w| {
                w.str(1, M, 0, "user@example.net"); // User-Name
            }),
        );
        assert!(m.is_request());
        assert!(m.header.flags.is_proxiable());
        assert_eq!(
            (m.header.hop_by_hop, m.header.end_to_end),
            (0, 8),
            "the hop-by-hop id is written when it is sent"
        );
        assert_eq!(codes(&m), vec![263, 260, 264, 296, 283, 1]);
        assert_eq!(m.session_id(), Some("bridge.example.net;1700000000;1"));
        let vsai = m.find(260, 0).unwrap();
        let inner: Vec<(u32, u32)> = vsai
            .group()
            .map(|a| a.unwrap())
            .map(|a| (a.code, dmproto::value::decode_u32(&a.data).unwrap()))
            .collect();
        assert_eq!(inner, vec![(266, 10415), (258, CX)]);
    }

    #[test]
    fn script_session_id_is_moved_first_and_origin_replaced() {
        let m = build(
            4,
            272,
            avps(|w| {
                w.u32(416, M, 0, 1); // CC-Request-Type
                w.str(263, M, 0, "mine;1");
                w.str(264, M, 0, "spoofed.example.net");
                w.str(283, M, 0, "ocs.net");
            }),
        );
        assert_eq!(m.session_id(), Some("mine;1"));
        assert_eq!(codes(&m).first(), Some(&263));
        assert_eq!(m.find_ref(264, 0).unwrap().data, b"bridge.example.net");
        assert_eq!(codes(&m).iter().filter(|c| **c == 264).count(), 1);
        assert_eq!(
            m.find_ref(283, 0).unwrap().data,
            b"ocs.net",
            "script's realm kept"
        );
        assert_eq!(codes(&m).iter().filter(|c| **c == 283).count(), 1);
        assert_eq!(m.find_u32(258, 0), Some(4), "CCR lists Auth-Application-Id");
    }

    #[test]
    fn session_ids_are_unique() {
        let mut s = SessionIds::new("h", 5, 0);
        let a = s.next_id();
        let b = s.next_id();
        assert_ne!(a, b);
        assert_eq!(a, "h;5;1");
        // Two runs started in the same second, 1 ms apart: the first would have to make
        // four million ids before it met the second's first one.
        let mut first = SessionIds::new("h", 5, 250_000);
        let mut second = SessionIds::new("h", 5, 251_000);
        assert_eq!(first.next_id(), "h;5;1024000001");
        assert_eq!(second.next_id(), "h;5;1028096001");
        // The last microsecond of a second still fits the low 32 bits.
        assert_eq!(SessionIds::new("h", 5, 999_999).next_id(), "h;5;4095995905");
    }

    #[test]
    fn malformed_avps_are_invalid() {
        let apps = apps();
        let ctx = RequestContext {
            origin: ORIGIN,
            destination_realm: None,
            applications: &apps,
            dict: Dictionary::builtin(),
            max_len: 65536,
        };
        let req = OutgoingRequest {
            app_id: 4,
            cmd_code: 272,
            avps: Bytes::from_static(&[1, 2, 3]),
            timeout: None,
        };
        let mut s = SessionIds::new("h", 1, 0);
        assert!(matches!(
            build_request(&ctx, &req, 1, &mut s, BytesMut::new()),
            Err(RequestError::Invalid(_))
        ));
    }

    #[test]
    fn route_info_reads_destination_and_route_records() {
        let m = build(
            4,
            272,
            avps(|w| {
                w.str(293, M, 0, "ocs1.ocs.net");
                w.str(282, M, 0, "dra1.net");
                w.str(282, M, 0, "dra2.net");
            }),
        );
        let info = route_info(&m);
        assert_eq!(info.view.destination_host, Some("ocs1.ocs.net"));
        assert_eq!(info.view.destination_realm, Some("ims.example.net"));
        assert_eq!(info.route_records, vec!["dra1.net", "dra2.net"]);
        assert_eq!(info.request(4, None).view.app_id, 4);
    }

    #[test]
    fn built_route_facts_match_the_bytes_in_the_odd_cases_too() {
        // `build` asserts that the facts returned equal those read back from the bytes:
        // two Session-Ids (the last is read), an invalid UTF-8 Destination-Host after a
        // valid one, the script's realm and its own Origin-Host (dropped), a User-Name.
        let script: [(u32, &[u8]); 7] = [
            (263, b"first;1"),
            (1, b"alice"),
            (293, b"ocs1.ocs.net"),
            (293, &[0xff, 0xfe]),
            (283, b"other.net"),
            (264, b"spoofed.example.net"),
            (263, b"second;2"),
        ];
        let body = avps(|w| {
            for (code, data) in script {
                w.avp(code, M, 0, data);
            }
            w.u32(293, M, 10415, 1); // vendor-specific: not a routing fact
        });
        let m = build(4, 272, body);
        let v = route_info(&m).view;
        assert_eq!(
            (v.session_id, v.destination_host, v.destination_realm),
            (Some("second;2"), None, Some("other.net"))
        );
        assert_eq!(
            (v.origin_host, v.user_name),
            (Some("bridge.example.net"), Some("alice"))
        );
        // A generated Session-Id is returned beside the facts.
        let g = build(
            CX,
            300,
            avps(|w| {
                w.str(1, M, 0, "bob");
            }),
        );
        assert_eq!(route_info(&g).view.session_id, g.session_id());
    }
}
