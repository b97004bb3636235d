//! The desk and the channel-code app, in simulated time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_core::module::{AppAction, Digit, DigitVerdict, LegApp};
use switchboard_core::{CallRef, Side};

use crate::*;

#[derive(Debug, Default)]
struct Notes(Mutex<Vec<Note>>);

impl Notify for Notes {
    fn note(&self, note: Note) {
        self.0.lock().unwrap().push(note);
    }
}

fn agent(id: &str, merchant: &str, queues: &[&str]) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        name: format!("Agent {id}"),
        role: Role::Agent,
        merchants: vec![merchant.into()],
        queues: queues.iter().map(|q| q.to_string()).collect(),
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, n], 0))
}

fn desk(strategy: RingStrategy) -> (Desk, Arc<Notes>) {
    let notes = Arc::new(Notes::default());
    let queues = [(
        "sales".to_string(),
        Queue {
            strategy,
            merchant: Some("demo".into()),
        },
    )]
    .into();
    (Desk::new(queues, Some(notes.clone())), notes)
}

#[test]
fn a_queue_rings_its_available_agents_all_at_once_or_the_longest_idle() {
    let t = Instant::now();
    let (mut d, _) = desk(RingStrategy::RingAll);
    let a = d.register(
        t,
        agent("alice", "demo", &["sales"]),
        "1111",
        addr(1),
        Status::Available,
    );
    let b = d.register(
        t + Duration::from_secs(1),
        agent("bob", "demo", &["sales"]),
        "2222",
        addr(2),
        Status::Available,
    );
    // Another merchant's agent in a queue of the same name does not ring.
    d.register(
        t,
        agent("eve", "acme", &["sales"]),
        "3333",
        addr(3),
        Status::Available,
    );
    let all = d.expand(t, None, QUEUE_KIND, "sales", "").unwrap().unwrap();
    assert_eq!(
        all,
        vec![
            ("alice".into(), a.to_string()),
            ("bob".into(), b.to_string())
        ]
    );
    assert_eq!(d.console_addr("alice", &a.to_string()).unwrap(), addr(1));
    // Away and busy consoles do not ring; nobody left is a failed target in words.
    d.set_status(t, a, Status::Away);
    d.in_call(t, b, true);
    let e = d
        .expand(t, None, QUEUE_KIND, "sales", "")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.to_string(), "no agent of queue sales is available");
    assert!(d.console_addr("bob", &b.to_string()).is_err());
    // Longest idle: the one whose last call ended first.
    let (mut d, _) = desk(RingStrategy::LongestIdle);
    let a = d.register(
        t,
        agent("alice", "demo", &["sales"]),
        "1111",
        addr(1),
        Status::Available,
    );
    let b = d.register(
        t,
        agent("bob", "demo", &["sales"]),
        "2222",
        addr(2),
        Status::Available,
    );
    d.in_call(t, a, true);
    d.in_call(t + Duration::from_secs(5), a, false);
    d.in_call(t, b, true);
    d.in_call(t + Duration::from_secs(2), b, false);
    assert_eq!(
        d.expand(t, None, QUEUE_KIND, "sales", "").unwrap().unwrap(),
        vec![("bob".into(), b.to_string())]
    );
    // agent/ID: that agent's consoles; not logged in says so.
    assert_eq!(
        d.expand(t, None, AGENT_KIND, "alice", "").unwrap().unwrap(),
        vec![("alice".into(), a.to_string())]
    );
    let e = d
        .expand(t, None, AGENT_KIND, "carol", "")
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("not logged in"), "{e}");
    assert!(d.expand(t, None, "gateway", "x", "").is_none());
}

#[test]
fn codes_and_caller_ids_bind_calls_of_the_agents_merchants_only() {
    let t = Instant::now();
    let (mut d, notes) = desk(RingStrategy::RingAll);
    let code = d.new_code(4).unwrap();
    assert_eq!(code.len(), 4);
    assert_ne!(
        d.new_code(4).unwrap(),
        code,
        "codes are unique among those in use"
    );
    let a = d.register(
        t,
        agent("alice", "demo", &[]),
        &code,
        addr(1),
        Status::Available,
    );
    d.started(CallRef(7), "web-7".into(), 1000, "demo".into());
    d.leased(CallRef(7), "+15550001234");
    d.started(CallRef(8), "web-8".into(), 1000, "acme".into());
    d.leased(CallRef(8), "+15550009999");
    assert_eq!(d.bind_code(&code, CallRef(7)).unwrap(), "Agent alice");
    assert_eq!(d.bind_code("0000", CallRef(7)), Err(BindError::NoSuchCode));
    assert_eq!(d.bind_code(&code, CallRef(8)), Err(BindError::NotYours));
    // The number as the phone shows it, with or without its country code.
    assert_eq!(d.bind_ani(a, "5550001234"), Ok(CallRef(7)));
    assert_eq!(d.bind_ani(a, "+1 555 000 9999"), Err(BindError::NotYours));
    assert!(matches!(d.bind_ani(a, "123"), Err(BindError::NoSuchAni(_))));
    // The agent reloads the console: the new console of the same session has the call again.
    d.unregister(a);
    let again = d.register(
        t,
        agent("alice", "demo", &[]),
        &code,
        addr(9),
        Status::Available,
    );
    assert_eq!(d.live(CallRef(7)).unwrap().consoles, vec![again]);
    assert_eq!(d.session_calls(&code), vec![(CallRef(7), "web-7".into())]);
    d.ended(CallRef(7));
    let notes = notes.0.lock().unwrap();
    assert!(matches!(&notes[0], Note::Bound { console, via: Via::Code, .. } if *console == a));
    assert!(matches!(&notes[1], Note::Bound { via: Via::Ani, .. }));
    assert!(matches!(&notes[2], Note::Bound { console, .. } if *console == again));
    assert!(matches!(
        notes[notes.len() - 2],
        Note::Ended {
            call: CallRef(7),
            ..
        }
    ));
    assert!(matches!(
        notes.last(),
        Some(Note::Closed {
            call: CallRef(7),
            ..
        })
    ));
}

fn digit(c: char) -> Digit {
    Digit {
        digit: c,
        duration_ms: 100,
        method: switchboard_core::module::DtmfMethod::Rfc4733,
    }
}

fn key(app: &mut ChannelApp, now: Instant, keys: &str) -> Vec<DigitVerdict> {
    keys.chars().map(|c| app.on_digit(now, &digit(c))).collect()
}

fn actions(app: &mut ChannelApp) -> Vec<AppAction> {
    std::iter::from_fn(|| app.poll_action()).collect()
}

#[test]
fn the_channel_app_binds_swallows_releases_and_stops_after_wrong_codes() {
    let t = Instant::now();
    let (mut d, _) = desk(RingStrategy::RingAll);
    d.register(
        t,
        agent("alice", "demo", &[]),
        "4711",
        addr(1),
        Status::Available,
    );
    d.started(CallRef(1), "web-1".into(), 0, "demo".into());
    let desk: SharedDesk = Arc::new(Mutex::new(d));
    let keys = Arc::new(ChannelKeys {
        prefix: "**".into(),
        end: '#',
        max_wrong: 2,
        interdigit: Duration::from_secs(3),
        watch: Side::B,
    });
    let mut app = ChannelApp::new(keys, desk.clone(), CallRef(1));
    // Digits that are no code go on at once; a false start is released in order.
    assert_eq!(key(&mut app, t, "5"), vec![DigitVerdict::Forward]);
    assert_eq!(
        key(&mut app, t, "*1"),
        vec![DigitVerdict::Hold, DigitVerdict::Forward]
    );
    assert!(matches!(actions(&mut app)[..], [AppAction::ReleaseHeld]));
    // An unfinished code is released after the inter-digit wait (an IVR behind it works).
    assert_eq!(key(&mut app, t, "**12"), vec![DigitVerdict::Hold; 4]);
    assert!(actions(&mut app).is_empty());
    app.handle_timeout(t + Duration::from_secs(4));
    assert!(matches!(actions(&mut app)[..], [AppAction::ReleaseHeld]));
    // The code: its digits are dropped, the end swallowed, the agent hears the OK tone.
    let v = key(&mut app, t, "**4711#");
    assert_eq!(v.last(), Some(&DigitVerdict::Swallow));
    let a = actions(&mut app);
    assert!(matches!(a[0], AppAction::DropHeld), "{a:?}");
    assert!(
        matches!(&a[1], AppAction::Play { what: switchboard_core::Play::Tone { spec, .. }, .. } if spec == TONE_OK.0)
    );
    assert!(matches!(&a[2], AppAction::Report(r) if r.ok));
    assert_eq!(switchboard_agent_consoles(&desk), 1);
    // Two wrong codes: no more codes on this call, every digit goes on.
    for _ in 0..2 {
        key(&mut app, t, "**9999#");
        let a = actions(&mut app);
        assert!(matches!(&a[2], AppAction::Report(r) if !r.ok), "{a:?}");
    }
    assert_eq!(key(&mut app, t, "**4711#"), vec![DigitVerdict::Forward; 7]);
}

fn switchboard_agent_consoles(desk: &SharedDesk) -> usize {
    lock(desk).live(CallRef(1)).map_or(0, |l| l.consoles.len())
}
