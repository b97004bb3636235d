//! The trunk module inside a real engine, driven by hand in simulated time: ANI pools (queue,
//! reject, failover), gateway health from OPTIONS pings, header redaction, digest answers to
//! a challenged INVITE and outbound registration.
//!
//! The [`Harness`] plays every peer: the caller (A, port 5070) and two gateways (GW1, 5080;
//! GW2, 5081). It hands the engine text SIP, parses what the engine sends back and moves
//! simulated time to the instants [`Engine::poll_timeout`] asks for: a 5 s queue takes no
//! wall time, and ends at exactly 5 s.
#![allow(clippy::disallowed_methods)] // the tests pick an arbitrary starting instant
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_core::{CallEvent, CallSummary, Cause, Engine, EngineConfig, Output, Registry};
use switchboard_dialplan::{CompileEnv, Source, compile};
use switchboard_sip::transaction::{Peer, TimerConfig, Transport, make_response};
use switchboard_sip::typed::DigestParams;
use switchboard_sip::{Message, Method, Name, Request, Response, parse_datagram};
use switchboard_trunk::{GatewayConfig, Gateways, Trunk};

const A: &str = "127.0.0.1:5070";
const GW1: &str = "127.0.0.1:5080";
const GW2: &str = "127.0.0.1:5081";
/// The caller's own number (From user of leg A).
const CALLER: &str = "5551000";
/// gw1's pool (one number) and gw2's.
const POOL1: &str = "15550100";
const POOL2: &str = "15550200";
const WALL: jiff::Timestamp = jiff::Timestamp::UNIX_EPOCH;

type Sent = Vec<(SocketAddr, Message)>;

fn addr(a: &str) -> SocketAddr {
    a.parse().unwrap()
}

fn gateway(address: &str) -> GatewayConfig {
    GatewayConfig {
        address: address.into(),
        ..GatewayConfig::default()
    }
}

/// A gateway whose pool is one number.
fn pooled(address: &str, number: &str, when_empty: &str) -> GatewayConfig {
    GatewayConfig {
        ani_pool: Some(vec![number.into()]),
        ani_when_empty: Some(when_empty.into()),
        ani_cooldown: Some(2),
        ani_queue_secs: Some(5),
        ..gateway(address)
    }
}

/// Every number to these targets in sequence, 20 s each, after `before` (more actions).
fn plan(before: &str, targets: &[&str]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[extension]]\nname = \"all\"\nwhen.destination = '^(\\d+)$'\n\
         actions = [ {before} {{ bridge = {{ targets = [{}], timeout = 20 }} }} ]\n",
        targets.join(", ")
    )
}

struct Harness {
    engine: Engine,
    now: Instant,
    start: Instant,
    /// Everything the engine reported to the shell so far.
    outputs: Vec<Output>,
}

impl Harness {
    /// An engine with the trunk module over these gateways, following this dialplan. Not
    /// started: see [`Harness::start`].
    fn new(gateways: &[(&str, GatewayConfig)], plan: &str) -> Harness {
        let configs: BTreeMap<String, GatewayConfig> = gateways
            .iter()
            .map(|(n, c)| ((*n).to_owned(), c.clone()))
            .collect();
        let gateways = Gateways::new(&configs).expect("gateways");
        let env = CompileEnv {
            endpoints: vec![Trunk::endpoint_spec(&gateways)],
            ..Default::default()
        };
        let source = Source {
            path: "t.toml".into(),
            text: plan.into(),
        };
        let dialplan = compile(&[source], &env).expect("dialplan");
        let mut registry = Registry::new();
        registry
            .add(Box::new(Trunk::new(gateways)))
            .expect("the trunk registers");
        let cfg = EngineConfig {
            timers: timers(),
            ..EngineConfig::default()
        };
        let now = Instant::now();
        Harness {
            engine: Engine::new(cfg, Arc::new(dialplan), registry, 7),
            now,
            start: now,
            outputs: vec![],
        }
    }

    /// The transports are up: the first `handle_timeout` (services start there).
    fn start(&mut self) -> Sent {
        self.engine.handle_timeout(self.now, WALL);
        self.sent()
    }

    fn send(&mut self, from: &str, text: &str) {
        let peer = Peer {
            transport: Transport::Udp,
            addr: addr(from),
        };
        let data = Bytes::from(text.replace('\n', "\r\n"));
        self.engine.handle_datagram(self.now, WALL, data, peer);
    }

    /// Everything the engine wants to send, parsed, with its destination.
    fn sent(&mut self) -> Sent {
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
    fn step(&mut self) -> Sent {
        let at = self.engine.poll_timeout().expect("a timer is pending");
        self.now = self.now.max(at);
        self.engine.handle_timeout(self.now, WALL);
        self.sent()
    }

    /// Lets `by` pass, firing every timer due on the way at the instant it asks for.
    fn advance(&mut self, by: Duration) -> Sent {
        let until = self.now + by;
        let mut out = vec![];
        for _ in 0..100_000 {
            if self.engine.poll_timeout().is_none_or(|at| at > until) {
                self.now = until;
                return out;
            }
            out.extend(self.step());
        }
        panic!("timers keep firing without time passing");
    }

    /// Steps timer by timer, for at most `within`, until `pred` holds for what one step sent.
    /// Everything sent until then, that step included (None: it never happened).
    fn advance_until(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&Sent) -> bool,
    ) -> Option<Sent> {
        let until = self.now + within;
        let mut all = vec![];
        for _ in 0..100_000 {
            if self.engine.poll_timeout().is_none_or(|at| at > until) {
                self.now = until;
                return None;
            }
            let sent = self.step();
            let hit = pred(&sent);
            all.extend(sent);
            if hit {
                return Some(all);
            }
        }
        panic!("timers keep firing without time passing");
    }

    fn events(&self) -> impl Iterator<Item = &CallEvent> {
        self.outputs.iter().filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
    }

    /// (pool, item) of every `Leased` event so far.
    fn leased(&self) -> Vec<(String, String)> {
        self.events()
            .filter_map(|e| match e {
                CallEvent::Leased { pool, item, .. } => Some((pool.clone(), item.clone())),
                _ => None,
            })
            .collect()
    }

    /// (pool, item) of every `Released` event so far.
    fn released(&self) -> Vec<(String, String)> {
        self.events()
            .filter_map(|e| match e {
                CallEvent::Released { pool, item } => Some((pool.clone(), item.clone())),
                _ => None,
            })
            .collect()
    }

    /// The call records so far.
    fn ended(&self) -> Vec<&CallSummary> {
        self.events()
            .filter_map(|e| match e {
                CallEvent::Ended(s) => Some(&**s),
                _ => None,
            })
            .collect()
    }

    fn trunk(&self) -> &Trunk {
        self.engine.modules().get::<Trunk>().expect("the trunk")
    }

    /// Numbers of `gateway`'s pool leased now.
    fn in_use(&self, gateway: &str) -> usize {
        self.trunk()
            .gateways()
            .get(gateway)
            .and_then(|g| g.ani.as_ref())
            .expect("a pool")
            .in_use()
    }

    fn is_up(&self, gateway: &str) -> bool {
        self.trunk().gateways().get(gateway).expect("gw").is_up()
    }
}

/// The timers the engine runs with (the tests compute instants from them).
fn timers() -> TimerConfig {
    TimerConfig::default()
}

// ---- what was sent -------------------------------------------------------------------------

fn requests_to<'a>(sent: &'a Sent, to: &str, method: Method) -> Vec<&'a Request> {
    sent.iter()
        .filter_map(|(a, m)| match m {
            Message::Request(r) if r.method == method && *a == addr(to) => Some(r),
            _ => None,
        })
        .collect()
}

fn request_to<'a>(sent: &'a Sent, to: &str, method: Method) -> Option<&'a Request> {
    requests_to(sent, to, method).into_iter().next()
}

/// The final responses (and provisionals) sent to the caller of call `n`.
fn responses_to_caller(sent: &Sent, n: u32) -> Vec<&Response> {
    let call_id = call_id(n);
    sent.iter()
        .filter_map(|(a, m)| match m {
            Message::Response(r)
                if *a == addr(A) && r.headers.call_id().is_some_and(|c| **c == *call_id) =>
            {
                Some(r)
            }
            _ => None,
        })
        .collect()
}

fn statuses_to_caller(sent: &Sent, n: u32) -> Vec<u16> {
    responses_to_caller(sent, n)
        .iter()
        .map(|r| r.status)
        .collect()
}

fn response_to_caller(sent: &Sent, n: u32, status: u16) -> Response {
    responses_to_caller(sent, n)
        .into_iter()
        .find(|r| r.status == status)
        .unwrap_or_else(|| panic!("no {status} to caller {n}"))
        .clone()
}

/// The user part of a request's From: the caller ID it presents.
fn from_user(r: &Request) -> String {
    let from = r.headers.from_addr().unwrap();
    from.uri().unwrap().user.unwrap_or("").to_owned()
}

fn branch(r: &Request) -> String {
    r.headers.top_via().unwrap().branch().unwrap().to_owned()
}

fn cseq(r: &Request) -> (u32, Method) {
    let c = r.headers.cseq().unwrap();
    (c.seq, c.method)
}

fn reason(r: &Response) -> Option<String> {
    r.headers.get(&Name::Reason).map(|v| v.to_string())
}

fn q850(cause: Cause) -> String {
    format!("Q.850;cause={};text=\"{}\"", cause.q850(), cause.name())
}

// ---- what the peers say --------------------------------------------------------------------

fn call_id(n: u32) -> String {
    format!("call-{n}@test")
}

/// Caller `n`'s INVITE for 2000 (its own Call-ID, tag and branch).
fn invite(n: u32) -> String {
    format!(
        "INVITE sip:2000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-a{n};rport
Max-Forwards: 70
From: <sip:{CALLER}@127.0.0.1:5070>;tag=a{n}
To: <sip:2000@127.0.0.1:5060>
Call-ID: {}
CSeq: 1 INVITE
Contact: <sip:{CALLER}@127.0.0.1:5070>
Content-Length: 0

",
        call_id(n)
    )
}

/// An in-dialog request from caller `n`, in the dialog our 2xx (`ok`) made.
fn caller_request(n: u32, ok: &Response, method: &str, seq: u32) -> String {
    let to = ok.headers.get(&Name::To).unwrap();
    format!(
        "{method} sip:switchboard@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-a{n}-{method}-{seq};rport
Max-Forwards: 70
From: <sip:{CALLER}@127.0.0.1:5070>;tag=a{n}
To: {to}
Call-ID: {}
CSeq: {seq} {method}
Content-Length: 0

",
        call_id(n)
    )
}

/// The caller's ACK for a non-2xx final response: the INVITE's branch (RFC 3261 §17.1.1.3).
fn caller_ack_of_failure(n: u32, resp: &Response) -> String {
    let to = resp.headers.get(&Name::To).unwrap();
    invite(n)
        .replace(
            "INVITE sip:2000@127.0.0.1:5060 SIP/2.0",
            "ACK sip:2000@127.0.0.1:5060 SIP/2.0",
        )
        .replace("To: <sip:2000@127.0.0.1:5060>", &format!("To: {to}"))
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(&format!("Contact: <sip:{CALLER}@127.0.0.1:5070>\n"), "")
}

/// A gateway's response to a request we sent it (To tag `tag` unless a 100), with `extra`
/// headers.
fn gw_response(req: &Request, status: u16, tag: &str, gw: &str, extra: &[(Name, &str)]) -> String {
    let tag = (status > 100).then_some(tag);
    let mut r = make_response(req, status, tag);
    if req.method == Method::Invite && (200..300).contains(&status) {
        r.headers.push(Name::Contact, format!("<sip:carrier@{gw}>"));
    }
    for (name, value) in extra {
        r.headers.push(name.clone(), (*value).to_owned());
    }
    String::from_utf8(Message::Response(r).to_bytes())
        .unwrap()
        .replace("\r\n", "\n")
}

/// Call `n` is up through the gateway at `gw`: the INVITE it got, and the caller's 200.
fn call_up(h: &mut Harness, n: u32, gw: &str) -> (Request, Response) {
    h.send(A, &invite(n));
    let sent = h.sent();
    let b = request_to(&sent, gw, Method::Invite)
        .unwrap_or_else(|| panic!("call {n}: a leg B INVITE to {gw}"))
        .clone();
    answer(h, n, gw, &b)
}

/// The gateway at `gw` answers `b` (call `n`'s leg B) and the caller ACKs its 200.
fn answer(h: &mut Harness, n: u32, gw: &str, b: &Request) -> (Request, Response) {
    h.send(gw, &gw_response(b, 200, &format!("g{n}"), gw, &[]));
    let ok = response_to_caller(&h.sent(), n, 200);
    h.send(A, &caller_request(n, &ok, "ACK", 1));
    assert!(
        request_to(&h.sent(), gw, Method::Ack).is_some(),
        "call {n}: the caller's ACK goes on to {gw}"
    );
    (b.clone(), ok)
}

/// Caller `n` hangs up; the gateway at `gw` answers the BYE it gets.
fn caller_hangs_up(h: &mut Harness, n: u32, gw: &str, ok: &Response) {
    h.send(A, &caller_request(n, ok, "BYE", 2));
    let sent = h.sent();
    assert_eq!(
        statuses_to_caller(&sent, n),
        vec![200],
        "the BYE is answered"
    );
    let bye = request_to(&sent, gw, Method::Bye)
        .expect("the gateway gets a BYE")
        .clone();
    h.send(gw, &gw_response(&bye, 200, &format!("g{n}"), gw, &[]));
    let _ = h.sent();
}

fn pair(pool: &str, item: &str) -> (String, String) {
    (pool.to_owned(), item.to_owned())
}

// ---- ANI pools -----------------------------------------------------------------------------

#[test]
fn queued_call_gets_the_pool_number_after_the_holder_hangs_up_and_its_cool_down() {
    let mut h = Harness::new(
        &[("gw1", pooled(GW1, POOL1, "queue"))],
        &plan("", &["gateway/gw1/$1"]),
    );
    let _ = h.start();

    // Call 1 takes the only number.
    h.send(A, &invite(1));
    let sent = h.sent();
    let b1 = request_to(&sent, GW1, Method::Invite)
        .expect("call 1's leg B")
        .clone();
    assert_eq!(from_user(&b1), POOL1, "call 1 presents the pool's number");
    assert_eq!(b1.uri, "sip:2000@127.0.0.1:5080");
    assert_eq!(h.leased(), vec![pair("gw1", POOL1)]);
    let leased_by = h.events().find_map(|e| match e {
        CallEvent::Leased { call, .. } => Some(*call),
        _ => None,
    });
    let (_, ok1) = answer(&mut h, 1, GW1, &b1);
    assert_eq!(h.in_use("gw1"), 1);

    // Call 2 waits for it: a 100, and nothing to the gateway while call 1 lasts.
    h.send(A, &invite(2));
    let sent = h.sent();
    assert_eq!(statuses_to_caller(&sent, 2), vec![100]);
    assert!(request_to(&sent, GW1, Method::Invite).is_none());
    let sent = h.advance(Duration::from_secs(1));
    assert!(
        request_to(&sent, GW1, Method::Invite).is_none(),
        "no leg B while the number is held"
    );
    assert!(
        statuses_to_caller(&sent, 2).is_empty(),
        "call 2 still waits"
    );
    assert_eq!(h.engine.active_calls(), 2);

    // Call 1 ends: the number goes back to the pool...
    caller_hangs_up(&mut h, 1, GW1, &ok1);
    let released_at = h.elapsed();
    assert_eq!(h.released(), vec![pair("gw1", POOL1)]);
    assert_eq!(h.in_use("gw1"), 0);
    let [cdr] = h.ended()[..] else {
        panic!("one call record, not {:?}", h.ended())
    };
    assert_eq!(Some(cdr.id), leased_by, "the holder's record");

    // ...rests for its 2 s cool-down, then call 2's leg B goes out with it.
    let cooldown = Duration::from_secs(2);
    let sent = h
        .advance_until(Duration::from_secs(4), |s| {
            request_to(s, GW1, Method::Invite).is_some()
        })
        .expect("call 2's leg B INVITE, before its 5 s queue limit");
    let waited = h.elapsed() - released_at;
    assert!(
        waited >= cooldown && waited <= cooldown + Duration::from_millis(250),
        "the INVITE goes when the cool-down ends, not {waited:?} after the release"
    );
    let b2 = request_to(&sent, GW1, Method::Invite).unwrap().clone();
    assert_eq!(from_user(&b2), POOL1, "call 2 presents the same number");
    assert_ne!(b2.headers.call_id(), b1.headers.call_id());
    assert_eq!(h.leased(), vec![pair("gw1", POOL1), pair("gw1", POOL1)]);
    let lessees: Vec<_> = h
        .events()
        .filter_map(|e| match e {
            CallEvent::Leased { call, .. } => Some(*call),
            _ => None,
        })
        .collect();
    assert_ne!(lessees[0], lessees[1], "two calls, one after the other");

    // Call 2 goes on as usual.
    let (_, ok2) = answer(&mut h, 2, GW1, &b2);
    assert_eq!(h.in_use("gw1"), 1);
    caller_hangs_up(&mut h, 2, GW1, &ok2);
    assert_eq!(h.released().len(), 2);
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn queued_call_that_gets_no_number_in_ani_queue_secs_is_refused_503_switch_congestion() {
    let mut h = Harness::new(
        &[("gw1", pooled(GW1, POOL1, "queue"))],
        &plan("", &["gateway/gw1/$1"]),
    );
    let _ = h.start();
    let (b1, _ok1) = call_up(&mut h, 1, GW1);
    assert_eq!(from_user(&b1), POOL1);

    let queued_at = h.elapsed();
    h.send(A, &invite(2));
    let mut sent = h.sent();
    assert_eq!(statuses_to_caller(&sent, 2), vec![100]);
    // Nobody gives the number back: after ani_queue_secs the caller is refused.
    let failed = h
        .advance_until(Duration::from_secs(10), |s| {
            !statuses_to_caller(s, 2).is_empty()
        })
        .expect("a final response to the queued caller");
    let waited = h.elapsed() - queued_at;
    assert!(
        waited >= Duration::from_secs(5) && waited <= Duration::from_millis(5250),
        "refused when ani_queue_secs is up, not after {waited:?}"
    );
    sent.extend(failed.iter().cloned());
    let refusal = response_to_caller(&failed, 2, 503);
    assert_eq!(statuses_to_caller(&failed, 2), vec![503]);
    assert_eq!(reason(&refusal), Some(q850(Cause::SwitchCongestion)));
    assert!(
        requests_to(&sent, GW1, Method::Invite).is_empty(),
        "no leg B INVITE was ever sent for the queued call"
    );

    let [cdr] = h.ended()[..] else {
        panic!("one call record, not {:?}", h.ended())
    };
    assert_eq!(cdr.a_call_id, call_id(2));
    assert_eq!(cdr.cause, Cause::SwitchCongestion);
    assert_eq!(cdr.b_call_id, None);
    assert_eq!(
        h.leased(),
        vec![pair("gw1", POOL1)],
        "only call 1 ever held it"
    );
    assert!(h.released().is_empty(), "call 1 still holds its number");
    assert_eq!(h.in_use("gw1"), 1);
    assert_eq!(h.engine.active_calls(), 1, "call 1 goes on");

    h.send(A, &caller_ack_of_failure(2, &refusal));
    let later = h.advance(Duration::from_secs(30));
    assert!(requests_to(&later, GW1, Method::Invite).is_empty());
}

#[test]
fn empty_pool_with_ani_when_empty_reject_fails_over_to_the_next_gateway() {
    let mut h = Harness::new(
        &[("gw1", pooled(GW1, POOL1, "reject")), ("gw2", gateway(GW2))],
        &plan("", &["gateway/gw1/$1", "gateway/gw2/$1"]),
    );
    let _ = h.start();
    let (b1, _ok1) = call_up(&mut h, 1, GW1);
    assert_eq!(from_user(&b1), POOL1);
    assert_eq!(h.leased(), vec![pair("gw1", POOL1)]);

    // gw1's only number is taken: call 2 goes straight to gw2, at once.
    h.send(A, &invite(2));
    let sent = h.sent();
    assert!(
        request_to(&sent, GW1, Method::Invite).is_none(),
        "gw1 refuses the attempt without an INVITE"
    );
    let b2 = request_to(&sent, GW2, Method::Invite)
        .expect("call 2 fails over to gw2")
        .clone();
    assert_eq!(b2.uri, "sip:2000@127.0.0.1:5081");
    assert_eq!(
        from_user(&b2),
        CALLER,
        "gw2 has no pool: the caller's own number"
    );
    assert_eq!(h.leased().len(), 1, "call 2 leased nothing");
    answer(&mut h, 2, GW2, &b2);
    assert_eq!(h.engine.active_calls(), 2);
    assert!(h.ended().is_empty());
}

#[test]
fn failover_across_gateways_releases_the_first_pools_number_and_leases_the_seconds() {
    let mut h = Harness::new(
        &[
            ("gw1", pooled(GW1, POOL1, "reject")),
            ("gw2", pooled(GW2, POOL2, "reject")),
        ],
        &plan("", &["gateway/gw1/$1", "gateway/gw2/$1"]),
    );
    let _ = h.start();
    h.send(A, &invite(1));
    let b1 = request_to(&h.sent(), GW1, Method::Invite).unwrap().clone();
    assert_eq!(from_user(&b1), POOL1);
    assert_eq!(h.leased(), vec![pair("gw1", POOL1)]);
    assert!(h.released().is_empty());

    // gw1 is out of service: the call moves to gw2 and gives gw1's number back.
    h.send(GW1, &gw_response(&b1, 503, "g1", GW1, &[]));
    let sent = h.sent();
    let ack = request_to(&sent, GW1, Method::Ack).expect("the 503 is ACKed");
    assert_eq!(branch(ack), branch(&b1));
    let b2 = request_to(&sent, GW2, Method::Invite)
        .expect("failover to gw2")
        .clone();
    assert_eq!(from_user(&b2), POOL2, "gw2's own number");
    assert_eq!(h.released(), vec![pair("gw1", POOL1)]);
    assert_eq!(h.leased(), vec![pair("gw1", POOL1), pair("gw2", POOL2)]);
    assert_eq!((h.in_use("gw1"), h.in_use("gw2")), (0, 1));
    // The release comes before the lease among the events.
    let names: Vec<&str> = h
        .events()
        .filter(|e| matches!(e, CallEvent::Leased { .. } | CallEvent::Released { .. }))
        .map(|e| e.name())
        .collect();
    assert_eq!(names, vec!["leased", "released", "leased"]);

    let (_, ok) = answer(&mut h, 1, GW2, &b2);
    caller_hangs_up(&mut h, 1, GW2, &ok);
    assert_eq!(
        h.released(),
        vec![pair("gw1", POOL1), pair("gw2", POOL2)],
        "the end of the call gives gw2's number back, and gw1's only once"
    );
    assert_eq!((h.in_use("gw1"), h.in_use("gw2")), (0, 0));

    // gw1's number is free again once rested (2 s): a new call presents it.
    h.advance(Duration::from_secs(3));
    h.send(A, &invite(2));
    let b3 = request_to(&h.sent(), GW1, Method::Invite)
        .expect("call 2 to gw1")
        .clone();
    assert_eq!(from_user(&b3), POOL1);
}

#[test]
fn failover_to_a_gateway_without_a_pool_gives_the_first_pools_number_back() {
    let mut h = Harness::new(
        &[("gw1", pooled(GW1, POOL1, "reject")), ("gw2", gateway(GW2))],
        &plan("", &["gateway/gw1/$1", "gateway/gw2/$1"]),
    );
    let _ = h.start();
    h.send(A, &invite(1));
    let b1 = request_to(&h.sent(), GW1, Method::Invite).unwrap().clone();
    assert_eq!(from_user(&b1), POOL1);
    h.send(GW1, &gw_response(&b1, 503, "g1", GW1, &[]));
    let b2 = request_to(&h.sent(), GW2, Method::Invite)
        .expect("failover to gw2")
        .clone();
    assert_eq!(
        from_user(&b2),
        CALLER,
        "gw2 has no pool: the caller's number"
    );
    let (_, _ok) = answer(&mut h, 1, GW2, &b2);
    assert_eq!(
        h.released(),
        vec![pair("gw1", POOL1)],
        "the call left gw1: its number goes back"
    );
    assert_eq!(h.in_use("gw1"), 0);

    // Another call to gw1 gets the number once it rested, while call 1 talks on gw2.
    h.advance(Duration::from_secs(3));
    h.send(A, &invite(2));
    let sent = h.sent();
    let b3 = request_to(&sent, GW1, Method::Invite).expect("call 2 to gw1");
    assert_eq!(from_user(b3), POOL1);
}

#[test]
fn ring_all_across_pooled_gateways_keeps_each_ringing_attempts_number() {
    let text = "[[extension]]\nname = \"all\"\nwhen.destination = '^(\\d+)$'\n\
        actions = [ { bridge = { targets = [\"gateway/gw1/$1\", \"gateway/gw2/$1\"], \
        strategy = \"parallel\", timeout = 20 } } ]\n";
    let mut h = Harness::new(
        &[
            ("gw1", pooled(GW1, POOL1, "reject")),
            ("gw2", pooled(GW2, POOL2, "reject")),
        ],
        text,
    );
    let _ = h.start();
    h.send(A, &invite(1));
    let sent = h.sent();
    let b1 = request_to(&sent, GW1, Method::Invite).unwrap().clone();
    let b2 = request_to(&sent, GW2, Method::Invite).unwrap().clone();
    assert_eq!(
        (from_user(&b1), from_user(&b2)),
        (POOL1.into(), POOL2.into())
    );
    assert!(
        h.released().is_empty(),
        "both INVITEs present their numbers: neither is given back while they ring"
    );
    assert_eq!((h.in_use("gw1"), h.in_use("gw2")), (1, 1));

    // gw1 answers: the call presents POOL1 for its whole life.
    h.send(GW2, &gw_response(&b2, 180, "g2", GW2, &[]));
    let _ = h.sent();
    answer(&mut h, 1, GW1, &b1);
    assert_eq!(
        h.in_use("gw1"),
        1,
        "the answered call still holds gw1's number"
    );
    h.advance(Duration::from_secs(3));
    h.send(A, &invite(2));
    let sent = h.sent();
    assert!(
        requests_to(&sent, GW1, Method::Invite)
            .iter()
            .all(|r| from_user(r) != POOL1),
        "no second call presents the number call 1 still shows"
    );
}

// ---- gateway health ------------------------------------------------------------------------

/// gw1 pinged every 5 s, down after one failure; gw2 never pinged.
fn pinged_pair() -> Harness {
    let gw1 = GatewayConfig {
        ping: Some(5),
        ping_failures: Some(1),
        ..gateway(GW1)
    };
    Harness::new(
        &[("gw1", gw1), ("gw2", gateway(GW2))],
        &plan("", &["gateway/gw1/$1", "gateway/gw2/$1"]),
    )
}

/// The one OPTIONS in `sent` to `gw` (a fresh transaction, not a retransmission).
fn ping_to(sent: &Sent, gw: &str) -> Request {
    let pings = requests_to(sent, gw, Method::Options);
    assert_eq!(pings.len(), 1, "one ping: {pings:?}");
    let p = pings[0].clone();
    assert_eq!(p.uri, format!("sip:{gw}"));
    assert_eq!(cseq(&p), (1, Method::Options));
    p
}

/// The steps until gw1 is marked down; what they sent to gw1 and when it happened.
fn until_down(h: &mut Harness, within: Duration) -> Sent {
    let until = h.now + within;
    let mut sent = vec![];
    while h.is_up("gw1") {
        assert!(
            h.engine.poll_timeout().is_some_and(|at| at <= until),
            "gw1 is still up after {:?}",
            h.elapsed()
        );
        sent.extend(h.step());
    }
    sent
}

#[test]
fn gateway_whose_ping_times_out_is_skipped_and_used_again_once_it_answers() {
    let mut h = pinged_pair();
    let sent = h.start();
    let ping = ping_to(&sent, GW1);
    assert!(
        request_to(&sent, GW2, Method::Options).is_none(),
        "gw2 is not pinged"
    );
    assert!(h.is_up("gw1"), "up until a ping fails");

    // No answer: Timer E retransmits the same ping, Timer F gives up at 64·T1.
    let sent = until_down(&mut h, timers().timeout() * 2);
    assert_eq!(h.elapsed(), timers().timeout(), "down when Timer F fires");
    let again = requests_to(&sent, GW1, Method::Options);
    assert!(!again.is_empty(), "Timer E retransmissions");
    assert!(
        again.iter().all(|p| branch(p) == branch(&ping)),
        "one ping in flight at a time: no new ping while the first waits"
    );

    // Down: the call goes to gw2 at once, gw1 gets no INVITE.
    h.send(A, &invite(1));
    let sent = h.sent();
    assert!(request_to(&sent, GW1, Method::Invite).is_none());
    let b = request_to(&sent, GW2, Method::Invite)
        .expect("the call skips gw1")
        .clone();
    assert_eq!(b.uri, "sip:2000@127.0.0.1:5081");
    answer(&mut h, 1, GW2, &b);

    // The next ping (overdue since 5 s) goes now; gw1 answers it: up again.
    let sent = h.advance(Duration::ZERO);
    let ping2 = ping_to(&sent, GW1);
    assert_ne!(branch(&ping2), branch(&ping), "a new transaction");
    h.send(GW1, &gw_response(&ping2, 200, "p2", GW1, &[]));
    let _ = h.sent();
    assert!(h.is_up("gw1"));

    h.send(A, &invite(2));
    let sent = h.sent();
    assert!(
        request_to(&sent, GW1, Method::Invite).is_some(),
        "gw1 is used again"
    );
    assert!(request_to(&sent, GW2, Method::Invite).is_none());

    // And it is pinged every 5 s from then on.
    let at = h.elapsed();
    // (The answered ping is not retransmitted: any OPTIONS now is a new one.)
    let sent = h
        .advance_until(Duration::from_secs(6), |s| {
            request_to(s, GW1, Method::Options).is_some()
        })
        .expect("the next ping");
    assert_ne!(branch(&ping_to(&sent, GW1)), branch(&ping2));
    assert_eq!(h.elapsed() - at, Duration::from_secs(5));
}

#[test]
fn gateway_answering_pings_503_is_skipped_and_used_again_when_it_answers_200() {
    let mut h = pinged_pair();
    let sent = h.start();
    let ping = ping_to(&sent, GW1);
    h.send(GW1, &gw_response(&ping, 503, "p1", GW1, &[]));
    let _ = h.sent();
    assert!(!h.is_up("gw1"), "one 503 is enough with ping_failures = 1");

    h.send(A, &invite(1));
    let sent = h.sent();
    assert!(request_to(&sent, GW1, Method::Invite).is_none());
    assert!(
        request_to(&sent, GW2, Method::Invite).is_some(),
        "the call skips gw1"
    );

    // 5 s after the first, the next ping; a 200 brings gw1 back.
    let sent = h
        .advance_until(Duration::from_secs(6), |s| {
            request_to(s, GW1, Method::Options).is_some()
        })
        .expect("the next ping");
    assert_eq!(h.elapsed(), Duration::from_secs(5));
    let ping2 = ping_to(&sent, GW1);
    assert!(!h.is_up("gw1"), "still down until it answers");
    h.send(GW1, &gw_response(&ping2, 200, "p2", GW1, &[]));
    let _ = h.sent();
    assert!(h.is_up("gw1"));

    h.send(A, &invite(2));
    let sent = h.sent();
    let b = request_to(&sent, GW1, Method::Invite).expect("gw1 is used again");
    assert_eq!(b.uri, "sip:2000@127.0.0.1:5080");
    assert!(request_to(&sent, GW2, Method::Invite).is_none());
}

// ---- redaction -----------------------------------------------------------------------------

#[test]
fn redacted_header_never_reaches_the_gateway_that_redacts_it_but_reaches_the_next_one() {
    let gw1 = GatewayConfig {
        redact_headers: Some(vec!["x-page-url".into()]),
        ..gateway(GW1)
    };
    let before =
        r#"{ header_add = { X-Page-Url = "https://shop.example/cart", X-Ticket = "42" } },"#;
    let mut h = Harness::new(
        &[("gw1", gw1), ("gw2", gateway(GW2))],
        &plan(before, &["gateway/gw1/$1", "gateway/gw2/$1"]),
    );
    let _ = h.start();
    h.send(A, &invite(1));
    let b1 = request_to(&h.sent(), GW1, Method::Invite).unwrap().clone();
    assert_eq!(
        b1.headers.get_other("X-Page-Url"),
        None,
        "gw1 redacts it (any case)"
    );
    assert_eq!(
        b1.headers.get_other("X-Ticket").map(|v| v.to_string()),
        Some("42".to_owned()),
        "what gw1 does not redact goes through"
    );

    // gw1 fails: gw2, which redacts nothing, gets both.
    h.send(GW1, &gw_response(&b1, 503, "g1", GW1, &[]));
    let b2 = request_to(&h.sent(), GW2, Method::Invite)
        .expect("failover to gw2")
        .clone();
    assert_eq!(
        b2.headers.get_other("X-Page-Url").map(|v| v.to_string()),
        Some("https://shop.example/cart".to_owned())
    );
    assert_eq!(
        b2.headers.get_other("X-Ticket").map(|v| v.to_string()),
        Some("42".to_owned())
    );
}

// ---- digest authentication of INVITEs ------------------------------------------------------

const USER: &str = "trunkuser";
const PASS: &str = "s3cret";

fn with_credentials(address: &str) -> GatewayConfig {
    GatewayConfig {
        username: Some(USER.into()),
        password: Some(PASS.into()),
        ..gateway(address)
    }
}

fn md5_hex(s: &str) -> String {
    format!("{:x}", md5::compute(s.as_bytes()))
}

/// Checks an `Authorization`/`Proxy-Authorization` value against RFC 2617 with MD5 (qop=auth
/// when the challenge offered it), computed here independently of the module.
fn assert_digest(value: &str, method: &str, uri: &str, realm: &str, nonce: &str, qop: bool) {
    let d = DigestParams::parse(value, "Authorization").unwrap();
    assert!(d.scheme.eq_ignore_ascii_case("Digest"), "{value}");
    assert_eq!(d.get("username"), Some(USER));
    assert_eq!(d.get("realm"), Some(realm));
    assert_eq!(d.get("nonce"), Some(nonce));
    assert_eq!(d.get("uri"), Some(uri));
    let ha1 = md5_hex(&format!("{USER}:{realm}:{PASS}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let expected = if qop {
        assert_eq!(d.get("qop"), Some("auth"));
        assert_eq!(d.get("nc"), Some("00000001"));
        let cnonce = d.get("cnonce").expect("a cnonce with qop=auth");
        md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"))
    } else {
        md5_hex(&format!("{ha1}:{nonce}:{ha2}"))
    };
    assert_eq!(d.get("response"), Some(expected.as_str()), "{value}");
}

const CHALLENGE: &str =
    r#"Digest realm="carrier.example", nonce="n0nce1", qop="auth", opaque="op4que""#;

/// Call 1 to gw1 (with credentials) gets a 407: the INVITE goes again with the answer.
/// The first INVITE and the second.
fn challenged_once(h: &mut Harness) -> (Request, Request) {
    let _ = h.start();
    h.send(A, &invite(1));
    let sent = h.sent();
    assert_eq!(statuses_to_caller(&sent, 1), vec![100]);
    let first = request_to(&sent, GW1, Method::Invite).unwrap().clone();
    assert_eq!(cseq(&first), (1, Method::Invite));
    assert!(first.headers.get(&Name::ProxyAuthorization).is_none());

    h.send(
        GW1,
        &gw_response(
            &first,
            407,
            "g1",
            GW1,
            &[(Name::ProxyAuthenticate, CHALLENGE)],
        ),
    );
    let sent = h.sent();
    let ack = request_to(&sent, GW1, Method::Ack).expect("the 407 is ACKed");
    assert_eq!(
        branch(ack),
        branch(&first),
        "§17.1.1.3: the INVITE's branch"
    );
    assert_eq!(cseq(ack), (1, Method::Ack));
    let invites = requests_to(&sent, GW1, Method::Invite);
    assert_eq!(invites.len(), 1, "the INVITE goes again, once");
    let second = invites[0].clone();
    assert_eq!(cseq(&second), (2, Method::Invite), "CSeq + 1 (§22.2)");
    assert_ne!(branch(&second), branch(&first), "a new transaction");
    assert_eq!(second.uri, first.uri);
    assert_eq!(second.headers.call_id(), first.headers.call_id());
    assert_eq!(
        second.headers.from_addr().unwrap().tag(),
        first.headers.from_addr().unwrap().tag()
    );
    assert_eq!(second.headers.to_addr().unwrap().tag(), None);
    let auth = second
        .headers
        .get(&Name::ProxyAuthorization)
        .expect("Proxy-Authorization answers a 407");
    assert_digest(
        auth,
        "INVITE",
        &second.uri,
        "carrier.example",
        "n0nce1",
        true,
    );
    assert!(
        DigestParams::parse(auth, "Proxy-Authorization")
            .unwrap()
            .get("opaque")
            == Some("op4que"),
        "the opaque comes back"
    );
    assert!(second.headers.get(&Name::Authorization).is_none());
    assert!(
        statuses_to_caller(&sent, 1).is_empty(),
        "the caller hears nothing of the challenge"
    );
    (first, second)
}

#[test]
fn challenged_invite_is_sent_again_once_with_proxy_authorization_and_cseq_plus_one() {
    let mut h = Harness::new(
        &[("gw1", with_credentials(GW1))],
        &plan("", &["gateway/gw1/$1"]),
    );
    let (_, second) = challenged_once(&mut h);
    h.send(GW1, &gw_response(&second, 200, "g1", GW1, &[]));
    let ok = response_to_caller(&h.sent(), 1, 200);
    h.send(A, &caller_request(1, &ok, "ACK", 1));
    let sent = h.sent();
    let ack = request_to(&sent, GW1, Method::Ack).expect("the 2xx is ACKed");
    assert_eq!(
        cseq(ack),
        (2, Method::Ack),
        "the ACK of the INVITE that won"
    );
    assert_eq!(ack.headers.to_addr().unwrap().tag(), Some("g1"));
    assert_eq!(h.engine.active_calls(), 1);
}

#[test]
fn second_challenge_fails_the_attempt_without_a_third_invite() {
    let mut h = Harness::new(
        &[("gw1", with_credentials(GW1))],
        &plan("", &["gateway/gw1/$1"]),
    );
    let (_, second) = challenged_once(&mut h);
    let again = CHALLENGE.replace("n0nce1", "n0nce2");
    h.send(
        GW1,
        &gw_response(
            &second,
            407,
            "g1",
            GW1,
            &[(Name::ProxyAuthenticate, again.as_str())],
        ),
    );
    let mut sent = h.sent();
    let ack = request_to(&sent, GW1, Method::Ack).expect("the second 407 is ACKed");
    assert_eq!(branch(ack), branch(&second));
    assert_eq!(cseq(ack), (2, Method::Ack));
    let finals: Vec<u16> = statuses_to_caller(&sent, 1)
        .into_iter()
        .filter(|s| *s >= 300)
        .collect();
    assert_eq!(finals.len(), 1, "the call fails: {finals:?}");
    sent.extend(h.advance(timers().timeout() * 2));
    assert!(
        requests_to(&sent, GW1, Method::Invite).is_empty(),
        "no third INVITE"
    );
    let [cdr] = h.ended()[..] else {
        panic!("one call record, not {:?}", h.ended())
    };
    assert_eq!(cdr.a_call_id, call_id(1));
    assert_eq!(h.engine.active_calls(), 0);
}

#[test]
fn caller_never_gets_the_trunks_challenge_as_a_bare_407() {
    let mut h = Harness::new(
        &[("gw1", with_credentials(GW1))],
        &plan("", &["gateway/gw1/$1"]),
    );
    let (_, second) = challenged_once(&mut h);
    let again = CHALLENGE.replace("n0nce1", "n0nce2");
    h.send(
        GW1,
        &gw_response(
            &second,
            407,
            "g1",
            GW1,
            &[(Name::ProxyAuthenticate, again.as_str())],
        ),
    );
    let sent = h.sent();
    let [fail] = responses_to_caller(&sent, 1)[..] else {
        panic!("one final response to the caller")
    };
    assert!(
        !matches!(fail.status, 401 | 407),
        "the caller gets {} {:?} for our trunk's credentials",
        fail.status,
        fail.headers.get(&Name::ProxyAuthenticate)
    );
}

// ---- outbound registration -----------------------------------------------------------------

#[test]
fn register_at_start_answers_the_401_and_refreshes_at_80_percent_of_the_granted_60_s() {
    let gw1 = GatewayConfig {
        register: Some(true),
        ..with_credentials(GW1)
    };
    let mut h = Harness::new(&[("gw1", gw1)], &plan("", &["gateway/gw1/$1"]));
    let aor = format!("sip:{USER}@{GW1}");
    let registrar = format!("sip:{GW1}");
    assert!(
        !h.trunk()
            .gateways()
            .get("gw1")
            .unwrap()
            .is_registered(h.now)
    );

    // At start.
    let sent = h.start();
    let regs = requests_to(&sent, GW1, Method::Register);
    assert_eq!(regs.len(), 1, "one REGISTER at start");
    let first = regs[0].clone();
    assert_eq!(first.uri, registrar);
    assert_eq!(cseq(&first), (1, Method::Register));
    assert_eq!(first.headers.from_addr().unwrap().uri_text, aor);
    assert_eq!(first.headers.to_addr().unwrap().uri_text, aor);
    assert_eq!(
        first.headers.get(&Name::Expires).map(|e| e.to_string()),
        Some("600".to_owned())
    );
    assert_eq!(
        first.headers.contact().unwrap().unwrap().uri_text,
        format!("sip:{USER}@127.0.0.1:5060")
    );
    assert!(first.headers.get(&Name::Authorization).is_none());

    // The registrar challenges: answered once, with Authorization, CSeq + 1.
    let challenge = r#"Digest realm="registrar.example", nonce="r3g1""#;
    h.send(
        GW1,
        &gw_response(
            &first,
            401,
            "r1",
            GW1,
            &[(Name::WwwAuthenticate, challenge)],
        ),
    );
    let sent = h.sent();
    let regs = requests_to(&sent, GW1, Method::Register);
    assert_eq!(regs.len(), 1, "the REGISTER goes again, once");
    let second = regs[0].clone();
    assert_eq!(cseq(&second), (2, Method::Register));
    assert_ne!(branch(&second), branch(&first));
    assert_eq!(second.headers.call_id(), first.headers.call_id());
    assert_eq!(
        second.headers.from_addr().unwrap().tag(),
        first.headers.from_addr().unwrap().tag()
    );
    let auth = second
        .headers
        .get(&Name::Authorization)
        .expect("Authorization answers a 401");
    assert_digest(
        auth,
        "REGISTER",
        &registrar,
        "registrar.example",
        "r3g1",
        false,
    );
    assert!(second.headers.get(&Name::ProxyAuthorization).is_none());

    // Granted 60 s (in the Contact): registered, refreshed 48 s later.
    let contact = format!("<sip:{USER}@127.0.0.1:5060>;expires=60");
    h.send(
        GW1,
        &gw_response(
            &second,
            200,
            "r1",
            GW1,
            &[(Name::Contact, contact.as_str())],
        ),
    );
    assert!(
        requests_to(&h.sent(), GW1, Method::Register).is_empty(),
        "registered: nothing more to send now"
    );
    let registered_at = h.now;
    assert!(
        h.trunk()
            .gateways()
            .get("gw1")
            .unwrap()
            .is_registered(h.now)
    );

    let sent = h
        .advance_until(Duration::from_secs(60), |s| {
            request_to(s, GW1, Method::Register).is_some()
        })
        .expect("a refresh before the registration runs out");
    assert_eq!(
        h.now - registered_at,
        Duration::from_secs(48),
        "80 % of 60 s"
    );
    let regs = requests_to(&sent, GW1, Method::Register);
    assert_eq!(regs.len(), 1);
    let refresh = regs[0];
    assert_eq!(cseq(refresh), (3, Method::Register));
    assert_eq!(
        refresh.headers.call_id(),
        first.headers.call_id(),
        "§10.2.4"
    );
    assert_eq!(
        refresh.headers.from_addr().unwrap().tag(),
        first.headers.from_addr().unwrap().tag()
    );
    assert!(
        h.trunk()
            .gateways()
            .get("gw1")
            .unwrap()
            .is_registered(h.now),
        "still in force while the refresh is under way"
    );
}

#[test]
fn registrar_refusing_our_credentials_is_not_asked_forever_and_is_tried_again_a_minute_later() {
    let gw1 = GatewayConfig {
        register: Some(true),
        ..with_credentials(GW1)
    };
    let mut h = Harness::new(&[("gw1", gw1)], &plan("", &["gateway/gw1/$1"]));
    let challenge = r#"Digest realm="registrar.example", nonce="r3g1""#;
    let mut sent = h.start();
    let mut registers = vec![];
    // Every REGISTER is challenged, whatever it carries.
    while let Some(r) = request_to(&sent, GW1, Method::Register).cloned() {
        assert!(
            registers.len() < 10,
            "the switch keeps answering challenges"
        );
        registers.push(r.clone());
        h.send(
            GW1,
            &gw_response(&r, 401, "r1", GW1, &[(Name::WwwAuthenticate, challenge)]),
        );
        sent = h.sent();
    }
    let gave_up_at = h.now;
    assert!(
        (2..=3).contains(&registers.len()),
        "the challenge is answered (at most twice in a row), then no more: {} REGISTERs",
        registers.len()
    );
    assert!(registers[0].headers.get(&Name::Authorization).is_none());
    for (i, r) in registers.iter().enumerate() {
        assert_eq!(cseq(r), (i as u32 + 1, Method::Register));
        if i > 0 {
            assert!(r.headers.get(&Name::Authorization).is_some());
        }
    }
    assert!(
        !h.trunk()
            .gateways()
            .get("gw1")
            .unwrap()
            .is_registered(h.now)
    );
    assert_eq!(
        h.trunk()
            .gateways()
            .get("gw1")
            .unwrap()
            .registration
            .as_ref()
            .unwrap()
            .last_status,
        Some(401)
    );

    // Tried again from scratch a minute later, in the same Call-ID.
    let sent = h
        .advance_until(Duration::from_secs(120), |s| {
            request_to(s, GW1, Method::Register).is_some()
        })
        .expect("a new attempt");
    assert_eq!(h.now - gave_up_at, Duration::from_secs(60));
    let retry = request_to(&sent, GW1, Method::Register).unwrap();
    assert_eq!(retry.headers.call_id(), registers[0].headers.call_id());
    assert_eq!(cseq(retry).0, registers.len() as u32 + 1);
    assert!(retry.headers.get(&Name::Authorization).is_none());
}
