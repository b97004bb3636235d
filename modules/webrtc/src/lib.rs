//! Switchboard's browser leg (`modules/webrtc`): what a merchant page's call button needs.
//!
//! - [`signal`]: the widget's JSON protocol over the WebSocket;
//! - [`action`]: actions in the caller's page (a pushed page, volume, echo controls), checked
//!   against the merchant's pages, origins and `actions_off`;
//! - [`merchant`]: who may call what, from where (origins, links, numbers, tokens);
//! - [`token`]: the HMAC tokens a merchant's server mints;
//! - [`peer`]: the WebRTC peer (str0m: ICE-lite, DTLS-SRTP, Opus, telephone-event);
//! - [`leg`]: the browser leg's SIP face on the core's in-process `Local` transport;
//! - [`assets`]: the widget (loader, media client, demo shop), served by the switch.
//!
//! All of it is sans-IO: the server's tokio shell owns the sockets and the WebSocket.

pub mod action;
pub mod assets;
pub mod callee;
pub mod leg;
pub mod merchant;
pub mod peer;
pub mod signal;
pub mod token;

pub use callee::{CalleeEvent, CalleeLeg};
pub use leg::{LegEvent, WebFacts, WebLeg};
pub use merchant::MerchantConfig;
pub use peer::{BrowserPeer, Certificate, PeerError, PeerOutput};
pub use signal::{CallRequest, ClientMsg, ErrorCode, Reason, ServerMsg};
