#!/bin/bash
# call.sh RUN CALLER_CODECS CALLEE_CODECS [TALK_SECONDS] [DIGITS]
#   e.g. call.sh pcmu pcmu pcmu 6 123#       call.sh opus opus pcmu 6 123#
# One bounded call: switch + callee baresip (auto-answer, 600 Hz) + caller baresip
# (dials 2000 via the switch, 1000 Hz), tshark capture, DTMF and hang-up over ctrl_tcp.
# Output in /tmp/baresip-lab/runs/RUN/. Exits non-zero when a step times out.
set -u
LAB=/tmp/baresip-lab
RUN=$1 CALLER_CODECS=$2 CALLEE_CODECS=$3 TALK=${4:-6} DIGITS=${5:-}
R=$LAB/runs/$RUN
rm -rf "$R"; mkdir -p "$R"
wav() { case $1 in opus*) echo "$LAB/audio/tone-$2-48k.wav";; *) echo "$LAB/audio/tone-$2-8k.wav";; esac; }
$LAB/bin/mkbaresip.sh "$R/callee" 25090 25190 27000-27099 2000   "$CALLEE_CODECS" "$(wav "$CALLEE_CODECS" 600)"
$LAB/bin/mkbaresip.sh "$R/caller" 25092 25192 27100-27199 caller "$CALLER_CODECS" "$(wav "$CALLER_CODECS" 1000)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
now() { date +%s.%N; }
waitfor() { # waitfor FILE REGEX SECONDS
  local end=$(( $(date +%s) + $3 ))
  until grep -qE "$2" "$1" 2>/dev/null; do
    [ "$(date +%s)" -ge $end ] && { echo "TIMEOUT waiting for /$2/ in $1" >&2; return 1; }
    sleep 0.05
  done
}
MAX=$((TALK + 30))
timeout $MAX tshark -i lo -f "udp portrange 26000-26999 or udp port 25060 or udp port 25090 or udp port 25092" \
  -w "$R/cap.pcap" > "$R/tshark.log" 2>&1 & PIDS+=($!); TSHARK=$!
( cd $LAB && exec timeout $MAX ./switchboard --conf conf ) > "$R/switch.log" 2>&1 & PIDS+=($!); SWITCH=$!
timeout $MAX baresip -4 -f "$R/callee" < /dev/null > "$R/callee.log" 2>&1 & PIDS+=($!); CALLEE=$!
waitfor "$R/tshark.log" "Capturing on" 10 || exit 1
waitfor "$R/switch.log" "SIP listening" 10 || exit 1
waitfor "$R/callee.log" "baresip is ready" 10 || exit 1
T0=$(now)
timeout $MAX baresip -4 -f "$R/caller" -e "/dial sip:2000@127.0.0.1:25060" < /dev/null > "$R/caller.log" 2>&1 & PIDS+=($!); CALLER=$!
waitfor "$R/caller.log" "Call established" 10 || exit 1
T1=$(now)
waitfor "$R/callee.log" "incoming rtp for 'audio' established" 5 || exit 1
waitfor "$R/caller.log" "incoming rtp for 'audio' established" 5 || exit 1
T2=$(now)
# env: CALLEE_DIGITS (digits the callee sends back), HANGUP=caller|callee (who sends BYE)
: > "$R/ctl.log"
sleep $((TALK / 2))
[ -n "$DIGITS" ] && python3 $LAB/bin/bctl.py 25192 sndcode "$DIGITS" --wait 0.2 >> "$R/ctl.log"
[ -n "${CALLEE_DIGITS:-}" ] && { sleep 1.5; python3 $LAB/bin/bctl.py 25190 sndcode "$CALLEE_DIGITS" --wait 0.2 >> "$R/ctl.log"; }
sleep $((TALK - TALK / 2))
if [ "${HANGUP:-caller}" = callee ]; then CTL=25190; else CTL=25192; fi
python3 $LAB/bin/bctl.py $CTL hangup --wait 0.5 >> "$R/ctl.log"
waitfor "$R/callee.log" "terminated" 5 || exit 1
waitfor "$R/caller.log" "terminated" 5 || exit 1
T3=$(now)
python3 $LAB/bin/bctl.py 25192 quit --wait 0.3 >> "$R/ctl.log" 2>&1
python3 $LAB/bin/bctl.py 25190 quit --wait 0.3 >> "$R/ctl.log" 2>&1
sleep 0.5
kill $SWITCH $TSHARK 2>/dev/null; wait $TSHARK 2>/dev/null
awk -v a=$T0 -v b=$T1 -v c=$T2 -v d=$T3 'BEGIN{printf "dial->established %.3f s; ->rtp both ways %.3f s; whole call %.3f s\n", b-a, c-a, d-a}' | tee "$R/timing.txt"
