#!/usr/bin/env bash
# Calls per second through Switchboard and, in the same run, through Kamailio (a
# transaction-stateful proxy with record-routing): SIPp UAC -> system under test -> SIPp UAS,
# 1 s calls, loopback. For each rate: calls attempted, failed, CPU µs per call of the system
# under test, and its peak RSS.
#
#   bench/cps.sh [RATES...]          (default: 500 1000 2000 4000)
#   MEDIA=bypass|anchor bench/cps.sh (Switchboard media mode, default bypass: signalling only)
#   CALLS_SECS=5                     (seconds of load per point)
#   BIN=/path/to/switchboard         (another build, for A/B runs; default the release build)
#   THREADS=1                        (also each Switchboard thread's CPU per call, to stderr)
#   CPUS=0 | CPUS=0,1                (pin both systems under test to these cores, taskset;
#                                     the SIPp generators stay unpinned)
#
# Needs: sipp (sip-tester), kamailio, a release build (cargo build --release).
# Results: a Markdown table on stdout; raw SIPp stats under $OUT (default /tmp/switchboard-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REF=$ROOT/bench/reference
OUT=${OUT:-/tmp/switchboard-bench}
MEDIA=${MEDIA:-bypass}
CALLS_SECS=${CALLS_SECS:-5}
CONF_ONLY=false
if [ "${1:-}" = --conf-only ]; then CONF_ONLY=true; shift; fi
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(500 1000 2000 4000)
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/switchboard-target}/release/switchboard}
command -v sipp >/dev/null || { echo "install sip-tester" >&2; exit 1; }
command -v kamailio >/dev/null || { echo "install kamailio" >&2; exit 1; }
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true
mkdir -p "$OUT"

# Switchboard configuration for the benchmark: everything goes to the UAS on 5080.
CONF=$OUT/conf
mkdir -p "$CONF/dialplan"
anchor=$([ "$MEDIA" = anchor ] && echo true || echo false)
cat > "$CONF/switchboard.toml" <<EOF
[sip]
udp = "127.0.0.1:5060"
max_calls = 100000
[media]
ip = "127.0.0.1"
anchor = $anchor
rtp_port_min = 20000
rtp_port_max = 65000
codecs = ["PCMU", "PCMA", "telephone-event"]
[http]
listen = "127.0.0.1:8099"
[log]
level = "warn"
[shutdown]
drain_secs = 1
[gateway.uas]
address = "127.0.0.1:5080"
EOF
cat > "$CONF/dialplan/bench.toml" <<'EOF'
[[extension]]
name = "all-to-uas"
actions = [ { bridge = { targets = ["gateway/uas/$0"], timeout = 30 } } ]
EOF

$CONF_ONLY && exit 0

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
tick=$(getconf CLK_TCK)
PIN=(); [ -n "${CPUS:-}" ] && PIN=(taskset -c "$CPUS")

start_sut() {
  case $1 in
    # Each point starts from an empty record database, so runs compare alike.
    switchboard) rm -f "$OUT"/data/switchboard.db*; "${PIN[@]}" "$BIN" --conf "$CONF" >"$OUT/sut.log" 2>&1 & ;;
    kamailio) mkdir -p "$OUT/kam"; "${PIN[@]}" kamailio -DD -E -f "$REF/kamailio-bench.cfg" -A CHILDREN_2 -A BIGBUF -x tlsf -m 2048 -M 16 \
        -Y "$OUT/kam" -P "$OUT/kam/kamailio.pid" -u root -g root >"$OUT/sut.log" 2>&1 & ;;
  esac
  SUT=$!
  sleep 1
}

# The system under test and its children (Kamailio forks workers); threads count in the
# process's own figures. Memory is PSS, so Kamailio's shared memory is not counted per child.
sut_pids() { echo "$SUT"; pgrep -P "$SUT" 2>/dev/null || true; }
group_ticks() { local t=0; for p in $(sut_pids); do t=$((t + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done; echo $t; }
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
group_rss() { local t=0; for p in $(sut_pids); do t=$((t + $(pss_kb "$p"))); done; echo $t; }

# THREADS=1: each Switchboard thread's CPU µs per call over the whole run (to stderr).
thread_ticks() { # pid calls
  for t in /proc/"$1"/task/*; do
    awk -v n="$2" -v tk="$tick" '{ c = $14 + $15; if (c > 0) { sub(/^\(/, "", $2); sub(/\)$/, "", $2); printf "  thread %-16s %6.1f µs/call\n", $2, c / tk * 1e6 / n } }' "$t/stat"
  done | sort -k3 -rn
}

run_point() { # system rate
  local sys=$1 rate=$2 calls=$(( $2 * CALLS_SECS ))
  start_sut "$sys"
  sipp -sf "$REF/uas_sdp.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 18000 -t u1 -aa -nostdin \
       -buff_size 4194304 -timeout 150 >/dev/null 2>&1 &
  local uas=$!
  sleep 0.5
  local t0; t0=$(group_ticks)
  local peak=0
  ( while kill -0 "$SUT" 2>/dev/null; do r=$(group_rss); [ "$r" -gt "$peak" ] && peak=$r; echo "$peak" > "$OUT/peak"; sleep 0.2; done ) &
  local sampler=$!
  sipp 127.0.0.1:5060 -sf "$REF/uac_sdp.xml" -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 16000 -t u1 -aa \
       -nostdin -s 1000 -buff_size 4194304 -r "$rate" -rp 1000 -m "$calls" -d 1000 -timeout 90s \
       -timeout_error -trace_stat -stf "$OUT/uac_${sys}_${rate}.csv" >/dev/null 2>&1 || true
  local t1; t1=$(group_ticks)
  [ "${THREADS:-}" = 1 ] && [ "$sys" = switchboard ] && thread_ticks "$SUT" "$calls" >&2
  kill "$sampler" 2>/dev/null || true
  local peak_kb; peak_kb=$(cat "$OUT/peak" 2>/dev/null || echo 0)
  kill "$uas" 2>/dev/null || true
  kill "$SUT" 2>/dev/null || true
  [ "$sys" = kamailio ] && [ -f "$OUT/kam/kamailio.pid" ] && kill "$(cat "$OUT/kam/kamailio.pid")" 2>/dev/null || true
  wait "$SUT" 2>/dev/null || true
  sleep 1
  # SIPp's final stats line: TotalCallCreated, SuccessfulCall(C), FailedCall(C).
  local line; line=$(tail -1 "$OUT/uac_${sys}_${rate}.csv")
  local hdr; hdr=$(head -1 "$OUT/uac_${sys}_${rate}.csv")
  col() { echo "$hdr" | tr ';' '\n' | grep -n "^$1$" | cut -d: -f1; }
  local ok fail; ok=$(echo "$line" | cut -d';' -f"$(col 'SuccessfulCall(C)')"); fail=$(echo "$line" | cut -d';' -f"$(col 'FailedCall(C)')")
  local us_per_call; us_per_call=$(awk -v d=$((t1 - t0)) -v tk="$tick" -v n="$calls" 'BEGIN { printf "%.0f", d / tk * 1e6 / n }')
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$sys" "$rate" "$calls" "$ok" "$fail" "$us_per_call" "$((peak_kb / 1024))"
}

echo "| system | rate (calls/s) | calls | successful | failed | CPU µs/call | peak PSS MiB |"
echo "|---|---|---|---|---|---|---|"
for rate in "${RATES[@]}"; do
  run_point switchboard "$rate"
  run_point kamailio "$rate"
done
