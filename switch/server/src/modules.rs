//! The modules compiled into this binary (FreeSWITCH's `modules.conf`, without `dlopen`):
//! which exist, what they declare to the dialplan compiler, and the registry built from the
//! ones `[modules] load` names.

use std::sync::{Arc, OnceLock};

use switchboard_core::Registry;
use switchboard_dialplan::{ActionSpec, EndpointSpec};
use switchboard_dtmf::Pages;
use switchboard_trunk::{Gateways, Trunk};
use switchboard_webrtc::MerchantConfig;

/// Modules loaded when `[modules] load` is not set.
pub const DEFAULT: &[&str] = &["trunk", "screenpop", "dtmf", "agent"];

/// Every module this binary can load (cargo features decide).
pub const AVAILABLE: &[&str] = &[
    "trunk",
    "screenpop",
    "dtmf",
    "agent",
    #[cfg(feature = "example")]
    "example",
];

/// What the loaded modules add to the dialplan language (known before they are built: a
/// reload compiles against the gateways it is about to apply).
pub fn declarations(
    load: &[String],
    gateways: &Gateways,
    pages: &Pages,
    queues: &std::collections::BTreeMap<String, switchboard_agent::Queue>,
) -> (Vec<EndpointSpec>, Vec<ActionSpec>) {
    let desk = switchboard_agent::Desk::shared(queues.clone(), None);
    let mut registry = build(load, gateways.clone(), pages.clone(), None, desk);
    let d = registry.declarations();
    let _ = registry.take_observers();
    (d.endpoints, d.actions)
}

/// The registry of the loaded modules, in the order `load` lists them.
pub fn build(
    load: &[String],
    gateways: Gateways,
    pages: Pages,
    merchants: Option<Arc<WebMerchants>>,
    desk: switchboard_agent::SharedDesk,
) -> Registry {
    let mut registry = Registry::new();
    let mut gateways = Some(gateways);
    for name in load {
        let module: Box<dyn switchboard_core::Module> = match name.as_str() {
            "trunk" => Box::new(Trunk::new(gateways.take().unwrap_or_default())),
            // Its webhook dispatcher runs on the runtime: only a running switch builds it.
            "screenpop" => match &merchants {
                Some(m) => Box::new(switchboard_screenpop::ScreenPop::start(m.clone())),
                None => continue,
            },
            // The merchants' page names, to check `push_page:NAME` bindings at load.
            "dtmf" => Box::new(switchboard_dtmf::Dtmf::new(pages.clone())),
            // Who is logged in at the console: the desk the shell's consoles share.
            "agent" => Box::new(switchboard_agent::Agents::new(desk.clone())),
            #[cfg(feature = "example")]
            "example" => Box::new(switchboard_example::Example::new()),
            // config::load refused unknown names already.
            _ => continue,
        };
        if let Err(e) = registry.add(module) {
            // A programming error between two modules of this binary: loud, not fatal.
            tracing::error!("module {name} not loaded: {e}");
        }
    }
    registry
}

/// The page names and templates of these merchants (what `dtmf_bind` may push).
pub fn pages<'a>(merchants: impl IntoIterator<Item = &'a MerchantConfig>) -> Pages {
    let mut p = Pages::default();
    for m in merchants {
        p.names.extend(m.pages.keys().cloned());
        p.template |= m.page_template.is_some();
    }
    p
}

/// The merchants' webhooks as the browser leg's configuration says (set once the browser leg
/// exists: it is built after the engine, which holds the registry).
#[derive(Default)]
pub struct WebMerchants(pub OnceLock<Arc<crate::web::WebShared>>);

impl switchboard_screenpop::Merchants for WebMerchants {
    fn webhook(&self, merchant: &str) -> Option<(Arc<switchboard_screenpop::Target>, Vec<String>)> {
        self.0.get()?.webhook(merchant)
    }
}
