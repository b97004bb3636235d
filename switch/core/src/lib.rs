//! # switchboard-core
//!
//! The B2BUA, without I/O. An [`Engine`] owns the SIP transaction layer, the calls and their
//! dialogs; the tokio shell feeds it bytes and time and carries out what it polls back.
//!
//! A call is two legs that share nothing on the wire: leg A (the caller; we are its UAS) and
//! leg B (we are its UAC) have their own Call-IDs, tags, CSeq spaces and Vias. Nothing of
//! leg A's headers reaches leg B unless the dialplan adds it. The dialplan's
//! [`RoutePlan`](switchboard_dialplan::RoutePlan) decides what happens: answer, hang up, or
//! bridge to targets in sequence (failover on timeouts and 5xx) or in parallel (ring all).
//!
//! Media is anchored: every SDP crossing the switch is rewritten to point at the call's
//! media ports, each leg getting its own best codec (see `switchboard_media`); the shell runs
//! the call's media session (forwarding or transcoding, digits, prompts) and reports back
//! digits, RTP timeouts and finished prompts.

mod apps;
mod bridge;
mod call;
mod config;
mod engine;
pub mod guard;
mod ids;
mod indialog;
mod media;
pub mod module;
mod play;
mod services;
mod session_timer;
mod transfer;

pub use bridge::escape_user;
pub use call::{CallInfo, CallState, CallSummary, MediaPorts};
pub use config::{Cidr, EngineConfig};
pub use engine::{
    ALLOW, Engine, EngineStats, LOCAL_CONTEXT, LOCAL_PREFIX, Output, facts_of, local_facts,
};
pub use engine::{fmt_addr, transport_param};
pub use ids::{CallRef, IdGen};
pub use module::{CallEvent, Module, Registry};
pub use play::Play;
pub use switchboard_dialplan::Cause;
pub use switchboard_media::Side;

#[cfg(test)]
mod tests;
