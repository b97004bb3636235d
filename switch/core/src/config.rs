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
    /// Context for calls arriving on the SIP listeners.
    pub context: String,
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            udp: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            tcp: None,
            context: "default".into(),
            timers: TimerConfig::default(),
            user_agent: format!("Switchboard/{}", env!("CARGO_PKG_VERSION")),
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
        }
    }
}
