//! The CRM look-ups, as rules over the store: which calls a merchant's API key may see and
//! how a question becomes a store query. The switch's HTTP layer routes and authenticates;
//! what a CRM gets is decided here.

use serde::Deserialize;
use switchboard_store::{CdrFilter, parse_time};

/// A CRM's question (`GET /api/v1/calls?ani=...&at=...`, `?call_id=...`, `?session=...`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsQuery {
    /// The caller number the agent's phone shows.
    pub ani: Option<String>,
    /// The moment the call was ringing (an RFC 3339 time or a date): the newest call
    /// started at or before it.
    pub at: Option<String>,
    /// Leg A's or leg B's Call-ID.
    pub call_id: Option<String>,
    /// The merchant's session or customer ID.
    pub session: Option<String>,
}

impl CallsQuery {
    /// It asks for one call (by ANI, Call-ID or session), not for a list.
    pub fn is_lookup(&self) -> bool {
        self.ani.is_some() || self.call_id.is_some() || self.session.is_some()
    }
}

/// The store query for a look-up: the newest call matching, within `merchant`'s calls when
/// a merchant's key asks (None: the admin). `Err`: the question in words is malformed.
pub fn lookup(merchant: Option<String>, q: CallsQuery) -> Result<CdrFilter, String> {
    let until_ms = q.at.as_deref().map(parse_time).transpose()?.map(|t| t + 1);
    Ok(CdrFilter {
        ani: q.ani,
        call_id: q.call_id,
        session: q.session,
        until_ms,
        merchant,
        limit: Some(1),
        ..Default::default()
    })
}

/// The store query for a merchant's calls in progress, with their context.
pub fn in_progress(merchant: String) -> CdrFilter {
    CdrFilter {
        merchant: Some(merchant),
        active: true,
        limit: Some(1000),
        ..Default::default()
    }
}

/// The merchant whose API key this is, comparing hashes (keys are stored hashed, so a leaked
/// configuration reveals none).
pub fn merchant_of_key<'a>(
    given: &str,
    merchants: impl IntoIterator<Item = (&'a String, &'a [String])>,
) -> Option<String> {
    let hash = switchboard_webrtc::token::key_hash(given);
    merchants
        .into_iter()
        .find(|(_, keys)| {
            keys.iter()
                .any(|k| switchboard_webrtc::token::constant_eq(k, &hash))
        })
        .map(|(id, _)| id.clone())
}

/// What a CRM hears when nothing matches: another merchant's call looks exactly like no
/// call (404, never 403).
pub const NO_MATCH: &str = "no call matches";
