//! Call-progress tones with cadences. A tone is written the way FreeSWITCH's TGML writes it,
//! `%(on_ms,off_ms,freq1[+freq2...])`, several segments separated by `;` repeating as a whole
//! (`%(400,200,400,450);%(400,2000,400,450)` is the UK ring), or named by a preset.

use std::f64::consts::PI;

/// Presets by name: `ringback`, `busy`, `congestion` for the US (`-us`), Europe (`-eu`, ETSI
/// 425 Hz) and the UK (`-uk`). The name without a suffix is the US one.
pub const PRESETS: &[(&str, &str)] = &[
    ("ringback-us", "%(2000,4000,440,480)"),
    ("busy-us", "%(500,500,480,620)"),
    ("congestion-us", "%(250,250,480,620)"),
    ("ringback-eu", "%(1000,4000,425)"),
    ("busy-eu", "%(500,500,425)"),
    ("congestion-eu", "%(200,200,425)"),
    ("ringback-uk", "%(400,200,400,450);%(400,2000,400,450)"),
    ("busy-uk", "%(375,375,400)"),
    ("congestion-uk", "%(400,350,400);%(225,525,400)"),
    ("ringback", "%(2000,4000,440,480)"),
    ("busy", "%(500,500,480,620)"),
    ("congestion", "%(250,250,480,620)"),
];

/// One on/off segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Tone on, ms.
    pub on_ms: u32,
    /// Silence after, ms.
    pub off_ms: u32,
    /// Frequencies mixed, Hz.
    pub freqs: Vec<f64>,
}

/// Why a tone description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad tone {0:?}: expected a preset ({presets}) or %(on_ms,off_ms,freq[,freq...])", presets = preset_names())]
pub struct ToneError(pub String);

fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a preset name or TGML-like description.
pub fn parse(spec: &str) -> Result<Vec<Segment>, ToneError> {
    let spec = spec.trim();
    let text = PRESETS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(spec))
        .map_or(spec, |(_, t)| *t);
    let err = || ToneError(spec.to_owned());
    let mut segs = Vec::new();
    for part in text.split(';') {
        let inner = part
            .trim()
            .strip_prefix("%(")
            .and_then(|p| p.strip_suffix(')'))
            .ok_or_else(err)?;
        let nums: Vec<&str> = inner.split(',').map(str::trim).collect();
        if nums.len() < 3 {
            return Err(err());
        }
        let on_ms: u32 = nums[0].parse().map_err(|_| err())?;
        let off_ms: u32 = nums[1].parse().map_err(|_| err())?;
        let mut freqs = Vec::new();
        for f in &nums[2..] {
            for f in f.split('+') {
                let v: f64 = f.trim().parse().map_err(|_| err())?;
                if !(20.0..=20000.0).contains(&v) {
                    return Err(err());
                }
                freqs.push(v);
            }
        }
        if on_ms == 0 && off_ms == 0 {
            return Err(err());
        }
        segs.push(Segment {
            on_ms,
            off_ms,
            freqs,
        });
    }
    Ok(segs)
}

/// Plays a cadence forever (until dropped), at `rate` Hz, each frequency at −16 dBFS.
#[derive(Debug, Clone)]
pub struct TonePlayer {
    segs: Vec<Segment>,
    rate: u32,
    seg: usize,
    pos: u64,
    /// Samples since the tone started (phase continuity across frames).
    t: u64,
}

impl TonePlayer {
    /// A player of `segs` (non-empty) at `rate` Hz.
    pub fn new(segs: Vec<Segment>, rate: u32) -> TonePlayer {
        TonePlayer {
            segs,
            rate,
            seg: 0,
            pos: 0,
            t: 0,
        }
    }

    /// Writes the next `out.len()` samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        let rate = u64::from(self.rate);
        for s in out.iter_mut() {
            let Some(seg) = self.segs.get(self.seg) else {
                *s = 0;
                continue;
            };
            let on = u64::from(seg.on_ms) * rate / 1000;
            let off = u64::from(seg.off_ms) * rate / 1000;
            *s = if self.pos < on {
                let time = self.t as f64 / rate as f64;
                let v: f64 = seg.freqs.iter().map(|f| (2.0 * PI * f * time).sin()).sum();
                (5200.0 * v) as i16
            } else {
                0
            };
            self.pos += 1;
            self.t += 1;
            if self.pos >= on + off {
                self.pos = 0;
                self.seg = (self.seg + 1) % self.segs.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtmf::goertzel_power;

    #[test]
    fn presets_parse_and_bad_specs_are_refused() {
        for (name, _) in PRESETS {
            assert!(!parse(name).unwrap().is_empty(), "{name}");
        }
        assert_eq!(
            parse("%(100,200,350+440)").unwrap(),
            vec![Segment {
                on_ms: 100,
                off_ms: 200,
                freqs: vec![350.0, 440.0]
            }]
        );
        for bad in [
            "",
            "beep",
            "%(100,200)",
            "%(a,200,400)",
            "%(100,200,5)",
            "%(0,0,400)",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("ringback-us"), "{e}");
        }
    }

    #[test]
    fn us_ringback_has_its_frequencies_and_cadence() {
        let mut p = TonePlayer::new(parse("ringback").unwrap(), 8000);
        let mut audio = vec![0i16; 8000 * 6];
        p.fill(&mut audio);
        let on = &audio[..16000];
        let off = &audio[16000..48000];
        assert!(goertzel_power(on, 440.0, 8000.0) > 1e6 && goertzel_power(on, 480.0, 8000.0) > 1e6);
        assert!(goertzel_power(on, 620.0, 8000.0) < 1e3);
        assert!(off.iter().all(|&s| s == 0), "4 s of silence");
        // It repeats.
        let mut more = vec![0i16; 800];
        p.fill(&mut more);
        assert!(goertzel_power(&more, 440.0, 8000.0) > 1e6);
    }
}
