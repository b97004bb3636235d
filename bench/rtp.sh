#!/usr/bin/env bash
# RTP relay and transcoding benchmark: Switchboard against rtpengine (Debian package,
# userspace forwarding: --table=-1), the same load generator (bench/rtp-load) for both, in
# the same run. Usage: bench/rtp.sh [CALLS...]   (default 100 500 1000; TRANSCODE="100 200"
# for the Opus<->PCMU runs, Switchboard only), SECS=10 by default.
# Needs rtpengine (apt-get install rtpengine); builds switchboard --release (same target
# directory as tests/run.sh) and the generator. Prints one line per run; docs/BENCHMARKS.md has the figures.
# CPUS=0 (or 0,1): pin both relays to these cores (taskset); the generator stays unpinned.
# BIN=/path/to/switchboard: another build (A/B runs; nothing is built then).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
CALLS=("${@:-100 500 1000}")
read -r -a CALLS <<< "${CALLS[*]}"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/switchboard-target}
if [ -n "${BIN:-}" ]; then SB=$BIN; else
  cargo build --release -q --bin switchboard
  SB="$CARGO_TARGET_DIR/release/switchboard"
fi
(cd bench/rtp-load && CARGO_TARGET_DIR=target cargo build --release -q)
LOAD=bench/rtp-load/target/release/rtp-load
PIN=(); [ -n "${CPUS:-}" ] && PIN=(taskset -c "$CPUS")
ulimit -n 65536 2>/dev/null || echo "note: open files limit $(ulimit -n): each anchored call uses 4 sockets" >&2

work=$(mktemp -d)
mkdir -p "$work/conf/dialplan"
cat > "$work/conf/switchboard.toml" <<CONF
[sip]
udp = "127.0.0.1:25060"
[media]
ip = "127.0.0.1"
rtp_port_min = 30000
rtp_port_max = 45999
codecs = ["PCMU", "opus", "telephone-event"]
rtp_timeout = 0
sounds = "$PWD/sounds/en"
[http]
listen = "127.0.0.1:28080"
[log]
level = "warn"
[gateway.cc]
address = "127.0.0.1:25080"
CONF
cat > "$work/conf/dialplan/bench.toml" <<'DP'
[[extension]]
name = "cc"
actions = [ { bridge = { targets = ["gateway/cc/$1"] } } ]
when.destination = '^(\d+)$'
DP

"${PIN[@]}" "$SB" --conf "$work/conf" 2>"$work/sb.log" &
SB_PID=$!
"${PIN[@]}" rtpengine -f -E -L 3 -i 127.0.0.1 -n 127.0.0.1:22222 -t -1 -m 46000 -M 61999 \
  --num-threads 2 2>"$work/rtpengine.log" &
RE_PID=$!
trap 'kill $SB_PID $RE_PID 2>/dev/null; wait 2>/dev/null; tail -n 12 "$work/sb.log" "$work/rtpengine.log" >&2; rm -rf "$work"' EXIT
sleep 1

for n in "${CALLS[@]}"; do
  $LOAD --target loopback --control 127.0.0.1:1 --calls "$n" --secs "$SECS" --pid $$
  sleep 1
  $LOAD --target switchboard --control 127.0.0.1:25060 --gw-port 25080 --calls "$n" --secs "$SECS" --pid $SB_PID
  sleep 1
  $LOAD --target rtpengine --control 127.0.0.1:22222 --calls "$n" --secs "$SECS" --pid $RE_PID
  sleep 1
done
# Opus <-> PCMU: each transcoded call costs a few ms of CPU per second; 2 cores hold ~300.
read -r -a TRANSCODE <<< "${TRANSCODE:-100 200}"
for n in "${TRANSCODE[@]}"; do
  $LOAD --target switchboard --control 127.0.0.1:25060 --gw-port 25080 --calls "$n" --secs "$SECS" --pid $SB_PID --transcode
  sleep 1
done
