use super::*;
use crate::typed::NameAddr;

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

fn dg(s: &str) -> Result<Message, ParseError> {
    parse_datagram(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn typical_invite_parses_and_validates() {
    let m = dg(INVITE).unwrap();
    m.validate().unwrap();
    let Message::Request(r) = &m else {
        panic!("request expected")
    };
    assert_eq!(r.method, Method::Invite);
    assert_eq!(&*r.uri, "sip:bob@biloxi.example.com");
    assert_eq!(
        r.headers.call_id().unwrap(),
        "a84b4c76e66710@pc33.atlanta.example.com"
    );
    assert_eq!(r.headers.cseq().unwrap().seq, 314159);
    assert_eq!(
        r.headers.top_via().unwrap().branch(),
        Some("z9hG4bK776asdhds")
    );
    assert_eq!(r.headers.from_addr().unwrap().tag(), Some("1928301774"));
    assert_eq!(&r.body[..], b"v=0\n");
}

#[test]
fn printer_writes_what_the_parser_read() {
    let m = dg(INVITE).unwrap();
    let printed = m.to_bytes();
    assert_eq!(printed, INVITE.as_bytes());
    assert_eq!(parse_datagram(Bytes::from(printed)).unwrap(), m);
}

#[test]
fn compact_forms_folding_and_multiple_values() {
    let raw = "INVITE sip:bob@b.com SIP/2.0\r\n\
v: SIP/2.0/UDP a.com;branch=z9hG4bK1,\r\n SIP/2.0/TCP b.com;branch=z9hG4bK2\r\n\
v: SIP/2.0/UDP c.com;branch=z9hG4bK3\r\n\
t: <sip:bob@b.com>\r\n\
f: <sip:alice@a.com>;tag=x\r\n\
i: abc@a\r\n\
CSeq: 1\r\n\t INVITE\r\n\
Subject: folded\r\n  over\r\n\tlines\r\n\
l: 0\r\n\r\n";
    let m = dg(raw).unwrap();
    m.validate().unwrap();
    let h = m.headers();
    let vias: Vec<_> = h.entries(&Name::Via).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(h.cseq().unwrap().method, Method::Invite);
    assert_eq!(h.get(&Name::Subject).unwrap(), "folded over lines");
    assert_eq!(h.call_id().unwrap(), "abc@a");
}

#[test]
fn escaped_uri_and_ipv6_references() {
    let raw = "OPTIONS sip:user%3Bx@[2001:db8::10]:5060;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKk;rport\r\n\
To: <sip:user%3Bx@[2001:db8::10]>\r\nFrom: <sip:a@[::1]>;tag=1\r\n\
Call-ID: c\r\nCSeq: 2 OPTIONS\r\nMax-Forwards: 70\r\n\r\n";
    let m = dg(raw).unwrap();
    m.validate().unwrap();
    let Message::Request(r) = &m else { panic!() };
    let u = r.uri().unwrap();
    assert_eq!(u.user_unescaped().as_deref(), Some("user;x"));
    assert_eq!(u.port, Some(5060));
    let to = NameAddr::parse(r.headers.get(&Name::To).unwrap(), "To").unwrap();
    assert!(to.uri().is_ok());
}

#[test]
fn response_parses() {
    let raw = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nTo: <sip:b@b>;tag=2\r\n\
From: <sip:a@a>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let Message::Response(r) = dg(raw).unwrap() else {
        panic!()
    };
    assert_eq!(r.status, 180);
    assert_eq!(&*r.reason, "Ringing");
}

#[test]
fn content_length_shorter_truncates_longer_is_an_error() {
    let base = "MESSAGE sip:b@b SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nTo: <sip:b@b>\r\n\
From: <sip:a@a>;tag=1\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n";
    let m = dg(&format!("{base}Content-Length: 2\r\n\r\nhello")).unwrap();
    let Message::Request(r) = m else { panic!() };
    assert_eq!(&r.body[..], b"he");
    assert_eq!(
        dg(&format!("{base}Content-Length: 20\r\n\r\nhello")),
        Err(ParseError::ContentLength)
    );
}

#[test]
fn malformed_messages_are_rejected_with_a_typed_error() {
    let ok_tail = "Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nTo: <sip:b@b>\r\nFrom: <sip:a@a>;tag=1\r\n\
Call-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
    let cases: Vec<(String, ParseError)> = vec![
        (
            format!("INVITE  sip:b@b SIP/2.0\r\n{ok_tail}"),
            ParseError::StartLine,
        ),
        (
            format!("INVITE sip:b@b SIP/3.0\r\n{ok_tail}"),
            ParseError::Version,
        ),
        (
            format!("INV<ITE sip:b@b SIP/2.0\r\n{ok_tail}"),
            ParseError::StartLine,
        ),
        (
            format!("SIP/2.0 99 Odd\r\n{ok_tail}"),
            ParseError::StartLine,
        ),
        (
            format!("INVITE sip:b@b SIP/2.0\r\nBad Header: x\r\n{ok_tail}"),
            ParseError::HeaderLine,
        ),
        (
            format!("INVITE sip:b@b SIP/2.0\r\n continuation-first\r\n{ok_tail}"),
            ParseError::HeaderLine,
        ),
        (
            format!("INVITE sip:b@b SIP/2.0\r\nContent-Length: -1\r\n{ok_tail}"),
            ParseError::BadHeader("Content-Length"),
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(dg(&raw).err(), Some(want), "{raw:?}");
    }
    assert_eq!(
        dg("INVITE sip:b@b SIP/2.0\r\n"),
        Err(ParseError::Incomplete)
    );
    assert_eq!(
        parse_datagram(Bytes::from_static(b"INVITE sip:\xff SIP/2.0\r\n\r\n")),
        Err(ParseError::NotUtf8)
    );
}

#[test]
fn semantic_errors_are_found_by_validate() {
    let t = |extra: &str, cseq: &str| {
        format!(
            "INVITE sip:b@b SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nTo: <sip:b@b>\r\n\
From: <sip:a@a>;tag=1\r\nCall-ID: x\r\nCSeq: {cseq}\r\n{extra}\r\n"
        )
    };
    assert_eq!(
        dg(&t("", "1 BYE")).unwrap().validate(),
        Err(ParseError::CSeqMethod)
    );
    assert_eq!(
        dg(&t("Call-ID: y\r\n", "1 INVITE")).unwrap().validate(),
        Err(ParseError::Duplicate("Call-ID"))
    );
    assert_eq!(
        dg(&t("Max-Forwards: ten\r\n", "1 INVITE"))
            .unwrap()
            .validate(),
        Err(ParseError::BadHeader("Max-Forwards"))
    );
    let no_via = "INVITE sip:b@b SIP/2.0\r\nTo: <sip:b@b>\r\nFrom: <sip:a@a>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
    assert_eq!(
        dg(no_via).unwrap().validate(),
        Err(ParseError::Missing("Via"))
    );
}

#[test]
fn a_broken_sip_request_uri_is_a_400_and_another_scheme_is_left_to_the_tu() {
    let base = "INVITE sip:b@b SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nTo: <sip:b@b>\r\n\
From: <sip:a@a>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
    let bad = base.replace("INVITE sip:b@b SIP", "INVITE sip:b@[::1 SIP");
    assert_eq!(
        dg(&bad).unwrap().validate(),
        Err(ParseError::Uri("unterminated IPv6 reference"))
    );
    let tel = base.replace("INVITE sip:b@b SIP", "INVITE tel:+15551234 SIP");
    assert_eq!(dg(&tel).unwrap().validate(), Ok(()));
}

#[test]
fn stream_framing_by_content_length() {
    let one = "OPTIONS sip:b@b SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nTo: <sip:b@b>\r\n\
From: <sip:a@a>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 3\r\n\r\nabc";
    let two = format!("\r\n\r\n{one}{one}");
    let buf = Bytes::from(two.clone());
    let (m, used) = parse_stream(&buf).unwrap();
    assert!(matches!(m, Message::Request(_)));
    assert_eq!(used, 4 + one.len());
    let (_, used2) = parse_stream(&buf.slice(used..)).unwrap();
    assert_eq!(used + used2, two.len());
    // A partial body waits for more bytes.
    assert_eq!(
        parse_stream(&Bytes::from(one[..one.len() - 1].to_owned())).err(),
        Some(ParseError::Incomplete)
    );
    // No Content-Length on a stream is an error.
    let no_cl = one.replace("Content-Length: 3\r\n", "");
    assert_eq!(
        parse_stream(&Bytes::from(no_cl)).err(),
        Some(ParseError::Missing("Content-Length"))
    );
}

fn without_length(mut m: Message) -> Message {
    match &mut m {
        Message::Request(r) => r.headers.remove(&Name::ContentLength),
        Message::Response(r) => r.headers.remove(&Name::ContentLength),
    }
    m
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(m) = parse_datagram(Bytes::from(data.clone())) {
                let _ = m.validate();
                let _ = m.to_bytes();
            }
            let _ = parse_stream(&Bytes::from(data));
        }

        #[test]
        fn parser_never_panics_on_mutated_invites(pos in 0usize..INVITE.len(), byte in any::<u8>()) {
            let mut data = INVITE.as_bytes().to_vec();
            data[pos] = byte;
            if let Ok(m) = parse_datagram(Bytes::from(data))
                && m.validate().is_ok() {
                    // Whatever validated must print and re-parse to the same message.
                    // (The printer adds a Content-Length where the input had none.)
                    let again = parse_datagram(Bytes::from(m.to_bytes())).unwrap();
                    prop_assert_eq!(without_length(again), without_length(m));
                }
        }

        #[test]
        fn printed_header_values_round_trip(value in "[a-zA-Z0-9 ;=.@:<>\"-]{0,40}") {
            let v = value.trim();
            let raw = format!("OPTIONS sip:b@b SIP/2.0\r\nX-Test: {v}\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
    To: <sip:b@b>\r\nFrom: <sip:a@a>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
            let m = parse_datagram(Bytes::from(raw)).unwrap();
            prop_assert_eq!(m.headers().get_other("x-test").map(|s| s.to_string()), Some(v.to_owned()));
            prop_assert_eq!(parse_datagram(Bytes::from(m.to_bytes())).unwrap(), m);
        }
    }
}
