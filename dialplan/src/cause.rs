//! Hang-up causes: Q.850 names as FreeSWITCH prints them, mapped to and from SIP status
//! codes (RFC 3398 §7.2.4.1 and §8.2.6.1).

use std::fmt;

macro_rules! causes {
    ($( $v:ident = $q:literal, $name:literal, $sip:literal; )*) => {
        /// Why a leg or a call ended.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Cause { $( #[doc = $name] $v, )* }

        impl Cause {
            /// All causes, for help texts.
            pub const ALL: &'static [Cause] = &[$(Cause::$v,)*];

            /// The Q.850 cause value.
            pub fn q850(self) -> u16 { match self { $(Cause::$v => $q,)* } }

            /// The name ops write in a dialplan (`USER_BUSY`).
            pub fn name(self) -> &'static str { match self { $(Cause::$v => $name,)* } }

            /// The SIP final status this cause is signalled with towards a caller.
            pub fn sip_status(self) -> u16 { match self { $(Cause::$v => $sip,)* } }

            /// Parses a cause name (case-insensitive).
            pub fn from_name(s: &str) -> Option<Cause> {
                $( if s.eq_ignore_ascii_case($name) { return Some(Cause::$v); } )*
                None
            }
        }
    };
}

causes! {
    UnallocatedNumber = 1, "UNALLOCATED_NUMBER", 404;
    NoRouteDestination = 3, "NO_ROUTE_DESTINATION", 404;
    NormalClearing = 16, "NORMAL_CLEARING", 480;
    UserBusy = 17, "USER_BUSY", 486;
    NoUserResponse = 18, "NO_USER_RESPONSE", 480;
    NoAnswer = 19, "NO_ANSWER", 480;
    CallRejected = 21, "CALL_REJECTED", 603;
    DestinationOutOfOrder = 27, "DESTINATION_OUT_OF_ORDER", 502;
    InvalidNumberFormat = 28, "INVALID_NUMBER_FORMAT", 484;
    NormalUnspecified = 31, "NORMAL_UNSPECIFIED", 480;
    NetworkOutOfOrder = 38, "NETWORK_OUT_OF_ORDER", 502;
    NormalTemporaryFailure = 41, "NORMAL_TEMPORARY_FAILURE", 503;
    SwitchCongestion = 42, "SWITCH_CONGESTION", 503;
    ServiceUnavailable = 63, "SERVICE_UNAVAILABLE", 503;
    IncompatibleDestination = 88, "INCOMPATIBLE_DESTINATION", 488;
    RecoveryOnTimerExpire = 102, "RECOVERY_ON_TIMER_EXPIRE", 504;
    ExchangeRoutingError = 25, "EXCHANGE_ROUTING_ERROR", 483;
    OriginatorCancel = 487, "ORIGINATOR_CANCEL", 487;
    ManagerRequest = 503, "MANAGER_REQUEST", 503;
    SystemShutdown = 504, "SYSTEM_SHUTDOWN", 503;
    MediaTimeout = 604, "MEDIA_TIMEOUT", 408;
    LoopDetected = 25, "LOOP_DETECTED", 482;
}

impl Cause {
    /// The cause a SIP final failure response stands for (RFC 3398 §8.2.6.1).
    pub fn from_sip(status: u16) -> Cause {
        match status {
            404 | 410 | 604 => Cause::UnallocatedNumber,
            486 | 600 => Cause::UserBusy,
            408 => Cause::RecoveryOnTimerExpire,
            480 => Cause::NoUserResponse,
            484 | 485 => Cause::InvalidNumberFormat,
            487 => Cause::OriginatorCancel,
            482 | 483 => Cause::ExchangeRoutingError,
            488 | 606 | 415 => Cause::IncompatibleDestination,
            403 | 603 => Cause::CallRejected,
            502 => Cause::DestinationOutOfOrder,
            503 => Cause::NormalTemporaryFailure,
            504 => Cause::RecoveryOnTimerExpire,
            500..=599 => Cause::NetworkOutOfOrder,
            _ => Cause::NormalUnspecified,
        }
    }

    /// Whether trying the next target (failover) makes sense after this failure: busy and
    /// rejections are the callee's answer, timeouts and server failures are the route's.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Cause::RecoveryOnTimerExpire
                | Cause::NoUserResponse
                | Cause::NoAnswer
                | Cause::DestinationOutOfOrder
                | Cause::NetworkOutOfOrder
                | Cause::NormalTemporaryFailure
                | Cause::SwitchCongestion
                | Cause::ServiceUnavailable
        )
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
