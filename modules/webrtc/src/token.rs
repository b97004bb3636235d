//! Call tokens: what a merchant's server mints so that only its own pages can place calls.
//!
//! A token is `<expiry>.<mac>`: `expiry` in Unix seconds, `mac` the lowercase hex
//! HMAC-SHA256, under the merchant's secret, of
//! `v1\n<merchant>\n<link>\n<session>\n<expiry>`. Any language mints one in three lines
//! (docs/webrtc.md); `switchboard token` mints one for tests and demos.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `<expiry>.<hex>`.
    #[error("the call token is malformed")]
    Malformed,
    /// Past its expiry.
    #[error("the call token has expired")]
    Expired,
    /// The MAC does not match (wrong secret, or merchant/link/session changed).
    #[error("the call token does not match this merchant, link and session")]
    BadSignature,
}

/// HMAC-SHA256 of `msg` under `secret`, ready to finalise or verify.
fn hmac(secret: &[u8], msg: &str) -> HmacSha256 {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    m.update(msg.as_bytes());
    m
}

/// Appends `bytes` to `s` as lowercase hex.
fn push_hex(s: &mut String, bytes: &[u8]) {
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
}

/// Constant-time comparison: for tokens, keys and their hashes.
pub fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn mac(secret: &[u8], merchant: &str, link: &str, session: &str, expiry: u64) -> HmacSha256 {
    hmac(
        secret,
        &format!("v1\n{merchant}\n{link}\n{session}\n{expiry}"),
    )
}

/// Mints a token (the merchant server's side; also `switchboard token`).
pub fn mint(secret: &[u8], merchant: &str, link: &str, session: &str, expiry: u64) -> String {
    let mut s = format!("{expiry}.");
    push_hex(
        &mut s,
        &mac(secret, merchant, link, session, expiry)
            .finalize()
            .into_bytes(),
    );
    s
}

/// The webhook signature header value: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
/// The CRM recomputes it over the raw body and refuses stale `t` (replays).
pub fn sign_webhook(secret: &[u8], t: u64, body: &str) -> String {
    let mut s = format!("t={t},v1=");
    push_hex(
        &mut s,
        &hmac(secret, &format!("{t}.{body}")).finalize().into_bytes(),
    );
    s
}

/// The stored form of a CRM API key: `sha256:<hex>` (keys are never stored in clear).
pub fn key_hash(key: &str) -> String {
    use sha2::Digest;
    let mut s = String::from("sha256:");
    push_hex(&mut s, &sha2::Sha256::digest(key.as_bytes()));
    s
}

/// Checks a token at `now` (Unix seconds). The comparison is constant-time.
pub fn verify(
    token: &str,
    secret: &[u8],
    merchant: &str,
    link: &str,
    session: &str,
    now: u64,
) -> Result<(), TokenError> {
    let (expiry, hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    if hex.len() != 64 {
        return Err(TokenError::Malformed);
    }
    let mut tag = [0u8; 32];
    for (i, b) in tag.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2).ok_or(TokenError::Malformed)?;
        *b = u8::from_str_radix(pair, 16).map_err(|_| TokenError::Malformed)?;
    }
    mac(secret, merchant, link, session, expiry)
        .verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    if expiry < now {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_any_change_breaks_it() {
        let t = mint(b"s3cret", "acme", "sales", "sess-1", 2_000);
        assert_eq!(
            verify(&t, b"s3cret", "acme", "sales", "sess-1", 1_000),
            Ok(())
        );
        assert_eq!(
            verify(&t, b"other", "acme", "sales", "sess-1", 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&t, b"s3cret", "acme", "support", "sess-1", 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&t, b"s3cret", "acme", "sales", "sess-2", 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&t, b"s3cret", "acme", "sales", "sess-1", 2_001),
            Err(TokenError::Expired)
        );
        // A later expiry written over the original: the MAC covers it.
        let forged = t.replacen("2000", "9999", 1);
        assert_eq!(
            verify(&forged, b"s3cret", "acme", "sales", "sess-1", 1_000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for t in [
            "",
            "abc",
            "12.zz",
            "12.",
            "x.00",
            "1.é€",
            &format!("1.{}", "g".repeat(64)),
        ] {
            assert_eq!(
                verify(t, b"k", "m", "l", "s", 0),
                Err(TokenError::Malformed),
                "{t}"
            );
        }
    }

    #[test]
    fn keys_are_stored_as_their_sha256() {
        // printf abc | sha256sum
        assert_eq!(
            key_hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_mac_matches_a_reference_hmac() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'k',b'v1\nm\nl\ns\n5',hashlib.sha256).hexdigest())"
        assert_eq!(
            mint(b"k", "m", "l", "s", 5),
            "5.7e59d743a76530c54974fe62027a997e548e891b380123dff76ba5b31327df74"
        );
    }
}
