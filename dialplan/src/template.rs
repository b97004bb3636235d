//! Strings with `$1`…`$9` (regex captures) and `${name}` (named captures, then variables).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Capture(usize),
    Var(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses a template; anything that is not a reference stays literal.
    pub fn new(s: &str) -> Template {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '$' {
                match chars.peek().map(|&(_, c)| c) {
                    Some(d @ '0'..='9') => {
                        chars.next();
                        push_lit(&mut pieces, &mut lit);
                        pieces.push(Piece::Capture(d as usize - '0' as usize));
                        continue;
                    }
                    Some('{') => {
                        if let Some(end) = s[i..].find('}') {
                            push_lit(&mut pieces, &mut lit);
                            pieces.push(Piece::Var(s[i + 2..i + end].to_owned()));
                            while chars.peek().is_some_and(|&(j, _)| j <= i + end) {
                                chars.next();
                            }
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            lit.push(c);
        }
        push_lit(&mut pieces, &mut lit);
        Template(pieces)
    }

    /// Expands with positional captures and variables. Control characters (CR, LF...) are
    /// dropped so caller-supplied text can never inject a header line.
    pub fn expand(
        &self,
        captures: &[String],
        named: &BTreeMap<String, String>,
        vars: &BTreeMap<String, String>,
    ) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Capture(n) => {
                    out.push_str(captures.get(*n).map(String::as_str).unwrap_or(""))
                }
                Piece::Var(v) => out.push_str(
                    named
                        .get(v)
                        .or_else(|| vars.get(v))
                        .map(String::as_str)
                        .unwrap_or(""),
                ),
            }
        }
        out.retain(|c| !c.is_control());
        out
    }
}

fn push_lit(pieces: &mut Vec<Piece>, lit: &mut String) {
    if !lit.is_empty() {
        pieces.push(Piece::Lit(std::mem::take(lit)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_names_and_variables_expand_and_control_chars_are_dropped() {
        let t = Template::new("gw-$1-${ext}-${merchant}-$$-${nope}");
        let caps = vec!["all".to_owned(), "12\r\nX-Evil: 1".to_owned()];
        let named = BTreeMap::from([("ext".to_owned(), "42".to_owned())]);
        let vars = BTreeMap::from([("merchant".to_owned(), "acme".to_owned())]);
        assert_eq!(t.expand(&caps, &named, &vars), "gw-12X-Evil: 1-42-acme-$$-");
    }
}
