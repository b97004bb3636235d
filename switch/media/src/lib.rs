//! # switchboard-media
//!
//! Media for Switchboard, without I/O:
//! - [`sdp`]: offer/answer for anchored legs (our address and port, per-leg codec choice);
//! - [`relay`]: symmetric RTP latching (where each leg's packets go);
//! - [`session`]: the per-call media engine: forwarding, transcoding, digits, prompts, tones,
//!   RTP timeouts;
//! - the pieces it is made of: [`rtp`], [`g711`], [`codec`], [`resample`], [`jitter`],
//!   [`dtmf`], [`tone`], [`wav`];
//! - [`srtp`]: SDES-SRTP per leg (`a=crypto`, RFC 3711 and RFC 7714 packet protection);
//! - [`ports`]: the RTP port pool.

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod negotiate;
pub mod ports;
pub mod relay;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod srtp;
pub mod tone;
pub mod wav;

pub use codec::CodecKind;
pub use dtmf::DtmfMethod;
pub use ports::PortPool;
pub use relay::{Latching, Relay, RelayStats, Side};
pub use sdp::{Format, Formats, MediaInfo, SdpError, Transport, audio, rewrite, rewrite_with};
pub use session::{DigitEvent, LegMedia, MediaEvent, Playable, Session};
