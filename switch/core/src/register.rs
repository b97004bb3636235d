//! Outbound registration to gateways (RFC 3261 §10.2) and digest answers to challenges
//! (§22.2): REGISTER on start and before expiry, INVITEs re-sent once with credentials.

use std::time::{Duration, Instant};

use switchboard_sip::transaction::{Peer, TxnId};
use switchboard_sip::typed::NameAddr;
use switchboard_sip::{Header, Method, Name, Request, Response};
use switchboard_trunk::digest::authorization;
use tracing::{info, warn};

use crate::call::Call;
use crate::engine::{ALLOW, CallTimer, ClientRole, Engine};

/// How long after a failed registration we try again.
const RETRY_FAILED: Duration = Duration::from_secs(60);
/// How long after a registration that got no answer we try again.
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// The credential header answering a 401 (`Authorization`) or a 407 (`Proxy-Authorization`).
fn answer_for(resp: &Response) -> Option<(Name, &str)> {
    match resp.status {
        401 => Some((
            Name::Authorization,
            resp.headers.get(&Name::WwwAuthenticate)?,
        )),
        407 => Some((
            Name::ProxyAuthorization,
            resp.headers.get(&Name::ProxyAuthenticate)?,
        )),
        _ => None,
    }
}

impl Engine {
    pub(crate) fn send_due_registrations(&mut self, now: Instant) {
        for name in self.gateways.due_registrations(now) {
            self.send_register(now, &name, None, 0);
        }
    }

    fn send_register(&mut self, now: Instant, name: &str, auth: Option<(Name, String)>, tries: u8) {
        let (fresh_call_id, fresh_tag) = (self.ids.call_id(), self.ids.tag());
        let Some(gw) = self.gateways.get_mut(name) else {
            return;
        };
        let peer = Peer {
            transport: gw.transport,
            addr: gw.addr,
        };
        let user = gw.config.username.clone().unwrap_or_default();
        let domain = gw
            .config
            .domain
            .clone()
            .unwrap_or_else(|| crate::engine::fmt_addr(gw.addr));
        let expires = gw.config.register_expires.unwrap_or(600);
        let Some(reg) = gw.registration.as_mut() else {
            return;
        };
        reg.cseq += 1;
        let cseq = reg.cseq;
        let call_id = reg.call_id.get_or_insert(fresh_call_id).clone();
        let tag = reg.tag.get_or_insert(fresh_tag).clone();
        let aor = format!("sip:{user}@{domain}");
        let mut req = Request::new(Method::Register, format!("sip:{domain}"));
        req.headers.push(Name::Via, self.via(peer.transport));
        req.headers.push(Name::MaxForwards, "70");
        req.headers.push(Name::From, format!("<{aor}>;tag={tag}"));
        req.headers.push(Name::To, format!("<{aor}>"));
        req.headers.push(Name::CallId, call_id);
        req.headers.push(Name::CSeq, format!("{cseq} REGISTER"));
        let local = crate::engine::fmt_addr(self.local_addr(peer.transport));
        let tp = crate::engine::transport_param(peer.transport);
        req.headers
            .push(Name::Contact, format!("<sip:{user}@{local}{tp}>"));
        req.headers.push(Name::Expires, expires.to_string());
        req.headers.push(Name::Allow, ALLOW);
        req.headers
            .push(Name::UserAgent, self.cfg.user_agent.clone());
        if let Some((h, v)) = auth {
            req.headers.push(h, v);
        }
        let id = self.txn.send_request(now, req, peer);
        self.clients.insert(id, ClientRole::Register);
        self.registers.insert(id, (name.to_owned(), tries));
    }

    /// A final response (or a timeout: `None`) to a REGISTER.
    pub(crate) fn on_register_response(&mut self, now: Instant, id: TxnId, resp: Option<Response>) {
        self.forget_client(id);
        let Some((name, tries)) = self.registers.remove(&id) else {
            return;
        };
        let Some(resp) = resp else {
            warn!(gateway = %name, "registration got no answer");
            self.gateways
                .register_result(&name, now, Err(None), RETRY_TIMEOUT);
            return;
        };
        match resp.status {
            200..=299 => {
                let granted = granted_expires(&resp)
                    .or_else(|| {
                        self.gateways
                            .get(&name)
                            .and_then(|g| g.config.register_expires)
                    })
                    .unwrap_or(600);
                info!(gateway = %name, expires = granted, "registered");
                self.gateways
                    .register_result(&name, now, Ok(granted), RETRY_FAILED);
            }
            401 | 407 if tries < 2 => {
                let Some((header, challenge)) = answer_for(&resp) else {
                    self.gateways
                        .register_result(&name, now, Err(Some(resp.status)), RETRY_FAILED);
                    return;
                };
                let cnonce = self.ids.tag();
                let answer = self.gateways.get(&name).and_then(|g| {
                    let domain = g
                        .config
                        .domain
                        .clone()
                        .unwrap_or_else(|| crate::engine::fmt_addr(g.addr));
                    authorization(
                        challenge,
                        "REGISTER",
                        &format!("sip:{domain}"),
                        g.credentials()?,
                        &cnonce,
                        1,
                    )
                    .ok()
                });
                match answer {
                    Some(v) => self.send_register(now, &name, Some((header, v)), tries + 1),
                    None => {
                        warn!(gateway = %name, status = resp.status, "cannot answer the registrar's challenge");
                        self.gateways.register_result(
                            &name,
                            now,
                            Err(Some(resp.status)),
                            RETRY_FAILED,
                        );
                    }
                }
            }
            status => {
                warn!(gateway = %name, status, "registration refused");
                self.gateways
                    .register_result(&name, now, Err(Some(status)), RETRY_FAILED);
            }
        }
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
        let Some(gw) = attempt
            .gateway
            .as_deref()
            .and_then(|g| self.gateways.get(g))
        else {
            return false;
        };
        let Some((header, challenge)) = answer_for(resp) else {
            return false;
        };
        let cnonce = format!("{:x}", attempt.txn.0 ^ 0x5eed);
        let Some(value) = gw.credentials().and_then(|c| {
            authorization(challenge, "INVITE", &attempt.invite.uri, c, &cnonce, 1).ok()
        }) else {
            return false;
        };
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
        invite.headers.push(header, value);
        let peer = attempt.peer;
        info!(target = %attempt.target, "gateway asked for credentials: INVITE again with them");
        let txn = self.txn.send_request(now, invite.clone(), peer);
        self.clients.insert(txn, ClientRole::Attempt(call.id));
        let attempt = &mut call.attempts[i];
        attempt.txn = txn;
        attempt.invite = invite;
        attempt.authed = true;
        let ring = call
            .bridge
            .as_ref()
            .map_or(Duration::from_secs(30), |b| b.timeout);
        self.schedule(now + ring, call.id, CallTimer::Ring(txn));
        true
    }
}

/// What the registrar granted: our Contact's `expires`, else the Expires header.
fn granted_expires(resp: &Response) -> Option<u32> {
    let from_contact = resp
        .headers
        .entries(&Name::Contact)
        .filter_map(|c| NameAddr::parse(c, "Contact").ok())
        .find_map(|c| {
            c.params
                .get("expires")
                .flatten()
                .and_then(|e| e.parse().ok())
        });
    from_contact.or_else(|| {
        resp.headers
            .get(&Name::Expires)
            .and_then(|e| e.trim().parse().ok())
    })
}
