//! Dialplan actions that use the media engine: `playback`, `tone`, `ringback` and
//! `read_digits` (an IVR menu whose digits are routed as a new destination).

use std::time::Instant;

use bytes::Bytes;
use switchboard_dialplan::{Action, ReadDigits};
use switchboard_media::negotiate::{answer_for, telephone_event};
use switchboard_media::{Format, Formats, Side, Transport, audio, rewrite_with};
use switchboard_sip::Name;
use switchboard_sip::transaction::make_response;
use tracing::{debug, info};

use crate::call::Call;
use crate::engine::{CallTimer, Engine, Output};
use crate::ids::CallRef;

/// Something to play to a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Play {
    /// A prompt by name (from the sounds directory).
    Prompt(String),
    /// A tone (preset or `%(...)`), for `ms` milliseconds (None: until stopped).
    Tone {
        /// The tone as written in the dialplan (checked at load).
        spec: String,
        /// How long.
        ms: Option<u32>,
    },
    /// The leg's own audio, back to it (an echo test), for `ms` milliseconds.
    Echo {
        /// How long.
        ms: Option<u32>,
    },
}

/// What a call's plan is waiting for.
#[derive(Debug)]
pub(crate) enum Wait {
    /// A prompt or tone to finish.
    Play(u32),
    /// Digits for `read_digits`.
    Digits {
        spec: ReadDigits,
        got: String,
        /// The prompt still playing, if any.
        prompt: Option<u32>,
        /// Bumped at every digit: older timers are stale.
        generation: u32,
    },
}

impl Engine {
    fn play(&mut self, call: &mut Call, side: Side, what: Play) -> u32 {
        let id = call.next_play;
        call.next_play += 1;
        self.outputs.push_back(Output::MediaPlay {
            call: call.id,
            side,
            what,
            id,
        });
        id
    }

    /// Starts `playback`, `tone` or `read_digits`. `true` when the plan must wait.
    pub(crate) fn start_media_action(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        action: Action,
    ) -> bool {
        self.answer_a(now, call_ref);
        let Some(mut call) = self.calls.remove(&call_ref) else {
            return true;
        };
        if call.m.legs[0].is_none() {
            // A has no media (no SDP): nothing can be played or heard.
            debug!("caller has no media: {action:?} skipped");
            self.calls.insert(call_ref, call);
            return false;
        }
        let wait = match action {
            Action::Playback(name) => {
                info!(prompt = %name, "playback");
                Wait::Play(self.play(&mut call, Side::A, Play::Prompt(name)))
            }
            Action::Echo(duration) => {
                info!(secs = duration.as_secs(), "echo");
                let ms = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
                Wait::Play(self.play(&mut call, Side::A, Play::Echo { ms: Some(ms) }))
            }
            Action::Tone { spec, duration } => {
                let ms = u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
                Wait::Play(self.play(&mut call, Side::A, Play::Tone { spec, ms: Some(ms) }))
            }
            Action::ReadDigits(spec) => {
                let prompt = spec
                    .prompt
                    .clone()
                    .map(|p| self.play(&mut call, Side::A, Play::Prompt(p)));
                if prompt.is_none() {
                    self.schedule(now + spec.timeout, call_ref, CallTimer::Digits(0));
                }
                Wait::Digits {
                    spec,
                    got: String::new(),
                    prompt,
                    generation: 0,
                }
            }
            _ => {
                self.calls.insert(call_ref, call);
                return false;
            }
        };
        call.wait = Some(Box::new(wait));
        self.calls.insert(call_ref, call);
        true
    }

    /// The media engine finished playing `id`.
    pub(crate) fn play_done(&mut self, now: Instant, call_ref: CallRef, id: u32) {
        let Some(call) = self.calls.get_mut(&call_ref) else {
            return;
        };
        match call.wait.as_deref_mut() {
            Some(Wait::Play(p)) if *p == id => {
                call.wait = None;
                self.run_plan(now, call_ref);
            }
            Some(Wait::Digits {
                prompt,
                generation,
                spec,
                ..
            }) if *prompt == Some(id) => {
                *prompt = None;
                let at = now + spec.timeout;
                let g = *generation;
                self.schedule(at, call_ref, CallTimer::Digits(g));
            }
            _ => {}
        }
    }

    /// A digit from leg A while the plan collects digits. `true` when it was taken.
    pub(crate) fn collect_digit(
        &mut self,
        now: Instant,
        call_ref: CallRef,
        side: Side,
        digit: char,
    ) -> bool {
        let Some(call) = self.calls.get_mut(&call_ref) else {
            return false;
        };
        if side == Side::A && call.take_late_terminator(now, digit) {
            return true;
        }
        let Some(Wait::Digits {
            spec,
            got,
            prompt,
            generation,
        }) = call.wait.as_deref_mut()
        else {
            return false;
        };
        if side != Side::A {
            return false;
        }
        if prompt.take().is_some() {
            // Barge-in: the caller knows what to press.
            self.outputs.push_back(Output::MediaStop {
                call: call_ref,
                side: Side::A,
            });
        }
        let done = if spec.terminators.contains(digit) {
            true
        } else {
            got.push(digit);
            let full = got.len() >= spec.max;
            if full && !spec.terminators.is_empty() {
                call.late_terminator =
                    Some(Box::new((spec.terminators.clone(), now + spec.timeout)));
            }
            full
        };
        *generation += 1;
        if done {
            self.digits_done(now, call_ref);
        } else {
            let (at, g) = (now + spec.timeout, *generation);
            self.schedule(at, call_ref, CallTimer::Digits(g));
        }
        true
    }

    pub(crate) fn digits_timeout(&mut self, now: Instant, call_ref: CallRef, generation: u32) {
        let current = self
            .calls
            .get(&call_ref)
            .and_then(|c| match c.wait.as_deref() {
                Some(Wait::Digits {
                    generation: g,
                    prompt: None,
                    ..
                }) => Some(*g),
                _ => None,
            });
        if current == Some(generation) {
            self.digits_done(now, call_ref);
        }
    }

    /// Collection ended: route the digits, or go on with the plan when there are too few.
    fn digits_done(&mut self, now: Instant, call_ref: CallRef) {
        let Some(call) = self.calls.get_mut(&call_ref) else {
            return;
        };
        let Some(Wait::Digits { spec, got, .. }) = call.wait.take().map(|w| *w) else {
            return;
        };
        if got.len() < spec.min {
            info!(digits = %got, "read_digits: too few digits, the plan goes on");
            return self.run_plan(now, call_ref);
        }
        let Some(mut facts) = call.facts.take() else {
            return self.run_plan(now, call_ref);
        };
        facts.destination = got.clone();
        if let Some(ctx) = &spec.context {
            facts.context = ctx.clone();
        }
        let plan = self.dialplan.evaluate(&facts);
        info!(digits = %got, context = %facts.context, matched = ?plan.matched, "read_digits: routing the digits");
        for line in &plan.trace {
            debug!("dialplan: {line}");
        }
        let again = plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::ReadDigits(_)));
        call.destination = got;
        call.plan = switchboard_dialplan::RoutePlan {
            actions: plan.actions,
            ..Default::default()
        };
        call.plan_cursor = 0;
        call.facts = again.then_some(facts);
        self.run_plan(now, call_ref);
    }

    /// Leg B rings without early media and the plan asked for a ringback tone: answer A's
    /// offer in a 183 (early media) and play the tone. `true` when started (the 180 is not
    /// relayed: A hears the tone instead).
    pub(crate) fn start_ringback(&mut self, now: Instant, call: &mut Call) -> bool {
        let Some((spec, started)) = call.ringback.clone() else {
            return false;
        };
        if started {
            return true;
        }
        if !call.a.finalized {
            let Some(body) = self.early_answer_a(call) else {
                return false;
            };
            let mut out = make_response(&call.a.invite, 183, Some(&call.a.tag));
            out.headers
                .push(Name::Contact, self.contact(call.a.peer.transport));
            out.headers.push(Name::ContentType, "application/sdp");
            out.body = body;
            self.decorate(&mut out);
            self.txn.respond(now, call.a.invite_txn, out);
        } else if call.m.legs[0].is_none() {
            return false;
        }
        info!(tone = %spec, "ringback to the caller");
        let id = self.play(
            call,
            Side::A,
            Play::Tone {
                spec: spec.clone(),
                ms: None,
            },
        );
        call.ringback = Some((spec, true));
        let _ = id;
        true
    }

    pub(crate) fn stop_ringback(&mut self, call: &mut Call) {
        if let Some((spec, true)) = call.ringback.take() {
            self.outputs.push_back(Output::MediaStop {
                call: call.id,
                side: Side::A,
            });
            call.ringback = Some((spec, false));
        }
    }

    /// Our own answer to A's offer while its offer is still out to leg B: later answers to A
    /// repeat this codec (B's is transcoded if it differs).
    fn early_answer_a(&mut self, call: &mut Call) -> Option<Bytes> {
        let offer_body = call.m.a_offer.clone()?;
        let ports = self.alloc_media(call)?;
        let info = audio(&offer_body).ok()?;
        if call.m.srtp[0].offered_proto.is_none()
            && let Err(why) = call.m.srtp[0].take_offer(Side::A, &info, &self.cfg.srtp_suites)
        {
            tracing::warn!(%why, "offer refused");
            return None;
        }
        let (proto, crypto) = call.m.srtp[0].answer().ok()?;
        let offer: Vec<Format> = match call.m.pending.as_deref() {
            Some((Side::A, f, _)) => f.clone(),
            _ => info.formats.clone(),
        };
        let mine = call
            .m
            .answered
            .as_deref()
            .cloned()
            .or_else(|| answer_for(&offer, None, None))?;
        let te = telephone_event(&offer, mine.clock);
        call.m.answered = Some(Box::new(mine.clone()));
        self.set_leg_pub(call, Side::A, &mine, te.as_ref(), info.ptime);
        call.a.sdp_version += 1;
        let exact: Vec<Format> = std::iter::once(mine).chain(te).collect();
        rewrite_with(
            &offer_body,
            self.cfg.media_ip,
            ports.a,
            Formats::Exact(&exact),
            (call.id.0, call.a.sdp_version),
            Transport {
                proto: &proto,
                crypto: &crypto,
                dir: Some(switchboard_media::sdp::Dir::answer(
                    info.dir,
                    switchboard_media::sdp::Dir::SENDRECV,
                )),
            },
        )
        .ok()
        .map(|(b, _)| {
            let b = Bytes::from(b);
            crate::session_timer::remember(call, Side::A, &b);
            b
        })
    }
}
