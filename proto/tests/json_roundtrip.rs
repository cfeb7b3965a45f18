//! Property test: AVPs -> JSON -> AVPs gives back the original bytes, for generated messages
//! over dictionary-known AVPs of every type (with values that fit their type and values that
//! do not), unknown AVPs (IETF and vendor), and grouped AVPs nested a few levels, with the
//! flags the dictionary prescribes (the JSON carries no flags, DESIGN §4).
//!
//! Also: the message document (DESIGN §8) round trip, and that arbitrary text never panics
//! the reader.

use dmproto::avp::AvpFlags;
use dmproto::dict::Dictionary;
use dmproto::header::{Flags, Header, HEADER_LEN};
use dmproto::json::{read_avps, read_message, write_avps, write_message};
use dmproto::{AvpRefs, AvpType, Message, MessageWriter};
use proptest::prelude::*;

fn dict() -> &'static Dictionary {
    static D: std::sync::OnceLock<Dictionary> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        let mut d = Dictionary::new_with_builtin();
        d.load_str(
            "VENDOR 10415 TGPP\n\
             ATTRIBUTE Prop-F32 60001 Float32\n\
             ATTRIBUTE Prop-F64 60002 Float64\n\
             ATTRIBUTE Prop-I64 60003 Integer64\n\
             ATTRIBUTE Prop-I32 60004 Integer32\n\
             ATTRIBUTE Prop-U64 60005 Unsigned64\n\
             ATTRIBUTE Prop-Octets 60006 OctetString 0 M?\n\
             ATTRIBUTE Prop-Vendor 60007 UTF8String 10415\n\
             ATTRIBUTE Prop-Group 60008 Grouped 10415\n\
             ATTRIBUTE Prop-URI 60009 DiameterURI\n",
            "prop.dict",
        )
        .expect("test dictionary loads");
        d
    })
}

/// Known AVPs (code, vendor) covering every type.
const KNOWN: &[(u32, u32)] = &[
    (263, 0),       // Session-Id, UTF8String
    (264, 0),       // Origin-Host, DiameterIdentity
    (268, 0),       // Result-Code, Unsigned32
    (55, 0),        // Event-Timestamp, Time
    (257, 0),       // Host-IP-Address, Address
    (416, 0),       // CC-Request-Type, Enumerated
    (60001, 0),     // Float32
    (60002, 0),     // Float64
    (60003, 0),     // Integer64
    (60004, 0),     // Integer32
    (60005, 0),     // Unsigned64
    (60006, 0),     // OctetString
    (60007, 10415), // vendor UTF8String
    (60009, 0),     // DiameterURI
];

/// Grouped AVPs to nest in.
const GROUPS: &[(u32, u32)] = &[(443, 0), (456, 0), (60008, 10415)];

#[derive(Debug, Clone)]
enum Node {
    Leaf {
        code: u32,
        vendor: u32,
        data: Vec<u8>,
    },
    Group {
        code: u32,
        vendor: u32,
        kids: Vec<Node>,
    },
}

/// A payload for a known type: usually a valid one, sometimes arbitrary bytes (which the
/// JSON shows as hex).
fn payload(ty: AvpType) -> BoxedStrategy<Vec<u8>> {
    let valid: BoxedStrategy<Vec<u8>> = match ty {
        AvpType::Unsigned32
        | AvpType::Integer32
        | AvpType::Enumerated
        | AvpType::Time
        | AvpType::Float32 => any::<[u8; 4]>().prop_map(|b| b.to_vec()).boxed(),
        AvpType::Unsigned64 | AvpType::Integer64 | AvpType::Float64 => {
            any::<[u8; 8]>().prop_map(|b| b.to_vec()).boxed()
        }
        AvpType::Address => prop_oneof![
            any::<[u8; 4]>().prop_map(|a| [&[0u8, 1][..], &a].concat()),
            any::<[u8; 16]>().prop_map(|a| [&[0u8, 2][..], &a].concat()),
            (3u16.., proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(f, a)| [
                &f.to_be_bytes()[..],
                &a
            ]
            .concat()),
        ]
        .boxed(),
        AvpType::OctetString => prop_oneof![
            ".{0,20}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..20),
        ]
        .boxed(),
        _ => ".{0,20}".prop_map(String::into_bytes).boxed(),
    };
    prop_oneof![8 => valid, 1 => proptest::collection::vec(any::<u8>(), 0..12)].boxed()
}

fn leaf() -> impl Strategy<Value = Node> {
    let known = proptest::sample::select(KNOWN).prop_flat_map(|(code, vendor)| {
        let ty = dict()
            .avp(code, vendor)
            .map_or(AvpType::OctetString, |d| d.ty);
        payload(ty).prop_map(move |data| Node::Leaf { code, vendor, data })
    });
    // Codes above the dictionaries' ranges; some vendor-specific.
    let unknown = (
        900_000u32..900_100,
        prop_oneof![Just(0u32), Just(10415u32), 1u32..100],
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(code, vendor, data)| Node::Leaf { code, vendor, data });
    prop_oneof![4 => known, 1 => unknown]
}

fn node() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(4, 40, 6, |inner| {
        (
            proptest::sample::select(GROUPS),
            proptest::collection::vec(inner, 0..6),
        )
            .prop_map(|((code, vendor), kids)| Node::Group { code, vendor, kids })
    })
}

/// The flags the JSON reader will give this AVP: the dictionary's must bits, none if unknown.
fn flags(code: u32, vendor: u32) -> u8 {
    dict()
        .avp(code, vendor)
        .map_or(0, |d| d.flags.must & !AvpFlags::V)
}

fn write(w: &mut MessageWriter, n: &Node) {
    match n {
        Node::Leaf { code, vendor, data } => {
            w.avp(*code, flags(*code, *vendor), *vendor, data);
        }
        Node::Group { code, vendor, kids } => {
            w.group(*code, flags(*code, *vendor), *vendor, |w| {
                for k in kids {
                    write(w, k);
                }
            });
        }
    }
}

fn header(flags: u8, ids: (u32, u32, u32, u32)) -> Header {
    Header {
        flags: Flags(flags),
        ..Header::request(ids.0, ids.1, ids.2, ids.3)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn avps_json_avps_is_identity(nodes in proptest::collection::vec(node(), 0..12)) {
        let mut w = MessageWriter::new(Header::request(272, 4, 1, 2));
        for n in &nodes {
            write(&mut w, n);
        }
        let wire = w.finish().unwrap();
        let body = &wire[HEADER_LEN..];
        let mut json = String::new();
        write_avps(&mut json, AvpRefs::new(body, HEADER_LEN), dict()).unwrap();
        let mut w = MessageWriter::new(Header::request(272, 4, 1, 2));
        read_avps(&json, dict(), &mut w).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
        let back = w.finish().unwrap();
        prop_assert_eq!(&back[..], &wire[..], "{}", json);
    }

    #[test]
    fn message_json_round_trip(
        nodes in proptest::collection::vec(node(), 0..6),
        flags in 0u8..16,
        code in 0u32..0x100_0000,
        ids in any::<(u32, u32, u32)>(),
    ) {
        let mut w = MessageWriter::new(header(flags << 4, (code, ids.0, ids.1, ids.2)));
        for n in &nodes {
            write(&mut w, n);
        }
        let wire = w.finish().unwrap();
        let m = Message::decode(wire.clone()).unwrap();
        let mut json = String::new();
        write_message(&mut json, &m, dict()).unwrap();
        let back = read_message(&json, dict(), 1 << 20).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
        prop_assert_eq!(back, wire, "{}", json);
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        let mut w = MessageWriter::new(Header::request(272, 4, 1, 2)).max_len(4096);
        let _ = read_avps(&s, dict(), &mut w);
        let _ = read_message(&s, dict(), 4096);
    }

    #[test]
    fn json_like_text_never_panics(s in r#"[\[\]{}",:0-9a-zA-Z\\. -]{0,120}"#) {
        let mut w = MessageWriter::new(Header::request(272, 4, 1, 2)).max_len(4096);
        let _ = read_avps(&s, dict(), &mut w);
        let _ = read_message(&s, dict(), 4096);
    }
}
