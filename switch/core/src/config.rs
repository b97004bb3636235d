//! What the engine needs to know about its own place on the network.

use std::net::{IpAddr, SocketAddr};

use switchboard_sip::transaction::TimerConfig;

/// Engine settings (from `[sip]` and `[media]` of switchboard.toml).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// UDP listen address (used in Via and Contact).
    pub udp: Option<SocketAddr>,
    /// TCP listen address.
    pub tcp: Option<SocketAddr>,
    /// TLS listen address (SIP over TLS).
    pub tls: Option<SocketAddr>,
    /// Context for calls arriving on the SIP listeners from a trusted source.
    pub context: String,
    /// The sources whose calls are trusted (land in `context`).
    pub trusted: Vec<Cidr>,
    /// Context for calls from any other source: it reaches what ops put there, and nothing else.
    pub public_context: String,
    /// Context a REFER from leg B is routed in (a transfer: the Refer-To's number as if the
    /// caller had dialled it). None: the call's own context.
    pub transfer_context: Option<String>,
    /// T1/T2/T4.
    pub timers: TimerConfig,
    /// User-Agent / Server header value.
    pub user_agent: String,
    /// Calls refused with 503 above this many.
    pub max_calls: usize,
    /// Address RTP is anchored on (written in SDP).
    pub media_ip: IpAddr,
    /// RTP port range.
    pub rtp_ports: (u16, u16),
    /// Anchor media (rewrite SDP, relay RTP). `false` passes SDP through untouched: RTP flows
    /// between the legs directly (FreeSWITCH's bypass media).
    pub anchor_media: bool,
    /// Codecs allowed on legs, in preference order (empty = anything the legs agree on).
    pub codecs: Vec<String>,
    /// How digits travel on a leg unless its gateway or the dialplan says otherwise.
    pub dtmf: switchboard_media::DtmfMethod,
    /// The delay line (ms) of a leg whose in-band digits a leg app decides on: long enough
    /// for a tone to be recognised and silenced from its start (0: none; a tone then leaks
    /// for ~40 ms).
    pub inband_delay_ms: u32,
    /// Session timers (RFC 4028): the interval we ask for and grant, seconds (0: none unless
    /// a leg asks).
    pub session_expires: u32,
    /// The shortest interval we accept (RFC 4028's floor is 90 s).
    pub min_se: u32,
    /// SDES-SRTP suites we offer and accept, in preference order.
    pub srtp_suites: Vec<switchboard_media::srtp::Suite>,
    /// Overload control (`[limits]`).
    pub limits: crate::guard::Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            udp: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            tcp: None,
            tls: None,
            context: "default".into(),
            trusted: vec![
                Cidr::host([127, 0, 0, 1].into()),
                Cidr::host(std::net::Ipv6Addr::LOCALHOST.into()),
            ],
            public_context: "public".into(),
            transfer_context: None,
            timers: TimerConfig::default(),
            // No version: a scanner learns nothing of which bugs to try (set one in conf).
            user_agent: "Switchboard".into(),
            max_calls: 10_000,
            media_ip: IpAddr::from([127, 0, 0, 1]),
            rtp_ports: (20000, 29999),
            anchor_media: true,
            codecs: vec![
                "PCMU".into(),
                "PCMA".into(),
                "G722".into(),
                "opus".into(),
                "telephone-event".into(),
            ],
            dtmf: switchboard_media::DtmfMethod::Rfc4733,
            inband_delay_ms: 60,
            srtp_suites: switchboard_media::srtp::SUITES.to_vec(),
            session_expires: 1800,
            min_se: 90,
            limits: crate::guard::Limits::default(),
        }
    }
}

/// An address block (`203.0.113.0/24`, `2001:db8::/32`, a bare address = one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// One host.
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, prefix }
    }

    /// From `a.b.c.d/n`, `a.b.c.d`, `x::y/n`; `Err` in words.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Every address (`0.0.0.0/0`, `::/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    /// `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::Cidr;

    #[test]
    fn blocks_contain_what_they_should() {
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(c.contains("203.0.113.77".parse().unwrap()));
        assert!(!c.contains("203.0.114.1".parse().unwrap()));
        assert!(c.contains("::ffff:203.0.113.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.66".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert!(!v6.contains("203.0.113.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
