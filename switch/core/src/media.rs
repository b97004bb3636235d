//! The call's media as signalling sees it: offer/answer per leg with transcoding (each leg
//! gets its own best codec), the DTMF form of each leg, digits arriving in SIP INFO, and the
//! media engine's events (digits, RTP timeouts, prompts finished).

use std::time::Instant;

use bytes::Bytes;
use switchboard_dialplan::Cause;
use switchboard_media::negotiate::{answer_for, chosen, offer_extras, telephone_event};
use switchboard_media::sdp::Dir;
use switchboard_media::srtp::{Crypto, CryptoError, LegKeys, Policy, Suite};
use switchboard_media::{
    CodecKind, DtmfMethod, Format, Formats, LegMedia, MediaEvent, MediaInfo, Side, Transport,
    audio, rewrite_with,
};
use switchboard_sip::{Name, Request};
use tracing::{debug, info, warn};

use crate::call::Call;
use crate::engine::{ClientRole, Engine, Output};
use crate::ids::CallRef;
use crate::module::Digit;

/// Where an SDP body travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SdpIn {
    /// In a request that can carry an offer (INVITE, UPDATE).
    Request,
    /// In an ACK (the answer to a 2xx offer).
    Ack,
    /// In a response; `final_` for a 2xx.
    Response {
        /// 2xx (ends the offer/answer exchange).
        final_: bool,
    },
}

/// An offer waiting for its answer: who offered, its formats, its ptime.
pub(crate) type PendingOffer = (Side, Vec<Format>, Option<u32>);

/// Offer/answer and DTMF state of one call.
#[derive(Debug, Default)]
pub(crate) struct CallMedia {
    /// A's first SDP (kept for a bridge after the plan answered A).
    pub a_offer: Option<Bytes>,
    /// The offer waiting for its answer: who offered, its formats and ptime.
    pub pending: Option<Box<PendingOffer>>,
    /// The pending offer's body and direction: our answer to it is written on its layout
    /// (every m-line in its order) and answers its direction.
    pub offer_body: Option<(Bytes, Dir)>,
    /// The codec the pending offerer was answered with (later answers repeat it). Boxed,
    /// as `fmt`: only anchored media has them, and memory per call counts.
    pub answered: Option<Box<Format>>,
    /// Each leg's current codec.
    pub fmt: [Option<Box<Format>>; 2],
    /// Each leg's media settings as last sent to the media engine (boxed: a call whose
    /// media bypasses the switch has none, and memory per call counts).
    pub legs: [Option<Box<LegMedia>>; 2],
    /// Configured DTMF form per leg (before falling back to in-band).
    pub dtmf: [Option<DtmfMethod>; 2],
    /// An offer of ours waiting for its answer in an ACK (a caller that sent none): to
    /// which leg, with what.
    pub local_offer: Option<Box<(Side, Vec<Format>)>>,
    /// SDES-SRTP of each leg (made when first written: most calls have none).
    pub srtp: Srtp,
    /// A leg answered our `RTP/SAVP` offer without a key: the call cannot go on.
    pub srtp_refused: bool,
    /// The SDP last sent to each leg (a session refresh by re-INVITE repeats it).
    pub sent: [Option<Bytes>; 2],
}

/// Both legs' SDES-SRTP, boxed apart from the call until something is written to it (a call
/// whose legs are plain RTP, or whose media bypasses the switch, has none: memory per call
/// counts). Read, an empty one is two plain legs.
#[derive(Debug, Default)]
pub(crate) struct Srtp(Option<Box<[Secure; 2]>>);

/// What an empty [`Srtp`] reads as: plain RTP, nothing offered, no policy set.
static PLAIN: std::sync::LazyLock<Secure> = std::sync::LazyLock::new(Secure::default);

impl std::ops::Index<usize> for Srtp {
    type Output = Secure;
    fn index(&self, i: usize) -> &Secure {
        self.0.as_ref().map_or(&*PLAIN, |b| &b[i])
    }
}

impl std::ops::IndexMut<usize> for Srtp {
    fn index_mut(&mut self, i: usize) -> &mut Secure {
        &mut self.0.get_or_insert_with(Box::default)[i]
    }
}

/// One leg's SDES-SRTP (RFC 4568): the keys each side offered and those agreed. Keys are
/// the leg's own: ours are made per leg, and a leg's are never written to the other.
#[derive(Debug, Default)]
pub(crate) struct Secure {
    /// How our offers to this leg secure it (leg B: its gateway's `srtp`; leg A: as its
    /// first offer did).
    pub policy: Policy,
    /// The policy is settled: by leg A's first offer, or by the dialplan (`srtp_b`).
    pub policy_set: bool,
    /// The profile of the leg's last offer (its answer repeats it).
    pub offered_proto: Option<String>,
    /// The leg's key we took from its last offer (boxed, like `keys`: most legs are
    /// plain RTP).
    pub their_offer: Option<Box<Crypto>>,
    /// Our keys in our last offer to the leg (one per suite).
    pub our_offer: Vec<Crypto>,
    /// The keys agreed (None: plain RTP).
    pub keys: Option<Box<LegKeys>>,
}

/// The offer's first key of a suite in `suites` (`None`: plain RTP), or why an offer
/// that must be secured cannot be.
fn offer_key(info: &MediaInfo, suites: &[Suite]) -> Result<Option<Crypto>, String> {
    let mut why = None;
    for line in &info.crypto {
        match Crypto::parse(line) {
            Ok(c) if suites.contains(&c.suite()) => return Ok(Some(c)),
            Ok(c) => why = Some(CryptoError::UnknownSuite(c.suite().name().to_owned())),
            Err(e) => why = Some(e),
        }
    }
    if !info.proto.contains("SAVP") {
        // Best-effort SRTP (keys on RTP/AVP) we cannot take is plain RTP.
        return Ok(None);
    }
    Err(match why {
        Some(CryptoError::UnknownSuite(_)) | None if info.crypto.is_empty() => {
            format!("{} without a=crypto (SDES keys)", info.proto)
        }
        Some(e) => format!("{} with no usable key: {e}", info.proto),
        None => format!("{} with no usable key", info.proto),
    })
}

/// Why an offer from a leg cannot be answered at all: (status, warning code, text) for a
/// 400 or 488 with a `Warning` (RFC 3261 §20.43).
pub(crate) fn refuse_offer(body: &[u8], suites: &[Suite]) -> Option<(u16, u16, String)> {
    match audio(body) {
        Err(switchboard_media::SdpError::Malformed(e)) => {
            Some((400, 399, format!("the SDP cannot be parsed: {e}")))
        }
        Err(_) => Some((
            488,
            304,
            "no audio stream on RTP/AVP or RTP/SAVP with a port".to_owned(),
        )),
        Ok(info) => offer_key(&info, suites).err().map(|why| (488, 302, why)),
    }
}

impl Secure {
    /// The leg offered: the key we will answer with, or why the offer cannot be taken.
    pub(crate) fn take_offer(
        &mut self,
        side: Side,
        info: &MediaInfo,
        suites: &[Suite],
    ) -> Result<(), String> {
        let key = offer_key(info, suites)?;
        if key.is_none() && self.policy == Policy::Required && side == Side::B {
            return Err("plain RTP offered on a leg whose gateway requires SRTP".to_owned());
        }
        if side == Side::A && !self.policy_set {
            self.policy_set = true;
            self.policy = match (&key, info.proto.contains("SAVP")) {
                (Some(_), true) => Policy::Required,
                (Some(_), false) => Policy::Optional,
                (None, _) => Policy::Off,
            };
        }
        self.offered_proto = Some(info.proto.clone());
        self.their_offer = key.map(Box::new);
        Ok(())
    }

    /// Our answer to the leg's last offer: its profile, and our key for its key (the one we
    /// had for it, if the suite and tag are the same).
    pub(crate) fn answer(&mut self) -> Result<(String, Vec<String>), CryptoError> {
        let proto = self
            .offered_proto
            .clone()
            .unwrap_or_else(|| "RTP/AVP".to_owned());
        let Some(theirs) = self.their_offer.clone() else {
            self.keys = None;
            return Ok((proto, Vec::new()));
        };
        let ours = match &self.keys {
            Some(k) if k.ours.tag == theirs.tag && k.ours.suite() == theirs.suite() => {
                k.ours.clone()
            }
            _ => Crypto::ours(theirs.tag, theirs.suite())?,
        };
        let line = ours.line();
        self.keys = Some(Box::new(LegKeys {
            ours,
            theirs: *theirs,
        }));
        Ok((proto, vec![line]))
    }

    /// Our offer to the leg: `RTP/SAVP` or `RTP/AVP`, with a key per suite as the policy
    /// says (the one agreed already kept for its suite).
    pub(crate) fn offer(&mut self, suites: &[Suite]) -> Result<(String, Vec<String>), CryptoError> {
        self.our_offer.clear();
        if self.policy == Policy::Off {
            return Ok(("RTP/AVP".to_owned(), Vec::new()));
        }
        for (i, &suite) in suites.iter().enumerate() {
            let c = match &self.keys {
                Some(k) if k.ours.suite() == suite => k.ours.clone(),
                _ => Crypto::ours(i as u32 + 1, suite)?,
            };
            self.our_offer.push(c);
        }
        let proto = match self.policy {
            Policy::Required => "RTP/SAVP",
            _ => "RTP/AVP",
        };
        Ok((
            proto.to_owned(),
            self.our_offer.iter().map(Crypto::line).collect(),
        ))
    }

    /// The leg answered our offer: the keys agreed, or why the answer cannot be taken.
    pub(crate) fn take_answer(&mut self, info: &MediaInfo) -> Result<(), String> {
        let agreed = info.crypto.iter().find_map(|line| {
            let theirs = Crypto::parse(line).ok()?;
            let ours = self
                .our_offer
                .iter()
                .find(|o| o.tag == theirs.tag && o.suite() == theirs.suite())?;
            Some(LegKeys {
                ours: ours.clone(),
                theirs,
            })
        });
        match agreed {
            None if self.policy == Policy::Required => Err(format!(
                "the answer ({}) takes none of the SRTP keys of our RTP/SAVP offer",
                info.proto
            )),
            None => {
                self.keys = None;
                Ok(())
            }
            Some(k) => {
                self.keys = Some(Box::new(k));
                Ok(())
            }
        }
    }
}

pub(crate) fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl Engine {
    fn origin_for(call: &mut Call, to: Side) -> (u64, u64) {
        match to {
            Side::A => {
                call.a.sdp_version += 1;
                (call.id.0, call.a.sdp_version)
            }
            Side::B => {
                call.b_sdp_version += 1;
                (call.id.0 + 1, call.b_sdp_version)
            }
        }
    }

    /// The body to send to the other leg for an SDP body `from` sent (`None`: send none).
    pub(crate) fn sdp_to_other(
        &mut self,
        call: &mut Call,
        from: Side,
        body: &Bytes,
        kind: SdpIn,
    ) -> Option<Bytes> {
        if body.is_empty() {
            return None;
        }
        if !self.cfg.anchor_media {
            return Some(body.clone());
        }
        let ports = self.alloc_media(call)?;
        let to = from.other();
        let port = match to {
            Side::A => ports.a,
            Side::B => ports.b,
        };
        let info = match audio(body) {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, ?from, "unusable SDP; passing no body");
                return None;
            }
        };
        self.media_remote(call, from, &info);
        let is_answer = match kind {
            SdpIn::Request => false,
            SdpIn::Ack => true,
            SdpIn::Response { .. } => call.m.pending.as_ref().is_some_and(|p| p.0 == to),
        };
        let origin = Self::origin_for(call, to);
        if !is_answer {
            if let Err(why) = call.m.srtp[idx(from)].take_offer(from, &info, &self.cfg.srtp_suites)
            {
                warn!(?from, %why, "offer refused");
                return None;
            }
            let (proto, crypto) = match call.m.srtp[idx(to)].offer(&self.cfg.srtp_suites) {
                Ok(t) => t,
                Err(e) => {
                    warn!(error = %e, "no SRTP keys for our offer");
                    return None;
                }
            };
            let allowed: Vec<&Format> = info.formats.iter().filter(|f| self.allowed(f)).collect();
            let kept: Vec<Format> = allowed.into_iter().cloned().collect();
            let extra = offer_extras(&kept, &self.cfg.codecs);
            call.m.pending = Some(Box::new((from, kept, info.ptime)));
            call.m.offer_body = Some((body.clone(), info.dir));
            call.m.answered = None;
            let edit = Formats::Offer {
                allowed: &self.cfg.codecs,
                extra: &extra,
            };
            let transport = Transport {
                proto: &proto,
                crypto: &crypto,
                dir: None,
            };
            return match rewrite_with(body, self.cfg.media_ip, port, edit, origin, transport) {
                Ok((b, _)) => {
                    let b = Bytes::from(b);
                    crate::session_timer::remember(call, to, &b);
                    Some(b)
                }
                Err(e) => {
                    warn!(error = %e, "offer cannot be passed on");
                    None
                }
            };
        }
        let (offerer, offer, offer_ptime) = *call.m.pending.clone()?;
        let Some(theirs) = chosen(&info.formats).cloned() else {
            warn!("answer without a codec");
            return None;
        };
        let mine = call
            .m
            .answered
            .as_deref()
            .cloned()
            .or_else(|| answer_for(&offer, Some(&theirs), call.m.fmt[idx(offerer)].as_deref()));
        let Some(mine) = mine else {
            warn!(codec = %theirs.name, "no codec of the offer can be bridged to the answer's");
            return None;
        };
        if let Err(why) = call.m.srtp[idx(from)].take_answer(&info) {
            warn!(?from, %why, "answer refused");
            call.m.srtp_refused = true;
            return None;
        }
        let (proto, crypto) = match call.m.srtp[idx(offerer)].answer() {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "no SRTP key for our answer");
                return None;
            }
        };
        call.m.answered = Some(Box::new(mine.clone()));
        if matches!(kind, SdpIn::Ack | SdpIn::Response { final_: true }) {
            call.m.pending = None;
        }
        let te_mine = telephone_event(&offer, mine.clock);
        let te_theirs = telephone_event(&info.formats, theirs.clock);
        self.set_leg_pub(call, offerer, &mine, te_mine.as_ref(), offer_ptime);
        self.set_leg_pub(call, from, &theirs, te_theirs.as_ref(), info.ptime);
        // Transcoded: what we send is our encoder's (mono), whatever the offer said of its own.
        let mine = if mine.same_codec(&theirs) {
            mine
        } else {
            switchboard_media::negotiate::as_sent_by_us(mine)
        };
        let exact: Vec<Format> = std::iter::once(mine).chain(te_mine).collect();
        // Written on the offer's layout (not the answer's: a peer that drops or reorders
        // m-lines must not make ours wrong), its direction what the offer allows of theirs.
        let (template, dir) = match &call.m.offer_body {
            Some((b, offer_dir)) => (b.clone(), Dir::answer(*offer_dir, info.dir)),
            None => (body.clone(), info.dir),
        };
        let transport = Transport {
            proto: &proto,
            crypto: &crypto,
            dir: Some(dir),
        };
        match rewrite_with(
            &template,
            self.cfg.media_ip,
            port,
            Formats::Exact(&exact),
            origin,
            transport,
        ) {
            Ok((b, _)) => {
                let b = Bytes::from(b);
                crate::session_timer::remember(call, to, &b);
                Some(b)
            }
            Err(e) => {
                warn!(error = %e, "answer cannot be passed on");
                None
            }
        }
    }

    /// Answers an offer from `side` ourselves (the plan answered A, or leg B offered in its
    /// 2xx after A was answered): the codec that avoids transcoding if there is one.
    pub(crate) fn local_answer(
        &mut self,
        call: &mut Call,
        side: Side,
        body: &Bytes,
    ) -> Option<Bytes> {
        if body.is_empty() || !self.cfg.anchor_media {
            return None;
        }
        let ports = self.alloc_media(call)?;
        let port = match side {
            Side::A => ports.a,
            Side::B => ports.b,
        };
        let info = audio(body).ok()?;
        if let Err(why) = call.m.srtp[idx(side)].take_offer(side, &info, &self.cfg.srtp_suites) {
            warn!(?side, %why, "offer refused");
            return None;
        }
        let (proto, crypto) = call.m.srtp[idx(side)].answer().ok()?;
        self.media_remote(call, side, &info);
        let offer: Vec<Format> = info
            .formats
            .iter()
            .filter(|f| self.allowed(f))
            .cloned()
            .collect();
        let other = call.m.fmt[idx(side.other())].clone();
        let mine = answer_for(&offer, other.as_deref(), call.m.fmt[idx(side)].as_deref())?;
        let te = telephone_event(&offer, mine.clock);
        self.set_leg_pub(call, side, &mine, te.as_ref(), info.ptime);
        call.m.pending = None;
        let origin = Self::origin_for(call, side);
        // We terminate this leg's media (prompts, a transcoded bridge): our encoder's format.
        let mine = switchboard_media::negotiate::as_sent_by_us(mine);
        let exact: Vec<Format> = std::iter::once(mine).chain(te).collect();
        rewrite_with(
            body,
            self.cfg.media_ip,
            port,
            Formats::Exact(&exact),
            origin,
            Transport {
                proto: &proto,
                crypto: &crypto,
                dir: Some(Dir::answer(info.dir, Dir::SENDRECV)),
            },
        )
        .ok()
        .map(|(b, _)| {
            let b = Bytes::from(b);
            crate::session_timer::remember(call, side, &b);
            b
        })
    }

    /// Our own offer to `side` (its INVITE had none: the offer goes in our 2xx and the
    /// answer comes in its ACK, RFC 3264 §5). The leg starts provisionally with our first
    /// codec, so a prompt can start; the answer settles it.
    pub(crate) fn local_offer(&mut self, call: &mut Call, side: Side) -> Option<Bytes> {
        if !self.cfg.anchor_media {
            return None;
        }
        let ports = self.alloc_media(call)?;
        let port = match side {
            Side::A => ports.a,
            Side::B => ports.b,
        };
        let formats = switchboard_media::negotiate::own_offer(&self.cfg.codecs);
        let first = chosen(&formats)?.clone();
        let template = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=ptime:20\r\na=sendrecv\r\n";
        let origin = Self::origin_for(call, side);
        let (proto, crypto) = match call.m.srtp[idx(side)].offer(&self.cfg.srtp_suites) {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "no SRTP keys for our offer");
                return None;
            }
        };
        let transport = Transport {
            proto: &proto,
            crypto: &crypto,
            dir: None,
        };
        let body = match rewrite_with(
            template.as_bytes(),
            self.cfg.media_ip,
            port,
            Formats::Exact(&formats),
            origin,
            transport,
        ) {
            Ok((b, _)) => Bytes::from(b),
            Err(e) => {
                warn!(error = %e, "no offer of our own can be written");
                return None;
            }
        };
        let te = telephone_event(&formats, first.clock);
        self.set_leg_pub(call, side, &first, te.as_ref(), Some(20));
        call.m.local_offer = Some(Box::new((side, formats)));
        crate::session_timer::remember(call, side, &body);
        Some(body)
    }

    /// The answer (in an ACK) to [`Engine::local_offer`]: the leg's address and codec.
    pub(crate) fn local_offer_answered(&mut self, call: &mut Call, side: Side, body: &Bytes) {
        let Some((to, offer)) = call.m.local_offer.take().map(|b| *b) else {
            return;
        };
        if to != side {
            call.m.local_offer = Some(Box::new((to, offer)));
            return;
        }
        let info = match audio(body) {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, ?side, "unusable answer to our offer: the leg keeps no media");
                return;
            }
        };
        if let Err(why) = call.m.srtp[idx(side)].take_answer(&info) {
            warn!(?side, %why, "answer to our offer refused: the leg keeps no media");
            return;
        }
        self.media_remote(call, side, &info);
        let Some(theirs) = chosen(&info.formats)
            .filter(|t| offer.iter().any(|o| o.same_codec(t)))
            .cloned()
        else {
            warn!(?side, "the answer to our offer names none of its codecs");
            return;
        };
        let te = telephone_event(&info.formats, theirs.clock);
        self.set_leg_pub(call, side, &theirs, te.as_ref(), info.ptime);
    }

    /// Tells the media engine where a leg's SDP says it receives, and who may send for it.
    fn media_remote(&mut self, call: &Call, side: Side, info: &switchboard_media::MediaInfo) {
        self.outputs.push_back(Output::MediaRemote {
            call: call.id,
            side,
            addr: info.rtp,
            signalling: signalling_ip(call, side),
            sends: info.sends,
        });
    }

    fn allowed(&self, f: &Format) -> bool {
        self.cfg.codecs.is_empty()
            || self
                .cfg
                .codecs
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&f.name))
    }

    pub(crate) fn set_leg_pub(
        &mut self,
        call: &mut Call,
        side: Side,
        fmt: &Format,
        te: Option<&Format>,
        ptime: Option<u32>,
    ) {
        let configured = call.m.dtmf[idx(side)].unwrap_or(self.cfg.dtmf);
        let dtmf = match configured {
            DtmfMethod::Rfc4733 if te.is_none() => DtmfMethod::Inband,
            m => m,
        };
        let media = LegMedia {
            codec: CodecKind::of(&fmt.name, fmt.clock),
            pt: fmt.pt,
            ptime_ms: ptime.unwrap_or(20).clamp(10, 120),
            te: te.map(|t| (t.pt, t.clock)),
            dtmf,
            // A gated leg's digits wait for the engine's decision (crate::apps).
            suppress: if call.gated(side) {
                crate::apps::ALL_DIGITS.into()
            } else {
                String::new()
            },
            // ...and, when they come as tones, its audio waits long enough for a tone to be
            // recognised and cut out from its start.
            inband_delay_ms: if call.gated(side) && dtmf == DtmfMethod::Inband {
                self.cfg.inband_delay_ms
            } else {
                0
            },
            srtp: call.m.srtp[idx(side)].keys.as_deref().cloned(),
        };
        call.m.fmt[idx(side)] = Some(Box::new(fmt.clone()));
        if call.m.legs[idx(side)].as_deref() != Some(&media) {
            debug!(?side, codec = %fmt.name, pt = fmt.pt, dtmf = %dtmf, "leg media");
            call.m.legs[idx(side)] = Some(Box::new(media.clone()));
            self.outputs.push_back(Output::MediaLeg {
                call: call.id,
                side,
                media,
            });
        }
    }

    /// A SIP INFO carrying a digit: answered here and passed through the leg's decision
    /// point (then converted for the other leg), unless the leg has no apps and the other
    /// leg takes INFO too, in which case it is relayed as it came. The digit when handled here.
    pub(crate) fn info_digit(
        &mut self,
        now: Instant,
        call: &mut Call,
        from: Side,
        req: &Request,
        txn: switchboard_sip::transaction::TxnId,
    ) -> Option<char> {
        let ct = req
            .headers
            .get(&Name::ContentType)
            .map(|c| c.to_string())
            .unwrap_or_default();
        let (digit, ms) = switchboard_media::dtmf::parse_info(&ct, &req.body)?;
        if from == Side::A && call.take_late_terminator(now, digit) {
            self.respond(now, txn, 200, None);
            return Some(digit);
        }
        let to_mode = call.m.legs[idx(from.other())].as_ref().map(|l| l.dtmf);
        let d = Digit {
            digit,
            duration_ms: ms,
            method: DtmfMethod::Info,
        };
        if !call.gated(from) && to_mode == Some(DtmfMethod::Info) {
            self.digit_decision(now, call, from, d);
            return None;
        }
        self.respond(now, txn, 200, None);
        if self.digit_decision(now, call, from, d.clone()) {
            self.forward_digit(now, call, from, &d);
        }
        Some(digit)
    }

    /// Something the media engine noticed on a call.
    pub fn handle_media_event(&mut self, now: Instant, call_ref: CallRef, ev: MediaEvent) {
        let _span = self.enter(call_ref);
        match ev {
            MediaEvent::Digit(d) => {
                let Some(mut call) = self.calls.remove(&call_ref) else {
                    return;
                };
                let digit = Digit {
                    digit: d.digit,
                    duration_ms: d.duration_ms,
                    method: d.method,
                };
                let forward = self.digit_decision(now, &mut call, d.leg, digit.clone());
                let gated = call.gated(d.leg);
                self.calls.insert(call_ref, call);
                if self.collect_digit(now, call_ref, d.leg, d.digit) {
                    return;
                }
                let Some(mut call) = self.calls.remove(&call_ref) else {
                    return;
                };
                let to = d.leg.other();
                let info_leg = call.m.legs[idx(to)]
                    .as_ref()
                    .is_some_and(|l| l.dtmf == DtmfMethod::Info);
                if gated && forward {
                    // The media session kept it back: the decision sends it on.
                    self.forward_digit(now, &mut call, d.leg, &digit);
                } else if !gated && info_leg {
                    // The session regenerates digits in RTP; INFO is ours to send.
                    self.send_info_digit(now, &mut call, to, d.digit, d.duration_ms);
                }
                self.calls.insert(call_ref, call);
            }
            MediaEvent::Timeout(side) => {
                if self.calls.contains_key(&call_ref) {
                    info!(?side, "no RTP: media timeout");
                    self.teardown(now, call_ref, Cause::MediaTimeout, None);
                }
            }
            MediaEvent::PlayDone(side, id) => {
                debug!(?side, id, "played");
                self.play_done(now, call_ref, id);
            }
        }
    }

    pub(crate) fn send_info_digit(
        &mut self,
        now: Instant,
        call: &mut Call,
        to: Side,
        digit: char,
        ms: u32,
    ) {
        let body = switchboard_media::dtmf::info_body(digit, ms.clamp(40, 5000));
        self.send_info(
            now,
            call,
            to,
            "application/dtmf-relay",
            Bytes::from(body),
            ClientRole::Info,
        );
    }
}

/// Where a leg's signalling comes from: leg A's INVITE; leg B's answer (or, before one, the
/// attempt in progress). None for an in-process leg (its media is on loopback, named by its
/// SDP).
fn signalling_ip(call: &Call, side: Side) -> Option<std::net::IpAddr> {
    let peer = match side {
        Side::A => Some(call.a.peer),
        Side::B => call
            .b_peer
            .or_else(|| call.attempts.iter().rev().find(|a| !a.done).map(|a| a.peer)),
    }?;
    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; their RTP arrives as IPv4.
    (peer.transport != switchboard_sip::transaction::Transport::Local)
        .then(|| peer.addr.ip().to_canonical())
}
