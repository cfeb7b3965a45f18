//! The one look the library takes at a script's AVP JSON before it goes on the ring: one
//! pass of serde_json that checks the shape (DESIGN §4: a top-level array of single-key AVP
//! objects) and, for a reply, counts its result AVPs. Types and names need the dictionary
//! and are checked by the bridge, which answers the peer 5012 for a reply it cannot convert;
//! what is checked here is what lets `dm_send_reply` itself return an error (DESIGN §9):
//! two Result-Codes, or Result-Code and Experimental-Result both, would make an invalid
//! answer (RFC 6733 §7.1: an answer carries one Result-Code; 3GPP answers carry
//! Experimental-Result instead of it).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What the top level of an AVP array holds, as far as the checks go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// `Result-Code` (or `"268"`) objects.
    pub result_code: usize,
    /// `Experimental-Result` (or `"297"`) objects.
    pub experimental_result: usize,
}

/// Parses `json` once: `Ok` with the top-level result AVP counts when it is a JSON array,
/// `Err` with a sentence for the script writer otherwise. `json` is not blank (the caller
/// turns blank into `[]`).
pub(crate) fn scan(json: &[u8]) -> Result<Counts, String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let counts = de.deserialize_any(TopLevel).map_err(|e| {
        if e.is_data() {
            "avps_json must be a JSON array of AVP objects, like [{\"Session-Id\":\"x\"}]".into()
        } else {
            format!("avps_json is not valid JSON: {e}")
        }
    })?;
    de.end()
        .map_err(|e| format!("avps_json is not valid JSON: {e}"))?;
    Ok(counts)
}

/// A reply's result AVPs: at most one, of one kind.
pub(crate) fn check_reply(counts: Counts) -> Result<(), String> {
    match (counts.result_code, counts.experimental_result) {
        (0 | 1, 0) | (0, 1) => Ok(()),
        (rc, 0) => Err(format!(
            "the reply has {rc} Result-Code AVPs; an answer carries one (RFC 6733 §7.1)"
        )),
        (0, er) => Err(format!(
            "the reply has {er} Experimental-Result AVPs; an answer carries one"
        )),
        _ => Err(
            "the reply has both Result-Code and Experimental-Result; an answer carries one \
             of them"
                .into(),
        ),
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
                Element::ResultCode => counts.result_code += 1,
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
    ResultCode,
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
            map.next_value::<IgnoredAny>()?;
            if first {
                kind = key.0;
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
            "Result-Code" | "268" => Element::ResultCode,
            "Experimental-Result" | "297" => Element::ExperimentalResult,
            _ => Element::Other,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(json: &str) -> Result<(usize, usize), String> {
        scan(json.as_bytes()).map(|c| (c.result_code, c.experimental_result))
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
    }

    #[test]
    fn a_reply_carries_at_most_one_result() {
        let check = |j: &str| check_reply(scan(j.as_bytes()).unwrap());
        assert!(check(r#"[{"Result-Code":2001}]"#).is_ok());
        assert!(check(r#"[{"Experimental-Result":[]}]"#).is_ok());
        assert!(check("[]").is_ok(), "the bridge adds 2001");
        let e = check(r#"[{"Result-Code":2001},{"Result-Code":5012}]"#).unwrap_err();
        assert!(e.contains("2 Result-Code"), "{e}");
        let e = check(r#"[{"Result-Code":2001},{"297":[]}]"#).unwrap_err();
        assert!(e.contains("both"), "{e}");
        assert!(check(r#"[{"297":[]},{"Experimental-Result":[]}]"#).is_err());
    }
}
