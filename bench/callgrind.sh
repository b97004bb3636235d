#!/usr/bin/env bash
# Instructions executed per call, which do not depend on the machine's load: the release
# binary under valgrind's callgrind, SIPp placing CALLS calls (default 300) at 20 calls/s
# through it to a SIPp UAS (bench/cps.sh's configuration: media bypass, records on), from
# start to graceful shutdown. Prints the total and the total without AWS-LC (its start-up
# entropy collection for the DTLS certificate varies between runs), and keeps the profile
# for callgrind_annotate. Needs valgrind and sip-tester.
#
#   bench/callgrind.sh            (CALLS=300 OUT=/tmp/switchboard-callgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REF=$ROOT/bench/reference
OUT=${OUT:-/tmp/switchboard-callgrind}
CALLS=${CALLS:-300}
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/switchboard-target}/release/switchboard
command -v valgrind >/dev/null || { echo "install valgrind" >&2; exit 1; }
command -v sipp >/dev/null || { echo "install sip-tester" >&2; exit 1; }
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p "$OUT"
rm -f "$OUT"/callgrind.out.* "$OUT"/data.db*
OUT=$OUT bash "$ROOT/bench/cps.sh" --conf-only >/dev/null 2>&1 || true
CONF=$OUT/conf
sed -i "s|^\[storage\].*||" "$CONF/switchboard.toml"
printf '[storage]\npath = "%s/data.db"\n' "$OUT" >> "$CONF/switchboard.toml"

valgrind --tool=callgrind ${CG_FLAGS:-} --callgrind-out-file="$OUT/callgrind.out.%p" "$BIN" --conf "$CONF" >"$OUT/sut.log" 2>&1 &
SUT=$!
# Valgrind starts slowly: wait for the SIP listener.
for _ in $(seq 1 120); do
  ss -lun 2>/dev/null | grep -q "127.0.0.1:5060 " && break
  sleep 0.5
done
sleep 2
sipp -sf "$REF/uas_sdp.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 18000 -t u1 -aa -nostdin -timeout 300 >/dev/null 2>&1 &
UAS=$!
sleep 0.5
sipp 127.0.0.1:5060 -sf "$REF/uac_sdp.xml" -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 16000 -t u1 -aa \
     -nostdin -r 20 -m "$CALLS" -d 1000 -timeout 120s -timeout_error \
     -trace_stat -stf "$OUT/uac.csv" >/dev/null 2>&1 || echo "SIPp: some calls failed (see $OUT/uac.csv)" >&2
kill "$UAS" 2>/dev/null || true
kill -TERM "$SUT"
wait "$SUT" 2>/dev/null || true
f=$(ls "$OUT"/callgrind.out.* | head -1)
# Self cost per function; AWS-LC's functions are named by their source paths.
callgrind_annotate --auto=no --threshold=100 "$f" > "$OUT/functions.txt" 2>/dev/null || true
total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$OUT/functions.txt")
awslc=$(awk '/file:function/ {f = 1; next} f && /aws-lc|aws_lc|awslc/ {gsub(",", "", $1); s += $1} END {print s + 0}' "$OUT/functions.txt")
line=$(tail -1 "$OUT/uac.csv"); hdr=$(head -1 "$OUT/uac.csv")
col() { echo "$hdr" | tr ';' '\n' | grep -n "^$1$" | cut -d: -f1; }
ok=$(echo "$line" | cut -d';' -f"$(col 'SuccessfulCall(C)')")
echo "calls: $ok of $CALLS successful"
echo "instructions: $total in all, $((total - awslc)) without AWS-LC ($(( (total - awslc) / CALLS )) per call, start-up and shutdown included)"
echo "profile: $f"
