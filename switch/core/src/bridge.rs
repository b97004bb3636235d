//! Following the plan: answer, hang up, or bridge to targets in sequence (failover) or in
//! parallel (ring all); leg B's responses; ring timeouts; how failures map back to leg A.

use std::time::Instant;

use bytes::Bytes;
use switchboard_dialplan::{Action, Cause, Strategy, Target};
use switchboard_media::Side;
use switchboard_sip::dialog::Dialog;
use switchboard_sip::transaction::{Peer, Transport, TxnId, make_cancel, make_response};
use switchboard_sip::uri::{Host, Uri};
use switchboard_sip::{Message, Method, Name, Request, Response};
use tracing::{debug, info, warn};

use crate::call::{Attempt, Call, CallState};
use crate::engine::dialog_key;
use crate::engine::{ALLOW, CallTimer, ClientRole, Engine, fmt_addr};
use crate::ids::CallRef;
use crate::media::SdpIn;
use crate::module::{
    ActionCtx, AttemptError, CallEvent, CallerId, Effect, FilterError, OriginateCtx,
    OutgoingInvite, Route, TargetRef,
};

/// Why a target was not started.
enum NotStarted {
    /// It failed.
    Failed(AttemptError),
    /// A filter asks to try it again later.
    Wait(std::time::Duration),
}

impl From<AttemptError> for NotStarted {
    fn from(e: AttemptError) -> NotStarted {
        NotStarted::Failed(e)
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
                let (status, cause) = call
                    .last_failure
                    .as_ref()
                    .map_or((404, Cause::NoRouteDestination), |f| {
                        (f.status_for_a(), f.cause())
                    });
                if let Some(mut call) = self.calls.remove(&call_ref) {
                    if call.transfer.as_ref().is_some_and(|t| !t.answered) {
                        // The transfer's target did not answer: the caller goes back.
                        self.calls.insert(call_ref, call);
                        self.transfer_failed(now, call_ref, status, cause);
                    } else if call.a.finalized {
                        self.calls.insert(call_ref, call);
                        // Answered by the plan and nothing left to do: hang up normally.
                        self.teardown(now, call_ref, Cause::NormalClearing, None);
                    } else {
                        info!(status, cause = %cause, "call failed");
                        self.respond_a_final(now, &mut call, status, Some(cause));
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
                Action::Module(m) => {
                    if self.run_module_action(now, call_ref, &m) {
                        return;
                    }
                }
                Action::HeaderAdd { .. } | Action::HeaderRemove(_) => {}
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
        if self.cfg.anchor_media && self.alloc_media(&mut call).is_none() {
            // No pair of RTP ports binds: refused, not answered with dead media.
            warn!("no RTP ports can be bound: the call is refused");
            self.calls.insert(call_ref, call);
            self.teardown(now, call_ref, Cause::SwitchCongestion, None);
            return;
        }
        let mut resp = make_response(&call.a.invite, 200, Some(&call.a.tag));
        self.decorate(&mut resp);
        resp.headers
            .push(Name::Contact, self.contact(call.a.peer.transport));
        let body = match call.m.a_offer.clone() {
            Some(offer) => self.local_answer(&mut call, Side::A, &offer),
            // No offer in the INVITE: ours goes in the 200 (RFC 3264 §5), its answer in the ACK.
            None => self.local_offer(&mut call, Side::A),
        };
        if let Some(body) = body {
            resp.headers.push(Name::ContentType, "application/sdp");
            resp.body = body;
        }
        let asked = call.a.invite.headers.clone();
        self.answer_session_timer(now, &mut call, Side::A, &asked, &mut resp);
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
            let mut expanded = Vec::with_capacity(batch.len());
            for target in batch {
                match self.expand(now, call_ref, target.clone()) {
                    Ok(many) if !many.is_empty() => expanded.extend(many),
                    Ok(_) => {
                        let failure =
                            AttemptError::Unavailable(format!("nobody of {target} can answer now"));
                        info!(%target, error = %failure, "target not tried");
                        self.record_failure(call_ref, failure);
                    }
                    Err(failure) => {
                        info!(%target, status = failure.status_for_a(), error = %failure, "target not tried");
                        self.record_failure(call_ref, failure);
                    }
                }
            }
            for target in expanded {
                match self.originate(now, call_ref, &target, bridge.timeout) {
                    Ok(()) => started = true,
                    Err(NotStarted::Wait(retry)) if bridge.strategy == Strategy::Sequence => {
                        // A filter holds the call (waiting for a pool number): this target
                        // again, a little later.
                        if let Some(c) = self.calls.get_mut(&call_ref) {
                            c.next_target -= 1;
                        }
                        self.schedule(now + retry, call_ref, CallTimer::Retry);
                        return true;
                    }
                    Err(e) => {
                        let failure = match e {
                            NotStarted::Failed(f) => f,
                            // Ringing several targets at once, one cannot wait for the others.
                            NotStarted::Wait(_) => AttemptError::Refused {
                                module: "bridge",
                                reason: "a parallel target cannot wait".into(),
                            },
                        };
                        info!(%target, status = failure.status_for_a(), cause = %failure.cause(), error = %failure, "target not tried");
                        let fatal = failure == AttemptError::NoCommonCodec;
                        self.record_failure(call_ref, failure);
                        if fatal {
                            // No codec in common: no other target will do better.
                            if let Some(c) = self.calls.get_mut(&call_ref) {
                                c.stop_routing();
                            }
                            return false;
                        }
                    }
                }
            }
            if started {
                return true;
            }
        }
    }

    fn record_failure(&mut self, call_ref: CallRef, failure: AttemptError) {
        if let Some(call) = self.calls.get_mut(&call_ref) {
            let better = call
                .last_failure
                .as_ref()
                .is_none_or(|f| failure.rank() >= f.rank());
            if better {
                call.last_failure = Some(Box::new(failure));
            }
        }
    }

    fn originate(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        target: &Target,
        timeout: std::time::Duration,
    ) -> Result<(), NotStarted> {
        let route = self.resolve(now, call_ref, target)?;
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return Ok(());
        };
        let result = self
            .filter_invite(now, &mut call, target, route.caller.clone())
            .and_then(|invite| {
                self.originate_on(now, &mut call, target, route, invite, timeout)
                    .map_err(|e| {
                        // The filters let it through: what they gave it goes back.
                        self.attempt_over(now, call_ref, target);
                        NotStarted::Failed(e)
                    })
            });
        self.calls.insert(call_ref, call);
        result
    }

    /// The targets a target stands for: itself, or what its endpoint expands it to (the
    /// consoles of a queue's available agents, rung together).
    fn expand(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        target: Target,
    ) -> Result<Vec<Target>, AttemptError> {
        let Target::Endpoint { kind, name, user } = &target else {
            return Ok(vec![target]);
        };
        let Some(call) = self.calls.get(&call_ref) else {
            return Ok(Vec::new());
        };
        let destination = call.destination.clone();
        let caller = CallerId {
            number: call.caller.clone(),
            name: caller_name(&call.a.invite),
        };
        let ctx = OriginateCtx {
            call: call_ref,
            destination: &destination,
            caller: &caller,
        };
        let Some(endpoint) = self.modules.endpoint(kind) else {
            return Ok(vec![target]);
        };
        match endpoint.expand(now, TargetRef { kind, name, user }, &ctx) {
            None => Ok(vec![target]),
            Some(r) => r,
        }
    }

    /// Where a target goes: its endpoint's route (a SIP URI is its own route).
    fn resolve(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        target: &Target,
    ) -> Result<Route, AttemptError> {
        let call = self.calls.get(&call_ref).ok_or(AttemptError::Refused {
            module: "bridge",
            reason: "the call is gone".into(),
        })?;
        let eff = call.effective_caller.as_deref();
        let caller = CallerId {
            number: eff
                .and_then(|e| e.0.clone())
                .unwrap_or_else(|| call.caller.clone()),
            name: eff
                .and_then(|e| e.1.clone())
                .unwrap_or_else(|| caller_name(&call.a.invite)),
        };
        match target {
            Target::Endpoint { kind, name, user } => {
                let destination = call.destination.clone();
                let ctx = OriginateCtx {
                    call: call_ref,
                    destination: &destination,
                    caller: &caller,
                };
                let endpoint = self
                    .modules
                    .endpoint(kind)
                    .ok_or_else(|| AttemptError::NoEndpoint(kind.clone()))?;
                endpoint.resolve(now, TargetRef { kind, name, user }, &ctx)
            }
            Target::Uri(u) => {
                let uri =
                    Uri::parse(u).map_err(|_| AttemptError::BadUri(u.clone(), "not a SIP URI"))?;
                let Host::Ip(ip) = uri.host else {
                    warn!(target = %u, "DNS names in bridge targets are not resolved yet: use an IP or a gateway");
                    return Err(AttemptError::BadUri(
                        u.clone(),
                        "DNS names are not resolved yet",
                    ));
                };
                let transport = uri
                    .transport()
                    .and_then(Transport::from_token)
                    .unwrap_or(Transport::Udp);
                let peer = Peer {
                    transport,
                    addr: std::net::SocketAddr::new(ip, uri.port.unwrap_or(5060)),
                };
                Ok(Route {
                    peer,
                    request_uri: u.clone(),
                    caller,
                    dtmf: None,
                    srtp: Default::default(),
                })
            }
        }
    }

    /// The INVITE's caller ID and headers after the dialplan and every filter, in order.
    fn filter_invite(
        &mut self,
        now: Instant,
        call: &mut Call,
        target: &Target,
        caller: CallerId,
    ) -> Result<OutgoingInvite, NotStarted> {
        let mut invite = OutgoingInvite {
            call: call.id,
            target: target.clone(),
            caller,
            headers: Vec::new(),
            leases: Vec::new(),
        };
        for a in &call.plan.actions {
            match a {
                Action::HeaderAdd { name, value } => invite.add_header(name, value.clone()),
                Action::HeaderRemove(name) => invite.remove_header(name),
                _ => {}
            }
        }
        invite.headers.extend(call.module_headers.iter().cloned());
        for n in 0..self.modules.filter_count() {
            let Some((module, filter)) = self.modules.filter(n) else {
                continue;
            };
            match filter.filter(now, &mut invite) {
                Ok(()) => {}
                Err(FilterError::Refused(e)) => {
                    debug!(module, error = %e, "invite filter refused the attempt");
                    self.lease_events(call, &mut invite);
                    return Err(NotStarted::Failed(e));
                }
                Err(FilterError::Wait(d)) => {
                    debug!(
                        module,
                        wait_ms = d.as_millis() as u64,
                        "invite filter holds the attempt"
                    );
                    self.lease_events(call, &mut invite);
                    return Err(NotStarted::Wait(d));
                }
            }
        }
        self.lease_events(call, &mut invite);
        Ok(invite)
    }

    fn lease_events(&mut self, call: &Call, invite: &mut OutgoingInvite) {
        for (pool, item) in std::mem::take(&mut invite.leases) {
            self.event(CallEvent::Leased {
                call: call.id,
                pool,
                item,
            });
        }
    }

    /// Runs a module's dialplan action; `true` when the call ended.
    fn run_module_action(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        action: &switchboard_dialplan::ModuleAction,
    ) -> bool {
        let mut ctx = ActionCtx::new(call_ref);
        let result = match self.modules.action(&action.name) {
            Some(handler) => handler.run(now, action, &mut ctx),
            None => Err("no module runs this action (not loaded since the last reload?)".into()),
        };
        let ok = result.is_ok();
        let result = match result {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                warn!(action = %action.name, error = %e, "dialplan action failed");
                e
            }
        };
        self.event(CallEvent::Action {
            call: call_ref,
            name: action.name.clone(),
            result,
            ok,
            code: None,
            detail: None,
        });
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return true;
        };
        let mut hangup = None;
        for effect in ctx.effects {
            match effect {
                Effect::Attach(side, app) => self.attach_app(&mut call, side, app),
                Effect::Header(name, value) => call.module_headers.push((name, value)),
                Effect::Hangup(cause) => hangup = Some(cause),
            }
        }
        self.calls.insert(call_ref, call);
        if let Some(cause) = hangup {
            self.teardown(now, call_ref, cause, None);
            return true;
        }
        false
    }

    fn originate_on(
        &mut self,
        now: Instant,
        call: &mut Call,
        target: &Target,
        route: Route,
        invite: OutgoingInvite,
        timeout: std::time::Duration,
    ) -> Result<(), AttemptError> {
        let Route {
            peer,
            request_uri: ruri,
            dtmf,
            srtp,
            ..
        } = route;
        if call.offer_b.is_none() && !call.m.srtp[1].policy_set && call.m.srtp[1].policy != srtp {
            // The offer to leg B is made once, for the first target tried; the dialplan's
            // `srtp_b` wins over the gateway's `srtp`. (Compared first: writing the plain
            // default would make SRTP state for a call that has none.)
            call.m.srtp[1].policy = srtp;
        }
        if let Some(dtmf) = dtmf
            && call.m.dtmf[1].is_none()
        {
            call.m.dtmf[1] = Some(dtmf);
        }
        if call.offer_b.is_none()
            && let Some(offer) = call.m.a_offer.clone()
        {
            if self.cfg.anchor_media && self.alloc_media(call).is_none() {
                return Err(AttemptError::NoMediaPorts);
            }
            let body = self.sdp_to_other(call, Side::A, &offer, SdpIn::Request);
            if body.is_none() {
                debug!("offer refused: no codec in common");
                return Err(AttemptError::NoCommonCodec);
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
        let caller = &invite.caller;
        let from_uri = format!("sip:{}@{local}", escape_user(&caller.number));
        let from = if caller.name.is_empty() {
            format!("<{from_uri}>;tag={}", self.ids.tag())
        } else {
            format!(
                "\"{}\" <{from_uri}>;tag={}",
                caller.name.replace(['"', '\\'], ""),
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
        if peer.transport != Transport::Local {
            self.request_session_timer(&mut req.headers, None);
        }
        for (name, value) in invite.headers {
            req.headers
                .push(Name::from_str_lossless(&name.as_str().into()), value);
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
            route: Some(Box::new(target.clone())),
            authed: false,
            st_retried: false,
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
            CallTimer::Retry => return self.bridge_progress(now, call_ref),
            CallTimer::Session(side, generation) => {
                return self.session_timer_due(now, call_ref, side, generation);
            }
            CallTimer::App => {
                if let Some(mut call) = self.calls.remove(&call_ref) {
                    self.apps_timer(now, &mut call);
                    self.calls.insert(call_ref, call);
                }
                return;
            }
            CallTimer::TransferorBye => {
                if let Some(mut call) = self.calls.remove(&call_ref) {
                    if call.transfer.as_ref().is_some_and(|t| t.answered) {
                        info!("the transferor did not hang up: BYE");
                        self.hang_up_transferor(now, &mut call, None);
                    }
                    self.calls.insert(call_ref, call);
                }
                return;
            }
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
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return;
        };
        self.end_attempt(now, &mut call, i);
        self.calls.insert(call_ref, call);
        self.cancel_txn(now, txn);
        self.record_failure(call_ref, AttemptError::NoAnswer);
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
        let retry = call
            .last_failure
            .as_ref()
            .is_none_or(|f| f.cause().is_retryable());
        if retry && self.try_next_target(now, call_ref) {
            return;
        }
        if let Some(call) = self.calls.get_mut(&call_ref) {
            call.bridge = None;
            if !retry {
                // The callee answered (busy, rejected...): that is the call's answer.
                call.stop_routing();
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
        let mut cancel = make_cancel(invite);
        if self.cancel_elsewhere.remove(&txn) {
            // RFC 3326: a phone does not count the call as missed; a console says "answered
            // elsewhere".
            cancel.headers.push(
                Name::Reason,
                "SIP;cause=200;text=\"Call completed elsewhere\"",
            );
        }
        let id = self.txn.send_request(now, cancel, peer);
        self.clients.insert(id, ClientRole::Cancel);
        self.txn.cancel_sent(now, txn);
    }

    pub(crate) fn cancel_attempt(&mut self, now: Instant, call: &mut Call, i: usize) {
        if call.attempts[i].done {
            return;
        }
        let txn = call.attempts[i].txn;
        self.end_attempt(now, call, i);
        self.cancel_txn(now, txn);
    }

    /// An attempt is over without an answer: done, and the filters give back what it held.
    fn end_attempt(&mut self, now: Instant, call: &mut Call, i: usize) {
        let a = &mut call.attempts[i];
        a.done = true;
        if let Some(target) = a.route.take() {
            self.attempt_over(now, call.id, &target);
        }
    }

    /// Tells the filters an attempt at `target` is over; observers hear what was released.
    fn attempt_over(&mut self, now: Instant, call: CallRef, target: &Target) {
        self.release_from_filters(|f| f.attempt_ended(now, call, target));
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
        // RFC 3261 §9.1: any provisional, 100 Trying included, lets a CANCEL go.
        if (100..200).contains(&status) {
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
        if status == 422
            && !call.attempts[i].done
            && self.retry_with_min_se(now, &mut call, i, &resp)
        {
            self.forget_client(txn);
            self.calls.insert(call_ref, call);
            return;
        }
        match status {
            100 => {}
            101..=199 if !call.attempts[i].done => {
                if !call.attempts.iter().any(|a| a.ringing) {
                    self.event(CallEvent::Ringing { call: call.id });
                }
                call.attempts[i].ringing = true;
                if call.transfer.is_some() {
                    self.notify_transferor(now, &mut call, status, &resp.reason, false);
                }
                self.relay_provisional(now, &mut call, &resp);
                if call.m.srtp_refused {
                    self.calls.insert(call_ref, call);
                    self.teardown(now, call_ref, Cause::IncompatibleDestination, None);
                    return;
                }
            }
            200..=299 if call.winner == Some(i) => {
                // A retransmitted 2xx: ACK again if A already acknowledged ours.
                if let Some(peer) = call.b_peer {
                    self.ack_b_again(&call, peer);
                }
            }
            200..=299 if call.winner.is_none() && !call.attempts[i].done => {
                self.b_answered(now, &mut call, i, &resp);
                if call.m.srtp_refused {
                    // Leg B answered our RTP/SAVP offer without a key: it is ACKed and hung
                    // up, the caller gets 488.
                    self.calls.insert(call_ref, call);
                    self.teardown(now, call_ref, Cause::IncompatibleDestination, None);
                    return;
                }
            }
            200..=299 => {
                self.calls.insert(call_ref, call);
                self.reject_late_2xx(now, txn, &resp);
                return;
            }
            300.. if !call.attempts[i].done => {
                let failure = if call.attempts[i].timed_out {
                    AttemptError::NoAnswer
                } else {
                    AttemptError::Rejected { status }
                };
                self.end_attempt(now, &mut call, i);
                info!(target = %call.attempts[i].target, status, cause = %failure.cause(), "leg B failed");
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
            dialog_key(&self.dialog_keys, &dialog.id),
            (call.id, Side::B),
        );
        self.event(CallEvent::Bridged {
            call: call.id,
            b_call_id: dialog.id.call_id.to_string(),
            target: attempt.target.clone(),
        });
        call.b_dialog = Some(dialog);
        call.b_peer = Some(peer);
        self.answered_session_timer(now, call, Side::B, &resp.headers);
        for j in 0..call.attempts.len() {
            if j != i {
                if !call.attempts[j].done {
                    self.cancel_elsewhere.insert(now, call.attempts[j].txn);
                }
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
            if call.m.srtp_refused {
                return;
            }
            self.ack_b(call, ack_body);
            if call.state != CallState::Up {
                self.up_calls += 1;
                call.state = CallState::Up;
            }
            if call.transfer.is_some() {
                self.transfer_answered(now, call);
            }
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
        if call.m.srtp_refused {
            return;
        }
        let asked = call.a.invite.headers.clone();
        self.answer_session_timer(now, call, Side::A, &asked, &mut out);
        self.txn.respond(now, call.a.invite_txn, out);
        self.a_answered(now, call);
    }

    /// Leg A got our 2xx: its dialog exists from now on (waiting for its ACK).
    fn a_answered(&mut self, now: Instant, call: &mut Call) {
        call.a.finalized = true;
        call.a.dialog = uas_dialog(&call.a.invite, &call.a.tag);
        if let Some(d) = &call.a.dialog {
            self.dialogs
                .insert(dialog_key(&self.dialog_keys, &d.id), (call.id, Side::A));
        }
        if call.state == CallState::Up {
            self.up_calls = self.up_calls.saturating_sub(1);
        }
        call.state = CallState::Answered;
        call.answered_at = Some(now);
        call.a.slim_invite();
        self.event(CallEvent::Answered {
            call: call.id,
            target: call
                .winner
                .and_then(|i| call.attempts.get(i))
                .map(|a| a.target.clone()),
            b_call_id: call.b_dialog.as_ref().map(|d| d.id.call_id.to_string()),
            codecs: [0, 1].map(|i| call.m.fmt[i].as_ref().map(|f| f.name.clone())),
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
        call.b_acked = true;
        match body {
            Some(b) => {
                ack.headers.push(Name::ContentType, "application/sdp");
                ack.body = b;
                let bytes = Bytes::from(Message::Request(ack).to_bytes());
                self.txn.send_raw(peer, bytes.clone());
                call.b_ack = Some(bytes);
            }
            None => self.txn.send_stateless(peer, &Message::Request(ack)),
        }
    }

    /// Leg B's 2xx came again (its `to`: where from): the ACK again, if it was sent — the
    /// same bytes when it carried an answer, else rebuilt from the dialog (a new Via branch:
    /// an ACK for a 2xx is a transaction of its own, RFC 3261 §13.2.2.4).
    pub(crate) fn ack_b_again(&mut self, call: &Call, to: Peer) {
        if !call.b_acked {
            return;
        }
        if let Some(ack) = &call.b_ack {
            self.txn.send_raw(to, ack.clone());
            return;
        }
        let Some(mut ack) = call
            .b_dialog
            .as_ref()
            .and_then(|d| ack_for(d, &call.attempts, call.winner))
        else {
            return;
        };
        ack.headers.push_front(Name::Via, self.via(to.transport));
        self.txn.send_stateless(to, &Message::Request(ack));
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

    /// Nothing more to try: no target of the bridge, no action of the plan.
    fn stop_routing(&mut self) {
        self.plan_cursor = self.plan.actions.len();
        if let Some(b) = &self.bridge {
            self.next_target = b.targets.len();
        }
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
pub fn escape_user(user: &str) -> String {
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
