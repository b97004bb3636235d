//! The webhooks observer: call events of a merchant's browser calls become the signed POSTs
//! its CRM asked for (`webhook_events`), in order, off the call path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use switchboard_core::module::{CallEvent, CallObserver, Stamped};
use switchboard_core::{CallRef, Side};

use crate::Merchants;
use crate::webhook::{Event, Hooks, Target};

/// A browser call whose events go to its merchant's webhook.
struct Hooked {
    call_id: String,
    target: Arc<Target>,
    events: Vec<String>,
    body: serde_json::Map<String, serde_json::Value>,
    /// `ringing` went already (a call may ring on several attempts).
    rang: bool,
}

/// Webhooks to merchants' CRMs: ringing, answered, hangup of their browser calls.
pub(crate) struct Webhooks {
    merchants: Arc<dyn Merchants>,
    hooks: Hooks,
    hooked: HashMap<CallRef, Hooked>,
}

impl Webhooks {
    pub(crate) fn new(merchants: Arc<dyn Merchants>, hooks: Hooks) -> Webhooks {
        Webhooks {
            merchants,
            hooks,
            hooked: HashMap::new(),
        }
    }

    /// A browser call started: does its merchant want webhooks? Its facts came with the
    /// call (the browser leg's, checked against the merchant's token).
    fn start(&mut self, call: CallRef, call_id: &str, facts: &BTreeMap<String, String>) {
        let Some(merchant) = facts.get("merchant") else {
            return;
        };
        let Some((target, events)) = self.merchants.webhook(merchant) else {
            return;
        };
        let fact = |k: &str| facts.get(k).map(String::as_str).unwrap_or_default();
        let mut body = serde_json::Map::new();
        for (k, v) in [
            ("call_id", call_id),
            ("merchant", merchant.as_str()),
            ("link", fact("link")),
            ("session", fact("session")),
            ("page_url", fact("page_url")),
        ] {
            body.insert(k.into(), serde_json::json!(v));
        }
        self.hooked.insert(
            call,
            Hooked {
                call_id: call_id.to_owned(),
                target,
                events,
                body,
                rang: false,
            },
        );
    }

    /// Queues a webhook event of a hooked call (`hangup` also ends its queue).
    fn hook(&mut self, call: CallRef, name: &'static str, extra: &[(&str, serde_json::Value)]) {
        let Some(h) = self.hooked.get_mut(&call) else {
            return;
        };
        if name == "ringing" {
            if h.rang {
                return;
            }
            h.rang = true;
        }
        let wanted = h.events.iter().any(|e| e == name);
        let mut body = h.body.clone();
        body.insert("event".into(), serde_json::json!(name));
        body.insert(
            "at".into(),
            serde_json::json!(jiff::Timestamp::now().to_string()),
        );
        for (k, v) in extra {
            body.insert((*k).into(), v.clone());
        }
        self.hooks.send(Event {
            call_id: h.call_id.clone(),
            name,
            body: serde_json::Value::Object(body).to_string(),
            target: h.target.clone(),
            deliver: wanted,
        });
        if name == "hangup" {
            self.hooked.remove(&call);
        }
    }
}

impl CallObserver for Webhooks {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn interest(&self) -> fn(&CallEvent) -> bool {
        |ev| match ev {
            // Only a browser call (facts from its in-process leg) may have a merchant.
            CallEvent::Started { facts, .. } => facts.contains_key("merchant"),
            CallEvent::Ringing { .. }
            | CallEvent::Answered { .. }
            | CallEvent::Leased { .. }
            | CallEvent::Ended(_) => true,
            // What the caller's browser was asked to do (a code, not a dialplan step).
            CallEvent::Action { code, .. } => code.is_some(),
            CallEvent::Chat { .. } => true,
            CallEvent::Bridged { .. } | CallEvent::Digit { .. } | CallEvent::Released { .. } => {
                false
            }
        }
    }

    fn per_call(&self) -> bool {
        true
    }

    fn on_event(&mut self, ev: &Stamped) {
        match &ev.event {
            CallEvent::Started {
                call,
                call_id,
                facts,
                ..
            } => self.start(*call, call_id, facts),
            CallEvent::Ringing { call } => self.hook(*call, "ringing", &[]),
            CallEvent::Answered { call, target, .. } => {
                self.hook(*call, "answered", &[("target", serde_json::json!(target))]);
            }
            CallEvent::Leased { call, item, .. } => {
                if let Some(h) = self.hooked.get_mut(call) {
                    h.body.insert("ani".into(), serde_json::json!(item));
                }
            }
            CallEvent::Ended(summary) => {
                let side = summary.hangup_side.map_or("switch", |s| match s {
                    Side::A => "caller",
                    Side::B => "callee",
                });
                self.hook(
                    summary.id,
                    "hangup",
                    &[
                        ("cause", serde_json::json!(summary.cause.name())),
                        ("hangup_side", serde_json::json!(side)),
                        ("billable_secs", serde_json::json!(summary.billable_secs)),
                    ],
                );
            }
            CallEvent::Action {
                call,
                name,
                result,
                ok,
                code,
                detail,
            } => self.hook(
                *call,
                "action",
                &[
                    ("action", serde_json::json!(name)),
                    ("code", serde_json::json!(code)),
                    ("detail", serde_json::json!(detail)),
                    ("ok", serde_json::json!(ok)),
                    ("result", serde_json::json!(result)),
                ],
            ),
            CallEvent::Chat {
                call,
                from,
                agent,
                text,
            } => self.hook(
                *call,
                "chat",
                &[
                    ("from", serde_json::json!(from)),
                    ("agent", serde_json::json!(agent)),
                    ("text", serde_json::json!(text)),
                ],
            ),
            CallEvent::Bridged { .. } | CallEvent::Digit { .. } | CallEvent::Released { .. } => {}
        }
    }
}
