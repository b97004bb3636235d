//! Real SIP clients through the switch: baresip and linphonec as callers and as the call
//! center, PCMU, Opus and Opus ↔ PCMU transcoded, tones checked both ways, digits both ways
//! (RFC 4733 and SIP INFO), hold and resume — and every stream the switch sends captured on
//! the wire (`dumpcap` on lo) and run through the stream checker (`common::pcap`): sequence
//! without holes, timestamps that follow the wall clock, markers on discontinuities, SSRC as
//! the SDP says, and RTCP that reports only real loss, from the switch and from the clients.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::clients::{Baresip, BaresipConf, LinphoneConf, Linphonec, tone_share};
use common::pcap::{Capture, Health, Stream, Wire, check_switch_streams};
use common::{Ports, Route, Switch};

const CODECS: &str = r#"["PCMU", "PCMA", "opus", "telephone-event"]"#;
const SECS: Duration = Duration::from_secs(15);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The test's SIP ports and its RTP ports (the switch's and the clients').
fn filter(p: &Ports) -> String {
    format!(
        "udp and (portrange {}-{} or portrange {}-{})",
        p.sip,
        p.sip + 19,
        p.rtp.0,
        p.rtp.0 + 99
    )
}

/// The call center: a baresip answering `2000` on the gateway's address, playing 600 Hz.
fn baresip_callee(sw: &Switch, codecs: &str) -> Baresip {
    baresip_callee_enc(sw, codecs, "")
}

/// The same, with media encryption (`srtp-mand`: RTP/SAVP).
fn baresip_callee_enc(sw: &Switch, codecs: &str, mediaenc: &str) -> Baresip {
    let p = sw.ports;
    Baresip::start(
        &sw.dir,
        BaresipConf {
            name: "callee",
            sip: p.gw[0],
            ctrl: p.sip + 10,
            rtp: (p.rtp.0 + 40, p.rtp.0 + 59),
            user: "2000",
            codecs,
            tone: 600.0,
            mediaenc,
        },
    )
}

/// A caller: baresip playing 1000 Hz.
fn baresip_caller(sw: &Switch, codecs: &str) -> Baresip {
    baresip_caller_enc(sw, codecs, "")
}

fn baresip_caller_enc(sw: &Switch, codecs: &str, mediaenc: &str) -> Baresip {
    let p = sw.ports;
    Baresip::start(
        &sw.dir,
        BaresipConf {
            name: "caller",
            sip: p.sip + 6,
            ctrl: p.sip + 11,
            rtp: (p.rtp.0 + 60, p.rtp.0 + 79),
            user: "caller",
            codecs,
            tone: 1000.0,
            mediaenc,
        },
    )
}

fn linphonec(sw: &Switch, codec: &str, info: bool, auto_answer: bool, tone: f64) -> Linphonec {
    let p = sw.ports;
    Linphonec::start(
        &sw.dir,
        LinphoneConf {
            name: if auto_answer {
                "lin-callee"
            } else {
                "lin-caller"
            },
            sip: if auto_answer { p.gw[0] } else { p.sip + 8 },
            rtp: p.rtp.0 + 80,
            user: if auto_answer { "2000" } else { "lincaller" },
            codec,
            info,
            auto_answer,
            tone,
        },
    )
}

/// Packets missing from a client's stream as captured (duplicates are not loss).
fn real_loss(s: &Stream) -> i64 {
    let mut ext: Vec<i64> = Vec::new();
    let mut base = 0i64;
    let mut last: Option<u16> = None;
    for p in &s.packets {
        if let Some(l) = last
            && p.seq < l
            && l - p.seq > 0x8000
        {
            base += 0x1_0000;
        }
        last = Some(p.seq);
        ext.push(base + i64::from(p.seq));
    }
    ext.sort_unstable();
    ext.dedup();
    match (ext.first(), ext.last()) {
        (Some(a), Some(b)) => b - a + 1 - ext.len() as i64,
        _ => 0,
    }
}

/// Every stream the switch sent checked (panics on a defect), and the loss each side's RTCP
/// reported against the loss on the wire. Prints the figures.
fn check_legs(wire: &Wire, sw: &Switch) -> Vec<(Stream, Health)> {
    let ours: Vec<SocketAddr> = wire
        .sdps_from(addr(sw.ports.sip))
        .iter()
        .map(|s| s.media)
        .collect();
    assert!(!ours.is_empty(), "the switch sent no SDP");
    let checked = check_switch_streams(wire, &ours);
    assert!(
        checked.len() >= 2,
        "expected a stream to each leg, got {:?}",
        checked
            .iter()
            .map(|(s, _)| (s.src, s.dst))
            .collect::<Vec<_>>()
    );
    let rtcp = |a: SocketAddr| addr(a.port() + 1);
    for (s, h) in &checked {
        // What the client's receiver reports about our stream.
        let claimed = wire
            .rtcp_reports_from(rtcp(s.dst))
            .iter()
            .filter(|r| r.0 == s.ssrc)
            .map(|r| r.1)
            .max();
        println!(
            "FIGURE {} -> {}: {} packets, missing {}, receiver reports lost {:?}, drift {:.1} ms, talkspurts {}, digits {:?}",
            s.src,
            s.dst,
            s.packets.len(),
            h.missing,
            claimed,
            h.drift_ms,
            h.talkspurts,
            h.digits
        );
        assert!(
            claimed.unwrap_or(0) <= i32::try_from(h.missing).unwrap_or(i32::MAX),
            "{} reports {claimed:?} lost of our stream {:#x}; {} were",
            s.dst,
            s.ssrc,
            h.missing
        );
    }
    // What the switch reports about the clients' streams.
    for s in wire.rtp_streams().iter().filter(|s| ours.contains(&s.dst)) {
        let real = real_loss(s);
        let claimed = wire
            .rtcp_reports_from(rtcp(s.dst))
            .iter()
            .filter(|r| r.0 == s.ssrc)
            .map(|r| i64::from(r.1))
            .max();
        println!(
            "FIGURE {} -> {} (client): {} packets, real loss {real}, the switch reports {claimed:?}",
            s.src,
            s.dst,
            s.packets.len()
        );
        assert!(
            claimed.unwrap_or(0) <= real,
            "the switch reports {claimed:?} lost of {}'s stream; {real} were",
            s.src
        );
    }
    checked
}

/// The stream the switch sent to `dst`.
fn to(legs: &[(Stream, Health)], dst: SocketAddr) -> &(Stream, Health) {
    legs.iter()
        .find(|(s, _)| s.dst == dst)
        .unwrap_or_else(|| panic!("no stream from the switch to {dst}"))
}

fn wait_established(b: &Baresip) {
    b.wait_log("Call established", SECS);
    b.wait_log("incoming rtp for 'audio' established", SECS);
}

/// baresip ↔ switch ↔ baresip on one codec pair: 10 digits from the caller, 3 back from the
/// call center, a 3 s hold by the caller and resume; then the wire is checked.
fn baresip_call(idx: u16, name: &str, caller_codecs: &str, callee_codecs: &str) {
    let mut sw = Switch::prepare(
        name,
        idx,
        Route {
            codecs: CODECS,
            ..Default::default()
        },
    );
    let cap = Capture::start(&sw.dir, "wire", &filter(&sw.ports));
    let callee = baresip_callee(&sw, callee_codecs);
    sw.launch();
    let caller = baresip_caller(&sw, caller_codecs);
    caller.command("dial", &format!("sip:2000@127.0.0.1:{}", sw.ports.sip));
    wait_established(&caller);
    wait_established(&callee);
    std::thread::sleep(Duration::from_millis(1500));
    caller.command("sndcode", "1234567890");
    assert_eq!(callee.wait_digits(10, SECS), "1234567890");
    std::thread::sleep(Duration::from_millis(500));
    callee.command("sndcode", "#*9");
    assert_eq!(caller.wait_digits(3, SECS), "#*9");
    std::thread::sleep(Duration::from_millis(1000));
    caller.command("hold", "");
    std::thread::sleep(Duration::from_secs(3));
    caller.command("resume", "");
    std::thread::sleep(Duration::from_secs(2));
    caller.hangup();
    callee.wait_log("terminated", SECS);
    sw.wait_call_count(0, SECS);
    let wire = cap.stop();

    let legs = check_legs(&wire, &sw);
    let callee_media = wire.sdps_from(addr(sw.ports.gw[0]))[0].media;
    let caller_media = wire.sdps_from(addr(sw.ports.sip + 6))[0].media;
    assert_eq!(to(&legs, callee_media).1.digits, "1234567890");
    assert_eq!(to(&legs, caller_media).1.digits, "#*9");
    // The hold is a gap in what the switch sends the caller, resumed as a marked talkspurt.
    assert!(
        to(&legs, caller_media).1.talkspurts >= 1,
        "no gap for the hold in the stream to the caller"
    );
    // Tones: each side heard the other.
    let heard_by_callee = tone_share(&callee.received(), 1000.0);
    let heard_by_caller = tone_share(&caller.received(), 600.0);
    println!(
        "FIGURE tones: callee hears 1000 Hz {heard_by_callee:.2}, caller hears 600 Hz {heard_by_caller:.2}"
    );
    assert!(
        heard_by_callee > 0.6,
        "callee heard {heard_by_callee:.2} of 1000 Hz"
    );
    assert!(
        heard_by_caller > 0.6,
        "caller heard {heard_by_caller:.2} of 600 Hz"
    );
}

#[test]
fn baresip_to_baresip_pcmu_streams_stay_continuous_across_digits_and_hold() {
    baresip_call(100, "clients-pcmu", "pcmu", "pcmu");
}

#[test]
fn baresip_opus_to_baresip_pcmu_is_transcoded_and_streams_stay_continuous() {
    baresip_call(101, "clients-opus-pcmu", "opus/48000/1", "pcmu");
}

#[test]
fn baresip_to_baresip_opus_streams_stay_continuous_across_digits_and_hold() {
    baresip_call(102, "clients-opus", "opus/48000/1", "opus/48000/1");
}

/// linphonec → switch → baresip: digits from linphonec (RFC 4733 or INFO), digits back from
/// baresip (RFC 4733, or INFO towards linphonec), pause/resume by linphonec.
fn linphone_call(idx: u16, name: &str, info: bool) {
    let mut sw = Switch::prepare(
        name,
        idx,
        Route {
            codecs: CODECS,
            before_bridge: if info {
                r#"{ set = { dtmf_a = "info" } },"#
            } else {
                ""
            },
            ..Default::default()
        },
    );
    let cap = Capture::start(&sw.dir, "wire", &filter(&sw.ports));
    let callee = baresip_callee(&sw, "pcmu");
    sw.launch();
    let mut lin = linphonec(&sw, "pcmu", info, false, 1000.0);
    lin.say(&format!("call sip:2000@127.0.0.1:{}", sw.ports.sip));
    lin.wait_log("connected", SECS);
    wait_established(&callee);
    std::thread::sleep(Duration::from_millis(1500));
    lin.say("1590");
    assert_eq!(callee.wait_digits(4, SECS), "1590");
    callee.command("sndcode", "7#");
    assert_eq!(lin.wait_digits(2, SECS), "7#");
    std::thread::sleep(Duration::from_millis(500));
    lin.say("pause");
    std::thread::sleep(Duration::from_secs(3));
    lin.say("resume");
    std::thread::sleep(Duration::from_secs(2));
    lin.say("terminate");
    callee.wait_log("terminated", SECS);
    sw.wait_call_count(0, SECS);
    let wire = cap.stop();

    let legs = check_legs(&wire, &sw);
    let callee_media = wire.sdps_from(addr(sw.ports.gw[0]))[0].media;
    assert_eq!(to(&legs, callee_media).1.digits, "1590");
    let lin_sip = addr(sw.ports.sip + 8);
    if info {
        assert_eq!(wire.info_digits_to(lin_sip), "7#");
    } else {
        let lin_media = wire.sdps_from(lin_sip)[0].media;
        assert_eq!(to(&legs, lin_media).1.digits, "7#");
    }
    let heard_by_callee = tone_share(&callee.received(), 1000.0);
    println!("FIGURE tones: callee hears 1000 Hz {heard_by_callee:.2}");
    assert!(
        heard_by_callee > 0.6,
        "callee heard {heard_by_callee:.2} of 1000 Hz"
    );
    drop(lin);
}

#[test]
fn linphonec_to_baresip_rfc4733_digits_both_ways_and_pause() {
    linphone_call(103, "clients-lin", false);
}

#[test]
fn linphonec_to_baresip_info_digits_become_rfc4733_and_back() {
    linphone_call(104, "clients-lin-info", true);
}

/// The switch offers Opus to a linphone call center with telephone-event at Opus's clock: the
/// answer keeps it and the caller's digits reach linphone as RFC 4733, not as tones.
#[test]
fn a_linphone_call_center_on_opus_gets_digits_as_telephone_events() {
    let mut sw = Switch::prepare(
        "clients-lin-opus",
        105,
        Route {
            codecs: CODECS,
            ..Default::default()
        },
    );
    let cap = Capture::start(&sw.dir, "wire", &filter(&sw.ports));
    let lin = linphonec(&sw, "opus", false, true, 600.0);
    sw.launch();
    let caller = baresip_caller(&sw, "opus/48000/1");
    caller.command("dial", &format!("sip:2000@127.0.0.1:{}", sw.ports.sip));
    wait_established(&caller);
    std::thread::sleep(Duration::from_millis(1500));
    caller.command("sndcode", "42");
    assert_eq!(lin.wait_digits(2, SECS), "42");
    std::thread::sleep(Duration::from_millis(1000));
    caller.hangup();
    sw.wait_call_count(0, SECS);
    let wire = cap.stop();

    let legs = check_legs(&wire, &sw);
    let answer = &wire.sdps_from(addr(sw.ports.gw[0]))[0];
    assert!(
        answer
            .rtpmap
            .values()
            .any(|(n, r)| n == "telephone-event" && *r == 48000),
        "linphone's answer has no telephone-event/48000:\n{}",
        answer.text
    );
    assert_eq!(to(&legs, answer.media).1.digits, "42");
    let heard_by_caller = tone_share(&caller.received(), 600.0);
    println!("FIGURE tones: caller hears 600 Hz {heard_by_caller:.2}");
    assert!(
        heard_by_caller > 0.6,
        "caller heard {heard_by_caller:.2} of 600 Hz"
    );
}

/// The `a=crypto` keys (base64 key||salt) of an SDP body.
fn keys_in(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .filter_map(|c| c.split_whitespace().nth(2))
        .map(|k| {
            k.trim_start_matches("inline:")
                .split('|')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

fn m_line(sdp: &str) -> &str {
    sdp.lines().find(|l| l.starts_with("m=audio")).unwrap_or("")
}

/// baresip with SDES-SRTP on one leg or both, through the switch: each secured leg gets keys
/// of the switch's own, no key crosses to the other leg, audio passes both ways (the tones
/// each client decrypts), and digits keyed on one side reach the other.
/// `tags`: the bytes of SRTP tag on each 20 ms PCMU packet the switch sends the caller and the
/// callee (0: plain), which tells the suite the leg agreed.
fn srtp_call(
    idx: u16,
    name: &str,
    (caller_enc, callee_enc): (&str, &str),
    (gw, media): (&str, &str),
    tags: (usize, usize),
) {
    let mut sw = Switch::prepare(
        name,
        idx,
        Route {
            codecs: CODECS,
            gw1_extra: gw,
            media_extra: media,
            ..Default::default()
        },
    );
    let cap = Capture::start(&sw.dir, "wire", &filter(&sw.ports));
    let callee = baresip_callee_enc(&sw, "pcmu", callee_enc);
    sw.launch();
    let caller = baresip_caller_enc(&sw, "pcmu", caller_enc);
    caller.command("dial", &format!("sip:2000@127.0.0.1:{}", sw.ports.sip));
    wait_established(&caller);
    wait_established(&callee);
    std::thread::sleep(Duration::from_millis(1500));
    // Digits go towards a plain leg, where the wire shows them.
    let (keyer, hearer, want) = if callee_enc.is_empty() {
        (&caller, &callee, "147")
    } else {
        (&callee, &caller, "369")
    };
    keyer.command("sndcode", want);
    assert_eq!(hearer.wait_digits(3, SECS), want);
    // Long enough for RTCP (every 5 s) both ways.
    std::thread::sleep(Duration::from_millis(5500));
    caller.hangup();
    callee.wait_log("terminated", SECS);
    sw.wait_call_count(0, SECS);
    let wire = cap.stop();

    let from_caller = wire.sdps_from(addr(sw.ports.sip + 6));
    let from_callee = wire.sdps_from(addr(sw.ports.gw[0]));
    let from_switch = wire.sdps_from(addr(sw.ports.sip));
    let client_keys: Vec<String> = from_caller
        .iter()
        .chain(&from_callee)
        .flat_map(|s| keys_in(&s.text))
        .collect();
    for s in &from_switch {
        for k in keys_in(&s.text) {
            assert!(
                !client_keys.contains(&k),
                "the switch passed a client's key on:\n{}",
                s.text
            );
        }
    }
    // Each secured client spoke RTP/SAVP with keys, a plain one without; the switch wrote
    // RTP/SAVP to each secured leg and plain RTP/AVP to each other.
    for (enc, theirs) in [(caller_enc, &from_caller), (callee_enc, &from_callee)] {
        let theirs = &theirs[0].text;
        if enc.is_empty() {
            assert!(keys_in(theirs).is_empty(), "{theirs}");
        } else {
            assert!(m_line(theirs).contains("RTP/SAVP"), "{theirs}");
            assert!(!keys_in(theirs).is_empty(), "{theirs}");
        }
    }
    let secured_by_us = from_switch
        .iter()
        .filter(|s| m_line(&s.text).contains("RTP/SAVP"))
        .count();
    let plain_by_us = from_switch
        .iter()
        .filter(|s| m_line(&s.text).contains("RTP/AVP") && keys_in(&s.text).is_empty())
        .count();
    let secured_legs = [caller_enc, callee_enc]
        .iter()
        .filter(|e| !e.is_empty())
        .count();
    assert!(
        secured_by_us >= secured_legs && plain_by_us >= 2 - secured_legs,
        "SDP of ours: {secured_by_us} on RTP/SAVP, {plain_by_us} plain\n{}",
        from_switch
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join("\n--\n")
    );
    // What the switch sends each client: PCMU frames, each with the tag of its leg's suite.
    for (client, tag) in [
        (from_caller[0].media, tags.0),
        (from_callee[0].media, tags.1),
    ] {
        let lens: std::collections::BTreeSet<usize> = wire
            .rtp_streams()
            .iter()
            .filter(|st| st.dst == client && ours_addr(&from_switch, st.src))
            .flat_map(|st| {
                st.packets
                    .iter()
                    .filter(|p| p.pt == 0)
                    .map(|p| p.payload.len())
            })
            .collect();
        assert_eq!(
            lens.into_iter().collect::<Vec<_>>(),
            vec![160 + tag],
            "payload lengths of the PCMU the switch sent {client}"
        );
    }
    // The plain legs' streams are checked as any.
    let plain_legs: Vec<SocketAddr> = from_switch
        .iter()
        .filter(|s| keys_in(&s.text).is_empty())
        .map(|s| s.media)
        .collect();
    let hearer_plain = if callee_enc.is_empty() {
        caller_enc.is_empty() || !from_callee.is_empty()
    } else {
        caller_enc.is_empty()
    };
    if !plain_legs.is_empty() {
        let checked = check_switch_streams(&wire, &plain_legs);
        let hearer_media = if callee_enc.is_empty() {
            from_callee[0].media
        } else {
            from_caller[0].media
        };
        if hearer_plain {
            assert_eq!(to(&checked, hearer_media).1.digits, want);
        }
    }
    // The call's record: each secured leg under its suite, none of its packets refused, and
    // its SRTCP reports read (the loss it reports on our stream).
    let record = sw.ended_record();
    let quality: serde_json::Value = match &record["quality"] {
        serde_json::Value::String(q) => serde_json::from_str(q).unwrap_or_default(),
        q => q.clone(),
    };
    for (leg, enc, client) in [
        ("a", caller_enc, from_caller[0].media),
        ("b", callee_enc, from_callee[0].media),
    ] {
        let q = &quality[leg];
        println!("FIGURE srtp {name} leg {leg}: {q}");
        // libre opens the RTCP path with an APP "PING" in clear as the 200 reaches it (on a
        // busy machine a first report may go in clear too): refused when the leg's keys were
        // set before it came. The switch refuses those at most, and nothing else. In clear:
        // the compound's own lengths add up to the datagram (SRTCP adds its index and tag).
        let in_clear = wire
            .datagrams
            .iter()
            .filter(|d| d.src == addr(client.port() + 1))
            .filter(|d| d.data.get(1).is_some_and(|pt| (200..=204).contains(pt)))
            .filter(|d| rtcp_in_clear(&d.data))
            .count();
        let refused = q["srtp_refused"].as_u64().unwrap_or(u64::MAX);
        assert!(
            refused <= if enc.is_empty() { 0 } else { in_clear as u64 },
            "leg {leg}: {refused} refused, {in_clear} RTCP packets in clear: {q}"
        );
        if enc.is_empty() {
            assert!(q["srtp"].is_null(), "leg {leg}: {q}");
        } else {
            assert!(q["srtp"].is_string(), "leg {leg} secured: {q}");
            assert!(
                !q["remote_loss"].is_null(),
                "leg {leg}: no SRTCP report was read: {q}"
            );
        }
    }
    // Audio passed both ways: each client decrypted (or got in clear) the other's tone.
    let heard_by_callee = tone_share(&callee.received(), 1000.0);
    let heard_by_caller = tone_share(&caller.received(), 600.0);
    println!(
        "FIGURE srtp {name}: callee hears 1000 Hz {heard_by_callee:.2}, caller hears 600 Hz {heard_by_caller:.2}"
    );
    assert!(
        heard_by_callee > 0.6,
        "callee heard {heard_by_callee:.2} of 1000 Hz"
    );
    assert!(
        heard_by_caller > 0.6,
        "caller heard {heard_by_caller:.2} of 600 Hz"
    );
}

fn ours_addr(from_switch: &[common::pcap::Sdp], src: SocketAddr) -> bool {
    from_switch.iter().any(|s| s.media == src)
}

/// A caller on RTP/SAVP: the switch answers with a key of its own and the call center, on a
/// gateway without `srtp`, gets plain RTP and no key.
#[test]
fn a_baresip_srtp_caller_is_secured_by_the_switch_and_the_call_center_gets_plain_rtp() {
    srtp_call(
        106,
        "clients-srtp-caller",
        ("srtp-mand", ""),
        ("", ""),
        (10, 0),
    );
}

/// `srtp = "required"` on the gateway, AES-GCM the only suite: a plain caller, and a call
/// center on RTP/SAVP with keys of its own.
#[test]
fn a_gateway_requiring_srtp_gets_rtp_savp_on_aes_gcm_from_a_plain_caller() {
    srtp_call(
        107,
        "clients-srtp-gcm",
        ("", "srtp-mand"),
        (
            "srtp = \"required\"\n",
            "srtp_suites = [\"AEAD_AES_128_GCM\"]\n",
        ),
        (0, 16),
    );
}

/// Both legs secured, the 32-bit tag suite towards the call center.
#[test]
fn both_legs_on_srtp_each_with_its_own_keys() {
    srtp_call(
        108,
        "clients-srtp-both",
        ("srtp-mand", "srtp-mand"),
        (
            "srtp = \"required\"\n",
            "srtp_suites = [\"AES_CM_128_HMAC_SHA1_32\", \"AES_CM_128_HMAC_SHA1_80\"]\n",
        ),
        (10, 4),
    );
}

/// An RTCP compound sent in clear: its packets' length fields cover the datagram exactly
/// (an SRTCP one carries 4 more bytes of index and its authentication tag after them).
fn rtcp_in_clear(data: &[u8]) -> bool {
    let mut at = 0;
    while at + 4 <= data.len() {
        let words = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        at += (words + 1) * 4;
    }
    at == data.len()
}
