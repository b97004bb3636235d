#!/bin/bash
# mkbaresip.sh DIR SIP_PORT CTRL_PORT RTP_RANGE USER CODECS SOURCE_WAV
# Writes a headless baresip 1.0.0 config dir: no sound card, WAV source (aufile),
# recording via the sndfile filter (DIR/rec/dump-*-dec.wav = what it received).
set -e
dir=$1 sip=$2 ctrl=$3 rtp=$4 user=$5 codecs=$6 wav=$7
mkdir -p "$dir/rec"
cat > "$dir/config" <<CFG
poll_method		epoll
sip_listen		127.0.0.1:$sip
call_local_timeout	30
call_max_calls		4
audio_path		/usr/share/baresip
audio_source		aufile,$wav
audio_buffer		20-160
ausrc_format		s16
auplay_format		s16
auenc_format		s16
audec_format		s16
rtp_tos			0
rtp_ports		$rtp
rtcp_mux		no
jitter_buffer_delay	0-0
rtp_stats		yes
rtp_timeout		0
net_interface		127.0.0.1
dns_server		127.0.0.1:53
module_path		/usr/lib/baresip/modules
module			g711.so
module			opus.so
module			aufile.so
module			sndfile.so
module_tmp		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:$ctrl
snd_path		$dir/rec
opus_bitrate		32000
opus_stereo		no
opus_sprop_stereo	no
statmode_default	off
ringback_disabled	yes
CFG
cat > "$dir/accounts" <<ACC
<sip:$user@127.0.0.1>;regint=0;answermode=auto;audio_codecs=$codecs;ptime=20
ACC
