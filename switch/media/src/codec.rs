//! Audio codecs behind one pair of traits. G.711 is built in; Opus and G.729 come behind
//! their features (see the README for G.729's licence).

use crate::g711;

/// A codec the media engine can decode and encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
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
            CodecKind::Opaque { .. } => "?",
        }
    }

    /// RTP clock rate.
    pub fn clock(self) -> u32 {
        match self {
            CodecKind::Opaque { clock, .. } => clock,
            _ => 8000,
        }
    }

    /// Sample rate of the PCM the codec takes and gives.
    pub fn rate(self) -> u32 {
        8000
    }

    /// Static payload type, if any (RFC 3551).
    pub fn static_pt(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0),
            CodecKind::Pcma => Some(8),
            CodecKind::Opaque { .. } => None,
        }
    }

    /// Bytes of silence in this codec's payload, for muting a forwarded packet in place.
    pub fn silence_byte(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0xFF),
            CodecKind::Pcma => Some(0xD5),
            CodecKind::Opaque { .. } => None,
        }
    }

    /// A decoder (an opaque codec decodes to silence).
    pub fn decoder(self) -> Box<dyn Decoder> {
        if !self.transcodable() {
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
        if !self.transcodable() {
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
