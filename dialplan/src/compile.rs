//! From TOML text to a checked [`Dialplan`], collecting every problem on the way.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use toml::Spanned;

use crate::cause::Cause;
use crate::diag::{Diagnostic, Diagnostics};
use crate::module::{ActionSpec, EndpointSpec, ModuleAction, ParamKind};
use crate::schema;
use crate::template::Template;
use crate::{ActionTpl, Cond, Dialplan, Extension, Field, Strategy, TargetTpl, TimeCond};

/// What the dialplan may refer to, known from the rest of the configuration.
#[derive(Debug, Clone, Default)]
pub struct CompileEnv {
    /// Names of the prompts in the sounds directory (`playback`, `read_digits`).
    pub prompts: Vec<String>,
    /// Kinds of bridge target the modules resolve (`gateway/...`), with their names.
    pub endpoints: Vec<EndpointSpec>,
    /// Actions the modules contribute.
    pub actions: Vec<ActionSpec>,
}

impl CompileEnv {
    /// The environment of a switch whose only endpoint kind is `gateway` (tests, tools).
    pub fn with_gateways(gateways: Vec<String>, prompts: Vec<String>) -> CompileEnv {
        CompileEnv {
            prompts,
            endpoints: vec![EndpointSpec {
                kind: "gateway".into(),
                names: Some(gateways),
                none_hint:
                    "no gateway is configured: add one under [gateway.NAME] in switchboard.toml"
                        .into(),
            }],
            actions: Vec::new(),
        }
    }

    fn action_names(&self) -> String {
        let mut names: Vec<&str> = crate::schema::BUILTIN.to_vec();
        names.extend(self.actions.iter().map(|a| a.name.as_str()));
        names.join(", ")
    }
}

/// One source file.
#[derive(Debug, Clone)]
pub struct Source {
    /// Path, as it should appear in diagnostics.
    pub path: String,
    /// The file's text.
    pub text: String,
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    env: &'a CompileEnv,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Option<Range<usize>>, msg: impl Into<String>, hint: Option<&str>) {
        self.diags.push(Diagnostic::at(
            self.file,
            self.text,
            span,
            msg,
            hint.map(str::to_owned),
        ));
    }
}

/// Compiles dialplan sources. Returns the dialplan, or every diagnostic found in every file.
pub fn compile(sources: &[Source], env: &CompileEnv) -> Result<Dialplan, Diagnostics> {
    let mut diags = Vec::new();
    let mut contexts: HashMap<String, Vec<Extension>> = HashMap::new();
    for src in sources {
        let parsed: schema::File = match toml::from_str(&src.text) {
            Ok(f) => f,
            Err(e) => {
                diags.push(Diagnostic::at(
                    &src.path,
                    &src.text,
                    e.span(),
                    e.message().trim(),
                    toml_hint(e.message()),
                ));
                continue;
            }
        };
        let mut cx = Ctx {
            file: &src.path,
            text: &src.text,
            env,
            diags: Vec::new(),
        };
        for ext in parsed.extension {
            let span = ext.span();
            if let Some((ctx, e)) = compile_extension(&mut cx, ext.into_inner(), span) {
                contexts.entry(ctx).or_default().push(e);
            }
        }
        diags.append(&mut cx.diags);
    }
    if diags.is_empty() {
        Ok(Dialplan { contexts })
    } else {
        Err(Diagnostics(diags))
    }
}

fn toml_hint(msg: &str) -> Option<String> {
    if msg.contains("unknown field") {
        Some("check the spelling; docs/dialplan.md lists every key".into())
    } else {
        None
    }
}

fn compile_extension(
    cx: &mut Ctx<'_>,
    ext: schema::Extension,
    span: Range<usize>,
) -> Option<(String, Extension)> {
    let before = cx.diags.len();
    let context = ext
        .context
        .map(|c| c.into_inner())
        .unwrap_or_else(|| "default".to_owned());
    let name = ext.name.into_inner();
    let mut conds = Vec::new();
    let mut time = None;
    if let Some(w) = ext.when {
        let mut add = |cx: &mut Ctx<'_>, field: Field, expr: Spanned<String>| {
            let span = expr.span();
            match Regex::new(expr.get_ref()) {
                Ok(regex) => conds.push(Cond { field, regex }),
                Err(e) => cx.err(Some(span), format!("invalid regular expression: {}", first_line(&e.to_string())), Some("the syntax is Rust's regex crate (like PCRE without look-around); escape backslashes in \"...\" strings or use '...'")),
            }
        };
        if let Some(e) = w.destination {
            add(cx, Field::Destination, e);
        }
        if let Some(e) = w.caller_number {
            add(cx, Field::CallerNumber, e);
        }
        if let Some(e) = w.caller_name {
            add(cx, Field::CallerName, e);
        }
        for (k, e) in w.header {
            add(cx, Field::Header(k), e);
        }
        for (k, e) in w.var {
            add(cx, Field::Var(k), e);
        }
        if let Some(t) = w.time {
            time = compile_time(cx, t);
        }
    }
    let mut actions = Vec::new();
    for a in ext.actions {
        let span = a.span();
        if let Some(a) = compile_action(cx, a.into_inner(), span) {
            actions.push(a);
        }
    }
    let (line, _) = crate::diag::line_col(cx.text, span.start);
    (cx.diags.len() == before).then(|| {
        (
            context,
            Extension {
                name,
                file: cx.file.to_owned(),
                line,
                cont: ext.continue_,
                conds,
                time,
                actions,
            },
        )
    })
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_owned()
}

fn compile_time(cx: &mut Ctx<'_>, t: Spanned<schema::Time>) -> Option<TimeCond> {
    let t = t.into_inner();
    let zone_span = t.zone.span();
    let tz = match jiff::tz::TimeZone::get(t.zone.get_ref()) {
        Ok(tz) => Some(tz),
        Err(_) => {
            cx.err(
                Some(zone_span),
                format!("unknown time zone {:?}", t.zone.get_ref()),
                Some("use an IANA name such as \"America/New_York\" or \"UTC\""),
            );
            None
        }
    };
    let days = match &t.days {
        Some(d) => match parse_days(d.get_ref()) {
            Ok(mask) => mask,
            Err(m) => {
                cx.err(
                    Some(d.span()),
                    m,
                    Some("write days like \"mon-fri\" or \"sat,sun\""),
                );
                0
            }
        },
        None => 0x7f,
    };
    let hours = match &t.hours {
        Some(h) => match parse_hours(h.get_ref()) {
            Ok(v) => v,
            Err(m) => {
                cx.err(Some(h.span()), m, Some("write hours like \"09:00-17:30\" or \"08:00-12:00,13:00-18:00\" (end exclusive)"));
                vec![]
            }
        },
        None => vec![(0, 24 * 60)],
    };
    Some(TimeCond {
        tz: tz?,
        days,
        hours,
    })
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(s: &str) -> Result<u32, String> {
    let s = s.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| s.starts_with(d) && s.len() <= 9)
        .map(|i| i as u32)
        .ok_or_else(|| format!("unknown day {s:?}"))
}

/// `mon-fri,sun` → bitmask, bit 0 = Monday.
fn parse_days(s: &str) -> Result<u8, String> {
    let mut mask = 0u8;
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (day_index(a)?, day_index(b)?),
            None => (day_index(part)?, day_index(part)?),
        };
        let mut d = a;
        loop {
            mask |= 1 << d;
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(mask)
}

fn minutes(s: &str) -> Result<u16, String> {
    let (h, m) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let h: u16 = h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    let m: u16 = m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

fn parse_hours(s: &str) -> Result<Vec<(u16, u16)>, String> {
    s.split(',')
        .map(|r| {
            let (a, b) = r
                .split_once('-')
                .ok_or_else(|| format!("{r:?} is not a range"))?;
            let (a, b) = (minutes(a)?, minutes(b)?);
            if a >= b {
                return Err(format!("range {r:?} ends before it starts"));
            }
            Ok((a, b))
        })
        .collect()
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c))
}

/// Headers the B2BUA owns: a dialplan may not add or remove them.
const RESERVED: &[&str] = &[
    "via",
    "from",
    "to",
    "call-id",
    "cseq",
    "contact",
    "route",
    "record-route",
    "max-forwards",
    "content-length",
    "content-type",
];

fn compile_action(cx: &mut Ctx<'_>, a: schema::Action, span: Range<usize>) -> Option<ActionTpl> {
    let s = Some(span.clone());
    Some(match a {
        schema::Action::Set(vars) => {
            for (k, v) in &vars {
                if matches!(k.as_str(), "dtmf_a" | "dtmf_b")
                    && !v.contains('$')
                    && switchboard_media::DtmfMethod::parse(v).is_none()
                {
                    cx.err(
                        s.clone(),
                        format!("{k} = {v:?} is not a DTMF form"),
                        Some("use rfc4733, info or inband"),
                    );
                }
                if k == "srtp_b"
                    && !v.contains('$')
                    && switchboard_media::srtp::Policy::parse(v).is_none()
                {
                    cx.err(
                        s.clone(),
                        format!("srtp_b = {v:?} is not an SRTP setting"),
                        Some("use off, optional or required"),
                    );
                }
            }
            ActionTpl::Set(
                vars.into_iter()
                    .map(|(k, v)| (k, Template::new(&v)))
                    .collect(),
            )
        }
        schema::Action::HeaderAdd(h) => {
            for k in h.keys() {
                check_header_name(cx, s.clone(), k);
            }
            ActionTpl::HeaderAdd(h.into_iter().map(|(k, v)| (k, Template::new(&v))).collect())
        }
        schema::Action::HeaderRemove(names) => {
            for k in &names {
                check_header_name(cx, s.clone(), k);
            }
            ActionTpl::HeaderRemove(names)
        }
        schema::Action::Answer => ActionTpl::Answer,
        schema::Action::Hangup(c) => match Cause::from_name(&c) {
            Some(c) => ActionTpl::Hangup(c),
            None => {
                let known: Vec<&str> = Cause::ALL.iter().map(|c| c.name()).collect();
                cx.err(
                    s,
                    format!("unknown hang-up cause {c:?}"),
                    Some(&format!("use one of {}", known.join(", "))),
                );
                return None;
            }
        },
        schema::Action::Bridge(b) => return compile_bridge(cx, b, span),
        schema::Action::Module(name, value) => return compile_module_action(cx, name, value, span),
        schema::Action::Uui(u) => {
            let purpose = u.purpose.unwrap_or_else(|| "isdn-uui".into());
            if !is_header_name(&purpose) {
                cx.err(
                    s.clone(),
                    format!("uui purpose {purpose:?} is not a token"),
                    Some("e.g. \"isdn-uui\" (RFC 7434)"),
                );
            }
            let max = u.max.unwrap_or(128);
            if max == 0 || max > 1024 {
                cx.err(
                    s,
                    format!("uui max {max} is out of range"),
                    Some("1 to 1024 bytes before hex encoding; ISDN gateways carry 128"),
                );
            }
            ActionTpl::Uui(Template::new(&u.data), purpose, max)
        }
        schema::Action::Playback(p) => {
            check_prompt(cx, s.clone(), &p);
            ActionTpl::Media(crate::Action::Playback(p))
        }
        schema::Action::Echo(secs) => {
            if secs == 0 || secs > 3600 {
                cx.err(
                    s,
                    "echo seconds must be 1 to 3600",
                    Some("for example { echo = 120 }: the caller hears themself for two minutes"),
                );
            }
            ActionTpl::Media(crate::Action::Echo(Duration::from_secs(u64::from(secs))))
        }
        schema::Action::Tone(t) => {
            check_tone(cx, s.clone(), &t.play);
            let secs = t.seconds.unwrap_or(5);
            if secs == 0 {
                cx.err(s, "tone seconds must be at least 1", None);
            }
            ActionTpl::Media(crate::Action::Tone {
                spec: t.play,
                duration: Duration::from_secs(u64::from(secs)),
            })
        }
        schema::Action::Ringback(t) => {
            check_tone(cx, s, &t);
            ActionTpl::Media(crate::Action::Ringback(t))
        }
        schema::Action::ReadDigits(r) => {
            if let Some(p) = &r.prompt {
                check_prompt(cx, s.clone(), p);
            }
            let min = r.min.unwrap_or(1);
            if r.max == 0 || r.max > 32 || min > r.max {
                cx.err(
                    s.clone(),
                    format!(
                        "read_digits wants 1 <= min <= max <= 32, got min {min}, max {}",
                        r.max
                    ),
                    None,
                );
            }
            let terminators = r.terminators.unwrap_or_else(|| "#".into());
            if let Some(bad) = terminators
                .chars()
                .find(|c| !matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
            {
                cx.err(
                    s.clone(),
                    format!("terminator {bad:?} is not a DTMF digit"),
                    Some("use digits, * or #"),
                );
            }
            let timeout = r.timeout.unwrap_or(5);
            if timeout == 0 {
                cx.err(s, "read_digits timeout must be at least 1 second", None);
            }
            ActionTpl::Media(crate::Action::ReadDigits(crate::ReadDigits {
                prompt: r.prompt,
                min,
                max: r.max,
                timeout: Duration::from_secs(u64::from(timeout)),
                terminators,
                context: r.context,
            }))
        }
    })
}

fn check_prompt(cx: &mut Ctx<'_>, span: Option<Range<usize>>, name: &str) {
    if !cx.env.prompts.iter().any(|p| p == name) {
        let hint = if cx.env.prompts.is_empty() {
            "no prompts found: check [media] sounds in switchboard.toml".to_owned()
        } else {
            format!("prompts are: {}", cx.env.prompts.join(", "))
        };
        cx.err(span, format!("unknown prompt {name:?}"), Some(&hint));
    }
}

fn check_tone(cx: &mut Ctx<'_>, span: Option<Range<usize>>, spec: &str) {
    if let Err(e) = switchboard_media::tone::parse(spec) {
        cx.err(span, e.to_string(), None);
    }
}

fn check_header_name(cx: &mut Ctx<'_>, span: Option<Range<usize>>, k: &str) {
    if !is_header_name(k) {
        cx.err(
            span,
            format!("{k:?} is not a valid SIP header name"),
            Some("header names are tokens: letters, digits and -.!%*_+`'~"),
        );
    } else if RESERVED.contains(&k.to_ascii_lowercase().as_str()) {
        cx.err(
            span,
            format!("header {k:?} is managed by the switch and cannot be changed here"),
            Some("use caller-ID rules on the gateway, or variables"),
        );
    }
}

fn compile_bridge(cx: &mut Ctx<'_>, b: schema::Bridge, span: Range<usize>) -> Option<ActionTpl> {
    let before = cx.diags.len();
    let strategy = match b.strategy.as_deref() {
        None | Some("sequence") => Strategy::Sequence,
        Some("parallel") => Strategy::Parallel,
        Some(other) => {
            cx.err(
                Some(span.clone()),
                format!("unknown bridge strategy {other:?}"),
                Some("use \"sequence\" (failover, in order) or \"parallel\" (ring all)"),
            );
            Strategy::Sequence
        }
    };
    if b.targets.is_empty() {
        cx.err(
            Some(span.clone()),
            "bridge has no targets",
            Some("targets = [\"gateway/NAME/NUMBER\", \"sip:user@host\"]"),
        );
    }
    let timeout = match b.timeout {
        Some(0) => {
            cx.err(
                Some(span.clone()),
                "bridge timeout must be at least 1 second",
                None,
            );
            Duration::from_secs(1)
        }
        Some(t) => Duration::from_secs(u64::from(t)),
        None => Duration::from_secs(30),
    };
    let mut targets = Vec::new();
    for t in &b.targets {
        if t.starts_with("sip:") || t.starts_with("sips:") {
            targets.push(TargetTpl::Uri(Template::new(t)));
            continue;
        }
        let kind = t.split_once('/').map(|(k, _)| k);
        let Some(spec) = kind.and_then(|k| cx.env.endpoints.iter().find(|e| e.kind == k)) else {
            let kinds: Vec<String> = cx
                .env
                .endpoints
                .iter()
                .map(|e| format!("\"{}/NAME/NUMBER\"", e.kind))
                .collect();
            let hint = format!("write {} or a sip: URI", kinds.join(", "));
            cx.err(
                Some(span.clone()),
                format!("bridge target {t:?} is not understood"),
                Some(&hint),
            );
            continue;
        };
        let rest = &t[spec.kind.len() + 1..];
        let (name, user) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(names) = &spec.names
            && !names.iter().any(|g| g == name)
        {
            let hint = if names.is_empty() {
                spec.none_hint.clone()
            } else {
                format!("configured {}s: {}", spec.kind, names.join(", "))
            };
            cx.err(
                Some(span.clone()),
                format!("bridge target {t:?} names unknown {} {name:?}", spec.kind),
                Some(&hint),
            );
            continue;
        }
        targets.push(TargetTpl::Endpoint {
            kind: spec.kind.clone(),
            name: name.to_owned(),
            user: Template::new(user),
        });
    }
    (cx.diags.len() == before).then_some(ActionTpl::Bridge {
        targets,
        strategy,
        timeout,
    })
}

/// A module's action: known by name, every parameter known, required ones given, literal
/// values of the right type.
fn compile_module_action(
    cx: &mut Ctx<'_>,
    name: String,
    value: Option<Spanned<toml::Value>>,
    span: Range<usize>,
) -> Option<ActionTpl> {
    let Some(spec) = cx.env.actions.iter().find(|a| a.name == name) else {
        let hint = format!("actions are: {}", cx.env.action_names());
        cx.err(Some(span), format!("unknown action {name:?}"), Some(&hint));
        return None;
    };
    let before = cx.diags.len();
    let at = value.as_ref().map_or(span.clone(), Spanned::span);
    let table = match value.map(Spanned::into_inner) {
        None => toml::Table::new(),
        Some(toml::Value::Table(t)) => t,
        Some(other) => {
            cx.err(
                Some(at),
                format!(
                    "action {name:?} takes a table of parameters, got {}",
                    other.type_str()
                ),
                Some(&spec_usage(spec)),
            );
            return None;
        }
    };
    let mut params = Vec::new();
    let mut tables = BTreeMap::new();
    // What the module's own check sees: the literal values.
    let mut literal = ModuleAction {
        name: name.clone(),
        ..ModuleAction::default()
    };
    for (k, v) in &table {
        let Some(p) = spec.params.iter().find(|p| &p.name == k) else {
            cx.err(
                Some(at.clone()),
                format!("action {name:?} has no parameter {k:?}"),
                Some(&spec_usage(spec)),
            );
            continue;
        };
        if p.kind == ParamKind::Table {
            match p.kind.table(v) {
                Ok(t) => {
                    let t = Arc::new(t);
                    literal.tables.insert(k.clone(), t.clone());
                    tables.insert(k.clone(), t);
                }
                Err(e) => cx.err(
                    Some(at.clone()),
                    format!("{name} parameter {k:?} {e}"),
                    Some(&spec_usage(spec)),
                ),
            }
            continue;
        }
        let templated = matches!(v, toml::Value::String(s) if s.contains('$'));
        let text = if templated {
            v.as_str().map(str::to_owned)
        } else {
            match p.kind.check(v) {
                Ok(t) => Some(t),
                Err(e) => {
                    cx.err(
                        Some(at.clone()),
                        format!("{name} parameter {k:?} {e}"),
                        Some(&spec_usage(spec)),
                    );
                    None
                }
            }
        };
        if let Some(t) = text {
            if !templated {
                literal.params.insert(k.clone(), t.clone());
            }
            params.push((k.clone(), Template::new(&t)));
        }
    }
    for p in spec.params.iter().filter(|p| p.required) {
        if !table.contains_key(&p.name) {
            cx.err(
                Some(at.clone()),
                format!("action {name:?} needs parameter {:?}", p.name),
                Some(&spec_usage(spec)),
            );
        }
    }
    if cx.diags.len() == before
        && let Some(check) = &spec.check
        && let Err(e) = (check.0)(&literal)
    {
        cx.err(Some(at), format!("{name}: {e}"), Some(&spec_usage(spec)));
    }
    (cx.diags.len() == before).then_some(ActionTpl::Module {
        name,
        params,
        tables,
    })
}

fn spec_usage(spec: &ActionSpec) -> String {
    let params: Vec<String> = spec
        .params
        .iter()
        .map(|p| {
            let opt = if p.required { "" } else { " (optional)" };
            format!("{}{opt}", p.name)
        })
        .collect();
    format!(
        "{}: {}; parameters: {}",
        spec.name,
        spec.help,
        params.join(", ")
    )
}
