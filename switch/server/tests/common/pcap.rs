//! What really went over the wire: a `dumpcap` capture on the loopback interface, read back
//! (classic pcap, Ethernet/IPv4/UDP), split into SIP messages, RTP streams and RTCP reports,
//! and the **stream checker** every real-client test runs on each leg the switch sends:
//! sequence without holes, timestamps that follow the wall clock, marker bits on
//! discontinuities and on each event's start, one SSRC per stream matching the SDP that
//! described it, and receiver reports that claim only loss that happened.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_media::dtmf::Event;
use switchboard_media::rtp::RtpReader;

/// A running capture of loopback UDP matching a BPF filter.
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    /// Starts `dumpcap` and waits until it captures (its "Capturing on" line).
    pub fn start(dir: &Path, name: &str, filter: &str) -> Capture {
        let file = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.dumpcap.log"));
        let child = Command::new("dumpcap")
            .args(["-q", "-i", "lo", "-P", "-f", filter, "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("dumpcap log"))
            .spawn()
            .expect("dumpcap (apt-get install tshark)");
        let mut cap = Capture {
            child: Some(child),
            file,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Capturing on") && cap.file.exists() {
                break;
            }
            if let Some(c) = cap.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("dumpcap exited ({status}): {text}");
            }
            assert!(Instant::now() < deadline, "dumpcap never started: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
        cap
    }

    /// Stops the capture (SIGTERM: dumpcap writes what it holds) and reads it.
    pub fn stop(mut self) -> Wire {
        if let Some(mut c) = self.child.take() {
            std::thread::sleep(Duration::from_millis(300));
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let bytes = std::fs::read(&self.file).expect("read the capture");
        Wire::parse(&bytes)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One UDP datagram seen on the wire.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Seconds since the capture's first packet.
    pub t: f64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

/// Everything a capture held.
#[derive(Debug, Default)]
pub struct Wire {
    pub datagrams: Vec<Datagram>,
}

fn u32_at(b: &[u8], at: usize, big: bool) -> u32 {
    let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if big {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    }
}

impl Wire {
    /// Reads a classic pcap file of Ethernet frames (what dumpcap `-P` writes for `lo`).
    pub fn parse(b: &[u8]) -> Wire {
        assert!(b.len() >= 24, "capture too short");
        let magic = u32_at(b, 0, false);
        let (big, nanos) = match magic {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            0xd4c3_b2a1 => (true, false),
            0x4d3c_b2a1 => (true, true),
            m => panic!("not a pcap file (magic {m:#x})"),
        };
        let link = u32_at(b, 20, big);
        assert_eq!(link, 1, "expected Ethernet frames on lo");
        let mut out = Wire::default();
        let (mut at, mut t0) = (24, None);
        while at + 16 <= b.len() {
            let sec = f64::from(u32_at(b, at, big));
            let frac = f64::from(u32_at(b, at + 4, big)) / if nanos { 1e9 } else { 1e6 };
            let len = u32_at(b, at + 8, big) as usize;
            let frame = &b[at + 16..(at + 16 + len).min(b.len())];
            at += 16 + len;
            let t = sec + frac;
            let t0 = *t0.get_or_insert(t);
            if let Some((src, dst, data)) = udp_of(frame) {
                out.datagrams.push(Datagram {
                    t: t - t0,
                    src,
                    dst,
                    data: data.to_vec(),
                });
            }
        }
        out
    }

    /// The SIP messages seen (text), in order, with their source and destination.
    pub fn sip(&self) -> Vec<(&Datagram, String)> {
        self.datagrams
            .iter()
            .filter(|d| d.data.first().is_some_and(|b| b.is_ascii_uppercase()))
            .map(|d| (d, String::from_utf8_lossy(&d.data).into_owned()))
            .filter(|(_, s)| s.contains("SIP/2.0"))
            .collect()
    }

    /// The SDP bodies seen, with what each says its media leaves from.
    pub fn sdps(&self) -> Vec<Sdp> {
        self.sip()
            .iter()
            .filter_map(|(_, text)| text.split_once("\r\n\r\n").map(|(_, b)| b))
            .filter(|body| body.starts_with("v=0"))
            .filter_map(Sdp::parse)
            .collect()
    }

    /// SIP INFO digits (`Signal=`) sent to `dst`, in order.
    pub fn info_digits_to(&self, dst: SocketAddr) -> String {
        self.sip()
            .iter()
            .filter(|(d, s)| d.dst == dst && s.starts_with("INFO "))
            .filter_map(|(_, s)| {
                s.lines()
                    .find_map(|l| l.trim().strip_prefix("Signal="))
                    .and_then(|v| v.trim().chars().next())
            })
            .collect()
    }

    /// The RTP streams between `a` and `b` (either way), keyed by source, destination and
    /// SSRC, packets in arrival order. Datagrams that are not RTP version 2 with a payload type
    /// below 128 that is not RTCP's are left out.
    pub fn rtp_streams(&self) -> Vec<Stream> {
        let mut streams: BTreeMap<(SocketAddr, SocketAddr, u32), Stream> = BTreeMap::new();
        for d in &self.datagrams {
            if d.data.first().is_none_or(|b| b >> 6 != 2) || is_rtcp(&d.data) {
                continue;
            }
            let Ok(r) = RtpReader::new(&d.data) else {
                continue;
            };
            let ssrc = r.ssrc();
            let s = streams.entry((d.src, d.dst, ssrc)).or_insert(Stream {
                src: d.src,
                dst: d.dst,
                ssrc,
                packets: Vec::new(),
            });
            s.packets.push(Pkt {
                t: d.t,
                seq: u16::from(r.sequence_number()),
                ts: r.timestamp(),
                marker: r.mark(),
                pt: r.payload_type(),
                payload: r.payload().to_vec(),
            });
        }
        streams.into_values().collect()
    }

    /// The report blocks of the RTCP sender/receiver reports `from` sent: (SSRC reported on,
    /// cumulative packets lost, fraction lost /256).
    pub fn rtcp_reports_from(&self, from: SocketAddr) -> Vec<(u32, i32, u8)> {
        let mut out = Vec::new();
        for d in self.datagrams.iter().filter(|d| d.src == from) {
            let b = &d.data;
            let mut at = 0;
            while at + 8 <= b.len() && b[at] >> 6 == 2 {
                let count = usize::from(b[at] & 0x1f);
                let pt = b[at + 1];
                let len = (usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]])) + 1) * 4;
                let blocks = match pt {
                    200 => at + 28,
                    201 => at + 8,
                    _ => {
                        at += len;
                        continue;
                    }
                };
                for i in 0..count {
                    let o = blocks + i * 24;
                    if o + 24 > b.len() {
                        break;
                    }
                    let ssrc = u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
                    let frac = b[o + 4];
                    let raw = u32::from_be_bytes([0, b[o + 5], b[o + 6], b[o + 7]]);
                    // 24-bit signed.
                    let lost = ((raw << 8) as i32) >> 8;
                    out.push((ssrc, lost, frac));
                }
                at += len;
            }
        }
        out
    }
}

fn is_rtcp(b: &[u8]) -> bool {
    b.len() >= 2 && (200..=206).contains(&b[1])
}

fn udp_of(frame: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let addr = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
    let udp = ip.get(ihl..total.min(ip.len()))?;
    let port = |o: usize| u16::from_be_bytes([udp[o], udp[o + 1]]);
    let src = SocketAddr::V4(SocketAddrV4::new(addr(12), port(0)));
    let dst = SocketAddr::V4(SocketAddrV4::new(addr(16), port(2)));
    Some((src, dst, udp.get(8..)?))
}

/// What one SDP body says about its (first) audio stream.
#[derive(Debug, Clone)]
pub struct Sdp {
    /// Where the media is (and, symmetric RTP, where it leaves from).
    pub media: SocketAddr,
    /// Payload type -> (encoding name, clock rate).
    pub rtpmap: BTreeMap<u8, (String, u32)>,
    /// The SSRCs the body declares (`a=ssrc:`).
    pub ssrcs: Vec<u32>,
    pub direction: String,
    pub text: String,
}

impl Sdp {
    pub fn parse(text: &str) -> Option<Sdp> {
        let mut ip = None;
        let mut port = None;
        let mut rtpmap = BTreeMap::new();
        let mut ssrcs = Vec::new();
        let mut direction = "sendrecv".to_owned();
        let mut in_audio = false;
        for l in text.lines().map(str::trim) {
            if let Some(c) = l.strip_prefix("c=IN IP4 ") {
                ip = c.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok());
            } else if let Some(m) = l.strip_prefix("m=") {
                in_audio = m.starts_with("audio ") && port.is_none();
                if in_audio {
                    port = m.split(' ').nth(1).and_then(|p| p.parse::<u16>().ok());
                    for pt in m.split(' ').skip(3).filter_map(|p| p.parse::<u8>().ok()) {
                        let fixed = match pt {
                            0 => Some(("PCMU", 8000)),
                            8 => Some(("PCMA", 8000)),
                            9 => Some(("G722", 8000)),
                            18 => Some(("G729", 8000)),
                            _ => None,
                        };
                        if let Some((n, r)) = fixed {
                            rtpmap.insert(pt, (n.to_owned(), r));
                        }
                    }
                }
            } else if in_audio && let Some(a) = l.strip_prefix("a=rtpmap:") {
                let (pt, rest) = a.split_once(' ')?;
                let mut enc = rest.split('/');
                let name = enc.next()?.to_owned();
                let rate = enc.next().and_then(|r| r.parse().ok()).unwrap_or(8000);
                if let Ok(pt) = pt.parse() {
                    rtpmap.insert(pt, (name, rate));
                }
            } else if in_audio && let Some(a) = l.strip_prefix("a=ssrc:") {
                if let Some(s) = a.split(' ').next().and_then(|s| s.parse().ok())
                    && !ssrcs.contains(&s)
                {
                    ssrcs.push(s);
                }
            } else if in_audio
                && let Some(d) = l.strip_prefix("a=")
                && ["sendrecv", "sendonly", "recvonly", "inactive"].contains(&d)
            {
                direction = d.to_owned();
            }
        }
        Some(Sdp {
            media: SocketAddr::V4(SocketAddrV4::new(ip?, port?)),
            rtpmap,
            ssrcs,
            direction,
            text: text.to_owned(),
        })
    }
}

/// One RTP packet of a stream.
#[derive(Debug, Clone)]
pub struct Pkt {
    pub t: f64,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub pt: u8,
    pub payload: Vec<u8>,
}

/// The packets of one SSRC from one address to another.
#[derive(Debug, Clone)]
pub struct Stream {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ssrc: u32,
    pub packets: Vec<Pkt>,
}

/// What the checker found on a stream, and its figures.
#[derive(Debug, Default)]
pub struct Health {
    pub defects: Vec<String>,
    /// Packets missing from the numbering (the receiver's real loss on loopback is 0).
    pub missing: u32,
    /// Media time minus wall time, end of the stream vs its start, ms (least-delayed packets
    /// of the first and last second).
    pub drift_ms: f64,
    /// The digits the stream carried as telephone-events, in order.
    pub digits: String,
    /// Gaps in the audio (hold, a digit's duration): count.
    pub talkspurts: u32,
}

impl Stream {
    fn pt_clock(&self, sdp: Option<&Sdp>, pt: u8) -> Option<(String, u32)> {
        sdp.and_then(|s| s.rtpmap.get(&pt).cloned())
    }

    /// The stream checker (see the module doc). `sdp` is the body that described this stream
    /// (the sender's, found by its media address).
    pub fn check(&self, sdp: Option<&Sdp>) -> Health {
        let mut h = Health::default();
        let name = format!("{} -> {} ssrc {:#x}", self.src, self.dst, self.ssrc);
        let Some(sdp) = sdp else {
            h.defects.push(format!(
                "{name}: no SDP describes a stream from {}",
                self.src
            ));
            return h;
        };
        if !sdp.ssrcs.is_empty() && !sdp.ssrcs.contains(&self.ssrc) {
            h.defects.push(format!(
                "{name}: SSRC not the one the SDP declares ({:x?})",
                sdp.ssrcs
            ));
        }
        // Sequence: each packet one more than the last, none repeated, none missing.
        for w in self.packets.windows(2) {
            let d = w[1].seq.wrapping_sub(w[0].seq);
            if d != 1 {
                if (2..1000).contains(&d) {
                    h.missing += u32::from(d - 1);
                }
                h.defects.push(format!(
                    "{name}: sequence {} then {} at {:.3} s",
                    w[0].seq, w[1].seq, w[1].t
                ));
            }
        }
        let mut audio_clock = None;
        let mut last_audio: Option<&Pkt> = None;
        let mut last_event: Option<(u32, u8, bool)> = None;
        // (media seconds - wall seconds) per packet that carries media time (audio, and each
        // event's first packet).
        let mut offsets: Vec<(f64, f64)> = Vec::new();
        let first = &self.packets[0];
        for p in &self.packets {
            let Some((enc, clock)) = self.pt_clock(Some(sdp), p.pt) else {
                h.defects.push(format!(
                    "{name}: payload type {} not in the SDP at {:.3} s",
                    p.pt, p.t
                ));
                continue;
            };
            let media = f64::from(p.ts.wrapping_sub(first.ts)) / f64::from(clock);
            if enc.eq_ignore_ascii_case("telephone-event") {
                let Some(ev) = Event::parse(&p.payload) else {
                    h.defects
                        .push(format!("{name}: bad telephone-event at {:.3} s", p.t));
                    continue;
                };
                let new = last_event.is_none_or(|(ts, code, _)| ts != p.ts || code != ev.event);
                if new {
                    if !p.marker {
                        h.defects.push(format!(
                            "{name}: event {} starts without the marker bit at {:.3} s",
                            ev.event, p.t
                        ));
                    }
                    if let Some(a) = last_audio
                        && p.ts.wrapping_sub(a.ts) > 0x8000_0000
                    {
                        h.defects.push(format!(
                            "{name}: event at {:.3} s stamped before the audio sent before it",
                            p.t
                        ));
                    }
                    if let Some(c) = switchboard_media::dtmf::digit_of(ev.event) {
                        h.digits.push(c);
                    }
                    offsets.push((p.t, media - p.t));
                } else if p.marker {
                    h.defects.push(format!(
                        "{name}: marker bit inside event {} at {:.3} s",
                        ev.event, p.t
                    ));
                }
                last_event = Some((p.ts, ev.event, ev.end));
                continue;
            }
            if audio_clock.is_some_and(|c| c != clock) {
                h.defects
                    .push(format!("{name}: audio clock changed at {:.3} s", p.t));
            }
            audio_clock = Some(clock);
            offsets.push((p.t, media - p.t));
            if let Some(a) = last_audio {
                let step = p.ts.wrapping_sub(a.ts);
                let frame = clock / 50;
                let gap = p.t - a.t;
                if step > 0x8000_0000 {
                    h.defects.push(format!(
                        "{name}: audio timestamp went back ({} then {}) at {:.3} s",
                        a.ts, p.ts, p.t
                    ));
                } else if step > 3 * frame && gap > 0.08 {
                    h.talkspurts += 1;
                    if !p.marker {
                        h.defects.push(format!(
                            "{name}: audio after a {:.0} ms gap without the marker bit at {:.3} s",
                            gap * 1000.0,
                            p.t
                        ));
                    }
                }
            }
            last_audio = Some(p);
        }
        // Drift: the least-delayed offset of the last second against the first second's.
        let span = |from: f64, to: f64| {
            offsets
                .iter()
                .filter(|(t, _)| *t >= from && *t <= to)
                .map(|(_, o)| *o)
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let (start, end) = (first.t, self.packets[self.packets.len() - 1].t);
        if end - start > 3.0 {
            h.drift_ms = (span(end - 1.0, end) - span(start, start + 1.0)) * 1000.0;
            if h.drift_ms.abs() > 80.0 {
                h.defects.push(format!(
                    "{name}: media time drifted {:.0} ms from the wall clock",
                    h.drift_ms
                ));
            }
        }
        h
    }
}

/// A leg's streams as the switch sent them: every stream from one of `from` (the switch's
/// media addresses) checked against the SDP that described it; panics listing every defect.
pub fn check_switch_streams(wire: &Wire, from: &[SocketAddr]) -> Vec<(Stream, Health)> {
    let sdps = wire.sdps();
    let mut out = Vec::new();
    let mut defects = Vec::new();
    for s in wire.rtp_streams() {
        if !from.contains(&s.src) {
            continue;
        }
        let sdp = sdps.iter().rev().find(|d| d.media == s.src);
        let h = s.check(sdp);
        defects.extend(h.defects.iter().cloned());
        out.push((s, h));
    }
    // One SSRC per direction for the whole call.
    let mut seen: BTreeMap<(SocketAddr, SocketAddr), u32> = BTreeMap::new();
    for (s, _) in &out {
        if let Some(old) = seen.insert((s.src, s.dst), s.ssrc) {
            defects.push(format!(
                "{} -> {}: SSRC changed mid-call ({old:#x} then {:#x})",
                s.src, s.dst, s.ssrc
            ));
        }
    }
    assert!(
        defects.is_empty(),
        "the switch's streams have defects:\n{}",
        defects.join("\n")
    );
    out
}

impl Wire {
    /// The SDP bodies `from` sent (the switch: its SIP address), in order.
    pub fn sdps_from(&self, from: SocketAddr) -> Vec<Sdp> {
        self.sip()
            .iter()
            .filter(|(d, _)| d.src == from)
            .filter_map(|(_, text)| text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
            .filter(|body| body.starts_with("v=0"))
            .filter_map(|b| Sdp::parse(&b))
            .collect()
    }
}
