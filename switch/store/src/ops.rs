//! What the switch tells the store: a [`CdrOp`] per thing that happens to a call, in the
//! order it happens (the writer keeps a call's changes only once its `Start` has come).

/// A call accepted for routing: what its record starts with (the writer holds it as it is
/// until the row is written).
#[derive(Debug)]
pub struct CallStart {
    /// Switch-local call id (unique while the process runs).
    pub call: u64,
    /// Leg A's Call-ID.
    pub call_id: std::sync::Arc<str>,
    /// Caller number.
    pub caller: std::sync::Arc<str>,
    /// Destination dialled.
    pub destination: std::sync::Arc<str>,
    /// Dialplan context.
    pub context: std::sync::Arc<str>,
    /// Where leg A's INVITE came from (`udp:203.0.113.7:5060`).
    pub source: std::sync::Arc<str>,
    /// Unix ms.
    pub at: i64,
}

/// Something that happened to a call, for its record.
#[derive(Debug)]
pub enum CdrOp {
    /// The call was accepted for routing.
    Start(CallStart),
    /// A browser call's facts and context (written by the browser leg, keyed by leg A's
    /// Call-ID: the record joins them).
    Web(Box<WebRecord>),
    /// Leg B rings.
    Ring {
        /// The call.
        call: u64,
        /// Unix ms.
        at: i64,
    },
    /// The caller was answered.
    Answer {
        /// The call.
        call: u64,
        /// The target that answered.
        target: Option<String>,
        /// Leg B's Call-ID (a CRM finds the record by it while the call goes on).
        b_call_id: Option<String>,
        /// Each leg's codec.
        codecs: [Option<String>; 2],
        /// Unix ms.
        at: i64,
    },
    /// The call ended.
    End {
        /// The call.
        call: u64,
        /// Unix ms.
        at: i64,
        /// What the engine knows about it.
        summary: std::sync::Arc<switchboard_core::CallSummary>,
    },
    /// A caller number was leased to the call.
    AniLeased {
        /// The call.
        call: u64,
        /// Gateway.
        gateway: String,
        /// Number.
        number: String,
        /// Unix ms.
        at: i64,
    },
    /// A leased number went back to its pool.
    AniReleased {
        /// Gateway.
        gateway: String,
        /// Number.
        number: String,
        /// Unix ms.
        at: i64,
    },
    /// Something was done in the call (an action in the caller's browser, a dialplan
    /// module's action).
    Action {
        /// The call.
        call: u64,
        /// Unix ms.
        at: i64,
        /// What was done, with its code, detail and result.
        action: Box<ActionRecord>,
    },
    /// A chat message between the call's agent and its caller.
    Chat {
        /// The call.
        call: u64,
        /// Unix ms.
        at: i64,
        /// Who wrote it, with the text.
        line: Box<ChatLine>,
    },
    /// Media quality at the end of the call (JSON), from its media session.
    Quality {
        /// The call.
        call: u64,
        /// JSON text.
        json: String,
    },
}

/// Who a browser call is, as its record keeps it.
#[derive(Debug, Clone, Default)]
pub struct WebCaller {
    /// Merchant ID.
    pub merchant: String,
    /// Link ID (which button).
    pub link: String,
    /// Customer or session ID.
    pub session: String,
    /// The page the call started on.
    pub page_url: String,
    /// The page's referrer.
    pub referrer: String,
    /// The browser's address.
    pub caller_ip: String,
}

/// What a browser call tells the call center's CRM.
#[derive(Debug, Clone)]
pub struct WebRecord {
    /// Leg A's Call-ID.
    pub call_id: String,
    /// What the call was admitted with (merchant, link, session, page, referrer, address).
    pub facts: WebCaller,
    /// Trail, cookies and form fields (JSON).
    pub context: String,
    /// Unix ms.
    pub at: i64,
}

/// An action as the record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ActionRecord {
    /// What (`push_page`, `volume`, a dialplan action's name).
    pub name: String,
    /// The code keyed for it (`*76`), if digits asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What exactly (the page's URL, the new volume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// It worked.
    pub ok: bool,
    /// Its result in words.
    pub result: String,
}

/// A chat message as the record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChatLine {
    /// `agent` or `caller`.
    pub from: String,
    /// The agent's ID (for `agent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The text (as written; shown as text).
    pub text: String,
}
