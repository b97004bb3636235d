//! Matching digits against bound codes, with exact and partial matches and an inter-digit
//! timeout: the longest code wins (`*7` and `*76` can both be bound), and digits that turn out
//! not to be a command go on, in order.
//!
//! The matcher keeps the digits it has not decided yet (the *pending* ones) and answers each
//! new digit, or a timeout, with [`Step`]s that consume pending digits from the front.

use std::collections::BTreeMap;

/// A decision about the oldest pending digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// The next `n` pending digits are not a command: they go on.
    Release(usize),
    /// The next digits are this code (its length is the code's): they do not go on.
    Matched(String, T),
}

/// Codes and what each does.
#[derive(Debug, Clone)]
pub struct Matcher<T> {
    codes: BTreeMap<String, T>,
    pending: String,
}

impl<T: Clone> Matcher<T> {
    /// A matcher of these codes (checked already: DTMF digits, not empty).
    pub fn new(codes: BTreeMap<String, T>) -> Matcher<T> {
        Matcher {
            codes,
            pending: String::new(),
        }
    }

    /// Digits waiting for a decision (a prefix of a longer code, or a code that a longer one
    /// extends): the caller of the matcher holds them, and times out the wait.
    pub fn pending(&self) -> usize {
        self.pending.chars().count()
    }

    /// A new digit: what to do with the oldest pending ones (the new digit included).
    pub fn digit(&mut self, d: char) -> Vec<Step<T>> {
        self.pending.push(d);
        self.decide(false)
    }

    /// The wait after the last digit is over: everything pending is decided.
    pub fn timeout(&mut self) -> Vec<Step<T>> {
        self.decide(true)
    }

    fn decide(&mut self, timed_out: bool) -> Vec<Step<T>> {
        let mut steps = Vec::new();
        while !self.pending.is_empty() {
            let s = self.pending.as_str();
            // A longer code may still come: wait (unless the wait is over).
            if !timed_out && self.extends(s) {
                break;
            }
            // The longest code the pending digits start with is the command; before any,
            // the first digit is not one.
            let matched = (1..=s.len())
                .rev()
                .find_map(|n| self.codes.get(&s[..n]).map(|t| (n, t.clone())));
            match matched {
                Some((n, t)) => {
                    steps.push(Step::Matched(s[..n].to_owned(), t));
                    self.pending.drain(..n);
                }
                None => {
                    match steps.last_mut() {
                        Some(Step::Release(k)) => *k += 1,
                        _ => steps.push(Step::Release(1)),
                    }
                    self.pending.remove(0);
                }
            }
        }
        steps
    }

    /// Some code is longer than `s` and starts with it.
    fn extends(&self, s: &str) -> bool {
        self.codes
            .range::<str, _>((std::ops::Bound::Excluded(s), std::ops::Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.starts_with(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(codes: &[&str]) -> Matcher<&'static str> {
        Matcher::new(
            codes
                .iter()
                .map(|c| (c.to_string(), "cmd"))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn feed(m: &mut Matcher<&'static str>, digits: &str) -> Vec<Step<&'static str>> {
        digits.chars().flat_map(|d| m.digit(d)).collect()
    }

    fn matched(code: &str) -> Step<&'static str> {
        Step::Matched(code.into(), "cmd")
    }

    #[test]
    fn a_code_nothing_extends_fires_at_its_last_digit() {
        let mut m = m(&["*76", "*22"]);
        assert_eq!(m.digit('*'), vec![]);
        assert_eq!(m.digit('7'), vec![]);
        assert_eq!(m.pending(), 2);
        assert_eq!(m.digit('6'), vec![matched("*76")]);
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn a_digit_that_starts_no_code_goes_on_at_once() {
        let mut m = m(&["*76"]);
        assert_eq!(m.digit('1'), vec![Step::Release(1)]);
        assert_eq!(m.digit('#'), vec![Step::Release(1)]);
    }

    #[test]
    fn a_prefix_that_goes_nowhere_is_released_in_order() {
        let mut m = m(&["*22"]);
        assert_eq!(feed(&mut m, "*2"), vec![]);
        // `*25` is no code: `*` and `2` go on, then `5`.
        assert_eq!(m.digit('5'), vec![Step::Release(3)]);
    }

    #[test]
    fn a_lone_prefix_is_released_after_the_timeout() {
        let mut m = m(&["*22"]);
        assert_eq!(feed(&mut m, "*2"), vec![]);
        assert_eq!(m.timeout(), vec![Step::Release(2)]);
        assert_eq!(m.pending(), 0);
        assert_eq!(m.timeout(), vec![]);
    }

    #[test]
    fn the_longest_code_wins() {
        let mut m = m(&["*7", "*76"]);
        assert_eq!(feed(&mut m, "*76"), vec![matched("*76")]);
        // `*7` alone waits for the timeout, then fires.
        assert_eq!(feed(&mut m, "*7"), vec![]);
        assert_eq!(m.timeout(), vec![matched("*7")]);
        // `*75`: `*7` fires, `5` goes on.
        assert_eq!(feed(&mut m, "*75"), vec![matched("*7"), Step::Release(1)]);
    }

    #[test]
    fn after_a_false_start_the_rest_is_scanned_again() {
        let mut m = m(&["*22"]);
        // `**22`: the first `*` is no command, the rest is.
        assert_eq!(feed(&mut m, "**22"), vec![Step::Release(1), matched("*22")]);
        // `1*22`.
        assert_eq!(feed(&mut m, "1*22"), vec![Step::Release(1), matched("*22")]);
        // `*2*22`: `*2` goes on when the second `*` shows it was no command.
        assert_eq!(
            feed(&mut m, "*2*22"),
            vec![Step::Release(2), matched("*22")]
        );
    }

    #[test]
    fn codes_back_to_back() {
        let mut m = m(&["*22", "*88"]);
        assert_eq!(
            feed(&mut m, "*22*88*22"),
            vec![matched("*22"), matched("*88"), matched("*22")]
        );
    }

    #[test]
    fn without_codes_every_digit_goes_on() {
        let mut m = m(&[]);
        assert_eq!(feed(&mut m, "12#"), vec![Step::Release(1); 3]);
    }
}
