//! A script's reply, converted here with the bridge's own dictionary (DESIGN §9: "a script
//! reply that would be an invalid answer is refused: error return, log line, 5012 to the
//! peer").
//!
//! The bridge sends the dictionary it runs with after the Welcome (the files it loaded on
//! top of the built-in one; `Ctl::Dictionary`), and again after a reload changed it. With
//! it, the library converts the reply's JSON to Diameter AVPs itself: a name the dictionary
//! does not know, a value of the wrong type, or a second result AVP is an error return from
//! `dmb_reply` (the peer gets 5012 from the bridge), and the bridge takes the encoded AVPs
//! as they are instead of parsing the JSON a second time. Until the dictionary has arrived
//! (the first moments of an attachment), or if it cannot be read, the reply goes as JSON and
//! the bridge converts and checks it, as before.

#[cfg(test)]
use bytes::Bytes;
use bytes::BytesMut;
use dmproto::avp::AvpRefs;
use dmproto::avp_code::{EXPERIMENTAL_RESULT, RESULT_CODE};
use dmproto::dict::Dictionary;
use dmproto::json::JsonReader;
use dmproto::MessageWriter;
use dmshm::control::decode_sources;

use crate::avps_check::{self, Counts, ScriptJsonError};

/// The dictionary the replies of one worker are converted with, built from the sources of
/// the worker's current attachment (`seq`: [`dmshm::worker::Worker::dictionary`]).
pub(crate) struct ReplyDictionary {
    seq: u64,
    dict: Option<Built>,
}

enum Built {
    /// The bridge loads no file: the built-in dictionary, shared, built once per process.
    Builtin,
    /// The built-in dictionary and the bridge's files.
    Extended(Box<Dictionary>),
}

impl ReplyDictionary {
    pub(crate) const fn new() -> ReplyDictionary {
        ReplyDictionary { seq: 0, dict: None }
    }

    /// The dictionary for `sources` (rebuilt when `seq` changed); `None` when there are no
    /// sources yet or they do not build (the bridge built them, so that is damage: the
    /// bridge's own check of JSON replies still holds).
    pub(crate) fn get(&mut self, sources: Option<(u64, &[u8])>) -> Option<&Dictionary> {
        let (seq, blob) = sources?;
        if seq != self.seq {
            self.seq = seq;
            self.dict = build(blob);
        }
        match self.dict.as_ref()? {
            Built::Builtin => Some(Dictionary::builtin()),
            Built::Extended(d) => Some(d),
        }
    }
}

fn build(blob: &[u8]) -> Option<Built> {
    let items = decode_sources(blob).ok()?;
    if items.is_empty() {
        return Some(Built::Builtin);
    }
    // The bridge's own rule (it built these same files before sending them).
    let dict = Dictionary::with_files(items).ok()?;
    Some(Built::Extended(Box::new(dict)))
}

/// The reply's JSON (`[]` when blank) as encoded AVPs (message-body form), at most `max`
/// bytes, with at most one result AVP; the error is a sentence for the script writer that
/// names the JSON path at fault.
#[cfg(test)]
pub(crate) fn encode(dict: &Dictionary, json: &[u8], max: usize) -> Result<Bytes, ScriptJsonError> {
    encode_reply(dict, json, max, false)
}

/// [`encode`] of a reply with `is_error` (the E bit): it needs a 3xxx Result-Code.
#[cfg(test)]
pub(crate) fn encode_reply(
    dict: &Dictionary,
    json: &[u8],
    max: usize,
    is_error: bool,
) -> Result<Bytes, ScriptJsonError> {
    encode_in(dict, json, max, is_error, BytesMut::new(), &mut Vec::new()).map(BytesMut::freeze)
}

/// [`encode`] into `buf` (cleared first), which comes back with the AVPs, reading the JSON
/// with `scratch` (hex, base64 and escaped strings are decoded there): the worker keeps both
/// from one reply to the next, so a reply allocates nothing once they have grown (issue 15
/// item 2). On an error the buffer goes with it; the next reply starts a new one. With
/// `is_error` the converted Result-Code must be 3xxx (RFC 6733 §7.2; a name is read as its
/// value here).
pub(crate) fn encode_in(
    dict: &Dictionary,
    json: &[u8],
    max: usize,
    is_error: bool,
    buf: BytesMut,
    scratch: &mut Vec<u8>,
) -> Result<BytesMut, ScriptJsonError> {
    let text = std::str::from_utf8(json).map_err(ScriptJsonError::NotUtf8)?;
    let text = if text.trim().is_empty() { "[]" } else { text };
    let mut w = MessageWriter::avps_only_in(buf).max_len(max);
    let mut reader = JsonReader::with_scratch(dict, std::mem::take(scratch));
    let read = reader.read_avps(text, &mut w);
    *scratch = reader.into_scratch();
    read?;
    let avps = w.finish_buf()?;
    avps_check::check_reply(result_counts(&avps), is_error)?;
    Ok(avps)
}

/// Top-level Result-Code and Experimental-Result AVPs of encoded AVPs.
fn result_counts(avps: &[u8]) -> Counts {
    let mut counts = Counts::default();
    for a in AvpRefs::new(avps, 0).map_while(Result::ok) {
        match (a.code, a.vendor) {
            (RESULT_CODE, 0) => {
                if counts.result_code == 0 {
                    // A 4-byte Unsigned32 (the dictionary's type; anything else is no
                    // value the E bit rule can accept).
                    counts.first_result_code = Some(
                        <[u8; 4]>::try_from(a.data)
                            .map_or(u64::MAX, |b| u32::from_be_bytes(b).into()),
                    );
                }
                counts.result_code += 1;
            }
            (EXPERIMENTAL_RESULT, 0) => counts.experimental_result += 1,
            _ => {}
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> Vec<u8> {
        dmshm::control::encode_sources([])
    }

    #[test]
    fn converts_with_the_builtin_dictionary() {
        let mut d = ReplyDictionary::new();
        let blob = builtin();
        let dict = d.get(Some((1, &blob))).unwrap();
        let avps = encode(dict, br#"[{"Result-Code":2001}]"#, 4096).unwrap();
        assert_eq!(
            &avps[..],
            b"\x00\x00\x01\x0c\x40\x00\x00\x0c\x00\x00\x07\xd1"
        );
        assert!(encode(dict, b"  ", 4096).unwrap().is_empty());
    }

    #[test]
    fn refuses_what_the_bridge_would_refuse() {
        let dict = Dictionary::builtin();
        for (json, why) in [
            (&br#"[{"Result-Code":"two thousand"}]"#[..], "Result-Code"),
            (br#"[{"No-Such-AVP":1}]"#, "No-Such-AVP"),
            (br#"[{"Result-Code":2001},{"Result-Code":2001}]"#, "2 Result-Code"),
            (
                br#"[{"Result-Code":2001},{"Experimental-Result":[{"Vendor-Id":10415},{"Experimental-Result-Code":2001}]}]"#,
                "both",
            ),
            (b"[{", "JSON"),
            (b"\xff", "UTF-8"),
        ] {
            let e = encode(dict, json, 4096).unwrap_err().to_string();
            assert!(
                e.contains(why) || !why.is_ascii(),
                "{}: {e}",
                String::from_utf8_lossy(json)
            );
        }
        assert!(matches!(
            encode(dict, b"\xff", 4096),
            Err(ScriptJsonError::NotUtf8(_))
        ));
        assert!(matches!(
            encode(dict, br#"[{"No-Such-AVP":1}]"#, 4096),
            Err(ScriptJsonError::Convert(_))
        ));
        assert!(matches!(
            encode(dict, br#"[{"268":2001},{"268":2001}]"#, 4096),
            Err(ScriptJsonError::ResultCodes(2))
        ));
        let big = format!(r#"[{{"Error-Message":"{}"}}]"#, "x".repeat(2000));
        assert!(encode(dict, big.as_bytes(), 1000).is_err());
        assert!(encode(dict, big.as_bytes(), 4000).is_ok());
    }

    #[test]
    fn the_bridge_files_extend_it_and_a_change_rebuilds() {
        let file = "VENDOR 999999 Test-Vendor\nATTRIBUTE My-Test-AVP 345678 integer32 999999\n";
        let blob = dmshm::control::encode_sources([("test.dict", file.as_bytes())]);
        let mut d = ReplyDictionary::new();
        let json = br#"[{"My-Test-AVP":5}]"#;
        let dict = d.get(Some((1, &blob))).expect("builds");
        assert!(encode(dict, json, 4096).is_ok());
        let blob2 = builtin();
        let dict = d.get(Some((2, &blob2))).expect("builds");
        assert!(
            encode(dict, json, 4096).is_err(),
            "the name left with the file"
        );
        assert!(d.get(None).is_none());
        let broken = dmshm::control::encode_sources([("bad.dict", &b"ATTRIBUTE"[..])]);
        assert!(d.get(Some((3, &broken))).is_none());
    }

    #[test]
    fn the_e_bit_needs_a_3xxx_result_code() {
        // RFC 6733 §7.2, read from the converted AVPs: a name is a value here too.
        let dict = Dictionary::builtin();
        let e = |json: &[u8]| encode_reply(dict, json, 4096, true);
        assert!(e(br#"[{"Result-Code":3002}]"#).is_ok());
        assert!(e(br#"[{"Result-Code":"DIAMETER_UNABLE_TO_DELIVER"}]"#).is_ok());
        for (json, says) in [
            (&br#"[{"Result-Code":2001}]"#[..], "2001"),
            (br#"[{"Result-Code":"DIAMETER_UNABLE_TO_COMPLY"}]"#, "5012"),
            (b"  ", "no Result-Code"),
            (
                br#"[{"Experimental-Result":[{"Vendor-Id":10415},{"Experimental-Result-Code":3002}]}]"#,
                "Experimental-Result",
            ),
        ] {
            let why = e(json).unwrap_err().to_string();
            assert!(why.contains(says) && why.contains("§7.2"), "{why}");
        }
        assert!(encode_reply(dict, br#"[{"Result-Code":2001}]"#, 4096, false).is_ok());
    }
}
