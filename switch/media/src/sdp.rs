//! SDP rewriting for media anchoring (RFC 4566, offer/answer per RFC 3264).

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::MediaDescription;
use sdp::description::session::SessionDescription;

/// Why an SDP body could not be anchored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is not valid SDP.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No audio stream in the body.
    #[error("no audio stream")]
    NoAudio,
    /// None of the offered codecs is allowed (answer 488).
    #[error("no codec in common")]
    NoCommonCodec,
}

/// What a leg's SDP says about its audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    /// Where the leg receives RTP (`None` when on hold with 0.0.0.0 or port 0).
    pub rtp: Option<SocketAddr>,
    /// Codec names kept, in order (e.g. `PCMU`, `telephone-event`).
    pub codecs: Vec<String>,
    /// The formats kept, in order, as the leg described them.
    pub formats: Vec<Format>,
    /// `a=ptime`, if given.
    pub ptime: Option<u32>,
    /// The leg sends RTP (not `a=recvonly` or `a=inactive`, and not on hold with 0.0.0.0).
    pub sends: bool,
    /// The stream's transport (`RTP/AVP`, `RTP/SAVP`...).
    pub proto: String,
    /// Its `a=crypto` values (SDES-SRTP keys, RFC 4568), in order.
    pub crypto: Vec<String>,
    /// Its direction, as the leg wrote it.
    pub dir: Dir,
}

/// The transport we write on the audio stream: its profile and our `a=crypto` lines. The
/// other leg's keys never pass: every `a=crypto` (and DTLS `fingerprint`/`setup`) of the body
/// rewritten is removed.
#[derive(Debug, Clone, Copy)]
pub struct Transport<'a> {
    /// `RTP/AVP`, or `RTP/SAVP` (the offer's profile, in an answer).
    pub proto: &'a str,
    /// `a=crypto` values of ours.
    pub crypto: &'a [String],
    /// The direction we write on the audio stream (an answer's), with our own address
    /// whatever the body said; `None` keeps the body's (an offer passed on).
    pub dir: Option<Dir>,
}

impl Transport<'static> {
    /// Plain RTP.
    pub const PLAIN: Transport<'static> = Transport {
        proto: "RTP/AVP",
        crypto: &[],
        dir: None,
    };
}

/// RTP profiles we can carry audio on (RFC 3551, 3711, 4585, 5124).
pub fn known_proto(proto: &str) -> bool {
    matches!(proto, "RTP/AVP" | "RTP/SAVP" | "RTP/AVPF" | "RTP/SAVPF")
}

/// An audio stream we can take: audio, a port, a profile we know.
fn usable(m: &MediaDescription) -> bool {
    m.media_name.media == "audio" && m.media_name.port.value != 0 && known_proto(&proto_of(m))
}

fn proto_of(m: &MediaDescription) -> String {
    m.media_name.protos.join("/")
}

fn crypto_of(m: &MediaDescription) -> Vec<String> {
    m.attributes
        .iter()
        .filter(|a| a.key == "crypto")
        .filter_map(|a| a.value.clone())
        .collect()
}

/// One payload format of an audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// Payload type.
    pub pt: u8,
    /// Encoding name (`PCMU`, `opus`, `telephone-event`).
    pub name: String,
    /// RTP clock rate.
    pub clock: u32,
    /// Channels (`/2` of opus), if given.
    pub channels: Option<u16>,
    /// Its `a=fmtp` parameters.
    pub fmtp: Option<String>,
}

impl Format {
    /// A format of ours (a codec added to an offer, or telephone-event).
    pub fn new(pt: u8, name: &str, clock: u32, fmtp: Option<&str>) -> Format {
        Format {
            pt,
            name: name.to_owned(),
            clock,
            channels: None,
            fmtp: fmtp.map(str::to_owned),
        }
    }

    /// Same codec as `other` (name and clock; payload types may differ between legs).
    pub fn same_codec(&self, other: &Format) -> bool {
        self.name.eq_ignore_ascii_case(&other.name) && self.clock == other.clock
    }

    /// RFC 4733 telephone-event.
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }

    fn rtpmap(&self) -> String {
        match self.channels {
            Some(c) => format!("{} {}/{}/{c}", self.pt, self.name, self.clock),
            None => format!("{} {}/{}", self.pt, self.name, self.clock),
        }
    }
}

/// What the audio stream's formats become.
#[derive(Debug, Clone, Copy)]
pub enum Formats<'a> {
    /// Keep those whose names are allowed (case-insensitive; empty = all), in order.
    Filter(&'a [String]),
    /// An offer: the allowed ones, then `extra` formats of ours appended.
    Offer {
        /// Allowed names (empty = all).
        allowed: &'a [String],
        /// Formats added after the leg's own.
        extra: &'a [Format],
    },
    /// Exactly these (an answer: the chosen codec and telephone-event).
    Exact(&'a [Format]),
}

/// Media types and profile tokens the SDP parser knows; others are legal (tokens, RFC 4566
/// §5.14) and stand for a stream we cannot carry.
const PARSER_MEDIA: [&str; 6] = ["audio", "video", "text", "application", "message", "image"];
const PARSER_PROTOS: [&str; 10] = [
    "UDP", "RTP", "AVP", "SAVP", "SAVPF", "TLS", "DTLS", "SCTP", "AVPF", "udptl",
];

/// An m-line's media type and profile as written, where the parser would refuse them.
type Odd = (Option<String>, Option<Vec<String>>);

/// Parses a body; an m-line with a media type or profile the parser does not know
/// (`m=application 9 UNKNOWN`, `m=xapplicationx`, `RTP/XAVPX`) is read with a stand-in
/// (`application`, `UDP`: never taken as audio) and its own words returned, by m-line, to
/// be written back.
fn parse(body: &[u8]) -> Result<(SessionDescription, Vec<Odd>), SdpError> {
    let text = String::from_utf8_lossy(body);
    let mut odd = Vec::new();
    let mut lines = Vec::new();
    for line in text.split_inclusive('\n') {
        let Some(rest) = line.strip_prefix("m=") else {
            lines.push(std::borrow::Cow::Borrowed(line));
            continue;
        };
        let mut words: Vec<&str> = rest.trim_end_matches(['\r', '\n']).split(' ').collect();
        let mut entry: Odd = (None, None);
        if let Some(media) = words.first_mut()
            && !PARSER_MEDIA.contains(media)
        {
            entry.0 = Some((*media).to_owned());
            *media = "application";
        }
        if let Some(proto) = words.get_mut(2)
            && proto.split('/').any(|t| !PARSER_PROTOS.contains(&t))
        {
            entry.1 = Some(proto.split('/').map(str::to_owned).collect());
            *proto = "UDP";
        }
        odd.push(entry);
        let end = &line[line.trim_end_matches(['\r', '\n']).len()..];
        lines.push(std::borrow::Cow::Owned(format!(
            "m={}{end}",
            words.join(" ")
        )));
    }
    let fixed: String = lines.concat();
    let sd = SessionDescription::unmarshal(&mut Cursor::new(fixed.as_bytes()))
        .map_err(|e| SdpError::Malformed(e.to_string()))?;
    Ok((sd, odd))
}

/// Parses the first audio stream of an SDP body without changing it.
pub fn audio(body: &[u8]) -> Result<MediaInfo, SdpError> {
    let (mut sd, _) = parse(body)?;
    let session_conn = sd.connection_information.as_ref().and_then(conn_ip);
    let session_attrs = sd.attributes.clone();
    let m = sd
        .media_descriptions
        .iter_mut()
        .find(|m| usable(m))
        .ok_or(SdpError::NoAudio)?;
    let formats = formats_of(m);
    let leg_ip = m
        .connection_information
        .as_ref()
        .and_then(conn_ip)
        .or(session_conn);
    let port = u16::try_from(m.media_name.port.value).ok();
    let rtp = rtp_addr(leg_ip, port);
    Ok(MediaInfo {
        rtp,
        codecs: formats.iter().map(|f| f.name.clone()).collect(),
        ptime: ptime_of(m),
        sends: rtp.is_some() && sends_of(m, &session_attrs),
        formats,
        proto: proto_of(m),
        crypto: crypto_of(m),
        dir: Dir::of(
            m,
            &session_attrs,
            leg_ip.is_some_and(|i| i.is_unspecified()),
        ),
    })
}

fn rtp_addr(ip: Option<IpAddr>, port: Option<u16>) -> Option<SocketAddr> {
    match (ip, port) {
        (Some(ip), Some(p)) if !ip.is_unspecified() && p != 0 => Some(SocketAddr::new(ip, p)),
        _ => None,
    }
}

/// A stream's direction as its writer sees it (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dir {
    /// The writer will send.
    pub send: bool,
    /// The writer will receive.
    pub recv: bool,
}

impl Dir {
    /// `a=sendrecv`, the default.
    pub const SENDRECV: Dir = Dir {
        send: true,
        recv: true,
    };

    fn attr(self) -> &'static str {
        match (self.send, self.recv) {
            (true, true) => "sendrecv",
            (true, false) => "sendonly",
            (false, true) => "recvonly",
            (false, false) => "inactive",
        }
    }

    /// Our answer to an offer `offer` when the far end answered `far`: no more than the
    /// offer allows — sendonly is answered recvonly or inactive, recvonly sendonly or
    /// inactive, inactive inactive (RFC 3264 §6.1).
    pub fn answer(offer: Dir, far: Dir) -> Dir {
        Dir {
            send: far.send && offer.recv,
            recv: far.recv && offer.send,
        }
    }

    /// The direction of a stream: media level, else session level, else sendrecv; a
    /// connection address of 0.0.0.0 (RFC 2543 hold) says its writer will not receive.
    fn of(m: &MediaDescription, session: &[Attribute], zero_addr: bool) -> Dir {
        let dir = |attrs: &[Attribute]| {
            attrs.iter().find_map(|a| match a.key.as_str() {
                "sendrecv" => Some(Dir::SENDRECV),
                "sendonly" => Some(Dir {
                    send: true,
                    recv: false,
                }),
                "recvonly" => Some(Dir {
                    send: false,
                    recv: true,
                }),
                "inactive" => Some(Dir {
                    send: false,
                    recv: false,
                }),
                _ => None,
            })
        };
        let mut d = dir(&m.attributes)
            .or_else(|| dir(session))
            .unwrap_or(Dir::SENDRECV);
        if zero_addr {
            d.recv = false;
        }
        d
    }
}

fn is_direction(key: &str) -> bool {
    matches!(key, "sendrecv" | "sendonly" | "recvonly" | "inactive")
}

/// `false` when the stream's direction (media level, else session level) says the leg will
/// not send.
fn sends_of(m: &MediaDescription, session: &[Attribute]) -> bool {
    let dir = |attrs: &[Attribute]| {
        attrs.iter().find_map(|a| match a.key.as_str() {
            "sendrecv" | "sendonly" => Some(true),
            "recvonly" | "inactive" => Some(false),
            _ => None,
        })
    };
    dir(&m.attributes).or_else(|| dir(session)).unwrap_or(true)
}

fn ptime_of(m: &MediaDescription) -> Option<u32> {
    m.attributes
        .iter()
        .find(|a| a.key == "ptime")
        .and_then(|a| a.value.as_deref()?.trim().parse().ok())
}

/// The formats of an m-line with their rtpmap/fmtp (static types from RFC 3551 §6).
fn formats_of(m: &MediaDescription) -> Vec<Format> {
    let attr = |key: &str, pt: &str| {
        m.attributes.iter().find_map(|a| {
            let v = a.value.as_deref()?;
            let (p, rest) = v.split_once(' ')?;
            (a.key == key && p == pt).then(|| rest.trim().to_owned())
        })
    };
    m.media_name
        .formats
        .iter()
        .filter_map(|pt_s| {
            let pt: u8 = pt_s.parse().ok().filter(|p| *p < 128)?;
            let (name, clock, channels) = match attr("rtpmap", pt_s) {
                Some(map) => {
                    let mut it = map.split('/');
                    let name = it.next()?.to_owned();
                    let clock = it.next().and_then(|c| c.parse().ok()).unwrap_or(8000);
                    (name, clock, it.next().and_then(|c| c.parse().ok()))
                }
                None => {
                    // Static types all use an 8000 Hz clock (G.722's too, RFC 3551 §4.5.2).
                    (codec_name(pt_s, &[])?, 8000, None)
                }
            };
            Some(Format {
                pt,
                name,
                clock,
                channels,
                fmtp: attr("fmtp", pt_s),
            })
        })
        .collect()
}

/// Name of a payload type: from its rtpmap, else the static table (RFC 3551 §6).
fn codec_name(pt: &str, rtpmaps: &[(String, String)]) -> Option<String> {
    if let Some((_, enc)) = rtpmaps.iter().find(|(p, _)| p == pt) {
        return enc.split('/').next().map(str::to_owned);
    }
    Some(
        match pt {
            "0" => "PCMU",
            "3" => "GSM",
            "8" => "PCMA",
            "9" => "G722",
            "18" => "G729",
            _ => return None,
        }
        .to_owned(),
    )
}

/// Rewrites `body` so the leg receiving it sends its audio to `ours:port`: the session and
/// audio connection lines carry our address, the audio port is ours, codecs not in `allowed`
/// (case-insensitive names; empty = all) are removed, other media streams are disabled
/// (port 0) and ICE attributes dropped (the switch anchors, the legs don't do ICE).
/// `origin` = (session id, version) of the SDP we send on this leg.
pub fn rewrite(
    body: &[u8],
    ours: IpAddr,
    port: u16,
    allowed: &[String],
    origin: (u64, u64),
) -> Result<(Vec<u8>, MediaInfo), SdpError> {
    rewrite_with(
        body,
        ours,
        port,
        Formats::Filter(allowed),
        origin,
        Transport::PLAIN,
    )
}

/// [`rewrite`] with the formats chosen by `edit` and the audio stream's transport
/// `transport`. The [`MediaInfo`] describes the leg's own body (its address and the formats
/// it listed that were kept), not what we wrote.
pub fn rewrite_with(
    body: &[u8],
    ours: IpAddr,
    port: u16,
    edit: Formats<'_>,
    origin: (u64, u64),
    transport: Transport<'_>,
) -> Result<(Vec<u8>, MediaInfo), SdpError> {
    let (mut sd, odd) = parse(body)?;
    let session_conn = sd.connection_information.as_ref().and_then(conn_ip);
    let session_attrs = sd.attributes.clone();
    let mut info = None;
    let addr_type = if ours.is_ipv4() { "IP4" } else { "IP6" };
    for m in sd.media_descriptions.iter_mut() {
        // Keys and DTLS parameters belong to the leg that wrote them: none passes on.
        m.attributes
            .retain(|a| !matches!(a.key.as_str(), "crypto" | "fingerprint" | "setup"));
        if !usable(m) || info.is_some() {
            m.media_name.port.value = 0;
            continue;
        }
        let leg_proto = proto_of(m);
        let leg_crypto = crypto_of(m);
        let leg_ip = m
            .connection_information
            .as_ref()
            .and_then(conn_ip)
            .or(session_conn);
        let leg_dir = Dir::of(
            m,
            &session_attrs,
            leg_ip.is_some_and(|i| i.is_unspecified()),
        );
        let leg_sends = sends_of(m, &session_attrs);
        let theirs = formats_of(m);
        let ptime = ptime_of(m);
        let allowed_ok = |allowed: &[String], f: &Format| {
            allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(&f.name))
        };
        let (kept_theirs, written): (Vec<Format>, Vec<Format>) = match edit {
            Formats::Filter(allowed) => {
                let k: Vec<Format> = theirs
                    .iter()
                    .filter(|f| allowed_ok(allowed, f))
                    .cloned()
                    .collect();
                (k.clone(), k)
            }
            Formats::Offer { allowed, extra } => {
                let k: Vec<Format> = theirs
                    .iter()
                    .filter(|f| allowed_ok(allowed, f))
                    .cloned()
                    .collect();
                let mut w = k.clone();
                w.extend(extra.iter().cloned());
                (k, w)
            }
            Formats::Exact(list) => (theirs.clone(), list.to_vec()),
        };
        if !written.iter().any(|f| !f.is_telephone_event()) {
            return Err(SdpError::NoCommonCodec);
        }
        m.attributes.retain(|a| {
            !matches!(
                a.key.as_str(),
                "rtpmap"
                    | "fmtp"
                    | "rtcp"
                    | "candidate"
                    | "ice-ufrag"
                    | "ice-pwd"
                    | "ice-options"
                    | "end-of-candidates"
                    | "remote-candidates"
                    // The other leg's stream, not ours: we send with an SSRC of our own
                    // (RTCP carries our CNAME) and none of its extensions or feedback.
                    | "ssrc"
                    | "ssrc-group"
                    | "msid"
                    | "label"
                    | "rtcp-rsize"
                    | "rtcp-fb"
                    | "extmap"
                    | "extmap-allow-mixed"
                    // We send RTCP from its own port (RFC 5761 mux is not done).
                    | "rtcp-mux"
            )
        });
        // rtpmap and fmtp lines first, in format order, as most stacks write them.
        let mut lines = Vec::new();
        for f in &written {
            lines.push(Attribute {
                key: "rtpmap".into(),
                value: Some(f.rtpmap()),
            });
            if let Some(p) = &f.fmtp {
                lines.push(Attribute {
                    key: "fmtp".into(),
                    value: Some(format!("{} {p}", f.pt)),
                });
            }
        }
        lines.append(&mut m.attributes);
        m.attributes = lines;
        let kept: Vec<String> = written.iter().map(|f| f.pt.to_string()).collect();
        let names: Vec<String> = kept_theirs.iter().map(|f| f.name.clone()).collect();
        m.media_name.formats = kept;
        let remote_port = u16::try_from(m.media_name.port.value).ok();
        let rtp = rtp_addr(leg_ip, remote_port);
        // Old-style hold (c=0.0.0.0) in an offer is passed on as such; an answer of ours
        // says its direction in words, at our address.
        let shown = if transport.dir.is_none()
            && rtp.is_none()
            && leg_ip.is_some_and(|i| i.is_unspecified())
        {
            unspecified(ours)
        } else {
            ours
        };
        if let Some(d) = transport.dir {
            m.attributes.retain(|a| !is_direction(&a.key));
            m.attributes.push(Attribute {
                key: d.attr().into(),
                value: None,
            });
        }
        m.connection_information = Some(conn(addr_type, shown));
        m.media_name.port.value = port as isize;
        m.media_name.protos = transport.proto.split('/').map(str::to_owned).collect();
        for c in transport.crypto {
            m.attributes.push(Attribute {
                key: "crypto".into(),
                value: Some(c.clone()),
            });
        }
        info = Some(MediaInfo {
            rtp,
            codecs: names,
            formats: kept_theirs,
            ptime,
            sends: rtp.is_some() && leg_sends,
            proto: leg_proto,
            crypto: leg_crypto,
            dir: leg_dir,
        });
    }
    let info = info.ok_or(SdpError::NoAudio)?;
    // Session-level attributes of the other leg's transport and streams.
    sd.attributes.retain(|a| {
        !matches!(
            a.key.as_str(),
            "ice-ufrag"
                | "ice-pwd"
                | "ice-options"
                | "ice-lite"
                | "msid-semantic"
                | "extmap-allow-mixed"
                | "crypto"
                | "fingerprint"
                | "setup"
        ) && (transport.dir.is_none() || !is_direction(&a.key))
    });
    sd.connection_information = Some(conn(addr_type, ours));
    sd.origin.username = "switchboard".into();
    sd.origin.session_id = origin.0;
    sd.origin.session_version = origin.1;
    sd.origin.network_type = "IN".into();
    sd.origin.address_type = addr_type.into();
    sd.origin.unicast_address = ours.to_string();
    for (m, (media, protos)) in sd.media_descriptions.iter_mut().zip(odd) {
        if let Some(media) = media {
            m.media_name.media = media;
        }
        if let Some(protos) = protos {
            m.media_name.protos = protos;
        }
    }
    Ok((sd.marshal().into_bytes(), info))
}

fn unspecified(ours: IpAddr) -> IpAddr {
    if ours.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    }
}

fn conn(addr_type: &str, ip: IpAddr) -> ConnectionInformation {
    ConnectionInformation {
        network_type: "IN".into(),
        address_type: addr_type.into(),
        address: Some(Address {
            address: ip.to_string(),
            ttl: None,
            range: None,
        }),
    }
}

fn conn_ip(c: &ConnectionInformation) -> Option<IpAddr> {
    c.address.as_ref()?.address.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n\
m=video 51372 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    fn allowed(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn offer_is_anchored_and_filtered_to_allowed_codecs() {
        let ours: IpAddr = "127.0.0.1".parse().unwrap();
        let (out, info) = rewrite(
            OFFER.as_bytes(),
            ours,
            20000,
            &allowed(&["PCMA", "PCMU", "telephone-event"]),
            (7, 1),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(info.rtp, Some("10.0.0.5:49170".parse().unwrap()));
        assert_eq!(
            info.codecs,
            vec!["PCMU", "PCMA", "telephone-event"],
            "offer order is kept"
        );
        assert!(text.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"), "{text}");
        assert!(text.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(text.contains("o=switchboard 7 1 IN IP4 127.0.0.1\r\n"));
        assert!(!text.contains("G729") && !text.contains("fmtp:18"));
        assert!(
            text.contains("a=fmtp:101 0-16")
                && text.contains("a=ptime:20")
                && text.contains("a=sendrecv")
        );
        assert!(
            text.contains("m=video 0 RTP/AVP 96"),
            "other streams are disabled"
        );
        assert!(!text.contains("10.0.0.5"));
    }

    #[test]
    fn opus_rtpmap_round_trips_and_hold_is_preserved() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 5000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=sendonly\r\n";
        let (out, info) = rewrite(
            sdp.as_bytes(),
            "127.0.0.1".parse().unwrap(),
            20002,
            &[],
            (1, 2),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("a=rtpmap:111 opus/48000/2"), "{text}");
        assert_eq!(info.rtp, None, "c=0.0.0.0 is hold");
        assert!(text.contains("m=audio 20002") && text.contains("a=sendonly"));
    }

    #[test]
    fn direction_tells_whether_the_leg_sends() {
        let base = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n";
        let with = |attr: &str| format!("{base}m=audio 4000 RTP/AVP 0\r\n{attr}");
        assert!(audio(with("").as_bytes()).unwrap().sends);
        assert!(audio(with("a=sendonly\r\n").as_bytes()).unwrap().sends);
        assert!(!audio(with("a=recvonly\r\n").as_bytes()).unwrap().sends);
        assert!(!audio(with("a=inactive\r\n").as_bytes()).unwrap().sends);
        let session_level = format!("{base}a=inactive\r\nm=audio 4000 RTP/AVP 0\r\n");
        assert!(!audio(session_level.as_bytes()).unwrap().sends);
        let hold =
            base.replace("c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0") + "m=audio 4000 RTP/AVP 0\r\n";
        assert!(!audio(hold.as_bytes()).unwrap().sends);
    }

    #[test]
    fn no_common_codec_and_garbage_are_errors() {
        let ours = "127.0.0.1".parse().unwrap();
        assert_eq!(
            rewrite(OFFER.as_bytes(), ours, 1, &allowed(&["opus"]), (1, 1)),
            Err(SdpError::NoCommonCodec)
        );
        assert!(matches!(
            rewrite(b"hello", ours, 1, &[], (1, 1)),
            Err(SdpError::Malformed(_))
        ));
    }

    /// RFC 3264 §6.1: each direction offered and what we answer, whatever the far end said.
    #[test]
    fn an_answer_never_allows_more_than_the_offer() {
        let d = |send, recv| Dir { send, recv };
        let (sr, so, ro, ia) = (
            d(true, true),
            d(true, false),
            d(false, true),
            d(false, false),
        );
        for (offer, far, want) in [
            (sr, sr, sr),
            (sr, ro, ro),
            (so, sr, ro),
            (so, so, ia),
            (ro, sr, so),
            (ro, ro, ia),
            (ia, sr, ia),
        ] {
            assert_eq!(Dir::answer(offer, far), want, "{offer:?} answered {far:?}");
        }
    }

    /// An offer with streams we cannot carry (another media type, an unknown profile, a
    /// second audio stream) around one we can: the answer written on it keeps every m-line in
    /// order, rejects the others with port 0, answers the direction and uses our address.
    #[test]
    fn an_answer_keeps_the_offers_layout_rejecting_what_it_cannot_carry() {
        let offer = "v=0\r\no=x 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\na=sendonly\r\n\
m=application 5000 UNKNOWN 9\r\n\
m=audio 5002 RTP/XAVPX 0\r\n\
m=audio 5004 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\n\
m=audio 5006 RTP/AVP 8\r\n\
m=xapplicationx 5008 RTP/AVP 96\r\n";
        let info = audio(offer.as_bytes()).unwrap();
        assert_eq!(info.rtp, None, "c=0.0.0.0");
        assert_eq!(info.proto, "RTP/AVP");
        assert_eq!(
            info.dir,
            Dir {
                send: true,
                recv: false
            }
        );
        let exact = [Format::new(0, "PCMU", 8000, None)];
        let (out, _) = rewrite_with(
            offer.as_bytes(),
            "192.0.2.1".parse().unwrap(),
            30000,
            Formats::Exact(&exact),
            (1, 2),
            Transport {
                proto: "RTP/AVP",
                crypto: &[],
                dir: Some(Dir::answer(info.dir, Dir::SENDRECV)),
            },
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        let m: Vec<&str> = out.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m,
            [
                "m=application 0 UNKNOWN 9",
                "m=audio 0 RTP/XAVPX 0",
                "m=audio 30000 RTP/AVP 0",
                "m=audio 0 RTP/AVP 8",
                "m=xapplicationx 0 RTP/AVP 96",
            ],
            "{out}"
        );
        assert!(
            out.contains("a=recvonly") && !out.contains("a=sendonly"),
            "{out}"
        );
        assert!(
            !out.contains("0.0.0.0") && out.contains("c=IN IP4 192.0.2.1"),
            "{out}"
        );
        assert!(!out.contains("rtcp-mux"), "we do not multiplex RTCP: {out}");
    }

    #[test]
    fn the_other_legs_stream_attributes_are_not_passed_on() {
        let offer = "v=0\r\no=b 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\na=ice-lite\r\na=msid-semantic: WMS *\r\n\
m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ssrc:12345 cname:acd@host\r\na=ssrc-group:FID 1 2\r\n\
a=msid:s a\r\na=label:1\r\na=rtcp-rsize\r\na=rtcp-fb:0 nack\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=sendrecv\r\n";
        let (out, _) = rewrite(
            offer.as_bytes(),
            "192.0.2.1".parse().unwrap(),
            30000,
            &[],
            (1, 1),
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        for gone in [
            "a=ssrc",
            "msid",
            "a=label",
            "rtcp-rsize",
            "rtcp-fb",
            "extmap",
            "ice-lite",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(
            out.contains("a=rtpmap:0 PCMU/8000") && out.contains("a=sendrecv"),
            "{out}"
        );
    }
}
