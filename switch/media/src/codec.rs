//! Audio codecs behind one pair of traits. G.711 is built in; Opus (feature `opus`, on by
//! default) and G.729 (feature `g729`, off: see the README for its licence) come from crates.
//!
//! Opus is decoded and encoded at 16 kHz (wideband) by default, and at 8 kHz when the other
//! leg is narrowband (G.711, G.729): the audio cannot be wider than its source, libopus
//! resamples for free, and the encoder's work halves again. The RTP clock stays 48 kHz as
//! RFC 7587 requires.

use crate::g711;

/// A codec the media engine can decode and encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus (RFC 7587), mono, FEC on.
    Opus,
    /// G.729 Annex A (with Annex B silence frames understood).
    G729,
    /// A codec we can only forward (both legs use it): identified by its name and clock.
    Opaque {
        /// Hash of the upper-case encoding name.
        id: u32,
        /// RTP clock rate.
        clock: u32,
    },
}

impl CodecKind {
    /// The codec of an rtpmap encoding name and clock rate, if we can transcode it.
    pub fn from_name(name: &str, clock: u32) -> Option<CodecKind> {
        match (name.to_ascii_uppercase().as_str(), clock) {
            ("PCMU", 8000) => Some(CodecKind::Pcmu),
            ("PCMA", 8000) => Some(CodecKind::Pcma),
            #[cfg(feature = "opus")]
            ("OPUS", 48000) => Some(CodecKind::Opus),
            #[cfg(feature = "g729")]
            ("G729", 8000) => Some(CodecKind::G729),
            _ => None,
        }
    }

    /// The codec of a format: one we transcode, or an opaque one we can only forward.
    pub fn of(name: &str, clock: u32) -> CodecKind {
        CodecKind::from_name(name, clock).unwrap_or_else(|| {
            // FNV-1a of the upper-case name.
            let id = name.bytes().fold(0x811C_9DC5u32, |h, b| {
                (h ^ u32::from(b.to_ascii_uppercase())).wrapping_mul(0x0100_0193)
            });
            CodecKind::Opaque { id, clock }
        })
    }

    /// We can decode and encode it.
    pub fn transcodable(self) -> bool {
        !matches!(self, CodecKind::Opaque { .. })
    }

    /// rtpmap encoding name (`?` for an opaque codec).
    pub fn name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::Opus => "opus",
            CodecKind::G729 => "G729",
            CodecKind::Opaque { .. } => "?",
        }
    }

    /// rtpmap channels (`opus/48000/2`).
    pub fn channels(self) -> Option<u16> {
        (self == CodecKind::Opus).then_some(2)
    }

    /// The fmtp we offer with it.
    pub fn fmtp(self) -> Option<&'static str> {
        match self {
            CodecKind::Opus => Some("minptime=10;useinbandfec=1"),
            CodecKind::G729 => Some("annexb=no"),
            _ => None,
        }
    }

    /// RTP clock rate.
    pub fn clock(self) -> u32 {
        match self {
            CodecKind::Opaque { clock, .. } => clock,
            CodecKind::Opus => 48000,
            _ => 8000,
        }
    }

    /// Sample rate of the PCM the codec takes and gives.
    pub fn rate(self) -> u32 {
        match self {
            CodecKind::Opus => 16000,
            _ => 8000,
        }
    }

    /// Static payload type, if any (RFC 3551).
    pub fn static_pt(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0),
            CodecKind::Pcma => Some(8),
            CodecKind::G729 => Some(18),
            CodecKind::Opus | CodecKind::Opaque { .. } => None,
        }
    }

    /// Bytes of silence in this codec's payload, for muting a forwarded packet in place.
    pub fn silence_byte(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0xFF),
            CodecKind::Pcma => Some(0xD5),
            _ => None,
        }
    }

    /// A decoder (an opaque codec decodes to silence).
    pub fn decoder(self) -> Box<dyn Decoder> {
        self.decoder_at(self.rate())
    }

    /// A decoder giving PCM at `rate` (Opus decodes at 8, 12, 16, 24 or 48 kHz; the other
    /// codecs have one rate and ignore it).
    pub fn decoder_at(self, rate: u32) -> Box<dyn Decoder> {
        let _ = rate;
        match self {
            #[cfg(feature = "opus")]
            CodecKind::Opus => {
                if let Ok(d) = opus::Decoder::new(rate, opus::Channels::Mono) {
                    return Box::new(OpusDecoder {
                        inner: d,
                        buf: vec![0; rate as usize * 120 / 1000],
                        frame: rate as usize / 50,
                    });
                }
            }
            #[cfg(feature = "g729")]
            CodecKind::G729 => return Box::new(G729Decoder(g729_sys::Decoder::new())),
            _ => {}
        }
        if !matches!(self, CodecKind::Pcmu | CodecKind::Pcma) {
            return Box::new(Silence);
        }
        Box::new(G711Decoder {
            alaw: self == CodecKind::Pcma,
            last: Vec::new(),
            concealed: 0,
        })
    }

    /// An encoder (an opaque codec encodes to nothing: no packet is sent).
    pub fn encoder(self) -> Box<dyn Encoder> {
        self.encoder_at(self.rate())
    }

    /// An encoder taking PCM at `rate` (see [`CodecKind::decoder_at`]).
    pub fn encoder_at(self, rate: u32) -> Box<dyn Encoder> {
        self.encoder_tuned(rate, OPUS_COMPLEXITY)
    }

    /// [`CodecKind::encoder_at`] with the Opus encoder's complexity (0–10) chosen.
    pub fn encoder_tuned(self, rate: u32, opus_complexity: u8) -> Box<dyn Encoder> {
        let _ = (rate, opus_complexity);
        match self {
            #[cfg(feature = "opus")]
            CodecKind::Opus => {
                if let Ok(e) = opus_encoder(rate, opus_complexity) {
                    return Box::new(OpusEncoder(e));
                }
            }
            #[cfg(feature = "g729")]
            CodecKind::G729 => return Box::new(G729Encoder(g729_sys::Encoder::new(false))),
            _ => {}
        }
        if !matches!(self, CodecKind::Pcmu | CodecKind::Pcma) {
            return Box::new(Silence);
        }
        Box::new(G711Encoder {
            alaw: self == CodecKind::Pcma,
        })
    }
}

/// Turns payloads into PCM at [`CodecKind::rate`].
pub trait Decoder: Send {
    /// Decodes one payload, appending samples to `out`.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>);
    /// Invents `samples` samples for a lost packet, appending to `out`.
    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>);
    /// Recovers a lost packet from the next one's forward error correction (Opus in-band
    /// FEC), appending `samples` samples; codecs without FEC conceal.
    fn recover(&mut self, _next: &[u8], samples: usize, out: &mut Vec<i16>) {
        self.conceal(samples, out);
    }
}

/// Turns PCM into payloads.
pub trait Encoder: Send {
    /// Encodes one frame of samples into `out` (cleared first).
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>);
}

struct G711Decoder {
    alaw: bool,
    /// The last good frame, replayed (fading) to conceal a loss.
    last: Vec<i16>,
    concealed: u32,
}

impl Decoder for G711Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        let start = out.len();
        if self.alaw {
            g711::decode_alaw(payload, out);
        } else {
            g711::decode_ulaw(payload, out);
        }
        self.last.clear();
        self.last.extend_from_slice(&out[start..]);
        self.concealed = 0;
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        // Repeat the last frame at half the level each time, then silence (G.711 Appendix I
        // in spirit, without its pitch search).
        self.concealed += 1;
        let shift = self.concealed.min(15);
        if self.last.is_empty() || self.concealed > 3 {
            out.extend(std::iter::repeat_n(0, samples));
            return;
        }
        out.extend(self.last.iter().cycle().take(samples).map(|&s| s >> shift));
    }
}

/// Default Opus encoder complexity (0–10): see `[media] opus_complexity`.
pub const OPUS_COMPLEXITY: u8 = 2;

#[cfg(feature = "opus")]
fn opus_encoder(rate: u32, complexity: u8) -> Result<opus::Encoder, opus::Error> {
    let mut e = opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip)?;
    e.set_bitrate(opus::Bitrate::Bits(24000))?;
    // SILK's delayed-decision quantiser and warped analysis are what complexity buys: the
    // encoder is most of a transcoded call's CPU (docs/BENCHMARKS.md has the figures).
    e.set_complexity(i32::from(complexity.min(10)))?;
    e.set_signal(opus::Signal::Voice)?;
    if rate <= 8000 {
        // Narrowband source: no point coding (or resampling to) a wider band.
        e.set_max_bandwidth(opus::Bandwidth::Narrowband)?;
        e.set_bitrate(opus::Bitrate::Bits(16000))?;
    }
    e.set_inband_fec(true)?;
    e.set_packet_loss_perc(10)?;
    Ok(e)
}

#[cfg(feature = "opus")]
struct OpusDecoder {
    inner: opus::Decoder,
    buf: Vec<i16>,
    frame: usize,
}

#[cfg(feature = "opus")]
impl OpusDecoder {
    fn run(&mut self, payload: &[u8], fec: bool, samples: Option<usize>, out: &mut Vec<i16>) {
        let want = samples.map_or(self.buf.len(), |s| s.min(self.buf.len()));
        match self.inner.decode(payload, &mut self.buf[..want], fec) {
            Ok(n) => out.extend_from_slice(&self.buf[..n]),
            // A corrupt packet: a frame of silence rather than nothing (timing holds).
            Err(_) => out.extend(std::iter::repeat_n(0, samples.unwrap_or(self.frame))),
        }
    }
}

#[cfg(feature = "opus")]
impl Decoder for OpusDecoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        self.run(payload, false, None, out);
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        // An empty packet asks libopus for its packet-loss concealment.
        self.run(&[], false, Some(samples), out);
    }

    fn recover(&mut self, next: &[u8], samples: usize, out: &mut Vec<i16>) {
        self.run(next, true, Some(samples), out);
    }
}

#[cfg(feature = "opus")]
struct OpusEncoder(opus::Encoder);

#[cfg(feature = "opus")]
impl Encoder for OpusEncoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        out.clear();
        out.resize(1275, 0);
        match self.0.encode(pcm, out) {
            Ok(n) => out.truncate(n),
            Err(_) => out.clear(),
        }
    }
}

#[cfg(feature = "g729")]
struct G729Decoder(g729_sys::Decoder);

#[cfg(feature = "g729")]
impl Decoder for G729Decoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        // 10-byte voice frames, possibly followed by a 2-byte Annex B SID frame.
        let mut rest = payload;
        while rest.len() >= g729_sys::VOICE_FRAME_BYTES {
            let (frame, more) = rest.split_at(g729_sys::VOICE_FRAME_BYTES);
            out.extend_from_slice(&self.0.decode(frame, false, false, false));
            rest = more;
        }
        if rest.len() == 2 {
            out.extend_from_slice(&self.0.decode(rest, false, true, false));
        }
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        for _ in 0..samples.div_ceil(g729_sys::FRAME_SAMPLES) {
            out.extend_from_slice(&self.0.decode(&[], true, false, false));
        }
    }
}

#[cfg(feature = "g729")]
struct G729Encoder(g729_sys::Encoder);

#[cfg(feature = "g729")]
impl Encoder for G729Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        out.clear();
        let mut frame = [0i16; g729_sys::FRAME_SAMPLES];
        let mut bytes = [0u8; g729_sys::VOICE_FRAME_BYTES];
        for chunk in pcm.chunks(g729_sys::FRAME_SAMPLES) {
            frame[..chunk.len()].copy_from_slice(chunk);
            frame[chunk.len()..].fill(0);
            let n = self.0.encode_into(&frame, &mut bytes);
            out.extend_from_slice(&bytes[..usize::from(n)]);
        }
    }
}

struct Silence;

impl Decoder for Silence {
    fn decode(&mut self, _: &[u8], out: &mut Vec<i16>) {
        out.extend(std::iter::repeat_n(0, 160));
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        out.extend(std::iter::repeat_n(0, samples));
    }
}

impl Encoder for Silence {
    fn encode(&mut self, _: &[i16], out: &mut Vec<u8>) {
        out.clear();
    }
}

struct G711Encoder {
    alaw: bool,
}

impl Encoder for G711Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        out.clear();
        if self.alaw {
            out.extend(pcm.iter().map(|&s| g711::alaw_encode(s)));
        } else {
            out.extend(pcm.iter().map(|&s| g711::ulaw_encode(s)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::goertzel_power;
    use crate::resample::tests::{rms, sine};

    fn snr_db(a: &[i16], b: &[i16]) -> f64 {
        let noise: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum();
        let sig: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
        10.0 * (sig / noise.max(1.0)).log10()
    }

    #[test]
    fn tone_round_trip_keeps_frequency_and_snr() {
        for kind in [CodecKind::Pcmu, CodecKind::Pcma] {
            let input = sine(1000.0, 8000, 8000, 8000.0);
            let (mut enc, mut dec) = (kind.encoder(), kind.decoder());
            let mut out = Vec::new();
            let mut payload = Vec::new();
            for frame in input.chunks(160) {
                enc.encode(frame, &mut payload);
                assert_eq!(payload.len(), 160);
                dec.decode(&payload, &mut out);
            }
            assert!(
                snr_db(&input, &out) > 30.0,
                "{kind:?}: {:.1} dB",
                snr_db(&input, &out)
            );
            let p1k = goertzel_power(&out, 1000.0, 8000.0);
            assert!(
                p1k > 0.95 * rms(&out).powi(2),
                "{kind:?}: the energy is at 1 kHz"
            );
        }
    }

    /// Encodes and decodes a tone at the codec's rate, in 20 ms frames; returns the output.
    fn round_trip(kind: CodecKind, freq: f64) -> (Vec<i16>, Vec<i16>) {
        let rate = kind.rate();
        let input = sine(freq, rate, rate as usize, 8000.0);
        let (mut enc, mut dec) = (kind.encoder(), kind.decoder());
        let mut out = Vec::new();
        let mut payload = Vec::new();
        for frame in input.chunks((rate / 50) as usize) {
            enc.encode(frame, &mut payload);
            assert!(!payload.is_empty(), "{kind:?} produced a payload");
            dec.decode(&payload, &mut out);
        }
        (input, out)
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_keeps_a_tones_frequency_and_level() {
        let (input, out) = round_trip(CodecKind::Opus, 1000.0);
        assert_eq!(out.len(), input.len());
        // A perceptual codec shifts the phase: compare spectra, not samples.
        let steady = &out[3200..];
        let share = goertzel_power(steady, 1000.0, 16000.0) / rms(steady).powi(2);
        assert!(share > 0.9, "energy at 1 kHz: {share:.2}");
        let level = rms(steady) / rms(&input[3200..]);
        assert!((0.7..1.3).contains(&level), "level ratio {level:.2}");
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_conceals_and_recovers_with_fec() {
        let (mut enc, mut dec) = (CodecKind::Opus.encoder(), CodecKind::Opus.decoder());
        let input = sine(440.0, 16000, 3200, 8000.0);
        let mut packets = Vec::new();
        for f in input.chunks(320) {
            let mut p = Vec::new();
            enc.encode(f, &mut p);
            packets.push(p);
        }
        let mut out = Vec::new();
        dec.decode(&packets[0], &mut out);
        dec.conceal(320, &mut out);
        dec.recover(&packets[3], 320, &mut out);
        dec.decode(&packets[3], &mut out);
        assert_eq!(out.len(), 4 * 320);
        assert!(rms(&out[320..640]) > 100.0, "PLC continues the tone");
    }

    #[cfg(feature = "g729")]
    #[test]
    fn g729_keeps_a_tones_frequency() {
        let (input, out) = round_trip(CodecKind::G729, 800.0);
        assert_eq!(out.len(), input.len());
        let steady = &out[1600..];
        let share = goertzel_power(steady, 800.0, 8000.0) / rms(steady).powi(2);
        assert!(share > 0.8, "energy at 800 Hz: {share:.2}");
    }

    #[test]
    fn concealment_fades_then_goes_silent() {
        let mut dec = CodecKind::Pcmu.decoder();
        let mut out = Vec::new();
        dec.decode(&[0x80; 160], &mut out);
        out.clear();
        dec.conceal(160, &mut out);
        assert_eq!(out[0], 32124 >> 1);
        for _ in 0..3 {
            out.clear();
            dec.conceal(160, &mut out);
        }
        assert!(out.iter().all(|&s| s == 0));
    }
}
