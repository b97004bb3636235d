//! Requests, responses, typed accessors and the printer.

use std::io::Write as _;

use bytes::Bytes;
use bytestring::ByteString;

use crate::error::ParseError;
use crate::header::{Headers, Name};
use crate::method::Method;
use crate::typed::{CSeq, NameAddr, Via, parse_u32};
use crate::uri::Uri;

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Request-URI text (validated by [`Message::validate`]).
    pub uri: ByteString,
    /// Headers in order.
    pub headers: Headers,
    /// Body (SDP, dtmf-relay...).
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code 100..=699.
    pub status: u16,
    /// Reason phrase.
    pub reason: ByteString,
    /// Headers in order.
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Headers {
    /// Call-ID.
    pub fn call_id(&self) -> Option<&ByteString> {
        self.get(&Name::CallId)
    }

    /// Typed CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(self.get(&Name::CSeq).ok_or(ParseError::Missing("CSeq"))?)
    }

    /// The topmost Via entry.
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        Via::parse(
            self.entries(&Name::Via)
                .next()
                .ok_or(ParseError::Missing("Via"))?,
        )
    }

    /// Typed From.
    pub fn from_addr(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(
            self.get(&Name::From).ok_or(ParseError::Missing("From"))?,
            "From",
        )
    }

    /// Typed To.
    pub fn to_addr(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.get(&Name::To).ok_or(ParseError::Missing("To"))?, "To")
    }

    /// First Contact entry (`*` is returned as an error: only REGISTER may use it).
    pub fn contact(&self) -> Option<Result<NameAddr<'_>, ParseError>> {
        self.entries(&Name::Contact)
            .next()
            .map(|c| NameAddr::parse(c, "Contact"))
    }

    /// Max-Forwards, when present.
    pub fn max_forwards(&self) -> Option<Result<u32, ParseError>> {
        self.get(&Name::MaxForwards)
            .map(|v| parse_u32(v, "Max-Forwards"))
    }

    /// Option tags listed in a Require-like header.
    pub fn option_tags<'a>(&'a self, name: &'a Name) -> impl Iterator<Item = &'a str> + 'a {
        self.entries(name)
    }
}

impl Request {
    /// A new request with no header.
    pub fn new(method: Method, uri: impl Into<ByteString>) -> Request {
        Request {
            method,
            uri: uri.into(),
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }

    /// The parsed Request-URI.
    pub fn uri(&self) -> Result<Uri<'_>, ParseError> {
        Uri::parse(&self.uri)
    }
}

impl Response {
    /// A new response with no header.
    pub fn new(status: u16, reason: impl Into<ByteString>) -> Response {
        Response {
            status,
            reason: reason.into(),
            headers: Headers::default(),
            body: Bytes::new(),
        }
    }
}

/// Default reason phrases (RFC 3261 §21).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        _ => "Unknown",
    }
}

impl Message {
    /// Headers of either kind.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// Checks what RFC 3261 §8.1.1 requires of every message beyond syntax: the mandatory
    /// headers are present and well-formed, single headers are single, and CSeq agrees.
    pub fn validate(&self) -> Result<(), ParseError> {
        let h = self.headers();
        let mut seen: [u8; 7] = [0; 7];
        for hd in &h.0 {
            let idx = match hd.name {
                Name::From => 0,
                Name::To => 1,
                Name::CallId => 2,
                Name::CSeq => 3,
                Name::MaxForwards => 4,
                Name::ContentLength => 5,
                Name::ContentType => 6,
                _ => continue,
            };
            seen[idx] += 1;
            if seen[idx] > 1 {
                return Err(ParseError::Duplicate(hd.name_static()));
            }
        }
        if h.call_id()
            .is_none_or(|c| c.is_empty() || c.contains(char::is_whitespace))
        {
            return Err(ParseError::Missing("Call-ID"));
        }
        let cseq = h.cseq()?;
        if matches!(self, Message::Response(_)) {
            // (Requests check every Via below.)
            h.top_via()?;
        }
        h.from_addr()?;
        h.to_addr()?;
        if let Some(mf) = h.max_forwards() {
            mf?;
        }
        if let Message::Request(r) = self {
            // A method we do not know is answered 501 whatever its CSeq says (RFC 4475 §3.1.2.18).
            if cseq.method != r.method && !matches!(r.method, Method::Other(_)) {
                return Err(ParseError::CSeqMethod);
            }
            // Every Request-URI starts with a scheme (`<sip:...>` does not: RFC 4475 §3.1.2.7).
            let scheme = r.uri.split(':').next().unwrap_or("");
            let scheme_ok = r.uri.contains(':')
                && scheme
                    .bytes()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c));
            if !scheme_ok {
                return Err(ParseError::Uri("the Request-URI has no scheme"));
            }
            // A sip:/sips: Request-URI must parse (400); other schemes are the TU's call (416).
            if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
                r.uri()?;
            }
            // Every Via entry must parse, not just the top one.
            let mut vias = 0;
            for v in h.entries(&Name::Via) {
                Via::parse(v)?;
                vias += 1;
            }
            if vias == 0 {
                return Err(ParseError::Missing("Via"));
            }
        }
        Ok(())
    }

    /// Writes the message in wire format. Content-Length is always written from the body.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Message::Request(r) => r.write_to(out),
            Message::Response(r) => r.write_to(out),
        }
    }

    /// The wire format as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

impl Request {
    /// Writes the request in wire format (Content-Length from the body).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_wire(
            out,
            self.uri.len() + 32,
            format_args!("{} {} SIP/2.0\r\n", self.method, self.uri),
            &self.headers,
            &self.body,
        );
    }

    /// The wire format as a new buffer, sized to fit.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

impl Response {
    /// Writes the response in wire format (Content-Length from the body).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_wire(
            out,
            self.reason.len() + 16,
            format_args!("SIP/2.0 {} {}\r\n", self.status, self.reason),
            &self.headers,
            &self.body,
        );
    }

    /// The wire format as a new buffer, sized to fit.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

/// A message in wire format, straight into `out` (reserved once: `start_len` is room for the
/// start line): the start line, the headers, the blank line and the body.
fn write_wire(
    out: &mut Vec<u8>,
    start_len: usize,
    start: std::fmt::Arguments<'_>,
    headers: &Headers,
    body: &[u8],
) {
    let len = headers
        .0
        .iter()
        .map(|h| h.name.as_str().len() + h.value.len() + 4)
        .sum::<usize>();
    // 24: the blank line and room for a Content-Length the headers lack.
    out.reserve(start_len + len + body.len() + 24);
    let _ = out.write_fmt(start);
    let mut wrote_length = false;
    for hd in &headers.0 {
        if hd.name == Name::ContentLength {
            // Written where it stood, but always with the true body length.
            let _ = write!(out, "Content-Length: {}\r\n", body.len());
            wrote_length = true;
            continue;
        }
        out.extend_from_slice(hd.name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(hd.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

impl crate::header::Header {
    fn name_static(&self) -> &'static str {
        match self.name {
            Name::From => "From",
            Name::To => "To",
            Name::CallId => "Call-ID",
            Name::CSeq => "CSeq",
            Name::MaxForwards => "Max-Forwards",
            Name::ContentLength => "Content-Length",
            Name::ContentType => "Content-Type",
            _ => "header",
        }
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Message {
        Message::Request(r)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Message {
        Message::Response(r)
    }
}

/// The `application/sdp` part of a `multipart/mixed` (or `related`, `alternative`) body,
/// RFC 2046 §5.1: `(its Content-Type, its bytes)`. SIP-I/SIP-T gateways send SDP with ISUP
/// this way (RFC 3204); a B2BUA answers the SDP and need not carry the rest.
pub fn sdp_part(content_type: &str, body: &bytes::Bytes) -> Option<(String, bytes::Bytes)> {
    let ct = content_type.trim();
    let lower = ct.to_ascii_lowercase();
    if !lower.starts_with("multipart/") {
        return None;
    }
    let boundary = ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })?;
    if boundary.is_empty() || boundary.len() > 70 {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let text = &body[..];
    let mut at = memchr::memmem::find(text, delimiter.as_bytes())?;
    loop {
        let after = at + delimiter.len();
        if text[after..].starts_with(b"--") {
            return None;
        }
        // The part starts after the delimiter line.
        let start = after + memchr::memchr(b'\n', &text[after..])? + 1;
        let end = start + memchr::memmem::find(&text[start..], delimiter.as_bytes())?;
        let part = &text[start..end];
        // Headers, a blank line, the content (the CRLF before the next delimiter is the
        // delimiter's, RFC 2046 §5.1.1).
        let (head_len, sep) = match memchr::memmem::find(part, b"\r\n\r\n") {
            Some(i) => (i, 4),
            None => (memchr::memmem::find(part, b"\n\n")?, 2),
        };
        let head = String::from_utf8_lossy(&part[..head_len]);
        let part_ct = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            (k.eq_ignore_ascii_case("content-type") || k == "c").then(|| v.trim().to_owned())
        });
        let mut content = &part[head_len + sep..];
        content = content
            .strip_suffix(b"\r\n")
            .or_else(|| content.strip_suffix(b"\n"))
            .unwrap_or(content);
        if let Some(pct) = part_ct
            && pct.to_ascii_lowercase().starts_with("application/sdp")
        {
            let offset = start + head_len + sep;
            return Some((pct, body.slice(offset..offset + content.len())));
        }
        at = end;
    }
}

#[cfg(test)]
mod multipart_tests {
    use super::*;

    #[test]
    fn the_sdp_part_of_a_sip_t_body_is_found() {
        let body = bytes::Bytes::from_static(
            b"--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n\r\n--unique-boundary-1\r\nContent-Type: application/isup;version=itu-t92+\r\nContent-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\x00\x00\x03\x02\x00\x07\r\n--unique-boundary-1--\r\n",
        );
        let (ct, sdp) = sdp_part("multipart/mixed; boundary=\"unique-boundary-1\"", &body).unwrap();
        assert_eq!(ct, "application/sdp");
        assert_eq!(&sdp[..], b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n");
        assert!(sdp_part("multipart/mixed;boundary=x", &body).is_none());
        assert!(sdp_part("application/sdp", &body).is_none());
        let isup_only = bytes::Bytes::from_static(
            b"--b\r\nContent-Type: application/isup\r\n\r\nxx\r\n--b--\r\n",
        );
        assert!(sdp_part("multipart/mixed;boundary=b", &isup_only).is_none());
    }
}
