//! The tokio shell around the engine: one task owns the [`Engine`] and its UDP socket; TCP
//! connections, the HTTP API and signals talk to it over bounded channels.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard_core::guard::{BanReason, Ceiling, DropReason};
use switchboard_core::{CallInfo, CallRef, Cause, Engine, Output, Side};
use switchboard_sip::transaction::{Peer, Transport};
use switchboard_sip::{Message, ParseError, parse_stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::conn::Gate;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::media::MediaHub;
use crate::udp::{self, SipUdp};
use switchboard_trunk::Trunk;

/// A gateway as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewayView {
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Transport.
    pub transport: String,
    /// Up?
    pub up: bool,
    /// Registered (None: the gateway does not register).
    pub registered: Option<bool>,
    /// Why it is down.
    pub down_reason: Option<String>,
}

/// Requests to the engine task.
#[derive(Debug)]
pub enum Command {
    /// List calls.
    Calls(oneshot::Sender<Vec<(CallInfo, Option<[crate::media::LegQuality; 2]>)>>),
    /// Hang up a call.
    Hangup(CallRef, oneshot::Sender<bool>),
    /// Reload conf/; the answer is a summary or the diagnostics.
    Reload(oneshot::Sender<Result<String, String>>),
    /// List gateways.
    Gateways(oneshot::Sender<Vec<GatewayView>>),
    /// Mark a gateway up/down.
    SetGateway(String, bool, oneshot::Sender<bool>),
    /// Prometheus text.
    Metrics(oneshot::Sender<String>),
    /// The bans in force: (address, reason, seconds left).
    Bans(oneshot::Sender<Vec<(std::net::IpAddr, &'static str, u64)>>),
    /// Lift a ban; `false` when the address was not banned.
    Unban(std::net::IpAddr, oneshot::Sender<bool>),
    /// An action in the caller's browser from the CRM API: the call (leg A's or leg B's
    /// Call-ID, or the switch's id), the merchant the key belongs to (None: the admin), the
    /// action's name and its JSON. The answer is the browser leg's (None: no such call here).
    Action {
        /// Which call.
        call: String,
        /// Only a call of this merchant.
        merchant: Option<String>,
        /// The action (`push_page`).
        name: &'static str,
        /// Its JSON.
        body: String,
        /// The browser's answer.
        tx: oneshot::Sender<Option<switchboard_core::module::LegReply>>,
    },
    /// A chat message of a call's room (the agent console): to its record and observers.
    Chat {
        /// The call.
        call: CallRef,
        /// `agent` or `caller`.
        from: &'static str,
        /// The agent's ID (for `agent`).
        agent: Option<String>,
        /// The text.
        text: String,
    },
    /// Graceful shutdown.
    Shutdown,
}

/// What transports hand the SIP thread.
pub enum NetIn {
    Msg(Message, Peer),
    TcpUp(SocketAddr, mpsc::Sender<Bytes>),
    TcpDown(SocketAddr),
    /// A browser leg's SIP (transport Local).
    Local(Bytes, SocketAddr),
    /// A browser leg starts: the core's messages to its Local address go to this channel.
    LocalUp(SocketAddr, mpsc::Sender<Bytes>),
    /// It ended.
    LocalDown(SocketAddr),
}

/// What the engine task needs.
pub struct Shell {
    /// The engine.
    pub engine: Engine,
    /// conf/ directory (for reloads).
    pub conf: PathBuf,
    /// UDP listen address.
    pub udp: Option<SocketAddr>,
    /// TCP listen address.
    pub tcp: Option<SocketAddr>,
    /// Drain time on shutdown.
    pub drain: Duration,
    /// The modules loaded at start (a reload cannot change them).
    pub modules: Vec<String>,
    /// Media relay hub.
    pub media: MediaHub,
    /// Digits seen, by method (rfc4733, info, inband).
    pub digits: Arc<crate::observe::DigitCounts>,
    /// The browser leg (its merchants follow reloads).
    pub web: Option<Arc<crate::web::WebShared>>,
    /// Records, webhooks, metrics and the modules' observers.
    pub observers: crate::observe::Observers,
    /// API actions waiting for their leg's answer, by token.
    pub replies: HashMap<u64, oneshot::Sender<Option<switchboard_core::module::LegReply>>>,
    /// The next action's token.
    pub next_token: u64,
    /// The TCP listeners' connection limits.
    pub gates: Arc<crate::conn::Gates>,
    /// The listeners' certificates.
    pub tls: Arc<TlsSet>,
    /// SIP over TLS listen address.
    pub tls_addr: Option<SocketAddr>,
    /// How to reach the TLS gateways, by address (follows reloads).
    pub tls_clients: HashMap<SocketAddr, crate::tls::TlsClient>,
}

/// The certificates of the listeners that have one.
#[derive(Debug)]
pub struct TlsSet {
    /// SIP over TLS.
    pub sip: Option<Arc<crate::tls::Tls>>,
    /// The admin HTTP listener (HTTPS).
    pub http: Option<Arc<crate::tls::Tls>>,
    /// The widget's own listener (HTTPS, WSS).
    pub widget: Option<Arc<crate::tls::Tls>>,
}

impl TlsSet {
    /// A reload's files: each listener with TLS loads its (new) files; an error keeps the
    /// running certificate and is logged. Adding or removing TLS waits for a restart.
    fn reload(&self, files: &[Option<crate::tls::TlsFiles>; 3]) {
        let all = [
            ("sip", &self.sip),
            ("http", &self.http),
            ("webrtc", &self.widget),
        ];
        for ((name, running), new) in all.into_iter().zip(files) {
            match (running, new) {
                (Some(t), Some(f)) => match t.reload(f.clone()) {
                    Ok(()) => info!(listener = name, "TLS certificate reloaded"),
                    Err(e) => {
                        warn!(listener = name, error = %e, "TLS certificate not reloaded: the running one stays")
                    }
                },
                (None, None) => {}
                _ => warn!(
                    listener = name,
                    "TLS turned on or off: it takes effect at the next restart"
                ),
            }
        }
    }
}

/// API actions that may wait for their answers at once (more are answered 503).
pub const MAX_API_ACTIONS: usize = 1024;

fn wall() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// One metric family with labels: its HELP and TYPE, then a sample per (labels, value).
pub(crate) fn labelled_metric(
    o: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    use std::fmt::Write as _;
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(o, "{name}{{{labels}}} {v}");
    }
}

/// Binds a UDP socket with large buffers (bursts above a few thousand calls/s otherwise
/// overflow the kernel's default receive buffer).
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel caps these at net.core.{r,w}mem_max; asking for more is harmless.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

impl Shell {
    /// Runs until shutdown. Binds first: a bind error is returned before anything runs.
    pub async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut media_rx: mpsc::Receiver<(CallRef, switchboard_media::MediaEvent)>,
        (net_tx, mut net_rx): (mpsc::Sender<NetIn>, mpsc::Receiver<NetIn>),
    ) -> anyhow::Result<()> {
        let mut udp = match self.udp {
            Some(a) => {
                Some(SipUdp::new(bind_udp(a).map_err(|e| {
                    anyhow::anyhow!("cannot bind SIP UDP {a}: {e}")
                })?))
            }
            None => None,
        };
        if let Some(a) = self.tcp {
            let listener = TcpListener::bind(a)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind SIP TCP {a}: {e}"))?;
            tokio::spawn(accept_loop(
                listener,
                self.gates.sip.clone(),
                net_tx.clone(),
            ));
        }
        if let (Some(a), Some(tls)) = (self.tls_addr, self.tls.sip.clone()) {
            let listener = TcpListener::bind(a)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind SIP TLS {a}: {e}"))?;
            tokio::spawn(tls_accept_loop(
                listener,
                tls,
                self.gates.sip.clone(),
                net_tx.clone(),
            ));
        }
        self.gates.sip.set_exempt(self.engine.trusted_nets());
        info!(udp = ?self.udp, tcp = ?self.tcp, tls = ?self.tls_addr, "SIP listening");
        let mut conns: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
        let mut pending: HashMap<SocketAddr, Vec<Bytes>> = HashMap::new();
        let mut drain_deadline: Option<Instant> = None;
        // Starts gateway pings and registrations (the engine learns the time here).
        self.engine
            .handle_timeout(Instant::now().into_std(), wall());
        self.flush(udp.as_mut(), &mut conns, &mut pending, &net_tx)
            .await;
        loop {
            let next = self.engine.poll_timeout().map(Instant::from_std);
            let wake = [next, drain_deadline].into_iter().flatten().min();
            tokio::select! {
                Some(()) = readable(udp.as_ref()) => {
                    // Whatever is queued, up to two batches, before flushing: the answers to
                    // many datagrams then go out together.
                    if let Some(u) = udp.as_mut() {
                        let now = Instant::now().into_std();
                        let (engine, at) = (&mut self.engine, wall());
                        u.read(2 * udp::BATCH, |data, addr| {
                            engine.handle_datagram(now, at, data, Peer { transport: Transport::Udp, addr });
                        });
                    }
                }
                Some(ev) = net_rx.recv() => match ev {
                    NetIn::Msg(msg, peer) => self.engine.handle_message(Instant::now().into_std(), wall(), msg, peer),
                    NetIn::TcpUp(addr, tx) => {
                        for data in pending.remove(&addr).unwrap_or_default() {
                            let _ = tx.try_send(data);
                        }
                        conns.insert(addr, tx);
                    }
                    NetIn::TcpDown(addr) | NetIn::LocalDown(addr) => { conns.remove(&addr); pending.remove(&addr); }
                    NetIn::LocalUp(addr, tx) => { conns.insert(addr, tx); }
                    NetIn::Local(data, addr) => self.engine.handle_datagram(Instant::now().into_std(), wall(), data, Peer { transport: Transport::Local, addr }),
                },
                Some((call, ev)) = media_rx.recv() => {
                    self.engine.handle_media_event(Instant::now().into_std(), call, ev);
                }
                cmd = cmd_rx.recv() => match cmd {
                    Some(Command::Shutdown) | None => {
                        if drain_deadline.is_none() {
                            info!(calls = self.engine.active_calls(), drain_secs = self.drain.as_secs(), "shutting down: refusing new calls, draining");
                            self.engine.begin_shutdown();
                            drain_deadline = Some(Instant::now() + self.drain);
                        }
                    }
                    Some(cmd) => self.command(cmd),
                },
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    self.engine.handle_timeout(now.into_std(), wall());
                    if drain_deadline.is_some_and(|d| d <= now) && self.engine.active_calls() > 0 {
                        warn!(calls = self.engine.active_calls(), "drain time over: hanging up the remaining calls");
                        self.engine.hangup_all(now.into_std(), Cause::SystemShutdown);
                        self.flush(udp.as_mut(), &mut conns, &mut pending, &net_tx).await;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        self.observers.close(Duration::from_secs(2));
                        return Ok(());
                    }
                }
            }
            self.flush(udp.as_mut(), &mut conns, &mut pending, &net_tx)
                .await;
            if drain_deadline.is_some() && self.engine.active_calls() == 0 {
                info!("all calls ended: bye");
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.observers.close(Duration::from_secs(2));
                return Ok(());
            }
        }
    }

    async fn flush(
        &mut self,
        mut udp: Option<&mut SipUdp>,
        conns: &mut HashMap<SocketAddr, mpsc::Sender<Bytes>>,
        pending: &mut HashMap<SocketAddr, Vec<Bytes>>,
        net_tx: &mpsc::Sender<NetIn>,
    ) {
        // Again while handling an output made the engine send (a call refused here).
        let mut again = true;
        while std::mem::take(&mut again) {
            while let Some(tx) = self.engine.poll_transmit() {
                match tx.peer.transport {
                    Transport::Udp => {
                        if let Some(u) = udp.as_deref_mut() {
                            u.push(tx.data, tx.peer.addr);
                        }
                    }
                    Transport::Local => match conns.get(&tx.peer.addr) {
                        Some(c) => {
                            if c.try_send(tx.data).is_err() {
                                debug!(to = %tx.peer.addr, "browser leg gone; message dropped");
                            }
                        }
                        None => debug!(to = %tx.peer.addr, "no such browser leg; message dropped"),
                    },
                    _ => match conns.get(&tx.peer.addr) {
                        Some(c) => {
                            if c.try_send(tx.data).is_err() {
                                warn!(to = %tx.peer.addr, "TCP connection is congested or gone; message dropped");
                            }
                        }
                        // A TLS peer we have no connection to: a gateway of ours is connected
                        // to; anyone else (a caller whose connection closed) cannot be.
                        None if tx.peer.transport == Transport::Tls
                            && !self.tls_clients.contains_key(&tx.peer.addr) =>
                        {
                            debug!(to = %tx.peer.addr, "no TLS connection to this peer; message dropped");
                        }
                        None => {
                            let first = !pending.contains_key(&tx.peer.addr);
                            pending.entry(tx.peer.addr).or_default().push(tx.data);
                            if first {
                                let tls = self
                                    .tls_clients
                                    .get(&tx.peer.addr)
                                    .filter(|_| tx.peer.transport == Transport::Tls)
                                    .cloned();
                                tokio::spawn(connect(
                                    tx.peer.addr,
                                    tls,
                                    self.gates.sip.clone(),
                                    net_tx.clone(),
                                ));
                            }
                        }
                    },
                }
            }
            // The UDP datagrams of this turn, in one system call per batch.
            if let Some(u) = udp.as_deref_mut() {
                u.send().await;
            }
            while let Some(out) = self.engine.poll_output() {
                match out {
                    Output::MediaOpen { call, ports } => {
                        if self.media.open(call, ports).is_err() {
                            // Refused (503 to an unanswered caller) rather than answered with
                            // ports that carry nothing.
                            self.engine.hangup(
                                Instant::now().into_std(),
                                call,
                                switchboard_core::Cause::SwitchCongestion,
                            );
                            again = true;
                        }
                    }
                    Output::MediaRemote {
                        call,
                        side,
                        addr,
                        signalling,
                        sends,
                    } => self.media.remote(call, side, addr, signalling, sends),
                    Output::MediaClose { call } => self.media.close(call),
                    Output::MediaLeg { call, side, media } => self.media.leg(call, side, media),
                    Output::MediaDigit {
                        call,
                        side,
                        digit,
                        ms,
                    } => self.media.digit(call, side, digit, ms),
                    Output::MediaPlay {
                        call,
                        side,
                        what,
                        id,
                    } => self.media.play(call, side, what, id),
                    Output::MediaStop { call, side } => self.media.stop(call, side),
                    Output::Event(ev) => self.observers.dispatch(ev),
                    Output::LegReply { token, reply } => {
                        if let Some(tx) = self.replies.remove(&token) {
                            let _ = tx.send(Some(reply));
                        }
                    }
                }
            }
        }
        self.observers.flush();
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now().into_std();
        match cmd {
            Command::Calls(tx) => {
                let q = self
                    .media
                    .quality
                    .lock()
                    .map(|q| q.clone())
                    .unwrap_or_default();
                let calls = self
                    .engine
                    .calls(now)
                    .into_iter()
                    .map(|c| {
                        let quality = q.get(&c.id).copied();
                        (c, quality)
                    })
                    .collect();
                let _ = tx.send(calls);
            }
            Command::Hangup(call, tx) => {
                let _ = tx.send(self.engine.hangup(now, call, Cause::ManagerRequest));
            }
            Command::Reload(tx) => {
                let _ = tx.send(self.reload());
            }
            Command::Gateways(tx) => {
                let v = self
                    .engine
                    .modules()
                    .get::<Trunk>()
                    .map(|t| {
                        t.gateways()
                            .iter()
                            .map(|g| GatewayView {
                                name: g.name.clone(),
                                address: g.addr.to_string(),
                                transport: g.transport.via_token().to_ascii_lowercase(),
                                up: g.is_up(),
                                registered: g.registration.as_ref().map(|_| g.is_registered(now)),
                                down_reason: g.down_reason().map(str::to_owned),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = tx.send(v);
            }
            Command::SetGateway(name, up, tx) => {
                let done = self
                    .engine
                    .modules_mut()
                    .get_mut::<Trunk>()
                    .is_some_and(|t| t.set_gateway_up(&name, up));
                let _ = tx.send(done);
            }
            Command::Metrics(tx) => {
                let _ = tx.send(self.metrics());
            }
            Command::Bans(tx) => {
                let bans = self
                    .engine
                    .guard()
                    .bans(now)
                    .into_iter()
                    .map(|b| {
                        (
                            b.ip,
                            b.reason.as_str(),
                            b.until.saturating_duration_since(now).as_secs(),
                        )
                    })
                    .collect();
                let _ = tx.send(bans);
            }
            Command::Unban(ip, tx) => {
                let lifted = self.engine.unban(now, ip);
                if lifted {
                    info!(source = %ip, "ban lifted by ops");
                }
                let _ = tx.send(lifted);
            }
            Command::Chat {
                call,
                from,
                agent,
                text,
            } => {
                if !self.engine.chat(call, from, agent, text) {
                    debug!(%call, "a chat message of a call that is over");
                }
            }
            Command::Action {
                call,
                merchant,
                name,
                body,
                tx,
            } => {
                let found = self
                    .engine
                    .find_call(&call)
                    .or_else(|| call.parse().ok().map(CallRef));
                let theirs = |c: &CallRef| {
                    merchant
                        .as_deref()
                        .is_none_or(|m| self.engine.call_fact(*c, "merchant") == Some(m))
                };
                let Some(c) = found.filter(theirs) else {
                    info!(
                        %call,
                        found = found.is_some(),
                        key_of = merchant.as_deref().unwrap_or("(admin)"),
                        call_of = found.and_then(|c| self.engine.call_fact(c, "merchant")).unwrap_or("(none)"),
                        "API action: no such call for this key"
                    );
                    let _ = tx.send(None);
                    return;
                };
                if self.replies.len() >= MAX_API_ACTIONS {
                    let _ = tx.send(Some(switchboard_core::module::LegReply {
                        status: 503,
                        reason: "too many actions waiting for their answer".into(),
                        body: Vec::new(),
                    }));
                    return;
                }
                let token = self.next_token;
                self.next_token += 1;
                let ct = switchboard_core::module::BROWSER_ACTION;
                if self
                    .engine
                    .message_leg(now, c, Side::A, ct, body, token, name)
                {
                    self.replies.insert(token, tx);
                } else {
                    info!(%call, "API action: the call has no caller leg to send it to");
                    let _ = tx.send(None);
                }
            }
            Command::Shutdown => {}
        }
    }

    /// Compiles conf/ again; swaps the dialplan and gateways only when there is no error.
    pub fn reload(&mut self) -> Result<String, String> {
        match crate::config::load(&self.conf) {
            Ok(l) => {
                let n = l.dialplan.len();
                if l.modules != self.modules {
                    let msg = format!(
                        "[modules] load changed ({} -> {}): modules are loaded at start; restart the switch to apply it",
                        self.modules.join(", "),
                        l.modules.join(", ")
                    );
                    error!("reload refused, the running configuration stays: {msg}");
                    return Err(msg);
                }
                if l.engine.udp != self.udp || l.engine.tcp != self.tcp {
                    warn!("listen addresses changed: they take effect at the next restart");
                }
                self.engine.set_dialplan(Arc::new(l.dialplan));
                self.engine.set_access(&l.engine);
                self.gates.set_limits(l.sip_conn, l.http_conn);
                self.tls.reload(&l.tls);
                self.tls_clients = l.tls_clients;
                self.media.prompts = Arc::new(l.prompts);
                self.media.rtp_timeout = l.rtp_timeout;
                self.media.opus_complexity = l.opus_complexity;
                self.media.latching = l.rtp_latching;
                if let Some(t) = self.engine.modules_mut().get_mut::<Trunk>() {
                    t.set_gateways(l.gateways);
                }
                self.engine.refresh_peers();
                self.gates.sip.set_exempt(self.engine.trusted_nets());
                if let Some(hub) = self.web.as_ref().and_then(|w| w.hub.get()) {
                    hub.reconfigure(l.agents);
                }
                if let (Some(web), Some(new)) = (&self.web, l.web) {
                    // New calls see the new merchants; calls in progress were admitted already.
                    *web.cfg
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
                }
                // New gateways start pinging/registering now.
                self.engine
                    .handle_timeout(Instant::now().into_std(), wall());
                info!(extensions = n, "configuration reloaded");
                Ok(format!(
                    "reloaded: {n} extension(s); calls in progress keep their plan"
                ))
            }
            Err(d) => {
                error!("reload refused, the running configuration stays:\n{d}");
                Err(d.to_string())
            }
        }
    }

    fn metrics(&self) -> String {
        let e = &self.engine;
        let s = e.stats();
        let t = e.txn_stats();
        let m = &self.media.counters;
        let mut o = String::with_capacity(2048);
        fn metric(o: &mut String, name: &str, kind: &str, help: &str, value: String) {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        metric(
            &mut o,
            "switchboard_calls_active",
            "gauge",
            "Calls in progress.",
            e.active_calls().to_string(),
        );
        metric(
            &mut o,
            "switchboard_calls_total",
            "counter",
            "Calls accepted for routing.",
            s.calls_total.to_string(),
        );
        metric(
            &mut o,
            "switchboard_sip_transactions_active",
            "gauge",
            "Live SIP transactions.",
            e.active_transactions().to_string(),
        );
        metric(
            &mut o,
            "switchboard_sip_transactions_total",
            "counter",
            "SIP transactions created.",
            t.created.to_string(),
        );
        metric(
            &mut o,
            "switchboard_sip_retransmissions_total",
            "counter",
            "Requests and responses sent again by a timer.",
            t.retransmissions.to_string(),
        );
        metric(
            &mut o,
            "switchboard_sip_retransmissions_absorbed_total",
            "counter",
            "Retransmissions received (absorbed, or 2xx passed on to be re-ACKed).",
            t.absorbed.to_string(),
        );
        metric(
            &mut o,
            "switchboard_sip_transaction_timeouts_total",
            "counter",
            "Timer B/F/H expiries.",
            t.timeouts.to_string(),
        );
        metric(
            &mut o,
            "switchboard_sip_parse_errors_total",
            "counter",
            "Messages that did not parse or validate.",
            s.parse_errors.to_string(),
        );
        labelled_metric(
            &mut o,
            "switchboard_sip_unanswerable_dropped_total",
            "counter",
            "Datagrams that did not parse and could not be answered 400, dropped, by reason.",
            switchboard_sip::salvage::Unanswerable::ALL
                .iter()
                .zip(s.unanswerable)
                .map(|(r, n)| (format!("reason=\"{}\"", r.as_str()), n)),
        );
        metric(
            &mut o,
            "switchboard_sip_requests_total",
            "counter",
            "Requests received.",
            s.requests_in.to_string(),
        );
        let g = e.guard();
        labelled_metric(
            &mut o,
            "switchboard_sip_dropped_total",
            "counter",
            "Requests from untrusted sources dropped unanswered, by reason.",
            DropReason::ALL
                .iter()
                .zip(g.stats.dropped)
                .map(|(r, n)| (format!("reason=\"{}\"", r.as_str()), n)),
        );
        labelled_metric(
            &mut o,
            "switchboard_sip_bans_total",
            "counter",
            "Untrusted sources banned, by reason.",
            BanReason::ALL
                .iter()
                .zip(g.stats.bans)
                .map(|(r, n)| (format!("reason=\"{}\"", r.as_str()), n)),
        );
        labelled_metric(
            &mut o,
            "switchboard_sip_overload_refused_total",
            "counter",
            "Requests answered 503 with Retry-After at a ceiling.",
            Ceiling::ALL
                .iter()
                .zip(g.stats.refused)
                .map(|(c, n)| (format!("ceiling=\"{}\"", c.as_str()), n)),
        );
        metric(
            &mut o,
            "switchboard_sip_banned_sources",
            "gauge",
            "Untrusted sources banned now.",
            g.banned_sources().to_string(),
        );
        metric(
            &mut o,
            "switchboard_sip_tracked_sources",
            "gauge",
            "Untrusted sources whose rate is being followed.",
            g.sources().to_string(),
        );
        metric(
            &mut o,
            "switchboard_sip_server_transactions",
            "gauge",
            "Server transactions held (the ceiling is [limits] max_transactions).",
            e.server_transactions().to_string(),
        );
        self.gates.metrics(&mut o);
        metric(
            &mut o,
            "switchboard_calls_untrusted",
            "gauge",
            "Calls from untrusted sources in progress (the ceiling is [limits] max_untrusted_calls).",
            g.untrusted_calls().to_string(),
        );
        metric(
            &mut o,
            "switchboard_calls_pending",
            "gauge",
            "Calls being set up, not yet answered and ACKed (the ceiling is [limits] max_pending_calls).",
            e.pending_calls().to_string(),
        );
        metric(
            &mut o,
            "switchboard_sip_responses_total",
            "counter",
            "Responses received.",
            s.responses_in.to_string(),
        );
        let _ = writeln!(
            o,
            "# HELP switchboard_rtp_relayed_packets_total RTP packets relayed, by direction.\n# TYPE switchboard_rtp_relayed_packets_total counter\n\
             switchboard_rtp_relayed_packets_total{{direction=\"a_to_b\"}} {}\nswitchboard_rtp_relayed_packets_total{{direction=\"b_to_a\"}} {}",
            m.rtp_a_to_b.load(Ordering::Relaxed),
            m.rtp_b_to_a.load(Ordering::Relaxed)
        );
        metric(
            &mut o,
            "switchboard_rtcp_received_packets_total",
            "counter",
            "RTCP packets received (terminated at the switch).",
            m.rtcp_in.load(Ordering::Relaxed).to_string(),
        );
        metric(
            &mut o,
            "switchboard_rtp_received_packets_total",
            "counter",
            "RTP packets received from legs (ended calls).",
            m.rx_packets.load(Ordering::Relaxed).to_string(),
        );
        metric(
            &mut o,
            "switchboard_rtp_lost_packets_total",
            "counter",
            "RTP packets lost before reaching the switch, from sequence gaps (ended calls).",
            m.rx_lost.load(Ordering::Relaxed).to_string(),
        );
        metric(
            &mut o,
            "switchboard_srtp_refused_packets_total",
            "counter",
            "SRTP and SRTCP packets refused: failed authentication or replayed (ended calls).",
            m.srtp_refused.load(Ordering::Relaxed).to_string(),
        );
        let (jitter_max, rtt_max) = self.media.quality.lock().map_or((0.0, 0.0), |q| {
            q.values().flatten().fold((0.0f64, 0.0f64), |(j, r), l| {
                (j.max(l.rx_jitter_ms), r.max(l.rtt_ms.unwrap_or(0.0)))
            })
        });
        metric(
            &mut o,
            "switchboard_rtp_jitter_max_ms",
            "gauge",
            "Highest interarrival jitter among the legs of calls in progress, ms.",
            format!("{jitter_max:.1}"),
        );
        metric(
            &mut o,
            "switchboard_rtp_rtt_max_ms",
            "gauge",
            "Highest round-trip time (RTCP) among the legs of calls in progress, ms.",
            format!("{rtt_max:.1}"),
        );
        metric(
            &mut o,
            "switchboard_rtp_concealed_frames_total",
            "counter",
            "Frames the jitter buffers concealed (lost or late packets), ended calls.",
            m.concealed.load(Ordering::Relaxed).to_string(),
        );
        metric(
            &mut o,
            "switchboard_media_timeouts_total",
            "counter",
            "Calls hung up because RTP stopped (media.rtp_timeout).",
            m.timeouts.load(Ordering::Relaxed).to_string(),
        );
        metric(
            &mut o,
            "switchboard_media_bind_failures_total",
            "counter",
            "Calls refused (503) because their RTP ports could not be bound (taken, or no file descriptor left).",
            m.bind_failures.load(Ordering::Relaxed).to_string(),
        );
        let _ = writeln!(
            o,
            "# HELP switchboard_dtmf_digits_total Digits seen on any leg, by how they came.\n\
             # TYPE switchboard_dtmf_digits_total counter\n\
             switchboard_dtmf_digits_total{{method=\"rfc4733\"}} {}\n\
             switchboard_dtmf_digits_total{{method=\"info\"}} {}\n\
             switchboard_dtmf_digits_total{{method=\"inband\"}} {}",
            self.digits.0[0].load(Ordering::Relaxed),
            self.digits.0[1].load(Ordering::Relaxed),
            self.digits.0[2].load(Ordering::Relaxed)
        );
        metric(
            &mut o,
            "switchboard_rtp_dropped_packets_total",
            "counter",
            "Media packets dropped.",
            m.dropped.load(Ordering::Relaxed).to_string(),
        );
        metric(
            &mut o,
            "switchboard_media_relays_active",
            "gauge",
            "Media relays running.",
            self.media.len().to_string(),
        );
        let _ = writeln!(
            o,
            "# HELP switchboard_calls_ended_total Calls ended, by hang-up cause.\n# TYPE switchboard_calls_ended_total counter"
        );
        let mut causes: Vec<_> = s.ended_by_cause.iter().collect();
        causes.sort();
        for (cause, n) in causes {
            let _ = writeln!(o, "switchboard_calls_ended_total{{cause=\"{cause}\"}} {n}");
        }
        e.modules().metrics(Instant::now().into_std(), &mut o);
        self.observers.metrics(&mut o);
        o
    }
}

/// The SIP socket has something to read (never, without one).
async fn readable(udp: Option<&SipUdp>) -> Option<()> {
    match udp {
        Some(u) => u.readable().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn accept_loop(listener: TcpListener, gate: Arc<Gate>, net: mpsc::Sender<NetIn>) {
    loop {
        let (stream, peer, permit) = crate::conn::accept(&listener, &gate).await;
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            Transport::Tcp,
            peer,
            permit,
            gate.clone(),
            net.clone(),
        ));
    }
}

/// SIP over TLS: each handshake on its own task, within the message timeout.
async fn tls_accept_loop(
    listener: TcpListener,
    tls: Arc<crate::tls::Tls>,
    gate: Arc<Gate>,
    net: mpsc::Sender<NetIn>,
) {
    loop {
        let (stream, peer, permit) = crate::conn::accept(&listener, &gate).await;
        let _ = stream.set_nodelay(true);
        let (tls, gate, net) = (tls.clone(), gate.clone(), net.clone());
        tokio::spawn(async move {
            match tls.accept(stream, gate.limits().message_timeout).await {
                Some(s) => connection(s, Transport::Tls, peer, permit, gate, net).await,
                None => {
                    gate.stats
                        .slow
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }
}

async fn connect(
    addr: SocketAddr,
    tls: Option<crate::tls::TlsClient>,
    gate: Arc<Gate>,
    net: mpsc::Sender<NetIn>,
) {
    let Some(permit) = gate.admit(addr) else {
        let _ = net.send(NetIn::TcpDown(addr)).await;
        return;
    };
    if let Some(client) = tls {
        match crate::tls::connect(addr, &client, Duration::from_secs(5)).await {
            Ok(s) => connection(s, Transport::Tls, addr, permit, gate, net).await,
            Err(e) => {
                warn!(to = %addr, error = %e, "cannot connect over TLS");
                let _ = net.send(NetIn::TcpDown(addr)).await;
            }
        }
        return;
    }
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            connection(stream, Transport::Tcp, addr, permit, gate, net).await
        }
        _ => {
            warn!(to = %addr, "cannot connect over TCP");
            let _ = net.send(NetIn::TcpDown(addr)).await;
        }
    }
}

/// One TCP connection: frames messages by Content-Length in, writes what the engine sends.
/// A message must complete within the message timeout of its first byte; a connection that
/// carries nothing either way for the idle timeout is closed (the engine opens a new one
/// when it has something to send). CRLF keep-alives are skipped, and a double-CRLF ping is
/// answered with a CRLF pong (RFC 5626 §4.4.1).
async fn connection<S>(
    stream: S,
    transport: Transport,
    peer: SocketAddr,
    _permit: crate::conn::Permit,
    gate: Arc<Gate>,
    net: mpsc::Sender<NetIn>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    if net.send(NetIn::TcpUp(peer, tx.clone())).await.is_err() {
        return;
    }
    // The last moment anything was written (ms since `epoch`), for the idle timeout.
    let epoch = Instant::now();
    let wrote = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let wrote = wrote.clone();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                // TLS buffers what it encrypts: flushed so the peer gets it now.
                if wr.write_all(&data).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
                wrote.store(
                    epoch.elapsed().as_millis() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        })
    };
    let mut buf = BytesMut::with_capacity(8192);
    let from = Peer {
        transport,
        addr: peer,
    };
    let mut last_read = Instant::now();
    // When the message now in `buf` began.
    let mut started: Option<Instant> = None;
    // A connection that carried a message may carry a dialog's requests later (a BYE to a
    // caller goes back on it, the caller's port behind NAT cannot be connected to): only
    // one that never did is closed for idling.
    let mut used = false;
    'read: loop {
        let limits = gate.limits();
        let last_write =
            epoch + Duration::from_millis(wrote.load(std::sync::atomic::Ordering::Relaxed));
        let idle_at = limits
            .idle_timeout
            .filter(|_| !used)
            .map(|t| last_read.max(last_write) + t);
        let slow_at = started.map(|t| t + limits.message_timeout);
        let deadline = [idle_at, slow_at].into_iter().flatten().min();
        let read = match deadline {
            Some(at) => match tokio::time::timeout_at(at, rd.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    // Writes since the deadline was computed count as activity.
                    let last_write = epoch
                        + Duration::from_millis(wrote.load(std::sync::atomic::Ordering::Relaxed));
                    let now = Instant::now();
                    let slow = slow_at.is_some_and(|t| t <= now);
                    if !slow
                        && (used
                            || limits
                                .idle_timeout
                                .is_some_and(|t| now < last_read.max(last_write) + t))
                    {
                        continue;
                    }
                    let (counter, what) = if slow {
                        (&gate.stats.slow, "a message that did not complete in time")
                    } else {
                        (&gate.stats.idle, "an idle connection")
                    };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    debug!(peer = %peer, "closing TCP: {what}");
                    break 'read;
                }
            },
            None => rd.read_buf(&mut buf).await,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => last_read = Instant::now(),
        }
        loop {
            // Keep-alives between messages: CRLF pings (a pong for each double CRLF).
            let crlf = buf
                .iter()
                .take_while(|&&c| c == b'\r' || c == b'\n')
                .count();
            if crlf > 0 {
                let pings = buf[..crlf].windows(4).filter(|w| w == b"\r\n\r\n").count();
                let _ = buf.split_to(crlf);
                if pings > 0 {
                    let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                }
            }
            if buf.is_empty() {
                started = None;
                break;
            }
            let frozen = buf.split().freeze();
            match parse_stream(&frozen) {
                Ok((msg, n)) => {
                    buf.extend_from_slice(&frozen[n..]);
                    started = None;
                    used = true;
                    if net.send(NetIn::Msg(msg, from)).await.is_err() {
                        break 'read;
                    }
                }
                Err(ParseError::Incomplete) => {
                    buf.extend_from_slice(&frozen);
                    started.get_or_insert(last_read);
                    break;
                }
                Err(e) => {
                    // The stream lost its framing: nothing after this point can be trusted.
                    debug!(peer = %peer, error = %e, "closing TCP connection after a framing error");
                    break 'read;
                }
            }
        }
    }
    writer.abort();
    let _ = net.send(NetIn::TcpDown(peer)).await;
}
