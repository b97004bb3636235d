//! # switchboard-agent
//!
//! Agents who answer in the browser, and the calls their phones bind to their consoles
//! (SPEC §2–3, §7; docs/console.md). The module adds to the dialplan:
//!
//! - bridge targets `agent/ID` (that agent's available consoles ring) and `queue/NAME` (the
//!   consoles of the queue's available agents: all at once, or the one idle longest); each
//!   console is reached on the in-process `Local` transport, where the shell's console leg
//!   answers when the agent does. Nobody available is a failed target
//!   ([`AttemptError::Unavailable`](switchboard_core::module::AttemptError)): the plan goes on.
//! - the action `agent_channel` (a leg app on the call center's leg): `**` + a console's
//!   channel code + `#` keyed on the agent's phone binds the call to that console.
//!
//! Who is logged in is the [`Desk`], shared with the shell (log-ins, status, binding by
//! caller ID); the module's observer keeps the desk's list of calls in progress. Passwords are
//! argon2id ([`password`]); login attempts are braked by [`LoginLimiter`].

pub mod assets;
mod channel;
mod desk;
mod limit;
pub mod password;

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::module::{
    ActionCtx, ActionHandler, AttemptError, CallObserver, Declarations, Endpoint, OriginateCtx,
    Route, Stamped, TargetRef,
};
use switchboard_core::{CallEvent, Module};
use switchboard_dialplan::{
    ActionCheck, ActionSpec, EndpointSpec, ModuleAction, ParamKind, ParamSpec,
};
use switchboard_sip::transaction::{Peer, Transport};

pub use channel::{ChannelApp, ChannelKeys, TONE_FAILED, TONE_OK};
pub use desk::{
    AgentInfo, BindError, ConsoleId, Desk, LiveCall, Note, Notify, Queue, RingStrategy, Role,
    SharedDesk, Status, Via, lock,
};
pub use limit::LoginLimiter;

/// The target kind of one agent (`agent/alice`).
pub const AGENT_KIND: &str = "agent";
/// The target kind of a queue (`queue/sales`).
pub const QUEUE_KIND: &str = "queue";
/// The dialplan action binding channel codes.
pub const ACTION: &str = "agent_channel";
/// The Request-URI parameter naming the call a console's INVITE belongs to (only the
/// switch itself reaches a console: the Local transport).
pub const CALL_PARAM: &str = "sb-call";

/// The module.
#[derive(Debug)]
pub struct Agents {
    desk: SharedDesk,
    observer: bool,
}

impl Agents {
    /// The module over the shell's desk.
    pub fn new(desk: SharedDesk) -> Agents {
        Agents {
            desk,
            observer: true,
        }
    }
}

impl Module for Agents {
    fn name(&self) -> &'static str {
        "agent"
    }

    fn declare(&self) -> Declarations {
        let queues = lock(&self.desk).queue_names();
        Declarations {
            endpoints: vec![
                EndpointSpec {
                    kind: AGENT_KIND.into(),
                    names: None,
                    none_hint: "add agents with `switchboard agent add`".into(),
                },
                EndpointSpec {
                    kind: QUEUE_KIND.into(),
                    names: Some(queues),
                    none_hint: "define a queue under [queue.NAME] in switchboard.toml".into(),
                },
            ],
            actions: vec![ActionSpec {
                name: ACTION.into(),
                params: vec![
                    ParamSpec { name: "prefix".into(), kind: ParamKind::Text, required: false },
                    ParamSpec { name: "end".into(), kind: ParamKind::Text, required: false },
                    ParamSpec {
                        name: "max_wrong".into(),
                        kind: ParamKind::Integer { min: 1, max: 10 },
                        required: false,
                    },
                    ParamSpec {
                        name: "interdigit_ms".into(),
                        kind: ParamKind::Integer { min: 500, max: 10_000 },
                        required: false,
                    },
                    ParamSpec { name: "leg".into(), kind: ParamKind::Text, required: false },
                ],
                help: "the agent keys prefix + their console's channel code + end on the phone (`**4711#`): the call is bound to that console".into(),
                check: Some(ActionCheck::new(|a| parse(a).map(|_| ()))),
            }],
            ..Declarations::default()
        }
    }

    fn endpoint(&mut self) -> Option<&mut dyn Endpoint> {
        Some(self)
    }

    fn actions(&mut self) -> Option<&mut dyn ActionHandler> {
        Some(self)
    }

    fn take_observer(&mut self) -> Option<Box<dyn CallObserver>> {
        std::mem::take(&mut self.observer).then(|| {
            Box::new(DeskObserver {
                desk: self.desk.clone(),
            }) as Box<dyn CallObserver>
        })
    }

    fn metrics(&self, _now: Instant, out: &mut String) {
        out.push_str("# HELP switchboard_agent_consoles Agent consoles connected.\n# TYPE switchboard_agent_consoles gauge\n");
        out.push_str(&format!(
            "switchboard_agent_consoles {}\n",
            lock(&self.desk).consoles()
        ));
    }
}

impl Endpoint for Agents {
    fn expand(
        &mut self,
        now: Instant,
        target: TargetRef<'_>,
        ctx: &OriginateCtx<'_>,
    ) -> Option<Result<Vec<switchboard_dialplan::Target>, AttemptError>> {
        let found =
            lock(&self.desk).expand(now, Some(ctx.call), target.kind, target.name, target.user)?;
        Some(found.map(|consoles| {
            consoles
                .into_iter()
                .map(|(name, user)| switchboard_dialplan::Target::Endpoint {
                    kind: AGENT_KIND.into(),
                    name,
                    user,
                })
                .collect()
        }))
    }

    fn resolve(
        &mut self,
        _now: Instant,
        target: TargetRef<'_>,
        ctx: &OriginateCtx<'_>,
    ) -> Result<Route, AttemptError> {
        let addr = lock(&self.desk).console_addr(target.name, target.user)?;
        Ok(Route {
            peer: Peer {
                transport: Transport::Local,
                addr,
            },
            request_uri: format!(
                "sip:{}@console.invalid;{CALL_PARAM}={}",
                switchboard_core::escape_user(target.name),
                ctx.call
            ),
            caller: ctx.caller.clone(),
            dtmf: None,
            srtp: Default::default(),
        })
    }
}

impl ActionHandler for Agents {
    fn run(
        &mut self,
        _now: Instant,
        action: &ModuleAction,
        ctx: &mut ActionCtx,
    ) -> Result<(), String> {
        let keys = parse(action)?;
        let watch = keys.watch;
        ctx.attach(
            watch,
            Box::new(ChannelApp::new(Arc::new(keys), self.desk.clone(), ctx.call)),
        );
        Ok(())
    }
}

/// An `agent_channel` action's keys; `Err` in words.
fn parse(action: &ModuleAction) -> Result<ChannelKeys, String> {
    let dtmf = |c: char| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D');
    let prefix = action.get("prefix").unwrap_or("**").to_owned();
    if prefix.is_empty() || prefix.chars().count() > 4 || !prefix.chars().all(dtmf) {
        return Err(format!(
            "prefix must be 1 to 4 DTMF keys (0-9 * # A-D), got {prefix:?}"
        ));
    }
    let end = action.get("end").unwrap_or("#");
    let mut chars = end.chars();
    let (Some(end), None) = (chars.next(), chars.next()) else {
        return Err(format!("end must be one key, got {end:?}"));
    };
    if end.is_ascii_digit() || !dtmf(end) {
        return Err(format!(
            "end must be one of * # A-D (a digit would be part of the code), got {end:?}"
        ));
    }
    let num = |name: &str, default: u64| -> Result<u64, String> {
        action
            .get(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{name} must be a number, got {v:?}"))
            })
            .unwrap_or(Ok(default))
    };
    let max_wrong = num("max_wrong", 3)? as u32;
    let interdigit = Duration::from_millis(num("interdigit_ms", 3000)?);
    let watch = switchboard_core::module::leg_param(action)?;
    Ok(ChannelKeys {
        prefix,
        end,
        max_wrong,
        interdigit,
        watch,
    })
}

/// Keeps the desk's list of calls in progress (and the caller IDs they leased).
#[derive(Debug)]
struct DeskObserver {
    desk: SharedDesk,
}

impl CallObserver for DeskObserver {
    fn name(&self) -> &'static str {
        "agent-desk"
    }

    fn interest(&self) -> fn(&CallEvent) -> bool {
        |e| {
            matches!(
                e,
                CallEvent::Started { .. } | CallEvent::Leased { .. } | CallEvent::Ended(_)
            )
        }
    }

    // A short lock on the desk, as the endpoint takes on the same thread: inline, so a call's
    // facts are on the desk before its first console rings.
    fn inline(&self) -> bool {
        true
    }

    fn on_event(&mut self, e: &Stamped) {
        let mut desk = lock(&self.desk);
        match &e.event {
            CallEvent::Started {
                call,
                call_id,
                facts,
                ..
            } => desk.started(
                *call,
                call_id.clone(),
                e.at_ms,
                facts.get("merchant").cloned().unwrap_or_default(),
            ),
            CallEvent::Leased { call, item, .. } => desk.leased(*call, item),
            CallEvent::Ended(s) => desk.ended(s.id),
            _ => {}
        }
    }
}
#[cfg(test)]
mod tests;
