//! The compiled [`Validator`] must give exactly the result of `validate` (same Result-Code,
//! Failed-AVP and message) for any message: generated from the built-in dictionary's own
//! commands and AVPs (so the ABNF paths are exercised), and mutated real samples.

use dmproto::dict::{Dictionary, Rule};
use dmproto::header::{Flags, Header};
use dmproto::validate::{validate_with, Options};
use dmproto::{samples, AvpFlags, AvpType, Message, MessageWriter, Validator};
use proptest::prelude::*;

/// (app, code) of commands to generate, and for each the AVP keys its request ABNF lists.
/// (application, command code, AVP keys its ABNFs list).
type Command = (u32, u32, Vec<(u32, u32)>);

fn commands(d: &Dictionary) -> Vec<Command> {
    let keys = |rules: &[Rule]| rules.iter().map(|r| (r.code, r.vendor)).collect::<Vec<_>>();
    d.commands()
        .map(|c| {
            let mut k = keys(&c.request.rules);
            k.extend(keys(&c.answer.rules));
            (c.app_id, c.code, k)
        })
        .filter(|(_, _, k)| !k.is_empty())
        .collect()
}

#[derive(Clone, Debug)]
enum Node {
    Leaf(u32, u32, u8, Vec<u8>),
    Group(u32, u32, u8, Vec<Node>),
}

fn write(w: &mut MessageWriter, n: &Node) {
    match n {
        Node::Leaf(c, v, f, data) => {
            w.avp(*c, *f, *v, data);
        }
        Node::Group(c, v, f, kids) => {
            w.group(*c, *f, *v, |w| {
                for k in kids {
                    write(w, k);
                }
            });
        }
    }
}

/// Builds an AVP tree over `keys`, sizing payloads right most of the time (so validation
/// gets past value checks) and wrong some of the time.
fn tree(d: &'static Dictionary, keys: Vec<(u32, u32)>, depth: u32) -> BoxedStrategy<Node> {
    let keys2 = keys.clone();
    let leaf = (
        proptest::sample::select(keys.clone()),
        prop_oneof![
            Just(AvpFlags::M),
            Just(0u8),
            Just(AvpFlags::M | AvpFlags::P),
            Just(0x41u8)
        ],
        0u8..10,
        proptest::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(move |((c, v), f, pick, mut data)| {
            if let Some(def) = d.avp(c, v) {
                if let Some(n) = def.ty.fixed_len() {
                    if pick < 8 {
                        data.resize(n, 0);
                    }
                }
                if def.ty == AvpType::Address && pick < 8 {
                    data = vec![0, 1, 10, 0, 0, 1];
                }
            }
            Node::Leaf(c, v, f, data)
        })
        .boxed();
    if depth == 0 {
        return leaf;
    }
    let grouped: Vec<(u32, u32)> = keys2
        .iter()
        .copied()
        .filter(|&(c, v)| d.avp(c, v).is_some_and(|a| a.ty == AvpType::Grouped))
        .collect();
    if grouped.is_empty() {
        return leaf;
    }
    let inner_keys: Vec<(u32, u32)> = grouped
        .iter()
        .filter_map(|&(c, v)| d.avp(c, v))
        .flat_map(|a| a.group.rules.iter().map(|r| (r.code, r.vendor)))
        .chain(keys2.iter().copied())
        .collect();
    let sub = tree(d, inner_keys, depth - 1);
    prop_oneof![
        3 => leaf,
        1 => (
            proptest::sample::select(grouped),
            proptest::collection::vec(sub, 0..5)
        )
            .prop_map(|((c, v), kids)| Node::Group(c, v, AvpFlags::M, kids)),
    ]
    .boxed()
}

/// Writes one well-formed occurrence of every AVP `rules` requires (recursively for grouped
/// ones), so generated messages can be valid.
fn skeleton(w: &mut MessageWriter, d: &Dictionary, rules: &[Rule], depth: u32) {
    for r in rules.iter().filter(|r| r.min > 0) {
        let Some(def) = d.avp(r.code, r.vendor) else {
            continue;
        };
        let f = def.flags.must;
        for _ in 0..r.min {
            match def.ty {
                AvpType::Grouped if depth > 0 => {
                    w.group(r.code, f, r.vendor, |w| {
                        skeleton(w, d, &def.group.rules, depth - 1)
                    });
                }
                AvpType::Grouped => {
                    w.group(r.code, f, r.vendor, |_| {});
                }
                AvpType::Address => {
                    w.avp(r.code, f, r.vendor, &[0, 1, 10, 0, 0, 1]);
                }
                ty => {
                    let n = ty.fixed_len().unwrap_or(1);
                    w.avp(r.code, f, r.vendor, &b"xxxxxxxx"[..n]);
                }
            }
        }
    }
}

fn message() -> impl Strategy<Value = Message> {
    let d = Dictionary::builtin();
    let cmds = commands(d);
    proptest::sample::select(cmds).prop_flat_map(move |(app, code, keys)| {
        (
            proptest::collection::vec(tree(d, keys, 3), 0..6),
            any::<bool>(),
            prop_oneof![
                Just(Flags::R | Flags::E),
                Just(Flags::R),
                Just(Flags::R | Flags::P),
                Just(Flags::P),
                Just(0u8),
                Just(Flags::E),
                Just(Flags::R | Flags::T)
            ],
        )
            .prop_map(move |(nodes, with_skeleton, flags)| {
                let mut h = Header::request(code, app, 1, 2);
                h.flags = Flags(flags);
                let mut w = MessageWriter::new(h);
                if with_skeleton {
                    if let Some(c) = d.command(app, code) {
                        let rules = if flags & Flags::R != 0 {
                            &c.request
                        } else {
                            &c.answer
                        };
                        skeleton(&mut w, d, &rules.rules, 4);
                    }
                }
                for n in &nodes {
                    write(&mut w, n);
                }
                Message::decode(w.finish().expect("encodes")).expect("decodes")
            })
    })
}

fn agree(m: &Message, v: &Validator<'_>, strict: &Validator<'_>) -> Result<(), TestCaseError> {
    let d = Dictionary::builtin();
    for request in [None, Some(true), Some(false)] {
        prop_assert_eq!(
            validate_with(m, d, request, Options::default()),
            v.validate_as(m, request)
        );
        let so = Options {
            strict_must_bits: true,
        };
        prop_assert_eq!(
            validate_with(m, d, request, so),
            strict.validate_as(m, request)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn compiled_agrees_on_mutated_samples(
        which in 0usize..12,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    ) {
        let d = Dictionary::builtin();
        let all = samples::all_with_binary();
        let mut b = all[which % all.len()].1.to_vec();
        for (at, byte) in edits {
            // Keep the header's version and length so the body is what gets validated.
            let i = 4 + at % (b.len() - 4);
            b[i] = byte;
        }
        if let Ok(m) = Message::decode(bytes::Bytes::from(b)) {
            let v = Validator::new(d);
            let strict = Validator::with_options(d, Options { strict_must_bits: true });
            agree(&m, &v, &strict)?;
        }
    }
}

/// Runs the generated-message property by hand so the spread of outcomes can be checked
/// afterwards: a generator that only ever produced valid (or only broken) messages would
/// make the comparison meaningless.
#[test]
fn compiled_agrees_on_generated_messages() {
    let d = Dictionary::builtin();
    let v = Validator::new(d);
    let strict = Validator::with_options(
        d,
        Options {
            strict_must_bits: true,
        },
    );
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(1500));
    runner
        .run(&message(), |m| {
            seen.borrow_mut()
                .insert(v.validate(&m).err().map_or(0, |e| e.result_code));
            agree(&m, &v, &strict)
        })
        .unwrap();
    let seen = seen.into_inner();
    for code in [0, 3008, 3009, 5005, 5014] {
        assert!(
            seen.contains(&code),
            "outcome {code} never generated: {seen:?}"
        );
    }
}

#[test]
fn samples_validate_the_same() {
    let d = Dictionary::builtin();
    let v = Validator::new(d);
    for (name, b) in samples::all_with_binary() {
        let m = Message::decode(b).unwrap();
        assert_eq!(v.validate(&m), dmproto::validate(&m, d), "{name}");
    }
    assert!(format!("{v:?}").contains("plans"));
    assert!(std::ptr::eq(v.dictionary(), d));
}
