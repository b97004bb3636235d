//! Media through the real binary with SIPp doing the signalling and the test itself owning
//! each leg's RTP (the scenarios' SDP points at the test's sockets): transcoding, DTMF in
//! every form and suppression, prompts, ringback, IVR digits, RTP timeouts.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::rtp::{RtpPeer, decode, events, inband_digits, share_at, share_at_rate, sine, sine_at};
use common::{Route, Switch};
use switchboard_media::CodecKind;

/// The test's RTP ports for test `idx` (inside its block of 100, above SIPp's).
fn rtp_ports(idx: u16) -> (u16, u16) {
    let m = 40000 + idx * 100;
    (m + 70, m + 80)
}

fn addr(port: &serde_json::Value) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port.as_u64().expect("port") as u16))
}

/// The SIPp call center (`uas_media.xml`) answering with its SDP at the test's port `pb`.
fn call_center(
    sw: &Switch,
    pb: u16,
    fmts: &str,
    ring_ms: &str,
    expect_ruser: &str,
) -> common::Sipp {
    let pb = pb.to_string();
    sw.uas(
        0,
        "uas_media.xml",
        1,
        &keys(&[
            ("rtp_port", &pb),
            ("fmts", fmts),
            ("ring_ms", ring_ms),
            ("expect_ruser", expect_ruser),
        ]),
    )
}

/// SIPp arguments: `-key k v` for the SDP's keywords, `-set k v` for the scenario's global
/// variables (pause lengths, expected values).
fn keys<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    pairs
        .iter()
        .flat_map(|(k, v)| {
            let flag = if matches!(*k, "rtp_port" | "fmts") {
                "-key"
            } else {
                "-set"
            };
            [flag, k, v]
        })
        .collect()
}

#[test]
fn pcma_caller_and_pcmu_callee_are_transcoded_both_ways() {
    let idx = 30;
    let (pa, pb) = rtp_ports(idx);
    let sw = Switch::start("transcode", idx, Route::default());
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0 101", "0", "1000");
    let uac = sw.uac(
        "uac_media.xml",
        "1000",
        1,
        &keys(&[("rtp_port", &pa_s), ("fmts", "8 101"), ("hold_ms", "4000")]),
    );
    let call = sw.wait_media_up(Duration::from_secs(10));
    assert_eq!(call["media"]["a"]["codec"], "PCMA", "{call}");
    assert_eq!(call["media"]["b"]["codec"], "PCMU", "{call}");
    let (sw_a, sw_b) = (
        addr(&call["media"]["a"]["port"]),
        addr(&call["media"]["b"]["port"]),
    );
    let (mut a, mut b) = (RtpPeer::bind(pa), RtpPeer::bind(pb));
    // B speaks first at 600 Hz (latching its address), then A at 1 kHz while B listens.
    let b_thread = std::thread::spawn(move || {
        let heard = b.stream(sw_b, CodecKind::Pcmu, &sine(600.0, 8000, 8000.0));
        (b, heard)
    });
    std::thread::sleep(Duration::from_millis(200));
    let at_a = a.stream(sw_a, CodecKind::Pcma, &sine(1000.0, 8000, 8000.0));
    let (b, mut at_b) = b_thread.join().unwrap();
    at_b.extend(b.listen(Duration::from_millis(300)));
    let pcm_a = decode(&at_a, CodecKind::Pcma);
    let pcm_b = decode(&at_b, CodecKind::Pcmu);
    assert!(
        pcm_b.len() > 4000,
        "B got {} PCMU samples ({} packets)",
        pcm_b.len(),
        at_b.len()
    );
    assert!(
        pcm_a.len() > 4000,
        "A got {} PCMA samples ({} packets)",
        pcm_a.len(),
        at_a.len()
    );
    assert!(at_b.iter().all(|p| p.pt == 0), "B only hears PCMU");
    assert!(at_a.iter().all(|p| p.pt == 8), "A only hears PCMA");
    let steady_b = &pcm_b[800..pcm_b.len() - 800];
    let steady_a = &pcm_a[800..pcm_a.len() - 800];
    assert!(
        share_at(steady_b, 1000.0) > 0.8,
        "1 kHz at B: {:.2}",
        share_at(steady_b, 1000.0)
    );
    assert!(
        share_at(steady_a, 600.0) > 0.8,
        "600 Hz at A: {:.2}",
        share_at(steady_a, 600.0)
    );
    sw.expect_ok(vec![uac, uas]);
}

#[test]
fn an_opus_caller_reaches_a_pcmu_call_center_through_the_transcoder() {
    let idx = 37;
    let (pa, pb) = rtp_ports(idx);
    let sw = Switch::start(
        "opus",
        idx,
        Route {
            codecs: r#"["opus", "PCMU", "PCMA", "telephone-event"]"#,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0 101", "0", "1000");
    let uac = sw.uac(
        "uac_media.xml",
        "1000",
        1,
        &keys(&[
            ("rtp_port", &pa_s),
            ("fmts", "111 101"),
            ("hold_ms", "4000"),
        ]),
    );
    let call = sw.wait_media_up(Duration::from_secs(10));
    assert_eq!(call["media"]["a"]["codec"], "opus", "{call}");
    assert_eq!(call["media"]["b"]["codec"], "PCMU", "{call}");
    let (sw_a, sw_b) = (
        addr(&call["media"]["a"]["port"]),
        addr(&call["media"]["b"]["port"]),
    );
    let (mut a, mut b) = (RtpPeer::bind(pa), RtpPeer::bind(pb));
    let b_thread = std::thread::spawn(move || {
        let heard = b.stream(sw_b, CodecKind::Pcmu, &sine(500.0, 8000, 8000.0));
        (b, heard)
    });
    std::thread::sleep(Duration::from_millis(200));
    let at_a = a.stream(sw_a, CodecKind::Opus, &sine_at(900.0, 16000, 16000, 8000.0));
    let (b, mut at_b) = b_thread.join().unwrap();
    at_b.extend(b.listen(Duration::from_millis(300)));
    let pcm_b = decode(&at_b, CodecKind::Pcmu);
    let pcm_a = decode(&at_a, CodecKind::Opus);
    assert!(
        pcm_b.len() > 4000 && pcm_a.len() > 8000,
        "B {} / A {} samples",
        pcm_b.len(),
        pcm_a.len()
    );
    let (sb, sa) = (
        &pcm_b[1600..pcm_b.len() - 800],
        &pcm_a[3200..pcm_a.len() - 1600],
    );
    assert!(
        share_at(sb, 900.0) > 0.8,
        "900 Hz at B: {:.2}",
        share_at(sb, 900.0)
    );
    assert!(
        share_at_rate(sa, 500.0, 16000) > 0.8,
        "500 Hz at A: {:.2}",
        share_at_rate(sa, 500.0, 16000)
    );
    sw.expect_ok(vec![uac, uas]);
}

#[test]
fn rfc4733_on_one_leg_is_info_on_the_other_and_back() {
    let idx = 31;
    let (pa, pb) = rtp_ports(idx);
    // Leg A (the caller) takes digits as INFO; leg B as RFC 4733.
    let sw = Switch::start(
        "dtmf-info",
        idx,
        Route {
            before_bridge: r#"{ set = { dtmf_a = "info" } },"#,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0 101", "0", "1000");
    let uac = sw.uac(
        "uac_media_info.xml",
        "1000",
        1,
        &keys(&[
            ("rtp_port", &pa_s),
            ("fmts", "0"),
            ("hold_ms", "1500"),
            ("expect_digit", "5"),
        ]),
    );
    let call = sw.wait_media_up(Duration::from_secs(10));
    assert_eq!(call["media"]["a"]["dtmf"], "info", "{call}");
    assert_eq!(call["media"]["b"]["dtmf"], "rfc4733", "{call}");
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut b = RtpPeer::bind(pb);
    // B presses 5: the caller's scenario checks it gets INFO Signal=5, then sends INFO 9.
    let mut at_b = b.digit(sw_b, CodecKind::Pcmu, 101, '5', 120);
    at_b.extend(b.stream(sw_b, CodecKind::Pcmu, &[0; 8000]));
    let evs = events(&at_b, 101);
    assert!(
        evs.iter().any(|e| e.event == 9 && e.end),
        "B got digit 9 as RFC 4733: {evs:?}"
    );
    assert!(evs.iter().all(|e| e.event == 9), "{evs:?}");
    sw.expect_ok(vec![uac, uas]);
    let (info, rfc) = (
        sw.metric("switchboard_dtmf_digits_total{method=\"info\"}"),
        sw.metric("switchboard_dtmf_digits_total{method=\"rfc4733\"}"),
    );
    assert!(
        info >= 1.0 && rfc >= 1.0,
        "digits counted: info {info}, rfc4733 {rfc}"
    );
}

#[test]
fn inband_digits_are_detected_converted_and_suppressed_ones_never_reach_the_caller() {
    let idx = 32;
    let (pa, pb) = rtp_ports(idx);
    // Leg B is a plain phone (tones in the audio); # from it is a command, never passed on.
    let sw = Switch::start(
        "dtmf-inband",
        idx,
        Route {
            before_bridge: r##"{ set = { dtmf_b = "inband", dtmf_suppress_b = "#" } },"##,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0", "0", "1000");
    let uac = sw.uac(
        "uac_media.xml",
        "1000",
        1,
        &keys(&[("rtp_port", &pa_s), ("fmts", "0 101"), ("hold_ms", "4000")]),
    );
    let call = sw.wait_media_up(Duration::from_secs(10));
    assert_eq!(call["media"]["b"]["dtmf"], "inband", "{call}");
    let sw_b = addr(&call["media"]["b"]["port"]);
    let (a, mut b) = (RtpPeer::bind(pa), RtpPeer::bind(pb));
    let a_thread = std::thread::spawn(move || a.listen(Duration::from_millis(3000)));
    // 7 then # as tones, 150 ms each, with speech-level silence around.
    let mut audio = vec![0i16; 1600];
    let mut g = switchboard_media::dtmf::ToneGenerator::new(8000);
    g.push('7', 150);
    g.push('#', 150);
    let mut tones = vec![0i16; 4000];
    g.fill(&mut tones);
    audio.extend(tones);
    audio.extend(vec![0i16; 1600]);
    b.stream(sw_b, CodecKind::Pcmu, &audio);
    let at_a = a_thread.join().unwrap();
    let evs = events(&at_a, 101);
    assert!(
        evs.iter().any(|e| e.event == 7 && e.end),
        "7 reached A as RFC 4733: {evs:?}"
    );
    assert!(
        !evs.iter().any(|e| e.event == 11),
        "# must not reach A: {evs:?}"
    );
    let heard = decode(&at_a, CodecKind::Pcmu);
    assert!(
        !inband_digits(&heard).contains('#'),
        "A's audio carries no # tone"
    );
    sw.expect_ok(vec![uac, uas]);
    assert!(sw.metric("switchboard_dtmf_digits_total{method=\"inband\"}") >= 2.0);
}

#[test]
fn playback_plays_the_prompt_then_the_plan_goes_on() {
    let idx = 33;
    let (pa, _) = rtp_ports(idx);
    let sw = Switch::start(
        "playback",
        idx,
        Route {
            extensions: r#"
[[extension]]
name = "closed"
when.destination = '^9000$'
actions = [ { playback = "connecting" }, { hangup = "NORMAL_CLEARING" } ]
"#,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let a = RtpPeer::bind(pa);
    let uac = sw.uac(
        "uac_media_wait_bye.xml",
        "9000",
        1,
        &keys(&[("rtp_port", &pa_s), ("fmts", "8 0")]),
    );
    let got = a.listen(Duration::from_millis(4500));
    sw.expect_ok(vec![uac]);
    let pcma: Vec<_> = got.iter().filter(|p| p.pt == 8).collect();
    // connecting.wav lasts 2.72 s: 136 packets of 20 ms.
    assert!(
        (126..=146).contains(&pcma.len()),
        "{} packets of prompt",
        pcma.len()
    );
    assert_eq!(
        pcma.len(),
        got.len(),
        "A was answered with its first codec, PCMA"
    );
    let pcm = decode(&got, CodecKind::Pcma);
    let rms = (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!(rms > 500.0, "the prompt is audible: rms {rms:.0}");
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
    }
}

#[test]
fn a_call_whose_rtp_stops_is_hung_up_with_media_timeout() {
    let idx = 34;
    let (pa, pb) = rtp_ports(idx);
    let sw = Switch::start(
        "rtp-timeout",
        idx,
        Route {
            media_extra: "rtp_timeout = 2",
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0", "0", "1000");
    let uac = sw.uac(
        "uac_media_wait_bye.xml",
        "1000",
        1,
        &keys(&[("rtp_port", &pa_s), ("fmts", "0")]),
    );
    // Nobody sends RTP: both legs get a BYE after 2 s.
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"MEDIA_TIMEOUT\"}"),
        1.0
    );
    assert_eq!(sw.metric("switchboard_media_timeouts_total"), 1.0);
}

#[test]
fn read_digits_routes_what_the_caller_keys_in() {
    let idx = 35;
    let (pa, pb) = rtp_ports(idx);
    let sw = Switch::start(
        "ivr",
        idx,
        Route {
            extensions: r##"
[[extension]]
name = "menu"
when.destination = '^9100$'
actions = [
  { read_digits = { prompt = "enter-extension", min = 3, max = 6, timeout = 3, terminators = "#", context = "extensions" } },
  { playback = "goodbye" },
  { hangup = "NORMAL_CLEARING" },
]

[[extension]]
name = "extension"
context = "extensions"
when.destination = '^(\d{4})$'
actions = [ { bridge = { targets = ["gateway/gw1/$1"] } } ]
"##,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0", "0", "2345");
    let uac = sw.uac(
        "uac_media.xml",
        "9100",
        1,
        &keys(&[("rtp_port", &pa_s), ("fmts", "0 101"), ("hold_ms", "6000")]),
    );
    let call = sw.wait_a_media(Duration::from_secs(10));
    let sw_a = addr(&call["media"]["a"]["port"]);
    let mut a = RtpPeer::bind(pa);
    // The prompt starts; the caller barges in with 2345#.
    let heard = a.stream(sw_a, CodecKind::Pcmu, &[0; 4000]);
    assert!(
        heard.len() > 10,
        "the menu prompt plays: {} packets",
        heard.len()
    );
    for d in "2345#".chars() {
        a.digit(sw_a, CodecKind::Pcmu, 101, d, 100);
    }
    // The UAS checks the INVITE was for 2345; the caller hangs up after a while.
    sw.expect_ok(vec![uac, uas]);
}

#[test]
fn ringback_is_played_while_the_callee_rings_without_early_media() {
    let idx = 36;
    let (pa, pb) = rtp_ports(idx);
    let sw = Switch::start(
        "ringback",
        idx,
        Route {
            before_bridge: r#"{ ringback = "ringback-eu" },"#,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let a = RtpPeer::bind(pa);
    let uas = call_center(&sw, pb, "0", "2000", "1000");
    let uac = sw.uac(
        "uac_media.xml",
        "1000",
        1,
        &keys(&[("rtp_port", &pa_s), ("fmts", "0 101"), ("hold_ms", "500")]),
    );
    let got = a.listen(Duration::from_millis(1500));
    sw.expect_ok(vec![uac, uas]);
    let pcm = decode(&got, CodecKind::Pcmu);
    assert!(
        pcm.len() >= 8000,
        "a second of ringback: {} samples",
        pcm.len()
    );
    // EU ringback: 425 Hz, 1 s on.
    let on = &pcm[..4000];
    assert!(
        share_at(on, 425.0) > 0.8,
        "425 Hz: {:.2}",
        share_at(on, 425.0)
    );
}

#[test]
fn rtcp_reports_reach_each_leg_and_call_quality_is_shown() {
    let idx = 38;
    let (pa, pb) = rtp_ports(idx);
    let sw = Switch::start("rtcp", idx, Route::default());
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0", "0", "1000");
    let uac = sw.uac(
        "uac_media.xml",
        "1000",
        1,
        &keys(&[("rtp_port", &pa_s), ("fmts", "0"), ("hold_ms", "7500")]),
    );
    let call = sw.wait_media_up(Duration::from_secs(10));
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut b = RtpPeer::bind(pb);
    let b_rtcp = std::net::UdpSocket::bind(("127.0.0.1", pb + 1)).unwrap();
    b_rtcp
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    // B sends 6 s with every 20th packet lost (5 %).
    b.stream_lossy(sw_b, CodecKind::Pcmu, &vec![0; 48000], 20);
    let mut buf = [0u8; 1500];
    let (n, _) = b_rtcp
        .recv_from(&mut buf)
        .expect("an RTCP report for B within 8 s");
    let reports = switchboard_media::rtcp::parse(&buf[..n]);
    let block = reports
        .first()
        .and_then(|r| r.blocks.first())
        .copied()
        .expect("a report block about B's stream");
    // 5 % is 12.8/256.
    assert!(
        (8..=20).contains(&block.fraction_lost),
        "fraction lost {}",
        block.fraction_lost
    );
    let (_, out) = sw.ctl(&["calls"]);
    let calls: serde_json::Value = serde_json::from_str(&out).unwrap();
    let q = &calls[0]["quality"]["b"];
    assert!(q["rx_packets"].as_u64().unwrap() > 200, "{out}");
    assert!(q["rx_lost"].as_u64().unwrap() >= 10, "{out}");
    // B's stream is paced in real time: its timestamps keep up with its arrival.
    let drift = q["rx_drift_ms"].as_f64().expect("the drift is shown");
    assert!(drift.abs() < 150.0, "drift {drift} ms: {out}");
    sw.expect_ok(vec![uac, uas]);
    assert!(sw.metric("switchboard_rtp_lost_packets_total") >= 10.0);
}

/// The digits in telephone-events, one per event (its timestamp), with the final duration
/// of each (ms at 8 kHz).
fn digits_and_ms(packets: &[common::rtp::Packet]) -> Vec<(char, u32)> {
    let mut out: Vec<(u32, char, u32)> = Vec::new();
    for p in packets.iter().filter(|p| p.pt == 101) {
        let Some(e) = switchboard_media::dtmf::Event::parse(&p.payload) else {
            continue;
        };
        let c = match e.event {
            0..=9 => char::from(b'0' + e.event),
            10 => '*',
            11 => '#',
            _ => '?',
        };
        let ms = u32::from(e.duration) / 8;
        match out.last_mut() {
            Some(last) if last.0 == p.ts => last.2 = last.2.max(ms),
            _ => out.push((p.ts, c, ms)),
        }
    }
    out.into_iter().map(|(_, c, ms)| (c, ms)).collect()
}

#[test]
fn an_agents_codes_never_reach_the_caller_and_other_digits_arrive_in_order() {
    let idx = 39;
    let (pa, pb) = rtp_ports(idx);
    // The call center's phone (leg B) has codes bound; the caller is a SIP phone, which the
    // actions reach as INFO (SIPp's -aa answers them).
    let sw = Switch::start(
        "dtmf-bind",
        idx,
        Route {
            before_bridge: r#"{ dtmf_bind = { codes = { "*22" = "volume:+20", "*88" = "volume:-20" }, interdigit_ms = 400, confirm = false } },"#,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0 101", "0", "1000");
    let mut args = keys(&[("rtp_port", &pa_s), ("fmts", "0 101"), ("hold_ms", "8000")]);
    args.push("-aa");
    let uac = sw.uac("uac_media.xml", "1000", 1, &args);
    let call = sw.wait_media_up(Duration::from_secs(10));
    let sw_a = addr(&call["media"]["a"]["port"]);
    let sw_b = addr(&call["media"]["b"]["port"]);
    let (mut a, mut b) = (RtpPeer::bind(pa), RtpPeer::bind(pb));
    // The caller's side keeps its stream alive while it listens.
    let a_thread = std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..30 {
            got.extend(a.stream(sw_a, CodecKind::Pcmu, &[0; 1600]));
        }
        got
    });
    // `1` (no code), `*22` and `*88` (codes), `*2` alone (only the start of a code: it goes
    // on after the wait), then `#`. Each digit lasts 100 ms but the released `*`: 140 ms.
    b.stream(sw_b, CodecKind::Pcmu, &[0; 1600]);
    for (d, ms) in [
        ('1', 100),
        ('*', 100),
        ('2', 100),
        ('2', 100),
        ('*', 100),
        ('8', 100),
        ('8', 100),
        ('*', 140),
        ('2', 100),
    ] {
        b.digit(sw_b, CodecKind::Pcmu, 101, d, ms);
    }
    b.stream(sw_b, CodecKind::Pcmu, &[0; 8000]);
    b.digit(sw_b, CodecKind::Pcmu, 101, '#', 100);
    b.stream(sw_b, CodecKind::Pcmu, &[0; 4000]);
    let at_a = a_thread.join().unwrap();
    let got = digits_and_ms(&at_a);
    let digits: String = got.iter().map(|(c, _)| *c).collect();
    assert_eq!(digits, "1*2#", "what reached the caller: {got:?}");
    assert_eq!(
        inband_digits(&decode(&at_a, CodecKind::Pcmu)),
        "",
        "no tone in the caller's audio either"
    );
    // Held digits keep their own durations (within a packet's 20 ms).
    assert!(
        got[1].1.abs_diff(140) <= 20 && got[2].1.abs_diff(100) <= 20,
        "{got:?}"
    );
    sw.expect_ok(vec![uac, uas]);
    // Both codes were carried out (the SIP caller answered the INFOs) and recorded.
    let rows = common::http_get_auth(sw.ports.http, "/api/v1/cdrs", "test-token").unwrap();
    let rows: serde_json::Value = serde_json::from_str(&rows).unwrap();
    let codes: Vec<&str> = rows[0]["actions"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["code"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(codes, ["*22", "*88"], "{rows}");
}

#[test]
fn an_agents_inband_codes_are_cut_from_the_callers_audio_and_other_digits_arrive() {
    let idx = 40;
    let (pa, pb) = rtp_ports(idx);
    // The call center's phone sends tones; the caller takes RFC 4733.
    let sw = Switch::start(
        "dtmf-bind-inband",
        idx,
        Route {
            before_bridge: r##"{ set = { dtmf_b = "inband" } }, { dtmf_bind = { codes = { "*22" = "volume:+20" }, interdigit_ms = 400, confirm = false } },"##,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0", "0", "1000");
    let mut args = keys(&[("rtp_port", &pa_s), ("fmts", "0 101"), ("hold_ms", "6000")]);
    args.push("-aa");
    let uac = sw.uac("uac_media.xml", "1000", 1, &args);
    let call = sw.wait_media_up(Duration::from_secs(10));
    assert_eq!(call["media"]["b"]["dtmf"], "inband", "{call}");
    let sw_a = addr(&call["media"]["a"]["port"]);
    let sw_b = addr(&call["media"]["b"]["port"]);
    let (mut a, mut b) = (RtpPeer::bind(pa), RtpPeer::bind(pb));
    let a_thread = std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..20 {
            got.extend(a.stream(sw_a, CodecKind::Pcmu, &[0; 1600]));
        }
        got
    });
    // `*22` (a code) then `5` (no code), as 120 ms tones with 120 ms gaps.
    let mut g = switchboard_media::dtmf::ToneGenerator::new(8000);
    for d in "*225".chars() {
        g.push(d, 120);
    }
    let mut audio = vec![0i16; 1600];
    let mut tones = vec![0i16; 8000];
    g.fill(&mut tones);
    audio.extend(tones);
    audio.extend(vec![0i16; 8000]);
    b.stream(sw_b, CodecKind::Pcmu, &audio);
    let at_a = a_thread.join().unwrap();
    let got: String = digits_and_ms(&at_a).iter().map(|(c, _)| *c).collect();
    assert_eq!(
        got, "5",
        "only the digit that is no code reaches the caller"
    );
    let heard = decode(&at_a, CodecKind::Pcmu);
    assert_eq!(
        inband_digits(&heard),
        "",
        "no tone of any digit in the caller's audio"
    );
    sw.expect_ok(vec![uac, uas]);
}

/// One call for `secs` seconds, both legs streaming PCMU (leg B in `dtmf_b`), with
/// `before` run before the bridge: (switch CPU ms per call-second, median B→A latency ms).
fn bindings_point(idx: u16, name: &str, before: &str, secs: u32) -> (f64, f64) {
    use std::net::UdpSocket;
    let (pa, pb) = rtp_ports(idx);
    let sw = Switch::start(
        name,
        idx,
        Route {
            before_bridge: before,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let hold = (secs * 1000 + 3000).to_string();
    let uas = call_center(&sw, pb, "0 101", "0", "1000");
    let mut args = keys(&[("rtp_port", &pa_s), ("fmts", "0 101"), ("hold_ms", &hold)]);
    args.push("-aa");
    let uac = sw.uac("uac_media.xml", "1000", 1, &args);
    let call = sw.wait_media_up(Duration::from_secs(10));
    let sw_a = addr(&call["media"]["a"]["port"]);
    let sw_b = addr(&call["media"]["b"]["port"]);
    let a = UdpSocket::bind(("127.0.0.1", pa)).unwrap();
    let b = UdpSocket::bind(("127.0.0.1", pb)).unwrap();
    a.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let t0 = std::time::Instant::now();
    let pid = sw.pid().unwrap();
    let cpu0 = common::cpu_ms(pid);
    let mut lat = Vec::new();
    let mut sent_at = std::collections::HashMap::new();
    let mut buf = [0u8; 2048];
    let frames = secs * 50;
    for n in 0..frames {
        // 20 ms of (quiet) PCMU both ways; B's payload carries its frame number.
        let mut p = vec![0xFFu8; 172];
        p[0] = 0x80;
        p[1] = 0; // PCMU, no marker
        p[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        p[4..8].copy_from_slice(&(n * 160).to_be_bytes());
        p[8..12].copy_from_slice(&7u32.to_be_bytes());
        p[12..16].copy_from_slice(&n.to_be_bytes());
        b.send_to(&p, sw_b).unwrap();
        sent_at.insert(n, std::time::Instant::now());
        p[8..12].copy_from_slice(&8u32.to_be_bytes());
        a.send_to(&p, sw_a).unwrap();
        let due = t0 + Duration::from_millis(20 * u64::from(n + 1));
        while std::time::Instant::now() < due {
            if let Ok((len, _)) = a.recv_from(&mut buf)
                && len >= 16
                && buf[1] & 0x7f == 0
            {
                let k = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
                if let Some(t) = sent_at.remove(&k) {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    let cpu = common::cpu_ms(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    drop((a, b));
    sw.expect_ok(vec![uac, uas]);
    lat.sort_by(|x, y| x.total_cmp(y));
    let median = lat.get(lat.len() / 2).copied().unwrap_or(f64::NAN);
    (cpu / wall, median)
}

/// Benchmark (on demand: `bench/dtmf.sh`): what bound codes cost a call — the switch's CPU per
/// call-second and the audio's added latency, B (the call center) to A, without bindings,
/// with bindings on an RFC 4733 leg (digits gated, no delay) and on an in-band leg (the
/// delay line).
#[test]
#[ignore = "benchmark: run with bench/dtmf.sh"]
fn bench_bindings_cpu_and_latency() {
    let bind = r#"{ dtmf_bind = { codes = { "*22" = "volume:+20", "*88" = "volume:-20" }, confirm = false } },"#;
    let inband = format!(r#"{{ set = {{ dtmf_b = "inband" }} }}, {bind}"#);
    let points = [
        ("no bindings", String::new()),
        ("bindings, RFC 4733 leg", bind.to_owned()),
        ("bindings, in-band leg", inband),
    ];
    println!("BENCH | call | CPU ms per call-second | B→A latency ms (median) |");
    for round in 0..3 {
        for (i, (label, before)) in points.iter().enumerate() {
            let (cpu, lat) = bindings_point(45 + i as u16, &format!("bench-bind-{i}"), before, 15);
            println!("BENCH | {label} (round {round}) | {cpu:.2} | {lat:.1} |");
        }
    }
}

#[test]
fn an_agents_info_codes_are_answered_and_never_relayed_other_digits_arrive() {
    let idx = 41;
    let (pa, pb) = rtp_ports(idx);
    // The call center's phone keys digits as SIP INFO; the caller takes RFC 4733.
    let sw = Switch::start(
        "dtmf-bind-info",
        idx,
        Route {
            before_bridge: r#"{ set = { dtmf_b = "info" } }, { dtmf_bind = { codes = { "*22" = "volume:+20" }, interdigit_ms = 400, confirm = false } },"#,
            ..Route::default()
        },
    );
    let pa_s = pa.to_string();
    let pb_s = pb.to_string();
    let uas = sw.uas(
        0,
        "uas_media_keys_info.xml",
        1,
        &keys(&[("rtp_port", &pb_s)]),
    );
    let mut args = keys(&[("rtp_port", &pa_s), ("fmts", "0 101"), ("hold_ms", "5000")]);
    args.push("-aa");
    let uac = sw.uac("uac_media.xml", "1000", 1, &args);
    let call = sw.wait_media_up(Duration::from_secs(10));
    assert_eq!(call["media"]["b"]["dtmf"], "info", "{call}");
    let sw_a = addr(&call["media"]["a"]["port"]);
    let mut a = RtpPeer::bind(pa);
    let mut at_a = Vec::new();
    for _ in 0..15 {
        at_a.extend(a.stream(sw_a, CodecKind::Pcmu, &[0; 1600]));
    }
    let got: String = digits_and_ms(&at_a).iter().map(|(c, _)| *c).collect();
    assert_eq!(
        got, "1",
        "only the digit that is no code reaches the caller"
    );
    assert_eq!(
        inband_digits(&decode(&at_a, CodecKind::Pcmu)),
        "",
        "no tone in the caller's audio either"
    );
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(
        sw.metric("switchboard_dtmf_digits_total{method=\"info\"}"),
        4.0,
        "the switch took all four INFOs"
    );
}

#[test]
fn a_stranger_who_guesses_the_callers_port_is_never_heard_and_never_takes_the_stream() {
    let idx = 28;
    let (pa, pb) = rtp_ports(idx);
    let sw = Switch::start("rtp-inject", idx, Route::default());
    let pa_s = pa.to_string();
    let uas = call_center(&sw, pb, "0 101", "0", "1000");
    let uac = sw.uac(
        "uac_media.xml",
        "1000",
        1,
        &keys(&[("rtp_port", &pa_s), ("fmts", "0 101"), ("hold_ms", "6000")]),
    );
    let call = sw.wait_media_up(Duration::from_secs(10));
    let (sw_a, sw_b) = (
        addr(&call["media"]["a"]["port"]),
        addr(&call["media"]["b"]["port"]),
    );
    let (mut a, b) = (RtpPeer::bind(pa), RtpPeer::bind(pb));
    // Before the caller sends anything, a stranger (another address) streams 1.5 kHz to the
    // caller's port on the switch, and listens for what B says.
    let mut stranger = RtpPeer::bind_on("127.0.0.99", pa);
    let b_listens = std::thread::spawn(move || {
        let heard = b.listen(Duration::from_millis(1400));
        (b, heard)
    });
    let stolen = stranger.stream(sw_a, CodecKind::Pcmu, &sine(1500.0, 8000, 8000.0));
    let (mut b, injected) = b_listens.join().unwrap();
    assert!(
        injected.is_empty(),
        "B heard {} packets of the stranger's",
        injected.len()
    );
    // The caller's own stream goes through, and B's answer goes to the caller, not to the
    // stranger.
    let b_speaks = std::thread::spawn(move || {
        let heard = b.stream(sw_b, CodecKind::Pcmu, &sine(600.0, 8000, 8000.0));
        (b, heard)
    });
    std::thread::sleep(Duration::from_millis(100));
    let at_a = a.stream(sw_a, CodecKind::Pcmu, &sine(1000.0, 8000, 8000.0));
    let (_, at_b) = b_speaks.join().unwrap();
    let pcm_b = decode(&at_b, CodecKind::Pcmu);
    assert!(pcm_b.len() > 4000, "B got {} samples", pcm_b.len());
    assert!(share_at(&pcm_b[800..pcm_b.len() - 800], 1000.0) > 0.5);
    assert!(share_at(&pcm_b[800..pcm_b.len() - 800], 1500.0) < 0.05);
    assert!(decode(&at_a, CodecKind::Pcmu).len() > 4000, "A hears B");
    assert!(
        stolen.is_empty() && stranger.listen(Duration::from_millis(200)).is_empty(),
        "the stranger got none of the call"
    );
    assert!(sw.metric("switchboard_rtp_dropped_packets_total") >= 40.0);
    sw.expect_ok(vec![uac, uas]);
}
