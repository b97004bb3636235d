//! The RTP relay: one small task per call with four sockets (RTP and RTCP for each leg),
//! forwarding packets untouched where `switchboard_media::Relay` says.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use switchboard_core::{CallRef, MediaPorts};
use switchboard_media::{Relay, Side};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Relay counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MediaCounters {
    /// RTP packets forwarded from leg A to leg B.
    pub rtp_a_to_b: AtomicU64,
    /// RTP packets forwarded from leg B to leg A.
    pub rtp_b_to_a: AtomicU64,
    /// RTCP packets forwarded.
    pub rtcp_relayed: AtomicU64,
    /// Packets dropped.
    pub dropped: AtomicU64,
    /// Relays that could not bind their ports.
    pub bind_failures: AtomicU64,
}

enum Ctl {
    Remote(Side, Option<SocketAddr>),
}

/// All relays of the switch.
#[derive(Debug)]
pub struct MediaHub {
    ip: IpAddr,
    /// The runtime relays run on (not the SIP thread's).
    rt: tokio::runtime::Handle,
    relays: HashMap<CallRef, mpsc::UnboundedSender<Ctl>>,
    /// Counters.
    pub counters: Arc<MediaCounters>,
}

impl std::fmt::Debug for Ctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ctl")
    }
}

impl MediaHub {
    /// A hub binding on `ip`.
    pub fn new(ip: IpAddr, rt: tokio::runtime::Handle) -> MediaHub {
        MediaHub {
            ip,
            rt,
            relays: HashMap::new(),
            counters: Arc::default(),
        }
    }

    /// Binds and starts the relay of a call.
    pub fn open(&mut self, call: CallRef, ports: MediaPorts) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.relays.insert(call, tx);
        let ip = self.ip;
        let counters = self.counters.clone();
        self.rt.spawn(async move {
            match bind(ip, ports).await {
                Ok(socks) => relay(call, socks, rx, counters).await,
                Err(e) => {
                    counters.bind_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(call = %call, error = %e, "cannot bind RTP ports {}/{}", ports.a, ports.b);
                }
            }
        });
    }

    /// A leg's RTP address changed.
    pub fn remote(&mut self, call: CallRef, side: Side, addr: Option<SocketAddr>) {
        if let Some(tx) = self.relays.get(&call) {
            let _ = tx.send(Ctl::Remote(side, addr));
        }
    }

    /// Stops the relay (dropping the sender ends the task, which closes its sockets).
    pub fn close(&mut self, call: CallRef) {
        self.relays.remove(&call);
    }

    /// Relays running.
    pub fn len(&self) -> usize {
        self.relays.len()
    }
}

struct Socks {
    a_rtp: UdpSocket,
    a_rtcp: UdpSocket,
    b_rtp: UdpSocket,
    b_rtcp: UdpSocket,
}

async fn bind(ip: IpAddr, p: MediaPorts) -> std::io::Result<Socks> {
    Ok(Socks {
        a_rtp: UdpSocket::bind(SocketAddr::new(ip, p.a)).await?,
        a_rtcp: UdpSocket::bind(SocketAddr::new(ip, p.a + 1)).await?,
        b_rtp: UdpSocket::bind(SocketAddr::new(ip, p.b)).await?,
        b_rtcp: UdpSocket::bind(SocketAddr::new(ip, p.b + 1)).await?,
    })
}

async fn relay(
    call: CallRef,
    s: Socks,
    mut rx: mpsc::UnboundedReceiver<Ctl>,
    counters: Arc<MediaCounters>,
) {
    let mut r = Relay::new();
    // One buffer per socket: select! polls all four receives at once.
    let (mut b0, mut b1, mut b2, mut b3) = ([0u8; 2048], [0u8; 2048], [0u8; 2048], [0u8; 2048]);
    loop {
        // Which socket a packet arrived on tells the leg and whether it is RTCP.
        let (side, rtcp, n, src) = tokio::select! {
            ctl = rx.recv() => match ctl {
                Some(Ctl::Remote(side, addr)) => { r.set_remote(side, addr); continue; }
                None => break,
            },
            Ok((n, src)) = s.a_rtp.recv_from(&mut b0) => (Side::A, false, n, src),
            Ok((n, src)) = s.a_rtcp.recv_from(&mut b1) => (Side::A, true, n, src),
            Ok((n, src)) = s.b_rtp.recv_from(&mut b2) => (Side::B, false, n, src),
            Ok((n, src)) = s.b_rtcp.recv_from(&mut b3) => (Side::B, true, n, src),
        };
        let buf: &[u8] = match (side, rtcp) {
            (Side::A, false) => &b0,
            (Side::A, true) => &b1,
            (Side::B, false) => &b2,
            (Side::B, true) => &b3,
        };
        let Some(dst) = r.on_packet(side, src, rtcp) else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // Out of the other leg's socket, so that leg sees one symmetric address.
        let out = match (side, rtcp) {
            (Side::A, false) => &s.b_rtp,
            (Side::A, true) => &s.b_rtcp,
            (Side::B, false) => &s.a_rtp,
            (Side::B, true) => &s.a_rtcp,
        };
        if out.try_send_to(&buf[..n], dst).is_ok() {
            let c = match (rtcp, side) {
                (true, _) => &counters.rtcp_relayed,
                (false, Side::A) => &counters.rtp_a_to_b,
                (false, Side::B) => &counters.rtp_b_to_a,
            };
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    debug!(call = %call, a_in = r.stats(Side::A).rtp_in, b_in = r.stats(Side::B).rtp_in, "relay closed");
}
