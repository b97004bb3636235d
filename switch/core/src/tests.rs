//! The engine driven by hand, sans-IO: races that a SIPp scenario cannot time precisely.
#![allow(clippy::disallowed_methods)] // tests pick an arbitrary starting instant

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_dialplan::{CompileEnv, Source, compile};
use switchboard_sip::transaction::{Peer, Transport};
use switchboard_sip::{Message, Method, Name, Request, parse_datagram};

use crate::EngineConfig;

const A: &str = "127.0.0.1:5070";
const B: &str = "127.0.0.1:5080";

struct Harness {
    engine: crate::Engine,
    now: Instant,
}

fn peer(a: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: a.parse().unwrap(),
    }
}

impl Harness {
    fn new() -> Harness {
        let plan = r#"
[[extension]]
name = "all"
when.destination = '^(\d+)$'
actions = [ { bridge = { targets = ["sip:$1@127.0.0.1:5080"], timeout = 20 } } ]
"#;
        let dialplan = compile(
            &[Source {
                path: "t.toml".into(),
                text: plan.into(),
            }],
            &CompileEnv::default(),
        )
        .unwrap();
        let engine = crate::Engine::new(
            EngineConfig::default(),
            Arc::new(dialplan),
            crate::Registry::new(),
            7,
        );
        Harness {
            engine,
            now: Instant::now(),
        }
    }

    fn send(&mut self, from: &str, text: &str) {
        self.send_raw(from, &text.replace('\n', "\r\n"));
    }

    fn send_raw(&mut self, from: &str, text: &str) {
        let wall = jiff::Timestamp::UNIX_EPOCH;
        self.engine
            .handle_datagram(self.now, wall, Bytes::from(text.to_owned()), peer(from));
    }

    /// Everything the engine wants to send, parsed, with its destination.
    fn sent(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut out = vec![];
        while let Some(t) = self.engine.poll_transmit() {
            out.push((t.peer.addr, parse_datagram(t.data).unwrap()));
        }
        while self.engine.poll_output().is_some() {}
        out
    }
}

fn request_to<'a>(
    sent: &'a [(SocketAddr, Message)],
    to: &str,
    method: Method,
) -> Option<&'a Request> {
    sent.iter().find_map(|(a, m)| match m {
        Message::Request(r) if r.method == method && *a == to.parse::<SocketAddr>().unwrap() => {
            Some(r)
        }
        _ => None,
    })
}

fn statuses_to(sent: &[(SocketAddr, Message)], to: &str) -> Vec<u16> {
    sent.iter()
        .filter(|(a, _)| *a == to.parse::<SocketAddr>().unwrap())
        .filter_map(|(_, m)| match m {
            Message::Response(r) => Some(r.status),
            _ => None,
        })
        .collect()
}

const INVITE: &str = "INVITE sip:1000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-a1;rport
Max-Forwards: 70
From: <sip:alice@127.0.0.1:5070>;tag=at
To: <sip:1000@127.0.0.1:5060>
Call-ID: race-1@test
CSeq: 1 INVITE
Contact: <sip:alice@127.0.0.1:5070>
Content-Length: 0

";

/// A response from B to the INVITE we sent it, with B's tag.
fn b_response(invite: &Request, status: u16) -> String {
    let mut r = switchboard_sip::transaction::make_response(invite, status, Some("bt"));
    r.headers.push(Name::Contact, "<sip:acd@127.0.0.1:5080>");
    String::from_utf8(Message::Response(r).to_bytes())
        .unwrap()
        .replace("\r\n", "\n")
}

#[test]
fn callee_answering_while_the_caller_cancels_is_acked_and_hung_up() {
    let mut h = Harness::new();
    h.send(A, INVITE);
    let sent = h.sent();
    assert_eq!(statuses_to(&sent, A), vec![100]);
    let b_invite = request_to(&sent, B, Method::Invite)
        .expect("leg B INVITE")
        .clone();
    h.send(B, &b_response(&b_invite, 180));
    assert_eq!(statuses_to(&h.sent(), A), vec![180]);

    // The caller gives up...
    h.send(
        A,
        &INVITE
            .replace(
                "INVITE sip:1000@127.0.0.1:5060 SIP/2.0",
                "CANCEL sip:1000@127.0.0.1:5060 SIP/2.0",
            )
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
    );
    let sent = h.sent();
    let mut st = statuses_to(&sent, A);
    st.sort();
    assert_eq!(st, vec![200, 487], "200 for the CANCEL, 487 for the INVITE");
    assert!(
        request_to(&sent, B, Method::Cancel).is_some(),
        "leg B is cancelled"
    );

    // ...but the callee answered before our CANCEL reached it.
    h.send(B, &b_response(&b_invite, 200));
    let sent = h.sent();
    let ack = request_to(&sent, B, Method::Ack).expect("the late 2xx is ACKed");
    let bye = request_to(&sent, B, Method::Bye).expect("and hung up");
    for r in [ack, bye] {
        assert_eq!(r.headers.to_addr().unwrap().tag(), Some("bt"));
        assert_eq!(r.headers.call_id(), b_invite.headers.call_id());
    }
    assert!(
        statuses_to(&sent, A).is_empty(),
        "the caller hears nothing more"
    );
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn no_provisional_means_the_cancel_waits_for_one() {
    let mut h = Harness::new();
    h.send(A, INVITE);
    let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    h.send(
        A,
        &INVITE
            .replace(
                "INVITE sip:1000@127.0.0.1:5060 SIP/2.0",
                "CANCEL sip:1000@127.0.0.1:5060 SIP/2.0",
            )
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
    );
    let sent = h.sent();
    assert!(
        request_to(&sent, B, Method::Cancel).is_none(),
        "RFC 3261 §9.1: no CANCEL before a provisional"
    );
    // A 100 is not enough either (it comes from the transaction, not the UAS)... a 180 is.
    h.send(B, &b_response(&b_invite, 180));
    assert!(request_to(&h.sent(), B, Method::Cancel).is_some());
}

#[test]
fn caller_that_never_acks_gets_both_legs_hung_up() {
    let mut h = Harness::new();
    h.send(A, INVITE);
    let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    h.send(B, &b_response(&b_invite, 200));
    assert_eq!(statuses_to(&h.sent(), A), vec![200]);
    // No ACK from A: our 200 is retransmitted, then after 64·T1 the call is torn down.
    let mut byes = 0;
    while let Some(at) = h.engine.poll_timeout() {
        if at > h.now + Duration::from_secs(40) {
            break;
        }
        h.now = at;
        h.engine.handle_timeout(at, jiff::Timestamp::UNIX_EPOCH);
        byes += h
            .sent()
            .iter()
            .filter(|(_, m)| matches!(m, Message::Request(r) if r.method == Method::Bye))
            .count();
        if h.engine.active_calls() == 0 {
            break;
        }
    }
    assert_eq!(h.engine.active_calls(), 0);
    assert!(byes >= 1, "leg B gets a BYE");
}

#[test]
fn garbage_and_half_messages_never_panic_and_are_counted() {
    let mut h = Harness::new();
    for junk in [
        "",
        "\r\n\r\n",
        "INVITE",
        "SIP/2.0 200 OK\r\n\r\n",
        "INVITE sip:x SIP/2.0\r\nVia: nope\r\n\r\n",
    ] {
        h.send_raw(A, junk);
    }
    let _ = h.sent();
    // An empty head, a response without mandatory headers, a request with a broken Via.
    assert_eq!(h.engine.stats().parse_errors, 3);
    assert_eq!(h.engine.active_calls(), 0);
}
