//! The browser's WebRTC peer (str0m, sans-IO): ICE-lite with one host candidate, DTLS
//! passive, SRTP, RTCP-mux, Opus and telephone-event. str0m runs in RTP mode: packets pass
//! through untouched (payload, timestamps, RFC 4733 events) between SRTP on the browser's
//! side and plain RTP on the inner side, where the core's media session anchors and
//! transcodes them like any other leg.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

/// Why the peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The offer is not SDP str0m understands.
    #[error("the browser's offer is not valid SDP: {0}")]
    BadSdp(String),
    /// The offer has no audio we can take.
    #[error("the browser's offer has no Opus audio")]
    NoAudio,
    /// str0m refused.
    #[error("WebRTC: {0}")]
    Rtc(String),
}

/// What the peer hands back.
#[derive(Debug)]
pub enum PeerOutput {
    /// A datagram for the browser, from our candidate's socket.
    Transmit(SocketAddr, Vec<u8>),
    /// A plain RTP packet from the browser, for the core's media session.
    Rtp(Vec<u8>),
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// The browser closed the connection in order (DTLS close_notify: `pc.close()`).
    Closed,
    /// The browser is unreachable (ICE lost) or the peer failed.
    Disconnected,
}

/// The payload types the browser and we agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioPts {
    /// Opus.
    pub opus: u8,
    /// telephone-event, when the browser offered it: its payload type and clock (48000 as
    /// Chromium offers it; 8000 as Firefox does).
    pub te: Option<(u8, u32)>,
}

/// The switch's DTLS certificate, made once at start: its fingerprint goes in every answer
/// (each session still has keys of its own: ECDHE). Making one per call costs a key
/// generation per click.
#[derive(Clone)]
pub struct Certificate(str0m::crypto::dtls::DtlsCert);

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificate")
    }
}

impl Certificate {
    /// A new self-signed certificate (None: the crypto backend could not make one).
    pub fn generate() -> Option<Certificate> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .map(Certificate)
    }
}

/// One browser's peer connection.
#[derive(Debug)]
pub struct BrowserPeer {
    rtc: Rtc,
    mid: Mid,
    pts: AudioPts,
    local: SocketAddr,
    out: VecDeque<PeerOutput>,
    next_timeout: Option<Instant>,
    /// Outgoing sequence numbers, extended past 16 bits (str0m wants the rollover count).
    tx_seq: Option<(u16, u64)>,
    connected: bool,
}

impl BrowserPeer {
    /// Answers the browser's offer; `candidate` is our host candidate (the socket we read
    /// and write the browser's datagrams on, at the address the browser can reach).
    pub fn accept(
        now: Instant,
        offer: &str,
        candidate: SocketAddr,
        cert: Option<&Certificate>,
    ) -> Result<(BrowserPeer, String), PeerError> {
        let offer_text = offer;
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| PeerError::BadSdp(e.to_string()))?;
        let mut config = RtcConfig::new()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false);
        if let Some(c) = cert {
            config = config.set_dtls_cert(c.0.clone());
        }
        // One telephone-event only (the core's leg has one): at Opus's clock when the browser
        // offers it (Chromium), else at 8 kHz (all Firefox offers). Agreeing both would let
        // the browser send at the clock the core does not listen for.
        let (te_pt, te_clock) = if offer_text
            .to_ascii_lowercase()
            .contains("telephone-event/48000")
        {
            (110, Frequency::FORTY_EIGHT_KHZ)
        } else {
            (126, Frequency::EIGHT_KHZ)
        };
        config.codec_config().add_config(
            Pt::new_with_value(te_pt),
            None,
            Codec::Tele,
            te_clock,
            None,
            FormatParams::parse_line("0-16"),
        );
        let mut rtc = config.build(now);
        let cand = Candidate::host(candidate, "udp").map_err(|e| PeerError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(cand);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PeerError::Rtc(e.to_string()))?;
        let answer = answer.to_sdp_string();
        // The audio m-line and its agreed payload types.
        let mut found = None;
        for line in answer.lines() {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                let mid = Mid::from(mid.trim());
                if rtc.media(mid).is_some_and(|m| m.kind() == MediaKind::Audio) {
                    found = Some(mid);
                    break;
                }
            }
        }
        let mid = found.ok_or(PeerError::NoAudio)?;
        let remote: Vec<Pt> = rtc
            .media(mid)
            .map(|m| m.remote_pts().to_vec())
            .unwrap_or_default();
        let mut opus = None;
        let (mut te48, mut te8) = (None, None);
        for p in rtc.codec_config().params() {
            if !remote.contains(&p.pt()) {
                continue;
            }
            let spec = p.spec();
            match spec.codec {
                Codec::Opus if opus.is_none() => opus = Some(*p.pt()),
                Codec::Tele if spec.clock_rate == Frequency::FORTY_EIGHT_KHZ => {
                    te48 = te48.or(Some((*p.pt(), 48000)))
                }
                Codec::Tele if spec.clock_rate == Frequency::EIGHT_KHZ => {
                    te8 = te8.or(Some((*p.pt(), 8000)))
                }
                _ => {}
            }
        }
        // The codec's own clock when the browser offers it.
        let te = te48.or(te8);
        let opus = opus.ok_or(PeerError::NoAudio)?;
        let mut peer = BrowserPeer {
            rtc,
            mid,
            pts: AudioPts { opus, te },
            local: candidate,
            out: VecDeque::new(),
            next_timeout: None,
            tx_seq: None,
            connected: false,
        };
        peer.drain(Some(now));
        Ok((peer, answer))
    }

    /// The agreed payload types.
    pub fn pts(&self) -> AudioPts {
        self.pts
    }

    /// The SDP the core gets for this leg: plain RTP at `inner` (the socket that talks to
    /// the core's media session), Opus and telephone-event with the browser's numbers.
    pub fn inner_sdp(&self, inner: SocketAddr, version: u64) -> String {
        let AudioPts { opus, te } = self.pts;
        let ip = inner.ip();
        let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let mut fmts = opus.to_string();
        if let Some((te, _)) = te {
            fmts.push_str(&format!(" {te}"));
        }
        let mut s = format!(
            "v=0\r\no=switchboard-web {version} {version} IN {fam} {ip}\r\ns=web\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {fmts}\r\na=rtpmap:{opus} opus/48000/2\r\n\
             a=fmtp:{opus} minptime=10;useinbandfec=1\r\n",
            port = inner.port(),
        );
        if let Some((te, clock)) = te {
            s.push_str(&format!(
                "a=rtpmap:{te} telephone-event/{clock}\r\na=fmtp:{te} 0-16\r\n"
            ));
        }
        s.push_str("a=ptime:20\r\na=sendrecv\r\n");
        s
    }

    /// A datagram from the browser arrived on our candidate's socket.
    pub fn handle_receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(r) = Receive::new(Protocol::Udp, from, self.local, data) else {
            return;
        };
        let input = Input::Receive(now, r);
        if !self.rtc.accepts(&input) {
            return;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            tracing::debug!(error = %e, "WebRTC input refused");
        }
        self.drain(Some(now));
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_timeout.is_some_and(|t| t <= now) {
            if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(error = %e, "WebRTC timeout");
            }
            self.drain(Some(now));
        }
    }

    /// A plain RTP packet from the core's media session, for the browser (SRTP).
    pub fn send_rtp(&mut self, now: Instant, packet: &[u8]) {
        if !self.connected || packet.len() < 12 || packet[0] >> 6 != 2 {
            return;
        }
        let cc = usize::from(packet[0] & 0x0f);
        let mut start = 12 + 4 * cc;
        if packet[0] & 0x10 != 0 {
            let Some(ext) = packet.get(start + 2..start + 4) else {
                return;
            };
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        let Some(payload) = packet.get(start..) else {
            return;
        };
        let marker = packet[1] & 0x80 != 0;
        let pt = packet[1] & 0x7f;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let ext = match self.tx_seq {
            None => u64::from(seq),
            Some((last, ext)) => {
                let delta = seq.wrapping_sub(last) as i16;
                ext.wrapping_add_signed(i64::from(delta))
            }
        };
        self.tx_seq = Some((seq, ext));
        let mid = self.mid;
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        stream.write_rtp(
            RtpWrite::new(
                Pt::new_with_value(pt),
                ext.into(),
                ts,
                now,
                payload.to_vec(),
            )
            .marker(marker),
        );
        self.drain(Some(now));
    }

    /// Hangs up the peer (DTLS close).
    pub fn close(&mut self) {
        self.rtc.disconnect();
        self.drain(None);
    }

    /// Next output.
    pub fn poll(&mut self) -> Option<PeerOutput> {
        self.out.pop_front()
    }

    /// When [`BrowserPeer::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    /// Takes what str0m has to say. A timeout already due at `now` is handled here, a few
    /// rounds at most: a packet written goes through str0m's send stream and pacer on
    /// timeouts that are due at once, and it leaves now rather than on later wake-ups.
    fn drain(&mut self, now: Option<Instant>) {
        let mut due_rounds = 0;
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    if let Some(now) = now
                        && t <= now
                        && due_rounds < 4
                    {
                        due_rounds += 1;
                        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                            tracing::debug!(error = %e, "WebRTC timeout");
                        }
                        continue;
                    }
                    self.next_timeout = Some(t);
                    break;
                }
                Ok(Output::Transmit(t)) => self
                    .out
                    .push_back(PeerOutput::Transmit(t.destination, t.contents.to_vec())),
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        self.connected = true;
                        self.out.push_back(PeerOutput::Connected);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.out.push_back(PeerOutput::Disconnected);
                    }
                    Event::Closed => self.out.push_back(PeerOutput::Closed),
                    Event::RtpPacket(p) => {
                        let h = &p.header;
                        let mut b = Vec::with_capacity(12 + p.payload.len());
                        b.push(0x80);
                        b.push(u8::from(h.marker) << 7 | (*h.payload_type & 0x7f));
                        b.extend_from_slice(&h.sequence_number.to_be_bytes());
                        b.extend_from_slice(&h.timestamp.to_be_bytes());
                        b.extend_from_slice(&(*h.ssrc).to_be_bytes());
                        b.extend_from_slice(&p.payload);
                        self.out.push_back(PeerOutput::Rtp(b));
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(error = %e, "WebRTC peer failed");
                    self.next_timeout = None;
                    self.out.push_back(PeerOutput::Disconnected);
                    break;
                }
            }
        }
    }
}
