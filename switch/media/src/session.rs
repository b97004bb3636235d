//! The media engine of one call, sans-IO: RTP from each leg in, RTP to each leg out, digit
//! events and timeouts to the core.
//!
//! Each leg sends out of its own sequencer (its SSRC, sequence numbers and timestamps), so a
//! leg hears one continuous stream whatever feeds it: the other leg's packets forwarded with
//! their headers rewritten (same codec), the other leg transcoded (jitter buffer → decode →
//! resample → encode, one frame per tick), a prompt, a tone, or a generated digit. When the
//! source changes the timestamps go on from where they were, advanced by the time elapsed,
//! and the marker bit says so (RFC 3550 §5.1).
//!
//! Digits are terminated per leg and regenerated on the other in the form that leg uses
//! (RFC 4733, in-band tones, or SIP INFO, which the core sends). A digit in the leg's
//! suppress set is reported but never reaches the other leg: its events are not regenerated
//! and its in-band tone is muted out of the forwarded audio.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::codec::{CodecKind, Decoder, Encoder};
use crate::dtmf::{
    DtmfMethod, EventOutcome, EventReceiver, EventSender, ToneDetector, ToneEvent, ToneGenerator,
};
use crate::jitter::{JitterBuffer, Pop};
use crate::relay::Side;
use crate::resample::Resampler;
use crate::rtp::{self, RtpReader, StreamStats};
use crate::tone::TonePlayer;

/// The engine's tick: one generated frame per leg.
pub const TICK: Duration = Duration::from_millis(20);

/// How one leg sends and receives audio (from the negotiated SDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegMedia {
    /// The codec.
    pub codec: CodecKind,
    /// Its payload type on this leg.
    pub pt: u8,
    /// Packetization time, ms.
    pub ptime_ms: u32,
    /// telephone-event payload type and clock, if negotiated.
    pub te: Option<(u8, u32)>,
    /// How this leg exchanges digits.
    pub dtmf: DtmfMethod,
    /// Digits from this leg that must never reach the other leg.
    pub suppress: String,
    /// In-band digits are suppressed on this leg: its audio to the other leg passes through
    /// a delay line this long (ms; 0: none), so that a tone recognised ~40 ms after it began
    /// is silenced from its start. Only where `dtmf` is in-band, G.711 and `suppress` is set.
    pub inband_delay_ms: u32,
    /// SDES-SRTP keys of this leg (`None`: plain RTP).
    pub srtp: Option<crate::srtp::LegKeys>,
}

/// How much audio before a tone's recognition is silenced with it (the detector's latency,
/// plus a packet).
const TONE_ONSET: Duration = Duration::from_millis(60);

/// A packet of a delayed leg, waiting in its delay line.
#[derive(Debug)]
struct Delayed {
    /// When it goes on.
    at: Instant,
    /// When it came.
    arrived: Instant,
    /// Part of a suppressed tone: its payload is silenced.
    mute: bool,
    buf: Vec<u8>,
}

/// A digit seen on a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigitEvent {
    /// Leg it came from.
    pub leg: Side,
    /// The digit.
    pub digit: char,
    /// How long it lasted, ms.
    pub duration_ms: u32,
    /// How it came.
    pub method: DtmfMethod,
    /// It was kept from the other leg.
    pub suppressed: bool,
}

/// What the session tells the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A digit ended.
    Digit(DigitEvent),
    /// No RTP from this leg for the configured time.
    Timeout(Side),
    /// What was played to this leg finished (`id` from [`Session::play`]).
    PlayDone(Side, u32),
}

/// Something to play to a leg.
#[derive(Debug)]
pub enum Playable {
    /// Samples at `rate` (a prompt), played once.
    Samples {
        /// Sample rate.
        rate: u32,
        /// Samples (shared with other calls playing the same prompt).
        samples: std::sync::Arc<[i16]>,
    },
    /// A tone cadence, for `limit_ms` (None: until stopped).
    Tone {
        /// The cadence.
        segs: Vec<crate::tone::Segment>,
        /// How long.
        limit_ms: Option<u32>,
    },
    /// The leg hears itself (an echo test), for `limit_ms` (None: until stopped).
    Echo {
        /// How long.
        limit_ms: Option<u32>,
    },
}

/// Counters of one leg, for the call's record and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegStats {
    /// Receive statistics of the current stream.
    pub rx: StreamStats,
    /// Packets sent to the leg.
    pub sent: u64,
    /// Packets received that were not RTP we expect.
    pub dropped: u64,
    /// Jitter buffer counters.
    pub jitter: crate::jitter::JitterStats,
    /// What the leg reports about our stream to it (from its RTCP), and the round trip.
    pub remote: Option<RemoteView>,
    /// SRTP/SRTCP packets from the leg refused: failed authentication, replayed, malformed.
    pub srtp_refused: u64,
    /// Why the last one was (`true`: an SRTCP packet).
    pub srtp_last_refusal: Option<(bool, crate::srtp::SrtpError)>,
}

/// The leg's view of what we send it, from its RTCP receiver reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RemoteView {
    /// Fraction of our packets it lost since its previous report (0..1).
    pub fraction_lost: f64,
    /// Packets of ours it lost in all.
    pub cumulative_lost: i32,
    /// Jitter it measures on our stream, ms.
    pub jitter_ms: f64,
    /// Round-trip time, ms (when the leg echoed one of our SRs).
    pub rtt_ms: Option<f64>,
}

/// How often each leg gets an RTCP report.
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);

enum Source {
    Prompt {
        pos: usize,
        samples: std::sync::Arc<[i16]>,
        resampler: Resampler,
        rate: u32,
        id: u32,
    },
    Tone {
        player: TonePlayer,
        /// Samples left to play (None: until stopped).
        left: Option<usize>,
        id: u32,
    },
    /// The leg's own audio sent back to it (an echo test).
    Echo {
        /// Samples of time left (None: until stopped).
        left: Option<usize>,
        id: u32,
    },
}

#[derive(Default)]
struct Leg {
    media: Option<LegMedia>,
    stats: LegStats,
    last_rx: Option<Instant>,
    /// Receive side.
    jb: JitterBuffer,
    decoder: Option<Box<dyn Decoder>>,
    events_rx: EventReceiver,
    detector: Option<ToneDetector>,
    to8k: Option<Resampler>,
    /// In-band digit being muted (suppressed) on the way to the other leg.
    muting: bool,
    /// The delay line of a leg whose in-band digits are suppressed (empty otherwise).
    delayed: VecDeque<Delayed>,
    /// SDES-SRTP contexts, when the leg is secured.
    srtp: Option<crate::srtp::LegSrtp>,
    /// Send side.
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// When and with which timestamp the last packet went out.
    last_tx: Option<(Instant, u32)>,
    /// (source SSRC, seq offset, ts offset) while forwarding the other leg's packets.
    forward_map: Option<(u32, u16, u32)>,
    encoder: Option<Box<dyn Encoder>>,
    /// Transcoding: the other leg's rate to ours.
    resampler: Option<Resampler>,
    /// Decoded audio from this leg not yet taken by the other leg's tick.
    rx_pcm: Vec<i16>,
    /// Audio waiting to be encoded for this leg (ptime translation).
    tx_pcm: Vec<i16>,
    source: Option<Source>,
    tones: Option<ToneGenerator>,
    event_tx: Option<(EventSender, u32)>,
    pending_digits: VecDeque<(char, u32)>,
    /// When the event being received began (its start packet), for its wall-clock length.
    event_started: Option<Instant>,
    marker: bool,
    /// Rate of the PCM this leg's codec gives and takes.
    pcm_rate: u32,
    /// On hold: its silence is not a timeout.
    silent_ok: bool,
    /// RTCP: what we sent to the leg.
    tx_packets: u32,
    tx_octets: u32,
    /// Middle 32 bits of the NTP time of the leg's last SR, and when it came.
    last_sr: Option<(u32, Instant)>,
    /// (expected, received) at our last report, for the fraction lost.
    prior: (u64, u64),
    next_rtcp: Option<Instant>,
}

impl Leg {
    fn rate(&self) -> u32 {
        self.pcm_rate
    }

    /// (Re)creates the codec at `rate` and forgets audio at the old rate.
    fn set_codec(&mut self, codec: CodecKind, rate: u32, opus_complexity: u8) {
        self.pcm_rate = rate;
        self.decoder = Some(codec.decoder_at(rate));
        self.encoder = Some(codec.encoder_tuned(rate, opus_complexity));
        self.rx_pcm.clear();
        self.tx_pcm.clear();
        self.to8k = (rate != 8000).then(|| Resampler::new(rate, 8000));
    }

    fn frame(&self) -> usize {
        let m = self.media.as_ref();
        (self.rate() * m.map_or(20, |m| m.ptime_ms) / 1000) as usize
    }

    /// The timestamp the next packet should carry after a pause (or a change of source).
    fn resume_ts(&self, now: Instant) -> u32 {
        let clock = self.media.as_ref().map_or(8000, |m| m.codec.clock());
        match self.last_tx {
            Some((at, ts)) => {
                let elapsed = now.saturating_duration_since(at).as_micros() as u64
                    * u64::from(clock)
                    / 1_000_000;
                ts.wrapping_add(elapsed.max(1) as u32)
            }
            None => self.ts,
        }
    }
}

/// A gap in a forwarded stream this long, with its timestamps moving on, is a new talkspurt.
const PAUSE: Duration = Duration::from_millis(60);

/// A gap this long over which the sender's timestamps moved less than half as far: they are
/// restamped from the wall clock (a jitter spike is shorter, and moves them as far).
const STALLED_CLOCK: Duration = Duration::from_millis(250);

/// Digits waiting to be sent to one leg, at most.
pub const MAX_QUEUED_DIGITS: usize = 32;

/// The length (ms) a digit is regenerated at: at least what receivers detect, at most what
/// a key press is.
pub const DIGIT_MS: (u32, u32) = (40, 500);

/// The media of one call.
pub struct Session {
    legs: [Leg; 2],
    rtp_timeout: Option<Duration>,
    opus_complexity: u8,
    epoch: Option<Instant>,
    /// Ticks fall on this grid (every [`TICK`] from it) when set: [`Session::set_tick_grid`].
    grid: Option<Instant>,
    next_tick: Option<Instant>,
    out: VecDeque<(Side, Vec<u8>)>,
    out_rtcp: VecDeque<(Side, Vec<u8>)>,
    /// NTP time (64-bit fixed point) at an instant, for SRs and round trips.
    ntp_origin: Option<(Instant, u64)>,
    cname: String,
    spare: Vec<Vec<u8>>,
    /// A secured leg's packet, decrypted.
    srtp_in: Vec<u8>,
    events: VecDeque<MediaEvent>,
    scratch: Vec<i16>,
    scratch8k: Vec<i16>,
    payload: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("bridged", &self.bridged())
            .finish_non_exhaustive()
    }
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Session {
    /// A session; `seed` randomises SSRCs and initial sequence numbers and timestamps.
    pub fn new(mut seed: u64, rtp_timeout: Option<Duration>) -> Session {
        let mut legs = [Leg::default(), Leg::default()];
        for leg in &mut legs {
            let r = splitmix(&mut seed);
            leg.ssrc = r as u32;
            leg.seq = (r >> 32) as u16;
            leg.ts = splitmix(&mut seed) as u32;
            leg.marker = true;
            leg.pcm_rate = 8000;
        }
        Session {
            legs,
            rtp_timeout,
            opus_complexity: crate::codec::OPUS_COMPLEXITY,
            epoch: None,
            grid: None,
            next_tick: None,
            out: VecDeque::new(),
            out_rtcp: VecDeque::new(),
            ntp_origin: None,
            cname: String::from("switchboard"),
            spare: Vec::new(),
            srtp_in: Vec::new(),
            events: VecDeque::new(),
            scratch: Vec::with_capacity(1920),
            scratch8k: Vec::with_capacity(320),
            payload: Vec::with_capacity(1500),
        }
    }

    fn leg(&mut self, side: Side) -> &mut Leg {
        &mut self.legs[idx(side)]
    }

    /// Sets (or changes, after a re-INVITE) how a leg sends and receives.
    pub fn set_leg(&mut self, now: Instant, side: Side, media: LegMedia) {
        let complexity = self.opus_complexity;
        let leg = self.leg(side);
        if leg.media.as_ref() == Some(&media) {
            return;
        }
        // New keys (a first answer, a re-INVITE with another key): new contexts. A key that
        // stays keeps its context, with its rollover counter, SRTCP index and replay window
        // (a fresh context under a key used already would reuse its keystream).
        match (leg.srtp.as_mut(), &media.srtp) {
            (Some(cur), Some(keys)) => cur.rekey(keys),
            (_, keys) => leg.srtp = keys.clone().map(crate::srtp::LegSrtp::new),
        }
        let codec_changed = leg.media.as_ref().map(|m| m.codec) != Some(media.codec);
        if codec_changed {
            leg.set_codec(media.codec, media.codec.rate(), complexity);
            leg.jb.reset();
        }
        leg.detector = (media.dtmf == DtmfMethod::Inband).then(ToneDetector::new);
        leg.tones = None;
        let delayed = media.inband_delay_ms > 0;
        leg.media = Some(media);
        if !delayed {
            // No delay line any more: what waited in it goes on now.
            for d in leg.delayed.iter_mut() {
                d.at = now;
            }
        }
        self.rewire(now);
        self.release_delayed(now);
    }

    /// Audio flows between the legs as soon as both have negotiated (early media included).
    fn bridged(&self) -> bool {
        self.legs.iter().all(|l| l.media.is_some())
    }

    /// Codec rates and resamplers between the legs when transcoding. An Opus leg bridged to a
    /// narrowband leg runs at 8 kHz: nothing wider can come from there.
    fn rewire(&mut self, now: Instant) {
        let complexity = self.opus_complexity;
        for side in [Side::A, Side::B] {
            let other = self.legs[idx(side.other())].media.as_ref().map(|m| m.codec);
            let leg = self.leg(side);
            if let Some(m) = leg.media.as_ref()
                && m.codec == CodecKind::Opus
            {
                let want = match other {
                    Some(o) if o != CodecKind::Opus && o.rate() < 16000 => 8000,
                    _ => 16000,
                };
                if want != leg.pcm_rate {
                    let codec = m.codec;
                    leg.set_codec(codec, want, complexity);
                }
            }
        }
        for side in [Side::A, Side::B] {
            let from_rate = self.legs[idx(side.other())].rate();
            let leg = self.leg(side);
            let rate = leg.rate();
            leg.resampler = (from_rate != rate).then(|| Resampler::new(from_rate, rate));
            leg.forward_map = None;
        }
        if self.ticking() && self.next_tick.is_none() {
            self.next_tick = Some(self.first_tick(now));
        }
    }

    /// Frames from `from` need decoding (not plain forwarding) to reach the other leg.
    fn transcoding(&self, from: Side) -> bool {
        let (a, b) = (&self.legs[idx(from)], &self.legs[idx(from.other())]);
        match (&a.media, &b.media) {
            (Some(x), Some(y)) => x.codec != y.codec || x.ptime_ms != y.ptime_ms,
            _ => false,
        }
    }

    /// Whether its sockets may be read on its tick rather than on readiness: it ticks, and
    /// nothing it receives goes on before the next tick (transcoded both ways, or legs not
    /// bridged). A relaying, echoing or delaying session forwards packets as they come.
    pub fn reads_on_tick(&self) -> bool {
        self.next_tick.is_some()
            && [Side::A, Side::B].into_iter().all(|from| {
                self.delay_of(from).is_none()
                    && (!self.bridged() || self.transcoding(from))
                    && !matches!(self.legs[idx(from)].source, Some(Source::Echo { .. }))
            })
    }

    /// Whether the tick has work: transcoding, playing, or sending digits.
    fn ticking(&self) -> bool {
        (self.bridged() && (self.transcoding(Side::A) || self.transcoding(Side::B)))
            || self.legs.iter().any(|l| {
                l.source.is_some()
                    || l.event_tx.is_some()
                    || !l.pending_digits.is_empty()
                    || l.tones.as_ref().is_some_and(ToneGenerator::busy)
            })
    }

    /// Plays something to a leg, replacing what played before. Reported with `id` when done.
    pub fn play(&mut self, now: Instant, side: Side, what: Playable, id: u32) {
        let rate = self.leg(side).rate();
        let source = match what {
            Playable::Samples {
                rate: from,
                samples,
            } => Source::Prompt {
                pos: 0,
                samples,
                resampler: Resampler::new(from, rate),
                rate: from,
                id,
            },
            Playable::Tone { segs, limit_ms } => Source::Tone {
                player: TonePlayer::new(segs, rate),
                left: limit_ms.map(|ms| (u64::from(ms) * u64::from(rate) / 1000) as usize),
                id,
            },
            Playable::Echo { limit_ms } => Source::Echo {
                left: limit_ms.map(|ms| (u64::from(ms) * u64::from(rate) / 1000) as usize),
                id,
            },
        };
        let leg = self.leg(side);
        if let Some(old) = leg.source.replace(source) {
            let old_id = match old {
                Source::Prompt { id, .. } | Source::Tone { id, .. } | Source::Echo { id, .. } => id,
            };
            self.events.push_back(MediaEvent::PlayDone(side, old_id));
        }
        let leg = self.leg(side);
        leg.tx_pcm.clear();
        leg.marker = true;
        if self.next_tick.is_none() {
            self.next_tick = Some(self.first_tick(now));
        }
    }

    /// Stops what plays to a leg (no event).
    pub fn stop(&mut self, side: Side) {
        let leg = self.leg(side);
        if leg.source.take().is_some() {
            leg.tx_pcm.clear();
            leg.marker = true;
        }
    }

    /// Something plays to the leg.
    pub fn playing(&self, side: Side) -> bool {
        self.legs[idx(side)].source.is_some()
    }

    /// Sends a digit to a leg in its form (RFC 4733 or in-band; INFO is the core's job).
    pub fn send_digit(&mut self, now: Instant, side: Side, digit: char, ms: u32) {
        let leg = self.leg(side);
        if leg.pending_digits.len() >= MAX_QUEUED_DIGITS {
            // A peer keying faster than digits can be played: the newest is dropped rather
            // than the queue (and the delay of every digit after it) growing.
            leg.stats.dropped += 1;
            return;
        }
        // A duration stamped in the wrong clock (6x at 48 kHz under /8000) or absurd is
        // regenerated at a length receivers take as one key press.
        let ms = ms.clamp(DIGIT_MS.0, DIGIT_MS.1);
        leg.pending_digits.push_back((digit, ms));
        if self.next_tick.is_none() {
            self.next_tick = Some(self.first_tick(now));
        }
    }

    /// The SDES-SRTP suite a leg is secured with (None: plain RTP).
    pub fn srtp_suite(&self, side: Side) -> Option<crate::srtp::Suite> {
        self.legs[idx(side)]
            .srtp
            .as_ref()
            .map(|s| s.keys.ours.suite())
    }

    /// Statistics of a leg.
    pub fn stats(&self, side: Side) -> &LegStats {
        &self.legs[idx(side)].stats
    }

    /// Whether the leg is expected to send (from its SDP): a leg on hold (`recvonly`,
    /// `inactive`, `0.0.0.0`) is never timed out; one that resumes gets the full timeout.
    pub fn set_sending(&mut self, now: Instant, side: Side, sends: bool) {
        let leg = self.leg(side);
        leg.silent_ok = !sends;
        leg.last_rx = Some(now);
    }

    /// Puts this session's ticks on a grid shared with other sessions: every [`TICK`] from
    /// `origin`. Sessions on one grid tick together, so a thread serving many calls wakes
    /// once per tick for all of them, not once per call. The first tick after a pause
    /// still comes at once (due since the last grid point); the ones after it fall on the grid.
    pub fn set_tick_grid(&mut self, origin: Instant) {
        self.grid = Some(origin);
    }

    /// When ticking starts at `now`: now, or the grid point just before it (due at once).
    fn first_tick(&self, now: Instant) -> Instant {
        match self.grid {
            Some(g) if g <= now => {
                let into_tick = now.duration_since(g).as_nanos() % TICK.as_nanos();
                now - Duration::from_nanos(u64::try_from(into_tick).unwrap_or(0))
            }
            _ => now,
        }
    }

    /// Opus encoder complexity (0–10) for legs set from now on.
    pub fn set_opus_complexity(&mut self, c: u8) {
        self.opus_complexity = c.min(10);
    }

    /// Sets the wall clock: `ntp` (NTP 64-bit fixed point) is the time at `at`. Without it
    /// SRs carry no time and round trips are not measured.
    pub fn set_clock(&mut self, at: Instant, ntp: u64, cname: &str) {
        self.ntp_origin = Some((at, ntp));
        self.cname = cname.to_owned();
    }

    fn ntp(&self, now: Instant) -> Option<u64> {
        let (at, ntp) = self.ntp_origin?;
        let d = now.saturating_duration_since(at);
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Some(ntp.wrapping_add((d.as_secs() << 32) | frac))
    }

    /// An RTCP packet arrived from a leg (on its RTCP port, or multiplexed).
    pub fn handle_rtcp(&mut self, now: Instant, from: Side, buf: &[u8]) {
        if let Some(plain) = self.unprotect(from, buf, true) {
            self.handle_plain_rtcp(now, from, &plain);
            self.srtp_in = plain;
        } else if self.legs[idx(from)].srtp.is_none() {
            self.handle_plain_rtcp(now, from, buf);
        }
    }

    /// A secured leg's packet checked and decrypted (`None`: the leg is plain, or the packet
    /// was refused and counted).
    fn unprotect(&mut self, from: Side, buf: &[u8], rtcp: bool) -> Option<Vec<u8>> {
        let leg = &mut self.legs[idx(from)];
        let srtp = leg.srtp.as_mut()?;
        let mut b = std::mem::take(&mut self.srtp_in);
        b.clear();
        b.extend_from_slice(buf);
        let checked = if rtcp {
            srtp.unprotect_rtcp(&mut b)
        } else {
            srtp.rx.unprotect_rtp(&mut b)
        };
        match checked {
            Ok(()) => Some(b),
            Err(e) => {
                leg.stats.srtp_refused += 1;
                leg.stats.srtp_last_refusal = Some((rtcp, e));
                self.srtp_in = b;
                None
            }
        }
    }

    fn handle_plain_rtcp(&mut self, now: Instant, from: Side, buf: &[u8]) {
        let ntp_now = self.ntp(now);
        let leg = &mut self.legs[idx(from)];
        let clock = leg.media.as_ref().map_or(8000, |m| m.codec.clock());
        for r in crate::rtcp::parse(buf) {
            if let Some(s) = r.sender {
                leg.last_sr = Some(((s.ntp >> 16) as u32, now));
            }
            for b in r.blocks.iter().filter(|b| b.ssrc == leg.ssrc) {
                // RFC 3550 §6.4.1: RTT = arrival − LSR − DLSR, in 1/65536 s.
                let rtt_ms = ntp_now.filter(|_| b.lsr != 0).map(|n| {
                    let mid = (n >> 16) as u32;
                    f64::from(mid.wrapping_sub(b.lsr).wrapping_sub(b.dlsr)) * 1000.0 / 65536.0
                });
                leg.stats.remote = Some(RemoteView {
                    fraction_lost: f64::from(b.fraction_lost) / 256.0,
                    cumulative_lost: b.cumulative_lost,
                    jitter_ms: f64::from(b.jitter) * 1000.0 / f64::from(clock.max(1)),
                    rtt_ms: rtt_ms.filter(|r| *r < 60_000.0),
                });
            }
        }
    }

    /// The report for a leg: an SR when we sent it something, else an RR; a block about what
    /// we receive from it when we do.
    fn rtcp_report(&mut self, now: Instant, side: Side) {
        let ntp = self.ntp(now).unwrap_or(0);
        let mut b = self.spare.pop().unwrap_or_default();
        let cname = self.cname.clone();
        let leg = &mut self.legs[idx(side)];
        let sender = (leg.tx_packets > 0).then(|| crate::rtcp::SenderInfo {
            ntp,
            rtp_ts: leg.resume_ts(now),
            packets: leg.tx_packets,
            octets: leg.tx_octets,
        });
        let rx = &leg.stats.rx;
        let block = (rx.packets > 0).then(|| {
            let (expected, received) = (rx.expected(), rx.packets);
            let (de, dr) = (
                expected.saturating_sub(leg.prior.0),
                received.saturating_sub(leg.prior.1),
            );
            leg.prior = (expected, received);
            let fraction = if de == 0 || dr >= de {
                0
            } else {
                ((de - dr) * 256 / de) as u8
            };
            let (lsr, dlsr) = leg.last_sr.map_or((0, 0), |(mid, at)| {
                let d = now.saturating_duration_since(at);
                (mid, (d.as_secs_f64() * 65536.0) as u32)
            });
            crate::rtcp::ReportBlock {
                ssrc: rx.ssrc,
                fraction_lost: fraction,
                cumulative_lost: i32::try_from(rx.lost()).unwrap_or(i32::MAX),
                highest_seq: rx.max_seq as u32,
                jitter: rx.jitter as u32,
                lsr,
                dlsr,
            }
        });
        crate::rtcp::write(&mut b, leg.ssrc, sender, block, &cname);
        self.out_rtcp.push_back((side, b));
    }

    /// Next RTCP packet to send: the leg whose RTCP address it goes to, and the bytes
    /// (SRTCP to a secured leg).
    pub fn poll_rtcp(&mut self) -> Option<(Side, Vec<u8>)> {
        loop {
            let (side, mut b) = self.out_rtcp.pop_front()?;
            let sealed = match self.legs[idx(side)].srtp.as_mut() {
                None => true,
                Some(s) => s.tx.protect_rtcp(&mut b).is_ok(),
            };
            if sealed {
                return Some((side, b));
            }
            self.recycle(b);
        }
    }

    /// An RTP packet (or RTCP multiplexed on the RTP port) arrived from a leg.
    pub fn handle_rtp(&mut self, now: Instant, from: Side, buf: &[u8]) {
        if rtp::is_rtcp(buf) {
            self.handle_rtcp(now, from, buf);
            return;
        }
        if let Some(plain) = self.unprotect(from, buf, false) {
            self.handle_plain_rtp(now, from, &plain);
            self.srtp_in = plain;
        } else if self.legs[idx(from)].srtp.is_none() {
            self.handle_plain_rtp(now, from, buf);
        }
    }

    fn handle_plain_rtp(&mut self, now: Instant, from: Side, buf: &[u8]) {
        if let Some(delay) = self.delay_of(from)
            && let Ok(pkt) = RtpReader::new(buf)
            && self.legs[idx(from)]
                .media
                .as_ref()
                .is_some_and(|m| m.pt == pkt.payload_type())
        {
            // Its tone (if any) is recognised now; the packet goes on after the delay,
            // silenced if it belongs to a suppressed tone.
            self.legs[idx(from)].last_rx = Some(now);
            self.detect_inband(now, from, pkt.payload());
            let mut b = self.spare.pop().unwrap_or_default();
            b.clear();
            b.extend_from_slice(buf);
            let leg = self.leg(from);
            leg.delayed.push_back(Delayed {
                at: now + delay,
                arrived: now,
                mute: leg.muting,
                buf: b,
            });
            return;
        }
        self.take_rtp(now, from, buf, true);
    }

    /// The delay of `from`'s audio (its in-band digits are suppressed), if any.
    fn delay_of(&self, from: Side) -> Option<Duration> {
        let m = self.legs[idx(from)].media.as_ref()?;
        (m.inband_delay_ms > 0
            && m.dtmf == DtmfMethod::Inband
            && !m.suppress.is_empty()
            && matches!(m.codec, CodecKind::Pcmu | CodecKind::Pcma))
        .then(|| Duration::from_millis(u64::from(m.inband_delay_ms)))
    }

    /// Lets the delayed packets that are due go on (in order, silenced where they were part
    /// of a suppressed tone).
    fn release_delayed(&mut self, now: Instant) {
        for side in [Side::A, Side::B] {
            while self.legs[idx(side)]
                .delayed
                .front()
                .is_some_and(|d| d.at <= now)
            {
                let Some(mut d) = self.legs[idx(side)].delayed.pop_front() else {
                    break;
                };
                if d.mute
                    && let Some(silence) = self.legs[idx(side)]
                        .media
                        .as_ref()
                        .and_then(|m| m.codec.silence_byte())
                    && let Ok(start) =
                        RtpReader::new(&d.buf).map(|p| d.buf.len() - p.payload().len())
                {
                    d.buf[start..].fill(silence);
                }
                self.take_rtp(now, side, &d.buf, false);
                self.recycle(d.buf);
            }
        }
    }

    /// An RTP packet of `from`, now (after its delay line, if it has one: `detect` is then
    /// false, the detector saw it on arrival).
    fn take_rtp(&mut self, now: Instant, from: Side, buf: &[u8], detect: bool) {
        let Ok(pkt) = RtpReader::new(buf) else {
            self.leg(from).stats.dropped += 1;
            return;
        };
        let (pt, seq, ts, ssrc) = (
            pkt.payload_type(),
            u16::from(pkt.sequence_number()),
            pkt.timestamp(),
            pkt.ssrc(),
        );
        let payload = pkt.payload();
        let payload_len = payload.len();
        let leg = self.leg(from);
        leg.last_rx = Some(now);
        // The few fields needed, copied: no allocation per packet.
        let Some((media_pt, te, codec, ptime_ms)) = leg
            .media
            .as_ref()
            .map(|m| (m.pt, m.te, m.codec, m.ptime_ms))
        else {
            leg.stats.dropped += 1;
            return;
        };
        if te.is_some_and(|(te, _)| te == pt) {
            let clock = te.map_or(8000, |(_, c)| c);
            // Counted (it was received, not lost) but consumed: the other leg's forwarded
            // numbering closes the gap it leaves (RFC 3550: no hole that is not a loss).
            let new = leg.stats.rx.on_untimed_packet(ssrc, seq);
            if new
                && let Some((s, off, t)) = self.legs[idx(from.other())].forward_map
                && s == ssrc
            {
                self.legs[idx(from.other())].forward_map = Some((s, off.wrapping_sub(1), t));
            }
            let leg = self.leg(from);
            match leg.events_rx.on_packet(ts, payload) {
                EventOutcome::Ended {
                    digit, duration, ..
                } => {
                    let stamped = u32::from(duration) * 1000 / clock.max(1);
                    let wall = leg
                        .event_started
                        .take()
                        .map(|t| now.saturating_duration_since(t).as_millis() as u32);
                    let ms = sane_digit_ms(stamped, u32::from(duration), clock, wall);
                    self.digit(now, from, digit, ms, DtmfMethod::Rfc4733);
                }
                EventOutcome::Started(_) => leg.event_started = Some(now),
                EventOutcome::Nothing => {}
            }
            return;
        }
        if pt != media_pt {
            leg.stats.dropped += 1;
            return;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = units_since(epoch, now, codec.clock());
        let leg = self.leg(from);
        if leg.stats.rx.packets > 0 && leg.stats.rx.ssrc != ssrc {
            // A new source (re-INVITE, a switch behind the leg): its numbering starts over.
            leg.jb.reset();
        }
        let ext = leg.stats.rx.on_packet(ssrc, seq, ts, arrival);
        leg.next_rtcp.get_or_insert(now + RTCP_INTERVAL);
        if let Some(EventOutcome::Ended {
            digit, duration, ..
        }) = leg.events_rx.on_audio()
        {
            let clock = te.map_or(8000, |(_, c)| c);
            let ms = u32::from(duration) * 1000 / clock.max(1);
            self.digit(now, from, digit, ms, DtmfMethod::Rfc4733);
        }
        if detect {
            self.detect_inband(now, from, payload);
        }
        if matches!(self.legs[idx(from)].source, Some(Source::Echo { .. })) {
            // Back where it came from, as our own stream (SSRC, sequence).
            let mut b = self.spare.pop().unwrap_or_default();
            b.clear();
            b.extend_from_slice(buf);
            let leg = self.leg(from);
            rtp::patch(&mut b, media_pt, leg.seq, ts, leg.ssrc);
            leg.seq = leg.seq.wrapping_add(1);
            leg.ts = ts;
            leg.last_tx = Some((now, ts));
            leg.stats.sent += 1;
            leg.tx_packets = leg.tx_packets.wrapping_add(1);
            leg.tx_octets = leg.tx_octets.wrapping_add(payload_len as u32);
            self.out.push_back((from, b));
            return;
        }
        if !self.bridged() {
            return;
        }
        if self.transcoding(from) {
            let leg = self.leg(from);
            let frame = f64::from(ptime_ms.max(10)) * f64::from(codec.clock()) / 1000.0;
            leg.jb.set_jitter(leg.stats.rx.jitter / frame);
            leg.jb.push(ext, ts, payload);
            leg.stats.jitter = leg.jb.stats;
            return;
        }
        // Same codec: forward with the other leg's sequencer. (A delayed leg's packets were
        // silenced in its delay line.)
        let muting = self.legs[idx(from)].muting && detect;
        let silence = codec.silence_byte();
        let mut b = self.spare.pop().unwrap_or_default();
        let to = &mut self.legs[idx(from.other())];
        let Some(out_media) = to.media.as_ref() else {
            return;
        };
        if to.source.is_some()
            || to.event_tx.is_some()
            || to.tones.as_ref().is_some_and(ToneGenerator::busy)
        {
            return;
        }
        let out_pt = out_media.pt;
        let (seq_off, ts_off) = match to.forward_map {
            Some((s, so, to_)) if s == ssrc => (so, to_),
            _ => {
                // A new source: go on from where this leg's stream was.
                let next_ts = to.resume_ts(now);
                let m = (ssrc, to.seq.wrapping_sub(seq), next_ts.wrapping_sub(ts));
                to.forward_map = Some(m);
                to.marker = true;
                (m.1, m.2)
            }
        };
        let out_seq = seq.wrapping_add(seq_off);
        let mut out_ts = ts.wrapping_add(ts_off);
        // After a pause in what this leg was sent (the sender's hold or silence), the next
        // packet starts a talkspurt: marked (the sender may not mark it: baresip does not),
        // and stamped by the wall clock when the sender's clock stood still meanwhile.
        if let Some((at, last_ts)) = to.last_tx {
            let clock = u64::from(codec.clock());
            let frame = u64::from(ptime_ms.max(10)) * clock / 1000;
            let gap = now.saturating_duration_since(at);
            let wall = gap.as_micros() as u64 * clock / 1_000_000;
            let step = u64::from(out_ts.wrapping_sub(last_ts));
            if step < 0x8000_0000 && gap >= PAUSE && step > 2 * frame {
                to.marker = true;
            }
            if gap >= STALLED_CLOCK && step < wall / 2 {
                let next_ts = to.resume_ts(now);
                if let Some(m) = to.forward_map.as_mut() {
                    m.2 = next_ts.wrapping_sub(ts);
                }
                out_ts = next_ts;
                to.marker = true;
            }
        }
        b.clear();
        b.extend_from_slice(buf);
        rtp::patch(&mut b, out_pt, out_seq, out_ts, to.ssrc);
        if std::mem::take(&mut to.marker) {
            b[1] |= 0x80;
        }
        if muting && let Some(s) = silence {
            let start = b.len() - payload.len();
            b[start..].fill(s);
        }
        if out_seq.wrapping_sub(to.seq) < 0x8000 {
            to.seq = out_seq.wrapping_add(1);
            to.ts = out_ts;
            to.last_tx = Some((now, out_ts));
        }
        to.stats.sent += 1;
        to.tx_packets = to.tx_packets.wrapping_add(1);
        to.tx_octets = to.tx_octets.wrapping_add(payload.len() as u32);
        to.next_rtcp.get_or_insert(now + RTCP_INTERVAL);
        self.out.push_back((from.other(), b));
    }

    fn detect_inband(&mut self, now: Instant, from: Side, payload: &[u8]) {
        let leg = &mut self.legs[idx(from)];
        let Some(det) = leg.detector.as_mut() else {
            return;
        };
        let Some(media) = leg.media.as_ref() else {
            return;
        };
        // A throwaway decoder: the real one keeps its concealment state for the jitter path.
        self.scratch.clear();
        match media.codec {
            CodecKind::Pcmu => crate::g711::decode_ulaw(payload, &mut self.scratch),
            CodecKind::Pcma => crate::g711::decode_alaw(payload, &mut self.scratch),
            // Other codecs would need a second decoder: in-band digits are a G.711 affair.
            _ => return,
        }
        let audio: &[i16] = if let Some(r) = leg.to8k.as_mut() {
            self.scratch8k.clear();
            r.process(&self.scratch, &mut self.scratch8k);
            &self.scratch8k
        } else {
            &self.scratch
        };
        det.feed(audio);
        while let Some(ev) = det.poll() {
            match ev {
                ToneEvent::Start(d) => {
                    if leg.media.as_ref().is_some_and(|m| m.suppress.contains(d)) {
                        leg.muting = true;
                        // The tone began before it was recognised: what of it waits in the
                        // delay line is silenced too.
                        let since = now.checked_sub(TONE_ONSET).unwrap_or(now);
                        for p in leg.delayed.iter_mut().filter(|p| p.arrived >= since) {
                            p.mute = true;
                        }
                    }
                }
                ToneEvent::End(d, ms) => {
                    leg.muting = false;
                    self.digit(now, from, d, ms, DtmfMethod::Inband);
                    return;
                }
            }
        }
    }

    /// A digit finished on `from`: report it and, unless suppressed, regenerate it on the
    /// other leg in that leg's form.
    fn digit(&mut self, now: Instant, from: Side, digit: char, ms: u32, method: DtmfMethod) {
        let suppressed = self.legs[idx(from)]
            .media
            .as_ref()
            .is_some_and(|m| m.suppress.contains(digit));
        self.events.push_back(MediaEvent::Digit(DigitEvent {
            leg: from,
            digit,
            duration_ms: ms,
            method,
            suppressed,
        }));
        if suppressed || !self.bridged() {
            return;
        }
        let to = from.other();
        let same_inband = method == DtmfMethod::Inband
            && self.legs[idx(to)]
                .media
                .as_ref()
                .is_some_and(|m| m.dtmf == DtmfMethod::Inband)
            && !self.transcoding(from);
        // An in-band digit forwarded untouched is already in the other leg's audio.
        if !same_inband
            && self.legs[idx(to)]
                .media
                .as_ref()
                .is_some_and(|m| m.dtmf != DtmfMethod::Info)
        {
            self.send_digit(now, to, digit, ms);
        }
    }

    /// Runs the tick: generated and transcoded frames, digits being sent, timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.release_delayed(now);
        if let Some(t) = self.rtp_timeout {
            for side in [Side::A, Side::B] {
                let leg = self.leg(side);
                if leg.media.is_some()
                    && !leg.silent_ok
                    && let Some(last) = leg.last_rx
                    && now.saturating_duration_since(last) >= t
                {
                    leg.last_rx = None;
                    self.events.push_back(MediaEvent::Timeout(side));
                }
            }
        }
        for side in [Side::A, Side::B] {
            if self.legs[idx(side)].next_rtcp.is_some_and(|t| t <= now) {
                self.rtcp_report(now, side);
                self.legs[idx(side)].next_rtcp = Some(now + RTCP_INTERVAL);
            }
        }
        let Some(tick) = self.next_tick else {
            return;
        };
        if now < tick {
            return;
        }
        for side in [Side::A, Side::B] {
            self.tick_leg(now, side);
        }
        self.next_tick = if self.ticking() {
            // Catch up at most one tick; a stalled shell does not get a burst.
            Some((tick + TICK).max(now - TICK / 2))
        } else {
            None
        };
    }

    fn tick_leg(&mut self, now: Instant, side: Side) {
        let from = side.other();
        let transcode = self.bridged() && self.transcoding(from);
        // A delayed leg's tones were silenced in its delay line, not here.
        let mute_flag = self.delay_of(from).is_none();
        let Session {
            legs,
            scratch,
            payload,
            events,
            out,
            spare,
            ..
        } = self;
        let (l0, l1) = legs.split_at_mut(1);
        let (leg, other) = match side {
            Side::A => (&mut l0[0], &mut l1[0]),
            Side::B => (&mut l1[0], &mut l0[0]),
        };
        let Some((dtmf, te, pt, codec)) = leg.media.as_ref().map(|m| (m.dtmf, m.te, m.pt, m.codec))
        else {
            return;
        };
        let rate = leg.rate();
        // Digits queued for this leg.
        if leg.event_tx.is_none()
            && let Some((d, ms)) = leg.pending_digits.pop_front()
        {
            match (dtmf, te) {
                (DtmfMethod::Rfc4733, Some((_, clock))) => {
                    if let Some(s) = EventSender::new(d, ms, clock, 20) {
                        let ts = leg.resume_ts(now);
                        leg.event_tx = Some((s, ts));
                        // Media time goes on from the event's start at wall-clock pace:
                        // what follows the digit resumes where the clock is, not at its start.
                        leg.last_tx = Some((now, ts));
                    }
                }
                _ => leg
                    .tones
                    .get_or_insert_with(|| ToneGenerator::new(rate))
                    .push(d, ms),
            }
        }
        let frame = (rate / 50) as usize; // one tick
        let mut produced = false;
        scratch.clear();
        match leg.source.as_mut() {
            Some(Source::Prompt {
                pos,
                samples,
                resampler,
                rate: from_rate,
                id,
            }) => {
                // Enough input for one output frame at the leg's rate.
                let need =
                    (frame as u64 * u64::from(*from_rate)).div_ceil(u64::from(rate)) as usize;
                let end = (*pos + need.max(1)).min(samples.len());
                resampler.process(&samples[*pos..end], scratch);
                *pos = end;
                if *pos >= samples.len() {
                    let id = *id;
                    leg.source = None;
                    events.push_back(MediaEvent::PlayDone(side, id));
                }
                produced = true;
            }
            Some(Source::Tone { player, left, id }) => {
                let n = left.map_or(frame, |l| l.min(frame));
                scratch.resize(n, 0);
                player.fill(scratch);
                produced = true;
                if let Some(l) = left {
                    *l -= n;
                    if *l == 0 {
                        let id = *id;
                        leg.source = None;
                        events.push_back(MediaEvent::PlayDone(side, id));
                    }
                }
            }
            Some(Source::Echo { left: Some(l), id }) => {
                // The audio is looped in handle_rtp; the tick only counts the time.
                *l = l.saturating_sub(frame);
                if *l == 0 {
                    let id = *id;
                    leg.source = None;
                    events.push_back(MediaEvent::PlayDone(side, id));
                }
            }
            Some(Source::Echo { left: None, .. }) => {}
            None if transcode => {
                let from_frame = (other.rate() / 50) as usize;
                while other.rx_pcm.len() < from_frame {
                    let Some(dec) = other.decoder.as_mut() else {
                        break;
                    };
                    let lost = match other.jb.pop() {
                        Pop::Packet(_, p) => {
                            dec.decode(p, &mut other.rx_pcm);
                            false
                        }
                        Pop::Lost => true,
                        Pop::Empty => break,
                    };
                    if lost {
                        // Rebuilt from the next packet's FEC when it is here, else concealed.
                        match other.jb.peek() {
                            Some(next) => dec.recover(next, from_frame, &mut other.rx_pcm),
                            None => dec.conceal(from_frame, &mut other.rx_pcm),
                        }
                    }
                }
                other.stats.jitter = other.jb.stats;
                if other.rx_pcm.len() >= from_frame {
                    let chunk = &other.rx_pcm[..from_frame];
                    if other.muting && mute_flag {
                        scratch.resize(frame, 0);
                    } else if let Some(r) = leg.resampler.as_mut() {
                        r.process(chunk, scratch);
                    } else {
                        scratch.extend_from_slice(chunk);
                    }
                    other.rx_pcm.drain(..from_frame);
                    produced = true;
                }
            }
            None => {}
        }
        if let Some(g) = leg.tones.as_mut()
            && g.busy()
        {
            scratch.resize(frame.max(scratch.len()), 0);
            g.fill(scratch);
            produced = true;
        }
        // RFC 4733 packets take the place of audio while a digit is sent.
        if let Some((sender, ev_ts)) = leg.event_tx.as_mut() {
            let (te_pt, _) = te.unwrap_or((101, 8000));
            let ev_ts = *ev_ts;
            match sender.next_packet() {
                Some((p, marker)) => {
                    let mut b = spare.pop().unwrap_or_default();
                    rtp::write(&mut b, te_pt, marker, leg.seq, ev_ts, leg.ssrc, &p);
                    leg.seq = leg.seq.wrapping_add(1);
                    leg.stats.sent += 1;
                    leg.tx_packets = leg.tx_packets.wrapping_add(1);
                    leg.tx_octets = leg.tx_octets.wrapping_add(4);
                    out.push_back((side, b));
                }
                None => {
                    leg.event_tx = None;
                    leg.marker = true;
                    leg.forward_map = None;
                }
            }
            return;
        }
        if !produced {
            return;
        }
        leg.tx_pcm.extend_from_slice(scratch);
        let ptime_frame = leg.frame();
        while leg.tx_pcm.len() >= ptime_frame {
            // Nothing sent for three frames (hold, DTX, a source that paused): a new
            // talkspurt, marked, its timestamp where the clock is (RFC 3550 §5.1).
            let gap = leg.last_tx.is_some_and(|(at, _)| {
                now.saturating_duration_since(at)
                    > Duration::from_millis(3 * u64::from(ptime_ms_of(leg)))
            });
            if gap {
                leg.marker = true;
            }
            let ts = if leg.forward_map.take().is_some() || leg.last_tx.is_none() || leg.marker {
                leg.resume_ts(now)
            } else {
                leg.ts
            };
            let Some(enc) = leg.encoder.as_mut() else {
                break;
            };
            enc.encode(&leg.tx_pcm[..ptime_frame], payload);
            leg.tx_pcm.drain(..ptime_frame);
            if payload.is_empty() {
                continue;
            }
            let mut b = spare.pop().unwrap_or_default();
            let marker = std::mem::take(&mut leg.marker);
            rtp::write(&mut b, pt, marker, leg.seq, ts, leg.ssrc, payload);
            leg.seq = leg.seq.wrapping_add(1);
            leg.last_tx = Some((now, ts));
            leg.ts = ts.wrapping_add(
                (ptime_frame as u64 * u64::from(codec.clock()) / u64::from(leg.pcm_rate)) as u32,
            );
            leg.stats.sent += 1;
            leg.tx_packets = leg.tx_packets.wrapping_add(1);
            leg.tx_octets = leg.tx_octets.wrapping_add(payload.len() as u32);
            leg.next_rtcp.get_or_insert(now + RTCP_INTERVAL);
            out.push_back((side, b));
        }
    }

    /// Next packet to send: the leg whose remote address it goes to, and the bytes (SRTP
    /// to a secured leg).
    pub fn poll_transmit(&mut self) -> Option<(Side, Vec<u8>)> {
        loop {
            let (side, mut b) = self.out.pop_front()?;
            let sealed = match self.legs[idx(side)].srtp.as_mut() {
                None => true,
                Some(s) => s.tx.protect_rtp(&mut b).is_ok(),
            };
            if sealed {
                return Some((side, b));
            }
            self.recycle(b);
        }
    }

    /// Gives a sent packet's buffer back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < 16 {
            self.spare.push(buf);
        }
    }

    /// Next event for the core.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// When to call [`Session::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.rtp_timeout.and_then(|t| {
            self.legs
                .iter()
                .filter(|l| l.media.is_some() && !l.silent_ok)
                .filter_map(|l| l.last_rx.map(|r| r + t))
                .min()
        });
        [
            self.next_tick,
            timeout,
            self.legs[0].next_rtcp,
            self.legs[1].next_rtcp,
            self.legs[0].delayed.front().map(|d| d.at),
            self.legs[1].delayed.front().map(|d| d.at),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A received digit's length (ms) from its stamped duration, checked against how long its
/// packets took to arrive (`wall`, when the event's start was seen): a sender that stamps a
/// `/8000` telephone-event in 48 kHz units (baresip on Opus: 8640 for 180 ms) is read at 48
/// kHz; any other duration far past the wall clock is cut to it.
fn sane_digit_ms(stamped: u32, duration: u32, clock: u32, wall: Option<u32>) -> u32 {
    let Some(wall) = wall else {
        return stamped;
    };
    // The start packet already carried some duration: the event is at least a packet longer.
    let longest = wall + 60;
    if stamped <= longest.saturating_mul(2) {
        return stamped;
    }
    if clock == 8000 {
        let at_48k = duration * 1000 / 48000;
        if at_48k <= longest.saturating_mul(2) {
            return at_48k;
        }
    }
    longest
}

/// A leg's packet time (ms), 20 when unknown.
fn ptime_ms_of(leg: &Leg) -> u32 {
    leg.media.as_ref().map_or(20, |m| m.ptime_ms.max(10))
}

/// `now` in units of a clock since `epoch`.
fn units_since(epoch: Instant, now: Instant, clock: u32) -> u64 {
    now.saturating_duration_since(epoch).as_micros() as u64 * u64::from(clock) / 1_000_000
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;
    use crate::dtmf::{Event, goertzel_power};
    use crate::resample::tests::{rms, sine};

    fn leg(codec: CodecKind, dtmf: DtmfMethod, suppress: &str) -> LegMedia {
        LegMedia {
            inband_delay_ms: 0,
            srtp: None,
            codec,
            pt: codec.static_pt().unwrap_or(96),
            ptime_ms: 20,
            te: Some((101, 8000)),
            dtmf,
            suppress: suppress.into(),
        }
    }

    struct Rig {
        s: Session,
        now: Instant,
        seq: u16,
        ts: u32,
        sent: Vec<(Side, Vec<u8>)>,
        events: Vec<MediaEvent>,
    }

    impl Rig {
        fn new(a: LegMedia, b: LegMedia) -> Rig {
            let now = Instant::now();
            let mut s = Session::new(7, Some(Duration::from_secs(5)));
            s.set_leg(now, Side::A, a);
            s.set_leg(now, Side::B, b);
            Rig {
                s,
                now,
                seq: 1,
                ts: 0,
                sent: vec![],
                events: vec![],
            }
        }

        /// 20 ms of time: a packet from `side` (if any), then the tick.
        fn step(&mut self, side: Side, pt: u8, payload: Option<&[u8]>) {
            if let Some(p) = payload {
                let mut b = Vec::new();
                rtp::write(&mut b, pt, false, self.seq, self.ts, 99, p);
                self.s.handle_rtp(self.now, side, &b);
            }
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(160);
            self.now += TICK;
            self.s.handle_timeout(self.now);
            while let Some(p) = self.s.poll_transmit() {
                self.sent.push(p);
            }
            while let Some(e) = self.s.poll_event() {
                self.events.push(e);
            }
        }

        fn audio_to(&self, side: Side, codec: CodecKind) -> Vec<i16> {
            let mut dec = codec.decoder();
            let mut out = Vec::new();
            for (s, b) in &self.sent {
                let r = RtpReader::new(b).unwrap();
                if *s == side && r.payload_type() == codec.static_pt().unwrap() {
                    dec.decode(r.payload(), &mut out);
                }
            }
            out
        }

        fn events_to(&self, side: Side) -> Vec<Event> {
            self.sent
                .iter()
                .filter(|(s, _)| *s == side)
                .filter_map(|(_, b)| {
                    let r = RtpReader::new(b).unwrap();
                    (r.payload_type() == 101).then(|| Event::parse(r.payload()).unwrap())
                })
                .collect()
        }
    }

    fn encode(codec: CodecKind, pcm: &[i16]) -> Vec<Vec<u8>> {
        let mut enc = codec.encoder();
        pcm.chunks(160)
            .map(|c| {
                let mut p = Vec::new();
                enc.encode(c, &mut p);
                p
            })
            .collect()
    }

    #[test]
    fn pcma_to_pcmu_is_transcoded_and_the_tone_keeps_its_frequency() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcma, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        for p in encode(CodecKind::Pcma, &sine(1000.0, 8000, 8000, 8000.0)) {
            rig.step(Side::A, 8, Some(&p));
        }
        // Everything it receives waits for its tick: its sockets may be read on the tick.
        assert!(rig.s.reads_on_tick());
        let out = rig.audio_to(Side::B, CodecKind::Pcmu);
        assert!(out.len() >= 7000, "{} samples reached B", out.len());
        let steady = &out[800..];
        assert!(goertzel_power(steady, 1000.0, 8000.0) > 0.9 * rms(steady).powi(2));
        // B's stream is continuous: sequence numbers +1, timestamps +160, one SSRC.
        let hdrs: Vec<(u16, u32, u32)> = rig
            .sent
            .iter()
            .map(|(_, b)| {
                let r = RtpReader::new(b).unwrap();
                (u16::from(r.sequence_number()), r.timestamp(), r.ssrc())
            })
            .collect();
        for w in hdrs.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1));
            assert_eq!(w[1].1, w[0].1.wrapping_add(160));
            assert_eq!(w[1].2, w[0].2);
        }
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_browser_to_pcmu_call_center_is_transcoded_with_48khz_timestamps() {
        let opus = LegMedia {
            inband_delay_ms: 0,
            srtp: None,
            codec: CodecKind::Opus,
            pt: 111,
            ptime_ms: 20,
            te: Some((126, 48000)),
            dtmf: DtmfMethod::Rfc4733,
            suppress: String::new(),
        };
        let mut rig = Rig::new(opus, leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""));
        // The browser sends 1 s of a 700 Hz tone.
        let mut enc = CodecKind::Opus.encoder();
        let tone = sine(700.0, 16000, 16000, 8000.0);
        for f in tone.chunks(320) {
            let mut p = Vec::new();
            enc.encode(f, &mut p);
            rig.step(Side::A, 111, Some(&p));
        }
        let at_b = rig.audio_to(Side::B, CodecKind::Pcmu);
        assert!(at_b.len() >= 7000, "{} samples", at_b.len());
        let steady = &at_b[1600..];
        assert!(goertzel_power(steady, 700.0, 8000.0) > 0.8 * rms(steady).powi(2));
        // And the call center's PCMU comes back as Opus with 48 kHz timestamps.
        rig.sent.clear();
        for p in encode(CodecKind::Pcmu, &sine(500.0, 8000, 4000, 8000.0)) {
            rig.step(Side::B, 0, Some(&p));
        }
        let to_a: Vec<_> = rig
            .sent
            .iter()
            .filter(|(s, _)| *s == Side::A)
            .map(|(_, b)| RtpReader::new(b).unwrap())
            .collect();
        assert!(to_a.len() >= 20 && to_a.iter().all(|r| r.payload_type() == 111));
        for w in to_a.windows(2) {
            assert_eq!(w[1].timestamp().wrapping_sub(w[0].timestamp()), 960);
        }
        let mut dec = CodecKind::Opus.decoder();
        let mut pcm = Vec::new();
        for r in &to_a {
            dec.decode(r.payload(), &mut pcm);
        }
        let steady = &pcm[3200..];
        assert!(goertzel_power(steady, 500.0, 16000.0) > 0.8 * rms(steady).powi(2));
    }

    #[test]
    fn same_codec_is_forwarded_with_headers_rewritten_and_payload_untouched() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        rig.step(Side::A, 0, Some(&[0x12; 160]));
        rig.step(Side::A, 0, Some(&[0x34; 160]));
        assert_eq!(rig.sent.len(), 2);
        // Each packet goes on as it comes: read on readiness, even while a digit is sent.
        assert!(!rig.s.reads_on_tick());
        rig.s.send_digit(rig.now, Side::B, '5', 100);
        assert!(!rig.s.reads_on_tick());
        let r = RtpReader::new(&rig.sent[1].1).unwrap();
        assert_eq!(r.payload(), &[0x34; 160][..]);
        assert_ne!(r.ssrc(), 99, "B hears the switch's SSRC");
        assert!(
            RtpReader::new(&rig.sent[0].1).unwrap().mark(),
            "marker at the start"
        );
    }

    #[test]
    fn rfc4733_digit_is_reported_and_regenerated_on_the_other_leg() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        // Chromium style: three end packets, no start.
        let end = Event {
            event: 5,
            end: true,
            volume: 10,
            duration: 800,
        }
        .to_bytes();
        for _ in 0..3 {
            rig.step(Side::B, 101, Some(&end));
            rig.ts = rig.ts.wrapping_sub(160); // redundant ends share the event's timestamp
        }
        for _ in 0..10 {
            rig.step(Side::B, 0, None);
        }
        assert_eq!(
            rig.events,
            vec![MediaEvent::Digit(DigitEvent {
                leg: Side::B,
                digit: '5',
                duration_ms: 100,
                method: DtmfMethod::Rfc4733,
                suppressed: false
            })]
        );
        let evs = rig.events_to(Side::A);
        assert!(evs.iter().all(|e| e.event == 5));
        assert_eq!(evs.iter().filter(|e| e.end).count(), 3);
        assert_eq!(evs.last().unwrap().duration, 800);
    }

    #[test]
    fn suppressed_digit_is_reported_but_never_reaches_the_other_leg() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, "*#"),
        );
        let ev = |e: u8, end| {
            Event {
                event: e,
                end,
                volume: 10,
                duration: 480,
            }
            .to_bytes()
        };
        rig.step(Side::B, 101, Some(&ev(10, false)));
        rig.ts = rig.ts.wrapping_sub(160); // same event timestamp
        rig.step(Side::B, 101, Some(&ev(10, true)));
        for _ in 0..10 {
            rig.step(Side::B, 0, None);
        }
        assert!(
            matches!(&rig.events[..], [MediaEvent::Digit(d)] if d.digit == '*' && d.suppressed)
        );
        assert!(
            rig.events_to(Side::A).is_empty(),
            "no event packet reached A"
        );
    }

    #[test]
    fn inband_digit_is_detected_converted_to_rfc4733_and_suppressed_tones_are_muted() {
        let mut tone = vec![0i16; 2400];
        let mut g = crate::dtmf::ToneGenerator::new(8000);
        g.push('7', 200);
        g.fill(&mut tone);
        let mut audio = vec![0i16; 1600];
        audio.extend(tone.clone());
        audio.extend(vec![0i16; 1600]);
        // B is a plain phone sending tones; A takes RFC 4733.
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Inband, ""),
        );
        for p in encode(CodecKind::Pcmu, &audio) {
            rig.step(Side::B, 0, Some(&p));
        }
        assert!(
            matches!(&rig.events[..], [MediaEvent::Digit(d)] if d.digit == '7' && d.method == DtmfMethod::Inband && (150..=260).contains(&d.duration_ms)),
            "{:?}",
            rig.events
        );
        assert!(rig.events_to(Side::A).iter().any(|e| e.event == 7 && e.end));

        // Same again with 7 suppressed: A's audio keeps at most a short leak of the tone.
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Inband, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Inband, "7"),
        );
        for p in encode(CodecKind::Pcmu, &audio) {
            rig.step(Side::B, 0, Some(&p));
        }
        assert!(matches!(&rig.events[..], [MediaEvent::Digit(d)] if d.suppressed));
        let heard = rig.audio_to(Side::A, CodecKind::Pcmu);
        let mut det = crate::dtmf::ToneDetector::new();
        det.feed(&heard);
        det.feed(&[0; 800]);
        assert_eq!(det.poll(), None, "A's detector hears no digit");
        let loud = heard.chunks(160).filter(|c| rms(c) > 1000.0).count();
        assert!(loud <= 2, "{loud} frames of tone leaked");
    }

    #[test]
    fn a_delay_line_cuts_a_suppressed_tone_from_its_first_packet_and_keeps_the_stream_whole() {
        let speech = |n| sine(300.0, 8000, n, 3000.0);
        let mut tone = vec![0i16; 2400];
        let mut g = crate::dtmf::ToneGenerator::new(8000);
        g.push('7', 200);
        g.fill(&mut tone);
        let mut audio = speech(1600);
        audio.extend(tone);
        audio.extend(speech(1600));
        let mut b = leg(CodecKind::Pcmu, DtmfMethod::Inband, "0123456789*#ABCD");
        b.inband_delay_ms = 60;
        let mut rig = Rig::new(leg(CodecKind::Pcmu, DtmfMethod::Inband, ""), b);
        let packets = encode(CodecKind::Pcmu, &audio);
        let fed = packets.len();
        // Its delay line releases packets on their own times, not the tick's.
        assert!(!rig.s.reads_on_tick());
        for (i, p) in packets.iter().enumerate() {
            rig.step(Side::B, 0, Some(p));
            if i == 1 {
                assert!(
                    rig.sent.iter().all(|(s, _)| *s != Side::A),
                    "nothing reaches A before the delay"
                );
            }
        }
        for _ in 0..5 {
            rig.step(Side::B, 0, None);
        }
        assert!(
            matches!(&rig.events[..], [MediaEvent::Digit(d)] if d.digit == '7' && d.suppressed),
            "{:?}",
            rig.events
        );
        // Every packet reaches A, numbered in a row.
        let seqs: Vec<u16> = rig
            .sent
            .iter()
            .filter(|(s, _)| *s == Side::A)
            .map(|(_, b)| u16::from(RtpReader::new(b).unwrap().sequence_number()))
            .collect();
        assert_eq!(seqs.len(), fed);
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{seqs:?}"
        );
        // No tone at all in A's audio; the speech around it is there (at most the 60 ms
        // before the tone's recognition are silenced with it).
        let heard = rig.audio_to(Side::A, CodecKind::Pcmu);
        let mut det = crate::dtmf::ToneDetector::new();
        det.feed(&heard);
        det.feed(&[0; 800]);
        assert_eq!(det.poll(), None, "A's detector hears no digit");
        let frames: Vec<&[i16]> = heard.chunks(160).collect();
        let tone_frames = &frames[10..20];
        assert!(
            tone_frames.iter().all(|c| rms(c) < 100.0),
            "the tone is silenced from its first packet: {:?}",
            tone_frames
                .iter()
                .map(|c| rms(c) as u32)
                .collect::<Vec<_>>()
        );
        let speech_kept = frames[..10]
            .iter()
            .chain(&frames[25..])
            .filter(|c| rms(c) > 1000.0)
            .count();
        assert!(speech_kept >= 17, "speech kept: {speech_kept} of 20 frames");
    }

    #[test]
    fn prompt_plays_at_the_legs_rate_then_reports_done() {
        let now = Instant::now();
        let mut s = Session::new(1, None);
        s.set_leg(now, Side::A, leg(CodecKind::Pcma, DtmfMethod::Rfc4733, ""));
        let samples: std::sync::Arc<[i16]> = sine(440.0, 16000, 16000, 8000.0).into();
        s.play(
            now,
            Side::A,
            Playable::Samples {
                rate: 16000,
                samples,
            },
            9,
        );
        let mut t = now;
        let mut packets = Vec::new();
        let mut done = None;
        for i in 0..80 {
            s.handle_timeout(t);
            while let Some((side, b)) = s.poll_transmit() {
                assert_eq!(side, Side::A);
                packets.push(b);
            }
            if let Some(e) = s.poll_event() {
                done.get_or_insert((i, e));
            }
            t = s.poll_timeout().unwrap_or(t + TICK);
        }
        assert_eq!(done, Some((49, MediaEvent::PlayDone(Side::A, 9))));
        assert_eq!(packets.len(), 50, "1 s of audio in 20 ms packets");
        let mut dec = CodecKind::Pcma.decoder();
        let mut pcm = Vec::new();
        for b in &packets {
            dec.decode(RtpReader::new(b).unwrap().payload(), &mut pcm);
        }
        assert!(goertzel_power(&pcm[400..], 440.0, 8000.0) > 0.9 * rms(&pcm[400..]).powi(2));
    }

    #[test]
    fn sessions_on_one_grid_tick_together_and_start_at_once() {
        let grid = Instant::now();
        let prompt = |s: &mut Session, at: Instant| {
            s.set_tick_grid(grid);
            s.set_leg(at, Side::A, leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""));
            let samples: std::sync::Arc<[i16]> = sine(440.0, 8000, 8000, 8000.0).into();
            s.play(
                at,
                Side::A,
                Playable::Samples {
                    rate: 8000,
                    samples,
                },
                1,
            );
        };
        let (mut s1, mut s2) = (Session::new(1, None), Session::new(2, None));
        let (t1, t2) = (
            grid + Duration::from_millis(3),
            grid + Duration::from_millis(57),
        );
        prompt(&mut s1, t1);
        prompt(&mut s2, t2);
        for (s, t) in [(&mut s1, t1), (&mut s2, t2)] {
            // Due at once: the first frame does not wait for the grid.
            assert!(s.poll_timeout().is_some_and(|w| w <= t));
            s.handle_timeout(t);
            assert!(
                s.poll_transmit().is_some(),
                "the first frame leaves at once"
            );
        }
        // The ticks after it fall on the grid, the same instants for both sessions.
        assert_eq!(s1.poll_timeout(), Some(grid + TICK));
        assert_eq!(s2.poll_timeout(), Some(grid + 3 * TICK));
        let at = grid + 3 * TICK;
        s1.handle_timeout(grid + TICK);
        s1.handle_timeout(grid + 2 * TICK);
        assert_eq!(s1.poll_timeout(), s2.poll_timeout());
        assert_eq!(s1.poll_timeout(), Some(at));
    }

    #[test]
    fn silence_from_a_leg_is_a_timeout() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        rig.s.set_sending(rig.now, Side::A, true);
        rig.step(Side::B, 0, Some(&[0xFF; 160]));
        for _ in 0..260 {
            let p = [0xFFu8; 160];
            rig.step(Side::B, 0, Some(&p));
        }
        assert_eq!(rig.events, vec![MediaEvent::Timeout(Side::A)]);
    }

    #[test]
    fn rtcp_reports_go_out_every_5s_and_the_legs_reports_give_loss_and_round_trip() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        let start = rig.now;
        rig.s.set_clock(start, 0xE000_0000_0000_0000, "sb@test");
        // A sends 6 s of audio, every 10th packet lost on the way.
        for i in 0..300 {
            let p = [0xFFu8; 160];
            rig.step(Side::A, 0, (i % 10 != 5).then_some(&p[..]));
        }
        let mut to_a = Vec::new();
        let mut to_b = Vec::new();
        while let Some((side, b)) = rig.s.poll_rtcp() {
            match side {
                Side::A => to_a.push(b),
                Side::B => to_b.push(b),
            }
        }
        assert_eq!(to_a.len(), 1, "one report to A in 6 s");
        let r = &crate::rtcp::parse(&to_a[0])[0];
        assert!(r.sender.is_none(), "nothing was sent to A: an RR");
        assert_eq!(r.blocks[0].ssrc, 99);
        assert!(
            (20..=30).contains(&r.blocks[0].fraction_lost),
            "10 % lost: {}",
            r.blocks[0].fraction_lost
        );
        let sr = &crate::rtcp::parse(&to_b[0])[0];
        let info = sr.sender.expect("an SR to B, which we send to");
        assert!(info.packets >= 200);
        // B answers with an RR about our stream; it held our SR for all but 60 ms of the time
        // since we sent it (DLSR), so the round trip is 60 ms.
        let our_ssrc = sr.ssrc;
        let lsr = (info.ntp >> 16) as u32;
        rig.now += Duration::from_millis(100);
        let elapsed = rig.now - start;
        let now_mid = ((0xE000_0000_0000_0000u64
            + (elapsed.as_secs_f64() * 4_294_967_296.0) as u64)
            >> 16) as u32;
        let dlsr = now_mid.wrapping_sub(lsr) - (65536 * 60 / 1000);
        let block = crate::rtcp::ReportBlock {
            ssrc: our_ssrc,
            fraction_lost: 64,
            cumulative_lost: 12,
            highest_seq: 1,
            jitter: 80,
            lsr,
            dlsr,
        };
        let mut rr = Vec::new();
        crate::rtcp::write(&mut rr, 777, None, Some(block), "b");
        rig.s.handle_rtcp(rig.now, Side::B, &rr);
        let remote = rig.s.stats(Side::B).remote.expect("B's view");
        assert_eq!(remote.fraction_lost, 0.25);
        assert_eq!(remote.jitter_ms, 10.0);
        let rtt = remote.rtt_ms.expect("round trip");
        assert!((rtt - 60.0).abs() < 1.0, "rtt {rtt:.1} ms");
    }

    #[test]
    fn a_leg_on_hold_is_not_timed_out_and_a_new_source_is_transcoded_at_once() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcma, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        rig.s.set_sending(rig.now, Side::A, false);
        rig.s.set_sending(rig.now, Side::B, true);
        for _ in 0..300 {
            let p = [0xFFu8; 160];
            rig.step(Side::B, 0, Some(&p));
        }
        assert!(
            rig.events.is_empty(),
            "A on hold for 6 s: no timeout ({:?})",
            rig.events
        );
        // A resumes from a new SSRC whose sequence numbers are far below the old ones.
        let pcma = encode(CodecKind::Pcma, &sine(800.0, 8000, 3200, 8000.0));
        rig.seq = 60000;
        for p in &pcma[..5] {
            rig.step(Side::A, 8, Some(p));
        }
        rig.sent.clear();
        let mut b = Vec::new();
        for (i, p) in pcma[5..].iter().enumerate() {
            b.clear();
            rtp::write(&mut b, 8, false, 10 + i as u16, i as u32 * 160, 4242, p);
            rig.s.handle_rtp(rig.now, Side::A, &b);
            rig.now += TICK;
            rig.s.handle_timeout(rig.now);
            while let Some(p) = rig.s.poll_transmit() {
                rig.sent.push(p);
            }
        }
        let at_b = rig.audio_to(Side::B, CodecKind::Pcmu);
        assert!(
            at_b.len() >= 160 * 10,
            "the new source plays: {} samples",
            at_b.len()
        );
    }

    #[test]
    fn garbage_is_dropped() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        rig.s.handle_rtp(rig.now, Side::A, &[1, 2, 3]);
        rig.s
            .handle_rtp(rig.now, Side::A, &[0x80, 55, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(rig.s.stats(Side::A).dropped, 2);
        assert!(rig.s.poll_transmit().is_none());
    }

    /// A digit in the middle of forwarded audio, voice and events on one SSRC (as baresip
    /// sends them): the stream the other leg gets has no sequence hole and its timestamps
    /// keep wall-clock pace across the digit; the sender's statistics count the events as
    /// received, not lost.
    fn digit_inside_forwarded_audio(to_b: DtmfMethod) -> (Rig, Vec<(u16, u32, u8, Instant)>) {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, to_b, ""),
        );
        let silence = [0xFFu8; 160];
        let mut at = Vec::new();
        for _ in 0..10 {
            rig.step(Side::A, 0, Some(&silence));
        }
        // 9 event packets (180 ms) sharing the start timestamp, the last 3 ends.
        let start = rig.ts;
        for i in 0..9u16 {
            let ev = Event {
                event: 1,
                end: i >= 6,
                volume: 10,
                duration: (i + 1).min(7) * 160,
            };
            rig.ts = start;
            rig.step(Side::A, 101, Some(&ev.to_bytes()));
        }
        rig.ts = start.wrapping_add(9 * 160);
        for _ in 0..30 {
            rig.step(Side::A, 0, Some(&silence));
        }
        // Arrival instants are not kept by the rig: 20 ms a packet from its start.
        let t0 = rig.now - TICK * 49;
        for (n, (side, b)) in rig.sent.iter().enumerate() {
            if *side == Side::B {
                let r = RtpReader::new(b).unwrap();
                at.push((
                    u16::from(r.sequence_number()),
                    r.timestamp(),
                    r.payload_type(),
                    t0 + TICK * n as u32,
                ));
            }
        }
        (rig, at)
    }

    fn assert_continuous(packets: &[(u16, u32, u8, Instant)]) {
        for w in packets.windows(2) {
            assert_eq!(
                w[1].0,
                w[0].0.wrapping_add(1),
                "a sequence hole or repeat: {packets:?}"
            );
        }
        let audio: Vec<u32> = packets.iter().filter(|p| p.2 == 0).map(|p| p.1).collect();
        let (first, last) = (audio[0], audio[audio.len() - 1]);
        // 49 packets' worth of time from the first audio to the last.
        let span = last.wrapping_sub(first);
        assert!(
            span.abs_diff(48 * 160) <= 160,
            "audio timestamps span {span}, wall time {}",
            48 * 160
        );
    }

    #[test]
    fn a_digit_forwarded_as_info_leaves_no_hole_in_the_audio_forwarded() {
        let (rig, to_b) = digit_inside_forwarded_audio(DtmfMethod::Info);
        assert_continuous(&to_b);
        let a = rig.s.legs[0].stats.rx.clone();
        assert_eq!(a.lost(), 0, "the events were received: {a:?}");
        assert_eq!(a.packets, 49);
    }

    #[test]
    fn a_digit_regenerated_as_events_keeps_the_numbering_and_the_clock() {
        let (rig, to_b) = digit_inside_forwarded_audio(DtmfMethod::Rfc4733);
        assert!(
            to_b.iter().any(|p| p.2 == 101),
            "the digit went to B as events"
        );
        assert_continuous(&to_b);
        assert_eq!(rig.s.legs[0].stats.rx.lost(), 0);
    }

    #[test]
    fn over_long_digits_are_regenerated_as_key_presses_and_the_queue_is_bounded() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        // 1,080 ms (a duration stamped at 48 kHz under /8000), then a flood of digits.
        rig.s.send_digit(rig.now, Side::A, '1', 1080);
        for _ in 0..100 {
            rig.s.send_digit(rig.now, Side::A, '2', 100);
        }
        assert_eq!(rig.s.legs[0].pending_digits.len(), MAX_QUEUED_DIGITS);
        assert_eq!(rig.s.legs[0].pending_digits[0], ('1', 500));
        for _ in 0..60 {
            rig.step(Side::B, 0, None);
        }
        let first: Vec<Event> = rig
            .events_to(Side::A)
            .into_iter()
            .filter(|e| e.event == 1)
            .collect();
        assert_eq!(
            first.last().map(|e| e.duration),
            Some(4000),
            "500 ms at 8 kHz"
        );
    }

    #[test]
    fn transcoded_audio_after_a_pause_is_marked_and_stamped_at_wall_clock() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcma, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        let tone = encode(CodecKind::Pcma, &sine(1000.0, 8000, 8000, 8000.0));
        for p in &tone[..20] {
            rig.step(Side::A, 8, Some(p));
        }
        // 4 s of nothing (hold, DTX), then the caller speaks again.
        for _ in 0..200 {
            rig.step(Side::A, 8, None);
        }
        for p in &tone[20..40] {
            rig.step(Side::A, 8, Some(p));
        }
        let to_b: Vec<(bool, u32)> = rig
            .sent
            .iter()
            .filter(|(s, _)| *s == Side::B)
            .map(|(_, b)| {
                let r = RtpReader::new(b).unwrap();
                (r.mark(), r.timestamp())
            })
            .collect();
        let jump = to_b
            .windows(2)
            .map(|w| (w[1].0, w[1].1.wrapping_sub(w[0].1)))
            .find(|(_, d)| *d > 160)
            .expect("the pause shows in the timestamps");
        assert!(
            jump.0,
            "the packet after the pause carries the marker: {to_b:?}"
        );
        assert!(
            jump.1.abs_diff(4 * 8000) <= 3 * 160,
            "the timestamp jumps by the pause: {}",
            jump.1
        );
    }

    /// Both legs on SDES-SRTP with keys of their own: what A sends is checked and decrypted
    /// under A's key and reaches B under our key for B, forgeries are refused and counted,
    /// and the reports we send B are SRTCP.
    #[test]
    fn srtp_legs_are_decrypted_and_encrypted_each_with_its_own_keys() {
        use crate::srtp::{Context, Crypto, LegKeys, Suite};
        let keys = |suite| LegKeys {
            ours: Crypto::ours(1, suite).unwrap(),
            theirs: Crypto::ours(1, suite).unwrap(),
        };
        let (ka, kb) = (keys(Suite::AesCm128HmacSha1_80), keys(Suite::AeadAes128Gcm));
        let mut a = leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, "");
        a.srtp = Some(ka.clone());
        let mut b = leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, "");
        b.srtp = Some(kb.clone());
        let mut rig = Rig::new(a, b);
        let mut caller = Context::new(&ka.theirs);
        let mut at_b = Context::new(&kb.ours);
        let payload = [0x55u8; 160];
        for i in 0..5u16 {
            let mut p = Vec::new();
            rtp::write(&mut p, 0, false, 100 + i, 160 * u32::from(i), 99, &payload);
            caller.protect_rtp(&mut p).unwrap();
            if i == 2 {
                let mut forged = p.clone();
                forged[20] ^= 0xff;
                rig.s.handle_rtp(rig.now, Side::A, &forged);
            }
            rig.s.handle_rtp(rig.now, Side::A, &p);
            rig.now += TICK;
            rig.s.handle_timeout(rig.now);
        }
        let mut got = 0;
        while let Some((side, mut p)) = rig.s.poll_transmit() {
            assert_eq!(side, Side::B);
            assert_ne!(&p[12..172], &payload[..], "encrypted on the wire");
            at_b.unprotect_rtp(&mut p).expect("B's key opens it");
            assert_eq!(RtpReader::new(&p).unwrap().payload(), &payload[..]);
            got += 1;
        }
        assert_eq!(got, 5);
        assert_eq!(rig.s.stats(Side::A).srtp_refused, 1);
        assert_eq!(rig.s.stats(Side::A).rx.packets, 5);
        rig.now += Duration::from_secs(6);
        rig.s.handle_timeout(rig.now);
        let mut reports = 0;
        while let Some((side, mut p)) = rig.s.poll_rtcp() {
            if side == Side::B {
                at_b.unprotect_rtcp(&mut p)
                    .expect("an SRTCP report under B's key");
                assert_eq!(p[1], 200, "a sender report");
                reports += 1;
            }
        }
        assert!(reports > 0, "no report to B");
    }

    /// A same-codec call whose caller pauses 3 s (a hold: no packets, its sequence stands
    /// still): the first packet forwarded after it, and the timestamp jump it shows.
    fn forwarded_after_a_pause(sender_clock_moves: bool) -> (bool, u32, Vec<u16>) {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        let silence = [0xFFu8; 160];
        for _ in 0..20 {
            rig.step(Side::A, 0, Some(&silence));
        }
        let (seq, ts) = (rig.seq, rig.ts);
        for _ in 0..150 {
            rig.step(Side::A, 0, None);
        }
        rig.seq = seq;
        if !sender_clock_moves {
            rig.ts = ts;
        }
        for _ in 0..10 {
            rig.step(Side::A, 0, Some(&silence));
        }
        let to_b: Vec<(bool, u16, u32)> = rig
            .sent
            .iter()
            .filter(|(s, _)| *s == Side::B)
            .map(|(_, b)| {
                let r = RtpReader::new(b).unwrap();
                (r.mark(), u16::from(r.sequence_number()), r.timestamp())
            })
            .collect();
        let after = to_b
            .windows(2)
            .find(|w| w[1].2.wrapping_sub(w[0].2) != 160)
            .map(|w| (w[1].0, w[1].2.wrapping_sub(w[0].2)))
            .unwrap_or((false, 160));
        (after.0, after.1, to_b.iter().map(|p| p.1).collect())
    }

    /// baresip resumes from hold with its clock moved on and no marker; some stacks resume
    /// with their clock where they left it. Either way the stream we forward marks the new
    /// talkspurt and its timestamps follow the wall clock; its numbering has no hole.
    #[test]
    fn forwarded_audio_after_a_hold_is_marked_and_follows_the_wall_clock() {
        for moves in [true, false] {
            let (marked, jump, seqs) = forwarded_after_a_pause(moves);
            assert!(
                marked,
                "the first packet after the pause is marked ({moves})"
            );
            assert!(
                jump.abs_diff(3 * 8000) <= 2 * 160,
                "the timestamp jumps by the pause ({moves}): {jump}"
            );
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
                "{seqs:?}"
            );
        }
    }

    /// linphone repeats its end packets with one sequence number: the repeats close no gap,
    /// so the audio forwarded after them repeats no number.
    #[test]
    fn repeated_end_packets_shift_the_forwarded_numbering_once() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Info, ""),
        );
        let silence = [0xFFu8; 160];
        for _ in 0..10 {
            rig.step(Side::A, 0, Some(&silence));
        }
        let start = rig.ts;
        for i in 0..4u16 {
            let ev = Event {
                event: 2,
                end: false,
                volume: 10,
                duration: (i + 1) * 160,
            };
            rig.ts = start;
            rig.step(Side::A, 101, Some(&ev.to_bytes()));
        }
        let end = Event {
            event: 2,
            end: true,
            volume: 10,
            duration: 800,
        };
        let seq = rig.seq;
        for _ in 0..3 {
            rig.seq = seq;
            rig.ts = start;
            rig.step(Side::A, 101, Some(&end.to_bytes()));
        }
        rig.ts = start.wrapping_add(7 * 160);
        for _ in 0..10 {
            rig.step(Side::A, 0, Some(&silence));
        }
        let seqs: Vec<u16> = rig
            .sent
            .iter()
            .filter(|(s, _)| *s == Side::B)
            .map(|(_, b)| u16::from(RtpReader::new(b).unwrap().sequence_number()))
            .collect();
        for w in seqs.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1), "{seqs:?}");
        }
        assert_eq!(seqs.len(), 20);
    }

    /// baresip on Opus stamps its telephone-event/8000 durations in 48 kHz units: a 180 ms
    /// digit says 8640. Its packets' arrival tells the real length.
    #[test]
    fn a_digit_stamped_at_the_wrong_clock_is_read_by_its_arrival() {
        let mut rig = Rig::new(
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
            leg(CodecKind::Pcmu, DtmfMethod::Rfc4733, ""),
        );
        let start = rig.ts;
        for i in 0..9u16 {
            let ev = Event {
                event: 3,
                end: i == 8,
                volume: 10,
                duration: (i + 1) * 960,
            };
            rig.ts = start;
            rig.step(Side::A, 101, Some(&ev.to_bytes()));
        }
        for _ in 0..40 {
            rig.step(Side::A, 0, None);
        }
        let got: Vec<u32> = rig
            .events
            .iter()
            .filter_map(|e| match e {
                MediaEvent::Digit(d) => Some(d.duration_ms),
                _ => None,
            })
            .collect();
        assert_eq!(got, [180], "read at 48 kHz, not 1,080 ms");
        assert_eq!(
            sane_digit_ms(100, 800, 8000, Some(80)),
            100,
            "an honest digit"
        );
        assert_eq!(
            sane_digit_ms(100, 800, 8000, None),
            100,
            "end-only: as stamped"
        );
        assert_eq!(
            sane_digit_ms(5000, 40000, 48000, Some(100)),
            160,
            "absurd: cut"
        );
    }
}
