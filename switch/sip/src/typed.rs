//! Typed views of the headers the core reads. Each borrows the header value and is parsed
//! only when asked for (the parser types nothing eagerly but the start line).

use std::fmt;

use crate::error::ParseError;
use crate::method::Method;
use crate::params::Params;
use crate::uri::{Host, Uri, parse_hostport};

/// One Via entry: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token, as written (UDP, TCP, TLS, WS, WSS, SCTP).
    pub transport: &'a str,
    /// sent-by host.
    pub host: Host<'a>,
    /// sent-by port.
    pub port: Option<u16>,
    /// sent-by as written (`host[:port]`), for transaction matching (§17.2.3).
    pub sent_by: &'a str,
    /// Parameters (branch, received, rport, maddr, ttl).
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    /// Parses a single Via entry.
    pub fn parse(s: &'a str) -> Result<Via<'a>, ParseError> {
        const BAD: ParseError = ParseError::BadHeader("Via");
        let s = s.trim();
        let (proto, rest) = split_ws(s).ok_or(BAD)?;
        let mut parts = proto.split('/').map(str::trim);
        let (name, version, transport) = (parts.next(), parts.next(), parts.next());
        if parts.next().is_some()
            || !name.is_some_and(|n| n.eq_ignore_ascii_case("SIP"))
            || version != Some("2.0")
        {
            return Err(BAD);
        }
        let transport = transport
            .filter(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric()))
            .ok_or(BAD)?;
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i..]),
            None => (rest.trim(), ""),
        };
        let (host, port) = parse_hostport(sent_by).map_err(|_| BAD)?;
        let params = Params::parse_header(params).map_err(|_| BAD)?;
        Ok(Via {
            transport,
            host,
            port,
            sent_by,
            params,
        })
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get("branch").flatten()
    }

    /// RFC 3581: the client asked for its source port in `rport`.
    pub fn wants_rport(&self) -> bool {
        self.params.contains("rport")
    }
}

fn split_ws(s: &str) -> Option<(&str, &str)> {
    // "SIP / 2.0 / UDP" may carry LWS around the slashes; the sent-by follows the transport.
    let slash2 = s.match_indices('/').nth(1)?.0;
    let after = &s[slash2 + 1..];
    let t_start = after.len() - after.trim_start().len();
    let t_len = after[t_start..].find([' ', '\t'])?;
    let split = slash2 + 1 + t_start + t_len;
    Some((&s[..split], s[split..].trim_start()))
}

/// `name-addr` or `addr-spec` with parameters: From, To, Contact, Route, Record-Route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name, without quotes, when present.
    pub display: Option<&'a str>,
    /// The URI text (parse with [`NameAddr::uri`]).
    pub uri_text: &'a str,
    /// Header parameters after the address (tag, expires, q).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses a name-addr / addr-spec.
    pub fn parse(s: &'a str, what: &'static str) -> Result<NameAddr<'a>, ParseError> {
        let bad = ParseError::BadHeader(what);
        let s = s.trim();
        let (display, uri_text, rest) = if let Some(lt) = find_unquoted(s, b'<') {
            let gt = s[lt..].find('>').ok_or(bad.clone())? + lt;
            let display = s[..lt].trim();
            let display = if display.is_empty() {
                None
            } else if let Some(q) = display.strip_prefix('"') {
                Some(q.strip_suffix('"').ok_or(bad.clone())?)
            } else {
                Some(display)
            };
            (display, &s[lt + 1..gt], &s[gt + 1..])
        } else {
            // addr-spec: parameters after the URI belong to the header (RFC 3261 §20.10).
            // LWS may precede the parameters' `;` (RFC 3261 §7.3.1, RFC 4475 §3.1.1.1).
            match s.find(';') {
                Some(i) => (None, s[..i].trim_end(), &s[i..]),
                None => (None, s, ""),
            }
        };
        if uri_text.is_empty() || uri_text.bytes().any(|c| c == b' ' || c == b'\t') {
            return Err(bad);
        }
        // The URI must at least have a scheme.
        if !uri_text.contains(':') {
            return Err(bad);
        }
        let params = Params::parse_header(rest.trim()).map_err(|_| bad)?;
        Ok(NameAddr {
            display,
            uri_text,
            params,
        })
    }

    /// Parses the URI (sip/sips only).
    pub fn uri(&self) -> Result<Uri<'a>, ParseError> {
        Uri::parse(self.uri_text)
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }
}

impl fmt::Display for NameAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.display {
            write!(f, "\"{d}\" ")?;
        }
        write!(f, "<{}>{}", self.uri_text, self.params.raw())
    }
}

fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let mut quoted = false;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            c if c == needle && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// `CSeq: 314159 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (< 2^31 per RFC 3261 §8.1.1.5).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        const BAD: ParseError = ParseError::BadHeader("CSeq");
        let mut it = s.split_ascii_whitespace();
        let (num, method) = (it.next().ok_or(BAD)?, it.next().ok_or(BAD)?);
        if it.next().is_some() || num.len() > 10 || !num.bytes().all(|c| c.is_ascii_digit()) {
            return Err(BAD);
        }
        let seq: u32 = num.parse().map_err(|_| BAD)?;
        if seq >= 1 << 31 {
            return Err(BAD);
        }
        Ok(CSeq {
            seq,
            method: Method::parse(method).ok_or(BAD)?,
        })
    }
}

/// Parses a decimal header (Max-Forwards, Content-Length, Expires).
pub fn parse_u32(s: &str, what: &'static str) -> Result<u32, ParseError> {
    let s = s.trim();
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(ParseError::BadHeader(what));
    }
    s.parse().map_err(|_| ParseError::BadHeader(what))
}

/// A digest challenge or credentials (`Digest realm="x", nonce="y", ...`), RFC 3261 §22.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestParams<'a> {
    /// Auth scheme (`Digest`).
    pub scheme: &'a str,
    /// name=value pairs, quotes removed.
    pub params: Vec<(&'a str, &'a str)>,
}

impl<'a> DigestParams<'a> {
    /// Parses `Scheme a=b, c="d"`.
    pub fn parse(s: &'a str, what: &'static str) -> Result<DigestParams<'a>, ParseError> {
        let s = s.trim();
        let sp = s.find([' ', '\t']).ok_or(ParseError::BadHeader(what))?;
        let scheme = &s[..sp];
        let mut params = Vec::new();
        for item in crate::header::split_list(&s[sp..]) {
            let (n, v) = item.split_once('=').ok_or(ParseError::BadHeader(what))?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            params.push((n.trim(), v));
        }
        Ok(DigestParams { scheme, params })
    }

    /// A parameter by case-insensitive name.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_ipv6_and_rport() {
        let v = Via::parse("SIP / 2.0 / UDP [2001:db8::9]:5070;branch=z9hG4bKabc;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch(), Some("z9hG4bKabc"));
        assert!(v.wants_rport());
    }

    #[test]
    fn bad_vias_are_rejected() {
        for bad in [
            "SIP/2.0 host",
            "SIP/3.0/UDP host",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP host:x",
            "SIP/2.0/UDP host;=1",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""Bob <the> Smith" <sip:bob@b.com;lr>;tag=9"#, "To").unwrap();
        assert_eq!(n.display, Some("Bob <the> Smith"));
        assert_eq!(n.uri_text, "sip:bob@b.com;lr");
        assert_eq!(n.tag(), Some("9"));
        let n = NameAddr::parse("sip:bob@b.com;tag=77", "From").unwrap();
        assert_eq!(n.uri_text, "sip:bob@b.com");
        assert_eq!(n.tag(), Some("77"));
        let n = NameAddr::parse("Bob <sip:bob@b.com>", "From").unwrap();
        assert_eq!(n.display, Some("Bob"));
        assert!(NameAddr::parse("<sip:bob@b.com", "To").is_err());
        assert!(NameAddr::parse("", "To").is_err());
    }

    #[test]
    fn cseq_bounds() {
        assert_eq!(CSeq::parse("1 INVITE").unwrap().seq, 1);
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("x INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("1 INVITE extra").is_err());
    }

    #[test]
    fn digest_challenge() {
        let d = DigestParams::parse(
            r#"Digest realm="sb", nonce="a,b", algorithm=MD5, qop="auth""#,
            "WWW-Authenticate",
        )
        .unwrap();
        assert_eq!(d.scheme, "Digest");
        assert_eq!(d.get("nonce"), Some("a,b"));
        assert_eq!(d.get("qop"), Some("auth"));
    }
}
