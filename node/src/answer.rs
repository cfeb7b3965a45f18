//! Answers the node builds: from the application's [`AnswerBody`], and local error answers
//! (3001, 3002, 3004, 5012, validation errors...).
//!
//! RFC 6733 §6.2: an answer carries the request's hop-by-hop and end-to-end ids, its
//! Session-Id (first, when the request had one), Result-Code, our Origin-Host and
//! Origin-Realm, and the request's Proxy-Info AVPs in order. Protocol errors (3xxx) carry the
//! E bit. The application only supplies what is specific to its answer; the rest is filled
//! here so no script can get it wrong.

use bytes::Bytes;
use dmproto::avp::AvpFlags;
use dmproto::dict::Dictionary;
// RFC 6733 §7.1.3: 3xxx answers carry the E bit; the rule lives in dmproto, once.
use dmproto::result_code::is_protocol_error;
use dmproto::{AvpRefs, EncodeError, Flags, Message, MessageWriter};

use crate::app::AnswerBody;
use crate::arena::Arena;
use crate::peer::wire::avp;

pub use dmproto::avp_code::{EXPERIMENTAL_RESULT, PROXY_INFO, SESSION_ID};

const M: u8 = AvpFlags::M;

/// Who we are, for Origin-Host/Origin-Realm.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// Our DiameterIdentity (`[node] origin_host`), written as Origin-Host (RFC 6733 §6.3).
    pub host: &'a str,
    /// Our realm (`[node] origin_realm`), written as Origin-Realm (RFC 6733 §6.4).
    pub realm: &'a str,
}

/// Why an application answer could not be built; the node answers 5012 instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The application's AVP bytes do not parse as AVPs (bad length, truncated header);
    /// the text is the decoder's reason, for the log line next to the 5012.
    #[error("the application's AVPs are malformed: {0}")]
    BadAvps(String),
    /// The reply would make an answer no peer should accept (DESIGN §9): two Result-Codes,
    /// Result-Code and Experimental-Result together, a result AVP of the wrong type.
    #[error("the application's answer would be invalid: {0}")]
    Invalid(String),
    /// The answer could not be encoded: in practice it exceeds `[limits] max_message_size`
    /// (the bound on what we send is the one on what we accept).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Starts an answer to `request` in `arena`: header, Session-Id. The E bit is set by the
/// caller.
fn begin(arena: &mut Arena, request: &Message, error: bool, max_len: usize) -> MessageWriter {
    let mut header = request.answer_header();
    if error {
        header.flags = header.flags.with(Flags::E);
    }
    let mut w = arena.writer(header).max_len(max_len);
    if let Some(sid) = request.find_ref(SESSION_ID, 0) {
        w.raw(sid.raw);
    }
    w
}

fn origin_avps(w: &mut MessageWriter, origin: Origin<'_>) {
    w.str(avp::ORIGIN_HOST, M, 0, origin.host);
    w.str(avp::ORIGIN_REALM, M, 0, origin.realm);
}

fn proxy_info(w: &mut MessageWriter, request: &Message) {
    for a in request.avp_refs().map_while(Result::ok) {
        if a.code == PROXY_INFO && a.vendor == 0 {
            w.raw(a.raw);
        }
    }
}

/// The answer to `request` from the application's `body`. Result-Code 2001 is added unless
/// the body has a Result-Code or Experimental-Result; Session-Id, Origin-Host and
/// Origin-Realm in the body are ignored (ours are authoritative).
///
/// AVPs the command's answer ABNF requires that the body left out are copied from the
/// request when it has them (Vendor-Specific-Application-Id and Auth-Session-State of a Cx
/// or Sh answer, Auth-Application-Id, CC-Request-Type and CC-Request-Number of a CCA): the
/// same rule as the bridge's own 5xxx answers ([`dmproto::answer::copy_required`]), so a
/// script that answers with only what it decided still sends an answer the peer's codec
/// accepts (RFC 6733 §7: every answer satisfies its command's ABNF). What the body gives
/// wins; nothing is copied twice.
pub fn app_answer(
    arena: &mut Arena,
    request: &Message,
    origin: Origin<'_>,
    body: &AnswerBody,
    max_len: usize,
    dict: &Dictionary,
) -> Result<Bytes, AnswerError> {
    let (has_result, result_code) = result_of(body)?;
    // RFC 6733 §3: "E(rror) - If set, the message contains a protocol error"; §7.2: those
    // are the 3xxx answers, in the generic error layout. 2xxx, 4xxx (§7.1.4) and 5xxx
    // (§7.1.5) are the command's own answer without E, so the application's E bit on
    // anything but a 3xxx Result-Code (or with no Result-Code: 2001 would be added) is an
    // invalid answer, refused (DESIGN §9: the peer gets 5012). The library refuses it first
    // when it can read the value; this is the backstop for what it could not.
    let error = result_code.is_some_and(is_protocol_error);
    if body.is_error && !error {
        let with = match (has_result, result_code) {
            (_, Some(c)) => format!("Result-Code {c}"),
            (true, None) => "an Experimental-Result".into(),
            (false, None) => "no Result-Code (2001 would be added)".into(),
        };
        return Err(AnswerError::Invalid(format!(
            "the E bit (is_error) with {with}; it needs a 3xxx Result-Code (RFC 6733 §7.2)"
        )));
    }
    let mut w = begin(arena, request, error, max_len);
    if !has_result {
        w.u32(
            avp::RESULT_CODE,
            M,
            0,
            dmproto::result_code::DIAMETER_SUCCESS,
        );
    }
    origin_avps(&mut w, origin);
    for a in AvpRefs::new(&body.avps, 0).map_while(Result::ok) {
        let ours = a.vendor == 0
            && matches!(
                a.code,
                SESSION_ID | avp::ORIGIN_HOST | avp::ORIGIN_REALM | PROXY_INFO
            );
        if !ours {
            w.raw(a.raw);
        }
    }
    dmproto::answer::copy_required_except(&mut w, request, dict, |code, vendor| {
        AvpRefs::new(&body.avps, 0)
            .map_while(Result::ok)
            .any(|a| a.code == code && a.vendor == vendor)
    });
    proxy_info(&mut w, request);
    Ok(arena.finish(w)?)
}

/// What the application's answer says about its outcome: whether it has a result AVP, and
/// its Result-Code. Refuses (DESIGN §9) what would make an invalid answer: RFC 6733 §7.1
/// gives an answer one Result-Code ("{ Result-Code }" / "[ Result-Code ]" in every base
/// ABNF), §7.6 puts Experimental-Result in its place ("MUST NOT" carry both in 3GPP answers,
/// TS 29.229 §6.2), and both have fixed types (Unsigned32; Grouped with an Unsigned32
/// Experimental-Result-Code).
fn result_of(body: &AnswerBody) -> Result<(bool, Option<u32>), AnswerError> {
    // Counted, not collected: a reply carries one Result-Code (no allocation per answer).
    let (mut codes, mut first_code, mut experimental) = (0usize, None, 0usize);
    for a in AvpRefs::new(&body.avps, 0) {
        let a = a.map_err(|e| AnswerError::BadAvps(e.to_string()))?;
        if a.vendor != 0 {
            continue;
        }
        if a.code == avp::RESULT_CODE {
            let c = dmproto::value::decode_u32(a.data).map_err(|_| {
                AnswerError::Invalid(format!(
                    "Result-Code must be an Unsigned32 (4 bytes), got {} bytes",
                    a.data.len()
                ))
            })?;
            codes += 1;
            first_code = first_code.or(Some(c));
        } else if a.code == EXPERIMENTAL_RESULT {
            experimental += 1;
            let code = AvpRefs::new(a.data, 0)
                .map_while(Result::ok)
                .find(|c| c.code == dmproto::avp_code::EXPERIMENTAL_RESULT_CODE && c.vendor == 0);
            let Some(4) = code.map(|c| c.data.len()) else {
                return Err(AnswerError::Invalid(
                    "Experimental-Result needs an Unsigned32 Experimental-Result-Code".into(),
                ));
            };
        }
    }
    if codes > 1 {
        return Err(AnswerError::Invalid(format!(
            "{codes} Result-Code AVPs; an answer has one"
        )));
    }
    if experimental > 1 {
        return Err(AnswerError::Invalid(
            "more than one Experimental-Result".into(),
        ));
    }
    if codes > 0 && experimental > 0 {
        return Err(AnswerError::Invalid(
            "Result-Code and Experimental-Result together; an answer carries one of them".into(),
        ));
    }
    Ok((codes > 0 || experimental > 0, first_code))
}

/// A local error answer to `request`: Result-Code, Error-Message, and Failed-AVP when given.
///
/// RFC 6733 §7.1.3 / §7.2: a protocol error (3xxx) is answered in the generic
/// `answer-message` layout with the E bit. Any other failure (5xxx, 4xxx) is an ordinary
/// answer of the command without the E bit, so it must satisfy the command's answer ABNF:
/// the AVPs that ABNF requires are copied from the request as the dictionary says
/// (Auth-Application-Id, Vendor-Specific-Application-Id, Auth-Session-State,
/// CC-Request-Type, CC-Request-Number, ...; [`dmproto::answer::copy_required`]), so the
/// peer's validator accepts it (DESIGN §9).
// Eight: where to write it, and the seven things an error answer is made of.
#[allow(clippy::too_many_arguments)]
pub fn error_answer(
    arena: &mut Arena,
    request: &Message,
    origin: Origin<'_>,
    result_code: u32,
    message: &str,
    failed_avp: Option<&[u8]>,
    max_len: usize,
    dict: &Dictionary,
) -> Result<Bytes, EncodeError> {
    let mut w = begin(arena, request, is_protocol_error(result_code), max_len);
    w.u32(avp::RESULT_CODE, M, 0, result_code);
    origin_avps(&mut w, origin);
    if !message.is_empty() {
        // Error-Message must not carry M (RFC 6733 §7.3).
        w.str(avp::ERROR_MESSAGE, 0, 0, message);
    }
    if let Some(raw) = failed_avp {
        w.group(avp::FAILED_AVP, M, 0, |w| {
            w.raw(raw);
        });
    }
    if !is_protocol_error(result_code) {
        dmproto::answer::copy_required(&mut w, request, dict);
    }
    proxy_info(&mut w, request);
    arena.finish(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::Header;

    const ORIGIN: Origin<'static> = Origin {
        host: "bridge.example.net",
        realm: "example.net",
    };

    fn request(proxiable: bool) -> Message {
        let mut h = Header::request(305, 16777217, 41, 42);
        if proxiable {
            h.flags = h.flags.with(Flags::P);
        }
        let mut w = MessageWriter::new(h);
        w.str(SESSION_ID, M, 0, "hss;1;2");
        w.str(avp::ORIGIN_HOST, M, 0, "hss.example.net");
        w.group(PROXY_INFO, M, 0, |w| {
            w.str(280, M, 0, "proxy1");
            w.str(33, M, 0, "state1");
        });
        w.group(PROXY_INFO, M, 0, |w| {
            w.str(280, M, 0, "proxy2");
            w.str(33, M, 0, "state2");
        });
        Message::decode(w.finish().unwrap()).unwrap()
    }

    fn avps(f: impl FnOnce(&mut MessageWriter)) -> Bytes {
        let mut w = MessageWriter::avps_only();
        f(&mut w);
        w.finish().unwrap()
    }

    /// The application's answer to `req` with `body`, decoded (built-in dictionary).
    fn answered(req: &Message, body: &AnswerBody) -> Message {
        let built = app_answer(
            &mut Arena::new(),
            req,
            ORIGIN,
            body,
            65536,
            Dictionary::builtin(),
        );
        Message::decode(built.unwrap()).unwrap()
    }

    fn codes(m: &Message) -> Vec<u32> {
        m.avp_refs().map(|a| a.unwrap().code).collect()
    }

    #[test]
    fn app_answer_fills_session_result_origin_and_proxy_info() {
        let req = request(true);
        let body = AnswerBody {
            avps: avps(|w| {
                w.str(SESSION_ID, M, 0, "script-must-not-override");
                w.u32(1, M, 10415, 7);
            }),
            is_error: false,
        };
        let ans = answered(&req, &body);
        assert!(!ans.is_request());
        assert!(ans.header.flags.is_proxiable(), "P is kept");
        assert!(!ans.header.flags.is_error());
        assert_eq!((ans.header.hop_by_hop, ans.header.end_to_end), (41, 42));
        assert_eq!((ans.header.code, ans.header.app_id), (305, 16777217));
        assert_eq!(
            codes(&ans),
            vec![SESSION_ID, 268, 264, 296, 1, PROXY_INFO, PROXY_INFO]
        );
        assert_eq!(ans.session_id(), Some("hss;1;2"));
        assert_eq!(ans.find_u32(268, 0), Some(2001));
        let origin = ans.find_ref(264, 0).unwrap();
        assert_eq!(origin.data, b"bridge.example.net");
        // Proxy-Info copied byte for byte, in order.
        let req_pi: Vec<&[u8]> = req
            .avp_refs()
            .map(|a| a.unwrap())
            .filter(|a| a.code == PROXY_INFO)
            .map(|a| a.raw)
            .collect();
        let ans_pi: Vec<&[u8]> = ans
            .avp_refs()
            .map(|a| a.unwrap())
            .filter(|a| a.code == PROXY_INFO)
            .map(|a| a.raw)
            .collect();
        assert_eq!(req_pi, ans_pi);
    }

    /// A terse Cx reply (TS 29.229: UAA requires { Vendor-Specific-Application-Id } and
    /// { Auth-Session-State }) gets both from the UAR; one the reply gives is not doubled; the
    /// result passes the dictionary's answer validation.
    #[test]
    fn app_answer_copies_required_avps_the_reply_left_out() {
        let d = Dictionary::builtin();
        let mut h = Header::request(300, 16777216, 7, 8);
        h.flags = h.flags.with(Flags::P);
        let mut w = MessageWriter::new(h);
        w.str(SESSION_ID, M, 0, "icscf;1");
        w.group(260, M, 0, |w| {
            w.u32(266, M, 0, 10415);
            w.u32(258, M, 0, 16777216);
        });
        w.u32(277, M, 0, 1);
        w.str(avp::ORIGIN_HOST, M, 0, "icscf.example.net");
        w.str(avp::ORIGIN_REALM, M, 0, "example.net");
        w.str(283, M, 0, "example.net");
        w.str(1, M, 0, "alice@example.net");
        w.str(601, M | AvpFlags::V, 10415, "sip:alice@example.net");
        w.avp(600, M | AvpFlags::V, 10415, b"example.net");
        let req = Message::decode(w.finish().unwrap()).unwrap();
        let v = dmproto::Validator::new(d);

        let terse = AnswerBody {
            avps: avps(|w| {
                w.group(EXPERIMENTAL_RESULT, M, 0, |w| {
                    w.u32(266, M, 0, 10415);
                    w.u32(298, M, 0, 2001);
                });
                w.str(602, M | AvpFlags::V, 10415, "sip:scscf1.example.net");
            }),
            is_error: false,
        };
        let ans =
            Message::decode(app_answer(&mut Arena::new(), &req, ORIGIN, &terse, 65536, d).unwrap())
                .unwrap();
        assert_eq!(
            codes(&ans),
            vec![SESSION_ID, 264, 296, EXPERIMENTAL_RESULT, 602, 260, 277]
        );
        assert_eq!(
            ans.find_u32(277, 0),
            Some(1),
            "Auth-Session-State from the request"
        );
        assert_eq!(v.validate_answer(&ans), Ok(()));

        // the reply's own Auth-Session-State wins and is not doubled
        let given = AnswerBody {
            avps: avps(|w| {
                w.u32(277, M, 0, 0);
            }),
            is_error: false,
        };
        let ans =
            Message::decode(app_answer(&mut Arena::new(), &req, ORIGIN, &given, 65536, d).unwrap())
                .unwrap();
        assert_eq!(codes(&ans), vec![SESSION_ID, 268, 264, 296, 277, 260]);
        assert_eq!(ans.find_u32(277, 0), Some(0));
        assert_eq!(v.validate_answer(&ans), Ok(()));
    }

    #[test]
    fn app_result_code_is_kept_and_3xxx_sets_e() {
        let req = request(false);
        let body = AnswerBody {
            avps: avps(|w| {
                w.u32(268, M, 0, 3002);
            }),
            is_error: false,
        };
        let ans = answered(&req, &body);
        assert_eq!(ans.find_u32(268, 0), Some(3002));
        assert_eq!(codes(&ans).iter().filter(|c| **c == 268).count(), 1);
        assert!(ans.header.flags.is_error());

        let body = AnswerBody {
            avps: avps(|w| {
                w.group(EXPERIMENTAL_RESULT, M, 0, |w| {
                    w.u32(266, M, 0, 10415);
                    w.u32(298, M, 0, 5001);
                });
            }),
            is_error: false,
        };
        let ans = answered(&req, &body);
        assert_eq!(
            ans.find_u32(268, 0),
            None,
            "Experimental-Result replaces Result-Code"
        );
    }

    #[test]
    fn malformed_app_avps_are_an_error_not_a_bad_message() {
        let req = request(false);
        let body = AnswerBody {
            avps: Bytes::from_static(&[0, 0, 1, 7, 0x40, 0, 0, 99]),
            is_error: false,
        };
        assert!(matches!(
            app_answer(
                &mut Arena::new(),
                &req,
                ORIGIN,
                &body,
                65536,
                Dictionary::builtin()
            ),
            Err(AnswerError::BadAvps(_))
        ));
    }

    #[test]
    fn oversized_answer_is_refused() {
        let req = request(false);
        let body = AnswerBody {
            avps: avps(|w| {
                w.avp(1, 0, 0, &[0u8; 5000]);
            }),
            is_error: false,
        };
        assert!(matches!(
            app_answer(
                &mut Arena::new(),
                &req,
                ORIGIN,
                &body,
                4096,
                Dictionary::builtin()
            ),
            Err(AnswerError::Encode(_))
        ));
    }

    #[test]
    fn error_answer_with_failed_avp() {
        let req = request(true);
        let failed = req.find_ref(avp::ORIGIN_HOST, 0).unwrap().raw.to_vec();
        let ans = error_answer(
            &mut Arena::new(),
            &req,
            ORIGIN,
            5005,
            "missing X",
            Some(&failed),
            65536,
            Dictionary::builtin(),
        )
        .unwrap();
        let ans = Message::decode(ans).unwrap();
        assert!(!ans.header.flags.is_error(), "5xxx: no E bit");
        assert_eq!(ans.find_u32(268, 0), Some(5005));
        assert_eq!(ans.find_ref(281, 0).unwrap().data, b"missing X");
        let fa = ans.find(279, 0).unwrap();
        assert_eq!(&fa.group().next().unwrap().unwrap().raw[..], &failed[..]);

        let ans = Message::decode(
            error_answer(
                &mut Arena::new(),
                &req,
                ORIGIN,
                3002,
                "",
                None,
                65536,
                Dictionary::builtin(),
            )
            .unwrap(),
        )
        .unwrap();
        assert!(ans.header.flags.is_error());
        assert!(ans.header.flags.is_proxiable());
        assert_eq!(
            codes(&ans),
            vec![SESSION_ID, 268, 264, 296, PROXY_INFO, PROXY_INFO]
        );
    }

    /// The answer to `req` from a reply body written by `f`, with or without the E bit.
    fn reply(
        req: &Message,
        is_error: bool,
        f: &dyn Fn(&mut MessageWriter),
    ) -> Result<Bytes, AnswerError> {
        let body = AnswerBody {
            avps: avps(f),
            is_error,
        };
        app_answer(
            &mut Arena::new(),
            req,
            ORIGIN,
            &body,
            65536,
            Dictionary::builtin(),
        )
    }

    #[test]
    fn invalid_app_replies_are_refused() {
        let req = request(false);
        let refuse = |f: &dyn Fn(&mut MessageWriter)| match reply(&req, false, f) {
            Err(AnswerError::Invalid(why)) => why,
            other => panic!("not refused: {other:?}"),
        };
        let two = refuse(&|w| {
            w.u32(268, M, 0, 2001);
            w.u32(268, M, 0, 5001);
        });
        assert!(two.contains("2 Result-Code"), "{two}");
        let both = refuse(&|w| {
            w.u32(268, M, 0, 2001);
            w.group(EXPERIMENTAL_RESULT, M, 0, |w| {
                w.u32(266, M, 0, 10415);
                w.u32(298, M, 0, 2001);
            });
        });
        assert!(both.contains("together"), "{both}");
        let wrong_type = refuse(&|w| {
            w.str(268, M, 0, "success");
        });
        assert!(wrong_type.contains("Unsigned32"), "{wrong_type}");
        let empty_er = refuse(&|w| {
            w.group(EXPERIMENTAL_RESULT, M, 0, |w| {
                w.u32(266, M, 0, 10415);
            });
        });
        assert!(empty_er.contains("Experimental-Result-Code"), "{empty_er}");
    }

    #[test]
    fn the_e_bit_needs_a_3xxx_result_code() {
        // RFC 6733 §3 / §7.2: the E bit marks a protocol error (3xxx) in the generic error
        // layout; 2xxx, 4xxx and 5xxx answers go without it (§7.1.4, §7.1.5). A script that
        // asks for E with anything else is refused (DESIGN §9) and the peer gets 5012.
        let req = request(false);
        let with_e = |f: &dyn Fn(&mut MessageWriter)| reply(&req, true, f);
        for (what, refused) in [
            (
                "2001",
                with_e(&|w| {
                    w.u32(268, M, 0, 2001);
                }),
            ),
            (
                "5012",
                with_e(&|w| {
                    w.u32(268, M, 0, 5012);
                }),
            ),
            (
                "4xxx",
                with_e(&|w| {
                    w.u32(268, M, 0, 4001);
                }),
            ),
            (
                "no Result-Code",
                with_e(&|w| {
                    w.str(1, M, 0, "alice");
                }),
            ),
            (
                "Experimental-Result",
                with_e(&|w| {
                    w.group(EXPERIMENTAL_RESULT, M, 0, |w| {
                        w.u32(266, M, 0, 10415);
                        w.u32(298, M, 0, 3002);
                    });
                }),
            ),
        ] {
            match refused {
                Err(AnswerError::Invalid(why)) => {
                    assert!(
                        why.contains("§7.2") && why.contains("3xxx"),
                        "{what}: {why}"
                    )
                }
                other => panic!("{what}: not refused: {other:?}"),
            }
        }
        let three = Message::decode(
            with_e(&|w| {
                w.u32(268, M, 0, 3002);
            })
            .unwrap(),
        )
        .unwrap();
        assert!(three.header.flags.is_error());
        assert_eq!(three.find_u32(268, 0), Some(3002));
    }

    #[test]
    fn permanent_failures_use_the_commands_answer_layout() {
        // A CCR (RFC 4006): the CCA needs Auth-Application-Id, CC-Request-Type and
        // CC-Request-Number, which only the request can supply.
        let mut h = Header::request(272, 4, 9, 10);
        h.flags = h.flags.with(Flags::P);
        let mut w = MessageWriter::new(h);
        w.str(SESSION_ID, M, 0, "c;1")
            .str(avp::ORIGIN_HOST, M, 0, "client.example.net")
            .str(avp::ORIGIN_REALM, M, 0, "example.net")
            .str(283, M, 0, "example.net")
            .u32(258, M, 0, 4)
            .u32(416, M, 0, 2)
            .u32(415, M, 0, 7);
        let req = Message::decode(w.finish().unwrap()).unwrap();
        let d = Dictionary::builtin();
        let v = dmproto::Validator::new(d);
        let five = Message::decode(
            error_answer(&mut Arena::new(), &req, ORIGIN, 5005, "x", None, 65536, d).unwrap(),
        )
        .unwrap();
        assert!(!five.header.flags.is_error());
        assert_eq!(five.find_u32(416, 0), Some(2));
        assert_eq!(five.find_u32(415, 0), Some(7));
        assert_eq!(five.find_u32(258, 0), Some(4));
        assert_eq!(v.validate_answer(&five), Ok(()));
        // 3xxx: the generic answer-message of §7.2, E bit, nothing of the CCA.
        let three = Message::decode(
            error_answer(&mut Arena::new(), &req, ORIGIN, 3002, "x", None, 65536, d).unwrap(),
        )
        .unwrap();
        assert!(three.header.flags.is_error());
        assert_eq!(three.find_u32(416, 0), None);
        assert_eq!(v.validate_answer(&three), Ok(()));
    }
}
