//! Messages shared by the parser benchmark (`cargo bench`) and the strictness table
//! (`cargo run --release --bin strictness`).

/// A typical INVITE from a softphone, with SDP (what a B2BUA parses most).
pub const INVITE: &str = "INVITE sip:+15551234567@gw.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---8a6f5e3b9c2d1a04;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n\
To: <sip:+15551234567@gw.example.com;user=phone>\r\n\
From: \"Alice Example\" <sip:alice@example.com>;tag=8d7c6b5a\r\n\
Call-ID: 3c26700b5e9d4f6a8f2b1c0d9e8f7a6b@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Content-Type: application/sdp\r\n\
Supported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri\r\n\
User-Agent: Z 5.6.1 v2.10.20.1\r\n\
Allow-Events: presence, kpml, talk, as-feature-event\r\n\
Content-Length: 295\r\n\
\r\n\
v=0\r\n\
o=Z 0 1 IN IP4 192.0.2.10\r\n\
s=Z\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 8000 RTP/AVP 106 9 98 101 0 8 3\r\n\
a=rtpmap:106 opus/48000/2\r\n\
a=fmtp:106 sprop-maxcapturerate=16000; minptime=20; useinbandfec=1\r\n\
a=rtpmap:98 telephone-event/48000\r\n\
a=fmtp:98 0-16\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n";

/// A 200 OK to that INVITE.
pub const OK200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---8a6f5e3b9c2d1a04;rport=5060;received=192.0.2.10\r\n\
Record-Route: <sip:192.0.2.1;lr>\r\n\
Contact: <sip:+15551234567@198.51.100.7:5060>\r\n\
To: <sip:+15551234567@gw.example.com;user=phone>;tag=as6f1e2d3c\r\n\
From: \"Alice Example\" <sip:alice@example.com>;tag=8d7c6b5a\r\n\
Call-ID: 3c26700b5e9d4f6a8f2b1c0d9e8f7a6b@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Server: Asterisk PBX 20.5.0\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n\
Supported: replaces, timer\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\
\r\n";

/// A short BYE.
pub const BYE: &str = "BYE sip:alice@192.0.2.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK76a1b2c3\r\n\
Max-Forwards: 70\r\n\
From: <sip:+15551234567@gw.example.com;user=phone>;tag=as6f1e2d3c\r\n\
To: \"Alice Example\" <sip:alice@example.com>;tag=8d7c6b5a\r\n\
Call-ID: 3c26700b5e9d4f6a8f2b1c0d9e8f7a6b@192.0.2.10\r\n\
CSeq: 102 BYE\r\n\
Content-Length: 0\r\n\
\r\n";

/// Messages a strict parser must refuse (RFC 3261 §25 grammar, §7, §18.3), by name.
pub fn malformed() -> Vec<(&'static str, String)> {
    let ok = "Via: SIP/2.0/UDP a.example;branch=z9hG4bK1\r\nTo: <sip:b@b.example>\r\nFrom: <sip:a@a.example>;tag=1\r\nCall-ID: x@y\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n";
    vec![
        ("two spaces in the request line", format!("OPTIONS  sip:b@b.example SIP/2.0\r\n{ok}Content-Length: 0\r\n\r\n")),
        ("SIP/3.0 version", format!("OPTIONS sip:b@b.example SIP/3.0\r\n{ok}Content-Length: 0\r\n\r\n")),
        ("method with a bad character", format!("OPT<ONS sip:b@b.example SIP/2.0\r\n{ok}Content-Length: 0\r\n\r\n")),
        ("status code of 2 digits", format!("SIP/2.0 99 Odd\r\n{ok}Content-Length: 0\r\n\r\n")),
        ("header name with a space", format!("OPTIONS sip:b@b.example SIP/2.0\r\nBad Header: x\r\n{ok}Content-Length: 0\r\n\r\n")),
        ("continuation line first", format!("OPTIONS sip:b@b.example SIP/2.0\r\n folded-first\r\n{ok}Content-Length: 0\r\n\r\n")),
        ("negative Content-Length", format!("OPTIONS sip:b@b.example SIP/2.0\r\n{ok}Content-Length: -1\r\n\r\n")),
        ("Content-Length beyond the body", format!("OPTIONS sip:b@b.example SIP/2.0\r\n{ok}Content-Length: 50\r\n\r\nshort")),
        ("DEL (0x7f) in a header value", format!("OPTIONS sip:b@b.example SIP/2.0\r\nSubject: \u{0}\r\n{ok}Content-Length: 0\r\n\r\n").replace('\u{0}', "\u{7f}")),
        ("no empty line after the head", format!("OPTIONS sip:b@b.example SIP/2.0\r\n{ok}Content-Length: 0\r\n")),
        ("bare LF line endings", format!("OPTIONS sip:b@b.example SIP/2.0\r\n{ok}Content-Length: 0\r\n\r\n").replace("\r\n", "\n")),
        ("control character in a header", format!("OPTIONS sip:b@b.example SIP/2.0\r\nSubject: a\u{1}b\r\n{ok}Content-Length: 0\r\n\r\n")),
        ("Request-URI with an unterminated IPv6 reference", format!("OPTIONS sip:b@[::1 SIP/2.0\r\n{ok}Content-Length: 0\r\n\r\n")),
    ]
}

/// ezk's way of decoding a datagram (as its transport layer does): the message line, then
/// every header line into `Headers`; typed headers stay lazy, like ours.
pub fn ezk_parse(bytes: &[u8]) -> Option<(ezk_sip_types::msg::MessageLine, ezk_sip_types::Headers, bytes::Bytes)> {
    use ezk_sip_types::msg::{Line, MessageLine, PullParser};
    use ezk_sip_types::parse::Parse;
    let buffer = bytes::Bytes::copy_from_slice(bytes);
    let mut parser = PullParser::new(&buffer, 0);
    let mut first = None;
    let mut headers = ezk_sip_types::Headers::new();
    for item in &mut parser {
        let line = std::str::from_utf8(item.ok()?).ok()?;
        if first.is_none() {
            first = Some(MessageLine::parse(&buffer)(line).ok()?.1);
        } else {
            let (_, l) = Line::parse(&buffer, line).ok()?;
            headers.insert(l.name, l.value);
        }
    }
    let head_end = parser.head_end();
    let len = headers.get_named::<ezk_sip_types::header::typed::ContentLength>().map(|c| c.0).unwrap_or(buffer.len() - head_end);
    if buffer.len() < head_end + len {
        return None;
    }
    Some((first?, headers, buffer.slice(head_end..head_end + len)))
}

/// Ours, as the server runs it: parse, then validate the mandatory headers.
pub fn ours_parse(bytes: bytes::Bytes) -> Option<switchboard_sip::Message> {
    let m = switchboard_sip::parse_datagram(bytes).ok()?;
    m.validate().ok()?;
    Some(m)
}
