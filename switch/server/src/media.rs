//! The media of each call: one small task per call with four sockets (RTP and RTCP for each
//! leg) running a `switchboard_media::Session` — forwarding, transcoding, digits, prompts,
//! RTP timeouts — with symmetric latching from `switchboard_media::Relay`. What the session
//! notices (digits, timeouts, prompts done) goes back to the engine over a channel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchboard_core::{CallRef, MediaPorts, Play};
use switchboard_media::{Latching, LegMedia, MediaEvent, Playable, Relay, Session, Side};
use switchboard_webrtc::PeerOutput;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::media_sock::{MediaSock, PER_TICK};

/// Changes the SIP thread may queue for one call's media session (a handful per call's
/// life; a full queue means the session is stuck).
const CTL_QUEUE: usize = 256;

/// Media counters for `/metrics`.
#[derive(Debug, Default)]
pub struct MediaCounters {
    /// RTP packets sent to leg B.
    pub rtp_a_to_b: AtomicU64,
    /// RTP packets sent to leg A.
    pub rtp_b_to_a: AtomicU64,
    /// RTCP packets received.
    pub rtcp_in: AtomicU64,
    /// Packets dropped (strangers, unknown payload types, no destination yet).
    pub dropped: AtomicU64,
    /// Relays that could not bind their ports.
    pub bind_failures: AtomicU64,
    /// Packets the jitter buffers concealed (lost or late), all calls.
    pub concealed: AtomicU64,
    /// RTP packets received from legs, ended calls.
    pub rx_packets: AtomicU64,
    /// RTP packets lost on the way to us (sequence gaps), ended calls.
    pub rx_lost: AtomicU64,
    /// Calls hung up for lack of RTP.
    pub timeouts: AtomicU64,
    /// SRTP/SRTCP packets refused (failed authentication, replayed), ended calls.
    pub srtp_refused: AtomicU64,
}

/// Media quality of one leg, as last measured (updated with each RTCP report, every 5 s).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LegQuality {
    /// RTP packets received from the leg.
    pub rx_packets: u64,
    /// Of those expected, lost (from sequence numbers).
    pub rx_lost: u64,
    /// Interarrival jitter of the leg's stream, ms.
    pub rx_jitter_ms: f64,
    /// How far the leg's timestamps have fallen behind their arrival since its stream began,
    /// ms (negative: ahead).
    pub rx_drift_ms: f64,
    /// Packets sent to the leg.
    pub tx_packets: u64,
    /// Loss the leg reports on our stream (0..1), from its RTCP.
    pub remote_loss: Option<f64>,
    /// Jitter the leg reports on our stream, ms, from its RTCP.
    pub remote_jitter_ms: Option<f64>,
    /// Round trip to the leg, ms (from its RTCP).
    pub rtt_ms: Option<f64>,
    /// The SDES-SRTP suite of the leg (None: plain RTP).
    pub srtp: Option<&'static str>,
    /// SRTP/SRTCP packets from the leg refused (authentication, replay).
    pub srtp_refused: u64,
    /// Why the last one was, in words.
    pub srtp_last_refusal: Option<&'static str>,
}

fn quality_of(s: &Session, side: Side, clock: u32) -> LegQuality {
    let st = s.stats(side);
    LegQuality {
        rx_packets: st.rx.packets,
        rx_lost: st.rx.lost(),
        rx_jitter_ms: st.rx.jitter * 1000.0 / f64::from(clock.max(1)),
        rx_drift_ms: st.rx.drift() as f64 * 1000.0 / f64::from(clock.max(1)),
        tx_packets: st.sent,
        remote_loss: st.remote.map(|r| r.fraction_lost),
        remote_jitter_ms: st.remote.map(|r| r.jitter_ms),
        rtt_ms: st.remote.and_then(|r| r.rtt_ms),
        srtp: s.srtp_suite(side).map(|x| x.name()),
        srtp_refused: st.srtp_refused,
        srtp_last_refusal: st.srtp_last_refusal.map(|(rtcp, e)| {
            use switchboard_media::srtp::SrtpError as E;
            match (rtcp, e) {
                (false, E::Auth) => "SRTP: authentication failed",
                (false, E::Replay) => "SRTP: replayed or too old",
                (false, _) => "SRTP: malformed",
                (true, E::Auth) => "SRTCP: authentication failed",
                (true, E::Replay) => "SRTCP: replayed or too old",
                (true, _) => "SRTCP: malformed",
            }
        }),
    }
}

/// Quality of the calls in progress, by call.
pub type QualityMap = Arc<std::sync::Mutex<HashMap<CallRef, [LegQuality; 2]>>>;

/// A prompt loaded from the sounds directory.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Sample rate.
    pub rate: u32,
    /// Mono samples.
    pub samples: Arc<[i16]>,
}

/// A browser leg's WebRTC peer and the socket of its ICE candidate, handed to the call's
/// media session when it anchors leg A at the address the leg's SDP names (the candidate's):
/// the session then runs the peer itself — SRTP in, RTP to the session, no task or socket in
/// between.
#[derive(Debug)]
pub struct Tap {
    /// The browser's peer (str0m).
    pub peer: switchboard_webrtc::BrowserPeer,
    /// The socket of its ICE candidate ([`bind_ice`]), registered with the runtime of the
    /// call's media session when that takes the tap.
    pub ice: std::net::UdpSocket,
    /// What the browser leg must hear of: connected, closed, gone.
    pub events: mpsc::UnboundedSender<PeerOutput>,
    /// New peers for the same leg (the tab navigated and the next page re-attached): each
    /// replaces the running one, on the same socket; the core and leg B notice nothing.
    pub renew: Option<mpsc::Receiver<Renewal>>,
}

/// A browser's new peer for a call in progress, and where its events go.
#[derive(Debug)]
pub struct Renewal {
    /// The new peer (answering the new page's offer, on the same candidate).
    pub peer: switchboard_webrtc::BrowserPeer,
    /// Its events.
    pub events: mpsc::UnboundedSender<PeerOutput>,
}

async fn renewal(rx: &mut Option<mpsc::Receiver<Renewal>>) -> Option<Renewal> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Taps waiting for their media session, by the address in the leg's SDP.
pub type Taps = Arc<std::sync::Mutex<HashMap<SocketAddr, Tap>>>;

/// Binds a browser peer's ICE candidate socket (non-blocking, for a [`Tap`]).
pub fn bind_ice(candidate: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(candidate)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A tap its media session took: the peer, its socket on the session's runtime.
struct LiveTap {
    peer: switchboard_webrtc::BrowserPeer,
    ice: MediaSock,
    events: mpsc::UnboundedSender<PeerOutput>,
}

async fn tap_recv(tap: &Option<LiveTap>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match tap {
        Some(t) => t.ice.recv_ready(buf).await,
        None => std::future::pending().await,
    }
}

/// Moves what a browser's peer produced: datagrams to the browser, its RTP into the
/// session as its leg's (`side`), its state to the browser leg.
fn pump_peer(t: &mut LiveTap, side: Side, session: &mut Session, now: std::time::Instant) {
    while let Some(o) = t.peer.poll() {
        match o {
            PeerOutput::Transmit(to, data) => {
                let _ = t.ice.try_send_to(&data, to);
            }
            PeerOutput::Rtp(p) => session.handle_rtp(now, side, &p),
            other => {
                let _ = t.events.send(other);
            }
        }
    }
}

#[derive(Debug)]
enum Ctl {
    Remote(Side, Option<SocketAddr>, Option<IpAddr>, bool),
    Leg(Side, LegMedia),
    Digit(Side, char, u32),
    Play(Side, Playable, u32),
    Stop(Side),
}

/// The media workers: one thread per core, each with a runtime of its own (no work
/// stealing) that runs the sessions of the calls given to it. A call's sockets, timers and
/// ticks stay on its worker; sessions on one worker tick on the same grid, so one wake-up
/// serves them all.
pub fn media_workers(n: usize) -> std::io::Result<Vec<tokio::runtime::Handle>> {
    (0..n.max(1))
        .map(|i| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let h = rt.handle().clone();
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
            Ok(h)
        })
        .collect()
}

/// Sessions a media worker takes before the next worker gets calls (then the least
/// loaded does): a browser call costs ~1 % of a core, a relayed one a tenth of that.
const PACK_SESSIONS: u64 = 48;

/// A session counted on its worker (`workers[i]`) for as long as this lives: moved into the
/// session's task, it is counted out however the task ends, even dropped unpolled.
struct Load(Arc<[(tokio::runtime::Handle, AtomicU64)]>, usize);

impl Load {
    fn new(workers: &Arc<[(tokio::runtime::Handle, AtomicU64)]>, i: usize) -> Load {
        workers[i].1.fetch_add(1, Ordering::Relaxed);
        Load(workers.clone(), i)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0[self.1].1.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All media sessions of the switch.
#[derive(Debug)]
pub struct MediaHub {
    ip: IpAddr,
    /// The media workers the sessions run on ([`media_workers`]), and how many sessions
    /// each runs.
    workers: Arc<[(tokio::runtime::Handle, AtomicU64)]>,
    sessions: HashMap<CallRef, mpsc::Sender<Ctl>>,
    events: mpsc::Sender<(CallRef, MediaEvent)>,
    /// Prompts by name.
    pub prompts: Arc<HashMap<String, Prompt>>,
    /// Hang up calls silent this long (None: never).
    pub rtp_timeout: Option<Duration>,
    /// Opus encoder complexity for new calls.
    pub opus_complexity: u8,
    /// Counters.
    pub counters: Arc<MediaCounters>,
    /// Quality of calls in progress.
    pub quality: QualityMap,
    /// Call records (each session's final quality goes there).
    pub storage: Option<crate::storage::Store>,
    /// In-process legs (the browser leg) waiting for their session.
    pub taps: Taps,
    /// Who may latch a leg's media (`[media] rtp_latching`).
    pub latching: Latching,
    /// The port pool whose pairs the engine bound as it allocated them.
    pub pool: Option<switchboard_media::PortPool>,
    seed: u64,
    /// The tick grid every session shares: their 20 ms ticks fall together (one wake-up of
    /// a runtime thread for all the calls it serves, not one per call).
    grid: std::time::Instant,
}

impl MediaHub {
    /// A hub binding on `ip`; session events are sent to `events`.
    pub fn new(
        ip: IpAddr,
        workers: Vec<tokio::runtime::Handle>,
        events: mpsc::Sender<(CallRef, MediaEvent)>,
        prompts: HashMap<String, Prompt>,
        rtp_timeout: Option<Duration>,
    ) -> MediaHub {
        MediaHub {
            ip,
            workers: workers
                .into_iter()
                .map(|h| (h, AtomicU64::new(0)))
                .collect(),
            sessions: HashMap::new(),
            events,
            prompts: Arc::new(prompts),
            rtp_timeout,
            opus_complexity: switchboard_media::codec::OPUS_COMPLEXITY,
            counters: Arc::default(),
            quality: Arc::default(),
            storage: None,
            taps: Arc::default(),
            latching: Latching::default(),
            pool: None,
            seed: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            grid: std::time::Instant::now(),
        }
    }

    /// Binds and starts the media of a call. The ports are bound here, before the call's
    /// SDP goes anywhere: a port that cannot be bound (taken, or no file descriptor left)
    /// is the caller's error to get (the call is refused), never dead air.
    pub fn open(&mut self, call: CallRef, ports: MediaPorts) -> std::io::Result<()> {
        let ip = self.ip;
        let claimed = self
            .pool
            .as_ref()
            .and_then(|p| Some((p.claim(ports.a)?, p.claim(ports.b)?)));
        let socks = match claimed {
            Some(([a_rtp, a_rtcp], [b_rtp, b_rtcp])) => {
                set_nonblocking([a_rtp, a_rtcp, b_rtp, b_rtcp])
            }
            None => bind(ip, ports),
        };
        let socks = match socks {
            Ok(s) => s,
            Err(e) => {
                self.counters.bind_failures.fetch_add(1, Ordering::Relaxed);
                warn!(call = %call, error = %e, "cannot bind RTP ports {}/{}: the call is refused", ports.a, ports.b);
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(CTL_QUEUE);
        self.sessions.insert(call, tx);
        let counters = self.counters.clone();
        let events = self.events.clone();
        let quality = self.quality.clone();
        let storage = self.storage.clone();
        let taps = self.taps.clone();
        let latching = self.latching;
        let mut session = Session::new(
            self.seed ^ call.0.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            self.rtp_timeout,
        );
        session.set_clock(
            std::time::Instant::now(),
            ntp_now(),
            &format!("switchboard@{ip}"),
        );
        session.set_opus_complexity(self.opus_complexity);
        session.set_tick_grid(self.grid);
        // Calls fill the first workers before the next: at light load one thread serves
        // them all (one wake-up per tick); past that they spread to the least loaded.
        let sessions_on = |i: usize| self.workers[i].1.load(Ordering::Relaxed);
        let Some(w) = (0..self.workers.len())
            .find(|&i| sessions_on(i) < PACK_SESSIONS)
            .or_else(|| (0..self.workers.len()).min_by_key(|&i| sessions_on(i)))
        else {
            return Err(std::io::Error::other("no media worker"));
        };
        let load = Load::new(&self.workers, w);
        self.workers[w].0.spawn(async move {
            let _load = load;
            match socks.into_tokio() {
                Ok(socks) => {
                    let final_quality =
                        run(call, socks, session, rx, counters, events, quality, taps, latching).await;
                    if let (Some(st), Ok(json)) = (storage, serde_json::to_string(&final_quality)) {
                        st.record(crate::storage::CdrOp::Quality { call: call.0, json });
                    }
                }
                Err(e) => {
                    counters.bind_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(call = %call, error = %e, "cannot register RTP sockets {}/{}", ports.a, ports.b);
                }
            }
        });
        Ok(())
    }

    fn send(&self, call: CallRef, ctl: Ctl) {
        // Never waits (the SIP thread calls this). A session this far behind is stuck: the
        // change is dropped and said so; its RTP timeout ends the call if media stopped.
        if let Some(tx) = self.sessions.get(&call)
            && let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(ctl)
        {
            warn!(call = %call, "media session's control queue full: change dropped");
        }
    }

    /// A leg's RTP address changed; `sends`: it will send RTP (not on hold).
    pub fn remote(
        &mut self,
        call: CallRef,
        side: Side,
        addr: Option<SocketAddr>,
        signalling: Option<IpAddr>,
        sends: bool,
    ) {
        self.send(call, Ctl::Remote(side, addr, signalling, sends));
    }

    /// A leg's codec and DTMF form.
    pub fn leg(&mut self, call: CallRef, side: Side, media: LegMedia) {
        self.send(call, Ctl::Leg(side, media));
    }

    /// Sends a digit to a leg.
    pub fn digit(&mut self, call: CallRef, side: Side, digit: char, ms: u32) {
        self.send(call, Ctl::Digit(side, digit, ms));
    }

    /// Plays a prompt or tone to a leg. A prompt missing since the dialplan was checked is
    /// reported done at once (the plan goes on).
    pub fn play(&mut self, call: CallRef, side: Side, what: Play, id: u32) {
        let playable = match &what {
            Play::Prompt(name) => self.prompts.get(name).map(|p| Playable::Samples {
                rate: p.rate,
                samples: p.samples.clone(),
            }),
            Play::Echo { ms } => Some(Playable::Echo { limit_ms: *ms }),
            Play::Tone { spec, ms } => {
                switchboard_media::tone::parse(spec)
                    .ok()
                    .map(|segs| Playable::Tone {
                        segs,
                        limit_ms: *ms,
                    })
            }
        };
        match playable {
            Some(p) => self.send(call, Ctl::Play(side, p, id)),
            None => {
                warn!(call = %call, ?what, "nothing to play (prompt removed since load?)");
                // The SIP thread's own queue: if it is full the call waits for its media
                // timeout instead of this prompt.
                if self
                    .events
                    .try_send((call, MediaEvent::PlayDone(side, id)))
                    .is_err()
                {
                    warn!(call = %call, "media event queue full: prompt end lost");
                }
            }
        }
    }

    /// Stops what plays to a leg.
    pub fn stop(&mut self, call: CallRef, side: Side) {
        self.send(call, Ctl::Stop(side));
    }

    /// Stops the media (dropping the sender ends the task, which closes its sockets).
    pub fn close(&mut self, call: CallRef) {
        self.sessions.remove(&call);
    }

    /// Sessions running.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }
}

struct Socks {
    a_rtp: MediaSock,
    a_rtcp: UdpSocket,
    b_rtp: MediaSock,
    b_rtcp: UdpSocket,
}

/// A call's four sockets, bound, not yet registered with the runtime.
struct Bound([std::net::UdpSocket; 4]);

/// Sockets the pool bound, made ready for the runtime.
fn set_nonblocking(socks: [std::net::UdpSocket; 4]) -> std::io::Result<Bound> {
    for s in &socks {
        s.set_nonblocking(true)?;
    }
    Ok(Bound(socks))
}

/// Binds a call's sockets now (a quick system call each, never blocking).
fn bind(ip: IpAddr, p: MediaPorts) -> std::io::Result<Bound> {
    let one = |port: u16| {
        let s = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        s.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(s)
    };
    Ok(Bound([one(p.a)?, one(p.a + 1)?, one(p.b)?, one(p.b + 1)?]))
}

impl Bound {
    /// Registers them with the runtime (inside it).
    fn into_tokio(self) -> std::io::Result<Socks> {
        let [a_rtp, a_rtcp, b_rtp, b_rtcp] = self.0;
        Ok(Socks {
            a_rtp: MediaSock::Ready(UdpSocket::from_std(a_rtp)?),
            a_rtcp: UdpSocket::from_std(a_rtcp)?,
            b_rtp: MediaSock::Ready(UdpSocket::from_std(b_rtp)?),
            b_rtcp: UdpSocket::from_std(b_rtcp)?,
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    call: CallRef,
    mut s: Socks,
    mut session: Session,
    mut rx: mpsc::Receiver<Ctl>,
    counters: Arc<MediaCounters>,
    events: mpsc::Sender<(CallRef, MediaEvent)>,
    quality: QualityMap,
    taps: Taps,
    latching: Latching,
) -> serde_json::Value {
    let mut relay = Relay::with_latching(latching);
    // Legs in this process (a browser: the caller's widget, or the agent's console): no
    // socket between them and the session.
    let mut taps_of: [Option<LiveTap>; 2] = [None, None];
    let mut renew: Option<mpsc::Receiver<Renewal>> = None;
    let mut timed_out = false;
    let mut clocks = [8000u32; 2];
    // One buffer per socket: select! polls all five receives at once.
    let (mut b0, mut b1, mut b2, mut b3) = ([0u8; 2048], [0u8; 2048], [0u8; 2048], [0u8; 2048]);
    let (mut b4, mut b5) = ([0u8; 2048], [0u8; 2048]);
    // Sockets read on the tick (a ticking session's, `MediaSock`) are read into this;
    // their arrival times are no earlier than the last time given to the session.
    let (mut tick_buf, mut cmsg) = ([0u8; 2048], crate::media_sock::cmsg_buffer());
    let mut given = now();
    loop {
        // A browser peer's own timers (feedback, consent checks, DTLS) wait for the
        // session's next wake when that comes within a tick: one wake-up serves both.
        let own = session.poll_timeout();
        let peer_wake = |i: usize| {
            let p = taps_of[i].as_ref().and_then(|t| t.peer.poll_timeout())?;
            Some(match own {
                Some(o) if o > p && o <= p + switchboard_media::session::TICK => o,
                _ => p,
            })
        };
        let wake = [own, peer_wake(0), peer_wake(1)]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            ctl = rx.recv() => match ctl {
                Some(Ctl::Remote(side, addr, signalling, sends)) => {
                    let slot = &mut taps_of[usize::from(side == Side::B)];
                    if slot.is_none()
                        && let Some(a) = addr
                        && let Some(t) = taps.lock().ok().and_then(|mut m| m.remove(&a))
                    {
                        match UdpSocket::from_std(t.ice).map(MediaSock::Ready) {
                            Ok(ice) => {
                                if t.renew.is_some() {
                                    renew = t.renew;
                                }
                                *slot = Some(LiveTap { peer: t.peer, ice, events: t.events });
                            }
                            Err(e) => {
                                warn!(%call, error = %e, "cannot take the browser's socket");
                                let _ = t.events.send(PeerOutput::Disconnected);
                            }
                        }
                    }
                    relay.set_remote(side, addr);
                    relay.set_signalling(side, signalling);
                    // A new address, or hold: silence until now is not a timeout, and a leg
                    // on hold may stay silent.
                    session.set_sending(now(), side, sends);
                }
                Some(Ctl::Leg(side, media)) => {
                    clocks[usize::from(side == Side::B)] = media.codec.clock();
                    session.set_leg(now(), side, media);
                }
                Some(Ctl::Digit(side, d, ms)) => session.send_digit(now(), side, d, ms),
                Some(Ctl::Play(side, what, id)) => session.play(now(), side, what, id),
                Some(Ctl::Stop(side)) => session.stop(side),
                None => break,
            },
            Some((n, src)) = s.a_rtp.recv_ready(&mut b0) => {
                rtp_in(&mut relay, &mut session, &counters, Side::A, src, &b0[..n], now());
            }
            Some((n, src)) = s.b_rtp.recv_ready(&mut b2) => {
                rtp_in(&mut relay, &mut session, &counters, Side::B, src, &b2[..n], now());
            }
            // RTCP is terminated here: each leg gets reports about the stream the switch sends it.
            Ok((n, src)) = s.a_rtcp.recv_from(&mut b1) => {
                if relay.accept(Side::A, src, true) {
                    counters.rtcp_in.fetch_add(1, Ordering::Relaxed);
                    session.handle_rtcp(now(), Side::A, &b1[..n]);
                } else {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok((n, src)) = s.b_rtcp.recv_from(&mut b3) => {
                if relay.accept(Side::B, src, true) {
                    counters.rtcp_in.fetch_add(1, Ordering::Relaxed);
                    session.handle_rtcp(now(), Side::B, &b3[..n]);
                } else {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(r) = renewal(&mut renew) => {
                // Only the caller's widget moves between pages.
                if let Some(t) = &mut taps_of[0] {
                    tracing::info!(%call, "the browser re-attached with a new peer");
                    let mut old = std::mem::replace(&mut t.peer, r.peer);
                    t.events = r.events;
                    old.close();
                }
            }
            Some((n, src)) = tap_recv(&taps_of[0], &mut b4) => {
                if let Some(t) = &mut taps_of[0] {
                    t.peer.handle_receive(now(), src, &b4[..n]);
                }
            }
            Some((n, src)) = tap_recv(&taps_of[1], &mut b5) => {
                if let Some(t) = &mut taps_of[1] {
                    t.peer.handle_receive(now(), src, &b5[..n]);
                }
            }
            () = sleep_until(wake) => {
                // What waits on sockets read on the tick goes in first, as it arrived.
                for (sock, side) in [(&s.a_rtp, Side::A), (&s.b_rtp, Side::B)] {
                    for _ in 0..PER_TICK {
                        let Some((n, src, at)) = sock.recv_polled(&mut tick_buf, &mut cmsg, given) else {
                            break;
                        };
                        rtp_in(&mut relay, &mut session, &counters, side, src, &tick_buf[..n], at);
                    }
                }
                for (t, side) in taps_of.iter_mut().zip([Side::A, Side::B]) {
                    let Some(t) = t else { continue };
                    for _ in 0..PER_TICK {
                        let Some((n, src, at)) = t.ice.recv_polled(&mut tick_buf, &mut cmsg, given) else {
                            break;
                        };
                        t.peer.handle_receive(at, src, &tick_buf[..n]);
                        pump_peer(t, side, &mut session, at);
                    }
                }
                session.handle_timeout(now());
                for t in taps_of.iter_mut().flatten() {
                    t.peer.handle_timeout(now());
                }
            }
        }
        for (t, side) in taps_of.iter_mut().zip([Side::A, Side::B]) {
            if let Some(t) = t {
                pump_peer(t, side, &mut session, now());
            }
        }
        while let Some((side, buf)) = session.poll_transmit() {
            if let Some(t) = &mut taps_of[usize::from(side == Side::B)] {
                t.peer.send_rtp(now(), &buf);
                let counter = match side {
                    Side::A => &counters.rtp_b_to_a,
                    Side::B => &counters.rtp_a_to_b,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                session.recycle(buf);
                continue;
            }
            let (sock, counter) = match side {
                Side::A => (&s.a_rtp, &counters.rtp_b_to_a),
                Side::B => (&s.b_rtp, &counters.rtp_a_to_b),
            };
            match relay.rtp_dest(side) {
                Some(dst) if sock.try_send_to(&buf, dst).is_ok() => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            session.recycle(buf);
        }
        // Reports come every 5 s: the quality they carry is shown before they leave, so a
        // leg that has its report finds the same figures in `calls`.
        let reports: Vec<(Side, Vec<u8>)> = std::iter::from_fn(|| session.poll_rtcp()).collect();
        if !reports.is_empty()
            && let Ok(mut q) = quality.lock()
        {
            q.insert(
                call,
                [
                    quality_of(&session, Side::A, clocks[0]),
                    quality_of(&session, Side::B, clocks[1]),
                ],
            );
        }
        for (side, buf) in reports {
            let sock = match side {
                // A browser's RTCP is str0m's, with the browser itself.
                _ if taps_of[usize::from(side == Side::B)].is_some() => {
                    session.recycle(buf);
                    continue;
                }
                Side::A => &s.a_rtcp,
                Side::B => &s.b_rtcp,
            };
            if let Some(dst) = relay.rtcp_dest(side) {
                let _ = sock.try_send_to(&buf, dst);
            }
            session.recycle(buf);
        }
        // A ticking session's packets wait for its tick: its sockets are read then, one
        // wake-up per tick for all the worker's sessions; a relaying one's on readiness.
        let polled = session.reads_on_tick();
        s.a_rtp.set_polled(polled);
        s.b_rtp.set_polled(polled);
        for t in taps_of.iter_mut().flatten() {
            t.ice.set_polled(polled);
        }
        given = now();
        while let Some(ev) = session.poll_event() {
            // A call, not a leg: both legs may fall silent in the same round.
            if matches!(ev, MediaEvent::Timeout(_)) && !std::mem::replace(&mut timed_out, true) {
                counters.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            // Bounded: a media session waits while the SIP thread is behind (backpressure);
            // the SIP thread never waits for media.
            let _ = events.send((call, ev)).await;
        }
    }
    for mut t in taps_of.into_iter().flatten() {
        // DTLS close_notify: the browser hears the call is over at once.
        t.peer.close();
        while let Some(o) = t.peer.poll() {
            if let PeerOutput::Transmit(to, data) = o {
                let _ = t.ice.try_send_to(&data, to);
            }
        }
    }
    if let Ok(mut q) = quality.lock() {
        q.remove(&call);
    }
    let (a, b) = (session.stats(Side::A), session.stats(Side::B));
    counters
        .concealed
        .fetch_add(a.jitter.concealed + b.jitter.concealed, Ordering::Relaxed);
    counters
        .rx_packets
        .fetch_add(a.rx.packets + b.rx.packets, Ordering::Relaxed);
    counters
        .rx_lost
        .fetch_add(a.rx.lost() + b.rx.lost(), Ordering::Relaxed);
    counters
        .srtp_refused
        .fetch_add(a.srtp_refused + b.srtp_refused, Ordering::Relaxed);
    debug!(call = %call, a_in = a.rx.packets, a_lost = a.rx.lost(), b_in = b.rx.packets, b_lost = b.rx.lost(), "media closed");
    serde_json::json!({
        "a": quality_of(&session, Side::A, clocks[0]),
        "b": quality_of(&session, Side::B, clocks[1]),
    })
}

/// Now as an NTP timestamp (seconds since 1900 in the high 32 bits).
fn ntp_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// An RTP packet from a leg's socket, if it comes from where the leg's media does.
fn rtp_in(
    relay: &mut Relay,
    session: &mut Session,
    counters: &MediaCounters,
    side: Side,
    src: SocketAddr,
    data: &[u8],
    at: std::time::Instant,
) {
    if relay.accept(side, src, false) {
        session.handle_rtp(at, side, data);
    } else {
        counters.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Loads every `*.wav` of `dir` as a prompt named after its file (without `.wav`).
pub fn load_prompts(dir: &std::path::Path) -> Result<HashMap<String, Prompt>, String> {
    let mut out = HashMap::new();
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "wav") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let wav = switchboard_media::wav::Wav::read(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        out.insert(
            name.to_owned(),
            Prompt {
                rate: wav.rate,
                samples: wav.samples.into(),
            },
        );
    }
    Ok(out)
}
