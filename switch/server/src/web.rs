//! The browser leg's shell: the widget's files, the `/ws` signalling endpoint, and one task
//! per browser call that moves bytes between the WebSocket, the browser's UDP socket (str0m
//! peer), the core (SIP on the Local transport) and the core's media session (plain RTP).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use switchboard_media::PortPool;
use switchboard_sip::parse_datagram;
use switchboard_webrtc::signal::{self, MAX_FRAME};
use switchboard_webrtc::{
    BrowserPeer, CallRequest, ClientMsg, ErrorCode, LegEvent, PeerOutput, ServerMsg, WebFacts,
    WebLeg, assets,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::config::Web;
use crate::shell::NetIn;

/// The cause of a browser leg whose widget or media is gone for good (in the BYE's Reason).
const GONE: (u16, &str) = (38, "NETWORK_OUT_OF_ORDER");

/// A widget taking a call back: its WebSocket, and a new offer and address when it is a new
/// page.
type Resumed = (WebSocket, Option<String>, Option<String>);

/// Pages of a call's trail kept for the agent's screen pop.
const TRAIL: usize = 20;

/// What the agent's screen pop shows of a browser call in progress.
#[derive(Debug, Clone)]
pub struct LiveWeb {
    /// What the call was admitted with.
    pub facts: WebFacts,
    /// Trail, cookies and fields (the merchant's opt-ins).
    pub context: switchboard_webrtc::signal::WebContext,
    /// The page the shopper is on now (it follows the tab's navigation).
    pub page_now: String,
}

/// How long a page's WebSocket may outlive its media before its media closing is a hang-up.
const PAGE_GONE_WAIT: Duration = Duration::from_secs(1);

/// How long the page has to answer an action (SPEC §3: acknowledged within 500 ms).
const ACTION_WAIT: Duration = Duration::from_millis(500);

/// How long a new WebSocket may take to say what it wants.
const FIRST_MESSAGE: Duration = Duration::from_secs(10);

/// What every browser call shares.
pub struct WebShared {
    /// Settings and merchants (replaced on reload; calls keep what they were admitted with).
    pub cfg: RwLock<Web>,
    pub(crate) net: mpsc::Sender<NetIn>,
    pub(crate) ports: PortPool,
    limits: Mutex<Limits>,
    live: Mutex<HashMap<String, (String, mpsc::Sender<Resumed>)>>,
    pub(crate) next: AtomicU32,
    /// Calls placed, refused (by code), and ended.
    pub placed: AtomicU64,
    /// Refusals by error code name.
    pub refused: Mutex<HashMap<&'static str, u64>>,
    storage: Option<crate::storage::Store>,
    /// The facts of browser calls in progress, by leg A's Call-ID.
    facts: Mutex<HashMap<String, LiveWeb>>,
    /// Chat and room news for the callers' pages, by leg A's Call-ID.
    pub(crate) callers: Mutex<HashMap<String, mpsc::Sender<ServerMsg>>>,
    /// The agent console (set once both exist).
    pub(crate) hub: std::sync::OnceLock<Arc<crate::console::ConsoleHub>>,
    /// Where browser legs hand their RTP to the media sessions (no loopback hop).
    pub(crate) taps: crate::media::Taps,
    /// The DTLS certificate of every browser leg (made at start).
    pub(crate) cert: Option<switchboard_webrtc::Certificate>,
}

impl std::fmt::Debug for WebShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebShared").finish_non_exhaustive()
    }
}

impl WebShared {
    /// Shares `web` with the SIP thread's `net` channel and the core's port pool.
    pub fn new(
        web: Web,
        net: mpsc::Sender<NetIn>,
        ports: PortPool,
        storage: Option<crate::storage::Store>,
        taps: crate::media::Taps,
    ) -> Arc<WebShared> {
        Arc::new(WebShared {
            cfg: RwLock::new(web),
            net,
            ports,
            limits: Mutex::new(Limits::default()),
            live: Mutex::new(HashMap::new()),
            next: AtomicU32::new(1),
            placed: AtomicU64::new(0),
            refused: Mutex::new(HashMap::new()),
            storage,
            facts: Mutex::new(HashMap::new()),
            callers: Mutex::new(HashMap::new()),
            hub: std::sync::OnceLock::new(),
            taps,
            cert: switchboard_webrtc::Certificate::generate(),
        })
    }

    /// The widget's own listener, if it has one (`[webrtc] listen`).
    pub fn listen(&self) -> Option<SocketAddr> {
        self.cfg().listen
    }

    /// A browser call in progress, by leg A's Call-ID.
    pub fn live_web(&self, call_id: &str) -> Option<LiveWeb> {
        self.facts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(call_id)
            .cloned()
    }

    /// The page names of a merchant (what the console may push).
    pub fn page_names(&self, merchant: &str) -> Vec<String> {
        self.cfg()
            .merchants
            .get(merchant)
            .map(|m| m.pages.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The address of the browsers' ICE candidates.
    pub fn ip(&self) -> IpAddr {
        self.cfg().ip
    }

    fn cfg(&self) -> std::sync::RwLockReadGuard<'_, Web> {
        self.cfg.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A merchant's webhook target and the events it wants, if it has one.
    pub fn webhook(
        &self,
        merchant: &str,
    ) -> Option<(Arc<switchboard_screenpop::Target>, Vec<String>)> {
        let cfg = self.cfg();
        let m = cfg.merchants.get(merchant)?;
        let (https, host, port, path) =
            switchboard_webrtc::merchant::split_url(m.webhook_url.as_deref()?)?;
        let tls = if https {
            Some(cfg.tls.get(merchant)?.clone())
        } else {
            None
        };
        let target = switchboard_screenpop::Target {
            host,
            port,
            path,
            secret: m.webhook_secret.clone().unwrap_or_default(),
            tls,
        };
        Some((Arc::new(target), m.webhook_events.clone()))
    }

    fn refuse(&self, code: ErrorCode) {
        *self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(code.as_str())
            .or_default() += 1;
    }

    /// Prometheus lines for `/metrics`.
    pub fn metrics(&self) -> String {
        let mut o = String::new();
        o.push_str("# HELP switchboard_web_calls_total Browser calls placed.\n# TYPE switchboard_web_calls_total counter\n");
        o.push_str(&format!(
            "switchboard_web_calls_total {}\n",
            self.placed.load(Ordering::Relaxed)
        ));
        o.push_str("# HELP switchboard_web_refused_total Browser call requests refused, by reason.\n# TYPE switchboard_web_refused_total counter\n");
        let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<_> = refused.iter().collect();
        names.sort();
        for (k, v) in names {
            o.push_str(&format!(
                "switchboard_web_refused_total{{reason=\"{k}\"}} {v}\n"
            ));
        }
        o
    }
}

/// Per-address and per-merchant call limits (a toll-fraud brake).
#[derive(Debug, Default)]
struct Limits {
    ip: HashMap<IpAddr, Window>,
    merchant: HashMap<String, Window>,
}

#[derive(Debug)]
struct Window {
    active: usize,
    since: Instant,
    count: u32,
}

impl Window {
    fn check(
        &mut self,
        now: Instant,
        max_active: usize,
        per_minute: u32,
    ) -> Result<(), &'static str> {
        if now.duration_since(self.since) >= Duration::from_secs(60) {
            self.since = now;
            self.count = 0;
        }
        if self.active >= max_active {
            return Err("too many calls at once");
        }
        if self.count >= per_minute {
            return Err("too many calls in the last minute");
        }
        Ok(())
    }
}

impl Limits {
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        now: Instant,
        ip: IpAddr,
        ip_max: usize,
        ip_rate: u32,
        merchant: &str,
        m_max: usize,
        m_rate: u32,
    ) -> Result<(), String> {
        let new = || Window {
            active: 0,
            since: now,
            count: 0,
        };
        let w = self.ip.entry(ip).or_insert_with(new);
        w.check(now, ip_max, ip_rate)
            .map_err(|e| format!("{e} from your network; please try again later"))?;
        let m = self.merchant.entry(merchant.to_owned()).or_insert_with(new);
        m.check(now, m_max, m_rate)
            .map_err(|e| format!("{e} to this merchant; please try again later"))?;
        m.active += 1;
        m.count += 1;
        if let Some(w) = self.ip.get_mut(&ip) {
            w.active += 1;
            w.count += 1;
        }
        Ok(())
    }

    fn release(&mut self, ip: IpAddr, merchant: &str) {
        if let Some(w) = self.ip.get_mut(&ip) {
            w.active = w.active.saturating_sub(1);
            if w.active == 0 && w.count == 0 {
                self.ip.remove(&ip);
            }
        }
        if let Some(w) = self.merchant.get_mut(merchant) {
            w.active = w.active.saturating_sub(1);
        }
        // Idle addresses whose minute is over are forgotten (bounded memory under scans).
        if self.ip.len() > 10_000 {
            let now = Instant::now();
            self.ip.retain(|_, w| {
                w.active > 0 || now.duration_since(w.since) < Duration::from_secs(60)
            });
        }
    }
}

/// Releases a call's limits, port and registration when its task ends, however it ends.
struct CallGuard {
    web: Arc<WebShared>,
    ip: IpAddr,
    merchant: String,
    port: Option<u16>,
    id: String,
    call_id: String,
    /// The tap's key, while no media session took it.
    tap: Option<SocketAddr>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.web
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(self.ip, &self.merchant);
        if let Some(p) = self.port.take() {
            self.web.ports.give_back(p);
        }
        self.web
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.web
            .facts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.call_id);
        self.web
            .callers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.call_id);
        if let Some(a) = self.tap.take() {
            self.web
                .taps
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&a);
        }
    }
}

/// Serves the widget's routes alone on `addr` (`[webrtc] listen`: a public address apart
/// from the admin API).
pub async fn serve(
    addr: SocketAddr,
    (gate, tls): (Arc<crate::conn::Gate>, Option<Arc<crate::tls::Tls>>),
    web: Arc<WebShared>,
    hub: Option<Arc<crate::console::ConsoleHub>>,
) -> anyhow::Result<()> {
    let mut app = routes(web).route("/healthz", get(|| async { "ok\n" }));
    if let Some(hub) = hub {
        app = app.merge(crate::console::routes(hub));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the widget's HTTP {addr}: {e}"))?;
    info!(%addr, https = tls.is_some(), "widget HTTP listening");
    crate::conn::serve_http(listener, gate, app, tls).await?;
    Ok(())
}

/// The widget's routes: `/c2c.js`, `/client/<version>.js`, `/demo/shop` (and its
/// `/demo/checkout`, the page the demo's agent pushes with `*76`), `/ws`.
pub fn routes(web: Arc<WebShared>) -> Router {
    Router::new()
        .route("/c2c.js", get(loader))
        .route("/client/{file}", get(client))
        .route("/demo/shop", get(shop))
        .route("/demo/checkout", get(shop))
        .route("/ws", get(ws))
        .with_state(web)
}

fn client_path() -> String {
    format!("/client/{}.js", assets::client_version())
}

/// A script of the widget as served: its bytes, compressed once (brotli and gzip), and its
/// validator.
struct Asset {
    plain: Bytes,
    gzip: Bytes,
    br: Bytes,
    /// Strong ETag of the plain bytes (the compressed ones carry it with `-gz` or `-br`).
    etag: String,
}

/// How a script travels: what `Accept-Encoding` takes, brotli first (the smaller).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Coding {
    Br,
    Gzip,
    Identity,
}

impl Asset {
    fn new(text: String) -> Asset {
        use std::io::Write as _;
        let plain = Bytes::from(text);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = gz
            .write_all(&plain)
            .and_then(|()| gz.finish())
            .map(Bytes::from)
            .unwrap_or_default();
        let mut br = Vec::new();
        let params = brotli::enc::BrotliEncoderParams {
            quality: 11,
            lgwin: 22,
            ..Default::default()
        };
        let br = match brotli::BrotliCompress(&mut &plain[..], &mut br, &params) {
            Ok(_) => Bytes::from(br),
            Err(_) => Bytes::new(),
        };
        // FNV-1a of the bytes: changes with the content, nothing else.
        let h = plain.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        Asset {
            plain,
            gzip,
            br,
            etag: format!("\"{h:016x}\""),
        }
    }

    /// The ETag of the bytes sent in this coding.
    fn etag_of(&self, coding: Coding) -> String {
        let base = self.etag.trim_end_matches('"');
        match coding {
            Coding::Br => format!("{base}-br\""),
            Coding::Gzip => format!("{base}-gz\""),
            Coding::Identity => self.etag.clone(),
        }
    }

    /// The answer to a GET: 304 when the browser's copy is current, brotli or gzip when it
    /// takes them.
    fn serve(&self, req: &HeaderMap, cache: &'static str) -> Response {
        let coding = if !self.br.is_empty() && accepts(req, "br") {
            Coding::Br
        } else if !self.gzip.is_empty() && accepts(req, "gzip") {
            Coding::Gzip
        } else {
            Coding::Identity
        };
        let etag = self.etag_of(coding);
        let tags = [Coding::Br, Coding::Gzip, Coding::Identity].map(|c| self.etag_of(c));
        let current = req
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .map(|t| t.trim().trim_start_matches("W/"))
                    .any(|t| t == "*" || tags.iter().any(|e| e == t))
            });
        let mut resp = if current {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            match coding {
                Coding::Br => ([(header::CONTENT_ENCODING, "br")], self.br.clone()).into_response(),
                Coding::Gzip => {
                    ([(header::CONTENT_ENCODING, "gzip")], self.gzip.clone()).into_response()
                }
                Coding::Identity => self.plain.clone().into_response(),
            }
        };
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/javascript; charset=utf-8"),
        );
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static(cache),
        );
        h.insert(
            header::VARY,
            header::HeaderValue::from_static("Accept-Encoding"),
        );
        if let Ok(v) = header::HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        resp
    }
}

/// `Accept-Encoding` names this coding, or `*` (without `q=0`).
fn accepts(req: &HeaderMap, wanted: &str) -> bool {
    req.get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|item| {
                let mut parts = item.split(';').map(str::trim);
                let coding = parts.next().unwrap_or("");
                let refused =
                    parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
                (coding.eq_ignore_ascii_case(wanted) || coding == "*") && !refused
            })
        })
}

async fn loader(headers: HeaderMap) -> Response {
    static LOADER: std::sync::OnceLock<Asset> = std::sync::OnceLock::new();
    LOADER
        .get_or_init(|| Asset::new(assets::LOADER.replace("__CLIENT_URL__", &client_path())))
        // Short: the loader names the current media client, whose URL changes with it.
        .serve(&headers, "public, max-age=300")
}

async fn client(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if format!("/client/{file}") != client_path() {
        return (StatusCode::NOT_FOUND, "no such client version\n").into_response();
    }
    static CLIENT: std::sync::OnceLock<Asset> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| Asset::new(assets::CLIENT.to_owned()))
        // Versioned URL: a second call downloads nothing.
        .serve(&headers, "public, max-age=31536000, immutable")
}

async fn shop() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        assets::DEMO_SHOP,
    )
        .into_response()
}

async fn ws(
    State(web): State<Arc<WebShared>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A page on no merchant's origins is refused at the upgrade (the call's own merchant is
    // checked again with its first message): another site's script gets no socket at all.
    let known = origin.as_deref().is_some_and(|o| {
        web.cfg()
            .merchants
            .values()
            .any(|m| m.origins.iter().any(|a| a == o))
    });
    if !known {
        debug!(origin = ?origin, source = %from.ip(), "WebSocket refused at the upgrade: its Origin is on no merchant's origins");
        web.refuse(ErrorCode::OriginNotAllowed);
        return (
            StatusCode::FORBIDDEN,
            "this page's origin may not open a call: it is on no merchant's origins\n",
        )
            .into_response();
    }
    upgrade
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| session(web, socket, origin, from.ip()))
}

async fn send(ws: &mut WebSocket, msg: &ServerMsg) -> bool {
    ws.send(WsMessage::Text(msg.to_json().into())).await.is_ok()
}

/// Next text frame; None when the socket is closed or broken.
async fn next_text(ws: &mut WebSocket) -> Option<Result<String, ()>> {
    loop {
        match ws.recv().await? {
            Ok(WsMessage::Text(t)) => return Some(Ok(t.to_string())),
            Ok(WsMessage::Close(_)) | Err(_) => return None,
            Ok(WsMessage::Binary(_)) => return Some(Err(())),
            Ok(_) => {}
        }
    }
}

async fn refuse(web: &WebShared, mut ws: WebSocket, code: ErrorCode, message: String) {
    info!(?code, %message, "web call refused");
    web.refuse(code);
    let _ = send(&mut ws, &ServerMsg::error(code, message)).await;
    let _ = ws.send(WsMessage::Close(None)).await;
}

async fn session(web: Arc<WebShared>, mut ws: WebSocket, origin: Option<String>, ip: IpAddr) {
    let first = match tokio::time::timeout(FIRST_MESSAGE, next_text(&mut ws)).await {
        Ok(Some(Ok(t))) => t,
        Ok(Some(Err(()))) => {
            return refuse(&web, ws, ErrorCode::BadRequest, "text frames only".into()).await;
        }
        _ => return,
    };
    match signal::parse(&first) {
        Ok(ClientMsg::Call(req)) => place(web, ws, *req, origin, ip).await,
        Ok(ClientMsg::Resume {
            call,
            key,
            sdp,
            page_url,
        }) => {
            let target = web
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&call)
                .filter(|(k, _)| switchboard_webrtc::token::constant_eq(k, &key))
                .map(|(_, tx)| tx.clone());
            match target {
                Some(tx) => {
                    if let Err(e) = tx.send((ws, sdp, page_url)).await {
                        refuse(
                            &web,
                            e.0.0,
                            ErrorCode::NoSuchCall,
                            "the call has ended".into(),
                        )
                        .await;
                    }
                }
                None => {
                    refuse(
                        &web,
                        ws,
                        ErrorCode::NoSuchCall,
                        "no such call (it may have ended)".into(),
                    )
                    .await
                }
            }
        }
        Ok(
            ClientMsg::Hangup
            | ClientMsg::Moving
            | ClientMsg::ActionResult { .. }
            | ClientMsg::Chat { .. }
            | ClientMsg::ChatRead { .. },
        ) => {}
        Err(e) => {
            refuse(
                &web,
                ws,
                ErrorCode::BadRequest,
                format!("not a call request: {e}"),
            )
            .await
        }
    }
}

/// The Local address of browser call `n`: `0.x.y.z:0`, which no network peer can have,
/// unique among the last 16 million calls (never 0.0.0.0).
pub(crate) fn local_addr(n: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(n % 0x00ff_ffff + 1)), 0)
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: refuse to mint guessable secrets.
        return String::new();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn place(
    web: Arc<WebShared>,
    ws: WebSocket,
    req: CallRequest,
    origin: Option<String>,
    ip: IpAddr,
) {
    let now_unix = jiff::Timestamp::now().as_second().max(0) as u64;
    let admitted = {
        let cfg = web.cfg();
        match cfg.merchants.get(&req.merchant) {
            None => Err((
                ErrorCode::UnknownMerchant,
                format!("no merchant {:?} on this switch", req.merchant),
            )),
            Some(m) => m
                .admit(
                    &req.merchant,
                    &req,
                    origin.as_deref(),
                    &ip.to_string(),
                    now_unix,
                )
                .map(|facts| {
                    (
                        facts,
                        m.max_calls,
                        m.calls_per_minute,
                        cfg.ip_max_calls,
                        cfg.ip_calls_per_minute,
                        cfg.ip,
                        cfg.reconnect_grace,
                    )
                }),
        }
    };
    let (facts, m_max, m_rate, ip_max, ip_rate, web_ip, grace) = match admitted {
        Ok(a) => a,
        Err((code, msg)) => return refuse(&web, ws, code, msg).await,
    };
    let limited = web
        .limits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit(
            Instant::now(),
            ip,
            ip_max,
            ip_rate,
            &facts.merchant,
            m_max,
            m_rate,
        );
    if let Err(msg) = limited {
        return refuse(&web, ws, ErrorCode::RateLimited, msg).await;
    }
    let n = web.next.fetch_add(1, Ordering::Relaxed);
    let key = random_hex(16);
    let id = format!("{n:x}{}", random_hex(4));
    let mut guard = CallGuard {
        web: web.clone(),
        ip,
        merchant: facts.merchant.clone(),
        port: None,
        id: id.clone(),
        call_id: String::new(),
        tap: None,
    };
    if key.is_empty() {
        return refuse(
            &web,
            ws,
            ErrorCode::Unavailable,
            "no randomness for call secrets".into(),
        )
        .await;
    }
    let Some(port) = web.ports.take() else {
        return refuse(
            &web,
            ws,
            ErrorCode::Unavailable,
            "the switch has no media ports left".into(),
        )
        .await;
    };
    guard.port = Some(port);
    let candidate = SocketAddr::new(web_ip, port);
    let ice = match crate::media::bind_ice(candidate) {
        Ok(s) => s,
        Err(e) => {
            warn!(%candidate, error = %e, "cannot bind a browser call's socket");
            return refuse(
                &web,
                ws,
                ErrorCode::Unavailable,
                "the switch cannot take calls right now".into(),
            )
            .await;
        }
    };
    let (peer, answer) = match BrowserPeer::accept(
        Instant::now().into_std(),
        &req.sdp,
        candidate,
        web.cert.as_ref(),
    ) {
        Ok(p) => p,
        Err(e) => return refuse(&web, ws, ErrorCode::BadOffer, e.to_string()).await,
    };
    let local = local_addr(n);
    // Leg A's SDP names the candidate's address: the media session that anchors it takes
    // the peer and its socket from the tap registered under that address.
    let leg = WebLeg::invite(&facts, local, &id, peer.inner_sdp(candidate, 1));
    let span = tracing::info_span!("web", call = %id, call_id = %leg.call_id(), merchant = %facts.merchant, link = %facts.link);
    guard.call_id = leg.call_id().to_owned();
    web.facts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            guard.call_id.clone(),
            LiveWeb {
                facts: facts.clone(),
                context: req.context.clone(),
                page_now: facts.page_url.clone(),
            },
        );
    let (chat_tx, chat_rx) = mpsc::channel(32);
    web.callers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(guard.call_id.clone(), chat_tx);
    // The call's media session runs the peer from here on (no task, channel or socket
    // between SRTP and the session); it tells us when the browser connects or goes.
    let (peer_tx, peer_events) = mpsc::unbounded_channel();
    let (renew_tx, renew_rx) = mpsc::channel(1);
    web.taps
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            candidate,
            crate::media::Tap {
                peer,
                ice,
                events: peer_tx,
                renew: Some(renew_rx),
            },
        );
    guard.tap = Some(candidate);
    let (sip_tx, sip_rx) = mpsc::channel(64);
    let (resume_tx, resume_rx) = mpsc::channel(1);
    if web.net.send(NetIn::LocalUp(local, sip_tx)).await.is_err() {
        return refuse(
            &web,
            ws,
            ErrorCode::Unavailable,
            "the switch is shutting down".into(),
        )
        .await;
    }
    web.live
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), (key.clone(), resume_tx));
    web.placed.fetch_add(1, Ordering::Relaxed);
    if let Some(s) = &web.storage {
        // What the call center's CRM may look up (by ANI, Call-ID or session), kept with the
        // call's record.
        s.record(crate::storage::CdrOp::Web(Box::new(
            crate::storage::WebRecord {
                call_id: leg.call_id().to_owned(),
                facts: crate::storage::WebCaller {
                    merchant: facts.merchant.clone(),
                    link: facts.link.clone(),
                    session: facts.session.clone(),
                    page_url: facts.page_url.clone(),
                    referrer: facts.referrer.clone(),
                    caller_ip: facts.caller_ip.clone(),
                },
                context: serde_json::to_string(&req.context).unwrap_or_default(),
                at: jiff::Timestamp::now().as_millisecond(),
            },
        )));
    }
    let mut call = WebCall {
        id: id.clone(),
        key: key.clone(),
        candidate,
        renew: renew_tx,
        moving: false,
        peer_gone: None,
        web: web.clone(),
        facts: facts.clone(),
        actions: Vec::new(),
        chat_rx,
        ws: Some(WidgetLink::new(ws)),
        leg,
        peer_events,
        local,
        web_net: web.net.clone(),
        grace,
        grace_until: None,
        last_state: None,
    };
    async move {
        info!(page = %facts.page_url, session = %facts.session, ip = %ip, "web call placed");
        let accepted = ServerMsg::Accepted {
            call: id,
            key,
            sdp: answer,
        };
        call.tell_widget(&accepted).await;
        call.run(sip_rx, resume_rx).await;
        drop(guard);
    }
    .instrument(span)
    .await;
}

struct WebCall {
    /// The call's id and secret (for `resume`).
    id: String,
    key: String,
    /// The browser's ICE candidate (a new page's peer gets the same).
    candidate: SocketAddr,
    /// Hands the media session a new page's peer.
    renew: mpsc::Sender<crate::media::Renewal>,
    /// The page said it is going away: its media closing is not a hang-up.
    moving: bool,
    /// The page's media closed (false) or was lost (true) while its WebSocket is still up:
    /// hung up at this time unless the WebSocket goes too (the page is moving).
    peer_gone: Option<(Instant, bool)>,
    /// The merchants' current configuration (an action is checked against it).
    web: Arc<WebShared>,
    facts: WebFacts,
    /// Actions the page was asked to do and has not answered: (id, answer by).
    actions: Vec<(u64, Instant)>,
    /// Chat and room news for the page (from the agent console).
    chat_rx: mpsc::Receiver<ServerMsg>,
    ws: Option<WidgetLink>,
    leg: WebLeg,
    /// The peer's state, from the media session that runs it.
    peer_events: mpsc::UnboundedReceiver<PeerOutput>,
    local: SocketAddr,
    web_net: mpsc::Sender<NetIn>,
    grace: Duration,
    grace_until: Option<Instant>,
    /// The last state told to the widget (told again after a resume).
    last_state: Option<ServerMsg>,
}

/// The widget's WebSocket, served by a task of its own: the call's loop, woken by every
/// media packet, must not poll the socket each time (tungstenite readies its read buffer on
/// every poll: that was a tenth of the CPU of a browser call).
struct WidgetLink {
    to_widget: mpsc::Sender<ServerMsg>,
    from_widget: mpsc::Receiver<String>,
}

impl WidgetLink {
    fn new(ws: WebSocket) -> WidgetLink {
        let (to_widget, out_rx) = mpsc::channel(16);
        let (in_tx, from_widget) = mpsc::channel(16);
        tokio::spawn(widget_pump(ws, in_tx, out_rx));
        WidgetLink {
            to_widget,
            from_widget,
        }
    }
}

/// Moves frames between a widget's WebSocket and its call until either side goes away;
/// a closed socket closes `in_tx`, a call that ends (drops its sender) closes the socket.
async fn widget_pump(
    mut ws: WebSocket,
    in_tx: mpsc::Sender<String>,
    mut out_rx: mpsc::Receiver<ServerMsg>,
) {
    loop {
        tokio::select! {
            m = next_text(&mut ws) => match m {
                Some(Ok(text)) => {
                    if in_tx.send(text).await.is_err() {
                        break;
                    }
                }
                Some(Err(())) => debug!("ignored a binary frame"),
                None => return,
            },
            o = out_rx.recv() => match o {
                Some(msg) => {
                    if !send(&mut ws, &msg).await {
                        return;
                    }
                }
                None => break,
            },
        }
    }
    let _ = ws.send(WsMessage::Close(None)).await;
}

async fn ws_next(ws: &mut Option<WidgetLink>) -> Option<String> {
    match ws {
        Some(w) => w.from_widget.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl WebCall {
    async fn tell_widget(&mut self, msg: &ServerMsg) {
        if let Some(ws) = &mut self.ws
            && ws.to_widget.send(msg.clone()).await.is_err()
        {
            self.lost_ws();
        }
    }

    fn lost_ws(&mut self) {
        // Its media went first: the page is going (the grace period decides).
        self.peer_gone = None;
        if self.ws.take().is_some() && !self.leg.is_terminated() {
            info!(
                grace_secs = self.grace.as_secs(),
                "widget connection lost: waiting for it to resume"
            );
            self.grace_until = Some(Instant::now() + self.grace);
        }
    }

    async fn run(
        &mut self,
        mut sip_rx: mpsc::Receiver<Bytes>,
        mut resume_rx: mpsc::Receiver<Resumed>,
    ) {
        self.pump().await;
        while !self.leg.is_terminated() {
            let wake = self
                .actions
                .iter()
                .map(|(_, t)| *t)
                .chain(self.grace_until)
                .chain(self.peer_gone.map(|(t, _)| t))
                .min();
            tokio::select! {
                m = ws_next(&mut self.ws) => match m {
                    Some(text) => match signal::parse(&text) {
                        Ok(ClientMsg::Hangup) => {
                            info!("hang-up from the widget");
                            self.leg.hangup();
                        }
                        Ok(ClientMsg::ActionResult { id, ok, error, detail }) => {
                            self.action_result(id, ok, &error, &detail);
                        }
                        Ok(ClientMsg::Chat { id, text }) => self.chat(id, text).await,
                        Ok(ClientMsg::ChatRead { id }) => {
                            if let Some(hub) = self.web.hub.get() {
                                hub.caller_read(self.leg.call_id(), &id);
                            }
                        }
                        Ok(ClientMsg::Moving) => {
                            info!("the page is going away: the call waits for the next one");
                            self.moving = true;
                        }
                        Ok(_) => debug!("ignored a widget message during the call"),
                        Err(e) => debug!(error = %e, "bad widget message"),
                    },
                    None => self.lost_ws(),
                },
                Some(ev) = self.peer_events.recv() => self.on_peer(ev),
                m = sip_rx.recv() => match m.map(parse_datagram) {
                    Some(Ok(msg)) => self.leg.handle(msg),
                    Some(Err(e)) => debug!(error = %e, "unparseable message from the core"),
                    None => {
                        warn!("the core is gone: ending the browser call");
                        break;
                    }
                },
                Some((ws, sdp, page)) = resume_rx.recv() => self.resumed(ws, sdp, page).await,
                Some(m) = self.chat_rx.recv() => self.tell_widget(&m).await,
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    self.actions_late(now);
                    if let Some((at, lost)) = self.peer_gone
                        && at <= now
                    {
                        self.peer_gone = None;
                        if lost {
                            info!("browser media gone (ICE lost): hanging up");
                            self.leg.hangup_with(Some(GONE));
                        } else {
                            info!("the browser closed its connection: hanging up");
                            self.leg.hangup();
                        }
                    }
                    if self.grace_until.is_some_and(|g| g <= now) {
                        info!("widget did not come back: hanging up");
                        self.grace_until = None;
                        self.leg.hangup_with(Some(GONE));
                    }
                }
            }
            self.pump().await;
        }
        self.pump().await;
        let _ = self.web_net.send(NetIn::LocalDown(self.local)).await;
        // Dropping the link lets its pump deliver what is queued, then close the socket.
        self.ws = None;
    }

    /// The widget takes the call back: the same page after a dropped WebSocket, or (with an
    /// offer) the tab's next page with a new peer, swapped into the media session.
    async fn resumed(&mut self, ws: WebSocket, sdp: Option<String>, page: Option<String>) {
        if let Some(page) = page {
            self.moved_to(page);
        }
        if let Some(sdp) = sdp {
            let (peer, answer) = match BrowserPeer::accept(
                Instant::now().into_std(),
                &sdp,
                self.candidate,
                self.web.cert.as_ref(),
            ) {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "the new page's offer cannot be answered");
                    let _ = WidgetLink::new(ws)
                        .to_widget
                        .send(ServerMsg::error(ErrorCode::BadOffer, e.to_string()))
                        .await;
                    return;
                }
            };
            // Events of the old peer still queued are dropped with its channel.
            let (events, rx) = mpsc::unbounded_channel();
            self.peer_events = rx;
            if self
                .renew
                .send(crate::media::Renewal { peer, events })
                .await
                .is_err()
            {
                warn!("the call's media session is gone");
                return;
            }
            info!("the tab's next page took the call back");
            self.ws = Some(WidgetLink::new(ws));
            let accepted = ServerMsg::Accepted {
                call: self.id.clone(),
                key: self.key.clone(),
                sdp: answer,
            };
            self.tell_widget(&accepted).await;
        } else {
            info!("widget resumed the call");
            self.ws = Some(WidgetLink::new(ws));
        }
        self.moving = false;
        self.peer_gone = None;
        self.grace_until = None;
        if let Some(state) = self.last_state.clone() {
            self.tell_widget(&state).await;
        }
        if let Some(hub) = self.web.hub.get() {
            hub.caller_back(self.leg.call_id());
        }
    }

    /// The tab's next page: the agent's screen pop follows it (an address a merchant's page
    /// could have: http(s), short, no control characters).
    fn moved_to(&mut self, page: String) {
        let ok = page.len() <= 2048
            && (page.starts_with("https://") || page.starts_with("http://"))
            && !page.chars().any(char::is_control);
        if !ok {
            debug!("ignored a resume's page address");
            return;
        }
        if let Some(live) = self
            .web
            .facts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(self.leg.call_id())
        {
            if live.page_now == page {
                return;
            }
            live.page_now = page.clone();
            live.context.trail.push(page);
            let extra = live.context.trail.len().saturating_sub(TRAIL);
            live.context.trail.drain(..extra);
        }
        if let Some(hub) = self.web.hub.get() {
            hub.page_moved(self.leg.call_id());
        }
    }

    /// A chat message from the caller: to the agent's console, or refused in words.
    async fn chat(&mut self, id: String, text: String) {
        let refused = match self.web.hub.get() {
            Some(hub) => hub.caller_says(self.leg.call_id(), id, text),
            None => Some(ServerMsg::error(
                ErrorCode::ChatRefused,
                "no agent is in a chat with you",
            )),
        };
        if let Some(msg) = refused {
            self.tell_widget(&msg).await;
        }
    }

    /// A leg app asks something of the page: checked against the merchant's configuration,
    /// then handed to the page, which has [`ACTION_WAIT`] to answer.
    async fn action(&mut self, id: u64, body: &[u8]) {
        let checked = {
            let cfg = self.web.cfg();
            match cfg.merchants.get(&self.facts.merchant) {
                Some(m) => switchboard_webrtc::action::resolve(m, &self.facts, body),
                None => Err(format!(
                    "merchant {} is no longer configured",
                    self.facts.merchant
                )),
            }
        };
        let action = match checked {
            Ok(a) => a,
            Err(why) => {
                info!(%why, "action refused");
                self.leg.answer_action(id, Err((403, &why)));
                return;
            }
        };
        if self.ws.is_none() {
            self.leg
                .answer_action(id, Err((480, "the caller's page is not connected")));
            return;
        }
        info!(action = %action.action, url = action.url.as_deref().unwrap_or(""), "action to the page");
        self.actions.push((id, Instant::now() + ACTION_WAIT));
        self.tell_widget(&ServerMsg::Action { id, action }).await;
    }

    /// The page's answer to an action.
    fn action_result(&mut self, id: u64, ok: bool, error: &str, detail: &str) {
        let Some(i) = self.actions.iter().position(|(a, _)| *a == id) else {
            debug!(id, "answer to no pending action (late?)");
            return;
        };
        self.actions.swap_remove(i);
        info!(id, ok, %error, %detail, "the page answered an action");
        let detail: String = detail.chars().take(200).collect();
        if ok {
            self.leg.answer_action(id, Ok(&detail));
        } else {
            let why = if error.is_empty() {
                "the page could not do it"
            } else {
                error
            };
            self.leg
                .answer_action(id, Err((500, &format!("the caller's browser: {why}"))));
        }
    }

    /// Actions the page did not answer in time fail.
    fn actions_late(&mut self, now: Instant) {
        let (late, pending): (Vec<_>, Vec<_>) =
            self.actions.drain(..).partition(|(_, t)| *t <= now);
        self.actions = pending;
        for (id, _) in late {
            info!(id, "the page did not answer an action in time");
            self.leg.answer_action(
                id,
                Err((408, "the caller's page did not answer within 500 ms")),
            );
        }
    }

    /// Moves what the peer and the leg produced to where it goes.
    /// The peer's state, as the media session running it reports it.
    fn on_peer(&mut self, ev: PeerOutput) {
        match ev {
            PeerOutput::Connected => info!("browser media connected (ICE + DTLS)"),
            // The page is going away: its peer goes with it, the next page brings another.
            PeerOutput::Closed | PeerOutput::Disconnected if self.moving || self.ws.is_none() => {
                info!(
                    "the page's media connection went away with its page: waiting for the next one"
                );
            }
            // The page may be going away without having said so (a browser that closes its
            // connections before `pagehide`): its WebSocket closing soon says it was.
            PeerOutput::Closed => {
                self.peer_gone
                    .get_or_insert((Instant::now() + PAGE_GONE_WAIT, false));
            }
            PeerOutput::Disconnected => {
                self.peer_gone
                    .get_or_insert((Instant::now() + PAGE_GONE_WAIT, true));
            }
            PeerOutput::Transmit(..) | PeerOutput::Rtp(_) => {}
        }
    }

    /// Moves what the leg produced: SIP to the core, events to the widget.
    async fn pump(&mut self) {
        self.send_to_core().await;
        while let Some(e) = self.leg.poll_event() {
            let msg = match e {
                LegEvent::Ringing => ServerMsg::Ringing,
                LegEvent::EarlyMedia(_) => ServerMsg::EarlyMedia,
                LegEvent::Answered(_) => ServerMsg::Answered,
                LegEvent::MediaMoved(_) => continue,
                LegEvent::Action { id, body } => {
                    self.action(id, &body).await;
                    continue;
                }
                LegEvent::Ended { reason, code, q850 } => {
                    info!(?reason, code, ?q850, "web call ended");
                    ServerMsg::Hangup {
                        reason,
                        code,
                        message: reason.text().to_owned(),
                    }
                }
            };
            self.last_state = Some(msg.clone());
            self.tell_widget(&msg).await;
        }
        // What answering the events produced (an action refused at once).
        self.send_to_core().await;
    }

    async fn send_to_core(&mut self) {
        while let Some(b) = self.leg.poll_transmit() {
            if self
                .web_net
                .send(NetIn::Local(b, self.local))
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_are_unique_and_never_a_network_address() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..100_000u32 {
            let a = local_addr(n);
            assert!(seen.insert(a), "{a} twice");
            assert!(matches!(a.ip(), IpAddr::V4(v) if v.octets()[0] == 0 && !v.is_unspecified()));
        }
    }

    #[test]
    fn limits_count_concurrency_and_rate_per_address_and_merchant() {
        let mut l = Limits::default();
        let t = Instant::now();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        // Two at once from one address.
        assert!(l.admit(t, ip, 2, 10, "acme", 100, 100).is_ok());
        assert!(l.admit(t, ip, 2, 10, "acme", 100, 100).is_ok());
        let e = l.admit(t, ip, 2, 10, "acme", 100, 100).unwrap_err();
        assert!(e.contains("at once from your network"), "{e}");
        // Another address is not affected; the merchant's cap is.
        assert!(l.admit(t, other, 2, 10, "acme", 3, 100).is_ok());
        let e = l.admit(t, other, 2, 10, "acme", 3, 100).unwrap_err();
        assert!(e.contains("to this merchant"), "{e}");
        // Hang-ups free the slots; the per-minute count stays until the minute is over.
        l.release(ip, "acme");
        l.release(ip, "acme");
        for _ in 0..8 {
            assert!(l.admit(t, ip, 100, 10, "acme", 100, 100).is_ok());
            l.release(ip, "acme");
        }
        let e = l.admit(t, ip, 100, 10, "acme", 100, 100).unwrap_err();
        assert!(e.contains("last minute"), "{e}");
        assert!(
            l.admit(t + Duration::from_secs(61), ip, 100, 10, "acme", 100, 100)
                .is_ok()
        );
    }
}
