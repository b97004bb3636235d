//! Login brakes: failed attempts counted per address and per agent ID in a sliding window;
//! past the limit, attempts are refused until the oldest failure leaves the window (so a
//! brute force gets `max_failures` guesses per window, and one address cannot lock every
//! agent out for good: a good login from elsewhere still works once the ID's window passes).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Tracked keys at most (addresses + IDs); the oldest are forgotten past it (bounded memory
/// under a spray of addresses).
const MAX_KEYS: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Id(String),
}

/// Failed logins by address and by agent ID.
#[derive(Debug)]
pub struct LoginLimiter {
    max: usize,
    window: Duration,
    failures: HashMap<Key, VecDeque<Instant>>,
}

impl LoginLimiter {
    /// `max` failures per `window` for an address or an agent ID.
    pub fn new(max: usize, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max: max.max(1),
            window,
            failures: HashMap::new(),
        }
    }

    fn keys(ip: IpAddr, id: &str) -> [Key; 2] {
        [Key::Ip(ip), Key::Id(id.to_ascii_lowercase())]
    }

    /// May this attempt be checked? `Err(wait)`: refused, try again after `wait`.
    pub fn check(&mut self, now: Instant, ip: IpAddr, id: &str) -> Result<(), Duration> {
        let mut wait = Duration::ZERO;
        for k in Self::keys(ip, id) {
            if let Some(q) = self.failures.get_mut(&k) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.max
                    && let Some(first) = q.front()
                {
                    wait = wait.max(self.window.saturating_sub(now.duration_since(*first)));
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.max(Duration::from_secs(1)))
        }
    }

    /// The attempt failed.
    pub fn failed(&mut self, now: Instant, ip: IpAddr, id: &str) {
        if self.failures.len() >= MAX_KEYS {
            let window = self.window;
            self.failures
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
            if self.failures.len() >= MAX_KEYS {
                self.failures.clear();
            }
        }
        for k in Self::keys(ip, id) {
            let q = self.failures.entry(k).or_default();
            q.push_back(now);
            while q.len() > self.max {
                q.pop_front();
            }
        }
    }

    /// The attempt succeeded: this address and ID start afresh.
    pub fn succeeded(&mut self, ip: IpAddr, id: &str) {
        for k in Self::keys(ip, id) {
            self.failures.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_wait_for_the_window() {
        let mut l = LoginLimiter::new(3, Duration::from_secs(60));
        let t = Instant::now();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for i in 0..3 {
            assert!(l.check(t + Duration::from_secs(i), ip, "alice").is_ok());
            l.failed(t + Duration::from_secs(i), ip, "alice");
        }
        let wait = l
            .check(t + Duration::from_secs(3), ip, "alice")
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(57));
        // Another ID from the same address is braked too; the same ID from elsewhere also.
        assert!(l.check(t, ip, "bob").is_err());
        assert!(l.check(t, [10, 0, 0, 2].into(), "ALICE").is_err());
        assert!(l.check(t, [10, 0, 0, 2].into(), "bob").is_ok());
        // The first failure leaves the window: one more guess.
        assert!(l.check(t + Duration::from_secs(60), ip, "alice").is_ok());
        l.succeeded(ip, "alice");
        assert!(l.check(t + Duration::from_secs(3), ip, "alice").is_ok());
    }
}
