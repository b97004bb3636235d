//! # switchboard-media
//!
//! Media for Switchboard, without I/O. This slice holds what anchoring needs:
//! - [`sdp`]: rewrite an SDP body so RTP flows through the switch (our address and port,
//!   codecs filtered to the configured list in offer/answer order, other streams disabled);
//! - [`relay`]: the per-call relay decision (symmetric RTP latching, where each packet goes);
//! - [`ports`]: the RTP port pool.
//!
//! Transcoding, DTMF and prompts arrive with the media issue; they plug in behind the relay.

pub mod ports;
pub mod relay;
pub mod sdp;

pub use ports::PortPool;
pub use relay::{Relay, RelayStats, Side};
pub use sdp::{MediaInfo, SdpError, rewrite};
