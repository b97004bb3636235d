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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
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
