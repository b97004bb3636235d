//! The engine: every call of the switch, driven through one transaction layer.
//!
//! Input (always with the current time): [`Engine::handle_datagram`] for bytes from a
//! transport, [`Engine::handle_timeout`] when [`Engine::poll_timeout`] is due, and the ops
//! commands ([`Engine::hangup`], [`Engine::set_dialplan`], [`Engine::begin_shutdown`]).
//! Output, polled after each input: [`Engine::poll_transmit`] (bytes to write) and
//! [`Engine::poll_output`] (media and call events for the shell).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use switchboard_dialplan::{Cause, Dialplan, Facts};
use switchboard_media::{DtmfMethod, LegMedia, PortPool, Side};
use switchboard_sip::transaction::{
    Peer, TransactionLayer, Transmit, Transport, TxnEvent, TxnId, make_response,
};
use switchboard_sip::{Message, Method, Name, ParseError, Request, Response, parse_datagram};
use tracing::{debug, info, warn};

use crate::call::{Call, CallInfo, CallSummary, MediaPorts};
use crate::config::EngineConfig;
use crate::guard::{Ceiling, DropReason, Failure, Guard, PeerRule};
use crate::ids::{CallRef, IdGen};
use crate::module::{AttemptError, CallEvent, Registry};
use crate::play::Play;

/// foldhash: seeded per process, much cheaper than SipHash on these short keys.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Methods we implement (Allow header).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY, REFER, MESSAGE";
/// Option tags we support.
const SUPPORTED: &[&str] = &["replaces", "timer"];

/// What the shell must do besides sending bytes.
#[derive(Debug, Clone)]
pub enum Output {
    /// Bind the relay ports of a call (`ports.a` for leg A, `ports.b` for leg B, RTCP on +1).
    MediaOpen {
        /// The call.
        call: CallRef,
        /// Its ports.
        ports: MediaPorts,
    },
    /// A leg's SDP said where it receives RTP.
    MediaRemote {
        /// The call.
        call: CallRef,
        /// Which leg.
        side: Side,
        /// Its RTP address (None: on hold).
        addr: Option<SocketAddr>,
        /// Where its signalling comes from (the other address its RTP may come from, behind
        /// NAT); None for an in-process leg.
        signalling: Option<std::net::IpAddr>,
        /// It will send RTP (not on hold, not `recvonly`/`inactive`): its silence counts
        /// towards the RTP timeout.
        sends: bool,
    },
    /// A leg's codec, payload types and DTMF form (after offer/answer).
    MediaLeg {
        /// The call.
        call: CallRef,
        /// Which leg.
        side: Side,
        /// Its media.
        media: LegMedia,
    },
    /// Send a digit to a leg as RFC 4733 events or tones (it came in SIP INFO).
    MediaDigit {
        /// The call.
        call: CallRef,
        /// The leg to send it to.
        side: Side,
        /// The digit.
        digit: char,
        /// Duration, ms.
        ms: u32,
    },
    /// Play a prompt or a tone to a leg; the engine waits for `MediaEvent::PlayDone(id)`.
    MediaPlay {
        /// The call.
        call: CallRef,
        /// The leg.
        side: Side,
        /// What.
        what: Play,
        /// Reported back when done.
        id: u32,
    },
    /// Stop what plays to a leg.
    MediaStop {
        /// The call.
        call: CallRef,
        /// The leg.
        side: Side,
    },
    /// Unbind the relay of a call.
    MediaClose {
        /// The call.
        call: CallRef,
    },
    /// Something observers want to know (records, webhooks, metrics, consoles).
    Event(CallEvent),
    /// The answer to a message sent with [`Engine::message_leg`].
    LegReply {
        /// The token it was sent with.
        token: u64,
        /// The leg's answer (408 when none came).
        reply: crate::module::LegReply,
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// Calls accepted for routing.
    pub calls_total: u64,
    /// Calls ended, by cause.
    pub ended_by_cause: HashMap<&'static str, u64>,
    /// Messages that did not parse or validate.
    pub parse_errors: u64,
    /// Datagrams dropped unanswered because they could not be answered, by
    /// [`switchboard_sip::salvage::Unanswerable`] (not a request, an ACK, unreadable headers).
    pub unanswerable: [u64; 3],
    /// Requests received.
    pub requests_in: u64,
    /// Responses received.
    pub responses_in: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ClientRole {
    Attempt(CallRef),
    Relay(CallRef),
    Bye,
    Cancel,
    /// An INFO we send (a digit, a leg app's message): nothing waits for its answer.
    Info,
    /// A leg app's message whose answer the app wants: (call, the app's index, its tag).
    AppMessage {
        call: CallRef,
        app: usize,
        tag: u64,
    },
    /// A session refresh of ours (RFC 4028) to a leg.
    Refresh(CallRef, Side),
    /// A message from outside the call (the CRM API): its answer is an output, and an
    /// action report named `name`.
    External {
        call: CallRef,
        token: u64,
        name: &'static str,
    },
    /// A module service's request: (service, cookie).
    Service(usize, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallTimer {
    Ring(TxnId),
    /// `read_digits` waited long enough (generation, to ignore stale timers).
    Digits(u32),
    /// A call an invite filter asked to wait tries its target again.
    Retry,
    /// A leg app's timer.
    App,
    /// A leg's session timer (RFC 4028): our refresh, or its expiry (generation).
    Session(Side, u32),
    /// The transferor had its NOTIFY 200 and time to hang up: we hang it up.
    TransferorBye,
}

/// The B2BUA engine. Sans-IO: no socket, no clock.
#[derive(Debug)]
pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) txn: TransactionLayer,
    pub(crate) dialplan: Arc<Dialplan>,
    pub(crate) modules: Registry,
    /// Boxed: a table sized for a peak of calls holds pointers, not 1.2 KB slots.
    pub(crate) calls: HashMap<CallRef, Box<Call>>,
    /// (Call-ID, our tag), hashed with `dialog_keys` → call and side, for in-dialog
    /// requests (a look-up checks the call's dialog: `dialog_of`). A hash, not the strings:
    /// memory per established call.
    pub(crate) dialogs: HashMap<u64, (CallRef, Side)>,
    /// The process's secret seed for `dialogs` keys (nobody outside can aim at a key).
    pub(crate) dialog_keys: std::collections::hash_map::RandomState,
    pub(crate) server_invites: HashMap<TxnId, CallRef>,
    pub(crate) clients: HashMap<TxnId, ClientRole>,
    /// Leg B Call-IDs we created (loop detection).
    pub(crate) b_call_ids: HashMap<ByteString, CallRef>,
    pub(crate) timers: BinaryHeap<Reverse<(Instant, CallRef, u64)>>,
    pub(crate) timer_kinds: HashMap<u64, CallTimer>,
    pub(crate) next_timer: u64,
    pub(crate) ports: PortPool,
    /// Client INVITEs that had a provisional response (CANCEL may be sent).
    pub(crate) provisional_seen: TxnSet,
    /// Client INVITEs to CANCEL as soon as a provisional arrives.
    pub(crate) cancel_wanted: TxnSet,
    /// Client INVITEs cancelled because another fork answered (their CANCEL says so).
    pub(crate) cancel_elsewhere: TxnSet,
    pub(crate) cancel_sent: TxnSet,
    pub(crate) late_byes: TxnSet,
    pub(crate) ids: IdGen,
    next_call: u64,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) stats: EngineStats,
    shutting_down: bool,
    last_sweep: Option<Instant>,
    /// Per-source limits and bans of untrusted sources.
    pub(crate) guard: Guard,
    /// The sources the modules vouch for (gateways), cached from [`Registry::peers`].
    peers: Vec<PeerRule>,
    /// Calls whose both legs are confirmed (the others are being set up).
    pub(crate) up_calls: usize,
}

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// An in-process leg (a browser, a console).
    Local,
    /// In `[sip] trusted`.
    Trusted,
    /// A module's peer (a gateway): index into the cached rules.
    Peer(usize),
    /// Anyone else: limited, banned, and routed in the public context.
    Untrusted,
}

impl Engine {
    /// A new engine. `seed` feeds tag/branch/Call-ID generation (take it from the OS).
    /// Call [`Engine::handle_timeout`] once when the transports are up: the modules'
    /// services (gateway pings and registrations) start there.
    pub fn new(cfg: EngineConfig, dialplan: Arc<Dialplan>, modules: Registry, seed: u64) -> Engine {
        let cfg_limits = cfg.limits.clone();
        let peers = modules.peers();
        Engine {
            txn: TransactionLayer::new(cfg.timers),
            ports: PortPool::new(cfg.rtp_ports.0, cfg.rtp_ports.1),
            provisional_seen: TxnSet::default(),
            cancel_wanted: TxnSet::default(),
            cancel_elsewhere: TxnSet::default(),
            cancel_sent: TxnSet::default(),
            late_byes: TxnSet::default(),
            cfg,
            dialplan,
            modules,
            calls: HashMap::default(),
            dialogs: HashMap::default(),
            dialog_keys: Default::default(),
            server_invites: HashMap::default(),
            clients: HashMap::default(),
            b_call_ids: HashMap::default(),
            timers: BinaryHeap::new(),
            timer_kinds: HashMap::default(),
            next_timer: 0,
            ids: IdGen::new(seed),
            next_call: 1,
            outputs: VecDeque::new(),
            stats: EngineStats::default(),
            shutting_down: false,
            last_sweep: None,
            guard: Guard::new(cfg_limits),
            peers,
            up_calls: 0,
        }
    }

    // ---- ops -------------------------------------------------------------------------

    /// Swaps in a new dialplan; calls in progress keep the plan they computed.
    pub fn set_dialplan(&mut self, dialplan: Arc<Dialplan>) {
        self.dialplan = dialplan;
    }

    /// A reload's new rules of access: contexts, trusted sources, limits and the ceiling of
    /// calls (listen addresses, timers and media settings wait for a restart). Bans stay.
    pub fn set_access(&mut self, cfg: &EngineConfig) {
        self.cfg.context.clone_from(&cfg.context);
        self.cfg.public_context.clone_from(&cfg.public_context);
        self.cfg.transfer_context.clone_from(&cfg.transfer_context);
        self.cfg.trusted.clone_from(&cfg.trusted);
        self.cfg.max_calls = cfg.max_calls;
        self.cfg.limits = cfg.limits.clone();
        self.guard.set_limits(cfg.limits.clone());
        self.refresh_peers();
    }

    /// Reads again the sources the modules vouch for (after a module's configuration
    /// changed: new gateways).
    pub fn refresh_peers(&mut self) {
        self.peers = self.modules.peers();
    }

    /// Every source ops vouch for: `[sip] trusted` and the modules' peers (gateways).
    pub fn trusted_nets(&self) -> Vec<crate::Cidr> {
        self.cfg
            .trusted
            .iter()
            .copied()
            .chain(self.peers.iter().map(|p| p.net))
            .collect()
    }

    /// The per-source limits: counters, bans.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Lifts the ban of a source; `false` when it was not banned.
    pub fn unban(&mut self, now: Instant, ip: std::net::IpAddr) -> bool {
        self.guard.unban(now, ip)
    }

    /// Calls being set up (not yet answered and ACKed).
    pub fn pending_calls(&self) -> usize {
        self.calls.len().saturating_sub(self.up_calls)
    }

    /// Server transactions held.
    pub fn server_transactions(&self) -> usize {
        self.txn.servers()
    }

    pub(crate) fn trust(&self, from: Peer) -> Trust {
        if from.transport == Transport::Local {
            return Trust::Local;
        }
        let ip = from.addr.ip();
        if self.cfg.trusted.iter().any(|c| c.contains(ip)) {
            return Trust::Trusted;
        }
        match self.peers.iter().position(|p| p.net.contains(ip)) {
            Some(i) => Trust::Peer(i),
            None => Trust::Untrusted,
        }
    }

    /// The RTP port pool, shared (the browser leg's sockets take from it too).
    pub fn port_pool(&self) -> PortPool {
        self.ports.clone()
    }

    /// The modules (the shell's typed operations: `ctl gateways`, reloads).
    pub fn modules(&self) -> &Registry {
        &self.modules
    }

    /// The modules, to change one (call [`Engine::handle_timeout`] afterwards: a service
    /// that has new work starts it there).
    pub fn modules_mut(&mut self) -> &mut Registry {
        &mut self.modules
    }

    /// Stop taking calls: new INVITEs get 503 from now on.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Live transactions.
    pub fn active_transactions(&self) -> usize {
        self.txn.len()
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Transaction counters.
    pub fn txn_stats(&self) -> switchboard_sip::transaction::TxnStats {
        self.txn.stats()
    }

    /// The live calls.
    pub fn calls(&self, now: Instant) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self
            .calls
            .values()
            .map(|c| CallInfo {
                id: c.id,
                state: c.state,
                a_call_id: c
                    .a
                    .invite
                    .headers
                    .call_id()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                b_call_id: c
                    .winner
                    .and_then(|i| c.attempts.get(i))
                    .map(|a| a.call_id.clone()),
                destination: c.destination.clone(),
                caller: c.caller.clone(),
                target: c
                    .winner
                    .or(c.attempts.len().checked_sub(1))
                    .map(|i| c.attempts[i].target.clone()),
                age_secs: now.saturating_duration_since(c.started).as_secs(),
                media: c.media,
                legs: [0, 1].map(|i| {
                    let f = c.m.fmt[i].as_ref()?;
                    let l = c.m.legs[i].as_ref()?;
                    Some((f.name.clone(), l.dtmf.as_str().to_owned()))
                }),
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Hangs up a call by hand (cause MANAGER_REQUEST or SYSTEM_SHUTDOWN).
    pub fn hangup(&mut self, now: Instant, call: CallRef, cause: Cause) -> bool {
        if !self.calls.contains_key(&call) {
            return false;
        }
        self.teardown(now, call, cause, None);
        true
    }

    /// Hangs up every call (end of the shutdown drain).
    pub fn hangup_all(&mut self, now: Instant, cause: Cause) {
        let ids: Vec<CallRef> = self.calls.keys().copied().collect();
        for id in ids {
            self.teardown(now, id, cause, None);
        }
    }

    // ---- I/O surface -------------------------------------------------------------------

    /// Next bytes to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.txn.poll_transmit()
    }

    /// Next event for the shell.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Engine::handle_timeout`] next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, call, id))) = self.timers.peek().copied() {
            if self.calls.contains_key(&call) && self.timer_kinds.contains_key(&id) {
                break;
            }
            self.timers.pop();
            let _ = at;
            self.timer_kinds.remove(&id);
        }
        let ours = self.timers.peek().map(|Reverse((at, _, _))| *at);
        [
            ours,
            self.txn.poll_timeout(),
            self.modules.services_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Bytes arrived from a transport.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        wall: jiff::Timestamp,
        data: Bytes,
        from: Peer,
    ) {
        if self.guard.banned_sources() > 0
            && from.transport != Transport::Local
            && self.guard.banned(now, from.addr.ip())
        {
            // Not even parsed: a banned source costs a hash look-up per datagram.
            return;
        }
        let msg = match parse_datagram(data.clone()) {
            Ok(m) => m,
            Err(ParseError::Incomplete) if from.transport == Transport::Udp => {
                if data.iter().all(u8::is_ascii_whitespace) {
                    // A keep-alive (CRLF, RFC 5626 §3.5.1): nothing to answer.
                    return;
                }
                self.stats.parse_errors += 1;
                let reason = if switchboard_sip::salvage::has_bare_lf(&data) {
                    "Bad Request (line ends are not CRLF)"
                } else {
                    "Bad Request (the head does not end)"
                };
                self.refuse_unparsed(now, &data, reason, from);
                return;
            }
            Err(e) => {
                self.stats.parse_errors += 1;
                self.refuse_unparsed(now, &data, &e.reason_phrase(), from);
                return;
            }
        };
        self.handle_message(now, wall, msg, from);
    }

    /// A datagram the parser refused: a 400 when it can be answered (RFC 3261 §8.2: its Via,
    /// From, To, Call-ID and CSeq can be read), else dropped — counted by why, and logged at
    /// debug either way.
    fn refuse_unparsed(&mut self, now: Instant, data: &[u8], reason: &str, from: Peer) {
        match switchboard_sip::salvage::bad_request(data, reason) {
            Ok((status, resp)) => {
                debug!(peer = %from.addr, %reason, status, "unparseable request answered");
                self.txn.send_raw(from, resp);
                self.note_failure(now, from, status);
            }
            Err(why) => {
                self.stats.unanswerable[why as usize] += 1;
                debug!(peer = %from.addr, %reason, ?why, "unparseable message dropped: it cannot be answered");
            }
        }
    }

    /// A message framed by a stream transport (or parsed elsewhere).
    pub fn handle_message(
        &mut self,
        now: Instant,
        wall: jiff::Timestamp,
        msg: Message,
        from: Peer,
    ) {
        // Who sent it, once per request; the source's limits first: a malformed request
        // costs its sender like any other.
        let trust = match &msg {
            Message::Request(_) => self.trust(from),
            Message::Response(_) => Trust::Local,
        };
        if let Message::Request(req) = &msg
            && !self.admit_source(now, req, from, trust)
        {
            return;
        }
        if let Err(e) = msg.validate() {
            self.stats.parse_errors += 1;
            if let Message::Request(req) = &msg
                && req.method != Method::Ack
                && req.headers.top_via().is_ok()
            {
                let mut resp = make_response(req, 400, None);
                resp.reason = ByteString::from(e.reason_phrase());
                self.txn.send_stateless(
                    switchboard_sip::transaction::response_peer(req, from),
                    &Message::Response(resp),
                );
                self.note_failure(now, from, 400);
            } else if let Message::Request(req) = &msg
                && req.method != Method::Ack
            {
                // Its top Via is unreadable as a Via (`;;,;,,`): what can be read of it is
                // copied into the 400 (RFC 4475 §3.1.2.1).
                let raw = msg.to_bytes();
                self.refuse_unparsed(now, &raw, &e.reason_phrase(), from);
                return;
            } else {
                use switchboard_sip::salvage::Unanswerable as U;
                let why = match &msg {
                    Message::Response(_) => U::NotARequest,
                    Message::Request(_) => U::Ack,
                };
                self.stats.unanswerable[why as usize] += 1;
            }
            debug!(peer = %from.addr, error = %e, "invalid message");
            return;
        }
        let mut msg = msg;
        take_sdp_part(&mut msg);
        match &msg {
            Message::Request(_) => self.stats.requests_in += 1,
            Message::Response(_) => self.stats.responses_in += 1,
        }
        if let Message::Request(req) = &msg
            && !self.admit(req, from, trust)
        {
            return;
        }
        self.txn.handle_message(now, msg, from);
        self.drain_txn_events(now, wall);
    }

    /// A request past its source's limits (untrusted sources only): `false` when dropped.
    fn admit_source(&mut self, now: Instant, req: &Request, from: Peer, trust: Trust) -> bool {
        if trust != Trust::Untrusted {
            return true;
        }
        let ua = req.headers.get(&Name::UserAgent).map(|v| &**v);
        match self.guard.admit(now, from.addr.ip(), ua) {
            Ok(()) => true,
            Err(why) => {
                if why != DropReason::Banned {
                    debug!(source = %from.addr, reason = why.as_str(), method = %req.method, "request dropped unanswered");
                }
                false
            }
        }
    }

    /// A request past the global ceilings: `false` when refused here (503).
    fn admit(&mut self, req: &Request, from: Peer, trust: Trust) -> bool {
        let ceiling = if trust == Trust::Untrusted {
            self.cfg.limits.max_untrusted_transactions
        } else {
            self.cfg.limits.max_transactions
        };
        if self.txn.servers() >= ceiling && self.txn.opens_transaction(req, from) {
            let resp = make_response(req, 503, None);
            self.refuse_overloaded(resp, Ceiling::Transactions, from, req);
            return false;
        }
        true
    }

    /// A 503 with `Retry-After` at a ceiling, sent without a transaction (it holds nothing).
    fn refuse_overloaded(&mut self, mut resp: Response, what: Ceiling, from: Peer, req: &Request) {
        self.guard.stats.refused[what as usize] += 1;
        self.decorate(&mut resp);
        resp.headers
            .push(Name::RetryAfter, self.cfg.limits.retry_after.to_string());
        debug!(source = %from.addr, ceiling = what.as_str(), "overloaded: 503 with Retry-After");
        self.txn.send_stateless(
            switchboard_sip::transaction::response_peer(req, from),
            &Message::Response(resp),
        );
    }

    /// Counts a failure answer to an untrusted source (scanners collect them).
    pub(crate) fn note_failure(&mut self, now: Instant, peer: Peer, status: u16) {
        let failure = (400..500).contains(&status)
            && !matches!(status, 408 | 422 | 423 | 480 | 486 | 487 | 488 | 491);
        if failure
            && self.trust(peer) == Trust::Untrusted
            && self.guard.failure(now, peer.addr.ip()) == Failure::Banned
        {
            debug!(source = %peer.addr, status, "failure answers: the source is banned");
        }
    }

    /// Timers are due.
    pub fn handle_timeout(&mut self, now: Instant, wall: jiff::Timestamp) {
        self.txn.handle_timeout(now);
        while let Some(Reverse((at, call, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(kind) = self.timer_kinds.remove(&id) {
                self.fire_call_timer(now, call, kind);
            }
        }
        // Bookkeeping of INVITE transactions lives as long as they can (64·T1, and some);
        // swept once a second, not on every timer.
        let horizon = self.cfg.timers.timeout() * 2;
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return self.after_timeout(now, wall);
        }
        self.last_sweep = Some(now);
        self.guard.sweep(now);
        // The count of confirmed calls is kept as they change; recounted here so that no
        // path that forgets a call can skew the ceiling of calls being set up.
        self.up_calls = self
            .calls
            .values()
            .filter(|c| c.state == crate::call::CallState::Up)
            .count();
        self.guard
            .recount_calls(self.calls.values().filter_map(|c| c.untrusted));
        self.txn.shrink();
        shrink_map(&mut self.calls);
        shrink_map(&mut self.dialogs);
        shrink_map(&mut self.server_invites);
        shrink_map(&mut self.clients);
        shrink_map(&mut self.b_call_ids);
        shrink_map(&mut self.timer_kinds);
        for set in [
            &mut self.provisional_seen,
            &mut self.cancel_wanted,
            &mut self.cancel_elsewhere,
            &mut self.cancel_sent,
            &mut self.late_byes,
        ] {
            set.purge(now, horizon);
        }
        self.after_timeout(now, wall);
    }

    fn after_timeout(&mut self, now: Instant, wall: jiff::Timestamp) {
        self.run_services(now);
        self.drain_txn_events(now, wall);
    }

    pub(crate) fn schedule(&mut self, at: Instant, call: CallRef, kind: CallTimer) {
        self.next_timer += 1;
        self.timer_kinds.insert(self.next_timer, kind);
        self.timers.push(Reverse((at, call, self.next_timer)));
    }

    fn drain_txn_events(&mut self, now: Instant, wall: jiff::Timestamp) {
        while let Some(ev) = self.txn.poll_event() {
            match ev {
                TxnEvent::Request { id, req, from } => self.on_request(now, wall, id, req, from),
                TxnEvent::Cancelled { invite } => self.on_cancelled(now, invite),
                TxnEvent::Ack { req, from } => self.on_ack(now, req, from),
                TxnEvent::Response { id, resp } => self.on_response(now, id, resp),
                TxnEvent::Timeout { id } => self.on_client_timeout(now, id),
                TxnEvent::AckTimeout { id } => self.on_ack_timeout(now, id),
                TxnEvent::StrayResponse { resp, from } => self.on_stray_response(resp, from),
            }
        }
    }

    // ---- requests outside dialogs --------------------------------------------------------

    pub(crate) fn respond(&mut self, now: Instant, txn: TxnId, status: u16, tag: Option<&str>) {
        self.respond_with(now, txn, status, tag, |_| {});
    }

    /// [`Engine::respond`], with what `edit` adds (a reason, a header that says why).
    pub(crate) fn respond_with(
        &mut self,
        now: Instant,
        txn: TxnId,
        status: u16,
        tag: Option<&str>,
        edit: impl FnOnce(&mut Response),
    ) {
        // §8.2.6.2: a final answer to a request outside a dialog carries a To tag of ours.
        let fresh;
        let tag = match tag {
            Some(t) => Some(t),
            None if status > 100 => {
                fresh = self.ids.tag();
                Some(fresh.as_str())
            }
            None => None,
        };
        let Some(req) = self.txn.server_request(txn) else {
            return;
        };
        let method = req.method.clone();
        let mut resp = make_response(req, status, tag);
        self.decorate(&mut resp);
        match status {
            // §21.4.6: the methods we allow, never the one refused.
            405 => {
                resp.headers.remove(&Name::Allow);
                let allow: Vec<&str> = ALLOW
                    .split(", ")
                    .filter(|m| !m.eq_ignore_ascii_case(method.as_str()))
                    .collect();
                resp.headers.push(Name::Allow, allow.join(", "));
            }
            // §21.4.13: what we accept.
            415 => resp.headers.push(
                Name::Other("Accept".into()),
                "application/sdp, multipart/mixed",
            ),
            _ => {}
        }
        if status == 503 {
            resp.headers
                .push(Name::RetryAfter, self.cfg.limits.retry_after.to_string());
        }
        edit(&mut resp);
        let peer = self.txn.server_peer(txn);
        self.txn.respond(now, txn, resp);
        if let Some(peer) = peer {
            self.note_failure(now, peer, status);
        }
    }

    pub(crate) fn decorate(&self, resp: &mut Response) {
        resp.headers.push(Name::Server, self.cfg.user_agent.clone());
        if resp.status == 405 || resp.status == 200 || resp.status == 501 {
            resp.headers.push(Name::Allow, ALLOW);
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        wall: jiff::Timestamp,
        id: TxnId,
        req: Request,
        from: Peer,
    ) {
        // RFC 3261 §8.2.2.1 scheme, §16.3 Max-Forwards, §8.2.2.3 Require, in that order.
        // tel: Request-URIs (gateways send them) are routed by their number.
        if req.uri().is_err() && switchboard_sip::uri::tel_number(&req.uri).is_none() {
            self.respond(now, id, 416, None);
            return;
        }
        let to_tag = req
            .headers
            .to_addr()
            .ok()
            .and_then(|t| t.tag().map(ByteString::from));
        if let Some(tag) = to_tag {
            self.on_in_dialog(now, wall, id, req, tag);
            return;
        }
        if let Some(Ok(0)) = req.headers.max_forwards() {
            if req.method == Method::Options {
                // §11.2: OPTIONS with Max-Forwards 0 is answered by us, the last hop.
                self.answer_options(now, id);
            } else {
                self.respond(now, id, 483, None);
            }
            return;
        }
        let unsupported: Vec<String> = req
            .headers
            .option_tags(&Name::Require)
            .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .map(str::to_owned)
            .collect();
        if !unsupported.is_empty() && req.method != Method::Cancel {
            self.respond_with(now, id, 420, None, |r| {
                r.headers.push(Name::Unsupported, unsupported.join(", "));
            });
            return;
        }
        match req.method {
            // RFC 3891: an INVITE that takes the place of one of our legs is no new call.
            Method::Invite if self.on_replaces(now, id, &req, from) => {}
            Method::Invite => self.new_call(now, wall, id, req, from),
            Method::Options => self.answer_options(now, id),
            Method::Bye
            | Method::Info
            | Method::Update
            | Method::Prack
            | Method::Notify
            | Method::Refer => self.respond(now, id, 481, None),
            Method::Register | Method::Subscribe | Method::Publish | Method::Message => {
                self.respond(now, id, 405, None)
            }
            _ => self.respond(now, id, 501, None),
        }
    }

    fn answer_options(&mut self, now: Instant, id: TxnId) {
        let Some(req) = self.txn.server_request(id) else {
            return;
        };
        let mut resp = make_response(req, 200, Some(&format!("{:x}", id.0)));
        self.decorate(&mut resp);
        resp.headers.push(Name::Supported, SUPPORTED.join(", "));
        resp.headers.push(
            Name::Other("Accept".into()),
            "application/sdp, multipart/mixed",
        );
        if self.shutting_down {
            resp.status = 503;
            resp.reason = "Service Unavailable".into();
        }
        self.txn.respond(now, id, resp);
    }

    fn new_call(
        &mut self,
        now: Instant,
        wall: jiff::Timestamp,
        id: TxnId,
        req: Request,
        from: Peer,
    ) {
        if self.shutting_down {
            self.respond(now, id, 503, None);
            return;
        }
        // Who the caller is decides its ceilings and its context.
        let trust = self.trust(from);
        let untrusted = trust == Trust::Untrusted;
        let ceiling = if self.calls.len() >= self.cfg.max_calls {
            Some(Ceiling::Calls)
        } else if self.pending_calls() >= self.cfg.limits.max_pending_calls {
            Some(Ceiling::PendingCalls)
        } else if untrusted && !self.guard.call_allowed(from.addr.ip()) {
            Some(Ceiling::UntrustedCalls)
        } else {
            None
        };
        if let Some(c) = ceiling {
            self.guard.stats.refused[c as usize] += 1;
            debug!(source = %from.addr, ceiling = c.as_str(), "overloaded: 503 with Retry-After");
            self.respond(now, id, 503, None);
            return;
        }
        // §8.1.1.8: an INVITE's Contact is a SIP or SIPS URI (where requests of the dialog go).
        let contact_ok = match req.headers.contact() {
            None => true,
            Some(Ok(c)) => {
                let scheme = c.uri_text.split(':').next().unwrap_or("");
                scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")
            }
            // What our parser cannot read is the dialog layer's to judge, as before.
            Some(Err(_)) => true,
        };
        if !contact_ok {
            self.respond_with(now, id, 400, None, |r| {
                r.reason = ByteString::from("Contact is not a SIP URI");
            });
            return;
        }
        if req
            .headers
            .call_id()
            .is_some_and(|c| self.b_call_ids.contains_key(c))
        {
            // Our own leg B came back to us: a routing loop (§16.3 step 4 for a B2BUA).
            self.respond(now, id, 482, None);
            return;
        }
        let has_sdp = !req.body.is_empty();
        if has_sdp
            && !req
                .headers
                .get(&Name::ContentType)
                .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/sdp"))
        {
            self.respond(now, id, 415, None);
            return;
        }
        // §21.4.7: an Accept without SDP leaves us no answer the caller can read (RFC 4475
        // §3.3.15). An empty Accept accepts nothing but is sent by no one; it is ignored.
        if let Some(accept) = req.headers.get_other("Accept")
            && !accept.trim().is_empty()
            && !switchboard_sip::header::split_list(accept).any(|range| {
                let range = range.split(';').next().unwrap_or("").trim();
                ["application/sdp", "application/*", "*/*"]
                    .iter()
                    .any(|ok| range.eq_ignore_ascii_case(ok))
            })
        {
            self.respond(now, id, 406, None);
            return;
        }
        // RFC 4028 §8.1: an interval below our floor is refused with the floor.
        if let Some((se, _)) = crate::session_timer::session_expires(&req.headers)
            && se < self.cfg.min_se
        {
            debug!(
                se,
                min_se = self.cfg.min_se,
                "Session-Expires too small: 422"
            );
            let floor = self.cfg.min_se.to_string();
            self.respond_with(now, id, 422, None, |r| {
                r.headers.push(Name::Other("Min-SE".into()), floor);
            });
            return;
        }
        // An offer we cannot answer at all is refused before any routing, saying why.
        if has_sdp
            && self.cfg.anchor_media
            && let Some((status, code, why)) =
                crate::media::refuse_offer(&req.body, &self.cfg.srtp_suites)
        {
            debug!(status, %why, "offer refused");
            let host = fmt_addr(self.local_addr(from.transport));
            // The text is ours but may quote the parser: one line of plain characters.
            let text: String = why
                .chars()
                .map(|c| match c {
                    '"' | '\\' => '\'',
                    c if c.is_control() => ' ',
                    c => c,
                })
                .collect();
            self.respond_with(now, id, status, None, |r| {
                if status == 400 {
                    r.reason = ByteString::from("Bad SDP");
                }
                r.headers.push(
                    Name::Other("Warning".into()),
                    format!("{code} {host} \"{text}\""),
                );
            });
            return;
        }
        let call_ref = CallRef(self.next_call);
        self.next_call += 1;
        let a_tag = self.ids.tag();
        // Who may call where: a source ops trust lands in the listeners' context, any other
        // in the public one (which reaches what ops put there, nothing else).
        let context = match trust {
            Trust::Local | Trust::Trusted => &self.cfg.context,
            Trust::Peer(i) => self
                .peers
                .get(i)
                .and_then(|p| p.context.as_ref())
                .unwrap_or(&self.cfg.context),
            Trust::Untrusted => &self.cfg.public_context,
        };
        if trust == Trust::Untrusted {
            debug!(source = %from.addr, context = %context, "INVITE from an untrusted source");
        }
        let facts = facts_of(&req, context, from, wall);
        let plan = self.dialplan.evaluate(&facts);
        let a_call_id = req
            .headers
            .call_id()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let span = tracing::info_span!("call", id = %call_ref, call_id = %a_call_id, b_call_id = tracing::field::Empty);
        let (a_call_id_for_record, facts_context) = (a_call_id.clone(), facts.context.clone());
        let _entered = span.clone().entered();
        // An untrusted source's attempts (scans, floods) log at debug: they must not fill
        // the journal. Its answered calls are logged as any.
        if trust == Trust::Untrusted {
            debug!(from = %facts.caller_number, to = %facts.destination, source = %from.addr, "new call");
        } else {
            info!(from = %facts.caller_number, to = %facts.destination, "new call");
        }
        for line in &plan.trace {
            debug!("dialplan: {line}");
        }
        let var = |k: &str| plan.vars.get(k).map(String::as_str);
        let mut m = crate::media::CallMedia::default();
        for (side, key) in [(0, "dtmf_a"), (1, "dtmf_b")] {
            if let Some(v) = var(key) {
                m.dtmf[side] = DtmfMethod::parse(v);
                if m.dtmf[side].is_none() {
                    warn!(
                        var = key,
                        value = v,
                        "not a DTMF form (rfc4733, info, inband): ignored"
                    );
                }
            }
        }
        if let Some(v) = var("srtp_b") {
            match switchboard_media::srtp::Policy::parse(v) {
                Some(p) => {
                    m.srtp[1].policy = p;
                    m.srtp[1].policy_set = true;
                }
                None => warn!(
                    var = "srtp_b",
                    value = v,
                    "not an SRTP setting (off, optional, required): ignored"
                ),
            }
        }
        let mut apps = Vec::new();
        for (side, key) in [(Side::A, "dtmf_suppress_a"), (Side::B, "dtmf_suppress_b")] {
            if let Some(v) = var(key) {
                let digits: String = v
                    .chars()
                    .filter(|c| switchboard_media::dtmf::is_digit(*c))
                    .collect();
                if !digits.is_empty() {
                    apps.push(crate::apps::Attached::new(
                        side,
                        Box::new(crate::module::Suppress(digits)),
                    ));
                }
            }
        }
        if !req.body.is_empty() {
            m.a_offer = Some(req.body.clone());
        }
        let keeps_facts = plan
            .actions
            .iter()
            .any(|a| matches!(a, switchboard_dialplan::Action::ReadDigits(_)));
        // The trace and variables were for routing and the log; a call keeps what it acts on.
        // FreeSWITCH's variables: another caller ID on leg B (a screen pop in the display
        // name, say); gateway rules and ANI pools still apply on top.
        let eff = |k: &str| plan.vars.get(k).filter(|v| !v.is_empty()).cloned();
        let effective_caller = match (
            eff("effective_caller_id_number"),
            eff("effective_caller_id_name"),
        ) {
            (None, None) => None,
            pair => Some(Box::new(pair)),
        };
        let plan = switchboard_dialplan::RoutePlan {
            actions: plan.actions,
            ..Default::default()
        };
        let mut call = Call {
            id: call_ref,
            state: crate::call::CallState::Routing,
            a: crate::call::LegA {
                invite_txn: id,
                invite: req,
                peer: from,
                tag: a_tag,
                dialog: None,
                finalized: false,
                sdp_version: 1,
            },
            attempts: Vec::new(),
            winner: None,
            b_dialog: None,
            b_peer: None,
            b_acked: false,
            b_ack: None,
            plan,
            plan_cursor: 0,
            bridge: None,
            next_target: 0,
            offer_b: None,
            media: None,
            b_sdp_version: 1,
            relayed: Vec::new(),
            pending_ack: None,
            reinvite_from: None,
            last_failure: None,
            st: [None, None],
            started: now,
            answered_at: None,
            destination: facts.destination.clone(),
            caller: facts.caller_number.clone(),
            context: Arc::from(facts.context.as_str()),
            transfer: None,
            span,
            m,
            wait: None,
            late_terminator: None,
            untrusted: (trust == Trust::Untrusted).then(|| from.addr.ip()),
            ringback: None,
            facts: keeps_facts.then(|| Box::new(facts)),
            next_play: 1,
            apps,
            app_timer: None,
            module_headers: Vec::new(),
            effective_caller,
            local: None,
        };
        self.stats.calls_total += 1;
        let local = Arc::new(if from.transport == Transport::Local {
            local_facts(&call.a.invite)
        } else {
            std::collections::BTreeMap::new()
        });
        if !local.is_empty() {
            call.local = Some(local.clone());
        }
        self.event(CallEvent::Started {
            call: call_ref,
            call_id: a_call_id_for_record.into(),
            caller: call.caller.as_str().into(),
            destination: call.destination.as_str().into(),
            context: facts_context.into(),
            source: format!(
                "{}:{}",
                from.transport.via_token().to_ascii_lowercase(),
                from.addr
            )
            .into(),
            facts: local,
        });
        self.server_invites.insert(id, call_ref);
        if let Some(ip) = call.untrusted {
            self.guard.call_started(ip);
        }
        self.calls.insert(call_ref, Box::new(call));
        self.run_plan(now, call_ref);
    }

    // ---- CANCEL, ACK, stray responses ---------------------------------------------------

    fn on_cancelled(&mut self, now: Instant, invite: TxnId) {
        let Some(&call) = self.server_invites.get(&invite) else {
            return;
        };
        info!("caller cancelled");
        self.teardown(now, call, Cause::OriginatorCancel, Some(Side::A));
    }

    fn on_stray_response(&mut self, resp: Response, from: Peer) {
        // A 2xx retransmitted after its transaction ended: ACK it again if we know the call.
        if (200..300).contains(&resp.status)
            && resp
                .headers
                .cseq()
                .is_ok_and(|c| c.method == Method::Invite)
        {
            let call = resp
                .headers
                .call_id()
                .and_then(|c| self.b_call_ids.get(c))
                .copied();
            if let Some(c) = call.and_then(|c| self.calls.remove(&c)) {
                self.ack_b_again(&c, from);
                self.calls.insert(c.id, c);
            }
        }
    }

    // ---- helpers ------------------------------------------------------------------------

    pub(crate) fn local_addr(&self, t: Transport) -> SocketAddr {
        local_addr([self.cfg.udp, self.cfg.tcp, self.cfg.tls], t)
    }

    pub(crate) fn via(&mut self, t: Transport) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            t.via_token(),
            fmt_addr(self.local_addr(t)),
            self.ids.branch()
        )
    }

    pub(crate) fn contact(&self, t: Transport) -> String {
        format!(
            "<sip:switchboard@{}{}>",
            fmt_addr(self.local_addr(t)),
            transport_param(t)
        )
    }

    /// Ends a call: final response or BYE/CANCEL to each leg as its state requires.
    pub(crate) fn teardown(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        cause: Cause,
        side: Option<Side>,
    ) {
        let _span = self.enter(call_ref);
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return;
        };
        // Leg A.
        if !call.a.finalized {
            let status = cause.sip_status();
            self.respond_a_final(now, &mut call, status, Some(cause));
        } else if side != Some(Side::A)
            && let Some(d) = call.a.dialog.as_mut()
        {
            let peer = call.a.peer;
            let req = d.make_request(Method::Bye, None);
            self.send_in_dialog(now, req, peer, ClientRole::Bye, Some(cause));
        }
        // Leg B: BYE the winner, CANCEL the rest.
        if side != Some(Side::B)
            && let (Some(d), Some(peer)) = (call.b_dialog.as_mut(), call.b_peer)
        {
            if !call.b_acked {
                // The 2xx was never ACKed (A never ACKed ours): ACK then BYE (§15).
                let ack = crate::bridge::ack_for(d, &call.attempts, call.winner);
                if let Some(ack) = ack {
                    let mut ack = ack;
                    ack.headers.push_front(Name::Via, self.via(peer.transport));
                    self.txn.send_stateless(peer, &Message::Request(ack));
                }
            }
            let req = d.make_request(Method::Bye, None);
            self.send_in_dialog(now, req, peer, ClientRole::Bye, Some(cause));
        }
        for i in 0..call.attempts.len() {
            if Some(i) != call.winner {
                self.cancel_attempt(now, &mut call, i);
            }
        }
        // A transferor still on the line (a transfer under way, or one waiting for its BYE).
        self.hang_up_transferor(now, &mut call, Some(cause));
        // Relayed requests still waiting: answer them so the peer is not left hanging.
        for (_, r) in std::mem::take(&mut call.relayed) {
            if self.txn.server_request(r.server_txn).is_some() {
                self.respond(now, r.server_txn, 481, None);
            }
        }
        self.finish(now, call, cause, side);
    }

    pub(crate) fn respond_a_final(
        &mut self,
        now: Instant,
        call: &mut Call,
        status: u16,
        cause: Option<Cause>,
    ) {
        let mut resp = make_response(&call.a.invite, status, Some(&call.a.tag));
        self.decorate(&mut resp);
        if let Some(c) = cause {
            // RFC 3326: tell the caller the Q.850 cause too.
            resp.headers.push(
                Name::Reason,
                format!("Q.850;cause={};text=\"{}\"", c.q850(), c.name()),
            );
        }
        self.txn.respond(now, call.a.invite_txn, resp);
        call.a.finalized = true;
        self.note_failure(now, call.a.peer, status);
    }

    /// Forget a call that is over (its legs were already told).
    pub(crate) fn finish(
        &mut self,
        now: Instant,
        call: Box<Call>,
        cause: Cause,
        side: Option<Side>,
    ) {
        let call = call;
        self.release_from_filters(|f| f.call_ended(now, call.id));
        let transferor = call.transfer.as_ref().map(|t| &t.dialog);
        for d in [call.a.dialog.as_ref(), call.b_dialog.as_ref(), transferor]
            .into_iter()
            .flatten()
        {
            self.dialogs.remove(&dialog_key(&self.dialog_keys, &d.id));
        }
        for a in &call.attempts {
            self.b_call_ids.remove(a.call_id.as_str());
            self.clients.remove(&a.txn);
        }
        self.server_invites.remove(&call.a.invite_txn);
        if call.state == crate::call::CallState::Up {
            self.up_calls = self.up_calls.saturating_sub(1);
        }
        if let Some(ip) = call.untrusted {
            self.guard.call_ended(ip);
        }
        if let Some(ports) = call.media {
            self.ports.give_back(ports.a);
            self.ports.give_back(ports.b);
            self.outputs.push_back(Output::MediaClose { call: call.id });
        }
        *self.stats.ended_by_cause.entry(cause.name()).or_default() += 1;
        let billable = call
            .answered_at
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .unwrap_or(0.0);
        // Per leg: A ends with the call's cause; B with the same once bridged, else with why
        // its last attempt failed (a busy callee, a dead gateway...), or never existed.
        let b_cause = if call.winner.is_some() {
            Some(cause)
        } else {
            call.last_failure.as_deref().map(AttemptError::cause)
        };
        if call.answered_at.is_none() && call.untrusted.is_some() {
            debug!(cause = %cause, b_cause = ?b_cause.map(|c| c.name()), "call ended");
        } else {
            info!(cause = %cause, b_cause = ?b_cause.map(|c| c.name()), side = ?side, billable_secs = billable, "call ended");
        }
        self.event(CallEvent::Ended(Arc::new(CallSummary {
            id: call.id,
            a_call_id: call
                .a
                .invite
                .headers
                .call_id()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            b_call_id: call.b_dialog.as_ref().map(|d| d.id.call_id.to_string()),
            target: call
                .winner
                .or(call.attempts.len().checked_sub(1))
                .and_then(|i| call.attempts.get(i))
                .map(|a| a.target.clone()),
            codecs: [0, 1].map(|i| call.m.fmt[i].as_ref().map(|f| f.name.clone())),
            destination: call.destination,
            caller: call.caller,
            cause,
            b_cause,
            hangup_side: side,
            billable_secs: billable,
        })));
    }

    /// Sends an in-dialog request (the caller built it from the dialog) with a fresh Via.
    pub(crate) fn send_in_dialog(
        &mut self,
        now: Instant,
        mut req: Request,
        peer: Peer,
        role: ClientRole,
        cause: Option<Cause>,
    ) -> TxnId {
        req.headers.push_front(Name::Via, self.via(peer.transport));
        req.headers
            .push(Name::UserAgent, self.cfg.user_agent.clone());
        if let Some(c) = cause.filter(|_| req.method == Method::Bye) {
            req.headers.push(
                Name::Reason,
                format!("Q.850;cause={};text=\"{}\"", c.q850(), c.name()),
            );
        }
        let id = self.txn.send_request(now, req, peer);
        self.clients.insert(id, role);
        id
    }

    pub(crate) fn alloc_media(&mut self, call: &mut Call) -> Option<MediaPorts> {
        if call.media.is_none() {
            // Bound here (when the shell asked the pool to): a pair that cannot be bound
            // is never named in an SDP.
            let a = self.ports.take_bound()?;
            let Some(b) = self.ports.take_bound() else {
                self.ports.give_back(a);
                return None;
            };
            let ports = MediaPorts { a, b };
            call.media = Some(ports);
            self.outputs.push_back(Output::MediaOpen {
                call: call.id,
                ports,
            });
        }
        call.media
    }

    /// Enters the call's span (logs carry its id and Call-IDs) while the guard lives.
    pub(crate) fn enter(&self, call: CallRef) -> Option<tracing::span::EnteredSpan> {
        self.calls.get(&call).map(|c| c.span.clone().entered())
    }

    /// Asks every invite filter to give back what it holds (`give`: for one attempt, or for
    /// the whole call); observers hear of each item released.
    pub(crate) fn release_from_filters(
        &mut self,
        mut give: impl FnMut(&mut dyn crate::module::InviteFilter) -> Vec<(String, String)>,
    ) {
        let mut released = Vec::new();
        for n in 0..self.modules.filter_count() {
            if let Some((_, f)) = self.modules.filter(n) {
                released.extend(give(f));
            }
        }
        for (pool, item) in released {
            self.event(CallEvent::Released { pool, item });
        }
    }

    /// Queues an event for the observers.
    pub(crate) fn event(&mut self, ev: CallEvent) {
        self.outputs.push_back(Output::Event(ev));
    }

    /// Remove the client-role entry once its transaction has its final answer.
    pub(crate) fn forget_client(&mut self, id: TxnId) {
        self.clients.remove(&id);
    }
}

/// Gives a map's memory back after a peak (10k calls leave large, empty tables behind).
fn shrink_map<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 1024 && m.len() < m.capacity() / 4 {
        m.shrink_to(m.len() * 2);
    }
}

/// A set of transactions that forgets its members after a while.
#[derive(Debug, Default)]
pub(crate) struct TxnSet {
    map: HashMap<TxnId, Instant>,
}

impl TxnSet {
    /// Adds; `false` when it was there already.
    pub fn insert(&mut self, now: Instant, id: TxnId) -> bool {
        self.map.insert(id, now).is_none()
    }

    pub fn contains(&self, id: &TxnId) -> bool {
        self.map.contains_key(id)
    }

    pub fn remove(&mut self, id: &TxnId) -> bool {
        self.map.remove(id).is_some()
    }

    fn purge(&mut self, now: Instant, horizon: Duration) {
        if self.map.len() > 64 {
            self.map
                .retain(|_, t| now.saturating_duration_since(*t) < horizon);
        }
    }
}

/// Our address for a transport: its listener, else the other one.
pub(crate) fn local_addr([udp, tcp, tls]: [Option<SocketAddr>; 3], t: Transport) -> SocketAddr {
    let addr = match t {
        Transport::Tls => tls.or(tcp).or(udp),
        Transport::Tcp | Transport::Ws => tcp.or(udp),
        Transport::Udp | Transport::Local => udp.or(tcp),
    };
    addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)))
}

/// `host:port` with IPv6 brackets.
pub fn fmt_addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => v.to_string(),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}

/// The `;transport=` URI parameter for a transport (none for UDP).
pub fn transport_param(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
        Transport::Tls => ";transport=tls",
        Transport::Ws => ";transport=ws",
        Transport::Local => ";transport=local",
    }
}

/// Headers of a Local leg's INVITE that become dialplan variables: `X-SB-Page-Url: v` is the
/// variable `page_url`. Only an in-process module can set them (it checked them: a merchant's
/// token...): from any network peer they are plain headers. Which facts there are is the
/// module's business, not the core's.
pub const LOCAL_PREFIX: &str = "X-SB-";

/// The header of a Local leg's INVITE naming the dialplan context (the merchant's).
pub const LOCAL_CONTEXT: &str = "X-SB-Context";

/// The variables a Local leg's INVITE carries (`X-SB-*` but the context), by name.
pub fn local_facts(req: &Request) -> std::collections::BTreeMap<String, String> {
    req.headers
        .0
        .iter()
        .filter_map(|h| {
            let name = h.name.as_str();
            let rest = name
                .get(..LOCAL_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(LOCAL_PREFIX))
                .map(|_| &name[LOCAL_PREFIX.len()..])?;
            if rest.is_empty() || name.eq_ignore_ascii_case(LOCAL_CONTEXT) {
                return None;
            }
            Some((
                rest.to_ascii_lowercase().replace('-', "_"),
                h.value.to_string(),
            ))
        })
        .collect()
}

/// The facts the dialplan sees about an incoming INVITE.
pub fn facts_of(req: &Request, context: &str, from: Peer, wall: jiff::Timestamp) -> Facts {
    let uri_user = req
        .uri()
        .ok()
        .and_then(|u| u.user_unescaped())
        .or_else(|| switchboard_sip::uri::tel_number(&req.uri))
        .unwrap_or_default();
    let from_addr = req.headers.from_addr().ok();
    let caller_number = from_addr
        .and_then(|f| f.uri().ok())
        .and_then(|u| u.user_unescaped())
        .unwrap_or_default();
    let caller_name = from_addr.and_then(|f| f.display).unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = req
        .headers
        .0
        .iter()
        .map(|h| (h.name.as_str().to_owned(), h.value.to_string()))
        .collect();
    let mut vars = std::collections::BTreeMap::new();
    vars.insert("source_ip".to_owned(), from.addr.ip().to_string());
    vars.insert(
        "sip_call_id".to_owned(),
        req.headers
            .call_id()
            .map(|c| c.to_string())
            .unwrap_or_default(),
    );
    for (k, v) in &headers {
        // FreeSWITCH's convention: X- headers of the INVITE as sip_h_X-Name variables.
        if k.len() > 2 && k[..2].eq_ignore_ascii_case("x-") {
            vars.insert(format!("sip_h_{k}"), v.clone());
        }
    }
    let mut context = context;
    if from.transport == Transport::Local {
        // A module's leg (the browser): its facts were checked by the module (token,
        // merchant, link) and travel in headers only a Local peer can set.
        vars.extend(local_facts(req));
        if let Some(ip) = vars.get("caller_ip").cloned() {
            vars.insert("source_ip".to_owned(), ip);
        }
        if let Some(c) = req.headers.get_other(LOCAL_CONTEXT) {
            context = c;
        }
    }
    Facts {
        context: context.to_owned(),
        destination: uri_user,
        caller_number,
        caller_name,
        headers,
        vars,
        now: wall,
    }
}

/// A `multipart/*` body with an SDP part (SIP-I/SIP-T gateways: SDP and ISUP, RFC 3204)
/// becomes that SDP part: offer/answer reads it as any, and the other leg gets plain SDP.
fn take_sdp_part(msg: &mut Message) {
    let (headers, body) = match msg {
        Message::Request(r) => (&mut r.headers, &mut r.body),
        Message::Response(r) => (&mut r.headers, &mut r.body),
    };
    let Some(ct) = headers.get(&Name::ContentType).map(|c| c.to_string()) else {
        return;
    };
    if let Some((part_type, sdp)) = switchboard_sip::message::sdp_part(&ct, body) {
        debug!(content_type = %ct, "a multipart body: its SDP part is taken, the rest left");
        headers.set(Name::ContentType, part_type);
        *body = sdp;
    }
}

/// The `dialogs` key of a dialog: its Call-ID and our tag, hashed with the process's seed.
pub(crate) fn dialog_key(
    seed: &std::collections::hash_map::RandomState,
    id: &switchboard_sip::dialog::DialogId,
) -> u64 {
    dialog_key_of(seed, &id.call_id, &id.local_tag)
}

/// The same from the Call-ID and our tag of a request.
pub(crate) fn dialog_key_of(
    seed: &std::collections::hash_map::RandomState,
    call_id: &str,
    local_tag: &str,
) -> u64 {
    use std::hash::BuildHasher;
    seed.hash_one((call_id, local_tag))
}

impl Engine {
    /// The call and side of the dialog (Call-ID, our tag), checked against the call's own
    /// dialogs (a hash that matched another dialog's is no match).
    pub(crate) fn dialog_of(&self, call_id: &str, local_tag: &str) -> Option<(CallRef, Side)> {
        let key = dialog_key_of(&self.dialog_keys, call_id, local_tag);
        let &(call_ref, side) = self.dialogs.get(&key)?;
        let c = self.calls.get(&call_ref)?;
        let transferor = c.transfer.as_ref().map(|t| &t.dialog);
        [c.a.dialog.as_ref(), c.b_dialog.as_ref(), transferor]
            .into_iter()
            .flatten()
            .any(|d| &*d.id.call_id == call_id && &*d.id.local_tag == local_tag)
            .then_some((call_ref, side))
    }
}
