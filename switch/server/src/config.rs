//! Loading `conf/`: `switchboard.toml` (listeners, media, HTTP, gateways) and
//! `dialplan/*.toml`, compiled together. Every problem is reported as `file:line:col`.

use crate::conn::ConnLimits;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchboard_core::EngineConfig;
use switchboard_dialplan::{CompileEnv, Diagnostic, Diagnostics, Dialplan, Source, compile};
use switchboard_sip::transaction::TimerConfig;
use switchboard_trunk::{GatewayConfig, Gateways};
use switchboard_webrtc::MerchantConfig;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    sip: Sip,
    #[serde(default)]
    media: Media,
    #[serde(default)]
    http: Http,
    #[serde(default)]
    log: Log,
    #[serde(default)]
    shutdown: Shutdown,
    #[serde(default)]
    storage: StorageCfg,
    #[serde(default)]
    gateway: BTreeMap<String, Spanned<GatewayConfig>>,
    #[serde(default)]
    webrtc: WebrtcCfg,
    #[serde(default)]
    merchant: BTreeMap<String, Spanned<MerchantConfig>>,
    #[serde(default)]
    modules: ModulesCfg,
    #[serde(default)]
    agents: AgentsCfg,
    #[serde(default)]
    agent: BTreeMap<String, Spanned<ConfAgent>>,
    #[serde(default)]
    queue: BTreeMap<String, Spanned<QueueCfg>>,
    #[serde(default)]
    limits: LimitsCfg,
}

/// `[limits]`: overload control (docs/configuration.md).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsCfg {
    max_transactions: Option<usize>,
    max_untrusted_transactions: Option<usize>,
    max_pending_calls: Option<usize>,
    retry_after: Option<u32>,
    source_rate: Option<Spanned<u32>>,
    source_burst: Option<Spanned<u32>>,
    ban_failures: Option<u32>,
    ban_time: Option<u64>,
    scanner_user_agents: Option<Vec<String>>,
    max_sources: Option<usize>,
    max_untrusted_calls: Option<usize>,
    max_calls_per_source: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AgentsCfg {
    code_digits: Option<Spanned<usize>>,
    idle_timeout: Option<u64>,
    max_failures: Option<usize>,
    secure_cookie: Option<bool>,
}

/// `[agent.ID]`: an agent defined by ops in conf/ (like a FreeSWITCH directory user).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfAgent {
    name: Option<String>,
    #[serde(default)]
    role: Option<Spanned<String>>,
    #[serde(default)]
    merchants: Vec<String>,
    #[serde(default)]
    queues: Vec<String>,
    /// An argon2id PHC string (`switchboard agent hash`), never a password in clear.
    password: Spanned<String>,
}

/// `[queue.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueCfg {
    strategy: Option<Spanned<String>>,
    merchant: Option<Spanned<String>>,
}

/// The agent console's settings (`[agents]`, `[agent.*]`, `[queue.*]`).
#[derive(Debug, Clone)]
pub struct Agents {
    /// Digits of a channel code (2–6).
    pub code_digits: usize,
    /// A console session ends after this long without activity.
    pub idle_timeout: Duration,
    /// Failed logins per address or ID per 15 minutes before logins wait.
    pub max_failures: usize,
    /// Mark the session cookie `Secure` (behind a TLS proxy).
    pub secure_cookie: bool,
    /// Agents defined in conf/, with their password hashes.
    pub accounts: BTreeMap<String, (switchboard_agent::AgentInfo, String)>,
    /// Queues.
    pub queues: BTreeMap<String, switchboard_agent::Queue>,
}

/// The admin token the shipped conf has: refused off loopback.
pub const DEMO_TOKEN: &str = "change-me-demo-token";

/// The demo agent's password as the README gives it: refused off loopback.
pub const DEMO_PASSWORD: &str = "switchboard-demo";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ModulesCfg {
    load: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WebrtcCfg {
    enabled: Option<bool>,
    ip: Option<Spanned<String>>,
    reconnect_grace: Option<u64>,
    ip_calls_per_minute: Option<u32>,
    ip_max_calls: Option<usize>,
    listen: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

/// The browser leg's settings (`[webrtc]` and `[merchant.*]`).
#[derive(Debug, Clone)]
pub struct Web {
    /// The address of the ICE host candidate (browsers send media there); bound locally.
    pub ip: IpAddr,
    /// Where the widget's routes are served, apart from the admin API (None: on http.listen).
    pub listen: Option<SocketAddr>,
    /// How long a call outlives its dropped WebSocket, waiting for the widget to resume.
    pub reconnect_grace: Duration,
    /// New calls per minute from one address.
    pub ip_calls_per_minute: u32,
    /// Concurrent calls from one address.
    pub ip_max_calls: usize,
    /// Merchants by ID.
    pub merchants: BTreeMap<String, MerchantConfig>,
    /// TLS settings of the merchants' https webhooks (their roots, made at load).
    pub tls: BTreeMap<String, std::sync::Arc<rustls::ClientConfig>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Sip {
    udp: Option<Spanned<String>>,
    tcp: Option<Spanned<String>>,
    context: Option<String>,
    trusted: Option<Vec<Spanned<String>>>,
    public_context: Option<String>,
    transfer_context: Option<String>,
    user_agent: Option<String>,
    max_calls: Option<usize>,
    t1_ms: Option<u64>,
    t2_ms: Option<u64>,
    session_expires: Option<Spanned<u32>>,
    min_se: Option<Spanned<u32>>,
    t4_ms: Option<u64>,
    tcp_max_connections: Option<usize>,
    tcp_max_per_source: Option<usize>,
    tcp_message_timeout: Option<u64>,
    tcp_idle_timeout: Option<u64>,
    tls: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Media {
    ip: Option<Spanned<String>>,
    rtp_port_min: Option<u16>,
    rtp_port_max: Option<u16>,
    anchor: Option<bool>,
    codecs: Option<Vec<String>>,
    dtmf: Option<Spanned<String>>,
    inband_dtmf_delay_ms: Option<Spanned<u32>>,
    srtp_suites: Option<Spanned<Vec<String>>>,
    rtp_timeout: Option<u64>,
    sounds: Option<String>,
    opus_complexity: Option<u8>,
    rtp_latching: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Http {
    listen: Option<Spanned<String>>,
    token: Option<String>,
    metrics_token: Option<String>,
    metrics_open: Option<Vec<Spanned<String>>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    max_connections: Option<usize>,
    max_per_source: Option<usize>,
    header_timeout: Option<u64>,
    idle_timeout: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Log {
    level: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StorageCfg {
    path: Option<String>,
    keep_days: Option<u32>,
    keep_unanswered_days: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Shutdown {
    drain_secs: Option<u64>,
}

/// Everything loaded from `conf/`.
#[derive(Debug)]
pub struct Loaded {
    /// Engine settings.
    pub engine: EngineConfig,
    /// The modules to load (`[modules] load`), in order.
    pub modules: Vec<String>,
    /// Gateways.
    pub gateways: Gateways,
    /// The compiled dialplan.
    pub dialplan: Dialplan,
    /// Admin/metrics HTTP listen address (None: no HTTP).
    pub http: Option<SocketAddr>,
    /// Bearer token for `/api/v1`.
    pub token: Option<String>,
    /// Bearer token for `/metrics` from outside `metrics_open` (the admin token works too).
    pub metrics_token: Option<String>,
    /// Who may read `/metrics` without a token.
    pub metrics_open: Vec<switchboard_core::Cidr>,
    /// SIP over TCP's connection limits (`[sip] tcp_*`).
    pub sip_conn: ConnLimits,
    /// Certificates: SIP over TLS (`[sip] tls_cert`), the admin HTTP (`[http] tls_cert`),
    /// the widget's own listener (`[webrtc] tls_cert`).
    pub tls: [Option<crate::tls::TlsFiles>; 3],
    /// How to reach each `transport = "tls"` gateway (by address).
    pub tls_clients: std::collections::HashMap<SocketAddr, crate::tls::TlsClient>,
    /// The HTTP listeners' (`[http]`; the widget's own listener too).
    pub http_conn: ConnLimits,
    /// Log filter (e.g. `info`, `switchboard=debug`).
    pub log_level: String,
    /// How long SIGTERM waits for calls to end.
    pub drain: Duration,
    /// The files read, for messages.
    pub files: Vec<PathBuf>,
    /// Prompts from the sounds directory, by name.
    pub prompts: std::collections::HashMap<String, crate::media::Prompt>,
    /// Hang up a call whose RTP stopped this long (None: never).
    pub rtp_timeout: Option<Duration>,
    /// Opus encoder complexity, 0–10.
    pub opus_complexity: u8,
    /// Who may latch a leg's media (`[media] rtp_latching`).
    pub rtp_latching: switchboard_media::Latching,
    /// The SQLite database of call records.
    pub storage: PathBuf,
    /// How long its records are kept.
    pub retention: crate::storage::Retention,
    /// The browser leg (None: `[webrtc] enabled = false`).
    pub web: Option<Web>,
    /// The agent console.
    pub agents: Agents,
    /// What is allowed but probably a mistake (`switchboard check` prints it, start-up logs it).
    pub warnings: Vec<String>,
}

/// A table's `tls_cert` and `tls_key`: both or neither, each a PEM file that loads.
#[allow(clippy::too_many_arguments)]
fn tls_pair(
    f: &str,
    t: &str,
    dir: &Path,
    table: &str,
    cert: &Option<Spanned<String>>,
    key: &Option<Spanned<String>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<crate::tls::TlsFiles> {
    match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let files = crate::tls::files(dir, c.get_ref(), k.get_ref());
            match crate::tls::server_config(&files, &[]) {
                Ok(_) => Some(files),
                Err(e) => {
                    diags.push(diag(
                        f,
                        t,
                        Some(c.span()),
                        format!("{table}.tls_cert: {e}"),
                        Some("a PEM certificate chain (leaf first) and the PEM private key of its leaf"),
                    ));
                    None
                }
            }
        }
        (Some(s), None) | (None, Some(s)) => {
            diags.push(diag(
                f,
                t,
                Some(s.span()),
                format!("{table}.tls_cert and {table}.tls_key go together"),
                Some("set both: the certificate chain and its private key"),
            ));
            None
        }
    }
}

/// Days as a duration; 0: None (forever).
fn days(d: u32) -> Option<Duration> {
    (d > 0).then(|| Duration::from_secs(u64::from(d) * 86_400))
}

/// A list of addresses or CIDR blocks (`key` names it in messages).
fn cidrs(
    f: &str,
    t: &str,
    list: &[Spanned<String>],
    key: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<switchboard_core::Cidr> {
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        match switchboard_core::Cidr::parse(c.get_ref()) {
            Ok(c) => out.push(c),
            Err(e) => diags.push(diag(
                f,
                t,
                Some(c.span()),
                format!("{key}: {e}"),
                Some("addresses or blocks, e.g. [\"127.0.0.1\", \"10.20.0.0/16\", \"2001:db8::/32\"]"),
            )),
        }
    }
    out
}

fn limits(
    f: &str,
    t: &str,
    c: &LimitsCfg,
    diags: &mut Vec<Diagnostic>,
) -> switchboard_core::guard::Limits {
    let d = switchboard_core::guard::Limits::default();
    let limits = switchboard_core::guard::Limits {
        max_transactions: c.max_transactions.unwrap_or(d.max_transactions),
        max_untrusted_transactions: c
            .max_untrusted_transactions
            .unwrap_or(d.max_untrusted_transactions),
        max_pending_calls: c.max_pending_calls.unwrap_or(d.max_pending_calls),
        retry_after: c.retry_after.unwrap_or(d.retry_after),
        source_rate: c
            .source_rate
            .as_ref()
            .map_or(d.source_rate, |r| *r.get_ref()),
        source_burst: c
            .source_burst
            .as_ref()
            .map_or(d.source_burst, |b| *b.get_ref()),
        ban_failures: c.ban_failures.unwrap_or(d.ban_failures),
        // Capped at a year: an absurd value must not overflow an instant.
        ban_time: c
            .ban_time
            .map_or(d.ban_time, |s| Duration::from_secs(s.min(366 * 86_400))),
        scanners: c.scanner_user_agents.as_ref().map_or(d.scanners, |l| {
            l.iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        }),
        max_sources: c.max_sources.unwrap_or(d.max_sources).max(1),
        max_untrusted_calls: c.max_untrusted_calls.unwrap_or(d.max_untrusted_calls),
        max_calls_per_source: c.max_calls_per_source.unwrap_or(d.max_calls_per_source),
    };
    let zeros = [
        (
            &c.source_rate,
            "limits.source_rate 0 would drop every request from an untrusted source",
            "requests per second per source: the default 20 lets a busy phone through; list the addresses you trust in [sip] trusted",
        ),
        (
            &c.source_burst,
            "limits.source_burst 0 would ban every untrusted source at its first request",
            "the requests one untrusted source may send at once: the default 60",
        ),
    ];
    for (v, msg, hint) in zeros {
        if let Some(v) = v
            && *v.get_ref() == 0
        {
            diags.push(diag(f, t, Some(v.span()), msg.into(), Some(hint)));
        }
    }
    if limits.max_untrusted_transactions > limits.max_transactions {
        diags.push(diag(
            f,
            t,
            None,
            format!(
                "limits.max_untrusted_transactions ({}) is more than max_transactions ({})",
                limits.max_untrusted_transactions, limits.max_transactions
            ),
            Some("untrusted sources get a share of the transactions, not more than all of them"),
        ));
    }
    limits
}

fn diag(
    file: &str,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    msg: String,
    hint: Option<&str>,
) -> Diagnostic {
    Diagnostic::at(file, text, span, msg, hint.map(str::to_owned))
}

fn addr(
    file: &str,
    text: &str,
    v: &Spanned<String>,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<SocketAddr> {
    match v.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            diags.push(diag(
                file,
                text,
                Some(v.span()),
                format!("{what} {:?} is not an IP:port address", v.get_ref()),
                Some("for example \"127.0.0.1:5060\" or \"[::1]:5060\""),
            ));
            None
        }
    }
}

/// Loads and compiles `dir`. On error, every diagnostic of every file.
pub fn load(dir: &Path) -> Result<Loaded, Diagnostics> {
    let main_path = dir.join("switchboard.toml");
    let main_name = main_path.display().to_string();
    let text = std::fs::read_to_string(&main_path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: main_name.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read: {e}"),
            hint: Some(
                "run with --conf pointing at the directory that holds switchboard.toml".into(),
            ),
        }])
    })?;
    let file: File = toml::from_str(&text).map_err(|e| {
        let hint = e
            .message()
            .contains("unknown field")
            .then_some("check the spelling; docs/configuration.md lists every key");
        Diagnostics(vec![diag(
            &main_name,
            &text,
            e.span(),
            e.message().trim().to_owned(),
            hint,
        )])
    })?;
    let mut diags = Vec::new();
    let (f, t) = (main_name.as_str(), text.as_str());
    let mut engine = EngineConfig {
        udp: file
            .sip
            .udp
            .as_ref()
            .and_then(|v| addr(f, t, v, "sip.udp", &mut diags)),
        tcp: file
            .sip
            .tcp
            .as_ref()
            .and_then(|v| addr(f, t, v, "sip.tcp", &mut diags)),
        tls: file
            .sip
            .tls
            .as_ref()
            .and_then(|v| addr(f, t, v, "sip.tls", &mut diags)),
        ..EngineConfig::default()
    };
    if file.sip.udp.is_none() && file.sip.tcp.is_none() && file.sip.tls.is_none() {
        engine.udp = Some(SocketAddr::from(([127, 0, 0, 1], 5060)));
    }
    if let Some(c) = file.sip.context {
        engine.context = c;
    }
    if let Some(m) = &file.sip.min_se {
        if *m.get_ref() >= 90 {
            engine.min_se = *m.get_ref();
        } else {
            diags.push(diag(
                f,
                t,
                Some(m.span()),
                format!("sip.min_se {} is below 90 s, RFC 4028's floor", m.get_ref()),
                Some("use 90 or more"),
            ));
        }
    }
    if let Some(s) = &file.sip.session_expires {
        let v = *s.get_ref();
        if v == 0 || v >= engine.min_se {
            engine.session_expires = v;
        } else {
            diags.push(diag(
                f,
                t,
                Some(s.span()),
                format!(
                    "sip.session_expires {v} is below min_se ({}): peers would refuse it with 422",
                    engine.min_se
                ),
                Some("use 0 (no timer unless a peer asks) or at least min_se; 1800 is usual"),
            ));
        }
    }
    if let Some(list) = &file.sip.trusted {
        engine.trusted = cidrs(f, t, list, "sip.trusted", &mut diags);
    }
    let metrics_open = match &file.http.metrics_open {
        Some(list) => cidrs(f, t, list, "http.metrics_open", &mut diags),
        None => ["127.0.0.0/8", "::1"]
            .iter()
            .filter_map(|c| switchboard_core::Cidr::parse(c).ok())
            .collect(),
    };
    if let Some(c) = file.sip.public_context.clone() {
        engine.public_context = c;
    }
    engine
        .transfer_context
        .clone_from(&file.sip.transfer_context);
    if let Some(ua) = file.sip.user_agent {
        engine.user_agent = ua;
    }
    if let Some(m) = file.sip.max_calls {
        engine.max_calls = m;
    }
    engine.limits = limits(f, t, &file.limits, &mut diags);
    let d = TimerConfig::default();
    engine.timers = TimerConfig {
        t1: file.sip.t1_ms.map(Duration::from_millis).unwrap_or(d.t1),
        t2: file.sip.t2_ms.map(Duration::from_millis).unwrap_or(d.t2),
        t4: file.sip.t4_ms.map(Duration::from_millis).unwrap_or(d.t4),
    };
    if engine.timers.t1.is_zero() || engine.timers.t2 < engine.timers.t1 {
        diags.push(diag(
            f,
            t,
            None,
            "sip timers: t1_ms must be > 0 and t2_ms >= t1_ms".into(),
            Some("defaults are t1_ms = 500, t2_ms = 4000, t4_ms = 5000"),
        ));
    }
    if let Some(ip) = &file.media.ip {
        match ip.get_ref().parse::<IpAddr>() {
            Ok(a) => engine.media_ip = a,
            Err(_) => diags.push(diag(
                f,
                t,
                Some(ip.span()),
                format!("media.ip {:?} is not an IP address", ip.get_ref()),
                None,
            )),
        }
    } else if let Some(a) = engine.udp.or(engine.tcp) {
        engine.media_ip = a.ip();
    }
    let (lo, hi) = (
        file.media.rtp_port_min.unwrap_or(20000),
        file.media.rtp_port_max.unwrap_or(29999),
    );
    if lo >= hi || hi - lo < 4 {
        diags.push(diag(f, t, None, format!("media rtp ports {lo}-{hi}: the range is empty"), Some("rtp_port_min must be below rtp_port_max, with room for at least one call (4 ports)")));
    }
    engine.rtp_ports = (lo, hi);
    engine.anchor_media = file.media.anchor.unwrap_or(true);
    if let Some(c) = file.media.codecs {
        engine.codecs = c;
    }
    if let Some(list) = &file.media.srtp_suites {
        let names = list.get_ref();
        let suites: Vec<_> = names
            .iter()
            .filter_map(|n| switchboard_media::srtp::Suite::from_name(n))
            .collect();
        if let Some(bad) = names
            .iter()
            .find(|n| switchboard_media::srtp::Suite::from_name(n).is_none())
        {
            diags.push(diag(
                f,
                t,
                Some(list.span()),
                format!("media.srtp_suites: {bad:?} is not a crypto-suite this switch speaks"),
                Some("use AES_CM_128_HMAC_SHA1_80, AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_32"),
            ));
        } else if suites.is_empty() {
            diags.push(diag(
                f,
                t,
                Some(list.span()),
                "media.srtp_suites is empty: no SRTP call could be made".to_owned(),
                Some("list at least one suite, or leave the key out for all three"),
            ));
        } else {
            engine.srtp_suites = suites;
        }
    }
    if let Some(d) = &file.media.dtmf {
        match switchboard_media::DtmfMethod::parse(d.get_ref()) {
            Some(m) => engine.dtmf = m,
            None => diags.push(diag(
                f,
                t,
                Some(d.span()),
                format!("media.dtmf {:?} is not a DTMF form", d.get_ref()),
                Some("use \"rfc4733\" (RTP events), \"info\" (SIP INFO) or \"inband\" (tones)"),
            )),
        }
    }
    if let Some(d) = &file.media.inband_dtmf_delay_ms {
        if *d.get_ref() <= 80 {
            engine.inband_delay_ms = *d.get_ref();
        } else {
            diags.push(diag(
                f,
                t,
                Some(d.span()),
                format!(
                    "media.inband_dtmf_delay_ms {} is more than 80 ms: callers would hear the delay",
                    d.get_ref()
                ),
                Some("60 covers the detector's ~40 ms; 0 turns the delay line off"),
            ));
        }
    }
    let opus_complexity = file
        .media
        .opus_complexity
        .unwrap_or(switchboard_media::codec::OPUS_COMPLEXITY);
    if opus_complexity > 10 {
        diags.push(diag(
            f,
            t,
            None,
            format!("media.opus_complexity {opus_complexity} is out of range"),
            Some("0 (fastest) to 10 (best); the default 2 fits 150 transcoded calls per core"),
        ));
    }
    let rtp_latching = match file
        .media
        .rtp_latching
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("sdp", _)) => switchboard_media::Latching::Sdp,
        Some(("any", _)) => switchboard_media::Latching::Any,
        Some((other, span)) => {
            diags.push(diag(
                f,
                t,
                Some(span),
                format!("media.rtp_latching {other:?} is not a latching policy"),
                Some("\"sdp\" (the default: RTP only from the address the SDP names or the signalling came from) or \"any\" (the first packet from anywhere)"),
            ));
            switchboard_media::Latching::Sdp
        }
    };
    let rtp_timeout = match file.media.rtp_timeout.unwrap_or(60) {
        0 => None,
        s => Some(Duration::from_secs(s)),
    };
    // The sounds directory is relative to conf/ (the shipped one is conf/../sounds/en).
    let sounds = dir.join(file.media.sounds.as_deref().unwrap_or("../sounds/en"));
    let prompts = match crate::media::load_prompts(&sounds) {
        Ok(p) => p,
        // The default directory may be absent (a conf/ elsewhere that plays nothing): a
        // dialplan naming a prompt then says "no prompts found". A path set here must exist.
        Err(_) if file.media.sounds.is_none() && !sounds.exists() => Default::default(),
        Err(e) => {
            diags.push(diag(
                f,
                t,
                None,
                format!("media.sounds: {e}"),
                Some(
                    "point media.sounds at a directory of 16-bit PCM WAV files (relative to conf/)",
                ),
            ));
            Default::default()
        }
    };
    let http = file
        .http
        .listen
        .as_ref()
        .map_or(Some(SocketAddr::from(([127, 0, 0, 1], 8080))), |v| {
            addr(f, t, v, "http.listen", &mut diags)
        });
    // Demo settings are for loopback: on an address others reach they are an open door.
    if let Some(a) = http.filter(|a| !a.ip().is_loopback())
        && file.http.token.as_deref() == Some(DEMO_TOKEN)
    {
        diags.push(diag(
            f,
            t,
            file.http.listen.as_ref().map(Spanned::span),
            format!("http.token is still the shipped demo token, and the admin API listens on {a}, which is not loopback: anyone may reload the switch and mark gateways down"),
            Some("set a token of your own (e.g. `openssl rand -hex 24`), or listen on 127.0.0.1"),
        ));
    }
    // The widget's public routes and the admin API on one address others reach: the admin
    // API and /metrics would face the whole internet with the call button.
    if let Some(a) = http.filter(|a| !a.ip().is_loopback())
        && file.webrtc.enabled.unwrap_or(true)
        && file.webrtc.listen.is_none()
    {
        diags.push(diag(
            f,
            t,
            file.http.listen.as_ref().map(Spanned::span),
            format!("the call button (/c2c.js, /ws) would be served on the admin API's listener {a}, which is not loopback"),
            Some("give the widget a listener of its own ([webrtc] listen = \"0.0.0.0:8443\") and keep http.listen on loopback or a management network"),
        ));
    }
    let widget = file
        .webrtc
        .listen
        .as_ref()
        .and_then(|l| l.get_ref().parse::<SocketAddr>().ok())
        .or(http);
    if let Some(a) = widget.filter(|a| !a.ip().is_loopback()) {
        for (id, m) in &file.merchant {
            if m.get_ref().tokenless && id == "demo" {
                diags.push(diag(
                    f,
                    t,
                    Some(m.span()),
                    format!("merchant {id} is the tokenless demo merchant, and the call button is served on {a}, which is not loopback: any page on its origins may place calls"),
                    Some("give it a secret (tokens minted by the merchant's server, docs/webrtc.md) and tokenless = false, or listen on 127.0.0.1"),
                ));
            }
        }
    }
    let mut gw_cfgs = BTreeMap::new();
    for (name, g) in &file.gateway {
        gw_cfgs.insert(name.clone(), g.get_ref().clone());
    }
    let gateways = match Gateways::new(&gw_cfgs) {
        Ok(g) => g,
        Err(errs) => {
            for e in errs {
                let span = file
                    .gateway
                    .iter()
                    .find(|(n, _)| e.to_string().contains(&format!("gateway {n}:")))
                    .map(|(_, g)| g.span());
                diags.push(diag(f, t, span, e.to_string(), None));
            }
            Gateways::default()
        }
    };
    let mut tls_clients = std::collections::HashMap::new();
    for g in gateways
        .iter()
        .filter(|g| g.transport == switchboard_sip::transaction::Transport::Tls)
    {
        match crate::tls::client(dir, &g.config) {
            Ok(c) => {
                tls_clients.insert(g.addr, c);
            }
            Err(e) => diags.push(diag(
                f,
                t,
                file.gateway.get(&g.name).map(Spanned::span),
                format!("gateway {}: {e}", g.name),
                Some("tls_ca: the PEM of the CA its certificate chains to; tls_name: the name it carries; tls_cert and tls_key: a client certificate, if it asks for one"),
            )),
        }
    }
    let (sources, mut files) = read_dialplan(&dir.join("dialplan"), &mut diags);
    files.insert(0, main_path);
    let mut prompt_names: Vec<String> = prompts.keys().cloned().collect();
    prompt_names.sort();
    let modules = match &file.modules.load {
        None => crate::modules::DEFAULT
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
        Some(list) => {
            for m in list.get_ref() {
                if !crate::modules::AVAILABLE.contains(&m.as_str()) {
                    diags.push(diag(
                        f,
                        t,
                        Some(list.span()),
                        format!("modules.load: no module named {m:?} in this build"),
                        Some(&format!(
                            "modules compiled in: {}",
                            crate::modules::AVAILABLE.join(", ")
                        )),
                    ));
                }
            }
            list.get_ref().clone()
        }
    };
    let pages = crate::modules::pages(file.merchant.values().map(Spanned::get_ref));
    let agents = agents_config(
        f,
        t,
        &file.agents,
        &file.agent,
        &file.queue,
        &file.merchant,
        file.webrtc.listen.as_ref(),
        http,
        &mut diags,
    );
    let (endpoints, actions) =
        crate::modules::declarations(&modules, &gateways, &pages, &agents.queues);
    let env = CompileEnv {
        prompts: prompt_names,
        endpoints,
        actions,
    };
    let dialplan = match compile(&sources, &env) {
        Ok(dp) => Some(dp),
        Err(Diagnostics(mut more)) => {
            diags.append(&mut more);
            None
        }
    };
    let web = web_config(
        dir,
        f,
        t,
        &file.webrtc,
        &file.merchant,
        &engine,
        http,
        &mut diags,
    );
    // Capped (an hour, a day): an absurd value must not overflow an instant.
    let secs = |v: Option<u64>, d: Duration| {
        v.map_or(d, |s| Duration::from_secs(s.min(3600)))
            .max(Duration::from_secs(1))
    };
    let idle = |v: Option<u64>, d: Option<Duration>| match v {
        Some(0) => None,
        Some(s) => Some(Duration::from_secs(s.min(86_400))),
        None => d,
    };
    let tls_files = [
        tls_pair(
            f,
            t,
            dir,
            "sip",
            &file.sip.tls_cert,
            &file.sip.tls_key,
            &mut diags,
        ),
        tls_pair(
            f,
            t,
            dir,
            "http",
            &file.http.tls_cert,
            &file.http.tls_key,
            &mut diags,
        ),
        tls_pair(
            f,
            t,
            dir,
            "webrtc",
            &file.webrtc.tls_cert,
            &file.webrtc.tls_key,
            &mut diags,
        ),
    ];
    if file.sip.tls.is_some() && tls_files[0].is_none() {
        diags.push(diag(
            f,
            t,
            file.sip.tls.as_ref().map(Spanned::span),
            "sip.tls listens for SIP over TLS but sip.tls_cert and sip.tls_key are not set".into(),
            Some("point them at the PEM files of the certificate chain and its key (relative to conf/)"),
        ));
    }
    if tls_files[2].is_some() && file.webrtc.listen.is_none() {
        diags.push(diag(
            f,
            t,
            file.webrtc.tls_cert.as_ref().map(Spanned::span),
            "webrtc.tls_cert is for the widget's own listener, and webrtc.listen is not set".into(),
            Some("set webrtc.listen, or put the certificate in [http] (tls_cert, tls_key) for the shared listener"),
        ));
    }
    let (ds, dh) = (ConnLimits::SIP, ConnLimits::HTTP);
    let sip_conn = ConnLimits {
        max: file.sip.tcp_max_connections.unwrap_or(ds.max).max(1),
        per_source: file.sip.tcp_max_per_source.unwrap_or(ds.per_source).max(1),
        message_timeout: secs(file.sip.tcp_message_timeout, ds.message_timeout),
        idle_timeout: idle(file.sip.tcp_idle_timeout, ds.idle_timeout),
    };
    let http_conn = ConnLimits {
        max: file.http.max_connections.unwrap_or(dh.max).max(1),
        per_source: file.http.max_per_source.unwrap_or(dh.per_source).max(1),
        message_timeout: secs(file.http.header_timeout, dh.message_timeout),
        idle_timeout: idle(file.http.idle_timeout, dh.idle_timeout),
    };
    match dialplan {
        Some(dialplan) if diags.is_empty() => Ok(Loaded {
            warnings: open_relay_warnings(&dialplan, &engine),
            web,
            agents,
            engine,
            modules,
            gateways,
            dialplan,
            http,
            token: file.http.token,
            metrics_token: file.http.metrics_token,
            metrics_open,
            tls: tls_files,
            tls_clients,
            sip_conn,
            http_conn,
            log_level: file.log.level.unwrap_or_else(|| "info".into()),
            drain: Duration::from_secs(file.shutdown.drain_secs.unwrap_or(30)),
            files,
            prompts,
            rtp_timeout,
            opus_complexity,
            rtp_latching,
            retention: crate::storage::Retention {
                keep: days(file.storage.keep_days.unwrap_or(0)),
                keep_unanswered: days(file.storage.keep_unanswered_days.unwrap_or(30)),
            },
            // Relative to conf/, like the sounds: the shipped one is conf/../data/.
            storage: dir.join(
                file.storage
                    .path
                    .as_deref()
                    .unwrap_or("../data/switchboard.db"),
            ),
        }),
        _ => Err(Diagnostics(diags)),
    }
}

/// The public context (any source reaches it, unauthenticated) should reach no gateway: each
/// extension there that bridges out of the switch is named (toll fraud starts there).
fn open_relay_warnings(dialplan: &Dialplan, engine: &EngineConfig) -> Vec<String> {
    let trusted_all = engine
        .trusted
        .iter()
        .any(switchboard_core::Cidr::is_everything);
    let mut w: Vec<String> = dialplan
        .bridges_out(&engine.public_context, &["gateway"])
        .into_iter()
        .map(|e| {
            format!(
                "{e} is in context {:?}, which any source reaches without authentication, and bridges out of the switch: anyone may call through it (toll fraud)",
                engine.public_context
            )
        })
        .collect();
    if trusted_all {
        w.push("sip.trusted covers every address: any source may call through the gateways of the trusted context".into());
    }
    w
}

/// `[agents]`, `[agent.*]` and `[queue.*]`, checked.
#[allow(clippy::too_many_arguments)]
fn agents_config(
    f: &str,
    t: &str,
    a: &AgentsCfg,
    agent: &BTreeMap<String, Spanned<ConfAgent>>,
    queue: &BTreeMap<String, Spanned<QueueCfg>>,
    merchant: &BTreeMap<String, Spanned<MerchantConfig>>,
    widget_listen: Option<&Spanned<String>>,
    http: Option<SocketAddr>,
    diags: &mut Vec<Diagnostic>,
) -> Agents {
    let code_digits = match &a.code_digits {
        Some(d) if !(2..=6).contains(d.get_ref()) => {
            diags.push(diag(
                f,
                t,
                Some(d.span()),
                format!("agents.code_digits = {} is out of range", d.get_ref()),
                Some("a channel code has 2 to 6 digits (default 4)"),
            ));
            4
        }
        Some(d) => *d.get_ref(),
        None => 4,
    };
    let mut queues = BTreeMap::new();
    for (name, q) in queue {
        let strategy = match q.get_ref().strategy.as_ref() {
            None => switchboard_agent::RingStrategy::RingAll,
            Some(s) => match s.get_ref().as_str() {
                "ring-all" => switchboard_agent::RingStrategy::RingAll,
                "longest-idle" => switchboard_agent::RingStrategy::LongestIdle,
                other => {
                    diags.push(diag(
                        f,
                        t,
                        Some(s.span()),
                        format!("queue {name}: no strategy {other:?}"),
                        Some("strategy is \"ring-all\" (every available agent at once) or \"longest-idle\""),
                    ));
                    continue;
                }
            },
        };
        let merchant = q.get_ref().merchant.as_ref().map(|m| {
            if !merchant.contains_key(m.get_ref()) {
                diags.push(diag(
                    f,
                    t,
                    Some(m.span()),
                    format!("queue {name}: no merchant {:?}", m.get_ref()),
                    Some("name a [merchant.ID] of this file"),
                ));
            }
            m.get_ref().clone()
        });
        queues.insert(
            name.clone(),
            switchboard_agent::Queue { strategy, merchant },
        );
    }
    // The console is served on the admin listener and on the widget's own, if it has one.
    let public = [http]
        .into_iter()
        .chain([widget_listen.and_then(|l| l.get_ref().parse::<SocketAddr>().ok())])
        .flatten()
        .find(|a| !a.ip().is_loopback());
    let mut accounts = BTreeMap::new();
    for (id, spanned) in agent {
        let c = spanned.get_ref();
        let role = match c.role.as_ref() {
            None => switchboard_agent::Role::Agent,
            Some(r) => match switchboard_agent::Role::parse(r.get_ref()) {
                Some(role) => role,
                None => {
                    diags.push(diag(
                        f,
                        t,
                        Some(r.span()),
                        format!("agent {id}: no role {:?}", r.get_ref()),
                        Some("role is \"agent\", \"supervisor\" or \"admin\""),
                    ));
                    continue;
                }
            },
        };
        for q in &c.queues {
            if !queues.contains_key(q) {
                diags.push(diag(
                    f,
                    t,
                    Some(spanned.span()),
                    format!("agent {id}: no queue {q:?}"),
                    Some("define it under [queue.NAME]"),
                ));
            }
        }
        let phc = c.password.get_ref();
        if !phc.starts_with("$argon2id$") {
            diags.push(diag(
                f,
                t,
                Some(c.password.span()),
                format!("agent {id}: password must be an argon2id hash, not a password in clear"),
                Some("make one with `switchboard agent hash` and paste its output"),
            ));
            continue;
        }
        if let Some(addr) = public
            && switchboard_agent::password::verify(DEMO_PASSWORD, Some(phc))
        {
            diags.push(diag(
                f,
                t,
                Some(c.password.span()),
                format!("agent {id} still has the demo password, and the console is served on {addr}, which is not loopback"),
                Some("set a new hash (`switchboard agent hash`), remove the agent, or listen on 127.0.0.1"),
            ));
        }
        let info = switchboard_agent::AgentInfo {
            id: id.clone(),
            name: c.name.clone().unwrap_or_else(|| id.clone()),
            role,
            merchants: c.merchants.clone(),
            queues: c.queues.clone(),
        };
        accounts.insert(id.clone(), (info, phc.clone()));
    }
    Agents {
        code_digits,
        idle_timeout: Duration::from_secs(a.idle_timeout.unwrap_or(1800).max(60)),
        max_failures: a.max_failures.unwrap_or(5).max(1),
        secure_cookie: a.secure_cookie.unwrap_or(false),
        accounts,
        queues,
    }
}

#[allow(clippy::too_many_arguments)]
fn web_config(
    dir: &Path,
    f: &str,
    t: &str,
    w: &WebrtcCfg,
    merchant: &BTreeMap<String, Spanned<MerchantConfig>>,
    engine: &EngineConfig,
    http: Option<SocketAddr>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Web> {
    if !w.enabled.unwrap_or(true) {
        return None;
    }
    let ip = match &w.ip {
        Some(ip) => match ip.get_ref().parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => {
                diags.push(diag(
                    f,
                    t,
                    Some(ip.span()),
                    format!("webrtc.ip {:?} is not an IP address", ip.get_ref()),
                    Some("the address browsers reach this host at, e.g. \"203.0.113.7\""),
                ));
                return None;
            }
        },
        None => engine.media_ip,
    };
    if http.is_none() && !merchant.is_empty() {
        diags.push(diag(
            f,
            t,
            None,
            "webrtc needs http.listen: the widget and /ws are served there".into(),
            Some("set [http] listen, or [webrtc] enabled = false"),
        ));
    }
    if !engine.anchor_media && !merchant.is_empty() {
        diags.push(diag(
            f,
            t,
            None,
            "webrtc needs media.anchor = true: browser calls are always anchored (SRTP to RTP)"
                .into(),
            Some("set [media] anchor = true, or [webrtc] enabled = false"),
        ));
    }
    let mut merchants = BTreeMap::new();
    let mut tls = BTreeMap::new();
    for (id, m) in merchant {
        for p in m.get_ref().problems(id) {
            diags.push(diag(
                f,
                t,
                Some(m.span()),
                p,
                Some("docs/webrtc.md describes [merchant.*]"),
            ));
        }
        let mc = m.get_ref();
        if mc
            .webhook_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
        {
            let ca = mc.webhook_ca.as_deref().map(|c| dir.join(c));
            match switchboard_screenpop::client_config(ca.as_deref()) {
                Ok(c) => {
                    tls.insert(id.clone(), c);
                }
                Err(e) => diags.push(diag(
                    f,
                    t,
                    Some(m.span()),
                    format!("merchant {id}: webhook_ca: {e}"),
                    Some("a PEM file of CA certificates, relative to conf/"),
                )),
            }
        }
        merchants.insert(id.clone(), mc.clone());
    }
    let listen = w
        .listen
        .as_ref()
        .and_then(|v| addr(f, t, v, "webrtc.listen", diags));
    if listen.is_some() && listen == http {
        diags.push(diag(
            f,
            t,
            w.listen.as_ref().map(Spanned::span),
            "webrtc.listen is http.listen: leave it out to serve the widget there".into(),
            None,
        ));
    }
    Some(Web {
        ip,
        listen,
        reconnect_grace: Duration::from_secs(w.reconnect_grace.unwrap_or(10)),
        ip_calls_per_minute: w.ip_calls_per_minute.unwrap_or(10),
        ip_max_calls: w.ip_max_calls.unwrap_or(2),
        merchants,
        tls,
    })
}

fn read_dialplan(dir: &Path, diags: &mut Vec<Diagnostic>) -> (Vec<Source>, Vec<PathBuf>) {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) => {
            diags.push(Diagnostic {
                file: dir.display().to_string(),
                line: 1,
                col: 1,
                message: format!("cannot read the dialplan directory: {e}"),
                hint: Some("create conf/dialplan/ with at least one .toml file".into()),
            });
            return (vec![], vec![]);
        }
    };
    paths.sort();
    let mut sources = Vec::new();
    for p in &paths {
        match std::fs::read_to_string(p) {
            Ok(text) => sources.push(Source {
                path: p.display().to_string(),
                text,
            }),
            Err(e) => diags.push(Diagnostic {
                file: p.display().to_string(),
                line: 1,
                col: 1,
                message: format!("cannot read: {e}"),
                hint: None,
            }),
        }
    }
    (sources, paths)
}
