//! The relay decision for one call: which address each packet goes to.
//!
//! Each leg talks to its own local port pair. A leg's address comes from its SDP, but behind
//! NAT the packets come from elsewhere: the first packet from a leg latches its real source
//! (symmetric RTP, as rtpengine and FreeSWITCH do), and replies go there. A new SDP from the
//! leg (re-INVITE) unlatches it. Packets are forwarded untouched (SSRC, sequence numbers and
//! timestamps included) when both legs use the same codec.
//!
//! Who may latch ([`Latching`]): by default only a packet from the address the leg's SDP
//! names or from the address its signalling came from (a caller behind NAT sends from the
//! address its INVITE came from). Anyone else's packets are dropped, before and after the
//! leg's own first packet: a stranger who guesses the port cannot inject audio into the call
//! or take its stream (RTP bleed). `Any` latches the first packet from anywhere, for callers
//! behind a proxy that neither rewrites their SDP nor relays their media.

use std::net::{IpAddr, SocketAddr};

/// Which sources may latch a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latching {
    /// The SDP's address or the signalling's (`rtp_latching = "sdp"`).
    #[default]
    Sdp,
    /// The first packet from anywhere (`rtp_latching = "any"`).
    Any,
}

/// A leg of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller's leg.
    A,
    /// The callee's leg.
    B,
}

impl Side {
    /// The other leg.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Counters of one direction (packets received from a leg).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// RTP packets received from the leg.
    pub rtp_in: u64,
    /// RTP packets forwarded to the other leg.
    pub rtp_out: u64,
    /// RTCP packets received.
    pub rtcp_in: u64,
    /// Packets dropped (no destination known yet, or from a stranger once latched).
    pub dropped: u64,
}

#[derive(Debug, Clone, Default)]
struct Leg {
    sdp: Option<SocketAddr>,
    /// Where the leg's signalling comes from.
    signalling: Option<IpAddr>,
    latched: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    stats: RelayStats,
}

impl Leg {
    fn rtp_dest(&self) -> Option<SocketAddr> {
        self.latched.or(self.sdp)
    }

    fn rtcp_dest(&self) -> Option<SocketAddr> {
        self.latched_rtcp.or_else(|| {
            self.rtp_dest()
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        })
    }
}

/// One call's relay state.
#[derive(Debug, Clone, Default)]
pub struct Relay {
    a: Leg,
    b: Leg,
    latching: Latching,
}

impl Relay {
    /// A relay that knows no address yet, latching by the default policy.
    pub fn new() -> Relay {
        Relay::default()
    }

    /// A relay with this latching policy.
    pub fn with_latching(latching: Latching) -> Relay {
        Relay {
            latching,
            ..Relay::default()
        }
    }

    /// Where a leg's signalling comes from (its INVITE's or its answer's source).
    pub fn set_signalling(&mut self, side: Side, ip: Option<IpAddr>) {
        self.leg(side).signalling = ip;
    }

    fn leg(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// A leg's SDP announced where it receives RTP (`None` for hold with 0.0.0.0).
    pub fn set_remote(&mut self, side: Side, addr: Option<SocketAddr>) {
        let leg = self.leg(side);
        if leg.sdp != addr {
            leg.latched = None;
            leg.latched_rtcp = None;
        }
        leg.sdp = addr;
    }

    /// A packet arrived from `side` at its local port (`rtcp` for the odd port). Returns where
    /// to forward it from the other leg's local port, or `None` to drop it.
    pub fn on_packet(&mut self, side: Side, src: SocketAddr, rtcp: bool) -> Option<SocketAddr> {
        if !self.accept(side, src, rtcp) {
            return None;
        }
        let dest = if rtcp {
            self.rtcp_dest(side.other())
        } else {
            self.rtp_dest(side.other())
        };
        let leg = self.leg(side);
        match dest {
            Some(d) => {
                if !rtcp {
                    leg.stats.rtp_out += 1;
                }
                Some(d)
            }
            None => {
                leg.stats.dropped += 1;
                None
            }
        }
    }

    /// Latches a packet's source for `side` (the first packet's, or the SDP's address): `false`
    /// for a stranger's packet once latched, which is dropped.
    pub fn accept(&mut self, side: Side, src: SocketAddr, rtcp: bool) -> bool {
        let strict = self.latching == Latching::Sdp;
        let leg = self.leg(side);
        if strict && leg.sdp.map(|a| a.ip()) != Some(src.ip()) && leg.signalling != Some(src.ip()) {
            if !rtcp {
                leg.stats.rtp_in += 1;
            }
            leg.stats.dropped += 1;
            return false;
        }
        let known_ip = leg.latched.or(leg.sdp).map(|a| a.ip());
        if rtcp {
            leg.stats.rtcp_in += 1;
            if leg.latched_rtcp.is_none() {
                leg.latched_rtcp = Some(src);
            }
            return true;
        }
        leg.stats.rtp_in += 1;
        match leg.latched {
            None => leg.latched = Some(src),
            Some(l) if l == src => {}
            Some(_) if leg.sdp == Some(src) => leg.latched = Some(src),
            Some(_) if known_ip != Some(src.ip()) => {
                leg.stats.dropped += 1;
                return false;
            }
            Some(_) => leg.latched = Some(src),
        }
        true
    }

    /// Where RTP for `side` goes (its latched address, else its SDP's).
    pub fn rtp_dest(&self, side: Side) -> Option<SocketAddr> {
        match side {
            Side::A => self.a.rtp_dest(),
            Side::B => self.b.rtp_dest(),
        }
    }

    /// Where RTCP for `side` goes.
    pub fn rtcp_dest(&self, side: Side) -> Option<SocketAddr> {
        match side {
            Side::A => self.a.rtcp_dest(),
            Side::B => self.b.rtcp_dest(),
        }
    }

    /// Counters of packets received from a leg.
    pub fn stats(&self, side: Side) -> RelayStats {
        match side {
            Side::A => self.a.stats,
            Side::B => self.b.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_packet_latches_the_nat_address_and_replies_go_there() {
        let mut r = Relay::new();
        r.set_remote(Side::A, Some(a("10.0.0.5:4000")));
        r.set_remote(Side::B, Some(a("127.0.0.1:6000")));
        // A is behind NAT: its packets come from the public address its INVITE came from.
        r.set_signalling(Side::A, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(
            r.on_packet(Side::A, a("198.51.100.7:31000"), false),
            Some(a("127.0.0.1:6000"))
        );
        assert_eq!(
            r.on_packet(Side::B, a("127.0.0.1:6000"), false),
            Some(a("198.51.100.7:31000"))
        );
        assert_eq!(
            r.on_packet(Side::B, a("127.0.0.1:6001"), true),
            Some(a("198.51.100.7:31001"))
        );
        // A stranger cannot hijack the latched stream.
        assert_eq!(r.on_packet(Side::A, a("203.0.113.9:999"), false), None);
        assert_eq!(r.stats(Side::A).dropped, 1);
        assert_eq!(r.stats(Side::A).rtp_out, 1);
    }

    #[test]
    fn new_sdp_unlatches_and_unknown_destination_drops() {
        let mut r = Relay::new();
        r.set_signalling(Side::A, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            r.on_packet(Side::A, a("127.0.0.1:1"), false),
            None,
            "B's address is unknown yet"
        );
        r.set_remote(Side::B, Some(a("127.0.0.1:7000")));
        r.on_packet(Side::B, a("127.0.0.1:7002"), false);
        r.set_remote(Side::B, Some(a("127.0.0.1:7004")));
        assert_eq!(
            r.on_packet(Side::A, a("127.0.0.1:1"), false),
            Some(a("127.0.0.1:7004"))
        );
    }

    #[test]
    fn a_stranger_is_dropped_even_before_the_leg_sends_and_rtcp_too() {
        let mut r = Relay::new();
        r.set_remote(Side::A, Some(a("192.0.2.10:4000")));
        r.set_signalling(Side::A, Some("192.0.2.20".parse().unwrap()));
        r.set_remote(Side::B, Some(a("127.0.0.1:6000")));
        // The attacker guessed the port and is first: nothing reaches B, nothing latches.
        assert_eq!(r.on_packet(Side::A, a("203.0.113.66:5000"), false), None);
        assert_eq!(r.on_packet(Side::A, a("203.0.113.66:5001"), true), None);
        assert_eq!(r.stats(Side::A).dropped, 2);
        // The caller's own packets (from its SDP's address) latch and flow...
        assert_eq!(
            r.on_packet(Side::A, a("192.0.2.10:4000"), false),
            Some(a("127.0.0.1:6000"))
        );
        // ...and B's replies go to the caller, not to the attacker.
        assert_eq!(
            r.on_packet(Side::B, a("127.0.0.1:6000"), false),
            Some(a("192.0.2.10:4000"))
        );
        // Once latched, the stream stays with its address.
        assert!(!r.accept(Side::A, a("192.0.2.20:7000"), false));
        // A caller behind NAT: its packets come from its signalling's address, and latch.
        let mut r = Relay::new();
        r.set_remote(Side::A, Some(a("10.0.0.5:4000")));
        r.set_signalling(Side::A, Some("192.0.2.20".parse().unwrap()));
        assert!(!r.accept(Side::A, a("203.0.113.66:5000"), false));
        assert!(r.accept(Side::A, a("192.0.2.20:7000"), false));
        assert_eq!(r.rtp_dest(Side::A), Some(a("192.0.2.20:7000")));
    }

    #[test]
    fn latching_any_takes_the_first_packet_from_anywhere() {
        let mut r = Relay::with_latching(Latching::Any);
        r.set_remote(Side::A, Some(a("10.0.0.5:4000")));
        r.set_remote(Side::B, Some(a("127.0.0.1:6000")));
        assert_eq!(
            r.on_packet(Side::A, a("203.0.113.66:5000"), false),
            Some(a("127.0.0.1:6000"))
        );
        assert_eq!(r.rtp_dest(Side::A), Some(a("203.0.113.66:5000")));
    }
}
