//! The agent console's shell (docs/console.md): log-in sessions (cookie + CSRF token),
//! the console's WebSocket, the SIP face of a console that answers calls in the browser
//! (a [`CalleeLeg`] per ringing call on the console's own Local address, a str0m peer per
//! answered one), and the chat rooms between agents and callers. Who is logged in and which
//! calls are bound to whom is the agent module's [`Desk`](switchboard_agent::Desk).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_agent::{
    AgentInfo, ConsoleId, LoginLimiter, Note, Notify, SharedDesk, Status, Via, lock,
};
use switchboard_core::CallRef;
use switchboard_sip::{Message, parse_datagram};
use switchboard_webrtc::signal::MAX_CHAT;
use switchboard_webrtc::{BrowserPeer, CalleeEvent, CalleeLeg, ErrorCode, PeerOutput, ServerMsg};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::config::Agents as AgentsConf;
use crate::shell::{Command, NetIn};
use crate::web::{WebShared, local_addr, random_hex};

/// The session cookie.
const COOKIE: &str = "sb_agent";
/// How long a failed login's window lasts.
const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Chat messages per side per window.
const CHAT_RATE: (usize, Duration) = (20, Duration::from_secs(10));
/// Messages of a room kept in memory for a console that joins late.
const ROOM_LINES: usize = 200;
/// The same words for an unknown agent and a wrong password.
const BAD_LOGIN: &str = "wrong agent ID or password";
/// A console's WebSocket frames at most (an SDP offer is ~4 KB).
const MAX_FRAME: usize = 32 * 1024;
/// Messages waiting for one console's WebSocket at most.
const TO_CONSOLE: usize = 256;
/// How long the console's page may take to say hello.
const HELLO_WAIT: Duration = Duration::from_secs(10);

/// A logged-in agent.
#[derive(Debug, Clone)]
struct Session {
    agent: AgentInfo,
    /// The password hash it logged in with (a changed password ends the session).
    phc: String,
    csrf: String,
    code: String,
    last_seen: Instant,
    /// Available or away, kept across the session's consoles (a reloaded page stays away).
    status: Status,
}

/// Sessions one agent may have at once (each holds a channel code).
const SESSIONS_PER_AGENT: usize = 5;
/// Password checks running at once (argon2id: 19 MiB and ~20 ms each); more wait their turn
/// with a 429.
const VERIFIES: usize = 2;

/// What a console's task is told.
#[derive(Debug)]
enum ToConsole {
    /// A frame for the page.
    Json(Value),
}

/// A chat room: one call, its consoles, its caller.
#[derive(Debug)]
struct Room {
    a_call_id: Arc<str>,
    consoles: Vec<ConsoleId>,
    agent: (String, String),
    lines: Vec<Value>,
    rate: [Vec<Instant>; 2],
}

/// A connected console: its session's token, its news, and its close (never dropped: a
/// full news queue cannot keep a logged-out console open).
type Listed = (
    String,
    mpsc::Sender<ToConsole>,
    mpsc::UnboundedSender<&'static str>,
);

/// The console's shared state.
pub struct ConsoleHub {
    web: Arc<WebShared>,
    desk: SharedDesk,
    cfg: RwLock<AgentsConf>,
    db: PathBuf,
    cmd: mpsc::Sender<Command>,
    sessions: Mutex<HashMap<String, Session>>,
    limiter: Mutex<LoginLimiter>,
    consoles: Mutex<HashMap<ConsoleId, Listed>>,
    verifies: Arc<tokio::sync::Semaphore>,
    rooms: Mutex<HashMap<CallRef, Room>>,
}

impl std::fmt::Debug for ConsoleHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleHub").finish_non_exhaustive()
    }
}

/// The desk's notes, to the hub's task.
#[derive(Debug)]
struct HubNotify(mpsc::UnboundedSender<Note>);

impl Notify for HubNotify {
    fn note(&self, note: Note) {
        let _ = self.0.send(note);
    }
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl ConsoleHub {
    /// The hub; its task delivers the desk's notes.
    pub fn start(
        web: Arc<WebShared>,
        desk: SharedDesk,
        cfg: AgentsConf,
        db: PathBuf,
        cmd: mpsc::Sender<Command>,
    ) -> Arc<ConsoleHub> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&desk).set_notify(Arc::new(HubNotify(tx)));
        let hub = Arc::new(ConsoleHub {
            limiter: Mutex::new(LoginLimiter::new(cfg.max_failures, LOGIN_WINDOW)),
            cfg: RwLock::new(cfg),
            web,
            desk,
            db,
            cmd,
            sessions: Mutex::new(HashMap::new()),
            consoles: Mutex::new(HashMap::new()),
            verifies: Arc::new(tokio::sync::Semaphore::new(VERIFIES)),
            rooms: Mutex::new(HashMap::new()),
        });
        let h = hub.clone();
        tokio::spawn(async move {
            while let Some(note) = rx.recv().await {
                h.on_note(note);
            }
        });
        let h = hub.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                h.expire();
                h.recheck().await;
            }
        });
        hub
    }

    /// A reload's new settings: sessions stay, but those of conf/ agents that changed or
    /// went end.
    pub fn reconfigure(&self, cfg: AgentsConf) {
        lock(&self.desk).set_queues(cfg.queues.clone());
        let changed: Vec<String> = {
            let old = self.cfg();
            old.accounts
                .iter()
                .filter(|(id, (a, phc))| {
                    cfg.accounts
                        .get(*id)
                        .is_none_or(|(na, nphc)| na != a || nphc != phc)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        *self.cfg.write().unwrap_or_else(PoisonError::into_inner) = cfg;
        for id in changed {
            agent_changed(self, &id);
        }
    }

    /// Sessions of store agents that were removed or changed since they logged in (by the CLI,
    /// which writes the store directly) end.
    async fn recheck(&self) {
        let ids: Vec<(String, AgentInfo, String)> = {
            let conf = self.cfg();
            guard(&self.sessions)
                .values()
                .filter(|s| !conf.accounts.contains_key(&s.agent.id))
                .map(|s| (s.agent.id.clone(), s.agent.clone(), s.phc.clone()))
                .collect()
        };
        if ids.is_empty() {
            return;
        }
        let db = self.db.clone();
        let Ok(Ok(rows)) =
            tokio::task::spawn_blocking(move || crate::storage::agent_list(&db)).await
        else {
            return;
        };
        for (id, info, phc) in ids {
            let now = rows.iter().find(|r| r.id == id);
            if now.is_none_or(|r| agent_info(r) != info || r.password != phc) {
                info!(agent = %id, "the agent's account changed: its sessions end");
                agent_changed(self, &id);
            }
        }
    }

    fn cfg(&self) -> std::sync::RwLockReadGuard<'_, AgentsConf> {
        self.cfg.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn tell(&self, console: ConsoleId, msg: Value) {
        if let Some((_, tx, _)) = guard(&self.consoles).get(&console)
            && tx.try_send(ToConsole::Json(msg)).is_err()
        {
            // A console that reads nothing loses news, never the switch's memory.
            warn!(
                console,
                "a console is not reading: a message to it is dropped"
            );
        }
    }

    fn tell_caller(&self, a_call_id: &str, msg: ServerMsg) {
        let tx = guard(&self.web.callers).get(a_call_id).cloned();
        if let Some(tx) = tx {
            // Bounded: a page that reads nothing loses news, never the switch's memory.
            let _ = tx.try_send(msg);
        }
    }

    /// Sessions idle too long end; their consoles are closed.
    fn expire(&self) {
        let idle = self.cfg().idle_timeout;
        let now = Instant::now();
        // A connected console is an agent at work (waiting for calls, on a long one).
        let connected: std::collections::HashSet<String> = guard(&self.consoles)
            .values()
            .map(|(t, _, _)| t.clone())
            .collect();
        let gone = self.take_sessions(|k, v| {
            !connected.contains(k) && now.duration_since(v.last_seen) >= idle
        });
        for (token, s) in gone {
            info!(agent = %s.agent.id, "console session expired");
            self.end_session(&token, &s, "your session expired: log in again");
        }
    }

    /// Removes the sessions `which` picks (by token and session) and returns them.
    fn take_sessions(&self, which: impl Fn(&str, &Session) -> bool) -> Vec<(String, Session)> {
        let mut s = guard(&self.sessions);
        let keys: Vec<String> = s
            .iter()
            .filter(|(k, v)| which(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| s.remove(&k).map(|v| (k, v)))
            .collect()
    }

    fn end_session(&self, token: &str, s: &Session, why: &'static str) {
        lock(&self.desk).release_code(&s.code);
        for (t, _, close) in guard(&self.consoles).values() {
            if t == token {
                let _ = close.send(why);
            }
        }
    }

    /// The session of a request's cookie, touched.
    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let token = cookie(headers)?;
        let mut s = guard(&self.sessions);
        let v = s.get_mut(&token)?;
        let connected = guard(&self.consoles).values().any(|(t, _, _)| *t == token);
        if !connected && Instant::now().duration_since(v.last_seen) >= self.cfg().idle_timeout {
            return None;
        }
        v.last_seen = Instant::now();
        Some((token, v.clone()))
    }

    /// An agent by ID: conf/ first, then the store. With its password hash.
    async fn find_agent(&self, id: &str) -> Option<(AgentInfo, String)> {
        if let Some(a) = self.cfg().accounts.get(id) {
            return Some(a.clone());
        }
        let db = self.db.clone();
        let id = id.to_owned();
        let row = tokio::task::spawn_blocking(move || crate::storage::agent_get(&db, &id))
            .await
            .ok()?
            .map_err(|e| warn!(error = %e, "cannot read the agents"))
            .ok()??;
        Some((agent_info(&row), row.password))
    }

    /// A call bound to a console, or its end.
    fn on_note(&self, note: Note) {
        match note {
            Note::Bound {
                console,
                call,
                a_call_id,
                via,
            } => {
                let token = guard(&self.consoles)
                    .get(&console)
                    .map(|(t, _, _)| t.clone());
                let agent =
                    token.and_then(|t| guard(&self.sessions).get(&t).map(|s| s.agent.clone()));
                let Some(agent) = agent else { return };
                let (fresh, lines) = {
                    let mut rooms = guard(&self.rooms);
                    let fresh = !rooms.contains_key(&call);
                    let room = rooms.entry(call).or_insert_with(|| Room {
                        a_call_id: a_call_id.clone(),
                        consoles: Vec::new(),
                        agent: (agent.id.clone(), agent.name.clone()),
                        lines: Vec::new(),
                        rate: [Vec::new(), Vec::new()],
                    });
                    if !room.consoles.contains(&console) {
                        room.consoles.push(console);
                    }
                    (fresh, room.lines.clone())
                };
                info!(%call, agent = %agent.id, ?via, "call bound to a console");
                self.tell(
                    console,
                    json!({"type": "bound", "call": &*a_call_id, "via": via, "pop": self.pop(call, &a_call_id)}),
                );
                for l in lines {
                    self.tell(console, l);
                }
                if fresh {
                    self.tell_caller(
                        &a_call_id,
                        ServerMsg::ChatOpen {
                            agent: agent.name.clone(),
                        },
                    );
                }
            }
            Note::Ended {
                console, a_call_id, ..
            } => {
                self.tell(
                    console,
                    json!({"type": "ended", "call": &*a_call_id, "reason": "the call has ended"}),
                );
            }
            Note::Closed { call, a_call_id } => {
                if guard(&self.rooms).remove(&call).is_some() {
                    self.tell_caller(
                        &a_call_id,
                        ServerMsg::ChatClosed {
                            reason: "the call has ended".into(),
                        },
                    );
                }
            }
        }
    }

    /// The screen pop of a call.
    fn pop(&self, call: CallRef, a_call_id: &str) -> Value {
        let (started, ani) = lock(&self.desk)
            .live(call)
            .map(|l| (l.started_ms, l.ani.clone()))
            .unwrap_or((now_ms(), None));
        let mut pop = json!({"started_at": started, "ani": ani});
        if let Some(w) = self.web.live_web(a_call_id) {
            let f = &w.facts;
            pop = json!({
                "merchant": f.merchant, "link": f.link, "session": f.session,
                "page_url": w.page_now, "referrer": f.referrer, "caller_ip": f.caller_ip,
                "trail": w.context.trail, "cookies": w.context.cookies, "fields": w.context.fields,
                "ani": ani, "started_at": started, "pages": self.web.page_names(&f.merchant),
            });
        }
        pop
    }

    /// The shopper moved to another page: the consoles' screen pops follow.
    pub fn page_moved(&self, a_call_id: &str) {
        let found = lock(&self.desk).live_by_call_id(a_call_id).map(|(r, _)| r);
        let Some(call) = found else { return };
        let consoles = guard(&self.rooms)
            .get(&call)
            .map(|r| r.consoles.clone())
            .unwrap_or_default();
        let pop = self.pop(call, a_call_id);
        for c in consoles {
            self.tell(c, json!({"type": "pop", "call": a_call_id, "pop": pop}));
        }
    }

    /// Checks a chat message's size and its side's rate; records and returns the line.
    fn chat_line(
        &self,
        call: CallRef,
        from_agent: Option<&str>,
        id: &str,
        text: &str,
    ) -> Result<(Arc<str>, Vec<ConsoleId>, Value, i64), String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty message".into());
        }
        if text.chars().count() > MAX_CHAT || id.len() > 64 {
            return Err(format!("a message has at most {MAX_CHAT} characters"));
        }
        let mut rooms = guard(&self.rooms);
        let room = rooms.get_mut(&call).ok_or("the chat has ended")?;
        let now = Instant::now();
        let rate = &mut room.rate[usize::from(from_agent.is_some())];
        rate.retain(|t| now.duration_since(*t) < CHAT_RATE.1);
        if rate.len() >= CHAT_RATE.0 {
            return Err(format!(
                "at most {} messages in {} seconds: wait a moment",
                CHAT_RATE.0,
                CHAT_RATE.1.as_secs()
            ));
        }
        rate.push(now);
        let at = now_ms();
        let from = if from_agent.is_some() {
            "agent"
        } else {
            "caller"
        };
        let line = json!({"type": "chat", "call": &*room.a_call_id, "id": id, "from": from, "text": text, "at": at});
        room.lines.push(line.clone());
        let extra = room.lines.len().saturating_sub(ROOM_LINES);
        room.lines.drain(..extra);
        // To the call's record and the merchant's `chat` webhook, through the call's events.
        let said = Command::Chat {
            call,
            from,
            agent: from_agent.map(str::to_owned),
            text: text.to_owned(),
        };
        if self.cmd.try_send(said).is_err() {
            warn!(%call, "the switch is busy: a chat message is not recorded");
        }
        Ok((room.a_call_id.clone(), room.consoles.clone(), line, at))
    }

    /// A message from the caller's page. `Some`: the refusal to tell the page.
    pub fn caller_says(&self, a_call_id: &str, id: String, text: String) -> Option<ServerMsg> {
        let found = lock(&self.desk).live_by_call_id(a_call_id).map(|(r, _)| r);
        let Some(call) = found else {
            return Some(ServerMsg::error(
                ErrorCode::ChatRefused,
                "no agent is in a chat with you",
            ));
        };
        if !guard(&self.rooms).contains_key(&call) {
            return Some(ServerMsg::error(
                ErrorCode::ChatRefused,
                "no agent is in a chat with you",
            ));
        }
        match self.chat_line(call, None, &id, &text) {
            Ok((_, consoles, line, _)) => {
                for c in consoles {
                    self.tell(c, line.clone());
                }
                None
            }
            Err(why) => Some(ServerMsg::error(ErrorCode::ChatLimit, why)),
        }
    }

    /// The caller's page came back (a new page of the tab): its chat pane opens again.
    pub fn caller_back(&self, a_call_id: &str) {
        let found = lock(&self.desk).live_by_call_id(a_call_id).map(|(r, _)| r);
        let Some(call) = found else { return };
        let agent = guard(&self.rooms).get(&call).map(|r| r.agent.1.clone());
        if let Some(agent) = agent {
            self.tell_caller(a_call_id, ServerMsg::ChatOpen { agent });
        }
    }

    /// The caller's page has the agent's message `id`.
    pub fn caller_read(&self, a_call_id: &str, id: &str) {
        let found = lock(&self.desk).live_by_call_id(a_call_id).map(|(r, _)| r);
        let Some(call) = found else { return };
        let consoles = guard(&self.rooms)
            .get(&call)
            .map(|r| r.consoles.clone())
            .unwrap_or_default();
        for c in consoles {
            self.tell(c, json!({"type": "delivered", "call": a_call_id, "id": id}));
        }
    }

    /// The room of a call a console names by leg A's Call-ID, if the console is in it.
    fn room_of(&self, console: ConsoleId, a_call_id: &str) -> Option<CallRef> {
        guard(&self.rooms)
            .iter()
            .find(|(_, r)| &*r.a_call_id == a_call_id && r.consoles.contains(&console))
            .map(|(c, _)| *c)
    }
}

/// An agent as the store keeps it, as the desk sees it.
pub fn agent_info(row: &crate::storage::AgentRow) -> AgentInfo {
    AgentInfo {
        id: row.id.clone(),
        name: row.name.clone(),
        role: switchboard_agent::Role::parse(&row.role).unwrap_or_default(),
        merchants: row.merchants.clone(),
        queues: row.queues.clone(),
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(COOKIE)?
                .strip_prefix('=')
                .map(str::to_owned)
        })
        .filter(|t| !t.is_empty() && t.len() <= 128)
}

/// The request came from a page of this same site (or from no page: a CLI, a test).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

fn csrf_ok(headers: &HeaderMap, s: &Session) -> bool {
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| switchboard_webrtc::token::constant_eq(t, &s.csrf))
}

fn err(status: StatusCode, words: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": words})),
    )
        .into_response()
}

/// The console's routes.
pub fn routes(hub: Arc<ConsoleHub>) -> Router {
    Router::new()
        .route("/agent", get(page))
        .route("/agent/", get(page))
        .route("/agent/console.js", get(script))
        .route("/agent/login", post(login))
        .route("/agent/logout", post(logout))
        .route("/agent/api/me", get(me))
        .route("/agent/api/calls/{id}", get(call_pop))
        .route("/agent/ws", get(ws))
        .with_state(hub)
}

fn hardened(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn page() -> Response {
    hardened(
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            switchboard_agent::assets::CONSOLE_HTML,
        )
            .into_response(),
    )
}

async fn script() -> Response {
    hardened(
        (
            [
                (
                    header::CONTENT_TYPE,
                    "application/javascript; charset=utf-8",
                ),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            switchboard_agent::assets::CONSOLE_JS,
        )
            .into_response(),
    )
}

fn agent_json(s: &Session) -> Value {
    json!({"agent": {"id": s.agent.id, "name": s.agent.name, "role": s.agent.role, "merchants": s.agent.merchants}, "csrf": s.csrf})
}

async fn me(State(hub): State<Arc<ConsoleHub>>, headers: HeaderMap) -> Response {
    match hub.session(&headers) {
        Some((_, s)) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(agent_json(&s)),
        )
            .into_response(),
        None => err(StatusCode::UNAUTHORIZED, "not logged in"),
    }
}

/// `GET /agent/api/calls/{id}`: the screen pop and chat so far of a call bound to this
/// session (a supervisor's: any live call of their merchants). Any other call is 404.
async fn call_pop(
    State(hub): State<Arc<ConsoleHub>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some((_, s)) = hub.session(&headers) else {
        return err(StatusCode::UNAUTHORIZED, "not logged in");
    };
    let found = {
        let desk = lock(&hub.desk);
        let mine = desk
            .session_calls(&s.code)
            .into_iter()
            .find(|(_, a)| **a == *id)
            .map(|(r, _)| r);
        mine.or_else(|| {
            let (r, live) = desk.live_by_call_id(&id)?;
            (s.agent.role != switchboard_agent::Role::Agent
                && !live.merchant.is_empty()
                && s.agent.serves(&live.merchant))
            .then_some(r)
        })
    };
    let Some(call) = found else {
        return err(StatusCode::NOT_FOUND, "no such call of yours");
    };
    let chat = guard(&hub.rooms)
        .get(&call)
        .map(|r| r.lines.clone())
        .unwrap_or_default();
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"call": id, "pop": hub.pop(call, &id), "chat": chat})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    id: String,
    password: String,
}

async fn login(
    State(hub): State<Arc<ConsoleHub>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // JSON only (a cross-site form cannot send it without CORS) and from this site's pages.
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json_body || !same_origin(&headers) {
        return err(StatusCode::FORBIDDEN, "log in from the console's own page");
    }
    if body.len() > 4096 {
        return err(StatusCode::PAYLOAD_TOO_LARGE, "too long");
    }
    let Ok(form) = serde_json::from_slice::<LoginForm>(&body) else {
        return err(
            StatusCode::BAD_REQUEST,
            "send {\"id\": ..., \"password\": ...}",
        );
    };
    let id = form.id.trim().to_owned();
    if id.is_empty() || id.len() > 64 {
        return err(StatusCode::UNAUTHORIZED, BAD_LOGIN);
    }
    let ip = from.ip();
    if let Err(wait) = guard(&hub.limiter).check(Instant::now().into_std(), ip, &id) {
        info!(%ip, agent = %id, "login refused: too many failures");
        let mut r = err(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many failed log-ins: try again in {} s", wait.as_secs()),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    // Counted as a failure before the check and given back after a good one: parallel
    // guesses cannot slip past the limit while their checks run.
    guard(&hub.limiter).failed(Instant::now().into_std(), ip, &id);
    let Ok(_permit) = hub.verifies.clone().try_acquire_owned() else {
        let mut r = err(
            StatusCode::TOO_MANY_REQUESTS,
            "the switch is busy checking other log-ins: try again in a second",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let found = hub.find_agent(&id).await;
    let (stored, agent) = match &found {
        Some((a, phc)) => (Some(phc.clone()), Some(a.clone())),
        None => (None, None),
    };
    let password = form.password;
    // argon2 is ~20 ms of CPU: off the runtime's threads. The same work with no agent.
    let ok = tokio::task::spawn_blocking(move || {
        switchboard_agent::password::verify(&password, stored.as_deref())
    })
    .await
    .unwrap_or(false);
    let Some(agent) = agent.filter(|_| ok) else {
        info!(%ip, agent = %id, "login failed");
        return err(StatusCode::UNAUTHORIZED, BAD_LOGIN);
    };
    guard(&hub.limiter).succeeded(ip, &id);
    let phc = found.map(|(_, p)| p).unwrap_or_default();
    let open = guard(&hub.sessions)
        .values()
        .filter(|s| s.agent.id == agent.id)
        .count();
    if open >= SESSIONS_PER_AGENT {
        return err(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "agent {} has {open} sessions open: log out of one first",
                agent.id
            ),
        );
    }
    let digits = hub.cfg().code_digits;
    let (token, csrf) = (random_hex(32), random_hex(16));
    if token.is_empty() {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "no randomness for sessions",
        );
    }
    let Some(code) = lock(&hub.desk).new_code(digits) else {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "every channel code is in use: raise [agents] code_digits",
        );
    };
    let s = Session {
        agent,
        phc,
        csrf,
        code,
        last_seen: Instant::now(),
        status: Status::Available,
    };
    info!(%ip, agent = %s.agent.id, "agent logged in");
    let body = agent_json(&s);
    guard(&hub.sessions).insert(token.clone(), s);
    let secure = if hub.cfg().secure_cookie {
        "; Secure"
    } else {
        ""
    };
    let set = format!("{COOKIE}={token}; Path=/agent; HttpOnly; SameSite=Strict{secure}");
    let mut r = ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&set) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(hub): State<Arc<ConsoleHub>>, headers: HeaderMap) -> Response {
    let Some((token, s)) = hub.session(&headers) else {
        return err(StatusCode::UNAUTHORIZED, "not logged in");
    };
    if !csrf_ok(&headers, &s) {
        return err(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token");
    }
    guard(&hub.sessions).remove(&token);
    hub.end_session(&token, &s, "logged out");
    info!(agent = %s.agent.id, "agent logged out");
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sb_agent=; Path=/agent; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// An agent account changed or went (admin API, CLI through a reload): its sessions end.
pub fn agent_changed(hub: &ConsoleHub, id: &str) {
    for (t, s) in hub.take_sessions(|_, v| v.agent.id == id) {
        hub.end_session(&t, &s, "your account changed: log in again");
    }
}

async fn ws(
    State(hub): State<Arc<ConsoleHub>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Cross-site WebSocket hijacking: the page must be this site's, with the cookie.
    if !same_origin(&headers) {
        return err(StatusCode::FORBIDDEN, "the console's own page only");
    }
    let Some((token, s)) = hub.session(&headers) else {
        return err(StatusCode::UNAUTHORIZED, "not logged in");
    };
    upgrade
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("console", agent = %s.agent.id);
            console(hub, socket, token, s).instrument(span)
        })
}

/// A call ringing at or answered by this console.
struct ConsoleCall {
    leg: CalleeLeg,
    call: Option<CallRef>,
    a_call_id: String,
    port: Option<u16>,
    tap: Option<SocketAddr>,
    answered: bool,
    /// The core ACKed the answer (the call is this console's).
    confirmed: bool,
}

/// One console's WebSocket: hello, then its calls until it closes or its session ends.
async fn console(hub: Arc<ConsoleHub>, mut ws: WebSocket, token: String, s: Session) {
    let hello = tokio::time::timeout(HELLO_WAIT, ws.recv()).await;
    let ok = matches!(&hello, Ok(Some(Ok(WsMessage::Text(t))))
    if serde_json::from_str::<Value>(t).ok().is_some_and(|v| {
        v["type"] == "hello" && v["csrf"].as_str().is_some_and(|c| switchboard_webrtc::token::constant_eq(c, &s.csrf))
    }));
    if !ok {
        let _ = ws
            .send(WsMessage::Text(json!({"type": "error", "message": "say hello with the session's CSRF token first"}).to_string().into()))
            .await;
        return;
    }
    let n = hub.web.next.fetch_add(1, Ordering::Relaxed);
    let local = local_addr(n);
    let (sip_tx, mut sip_rx) = mpsc::channel::<Bytes>(64);
    if hub
        .web
        .net
        .send(NetIn::LocalUp(local, sip_tx))
        .await
        .is_err()
    {
        return;
    }
    let (tx, mut rx) = mpsc::channel(TO_CONSOLE);
    let (close_tx, mut close_rx) = mpsc::unbounded_channel();
    let status = guard(&hub.sessions)
        .get(&token)
        .map_or(Status::Available, |v| v.status);
    let id = lock(&hub.desk).register(
        Instant::now().into_std(),
        s.agent.clone(),
        &s.code,
        local,
        status,
    );
    guard(&hub.consoles).insert(id, (token.clone(), tx, close_tx));
    // The session's calls (a reloaded page): their notes may have gone out before this
    // console was listed.
    let again = lock(&hub.desk).session_calls(&s.code);
    for (call, a_call_id) in again {
        hub.on_note(Note::Bound {
            console: id,
            call,
            a_call_id,
            via: Via::Code,
        });
    }
    info!(
        console = id,
        code_digits = s.code.len(),
        "console connected"
    );
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel::<(String, PeerOutput)>();
    let mut c = Console {
        hub: hub.clone(),
        id,
        local,
        agent: s.agent.clone(),
        calls: HashMap::new(),
        peer_tx,
        ws,
        token: token.clone(),
        state: Value::Null,
    };
    let state = json!({"type": "state", "agent": {"id": s.agent.id, "name": s.agent.name}, "status": status, "code": s.code, "prefix": "**", "end": "#"});
    c.state = state.clone();
    c.send(state).await;
    loop {
        tokio::select! {
            m = c.ws.recv() => match m {
                Some(Ok(WsMessage::Text(t))) => {
                    let live = match guard(&hub.sessions).get_mut(&token) {
                        Some(s) => {
                            s.last_seen = Instant::now();
                            true
                        }
                        None => false,
                    };
                    if !live {
                        c.send(json!({"type": "error", "message": "the session is over: log in again", "session": "ended"})).await;
                        break;
                    }
                    c.page_says(&t).await;
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(b) = sip_rx.recv() => match parse_datagram(b) {
                Ok(msg) => c.core_says(msg).await,
                Err(e) => debug!(error = %e, "unparseable message from the core"),
            },
            Some((call_id, ev)) = peer_rx.recv() => c.on_peer(&call_id, ev).await,
            m = rx.recv() => match m {
                Some(ToConsole::Json(v)) => c.send(v).await,
                None => break,
            },
            Some(why) = close_rx.recv() => {
                c.send(json!({"type": "error", "message": why, "session": "ended"})).await;
                break;
            }
        }
    }
    // Gone: no new call rings here; ringing calls are declined, answered ones hung up, and
    // what the core still sends meanwhile is answered.
    lock(&hub.desk).unregister(id);
    guard(&hub.consoles).remove(&id);
    let legs: Vec<String> = c.calls.keys().cloned().collect();
    for k in legs {
        if let Some(call) = c.calls.get_mut(&k) {
            call.leg.hangup();
        }
        c.pump(&k).await;
    }
    while let Ok(b) = sip_rx.try_recv() {
        if let Ok(msg) = parse_datagram(b) {
            c.core_says(msg).await;
        }
        let keys: Vec<String> = c.calls.keys().cloned().collect();
        for k in keys {
            if let Some(call) = c.calls.get_mut(&k) {
                call.leg.hangup();
            }
            c.pump(&k).await;
        }
    }
    let _ = hub.web.net.send(NetIn::LocalDown(local)).await;
    info!(console = id, "console disconnected");
}

struct Console {
    hub: Arc<ConsoleHub>,
    id: ConsoleId,
    local: SocketAddr,
    agent: AgentInfo,
    /// By leg B's Call-ID.
    calls: HashMap<String, ConsoleCall>,
    peer_tx: mpsc::UnboundedSender<(String, PeerOutput)>,
    ws: WebSocket,
    /// The session's token.
    token: String,
    /// The last `state` told to the page (a status change sends it whole).
    state: Value,
}

impl Console {
    async fn send(&mut self, v: Value) {
        let _ = self.ws.send(WsMessage::Text(v.to_string().into())).await;
    }

    async fn error(&mut self, call: Option<&str>, words: &str) {
        self.send(json!({"type": "error", "call": call, "message": words}))
            .await;
    }

    fn by_a(&self, a_call_id: &str) -> Option<String> {
        self.calls
            .iter()
            .find(|(_, c)| c.a_call_id == a_call_id)
            .map(|(k, _)| k.clone())
    }

    /// Moves what a leg produced: SIP to the core, its end to the page and the desk.
    async fn pump(&mut self, key: &str) {
        let Some(call) = self.calls.get_mut(key) else {
            return;
        };
        let mut out = Vec::new();
        while let Some(b) = call.leg.poll_transmit() {
            out.push(b);
        }
        let mut events = Vec::new();
        while let Some(e) = call.leg.poll_event() {
            events.push(e);
        }
        for b in out {
            if self
                .hub
                .web
                .net
                .send(NetIn::Local(b, self.local))
                .await
                .is_err()
            {
                break;
            }
        }
        for e in events {
            match e {
                CalleeEvent::Confirmed => {
                    // The core took this console's answer: the call is the agent's (screen
                    // pop, chat). A ring-all loser's 200 is refused with a BYE and never gets
                    // here.
                    info!("the console's answer is confirmed");
                    let call = self.calls.get_mut(key).and_then(|c| {
                        c.confirmed = true;
                        c.call
                    });
                    if let Some(r) = call {
                        let bound = lock(&self.hub.desk).bind(self.id, r, Via::Answered);
                        if let Err(e) = bound {
                            warn!(error = %e, "the answered call cannot be bound to the console");
                        }
                    }
                }
                CalleeEvent::Ended {
                    cancelled,
                    elsewhere,
                } => {
                    let Some(call) = self.calls.remove(key) else {
                        return;
                    };
                    if call.answered {
                        lock(&self.hub.desk).in_call(Instant::now().into_std(), self.id, false);
                    }
                    if let Some(p) = call.port {
                        self.hub.web.ports.give_back(p);
                    }
                    if let Some(a) = call.tap {
                        // A tap no media session took (the call ended first).
                        guard(&self.hub.web.taps).remove(&a);
                    }
                    if call.confirmed {
                        self.send(json!({"type": "ended", "call": call.a_call_id, "reason": "the call has ended"})).await;
                    } else if call.answered {
                        // Another console's answer came first.
                        self.send(json!({"type": "ring_stopped", "call": call.a_call_id, "reason": "answered_elsewhere"})).await;
                    } else {
                        let reason = if elsewhere && cancelled {
                            "answered_elsewhere"
                        } else {
                            "cancelled"
                        };
                        self.send(json!({"type": "ring_stopped", "call": call.a_call_id, "reason": reason})).await;
                    }
                    return;
                }
            }
        }
    }

    /// SIP from the core to this console.
    async fn core_says(&mut self, msg: Message) {
        let Some(call_id) = msg
            .headers()
            .get(&switchboard_sip::Name::CallId)
            .map(|c| c.to_string())
        else {
            return;
        };
        if self.calls.contains_key(&call_id) {
            if let Some(c) = self.calls.get_mut(&call_id) {
                c.leg.handle(msg);
            }
            self.pump(&call_id).await;
            return;
        }
        let Message::Request(req) = msg else { return };
        if let Some(answer) = CalleeLeg::stray(&req) {
            if let Some(b) = answer {
                let _ = self.hub.web.net.send(NetIn::Local(b, self.local)).await;
            }
            return;
        }
        let tag = random_hex(6);
        let Some(leg) = CalleeLeg::ring(req, self.local, &tag) else {
            return;
        };
        let call = leg
            .uri_param(switchboard_agent::CALL_PARAM)
            .and_then(|v| v.parse::<u64>().ok())
            .map(CallRef);
        // The SIP thread sends the INVITE before it hands the call's `Started` to the desk (in
        // the same round): a moment's wait, never a guess.
        let mut a_call_id = None;
        for _ in 0..50 {
            a_call_id = call.and_then(|r| {
                lock(&self.hub.desk)
                    .live(r)
                    .map(|l| l.a_call_id.to_string())
            });
            if a_call_id.is_some() || call.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let a_call_id = a_call_id.unwrap_or_else(|| call_id.clone());
        let pop = call
            .map(|r| self.hub.pop(r, &a_call_id))
            .unwrap_or(json!({}));
        info!(%call_id, a_call_id = %a_call_id, "a call rings the console");
        self.calls.insert(
            call_id.clone(),
            ConsoleCall {
                leg,
                call,
                a_call_id: a_call_id.clone(),
                port: None,
                tap: None,
                answered: false,
                confirmed: false,
            },
        );
        self.pump(&call_id).await;
        self.send(json!({"type": "ringing", "call": a_call_id, "pop": pop}))
            .await;
    }

    async fn on_peer(&mut self, call_id: &str, ev: PeerOutput) {
        match ev {
            PeerOutput::Connected => info!(%call_id, "console media connected"),
            PeerOutput::Closed | PeerOutput::Disconnected => {
                if let Some(c) = self.calls.get_mut(call_id) {
                    info!(%call_id, "the console's media went away: hanging up");
                    c.leg.hangup();
                }
                self.pump(call_id).await;
            }
            PeerOutput::Transmit(..) | PeerOutput::Rtp(_) => {}
        }
    }

    /// A frame from the console's page.
    async fn page_says(&mut self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return self.error(None, "not JSON").await;
        };
        let call = v["call"].as_str().unwrap_or("").to_owned();
        match v["type"].as_str().unwrap_or("") {
            "status" => {
                let status = match v["status"].as_str() {
                    Some("available") => Status::Available,
                    Some("away") => Status::Away,
                    _ => return self.error(None, "status is available or away").await,
                };
                lock(&self.hub.desk).set_status(Instant::now().into_std(), self.id, status);
                if let Some(sess) = guard(&self.hub.sessions).get_mut(&self.token) {
                    sess.status = status;
                }
                self.state["status"] = json!(status);
                let state = self.state.clone();
                self.send(state).await;
            }
            "answer" => {
                let sdp = v["sdp"].as_str().unwrap_or("").to_owned();
                self.answer(&call, &sdp).await;
            }
            "decline" | "hangup" => match self.by_a(&call) {
                Some(k) => {
                    if let Some(c) = self.calls.get_mut(&k) {
                        c.leg.hangup();
                    }
                    self.pump(&k).await;
                }
                None => self.error(Some(&call), "no such call here").await,
            },
            "bind_ani" => {
                let ani = v["ani"].as_str().unwrap_or("");
                let bound = lock(&self.hub.desk).bind_ani(self.id, ani);
                if let Err(e) = bound {
                    self.error(None, &e.to_string()).await;
                }
            }
            "chat" => {
                let Some(room) = self.hub.room_of(self.id, &call) else {
                    return self.error(Some(&call), "no chat with that call here").await;
                };
                let id = v["id"].as_str().unwrap_or("").to_owned();
                let me = self.agent.id.clone();
                match self
                    .hub
                    .chat_line(room, Some(&me), &id, v["text"].as_str().unwrap_or(""))
                {
                    Ok((a_call_id, consoles, line, at)) => {
                        for c in consoles.into_iter().filter(|c| *c != self.id) {
                            self.hub.tell(c, line.clone());
                        }
                        self.hub.tell_caller(
                            &a_call_id,
                            ServerMsg::Chat {
                                id,
                                from: "agent".into(),
                                text: line["text"].as_str().unwrap_or("").to_owned(),
                                at,
                            },
                        );
                    }
                    Err(why) => self.error(Some(&call), &why).await,
                }
            }
            "read" => {
                if self.hub.room_of(self.id, &call).is_some() {
                    let id = v["id"].as_str().unwrap_or("").to_owned();
                    self.hub.tell_caller(&call, ServerMsg::Delivered { id });
                }
            }
            "action" => self.action(&call, &v["action"]).await,
            other => {
                let words = format!("unknown message type {other:?}");
                self.error(None, &words).await;
            }
        }
    }

    /// The agent answers a ringing call in the browser with the page's WebRTC offer.
    async fn answer(&mut self, a_call_id: &str, offer: &str) {
        let Some(key) = self
            .by_a(a_call_id)
            .filter(|k| self.calls.get(k).is_some_and(|c| c.leg.is_ringing()))
        else {
            return self
                .error(Some(a_call_id), "that call is no longer ringing here")
                .await;
        };
        let web = self.hub.web.clone();
        let Some(port) = web.ports.take() else {
            return self
                .error(Some(a_call_id), "the switch has no media ports left")
                .await;
        };
        let candidate = SocketAddr::new(web.ip(), port);
        let ice = match crate::media::bind_ice(candidate) {
            Ok(s) => s,
            Err(e) => {
                web.ports.give_back(port);
                warn!(%candidate, error = %e, "cannot bind a console call's socket");
                return self
                    .error(Some(a_call_id), "the switch cannot take calls right now")
                    .await;
            }
        };
        let (peer, answer) = match BrowserPeer::accept(
            Instant::now().into_std(),
            offer,
            candidate,
            web.cert.as_ref(),
        ) {
            Ok(p) => p,
            Err(e) => {
                web.ports.give_back(port);
                return self
                    .error(
                        Some(a_call_id),
                        &format!("the console's offer cannot be answered: {e}"),
                    )
                    .await;
            }
        };
        let inner = peer.inner_sdp(candidate, 1);
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let fwd = self.peer_tx.clone();
        let k = key.clone();
        tokio::spawn(async move {
            while let Some(e) = ev_rx.recv().await {
                if fwd.send((k.clone(), e)).is_err() {
                    break;
                }
            }
        });
        guard(&web.taps).insert(
            candidate,
            crate::media::Tap {
                peer,
                ice,
                events: ev_tx,
                renew: None,
            },
        );
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        c.port = Some(port);
        c.tap = Some(candidate);
        c.answered = true;
        c.leg.answer(inner);
        let call = c.call;
        lock(&self.hub.desk).in_call(Instant::now().into_std(), self.id, true);
        info!(a_call_id, "the agent answered in the console");
        self.send(json!({"type": "accepted", "call": a_call_id, "sdp": answer}))
            .await;
        let _ = call;
        self.pump(&key).await;
        // One call at a time: what else rings here stops (the other consoles go on ringing).
        let others: Vec<String> = self
            .calls
            .iter()
            .filter(|(k, c)| **k != key && c.leg.is_ringing())
            .map(|(k, _)| k.clone())
            .collect();
        for k in others {
            if let Some(c) = self.calls.get_mut(&k) {
                c.leg.hangup();
            }
            self.pump(&k).await;
        }
    }

    /// A button of the console: an action in the caller's browser, through the call's
    /// browser leg (checked there against the merchant's configuration, as the keypad's).
    async fn action(&mut self, a_call_id: &str, action: &Value) {
        if self.hub.room_of(self.id, a_call_id).is_none() {
            return self.error(Some(a_call_id), "that call is not yours").await;
        }
        let asked = action["action"].as_str().unwrap_or("");
        let Some(name) = switchboard_webrtc::action::ACTIONS
            .iter()
            .find(|a| **a == asked)
        else {
            let words = format!("no action {asked:?}");
            return self.error(Some(a_call_id), &words).await;
        };
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Action {
            call: a_call_id.to_owned(),
            merchant: None,
            name,
            body: action.to_string(),
            tx,
        };
        if self.hub.cmd.send(cmd).await.is_err() {
            return;
        }
        // The page has up to 500 ms, the switch 5 s: the console goes on meanwhile (its SIP,
        // its other calls); the result comes back as any news does.
        let (hub, console, agent) = (self.hub.clone(), self.id, self.agent.id.clone());
        let asked = asked.to_owned();
        let a_call_id = a_call_id.to_owned();
        tokio::spawn(async move {
            let reply = tokio::time::timeout(Duration::from_secs(5), rx).await;
            let (ok, detail) = match reply {
                Ok(Ok(Some(r))) if (200..300).contains(&r.status) => {
                    let d = serde_json::from_slice::<Value>(&r.body)
                        .ok()
                        .and_then(|b| b.get("detail").and_then(Value::as_str).map(str::to_owned))
                        .unwrap_or_default();
                    (true, d)
                }
                Ok(Ok(Some(r))) => (false, r.reason.clone()),
                Ok(Ok(None)) => (false, "the call is over".into()),
                _ => (false, "no answer from the caller's browser".into()),
            };
            info!(%agent, action = asked, ok, %detail, "console action");
            hub.tell(
                console,
                json!({"type": "action_result", "call": a_call_id, "ok": ok, "detail": detail}),
            );
        });
    }
}

/// An agent added or changed (admin API `PUT /api/v1/agents/{id}`, `switchboard agent`):
/// what is not given stays as it was.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentChange {
    /// Display name.
    pub name: Option<String>,
    /// `agent`, `supervisor` or `admin`.
    pub role: Option<String>,
    /// Merchants whose calls they take.
    pub merchants: Option<Vec<String>>,
    /// Queues they answer.
    pub queues: Option<Vec<String>>,
    /// A new password (hashed here; never stored or logged in clear).
    pub password: Option<String>,
}

/// The stored agent after `change`; `Err` in words.
pub fn apply_change(
    id: &str,
    old: Option<crate::storage::AgentRow>,
    change: AgentChange,
) -> Result<crate::storage::AgentRow, String> {
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !id_ok {
        return Err("an agent ID has 1 to 64 letters, digits or . _ - @".into());
    }
    let mut row = old.unwrap_or_else(|| crate::storage::AgentRow {
        id: id.to_owned(),
        name: id.to_owned(),
        role: "agent".into(),
        ..Default::default()
    });
    if let Some(n) = change.name {
        if n.chars().count() > 100 || n.chars().any(char::is_control) {
            return Err("a name has at most 100 characters and no control characters".into());
        }
        row.name = n;
    }
    if let Some(r) = change.role {
        if switchboard_agent::Role::parse(&r).is_none() {
            return Err(format!("no role {r:?}: agent, supervisor or admin"));
        }
        row.role = r;
    }
    let list_ok = |l: &[String]| {
        l.iter()
            .all(|m| !m.is_empty() && !m.contains(',') && m.len() <= 64)
    };
    if let Some(m) = change.merchants {
        if !list_ok(&m) {
            return Err("merchant IDs are short and have no commas".into());
        }
        row.merchants = m;
    }
    if let Some(q) = change.queues {
        if !list_ok(&q) {
            return Err("queue names are short and have no commas".into());
        }
        row.queues = q;
    }
    if let Some(p) = change.password {
        if p == crate::config::DEMO_PASSWORD {
            return Err("that is the demo password everyone knows: choose another".into());
        }
        row.password = switchboard_agent::password::hash(&p).map_err(|e| e.to_string())?;
    }
    if row.password.is_empty() {
        return Err("a new agent needs a password".into());
    }
    Ok(row)
}

impl ConsoleHub {
    /// Every agent, conf/ first (`"source": "conf"`), then the store's.
    pub async fn agents(&self) -> Result<Vec<Value>, String> {
        let mut out: Vec<Value> = self
            .cfg()
            .accounts
            .values()
            .map(|(a, _)| json!({"id": a.id, "name": a.name, "role": a.role, "merchants": a.merchants, "queues": a.queues, "source": "conf"}))
            .collect();
        let db = self.db.clone();
        let rows = tokio::task::spawn_blocking(move || crate::storage::agent_list(&db))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        out.extend(rows.iter().map(|r| {
            json!({"id": r.id, "name": r.name, "role": r.role, "merchants": r.merchants, "queues": r.queues, "source": "store"})
        }));
        Ok(out)
    }

    /// Adds or changes an agent of the store; `true` when it is new. Its sessions end.
    pub async fn put_agent(&self, id: &str, change: AgentChange) -> Result<bool, String> {
        if self.cfg().accounts.contains_key(id) {
            return Err(format!(
                "agent {id} is defined in conf/ ([agent.{id}]): change it there"
            ));
        }
        let db = self.db.clone();
        let id2 = id.to_owned();
        let created = tokio::task::spawn_blocking(move || {
            let old = crate::storage::agent_get(&db, &id2).map_err(|e| e.to_string())?;
            let created = old.is_none();
            let row = apply_change(&id2, old, change)?;
            crate::storage::agent_put(&db, &row, now_ms()).map_err(|e| e.to_string())?;
            Ok::<bool, String>(created)
        })
        .await
        .map_err(|e| e.to_string())??;
        info!(agent = id, created, "agent saved");
        agent_changed(self, id);
        Ok(created)
    }

    /// Removes an agent of the store; its sessions end.
    pub async fn remove_agent(&self, id: &str) -> Result<bool, String> {
        if self.cfg().accounts.contains_key(id) {
            return Err(format!(
                "agent {id} is defined in conf/ ([agent.{id}]): remove it there"
            ));
        }
        let db = self.db.clone();
        let id2 = id.to_owned();
        let gone = tokio::task::spawn_blocking(move || crate::storage::agent_remove(&db, &id2))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        agent_changed(self, id);
        Ok(gone)
    }
}
