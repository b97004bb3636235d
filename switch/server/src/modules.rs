//! The modules compiled into this binary (FreeSWITCH's `modules.conf`, without `dlopen`):
//! which exist, what they declare to the dialplan compiler, and the registry built from the
//! ones `[modules] load` names.

use switchboard_core::Registry;
use switchboard_dialplan::{ActionSpec, EndpointSpec};
use switchboard_trunk::{Gateways, Trunk};

/// Modules loaded when `[modules] load` is not set.
pub const DEFAULT: &[&str] = &["trunk"];

/// Every module this binary can load (cargo features decide).
pub const AVAILABLE: &[&str] = &[
    "trunk",
    #[cfg(feature = "example")]
    "example",
];

/// What the loaded modules add to the dialplan language (known before they are built: a
/// reload compiles against the gateways it is about to apply).
pub fn declarations(load: &[String], gateways: &Gateways) -> (Vec<EndpointSpec>, Vec<ActionSpec>) {
    let mut registry = build(load, gateways.clone());
    let d = registry.declarations();
    let _ = registry.take_observers();
    (d.endpoints, d.actions)
}

/// The registry of the loaded modules, in the order `load` lists them.
pub fn build(load: &[String], gateways: Gateways) -> Registry {
    let mut registry = Registry::new();
    let mut gateways = Some(gateways);
    for name in load {
        let module: Box<dyn switchboard_core::Module> = match name.as_str() {
            "trunk" => Box::new(Trunk::new(gateways.take().unwrap_or_default())),
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
