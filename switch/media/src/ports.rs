//! The RTP port pool: even ports for RTP, the odd port above each for RTCP (RFC 3550 §11).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// Hands out RTP/RTCP port pairs from a configured range: a random one of the older half
/// of the free pairs, so that a port rests before reuse (late packets of its last call) and
/// the next call's port cannot be guessed from the last one's (RTP injection).
/// Clones share one pool: the core's media and the browser leg's sockets take from the
/// same range (one firewall range for ops).
#[derive(Debug, Clone)]
pub struct PortPool {
    free: Arc<Mutex<Free>>,
    size: usize,
}

#[derive(Debug)]
struct Free {
    /// Least recently used first.
    ports: VecDeque<u16>,
    /// xorshift64* state, seeded per process.
    rng: u64,
    /// With [`PortPool::bind_on`]: the address [`PortPool::take_bound`] binds on.
    bind_ip: Option<std::net::IpAddr>,
    /// Pairs bound by `take_bound` and not yet claimed: RTP and RTCP sockets by RTP port.
    bound: std::collections::HashMap<u16, [std::net::UdpSocket; 2]>,
}

impl Free {
    /// A random one of the older half of the free pairs, taken out.
    fn pick(&mut self) -> Option<u16> {
        let older = self.ports.len().div_ceil(2);
        if older == 0 {
            return None;
        }
        let i = (self.next() % older as u64) as usize;
        self.ports.swap_remove_front(i)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl PortPool {
    /// A pool over `[min, max]`; `min` is rounded up to even. Seeded from the process's
    /// random hasher keys.
    pub fn new(min: u16, max: u16) -> PortPool {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        PortPool::seeded(min, max, seed)
    }

    /// A pool whose choices follow `seed` (tests).
    pub fn seeded(min: u16, max: u16, seed: u64) -> PortPool {
        let start = min + (min % 2);
        let mut free = Free {
            ports: (start..max)
                .step_by(2)
                .filter(|p| p.checked_add(1).is_some_and(|q| q <= max))
                .collect(),
            rng: seed | 1,
            bind_ip: None,
            bound: std::collections::HashMap::new(),
        };
        // Shuffled once, so the first calls after a start are not in sequence either.
        for i in (1..free.ports.len()).rev() {
            let j = (free.next() % (i as u64 + 1)) as usize;
            free.ports.swap(i, j);
        }
        let size = free.ports.len();
        PortPool {
            free: Arc::new(Mutex::new(free)),
            size,
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Free> {
        // A panic elsewhere cannot leave a VecDeque of ports inconsistent.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An even RTP port (its RTCP port is the next one), or `None` when exhausted.
    pub fn take(&self) -> Option<u16> {
        self.free().pick()
    }

    /// From now on [`PortPool::take_bound`] binds each pair on `ip` before handing it out.
    pub fn bind_on(&self, ip: std::net::IpAddr) {
        self.free().bind_ip = Some(ip);
    }

    /// A pair that is bound already (with [`PortPool::bind_on`]; else as [`PortPool::take`]):
    /// pairs another process holds are skipped (and rest at the back), so a call never gets
    /// ports it cannot use. `None` when no free pair binds: the call is refused before any
    /// SDP names a port. The sockets wait for [`PortPool::claim`].
    pub fn take_bound(&self) -> Option<u16> {
        let mut f = self.free();
        let Some(ip) = f.bind_ip else {
            drop(f);
            return self.take();
        };
        let tries = f.ports.len().min(64);
        let mut refused = Vec::new();
        let mut got = None;
        for _ in 0..tries {
            let Some(port) = f.pick() else {
                break;
            };
            let pair = std::net::UdpSocket::bind((ip, port)).and_then(|rtp| {
                let rtcp = std::net::UdpSocket::bind((ip, port + 1))?;
                Ok([rtp, rtcp])
            });
            match pair {
                Ok(socks) => {
                    f.bound.insert(port, socks);
                    got = Some(port);
                    break;
                }
                Err(_) => refused.push(port),
            }
        }
        f.ports.extend(refused);
        got
    }

    /// The sockets [`PortPool::take_bound`] bound for `port` (once).
    pub fn claim(&self, port: u16) -> Option<[std::net::UdpSocket; 2]> {
        self.free().bound.remove(&port)
    }

    /// Returns a port to the back of the pool, so it rests before reuse (late packets).
    /// Sockets bound for it and never claimed are closed.
    pub fn give_back(&self, port: u16) {
        let mut f = self.free();
        f.bound.remove(&port);
        f.ports.push_back(port);
    }

    /// Pairs available.
    pub fn available(&self) -> usize {
        self.free().ports.len()
    }

    /// Pairs in all.
    pub fn capacity(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_a_port_given_back_waits_behind_the_older_half() {
        let p = PortPool::seeded(10001, 10008, 42);
        assert_eq!(p.capacity(), 3);
        let a = p.take().unwrap();
        assert!([10002, 10004, 10006].contains(&a));
        p.give_back(a);
        // Two others are older than `a`: they go first.
        let (b, c) = (p.take().unwrap(), p.take().unwrap());
        assert!(b != a && c != a && b != c, "{a} {b} {c}");
        assert_eq!(p.take(), Some(a));
        assert_eq!(p.take(), None);
    }

    #[test]
    fn the_next_port_cannot_be_told_from_the_last() {
        let p = PortPool::seeded(20000, 29999, 7);
        let taken: Vec<u16> = (0..200).map(|_| p.take().unwrap()).collect();
        let in_sequence = taken.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(in_sequence < 5, "{in_sequence} of 199 were the next pair");
        let mut sorted = taken.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 200, "no pair is handed out twice");
        assert!(taken.iter().all(|p| p % 2 == 0));
        // Two processes do not pick the same ports.
        let q = PortPool::new(20000, 29999);
        let r = PortPool::new(20000, 29999);
        let (q10, r10): (Vec<_>, Vec<_>) = (0..10).map(|_| (q.take(), r.take())).unzip();
        assert_ne!(q10, r10);
    }

    #[test]
    fn bound_pairs_skip_ports_someone_else_holds_and_are_claimed_once() {
        // Four pairs; another process holds the RTP port of two of them.
        let base = 47000u16;
        let held: Vec<_> = [base, base + 4]
            .iter()
            .map(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).unwrap())
            .collect();
        let p = PortPool::seeded(base, base + 7, 3);
        p.bind_on("127.0.0.1".parse().unwrap());
        let a = p.take_bound().unwrap();
        let b = p.take_bound().unwrap();
        assert!([base + 2, base + 6].contains(&a) && [base + 2, base + 6].contains(&b));
        assert_ne!(a, b);
        assert_eq!(p.take_bound(), None, "no free pair binds");
        assert!(p.claim(a).is_some());
        assert!(p.claim(a).is_none(), "claimed once");
        p.give_back(b);
        p.give_back(a);
        drop(held);
        assert!(p.take_bound().is_some());
    }
}
