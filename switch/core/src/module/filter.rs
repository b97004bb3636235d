//! `InviteFilter`: ordered edits of every INVITE the switch sends to a leg B — caller-ID
//! rules, numbers leased from a pool, context headers, redaction — or a typed refusal of
//! the attempt.

use std::time::{Duration, Instant};

use switchboard_dialplan::Target;

use super::AttemptError;
use crate::ids::CallRef;

/// The caller ID an INVITE presents (its From).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallerId {
    /// Number (From user part).
    pub number: String,
    /// Display name (may be empty).
    pub name: String,
}

/// An INVITE about to go to a leg B, as filters may edit it. The switch writes the headers it
/// manages itself (Via, From from `caller`, To, Call-ID, CSeq, Contact, Max-Forwards) around
/// `headers`.
#[derive(Debug, Clone)]
pub struct OutgoingInvite {
    /// The call.
    pub call: CallRef,
    /// Where it goes.
    pub target: Target,
    /// Who it says is calling.
    pub caller: CallerId,
    /// Other headers, in order (the dialplan's `header_add` are here already).
    pub headers: Vec<(String, String)>,
    /// Items of pools the filters leased and released for the call (for observers).
    pub(crate) leases: Vec<(String, String)>,
}

impl OutgoingInvite {
    /// Adds a header.
    pub fn add_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_owned(), value.into()));
    }

    /// Removes every header of this name (any case).
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The call holds `item` of `pool` from now on (observers see
    /// [`CallEvent::Leased`](crate::CallEvent::Leased); a store keeps it across restarts).
    pub fn note_lease(&mut self, pool: &str, item: &str) {
        self.leases.push((pool.to_owned(), item.to_owned()));
    }
}

/// Why a filter stops an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// The attempt fails (the call moves on to its next target, or ends).
    Refused(AttemptError),
    /// Not yet: try this same target again in a while (a call queued for a pool number).
    Wait(Duration),
}

/// A module's edit of outgoing INVITEs. Filters run in ascending order (see
/// [`FilterOrder`](super::FilterOrder)); each sees what the earlier ones did.
pub trait InviteFilter: Send {
    /// Edits or refuses the INVITE.
    fn filter(&mut self, now: Instant, invite: &mut OutgoingInvite) -> Result<(), FilterError>;

    /// An attempt it let through is over without being answered (it failed, timed out, was
    /// cancelled, or could not be sent): give back what that attempt held. Returns the leases
    /// released, as (pool, item).
    fn attempt_ended(
        &mut self,
        _now: Instant,
        _call: CallRef,
        _target: &Target,
    ) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The call is over: give back what it still held (the answered attempt's number...).
    /// Returns the leases released, as (pool, item).
    fn call_ended(&mut self, _now: Instant, _call: CallRef) -> Vec<(String, String)> {
        Vec::new()
    }
}
