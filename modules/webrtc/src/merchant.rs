//! Merchants: who may place web calls, from which pages, to which buttons — the toll-fraud
//! fence. An anonymous browser reaches only the links (and numbers) its merchant lists, and
//! the dialplan decides where each link goes.

use serde::Deserialize;

use crate::leg::WebFacts;
use crate::signal::{CallRequest, ErrorCode, WebContext};
use crate::token;

/// `[merchant.<id>]` in switchboard.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    /// Dialplan context of this merchant's web calls.
    #[serde(default = "default_context")]
    pub context: String,
    /// HMAC key of `data-token` (the merchant's server mints tokens with it).
    #[serde(default)]
    pub secret: Option<String>,
    /// Accept calls without a token (demos only: anyone can then call the links).
    #[serde(default)]
    pub tokenless: bool,
    /// Page origins allowed to embed the button (`https://shop.example`), exact.
    #[serde(default)]
    pub origins: Vec<String>,
    /// The link IDs (buttons) a page may call.
    pub links: Vec<String>,
    /// Numbers a page may ask for with `data-destination` (exact); none by default.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Concurrent web calls of this merchant.
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
    /// New web calls per minute for this merchant.
    #[serde(default = "default_rate")]
    pub calls_per_minute: u32,
    /// Caller name presented on the SIP leg.
    #[serde(default = "default_caller_name")]
    pub caller_name: String,
    /// Cookies the widget may send as context, by name (none by default).
    #[serde(default)]
    pub context_cookies: Vec<String>,
    /// Form fields the widget may send as context, by name (none by default).
    #[serde(default)]
    pub context_fields: Vec<String>,
    /// The merchant's CRM API keys, hashed: `"sha256:<hex>"` (`switchboard apikey` makes one).
    /// Several at once: add the new one, reload, move the CRM over, remove the old one.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// The CRM's webhook: `https://host[:port]/path` (or `http://`), POSTed on the events below.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Extra CA certificates (PEM file, relative to conf/) trusted for the webhook's https,
    /// besides the usual public roots (a CRM behind a private CA).
    #[serde(default)]
    pub webhook_ca: Option<String>,
    /// HMAC key of the webhook's `X-Switchboard-Signature` header.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Which events: `ringing`, `answered`, `hangup`, `action` (default the first three).
    #[serde(default = "default_events")]
    pub webhook_events: Vec<String>,
    /// Pages an agent may push by name (`"*76" = "push_page:checkout"` in the dialplan):
    /// name → URL, on `origins`.
    #[serde(default)]
    pub pages: std::collections::BTreeMap<String, String>,
    /// The URL a bare `push_page` opens, with `{code}`, `{session}` and `{link}` filled in
    /// (the merchant's server maps codes to pages itself); on `origins`.
    #[serde(default)]
    pub page_template: Option<String>,
    /// Actions this merchant's calls refuse: push_page, volume, mic_gain, echo_cancellation,
    /// echo_suppression.
    #[serde(default)]
    pub actions_off: Vec<String>,
}

fn default_events() -> Vec<String> {
    ["ringing", "answered", "hangup"].map(String::from).to_vec()
}

/// A webhook URL split for an HTTP/1.1 client: (https, host, port, path).
pub fn split_url(url: &str) -> Option<(bool, String, u16, String)> {
    let (tls, rest) = match url.strip_prefix("https://") {
        Some(r) => (true, r),
        None => (false, url.strip_prefix("http://")?),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        // [v6]:port or [v6]
        let (h, after) = v6.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (h, p.parse().ok()?),
            None if after.is_empty() => (h, default),
            None => return None,
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (hostport, default),
        }
    };
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b));
    (ok(host) && ok(path)).then(|| (tls, host.to_owned(), port, path.to_owned()))
}

fn default_context() -> String {
    "web".to_owned()
}
fn default_max_calls() -> usize {
    100
}
fn default_rate() -> u32 {
    60
}
fn default_caller_name() -> String {
    "Web caller".to_owned()
}

/// A refusal: the code and the words for the widget.
pub type Refusal = (ErrorCode, String);

/// Longest page URL or referrer kept.
pub const MAX_URL: usize = 2048;
/// Longest session ID.
pub const MAX_SESSION: usize = 128;
/// Most pages in a trail, cookies, or form fields.
pub const MAX_ITEMS: usize = 10;
/// Longest cookie value.
pub const MAX_COOKIE: usize = 256;
/// Longest form field value (characters).
pub const MAX_FIELD: usize = 512;

fn context_ok(c: &WebContext, cookies: &[String], fields: &[String]) -> Result<(), String> {
    if c.trail.len() > MAX_ITEMS || c.cookies.len() > MAX_ITEMS || c.fields.len() > MAX_ITEMS {
        return Err(format!(
            "context: at most {MAX_ITEMS} pages, cookies and form fields each"
        ));
    }
    if let Some(u) = c.trail.iter().find(|u| u.is_empty() || !url_ok(u)) {
        return Err(format!(
            "context trail: {:?} is not an http(s) URL of at most {MAX_URL} characters",
            u.chars().take(80).collect::<String>()
        ));
    }
    for (name, value) in &c.cookies {
        if !cookies.contains(name) {
            return Err(format!(
                "context: cookie {name:?} is not collected for this merchant"
            ));
        }
        if value.len() > MAX_COOKIE || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(format!(
                "context: cookie {name:?} must be printable ASCII of at most {MAX_COOKIE} bytes"
            ));
        }
    }
    for (name, value) in &c.fields {
        if !fields.contains(name) {
            return Err(format!(
                "context: form field {name:?} is not collected for this merchant"
            ));
        }
        if value.chars().count() > MAX_FIELD || value.chars().any(char::is_control) {
            return Err(format!(
                "context: form field {name:?} must be at most {MAX_FIELD} characters, without control characters"
            ));
        }
    }
    Ok(())
}

fn id_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// A URL as a browser serialises it: http(s), printable ASCII, bounded.
fn url_ok(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= MAX_URL
            && (s.starts_with("https://") || s.starts_with("http://"))
            && s.bytes().all(|b| (0x21..0x7f).contains(&b)))
}

impl MerchantConfig {
    /// Checks a call request from a page of `origin`; on success, the facts for the INVITE.
    /// `now` is Unix seconds (token expiry).
    pub fn admit(
        &self,
        id: &str,
        req: &CallRequest,
        origin: Option<&str>,
        caller_ip: &str,
        now: u64,
    ) -> Result<WebFacts, Refusal> {
        let origin_ok = match origin {
            Some(o) => self.origins.iter().any(|a| a == o),
            // No Origin header: not a browser page (curl, a script); refused like a foreign one.
            None => false,
        };
        if !origin_ok {
            return Err((
                ErrorCode::OriginNotAllowed,
                format!(
                    "calls to merchant {id} are not allowed from {}",
                    origin.unwrap_or("a page without an Origin")
                ),
            ));
        }
        if !self.links.iter().any(|l| l == &req.link) {
            return Err((
                ErrorCode::UnknownLink,
                format!("merchant {id} has no call button named {:?}", req.link),
            ));
        }
        if !req.destination.is_empty() && !self.destinations.iter().any(|d| d == &req.destination) {
            return Err((
                ErrorCode::DestinationNotAllowed,
                "this number cannot be called from this page".to_owned(),
            ));
        }
        if !req.session.is_empty() && !id_ok(&req.session, MAX_SESSION) {
            return Err((
                ErrorCode::BadField,
                format!("session must be 1 to {MAX_SESSION} letters, digits or - _ . @"),
            ));
        }
        context_ok(&req.context, &self.context_cookies, &self.context_fields)
            .map_err(|e| (ErrorCode::BadField, e))?;
        for (name, v) in [("page_url", &req.page_url), ("referrer", &req.referrer)] {
            if !url_ok(v) {
                return Err((
                    ErrorCode::BadField,
                    format!("{name} must be an http(s) URL of at most {MAX_URL} characters"),
                ));
            }
        }
        match (&self.secret, req.token.is_empty()) {
            (_, true) if self.tokenless => {}
            (None, _) => {
                return Err((
                    ErrorCode::BadToken,
                    format!("merchant {id} has no secret and does not take tokenless calls"),
                ));
            }
            (Some(secret), _) => {
                token::verify(
                    &req.token,
                    secret.as_bytes(),
                    id,
                    &req.link,
                    &req.session,
                    now,
                )
                .map_err(|e| (ErrorCode::BadToken, e.to_string()))?;
            }
        }
        Ok(WebFacts {
            merchant: id.to_owned(),
            link: req.link.clone(),
            session: req.session.clone(),
            page_url: req.page_url.clone(),
            referrer: req.referrer.clone(),
            caller_ip: caller_ip.to_owned(),
            dial: req.destination.clone(),
            context: self.context.clone(),
            caller_name: self.caller_name.clone(),
        })
    }

    /// Config errors an ops engineer must fix (checked at load).
    pub fn problems(&self, id: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !id_ok(id, 32) {
            p.push(format!(
                "merchant id {id:?}: use 1 to 32 letters, digits or - _ ."
            ));
        }
        if self.links.is_empty() {
            p.push(format!(
                "merchant {id}: `links` is empty, so no button can call"
            ));
        }
        for l in &self.links {
            if !id_ok(l, 32) {
                p.push(format!(
                    "merchant {id}: link {l:?}: use 1 to 32 letters, digits or - _ ."
                ));
            }
        }
        for d in &self.destinations {
            if d.is_empty()
                || d.len() > 20
                || !d
                    .trim_start_matches('+')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            {
                p.push(format!(
                    "merchant {id}: destination {d:?} is not a phone number"
                ));
            }
        }
        if self.secret.is_none() && !self.tokenless {
            p.push(format!(
                "merchant {id}: set `secret` (tokens from the merchant's server) or `tokenless = true` (demos)"
            ));
        }
        if self.origins.is_empty() {
            p.push(format!(
                "merchant {id}: `origins` is empty, so no page may call"
            ));
        }
        for o in &self.origins {
            if !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/') {
                p.push(format!(
                    "merchant {id}: origin {o:?} must look like https://shop.example (scheme, host, optional port, no path)"
                ));
            }
        }
        for k in &self.api_keys {
            let hex = k.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                p.push(format!(
                    "merchant {id}: api key {:?} is not \"sha256:<64 hex digits>\" (make one with `switchboard apikey`)",
                    k.chars().take(16).collect::<String>()
                ));
            }
        }
        if let Some(u) = &self.webhook_url {
            if split_url(u).is_none() {
                p.push(format!(
                    "merchant {id}: webhook_url {u:?} is not https://host[:port]/path (or http://)"
                ));
            }
            if self.webhook_secret.as_deref().is_none_or(str::is_empty) {
                p.push(format!(
                    "merchant {id}: webhook_url needs webhook_secret (the CRM checks the signature with it)"
                ));
            }
        }
        for e in &self.webhook_events {
            if !matches!(
                e.as_str(),
                "ringing" | "answered" | "hangup" | "action" | "chat"
            ) {
                p.push(format!(
                    "merchant {id}: webhook event {e:?}: use ringing, answered, hangup, action or chat"
                ));
            }
        }
        if !id_ok(&self.context, 64) {
            p.push(format!(
                "merchant {id}: context {:?} is not a context name",
                self.context
            ));
        }
        p.extend(crate::action::problems(self, id));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> MerchantConfig {
        MerchantConfig {
            context: "web".into(),
            secret: Some("k".into()),
            tokenless: false,
            origins: vec!["https://shop.example".into()],
            links: vec!["sales".into()],
            destinations: vec!["18005550100".into()],
            max_calls: 10,
            calls_per_minute: 60,
            caller_name: "Web caller".into(),
            context_cookies: vec!["cart".into()],
            context_fields: vec!["email".into()],
            api_keys: vec![],
            webhook_url: None,
            webhook_ca: None,
            webhook_secret: None,
            webhook_events: default_events(),
            pages: Default::default(),
            page_template: None,
            actions_off: Vec::new(),
        }
    }

    fn req(token: String) -> CallRequest {
        CallRequest {
            merchant: "acme".into(),
            link: "sales".into(),
            session: "s1".into(),
            token,
            page_url: "https://shop.example/p?id=1".into(),
            sdp: "v=0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_request_is_admitted_with_its_facts() {
        let t = token::mint(b"k", "acme", "sales", "s1", 100);
        let f = acme()
            .admit(
                "acme",
                &req(t),
                Some("https://shop.example"),
                "10.0.0.1",
                50,
            )
            .unwrap();
        assert_eq!(
            (
                f.merchant.as_str(),
                f.context.as_str(),
                f.caller_ip.as_str()
            ),
            ("acme", "web", "10.0.0.1")
        );
        assert!(acme().problems("acme").is_empty());
    }

    #[test]
    fn each_fence_refuses_with_its_code() {
        let m = acme();
        let t = token::mint(b"k", "acme", "sales", "s1", 100);
        let code =
            |r: &CallRequest, o: Option<&str>| m.admit("acme", r, o, "1.2.3.4", 50).unwrap_err().0;
        let o = Some("https://shop.example");
        assert_eq!(
            code(&req(t.clone()), Some("https://evil.example")),
            ErrorCode::OriginNotAllowed
        );
        assert_eq!(code(&req(t.clone()), None), ErrorCode::OriginNotAllowed);
        assert_eq!(code(&req("1.00".into()), o), ErrorCode::BadToken);
        assert_eq!(code(&req(String::new()), o), ErrorCode::BadToken);
        let mut r = req(t.clone());
        r.link = "support".into();
        assert_eq!(code(&r, o), ErrorCode::UnknownLink);
        let mut r = req(t.clone());
        r.destination = "19005550199".into();
        assert_eq!(code(&r, o), ErrorCode::DestinationNotAllowed);
        let mut r = req(t.clone());
        r.page_url = "https://shop.example/\r\nX-Evil: 1".into();
        assert_eq!(code(&r, o), ErrorCode::BadField);
        let mut r = req(t.clone());
        r.page_url = format!("https://shop.example/{}", "a".repeat(MAX_URL));
        assert_eq!(code(&r, o), ErrorCode::BadField);
        let mut r = req(t);
        r.session = "a b".into();
        assert_eq!(code(&r, o), ErrorCode::BadField);
    }

    #[test]
    fn context_is_bounded_and_only_opted_in_names_pass() {
        let m = acme();
        let t = token::mint(b"k", "acme", "sales", "s1", 100);
        let o = Some("https://shop.example");
        let mut r = req(t);
        r.context.trail = vec![
            "https://shop.example/a".into(),
            "https://shop.example/b".into(),
        ];
        r.context.cookies.insert("cart".into(), "c-77".into());
        r.context
            .fields
            .insert("email".into(), "ann@example.com".into());
        assert!(m.admit("acme", &r, o, "", 50).is_ok());
        let refused = |f: &dyn Fn(&mut CallRequest)| {
            let mut r2 = r.clone();
            f(&mut r2);
            let (code, msg) = m.admit("acme", &r2, o, "", 50).unwrap_err();
            assert_eq!(code, ErrorCode::BadField);
            msg
        };
        assert!(
            refused(&|r| {
                r.context.cookies.insert("session_token".into(), "x".into());
            })
            .contains("not collected")
        );
        assert!(
            refused(&|r| {
                r.context.fields.insert("password".into(), "x".into());
            })
            .contains("not collected")
        );
        assert!(
            refused(&|r| {
                r.context
                    .cookies
                    .insert("cart".into(), "a".repeat(MAX_COOKIE + 1));
            })
            .contains("printable")
        );
        assert!(
            refused(&|r| {
                r.context
                    .fields
                    .insert("email".into(), "a\r\nX-Evil: 1".into());
            })
            .contains("control")
        );
        assert!(
            refused(&|r| {
                r.context.trail.push("javascript:alert(1)".into());
            })
            .contains("trail")
        );
        assert!(
            refused(&|r| {
                r.context.trail = vec!["https://a.example/".into(); MAX_ITEMS + 1];
            })
            .contains("at most")
        );
    }

    #[test]
    fn webhook_urls_split_and_bad_ones_are_spelled_out() {
        assert_eq!(
            split_url("http://crm.example:8081/hooks/sb?x=1"),
            Some((false, "crm.example".into(), 8081, "/hooks/sb?x=1".into()))
        );
        assert_eq!(
            split_url("https://crm.example/h"),
            Some((true, "crm.example".into(), 443, "/h".into()))
        );
        assert_eq!(
            split_url("https://[::1]/h"),
            Some((true, "::1".into(), 443, "/h".into()))
        );
        assert_eq!(
            split_url("http://10.0.0.5"),
            Some((false, "10.0.0.5".into(), 80, "/".into()))
        );
        assert_eq!(
            split_url("http://[::1]:9000/h"),
            Some((false, "::1".into(), 9000, "/h".into()))
        );
        assert_eq!(split_url("ftp://x/"), None);
        assert_eq!(split_url("http://a b/"), None);
        let mut m = acme();
        m.webhook_url = Some("gopher://crm.example/h".into());
        m.webhook_events = vec!["ringing".into(), "picked-up".into()];
        let p = m.problems("acme");
        assert_eq!(p.len(), 3, "{p:?}"); // not a URL, no secret, unknown event
    }

    #[test]
    fn tokenless_merchants_take_calls_without_a_token_but_still_check_a_given_one() {
        let mut m = acme();
        m.tokenless = true;
        assert!(
            m.admit(
                "acme",
                &req(String::new()),
                Some("https://shop.example"),
                "",
                0
            )
            .is_ok()
        );
        assert!(
            m.admit(
                "acme",
                &req("9.00".into()),
                Some("https://shop.example"),
                "",
                0
            )
            .is_err()
        );
    }

    #[test]
    fn config_problems_are_spelled_out() {
        let mut m = acme();
        m.secret = None;
        m.origins = vec!["https://shop.example/".into()];
        m.destinations = vec!["call-me".into()];
        m.api_keys = vec!["plain-text-key".into()];
        let p = m.problems("acme");
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
