//! SDP rewriting for media anchoring (RFC 4566, offer/answer per RFC 3264).

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use sdp::description::common::{Address, ConnectionInformation};
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
    let mut sd = SessionDescription::unmarshal(&mut Cursor::new(body))
        .map_err(|e| SdpError::Malformed(e.to_string()))?;
    let session_conn = sd.connection_information.as_ref().and_then(conn_ip);
    let mut info = None;
    let addr_type = if ours.is_ipv4() { "IP4" } else { "IP6" };
    for m in sd.media_descriptions.iter_mut() {
        let is_audio = m.media_name.media == "audio" && m.media_name.port.value != 0;
        if !is_audio || info.is_some() {
            m.media_name.port.value = 0;
            continue;
        }
        let rtpmaps: Vec<(String, String)> = m
            .attributes
            .iter()
            .filter(|a| a.key == "rtpmap")
            .filter_map(|a| {
                a.value
                    .as_deref()?
                    .split_once(' ')
                    .map(|(p, e)| (p.to_owned(), e.to_owned()))
            })
            .collect();
        let mut kept = Vec::new();
        let mut names = Vec::new();
        for pt in &m.media_name.formats {
            let name = codec_name(pt, &rtpmaps);
            let ok = allowed.is_empty()
                || name
                    .as_ref()
                    .is_some_and(|n| allowed.iter().any(|a| a.eq_ignore_ascii_case(n)));
            if ok {
                kept.push(pt.clone());
                names.push(name.unwrap_or_else(|| pt.clone()));
            }
        }
        if !names
            .iter()
            .any(|n| !n.eq_ignore_ascii_case("telephone-event"))
        {
            return Err(SdpError::NoCommonCodec);
        }
        m.attributes.retain(|a| {
            let pt_of = |v: &Option<String>| {
                v.as_deref()
                    .and_then(|v| v.split(' ').next())
                    .map(str::to_owned)
            };
            match a.key.as_str() {
                "rtpmap" | "fmtp" => pt_of(&a.value).is_some_and(|p| kept.contains(&p)),
                "rtcp" | "candidate" | "ice-ufrag" | "ice-pwd" | "ice-options"
                | "end-of-candidates" | "remote-candidates" => false,
                _ => true,
            }
        });
        m.media_name.formats = kept;
        let leg_ip = m
            .connection_information
            .as_ref()
            .and_then(conn_ip)
            .or(session_conn);
        let remote_port = u16::try_from(m.media_name.port.value).ok();
        let rtp = match (leg_ip, remote_port) {
            (Some(ip), Some(p)) if !ip.is_unspecified() && p != 0 => Some(SocketAddr::new(ip, p)),
            _ => None,
        };
        // Old-style hold (c=0.0.0.0) is passed on as such.
        let shown = if rtp.is_none() && leg_ip.is_some_and(|i| i.is_unspecified()) {
            unspecified(ours)
        } else {
            ours
        };
        m.connection_information = Some(conn(addr_type, shown));
        m.media_name.port.value = port as isize;
        info = Some(MediaInfo { rtp, codecs: names });
    }
    let info = info.ok_or(SdpError::NoAudio)?;
    sd.connection_information = Some(conn(addr_type, ours));
    sd.origin.username = "switchboard".into();
    sd.origin.session_id = origin.0;
    sd.origin.session_version = origin.1;
    sd.origin.network_type = "IN".into();
    sd.origin.address_type = addr_type.into();
    sd.origin.unicast_address = ours.to_string();
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
}
