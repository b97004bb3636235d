//! The digit decision point and the leg apps of a call: every digit of a leg — RFC 4733
//! events and in-band tones the media session terminated, SIP INFO the engine answered —
//! comes here before anything reaches the other leg.
//!
//! A leg without apps keeps the fast path: the media session regenerates its digits on the
//! other leg itself. A leg with apps is *gated*: its media session forwards none of its
//! digits (and mutes their in-band tones), and the engine sends on only what the apps let
//! through, in order, with the durations they had.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use switchboard_media::{DigitEvent, DtmfMethod, Side};
use switchboard_sip::{Method, Name, Response};
use tracing::{debug, info};

use crate::call::Call;
use crate::engine::{CallTimer, ClientRole, Engine, Output};
use crate::module::{AppAction, CallEvent, Digit, DigitVerdict, LegApp, LegReply};

/// Every digit: what a gated leg's media session is told to keep from the other leg.
pub(crate) const ALL_DIGITS: &str = "0123456789*#ABCD";

/// An app on a leg, with the digits it holds.
#[derive(Debug)]
pub(crate) struct Attached {
    pub side: Side,
    pub app: Box<dyn LegApp>,
    pub held: VecDeque<Digit>,
}

impl Attached {
    pub fn new(side: Side, app: Box<dyn LegApp>) -> Attached {
        Attached {
            side,
            app,
            held: VecDeque::new(),
        }
    }
}

impl Call {
    /// The leg has apps: its digits go through the engine.
    pub(crate) fn gated(&self, side: Side) -> bool {
        self.apps.iter().any(|a| a.side == side)
    }

    /// When the earliest app timer is due.
    fn apps_timeout(&self) -> Option<Instant> {
        self.apps.iter().filter_map(|a| a.app.poll_timeout()).min()
    }
}

impl Engine {
    /// A digit arrived on `from` (any form). `true` when it goes on to the other leg (the
    /// caller of this sends it there, in the form that leg takes).
    pub(crate) fn digit_decision(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        digit: Digit,
    ) -> bool {
        let event = DigitEvent {
            leg: from,
            digit: digit.digit,
            duration_ms: digit.duration_ms,
            method: digit.method,
            suppressed: false,
        };
        let forward = self.run_chain(now, call, from, 0, digit).is_some();
        info!(?from, digit = %event.digit, ms = event.duration_ms, method = %event.method, forwarded = forward, "digit");
        self.event(CallEvent::Digit {
            call: call.id,
            event: DigitEvent {
                suppressed: !forward,
                ..event
            },
        });
        self.schedule_apps(call);
        forward
    }

    /// Passes a digit to the apps of `from` from the `start`-th on; the digit if all of them
    /// forward it.
    fn run_chain(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        start: usize,
        digit: Digit,
    ) -> Option<Digit> {
        for i in start..call.apps.len() {
            if call.apps[i].side != from {
                continue;
            }
            let verdict = call.apps[i].app.on_digit(now, &digit);
            // What the app asked for first: a release of held digits precedes this one.
            self.drain_app(now, call, i);
            match verdict {
                DigitVerdict::Forward => {}
                DigitVerdict::Swallow => {
                    debug!(app = call.apps[i].app.name(), digit = %digit.digit, "digit swallowed");
                    return None;
                }
                DigitVerdict::Hold => {
                    debug!(app = call.apps[i].app.name(), digit = %digit.digit, "digit held");
                    call.apps[i].held.push_back(digit);
                    return None;
                }
            }
        }
        Some(digit)
    }

    /// Carries out what the `i`-th app asks.
    fn drain_app(&mut self, now: Instant, call: &mut Call, i: usize) {
        while let Some(action) = call.apps.get_mut(i).and_then(|a| a.app.poll_action()) {
            let side = call.apps[i].side;
            match action {
                // All of them, or the oldest n: released in order down the rest of the chain.
                AppAction::ReleaseHeld | AppAction::ReleaseFirst(_) => {
                    let held = &mut call.apps[i].held;
                    let n = match action {
                        AppAction::ReleaseFirst(n) => n.min(held.len()),
                        _ => held.len(),
                    };
                    let first: Vec<Digit> = held.drain(..n).collect();
                    for d in first {
                        if let Some(d) = self.run_chain(now, call, side, i + 1, d) {
                            self.forward_digit(now, call, side, &d);
                        }
                    }
                }
                AppAction::DropHeld => call.apps[i].held.clear(),
                AppAction::DropFirst(n) => {
                    let n = n.min(call.apps[i].held.len());
                    call.apps[i].held.drain(..n);
                }
                AppAction::SendToLeg {
                    side: to,
                    content_type,
                    body,
                    tag,
                } => {
                    let role = match tag {
                        Some(tag) => ClientRole::AppMessage {
                            call: call.id,
                            app: i,
                            tag,
                        },
                        None => ClientRole::Info,
                    };
                    if !self.send_info(now, call, to, &content_type, Bytes::from(body), role)
                        && let Some(tag) = tag
                    {
                        let reply = LegReply {
                            status: 481,
                            reason: "that leg is not connected".into(),
                            body: Vec::new(),
                        };
                        call.apps[i].app.on_reply(now, tag, &reply);
                    }
                }
                AppAction::Play { side: to, what } => {
                    self.outputs.push_back(Output::MediaStop {
                        call: call.id,
                        side: to,
                    });
                    let id = call.next_play;
                    call.next_play += 1;
                    self.outputs.push_back(Output::MediaPlay {
                        call: call.id,
                        side: to,
                        what,
                        id,
                    });
                }
                AppAction::Report(r) => {
                    info!(app = call.apps[i].app.name(), action = %r.name, code = r.code.as_deref().unwrap_or(""), ok = r.ok, result = %r.result, "leg app");
                    self.event(CallEvent::Action {
                        call: call.id,
                        name: r.name,
                        result: r.result,
                        ok: r.ok,
                        code: r.code,
                        detail: r.detail,
                    });
                }
            }
        }
    }

    /// Sends a digit that passed the decision point to the leg after `from`.
    pub(crate) fn forward_digit(&mut self, now: Instant, call: &mut Call, from: Side, d: &Digit) {
        let to = from.other();
        match call.m.legs[crate::media::idx(to)].as_ref().map(|l| l.dtmf) {
            Some(DtmfMethod::Info) => self.send_info_digit(now, call, to, d.digit, d.duration_ms),
            Some(_) => self.outputs.push_back(Output::MediaDigit {
                call: call.id,
                side: to,
                digit: d.digit,
                ms: d.duration_ms,
            }),
            // Not bridged yet: there is no other leg to hear it.
            None => {}
        }
    }

    /// An in-dialog INFO to a leg; `false` when there is no dialog with it (yet).
    pub(crate) fn send_info(
        &mut self,
        now: Instant,
        call: &mut Call,
        to: Side,
        content_type: &str,
        body: Bytes,
        role: ClientRole,
    ) -> bool {
        let (dialog, peer) = match to {
            Side::A => (call.a.dialog.as_mut(), Some(call.a.peer)),
            Side::B => (call.b_dialog.as_mut(), call.b_peer),
        };
        let (Some(d), Some(peer)) = (dialog, peer) else {
            debug!(?to, "no dialog with that leg yet: message dropped");
            return false;
        };
        let mut req = d.make_request(Method::Info, None);
        req.headers.push(Name::ContentType, content_type.to_owned());
        req.body = body;
        self.send_in_dialog(now, req, peer, role, None);
        true
    }

    /// The call whose leg A or leg B has this Call-ID.
    pub fn find_call(&self, call_id: &str) -> Option<crate::CallRef> {
        self.calls
            .values()
            .find(|c| {
                c.a.invite.headers.call_id().is_some_and(|id| id == call_id)
                    || c.winner
                        .and_then(|i| c.attempts.get(i))
                        .is_some_and(|a| a.call_id == call_id)
            })
            .map(|c| c.id)
    }

    /// A chat message of the call's room (the agent console), for its record and observers.
    /// `false`: no such call.
    pub fn chat(
        &mut self,
        call: crate::CallRef,
        from: &'static str,
        agent: Option<String>,
        text: String,
    ) -> bool {
        if !self.calls.contains_key(&call) {
            return false;
        }
        self.event(CallEvent::Chat {
            call,
            from,
            agent,
            text,
        });
        true
    }

    /// A fact an in-process caller (the browser leg) gave about itself (`merchant`): its
    /// `X-SB-*` header, as the dialplan saw it.
    pub fn call_fact(&self, call: crate::CallRef, name: &str) -> Option<&str> {
        self.calls
            .get(&call)?
            .local
            .as_ref()?
            .get(name)
            .map(String::as_str)
    }

    /// Sends a leg of a call an in-dialog INFO from outside the call (an action from the CRM
    /// API); its answer comes back as [`Output::LegReply`] with `token`, and observers get it
    /// as an action named `name`. `false`: no such call, or no dialog with that leg yet.
    #[allow(clippy::too_many_arguments)]
    pub fn message_leg(
        &mut self,
        now: Instant,
        call_ref: crate::CallRef,
        side: Side,
        content_type: &str,
        body: String,
        token: u64,
        name: &'static str,
    ) -> bool {
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return false;
        };
        let role = ClientRole::External {
            call: call_ref,
            token,
            name,
        };
        let sent = self.send_info(now, &mut call, side, content_type, Bytes::from(body), role);
        self.calls.insert(call_ref, call);
        sent
    }

    pub(crate) fn on_external_reply(
        &mut self,
        call: crate::CallRef,
        token: u64,
        name: &'static str,
        resp: Option<&Response>,
    ) {
        let reply = leg_reply(resp);
        let ok = (200..300).contains(&reply.status);
        self.event(CallEvent::Action {
            call,
            name: name.to_owned(),
            result: if ok {
                "ok".into()
            } else {
                reply.reason.clone()
            },
            ok,
            code: None,
            detail: json_detail(&reply.body),
        });
        self.outputs.push_back(Output::LegReply { token, reply });
    }

    /// The answer to an app's message (`None`: none came, Timer F).
    pub(crate) fn on_app_reply(
        &mut self,
        now: Instant,
        call_ref: crate::CallRef,
        app: usize,
        tag: u64,
        resp: Option<&Response>,
    ) {
        let reply = leg_reply(resp);
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return;
        };
        if let Some(a) = call.apps.get_mut(app) {
            a.app.on_reply(now, tag, &reply);
            self.drain_app(now, &mut call, app);
            self.schedule_apps(&mut call);
        }
        self.calls.insert(call_ref, call);
    }

    /// Attaches an app to a leg (a module action did); a leg that becomes gated tells its
    /// media session.
    pub(crate) fn attach_app(&mut self, call: &mut Call, side: Side, app: Box<dyn LegApp>) {
        let was_gated = call.gated(side);
        debug!(?side, app = app.name(), "leg app attached");
        call.apps.push(Attached::new(side, app));
        if !was_gated && let Some(mut media) = call.m.legs[crate::media::idx(side)].clone() {
            media.suppress = ALL_DIGITS.into();
            if media.dtmf == DtmfMethod::Inband {
                media.inband_delay_ms = self.cfg.inband_delay_ms;
            }
            call.m.legs[crate::media::idx(side)] = Some(media.clone());
            self.outputs.push_back(Output::MediaLeg {
                call: call.id,
                side,
                media: *media,
            });
        }
        self.schedule_apps(call);
    }

    /// Leg app timers are due.
    pub(crate) fn apps_timer(&mut self, now: Instant, call: &mut Call) {
        call.app_timer = None;
        for i in 0..call.apps.len() {
            if call.apps[i].app.poll_timeout().is_some_and(|t| t <= now) {
                call.apps[i].app.handle_timeout(now);
            }
            self.drain_app(now, call, i);
        }
        self.schedule_apps(call);
    }

    /// Keeps one engine timer at the earliest app timer.
    fn schedule_apps(&mut self, call: &mut Call) {
        let Some(at) = call.apps_timeout() else {
            return;
        };
        if call.app_timer.is_none_or(|t| at < t) {
            call.app_timer = Some(at);
            self.schedule(at, call.id, CallTimer::App);
        }
    }
}

/// The text of a `Warning` header (`399 host "text"`, RFC 3261 §20.43).
fn warning_text(v: &str) -> Option<String> {
    let start = v.find('"')?;
    let end = v.rfind('"')?;
    (end > start).then(|| v[start + 1..end].replace("\\\"", "\""))
}

/// A leg's answer as an app or the API gets it (`None`: none came).
fn leg_reply(resp: Option<&Response>) -> LegReply {
    match resp {
        Some(r) => LegReply {
            status: r.status,
            reason: r
                .headers
                .get_other("Warning")
                .and_then(|w| warning_text(w))
                .unwrap_or_else(|| r.reason.to_string()),
            body: r.body.to_vec(),
        },
        None => LegReply {
            status: 408,
            reason: "no answer from that leg".into(),
            body: Vec::new(),
        },
    }
}

/// `"detail"` of a browser leg's JSON answer (`{"ok":true,"detail":"Volume 80 %"}`), read
/// without a JSON parser (the core has none; the browser leg writes it in this one form).
fn json_detail(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let rest = &s[s.find("\"detail\":\"")? + 10..];
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_and_a_detail_are_read_back() {
        assert_eq!(
            warning_text("399 switchboard \"not on the origins\"").as_deref(),
            Some("not on the origins")
        );
        assert_eq!(
            json_detail(br#"{"ok":true,"detail":"say \"hi\" 80 %"}"#).as_deref(),
            Some("say \"hi\" 80 %")
        );
        assert_eq!(json_detail(br#"{"ok":true}"#), None);
        assert_eq!(json_detail(br#"{"detail":"cut"#), None);
    }
}
