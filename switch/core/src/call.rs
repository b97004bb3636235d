//! A call: leg A (the caller, we are its UAS), the attempts at leg B (we are their UAC),
//! the plan it follows, and how it ended.

use std::time::Instant;

use switchboard_dialplan::{Bridge, Cause, RoutePlan};
use switchboard_media::Side;
use switchboard_sip::Request;
use switchboard_sip::dialog::Dialog;
use switchboard_sip::transaction::{Peer, TxnId};

use crate::ids::CallRef;

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Leg B is being tried.
    Routing,
    /// 200 sent to A, waiting for its ACK.
    Answered,
    /// Both legs confirmed.
    Up,
}

impl CallState {
    /// Short name for `ctl calls`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Routing => "routing",
            CallState::Answered => "answered",
            CallState::Up => "up",
        }
    }
}

/// The caller's leg.
#[derive(Debug)]
pub(crate) struct LegA {
    pub invite_txn: TxnId,
    pub invite: Request,
    /// Where A's requests came from (in-dialog requests go back there: symmetric signalling).
    pub peer: Peer,
    pub tag: String,
    pub dialog: Option<Dialog>,
    /// A final response went to A's INVITE.
    pub finalized: bool,
    pub sdp_version: u64,
}

impl LegA {
    /// Once A has its final response, the INVITE is only needed for its Call-ID: keep that,
    /// and let the received datagram go (memory per established call).
    pub fn slim_invite(&mut self) {
        let call_id = self
            .invite
            .headers
            .call_id()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let mut slim = Request::new(self.invite.method.clone(), "");
        slim.headers.0.reserve_exact(1);
        slim.headers.push(switchboard_sip::Name::CallId, call_id);
        self.invite = slim;
    }
}

impl Attempt {
    /// After the call is answered only the INVITE's Call-ID and CSeq are still needed (for
    /// the ACK): keep those.
    pub fn slim_invite(&mut self) {
        self.route = None;
        let mut slim = Request::new(self.invite.method.clone(), self.invite.uri.clone());
        slim.headers.0.reserve_exact(2);
        for name in [switchboard_sip::Name::CallId, switchboard_sip::Name::CSeq] {
            if let Some(v) = self.invite.headers.get(&name) {
                slim.headers.push(name, v.clone());
            }
        }
        self.invite = slim;
    }
}

/// An attempt at leg B.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub txn: TxnId,
    pub invite: Request,
    pub peer: Peer,
    pub target: String,
    /// The target as the plan named it (its endpoint answers challenges); dropped once the
    /// call is answered (memory per established call).
    pub route: Option<Box<switchboard_dialplan::Target>>,
    /// Already re-sent with credentials (a second challenge is a failure).
    pub authed: bool,
    /// Already re-sent after a 422 with the interval it asked for (a second 422 fails).
    pub st_retried: bool,
    pub call_id: String,
    pub ringing: bool,
    /// The ring timeout fired (so a 487 means NO_ANSWER, not a cancel by A).
    pub timed_out: bool,
    pub done: bool,
}

/// An in-dialog request relayed from one leg to the other, waiting for its response.
#[derive(Debug, Clone)]
pub(crate) struct Relayed {
    pub server_txn: TxnId,
    pub from: Side,
    pub is_invite: bool,
}

/// The ACK a relayed re-INVITE's 2xx is waiting for: the requester's ACK goes on to the
/// other leg with this CSeq (end to end, RFC 3261 §13.2.2.4).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingAck {
    pub from: Side,
    pub from_seq: u32,
    pub to_seq: u32,
}

/// Ports anchoring the call's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPorts {
    /// The port leg A sends to.
    pub a: u16,
    /// The port leg B sends to.
    pub b: u16,
}

/// One call.
#[derive(Debug)]
pub(crate) struct Call {
    pub id: CallRef,
    pub state: CallState,
    pub a: LegA,
    pub attempts: Vec<Attempt>,
    pub winner: Option<usize>,
    pub b_dialog: Option<Dialog>,
    pub b_peer: Option<Peer>,
    /// Leg B's 2xx was ACKed (a retransmitted 2xx gets the ACK again).
    pub b_acked: bool,
    /// That ACK, encoded, when it carried a body (the answer to B's offer); one without a
    /// body is rebuilt from the dialog when needed (memory per established call).
    pub b_ack: Option<bytes::Bytes>,
    pub plan: RoutePlan,
    pub bridge: Option<Bridge>,
    /// Next plan action to run (after a bridge fails, the plan goes on from here).
    pub plan_cursor: usize,
    pub next_target: usize,
    /// A's offer, rewritten for leg B (computed once, reused by every attempt).
    pub offer_b: Option<bytes::Bytes>,
    pub media: Option<MediaPorts>,
    pub b_sdp_version: u64,
    pub relayed: Vec<(TxnId, Relayed)>,
    pub pending_ack: Option<PendingAck>,
    /// A re-INVITE in progress from this side (glare → 491).
    pub reinvite_from: Option<Side>,
    /// The failure leg A hears if no target answers (the worst so far, see
    /// `AttemptError::rank`).
    pub last_failure: Option<Box<crate::module::AttemptError>>,
    /// Each leg's session timer (RFC 4028).
    pub st: [Option<crate::session_timer::LegTimer>; 2],
    pub started: Instant,
    pub answered_at: Option<Instant>,
    pub destination: String,
    pub caller: String,
    /// The dialplan context the call was routed in (a transfer is routed there too, unless
    /// `[sip] transfer_context` names another).
    pub context: std::sync::Arc<str>,
    /// Leg B asked to transfer the caller (REFER): it waits aside while the new target is
    /// tried.
    pub transfer: Option<Box<crate::transfer::Transferor>>,
    /// `call{id, call_id, b_call_id}`: every log line about the call is inside it.
    pub span: tracing::Span,
    /// Offer/answer and DTMF state.
    pub m: crate::media::CallMedia,
    /// What the plan waits for (a prompt, digits).
    pub wait: Option<Box<crate::play::Wait>>,
    /// A collection that ended at its `max` digits: the terminator the prompt asked for
    /// may still come, until then; it belongs to the collection, not to the next leg.
    pub late_terminator: Option<Box<(String, Instant)>>,
    /// Counted against the untrusted sources' call ceilings (its source).
    pub untrusted: Option<std::net::IpAddr>,
    /// Tone played to A while a bridge rings (dialplan `ringback`); `true` once started.
    pub ringback: Option<(String, bool)>,
    /// The routing facts, kept when the plan may route collected digits.
    pub facts: Option<Box<switchboard_dialplan::Facts>>,
    pub next_play: u32,
    /// Module programs on the legs (digits pass them first), in the order attached.
    pub apps: Vec<crate::apps::Attached>,
    /// The engine timer set for the earliest app timer.
    pub app_timer: Option<Instant>,
    /// Headers module actions added for later bridges.
    pub module_headers: Vec<(String, String)>,
    /// The caller ID the plan presents on leg B (`effective_caller_id_number`/`_name`).
    pub effective_caller: Option<Box<(Option<String>, Option<String>)>>,
    /// What an in-process caller (the browser leg) said about itself (`merchant`, ...);
    /// None for SIP callers.
    pub local: Option<std::sync::Arc<std::collections::BTreeMap<String, String>>>,
}

impl Call {
    /// The terminator a full collection's prompt asked for, arriving in time: it is the
    /// collection's (swallowed). Any other digit ends the wait for it.
    pub(crate) fn take_late_terminator(&mut self, now: Instant, digit: char) -> bool {
        match self.late_terminator.take().map(|b| *b) {
            Some((t, until)) if t.contains(digit) && now < until => {
                tracing::debug!(digit = %digit, "read_digits: the terminator after the last digit is the collection's");
                true
            }
            _ => false,
        }
    }

    pub fn attempt_by_txn(&self, txn: TxnId) -> Option<usize> {
        self.attempts.iter().position(|a| a.txn == txn)
    }

    pub fn live_attempts(&self) -> impl Iterator<Item = &Attempt> {
        self.attempts.iter().filter(|a| !a.done)
    }
}

/// What the engine reports about a finished call (for logs, metrics and CDRs).
#[derive(Debug, Clone)]
pub struct CallSummary {
    /// The call.
    pub id: CallRef,
    /// Leg A's Call-ID.
    pub a_call_id: String,
    /// Leg B's Call-ID, when a leg B answered.
    pub b_call_id: Option<String>,
    /// Destination dialled.
    pub destination: String,
    /// Caller number.
    pub caller: String,
    /// Why it ended (leg A's cause).
    pub cause: Cause,
    /// How leg B ended (None: no leg B was attempted).
    pub b_cause: Option<Cause>,
    /// Which side hung up (None: the switch did).
    pub hangup_side: Option<Side>,
    /// The leg B target that answered (or was tried last).
    pub target: Option<String>,
    /// Each leg's codec, when negotiated.
    pub codecs: [Option<String>; 2],
    /// Seconds from answer to end (0 when never answered).
    pub billable_secs: f64,
}

/// A live call as `ctl calls` lists it.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The call.
    pub id: CallRef,
    /// State.
    pub state: CallState,
    /// Leg A's Call-ID.
    pub a_call_id: String,
    /// Leg B's Call-ID, once a leg B answered (what the call center saw).
    pub b_call_id: Option<String>,
    /// Destination dialled.
    pub destination: String,
    /// Caller number.
    pub caller: String,
    /// Current or winning leg B target.
    pub target: Option<String>,
    /// Seconds since the INVITE.
    pub age_secs: u64,
    /// Media ports (leg A's, leg B's), when anchored.
    pub media: Option<MediaPorts>,
    /// Each leg's codec and DTMF form, once negotiated.
    pub legs: [Option<(String, String)>; 2],
}

#[cfg(test)]
mod tests {
    /// Memory per established call: a call lives in one allocation (`Box<Call>`) for as long
    /// as it lasts, so what is rarely needed (SRTP state, anchored legs' media settings,
    /// codecs and pending offers, a prompt's wait, a collection's late terminator) is boxed
    /// apart. A budget, not a timing: mimalloc's 1,536-byte class (the next is 1,792).
    #[test]
    fn a_call_fits_its_size_class() {
        let call = std::mem::size_of::<super::Call>();
        assert!(call <= 1536, "Call is {call} bytes");
        let media = std::mem::size_of::<crate::media::CallMedia>();
        assert!(media <= 260, "CallMedia is {media} bytes");
    }
}
