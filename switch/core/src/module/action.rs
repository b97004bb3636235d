//! Dialplan actions contributed by modules: declared with an
//! [`ActionSpec`](switchboard_dialplan::ActionSpec) (checked when the dialplan compiles), run
//! by their module when a call's plan reaches them.

use std::time::Instant;

use switchboard_dialplan::{Cause, ModuleAction};
use switchboard_media::Side;

use super::LegApp;
use crate::ids::CallRef;

/// What a module action can do to its call.
#[derive(Debug)]
pub struct ActionCtx {
    /// The call.
    pub call: CallRef,
    pub(crate) effects: Vec<Effect>,
}

#[derive(Debug)]
pub(crate) enum Effect {
    Attach(Side, Box<dyn LegApp>),
    Header(String, String),
    Hangup(Cause),
}

impl ActionCtx {
    pub(crate) fn new(call: CallRef) -> ActionCtx {
        ActionCtx {
            call,
            effects: Vec::new(),
        }
    }

    /// Attaches an app to a leg: from now on it sees that leg's digits first.
    pub fn attach(&mut self, side: Side, app: Box<dyn LegApp>) {
        self.effects.push(Effect::Attach(side, app));
    }

    /// Adds a header to the INVITEs of later bridges.
    pub fn add_header(&mut self, name: &str, value: impl Into<String>) {
        self.effects
            .push(Effect::Header(name.to_owned(), value.into()));
    }

    /// Ends the call with this cause (the rest of the plan does not run).
    pub fn hangup(&mut self, cause: Cause) {
        self.effects.push(Effect::Hangup(cause));
    }
}

/// A module action's `leg` parameter: `"b"` (the call center's, the default) or `"a"` (the
/// caller's); `Err` in words.
pub fn leg_param(action: &ModuleAction) -> Result<Side, String> {
    match action.get("leg").map(str::to_ascii_lowercase).as_deref() {
        None | Some("b") => Ok(Side::B),
        Some("a") => Ok(Side::A),
        Some(other) => Err(format!(
            "leg must be \"a\" (the caller's) or \"b\" (the call center's), got {other:?}"
        )),
    }
}

/// A module's dialplan actions.
pub trait ActionHandler: Send {
    /// Runs one (its parameters were checked against its spec at load; templated values
    /// were expanded for this call and may still be wrong: return the reason in words, the
    /// call goes on with the next action).
    fn run(
        &mut self,
        now: Instant,
        action: &ModuleAction,
        ctx: &mut ActionCtx,
    ) -> Result<(), String>;
}
