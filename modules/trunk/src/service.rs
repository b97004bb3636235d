//! The trunk's SIP work outside calls: OPTIONS pings (a gateway that stops answering is
//! marked down and skipped by routing) and outbound registration (RFC 3261 §10.2: REGISTER
//! at start and before expiry, digest answers to challenges, §22.2).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use switchboard_core::module::{Service, SipOut};
use switchboard_core::{ALLOW, fmt_addr, transport_param};
use switchboard_sip::transaction::Peer;
use switchboard_sip::typed::NameAddr;
use switchboard_sip::{Method, Name, Request, Response};
use tracing::{info, warn};

use crate::digest::authorization;
use crate::module::Trunk;

/// How long after a failed registration we try again.
const RETRY_FAILED: Duration = Duration::from_secs(60);
/// How long after a registration that got no answer we try again.
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// A request of ours waiting for its answer.
#[derive(Debug, Clone)]
enum Pending {
    Ping(String),
    /// Gateway, and how many challenges were answered.
    Register(String, u8),
}

/// Requests in flight, by cookie.
#[derive(Debug, Default)]
pub(crate) struct State {
    pending: HashMap<u64, Pending>,
    next: u64,
}

impl State {
    fn cookie(&mut self, p: Pending) -> u64 {
        self.next += 1;
        self.pending.insert(self.next, p);
        self.next
    }
}

/// The credential header answering a 401 (`Authorization`) or a 407 (`Proxy-Authorization`),
/// with the challenge.
pub(crate) fn answer_for(resp: &Response) -> Option<(Name, &str)> {
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

impl Service for Trunk {
    fn poll_timeout(&self) -> Option<Instant> {
        self.gateways.next_wakeup()
    }

    fn handle_timeout(&mut self, now: Instant, sip: &mut SipOut<'_>) {
        for (name, addr, transport) in self.gateways.due_pings(now) {
            self.send_ping(&name, Peer { transport, addr }, sip);
        }
        for name in self.gateways.due_registrations(now) {
            self.send_register(&name, None, 0, sip);
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        cookie: u64,
        resp: Option<&Response>,
        sip: &mut SipOut<'_>,
    ) {
        match self.service.pending.remove(&cookie) {
            Some(Pending::Ping(name)) => self.ping_result(&name, resp.map(|r| r.status)),
            Some(Pending::Register(name, tries)) => {
                self.on_register_response(now, &name, tries, resp, sip);
            }
            None => {}
        }
    }
}

impl Trunk {
    fn send_ping(&mut self, name: &str, peer: Peer, sip: &mut SipOut<'_>) {
        let uri = format!(
            "sip:{}{}",
            fmt_addr(peer.addr),
            transport_param(peer.transport)
        );
        let mut req = Request::new(Method::Options, uri.clone());
        req.headers.push(Name::MaxForwards, "70");
        let local = fmt_addr(sip.local_addr(peer.transport));
        req.headers
            .push(Name::From, format!("<sip:ping@{local}>;tag={}", sip.tag()));
        req.headers.push(Name::To, format!("<{uri}>"));
        req.headers.push(Name::CallId, sip.call_id());
        req.headers.push(Name::CSeq, "1 OPTIONS");
        let cookie = self.service.cookie(Pending::Ping(name.to_owned()));
        sip.send(req, peer, cookie);
    }

    fn ping_result(&mut self, name: &str, status: Option<u16>) {
        if let Some(up) = self.gateways.ping_result(name, status) {
            if up {
                info!(gateway = %name, "gateway is up");
            } else {
                let why = self
                    .gateways
                    .get(name)
                    .and_then(|g| g.down_reason())
                    .unwrap_or("")
                    .to_owned();
                warn!(gateway = %name, ?status, reason = %why, "gateway is down: routing skips it");
            }
        }
    }

    fn send_register(
        &mut self,
        name: &str,
        auth: Option<(Name, String)>,
        tries: u8,
        sip: &mut SipOut<'_>,
    ) {
        let (fresh_call_id, fresh_tag) = (sip.call_id(), sip.tag());
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
            .unwrap_or_else(|| fmt_addr(gw.addr));
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
        req.headers.push(Name::MaxForwards, "70");
        req.headers.push(Name::From, format!("<{aor}>;tag={tag}"));
        req.headers.push(Name::To, format!("<{aor}>"));
        req.headers.push(Name::CallId, call_id);
        req.headers.push(Name::CSeq, format!("{cseq} REGISTER"));
        let local = fmt_addr(sip.local_addr(peer.transport));
        let tp = transport_param(peer.transport);
        req.headers
            .push(Name::Contact, format!("<sip:{user}@{local}{tp}>"));
        req.headers.push(Name::Expires, expires.to_string());
        req.headers.push(Name::Allow, ALLOW);
        req.headers
            .push(Name::UserAgent, sip.user_agent().to_owned());
        if let Some((h, v)) = auth {
            req.headers.push(h, v);
        }
        let cookie = self
            .service
            .cookie(Pending::Register(name.to_owned(), tries));
        sip.send(req, peer, cookie);
    }

    /// A final response (or a timeout: `None`) to a REGISTER.
    fn on_register_response(
        &mut self,
        now: Instant,
        name: &str,
        tries: u8,
        resp: Option<&Response>,
        sip: &mut SipOut<'_>,
    ) {
        let Some(resp) = resp else {
            warn!(gateway = %name, "registration got no answer");
            self.gateways
                .register_result(name, now, Err(None), RETRY_TIMEOUT);
            return;
        };
        match resp.status {
            200..=299 => {
                let granted = granted_expires(resp)
                    .or_else(|| {
                        self.gateways
                            .get(name)
                            .and_then(|g| g.config.register_expires)
                    })
                    .unwrap_or(600);
                info!(gateway = %name, expires = granted, "registered");
                self.gateways
                    .register_result(name, now, Ok(granted), RETRY_FAILED);
            }
            401 | 407 if tries < 2 => {
                let cnonce = sip.tag();
                let answer = answer_for(resp).and_then(|(header, challenge)| {
                    let g = self.gateways.get(name)?;
                    let domain = g.config.domain.clone().unwrap_or_else(|| fmt_addr(g.addr));
                    let v = authorization(
                        challenge,
                        "REGISTER",
                        &format!("sip:{domain}"),
                        g.credentials()?,
                        &cnonce,
                        1,
                    )
                    .ok()?;
                    Some((header, v))
                });
                match answer {
                    Some(auth) => self.send_register(name, Some(auth), tries + 1, sip),
                    None => {
                        warn!(gateway = %name, status = resp.status, "cannot answer the registrar's challenge");
                        self.gateways.register_result(
                            name,
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
                    .register_result(name, now, Err(Some(status)), RETRY_FAILED);
            }
        }
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
