//! Requests inside a call's dialogs: BYE ends the call, re-INVITE/UPDATE/INFO/... are relayed
//! to the other leg (SDP re-anchored), ACKs travel end to end, responses come back.

use std::time::Instant;

use bytestring::ByteString;
use switchboard_dialplan::Cause;
use switchboard_media::Side;
use switchboard_sip::dialog::DialogId;
use switchboard_sip::transaction::{TxnId, make_response};
use switchboard_sip::{Message, Method, Name, Request, Response};
use tracing::{debug, info, warn};

use crate::call::{Call, CallState, PendingAck, Relayed};
use crate::engine::{ClientRole, Engine};
use crate::ids::CallRef;
use crate::media::SdpIn;

/// Headers that travel with a relayed request or response (everything else is per leg).
const RELAYED_HEADERS: &[&str] = &[
    "Event",
    "Subscription-State",
    "Refer-To",
    "Referred-By",
    "Info-Package",
    "Recv-Info",
    "Subject",
];

impl Engine {
    pub(crate) fn on_in_dialog(
        &mut self,
        now: Instant,
        wall: jiff::Timestamp,
        id: TxnId,
        req: Request,
        to_tag: ByteString,
    ) {
        let call_id = req.headers.call_id().map(|c| &**c).unwrap_or_default();
        let Some((call_ref, side)) = self.dialog_of(call_id, &to_tag) else {
            debug!(call_id, method = %req.method, "no such dialog: 481");
            self.respond(now, id, 481, None);
            return;
        };
        let _span = self.enter(call_ref);
        let Some(mut call) = self.calls.remove(&call_ref) else {
            self.respond(now, id, 481, None);
            return;
        };
        if side == Side::B
            && call.transfer.as_ref().is_some_and(|t| {
                &*t.dialog.id.call_id == call_id && t.dialog.id.local_tag == to_tag
            })
        {
            // The leg that asked for a transfer, waiting aside.
            self.on_transferor_request(now, &mut call, id, &req);
            self.calls.insert(call_ref, call);
            return;
        }
        let dialog = match side {
            Side::A => call.a.dialog.as_mut(),
            Side::B => call.b_dialog.as_mut(),
        };
        if let Some(d) = dialog
            && !d.accept_remote_cseq(&req)
        {
            self.calls.insert(call_ref, call);
            // RFC 3261 §12.2.2: a lower CSeq is answered 500.
            self.respond(now, id, 500, None);
            return;
        }
        match req.method {
            Method::Bye => {
                self.respond(now, id, 200, None);
                self.calls.insert(call_ref, call);
                // RFC 3326: a Q.850 cause in the BYE says why (a browser gone, a timer...).
                let cause = reason_cause(&req.headers).unwrap_or(Cause::NormalClearing);
                info!(?side, cause = cause.name(), "BYE");
                self.teardown(now, call_ref, cause, Some(side));
            }
            Method::Invite if call.reinvite_from.is_some() || call.state != CallState::Up => {
                // §14.2: one re-INVITE at a time.
                self.calls.insert(call_ref, call);
                self.respond(now, id, 491, None);
            }
            Method::Info if let Some(d) = self.info_digit(now, &mut call, side, &req, id) => {
                self.calls.insert(call_ref, call);
                self.collect_digit(now, call_ref, side, d);
            }
            // The call center moves the caller elsewhere (blind transfer, RFC 3515).
            Method::Refer if side == Side::B => {
                let routed = self.on_refer(now, wall, &mut call, id, &req);
                self.calls.insert(call_ref, call);
                if routed {
                    self.run_plan(now, call_ref);
                }
            }
            _ => {
                self.relay_request(now, &mut call, side, id, &req);
                self.calls.insert(call_ref, call);
            }
        }
    }

    fn relay_request(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        server_txn: TxnId,
        req: &Request,
    ) {
        let to = from.other();
        let is_invite = req.method == Method::Invite;
        let target_refresh = matches!(req.method, Method::Invite | Method::Update);
        let (dialog, peer) = match to {
            Side::A => (call.a.dialog.as_mut(), Some(call.a.peer)),
            Side::B => (call.b_dialog.as_mut(), call.b_peer),
        };
        let (Some(d), Some(peer)) = (dialog, peer) else {
            self.respond(now, server_txn, 481, None);
            return;
        };
        let mut out = d.make_request(req.method.clone(), None);
        let out_seq = d.local_seq;
        if target_refresh {
            out.headers
                .push(Name::Contact, self.contact(peer.transport));
            let from_dialog = match from {
                Side::A => call.a.dialog.as_mut(),
                Side::B => call.b_dialog.as_mut(),
            };
            if let Some(fd) = from_dialog {
                fd.refresh_target(&req.headers);
            }
        }
        copy_relayed_headers(&req.headers, &mut out.headers);
        if target_refresh && !crate::session_timer::in_process(call, to) {
            // The other leg's own session timer rides on it (RFC 4028: a refresh there too).
            let refresher = call.st[crate::media::idx(to)].map(|t| {
                if t.we_refresh {
                    crate::session_timer::Refresher::Uac
                } else {
                    crate::session_timer::Refresher::Uas
                }
            });
            self.request_session_timer(&mut out.headers, refresher);
        }
        if is_sdp(&req.headers) {
            let Some(b) = self.sdp_to_other(call, from, &req.body, SdpIn::Request) else {
                // An offer we cannot take (no audio we can carry, SRTP we cannot do): the
                // other leg never sees it, and the session goes on as it was (RFC 3264 §8).
                self.respond(now, server_txn, 488, None);
                return;
            };
            out.headers.push(Name::ContentType, "application/sdp");
            out.body = b;
        } else if !req.body.is_empty() {
            if let Some(ct) = req.headers.get(&Name::ContentType) {
                out.headers.push(Name::ContentType, ct.clone());
            }
            out.body = req.body.clone();
        }
        debug!(method = %req.method, ?from, "relaying in-dialog request");
        let client = self.send_in_dialog(now, out, peer, ClientRole::Relay(call.id), None);
        if is_invite {
            call.reinvite_from = Some(from);
            let from_seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
            call.pending_ack = Some(PendingAck {
                from,
                from_seq,
                to_seq: out_seq,
            });
        }
        call.relayed.push((
            client,
            Relayed {
                server_txn,
                from,
                is_invite,
            },
        ));
    }

    /// A response to a relayed in-dialog request: pass it back to the requester.
    pub(crate) fn on_relay_response(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        client: TxnId,
        resp: Option<Response>,
    ) {
        let _span = self.enter(call_ref);
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return;
        };
        let Some(pos) = call.relayed.iter().position(|(c, _)| *c == client) else {
            self.calls.insert(call_ref, call);
            return;
        };
        let relayed = call.relayed[pos].1.clone();
        let status = resp.as_ref().map_or(408, |r| r.status);
        if status == 100 {
            self.calls.insert(call_ref, call);
            return;
        }
        let Some(server_req) = self.txn.server_request(relayed.server_txn).cloned() else {
            call.relayed.remove(pos);
            self.calls.insert(call_ref, call);
            return;
        };
        let mut out = make_response(&server_req, status, None);
        if let Some(r) = &resp {
            out.reason = r.reason.clone();
            copy_relayed_headers(&r.headers, &mut out.headers);
            let responder = relayed.from.other();
            if (200..300).contains(&status) && relayed.is_invite {
                out.headers.push(
                    Name::Contact,
                    self.contact(server_req_transport(&call, relayed.from)),
                );
                let d = match responder {
                    Side::A => call.a.dialog.as_mut(),
                    Side::B => call.b_dialog.as_mut(),
                };
                if let Some(d) = d {
                    d.refresh_target(&r.headers);
                }
            }
            if is_sdp(&r.headers) {
                let kind = SdpIn::Response {
                    final_: (200..300).contains(&status),
                };
                if let Some(b) = self.sdp_to_other(&mut call, responder, &r.body, kind) {
                    out.headers.push(Name::ContentType, "application/sdp");
                    out.body = b;
                }
            } else if !r.body.is_empty() {
                if let Some(ct) = r.headers.get(&Name::ContentType) {
                    out.headers.push(Name::ContentType, ct.clone());
                }
                out.body = r.body.clone();
            }
        }
        if (200..300).contains(&status)
            && matches!(server_req.method, Method::Invite | Method::Update)
            && let Some(r) = &resp
        {
            // Each leg's timer restarts, as each leg agreed it in its own transaction.
            self.answer_session_timer(now, &mut call, relayed.from, &server_req.headers, &mut out);
            self.answered_session_timer(now, &mut call, relayed.from.other(), &r.headers);
        }
        self.decorate(&mut out);
        self.txn.respond(now, relayed.server_txn, out);
        if status >= 200 {
            call.relayed.remove(pos);
            self.forget_client(client);
            if relayed.is_invite {
                call.reinvite_from = None;
                if status >= 300 {
                    call.pending_ack = None;
                    // The offer failed: the media stays as it was.
                    call.m.pending = None;
                }
            }
        }
        self.calls.insert(call_ref, call);
    }

    /// An ACK outside a transaction: for our 2xx to A's INVITE, or for a relayed re-INVITE.
    pub(crate) fn on_ack(
        &mut self,
        _now: Instant,
        req: Request,
        _from: switchboard_sip::transaction::Peer,
    ) {
        let Some(id) = DialogId::of_incoming(&req) else {
            return;
        };
        let Some((call_ref, side)) = self.dialog_of(&id.call_id, &id.local_tag) else {
            return;
        };
        let _span = self.enter(call_ref);
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return;
        };
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        if side == Side::A && call.state == CallState::Answered {
            call.state = CallState::Up;
            self.up_calls += 1;
            if call.m.local_offer.is_some() {
                if is_sdp(&req.headers) {
                    self.local_offer_answered(&mut call, Side::A, &req.body);
                } else {
                    warn!("the caller's ACK has no answer to our offer: it has no media");
                    call.m.local_offer = None;
                }
            }
            if !call.b_acked && call.b_dialog.is_some() {
                let body = if is_sdp(&req.headers) {
                    self.sdp_to_other(&mut call, Side::A, &req.body, SdpIn::Ack)
                } else {
                    None
                };
                self.ack_b(&mut call, body);
            }
            info!("call up");
        } else if let Some(p) = call
            .pending_ack
            .filter(|p| p.from == side && p.from_seq == seq)
        {
            call.pending_ack = None;
            let to = side.other();
            let (dialog, peer) = match to {
                Side::A => (call.a.dialog.clone(), Some(call.a.peer)),
                Side::B => (call.b_dialog.clone(), call.b_peer),
            };
            if let (Some(mut d), Some(peer)) = (dialog, peer) {
                let mut ack = d.make_request(Method::Ack, Some(p.to_seq));
                ack.headers.push_front(Name::Via, self.via(peer.transport));
                if is_sdp(&req.headers)
                    && let Some(b) = self.sdp_to_other(&mut call, side, &req.body, SdpIn::Ack)
                {
                    ack.headers.push(Name::ContentType, "application/sdp");
                    ack.body = b;
                }
                self.txn.send_stateless(peer, &Message::Request(ack));
            }
        }
        self.calls.insert(call_ref, call);
    }

    pub(crate) fn on_response(&mut self, now: Instant, id: TxnId, resp: Response) {
        let Some(&role) = self.clients.get(&id) else {
            if resp
                .headers
                .cseq()
                .is_ok_and(|c| c.method == Method::Invite)
            {
                // An attempt of a call that is gone: a provisional lets a pending CANCEL go
                // out (RFC 3261 §9.1), a 2xx is ACKed and hung up.
                self.on_attempt_response(now, CallRef(0), id, resp);
            }
            return;
        };
        let final_ = resp.status >= 200;
        match role {
            ClientRole::Attempt(call) => self.on_attempt_response(now, call, id, resp),
            ClientRole::Relay(call) => self.on_relay_response(now, call, id, Some(resp)),
            ClientRole::Service(n, cookie) => {
                if final_ {
                    self.on_service_response(now, id, n, cookie, Some(&resp));
                }
            }
            ClientRole::Bye | ClientRole::Cancel | ClientRole::Info => {
                if final_ {
                    self.forget_client(id);
                }
            }
            ClientRole::Refresh(call, side) => {
                if final_ {
                    self.forget_client(id);
                    self.on_refresh_response(now, call, side, Some(&resp));
                }
            }
            ClientRole::AppMessage { call, app, tag } => {
                if final_ {
                    self.forget_client(id);
                    self.on_app_reply(now, call, app, tag, Some(&resp));
                }
            }
            ClientRole::External { call, token, name } => {
                if final_ {
                    self.forget_client(id);
                    self.on_external_reply(call, token, name, Some(&resp));
                }
            }
        }
    }

    pub(crate) fn on_client_timeout(&mut self, now: Instant, id: TxnId) {
        let Some(role) = self.clients.remove(&id) else {
            return;
        };
        match role {
            ClientRole::Attempt(call_ref) => {
                // Timer B: the target never answered at all.
                info!("leg B timed out (Timer B)");
                self.clients.insert(id, role);
                let resp = Response::new(408, "Request Timeout");
                self.on_attempt_response(now, call_ref, id, resp);
            }
            ClientRole::Relay(call) => self.on_relay_response(now, call, id, None),
            ClientRole::Service(n, cookie) => self.on_service_response(now, id, n, cookie, None),
            ClientRole::Bye | ClientRole::Cancel | ClientRole::Info => {}
            ClientRole::Refresh(call, side) => self.on_refresh_response(now, call, side, None),
            ClientRole::AppMessage { call, app, tag } => {
                self.on_app_reply(now, call, app, tag, None)
            }
            ClientRole::External { call, token, name } => {
                self.on_external_reply(call, token, name, None)
            }
        }
    }

    pub(crate) fn on_ack_timeout(&mut self, now: Instant, id: TxnId) {
        if let Some(&call) = self.server_invites.get(&id)
            && self
                .calls
                .get(&call)
                .is_some_and(|c| c.state == CallState::Answered)
        {
            info!("caller never acknowledged the 200: hanging up");
            self.teardown(now, call, Cause::RecoveryOnTimerExpire, None);
        }
    }
}

fn server_req_transport(call: &Call, side: Side) -> switchboard_sip::transaction::Transport {
    match side {
        Side::A => call.a.peer.transport,
        Side::B => call
            .b_peer
            .map_or(switchboard_sip::transaction::Transport::Udp, |p| {
                p.transport
            }),
    }
}

pub(crate) fn is_sdp(h: &switchboard_sip::Headers) -> bool {
    h.get(&Name::ContentType)
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/sdp"))
}

fn copy_relayed_headers(from: &switchboard_sip::Headers, to: &mut switchboard_sip::Headers) {
    for h in &from.0 {
        let keep = match &h.name {
            Name::Event | Name::ReferTo | Name::Subject => true,
            Name::Other(n) => RELAYED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(n)),
            _ => false,
        };
        if keep {
            to.0.push(h.clone());
        }
    }
}

/// The cause of a `Reason: Q.850;cause=N` header (RFC 3326), when it names one we know.
pub(crate) fn reason_cause(h: &switchboard_sip::Headers) -> Option<Cause> {
    h.all(&switchboard_sip::Name::Reason)
        .flat_map(|v| v.split(','))
        .filter(|v| v.trim_start().to_ascii_uppercase().starts_with("Q.850"))
        .find_map(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("cause="))
                .and_then(|c| c.trim().parse::<u16>().ok())
        })
        .and_then(|n| Cause::ALL.iter().copied().find(|c| c.q850() == n))
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn a_q850_reason_gives_the_cause_and_anything_else_none() {
        let mut h = switchboard_sip::Headers::default();
        assert_eq!(reason_cause(&h), None);
        h.push(
            switchboard_sip::Name::Reason,
            "SIP;cause=200;text=\"x\", Q.850;cause=38;text=\"NETWORK_OUT_OF_ORDER\"",
        );
        assert_eq!(reason_cause(&h), Some(Cause::NetworkOutOfOrder));
        let mut h = switchboard_sip::Headers::default();
        h.push(switchboard_sip::Name::Reason, "Q.850;cause=999");
        assert_eq!(reason_cause(&h), None);
    }
}
