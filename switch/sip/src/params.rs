//! `;name=value` parameter lists (URI, Via, name-addr and generic header parameters).

use crate::error::ParseError;

/// A validated parameter list, kept as its raw text (`;a=1;lr`), read on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a>(&'a str);

fn is_token(c: u8) -> bool {
    crate::parse::TOKEN[usize::from(c)]
}

fn is_uri_param_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()%[]/:&+$".contains(&c)
}

impl<'a> Params<'a> {
    /// Validates URI parameters (RFC 3261 `uri-parameters`): paramchar only.
    pub fn parse_uri(raw: &'a str) -> Result<Params<'a>, ParseError> {
        Self::validate(raw, is_uri_param_char, false)
    }

    /// Validates header parameters (`generic-param`): token names, token / host / quoted values.
    pub fn parse_header(raw: &'a str) -> Result<Params<'a>, ParseError> {
        Self::validate(raw, |c| is_token(c) || b"[]:".contains(&c), true)
    }

    fn validate(
        raw: &'a str,
        ok: impl Fn(u8) -> bool,
        quotes: bool,
    ) -> Result<Params<'a>, ParseError> {
        if raw.is_empty() {
            return Ok(Params(raw));
        }
        if !raw.starts_with(';') {
            return Err(ParseError::Param);
        }
        for p in Params(raw).iter_raw() {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p.trim(), None),
            };
            if name.is_empty() || !name.bytes().all(&ok) {
                return Err(ParseError::Param);
            }
            if let Some(v) = value {
                let quoted = quotes && v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
                if !quoted && (v.is_empty() || !v.bytes().all(&ok)) {
                    return Err(ParseError::Param);
                }
            }
        }
        Ok(Params(raw))
    }

    /// The raw text, with its leading `;`.
    pub fn raw(&self) -> &'a str {
        self.0
    }

    fn iter_raw(&self) -> impl Iterator<Item = &'a str> + 'a {
        let raw = self.0;
        let mut rest = raw.strip_prefix(';').unwrap_or(raw);
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            // A ';' inside a quoted value does not end the parameter.
            let mut quoted = false;
            let mut end = rest.len();
            for (i, c) in rest.bytes().enumerate() {
                match c {
                    b'"' => quoted = !quoted,
                    b';' if !quoted => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let item = &rest[..end];
            rest = if end < rest.len() {
                &rest[end + 1..]
            } else {
                ""
            };
            Some(item)
        })
    }

    /// Every parameter as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        self.iter_raw().map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p.trim(), None),
        })
    }

    /// `Some(value)` when the parameter is present (value `None` for a flag), case-insensitive name.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// True when the parameter is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_params_allow_quoted_values_with_semicolons() {
        let p = Params::parse_header(r#";tag=abc;x="a;b";lr"#).unwrap();
        assert_eq!(p.get("TAG"), Some(Some("abc")));
        assert_eq!(p.get("x"), Some(Some(r#""a;b""#)));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("nope"), None);
    }

    #[test]
    fn bad_params_are_rejected() {
        assert!(Params::parse_header(";=x").is_err());
        assert!(Params::parse_header(";a=").is_err());
        assert!(Params::parse_uri(";a b=1").is_err());
        assert!(Params::parse_header("tag=1").is_err());
    }
}
