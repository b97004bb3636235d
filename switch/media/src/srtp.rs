//! SDES-SRTP for a SIP leg: the `a=crypto` lines of RFC 4568, and the packets of one
//! direction protected or checked with their keys (RFC 3711: AES-CM with HMAC-SHA1 80- and
//! 32-bit tags; RFC 7714: AES-GCM). The switch terminates SRTP per leg: each leg has keys of
//! its own, and no key ever crosses to the other leg.

use std::fmt;

use aes::Aes128;
use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit, StreamCipher};
use aes_gcm::Aes128Gcm;
use aes_gcm::aead::AeadInPlace;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;
type HmacSha1 = Hmac<Sha1>;

/// A crypto-suite of RFC 4568 §6.2 / RFC 7714 §12 we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-128 in counter mode, HMAC-SHA1 with an 80-bit tag.
    AesCm128HmacSha1_80,
    /// The same with a 32-bit tag on RTP (SRTCP's stays 80 bits).
    AesCm128HmacSha1_32,
    /// AES-128 in Galois/counter mode, a 128-bit tag.
    AeadAes128Gcm,
}

/// The suites we offer, in our order of preference.
pub const SUITES: [Suite; 3] = [
    Suite::AesCm128HmacSha1_80,
    Suite::AeadAes128Gcm,
    Suite::AesCm128HmacSha1_32,
];

impl Suite {
    /// Its name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite named so (case as RFC 4568 writes it).
    pub fn from_name(name: &str) -> Option<Suite> {
        SUITES.into_iter().find(|s| s.name() == name)
    }

    fn salt_len(self) -> usize {
        match self {
            Suite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    fn rtp_tag(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
            Suite::AeadAes128Gcm => 16,
        }
    }

    fn rtcp_tag(self) -> usize {
        match self {
            Suite::AeadAes128Gcm => 16,
            _ => 10,
        }
    }

    fn aead(self) -> bool {
        self == Suite::AeadAes128Gcm
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a leg's media is secured with SDES-SRTP (a gateway's `srtp` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Plain RTP: our offers carry no key.
    #[default]
    Off,
    /// Our offers are `RTP/AVP` with keys: SRTP when the answer takes one, plain otherwise.
    Optional,
    /// Our offers are `RTP/SAVP`: an answer without a key ends the call.
    Required,
}

impl Policy {
    /// `off`, `optional` or `required`.
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "off" => Some(Policy::Off),
            "optional" => Some(Policy::Optional),
            "required" => Some(Policy::Required),
            _ => None,
        }
    }
}

/// Why an `a=crypto` line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Not `tag suite key-params`.
    #[error("malformed a=crypto: {0}")]
    Malformed(&'static str),
    /// A suite we do not speak.
    #[error("crypto-suite {0} is not supported")]
    UnknownSuite(String),
    /// A key method or session parameter we do not speak.
    #[error("a=crypto asks for {0}, which is not supported")]
    Unsupported(String),
    /// No randomness for a key of ours.
    #[error("no random bytes for an SRTP key: {0}")]
    Random(String),
}

/// Why a packet was not protected or was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// Too short for its header, trailer and tag, or not RTP/RTCP.
    #[error("packet too short or not RTP")]
    Malformed,
    /// Its tag is wrong: forged, damaged, or under another key.
    #[error("authentication failed")]
    Auth,
    /// Seen already, or too old for the replay window.
    #[error("replayed or too old")]
    Replay,
}

/// A master key and salt, as `inline:` carries them. Its Debug never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    suite: Suite,
    /// 16 key bytes, then the suite's salt.
    bytes: [u8; 30],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, ..)", self.suite)
    }
}

impl MasterKey {
    /// A fresh random key for `suite`.
    pub fn generate(suite: Suite) -> Result<MasterKey, CryptoError> {
        let mut bytes = [0u8; 30];
        let n = 16 + suite.salt_len();
        getrandom::fill(&mut bytes[..n]).map_err(|e| CryptoError::Random(e.to_string()))?;
        Ok(MasterKey { suite, bytes })
    }

    /// From raw key||salt bytes (tests, and the `inline:` value decoded).
    pub fn from_bytes(suite: Suite, raw: &[u8]) -> Option<MasterKey> {
        if raw.len() != 16 + suite.salt_len() {
            return None;
        }
        let mut bytes = [0u8; 30];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(MasterKey { suite, bytes })
    }

    /// Its suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..16]
    }

    fn salt(&self) -> &[u8] {
        &self.bytes[16..16 + self.suite.salt_len()]
    }

    /// The `inline:` key-info: base64 of key||salt.
    fn inline(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.bytes[..16 + self.suite.salt_len()])
    }
}

/// One `a=crypto` line (RFC 4568 §9.1): its tag, suite and master key. An MKI the peer puts
/// on its packets is skipped; keys of ours carry none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    /// The line's tag (answers name the offer's).
    pub tag: u32,
    /// Suite and key.
    pub key: MasterKey,
    /// Length of the MKI on the sender's packets (0: none).
    pub mki_len: usize,
}

impl Crypto {
    /// A line of ours with a fresh key.
    pub fn ours(tag: u32, suite: Suite) -> Result<Crypto, CryptoError> {
        Ok(Crypto {
            tag,
            key: MasterKey::generate(suite)?,
            mki_len: 0,
        })
    }

    /// Its suite.
    pub fn suite(&self) -> Suite {
        self.key.suite
    }

    /// Parses an `a=crypto` value: `tag suite inline:key||salt[|lifetime][|MKI:len] [params]`.
    pub fn parse(value: &str) -> Result<Crypto, CryptoError> {
        let mut words = value.split_ascii_whitespace();
        let tag = words
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|t| *t < 1_000_000_000)
            .ok_or(CryptoError::Malformed("the tag is not a number"))?;
        let suite_name = words
            .next()
            .ok_or(CryptoError::Malformed("no crypto-suite"))?;
        let suite = Suite::from_name(suite_name)
            .ok_or_else(|| CryptoError::UnknownSuite(suite_name.to_owned()))?;
        let params = words
            .next()
            .ok_or(CryptoError::Malformed("no key parameters"))?;
        // Several keys (`;`-separated, told apart by MKI): the first.
        let first = params.split(';').next().unwrap_or_default();
        let info = first
            .strip_prefix("inline:")
            .ok_or_else(|| CryptoError::Unsupported(format!("key method of {first:?}")))?;
        let mut parts = info.split('|');
        let b64 = parts.next().unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .map_err(|_| CryptoError::Malformed("the key is not base64"))?;
        let key = MasterKey::from_bytes(suite, &raw).ok_or(CryptoError::Malformed(
            "the key is not as long as its suite's key and salt",
        ))?;
        let mut mki_len = 0;
        for p in parts {
            if let Some((_, len)) = p.split_once(':') {
                mki_len = len
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=128).contains(l))
                    .ok_or(CryptoError::Malformed("bad MKI length"))?;
            }
            // Otherwise a lifetime: we never send as many packets.
        }
        for p in words {
            let name = p.split('=').next().unwrap_or_default();
            match name {
                "WSH" | "FEC_ORDER" => {}
                "KDR" if p == "KDR=0" => {}
                _ if name.starts_with('-') => {}
                _ => return Err(CryptoError::Unsupported(format!("session parameter {p}"))),
            }
        }
        Ok(Crypto { tag, key, mki_len })
    }

    /// The `a=crypto` value.
    pub fn line(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.key.suite.name(),
            self.key.inline()
        )
    }
}

/// Both directions of one leg: what we send is protected with our key, what it sends is
/// checked with its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegKeys {
    /// Our line on this leg.
    pub ours: Crypto,
    /// The leg's line.
    pub theirs: Crypto,
}

/// Session keys for RTP or RTCP (RFC 3711 §4.3).
struct Keys {
    aes: Aes128,
    gcm: Option<Aes128Gcm>,
    auth: Option<HmacSha1>,
    salt: [u8; 14],
}

/// The key derivation of RFC 3711 §4.3.3 (key derivation rate 0): `out` filled from the
/// AES-CM PRF for `label`. A 96-bit salt (GCM) is padded to 112 bits (RFC 7714 erratum 4938).
fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    let aes = Aes128::new(master.key().into());
    let mut x = [0u8; 16];
    x[..master.salt().len()].copy_from_slice(master.salt());
    x[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        let b = aes::Block::from_mut_slice(&mut block);
        aes.encrypt_block(b);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

impl Keys {
    fn new(master: &MasterKey, base: u8) -> Keys {
        let suite = master.suite;
        let mut enc = [0u8; 16];
        derive(master, base, &mut enc);
        let mut salt = [0u8; 14];
        derive(master, base + 2, &mut salt[..suite.salt_len()]);
        let auth = (!suite.aead()).then(|| {
            let mut a = [0u8; 20];
            derive(master, base + 1, &mut a);
            // An HMAC takes a key of any length.
            <HmacSha1 as Mac>::new_from_slice(&a).unwrap_or_else(|_| unreachable!())
        });
        Keys {
            aes: Aes128::new(&enc.into()),
            gcm: suite.aead().then(|| Aes128Gcm::new(&enc.into())),
            auth,
            salt,
        }
    }

    /// AES-CM's IV (RFC 3711 §4.1.1): salt·2^16 ⊕ SSRC·2^64 ⊕ index·2^16.
    fn cm(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (i, b) in ssrc.to_be_bytes().into_iter().enumerate() {
            iv[4 + i] ^= b;
        }
        for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
            iv[8 + i] ^= b;
        }
        let core = ctr::CtrCore::<Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(
            self.aes.clone(),
            &iv.into(),
        );
        let mut c = Aes128Ctr::from_core(core);
        c.apply_keystream(data);
    }

    fn mac(&self, parts: &[&[u8]]) -> Option<HmacSha1> {
        let mut m = self.auth.clone()?;
        for p in parts {
            m.update(p);
        }
        Some(m)
    }

    /// AES-GCM's 96-bit IV (RFC 7714 §8.1 and §9.1): `00 00 SSRC x y` ⊕ salt.
    fn gcm_iv(&self, ssrc: u32, x: u32, y: &[u8]) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..10].copy_from_slice(&x.to_be_bytes());
        iv[12 - y.len()..].copy_from_slice(y);
        for (v, s) in iv.iter_mut().zip(&self.salt[..12]) {
            *v ^= s;
        }
        iv
    }
}

/// What one stream (one SSRC) has seen: its highest index and a replay window of 64.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    highest: u64,
    window: u64,
}

impl Seen {
    /// The packet index of `seq` (RFC 3711 Appendix A: the rollover counter guessed from the
    /// highest sequence number seen).
    fn index(&self, seq: u16) -> Option<u64> {
        let roc = self.highest >> 16;
        let s_l = self.highest as u16;
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                roc.checked_sub(1)?
            } else {
                roc
            }
        } else if seq < s_l - 0x8000 {
            roc + 1
        } else {
            roc
        };
        Some(v << 16 | u64::from(seq))
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let back = self.highest - index;
        if back >= 64 || self.window & (1 << back) != 0 {
            return Err(SrtpError::Replay);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.window = if shift >= 64 { 0 } else { self.window << shift };
            self.window |= 1;
            self.highest = index;
        } else {
            self.window |= 1 << (self.highest - index);
        }
    }
}

/// Streams (SSRCs) one direction keeps state for, at most: a new one past this replaces the
/// one seen least recently (a leg sends one SSRC at a time; a flood must not grow memory).
const MAX_STREAMS: usize = 8;

/// The streams of one direction, by SSRC (the most recent last).
#[derive(Debug, Default)]
struct Streams(Vec<(u32, Seen)>);

impl Streams {
    fn get(&self, ssrc: u32) -> Option<Seen> {
        self.0.iter().find(|(s, _)| *s == ssrc).map(|(_, v)| *v)
    }

    fn put(&mut self, ssrc: u32, seen: Seen) {
        self.0.retain(|(s, _)| *s != ssrc);
        if self.0.len() >= MAX_STREAMS {
            self.0.remove(0);
        }
        self.0.push((ssrc, seen));
    }
}

/// One direction of one leg's SRTP: protects what we send, or checks and decrypts what the
/// leg sends.
pub struct Context {
    suite: Suite,
    mki_len: usize,
    rtp: Keys,
    rtcp: Keys,
    streams: Streams,
    rtcp_streams: Streams,
    /// Our next SRTCP index (sending).
    rtcp_index: u32,
    /// SRTCP tag length (the suite's, or what the peer was found to use).
    rtcp_tag: usize,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("suite", &self.suite)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

/// Length of an RTP packet's header (fixed part, CSRCs, extension).
fn header_len(p: &[u8]) -> Result<usize, SrtpError> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut n = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let ext = p.get(n + 2..n + 4).ok_or(SrtpError::Malformed)?;
        n += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    if n > p.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(n)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Context {
    /// The context for one direction under `crypto`'s key.
    pub fn new(crypto: &Crypto) -> Context {
        Context {
            suite: crypto.key.suite,
            mki_len: crypto.mki_len,
            rtp: Keys::new(&crypto.key, 0),
            rtcp: Keys::new(&crypto.key, 3),
            streams: Streams::default(),
            rtcp_streams: Streams::default(),
            rtcp_index: 0,
            rtcp_tag: crypto.key.suite.rtcp_tag(),
        }
    }

    /// Protects an RTP packet in place (its payload encrypted, its tag appended).
    pub fn protect_rtp(&mut self, p: &mut Vec<u8>) -> Result<(), SrtpError> {
        let hl = header_len(p)?;
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let ssrc = be32(&p[8..12]);
        let mut seen = self.streams.get(ssrc).unwrap_or_default();
        let index = match self.streams.get(ssrc) {
            None => u64::from(seq),
            Some(s) => s.index(seq).unwrap_or(u64::from(seq)),
        };
        if index > seen.highest || self.streams.get(ssrc).is_none() {
            seen.highest = index;
        }
        self.streams.put(ssrc, seen);
        let roc = (index >> 16) as u32;
        if self.suite.aead() {
            let iv = self.rtp.gcm_iv(ssrc, roc, &seq.to_be_bytes());
            let gcm = self.rtp.gcm.as_ref().ok_or(SrtpError::Malformed)?;
            let (head, body) = p.split_at_mut(hl);
            let tag = gcm
                .encrypt_in_place_detached(&iv.into(), head, body)
                .map_err(|_| SrtpError::Malformed)?;
            p.extend_from_slice(&tag);
        } else {
            self.rtp.cm(ssrc, index, &mut p[hl..]);
            let m = self
                .rtp
                .mac(&[p, &roc.to_be_bytes()])
                .ok_or(SrtpError::Malformed)?;
            let tag = m.finalize().into_bytes();
            p.extend_from_slice(&tag[..self.suite.rtp_tag()]);
        }
        Ok(())
    }

    /// Checks and decrypts an SRTP packet in place (tag and MKI removed). A packet that fails
    /// changes nothing.
    pub fn unprotect_rtp(&mut self, p: &mut Vec<u8>) -> Result<(), SrtpError> {
        let hl = header_len(p)?;
        let tag_len = self.suite.rtp_tag();
        let end = p
            .len()
            .checked_sub(tag_len + self.mki_len)
            .filter(|e| *e >= hl)
            .ok_or(SrtpError::Malformed)?;
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let ssrc = be32(&p[8..12]);
        let known = self.streams.get(ssrc);
        let mut seen = known.unwrap_or_default();
        let index = match known {
            None => u64::from(seq),
            Some(s) => s.index(seq).ok_or(SrtpError::Replay)?,
        };
        if known.is_some() {
            seen.check(index)?;
        }
        let roc = (index >> 16) as u32;
        if self.suite.aead() {
            // header | ciphertext | tag | MKI
            let iv = self.rtp.gcm_iv(ssrc, roc, &seq.to_be_bytes());
            let gcm = self.rtp.gcm.as_ref().ok_or(SrtpError::Malformed)?;
            let tag = aes_gcm::Tag::clone_from_slice(&p[end..end + tag_len]);
            let (head, body) = p[..end].split_at_mut(hl);
            gcm.decrypt_in_place_detached(&iv.into(), head, body, &tag)
                .map_err(|_| SrtpError::Auth)?;
        } else {
            // header | ciphertext | MKI | tag
            let tag_at = p.len() - tag_len;
            let m = self
                .rtp
                .mac(&[&p[..end], &roc.to_be_bytes()])
                .ok_or(SrtpError::Malformed)?;
            m.verify_truncated_left(&p[tag_at..])
                .map_err(|_| SrtpError::Auth)?;
            self.rtp.cm(ssrc, index, &mut p[hl..end]);
        }
        p.truncate(end);
        if known.is_none() {
            seen.highest = index;
        }
        seen.accept(index);
        self.streams.put(ssrc, seen);
        Ok(())
    }

    /// Protects an RTCP (compound) packet in place: encrypted after its first 8 bytes, the
    /// E flag and SRTCP index and the tag appended.
    pub fn protect_rtcp(&mut self, p: &mut Vec<u8>) -> Result<(), SrtpError> {
        if p.len() < 8 || p[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(&p[4..8]);
        let index = self.rtcp_index;
        self.rtcp_index = (self.rtcp_index + 1) & 0x7fff_ffff;
        let e_index = (0x8000_0000 | index).to_be_bytes();
        if self.suite.aead() {
            // header | ciphertext | tag | E+index
            let iv = self.rtcp.gcm_iv(ssrc, 0, &index.to_be_bytes());
            let gcm = self.rtcp.gcm.as_ref().ok_or(SrtpError::Malformed)?;
            let mut aad = [0u8; 12];
            aad[..8].copy_from_slice(&p[..8]);
            aad[8..].copy_from_slice(&e_index);
            let tag = gcm
                .encrypt_in_place_detached(&iv.into(), &aad, &mut p[8..])
                .map_err(|_| SrtpError::Malformed)?;
            p.extend_from_slice(&tag);
            p.extend_from_slice(&e_index);
        } else {
            // header | ciphertext | E+index | tag
            self.rtcp.cm(ssrc, u64::from(index), &mut p[8..]);
            p.extend_from_slice(&e_index);
            let m = self.rtcp.mac(&[p]).ok_or(SrtpError::Malformed)?;
            let tag = m.finalize().into_bytes();
            p.extend_from_slice(&tag[..self.rtcp_tag]);
        }
        Ok(())
    }

    /// Checks and decrypts an SRTCP packet in place (trailer and tag removed).
    pub fn unprotect_rtcp(&mut self, p: &mut Vec<u8>) -> Result<(), SrtpError> {
        match self.unprotect_rtcp_tagged(p, self.rtcp_tag) {
            // libre (baresip) tags SRTCP with 32 bits under AES_CM_128_HMAC_SHA1_32, where
            // RFC 4568 says 80: a peer that does is understood, and answered in kind.
            Err(SrtpError::Auth | SrtpError::Malformed)
                if self.suite == Suite::AesCm128HmacSha1_32 && self.rtcp_tag == 10 =>
            {
                self.unprotect_rtcp_tagged(p, 4)?;
                self.rtcp_tag = 4;
                Ok(())
            }
            r => r,
        }
    }

    /// The length of the SRTCP tags of this direction.
    pub fn rtcp_tag_len(&self) -> usize {
        self.rtcp_tag
    }

    /// Tags SRTCP with `len` bytes from now on (a peer that expects 32-bit SRTCP tags).
    pub fn set_rtcp_tag_len(&mut self, len: usize) {
        self.rtcp_tag = len;
    }

    fn unprotect_rtcp_tagged(&mut self, p: &mut Vec<u8>, tag_len: usize) -> Result<(), SrtpError> {
        if p.len() < 8 + 4 + tag_len + self.mki_len || p[0] >> 6 != 2 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = be32(&p[4..8]);
        let (end, e_at) = if self.suite.aead() {
            let e_at = p.len() - self.mki_len - 4;
            (e_at - tag_len, e_at)
        } else {
            let e_at = p.len() - tag_len - self.mki_len - 4;
            (e_at, e_at)
        };
        let e_index = be32(&p[e_at..e_at + 4]);
        let encrypted = e_index & 0x8000_0000 != 0;
        let index = u64::from(e_index & 0x7fff_ffff);
        let known = self.rtcp_streams.get(ssrc);
        let mut seen = known.unwrap_or_default();
        if known.is_some() {
            seen.check(index)?;
        }
        if self.suite.aead() {
            let iv = self
                .rtcp
                .gcm_iv(ssrc, 0, &(e_index & 0x7fff_ffff).to_be_bytes());
            let gcm = self.rtcp.gcm.as_ref().ok_or(SrtpError::Malformed)?;
            let tag = aes_gcm::Tag::clone_from_slice(&p[end..end + tag_len]);
            let eb = e_index.to_be_bytes();
            if encrypted {
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&p[..8]);
                aad[8..].copy_from_slice(&eb);
                gcm.decrypt_in_place_detached(&iv.into(), &aad, &mut p[8..end], &tag)
                    .map_err(|_| SrtpError::Auth)?;
            } else {
                let mut aad = p[..end].to_vec();
                aad.extend_from_slice(&eb);
                gcm.decrypt_in_place_detached(&iv.into(), &aad, &mut [], &tag)
                    .map_err(|_| SrtpError::Auth)?;
            }
        } else {
            let tag_at = p.len() - tag_len;
            let m = self
                .rtcp
                .mac(&[&p[..e_at + 4]])
                .ok_or(SrtpError::Malformed)?;
            m.verify_truncated_left(&p[tag_at..])
                .map_err(|_| SrtpError::Auth)?;
            if encrypted {
                self.rtcp.cm(ssrc, index, &mut p[8..end]);
            }
        }
        p.truncate(end);
        if known.is_none() {
            seen.highest = index;
        }
        seen.accept(index);
        self.rtcp_streams.put(ssrc, seen);
        Ok(())
    }
}

/// Both contexts of a leg: what we send, what it sends.
#[derive(Debug)]
pub struct LegSrtp {
    /// The keys they were made from.
    pub keys: LegKeys,
    /// Protects what we send to the leg.
    pub tx: Context,
    /// Checks what the leg sends.
    pub rx: Context,
}

impl LegSrtp {
    /// Both directions' contexts for `keys`.
    pub fn new(keys: LegKeys) -> LegSrtp {
        LegSrtp {
            tx: Context::new(&keys.ours),
            rx: Context::new(&keys.theirs),
            keys,
        }
    }

    /// Checks an SRTCP packet from the leg; when the leg was found to tag SRTCP short, ours
    /// to it are tagged so too.
    pub fn unprotect_rtcp(&mut self, p: &mut Vec<u8>) -> Result<(), SrtpError> {
        self.rx.unprotect_rtcp(p)?;
        if self.rx.rtcp_tag_len() != self.tx.rtcp_tag_len() {
            self.tx.set_rtcp_tag_len(self.rx.rtcp_tag_len());
        }
        Ok(())
    }

    /// New keys for the leg: a direction whose key changed gets a new context, the other
    /// keeps its own.
    pub fn rekey(&mut self, keys: &LegKeys) {
        if keys.ours != self.keys.ours {
            self.tx = Context::new(&keys.ours);
        }
        if keys.theirs != self.keys.theirs {
            self.rx = Context::new(&keys.theirs);
        }
        self.keys = keys.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.3.
    #[test]
    fn session_keys_are_derived_as_rfc_3711_b3_says() {
        let master = MasterKey::from_bytes(
            Suite::AesCm128HmacSha1_80,
            &hex("E1F97A0D3E018BE0D64FA32C06DE41390EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let mut enc = [0u8; 16];
        derive(&master, 0, &mut enc);
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        derive(&master, 2, &mut salt);
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 20];
        derive(&master, 1, &mut auth);
        assert_eq!(auth[..16].to_vec(), hex("CEBE321F6FF7716B6FD4AB49AF256A15"));
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream for a session key and salt, SSRC 0,
    /// index 0.
    #[test]
    fn the_keystream_is_rfc_3711_b2s() {
        let mut salt = [0u8; 14];
        salt.copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let keys = Keys {
            aes: Aes128::new(&key.into()),
            gcm: None,
            auth: None,
            salt,
        };
        let mut data = [0u8; 48];
        keys.cm(0, 0, &mut data);
        assert_eq!(
            data.to_vec(),
            hex(concat!(
                "E03EAD0935C95E80E166B16DD92B4EB4",
                "D23513162B02D0F72A43A2FE4A5F97AB",
                "41E95B3BB0A2E8DD477901E4FCA894C0"
            ))
        );
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0x03, 0x20, 0xde, 0xad, 0xbe, 0xef];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn every_suite_round_trips_rtp_and_rtcp_and_refuses_forgeries_and_replays() {
        for suite in SUITES {
            let c = Crypto::ours(1, suite).unwrap();
            let parsed = Crypto::parse(&c.line()).unwrap();
            assert_eq!(parsed, c, "{}", c.line());
            let (mut tx, mut rx) = (Context::new(&c), Context::new(&parsed));
            for seq in [65530u16, 65535, 0, 1, 2] {
                let plain = rtp(seq, b"audio payload!");
                let mut p = plain.clone();
                tx.protect_rtp(&mut p).unwrap();
                assert_eq!(p.len(), plain.len() + suite.rtp_tag(), "{suite}");
                assert_ne!(&p[12..plain.len()], &plain[12..], "{suite}: encrypted");
                let sent = p.clone();
                let mut forged = sent.clone();
                forged[14] ^= 1;
                assert_eq!(rx.unprotect_rtp(&mut forged), Err(SrtpError::Auth));
                assert_eq!(
                    forged.len(),
                    sent.len(),
                    "a refused packet is left as it was"
                );
                rx.unprotect_rtp(&mut p).unwrap();
                assert_eq!(p, plain, "{suite} seq {seq}");
                let mut again = sent.clone();
                assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replay));
            }
            let plain = vec![0x81, 201, 0, 7, 1, 2, 3, 4, 0, 0, 0, 5, 9, 9, 9, 9];
            let mut p = plain.clone();
            tx.protect_rtcp(&mut p).unwrap();
            let sent = p.clone();
            let mut forged = sent.clone();
            forged[9] ^= 1;
            assert_eq!(rx.unprotect_rtcp(&mut forged), Err(SrtpError::Auth));
            rx.unprotect_rtcp(&mut p).unwrap();
            assert_eq!(p, plain, "{suite} rtcp");
            let mut again = sent;
            assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replay));
        }
    }

    #[test]
    fn a_crypto_line_is_parsed_with_lifetime_mki_and_session_parameters() {
        let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let c = Crypto::parse(&format!(
            "1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4 WSH=64"
        ))
        .unwrap();
        assert_eq!(
            (c.tag, c.mki_len, c.suite()),
            (1, 4, Suite::AesCm128HmacSha1_80)
        );
        assert!(matches!(
            Crypto::parse(&format!("2 AES_256_CM_HMAC_SHA1_80 inline:{key}")),
            Err(CryptoError::UnknownSuite(_))
        ));
        assert!(matches!(
            Crypto::parse(&format!(
                "2 AES_CM_128_HMAC_SHA1_32 inline:{key} UNENCRYPTED_SRTP"
            )),
            Err(CryptoError::Unsupported(_))
        ));
        assert!(matches!(
            Crypto::parse("3 AEAD_AES_128_GCM inline:c2hvcnQ="),
            Err(CryptoError::Malformed(_))
        ));
        assert!(Crypto::parse("x AES_CM_128_HMAC_SHA1_80 inline:abc").is_err());
        assert!(!format!("{c:?}").contains(key), "Debug shows no key");
    }

    /// libre tags SRTCP with 32 bits under AES_CM_128_HMAC_SHA1_32 (RFC 4568 says 80): its
    /// reports are read, and ours to it are tagged as it expects.
    #[test]
    fn a_peer_tagging_srtcp_with_32_bits_is_read_and_answered_in_kind() {
        let theirs = Crypto::ours(1, Suite::AesCm128HmacSha1_32).unwrap();
        let ours = Crypto::ours(1, Suite::AesCm128HmacSha1_32).unwrap();
        let mut peer_tx = Context::new(&theirs);
        peer_tx.set_rtcp_tag_len(4);
        let mut peer_rx = Context::new(&ours);
        peer_rx.set_rtcp_tag_len(4);
        let mut leg = LegSrtp::new(LegKeys {
            ours: ours.clone(),
            theirs,
        });
        let plain = vec![0x80, 201, 0, 1, 1, 2, 3, 4];
        let mut p = plain.clone();
        peer_tx.protect_rtcp(&mut p).unwrap();
        assert_eq!(p.len(), plain.len() + 4 + 4);
        leg.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p, plain);
        let mut back = plain.clone();
        leg.tx.protect_rtcp(&mut back).unwrap();
        peer_rx.unprotect_rtcp(&mut back).unwrap();
        assert_eq!(back, plain);
    }

    /// Whatever arrives — any length, any bytes, a header claiming CSRCs or an extension it
    /// does not have — is refused, never a panic, and leaves the packet as it was.
    #[test]
    fn garbage_of_every_length_is_refused_without_a_panic() {
        let mut x = 0x9e37_79b9u32;
        for suite in SUITES {
            let mut c = Crypto::ours(1, suite).unwrap();
            c.mki_len = 4;
            let mut rx = Context::new(&c);
            for len in 0..120 {
                for first in [0x80u8, 0x9f, 0x90, 0xbf, 0x00] {
                    let mut p: Vec<u8> = (0..len)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 17;
                            x ^= x << 5;
                            x as u8
                        })
                        .collect();
                    if let Some(b) = p.first_mut() {
                        *b = first;
                    }
                    let before = p.clone();
                    assert!(rx.unprotect_rtp(&mut p).is_err());
                    assert_eq!(p, before);
                    assert!(rx.unprotect_rtcp(&mut p).is_err());
                }
            }
        }
    }

    /// A peer that puts an MKI on its packets: skipped before the tag (AES-CM).
    #[test]
    fn a_senders_mki_is_skipped() {
        let c = Crypto::ours(1, Suite::AesCm128HmacSha1_32).unwrap();
        let mut tx = Context::new(&c);
        let mut with_mki = c.clone();
        with_mki.mki_len = 2;
        let mut rx = Context::new(&with_mki);
        let plain = rtp(10, b"xyz");
        let mut p = plain.clone();
        tx.protect_rtp(&mut p).unwrap();
        let tag = p.split_off(plain.len());
        p.extend_from_slice(&[0, 1]);
        p.extend_from_slice(&tag);
        rx.unprotect_rtp(&mut p).unwrap();
        assert_eq!(p, plain);
    }
}
