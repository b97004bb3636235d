//! CSV export of records (`switchboard cdr export`, `GET /api/v1/cdrs?format=csv`).

use crate::Cdr;

/// CSV (RFC 4180) of records, header first.
pub fn to_csv(cdrs: &[Cdr]) -> String {
    fn field(out: &mut String, v: &str) {
        if v.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(v);
        }
    }
    let mut out = String::from(
        "id,call_id,b_call_id,caller,destination,context,target,ani,started,ringing,answered,ended,billable_secs,cause,b_cause,hangup_side,codec_a,codec_b,actions\r\n",
    );
    for c in cdrs {
        let cols = [
            c.id.to_string(),
            c.call_id.clone(),
            c.b_call_id.clone().unwrap_or_default(),
            c.caller.clone(),
            c.destination.clone(),
            c.context.clone(),
            c.target.clone().unwrap_or_default(),
            c.ani.clone().unwrap_or_default(),
            c.started.clone(),
            c.ringing.clone().unwrap_or_default(),
            c.answered.clone().unwrap_or_default(),
            c.ended.clone().unwrap_or_default(),
            c.billable_secs
                .map(|b| format!("{b:.3}"))
                .unwrap_or_default(),
            c.cause.clone().unwrap_or_default(),
            c.b_cause.clone().unwrap_or_default(),
            c.hangup_side.clone().unwrap_or_default(),
            c.codec_a.clone().unwrap_or_default(),
            c.codec_b.clone().unwrap_or_default(),
            actions(c),
        ];
        for (i, v) in cols.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, v);
        }
        out.push_str("\r\n");
    }
    out
}

/// The record's actions in one field: `*76 push_page https://shop.example/checkout: ok; ...`.
fn actions(c: &Cdr) -> String {
    c.actions
        .iter()
        .map(|a| {
            let a = &a.action;
            let mut s = String::new();
            if let Some(code) = &a.code {
                s.push_str(code);
                s.push(' ');
            }
            s.push_str(&a.name);
            if let Some(d) = &a.detail {
                s.push(' ');
                s.push_str(d);
            }
            s.push_str(": ");
            s.push_str(&a.result);
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_share_one_field_in_order() {
        let mut r = record();
        for (code, name, detail, result) in [
            (
                Some("*76"),
                "push_page",
                Some("https://shop.example/checkout"),
                "ok",
            ),
            (None, "volume", None, "refused: turned off"),
        ] {
            r.actions.push(crate::CdrAction {
                at: "2026-11-28T10:00:01Z".into(),
                action: crate::ActionRecord {
                    name: name.into(),
                    code: code.map(Into::into),
                    detail: detail.map(Into::into),
                    ok: result == "ok",
                    result: result.into(),
                },
            });
        }
        let csv = to_csv(&[r]);
        let line = csv.split("\r\n").nth(1).unwrap_or_default();
        assert!(
            line.ends_with(
                ",*76 push_page https://shop.example/checkout: ok; volume: refused: turned off"
            ),
            "{line}"
        );
    }

    fn record() -> Cdr {
        Cdr {
            id: 4,
            call_id: "a@h".into(),
            b_call_id: None,
            caller: "\"Shop, Inc\" 0301234".into(),
            destination: "1000".into(),
            context: "default".into(),
            target: None,
            ani: None,
            started: "2026-11-28T10:00:00Z".into(),
            ringing: None,
            answered: None,
            ended: None,
            billable_secs: Some(1.0),
            cause: None,
            b_cause: None,
            hangup_side: None,
            codec_a: None,
            codec_b: None,
            quality: None,
            merchant: None,
            link: None,
            session: None,
            page_url: None,
            referrer: None,
            caller_ip: None,
            web_context: None,
            actions: Vec::new(),
            chat: Vec::new(),
            source: None,
        }
    }

    #[test]
    fn a_field_with_a_comma_or_quote_is_quoted_and_its_quotes_doubled() {
        let csv = to_csv(&[record()]);
        let line = csv.split("\r\n").nth(1).unwrap_or_default();
        assert_eq!(
            line,
            "4,a@h,,\"\"\"Shop, Inc\"\" 0301234\",1000,default,,,2026-11-28T10:00:00Z,,,,1.000,,,,,,"
        );
    }
}
