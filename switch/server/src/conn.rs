//! TCP connection hygiene for every listener (SIP over TCP, the admin HTTP, the widget's
//! HTTP): a ceiling of connections in all and per source address, a deadline for a message
//! (or a request head) that has begun, and an idle timeout. Without them, idle or
//! slowly-dribbled connections (slowloris) pin one file descriptor each until the process
//! has none left for the HTTP side, the RTP sockets or new calls.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// The limits of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections at once.
    pub max: usize,
    /// Connections at once from one address.
    pub per_source: usize,
    /// How long a message (SIP) or a request head (HTTP) may take once its first byte came.
    pub message_timeout: Duration,
    /// How long a connection may carry nothing either way (None: never closed for it).
    pub idle_timeout: Option<Duration>,
}

impl ConnLimits {
    /// SIP over TCP, Kamailio's defaults (`tcp_max_connections`, `tcp_msg_read_timeout`,
    /// `tcp_connection_lifetime`).
    pub const SIP: ConnLimits = ConnLimits {
        max: 2048,
        per_source: 32,
        message_timeout: Duration::from_secs(20),
        idle_timeout: Some(Duration::from_secs(120)),
    };

    /// HTTP listeners: many shoppers may share one office address.
    pub const HTTP: ConnLimits = ConnLimits {
        max: 4096,
        per_source: 256,
        message_timeout: Duration::from_secs(10),
        idle_timeout: Some(Duration::from_secs(120)),
    };
}

/// Why a connection was closed or refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections refused at a ceiling (all, per source).
    pub refused: [AtomicU64; 2],
    /// Connections closed for a message that did not complete in time.
    pub slow: AtomicU64,
    /// Connections closed for carrying nothing.
    pub idle: AtomicU64,
}

/// The connections of one listener: who holds how many.
#[derive(Debug)]
pub struct Gate {
    /// `sip`, `http`, `widget`.
    pub name: &'static str,
    limits: Mutex<ConnLimits>,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// Sources the ceilings never refuse.
    exempt: std::sync::RwLock<Vec<switchboard_core::Cidr>>,
    /// Counters.
    pub stats: ConnStats,
}

impl Gate {
    /// A gate with these limits.
    pub fn new(name: &'static str, limits: ConnLimits) -> Arc<Gate> {
        Arc::new(Gate {
            name,
            limits: Mutex::new(limits),
            open: Mutex::new((0, HashMap::new())),
            exempt: std::sync::RwLock::new(Vec::new()),
            stats: ConnStats::default(),
        })
    }

    /// The limits now.
    pub fn limits(&self) -> ConnLimits {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sources the ceilings never refuse (trusted addresses, gateways).
    pub fn set_exempt(&self, list: Vec<switchboard_core::Cidr>) {
        *self.exempt.write().unwrap_or_else(PoisonError::into_inner) = list;
    }

    /// A reload's limits (connections already open keep theirs).
    pub fn set_limits(&self, l: ConnLimits) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = l;
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// A connection from `peer` may stay: its permit, or None at a ceiling.
    pub fn admit(self: &Arc<Gate>, peer: SocketAddr) -> Option<Permit> {
        let l = self.limits();
        // Sources as the SIP guard counts them (an IPv6 /64 is one).
        let key = switchboard_core::guard::source_key(peer.ip());
        let trusted = self
            .exempt
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|c| c.contains(peer.ip()));
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let ceiling = if trusted {
            // Ops' own sources (`[sip] trusted`, the gateways) are never shut out by
            // strangers filling the ceilings.
            None
        } else if open.0 >= l.max {
            Some(0)
        } else if open.1.get(&key).copied().unwrap_or(0) >= l.per_source {
            Some(1)
        } else {
            None
        };
        if let Some(i) = ceiling {
            let n = self.stats.refused[i].fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                warn!(
                    listener = self.name,
                    source = %peer,
                    open = open.0,
                    refused = n + 1,
                    "TCP connection refused: {}",
                    if i == 0 { "the listener's ceiling" } else { "its address's ceiling" }
                );
            }
            return None;
        }
        open.0 += 1;
        *open.1.entry(key).or_insert(0) += 1;
        Some(Permit {
            gate: self.clone(),
            ip: key,
        })
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .gate
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// Accepts a connection the gate admits (others are closed at once); accept errors such as
/// running out of file descriptors are logged and retried after a pause.
pub async fn accept(listener: &TcpListener, gate: &Arc<Gate>) -> (TcpStream, SocketAddr, Permit) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match gate.admit(peer) {
                Some(permit) => return (stream, peer, permit),
                None => drop(stream),
            },
            Err(e) => {
                warn!(listener = gate.name, error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// An HTTP listener behind a gate: its streams close a request head that dribbles in, and
/// a connection idle too long (a WebSocket, once upgraded, only by its own end).
#[derive(Debug)]
pub struct GatedListener {
    listener: TcpListener,
    gate: Arc<Gate>,
}

impl GatedListener {
    /// `listener` behind `gate`.
    pub fn new(listener: TcpListener, gate: Arc<Gate>) -> GatedListener {
        GatedListener { listener, gate }
    }
}

impl axum::serve::Listener for GatedListener {
    type Io = Timed<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Timed<TcpStream>, SocketAddr) {
        let (stream, peer, permit) = accept(&self.listener, &self.gate).await;
        let _ = stream.set_nodelay(true);
        (Timed::new(stream, permit, self.gate.clone()), peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Where an HTTP connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the first request's head: `message_timeout` from the accept (slowloris).
    /// Holds how many bytes of `\r\n\r\n` were seen last.
    Head(u8),
    /// After it: the idle timeout, from the last byte either way (later requests are
    /// bounded by it and by the ceilings of connections per address).
    Open,
    /// Upgraded to a WebSocket: no timeout of ours.
    Upgraded,
}

/// A stream with the deadlines of [`GatedListener`] (over TCP, or over TLS once its
/// handshake is done).
#[derive(Debug)]
pub struct Timed<S> {
    io: S,
    _permit: Permit,
    gate: Arc<Gate>,
    phase: Phase,
    /// The head of the first request, lower-cased, to see an upgrade (bounded).
    head: Vec<u8>,
    /// The first request asked for a WebSocket: its answer says whether it became one.
    upgrade_asked: bool,
    deadline: Pin<Box<Sleep>>,
}

/// Bytes of a request head kept to look for `upgrade: websocket`.
const HEAD_KEEP: usize = 8192;

impl<S> Timed<S> {
    fn new(io: S, permit: Permit, gate: Arc<Gate>) -> Timed<S> {
        let l = gate.limits();
        Timed {
            io,
            _permit: permit,
            gate,
            phase: Phase::Head(0),
            head: Vec::new(),
            upgrade_asked: false,
            deadline: Box::pin(tokio::time::sleep(l.message_timeout)),
        }
    }

    fn touch(&mut self) {
        if let (Phase::Open, Some(idle)) = (self.phase, self.gate.limits().idle_timeout) {
            self.deadline.as_mut().reset(Instant::now() + idle);
        }
    }

    /// Sees the bytes just read: the end of a request head moves the connection on.
    fn saw(&mut self, bytes: &[u8]) {
        let Phase::Head(mut matched) = self.phase else {
            return;
        };
        const END: &[u8; 4] = b"\r\n\r\n";
        for &b in bytes {
            if self.head.len() < HEAD_KEEP {
                self.head.push(b.to_ascii_lowercase());
            }
            matched = if b == END[matched as usize] {
                matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if matched == 4 {
                let ws = self.head.split(|&c| c == b'\n').any(|line| {
                    line.starts_with(b"upgrade:")
                        && line.windows(b"websocket".len()).any(|w| w == b"websocket")
                });
                // Upgraded only once the answer is `101` (a refused upgrade, a 403 for a
                // foreign Origin, keeps the idle timeout).
                self.upgrade_asked = ws;
                self.phase = Phase::Open;
                self.head = Vec::new();
                // What follows (its body, the next requests) has the idle timeout.
                self.touch();
                return;
            }
        }
        self.phase = Phase::Head(matched);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.phase == Phase::Upgraded {
            return None;
        }
        if self.phase == Phase::Open && self.gate.limits().idle_timeout.is_none() {
            return None;
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let (what, counter) = match self.phase {
                Phase::Head(_) => (
                    "a request head that did not complete",
                    &self.gate.stats.slow,
                ),
                _ => ("an idle connection", &self.gate.stats.idle),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            debug!(listener = self.gate.name, "closing {what}");
            return Some(io::Error::new(io::ErrorKind::TimedOut, what));
        }
        None
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = buf.filled().len() - before;
                if got > 0 {
                    if let Phase::Head(_) = this.phase {
                        this.saw(&buf.filled()[before..]);
                    } else {
                        this.touch();
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            if std::mem::take(&mut this.upgrade_asked)
                && this.phase == Phase::Open
                && buf.starts_with(b"HTTP/1.1 101")
            {
                this.phase = Phase::Upgraded;
            }
            this.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The gates of the switch's listeners.
#[derive(Debug)]
pub struct Gates {
    /// SIP over TCP (accepted and opened).
    pub sip: Arc<Gate>,
    /// The admin HTTP listener.
    pub http: Arc<Gate>,
    /// The widget's own listener (`[webrtc] listen`).
    pub widget: Arc<Gate>,
}

impl Gates {
    /// Gates with these limits.
    pub fn new(sip: ConnLimits, http: ConnLimits) -> Gates {
        Gates {
            sip: Gate::new("sip", sip),
            http: Gate::new("http", http),
            widget: Gate::new("widget", http),
        }
    }

    /// A reload's limits.
    pub fn set_limits(&self, sip: ConnLimits, http: ConnLimits) {
        self.sip.set_limits(sip);
        self.http.set_limits(http);
        self.widget.set_limits(http);
    }

    /// Their lines of `/metrics`.
    pub fn metrics(&self, o: &mut String) {
        use crate::shell::labelled_metric;
        let all = [&self.sip, &self.http, &self.widget];
        labelled_metric(
            o,
            "switchboard_tcp_connections",
            "gauge",
            "TCP connections open, by listener",
            all.iter()
                .map(|g| (format!("listener=\"{}\"", g.name), g.open() as u64)),
        );
        labelled_metric(
            o,
            "switchboard_tcp_refused_total",
            "counter",
            "TCP connections closed at accept: the listener's ceiling or the address's",
            all.iter().flat_map(|g| {
                ["listener", "source"].iter().enumerate().map(|(i, c)| {
                    (
                        format!("listener=\"{}\",ceiling=\"{c}\"", g.name),
                        g.stats.refused[i].load(Ordering::Relaxed),
                    )
                })
            }),
        );
        labelled_metric(
            o,
            "switchboard_tcp_timeouts_total",
            "counter",
            "TCP connections closed for a message that did not complete in time (slow) or for carrying nothing (idle)",
            all.iter().flat_map(|g| {
                [("slow", &g.stats.slow), ("idle", &g.stats.idle)].map(|(r, n)| {
                    (
                        format!("listener=\"{}\",reason=\"{r}\"", g.name),
                        n.load(Ordering::Relaxed),
                    )
                })
            }),
        );
    }
}

/// An HTTPS listener behind a gate: TLS handshakes run on their own tasks (each within the
/// message timeout), so a peer that stalls one holds up no one else's accept.
#[derive(Debug)]
pub struct TlsGatedListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(Timed<TlsStream<TcpStream>>, SocketAddr)>,
}

impl TlsGatedListener {
    /// `listener` behind `gate`, its connections over `tls`.
    pub fn new(
        listener: TcpListener,
        gate: Arc<Gate>,
        tls: Arc<crate::tls::Tls>,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer, permit) = accept(&listener, &gate).await;
                let _ = stream.set_nodelay(true);
                let (gate, tls, tx) = (gate.clone(), tls.clone(), tx.clone());
                tokio::spawn(async move {
                    let within = gate.limits().message_timeout;
                    match tls.accept(stream, within).await {
                        Some(s) => {
                            let _ = tx.send((Timed::new(s, permit, gate), peer)).await;
                        }
                        None => {
                            gate.stats.slow.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        Ok(TlsGatedListener { local, ready })
    }
}

impl axum::serve::Listener for TlsGatedListener {
    type Io = Timed<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task is gone (the runtime is shutting down).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serves `app` on `listener` behind `gate`, over TLS when `tls` is given.
pub async fn serve_http(
    listener: TcpListener,
    gate: Arc<Gate>,
    app: axum::Router,
    tls: Option<Arc<crate::tls::Tls>>,
) -> io::Result<()> {
    use axum::serve::ListenerExt as _;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => axum::serve(GatedListener::new(listener, gate).tap_io(|_| {}), app).await,
        Some(tls) => {
            axum::serve(
                TlsGatedListener::new(listener, gate, tls)?.tap_io(|_| {}),
                app,
            )
            .await
        }
    }
}
