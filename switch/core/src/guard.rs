//! Overload control: who a source is, how much of the switch it may use, and when it is
//! banned.
//!
//! Sources ops trust (`[sip] trusted`, a gateway's addresses, in-process legs) are never
//! limited per source; everyone else is, the way Kamailio's `pike` does it: a token bucket
//! per address (`source_rate` requests a second, bursts of `source_burst`), a temporary ban
//! for a source that keeps flooding past it, that announces itself as a scanner
//! (`friendly-scanner`, `sipvicious`...) or that collects failure answers (404, 401, 403...)
//! faster than a caller ever would. A banned source gets nothing back: its datagrams are
//! dropped before they are parsed. Global ceilings (transactions, calls being set up) apply
//! to every source and are answered `503` with `Retry-After` (RFC 3261 §21.5.4).
//!
//! The table of sources is bounded (`max_sources`): past it, new sources share one bucket,
//! so a flood from spoofed addresses cannot grow it either.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::Cidr;
use crate::engine::HashMap;

/// The limits (`[limits]` of switchboard.toml).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Server transactions at once; a request that would open one more is answered 503.
    pub max_transactions: usize,
    /// Of those, what requests from untrusted sources may hold.
    pub max_untrusted_transactions: usize,
    /// Calls being set up (not yet answered and ACKed) at once; more INVITEs get 503.
    pub max_pending_calls: usize,
    /// The `Retry-After` of those 503s (s).
    pub retry_after: u32,
    /// Requests per second one untrusted source may send, sustained.
    pub source_rate: u32,
    /// ... and in a burst.
    pub source_burst: u32,
    /// Failure answers (401, 403, 404, 407, 484...) to one untrusted source per minute before
    /// it is banned (0: never).
    pub ban_failures: u32,
    /// How long a ban lasts.
    pub ban_time: Duration,
    /// User-Agent substrings (lower case) that get a source banned at once.
    pub scanners: Vec<String>,
    /// Untrusted sources tracked at once.
    pub max_sources: usize,
    /// Calls (being set up or up) from untrusted sources at once: what the public context
    /// can hold, so strangers cannot take the switch's ceilings from trusted callers.
    pub max_untrusted_calls: usize,
    /// ... and from one untrusted source.
    pub max_calls_per_source: usize,
}

/// User-Agents of SIP scanners and war-dialers, as fail2ban and Kamailio users list them.
pub const SCANNERS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sundayddr",
    "iwar",
    "sivus",
    "vaxsipuseragent",
    "vaxipuseragent",
    "smap",
    "siparmyknife",
    "pplsip",
];

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_transactions: 200_000,
            max_untrusted_transactions: 20_000,
            max_pending_calls: 2_000,
            retry_after: 10,
            source_rate: 20,
            source_burst: 60,
            ban_failures: 20,
            ban_time: Duration::from_secs(600),
            scanners: SCANNERS.iter().map(|s| (*s).to_owned()).collect(),
            max_sources: 65_536,
            max_untrusted_calls: 1_000,
            max_calls_per_source: 10,
        }
    }
}

/// A source a module vouches for (a gateway's address, its `acl`): trusted, and the context
/// its calls land in (None: the listeners' context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRule {
    /// Its addresses.
    pub net: Cidr,
    /// The context of its calls.
    pub context: Option<String>,
    /// Who it is (`gateway demo`), for the log.
    pub name: String,
}

/// Why a request was dropped unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// From a banned source.
    Banned,
    /// Over its source's rate.
    Rate,
    /// A scanner's User-Agent (the source is banned from now on).
    Scanner,
}

impl DropReason {
    /// Every reason, in metric order.
    pub const ALL: [DropReason; 3] = [DropReason::Banned, DropReason::Rate, DropReason::Scanner];

    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Banned => "banned",
            DropReason::Rate => "rate",
            DropReason::Scanner => "scanner",
        }
    }
}

/// Why a source was banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// Its User-Agent is a scanner's.
    Scanner,
    /// It kept sending past its rate.
    Flood,
    /// It collected too many failure answers.
    Failures,
}

impl BanReason {
    /// Every reason, in metric order (declaration order: `r as usize` is its index).
    pub const ALL: [BanReason; 3] = [BanReason::Scanner, BanReason::Flood, BanReason::Failures];

    /// Its metric label and its word in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            BanReason::Scanner => "scanner",
            BanReason::Flood => "flood",
            BanReason::Failures => "failures",
        }
    }
}

/// A global ceiling a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    /// `max_transactions` or `max_untrusted_transactions`.
    Transactions,
    /// `max_pending_calls`.
    PendingCalls,
    /// `[sip] max_calls`.
    Calls,
    /// `max_untrusted_calls` or `max_calls_per_source`.
    UntrustedCalls,
}

impl Ceiling {
    /// Every ceiling, in metric order (declaration order: `c as usize` is its index).
    pub const ALL: [Ceiling; 4] = [
        Ceiling::Transactions,
        Ceiling::PendingCalls,
        Ceiling::Calls,
        Ceiling::UntrustedCalls,
    ];

    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Ceiling::Transactions => "transactions",
            Ceiling::PendingCalls => "pending_calls",
            Ceiling::Calls => "calls",
            Ceiling::UntrustedCalls => "untrusted_calls",
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct GuardStats {
    /// Requests dropped, by [`DropReason`] (in `ALL` order).
    pub dropped: [u64; 3],
    /// Bans, by [`BanReason`].
    pub bans: [u64; 3],
    /// 503s sent at a ceiling, by [`Ceiling`].
    pub refused: [u64; 4],
}

/// A banned source, for ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// The address.
    pub ip: IpAddr,
    /// Why.
    pub reason: BanReason,
    /// Until when.
    pub until: Instant,
}

#[derive(Debug, Clone)]
struct Source {
    tokens: f32,
    refilled: Instant,
    fails: u32,
    fails_since: Instant,
    /// Requests dropped over the rate since `drops_since` (a 10 s window).
    drops: u32,
    drops_since: Instant,
    ban: Option<(Instant, BanReason)>,
}

impl Source {
    fn new(now: Instant, burst: u32) -> Source {
        Source {
            tokens: burst as f32,
            refilled: now,
            fails: 0,
            fails_since: now,
            drops: 0,
            drops_since: now,
            ban: None,
        }
    }
}

/// The window over which drops over the rate are counted towards a flood ban.
const DROP_WINDOW: Duration = Duration::from_secs(10);

/// The key a source is tracked by: its address; for IPv6, its /64 (one subscriber's
/// prefix: a host that rotates addresses within it is still one source).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// The per-source state.
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    sources: HashMap<IpAddr, Source>,
    /// The bucket sources share once the table is full.
    overflow: Option<Source>,
    /// Calls from untrusted sources in progress, by source key, and in all.
    calls: HashMap<IpAddr, u32>,
    untrusted_calls: usize,
    bans: usize,
    /// The table was found full of bans: no ban takes a slot until then (no scan per
    /// packet of a flood).
    full_until: Option<Instant>,
    /// Counters.
    pub stats: GuardStats,
}

/// What a failure answer to an untrusted source did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted.
    Counted,
    /// The source is banned from now on.
    Banned,
}

impl Guard {
    /// A guard with these limits.
    pub fn new(limits: Limits) -> Guard {
        Guard {
            limits,
            sources: HashMap::default(),
            overflow: None,
            calls: HashMap::default(),
            untrusted_calls: 0,
            bans: 0,
            full_until: None,
            stats: GuardStats::default(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// New limits (a reload); sources and bans are kept.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Is `ip` banned? The cheap check before a datagram is parsed.
    pub fn banned(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.bans == 0 {
            return false;
        }
        let ip = source_key(ip);
        let Some(s) = self.sources.get_mut(&ip) else {
            return false;
        };
        match s.ban {
            Some((until, _)) if until > now => {
                self.stats.dropped[0] += 1;
                true
            }
            Some(_) => {
                // The ban is over: a clean slate.
                *s = Source::new(now, self.limits.source_burst);
                self.bans = self.bans.saturating_sub(1);
                false
            }
            None => false,
        }
    }

    /// A request from an untrusted source: may it go on?
    pub fn admit(
        &mut self,
        now: Instant,
        ip: IpAddr,
        user_agent: Option<&str>,
    ) -> Result<(), DropReason> {
        let ip = source_key(ip);
        if self.banned(now, ip) {
            return Err(DropReason::Banned);
        }
        if let Some(ua) = user_agent
            && !self.limits.scanners.is_empty()
        {
            let ua = ua.to_ascii_lowercase();
            if self.limits.scanners.iter().any(|s| ua.contains(s.as_str())) {
                self.ban(now, ip, BanReason::Scanner);
                self.stats.dropped[2] += 1;
                return Err(DropReason::Scanner);
            }
        }
        let (rate, burst) = (
            self.limits.source_rate as f32,
            self.limits.source_burst.max(1) as f32,
        );
        let shared =
            self.sources.len() >= self.limits.max_sources && !self.sources.contains_key(&ip);
        let s = self.source(now, ip);
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f32();
        s.refilled = now;
        s.tokens = (s.tokens + elapsed * rate).min(burst);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return Ok(());
        }
        // Past the rate: dropped (a drop costs no token: a source a little over its rate
        // still gets its rate through). One that keeps sending at twice its rate for the
        // window (or drops a whole window's worth at once) is a flood, not a busy phone.
        if now.saturating_duration_since(s.drops_since) > DROP_WINDOW {
            s.drops = 0;
            s.drops_since = now;
        }
        s.drops += 1;
        let flood = s.drops as f32 >= (rate * DROP_WINDOW.as_secs_f32()).max(burst);
        self.stats.dropped[1] += 1;
        // The shared bucket of sources past the table floods for many: none is banned for it.
        if flood && !shared {
            self.ban(now, ip, BanReason::Flood);
        }
        Err(DropReason::Rate)
    }

    /// May an untrusted source start one more call?
    pub fn call_allowed(&self, ip: IpAddr) -> bool {
        let mine = self.calls.get(&source_key(ip)).copied().unwrap_or(0);
        self.untrusted_calls < self.limits.max_untrusted_calls
            && (mine as usize) < self.limits.max_calls_per_source
    }

    /// An untrusted source's call began (give it back with [`Guard::call_ended`]).
    pub fn call_started(&mut self, ip: IpAddr) {
        self.untrusted_calls += 1;
        *self.calls.entry(source_key(ip)).or_insert(0) += 1;
    }

    /// A call [`Guard::call_started`] counted is over.
    pub fn call_ended(&mut self, ip: IpAddr) {
        let key = source_key(ip);
        self.untrusted_calls = self.untrusted_calls.saturating_sub(1);
        if let Some(n) = self.calls.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.calls.remove(&key);
            }
        }
    }

    /// The calls in progress, counted again (a path that forgot one cannot skew them).
    pub fn recount_calls(&mut self, sources: impl Iterator<Item = IpAddr>) {
        self.calls.clear();
        self.untrusted_calls = 0;
        for ip in sources {
            self.call_started(ip);
        }
        if self.calls.capacity() > 64 && self.calls.capacity() > self.calls.len() * 4 {
            self.calls.shrink_to_fit();
        }
    }

    /// Calls from untrusted sources in progress.
    pub fn untrusted_calls(&self) -> usize {
        self.untrusted_calls
    }

    /// A failure answer was sent to an untrusted source.
    pub fn failure(&mut self, now: Instant, ip: IpAddr) -> Failure {
        let max = self.limits.ban_failures;
        let ip = source_key(ip);
        // The shared bucket of sources past the table collects for many: none is banned.
        let shared =
            self.sources.len() >= self.limits.max_sources && !self.sources.contains_key(&ip);
        if max == 0 || shared {
            return Failure::Counted;
        }
        let s = self.source(now, ip);
        if now.saturating_duration_since(s.fails_since) > Duration::from_secs(60) {
            s.fails = 0;
            s.fails_since = now;
        }
        s.fails += 1;
        if s.fails >= max && s.ban.is_none() {
            self.ban(now, ip, BanReason::Failures);
            return Failure::Banned;
        }
        Failure::Counted
    }

    /// The bans in force.
    pub fn bans(&self, now: Instant) -> Vec<Ban> {
        let mut v: Vec<Ban> = self
            .sources
            .iter()
            .filter_map(|(ip, s)| match s.ban {
                Some((until, reason)) if until > now => Some(Ban {
                    ip: *ip,
                    reason,
                    until,
                }),
                _ => None,
            })
            .collect();
        v.sort_by_key(|b| b.ip);
        v
    }

    /// Lifts a ban; `false` when `ip` was not banned.
    pub fn unban(&mut self, now: Instant, ip: IpAddr) -> bool {
        let ip = source_key(ip);
        match self.sources.get(&ip) {
            Some(s) if s.ban.is_some_and(|(until, _)| until > now) => {
                self.sources.remove(&ip);
                self.bans = self.bans.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// Forgets sources with nothing to remember (a full bucket, no recent failure, no ban).
    pub fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (
            self.limits.source_rate as f32,
            self.limits.source_burst as f32,
        );
        let mut bans = 0;
        self.sources.retain(|_, s| {
            if let Some((until, _)) = s.ban {
                if until > now {
                    bans += 1;
                    return true;
                }
                return false;
            }
            let full =
                s.tokens + now.saturating_duration_since(s.refilled).as_secs_f32() * rate >= burst;
            let fails_over = now.saturating_duration_since(s.fails_since) > Duration::from_secs(60);
            !(full && (s.fails == 0 || fails_over))
        });
        self.bans = bans;
        if self.sources.capacity() > 64 && self.sources.capacity() > self.sources.len() * 4 {
            self.sources.shrink_to_fit();
        }
    }

    /// Untrusted sources tracked now.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Sources banned now (bans that ran out are counted until they are next seen or swept).
    pub fn banned_sources(&self) -> usize {
        self.bans
    }

    fn source(&mut self, now: Instant, ip: IpAddr) -> &mut Source {
        let burst = self.limits.source_burst;
        if self.sources.len() >= self.limits.max_sources && !self.sources.contains_key(&ip) {
            return self.overflow.get_or_insert_with(|| Source::new(now, burst));
        }
        self.sources
            .entry(ip)
            .or_insert_with(|| Source::new(now, burst))
    }

    fn ban(&mut self, now: Instant, ip: IpAddr, reason: BanReason) {
        let until = now + self.limits.ban_time;
        let burst = self.limits.source_burst;
        let full = self.sources.len() >= self.limits.max_sources && !self.sources.contains_key(&ip);
        if full {
            if self.full_until.is_some_and(|t| t > now) {
                return;
            }
            // A ban is worth a slot: it is what stops the flood.
            self.sweep(now);
            if self.sources.len() >= self.limits.max_sources {
                // Still full: a source that is only counted makes room; a table full of
                // bans takes no more (this one is dropped without a ban of its own).
                let unbanned = self
                    .sources
                    .iter()
                    .find(|(_, s)| s.ban.is_none_or(|(u, _)| u <= now))
                    .map(|(ip, _)| *ip);
                match unbanned {
                    Some(other) => {
                        self.sources.remove(&other);
                    }
                    None => {
                        // Full of bans: no scan again for a second.
                        self.full_until = Some(now + Duration::from_secs(1));
                        return;
                    }
                }
            }
        }
        let s = self
            .sources
            .entry(ip)
            .or_insert_with(|| Source::new(now, burst));
        if s.ban.is_some_and(|(u, _)| u > now) {
            return;
        }
        s.ban = Some((until, reason));
        self.bans += 1;
        self.stats.bans[reason as usize] += 1;
        tracing::warn!(
            source = %ip,
            reason = reason.as_str(),
            secs = self.limits.ban_time.as_secs(),
            "banned a source: its requests are dropped unanswered"
        );
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary starting instant
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_within_its_rate_always_passes_and_a_flood_is_dropped_then_banned() {
        let t0 = Instant::now();
        let mut g = Guard::new(Limits::default());
        let caller = ip("198.51.100.7");
        // 10 requests a second for a minute: under the 20/s allowance.
        for i in 0..600u64 {
            let now = t0 + Duration::from_millis(i * 100);
            assert_eq!(g.admit(now, caller, Some("Linphone/5.1")), Ok(()));
        }
        // 1,000 at once from another: the burst passes, the rest are dropped, then banned.
        let flood = ip("203.0.113.66");
        let now = t0 + Duration::from_secs(61);
        let verdicts: Vec<_> = (0..1000).map(|_| g.admit(now, flood, None)).collect();
        let passed = verdicts.iter().filter(|v| v.is_ok()).count();
        assert_eq!(passed, 60, "the burst passes");
        assert!(verdicts.contains(&Err(DropReason::Rate)));
        assert_eq!(verdicts.last(), Some(&Err(DropReason::Banned)));
        assert_eq!(g.bans(now).len(), 1);
        assert_eq!(g.bans(now)[0].reason, BanReason::Flood);
        // The caller is unaffected.
        assert_eq!(g.admit(now, caller, None), Ok(()));
        // The ban runs out.
        let later = now + Duration::from_secs(601);
        assert_eq!(g.admit(later, flood, None), Ok(()));
        assert!(g.bans(later).is_empty());
    }

    #[test]
    fn a_scanner_is_banned_at_its_first_request() {
        let now = Instant::now();
        let mut g = Guard::new(Limits::default());
        let s = ip("203.0.113.9");
        assert_eq!(
            g.admit(now, s, Some("friendly-scanner")),
            Err(DropReason::Scanner)
        );
        assert!(g.banned(now, s));
        assert_eq!(g.admit(now, s, Some("Linphone")), Err(DropReason::Banned));
        assert_eq!(g.stats.bans, [1, 0, 0]);
        assert!(g.unban(now, s));
        assert_eq!(g.admit(now, s, Some("Linphone")), Ok(()));
    }

    #[test]
    fn failures_ban_a_source_within_a_minute_but_not_spread_over_hours() {
        let t0 = Instant::now();
        let mut g = Guard::new(Limits::default());
        let slow = ip("192.0.2.1");
        for i in 0..100u64 {
            assert_eq!(
                g.failure(t0 + Duration::from_secs(i * 70), slow),
                Failure::Counted
            );
        }
        let fast = ip("192.0.2.2");
        let out: Vec<_> = (0..20).map(|_| g.failure(t0, fast)).collect();
        assert_eq!(out.last(), Some(&Failure::Banned));
        assert_eq!(out.iter().filter(|f| **f == Failure::Banned).count(), 1);
        assert!(g.banned(t0, fast));
    }

    #[test]
    fn the_table_is_bounded_and_sweeping_forgets_quiet_sources() {
        let now = Instant::now();
        let limits = Limits {
            max_sources: 100,
            ..Limits::default()
        };
        let mut g = Guard::new(limits);
        for i in 0..10_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            let _ = g.admit(now, a, None);
        }
        assert_eq!(
            g.sources(),
            100,
            "new sources share one bucket past the table"
        );
        g.sweep(now + Duration::from_secs(10));
        assert_eq!(g.sources(), 0, "quiet sources are forgotten");
        // A ban still finds a slot in a full table.
        for i in 0..100u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0B00_0000 + i));
            let _ = g.failure(now, a);
        }
        let s = ip("203.0.113.1");
        let _ = g.admit(now, s, Some("sipvicious"));
        assert!(g.banned(now, s));
        assert_eq!(g.sources(), 100);
        // A table full of bans takes no more, and a flood from its overflow bans no one.
        for i in 0..200u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0C00_0000 + i));
            let _ = g.admit(now, a, Some("friendly-scanner"));
        }
        assert_eq!(g.sources(), 100);
        assert_eq!(g.banned_sources(), 100);
        for _ in 0..1000 {
            let _ = g.admit(now, ip("198.18.0.1"), None);
        }
        assert!(!g.banned(now, ip("198.18.0.1")));
        assert_eq!(g.sources(), 100);
    }

    #[test]
    fn a_source_a_little_over_its_rate_still_gets_its_rate_and_is_not_banned() {
        let t0 = Instant::now();
        let mut g = Guard::new(Limits::default());
        let office = ip("198.51.100.20");
        // 25 requests a second for two minutes against a 20/s rate.
        let mut passed = 0;
        for i in 0..3000u64 {
            let now = t0 + Duration::from_millis(i * 40);
            if g.admit(now, office, None).is_ok() {
                passed += 1;
            }
        }
        assert!(passed >= 2400 - 20 + 60, "its rate gets through: {passed}");
        assert!(g.bans(t0 + Duration::from_secs(120)).is_empty());
    }

    #[test]
    fn an_ipv6_prefix_is_one_source_and_overflow_sources_are_never_banned_for_failures() {
        let now = Instant::now();
        let mut g = Guard::new(Limits::default());
        // A host rotating its addresses within one /64 shares one bucket.
        let mut passed = 0;
        for i in 0..200u128 {
            let a = IpAddr::from(std::net::Ipv6Addr::from(
                (0x2001_0db8_0000_0001u128 << 64) | i,
            ));
            if g.admit(now, a, None).is_ok() {
                passed += 1;
            }
        }
        assert_eq!(passed, 60, "one burst for the whole /64");
        assert_eq!(g.sources(), 1);
        // A table of one: the others share the overflow bucket, and collect failures there
        // without anyone being banned for the lot.
        let mut g = Guard::new(Limits {
            max_sources: 1,
            ..Limits::default()
        });
        let _ = g.admit(now, ip("192.0.2.1"), None);
        for i in 0..100u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            assert_eq!(g.failure(now, a), Failure::Counted);
        }
        assert!(g.bans(now).is_empty());
    }

    #[test]
    fn untrusted_calls_are_capped_in_all_and_per_source() {
        let mut g = Guard::new(Limits {
            max_untrusted_calls: 12,
            max_calls_per_source: 10,
            ..Limits::default()
        });
        let (a, b) = (ip("203.0.113.1"), ip("203.0.113.2"));
        for _ in 0..10 {
            assert!(g.call_allowed(a));
            g.call_started(a);
        }
        assert!(!g.call_allowed(a), "10 from one source");
        assert!(g.call_allowed(b));
        g.call_started(b);
        g.call_started(b);
        assert!(!g.call_allowed(b), "12 in all");
        g.call_ended(a);
        assert!(g.call_allowed(b));
        g.recount_calls([a, b].into_iter());
        assert_eq!(g.untrusted_calls(), 2);
    }
}
