#!/bin/bash
# mklinphone.sh DIR SIP_PORT RTP_RANGE USER [any|opus|pcmu]
# A headless linphonec 5.1 config dir: DIR/linphonerc (+ DIR/.local for its databases;
# run linphonec with HOME=DIR). linphonec rewrites linphonerc on exit: regenerate per run.
set -e
dir=$1 sip=$2 rtp=$3 user=$4 codecs=${5:-any}
mkdir -p "$dir/.local/share/linphone"
cat > "$dir/linphonerc" <<CFG
[sip]
use_ipv6=0
ipv6_migration_done=1
sip_port=$sip
sip_tcp_port=0
sip_tls_port=0
bind_address=127.0.0.1
contact=sip:$user@127.0.0.1:$sip
guess_hostname=0
default_proxy=-1
use_info=0
use_rfc2833=1
media_encryption=none
inc_timeout=30
[rtp]
bind_address=127.0.0.1
audio_rtp_port=$rtp
audio_jitt_comp=60
[sound]
echocancellation=0
[video]
enabled=0
capture=0
display=0
automatically_initiate=0
automatically_accept=0
[storage]
backend=sqlite3
uri=$dir/linphone.db
[misc]
uuid=0
CFG
codec() { printf '[audio_codec_%s]\nmime=%s\nrate=%s\nchannels=%s\nenabled=%s\n' "$@" >> "$dir/linphonerc"; }
case $codecs in
  opus) codec 0 opus 48000 2 1; codec 1 PCMU 8000 1 0; codec 2 PCMA 8000 1 0
        codec 3 speex 16000 1 0; codec 4 speex 8000 1 0; codec 5 G729 8000 1 0; codec 6 SILK 16000 1 0;;
  pcmu) codec 0 PCMU 8000 1 1; codec 1 opus 48000 2 0; codec 2 PCMA 8000 1 0
        codec 3 speex 16000 1 0; codec 4 speex 8000 1 0; codec 5 G729 8000 1 0; codec 6 SILK 16000 1 0;;
esac
