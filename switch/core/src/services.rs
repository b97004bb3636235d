//! Driving the modules' services (their SIP work outside calls), and answering a leg B's
//! digest challenge through the target's endpoint (RFC 3261 §22.2).

use std::time::{Duration, Instant};

use switchboard_dialplan::Target;
use switchboard_sip::transaction::{Peer, TxnId};
use switchboard_sip::{Header, Name, Request, Response};
use tracing::info;

use crate::call::Call;
use crate::config::EngineConfig;
use crate::engine::{CallTimer, ClientRole, Engine};
use crate::ids::IdGen;
use crate::module::{SipOut, TargetRef};

fn sip_out<'a>(ids: &'a mut IdGen, cfg: &'a EngineConfig) -> SipOut<'a> {
    SipOut {
        ids,
        udp: cfg.udp,
        tcp: cfg.tcp,
        tls: cfg.tls,
        user_agent: &cfg.user_agent,
        out: Vec::new(),
    }
}

impl Engine {
    /// Lets every service look at the time (they keep their own schedules, so this is cheap)
    /// and sends what they ask.
    pub(crate) fn run_services(&mut self, now: Instant) {
        for n in 0..self.modules.service_count() {
            let mut sip = sip_out(&mut self.ids, &self.cfg);
            if let Some(s) = self.modules.service(n) {
                s.handle_timeout(now, &mut sip);
            }
            let out = sip.out;
            self.send_service(now, n, out);
        }
    }

    fn send_service(&mut self, now: Instant, n: usize, out: Vec<(Request, Peer, u64)>) {
        for (mut req, peer, cookie) in out {
            let via = self.via(peer.transport);
            req.headers.0.insert(
                0,
                Header {
                    name: Name::Via,
                    value: via.into(),
                },
            );
            if req.headers.get(&Name::UserAgent).is_none() {
                req.headers
                    .push(Name::UserAgent, self.cfg.user_agent.clone());
            }
            let id = self.txn.send_request(now, req, peer);
            self.clients.insert(id, ClientRole::Service(n, cookie));
        }
    }

    /// A service's request got its final response (`None`: Timer F).
    pub(crate) fn on_service_response(
        &mut self,
        now: Instant,
        id: TxnId,
        n: usize,
        cookie: u64,
        resp: Option<&Response>,
    ) {
        self.forget_client(id);
        let mut sip = sip_out(&mut self.ids, &self.cfg);
        if let Some(s) = self.modules.service(n) {
            s.handle_response(now, cookie, resp, &mut sip);
        }
        let out = sip.out;
        self.send_service(now, n, out);
    }

    /// A gateway challenged our INVITE: send it again, once, with credentials.
    /// `true` when a new INVITE went out (the attempt goes on under a new transaction).
    pub(crate) fn retry_with_auth(
        &mut self,
        now: Instant,
        call: &mut Call,
        i: usize,
        resp: &Response,
    ) -> bool {
        let attempt = &call.attempts[i];
        if attempt.authed {
            return false;
        }
        let Some(Target::Endpoint { kind, name, user }) = attempt.route.as_deref() else {
            return false;
        };
        let cnonce = format!("{:x}", attempt.txn.0 ^ 0x5eed);
        let uri = attempt.invite.uri.to_string();
        let Some((header, value)) = self.modules.endpoint(kind).and_then(|e| {
            e.answer_challenge(
                TargetRef { kind, name, user },
                resp,
                "INVITE",
                &uri,
                &cnonce,
            )
        }) else {
            return false;
        };
        info!(target = %attempt.target, "gateway asked for credentials: INVITE again with them");
        self.invite_again(now, call, i, |h| h.push(header, value));
        call.attempts[i].authed = true;
        true
    }

    /// Sends an attempt's INVITE again, changed by `edit` (credentials, a longer session
    /// interval): a new transaction with the next CSeq, the same dialog-to-be.
    pub(crate) fn invite_again(
        &mut self,
        now: Instant,
        call: &mut Call,
        i: usize,
        edit: impl FnOnce(&mut switchboard_sip::Headers),
    ) {
        let attempt = &call.attempts[i];
        let mut invite = attempt.invite.clone();
        let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1) + 1;
        let via = self.via(attempt.peer.transport);
        invite.headers.0.retain(|h| h.name != Name::Via);
        invite.headers.0.insert(
            0,
            Header {
                name: Name::Via,
                value: via.into(),
            },
        );
        invite.headers.set(Name::CSeq, format!("{seq} INVITE"));
        edit(&mut invite.headers);
        let peer = attempt.peer;
        let txn = self.txn.send_request(now, invite.clone(), peer);
        self.clients.insert(txn, ClientRole::Attempt(call.id));
        let attempt = &mut call.attempts[i];
        attempt.txn = txn;
        attempt.invite = invite;
        let ring = call
            .bridge
            .as_ref()
            .map_or(Duration::from_secs(30), |b| b.timeout);
        self.schedule(now + ring, call.id, CallTimer::Ring(txn));
    }
}
