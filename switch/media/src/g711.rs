//! G.711 µ-law (PCMU) and A-law (PCMA), ITU-T G.711. Encoding uses the segment search of the
//! reference algorithm; decoding is a 256-entry table built at compile time.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encodes one linear sample as µ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exp = segment(s >> 7);
    let mantissa = (s >> (exp + 3)) & 0x0F;
    !(sign | (exp << 4) as u8 | mantissa as u8)
}

/// Decodes one µ-law byte.
pub const fn ulaw_decode(code: u8) -> i16 {
    let c = !code;
    let exp = ((c >> 4) & 0x07) as i32;
    let mantissa = (c & 0x0F) as i32;
    let mag = (((mantissa << 3) + BIAS) << exp) - BIAS;
    if c & 0x80 != 0 {
        -mag as i16
    } else {
        mag as i16
    }
}

/// Encodes one linear sample as A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    let s = i32::from(sample);
    let (sign, mag) = if s >= 0 { (0x80u8, s) } else { (0, -s - 1) };
    let mag = mag.min(0x7FFF) >> 3; // 13-bit magnitude
    let code = if mag < 32 {
        (mag >> 1) as u8
    } else {
        let exp = segment(mag >> 5) + 1;
        ((exp << 4) as u8) | ((mag >> exp) & 0x0F) as u8
    };
    (sign | code) ^ 0x55
}

/// Decodes one A-law byte.
pub const fn alaw_decode(code: u8) -> i16 {
    let c = code ^ 0x55;
    let exp = ((c >> 4) & 0x07) as i32;
    let mantissa = (c & 0x0F) as i32;
    let mag = if exp == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exp - 1)
    };
    if c & 0x80 != 0 {
        mag as i16
    } else {
        -mag as i16
    }
}

/// Index of the highest set bit among the low 8 bits (0 for 0 and 1).
fn segment(v: i32) -> i32 {
    let mut exp = 0;
    let mut v = v;
    while v > 1 && exp < 7 {
        v >>= 1;
        exp += 1;
    }
    exp
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode(i as u8)
        } else {
            ulaw_decode(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW: [i16; 256] = table(false);
static ALAW: [i16; 256] = table(true);

/// Decodes a µ-law payload, appending to `out`.
pub fn decode_ulaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&b| ULAW[usize::from(b)]));
}

/// Decodes an A-law payload, appending to `out`.
pub fn decode_alaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&b| ALAW[usize::from(b)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // Values from the ITU-T G.711 tables (and every G.711 implementation since).
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xF0), 120);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            let u = ulaw_decode(c);
            // µ-law has two zeros (0x7F and 0xFF); both decode to 0, which encodes to 0xFF.
            if u != 0 {
                assert_eq!(ulaw_encode(u), c, "ulaw {c:#x} -> {u}");
            }
            assert_eq!(alaw_encode(alaw_decode(c)), c, "alaw {c:#x}");
        }
    }

    #[test]
    fn every_sample_is_quantised_to_the_nearest_level_within_its_segment_step() {
        for s in i16::MIN..=i16::MAX {
            let u = i32::from(ulaw_decode(ulaw_encode(s)));
            let a = i32::from(alaw_decode(alaw_encode(s)));
            let x = i32::from(s);
            // Step size grows with the segment: error is at most half a step (+ clipping).
            let ustep = (x.abs().min(CLIP) + BIAS).max(256) / 16;
            assert!(
                (u - x).abs() <= ustep.max(x.abs() - CLIP + 256),
                "ulaw {s}: {u}"
            );
            let astep = (x.abs().max(512)) / 16;
            assert!(
                (a - x).abs() <= astep.max(x.abs() - 32256 + 512),
                "alaw {s}: {a}"
            );
        }
    }
}
