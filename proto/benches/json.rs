//! AVP<->JSON benchmarks for the three reference messages (a ~300 B Ro CCR, a Cx SAA with a
//! 4 kB User-Data, a 40-AVP grouped-heavy CCR).
//!
//! Run: `cargo bench -p dmbridge-proto --bench json`
//!
//! - `avp_to_json`: the message body's AVPs to §4 JSON, into a reused `String` (what the
//!   bridge does for every message it hands to a script). Decoding the header is included.
//! - `json_to_avp`: that JSON back to AVPs, with a reused [`JsonReader`], into a message
//!   writer over a reused buffer (what the bridge does for every reply/request a script sends).
//!
//! Targets (issue 2, this 2-core machine): CCR AVP->JSON <= 1 us, JSON->AVP <= 1.5 us.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dmproto::dict::Dictionary;
use dmproto::json::{write_avps, JsonReader};
use dmproto::{samples, Message, MessageWriter};

fn bench(c: &mut Criterion) {
    let dict = Dictionary::builtin();
    let cases: [(&str, Bytes); 3] = [
        ("ro_ccr", samples::ro_ccr()),
        ("cx_saa_4k", samples::cx_saa()),
        ("grouped_40", samples::grouped_heavy()),
    ];
    for (name, wire) in &cases {
        let m = Message::decode(wire.clone()).expect("sample decodes");
        let mut json = String::new();
        write_avps(&mut json, m.avp_refs(), dict).expect("sample converts");
        let mut g = c.benchmark_group(*name);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function("avp_to_json", |b| {
            let mut out = String::with_capacity(16 * 1024);
            b.iter(|| {
                out.clear();
                let m = Message::decode(black_box(wire.clone())).expect("decodes");
                write_avps(&mut out, m.avp_refs(), dict).expect("converts");
                out.len()
            })
        });
        g.bench_function("json_to_avp", |b| {
            let mut reader = JsonReader::new(dict);
            let mut buf = BytesMut::with_capacity(16 * 1024);
            b.iter(|| {
                buf.clear();
                let mut w = MessageWriter::with_buffer(std::mem::take(&mut buf), m.header);
                reader.read_avps(black_box(&json), &mut w).expect("reads");
                buf = w.finish_buf().expect("encodes");
                buf.len()
            })
        });
        g.finish();
        // The JSON sizes, for BENCHMARKS.md.
        eprintln!(
            "{name}: {} bytes on the wire, {} bytes of JSON",
            wire.len(),
            json.len()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
