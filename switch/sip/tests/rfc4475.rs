#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! RFC 4475's torture messages (section 3, all 49: `tests/rfc4475/`) against the parser.
//!
//! The parser's part of what the RFC expects of each: a message the RFC calls well formed
//! parses and validates (whatever the transaction user then answers — 416, 420, 501 are its
//! call, see the server's `rfc4475` test); one it wants refused with 400 or 505 is refused
//! with the matching error; where the RFC allows either (`either:400|accept`), what we do is
//! one of the outcomes allowed, and written down below so that a change is seen.

use bytes::Bytes;
use switchboard_sip::salvage::bad_request;
use switchboard_sip::{Message, ParseError, parse_datagram, parse_stream};

struct Case {
    file: String,
    name: String,
    expect: Vec<String>,
    raw: Vec<u8>,
}

fn cases() -> Vec<Case> {
    // Read when the test runs: a cached binary may have been built in another checkout.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("tests/rfc4475");
    let dir = dir.display();
    let index = std::fs::read_to_string(format!("{dir}/INDEX.tsv")).expect("INDEX.tsv");
    let cases: Vec<Case> = index
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 6, "INDEX.tsv row: {line}");
            let mut raw = std::fs::read(format!("{dir}/{}", f[0])).expect("message file");
            // baddn's head lacks the empty line that ends it, as in the RFC's archive: the
            // RFC's point is its display names, not its framing.
            if f[2] == "baddn" {
                raw.extend_from_slice(b"\r\n");
            }
            let expect = match f[4].strip_prefix("either:") {
                Some(alts) => alts.split('|').map(str::to_owned).collect(),
                None => vec![f[4].to_owned()],
            };
            Case {
                file: f[0].to_owned(),
                name: f[2].to_owned(),
                expect,
                raw,
            }
        })
        .collect();
    assert_eq!(cases.len(), 49, "RFC 4475 section 3 has 49 messages");
    cases
}

/// What the parser made of a datagram: `accept`, or the status its refusal is answered with
/// (`drop` when it cannot be answered: a response, or a request without the headers a
/// response needs).
fn outcome(raw: &[u8]) -> (String, Option<ParseError>) {
    let refused = |e: ParseError| {
        let got = match bad_request(raw, &e.reason_phrase()) {
            Ok((status, _)) => status.to_string(),
            Err(_) => "drop".to_owned(),
        };
        (got, Some(e))
    };
    match parse_datagram(Bytes::copy_from_slice(raw)) {
        Err(e) => refused(e),
        Ok(m) => match m.validate() {
            Ok(()) => ("accept".to_owned(), None),
            // The server answers a request from its own headers when its top Via reads, and
            // from what can be salvaged when not.
            Err(e) => match &m {
                Message::Request(r) if r.headers.top_via().is_ok() => ("400".to_owned(), Some(e)),
                Message::Request(_) => refused(e),
                Message::Response(_) => ("drop".to_owned(), Some(e)),
            },
        },
    }
}

/// Which outcome the parser gives where the RFC names a transaction user's answer: a
/// well-formed message, for the TU to answer (416, 420, 415, 406, 501...).
fn parser_part<'a>(name: &str, expect: &'a str) -> &'a str {
    match expect {
        // A registrar's 400 (its AOR is not a SIP URI): the message itself is well formed.
        "400" if name == "unksm2" => "accept",
        "400" | "505" | "accept" | "drop" => expect,
        _ => "accept",
    }
}

/// Where the RFC allows either, what this parser does (the first is the RFC's preference).
const CHOSEN: &[(&str, &str)] = &[
    ("quotbal", "400"),
    ("ltgtruri", "400"),
    ("lwsruri", "400"),
    ("lwsstart", "400"),
    ("trws", "400"),
    ("escruri", "accept"),
    ("baddate", "accept"),
    ("regbadct", "accept"),
    ("badaspec", "400"),
    ("baddn", "accept"),
    ("mismatch02", "accept"),
    ("badbranch", "accept"),
    ("novelsc", "accept"),
    ("regaut01", "accept"),
    ("zeromf", "accept"),
    ("sdp01", "accept"),
];

#[test]
fn every_message_gets_what_the_rfc_expects_of_a_parser() {
    let mut wrong = Vec::new();
    for c in cases() {
        let (got, err) = outcome(&c.raw);
        let allowed: Vec<&str> = c.expect.iter().map(|e| parser_part(&c.name, e)).collect();
        let chosen = CHOSEN.iter().find(|(n, _)| *n == c.name).map(|(_, o)| *o);
        if c.expect.len() > 1 {
            assert!(chosen.is_some(), "{}: say what we chose in CHOSEN", c.name);
        }
        let ok = allowed.contains(&got.as_str()) && chosen.is_none_or(|o| o == got);
        // A response is never answered: "drop" for one that does not parse, and the TU
        // drops a well-formed one it has no transaction for.
        let ok = ok
            || (got == "accept"
                && allowed == ["drop"]
                && c.raw.starts_with(b"SIP/2.0 ")
                && c.name == "bcast");
        if !ok {
            wrong.push(format!(
                "{} ({}): expected {:?}{}, got {got} ({err:?})",
                c.name,
                c.file,
                c.expect,
                chosen
                    .map(|o| format!(" (we chose {o})"))
                    .unwrap_or_default()
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn the_valid_messages_read_as_the_rfc_says() {
    let by_name = |n: &str| {
        let c = cases().into_iter().find(|c| c.name == n).expect("case");
        parse_datagram(Bytes::from(c.raw)).expect("parses")
    };
    // §3.1.1.1: folded, escaped and spaced-out values read as their plain forms.
    let Message::Request(r) = by_name("wsinv") else {
        panic!("wsinv is a request")
    };
    let to = r.headers.to_addr().expect("To");
    assert_eq!(to.uri_text, "sip:vivekg@chair-dnrc.example.com");
    assert_eq!(to.tag(), Some("1918181833n"));
    let from = r.headers.from_addr().expect("From");
    assert_eq!(from.display, Some(r#"J Rosenberg \\\""#));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(r.headers.cseq().expect("CSeq").seq, 9);
    assert_eq!(r.headers.max_forwards(), Some(Ok(68)));
    // §3.1.1.9: the user part holds ";par=u@example.net", escaped.
    let Message::Request(r) = by_name("semiuri") else {
        panic!("semiuri is a request")
    };
    let uri = r.uri().expect("Request-URI");
    assert_eq!(
        uri.user_unescaped().as_deref(),
        Some("user;par=u@example.net")
    );
    // §3.1.1.3: %-escapes are decoded once, never recursively.
    let Message::Request(r) = by_name("esc01") else {
        panic!("esc01 is a request")
    };
    let uri = r.uri().expect("Request-URI");
    assert_eq!(
        uri.user_unescaped().as_deref(),
        Some("sips:user@example.com")
    );
    // §3.1.1.5: the method is not REGISTER once unescaped; it is an unknown one.
    let Message::Request(r) = by_name("esc02") else {
        panic!("esc02 is a request")
    };
    assert_eq!(r.method.as_str(), "RE%47IST%45R");
    // §3.1.1.8: the REGISTER alone, the octets after its empty body ignored.
    let Message::Request(r) = by_name("dblreq") else {
        panic!("dblreq is a request")
    };
    assert_eq!(r.method.as_str(), "REGISTER");
    assert!(r.body.is_empty());
    // §3.1.1.11: the binary body is framed by Content-Length, NULs and all.
    let Message::Request(r) = by_name("mpart01") else {
        panic!("mpart01 is a request")
    };
    assert_eq!(r.body.len(), 553);
    assert!(r.body.contains(&0));
    // §3.1.1.12/13: reason phrases with UTF-8, and an empty one.
    let Message::Response(r) = by_name("unreason") else {
        panic!("unreason is a response")
    };
    assert_eq!(r.status, 200);
    assert!(!r.reason.is_ascii());
    let Message::Response(r) = by_name("noreason") else {
        panic!("noreason is a response")
    };
    assert_eq!((r.status, &*r.reason), (100, ""));
}

#[test]
fn on_a_stream_the_framing_errors_are_unrecoverable() {
    for c in cases() {
        let buf = Bytes::from(c.raw.clone());
        let got = parse_stream(&buf);
        match c.name.as_str() {
            // §3.1.2.2: more is promised than sent; a stream waits for it (and times out).
            "clerr" => assert_eq!(got.err(), Some(ParseError::Incomplete), "clerr"),
            // §3.1.2.3, §3.3.9: no length to frame by, so the connection must close.
            "ncl" => assert!(
                matches!(got, Err(ParseError::BadHeader("Content-Length"))),
                "ncl: {got:?}"
            ),
            "mcl01" => assert_eq!(
                got.err(),
                Some(ParseError::Duplicate("Content-Length")),
                "mcl01"
            ),
            // §20.14: a stream needs Content-Length; RFC 2543's INVITE has none.
            "inv2543" => assert_eq!(
                got.err(),
                Some(ParseError::Missing("Content-Length")),
                "inv2543"
            ),
            // §3.1.1.8: on a stream the trailing octets are the next message's.
            "dblreq" => {
                let (m, used) = got.expect("dblreq frames");
                assert!(matches!(m, Message::Request(ref r) if r.method.as_str() == "REGISTER"));
                assert!(used < c.raw.len());
            }
            // Everything else frames on a stream as in a datagram.
            _ => {
                let dg = parse_datagram(Bytes::from(c.raw.clone()));
                match (got, dg) {
                    (Ok((m, used)), Ok(d)) => {
                        assert_eq!(used, c.raw.len(), "{}: all of it used", c.name);
                        assert_eq!(m.to_bytes(), d.to_bytes(), "{}", c.name);
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b, "{}", c.name),
                    (a, b) => panic!("{}: stream {a:?}, datagram {b:?}", c.name),
                }
            }
        }
    }
}
