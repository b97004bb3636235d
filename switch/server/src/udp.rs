//! The SIP UDP socket with batched I/O: on Linux, `recvmmsg` takes up to [`BATCH`]
//! datagrams in one system call and `sendmmsg` sends what a turn of the engine produced in
//! one (docs/BENCHMARKS.md, issue 16: one `sendto` per datagram was a sixth of the SIP
//! thread at 3,000 calls/s). Elsewhere, one datagram per call, the same interface.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tracing::debug;

/// Datagrams per system call at most.
pub(crate) const BATCH: usize = 32;

/// The largest UDP payload (IPv6 jumbograms aside).
const DATAGRAM_MAX: usize = 65_536;

/// The socket, its receive buffers and what waits to be sent.
pub(crate) struct SipUdp {
    sock: UdpSocket,
    /// [`BATCH`] buffers of [`DATAGRAM_MAX`], one after the other.
    bufs: Box<[u8]>,
    /// Datagrams the engine produced, in order, not yet taken by the kernel.
    queue: VecDeque<(Bytes, SocketAddr)>,
    #[cfg(target_os = "linux")]
    headers: linux::Headers,
}

impl SipUdp {
    pub(crate) fn new(sock: UdpSocket) -> Self {
        SipUdp {
            sock,
            bufs: vec![0u8; BATCH * DATAGRAM_MAX].into_boxed_slice(),
            queue: VecDeque::with_capacity(BATCH * 4),
            #[cfg(target_os = "linux")]
            headers: linux::Headers::new(),
        }
    }

    /// Waits until a datagram can be read.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// Reads what is queued, up to `max` datagrams (at most [`BATCH`] per system call), and
    /// hands each to `each` with its source. How many were read.
    pub(crate) fn read(&mut self, max: usize, mut each: impl FnMut(Bytes, SocketAddr)) -> usize {
        let mut n = 0;
        while n < max {
            match self.read_batch(&mut each) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP error for something sent earlier, reported on the next read.
                Err(e) => {
                    debug!(error = %e, "UDP receive error");
                    break;
                }
            }
        }
        n
    }

    /// Queues a datagram; [`SipUdp::send`] sends it.
    pub(crate) fn push(&mut self, data: Bytes, to: SocketAddr) {
        self.queue.push_back((data, to));
    }

    /// Sends everything queued, in order, waiting for room in the socket's buffer when it
    /// is full. A datagram the kernel refuses (no route, a port an ICMP error closed) is
    /// dropped and logged; the rest still go.
    pub(crate) async fn send(&mut self) {
        while !self.queue.is_empty() {
            match self.send_batch() {
                Ok(k) => {
                    self.queue.drain(..k);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.sock.writable().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if let Some((_, to)) = self.queue.pop_front() {
                        debug!(%to, error = %e, "UDP send failed");
                    }
                }
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn read_batch(&mut self, each: &mut impl FnMut(Bytes, SocketAddr)) -> io::Result<usize> {
        let Self {
            sock,
            bufs,
            headers,
            ..
        } = self;
        sock.try_io(tokio::io::Interest::READABLE, || {
            headers.recv(sock, bufs, DATAGRAM_MAX, &mut *each)
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn read_batch(&mut self, each: &mut impl FnMut(Bytes, SocketAddr)) -> io::Result<usize> {
        let (n, from) = self.sock.try_recv_from(&mut self.bufs[..DATAGRAM_MAX])?;
        each(Bytes::copy_from_slice(&self.bufs[..n]), from);
        Ok(1)
    }

    #[cfg(target_os = "linux")]
    fn send_batch(&mut self) -> io::Result<usize> {
        let Self {
            sock,
            queue,
            headers,
            ..
        } = self;
        sock.try_io(tokio::io::Interest::WRITABLE, || headers.send(sock, queue))
    }

    #[cfg(not(target_os = "linux"))]
    fn send_batch(&mut self) -> io::Result<usize> {
        match self.queue.front() {
            Some((data, to)) => self.sock.try_send_to(data, *to).map(|_| 1),
            None => Ok(0),
        }
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod linux {
    use std::collections::VecDeque;
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use bytes::Bytes;
    use nix::sys::socket::{
        MsgFlags, MultiHeaders, SockaddrIn6, SockaddrStorage, recvmmsg, sendmmsg,
    };
    use tokio::net::UdpSocket;

    use super::BATCH;

    /// nix's preallocated `mmsghdr`s, one set for each direction.
    pub(super) struct Headers {
        recv: MultiHeaders<SockaddrStorage>,
        send: MultiHeaders<SockaddrStorage>,
        /// Where each queued datagram goes, in the kernel's form (reused).
        addrs: Vec<Option<SockaddrStorage>>,
    }

    impl Headers {
        pub(super) fn new() -> Self {
            Headers {
                recv: MultiHeaders::preallocate(BATCH, None),
                send: MultiHeaders::preallocate(BATCH, None),
                addrs: Vec::with_capacity(BATCH),
            }
        }

        /// One `recvmmsg`: each datagram read goes to `each`. How many.
        pub(super) fn recv(
            &mut self,
            sock: &UdpSocket,
            bufs: &mut [u8],
            size: usize,
            each: &mut impl FnMut(Bytes, SocketAddr),
        ) -> io::Result<usize> {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .chunks_exact_mut(size)
                .map(|b| [IoSliceMut::new(b)])
                .collect();
            let got = recvmmsg(
                sock.as_raw_fd(),
                &mut self.recv,
                iovs.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)?;
            let mut n = 0;
            for m in got {
                n += 1;
                let Some(from) = m.address.as_ref().and_then(socket_addr) else {
                    continue;
                };
                let data = m.iovs().next().unwrap_or_default();
                each(Bytes::copy_from_slice(data), from);
            }
            Ok(n)
        }

        /// One `sendmmsg` of the front of `queue` (up to [`BATCH`]). How many the kernel took.
        pub(super) fn send(
            &mut self,
            sock: &UdpSocket,
            queue: &VecDeque<(Bytes, SocketAddr)>,
        ) -> io::Result<usize> {
            let front = queue.iter().take(BATCH);
            self.addrs.clear();
            self.addrs.extend(
                front
                    .clone()
                    .map(|(_, to)| Some(SockaddrStorage::from(*to))),
            );
            let iovs: Vec<[IoSlice<'_>; 1]> = front.map(|(d, _)| [IoSlice::new(d)]).collect();
            let sent = sendmmsg(
                sock.as_raw_fd(),
                &mut self.send,
                &iovs,
                &self.addrs,
                [],
                MsgFlags::MSG_DONTWAIT,
            )
            .map_err(io::Error::from)?;
            // The results iterate over the messages the kernel took (their addresses are
            // a union nix reads whole; a union may hold any bytes).
            Ok(sent.count())
        }
    }

    /// A socket address of the kernel's, as std's (None: not IP).
    pub(crate) fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(a) = s.as_sockaddr_in() {
            return Some(SocketAddr::V4(SocketAddrV4::from(*a)));
        }
        s.as_sockaddr_in6()
            .map(|a: &SockaddrIn6| SocketAddr::V6(SocketAddrV6::from(*a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A datagram the kernel refuses (here an IPv6 destination for an IPv4 socket) is
    /// dropped; those queued before and after it still go, in order.
    #[tokio::test]
    async fn a_refused_datagram_is_dropped_and_the_rest_still_go() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut udp = SipUdp::new(sock);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = peer.local_addr().unwrap();
        let nowhere: SocketAddr = "[::1]:5060".parse().unwrap();
        udp.push(Bytes::from_static(b"one"), to);
        udp.push(Bytes::from_static(b"refused"), nowhere);
        udp.push(Bytes::from_static(b"two"), to);
        udp.push(Bytes::from_static(b"refused again"), nowhere);
        tokio::time::timeout(Duration::from_secs(2), udp.send())
            .await
            .expect("send finishes");
        assert!(udp.queue.is_empty());
        let mut buf = [0u8; 64];
        for want in [&b"one"[..], b"two"] {
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
        // The refused ones are never sent.
        peer.set_nonblocking(true).unwrap();
        assert!(peer.recv_from(&mut buf).is_err());
    }
}
