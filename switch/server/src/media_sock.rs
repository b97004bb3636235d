//! A media socket read on readiness or on its session's tick.
//!
//! A relayed packet goes on the moment it arrives, so a relaying session reads its sockets
//! on readiness. A transcoding session (or one playing a prompt) only uses what arrived at
//! its next tick: its packets wait in a jitter buffer for it anyway. Its sockets are then
//! taken off the runtime's epoll set and read on the tick, so the worker wakes once per
//! tick for all its sessions rather than once per packet (docs/BENCHMARKS.md, issue 16:
//! ~100 wake-ups per browser call-second). Read on the tick, each datagram keeps the time
//! the kernel received it (`SO_TIMESTAMPNS`): jitter, RTCP and a browser's congestion
//! feedback see when it came, not when it was read.

use std::io;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use tokio::net::UdpSocket;
use tracing::warn;

/// Datagrams one socket gives a tick at most (a leg sends one or two per tick; the rest
/// waits for the next, so a flood cannot hold the worker).
pub const PER_TICK: usize = 32;

/// How a media socket is read: see the module's documentation.
#[derive(Debug)]
pub enum MediaSock {
    /// On readiness, registered with the worker's runtime.
    Ready(UdpSocket),
    /// On the session's tick, off the runtime (non-blocking).
    Polled(std::net::UdpSocket),
    /// Lost in a switch that failed (logged): sends and reads nothing.
    Lost,
}

impl MediaSock {
    /// The next datagram, when read on readiness; never, when read on the tick.
    pub async fn recv_ready(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self {
            MediaSock::Ready(s) => s.recv_from(buf).await.ok(),
            _ => std::future::pending().await,
        }
    }

    /// Sends without waiting (a full socket buffer drops the datagram, as RTP must).
    pub fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            MediaSock::Ready(s) => s.try_send_to(buf, to),
            MediaSock::Polled(s) => s.send_to(buf, to),
            MediaSock::Lost => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Whether it is read on the tick.
    pub fn polled(&self) -> bool {
        matches!(self, MediaSock::Polled(_))
    }

    /// Reads it on the tick (`true`) or on readiness. Must run inside the worker's runtime.
    pub fn set_polled(&mut self, polled: bool) {
        if self.polled() == polled || matches!(self, MediaSock::Lost) {
            return;
        }
        let switched = match std::mem::replace(self, MediaSock::Lost) {
            MediaSock::Ready(s) => s.into_std().map(|s| {
                stamp_arrivals(&s);
                MediaSock::Polled(s)
            }),
            MediaSock::Polled(s) => UdpSocket::from_std(s).map(MediaSock::Ready),
            MediaSock::Lost => return,
        };
        match switched {
            Ok(s) => *self = s,
            Err(e) => warn!(error = %e, "a media socket was lost switching how it is read"),
        }
    }

    /// The next datagram waiting on a socket read on the tick, with the time it arrived:
    /// the kernel's, on the monotonic clock, no earlier than `floor` (the last time the
    /// session was given) nor later than now. None: nothing waits (or an ICMP error for
    /// something sent earlier was reported instead), or the socket is read on readiness.
    /// A tick reads at most [`PER_TICK`] from one socket.
    pub fn recv_polled(
        &self,
        buf: &mut [u8],
        cmsg: &mut [u8],
        floor: Instant,
    ) -> Option<(usize, SocketAddr, Instant)> {
        let MediaSock::Polled(s) = self else {
            return None;
        };
        let (n, from, stamp) = recv_stamped(s, buf, cmsg).ok()?;
        let (mono, wall) = (Instant::now(), SystemTime::now());
        let at = stamp
            .and_then(|t| wall.duration_since(t).ok())
            .and_then(|ago| mono.checked_sub(ago))
            .unwrap_or(mono)
            .clamp(floor.min(mono), mono);
        Some((n, from, at))
    }
}

/// Room for the arrival time's control message.
pub fn cmsg_buffer() -> Vec<u8> {
    #[cfg(target_os = "linux")]
    {
        nix::cmsg_space!(nix::sys::time::TimeSpec)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

#[cfg(target_os = "linux")]
fn stamp_arrivals(s: &std::net::UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestampns};
    if let Err(e) = setsockopt(s, ReceiveTimestampns, &true) {
        // Arrival times are then the tick's: jitter figures grow, audio is the same.
        warn!(error = %e, "SO_TIMESTAMPNS refused");
    }
}

#[cfg(not(target_os = "linux"))]
fn stamp_arrivals(_: &std::net::UdpSocket) {}

/// One datagram and the kernel's receive time, if it gave one.
#[cfg(target_os = "linux")]
fn recv_stamped(
    s: &std::net::UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};

    let mut iov = [IoSliceMut::new(buf)];
    let m = recvmsg::<SockaddrStorage>(s.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::MSG_DONTWAIT)
        .map_err(io::Error::from)?;
    let from = m
        .address
        .as_ref()
        .and_then(crate::udp::linux::socket_addr)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    let mut stamp = None;
    if let Ok(cmsgs) = m.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(t) = c {
                let (secs, nanos) = (u64::try_from(t.tv_sec()), u32::try_from(t.tv_nsec()));
                if let (Ok(secs), Ok(nanos)) = (secs, nanos) {
                    stamp = SystemTime::UNIX_EPOCH
                        .checked_add(std::time::Duration::new(secs, nanos.min(999_999_999)));
                }
            }
        }
    }
    Ok((m.bytes, from, stamp))
}

#[cfg(not(target_os = "linux"))]
fn recv_stamped(
    s: &std::net::UdpSocket,
    buf: &mut [u8],
    _: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SystemTime>)> {
    let (n, from) = s.recv_from(buf)?;
    Ok((n, from, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A socket on loopback, switched to the tick (inside the runtime), and a peer.
    fn polled_with_peer() -> (MediaSock, SocketAddr, std::net::UdpSocket) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        let addr = s.local_addr().unwrap();
        let mut sock = MediaSock::Ready(UdpSocket::from_std(s).unwrap());
        sock.set_polled(true);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        (sock, addr, peer)
    }

    /// A socket switched to the tick keeps what arrived, with the kernel's arrival times
    /// (not the read's), and back on readiness reads what came before the switch.
    #[tokio::test]
    async fn read_on_the_tick_with_arrival_times_then_on_readiness() {
        let (mut sock, addr, peer) = polled_with_peer();
        assert!(sock.polled());
        let before = Instant::now();
        peer.send_to(b"one", addr).unwrap();
        peer.send_to(b"two", addr).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let (mut buf, mut cmsg) = ([0u8; 64], cmsg_buffer());
        let mut got = Vec::new();
        while let Some((n, from, at)) = sock.recv_polled(&mut buf, &mut cmsg, before) {
            got.push((buf[..n].to_vec(), from, at));
        }
        let read = Instant::now();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, b"one");
        assert_eq!(got[1].0, b"two");
        assert_eq!(got[0].1, peer.local_addr().unwrap());
        for (_, _, at) in &got {
            assert!(*at >= before, "arrival before the send");
            // Sent 30 ms before the read: the arrival time is the kernel's, not the read's.
            assert!(
                read.duration_since(*at) >= Duration::from_millis(20),
                "{at:?} {read:?}"
            );
        }

        // What came while it was read on the tick is read on readiness after the switch.
        peer.send_to(b"three", addr).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        sock.set_polled(false);
        assert!(!sock.polled());
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_ready(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"three");
        // Sending works either way.
        assert_eq!(
            sock.try_send_to(b"x", peer.local_addr().unwrap()).unwrap(),
            1
        );
    }

    /// A floor later than the kernel's time wins (times given a session never go back).
    #[tokio::test]
    async fn arrival_times_never_go_back() {
        let (sock, addr, peer) = polled_with_peer();
        peer.send_to(b"late", addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let floor = Instant::now();
        let (mut buf, mut cmsg) = ([0u8; 64], cmsg_buffer());
        let (_, _, at) = sock.recv_polled(&mut buf, &mut cmsg, floor).unwrap();
        assert!(at >= floor);
        assert!(sock.recv_polled(&mut buf, &mut cmsg, floor).is_none());
    }
}
