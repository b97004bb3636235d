//! RFC 3261 §12 dialogs: identity, route set, CSeq spaces and in-dialog request building.

use bytestring::ByteString;

use crate::error::ParseError;
use crate::header::Name;
use crate::message::{Request, Response};
use crate::method::Method;
use crate::typed::NameAddr;
use crate::uri::Uri;

/// Identifies a dialog from our side (§12: Call-ID, local tag, remote tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: ByteString,
    /// Our tag.
    pub local_tag: ByteString,
    /// The peer's tag.
    pub remote_tag: ByteString,
}

impl DialogId {
    /// The dialog an incoming in-dialog request belongs to (our tag is in To).
    pub fn of_incoming(req: &Request) -> Option<DialogId> {
        let h = &req.headers;
        Some(DialogId {
            call_id: h.call_id()?.clone(),
            local_tag: ByteString::from(h.to_addr().ok()?.tag()?),
            remote_tag: ByteString::from(h.from_addr().ok()?.tag()?),
        })
    }
}

/// Dialog state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Identity.
    pub id: DialogId,
    /// Our address (From of our requests, with our tag).
    pub local: String,
    /// The peer's address (To of our requests, with its tag).
    pub remote: String,
    /// Last CSeq we sent.
    pub local_seq: u32,
    /// Last CSeq the peer sent.
    pub remote_seq: Option<u32>,
    /// Where in-dialog requests go (the peer's Contact URI).
    pub remote_target: String,
    /// Route set (Record-Route, in the order our requests must list it).
    pub route_set: Vec<String>,
}

fn contact_uri(h: &crate::header::Headers) -> Result<String, ParseError> {
    let c = h.contact().ok_or(ParseError::Missing("Contact"))??;
    c.uri()?;
    Ok(c.uri_text.to_owned())
}

impl Dialog {
    /// The dialog a UAS creates when it answers `req` with a to-tag (§12.1.1).
    pub fn new_uas(req: &Request, local_tag: &str) -> Result<Dialog, ParseError> {
        let h = &req.headers;
        let from = h.from_addr()?;
        let remote_tag = from.tag().ok_or(ParseError::BadHeader("From"))?;
        let to = h.get(&Name::To).ok_or(ParseError::Missing("To"))?;
        Ok(Dialog {
            id: DialogId {
                // A copy: a slice would keep the whole received datagram alive for the call.
                call_id: ByteString::from(
                    h.call_id()
                        .ok_or(ParseError::Missing("Call-ID"))?
                        .to_string(),
                ),
                local_tag: ByteString::from(local_tag),
                remote_tag: ByteString::from(remote_tag),
            },
            local: if NameAddr::parse(to, "To")?.tag().is_some() {
                to.to_string()
            } else {
                format!("{to};tag={local_tag}")
            },
            remote: h
                .get(&Name::From)
                .map(|f| f.to_string())
                .unwrap_or_default(),
            local_seq: 0,
            remote_seq: Some(h.cseq()?.seq),
            remote_target: contact_uri(h)?,
            route_set: h.entries(&Name::RecordRoute).map(str::to_owned).collect(),
        })
    }

    /// The dialog a UAC creates from a response with a to-tag (§12.1.2).
    pub fn new_uac(req: &Request, resp: &Response) -> Result<Dialog, ParseError> {
        let from = req.headers.from_addr()?;
        let local_tag = from.tag().ok_or(ParseError::BadHeader("From"))?;
        let to = resp.headers.to_addr()?;
        let remote_tag = to.tag().ok_or(ParseError::BadHeader("To"))?;
        let mut route_set: Vec<String> = resp
            .headers
            .entries(&Name::RecordRoute)
            .map(str::to_owned)
            .collect();
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id: req
                    .headers
                    .call_id()
                    .ok_or(ParseError::Missing("Call-ID"))?
                    .clone(),
                local_tag: ByteString::from(local_tag),
                remote_tag: ByteString::from(remote_tag),
            },
            local: req
                .headers
                .get(&Name::From)
                .map(|f| f.to_string())
                .unwrap_or_default(),
            remote: resp
                .headers
                .get(&Name::To)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            local_seq: req.headers.cseq()?.seq,
            remote_seq: None,
            remote_target: contact_uri(&resp.headers)?,
            route_set,
        })
    }

    /// §12.2.2: a request from the peer must not go back in CSeq (else 500).
    /// ACK and CANCEL reuse the INVITE's number and are not checked.
    pub fn accept_remote_cseq(&mut self, req: &Request) -> bool {
        if matches!(req.method, Method::Ack | Method::Cancel) {
            return true;
        }
        let Ok(cseq) = req.headers.cseq() else {
            return false;
        };
        if self.remote_seq.is_some_and(|last| cseq.seq <= last) {
            return false;
        }
        self.remote_seq = Some(cseq.seq);
        true
    }

    /// Target refresh (§12.2): a re-INVITE or its 2xx may move the peer's Contact.
    pub fn refresh_target(&mut self, headers: &crate::header::Headers) {
        if let Ok(uri) = contact_uri(headers) {
            self.remote_target = uri;
        }
    }

    /// The URI the next hop is resolved from: the first route, or the remote target.
    pub fn next_hop(&self) -> &str {
        match self.route_set.first() {
            Some(r) => NameAddr::parse(r, "Route")
                .map(|n| n.uri_text)
                .unwrap_or(&self.remote_target),
            None => &self.remote_target,
        }
    }

    /// Builds an in-dialog request (§12.2.1.1) with a new CSeq (ACK: pass the INVITE's
    /// number in `seq`). The caller adds the Via, Contact and body.
    pub fn make_request(&mut self, method: Method, seq: Option<u32>) -> Request {
        let seq = seq.unwrap_or_else(|| {
            self.local_seq += 1;
            self.local_seq
        });
        let first_is_loose = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r, "Route").ok())
            .and_then(|n| n.uri().ok().map(|u: Uri<'_>| u.is_loose_router()));
        let (uri, routes): (String, Vec<String>) = match first_is_loose {
            Some(false) => {
                // Strict router: it goes in the Request-URI, the remote target last in Route.
                let first = NameAddr::parse(&self.route_set[0], "Route")
                    .map(|n| n.uri_text.to_owned())
                    .unwrap_or_default();
                let mut rest: Vec<String> = self.route_set[1..].to_vec();
                rest.push(format!("<{}>", self.remote_target));
                (first, rest)
            }
            _ => (self.remote_target.clone(), self.route_set.clone()),
        };
        let mut r = Request::new(method.clone(), uri);
        r.headers.push(Name::MaxForwards, "70");
        r.headers.push(Name::From, self.local.clone());
        r.headers.push(Name::To, self.remote.clone());
        r.headers.push(Name::CallId, self.id.call_id.clone());
        r.headers.push(Name::CSeq, format!("{seq} {method}"));
        for route in routes {
            r.headers.push(Name::Route, route);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Request {
        let mut r = Request::new(Method::Invite, "sip:bob@b.example");
        r.headers
            .push(Name::Via, "SIP/2.0/UDP a.example;branch=z9hG4bK1");
        r.headers.push(Name::From, "<sip:alice@a.example>;tag=A");
        r.headers.push(Name::To, "<sip:bob@b.example>");
        r.headers.push(Name::CallId, "d1");
        r.headers.push(Name::CSeq, "10 INVITE");
        r.headers.push(Name::Contact, "<sip:alice@10.0.0.1:5070>");
        r.headers.push(
            Name::RecordRoute,
            "<sip:p1.example;lr>, <sip:p2.example;lr>",
        );
        r
    }

    #[test]
    fn uas_dialog_keeps_record_route_order_and_rejects_old_cseq() {
        let mut d = Dialog::new_uas(&invite(), "B").unwrap();
        assert_eq!(
            d.route_set,
            vec!["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
        );
        assert_eq!(d.remote_target, "sip:alice@10.0.0.1:5070");
        assert_eq!(d.local, "<sip:bob@b.example>;tag=B");
        let bye = d.make_request(Method::Bye, None);
        assert_eq!(
            &*bye.uri, "sip:alice@10.0.0.1:5070",
            "loose routing keeps the target in the R-URI"
        );
        assert_eq!(bye.headers.all(&Name::Route).count(), 2);
        assert_eq!(bye.headers.cseq().unwrap().seq, 1);
        let mut old = invite();
        old.headers.set(Name::CSeq, "9 INVITE");
        assert!(!d.accept_remote_cseq(&old));
        old.headers.set(Name::CSeq, "11 INVITE");
        assert!(d.accept_remote_cseq(&old));
    }

    #[test]
    fn uac_dialog_reverses_record_route_and_handles_strict_routers() {
        let req = invite();
        let mut resp = crate::transaction::make_response(&req, 200, Some("B"));
        resp.headers.push(Name::Contact, "<sip:bob@10.0.0.2>");
        resp.headers
            .push(Name::RecordRoute, "<sip:p1.example>, <sip:p2.example;lr>");
        let mut d = Dialog::new_uac(&req, &resp).unwrap();
        assert_eq!(d.route_set, vec!["<sip:p2.example;lr>", "<sip:p1.example>"]);
        assert_eq!(d.next_hop(), "sip:p2.example;lr");
        assert_eq!(d.local_seq, 10);
        let bye = d.make_request(Method::Bye, None);
        assert_eq!(bye.headers.cseq().unwrap().seq, 11);
        assert_eq!(&*bye.uri, "sip:bob@10.0.0.2");
        // A strict router first: it becomes the Request-URI.
        d.route_set = vec!["<sip:strict.example>".into()];
        let bye = d.make_request(Method::Bye, None);
        assert_eq!(&*bye.uri, "sip:strict.example");
        assert_eq!(bye.headers.get(&Name::Route).unwrap(), "<sip:bob@10.0.0.2>");
    }
}
