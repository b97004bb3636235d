//! What a code does: the commands the dialplan binds to codes, parsed from their text form
//! (`"push_page:checkout"`, `"volume:+20"`, `"echo_cancellation:off"`), and what each asks
//! of the caller's browser.

use std::fmt;

/// A volume or microphone level: a step in percentage points or a level in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `+20`, `-20`: percentage points up or down (the browser keeps it within bounds).
    Step(i32),
    /// `150`: this level, in percent.
    Set(u32),
}

/// Levels the browser may be set to, percent.
pub const LEVEL_MAX: u32 = 200;

/// What a bound code does in the caller's browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open a page: the merchant's page of this name, or (`None`) the merchant's page
    /// template with the code and session filled in, so the merchant's server maps codes.
    PushPage(Option<String>),
    /// The caller's speaker volume.
    Volume(Level),
    /// The caller's microphone gain.
    MicGain(Level),
    /// The browser's echo cancellation on or off.
    EchoCancellation(bool),
    /// Half-duplex echo suppression (the microphone ducks while the agent speaks) on or off.
    EchoSuppression(bool),
}

/// Action names, as the dialplan, the browser and the records spell them.
pub const ACTIONS: [&str; 5] = [
    "push_page",
    "volume",
    "mic_gain",
    "echo_cancellation",
    "echo_suppression",
];

impl Command {
    /// The action's name (`"push_page"`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::PushPage(_) => "push_page",
            Command::Volume(_) => "volume",
            Command::MicGain(_) => "mic_gain",
            Command::EchoCancellation(_) => "echo_cancellation",
            Command::EchoSuppression(_) => "echo_suppression",
        }
    }

    /// Parses `"name"` or `"name:argument"`; `Err` says what is wrong in words.
    pub fn parse(text: &str) -> Result<Command, String> {
        let (name, arg) = match text.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (text.trim(), None),
        };
        let on_off = |arg: Option<&str>| match arg {
            Some("on") => Ok(true),
            Some("off") => Ok(false),
            _ => Err(format!("{name} needs \"on\" or \"off\" (\"{name}:off\")")),
        };
        match name {
            "push_page" => match arg {
                None => Ok(Command::PushPage(None)),
                Some(page) if valid_page_name(page) => Ok(Command::PushPage(Some(page.into()))),
                Some(page) => Err(format!(
                    "page name \"{page}\" must be letters, digits, '-' or '_'"
                )),
            },
            "volume" => Ok(Command::Volume(parse_level(name, arg)?)),
            "mic_gain" => Ok(Command::MicGain(parse_level(name, arg)?)),
            "echo_cancellation" => Ok(Command::EchoCancellation(on_off(arg)?)),
            "echo_suppression" => Ok(Command::EchoSuppression(on_off(arg)?)),
            other => Err(format!(
                "unknown action \"{other}\" (known: {})",
                ACTIONS.join(", ")
            )),
        }
    }

    /// The message for the browser (the browser leg resolves a page name to its URL).
    pub fn to_json(&self, code: &str) -> serde_json::Value {
        use serde_json::json;
        let level = |l: &Level| match l {
            Level::Step(s) => json!({ "step": s }),
            Level::Set(v) => json!({ "set": v }),
        };
        let mut v = match self {
            Command::PushPage(page) => json!({ "page": page }),
            Command::Volume(l) | Command::MicGain(l) => level(l),
            Command::EchoCancellation(on) | Command::EchoSuppression(on) => json!({ "on": on }),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("action".into(), self.name().into());
            o.insert("code".into(), code.into());
        }
        v
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = |f: &mut fmt::Formatter<'_>, l: &Level| match l {
            Level::Step(s) => write!(f, "{s:+}"),
            Level::Set(v) => write!(f, "{v}"),
        };
        f.write_str(self.name())?;
        match self {
            Command::PushPage(None) => Ok(()),
            Command::PushPage(Some(p)) => write!(f, ":{p}"),
            Command::Volume(l) | Command::MicGain(l) => {
                f.write_str(":")?;
                level(f, l)
            }
            Command::EchoCancellation(on) | Command::EchoSuppression(on) => {
                write!(f, ":{}", if *on { "on" } else { "off" })
            }
        }
    }
}

fn parse_level(name: &str, arg: Option<&str>) -> Result<Level, String> {
    let hint = || {
        format!(
            "{name} needs a step (\"{name}:+20\", \"{name}:-20\") or a level in percent, 0 to {LEVEL_MAX} (\"{name}:100\")"
        )
    };
    let arg = arg.ok_or_else(hint)?;
    if let Some(rest) = arg.strip_prefix(['+', '-']) {
        let step: i32 = rest.parse().map_err(|_| hint())?;
        if step == 0 || step > LEVEL_MAX as i32 {
            return Err(hint());
        }
        Ok(Level::Step(if arg.starts_with('-') { -step } else { step }))
    } else {
        match arg.parse::<u32>() {
            Ok(v) if v <= LEVEL_MAX => Ok(Level::Set(v)),
            _ => Err(hint()),
        }
    }
}

/// Page names: what a merchant's `pages` table may use as keys.
pub fn valid_page_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A code: 1 to 8 DTMF digits. `Err` says what is wrong.
pub fn check_code(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("a code cannot be empty".into());
    }
    if code.chars().count() > 8 {
        return Err(format!("code \"{code}\" is longer than 8 digits"));
    }
    match code.chars().find(|c| !"0123456789*#ABCD".contains(*c)) {
        Some(c) => Err(format!(
            "code \"{code}\": '{c}' is not a DTMF digit (0-9, *, #, A-D)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_print_back() {
        for text in [
            "push_page:checkout",
            "push_page",
            "volume:+20",
            "volume:-20",
            "volume:150",
            "mic_gain:+10",
            "echo_cancellation:off",
            "echo_suppression:on",
        ] {
            let c = Command::parse(text).unwrap();
            assert_eq!(c.to_string(), text);
        }
        assert_eq!(
            Command::parse("volume:-20").unwrap(),
            Command::Volume(Level::Step(-20))
        );
    }

    #[test]
    fn bad_commands_say_why() {
        let e = Command::parse("push_pag:checkout").unwrap_err();
        assert!(e.contains("unknown action \"push_pag\""), "{e}");
        assert!(Command::parse("volume").unwrap_err().contains("step"));
        assert!(Command::parse("volume:+0").is_err());
        assert!(Command::parse("volume:201").is_err());
        assert!(Command::parse("volume:loud").is_err());
        assert!(
            Command::parse("echo_cancellation:maybe")
                .unwrap_err()
                .contains("\"on\" or \"off\"")
        );
        assert!(Command::parse("push_page:../admin").is_err());
    }

    #[test]
    fn codes_are_dtmf_digits() {
        assert!(check_code("*76").is_ok());
        assert!(check_code("#1A").is_ok());
        assert!(check_code("").is_err());
        assert!(check_code("*7x").unwrap_err().contains("'x'"));
        assert!(check_code("123456789").is_err());
    }

    #[test]
    fn the_browser_gets_the_action_and_its_code() {
        let v = Command::parse("volume:-20").unwrap().to_json("*88");
        assert_eq!(v["action"], "volume");
        assert_eq!(v["step"], -20);
        assert_eq!(v["code"], "*88");
        let v = Command::parse("push_page:checkout").unwrap().to_json("*76");
        assert_eq!(v["page"], "checkout");
        let v = Command::parse("echo_cancellation:off")
            .unwrap()
            .to_json("*31");
        assert_eq!(v["on"], false);
    }
}
