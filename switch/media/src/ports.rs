//! The RTP port pool: even ports for RTP, the odd port above each for RTCP (RFC 3550 §11).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// Hands out RTP/RTCP port pairs from a configured range, least recently used first.
/// Clones share one pool: the core's media and the browser leg's sockets take from the
/// same range (one firewall range for ops).
#[derive(Debug, Clone)]
pub struct PortPool {
    free: Arc<Mutex<VecDeque<u16>>>,
    size: usize,
}

impl PortPool {
    /// A pool over `[min, max]`; `min` is rounded up to even.
    pub fn new(min: u16, max: u16) -> PortPool {
        let start = min + (min % 2);
        let free: VecDeque<u16> = (start..max)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|q| q <= max))
            .collect();
        let size = free.len();
        PortPool {
            free: Arc::new(Mutex::new(free)),
            size,
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, VecDeque<u16>> {
        // A panic elsewhere cannot leave a VecDeque of ports inconsistent.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An even RTP port (its RTCP port is the next one), or `None` when exhausted.
    pub fn take(&self) -> Option<u16> {
        self.free().pop_front()
    }

    /// Returns a port to the back of the pool, so it rests before reuse (late packets).
    pub fn give_back(&self, port: u16) {
        self.free().push_back(port);
    }

    /// Pairs available.
    pub fn available(&self) -> usize {
        self.free().len()
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
    fn pairs_are_even_and_reused_last() {
        let p = PortPool::new(10001, 10008);
        assert_eq!(p.capacity(), 3);
        let a = p.take().unwrap();
        assert_eq!(a, 10002);
        p.give_back(a);
        assert_eq!(p.take(), Some(10004));
        assert_eq!(p.take(), Some(10006));
        assert_eq!(p.take(), Some(10002));
        assert_eq!(p.take(), None);
    }
}
