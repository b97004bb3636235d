#!/usr/bin/env bash
# Memory per established call (signalling only): N long calls held open through Switchboard
# (media bypass) and, in the same run, through Kamailio with per-call dialog state
# (-A WITH_DIALOG). RSS is sampled once all N calls are up, minus the idle RSS.
#
#   bench/concurrent.sh [N]   (default 10000; calls are set up at 1000/s and last 90 s;
#                              PSS is read 36 s after the last call started)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REF=$ROOT/bench/reference
OUT=${OUT:-/tmp/switchboard-bench}
N=${1:-10000}
RATE=${RATE:-1000}
HOLD_MS=${HOLD_MS:-90000}
# Sample once the set-up transactions are over (64·T1 = 32 s after the last call started):
# what remains is the state of established calls.
SETTLE=${SETTLE:-36}
# BIN=/path/to/switchboard: another build (A/B runs).
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/switchboard-target}/release/switchboard}
ulimit -n 65536 2>/dev/null || true
mkdir -p "$OUT"
MEDIA=bypass OUT=$OUT bash "$ROOT/bench/cps.sh" --conf-only >/dev/null 2>&1 || true
CONF=$OUT/conf

# PSS of the system under test and its children (Kamailio's shared memory counted once).
group_rss() { local t=0; for p in "$1" $(pgrep -P "$1" 2>/dev/null); do t=$((t + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done; echo $t; }

measure() { # system
  local sys=$1
  case $sys in
    # An empty record database each run: a grown one fills SQLite's page cache, and the
    # figure would drift upwards from run to run.
    switchboard) rm -f "$OUT"/data/switchboard.db*; env ${SB_PRELOAD:+LD_PRELOAD=$SB_PRELOAD} "$BIN" --conf "$CONF" >"$OUT/sut.log" 2>&1 & ;;
    kamailio) mkdir -p "$OUT/kam"; kamailio -DD -E -f "$REF/kamailio-bench.cfg" -A CHILDREN_2 -A BIGBUF -A WITH_DIALOG -x tlsf -m 2048 -M 16 \
        -Y "$OUT/kam" -P "$OUT/kam/kamailio.pid" -u root -g root >"$OUT/sut.log" 2>&1 & ;;
  esac
  local sut=$!
  sleep 1.5
  local idle; idle=$(group_rss "$sut")
  sipp -sf "$REF/uas_sdp.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 18000 -t u1 -aa -nostdin -buff_size 4194304 -timeout 300 >/dev/null 2>&1 &
  local uas=$!
  sleep 0.5
  sipp 127.0.0.1:5060 -sf "$REF/uac_sdp.xml" -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 16000 -t u1 -aa -nostdin -s 1000 \
       -buff_size 4194304 -r "$RATE" -m "$N" -d "$HOLD_MS" -timeout 300s -trace_stat -stf "$OUT/conc_${sys}.csv" >/dev/null 2>&1 &
  local uac=$!
  # All calls are up once the ramp is over; their set-up transactions end 32 s later; the
  # first call hangs up at HOLD_MS.
  sleep $(( N / RATE + SETTLE ))
  local full; full=$(group_rss "$sut")
  kill "$uac" "$uas" 2>/dev/null || true
  kill "$sut" 2>/dev/null || true
  [ "$sys" = kamailio ] && [ -f "$OUT/kam/kamailio.pid" ] && kill "$(cat "$OUT/kam/kamailio.pid")" 2>/dev/null || true
  wait "$sut" 2>/dev/null || true
  sleep 1
  printf '| %s | %s | %s | %s | %s |\n' "$sys" "$N" "$((idle / 1024))" "$((full / 1024))" "$(( (full - idle) * 1024 / N ))"
}

echo "| system | concurrent calls | idle PSS MiB | PSS with calls MiB | bytes per call |"
echo "|---|---|---|---|---|"
# SYSTEMS="switchboard": skip the peer (A/B runs of two builds; quote the peer from a run
# of its own on the same day).
for sys in ${SYSTEMS:-switchboard kamailio}; do measure "$sys"; done
