#!/usr/bin/env bash
# What the DTMF interpreter costs a call (docs/BENCHMARKS.md): the switch's CPU per
# call-second and the B→A audio latency without bindings, with bindings on an RFC 4733 leg
# and on an in-band leg (the delay line), three rounds each, one call of 15 s per point,
# on loopback. Needs sip-tester.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p switchboard --test media -- --ignored --nocapture --test-threads 1 bench_bindings 2>&1 | grep -E "BENCH|test result|panicked"
