//! # switchboard-dialplan
//!
//! The declarative dialplan: TOML files of extensions grouped in contexts.
//!
//! - [`compile`] reads every file and returns a [`Dialplan`] or *all* problems as
//!   `file:line:col: message` with a hint (unknown keys, bad regexes, unknown gateways,
//!   unknown time zones, unknown causes...).
//! - [`Dialplan::evaluate`] takes the facts of a call (destination, caller, headers,
//!   variables, the current time) and returns a [`RoutePlan`]: plain data listing what to do,
//!   with a human-readable trace of every decision. The live switch and the
//!   `switchboard route` dry run both call it: one code path.
//!
//! ## Semantics
//! Extensions of the call's context are tried in file order. An extension matches when all its
//! conditions match (`when`: regexes on destination, caller number/name, any header, any
//! variable, and a time window in a named time zone). A matching extension appends its actions
//! to the plan; `set` takes effect at once, so later extensions see the variable. Evaluation
//! stops after the first matching extension unless it says `continue = true`.
//! `$1`…`$9` in actions are the captures of the extension's first regex condition
//! (the destination when present); `${name}` is a named capture or a variable.

mod cause;
mod compile;
mod diag;
mod module;
mod schema;
mod template;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

pub use cause::Cause;
pub use compile::{CompileEnv, Source, compile};
pub use diag::{Diagnostic, Diagnostics};
pub use module::{ActionCheck, ActionSpec, EndpointSpec, ModuleAction, ParamKind, ParamSpec};
pub use template::Template;

/// A compiled, checked dialplan. Cheap to share behind an `Arc`; immutable.
#[derive(Debug, Default)]
pub struct Dialplan {
    contexts: HashMap<String, Vec<Extension>>,
}

#[derive(Debug)]
struct Extension {
    name: String,
    file: String,
    line: usize,
    cont: bool,
    conds: Vec<Cond>,
    time: Option<TimeCond>,
    actions: Vec<ActionTpl>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Destination,
    CallerNumber,
    CallerName,
    Header(String),
    Var(String),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Destination => f.write_str("destination"),
            Field::CallerNumber => f.write_str("caller_number"),
            Field::CallerName => f.write_str("caller_name"),
            Field::Header(h) => write!(f, "header {h}"),
            Field::Var(v) => write!(f, "var {v}"),
        }
    }
}

#[derive(Debug)]
struct Cond {
    field: Field,
    regex: Regex,
}

#[derive(Debug)]
struct TimeCond {
    tz: jiff::tz::TimeZone,
    days: u8,
    hours: Vec<(u16, u16)>,
}

#[derive(Debug)]
enum ActionTpl {
    Set(Vec<(String, Template)>),
    HeaderAdd(Vec<(String, Template)>),
    /// `User-to-User` (RFC 7433) from a template: (data, purpose, byte budget).
    Uui(Template, String, usize),
    HeaderRemove(Vec<String>),
    Answer,
    Hangup(Cause),
    Bridge {
        targets: Vec<TargetTpl>,
        strategy: Strategy,
        timeout: Duration,
    },
    Media(Action),
    Module {
        name: String,
        params: Vec<(String, Template)>,
        tables: BTreeMap<String, Arc<BTreeMap<String, String>>>,
    },
}

#[derive(Debug)]
enum TargetTpl {
    Endpoint {
        kind: String,
        name: String,
        user: Template,
    },
    Uri(Template),
}

/// How several bridge targets are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One after the other; the next on a retryable failure (failover).
    Sequence,
    /// All at once; the first to answer wins, the others are cancelled (ring all).
    Parallel,
}

/// Where a bridge goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A target a module's endpoint resolves: `KIND/NAME/USER` (`gateway/acd/2000`).
    Endpoint {
        /// The endpoint kind (`gateway`).
        kind: String,
        /// Which one of that kind (the gateway's name).
        name: String,
        /// Number or user to put in the Request-URI (empty: the dialled destination).
        user: String,
    },
    /// A SIP URI.
    Uri(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Endpoint { kind, name, user } => write!(f, "{kind}/{name}/{user}"),
            Target::Uri(u) => f.write_str(u),
        }
    }
}

/// A bridge step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Targets in order.
    pub targets: Vec<Target>,
    /// Sequence or parallel.
    pub strategy: Strategy,
    /// Ring timeout per attempt.
    pub timeout: Duration,
}

/// One step of a plan, fully expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Add a header to leg B's INVITE.
    HeaderAdd {
        /// Name.
        name: String,
        /// Value (control characters already removed).
        value: String,
    },
    /// Remove a header from leg B's INVITE.
    HeaderRemove(String),
    /// Answer leg A (200 OK) before anything else.
    Answer,
    /// Hang up leg A with this cause.
    Hangup(Cause),
    /// Originate leg B.
    Bridge(Bridge),
    /// Play a prompt (a name from the sounds directory) to the caller, answering first.
    Playback(String),
    /// Send the caller's own audio back to them for a while (an echo test), answering first.
    Echo(Duration),
    /// Play a tone (preset or `%(on,off,freq...)`) to the caller for a while, answering first.
    Tone {
        /// The tone, as written (checked at load).
        spec: String,
        /// How long.
        duration: Duration,
    },
    /// The tone the caller hears while a later bridge rings (instead of silence, when the
    /// callee sends no early media).
    Ringback(String),
    /// Play a prompt and collect digits; with enough digits, route them as a new destination.
    ReadDigits(ReadDigits),
    /// An action a module contributed (run by that module when the call reaches it).
    Module(ModuleAction),
}

/// `read_digits`: an IVR menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadDigits {
    /// Prompt played first (barge-in: a digit stops it).
    pub prompt: Option<String>,
    /// Fewest digits that make a destination.
    pub min: usize,
    /// Most digits (collection ends there).
    pub max: usize,
    /// Silence that ends collection (after the prompt, between digits).
    pub timeout: Duration,
    /// Digits that end collection early (not part of the result).
    pub terminators: String,
    /// Context the digits are routed in (None: the call's own).
    pub context: Option<String>,
}

/// What the dialplan decided for a call. Plain data: a call keeps the plan it started with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    /// Steps in order.
    pub actions: Vec<Action>,
    /// Variables after evaluation (facts plus `set`).
    pub vars: BTreeMap<String, String>,
    /// Matched extensions, as `context/name (file:line)`.
    pub matched: Vec<String>,
    /// One line per decision, for `switchboard route` and debug logs.
    pub trace: Vec<String>,
}

impl RoutePlan {
    /// True when the plan does something with the call (answer, bridge or hang up).
    pub fn routes(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Answer | Action::Hangup(_) | Action::Bridge(_)))
    }
}

/// What is known about a call when routing starts.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Context to evaluate (from the listener or gateway the call came in on).
    pub context: String,
    /// Dialled number / Request-URI user.
    pub destination: String,
    /// Caller number (From user).
    pub caller_number: String,
    /// Caller display name.
    pub caller_name: String,
    /// Headers of the incoming INVITE (name, value), any case.
    pub headers: Vec<(String, String)>,
    /// Call variables.
    pub vars: BTreeMap<String, String>,
    /// The time the call arrived.
    pub now: jiff::Timestamp,
}

impl Dialplan {
    /// Names of the contexts that have extensions.
    pub fn contexts(&self) -> impl Iterator<Item = &str> {
        self.contexts.keys().map(String::as_str)
    }

    /// The extensions of `context` that bridge out of the switch — to an endpoint of one of
    /// `kinds` (`gateway`) or to a SIP URI — as `file:line: extension NAME` (what `check`
    /// warns about for contexts anyone may reach).
    pub fn bridges_out(&self, context: &str, kinds: &[&str]) -> Vec<String> {
        let Some(exts) = self.contexts.get(context) else {
            return Vec::new();
        };
        exts.iter()
            .filter(|e| {
                e.actions.iter().any(|a| match a {
                    ActionTpl::Bridge { targets, .. } => targets.iter().any(|t| match t {
                        TargetTpl::Endpoint { kind, .. } => kinds.contains(&kind.as_str()),
                        TargetTpl::Uri(_) => true,
                    }),
                    _ => false,
                })
            })
            .map(|e| format!("{}:{}: extension {}", e.file, e.line, e.name))
            .collect()
    }

    /// Number of extensions in all contexts.
    pub fn len(&self) -> usize {
        self.contexts.values().map(Vec::len).sum()
    }

    /// True when there is no extension.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evaluates the facts of a call into a plan, tracing every decision.
    pub fn evaluate(&self, facts: &Facts) -> RoutePlan {
        let mut plan = RoutePlan {
            vars: facts.vars.clone(),
            ..RoutePlan::default()
        };
        plan.vars
            .insert("destination".into(), facts.destination.clone());
        plan.vars
            .insert("caller_number".into(), facts.caller_number.clone());
        plan.vars
            .insert("caller_name".into(), facts.caller_name.clone());
        let Some(exts) = self.contexts.get(&facts.context) else {
            plan.trace
                .push(format!("context {:?} has no extension", facts.context));
            return plan;
        };
        plan.trace.push(format!(
            "context {:?}: {} extension(s)",
            facts.context,
            exts.len()
        ));
        for ext in exts {
            let label = format!("{}/{} ({}:{})", facts.context, ext.name, ext.file, ext.line);
            let Some((caps, named)) = ext.matches(facts, &plan.vars, &mut plan.trace, &label)
            else {
                continue;
            };
            plan.trace.push(format!("  MATCH {label}"));
            plan.matched.push(label);
            for a in &ext.actions {
                apply(a, &caps, &named, &mut plan);
            }
            if !ext.cont {
                plan.trace.push("  stop (continue = false)".into());
                break;
            }
        }
        if !plan.routes() {
            plan.trace.push("nothing answers, bridges or hangs up: the call is refused with NO_ROUTE_DESTINATION".into());
        }
        plan
    }
}

type Captures = (Vec<String>, BTreeMap<String, String>);

impl Extension {
    fn matches(
        &self,
        facts: &Facts,
        vars: &BTreeMap<String, String>,
        trace: &mut Vec<String>,
        label: &str,
    ) -> Option<Captures> {
        let mut caps: Option<Vec<String>> = None;
        let mut named = BTreeMap::new();
        for c in &self.conds {
            let value: &str = match &c.field {
                Field::Destination => &facts.destination,
                Field::CallerNumber => &facts.caller_number,
                Field::CallerName => &facts.caller_name,
                Field::Header(h) => facts
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(h))
                    .map(|(_, v)| v.as_str())
                    .unwrap_or(""),
                Field::Var(v) => vars.get(v).map(String::as_str).unwrap_or(""),
            };
            let Some(m) = c.regex.captures(value) else {
                trace.push(format!(
                    "  skip {label}: {} {value:?} !~ /{}/",
                    c.field,
                    c.regex.as_str()
                ));
                return None;
            };
            for name in c.regex.capture_names().flatten() {
                if let Some(v) = m.name(name) {
                    named.insert(name.to_owned(), v.as_str().to_owned());
                }
            }
            if caps.is_none() {
                caps = Some(
                    m.iter()
                        .map(|g| g.map(|g| g.as_str().to_owned()).unwrap_or_default())
                        .collect(),
                );
            }
        }
        if let Some(t) = &self.time {
            let z = facts.now.to_zoned_datetime(t.tz.clone());
            let day = z.weekday().to_monday_zero_offset() as u8;
            let minute = z.hour() as u16 * 60 + z.minute() as u16;
            let open =
                t.days & (1 << day) != 0 && t.hours.iter().any(|&(a, b)| minute >= a && minute < b);
            if !open {
                trace.push(format!(
                    "  skip {label}: time {} is outside the window",
                    z.strftime("%a %H:%M %Z")
                ));
                return None;
            }
        }
        Some((caps.unwrap_or_default(), named))
    }
}

/// A `User-to-User` header value (RFC 7433): the data hex-encoded, cut to `max` bytes at a
/// character boundary, with `encoding=hex` and the purpose.
pub fn uui_value(data: &str, purpose: &str, max: usize) -> String {
    let mut end = data.len().min(max);
    while !data.is_char_boundary(end) {
        end -= 1;
    }
    let mut hex = String::with_capacity(end * 2 + 32);
    for b in data[..end].bytes() {
        hex.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
    }
    format!("{hex};encoding=hex;purpose={purpose}")
}

fn apply(a: &ActionTpl, caps: &[String], named: &BTreeMap<String, String>, plan: &mut RoutePlan) {
    match a {
        ActionTpl::Set(kv) => {
            for (k, v) in kv {
                let v = v.expand(caps, named, &plan.vars);
                plan.trace.push(format!("    set {k} = {v:?}"));
                plan.vars.insert(k.clone(), v);
            }
        }
        ActionTpl::HeaderAdd(kv) => {
            for (k, v) in kv {
                let value = v.expand(caps, named, &plan.vars);
                plan.trace.push(format!("    header_add {k}: {value}"));
                plan.actions.push(Action::HeaderAdd {
                    name: k.clone(),
                    value,
                });
            }
        }
        ActionTpl::Uui(data, purpose, max) => {
            let data = data.expand(caps, named, &plan.vars);
            let value = uui_value(&data, purpose, *max);
            plan.trace
                .push(format!("    uui {data:?} -> User-to-User: {value}"));
            plan.actions.push(Action::HeaderAdd {
                name: "User-to-User".into(),
                value,
            });
        }
        ActionTpl::HeaderRemove(names) => {
            for n in names {
                plan.trace.push(format!("    header_remove {n}"));
                plan.actions.push(Action::HeaderRemove(n.clone()));
            }
        }
        ActionTpl::Answer => {
            plan.trace.push("    answer".into());
            plan.actions.push(Action::Answer);
        }
        ActionTpl::Hangup(c) => {
            plan.trace.push(format!("    hangup {c}"));
            plan.actions.push(Action::Hangup(*c));
        }
        ActionTpl::Media(a) => {
            let line = match a {
                Action::Playback(p) => format!("    playback {p}"),
                Action::Echo(d) => format!("    echo for {}s", d.as_secs()),
                Action::Tone { spec, duration } => {
                    format!("    tone {spec} for {}s", duration.as_secs())
                }
                Action::Ringback(t) => format!("    ringback {t}"),
                Action::ReadDigits(r) => format!(
                    "    read_digits {}-{} digit(s), prompt {}, timeout {}s, terminators {:?}, then route in {}",
                    r.min,
                    r.max,
                    r.prompt.as_deref().unwrap_or("none"),
                    r.timeout.as_secs(),
                    r.terminators,
                    r.context.as_deref().unwrap_or("the same context"),
                ),
                other => format!("    {other:?}"),
            };
            plan.trace.push(line);
            plan.actions.push(a.clone());
        }
        ActionTpl::Module {
            name,
            params,
            tables,
        } => {
            let params: BTreeMap<String, String> = params
                .iter()
                .map(|(k, v)| (k.clone(), v.expand(caps, named, &plan.vars)))
                .collect();
            plan.trace.push(format!("    {name} {params:?}"));
            plan.actions.push(Action::Module(ModuleAction {
                name: name.clone(),
                params,
                tables: tables.clone(),
            }));
        }
        ActionTpl::Bridge {
            targets,
            strategy,
            timeout,
        } => {
            let targets: Vec<Target> = targets
                .iter()
                .map(|t| match t {
                    TargetTpl::Endpoint { kind, name, user } => Target::Endpoint {
                        kind: kind.clone(),
                        name: name.clone(),
                        user: user.expand(caps, named, &plan.vars),
                    },
                    TargetTpl::Uri(u) => Target::Uri(u.expand(caps, named, &plan.vars)),
                })
                .collect();
            let list: Vec<String> = targets.iter().map(ToString::to_string).collect();
            plan.trace.push(format!(
                "    bridge {strategy:?} [{}] timeout {}s",
                list.join(", "),
                timeout.as_secs()
            ));
            plan.actions.push(Action::Bridge(Bridge {
                targets,
                strategy: *strategy,
                timeout: *timeout,
            }));
        }
    }
}

#[cfg(test)]
mod tests;
