//! Identifiers and the generator of tags, branches and Call-IDs.

use std::fmt;

/// A call inside this switch (stable for the call's life, shown by `ctl calls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(pub u64);

impl fmt::Display for CallRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Unpredictable-enough identifiers without a clock or an OS RNG inside the engine: the
/// shell seeds it from the OS once; splitmix64 spreads the counter.
#[derive(Debug, Clone)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    /// A generator from a seed.
    pub fn new(seed: u64) -> IdGen {
        IdGen { state: seed }
    }

    /// Next 64 random-looking bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A tag for From/To.
    pub fn tag(&mut self) -> String {
        format!("{:x}", self.next_u64())
    }

    /// A branch with the RFC 3261 magic cookie.
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK-sb{:x}", self.next_u64())
    }

    /// A Call-ID for a leg we originate.
    pub fn call_id(&mut self) -> String {
        format!(
            "{:x}{:x}@switchboard",
            self.next_u64(),
            self.next_u64() & 0xffff
        )
    }
}
