//! Header names (with RFC 3261 §7.3.3 compact forms) and the header list of a message.

use bytestring::ByteString;

macro_rules! names {
    ($( $variant:ident => $canon:literal $(, $compact:literal)? ; )*) => {
        /// A SIP header name. Known names are matched case-insensitively and by compact form;
        /// anything else is kept as written.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Name {
            $( #[doc = $canon] $variant, )*
            /// A header the core does not type (kept verbatim, printed as received).
            Other(ByteString),
        }

        impl Name {
            /// Canonical (long) form of the name as printed.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Name::$variant => $canon, )*
                    Name::Other(s) => s,
                }
            }

            /// A known name, case-insensitively, in long or compact form (lengths are
            /// compared first: this runs for every header of every message).
            pub fn lookup(s: &str) -> Option<Name> {
                let n = s.len();
                $( if (n == $canon.len() && s.eq_ignore_ascii_case($canon))
                    $( || (n == 1 && s.eq_ignore_ascii_case($compact)) )? {
                    return Some(Name::$variant);
                } )*
                None
            }

            /// Looks a name up, keeping an unknown one as written.
            pub fn from_str_lossless(raw: &ByteString) -> Name {
                Name::lookup(raw).unwrap_or_else(|| Name::Other(raw.clone()))
            }
        }
    };
}

names! {
    Via => "Via", "v";
    From => "From", "f";
    To => "To", "t";
    CallId => "Call-ID", "i";
    CSeq => "CSeq";
    Contact => "Contact", "m";
    Route => "Route";
    RecordRoute => "Record-Route";
    MaxForwards => "Max-Forwards";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", "k";
    Unsupported => "Unsupported";
    Allow => "Allow";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    Expires => "Expires";
    UserAgent => "User-Agent";
    Server => "Server";
    Reason => "Reason";
    Subject => "Subject", "s";
    Event => "Event", "o";
    ReferTo => "Refer-To", "r";
    RetryAfter => "Retry-After";
}

impl Name {
    /// Headers whose value may list several comma-separated entries on one line
    /// (RFC 3261 §7.3.1). Others (From, To, Call-ID, CSeq...) must not be split.
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            Name::Via
                | Name::Contact
                | Name::Route
                | Name::RecordRoute
                | Name::Require
                | Name::ProxyRequire
                | Name::Supported
                | Name::Unsupported
                | Name::Allow
        )
    }

    /// Headers that may appear at most once; a duplicate makes the message malformed.
    pub fn is_single(&self) -> bool {
        matches!(
            self,
            Name::From
                | Name::To
                | Name::CallId
                | Name::CSeq
                | Name::MaxForwards
                | Name::ContentLength
                | Name::ContentType
        )
    }
}

/// One header line: a name and its (unfolded, trimmed) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub name: Name,
    /// The value, zero-copy from the received buffer unless it was folded.
    pub value: ByteString,
}

/// The headers of a message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// First value of a header.
    pub fn get(&self, name: &Name) -> Option<&ByteString> {
        self.0.iter().find(|h| &h.name == name).map(|h| &h.value)
    }

    /// First value of an unknown header, by case-insensitive name.
    pub fn get_other(&self, name: &str) -> Option<&ByteString> {
        self.0
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| &h.value)
    }

    /// Every header line with this name, in order.
    pub fn all<'a>(&'a self, name: &'a Name) -> impl Iterator<Item = &'a ByteString> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| &h.value)
    }

    /// Every entry of a list header, across lines and commas (quotes and <> respected).
    pub fn entries<'a>(&'a self, name: &'a Name) -> impl Iterator<Item = &'a str> + 'a {
        self.all(name).flat_map(|v| split_list(v))
    }

    /// The first entry of a list header together with the header value holding it (so a
    /// part of the entry can be sliced out of that value without a copy).
    pub fn first_entry<'a>(&'a self, name: &'a Name) -> Option<(&'a ByteString, &'a str)> {
        self.all(name)
            .find_map(|v| split_list(v).next().map(|e| (v, e)))
    }

    /// Appends a header.
    pub fn push(&mut self, name: Name, value: impl Into<ByteString>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Inserts a header before all others (e.g. a new top Via).
    pub fn push_front(&mut self, name: Name, value: impl Into<ByteString>) {
        self.0.insert(
            0,
            Header {
                name,
                value: value.into(),
            },
        );
    }

    /// Removes every header with this name.
    pub fn remove(&mut self, name: &Name) {
        self.0.retain(|h| &h.name != name);
    }

    /// Replaces all headers of this name by a single one.
    pub fn set(&mut self, name: Name, value: impl Into<ByteString>) {
        let value = value.into();
        match self.0.iter().position(|h| h.name == name) {
            Some(i) => {
                self.0[i].value = value;
                let mut seen = false;
                self.0.retain(|h| {
                    if h.name != name {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => self.0.push(Header { name, value }),
        }
    }

    /// Removes the first entry of a list header (the top Via of a response, a Route we own).
    pub fn pop_first_entry(&mut self, name: &Name) -> Option<String> {
        let i = self.0.iter().position(|h| &h.name == name)?;
        let mut entries = split_list(&self.0[i].value);
        let first = entries.next()?.to_owned();
        let rest: Vec<&str> = entries.collect();
        if rest.is_empty() {
            self.0.remove(i);
        } else {
            self.0[i].value = ByteString::from(rest.join(", "));
        }
        Some(first)
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no header.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits a list header value on commas that are outside quotes and angle brackets.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let bytes = value.as_bytes();
    let mut start = 0;
    let mut pos = 0;
    let mut quoted = false;
    let mut angle = false;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while pos < bytes.len() {
            let c = bytes[pos];
            match c {
                b'\\' if quoted => pos += 1,
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    let item = value[start..pos].trim();
                    pos += 1;
                    start = pos;
                    return Some(item);
                }
                _ => {}
            }
            pos += 1;
        }
        done = true;
        let item = value[start.min(value.len())..].trim();
        if item.is_empty() && start > 0 {
            None
        } else {
            Some(item)
        }
    })
    .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive_names_map_to_the_same_header() {
        for raw in ["v", "V", "via", "VIA"] {
            assert_eq!(Name::from_str_lossless(&ByteString::from(raw)), Name::Via);
        }
        assert_eq!(Name::from_str_lossless(&"i".into()), Name::CallId);
        assert_eq!(
            Name::from_str_lossless(&"X-Foo".into()),
            Name::Other("X-Foo".into())
        );
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let v = r#""Doe, John" <sip:a@b;x=1,2>;q=1, <sip:c@d>"#;
        let items: Vec<_> = split_list(v).collect();
        assert_eq!(
            items,
            vec![r#""Doe, John" <sip:a@b;x=1,2>;q=1"#, "<sip:c@d>"]
        );
    }

    #[test]
    fn pop_first_entry_keeps_the_rest_of_the_line() {
        let mut h = Headers::default();
        h.push(
            Name::Via,
            "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        );
        assert_eq!(
            h.pop_first_entry(&Name::Via).unwrap(),
            "SIP/2.0/UDP a;branch=z9hG4bK1"
        );
        assert_eq!(h.get(&Name::Via).unwrap(), "SIP/2.0/UDP b;branch=z9hG4bK2");
    }
}
