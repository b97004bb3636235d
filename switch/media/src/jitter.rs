//! A small adaptive jitter buffer for the decode side of a transcoded stream.
//!
//! Packets are kept in a ring of reusable slots by extended sequence number, so reordering is
//! undone and nothing is allocated per packet. Playout pulls one packet per frame: a missing
//! one is reported as lost (the decoder conceals it). The target depth follows the measured
//! jitter (twice the RFC 3550 estimate plus one frame, 1 to 8 frames); an empty buffer holds
//! playout back one frame (the depth grows), a buffer deeper than target + 2 drops its oldest
//! frame (the delay shrinks back).

const SLOTS: usize = 32;

#[derive(Debug, Clone, Default)]
struct Slot {
    seq: Option<u64>,
    ts: u32,
    payload: Vec<u8>,
}

/// What playout got.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<'a> {
    /// The next packet: RTP timestamp and payload.
    Packet(u32, &'a [u8]),
    /// The next packet is missing (conceal it).
    Lost,
    /// Nothing to play (not started, or starved: playout waits).
    Empty,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets that came after their playout time.
    pub late: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Frames dropped to shrink the delay.
    pub dropped: u64,
    /// Times playout starved.
    pub underruns: u64,
}

/// The buffer.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    slots: Vec<Slot>,
    next: Option<u64>,
    highest: Option<u64>,
    /// Target depth in frames.
    target: usize,
    playing: bool,
    /// Current jitter estimate, in frames.
    jitter_frames: f64,
    /// Counters.
    pub stats: JitterStats,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        JitterBuffer::new()
    }
}

impl JitterBuffer {
    /// An empty buffer with a target of 2 frames.
    pub fn new() -> JitterBuffer {
        JitterBuffer {
            slots: vec![Slot::default(); SLOTS],
            next: None,
            highest: None,
            target: 2,
            playing: false,
            jitter_frames: 0.0,
            stats: JitterStats::default(),
        }
    }

    /// Frames buffered ahead of playout (counting gaps).
    pub fn depth(&self) -> usize {
        match (self.next, self.highest) {
            (Some(n), Some(h)) if h >= n => (h - n + 1) as usize,
            _ => 0,
        }
    }

    /// Target depth in frames.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Updates the target from the stream's jitter, in frames.
    pub fn set_jitter(&mut self, jitter_frames: f64) {
        self.jitter_frames = jitter_frames;
        self.target = ((2.0 * jitter_frames).ceil() as usize + 1).clamp(1, 8);
    }

    /// Forgets everything (new source).
    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.seq = None;
        }
        self.next = None;
        self.highest = None;
        self.playing = false;
    }

    /// Stores a packet with extended sequence number `seq`.
    pub fn push(&mut self, seq: u64, ts: u32, payload: &[u8]) {
        if let Some(n) = self.next {
            if seq < n {
                self.stats.late += 1;
                return;
            }
            if seq >= n + SLOTS as u64 {
                // Far ahead (a jump in the sequence): start over from here.
                self.reset();
            }
        }
        let next = *self.next.get_or_insert(seq);
        if seq < next {
            self.next = Some(seq);
        }
        if self.highest.is_none_or(|h| seq > h) {
            self.highest = Some(seq);
        }
        let slot = &mut self.slots[(seq % SLOTS as u64) as usize];
        slot.seq = Some(seq);
        slot.ts = ts;
        slot.payload.clear();
        slot.payload.extend_from_slice(payload);
        if !self.playing && self.depth() >= self.target {
            self.playing = true;
        }
    }

    /// The packet after the one just taken, if it is here already (for forward error
    /// correction of a lost one).
    pub fn peek(&self) -> Option<&[u8]> {
        let n = self.next?;
        let slot = &self.slots[(n % SLOTS as u64) as usize];
        (slot.seq == Some(n)).then_some(slot.payload.as_slice())
    }

    /// Takes the packet for the next frame.
    pub fn pop(&mut self) -> Pop<'_> {
        if !self.playing {
            return Pop::Empty;
        }
        let Some(mut n) = self.next else {
            return Pop::Empty;
        };
        if self.highest.is_none_or(|h| h < n) {
            // Starved: wait one frame, which deepens the buffer by one.
            self.stats.underruns += 1;
            self.playing = false;
            return Pop::Empty;
        }
        if self.depth() > self.target + 2 {
            self.slots[(n % SLOTS as u64) as usize].seq = None;
            n += 1;
            self.stats.dropped += 1;
        }
        self.next = Some(n + 1);
        let slot = &self.slots[(n % SLOTS as u64) as usize];
        if slot.seq == Some(n) {
            Pop::Packet(slot.ts, &slot.payload)
        } else {
            self.stats.concealed += 1;
            Pop::Lost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(j: &mut JitterBuffer) -> Option<u8> {
        match j.pop() {
            Pop::Packet(_, p) => Some(p[0]),
            Pop::Lost => Some(0),
            Pop::Empty => None,
        }
    }

    #[test]
    fn reordering_is_undone_and_loss_concealed() {
        let mut j = JitterBuffer::new();
        let mut out = Vec::new();
        for s in [1u64, 3, 2, 5, 6] {
            j.push(s, 0, &[s as u8]);
            if s != 1 {
                out.push(take(&mut j));
            }
        }
        out.extend((0..3).map(|_| take(&mut j)));
        assert_eq!(
            out,
            vec![Some(1), Some(2), Some(3), Some(0), Some(5), Some(6), None]
        );
        assert_eq!(j.stats.concealed, 1);
        // A packet whose time has passed is dropped as late.
        j.push(4, 0, &[4]);
        assert_eq!(j.stats.late, 1);
    }

    #[test]
    fn starts_at_target_depth_and_waits_when_starved() {
        let mut j = JitterBuffer::new();
        j.push(10, 0, &[10]);
        assert_eq!(take(&mut j), None, "below the target of 2");
        j.push(11, 0, &[11]);
        assert_eq!(take(&mut j), Some(10));
        assert_eq!(take(&mut j), Some(11));
        assert_eq!(take(&mut j), None);
        assert_eq!(j.stats.underruns, 1);
        j.push(12, 0, &[12]);
        j.push(13, 0, &[13]);
        assert_eq!(take(&mut j), Some(12));
    }

    #[test]
    fn a_burst_is_trimmed_back_towards_the_target() {
        let mut j = JitterBuffer::new();
        for s in 0..10u64 {
            j.push(s, 0, &[s as u8]);
        }
        assert_eq!(
            take(&mut j),
            Some(1),
            "depth 10 > 2 + 2: the oldest frame is dropped"
        );
        assert_eq!(j.stats.dropped, 1);
        j.set_jitter(2.0);
        assert_eq!(j.target(), 5);
    }

    #[test]
    fn a_sequence_jump_restarts() {
        let mut j = JitterBuffer::new();
        j.push(1, 0, &[1]);
        j.push(2, 0, &[2]);
        j.push(1000, 0, &[9]);
        j.push(1001, 0, &[8]);
        assert_eq!(take(&mut j), Some(9));
    }
}
