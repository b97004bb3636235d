//! The browser leg's inputs from the outside: the widget's JSON (then the merchant fence and
//! the browser's SDP offer into str0m, then datagrams and RTP through the peer), the core's
//! SIP to the leg's SIP face, and SDP bodies. Nothing may panic.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_webrtc::{BrowserPeer, ClientMsg, MerchantConfig, WebFacts, WebLeg, leg, signal};

fn merchant() -> MerchantConfig {
    MerchantConfig {
        context: "web".into(),
        secret: Some("k".into()),
        tokenless: true,
        origins: vec!["https://shop.example".into()],
        links: vec!["sales".into()],
        destinations: vec!["18005550100".into()],
        max_calls: 10,
        calls_per_minute: 60,
        caller_name: "Web caller".into(),
        context_cookies: vec!["cart".into()],
        context_fields: vec!["email".into()],
        api_keys: vec![],
        webhook_url: None,
        webhook_ca: None,
        webhook_secret: None,
        webhook_events: vec![],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    match mode % 3 {
        0 => {
            // A widget's message; the datagrams after a NUL go to the peer it opens.
            let (text, tail) = match rest.iter().position(|b| *b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let Ok(text) = std::str::from_utf8(text) else {
                return;
            };
            let Ok(ClientMsg::Call(req)) = signal::parse(text) else {
                return;
            };
            let _ = merchant().admit("acme", &req, Some("https://shop.example"), "192.0.2.1", 0);
            let cand: SocketAddr = "127.0.0.1:20000".parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 20000)));
            if let Ok((mut peer, _answer)) = BrowserPeer::accept(now, &req.sdp, cand, None) {
                let from = SocketAddr::from(([192, 0, 2, 1], 40000));
                for (i, chunk) in tail.chunks(200).enumerate() {
                    let t = now + Duration::from_millis(20 * i as u64);
                    peer.handle_receive(t, from, chunk);
                    peer.send_rtp(t, chunk);
                    peer.handle_timeout(t);
                    while peer.poll().is_some() {}
                }
                let _ = peer.inner_sdp(cand, 1);
            }
        }
        1 => {
            // The core's SIP to the leg (responses, BYE, re-INVITE...), then a hang-up.
            let facts = WebFacts {
                merchant: "acme".into(),
                link: "sales".into(),
                context: "web".into(),
                ..Default::default()
            };
            let mut l = WebLeg::invite(&facts, SocketAddr::from(([0, 0, 0, 1], 0)), "1", "v=0\r\n".into());
            for chunk in rest.split(|b| *b == 0xff) {
                if let Ok(msg) = switchboard_sip::parse_datagram(Bytes::copy_from_slice(chunk)) {
                    l.handle(msg);
                }
                while l.poll_transmit().is_some() {}
                while l.poll_event().is_some() {}
            }
            l.hangup();
            while l.poll_transmit().is_some() {}
        }
        _ => {
            let _ = leg::media_addr(rest);
        }
    }
});
