//! HTTP: `/healthz`, `/metrics` (Prometheus) and the admin API under `/api/v1`
//! (Bearer token from `http.token`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use switchboard_screenpop::crm::{self, CallsQuery};

use crate::shell::Command;

#[derive(Clone)]
struct App {
    cmd: mpsc::Sender<Command>,
    token: Option<String>,
    metrics_token: Option<String>,
    metrics_open: Vec<switchboard_core::Cidr>,
    db: crate::storage::Store,
    web: Option<std::sync::Arc<crate::web::WebShared>>,
    hub: Option<std::sync::Arc<crate::console::ConsoleHub>>,
}

/// Serves HTTP on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    (gate, tls): (
        std::sync::Arc<crate::conn::Gate>,
        Option<std::sync::Arc<crate::tls::Tls>>,
    ),
    cmd: mpsc::Sender<Command>,
    (token, metrics_token, metrics_open): (
        Option<String>,
        Option<String>,
        Vec<switchboard_core::Cidr>,
    ),
    db: crate::storage::Store,
    web: Option<std::sync::Arc<crate::web::WebShared>>,
    hub: Option<std::sync::Arc<crate::console::ConsoleHub>>,
) -> anyhow::Result<()> {
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/calls", get(calls))
        .route("/api/v1/calls/{id}/hangup", post(hangup))
        .route("/api/v1/calls/{id}/actions", post(call_action))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/gateways/{name}/{state}", post(set_gateway))
        .route("/api/v1/bans", get(bans))
        .route("/api/v1/bans/{ip}", axum::routing::delete(unban))
        .route("/api/v1/cdrs", get(cdrs))
        .route("/api/v1/calls/{id}/chat", get(call_chat))
        .route("/api/v1/agents", get(agents_list))
        .route(
            "/api/v1/agents/{id}",
            axum::routing::put(agent_put).delete(agent_delete),
        )
        .with_state(App {
            cmd,
            token,
            metrics_token,
            metrics_open,
            db,
            web: web.clone(),
            hub: hub.clone(),
        });
    // The widget's routes join the admin listener unless they have one of their own.
    if let Some(web) = web
        && web.listen().is_none()
    {
        app = app.merge(crate::web::routes(web));
        if let Some(hub) = hub {
            app = app.merge(crate::console::routes(hub));
        }
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind HTTP {addr}: {e}"))?;
    tracing::info!(%addr, https = tls.is_some(), "HTTP listening");
    crate::conn::serve_http(listener, gate, app, tls).await?;
    Ok(())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

#[allow(clippy::result_large_err)] // axum's Response is a handler's natural error
fn authorized(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &app.token else {
        return Err((
            StatusCode::FORBIDDEN,
            "the admin API is off: set http.token in switchboard.toml\n",
        )
            .into_response());
    };
    if bearer(headers).is_some_and(|g| switchboard_webrtc::token::constant_eq(g, token)) {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response())
    }
}

/// Who is asking: ops (the admin token) or a merchant's CRM (one of its API keys).
enum Scope {
    Admin,
    Merchant(String),
}

#[allow(clippy::result_large_err)]
fn scope(app: &App, headers: &HeaderMap) -> Result<Scope, Response> {
    let Some(given) = bearer(headers) else {
        return Err((StatusCode::UNAUTHORIZED, "missing bearer token\n").into_response());
    };
    if app
        .token
        .as_deref()
        .is_some_and(|t| switchboard_webrtc::token::constant_eq(given, t))
    {
        return Ok(Scope::Admin);
    }
    if let Some(web) = &app.web {
        let cfg = web
            .cfg
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys = cfg
            .merchants
            .iter()
            .map(|(id, m)| (id, m.api_keys.as_slice()));
        if let Some(m) = crm::merchant_of_key(given, keys) {
            return Ok(Scope::Merchant(m));
        }
    }
    Err((StatusCode::UNAUTHORIZED, "wrong bearer token or API key\n").into_response())
}

/// A CRM's look-up: the newest call matching, within the key's merchant.
async fn lookup(app: &App, scope: Scope, q: CallsQuery) -> Response {
    let merchant = match scope {
        Scope::Admin => None,
        Scope::Merchant(m) => Some(m),
    };
    let filter = match crm::lookup(merchant, q) {
        Ok(f) => f,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e}))).into_response();
        }
    };
    match records(app, filter).await {
        Ok(mut rows) if !rows.is_empty() => axum::Json(rows.swap_remove(0)).into_response(),
        Ok(_) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": crm::NO_MATCH})),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// Reads records off the runtime's threads (the store blocks); a store error is a 500.
#[allow(clippy::result_large_err)]
async fn records(
    app: &App,
    filter: crate::storage::CdrFilter,
) -> Result<Vec<crate::storage::Cdr>, Response> {
    let db = app.db.clone();
    match tokio::task::spawn_blocking(move || db.query(&filter)).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response()),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()),
    }
}

/// A merchant's calls in progress, with their context.
async fn merchant_calls(app: &App, merchant: String) -> Response {
    match records(app, crm::in_progress(merchant)).await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(r) => r,
    }
}

#[allow(clippy::result_large_err)]
async fn ask<T>(
    app: &App,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    app.cmd
        .send(make(tx))
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response())?;
    rx.await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response())
}

/// Prometheus text. From `[http] metrics_open` (loopback by default: a local agent scrapes
/// it), to anyone; from elsewhere, with the metrics token or the admin token (call counts and
/// sources are not the internet's).
async fn metrics(
    State(app): State<App>,
    axum::extract::ConnectInfo(from): axum::extract::ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !app.metrics_open.iter().any(|c| c.contains(from.ip())) {
        let given = bearer(&headers);
        let ok = given.is_some_and(|g| {
            [&app.metrics_token, &app.token]
                .into_iter()
                .flatten()
                .any(|t| switchboard_webrtc::token::constant_eq(g, t))
        });
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "metrics from off loopback need [http] metrics_token (or the admin token) as a Bearer token\n",
            )
                .into_response();
        }
    }
    match ask(&app, Command::Metrics).await {
        Ok(mut text) => {
            if let Some(web) = &app.web {
                text.push_str(&web.metrics());
            }
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        Err(r) => r,
    }
}

async fn calls(
    State(app): State<App>,
    headers: HeaderMap,
    q: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let scope = match scope(&app, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": e.body_text()})),
            )
                .into_response();
        }
    };
    if q.is_lookup() {
        return lookup(&app, scope, q).await;
    }
    if let Scope::Merchant(m) = scope {
        return merchant_calls(&app, m).await;
    }
    match ask(&app, Command::Calls).await {
        Ok(calls) => {
            let v: Vec<_> = calls
                .iter()
                .map(|(c, q)| {
                    let leg = |i: usize, port: Option<u16>| {
                        json!({"port": port, "codec": c.legs[i].as_ref().map(|l| &l.0), "dtmf": c.legs[i].as_ref().map(|l| &l.1)})
                    };
                    json!({"id": c.id.0, "state": c.state.as_str(), "call_id": c.a_call_id, "b_call_id": c.b_call_id, "from": c.caller, "to": c.destination, "target": c.target, "age_secs": c.age_secs,
                        "media": {"a": leg(0, c.media.map(|m| m.a)), "b": leg(1, c.media.map(|m| m.b))},
                        "quality": q.map(|[a, b]| json!({"a": a, "b": b}))})
                })
                .collect();
            axum::Json(v).into_response()
        }
        Err(r) => r,
    }
}

async fn hangup(State(app): State<App>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    match ask(&app, |tx| {
        Command::Hangup(switchboard_core::CallRef(id), tx)
    })
    .await
    {
        Ok(true) => (StatusCode::OK, format!("call {id} hung up\n")).into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, format!("no call {id}\n")).into_response(),
        Err(r) => r,
    }
}

/// Longest action body the API takes.
const MAX_ACTION_BODY: usize = 4096;

/// `POST /api/v1/calls/{id}/actions`: an action in the caller's browser, from a CRM (its
/// merchant's calls only: any other is 404) or ops; answered with the browser's result.
async fn call_action(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let merchant = match scope(&app, &headers) {
        Ok(Scope::Admin) => None,
        Ok(Scope::Merchant(m)) => Some(m),
        Err(r) => return r,
    };
    let bad = |why: String| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"ok": false, "error": why})),
        )
            .into_response()
    };
    if body.len() > MAX_ACTION_BODY {
        return bad(format!("the body is longer than {MAX_ACTION_BODY} bytes"));
    }
    let v: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("not JSON: {e}")),
    };
    let asked = v.get("action").and_then(|a| a.as_str()).unwrap_or("");
    let Some(name) = switchboard_webrtc::action::ACTIONS
        .iter()
        .find(|a| **a == asked)
    else {
        return bad(format!(
            "\"action\" must be one of {}",
            switchboard_webrtc::action::ACTIONS.join(", ")
        ));
    };
    let wait = ask(&app, |tx| Command::Action {
        call: id.clone(),
        merchant,
        name,
        body: v.to_string(),
        tx,
    });
    let answer = match tokio::time::timeout(Duration::from_secs(5), wait).await {
        Ok(Ok(a)) => a,
        Ok(Err(r)) => return r,
        Err(_) => Some(switchboard_core::module::LegReply {
            status: 408,
            reason: "no answer from the call".into(),
            body: Vec::new(),
        }),
    };
    let Some(reply) = answer else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"ok": false, "error": format!("no call {id}")})),
        )
            .into_response();
    };
    let detail = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|b| b.get("detail").cloned());
    let status = match reply.status {
        200..=299 => StatusCode::OK,
        // Refused by the merchant's configuration.
        403 => StatusCode::UNPROCESSABLE_ENTITY,
        // The page is not connected, or busy with earlier actions.
        480 | 486 => StatusCode::CONFLICT,
        408 => StatusCode::GATEWAY_TIMEOUT,
        // A caller who is not in a browser, or a browser that could not.
        _ => StatusCode::BAD_GATEWAY,
    };
    let body = if status == StatusCode::OK {
        json!({"ok": true, "detail": detail})
    } else {
        json!({"ok": false, "error": reply.reason, "status": reply.status})
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /api/v1/calls/{id}/chat`: the chat of a call (either leg's Call-ID), in progress or
/// over; a merchant's key sees its own calls' only (404 for any other, as for a missing one).
async fn call_chat(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let scope = match scope(&app, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = crate::storage::CdrFilter {
        call_id: Some(id.clone()),
        limit: Some(1),
        ..Default::default()
    };
    let rows = match records(&app, filter).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let row = rows.into_iter().next().filter(|c| match &scope {
        Scope::Admin => true,
        Scope::Merchant(m) => c.merchant.as_deref() == Some(m.as_str()),
    });
    match row {
        Some(c) => {
            axum::Json(json!({"call_id": c.call_id, "b_call_id": c.b_call_id, "chat": c.chat}))
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": format!("no call {id}")})),
        )
            .into_response(),
    }
}

/// `GET /api/v1/agents`: every agent (conf/ and the store), without password hashes.
async fn agents_list(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let Some(hub) = app.hub.clone() else {
        return (StatusCode::NOT_FOUND, "the agent console is off\n").into_response();
    };
    match hub.agents().await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e})),
        )
            .into_response(),
    }
}

/// `PUT /api/v1/agents/{id}`: adds or changes an agent of the store.
async fn agent_put(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let Some(hub) = app.hub.clone() else {
        return (StatusCode::NOT_FOUND, "the agent console is off\n").into_response();
    };
    let v: crate::console::AgentChange = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": format!("not an agent: {e}")})),
            )
                .into_response();
        }
    };
    match hub.put_agent(&id, v).await {
        Ok(created) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(json!({"ok": true, "id": id}))).into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": e})),
        )
            .into_response(),
    }
}

/// `DELETE /api/v1/agents/{id}`: removes an agent of the store (its sessions end).
async fn agent_delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let Some(hub) = app.hub.clone() else {
        return (StatusCode::NOT_FOUND, "the agent console is off\n").into_response();
    };
    match hub.remove_agent(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": format!("no agent {id} in the store")})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": e})),
        )
            .into_response(),
    }
}

async fn reload(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    match ask(&app, Command::Reload).await {
        Ok(Ok(msg)) => (StatusCode::OK, format!("{msg}\n")).into_response(),
        Ok(Err(diags)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{diags}\nreload refused: the running configuration stays\n"),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn gateways(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    match ask(&app, Command::Gateways).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

async fn set_gateway(
    State(app): State<App>,
    headers: HeaderMap,
    Path((name, state)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let up = match state.as_str() {
        "up" => true,
        "down" => false,
        _ => return (StatusCode::BAD_REQUEST, "state is up or down\n").into_response(),
    };
    match ask(&app, |tx| Command::SetGateway(name.clone(), up, tx)).await {
        Ok(true) => (StatusCode::OK, format!("gateway {name} marked {state}\n")).into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, format!("no gateway {name}\n")).into_response(),
        Err(r) => r,
    }
}

async fn bans(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    match ask(&app, Command::Bans).await {
        Ok(v) => {
            let v: Vec<serde_json::Value> = v
                .into_iter()
                .map(|(ip, reason, secs)| {
                    serde_json::json!({"address": ip.to_string(), "reason": reason, "seconds_left": secs})
                })
                .collect();
            axum::Json(v).into_response()
        }
        Err(r) => r,
    }
}

async fn unban(State(app): State<App>, headers: HeaderMap, Path(ip): Path<String>) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let Ok(addr) = ip.parse::<std::net::IpAddr>() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{ip:?} is not an IP address\n"),
        )
            .into_response();
    };
    match ask(&app, |tx| Command::Unban(addr, tx)).await {
        Ok(true) => (StatusCode::OK, format!("ban on {addr} lifted\n")).into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, format!("{addr} is not banned\n")).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, serde::Deserialize)]
struct CdrQuery {
    since: Option<String>,
    until: Option<String>,
    cause: Option<String>,
    caller: Option<String>,
    destination: Option<String>,
    ani: Option<String>,
    call_id: Option<String>,
    limit: Option<u32>,
    format: Option<String>,
}

async fn cdrs(
    State(app): State<App>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<CdrQuery>,
) -> Response {
    if let Err(r) = authorized(&app, &headers) {
        return r;
    }
    let time = |v: &Option<String>| v.as_deref().map(crate::storage::parse_time).transpose();
    let (since_ms, until_ms) = match (time(&q.since), time(&q.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let filter = crate::storage::CdrFilter {
        since_ms,
        until_ms,
        cause: q.cause,
        caller: q.caller,
        destination: q.destination,
        ani: q.ani,
        call_id: q.call_id,
        limit: Some(q.limit.unwrap_or(1000).min(100_000)),
        ..Default::default()
    };
    match records(&app, filter).await {
        Ok(rows) if q.format.as_deref() == Some("csv") => (
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            crate::storage::to_csv(&rows),
        )
            .into_response(),
        Ok(rows) => axum::Json(rows).into_response(),
        Err(r) => r,
    }
}
