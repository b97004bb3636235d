//! # switchboard-sip
//!
//! SIP for Switchboard, without I/O:
//! - [`parse`]: a strict, zero-copy parser (nom for the grammar, memchr for framing) and
//!   [`Message::write_to`], the printer that writes what it parsed;
//! - [`header`], [`typed`], [`uri`], [`params`]: header names (compact forms included) and
//!   typed views read on demand;
//! - [`transaction`]: RFC 3261 §17 client and server transactions whose timers are data:
//!   feed them input with the current time, poll them for what to send and when to wake up.
//! - [`dialog`]: RFC 3261 §12 dialogs (route sets, CSeq, in-dialog request building);
//! - [`salvage`]: a 400 for a request the strict parser refuses, when it can be answered.
//!
//! Nothing here reads the clock or touches a socket.

pub mod dialog;
pub mod error;
pub mod header;
pub mod message;
pub mod method;
pub mod params;
pub mod parse;
pub mod salvage;
pub mod transaction;
pub mod typed;
pub mod uri;

pub use error::ParseError;
pub use header::{Header, Headers, Name};
pub use message::{Message, Request, Response, reason_phrase};
pub use method::Method;
pub use parse::{parse_datagram, parse_stream};
