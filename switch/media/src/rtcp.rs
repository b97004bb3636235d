//! RTCP (RFC 3550 §6): sender and receiver reports, SDES CNAME, compound packets. The switch
//! terminates RTCP on each leg: it reports what it receives from the leg and what it sends
//! to it, and learns from the leg's reports its view of our stream and the round-trip time.
//! (The `rtcp` crate of the webrtc-rs family pulls tokio through webrtc-util; this crate
//! stays sans-IO, so the ~150 lines live here.)

/// One reception report block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// SSRC the block is about.
    pub ssrc: u32,
    /// Fraction lost since the last report, /256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24 bits, signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received from that SSRC.
    pub lsr: u32,
    /// Delay since that SR, 1/65536 s.
    pub dlsr: u32,
}

/// The sender info of an SR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp (64-bit fixed point).
    pub ntp: u64,
    /// The RTP timestamp matching it.
    pub rtp_ts: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// A parsed report (SR or RR); other packet types of a compound are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Sender SSRC.
    pub ssrc: u32,
    /// Present for an SR.
    pub sender: Option<SenderInfo>,
    /// Report blocks.
    pub blocks: Vec<ReportBlock>,
}

fn be32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// The SRs and RRs of a compound packet (malformed parts end the walk; nothing panics).
pub fn parse(buf: &[u8]) -> Vec<Report> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 8 {
        if rest[0] >> 6 != 2 {
            break;
        }
        let count = usize::from(rest[0] & 0x1F);
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let Some(pkt) = rest.get(..len) else {
            break;
        };
        let ssrc = be32(pkt, 4).unwrap_or(0);
        let (sender, blocks_at) = match pt {
            200 => {
                let info = (|| {
                    let hi = be32(pkt, 8)?;
                    let lo = be32(pkt, 12)?;
                    Some(SenderInfo {
                        ntp: (u64::from(hi) << 32) | u64::from(lo),
                        rtp_ts: be32(pkt, 16)?,
                        packets: be32(pkt, 20)?,
                        octets: be32(pkt, 24)?,
                    })
                })();
                (info, 28)
            }
            201 => (None, 8),
            _ => {
                rest = &rest[len..];
                continue;
            }
        };
        if pt == 200 && sender.is_none() {
            break;
        }
        let blocks = (0..count)
            .map_while(|k| {
                let at = blocks_at + k * 24;
                let lost = be32(pkt, at + 4)?;
                Some(ReportBlock {
                    ssrc: be32(pkt, at)?,
                    fraction_lost: (lost >> 24) as u8,
                    // 24-bit two's complement.
                    cumulative_lost: ((lost << 8) as i32) >> 8,
                    highest_seq: be32(pkt, at + 8)?,
                    jitter: be32(pkt, at + 12)?,
                    lsr: be32(pkt, at + 16)?,
                    dlsr: be32(pkt, at + 20)?,
                })
            })
            .collect();
        out.push(Report {
            ssrc,
            sender,
            blocks,
        });
        rest = &rest[len..];
    }
    out
}

/// Writes a compound packet: an SR (with `sender`) or RR, at most one report block, and an
/// SDES with our CNAME.
pub fn write(
    out: &mut Vec<u8>,
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<ReportBlock>,
    cname: &str,
) {
    out.clear();
    let rc = u8::from(block.is_some());
    let words = 1 + if sender.is_some() { 5 } else { 0 } + 6 * usize::from(rc);
    out.push(0x80 | rc);
    out.push(if sender.is_some() { 200 } else { 201 });
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(s) = sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_ts.to_be_bytes());
        out.extend_from_slice(&s.packets.to_be_bytes());
        out.extend_from_slice(&s.octets.to_be_bytes());
    }
    if let Some(b) = block {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        let lost = (u32::from(b.fraction_lost) << 24)
            | (b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32 & 0x00FF_FFFF);
        out.extend_from_slice(&lost.to_be_bytes());
        out.extend_from_slice(&b.highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.lsr.to_be_bytes());
        out.extend_from_slice(&b.dlsr.to_be_bytes());
    }
    // SDES: one chunk, CNAME item, END, padded to a word.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = 4 + 2 + name.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    out.push(0x81);
    out.push(202);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend(std::iter::repeat_n(0, padded - chunk + 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sr_with_a_block_round_trips_and_sdes_is_skipped() {
        let info = SenderInfo {
            ntp: 0x1122_3344_5566_7788,
            rtp_ts: 9,
            packets: 50,
            octets: 8000,
        };
        let block = ReportBlock {
            ssrc: 7,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 70_000,
            jitter: 12,
            lsr: 0x3344_5566,
            dlsr: 65536,
        };
        let mut b = Vec::new();
        write(&mut b, 42, Some(info), Some(block), "switchboard@127.0.0.1");
        assert_eq!(b.len() % 4, 0);
        assert!(crate::rtp::is_rtcp(&b));
        assert_eq!(
            parse(&b),
            vec![Report {
                ssrc: 42,
                sender: Some(info),
                blocks: vec![block]
            }]
        );
        write(&mut b, 43, None, None, "x");
        assert_eq!(
            parse(&b),
            vec![Report {
                ssrc: 43,
                sender: None,
                blocks: vec![]
            }]
        );
    }

    #[test]
    fn garbage_and_truncation_give_nothing() {
        assert!(parse(&[]).is_empty());
        assert!(parse(&[0x80, 200, 0, 6, 0, 0]).is_empty());
        assert!(
            parse(&[0x81, 200, 0, 1, 0, 0, 0, 1]).is_empty(),
            "an SR too short for its sender info"
        );
        let mut b = Vec::new();
        write(&mut b, 1, None, Some(ReportBlock::default()), "x");
        assert!(parse(&b[..20]).is_empty());
    }
}
