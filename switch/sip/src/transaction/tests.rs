//! Two transaction layers wired back to back over a simulated network with simulated time
//! and scripted loss. No sleeps: time jumps to the next timer.
#![allow(clippy::disallowed_methods)] // tests pick an arbitrary starting instant

use super::*;
use crate::parse::parse_datagram;

const A: &str = "127.0.0.1:5070";
const B: &str = "127.0.0.1:5080";

fn peer(addr: &str, transport: Transport) -> Peer {
    Peer {
        transport,
        addr: addr.parse().unwrap(),
    }
}

struct Net {
    now: Instant,
    start: Instant,
    a: TransactionLayer,
    b: TransactionLayer,
    transport: Transport,
    /// Wire log: (seconds since start, from A?, first line).
    log: Vec<(f64, bool, String)>,
    /// Drops the n-th message (0-based) from A or B whose first line starts with the prefix.
    drops: Vec<(bool, String, usize)>,
    seen: HashMap<(bool, String), usize>,
    a_events: Vec<TxnEvent>,
    b_events: Vec<TxnEvent>,
}

impl Net {
    fn new(transport: Transport) -> Net {
        let now = Instant::now();
        Net {
            now,
            start: now,
            a: TransactionLayer::new(TimerConfig::default()),
            b: TransactionLayer::new(TimerConfig::default()),
            transport,
            log: vec![],
            drops: vec![],
            seen: HashMap::default(),
            a_events: vec![],
            b_events: vec![],
        }
    }

    fn drop_nth(&mut self, from_a: bool, prefix: &str, n: usize) {
        self.drops.push((from_a, prefix.to_owned(), n));
    }

    fn t(&self) -> f64 {
        (self.now - self.start).as_secs_f64()
    }

    /// Moves messages between the layers until both are quiet at this instant.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for from_a in [true, false] {
                let src = if from_a { &mut self.a } else { &mut self.b };
                let mut out = vec![];
                while let Some(tx) = src.poll_transmit() {
                    out.push(tx);
                }
                for tx in out {
                    moved = true;
                    let text = String::from_utf8_lossy(&tx.data).to_string();
                    let first = text.lines().next().unwrap_or("").to_owned();
                    self.log.push((self.t(), from_a, first.clone()));
                    let prefixes: Vec<String> = self
                        .drops
                        .iter()
                        .filter(|(fa, p, _)| *fa == from_a && first.starts_with(p.as_str()))
                        .map(|d| d.1.clone())
                        .collect();
                    let mut prefixes = prefixes;
                    prefixes.dedup();
                    let mut dropped = false;
                    for p in prefixes {
                        let count = self.seen.entry((from_a, p.clone())).or_insert(0);
                        let this = *count;
                        *count += 1;
                        dropped |= self
                            .drops
                            .iter()
                            .any(|(fa, dp, n)| *fa == from_a && *dp == p && *n == this);
                    }
                    if dropped {
                        continue;
                    }
                    let msg =
                        parse_datagram(tx.data.clone()).expect("layer printed a parseable message");
                    msg.validate().expect("layer printed a valid message");
                    let (dst, from) = if from_a {
                        (&mut self.b, peer(A, self.transport))
                    } else {
                        (&mut self.a, peer(B, self.transport))
                    };
                    dst.handle_message(self.now, msg, from);
                }
            }
            while let Some(e) = self.a.poll_event() {
                self.a_events.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.b_events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances simulated time to the next timer of either side and fires it.
    fn step(&mut self) -> bool {
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else { return false };
        self.now = self.now.max(at);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.pump();
        true
    }

    fn run_until_idle(&mut self, limit_secs: f64) {
        while self.t() < limit_secs && self.step() {}
    }

    fn sent(&self, from_a: bool, prefix: &str) -> Vec<f64> {
        self.log
            .iter()
            .filter(|(_, fa, l)| *fa == from_a && l.starts_with(prefix))
            .map(|(t, _, _)| *t)
            .collect()
    }

    fn take_b_request(&mut self) -> (TxnId, Request) {
        let i = self
            .b_events
            .iter()
            .position(|e| matches!(e, TxnEvent::Request { .. }))
            .expect("a request at B");
        match self.b_events.remove(i) {
            TxnEvent::Request { id, req, .. } => (id, req),
            _ => unreachable!(),
        }
    }

    fn a_responses(&self) -> Vec<u16> {
        self.a_events
            .iter()
            .filter_map(|e| match e {
                TxnEvent::Response { resp, .. } => Some(resp.status),
                _ => None,
            })
            .collect()
    }
}

fn request(method: Method, branch: &str, transport: Transport) -> Request {
    let mut r = Request::new(method.clone(), "sip:bob@127.0.0.1:5080");
    r.headers.push(
        Name::Via,
        format!(
            "SIP/2.0/{} 127.0.0.1:5070;branch={branch};rport",
            transport.via_token()
        ),
    );
    r.headers.push(Name::MaxForwards, "70");
    r.headers.push(Name::From, "<sip:alice@127.0.0.1>;tag=a1");
    r.headers.push(Name::To, "<sip:bob@127.0.0.1>");
    r.headers.push(Name::CallId, "call-1@test");
    r.headers.push(Name::CSeq, format!("1 {method}"));
    r
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn non_invite_timer_e_doubles_to_t2_and_timer_f_times_out() {
    let mut n = Net::new(Transport::Udp);
    n.drop_nth(true, "OPTIONS", 0);
    for i in 1..20 {
        n.drop_nth(true, "OPTIONS", i);
    }
    let now = n.now;
    let id = n.a.send_request(
        now,
        request(Method::Options, "z9hG4bKe1", Transport::Udp),
        peer(B, Transport::Udp),
    );
    n.pump();
    n.run_until_idle(100.0);
    let times = n.sent(true, "OPTIONS");
    let want = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5];
    assert_eq!(times.len(), want.len(), "{times:?}");
    assert!(
        times.iter().zip(want).all(|(a, b)| close(*a, b)),
        "{times:?}"
    );
    assert!(matches!(n.a_events.as_slice(), [TxnEvent::Timeout { id: t }] if *t == id));
    assert!(n.a.is_empty(), "the timed-out transaction is gone");
}

#[test]
fn invite_timer_a_doubles_without_cap_and_timer_b_fires_at_64_t1() {
    let mut n = Net::new(Transport::Udp);
    for i in 0..20 {
        n.drop_nth(true, "INVITE", i);
    }
    let now = n.now;
    n.a.send_request(
        now,
        request(Method::Invite, "z9hG4bKa1", Transport::Udp),
        peer(B, Transport::Udp),
    );
    n.pump();
    n.run_until_idle(100.0);
    let times = n.sent(true, "INVITE");
    let want = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5];
    assert!(
        times.len() == want.len() && times.iter().zip(want).all(|(a, b)| close(*a, b)),
        "{times:?}"
    );
    assert!(matches!(n.a_events.as_slice(), [TxnEvent::Timeout { .. }]));
    assert_eq!(n.a.stats().retransmissions, 6);
}

#[test]
fn lost_request_is_retransmitted_and_the_retransmission_of_the_answer_is_absorbed() {
    let mut n = Net::new(Transport::Udp);
    n.drop_nth(true, "OPTIONS", 0);
    let now = n.now;
    n.a.send_request(
        now,
        request(Method::Options, "z9hG4bKl1", Transport::Udp),
        peer(B, Transport::Udp),
    );
    n.pump();
    assert!(n.b_events.is_empty());
    n.step(); // Timer E
    let (id, req) = n.take_b_request();
    let now = n.now;
    n.b.respond(now, id, make_response(&req, 200, Some("b1")));
    n.pump();
    assert_eq!(n.a_responses(), vec![200]);
    // Both sides drain (Timer K = T4 at A, Timer J = 64·T1 at B) and forget the transaction.
    n.run_until_idle(100.0);
    assert!(n.a.is_empty() && n.b.is_empty());
    assert_eq!(
        n.a_responses(),
        vec![200],
        "the TU sees the final response once"
    );
}

#[test]
fn retransmitted_invite_gets_the_last_provisional_and_reaches_the_tu_once() {
    let mut n = Net::new(Transport::Udp);
    n.drop_nth(false, "SIP/2.0 100", 0);
    let now = n.now;
    n.a.send_request(
        now,
        request(Method::Invite, "z9hG4bKr1", Transport::Udp),
        peer(B, Transport::Udp),
    );
    n.pump();
    n.step(); // Timer A: INVITE again; B answers with 100 again
    assert_eq!(n.sent(true, "INVITE").len(), 2);
    assert_eq!(n.sent(false, "SIP/2.0 100").len(), 2);
    assert_eq!(
        n.b_events
            .iter()
            .filter(|e| matches!(e, TxnEvent::Request { .. }))
            .count(),
        1
    );
    assert_eq!(n.b.stats().absorbed, 1);
    // After the 100, A stops retransmitting.
    let (id, req) = n.take_b_request();
    let t_before = n.sent(true, "INVITE").len();
    n.now += Duration::from_secs(10);
    let now = n.now;
    n.a.handle_timeout(now);
    n.pump();
    assert_eq!(n.sent(true, "INVITE").len(), t_before);
    n.b.respond(now, id, make_response(&req, 180, Some("b2")));
    n.pump();
    assert_eq!(n.a_responses(), vec![100, 180]);
}

#[test]
fn non_2xx_final_is_acked_by_the_client_transaction_and_a_lost_ack_is_recovered() {
    let mut n = Net::new(Transport::Udp);
    n.drop_nth(true, "ACK", 0);
    let now = n.now;
    n.a.send_request(
        now,
        request(Method::Invite, "z9hG4bKn1", Transport::Udp),
        peer(B, Transport::Udp),
    );
    n.pump();
    let (id, req) = n.take_b_request();
    n.b.respond(now, id, make_response(&req, 486, Some("b3")));
    n.pump();
    assert_eq!(n.a_responses(), vec![100, 486]);
    // The first ACK was lost: Timer G retransmits the 486, A ACKs again without telling its TU.
    n.step();
    assert_eq!(n.sent(false, "SIP/2.0 486").len(), 2);
    assert_eq!(n.sent(true, "ACK").len(), 2);
    assert_eq!(n.a_responses(), vec![100, 486]);
    assert!(
        n.b_events
            .iter()
            .all(|e| !matches!(e, TxnEvent::Ack { .. } | TxnEvent::AckTimeout { .. }))
    );
    // Timer I, then Timer D (32 s) clean both sides up.
    n.run_until_idle(100.0);
    assert!(n.a.is_empty() && n.b.is_empty());
    assert_eq!(
        n.sent(false, "SIP/2.0 486").len(),
        2,
        "Confirmed stops Timer G"
    );
}

#[test]
fn timer_h_reports_a_missing_ack() {
    let mut n = Net::new(Transport::Udp);
    for i in 0..20 {
        n.drop_nth(true, "ACK", i);
    }
    let now = n.now;
    n.a.send_request(
        now,
        request(Method::Invite, "z9hG4bKh1", Transport::Udp),
        peer(B, Transport::Udp),
    );
    n.pump();
    let (id, req) = n.take_b_request();
    n.b.respond(now, id, make_response(&req, 503, Some("b4")));
    n.pump();
    n.run_until_idle(100.0);
    let g = n.sent(false, "SIP/2.0 503");
    let want = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5];
    assert!(
        g.len() == want.len() && g.iter().zip(want).all(|(a, b)| close(*a, b)),
        "{g:?}"
    );
    assert!(
        n.b_events
            .iter()
            .any(|e| matches!(e, TxnEvent::AckTimeout { id: t } if *t == id))
    );
}

#[test]
fn a_2xx_is_retransmitted_until_the_ack_and_each_copy_reaches_the_client_tu() {
    let mut n = Net::new(Transport::Udp);
    n.drop_nth(false, "SIP/2.0 200", 0);
    let now = n.now;
    let cid = n.a.send_request(
        now,
        request(Method::Invite, "z9hG4bKo1", Transport::Udp),
        peer(B, Transport::Udp),
    );
    n.pump();
    let (id, req) = n.take_b_request();
    n.b.respond(now, id, make_response(&req, 200, Some("b5")));
    n.pump();
    assert_eq!(n.a_responses(), vec![100]);
    n.step(); // 2xx retransmission at T1
    assert_eq!(n.a_responses(), vec![100, 200]);
    // The TU acknowledges the 2xx itself, end to end.
    let invite = n.a.client_request(cid).unwrap().clone();
    let Some(TxnEvent::Response { resp, .. }) = n.a_events.last() else {
        panic!()
    };
    let mut ack = make_ack(&invite, resp);
    ack.headers
        .set(Name::Via, "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack2xx");
    n.a.send_stateless(peer(B, Transport::Udp), &Message::Request(ack));
    n.pump();
    assert!(n.b_events.iter().any(|e| matches!(e, TxnEvent::Ack { .. })));
    n.run_until_idle(100.0);
    assert_eq!(
        n.sent(false, "SIP/2.0 200").len(),
        2,
        "the ACK stopped the 2xx retransmissions"
    );
    assert!(
        !n.b_events
            .iter()
            .any(|e| matches!(e, TxnEvent::AckTimeout { .. }))
    );
    assert!(n.a.is_empty() && n.b.is_empty());
}

#[test]
fn cancel_matches_the_pending_invite_and_unknown_cancel_gets_481() {
    let mut n = Net::new(Transport::Udp);
    let now = n.now;
    let cid = n.a.send_request(
        now,
        request(Method::Invite, "z9hG4bKc1", Transport::Udp),
        peer(B, Transport::Udp),
    );
    n.pump();
    let (inv_id, _) = n.take_b_request();
    let cancel = make_cancel(n.a.client_request(cid).unwrap());
    n.a.send_request(now, cancel, peer(B, Transport::Udp));
    n.pump();
    assert!(
        n.b_events
            .iter()
            .any(|e| matches!(e, TxnEvent::Cancelled { invite } if *invite == inv_id))
    );
    assert!(n.a_responses().contains(&200));

    let stray = make_cancel(&request(Method::Invite, "z9hG4bKnone", Transport::Udp));
    n.a.send_request(now, stray, peer(B, Transport::Udp));
    n.pump();
    assert!(n.a_responses().contains(&481));
}

#[test]
fn reliable_transports_never_retransmit_and_drain_at_once() {
    let mut n = Net::new(Transport::Tcp);
    let now = n.now;
    n.a.send_request(
        now,
        request(Method::Options, "z9hG4bKt1", Transport::Tcp),
        peer(B, Transport::Tcp),
    );
    n.pump();
    let (id, req) = n.take_b_request();
    n.b.respond(now, id, make_response(&req, 200, None));
    n.pump();
    n.step();
    assert!(
        n.a.is_empty() && n.b.is_empty(),
        "Timers K and J are zero on TCP"
    );
    assert_eq!(n.sent(true, "OPTIONS").len(), 1);
    assert_eq!(n.a.stats().retransmissions, 0);
}

#[test]
fn timers_follow_configured_t1_and_t2() {
    let mut n = Net::new(Transport::Udp);
    let cfg = TimerConfig {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(300),
        t4: Duration::from_secs(1),
    };
    n.a = TransactionLayer::new(cfg);
    for i in 0..40 {
        n.drop_nth(true, "OPTIONS", i);
    }
    let now = n.now;
    n.a.send_request(
        now,
        request(Method::Options, "z9hG4bKc2", Transport::Udp),
        peer(B, Transport::Udp),
    );
    n.pump();
    n.run_until_idle(100.0);
    let times = n.sent(true, "OPTIONS");
    assert!(
        close(times[1], 0.1)
            && close(times[2], 0.3)
            && close(times[3], 0.6)
            && close(times[4], 0.9),
        "{times:?}"
    );
    assert!(close(n.t(), 6.4), "Timer F = 64·T1, at {}", n.t());
}

#[test]
fn rport_and_received_are_stamped_and_responses_go_to_the_source_port() {
    let mut layer = TransactionLayer::new(TimerConfig::default());
    let mut req = request(Method::Options, "z9hG4bKp1", Transport::Udp);
    req.headers.set(
        Name::Via,
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKp1;rport",
    );
    let from = peer("127.0.0.9:40000", Transport::Udp);
    let now = Instant::now();
    layer.handle_message(now, Message::Request(req), from);
    let Some(TxnEvent::Request { id, req, .. }) = layer.poll_event() else {
        panic!()
    };
    assert_eq!(
        req.headers.get(&Name::Via).unwrap(),
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKp1;received=127.0.0.9;rport=40000"
    );
    layer.respond(now, id, make_response(&req, 200, None));
    let tx = layer.poll_transmit().unwrap();
    assert_eq!(tx.peer.addr, "127.0.0.9:40000".parse().unwrap());
}

#[test]
fn same_branch_from_another_address_is_another_transaction_and_cannot_cancel_it() {
    let mut b = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let (victim, attacker) = (
        peer(A, Transport::Udp),
        peer("127.0.0.1:6666", Transport::Udp),
    );
    let invite = request(Method::Invite, "z9hG4bKsame", Transport::Udp);
    b.handle_message(now, Message::Request(invite.clone()), victim);
    // A second client (or a replay from elsewhere) with the same branch: a new transaction,
    // not a retransmission.
    b.handle_message(now, Message::Request(invite.clone()), attacker);
    let requests = std::iter::from_fn(|| b.poll_event())
        .filter(|e| matches!(e, TxnEvent::Request { .. }))
        .count();
    assert_eq!(requests, 2);
    // A forged CANCEL for the victim's branch, from the attacker's address, only matches the
    // attacker's own INVITE.
    b.handle_message(now, Message::Request(make_cancel(&invite)), attacker);
    let cancelled: Vec<_> = std::iter::from_fn(|| b.poll_event())
        .filter_map(|e| match e {
            TxnEvent::Cancelled { invite } => Some(invite),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(
        b.server_peer(cancelled[0]).map(|p| p.addr),
        Some(attacker.addr)
    );
}

/// How many requests of a sequence reach the TU (the rest are absorbed as retransmissions).
fn reaching_the_tu(reqs: &[Request]) -> usize {
    let mut b = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    for r in reqs {
        b.handle_message(now, Message::Request(r.clone()), peer(A, Transport::Udp));
    }
    std::iter::from_fn(|| b.poll_event())
        .filter(|e| matches!(e, TxnEvent::Request { .. }))
        .count()
}

#[test]
fn the_same_branch_with_another_sent_by_is_another_transaction() {
    let first = request(Method::Options, "z9hG4bKkdjuw", Transport::Udp);
    let mut other = first.clone();
    other.headers.0[0].value = "SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw".into();
    other.headers.0[4].value = "call-2@test".into();
    assert_eq!(
        reaching_the_tu(&[first.clone(), other.clone(), first, other]),
        2
    );
}

#[test]
fn rfc2543_requests_without_a_cookie_branch_match_by_call_id_cseq_and_from_tag() {
    let mut a = request(Method::Options, "z9hG4bK", Transport::Udp);
    a.headers.0[0].value = "SIP/2.0/UDP 127.0.0.1:5070".into();
    let mut b = a.clone();
    b.headers.0[4].value = "call-2@test".into();
    let mut c = a.clone();
    c.headers.0[5].value = "2 OPTIONS".into();
    // Each new request reaches the TU once; each copy of one is a retransmission.
    assert_eq!(
        reaching_the_tu(&[a.clone(), b.clone(), c.clone(), a, b, c]),
        3
    );
    // A branch that is the bare magic cookie (RFC 4475 §3.2.1) is matched the same way.
    let mut d = request(Method::Options, "z9hG4bK", Transport::Udp);
    let mut e = d.clone();
    e.headers.0[4].value = "call-2@test".into();
    d.headers.0[0].value = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK".into();
    e.headers.0[0].value = d.headers.0[0].value.clone();
    assert_eq!(reaching_the_tu(&[d.clone(), e, d]), 2);
}
