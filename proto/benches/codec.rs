//! Codec benchmarks: decode, encode, and decode+validate for the three reference messages
//! (a ~300 B Ro CCR, a Cx SAA with 4 kB User-Data, a 40-AVP grouped-heavy CCR).
//!
//! Run: `cargo bench -p dmbridge-proto --bench codec`
//!
//! - `decode`: `Message::decode` plus a walk over every AVP at every level (descending into
//!   the AVPs the dictionary says are Grouped), i.e. what a consumer does to see all AVPs.
//! - `encode`: writing the whole message with `MessageWriter` into a reused buffer.
//! - `decode_validate`: `Message::decode` plus validation against the built-in dictionary
//!   with the compiled `Validator` (the per-message cost the bridge pays before anything
//!   else); `decode_validate_direct` the same through `validate()` straight from the
//!   dictionary.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dmproto::avp::AvpRefs;
use dmproto::dict::Dictionary;
use dmproto::{samples, validate, AvpType, Message, Validator};

fn walk(d: &Dictionary, avps: AvpRefs<'_>) -> usize {
    let mut n = 0;
    for a in avps.map_while(Result::ok) {
        n += a.data.len();
        if d.avp(a.code, a.vendor)
            .is_some_and(|def| def.ty == AvpType::Grouped)
        {
            n += walk(d, a.group());
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let dict = Dictionary::builtin();
    let validator = Validator::new(dict);
    let user_data = samples::cx_user_data();
    type Writer<'a> = Box<dyn Fn(BytesMut) -> BytesMut + 'a>;
    let cases: Vec<(&str, Bytes, Writer)> = vec![
        ("ro_ccr", samples::ro_ccr(), Box::new(samples::write_ro_ccr)),
        (
            "cx_saa_4k",
            samples::cx_saa(),
            Box::new(|b| samples::write_cx_saa(b, &user_data)),
        ),
        (
            "grouped_40",
            samples::grouped_heavy(),
            Box::new(samples::write_grouped_heavy),
        ),
    ];
    for (name, bytes, write) in &cases {
        let m = Message::decode(bytes.clone()).expect("sample decodes");
        if let Err(e) = validate(&m, dict) {
            eprintln!("note: {name} does not validate against the built-in dictionary: {e}");
        }
        let mut g = c.benchmark_group(*name);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("decode", |b| {
            b.iter(|| {
                let m = Message::decode(black_box(bytes.clone())).expect("decodes");
                walk(dict, m.avp_refs())
            })
        });
        g.bench_function("encode", |b| {
            let mut buf = BytesMut::with_capacity(8192);
            b.iter(|| {
                buf.clear();
                buf = write(std::mem::take(&mut buf));
                black_box(buf.len())
            })
        });
        g.bench_function("decode_validate", |b| {
            b.iter(|| {
                let m = Message::decode(black_box(bytes.clone())).expect("decodes");
                validator.validate(&m).is_ok()
            })
        });
        g.bench_function("decode_validate_direct", |b| {
            b.iter(|| {
                let m = Message::decode(black_box(bytes.clone())).expect("decodes");
                validate(&m, dict).is_ok()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
