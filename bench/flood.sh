#!/usr/bin/env bash
# Flood load through Switchboard's overload control ([limits]), loopback only, every run
# bounded in time. Two tables:
#
#  1. Memory under an OPTIONS flood (send-only, answers ignored): one untrusted source
#     (127.0.0.66) at OPTIONS_RATE, then SOURCES untrusted sources (127.0.0.70...) at
#     SOURCE_RATE each, then at UNDER_RATE each (under the per-source rate), FLOOD_SECS
#     each. The switch's PSS sampled every second (idle, peak, SETTLE s after the flood),
#     its server transactions (peak, at the end of the flood, after SETTLE) and its
#     drop/ban/503 counters. With Kamailio installed, the same floods
#     against it (bench/reference/kamailio-bench.cfg as cps.sh runs it: tm, no pike; the
#     OPTIONS are relayed to 127.0.0.1:5080, where nothing answers).
#  2. Legitimate calls under an INVITE flood: one untrusted source (127.0.0.67) at
#     INVITE_RATE un-ACKed INVITEs/s for FLOOD_SECS while a trusted caller (127.0.0.1) places
#     LEGIT_RATE calls/s for LEGIT_SECS s (1 s calls, bench/reference/uac_sdp.xml) to the
#     SIPp UAS on 5080; and the same calls with no flood (the baseline).
#
#   bench/flood.sh                     (BIN=path/to/switchboard to use another build)
#   FLOOD_SECS=30 OPTIONS_RATE=10000 SOURCES=20 SOURCE_RATE=500 INVITE_RATE=1000
#   UNDER_RATE=19 LEGIT_RATE=50 LEGIT_SECS=20 SETTLE=35 KAMAILIO=auto|no
#
# Needs: sipp (sip-tester), curl, a release build (cargo build --release); kamailio optional.
# Results: Markdown tables on stdout; raw SIPp stats and the metrics under $OUT
# (default /tmp/switchboard-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REF=$ROOT/bench/reference
SC=$ROOT/tests/sipp
OUT=${OUT:-/tmp/switchboard-bench}
FLOOD_SECS=${FLOOD_SECS:-30}
OPTIONS_RATE=${OPTIONS_RATE:-10000}
SOURCES=${SOURCES:-20}
SOURCE_RATE=${SOURCE_RATE:-500}
INVITE_RATE=${INVITE_RATE:-1000}
LEGIT_RATE=${LEGIT_RATE:-50}
LEGIT_SECS=${LEGIT_SECS:-20}
# Past the flood, what the switch still holds once its transactions have expired (Timer J
# and H: 64·T1 = 32 s).
SETTLE=${SETTLE:-35}
# Per-source rate of the third OPTIONS run (under [limits] source_rate = 20; 0 skips it).
UNDER_RATE=${UNDER_RATE:-19}
KAMAILIO=${KAMAILIO:-auto}
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/switchboard-target}/release/switchboard}
command -v sipp >/dev/null || { echo "install sip-tester" >&2; exit 1; }
command -v curl >/dev/null || { echo "install curl" >&2; exit 1; }
[ -x "$BIN" ] || { echo "build first: cargo build --release (or set BIN)" >&2; exit 1; }
if [ "$KAMAILIO" = auto ]; then KAMAILIO=$(command -v kamailio >/dev/null && echo yes || echo no); fi
ulimit -n 65536 2>/dev/null || true
mkdir -p "$OUT"
rm -f "$OUT/conf/switchboard.toml"
MEDIA=bypass OUT=$OUT bash "$ROOT/bench/cps.sh" --conf-only >/dev/null 2>&1 || true
CONF=$OUT/conf
[ -f "$CONF/switchboard.toml" ] || { echo "bench/cps.sh --conf-only wrote no conf (it wants kamailio and a build in the target dir)" >&2; exit 1; }
HTTP=$(awk -F'"' '/^listen/ {print $2; exit}' "$CONF/switchboard.toml")

# Everything this script starts, killed on the way out whatever happens.
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$OUT/kam/kamailio.pid" ] && kill "$(cat "$OUT/kam/kamailio.pid")" 2>/dev/null || true
}
trap cleanup EXIT

# PSS of the system under test and its children (Kamailio's shared memory counted once).
group_rss() { local t=0; for p in "$1" $(pgrep -P "$1" 2>/dev/null); do t=$((t + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0))); done; echo $t; }
metrics() { curl -s --max-time 2 "http://$HTTP/metrics" || true; }
# metric FILE NAME: a value from a saved /metrics page (0 when absent).
metric() { awk -v k="$2" '$1 == k {v = $2} END {printf "%d", v + 0}' "$1"; }
# sipp_stat FILE COLUMN: a column of SIPp's last statistics line (-trace_stat).
sipp_stat() {
  local hdr line n
  hdr=$(head -1 "$1" 2>/dev/null) || { echo 0; return; }
  line=$(tail -1 "$1")
  n=$(echo "$hdr" | tr ';' '\n' | grep -n "^$2$" | cut -d: -f1)
  [ -n "$n" ] && echo "$line" | cut -d';' -f"$n" || echo 0
}

start_sut() { # system
  case $1 in
    switchboard)
      "$BIN" --conf "$CONF" >"$OUT/sut.log" 2>&1 &
      SUT=$!
      for _ in $(seq 50); do curl -sf --max-time 1 "http://$HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.2; done ;;
    kamailio)
      mkdir -p "$OUT/kam"
      kamailio -DD -E -f "$REF/kamailio-bench.cfg" -A CHILDREN_2 -A BIGBUF -x tlsf -m 2048 -M 16 \
        -Y "$OUT/kam" -P "$OUT/kam/kamailio.pid" -u root -g root >"$OUT/sut.log" 2>&1 &
      SUT=$!
      sleep 1.5 ;;
  esac
  PIDS+=("$SUT")
  sleep 0.5
}

stop_sut() { # system
  kill "$SUT" 2>/dev/null || true
  [ "$1" = kamailio ] && [ -f "$OUT/kam/kamailio.pid" ] && kill "$(cat "$OUT/kam/kamailio.pid")" 2>/dev/null || true
  wait "$SUT" 2>/dev/null || true
  rm -f "$OUT/kam/kamailio.pid"
  sleep 1
}

# Every second: the peak PSS and (Switchboard) the peak of server transactions held.
start_sampler() { # system
  local sys=$1
  echo "0 0" >"$OUT/flood_peak"
  ( peak=0; tpeak=0
    while kill -0 "$SUT" 2>/dev/null; do
      r=$(group_rss "$SUT"); [ "$r" -gt "$peak" ] && peak=$r
      if [ "$sys" = switchboard ]; then
        t=$(metrics | awk '$1 == "switchboard_sip_server_transactions" {printf "%d", $2}')
        [ -n "$t" ] && [ "$t" -gt "$tpeak" ] && tpeak=$t
      fi
      echo "$peak $tpeak" >"$OUT/flood_peak.new"; mv "$OUT/flood_peak.new" "$OUT/flood_peak"
      sleep 1
    done ) &
  SAMPLER=$!
  PIDS+=("$SAMPLER")
}

# flood NAME SCENARIO SERVICE IP RATE COUNT: one send-only SIPp source, bounded by its own
# global timeout and by timeout(1).
flood() {
  timeout $((FLOOD_SECS * 3 + 30)) sipp 127.0.0.1:5060 -sf "$SC/$2" -s "$3" -i "$4" -p 5090 -t u1 -nostdin \
    -r "$5" -rp 1000 -m "$6" -l "$6" -buff_size 4194304 -timeout $((FLOOD_SECS * 3 + 20))s \
    -trace_stat -stf "$OUT/$1.csv" >/dev/null 2>&1 || true
}

mib() { echo $(($1 / 1024)); }

# Table 1: memory under an OPTIONS flood.
options_row() { # system sources rate
  local sys=$1 n=$2 rate=$3 count=$(( $3 * FLOOD_SECS )) i ip pids=()
  start_sut "$sys"
  local idle; idle=$(group_rss "$SUT")
  start_sampler "$sys"
  local t0; t0=$(date +%s.%N)
  for ((i = 0; i < n; i++)); do
    if [ "$n" = 1 ]; then ip=127.0.0.66; else ip=127.0.0.$((70 + i)); fi
    rm -f "$OUT/flood_${sys}_${n}_${rate}_$i.csv"
    flood "flood_${sys}_${n}_${rate}_$i" flood_options.xml probe "$ip" "$rate" "$count" &
    pids+=($!); PIDS+=($!)
  done
  wait "${pids[@]}" 2>/dev/null || true
  local t1; t1=$(date +%s.%N)
  [ "$sys" = switchboard ] && metrics >"$OUT/metrics_${sys}_${n}_${rate}_end.txt"
  local end_pss; end_pss=$(group_rss "$SUT")
  sleep "$SETTLE"
  [ "$sys" = switchboard ] && metrics >"$OUT/metrics_${sys}_${n}_${rate}_settled.txt"
  local settled; settled=$(group_rss "$SUT")
  kill "$SAMPLER" 2>/dev/null || true
  local peak tpeak; read -r peak tpeak <"$OUT/flood_peak"
  [ "$end_pss" -gt "$peak" ] && peak=$end_pss
  stop_sut "$sys"
  PIDS=()
  local sent=0
  for ((i = 0; i < n; i++)); do sent=$((sent + $(sipp_stat "$OUT/flood_${sys}_${n}_${rate}_$i.csv" TotalCallCreated))); done
  local secs; secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  local achieved; achieved=$(awk -v s="$sent" -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", s / (b - a) }')
  local what; if [ "$n" = 1 ]; then what="1 source × $rate/s"; else what="$n sources × $rate/s"; fi
  if [ "$sys" = switchboard ]; then
    local e=$OUT/metrics_${sys}_${n}_${rate}_end.txt s=$OUT/metrics_${sys}_${n}_${rate}_settled.txt
    printf '| %s | %s | %s in %s s (%s/s) | %s | %s | %s | %s / %s / %s | %s / %s | %s / %s | %s |\n' \
      "$sys" "$what" "$sent" "$secs" "$achieved" "$(mib "$idle")" "$(mib "$peak")" "$(mib "$settled")" \
      "$tpeak" "$(metric "$e" switchboard_sip_server_transactions)" "$(metric "$s" switchboard_sip_server_transactions)" \
      "$(metric "$e" 'switchboard_sip_dropped_total{reason="banned"}')" "$(metric "$e" 'switchboard_sip_dropped_total{reason="rate"}')" \
      "$(metric "$e" 'switchboard_sip_bans_total{reason="flood"}')" "$(metric "$e" 'switchboard_sip_bans_total{reason="failures"}')" \
      "$(metric "$e" 'switchboard_sip_overload_refused_total{ceiling="transactions"}')"
  else
    printf '| %s | %s | %s in %s s (%s/s) | %s | %s | %s | — | — | — | — |\n' \
      "$sys" "$what" "$sent" "$secs" "$achieved" "$(mib "$idle")" "$(mib "$peak")" "$(mib "$settled")"
  fi
}

# Table 2: legitimate calls, with and without an INVITE flood.
calls_row() { # flood-rate (0: none)
  local frate=$1 tag=legit_$1 calls=$(( LEGIT_RATE * LEGIT_SECS ))
  start_sut switchboard
  start_sampler switchboard
  sipp -sf "$REF/uas_sdp.xml" -i 127.0.0.1 -p 5080 -mi 127.0.0.1 -mp 18000 -t u1 -aa -nostdin \
       -buff_size 4194304 -timeout 150 >/dev/null 2>&1 &
  local uas=$!; PIDS+=("$uas")
  sleep 0.5
  local fl=""
  rm -f "$OUT/flood_invite_$frate.csv" "$OUT/uac_$tag.csv"
  if [ "$frate" != 0 ]; then
    flood "flood_invite_$frate" flood_invite.xml 900123456789 127.0.0.67 "$frate" $(( frate * FLOOD_SECS )) &
    fl=$!; PIDS+=("$fl")
    sleep 1   # the flood is under way before the first call
  fi
  timeout $(( LEGIT_SECS + 120 )) sipp 127.0.0.1:5060 -sf "$REF/uac_sdp.xml" -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 16000 \
       -t u1 -aa -nostdin -s 1000 -buff_size 4194304 -r "$LEGIT_RATE" -rp 1000 -m "$calls" -d 1000 \
       -timeout $(( LEGIT_SECS + 90 ))s -timeout_error -trace_stat -stf "$OUT/uac_$tag.csv" >/dev/null 2>&1 || true
  [ -n "$fl" ] && { wait "$fl" 2>/dev/null || true; }
  metrics >"$OUT/metrics_$tag.txt"
  kill "$SAMPLER" "$uas" 2>/dev/null || true
  local peak tpeak; read -r peak tpeak <"$OUT/flood_peak"
  stop_sut switchboard
  PIDS=()
  local f="$OUT/uac_$tag.csv" m="$OUT/metrics_$tag.txt"
  # INVITE → 200 times from SIPp's repartition (its clock counts milliseconds).
  local fast mid slow
  fast=$(sipp_stat "$f" 'ResponseTimeRepartition1_<5')
  mid=$(( $(sipp_stat "$f" 'ResponseTimeRepartition1_<10') + $(sipp_stat "$f" 'ResponseTimeRepartition1_<20') + $(sipp_stat "$f" 'ResponseTimeRepartition1_<50') ))
  slow=$(( $(sipp_stat "$f" 'ResponseTimeRepartition1_<100') + $(sipp_stat "$f" 'ResponseTimeRepartition1_<200') + $(sipp_stat "$f" 'ResponseTimeRepartition1_<500') + $(sipp_stat "$f" 'ResponseTimeRepartition1_<1000') + $(sipp_stat "$f" 'ResponseTimeRepartition1_>=1000') ))
  local what sent
  if [ "$frate" = 0 ]; then what="none (baseline)"; sent="—"; else
    what="1 source × $frate INVITE/s, un-ACKed"; sent=$(sipp_stat "$OUT/flood_invite_$frate.csv" TotalCallCreated); fi
  printf '| %s | %s | %s | %s | %s | %s / %s / %s | %s | %s / %s | %s / %s | %s / %s | %s |\n' \
    "$what" "$(sipp_stat "$f" TotalCallCreated)" "$(sipp_stat "$f" 'SuccessfulCall(C)')" "$(sipp_stat "$f" 'FailedCall(C)')" \
    "$(metric "$m" switchboard_calls_total)" "$fast" "$mid" "$slow" "$sent" \
    "$(metric "$m" 'switchboard_sip_dropped_total{reason="banned"}')" "$(metric "$m" 'switchboard_sip_dropped_total{reason="rate"}')" \
    "$(metric "$m" 'switchboard_sip_bans_total{reason="flood"}')" "$(metric "$m" 'switchboard_sip_bans_total{reason="failures"}')" \
    "$(metric "$m" 'switchboard_sip_overload_refused_total{ceiling="transactions"}')" \
    "$(metric "$m" 'switchboard_sip_overload_refused_total{ceiling="pending_calls"}')" \
    "$(mib "$peak")"
}

echo "| system | OPTIONS flood | sent | idle PSS MiB | peak PSS MiB | PSS ${SETTLE} s after MiB | server transactions peak / end / ${SETTLE} s after | dropped banned / rate | bans flood / failures | 503 at the transactions ceiling |"
echo "|---|---|---|---|---|---|---|---|---|---|"
options_row switchboard 1 "$OPTIONS_RATE"
options_row switchboard "$SOURCES" "$SOURCE_RATE"
# A flood the per-source limit lets through: each source under its rate, every OPTIONS
# answered and its transaction held (Timer J) — what the transactions ceilings are for.
[ "$UNDER_RATE" != 0 ] && options_row switchboard "$SOURCES" "$UNDER_RATE"
if [ "$KAMAILIO" = yes ]; then
  options_row kamailio 1 "$OPTIONS_RATE"
  options_row kamailio "$SOURCES" "$SOURCE_RATE"
fi
echo
echo "| INVITE flood | legit calls | successful | failed | calls seen by the switch | set up (INVITE → 200) in < 5 / 5–50 / ≥ 50 ms | flood INVITEs sent | dropped banned / rate | bans flood / failures | 503 transactions / pending calls | peak PSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
calls_row 0
calls_row "$INVITE_RATE"
