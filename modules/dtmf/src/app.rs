//! The interpreter on a leg: every digit of the watched leg goes through the [`Matcher`];
//! digits that may still be a command are held, command digits are swallowed (they never
//! reach the caller, whatever their form), the rest go on in order with their durations.
//! A matched code becomes a message to the caller's browser; its answer becomes a report
//! (records, observers, webhooks) and a short tone to the agent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::module::{ActionReport, AppAction, Digit, DigitVerdict, LegApp, LegReply};
use switchboard_core::{Play, Side};
use tracing::{debug, info};

use crate::bind::Command;
use crate::matcher::{Matcher, Step};

/// The Content-Type of an action for the caller's browser (an in-dialog INFO: the browser
/// leg hands it to the page and answers with the page's result).
pub use switchboard_core::module::BROWSER_ACTION as ACTION_CONTENT_TYPE;

/// The agent hears this when the browser did what the code asked: two short high beeps…
pub const TONE_OK: (&str, u32) = ("%(80,60,1400)", 280);
/// … and this when it did not: one low tone.
pub const TONE_FAILED: (&str, u32) = ("%(400,0,400)", 400);

/// How long a code may wait for its browser's answer before it counts as failed (the
/// browser leg answers within 500 ms; this covers a leg that never answers at all).
pub const REPLY_WAIT: Duration = Duration::from_secs(2);

/// A binding as the dialplan action made it (shared by every call that runs the action).
#[derive(Debug)]
pub struct Binding {
    /// Codes and their commands.
    pub codes: BTreeMap<String, Command>,
    /// How long to wait for the next digit of a code.
    pub interdigit: Duration,
    /// The leg whose digits are watched (the call center's: B).
    pub watch: Side,
    /// Tones to the agent after each action.
    pub confirm: bool,
}

#[derive(Debug)]
struct InFlight {
    code: String,
    command: Command,
    until: Instant,
}

/// The interpreter attached to one leg of one call.
#[derive(Debug)]
pub struct Interpreter {
    binding: Arc<Binding>,
    matcher: Matcher<Command>,
    /// When the pending digits are decided (no next digit came).
    deadline: Option<Instant>,
    /// Digits the engine holds for us (the matcher's pending ones).
    held: usize,
    actions: VecDeque<AppAction>,
    next_tag: u64,
    in_flight: HashMap<u64, InFlight>,
}

impl Interpreter {
    /// An interpreter of `binding`'s codes.
    pub fn new(binding: Arc<Binding>) -> Interpreter {
        Interpreter {
            matcher: Matcher::new(binding.codes.clone()),
            binding,
            deadline: None,
            held: 0,
            actions: VecDeque::new(),
            next_tag: 1,
            in_flight: HashMap::new(),
        }
    }

    /// Turns the matcher's steps into actions on the held digits; `Some` verdict when a step
    /// reached the new digit (at position `self.held`, when `new` is true).
    fn apply(&mut self, now: Instant, steps: Vec<Step<Command>>, new: bool) -> DigitVerdict {
        let mut verdict = None;
        for step in steps {
            let (n, release) = match &step {
                Step::Release(n) => (*n, true),
                Step::Matched(code, _) => (code.chars().count(), false),
            };
            // The step covers `n` digits from the front: held ones first, then the new one.
            let from_held = n.min(self.held);
            self.held -= from_held;
            if from_held > 0 {
                self.actions.push_back(if release {
                    AppAction::ReleaseFirst(from_held)
                } else {
                    AppAction::DropFirst(from_held)
                });
            }
            if new && n > from_held {
                verdict = Some(if release {
                    DigitVerdict::Forward
                } else {
                    DigitVerdict::Swallow
                });
            }
            if let Step::Matched(code, command) = step {
                self.fire(now, code, command);
            }
        }
        let verdict = verdict.unwrap_or_else(|| {
            if new {
                self.held += 1;
            }
            DigitVerdict::Hold
        });
        debug_assert_eq!(self.held, self.matcher.pending());
        self.deadline = (self.held > 0).then(|| now + self.binding.interdigit);
        verdict
    }

    /// A code matched: its command goes to the browser, which answers.
    fn fire(&mut self, now: Instant, code: String, command: Command) {
        let tag = self.next_tag;
        self.next_tag += 1;
        info!(%code, action = %command, "code matched");
        self.actions.push_back(AppAction::SendToLeg {
            side: self.binding.watch.other(),
            content_type: ACTION_CONTENT_TYPE.into(),
            body: command.to_json(&code).to_string(),
            tag: Some(tag),
        });
        self.in_flight.insert(
            tag,
            InFlight {
                code,
                command,
                until: now + REPLY_WAIT,
            },
        );
    }

    fn finish(&mut self, f: InFlight, ok: bool, result: String, detail: Option<String>) {
        debug!(code = %f.code, ok, %result, "action done");
        self.actions.push_back(AppAction::Report(ActionReport {
            name: f.command.name().into(),
            code: Some(f.code),
            detail: Some(detail.unwrap_or_else(|| f.command.to_string())),
            ok,
            result,
        }));
        if self.binding.confirm {
            self.actions.push_back(AppAction::Play {
                side: self.binding.watch,
                what: {
                    let (spec, ms) = if ok { TONE_OK } else { TONE_FAILED };
                    Play::Tone {
                        spec: spec.into(),
                        ms: Some(ms),
                    }
                },
            });
        }
    }
}

impl LegApp for Interpreter {
    fn name(&self) -> &'static str {
        "dtmf_bind"
    }

    fn on_digit(&mut self, now: Instant, digit: &Digit) -> DigitVerdict {
        let steps = self.matcher.digit(digit.digit);
        self.apply(now, steps, true)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let replies = self.in_flight.values().map(|f| f.until).min();
        match (self.deadline, replies) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|t| t <= now) {
            let steps = self.matcher.timeout();
            self.apply(now, steps, false);
        }
        let late: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.until <= now)
            .map(|(t, _)| *t)
            .collect();
        for tag in late {
            if let Some(f) = self.in_flight.remove(&tag) {
                self.finish(f, false, "no answer from the caller's side".into(), None);
            }
        }
    }

    fn on_reply(&mut self, _now: Instant, tag: u64, reply: &LegReply) {
        let Some(f) = self.in_flight.remove(&tag) else {
            return;
        };
        // The browser leg answers 200 with the page's result: `{"ok":true,"detail":"..."}`.
        let page: Option<serde_json::Value> = serde_json::from_slice(&reply.body).ok();
        let detail = page
            .as_ref()
            .and_then(|v| v.get("detail"))
            .and_then(|d| d.as_str())
            .map(str::to_owned);
        if (200..300).contains(&reply.status) {
            self.finish(f, true, "ok".into(), detail);
        } else {
            let why = if reply.reason.is_empty() {
                format!("refused ({})", reply.status)
            } else {
                reply.reason.clone()
            };
            self.finish(f, false, why, detail);
        }
    }

    fn poll_action(&mut self) -> Option<AppAction> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::module::DtmfMethod;

    fn binding() -> Arc<Binding> {
        let codes = [
            ("*76", "push_page:checkout"),
            ("*22", "volume:+20"),
            ("*7", "echo_suppression:on"),
        ]
        .into_iter()
        .map(|(c, t)| (c.to_string(), Command::parse(t).unwrap()))
        .collect();
        Arc::new(Binding {
            codes,
            interdigit: Duration::from_millis(1000),
            watch: Side::B,
            confirm: true,
        })
    }

    fn digit(c: char, ms: u32) -> Digit {
        Digit {
            digit: c,
            duration_ms: ms,
            method: DtmfMethod::Rfc4733,
        }
    }

    fn drain(app: &mut Interpreter) -> Vec<AppAction> {
        std::iter::from_fn(|| app.poll_action()).collect()
    }

    #[test]
    fn a_code_is_held_then_swallowed_and_sent_to_the_browser() {
        let t0 = Instant::now();
        let mut app = Interpreter::new(binding());
        assert_eq!(app.on_digit(t0, &digit('*', 100)), DigitVerdict::Hold);
        assert_eq!(app.on_digit(t0, &digit('2', 100)), DigitVerdict::Hold);
        assert_eq!(app.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
        assert_eq!(app.on_digit(t0, &digit('2', 100)), DigitVerdict::Swallow);
        let actions = drain(&mut app);
        assert_eq!(actions[0], AppAction::DropFirst(2));
        let AppAction::SendToLeg {
            side,
            content_type,
            body,
            tag,
        } = &actions[1]
        else {
            panic!("{actions:?}");
        };
        assert_eq!(*side, Side::A);
        assert_eq!(content_type, ACTION_CONTENT_TYPE);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["action"], "volume");
        assert_eq!(v["step"], 20);
        assert_eq!(v["code"], "*22");
        // The browser answers: a report and the success tone to the agent's leg.
        app.on_reply(
            t0,
            tag.unwrap(),
            &LegReply {
                status: 200,
                reason: "OK".into(),
                body: br#"{"ok":true,"detail":"Volume 120 %"}"#.to_vec(),
            },
        );
        let actions = drain(&mut app);
        let AppAction::Report(r) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert!(r.ok);
        assert_eq!(r.code.as_deref(), Some("*22"));
        assert_eq!(r.detail.as_deref(), Some("Volume 120 %"));
        assert!(
            matches!(&actions[1], AppAction::Play { side: Side::B, what: Play::Tone { spec, .. } } if spec == TONE_OK.0)
        );
        assert_eq!(app.poll_timeout(), None);
    }

    #[test]
    fn the_confirmation_tones_are_valid_and_end() {
        for (spec, ms) in [TONE_OK, TONE_FAILED] {
            assert!(switchboard_media::tone::parse(spec).is_ok(), "{spec}");
            assert!(ms > 0 && ms < 1000);
        }
    }

    #[test]
    fn a_prefix_alone_is_released_after_the_wait() {
        let t0 = Instant::now();
        let mut app = Interpreter::new(binding());
        assert_eq!(app.on_digit(t0, &digit('*', 80)), DigitVerdict::Hold);
        assert_eq!(app.on_digit(t0, &digit('2', 120)), DigitVerdict::Hold);
        let due = app.poll_timeout().unwrap();
        app.handle_timeout(due);
        assert_eq!(drain(&mut app), vec![AppAction::ReleaseFirst(2)]);
        assert_eq!(app.poll_timeout(), None);
    }

    #[test]
    fn a_false_start_goes_on_before_the_digit_that_showed_it() {
        let t0 = Instant::now();
        let mut app = Interpreter::new(binding());
        app.on_digit(t0, &digit('*', 80));
        app.on_digit(t0, &digit('2', 80));
        // `*25`: the held `*2` go on first, then `5` itself.
        assert_eq!(app.on_digit(t0, &digit('5', 80)), DigitVerdict::Forward);
        assert_eq!(drain(&mut app), vec![AppAction::ReleaseFirst(2)]);
        // `1` starts nothing.
        assert_eq!(app.on_digit(t0, &digit('1', 80)), DigitVerdict::Forward);
        assert!(drain(&mut app).is_empty());
    }

    #[test]
    fn the_shorter_code_fires_after_the_wait_and_the_longer_at_once() {
        let t0 = Instant::now();
        let mut app = Interpreter::new(binding());
        app.on_digit(t0, &digit('*', 80));
        assert_eq!(app.on_digit(t0, &digit('7', 80)), DigitVerdict::Hold);
        app.handle_timeout(t0 + Duration::from_millis(1000));
        let actions = drain(&mut app);
        assert_eq!(actions[0], AppAction::DropFirst(2));
        assert!(
            matches!(&actions[1], AppAction::SendToLeg { body, .. } if body.contains("echo_suppression"))
        );
        app.on_digit(t0, &digit('*', 80));
        app.on_digit(t0, &digit('7', 80));
        assert_eq!(app.on_digit(t0, &digit('6', 80)), DigitVerdict::Swallow);
        let actions = drain(&mut app);
        assert_eq!(actions[0], AppAction::DropFirst(2));
        assert!(
            matches!(&actions[1], AppAction::SendToLeg { body, .. } if body.contains("push_page"))
        );
    }

    #[test]
    fn a_refusal_or_no_answer_is_a_failure_with_its_own_tone() {
        let t0 = Instant::now();
        let mut app = Interpreter::new(binding());
        for d in "*76".chars() {
            app.on_digit(t0, &digit(d, 80));
        }
        let tag = drain(&mut app)
            .into_iter()
            .find_map(|a| match a {
                AppAction::SendToLeg { tag, .. } => tag,
                _ => None,
            })
            .unwrap();
        app.on_reply(
            t0,
            tag,
            &LegReply {
                status: 403,
                reason: "https://evil.example/ is not on the merchant's origins".into(),
                body: Vec::new(),
            },
        );
        let actions = drain(&mut app);
        let AppAction::Report(r) = &actions[0] else {
            panic!()
        };
        assert!(!r.ok);
        assert!(r.result.contains("origins"), "{}", r.result);
        assert!(
            matches!(&actions[1], AppAction::Play { what: Play::Tone { spec, .. }, .. } if spec == TONE_FAILED.0)
        );

        // No answer at all.
        for d in "*22".chars() {
            app.on_digit(t0, &digit(d, 80));
        }
        drain(&mut app);
        assert_eq!(app.poll_timeout(), Some(t0 + REPLY_WAIT));
        app.handle_timeout(t0 + REPLY_WAIT);
        let actions = drain(&mut app);
        let AppAction::Report(r) = &actions[0] else {
            panic!()
        };
        assert!(!r.ok && r.result.contains("no answer"));
        assert_eq!(app.poll_timeout(), None);
    }
}
