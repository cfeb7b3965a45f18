//! The compiled [`Validator`] against `validate` on ABNFs the built-in dictionaries do not
//! have but a user's dictionary file may: counted bounds (`2*3`, `0`, `*3`), several
//! fixed-position rules (one allowed twice), a rule list longer than the validator's bit
//! word, more fixed-position rules than it has bits (the generic walk), and a Grouped AVP
//! with a counted ABNF. Each is where the compiled form leaves its fast lane, so each must
//! still give exactly `validate`'s Result-Code, Failed-AVP and message.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use dmproto::dict::Dictionary;
use dmproto::header::Header;
use dmproto::validate::{validate_with, Options};
use dmproto::{Message, MessageWriter, Validator};
use proptest::prelude::*;

const APP: u32 = 4242;
/// Odd-1 .. Odd-80: Unsigned32 AVPs, codes 9001..9080.
const FIRST: u32 = 9001;
const AVPS: u32 = 80;
/// Odd-Group, whose ABNF has counted rules.
const GROUP: u32 = 9100;
/// An AVP that must not carry M.
const NO_M: u32 = 9101;

/// The odd commands (codes 9000-9002) in a dictionary with the built-in ones.
fn dictionary() -> &'static Dictionary {
    let mut t = format!("APPLICATION-AUTH {APP} Odd\n");
    for i in 0..AVPS {
        writeln!(t, "ATTRIBUTE Odd-{} {} Unsigned32", i + 1, FIRST + i).unwrap();
    }
    writeln!(t, "ATTRIBUTE Odd-No-M {NO_M} Unsigned32 0 !M").unwrap();
    t.push_str(&format!(
        "ATTRIBUTE Odd-Group {GROUP} Grouped\n{{ closed\n\
         \tOdd-1 | REQUIRED | 2*3\n\tOdd-2 | OPTIONAL | 0\n\tOdd-3 | OPTIONAL | *2\n}}\n\n"
    ));
    // 9000: fixed head (Odd-5 allowed twice), counted and forbidden rules, a nested group.
    t.push_str(
        "REQUEST 9000 Odd-Request\n{ closed\n\
         \tOdd-4 | FIXED_HEAD | 1\n\tOdd-5 | FIXED_HEAD | 2\n\tOdd-6 | FIXED_HEAD | 1\n\
         \tOdd-7 | REQUIRED | 1\n\tOdd-8 | REQUIRED | 2*3\n\tOdd-9 | OPTIONAL | 0\n\
         \tOdd-10 | OPTIONAL | *3\n\tOdd-11 | OPTIONAL | -1\n\tOdd-Group | OPTIONAL | -1\n\
         \tOdd-No-M | OPTIONAL | 1\n}\n\
         ANSWER 9000 Odd-Answer\n{\n\tOdd-4 | REQUIRED | 1\n\tOdd-Group | OPTIONAL | 1\n}\n\n",
    );
    // 9001: 80 rules, the last ones required (past the 62-bit word).
    t.push_str("REQUEST 9001 Odd-Long-Request\n{\n");
    for i in 0..AVPS {
        let kind = if i >= 70 { "REQUIRED" } else { "OPTIONAL" };
        let max = if i % 7 == 3 { "2" } else { "1" };
        writeln!(t, "\tOdd-{} | {kind} | {max}", i + 1).unwrap();
    }
    t.push_str("}\nANSWER 9001 Odd-Long-Answer\n{\n\tOdd-1 | REQUIRED | 1\n}\n\n");
    // 9002: 64 fixed-position rules, more than the bit word holds.
    t.push_str("REQUEST 9002 Odd-Fixed-Request\n{ closed\n");
    for i in 0..64 {
        writeln!(t, "\tOdd-{} | FIXED_HEAD | 1", i + 1).unwrap();
    }
    t.push_str("\tOdd-70 | REQUIRED | 1\n}\nANSWER 9002 Odd-Fixed-Answer\n{\n\tOdd-1 | REQUIRED | 1\n}\n\n");
    let mut d = Dictionary::new_with_builtin();
    if let Err(e) = d.load_str(&t, "odd.dict") {
        panic!("odd dictionary does not load: {e}\n{t}");
    }
    Box::leak(Box::new(d))
}

#[derive(Clone, Debug)]
enum Item {
    /// (code, flags, payload length)
    Leaf(u32, u8, usize),
    Group(u8, Vec<(u32, u8)>),
}

fn flags() -> impl Strategy<Value = u8> {
    // Mostly M; sometimes none, P, or a reserved bit.
    prop_oneof![8 => Just(0x40u8), 1 => Just(0u8), 1 => Just(0x60u8), 1 => Just(0x41u8)]
}

fn code() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => (0..14u32).prop_map(|i| FIRST + i),
        2 => (0..AVPS).prop_map(|i| FIRST + i),
        1 => Just(NO_M),
        1 => Just(9999),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        8 => (code(), flags(), prop_oneof![9 => Just(4usize), 1 => Just(3usize)])
            .prop_map(|(c, f, n)| Item::Leaf(c, f, n)),
        1 => (flags(), proptest::collection::vec(((0..4u32).prop_map(|i| FIRST + i), flags()), 0..6))
            .prop_map(|(f, kids)| Item::Group(f, kids)),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        9000..9003u32,
        any::<bool>(),
        proptest::collection::vec(item(), 0..24),
        any::<bool>(),
        (0..64usize, 0..64usize),
    )
        .prop_map(|(cmd, request, mut items, ordered, (a, b))| {
            if cmd == 9002 {
                // The 64-rule fixed head: in order (so the generic walk also passes), or
                // with two places swapped (out of place past the bit word too).
                let mut head: Vec<Item> = (0..64).map(|i| Item::Leaf(FIRST + i, 0x40, 4)).collect();
                if !ordered {
                    head.swap(a, b);
                    head.truncate(a.max(b) + 1);
                }
                head.push(Item::Leaf(FIRST + 69, 0x40, 4));
                if ordered || a % 2 == 0 {
                    head.append(&mut items);
                }
                items = head;
            }
            let mut h = Header::request(cmd, APP, 1, 2);
            if !request {
                h.flags = dmproto::header::Flags(0);
            }
            let mut w = MessageWriter::new(h);
            for it in &items {
                match it {
                    Item::Leaf(c, f, n) => {
                        w.avp(*c, *f, 0, &vec![0u8; *n]);
                    }
                    Item::Group(f, kids) => {
                        w.group(GROUP, *f, 0, |w| {
                            for (c, f) in kids {
                                w.u32(*c, *f, 0, 7);
                            }
                        });
                    }
                }
            }
            Message::decode(w.finish().expect("encodes")).expect("decodes")
        })
}

#[test]
fn compiled_agrees_with_validate_on_odd_abnfs() {
    let d = dictionary();
    let strict = Options {
        strict_must_bits: true,
    };
    let (v, vs) = (Validator::new(d), Validator::with_options(d, strict));
    let outcomes = std::cell::RefCell::new(BTreeSet::new());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(4000));
    runner
        .run(&message(), |m| {
            for request in [None, Some(true), Some(false)] {
                let want = validate_with(&m, d, request, Options::default());
                outcomes.borrow_mut().insert((
                    m.header.code,
                    want.as_ref().err().map_or(0, |e| e.result_code),
                ));
                prop_assert_eq!(want, v.validate_as(&m, request));
                prop_assert_eq!(
                    validate_with(&m, d, request, strict),
                    vs.validate_as(&m, request)
                );
            }
            Ok(())
        })
        .unwrap();
    // The generator must reach each odd case, valid and broken, or the comparison says
    // little: every command both passes and fails, and each fault kind shows up.
    let outcomes = outcomes.into_inner();
    for cmd in 9000..9003 {
        assert!(
            outcomes.contains(&(cmd, 0)),
            "{cmd} never valid: {outcomes:?}"
        );
    }
    let codes: BTreeSet<u32> = outcomes.iter().map(|&(_, c)| c).collect();
    for code in [3009, 5001, 5005, 5008, 5009, 5014] {
        assert!(codes.contains(&code), "{code} never generated: {codes:?}");
    }
}
