//! Call records through the real binary: what SIPp did is what the records say (count,
//! causes, billable time), the API and the CLI export them, and a switch killed mid-call
//! closes the open record as INTERRUPTED when it starts again.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Route, Switch};

fn cdrs(sw: &Switch, query: &str) -> serde_json::Value {
    let body = common::http_get_auth(sw.ports.http, &format!("/api/v1/cdrs{query}"), "test-token")
        .expect("GET /api/v1/cdrs");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Records are written by a thread of their own: wait until `n` have ended.
fn wait_ended(sw: &Switch, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let all = cdrs(sw, "");
        let rows = all.as_array().cloned().unwrap_or_default();
        if rows.iter().filter(|r| r["ended"].is_string()).count() >= n {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("fewer than {n} ended records: {}", cdrs(sw, ""));
}

#[test]
fn records_match_what_sipp_did_and_export_as_csv() {
    let sw = Switch::start("cdr", 40, Route::default());
    // Three answered calls the caller hangs up after ~1 s, then one busy callee.
    let uas = sw.uas(0, "uas_answer_any.xml", 3, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 3, &["-d", "1000"]);
    sw.expect_ok(vec![uac, uas]);
    let busy = sw.uas(0, "uas_busy.xml", 1, &[]);
    let uac = sw.uac("uac_expect_486.xml", "2000", 1, &[]);
    sw.expect_ok(vec![uac, busy]);
    let rows = wait_ended(&sw, 4);
    assert_eq!(rows.len(), 4, "{rows:?}");
    let answered: Vec<_> = rows
        .iter()
        .filter(|r| r["cause"] == "NORMAL_CLEARING")
        .collect();
    assert_eq!(answered.len(), 3, "{rows:?}");
    for r in &answered {
        let b = r["billable_secs"].as_f64().unwrap();
        assert!((0.8..2.5).contains(&b), "billable {b} for a ~1 s call: {r}");
        assert_eq!(r["hangup_side"], "caller");
        assert_eq!(r["destination"], "1000");
        assert!(
            r["answered"].is_string()
                && r["b_call_id"].is_string()
                && r["target"] == "gateway/gw1/1000"
        );
        assert_eq!(
            (r["codec_a"].as_str(), r["codec_b"].as_str()),
            (Some("PCMA"), Some("PCMA"))
        );
    }
    let busy: Vec<_> = rows.iter().filter(|r| r["cause"] == "USER_BUSY").collect();
    assert_eq!(busy.len(), 1, "{rows:?}");
    assert_eq!(busy[0]["billable_secs"].as_f64(), Some(0.0));
    assert!(busy[0]["answered"].is_null());
    // Filters and CSV.
    assert_eq!(
        cdrs(&sw, "?cause=USER_BUSY").as_array().map(Vec::len),
        Some(1)
    );
    let (ok, csv) = sw.ctl_cmd(&["cdr", "export", "--since", "2020-01-01"]);
    assert!(ok, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("id,call_id,b_call_id,caller,destination"),
        "{csv}"
    );
    assert_eq!(lines.len(), 5, "header + 4 records: {csv}");
    assert_eq!(
        lines.iter().filter(|l| l.contains(",USER_BUSY,")).count(),
        1
    );
    let (ok, out) = sw.ctl_cmd(&["cdr", "export", "--since", "yesterday"]);
    assert!(!ok && out.contains("is not a time"), "{out}");
}

#[test]
fn a_switch_killed_mid_call_closes_the_record_as_interrupted_on_restart() {
    // One pool number resting 3 s after use: leased by the call, reclaimed at restart.
    let mut sw = Switch::start(
        "cdr-kill",
        41,
        Route {
            gw1_extra: "ani_pool = [\"15550100\"]\nani_cooldown = 3\nani_when_empty = \"reject\"",
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_answer_any.xml", 1, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 1, &["-d", "20000"]);
    // Up and recorded as answered (within 15 s: a fresh machine runs every test's first
    // start at once)...
    for _ in 0..300 {
        let rows = cdrs(&sw, "");
        if rows[0]["answered"].is_string() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cdrs(&sw, "")[0]["answered"].is_string());
    std::thread::sleep(Duration::from_millis(1000));
    // ...when the process dies without a chance to write anything more.
    // Leg B's Call-ID and the codecs are in the record while the call goes on.
    let live = &cdrs(&sw, "")[0];
    assert!(live["b_call_id"].is_string(), "{live}");
    assert_eq!(live["codec_a"], "PCMA", "{live}");
    sw.signal("KILL");
    sw.wait_exit(Duration::from_secs(5)).expect("killed");
    // Down for 4 s: none of it is billed.
    std::thread::sleep(Duration::from_secs(4));
    sw.launch();
    let rows = cdrs(&sw, "");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    let r = &rows[0];
    assert_eq!(r["cause"], "INTERRUPTED", "{r}");
    assert!(r["ended"].is_string(), "{r}");
    let b = r["billable_secs"].as_f64().unwrap();
    assert!(
        (0.0..3.0).contains(&b),
        "billed up to the last heartbeat before the kill (the call had lasted ~1 s), not the restart: {b}"
    );
    assert_eq!(r["b_call_id"], live["b_call_id"], "{r}");
    assert_eq!(r["ani"], "15550100", "{r}");
    // The number the dead call held rests before anyone else gets it.
    let uac2 = sw.uac_n(1, "uac_expect_503.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac2]);
    drop((uac, uas));
}

#[test]
fn pool_numbers_are_unique_per_call_and_rest_before_reuse() {
    let sw = Switch::start(
        "ani",
        44,
        Route {
            gw1_extra: "ani_pool = [\"15550100-15550102\"]\nani_cooldown = 4\nani_when_empty = \"reject\"",
            ..Route::default()
        },
    );
    // Three calls hold the three numbers for 3 s (waited for, not slept on: a loaded CI
    // machine starts SIPp late)...
    let uas = sw.uas(0, "uas_answer_any.xml", 4, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 3, &["-d", "3000", "-r", "20"]);
    sw.wait_call_count(3, Duration::from_secs(10));
    // ...so a fourth is refused (the plan has nothing else: 503).
    let busy = sw.uac_n(1, "uac_expect_503.xml", "1000", 1, &[]);
    sw.expect_ok(vec![busy]);
    sw.expect_ok(vec![uac]);
    // Just released: resting (4 s).
    let resting = sw.uac("uac_expect_503.xml", "1000", 1, &[]);
    sw.expect_ok(vec![resting]);
    std::thread::sleep(Duration::from_millis(4200));
    let again = sw.uac("uac_call.xml", "1000", 1, &[]);
    sw.expect_ok(vec![again, uas]);
    let rows = wait_ended(&sw, 6);
    let mut anis: Vec<&str> = rows
        .iter()
        .filter(|r| r["cause"] == "NORMAL_CLEARING")
        .map(|r| r["ani"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(anis.len(), 4, "{rows:?}");
    let last = anis.remove(0); // newest first
    anis.sort();
    assert_eq!(
        anis,
        vec!["15550100", "15550101", "15550102"],
        "unique while concurrent"
    );
    assert!(last.starts_with("1555010"), "reused after the rest: {last}");
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r["cause"] != "NORMAL_CLEARING")
        .collect();
    assert_eq!(refused.len(), 2, "{rows:?}");
    assert!(refused.iter().all(|r| r["ani"].is_null()));
}

#[test]
fn fifty_concurrent_calls_get_fifty_different_numbers_reused_only_after_the_rest() {
    let sw = Switch::start(
        "ani50",
        46,
        Route {
            gw1_extra: "ani_pool = [\"15550100-15550149\"]\nani_cooldown = 3\nani_when_empty = \"reject\"",
            // Signalling only: 50 anchored calls would need more ports than a test's block.
            media_extra: "anchor = false",
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_answer_any.xml", 51, &[]);
    // uac_media.xml: its SDP is not checked for anchoring (uac_call.xml's is); nobody sends RTP.
    let media = [
        "-key", "rtp_port", "9", "-key", "fmts", "8 101", "-set", "hold_ms", "3000",
    ];
    let uac = sw.uac(
        "uac_media.xml",
        "1000",
        50,
        &[&media[..], &["-r", "100", "-l", "50"]].concat(),
    );
    sw.wait_call_count(50, Duration::from_secs(15));
    // All fifty numbers are in use: the 51st is refused.
    let busy = sw.uac_n(1, "uac_expect_503.xml", "1000", 1, &[]);
    sw.expect_ok(vec![busy, uac]);
    // Just released: all resting for 3 s.
    let resting = sw.uac("uac_expect_503.xml", "1000", 1, &[]);
    sw.expect_ok(vec![resting]);
    std::thread::sleep(Duration::from_millis(3300));
    let again = sw.uac(
        "uac_media.xml",
        "1000",
        1,
        &[&media[..6], &["-set", "hold_ms", "100"]].concat(),
    );
    sw.expect_ok(vec![again, uas]);
    let rows = wait_ended(&sw, 53);
    let mut anis: Vec<&str> = rows
        .iter()
        .filter(|r| r["cause"] == "NORMAL_CLEARING")
        .map(|r| r["ani"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(anis.len(), 51, "{rows:?}");
    let last = anis.remove(0); // newest first: the call after the rest
    anis.sort();
    anis.dedup();
    assert_eq!(anis.len(), 50, "fifty different numbers at once: {anis:?}");
    assert!(
        anis.iter().all(|a| ("15550100"..="15550149").contains(a)),
        "{anis:?}"
    );
    assert!(anis.contains(&last), "a rested number came back: {last}");
}

#[test]
fn a_call_queued_for_a_pool_number_gets_the_released_one_and_one_waiting_too_long_is_refused() {
    let sw = Switch::start(
        "aniq",
        47,
        Route {
            gw1_extra: "ani_pool = [\"15550100\"]\nani_cooldown = 1\nani_when_empty = \"queue\"\nani_queue_secs = 4",
            ..Route::default()
        },
    );
    // Two calls reach the call center; the third never leaves the switch.
    let uas = sw.uas(0, "uas_answer_any.xml", 2, &[]);
    // The only number is held 2 s; the second call waits for it (2 s + 1 s of rest).
    let first = sw.uac("uac_call.xml", "1000", 1, &["-d", "2000"]);
    sw.wait_call_count(1, Duration::from_secs(10));
    let second = sw.uac_n(1, "uac_call.xml", "1000", 1, &["-d", "6000"]);
    sw.expect_ok(vec![first]);
    // The second holds it 6 s: a third waits 4 s, then is refused.
    std::thread::sleep(Duration::from_millis(1500));
    let third = sw.uac("uac_expect_503.xml", "1000", 1, &[]);
    sw.expect_ok(vec![third, second, uas]);
    let rows = wait_ended(&sw, 3);
    let ms = |r: &serde_json::Value, k: &str| {
        r[k].as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond())
            .unwrap_or_else(|| panic!("{k}: {r}"))
    };
    // Newest first: the refused one, the queued one, the first.
    assert_eq!(rows[0]["cause"], "SWITCH_CONGESTION", "{rows:?}");
    assert!(rows[0]["ani"].is_null());
    let waited = ms(&rows[0], "ended") - ms(&rows[0], "started");
    assert!(
        (3500..6000).contains(&waited),
        "refused after its 4 s in the queue: {waited} ms"
    );
    for r in &rows[1..3] {
        assert_eq!(r["cause"], "NORMAL_CLEARING", "{r}");
        assert_eq!(r["ani"], "15550100", "{r}");
    }
    let queued = ms(&rows[1], "answered") - ms(&rows[1], "started");
    assert!(
        queued >= 2500,
        "answered only once the number came back and rested: {queued} ms"
    );
}
