//! The browser leg as the core sees it: a SIP user agent on the in-process `Local`
//! transport (like FreeSWITCH's loopback endpoint or Asterisk's Local channel). The core
//! runs its dialplan, bridges, fails over, records and hangs up exactly as for a SIP caller;
//! this side turns its responses and requests into what the widget understands.
//!
//! Sans-IO: messages in ([`WebLeg::handle`]), messages out ([`WebLeg::poll_transmit`]) and
//! events for the widget ([`WebLeg::poll_event`]). The transport is reliable and in-process,
//! so nothing is retransmitted.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use switchboard_core::LOCAL_CONTEXT;
use switchboard_core::module::BROWSER_ACTION;
use switchboard_sip::transaction::make_response;
use switchboard_sip::{Message, Method, Name, Request, Response};

use crate::signal::Reason;

/// The headers the leg's INVITE carries its facts in, in the order of [`WebFacts`]' fields;
/// the core makes each a dialplan variable (`X-SB-Page-Url` → `page_url`).
const FACT_HEADERS: [&str; 7] = [
    "X-SB-Merchant",
    "X-SB-Link",
    "X-SB-Session",
    "X-SB-Page-Url",
    "X-SB-Referrer",
    "X-SB-Caller-IP",
    "X-SB-Dial",
];

/// What the widget's call carries into the dialplan (validated before it gets here).
#[derive(Debug, Clone, Default)]
pub struct WebFacts {
    /// Merchant ID.
    pub merchant: String,
    /// Link ID (which button).
    pub link: String,
    /// Customer or session ID.
    pub session: String,
    /// The page the call started on.
    pub page_url: String,
    /// The page's referrer.
    pub referrer: String,
    /// The browser's address.
    pub caller_ip: String,
    /// A number the widget asked for (allowed by the merchant's config), or empty.
    pub dial: String,
    /// The merchant's dialplan context.
    pub context: String,
    /// Display name presented as the caller.
    pub caller_name: String,
}

/// What happened on the leg, for the widget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// The far side rings (180).
    Ringing,
    /// Early media: audio flows before the answer (183 with SDP); where the core wants it.
    EarlyMedia(SocketAddr),
    /// Answered; the core's media address.
    Answered(SocketAddr),
    /// The core moved our media (a re-INVITE).
    MediaMoved(SocketAddr),
    /// A leg app asks something of the page (an INFO of type
    /// [`BROWSER_ACTION`](switchboard_core::module::BROWSER_ACTION)): answer with
    /// [`WebLeg::answer_action`] and this id.
    Action {
        /// For the answer.
        id: u64,
        /// The request (JSON).
        body: Bytes,
    },
    /// The call is over.
    Ended {
        /// In plain words, for the widget.
        reason: Reason,
        /// The SIP status that ended it (200 for a BYE).
        code: u16,
        /// Q.850 cause from a Reason header, when the core gave one.
        q850: Option<u16>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Calling,
    Early,
    Confirmed,
    Cancelling,
    Terminated,
}

/// One browser call's SIP face.
#[derive(Debug)]
pub struct WebLeg {
    addr: String,
    call_id: String,
    from: String,
    to: String,
    ruri: String,
    branch: String,
    to_tag: Option<String>,
    remote_target: Option<String>,
    cseq: u32,
    state: State,
    sdp: Bytes,
    out: VecDeque<Bytes>,
    events: VecDeque<LegEvent>,
    media: Option<SocketAddr>,
    /// Actions waiting for the page's answer: (id, the INFO).
    actions: Vec<(u64, Request)>,
    next_action: u64,
}

impl WebLeg {
    /// Starts the call: an INVITE with the facts and `sdp` (plain RTP, where the browser
    /// peer's inner socket listens). `addr` is this leg's Local address; `id` is unique.
    pub fn invite(facts: &WebFacts, addr: SocketAddr, id: &str, sdp: String) -> WebLeg {
        let addr = addr.to_string();
        let user = if facts.dial.is_empty() {
            &facts.link
        } else {
            &facts.dial
        };
        let ruri = format!("sip:{user}@switchboard.invalid");
        let call_id = format!("web-{id}");
        let from = format!(
            "\"{}\" <sip:web@{}.invalid>;tag=w{id}",
            facts.caller_name.replace(['"', '\\'], ""),
            facts.merchant
        );
        let to = format!("<{ruri}>");
        let mut leg = WebLeg {
            branch: format!("z9hG4bKweb{id}"),
            addr,
            call_id,
            from,
            to,
            ruri,
            to_tag: None,
            remote_target: None,
            cseq: 1,
            state: State::Calling,
            sdp: Bytes::from(sdp),
            out: VecDeque::new(),
            events: VecDeque::new(),
            media: None,
            actions: Vec::new(),
            next_action: 1,
        };
        let mut extra = String::new();
        let values = [
            &facts.merchant,
            &facts.link,
            &facts.session,
            &facts.page_url,
            &facts.referrer,
            &facts.caller_ip,
            &facts.dial,
        ];
        for (header, value) in FACT_HEADERS.iter().zip(values) {
            if !value.is_empty() {
                let _ = write!(extra, "{header}: {value}\r\n");
            }
        }
        let _ = write!(extra, "{LOCAL_CONTEXT}: {}\r\n", facts.context);
        let msg = leg.request(
            Method::Invite,
            &leg.ruri.clone(),
            1,
            &leg.branch.clone(),
            &extra,
            true,
        );
        leg.out.push_back(msg);
        leg
    }

    /// The leg's Call-ID (leg A's in records and `ctl calls`).
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Where the core wants our RTP, once known.
    pub fn media(&self) -> Option<SocketAddr> {
        self.media
    }

    /// Over (ended, or never started).
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    fn request(
        &self,
        method: Method,
        ruri: &str,
        seq: u32,
        branch: &str,
        extra: &str,
        body: bool,
    ) -> Bytes {
        let to = match &self.to_tag {
            Some(t) if method != Method::Invite => format!("{};tag={t}", self.to),
            _ => self.to.clone(),
        };
        let mut s = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/LOCAL {addr};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {seq} {method}\r\n",
            method = method.as_str(),
            addr = self.addr,
            from = self.from,
            cid = self.call_id,
        );
        if method == Method::Invite {
            let _ = write!(
                s,
                "Contact: <sip:web@{};transport=local>\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n",
                self.addr
            );
        }
        s.push_str(extra);
        let mut v = s.into_bytes();
        if body {
            v.extend_from_slice(b"Content-Type: application/sdp\r\n");
            v.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.sdp.len()).as_bytes());
            v.extend_from_slice(&self.sdp);
        } else {
            v.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        }
        Bytes::from(v)
    }

    /// The browser hung up (button, closed panel).
    pub fn hangup(&mut self) {
        self.hangup_with(None);
    }

    /// The browser leg ends with a cause (Q.850 in the BYE's Reason, RFC 3326): e.g. 38
    /// NETWORK_OUT_OF_ORDER when the widget's connection or the media is gone for good.
    pub fn hangup_with(&mut self, cause: Option<(u16, &str)>) {
        let reason = cause
            .map(|(c, text)| format!("Reason: Q.850;cause={c};text=\"{text}\"\r\n"))
            .unwrap_or_default();
        match self.state {
            State::Calling | State::Early => {
                // CANCEL: same branch and Request-URI as the INVITE (RFC 3261 §9.1).
                let msg = self.request(
                    Method::Cancel,
                    &self.ruri.clone(),
                    1,
                    &self.branch.clone(),
                    &reason,
                    false,
                );
                self.to_tag = None;
                self.out.push_back(msg);
                self.state = State::Cancelling;
            }
            State::Confirmed => {
                self.cseq += 1;
                let target = self.remote_target.clone().unwrap_or(self.ruri.clone());
                let branch = format!("{}b{}", self.branch, self.cseq);
                let msg = self.request(Method::Bye, &target, self.cseq, &branch, &reason, false);
                self.out.push_back(msg);
                self.end(Reason::Normal, 200, None);
            }
            State::Cancelling | State::Terminated => {}
        }
    }

    fn end(&mut self, reason: Reason, code: u16, q850: Option<u16>) {
        if self.state != State::Terminated {
            self.state = State::Terminated;
            self.events
                .push_back(LegEvent::Ended { reason, code, q850 });
        }
    }

    /// A message from the core.
    pub fn handle(&mut self, msg: Message) {
        match msg {
            Message::Response(r) => self.on_response(r),
            Message::Request(r) => self.on_request(r),
        }
    }

    fn on_response(&mut self, r: Response) {
        let Ok(cseq) = r.headers.cseq() else {
            return;
        };
        if cseq.method != Method::Invite || cseq.seq != 1 {
            // 200 to our BYE or CANCEL: nothing more to do.
            return;
        }
        let to_tag = r
            .headers
            .to_addr()
            .ok()
            .and_then(|t| t.tag())
            .map(str::to_owned);
        let sdp_addr = media_addr(&r.body);
        match r.status {
            100 => {}
            101..=199 => {
                if self.state == State::Calling {
                    self.state = State::Early;
                }
                if self.state != State::Early {
                    return;
                }
                if let Some(a) = sdp_addr {
                    if self.media.is_none() {
                        self.media = Some(a);
                        self.events.push_back(LegEvent::EarlyMedia(a));
                    }
                } else if r.status == 180 {
                    self.events.push_back(LegEvent::Ringing);
                }
            }
            200..=299 => {
                self.to_tag = to_tag;
                self.remote_target = r
                    .headers
                    .contact()
                    .and_then(Result::ok)
                    .map(|c| c.uri_text.to_owned());
                let target = self.remote_target.clone().unwrap_or(self.ruri.clone());
                let branch = format!("{}a", self.branch);
                let ack = self.request(Method::Ack, &target, 1, &branch, "", false);
                self.out.push_back(ack);
                if self.state == State::Cancelling || self.state == State::Terminated {
                    // The answer crossed our CANCEL: take it and hang up at once.
                    self.state = State::Confirmed;
                    self.hangup();
                    return;
                }
                self.state = State::Confirmed;
                if let Some(a) = sdp_addr {
                    self.media = Some(a);
                }
                match self.media {
                    Some(a) => self.events.push_back(LegEvent::Answered(a)),
                    None => {
                        // An answer without media cannot carry the browser's audio.
                        self.hangup();
                        self.events.clear();
                        self.events.push_back(LegEvent::Ended {
                            reason: Reason::Failed,
                            code: 488,
                            q850: None,
                        });
                    }
                }
            }
            _ => {
                // Non-2xx final: the ACK belongs to the INVITE transaction (same branch).
                self.to_tag = to_tag;
                let ack = self.request(
                    Method::Ack,
                    &self.ruri.clone(),
                    1,
                    &self.branch.clone(),
                    "",
                    false,
                );
                self.out.push_back(ack);
                let q850 = q850_of(&r.headers);
                let reason = if self.state == State::Cancelling {
                    Reason::Cancelled
                } else {
                    Reason::from_status(r.status, q850)
                };
                self.end(reason, r.status, q850);
            }
        }
    }

    fn on_request(&mut self, r: Request) {
        let reply = |resp: Response| Bytes::from(Message::Response(resp).to_bytes());
        let tag = self.own_tag();
        match r.method {
            Method::Ack => {}
            Method::Bye => {
                self.out
                    .push_back(reply(make_response(&r, 200, Some(&tag))));
                let q850 = q850_of(&r.headers);
                self.end(Reason::from_bye(q850), 200, q850);
            }
            Method::Invite | Method::Update => {
                // A re-INVITE (hold, re-anchoring): the browser's side does not change.
                if let Some(a) = media_addr(&r.body)
                    && self.media != Some(a)
                {
                    self.media = Some(a);
                    self.events.push_back(LegEvent::MediaMoved(a));
                }
                let mut resp = make_response(&r, 200, Some(&tag));
                resp.headers.push(
                    Name::Contact,
                    format!("<sip:web@{};transport=local>", self.addr),
                );
                if !r.body.is_empty() {
                    resp.headers.push(Name::ContentType, "application/sdp");
                    resp.body = self.sdp.clone();
                }
                self.out.push_back(reply(resp));
            }
            Method::Info
                if r.headers
                    .get(&Name::ContentType)
                    .is_some_and(|t| t.eq_ignore_ascii_case(BROWSER_ACTION)) =>
            {
                if self.actions.len() >= MAX_PENDING_ACTIONS {
                    let mut resp = make_response(&r, 486, Some(&tag));
                    warning(&mut resp, "the page is still busy with earlier actions");
                    self.out.push_back(reply(resp));
                    return;
                }
                let id = self.next_action;
                self.next_action += 1;
                let body = r.body.clone();
                self.actions.push((id, r));
                self.events.push_back(LegEvent::Action { id, body });
            }
            _ => self
                .out
                .push_back(reply(make_response(&r, 200, Some(&tag)))),
        }
    }

    /// Answers an [`LegEvent::Action`]: `Ok(detail)` is the page's 200 (`{"ok":true,
    /// "detail":...}`), `Err((status, words))` a refusal or failure, the words in a `Warning`.
    pub fn answer_action(&mut self, id: u64, result: Result<&str, (u16, &str)>) {
        let Some(i) = self.actions.iter().position(|(a, _)| *a == id) else {
            return;
        };
        let (_, r) = self.actions.swap_remove(i);
        let tag = self.own_tag();
        let resp = match result {
            Ok(detail) => {
                let mut resp = make_response(&r, 200, Some(&tag));
                resp.headers.push(Name::ContentType, "application/json");
                resp.body =
                    Bytes::from(serde_json::json!({ "ok": true, "detail": detail }).to_string());
                resp
            }
            Err((status, words)) => {
                let mut resp = make_response(&r, status, Some(&tag));
                warning(&mut resp, words);
                resp
            }
        };
        self.out
            .push_back(Bytes::from(Message::Response(resp).to_bytes()));
    }

    /// Our tag: the From tag we gave (we are the caller, so we answer requests with it).
    fn own_tag(&self) -> String {
        self.from
            .rsplit_once(";tag=")
            .map(|(_, t)| t.to_owned())
            .unwrap_or_default()
    }

    /// Next message for the core.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// Next event for the widget.
    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }
}

/// Actions a page may have unanswered at once (more get 486).
pub const MAX_PENDING_ACTIONS: usize = 8;

/// `Warning: 399 switchboard "words"` (RFC 3261 §20.43): why, in words.
fn warning(resp: &mut Response, words: &str) {
    let clean: String = words
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .take(200)
        .collect();
    resp.headers.push(
        Name::Other("Warning".into()),
        format!("399 switchboard \"{clean}\""),
    );
}

/// `Reason: Q.850;cause=17;text="..."` → 17.
fn q850_of(h: &switchboard_sip::Headers) -> Option<u16> {
    h.all(&Name::Reason)
        .flat_map(|v| v.split(','))
        .find(|v| v.trim_start().to_ascii_uppercase().starts_with("Q.850"))
        .and_then(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("cause="))
                .and_then(|c| c.trim().parse().ok())
        })
}

/// The audio address of an SDP body (`c=` and `m=audio`); None for none or port 0.
pub fn media_addr(body: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(body).ok()?;
    let mut ip = None;
    let mut port = None;
    for line in text.lines() {
        if let Some(c) = line
            .strip_prefix("c=IN IP4 ")
            .or(line.strip_prefix("c=IN IP6 "))
        {
            if ip.is_none() || port.is_none() {
                ip = c.trim().parse().ok();
            }
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split(' ').next().and_then(|p| p.parse::<u16>().ok());
        }
    }
    match (ip, port) {
        (Some(ip), Some(p)) if p != 0 => Some(SocketAddr::new(ip, p)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_sip::parse_datagram;

    fn facts() -> WebFacts {
        WebFacts {
            merchant: "acme".into(),
            link: "sales".into(),
            session: "s-1".into(),
            page_url: "https://shop.example/p/1".into(),
            context: "web".into(),
            caller_name: "Web caller".into(),
            caller_ip: "127.0.0.1".into(),
            ..Default::default()
        }
    }

    fn parse(b: Bytes) -> Request {
        match parse_datagram(b).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!("a request"),
        }
    }

    fn respond(to: &Request, status: u16, body: &str) -> Message {
        let mut r = make_response(to, status, Some("core1"));
        r.headers.push(Name::Contact, "<sip:sb@127.0.0.1:5060>");
        if !body.is_empty() {
            r.headers.push(Name::ContentType, "application/sdp");
            r.body = Bytes::from(body.to_owned());
        }
        Message::Response(r)
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 111\r\n";

    fn leg() -> (WebLeg, Request) {
        let mut l = WebLeg::invite(&facts(), "0.0.0.1:0".parse().unwrap(), "1", SDP.into());
        let inv = parse(l.poll_transmit().unwrap());
        (l, inv)
    }

    #[test]
    fn the_invite_carries_the_facts_and_is_valid_sip() {
        let (_, inv) = leg();
        assert_eq!(inv.method, Method::Invite);
        assert!(Message::Request(inv.clone()).validate().is_ok());
        assert_eq!(inv.headers.get_other("X-SB-Merchant").unwrap(), "acme");
        assert_eq!(inv.headers.get_other("X-SB-Link").unwrap(), "sales");
        assert_eq!(inv.headers.get_other("X-SB-Context").unwrap(), "web");
        assert!(inv.headers.get_other("X-SB-Dial").is_none());
        assert_eq!(&inv.uri, "sip:sales@switchboard.invalid");
        assert_eq!(inv.body, SDP.as_bytes());
    }

    #[test]
    fn ringing_answer_ack_then_bye_from_the_core() {
        let (mut l, inv) = leg();
        l.handle(respond(&inv, 180, ""));
        assert_eq!(l.poll_event(), Some(LegEvent::Ringing));
        l.handle(respond(&inv, 200, SDP));
        assert_eq!(
            l.poll_event(),
            Some(LegEvent::Answered("127.0.0.1:20000".parse().unwrap()))
        );
        let ack = parse(l.poll_transmit().unwrap());
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(&ack.uri, "sip:sb@127.0.0.1:5060");
        assert!(ack.headers.get(&Name::To).unwrap().contains("tag=core1"));
        // The core hangs up with a cause.
        let bye = format!(
            "BYE sip:web@0.0.0.1:0 SIP/2.0\r\nVia: SIP/2.0/LOCAL 127.0.0.1:5060;branch=z9hG4bKx\r\n\
             From: <sip:sales@switchboard.invalid>;tag=core1\r\nTo: {};tag=w1\r\nCall-ID: web-1\r\n\
             CSeq: 5 BYE\r\nReason: Q.850;cause=16;text=\"NORMAL_CLEARING\"\r\nContent-Length: 0\r\n\r\n",
            "<sip:web@acme.invalid>"
        );
        l.handle(parse_datagram(Bytes::from(bye)).unwrap());
        match parse_datagram(l.poll_transmit().unwrap()).unwrap() {
            Message::Response(r) => assert_eq!(r.status, 200),
            Message::Request(_) => panic!("a 200"),
        }
        assert_eq!(
            l.poll_event(),
            Some(LegEvent::Ended {
                reason: Reason::Normal,
                code: 200,
                q850: Some(16)
            })
        );
        assert!(l.is_terminated());
    }

    fn info(cseq: u32, content_type: &str, body: &str) -> Message {
        let m = format!(
            "INFO sip:web@0.0.0.1:0 SIP/2.0\r\nVia: SIP/2.0/LOCAL 127.0.0.1:5060;branch=z9hG4bKi{cseq}\r\n\
             From: <sip:sales@switchboard.invalid>;tag=core1\r\nTo: <sip:web@acme.invalid>;tag=w1\r\nCall-ID: web-1\r\n\
             CSeq: {cseq} INFO\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        parse_datagram(Bytes::from(m)).unwrap()
    }

    fn response(l: &mut WebLeg) -> Response {
        match parse_datagram(l.poll_transmit().unwrap()).unwrap() {
            Message::Response(r) => r,
            Message::Request(_) => panic!("a response"),
        }
    }

    #[test]
    fn an_action_waits_for_the_page_and_its_answer_says_what_happened() {
        let (mut l, inv) = leg();
        l.handle(respond(&inv, 200, SDP));
        l.poll_event();
        l.poll_transmit(); // ACK
        let body = r#"{"action":"volume","step":20,"code":"*22"}"#;
        l.handle(info(6, BROWSER_ACTION, body));
        // Nothing is answered before the page is.
        assert!(l.poll_transmit().is_none());
        let Some(LegEvent::Action { id, body: got }) = l.poll_event() else {
            panic!("an action")
        };
        assert_eq!(got, body.as_bytes());
        l.answer_action(id, Ok("Volume 120 %"));
        let r = response(&mut l);
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.cseq().unwrap().seq, 6);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["detail"], "Volume 120 %");
        // Answered once only.
        l.answer_action(id, Ok("again"));
        assert!(l.poll_transmit().is_none());

        // A refusal carries its words in a Warning.
        l.handle(info(
            7,
            BROWSER_ACTION,
            r#"{"action":"push_page","page":"x"}"#,
        ));
        let Some(LegEvent::Action { id, .. }) = l.poll_event() else {
            panic!("an action")
        };
        l.answer_action(
            id,
            Err((403, "https://evil.example/ is not on the \"origins\"")),
        );
        let r = response(&mut l);
        assert_eq!(r.status, 403);
        assert_eq!(
            r.headers.get_other("Warning").unwrap(),
            "399 switchboard \"https://evil.example/ is not on the 'origins'\""
        );

        // Any other INFO (a digit) is answered at once, as before.
        l.handle(info(
            8,
            "application/dtmf-relay",
            "Signal=5\r\nDuration=100\r\n",
        ));
        assert_eq!(response(&mut l).status, 200);
        assert!(l.poll_event().is_none());
    }

    #[test]
    fn a_page_that_never_answers_cannot_pile_up_actions() {
        let (mut l, inv) = leg();
        l.handle(respond(&inv, 200, SDP));
        l.poll_event();
        l.poll_transmit();
        for n in 0..MAX_PENDING_ACTIONS as u32 {
            l.handle(info(10 + n, BROWSER_ACTION, "{}"));
        }
        assert!(l.poll_transmit().is_none());
        l.handle(info(99, BROWSER_ACTION, "{}"));
        assert_eq!(response(&mut l).status, 486);
    }

    #[test]
    fn hangup_before_answer_cancels_and_acks_the_487() {
        let (mut l, inv) = leg();
        l.handle(respond(&inv, 183, SDP));
        assert!(matches!(l.poll_event(), Some(LegEvent::EarlyMedia(_))));
        l.hangup();
        let cancel = parse(l.poll_transmit().unwrap());
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(
            cancel.headers.top_via().unwrap().branch(),
            inv.headers.top_via().unwrap().branch()
        );
        l.handle(respond(&inv, 487, ""));
        let ack = parse(l.poll_transmit().unwrap());
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(
            ack.headers.top_via().unwrap().branch(),
            inv.headers.top_via().unwrap().branch()
        );
        assert_eq!(
            l.poll_event(),
            Some(LegEvent::Ended {
                reason: Reason::Cancelled,
                code: 487,
                q850: None
            })
        );
    }

    #[test]
    fn busy_is_told_in_plain_words_and_an_answer_racing_a_cancel_is_hung_up() {
        let (mut l, inv) = leg();
        l.handle(respond(&inv, 486, ""));
        assert!(matches!(
            l.poll_event(),
            Some(LegEvent::Ended {
                reason: Reason::Busy,
                ..
            })
        ));
        let (mut l, inv) = leg();
        l.hangup();
        let _cancel = l.poll_transmit();
        l.handle(respond(&inv, 200, SDP));
        let kinds: Vec<Method> = std::iter::from_fn(|| l.poll_transmit())
            .map(|b| parse(b).method)
            .collect();
        assert_eq!(kinds, [Method::Ack, Method::Bye]);
    }

    #[test]
    fn media_addr_reads_c_and_m_lines() {
        assert_eq!(
            media_addr(SDP.as_bytes()),
            Some("127.0.0.1:20000".parse().unwrap())
        );
        assert_eq!(
            media_addr(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n"),
            None
        );
        assert_eq!(media_addr(b"garbage"), None);
    }
}
