//! Building the answer the node itself sends when a request fails validation (RFC 6733 §7).
//!
//! A protocol error (3xxx) is answered in the generic `answer-message` format of §7.2 with
//! the E bit:
//!
//! ```text
//! <answer-message> ::= < Diameter Header: code, ERR [, PXY] >
//!                      0*1< Session-Id >
//!                         { Origin-Host }
//!                         { Origin-Realm }
//!                         { Result-Code }
//!                         [ Origin-State-Id ]
//!                         [ Error-Message ]
//!                         [ Error-Reporting-Host ]
//!                         [ Failed-AVP ]
//!                         [ Experimental-Result ]
//!                       * [ Proxy-Info ]
//!                       * [ AVP ]
//! ```
//!
//! Other failures (5xxx) are ordinary answers of the command, so they must also satisfy the
//! command's answer ABNF: the AVPs it requires that the request carries and an error answer
//! cannot invent (Auth-Application-Id, CC-Request-Type, CC-Request-Number, ...) are copied
//! from the request. Proxy-Info AVPs are copied back in order (§6.2). Copied AVPs keep their
//! payload but get the flags the dictionary gives them, so a request whose fault was an
//! AVP's flags does not get an answer with the same fault.

use bytes::Bytes;

use crate::avp::AvpFlags;
use crate::dict::Dictionary;
use crate::encode::MessageWriter;
use crate::error::EncodeError;
use crate::header::Header;
use crate::message::{Message, SESSION_ID};
use crate::validate::ProtocolError;

pub use crate::avp_code::{
    ERROR_MESSAGE, FAILED_AVP, ORIGIN_HOST, ORIGIN_REALM, PROXY_INFO, RESULT_CODE,
};

/// Who is answering: the node's own identity.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    /// Origin-Host of every answer we build (RFC 6733 §6.2: an answer names its sender, not the
    /// request's).
    pub origin_host: &'a str,
    /// Origin-Realm of every answer we build.
    pub origin_realm: &'a str,
}

/// The answer to `request` reporting `err`: E bit for 3xxx, Session-Id first (when the
/// request has one), Origin-Host/Realm, Result-Code, Error-Message, Failed-AVP, the
/// request's required AVPs for 5xxx answers (see the module docs) and its Proxy-Info.
pub fn error_answer(
    request: &Message,
    err: &ProtocolError,
    dict: &Dictionary,
    me: Identity<'_>,
) -> Result<Bytes, EncodeError> {
    let header = if err.is_protocol_error() {
        request.header.error_answer()
    } else {
        request.header.answer()
    };
    let mut w = MessageWriter::new(header);
    if let Some(s) = request.find_ref(SESSION_ID, 0) {
        copy(&mut w, &s, dict);
    }
    write_result(&mut w, me, err.result_code, &err.message);
    if let Some(f) = &err.failed_avp {
        w.begin_group(FAILED_AVP, AvpFlags::M, 0).raw(f).end_group();
    }
    if !err.is_protocol_error() {
        copy_required(&mut w, request, dict);
    }
    copy_proxy_info(&mut w, request, dict);
    w.finish()
}

/// Copies an AVP of the request into the answer with the same payload, its flags set as the
/// dictionary says (M if it does not know the AVP): the request's own flags may be what was
/// wrong with it, and the answer must not repeat the fault.
fn copy(w: &mut MessageWriter, avp: &crate::avp::AvpRef<'_>, dict: &Dictionary) {
    let flags = dict
        .avp(avp.code, avp.vendor)
        .map_or(AvpFlags::M, |d| d.flags.must);
    w.avp(avp.code, flags, avp.vendor, avp.data);
}

/// An answer built from a header alone, for requests whose body could not be read at all
/// (a framing error: wrong version 5011, bad length 5015): no Session-Id or Proxy-Info can
/// be copied.
pub fn error_answer_to_header(
    request: &Header,
    result_code: u32,
    message: &str,
    me: Identity<'_>,
) -> Result<Bytes, EncodeError> {
    let header = if crate::result_code::is_protocol_error(result_code) {
        request.error_answer()
    } else {
        request.answer()
    };
    let mut w = MessageWriter::new(header);
    write_result(&mut w, me, result_code, message);
    w.finish()
}

fn write_result(w: &mut MessageWriter, me: Identity<'_>, code: u32, message: &str) {
    w.str(ORIGIN_HOST, AvpFlags::M, 0, me.origin_host)
        .str(ORIGIN_REALM, AvpFlags::M, 0, me.origin_realm)
        .u32(RESULT_CODE, AvpFlags::M, 0, code);
    if !message.is_empty() {
        // RFC 6733 §7.3: Error-Message MUST NOT have the M bit.
        w.str(ERROR_MESSAGE, 0, 0, message);
    }
}

/// Copies the AVPs the command's answer ABNF requires that this builder does not write
/// itself, from the request (first occurrence each). Public so that every builder of a
/// permanent-failure (5xxx) answer uses the same rule (RFC 6733 §7: such an answer is an
/// ordinary answer of the command and must satisfy its ABNF).
pub fn copy_required(w: &mut MessageWriter, request: &Message, dict: &Dictionary) {
    copy_required_except(w, request, dict, |_, _| false);
}

/// [`copy_required`] for an answer that already carries some AVPs: those for which
/// `present(code, vendor)` is true are not copied again (an answer the application wrote
/// tersely gets what its ABNF requires and it left out, and nothing twice).
pub fn copy_required_except(
    w: &mut MessageWriter,
    request: &Message,
    dict: &Dictionary,
    present: impl Fn(u32, u32) -> bool,
) {
    let Some(cmd) = dict.command(request.header.app_id, request.header.code) else {
        return;
    };
    for rule in cmd.answer.rules.iter().filter(|r| r.min > 0) {
        if rule.vendor == 0
            && matches!(
                rule.code,
                SESSION_ID | ORIGIN_HOST | ORIGIN_REALM | RESULT_CODE | FAILED_AVP
            )
        {
            continue;
        }
        if present(rule.code, rule.vendor) {
            continue;
        }
        if let Some(a) = request.find_ref(rule.code, rule.vendor) {
            copy(w, &a, dict);
        }
    }
}

fn copy_proxy_info(w: &mut MessageWriter, request: &Message, dict: &Dictionary) {
    for a in request.avp_refs().map_while(Result::ok) {
        if a.code == PROXY_INFO && a.vendor == 0 {
            copy(w, &a, dict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avp::AvpRefs;
    use crate::header::Flags;
    use crate::validate::validate_answer;

    const ME: Identity = Identity {
        origin_host: "bridge.example",
        origin_realm: "example",
    };

    fn request() -> Message {
        let mut h = Header::request(272, 4, 77, 88);
        h.flags = Flags(Flags::R | Flags::P);
        let mut w = MessageWriter::new(h);
        w.str(263, AvpFlags::M, 0, "peer;1")
            .str(264, AvpFlags::M, 0, "peer.example")
            .str(296, AvpFlags::M, 0, "example")
            .u32(258, AvpFlags::M, 0, 4)
            .u32(416, AvpFlags::M, 0, 1)
            .u32(415, AvpFlags::M, 0, 0)
            .group(284, AvpFlags::M, 0, |w| {
                w.str(280, AvpFlags::M, 0, "relay1")
                    .avp(33, AvpFlags::M, 0, b"st1");
            })
            .group(284, AvpFlags::M, 0, |w| {
                w.str(280, AvpFlags::M, 0, "relay2")
                    .avp(33, AvpFlags::M, 0, b"st2");
            });
        Message::decode(w.finish().unwrap()).unwrap()
    }

    fn codes(m: &Message) -> Vec<u32> {
        m.avp_refs().map(|a| a.unwrap().code).collect()
    }

    #[test]
    fn protocol_error_answer_has_e_bit_and_generic_shape() {
        let req = request();
        let failed = req.find(416, 0).unwrap().raw;
        let err = ProtocolError {
            result_code: 3009,
            failed_avp: Some(failed.clone()),
            message: "bad bits".into(),
        };
        let b = error_answer(&req, &err, Dictionary::builtin(), ME).unwrap();
        let a = Message::decode(b).unwrap();
        assert_eq!(a.header.flags, Flags(Flags::P | Flags::E));
        assert_eq!((a.header.hop_by_hop, a.header.end_to_end), (77, 88));
        assert_eq!(codes(&a), [263, 264, 296, 268, 281, 279, 284, 284]);
        assert_eq!(a.session_id(), Some("peer;1"));
        assert_eq!(a.find_u32(268, 0), Some(3009));
        let f = a.find_ref(279, 0).unwrap();
        let inner: Vec<_> = f.group().collect::<Result<_, _>>().unwrap();
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].raw, &failed[..]);
        // Proxy-Info copied back in order.
        let pis: Vec<_> = a
            .avp_refs()
            .map_while(Result::ok)
            .filter(|x| x.code == 284)
            .collect();
        assert_eq!(pis[0].raw, req.avp_refs().nth(6).unwrap().unwrap().raw);
        assert_eq!(pis[1].raw, req.avp_refs().nth(7).unwrap().unwrap().raw);
        assert_eq!(
            AvpRefs::new(pis[1].data, 0).next().unwrap().unwrap().data,
            b"relay2"
        );
    }

    #[test]
    fn permanent_failure_copies_required_avps_and_validates() {
        let req = request();
        let err = ProtocolError {
            result_code: 5005,
            failed_avp: Some(Bytes::from_static(&[0, 0, 1, 0x28, 0x40, 0, 0, 8])),
            message: String::new(),
        };
        let d = Dictionary::builtin();
        let a = Message::decode(error_answer(&req, &err, d, ME).unwrap()).unwrap();
        assert!(!a.header.flags.is_error() && !a.header.flags.is_request());
        let c = codes(&a);
        assert!(!c.contains(&281), "no empty Error-Message");
        if d.command(4, 272).is_some() {
            // The CCA ABNF needs these; they come from the request.
            for code in [258, 416, 415] {
                assert!(c.contains(&code), "{code} in {c:?}");
            }
            assert_eq!(validate_answer(&a, d), Ok(()));
        }
    }

    #[test]
    fn copied_avps_get_dictionary_flags() {
        // A Session-Id whose reserved flag bits were the fault comes back clean.
        let mut h = Header::request(280, 0, 1, 2);
        h.flags = Flags(Flags::R);
        let mut w = MessageWriter::new(h);
        w.avp(263, AvpFlags::M | 0x01, 0, b"s;1")
            .str(264, AvpFlags::M, 0, "peer")
            .str(296, AvpFlags::M, 0, "example");
        let req = Message::decode(w.finish().unwrap()).unwrap();
        let err = crate::validate::validate(&req, Dictionary::builtin()).unwrap_err();
        assert_eq!(err.result_code, 3009);
        let a =
            Message::decode(error_answer(&req, &err, Dictionary::builtin(), ME).unwrap()).unwrap();
        let sid = a.find_ref(263, 0).unwrap();
        assert_eq!((sid.flags.bits(), sid.data), (AvpFlags::M, &b"s;1"[..]));
        assert_eq!(validate_answer(&a, Dictionary::builtin()), Ok(()));
    }

    #[test]
    fn answer_from_header_only() {
        let mut h = Header::request(280, 0, 5, 6);
        h.version = 2;
        let b = error_answer_to_header(&h, 5011, "version 2", ME).unwrap();
        let a = Message::decode(b).unwrap();
        assert_eq!(a.header.version, 1);
        assert_eq!(a.header.flags, Flags(0));
        assert_eq!(a.header.hop_by_hop, 5);
        assert_eq!(codes(&a), [264, 296, 268, 281]);
        let b = error_answer_to_header(&h, 3008, "", ME).unwrap();
        assert!(Message::decode(b).unwrap().header.flags.is_error());
    }
}
