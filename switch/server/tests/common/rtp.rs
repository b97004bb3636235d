//! The test's own RTP endpoint: the SIPp scenarios point their SDP at it, so a test can send
//! exactly the audio or digits it wants and check what arrives, with the media crate's codecs
//! and Goertzel detector.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use switchboard_media::dtmf::{Event, EventSender};
use switchboard_media::{CodecKind, rtp};

/// One received packet.
#[derive(Debug, Clone)]
pub struct Packet {
    pub pt: u8,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub payload: Vec<u8>,
}

pub struct RtpPeer {
    sock: UdpSocket,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

impl RtpPeer {
    pub fn bind(port: u16) -> RtpPeer {
        RtpPeer::bind_on("127.0.0.1", port)
    }

    /// A peer on another loopback address (a stranger to the call).
    pub fn bind_on(ip: &str, port: u16) -> RtpPeer {
        let sock = UdpSocket::bind((ip, port)).expect("bind test RTP port");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        RtpPeer {
            sock,
            ssrc: 0x5107_0000 + u32::from(port),
            seq: 1000,
            ts: 160_000,
        }
    }

    fn send(&mut self, to: SocketAddr, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        let mut b = Vec::new();
        rtp::write(&mut b, pt, marker, self.seq, ts, self.ssrc, payload);
        self.seq = self.seq.wrapping_add(1);
        self.sock.send_to(&b, to).expect("send RTP");
    }

    /// Sends `pcm` (at the codec's rate) encoded with `codec` in 20 ms packets, paced in real
    /// time, while collecting what arrives. Returns the packets received meanwhile.
    pub fn stream(&mut self, to: SocketAddr, codec: CodecKind, pcm: &[i16]) -> Vec<Packet> {
        self.stream_lossy(to, codec, pcm, usize::MAX)
    }

    /// [`RtpPeer::stream`], leaving out every `drop_every`-th packet (sequence numbers still
    /// advance: the far end sees the loss).
    pub fn stream_lossy(
        &mut self,
        to: SocketAddr,
        codec: CodecKind,
        pcm: &[i16],
        drop_every: usize,
    ) -> Vec<Packet> {
        let pt = pt_of(codec);
        let (frame, step) = ((codec.rate() / 50) as usize, codec.clock() / 50);
        let mut enc = codec.encoder();
        let mut got = Vec::new();
        let start = Instant::now();
        let mut payload = Vec::new();
        for (i, chunk) in pcm.chunks(frame).enumerate() {
            enc.encode(chunk, &mut payload);
            let ts = self.ts;
            if (i + 1) % drop_every == 0 {
                self.seq = self.seq.wrapping_add(1);
            } else {
                self.send(to, pt, i == 0, ts, &payload);
            }
            self.ts = self.ts.wrapping_add(step);
            let due = start + Duration::from_millis(20 * (i as u64 + 1));
            self.drain_until(due, &mut got);
        }
        got
    }

    /// Sends one RFC 4733 digit (start, updates, three ends) with payload type `pt`, between
    /// audio frames of silence so the stream stays alive. Returns what arrived meanwhile.
    pub fn digit(
        &mut self,
        to: SocketAddr,
        audio: CodecKind,
        pt: u8,
        digit: char,
        ms: u32,
    ) -> Vec<Packet> {
        let mut sender = EventSender::new(digit, ms, 8000, 20).expect("digit");
        let ts = self.ts;
        let mut got = Vec::new();
        let start = Instant::now();
        let mut i = 0;
        while let Some((p, marker)) = sender.next_packet() {
            self.send(to, pt, marker, ts, &p);
            self.ts = self.ts.wrapping_add(160);
            i += 1;
            self.drain_until(start + Duration::from_millis(20 * i), &mut got);
        }
        got.extend(self.stream(to, audio, &vec![0; audio.rate() as usize / 5]));
        got
    }

    fn drain_until(&self, until: Instant, got: &mut Vec<Packet>) {
        let mut buf = [0u8; 2048];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            if let Ok((n, _)) = self.sock.recv_from(&mut buf)
                && let Some(p) = parse(&buf[..n])
            {
                got.push(p);
            }
        }
    }

    /// Collects packets for `d`.
    pub fn listen(&self, d: Duration) -> Vec<Packet> {
        let mut got = Vec::new();
        self.drain_until(Instant::now() + d, &mut got);
        got
    }
}

fn parse(b: &[u8]) -> Option<Packet> {
    let r = rtp::RtpReader::new(b).ok()?;
    Some(Packet {
        pt: r.payload_type(),
        ssrc: r.ssrc(),
        seq: u16::from(r.sequence_number()),
        ts: r.timestamp(),
        payload: r.payload().to_vec(),
    })
}

/// The payload type the tests use for a codec (its static one; 111 for Opus, as Chromium).
pub fn pt_of(codec: CodecKind) -> u8 {
    codec.static_pt().unwrap_or(111)
}

/// Decodes the packets of `codec`'s payload type, in arrival order.
pub fn decode(packets: &[Packet], codec: CodecKind) -> Vec<i16> {
    let pt = pt_of(codec);
    let mut dec = codec.decoder();
    let mut out = Vec::new();
    for p in packets.iter().filter(|p| p.pt == pt) {
        dec.decode(&p.payload, &mut out);
    }
    out
}

/// telephone-event payloads with payload type `pt`.
pub fn events(packets: &[Packet], pt: u8) -> Vec<Event> {
    packets
        .iter()
        .filter(|p| p.pt == pt)
        .filter_map(|p| Event::parse(&p.payload))
        .collect()
}

/// Share of the signal's power at `freq` (0..1), for 8 kHz audio.
pub fn share_at(pcm: &[i16], freq: f64) -> f64 {
    share_at_rate(pcm, freq, 8000)
}

/// Share of the signal's power at `freq` (0..1).
pub fn share_at_rate(pcm: &[i16], freq: f64, rate: u32) -> f64 {
    let power = pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64;
    if power < 1.0 {
        return 0.0;
    }
    switchboard_media::dtmf::goertzel_power(pcm, freq, f64::from(rate)) / power
}

pub fn sine(freq: f64, n: usize, amp: f64) -> Vec<i16> {
    sine_at(freq, 8000, n, amp)
}

pub fn sine_at(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
    (0..n)
        .map(|i| {
            (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()) as i16
        })
        .collect()
}

/// Digits an in-band detector hears in `pcm` (8 kHz).
pub fn inband_digits(pcm: &[i16]) -> String {
    let mut d = switchboard_media::dtmf::ToneDetector::new();
    d.feed(pcm);
    d.feed(&[0; 800]);
    std::iter::from_fn(|| d.poll())
        .filter_map(|e| match e {
            switchboard_media::dtmf::ToneEvent::Start(c) => Some(c),
            _ => None,
        })
        .collect()
}
