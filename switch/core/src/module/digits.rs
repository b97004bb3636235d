//! `LegApp`: a module's program attached to one leg of a call, at the one point every digit
//! of that leg passes whatever its form (RFC 4733 events, SIP INFO, in-band tones), before
//! anything reaches the other leg.
//!
//! The engine asks each app of the leg in the order they were attached:
//! [`LegApp::on_digit`] answers [`DigitVerdict::Forward`] (the next app decides, then the
//! other leg gets it), [`DigitVerdict::Swallow`] (nobody else sees it) or
//! [`DigitVerdict::Hold`] (the engine keeps it, with its duration, until the app says
//! [`AppAction::ReleaseHeld`] — the held digits continue down the chain in order, as if
//! forwarded then — or [`AppAction::DropHeld`]). After every input the engine drains
//! [`LegApp::poll_action`] *before* applying the verdict, so an app that releases held
//! digits and forwards the new one keeps the caller's order. Time is injected: the engine
//! calls [`LegApp::handle_timeout`] once [`LegApp::poll_timeout`] is due.

use std::time::Instant;

use switchboard_media::{DtmfMethod, Side};

use crate::play::Play;

/// The Content-Type of an action for a caller's browser ([`AppAction::SendToLeg`] to a
/// browser leg): JSON, `{"action":"push_page","page":"checkout","code":"*76"}`. The browser
/// leg checks it against the merchant's configuration, asks the page and answers with the
/// page's result (200 with `{"ok":true,"detail":"..."}`, or a refusal with a `Warning`).
pub const BROWSER_ACTION: &str = "application/vnd.switchboard.action+json";

/// A digit as an app sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digit {
    /// `0-9`, `*`, `#`, `A-D`.
    pub digit: char,
    /// How long it was pressed, ms (kept when a held digit is released).
    pub duration_ms: u32,
    /// How it arrived.
    pub method: DtmfMethod,
}

/// What an app decides about one digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitVerdict {
    /// Pass it on (to the next app of the leg, then to the other leg).
    Forward,
    /// Keep it from everyone.
    Swallow,
    /// Keep it for now: released later in order ([`AppAction::ReleaseHeld`]) or dropped.
    Hold,
}

/// What an app asks of its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppAction {
    /// The digits this app holds go on, in order, with their durations.
    ReleaseHeld,
    /// The digits this app holds are dropped.
    DropHeld,
    /// The oldest `n` digits this app holds go on, in order (the others stay held).
    ReleaseFirst(usize),
    /// The oldest `n` digits this app holds are dropped (the others stay held).
    DropFirst(usize),
    /// Send a message to a leg's endpoint: an in-dialog SIP INFO with this body (a browser
    /// leg hands it to the page; a SIP phone sees an INFO).
    SendToLeg {
        /// The leg.
        side: Side,
        /// Its Content-Type.
        content_type: String,
        /// The body.
        body: String,
        /// `Some`: the app wants the answer, [`LegApp::on_reply`] with this tag (a leg that
        /// cannot be reached answers at once, 481).
        tag: Option<u64>,
    },
    /// Play a prompt or tone to a leg (what plays there now stops).
    Play {
        /// The leg.
        side: Side,
        /// What.
        what: Play,
    },
    /// Report the outcome of something the app did (observers see it as
    /// [`CallEvent::Action`](crate::CallEvent::Action); call records keep it).
    Report(ActionReport),
}

/// What an app (or a dialplan action) did, for records and observers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionReport {
    /// What was done (`"push_page"`).
    pub name: String,
    /// The code that asked for it (`"*76"`), if digits did.
    pub code: Option<String>,
    /// What exactly (`"https://shop.example/checkout"`, `"volume 120 %"`).
    pub detail: Option<String>,
    /// It worked.
    pub ok: bool,
    /// Its result in words (`"ok"`, `"refused: not on the merchant's origins"`).
    pub result: String,
}

/// The answer to a [`AppAction::SendToLeg`] that asked for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegReply {
    /// The SIP status (408 when nothing came back, 481 when the leg was gone).
    pub status: u16,
    /// In words: the `Warning` text when the leg gave one, else the reason phrase.
    pub reason: String,
    /// The answer's body.
    pub body: Vec<u8>,
}

/// A module's program on one leg. Sans-IO: no clock, no socket.
pub trait LegApp: Send + std::fmt::Debug {
    /// Short name for logs.
    fn name(&self) -> &'static str;

    /// A digit of this leg, before it goes anywhere.
    fn on_digit(&mut self, now: Instant, digit: &Digit) -> DigitVerdict;

    /// When [`LegApp::handle_timeout`] wants to run (None: nothing pending).
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Its timer is due.
    fn handle_timeout(&mut self, _now: Instant) {}

    /// The answer to a message it sent with a tag.
    fn on_reply(&mut self, _now: Instant, _tag: u64, _reply: &LegReply) {}

    /// The next thing it asks of the call.
    fn poll_action(&mut self) -> Option<AppAction> {
        None
    }
}

/// The built-in app behind `dtmf_suppress_a`/`dtmf_suppress_b`: these digits never reach the
/// other leg.
#[derive(Debug, Clone)]
pub(crate) struct Suppress(pub String);

impl LegApp for Suppress {
    fn name(&self) -> &'static str {
        "dtmf_suppress"
    }

    fn on_digit(&mut self, _now: Instant, digit: &Digit) -> DigitVerdict {
        if self.0.contains(digit.digit) {
            DigitVerdict::Swallow
        } else {
            DigitVerdict::Forward
        }
    }
}
