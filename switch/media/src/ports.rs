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
}

impl Free {
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
        let mut f = self.free();
        let older = f.ports.len().div_ceil(2);
        if older == 0 {
            return None;
        }
        let i = (f.next() % older as u64) as usize;
        f.ports.swap_remove_front(i)
    }

    /// Returns a port to the back of the pool, so it rests before reuse (late packets).
    pub fn give_back(&self, port: u16) {
        self.free().ports.push_back(port);
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
}
