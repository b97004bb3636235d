//! Sample-rate conversion between the telephony rates (8, 16, 48 kHz and any rational ratio)
//! with a polyphase windowed-sinc filter (Kaiser, β = 8: about 80 dB of stopband). The cutoff
//! is 47.5 % of the lower rate with a transition of 9 % of it: at 8 kHz, 0–3.4 kHz is flat
//! (±0.5 dB) and everything above 4.2 kHz is 60+ dB down, so 48 kHz audio brought down does
//! not fold back into the telephone band.
//! After the first frame `process` allocates nothing.

/// Converts a stream of samples from one rate to another.
#[derive(Debug, Clone)]
pub struct Resampler {
    up: usize,
    down: usize,
    /// Prototype filter, `taps * up` coefficients, read as `up` phases of `taps`.
    phases: Vec<f32>,
    taps: usize,
    /// `taps - 1` samples of history followed by the current input.
    buf: Vec<f32>,
    /// Position of the next output sample, in 1/`up` input samples from the block start.
    t: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Modified Bessel function of the first kind, order 0 (series; converges fast for β ≤ 20).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..50 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-12 {
            break;
        }
    }
    sum
}

impl Resampler {
    /// A converter from `from` Hz to `to` Hz (both non-zero).
    pub fn new(from: u32, to: u32) -> Resampler {
        let (from, to) = (from.max(1) as usize, to.max(1) as usize);
        let g = gcd(from, to);
        let (up, down) = (to / g, from / g);
        let fs_up = (from * up) as f64;
        let low = from.min(to) as f64;
        let (cutoff, transition) = (0.475 * low, 0.09 * low);
        // Kaiser's estimate for 80 dB: N ≈ (A − 8) / (2.285 · Δω).
        let dw = 2.0 * std::f64::consts::PI * transition / fs_up;
        let n = (((80.0 - 8.0) / (2.285 * dw)).ceil() as usize).max(up * 4);
        let taps = n.div_ceil(up);
        let len = taps * up;
        let beta = 8.0;
        let mid = (len - 1) as f64 / 2.0;
        let fc = cutoff / fs_up;
        let norm = bessel_i0(beta);
        let proto: Vec<f64> = (0..len)
            .map(|i| {
                let x = i as f64 - mid;
                let sinc = if x == 0.0 {
                    2.0 * fc
                } else {
                    (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
                };
                let r = x / mid;
                let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / norm;
                sinc * w * up as f64
            })
            .collect();
        // Phase p, tap k = proto[p + k * up]: stored contiguously per phase.
        let mut phases = vec![0.0f32; len];
        for p in 0..up {
            for k in 0..taps {
                phases[p * taps + k] = proto[p + k * up] as f32;
            }
        }
        Resampler {
            up,
            down,
            phases,
            taps,
            buf: vec![0.0; taps - 1],
            t: 0,
        }
    }

    /// True when input and output rates are equal (samples pass through).
    pub fn is_identity(&self) -> bool {
        self.up == 1 && self.down == 1
    }

    /// Converts `input`, appending the output samples to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        let hist = self.taps - 1;
        self.buf.extend(input.iter().map(|&s| f32::from(s)));
        let end = input.len() * self.up;
        while self.t < end {
            let i = self.t / self.up;
            let p = self.t % self.up;
            let coeffs = &self.phases[p * self.taps..(p + 1) * self.taps];
            // buf[hist + i] is the newest input sample this output depends on.
            let window = &self.buf[i..=hist + i];
            let acc: f32 = coeffs
                .iter()
                .zip(window.iter().rev())
                .map(|(c, x)| c * x)
                .sum();
            out.push(acc.round().clamp(-32768.0, 32767.0) as i16);
            self.t += self.down;
        }
        self.t -= end;
        let keep = self.buf.len() - hist;
        self.buf.copy_within(keep.., 0);
        self.buf.truncate(hist);
    }

    /// Forgets the history (a new, unrelated stream follows).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(self.taps - 1, 0.0);
        self.t = 0;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sine(freq: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as i16
            })
            .collect()
    }

    pub(crate) fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    fn convert(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let mut r = Resampler::new(from, to);
        let mut out = Vec::new();
        // In 20 ms frames, as the media path does.
        for chunk in input.chunks((from / 50) as usize) {
            r.process(chunk, &mut out);
        }
        out
    }

    fn gain_db(from: u32, to: u32, freq: f64) -> f64 {
        let input = sine(freq, from, from as usize, 10000.0);
        let out = convert(from, to, &input);
        // Skip the filter's start-up.
        let steady = &out[out.len() / 4..];
        20.0 * (rms(steady) / rms(&input[input.len() / 4..])).log10()
    }

    #[test]
    fn output_length_follows_the_ratio() {
        for (from, to) in [
            (8000, 48000),
            (48000, 8000),
            (16000, 8000),
            (8000, 16000),
            (16000, 48000),
        ] {
            let out = convert(from, to, &vec![0; from as usize]);
            assert_eq!(out.len(), to as usize, "{from}->{to}");
        }
    }

    #[test]
    fn passband_is_flat() {
        for (from, to) in [
            (8000, 48000),
            (48000, 8000),
            (16000, 8000),
            (8000, 16000),
            (48000, 16000),
        ] {
            for f in [300.0, 1000.0, 2000.0, 3000.0, 3400.0] {
                let g = gain_db(from, to, f);
                assert!(g.abs() < 0.5, "{from}->{to} at {f} Hz: {g:.2} dB");
            }
        }
    }

    #[test]
    fn no_aliasing_when_decimating() {
        // 48 kHz content above 4 kHz must not fold into the 8 kHz band.
        for f in [4400.0, 5000.0, 7000.0, 12000.0, 20000.0] {
            let g = gain_db(48000, 8000, f);
            assert!(g < -60.0, "48k->8k at {f} Hz: {g:.1} dB");
        }
        let g = gain_db(16000, 8000, 6000.0);
        assert!(g < -60.0, "16k->8k at 6 kHz: {g:.1} dB");
    }

    #[test]
    fn imaging_is_suppressed_when_interpolating() {
        // A 1 kHz tone at 8 kHz brought to 48 kHz has images at 7, 9, 15, 17 kHz...: only the
        // tone itself remains, so the output's energy equals the 1 kHz component's.
        let input = sine(1000.0, 8000, 8000, 10000.0);
        let out = convert(8000, 48000, &input);
        let steady = &out[out.len() / 4..];
        let tone = crate::dtmf::goertzel_power(steady, 1000.0, 48000.0);
        let total = rms(steady).powi(2);
        let residue = 10.0 * ((total - tone).abs() / total).log10();
        assert!(residue < -40.0, "{residue:.1} dB");
    }
}
