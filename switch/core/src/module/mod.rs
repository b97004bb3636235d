//! # The module seam
//!
//! Everything that is not the B2BUA itself plugs in here: trunks, the browser leg, caller
//! context, the DTMF interpreter, routing strategies... A [`Module`] offers one or more narrow
//! capabilities, each its own trait, and gets nothing but what those traits hand it — no
//! database, web router or other module:
//!
//! | capability | what it is for |
//! |---|---|
//! | [`Endpoint`] | a kind of bridge target (`gateway/NAME/USER`): resolves it to a route |
//! | [`InviteFilter`] | ordered edits of every INVITE to a leg B, or a typed refusal |
//! | [`LegApp`] | attached to a leg: every digit of it, before it is forwarded |
//! | [`ActionHandler`] | dialplan actions of its own, checked when the dialplan compiles |
//! | [`Service`] | SIP work outside calls (REGISTER, OPTIONS pings) |
//! | [`CallObserver`] | the typed stream of call events, off the call path |
//!
//! The binary builds a [`Registry`] at start from a static, feature-gated list of modules
//! (FreeSWITCH's modules, without `dlopen`); the engine owns it. All of it is sans-IO like
//! the engine: time comes in as arguments, work goes out as return values.

mod action;
mod digits;
mod endpoint;
mod error;
mod filter;
mod observer;
mod service;

use std::any::Any;
use std::time::Instant;
use switchboard_dialplan::{ActionSpec, EndpointSpec};

pub(crate) use action::Effect;
pub use action::{ActionCtx, ActionHandler, leg_param};
pub(crate) use digits::Suppress;
pub use digits::{ActionReport, AppAction, BROWSER_ACTION, Digit, DigitVerdict, LegApp, LegReply};
pub use endpoint::{Endpoint, OriginateCtx, Route, TargetRef};
pub use error::AttemptError;
pub use filter::{CallerId, FilterError, InviteFilter, OutgoingInvite};
pub use observer::{CallEvent, CallObserver, Stamped};
pub use service::{Service, SipOut};
pub use switchboard_media::DtmfMethod;

/// Where an [`InviteFilter`] runs among the others: ascending. The dialplan's own
/// `header_add`/`header_remove` are applied before any filter.
pub type FilterOrder = i32;

/// What a module adds to the dialplan language and to routing, known before the dialplan
/// compiles.
#[derive(Debug, Clone, Default)]
pub struct Declarations {
    /// Kinds of bridge target it resolves (it must then offer [`Module::endpoint`]).
    pub endpoints: Vec<EndpointSpec>,
    /// Actions it runs (it must then offer [`Module::actions`]).
    pub actions: Vec<ActionSpec>,
    /// Its place among the INVITE filters (it must then offer [`Module::invite_filter`]).
    pub filter: Option<FilterOrder>,
}

/// A module: a name and the capabilities it offers. Each accessor returns `None` unless the
/// module has that capability; the registry asks once, at start.
pub trait Module: Any + Send {
    /// Its name (`trunk`), as `[modules] load` lists it.
    fn name(&self) -> &'static str;

    /// What it adds to the dialplan language and routing.
    fn declare(&self) -> Declarations {
        Declarations::default()
    }

    /// Its kind(s) of target.
    fn endpoint(&mut self) -> Option<&mut dyn Endpoint> {
        None
    }

    /// Its INVITE filter.
    fn invite_filter(&mut self) -> Option<&mut dyn InviteFilter> {
        None
    }

    /// Its dialplan actions.
    fn actions(&mut self) -> Option<&mut dyn ActionHandler> {
        None
    }

    /// Its SIP work outside calls.
    fn service(&mut self) -> Option<&mut dyn Service> {
        None
    }

    /// Its call observer (taken once by the shell, which runs it on its own queue).
    fn take_observer(&mut self) -> Option<Box<dyn CallObserver>> {
        None
    }

    /// Its lines of `/metrics` (Prometheus text format).
    fn metrics(&self, _now: Instant, _out: &mut String) {}

    /// The sources it vouches for (a gateway's addresses and `acl`): trusted like
    /// `[sip] trusted`, each with the context its calls land in. Read at start and when the
    /// shell says the module's configuration changed (`Engine::refresh_peers`).
    fn peers(&self) -> Vec<crate::guard::PeerRule> {
        Vec::new()
    }
}

/// The modules of a running switch and the index of their capabilities.
#[derive(Default)]
pub struct Registry {
    modules: Vec<Box<dyn Module>>,
    /// Endpoint kind → module index.
    endpoints: Vec<(String, usize)>,
    /// (order, module index), ascending.
    filters: Vec<(FilterOrder, usize)>,
    /// Action name → module index.
    actions: Vec<(String, usize)>,
    services: Vec<usize>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.modules.iter().map(|m| m.name()).collect();
        f.debug_struct("Registry").field("modules", &names).finish()
    }
}

/// A module that declares a capability it does not offer, or two that claim one name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Declared endpoints/actions/filter without the accessor.
    #[error("module {module} declares {what} but does not offer it")]
    Missing {
        /// The module.
        module: &'static str,
        /// What.
        what: &'static str,
    },
    /// Two modules claim the same endpoint kind or action name.
    #[error("{what} {name:?} is claimed by both {first} and {second}")]
    Clash {
        /// `endpoint kind` or `action`.
        what: &'static str,
        /// The name.
        name: String,
        /// Who had it.
        first: &'static str,
        /// Who wanted it too.
        second: &'static str,
    },
}

impl Registry {
    /// An empty registry (a switch that only bridges to SIP URIs).
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The sources every module vouches for, in load order.
    pub fn peers(&self) -> Vec<crate::guard::PeerRule> {
        self.modules.iter().flat_map(|m| m.peers()).collect()
    }

    /// Adds a module and indexes what it declares.
    pub fn add(&mut self, mut module: Box<dyn Module>) -> Result<(), RegistryError> {
        let i = self.modules.len();
        let name = module.name();
        let d = module.declare();
        let missing = |what| RegistryError::Missing { module: name, what };
        if !d.endpoints.is_empty() && module.endpoint().is_none() {
            return Err(missing("endpoints"));
        }
        if !d.actions.is_empty() && module.actions().is_none() {
            return Err(missing("actions"));
        }
        if d.filter.is_some() && module.invite_filter().is_none() {
            return Err(missing("an invite filter"));
        }
        let claim = |list: &[(String, usize)], what, key: &str| {
            list.iter()
                .find(|(k, _)| k == key)
                .map(|(_, j)| RegistryError::Clash {
                    what,
                    name: key.to_owned(),
                    first: self.modules[*j].name(),
                    second: name,
                })
        };
        for e in &d.endpoints {
            if let Some(err) = claim(&self.endpoints, "endpoint kind", &e.kind) {
                return Err(err);
            }
        }
        for a in &d.actions {
            if let Some(err) = claim(&self.actions, "action", &a.name) {
                return Err(err);
            }
        }
        self.endpoints
            .extend(d.endpoints.into_iter().map(|e| (e.kind, i)));
        self.actions
            .extend(d.actions.into_iter().map(|a| (a.name, i)));
        if module.service().is_some() {
            self.services.push(i);
        }
        self.modules.push(module);
        if let Some(order) = d.filter {
            self.filters.push((order, i));
            // Stable: equal orders keep the order modules were added in.
            self.filters.sort_by_key(|(o, _)| *o);
        }
        Ok(())
    }

    /// What every module declares (for the dialplan's `CompileEnv`).
    pub fn declarations(&self) -> Declarations {
        let mut all = Declarations::default();
        for m in &self.modules {
            let d = m.declare();
            all.endpoints.extend(d.endpoints);
            all.actions.extend(d.actions);
        }
        all
    }

    /// The module of this type, for the shell's typed operations (`ctl gateway up`).
    pub fn get_mut<T: Module>(&mut self) -> Option<&mut T> {
        self.modules
            .iter_mut()
            .find_map(|m| (m.as_mut() as &mut dyn Any).downcast_mut::<T>())
    }

    /// The module of this type.
    pub fn get<T: Module>(&self) -> Option<&T> {
        self.modules
            .iter()
            .find_map(|m| (m.as_ref() as &dyn Any).downcast_ref::<T>())
    }

    /// The observers of all modules (the shell runs each on its own queue).
    pub fn take_observers(&mut self) -> Vec<Box<dyn CallObserver>> {
        self.modules
            .iter_mut()
            .filter_map(|m| m.take_observer())
            .collect()
    }

    /// Every module's lines of `/metrics`.
    pub fn metrics(&self, now: Instant, out: &mut String) {
        for m in &self.modules {
            m.metrics(now, out);
        }
    }

    /// Names of the loaded modules.
    pub fn names(&self) -> Vec<&'static str> {
        self.modules.iter().map(|m| m.name()).collect()
    }

    pub(crate) fn endpoint(&mut self, kind: &str) -> Option<&mut dyn Endpoint> {
        let i = self.endpoints.iter().find(|(k, _)| k == kind)?.1;
        self.modules[i].endpoint()
    }

    pub(crate) fn action(&mut self, name: &str) -> Option<&mut dyn ActionHandler> {
        let i = self.actions.iter().find(|(k, _)| k == name)?.1;
        self.modules[i].actions()
    }

    pub(crate) fn filter_count(&self) -> usize {
        self.filters.len()
    }

    pub(crate) fn filter(&mut self, n: usize) -> Option<(&'static str, &mut dyn InviteFilter)> {
        let m = self.modules.get_mut(self.filters.get(n)?.1)?;
        let name = m.name();
        Some((name, m.invite_filter()?))
    }

    pub(crate) fn service_count(&self) -> usize {
        self.services.len()
    }

    pub(crate) fn service(&mut self, n: usize) -> Option<&mut dyn Service> {
        let m = self.modules.get_mut(*self.services.get(n)?)?;
        m.service()
    }

    pub(crate) fn services_timeout(&mut self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        for n in 0..self.services.len() {
            if let Some(t) = self.service(n).and_then(|s| s.poll_timeout()) {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        at
    }
}
