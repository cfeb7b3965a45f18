//! Hostile input: random bytes and mutated real messages never panic the decoder, the AVP
//! iterators, value decoding, the framer or the validator, and every rejection carries a
//! Result-Code from RFC 6733.

use bytes::Bytes;
use dmproto::avp::AvpRefs;
use dmproto::dict::Dictionary;
use dmproto::framer::Framer;
use dmproto::samples;
use dmproto::{result_code, validate, AvpType, Message, Value};
use proptest::prelude::*;

/// Walks every AVP, descending into every payload as if it were grouped, and decodes every
/// payload as every type. Returns the number of AVPs seen (bounded by the input size).
fn walk(avps: AvpRefs<'_>) -> usize {
    let mut n = 0;
    for a in avps {
        let Ok(a) = a else { break };
        n += 1;
        for ty in AvpType::ALL {
            let _ = Value::decode(ty, a.data);
        }
        n += walk(a.group());
    }
    n
}

/// The compiled validator, built once (compiling the dictionary is the expensive part).
fn validator() -> &'static dmproto::Validator<'static> {
    static V: std::sync::OnceLock<dmproto::Validator<'static>> = std::sync::OnceLock::new();
    V.get_or_init(|| dmproto::Validator::new(Dictionary::builtin()))
}

/// Everything a receiver does with a buffer.
fn exercise(buf: &[u8]) {
    let dict = Dictionary::builtin();
    let bytes = Bytes::copy_from_slice(buf);
    match Message::decode(bytes.clone()) {
        Ok(m) => {
            let seen = walk(m.avp_refs());
            // At most one AVP per 8 bytes at each nesting level.
            assert!(seen <= (buf.len() / 8 + 1) * (dmproto::avp::MAX_DEPTH + 1));
            let _ = m.find(263, 0);
            let _ = m.session_id();
            let direct = validate(&m, dict);
            assert_eq!(direct, validator().validate(&m));
            if let Err(e) = direct {
                assert!(result_code::name(e.result_code).is_some(), "{e}");
                check_error_answer(&m, &e);
                if let Some(f) = &e.failed_avp {
                    // A Failed-AVP entry is itself one well-formed AVP.
                    let mut it = AvpRefs::new(f, 0);
                    let first = it.next().expect("one AVP").expect("well-formed");
                    assert_eq!(first.raw.len(), f.len());
                    assert!(it.next().is_none());
                }
            }
        }
        Err(e) => assert!(matches!(e.result_code(), 5011 | 5014 | 5015)),
    }
    walk(AvpRefs::new(buf, 0));
    let mut f = Framer::new(4096);
    if f.feed(buf).is_ok() {
        while let Ok(Some(frame)) = f.next_frame() {
            assert!(Message::decode(frame).is_ok());
        }
    }
}

/// The answer the node sends for a rejected message must itself be sound: same ids, E bit
/// exactly for 3xxx, the Result-Code, and (for protocol errors, whose shape is fixed by RFC
/// 6733 §7.2) a valid answer apart from the echoed AVPs.
fn check_error_answer(req: &Message, e: &dmproto::ProtocolError) {
    let me = dmproto::answer::Identity {
        origin_host: "bridge.example",
        origin_realm: "example",
    };
    let dict = Dictionary::builtin();
    let bytes = dmproto::answer::error_answer(req, e, dict, me).expect("answer encodes");
    let a = Message::decode(bytes).expect("answer decodes");
    assert_eq!(a.header.hop_by_hop, req.header.hop_by_hop);
    assert_eq!(a.header.end_to_end, req.header.end_to_end);
    assert_eq!(a.header.code, req.header.code);
    assert!(!a.header.flags.is_request());
    assert_eq!(a.header.flags.is_error(), e.is_protocol_error());
    assert_eq!(a.find_u32(268, 0), Some(e.result_code));
    if e.is_protocol_error() {
        // Valid, except for what the answer must echo as received (Session-Id, Proxy-Info
        // payloads): a request whose Session-Id is not UTF-8 gets it back byte for byte.
        if let Err(ae) = dmproto::validate_answer(&a, dict) {
            let f = ae.failed_avp.as_deref().unwrap_or_default();
            let code = dmproto::AvpRefs::new(f, 0)
                .next()
                .and_then(Result::ok)
                .map(|x| x.code);
            assert!(
                matches!(code, Some(263 | 284)),
                "answer to {e} is invalid: {ae}"
            );
        }
    }
}

/// Makes random bytes look like a message (version 1, matching length) so they get past
/// the header checks and reach the AVP parser and the validator.
fn as_message(mut v: Vec<u8>) -> Vec<u8> {
    v.truncate(v.len() & !3);
    if v.len() >= 20 {
        v[0] = 1;
        let len = (v.len() as u32).to_be_bytes();
        v[1..4].copy_from_slice(&len[1..]);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..600)) {
        exercise(&v);
        exercise(&as_message(v));
    }

    #[test]
    fn mutated_samples_never_panic(
        which in 0usize..12,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let all = samples::all_with_binary();
        let mut v = all[which % all.len()].1.to_vec();
        for (at, byte) in edits {
            let i = at % v.len();
            v[i] = byte;
        }
        exercise(&v);
        // Truncated and length-fixed copies reach deeper parts of the parser.
        let keep = 20 + cut % v.len().saturating_sub(19).max(1);
        v.truncate(keep.min(v.len()));
        exercise(&as_message(v));
    }
}

#[test]
fn samples_pass_unchanged() {
    for (name, s) in samples::all_with_binary() {
        let m = Message::decode(s).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(walk(m.avp_refs()) > 0);
    }
}
