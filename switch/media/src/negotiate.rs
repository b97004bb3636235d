//! Offer/answer for a B2BUA that can transcode (RFC 3264): each leg gets the best codec it
//! offered or accepted, and the media engine converts between them when they differ.

use crate::codec::CodecKind;
use crate::sdp::Format;

/// A configured codec name at its RTP clock (Opus at 48000, the others at 8000).
fn kind_of(name: &str) -> Option<CodecKind> {
    let clock = if name.eq_ignore_ascii_case("opus") {
        48000
    } else {
        8000
    };
    CodecKind::from_name(name, clock)
}

/// The first free dynamic payload type (96–127), taken from `used`.
fn free_dynamic(used: &mut Vec<u8>) -> Option<u8> {
    let pt = (96..128).find(|p| !used.contains(p))?;
    used.push(pt);
    Some(pt)
}

/// `kind` as a format of ours: its static payload type if free, else the first free
/// dynamic one (96–127); taken from `used`.
fn format_of(kind: CodecKind, used: &mut Vec<u8>) -> Option<Format> {
    let pt = match kind.static_pt() {
        Some(p) if !used.contains(&p) => {
            used.push(p);
            p
        }
        _ => free_dynamic(used)?,
    };
    let mut f = Format::new(pt, kind.name(), kind.clock(), kind.fmtp());
    f.channels = kind.channels();
    Some(f)
}

/// Formats we add to an offer going to the other leg: the transcodable codecs of `prefs`
/// (config order) the offer lacks, when the offer has at least one codec we can transcode
/// from, and telephone-event/8000 when the offer has none and `prefs` allows it. Payload types
/// are the static ones where free, else the first free dynamic ones (96–127).
pub fn offer_extras(theirs: &[Format], prefs: &[String]) -> Vec<Format> {
    let mut used: Vec<u8> = theirs.iter().map(|f| f.pt).collect();
    let can_transcode = theirs
        .iter()
        .any(|f| !f.is_telephone_event() && CodecKind::of(&f.name, f.clock).transcodable());
    let mut extra = Vec::new();
    for name in prefs {
        if name.eq_ignore_ascii_case("telephone-event") {
            continue;
        }
        let Some(kind) = kind_of(name) else {
            continue;
        };
        if !can_transcode
            || theirs
                .iter()
                .any(|f| CodecKind::of(&f.name, f.clock) == kind)
        {
            continue;
        }
        if let Some(f) = format_of(kind, &mut used) {
            extra.push(f);
        }
    }
    let te_allowed = prefs.is_empty()
        || prefs
            .iter()
            .any(|p| p.eq_ignore_ascii_case("telephone-event"));
    // Digits need a telephone-event at the clock of the codec the far end picks: a browser
    // offers only telephone-event/48000 (Opus), so an 8 kHz answer needs an 8000 one too.
    let has_te = theirs.iter().any(Format::is_telephone_event);
    let has_te8k = theirs
        .iter()
        .any(|f| f.is_telephone_event() && f.clock == 8000);
    let narrow = extra
        .iter()
        .chain(theirs)
        .any(|f| !f.is_telephone_event() && f.clock == 8000);
    if te_allowed
        && !has_te8k
        && (!has_te || narrow)
        && let Some(pt) = free_dynamic(&mut used)
    {
        extra.push(Format::new(pt, "telephone-event", 8000, Some("0-16")));
    }
    // ... and one at 48000 when Opus is offered: an answerer that picks Opus wants its
    // digits at Opus's clock (liblinphone answers without telephone-event otherwise, and
    // the leg falls back to in-band tones).
    let has_te48k = theirs
        .iter()
        .any(|f| f.is_telephone_event() && f.clock == 48000);
    let wide = extra
        .iter()
        .chain(theirs)
        .any(|f| !f.is_telephone_event() && f.clock == 48000);
    if te_allowed
        && wide
        && !has_te48k
        && let Some(pt) = free_dynamic(&mut used)
    {
        extra.push(Format::new(pt, "telephone-event", 48000, Some("0-16")));
    }
    extra
}

/// Our own offer (to a caller that sent none: RFC 3264 wants one in our 2xx): the codecs of
/// `prefs` we can transcode, in config order, at their static payload types or the first
/// free dynamic ones, then telephone-event at 8000 and, with Opus, at 48000.
pub fn own_offer(prefs: &[String]) -> Vec<Format> {
    let defaults = ["PCMU", "PCMA", "telephone-event"].map(String::from);
    let prefs = if prefs.is_empty() {
        &defaults[..]
    } else {
        prefs
    };
    let mut used = Vec::new();
    let mut out = Vec::new();
    for name in prefs {
        if let Some(f) = kind_of(name)
            .filter(|k| k.transcodable())
            .and_then(|k| format_of(k, &mut used))
        {
            out.push(f);
        }
    }
    let te = prefs
        .iter()
        .any(|p| p.eq_ignore_ascii_case("telephone-event"));
    if te {
        let clocks: Vec<u32> = out.iter().map(|f| f.clock).collect();
        for clock in [8000, 48000] {
            if (clock == 8000 || clocks.contains(&clock))
                && let Some(pt) = free_dynamic(&mut used)
            {
                out.push(Format::new(pt, "telephone-event", clock, Some("0-16")));
            }
        }
    }
    out
}

/// `f` as the switch's own encoder sends it: Opus is mono here, so the offerer's
/// `stereo`/`sprop-stereo` are not echoed (RFC 7587 §7.1: they describe the sender's
/// stream and what it would like to receive).
pub fn as_sent_by_us(mut f: Format) -> Format {
    if f.name.eq_ignore_ascii_case("opus")
        && let Some(p) = &f.fmtp
    {
        let kept: Vec<&str> = p
            .split(';')
            .map(str::trim)
            .filter(|kv| {
                let k = kv.split('=').next().unwrap_or("").trim();
                !k.eq_ignore_ascii_case("stereo") && !k.eq_ignore_ascii_case("sprop-stereo")
            })
            .collect();
        f.fmtp = (!kept.is_empty()).then(|| kept.join(";"));
    }
    f
}

/// The answerer's codec: the first format of its answer that is not telephone-event.
pub fn chosen(answer: &[Format]) -> Option<&Format> {
    answer.iter().find(|f| !f.is_telephone_event())
}

/// The codec to answer an offer with: the codec the other leg uses if offered (no
/// transcoding), else `keep` (what the leg already uses, after a re-INVITE) if offered, else
/// the first offered codec we can transcode; `None` when nothing fits.
pub fn answer_for(
    offer: &[Format],
    other: Option<&Format>,
    keep: Option<&Format>,
) -> Option<Format> {
    let audio = || offer.iter().filter(|f| !f.is_telephone_event());
    if let Some(o) = other
        && let Some(f) = audio().find(|f| f.same_codec(o))
    {
        return Some(f.clone());
    }
    if let Some(k) = keep
        && let Some(f) = audio().find(|f| f.same_codec(k))
    {
        return Some(f.clone());
    }
    audio()
        .find(|f| CodecKind::of(&f.name, f.clock).transcodable())
        .cloned()
}

/// The offer's telephone-event at `clock` (or any, if none at that clock).
pub fn telephone_event(offer: &[Format], clock: u32) -> Option<Format> {
    let te = || offer.iter().filter(|f| f.is_telephone_event());
    te().find(|f| f.clock == clock)
        .or_else(|| te().next())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pt: u8, name: &str) -> Format {
        Format::new(pt, name, 8000, None)
    }

    fn prefs(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn extras_add_transcodable_codecs_and_telephone_event() {
        let ex = offer_extras(
            &[f(8, "PCMA")],
            &prefs(&["PCMU", "PCMA", "telephone-event"]),
        );
        assert_eq!(
            ex,
            vec![
                f(0, "PCMU"),
                Format::new(96, "telephone-event", 8000, Some("0-16"))
            ]
        );
        // Nothing we can transcode from: offer as is.
        let ex = offer_extras(
            &[f(98, "X-SECRET"), f(101, "telephone-event")],
            &prefs(&["PCMU"]),
        );
        assert!(ex.is_empty());
        // PT 0 taken by something else: a dynamic one.
        let ex = offer_extras(
            &[f(8, "PCMA"), Format::new(0, "X-ODD", 8000, None)],
            &prefs(&["PCMU"]),
        );
        assert_eq!(ex, vec![f(96, "PCMU")]);
    }

    #[cfg(feature = "opus")]
    #[test]
    fn a_g711_offer_gains_opus_for_a_browser_and_an_opus_offer_gains_g711() {
        let ex = offer_extras(&[f(0, "PCMU")], &prefs(&["opus", "PCMU", "PCMA"]));
        let opus = &ex[0];
        assert_eq!(
            (opus.name.as_str(), opus.clock, opus.channels, opus.pt),
            ("opus", 48000, Some(2), 96)
        );
        assert!(
            opus.fmtp
                .as_deref()
                .is_some_and(|p| p.contains("useinbandfec=1"))
        );
        let mut browser = Format::new(111, "opus", 48000, Some("minptime=10;useinbandfec=1"));
        browser.channels = Some(2);
        let ex = offer_extras(
            &[browser, f(126, "telephone-event")],
            &prefs(&["PCMU", "PCMA", "opus"]),
        );
        assert_eq!(ex, vec![f(0, "PCMU"), f(8, "PCMA")]);
        // With events allowed, an offer that carries Opus carries them at its clock too.
        let ex = offer_extras(
            &[f(0, "PCMU"), f(101, "telephone-event")],
            &prefs(&["opus", "PCMU", "telephone-event"]),
        );
        let names: Vec<(&str, u32)> = ex.iter().map(|f| (f.name.as_str(), f.clock)).collect();
        assert_eq!(names, [("opus", 48000), ("telephone-event", 48000)]);
    }

    #[test]
    fn answer_prefers_no_transcoding_then_the_current_codec() {
        let offer = [f(8, "PCMA"), f(0, "PCMU"), f(101, "telephone-event")];
        assert_eq!(
            answer_for(&offer, Some(&f(0, "PCMU")), None),
            Some(f(0, "PCMU"))
        );
        assert_eq!(
            answer_for(&offer, Some(&f(98, "X-SECRET")), None),
            Some(f(8, "PCMA"))
        );
        assert_eq!(
            answer_for(&offer, Some(&f(98, "X-SECRET")), Some(&f(0, "PCMU"))),
            Some(f(0, "PCMU"))
        );
        assert_eq!(answer_for(&[f(98, "X-SECRET")], None, None), None);
        assert_eq!(
            chosen(&[f(101, "telephone-event"), f(8, "PCMA")]),
            Some(&f(8, "PCMA"))
        );
        assert_eq!(telephone_event(&offer, 8000).map(|t| t.pt), Some(101));
    }

    #[test]
    fn our_own_offer_lists_the_configured_codecs_and_telephone_event_at_each_clock() {
        // G722 is forwarded, never encoded here: an offer of ours cannot carry it.
        let o = own_offer(&prefs(&["opus", "PCMU", "PCMA", "G722", "telephone-event"]));
        let names: Vec<(u8, &str, u32)> =
            o.iter().map(|f| (f.pt, f.name.as_str(), f.clock)).collect();
        assert_eq!(
            names,
            vec![
                (96, "opus", 48000),
                (0, "PCMU", 8000),
                (8, "PCMA", 8000),
                (97, "telephone-event", 8000),
                (98, "telephone-event", 48000),
            ]
        );
        let narrow = own_offer(&prefs(&["PCMA"]));
        assert_eq!(narrow.len(), 1, "no telephone-event unless configured");
        assert!(!own_offer(&[]).is_empty(), "no list: PCMU, PCMA and events");
    }

    #[test]
    fn what_we_encode_is_described_as_mono() {
        let mut opus = Format::new(
            111,
            "opus",
            48000,
            Some("minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1"),
        );
        opus.channels = Some(2);
        let ours = as_sent_by_us(opus);
        assert_eq!(ours.fmtp.as_deref(), Some("minptime=10;useinbandfec=1"));
        assert_eq!(
            ours.channels,
            Some(2),
            "opus/48000/2 is how Opus is always named"
        );
        let pcmu = as_sent_by_us(f(0, "PCMU"));
        assert_eq!(pcmu, f(0, "PCMU"));
    }
}
