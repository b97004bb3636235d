//! What modules add to the dialplan language: actions of their own and kinds of bridge
//! target. Both are declared before the dialplan compiles, so a misspelt action, a missing
//! parameter or a target of an unknown kind is refused at load with `file:line:col`, never
//! found mid-call.

use std::collections::BTreeMap;

/// A dialplan action a module contributes (`{ NAME = { param = value, ... } }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// The action's name in dialplan files (snake_case).
    pub name: String,
    /// Its parameters.
    pub params: Vec<ParamSpec>,
    /// One line for `switchboard check` hints and docs.
    pub help: String,
    /// The module's own check of the literal values, after each has its right type (a
    /// code table's codes and commands): an `Err` is refused at load like any other error.
    pub check: Option<ActionCheck>,
}

/// A module's check of one use of its action: the action with its literal values (templated
/// ones left out: they are checked when a call expands them), `Err` in words.
#[derive(Clone)]
pub struct ActionCheck(pub std::sync::Arc<CheckFn>);

/// The function behind an [`ActionCheck`].
pub type CheckFn = dyn Fn(&ModuleAction) -> Result<(), String> + Send + Sync;

impl ActionCheck {
    /// A check.
    pub fn new(
        f: impl Fn(&ModuleAction) -> Result<(), String> + Send + Sync + 'static,
    ) -> ActionCheck {
        ActionCheck(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for ActionCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActionCheck")
    }
}

impl PartialEq for ActionCheck {
    fn eq(&self, other: &ActionCheck) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ActionCheck {}

/// One parameter of a module action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Name.
    pub name: String,
    /// What it must be.
    pub kind: ParamKind,
    /// Must be given.
    pub required: bool,
}

/// The type of a module action's parameter. Values may use `${var}` and `$1` templates;
/// a templated value is checked when the call expands it (the module sees a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamKind {
    /// Any text.
    Text,
    /// A whole number in a range.
    Integer {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// `true` or `false`.
    Bool,
    /// DTMF digits (`0-9`, `*`, `#`, `A-D`).
    Digits,
    /// A table of strings (`{ "*76" = "push_page:checkout" }`), literal (no templates): the
    /// module reads it with [`ModuleAction::table`].
    Table,
}

impl ParamKind {
    /// Checks a literal value; `Err` says what is wrong in words.
    pub fn check(&self, v: &toml::Value) -> Result<String, String> {
        match (self, v) {
            (ParamKind::Text, toml::Value::String(s)) => Ok(s.clone()),
            (ParamKind::Integer { min, max }, toml::Value::Integer(i)) => {
                if (*min..=*max).contains(i) {
                    Ok(i.to_string())
                } else {
                    Err(format!("must be {min} to {max}, got {i}"))
                }
            }
            (ParamKind::Bool, toml::Value::Boolean(b)) => Ok(b.to_string()),
            (ParamKind::Digits, toml::Value::String(s)) => match s.chars().find(|c| !is_dtmf(*c)) {
                Some(bad) => Err(format!("{bad:?} is not a DTMF digit")),
                None => Ok(s.clone()),
            },
            (ParamKind::Table, toml::Value::Table(_)) => {
                Err("is a table: read it with ParamKind::table".into())
            }
            (kind, other) => Err(format!(
                "must be {}, got {}",
                kind.describe(),
                other.type_str()
            )),
        }
    }

    /// Checks a literal table of strings; `Err` says what is wrong in words.
    pub fn table(&self, v: &toml::Value) -> Result<BTreeMap<String, String>, String> {
        let toml::Value::Table(t) = v else {
            return Err(format!("must be {}, got {}", self.describe(), v.type_str()));
        };
        t.iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!("{k:?} must be a string, got {}", other.type_str())),
            })
            .collect()
    }

    fn describe(&self) -> &'static str {
        match self {
            ParamKind::Text => "a string",
            ParamKind::Integer { .. } => "an integer",
            ParamKind::Bool => "true or false",
            ParamKind::Digits => "a string of DTMF digits",
            ParamKind::Table => "a table of strings ({ key = \"value\", ... })",
        }
    }
}

fn is_dtmf(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

/// A kind of bridge target a module resolves (`KIND/NAME[/USER]`, e.g. `gateway/acd/2000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The prefix before the first `/`.
    pub kind: String,
    /// The names it knows (a target naming another is refused at load); `None`: any name
    /// (the endpoint checks it when the call is placed).
    pub names: Option<Vec<String>>,
    /// The hint when `names` is empty (how to configure one).
    pub none_hint: String,
}

/// A module action as the plan carries it: its name and its parameters, expanded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModuleAction {
    /// The action's name.
    pub name: String,
    /// Parameter values (templates expanded; integers and booleans as text).
    pub params: BTreeMap<String, String>,
    /// Table parameters ([`ParamKind::Table`]), shared by every call of the plan.
    pub tables: BTreeMap<String, std::sync::Arc<BTreeMap<String, String>>>,
}

impl ModuleAction {
    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A table parameter.
    pub fn table(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.tables.get(name).map(|t| &**t)
    }
}
