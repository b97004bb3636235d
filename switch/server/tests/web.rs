//! The browser leg end to end: headless Chromium opens the demo shop served by the real
//! binary, clicks "Call sales", and the call goes through Switchboard to a SIPp ACD whose RTP
//! the test owns. Chromium's fake microphone plays a tone; the ACD plays another. The same
//! call is placed from headless Firefox ESR too (WebDriver BiDi).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::browser::Browser;
use common::firefox::Firefox;
use common::rtp::{RtpPeer, decode, events, share_at, sine};
use common::{Route, Switch};
use switchboard_media::CodecKind;

/// Test RTP port (inside the test's block of 100, above SIPp's).
fn acd_rtp(idx: u16) -> u16 {
    40000 + idx * 100 + 80
}

/// The SIPp ACD (`uas_web.xml`) for `calls` calls: it checks the demo merchant and
/// `session` in the INVITE, answers with its SDP at the test's RTP port, and hangs up after
/// `bye_ms` ("0": waits for the BYE).
fn acd_uas(sw: &Switch, idx: u16, calls: u32, session: &str, bye_ms: &str) -> common::Sipp {
    let port = acd_rtp(idx).to_string();
    sw.uas(
        0,
        "uas_web.xml",
        calls,
        &[
            "-key",
            "rtp_port",
            &port,
            "-set",
            "expect_merchant",
            "demo",
            "-set",
            "expect_session",
            session,
            "-set",
            "bye_ms",
            bye_ms,
        ],
    )
}

const WEB_EXT: &str = r#"
[[extension]]
name = "web-sales"
context = "web"
when.var.link = '^sales$'
actions = [
  { header_add = { X-Merchant = "${merchant}", X-Link = "${link}", X-Session = "${session}", X-Page-Url = "${page_url}" } },
  { bridge = { targets = ["gateway/gw1/sales"], timeout = 20 } },
]
"#;

fn merchant_conf(http: u16, auth: &str) -> String {
    merchant_conf_max(http, auth, 4)
}

fn merchant_conf_max(http: u16, auth: &str, ip_max: usize) -> String {
    format!(
        r#"
[webrtc]
ip = "127.0.0.1"
reconnect_grace = 2
ip_calls_per_minute = 20
ip_max_calls = {ip_max}
[merchant.demo]
context = "web"
{auth}
origins = ["http://127.0.0.1:{http}"]
links = ["sales", "support", "echo"]
destinations = ["18005550100"]
"#
    )
}

/// A 16-bit mono 48 kHz WAV of a sine: Chromium's fake microphone.
fn tone_wav(path: &std::path::Path, freq: f64, secs: u32) {
    common::clients::tone_wav(path, freq, 48_000, secs);
}

/// The test's route: the `web` context to the ACD on gw1, Opus allowed, `conf` appended.
fn web_route(conf: &str) -> Route<'_> {
    Route {
        extensions: WEB_EXT,
        codecs: r#"["PCMU", "PCMA", "opus", "telephone-event"]"#,
        conf_extra: conf,
        ..Route::default()
    }
}

fn start(name: &str, idx: u16, auth: &str) -> Switch {
    let http = common::Ports::for_test(idx).http;
    let conf = merchant_conf(http, auth);
    Switch::prepare(name, idx, web_route(&conf))
}

fn browser(sw: &Switch, name: &str) -> Browser {
    let wav = sw.dir.join("mic.wav");
    tone_wav(&wav, 700.0, 60);
    let mut b = Browser::launch(name, &wav);
    b.open(&format!("http://127.0.0.1:{}/demo/shop", sw.ports.http));
    b.wait_for(
        "!!document.querySelector('#sales button')",
        Duration::from_secs(10),
    );
    b
}

/// A page in either browser: what the helpers below do with it.
trait Page {
    fn eval(&mut self, expr: &str) -> serde_json::Value;
    fn wait_for(&mut self, expr: &str, within: Duration);
}

impl Page for Browser {
    fn eval(&mut self, expr: &str) -> serde_json::Value {
        Browser::eval(self, expr)
    }
    fn wait_for(&mut self, expr: &str, within: Duration) {
        Browser::wait_for(self, expr, within)
    }
}

impl Page for Firefox {
    fn eval(&mut self, expr: &str) -> serde_json::Value {
        Firefox::eval(self, expr)
    }
    fn wait_for(&mut self, expr: &str, within: Duration) {
        Firefox::wait_for(self, expr, within)
    }
}

/// Sets a fact on the "sales" tag (the loader reads them at click time) and clicks.
fn click_sales(b: &mut impl Page, facts: &[(&str, &str)]) {
    click_link(b, "sales", facts);
}

/// Sets facts on the tag of `link` and clicks its button.
fn click_link(b: &mut impl Page, link: &str, facts: &[(&str, &str)]) {
    for (k, v) in facts {
        b.eval(&format!(
            "document.querySelector('script[data-link={link}]').dataset.{k} = {v:?}"
        ));
    }
    b.eval(&format!("document.querySelector('#{link} button').click()"));
}

const CALL: &str = "SwitchboardClient.calls[0]";

fn inbound_energy(b: &mut impl Page) -> f64 {
    b.eval(&format!(
        "(async () => {{ const s = await {CALL}.pc.getStats(); let e = 0; \
         s.forEach(r => {{ if (r.type === 'inbound-rtp' && r.kind === 'audio') e = r.totalAudioEnergy || 0; }}); return e; }})()"
    ))
    .as_f64()
    .unwrap_or(0.0)
}

/// The far end at `rtp` (PCMU, sending to the switch's leg B port `sw_b`) hears the browser's
/// 700 Hz, and the browser hears the far end's 1 kHz. Under load (the whole suite runs in
/// parallel on 2 cores) the path gets a few tries.
fn audio_flows_both_ways(b: &mut impl Page, rtp: &mut RtpPeer, sw_b: SocketAddr) {
    let before = inbound_energy(b);
    let share = far_end_hears(rtp, sw_b, 700.0, 8000 * 2, 4);
    assert!(
        share > 0.5,
        "the browser's 700 Hz reached the far end (share {share:.2})"
    );
    let after = inbound_energy(b);
    assert!(
        after - before > 0.01,
        "the browser received the far end's audio (energy {before:.4} -> {after:.4})"
    );
}

/// What share of the far end's received audio is at `hz`, while it sends `samples` of a
/// 1 kHz tone to the switch's leg B port `sw_b`: the best of up to `tries` rounds (under load
/// the path gets a few), stopping at the first above one half.
fn far_end_hears(
    rtp: &mut RtpPeer,
    sw_b: SocketAddr,
    hz: f64,
    samples: usize,
    tries: usize,
) -> f64 {
    let mut share = 0.0;
    for _ in 0..tries {
        let heard = rtp.stream(sw_b, CodecKind::Pcmu, &sine(1000.0, samples, 8000.0));
        let pcm = decode(&heard, CodecKind::Pcmu);
        if pcm.len() >= samples / 2 {
            share = share_at(&pcm[pcm.len() / 2..], hz);
            if share > 0.5 {
                break;
            }
        }
    }
    share
}

fn addr(port: &serde_json::Value) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port.as_u64().expect("port") as u16))
}

#[test]
fn browser_call_reaches_the_acd_with_its_facts_audio_flows_both_ways_dtmf_and_the_page_hangs_up() {
    let idx = 50;
    let mut sw = start("web-call", idx, "tokenless = true");
    let uas = acd_uas(&sw, idx, 1, "shopper-42", "0");
    sw.launch();
    let mut b = browser(&sw, "call");
    click_sales(&mut b, &[("session", "shopper-42"), ("processing", "off")]);
    let call = sw.wait_media_up(Duration::from_secs(15));
    assert_eq!(call["media"]["a"]["codec"], "opus", "{call}");
    assert_eq!(call["media"]["b"]["codec"], "PCMU", "{call}");
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(10),
    );
    assert_eq!(
        b.eval("document.querySelector('.sb-c2c-status').textContent"),
        "Connected"
    );
    // The ACD speaks (1 kHz) while it listens to the browser's microphone (700 Hz).
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut acd = RtpPeer::bind(acd_rtp(idx));
    audio_flows_both_ways(&mut b, &mut acd, sw_b);
    // A key on the panel's dial pad reaches the ACD as RFC 4733.
    b.eval("document.querySelector('.sb-c2c-key[aria-label=\"key 5\"]').click()");
    acd_hears_digit(&mut acd, sw_b, 5, "");
    // Hang-up from the page: the ACD gets the BYE (its scenario ends), the switch has no call.
    b.eval("document.querySelector('.sb-c2c-hang').click()");
    let (st, errs) = uas.wait(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "ACD scenario failed:\n{errs}\n{}",
        sw.log()
    );
    b.wait_for(&format!("{CALL}.ended === true"), Duration::from_secs(5));
    sw.wait_call_count(0, Duration::from_secs(5));
    assert!(sw.metric("switchboard_web_calls_total") >= 1.0);
    // An orderly hang-up (the widget's message, or its DTLS close if that comes first).
    let r = sw.ended_record();
    assert_eq!(r["cause"], "NORMAL_CLEARING", "{r}");
    assert_eq!(r["hangup_side"], "caller", "{r}");
}

/// Firefox's fake microphone: a sine Firefox makes itself (Chromium's plays `mic.wav`).
const FIREFOX_TONE_HZ: u32 = 700;

/// Headless Firefox ESR on the demo shop, its "Call sales" button there.
fn firefox(sw: &Switch, name: &str) -> Firefox {
    let mut b = Firefox::launch(name, FIREFOX_TONE_HZ);
    b.open(&format!("http://127.0.0.1:{}/demo/shop", sw.ports.http));
    b.wait_for(
        "!!document.querySelector('#sales button')",
        Duration::from_secs(10),
    );
    b
}

/// The page's words, its peer connection's state, its SDP offer and the switch's answer: for
/// a failure's message (Firefox throws on a closed connection's descriptions).
fn sdp_pair(b: &mut impl Page) -> String {
    let sdp = b.eval(&format!(
        "(() => {{ const c = {CALL}; if (!c || !c.pc) return 'no peer connection'; \
         let out = 'page: ' + c.status.textContent + ' (' + c.pc.connectionState + ')'; \
         try {{ out += '\\noffer:\\n' + c.pc.localDescription.sdp + '\\nanswer:\\n' + \
         c.pc.remoteDescription.sdp; }} catch (e) {{ out += ', no SDP: ' + e; }} return out; }})()"
    ));
    sdp.as_str().unwrap_or_default().to_owned()
}

/// The Chromium call above, from Firefox: the facts reach the ACD, audio flows both ways,
/// the page hangs up. No DTMF: Firefox offers telephone-event/8000 only and the browser leg
/// takes /48000 only (an open bug of its own).
#[test]
fn firefox_call_reaches_the_acd_with_its_facts_audio_flows_both_ways_dtmf_and_the_page_hangs_up() {
    // Firefox's tests count from 90: the Chromium ones count up one by one from 50.
    let idx = 90;
    let mut sw = start("web-firefox", idx, "tokenless = true");
    let uas = acd_uas(&sw, idx, 1, "shopper-ff", "0");
    sw.launch();
    let mut b = firefox(&sw, "call");
    click_sales(&mut b, &[("session", "shopper-ff"), ("processing", "off")]);
    let call = sw.wait_media_up(Duration::from_secs(15));
    assert_eq!(call["media"]["a"]["codec"], "opus", "{call}");
    assert_eq!(call["media"]["b"]["codec"], "PCMU", "{call}");
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(10),
    );
    assert_eq!(
        b.eval("document.querySelector('.sb-c2c-status').textContent"),
        "Connected"
    );
    let sdp = sdp_pair(&mut b);
    // The ACD speaks (1 kHz) while it listens to Firefox's microphone (700 Hz).
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut acd = RtpPeer::bind(acd_rtp(idx));
    let before = inbound_energy(&mut b);
    let share = far_end_hears(&mut acd, sw_b, f64::from(FIREFOX_TONE_HZ), 8000 * 2, 4);
    assert!(
        share > 0.5,
        "Firefox's {FIREFOX_TONE_HZ} Hz reached the ACD (share {share:.2})\n{sdp}\nnow: {}",
        sdp_pair(&mut b)
    );
    let after = inbound_energy(&mut b);
    assert!(
        after - before > 0.01,
        "Firefox received the ACD's audio (energy {before:.4} -> {after:.4})\n{sdp}\nnow: {}",
        sdp_pair(&mut b)
    );
    // And what it hears is the ACD's 1 kHz (WebAudio on the remote stream while the ACD
    // speaks on).
    let speaking = std::thread::spawn(move || {
        acd.stream(sw_b, CodecKind::Pcmu, &sine(1000.0, 8000 * 3, 8000.0));
    });
    std::thread::sleep(Duration::from_millis(300));
    let hz = heard_peak_hz(&mut b);
    speaking.join().expect("the ACD's RTP thread");
    assert!(
        (hz - 1000.0).abs() < 30.0,
        "Firefox heard the ACD's 1 kHz (peak at {hz:.0} Hz)\n{sdp}"
    );
    // Firefox offers telephone-event/8000 only: a key on the dial pad still reaches the ACD
    // as RFC 4733, and nothing throws in the page.
    assert_eq!(
        b.eval(&format!("{CALL}.sender.dtmf.canInsertDTMF")),
        true,
        "{sdp}"
    );
    b.eval("document.querySelector('.sb-c2c-key[aria-label=\"key 5\"]').click()");
    let mut acd = RtpPeer::bind(acd_rtp(idx));
    acd_hears_digit(&mut acd, sw_b, 5, &sdp);
    // Hang-up from the page: the ACD gets the BYE (its scenario ends), the switch has no call.
    b.eval("document.querySelector('.sb-c2c-hang').click()");
    let (st, errs) = uas.wait(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "ACD scenario failed:\n{errs}\n{}",
        sw.log()
    );
    b.wait_for(&format!("{CALL}.ended === true"), Duration::from_secs(5));
    sw.wait_call_count(0, Duration::from_secs(5));
    let r = sw.ended_record();
    assert_eq!(r["cause"], "NORMAL_CLEARING", "{r}");
    assert_eq!(r["hangup_side"], "caller", "{r}");
}

#[test]
fn the_acd_hangs_up_and_the_page_says_so() {
    let idx = 51;
    let mut sw = start("web-acd-bye", idx, "tokenless = true");
    let uas = acd_uas(&sw, idx, 1, "demo-visitor", "1500");
    sw.launch();
    let mut b = browser(&sw, "acd-bye");
    click_sales(&mut b, &[]);
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "ACD scenario failed:\n{errs}\n{}",
        sw.log()
    );
    b.wait_for(&format!("{CALL}.ended === true"), Duration::from_secs(5));
    assert_eq!(b.eval(&format!("{CALL}.reason")), "normal");
    assert_eq!(
        b.eval("document.querySelector('.sb-c2c-status').textContent"),
        "Call ended."
    );
    assert!(
        b.eval(&format!("{CALL}.events.join(',')"))
            .as_str()
            .is_some_and(|e| e.contains("ringing")
                && e.contains("answered")
                && e.ends_with("hangup"))
    );
    sw.wait_call_count(0, Duration::from_secs(5));
}

#[test]
fn bad_token_foreign_origin_and_forbidden_number_are_refused_before_any_invite() {
    let idx = 52;
    let mut sw = start("web-refused", idx, r#"secret = "merchant-secret""#);
    sw.launch();
    let mut b = browser(&sw, "refused");
    // A forged token.
    click_sales(
        &mut b,
        &[(
            "token",
            "4102444800.0000000000000000000000000000000000000000000000000000000000000000",
        )],
    );
    b.wait_for(&format!("{CALL}.ended === true"), Duration::from_secs(10));
    let status = b.eval("document.querySelector('.sb-c2c-status').textContent");
    assert!(
        status.as_str().is_some_and(|s| s.contains("token")),
        "{status}"
    );
    b.eval(&format!("{CALL}.close()"));
    // A number the merchant does not allow, with a valid token.
    let tok = switchboard_webrtc::token::mint(
        b"merchant-secret",
        "demo",
        "sales",
        "demo-visitor",
        4_102_444_800,
    );
    b.eval("SwitchboardClient.calls.length = 0");
    click_sales(&mut b, &[("token", &tok), ("destination", "19005550199")]);
    b.wait_for(&format!("{CALL}.ended === true"), Duration::from_secs(10));
    let status = b.eval("document.querySelector('.sb-c2c-status').textContent");
    assert!(
        status
            .as_str()
            .is_some_and(|s| s.contains("cannot be called")),
        "{status}"
    );
    // Another site's page (Origin) with a good token.
    let url = format!("ws://127.0.0.1:{}/ws", sw.ports.http);
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    // Refused at the upgrade: another site's script gets no socket at all.
    match tungstenite::connect(req) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("a foreign Origin got {other:?}"),
    }
    // None of it reached SIP.
    assert_eq!(sw.metric("switchboard_calls_total"), 0.0);
    assert!(!sw.log().contains("new call"), "{}", sw.log());
    for reason in ["bad_token", "destination_not_allowed", "origin_not_allowed"] {
        assert_eq!(
            sw.metric(&format!(
                "switchboard_web_refused_total{{reason=\"{reason}\"}}"
            )),
            1.0,
            "{reason}"
        );
    }
}

/// The ACD (speaking silence to the switch at `sw_b`) gets `digit` as RFC 4733, within 5 s.
fn acd_hears_digit(acd: &mut RtpPeer, sw_b: SocketAddr, digit: u8, context: &str) {
    let mut evs = Vec::new();
    for _ in 0..5 {
        let got = acd.stream(sw_b, CodecKind::Pcmu, &[0; 8000]);
        evs.extend(events(&got, 101));
        if evs.iter().any(|e| e.event == digit && e.end) {
            return;
        }
    }
    panic!("the ACD did not get digit {digit} as RFC 4733: {evs:?}\n{context}");
}

/// The dominant frequency of what the browser hears (WebAudio on the remote stream).
fn heard_peak_hz(b: &mut impl Page) -> f64 {
    peak_hz_of(b, CALL)
}

/// The dominant frequency of the audio element of `holder` (a widget's call, a console's).
fn peak_hz_of(b: &mut impl Page, holder: &str) -> f64 {
    b.eval(&format!(
        "(async () => {{ const c = {holder}; const ctx = new AudioContext(); \
         await Promise.race([ctx.resume(), new Promise(r => setTimeout(r, 2000))]); \
         if (ctx.state !== 'running') return 'context ' + ctx.state; \
         const src = ctx.createMediaStreamSource(c.audio.srcObject); const an = ctx.createAnalyser(); \
         an.fftSize = 8192; src.connect(an); await new Promise(r => setTimeout(r, 1500)); \
         const d = new Float32Array(an.frequencyBinCount); an.getFloatFrequencyData(d); \
         let best = 0; for (let i = 1; i < d.length; i++) if (d[i] > d[best]) best = i; \
         ctx.close(); return best * ctx.sampleRate / an.fftSize; }})()"
    ))
    .as_f64()
    .unwrap_or(0.0)
}

#[test]
fn the_shipped_echo_test_plays_its_prompt_then_echoes_the_caller() {
    let idx = 53;
    let http = common::Ports::for_test(idx).http;
    // The shipped web dialplan, as is, with what it names: the merchant's checkout page, the
    // sales queue and the demo gateway ("Call sales", "Call support"; not called here).
    let conf = format!(
        "{}[merchant.demo.pages]\ncheckout = \"/demo/checkout\"\n[gateway.demo]\naddress = \"127.0.0.1:9\"\nping = 0\n[queue.sales]\nmerchant = \"demo\"\n",
        merchant_conf(http, "tokenless = true")
    );
    let mut sw = Switch::prepare(
        "web-demo",
        idx,
        Route {
            extensions: include_str!("../../../conf/dialplan/web.toml"),
            ..web_route(&conf)
        },
    );
    sw.launch();
    let mut b = browser(&sw, "demo");
    click_link(&mut b, "echo", &[("processing", "off")]);
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    let call = sw.wait_a_media(Duration::from_secs(5));
    assert_eq!(call["media"]["a"]["codec"], "opus", "{call}");
    // The prompt (espeak-ng speech) first, then the caller's own 700 Hz comes back.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let hz = heard_peak_hz(&mut b);
        if (hz - 700.0).abs() < 30.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never heard the echo (peak at {hz:.0} Hz)\n{}",
            sw.log()
        );
    }
    assert!(sw.log().contains("echo"), "{}", sw.log());
    b.eval("document.querySelector('.sb-c2c-hang').click()");
    sw.wait_call_count(0, Duration::from_secs(5));
}

/// Benchmark (on demand: `bench/web.sh`): click → ringing and click → audio at the ACD, over
/// 20 calls on loopback; medians printed for docs/BENCHMARKS.md.
#[test]
#[ignore = "benchmark: run with bench/web.sh"]
fn bench_click_to_ringing_and_audio() {
    let idx = 54;
    let runs = 20;
    let mut sw = start("web-bench", idx, "tokenless = true");
    let uas = acd_uas(&sw, idx, runs, "demo-visitor", "300");
    sw.launch();
    let mut b = browser(&sw, "bench");
    let acd = RtpPeer::bind(acd_rtp(idx));
    let (mut ringing, mut audio) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let clicked = std::time::Instant::now();
        click_sales(&mut b, &[]);
        let c = format!("SwitchboardClient.calls[{i}]");
        // The first RTP packet from the browser at the ACD.
        let mut heard = None;
        while clicked.elapsed() < Duration::from_secs(10) {
            if !acd.listen(Duration::from_millis(2)).is_empty() {
                heard = Some(clicked.elapsed());
                break;
            }
        }
        audio.push(heard.expect("audio reached the ACD").as_secs_f64() * 1000.0);
        b.wait_for(&format!("{c}.ended === true"), Duration::from_secs(10));
        ringing.push(
            b.eval(&format!("{c}.times.ringing"))
                .as_f64()
                .expect("ringing time"),
        );
        b.eval(&format!("{c}.close()"));
        // Let the ACD's last packets drain.
        acd.listen(Duration::from_millis(200));
    }
    let (st, errs) = uas.wait(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{errs}");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "BENCH web: {runs} calls: click -> ringing median {:.1} ms (min {:.1}, max {:.1}); click -> audio at the ACD median {:.1} ms (min {:.1}, max {:.1})",
        median(&mut ringing),
        ringing[0],
        ringing[ringing.len() - 1],
        median(&mut audio),
        audio[0],
        audio[audio.len() - 1]
    );
}

#[test]
fn a_dropped_websocket_is_resumed_and_a_browser_gone_for_good_is_hung_up() {
    let idx = 55;
    let mut sw = start("web-drop", idx, "tokenless = true");
    let uas = acd_uas(&sw, idx, 1, "demo-visitor", "0");
    sw.launch();
    let mut b = browser(&sw, "drop");
    click_sales(&mut b, &[]);
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    // The WebSocket breaks: the widget resumes the call within the grace period.
    b.eval(&format!("{CALL}.ws.close()"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sw.log().contains("widget resumed the call") {
        assert!(
            std::time::Instant::now() < deadline,
            "no resume:\n{}",
            sw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b.eval(&format!("{CALL}.ended")), false);
    assert_eq!(sw.metric("switchboard_calls_active"), 1.0);
    // The browser dies: the call outlives it for the grace period (2 s here), then the ACD
    // gets its BYE.
    drop(b);
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "ACD scenario failed:\n{errs}\n{}",
        sw.log()
    );
    let log = sw.log();
    assert!(
        log.contains("did not come back") || log.contains("browser media gone"),
        "{log}"
    );
    sw.wait_call_count(0, Duration::from_secs(5));
    // The call's record says why: the caller's side went away (Q.850 38 in the leg's BYE).
    let r = sw.ended_record();
    assert_eq!(r["cause"], "NETWORK_OUT_OF_ORDER", "{r}");
    assert_eq!(r["hangup_side"], "caller", "{r}");
}

/// Starts `k` more calls from the page at once, each in a panel of its own.
fn more_calls(b: &mut Browser, k: usize) {
    for _ in 0..k {
        b.eval(
            "SwitchboardClient.start(document.body.appendChild(document.createElement('div')), \
             {base: location.origin, merchant: 'demo', link: 'sales', session: 'demo-visitor', token: '', \
              destination: '', processing: true, trail: []})",
        );
    }
}

#[test]
fn concurrent_browser_calls_each_get_their_own_leg() {
    let idx = 57;
    let http = common::Ports::for_test(idx).http;
    let conf = merchant_conf_max(http, "tokenless = true", 3);
    let mut sw = Switch::prepare("web-many", idx, web_route(&conf));
    let uas = acd_uas(&sw, idx, 3, "demo-visitor", "0");
    sw.launch();
    let mut b = browser(&sw, "many");
    click_sales(&mut b, &[]);
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    more_calls(&mut b, 2);
    b.wait_for(
        "SwitchboardClient.calls.filter(c => c.state === 'connected').length === 3",
        Duration::from_secs(15),
    );
    assert_eq!(sw.metric("switchboard_calls_active"), 3.0);
    // A fourth from the same address is over `ip_max_calls = 3`: refused in plain words.
    more_calls(&mut b, 1);
    b.wait_for(
        "SwitchboardClient.calls.some(c => c.ended && /too many calls/.test(c.status.textContent))",
        Duration::from_secs(15),
    );
    b.eval("SwitchboardClient.calls.forEach(c => c.hangup())");
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "{errs}\n{}", sw.log());
    sw.wait_call_count(0, Duration::from_secs(10));
    assert_eq!(
        sw.metric("switchboard_web_refused_total{reason=\"rate_limited\"}"),
        1.0
    );
}

/// Benchmark (on demand: `bench/web.sh`): the switch's CPU per concurrent browser call, both
/// directions flowing (browser Opus 48 kHz <-> ACD PCMU 8 kHz: str0m SRTP + transcoding).
#[test]
#[ignore = "benchmark: run with bench/web.sh"]
fn bench_cpu_per_browser_call() {
    let n: usize = std::env::var("BENCH_WEB_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let idx = 56;
    let http = common::Ports::for_test(idx).http;
    let conf = merchant_conf_max(http, "tokenless = true", n + 1);
    let mut sw = Switch::prepare(
        "web-cpu",
        idx,
        Route {
            // Three port pairs per browser call (its ICE socket, then leg A and leg B).
            rtp_range: Some((50000, 50999)),
            ..web_route(&conf)
        },
    );
    let uas = acd_uas(&sw, idx, n as u32, "demo-visitor", "0");
    sw.launch();
    let pid = sw.pid().expect("pid");
    let mut b = browser(&sw, "cpu");
    click_sales(&mut b, &[]);
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    more_calls(&mut b, n - 1);
    b.wait_for(
        &format!("SwitchboardClient.calls.filter(c => c.state === 'connected').length === {n}"),
        Duration::from_secs(30),
    );
    // The ACD speaks on every call.
    let (_, out) = sw.ctl(&["calls"]);
    let calls: Vec<serde_json::Value> = serde_json::from_str(&out).expect("calls");
    assert_eq!(calls.len(), n, "{out}");
    let talkers: Vec<_> = calls
        .iter()
        .map(|c| {
            let to = addr(&c["media"]["b"]["port"]);
            std::thread::spawn(move || {
                let mut p = RtpPeer::bind(0);
                p.stream(to, CodecKind::Pcmu, &sine(1000.0, 8000 * 14, 6000.0));
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    // BENCH_PERF=<file>: a perf profile (call graphs) of the switch over the measured 10 s.
    let perf = std::env::var("BENCH_PERF").ok().map(|out| {
        std::process::Command::new("perf")
            .args([
                "record",
                "-F",
                "1999",
                "-g",
                "-o",
                &out,
                "-p",
                &pid.to_string(),
            ])
            .args(["--", "sleep", "10"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf")
    });
    let (c0, t0) = (common::cpu_ms(pid), std::time::Instant::now());
    let w0 = common::ctx_switches(pid);
    std::thread::sleep(Duration::from_secs(10));
    let (c1, t1) = (common::cpu_ms(pid), std::time::Instant::now());
    let w1 = common::ctx_switches(pid);
    if let Some(mut p) = perf {
        let _ = p.wait();
    }
    for t in talkers {
        let _ = t.join();
    }
    let secs = (t1 - t0).as_secs_f64();
    let per_call = (c1 - c0) / secs / n as f64;
    println!(
        "BENCH web cpu: {n} browser calls, both directions: switch CPU {:.1} ms/s in all, {per_call:.2} ms per call-second ({:.0} calls per core), {:.0} wake-ups per call-second",
        (c1 - c0) / secs,
        1000.0 / per_call,
        (w1 - w0) as f64 / secs / n as f64
    );
    b.eval("SwitchboardClient.calls.forEach(c => c.hangup())");
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "{errs}");
}

const KEY_DEMO: &str = "sbk_demo_crm_key_for_tests";
const KEY_OTHER: &str = "sbk_other_merchant_key";

#[test]
fn a_crm_finds_the_browser_call_by_the_ani_the_acd_saw_and_another_merchant_gets_404() {
    let idx = 58;
    let http = common::Ports::for_test(idx).http;
    let hash = switchboard_webrtc::token::key_hash;
    let conf = format!(
        r#"{base}
context_cookies = ["cart"]
context_fields = ["email"]
api_keys = ["{demo}"]
[merchant.other]
tokenless = true
origins = ["http://127.0.0.1:{http}"]
links = ["sales"]
api_keys = ["{other}"]
"#,
        base = merchant_conf(http, "tokenless = true"),
        demo = hash(KEY_DEMO),
        other = hash(KEY_OTHER),
    );
    let mut sw = Switch::prepare(
        "web-crm",
        idx,
        Route {
            gw1_extra: "ani_pool = [\"15550100-15550109\"]",
            ..web_route(&conf)
        },
    );
    let uas = acd_uas(&sw, idx, 1, "shopper-9", "0");
    sw.launch();
    let mut b = browser(&sw, "crm");
    // The merchant's page has a cart cookie and an e-mail field; its tag names both.
    b.eval("document.cookie = 'cart=c-77; path=/'");
    b.eval("document.body.insertAdjacentHTML('beforeend', '<input name=email value=\"ann@example.com\">')");
    click_sales(
        &mut b,
        &[
            ("session", "shopper-9"),
            ("cookies", "cart"),
            ("fields", "email"),
        ],
    );
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    // The caller number the ACD saw: one of the pool's.
    let msgs = uas.messages();
    let ani = msgs
        .lines()
        .find_map(|l| {
            l.strip_prefix("From: ")
                .and_then(|f| f.split("<sip:").nth(1))
        })
        .and_then(|u| u.split('@').next())
        .expect("a From in the ACD's INVITE")
        .to_owned();
    assert!(ani.starts_with("155501"), "ANI {ani}");
    let path = format!("/api/v1/calls?ani={ani}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (status, body) = loop {
        let r = common::http_status(http, &path, KEY_DEMO);
        if r.0 == 200 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["merchant"], "demo", "{v}");
    assert_eq!(v["session"], "shopper-9", "{v}");
    assert_eq!(v["ani"], ani.as_str(), "{v}");
    assert!(
        v["page_url"]
            .as_str()
            .is_some_and(|p| p.ends_with("/demo/shop")),
        "{v}"
    );
    assert_eq!(v["web_context"]["cookies"]["cart"], "c-77", "{v}");
    assert_eq!(
        v["web_context"]["fields"]["email"], "ann@example.com",
        "{v}"
    );
    assert!(
        v["web_context"]["trail"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    // Isolation: another merchant's key sees nothing, not even that the call exists.
    let (status, body) = common::http_status(http, &path, KEY_OTHER);
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("shopper-9"), "{body}");
    let (status, _) = common::http_status(http, "/api/v1/calls?session=shopper-9", KEY_OTHER);
    assert_eq!(status, 404);
    let (status, _) = common::http_status(http, "/api/v1/calls", "not-a-key");
    assert_eq!(status, 401);
    // The merchant's own look-ups by session and its list of calls in progress; ops see all.
    let (status, body) = common::http_status(http, "/api/v1/calls?session=shopper-9", KEY_DEMO);
    assert_eq!(status, 200, "{body}");
    let (status, body) = common::http_status(http, "/api/v1/calls", KEY_DEMO);
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let (status, body) = common::http_status(http, "/api/v1/calls", KEY_OTHER);
    assert_eq!((status, body.trim()), (200, "[]"));
    let (status, _) = common::http_status(http, &path, "test-token");
    assert_eq!(status, 200);
    b.eval("document.querySelector('.sb-c2c-hang').click()");
    let (st, errs) = uas.wait(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{errs}");
}

#[test]
fn context_the_merchant_did_not_opt_in_to_is_refused_before_any_invite() {
    let idx = 59;
    let mut sw = start("web-ctx", idx, "tokenless = true");
    sw.launch();
    let mut b = browser(&sw, "ctx");
    b.eval("document.cookie = 'auth_token=secret-value; path=/'");
    click_sales(&mut b, &[("cookies", "auth_token")]);
    b.wait_for(&format!("{CALL}.ended === true"), Duration::from_secs(10));
    let status = b.eval("document.querySelector('.sb-c2c-status').textContent");
    assert!(
        status.as_str().is_some_and(|s| s.contains("not collected")),
        "{status}"
    );
    assert_eq!(sw.metric("switchboard_calls_total"), 0.0);
    assert!(
        !sw.log().contains("secret-value"),
        "a refused value was logged"
    );
}

/// A CRM's webhook endpoint: records every POST (event header, signature, body); answers
/// the first with 500 (so the switch must retry), then 200.
/// What the CRM got: (event header, signature header, body, the status it answered).
type Posts = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, u16)>>>;

fn crm_receiver(port: u16) -> Posts {
    crm_receiver_tls(port, None)
}

/// The same over https with `tls` (the server's certificate and key).
fn crm_receiver_tls(port: u16, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Posts {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind CRM");
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            match &tls {
                None => serve_one(conn, &g),
                Some(cfg) => {
                    let Ok(sc) = rustls::ServerConnection::new(cfg.clone()) else {
                        continue;
                    };
                    serve_one(rustls::StreamOwned::new(sc, conn), &g);
                }
            }
        }
    });
    got
}

fn serve_one<S: std::io::Read + std::io::Write>(conn: S, got: &Posts) {
    use std::io::{BufRead, BufReader, Read};
    let mut r = BufReader::new(conn);
    let (mut event, mut sig, mut len) = (String::new(), String::new(), 0usize);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let (k, v) = line.split_once(':').unwrap_or((&line, ""));
        match k.to_ascii_lowercase().as_str() {
            "x-switchboard-event" => event = v.trim().to_owned(),
            "x-switchboard-signature" => sig = v.trim().to_owned(),
            "content-length" => len = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    if event.is_empty() {
        return; // not a webhook (a TLS handshake that failed, a probe)
    }
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    let mut all = got.lock().unwrap();
    let status = if all.is_empty() { 500 } else { 200 };
    all.push((
        event,
        sig,
        String::from_utf8_lossy(&body).into_owned(),
        status,
    ));
    drop(all);
    let w = r.get_mut();
    let _ = write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = w.flush();
}

#[test]
fn the_crm_webhook_gets_signed_ringing_answered_and_hangup_with_a_retry() {
    let idx = 60;
    let ports = common::Ports::for_test(idx);
    let crm_port = ports.sip + 10;
    let got = crm_receiver(crm_port);
    let conf = format!(
        "{}webhook_url = \"http://127.0.0.1:{crm_port}/hooks/sb\"\nwebhook_secret = \"whsec-test\"\n",
        merchant_conf(ports.http, "tokenless = true")
    );
    let mut sw = Switch::prepare("web-hook", idx, web_route(&conf));
    let uas = acd_uas(&sw, idx, 1, "shopper-5", "800");
    sw.launch();
    let mut b = browser(&sw, "hook");
    click_sales(&mut b, &[("session", "shopper-5")]);
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "{errs}");
    // ringing (500, then retried after 0.5 s), answered, hangup.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = got.lock().unwrap().clone();
        if seen.iter().any(|(e, _, _, s)| e == "hangup" && *s == 200) {
            break seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "webhooks so far: {seen:?}\n{}",
            sw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let events: Vec<(&str, u16)> = seen.iter().map(|(e, _, _, s)| (e.as_str(), *s)).collect();
    assert_eq!(
        events,
        [
            ("ringing", 500),
            ("ringing", 200),
            ("answered", 200),
            ("hangup", 200)
        ],
        "{seen:?}"
    );
    for (event, sig, body, _) in &seen {
        let t: u64 = sig
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("t=");
        assert_eq!(
            sig,
            &switchboard_webrtc::token::sign_webhook(b"whsec-test", t, body),
            "signature of {event}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["event"], event.as_str());
        assert_eq!(v["merchant"], "demo");
        assert_eq!(v["session"], "shopper-5");
        assert!(
            v["call_id"].as_str().is_some_and(|c| c.starts_with("web-")),
            "{v}"
        );
    }
    let hangup: serde_json::Value = serde_json::from_str(&seen[3].2).unwrap();
    assert_eq!(hangup["cause"], "NORMAL_CLEARING", "{hangup}");
    assert_eq!(hangup["hangup_side"], "callee", "{hangup}");
    assert_eq!(
        sw.metric("switchboard_webhooks_total{outcome=\"delivered\"}"),
        3.0
    );
}

#[test]
fn an_https_crm_behind_its_own_ca_gets_the_webhooks() {
    let idx = 61;
    let ports = common::Ports::for_test(idx);
    let crm_port = ports.sip + 10;
    // The CRM's certificate, self-signed: the switch trusts it through webhook_ca.
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let cert_der = rustls::pki_types::CertificateDer::from(key.cert.der().to_vec());
    let key_der =
        rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).expect("key");
    let server = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert_der], key_der)
    .expect("server config");
    let got = crm_receiver_tls(crm_port, Some(std::sync::Arc::new(server)));
    let conf = format!(
        "{}webhook_url = \"https://127.0.0.1:{crm_port}/hooks/sb\"\nwebhook_secret = \"whsec-tls\"\nwebhook_ca = \"crm-ca.pem\"\nwebhook_events = [\"hangup\"]\n",
        merchant_conf(ports.http, "tokenless = true")
    );
    let mut sw = Switch::prepare("web-hook-tls", idx, web_route(&conf));
    std::fs::write(sw.dir.join("conf/crm-ca.pem"), key.cert.pem()).expect("write CA");
    let uas = acd_uas(&sw, idx, 1, "demo-visitor", "500");
    sw.launch();
    let mut b = browser(&sw, "hook-tls");
    click_sales(&mut b, &[]);
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "{errs}");
    // Only `hangup` was asked for: refused once (500), then delivered over TLS.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = got.lock().unwrap().clone();
        if seen.iter().any(|(_, _, _, s)| *s == 200) {
            let events: Vec<(&str, u16)> =
                seen.iter().map(|(e, _, _, s)| (e.as_str(), *s)).collect();
            assert_eq!(events, [("hangup", 500), ("hangup", 200)], "{seen:?}");
            let (_, sig, body, _) = &seen[1];
            let t: u64 = sig[2..].split(',').next().unwrap().parse().unwrap();
            assert_eq!(
                sig,
                &switchboard_webrtc::token::sign_webhook(b"whsec-tls", t, body)
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "webhooks so far: {seen:?}\n{}",
            sw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_widget_can_have_a_public_listener_apart_from_the_admin_api() {
    let idx = 62;
    let ports = common::Ports::for_test(idx);
    let public = ports.sip + 11;
    let conf = merchant_conf(ports.http, "tokenless = true").replace(
        "[webrtc]\n",
        &format!("[webrtc]\nlisten = \"127.0.0.1:{public}\"\n"),
    );
    let mut sw = Switch::prepare(
        "web-listen",
        idx,
        Route {
            conf_extra: &conf,
            ..Route::default()
        },
    );
    sw.launch();
    // The widget on its own address...
    let shop = common::http_get(public, "/demo/shop").expect("the shop on the public listener");
    assert!(shop.contains("c2c.js"), "{shop}");
    assert!(common::http_get(public, "/c2c.js").is_some());
    // ...and neither the admin API nor the CRM API there; no widget on the admin address.
    let (status, _) = common::http_status(public, "/api/v1/calls", "test-token");
    assert_eq!(status, 404);
    let (status, _) = common::http_status(public, "/metrics", "");
    assert_eq!(status, 404);
    assert!(common::http_get(ports.http, "/demo/shop").is_none());
    assert!(common::http_get(ports.http, "/metrics").is_some());
}

/// The "support" link of the keypad tests: the agent's codes are bound, then the ACD.
const KEYPAD_EXT: &str = r#"
[[extension]]
name = "web-support"
context = "web"
when.var.link = '^support$'
actions = [
  { header_add = { X-Merchant = "${merchant}", X-Link = "${link}", X-Session = "${session}", X-Page-Url = "${page_url}" } },
  { dtmf_bind = { codes = { "*76" = "push_page:checkout", "*88" = "volume:-20", "*31" = "echo_cancellation:off", "*41" = "echo_suppression:on" }, interdigit_ms = 500 } },
  { bridge = { targets = ["gateway/gw1/support"], timeout = 20 } },
]
"#;

/// A switch for the keypad tests: the demo merchant with its checkout page, `extensions`.
fn keypad_switch(name: &str, idx: u16, extensions: &str) -> Switch {
    let http = common::Ports::for_test(idx).http;
    let conf = format!(
        "{}[merchant.demo.pages]\ncheckout = \"/demo/checkout\"\n",
        merchant_conf(http, "tokenless = true")
    );
    Switch::prepare(
        name,
        idx,
        Route {
            extensions,
            ..web_route(&conf)
        },
    )
}

/// The agent keys `code` on the ACD's phone (RFC 4733, 100 ms a digit); what the ACD heard
/// meanwhile and for `then` after.
fn key_in(
    acd: &mut RtpPeer,
    to: SocketAddr,
    code: &str,
    then: Duration,
) -> Vec<common::rtp::Packet> {
    let mut got = Vec::new();
    for d in code.chars() {
        got.extend(acd.digit(to, CodecKind::Pcmu, 101, d, 100));
    }
    let frames = (then.as_millis() / 20) as usize;
    got.extend(acd.stream(to, CodecKind::Pcmu, &vec![0; 160 * frames]));
    got
}

/// The largest share of `freq` in any 40 ms of `pcm` (a short tone in a longer recording).
fn peak_share(pcm: &[i16], freq: f64) -> f64 {
    pcm.chunks(320)
        .filter(|c| c.len() == 320)
        .map(|c| share_at(c, freq))
        .fold(0.0, f64::max)
}

#[test]
fn the_agents_keypad_drives_the_callers_page_which_keeps_the_call_and_every_action_is_recorded() {
    let idx = 63;
    let http = common::Ports::for_test(idx).http;
    let hash = switchboard_webrtc::token::key_hash;
    // The merchant's CRM gets an `action` webhook for each code.
    let crm_port = common::Ports::for_test(idx).sip + 10;
    let hooks = crm_receiver(crm_port);
    let conf = format!(
        "{}actions_off = [\"echo_suppression\"]\napi_keys = [\"{}\"]\n\
         webhook_url = \"http://127.0.0.1:{crm_port}/hooks/sb\"\nwebhook_secret = \"whsec-test\"\nwebhook_events = [\"action\"]\n\
         [merchant.demo.pages]\ncheckout = \"/demo/checkout\"\n\
         [merchant.other]\ntokenless = true\norigins = [\"http://127.0.0.1:{http}\"]\nlinks = [\"sales\"]\napi_keys = [\"{}\"]\n",
        merchant_conf(http, "tokenless = true"),
        hash(KEY_DEMO),
        hash(KEY_OTHER),
    );
    let extensions = format!("{WEB_EXT}{KEYPAD_EXT}");
    let mut sw = Switch::prepare(
        "web-keypad",
        idx,
        Route {
            extensions: &extensions,
            ..web_route(&conf)
        },
    );
    let uas = acd_uas(&sw, idx, 1, "demo-visitor", "0");
    sw.launch();
    let mut b = browser(&sw, "keypad");
    b.wait_for(
        "!!document.querySelector('#support button')",
        Duration::from_secs(10),
    );
    b.eval("document.querySelector('#support button').click()");
    let call = sw.wait_media_up(Duration::from_secs(15));
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut acd = RtpPeer::bind(acd_rtp(idx));
    acd.stream(sw_b, CodecKind::Pcmu, &[0; 1600]);

    // *88: the caller's volume goes down a step; the panel says so; the agent hears two
    // short high beeps.
    let heard = key_in(&mut acd, sw_b, "*88", Duration::from_millis(800));
    b.wait_for(&format!("{CALL}.volume === 80"), Duration::from_secs(3));
    assert!(
        (b.eval(&format!("{CALL}.outGain.gain.value"))
            .as_f64()
            .unwrap()
            - 0.8)
            .abs()
            < 1e-6,
        "the output gain follows"
    );
    assert_eq!(
        b.eval("document.querySelector('.sb-c2c-notice').firstChild.textContent"),
        "Volume 80 %"
    );
    let pcm = decode(&heard, CodecKind::Pcmu);
    assert!(
        peak_share(&pcm, 1400.0) > 0.5,
        "the agent heard the success beeps (share {:.2})",
        peak_share(&pcm, 1400.0)
    );

    // *31: echo cancellation off, as the microphone track's settings show.
    key_in(&mut acd, sw_b, "*31", Duration::from_millis(200));
    b.wait_for(
        &format!("{CALL}.track.getSettings().echoCancellation === false"),
        Duration::from_secs(5),
    );

    // *41: echo suppression is turned off for this merchant: refused, never sent to the page,
    // and the agent hears the failure tone.
    let heard = key_in(&mut acd, sw_b, "*41", Duration::from_millis(800));
    let pcm = decode(&heard, CodecKind::Pcmu);
    assert!(
        peak_share(&pcm, 400.0) > 0.5,
        "the agent heard the failure tone (share {:.2})",
        peak_share(&pcm, 400.0)
    );
    assert_eq!(
        b.eval(&format!("{CALL}.actions.map(a => a.action).join(',')")),
        "volume,echo_cancellation"
    );

    // The same actions from the merchant's CRM, by the Call-ID the ACD saw, answered with
    // the browser's result; another merchant's key does not find the call.
    let calls = common::http_get_auth(sw.ports.http, "/api/v1/calls", "test-token").unwrap();
    let calls: serde_json::Value = serde_json::from_str(&calls).unwrap();
    let b_call_id = calls[0]["b_call_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{calls}"));
    let path = format!("/api/v1/calls/{b_call_id}/actions");
    let (st, body) = common::http_post_json(
        sw.ports.http,
        &path,
        KEY_DEMO,
        r#"{"action":"volume","set":150}"#,
    );
    assert_eq!(st, 200, "{body}\n{}", sw.log());
    assert!(body.contains("Volume 150 %"), "{body}");
    b.wait_for(&format!("{CALL}.volume === 150"), Duration::from_secs(3));
    let (st, body) = common::http_post_json(
        sw.ports.http,
        &path,
        KEY_OTHER,
        r#"{"action":"volume","set":10}"#,
    );
    assert_eq!(st, 404, "another merchant's key: {body}");
    let (st, body) = common::http_post_json(
        sw.ports.http,
        &path,
        KEY_DEMO,
        r#"{"action":"echo_suppression","on":true}"#,
    );
    assert_eq!(st, 422, "turned off for the merchant: {body}");
    assert!(body.contains("turned off"), "{body}");
    let (st, body) = common::http_post_json(
        sw.ports.http,
        &path,
        KEY_DEMO,
        r#"{"action":"format_disk"}"#,
    );
    assert_eq!(st, 400, "{body}");

    // *76: the page the code names opens.
    key_in(&mut acd, sw_b, "*76", Duration::from_millis(200));
    b.wait_for(
        "location.pathname === '/demo/checkout'",
        Duration::from_secs(5),
    );
    let moved = std::time::Instant::now();
    assert_eq!(
        b.eval("document.title"),
        "Checkout — Demo Shop",
        "the demo's checkout page"
    );
    // The call survives the navigation: the new page's panel takes it back with a new peer,
    // and the agent hears the shopper again; leg B saw nothing (same call, no BYE).
    b.wait_for(
        &format!("{CALL} && {CALL}.state === 'connected'"),
        Duration::from_secs(10),
    );
    let mut gap = None;
    while moved.elapsed() < Duration::from_secs(8) {
        let heard = acd.stream(sw_b, CodecKind::Pcmu, &sine(1000.0, 800, 8000.0));
        let pcm = decode(&heard, CodecKind::Pcmu);
        if pcm.len() >= 400 && share_at(&pcm, 700.0) > 0.5 {
            gap = Some(moved.elapsed());
            break;
        }
    }
    let gap = gap.unwrap_or_else(|| panic!("the shopper's audio never came back\n{}", sw.log()));
    println!("audio back {} ms after the page moved", gap.as_millis());
    let before = inbound_energy(&mut b);
    acd.stream(sw_b, CodecKind::Pcmu, &sine(1000.0, 8000, 8000.0));
    let after = inbound_energy(&mut b);
    assert!(
        after - before > 0.01,
        "the new page hears the agent (energy {before:.4} -> {after:.4})"
    );
    let calls = common::http_get_auth(sw.ports.http, "/api/v1/calls", "test-token").unwrap();
    let calls: serde_json::Value = serde_json::from_str(&calls).unwrap();
    assert_eq!(calls.as_array().map(Vec::len), Some(1), "{calls}");
    assert_eq!(calls[0]["call_id"], call["call_id"], "the same call");
    // Hang up from the new page: now the ACD gets its BYE.
    b.eval("document.querySelector('.sb-c2c-hang').click()");
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "ACD: {errs}\n{}", sw.log());

    // Every action is in the call's record, in order, with its code, detail and result
    // (after the dialplan's own `dtmf_bind`).
    let r = sw.ended_record();
    let all = r["actions"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(all[0]["name"], "dtmf_bind", "{r}");
    let actions = &all[1..];
    let summary: Vec<String> = actions
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a["code"].as_str().unwrap_or(""),
                a["name"].as_str().unwrap_or(""),
                a["ok"]
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "*88 volume true",
            "*31 echo_cancellation true",
            "*41 echo_suppression false",
            " volume true",
            " echo_suppression false",
            "*76 push_page true"
        ],
        "{r}"
    );
    assert_eq!(actions[0]["detail"], "Volume 80 %", "{r}");
    assert!(
        actions[2]["result"]
            .as_str()
            .is_some_and(|s| s.contains("turned off")),
        "{r}"
    );
    assert_eq!(actions[3]["detail"], "Volume 150 %", "{r}");
    // The CRM heard of every code, in order, with what came of it (signed like the others).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let posted = loop {
        let seen: Vec<serde_json::Value> = hooks
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _, _, st)| e == "action" && *st == 200)
            .filter_map(|(_, _, body, _)| serde_json::from_str(body).ok())
            .collect();
        if seen.len() >= 4 || std::time::Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let posted: Vec<String> = posted
        .iter()
        .map(|v| {
            format!(
                "{} {} {}",
                v["code"].as_str().unwrap_or(""),
                v["action"].as_str().unwrap_or(""),
                v["ok"]
            )
        })
        .collect();
    assert_eq!(
        posted,
        [
            "*88 volume true",
            "*31 echo_cancellation true",
            "*41 echo_suppression false",
            "*76 push_page true"
        ]
    );
    assert_eq!(
        actions[5]["detail"],
        format!("http://127.0.0.1:{http}/demo/checkout"),
        "{r}"
    );
}

#[test]
fn a_call_window_stays_while_the_agent_pushes_a_page_into_the_merchants_window() {
    let idx = 64;
    let mut sw = keypad_switch("web-popup", idx, &format!("{WEB_EXT}{KEYPAD_EXT}"));
    let uas = acd_uas(&sw, idx, 1, "demo-visitor", "0");
    sw.launch();
    let mut b = browser(&sw, "popup");
    b.wait_for(
        "!!document.querySelector('#support button')",
        Duration::from_secs(10),
    );
    // data-window="popup" on the tag: the call gets a window of its own.
    b.eval("document.querySelector('script[data-link=support]').dataset.window = 'popup'");
    b.eval("document.querySelector('#support button').click()");
    const POPUP: &str = "window.open('', 'sb-c2c-call')";
    b.wait_for(
        &format!("{POPUP}.SwitchboardClient.calls[0].state === 'connected'"),
        Duration::from_secs(15),
    );
    assert_eq!(
        b.eval(&format!(
            "{POPUP}.document.querySelectorAll('.sb-c2c-panel').length"
        )),
        1,
        "the panel is in the call window"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('.sb-c2c-panel').length"),
        0,
        "and not in the merchant's page"
    );
    let call = sw.wait_media_up(Duration::from_secs(5));
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut acd = RtpPeer::bind(acd_rtp(idx));
    acd.stream(sw_b, CodecKind::Pcmu, &[0; 1600]);
    // *76: the merchant's window goes to the checkout; the call window stays, connected.
    key_in(&mut acd, sw_b, "*76", Duration::from_millis(200));
    b.wait_for(
        "location.pathname === '/demo/checkout'",
        Duration::from_secs(5),
    );
    b.wait_for(
        &format!("{POPUP}.SwitchboardClient.calls[0].state === 'connected'"),
        Duration::from_secs(2),
    );
    assert_eq!(
        b.eval(&format!("{POPUP}.SwitchboardClient.calls.length")),
        1,
        "the same call, never re-placed"
    );
    // The shopper is still heard.
    let share = far_end_hears(&mut acd, sw_b, 700.0, 8000, 4);
    assert!(
        share > 0.5,
        "the shopper's 700 Hz after the push ({share:.2})"
    );
    b.eval(&format!(
        "{POPUP}.document.querySelector('.sb-c2c-hang').click()"
    ));
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "ACD: {errs}\n{}", sw.log());
}

#[test]
fn firefox_the_agents_keypad_drives_the_page_and_the_call_survives_the_pushed_page() {
    let idx = 91;
    let mut sw = keypad_switch("web-ff-keypad", idx, &format!("{WEB_EXT}{KEYPAD_EXT}"));
    let uas = acd_uas(&sw, idx, 1, "demo-visitor", "0");
    sw.launch();
    let mut b = firefox(&sw, "keypad");
    b.wait_for(
        "!!document.querySelector('#support button')",
        Duration::from_secs(10),
    );
    b.eval("document.querySelector('#support button').click()");
    let call = sw.wait_media_up(Duration::from_secs(15));
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut acd = RtpPeer::bind(acd_rtp(idx));
    acd.stream(sw_b, CodecKind::Pcmu, &[0; 1600]);
    // *88: Firefox's output gain goes down a step.
    key_in(&mut acd, sw_b, "*88", Duration::from_millis(300));
    b.wait_for(
        &format!("{CALL}.volume === 80 && Math.abs({CALL}.outGain.gain.value - 0.8) < 1e-6"),
        Duration::from_secs(3),
    );
    // *31: echo cancellation off, as Firefox's microphone track reports it.
    key_in(&mut acd, sw_b, "*31", Duration::from_millis(300));
    b.wait_for(
        &format!("{CALL}.track.getSettings().echoCancellation === false"),
        Duration::from_secs(5),
    );
    // *76: the checkout opens and the new page takes the call back.
    key_in(&mut acd, sw_b, "*76", Duration::from_millis(200));
    b.wait_for(
        "location.pathname === '/demo/checkout'",
        Duration::from_secs(5),
    );
    b.wait_for(
        &format!("{CALL} && {CALL}.state === 'connected'"),
        Duration::from_secs(10),
    );
    let share = far_end_hears(&mut acd, sw_b, f64::from(FIREFOX_TONE_HZ), 8000, 6);
    assert!(
        share > 0.5,
        "Firefox's tone reaches the ACD after the page moved (share {share:.2})\n{}",
        sw.log()
    );
    b.eval("document.querySelector('.sb-c2c-hang').click()");
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "ACD: {errs}\n{}", sw.log());
    let r = sw.ended_record();
    let codes: Vec<&str> = r["actions"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["code"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(codes, ["*88", "*31", "*76"], "{r}");
}

#[test]
fn a_page_that_claims_another_site_gets_no_page_pushed_and_the_record_says_so() {
    let idx = 65;
    let http = common::Ports::for_test(idx).http;
    let conf = format!(
        "{}[merchant.demo.pages]\ncheckout = \"/demo/checkout\"\n",
        merchant_conf(http, "tokenless = true")
    );
    let extensions = KEYPAD_EXT.replace(
        "X-Page-Url = \"${page_url}\"",
        "X-Seen-Url = \"${page_url}\"",
    );
    let mut sw = Switch::prepare(
        "web-off-origin",
        idx,
        Route {
            extensions: &extensions,
            ..web_route(&conf)
        },
    );
    let port = acd_rtp(idx).to_string();
    let uas = sw.uas(
        0,
        "uas_media.xml",
        1,
        &[
            "-key",
            "rtp_port",
            &port,
            "-key",
            "fmts",
            "0 101",
            "-set",
            "ring_ms",
            "0",
            "-set",
            "expect_ruser",
            "support",
        ],
    );
    sw.launch();
    let mut b = browser(&sw, "off-origin");
    // A script on the page places the call saying it is on another site (only the Origin
    // is the browser's word; the page's URL is the page's): the merchant's path
    // ("/demo/checkout") must not become a URL there.
    let loaded = b.eval(
        "(async () => { const t = await (await fetch('/c2c.js')).text(); \
         const u = t.match(/\\/client\\/[0-9a-f]+\\.js/)[0]; \
         await new Promise((ok, no) => { const s = document.createElement('script'); s.src = u; \
         s.onload = ok; s.onerror = no; document.head.appendChild(s); }); return !!window.SwitchboardClient; })()",
    );
    assert_eq!(loaded, true, "the media client loads");
    b.eval(
        "(() => { SwitchboardClient.calls.length = 0; const p = document.createElement('div'); \
         p.className = 'sb-c2c-panel'; p.appendChild(document.createElement('div')).className = 'sb-c2c-status'; \
         document.body.appendChild(p); SwitchboardClient.start(p, { base: location.origin, merchant: 'demo', \
         link: 'support', session: 'demo-visitor', token: '', destination: '', processing: true, \
         page_url: 'https://evil.example/landing', referrer: '' }); return true; })()",
    );
    let call = sw.wait_media_up(Duration::from_secs(15));
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut acd = RtpPeer::bind(acd_rtp(idx));
    acd.stream(sw_b, CodecKind::Pcmu, &[0; 1600]);
    let heard = key_in(&mut acd, sw_b, "*76", Duration::from_millis(800));
    // Refused: the page stays, the agent hears the failure tone.
    assert_eq!(b.eval("location.pathname"), "/demo/shop");
    let pcm = decode(&heard, CodecKind::Pcmu);
    assert!(
        peak_share(&pcm, 400.0) > 0.5,
        "the failure tone (share {:.2})",
        peak_share(&pcm, 400.0)
    );
    b.eval(&format!("{CALL}.hangup()"));
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "ACD: {errs}");
    let body =
        common::http_get_auth(sw.ports.http, "/api/v1/cdrs", "test-token").unwrap_or_default();
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let pushed = rows
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["actions"].as_array().cloned().unwrap_or_default())
        .find(|a| a["code"] == "*76")
        .unwrap_or_else(|| panic!("no *76 in the records: {body}"));
    assert_eq!(pushed["ok"], false, "{pushed}");
    assert!(
        pushed["result"]
            .as_str()
            .is_some_and(|r| r.contains("not on the merchant's origins")),
        "{pushed}"
    );
}

// ---------------------------------------------------------------------------------------
// The agent console (docs/console.md).

/// The demo agent's password and its hash (as conf/switchboard.toml ships them).
const DEMO_PW: &str = "switchboard-demo";
const DEMO_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$LxmUajALKRejwcOUoH2GSQ$G/kgvusw+SsshqqF0mS6aS3L1uhsfZwhKmcTeKwaJOY";

/// "sales" rings the queue's consoles (then a prompt); "support" is an ACD on gw1 whose
/// agent binds the call by keying `**CODE#`.
const CONSOLE_EXT: &str = r##"
[[extension]]
name = "console-sales"
context = "web"
when.var.link = '^sales$'
actions = [
  { bridge = { targets = ["queue/sales"], timeout = 20 } },
  { playback = "agents-busy" },
  { hangup = "NORMAL_CLEARING" },
]
[[extension]]
name = "console-support"
context = "web"
when.var.link = '^support$'
actions = [
  { header_add = { X-Merchant = "${merchant}", X-Link = "${link}", X-Session = "${session}", X-Page-Url = "${page_url}" } },
  { agent_channel = { prefix = "**", end = "#", max_wrong = 2 } },
  { bridge = { targets = ["gateway/gw1/support"], timeout = 20 } },
]
"##;

/// The demo merchant (with its checkout page and a CRM key), another merchant, the sales
/// queue, the demo agent, a second agent of the queue and an agent of the other merchant;
/// gw1 leases caller IDs from a pool; `demo` is more of the demo merchant's settings.
/// Prepared, not started.
fn console_switch(name: &str, idx: u16, demo: &str) -> Switch {
    let http = common::Ports::for_test(idx).http;
    let hash = switchboard_webrtc::token::key_hash;
    let conf = format!(
        "{}{demo}\napi_keys = [\"{}\"]\ncontext_cookies = [\"cart\"]\n[merchant.demo.pages]\ncheckout = \"/demo/checkout\"\n\
         [merchant.other]\ntokenless = true\norigins = [\"http://127.0.0.1:{http}\"]\nlinks = [\"sales\"]\napi_keys = [\"{}\"]\n\
         [queue.sales]\nmerchant = \"demo\"\n\
         [agent.demo]\nname = \"Demo Agent\"\nmerchants = [\"demo\"]\nqueues = [\"sales\"]\npassword = \"{DEMO_HASH}\"\n\
         [agent.demo2]\nname = \"Second Agent\"\nmerchants = [\"demo\"]\nqueues = [\"sales\"]\npassword = \"{DEMO_HASH}\"\n\
         [agent.boss]\nname = \"Supervisor\"\nrole = \"supervisor\"\nmerchants = [\"demo\"]\npassword = \"{DEMO_HASH}\"\n\
         [agent.ann]\nname = \"Other Merchant's Agent\"\nmerchants = [\"other\"]\npassword = \"{DEMO_HASH}\"\n",
        merchant_conf(http, "tokenless = true"),
        hash(KEY_DEMO),
        hash(KEY_OTHER),
    );
    Switch::prepare(
        name,
        idx,
        Route {
            extensions: CONSOLE_EXT,
            gw1_extra: "ani_pool = [\"15550100-15550109\"]\nani_when_empty = \"reject\"",
            ..web_route(&conf)
        },
    )
}

/// A console page in Chromium (its microphone plays `hz`), logged in as `id`.
fn console_page(sw: &Switch, name: &str, hz: f64, id: &str) -> Browser {
    let wav = sw.dir.join(format!("{name}.wav"));
    tone_wav(&wav, hz, 60);
    let mut b = Browser::launch(name, &wav);
    b.open(&format!("http://127.0.0.1:{}/agent", sw.ports.http));
    console_login(&mut b, id);
    b
}

/// Logs the console page in as `id` (the demo password) with its form.
fn console_login(b: &mut impl Page, id: &str) {
    b.wait_for(
        "!!document.querySelector('#sb-login-id')",
        Duration::from_secs(10),
    );
    b.eval(&format!(
        "document.querySelector('#sb-login-id').value = {id:?}; \
         document.querySelector('#sb-login-password').value = {DEMO_PW:?}; \
         document.querySelector('#sb-login-submit').click()"
    ));
    b.wait_for(
        "!!(SwitchboardConsole.state && SwitchboardConsole.state.code)",
        Duration::from_secs(10),
    );
}

/// The console's only call (its id: leg A's Call-ID).
fn console_call(b: &mut Browser) -> String {
    b.eval("Object.keys(SwitchboardConsole.calls)[0] || ''")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The agent clicks Answer on `call`: the shopper's call and the console's peer connect.
fn answer_in_console(agent: &mut impl Page, shop: &mut Browser, call: &str) {
    agent.eval(&format!(
        "document.querySelector('.sb-answer[data-call=\"{call}\"]').click()"
    ));
    shop.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    agent.wait_for(
        &format!("SwitchboardConsole.calls[{call:?}].pc && SwitchboardConsole.calls[{call:?}].pc.connectionState === 'connected'"),
        Duration::from_secs(15),
    );
}

/// The strongest frequency of a console call's audio.
fn console_heard_hz(b: &mut impl Page, call: &str) -> f64 {
    peak_hz_of(b, &format!("SwitchboardConsole.calls[{call:?}]"))
}

fn wait_hz(what: &str, within: Duration, mut hz: impl FnMut() -> f64, want: f64, sw: &Switch) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let got = hz();
        if (got - want).abs() < 30.0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never heard {want} Hz (peak at {got:.0} Hz)\n{}",
            common::tail(&sw.log(), 40)
        );
    }
}

/// What executes if a text is rendered as HTML.
const XSS: &str = "<img src=x onerror=\"window.__xss=1\">";

#[test]
fn the_console_rings_answers_in_the_browser_shows_the_screen_pop_chats_and_pushes_a_page() {
    let idx = 70;
    let mut sw = console_switch("console-answer", idx, "");
    sw.launch();
    let mut agent = console_page(&sw, "console-agent", 1100.0, "demo");
    let mut shop = browser(&sw, "console-shop");
    // A cookie the merchant opts in to is hostile markup: it must reach the console as text.
    shop.eval(&format!(
        "document.cookie = 'cart=' + encodeURIComponent({XSS:?}) + '; path=/'"
    ));
    click_sales(
        &mut shop,
        &[
            ("session", "shopper-42"),
            ("cookies", "cart"),
            ("processing", "off"),
        ],
    );
    agent.wait_for(
        "SwitchboardConsole.events.includes('ringing')",
        Duration::from_secs(10),
    );
    let call = console_call(&mut agent);
    assert!(call.starts_with("web-"), "{call}");
    answer_in_console(&mut agent, &mut shop, &call);
    // Audio both ways: the console hears the shopper's 700 Hz, the shopper the agent's 1100.
    wait_hz(
        "the console",
        Duration::from_secs(15),
        || console_heard_hz(&mut agent, &call),
        700.0,
        &sw,
    );
    wait_hz(
        "the shopper",
        Duration::from_secs(15),
        || heard_peak_hz(&mut shop),
        1100.0,
        &sw,
    );
    // The screen pop: merchant, session, the opted-in cookie (inert), the page.
    let pop = format!("document.querySelector('.sb-pop[data-call=\"{call}\"]')");
    assert_eq!(
        agent.eval(&format!(
            "{pop}.querySelector('.sb-pop-merchant').textContent"
        )),
        "demo"
    );
    assert_eq!(
        agent.eval(&format!(
            "{pop}.querySelector('.sb-pop-session').textContent"
        )),
        "shopper-42"
    );
    let cookies = agent.eval(&format!(
        "{pop}.querySelector('.sb-pop-cookies').textContent"
    ));
    assert!(cookies.as_str().unwrap_or("").contains(XSS), "{cookies}");
    assert!(
        agent
            .eval(&format!("{pop}.querySelector('.sb-pop-page').textContent"))
            .as_str()
            .unwrap_or("")
            .ends_with("/demo/shop"),
        "{}",
        agent.eval(&format!("{pop}.textContent"))
    );
    // Chat both ways with delivery marks; markup stays text on both sides.
    agent.eval(&format!("SwitchboardConsole.send({call:?}, {XSS:?})"));
    shop.wait_for(
        &format!("{CALL}.chat.length === 1 && {CALL}.chat[0].text === {XSS:?}"),
        Duration::from_secs(5),
    );
    agent.wait_for(
        &format!("SwitchboardConsole.calls[{call:?}].chat[0].delivered === true"),
        Duration::from_secs(5),
    );
    shop.eval(&format!("{CALL}.chatOut('Is it in stock?')"));
    agent.wait_for(
        &format!("SwitchboardConsole.calls[{call:?}].chat.some(m => m.from === 'caller' && m.text === 'Is it in stock?')"),
        Duration::from_secs(5),
    );
    shop.wait_for(
        &format!("{CALL}.chat[1].delivered === true"),
        Duration::from_secs(5),
    );
    assert_eq!(
        shop.eval("document.querySelectorAll('.sb-c2c-chat img').length"),
        0
    );
    assert_eq!(agent.eval("document.querySelectorAll('img').length"), 0);
    assert_eq!(shop.eval("window.__xss === undefined"), true);
    assert_eq!(agent.eval("window.__xss === undefined"), true);
    // A page pushed from the console's buttons opens on the shopper's side; the call stays and
    // the screen pop follows the shopper to the new page.
    agent.eval(&format!(
        "document.querySelector('.sb-page-select[data-call=\"{call}\"]').value = 'checkout'; \
         document.querySelector('.sb-push-page[data-call=\"{call}\"]').click()"
    ));
    shop.wait_for(
        "location.pathname === '/demo/checkout'",
        Duration::from_secs(10),
    );
    shop.wait_for(
        &format!(
            "typeof SwitchboardClient !== 'undefined' && {CALL} && {CALL}.state === 'connected'"
        ),
        Duration::from_secs(15),
    );
    agent.wait_for(
        &format!("{pop}.querySelector('.sb-pop-page').textContent.endsWith('/demo/checkout')"),
        Duration::from_secs(10),
    );
    assert_eq!(sw.metric("switchboard_calls_active"), 1.0, "the same call");
    // The chat pane is back on the new page.
    shop.wait_for(&format!("{CALL}.chatOpen === true"), Duration::from_secs(5));
    wait_hz(
        "the shopper after the move",
        Duration::from_secs(15),
        || heard_peak_hz(&mut shop),
        1100.0,
        &sw,
    );
    // The agent hangs up: both sides are told; the chat is in the record.
    agent.eval(&format!(
        "document.querySelector('.sb-hangup[data-call=\"{call}\"]').click()"
    ));
    sw.wait_call_count(0, Duration::from_secs(10));
    shop.wait_for(&format!("{CALL}.ended === true"), Duration::from_secs(5));
    agent.wait_for(
        &format!("SwitchboardConsole.calls[{call:?}].ended === true"),
        Duration::from_secs(5),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let chat = loop {
        let (status, body) = common::http_status(
            sw.ports.http,
            &format!("/api/v1/calls/{call}/chat"),
            KEY_DEMO,
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && v["chat"].as_array().is_some_and(|c| c.len() == 2) {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(chat["chat"][0]["from"], "agent");
    assert_eq!(chat["chat"][0]["agent"], "demo");
    assert_eq!(chat["chat"][0]["text"], XSS);
    assert_eq!(chat["chat"][1]["from"], "caller");
    // Another merchant's key sees nothing of it, as for a call that does not exist.
    let (status, _) = common::http_status(
        sw.ports.http,
        &format!("/api/v1/calls/{call}/chat"),
        KEY_OTHER,
    );
    assert_eq!(status, 404);
    let rec = sw.ended_record();
    assert_eq!(rec["chat"].as_array().map(Vec::len), Some(2), "{rec}");
    assert!(
        rec["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("agent/demo/")),
        "{rec}"
    );
}

/// A console without a browser (the protocol over a plain WebSocket): for consoles that
/// only ring, chat or bind.
struct WsConsole {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    code: String,
}

/// Logs `id` in over HTTP: (the session cookie, the CSRF token).
fn agent_login(port: u16, id: &str, password: &str) -> (u16, String, String) {
    let body = serde_json::json!({"id": id, "password": password}).to_string();
    let (status, head, body) = common::http_raw(port, "POST", "/agent/login", "", &body);
    let cookie = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().split(';').next().unwrap_or("").to_owned())
        })
        .unwrap_or_default();
    let csrf = serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()["csrf"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (status, cookie, csrf)
}

impl WsConsole {
    fn connect(port: u16, cookie: &str, csrf: &str) -> Result<WsConsole, String> {
        use tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://127.0.0.1:{port}/agent/ws")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("Cookie", cookie.parse().unwrap());
        let (mut ws, _) = tungstenite::connect(req).map_err(|e| e.to_string())?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
        ws.send(tungstenite::Message::text(
            serde_json::json!({"type": "hello", "csrf": csrf}).to_string(),
        ))
        .map_err(|e| e.to_string())?;
        let mut c = WsConsole {
            ws,
            code: String::new(),
        };
        let state = c.next("state", Duration::from_secs(5)).ok_or("no state")?;
        c.code = state["code"].as_str().unwrap_or("").to_owned();
        Ok(c)
    }

    fn login(port: u16, id: &str) -> WsConsole {
        let (status, cookie, csrf) = agent_login(port, id, DEMO_PW);
        assert_eq!(status, 200, "login {id}");
        WsConsole::connect(port, &cookie, &csrf).unwrap()
    }

    fn send(&mut self, v: serde_json::Value) {
        self.ws
            .send(tungstenite::Message::text(v.to_string()))
            .unwrap();
    }

    /// The next frame of `kind` within `within` (frames of other kinds are skipped).
    fn next(&mut self, kind: &str, within: Duration) -> Option<serde_json::Value> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                    if v["type"] == kind {
                        return Some(v);
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

#[test]
fn ring_all_rings_every_available_console_the_first_answer_wins_and_nobody_available_falls_through()
{
    let idx = 71;
    let mut sw = console_switch("console-ringall", idx, "");
    sw.launch();
    let mut first = console_page(&sw, "ringall-agent", 1100.0, "demo");
    let mut second = WsConsole::login(sw.ports.http, "demo2");
    // An agent of another merchant is logged in too: it never rings for demo's queue.
    let mut other = WsConsole::login(sw.ports.http, "ann");
    let mut shop = browser(&sw, "ringall-shop");
    click_sales(&mut shop, &[("processing", "off")]);
    first.wait_for(
        "SwitchboardConsole.events.includes('ringing')",
        Duration::from_secs(10),
    );
    let ringing = second
        .next("ringing", Duration::from_secs(5))
        .expect("the second console rings");
    let call = console_call(&mut first);
    assert_eq!(ringing["call"], call.as_str());
    assert_eq!(ringing["pop"]["merchant"], "demo");
    first.eval(&format!(
        "document.querySelector('.sb-answer[data-call=\"{call}\"]').click()"
    ));
    shop.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    let stopped = second
        .next("ring_stopped", Duration::from_secs(5))
        .expect("the second console stops ringing");
    assert_eq!(stopped["reason"], "answered_elsewhere");
    assert!(other.next("ringing", Duration::from_millis(300)).is_none());
    // The winner has the call bound (screen pop, chat); the loser has nothing of it.
    first.wait_for(
        &format!("SwitchboardConsole.calls[{call:?}].via === 'answered'"),
        Duration::from_secs(5),
    );
    shop.eval("document.querySelector('.sb-c2c-hang').click()");
    sw.wait_call_count(0, Duration::from_secs(10));
    // Nobody available (one away, one gone): the plan goes on with its next action.
    first.eval("SwitchboardConsole.ws.send(JSON.stringify({type: 'status', status: 'away'}))");
    drop(second);
    std::thread::sleep(Duration::from_millis(500));
    shop.open(&format!("http://127.0.0.1:{}/demo/shop", sw.ports.http));
    shop.wait_for(
        "!!document.querySelector('#sales button')",
        Duration::from_secs(10),
    );
    click_sales(&mut shop, &[("processing", "off")]);
    sw.wait_a_media(Duration::from_secs(10));
    sw.wait_call_count(0, Duration::from_secs(20));
    assert!(
        sw.log().contains("no agent of queue sales is available"),
        "{}",
        common::tail(&sw.log(), 40)
    );
    assert_eq!(
        first.eval("SwitchboardConsole.events.filter(e => e === 'ringing').length"),
        1
    );
    assert!(sw.log().contains("agents-busy"), "the prompt played");
}

#[test]
fn a_phone_agent_binds_the_call_to_the_console_by_its_channel_code_or_the_caller_id_then_chats_and_pushes_a_page()
 {
    let idx = 72;
    // The merchant's CRM hears of the chat.
    let crm_port = common::Ports::for_test(idx).sip + 10;
    let hooks = crm_receiver(crm_port);
    let mut sw = console_switch(
        "console-code",
        idx,
        &format!(
            "webhook_url = \"http://127.0.0.1:{crm_port}/hooks/sb\"\nwebhook_secret = \"whsec-test\"\nwebhook_events = [\"chat\"]"
        ),
    );
    let uas = acd_uas(&sw, idx, 1, "demo-visitor", "0");
    sw.launch();
    let (_, demo_cookie, demo_csrf) = agent_login(sw.ports.http, "demo", DEMO_PW);
    let mut demo = WsConsole::connect(sw.ports.http, &demo_cookie, &demo_csrf).unwrap();
    let mut demo2 = WsConsole::login(sw.ports.http, "demo2");
    let mut ann = WsConsole::login(sw.ports.http, "ann");
    let mut shop = browser(&sw, "code-shop");
    shop.eval("document.querySelector('#support button').click()");
    let call = sw.wait_media_up(Duration::from_secs(15));
    shop.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut acd = RtpPeer::bind(acd_rtp(idx));
    acd.stream(sw_b, CodecKind::Pcmu, &[0; 1600]);
    // Another merchant's agent's code: refused (a low tone), nothing bound.
    key_in(
        &mut acd,
        sw_b,
        &format!("**{}#", ann.code),
        Duration::from_millis(600),
    );
    assert!(ann.next("bound", Duration::from_millis(500)).is_none());
    // The demo agent's code binds the call to their console at once.
    let keyed = std::time::Instant::now();
    let heard = key_in(
        &mut acd,
        sw_b,
        &format!("**{}#", demo.code),
        Duration::from_millis(0),
    );
    let bound = demo
        .next("bound", Duration::from_secs(1))
        .expect("bound within a second");
    println!(
        "bound {} ms after the last key",
        keyed.elapsed().as_millis()
    );
    assert_eq!(bound["via"], "code");
    assert_eq!(bound["pop"]["session"], "demo-visitor");
    assert!(
        bound["pop"]["page_url"]
            .as_str()
            .unwrap()
            .ends_with("/demo/shop"),
        "{bound}"
    );
    let ani = bound["pop"]["ani"]
        .as_str()
        .expect("the leased caller ID")
        .to_owned();
    assert!(ani.starts_with("155501"), "{ani}");
    let a_call_id = bound["call"].as_str().unwrap().to_owned();
    drop(heard);
    let path = format!("/agent/api/calls/{a_call_id}");
    let (s, _, body) = common::http_raw(
        sw.ports.http,
        "GET",
        &path,
        &format!("Cookie: {demo_cookie}\r\n"),
        "",
    );
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("demo-visitor"), "{body}");
    // The agent reloads the console: the call is theirs again, pop and all.
    drop(demo);
    let mut demo = WsConsole::connect(sw.ports.http, &demo_cookie, &demo_csrf).unwrap();
    let again = demo
        .next("bound", Duration::from_secs(2))
        .expect("bound again");
    assert_eq!(again["call"], bound["call"]);
    // The code never reached the caller; the shopper's panel opens its chat.
    shop.wait_for(&format!("{CALL}.chatOpen === true"), Duration::from_secs(5));
    // Chat both ways.
    demo.send(serde_json::json!({"type": "chat", "call": a_call_id, "id": "a1", "text": "Hello from the phone desk"}));
    shop.wait_for(&format!("{CALL}.chat.length === 1"), Duration::from_secs(5));
    demo.next("delivered", Duration::from_secs(5))
        .expect("delivered to the caller");
    shop.eval(&format!("{CALL}.chatOut('hi!')"));
    let got = demo
        .next("chat", Duration::from_secs(5))
        .expect("the caller's message");
    assert_eq!(got["from"], "caller");
    assert_eq!(got["text"], "hi!");
    // The caller ID typed in: another merchant's agent gets nothing, the second agent binds.
    ann.send(serde_json::json!({"type": "bind_ani", "ani": ani}));
    let e = ann.next("error", Duration::from_secs(2)).expect("refused");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not one of your merchants"),
        "{e}"
    );
    // Nor does it see the call over HTTP: 404, as for a call that does not exist.
    let (_, ann_cookie, _) = agent_login(sw.ports.http, "ann", DEMO_PW);
    let path = format!("/agent/api/calls/{a_call_id}");
    let (s, _, _) = common::http_raw(
        sw.ports.http,
        "GET",
        &path,
        &format!("Cookie: {ann_cookie}\r\n"),
        "",
    );
    assert_eq!(s, 404);
    // A colleague cannot take the call over by its caller ID; a supervisor may join it.
    demo2.send(serde_json::json!({"type": "bind_ani", "ani": &ani[1..]}));
    let e = demo2
        .next("error", Duration::from_secs(2))
        .expect("refused");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("another agent has that call"),
        "{e}"
    );
    let mut boss = WsConsole::login(sw.ports.http, "boss");
    boss.send(serde_json::json!({"type": "bind_ani", "ani": &ani[1..]}));
    let b2 = boss
        .next("bound", Duration::from_secs(2))
        .expect("bound by caller ID");
    assert_eq!(b2["via"], "ani");
    // A page pushed from the console opens on the shopper's side.
    demo.send(serde_json::json!({"type": "action", "call": a_call_id, "action": {"action": "push_page", "page": "checkout"}}));
    let r = demo
        .next("action_result", Duration::from_secs(5))
        .expect("an action result");
    assert_eq!(r["ok"], true, "{r}");
    shop.wait_for(
        "location.pathname === '/demo/checkout'",
        Duration::from_secs(10),
    );
    let pop = demo
        .next("pop", Duration::from_secs(10))
        .expect("the pop follows");
    assert!(
        pop["pop"]["page_url"]
            .as_str()
            .unwrap()
            .ends_with("/demo/checkout"),
        "{pop}"
    );
    // A second wrong code: the call takes no more codes (max_wrong = 2), even a right one.
    key_in(&mut acd, sw_b, "**0#", Duration::from_millis(300));
    let mut late = WsConsole::login(sw.ports.http, "demo");
    key_in(
        &mut acd,
        sw_b,
        &format!("**{}#", late.code),
        Duration::from_millis(800),
    );
    assert!(
        late.next("bound", Duration::from_millis(800)).is_none(),
        "codes are off"
    );
    // The call ends: every console of the room is told.
    shop.eval("document.querySelector('.sb-c2c-hang').click()");
    sw.wait_call_count(0, Duration::from_secs(10));
    demo.next("ended", Duration::from_secs(5)).expect("ended");
    boss.next("ended", Duration::from_secs(5)).expect("ended");
    let (st, out) = uas.wait(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "the ACD's scenario: {out}");
    let rec = sw.ended_record();
    // The action itself, then each code keyed: the other merchant's, the right one, a wrong
    // one (the last allowed); the code after it was not even looked at.
    let codes: Vec<_> = rec["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "agent_channel" && (a["ok"] == false || a["detail"].is_string()))
        .map(|a| a["result"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(codes.len(), 3, "{rec}");
    assert!(codes[0].contains("not one of your merchants"), "{codes:?}");
    assert_eq!(codes[1], "ok");
    assert!(codes[2].contains("no more codes on this call"), "{codes:?}");
    // Both messages reached the CRM as `chat` webhooks, in order.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen: Vec<serde_json::Value> = hooks
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _, _, st)| e == "chat" && *st == 200)
            .filter_map(|(_, _, body, _)| serde_json::from_str(body).ok())
            .collect();
        if seen.len() >= 2 {
            assert_eq!(seen[0]["from"], "agent", "{seen:?}");
            assert_eq!(seen[0]["agent"], "demo", "{seen:?}");
            assert_eq!(seen[0]["text"], "Hello from the phone desk");
            assert_eq!(seen[1]["from"], "caller");
            assert_eq!(seen[1]["call_id"], a_call_id.as_str(), "{seen:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chat webhooks: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn console_logins_are_braked_sessions_need_their_csrf_token_and_agents_are_managed_through_the_api()
{
    let idx = 73;
    let mut sw = console_switch("console-security", idx, "");
    sw.launch();
    let port = sw.ports.http;
    let (status, head, body) = common::http_raw(port, "GET", "/agent", "", "");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(body.contains("console.js"));
    // The same answer for an unknown agent and a wrong password.
    let (s1, _, b1) = common::http_raw(
        port,
        "POST",
        "/agent/login",
        "",
        r#"{"id":"nobody","password":"whatever-pw"}"#,
    );
    let (s2, _, b2) = common::http_raw(
        port,
        "POST",
        "/agent/login",
        "",
        r#"{"id":"demo","password":"wrong-password"}"#,
    );
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(b1, b2);
    // A cross-site page cannot log anyone in.
    let (s, _, _) = common::http_raw(
        port,
        "POST",
        "/agent/login",
        "Origin: http://evil.example\r\n",
        &format!(r#"{{"id":"demo","password":"{DEMO_PW}"}}"#),
    );
    assert_eq!(s, 403);
    // A session: state-changing requests need its CSRF token.
    let (s, cookie, csrf) = agent_login(port, "demo", DEMO_PW);
    assert_eq!(s, 200);
    assert!(cookie.starts_with("sb_agent="), "{cookie}");
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let (s, _, me) = common::http_raw(port, "GET", "/agent/api/me", &with_cookie, "");
    assert_eq!(s, 200, "{me}");
    assert!(me.contains("\"merchants\":[\"demo\"]"), "{me}");
    let (s, _, _) = common::http_raw(port, "POST", "/agent/logout", &with_cookie, "");
    assert_eq!(s, 403, "no CSRF token");
    let (s, _, _) = common::http_raw(
        port,
        "POST",
        "/agent/logout",
        &format!("{with_cookie}X-CSRF-Token: 00\r\n"),
        "",
    );
    assert_eq!(s, 403, "a wrong CSRF token");
    // The WebSocket wants the token first, too.
    let e = WsConsole::connect(port, &cookie, "not-the-token");
    assert!(e.is_err(), "a console without the session's token");
    let (s, _, _) = common::http_raw(
        port,
        "POST",
        "/agent/logout",
        &format!("{with_cookie}X-CSRF-Token: {csrf}\r\n"),
        "",
    );
    assert_eq!(s, 204);
    let (s, _, _) = common::http_raw(port, "GET", "/agent/api/me", &with_cookie, "");
    assert_eq!(s, 401, "logged out");
    assert!(
        WsConsole::connect(port, &cookie, &csrf).is_err(),
        "a dead session has no console"
    );
    // Agents through the admin API: added, listed (no hashes), logged in, removed.
    let admin = "Authorization: Bearer test-token\r\n";
    let (s, _, b) = common::http_raw(
        port,
        "PUT",
        "/api/v1/agents/alice",
        admin,
        r#"{"name":"Alice","merchants":["demo"],"queues":["sales"],"password":"alice-secret-1"}"#,
    );
    assert_eq!(s, 201, "{b}");
    let (s, _, b) = common::http_raw(
        port,
        "PUT",
        "/api/v1/agents/bob",
        admin,
        r#"{"password":"short"}"#,
    );
    assert_eq!(s, 422, "{b}");
    let (s, _, b) = common::http_raw(port, "PUT", "/api/v1/agents/demo", admin, r#"{"name":"x"}"#);
    assert_eq!(s, 422, "conf/ agents are ops' to change: {b}");
    let (_, _, list) = common::http_raw(port, "GET", "/api/v1/agents", admin, "");
    assert!(
        list.contains("\"alice\"") && list.contains("\"demo\""),
        "{list}"
    );
    assert!(!list.contains("argon2"), "{list}");
    let (s, cookie, _) = agent_login(port, "alice", "alice-secret-1");
    assert_eq!(s, 200);
    let (s, _, _) = common::http_raw(port, "DELETE", "/api/v1/agents/alice", admin, "");
    assert_eq!(s, 204);
    let (s, _, _) = common::http_raw(
        port,
        "GET",
        "/agent/api/me",
        &format!("Cookie: {cookie}\r\n"),
        "",
    );
    assert_eq!(s, 401, "a removed agent's session ends");
    let (s, _, _) = common::http_raw(port, "GET", "/api/v1/agents", "", "");
    assert_eq!(s, 401);
    // Brute force: five failures from this address, then every attempt waits, even a right one.
    for i in 0..5 {
        let (s, _, _) = common::http_raw(
            port,
            "POST",
            "/agent/login",
            "",
            &format!(r#"{{"id":"demo2","password":"guess-{i}-xyz"}}"#),
        );
        assert_eq!(s, 401);
    }
    let (s, head, body) = common::http_raw(
        port,
        "POST",
        "/agent/login",
        "",
        &format!(r#"{{"id":"demo2","password":"{DEMO_PW}"}}"#),
    );
    assert_eq!(s, 429, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert!(body.contains("try again in"), "{body}");
}

#[test]
fn check_refuses_the_demo_agents_public_password_off_loopback() {
    let check = |conf: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--conf")
            .arg(conf)
            .arg("check")
            .output()
            .expect("run switchboard check")
    };
    // The shipped conf, as is: fine on loopback.
    let shipped = common::repo().join("conf");
    let out = check(&shipped);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same on a public address: refused, with the file, the line and what to do.
    let dir = std::env::temp_dir().join(format!("sb-check-public-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("dialplan")).unwrap();
    for f in ["dialplan/default.toml", "dialplan/web.toml"] {
        std::fs::copy(shipped.join(f), dir.join(f)).unwrap();
    }
    let main = std::fs::read_to_string(shipped.join("switchboard.toml"))
        .unwrap()
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"")
        .replace(
            "sounds = \"../sounds/en\"",
            &format!("sounds = \"{}\"", shipped.join("../sounds/en").display()),
        );
    std::fs::write(dir.join("switchboard.toml"), main).unwrap();
    let out = check(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("agent demo still has the demo password"),
        "{err}"
    );
    assert!(err.contains("switchboard.toml:"), "{err}");
    assert!(err.contains("switchboard agent hash"), "{err}");
    // So are the shipped admin token and the tokenless demo merchant.
    assert!(
        err.contains("http.token is still the shipped demo token"),
        "{err}"
    );
    assert!(
        err.contains("merchant demo is the tokenless demo merchant"),
        "{err}"
    );
    // And the call button would share the admin API's public listener.
    assert!(
        err.contains("would be served on the admin API's listener"),
        "{err}"
    );
    // On loopback again, with a public-context extension that bridges to the gateway: allowed,
    // and said out loud.
    let main = std::fs::read_to_string(dir.join("switchboard.toml"))
        .unwrap()
        .replace("listen = \"0.0.0.0:8080\"", "listen = \"127.0.0.1:8080\"");
    std::fs::write(dir.join("switchboard.toml"), main).unwrap();
    std::fs::write(
        dir.join("dialplan/public.toml"),
        "[[extension]]\nname = \"open-relay\"\ncontext = \"public\"\nwhen.destination = '^(\\d+)$'\nactions = [{ bridge = { targets = [\"gateway/demo/$1\"] } }]\n",
    )
    .unwrap();
    let out = check(&dir);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("warning: ")
            && said.contains("public.toml:1: extension open-relay")
            && said.contains("toll fraud"),
        "{said}"
    );
    // Limits that would drop every untrusted request, and a gateway acl that is no address
    // block: refused, each with its line.
    let main = std::fs::read_to_string(dir.join("switchboard.toml"))
        .unwrap()
        .replace("[limits]\n", "[limits]\nsource_rate = 0\n")
        .replace(
            "[gateway.demo]\n",
            "[gateway.demo]\nacl = [\"10.0.0.0/33\"]\ncontext = \"from-demo\"\n",
        );
    std::fs::write(dir.join("switchboard.toml"), main).unwrap();
    let out = check(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("limits.source_rate 0 would drop every request"),
        "{err}"
    );
    assert!(err.contains("10.0.0.0/33"), "{err}");
    assert!(err.contains("switchboard.toml:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Benchmark (on demand: `bench/web.sh`): a shopper's click → the console rings, the agent's
/// answer → media connected on both browsers (median of 10 calls), and the switch's CPU per
/// second of a browser ↔ browser call (str0m SRTP on both legs, Opus passed through).
#[test]
#[ignore = "benchmark: run with bench/web.sh"]
fn bench_console_ring_answer_and_cpu() {
    let idx = 74;
    let runs = 10;
    let mut sw = console_switch("console-bench", idx, "");
    sw.launch();
    let pid = sw.pid().expect("pid");
    let mut agent = console_page(&sw, "bench-agent", 1100.0, "demo");
    let mut shop = browser(&sw, "bench-shop");
    // The switch with a console connected and no call: what a call's figure sits on.
    let (c0, t0) = (common::cpu_ms(pid), std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let idle = (common::cpu_ms(pid) - c0) / t0.elapsed().as_secs_f64();
    let (mut ring, mut answer) = (Vec::new(), Vec::new());
    let ringing = |b: &mut Browser| {
        b.eval("SwitchboardConsole.events.filter(e => e === 'ringing').length")
            .as_u64()
            .unwrap_or(0)
    };
    for i in 0..runs {
        let before = ringing(&mut agent);
        let clicked = std::time::Instant::now();
        click_sales(&mut shop, &[("processing", "off")]);
        while ringing(&mut agent) == before {
            assert!(clicked.elapsed() < Duration::from_secs(10), "no ringing");
        }
        ring.push(clicked.elapsed().as_secs_f64() * 1000.0);
        let call = agent
            .eval("Object.keys(SwitchboardConsole.calls).find(k => !SwitchboardConsole.calls[k].answered && !SwitchboardConsole.calls[k].ended) || ''")
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let c = format!("SwitchboardClient.calls[{i}]");
        let answered = std::time::Instant::now();
        agent.eval(&format!(
            "document.querySelector('.sb-answer[data-call=\"{call}\"]').click()"
        ));
        loop {
            let console_up = agent.eval(&format!(
                "(SwitchboardConsole.calls[{call:?}].pc || {{}}).connectionState === 'connected'"
            ));
            let shop_up = shop.eval(&format!("{c}.state === 'connected'"));
            if console_up == true && shop_up == true {
                break;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(10),
                "not connected"
            );
        }
        answer.push(answered.elapsed().as_secs_f64() * 1000.0);
        if i + 1 == runs {
            // The last call talks for 10 s: the switch's CPU for one browser <-> browser call.
            std::thread::sleep(Duration::from_secs(3));
            let (c0, t0) = (common::cpu_ms(pid), std::time::Instant::now());
            std::thread::sleep(Duration::from_secs(10));
            let per_sec = (common::cpu_ms(pid) - c0) / t0.elapsed().as_secs_f64();
            println!(
                "BENCH console cpu: one browser <-> browser call: switch CPU {per_sec:.2} ms/s, idle (a console, no call) {idle:.2} ms/s: the call {:.2} ms per call-second",
                per_sec - idle
            );
        }
        agent.eval(&format!(
            "document.querySelector('.sb-hangup[data-call=\"{call}\"]').click()"
        ));
        sw.wait_call_count(0, Duration::from_secs(10));
        shop.eval(&format!("{c}.close()"));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "BENCH console: {runs} calls: click -> console rings median {:.1} ms (min {:.1}, max {:.1}); answer -> media up on both browsers median {:.1} ms (min {:.1}, max {:.1})",
        median(&mut ring),
        ring[0],
        ring[ring.len() - 1],
        median(&mut answer),
        answer[0],
        answer[answer.len() - 1]
    );
}

/// The console in Firefox ESR answers a Chromium shopper: Firefox's own offer (Opus with
/// telephone-event/8000) on the answering side, audio both ways, chat both ways.
#[test]
fn firefox_console_answers_a_chromium_shopper() {
    let idx = 92;
    let mut sw = console_switch("console-firefox", idx, "");
    sw.launch();
    // The agent's microphone plays 900 Hz, the shopper's 700.
    let mut agent = Firefox::launch("console", 900);
    agent.open(&format!("http://127.0.0.1:{}/agent", sw.ports.http));
    console_login(&mut agent, "demo");
    let mut shop = browser(&sw, "ff-console-shop");
    click_sales(&mut shop, &[("processing", "off")]);
    agent.wait_for(
        "SwitchboardConsole.events.includes('ringing')",
        Duration::from_secs(10),
    );
    let call = agent
        .eval("Object.keys(SwitchboardConsole.calls)[0] || ''")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    answer_in_console(&mut agent, &mut shop, &call);
    wait_hz(
        "the Firefox console",
        Duration::from_secs(15),
        || console_heard_hz(&mut agent, &call),
        700.0,
        &sw,
    );
    wait_hz(
        "the shopper",
        Duration::from_secs(15),
        || heard_peak_hz(&mut shop),
        900.0,
        &sw,
    );
    agent.eval(&format!(
        "SwitchboardConsole.send({call:?}, 'Firefox here')"
    ));
    shop.wait_for(
        &format!("{CALL}.chat.length === 1 && {CALL}.chat[0].text === 'Firefox here'"),
        Duration::from_secs(5),
    );
    shop.eval(&format!("{CALL}.chatOut('Chromium here')"));
    agent.wait_for(
        &format!("SwitchboardConsole.calls[{call:?}].chat.some(m => m.from === 'caller' && m.text === 'Chromium here')"),
        Duration::from_secs(5),
    );
    agent.eval(&format!(
        "document.querySelector('.sb-hangup[data-call=\"{call}\"]').click()"
    ));
    sw.wait_call_count(0, Duration::from_secs(10));
    shop.wait_for(&format!("{CALL}.ended === true"), Duration::from_secs(5));
}

#[test]
fn a_shopper_on_an_https_page_calls_over_wss() {
    let idx = 49;
    let ports = common::Ports::for_test(idx);
    let public = ports.sip + 11;
    let conf = merchant_conf(ports.http, "tokenless = true")
        .replace(
            "[webrtc]\n",
            &format!(
                "[webrtc]\nlisten = \"127.0.0.1:{public}\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n"
            ),
        )
        .replace(
            &format!("origins = [\"http://127.0.0.1:{}\"]", ports.http),
            &format!("origins = [\"https://127.0.0.1:{public}\"]"),
        );
    let mut sw = Switch::prepare("web-wss", idx, web_route(&conf));
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    std::fs::write(sw.dir.join("conf/cert.pem"), key.cert.pem()).unwrap();
    std::fs::write(sw.dir.join("conf/key.pem"), key.signing_key.serialize_pem()).unwrap();
    let uas = acd_uas(&sw, idx, 1, "demo-visitor", "1500");
    sw.launch();
    // Plain HTTP gets nothing from the HTTPS listener.
    assert!(common::http_get(public, "/c2c.js").is_none());
    let wav = sw.dir.join("mic.wav");
    tone_wav(&wav, 700.0, 60);
    let mut b = Browser::launch("wss", &wav);
    b.open(&format!("https://127.0.0.1:{public}/demo/shop"));
    b.wait_for(
        "!!document.querySelector('#sales button')",
        Duration::from_secs(10),
    );
    assert_eq!(b.eval("location.protocol"), "https:");
    click_sales(&mut b, &[]);
    b.wait_for(
        &format!("{CALL}.state === 'connected'"),
        Duration::from_secs(15),
    );
    let (st, errs) = uas.wait(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "ACD scenario failed:\n{errs}\n{}",
        sw.log()
    );
    assert!(
        sw.log().contains("https=true"),
        "the widget listener says it is HTTPS"
    );
}

/// A GET with extra header lines: (status, head, body bytes).
fn get_bytes(port: u16, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, out[end + 4..].to_vec())
}

#[test]
fn the_widgets_scripts_are_served_compressed_with_a_validator() {
    let idx = 69;
    let mut sw = start("web-assets", idx, "tokenless = true");
    sw.launch();
    let http = sw.ports.http;
    let (status, head, plain) = get_bytes(http, "/c2c.js", "");
    assert_eq!(status, 200, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(!lower.contains("content-encoding"), "{head}");
    assert!(lower.contains("vary: accept-encoding"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .expect("an ETag")
        .to_owned();
    // What a browser downloads: brotli (every current browser takes it over HTTPS and on
    // localhost), the same script once decoded, smaller than gzip, within the budget.
    let (status, head, br) = get_bytes(http, "/c2c.js", "Accept-Encoding: gzip, deflate, br\r\n");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: br"),
        "{head}"
    );
    let br_etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .expect("an ETag")
        .to_owned();
    assert_ne!(br_etag, etag, "each coding has its own validator");
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut brotli::Decompressor::new(&br[..], 4096), &mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);
    // A client that takes gzip only (or refuses br) gets gzip.
    let (status, head, gz) = get_bytes(http, "/c2c.js", "Accept-Encoding: gzip, br;q=0\r\n");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let mut inflated = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut inflated).unwrap();
    assert_eq!(inflated, plain);
    assert!(
        gz.len() < 10_240 && gz.len() < plain.len(),
        "{} bytes gzipped",
        gz.len()
    );
    assert!(
        br.len() < gz.len(),
        "brotli {} vs gzip {}",
        br.len(),
        gz.len()
    );
    let (status, _, body) = get_bytes(
        http,
        "/c2c.js",
        &format!("Accept-Encoding: br\r\nIf-None-Match: {br_etag}\r\n"),
    );
    assert_eq!((status, body.len()), (304, 0), "a current brotli copy");
    // A browser with the current copy downloads nothing.
    let (status, _, body) = get_bytes(http, "/c2c.js", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(status, 304);
    assert!(body.is_empty());
    // The media client too.
    let client = String::from_utf8(plain)
        .unwrap()
        .split("/client/")
        .nth(1)
        .and_then(|r| r.split(['"', '\'']).next())
        .map(|f| format!("/client/{f}"))
        .expect("the loader names the client");
    let (status, head, _) = get_bytes(http, &client, "Accept-Encoding: gzip\r\n");
    assert_eq!(status, 200, "{client}: {head}");
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let (status, head, _) = get_bytes(http, &client, "Accept-Encoding: br, gzip\r\n");
    assert_eq!(status, 200, "{client}: {head}");
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: br"),
        "{head}"
    );
}

#[test]
fn a_refer_from_the_acd_moves_the_browser_caller_to_a_second_agent_and_audio_follows() {
    let idx = 111;
    let http = common::Ports::for_test(idx).http;
    let conf = merchant_conf(http, "tokenless = true");
    // The transfer is routed in the call's context ("web"): agents (3xxx) are at gw2.
    let ext = format!(
        "{WEB_EXT}
[[extension]]
name = \"web-agents\"
context = \"web\"
when.destination = '^(3\\d+)$'
actions = [
  {{ header_add = {{ X-Merchant = \"demo\", X-Link = \"transfer\", X-Session = \"demo-visitor\", X-Page-Url = \"http://127.0.0.1:{http}/demo/shop\" }} }},
  {{ bridge = {{ targets = [\"gateway/gw2/$1\"], timeout = 20 }} }},
]
"
    );
    let mut sw = Switch::prepare(
        "web-refer",
        idx,
        Route {
            extensions: &ext,
            ..web_route(&conf)
        },
    );
    let acd = sw.uas(0, "uas_refer.xml", 1, &[]);
    let port = acd_rtp(idx).to_string();
    let agent = sw.uas(
        1,
        "uas_web.xml",
        1,
        &[
            "-key",
            "rtp_port",
            &port,
            "-set",
            "expect_merchant",
            "demo",
            "-set",
            "expect_session",
            "demo-visitor",
            "-set",
            "bye_ms",
            "0",
        ],
    );
    sw.launch();
    let mut b = browser(&sw, "refer");
    click_sales(&mut b, &[]);
    let (st, errs) = acd.wait(Duration::from_secs(20));
    assert!(
        st.is_some_and(|s| s.success()),
        "the ACD's transfer failed:\n{errs}\n{}",
        common::tail(&sw.log(), 60)
    );
    // The page never heard of it: still connected, to the agent now.
    let call = sw.wait_media_up(Duration::from_secs(10));
    assert_eq!(
        b.eval(&format!("{CALL}.state")),
        "connected",
        "{}",
        common::tail(&sw.log(), 40)
    );
    assert!(
        !b.eval(&format!("{CALL}.events.join(',')"))
            .as_str()
            .is_some_and(|e| e.contains("hangup"))
    );
    // Audio both ways with the second agent.
    let sw_b = addr(&call["media"]["b"]["port"]);
    let mut rtp = RtpPeer::bind(acd_rtp(idx));
    audio_flows_both_ways(&mut b, &mut rtp, sw_b);
    b.eval("document.querySelector('.sb-c2c-hang').click()");
    let (st, errs) = agent.wait(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "agent:\n{errs}");
    sw.wait_call_count(0, Duration::from_secs(5));
    let r = sw.ended_record();
    assert_eq!(r["cause"], "NORMAL_CLEARING", "{r}");
}
