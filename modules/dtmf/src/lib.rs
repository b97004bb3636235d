//! # switchboard-dtmf
//!
//! The DTMF interpreter (SPEC §3): the agent keys `*76` on a plain phone behind the call
//! center and the shopper's browser opens the page the agent means; other codes change the
//! shopper's volume, microphone gain or echo handling.
//!
//! A dialplan action binds codes for the calls that reach it:
//!
//! ```toml
//! actions = [
//!   { dtmf_bind = { codes = { "*76" = "push_page:checkout", "*22" = "volume:+20", "*88" = "volume:-20" }, interdigit_ms = 1000 } },
//!   { bridge = { targets = ["gateway/acd/2000"] } },
//! ]
//! ```
//!
//! and attaches an [`Interpreter`] (a [`LegApp`](switchboard_core::module::LegApp)) to the
//! watched leg — the call center's (`leg = "b"`) unless the action says `"a"`. Every digit of
//! that leg reaches it before the other leg, whatever its form: digits that may be a code are
//! held, a code's digits are swallowed, the rest go on in order with their durations (a `*2`
//! that only starts `*22` arrives after the inter-digit wait). A code's command goes to the
//! caller's leg as an in-dialog INFO ([`ACTION_CONTENT_TYPE`]); the browser leg resolves page
//! names against the merchant's `pages`, keeps URLs on its origins, asks the page and answers
//! with the page's result, which becomes a report (records, observers) and a short tone to
//! the agent.

mod app;
pub mod bind;
pub mod matcher;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_core::Module;
use switchboard_core::module::{ActionCtx, ActionHandler, Declarations};
use switchboard_dialplan::{ActionCheck, ActionSpec, ModuleAction, ParamKind, ParamSpec};

pub use app::{ACTION_CONTENT_TYPE, Binding, Interpreter, REPLY_WAIT, TONE_FAILED, TONE_OK};
pub use bind::{Command, Level};

/// The dialplan action's name.
pub const ACTION: &str = "dtmf_bind";

/// Inter-digit wait when the action does not say.
pub const DEFAULT_INTERDIGIT_MS: u64 = 1000;

/// The pages the configuration knows, for checking bindings at load.
#[derive(Debug, Clone, Default)]
pub struct Pages {
    /// Every page name of any merchant's `pages` table.
    pub names: BTreeSet<String>,
    /// Some merchant has a `page_template` (a bare `push_page` uses it).
    pub template: bool,
}

/// The module.
#[derive(Debug, Default)]
pub struct Dtmf {
    pages: Arc<Pages>,
}

impl Dtmf {
    /// The module, checking page names against `pages`.
    pub fn new(pages: Pages) -> Dtmf {
        Dtmf {
            pages: Arc::new(pages),
        }
    }
}

impl Module for Dtmf {
    fn name(&self) -> &'static str {
        "dtmf"
    }

    fn declare(&self) -> Declarations {
        let pages = self.pages.clone();
        Declarations {
            actions: vec![ActionSpec {
                name: ACTION.into(),
                params: vec![
                    ParamSpec {
                        name: "codes".into(),
                        kind: ParamKind::Table,
                        required: true,
                    },
                    ParamSpec {
                        name: "interdigit_ms".into(),
                        kind: ParamKind::Integer { min: 100, max: 10_000 },
                        required: false,
                    },
                    ParamSpec {
                        name: "leg".into(),
                        kind: ParamKind::Text,
                        required: false,
                    },
                    ParamSpec {
                        name: "confirm".into(),
                        kind: ParamKind::Bool,
                        required: false,
                    },
                ],
                help: "codes keyed on a leg's phone act in the caller's browser: { \"*76\" = \"push_page:checkout\", \"*22\" = \"volume:+20\" }".into(),
                check: Some(ActionCheck::new(move |a| parse(a, Some(&pages)).map(|_| ()))),
            }],
            ..Declarations::default()
        }
    }

    fn actions(&mut self) -> Option<&mut dyn ActionHandler> {
        Some(self)
    }
}

impl ActionHandler for Dtmf {
    fn run(
        &mut self,
        _now: Instant,
        action: &ModuleAction,
        ctx: &mut ActionCtx,
    ) -> Result<(), String> {
        // Checked at load (page names too: here the browser leg knows the call's merchant);
        // `leg` may be templated, so it is checked again.
        let binding = parse(action, None)?;
        let watch = binding.watch;
        ctx.attach(watch, Box::new(Interpreter::new(Arc::new(binding))));
        Ok(())
    }
}

/// One code and its command, checked (page names against `pages` when given).
fn check_binding(code: &str, text: &str, pages: Option<&Pages>) -> Result<Command, String> {
    bind::check_code(code)?;
    let command = Command::parse(text).map_err(|e| format!("code {code:?}: {e}"))?;
    if let Some(pages) = pages
        && let Command::PushPage(page) = &command
    {
        match page {
            Some(p) if !pages.names.contains(p) => {
                let known = if pages.names.is_empty() {
                    "none".to_owned()
                } else {
                    pages.names.iter().cloned().collect::<Vec<_>>().join(", ")
                };
                return Err(format!(
                    "code {code:?}: no merchant has a page named {p:?} (known: {known}); add it under [merchant.ID.pages]"
                ));
            }
            None if !pages.template => {
                return Err(format!(
                    "code {code:?}: push_page without a page name needs a merchant's page_template; name a page (\"push_page:checkout\")"
                ));
            }
            _ => {}
        }
    }
    Ok(command)
}

/// A `dtmf_bind` action's binding; `Err` says what is wrong with which code. Page names are
/// checked against `pages` when given (at load).
fn parse(action: &ModuleAction, pages: Option<&Pages>) -> Result<Binding, String> {
    let codes = action
        .table("codes")
        .ok_or("needs codes = { \"*76\" = \"push_page:NAME\", ... }")?;
    if codes.is_empty() {
        return Err("codes is empty: bind at least one code".into());
    }
    let mut bound = BTreeMap::new();
    // Every code's problem at once: an ops engineer fixes them in one go.
    let mut problems = Vec::new();
    for (code, text) in codes {
        match check_binding(code, text, pages) {
            Ok(command) => {
                bound.insert(code.clone(), command);
            }
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let interdigit = match action.get("interdigit_ms") {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("interdigit_ms must be a number of milliseconds, got {v:?}"))?,
        None => DEFAULT_INTERDIGIT_MS,
    };
    let watch = switchboard_core::module::leg_param(action)?;
    let confirm = action.get("confirm") != Some("false");
    Ok(Binding {
        codes: bound,
        interdigit: Duration::from_millis(interdigit),
        watch,
        confirm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::Side;

    fn action(codes: &[(&str, &str)], params: &[(&str, &str)]) -> ModuleAction {
        ModuleAction {
            name: ACTION.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tables: [(
                "codes".to_string(),
                Arc::new(
                    codes
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            )]
            .into(),
        }
    }

    fn pages() -> Pages {
        Pages {
            names: ["checkout".to_string()].into(),
            template: false,
        }
    }

    #[test]
    fn a_binding_parses_with_its_defaults() {
        let b = parse(
            &action(&[("*76", "push_page:checkout"), ("*22", "volume:+20")], &[]),
            Some(&pages()),
        )
        .unwrap();
        assert_eq!(b.watch, Side::B);
        assert_eq!(b.interdigit, Duration::from_millis(1000));
        assert!(b.confirm);
        assert_eq!(b.codes["*22"], Command::Volume(Level::Step(20)));
        let b = parse(
            &action(
                &[("#1", "echo_cancellation:off")],
                &[("leg", "a"), ("interdigit_ms", "500"), ("confirm", "false")],
            ),
            Some(&pages()),
        )
        .unwrap();
        assert_eq!(b.watch, Side::A);
        assert_eq!(b.interdigit, Duration::from_millis(500));
        assert!(!b.confirm);
    }

    #[test]
    fn what_is_wrong_is_said_with_its_code() {
        for (codes, want) in [
            (vec![("*7x", "volume:+20")], "'x' is not a DTMF digit"),
            (
                vec![("*76", "push_pag:checkout")],
                "code \"*76\": unknown action \"push_pag\"",
            ),
            (
                vec![("*76", "push_page:cart")],
                "no merchant has a page named \"cart\" (known: checkout)",
            ),
            (
                vec![("*77", "push_page")],
                "needs a merchant's page_template",
            ),
            (vec![], "codes is empty"),
        ] {
            let e = parse(&action(&codes, &[]), Some(&pages())).unwrap_err();
            assert!(e.contains(want), "{codes:?}: {e}");
        }
        // Every bad code is named at once.
        let e = parse(
            &action(
                &[
                    ("*7x", "volume:+20"),
                    ("*76", "push_page:cart"),
                    ("*22", "volume:+20"),
                ],
                &[],
            ),
            Some(&pages()),
        )
        .unwrap_err();
        assert!(e.contains("'x'") && e.contains("\"cart\""), "{e}");
        let e = parse(
            &action(&[("*1", "volume:+5")], &[("leg", "c")]),
            Some(&pages()),
        )
        .unwrap_err();
        assert!(e.contains("leg must be"), "{e}");
    }

    #[test]
    fn at_call_time_page_names_are_the_browser_legs_to_check() {
        assert!(
            parse(
                &action(&[("*76", "push_page:cart"), ("*7", "push_page")], &[]),
                None
            )
            .is_ok()
        );
    }
}
