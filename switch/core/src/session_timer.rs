//! Session timers (RFC 4028), each leg on its own: the interval and the refresher are agreed
//! with each leg in its own INVITE or re-INVITE/UPDATE transaction; where we refresh, we send
//! an UPDATE (or a re-INVITE with the same SDP, to a peer that takes no UPDATE) at half the
//! interval; where the leg refreshes and does not, the call is hung up before the interval
//! ends (§10: the session has expired). Long calls through NATs and carriers that lose state
//! are ended cleanly instead of lingering.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_dialplan::Cause;
use switchboard_media::Side;
use switchboard_sip::{Headers, Message, Method, Name, Response};
use tracing::{debug, info, warn};

use crate::call::Call;
use crate::engine::{CallTimer, ClientRole, Engine};
use crate::ids::CallRef;
use crate::media::idx;

/// Who refreshes, as `Session-Expires` says it (relative to the transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// One leg's session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LegTimer {
    /// The interval agreed, seconds.
    pub se: u32,
    /// We refresh (else the leg does).
    pub we_refresh: bool,
    /// The leg takes UPDATE (its Allow said so): refreshes need no SDP.
    pub update: bool,
    /// Bumped at each (re)start: a timer of an earlier generation is stale.
    pub generation: u32,
}

/// `Session-Expires` (or its compact `x`): interval and refresher.
pub(crate) fn session_expires(h: &Headers) -> Option<(u32, Option<Refresher>)> {
    let v = h
        .get_other("Session-Expires")
        .or_else(|| h.get_other("x"))?;
    let mut parts = v.split(';');
    let secs = parts.next()?.trim().parse::<u32>().ok()?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("refresher") {
            return None;
        }
        match v.trim().to_ascii_lowercase().as_str() {
            "uac" => Some(Refresher::Uac),
            "uas" => Some(Refresher::Uas),
            _ => None,
        }
    });
    Some((secs, refresher))
}

/// `Min-SE`, seconds.
pub(crate) fn min_se(h: &Headers) -> Option<u32> {
    h.get_other("Min-SE")?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn lists(h: &Headers, name: &Name, token: &str) -> bool {
    h.all(name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The peer supports session timers (`Supported` or `Require: timer`).
pub(crate) fn supports_timer(h: &Headers) -> bool {
    lists(h, &Name::Supported, "timer") || lists(h, &Name::Require, "timer")
}

/// How long before the interval ends a session whose leg refreshes is hung up (§10).
fn expiry(se: u32) -> Duration {
    Duration::from_secs(u64::from(se - (se / 3).min(32)))
}

impl Engine {
    /// The interval and refresher we answer a request from a leg with (we are its UAS), or
    /// none (timers off and none asked for).
    pub(crate) fn uas_session_timer(&self, req: &Headers) -> Option<(u32, Refresher)> {
        let asked = session_expires(req);
        if asked.is_none() && self.cfg.session_expires == 0 {
            return None;
        }
        let se = asked
            .map_or(self.cfg.session_expires, |a| a.0)
            .max(min_se(req).unwrap_or(0))
            .max(self.cfg.min_se);
        let refresher = match asked.and_then(|a| a.1) {
            Some(r) => r,
            None if supports_timer(req) => Refresher::Uac,
            None => Refresher::Uas,
        };
        // A UAC that does not support timers cannot be made to refresh (§9).
        let refresher = if supports_timer(req) {
            refresher
        } else {
            Refresher::Uas
        };
        Some((se, refresher))
    }

    /// Our 2xx to a leg's INVITE or UPDATE carries the timer agreed for that leg, which runs
    /// from now.
    pub(crate) fn answer_session_timer(
        &mut self,
        now: Instant,
        call: &mut Call,
        side: Side,
        req: &Headers,
        resp: &mut Response,
    ) {
        if in_process(call, side) {
            return;
        }
        let Some((se, refresher)) = self.uas_session_timer(req) else {
            return;
        };
        resp.headers.push(
            Name::Other("Session-Expires".into()),
            format!("{se};refresher={}", refresher.as_str()),
        );
        if refresher == Refresher::Uac {
            resp.headers.push(Name::Require, "timer");
        }
        let update = lists(req, &Name::Allow, "UPDATE");
        self.start_session_timer(now, call, side, se, refresher == Refresher::Uas, update);
    }

    /// The headers of a request of ours that asks a leg for a timer (we are its UAC).
    pub(crate) fn request_session_timer(
        &self,
        headers: &mut Headers,
        refresher: Option<Refresher>,
    ) {
        if self.cfg.session_expires == 0 {
            return;
        }
        headers.push(Name::Supported, "timer");
        let se = match refresher {
            Some(r) => format!("{};refresher={}", self.cfg.session_expires, r.as_str()),
            None => self.cfg.session_expires.to_string(),
        };
        headers.push(Name::Other("Session-Expires".into()), se);
        headers.push(Name::Other("Min-SE".into()), self.cfg.min_se.to_string());
    }

    /// Leg B refused our interval as too short (422, RFC 4028 §7.4): the INVITE again with
    /// the interval its `Min-SE` names, once. `false` when it cannot be retried.
    pub(crate) fn retry_with_min_se(
        &mut self,
        now: Instant,
        call: &mut Call,
        i: usize,
        resp: &Response,
    ) -> bool {
        // A day: a larger floor is not an interval any peer means.
        const MAX_SE: u32 = 86_400;
        let floor = resp
            .headers
            .get_other("Min-SE")
            .and_then(|v| v.split(';').next()?.trim().parse::<u32>().ok());
        let Some(floor) = floor.filter(|f| (1..=MAX_SE).contains(f)) else {
            return false;
        };
        if call.attempts[i].st_retried {
            return false;
        }
        let asked = session_expires(&call.attempts[i].invite.headers).map_or(0, |(se, _)| se);
        if floor <= asked {
            return false;
        }
        info!(
            target = %call.attempts[i].target,
            min_se = floor,
            "leg B wants a longer session interval (422): INVITE again with it"
        );
        self.invite_again(now, call, i, |h| {
            h.0.retain(|x| {
                let n = x.name.as_str();
                !(n.eq_ignore_ascii_case("Session-Expires")
                    || n.eq_ignore_ascii_case("x")
                    || n.eq_ignore_ascii_case("Min-SE"))
            });
            if !lists(h, &Name::Supported, "timer") {
                h.push(Name::Supported, "timer");
            }
            h.push(Name::Other("Session-Expires".into()), floor.to_string());
            h.push(Name::Other("Min-SE".into()), floor.to_string());
        });
        call.attempts[i].st_retried = true;
        true
    }

    /// A leg's 2xx to a request of ours (we are its UAC): the timer it agreed, if any.
    pub(crate) fn answered_session_timer(
        &mut self,
        now: Instant,
        call: &mut Call,
        side: Side,
        resp: &Headers,
    ) {
        if in_process(call, side) {
            return;
        }
        let update =
            lists(resp, &Name::Allow, "UPDATE") || call.st[idx(side)].is_some_and(|t| t.update);
        match session_expires(resp) {
            Some((se, r)) => {
                let we_refresh = r != Some(Refresher::Uas);
                self.start_session_timer(now, call, side, se.max(1), we_refresh, update);
            }
            // No timer in the answer: none on this leg (§7.2).
            None => call.st[idx(side)] = None,
        }
    }

    fn start_session_timer(
        &mut self,
        now: Instant,
        call: &mut Call,
        side: Side,
        se: u32,
        we_refresh: bool,
        update: bool,
    ) {
        // Unique among the engine's timers: a leg replaced by a transfer leaves none of its
        // own that could pass for the new leg's.
        let generation = u32::try_from(self.next_timer % u64::from(u32::MAX)).unwrap_or(0) + 1;
        call.st[idx(side)] = Some(LegTimer {
            se,
            we_refresh,
            update,
            generation,
        });
        let at = if we_refresh {
            now + Duration::from_secs(u64::from(se / 2))
        } else {
            now + expiry(se)
        };
        debug!(?side, se, we_refresh, "session timer");
        self.schedule(at, call.id, CallTimer::Session(side, generation));
    }

    /// A leg's session timer is due: our refresh, or its session has expired.
    pub(crate) fn session_timer_due(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        side: Side,
        generation: u32,
    ) {
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return;
        };
        let Some(t) = call.st[idx(side)].filter(|t| t.generation == generation) else {
            self.calls.insert(call_ref, call);
            return;
        };
        if !t.we_refresh {
            self.calls.insert(call_ref, call);
            info!(
                ?side,
                se = t.se,
                "session expired: the leg sent no refresh (RFC 4028)"
            );
            self.teardown(now, call_ref, Cause::RecoveryOnTimerExpire, None);
            return;
        }
        self.send_refresh(now, &mut call, side, t);
        self.calls.insert(call_ref, call);
    }

    fn send_refresh(&mut self, now: Instant, call: &mut Call, side: Side, t: LegTimer) {
        let sdp = call.m.sent[idx(side)].clone();
        let method = if t.update || sdp.is_none() {
            Method::Update
        } else {
            Method::Invite
        };
        let (dialog, peer) = match side {
            Side::A => (call.a.dialog.as_mut(), Some(call.a.peer)),
            Side::B => (call.b_dialog.as_mut(), call.b_peer),
        };
        let (Some(d), Some(peer)) = (dialog, peer) else {
            return;
        };
        let mut req = d.make_request(method.clone(), None);
        req.headers
            .push(Name::Contact, self.contact(peer.transport));
        self.request_session_timer(&mut req.headers, Some(Refresher::Uac));
        if method == Method::Invite
            && let Some(body) = sdp
        {
            // The SDP the leg has already (same version): no change to the session.
            req.headers.push(Name::ContentType, "application/sdp");
            req.body = body;
        }
        debug!(?side, %method, "session refresh");
        // Until it is answered, the timer stands where the session would expire.
        let at = now + expiry(t.se).saturating_sub(Duration::from_secs(u64::from(t.se / 2)));
        self.schedule(
            at.max(now + Duration::from_secs(1)),
            call.id,
            CallTimer::Session(side, t.generation),
        );
        if let Some(ct) = call.st[idx(side)].as_mut() {
            // The next firing of this generation is the session's end, not another refresh.
            ct.we_refresh = false;
        }
        self.send_in_dialog(now, req, peer, ClientRole::Refresh(call.id, side), None);
    }

    /// The answer to one of our refreshes.
    pub(crate) fn on_refresh_response(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        side: Side,
        resp: Option<&Response>,
    ) {
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return;
        };
        let status = resp.map_or(408, |r| r.status);
        match (status, resp) {
            (200..=299, Some(r)) => {
                if r.headers.cseq().is_ok_and(|c| c.method == Method::Invite) {
                    self.ack_refresh(&mut call, side, r);
                }
                self.answered_session_timer(now, &mut call, side, &r.headers);
            }
            (405 | 501, _) if call.st[idx(side)].is_some_and(|t| t.update) => {
                // It takes no UPDATE after all: a re-INVITE next time, at once.
                if let Some(t) = call.st[idx(side)].as_mut() {
                    t.update = false;
                    t.we_refresh = true;
                    let t = *t;
                    if call.m.sent[idx(side)].is_some() {
                        self.send_refresh(now, &mut call, side, t);
                    }
                }
            }
            (408 | 481, _) => {
                self.calls.insert(call_ref, call);
                info!(?side, status, "session refresh failed: the dialog is gone");
                self.teardown(now, call_ref, Cause::RecoveryOnTimerExpire, None);
                return;
            }
            _ => warn!(
                ?side,
                status, "session refresh refused: the session expires unless it is refreshed"
            ),
        }
        self.calls.insert(call_ref, call);
    }

    fn ack_refresh(&mut self, call: &mut Call, side: Side, resp: &Response) {
        let (dialog, peer) = match side {
            Side::A => (call.a.dialog.as_mut(), Some(call.a.peer)),
            Side::B => (call.b_dialog.as_mut(), call.b_peer),
        };
        let (Some(d), Some(peer)) = (dialog, peer) else {
            return;
        };
        d.refresh_target(&resp.headers);
        let seq = resp.headers.cseq().map(|c| c.seq).ok();
        let mut ack = d.make_request(Method::Ack, seq);
        ack.headers.push_front(Name::Via, self.via(peer.transport));
        self.txn.send_stateless(peer, &Message::Request(ack));
    }
}

/// A leg inside the switch (the browser leg's SIP face, a console agent): its session is
/// the process's own; no timer.
pub(crate) fn in_process(call: &Call, side: Side) -> bool {
    let peer = match side {
        Side::A => Some(call.a.peer),
        Side::B => call
            .b_peer
            .or_else(|| call.attempts.iter().rev().find(|a| !a.done).map(|a| a.peer)),
    };
    peer.is_some_and(|p| p.transport == switchboard_sip::transaction::Transport::Local)
}

/// The SDP last sent to a leg is kept for a re-INVITE refresh.
pub(crate) fn remember(call: &mut Call, side: Side, body: &Bytes) {
    call.m.sent[idx(side)] = Some(body.clone());
}
