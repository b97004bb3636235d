//! Why an attempt at a leg B failed, and what leg A hears about it.

use switchboard_dialplan::Cause;

/// A failed attempt at one target of a bridge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// The dialplan names a target its endpoint does not know (removed by a reload).
    #[error("no {kind} named {name:?}")]
    UnknownTarget {
        /// Endpoint kind.
        kind: String,
        /// The name.
        name: String,
    },
    /// No module resolves targets of this kind.
    #[error("no endpoint handles {0:?} targets")]
    NoEndpoint(String),
    /// The target is marked down (health checks, or by hand).
    #[error("{0} is down")]
    Down(String),
    /// A SIP URI target that cannot be reached as written.
    #[error("cannot reach {0}: {1}")]
    BadUri(String, &'static str),
    /// Leg A's offer has no codec this switch may use on a leg B: no target will do better.
    #[error("no codec in common with the caller's offer")]
    NoCommonCodec,
    /// No RTP ports left, or none that can be bound.
    #[error("no RTP port pair left that can be bound")]
    NoMediaPorts,
    /// A module refused it (an ANI pool empty with `ani_when_empty = "reject"`...).
    #[error("refused by {module}: {reason}")]
    Refused {
        /// The module.
        module: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// Leg B answered with a failure.
    #[error("leg B answered {status}")]
    Rejected {
        /// Its status.
        status: u16,
    },
    /// Leg B did not answer before the bridge timeout (or not at all: Timer B).
    #[error("no answer")]
    NoAnswer,
    /// Nobody of the target can take a call now (every agent of a queue away or busy).
    #[error("{0}")]
    Unavailable(String),
}

impl AttemptError {
    /// The status leg A gets when this is the failure it hears about (408 and timeouts →
    /// 480, other 5xx → 502, 503 stays).
    pub fn status_for_a(&self) -> u16 {
        match self {
            AttemptError::UnknownTarget { .. }
            | AttemptError::NoEndpoint(_)
            | AttemptError::Down(_)
            | AttemptError::NoMediaPorts
            | AttemptError::Refused { .. } => 503,
            AttemptError::BadUri(..) => 502,
            AttemptError::NoCommonCodec => 488,
            AttemptError::NoAnswer | AttemptError::Unavailable(_) => 480,
            AttemptError::Rejected { status } => match status {
                // Our own credentials towards the trunk were refused (or we have none): the
                // caller cannot answer that challenge (and a bare 401/407 without its
                // WWW-/Proxy-Authenticate breaks RFC 3261 §20.27, §20.44).
                401 | 407 => 503,
                408 => 480,
                503 => 503,
                500..=599 => 502,
                s => *s,
            },
        }
    }

    /// The hang-up cause (Q.850) it maps to.
    pub fn cause(&self) -> Cause {
        match self {
            AttemptError::UnknownTarget { .. }
            | AttemptError::NoEndpoint(_)
            | AttemptError::Down(_) => Cause::NormalTemporaryFailure,
            AttemptError::BadUri(..) => Cause::DestinationOutOfOrder,
            AttemptError::NoCommonCodec => Cause::IncompatibleDestination,
            AttemptError::NoMediaPorts | AttemptError::Refused { .. } => Cause::SwitchCongestion,
            AttemptError::NoAnswer => Cause::NoAnswer,
            AttemptError::Unavailable(_) => Cause::NoUserResponse,
            // Like a gateway that is down: another target may take the call.
            AttemptError::Rejected { status: 401 | 407 } => Cause::NormalTemporaryFailure,
            AttemptError::Rejected { status } => Cause::from_sip(*status),
        }
    }

    /// Another target may do better (failover): false for the callee's own answers (busy,
    /// declined) and for an offer no target can take.
    pub fn is_retryable(&self) -> bool {
        match self {
            AttemptError::NoCommonCodec => false,
            AttemptError::Rejected { .. } => self.cause().is_retryable(),
            _ => true,
        }
    }

    /// How bad it is when choosing which failure leg A hears (RFC 3261 §16.7 step 6 in
    /// spirit: a 6xx or a busy is the callee's answer and beats a route's trouble).
    pub(crate) fn rank(&self) -> u8 {
        match self.status_for_a() {
            600..=699 => 6,
            486 => 5,
            400..=479 | 481..=499 => 4,
            480 => 3,
            _ => 2,
        }
    }
}
