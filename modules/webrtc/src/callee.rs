//! A browser that *answers*: the agent console's SIP face on the in-process `Local`
//! transport. The core's INVITE to a console (`agent/...`, `queue/...` targets) arrives here;
//! the console rings, and when the agent answers in the browser (a WebRTC offer of its own,
//! answered by a str0m peer) this leg answers the INVITE with the peer's plain-RTP side. A
//! ring-all loser gets the core's CANCEL; the agent's hang-up is a BYE.
//!
//! Sans-IO like [`WebLeg`](crate::WebLeg): messages in ([`CalleeLeg::handle`]), messages out
//! ([`CalleeLeg::poll_transmit`]), events for the console ([`CalleeLeg::poll_event`]). The
//! transport is reliable and in-process: nothing is retransmitted.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use switchboard_sip::transaction::make_response;
use switchboard_sip::{Message, Method, Name, Request, Response};

/// What happened on the leg, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalleeEvent {
    /// The core acknowledged our answer: both legs are up.
    Confirmed,
    /// The call is over for this console.
    Ended {
        /// The caller went before the answer, or another console answered (CANCEL).
        cancelled: bool,
        /// The CANCEL said another fork answered (`Reason: SIP;cause=200`, RFC 3326).
        elsewhere: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ringing,
    Answered,
    Confirmed,
    Terminated,
}

/// One ringing or answered console call.
#[derive(Debug)]
pub struct CalleeLeg {
    addr: String,
    invite: Request,
    tag: String,
    /// The caller's From (our To in requests we send), and their Contact.
    remote: String,
    remote_target: String,
    /// Our To (our From in requests we send).
    local: String,
    call_id: String,
    cseq: u32,
    state: State,
    sdp: Bytes,
    out: VecDeque<Bytes>,
    events: VecDeque<CalleeEvent>,
}

fn bytes(resp: Response) -> Bytes {
    Bytes::from(Message::Response(resp).to_bytes())
}

impl CalleeLeg {
    /// An INVITE from the core: rings (180). `addr` is this console's Local address, `tag`
    /// unique. None for a request that is not a usable INVITE (answered 400 by the caller).
    pub fn ring(invite: Request, addr: SocketAddr, tag: &str) -> Option<CalleeLeg> {
        if invite.method != Method::Invite {
            return None;
        }
        let call_id = invite.headers.get(&Name::CallId)?.to_string();
        let remote = invite.headers.get(&Name::From)?.to_string();
        let to = invite.headers.get(&Name::To)?.to_string();
        let remote_target = invite
            .headers
            .contact()
            .and_then(Result::ok)
            .map(|c| c.uri_text.to_owned())
            .unwrap_or_else(|| invite.uri.to_string());
        let mut leg = CalleeLeg {
            addr: addr.to_string(),
            local: format!("{to};tag={tag}"),
            tag: tag.to_owned(),
            remote,
            remote_target,
            call_id,
            cseq: 0,
            state: State::Ringing,
            sdp: Bytes::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            invite,
        };
        let ringing = leg.response(180);
        leg.out.push_back(bytes(ringing));
        Some(leg)
    }

    /// Leg B's Call-ID (the core's INVITE).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// A parameter of the INVITE's Request-URI (`sb-call`).
    pub fn uri_param(&self, name: &str) -> Option<&str> {
        self.invite.uri.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
    }

    /// The caller's offer (the core's SDP).
    pub fn offer(&self) -> &[u8] {
        &self.invite.body
    }

    /// Still ringing.
    pub fn is_ringing(&self) -> bool {
        self.state == State::Ringing
    }

    /// Over.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    fn response(&self, status: u16) -> Response {
        let mut r = make_response(&self.invite, status, Some(&self.tag));
        r.headers.push(
            Name::Contact,
            format!("<sip:console@{};transport=local>", self.addr),
        );
        r
    }

    /// The agent answered: 200 with `sdp` (where the console's peer's plain-RTP side is).
    pub fn answer(&mut self, sdp: String) {
        if self.state != State::Ringing {
            return;
        }
        self.sdp = Bytes::from(sdp);
        let mut r = self.response(200);
        r.headers.push(Name::ContentType, "application/sdp");
        r.body = self.sdp.clone();
        self.out.push_back(bytes(r));
        self.state = State::Answered;
    }

    /// The agent declined, or the console went away while ringing: 480 (the other consoles
    /// of a ring-all keep ringing; a single one fails over). Answered: a BYE.
    pub fn hangup(&mut self) {
        match self.state {
            State::Ringing => {
                let mut r = self.response(480);
                r.reason = "Temporarily Unavailable".into();
                self.out.push_back(bytes(r));
                self.end(false);
            }
            State::Answered | State::Confirmed => {
                self.cseq += 1;
                let mut s = format!(
                    "BYE {target} SIP/2.0\r\nVia: SIP/2.0/LOCAL {addr};branch=z9hG4bKcon{tag}b{seq}\r\n\
                     Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {seq} BYE\r\n",
                    target = self.remote_target,
                    addr = self.addr,
                    tag = self.tag,
                    seq = self.cseq,
                    from = self.local,
                    to = self.remote,
                    cid = self.call_id,
                );
                let _ = write!(s, "Content-Length: 0\r\n\r\n");
                self.out.push_back(Bytes::from(s));
                self.end(false);
            }
            State::Terminated => {}
        }
    }

    fn end(&mut self, cancelled: bool) {
        self.end_as(cancelled, false);
    }

    fn end_as(&mut self, cancelled: bool, elsewhere: bool) {
        if self.state != State::Terminated {
            self.state = State::Terminated;
            self.events.push_back(CalleeEvent::Ended {
                cancelled,
                elsewhere,
            });
        }
    }

    /// A message from the core for this leg's Call-ID.
    pub fn handle(&mut self, msg: Message) {
        let r = match msg {
            // Answers to our BYE: nothing more to do.
            Message::Response(_) => return,
            Message::Request(r) => r,
        };
        let tag = self.tag.clone();
        match r.method {
            Method::Ack => {
                if self.state == State::Answered {
                    self.state = State::Confirmed;
                    self.events.push_back(CalleeEvent::Confirmed);
                }
            }
            Method::Cancel => {
                self.out
                    .push_back(bytes(make_response(&r, 200, Some(&tag))));
                if self.state == State::Ringing {
                    let mut t = self.response(487);
                    t.reason = "Request Terminated".into();
                    self.out.push_back(bytes(t));
                    let elsewhere = r.headers.all(&Name::Reason).any(|v| {
                        let v = v.trim_start().to_ascii_uppercase();
                        v.starts_with("SIP") && v.contains("CAUSE=200")
                    });
                    self.end_as(true, elsewhere);
                }
            }
            Method::Bye => {
                self.out
                    .push_back(bytes(make_response(&r, 200, Some(&tag))));
                self.end(false);
            }
            Method::Invite | Method::Update => {
                // A re-INVITE (hold, re-anchoring): the console's side does not change.
                let mut resp = make_response(&r, 200, Some(&tag));
                resp.headers.push(
                    Name::Contact,
                    format!("<sip:console@{};transport=local>", self.addr),
                );
                // With an offer it is our answer; without one, our offer (RFC 3264): the
                // console's side never changes.
                if !self.sdp.is_empty() {
                    resp.headers.push(Name::ContentType, "application/sdp");
                    resp.body = self.sdp.clone();
                }
                self.out.push_back(bytes(resp));
            }
            _ => self
                .out
                .push_back(bytes(make_response(&r, 200, Some(&tag)))),
        }
    }

    /// What to answer a request for no call of this console's: `None` for an INVITE that
    /// may ring it (out of any dialog), else 481 (RFC 3261 §12.2.2) — nothing for an ACK.
    pub fn stray(req: &Request) -> Option<Option<Bytes>> {
        let in_dialog = req
            .headers
            .to_addr()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
            .is_some();
        match req.method {
            Method::Invite if !in_dialog => None,
            Method::Ack => Some(None),
            _ => Some(Some(bytes(make_response(req, 481, None)))),
        }
    }

    /// Next message for the core.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// Next event for the console.
    pub fn poll_event(&mut self) -> Option<CalleeEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sip::parse_datagram;

    fn msg(text: &str) -> Message {
        parse_datagram(Bytes::from(text.replace('\n', "\r\n"))).unwrap()
    }

    fn invite() -> Request {
        match msg(
            "INVITE sip:alice@console.invalid;sb-call=7 SIP/2.0\nVia: SIP/2.0/LOCAL 127.0.0.1:5060;branch=z9hG4bKc1\nFrom: <sip:web@demo.invalid>;tag=core\nTo: <sip:alice@console.invalid>\nCall-ID: b-1\nCSeq: 1 INVITE\nContact: <sip:sb@127.0.0.1:5060;transport=local>\nContent-Type: application/sdp\nContent-Length: 4\n\nv=0\n",
        ) {
            Message::Request(r) => r,
            Message::Response(_) => panic!("a request"),
        }
    }

    fn status(b: Bytes) -> u16 {
        match parse_datagram(b).unwrap() {
            Message::Response(r) => r.status,
            Message::Request(r) => panic!("a response, not {}", r.method.as_str()),
        }
    }

    #[test]
    fn rings_answers_and_hangs_up() {
        let mut l = CalleeLeg::ring(invite(), "0.0.0.9:0".parse().unwrap(), "t1").unwrap();
        assert_eq!(l.uri_param("sb-call"), Some("7"));
        assert_eq!(status(l.poll_transmit().unwrap()), 180);
        l.answer("v=0\r\n".into());
        let ok = l.poll_transmit().unwrap();
        assert_eq!(status(ok.clone()), 200);
        assert!(
            std::str::from_utf8(&ok)
                .unwrap()
                .contains("To: <sip:alice@console.invalid>;tag=t1")
        );
        l.handle(msg("ACK sip:console@0.0.0.9:0 SIP/2.0\nVia: SIP/2.0/LOCAL 127.0.0.1:5060;branch=z9hG4bKa\nFrom: <sip:web@demo.invalid>;tag=core\nTo: <sip:alice@console.invalid>;tag=t1\nCall-ID: b-1\nCSeq: 1 ACK\nContent-Length: 0\n\n"));
        assert_eq!(l.poll_event(), Some(CalleeEvent::Confirmed));
        l.hangup();
        let bye = match parse_datagram(l.poll_transmit().unwrap()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!("a BYE"),
        };
        assert_eq!(bye.method, Method::Bye);
        assert_eq!(&bye.uri, "sip:sb@127.0.0.1:5060;transport=local");
        assert!(Message::Request(bye.clone()).validate().is_ok());
        assert!(bye.headers.get(&Name::From).unwrap().contains("tag=t1"));
        assert!(bye.headers.get(&Name::To).unwrap().contains("tag=core"));
        assert_eq!(
            l.poll_event(),
            Some(CalleeEvent::Ended {
                cancelled: false,
                elsewhere: false
            })
        );
    }

    #[test]
    fn a_cancel_stops_the_ringing() {
        let mut l = CalleeLeg::ring(invite(), "0.0.0.9:0".parse().unwrap(), "t1").unwrap();
        let _ = l.poll_transmit();
        l.handle(msg("CANCEL sip:alice@console.invalid;sb-call=7 SIP/2.0\nVia: SIP/2.0/LOCAL 127.0.0.1:5060;branch=z9hG4bKc1\nFrom: <sip:web@demo.invalid>;tag=core\nTo: <sip:alice@console.invalid>\nCall-ID: b-1\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"));
        assert_eq!(status(l.poll_transmit().unwrap()), 200);
        assert_eq!(status(l.poll_transmit().unwrap()), 487);
        assert_eq!(
            l.poll_event(),
            Some(CalleeEvent::Ended {
                cancelled: true,
                elsewhere: false
            })
        );
        // Answering after it is too late does nothing.
        l.answer("v=0\r\n".into());
        assert!(l.poll_transmit().is_none());
    }

    #[test]
    fn a_cancel_because_another_console_answered_says_so() {
        let mut l = CalleeLeg::ring(invite(), "0.0.0.9:0".parse().unwrap(), "t1").unwrap();
        let _ = l.poll_transmit();
        l.handle(msg("CANCEL sip:alice@console.invalid;sb-call=7 SIP/2.0\nVia: SIP/2.0/LOCAL 127.0.0.1:5060;branch=z9hG4bKc1\nFrom: <sip:web@demo.invalid>;tag=core\nTo: <sip:alice@console.invalid>\nCall-ID: b-1\nCSeq: 1 CANCEL\nReason: SIP;cause=200;text=\"Call completed elsewhere\"\nContent-Length: 0\n\n"));
        let _ = (l.poll_transmit(), l.poll_transmit());
        assert_eq!(
            l.poll_event(),
            Some(CalleeEvent::Ended {
                cancelled: true,
                elsewhere: true
            })
        );
        // Requests of no call: 481, except an INVITE out of any dialog (it rings).
        let bye = match msg(
            "BYE sip:console@0.0.0.9:0 SIP/2.0\nVia: SIP/2.0/LOCAL 127.0.0.1:5060;branch=z9hG4bKb\nFrom: <sip:web@demo.invalid>;tag=core\nTo: <sip:alice@console.invalid>;tag=gone\nCall-ID: b-9\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        ) {
            Message::Request(r) => r,
            Message::Response(_) => panic!("a request"),
        };
        assert_eq!(status(CalleeLeg::stray(&bye).unwrap().unwrap()), 481);
        assert!(CalleeLeg::stray(&invite()).is_none());
    }

    #[test]
    fn declining_answers_480() {
        let mut l = CalleeLeg::ring(invite(), "0.0.0.9:0".parse().unwrap(), "t1").unwrap();
        let _ = l.poll_transmit();
        l.hangup();
        assert_eq!(status(l.poll_transmit().unwrap()), 480);
        assert!(l.is_terminated());
    }
}
