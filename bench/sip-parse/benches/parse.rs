//! Parse the same messages with switchboard-sip, ezk-sip-types and rsipstack.
//! `cargo bench` in bench/sip-parse; figures go to docs/BENCHMARKS.md.

use std::convert::TryFrom;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use sip_parse_bench::{BYE, INVITE, OK200, ezk_parse, ours_parse};

fn bench(c: &mut Criterion) {
    for (name, msg) in [("invite", INVITE), ("200ok", OK200), ("bye", BYE)] {
        assert!(ours_parse(Bytes::from_static(msg.as_bytes())).is_some(), "{name} must parse");
        assert!(ezk_parse(msg.as_bytes()).is_some(), "{name} must parse with ezk");
        assert!(rsipstack::sip::SipMessage::try_from(msg.as_bytes()).is_ok(), "{name} must parse with rsipstack");
        let mut g = c.benchmark_group(name);
        // Each parser gets the datagram as it arrives (a byte slice) and builds its message.
        g.bench_function("switchboard-sip parse", |b| {
            b.iter(|| switchboard_sip::parse_datagram(Bytes::copy_from_slice(black_box(msg.as_bytes()))))
        });
        g.bench_function("switchboard-sip parse+validate", |b| b.iter(|| ours_parse(Bytes::copy_from_slice(black_box(msg.as_bytes())))));
        g.bench_function("ezk-sip-types", |b| b.iter(|| ezk_parse(black_box(msg.as_bytes()))));
        g.bench_function("rsipstack", |b| b.iter(|| rsipstack::sip::SipMessage::try_from(black_box(msg.as_bytes()))));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
