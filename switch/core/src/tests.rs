//! The engine driven by hand, sans-IO: races that a SIPp scenario cannot time precisely.
//!
//! The [`Harness`] plays every peer: it hands the engine text SIP as if from the caller (A,
//! port 5070) or a callee (B, 5080; B2, 5081), parses what the engine sends back, and moves
//! simulated time to the instants [`crate::Engine::poll_timeout`] asks for. No sleeps: a 20 s
//! ring timeout takes no wall time, and happens at exactly 20 s.
#![allow(clippy::disallowed_methods)] // tests pick an arbitrary starting instant

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_dialplan::{Cause, CompileEnv, Source, compile};
use switchboard_media::Side;
use switchboard_sip::transaction::{Peer, TimerConfig, Transport};
use switchboard_sip::{Message, Method, Name, Request, Response, parse_datagram};

use crate::{CallEvent, CallSummary, EngineConfig, Output};

const A: &str = "127.0.0.1:5070";
const B: &str = "127.0.0.1:5080";
/// The second target of the failover and ring-all plans.
const B2: &str = "127.0.0.1:5081";
const WALL: jiff::Timestamp = jiff::Timestamp::UNIX_EPOCH;

/// Every number to one target (the caller's number at B), 20 s to answer.
const ONE_TARGET: &str = r#"
[[extension]]
name = "all"
when.destination = '^(\d+)$'
actions = [ { bridge = { targets = ["sip:$1@127.0.0.1:5080"], timeout = 20 } } ]
"#;

/// A dialplan that sends every number to one bridge (`bridge` is its TOML inline table).
fn bridge_plan(bridge: &str) -> String {
    format!(
        "[[extension]]\nname = \"all\"\nwhen.destination = '^(\\d+)$'\n\
         actions = [ {{ bridge = {bridge} }} ]\n"
    )
}

/// B, then B2 if B fails in a way worth retrying.
const FAILOVER: &str =
    r#"{ targets = ["sip:2000@127.0.0.1:5080", "sip:2000@127.0.0.1:5081"], timeout = 20 }"#;
/// B and B2 at once.
const RING_ALL: &str = r#"{ targets = ["sip:2000@127.0.0.1:5080", "sip:2000@127.0.0.1:5081"], strategy = "parallel", timeout = 20 }"#;

/// The timers the engine runs with (the tests compute instants from them).
fn timers() -> TimerConfig {
    TimerConfig::default()
}

struct Harness {
    engine: crate::Engine,
    now: Instant,
    start: Instant,
    /// Everything the engine reported to the shell so far.
    outputs: Vec<Output>,
}

fn peer(a: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: a.parse().unwrap(),
    }
}

impl Harness {
    /// The engine of the original race tests: one target at B.
    fn new() -> Harness {
        Harness::with_plan(ONE_TARGET)
    }

    /// An engine following this dialplan. The only place an engine is built: its targets are
    /// URIs, so no module (gateways) is needed.
    fn with_plan(plan: &str) -> Harness {
        Harness::configured(plan, crate::Registry::new(), |_| {})
    }

    /// An engine following this dialplan, with these modules and this configuration.
    fn configured(
        plan: &str,
        modules: crate::Registry,
        tune: impl FnOnce(&mut EngineConfig),
    ) -> Harness {
        let source = Source {
            path: "t.toml".into(),
            text: plan.into(),
        };
        let dialplan = compile(&[source], &CompileEnv::default()).unwrap();
        let mut cfg = EngineConfig {
            timers: timers(),
            ..EngineConfig::default()
        };
        tune(&mut cfg);
        // URI targets need no module (the gateways' part is out of core).
        let engine = crate::Engine::new(cfg, Arc::new(dialplan), modules, 7);
        let now = Instant::now();
        Harness {
            engine,
            now,
            start: now,
            outputs: vec![],
        }
    }

    fn send(&mut self, from: &str, text: &str) {
        self.send_raw(from, &text.replace('\n', "\r\n"));
    }

    fn send_raw(&mut self, from: &str, text: &str) {
        self.engine
            .handle_datagram(self.now, WALL, Bytes::from(text.to_owned()), peer(from));
    }

    /// Everything the engine wants to send, parsed, with its destination.
    fn sent(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut out = vec![];
        while let Some(t) = self.engine.poll_transmit() {
            out.push((t.peer.addr, parse_datagram(t.data).unwrap()));
        }
        while let Some(o) = self.engine.poll_output() {
            self.outputs.push(o);
        }
        out
    }

    /// Simulated time since the harness started.
    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Jumps to the engine's next timer, fires it, and returns what the engine sent.
    fn step(&mut self) -> Vec<(SocketAddr, Message)> {
        let at = self.engine.poll_timeout().expect("a timer is pending");
        self.now = self.now.max(at);
        self.engine.handle_timeout(self.now, WALL);
        self.sent()
    }

    /// Lets `by` pass, firing every timer due on the way at the instant it asks for.
    fn advance(&mut self, by: Duration) -> Vec<(SocketAddr, Message)> {
        let until = self.now + by;
        let mut out = vec![];
        for _ in 0..10_000 {
            if self.engine.poll_timeout().is_none_or(|at| at > until) {
                self.now = until;
                return out;
            }
            out.extend(self.step());
        }
        panic!("timers keep firing without time passing");
    }

    /// The call records (CDR summaries) the engine reported.
    fn ended(&self) -> Vec<&CallSummary> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Event(CallEvent::Ended(s)) => Some(&**s),
                _ => None,
            })
            .collect()
    }

    /// The targets the engine reported as answering (None: the plan answered).
    fn answered(&self) -> Vec<Option<&str>> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Event(CallEvent::Answered { target, .. }) => Some(target.as_deref()),
                _ => None,
            })
            .collect()
    }
}

fn request_to<'a>(
    sent: &'a [(SocketAddr, Message)],
    to: &str,
    method: Method,
) -> Option<&'a Request> {
    requests_to(sent, to, method).into_iter().next()
}

fn requests_to<'a>(
    sent: &'a [(SocketAddr, Message)],
    to: &str,
    method: Method,
) -> Vec<&'a Request> {
    sent.iter()
        .filter_map(|(a, m)| match m {
            Message::Request(r)
                if r.method == method && *a == to.parse::<SocketAddr>().unwrap() =>
            {
                Some(r)
            }
            _ => None,
        })
        .collect()
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

/// The response with this status sent to `to`.
fn response_to<'a>(sent: &'a [(SocketAddr, Message)], to: &str, status: u16) -> &'a Response {
    sent.iter()
        .find_map(|(a, m)| match m {
            Message::Response(r)
                if r.status == status && *a == to.parse::<SocketAddr>().unwrap() =>
            {
                Some(r)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {status} to {to}"))
}

fn branch(r: &Request) -> String {
    r.headers.top_via().unwrap().branch().unwrap().to_owned()
}

fn cseq(h: &switchboard_sip::Headers) -> (u32, Method) {
    let c = h.cseq().unwrap();
    (c.seq, c.method)
}

fn q850(cause: Cause) -> String {
    format!("Q.850;cause={};text=\"{}\"", cause.q850(), cause.name())
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

/// The caller's CANCEL of [`INVITE`] (same branch, RFC 3261 §9.1).
fn caller_cancel() -> String {
    INVITE
        .replace(
            "INVITE sip:1000@127.0.0.1:5060 SIP/2.0",
            "CANCEL sip:1000@127.0.0.1:5060 SIP/2.0",
        )
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
}

/// The caller's ACK for the 2xx it got: a new branch, the 2xx's To tag (RFC 3261 §13.2.2.4).
fn caller_ack(ok: &Response) -> String {
    caller_request(ok, "ACK", 1, "z9hG4bK-a-ack")
}

/// An in-dialog request from the caller, in the dialog our 2xx (`ok`) made.
fn caller_request(ok: &Response, method: &str, seq: u32, branch: &str) -> String {
    let to = ok.headers.get(&Name::To).unwrap();
    format!(
        "{method} sip:switchboard@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport
Max-Forwards: 70
From: <sip:alice@127.0.0.1:5070>;tag=at
To: {to}
Call-ID: race-1@test
CSeq: {seq} {method}
Content-Length: 0

"
    )
}

/// The caller's ACK for a non-2xx final response: the INVITE's branch (RFC 3261 §17.1.1.3).
fn caller_ack_of_failure(resp: &Response) -> String {
    let to = resp.headers.get(&Name::To).unwrap();
    INVITE
        .replace(
            "INVITE sip:1000@127.0.0.1:5060 SIP/2.0",
            "ACK sip:1000@127.0.0.1:5060 SIP/2.0",
        )
        .replace("To: <sip:1000@127.0.0.1:5060>", &format!("To: {to}"))
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace("Contact: <sip:alice@127.0.0.1:5070>\n", "")
}

/// The caller's response to a request we sent it.
fn response_from_caller(req: &Request, status: u16) -> String {
    let r = switchboard_sip::transaction::make_response(req, status, None);
    String::from_utf8(Message::Response(r).to_bytes())
        .unwrap()
        .replace("\r\n", "\n")
}

/// A response from B to the INVITE we sent it, with B's tag.
fn b_response(invite: &Request, status: u16) -> String {
    callee_response(invite, status, "bt", B)
}

/// A response from the callee at `callee` (To tag `tag`) to a request we sent it.
fn callee_response(req: &Request, status: u16, tag: &str, callee: &str) -> String {
    let mut r = switchboard_sip::transaction::make_response(req, status, Some(tag));
    if req.method == Method::Invite {
        let user = if callee == B { "acd" } else { "acd2" };
        r.headers
            .push(Name::Contact, format!("<sip:{user}@{callee}>"));
    }
    String::from_utf8(Message::Response(r).to_bytes())
        .unwrap()
        .replace("\r\n", "\n")
}

/// A BYE from the callee at `callee` in the dialog its 2xx (To tag `tag`) made with `invite`.
fn callee_bye(invite: &Request, tag: &str, callee: &str) -> String {
    let target = invite
        .headers
        .contact()
        .unwrap()
        .unwrap()
        .uri_text
        .to_owned();
    let (ours, theirs) = (
        invite.headers.get(&Name::From).unwrap(),
        invite.headers.get(&Name::To).unwrap(),
    );
    format!(
        "BYE {target} SIP/2.0
Via: SIP/2.0/UDP {callee};branch=z9hG4bK-b-bye;rport
Max-Forwards: 70
From: {theirs};tag={tag}
To: {ours}
Call-ID: {}
CSeq: 1 BYE
Content-Length: 0

",
        invite.headers.call_id().unwrap()
    )
}

/// The caller has its 200 from B (and ACKed it): the call is up. Leg B's INVITE and the
/// caller's 200.
fn call_up(h: &mut Harness) -> (Request, Response) {
    h.send(A, INVITE);
    let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    h.send(B, &b_response(&b_invite, 200));
    let ok = response_to(&h.sent(), A, 200).clone();
    h.send(A, &caller_ack(&ok));
    assert!(
        request_to(&h.sent(), B, Method::Ack).is_some(),
        "the caller's ACK goes on to B"
    );
    (b_invite, ok)
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
    h.send(A, &caller_cancel());
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
    h.send(A, &caller_cancel());
    let sent = h.sent();
    assert!(
        request_to(&sent, B, Method::Cancel).is_none(),
        "RFC 3261 §9.1: no CANCEL before a provisional"
    );
    // Any provisional lets it go (a 100 too: see cancel_after_leg_b_sent_only_100_trying...).
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
        h.engine.handle_timeout(at, WALL);
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
    let sent = h.sent();
    // An empty head, a head that never ends, a response without mandatory headers, a
    // request with a broken Via: none can be answered, each is counted.
    assert!(sent.is_empty(), "{sent:?}");
    assert_eq!(h.engine.stats().parse_errors, 4);
    assert_eq!(h.engine.stats().unanswerable, [3, 0, 1]);
    assert_eq!(h.engine.active_calls(), 0);
}

/// A request with bare-LF line ends (test tools send them): answered 400 saying why, as
/// its Via, From, To, Call-ID and CSeq can be read; a bare-LF ACK is never answered.
#[test]
fn a_request_with_bare_lf_line_ends_gets_a_400_saying_why() {
    let mut h = Harness::new();
    h.send_raw(A, INVITE);
    let sent = h.sent();
    let r = response_to(&sent, A, 400);
    assert_eq!(&*r.reason, "Bad Request (line ends are not CRLF)");
    assert_eq!(
        r.headers.call_id().map(|c| c.to_string()).as_deref(),
        Some("race-1@test")
    );
    assert!(request_to(&sent, B, Method::Invite).is_none());
    let ack = INVITE
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK");
    h.send_raw(A, &ack);
    assert!(h.sent().is_empty());
    assert_eq!(h.engine.stats().unanswerable[1], 1);
}

// ---- failover across targets (strategy "sequence") -------------------------------------

#[test]
fn failover_after_503_sends_the_invite_to_the_second_target_and_the_caller_gets_its_200() {
    let mut h = Harness::with_plan(&bridge_plan(FAILOVER));
    h.send(A, INVITE);
    let sent = h.sent();
    let first = request_to(&sent, B, Method::Invite)
        .expect("target 1 first")
        .clone();
    assert_eq!(first.uri, "sip:2000@127.0.0.1:5080");
    assert!(
        request_to(&sent, B2, Method::Invite).is_none(),
        "one target at a time"
    );

    h.send(B, &b_response(&first, 503));
    let sent = h.sent();
    let ack = request_to(&sent, B, Method::Ack).expect("the 503 is ACKed (§17.1.1.3)");
    assert_eq!(branch(ack), branch(&first));
    let second = request_to(&sent, B2, Method::Invite)
        .expect("target 2 next")
        .clone();
    assert_eq!(second.uri, "sip:2000@127.0.0.1:5081");
    assert_ne!(
        second.headers.call_id(),
        first.headers.call_id(),
        "each attempt is a leg B of its own"
    );
    assert!(
        statuses_to(&sent, A).is_empty(),
        "the caller hears nothing of the 503"
    );

    h.send(B2, &callee_response(&second, 180, "bt2", B2));
    assert_eq!(statuses_to(&h.sent(), A), vec![180]);
    h.send(B2, &callee_response(&second, 200, "bt2", B2));
    let sent = h.sent();
    assert_eq!(statuses_to(&sent, A), vec![200]);
    assert_eq!(h.answered(), vec![Some("sip:2000@127.0.0.1:5081")]);
    let ok = response_to(&sent, A, 200).clone();
    h.send(A, &caller_ack(&ok));
    let sent = h.sent();
    let ack = request_to(&sent, B2, Method::Ack).expect("the caller's ACK goes on to target 2");
    assert_eq!(ack.headers.to_addr().unwrap().tag(), Some("bt2"));
    assert_eq!(ack.headers.call_id(), second.headers.call_id());
    assert!(request_to(&sent, B, Method::Ack).is_none());
    assert_eq!(h.engine.active_calls(), 1);
}

#[test]
fn failover_after_timer_b_on_a_silent_first_target_tries_the_second() {
    // A ring timeout longer than Timer B: the transaction gives up on target 1 first.
    let mut h = Harness::with_plan(&bridge_plan(
        r#"{ targets = ["sip:2000@127.0.0.1:5080", "sip:2000@127.0.0.1:5081"], timeout = 60 }"#,
    ));
    let timer_b = timers().timeout();
    h.send(A, INVITE);
    let mut sent = h.sent();
    sent.extend(h.advance(timer_b - Duration::from_millis(1)));
    // RFC 3261 §17.1.1.2: Timer A fires at T1, 3·T1, 7·T1 ... 63·T1, then Timer B at 64·T1.
    assert_eq!(
        requests_to(&sent, B, Method::Invite).len(),
        7,
        "the INVITE and its 6 retransmissions"
    );
    assert!(request_to(&sent, B2, Method::Invite).is_none());
    assert_eq!(statuses_to(&sent, A), vec![100]);

    let sent = h.step();
    assert_eq!(h.elapsed(), timer_b, "Timer B = 64·T1");
    let second = request_to(&sent, B2, Method::Invite)
        .expect("target 2 once Timer B gave up on target 1")
        .clone();
    assert!(
        request_to(&sent, B, Method::Cancel).is_none(),
        "nothing to cancel: target 1 never answered"
    );
    assert!(statuses_to(&sent, A).is_empty());

    h.send(B2, &callee_response(&second, 200, "bt2", B2));
    assert_eq!(statuses_to(&h.sent(), A), vec![200]);
    assert_eq!(h.answered(), vec![Some("sip:2000@127.0.0.1:5081")]);
}

#[test]
fn failover_at_the_bridge_timeout_tries_the_second_target_and_cancels_the_first_once_it_rings() {
    // A ring timeout shorter than Timer B: the bridge gives up on target 1 first.
    let ring = Duration::from_secs(5);
    let mut h = Harness::with_plan(&bridge_plan(
        r#"{ targets = ["sip:2000@127.0.0.1:5080", "sip:2000@127.0.0.1:5081"], timeout = 5 }"#,
    ));
    h.send(A, INVITE);
    let first = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    let sent = h.advance(ring - Duration::from_millis(1));
    assert!(request_to(&sent, B2, Method::Invite).is_none());

    let sent = h.step();
    assert_eq!(h.elapsed(), ring);
    let second = request_to(&sent, B2, Method::Invite)
        .expect("target 2 at the bridge timeout")
        .clone();
    assert!(
        request_to(&sent, B, Method::Cancel).is_none(),
        "RFC 3261 §9.1: target 1 sent no provisional, its CANCEL waits"
    );
    assert!(statuses_to(&sent, A).is_empty());

    // Target 1 wakes up late: now it can be cancelled, and its ringing is not relayed.
    h.send(B, &b_response(&first, 180));
    let sent = h.sent();
    let cancel = request_to(&sent, B, Method::Cancel).expect("target 1 cancelled");
    assert_eq!(branch(cancel), branch(&first));
    assert!(statuses_to(&sent, A).is_empty());

    h.send(B2, &callee_response(&second, 200, "bt2", B2));
    h.send(B, &b_response(&first, 487));
    let sent = h.sent();
    assert_eq!(statuses_to(&sent, A), vec![200]);
    assert!(
        request_to(&sent, B, Method::Ack).is_some(),
        "the 487 is ACKed"
    );
    assert_eq!(h.answered(), vec![Some("sip:2000@127.0.0.1:5081")]);
}

#[test]
fn busy_from_the_first_target_is_the_callers_answer_and_the_second_is_never_tried() {
    let mut h = Harness::with_plan(&bridge_plan(FAILOVER));
    h.send(A, INVITE);
    let first = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    h.send(B, &b_response(&first, 486));
    let mut sent = h.sent();
    let busy = response_to(&sent, A, 486);
    assert_eq!(cseq(&busy.headers), (1, Method::Invite));
    assert_eq!(
        busy.headers.get(&Name::Reason).map(|r| r.to_string()),
        Some(q850(Cause::UserBusy)),
        "RFC 3326"
    );
    assert!(request_to(&sent, B, Method::Ack).is_some());
    // Long after every timer of the attempt: still no target 2.
    sent.extend(h.advance(timers().timeout() * 2));
    assert!(
        request_to(&sent, B2, Method::Invite).is_none(),
        "a busy callee answered: that is no route failure"
    );
    let [cdr] = h.ended()[..] else {
        panic!("one call record, not {:?}", h.ended())
    };
    assert_eq!(cdr.cause, Cause::UserBusy);
    assert_eq!(cdr.b_cause, Some(Cause::UserBusy));
    assert_eq!(cdr.target.as_deref(), Some("sip:2000@127.0.0.1:5080"));
    assert_eq!(h.engine.active_calls(), 0);
}

// ---- ring all (strategy "parallel") ------------------------------------------------------

#[test]
fn ring_all_answer_from_one_target_cancels_the_other_that_was_ringing() {
    let mut h = Harness::with_plan(&bridge_plan(RING_ALL));
    h.send(A, INVITE);
    let sent = h.sent();
    let b1 = request_to(&sent, B, Method::Invite)
        .expect("both targets at once")
        .clone();
    let b2 = request_to(&sent, B2, Method::Invite)
        .expect("both targets at once")
        .clone();
    assert_ne!(b1.headers.call_id(), b2.headers.call_id());
    h.send(B, &b_response(&b1, 180));
    assert_eq!(statuses_to(&h.sent(), A), vec![180]);
    h.send(B2, &callee_response(&b2, 180, "bt2", B2));
    let _ = h.sent();

    h.send(B2, &callee_response(&b2, 200, "bt2", B2));
    let sent = h.sent();
    assert_eq!(statuses_to(&sent, A), vec![200]);
    let cancel = request_to(&sent, B, Method::Cancel)
        .expect("the target that lost is cancelled")
        .clone();
    // RFC 3261 §9.1: the CANCEL mirrors the INVITE it cancels.
    assert_eq!(branch(&cancel), branch(&b1));
    assert_eq!(cancel.uri, b1.uri);
    assert_eq!(cancel.headers.call_id(), b1.headers.call_id());
    assert_eq!(cseq(&cancel.headers), (1, Method::Cancel));
    assert!(request_to(&sent, B2, Method::Cancel).is_none());

    // The loser confirms: 200 for the CANCEL, 487 for its INVITE, which is ACKed.
    h.send(B, &b_response(&cancel, 200));
    h.send(B, &b_response(&b1, 487));
    let sent = h.sent();
    assert!(request_to(&sent, B, Method::Ack).is_some());
    assert!(statuses_to(&sent, A).is_empty());
    assert_eq!(h.answered(), vec![Some("sip:2000@127.0.0.1:5081")]);
    assert_eq!(h.engine.active_calls(), 1);
}

#[test]
fn ring_all_cancels_a_target_that_was_silent_only_after_its_first_provisional() {
    let mut h = Harness::with_plan(&bridge_plan(RING_ALL));
    h.send(A, INVITE);
    let sent = h.sent();
    let b1 = request_to(&sent, B, Method::Invite).unwrap().clone();
    let b2 = request_to(&sent, B2, Method::Invite).unwrap().clone();
    h.send(B2, &callee_response(&b2, 200, "bt2", B2));
    let sent = h.sent();
    assert_eq!(statuses_to(&sent, A), vec![200]);
    assert!(
        request_to(&sent, B, Method::Cancel).is_none(),
        "RFC 3261 §9.1: no CANCEL before a provisional"
    );
    h.send(B, &b_response(&b1, 180));
    let sent = h.sent();
    let cancel = request_to(&sent, B, Method::Cancel).expect("cancelled once it rings");
    assert_eq!(branch(cancel), branch(&b1));
    assert!(
        statuses_to(&sent, A).is_empty(),
        "the loser's ringing is not relayed"
    );
}

#[test]
fn ring_all_second_answer_is_acked_and_hung_up_and_the_caller_gets_one_200() {
    let mut h = Harness::with_plan(&bridge_plan(RING_ALL));
    h.send(A, INVITE);
    let sent = h.sent();
    let b1 = request_to(&sent, B, Method::Invite).unwrap().clone();
    let b2 = request_to(&sent, B2, Method::Invite).unwrap().clone();
    h.send(B, &b_response(&b1, 180));
    h.send(B2, &callee_response(&b2, 180, "bt2", B2));
    h.send(B2, &callee_response(&b2, 200, "bt2", B2));
    let sent = h.sent();
    assert!(request_to(&sent, B, Method::Cancel).is_some());

    // Target 1 answered before our CANCEL reached it.
    h.send(B, &b_response(&b1, 200));
    let sent = h.sent();
    let ack = request_to(&sent, B, Method::Ack).expect("the losing 2xx is ACKed");
    let bye = request_to(&sent, B, Method::Bye).expect("and hung up");
    for r in [ack, bye] {
        assert_eq!(r.headers.call_id(), b1.headers.call_id());
        assert_eq!(r.headers.to_addr().unwrap().tag(), Some("bt"));
    }
    assert_eq!(cseq(&bye.headers), (2, Method::Bye));
    assert!(statuses_to(&sent, A).is_empty(), "one 200 for the caller");
    assert!(
        request_to(&sent, B2, Method::Bye).is_none(),
        "the winner stays"
    );
    assert_eq!(h.engine.active_calls(), 1);
}

#[test]
fn ring_all_failing_everywhere_gives_the_caller_the_busy_over_the_later_503() {
    let mut h = Harness::with_plan(&bridge_plan(RING_ALL));
    h.send(A, INVITE);
    let sent = h.sent();
    let b1 = request_to(&sent, B, Method::Invite).unwrap().clone();
    let b2 = request_to(&sent, B2, Method::Invite).unwrap().clone();
    h.send(B, &b_response(&b1, 486));
    assert!(statuses_to(&h.sent(), A).is_empty(), "target 2 still rings");
    h.send(B2, &callee_response(&b2, 503, "bt2", B2));
    let sent = h.sent();
    // A callee's answer (busy) outranks a route's trouble (RFC 3261 §16.7 step 6 in spirit).
    assert_eq!(statuses_to(&sent, A), vec![486]);
    let [cdr] = h.ended()[..] else {
        panic!("one call record, not {:?}", h.ended())
    };
    assert_eq!(cdr.cause, Cause::UserBusy);
}

// ---- ring timeout --------------------------------------------------------------------------

/// One target at B, 20 s to answer.
const RING_20S: &str = r#"{ targets = ["sip:2000@127.0.0.1:5080"], timeout = 20 }"#;

/// A 180 from B, then nothing until the bridge timeout: what was sent at that instant.
fn ring_until_the_timeout(h: &mut Harness) -> (Request, Vec<(SocketAddr, Message)>) {
    let ring = Duration::from_secs(20);
    h.send(A, INVITE);
    let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    h.send(B, &b_response(&b_invite, 180));
    assert_eq!(statuses_to(&h.sent(), A), vec![180]);
    let sent = h.advance(ring - Duration::from_millis(1));
    assert!(request_to(&sent, B, Method::Cancel).is_none());
    assert!(statuses_to(&sent, A).is_empty(), "still ringing");
    let sent = h.step();
    assert_eq!(h.elapsed(), ring, "the bridge timeout, to the instant");
    (b_invite, sent)
}

#[test]
fn ring_timeout_cancels_the_ringing_target_and_the_caller_gets_480_no_answer() {
    let mut h = Harness::with_plan(&bridge_plan(RING_20S));
    let (b_invite, sent) = ring_until_the_timeout(&mut h);
    let cancel = request_to(&sent, B, Method::Cancel)
        .expect("the bridge timeout cancels leg B")
        .clone();
    assert_eq!(branch(&cancel), branch(&b_invite));
    // The caller is told at once; leg B's 487 is the switch's business.
    let no_answer = response_to(&sent, A, 480);
    assert_eq!(cseq(&no_answer.headers), (1, Method::Invite));
    assert_eq!(
        no_answer.headers.get(&Name::Reason).map(|r| r.to_string()),
        Some(q850(Cause::NoAnswer))
    );

    h.send(B, &b_response(&cancel, 200));
    h.send(B, &b_response(&b_invite, 487));
    let sent = h.sent();
    let ack = request_to(&sent, B, Method::Ack).expect("the 487 is ACKed");
    assert_eq!(branch(ack), branch(&b_invite));
    assert!(
        statuses_to(&sent, A).is_empty(),
        "the caller has its answer"
    );

    let [cdr] = h.ended()[..] else {
        panic!("one call record, not {:?}", h.ended())
    };
    assert_eq!(cdr.cause, Cause::NoAnswer);
    assert_eq!(cdr.b_cause, Some(Cause::NoAnswer));
    assert_eq!(cdr.hangup_side, None, "the switch gave up, not a leg");
    assert_eq!(cdr.a_call_id, "race-1@test");
    assert_eq!(cdr.b_call_id, None, "no leg B answered");
    assert_eq!(cdr.target.as_deref(), Some("sip:2000@127.0.0.1:5080"));
    assert!(cdr.billable_secs == 0.0, "never answered: nothing to bill");
    assert_eq!(h.engine.active_calls(), 0);

    // The caller ACKs its 480; every transaction then drains (Timers D, I, K).
    h.send(A, &caller_ack_of_failure(no_answer));
    h.advance(timers().timeout() * 2);
    assert_eq!(h.engine.active_transactions(), 0);
}

#[test]
fn callee_answering_across_the_ring_timeout_cancel_is_acked_and_hung_up() {
    let mut h = Harness::with_plan(&bridge_plan(RING_20S));
    let (b_invite, sent) = ring_until_the_timeout(&mut h);
    assert!(request_to(&sent, B, Method::Cancel).is_some());
    assert_eq!(statuses_to(&sent, A), vec![480]);

    // B answered before the CANCEL reached it.
    h.send(B, &b_response(&b_invite, 200));
    let sent = h.sent();
    let ack = request_to(&sent, B, Method::Ack).expect("the late 2xx is ACKed");
    let bye = request_to(&sent, B, Method::Bye).expect("and hung up");
    for r in [ack, bye] {
        assert_eq!(r.headers.call_id(), b_invite.headers.call_id());
        assert_eq!(r.headers.to_addr().unwrap().tag(), Some("bt"));
    }
    assert_eq!(cseq(&ack.headers), (1, Method::Ack));
    assert!(statuses_to(&sent, A).is_empty(), "no 200 after the 480");
}

#[test]
fn cancelled_leg_b_that_never_sends_its_final_response_is_forgotten_after_64_t1() {
    let mut h = Harness::with_plan(&bridge_plan(RING_20S));
    let (_, sent) = ring_until_the_timeout(&mut h);
    let cancel = request_to(&sent, B, Method::Cancel).unwrap().clone();
    let no_answer = response_to(&sent, A, 480).clone();
    h.send(A, &caller_ack_of_failure(&no_answer));
    // B accepts the CANCEL but never sends the 487.
    h.send(B, &b_response(&cancel, 200));
    let _ = h.sent();
    h.advance(timers().timeout() * 4);
    assert_eq!(
        h.engine.active_transactions(),
        0,
        "§9.1: without a final response 64·T1 after the CANCEL, the INVITE's client \
         transaction is destroyed"
    );
}

// ---- CANCEL races --------------------------------------------------------------------------

#[test]
fn cancel_before_any_provisional_waits_then_cancels_and_caller_gets_487() {
    let mut h = Harness::new();
    h.send(A, INVITE);
    let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    h.send(A, &caller_cancel());
    let sent = h.sent();
    assert_eq!(
        cseq(&response_to(&sent, A, 200).headers),
        (1, Method::Cancel)
    );
    let terminated = response_to(&sent, A, 487);
    assert_eq!(cseq(&terminated.headers), (1, Method::Invite));
    assert_eq!(
        terminated.headers.get(&Name::Reason).map(|r| r.to_string()),
        Some(q850(Cause::OriginatorCancel))
    );
    assert!(
        request_to(&sent, B, Method::Cancel).is_none(),
        "RFC 3261 §9.1: no CANCEL before a provisional"
    );

    h.send(B, &b_response(&b_invite, 180));
    let sent = h.sent();
    let cancel = request_to(&sent, B, Method::Cancel)
        .expect("the CANCEL goes with the first provisional")
        .clone();
    assert_eq!(branch(&cancel), branch(&b_invite));
    assert_eq!(cancel.uri, b_invite.uri);
    assert_eq!(cseq(&cancel.headers), (1, Method::Cancel));
    assert!(statuses_to(&sent, A).is_empty(), "the 180 is not relayed");

    h.send(B, &b_response(&cancel, 200));
    h.send(B, &b_response(&b_invite, 487));
    let sent = h.sent();
    assert!(
        request_to(&sent, B, Method::Ack).is_some(),
        "the 487 is ACKed"
    );
    assert!(statuses_to(&sent, A).is_empty());
    let [cdr] = h.ended()[..] else {
        panic!("one call record, not {:?}", h.ended())
    };
    assert_eq!(cdr.cause, Cause::OriginatorCancel);
    assert_eq!(cdr.hangup_side, Some(Side::A));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn cancel_after_leg_b_sent_only_100_trying_goes_out_at_once() {
    let mut h = Harness::new();
    h.send(A, INVITE);
    let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    // The callee's transaction says it has the INVITE (RFC 3261 §17.2.1), then nothing more.
    h.send(B, &b_response(&b_invite, 100));
    let _ = h.sent();
    h.send(A, &caller_cancel());
    let mut sent = h.sent();
    assert_eq!(statuses_to(&sent, A), vec![200, 487]);
    sent.extend(h.advance(timers().timeout() * 2));
    assert!(
        request_to(&sent, B, Method::Cancel).is_some(),
        "§9.1: a 100 is a provisional response; without a CANCEL leg B rings on"
    );
}

#[test]
fn caller_cancel_racing_the_callees_200_gets_487_and_leg_b_is_acked_and_hung_up() {
    let mut h = Harness::new();
    h.send(A, INVITE);
    let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    // B answers at once, while the caller gives up: the CANCEL gets to us first.
    h.send(A, &caller_cancel());
    let sent = h.sent();
    let mut st = statuses_to(&sent, A);
    st.sort();
    assert_eq!(st, vec![200, 487]);
    h.send(B, &b_response(&b_invite, 200));
    let sent = h.sent();
    let ack = request_to(&sent, B, Method::Ack).expect("B's 2xx is ACKed (§13.2.2.4)");
    let bye = request_to(&sent, B, Method::Bye).expect("then hung up");
    for r in [ack, bye] {
        assert_eq!(r.headers.call_id(), b_invite.headers.call_id());
        assert_eq!(r.headers.to_addr().unwrap().tag(), Some("bt"));
        assert_eq!(
            r.headers.from_addr().unwrap().tag(),
            b_invite.headers.from_addr().unwrap().tag()
        );
        assert_eq!(r.uri, "sip:acd@127.0.0.1:5080", "to B's Contact");
    }
    assert_eq!(cseq(&ack.headers), (1, Method::Ack));
    assert_eq!(cseq(&bye.headers), (2, Method::Bye));
    assert!(
        request_to(&sent, B, Method::Cancel).is_none(),
        "B answered: nothing left to cancel"
    );
    assert!(
        statuses_to(&sent, A).is_empty(),
        "487, not 200, for the caller"
    );
    let bye = bye.clone();
    h.send(B, &b_response(&bye, 200));
    let _ = h.sent();
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn retransmitted_invite_from_the_caller_is_absorbed_and_starts_no_second_leg_b() {
    let mut h = Harness::new();
    h.send(A, INVITE);
    let sent = h.sent();
    assert_eq!(statuses_to(&sent, A), vec![100]);
    let b_invite = request_to(&sent, B, Method::Invite).unwrap().clone();

    // Our 100 was lost: the caller's Timer A sends the INVITE again.
    h.advance(timers().t1);
    h.send(A, INVITE);
    let sent = h.sent();
    assert_eq!(
        statuses_to(&sent, A),
        vec![100],
        "the last provisional again"
    );
    assert!(request_to(&sent, B, Method::Invite).is_none());

    h.send(B, &b_response(&b_invite, 180));
    assert_eq!(statuses_to(&h.sent(), A), vec![180]);
    h.send(A, INVITE);
    let sent = h.sent();
    assert_eq!(statuses_to(&sent, A), vec![180]);
    assert!(request_to(&sent, B, Method::Invite).is_none());

    assert_eq!(h.engine.stats().calls_total, 1);
    assert_eq!(h.engine.active_calls(), 1);
    assert_eq!(h.engine.txn_stats().absorbed, 2);
}

#[test]
fn cancel_after_the_caller_was_answered_has_no_effect() {
    let mut h = Harness::new();
    h.send(A, INVITE);
    let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
    h.send(B, &b_response(&b_invite, 200));
    let ok = response_to(&h.sent(), A, 200).clone();
    // The caller's CANCEL crossed our 200 (RFC 3261 §9.2: no effect on an answered INVITE).
    h.send(A, &caller_cancel());
    let sent = h.sent();
    assert_eq!(statuses_to(&sent, A), vec![200]);
    assert_eq!(
        cseq(&response_to(&sent, A, 200).headers),
        (1, Method::Cancel)
    );
    assert!(request_to(&sent, B, Method::Cancel).is_none());
    assert!(request_to(&sent, B, Method::Bye).is_none());
    assert_eq!(h.engine.active_calls(), 1);

    h.send(A, &caller_ack(&ok));
    assert!(
        request_to(&h.sent(), B, Method::Ack).is_some(),
        "the call goes up"
    );
    assert!(h.ended().is_empty());
}

// ---- BYE -----------------------------------------------------------------------------------

#[test]
fn bye_for_an_unknown_dialog_gets_481() {
    let mut h = Harness::new();
    let (_, ok) = call_up(&mut h);

    // Right Call-ID, a To tag that is not ours: not this call's dialog.
    let wrong_tag = caller_request(&ok, "BYE", 2, "z9hG4bK-a-bye1").replace(
        &format!("tag={}", ok.headers.to_addr().unwrap().tag().unwrap()),
        "tag=nosuch",
    );
    // A Call-ID we never saw.
    let unknown = caller_request(&ok, "BYE", 2, "z9hG4bK-a-bye2")
        .replace("Call-ID: race-1@test", "Call-ID: nosuch@test");
    for (bye, call_id) in [(wrong_tag, "race-1@test"), (unknown, "nosuch@test")] {
        h.send(A, &bye);
        let sent = h.sent();
        let r = response_to(&sent, A, 481);
        assert_eq!(cseq(&r.headers), (2, Method::Bye));
        assert_eq!(
            r.headers.call_id().map(|c| c.to_string()).as_deref(),
            Some(call_id)
        );
        assert_eq!(statuses_to(&sent, A), vec![481]);
        assert!(request_to(&sent, B, Method::Bye).is_none());
    }
    assert_eq!(h.engine.active_calls(), 1, "the real call goes on");
    assert!(h.ended().is_empty());
}

#[test]
fn bye_from_the_callee_ends_the_call_and_the_caller_gets_a_bye() {
    let mut h = Harness::new();
    let (b_invite, ok) = call_up(&mut h);
    let talk = Duration::from_secs(30);
    h.advance(talk);

    h.send(B, &callee_bye(&b_invite, "bt", B));
    let sent = h.sent();
    assert_eq!(
        cseq(&response_to(&sent, B, 200).headers),
        (1, Method::Bye),
        "B's BYE is answered"
    );
    let bye = request_to(&sent, A, Method::Bye)
        .expect("the caller is hung up")
        .clone();
    assert_eq!(
        bye.uri, "sip:alice@127.0.0.1:5070",
        "to the caller's Contact"
    );
    assert_eq!(bye.headers.call_id().unwrap(), "race-1@test");
    assert_eq!(bye.headers.to_addr().unwrap().tag(), Some("at"));
    assert_eq!(
        bye.headers.from_addr().unwrap().tag(),
        ok.headers.to_addr().unwrap().tag(),
        "our tag on leg A"
    );
    assert_eq!(cseq(&bye.headers), (1, Method::Bye));
    assert_eq!(
        bye.headers.get(&Name::Reason).map(|r| r.to_string()),
        Some(q850(Cause::NormalClearing))
    );
    assert!(request_to(&sent, B, Method::Bye).is_none());

    let [cdr] = h.ended()[..] else {
        panic!("one call record, not {:?}", h.ended())
    };
    assert_eq!(cdr.cause, Cause::NormalClearing);
    assert_eq!(cdr.hangup_side, Some(Side::B));
    assert_eq!(
        cdr.b_call_id.as_deref(),
        b_invite.headers.call_id().map(|c| &**c)
    );
    assert!(
        cdr.billable_secs == talk.as_secs_f64(),
        "{}",
        cdr.billable_secs
    );
    assert_eq!(h.engine.active_calls(), 0);

    h.send(A, &response_from_caller(&bye, 200));
    assert!(h.sent().is_empty(), "nothing more to say");
    h.advance(timers().timeout() * 2);
    assert_eq!(h.engine.active_transactions(), 0);
}

#[test]
fn bye_from_the_caller_ends_the_call_and_the_callee_gets_a_bye() {
    let mut h = Harness::new();
    let (b_invite, ok) = call_up(&mut h);
    h.send(A, &caller_request(&ok, "BYE", 2, "z9hG4bK-a-bye"));
    let sent = h.sent();
    assert_eq!(cseq(&response_to(&sent, A, 200).headers), (2, Method::Bye));
    let bye = request_to(&sent, B, Method::Bye).expect("the callee is hung up");
    assert_eq!(bye.uri, "sip:acd@127.0.0.1:5080", "to B's Contact");
    assert_eq!(bye.headers.call_id(), b_invite.headers.call_id());
    assert_eq!(bye.headers.to_addr().unwrap().tag(), Some("bt"));
    assert_eq!(cseq(&bye.headers), (2, Method::Bye));
    assert!(request_to(&sent, A, Method::Bye).is_none());
    let [cdr] = h.ended()[..] else {
        panic!("one call record, not {:?}", h.ended())
    };
    assert_eq!(cdr.cause, Cause::NormalClearing);
    assert_eq!(cdr.hangup_side, Some(Side::A));
    assert_eq!(h.engine.active_calls(), 0);
}

// ---- leg apps: the digit decision point ---------------------------------------------------

mod leg_apps {
    use super::*;
    use crate::Module;
    use crate::module::{
        ActionCtx, ActionHandler, AppAction, Declarations, Digit, DigitVerdict, LegApp,
    };
    use switchboard_dialplan::{ActionSpec, ModuleAction};

    /// Holds `*`; a `7` right after releases it (then goes on itself), anything else drops
    /// it; a held `*` alone is dropped after 2 s.
    #[derive(Debug, Default)]
    struct StarSeven {
        holding: Option<Instant>,
        actions: Vec<AppAction>,
    }

    impl LegApp for StarSeven {
        fn name(&self) -> &'static str {
            "star_seven"
        }

        fn on_digit(&mut self, now: Instant, d: &Digit) -> DigitVerdict {
            if self.holding.take().is_some() {
                self.actions.push(if d.digit == '7' {
                    AppAction::ReleaseHeld
                } else {
                    AppAction::DropHeld
                });
                return DigitVerdict::Forward;
            }
            if d.digit == '*' {
                self.holding = Some(now + Duration::from_secs(2));
                return DigitVerdict::Hold;
            }
            DigitVerdict::Forward
        }

        fn poll_timeout(&self) -> Option<Instant> {
            self.holding
        }

        fn handle_timeout(&mut self, now: Instant) {
            if self.holding.is_some_and(|t| t <= now) {
                self.holding = None;
                self.actions.push(AppAction::DropHeld);
                self.actions
                    .push(AppAction::Report(crate::module::ActionReport {
                        name: "star".into(),
                        result: "dropped: nothing followed".into(),
                        ..Default::default()
                    }));
            }
        }

        fn poll_action(&mut self) -> Option<AppAction> {
            (!self.actions.is_empty()).then(|| self.actions.remove(0))
        }
    }

    struct Apps;

    impl Module for Apps {
        fn name(&self) -> &'static str {
            "apps"
        }
        fn declare(&self) -> Declarations {
            Declarations {
                actions: vec![ActionSpec {
                    name: "star_seven".into(),
                    params: vec![],
                    help: "test app".into(),
                    check: None,
                }],
                ..Declarations::default()
            }
        }
        fn actions(&mut self) -> Option<&mut dyn ActionHandler> {
            Some(self)
        }
    }

    impl ActionHandler for Apps {
        fn run(&mut self, _: Instant, _: &ModuleAction, ctx: &mut ActionCtx) -> Result<(), String> {
            ctx.attach(Side::A, Box::<StarSeven>::default());
            Ok(())
        }
    }

    const SDP: &str = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn harness() -> Harness {
        let plan = r#"
[[extension]]
name = "all"
when.destination = '^(\d+)$'
actions = [
  { set = { dtmf_a = "info", dtmf_b = "info" } },
  "star_seven",
  { bridge = { targets = ["sip:$1@127.0.0.1:5080"], timeout = 20 } },
]
"#;
        let mut modules = crate::Registry::new();
        modules.add(Box::new(Apps)).unwrap();
        let env = CompileEnv {
            actions: modules.declarations().actions,
            ..CompileEnv::default()
        };
        let source = Source {
            path: "t.toml".into(),
            text: plan.into(),
        };
        let dialplan = compile(&[source], &env).unwrap();
        let cfg = EngineConfig {
            timers: timers(),
            ..EngineConfig::default()
        };
        let engine = crate::Engine::new(cfg, Arc::new(dialplan), modules, 7);
        let now = Instant::now();
        Harness {
            engine,
            now,
            start: now,
            outputs: vec![],
        }
    }

    fn with_sdp(msg: &str) -> String {
        let msg = msg.replace('\n', "\r\n");
        let head = msg
            .trim_end_matches("\r\n")
            .replace("Content-Length: 0", "");
        format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            head.trim_end_matches("\r\n").to_owned() + "\r\n",
            SDP.len()
        )
    }

    fn info(ok: &Response, seq: u32, digit: char, ms: u32) -> String {
        let body = format!("Signal={digit}\r\nDuration={ms}\r\n");
        caller_request(ok, "INFO", seq, &format!("z9hG4bK-a-info{seq}"))
            .replace('\n', "\r\n")
            .replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            )
    }

    /// The INFO digits that reached B, with their durations.
    fn digits_to_b(sent: &[(SocketAddr, Message)]) -> Vec<(char, u32)> {
        sent.iter()
            .filter_map(|(to, m)| match m {
                Message::Request(r) if to.to_string() == B && r.method == Method::Info => {
                    let ct = r.headers.get(&Name::ContentType).unwrap().to_string();
                    switchboard_media::dtmf::parse_info(&ct, &r.body)
                }
                _ => None,
            })
            .collect()
    }

    fn up(h: &mut Harness) -> Response {
        h.send_raw(A, &with_sdp(INVITE));
        let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        h.send_raw(B, &with_sdp(&b_response(&b_invite, 200)));
        let ok = response_to(&h.sent(), A, 200).clone();
        h.send(A, &caller_ack(&ok));
        h.sent();
        ok
    }

    #[test]
    fn held_digit_is_released_in_order_with_its_own_duration() {
        let mut h = harness();
        let ok = up(&mut h);
        h.send_raw(A, &info(&ok, 2, '*', 160));
        let sent = h.sent();
        assert_eq!(
            statuses_to(&sent, A),
            vec![200],
            "the caller's INFO is answered"
        );
        assert!(digits_to_b(&sent).is_empty(), "* is held, not forwarded");
        h.send_raw(A, &info(&ok, 3, '7', 250));
        assert_eq!(digits_to_b(&h.sent()), vec![('*', 160), ('7', 250)]);
        h.send_raw(A, &info(&ok, 4, '5', 100));
        assert_eq!(digits_to_b(&h.sent()), vec![('5', 100)], "no app holds 5");
    }

    #[test]
    fn held_digit_is_dropped_by_the_next_one_or_by_its_timer() {
        let mut h = harness();
        let ok = up(&mut h);
        h.send_raw(A, &info(&ok, 2, '*', 160));
        h.send_raw(A, &info(&ok, 3, '1', 120));
        assert_eq!(
            digits_to_b(&h.sent()),
            vec![('1', 120)],
            "* dropped, 1 goes on"
        );
        h.send_raw(A, &info(&ok, 4, '*', 160));
        assert!(digits_to_b(&h.sent()).is_empty());
        // (B never answers our INFOs here: the 1's INFO is retransmitted meanwhile.)
        let later = h.advance(Duration::from_secs(3));
        assert!(
            digits_to_b(&later).iter().all(|(d, _)| *d == '1'),
            "the timer drops the lone *: {:?}",
            digits_to_b(&later)
        );
        let reports: Vec<_> = h
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::Event(CallEvent::Action { name, result, .. }) => {
                    Some((name.clone(), result.clone()))
                }
                _ => None,
            })
            .collect();
        assert!(
            reports.contains(&("star_seven".into(), "ok".into())),
            "{reports:?}"
        );
        assert!(
            reports.contains(&("star".into(), "dropped: nothing followed".into())),
            "{reports:?}"
        );
        let digits: Vec<(char, bool)> = h
            .outputs
            .iter()
            .filter_map(|o| match o {
                Output::Event(CallEvent::Digit { event, .. }) => {
                    Some((event.digit, event.suppressed))
                }
                _ => None,
            })
            .collect();
        assert_eq!(digits, vec![('*', true), ('1', false), ('*', true)]);
    }

    /// `read_digits` with `max = 4` and `#` as terminator: the `#` the prompt asks for after
    /// the 4th digit belongs to the collection, not to the call center it routes to.
    #[test]
    fn the_terminator_after_the_last_digit_never_reaches_the_bridged_leg() {
        let plan = r##"
[[extension]]
name = "ivr"
when.destination = '^1000$'
actions = [
  { set = { dtmf_a = "info", dtmf_b = "info" } },
  { read_digits = { min = 4, max = 4, timeout = 5, terminators = "#", context = "extensions" } },
]

[[extension]]
name = "ext"
context = "extensions"
when.destination = '^(\d{4})$'
actions = [ { bridge = { targets = ["sip:$1@127.0.0.1:5080"], timeout = 20 } } ]
"##;
        let mut h = Harness::with_plan(plan);
        h.send_raw(A, &with_sdp(INVITE));
        let ok = response_to(&h.sent(), A, 200).clone();
        h.send(A, &caller_ack(&ok));
        h.sent();
        for (i, d) in "1234".chars().enumerate() {
            h.send_raw(A, &info(&ok, 2 + i as u32, d, 100));
        }
        let sent = h.sent();
        let b_invite = request_to(&sent, B, Method::Invite)
            .expect("the digits route to B")
            .clone();
        assert!(
            b_invite.uri.to_string().contains("1234"),
            "{}",
            b_invite.uri
        );
        h.send_raw(B, &with_sdp(&b_response(&b_invite, 200)));
        h.sent();
        h.send_raw(A, &info(&ok, 6, '#', 100));
        let sent = h.sent();
        assert_eq!(
            statuses_to(&sent, A),
            vec![200],
            "the caller's INFO is answered"
        );
        assert!(digits_to_b(&sent).is_empty(), "the # stayed with the IVR");
        // A later # is the caller's own, for the call center.
        h.send_raw(A, &info(&ok, 7, '#', 100));
        assert_eq!(digits_to_b(&h.sent()), vec![('#', 100)]);
    }
}

/// Overload control: per-source limits and bans for untrusted sources, global ceilings
/// answered 503 with Retry-After, and the context of a module's peers.
mod overload {
    use super::*;
    use crate::guard::{BanReason, PeerRule};

    /// An attacker's address (not in `[sip] trusted`, which is loopback by default).
    const EVIL: &str = "203.0.113.66:5070";

    /// Request `i` of a series: its own Call-ID and branch.
    fn request(method: &str, i: usize, ua: Option<&str>) -> String {
        let ua = ua.map(|u| format!("User-Agent: {u}\n")).unwrap_or_default();
        format!(
            "{method} sip:1000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-f{i};rport
Max-Forwards: 70
From: <sip:666@127.0.0.1:5070>;tag=f{i}
To: <sip:1000@127.0.0.1:5060>
Call-ID: flood-{i}@test
CSeq: 1 {method}
Contact: <sip:666@127.0.0.1:5070>
{ua}Content-Length: 0

"
        )
    }

    fn answers_to(sent: &[(SocketAddr, Message)], to: &str) -> usize {
        statuses_to(sent, to).len()
    }

    #[test]
    fn an_untrusted_flood_is_dropped_then_banned_while_a_trusted_caller_gets_through() {
        let mut h = Harness::new();
        let mut answered = 0;
        for i in 0..1000 {
            h.send(EVIL, &request("OPTIONS", i, None));
            answered += answers_to(&h.sent(), EVIL);
        }
        assert_eq!(answered, 60, "its burst is answered, the rest is not");
        let bans = h.engine.guard().bans(h.now);
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].reason, BanReason::Flood);
        assert_eq!(
            h.engine.server_transactions(),
            60,
            "dropped requests hold nothing"
        );
        // A trusted caller is not limited: its call is set up and answered as ever.
        let (_, ok) = call_up(&mut h);
        assert_eq!(ok.status, 200);
        // Lifting the ban lets the source in again.
        assert!(
            h.engine
                .unban(h.now, EVIL.parse::<SocketAddr>().unwrap().ip())
        );
        h.advance(Duration::from_secs(5));
        h.send(EVIL, &request("OPTIONS", 5000, None));
        assert_eq!(answers_to(&h.sent(), EVIL), 1);
    }

    #[test]
    fn a_scanner_is_never_answered_and_stays_banned_whatever_it_says_next() {
        let mut h = Harness::new();
        h.send(EVIL, &request("OPTIONS", 1, Some("friendly-scanner")));
        assert!(h.sent().is_empty());
        h.send(EVIL, &request("INVITE", 2, Some("Linphone/5.1")));
        assert!(h.sent().is_empty(), "banned: not even parsed");
        assert_eq!(h.engine.guard().stats.bans[0], 1);
        assert!(h.engine.guard().stats.dropped[0] >= 1);
        assert!(h.ended().is_empty(), "no call was started");
        // The same User-Agent from a trusted source is only a name.
        h.send(A, &request("OPTIONS", 3, Some("friendly-scanner")));
        assert_eq!(statuses_to(&h.sent(), A), vec![200]);
    }

    #[test]
    fn an_untrusted_source_collecting_failures_is_banned() {
        // Nothing in the public context: every untrusted INVITE is refused.
        let mut h = Harness::new();
        let mut refused = 0;
        for i in 0..30 {
            h.send(EVIL, &request("INVITE", i, None));
            let sent = h.sent();
            let statuses = statuses_to(&sent, EVIL);
            if let Some(s) = statuses.iter().find(|s| **s >= 400) {
                assert!((400..500).contains(s), "{s}");
                refused += 1;
            }
            h.advance(Duration::from_millis(500));
        }
        assert_eq!(refused, 20, "banned at its 20th failure in a minute");
        let bans = h.engine.guard().bans(h.now);
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].reason, BanReason::Failures);
    }

    #[test]
    fn calls_being_set_up_past_the_ceiling_get_503_with_retry_after() {
        let mut h = Harness::configured(ONE_TARGET, crate::Registry::new(), |c| {
            c.limits.max_pending_calls = 2;
            c.limits.retry_after = 7;
        });
        let invite = |i: usize| request("INVITE", i, None);
        h.send(A, &invite(1));
        h.send(A, &invite(2));
        let sent = h.sent();
        assert_eq!(requests_to(&sent, B, Method::Invite).len(), 2);
        h.send(A, &invite(3));
        let sent = h.sent();
        let busy = response_to(&sent, A, 503);
        assert_eq!(busy.headers.get(&Name::RetryAfter).map(|v| &**v), Some("7"));
        assert!(requests_to(&sent, B, Method::Invite).is_empty());
        assert_eq!(h.engine.guard().stats.refused[1], 1);
        assert_eq!(h.engine.pending_calls(), 2);
    }

    #[test]
    fn requests_past_the_transaction_ceiling_get_a_stateless_503_and_retransmissions_still_match() {
        let mut h = Harness::configured(ONE_TARGET, crate::Registry::new(), |c| {
            c.limits.max_transactions = 5;
        });
        for i in 0..5 {
            h.send(A, &request("OPTIONS", i, None));
        }
        assert_eq!(statuses_to(&h.sent(), A), vec![200; 5]);
        h.send(A, &request("OPTIONS", 5, None));
        let sent = h.sent();
        let busy = response_to(&sent, A, 503);
        assert!(busy.headers.get(&Name::RetryAfter).is_some());
        assert_eq!(h.engine.server_transactions(), 5, "the 503 held nothing");
        // A retransmission of a request the switch holds is answered from its transaction.
        h.send(A, &request("OPTIONS", 0, None));
        assert_eq!(statuses_to(&h.sent(), A), vec![200]);
        // Once the transactions are over, requests are served again.
        h.advance(Duration::from_secs(40));
        h.send(A, &request("OPTIONS", 6, None));
        assert_eq!(statuses_to(&h.sent(), A), vec![200]);
    }

    #[test]
    fn malformed_requests_from_an_untrusted_source_are_limited_and_get_it_banned() {
        let mut h = Harness::new();
        let mut bad = 0;
        for i in 0..30 {
            let no_call_id =
                request("OPTIONS", i, None).replace(&format!("Call-ID: flood-{i}@test\n"), "");
            h.send(EVIL, &no_call_id);
            bad += statuses_to(&h.sent(), EVIL)
                .iter()
                .filter(|s| **s == 400)
                .count();
            h.advance(Duration::from_millis(500));
        }
        assert_eq!(bad, 20, "400s until the source is banned for them");
        assert_eq!(h.engine.guard().bans(h.now)[0].reason, BanReason::Failures);
    }

    #[test]
    fn an_untrusted_source_holds_at_most_its_share_of_calls() {
        // The public context rings B (an IVR, a queue...): strangers' calls take its share.
        let plan = r#"
[[extension]]
name = "public-ring"
context = "public"
when.destination = '^(\d+)$'
actions = [ { bridge = { targets = ["sip:$1@127.0.0.1:5080"], timeout = 20 } } ]
"#;
        let mut h = Harness::configured(plan, crate::Registry::new(), |c| {
            c.limits.max_calls_per_source = 3;
        });
        let mut invites_to_b = 0;
        let mut busy = 0;
        for i in 0..5 {
            h.send(EVIL, &request("INVITE", i, None));
            let sent = h.sent();
            invites_to_b += requests_to(&sent, B, Method::Invite).len();
            busy += statuses_to(&sent, EVIL)
                .iter()
                .filter(|s| **s == 503)
                .count();
        }
        assert_eq!((invites_to_b, busy), (3, 2));
        assert_eq!(h.engine.guard().untrusted_calls(), 3);
        assert_eq!(h.engine.guard().stats.refused[3], 2);
    }

    /// A module that vouches for one carrier's network, whose calls land in their own context.
    struct Carrier;

    impl crate::Module for Carrier {
        fn name(&self) -> &'static str {
            "carrier"
        }
        fn peers(&self) -> Vec<PeerRule> {
            vec![PeerRule {
                net: crate::Cidr::parse("198.51.100.0/24").unwrap(),
                context: Some("from-carrier".into()),
                name: "gateway carrier".into(),
            }]
        }
    }

    #[test]
    fn a_modules_peer_is_trusted_and_lands_in_its_own_context() {
        let plan = r#"
[[extension]]
name = "inbound"
context = "from-carrier"
when.destination = '^(\d+)$'
actions = [ { bridge = { targets = ["sip:$1@127.0.0.1:5081"], timeout = 20 } } ]

[[extension]]
name = "all"
when.destination = '^(\d+)$'
actions = [ { bridge = { targets = ["sip:$1@127.0.0.1:5080"], timeout = 20 } } ]
"#;
        let mut modules = crate::Registry::new();
        modules.add(Box::new(Carrier)).unwrap();
        let mut h = Harness::configured(plan, modules, |_| {});
        const CARRIER: &str = "198.51.100.9:5060";
        // Not limited: far past an untrusted source's burst.
        for i in 0..200 {
            h.send(CARRIER, &request("OPTIONS", i, None));
        }
        assert_eq!(answers_to(&h.sent(), CARRIER), 200);
        assert!(h.engine.guard().bans(h.now).is_empty());
        h.send(CARRIER, &request("INVITE", 1000, None));
        let sent = h.sent();
        assert!(
            request_to(&sent, B2, Method::Invite).is_some(),
            "routed in from-carrier"
        );
        assert!(request_to(&sent, B, Method::Invite).is_none());
    }
}

/// A caller that sends no offer is sent one of ours in the 200 (RFC 3264 §5) and answers in
/// its ACK; the prompt the plan plays reaches it with the codec it picked.
#[test]
fn an_invite_without_sdp_answered_by_the_plan_gets_our_offer_and_its_ack_the_answer() {
    let mut h = Harness::with_plan(
        "[[extension]]\nname = \"echo\"\nwhen.destination = '^(\\d+)$'\nactions = [ { echo = 5 } ]\n",
    );
    h.send(A, INVITE);
    let sent = h.sent();
    let ok = response_to(&sent, A, 200).clone();
    assert_eq!(
        ok.headers.get(&Name::ContentType).map(|v| &**v),
        Some("application/sdp")
    );
    let offer = String::from_utf8_lossy(&ok.body).to_string();
    assert!(offer.contains("m=audio "), "{offer}");
    assert!(offer.contains("a=rtpmap:0 PCMU/8000"), "{offer}");
    assert!(offer.contains("telephone-event/8000"), "{offer}");
    assert!(!offer.contains("m=audio 0 "), "{offer}");
    // The caller picks PCMA in its ACK.
    let answer = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    let ack = caller_ack(&ok).replace("\n", "\r\n").replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        ),
    );
    h.send_raw(A, &ack);
    h.sent();
    let remote = h.outputs.iter().rev().find_map(|o| match o {
        Output::MediaRemote { side, addr, .. } if *side == Side::A => Some(*addr),
        _ => None,
    });
    assert_eq!(remote, Some(Some("127.0.0.1:4000".parse().unwrap())));
    let codec = h.outputs.iter().rev().find_map(|o| match o {
        Output::MediaLeg { side, media, .. } if *side == Side::A => Some(media.codec),
        _ => None,
    });
    assert_eq!(codec, Some(switchboard_media::CodecKind::Pcma));
}

/// RFC 3261 §8.2.6.2, §21.4.6, §21.4.13: local failure answers carry a To tag; a 405's Allow
/// never lists the method it refuses; a 415 says what is accepted.
#[test]
fn local_failure_answers_carry_a_to_tag_allow_and_accept() {
    let mut h = Harness::new();
    let req = |method: &str, extra: &str, body: &str| {
        format!(
            "{method} sip:1000@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{method}-x;rport\n\
             Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1:5070>;tag=at\nTo: <sip:1000@127.0.0.1:5060>\n\
             Call-ID: {method}-local@test\nCSeq: 1 {method}\nContact: <sip:alice@127.0.0.1:5070>\n{extra}\
             Content-Length: {}\n\n{body}",
            body.len()
        )
    };
    let answer = |h: &mut Harness, text: &str| {
        h.send(A, text);
        let sent = h.sent();
        sent.into_iter()
            .find_map(|(to, m)| match m {
                Message::Response(r) if to.to_string() == A && r.status >= 200 => Some(r),
                _ => None,
            })
            .expect("a final answer")
    };
    let tagged = |r: &Response| {
        r.headers
            .get(&Name::To)
            .is_some_and(|t| t.contains(";tag="))
    };
    let r = answer(&mut h, &req("MESSAGE", "", ""));
    assert_eq!(r.status, 405);
    assert!(tagged(&r), "{r:?}");
    let allow = r.headers.get(&Name::Allow).unwrap().to_string();
    assert!(
        allow.contains("INVITE") && !allow.contains("MESSAGE"),
        "{allow}"
    );
    let r = answer(
        &mut h,
        &req("INVITE", "Content-Type: text/plain\n", "hello"),
    );
    assert_eq!(r.status, 415);
    assert!(tagged(&r));
    assert_eq!(
        r.headers.get(&Name::Other("Accept".into())).map(|v| &**v),
        Some("application/sdp, multipart/mixed")
    );
    let r = answer(&mut h, &req("OPTIONS", "Require: teleportation\n", ""));
    assert_eq!(r.status, 420);
    assert!(tagged(&r));
    let r = answer(&mut h, &req("FROBNICATE", "", ""));
    assert_eq!(r.status, 501);
    assert!(tagged(&r));
}

/// A gateway's `tel:` Request-URI is routed by its number.
#[test]
fn a_tel_request_uri_is_routed_by_its_number() {
    let mut h = Harness::new();
    let invite = INVITE.replace(
        "INVITE sip:1000@127.0.0.1:5060 SIP/2.0",
        "INVITE tel:1-000;phone-context=example.com SIP/2.0",
    );
    h.send(A, &invite);
    let sent = h.sent();
    let b = request_to(&sent, B, Method::Invite).expect("routed to B");
    assert!(b.uri.to_string().starts_with("sip:1000@"), "{}", b.uri);
}

/// RFC 3261 §8.1.1.8: an INVITE whose Contact is not a SIP URI has nowhere for its dialog.
#[test]
fn an_invite_whose_contact_is_not_a_sip_uri_is_refused() {
    let mut h = Harness::new();
    let invite = INVITE.replace(
        "Contact: <sip:alice@127.0.0.1:5070>",
        "Contact: <mailto:alice@example.com>",
    );
    h.send(A, &invite);
    let sent = h.sent();
    let r = response_to(&sent, A, 400);
    assert_eq!(&*r.reason, "Contact is not a SIP URI");
    assert!(request_to(&sent, B, Method::Invite).is_none());
}

/// SDES-SRTP terminated per leg (RFC 4568): each leg gets keys of ours, a leg's keys never
/// reach the other leg, and what cannot be secured is refused with the reason.
mod srtp {
    use super::*;
    use switchboard_media::srtp::{Crypto, Suite};

    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    fn sdp(proto: &str, crypto: &[&str]) -> String {
        let mut s = format!(
            "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 4000 {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        );
        for c in crypto {
            s.push_str(&format!("a=crypto:{c}\r\n"));
        }
        s
    }

    /// `msg` (text with `\n` line ends and `Content-Length: 0`) carrying `body` as SDP.
    pub(super) fn with_body(msg: &str, body: &str) -> String {
        msg.replace('\n', "\r\n").replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    }

    fn cryptos(body: &[u8]) -> Vec<Crypto> {
        String::from_utf8_lossy(body)
            .lines()
            .filter_map(|l| l.strip_prefix("a=crypto:"))
            .map(|c| Crypto::parse(c).unwrap())
            .collect()
    }

    fn leg_keys(h: &Harness, side: Side) -> Option<switchboard_media::srtp::LegKeys> {
        h.outputs.iter().rev().find_map(|o| match o {
            Output::MediaLeg { side: s, media, .. } if *s == side => Some(media.srtp.clone()),
            _ => None,
        })?
    }

    fn srtp_b_plan(policy: &str) -> String {
        format!(
            "[[extension]]\nname = \"all\"\nwhen.destination = '^(\\d+)$'\nactions = [ {{ set = {{ srtp_b = \"{policy}\" }} }}, {{ bridge = {{ targets = [\"sip:$1@127.0.0.1:5080\"], timeout = 20 }} }} ]\n"
        )
    }

    #[test]
    fn an_srtp_caller_is_answered_with_a_key_of_ours_and_leg_b_never_sees_its_key() {
        let mut h = Harness::new();
        let line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}");
        h.send_raw(A, &with_body(INVITE, &sdp("RTP/SAVP", &[&line])));
        let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        let offer_b = String::from_utf8_lossy(&b_invite.body).to_string();
        assert!(
            offer_b.contains("m=audio ") && offer_b.contains(" RTP/AVP "),
            "{offer_b}"
        );
        assert!(
            !offer_b.contains("crypto") && !offer_b.contains(KEY),
            "{offer_b}"
        );
        let answer_b = sdp("RTP/AVP", &[]);
        h.send_raw(B, &with_body(&b_response(&b_invite, 200), &answer_b));
        let ok = response_to(&h.sent(), A, 200).clone();
        let answer = String::from_utf8_lossy(&ok.body).to_string();
        assert!(
            answer.contains(" RTP/SAVP "),
            "the answer keeps the offer's profile: {answer}"
        );
        let ours = cryptos(&ok.body);
        assert_eq!(ours.len(), 1, "{answer}");
        assert_eq!(
            (ours[0].tag, ours[0].suite()),
            (1, Suite::AesCm128HmacSha1_80)
        );
        assert!(!answer.contains(KEY), "our key is our own: {answer}");
        let keys = leg_keys(&h, Side::A).expect("leg A is secured");
        assert_eq!(keys.theirs, Crypto::parse(&line).unwrap());
        assert_eq!(keys.ours, ours[0]);
        assert_eq!(leg_keys(&h, Side::B), None, "leg B stays plain (srtp off)");

        // A re-INVITE with the same key: our answer repeats our key (its context, and the
        // keystream position, carry on).
        h.send(A, &caller_ack(&ok));
        h.sent();
        let reinvite = with_body(
            &caller_request(&ok, "INVITE", 2, "z9hG4bK-a-re2"),
            &sdp("RTP/SAVP", &[&line]),
        );
        h.send_raw(A, &reinvite);
        let re_b = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        assert!(!String::from_utf8_lossy(&re_b.body).contains("crypto"));
        h.send_raw(B, &with_body(&b_response(&re_b, 200), &answer_b));
        let ok2 = response_to(&h.sent(), A, 200).clone();
        assert_eq!(cryptos(&ok2.body), ours, "the same key of ours");
    }

    #[test]
    fn an_savp_offer_without_a_key_we_can_use_gets_488_with_a_warning() {
        let mut h = Harness::new();
        let line = format!("1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}{KEY}");
        h.send_raw(A, &with_body(INVITE, &sdp("RTP/SAVP", &[&line])));
        let sent = h.sent();
        assert!(request_to(&sent, B, Method::Invite).is_none(), "no leg B");
        let r = response_to(&sent, A, 488);
        let warning = r.headers.get_other("Warning").unwrap().to_string();
        assert!(
            warning.starts_with("302 ") && warning.contains("RTP/SAVP"),
            "{warning}"
        );
        // No audio stream at all: 488, 304.
        let mut h = Harness::new();
        let video = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n";
        h.send_raw(A, &with_body(INVITE, video));
        let sent = h.sent();
        let w = response_to(&sent, A, 488)
            .headers
            .get_other("Warning")
            .unwrap()
            .to_string();
        assert!(w.starts_with("304 "), "{w}");
        // Not SDP: 400 saying so.
        let mut h = Harness::new();
        h.send_raw(A, &with_body(INVITE, "hello\r\n"));
        let sent = h.sent();
        let w = response_to(&sent, A, 400)
            .headers
            .get_other("Warning")
            .unwrap()
            .to_string();
        assert!(w.starts_with("399 "), "{w}");
    }

    #[test]
    fn srtp_b_optional_offers_keys_on_rtp_avp_and_an_answer_with_one_secures_leg_b() {
        let mut h = Harness::with_plan(&srtp_b_plan("optional"));
        h.send_raw(A, &with_body(INVITE, &sdp("RTP/AVP", &[])));
        let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        let offer = String::from_utf8_lossy(&b_invite.body).to_string();
        assert!(offer.contains(" RTP/AVP "), "{offer}");
        let offered = cryptos(&b_invite.body);
        let suites: Vec<Suite> = offered.iter().map(Crypto::suite).collect();
        assert_eq!(suites, switchboard_media::srtp::SUITES.to_vec(), "{offer}");
        // B takes the GCM line, with a key of its own.
        let gcm = offered
            .iter()
            .find(|c| c.suite() == Suite::AeadAes128Gcm)
            .unwrap();
        let b_line = Crypto::ours(gcm.tag, Suite::AeadAes128Gcm).unwrap();
        h.send_raw(
            B,
            &with_body(
                &b_response(&b_invite, 200),
                &sdp("RTP/AVP", &[&b_line.line()]),
            ),
        );
        let ok = response_to(&h.sent(), A, 200).clone();
        assert!(
            cryptos(&ok.body).is_empty(),
            "the plain caller gets a plain answer"
        );
        let keys = leg_keys(&h, Side::B).expect("leg B is secured");
        assert_eq!((&keys.ours, &keys.theirs), (gcm, &b_line));
        assert_eq!(leg_keys(&h, Side::A), None);
    }

    #[test]
    fn srtp_b_required_offers_savp_and_an_answer_without_a_key_ends_the_call_with_488() {
        let mut h = Harness::with_plan(&srtp_b_plan("required"));
        h.send_raw(A, &with_body(INVITE, &sdp("RTP/AVP", &[])));
        let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        let offer = String::from_utf8_lossy(&b_invite.body).to_string();
        assert!(offer.contains(" RTP/SAVP "), "{offer}");
        assert_eq!(cryptos(&b_invite.body).len(), 3);
        h.send_raw(
            B,
            &with_body(&b_response(&b_invite, 200), &sdp("RTP/AVP", &[])),
        );
        let sent = h.sent();
        assert!(
            request_to(&sent, B, Method::Ack).is_some(),
            "B's 200 is ACKed"
        );
        assert!(request_to(&sent, B, Method::Bye).is_some(), "then hung up");
        assert_eq!(statuses_to(&sent, A), vec![488], "the caller gets 488 only");
    }
}

/// RFC 3264 answers: written on the offer's layout whatever leg B answered, rejecting what
/// cannot be carried with port 0, and answering the offer's direction.
mod offer_answer {
    use super::srtp::with_body;
    use super::*;

    #[test]
    fn the_answer_keeps_the_offers_m_lines_and_answers_its_direction_whatever_leg_b_wrote() {
        let mut h = Harness::new();
        let offer = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n\
m=audio 4004 RTP/AVP 8\r\n";
        h.send_raw(A, &with_body(INVITE, offer));
        let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        let to_b = String::from_utf8_lossy(&b_invite.body).to_string();
        let m: Vec<&str> = to_b.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(m.len(), 3, "{to_b}");
        assert!(
            m[0].starts_with("m=video 0 ") && m[2].starts_with("m=audio 0 "),
            "{to_b}"
        );
        assert!(
            to_b.contains("a=sendonly"),
            "the offer's direction goes on: {to_b}"
        );
        // B answers with one m-line, sendrecv: not what RFC 3264 allows.
        let answer = "v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=sendrecv\r\n";
        h.send_raw(B, &with_body(&b_response(&b_invite, 200), answer));
        let ok = response_to(&h.sent(), A, 200).clone();
        let to_a = String::from_utf8_lossy(&ok.body).to_string();
        let m: Vec<&str> = to_a.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(m.len(), 3, "{to_a}");
        assert!(m[0].starts_with("m=video 0 "), "{to_a}");
        assert!(
            m[1].starts_with("m=audio ") && !m[1].starts_with("m=audio 0 "),
            "{to_a}"
        );
        assert!(m[2].starts_with("m=audio 0 "), "{to_a}");
        assert!(
            to_a.contains("a=recvonly") && !to_a.contains("a=sendrecv"),
            "{to_a}"
        );
    }

    /// SIP-T (RFC 3204): SDP and ISUP in a multipart/mixed body. The SDP part is the offer;
    /// leg B gets plain SDP.
    #[test]
    fn a_multipart_offer_with_isup_is_taken_by_its_sdp_part() {
        let mut h = Harness::new();
        let sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let body = format!(
            "--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1\r\nContent-Type: application/isup;version=itu-t92+\r\nContent-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\r\n--b1--\r\n"
        );
        let invite = INVITE.replace('\n', "\r\n").replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: multipart/mixed;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        h.send_raw(A, &invite);
        let sent = h.sent();
        let b_invite = request_to(&sent, B, Method::Invite).expect("leg B is called");
        assert_eq!(
            b_invite
                .headers
                .get(&Name::ContentType)
                .map(|c| c.to_string())
                .as_deref(),
            Some("application/sdp")
        );
        let to_b = String::from_utf8_lossy(&b_invite.body).to_string();
        assert!(
            to_b.contains("m=audio ") && !to_b.contains("isup"),
            "{to_b}"
        );
    }

    #[test]
    fn an_offer_with_streams_we_do_not_know_goes_on_with_its_audio() {
        let mut h = Harness::new();
        let offer = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=application 4002 UNKNOWN 9\r\n\
m=audio 4004 RTP/XAVPX 0\r\n\
m=audio 4000 RTP/AVP 0\r\n\
m=xapplicationx 4006 RTP/AVP 96\r\n";
        h.send_raw(A, &with_body(INVITE, offer));
        let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        let to_b = String::from_utf8_lossy(&b_invite.body).to_string();
        let m: Vec<&str> = to_b.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m.iter()
                .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>(),
            [
                "m=application 0 UNKNOWN",
                "m=audio 0 RTP/XAVPX",
                &format!("m=audio {} RTP/AVP", m[2].split(' ').nth(1).unwrap()),
                "m=xapplicationx 0 RTP/AVP"
            ],
            "{to_b}"
        );
        assert_ne!(m[2].split(' ').nth(1), Some("0"), "{to_b}");
    }
}

/// Session timers (RFC 4028), each leg on its own, in simulated time.
mod session_timers {
    use super::*;

    /// Requests of `method` to `to`, retransmissions counted once.
    fn distinct(sent: &[(SocketAddr, Message)], to: &str, method: Method) -> Vec<Request> {
        let mut seen = std::collections::HashSet::new();
        requests_to(sent, to, method)
            .into_iter()
            .filter(|r| seen.insert(branch(r)))
            .cloned()
            .collect()
    }

    fn with_timer(invite: &str, se: &str) -> String {
        invite.replace(
            "Content-Length: 0",
            &format!("Supported: timer\nSession-Expires: {se}\nContent-Length: 0"),
        )
    }

    /// A's INVITE asks for 120 s; B grants our 1800 s with us as refresher.
    fn up(h: &mut Harness, a_se: Option<&str>) -> (Request, Response) {
        match a_se {
            Some(se) => h.send(A, &with_timer(INVITE, se)),
            None => h.send(A, INVITE),
        }
        let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        assert_eq!(
            b_invite
                .headers
                .get_other("Session-Expires")
                .map(|v| v.to_string())
                .as_deref(),
            Some("1800")
        );
        assert!(b_invite.headers.get_other("Min-SE").is_some());
        let ok_b = b_response(&b_invite, 200).replace(
            "Content-Length: 0",
            "Session-Expires: 1800;refresher=uac\nRequire: timer\nAllow: INVITE, ACK, BYE, UPDATE\nContent-Length: 0",
        );
        h.send(B, &ok_b);
        let ok = response_to(&h.sent(), A, 200).clone();
        h.send(A, &caller_ack(&ok));
        h.sent();
        (b_invite, ok)
    }

    #[test]
    fn a_caller_that_asked_for_120_s_and_never_refreshes_is_hung_up_before_they_end() {
        let mut h = Harness::new();
        let (_, ok) = up(&mut h, Some("120"));
        assert_eq!(
            ok.headers
                .get_other("Session-Expires")
                .map(|v| v.to_string())
                .as_deref(),
            Some("120;refresher=uac")
        );
        assert!(ok.headers.all(&Name::Require).any(|v| v.contains("timer")));
        let sent = h.advance(Duration::from_secs(87));
        assert!(requests_to(&sent, A, Method::Bye).is_empty(), "not yet");
        let sent = h.advance(Duration::from_secs(2));
        assert_eq!(
            distinct(&sent, A, Method::Bye).len(),
            1,
            "BYE at 120 - 32 s"
        );
        assert_eq!(distinct(&sent, B, Method::Bye).len(), 1);
        assert_eq!(h.engine.active_calls(), 0);
    }

    #[test]
    fn where_we_refresh_an_update_goes_out_at_half_the_interval_and_the_call_goes_on() {
        let mut h = Harness::new();
        // A does not support timers: we grant it 1800 s and refresh it ourselves.
        let (_, ok) = up(&mut h, None);
        assert_eq!(
            ok.headers
                .get_other("Session-Expires")
                .map(|v| v.to_string())
                .as_deref(),
            Some("1800;refresher=uas")
        );
        let sent = h.advance(Duration::from_secs(899));
        assert!(requests_to(&sent, B, Method::Update).is_empty());
        let sent = h.advance(Duration::from_secs(2));
        let to_b = distinct(&sent, B, Method::Update);
        assert_eq!(to_b.len(), 1, "UPDATE to B at 900 s");
        assert!(
            to_b[0]
                .headers
                .get_other("Session-Expires")
                .is_some_and(|v| v.contains("refresher=uac"))
        );
        // A sent no Allow: it is refreshed by UPDATE too (no SDP to repeat here).
        assert_eq!(distinct(&sent, A, Method::Update).len(), 1);
        for (to, req) in [
            (B, to_b[0].clone()),
            (A, distinct(&sent, A, Method::Update)[0].clone()),
        ] {
            let ok = callee_response(&req, 200, "x", B).replace(
                "Content-Length: 0",
                "Session-Expires: 1800;refresher=uac\nContent-Length: 0",
            );
            h.send(to, &ok);
        }
        h.sent();
        // Both legs refreshed: past the first interval the call is still up, and the next
        // refreshes went out at 1800 s (unanswered, they would end the call at Timer F).
        let sent = h.advance(Duration::from_secs(910));
        assert!(requests_to(&sent, A, Method::Bye).is_empty());
        assert_eq!(distinct(&sent, B, Method::Update).len(), 1);
        assert_eq!(h.engine.active_calls(), 1);
    }

    #[test]
    fn an_interval_below_min_se_gets_422_with_min_se() {
        let mut h = Harness::new();
        h.send(A, &with_timer(INVITE, "30"));
        let sent = h.sent();
        let r = response_to(&sent, A, 422);
        assert_eq!(
            r.headers
                .get_other("Min-SE")
                .map(|v| v.to_string())
                .as_deref(),
            Some("90")
        );
        assert!(request_to(&sent, B, Method::Invite).is_none());
    }
}

/// Blind transfer: a REFER from leg B (the call center) moves the caller to another target.
mod transfer {
    use super::*;

    /// 3xxx are agents at B2; every other number goes to B.
    const PLAN: &str = r#"
[[extension]]
name = "agents"
when.destination = '^(3\d+)$'
actions = [ { bridge = { targets = ["sip:$1@127.0.0.1:5081"], timeout = 20 } } ]
[[extension]]
name = "all"
when.destination = '^(\d+)$'
actions = [ { bridge = { targets = ["sip:$1@127.0.0.1:5080"], timeout = 20 } } ]
"#;

    /// A request from B in the dialog of `b_invite` (B's tag `bt`), with extra header lines.
    fn from_b(b_invite: &Request, method: &str, seq: u32, extra: &str) -> String {
        callee_bye(b_invite, "bt", B)
            .replacen("BYE ", &format!("{method} "), 1)
            .replace(
                "branch=z9hG4bK-b-bye",
                &format!("branch=z9hG4bK-b-{method}-{seq}"),
            )
            .replace("CSeq: 1 BYE", &format!("CSeq: {seq} {method}"))
            .replace("Content-Length: 0", &format!("{extra}Content-Length: 0"))
    }

    fn refer(b_invite: &Request, to: &str) -> String {
        from_b(
            b_invite,
            "REFER",
            2,
            &format!("Refer-To: <{to}>\nReferred-By: <sip:acd@127.0.0.1:5080>\n"),
        )
    }

    fn sipfrag(sent: &[(SocketAddr, Message)]) -> Vec<(String, String)> {
        requests_to(sent, B, Method::Notify)
            .into_iter()
            .map(|n| {
                assert_eq!(
                    n.headers.get(&Name::Event).map(|e| e.to_string()),
                    Some("refer".into())
                );
                (
                    String::from_utf8_lossy(&n.body).trim_end().to_owned(),
                    n.headers
                        .get_other("Subscription-State")
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn a_refer_from_leg_b_moves_the_caller_to_the_new_target_and_bs_bye_ends_only_b() {
        let mut h = Harness::with_plan(PLAN);
        let (b_invite, _ok) = call_up(&mut h);
        h.send(B, &refer(&b_invite, "sip:3001@elsewhere.example.com"));
        let sent = h.sent();
        assert_eq!(statuses_to(&sent, B), vec![202], "the REFER is accepted");
        assert_eq!(
            sipfrag(&sent),
            vec![("SIP/2.0 100 Trying".into(), "active;expires=60".into())]
        );
        let b2_invite = request_to(&sent, B2, Method::Invite)
            .expect("the new target is called, routed by the dialplan")
            .clone();
        assert_eq!(
            b2_invite.uri, "sip:3001@127.0.0.1:5081",
            "never the Refer-To's host"
        );
        assert!(
            sent.iter().all(|(a, _)| a.to_string() != A),
            "the caller hears nothing"
        );

        h.send(B2, &callee_response(&b2_invite, 180, "b2t", B2));
        assert_eq!(
            sipfrag(&h.sent()),
            vec![("SIP/2.0 180 Ringing".into(), "active;expires=60".into())]
        );
        h.send(B2, &callee_response(&b2_invite, 200, "b2t", B2));
        let sent = h.sent();
        assert!(
            request_to(&sent, B2, Method::Ack).is_some(),
            "the new leg is ACKed"
        );
        assert_eq!(
            sipfrag(&sent),
            vec![(
                "SIP/2.0 200 OK".into(),
                "terminated;reason=noresource".into()
            )]
        );
        assert!(
            sent.iter().all(|(a, _)| a.to_string() != A),
            "the caller hears nothing"
        );

        // The transferor hangs up: that ends it alone.
        h.send(B, &from_b(&b_invite, "BYE", 3, ""));
        let sent = h.sent();
        assert_eq!(statuses_to(&sent, B), vec![200]);
        assert!(request_to(&sent, A, Method::Bye).is_none());
        let later = h.advance(Duration::from_secs(10));
        assert!(
            request_to(&later, B, Method::Bye).is_none(),
            "it is gone already"
        );
        assert_eq!(h.engine.active_calls(), 1);

        // The new leg's BYE ends the call.
        h.send(B2, &callee_bye(&b2_invite, "b2t", B2));
        let sent = h.sent();
        assert!(
            request_to(&sent, A, Method::Bye).is_some(),
            "the caller is hung up"
        );
        let [cdr] = h.ended()[..] else {
            panic!("one call record, not {:?}", h.ended())
        };
        assert_eq!(
            cdr.b_call_id.as_deref(),
            b2_invite.headers.call_id().map(|c| &**c)
        );
        assert_eq!(cdr.target.as_deref(), Some("sip:3001@127.0.0.1:5081"));
    }

    #[test]
    fn a_failed_transfer_gives_the_caller_back_to_the_transferor() {
        let mut h = Harness::with_plan(PLAN);
        let (b_invite, _ok) = call_up(&mut h);
        h.send(B, &refer(&b_invite, "sip:3001@127.0.0.1"));
        let sent = h.sent();
        let b2_invite = request_to(&sent, B2, Method::Invite).unwrap().clone();
        h.send(B2, &callee_response(&b2_invite, 486, "b2t", B2));
        let sent = h.sent();
        assert_eq!(
            sipfrag(&sent),
            vec![(
                "SIP/2.0 486 Busy Here".into(),
                "terminated;reason=noresource".into()
            )]
        );
        assert!(
            request_to(&sent, A, Method::Bye).is_none(),
            "the caller stays"
        );
        // B is leg B again: its BYE ends the call.
        h.send(B, &from_b(&b_invite, "BYE", 3, ""));
        assert!(request_to(&h.sent(), A, Method::Bye).is_some());
        assert_eq!(h.engine.active_calls(), 0);
    }

    #[test]
    fn a_transferor_that_stays_on_the_line_is_hung_up_after_its_notify() {
        let mut h = Harness::with_plan(PLAN);
        let (b_invite, _ok) = call_up(&mut h);
        h.send(B, &refer(&b_invite, "sip:3001@127.0.0.1"));
        let b2_invite = request_to(&h.sent(), B2, Method::Invite).unwrap().clone();
        h.send(B2, &callee_response(&b2_invite, 200, "b2t", B2));
        h.sent();
        let sent = h.advance(Duration::from_secs(6));
        assert!(
            request_to(&sent, B, Method::Bye).is_some(),
            "we hang up the transferor"
        );
        assert!(request_to(&sent, A, Method::Bye).is_none());
        assert_eq!(h.engine.active_calls(), 1);
    }

    #[test]
    fn refers_that_cannot_be_followed_are_refused_and_the_call_goes_on() {
        let mut h = Harness::with_plan(PLAN);
        let (b_invite, _ok) = call_up(&mut h);
        let two = from_b(
            &b_invite,
            "REFER",
            2,
            "Refer-To: <sip:3001@127.0.0.1>\nRefer-To: <sip:3002@127.0.0.1>\n",
        );
        h.send(B, &two);
        assert_eq!(statuses_to(&h.sent(), B), vec![400]);
        let attended = from_b(
            &b_invite,
            "REFER",
            3,
            "Refer-To: <sip:3001@127.0.0.1?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>\n",
        );
        h.send(B, &attended);
        assert_eq!(statuses_to(&h.sent(), B), vec![501]);
        let nobody = from_b(&b_invite, "REFER", 4, "Refer-To: <sip:127.0.0.1>\n");
        h.send(B, &nobody);
        assert_eq!(statuses_to(&h.sent(), B), vec![400]);
        // A number no extension routes: accepted, then its failure is told.
        h.send(
            B,
            &from_b(&b_invite, "REFER", 5, "Refer-To: <sip:nobody@127.0.0.1>\n"),
        );
        let sent = h.sent();
        assert_eq!(statuses_to(&sent, B), vec![202]);
        assert_eq!(
            sipfrag(&sent).last().map(|(f, _)| f.clone()),
            Some("SIP/2.0 404 Not Found".into())
        );
        // Still B's call.
        h.send(B, &from_b(&b_invite, "BYE", 6, ""));
        assert!(request_to(&h.sent(), A, Method::Bye).is_some());
    }

    /// `msg` (LF line ends, no body) with an SDP offering PCMU on `port`.
    fn with_sdp(msg: &str, port: u16) -> String {
        let sdp = format!(
            "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        );
        msg.replace(
            "Content-Length: 0\n\n",
            &format!(
                "Content-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
                sdp.len()
            ),
        )
    }

    /// An INVITE from B2 that replaces the dialog `(call_id, to_tag, from_tag)`.
    fn replacing_invite(replaces: &[&str]) -> String {
        let lines: String = replaces
            .iter()
            .map(|r| format!("Replaces: {r}\n"))
            .collect();
        with_sdp(
            &format!(
                "INVITE sip:switchboard@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP {B2};branch=z9hG4bK-b2-replaces;rport
Max-Forwards: 70
From: <sip:agent2@{B2}>;tag=b2t
To: <sip:switchboard@127.0.0.1:5060>
Call-ID: replaces-1@test
CSeq: 1 INVITE
Contact: <sip:agent2@{B2}>
{lines}Content-Length: 0

"
            ),
            4600,
        )
    }

    #[test]
    fn an_invite_with_replaces_takes_leg_bs_place_and_bad_ones_are_refused() {
        let mut h = Harness::with_plan(PLAN);
        h.send(A, &with_sdp(INVITE, 4000));
        let b_invite = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        h.send(B, &with_sdp(&b_response(&b_invite, 200), 4200));
        let ok = response_to(&h.sent(), A, 200).clone();
        h.send(A, &caller_ack(&ok));
        h.sent();
        let b_call_id = b_invite.headers.call_id().unwrap().to_string();
        let our_tag = b_invite
            .headers
            .from_addr()
            .unwrap()
            .tag()
            .unwrap()
            .to_owned();

        h.send(B2, &replacing_invite(&["nosuch@test;to-tag=1;from-tag=2"]));
        assert_eq!(
            statuses_to(&h.sent(), B2),
            vec![100, 481],
            "an unknown dialog"
        );
        let good = format!("{b_call_id};to-tag={our_tag};from-tag=bt");
        h.send(
            B2,
            &replacing_invite(&[&good, &good]).replace("replaces;", "replaces2;"),
        );
        assert_eq!(statuses_to(&h.sent(), B2), vec![100, 400], "two Replaces");
        h.send(
            B2,
            &replacing_invite(&[&format!("{b_call_id};to-tag={our_tag};from-tag=wrong")])
                .replace("replaces;", "replaces3;"),
        );
        assert_eq!(
            statuses_to(&h.sent(), B2),
            vec![100, 481],
            "the tags must match"
        );

        h.send(
            B2,
            &replacing_invite(&[&good]).replace("replaces;", "replaces4;"),
        );
        let sent = h.sent();
        let ok2 = response_to(&sent, B2, 200);
        let answer = String::from_utf8_lossy(&ok2.body).into_owned();
        assert!(
            answer.contains("m=audio ") && answer.contains("PCMU"),
            "{answer}"
        );
        assert!(
            request_to(&sent, B, Method::Bye).is_some(),
            "the replaced leg is hung up"
        );
        assert!(
            sent.iter().all(|(a, _)| a.to_string() != A),
            "the caller hears nothing"
        );
        // The new leg is leg B now: its BYE ends the call.
        let bye = format!(
            "BYE sip:switchboard@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP {B2};branch=z9hG4bK-b2-bye;rport
Max-Forwards: 70
From: <sip:agent2@{B2}>;tag=b2t
To: {}
Call-ID: replaces-1@test
CSeq: 2 BYE
Content-Length: 0

",
            ok2.headers.get(&Name::To).unwrap()
        );
        h.send(B2, &bye);
        assert!(request_to(&h.sent(), A, Method::Bye).is_some());
        assert_eq!(h.engine.active_calls(), 0);
    }
}

/// A leg B that wants a longer session interval (RFC 4028 §7.4: 422 with Min-SE).
mod min_se {
    use super::*;

    fn too_small(invite: &Request, floor: &str) -> String {
        b_response(invite, 422).replace(
            "Content-Length: 0",
            &format!("Min-SE: {floor}\nContent-Length: 0"),
        )
    }

    #[test]
    fn a_422_from_leg_b_is_retried_once_with_its_min_se() {
        let mut h = Harness::new();
        h.send(A, INVITE);
        let first = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        assert!(first.headers.get_other("Session-Expires").is_some());
        h.send(B, &too_small(&first, "3600"));
        let sent = h.sent();
        let again = request_to(&sent, B, Method::Invite)
            .expect("the INVITE again")
            .clone();
        assert_eq!(cseq(&again.headers), (2, Method::Invite));
        assert_eq!(
            again
                .headers
                .get_other("Session-Expires")
                .map(|v| v.to_string()),
            Some("3600".into())
        );
        assert_eq!(
            again.headers.get_other("Min-SE").map(|v| v.to_string()),
            Some("3600".into())
        );
        assert_eq!(
            again.headers.call_id(),
            first.headers.call_id(),
            "the same call"
        );
        assert!(
            request_to(&sent, B, Method::Ack).is_some(),
            "the 422 is ACKed"
        );
        assert!(
            statuses_to(&sent, A).iter().all(|s| *s < 200),
            "the caller still waits"
        );
        // A second 422 is the attempt's failure.
        h.send(B, &too_small(&again, "7200"));
        let sent = h.sent();
        assert!(request_to(&sent, B, Method::Invite).is_none());
        assert!(
            statuses_to(&sent, A).iter().any(|s| *s >= 400),
            "{:?}",
            statuses_to(&sent, A)
        );
    }

    #[test]
    fn a_422_that_asks_for_nothing_longer_is_a_failure() {
        let mut h = Harness::new();
        h.send(A, INVITE);
        let first = request_to(&h.sent(), B, Method::Invite).unwrap().clone();
        h.send(B, &too_small(&first, "90"));
        let sent = h.sent();
        assert!(request_to(&sent, B, Method::Invite).is_none());
        assert!(statuses_to(&sent, A).iter().any(|s| *s >= 400));
    }
}
