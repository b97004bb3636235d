#!/bin/bash
# lincall.sh RUN [TALK_SECONDS] [DIGITS]   env: LIN_CODECS=any|opus|pcmu CALLEE_CODECS CALLER_WAV CALLEE_WAV
# linphonec (caller, 1000 Hz, files instead of a
# sound card) -> switch -> baresip callee (auto-answer, 600 Hz, PCMU). Commands go to
# linphonec's stdin through a FIFO. Output in /tmp/baresip-lab/runs/RUN/.
set -u
LAB=/tmp/baresip-lab
RUN=$1 TALK=${2:-6} DIGITS=${3:-}
R=$LAB/runs/$RUN
rm -rf "$R"; mkdir -p "$R"
$LAB/bin/mkbaresip.sh "$R/callee" 25090 25190 27000-27099 2000 "${CALLEE_CODECS:-pcmu}" "${CALLEE_WAV:-$LAB/audio/tone-600-8k.wav}"
$LAB/bin/mklinphone.sh "$R/lin" 25094 27200-27299 lincaller "${LIN_CODECS:-any}"
PIDS=()
cleanup() { exec 3>&- 2>/dev/null; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
waitfor() { local end=$(( $(date +%s) + $3 ))
  until grep -qE "$2" "$1" 2>/dev/null; do [ "$(date +%s)" -ge $end ] && { echo "TIMEOUT /$2/ in $1" >&2; return 1; }; sleep 0.05; done; }
MAX=$((TALK + 30))
timeout $MAX tshark -i lo -f "udp portrange 26000-26999 or udp port 25060 or udp port 25090 or udp port 25094" \
  -w "$R/cap.pcap" > "$R/tshark.log" 2>&1 & PIDS+=($!); TSHARK=$!
( cd $LAB && exec timeout $MAX ./switchboard --conf conf ) > "$R/switch.log" 2>&1 & PIDS+=($!); SWITCH=$!
timeout $MAX baresip -4 -f "$R/callee" < /dev/null > "$R/callee.log" 2>&1 & PIDS+=($!)
waitfor "$R/tshark.log" "Capturing on" 10 && waitfor "$R/switch.log" "SIP listening" 10 && waitfor "$R/callee.log" "baresip is ready" 10 || exit 1
mkfifo "$R/lin.in"
HOME=$R/lin timeout $MAX linphonec -c $R/lin/linphonerc -d 4 -l "$R/linphonec-debug.log" \
  < "$R/lin.in" > "$R/linphonec.log" 2>&1 & PIDS+=($!); LIN=$!
exec 3>"$R/lin.in"
say() { echo "$*" >&3; }
waitfor "$R/linphonec.log" "linphonec>" 10 || exit 1
say "soundcard use files"
say "play ${CALLER_WAV:-$LAB/audio/tone-1000-8k.wav}"
say "record $R/lin-rec.wav"
say "call sip:2000@127.0.0.1:25060"
waitfor "$R/linphonec.log" "Call [0-9]+ with .* connected" 10 || exit 1
sleep $((TALK / 2))
[ -n "$DIGITS" ] && say "$DIGITS"          # a line of digits = DTMF, 1 s apart
sleep $((TALK - TALK / 2))
say "terminate"
waitfor "$R/callee.log" "terminated" 10 || exit 1
say "quit"
sleep 1
kill $SWITCH $TSHARK 2>/dev/null; wait $TSHARK 2>/dev/null
echo done
