//! A 400 for a request the parser refuses: RFC 3261 §8.2 wants one whenever the request can
//! be answered at all, which needs its Via, From, To, Call-ID and CSeq. This reads them
//! leniently — bare-LF line ends, folded lines, compact names — from what the strict parser
//! would not take, and writes the answer; anything less readable stays unanswered (a
//! response is never answered, nor an ACK, §17.2.1).

use bytes::Bytes;

/// Headers a 400 must copy (§8.2.6.2), by their full and compact names.
const NEEDED: [(&str, Option<&str>); 5] = [
    ("via", Some("v")),
    ("from", Some("f")),
    ("to", Some("t")),
    ("call-id", Some("i")),
    ("cseq", None),
];

/// Why a refused datagram could not be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Unanswerable {
    /// Not a request line (a response, or not SIP).
    NotARequest,
    /// An ACK: never answered.
    Ack,
    /// One of Via, From, To, Call-ID and CSeq is missing or unreadable.
    Headers,
}

impl Unanswerable {
    /// Every reason, in discriminant order.
    pub const ALL: [Unanswerable; 3] = [
        Unanswerable::NotARequest,
        Unanswerable::Ack,
        Unanswerable::Headers,
    ];

    /// Its label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unanswerable::NotARequest => "not_a_request",
            Unanswerable::Ack => "ack",
            Unanswerable::Headers => "unreadable_headers",
        }
    }
}

/// The head's lines, split on LF with a CR before it dropped, folded lines joined; up to
/// the first empty line.
fn lines(head: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        match out.last_mut() {
            Some(prev) if line.starts_with([' ', '\t']) => {
                prev.push(' ');
                prev.push_str(line.trim_start());
            }
            _ => out.push(line.to_owned()),
        }
    }
    out
}

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c))
}

/// The answer to the request in `buf` — a 400 with `reason`, or a 505 when its request line
/// names another SIP version (RFC 3261 §21.5.7) — with its status, or why there can be none.
pub fn bad_request(buf: &[u8], reason: &str) -> Result<(u16, Bytes), Unanswerable> {
    let text = String::from_utf8_lossy(&buf[..buf.len().min(crate::parse::MAX_MESSAGE)]);
    let lines = lines(text.trim_start_matches(['\r', '\n']));
    let first = lines.first().ok_or(Unanswerable::NotARequest)?.trim_end();
    let mut words = first.split(' ');
    let method = words.next().unwrap_or_default();
    let version = first.rsplit(' ').next().unwrap_or_default();
    let other_version = version.len() > 4
        && version[..4].eq_ignore_ascii_case("SIP/")
        && !version.eq_ignore_ascii_case("SIP/2.0");
    if !token(method)
        || !(version.eq_ignore_ascii_case("SIP/2.0") || other_version)
        || first.split(' ').count() < 3
    {
        return Err(Unanswerable::NotARequest);
    }
    let (status, reason) = if other_version {
        (505, "Version Not Supported")
    } else {
        (400, reason)
    };
    if method == "ACK" {
        return Err(Unanswerable::Ack);
    }
    let mut found: [Option<String>; 5] = Default::default();
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        let Some(i) = NEEDED
            .iter()
            .position(|(full, short)| name == *full || Some(name.as_str()) == *short)
        else {
            continue;
        };
        if found[i].is_none() && !value.is_empty() && !value.chars().any(char::is_control) {
            found[i] = Some(value.to_owned());
        }
    }
    let [Some(via), Some(from), Some(to), Some(call_id), Some(cseq)] = found else {
        return Err(Unanswerable::Headers);
    };
    // The top Via only (a value may hold several, comma-separated).
    let via = via.split(',').next().unwrap_or_default().trim().to_owned();
    let to = if to.to_ascii_lowercase().contains(";tag=") || to.contains(";tag =") {
        to
    } else {
        format!("{to};tag=sb400")
    };
    let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
    Ok((
        status,
        Bytes::from(format!(
            "SIP/2.0 {status} {reason}\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        )),
    ))
}

/// The head has a line that ends in a bare LF (no CR before it).
pub fn has_bare_lf(buf: &[u8]) -> bool {
    buf.iter()
        .enumerate()
        .any(|(i, &c)| c == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_lf_request_gets_a_400_that_parses_and_names_its_transaction() {
        let req = b"OPTIONS sip:a@example.com SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1, SIP/2.0/UDP h2\nv: SIP/2.0/UDP second\nFrom: <sip:b@example.com>;tag=1\nt: <sip:a@example.com>\ni: lf-only\nCSeq: 1\n OPTIONS\nContent-Length: 0\n\n";
        assert!(has_bare_lf(req));
        let (status, resp) = bad_request(req, "Bad Request (line ends are not CRLF)").unwrap();
        assert_eq!(status, 400);
        let msg = crate::parse_datagram(resp).unwrap();
        let crate::Message::Response(r) = msg else {
            panic!("not a response")
        };
        assert_eq!(r.status, 400);
        let text = String::from_utf8(crate::Message::Response(r).to_bytes()).unwrap();
        assert!(
            text.contains("branch=z9hG4bK1") && !text.contains("h2"),
            "{text}"
        );
        assert!(
            text.contains("CSeq: 1 OPTIONS") && text.contains("tag=sb400"),
            "{text}"
        );
    }

    #[test]
    fn another_version_is_answered_505_and_trailing_spaces_400() {
        let req = b"OPTIONS sip:a@example.com SIP/7.0\r\nVia: SIP/7.0/UDP h;branch=z9hG4bK2\r\nFrom: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: v7\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let (status, resp) = bad_request(req, "x").unwrap();
        assert_eq!(status, 505);
        assert!(resp.starts_with(b"SIP/2.0 505 Version Not Supported\r\n"));
        let trailing = String::from_utf8_lossy(req).replacen("SIP/7.0\r", "SIP/2.0  \r", 1);
        assert_eq!(bad_request(trailing.as_bytes(), "x").unwrap().0, 400);
    }

    #[test]
    fn what_cannot_be_answered_says_why() {
        assert_eq!(
            bad_request(b"SIP/2.0 200 OK\r\n\r\n", "x"),
            Err(Unanswerable::NotARequest)
        );
        assert_eq!(
            bad_request(b"\x00\x01garbage", "x"),
            Err(Unanswerable::NotARequest)
        );
        assert_eq!(
            bad_request(b"ACK sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\n\n", "x"),
            Err(Unanswerable::Ack)
        );
        assert_eq!(
            bad_request(
                b"INVITE sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\nFrom: a\n\n",
                "x"
            ),
            Err(Unanswerable::Headers)
        );
    }
}
