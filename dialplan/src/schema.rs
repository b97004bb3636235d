//! What a dialplan file may contain, as serde reads it (`deny_unknown_fields` everywhere).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    #[serde(default)]
    pub extension: Vec<Spanned<Extension>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Extension {
    pub name: Spanned<String>,
    #[serde(default)]
    pub context: Option<Spanned<String>>,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    #[serde(default)]
    pub when: Option<When>,
    #[serde(default)]
    pub actions: Vec<Spanned<Action>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct When {
    pub destination: Option<Spanned<String>>,
    pub caller_number: Option<Spanned<String>>,
    pub caller_name: Option<Spanned<String>>,
    #[serde(default)]
    pub header: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub var: BTreeMap<String, Spanned<String>>,
    pub time: Option<Spanned<Time>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Time {
    pub zone: Spanned<String>,
    pub days: Option<Spanned<String>>,
    pub hours: Option<Spanned<String>>,
}

/// One action: a built-in one, or one a module contributes (checked against the
/// registered [`ActionSpec`](crate::ActionSpec)s in `compile`).
#[derive(Debug)]
pub(crate) enum Action {
    Set(BTreeMap<String, String>),
    HeaderAdd(BTreeMap<String, String>),
    HeaderRemove(Vec<String>),
    Answer,
    Hangup(String),
    Bridge(Bridge),
    Playback(String),
    Echo(u32),
    Tone(ToneAction),
    Ringback(String),
    ReadDigits(ReadDigits),
    Uui(Uui),
    /// Not built in: `{ name = value }` or `"name"` (value `None`).
    Module(String, Option<Spanned<toml::Value>>),
}

/// The built-in actions, as dialplan files spell them.
pub(crate) const BUILTIN: &[&str] = &[
    "set",
    "header_add",
    "header_remove",
    "answer",
    "hangup",
    "bridge",
    "playback",
    "echo",
    "tone",
    "ringback",
    "read_digits",
    "uui",
];

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Action, D::Error> {
        d.deserialize_any(ActionVisitor)
    }
}

struct ActionVisitor;

impl<'de> serde::de::Visitor<'de> for ActionVisitor {
    type Value = Action;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an action: \"answer\" or { NAME = ... }")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Action, E> {
        match v {
            "answer" => Ok(Action::Answer),
            other if BUILTIN.contains(&other) => Err(E::custom(format!(
                "action {other:?} needs a value: {{ {other} = ... }}"
            ))),
            other => Ok(Action::Module(other.to_owned(), None)),
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Action, A::Error> {
        use serde::de::Error;
        let Some(name) = map.next_key::<String>()? else {
            return Err(A::Error::custom("an action table needs one key: its name"));
        };
        let action = match name.as_str() {
            "set" => Action::Set(map.next_value()?),
            "header_add" => Action::HeaderAdd(map.next_value()?),
            "header_remove" => Action::HeaderRemove(map.next_value()?),
            "answer" => {
                let _: toml::Value = map.next_value()?;
                Action::Answer
            }
            "hangup" => Action::Hangup(map.next_value()?),
            "bridge" => Action::Bridge(map.next_value()?),
            "playback" => Action::Playback(map.next_value()?),
            "echo" => Action::Echo(map.next_value()?),
            "tone" => Action::Tone(map.next_value()?),
            "ringback" => Action::Ringback(map.next_value()?),
            "read_digits" => Action::ReadDigits(map.next_value()?),
            "uui" => Action::Uui(map.next_value()?),
            _ => Action::Module(name, Some(map.next_value()?)),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(A::Error::custom(format!(
                "one action per table: {extra:?} follows another action; write {{ {extra} = ... }} as its own entry"
            )));
        }
        Ok(action)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Uui {
    pub data: String,
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub max: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToneAction {
    pub play: String,
    #[serde(default)]
    pub seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadDigits {
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub min: Option<usize>,
    pub max: usize,
    #[serde(default)]
    pub timeout: Option<u32>,
    #[serde(default)]
    pub terminators: Option<String>,
    #[serde(default)]
    pub context: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bridge {
    pub targets: Vec<String>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub timeout: Option<u32>,
}
