//! `Endpoint`: a kind of bridge target (`gateway/NAME/USER`; later `user/...`, `agent/...`)
//! that a module resolves to where and how a leg B is reached.

use std::time::Instant;

use switchboard_media::DtmfMethod;
use switchboard_sip::Name;
use switchboard_sip::Response;
use switchboard_sip::transaction::Peer;

use super::{AttemptError, CallerId};
use crate::ids::CallRef;

/// A target of this endpoint's kind, as the dialplan named it.
#[derive(Debug, Clone, Copy)]
pub struct TargetRef<'a> {
    /// The kind (`gateway`): a module may declare several.
    pub kind: &'a str,
    /// Which one (`acd` in `gateway/acd/2000`).
    pub name: &'a str,
    /// User part to dial (`2000`; empty: the dialled destination).
    pub user: &'a str,
}

/// What the call knows when a leg B is placed.
#[derive(Debug, Clone, Copy)]
pub struct OriginateCtx<'a> {
    /// The call.
    pub call: CallRef,
    /// The destination leg A dialled.
    pub destination: &'a str,
    /// The caller ID the plan presents.
    pub caller: &'a CallerId,
}

/// Where and how to reach a leg B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Next hop.
    pub peer: Peer,
    /// Request-URI.
    pub request_uri: String,
    /// The caller ID after the endpoint's rules.
    pub caller: CallerId,
    /// How digits travel to it, when the endpoint knows (a gateway's `dtmf`).
    pub dtmf: Option<DtmfMethod>,
    /// Whether its media is secured with SDES-SRTP (a gateway's `srtp`).
    pub srtp: switchboard_media::srtp::Policy,
}

/// A module's kind of target.
pub trait Endpoint: Send {
    /// A target that stands for several (`queue/sales`: the consoles of its available
    /// agents): the targets to ring instead, all at once, each then resolved on its own
    /// (by its own kind's endpoint). `None` (the default): the target is one,
    /// [`Endpoint::resolve`] it. An empty list or an error is a failed target (the bridge
    /// goes on with the next).
    fn expand(
        &mut self,
        _now: Instant,
        _target: TargetRef<'_>,
        _ctx: &OriginateCtx<'_>,
    ) -> Option<Result<Vec<switchboard_dialplan::Target>, AttemptError>> {
        None
    }

    /// Resolves a target to a route, or refuses it (down, unknown...).
    fn resolve(
        &mut self,
        now: Instant,
        target: TargetRef<'_>,
        ctx: &OriginateCtx<'_>,
    ) -> Result<Route, AttemptError>;

    /// The far end challenged a request of ours (401/407): the credential header to send it
    /// again with, if this target has credentials (RFC 3261 §22.2).
    fn answer_challenge(
        &mut self,
        _target: TargetRef<'_>,
        _challenge: &Response,
        _method: &str,
        _uri: &str,
        _cnonce: &str,
    ) -> Option<(Name, String)> {
        None
    }
}
