//! Property tests: whatever the writer encodes, the decoder reads back exactly (header,
//! every AVP's code/flags/vendor/payload, nested grouped and vendor AVPs), typed values
//! survive encode/decode, and the framer splits any chunking of a stream into the same
//! messages.

use bytes::Bytes;
use dmproto::avp::{AvpRefs, MAX_DEPTH};
use dmproto::framer::Framer;
use dmproto::header::{Flags, Header};
use dmproto::value::{unix_to_ntp, Address, Value, TIME_MAX_UNIX, TIME_MIN_UNIX};
use dmproto::{AvpFlags, AvpType, Message, MessageWriter};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// The model of an AVP tree the writer is asked to encode.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Leaf {
        code: u32,
        flags: u8,
        vendor: u32,
        data: Vec<u8>,
    },
    Group {
        code: u32,
        flags: u8,
        vendor: u32,
        children: Vec<Node>,
    },
}

fn head() -> impl Strategy<Value = (u32, u8, u32)> {
    (
        any::<u32>(),
        prop_oneof![
            Just(0u8),
            Just(AvpFlags::M),
            Just(AvpFlags::M | AvpFlags::P)
        ],
        prop_oneof![3 => Just(0u32), 2 => Just(10415u32), 1 => any::<u32>()],
    )
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = (head(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(
        |((code, flags, vendor), data)| Node::Leaf {
            code,
            flags,
            vendor,
            data,
        },
    );
    leaf.prop_recursive(6, 64, 6, |inner| {
        (head(), proptest::collection::vec(inner, 0..6)).prop_map(
            |((code, flags, vendor), children)| Node::Group {
                code,
                flags,
                vendor,
                children,
            },
        )
    })
}

fn header() -> impl Strategy<Value = Header> {
    (
        0u32..(1 << 24),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        0u8..16,
    )
        .prop_map(|(code, app, hbh, e2e, f)| Header {
            version: 1,
            length: 0,
            flags: Flags(f << 4),
            code,
            app_id: app,
            hop_by_hop: hbh,
            end_to_end: e2e,
        })
}

fn write(w: &mut MessageWriter, n: &Node) {
    match n {
        Node::Leaf {
            code,
            flags,
            vendor,
            data,
        } => {
            w.avp(*code, *flags, *vendor, data);
        }
        Node::Group {
            code,
            flags,
            vendor,
            children,
        } => {
            w.group(*code, *flags, *vendor, |w| {
                for c in children {
                    write(w, c);
                }
            });
        }
    }
}

/// Reads `avps` back against the model (the decoder does not know which AVPs are grouped;
/// the model says where to descend).
fn check(avps: AvpRefs<'_>, model: &[Node]) -> Result<(), TestCaseError> {
    let got: Vec<_> = avps
        .collect::<Result<_, _>>()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(got.len(), model.len());
    for (a, n) in got.iter().zip(model) {
        let (code, flags, vendor) = match n {
            Node::Leaf {
                code,
                flags,
                vendor,
                ..
            }
            | Node::Group {
                code,
                flags,
                vendor,
                ..
            } => (*code, *flags, *vendor),
        };
        let v = if vendor != 0 { AvpFlags::V } else { 0 };
        prop_assert_eq!(a.code, code);
        prop_assert_eq!(a.vendor, vendor);
        prop_assert_eq!(a.flags.bits(), flags | v);
        match n {
            Node::Leaf { data, .. } => prop_assert_eq!(a.data, &data[..]),
            Node::Group { children, .. } => check(a.group(), children)?,
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_of_encode_is_identity(h in header(), avps in proptest::collection::vec(node(), 0..12)) {
        let mut w = MessageWriter::new(h);
        for n in &avps {
            write(&mut w, n);
        }
        let bytes = w.finish().unwrap();
        let m = Message::decode(bytes.clone()).unwrap();
        prop_assert_eq!(m.header.length as usize, bytes.len());
        let mut expect = h;
        expect.length = bytes.len() as u32;
        prop_assert_eq!(m.header, expect);
        check(m.avp_refs(), &avps)?;
        // The Bytes-backed iterator agrees with the borrowed one.
        for (o, r) in m.avps().zip(m.avp_refs()) {
            let o = o.unwrap();
            prop_assert_eq!(o.as_ref(), r.unwrap());
        }
        // Message equality survives re-encoding.
        prop_assert_eq!(Message::decode(m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn framer_splits_any_chunking(
        msgs in proptest::collection::vec((header(), proptest::collection::vec(node(), 0..4)), 1..6),
        cuts in proptest::collection::vec(1usize..200, 1..50),
    ) {
        let frames: Vec<Bytes> = msgs
            .iter()
            .map(|(h, avps)| {
                let mut w = MessageWriter::new(*h);
                for n in avps {
                    write(&mut w, n);
                }
                w.finish().unwrap()
            })
            .collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        let mut f = Framer::new(1 << 16);
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - pos);
            f.feed(&stream[pos..pos + n]).unwrap();
            pos += n;
            i += 1;
            while let Some(fr) = f.next_frame().unwrap() {
                got.push(fr);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn values_round_trip(v in value_strategy()) {
        let mut b = bytes::BytesMut::new();
        v.0.encode(&mut b).unwrap();
        prop_assert_eq!(b.len(), v.0.encoded_len());
        let back = Value::decode(v.0.ty(), &b).unwrap();
        match (back, v.0) {
            (Value::Float32(a), Value::Float32(e)) => prop_assert_eq!(a.to_bits(), e.to_bits()),
            (Value::Float64(a), Value::Float64(e)) => prop_assert_eq!(a.to_bits(), e.to_bits()),
            (a, e) => prop_assert_eq!(a, e),
        }
    }

    #[test]
    fn time_round_trips_in_window(t in TIME_MIN_UNIX..=TIME_MAX_UNIX) {
        let ntp = unix_to_ntp(t).unwrap();
        prop_assert_eq!(dmproto::value::ntp_to_unix(ntp), t);
    }
}

/// Owns the storage a borrowed [`Value`] points into.
#[derive(Debug)]
struct OwnedValue(Value<'static>);

fn leak<T: ?Sized>(b: Box<T>) -> &'static T {
    // Test-only: a few small leaks per case keep the strategy simple.
    Box::leak(b)
}

fn value_strategy() -> impl Strategy<Value = OwnedValue> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        bytes
            .clone()
            .prop_map(|b| Value::OctetString(leak(b.into_boxed_slice()))),
        any::<i32>().prop_map(Value::Integer32),
        any::<i64>().prop_map(Value::Integer64),
        any::<u32>().prop_map(Value::Unsigned32),
        any::<u64>().prop_map(Value::Unsigned64),
        any::<f32>().prop_map(Value::Float32),
        any::<f64>().prop_map(Value::Float64),
        any::<[u8; 4]>().prop_map(|a| Value::Address(Address::V4(a.into()))),
        any::<[u8; 16]>().prop_map(|a| Value::Address(Address::V6(a.into()))),
        (3u16.., bytes.clone()).prop_map(|(family, b)| Value::Address(Address::Other {
            family,
            addr: leak(b.into_boxed_slice())
        })),
        (TIME_MIN_UNIX..=TIME_MAX_UNIX).prop_map(Value::Time),
        ".*".prop_map(|s| Value::UTF8String(leak(s.into_boxed_str()))),
        "[a-z.]{0,30}".prop_map(|s| Value::DiameterIdentity(leak(s.into_boxed_str()))),
        ".*".prop_map(|s| Value::DiameterURI(leak(s.into_boxed_str()))),
        any::<i32>().prop_map(Value::Enumerated),
        ".*".prop_map(|s| Value::IPFilterRule(leak(s.into_boxed_str()))),
        ".*".prop_map(|s| Value::QoSFilterRule(leak(s.into_boxed_str()))),
    ]
    .prop_map(OwnedValue)
}

#[test]
fn every_type_is_covered_by_the_value_strategy() {
    // Guard against the strategy silently missing a type added later: the runner below
    // must see all 15 non-Grouped types.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let s = value_strategy();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let v = s.new_tree(&mut runner).unwrap().current();
        seen.insert(v.0.ty());
    }
    seen.insert(AvpType::Grouped);
    assert_eq!(seen.len(), 16);
}

#[test]
fn deepest_nesting_the_writer_allows_reads_back() {
    let mut model = Node::Leaf {
        code: 1,
        flags: 0,
        vendor: 0,
        data: b"leaf".to_vec(),
    };
    for i in 0..MAX_DEPTH {
        model = Node::Group {
            code: 100 + i as u32,
            flags: AvpFlags::M,
            vendor: if i % 2 == 0 { 10415 } else { 0 },
            children: vec![model],
        };
    }
    let mut w = MessageWriter::new(Header::request(1, 2, 3, 4));
    write(&mut w, &model);
    let m = Message::decode(w.finish().unwrap()).unwrap();
    check(m.avp_refs(), &[model]).unwrap();
}
