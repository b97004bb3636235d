//! Following the plan: answer, hang up, or bridge to targets in sequence (failover) or in
//! parallel (ring all); leg B's responses; ring timeouts; how failures map back to leg A.

use std::time::Instant;
use switchboard_trunk::ani::WhenEmpty;

use bytes::Bytes;
use switchboard_dialplan::{Action, Cause, Strategy, Target};
use switchboard_media::Side;
use switchboard_sip::dialog::Dialog;
use switchboard_sip::transaction::{Peer, Transport, TxnId, make_cancel, make_response};
use switchboard_sip::uri::{Host, Uri};
use switchboard_sip::{Message, Method, Name, Request, Response};
use tracing::{debug, info, warn};

use crate::call::{Attempt, Call, CallState};
use crate::engine::{ALLOW, CallTimer, ClientRole, Engine, Output, fmt_addr, transport_param};
use crate::ids::CallRef;
use crate::media::SdpIn;

/// A failure to reach a target: the status leg A would get, and the cause.
type Failure = (u16, Cause);

/// How bad a failure is when choosing which one leg A hears (RFC 3261 §16.7 step 6 in spirit:
/// a 6xx or a busy is the callee's answer and beats a route's trouble).
fn rank(status: u16) -> u8 {
    match status {
        600..=699 => 6,
        486 => 5,
        400..=479 | 481..=499 => 4,
        480 => 3,
        _ => 2,
    }
}

/// The status leg A gets for a leg B failure (408 and timeouts → 480, other 5xx → 502).
fn status_for_a(status: u16) -> u16 {
    match status {
        408 => 480,
        503 => 503,
        500..=599 => 502,
        s => s,
    }
}

impl Engine {
    /// Runs the plan's actions from where the call is (the start, or after a failed bridge).
    pub(crate) fn run_plan(&mut self, now: Instant, call_ref: CallRef) {
        let _span = self.enter(call_ref);
        loop {
            let Some(call) = self.calls.get_mut(&call_ref) else {
                return;
            };
            let step = call
                .plan
                .actions
                .iter()
                .enumerate()
                .skip(call.next_target_step())
                .find(|(_, a)| !matches!(a, Action::HeaderAdd { .. } | Action::HeaderRemove(_)));
            let Some((pos, action)) = step.map(|(i, a)| (i, a.clone())) else {
                let failure = call
                    .last_failure
                    .unwrap_or((404, Cause::NoRouteDestination));
                let cause = failure.1;
                if let Some(mut call) = self.calls.remove(&call_ref) {
                    if call.a.finalized {
                        self.calls.insert(call_ref, call);
                        // Answered by the plan and nothing left to do: hang up normally.
                        self.teardown(now, call_ref, Cause::NormalClearing, None);
                    } else {
                        info!(status = failure.0, cause = %cause, "call failed");
                        self.respond_a_final(now, &mut call, failure.0, Some(cause));
                        self.finish(now, call, cause, None);
                    }
                }
                return;
            };
            call.plan_cursor = pos + 1;
            match action {
                Action::Answer => self.answer_a(now, call_ref),
                Action::Hangup(cause) => {
                    self.teardown(now, call_ref, cause, None);
                    return;
                }
                Action::Bridge(b) => {
                    call.bridge = Some(b);
                    call.next_target = 0;
                    if self.try_next_target(now, call_ref) {
                        return;
                    }
                }
                Action::Ringback(spec) => call.ringback = Some((spec, false)),
                Action::Playback(_)
                | Action::Echo(_)
                | Action::Tone { .. }
                | Action::ReadDigits(_) => {
                    let waits = self.start_media_action(now, call_ref, action);
                    if waits {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// `answer`: 200 to A with our media address and the codec of A's offer that a later
    /// bridge is most likely to need without transcoding (config order).
    pub(crate) fn answer_a(&mut self, now: Instant, call_ref: CallRef) {
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return;
        };
        if call.a.finalized {
            self.calls.insert(call_ref, call);
            return;
        }
        let mut resp = make_response(&call.a.invite, 200, Some(&call.a.tag));
        self.decorate(&mut resp);
        resp.headers
            .push(Name::Contact, self.contact(call.a.peer.transport));
        if let Some(offer) = call.m.a_offer.clone()
            && let Some(body) = self.local_answer(&mut call, Side::A, &offer)
        {
            resp.headers.push(Name::ContentType, "application/sdp");
            resp.body = body;
        }
        self.txn.respond(now, call.a.invite_txn, resp);
        self.a_answered(now, &mut call);
        self.calls.insert(call_ref, call);
    }

    /// Starts the next target(s) of the current bridge. `false` when none could be started.
    fn try_next_target(&mut self, now: Instant, call_ref: CallRef) -> bool {
        loop {
            let Some(call) = self.calls.get_mut(&call_ref) else {
                return true;
            };
            let Some(bridge) = call.bridge.clone() else {
                return false;
            };
            if call.next_target >= bridge.targets.len() {
                return call.live_attempts().next().is_some();
            }
            let batch: Vec<Target> = match bridge.strategy {
                Strategy::Sequence => vec![bridge.targets[call.next_target].clone()],
                Strategy::Parallel => bridge.targets[call.next_target..].to_vec(),
            };
            call.next_target += batch.len();
            let mut started = false;
            for target in batch {
                match self.originate(now, call_ref, &target, bridge.timeout) {
                    Ok(()) => started = true,
                    Err(QUEUED) if bridge.strategy == Strategy::Sequence => {
                        // Waiting for a pool number: this target again, a little later.
                        if let Some(c) = self.calls.get_mut(&call_ref) {
                            c.next_target -= 1;
                        }
                        self.schedule(now + ANI_RETRY, call_ref, CallTimer::AniRetry);
                        return true;
                    }
                    Err(failure) => {
                        let failure = if failure == QUEUED {
                            (503, Cause::SwitchCongestion)
                        } else {
                            failure
                        };
                        info!(%target, status = failure.0, cause = %failure.1, "target not tried");
                        if failure.0 == 488 {
                            // No codec in common: no other target will do better.
                            self.record_failure(call_ref, failure);
                            if let Some(c) = self.calls.get_mut(&call_ref) {
                                c.next_target = usize::MAX / 2;
                                c.plan_cursor = usize::MAX / 2;
                            }
                            return false;
                        }
                        self.record_failure(call_ref, failure);
                    }
                }
            }
            if started {
                return true;
            }
        }
    }

    fn record_failure(&mut self, call_ref: CallRef, failure: Failure) {
        if let Some(call) = self.calls.get_mut(&call_ref) {
            let better = call
                .last_failure
                .is_none_or(|(s, _)| rank(failure.0) >= rank(s));
            if better {
                call.last_failure = Some(failure);
            }
        }
    }

    fn originate(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        target: &Target,
        timeout: std::time::Duration,
    ) -> Result<(), Failure> {
        let (peer, ruri, mut caller) = self.resolve(call_ref, target)?;
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return Ok(());
        };
        if let Err(f) = self.lease_ani(now, &mut call, target, &mut caller.0) {
            self.calls.insert(call_ref, call);
            return Err(f);
        }
        let result = self.originate_on(now, &mut call, target, peer, ruri, caller, timeout);
        self.calls.insert(call_ref, call);
        result
    }

    /// Where a target goes: peer, Request-URI, caller ID (number, name).
    fn resolve(
        &self,
        call_ref: CallRef,
        target: &Target,
    ) -> Result<(Peer, String, (String, String)), Failure> {
        let call = self
            .calls
            .get(&call_ref)
            .ok_or((500, Cause::NormalUnspecified))?;
        let eff = call.effective_caller.as_deref();
        let caller = (
            eff.and_then(|e| e.0.clone())
                .unwrap_or_else(|| call.caller.clone()),
            eff.and_then(|e| e.1.clone())
                .unwrap_or_else(|| caller_name(&call.a.invite)),
        );
        match target {
            Target::Gateway { name, user } => {
                let gw = self
                    .gateways
                    .get(name)
                    .ok_or((503, Cause::NormalTemporaryFailure))?;
                if !gw.is_up() {
                    return Err((503, Cause::NormalTemporaryFailure));
                }
                let peer = Peer {
                    transport: gw.transport,
                    addr: gw.addr,
                };
                let user = if user.is_empty() {
                    call.destination.clone()
                } else {
                    user.clone()
                };
                let ruri = format!(
                    "sip:{}@{}{}",
                    escape_user(&user),
                    fmt_addr(gw.addr),
                    transport_param(gw.transport)
                );
                Ok((peer, ruri, gw.caller_id(&caller.0, &caller.1)))
            }
            Target::Uri(u) => {
                let uri = Uri::parse(u).map_err(|_| (502, Cause::DestinationOutOfOrder))?;
                let Host::Ip(ip) = uri.host else {
                    warn!(target = %u, "DNS names in bridge targets are not resolved yet: use an IP or a gateway");
                    return Err((502, Cause::DestinationOutOfOrder));
                };
                let transport = uri
                    .transport()
                    .and_then(Transport::from_token)
                    .unwrap_or(Transport::Udp);
                let peer = Peer {
                    transport,
                    addr: std::net::SocketAddr::new(ip, uri.port.unwrap_or(5060)),
                };
                Ok((peer, u.clone(), caller))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn originate_on(
        &mut self,
        now: Instant,
        call: &mut Call,
        target: &Target,
        peer: Peer,
        ruri: String,
        caller: (String, String),
        timeout: std::time::Duration,
    ) -> Result<(), Failure> {
        if let Some(name) = &target_gateway(target)
            && let Some(dtmf) = self.gateways.get(name).and_then(|g| g.dtmf)
            && call.m.dtmf[1].is_none()
        {
            call.m.dtmf[1] = Some(dtmf);
        }
        if call.offer_b.is_none()
            && let Some(offer) = call.m.a_offer.clone()
        {
            if self.cfg.anchor_media && self.alloc_media(call).is_none() {
                return Err((503, Cause::SwitchCongestion));
            }
            let body = self.sdp_to_other(call, Side::A, &offer, SdpIn::Request);
            if body.is_none() {
                debug!("offer refused: no codec in common");
                return Err((488, Cause::IncompatibleDestination));
            }
            call.offer_b = body;
        }
        let call_id = self.ids.call_id();
        let mut req = Request::new(Method::Invite, ruri.clone());
        req.headers.push(Name::Via, self.via(peer.transport));
        let mf = call
            .a
            .invite
            .headers
            .max_forwards()
            .and_then(Result::ok)
            .unwrap_or(70);
        req.headers
            .push(Name::MaxForwards, mf.saturating_sub(1).min(70).to_string());
        let local = fmt_addr(self.local_addr(peer.transport));
        let from_uri = format!("sip:{}@{local}", escape_user(&caller.0));
        let from = if caller.1.is_empty() {
            format!("<{from_uri}>;tag={}", self.ids.tag())
        } else {
            format!(
                "\"{}\" <{from_uri}>;tag={}",
                caller.1.replace(['"', '\\'], ""),
                self.ids.tag()
            )
        };
        req.headers.push(Name::From, from);
        req.headers.push(Name::To, format!("<{ruri}>"));
        req.headers.push(Name::CallId, call_id.clone());
        req.headers.push(Name::CSeq, "1 INVITE");
        req.headers
            .push(Name::Contact, self.contact(peer.transport));
        req.headers.push(Name::Allow, ALLOW);
        req.headers
            .push(Name::UserAgent, self.cfg.user_agent.clone());
        for a in &call.plan.actions {
            match a {
                Action::HeaderAdd { name, value } => req.headers.push(
                    Name::from_str_lossless(&name.as_str().into()),
                    value.clone(),
                ),
                Action::HeaderRemove(name) => req
                    .headers
                    .0
                    .retain(|h| !h.name.as_str().eq_ignore_ascii_case(name)),
                _ => {}
            }
        }
        // The trunk's policy last: what it must never see is gone whatever the dialplan added.
        if let Some(gw) = target_gateway(target).and_then(|n| self.gateways.get(&n)) {
            for name in gw.config.redact_headers.iter().flatten() {
                req.headers
                    .0
                    .retain(|h| !h.name.as_str().eq_ignore_ascii_case(name));
            }
        }
        if let Some(body) = &call.offer_b {
            req.headers.push(Name::ContentType, "application/sdp");
            req.body = body.clone();
        }
        info!(%target, b_call_id = %call_id, "originating leg B");
        let txn = self.txn.send_request(now, req.clone(), peer);
        self.clients.insert(txn, ClientRole::Attempt(call.id));
        self.b_call_ids.insert(call_id.as_str().into(), call.id);
        call.attempts.push(Attempt {
            txn,
            invite: req,
            peer,
            target: target.to_string(),
            gateway: match target {
                Target::Gateway { name, .. } => Some(name.clone()),
                Target::Uri(_) => None,
            },
            authed: false,
            call_id,
            ringing: false,
            timed_out: false,
            done: false,
        });
        self.schedule(now + timeout, call.id, CallTimer::Ring(txn));
        Ok(())
    }

    pub(crate) fn fire_call_timer(&mut self, now: Instant, call_ref: CallRef, kind: CallTimer) {
        let _span = self.enter(call_ref);
        let txn = match kind {
            CallTimer::Ring(txn) => txn,
            CallTimer::Digits(generation) => return self.digits_timeout(now, call_ref, generation),
            CallTimer::AniRetry => return self.bridge_progress(now, call_ref),
        };
        let Some(call) = self.calls.get_mut(&call_ref) else {
            return;
        };
        let Some(i) = call.attempt_by_txn(txn) else {
            return;
        };
        if call.attempts[i].done || call.winner.is_some() {
            return;
        }
        info!(target = %call.attempts[i].target, "no answer before the bridge timeout");
        call.attempts[i].timed_out = true;
        call.attempts[i].done = true;
        self.cancel_txn(now, txn);
        self.record_failure(call_ref, (480, Cause::NoAnswer));
        self.bridge_progress(now, call_ref);
    }

    /// After an attempt ended: more targets, the rest of the plan, or the end of the call.
    fn bridge_progress(&mut self, now: Instant, call_ref: CallRef) {
        let Some(call) = self.calls.get(&call_ref) else {
            return;
        };
        if call.winner.is_some() || call.live_attempts().next().is_some() {
            return;
        }
        let retry = call.last_failure.is_none_or(|(_, c)| c.is_retryable());
        if retry && self.try_next_target(now, call_ref) {
            return;
        }
        if let Some(call) = self.calls.get_mut(&call_ref) {
            call.bridge = None;
            if !retry {
                // The callee answered (busy, rejected...): that is the call's answer.
                call.plan_cursor = usize::MAX / 2;
            }
        }
        self.run_plan(now, call_ref);
    }

    /// Sends CANCEL for a client INVITE once it had a provisional response (RFC 3261 §9.1);
    /// before that, the CANCEL waits for the first provisional.
    pub(crate) fn cancel_txn(&mut self, now: Instant, txn: TxnId) {
        if !self.provisional_seen.contains(&txn) {
            self.cancel_wanted.insert(now, txn);
            return;
        }
        if !self.cancel_sent.insert(now, txn) {
            return;
        }
        let (Some(invite), Some(peer)) = (self.txn.client_request(txn), self.txn.client_peer(txn))
        else {
            return;
        };
        let cancel = make_cancel(invite);
        let id = self.txn.send_request(now, cancel, peer);
        self.clients.insert(id, ClientRole::Cancel);
    }

    pub(crate) fn cancel_attempt(&mut self, now: Instant, call: &mut Call, i: usize) {
        let a = &mut call.attempts[i];
        if a.done {
            return;
        }
        a.done = true;
        let txn = a.txn;
        self.cancel_txn(now, txn);
    }

    /// A response to one of our leg B INVITEs.
    pub(crate) fn on_attempt_response(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        txn: TxnId,
        resp: Response,
    ) {
        let _span = self.enter(call_ref);
        let status = resp.status;
        if (101..200).contains(&status) {
            self.provisional_seen.insert(now, txn);
            if self.cancel_wanted.remove(&txn) {
                self.cancel_txn(now, txn);
                return;
            }
        }
        let Some(mut call) = self.calls.remove(&call_ref) else {
            if (200..300).contains(&status) {
                self.reject_late_2xx(now, txn, &resp);
            }
            return;
        };
        let Some(i) = call.attempt_by_txn(txn) else {
            self.calls.insert(call_ref, call);
            return;
        };
        if matches!(status, 401 | 407)
            && !call.attempts[i].done
            && self.retry_with_auth(now, &mut call, i, &resp)
        {
            self.forget_client(txn);
            self.calls.insert(call_ref, call);
            return;
        }
        match status {
            100 => {}
            101..=199 if !call.attempts[i].done => {
                if !call.attempts.iter().any(|a| a.ringing) {
                    self.outputs
                        .push_back(Output::CallRinging { call: call.id });
                }
                call.attempts[i].ringing = true;
                self.relay_provisional(now, &mut call, &resp);
            }
            200..=299 if call.winner == Some(i) => {
                // A retransmitted 2xx: ACK again if A already acknowledged ours.
                if let (Some(ack), Some(peer)) = (call.b_ack.clone(), call.b_peer) {
                    self.txn.send_raw(peer, ack);
                }
            }
            200..=299 if call.winner.is_none() && !call.attempts[i].done => {
                self.b_answered(now, &mut call, i, &resp);
            }
            200..=299 => {
                self.calls.insert(call_ref, call);
                self.reject_late_2xx(now, txn, &resp);
                return;
            }
            300.. if !call.attempts[i].done => {
                let a = &mut call.attempts[i];
                let failure = if a.timed_out {
                    (480, Cause::NoAnswer)
                } else {
                    (status_for_a(status), Cause::from_sip(status))
                };
                a.done = true;
                info!(target = %a.target, status, cause = %failure.1, "leg B failed");
                self.forget_client(txn);
                self.calls.insert(call_ref, call);
                self.record_failure(call_ref, failure);
                self.bridge_progress(now, call_ref);
                return;
            }
            _ => {}
        }
        self.calls.insert(call_ref, call);
    }

    fn relay_provisional(&mut self, now: Instant, call: &mut Call, resp: &Response) {
        let has_sdp = crate::indialog::is_sdp(&resp.headers);
        if has_sdp {
            // The callee's own early media replaces ours.
            self.stop_ringback(call);
        } else if resp.status == 180 && self.start_ringback(now, call) {
            return;
        }
        if call.a.finalized {
            return;
        }
        let mut out = make_response(&call.a.invite, resp.status, Some(&call.a.tag));
        out.reason = resp.reason.clone();
        out.headers
            .push(Name::Contact, self.contact(call.a.peer.transport));
        if crate::indialog::is_sdp(&resp.headers)
            && let Some(b) =
                self.sdp_to_other(call, Side::B, &resp.body, SdpIn::Response { final_: false })
        {
            out.headers.push(Name::ContentType, "application/sdp");
            out.body = b;
        }
        self.decorate(&mut out);
        self.txn.respond(now, call.a.invite_txn, out);
    }

    fn b_answered(&mut self, now: Instant, call: &mut Call, i: usize, resp: &Response) {
        let attempt = &mut call.attempts[i];
        attempt.done = true;
        call.winner = Some(i);
        info!(target = %attempt.target, "leg B answered");
        let dialog = match Dialog::new_uac(&attempt.invite, resp) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "leg B's 2xx cannot form a dialog; using its To and our target");
                lenient_uac_dialog(&attempt.invite, resp)
            }
        };
        call.span
            .record("b_call_id", tracing::field::display(&dialog.id.call_id));
        let peer = next_hop_peer(&dialog, attempt.peer);
        self.dialogs.insert(
            (dialog.id.call_id.clone(), dialog.id.local_tag.clone()),
            (call.id, Side::B),
        );
        call.b_dialog = Some(dialog);
        call.b_peer = Some(peer);
        for j in 0..call.attempts.len() {
            if j != i {
                self.cancel_attempt(now, call, j);
            }
        }
        // The offer went out for good: a call that lasts hours need not keep it, nor the
        // INVITEs it sent, nor the plan and bridge that led here.
        call.offer_b = None;
        call.m.a_offer = None;
        call.bridge = None;
        self.stop_ringback(call);
        call.plan.actions = Vec::new();
        for a in call.attempts.iter_mut() {
            a.slim_invite();
        }
        call.attempts.shrink_to_fit();
        if call.a.finalized {
            // A was answered by the plan already: ACK B now (with our answer if B offered in
            // its 2xx), media flows.
            let mut ack_body = None;
            if crate::indialog::is_sdp(&resp.headers) {
                if call.m.pending.as_ref().is_some_and(|p| p.0 == Side::A) {
                    self.sdp_to_other(call, Side::B, &resp.body, SdpIn::Response { final_: true });
                } else {
                    ack_body = self.local_answer(call, Side::B, &resp.body);
                }
            }
            self.ack_b(call, ack_body);
            call.state = CallState::Up;
            return;
        }
        let mut out = make_response(&call.a.invite, resp.status, Some(&call.a.tag));
        out.headers
            .push(Name::Contact, self.contact(call.a.peer.transport));
        self.decorate(&mut out);
        if crate::indialog::is_sdp(&resp.headers)
            && let Some(b) =
                self.sdp_to_other(call, Side::B, &resp.body, SdpIn::Response { final_: true })
        {
            out.headers.push(Name::ContentType, "application/sdp");
            out.body = b;
        }
        self.txn.respond(now, call.a.invite_txn, out);
        self.a_answered(now, call);
    }

    /// Leg A got our 2xx: its dialog exists from now on (waiting for its ACK).
    fn a_answered(&mut self, now: Instant, call: &mut Call) {
        call.a.finalized = true;
        call.a.dialog = uas_dialog(&call.a.invite, &call.a.tag);
        if let Some(d) = &call.a.dialog {
            self.dialogs.insert(
                (d.id.call_id.clone(), d.id.local_tag.clone()),
                (call.id, Side::A),
            );
        }
        call.state = CallState::Answered;
        call.answered_at = Some(now);
        call.a.slim_invite();
        self.outputs.push_back(Output::CallAnswered {
            call: call.id,
            target: call
                .winner
                .and_then(|i| call.attempts.get(i))
                .map(|a| a.target.clone()),
        });
    }

    /// ACKs leg B's 2xx (end to end: when A's ACK came, carrying the answer to B's offer).
    pub(crate) fn ack_b(&mut self, call: &mut Call, body: Option<Bytes>) {
        let (Some(peer), Some(mut ack)) = (
            call.b_peer,
            call.b_dialog
                .as_ref()
                .and_then(|d| ack_for(d, &call.attempts, call.winner)),
        ) else {
            return;
        };
        ack.headers.push_front(Name::Via, self.via(peer.transport));
        if let Some(b) = body {
            ack.headers.push(Name::ContentType, "application/sdp");
            ack.body = b;
        }
        let bytes = Bytes::from(Message::Request(ack).to_bytes());
        self.txn.send_raw(peer, bytes.clone());
        call.b_ack = Some(bytes);
    }

    /// A 2xx nobody wants any more (the caller left, or another target won): ACK and BYE it.
    fn reject_late_2xx(&mut self, now: Instant, txn: TxnId, resp: &Response) {
        let (Some(invite), Some(peer)) = (
            self.txn.client_request(txn).cloned(),
            self.txn.client_peer(txn),
        ) else {
            return;
        };
        let Ok(mut d) = Dialog::new_uac(&invite, resp) else {
            return;
        };
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let mut ack = d.make_request(Method::Ack, Some(seq));
        ack.headers.push_front(Name::Via, self.via(peer.transport));
        let peer = next_hop_peer(&d, peer);
        self.txn.send_stateless(peer, &Message::Request(ack));
        if self.late_byes.insert(now, txn) {
            info!(b_call_id = %d.id.call_id, "late 2xx from a leg B nobody waits for: ACK + BYE");
            let bye = d.make_request(Method::Bye, None);
            self.send_in_dialog(now, bye, peer, ClientRole::Bye, None);
        }
    }
}

impl Call {
    fn next_target_step(&self) -> usize {
        self.plan_cursor
    }
}

/// The ACK for the winning attempt's 2xx.
pub(crate) fn ack_for(d: &Dialog, attempts: &[Attempt], winner: Option<usize>) -> Option<Request> {
    let invite = &attempts.get(winner?)?.invite;
    let seq = invite.headers.cseq().ok()?.seq;
    let mut d = d.clone();
    Some(d.make_request(Method::Ack, Some(seq)))
}

/// Leg A's dialog; a caller without Contact still gets one, targeted at its From URI.
pub(crate) fn uas_dialog(invite: &Request, tag: &str) -> Option<Dialog> {
    Dialog::new_uas(invite, tag).ok().or_else(|| {
        let mut fixed = invite.clone();
        let from = fixed.headers.from_addr().ok()?.uri_text.to_owned();
        fixed.headers.set(Name::Contact, format!("<{from}>"));
        Dialog::new_uas(&fixed, tag).ok()
    })
}

fn lenient_uac_dialog(invite: &Request, resp: &Response) -> Dialog {
    let mut fixed = resp.clone();
    if fixed.headers.contact().is_none() {
        fixed
            .headers
            .set(Name::Contact, format!("<{}>", invite.uri));
    }
    if fixed.headers.to_addr().ok().and_then(|t| t.tag()).is_none() {
        let to = fixed
            .headers
            .get(&Name::To)
            .map(|t| t.to_string())
            .unwrap_or_default();
        fixed.headers.set(Name::To, format!("{to};tag=missing"));
    }
    Dialog::new_uac(invite, &fixed).unwrap_or_else(|_| Dialog {
        id: switchboard_sip::dialog::DialogId {
            call_id: invite.headers.call_id().cloned().unwrap_or_default(),
            local_tag: "local".into(),
            remote_tag: "remote".into(),
        },
        local: String::new(),
        remote: String::new(),
        local_seq: 1,
        remote_seq: None,
        remote_target: invite.uri.to_string(),
        route_set: vec![],
    })
}

/// In-dialog requests to B go to its next hop when that is an IP address; otherwise to
/// where the INVITE went.
pub(crate) fn next_hop_peer(d: &Dialog, fallback: Peer) -> Peer {
    let Ok(uri) = Uri::parse(d.next_hop()) else {
        return fallback;
    };
    match uri.host {
        Host::Ip(ip) => {
            let transport = uri
                .transport()
                .and_then(Transport::from_token)
                .unwrap_or(fallback.transport);
            Peer {
                transport,
                addr: std::net::SocketAddr::new(ip, uri.port.unwrap_or(5060)),
            }
        }
        Host::Name(_) => fallback,
    }
}

fn caller_name(invite: &Request) -> String {
    invite
        .headers
        .from_addr()
        .ok()
        .and_then(|f| f.display)
        .unwrap_or("")
        .to_owned()
}

/// Escapes what may not appear raw in a URI user part.
fn escape_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for c in user.chars() {
        if c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

impl Engine {
    /// A call to a gateway with an ANI pool presents a number of its own: leased once per
    /// call and gateway (failover to another trunk gives the first one back).
    fn lease_ani(
        &mut self,
        now: Instant,
        call: &mut Call,
        target: &Target,
        number: &mut String,
    ) -> Result<(), Failure> {
        let Target::Gateway { name, .. } = target else {
            return Ok(());
        };
        let has_pool = self.gateways.get(name).is_some_and(|g| g.ani.is_some());
        if !has_pool {
            return Ok(());
        }
        if call.ani.as_ref().is_some_and(|(g, _)| g != name) {
            self.release_ani(now, call);
        }
        if call.ani.is_none() {
            let Some(pool) = self.gateways.get_mut(name).and_then(|g| g.ani.as_mut()) else {
                return Ok(());
            };
            match pool.lease(now, call.id.0) {
                Some(n) => {
                    info!(gateway = %name, ani = %n, in_use = pool.in_use(), of = pool.size(), "caller number leased");
                    self.outputs.push_back(Output::AniLeased {
                        call: call.id,
                        gateway: name.clone(),
                        number: n.clone(),
                    });
                    call.ani = Some((name.clone(), n));
                    call.ani_wait = None;
                }
                None => match pool.when_empty {
                    WhenEmpty::Fallback => {
                        warn!(gateway = %name, "ANI pool exhausted: the usual caller ID is presented");
                    }
                    WhenEmpty::Reject => {
                        warn!(gateway = %name, "ANI pool exhausted: attempt refused (ani_when_empty = reject)");
                        return Err((503, Cause::SwitchCongestion));
                    }
                    WhenEmpty::Queue(max) => {
                        let since = *call.ani_wait.get_or_insert_with(|| {
                            info!(gateway = %name, "ANI pool exhausted: the call waits for a number (ani_when_empty = queue)");
                            now
                        });
                        if now.saturating_duration_since(since) < max {
                            return Err(QUEUED);
                        }
                        call.ani_wait = None;
                        warn!(gateway = %name, waited_secs = max.as_secs(), "no pool number came back in time: attempt refused");
                        return Err((503, Cause::SwitchCongestion));
                    }
                },
            }
        }
        if let Some((_, n)) = &call.ani {
            number.clone_from(n);
        }
        Ok(())
    }

    /// Gives the call's leased number back to its pool.
    pub(crate) fn release_ani(&mut self, now: Instant, call: &mut Call) {
        if let Some((gateway, number)) = call.ani.take() {
            if let Some(pool) = self.gateways.get_mut(&gateway).and_then(|g| g.ani.as_mut()) {
                pool.release(now, &number);
            }
            self.outputs
                .push_back(Output::AniReleased { gateway, number });
        }
    }
}

/// "Waiting for a pool number" (not a SIP status: never sent anywhere).
const QUEUED: Failure = (0, Cause::SwitchCongestion);

/// How often a call queued for a pool number looks again.
const ANI_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

fn target_gateway(t: &Target) -> Option<String> {
    match t {
        Target::Gateway { name, .. } => Some(name.clone()),
        Target::Uri(_) => None,
    }
}
