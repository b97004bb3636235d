//! RFC 3261 §17 timers as data: which timer is due, and its duration from configuration.

use std::time::Duration;

/// T1/T2/T4 (RFC 3261 §17.1.1.1 and Table 4). Everything else derives from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J (and L, M of RFC 6026).
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// The timers of RFC 3261 §17 (plus L and M from RFC 6026, and the 2xx retransmission
/// of §13.3.1.4 that the server INVITE transaction does for its TU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// §17.1.1.2: INVITE retransmit (UDP), starts at T1 and doubles.
    A,
    /// §17.1.1.2: INVITE transaction timeout, 64·T1.
    B,
    /// §17.1.1.2: wait for response retransmits in Completed, ≥32 s on UDP.
    D,
    /// §17.1.2.2: non-INVITE retransmit, T1 doubling to T2.
    E,
    /// §17.1.2.2: non-INVITE transaction timeout, 64·T1.
    F,
    /// §17.2.1: INVITE final-response retransmit, T1 doubling to T2.
    G,
    /// §17.2.1: wait for ACK, 64·T1.
    H,
    /// §17.2.1: absorb ACK retransmits in Confirmed, T4.
    I,
    /// §17.2.2: absorb non-INVITE request retransmits, 64·T1.
    J,
    /// §17.1.2.2: absorb response retransmits, T4.
    K,
    /// RFC 6026 §7.1: server INVITE Accepted state, 64·T1.
    L,
    /// RFC 6026 §7.2: client INVITE Accepted state, 64·T1.
    M,
    /// §13.3.1.4: 2xx retransmit until ACK, T1 doubling to T2.
    Retransmit2xx,
}

/// How long to wait for response/request retransmissions to drain: zero on reliable transports.
pub fn drain(reliable: bool, unreliable: Duration) -> Duration {
    if reliable { Duration::ZERO } else { unreliable }
}
