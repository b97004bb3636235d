//! # switchboard-example
//!
//! The smallest module with one of each capability, loaded only when
//! `[modules] load` lists `"example"` (the test suite does; docs/architecture.md walks
//! through it):
//!
//! - a dialplan action `{ example_swallow = { digits = "#" } }` that attaches a [`LegApp`] to
//!   the caller's leg: those digits never reach the callee, whatever their form;
//! - an [`InviteFilter`] that adds `X-Switchboard-Example: <n>` (the attempt's number) to
//!   every INVITE to a leg B;
//! - a [`CallObserver`] that counts call events, shown in `/metrics` as
//!   `switchboard_example_events_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use switchboard_core::Module;
use switchboard_core::Side;
use switchboard_core::module::{
    ActionCtx, ActionHandler, CallObserver, Declarations, Digit, DigitVerdict, FilterError,
    InviteFilter, LegApp, OutgoingInvite, Stamped,
};
use switchboard_dialplan::{ActionSpec, ModuleAction, ParamKind, ParamSpec};

/// The module.
#[derive(Debug, Default)]
pub struct Example {
    attempts: u64,
    events: Arc<AtomicU64>,
    observer_taken: bool,
}

impl Example {
    /// A new instance.
    pub fn new() -> Example {
        Example::default()
    }
}

impl Module for Example {
    fn name(&self) -> &'static str {
        "example"
    }

    fn declare(&self) -> Declarations {
        Declarations {
            endpoints: Vec::new(),
            actions: vec![ActionSpec {
                name: "example_swallow".into(),
                params: vec![ParamSpec {
                    name: "digits".into(),
                    kind: ParamKind::Digits,
                    required: true,
                }],
                help: "the caller's digits listed never reach the callee".into(),
                check: None,
            }],
            // Before the trunk's filter (1000): a gateway's redaction still has the last word.
            filter: Some(500),
        }
    }

    fn invite_filter(&mut self) -> Option<&mut dyn InviteFilter> {
        Some(self)
    }

    fn actions(&mut self) -> Option<&mut dyn ActionHandler> {
        Some(self)
    }

    fn take_observer(&mut self) -> Option<Box<dyn CallObserver>> {
        if std::mem::replace(&mut self.observer_taken, true) {
            return None;
        }
        Some(Box::new(Counter(self.events.clone())))
    }

    fn metrics(&self, _now: Instant, out: &mut String) {
        out.push_str(&format!(
            "# HELP switchboard_example_events_total Call events the example module observed.\n\
             # TYPE switchboard_example_events_total counter\n\
             switchboard_example_events_total {}\n",
            self.events.load(Ordering::Relaxed)
        ));
    }
}

impl ActionHandler for Example {
    fn run(
        &mut self,
        _now: Instant,
        action: &ModuleAction,
        ctx: &mut ActionCtx,
    ) -> Result<(), String> {
        let digits = action.get("digits").unwrap_or_default();
        // A templated value is only checked now.
        if let Some(bad) = digits
            .chars()
            .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
        {
            return Err(format!("{bad:?} is not a DTMF digit"));
        }
        ctx.attach(Side::A, Box::new(Swallow(digits.to_owned())));
        Ok(())
    }
}

impl InviteFilter for Example {
    fn filter(&mut self, _now: Instant, invite: &mut OutgoingInvite) -> Result<(), FilterError> {
        self.attempts += 1;
        invite.add_header("X-Switchboard-Example", self.attempts.to_string());
        Ok(())
    }
}

/// Swallows the digits it was given.
#[derive(Debug)]
struct Swallow(String);

impl LegApp for Swallow {
    fn name(&self) -> &'static str {
        "example_swallow"
    }

    fn on_digit(&mut self, _now: Instant, digit: &Digit) -> DigitVerdict {
        if self.0.contains(digit.digit) {
            DigitVerdict::Swallow
        } else {
            DigitVerdict::Forward
        }
    }
}

/// Counts events.
struct Counter(Arc<AtomicU64>);

impl CallObserver for Counter {
    fn name(&self) -> &'static str {
        "example"
    }

    fn on_event(&mut self, _event: &Stamped) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}
