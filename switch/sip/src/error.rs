//! Errors of the message layer. Malformed input (the server answers 400 when it can,
//! drops the datagram when it cannot) is kept apart from protocol-state errors.

/// Why a message could not be parsed or validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// More bytes are needed (stream transports only).
    #[error("incomplete message")]
    Incomplete,
    /// The head is not UTF-8 text.
    #[error("message head is not UTF-8")]
    NotUtf8,
    /// The request or status line does not follow RFC 3261 §7.1/§7.2.
    #[error("bad start line")]
    StartLine,
    /// The start line names a SIP version other than 2.0 (answered 505).
    #[error("SIP version not supported")]
    Version,
    /// A header line has no valid `name:` or is otherwise broken.
    #[error("bad header line")]
    HeaderLine,
    /// A header that must be present is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A header that may appear once appears twice.
    #[error("duplicate {0} header")]
    Duplicate(&'static str),
    /// A typed header has a bad value.
    #[error("bad {0} header")]
    BadHeader(&'static str),
    /// A URI is malformed.
    #[error("bad URI: {0}")]
    Uri(&'static str),
    /// A parameter list is malformed.
    #[error("bad parameter")]
    Param,
    /// Content-Length disagrees with the body.
    #[error("Content-Length does not match the body")]
    ContentLength,
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethod,
    /// The message is larger than we accept.
    #[error("message too large")]
    TooLarge,
}

impl ParseError {
    /// Reason phrase for a 400 answering this error.
    pub fn reason_phrase(&self) -> String {
        let mut s = self.to_string();
        if let Some(first) = s.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        format!("Bad Request ({s})")
    }
}
