//! Dictionary look-up benchmarks: the probes the codec, validator and JSON mapping make for
//! every AVP and message.
//!
//! Run: `cargo bench -p dmbridge-proto --bench dict`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dmproto::dict::Dictionary;

fn lookups(c: &mut Criterion) {
    let d = Dictionary::builtin();
    let keys = [
        (263u32, 0u32),
        (443, 0),
        (701, 10415),
        (1400, 10415),
        (999_999, 7),
    ];
    c.bench_function("dict/avp(code,vendor) x5", |b| {
        b.iter(|| {
            let mut n = 0;
            for &(code, vendor) in &keys {
                n += usize::from(d.avp(black_box(code), black_box(vendor)).is_some());
            }
            n
        })
    });
    let names = [
        "Session-Id",
        "Subscription-Id",
        "Multiple-Services-Credit-Control",
        "Nope",
    ];
    c.bench_function("dict/avp_by_name x4", |b| {
        b.iter(|| {
            let mut n = 0;
            for name in &names {
                n += usize::from(d.avp_by_name(black_box(name)).is_some());
            }
            n
        })
    });
    c.bench_function("dict/command(app,code)", |b| {
        b.iter(|| {
            d.command(black_box(16777238), black_box(272))
                .map(|c| c.code)
        })
    });
    c.bench_function("dict/command fallback", |b| {
        b.iter(|| d.command(black_box(12345), black_box(258)).map(|c| c.code))
    });
    c.bench_function("dict/command_by_abbr(ppr)", |b| {
        b.iter(|| d.command_by_abbr(black_box("ppr")).map(|c| c.code))
    });
    c.bench_function("dict/new_with_builtin (clone)", |b| {
        b.iter(|| Dictionary::builtin().clone())
    });
}

criterion_group!(benches, lookups);
criterion_main!(benches);
