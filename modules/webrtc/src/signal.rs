//! The widget's JSON protocol over the WebSocket (`/ws`), documented in docs/webrtc.md.
//! One JSON object per text frame, `type` says which.

use serde::{Deserialize, Serialize};

/// Longest text frame accepted from a widget (an SDP offer is ~4 KB).
pub const MAX_FRAME: usize = 32 * 1024;

/// Longest chat message, in characters.
pub const MAX_CHAT: usize = 1000;

/// From the widget.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Place a call.
    Call(Box<CallRequest>),
    /// Hang up (button, panel closed).
    Hangup,
    /// Take over a live call after the WebSocket dropped (within the grace period).
    Resume {
        /// The call's id from `accepted`.
        call: String,
        /// The secret from `accepted`.
        key: String,
        /// A new WebRTC offer: the page is a new one (the tab navigated), with a new peer.
        #[serde(default)]
        sdp: Option<String>,
        /// The new page's address (the agent's screen pop follows the shopper).
        #[serde(default)]
        page_url: Option<String>,
    },
    /// A chat message to the agent (once an agent joined: `chat_open`).
    Chat {
        /// The page's own id for it (echoed in `delivered`).
        id: String,
        /// The text (at most [`MAX_CHAT`] characters).
        text: String,
    },
    /// The caller saw the agent's message `id`.
    ChatRead {
        /// The agent's message id.
        id: String,
    },
    /// The page is going away (the tab navigates): keep the call for the next page's
    /// `resume`, even when the browser's media connection closes meanwhile.
    Moving,
    /// What the page made of an `action`.
    ActionResult {
        /// The action's `id`.
        id: u64,
        /// It was done.
        ok: bool,
        /// Why not, in words.
        #[serde(default)]
        error: String,
        /// What changed, in the panel's words ("Volume 120 %").
        #[serde(default)]
        detail: String,
    },
}

/// `{"type":"call", ...}`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// Merchant ID (`data-merchant`).
    pub merchant: String,
    /// Link ID (`data-link`).
    pub link: String,
    /// Customer or session ID (`data-session`).
    #[serde(default)]
    pub session: String,
    /// The merchant-minted token (`data-token`).
    #[serde(default)]
    pub token: String,
    /// A number to call (`data-destination`): only numbers the merchant allows.
    #[serde(default)]
    pub destination: String,
    /// The page the call starts on.
    #[serde(default)]
    pub page_url: String,
    /// That page's referrer.
    #[serde(default)]
    pub referrer: String,
    /// The browser's SDP offer.
    pub sdp: String,
    /// More about the visit, for the call center's CRM (only what the merchant opted in to).
    #[serde(default)]
    pub context: WebContext,
}

/// What the widget collected about the visit (`context` of a `call`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebContext {
    /// The tab's recent pages, oldest first (the loader keeps them in sessionStorage).
    #[serde(default)]
    pub trail: Vec<String>,
    /// Cookies by name: only names the merchant lists in `context_cookies`.
    #[serde(default)]
    pub cookies: std::collections::BTreeMap<String, String>,
    /// Form fields by name: only names the merchant lists in `context_fields`.
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
}

/// Why a call ended, in the words the widget shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Someone hung up after talking.
    Normal,
    /// The line is busy.
    Busy,
    /// Nobody answered.
    NoAnswer,
    /// The call center refused the call.
    Rejected,
    /// The caller cancelled before the answer.
    Cancelled,
    /// The call could not be placed.
    Failed,
}

impl Reason {
    /// From a final SIP status (and Q.850 cause) to leg A.
    pub fn from_status(status: u16, q850: Option<u16>) -> Reason {
        match (status, q850) {
            (486 | 600, _) | (_, Some(17)) => Reason::Busy,
            (408 | 480, _) | (_, Some(18 | 19)) => Reason::NoAnswer,
            (487, _) => Reason::Cancelled,
            (403 | 603, _) | (_, Some(21)) => Reason::Rejected,
            _ => Reason::Failed,
        }
    }

    /// From the Q.850 cause of the core's BYE.
    pub fn from_bye(q850: Option<u16>) -> Reason {
        match q850 {
            None | Some(16 | 31) => Reason::Normal,
            Some(c) => Reason::from_status(0, Some(c)),
        }
    }

    /// The words the widget shows.
    pub fn text(self) -> &'static str {
        match self {
            Reason::Normal => "Call ended.",
            Reason::Busy => "The line is busy. Please try again later.",
            Reason::NoAnswer => "No one answered. Please try again later.",
            Reason::Rejected => "The call was not accepted.",
            Reason::Cancelled => "Call cancelled.",
            Reason::Failed => "The call could not be connected.",
        }
    }
}

/// Why a call request was refused before any SIP left the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message is not the protocol.
    BadRequest,
    /// No such merchant.
    UnknownMerchant,
    /// The page's Origin is not one of the merchant's.
    OriginNotAllowed,
    /// The token is missing, malformed, expired or does not match.
    BadToken,
    /// The link is not one of the merchant's buttons.
    UnknownLink,
    /// The merchant does not allow that number.
    DestinationNotAllowed,
    /// A fact is too long or has characters it must not have.
    BadField,
    /// Too many calls (per address or per merchant).
    RateLimited,
    /// The switch is shutting down or full.
    Unavailable,
    /// The browser's offer cannot be answered (no Opus, no audio).
    BadOffer,
    /// `resume` for a call that is gone.
    NoSuchCall,
    /// A chat message over the size or rate limits (the call goes on).
    ChatLimit,
    /// A chat message with no room to go to (no agent joined, or the room closed).
    ChatRefused,
}

impl ErrorCode {
    /// The code as the widget gets it (and as `/metrics` labels it).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownMerchant => "unknown_merchant",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::UnknownLink => "unknown_link",
            ErrorCode::DestinationNotAllowed => "destination_not_allowed",
            ErrorCode::BadField => "bad_field",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::BadOffer => "bad_offer",
            ErrorCode::NoSuchCall => "no_such_call",
            ErrorCode::ChatLimit => "chat_limit",
            ErrorCode::ChatRefused => "chat_refused",
        }
    }
}

/// To the widget.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The call is placed; the WebRTC answer (media connects while it rings).
    Accepted {
        /// The call's id (for `resume`).
        call: String,
        /// The secret for `resume`.
        key: String,
        /// SDP answer.
        sdp: String,
    },
    /// The far side rings.
    Ringing,
    /// Audio flows before the answer (ringback or announcements from the far side).
    EarlyMedia,
    /// Answered.
    Answered,
    /// The call is over.
    Hangup {
        /// In plain words: normal, busy, no_answer, rejected, cancelled, failed.
        reason: Reason,
        /// The SIP status.
        code: u16,
        /// Words to show.
        message: String,
    },
    /// Do this in the page (the agent keyed a code); answer with `action_result` and the
    /// same `id` within 500 ms.
    Action {
        /// Echoed in `action_result`.
        id: u64,
        /// What.
        #[serde(flatten)]
        action: crate::action::PageAction,
    },
    /// An agent joined the call's chat room.
    ChatOpen {
        /// The agent's display name.
        agent: String,
    },
    /// A chat message from the agent.
    Chat {
        /// Its id (answer `chat_read` with it).
        id: String,
        /// `agent`.
        from: String,
        /// The text (show it as text).
        text: String,
        /// When (ms since the epoch).
        at: i64,
    },
    /// The agent has the caller's message `id`.
    Delivered {
        /// The page's id for it.
        id: String,
    },
    /// The chat room closed (the agent left, the call ended).
    ChatClosed {
        /// In words.
        reason: String,
    },
    /// The request was refused; no call was placed (or, for `chat_*` codes, a chat message
    /// was not sent: the call goes on).
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Words to show (and to debug with).
        message: String,
    },
}

impl ServerMsg {
    /// An error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: message.into(),
        }
    }

    /// The JSON text frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Parses a text frame from the widget.
pub fn parse(text: &str) -> Result<ClientMsg, String> {
    if text.len() > MAX_FRAME {
        return Err(format!("message longer than {MAX_FRAME} bytes"));
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_print() {
        let m = parse(r#"{"type":"call","merchant":"acme","link":"sales","sdp":"v=0"}"#).unwrap();
        assert!(matches!(m, ClientMsg::Call(c) if c.merchant == "acme" && c.session.is_empty()));
        assert!(matches!(
            parse(r#"{"type":"hangup"}"#),
            Ok(ClientMsg::Hangup)
        ));
        assert!(
            parse(r#"{"type":"call","merchant":"a","link":"b","sdp":"","cookie":"x"}"#).is_err()
        );
        assert!(parse("not json").is_err());
        assert!(parse(&"x".repeat(MAX_FRAME + 1)).is_err());
        let j = ServerMsg::Hangup {
            reason: Reason::Busy,
            code: 486,
            message: Reason::Busy.text().into(),
        }
        .to_json();
        assert!(
            j.contains(r#""type":"hangup""#) && j.contains(r#""reason":"busy""#),
            "{j}"
        );
        let j = ServerMsg::Action {
            id: 7,
            action: crate::action::PageAction {
                action: "volume".into(),
                code: Some("*22".into()),
                url: None,
                page: None,
                step: Some(20),
                set: None,
                on: None,
            },
        }
        .to_json();
        assert_eq!(
            j,
            r#"{"type":"action","id":7,"action":"volume","code":"*22","step":20}"#
        );
        assert!(matches!(
            parse(r#"{"type":"action_result","id":7,"ok":false,"error":"no audio"}"#),
            Ok(ClientMsg::ActionResult { id: 7, ok: false, error, .. }) if error == "no audio"
        ));
        let j = ServerMsg::error(ErrorCode::BadToken, "no").to_json();
        assert!(j.contains(r#""code":"bad_token""#), "{j}");
        for c in [
            ErrorCode::BadRequest,
            ErrorCode::DestinationNotAllowed,
            ErrorCode::NoSuchCall,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn statuses_map_to_plain_reasons() {
        assert_eq!(Reason::from_status(486, None), Reason::Busy);
        assert_eq!(Reason::from_status(480, Some(18)), Reason::NoAnswer);
        assert_eq!(Reason::from_status(503, None), Reason::Failed);
        assert_eq!(Reason::from_status(403, None), Reason::Rejected);
        assert_eq!(Reason::from_bye(Some(16)), Reason::Normal);
        assert_eq!(Reason::from_bye(None), Reason::Normal);
    }
}
