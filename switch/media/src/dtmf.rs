//! DTMF in its three forms: in-band tones (Goertzel detection with the ITU-T Q.24 checks, and
//! generation), RFC 4733 telephone-events (receive and send), and the SIP INFO bodies
//! (`application/dtmf-relay` and `application/dtmf`).

use std::f64::consts::PI;
use std::fmt;

const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// How a digit travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfMethod {
    /// RFC 4733 telephone-event packets.
    Rfc4733,
    /// SIP INFO.
    Info,
    /// Tones in the audio.
    Inband,
}

impl DtmfMethod {
    /// Config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DtmfMethod::Rfc4733 => "rfc4733",
            DtmfMethod::Info => "info",
            DtmfMethod::Inband => "inband",
        }
    }

    /// Parses a config value (`rfc2833` is accepted as the old name of RFC 4733).
    pub fn parse(s: &str) -> Option<DtmfMethod> {
        match s.to_ascii_lowercase().as_str() {
            "rfc4733" | "rfc2833" => Some(DtmfMethod::Rfc4733),
            "info" => Some(DtmfMethod::Info),
            "inband" => Some(DtmfMethod::Inband),
            _ => None,
        }
    }
}

impl fmt::Display for DtmfMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A digit: `0-9`, `*`, `#`, `A-D`.
pub fn is_digit(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// RFC 4733 event code of a digit.
pub fn event_of(digit: char) -> Option<u8> {
    Some(match digit {
        '0'..='9' => digit as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => digit as u8 - b'A' + 12,
        'a'..='d' => digit as u8 - b'a' + 12,
        _ => return None,
    })
}

/// Digit of an RFC 4733 event code (0–15).
pub fn digit_of(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        _ => return None,
    })
}

fn freqs_of(digit: char) -> Option<(f64, f64)> {
    for (r, row) in KEYS.iter().enumerate() {
        for (c, k) in row.iter().enumerate() {
            if *k == digit.to_ascii_uppercase() {
                return Some((ROWS[r], COLS[c]));
            }
        }
    }
    None
}

/// Power of the `freq` component of `x` (sample rate `rate`): a sine of amplitude A gives
/// about A²/2, the same scale as the mean square of the signal.
pub fn goertzel_power(x: &[i16], freq: f64, rate: f64) -> f64 {
    let coeff = 2.0 * (2.0 * PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let p = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * p / (x.len() as f64).powi(2)
}

/// Block of the detector at 8 kHz (12.75 ms, as in spandsp).
const BLOCK: usize = 102;
/// Minimum power of each tone: about −36 dBFS for a sine.
const MIN_TONE_POWER: f64 = 32768.0 * 32768.0 / 2.0 * 2.5e-4;
/// The low group may exceed the high group by this much (reverse twist, 4 dB)...
const REVERSE_TWIST: f64 = 2.51;
/// ...and the high group the low one by this much (normal twist, 8 dB).
const NORMAL_TWIST: f64 = 6.31;
/// The strongest tone of a group must beat the others of its group by 8 dB.
const RELATIVE_PEAK: f64 = 6.31;
/// The two tones must carry this share of the block's energy (speech and music don't).
const MIN_SHARE: f64 = 0.85;

/// In-band DTMF detector for 8 kHz audio. A digit is reported once it is heard in two
/// consecutive blocks (25.5 ms; ITU-T Q.24 wants 40 ms tones accepted) and ends after two
/// blocks without it.
#[derive(Debug, Clone, Default)]
pub struct ToneDetector {
    block: Vec<i16>,
    last: Option<char>,
    hits: u32,
    current: Option<char>,
    misses: u32,
    /// Samples the current digit has lasted.
    duration: usize,
    events: Vec<ToneEvent>,
}

/// What the detector noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToneEvent {
    /// A digit started (after the minimum duration).
    Start(char),
    /// The digit ended after `ms` milliseconds.
    End(char, u32),
}

impl ToneDetector {
    /// A detector.
    pub fn new() -> ToneDetector {
        ToneDetector {
            block: Vec::with_capacity(BLOCK),
            ..ToneDetector::default()
        }
    }

    /// A digit is being heard.
    pub fn active(&self) -> Option<char> {
        self.current
    }

    /// Feeds 8 kHz samples; events come out of [`ToneDetector::poll`].
    pub fn feed(&mut self, samples: &[i16]) {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (BLOCK - self.block.len()).min(rest.len());
            self.block.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.block.len() == BLOCK {
                let d = classify(&self.block);
                self.block.clear();
                self.step(d);
            }
        }
    }

    fn step(&mut self, d: Option<char>) {
        if d.is_some() && d == self.last {
            self.hits += 1;
        } else {
            self.hits = u32::from(d.is_some());
        }
        self.last = d;
        match self.current {
            Some(cur) if d == Some(cur) => {
                self.misses = 0;
                self.duration += BLOCK;
            }
            Some(cur) => {
                self.misses += 1;
                if self.misses >= 2 || (d.is_some() && self.hits >= 2) {
                    let ms = (self.duration / 8) as u32;
                    self.events.push(ToneEvent::End(cur, ms));
                    self.current = None;
                    self.misses = 0;
                }
            }
            None => {}
        }
        if self.current.is_none()
            && self.hits >= 2
            && let Some(d) = d
        {
            self.current = Some(d);
            self.duration = BLOCK * 2;
            self.events.push(ToneEvent::Start(d));
        }
    }

    /// Next event, oldest first.
    pub fn poll(&mut self) -> Option<ToneEvent> {
        if self.events.is_empty() {
            None
        } else {
            Some(self.events.remove(0))
        }
    }
}

fn classify(block: &[i16]) -> Option<char> {
    let energy: f64 = block.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / block.len() as f64;
    if energy < MIN_TONE_POWER * 2.0 {
        return None;
    }
    let rows = ROWS.map(|f| goertzel_power(block, f, 8000.0));
    let cols = COLS.map(|f| goertzel_power(block, f, 8000.0));
    let peak = |p: &[f64; 4]| {
        let (i, &m) = p.iter().enumerate().fold(
            (0, &0.0),
            |best, (i, v)| if v > best.1 { (i, v) } else { best },
        );
        let clean = p
            .iter()
            .enumerate()
            .all(|(j, &v)| j == i || v * RELATIVE_PEAK < m);
        (i, m, clean)
    };
    let (r, rp, rclean) = peak(&rows);
    let (c, cp, cclean) = peak(&cols);
    let ok = rclean
        && cclean
        && rp >= MIN_TONE_POWER
        && cp >= MIN_TONE_POWER
        && rp <= cp * REVERSE_TWIST
        && cp <= rp * NORMAL_TWIST
        && rp + cp >= energy * MIN_SHARE;
    // Second harmonics: a voice saying "ah" has them, a DTMF generator doesn't.
    let harmonic =
        goertzel_power(block, ROWS[r] * 2.0, 8000.0) + goertzel_power(block, COLS[c] * 2.0, 8000.0);
    (ok && harmonic * 10.0 < rp + cp).then_some(KEYS[r][c])
}

/// In-band DTMF generator: both tones at −10 dBFS each (about −7 dBm0 on G.711).
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    rate: f64,
    digits: std::collections::VecDeque<(char, usize)>,
    pos: usize,
}

/// Samples of silence between generated digits.
const GAP_MS: usize = 60;

impl ToneGenerator {
    /// A generator for audio at `rate` Hz.
    pub fn new(rate: u32) -> ToneGenerator {
        ToneGenerator {
            rate: f64::from(rate),
            digits: Default::default(),
            pos: 0,
        }
    }

    /// Queues a digit lasting `ms` milliseconds (at least 40).
    pub fn push(&mut self, digit: char, ms: u32) {
        if freqs_of(digit).is_some() {
            let n = (ms.max(40) as usize) * self.rate as usize / 1000;
            self.digits.push_back((digit, n));
        }
    }

    /// Something is queued or playing.
    pub fn busy(&self) -> bool {
        !self.digits.is_empty()
    }

    /// Overwrites `out` with the next samples (silence between digits). Returns false when
    /// idle (nothing written).
    pub fn fill(&mut self, out: &mut [i16]) -> bool {
        if self.digits.is_empty() {
            return false;
        }
        let gap = GAP_MS * self.rate as usize / 1000;
        for s in out.iter_mut() {
            let Some(&(digit, n)) = self.digits.front() else {
                *s = 0;
                continue;
            };
            *s = if self.pos < n {
                let (lo, hi) = freqs_of(digit).unwrap_or((0.0, 0.0));
                let t = self.pos as f64 / self.rate;
                (10362.0 * ((2.0 * PI * lo * t).sin() + (2.0 * PI * hi * t).sin())) as i16
            } else {
                0
            };
            self.pos += 1;
            if self.pos >= n + gap {
                self.digits.pop_front();
                self.pos = 0;
            }
        }
        true
    }
}

/// An RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Event code (0–15 for DTMF).
    pub event: u8,
    /// End bit.
    pub end: bool,
    /// Volume, 0–63 (−dBm0).
    pub volume: u8,
    /// Duration in timestamp units.
    pub duration: u16,
}

impl Event {
    /// Parses a payload (4 bytes; redundant blocks of RFC 2198 are not expected here).
    pub fn parse(p: &[u8]) -> Option<Event> {
        let b = p.get(..4)?;
        Some(Event {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4-byte payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// Receives RFC 4733 events of one stream: one digit per event timestamp, whether the start
/// packet came (Chromium sends none for short digits, only three end packets) and however many
/// redundant end packets follow.
#[derive(Debug, Clone, Default)]
pub struct EventReceiver {
    /// The event in progress (not ended yet).
    current: Option<Open>,
    /// Timestamp of the last event that ended (its repeats are ignored).
    ended: Option<u32>,
    /// Packets since the current event was last updated, to end it if its end packets are lost.
    stale: u32,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    ts: u32,
    digit: char,
    duration: u16,
    announced: bool,
}

/// What one telephone-event packet meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// A new digit began (not finished yet).
    Started(char),
    /// A digit finished, lasting `duration` timestamp units. `started` is false when no start
    /// was reported for it (end-only event).
    Ended {
        /// The digit.
        digit: char,
        /// Duration in timestamp units.
        duration: u16,
        /// Whether `Started` was reported before.
        started: bool,
    },
    /// Nothing new (an update or a repeat).
    Nothing,
}

impl EventReceiver {
    /// A receiver.
    pub fn new() -> EventReceiver {
        EventReceiver::default()
    }

    /// A telephone-event packet with RTP timestamp `ts`. A new event while another is still
    /// open closes the old one first (its `Ended` is returned; the new one will end without
    /// a `Started`).
    pub fn on_packet(&mut self, ts: u32, payload: &[u8]) -> EventOutcome {
        let Some(ev) = Event::parse(payload) else {
            return EventOutcome::Nothing;
        };
        let Some(digit) = digit_of(ev.event) else {
            return EventOutcome::Nothing;
        };
        if self.ended == Some(ts) {
            return EventOutcome::Nothing;
        }
        self.stale = 0;
        match self.current {
            Some(cur) if cur.ts == ts => {
                if ev.end {
                    self.current = None;
                    self.ended = Some(ts);
                    return EventOutcome::Ended {
                        digit: cur.digit,
                        duration: ev.duration,
                        started: cur.announced,
                    };
                }
                self.current = Some(Open {
                    duration: ev.duration,
                    ..cur
                });
                EventOutcome::Nothing
            }
            prev => {
                if ev.end && prev.is_none() {
                    self.ended = Some(ts);
                    return EventOutcome::Ended {
                        digit,
                        duration: ev.duration,
                        started: false,
                    };
                }
                self.current = Some(Open {
                    ts,
                    digit,
                    duration: ev.duration,
                    announced: prev.is_none(),
                });
                if let Some(p) = prev {
                    if ev.end {
                        // The old one is closed now; the new one, already over, is next.
                        self.current = Some(Open {
                            ts,
                            digit,
                            duration: ev.duration,
                            announced: false,
                        });
                    }
                    return EventOutcome::Ended {
                        digit: p.digit,
                        duration: p.duration,
                        started: p.announced,
                    };
                }
                EventOutcome::Started(digit)
            }
        }
    }

    /// An audio packet came instead: after 10 of them (200 ms) without an update the event in
    /// progress is over (its end packets were lost).
    pub fn on_audio(&mut self) -> Option<EventOutcome> {
        let cur = self.current?;
        self.stale += 1;
        if self.stale < 10 {
            return None;
        }
        self.current = None;
        self.ended = Some(cur.ts);
        Some(EventOutcome::Ended {
            digit: cur.digit,
            duration: cur.duration,
            started: cur.announced,
        })
    }
}

/// Builds the telephone-event packets of one digit: one per `ptime` with a growing duration,
/// the last one sent three times with the end bit (RFC 4733 §2.5.1.4).
#[derive(Debug, Clone)]
pub struct EventSender {
    event: u8,
    /// Total duration in timestamp units.
    total: u32,
    step: u32,
    elapsed: u32,
    ends_left: u8,
    first: bool,
}

impl EventSender {
    /// A digit lasting `ms` at `clock` Hz, one packet every `ptime_ms`.
    pub fn new(digit: char, ms: u32, clock: u32, ptime_ms: u32) -> Option<EventSender> {
        let event = event_of(digit)?;
        let total = (ms.max(40) * (clock / 1000)).min(u32::from(u16::MAX));
        Some(EventSender {
            event,
            total,
            step: ptime_ms.max(10) * (clock / 1000),
            elapsed: 0,
            ends_left: 3,
            first: true,
        })
    }

    /// Next payload and whether it carries the marker bit; `None` when done.
    pub fn next_packet(&mut self) -> Option<([u8; 4], bool)> {
        if self.ends_left == 0 {
            return None;
        }
        self.elapsed = (self.elapsed + self.step).min(self.total);
        let end = self.elapsed >= self.total;
        if end {
            self.ends_left -= 1;
        }
        let marker = std::mem::replace(&mut self.first, false);
        let ev = Event {
            event: self.event,
            end,
            volume: 10,
            duration: self.elapsed as u16,
        };
        Some((ev.to_bytes(), marker))
    }
}

/// Parses a SIP INFO body: `application/dtmf-relay` (`Signal=5\r\nDuration=160`) or
/// `application/dtmf` (just the digit). Returns the digit and its duration in ms.
pub fn parse_info(content_type: &str, body: &[u8]) -> Option<(char, u32)> {
    let text = std::str::from_utf8(body).ok()?;
    let ct = content_type.trim().to_ascii_lowercase();
    if ct.starts_with("application/dtmf-relay") {
        let mut digit = None;
        let mut duration = 250;
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "signal" => digit = info_digit(v.trim()),
                "duration" => duration = v.trim().parse().unwrap_or(250),
                _ => {}
            }
        }
        digit.map(|d| (d, duration.clamp(40, 5000)))
    } else if ct.starts_with("application/dtmf") {
        info_digit(text.trim()).map(|d| (d, 250))
    } else {
        None
    }
}

fn info_digit(v: &str) -> Option<char> {
    // Some phones send the event code (10, 11) instead of * and #.
    match v {
        "10" => return Some('*'),
        "11" => return Some('#'),
        _ => {}
    }
    let mut chars = v.chars();
    let c = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && is_digit(c)).then_some(c)
}

/// The `application/dtmf-relay` body for a digit.
pub fn info_body(digit: char, ms: u32) -> String {
    format!("Signal={digit}\r\nDuration={ms}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resample::tests::sine;

    fn tone(digit: char, ms: usize, lo_amp: f64, hi_amp: f64) -> Vec<i16> {
        let (lo, hi) = freqs_of(digit).unwrap();
        let n = ms * 8;
        let a = sine(lo, 8000, n, lo_amp);
        let b = sine(hi, 8000, n, hi_amp);
        a.iter()
            .zip(&b)
            .map(|(x, y)| x.saturating_add(*y))
            .collect()
    }

    fn detect(audio: &[i16]) -> Vec<ToneEvent> {
        let mut d = ToneDetector::new();
        for frame in audio.chunks(160) {
            d.feed(frame);
        }
        d.feed(&[0; 800]);
        std::iter::from_fn(|| d.poll()).collect()
    }

    #[test]
    fn all_digits_at_several_levels_and_twists_are_detected() {
        let digits = "0123456789*#ABCD";
        // (low group amplitude, high group amplitude): −10 to −30 dBFS, twists of ±3 / +6 dB.
        let levels = [
            (10000.0, 10000.0),
            (3000.0, 3000.0),
            (1000.0, 1000.0),
            (7000.0, 10000.0),
            (10000.0, 7000.0),
            (3000.0, 6000.0),
        ];
        for (lo, hi) in levels {
            for d in digits.chars() {
                let mut audio = vec![0i16; 400];
                audio.extend(tone(d, 60, lo, hi));
                audio.extend(vec![0; 400]);
                let ev = detect(&audio);
                assert_eq!(
                    ev.first(),
                    Some(&ToneEvent::Start(d)),
                    "{d} at {lo}/{hi}: {ev:?}"
                );
                assert!(
                    matches!(ev.get(1), Some(ToneEvent::End(x, ms)) if *x == d && (38..=90).contains(ms)),
                    "{d}: {ev:?}"
                );
                assert_eq!(ev.len(), 2, "{d} at {lo}/{hi}: {ev:?}");
            }
        }
    }

    #[test]
    fn too_short_too_weak_or_too_twisted_is_not_a_digit() {
        assert!(detect(&tone('5', 20, 8000.0, 8000.0)).is_empty(), "20 ms");
        assert!(detect(&tone('5', 100, 200.0, 200.0)).is_empty(), "−44 dBFS");
        assert!(
            detect(&tone('5', 100, 10000.0, 1500.0)).is_empty(),
            "16 dB twist"
        );
        // A single tone (a dial tone or a beep) is not a digit.
        assert!(detect(&sine(941.0, 8000, 800, 10000.0)).is_empty());
    }

    #[test]
    fn digits_in_a_row_are_each_reported_once() {
        let mut audio = Vec::new();
        for d in "159#".chars() {
            audio.extend(tone(d, 80, 8000.0, 8000.0));
            audio.extend(vec![0i16; 480]);
        }
        let starts: String = detect(&audio)
            .iter()
            .filter_map(|e| match e {
                ToneEvent::Start(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(starts, "159#");
    }

    /// A synthetic "music" test set: notes with harmonics, chords, vibrato; none may be a digit.
    #[test]
    fn music_gives_no_false_digit() {
        let mut audio = Vec::new();
        let mut seed = 12345u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (seed >> 16) as f64 / 65536.0
        };
        for _ in 0..200 {
            let notes: Vec<f64> = (0..1 + (rnd() * 3.0) as usize)
                .map(|_| 220.0 * 2f64.powf((rnd() * 36.0).floor() / 12.0))
                .collect();
            let n = 800 + (rnd() * 1600.0) as usize;
            for i in 0..n {
                let t = i as f64 / 8000.0;
                let mut v = 0.0;
                for f in &notes {
                    let vib = 1.0 + 0.004 * (2.0 * PI * 5.0 * t).sin();
                    for h in 1..4 {
                        v += 3000.0 / h as f64 * (2.0 * PI * f * vib * h as f64 * t).sin();
                    }
                }
                audio.push(v.clamp(-32000.0, 32000.0) as i16);
            }
        }
        assert_eq!(detect(&audio), vec![]);
    }

    /// The shipped prompts are speech (espeak-ng): none may contain a digit.
    #[test]
    fn speech_gives_no_false_digit() {
        // The checkout the test runs in, read now: a binary from a build cache shared by
        // several checkouts may have been built in another, since removed.
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let dir = manifest.join("../../sounds/en");
        let mut checked = 0;
        let list = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in list {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wav") {
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let wav = crate::wav::Wav::read(&bytes).unwrap();
                let mut r = crate::resample::Resampler::new(wav.rate, 8000);
                let mut audio = Vec::new();
                r.process(&wav.samples, &mut audio);
                assert_eq!(detect(&audio), vec![], "{}", path.display());
                checked += audio.len();
            }
        }
        assert!(
            checked > 8000 * 10,
            "at least 10 s of speech checked, got {checked} samples"
        );
    }

    #[test]
    fn generated_digits_are_detected() {
        let mut g = ToneGenerator::new(8000);
        for d in "*76#".chars() {
            g.push(d, 100);
        }
        let mut audio = vec![0i16; 8000];
        assert!(g.fill(&mut audio));
        let got: String = detect(&audio)
            .iter()
            .filter_map(|e| match e {
                ToneEvent::Start(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(got, "*76#");
        assert!(!g.busy());
    }

    #[test]
    fn rfc4733_payload_round_trips() {
        let e = Event {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(e.to_bytes(), [11, 0x8A, 0x05, 0x00]);
        assert_eq!(Event::parse(&e.to_bytes()), Some(e));
        assert_eq!(Event::parse(&[1, 2]), None);
        for d in "0123456789*#ABCD".chars() {
            assert_eq!(digit_of(event_of(d).unwrap()), Some(d));
        }
    }

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        Event {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    #[test]
    fn receiver_reports_a_digit_once_with_redundant_ends() {
        let mut r = EventReceiver::new();
        assert_eq!(
            r.on_packet(1000, &pkt(5, false, 160)),
            EventOutcome::Started('5')
        );
        assert_eq!(
            r.on_packet(1000, &pkt(5, false, 320)),
            EventOutcome::Nothing
        );
        let end = EventOutcome::Ended {
            digit: '5',
            duration: 800,
            started: true,
        };
        assert_eq!(r.on_packet(1000, &pkt(5, true, 800)), end);
        assert_eq!(r.on_packet(1000, &pkt(5, true, 800)), EventOutcome::Nothing);
        assert_eq!(r.on_packet(1000, &pkt(5, true, 800)), EventOutcome::Nothing);
        // The same digit again is a new event (new timestamp).
        assert_eq!(
            r.on_packet(2600, &pkt(5, false, 160)),
            EventOutcome::Started('5')
        );
    }

    #[test]
    fn chromium_end_only_events_at_48khz() {
        // Chromium: no start packet, three end packets, 48 kHz clock.
        let mut r = EventReceiver::new();
        let end = EventOutcome::Ended {
            digit: '#',
            duration: 4800,
            started: false,
        };
        assert_eq!(r.on_packet(96000, &pkt(11, true, 4800)), end);
        assert_eq!(
            r.on_packet(96000, &pkt(11, true, 4800)),
            EventOutcome::Nothing
        );
        assert_eq!(
            r.on_packet(96000, &pkt(11, true, 4800)),
            EventOutcome::Nothing
        );
        let end1 = EventOutcome::Ended {
            digit: '1',
            duration: 4800,
            started: false,
        };
        assert_eq!(r.on_packet(100800, &pkt(1, true, 4800)), end1);
    }

    #[test]
    fn lost_end_packets_end_the_digit_after_200ms_of_audio() {
        let mut r = EventReceiver::new();
        assert_eq!(
            r.on_packet(10, &pkt(3, false, 160)),
            EventOutcome::Started('3')
        );
        for _ in 0..9 {
            assert_eq!(r.on_audio(), None);
        }
        assert_eq!(
            r.on_audio(),
            Some(EventOutcome::Ended {
                digit: '3',
                duration: 160,
                started: true
            })
        );
        assert_eq!(
            r.on_packet(10, &pkt(3, true, 800)),
            EventOutcome::Nothing,
            "late end ignored"
        );
    }

    #[test]
    fn sender_builds_growing_packets_and_three_ends() {
        let mut s = EventSender::new('9', 100, 8000, 20).unwrap();
        let pkts: Vec<_> = std::iter::from_fn(|| s.next_packet()).collect();
        assert_eq!(pkts.len(), 5 + 2);
        assert!(pkts[0].1 && !pkts[1].1, "marker on the first only");
        let evs: Vec<Event> = pkts.iter().map(|(p, _)| Event::parse(p).unwrap()).collect();
        assert_eq!(evs[0].duration, 160);
        assert_eq!(evs.iter().filter(|e| e.end).count(), 3);
        assert!(
            evs[4..]
                .iter()
                .all(|e| e.end && e.duration == 800 && e.event == 9)
        );
        // And a receiver reads it back as one digit.
        let mut r = EventReceiver::new();
        let outs: Vec<_> = pkts.iter().map(|(p, _)| r.on_packet(42, p)).collect();
        assert_eq!(outs[0], EventOutcome::Started('9'));
        assert_eq!(
            outs.iter()
                .filter(|o| matches!(o, EventOutcome::Ended { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn info_bodies() {
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
            Some(('5', 160))
        );
        assert_eq!(
            parse_info("Application/DTMF-Relay", b"Signal= #\nDuration= 100"),
            Some(('#', 100))
        );
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal=11\r\n"),
            Some(('#', 250))
        );
        assert_eq!(parse_info("application/dtmf", b"7"), Some(('7', 250)));
        assert_eq!(parse_info("application/dtmf-relay", b"Signal=x\r\n"), None);
        assert_eq!(parse_info("text/plain", b"Signal=5"), None);
        assert_eq!(
            parse_info("application/dtmf-relay", &info_body('*', 120).into_bytes()),
            Some(('*', 120))
        );
    }
}
