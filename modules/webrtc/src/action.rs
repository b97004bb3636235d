//! Actions in the caller's browser (SPEC §3): what a leg app (the DTMF interpreter) asks of
//! the page, checked against the merchant's configuration before the page sees it.
//!
//! The request arrives as an in-dialog INFO of type
//! [`BROWSER_ACTION`](switchboard_core::module::BROWSER_ACTION):
//! `{"action":"push_page","page":"checkout","code":"*76"}`. A page name becomes the URL of
//! the merchant's `pages` table (a path is on the site of the caller's page); a bare
//! `push_page` fills the merchant's `page_template`
//! (`{code}`, `{session}`, `{link}`), so the merchant's own server maps codes. Pushed URLs stay
//! on the merchant's `origins`; an action the merchant turned off (`actions_off`) is refused.

use serde::Serialize;

use crate::leg::WebFacts;
use crate::merchant::MerchantConfig;

/// Actions a browser carries out.
pub const ACTIONS: [&str; 5] = [
    "push_page",
    "volume",
    "mic_gain",
    "echo_cancellation",
    "echo_suppression",
];

/// Levels (volume, microphone gain) the page keeps within, percent.
pub const LEVEL_MAX: i64 = 200;

/// What the page is asked to do (the `action` message, without its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PageAction {
    /// `push_page`, `volume`, `mic_gain`, `echo_cancellation`, `echo_suppression`.
    pub action: String,
    /// The code the agent keyed, if digits asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `push_page`: where to go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `push_page`: the page's name in the merchant's table (for the panel's words).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Levels: percentage points up or down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// Levels: this level, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<i64>,
    /// Echo controls: on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
}

/// Why an action does not reach the page (the INFO's answer: 403 with these words).
pub type Refused = String;

/// Checks a leg app's request for this call's merchant; the action for the page.
pub fn resolve(m: &MerchantConfig, facts: &WebFacts, body: &[u8]) -> Result<PageAction, Refused> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not an action: {e}"))?;
    let name = v
        .get("action")
        .and_then(|a| a.as_str())
        .ok_or("not an action: no \"action\"")?;
    if !ACTIONS.contains(&name) {
        return Err(format!("unknown action {name:?}"));
    }
    if m.actions_off.iter().any(|a| a == name) {
        return Err(format!(
            "{name} is turned off for merchant {}",
            facts.merchant
        ));
    }
    let code = v.get("code").and_then(|c| c.as_str()).map(str::to_owned);
    let mut out = PageAction {
        action: name.to_owned(),
        code: code.clone(),
        url: None,
        page: None,
        step: None,
        set: None,
        on: None,
    };
    match name {
        "push_page" => {
            let page = v.get("page").and_then(|p| p.as_str());
            let url = match page {
                Some(p) => m.pages.get(p).cloned().ok_or_else(|| {
                    format!("merchant {} has no page named {p:?}", facts.merchant)
                })?,
                None => {
                    let t = m.page_template.as_deref().ok_or_else(|| {
                        format!(
                            "merchant {} has no page_template for a code without a page name",
                            facts.merchant
                        )
                    })?;
                    fill(t, code.as_deref().unwrap_or(""), facts)
                }
            };
            // A path is a page of the site the caller is on.
            let url = match url.strip_prefix('/') {
                Some(_) if !url.starts_with("//") => {
                    let base = origin_of(&facts.page_url)
                        .filter(|o| m.origins.iter().any(|a| a == o))
                        .ok_or("the caller's page is not on the merchant's origins")?;
                    format!("{base}{url}")
                }
                _ => url,
            };
            if !on_origins(&url, &m.origins) {
                return Err(format!("{url} is not on the merchant's origins"));
            }
            out.url = Some(url);
            out.page = page.map(str::to_owned);
        }
        "volume" | "mic_gain" => {
            let step = v.get("step").and_then(serde_json::Value::as_i64);
            let set = v.get("set").and_then(serde_json::Value::as_i64);
            match (step, set) {
                (Some(s), None) if s != 0 && s.abs() <= LEVEL_MAX => out.step = Some(s),
                (None, Some(s)) if (0..=LEVEL_MAX).contains(&s) => out.set = Some(s),
                _ => {
                    return Err(format!(
                        "{name} needs a step or a level of 0 to {LEVEL_MAX} %"
                    ));
                }
            }
        }
        _ => {
            out.on = Some(
                v.get("on")
                    .and_then(serde_json::Value::as_bool)
                    .ok_or_else(|| format!("{name} needs on: true or false"))?,
            );
        }
    }
    Ok(out)
}

/// `page_template` with `{code}`, `{session}` and `{link}` filled in, percent-encoded.
pub fn fill(template: &str, code: &str, facts: &WebFacts) -> String {
    template
        .replace("{code}", &encode(code))
        .replace("{session}", &encode(&facts.session))
        .replace("{link}", &encode(&facts.link))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host[:port]` of an http(s) URL.
pub fn origin_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    if host.is_empty() || host.contains('@') {
        return None;
    }
    Some(&url[..url.len() - rest.len() + end])
}

/// The URL's origin is one of `origins` (exactly).
pub fn on_origins(url: &str, origins: &[String]) -> bool {
    url.bytes().all(|b| (0x21..0x7f).contains(&b))
        && origin_of(url).is_some_and(|o| origins.iter().any(|a| a == o))
}

/// What is wrong with a merchant's `pages`, `page_template` and `actions_off` (at load).
pub fn problems(m: &MerchantConfig, id: &str) -> Vec<String> {
    let mut p = Vec::new();
    for (name, url) in &m.pages {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            p.push(format!(
                "merchant {id}: page name {name:?}: use letters, digits, - or _"
            ));
        }
        let path = url.starts_with('/')
            && !url.starts_with("//")
            && url.bytes().all(|b| (0x21..0x7f).contains(&b));
        if !path && !on_origins(url, &m.origins) {
            p.push(format!(
                "merchant {id}: page {name} = {url:?} is neither a path (\"/checkout\") nor a URL on the merchant's origins ({})",
                m.origins.join(", ")
            ));
        }
    }
    if let Some(t) = &m.page_template {
        let probe = WebFacts {
            session: "s".into(),
            link: "l".into(),
            ..WebFacts::default()
        };
        if !on_origins(&fill(t, "1", &probe), &m.origins) {
            p.push(format!(
                "merchant {id}: page_template {t:?} is not an http(s) URL on the merchant's origins ({})",
                m.origins.join(", ")
            ));
        }
    }
    for a in &m.actions_off {
        if !ACTIONS.contains(&a.as_str()) {
            p.push(format!(
                "merchant {id}: actions_off: unknown action {a:?} (known: {})",
                ACTIONS.join(", ")
            ));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant() -> MerchantConfig {
        let mut m: MerchantConfig = toml::from_str(
            r#"
            origins = ["https://shop.example"]
            links = ["sales"]
            tokenless = true
            page_template = "https://shop.example/agent?code={code}&s={session}"
            actions_off = ["echo_suppression"]
            [pages]
            checkout = "https://shop.example/checkout"
            "#,
        )
        .unwrap();
        m.pages
            .insert("evil".into(), "https://evil.example/".into());
        m
    }

    fn facts() -> WebFacts {
        WebFacts {
            merchant: "acme".into(),
            link: "sales".into(),
            session: "cart 42".into(),
            ..WebFacts::default()
        }
    }

    #[test]
    fn a_page_name_becomes_the_merchants_url() {
        let a = resolve(
            &merchant(),
            &facts(),
            br#"{"action":"push_page","page":"checkout","code":"*76"}"#,
        )
        .unwrap();
        assert_eq!(a.url.as_deref(), Some("https://shop.example/checkout"));
        assert_eq!(a.page.as_deref(), Some("checkout"));
        let j = serde_json::to_value(&a).unwrap();
        assert_eq!(j["action"], "push_page");
        assert_eq!(j["code"], "*76");
        assert!(j.get("step").is_none());
    }

    #[test]
    fn a_path_is_a_page_of_the_callers_site() {
        let mut m = merchant();
        m.origins.push("http://localhost:8080".into());
        m.pages.insert("cart".into(), "/cart?x=1".into());
        let mut f = facts();
        f.page_url = "http://localhost:8080/demo/shop".into();
        let a = resolve(&m, &f, br#"{"action":"push_page","page":"cart"}"#).unwrap();
        assert_eq!(a.url.as_deref(), Some("http://localhost:8080/cart?x=1"));
        // A caller whose page claims another site gets nothing.
        f.page_url = "https://evil.example/".into();
        let e = resolve(&m, &f, br#"{"action":"push_page","page":"cart"}"#).unwrap_err();
        assert!(e.contains("not on the merchant's origins"), "{e}");
        m.pages.insert("net".into(), "//evil.example/".into());
        assert!(problems(&m, "acme").iter().any(|p| p.contains("page net")));
    }

    #[test]
    fn a_bare_push_fills_the_template() {
        let a = resolve(
            &merchant(),
            &facts(),
            br#"{"action":"push_page","page":null,"code":"*7#"}"#,
        )
        .unwrap();
        assert_eq!(
            a.url.as_deref(),
            Some("https://shop.example/agent?code=%2A7%23&s=cart%2042")
        );
    }

    #[test]
    fn off_origins_unknown_pages_and_turned_off_actions_are_refused() {
        let m = merchant();
        for (body, want) in [
            (
                &br#"{"action":"push_page","page":"evil"}"#[..],
                "is not on the merchant's origins",
            ),
            (
                br#"{"action":"push_page","page":"cart"}"#,
                "no page named \"cart\"",
            ),
            (br#"{"action":"echo_suppression","on":true}"#, "turned off"),
            (br#"{"action":"volume","step":500}"#, "needs a step"),
            (br#"{"action":"format_disk"}"#, "unknown action"),
            (b"nope", "not an action"),
        ] {
            let e = resolve(&m, &facts(), body).unwrap_err();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(body));
        }
        let a = resolve(&m, &facts(), br#"{"action":"volume","step":-20}"#).unwrap();
        assert_eq!(a.step, Some(-20));
        let a = resolve(
            &m,
            &facts(),
            br#"{"action":"echo_cancellation","on":false}"#,
        )
        .unwrap();
        assert_eq!(a.on, Some(false));
    }

    #[test]
    fn origins_are_compared_exactly() {
        let o = vec!["https://shop.example".to_string()];
        assert!(on_origins("https://shop.example/a?b#c", &o));
        assert!(on_origins("https://shop.example", &o));
        assert!(!on_origins("https://shop.example.evil.example/", &o));
        assert!(!on_origins("https://shop.example:8443/", &o));
        assert!(!on_origins("http://shop.example/", &o));
        assert!(!on_origins("https://user@shop.example/", &o));
        assert!(!on_origins("javascript:alert(1)", &o));
        assert!(!on_origins("https://shop.example/ x", &o));
    }

    #[test]
    fn config_problems_are_said_at_load() {
        let p = problems(&merchant(), "acme");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("page evil"), "{p:?}");
        let mut m = merchant();
        m.pages.clear();
        m.page_template = Some("https://other.example/?c={code}".into());
        m.actions_off = vec!["volum".into()];
        let p = problems(&m, "acme");
        assert!(p.iter().any(|e| e.contains("page_template")), "{p:?}");
        assert!(
            p.iter().any(|e| e.contains("unknown action \"volum\"")),
            "{p:?}"
        );
    }
}
