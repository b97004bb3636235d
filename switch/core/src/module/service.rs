//! `Service`: a module's own SIP work outside calls (a trunk's REGISTER and OPTIONS pings),
//! sans-IO: it says when it wants to run and what to send; the engine runs the transactions
//! and hands back their final responses.

use std::net::SocketAddr;
use std::time::Instant;

use switchboard_sip::transaction::{Peer, Transport};
use switchboard_sip::{Request, Response};

use crate::ids::IdGen;

/// What a service may use to build requests, and where it puts them.
#[derive(Debug)]
pub struct SipOut<'a> {
    pub(crate) ids: &'a mut IdGen,
    pub(crate) udp: Option<SocketAddr>,
    pub(crate) tcp: Option<SocketAddr>,
    pub(crate) tls: Option<SocketAddr>,
    pub(crate) user_agent: &'a str,
    pub(crate) out: Vec<(Request, Peer, u64)>,
}

impl SipOut<'_> {
    /// Sends a request out of dialog (the engine adds Via and User-Agent). `cookie` comes
    /// back with its final response.
    pub fn send(&mut self, req: Request, peer: Peer, cookie: u64) {
        self.out.push((req, peer, cookie));
    }

    /// A fresh tag.
    pub fn tag(&mut self) -> String {
        self.ids.tag()
    }

    /// A fresh Call-ID.
    pub fn call_id(&mut self) -> String {
        self.ids.call_id()
    }

    /// Our address for a transport (for Contact).
    pub fn local_addr(&self, t: Transport) -> SocketAddr {
        crate::engine::local_addr([self.udp, self.tcp, self.tls], t)
    }

    /// The User-Agent we send.
    pub fn user_agent(&self) -> &str {
        self.user_agent
    }
}

/// A module's SIP work outside calls.
pub trait Service: Send {
    /// When [`Service::handle_timeout`] wants to run.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Called at every engine timeout (and at start, and after a reload): it sends what is
    /// due by its own schedule.
    fn handle_timeout(&mut self, now: Instant, sip: &mut SipOut<'_>);

    /// The final response to a request it sent (`None`: no answer, Timer F).
    fn handle_response(
        &mut self,
        now: Instant,
        cookie: u64,
        resp: Option<&Response>,
        sip: &mut SipOut<'_>,
    );
}
