//! SIP URIs (RFC 3261 §19.1): a borrowed view over the text, validated strictly.
//!
//! `sip:alice%40home:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=x`
//! parses into scheme, user (still escaped; [`Uri::user_unescaped`] decodes), password,
//! host (name, IPv4 or an IPv6 reference), port, parameters and headers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::ParseError;
use crate::params::Params;

/// URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:` (TLS all the way)
    Sips,
}

/// The host part of a URI or a Via sent-by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A DNS name.
    Name(&'a str),
    /// A literal IPv4 or IPv6 (written in brackets) address.
    Ip(IpAddr),
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// A parsed SIP URI borrowing its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// sip or sips.
    pub scheme: Scheme,
    /// User part, still %-escaped.
    pub user: Option<&'a str>,
    /// Password (deprecated but legal).
    pub password: Option<&'a str>,
    /// Host.
    pub host: Host<'a>,
    /// Port, when written.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`).
    pub params: Params<'a>,
    /// Headers part after `?`, raw.
    pub headers: Option<&'a str>,
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&c)
}

fn check_escaped(s: &str, extra: &[u8], what: &'static str) -> Result<(), ParseError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(ParseError::Uri(what));
            }
            i += 3;
            continue;
        }
        if !(is_unreserved(c) || extra.contains(&c)) {
            return Err(ParseError::Uri(what));
        }
        i += 1;
    }
    Ok(())
}

/// Parses a host: a name, an IPv4 address, or an IPv6 reference in brackets.
pub fn parse_host(s: &str) -> Result<Host<'_>, ParseError> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(ParseError::Uri("unterminated IPv6 reference"))?;
        let a: Ipv6Addr = inner
            .parse()
            .map_err(|_| ParseError::Uri("bad IPv6 reference"))?;
        return Ok(Host::Ip(IpAddr::V6(a)));
    }
    if s.is_empty() {
        return Err(ParseError::Uri("empty host"));
    }
    if s.bytes().all(|c| c.is_ascii_digit() || c == b'.') && s.bytes().any(|c| c == b'.') {
        let a: Ipv4Addr = s.parse().map_err(|_| ParseError::Uri("bad IPv4 address"))?;
        return Ok(Host::Ip(IpAddr::V4(a)));
    }
    let valid = s.split('.').enumerate().all(|(i, label)| {
        let b = label.as_bytes();
        // A trailing dot (fully qualified) leaves one empty last label.
        (b.is_empty() && i > 0 && s.ends_with('.'))
            || (!b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-')
    });
    if valid {
        Ok(Host::Name(s))
    } else {
        Err(ParseError::Uri("bad host name"))
    }
}

/// Splits `host[:port]`, minding IPv6 brackets.
pub fn parse_hostport(s: &str) -> Result<(Host<'_>, Option<u16>), ParseError> {
    let (host, port) = if s.starts_with('[') {
        let end = s
            .find(']')
            .ok_or(ParseError::Uri("unterminated IPv6 reference"))?;
        let rest = &s[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return Err(ParseError::Uri("junk after IPv6 reference")),
        };
        (&s[..=end], port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(ParseError::Uri("bad port"));
            }
            Some(
                p.parse::<u16>()
                    .map_err(|_| ParseError::Uri("port out of range"))?,
            )
        }
        None => None,
    };
    Ok((parse_host(host)?, port))
}

impl<'a> Uri<'a> {
    /// Parses a SIP or SIPS URI strictly.
    pub fn parse(s: &'a str) -> Result<Uri<'a>, ParseError> {
        // `get` and not indexing: the text may hold multi-byte characters anywhere.
        let (scheme, rest) =
            if s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("sip:")) && s.len() > 4 {
                (Scheme::Sip, &s[4..])
            } else if s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("sips:")) && s.len() > 5 {
                (Scheme::Sips, &s[5..])
            } else {
                return Err(ParseError::Uri("not a sip: or sips: URI"));
            };
        // userinfo ends at the last '@': a user part may hold `?` and `;` (RFC 3261 §25.1
        // user-unreserved), parameters and headers may not hold an unescaped '@'.
        let (userinfo, hostpart) = match memchr::memrchr(b'@', rest.as_bytes()) {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostpart, headers) = match hostpart.split_once('?') {
            Some((r, h)) => {
                check_escaped(h, b"[]/?:+$=&", "bad URI header")?;
                (r, Some(h))
            }
            None => (hostpart, None),
        };
        let (hostport, params) = match hostpart.find(';') {
            Some(i) => (&hostpart[..i], &hostpart[i..]),
            None => (hostpart, ""),
        };
        let (user, password) = match userinfo {
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err(ParseError::Uri("empty user"));
                }
                check_escaped(u, b"&=+$,;?/", "bad character in user")?;
                if let Some(p) = p {
                    check_escaped(p, b"&=+$,", "bad character in password")?;
                }
                (Some(u), p)
            }
            None => (None, None),
        };
        let (host, port) = parse_hostport(hostport)?;
        let params = Params::parse_uri(params)?;
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The user part with %XX escapes decoded.
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.map(unescape)
    }

    /// The `transport` parameter, lower-cased by comparison.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.get("transport").flatten()
    }

    /// True for a loose-routing URI (`;lr`, RFC 3261 §16.12).
    pub fn is_loose_router(&self) -> bool {
        self.params.contains("lr")
    }
}

/// The number of a `tel:` URI (RFC 3966), its visual separators removed: `tel:+1-555-0100;
/// phone-context=example.com` is `+15550100`. None for any other URI, or a number with
/// characters a telephone number cannot have.
pub fn tel_number(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.trim().split_once(':')?;
    if !scheme.eq_ignore_ascii_case("tel") {
        return None;
    }
    let number: String = rest
        .split(';')
        .next()?
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect();
    let digits = number.strip_prefix('+').unwrap_or(&number);
    (!digits.is_empty()
        && digits
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '*' || c == '#'))
    .then_some(number)
}

/// Decodes %XX escapes (invalid sequences are kept as written).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.scheme {
            Scheme::Sip => "sip:",
            Scheme::Sips => "sips:",
        })?;
        if let Some(u) = self.user {
            f.write_str(u)?;
            if let Some(p) = self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(self.params.raw())?;
        if let Some(h) = self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_tel_uri_is_its_number() {
        assert_eq!(
            tel_number("tel:+1-555-0100;phone-context=example.com").as_deref(),
            Some("+15550100")
        );
        assert_eq!(
            tel_number("TEL:(030) 1234.56").as_deref(),
            Some("030123456")
        );
        assert_eq!(tel_number("tel:*76#").as_deref(), Some("*76#"));
        assert_eq!(tel_number("tel:+"), None);
        assert_eq!(tel_number("tel:1234;x=<evil>").as_deref(), Some("1234"));
        assert_eq!(tel_number("tel:12ab/34"), None);
        assert_eq!(tel_number("sip:1000@example.com"), None);
    }

    use super::*;

    #[test]
    fn full_uri_with_ipv6_params_and_headers() {
        let u =
            Uri::parse("sips:alice%20b:pw@[2001:db8::1]:5061;transport=tcp;lr?subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.user, Some("alice%20b"));
        assert_eq!(u.user_unescaped().as_deref(), Some("alice b"));
        assert_eq!(u.password, Some("pw"));
        assert_eq!(u.host, Host::Ip("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.is_loose_router());
        assert_eq!(u.headers, Some("subject=x"));
        assert_eq!(
            u.to_string(),
            "sips:alice%20b:pw@[2001:db8::1]:5061;transport=tcp;lr?subject=x"
        );
    }

    #[test]
    fn user_may_contain_semicolons_before_the_at_sign() {
        let u = Uri::parse("sip:+1555;phone-context=x@gw.example.com;user=phone").unwrap();
        assert_eq!(u.user, Some("+1555;phone-context=x"));
        assert_eq!(u.host, Host::Name("gw.example.com"));
        assert_eq!(u.params.get("user"), Some(Some("phone")));
    }

    #[test]
    fn malformed_uris_are_rejected() {
        for bad in [
            "http://x",
            "sip:",
            "sip:a@",
            "sip:a@[::1",
            "sip:a@host:99999",
            "sip:a@host:",
            "sip:a b@host",
            "sip:a%zz@host",
            "sip:a@-host",
            "sip:a@host;=x",
            "sip:@host",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn multibyte_text_never_panics() {
        for s in [
            "sip\u{e9}x@h",
            "si\u{e9}",
            "sips\u{e9}@h",
            "sip:\u{e9}@h",
            "sip:a@h\u{e9}",
            "sip:a@[\u{e9}]",
        ] {
            let _ = Uri::parse(s);
        }
        assert!(
            Uri::parse("sip:\u{e9}@h").is_err(),
            "raw non-ASCII in a user part must be escaped"
        );
    }

    #[test]
    fn a_user_part_may_hold_question_marks_slashes_and_semicolons() {
        let u = Uri::parse("sip:a?b/c;;*:p$w@example.com;lr?subject=x").unwrap();
        assert_eq!(u.user, Some("a?b/c;;*"));
        assert_eq!(u.password, Some("p$w"));
        assert_eq!(u.host, Host::Name("example.com"));
        assert!(u.is_loose_router());
        assert_eq!(u.headers, Some("subject=x"));
        assert!(Uri::parse("sip:a@example.com?x=<y>").is_err());
    }

    #[test]
    fn ipv4_host_and_no_user() {
        let u = Uri::parse("sip:127.0.0.1:5080").unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(u.port, Some(5080));
    }
}
