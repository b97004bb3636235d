//! Caller context carried in-band to the call center: X-headers and User-to-User (RFC 7433),
//! from what the call arrived with; nothing of the caller's headers leaks otherwise.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{Route, Switch};

#[test]
fn the_call_center_gets_x_headers_and_a_hex_uui_from_the_callers_context() {
    let sw = Switch::start(
        "uui",
        42,
        Route {
            extensions: r#"
[[extension]]
name = "context"
continue = true
when.header.X-Merchant = '^(?P<m>[a-z]+)$'
actions = [
  { uui = { data = "merchant=${m}", purpose = "isdn-uui", max = 64 } },
  { set = { effective_caller_id_name = "Web ${m}" } },
  { header_add = { P-Asserted-Identity = "\"Web ${m}\" <sip:web@shop.example>" } },
]
"#,
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_expect_uui.xml", 1, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
}

#[test]
fn a_gateways_redact_list_keeps_the_context_from_a_carrier() {
    let sw = Switch::start(
        "redact",
        43,
        Route {
            extensions: r#"
[[extension]]
name = "context"
continue = true
when.header.X-Merchant = '^(?P<m>[a-z]+)$'
actions = [ { uui = { data = "merchant=${m}" } } ]
"#,
            gw1_extra: r#"redact_headers = ["User-to-User", "x-merchant"]"#,
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_expect_redacted.xml", 1, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
}
