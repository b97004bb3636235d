//! # switchboard-screenpop
//!
//! The caller's context towards the call center: the rules of the CRM look-ups ([`crm`]:
//! which calls a merchant's key sees, by ANI, Call-ID or session), and a signed webhook when
//! its browser calls ring, are answered and hang up (`webhook_url`, `webhook_secret`,
//! `webhook_events` of `[merchant.ID]`). The module is a call observer: it learns of calls
//! from the engine's event stream (the browser leg's facts travel with `Started`) and never
//! runs on the call path; deliveries retry with backoff on a queue per call.
//!
//! It knows merchants only through [`Merchants`], which the switch implements over its
//! configuration (and keeps current across reloads).

pub mod crm;
mod observer;
pub mod webhook;

use std::sync::Arc;

use switchboard_core::Module;
use switchboard_core::module::CallObserver;

pub use webhook::{Counters, Hooks, Target, client_config};

/// Where a merchant's webhooks go, from the switch's current configuration.
pub trait Merchants: Send + Sync {
    /// The merchant's webhook target and the events it wants, if it has one.
    fn webhook(&self, merchant: &str) -> Option<(Arc<Target>, Vec<String>)>;
}

/// The screenpop module.
pub struct ScreenPop {
    observer: Option<observer::Webhooks>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ScreenPop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreenPop").finish_non_exhaustive()
    }
}

impl ScreenPop {
    /// The module; starts its webhook dispatcher on the current (multi-threaded) runtime.
    pub fn start(merchants: Arc<dyn Merchants>) -> ScreenPop {
        let hooks = Hooks::start();
        let counters = hooks.counters.clone();
        ScreenPop {
            observer: Some(observer::Webhooks::new(merchants, hooks)),
            counters,
        }
    }
}

impl Module for ScreenPop {
    fn name(&self) -> &'static str {
        "screenpop"
    }

    fn take_observer(&mut self) -> Option<Box<dyn CallObserver>> {
        self.observer
            .take()
            .map(|o| Box::new(o) as Box<dyn CallObserver>)
    }

    fn metrics(&self, _now: std::time::Instant, out: &mut String) {
        out.push_str(&self.counters.metrics());
    }
}
