//! Everything the media engine reads from the network or from files: RTP and RTCP packets
//! fed to a live session (transcoding and forwarding legs, telephone-events, in-band
//! detection), SDP bodies, WAV files, SIP INFO bodies, a=crypto lines and SRTP/SRTCP packets.
//! None may panic.
#![no_main]
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use switchboard_media::{CodecKind, DtmfMethod, LegMedia, Session, Side};

fuzz_target!(|data: &[u8]| {
    let _ = switchboard_media::sdp::audio(data);
    let _ = switchboard_media::wav::Wav::read(data);
    let _ = switchboard_media::rtcp::parse(data);
    let _ = switchboard_media::dtmf::parse_info("application/dtmf-relay", data);
    // SDES: an a=crypto value, and a packet checked under each suite's key.
    let _ = switchboard_media::srtp::Crypto::parse(&String::from_utf8_lossy(data));
    for suite in switchboard_media::srtp::SUITES {
        let key = switchboard_media::srtp::MasterKey::from_bytes(suite, &[7u8; 30][..if suite == switchboard_media::srtp::Suite::AeadAes128Gcm { 28 } else { 30 }]);
        if let Some(key) = key {
            let crypto = switchboard_media::srtp::Crypto { tag: 1, key, mki_len: 4 };
            let mut ctx = switchboard_media::srtp::Context::new(&crypto);
            let _ = ctx.unprotect_rtp(&mut data.to_vec());
            let _ = ctx.unprotect_rtcp(&mut data.to_vec());
        }
    }

    let now = Instant::now();
    let mut s = Session::new(1, Some(Duration::from_secs(1)));
    let leg = |codec: CodecKind, pt: u8, dtmf| LegMedia {
        codec,
        pt,
        ptime_ms: 20,
        te: Some((101, 8000)),
        dtmf,
        suppress: "#".into(),
        inband_delay_ms: 0,
        srtp: None,
    };
    // The first byte picks the legs: transcoding or forwarding, in-band or RFC 4733.
    let sel = data.first().copied().unwrap_or(0);
    let a = if sel & 1 == 0 { leg(CodecKind::Pcmu, 0, DtmfMethod::Inband) } else { leg(CodecKind::Opus, 111, DtmfMethod::Rfc4733) };
    let b = if sel & 2 == 0 { leg(CodecKind::Pcma, 8, DtmfMethod::Rfc4733) } else { leg(CodecKind::Pcmu, 0, DtmfMethod::Inband) };
    s.set_leg(now, Side::A, a);
    s.set_leg(now, Side::B, b);
    // The rest: packets of up to 255 bytes, each prefixed by its length and side.
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut t = now;
    while rest.len() >= 2 {
        let (len, side) = (usize::from(rest[0]), if rest[1] & 1 == 0 { Side::A } else { Side::B });
        let body = &rest[2..(2 + len).min(rest.len())];
        if rest[1] & 2 == 0 {
            s.handle_rtp(t, side, body);
        } else {
            s.handle_rtcp(t, side, body);
        }
        t += Duration::from_millis(7);
        s.handle_timeout(t);
        while let Some((_, buf)) = s.poll_transmit() {
            s.recycle(buf);
        }
        while s.poll_rtcp().is_some() {}
        while s.poll_event().is_some() {}
        rest = &rest[(2 + len).min(rest.len())..];
    }
});
