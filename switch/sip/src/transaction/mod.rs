//! RFC 3261 §17 transactions, sans-IO.
//!
//! The [`TransactionLayer`] owns every client and server transaction. Drive it like this:
//! 1. feed input: [`TransactionLayer::handle_message`] (a parsed message and who sent it),
//!    [`TransactionLayer::send_request`], [`TransactionLayer::respond`],
//!    [`TransactionLayer::handle_timeout`], always with the current time;
//! 2. then drain output, in this order: [`TransactionLayer::poll_transmit`] until `None`
//!    (datagrams/segments to write), [`TransactionLayer::poll_event`] until `None` (what the
//!    transaction user must act on), and finally [`TransactionLayer::poll_timeout`] (when to
//!    call `handle_timeout` next).
//!
//! Matching follows §17.1.3 (client: branch + CSeq method) and §17.2.3 (server: branch +
//! method, ACK matching its INVITE, CANCEL matched against the INVITE with the same branch).
//! RFC 6026's Accepted states absorb INVITE retransmissions after a 2xx and let 2xx
//! retransmissions reach the TU. On the server side the layer also retransmits a 2xx until
//! the ACK arrives (§13.3.1.4), so the TU sends a 2xx once.

mod timer;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

pub use timer::{Timer, TimerConfig};

/// Maps keyed by what peers send (branches, Call-IDs): foldhash is seeded per process and
/// several times faster than SipHash on these short keys.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use crate::header::Name;
use crate::message::{Message, Request, Response};
use crate::method::Method;
use timer::drain;

/// A transport kind. Reliable transports need no retransmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (unreliable).
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket (RFC 7118).
    Ws,
    /// An in-process leg from a module (the browser leg of `modules/webrtc`): reliable,
    /// never on the wire. Its peers are addressed `0.x.y.z:0`, which no network peer can be.
    Local,
}

impl Transport {
    /// True when the transport retransmits for us.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The token used in Via headers.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Local => "LOCAL",
        }
    }

    /// Parses a Via transport token or a `transport=` URI parameter.
    pub fn from_token(s: &str) -> Option<Transport> {
        Some(match s.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            "ws" | "wss" => Transport::Ws,
            "local" => Transport::Local,
            _ => return None,
        })
    }
}

/// Where a message comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Transport.
    pub transport: Transport,
    /// Remote address.
    pub addr: SocketAddr,
}

/// Bytes to write to a peer.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Destination.
    pub peer: Peer,
    /// Encoded message.
    pub data: Bytes,
}

/// Identifies one transaction inside the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

/// What the transaction user must act on.
#[derive(Debug)]
pub enum TxnEvent {
    /// A new request opened a server transaction (never ACK or a retransmission).
    Request {
        /// The server transaction to answer through [`TransactionLayer::respond`].
        id: TxnId,
        /// The request, top Via already stamped with `received`/`rport` (RFC 3581).
        req: Request,
        /// Who sent it.
        from: Peer,
    },
    /// A CANCEL matched a pending INVITE server transaction; the layer already answered
    /// the CANCEL with 200. The TU should answer the INVITE with 487.
    Cancelled {
        /// The INVITE's server transaction.
        invite: TxnId,
    },
    /// An ACK that is not part of a non-2xx INVITE transaction: the ACK of a 2xx.
    Ack {
        /// The ACK.
        req: Request,
        /// Who sent it.
        from: Peer,
    },
    /// A response for a client transaction (2xx retransmissions included).
    Response {
        /// The client transaction.
        id: TxnId,
        /// The response.
        resp: Response,
    },
    /// Timer B or F fired: the peer never answered (the TU treats it as 408).
    Timeout {
        /// The client transaction.
        id: TxnId,
    },
    /// Timer H (or the 2xx retransmission window) ran out without an ACK.
    AckTimeout {
        /// The server transaction.
        id: TxnId,
    },
    /// A response that matches no client transaction (e.g. a late 2xx retransmission).
    StrayResponse {
        /// The response.
        resp: Response,
        /// Who sent it.
        from: Peer,
    },
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct TxnStats {
    /// Client and server transactions created.
    pub created: u64,
    /// Requests and responses sent again by a timer.
    pub retransmissions: u64,
    /// Retransmissions received (absorbed, or for a 2xx passed on to the TU).
    pub absorbed: u64,
    /// Timer B/F/H expiries.
    pub timeouts: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Invite,
    Cancel,
    Other,
}

fn kind_of(m: &Method) -> Kind {
    match m {
        Method::Invite | Method::Ack => Kind::Invite,
        Method::Cancel => Kind::Cancel,
        _ => Kind::Other,
    }
}

/// Branch, method kind, and for server transactions the address the request came from and the
/// top Via's sent-by: two clients that pick the same branch (carelessly, or to hijack a
/// transaction with a forged CANCEL) never share a transaction, nor do two requests of one
/// source whose sent-by differ (§17.2.3; the source address is what a retransmission shares
/// with its original, behind NAT included). A branch without the magic cookie's identifier
/// (RFC 2543) is matched by Call-ID, CSeq number and From tag instead (§17.2.3's fallback).
type Key = (ByteString, Kind, Option<std::net::SocketAddr>, ByteString);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Client: Calling / Trying. Server: Proceeding / Trying.
    Initial,
    Proceeding,
    /// Server INVITE: 2xx sent, retransmitting it until ACK (RFC 6026 Accepted).
    /// Client INVITE: 2xx received (RFC 6026 Accepted).
    Accepted,
    Completed,
    Confirmed,
}

#[derive(Debug)]
struct Txn {
    client: bool,
    invite: bool,
    key: Key,
    peer: Peer,
    state: State,
    /// Client: the request. Server: what responses copy from it ([`for_responses`]).
    request: Request,
    /// Bytes sent last (request for clients, last response for servers).
    last: Bytes,
    /// Client INVITE: the ACK built for a non-2xx final response.
    ack: Option<Bytes>,
    /// Dialog key of a 2xx being retransmitted (server INVITE), to match its ACK.
    dialog_key: Option<(ByteString, u32)>,
    retransmit_at: Option<(Instant, Timer)>,
    interval: Duration,
    timeout_at: Option<(Instant, Timer)>,
    generation: u64,
}

/// All transactions of one SIP endpoint.
#[derive(Debug)]
pub struct TransactionLayer {
    cfg: TimerConfig,
    next_id: u64,
    /// Boxed: a transaction is a few hundred bytes and the table holds every transaction of
    /// the last 32 s, so growing it moves pointers rather than the transactions.
    txns: HashMap<TxnId, Box<Txn>>,
    clients: HashMap<Key, TxnId>,
    servers: HashMap<Key, TxnId>,
    awaiting_ack: HashMap<(ByteString, u32), TxnId>,
    heap: BinaryHeap<Reverse<(Instant, TxnId, u64)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
    stats: TxnStats,
}

impl TransactionLayer {
    /// A layer with these timer values.
    pub fn new(cfg: TimerConfig) -> Self {
        TransactionLayer {
            cfg,
            next_id: 1,
            txns: HashMap::default(),
            clients: HashMap::default(),
            servers: HashMap::default(),
            awaiting_ack: HashMap::default(),
            heap: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TxnStats::default(),
        }
    }

    /// Timer configuration.
    pub fn config(&self) -> TimerConfig {
        self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> TxnStats {
        self.stats
    }

    /// Live transactions (for metrics and memory accounting).
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    /// True when no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Next datagram or segment to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    /// When [`TransactionLayer::handle_timeout`] must be called next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id, generation))) = self.heap.peek().copied() {
            match self.txns.get(&id) {
                Some(t) if t.generation == generation => return Some(at),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// Sends a message outside any transaction (ACK for 2xx, stateless responses).
    pub fn send_stateless(&mut self, peer: Peer, msg: &Message) {
        self.transmits.push_back(Transmit {
            peer,
            data: Bytes::from(msg.to_bytes()),
        });
    }

    /// Sends bytes encoded earlier (an ACK kept to answer retransmitted 2xx).
    pub fn send_raw(&mut self, peer: Peer, data: Bytes) {
        self.transmits.push_back(Transmit { peer, data });
    }

    /// Starts a client transaction. The request must carry its top Via with a fresh
    /// `z9hG4bK` branch. ACK must go through [`TransactionLayer::send_stateless`].
    pub fn send_request(&mut self, now: Instant, req: Request, peer: Peer) -> TxnId {
        let branch = branch_of(&req.headers);
        let invite = req.method == Method::Invite;
        let key = (branch, kind_of(&req.method), None, ByteString::new());
        let data = Bytes::from(req.to_bytes());
        let id = self.alloc();
        let mut t = Txn {
            client: true,
            invite,
            key: key.clone(),
            peer,
            state: State::Initial,
            request: req,
            last: data.clone(),
            ack: None,
            dialog_key: None,
            retransmit_at: None,
            interval: self.cfg.t1,
            timeout_at: Some((
                now + self.cfg.timeout(),
                if invite { Timer::B } else { Timer::F },
            )),
            generation: 0,
        };
        if !peer.transport.is_reliable() {
            t.retransmit_at = Some((now + self.cfg.t1, if invite { Timer::A } else { Timer::E }));
        }
        self.transmits.push_back(Transmit { peer, data });
        self.clients.insert(key, id);
        self.insert(id, t);
        id
    }

    /// Sends a response through a server transaction. Unknown or finished transactions
    /// ignore it (the TU raced a timeout); `false` tells the caller so.
    pub fn respond(&mut self, now: Instant, id: TxnId, resp: Response) -> bool {
        let cfg = self.cfg;
        let Some(t) = self.txns.get_mut(&id) else {
            return false;
        };
        if t.client || !matches!(t.state, State::Initial | State::Proceeding) {
            return false;
        }
        let status = resp.status;
        let dialog_key = (t.invite && (200..300).contains(&status))
            .then(|| dialog_key_of(&resp))
            .flatten();
        let data = Bytes::from(resp.to_bytes());
        self.transmits.push_back(Transmit {
            peer: t.peer,
            data: data.clone(),
        });
        t.last = data;
        let reliable = t.peer.transport.is_reliable();
        if status < 200 {
            t.state = State::Proceeding;
            return true;
        }
        t.interval = cfg.t1;
        if t.invite && status < 300 {
            // §13.3.1.4 / RFC 6026 Accepted: retransmit the 2xx until the ACK, for 64·T1.
            t.state = State::Accepted;
            t.retransmit_at = (!reliable).then(|| (now + cfg.t1, Timer::Retransmit2xx));
            t.timeout_at = Some((now + cfg.timeout(), Timer::L));
            if let Some(k) = dialog_key {
                t.dialog_key = Some(k.clone());
                self.awaiting_ack.insert(k, id);
            }
        } else if t.invite {
            t.state = State::Completed;
            t.retransmit_at = (!reliable).then(|| (now + cfg.t1, Timer::G));
            t.timeout_at = Some((now + cfg.timeout(), Timer::H));
        } else {
            t.state = State::Completed;
            t.retransmit_at = None;
            t.timeout_at = Some((now + drain(reliable, cfg.timeout()), Timer::J));
        }
        self.reschedule(id);
        true
    }

    /// Server transactions held now (answering, or absorbing retransmissions).
    pub fn servers(&self) -> usize {
        self.servers.len()
    }

    /// Would this request open a new server transaction (not an ACK, not a retransmission)?
    /// The engine asks before it feeds a request past a ceiling.
    pub fn opens_transaction(&self, req: &Request, from: Peer) -> bool {
        if req.method == Method::Ack {
            return false;
        }
        !self.servers.contains_key(&server_key(req, from))
    }

    /// Feeds a received, validated message.
    pub fn handle_message(&mut self, now: Instant, msg: Message, from: Peer) {
        match msg {
            Message::Request(req) => self.handle_request(now, req, from),
            Message::Response(resp) => self.handle_response(now, resp, from),
        }
    }

    fn handle_request(&mut self, now: Instant, mut req: Request, from: Peer) {
        stamp_received(&mut req, from);
        let key = server_key(&req, from);
        if req.method == Method::Ack {
            self.handle_ack(now, key, req, from);
            return;
        }
        if let Some(&id) = self.servers.get(&key) {
            // A retransmission: answer it with the last response, if any.
            self.stats.absorbed += 1;
            if let Some(t) = self.txns.get(&id)
                && !t.last.is_empty()
                && t.state != State::Accepted
            {
                self.transmits.push_back(Transmit {
                    peer: t.peer,
                    data: t.last.clone(),
                });
            }
            return;
        }
        if req.method == Method::Cancel {
            self.handle_cancel(now, key, req, from);
            return;
        }
        let id = self.new_server(now, key, for_responses(&req), from);
        if req.method == Method::Invite {
            // §17.2.1: the server transaction answers 100 Trying right away so the client
            // stops retransmitting (we don't wait the 200 ms the RFC allows).
            let trying = make_response(&req, 100, None);
            self.respond(now, id, trying);
        }
        self.events.push_back(TxnEvent::Request { id, req, from });
    }

    fn handle_ack(&mut self, now: Instant, key: Key, req: Request, from: Peer) {
        if let Some(&id) = self.servers.get(&key) {
            let cfg = self.cfg;
            if let Some(t) = self.txns.get_mut(&id) {
                if t.state == State::Completed {
                    // §17.2.1: ACK for our non-2xx final response.
                    t.state = State::Confirmed;
                    t.retransmit_at = None;
                    let reliable = t.peer.transport.is_reliable();
                    t.timeout_at = Some((now + drain(reliable, cfg.t4), Timer::I));
                    self.reschedule(id);
                    return;
                }
                if t.state == State::Confirmed {
                    self.stats.absorbed += 1;
                    return;
                }
            }
        }
        let dk = req
            .headers
            .call_id()
            .cloned()
            .zip(req.headers.cseq().ok().map(|c| c.seq));
        if let Some(id) = dk.and_then(|k| self.awaiting_ack.remove(&k))
            && let Some(t) = self.txns.get_mut(&id)
        {
            // The 2xx is acknowledged: stop retransmitting it, keep absorbing INVITEs. Nothing
            // will be sent again: drop the bytes (memory per call counts at 10k calls).
            t.retransmit_at = None;
            t.dialog_key = None;
            t.last = Bytes::new();
            self.reschedule(id);
        }
        self.events.push_back(TxnEvent::Ack { req, from });
    }

    fn handle_cancel(&mut self, now: Instant, key: Key, req: Request, from: Peer) {
        let invite = self
            .servers
            .get(&(key.0.clone(), Kind::Invite, key.2, key.3.clone()))
            .copied();
        let id = self.new_server(now, key, for_responses(&req), from);
        let pending = invite.filter(|i| {
            self.txns
                .get(i)
                .is_some_and(|t| matches!(t.state, State::Initial | State::Proceeding))
        });
        match (invite, pending) {
            (_, Some(inv)) => {
                self.respond(now, id, make_response(&req, 200, None));
                self.events.push_back(TxnEvent::Cancelled { invite: inv });
            }
            // §9.2: the INVITE already got its final response: CANCEL has no effect.
            (Some(_), None) => {
                self.respond(now, id, make_response(&req, 200, None));
            }
            (None, _) => {
                self.respond(now, id, make_response(&req, 481, None));
            }
        }
    }

    fn handle_response(&mut self, now: Instant, resp: Response, from: Peer) {
        let key = Some(branch_of(&resp.headers)).filter(|b| !b.is_empty());
        let kind = resp.headers.cseq().ok().map(|c| kind_of(&c.method));
        let id = key
            .zip(kind)
            .and_then(|(b, k)| self.clients.get(&(b, k, None, ByteString::new())).copied());
        let Some(id) = id else {
            self.events
                .push_back(TxnEvent::StrayResponse { resp, from });
            return;
        };
        let cfg = self.cfg;
        let Some(t) = self.txns.get_mut(&id) else {
            return;
        };
        let status = resp.status;
        let reliable = t.peer.transport.is_reliable();
        match (t.invite, t.state, status) {
            (_, State::Initial | State::Proceeding, 100..=199) => {
                t.state = State::Proceeding;
                if t.invite {
                    // §17.1.1.2: a provisional response stops Timer A (and B: the TU times
                    // ringing itself).
                    t.retransmit_at = None;
                    t.timeout_at = None;
                } else if t.retransmit_at.is_some() {
                    // §17.1.2.2: in Proceeding, retransmit every T2.
                    t.interval = cfg.t2;
                }
            }
            (true, State::Initial | State::Proceeding | State::Accepted, 200..=299) => {
                if t.state == State::Accepted {
                    // A retransmitted 2xx: counted, and still passed on (the TU re-ACKs).
                    self.stats.absorbed += 1;
                } else {
                    // What a late 2xx from another fork still needs of the INVITE (its
                    // From and CSeq, to ACK and BYE it): the rest goes now, not in 32 s.
                    t.request = for_responses(&t.request);
                }
                t.state = State::Accepted;
                t.retransmit_at = None;
                t.timeout_at = Some((now + cfg.timeout(), Timer::M));
                // The INVITE is never retransmitted again.
                t.last = Bytes::new();
            }
            (true, State::Initial | State::Proceeding, _) => {
                let ack = Bytes::from(make_ack(&t.request, &resp).to_bytes());
                self.transmits.push_back(Transmit {
                    peer: t.peer,
                    data: ack.clone(),
                });
                t.ack = Some(ack);
                t.state = State::Completed;
                t.retransmit_at = None;
                t.timeout_at = Some((now + drain(reliable, Duration::from_secs(32)), Timer::D));
            }
            (true, State::Completed, 300..) => {
                // A retransmitted final response: ACK again, tell nobody.
                self.stats.absorbed += 1;
                if let Some(ack) = &t.ack {
                    self.transmits.push_back(Transmit {
                        peer: t.peer,
                        data: ack.clone(),
                    });
                }
                return;
            }
            (false, State::Initial | State::Proceeding, 200..) => {
                t.state = State::Completed;
                t.retransmit_at = None;
                t.last = Bytes::new();
                t.timeout_at = Some((now + drain(reliable, cfg.t4), Timer::K));
            }
            _ => {
                self.stats.absorbed += 1;
                return;
            }
        }
        self.reschedule(id);
        self.events.push_back(TxnEvent::Response { id, resp });
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id, generation))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self
                .txns
                .get(&id)
                .is_some_and(|t| t.generation == generation)
            {
                self.fire(now, id);
            }
        }
    }

    fn fire(&mut self, now: Instant, id: TxnId) {
        let cfg = self.cfg;
        let Some(t) = self.txns.get_mut(&id) else {
            return;
        };
        if let Some((at, timer)) = t.retransmit_at.filter(|(at, _)| *at <= now) {
            let _ = at;
            self.transmits.push_back(Transmit {
                peer: t.peer,
                data: t.last.clone(),
            });
            self.stats.retransmissions += 1;
            // Timer A doubles without bound (B ends it); E, G and 2xx cap at T2.
            t.interval = match timer {
                Timer::A => t.interval * 2,
                _ => (t.interval * 2).min(cfg.t2),
            };
            t.retransmit_at = Some((now + t.interval, timer));
        }
        if let Some((_, timer)) = t.timeout_at.filter(|(at, _)| *at <= now) {
            match timer {
                Timer::B | Timer::F => {
                    self.stats.timeouts += 1;
                    self.events.push_back(TxnEvent::Timeout { id });
                }
                Timer::H => {
                    self.stats.timeouts += 1;
                    self.events.push_back(TxnEvent::AckTimeout { id });
                }
                Timer::L if t.dialog_key.is_some() => {
                    self.events.push_back(TxnEvent::AckTimeout { id });
                }
                _ => {}
            }
            self.remove(id);
            return;
        }
        self.reschedule(id);
    }

    /// A CANCEL went out for this client INVITE (in Proceeding, so Timer B is off): if its
    /// final response never comes, the transaction ends 64·T1 later with a `Timeout`
    /// (RFC 3261 §9.1) instead of living forever.
    pub fn cancel_sent(&mut self, now: Instant, id: TxnId) {
        let timeout = self.cfg.timeout();
        let Some(t) = self.txns.get_mut(&id) else {
            return;
        };
        if t.client && t.invite && t.timeout_at.is_none() {
            t.timeout_at = Some((now + timeout, Timer::B));
            self.reschedule(id);
        }
    }

    fn alloc(&mut self) -> TxnId {
        let id = TxnId(self.next_id);
        self.next_id += 1;
        self.stats.created += 1;
        id
    }

    fn new_server(&mut self, now: Instant, key: Key, req: Request, from: Peer) -> TxnId {
        let id = self.alloc();
        let invite = req.method == Method::Invite;
        let t = Txn {
            client: false,
            invite,
            key: key.clone(),
            peer: response_peer(&req, from),
            state: State::Initial,
            request: req,
            last: Bytes::new(),
            ack: None,
            dialog_key: None,
            retransmit_at: None,
            interval: self.cfg.t1,
            // A server transaction the TU never answers must not live forever.
            timeout_at: Some((now + self.cfg.timeout() * 4, Timer::J)),
            generation: 0,
        };
        self.servers.insert(key, id);
        self.insert(id, t);
        id
    }

    fn insert(&mut self, id: TxnId, t: Txn) {
        self.txns.insert(id, Box::new(t));
        self.reschedule(id);
    }

    fn reschedule(&mut self, id: TxnId) {
        let Some(t) = self.txns.get_mut(&id) else {
            return;
        };
        t.generation += 1;
        let next = [t.retransmit_at, t.timeout_at]
            .into_iter()
            .flatten()
            .map(|(at, _)| at)
            .min();
        if let Some(at) = next {
            self.heap.push(Reverse((at, id, t.generation)));
        }
    }

    fn remove(&mut self, id: TxnId) {
        if let Some(t) = self.txns.remove(&id) {
            let map = if t.client {
                &mut self.clients
            } else {
                &mut self.servers
            };
            if map.get(&t.key) == Some(&id) {
                map.remove(&t.key);
            }
            if let Some(k) = t.dialog_key {
                self.awaiting_ack.remove(&k);
            }
        }
    }

    /// Gives memory back after a peak: maps far larger than their content are shrunk and the
    /// timer heap loses its stale entries. Cheap to call once a second.
    pub fn shrink(&mut self) {
        fn fit<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
            if m.capacity() > 1024 && m.len() < m.capacity() / 4 {
                m.shrink_to(m.len() * 2);
            }
        }
        fit(&mut self.txns);
        fit(&mut self.clients);
        fit(&mut self.servers);
        fit(&mut self.awaiting_ack);
        if self.heap.len() > 1024 && self.heap.len() > self.txns.len() * 4 {
            let txns = &self.txns;
            self.heap.retain(|Reverse((_, id, generation))| {
                txns.get(id).is_some_and(|t| t.generation == *generation)
            });
            self.heap.shrink_to_fit();
        }
    }

    /// The request that opened a server transaction (to build responses from).
    pub fn server_request(&self, id: TxnId) -> Option<&Request> {
        self.txns.get(&id).filter(|t| !t.client).map(|t| &t.request)
    }

    /// The request a client transaction sent (to build CANCEL or ACK from).
    pub fn client_request(&self, id: TxnId) -> Option<&Request> {
        self.txns.get(&id).filter(|t| t.client).map(|t| &t.request)
    }

    /// The peer a server transaction answers.
    pub fn server_peer(&self, id: TxnId) -> Option<Peer> {
        self.txns.get(&id).filter(|t| !t.client).map(|t| t.peer)
    }

    /// Where a client transaction sends.
    pub fn client_peer(&self, id: TxnId) -> Option<Peer> {
        self.txns.get(&id).filter(|t| t.client).map(|t| t.peer)
    }
}

/// The top Via's branch, zero-copy from the header value that holds it.
fn branch_of(h: &crate::header::Headers) -> ByteString {
    let Some((value, entry)) = h.first_entry(&Name::Via) else {
        return ByteString::new();
    };
    let branch = crate::typed::Via::parse(entry)
        .ok()
        .and_then(|v| v.branch());
    branch.map(|b| value.slice_ref(b)).unwrap_or_default()
}

/// A server transaction's key (see [`Key`]).
fn server_key(req: &Request, from: Peer) -> Key {
    let kind = kind_of(&req.method);
    let Some((value, entry)) = req.headers.first_entry(&Name::Via) else {
        return (ByteString::new(), kind, Some(from.addr), ByteString::new());
    };
    let via = crate::typed::Via::parse(entry).ok();
    let sent_by = via.map_or_else(ByteString::new, |v| value.slice_ref(v.sent_by));
    let branch = match via.and_then(|v| v.branch()) {
        Some(b) if b.len() > MAGIC.len() && b.starts_with(MAGIC) => value.slice_ref(b),
        b => {
            let h = &req.headers;
            let from_tag = h.from_addr().ok().and_then(|f| f.tag()).unwrap_or("");
            let seq = h.cseq().map_or(0, |c| c.seq);
            let call_id = h.call_id().map_or("", |c| &**c);
            ByteString::from(format!("{}\n{call_id}\n{seq}\n{from_tag}", b.unwrap_or("")))
        }
    };
    (branch, kind, Some(from.addr), sent_by)
}

/// RFC 3261 §8.1.1.7: the branch of a transaction of RFC 3261 starts with this.
const MAGIC: &str = "z9hG4bK";

fn dialog_key_of(resp: &Response) -> Option<(ByteString, u32)> {
    Some((
        resp.headers.call_id()?.clone(),
        resp.headers.cseq().ok()?.seq,
    ))
}

/// RFC 3581 §4 and RFC 3261 §18.2.1: record where the request really came from.
fn stamp_received(req: &mut Request, from: Peer) {
    let Some(first) = req.headers.0.iter_mut().find(|h| h.name == Name::Via) else {
        return;
    };
    let entries: Vec<&str> = crate::header::split_list(&first.value).collect();
    let Some(top) = entries.first() else { return };
    let Ok(via) = crate::typed::Via::parse(top) else {
        return;
    };
    let ip = from.addr.ip();
    let differs = match via.host {
        crate::uri::Host::Ip(a) => a != ip,
        crate::uri::Host::Name(_) => true,
    };
    if !differs && !via.wants_rport() {
        return;
    }
    let mut out = String::with_capacity(top.len() + 40);
    for (name, value) in via.params.iter() {
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        out.push(';');
        out.push_str(name);
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
    let head = &top[..top.len() - via.params.raw().len()];
    let mut stamped = format!("{head}{out};received={ip}");
    if via.wants_rport() {
        stamped.push_str(&format!(";rport={}", from.addr.port()));
    }
    let rest: Vec<&str> = entries[1..].to_vec();
    let value = if rest.is_empty() {
        stamped
    } else {
        format!("{stamped}, {}", rest.join(", "))
    };
    first.value = ByteString::from(value);
}

/// RFC 3261 §18.2.2 and RFC 3581 §4: where responses to this request go.
pub fn response_peer(req: &Request, from: Peer) -> Peer {
    if from.transport.is_reliable() {
        return from;
    }
    let Ok(via) = req.headers.top_via() else {
        return from;
    };
    if via.params.get("rport").flatten().is_some() || via.wants_rport() {
        return from;
    }
    let port = via.port.unwrap_or(5060);
    Peer {
        transport: from.transport,
        addr: SocketAddr::new(from.addr.ip(), port),
    }
}

/// What a server transaction keeps of its request: the method, the Request-URI and the
/// headers a response copies ([`make_response`]), not the body or the rest (a transaction
/// outlives its call by up to 32 s; the TU gets the whole request).
fn for_responses(req: &Request) -> Request {
    let kept_headers = || {
        req.headers.0.iter().filter(|h| {
            matches!(
                h.name,
                Name::Via | Name::From | Name::To | Name::CallId | Name::CSeq
            )
        })
    };
    // Copied into one buffer of their own: slices would keep the whole received datagram
    // (or the whole request built) alive as long as the transaction, 32 s after its end.
    let len = req.uri.len() + kept_headers().map(|h| h.value.len()).sum::<usize>();
    let mut text = String::with_capacity(len);
    text.push_str(&req.uri);
    for h in kept_headers() {
        text.push_str(&h.value);
    }
    let all = ByteString::from(text);
    let mut at = req.uri.len();
    let mut kept = Request::new(req.method.clone(), all.slice_ref(&all[..at]));
    kept.headers.0.reserve_exact(kept_headers().count());
    for h in kept_headers() {
        let end = at + h.value.len();
        kept.headers.0.push(crate::header::Header {
            name: h.name.clone(),
            value: all.slice_ref(&all[at..end]),
        });
        at = end;
    }
    kept
}

/// Builds a response to `req` (§8.2.6): Via, From, To, Call-ID and CSeq copied; a To tag
/// added when given and the request had none.
pub fn make_response(req: &Request, status: u16, to_tag: Option<&str>) -> Response {
    let mut resp = Response::new(status, crate::message::reason_phrase(status));
    for h in &req.headers.0 {
        match h.name {
            Name::Via | Name::From | Name::CallId | Name::CSeq => resp.headers.0.push(h.clone()),
            Name::To => {
                let has_tag =
                    crate::typed::NameAddr::parse(&h.value, "To").is_ok_and(|n| n.tag().is_some());
                let value = match to_tag {
                    Some(tag) if !has_tag && status > 100 => {
                        ByteString::from(format!("{};tag={tag}", &*h.value))
                    }
                    _ => h.value.clone(),
                };
                resp.headers.push(Name::To, value);
            }
            _ => {}
        }
    }
    resp
}

/// The part CANCEL and the non-2xx ACK share (§9.1, §17.1.1.3): the INVITE's Request-URI,
/// top Via, From and Call-ID (and To when `to` is None), CSeq number with `method`, and Routes.
fn mirror_invite(invite: &Request, method: Method, to: Option<&ByteString>) -> Request {
    let mut r = Request::new(method.clone(), invite.uri.clone());
    if let Some((value, via)) = invite.headers.first_entry(&Name::Via) {
        r.headers.push(Name::Via, value.slice_ref(via));
    }
    r.headers.push(Name::MaxForwards, "70");
    for name in [Name::From, Name::CallId] {
        if let Some(v) = invite.headers.get(&name) {
            r.headers.push(name, v.clone());
        }
    }
    if let Some(to) = to.or_else(|| invite.headers.get(&Name::To)) {
        r.headers.push(Name::To, to.clone());
    }
    let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
    r.headers.push(Name::CSeq, format!("{seq} {method}"));
    for route in invite.headers.all(&Name::Route) {
        r.headers.push(Name::Route, route.clone());
    }
    r
}

/// Builds the ACK for a non-2xx final response (§17.1.1.3): same Request-URI, Call-ID,
/// From, CSeq number and top Via as the INVITE; To from the response; Route copied.
pub fn make_ack(invite: &Request, resp: &Response) -> Request {
    mirror_invite(invite, Method::Ack, resp.headers.get(&Name::To))
}

/// Builds a CANCEL for a pending INVITE (§9.1).
pub fn make_cancel(invite: &Request) -> Request {
    mirror_invite(invite, Method::Cancel, None)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod edge_tests {
    use super::*;

    #[test]
    fn an_empty_first_via_line_neither_panics_nor_hides_the_branch() {
        let mut r = Request::new(Method::Invite, "sip:b@b");
        r.headers.push(Name::Via, "");
        r.headers.push(Name::Via, "SIP/2.0/UDP a;branch=z9hG4bKx");
        assert_eq!(&*branch_of(&r.headers), "z9hG4bKx");
        let c = make_cancel(&r);
        assert_eq!(
            c.headers.get(&Name::Via).map(|v| v.to_string()),
            Some("SIP/2.0/UDP a;branch=z9hG4bKx".to_owned())
        );
    }
}
