//! Messages <-> what the workers see, as plain functions (no rings, no sockets): the event
//! name of a request, its JSON record fields, a worker's reply JSON -> answer AVPs, a peer's
//! answer -> the outcome record of a worker's outgoing request, and the bodies of the
//! answers the bridge gives on the workers' behalf (3001, 3004, 5012).
//!
//! Kept apart from the driver so each rule of DESIGN §3 (event names, result classes) is
//! unit-tested without shared memory.

use bytes::Bytes;
use dmnode::arena::Arena;
use dmproto::dict::Dictionary;
use dmproto::json::JsonReader;
use dmproto::{AvpFlags, Message, MessageWriter};

use crate::app::{AnswerBody, RequestError};
use dmnode::config::{AppAdvert, AppKind};
use dmnode::peer::wire::avp;
use dmshm::record::class;

use dmproto::avp_code::{EXPERIMENTAL_RESULT, EXPERIMENTAL_RESULT_CODE, SESSION_ID};
use dmproto::json::JsonError;
use dmproto::{AvpError, EncodeError};

/// Why a worker's JSON or encoded AVPs do not make AVPs the node can send. The driver logs
/// it, counts it, and answers the peer 5012 (a reply) or gives the script -3 (a request).
#[derive(Debug)]
#[non_exhaustive]
pub enum ConvertError {
    /// The JSON is not UTF-8 (RFC 8259 §8.1).
    NotUtf8(std::str::Utf8Error),
    /// The JSON does not fit the dictionary (unknown name, wrong type, bad shape); the
    /// error names the JSON path at fault.
    Json(JsonError),
    /// The AVPs do not encode (too large for the message size limit, a value out of range).
    Encode(EncodeError),
    /// Encoded AVPs from the library larger than the node's maximum message size.
    TooLarge {
        /// Bytes of AVPs in the record.
        len: usize,
        /// The node's `max_message_size`.
        max: usize,
    },
    /// Encoded AVPs from the library whose framing does not hold (RFC 6733 §4).
    Damaged(AvpError),
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConvertError::NotUtf8(e) => write!(f, "JSON is not UTF-8: {e}"),
            ConvertError::Json(e) => write!(f, "{e}"),
            ConvertError::Encode(e) => write!(f, "{e}"),
            ConvertError::TooLarge { len, max } => write!(
                f,
                "{len} bytes of AVPs, more than the maximum message size of {max}"
            ),
            ConvertError::Damaged(e) => write!(f, "encoded AVPs damaged: {e}"),
        }
    }
}

impl std::error::Error for ConvertError {}

/// What the workers' routing needs to know about a request: the name the worker declared it
/// handles (`PPR`, or the command code as text) and the command's long name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventName {
    /// `PPR` (dispatch raises `E_DM_PPR`), or `"8388620"` when the dictionary knows no
    /// abbreviation (`E_DM_8388620`).
    pub name: String,
    /// `Push-Profile-Request`, or empty when the dictionary does not know the command.
    pub cmd_name: String,
}

/// DESIGN §3: `E_DM_<ABBR>` from the dictionary's request abbreviation (for the request's own
/// application first), else `E_DM_<cmd_code>`.
pub fn event_name(dict: &Dictionary, app_id: u32, cmd_code: u32) -> EventName {
    match dict.command(app_id, cmd_code) {
        Some(c) => {
            let abbr = c.request_abbr.trim();
            let name = if abbr.is_empty() || !abbr.bytes().all(|b| b.is_ascii_graphic()) {
                cmd_code.to_string()
            } else {
                abbr.to_ascii_uppercase()
            };
            EventName {
                name,
                cmd_name: format!("{}-Request", c.name),
            }
        }
        None => EventName {
            name: cmd_code.to_string(),
            cmd_name: String::new(),
        },
    }
}

/// The text of a top-level UTF8String/DiameterIdentity AVP (empty when absent or not text).
pub fn text_avp(msg: &Message, code: u32) -> &str {
    msg.find_str(code, 0).unwrap_or("")
}

/// Session-Id, Origin-Host and Origin-Realm of a request, for the record's parameters.
pub fn request_ids(msg: &Message) -> (&str, &str, &str) {
    (
        text_avp(msg, SESSION_ID),
        text_avp(msg, avp::ORIGIN_HOST),
        text_avp(msg, avp::ORIGIN_REALM),
    )
}

/// Bytes of a [`json_to_avps`] arena chunk: ~30 requests of a kilobyte of AVPs.
pub const AVPS_CHUNK: usize = 32 * 1024;

/// Encoded AVPs (message body form) from a DESIGN §4 JSON array, at most `max_len` bytes;
/// the error names the JSON path at fault. Written into `arena` (chunks of [`AVPS_CHUNK`]):
/// the AVPs are split off its front (no allocation), and the chunk is rewound in place once
/// every slice of it is dropped ([`Arena::room`]).
/// A worker request's AVPs live only until the node has built the request from them (its
/// own buffer, [`dmnode::arena::Pool`]): the chunk is usually free again at the next request,
/// so requests cost no allocation (issue 15 item 2). Bound: one chunk of [`AVPS_CHUNK`]
/// (or one request's JSON length, when larger) kept; a chunk still held when it runs out is
/// left to its slices, which the node drops within the batch that submitted them.
pub fn json_to_avps(
    arena: &mut Arena,
    reader: &mut JsonReader<'_>,
    json: &[u8],
    max_len: usize,
) -> Result<Bytes, ConvertError> {
    let text = std::str::from_utf8(json).map_err(ConvertError::NotUtf8)?;
    // The JSON's length bounds the AVPs' in practice (names and quotes take more room than
    // AVP headers): room for that from the start, so the writer does not regrow.
    let mut w = arena.avps_writer(json.len().min(max_len)).max_len(max_len);
    let read = reader.read_avps(text, &mut w);
    let avps = arena.finish(w);
    read.map_err(ConvertError::Json)?;
    avps.map_err(ConvertError::Encode)
}

/// A worker's reply: the answer body the node completes (Session-Id, Origin-*, Proxy-Info,
/// Result-Code 2001 unless given; E bit when `is_error`). Written into `arena` as
/// [`json_to_avps`] does: the body lives until the node has built the answer from it.
pub fn reply_body(
    arena: &mut Arena,
    reader: &mut JsonReader<'_>,
    json: &[u8],
    is_error: bool,
    max_len: usize,
) -> Result<AnswerBody, ConvertError> {
    Ok(AnswerBody {
        avps: json_to_avps(arena, reader, json, max_len)?,
        is_error,
    })
}

/// A worker's reply the library already converted with the bridge's dictionary
/// (`Payload::Avps`): taken as it is once its framing holds (RFC 6733 §4: each AVP's length
/// inside its parent, Grouped AVPs of the dictionary made of AVPs in turn), so a damaged or
/// hostile record cannot make the bridge send a malformed answer. At most `max_len` bytes.
/// The record's bytes become the answer's body without a copy.
pub fn reply_avps(
    dict: &Dictionary,
    avps: Bytes,
    is_error: bool,
    max_len: usize,
) -> Result<AnswerBody, ConvertError> {
    if avps.len() > max_len {
        return Err(ConvertError::TooLarge {
            len: avps.len(),
            max: max_len,
        });
    }
    check_framing(dict, &avps, 0, 0)?;
    Ok(AnswerBody { avps, is_error })
}

fn check_framing(
    dict: &Dictionary,
    buf: &[u8],
    base: usize,
    depth: usize,
) -> Result<(), ConvertError> {
    for a in dmproto::AvpRefs::nested(buf, base, depth) {
        let a = a.map_err(ConvertError::Damaged)?;
        let grouped = dict
            .avp(a.code, a.vendor)
            .is_some_and(|d| d.ty == dmproto::AvpType::Grouped);
        if grouped {
            check_framing(dict, a.data, a.offset + a.header_len(), depth + 1)?;
        }
    }
    Ok(())
}

/// An answer the bridge gives itself: Result-Code (E bit for 3xxx) and an Error-Message.
pub fn local_answer(result_code: u32, message: &str) -> AnswerBody {
    let mut w = MessageWriter::avps_only();
    w.u32(avp::RESULT_CODE, AvpFlags::M, 0, result_code);
    if !message.is_empty() {
        // Error-Message must not carry M (RFC 6733 §7.3).
        w.str(avp::ERROR_MESSAGE, 0, 0, message);
    }
    let avps = w.finish().unwrap_or_default();
    AnswerBody {
        avps,
        is_error: (3000..4000).contains(&result_code),
    }
}

/// The Result-Code of an answer, else its Experimental-Result-Code (0: neither).
pub fn answer_result_code(msg: &Message) -> u32 {
    if let Some(rc) = msg.find_u32(avp::RESULT_CODE, 0) {
        return rc;
    }
    msg.find_ref(EXPERIMENTAL_RESULT, 0)
        .and_then(|g| {
            g.group()
                .map_while(Result::ok)
                .find(|a| a.code == EXPERIMENTAL_RESULT_CODE && a.vendor == 0)
                .and_then(|a| dmproto::value::decode_u32(a.data).ok())
        })
        .unwrap_or(0)
}

/// The outcome record fields of a worker's outgoing request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// One of [`dmshm::record::class`]: 1 success, -1 error answer, -2 timeout, -3 not sent; the
    /// script branches on it.
    pub class: i32,
    /// The answer's Result-Code (or Experimental-Result-Code), 0 without an answer.
    pub result_code: u32,
    /// The answer's AVPs as DESIGN §4 JSON, empty without an answer.
    pub avps_json: String,
    /// Why it failed or was not sent, for the script's log; empty on success.
    pub error: String,
}

impl Outcome {
    /// Class -3: the request was not sent (bad JSON, no route, bridge stopping, ...).
    pub fn not_sent(error: impl Into<String>) -> Outcome {
        Outcome {
            class: class::NOT_SENT,
            result_code: 0,
            avps_json: String::new(),
            error: error.into(),
        }
    }
}

/// DESIGN §3 return codes: 1 for a 2xxx answer (Result-Code or Experimental-Result-Code),
/// -1 for any other answer (or one with the E bit), -2 timeout, -3 not sent.
pub fn outcome(dict: &Dictionary, result: Result<Message, RequestError>) -> Outcome {
    outcome_in(dict, result, String::new())
}

/// [`outcome`], its `avps_json` written into `json` (cleared first): a buffer the caller
/// takes back from the outcome and keeps across answers (the driver: no allocation per
/// answer for its JSON, issue 15 item 2).
pub fn outcome_in(
    dict: &Dictionary,
    result: Result<Message, RequestError>,
    mut json: String,
) -> Outcome {
    json.clear();
    match result {
        Ok(msg) => {
            let rc = answer_result_code(&msg);
            let ok = (2000..3000).contains(&rc) && !msg.header.flags.is_error();
            let avps = msg.avp_refs();
            // Names and quotes take more room than AVP headers: one reservation, no regrowth.
            json.reserve(avps.remaining().len() * 2 + 16);
            let error = match dmproto::json::write_avps(&mut json, avps, dict) {
                Ok(()) => String::new(),
                Err(e) => {
                    json.push_str("[]");
                    format!("answer AVPs unreadable: {e}")
                }
            };
            Outcome {
                class: if ok {
                    class::SUCCESS
                } else {
                    class::ERROR_ANSWER
                },
                result_code: rc,
                avps_json: json,
                error,
            }
        }
        Err(RequestError::Timeout) => Outcome {
            class: class::TIMEOUT,
            result_code: 0,
            avps_json: json,
            error: RequestError::Timeout.to_string(),
        },
        // Sent, then lost with its connection: "no answer", as a timeout (the peer may have
        // acted on it), with the reason.
        Err(e @ RequestError::ConnectionLost(_)) => Outcome {
            class: class::TIMEOUT,
            result_code: 0,
            avps_json: json,
            error: e.to_string(),
        },
        Err(RequestError::NoRoute {
            result_code,
            message,
        }) => Outcome {
            class: class::NOT_SENT,
            result_code,
            avps_json: json,
            error: format!("no route: {message}"),
        },
        Err(e) => Outcome {
            avps_json: json,
            ..Outcome::not_sent(e.to_string())
        },
    }
}

/// The applications to advertise in CER/CEA for the event names workers declared they serve
/// (DESIGN §3: "the CER advertises the applications of the handled commands"): `PPR` ->
/// 3GPP Cx (16777216, Vendor-Specific-Application-Id with vendor 10415). Names that do not
/// identify an application add nothing: the catch-all (`*`, `REQUEST`), bare command codes,
/// and base-protocol commands (application 0, which every peer supports). Sorted, without
/// duplicates.
pub fn handled_applications(dict: &Dictionary, names: &[String]) -> Vec<AppAdvert> {
    let mut out: Vec<AppAdvert> = names
        .iter()
        .map(|n| n.strip_prefix("E_DM_").unwrap_or(n))
        .filter_map(|abbr| dict.command_by_abbr(abbr))
        .filter(|c| c.app_id != 0)
        .map(|c| match dict.application(c.app_id) {
            Some(a) => AppAdvert {
                id: a.id,
                kind: match a.kind {
                    dmproto::dict::AppKind::Auth => AppKind::Auth,
                    dmproto::dict::AppKind::Acct => AppKind::Acct,
                },
                vendor: (a.vendor != 0).then_some(a.vendor),
            },
            None => AppAdvert {
                id: c.app_id,
                kind: AppKind::Auth,
                vendor: None,
            },
        })
        .collect();
    out.sort_by_key(|a| (a.id, a.vendor, a.kind == AppKind::Acct));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::{Flags, Header};

    fn dict() -> &'static Dictionary {
        Dictionary::builtin()
    }

    #[test]
    fn event_names_from_dictionary_abbreviations_else_codes() {
        let cx = 16777216;
        let ppr = event_name(dict(), cx, 305);
        assert_eq!(ppr.name, "PPR");
        assert_eq!(ppr.cmd_name, "Push-Profile-Request");
        assert_eq!(event_name(dict(), cx, 304).name, "RTR");
        assert_eq!(event_name(dict(), 4, 272).name, "CCR");
        let unknown = event_name(dict(), 4242, 8_388_620);
        assert_eq!(unknown.name, "8388620");
        assert_eq!(unknown.cmd_name, "");
    }

    #[test]
    fn handled_names_map_to_their_applications() {
        let names: Vec<String> = [
            "PPR",
            "E_DM_RTR",
            "ACR",
            "*",
            "E_DM_REQUEST",
            "16777214",
            "DWR",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let apps = handled_applications(dict(), &names);
        assert_eq!(
            apps,
            vec![
                AppAdvert {
                    id: 3,
                    kind: AppKind::Acct,
                    vendor: None
                },
                AppAdvert {
                    id: 16777216,
                    kind: AppKind::Auth,
                    vendor: Some(10415)
                },
            ]
        );
        assert!(handled_applications(dict(), &[]).is_empty());
    }

    /// A fresh chunk for a test's AVPs, as the driver keeps one.
    fn arena() -> Arena {
        Arena::with_chunk(AVPS_CHUNK)
    }

    #[test]
    fn request_avps_share_a_chunk_rewound_once_dropped() {
        let mut r = JsonReader::new(dict());
        let mut arena = arena();
        let json = br#"[{"Result-Code":2001},{"User-Name":"alice"}]"#;
        let first = json_to_avps(&mut arena, &mut r, json, 4096).unwrap();
        let (start, len) = (first.as_ptr(), first.len());
        // Held: the next one follows it in the same chunk.
        let second = json_to_avps(&mut arena, &mut r, json, 4096).unwrap();
        assert_eq!(second.as_ptr(), start.wrapping_add(len));
        assert_eq!(second, first);
        drop((first, second));
        // Dropped as the node drops them: when the chunk runs out it is rewound, not replaced.
        let mut rewound = false;
        for _ in 0..2 * AVPS_CHUNK / len {
            let a = json_to_avps(&mut arena, &mut r, json, 4096).unwrap();
            rewound |= a.as_ptr() == start;
        }
        assert!(rewound);
        // A bad one leaves the arena usable.
        assert!(json_to_avps(&mut arena, &mut r, br#"[{"No-Such-AVP":1}]"#, 4096).is_err());
        assert_eq!(
            json_to_avps(&mut arena, &mut r, json, 4096).unwrap().len(),
            len
        );
    }

    #[test]
    fn reply_json_becomes_avps_and_bad_json_names_the_path() {
        let mut r = JsonReader::new(dict());
        let body = reply_body(
            &mut arena(),
            &mut r,
            br#"[{"Result-Code":2001},{"User-Name":"alice"}]"#,
            false,
            4096,
        )
        .unwrap();
        let codes: Vec<u32> = dmproto::AvpRefs::new(&body.avps, 0)
            .map(|a| a.unwrap().code)
            .collect();
        assert_eq!(codes, vec![268, 1]);
        let err =
            reply_body(&mut arena(), &mut r, br#"[{"No-Such-AVP":1}]"#, false, 4096).unwrap_err();
        // What the library encoded is taken as it is when its framing holds.
        let dict = Dictionary::builtin();
        let good = reply_body(
            &mut arena(),
            &mut r,
            br#"[{"Result-Code":2001},{"Experimental-Result":[{"Vendor-Id":10415},{"Experimental-Result-Code":2001}]}]"#,
            false,
            4096,
        )
        .unwrap()
        .avps;
        assert_eq!(
            reply_avps(dict, good.clone(), true, 4096).unwrap().avps,
            good
        );
        assert!(
            !reply_avps(dict, good.clone(), false, 4096)
                .unwrap()
                .is_error
        );
        assert!(matches!(
            reply_avps(dict, good.clone(), false, good.len() - 1),
            Err(ConvertError::TooLarge { .. })
        ));
        // Cut anywhere but after the first AVP (12 bytes, a whole Result-Code): damaged.
        for cut in (1..good.len()).filter(|&c| c != 12) {
            assert!(
                matches!(
                    reply_avps(dict, good.slice(..cut), false, 4096),
                    Err(ConvertError::Damaged(_))
                ),
                "cut {cut}"
            );
        }
        // A Grouped AVP whose inner length overruns it.
        let mut bad = good.to_vec();
        // Result-Code (12 bytes), the Experimental-Result header (8), then the first inner
        // AVP's code (4) and flags (1): its length's high byte.
        bad[12 + 8 + 5] = 0xff;
        assert!(reply_avps(dict, Bytes::from(bad), false, 4096).is_err());
        assert!(matches!(err, ConvertError::Json(_)), "{err}");
        assert!(err.to_string().contains("No-Such-AVP"), "{err}");
        assert!(matches!(
            reply_body(&mut arena(), &mut r, b"[{", false, 4096),
            Err(ConvertError::Json(_))
        ));
        assert!(matches!(
            reply_body(&mut arena(), &mut r, b"\xff", false, 4096),
            Err(ConvertError::NotUtf8(_))
        ));
    }

    #[test]
    fn oversized_reply_is_refused() {
        let mut r = JsonReader::new(dict());
        let big = format!(r#"[{{"User-Name":"{}"}}]"#, "x".repeat(5000));
        assert!(reply_body(&mut arena(), &mut r, big.as_bytes(), false, 1000).is_err());
        assert!(reply_body(&mut arena(), &mut r, big.as_bytes(), false, 10_000).is_ok());
    }

    #[test]
    fn local_answers_set_e_for_protocol_errors_only() {
        let b = local_answer(3001, "no route in the script");
        assert!(b.is_error);
        let a: Vec<(u32, u8)> = dmproto::AvpRefs::new(&b.avps, 0)
            .map(|a| {
                let a = a.unwrap();
                (a.code, a.flags.bits())
            })
            .collect();
        assert_eq!(a, vec![(268, AvpFlags::M), (281, 0)]);
        assert!(!local_answer(5012, "").is_error);
    }

    fn answer(e: bool, f: impl FnOnce(&mut MessageWriter)) -> Message {
        let mut h = Header::request(301, 16777216, 1, 2);
        h.flags = Flags::default();
        if e {
            h.flags = h.flags.with(Flags::E);
        }
        let mut w = MessageWriter::new(h);
        w.str(SESSION_ID, AvpFlags::M, 0, "s;1");
        f(&mut w);
        Message::decode(w.finish().unwrap()).unwrap()
    }

    #[test]
    fn outcome_classes() {
        let ok = answer(false, |w| {
            w.u32(268, AvpFlags::M, 0, 2001);
        });
        let o = outcome(dict(), Ok(ok));
        assert_eq!((o.class, o.result_code), (1, 2001));
        assert!(
            o.avps_json.contains("\"Session-Id\":\"s;1\""),
            "{}",
            o.avps_json
        );

        let exp_ok = answer(false, |w| {
            w.group(EXPERIMENTAL_RESULT, AvpFlags::M, 0, |w| {
                w.u32(266, AvpFlags::M, 0, 10415);
                w.u32(EXPERIMENTAL_RESULT_CODE, AvpFlags::M, 0, 2002);
            });
        });
        assert_eq!(outcome(dict(), Ok(exp_ok)).class, 1);
        let exp_err = answer(false, |w| {
            w.group(EXPERIMENTAL_RESULT, AvpFlags::M, 0, |w| {
                w.u32(266, AvpFlags::M, 0, 10415);
                w.u32(EXPERIMENTAL_RESULT_CODE, AvpFlags::M, 0, 5001);
            });
        });
        let o = outcome(dict(), Ok(exp_err));
        assert_eq!((o.class, o.result_code), (-1, 5001));
        let e_bit = answer(true, |w| {
            w.u32(268, AvpFlags::M, 0, 3002);
        });
        assert_eq!(outcome(dict(), Ok(e_bit)).class, -1);
        assert_eq!(outcome(dict(), Err(RequestError::Timeout)).class, -2);
        let nr = outcome(
            dict(),
            Err(RequestError::NoRoute {
                result_code: 3003,
                message: "realm x".into(),
            }),
        );
        assert_eq!((nr.class, nr.result_code), (-3, 3003));
        assert!(nr.error.contains("realm x"));
        assert_eq!(outcome(dict(), Err(RequestError::NodeDown)).class, -3);
        let lost = outcome(dict(), Err(RequestError::ConnectionLost("no peer".into())));
        assert_eq!(lost.class, -2);
        assert!(
            lost.error.contains("connection to the peer was lost"),
            "{}",
            lost.error
        );
        assert_eq!(outcome(dict(), Err(RequestError::TooBusy)).class, -3);
    }

    /// The driver's buffer for the answers' JSON: written into, given back, not replaced.
    #[test]
    fn outcome_in_writes_into_the_buffer_it_is_given() {
        let ok = || {
            answer(false, |w| {
                w.u32(268, AvpFlags::M, 0, 2001);
            })
        };
        let buf = String::with_capacity(4096);
        let at = buf.as_ptr();
        let o = outcome_in(dict(), Ok(ok()), buf);
        assert_eq!(o, outcome(dict(), Ok(ok())), "the same outcome");
        assert_eq!(o.avps_json.as_ptr(), at, "no new allocation");
        let o = outcome_in(dict(), Err(RequestError::Timeout), o.avps_json);
        assert_eq!((o.class, o.avps_json.as_str()), (-2, ""), "cleared");
        assert_eq!(o.avps_json.as_ptr(), at, "and handed back");
        let o = outcome_in(dict(), Ok(ok()), o.avps_json);
        assert!(
            o.avps_json.starts_with("[{\"Session-Id\""),
            "{}",
            o.avps_json
        );
        assert_eq!(o.avps_json.as_ptr(), at);
    }
}
