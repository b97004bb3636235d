//! RTP packets: reading through `rtp-rs` views, writing headers into reused buffers, and the
//! per-stream receive statistics of RFC 3550 (extended sequence numbers, loss, jitter).

pub use rtp_rs::RtpReader;

/// Writes a 12-byte RTP header followed by `payload` into `out` (cleared first).
pub fn write(
    out: &mut Vec<u8>,
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: &[u8],
) {
    out.clear();
    out.push(0x80);
    out.push((u8::from(marker) << 7) | (pt & 0x7F));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Rewrites the sequence number, timestamp and SSRC of a packet in place (forwarding without
/// re-encoding). `false` when the buffer is too short to be RTP.
pub fn patch(buf: &mut [u8], pt: u8, seq: u16, ts: u32, ssrc: u32) -> bool {
    if buf.len() < 12 {
        return false;
    }
    buf[1] = (buf[1] & 0x80) | (pt & 0x7F);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    true
}

/// True when a datagram on an RTP port is RTCP (RTCP-mux, RFC 5761: PT 192–223 in the
/// second byte once the marker is stripped means SR/RR/SDES/BYE/APP...).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && (192..=223).contains(&buf[1])
}

/// Receive statistics of one stream (RFC 3550 appendix A.1 and A.8).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamStats {
    /// SSRC being received.
    pub ssrc: u32,
    /// Packets received from the current SSRC.
    pub packets: u64,
    /// Highest extended sequence number seen.
    pub max_seq: u64,
    /// First extended sequence number of the current SSRC.
    pub base_seq: u64,
    /// Interarrival jitter in timestamp units.
    pub jitter: f64,
    /// Times the SSRC changed.
    pub ssrc_changes: u32,
    /// Packets that arrived out of order or duplicated.
    pub misordered: u64,
    /// (arrival in timestamp units, RTP timestamp) of the previous packet, for the jitter.
    last_transit: Option<i64>,
    /// ... of the stream's first packet, for the drift.
    first_transit: Option<i64>,
    started: bool,
}

impl StreamStats {
    /// A packet arrived at `arrival` (in the stream's clock units, any origin). Returns the
    /// packet's extended sequence number.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16, ts: u32, arrival: u64) -> u64 {
        if !self.started || ssrc != self.ssrc {
            if self.started {
                self.ssrc_changes += 1;
            }
            self.started = true;
            self.ssrc = ssrc;
            self.max_seq = u64::from(seq) + (1 << 16);
            self.base_seq = self.max_seq;
            self.last_transit = None;
            self.first_transit = None;
            self.packets = 1;
            self.misordered = 0;
            return self.max_seq;
        }
        let ext = self.count(seq);
        // The timestamp is 32 bits and wraps: transit is taken against its unwrapped value
        // relative to the previous packet (a few seconds apart at most).
        let transit = arrival as i64 - i64::from(ts);
        let transit = match self.last_transit {
            Some(prev) => prev + i64::from((transit - prev) as i32),
            None => transit,
        };
        self.first_transit.get_or_insert(transit);
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        ext
    }

    /// A packet of the stream whose timestamp says nothing of its arrival (a telephone-event,
    /// RFC 4733: every packet of an event carries the event's start): it counts for the
    /// sequence (so it is not lost) but not for the jitter. A packet of another SSRC is not
    /// this stream's: ignored. `true` when it is new (not a repeat or a late one: RFC 4733
    /// senders repeat their end packets with the same number).
    pub fn on_untimed_packet(&mut self, ssrc: u32, seq: u16) -> bool {
        if !self.started || ssrc != self.ssrc {
            return false;
        }
        let before = self.max_seq;
        self.count(seq) > before
    }

    /// Counts a packet of the current SSRC: its extended sequence number, the value
    /// closest to the highest seen.
    fn count(&mut self, seq: u16) -> u64 {
        self.packets += 1;
        let cycles = self.max_seq & !0xFFFF;
        let mut ext = cycles | u64::from(seq);
        if ext + 0x8000 < self.max_seq {
            ext += 1 << 16;
        } else if ext > self.max_seq + 0x8000 && ext >= 1 << 16 {
            ext -= 1 << 16;
        }
        if ext > self.max_seq {
            self.max_seq = ext;
        } else {
            self.misordered += 1;
        }
        ext
    }

    /// How far the stream's timestamps have fallen behind (positive) or run ahead of
    /// (negative) its arrival since its first packet, in clock units: a sender whose clock
    /// loses time across digits or holds shows here, as does network delay building up.
    pub fn drift(&self) -> i64 {
        match (self.first_transit, self.last_transit) {
            (Some(f), Some(l)) => l - f,
            _ => 0,
        }
    }

    /// Packets expected from the sequence numbers.
    pub fn expected(&self) -> u64 {
        if self.started {
            self.max_seq - self.base_seq + 1
        } else {
            0
        }
    }

    /// Packets lost (expected − received, never negative).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_and_patch() {
        let mut b = Vec::new();
        write(&mut b, 8, true, 65535, 0xDEADBEEF, 42, &[1, 2, 3]);
        let r = RtpReader::new(&b).unwrap();
        assert_eq!(
            (r.payload_type(), r.mark(), u16::from(r.sequence_number())),
            (8, true, 65535)
        );
        assert_eq!(
            (r.timestamp(), r.ssrc(), r.payload()),
            (0xDEADBEEF, 42, &[1u8, 2, 3][..])
        );
        assert!(patch(&mut b, 0, 7, 9, 11));
        let r = RtpReader::new(&b).unwrap();
        assert_eq!(
            (
                r.payload_type(),
                r.mark(),
                u16::from(r.sequence_number()),
                r.timestamp(),
                r.ssrc()
            ),
            (0, true, 7, 9, 11)
        );
        assert!(!patch(&mut [0u8; 5], 0, 0, 0, 0));
        assert!(!is_rtcp(&b));
        assert!(is_rtcp(&[0x81, 200, 0, 6, 0, 0, 0, 1]));
    }

    #[test]
    fn sequence_wrap_loss_and_reorder() {
        let mut s = StreamStats::default();
        let mut seq = 65530u16;
        let mut ts = 0u32;
        for i in 0..20u64 {
            if i != 7 {
                s.on_packet(1, seq, ts, i * 160);
            }
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
        }
        assert_eq!(s.expected(), 20);
        assert_eq!(s.lost(), 1);
        assert_eq!(s.jitter, 0.0);
        // A late packet from before the wrap is misordered, not a new cycle.
        s.on_packet(1, 65531, 160, 5000);
        assert_eq!(s.misordered, 1);
        assert_eq!(s.expected(), 20);
        assert!(s.jitter > 0.0);
        // A new SSRC restarts the counts.
        s.on_packet(2, 100, 0, 6000);
        assert_eq!((s.ssrc_changes, s.expected()), (1, 1));
    }

    #[test]
    fn drift_is_how_far_timestamps_fall_behind_arrival() {
        let mut st = StreamStats::default();
        // 20 ms packets, timestamps 160 apart, arriving 160 units apart: no drift...
        for i in 0..50u16 {
            st.on_packet(7, i, u32::from(i) * 160, u64::from(i) * 160);
        }
        assert_eq!(st.drift(), 0);
        // ...then a sender that lost 200 ms (1,600 units) of media time across a digit.
        for i in 50..100u16 {
            st.on_packet(7, i, u32::from(i) * 160 - 1600, u64::from(i) * 160);
        }
        assert_eq!(st.drift(), 1600);
        // Across the 32-bit timestamp wrap, too.
        let mut st = StreamStats::default();
        for i in 0..20u32 {
            st.on_packet(
                9,
                i as u16,
                (u32::MAX - 1000).wrapping_add(i * 160),
                u64::from(i) * 160,
            );
        }
        assert_eq!(st.drift(), 0);
    }
}
