//! The channel-code app on the call center's leg: the agent keys `prefix` + the console's
//! code + `end` on the phone (`**4711#`) and the call is bound to that console. The code's
//! digits never reach the caller; digits that turn out not to be a code go on in order. After
//! `max_wrong` wrong codes the call takes no more (a brute force on a phone line stops there).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::module::{ActionReport, AppAction, Digit, DigitVerdict, LegApp};
use switchboard_core::{CallRef, Play, Side};
use tracing::info;

use crate::desk::{SharedDesk, lock};

/// The agent hears this when the call is bound: two short high beeps…
pub const TONE_OK: (&str, u32) = ("%(80,60,1400)", 280);
/// … and this for a wrong code: one low tone.
pub const TONE_FAILED: (&str, u32) = ("%(400,0,400)", 400);

/// A code's digits at most.
const MAX_CODE: usize = 8;

/// How the codes are keyed (the dialplan action's parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelKeys {
    /// What starts a code (`**`).
    pub prefix: String,
    /// What ends it (`#`).
    pub end: char,
    /// Wrong codes before the call takes no more.
    pub max_wrong: u32,
    /// Inter-digit wait: a code not finished by then is not a code.
    pub interdigit: Duration,
    /// The watched leg (the call center's).
    pub watch: Side,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the prefix's first digit.
    Idle,
    /// `n` digits of the prefix seen.
    Prefix(usize),
    /// The prefix seen; the code's digits so far.
    Code(String),
    /// Too many wrong codes: every digit goes on.
    Off,
}

/// The app on one call.
#[derive(Debug)]
pub struct ChannelApp {
    keys: Arc<ChannelKeys>,
    desk: SharedDesk,
    call: CallRef,
    state: State,
    held: usize,
    wrong: u32,
    deadline: Option<Instant>,
    actions: VecDeque<AppAction>,
}

impl ChannelApp {
    /// The app for `call`, binding through `desk`.
    pub fn new(keys: Arc<ChannelKeys>, desk: SharedDesk, call: CallRef) -> ChannelApp {
        ChannelApp {
            keys,
            desk,
            call,
            state: State::Idle,
            held: 0,
            wrong: 0,
            deadline: None,
            actions: VecDeque::new(),
        }
    }

    fn prefix(&self) -> Vec<char> {
        self.keys.prefix.chars().collect()
    }

    /// What was held is not a code: it goes on, and the app starts over.
    fn release(&mut self) {
        if self.held > 0 {
            self.actions.push_back(AppAction::ReleaseHeld);
        }
        self.held = 0;
        self.deadline = None;
        if self.state != State::Off {
            self.state = State::Idle;
        }
    }

    fn hold(&mut self, now: Instant) -> DigitVerdict {
        self.held += 1;
        self.deadline = Some(now + self.keys.interdigit);
        DigitVerdict::Hold
    }

    fn tone(&mut self, (spec, ms): (&str, u32)) {
        self.actions.push_back(AppAction::Play {
            side: self.keys.watch,
            what: Play::Tone {
                spec: spec.into(),
                ms: Some(ms),
            },
        });
    }

    /// The code is complete: bind, or count a wrong one.
    fn complete(&mut self, code: &str) {
        if self.held > 0 {
            self.actions.push_back(AppAction::DropHeld);
        }
        self.held = 0;
        self.deadline = None;
        self.state = State::Idle;
        let bound = lock(&self.desk).bind_code(code, self.call);
        let report = match bound {
            Ok(agent) => {
                info!(call = %self.call, %agent, "call bound to a console by its channel code");
                self.tone(TONE_OK);
                ActionReport {
                    name: "agent_channel".into(),
                    code: None,
                    detail: Some(format!("bound to {agent}'s console")),
                    ok: true,
                    result: "ok".into(),
                }
            }
            Err(e) => {
                self.wrong += 1;
                self.tone(TONE_FAILED);
                let mut result = format!("refused: {e}");
                if self.wrong >= self.keys.max_wrong {
                    self.state = State::Off;
                    result.push_str("; no more codes on this call");
                }
                info!(call = %self.call, wrong = self.wrong, %result, "channel code refused");
                ActionReport {
                    name: "agent_channel".into(),
                    code: None,
                    detail: None,
                    ok: false,
                    result,
                }
            }
        };
        self.actions.push_back(AppAction::Report(report));
    }
}

impl LegApp for ChannelApp {
    fn name(&self) -> &'static str {
        "agent_channel"
    }

    fn on_digit(&mut self, now: Instant, d: &Digit) -> DigitVerdict {
        let prefix = self.prefix();
        let c = d.digit;
        match self.state.clone() {
            State::Off => DigitVerdict::Forward,
            State::Idle => {
                if prefix.first() == Some(&c) {
                    self.state = if prefix.len() == 1 {
                        State::Code(String::new())
                    } else {
                        State::Prefix(1)
                    };
                    self.hold(now)
                } else {
                    DigitVerdict::Forward
                }
            }
            State::Prefix(n) => {
                if prefix.get(n) == Some(&c) {
                    self.state = if n + 1 == prefix.len() {
                        State::Code(String::new())
                    } else {
                        State::Prefix(n + 1)
                    };
                    self.hold(now)
                } else {
                    self.release();
                    self.on_digit(now, d)
                }
            }
            State::Code(mut code) => {
                if c == self.keys.end && !code.is_empty() {
                    self.complete(&code);
                    DigitVerdict::Swallow
                } else if c.is_ascii_digit() && code.len() < MAX_CODE {
                    code.push(c);
                    self.state = State::Code(code);
                    self.hold(now)
                } else {
                    // Not a code after all (`**1*`): everything goes on, this digit too.
                    self.release();
                    DigitVerdict::Forward
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|t| t <= now) {
            self.release();
        }
    }

    fn poll_action(&mut self) -> Option<AppAction> {
        self.actions.pop_front()
    }
}
