//! The strict, zero-copy parser (RFC 3261 §7 and §25).
//!
//! The head is validated as UTF-8 once; every header value is then a [`ByteString`] slice of
//! the received buffer (no copy) unless it was folded over several lines, in which case the
//! pieces are joined with one space (§7.3.1). Only the start line is typed eagerly; typed
//! headers are read on demand (see [`crate::typed`]).

use bytes::Bytes;
use bytestring::ByteString;
use memchr::memmem;
use nom::Parser;
use nom::bytes::complete::{tag, take_while_m_n, take_while1};
use nom::character::complete::char;
use nom::combinator::{all_consuming, rest};

use crate::error::ParseError;
use crate::header::{Header, Headers, Name};
use crate::message::{Message, Request, Response};
use crate::method::Method;
use crate::typed::parse_u32;

/// Largest message we accept (a UDP datagram cannot be larger anyway).
pub const MAX_MESSAGE: usize = 65_535;

/// RFC 3261 `token` characters, as a table (the header-name hot path).
pub(crate) static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    t
};

fn is_token(c: char) -> bool {
    c.is_ascii() && TOKEN[c as usize]
}

type NomErr<'a, I = &'a str> = nom::Err<nom::error::Error<I>>;

fn request_line(i: &str) -> Result<(&str, &str), NomErr<'_>> {
    let (_, (method, _, uri, _)) = all_consuming((
        take_while1(is_token),
        char(' '),
        take_while1(|c: char| c != ' ' && !c.is_ascii_control()),
        tag(" SIP/2.0"),
    ))
    .parse(i)?;
    Ok((method, uri))
}

fn status_line(i: &str) -> Result<(&str, &str), NomErr<'_>> {
    let (_, (_, code, _, reason)) = all_consuming((
        tag("SIP/2.0 "),
        take_while_m_n(3, 3, |c: char| c.is_ascii_digit()),
        char(' '),
        rest,
    ))
    .parse(i)?;
    Ok((code, reason))
}

/// `name *WSP ":" *LWS value` over bytes: returns the name's length and where the value starts.
fn header_line(i: &[u8]) -> Result<(usize, usize), NomErr<'_, &[u8]>> {
    let (after, (name, _, _)) = (
        take_while1(|c: u8| TOKEN[usize::from(c)]),
        nom::bytes::complete::take_while(|c| c == b' ' || c == b'\t'),
        nom::character::complete::char(':'),
    )
        .parse(i)?;
    Ok((name.len(), i.len() - after.len()))
}

/// Trims spaces and tabs (LWS inside a line) from both ends.
fn trim_lws(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// One pass over the head: no control character but HT, and every CR/LF part of a CRLF pair.
/// A control character other than CR and LF may follow a backslash: a `quoted-pair` (RFC 3261
/// §25.1 allows any of them escaped in a quoted string; RFC 4475 §3.1.1.2 sends NUL, BEL, DEL).
fn check_head_bytes(head: &[u8]) -> Result<(), ParseError> {
    for (i, &c) in head.iter().enumerate() {
        if c >= 0x20 && c != 0x7f || c == b'\t' {
            continue;
        }
        if c != b'\r' && c != b'\n' && i > 0 && head[i - 1] == b'\\' {
            continue;
        }
        let paired = match c {
            b'\r' => head.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && head[i - 1] == b'\r',
            _ => false,
        };
        if !paired {
            return Err(
                if i < head.iter().position(|&b| b == b'\n').unwrap_or(head.len()) {
                    ParseError::StartLine
                } else {
                    ParseError::HeaderLine
                },
            );
        }
    }
    Ok(())
}

/// Why a request line did not parse: another SIP version (505), or its syntax.
fn start_line_error(line: &str) -> ParseError {
    match line.rsplit_once(' ').map(|(_, v)| v) {
        Some(v) if v.len() > 4 && v[..4].eq_ignore_ascii_case("SIP/") && v != "SIP/2.0" => {
            ParseError::Version
        }
        _ => ParseError::StartLine,
    }
}

/// Where the head ends: the index just past the first empty line (`CRLFCRLF`).
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    memmem::find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// Parses the head (start line and headers) of `buf[..head_end]`.
fn parse_head(buf: &Bytes, head_end: usize) -> Result<(StartLine, Headers), ParseError> {
    let raw = &buf[..head_end - 4];
    check_head_bytes(raw)?;
    let head = ByteString::try_from(buf.slice(..head_end - 4)).map_err(|_| ParseError::NotUtf8)?;
    let text: &str = &head;
    let first_end = memchr::memchr(b'\n', raw).map_or(raw.len(), |i| i - 1);
    let first = &text[..first_end];
    let start = if first.starts_with("SIP/2.0 ") {
        let (code, reason) = status_line(first).map_err(|_| ParseError::StartLine)?;
        let status: u16 = code.parse().map_err(|_| ParseError::StartLine)?;
        if !(100..=699).contains(&status) {
            return Err(ParseError::StartLine);
        }
        StartLine::Status(status, head.slice_ref(reason))
    } else {
        let (method, uri) = request_line(first).map_err(|_| start_line_error(first))?;
        let method = Method::parse(method).ok_or(ParseError::StartLine)?;
        StartLine::Request(method, head.slice_ref(uri))
    };

    let mut headers: Vec<Header> = Vec::with_capacity(16);
    let mut pos = (first_end + 2).min(raw.len());
    while pos < raw.len() {
        let end = memchr::memchr(b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i - 1);
        let line = &raw[pos..end];
        let next = end + 2;
        if line.first().is_some_and(|&c| c == b' ' || c == b'\t') {
            // §7.3.1 folding: the line continues the previous header's value.
            let last: &mut Header = headers.last_mut().ok_or(ParseError::HeaderLine)?;
            let more = trim_lws(&text[pos..end]);
            if !more.is_empty() {
                let joined = if last.value.is_empty() {
                    more.to_owned()
                } else {
                    format!("{} {}", &*last.value, more)
                };
                last.value = ByteString::from(joined);
            }
            pos = next;
            continue;
        }
        let (name_len, value_at) = header_line(line).map_err(|_| ParseError::HeaderLine)?;
        let name = &text[pos..pos + name_len];
        let value = trim_lws(&text[pos + value_at..end]);
        let name = Name::lookup(name).unwrap_or_else(|| Name::Other(head.slice_ref(name)));
        headers.push(Header {
            name,
            value: head.slice_ref(value),
        });
        pos = next;
    }
    Ok((start, Headers(headers)))
}

enum StartLine {
    Request(Method, ByteString),
    Status(u16, ByteString),
}

fn content_length(headers: &Headers) -> Result<Option<usize>, ParseError> {
    headers
        .get(&Name::ContentLength)
        .map(|v| parse_u32(v, "Content-Length").map(|n| n as usize))
        .transpose()
}

fn assemble(start: StartLine, headers: Headers, body: Bytes) -> Message {
    match start {
        StartLine::Request(method, uri) => Message::Request(Request {
            method,
            uri,
            headers,
            body,
        }),
        StartLine::Status(status, reason) => Message::Response(Response {
            status,
            reason,
            headers,
            body,
        }),
    }
}

/// Parses one datagram (UDP): the whole buffer is one message. A Content-Length larger than
/// the body is an error; a shorter one truncates the body (RFC 3261 §18.3).
pub fn parse_datagram(buf: Bytes) -> Result<Message, ParseError> {
    if buf.len() > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    let head_end = find_head_end(&buf).ok_or(ParseError::Incomplete)?;
    let (start, headers) = parse_head(&buf, head_end)?;
    let available = buf.len() - head_end;
    let body_len = match content_length(&headers)? {
        Some(n) if n > available => return Err(ParseError::ContentLength),
        Some(n) => n,
        None => available,
    };
    Ok(assemble(
        start,
        headers,
        buf.slice(head_end..head_end + body_len),
    ))
}

/// Frames one message from the front of a stream buffer (TCP/TLS). Returns the message and
/// how many bytes it used, or `Incomplete` when more bytes are needed. Leading CRLFs
/// (keep-alives, RFC 5626 §3.5.1) are skipped and counted as used.
pub fn parse_stream(buf: &Bytes) -> Result<(Message, usize), ParseError> {
    let skip = buf
        .iter()
        .take_while(|&&c| c == b'\r' || c == b'\n')
        .count();
    let data = buf.slice(skip..);
    let Some(head_end) = find_head_end(&data) else {
        return Err(if data.len() > MAX_MESSAGE {
            ParseError::TooLarge
        } else {
            ParseError::Incomplete
        });
    };
    let (start, headers) = parse_head(&data, head_end)?;
    // Content-Length is mandatory on stream transports (§20.14), and one: with two, where
    // the next message starts is unknown (RFC 4475 §3.3.9), so the stream cannot go on.
    if headers.all(&Name::ContentLength).nth(1).is_some() {
        return Err(ParseError::Duplicate("Content-Length"));
    }
    let len = content_length(&headers)?.ok_or(ParseError::Missing("Content-Length"))?;
    if head_end + len > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    if data.len() < head_end + len {
        return Err(ParseError::Incomplete);
    }
    let body = data.slice(head_end..head_end + len);
    Ok((assemble(start, headers, body), skip + head_end + len))
}

#[cfg(test)]
mod tests;
