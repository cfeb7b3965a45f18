//! The code paths the fuzz targets drive, shared with the plain `cargo test` regression test
//! that replays the committed corpus (`proto/tests/fuzz_corpus.rs` includes this file), so
//! the corpus is checked on every test run without a fuzzer.
//!
//! Each function must not panic on any input; the `assert!`s are invariants whose violation
//! is a bug worth a crash report.

#![allow(dead_code)] // each fuzz target uses one of the two entry points

use bytes::Bytes;
use dmproto::dict::Dictionary;
use dmproto::json::{read_avps, read_message, write_avps, write_message};
use dmproto::{validate, Framer, Header, Message, MessageWriter, Validator};

/// Largest message the harness lets the framer accept (keeps runs fast; hostile lengths
/// beyond it exercise the framer's refusal path).
const MAX: usize = 64 * 1024;

/// The compiled validator the bridge uses on every message, built once per process.
fn validator() -> &'static Validator<'static> {
    static V: std::sync::OnceLock<Validator<'static>> = std::sync::OnceLock::new();
    V.get_or_init(|| Validator::new(Dictionary::builtin()))
}

/// Arbitrary bytes as a TCP stream: framer (fed in two reads split where the first byte
/// says) -> `Message::decode` -> `validate`, which the compiled `Validator` must match
/// exactly -> AVP->JSON -> JSON->AVP -> AVP->JSON again, which must give the same JSON (the
/// JSON form is a fixed point after one trip).
pub fn decode(data: &[u8]) {
    let dict = Dictionary::builtin();
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (a, b) = data.split_at(split);
    let mut framer = Framer::new(MAX);
    let mut frames = Vec::new();
    for chunk in [a, b] {
        if framer.feed(chunk).is_err() {
            break;
        }
        while let Ok(Some(f)) = framer.next_frame() {
            frames.push(f);
        }
    }
    // The whole input as one message too, so inputs that do not frame still reach decode.
    frames.push(Bytes::copy_from_slice(data));
    for f in frames {
        let Ok(m) = Message::decode(f) else { continue };
        assert_eq!(
            validator().validate(&m),
            validate(&m, dict),
            "the compiled Validator agrees with validate()"
        );
        let _ = m.session_id();
        let mut json = String::new();
        if write_message(&mut json, &m, dict).is_err() {
            // A structural fault: the AVP list alone must fail the same way.
            assert!(write_avps(&mut json, m.avp_refs(), dict).is_err());
            assert!(json.is_empty(), "output rewound on error");
            continue;
        }
        let back = read_message(&json, dict, 1 << 24).unwrap_or_else(|e| {
            panic!("JSON written by write_message must read back: {e}\n{json}")
        });
        let m2 = Message::decode(back).expect("read_message makes a decodable message");
        let mut json2 = String::new();
        write_message(&mut json2, &m2, dict).expect("re-encoded message is well-formed");
        assert_eq!(json, json2, "JSON is a fixed point after one round trip");
    }
}

/// Arbitrary text as a script's AVP JSON and as a tools' message document: JSON->AVP must
/// either fail with an error or produce a message whose JSON reads back to the same bytes'
/// JSON (fixed point), never panic.
pub fn json_encode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dict = Dictionary::builtin();
    let mut w = MessageWriter::new(Header::request(272, 4, 1, 2)).max_len(MAX);
    if read_avps(text, dict, &mut w).is_ok() {
        if let Ok(wire) = w.finish() {
            check_fixed_point(wire, dict);
        }
    }
    if let Ok(wire) = read_message(text, dict, MAX) {
        check_fixed_point(wire, dict);
    }
}

fn check_fixed_point(wire: Bytes, dict: &Dictionary) {
    let m = Message::decode(wire).expect("the reader makes decodable messages");
    let mut json = String::new();
    write_message(&mut json, &m, dict).expect("the reader makes well-formed AVPs");
    let back = read_message(&json, dict, 1 << 24)
        .unwrap_or_else(|e| panic!("JSON written by write_message must read back: {e}\n{json}"));
    let m2 = Message::decode(back).expect("decodable");
    let mut json2 = String::new();
    write_message(&mut json2, &m2, dict).expect("well-formed");
    assert_eq!(json, json2);
}
