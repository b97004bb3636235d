//! WAV files (RIFF, 16-bit PCM, mono or stereo mixed down) for prompts.

/// Why a WAV file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// Not a RIFF/WAVE file.
    #[error("not a WAV file (no RIFF/WAVE header)")]
    NotWav,
    /// A format we don't play.
    #[error("unsupported WAV format: {0} (16-bit PCM, 1 or 2 channels, 8000-48000 Hz wanted)")]
    Unsupported(String),
    /// Chunks cut short.
    #[error("truncated WAV file")]
    Truncated,
}

/// Decoded audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    /// Sample rate, Hz.
    pub rate: u32,
    /// Mono samples.
    pub samples: Vec<i16>,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

impl Wav {
    /// Parses a WAV file.
    pub fn read(b: &[u8]) -> Result<Wav, WavError> {
        if b.get(0..4) != Some(b"RIFF") || b.get(8..12) != Some(b"WAVE") {
            return Err(WavError::NotWav);
        }
        let mut i = 12;
        let mut fmt = None;
        while i + 8 <= b.len() {
            let id = &b[i..i + 4];
            let len = u32_at(b, i + 4).ok_or(WavError::Truncated)? as usize;
            let body = i + 8;
            if id == b"fmt " {
                let tag = u16_at(b, body).ok_or(WavError::Truncated)?;
                let channels = u16_at(b, body + 2).ok_or(WavError::Truncated)?;
                let rate = u32_at(b, body + 4).ok_or(WavError::Truncated)?;
                let bits = u16_at(b, body + 14).ok_or(WavError::Truncated)?;
                // 0xFFFE is WAVE_FORMAT_EXTENSIBLE, which sox writes for some files.
                if !(tag == 1 || tag == 0xFFFE)
                    || bits != 16
                    || !(1..=2).contains(&channels)
                    || !(8000..=48000).contains(&rate)
                {
                    return Err(WavError::Unsupported(format!(
                        "format {tag}, {bits} bits, {channels} channels, {rate} Hz"
                    )));
                }
                fmt = Some((channels as usize, rate));
            } else if id == b"data" {
                let (channels, rate) =
                    fmt.ok_or(WavError::Unsupported("data before fmt".into()))?;
                let end = (body + len).min(b.len());
                let data = &b[body..end];
                let samples = data
                    .chunks_exact(2 * channels)
                    .map(|f| {
                        let sum: i32 = f
                            .chunks_exact(2)
                            .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
                            .sum();
                        (sum / channels as i32) as i16
                    })
                    .collect();
                return Ok(Wav { rate, samples });
            }
            i = body + len + (len & 1);
        }
        Err(WavError::Truncated)
    }

    /// A 16-bit mono WAV file of `samples` at `rate`.
    pub fn write(rate: u32, samples: &[i16]) -> Vec<u8> {
        let data = (samples.len() * 2) as u32;
        let mut b = Vec::with_capacity(44 + samples.len() * 2);
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data.to_le_bytes());
        for s in samples {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let w = Wav::write(16000, &[1, -2, 3]);
        assert_eq!(
            Wav::read(&w),
            Ok(Wav {
                rate: 16000,
                samples: vec![1, -2, 3]
            })
        );
        assert_eq!(Wav::read(b"hello"), Err(WavError::NotWav));
        let mut bad = w.clone();
        bad[34] = 8; // 8 bits per sample
        assert!(matches!(Wav::read(&bad), Err(WavError::Unsupported(_))));
        assert_eq!(Wav::read(&w[..30]), Err(WavError::Truncated));
    }
}
