//! The base-protocol messages the bench exchanges as a peer: CER/CEA, DWR/DWA, DPR/DPA, and
//! the outcome (Result-Code or Experimental-Result) of an answer.
//!
//! The bench is a client-only peer with one job, so this is deliberately smaller than the
//! node's peer state machine: it sends CER, checks the CEA, answers the peer's DWR and DPR,
//! answers any other request with 3001 (every request gets exactly one answer), and says
//! goodbye with DPR.

use std::net::IpAddr;

use bytes::Bytes;
use dmproto::avp::AvpFlags;
use dmproto::dict::{AppKind, Dictionary};
use dmproto::result_code::{self as rc};
use dmproto::{value, AvpRefs, EncodeError, Header, Message, MessageWriter, Value};

use super::stats::Outcome;
use super::template::Template;

pub mod cmd {
    pub const CER: u32 = 257;
    pub const DWR: u32 = 280;
    pub const DPR: u32 = 282;
}

use dmproto::avp_code as avp;

const M: u8 = AvpFlags::M;

/// Disconnect-Cause DO_NOT_WANT_TO_TALK_TO_YOU: the run is over, do not reconnect to us.
pub const DISCONNECT_DO_NOT_WANT_TO_TALK_TO_YOU: u32 = 2;

/// Who the bench says it is.
#[derive(Clone, Debug)]
pub struct LocalNode {
    pub origin_host: String,
    pub origin_realm: String,
    pub origin_state_id: u32,
}

/// One application advertised in CER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppAdvert {
    pub id: u32,
    /// Non-zero: advertised inside Vendor-Specific-Application-Id with this Vendor-Id.
    pub vendor: u32,
    pub acct: bool,
}

impl AppAdvert {
    /// The application a template's requests belong to, as the peer should see it in CER:
    /// from the template's own Vendor-Specific-Application-Id if it has one, else from the
    /// dictionary's application definition, else a plain Auth-Application-Id.
    pub fn for_template(t: &Template, dict: &Dictionary) -> AppAdvert {
        let id = t.app_id();
        if let Some(data) = t.top_level_data(avp::VENDOR_SPECIFIC_APPLICATION_ID, 0) {
            let mut vendor = 0;
            let mut acct = None;
            for a in AvpRefs::new(&data, 0).map_while(Result::ok) {
                let v = value::decode_u32(a.data).ok();
                match (a.code, v) {
                    (avp::VENDOR_ID, Some(v)) => vendor = v,
                    (avp::AUTH_APPLICATION_ID, Some(v)) if v == id => acct = Some(false),
                    (avp::ACCT_APPLICATION_ID, Some(v)) if v == id => acct = Some(true),
                    _ => {}
                }
            }
            if let (Some(acct), true) = (acct, vendor != 0) {
                return AppAdvert { id, vendor, acct };
            }
        }
        match dict.application(id) {
            Some(app) => AppAdvert {
                id,
                vendor: app.vendor,
                acct: app.kind == AppKind::Acct,
            },
            None => AppAdvert {
                id,
                vendor: 0,
                acct: false,
            },
        }
    }
}

fn base_answer(req: &Message, node: &LocalNode, result: u32) -> MessageWriter {
    let h = if (3000..4000).contains(&result) {
        req.header.error_answer()
    } else {
        req.header.answer()
    };
    let mut w = MessageWriter::new(h);
    w.u32(avp::RESULT_CODE, M, 0, result)
        .str(avp::ORIGIN_HOST, M, 0, &node.origin_host)
        .str(avp::ORIGIN_REALM, M, 0, &node.origin_realm);
    w
}

/// Capabilities-Exchange-Request (RFC 6733 §5.3.1).
pub fn cer(
    node: &LocalNode,
    host_ip: IpAddr,
    apps: &[AppAdvert],
    hop_by_hop: u32,
    end_to_end: u32,
) -> Result<Bytes, EncodeError> {
    let mut h = Header::request(cmd::CER, 0, hop_by_hop, end_to_end);
    h.flags = dmproto::Flags(dmproto::Flags::R);
    let mut w = MessageWriter::new(h);
    w.str(avp::ORIGIN_HOST, M, 0, &node.origin_host)
        .str(avp::ORIGIN_REALM, M, 0, &node.origin_realm)
        .value(avp::HOST_IP_ADDRESS, M, 0, &Value::Address(host_ip.into()))
        .u32(avp::VENDOR_ID, M, 0, 0)
        .str(avp::PRODUCT_NAME, 0, 0, "dmbridge bench")
        .u32(avp::ORIGIN_STATE_ID, M, 0, node.origin_state_id);
    let mut vendors: Vec<u32> = apps.iter().map(|a| a.vendor).filter(|&v| v != 0).collect();
    vendors.sort_unstable();
    vendors.dedup();
    for v in vendors {
        w.u32(avp::SUPPORTED_VENDOR_ID, M, 0, v);
    }
    for a in apps {
        let code = if a.acct {
            avp::ACCT_APPLICATION_ID
        } else {
            avp::AUTH_APPLICATION_ID
        };
        if a.vendor == 0 {
            w.u32(code, M, 0, a.id);
        } else {
            w.group(avp::VENDOR_SPECIFIC_APPLICATION_ID, M, 0, |w| {
                w.u32(avp::VENDOR_ID, M, 0, a.vendor).u32(code, M, 0, a.id);
            });
        }
    }
    w.u32(avp::FIRMWARE_REVISION, 0, 0, firmware_revision());
    w.finish()
}

/// The crate version as a number (0.1.0 -> 100), as Firmware-Revision wants.
fn firmware_revision() -> u32 {
    let mut n = 0u32;
    for part in env!("CARGO_PKG_VERSION").split('.').take(3) {
        n = n
            .saturating_mul(100)
            .saturating_add(part.parse().unwrap_or(0));
    }
    n
}

/// What the peer said in its CEA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub origin_host: String,
    pub origin_realm: String,
    pub product_name: String,
}

/// Why a CEA refuses us or is not one. The text names the code and the peer's Error-Message,
/// for the operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CeaError {
    /// Another message came where the CEA was due.
    #[error("expected a CEA, got {} {code} (application {app_id})", if *.request { "request" } else { "answer" })]
    NotCea {
        request: bool,
        code: u32,
        app_id: u32,
    },
    /// RFC 6733 §5.3.2: a CEA whose Result-Code is not 2xxx refuses the connection.
    #[error("CEA from {origin_host:?}: Result-Code {code} {}{}",
        rc::name(*.code).unwrap_or("(unknown)"),
        if .error_message.is_empty() { String::new() } else { format!(": {}", .error_message) })]
    Refused {
        origin_host: String,
        code: u32,
        /// The peer's Error-Message, empty when it sent none.
        error_message: String,
    },
    /// RFC 6733 §5.3.2: the Result-Code AVP is required in a CEA.
    #[error("CEA from {origin_host:?} has no Result-Code")]
    NoResultCode { origin_host: String },
}

/// Checks a CEA: it must be an answer to CER with a 2xxx Result-Code.
pub fn check_cea(m: &Message) -> Result<PeerInfo, CeaError> {
    if m.is_request() || m.header.code != cmd::CER {
        return Err(CeaError::NotCea {
            request: m.is_request(),
            code: m.header.code,
            app_id: m.header.app_id,
        });
    }
    let text = |code| {
        m.find_ref(code, 0)
            .and_then(|a| value::decode_str(a.data).ok())
            .unwrap_or_default()
            .to_string()
    };
    let info = PeerInfo {
        origin_host: text(avp::ORIGIN_HOST),
        origin_realm: text(avp::ORIGIN_REALM),
        product_name: text(avp::PRODUCT_NAME),
    };
    match m.find_u32(avp::RESULT_CODE, 0) {
        Some(c) if (2000..3000).contains(&c) => Ok(info),
        Some(code) => Err(CeaError::Refused {
            origin_host: info.origin_host,
            code,
            error_message: text(avp::ERROR_MESSAGE),
        }),
        None => Err(CeaError::NoResultCode {
            origin_host: info.origin_host,
        }),
    }
}

/// Device-Watchdog-Answer to a DWR.
pub fn dwa(node: &LocalNode, req: &Message) -> Result<Bytes, EncodeError> {
    let mut w = base_answer(req, node, rc::DIAMETER_SUCCESS);
    w.u32(avp::ORIGIN_STATE_ID, M, 0, node.origin_state_id);
    w.finish()
}

/// Disconnect-Peer-Answer to a DPR.
pub fn dpa(node: &LocalNode, req: &Message) -> Result<Bytes, EncodeError> {
    base_answer(req, node, rc::DIAMETER_SUCCESS).finish()
}

/// 3001 DIAMETER_COMMAND_UNSUPPORTED (E bit) for any other request: the bench serves nothing,
/// but leaves no request unanswered.
pub fn unsupported(node: &LocalNode, req: &Message) -> Result<Bytes, EncodeError> {
    base_answer(req, node, rc::DIAMETER_COMMAND_UNSUPPORTED).finish()
}

/// Device-Watchdog-Request: sent once after the CEA, and the load starts with its DWA.
/// Some servers (Erlang/OTP diameter) register a new peer only after answering its CER and
/// silently drop requests that arrive in between; a DWR round trip closes that gap.
pub fn dwr(node: &LocalNode, hop_by_hop: u32, end_to_end: u32) -> Result<Bytes, EncodeError> {
    let mut w = MessageWriter::new(Header::request(cmd::DWR, 0, hop_by_hop, end_to_end));
    w.str(avp::ORIGIN_HOST, M, 0, &node.origin_host)
        .str(avp::ORIGIN_REALM, M, 0, &node.origin_realm)
        .u32(avp::ORIGIN_STATE_ID, M, 0, node.origin_state_id);
    w.finish()
}

/// Disconnect-Peer-Request.
pub fn dpr(
    node: &LocalNode,
    hop_by_hop: u32,
    end_to_end: u32,
    cause: u32,
) -> Result<Bytes, EncodeError> {
    let mut w = MessageWriter::new(Header::request(cmd::DPR, 0, hop_by_hop, end_to_end));
    w.str(avp::ORIGIN_HOST, M, 0, &node.origin_host)
        .str(avp::ORIGIN_REALM, M, 0, &node.origin_realm)
        .u32(avp::DISCONNECT_CAUSE, M, 0, cause);
    w.finish()
}

/// The Disconnect-Cause of a DPR, if present.
pub fn disconnect_cause(m: &Message) -> Option<u32> {
    m.find_u32(avp::DISCONNECT_CAUSE, 0)
}

/// The outcome of an answer in one pass over its top-level AVPs: the Result-Code if there is
/// one, else the Experimental-Result's code and vendor.
pub fn outcome(m: &Message) -> Outcome {
    let mut experimental = None;
    for a in m.avp_refs().map_while(Result::ok) {
        match a.code {
            avp::RESULT_CODE if a.vendor == 0 => {
                if let Ok(c) = value::decode_u32(a.data) {
                    return Outcome::Result(c);
                }
            }
            avp::EXPERIMENTAL_RESULT if a.vendor == 0 && experimental.is_none() => {
                let (mut vendor, mut code) = (0, None);
                for k in a.group().map_while(Result::ok) {
                    match (k.code, value::decode_u32(k.data)) {
                        (avp::VENDOR_ID, Ok(v)) => vendor = v,
                        (avp::EXPERIMENTAL_RESULT_CODE, Ok(c)) => code = Some(c),
                        _ => {}
                    }
                }
                experimental = code.map(|code| Outcome::Experimental { vendor, code });
            }
            _ => {}
        }
    }
    experimental.unwrap_or(Outcome::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::Flags;

    fn node() -> LocalNode {
        LocalNode {
            origin_host: "bench.test.local".into(),
            origin_realm: "test.local".into(),
            origin_state_id: 7,
        }
    }

    #[test]
    fn cer_advertises_apps_and_identity() {
        let apps = [
            AppAdvert {
                id: 4,
                vendor: 0,
                acct: false,
            },
            AppAdvert {
                id: 16777216,
                vendor: 10415,
                acct: false,
            },
            AppAdvert {
                id: 3,
                vendor: 0,
                acct: true,
            },
        ];
        let b = cer(&node(), "::1".parse().unwrap(), &apps, 1, 2).unwrap();
        let m = Message::decode(b).unwrap();
        assert!(m.is_request());
        assert_eq!(m.header.code, 257);
        assert_eq!(m.find_u32(avp::AUTH_APPLICATION_ID, 0), Some(4));
        assert_eq!(m.find_u32(avp::ACCT_APPLICATION_ID, 0), Some(3));
        assert_eq!(m.find_u32(avp::SUPPORTED_VENDOR_ID, 0), Some(10415));
        let vsai = m.find_ref(avp::VENDOR_SPECIFIC_APPLICATION_ID, 0).unwrap();
        let kids: Vec<_> = vsai.group().map(|a| a.unwrap().code).collect();
        assert_eq!(kids, [avp::VENDOR_ID, avp::AUTH_APPLICATION_ID]);
        let ip = m.find_ref(avp::HOST_IP_ADDRESS, 0).unwrap();
        assert_eq!(ip.data.len(), 18, "IPv6 Host-IP-Address");
        assert_eq!(m.session_id(), None);
        assert!(dmproto::validate_request(&m, Dictionary::builtin()).is_ok());
    }

    fn answer(result: Option<u32>, experimental: Option<(u32, u32)>) -> Message {
        let mut w = MessageWriter::new(Header::request(272, 4, 1, 1).answer());
        if let Some(r) = result {
            w.u32(avp::RESULT_CODE, M, 0, r);
        }
        if let Some((v, c)) = experimental {
            w.group(avp::EXPERIMENTAL_RESULT, M, 0, |w| {
                w.u32(avp::VENDOR_ID, M, 0, v)
                    .u32(avp::EXPERIMENTAL_RESULT_CODE, M, 0, c);
            });
        }
        Message::decode(w.finish().unwrap()).unwrap()
    }

    #[test]
    fn outcome_prefers_result_code_then_experimental() {
        assert_eq!(outcome(&answer(Some(2001), None)), Outcome::Result(2001));
        assert_eq!(
            outcome(&answer(None, Some((10415, 5001)))),
            Outcome::Experimental {
                vendor: 10415,
                code: 5001
            }
        );
        assert_eq!(
            outcome(&answer(Some(5012), Some((10415, 5001)))),
            Outcome::Result(5012)
        );
        assert_eq!(outcome(&answer(None, None)), Outcome::Missing);
    }

    #[test]
    fn cea_check() {
        let mk = |rc: u32| {
            let mut w = MessageWriter::new(Header::request(257, 0, 1, 1).answer());
            w.u32(avp::RESULT_CODE, M, 0, rc)
                .str(avp::ORIGIN_HOST, M, 0, "server.test.local")
                .str(avp::ERROR_MESSAGE, 0, 0, "go away");
            Message::decode(w.finish().unwrap()).unwrap()
        };
        assert_eq!(
            check_cea(&mk(2001)).unwrap().origin_host,
            "server.test.local"
        );
        let e = check_cea(&mk(3010)).unwrap_err();
        assert_eq!(
            e,
            CeaError::Refused {
                origin_host: "server.test.local".into(),
                code: 3010,
                error_message: "go away".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "CEA from \"server.test.local\": Result-Code 3010 DIAMETER_UNKNOWN_PEER: go away"
        );
        let req = Message::decode(cer(&node(), "127.0.0.1".parse().unwrap(), &[], 1, 1).unwrap())
            .unwrap();
        assert!(matches!(
            check_cea(&req),
            Err(CeaError::NotCea {
                request: true,
                code: 257,
                ..
            })
        ));
    }

    #[test]
    fn answers_to_peer_requests() {
        let mut w = MessageWriter::new(Header::request(cmd::DWR, 0, 5, 6));
        w.str(avp::ORIGIN_HOST, M, 0, "x")
            .str(avp::ORIGIN_REALM, M, 0, "y");
        let dwr = Message::decode(w.finish().unwrap()).unwrap();
        let a = Message::decode(dwa(&node(), &dwr).unwrap()).unwrap();
        assert!(!a.is_request());
        assert_eq!(
            (a.header.code, a.header.hop_by_hop, a.header.end_to_end),
            (280, 5, 6)
        );
        assert_eq!(a.find_u32(avp::RESULT_CODE, 0), Some(2001));
        let u = Message::decode(unsupported(&node(), &dwr).unwrap()).unwrap();
        assert!(u.header.flags.contains(Flags::E));
        assert_eq!(u.find_u32(avp::RESULT_CODE, 0), Some(3001));
        let d = Message::decode(dpr(&node(), 1, 2, 2).unwrap()).unwrap();
        assert_eq!(disconnect_cause(&d), Some(2));
    }
}
