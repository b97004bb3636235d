//! Any text as a dialplan file: compile() reports diagnostics, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_dialplan::{CompileEnv, Source, compile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = CompileEnv::with_gateways(vec!["gw".into()], vec!["connecting".into()]);
    let _ = compile(&[Source { path: "fuzz.toml".into(), text: text.into() }], &env);
});
