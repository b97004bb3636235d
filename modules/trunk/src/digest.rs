//! HTTP Digest for SIP (RFC 3261 §22, RFC 2617 with MD5; RFC 8760's MD5 `qop=auth`).

use switchboard_sip::typed::DigestParams;

/// Why we cannot answer a challenge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The challenge is not Digest or lacks realm/nonce.
    #[error("unusable challenge: {0}")]
    Challenge(&'static str),
    /// The algorithm is not MD5.
    #[error("unsupported digest algorithm {0:?} (MD5 only)")]
    Algorithm(String),
}

fn hex_md5(s: &str) -> String {
    format!("{:x}", md5::compute(s.as_bytes()))
}

/// Credentials for a challenge.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// User name.
    pub username: &'a str,
    /// Password.
    pub password: &'a str,
}

/// Builds the `Authorization`/`Proxy-Authorization` value answering `challenge`
/// (a `WWW-Authenticate`/`Proxy-Authenticate` value) for `method` on `uri`.
/// `cnonce` comes from the caller (sans-IO: no randomness here); `nc` counts uses of the nonce.
pub fn authorization(
    challenge: &str,
    method: &str,
    uri: &str,
    creds: Credentials<'_>,
    cnonce: &str,
    nc: u32,
) -> Result<String, DigestError> {
    let c = DigestParams::parse(challenge, "WWW-Authenticate")
        .map_err(|_| DigestError::Challenge("unparseable"))?;
    if !c.scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::Challenge("not Digest"));
    }
    let realm = c.get("realm").ok_or(DigestError::Challenge("no realm"))?;
    let nonce = c.get("nonce").ok_or(DigestError::Challenge("no nonce"))?;
    if let Some(alg) = c.get("algorithm")
        && !alg.eq_ignore_ascii_case("MD5")
    {
        return Err(DigestError::Algorithm(alg.to_owned()));
    }
    let qop_auth = c
        .get("qop")
        .is_some_and(|q| q.split(',').any(|v| v.trim().eq_ignore_ascii_case("auth")));
    let ha1 = hex_md5(&format!("{}:{realm}:{}", creds.username, creds.password));
    let ha2 = hex_md5(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = if qop_auth {
        hex_md5(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
    } else {
        hex_md5(&format!("{ha1}:{nonce}:{ha2}"))
    };
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5",
        creds.username
    );
    if qop_auth {
        v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
    }
    if let Some(opaque) = c.get("opaque") {
        v.push_str(&format!(", opaque=\"{opaque}\""));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_example_with_qop_auth() {
        // RFC 2617 §3.5, the classic vector.
        let challenge = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let v = authorization(
            challenge,
            "GET",
            "/dir/index.html",
            Credentials {
                username: "Mufasa",
                password: "Circle Of Life",
            },
            "0a4f113b",
            1,
        )
        .unwrap();
        assert!(
            v.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{v}"
        );
        assert!(
            v.contains("nc=00000001") && v.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#)
        );
    }

    #[test]
    fn without_qop_and_bad_challenges() {
        let v = authorization(
            r#"Digest realm="sb", nonce="abc""#,
            "REGISTER",
            "sip:gw",
            Credentials {
                username: "u",
                password: "p",
            },
            "x",
            1,
        )
        .unwrap();
        let ha1 = hex_md5("u:sb:p");
        let ha2 = hex_md5("REGISTER:sip:gw");
        assert!(v.contains(&format!(
            "response=\"{}\"",
            hex_md5(&format!("{ha1}:abc:{ha2}"))
        )));
        assert!(!v.contains("qop"));
        let creds = Credentials {
            username: "u",
            password: "p",
        };
        assert!(authorization("Basic realm=x", "REGISTER", "sip:gw", creds, "x", 1).is_err());
        assert!(
            authorization(
                r#"Digest realm="a", nonce="b", algorithm=SHA-512-256"#,
                "REGISTER",
                "sip:gw",
                creds,
                "x",
                1
            )
            .is_err()
        );
        assert!(authorization(r#"Digest realm="a""#, "REGISTER", "sip:gw", creds, "x", 1).is_err());
    }
}
