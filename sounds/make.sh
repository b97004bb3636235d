#!/bin/sh
# Rebuilds the shipped prompts from their text (see README.md). Needs espeak-ng and sox:
#   apt-get install -y espeak-ng sox
set -eu
cd "$(dirname "$0")/en"
say() { # name, text
    espeak-ng -v en-us -s 150 -w "/tmp/sb-$1.raw.wav" "$2"
    # 16 kHz mono 16-bit; cut the band below 100 Hz; peaks at -3 dBFS; 200 ms of lead-in.
    sox "/tmp/sb-$1.raw.wav" -r 16000 -c 1 -b 16 "$1.wav" highpass 100 norm -3 pad 0.2 0.1
    rm -f "/tmp/sb-$1.raw.wav"
}
say connecting "Please hold while we connect you."
say agents-busy "All our agents are busy. Please stay on the line, or call again later."
say closed "The call center is closed. Please call again during business hours."
say enter-extension "Please enter the number of the person you are calling, followed by the pound key."
say demo-connected "You are connected to the demo call center. Press a key and you will hear it back as a tone."
say goodbye "Thank you for calling. Goodbye."
