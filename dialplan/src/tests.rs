use super::*;

fn env() -> CompileEnv {
    let mut env = CompileEnv::with_gateways(
        vec!["acd1".into(), "acd2".into()],
        vec!["connecting".into(), "closed".into()],
    );
    env.actions.push(ActionSpec {
        name: "swallow".into(),
        params: vec![
            ParamSpec {
                name: "digits".into(),
                kind: ParamKind::Digits,
                required: true,
            },
            ParamSpec {
                name: "for_ms".into(),
                kind: ParamKind::Integer { min: 1, max: 5000 },
                required: false,
            },
        ],
        help: "keeps digits from the other leg".into(),
        check: None,
    });
    env.actions.push(ActionSpec {
        name: "bind".into(),
        params: vec![ParamSpec {
            name: "codes".into(),
            kind: ParamKind::Table,
            required: true,
        }],
        help: "binds codes".into(),
        check: Some(ActionCheck::new(|a| {
            let codes = a.table("codes").ok_or("no codes")?;
            match codes.iter().find(|(_, v)| v.as_str() != "ok") {
                Some((k, v)) => Err(format!("code {k:?}: {v:?} is not \"ok\"")),
                None => Ok(()),
            }
        })),
    });
    env
}

fn src(path: &str, text: &str) -> Source {
    Source {
        path: path.into(),
        text: text.into(),
    }
}

fn facts(dest: &str) -> Facts {
    Facts {
        context: "public".into(),
        destination: dest.into(),
        caller_number: "15551230000".into(),
        caller_name: "Alice".into(),
        headers: vec![("X-Merchant".into(), "acme".into())],
        vars: BTreeMap::new(),
        // A Wednesday, 15:00 UTC = 10:00 in New York.
        now: "2026-11-25T15:00:00Z".parse().unwrap(),
    }
}

const PLAN: &str = r#"
[[extension]]
name = "tag-merchant"
context = "public"
continue = true
when.header.X-Merchant = '^(?P<merchant>\w+)$'
actions = [ { set = { merchant = "${merchant}" } } ]

[[extension]]
name = "sales-open"
context = "public"
when.destination = '^sales-(\d+)$'
when.var.merchant = '^acme$'
when.time = { zone = "America/New_York", days = "mon-fri", hours = "09:00-17:00" }
actions = [
  { header_add = { X-Route = "sales-$1-${merchant}" } },
  { header_remove = ["X-Internal"] },
  { bridge = { targets = ["gateway/acd1/$1", "gateway/acd2/$1"], strategy = "sequence", timeout = 20 } },
]

[[extension]]
name = "closed"
context = "public"
when.destination = '^sales-'
actions = [ { hangup = "NO_ANSWER" } ]
"#;

#[test]
fn matching_extension_builds_a_plan_with_captures_variables_and_failover() {
    let dp = compile(&[src("default.toml", PLAN)], &env()).unwrap();
    let plan = dp.evaluate(&facts("sales-42"));
    assert_eq!(plan.matched.len(), 2, "{:#?}", plan.trace);
    assert_eq!(plan.vars.get("merchant").map(String::as_str), Some("acme"));
    assert_eq!(
        plan.actions[0],
        Action::HeaderAdd {
            name: "X-Route".into(),
            value: "sales-42-acme".into()
        }
    );
    assert_eq!(plan.actions[1], Action::HeaderRemove("X-Internal".into()));
    let Action::Bridge(b) = &plan.actions[2] else {
        panic!("{plan:?}")
    };
    assert_eq!(
        b.targets,
        vec![
            Target::Endpoint {
                kind: "gateway".into(),
                name: "acd1".into(),
                user: "42".into()
            },
            Target::Endpoint {
                kind: "gateway".into(),
                name: "acd2".into(),
                user: "42".into()
            },
        ]
    );
    assert_eq!(b.timeout, Duration::from_secs(20));
}

#[test]
fn time_window_in_a_named_zone_sends_night_calls_elsewhere() {
    let dp = compile(&[src("default.toml", PLAN)], &env()).unwrap();
    let mut f = facts("sales-42");
    f.now = "2026-11-26T03:00:00Z".parse().unwrap(); // 22:00 in New York
    let plan = dp.evaluate(&f);
    assert_eq!(
        plan.actions,
        vec![Action::Hangup(Cause::NoAnswer)],
        "{:#?}",
        plan.trace
    );
    assert!(plan.trace.iter().any(|l| l.contains("outside the window")));
    f.now = "2026-11-28T15:00:00Z".parse().unwrap(); // Saturday
    assert_eq!(
        dp.evaluate(&f).actions,
        vec![Action::Hangup(Cause::NoAnswer)]
    );
}

#[test]
fn no_match_gives_an_empty_plan_with_a_reason() {
    let dp = compile(&[src("default.toml", PLAN)], &env()).unwrap();
    let plan = dp.evaluate(&facts("support"));
    assert!(plan.actions.is_empty());
    assert!(plan.trace.last().unwrap().contains("NO_ROUTE_DESTINATION"));
    let mut f = facts("sales-1");
    f.context = "nowhere".into();
    assert!(dp.evaluate(&f).actions.is_empty());
}

#[test]
fn every_error_in_every_file_is_reported_with_file_line_and_column() {
    let bad1 = r#"
[[extension]]
name = "a"
when.destination = '^(unclosed'
actions = [ { hangup = "BUSY_BUSY" } ]

[[extension]]
name = "b"
when.time = { zone = "Mars/Olympus", days = "mon-funday", hours = "18:00-09:00" }
actions = [ { bridge = { targets = ["gateway/nope/1", "tel:123"], strategy = "random" } } ]
"#;
    let bad2 = "[[extension]]\nname = \"c\"\nactoins = []\n";
    let bad3 = "[[extension]]\nname = \"d\"\nactions = [ { header_add = { Via = \"x\", \"Bad Name\" = \"y\" } } ]\n";
    let err = compile(
        &[
            src("one.toml", bad1),
            src("two.toml", bad2),
            src("three.toml", bad3),
        ],
        &env(),
    )
    .unwrap_err();
    let text = err.to_string();
    for want in [
        "one.toml:4:20: error: invalid regular expression",
        "one.toml:5:13: error: unknown hang-up cause \"BUSY_BUSY\"",
        "one.toml:9:22: error: unknown time zone \"Mars/Olympus\"",
        "unknown day \"funday\"",
        "ends before it starts",
        "unknown gateway \"nope\"",
        "hint: configured gateways: acd1, acd2",
        "\"tel:123\" is not understood",
        "unknown bridge strategy \"random\"",
        "two.toml:3:1: error: unknown field `actoins`",
        "three.toml:3:",
        "header \"Via\" is managed by the switch",
        "\"Bad Name\" is not a valid SIP header name",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn unknown_action_and_bad_toml_are_refused() {
    let err = compile(
        &[src(
            "x.toml",
            "[[extension]]\nname = \"a\"\nactions = [ { dial = \"x\" } ]\n",
        )],
        &env(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("x.toml:3:"), "{err}");
    assert!(err.to_string().contains("hint: actions are"), "{err}");
    let err = compile(&[src("y.toml", "[[extension]\n")], &env()).unwrap_err();
    assert!(err.to_string().starts_with("y.toml:1:"), "{err}");
}

#[test]
fn media_variables_with_a_literal_that_means_nothing_are_refused_at_load() {
    for (set, want) in [
        (
            "dtmf_b = \"tones\"",
            "dtmf_b = \"tones\" is not a DTMF form",
        ),
        (
            "srtp_b = \"mandatory\"",
            "srtp_b = \"mandatory\" is not an SRTP setting",
        ),
    ] {
        let err = compile(
            &[src(
                "v.toml",
                &format!("[[extension]]\nname = \"a\"\nactions = [ {{ set = {{ {set} }} }} ]\n"),
            )],
            &env(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("v.toml:3:"), "{err}");
        assert!(err.to_string().contains(want), "{err}");
    }
    let ok = "[[extension]]\nname = \"a\"\nactions = [ { set = { srtp_b = \"required\" } } ]\n";
    assert!(compile(&[src("v.toml", ok)], &env()).is_ok());
}

#[test]
fn uui_is_hex_with_encoding_and_purpose_and_cut_to_its_budget() {
    assert_eq!(
        crate::uui_value("acme", "isdn-uui", 128),
        "61636D65;encoding=hex;purpose=isdn-uui"
    );
    // Cut at a character boundary: "é" is two bytes.
    assert_eq!(crate::uui_value("aé", "x", 2), "61;encoding=hex;purpose=x");
    assert_eq!(crate::uui_value("", "x", 8), ";encoding=hex;purpose=x");
    let plan = compile(
        &[src(
            "u.toml",
            r#"
[[extension]]
name = "u"
context = "public"
actions = [ { uui = { data = "s=${destination}" } } ]
"#,
        )],
        &env(),
    )
    .unwrap()
    .evaluate(&facts("12"));
    assert!(plan.actions.iter().any(|a| matches!(a, Action::HeaderAdd { name, value } if name == "User-to-User" && value == "733D3132;encoding=hex;purpose=isdn-uui")), "{:?}", plan.actions);
    let err = compile(
        &[src("u.toml", "[[extension]]\nname = \"u\"\nactions = [ { uui = { data = \"x\", purpose = \"a b\", max = 0 } } ]\n")],
        &env(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not a token") && err.contains("out of range"),
        "{err}"
    );
}

#[test]
fn module_action_is_checked_at_load_and_expanded_per_call() {
    let ok = compile(
        &[src(
            "m.toml",
            "[[extension]]\nname = \"m\"\ncontext = \"public\"\nwhen.destination = '^(\\d+)$'\nactions = [ { swallow = { digits = \"#\", for_ms = 200 } }, { swallow = { digits = \"$1\" } } ]\n",
        )],
        &env(),
    )
    .unwrap();
    let plan = ok.evaluate(&facts("42"));
    assert_eq!(
        plan.actions,
        vec![
            Action::Module(ModuleAction {
                name: "swallow".into(),
                params: [
                    ("digits".into(), "#".into()),
                    ("for_ms".into(), "200".into())
                ]
                .into(),
                ..Default::default()
            }),
            Action::Module(ModuleAction {
                name: "swallow".into(),
                params: [("digits".into(), "42".into())].into(),
                ..Default::default()
            }),
        ]
    );
    for (text, want) in [
        (
            "{ swallow = { digitz = \"#\" } }",
            "has no parameter \"digitz\"",
        ),
        (
            "{ swallow = { for_ms = 10 } }",
            "needs parameter \"digits\"",
        ),
        (
            "{ swallow = { digits = \"x\" } }",
            "'x' is not a DTMF digit",
        ),
        (
            "{ swallow = { digits = \"#\", for_ms = 0 } }",
            "must be 1 to 5000, got 0",
        ),
        (
            "{ swallow = { digits = \"#\", for_ms = \"long\" } }",
            "must be an integer, got string",
        ),
        ("{ swallow = 3 }", "takes a table of parameters"),
        ("\"swallo\"", "unknown action \"swallo\""),
    ] {
        let err = compile(
            &[src(
                "m.toml",
                &format!("[[extension]]\nname = \"m\"\nactions = [ {text} ]\n"),
            )],
            &env(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("m.toml:3:"), "{text}: {err}");
        assert!(err.contains(want), "{text}: want {want:?} in {err}");
        assert!(err.contains("hint:"), "{text}: {err}");
    }
}

#[test]
fn a_table_parameter_reaches_the_module_and_its_own_check_runs_at_load() {
    let ok = compile(
        &[src(
            "t.toml",
            "[[extension]]\nname = \"t\"\ncontext = \"public\"\nactions = [ { bind = { codes = { \"*76\" = \"ok\", \"*22\" = \"ok\" } } } ]\n",
        )],
        &env(),
    )
    .unwrap();
    let plan = ok.evaluate(&facts("42"));
    let Action::Module(m) = &plan.actions[0] else {
        panic!("{:?}", plan.actions)
    };
    let codes = m.table("codes").unwrap();
    assert_eq!(codes.get("*76").map(String::as_str), Some("ok"));
    assert_eq!(codes.len(), 2);

    for (text, want) in [
        (
            "{ bind = { codes = { \"*76\" = \"nope\" } } }",
            "bind: code \"*76\": \"nope\" is not \"ok\"",
        ),
        (
            "{ bind = { codes = { \"*76\" = 5 } } }",
            "bind parameter \"codes\" \"*76\" must be a string, got integer",
        ),
        (
            "{ bind = { codes = \"*76\" } }",
            "must be a table of strings",
        ),
    ] {
        let e = compile(
            &[src(
                "t.toml",
                &format!(
                    "[[extension]]\nname = \"t\"\ncontext = \"public\"\nactions = [\n  {text} ]\n"
                ),
            )],
            &env(),
        )
        .unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains(want), "{text}: {shown}");
        assert!(shown.contains("t.toml:5:"), "{text}: {shown}");
    }
}
