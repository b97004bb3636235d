//! The desk: who is logged in where, their status and channel codes, and the calls in
//! progress they may be bound to. Shared (behind a mutex) by the module's endpoint (which
//! consoles ring), its leg app (a channel code keyed on the phone), its observer (the calls
//! in progress, the caller IDs they leased) and the shell's consoles (log-ins, status,
//! binding by caller ID). Sans-IO: what the consoles must be told comes out as [`Note`]s,
//! handed to the shell's [`Notify`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use switchboard_core::CallRef;
use switchboard_core::module::AttemptError;

/// One console (a logged-in agent's page, with its WebSocket).
pub type ConsoleId = u64;

/// What an agent may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Their own calls.
    #[default]
    Agent,
    /// Every call of their merchants.
    Supervisor,
    /// Everything.
    Admin,
}

impl Role {
    /// From its name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "agent" => Some(Role::Agent),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

/// An agent's account, as the console and the desk see it (no password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentInfo {
    /// Login ID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The merchants whose calls they take (an admin: any).
    pub merchants: Vec<String>,
    /// The queues they answer.
    pub queues: Vec<String>,
}

impl AgentInfo {
    /// May this agent see a call of `merchant`?
    pub fn serves(&self, merchant: &str) -> bool {
        self.role == Role::Admin || self.merchants.iter().any(|m| m == merchant)
    }
}

/// Whether a console takes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Rings.
    Available,
    /// Does not ring (channel codes and caller IDs still bind calls to it).
    Away,
}

/// How a queue picks consoles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RingStrategy {
    /// Every available console at once; the first to answer wins.
    #[default]
    RingAll,
    /// The console idle the longest.
    LongestIdle,
}

/// A queue (`[queue.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Queue {
    /// How its consoles ring.
    pub strategy: RingStrategy,
    /// Only agents of this merchant ring (None: any agent of the queue).
    pub merchant: Option<String>,
}

/// How a call came to a console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The console answered it.
    Answered,
    /// The agent keyed the console's channel code on the phone.
    Code,
    /// The agent typed the caller ID their phone shows.
    Ani,
}

/// What a console must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A call is now this console's (screen pop, chat).
    Bound {
        /// The console.
        console: ConsoleId,
        /// The call.
        call: CallRef,
        /// Leg A's Call-ID.
        a_call_id: Arc<str>,
        /// How.
        via: Via,
    },
    /// A call that was bound to some console ended: its room closes.
    Closed {
        /// The call.
        call: CallRef,
        /// Leg A's Call-ID.
        a_call_id: Arc<str>,
    },
    /// A call bound to this console ended.
    Ended {
        /// The console.
        console: ConsoleId,
        /// The call.
        call: CallRef,
        /// Leg A's Call-ID.
        a_call_id: Arc<str>,
    },
}

/// Where notes go (the shell's consoles).
pub trait Notify: Send + Sync + std::fmt::Debug {
    /// Delivers a note; never blocks.
    fn note(&self, note: Note);
}

#[derive(Debug)]
struct Console {
    agent: AgentInfo,
    code: String,
    status: Status,
    addr: SocketAddr,
    idle_since: Instant,
    in_call: usize,
}

/// A call in progress, as the desk knows it.
#[derive(Debug, Clone)]
pub struct LiveCall {
    /// Leg A's Call-ID.
    pub a_call_id: Arc<str>,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// The merchant whose page it came from (empty: a SIP caller).
    pub merchant: String,
    /// The caller ID it leased from a gateway's pool.
    pub ani: Option<String>,
    /// The consoles it is bound to.
    pub consoles: Vec<ConsoleId>,
    /// The sessions (by channel code) it is bound to, and how: a console of the same session
    /// that connects later (the agent reloaded the page) gets the call again.
    pub sessions: Vec<(String, Via)>,
}

/// Why a call could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// No console has that code.
    #[error("no console has that code")]
    NoSuchCode,
    /// No call in progress has that caller ID.
    #[error("no call in progress has caller ID {0}")]
    NoSuchAni(String),
    /// The call is not of the agent's merchants.
    #[error("that call is not one of your merchants'")]
    NotYours,
    /// The call is over (or unknown).
    #[error("the call is over")]
    NoCall,
    /// Another agent has the call.
    #[error("another agent has that call")]
    Taken,
}

/// The desk.
#[derive(Debug, Default)]
pub struct Desk {
    consoles: HashMap<ConsoleId, Console>,
    codes: HashSet<String>,
    live: HashMap<CallRef, LiveCall>,
    queues: BTreeMap<String, Queue>,
    notify: Option<Arc<dyn Notify>>,
    next: ConsoleId,
}

/// The desk as everyone shares it.
pub type SharedDesk = Arc<Mutex<Desk>>;

/// Locks a shared desk (a panic elsewhere does not stop the consoles).
pub fn lock(desk: &SharedDesk) -> MutexGuard<'_, Desk> {
    desk.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Desk {
    /// A desk for these queues; notes go to `notify`.
    pub fn new(queues: BTreeMap<String, Queue>, notify: Option<Arc<dyn Notify>>) -> Desk {
        Desk {
            queues,
            notify,
            next: 1,
            ..Desk::default()
        }
    }

    /// A shared one.
    pub fn shared(queues: BTreeMap<String, Queue>, notify: Option<Arc<dyn Notify>>) -> SharedDesk {
        Arc::new(Mutex::new(Desk::new(queues, notify)))
    }

    /// Where notes go from now on.
    pub fn set_notify(&mut self, notify: Arc<dyn Notify>) {
        self.notify = Some(notify);
    }

    /// The queues (a reload replaces them; consoles stay).
    pub fn set_queues(&mut self, queues: BTreeMap<String, Queue>) {
        self.queues = queues;
    }

    /// The queues' names.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues.keys().cloned().collect()
    }

    fn note(&self, note: Note) {
        if let Some(n) = &self.notify {
            n.note(note);
        }
    }

    /// A new channel code of `digits` digits (2–6), unique among the codes in use; reserved
    /// until [`Desk::release_code`]. None without OS randomness.
    pub fn new_code(&mut self, digits: usize) -> Option<String> {
        let digits = digits.clamp(2, 6);
        let space = 10u32.pow(digits as u32);
        // Codes must stay guessable by no one and unique: a few random draws, then a scan.
        for _ in 0..32 {
            let mut b = [0u8; 4];
            getrandom::fill(&mut b).ok()?;
            let n = u32::from_le_bytes(b) % space;
            let code = format!("{n:0digits$}");
            if self.codes.insert(code.clone()) {
                return Some(code);
            }
        }
        (0..space)
            .map(|n| format!("{n:0digits$}"))
            .find(|c| !self.codes.contains(c))
            .inspect(|c| {
                self.codes.insert(c.clone());
            })
    }

    /// A code is no longer in use (its session ended): its calls are no longer bound to it.
    pub fn release_code(&mut self, code: &str) {
        self.codes.remove(code);
        for call in self.live.values_mut() {
            call.sessions.retain(|(c, _)| c != code);
        }
    }

    /// The calls in progress bound to a session (by its code).
    pub fn session_calls(&self, code: &str) -> Vec<(CallRef, Arc<str>)> {
        self.live
            .iter()
            .filter(|(_, c)| c.sessions.iter().any(|(s, _)| s == code))
            .map(|(r, c)| (*r, c.a_call_id.clone()))
            .collect()
    }

    /// A console connected: `addr` is its Local SIP address, `code` its session's code.
    /// It starts with `status` (the session's: a reloaded page of an agent who was away
    /// stays away).
    pub fn register(
        &mut self,
        now: Instant,
        agent: AgentInfo,
        code: &str,
        addr: SocketAddr,
        status: Status,
    ) -> ConsoleId {
        let id = self.next;
        self.next += 1;
        self.consoles.insert(
            id,
            Console {
                agent,
                code: code.to_owned(),
                status,
                addr,
                idle_since: now,
                in_call: 0,
            },
        );
        // The session's calls bound on an earlier console (a reloaded page) are this one's.
        let again: Vec<(CallRef, Via)> = self
            .live
            .iter()
            .filter_map(|(r, c)| {
                c.sessions
                    .iter()
                    .find(|(s, _)| s == code)
                    .map(|(_, via)| (*r, *via))
            })
            .collect();
        for (call, via) in again {
            let _ = self.bind(id, call, via);
        }
        id
    }

    /// A console went away.
    pub fn unregister(&mut self, id: ConsoleId) {
        self.consoles.remove(&id);
        for call in self.live.values_mut() {
            call.consoles.retain(|c| *c != id);
        }
    }

    /// A console's status.
    pub fn set_status(&mut self, now: Instant, id: ConsoleId, status: Status) {
        if let Some(c) = self.consoles.get_mut(&id) {
            if c.status != status && status == Status::Available {
                c.idle_since = now;
            }
            c.status = status;
        }
    }

    /// A console's status, if it is connected.
    pub fn status(&self, id: ConsoleId) -> Option<Status> {
        self.consoles.get(&id).map(|c| c.status)
    }

    /// A console took (`true`) or left (`false`) a call in the browser: busy consoles do
    /// not ring; idle time counts from the end of its last call.
    pub fn in_call(&mut self, now: Instant, id: ConsoleId, busy: bool) {
        if let Some(c) = self.consoles.get_mut(&id) {
            if busy {
                c.in_call += 1;
            } else {
                c.in_call = c.in_call.saturating_sub(1);
                if c.in_call == 0 {
                    c.idle_since = now;
                }
            }
        }
    }

    /// An agent in a call on any of their consoles rings on none.
    fn busy(&self, agent: &str) -> bool {
        self.consoles
            .values()
            .any(|c| c.agent.id == agent && c.in_call > 0)
    }

    fn ringable(&self) -> impl Iterator<Item = (&ConsoleId, &Console)> {
        self.consoles
            .iter()
            .filter(|(_, c)| c.status == Status::Available && !self.busy(&c.agent.id))
    }

    /// The merchant of a call in progress ("" for a SIP caller; None: not known).
    fn merchant_of(&self, call: Option<CallRef>) -> Option<&str> {
        call.and_then(|c| self.live.get(&c))
            .map(|l| l.merchant.as_str())
    }

    /// A console's agent may take a call of `merchant` (a SIP caller's: anyone the plan rings).
    fn may_take(c: &Console, merchant: Option<&str>) -> bool {
        merchant.is_none_or(|m| m.is_empty() || c.agent.serves(m))
    }

    /// The consoles a target stands for: `agent/ID` (each of that agent's available
    /// consoles) or `queue/NAME` (those of the queue's agents, by its strategy), as
    /// `(agent, console)` pairs for `agent/AGENT/CONSOLE` targets.
    /// Only consoles whose agent serves `call`'s merchant ring (its screen pop is theirs to
    /// see). With longest-idle, the console picked counts as offered: the next call goes to
    /// the next agent if this one does not answer.
    pub fn expand(
        &mut self,
        now: Instant,
        call: Option<CallRef>,
        kind: &str,
        name: &str,
        user: &str,
    ) -> Option<Result<Vec<(String, String)>, AttemptError>> {
        let merchant = self.merchant_of(call).map(str::to_owned);
        let merchant = merchant.as_deref();
        let pick = |c: &Console| (c.agent.id.clone(), String::new(), c.idle_since);
        let mut found: Vec<(String, String, Instant)> = match kind {
            crate::AGENT_KIND if user.is_empty() => {
                if !self.consoles.values().any(|c| c.agent.id == name) {
                    return Some(Err(AttemptError::Unavailable(format!(
                        "agent {name} is not logged in"
                    ))));
                }
                self.ringable()
                    .filter(|(_, c)| c.agent.id == name && Self::may_take(c, merchant))
                    .map(|(id, c)| {
                        let (a, _, t) = pick(c);
                        (a, id.to_string(), t)
                    })
                    .collect()
            }
            crate::QUEUE_KIND => {
                let Some(q) = self.queues.get(name) else {
                    return Some(Err(AttemptError::UnknownTarget {
                        kind: kind.into(),
                        name: name.into(),
                    }));
                };
                let mut v: Vec<_> = self
                    .ringable()
                    .filter(|(_, c)| c.agent.queues.iter().any(|x| x == name))
                    .filter(|(_, c)| q.merchant.as_deref().is_none_or(|m| c.agent.serves(m)))
                    .filter(|(_, c)| Self::may_take(c, merchant))
                    .map(|(id, c)| {
                        let (a, _, t) = pick(c);
                        (a, id.to_string(), t)
                    })
                    .collect();
                if q.strategy == RingStrategy::LongestIdle {
                    v.sort_by_key(|(_, id, t)| (*t, id.clone()));
                    v.truncate(1);
                    if let Some((_, id, _)) = v.first()
                        && let Some(c) = id.parse().ok().and_then(|id| self.consoles.get_mut(&id))
                    {
                        c.idle_since = now;
                    }
                }
                v
            }
            _ => return None,
        };
        found.sort_by_key(|(_, id, t)| (*t, id.clone()));
        if found.is_empty() {
            let what = if kind == crate::QUEUE_KIND {
                format!("no agent of queue {name} is available")
            } else {
                format!("agent {name} is away or busy")
            };
            return Some(Err(AttemptError::Unavailable(what)));
        }
        Some(Ok(found.into_iter().map(|(a, c, _)| (a, c)).collect()))
    }

    /// Where console `user` of agent `name` listens, if it still rings.
    pub fn console_addr(&self, name: &str, user: &str) -> Result<SocketAddr, AttemptError> {
        let gone = || AttemptError::Unavailable(format!("agent {name}'s console is gone or busy"));
        let id: ConsoleId = user.parse().map_err(|_| gone())?;
        let c = self
            .consoles
            .get(&id)
            .filter(|c| c.agent.id == name)
            .ok_or_else(gone)?;
        if c.status != Status::Available || self.busy(&c.agent.id) {
            return Err(gone());
        }
        Ok(c.addr)
    }

    /// A call started (its record starts).
    pub fn started(
        &mut self,
        call: CallRef,
        a_call_id: Arc<str>,
        started_ms: i64,
        merchant: String,
    ) {
        self.live.insert(
            call,
            LiveCall {
                a_call_id,
                started_ms,
                merchant,
                ani: None,
                consoles: Vec::new(),
                sessions: Vec::new(),
            },
        );
    }

    /// The call leased a caller ID.
    pub fn leased(&mut self, call: CallRef, ani: &str) {
        if let Some(c) = self.live.get_mut(&call) {
            c.ani = Some(ani.to_owned());
        }
    }

    /// The call ended: its consoles are told, and its room closes (even with no console
    /// left in it).
    pub fn ended(&mut self, call: CallRef) {
        if let Some(c) = self.live.remove(&call) {
            for console in c.consoles {
                self.note(Note::Ended {
                    console,
                    call,
                    a_call_id: c.a_call_id.clone(),
                });
            }
            if !c.sessions.is_empty() {
                self.note(Note::Closed {
                    call,
                    a_call_id: c.a_call_id,
                });
            }
        }
    }

    /// A call in progress.
    pub fn live(&self, call: CallRef) -> Option<&LiveCall> {
        self.live.get(&call)
    }

    /// The call in progress with this leg A Call-ID.
    pub fn live_by_call_id(&self, a_call_id: &str) -> Option<(CallRef, &LiveCall)> {
        self.live
            .iter()
            .find(|(_, c)| &*c.a_call_id == a_call_id)
            .map(|(r, c)| (*r, c))
    }

    /// Binds a call to a console (its agent must serve the call's merchant).
    pub fn bind(&mut self, console: ConsoleId, call: CallRef, via: Via) -> Result<(), BindError> {
        let agent = self.consoles.get(&console).ok_or(BindError::NoSuchCode)?;
        let live = self.live.get_mut(&call).ok_or(BindError::NoCall)?;
        // A call the plan rang this console with is the agent's to take (a SIP caller has
        // no merchant); a code or a caller ID binds only calls of the agent's merchants.
        if via != Via::Answered && !agent.agent.serves(&live.merchant) {
            return Err(BindError::NotYours);
        }
        if !live.consoles.contains(&console) {
            live.consoles.push(console);
        }
        if !live.sessions.iter().any(|(c, _)| *c == agent.code) {
            live.sessions.push((agent.code.clone(), via));
        }
        let a_call_id = live.a_call_id.clone();
        self.note(Note::Bound {
            console,
            call,
            a_call_id,
            via,
        });
        Ok(())
    }

    /// A console's answer was not the one taken (another console's 200 won): the call is not
    /// this console's or its session's after all.
    pub fn unbind(&mut self, console: ConsoleId, call: CallRef) {
        let code = self.consoles.get(&console).map(|c| c.code.clone());
        if let Some(live) = self.live.get_mut(&call) {
            live.consoles.retain(|c| *c != console);
            if let Some(code) = code {
                live.sessions.retain(|(s, _)| *s != code);
            }
        }
    }

    /// The agent keyed `code` during `call`: bound to every console with that code.
    /// Ok: the agent's name.
    pub fn bind_code(&mut self, code: &str, call: CallRef) -> Result<String, BindError> {
        let mut consoles: Vec<ConsoleId> = self
            .consoles
            .iter()
            .filter(|(_, c)| c.code == code)
            .map(|(id, _)| *id)
            .collect();
        consoles.sort_unstable();
        let Some(first) = consoles.first() else {
            return Err(BindError::NoSuchCode);
        };
        let name = self
            .consoles
            .get(first)
            .map(|c| c.agent.name.clone())
            .unwrap_or_default();
        for c in consoles {
            self.bind(c, call, Via::Code)?;
        }
        Ok(name)
    }

    /// The agent typed the caller ID their phone shows.
    pub fn bind_ani(&mut self, console: ConsoleId, ani: &str) -> Result<CallRef, BindError> {
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        let want = digits(ani);
        if want.is_empty() {
            return Err(BindError::NoSuchAni(ani.to_owned()));
        }
        let me = self.consoles.get(&console).ok_or(BindError::NoSuchCode)?;
        let (agent, code) = (me.agent.clone(), me.code.clone());
        let matching: Vec<(CallRef, &LiveCall)> = self
            .live
            .iter()
            .filter(|(_, c)| {
                c.ani.as_deref().is_some_and(|a| {
                    let a = digits(a);
                    // A phone may show the number with or without a country prefix.
                    a == want || (want.len() >= 7 && (a.ends_with(&want) || want.ends_with(&a)))
                })
            })
            .map(|(r, c)| (*r, c))
            .collect();
        if matching.is_empty() {
            return Err(BindError::NoSuchAni(want));
        }
        let call = matching
            .iter()
            .filter(|(_, c)| agent.serves(&c.merchant))
            .map(|(r, _)| *r)
            .max()
            .ok_or(BindError::NotYours)?;
        // A plain agent does not take over a call a colleague has (a supervisor may join).
        let taken = self
            .live
            .get(&call)
            .is_some_and(|c| c.sessions.iter().any(|(s, _)| *s != code));
        if taken && agent.role == Role::Agent {
            return Err(BindError::Taken);
        }
        self.bind(console, call, Via::Ani)?;
        Ok(call)
    }

    /// How many consoles are connected (metrics).
    pub fn consoles(&self) -> usize {
        self.consoles.len()
    }
}
