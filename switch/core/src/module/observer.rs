//! `CallObserver`: the typed stream of what happens to calls, for call records, webhooks,
//! metrics and (later) the agent console. Observers never run on the call path: the engine
//! emits [`CallEvent`]s as output, and the shell delivers them to each observer through a
//! bounded queue of its own (see `docs/architecture.md` for what happens when one is full).

use std::collections::BTreeMap;
use std::sync::Arc;

use switchboard_media::DigitEvent;

use crate::call::CallSummary;
use crate::ids::CallRef;

/// Something that happened to a call.
#[derive(Debug, Clone)]
pub enum CallEvent {
    /// A call was accepted for routing (its record starts here).
    Started {
        /// The call.
        call: CallRef,
        /// Leg A's Call-ID.
        call_id: Arc<str>,
        /// Caller number.
        caller: Arc<str>,
        /// Destination dialled.
        destination: Arc<str>,
        /// Dialplan context.
        context: Arc<str>,
        /// Where leg A's INVITE came from: `udp:203.0.113.7:5060` (`local:` for an
        /// in-process leg).
        source: Arc<str>,
        /// What an in-process leg (the browser) said about itself: merchant, link,
        /// session, page_url... (empty for SIP callers).
        facts: Arc<BTreeMap<String, String>>,
    },
    /// Leg B rings (the first provisional of the call).
    Ringing {
        /// The call.
        call: CallRef,
    },
    /// The caller was answered (billing starts), by leg B (`target`) or by the plan.
    Answered {
        /// The call.
        call: CallRef,
        /// The target that answered, if a bridge did.
        target: Option<String>,
        /// Leg B's Call-ID, if leg B answered.
        b_call_id: Option<String>,
        /// Each leg's codec, as negotiated so far.
        codecs: [Option<String>; 2],
    },
    /// Leg B answered: both legs are up.
    Bridged {
        /// The call.
        call: CallRef,
        /// Leg B's Call-ID.
        b_call_id: String,
        /// The target that answered.
        target: String,
    },
    /// A digit passed the leg's decision point.
    Digit {
        /// The call.
        call: CallRef,
        /// The digit (`suppressed`: it did not reach the other leg).
        event: DigitEvent,
    },
    /// A module action or leg app did something.
    Action {
        /// The call.
        call: CallRef,
        /// What (`"push_page"`, or the dialplan action's name).
        name: String,
        /// Its result in words.
        result: String,
        /// It worked.
        ok: bool,
        /// The code that asked for it (`"*76"`), if digits did.
        code: Option<String>,
        /// What exactly (the page's URL, the new volume).
        detail: Option<String>,
    },
    /// A chat message between the call's agent and its caller (the agent console's room).
    Chat {
        /// The call.
        call: CallRef,
        /// `agent` or `caller`.
        from: &'static str,
        /// The agent's ID (for `agent`).
        agent: Option<String>,
        /// The text, as written.
        text: String,
    },
    /// The call holds an item of a pool (a caller number from a gateway's ANI pool).
    Leased {
        /// The call.
        call: CallRef,
        /// The pool (the gateway's name).
        pool: String,
        /// The item (the number).
        item: String,
    },
    /// An item went back to its pool (it rests for the pool's cool-down).
    Released {
        /// The pool.
        pool: String,
        /// The item.
        item: String,
    },
    /// A call ended.
    Ended(Arc<CallSummary>),
}

impl CallEvent {
    /// The call it is about (`Released` is about a pool).
    pub fn call(&self) -> Option<CallRef> {
        match self {
            CallEvent::Started { call, .. }
            | CallEvent::Ringing { call }
            | CallEvent::Answered { call, .. }
            | CallEvent::Bridged { call, .. }
            | CallEvent::Digit { call, .. }
            | CallEvent::Action { call, .. }
            | CallEvent::Chat { call, .. }
            | CallEvent::Leased { call, .. } => Some(*call),
            CallEvent::Ended(s) => Some(s.id),
            CallEvent::Released { .. } => None,
        }
    }

    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            CallEvent::Started { .. } => "started",
            CallEvent::Ringing { .. } => "ringing",
            CallEvent::Answered { .. } => "answered",
            CallEvent::Bridged { .. } => "bridged",
            CallEvent::Digit { .. } => "digit",
            CallEvent::Action { .. } => "action",
            CallEvent::Chat { .. } => "chat",
            CallEvent::Leased { .. } => "leased",
            CallEvent::Released { .. } => "released",
            CallEvent::Ended(_) => "ended",
        }
    }
}

/// An event with the wall-clock time the engine emitted it (ms since the Unix epoch).
#[derive(Debug, Clone)]
pub struct Stamped {
    /// When.
    pub at_ms: i64,
    /// What.
    pub event: CallEvent,
}

/// Something that wants to know about calls. Runs off the call path, one event at a time,
/// in the order the engine emitted them.
pub trait CallObserver: Send + 'static {
    /// Short name (logs, the dropped-events metric).
    fn name(&self) -> &'static str;

    /// Which events it wants, asked once at start: the others never reach its queue (an
    /// observer of digits is not woken for every call set-up).
    fn interest(&self) -> fn(&CallEvent) -> bool {
        |_| true
    }

    /// `true`: a call whose `Started` it does not want is not followed at all (none of that
    /// call's events reach it) — for observers of a few calls among many.
    fn per_call(&self) -> bool {
        false
    }

    /// `true` when `on_event` only hands the event to a queue of the observer's own and never
    /// blocks (a store's writer): it is then called on the switch's thread, saving a thread
    /// hop per event. Anything that may wait (a network, a lock held elsewhere) must say
    /// `false`.
    fn inline(&self) -> bool {
        false
    }

    /// One event.
    fn on_event(&mut self, event: &Stamped);
}
