//! Caller numbers (ANIs) leased from a gateway's pool: a call presents a number of its own
//! for its lifetime, so the call center's screen pop (and a CRM look-up by ANI) finds this
//! caller; the number then rests for a cool-down before another call may take it, so a late
//! look-up never lands on the next caller.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a call gets when every number of the pool is taken (`ani_when_empty`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenEmpty {
    /// The usual caller ID is presented.
    Fallback,
    /// The attempt fails (SWITCH_CONGESTION); the plan goes on.
    Reject,
    /// The call waits this long for a number to come back, then fails as with `Reject`.
    Queue(Duration),
}

/// A gateway's pool of caller numbers: one per call, unique while in use, rested after.
#[derive(Debug, Clone)]
pub struct AniPool {
    numbers: Vec<String>,
    /// Number -> call holding it.
    leased: HashMap<String, u64>,
    /// Number -> when it may be leased again.
    cooling: HashMap<String, Instant>,
    /// Rest after release.
    pub cooldown: Duration,
    /// What a call gets when every number is taken.
    pub when_empty: WhenEmpty,
    next: usize,
}

/// Expands pool entries: single numbers, or inclusive ranges `15550100-15550199` of equal
/// length (leading zeros and `+` kept). At most 100,000 numbers.
pub fn expand(specs: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for s in specs {
        let s = s.trim();
        let digits = |x: &str| {
            let d = x.strip_prefix('+').unwrap_or(x);
            !d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit())
        };
        match s.split_once('-') {
            Some((a, b)) if digits(a) && digits(b) && a.len() == b.len() => {
                let plus = a.starts_with('+');
                if plus != b.starts_with('+') {
                    return Err(format!("range {s:?}: both ends need the same form"));
                }
                let (da, db) = (a.trim_start_matches('+'), b.trim_start_matches('+'));
                let (lo, hi): (u64, u64) = (
                    da.parse().map_err(|_| s.to_owned())?,
                    db.parse().map_err(|_| s.to_owned())?,
                );
                if hi < lo || hi - lo >= 100_000 || out.len() as u64 + (hi - lo) >= 100_000 {
                    return Err(format!(
                        "range {s:?}: the end is below the start, or over 100,000 numbers"
                    ));
                }
                for n in lo..=hi {
                    out.push(format!(
                        "{}{n:0width$}",
                        if plus { "+" } else { "" },
                        width = da.len()
                    ));
                }
            }
            None if digits(s) => out.push(s.to_owned()),
            _ => {
                return Err(format!(
                    "{s:?} is not a number or a range like 15550100-15550199"
                ));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = out.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(format!("{dup} is in the pool twice"));
    }
    if out.is_empty() {
        return Err("the pool is empty".into());
    }
    Ok(out)
}

impl AniPool {
    /// A pool of `numbers` (from [`expand`]).
    pub fn new(numbers: Vec<String>, cooldown: Duration, when_empty: WhenEmpty) -> AniPool {
        AniPool {
            numbers,
            leased: HashMap::new(),
            cooling: HashMap::new(),
            cooldown,
            when_empty,
            next: 0,
        }
    }

    /// Takes a free number for `call` (the one after the last taken, round robin), or `None`
    /// when every number is leased or cooling down.
    pub fn lease(&mut self, now: Instant, call: u64) -> Option<String> {
        let n = self.numbers.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let num = &self.numbers[i];
            if self.leased.contains_key(num) || self.cooling.get(num).is_some_and(|t| *t > now) {
                continue;
            }
            self.cooling.remove(num);
            self.leased.insert(num.clone(), call);
            self.next = (i + 1) % n;
            return Some(num.clone());
        }
        None
    }

    /// Gives a number back: it rests for the cool-down.
    pub fn release(&mut self, now: Instant, number: &str) {
        if self.leased.remove(number).is_some() {
            self.cooling.insert(number.to_owned(), now + self.cooldown);
        }
    }

    /// A number rests until `until` (leases a previous run left, reclaimed at start).
    pub fn cool_until(&mut self, number: &str, until: Instant) {
        if self.numbers.iter().any(|n| n == number) {
            self.cooling.insert(number.to_owned(), until);
        }
    }

    /// Numbers leased now.
    pub fn in_use(&self) -> usize {
        self.leased.len()
    }

    /// Numbers in the pool.
    pub fn size(&self) -> usize {
        self.numbers.len()
    }

    /// Keeps the leases and rests of `old` for the numbers both pools have (reload).
    pub fn carry_from(&mut self, old: &AniPool) {
        for (num, call) in &old.leased {
            if self.numbers.contains(num) {
                self.leased.insert(num.clone(), *call);
            }
        }
        for (num, t) in &old.cooling {
            if self.numbers.contains(num) {
                self.cooling.insert(num.clone(), *t);
            }
        }
        self.next = old.next % self.numbers.len().max(1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn ranges_and_lists_expand_and_bad_ones_are_refused() {
        let v = expand(&["0100-0102".into(), "+15550199".into(), "+1555-+1556".into()]).unwrap();
        assert_eq!(
            v,
            vec!["0100", "0101", "0102", "+15550199", "+1555", "+1556"]
        );
        for bad in ["12-3", "abc", "5-4", "1-100000000", ""] {
            assert!(expand(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(
            expand(&["100".into(), "100".into()])
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn leases_are_unique_and_rest_before_reuse() {
        let now = Instant::now();
        let mut p = AniPool::new(
            expand(&["10-12".into()]).unwrap(),
            Duration::from_secs(60),
            WhenEmpty::Reject,
        );
        let a: Vec<_> = (0..3).map(|c| p.lease(now, c).unwrap()).collect();
        assert_eq!(a, vec!["10", "11", "12"]);
        assert_eq!(p.lease(now, 9), None, "all taken");
        p.release(now, "11");
        assert_eq!(p.lease(now + Duration::from_secs(59), 9), None, "cooling");
        assert_eq!(
            p.lease(now + Duration::from_secs(60), 9).as_deref(),
            Some("11")
        );
        p.cool_until("10", now + Duration::from_secs(5));
        assert_eq!(p.in_use(), 3);
    }
}
