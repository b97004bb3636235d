//! RTP load generator for media benchmarks. It sets up N calls through a relay, streams 20 ms
//! packets both ways for every call from one socket per side, and reports loss, added delay
//! and jitter, and the relay's CPU time (read from /proc) per call-second.
//!
//! Relays: `switchboard` (calls set up over SIP: we are both the caller and the gateway's
//! call center) and `rtpengine` (sessions set up over its ng control protocol, as Kamailio's
//! rtpengine module does); `loopback` sends each side straight to the other, the generator's
//! own floor for delay and jitter.
//!
//! Passthrough runs (PCMU both ways) carry the send time and call index in the payload, which
//! a relay forwards untouched: delay is measured per packet. Transcoding runs (Opus on leg A,
//! PCMU on leg B) send a tone that starts at a known instant per call: the delay is the time
//! until the tone comes out of the far side.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use switchboard_media::{CodecKind, rtp};

/// Datagrams per `sendmmsg`/`recvmmsg`: the generator batches its own I/O so that it is not
/// the bottleneck of the relay it measures.
const BATCH: usize = 64;

/// Batched UDP I/O (Linux `sendmmsg`/`recvmmsg` through nix's safe wrappers).
mod mmsg {
    use std::io::{IoSlice, IoSliceMut};
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

    use super::BATCH;

    /// Packets queued for one socket, sent `BATCH` at a time.
    pub struct Sender {
        headers: MultiHeaders<SockaddrStorage>,
        data: Vec<u8>,
        ends: Vec<usize>,
        addrs: Vec<Option<SockaddrStorage>>,
    }

    impl Sender {
        pub fn new() -> Self {
            Sender { headers: MultiHeaders::preallocate(BATCH, None), data: Vec::new(), ends: Vec::new(), addrs: Vec::new() }
        }

        /// Queues a packet; a full batch goes out at once (a packet's send-time stamp stays
        /// within one batch of its sending).
        pub fn push(&mut self, sock: &UdpSocket, pkt: &[u8], to: SocketAddr) {
            self.data.extend_from_slice(pkt);
            self.ends.push(self.data.len());
            self.addrs.push(Some(SockaddrStorage::from(to)));
            if self.ends.len() == BATCH {
                self.flush(sock);
            }
        }

        /// Sends what is queued (blocking socket: the kernel takes all or waits); a refused
        /// datagram is skipped and counts as lost.
        pub fn flush(&mut self, sock: &UdpSocket) {
            let mut start = 0;
            let mut i = 0;
            while i < self.ends.len() {
                let k = (self.ends.len() - i).min(BATCH);
                let mut from = start;
                let iovs: Vec<[IoSlice<'_>; 1]> = self.ends[i..i + k]
                    .iter()
                    .map(|&end| {
                        let s = [IoSlice::new(&self.data[from..end])];
                        from = end;
                        s
                    })
                    .collect();
                let sent = sendmmsg(sock.as_raw_fd(), &mut self.headers, &iovs, &self.addrs[i..i + k], [], MsgFlags::empty())
                    .map(|r| r.count())
                    .unwrap_or(0)
                    .max(1);
                i += sent;
                start = self.ends[i - 1];
            }
            self.data.clear();
            self.ends.clear();
            self.addrs.clear();
        }
    }

    /// Receives up to `BATCH` datagrams: waits for the first (up to the socket's read
    /// timeout), then takes what else is queued. Calls `each` with each payload.
    pub struct Receiver {
        headers: MultiHeaders<SockaddrStorage>,
        bufs: Vec<u8>,
    }

    const SIZE: usize = 2048;

    impl Receiver {
        pub fn new() -> Self {
            Receiver { headers: MultiHeaders::preallocate(BATCH, None), bufs: vec![0; BATCH * SIZE] }
        }

        pub fn recv(&mut self, sock: &UdpSocket, mut each: impl FnMut(&[u8])) -> usize {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self.bufs.chunks_exact_mut(SIZE).map(|b| [IoSliceMut::new(b)]).collect();
            let Ok(got) = recvmmsg(sock.as_raw_fd(), &mut self.headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) else {
                return 0;
            };
            let mut n = 0;
            for m in got {
                n += 1;
                each(m.iovs().next().unwrap_or_default());
            }
            n
        }
    }
}

struct Args {
    target: String,
    control: SocketAddr,
    gw_port: u16,
    calls: usize,
    secs: u64,
    pid: u32,
    transcode: bool,
}

fn args() -> Args {
    let mut a = Args {
        target: "switchboard".into(),
        control: "127.0.0.1:5060".parse().unwrap_or_else(|_| unreachable!()),
        gw_port: 5080,
        calls: 100,
        secs: 10,
        pid: 0,
        transcode: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--target" => a.target = val,
            "--control" => a.control = val.parse().expect("--control IP:PORT"),
            "--gw-port" => a.gw_port = val.parse().expect("--gw-port N"),
            "--calls" => a.calls = val.parse().expect("--calls N"),
            "--secs" => a.secs = val.parse().expect("--secs N"),
            "--pid" => a.pid = val.parse().expect("--pid N"),
            "--transcode" => {
                a.transcode = true;
                i += 1;
                continue;
            }
            _ => {
                eprintln!(
                    "usage: rtp-load --target switchboard|rtpengine --control IP:PORT [--gw-port 5080] \
                     --calls N --secs S --pid RELAY_PID [--transcode]"
                );
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

fn sdp(port: u16, fmts: &str, maps: &str) -> String {
    format!(
        "v=0\r\no=load 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {fmts}\r\n{maps}a=ptime:20\r\n"
    )
}

fn audio_port(msg: &str) -> Option<u16> {
    let i = msg.find("m=audio ")? + 8;
    msg[i..].split(' ').next()?.parse().ok()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .find(|l| l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name) && l[name.len()..].starts_with(':'))
        .map(|l| l[name.len() + 1..].trim())
}

/// Both legs' relay addresses for one call: where leg A sends, where leg B sends.
type Legs = (SocketAddr, SocketAddr);

fn recv_text(sock: &UdpSocket) -> String {
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).expect("SIP message within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sets up the calls through Switchboard over SIP; returns the relay addresses and what it
/// takes to hang up (Call-ID, To tag) per call.
fn setup_switchboard(a: &Args, a_port: u16, b_port: u16) -> (Vec<Legs>, Vec<(String, String)>) {
    let uac = UdpSocket::bind("127.0.0.1:0").expect("bind UAC");
    let gw = UdpSocket::bind(("127.0.0.1", a.gw_port)).expect("bind the gateway port");
    for s in [&uac, &gw] {
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    }
    let local = uac.local_addr().expect("addr");
    let (offer_fmts, offer_maps) = if a.transcode {
        ("111 101", "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\n")
    } else {
        ("0 101", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")
    };
    let mut legs = Vec::new();
    let mut dialogs = Vec::new();
    for i in 0..a.calls {
        let call_id = format!("load-{i}-{}", std::process::id());
        let body = sdp(a_port, offer_fmts, offer_maps);
        let invite = format!(
            "INVITE sip:1000@{c} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-l{i}-{pid}\r\nFrom: <sip:load@{local}>;tag=l{i}\r\nTo: <sip:1000@{c}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:load@{local}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len(),
            c = a.control,
            pid = std::process::id()
        );
        uac.send_to(invite.as_bytes(), a.control).expect("send INVITE");
        // The gateway side: the switch's INVITE to the call center.
        let (b_relay, gw_peer) = loop {
            let mut buf = [0u8; 4096];
            let (n, peer) = gw.recv_from(&mut buf).expect("INVITE at the gateway");
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.starts_with("INVITE") {
                let port = audio_port(&m).expect("SDP in the INVITE to the gateway");
                let answer = sdp(b_port, "0 101", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n");
                let resp = format!(
                    "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=gw{i}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:cc@127.0.0.1:{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
                    header(&m, "Via").unwrap_or_default(),
                    header(&m, "From").unwrap_or_default(),
                    header(&m, "To").unwrap_or_default(),
                    header(&m, "Call-ID").unwrap_or_default(),
                    header(&m, "CSeq").unwrap_or_default(),
                    a.gw_port,
                    answer.len()
                );
                gw.send_to(resp.as_bytes(), peer).expect("send 200");
                break (SocketAddr::from(([127, 0, 0, 1], port)), peer);
            }
        };
        let _ = gw_peer;
        let (a_relay, to) = loop {
            let m = recv_text(&uac);
            if m.starts_with("SIP/2.0 200") {
                let to = header(&m, "To").unwrap_or_default().to_owned();
                break (SocketAddr::from(([127, 0, 0, 1], audio_port(&m).expect("SDP in the 200"))), to);
            }
        };
        let ack = format!(
            "ACK sip:1000@{c} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-a{i}-{pid}\r\nFrom: <sip:load@{local}>;tag=l{i}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            c = a.control,
            pid = std::process::id()
        );
        uac.send_to(ack.as_bytes(), a.control).expect("send ACK");
        legs.push((a_relay, b_relay));
        dialogs.push((call_id, to));
    }
    // The gateway's ACKs are not needed; drain them.
    gw.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let mut buf = [0u8; 4096];
    while gw.recv_from(&mut buf).is_ok() {}
    std::mem::forget(gw);
    (legs, dialogs)
}

fn teardown_switchboard(a: &Args, dialogs: &[(String, String)]) {
    let uac = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let local = uac.local_addr().expect("addr");
    for (i, (call_id, to)) in dialogs.iter().enumerate() {
        let bye = format!(
            "BYE sip:1000@{c} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-b{i}-{pid}\r\nFrom: <sip:load@{local}>;tag=l{i}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            c = a.control,
            pid = std::process::id()
        );
        let _ = uac.send_to(bye.as_bytes(), a.control);
    }
}

/// Bencode of the few shapes the ng protocol needs. (Cookies must be unique across runs:
/// rtpengine answers a cookie it has seen with its cached reply.)
fn bstr(s: &str) -> String {
    format!("{}:{s}", s.len())
}

fn ng(sock: &UdpSocket, to: SocketAddr, cookie: &str, pairs: &[(&str, &str)]) -> String {
    let mut msg = format!("{cookie} d");
    for (k, v) in pairs {
        msg.push_str(&bstr(k));
        msg.push_str(&bstr(v));
    }
    msg.push('e');
    sock.send_to(msg.as_bytes(), to).expect("send ng");
    recv_text(sock)
}

fn setup_rtpengine(a: &Args, a_port: u16, b_port: u16) -> Vec<Legs> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let pcmu = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    (0..a.calls)
        .map(|i| {
            let call_id = format!("load-{i}-{}", std::process::id());
            let offer = ng(&sock, a.control, &format!("o{i}-{}", std::process::id()), &[("command", "offer"), ("call-id", &call_id), ("from-tag", "a"), ("sdp", &sdp(a_port, "0 101", pcmu))]);
            let b_relay = audio_port(&offer).expect("rtpengine's offer SDP");
            let answer = ng(&sock, a.control, &format!("a{i}-{}", std::process::id()), &[("command", "answer"), ("call-id", &call_id), ("from-tag", "a"), ("to-tag", "b"), ("sdp", &sdp(b_port, "0 101", pcmu))]);
            let a_relay = audio_port(&answer).expect("rtpengine's answer SDP");
            (SocketAddr::from(([127, 0, 0, 1], a_relay)), SocketAddr::from(([127, 0, 0, 1], b_relay)))
        })
        .collect()
}

fn teardown_rtpengine(a: &Args) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok();
    for i in 0..a.calls {
        let call_id = format!("load-{i}-{}", std::process::id());
        let _ = ng(&sock, a.control, &format!("d{i}-{}", std::process::id()), &[("command", "delete"), ("call-id", &call_id), ("from-tag", "a")]);
    }
}

/// What one side received.
#[derive(Default)]
struct Rx {
    packets: u64,
    /// One-way delays (passthrough: from the send time in the payload).
    delays: Vec<Duration>,
    /// Transcoding: when each SSRC's tone came out.
    tone_at: HashMap<u32, Instant>,
}

fn receiver(sock: UdpSocket, start: Instant, until: Instant, passthrough: bool, codec: CodecKind) -> Rx {
    let mut rx = Rx::default();
    let mut batch = mmsg::Receiver::new();
    let mut decoders: HashMap<u32, Box<dyn switchboard_media::codec::Decoder>> = HashMap::new();
    let mut pcm = Vec::new();
    sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
    while Instant::now() < until {
        batch.recv(&sock, |data| take(&mut rx, &mut decoders, &mut pcm, start, passthrough, codec, data));
    }
    rx
}

/// One datagram received (its arrival: now, read right after the batch's system call).
fn take(
    rx: &mut Rx,
    decoders: &mut HashMap<u32, Box<dyn switchboard_media::codec::Decoder>>,
    pcm: &mut Vec<i16>,
    start: Instant,
    passthrough: bool,
    codec: CodecKind,
    data: &[u8],
) {
    let now = Instant::now();
    {
        let Ok(p) = rtp::RtpReader::new(data) else { return };
        if p.payload_type() > 34 && codec == CodecKind::Pcmu && p.payload_type() != 0 {
            return;
        }
        rx.packets += 1;
        let payload = p.payload();
        if passthrough {
            if let Some(b) = payload.get(..8) {
                let sent = u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
                let at = start + Duration::from_nanos(sent);
                rx.delays.push(now.saturating_duration_since(at));
            }
        } else if !rx.tone_at.contains_key(&p.ssrc()) {
            let dec = decoders.entry(p.ssrc()).or_insert_with(|| codec.decoder());
            pcm.clear();
            dec.decode(payload, pcm);
            let energy = pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64;
            if energy > 1e6 {
                rx.tone_at.insert(p.ssrc(), now);
            }
        }
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    let a = args();
    let side_a = UdpSocket::bind("127.0.0.1:0").expect("bind A");
    let side_b = UdpSocket::bind("127.0.0.1:0").expect("bind B");
    let (pa, pb) = (side_a.local_addr().expect("a").port(), side_b.local_addr().expect("b").port());
    for s in [&side_a, &side_b] {
        let _ = s.set_nonblocking(false);
        // Room for bursts: N calls' packets arrive within a millisecond (as root past
        // net.core.rmem_max; the relay's sockets keep the system's default).
        let fd = std::os::fd::AsFd::as_fd(s);
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&fd, sockopt::RcvBufForce, &(16 << 20)).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &(16 << 20));
        }
    }
    let t0 = Instant::now();
    let (legs, dialogs) = match a.target.as_str() {
        "switchboard" => setup_switchboard(&a, pa, pb),
        "rtpengine" => (setup_rtpengine(&a, pa, pb), Vec::new()),
        // No relay: each side sends straight to the other, the generator's own floor.
        "loopback" => {
            let (to_b, to_a) = (side_b.local_addr().expect("b"), side_a.local_addr().expect("a"));
            (vec![(to_b, to_a); a.calls], Vec::new())
        }
        other => panic!("unknown target {other}"),
    };
    let setup = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let passthrough = !a.transcode;
    let start = Instant::now();
    let until = start + Duration::from_secs(a.secs) + Duration::from_millis(600);
    let (ra, rb) = (side_a.try_clone().expect("clone"), side_b.try_clone().expect("clone"));
    // What arrives at A comes from B (PCMU back, or Opus when transcoding); at B, PCMU.
    let a_codec = if a.transcode { CodecKind::Opus } else { CodecKind::Pcmu };
    let rx_a = std::thread::spawn(move || receiver(ra, start, until, passthrough, a_codec));
    let rx_b = std::thread::spawn(move || receiver(rb, start, until, passthrough, CodecKind::Pcmu));
    let cpu0 = cpu_secs(a.pid);
    let own0 = cpu_secs(std::process::id());
    let frames = a.secs * 50;
    // Transcoding: each call's tone starts at frame onset + (call % 25): spread over 0.5 s.
    let onset = 100u64;
    let mut enc_a = a_codec.encoder();
    let mut enc_b = CodecKind::Pcmu.encoder();
    let tone_a: Vec<i16> = (0..a_codec.rate() / 50)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * f64::from(i) / f64::from(a_codec.rate())).sin()) as i16)
        .collect();
    let (mut silent_a, mut loud_a, mut silent_b) = (Vec::new(), Vec::new(), Vec::new());
    enc_a.encode(&vec![0; tone_a.len()], &mut silent_a);
    enc_a.encode(&tone_a, &mut loud_a);
    enc_b.encode(&[0; 160], &mut silent_b);
    let mut tone_sent: Vec<Option<Instant>> = vec![None; legs.len()];
    let mut sent = 0u64;
    let mut pkt = Vec::with_capacity(256);
    let mut payload = vec![0xFFu8; 160];
    let (mut out_a, mut out_b) = (mmsg::Sender::new(), mmsg::Sender::new());
    for k in 0..frames {
        let due = start + Duration::from_millis(20 * k);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        for (i, (to_a, to_b)) in legs.iter().enumerate() {
            let seq = k as u16;
            let stamp = start.elapsed().as_nanos() as u64;
            if passthrough {
                payload[..8].copy_from_slice(&stamp.to_be_bytes());
                payload[8..12].copy_from_slice(&(i as u32).to_be_bytes());
                rtp::write(&mut pkt, 0, k == 0, seq, (k * 160) as u32, 0x1000_0000 + i as u32, &payload);
                out_a.push(&side_a, &pkt, *to_a);
                rtp::write(&mut pkt, 0, k == 0, seq, (k * 160) as u32, 0x2000_0000 + i as u32, &payload);
                out_b.push(&side_b, &pkt, *to_b);
            } else {
                let loud = k >= onset + (i as u64 % 25);
                if loud && tone_sent[i].is_none() {
                    tone_sent[i] = Some(Instant::now());
                }
                let p = if loud { &loud_a } else { &silent_a };
                rtp::write(&mut pkt, 111, k == 0, seq, (k * 960) as u32, 0x1000_0000 + i as u32, p);
                out_a.push(&side_a, &pkt, *to_a);
                rtp::write(&mut pkt, 0, k == 0, seq, (k * 160) as u32, 0x2000_0000 + i as u32, &silent_b);
                out_b.push(&side_b, &pkt, *to_b);
            }
            sent += 2;
        }
        out_a.flush(&side_a);
        out_b.flush(&side_b);
    }
    let cpu = cpu_secs(a.pid) - cpu0;
    let own = cpu_secs(std::process::id()) - own0;
    let (rx_a, mut rx_b) = (rx_a.join().expect("rx a"), rx_b.join().expect("rx b"));
    match a.target.as_str() {
        "switchboard" => teardown_switchboard(&a, &dialogs),
        "rtpengine" => teardown_rtpengine(&a),
        _ => {}
    }
    let received = rx_a.packets + rx_b.packets;
    let loss = 100.0 * (1.0 - received as f64 / sent as f64);
    let call_secs = (a.calls as u64 * a.secs) as f64;
    print!(
        "target={} calls={} secs={} mode={} setup_s={:.2} sent={} received={} (a={} b={}) loss_pct={:.3} cpu_s={:.2} cpu_ms_per_call_s={:.3} calls_per_core={:.0} generator_cpu_ms_per_call_s={:.3}",
        a.target,
        a.calls,
        a.secs,
        if passthrough { "passthrough" } else { "opus<->pcmu" },
        setup.as_secs_f64(),
        sent,
        received,
        rx_a.packets,
        rx_b.packets,
        loss.max(0.0),
        cpu,
        cpu * 1000.0 / call_secs,
        if cpu > 0.0 { call_secs / a.secs as f64 / (cpu / a.secs as f64) } else { f64::NAN },
        own * 1000.0 / call_secs,
    );
    if passthrough {
        let mut d: Vec<Duration> = rx_a.delays.into_iter().chain(rx_b.delays).collect();
        let min = pct(&mut d, 0.0);
        let (p50, p99) = (pct(&mut d, 0.5), pct(&mut d, 0.99));
        println!(" delay_p50_ms={p50:.3} delay_p99_ms={p99:.3} jitter_p99_ms={:.3}", p99 - min);
    } else {
        // Leg A's tone comes out at leg B: match by the SSRC the relay gives each call? The
        // switch uses its own SSRCs, so take the k-th earliest onset against the k-th send.
        let mut outs: Vec<Instant> = rx_b.tone_at.drain().map(|(_, t)| t).collect();
        let mut ins: Vec<Instant> = tone_sent.into_iter().flatten().collect();
        outs.sort();
        ins.sort();
        let mut d: Vec<Duration> = outs.iter().zip(&ins).map(|(o, i)| o.saturating_duration_since(*i)).collect();
        println!(
            " tone_calls={} latency_p50_ms={:.1} latency_p99_ms={:.1}",
            d.len(),
            pct(&mut d, 0.5),
            pct(&mut d, 0.99)
        );
    }
}
