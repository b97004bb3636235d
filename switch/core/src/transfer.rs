//! Transfers the way call centers make them: a REFER from leg B (RFC 3515, a blind transfer)
//! moves the caller to the Refer-To's number. The number is routed by the dialplan as if the
//! caller had dialled it (in `[sip] transfer_context`, or the call's own context): the
//! Refer-To's host is never called, so a REFER opens no relay. The transferor waits aside,
//! told how it goes by NOTIFY (`message/sipfrag`); the caller's leg never hears of it (its
//! media stays anchored on our ports, the new leg B is offered what the old one was).
//! Answered: the transferor gets `SIP/2.0 200 OK` and its BYE ends only itself (ours after a
//! grace if it sends none). Failed: it gets the failure and the caller is back with it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_dialplan::{Cause, Facts, RoutePlan};
use switchboard_media::{Side, audio};
use switchboard_sip::dialog::Dialog;
use switchboard_sip::transaction::{Peer, TxnId, make_response};
use switchboard_sip::typed::NameAddr;
use switchboard_sip::uri::Uri;
use switchboard_sip::{Method, Name, Request};
use tracing::{debug, info};

use crate::call::{Call, CallState};
use crate::engine::{CallTimer, ClientRole, Engine, dialog_key};
use crate::ids::CallRef;

/// How long a transferor has to hang up after its NOTIFY 200 before we do.
const TRANSFEROR_GRACE: Duration = Duration::from_secs(5);

/// Leg B while it transfers the caller: its dialog, waiting aside.
#[derive(Debug)]
pub(crate) struct Transferor {
    pub dialog: Dialog,
    pub peer: Peer,
    /// What the call held of it, given back if the transfer fails.
    b_ack: Option<Bytes>,
    b_acked: bool,
    winner: Option<usize>,
    st: Option<crate::session_timer::LegTimer>,
    /// The new leg answered: the transferor only waits for its BYE.
    pub answered: bool,
}

/// The number a Refer-To names (its user part, or a `tel:` number), or why it names none.
fn refer_destination(req: &Request) -> Result<String, &'static str> {
    let mut values = req.headers.all(&Name::ReferTo);
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err("Bad Request (a REFER carries exactly one Refer-To)");
    };
    let addr = NameAddr::parse(value, "Refer-To").map_err(|_| "Bad Request (bad Refer-To)")?;
    if let Some(n) = switchboard_sip::uri::tel_number(addr.uri_text) {
        return Ok(n);
    }
    let uri = Uri::parse(addr.uri_text).map_err(|_| "Bad Request (bad Refer-To URI)")?;
    if uri
        .headers
        .is_some_and(|h| h.to_ascii_lowercase().contains("replaces="))
    {
        return Err("Not Implemented (attended transfer by REFER with Replaces)");
    }
    uri.user_unescaped()
        .filter(|u| !u.is_empty())
        .ok_or("Bad Request (the Refer-To names no number)")
}

impl Engine {
    /// A REFER from leg B: accepted (202) and routed, or refused. `true` when the plan
    /// should run (the transfer's bridge).
    pub(crate) fn on_refer(
        &mut self,
        now: Instant,
        wall: jiff::Timestamp,
        call: &mut Call,
        id: TxnId,
        req: &Request,
    ) -> bool {
        if call.state != CallState::Up
            || call.transfer.is_some()
            || call.reinvite_from.is_some()
            || !call.relayed.is_empty()
        {
            // One change at a time (RFC 3261 §14.2's rule, applied to transfers).
            self.respond(now, id, 491, None);
            return false;
        }
        let destination = match refer_destination(req) {
            Ok(d) => d,
            Err(why) => {
                debug!(%why, "REFER refused");
                self.respond_with_reason(now, id, why);
                return false;
            }
        };
        let (Some(dialog), Some(peer)) = (call.b_dialog.take(), call.b_peer.take()) else {
            self.respond(now, id, 481, None);
            return false;
        };
        let context = self
            .cfg
            .transfer_context
            .clone()
            .unwrap_or_else(|| call.context.to_string());
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("source_ip".to_owned(), peer.addr.ip().to_string());
        vars.insert("transfer".to_owned(), "true".to_owned());
        let facts = Facts {
            context,
            destination: destination.clone(),
            caller_number: call.caller.clone(),
            caller_name: String::new(),
            headers: req
                .headers
                .0
                .iter()
                .map(|h| (h.name.as_str().to_owned(), h.value.to_string()))
                .collect(),
            vars,
            now: wall,
        };
        let plan = self.dialplan.evaluate(&facts);
        for line in &plan.trace {
            debug!("dialplan (transfer): {line}");
        }
        info!(%destination, context = %facts.context, "REFER from leg B: transferring the caller");
        self.respond(now, id, 202, None);
        call.transfer = Some(Box::new(Transferor {
            dialog,
            peer,
            b_ack: call.b_ack.take(),
            b_acked: std::mem::take(&mut call.b_acked),
            winner: call.winner.take(),
            st: call.st[1].take(),
            answered: false,
        }));
        self.notify_transferor(now, call, 100, "Trying", false);
        call.plan = RoutePlan {
            actions: plan.actions,
            ..Default::default()
        };
        call.plan_cursor = 0;
        call.bridge = None;
        call.next_target = 0;
        call.last_failure = None;
        // The new leg is offered what the old one was (our B-side port, A's codecs and what
        // we transcode to) and A keeps its codec: the caller's leg needs no re-INVITE.
        call.offer_b = call.m.sent[1].clone();
        let a_formats = call.m.sent[0]
            .as_ref()
            .and_then(|b| audio(b).ok())
            .map(|i| (i.formats, i.ptime));
        call.m.pending = a_formats.map(|(f, ptime)| Box::new((Side::A, f, ptime)));
        call.m.answered = call.m.fmt[0].clone();
        call.m.offer_body = None;
        call.destination = destination;
        true
    }

    /// A NOTIFY of the transfer's progress to the transferor (RFC 3515 §2.4.5).
    pub(crate) fn notify_transferor(
        &mut self,
        now: Instant,
        call: &mut Call,
        status: u16,
        reason: &str,
        last: bool,
    ) {
        let Some(t) = call.transfer.as_mut() else {
            return;
        };
        if t.answered {
            return;
        }
        let mut req = t.dialog.make_request(Method::Notify, None);
        req.headers.push(Name::Event, "refer");
        req.headers.push(
            Name::Other("Subscription-State".into()),
            if last {
                "terminated;reason=noresource"
            } else {
                "active;expires=60"
            },
        );
        req.headers
            .push(Name::ContentType, "message/sipfrag;version=2.0");
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        req.body = Bytes::from(format!("SIP/2.0 {status} {reason}\r\n"));
        let peer = t.peer;
        self.send_in_dialog(now, req, peer, ClientRole::Info, None);
    }

    /// The transfer's target answered (and is leg B now).
    pub(crate) fn transfer_answered(&mut self, now: Instant, call: &mut Call) {
        info!("transfer complete: the caller is with the new leg B");
        self.notify_transferor(now, call, 200, "OK", true);
        if let Some(t) = call.transfer.as_mut() {
            t.answered = true;
        }
        self.schedule(now + TRANSFEROR_GRACE, call.id, CallTimer::TransferorBye);
    }

    /// No target of the transfer answered: the transferor hears why and has the caller back.
    pub(crate) fn transfer_failed(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        status: u16,
        cause: Cause,
    ) {
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return;
        };
        let reason = switchboard_sip::reason_phrase(status);
        self.notify_transferor(now, &mut call, status, reason, true);
        let Some(t) = call.transfer.take() else {
            self.calls.insert(call_ref, call);
            return;
        };
        info!(status, cause = %cause, "transfer failed: the caller stays with leg B");
        call.b_dialog = Some(t.dialog);
        call.b_peer = Some(t.peer);
        call.b_ack = t.b_ack;
        call.b_acked = t.b_acked;
        call.winner = t.winner;
        call.st[1] = t.st;
        call.plan.actions = Vec::new();
        call.plan_cursor = 0;
        call.offer_b = None;
        call.m.pending = None;
        call.last_failure = None;
        self.calls.insert(call_ref, call);
    }

    /// A request on the transferor's dialog: its BYE ends it alone.
    pub(crate) fn on_transferor_request(
        &mut self,
        now: Instant,
        call: &mut Call,
        id: TxnId,
        req: &Request,
    ) {
        let Some(t) = call.transfer.as_mut() else {
            return;
        };
        if !t.dialog.accept_remote_cseq(req) {
            self.respond(now, id, 500, None);
            return;
        }
        match req.method {
            Method::Bye => {
                self.respond(now, id, 200, None);
                info!("the transferor hung up");
                self.dialogs
                    .remove(&dialog_key(&self.dialog_keys, &t.dialog.id));
                // Blind: a transfer under way goes on without it; if it fails, nobody is
                // left for the caller and the call ends, as a failed bridge after the plan
                // answered does.
                call.transfer = None;
            }
            Method::Invite | Method::Update => self.respond(now, id, 491, None),
            Method::Info | Method::Notify => self.respond(now, id, 200, None),
            _ => self.respond(now, id, 481, None),
        }
    }

    /// Hangs up the transferor if it is still on the line.
    pub(crate) fn hang_up_transferor(
        &mut self,
        now: Instant,
        call: &mut Call,
        cause: Option<Cause>,
    ) {
        let Some(mut t) = call.transfer.take() else {
            return;
        };
        self.dialogs
            .remove(&dialog_key(&self.dialog_keys, &t.dialog.id));
        let bye = t.dialog.make_request(Method::Bye, None);
        self.send_in_dialog(now, bye, t.peer, ClientRole::Bye, cause);
    }

    /// A response with a reason phrase of ours (`Bad Request (why)`).
    fn respond_with_reason(&mut self, now: Instant, id: TxnId, reason: &str) {
        let status = if reason.starts_with("Not Implemented") {
            501
        } else {
            400
        };
        self.respond_with(now, id, status, None, |r| r.reason = reason.into());
    }
}

/// A `Replaces` header (RFC 3891 §6.1): the dialog's Call-ID, its tags, `early-only`.
struct Replaces<'a> {
    call_id: &'a str,
    to_tag: &'a str,
    from_tag: &'a str,
    early_only: bool,
}

fn parse_replaces(v: &str) -> Option<Replaces<'_>> {
    let mut parts = v.split(';').map(str::trim);
    let call_id = parts.next().filter(|c| !c.is_empty())?;
    let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
    for p in parts {
        match p.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some((k, v)) if k.eq_ignore_ascii_case("to-tag") => to_tag = Some(v),
            Some((k, v)) if k.eq_ignore_ascii_case("from-tag") => from_tag = Some(v),
            None if p.eq_ignore_ascii_case("early-only") => early_only = true,
            _ => {}
        }
    }
    Some(Replaces {
        call_id,
        to_tag: to_tag?,
        from_tag: from_tag?,
        early_only,
    })
}

impl Engine {
    /// An INVITE with `Replaces` (RFC 3891, attended transfer): it takes the place of the
    /// call center's leg it names — answered here, the old leg hung up, the caller's leg
    /// unaware. `false` when the INVITE has no Replaces (a new call).
    pub(crate) fn on_replaces(
        &mut self,
        now: Instant,
        id: TxnId,
        req: &Request,
        from: Peer,
    ) -> bool {
        let mut values = req
            .headers
            .0
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case("Replaces"));
        let Some(first) = values.next() else {
            return false;
        };
        if values.next().is_some() || first.value.contains(',') {
            self.respond_with_reason(now, id, "Bad Request (more than one Replaces)");
            return true;
        }
        let Some(r) = parse_replaces(&first.value) else {
            self.respond_with_reason(now, id, "Bad Request (bad Replaces)");
            return true;
        };
        if self.trust(from) == crate::engine::Trust::Untrusted {
            // Taking over a call is for the call center's own phones, never the internet's.
            debug!(source = %from.addr, "Replaces from an untrusted source: 403");
            self.respond(now, id, 403, None);
            return true;
        }
        let found = self.dialog_of(r.call_id, r.to_tag).filter(|(call, side)| {
            self.calls.get(call).is_some_and(|c| {
                let d = match side {
                    Side::A => c.a.dialog.as_ref(),
                    Side::B => c.b_dialog.as_ref(),
                };
                d.is_some_and(|d| d.id.remote_tag == r.from_tag)
            })
        });
        let Some((call_ref, side)) = found else {
            debug!(call_id = r.call_id, "Replaces names no dialog of ours: 481");
            self.respond(now, id, 481, None);
            return true;
        };
        let _span = self.enter(call_ref);
        let Some(mut call) = self.calls.remove(&call_ref) else {
            self.respond(now, id, 481, None);
            return true;
        };
        let status = if r.early_only {
            // §6.1: the dialog is confirmed, and only an early one was to be replaced.
            Some(486)
        } else if side == Side::A {
            // The caller's leg (a browser, an in-process leg) is not one a phone can take.
            Some(403)
        } else if call.state != CallState::Up
            || call.transfer.is_some()
            || call.reinvite_from.is_some()
        {
            Some(491)
        } else {
            None
        };
        let tag = self.ids.tag();
        let dialog = Dialog::new_uas(req, &tag).ok();
        let answer = if status.is_none() && crate::indialog::is_sdp(&req.headers) {
            self.local_answer(&mut call, Side::B, &req.body)
        } else {
            None
        };
        let (status, dialog, answer) = match (status, dialog, answer) {
            (Some(s), _, _) => {
                self.calls.insert(call_ref, call);
                self.respond(now, id, s, None);
                return true;
            }
            (None, None, _) => {
                self.calls.insert(call_ref, call);
                self.respond_with_reason(now, id, "Bad Request (no usable Contact)");
                return true;
            }
            // An INVITE that replaces a leg brings its offer (we have nothing to offer it
            // that its answer could not change under the caller).
            (None, Some(_), None) => {
                self.calls.insert(call_ref, call);
                self.respond(now, id, 488, None);
                return true;
            }
            (None, Some(d), Some(a)) => (200, d, a),
        };
        let mut resp = make_response(req, status, Some(&tag));
        resp.headers
            .push(Name::Contact, self.contact(from.transport));
        self.decorate(&mut resp);
        resp.headers.push(Name::ContentType, "application/sdp");
        resp.body = answer;
        self.txn.respond(now, id, resp);
        info!(b_call_id = %dialog.id.call_id, "INVITE with Replaces: it takes leg B's place");
        if let (Some(mut old), Some(peer)) = (call.b_dialog.take(), call.b_peer.take()) {
            self.dialogs.remove(&dialog_key(&self.dialog_keys, &old.id));
            let bye = old.make_request(Method::Bye, None);
            self.send_in_dialog(now, bye, peer, ClientRole::Bye, None);
        }
        self.dialogs.insert(
            dialog_key(&self.dialog_keys, &dialog.id),
            (call_ref, Side::B),
        );
        self.event(crate::module::CallEvent::Bridged {
            call: call_ref,
            b_call_id: dialog.id.call_id.to_string(),
            target: req
                .headers
                .from_addr()
                .map(|f| f.uri_text.to_owned())
                .unwrap_or_default(),
        });
        call.b_dialog = Some(dialog);
        call.b_peer = Some(from);
        call.st[1] = None;
        self.calls.insert(call_ref, call);
        true
    }
}
