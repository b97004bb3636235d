#!/usr/bin/env bash
# The browser leg, on loopback: click -> ringing and click -> audio at the ACD (median of 20
# calls, headless Chromium + SIPp ACD), and the widget's sizes. Needs chromium and sip-tester.
# BENCH_PERF=/tmp/web.perf records a perf profile (call graphs) of the switch over the CPU
# benchmark's measured 10 s: `perf report -i /tmp/web.perf --no-children`.
# SWITCHBOARD_BIN=<binary> runs another build of the switch under the same harness (A/B).
set -euo pipefail
cd "$(dirname "$0")/.."
for f in modules/webrtc/web/c2c.js modules/webrtc/web/client.js; do
  echo "$f: $(wc -c < "$f") bytes, $(gzip -9c "$f" | wc -c) gzipped"
done
cargo test --release -p switchboard --test web -- --ignored --nocapture --test-threads 1 bench_ 2>&1 | grep -E "BENCH|test result|panicked"
