//! # switchboard-trunk
//!
//! SIP trunks (gateways) to carriers, ACDs and PBXs: their configuration, their health as
//! learnt from OPTIONS pings (routing skips a gateway that is down), and caller-ID rules.
//! Outbound registration (REGISTER with digest authentication, refreshed before it expires)
//! and the credentials for challenged INVITEs live here too.
//! Sans-IO: the engine sends the pings and REGISTERs this module asks for and reports what
//! came back. [`Trunk`] is the module the switch registers: the `gateway` endpoint, the
//! INVITE filter (caller-ID, ANI pool, redaction) and the service (pings, registration).

pub mod ani;
pub mod digest;
mod module;
mod service;

pub use module::{FILTER_ORDER, Trunk};

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};
use switchboard_media::DtmfMethod;

use serde::Deserialize;
use switchboard_sip::transaction::Transport;

/// `[gateway.NAME]` in switchboard.toml.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// `host:port` of the gateway (a name is resolved once, at load).
    pub address: String,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub transport: Option<String>,
    /// Seconds between OPTIONS pings; absent or 0 = never ping (always considered up).
    #[serde(default)]
    pub ping: Option<u64>,
    /// Failed pings in a row before the gateway is marked down (default 1).
    #[serde(default)]
    pub ping_failures: Option<u32>,
    /// Caller-ID number presented on calls through this gateway (overrides the caller's).
    #[serde(default)]
    pub caller_id_number: Option<String>,
    /// Caller-ID display name presented on calls through this gateway.
    #[serde(default)]
    pub caller_id_name: Option<String>,
    /// Prefix added to the caller's number when no override is set (e.g. `+1`).
    #[serde(default)]
    pub caller_id_prefix: Option<String>,
    /// User name for digest authentication (REGISTER, challenged INVITEs).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for digest authentication.
    #[serde(default)]
    pub password: Option<String>,
    /// Register to the gateway (needs `username`).
    #[serde(default)]
    pub register: Option<bool>,
    /// Requested registration lifetime in seconds (default 600).
    #[serde(default)]
    pub register_expires: Option<u32>,
    /// Domain of the registered address-of-record (default: the gateway's host).
    #[serde(default)]
    pub domain: Option<String>,
    /// How digits travel on calls through this gateway: `rfc4733` (default), `info` or
    /// `inband`.
    #[serde(default)]
    pub dtmf: Option<String>,
    /// SDES-SRTP on calls through this gateway: `off` (default), `optional` (keys offered on
    /// RTP/AVP, taken if answered) or `required` (RTP/SAVP; an answer without a key ends the
    /// call).
    #[serde(default)]
    pub srtp: Option<String>,
    /// Headers never sent to this gateway, whatever the dialplan adds (e.g. a carrier gets
    /// no `X-Page-Url` and no `User-to-User`).
    #[serde(default)]
    pub redact_headers: Option<Vec<String>>,
    /// Caller numbers leased per call: numbers and ranges (`"15550100-15550199"`).
    #[serde(default)]
    pub ani_pool: Option<Vec<String>>,
    /// Seconds a released number rests before reuse (default 60).
    #[serde(default)]
    pub ani_cooldown: Option<u64>,
    /// When every number is taken: `fallback` (the usual caller ID, default), `reject`
    /// (the attempt fails with SWITCH_CONGESTION and the plan goes on) or `queue` (the call
    /// waits up to `ani_queue_secs` for a number, then fails as with `reject`).
    #[serde(default)]
    pub ani_when_empty: Option<String>,
    /// With `ani_when_empty = "queue"`: the longest a call waits for a number (default 20 s).
    #[serde(default)]
    pub ani_queue_secs: Option<u64>,
    /// More addresses this gateway sends from (CIDR blocks; its own address is always in):
    /// requests from them are trusted, never limited, and calls land in `context`.
    #[serde(default)]
    pub acl: Option<Vec<String>>,
    /// With `transport = "tls"`: a PEM file of the CA certificates the gateway's certificate
    /// must chain to (default: the public web roots), relative to conf/.
    #[serde(default)]
    pub tls_ca: Option<String>,
    /// The name its certificate must carry (default: the host of `address`).
    #[serde(default)]
    pub tls_name: Option<String>,
    /// A client certificate chain (PEM) to present, for gateways that ask for one.
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// Its private key (PEM).
    #[serde(default)]
    pub tls_key: Option<String>,
    /// Dialplan context of calls from this gateway (default: `[sip] context`).
    #[serde(default)]
    pub context: Option<String>,
}

/// Why a gateway configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The address does not resolve.
    #[error("gateway {0}: address {1:?} does not resolve to host:port")]
    Address(String, String),
    /// The transport is unknown.
    #[error("gateway {0}: transport {1:?} is not one of udp, tcp, tls")]
    Transport(String, String),
    /// Registration asked for without credentials.
    #[error("gateway {0}: register = true needs username and password")]
    Credentials(String),
    /// The ANI pool is wrong.
    #[error("gateway {0}: ani_pool: {1}")]
    AniPool(String, String),
    /// The DTMF form is unknown.
    #[error("gateway {0}: dtmf {1:?} is not one of rfc4733, info, inband")]
    Dtmf(String, String),
    /// The SRTP setting is unknown.
    #[error("gateway {0}: srtp {1:?} is not one of off, optional, required")]
    Srtp(String, String),
    /// An `acl` entry is not an address block.
    #[error("gateway {0}: acl: {1}")]
    Acl(String, String),
}

/// A configured gateway with its live state.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Name used in the dialplan (`gateway/NAME/NUMBER`).
    pub name: String,
    /// Where to send.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// The configuration it was built from.
    pub config: GatewayConfig,
    up: bool,
    /// Why it is down, in words for ops (`ctl gateways`, the log).
    down_reason: Option<String>,
    failures: u32,
    next_ping: Option<Instant>,
    ping_in_flight: bool,
    /// Outbound registration state (when `register = true`).
    pub registration: Option<Registration>,
    /// How digits travel on its calls (None: the switch's default).
    pub dtmf: Option<DtmfMethod>,
    /// SDES-SRTP on its calls.
    pub srtp: switchboard_media::srtp::Policy,
    /// Caller numbers leased per call.
    pub ani: Option<ani::AniPool>,
    /// The sources that are this gateway: its address, then `acl`.
    pub acl: Vec<switchboard_core::Cidr>,
}

/// Outbound registration of one gateway (RFC 3261 §10.2: one Call-ID, CSeq increasing).
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// Registered until (None: not registered).
    pub until: Option<Instant>,
    /// Status of the last final response.
    pub last_status: Option<u16>,
    next_at: Option<Instant>,
    in_flight: bool,
    /// Last CSeq used.
    pub cseq: u32,
    /// Call-ID, fixed for the gateway's life (set by the engine on first use).
    pub call_id: Option<String>,
    /// From tag, fixed likewise.
    pub tag: Option<String>,
}

impl Gateway {
    /// Checks and resolves a gateway's configuration.
    pub fn new(name: &str, config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let addr = config
            .address
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| GatewayError::Address(name.to_owned(), config.address.clone()))?;
        let t = config.transport.as_deref().unwrap_or("udp");
        let transport = match Transport::from_token(t) {
            Some(t @ (Transport::Udp | Transport::Tcp | Transport::Tls)) => t,
            _ => return Err(GatewayError::Transport(name.to_owned(), t.to_owned())),
        };
        let registration = if config.register.unwrap_or(false) {
            if config.username.is_none() || config.password.is_none() {
                return Err(GatewayError::Credentials(name.to_owned()));
            }
            Some(Registration::default())
        } else {
            None
        };
        let dtmf = match config.dtmf.as_deref() {
            None => None,
            Some(d) => Some(
                DtmfMethod::parse(d)
                    .ok_or_else(|| GatewayError::Dtmf(name.to_owned(), d.to_owned()))?,
            ),
        };
        let srtp = match config.srtp.as_deref() {
            None => switchboard_media::srtp::Policy::Off,
            Some(p) => switchboard_media::srtp::Policy::parse(p)
                .ok_or_else(|| GatewayError::Srtp(name.to_owned(), p.to_owned()))?,
        };
        let ani = match &config.ani_pool {
            None => None,
            Some(specs) => {
                let numbers =
                    ani::expand(specs).map_err(|e| GatewayError::AniPool(name.to_owned(), e))?;
                let when_empty = match config.ani_when_empty.as_deref() {
                    None | Some("fallback") => ani::WhenEmpty::Fallback,
                    Some("reject") => ani::WhenEmpty::Reject,
                    Some("queue") => ani::WhenEmpty::Queue(Duration::from_secs(
                        config.ani_queue_secs.unwrap_or(20).clamp(1, 600),
                    )),
                    Some(other) => {
                        return Err(GatewayError::AniPool(
                            name.to_owned(),
                            format!("ani_when_empty {other:?} is not fallback, reject or queue"),
                        ));
                    }
                };
                let cooldown = Duration::from_secs(config.ani_cooldown.unwrap_or(60));
                Some(ani::AniPool::new(numbers, cooldown, when_empty))
            }
        };
        let mut acl = vec![switchboard_core::Cidr::host(addr.ip())];
        for entry in config.acl.iter().flatten() {
            acl.push(
                switchboard_core::Cidr::parse(entry)
                    .map_err(|e| GatewayError::Acl(name.to_owned(), e))?,
            );
        }
        Ok(Gateway {
            acl,
            ani,
            dtmf,
            srtp,
            name: name.to_owned(),
            addr,
            transport,
            config,
            up: true,
            down_reason: None,
            failures: 0,
            next_ping: None,
            ping_in_flight: false,
            registration,
        })
    }

    /// Whether routing may use it.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Why it is down (None while it is up).
    pub fn down_reason(&self) -> Option<&str> {
        self.down_reason.as_deref().filter(|_| !self.up)
    }

    fn ping_interval(&self) -> Option<Duration> {
        self.config.ping.filter(|s| *s > 0).map(Duration::from_secs)
    }

    /// Credentials for digest challenges, when configured.
    pub fn credentials(&self) -> Option<digest::Credentials<'_>> {
        Some(digest::Credentials {
            username: self.config.username.as_deref()?,
            password: self.config.password.as_deref()?,
        })
    }

    /// True while a registration is in force.
    pub fn is_registered(&self, now: Instant) -> bool {
        self.registration
            .as_ref()
            .and_then(|r| r.until)
            .is_some_and(|u| u > now)
    }

    /// The caller ID (number, name) to present, from the caller's.
    pub fn caller_id(&self, number: &str, name: &str) -> (String, String) {
        let number = match (&self.config.caller_id_number, &self.config.caller_id_prefix) {
            (Some(n), _) => n.clone(),
            (None, Some(p)) if !number.starts_with(p.as_str()) => format!("{p}{number}"),
            _ => number.to_owned(),
        };
        let name = self
            .config
            .caller_id_name
            .clone()
            .unwrap_or_else(|| name.to_owned());
        (number, name)
    }
}

/// All gateways, by name.
#[derive(Debug, Clone, Default)]
pub struct Gateways {
    map: BTreeMap<String, Gateway>,
}

impl Gateways {
    /// Builds the set, collecting every error.
    pub fn new(configs: &BTreeMap<String, GatewayConfig>) -> Result<Gateways, Vec<GatewayError>> {
        let mut map = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, cfg) in configs {
            match Gateway::new(name, cfg.clone()) {
                Ok(g) => {
                    map.insert(name.clone(), g);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Gateways { map })
        } else {
            Err(errors)
        }
    }

    /// A gateway by name.
    pub fn get(&self, name: &str) -> Option<&Gateway> {
        self.map.get(name)
    }

    /// All gateways.
    pub fn iter(&self) -> impl Iterator<Item = &Gateway> {
        self.map.values()
    }

    /// Names, for the dialplan compiler.
    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Takes over the live state of gateways that survive a reload unchanged in address.
    pub fn carry_state_from(&mut self, old: &Gateways) {
        for (name, g) in self.map.iter_mut() {
            // Leases belong to calls, wherever the gateway now points.
            if let (Some(pool), Some(Some(o))) =
                (g.ani.as_mut(), old.map.get(name).map(|o| o.ani.as_ref()))
            {
                pool.carry_from(o);
            }
            if let Some(o) = old
                .map
                .get(name)
                .filter(|o| o.addr == g.addr && o.transport == g.transport)
            {
                g.up = o.up;
                g.failures = o.failures;
                g.next_ping = o.next_ping;
                if g.registration.is_some() && g.config.username == o.config.username {
                    g.registration = o.registration.clone();
                }
            }
        }
    }

    /// Gateways whose ping is due now; each is marked in flight until its result.
    pub fn due_pings(&mut self, now: Instant) -> Vec<(String, SocketAddr, Transport)> {
        let mut due = Vec::new();
        for g in self.map.values_mut() {
            let Some(every) = g.ping_interval() else {
                continue;
            };
            let next = *g.next_ping.get_or_insert(now);
            if !g.ping_in_flight && next <= now {
                g.ping_in_flight = true;
                g.next_ping = Some(now + every);
                due.push((g.name.clone(), g.addr, g.transport));
            }
        }
        due
    }

    /// A ping's outcome: any response but 408/503 (or a timeout) proves the gateway is alive.
    /// Returns `Some(new state)` when the up/down state changed.
    pub fn ping_result(&mut self, name: &str, status: Option<u16>) -> Option<bool> {
        let g = self.map.get_mut(name)?;
        g.ping_in_flight = false;
        let alive = status.is_some_and(|s| s != 408 && s != 503);
        let before = g.up;
        if alive {
            g.failures = 0;
            g.up = true;
            g.down_reason = None;
        } else {
            g.failures += 1;
            let max = g.config.ping_failures.unwrap_or(1).max(1);
            if g.failures >= max {
                g.up = false;
                let what = match status {
                    Some(s) => format!("answered {s}"),
                    None => {
                        "unanswered (a far end that does not answer OPTIONS, or is gone)".into()
                    }
                };
                g.down_reason = Some(format!(
                    "{} OPTIONS ping(s) in a row {what} (ping_failures = {max})",
                    g.failures
                ));
            }
        }
        (g.up != before).then_some(g.up)
    }

    /// Marks a gateway up or down by hand (ops).
    pub fn set_up(&mut self, name: &str, up: bool) -> bool {
        match self.map.get_mut(name) {
            Some(g) => {
                g.up = up;
                g.failures = 0;
                g.down_reason = (!up).then(|| "marked down by ops".to_owned());
                true
            }
            None => false,
        }
    }

    /// When the next ping or registration is due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let pings = self
            .map
            .values()
            .filter(|g| g.ping_interval().is_some() && !g.ping_in_flight)
            .filter_map(|g| g.next_ping);
        let regs = self
            .map
            .values()
            .filter_map(|g| g.registration.as_ref())
            .filter(|r| !r.in_flight)
            .filter_map(|r| r.next_at);
        pings.chain(regs).min()
    }

    /// Gateways whose REGISTER is due now (first registration, refresh or retry); each is
    /// marked in flight until [`Gateways::register_result`].
    pub fn due_registrations(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for g in self.map.values_mut() {
            let Some(r) = g.registration.as_mut() else {
                continue;
            };
            let next = *r.next_at.get_or_insert(now);
            if !r.in_flight && next <= now {
                r.in_flight = true;
                due.push(g.name.clone());
            }
        }
        due
    }

    /// A gateway by name, for building its REGISTER.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Gateway> {
        self.map.get_mut(name)
    }

    /// The outcome of a registration: `Ok(granted seconds)` or `Err(status)` (None: timeout).
    /// Refreshes at 80 % of the granted time; retries a failure after `retry`.
    pub fn register_result(
        &mut self,
        name: &str,
        now: Instant,
        outcome: Result<u32, Option<u16>>,
        retry: Duration,
    ) {
        let Some(r) = self.map.get_mut(name).and_then(|g| g.registration.as_mut()) else {
            return;
        };
        r.in_flight = false;
        match outcome {
            Ok(secs) => {
                r.last_status = Some(200);
                r.until = Some(now + Duration::from_secs(u64::from(secs)));
                r.next_at = Some(now + Duration::from_millis(u64::from(secs.max(2)) * 800));
            }
            Err(status) => {
                r.last_status = status;
                r.until = None;
                r.next_at = Some(now + retry);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary starting instant
mod tests {
    use super::*;

    fn cfg(ping: Option<u64>) -> GatewayConfig {
        GatewayConfig {
            address: "127.0.0.1:5080".into(),
            ping,
            ping_failures: Some(2),
            caller_id_name: Some("Shop".into()),
            caller_id_prefix: Some("+1".into()),
            ..GatewayConfig::default()
        }
    }

    #[test]
    fn health_follows_ping_results_with_a_failure_threshold() {
        let mut gws = Gateways::new(&BTreeMap::from([("acd".to_owned(), cfg(Some(10)))])).unwrap();
        let t0 = Instant::now();
        assert_eq!(gws.due_pings(t0).len(), 1);
        assert!(gws.due_pings(t0).is_empty(), "one ping in flight at a time");
        assert_eq!(
            gws.ping_result("acd", None),
            None,
            "one failure is below the threshold"
        );
        assert_eq!(gws.next_wakeup(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(gws.due_pings(t0 + Duration::from_secs(10)).len(), 1);
        assert_eq!(gws.ping_result("acd", Some(503)), Some(false));
        assert!(!gws.get("acd").unwrap().is_up());
        gws.due_pings(t0 + Duration::from_secs(20));
        assert_eq!(
            gws.ping_result("acd", Some(404)),
            Some(true),
            "any answer but 408/503 means alive"
        );
    }

    #[test]
    fn registration_refreshes_at_80_percent_and_retries_failures() {
        let mut c = cfg(None);
        c.register = Some(true);
        assert!(
            Gateways::new(&BTreeMap::from([("gw".to_owned(), c.clone())])).is_err(),
            "credentials are required"
        );
        c.username = Some("u".into());
        c.password = Some("p".into());
        let mut gws = Gateways::new(&BTreeMap::from([("gw".to_owned(), c)])).unwrap();
        let t0 = Instant::now();
        assert_eq!(gws.due_registrations(t0), vec!["gw".to_owned()]);
        assert!(gws.due_registrations(t0).is_empty());
        gws.register_result("gw", t0, Ok(100), Duration::from_secs(60));
        assert!(
            gws.get("gw")
                .unwrap()
                .is_registered(t0 + Duration::from_secs(99))
        );
        assert_eq!(gws.next_wakeup(), Some(t0 + Duration::from_secs(80)));
        assert_eq!(gws.due_registrations(t0 + Duration::from_secs(80)).len(), 1);
        gws.register_result(
            "gw",
            t0 + Duration::from_secs(80),
            Err(Some(403)),
            Duration::from_secs(60),
        );
        assert!(
            !gws.get("gw")
                .unwrap()
                .is_registered(t0 + Duration::from_secs(81))
        );
        assert_eq!(gws.next_wakeup(), Some(t0 + Duration::from_secs(140)));
    }

    #[test]
    fn caller_id_rules_and_bad_config() {
        let gws = Gateways::new(&BTreeMap::from([("acd".to_owned(), cfg(None))])).unwrap();
        let g = gws.get("acd").unwrap();
        assert_eq!(
            g.caller_id("5551234", "Alice"),
            ("+15551234".to_owned(), "Shop".to_owned())
        );
        let mut bad = cfg(None);
        bad.transport = Some("sctp".into());
        bad.address = "nowhere".into();
        let errs = Gateways::new(&BTreeMap::from([("x".to_owned(), bad)])).unwrap_err();
        assert!(errs[0].to_string().contains("does not resolve"));
    }
}
