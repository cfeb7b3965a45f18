//! The one look the library takes at a script's AVP JSON before it goes on the ring: one
//! pass of serde_json that checks the shape (DESIGN §4: a top-level array of single-key AVP
//! objects) and, for a reply, counts its result AVPs. Types and names need the dictionary
//! and are checked by the bridge, which answers the peer 5012 for a reply it cannot convert;
//! what is checked here is what lets `dm_send_reply` itself return an error (DESIGN §9):
//! two Result-Codes, or Result-Code and Experimental-Result both, would make an invalid
//! answer (RFC 6733 §7.1: an answer carries one Result-Code; 3GPP answers carry
//! Experimental-Result instead of it), and so would the E bit (`is_error`) on anything but a
//! protocol error: RFC 6733 §3 and §7.2 give it to 3xxx answers only, so an error reply must
//! carry a 3xxx Result-Code, read here when the JSON gives it as a number.

use std::fmt;

use dmproto::result_code::is_protocol_error;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Why a script's `avps_json` was refused. The text is the sentence the script writer sees
/// (`dmb_last_error`, the module's log line), so each variant keeps today's wording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptJsonError {
    /// Valid JSON, but not an array (DESIGN §4: a top-level array of AVP objects).
    #[error("avps_json must be a JSON array of AVP objects, like [{{\"Session-Id\":\"x\"}}]")]
    NotArray,
    /// Not JSON at all (or trailing text after the array).
    #[error("avps_json is not valid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
    /// RFC 6733 §7.1: an answer carries one Result-Code; the reply has this many.
    #[error("the reply has {0} Result-Code AVPs; an answer carries one (RFC 6733 §7.1)")]
    ResultCodes(usize),
    /// 3GPP answers carry one Experimental-Result instead; the reply has this many.
    #[error("the reply has {0} Experimental-Result AVPs; an answer carries one")]
    ExperimentalResults(usize),
    /// Result-Code and Experimental-Result both.
    #[error(
        "the reply has both Result-Code and Experimental-Result; an answer carries one of them"
    )]
    BothResults,
    /// RFC 6733 §3 / §7.2: the E bit marks a protocol error, and the reply has no
    /// Result-Code (the bridge would add 2001).
    #[error("is_error (the E bit) needs a 3xxx Result-Code, and the reply has no Result-Code (the bridge would add 2001): the E bit marks protocol errors only (RFC 6733 §7.2); send 2xxx, 4xxx and 5xxx without is_error")]
    ErrorBitWithoutResultCode,
    /// The E bit with a Result-Code outside 3000-3999.
    #[error("is_error (the E bit) needs a 3xxx Result-Code, and the reply's is {0}: the E bit marks protocol errors only (RFC 6733 §7.2); send 2xxx, 4xxx and 5xxx without is_error")]
    ErrorBitResultCode(u64),
    /// The E bit with an Experimental-Result (3GPP's results are not protocol errors).
    #[error("is_error (the E bit) needs a 3xxx Result-Code, and the reply has an Experimental-Result instead: the E bit marks protocol errors only (RFC 6733 §7.2); send it without is_error")]
    ErrorBitExperimentalResult,
    /// The bytes are not UTF-8 (converted with the bridge's dictionary, `reply.rs`).
    #[error("avps_json is not UTF-8: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// An AVP the dictionary does not convert (unknown name, wrong type); the text names
    /// the JSON path.
    #[error("{0}")]
    Convert(#[from] dmproto::json::JsonError),
    /// The encoded reply does not fit (longer than the ring's largest message).
    #[error("{0}")]
    Encode(#[from] dmproto::EncodeError),
}

/// What the top level of an AVP array holds, as far as the checks go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// `Result-Code` (or `"268"`) objects.
    pub result_code: usize,
    /// `Experimental-Result` (or `"297"`) objects.
    pub experimental_result: usize,
    /// The value of the first Result-Code, when it was read: a JSON number (or the
    /// converted AVP, [`crate::reply`]); `None` when absent or given by name (the scan has
    /// no dictionary; the bridge checks the converted value).
    pub first_result_code: Option<u64>,
}

/// Parses `json` once: `Ok` with the top-level result AVP counts when it is a JSON array,
/// `Err` with a sentence for the script writer otherwise. `json` is not blank (the caller
/// turns blank into `[]`).
pub(crate) fn scan(json: &[u8]) -> Result<Counts, ScriptJsonError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let counts = de.deserialize_any(TopLevel).map_err(|e| {
        if e.is_data() {
            ScriptJsonError::NotArray
        } else {
            ScriptJsonError::Syntax(e)
        }
    })?;
    de.end().map_err(ScriptJsonError::Syntax)?;
    Ok(counts)
}

/// A reply's result AVPs: at most one, of one kind; and with `is_error` (the E bit), a
/// Result-Code of 3000-3999 (RFC 6733 §3: E marks a protocol error; §7.2: those are the
/// 3xxx answers in the generic error layout; §7.1.4 / §7.1.5: 4xxx and 5xxx go in the
/// command's own layout without E). A Result-Code the scan could not read (a name) passes:
/// the bridge refuses a converted value outside 3xxx with the same rule.
pub(crate) fn check_reply(counts: Counts, is_error: bool) -> Result<(), ScriptJsonError> {
    match (counts.result_code, counts.experimental_result) {
        (0 | 1, 0) | (0, 1) => {}
        (rc, 0) => return Err(ScriptJsonError::ResultCodes(rc)),
        (0, er) => return Err(ScriptJsonError::ExperimentalResults(er)),
        _ => return Err(ScriptJsonError::BothResults),
    }
    if !is_error {
        return Ok(());
    }
    match (
        counts.experimental_result,
        counts.result_code,
        counts.first_result_code,
    ) {
        (1, _, _) => Err(ScriptJsonError::ErrorBitExperimentalResult),
        (_, 0, _) => Err(ScriptJsonError::ErrorBitWithoutResultCode),
        (_, _, Some(c)) if !u32::try_from(c).is_ok_and(is_protocol_error) => {
            Err(ScriptJsonError::ErrorBitResultCode(c))
        }
        _ => Ok(()),
    }
}

struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Counts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of AVP objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Counts, A::Error> {
        let mut counts = Counts::default();
        while let Some(e) = seq.next_element::<Element>()? {
            match e {
                Element::ResultCode(value) => {
                    if counts.result_code == 0 {
                        counts.first_result_code = value;
                    }
                    counts.result_code += 1;
                }
                Element::ExperimentalResult => counts.experimental_result += 1,
                Element::Other => {}
            }
        }
        Ok(counts)
    }
}

/// One element of the array, by the key of its (single-key) object. Anything else is
/// `Other`: the bridge's conversion says what is wrong with it.
enum Element {
    /// With its value when it is a JSON number (a name is not read here).
    ResultCode(Option<u64>),
    ExperimentalResult,
    Other,
}

impl<'de> de::Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Element, D::Error> {
        d.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AVP object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut kind = Element::Other;
        let mut first = true;
        while let Some(key) = map.next_key::<Key>()? {
            let element = match key.0 {
                // The value read in the same pass, without allocating.
                Element::ResultCode(_) if first => {
                    Element::ResultCode(map.next_value::<Number>()?.0)
                }
                other => {
                    map.next_value::<IgnoredAny>()?;
                    other
                }
            };
            if first {
                kind = element;
                first = false;
            }
        }
        Ok(kind)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Element, E> {
        Ok(Element::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Element, E> {
        Ok(Element::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Element, E> {
        Ok(Element::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Element, E> {
        Ok(Element::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Element, E> {
        Ok(Element::Other)
    }
    fn visit_unit<E>(self) -> Result<Element, E> {
        Ok(Element::Other)
    }
}

/// An object key, classified without allocating (borrowed or transient).
struct Key(Element);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AVP name or code")
    }

    fn visit_str<E>(self, k: &str) -> Result<Key, E> {
        // By name (the dictionary's, as written in DESIGN §4) or by base-protocol code.
        Ok(Key(match k {
            "Result-Code" | "268" => Element::ResultCode(None),
            "Experimental-Result" | "297" => Element::ExperimentalResult,
            _ => Element::Other,
        }))
    }
}

/// A value that is a non-negative JSON integer, else `None` (anything else is skipped: the
/// bridge's conversion says what is wrong with it).
struct Number(Option<u64>);

impl<'de> de::Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Number, D::Error> {
        d.deserialize_any(NumberVisitor)
    }
}

struct NumberVisitor;

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Result-Code value")
    }

    fn visit_u64<E>(self, v: u64) -> Result<Number, E> {
        Ok(Number(Some(v)))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Number, E> {
        Ok(Number(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Number, E> {
        Ok(Number(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Number, E> {
        Ok(Number(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Number, E> {
        Ok(Number(None))
    }
    fn visit_unit<E>(self) -> Result<Number, E> {
        Ok(Number(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Number, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Number(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Number, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Number(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(json: &str) -> Result<(usize, usize), String> {
        scan(json.as_bytes())
            .map(|c| (c.result_code, c.experimental_result))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn shape_and_counts() {
        assert_eq!(counts(r#"[{"Session-Id":"x"}]"#), Ok((0, 0)));
        assert_eq!(
            counts(r#"[{"Result-Code":2001},{"Session-Id":"a\"b"},{"268":5012}]"#),
            Ok((2, 0))
        );
        assert_eq!(
            counts(
                r#"[{"Experimental-Result":[{"Vendor-Id":10415},{"Experimental-Result-Code":2001}]}]"#
            ),
            Ok((0, 1))
        );
        // Only the top level counts: a Result-Code inside a grouped AVP is not the answer's.
        assert_eq!(
            counts(r#"[{"Grouped":[{"Result-Code":1}]}, 7, "s", null, [1]]"#),
            Ok((0, 0))
        );
        assert!(counts("[{").unwrap_err().contains("not valid JSON"));
        assert!(counts(r#"{"a":1}"#).unwrap_err().contains("array"));
        assert!(counts("[] x").unwrap_err().contains("not valid JSON"));
        assert!(matches!(scan(b"[{"), Err(ScriptJsonError::Syntax(_))));
        assert!(matches!(scan(b"[] x"), Err(ScriptJsonError::Syntax(_))));
        assert!(matches!(
            scan(br#"{"a":1}"#),
            Err(ScriptJsonError::NotArray)
        ));
        assert!(matches!(scan(b"7"), Err(ScriptJsonError::NotArray)));
    }

    #[test]
    fn a_reply_carries_at_most_one_result() {
        let check = |j: &str| check_reply(scan(j.as_bytes()).unwrap(), false);
        assert!(check(r#"[{"Result-Code":2001}]"#).is_ok());
        assert!(check(r#"[{"Experimental-Result":[]}]"#).is_ok());
        assert!(check("[]").is_ok(), "the bridge adds 2001");
        let e = check(r#"[{"Result-Code":2001},{"Result-Code":5012}]"#).unwrap_err();
        assert!(matches!(e, ScriptJsonError::ResultCodes(2)), "{e:?}");
        assert!(e.to_string().contains("2 Result-Code"), "{e}");
        let e = check(r#"[{"Result-Code":2001},{"297":[]}]"#).unwrap_err();
        assert!(matches!(e, ScriptJsonError::BothResults), "{e:?}");
        assert!(e.to_string().contains("both"), "{e}");
        assert!(matches!(
            check(r#"[{"297":[]},{"Experimental-Result":[]}]"#),
            Err(ScriptJsonError::ExperimentalResults(2))
        ));
    }

    #[test]
    fn the_e_bit_needs_a_3xxx_result_code() {
        // RFC 6733 §7.2: is_error (the E bit) is for protocol errors, 3xxx, only.
        let check = |j: &str| check_reply(scan(j.as_bytes()).unwrap(), true);
        assert!(check(r#"[{"Result-Code":3002}]"#).is_ok());
        assert!(check(r#"[{"Session-Id":"x"},{"268":3999}]"#).is_ok());
        for (json, says) in [
            (r#"[{"Result-Code":2001}]"#, "2001"),
            (r#"[{"Result-Code":5012},{"Session-Id":"x"}]"#, "5012"),
            (r#"[{"268":4001}]"#, "4001"),
            (r#"[{"Result-Code":4294967296}]"#, "4294967296"),
            ("[]", "no Result-Code"),
            (r#"[{"Session-Id":"x"}]"#, "no Result-Code"),
            (
                r#"[{"Experimental-Result":[{"Vendor-Id":10415},{"Experimental-Result-Code":3002}]}]"#,
                "Experimental-Result",
            ),
        ] {
            let e = check(json).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains("§7.2") && e.contains("3xxx"),
                "{json}: {e}"
            );
        }
        // A name (before the bridge's dictionary arrived) is not read here: the bridge
        // checks the converted value (its answer is 5012 for anything but 3xxx).
        assert!(check(r#"[{"Result-Code":"DIAMETER_UNABLE_TO_COMPLY"}]"#).is_ok());
        // Without is_error nothing changes: 3xxx gets the E bit from the bridge.
        assert!(check_reply(scan(br#"[{"Result-Code":3002}]"#).unwrap(), false).is_ok());
        assert!(check_reply(scan(b"[]").unwrap(), false).is_ok());
    }
}
