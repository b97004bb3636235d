//! What readers ask for ([`CdrFilter`]) and get ([`Cdr`]): the API's JSON, the CLI's export
//! and the CRM look-ups.

/// A record, as the API and the CLI show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cdr {
    /// Row id.
    pub id: i64,
    /// Leg A's Call-ID.
    pub call_id: String,
    /// Leg B's Call-ID.
    pub b_call_id: Option<String>,
    /// Caller number.
    pub caller: String,
    /// Destination.
    pub destination: String,
    /// Context.
    pub context: String,
    /// Target that answered (or was tried last).
    pub target: Option<String>,
    /// Caller number leased from the gateway's pool.
    pub ani: Option<String>,
    /// Start, RFC 3339.
    pub started: String,
    /// Ringing, RFC 3339.
    pub ringing: Option<String>,
    /// Answered, RFC 3339.
    pub answered: Option<String>,
    /// Ended, RFC 3339 (None: in progress).
    pub ended: Option<String>,
    /// Seconds from answer to end.
    pub billable_secs: Option<f64>,
    /// Hang-up cause (Q.850 name, or INTERRUPTED).
    pub cause: Option<String>,
    /// Leg B's cause.
    pub b_cause: Option<String>,
    /// Who hung up: caller, callee or switch.
    pub hangup_side: Option<String>,
    /// Leg A's codec.
    pub codec_a: Option<String>,
    /// Leg B's codec.
    pub codec_b: Option<String>,
    /// Media quality summary (JSON).
    pub quality: Option<serde_json::Value>,
    /// Browser calls: merchant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// Browser calls: link (button).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Browser calls: customer or session ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Browser calls: the page the call started on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_url: Option<String>,
    /// Browser calls: that page's referrer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// Browser calls: the browser's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_ip: Option<String>,
    /// Browser calls: trail, cookies and form fields the merchant opted in to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_context: Option<serde_json::Value>,
    /// What was done during the call (pages pushed, volume...), in order, with its time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<CdrAction>,
    /// Where leg A's INVITE came from: `udp:203.0.113.7:5060` (`local:` for a browser).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The chat between the agent and the caller, in order, with its time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chat: Vec<CdrChat>,
}

/// A chat message of a record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CdrChat {
    /// When, RFC 3339.
    pub at: String,
    /// Who and what.
    #[serde(flatten)]
    pub line: crate::ChatLine,
}

/// An action of a record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CdrAction {
    /// When, RFC 3339.
    pub at: String,
    /// What, with its code, detail and result.
    #[serde(flatten)]
    pub action: crate::ActionRecord,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct CdrFilter {
    /// Started at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Started before (unix ms).
    pub until_ms: Option<i64>,
    /// Only this cause.
    pub cause: Option<String>,
    /// Only this caller number.
    pub caller: Option<String>,
    /// Only this destination.
    pub destination: Option<String>,
    /// Only calls that presented this pool number (a CRM looking up the caller by ANI).
    pub ani: Option<String>,
    /// Only this leg A or leg B Call-ID.
    pub call_id: Option<String>,
    /// Only browser calls of this merchant (a merchant's API key sees nothing else).
    pub merchant: Option<String>,
    /// Only browser calls of this customer/session ID.
    pub session: Option<String>,
    /// Only calls in progress.
    pub active: bool,
    /// At most this many, newest first (default 1000).
    pub limit: Option<u32>,
}
