#![allow(clippy::expect_used, clippy::unwrap_used)]
//! SIP behaviour of the real binary against SIPp (scenarios in `tests/sipp/`).
//! Each test has its own ports (its index), its own conf and its own processes.

mod common;

use std::time::Duration;

use common::{Route, Switch};

#[test]
fn basic_call_relays_through_the_b2bua_and_caller_hangs_up() {
    let sw = Switch::start("basic", 1, Route::default());
    let uas = sw.uas(0, "uas_answer.xml", 5, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 5, &[]);
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(sw.metric("switchboard_calls_total"), 5.0);
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"NORMAL_CLEARING\"}"),
        5.0
    );
    assert_eq!(sw.metric("switchboard_calls_active"), 0.0);
}

#[test]
fn callee_hangs_up_and_both_legs_end() {
    let sw = Switch::start("callee-bye", 2, Route::default());
    let uas = sw.uas(0, "uas_hangs_up.xml", 3, &[]);
    let uac = sw.uac("uac_callee_hangs_up.xml", "1000", 3, &[]);
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(sw.metric("switchboard_calls_active"), 0.0);
}

#[test]
fn cancel_while_ringing_cancels_leg_b_and_caller_gets_487() {
    let sw = Switch::start("cancel", 3, Route::default());
    let uas = sw.uas(0, "uas_ring_until_cancel.xml", 2, &[]);
    let uac = sw.uac("uac_cancel.xml", "1000", 2, &[]);
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"ORIGINATOR_CANCEL\"}"),
        2.0
    );
}

#[test]
fn busy_is_propagated_as_486_and_not_retried_on_the_next_gateway() {
    // If the switch tried gw2 after the busy, gw2 would answer and the caller would get 200.
    let sw = Switch::start(
        "busy",
        4,
        Route {
            targets: &["gateway/gw1/$1", "gateway/gw2/$1"],
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_busy.xml", 2, &[]);
    let uac = sw.uac("uac_expect_486.xml", "1000", 2, &[]);
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"USER_BUSY\"}"),
        2.0
    );
}

#[test]
fn no_answer_times_out_and_fails_over_to_the_second_gateway() {
    let sw = Switch::start(
        "noanswer",
        5,
        Route {
            targets: &["gateway/gw1/$1", "gateway/gw2/$1"],
            timeout: 2,
            ..Route::default()
        },
    );
    let uas1 = sw.uas(0, "uas_ring_until_cancel.xml", 1, &[]);
    let uas2 = sw.uas(1, "uas_answer_any.xml", 1, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas1, uas2]);
}

#[test]
fn first_gateway_503_fails_over_to_the_second() {
    let sw = Switch::start(
        "failover",
        6,
        Route {
            targets: &["gateway/gw1/$1", "gateway/gw2/$1"],
            ..Route::default()
        },
    );
    let uas1 = sw.uas(0, "uas_unavailable.xml", 2, &[]);
    let uas2 = sw.uas(1, "uas_answer_any.xml", 2, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 2, &[]);
    sw.expect_ok(vec![uac, uas1, uas2]);
}

#[test]
fn every_gateway_failing_gives_the_caller_503() {
    let sw = Switch::start(
        "allfail",
        7,
        Route {
            targets: &["gateway/gw1/$1", "gateway/gw2/$1"],
            ..Route::default()
        },
    );
    let uas1 = sw.uas(0, "uas_unavailable.xml", 1, &[]);
    let uas2 = sw.uas(1, "uas_unavailable.xml", 1, &[]);
    let uac = sw.uac("uac_expect_503.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas1, uas2]);
}

#[test]
fn parallel_ring_all_answers_with_the_first_and_cancels_the_other() {
    let sw = Switch::start(
        "parallel",
        8,
        Route {
            targets: &["gateway/gw1/$1", "gateway/gw2/$1"],
            strategy: "parallel",
            ..Route::default()
        },
    );
    let uas1 = sw.uas(0, "uas_ring_until_cancel.xml", 1, &[]);
    let uas2 = sw.uas(1, "uas_answer_any.xml", 1, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas1, uas2]);
}

#[test]
fn reinvite_hold_and_unhold_are_relayed_with_anchored_sdp() {
    let sw = Switch::start("reinvite", 9, Route::default());
    let uas = sw.uas(0, "uas_reinvite.xml", 1, &[]);
    let uac = sw.uac("uac_reinvite_hold.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
}

#[test]
fn early_media_183_is_relayed_with_anchored_sdp() {
    let sw = Switch::start("early", 10, Route::default());
    let uas = sw.uas(0, "uas_early_media.xml", 1, &[]);
    let uac = sw.uac("uac_early_media.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
}

#[test]
fn info_is_relayed_in_the_dialog() {
    // Leg B takes digits as INFO: an INFO digit from A is relayed as it is.
    let sw = Switch::start(
        "info",
        11,
        Route {
            gw1_extra: "dtmf = \"info\"",
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_info.xml", 1, &[]);
    let uac = sw.uac("uac_info.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
}

#[test]
fn out_of_dialog_requests_get_the_right_answers() {
    let sw = Switch::start("ood", 12, Route::default());
    for (scenario, service) in [
        ("uac_options.xml", "1000"),
        ("uac_bye_unknown.xml", "1000"),
        ("uac_max_forwards_zero.xml", "1000"),
        ("uac_require_unknown.xml", "1000"),
        ("uac_bad_header.xml", "1000"),
        ("uac_unknown_method.xml", "1000"),
        ("uac_expect_404.xml", "not-a-number"),
    ] {
        let uac = sw.uac(scenario, service, 1, &[]);
        sw.expect_ok(vec![uac]);
    }
    assert!(
        sw.metric("switchboard_sip_parse_errors_total") >= 1.0,
        "the bad header counts as a parse error"
    );
}

#[test]
fn retransmitted_invite_makes_one_call() {
    let sw = Switch::start("invite-retrans", 13, Route::default());
    let uas = sw.uas(0, "uas_answer_any.xml", 1, &[]);
    let uac = sw.uac("uac_invite_retrans.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(sw.metric("switchboard_calls_total"), 1.0);
    assert!(sw.metric("switchboard_sip_retransmissions_absorbed_total") >= 1.0);
}

#[test]
fn late_ack_makes_both_sides_retransmit_200_and_the_call_survives() {
    let sw = Switch::start("slow-ack", 14, Route::default());
    let uas = sw.uas(0, "uas_slow_ack.xml", 1, &[]);
    let uac = sw.uac("uac_slow_ack.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
    // We retransmitted our 200 to the caller, and absorbed the callee's retransmitted 200s.
    assert!(sw.metric("switchboard_sip_retransmissions_total") >= 1.0);
    assert!(sw.metric("switchboard_sip_retransmissions_absorbed_total") >= 1.0);
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"NORMAL_CLEARING\"}"),
        1.0
    );
}

#[test]
fn a_2xx_sent_again_after_our_ack_is_acked_again() {
    // The callee's 200 comes again after our ACK (as if the ACK was lost): it is ACKed
    // again, rebuilt from the dialog (an ACK without a body is not kept per call).
    let sw = Switch::start("ack-lost", 113, Route::default());
    let uas = sw.uas(0, "uas_ack_lost.xml", 2, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 2, &["-d", "1500"]);
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"NORMAL_CLEARING\"}"),
        2.0
    );
}

#[test]
fn calls_over_tcp_on_both_legs() {
    let sw = Switch::start(
        "tcp",
        15,
        Route {
            transport: "tcp",
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_answer_any.xml", 3, &["-t", "t1"]);
    let uac = sw.uac("uac_call.xml", "1000", 3, &["-t", "t1"]);
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"NORMAL_CLEARING\"}"),
        3.0
    );
}

#[test]
fn rtp_is_relayed_both_ways() {
    let sw = Switch::start("rtp", 16, Route::default());
    let uas = sw.uas(0, "uas_answer_any.xml", 1, &["-rtp_echo"]);
    let uac = sw.uac("uac_rtp.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
    let a_to_b = sw.metric("switchboard_rtp_relayed_packets_total{direction=\"a_to_b\"}");
    let b_to_a = sw.metric("switchboard_rtp_relayed_packets_total{direction=\"b_to_a\"}");
    // g711a.pcap holds ~230 RTP packets; the far end echoes each one back.
    assert!(a_to_b >= 200.0, "caller to callee: {a_to_b} packets");
    assert!(b_to_a >= 200.0, "callee back to caller: {b_to_a} packets");
}

#[test]
fn a_bad_reload_is_refused_and_the_running_config_keeps_routing() {
    let sw = Switch::start("reload", 17, Route::default());
    let path = sw.dir.join("conf/dialplan/test.toml");
    let good = std::fs::read_to_string(&path).expect("dialplan");
    std::fs::write(&path, good.replace("when.destination", "when.destinaton")).expect("write");
    let (ok, out) = sw.ctl(&["reload"]);
    assert!(!ok, "a broken dialplan must be refused: {out}");
    assert!(
        out.contains("test.toml:") && out.contains("unknown field `destinaton`"),
        "{out}"
    );
    // Still routing with the old plan.
    let uas = sw.uas(0, "uas_answer_any.xml", 1, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
    // A good reload is taken: now only 5-digit numbers route.
    std::fs::write(&path, good.replace(r"'^(\d+)$'", r"'^(\d{5})$'")).expect("write");
    let (ok, out) = sw.ctl(&["reload"]);
    assert!(ok, "{out}");
    let uac = sw.uac("uac_expect_404.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac]);
}

#[test]
fn sigterm_refuses_new_calls_and_drains_the_ones_in_progress() {
    let mut sw = Switch::start("shutdown", 18, Route::default());
    let uas = sw.uas(0, "uas_answer_any.xml", 1, &[]);
    // A long call (3 s) is up when SIGTERM arrives.
    let uac = sw.uac("uac_call.xml", "1000", 1, &["-d", "3000"]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(sw.metric("switchboard_calls_active"), 1.0);
    sw.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    let refused = sw.uac(
        "uac_expect_503.xml",
        "1000",
        1,
        &[
            "-p",
            &(sw.ports.uac + 10).to_string(),
            "-mp",
            &(sw.ports.mp_uac + 10).to_string(),
        ],
    );
    sw.expect_ok(vec![refused, uac, uas]);
    let status = sw.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "switchboard exits cleanly once drained: {status:?}"
    );
}

const CREDENTIALS: &str = "username = \"sbuser\"\npassword = \"sbsecret\"";

#[test]
fn registers_to_a_gateway_answering_the_digest_challenge() {
    let gw1 = format!("{CREDENTIALS}\nregister = true\nregister_expires = 60");
    // The registrar must be up before the switch registers at start-up.
    let mut sw = Switch::prepare(
        "register",
        19,
        Route {
            gw1_extra: &gw1,
            ..Route::default()
        },
    );
    let registrar = sw.uas(0, "uas_registrar.xml", 1, &[]);
    sw.launch();
    sw.expect_ok(vec![registrar]);
    assert_eq!(
        sw.metric("switchboard_gateway_registered{gateway=\"gw1\"}"),
        1.0,
        "the registrar accepted our digest"
    );
    let (ok, out) = sw.ctl(&["gateways"]);
    assert!(ok && out.contains("\"registered\":true"), "{out}");
}

#[test]
fn a_challenged_invite_is_sent_again_with_credentials() {
    let sw = Switch::start(
        "auth-invite",
        20,
        Route {
            gw1_extra: CREDENTIALS,
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_auth_invite.xml", 1, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"NORMAL_CLEARING\"}"),
        1.0
    );
}

#[test]
fn options_pings_mark_gateways_up_and_down() {
    let gw1 = "ping = 1\nping_failures = 1";
    let mut sw = Switch::prepare(
        "ping",
        21,
        Route {
            gw1_extra: gw1,
            ..Route::default()
        },
    );
    let alive = sw.uas(0, "uas_options_200.xml", 1, &[]);
    sw.launch();
    sw.expect_ok(vec![alive]);
    assert_eq!(sw.metric("switchboard_gateway_up{gateway=\"gw1\"}"), 1.0);
    // Now the gateway answers 503: one failed ping marks it down.
    let overloaded = sw.uas(0, "uas_options_503.xml", 1, &[]);
    sw.expect_ok(vec![overloaded]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sw.metric("switchboard_gateway_up{gateway=\"gw1\"}"), 0.0);
    // ctl gateways and the log say why.
    let (_, out) = sw.ctl(&["gateways"]);
    assert!(
        out.contains("1 OPTIONS ping(s) in a row answered 503"),
        "{out}"
    );
    assert!(sw.log().contains("gateway is down: routing skips it"));
    // Marked up by hand, and down again by ops: the reason says so.
    assert!(sw.ctl(&["gateway", "gw1", "down"]).0);
    let (_, out) = sw.ctl(&["gateways"]);
    assert!(out.contains("marked down by ops"), "{out}");
}

#[test]
fn a_gateway_marked_down_is_skipped_by_routing() {
    // gw1 would answer busy: if routing tried it, the caller would get 486.
    let sw = Switch::start(
        "down",
        22,
        Route {
            targets: &["gateway/gw1/$1", "gateway/gw2/$1"],
            ..Route::default()
        },
    );
    let (ok, out) = sw.ctl(&["gateway", "gw1", "down"]);
    assert!(ok, "{out}");
    let busy = sw.uas(0, "uas_busy.xml", 1, &[]);
    let uas2 = sw.uas(1, "uas_answer_any.xml", 1, &[]);
    let uac = sw.uac("uac_call.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas2]);
    drop(busy);
    let (_, gws) = sw.ctl(&["gateways"]);
    assert!(
        gws.contains("\"name\":\"gw1\"") && gws.contains("\"up\":false"),
        "{gws}"
    );
}

#[test]
fn a_module_plugs_in_without_touching_the_core() {
    // The example module (modules/example) offers one of each capability: its dialplan
    // action attaches a leg app that swallows the caller's #, its invite filter adds a
    // header, its observer counts the call's events.
    let sw = Switch::start(
        "module",
        23,
        Route {
            gw1_extra: "dtmf = \"info\"",
            before_bridge: "{ example_swallow = { digits = \"#\" } },",
            conf_extra: "[modules]\nload = [\"trunk\", \"example\"]\n",
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_example.xml", 1, &[]);
    let uac = sw.uac("uac_info_hash_then_5.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
    // started, ringing, answered, bridged, two digits, the action, ended: observed off the
    // call path, so give the observer a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut seen = 0.0;
    while std::time::Instant::now() < deadline {
        seen = sw.metric("switchboard_example_events_total");
        if seen >= 8.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen >= 8.0, "the example observer saw {seen} events");
    assert_eq!(
        sw.metric("switchboard_observer_dropped_total{observer=\"example\"}"),
        0.0
    );
}

/// A raw INVITE from `from` (any loopback address) to `user`: the final status it gets.
fn invite_from(from: &str, sip_port: u16, user: &str) -> u16 {
    let sock = std::net::UdpSocket::bind((from, 0)).expect("bind the caller");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = sock.local_addr().unwrap();
    let msg = format!(
        "INVITE sip:{user}@127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-fraud-{user}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:666@{me}>;tag=scan\r\nTo: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: fraud-{user}-{}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:666@{me}>\r\n\
         User-Agent: Linphone/5.1\r\nContent-Length: 0\r\n\r\n",
        me.ip()
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", sip_port))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        let text = String::from_utf8_lossy(&buf[..n]);
        let status: u16 = text
            .get(8..11)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if status >= 200 {
            return status;
        }
    }
}

#[test]
fn an_untrusted_source_lands_in_the_public_context_and_reaches_no_gateway() {
    // The test dialplan bridges any number to gw1 in context "default"; the public context
    // has one extension of its own.
    let sw = Switch::start(
        "untrusted",
        19,
        Route {
            extensions: "[[extension]]\nname = \"public-busy\"\ncontext = \"public\"\nwhen.destination = '^9000$'\nactions = [{ hangup = \"USER_BUSY\" }]\n",
            ..Route::default()
        },
    );
    let uas = sw.uas(0, "uas_answer.xml", 1, &[]);
    // From 127.0.0.66 (not in sip.trusted, loopback 127.0.0.1 only by default): premium
    // numbers go nowhere; the public context's own extension answers.
    for n in ["900123456789", "011441234567890", "19005551234"] {
        assert_eq!(invite_from("127.0.0.66", sw.ports.sip, n), 404, "{n}");
    }
    assert_eq!(invite_from("127.0.0.66", sw.ports.sip, "9000"), 486);
    // The same number from a trusted source is bridged to the gateway (its one call).
    let uac = sw.uac("uac_call.xml", "900123456789", 1, &[]);
    sw.expect_ok(vec![uac, uas]);
    assert_eq!(sw.metric("switchboard_calls_total"), 5.0);
    assert!(
        sw.log().contains("INVITE from an untrusted source"),
        "the log says so"
    );
}

#[test]
fn a_flood_from_one_source_is_banned_while_a_trusted_caller_completes_its_calls() {
    let sw = Switch::start("flood", 24, Route::default());
    let uas = sw.uas(0, "uas_answer.xml", 20, &[]);
    // Un-ACKed INVITEs to a premium number from one source, OPTIONS from another: each far
    // past an untrusted source's 20 requests a second.
    let invites = sw.flood("127.0.0.66", "flood_invite.xml", "900123456789", 4000, 1000);
    let options = sw.flood("127.0.0.67", "flood_options.xml", "probe", 8000, 2000);
    // Meanwhile a trusted caller places its 20 calls, every one answered and completed.
    let uac = sw.uac("uac_call.xml", "1000", 20, &[]);
    sw.expect_ok(vec![uac, uas]);
    let _ = invites.wait(Duration::from_secs(30));
    let _ = options.wait(Duration::from_secs(30));
    // The INVITEs to a premium number collect 404s (the public context has no route) and
    // are banned for it at the 20th; the OPTIONS flood for its rate.
    assert_eq!(
        sw.metric("switchboard_sip_bans_total{reason=\"failures\"}"),
        1.0,
        "the INVITE flood is banned"
    );
    assert_eq!(
        sw.metric("switchboard_sip_bans_total{reason=\"flood\"}"),
        1.0,
        "the OPTIONS flood is banned"
    );
    let dropped = sw.metric("switchboard_sip_dropped_total{reason=\"banned\"}")
        + sw.metric("switchboard_sip_dropped_total{reason=\"rate\"}");
    assert!(
        dropped >= 11_000.0,
        "most of the 12,000 are dropped unanswered: {dropped}"
    );
    // What the floods hold is what got past their bursts, not what they sent.
    let held = sw.metric("switchboard_sip_server_transactions");
    assert!(held <= 400.0, "server transactions held: {held}");
    assert_eq!(sw.metric("switchboard_sip_banned_sources"), 2.0);
    let (code, bans) = common::http_status(sw.ports.http, "/api/v1/bans", "test-token");
    assert_eq!(code, 200, "{bans}");
    assert!(
        bans.contains("127.0.0.66") && bans.contains("127.0.0.67"),
        "{bans}"
    );
    assert!(
        bans.contains("\"flood\"") && bans.contains("\"failures\""),
        "{bans}"
    );
    // Ops lift a ban: the source is answered again.
    let (code, body) = common::http_request(
        sw.ports.http,
        "DELETE",
        "/api/v1/bans/127.0.0.66",
        "test-token",
        "",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(invite_from("127.0.0.66", sw.ports.sip, "900123456789"), 404);
    assert!(sw.log().contains("banned a source"), "the log says so");
}

/// Runs a SIPVicious tool (`args`: the tool and its options) against the switch, for at
/// most 5 s of scanning: what it printed.
fn sipvicious(sw: &Switch, args: &[&str]) -> String {
    let out = std::process::Command::new("timeout")
        .arg("60")
        .args(args)
        .args([
            "-p",
            &sw.ports.sip.to_string(),
            "--maximumtime=5",
            "127.0.0.1",
        ])
        .output()
        .expect("SIPVicious must be installed (Debian package sipvicious)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_sipvicious_scan_finds_nothing_and_gets_its_source_banned() {
    // svwar sends from 127.0.0.1 whatever its -b says: here loopback is trusted only at
    // 127.0.0.2, where the gateways are.
    let sw = Switch::start(
        "svwar",
        25,
        Route {
            gw_ip: "127.0.0.2",
            sip_extra: "trusted = [\"127.0.0.2/32\"]",
            ..Route::default()
        },
    );
    let text = sipvicious(&sw, &["svwar", "-m", "INVITE", "-e", "100-300,1000"]);
    assert!(!text.contains("| 1000"), "no extension found: {text}");
    assert_eq!(
        sw.metric("switchboard_sip_bans_total{reason=\"scanner\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sw.metric("switchboard_calls_total"),
        0.0,
        "no call was placed"
    );
    // Ops lift the ban; svcrack (REGISTER password cracking) is banned at its first try too.
    let (code, body) = common::http_request(
        sw.ports.http,
        "DELETE",
        "/api/v1/bans/127.0.0.1",
        "test-token",
        "",
    );
    assert_eq!(code, 200, "{body}");
    let text = sipvicious(&sw, &["svcrack", "-u", "1000", "-r", "1000-1200"]);
    assert!(!text.contains("| 1000 "), "no password found: {text}");
    assert_eq!(
        sw.metric("switchboard_sip_bans_total{reason=\"scanner\"}"),
        2.0,
        "{text}"
    );
}

/// Connects from `ip` (any loopback address) to `port`.
fn tcp_from(ip: &str, port: u16) -> std::net::TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::new(ip.parse().unwrap(), 0).into())
        .unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// How long until the far end closes `s` (reading and discarding what it sends).
fn closed_after(s: &mut std::net::TcpStream) -> Duration {
    use std::io::Read;
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return t0.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn idle_slow_and_surplus_tcp_connections_are_closed_and_callers_still_get_through() {
    use std::io::{Read, Write};
    let sw = Switch::start(
        "tcp-hygiene",
        26,
        Route {
            transport: "tcp",
            sip_extra: "tcp_max_per_source = 4\ntcp_message_timeout = 1\ntcp_idle_timeout = 3",
            http_extra: "max_per_source = 4\nheader_timeout = 1\nidle_timeout = 3",
            ..Route::default()
        },
    );
    let (sip, http) = (sw.ports.sip, sw.ports.http);
    // SIP: one source holds its 4 connections; the 5th is closed at once.
    let opened = std::time::Instant::now();
    let mut held: Vec<_> = (0..4).map(|_| tcp_from("127.0.0.66", sip)).collect();
    let mut fifth = tcp_from("127.0.0.66", sip);
    assert!(
        closed_after(&mut fifth) < Duration::from_secs(2),
        "the 5th is refused"
    );
    // A message that dribbles in is closed after its timeout; so is a silent connection,
    // after the idle timeout; a CRLF ping is answered with a pong and keeps it open.
    held[0]
        .write_all(b"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP ")
        .unwrap();
    held[2].write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    held[2].read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    let slow = closed_after(&mut held[0]);
    assert!(
        slow < Duration::from_secs(3),
        "slowloris closed after {slow:?}"
    );
    let _ = closed_after(&mut held[1]);
    let idle = opened.elapsed();
    assert!(
        idle >= Duration::from_secs(3) && idle < Duration::from_secs(10),
        "idle closed {idle:?} after it opened"
    );
    // HTTP: a request head that never ends and an idle connection are closed; a 5th
    // connection from one address is refused while /healthz answers everyone else.
    let mut http_held: Vec<_> = (0..4).map(|_| tcp_from("127.0.0.67", http)).collect();
    let mut surplus = tcp_from("127.0.0.67", http);
    assert!(closed_after(&mut surplus) < Duration::from_secs(2));
    http_held[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .unwrap();
    let slow = closed_after(&mut http_held[0]);
    assert!(
        slow < Duration::from_secs(4),
        "HTTP slowloris closed after {slow:?}"
    );
    assert_eq!(
        common::http_get(http, "/healthz").as_deref().map(str::trim),
        Some("ok")
    );
    // A WebSocket upgrade that is refused (a foreign Origin: 403) keeps the idle timeout.
    let asked = std::time::Instant::now();
    let mut upgrade = tcp_from("127.0.0.68", http);
    upgrade
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Origin: http://evil.example\r\n\r\n",
        )
        .unwrap();
    let _ = closed_after(&mut upgrade);
    let refused = asked.elapsed();
    assert!(
        refused >= Duration::from_secs(2) && refused < Duration::from_secs(10),
        "a refused upgrade is closed by the idle timeout: {refused:?}"
    );
    // A caller over TCP (from 127.0.0.1) completes its calls meanwhile.
    let uas = sw.uas(0, "uas_answer_any.xml", 3, &["-t", "t1"]);
    let uac = sw.uac("uac_call.xml", "1000", 3, &["-t", "t1"]);
    sw.expect_ok(vec![uac, uas]);
    assert!(sw.metric("switchboard_tcp_timeouts_total{listener=\"sip\",reason=\"slow\"}") >= 1.0);
    assert!(sw.metric("switchboard_tcp_timeouts_total{listener=\"sip\",reason=\"idle\"}") >= 1.0);
    assert!(sw.metric("switchboard_tcp_timeouts_total{listener=\"http\",reason=\"slow\"}") >= 1.0);
    assert!(sw.metric("switchboard_tcp_refused_total{listener=\"sip\",ceiling=\"source\"}") >= 1.0);
    assert!(
        sw.metric("switchboard_tcp_refused_total{listener=\"http\",ceiling=\"source\"}") >= 1.0
    );
    drop(held);
    drop(http_held);
}

#[test]
fn a_call_whose_rtp_ports_cannot_be_bound_is_refused_with_503_not_answered() {
    // A call's worth of RTP ports (or two), every one taken by someone else.
    let lo = common::Ports::for_test(27).rtp.0;
    let squatters: Vec<_> = (lo..lo + 8)
        .map(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).expect("take the port"))
        .collect();
    let sw = Switch::start(
        "rtp-bind",
        27,
        Route {
            rtp_range: Some((lo, lo + 7)),
            ..Route::default()
        },
    );
    // The gateway: whatever the switch sends it.
    let gw = std::net::UdpSocket::bind(("127.0.0.1", sw.ports.gw[0])).unwrap();
    gw.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let uac = sw.uac("uac_expect_503.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac]);
    assert_eq!(sw.metric("switchboard_calls_active"), 0.0);
    let mut buf = [0u8; 2048];
    assert!(
        gw.recv_from(&mut buf).is_err(),
        "no INVITE went out naming ports that cannot be bound"
    );
    assert!(
        sw.log().contains("no RTP port pair left that can be bound"),
        "the log says why"
    );
    drop(squatters);
}

/// A GET from `ip` with optional Bearer token: the status.
fn get_from(ip: &str, port: u16, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = tcp_from(ip, port);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn metrics_need_a_token_from_outside_the_open_list() {
    let sw = Switch::start(
        "metrics-auth",
        29,
        Route {
            http_extra: "metrics_open = [\"127.0.0.1/32\"]\nmetrics_token = \"scrape-me\"",
            ..Route::default()
        },
    );
    let http = sw.ports.http;
    assert_eq!(get_from("127.0.0.1", http, "/metrics", None), 200);
    assert_eq!(get_from("127.0.0.66", http, "/metrics", None), 401);
    assert_eq!(get_from("127.0.0.66", http, "/metrics", Some("wrong")), 401);
    assert_eq!(
        get_from("127.0.0.66", http, "/metrics", Some("scrape-me")),
        200
    );
    assert_eq!(
        get_from("127.0.0.66", http, "/metrics", Some("test-token")),
        200
    );
    // /healthz stays open (load balancers probe it).
    assert_eq!(get_from("127.0.0.66", http, "/healthz", None), 200);
}

/// A certificate for 127.0.0.1 (self-signed: the test client trusts it as its own root),
/// written as PEM files into the test's conf/: (certificate DER, PEM).
fn tls_cert(conf: &std::path::Path) -> Vec<u8> {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    std::fs::write(conf.join("cert.pem"), key.cert.pem()).unwrap();
    std::fs::write(conf.join("key.pem"), key.signing_key.serialize_pem()).unwrap();
    key.cert.der().to_vec()
}

/// A SIP client over TLS (rustls) trusting `root`.
fn tls_client(
    port: u16,
    root: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads one SIP message (head and Content-Length body) from a stream.
fn read_sip(r: &mut impl std::io::BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return head;
        }
        if line == "\r\n" && head.is_empty() {
            continue;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    head + &String::from_utf8_lossy(&body)
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or("")
}

#[test]
fn a_caller_over_tls_reaches_the_gateway_and_a_reload_serves_a_new_certificate() {
    use std::io::Write;
    let idx = 48;
    let port = common::Ports::for_test(idx).sip + 9;
    let sip_extra =
        format!("tls = \"127.0.0.1:{port}\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"");
    let mut sw = Switch::prepare(
        "sip-tls",
        idx,
        Route {
            sip_extra: &sip_extra,
            ..Route::default()
        },
    );
    let first = tls_cert(&sw.dir.join("conf"));
    sw.launch();
    let uas = sw.uas(0, "uas_answer_any.xml", 1, &[]);
    let mut s = tls_client(port, &first);
    let local = s.sock.local_addr().unwrap();
    let sdp = "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let call_id = "tls-call-1@test";
    write!(
        s,
        "INVITE sip:1000@127.0.0.1:{port};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=tls-a\r\nTo: <sip:1000@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{local};transport=tls>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let ok = loop {
        let msg = read_sip(&mut r);
        assert!(!msg.is_empty(), "the switch closed the TLS connection");
        if msg.starts_with("SIP/2.0 200") {
            break msg;
        }
        assert!(msg.starts_with("SIP/2.0 1"), "{msg}");
    };
    assert!(header(&ok, "Contact").contains("transport=tls"), "{ok}");
    assert!(header(&ok, "Via").starts_with("SIP/2.0/TLS"), "{ok}");
    let to = header(&ok, "To").to_owned();
    let s = r.get_mut();
    write!(
        s,
        "ACK sip:switchboard@127.0.0.1:{port};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls2\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=tls-a\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n\
         BYE sip:switchboard@127.0.0.1:{port};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls3\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=tls-a\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let bye_ok = read_sip(&mut r);
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
    assert!(bye_ok.contains("CSeq: 2 BYE"), "{bye_ok}");
    sw.expect_ok(vec![uas]);
    // A new certificate in the same files, SIGHUP: new connections get it.
    let second = tls_cert(&sw.dir.join("conf"));
    assert_ne!(first, second);
    sw.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sw.log().contains("TLS certificate reloaded") {
        assert!(std::time::Instant::now() < deadline, "no reload seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut fresh = tls_client(port, &second);
    write!(fresh, "\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    std::io::Read::read_exact(&mut fresh, &mut pong).unwrap();
    assert_eq!(&pong, b"\r\n", "a CRLF ping over TLS gets its pong");
    // The old certificate no longer verifies.
    let mut stale = tls_client(port, &first);
    let handshake = write!(stale, "\r\n\r\n").and_then(|()| stale.flush());
    assert!(handshake.is_err(), "the old certificate is gone");
}

/// A call center over TLS that asks for a client certificate: answers one INVITE (and its
/// BYE) on the first connection. Returns the INVITE and whether the switch presented a
/// certificate that `client_root` issued.
fn tls_call_center(
    port: u16,
    key: rcgen::CertifiedKey<rcgen::KeyPair>,
    client_root: Vec<u8>,
) -> std::thread::JoinHandle<(String, bool)> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the TLS call center");
    std::thread::spawn(move || {
        use std::io::Write;
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(client_root))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(
                    key.cert.der().to_vec(),
                )],
                rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der())
                    .unwrap(),
            )
            .unwrap();
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let conn = rustls::ServerConnection::new(std::sync::Arc::new(cfg)).unwrap();
        let mut r = std::io::BufReader::new(rustls::StreamOwned::new(conn, tcp));
        let answer = |req: &str, status: &str, body: &str| {
            let mut head = format!("SIP/2.0 {status}\r\n");
            for l in req.lines() {
                let k = l.split(':').next().unwrap_or("").to_ascii_lowercase();
                if matches!(k.as_str(), "via" | "from" | "call-id" | "cseq") {
                    head.push_str(l);
                    head.push_str("\r\n");
                }
            }
            let to = header(req, "To");
            let to = if to.contains("tag=") {
                to.to_owned()
            } else {
                format!("{to};tag=gw-tls")
            };
            head.push_str(&format!(
                "To: {to}\r\nContact: <sip:acd@127.0.0.1:{port};transport=tls>\r\n"
            ));
            if body.is_empty() {
                head.push_str("Content-Length: 0\r\n\r\n");
            } else {
                head.push_str(&format!(
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ));
            }
            head
        };
        let invite = read_sip(&mut r);
        let sdp = "v=0\r\no=acd 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41990 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let ok = answer(&invite, "200 OK", sdp);
        r.get_mut().write_all(ok.as_bytes()).unwrap();
        let presented = r
            .get_ref()
            .conn
            .peer_certificates()
            .is_some_and(|c| !c.is_empty());
        // The ACK, then the BYE when the caller hangs up.
        loop {
            let msg = read_sip(&mut r);
            if msg.is_empty() {
                break;
            }
            if msg.starts_with("BYE ") {
                let ok = answer(&msg, "200 OK", "");
                r.get_mut().write_all(ok.as_bytes()).unwrap();
                break;
            }
        }
        (invite, presented)
    })
}

#[test]
fn a_gateway_over_tls_gets_the_call_and_the_switchs_client_certificate() {
    let idx = 66;
    let ports = common::Ports::for_test(idx);
    let gw = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let client =
        rcgen::generate_simple_self_signed(vec!["switchboard.test".to_owned()]).expect("cert");
    let mut sw = Switch::prepare(
        "gw-tls",
        idx,
        Route {
            transport: "tls",
            gw1_extra: "tls_ca = \"gw-ca.pem\"\ntls_name = \"127.0.0.1\"\ntls_cert = \"client.pem\"\ntls_key = \"client.key\"",
            ..Route::default()
        },
    );
    let conf = sw.dir.join("conf");
    std::fs::write(conf.join("gw-ca.pem"), gw.cert.pem()).unwrap();
    std::fs::write(conf.join("client.pem"), client.cert.pem()).unwrap();
    std::fs::write(conf.join("client.key"), client.signing_key.serialize_pem()).unwrap();
    let client_root = client.cert.der().to_vec();
    let center = tls_call_center(ports.gw[0], gw, client_root);
    sw.launch();
    let uac = sw.uac("uac_call.xml", "1000", 1, &[]);
    sw.expect_ok(vec![uac]);
    let (invite, presented) = center.join().expect("the call center");
    assert!(invite.starts_with("INVITE sip:"), "{invite}");
    assert!(
        header(&invite, "Via").starts_with("SIP/2.0/TLS"),
        "{invite}"
    );
    assert!(
        header(&invite, "Contact").contains("transport=tls"),
        "{invite}"
    );
    assert!(presented, "the switch presented its client certificate");
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"NORMAL_CLEARING\"}"),
        1.0
    );
}

/// What the switch answers each of RFC 4475's 49 torture messages (switch/sip/tests/rfc4475/)
/// with, sent over UDP from a trusted source: `None` for no answer (a response is never
/// answered). Where the RFC names a registrar's or proxy's answer, ours is an endpoint's: the
/// switch is not a registrar (REGISTER is 405) and answers OPTIONS itself (Max-Forwards 0 too).
const RFC4475_ANSWERS: &[(&str, Option<u16>)] = &[
    // Its To has a tag: a request of a dialog we do not have.
    ("wsinv", Some(481)),
    ("intmeth", Some(501)),
    ("esc01", Some(404)),
    ("escnull", Some(405)),
    ("esc02", Some(501)),
    ("lwsdisp", Some(200)),
    ("longreq", Some(404)),
    ("dblreq", Some(405)),
    ("semiuri", Some(200)),
    ("transports", Some(200)),
    ("mpart01", Some(405)),
    ("unreason", None),
    ("noreason", None),
    ("badinv01", Some(400)),
    ("clerr", Some(400)),
    ("ncl", Some(400)),
    ("scalar02", Some(400)),
    ("scalarlg", None),
    ("quotbal", Some(400)),
    ("ltgtruri", Some(400)),
    ("lwsruri", Some(400)),
    ("lwsstart", Some(400)),
    ("trws", Some(400)),
    ("escruri", Some(404)),
    ("baddate", Some(404)),
    ("regbadct", Some(405)),
    ("badaspec", Some(400)),
    ("baddn", Some(200)),
    ("badvers", Some(505)),
    ("mismatch01", Some(400)),
    ("mismatch02", Some(501)),
    ("bigcode", None),
    ("badbranch", Some(200)),
    ("insuf", Some(400)),
    ("unkscm", Some(416)),
    ("novelsc", Some(416)),
    ("unksm2", Some(405)),
    ("bext01", Some(420)),
    ("invut", Some(415)),
    ("regaut01", Some(405)),
    ("multi01", Some(400)),
    ("mcl01", Some(400)),
    ("bcast", None),
    ("zeromf", Some(200)),
    ("cparam01", Some(405)),
    ("cparam02", Some(405)),
    ("regescrt", Some(405)),
    ("sdp01", Some(406)),
    ("inv2543", Some(404)),
];

/// The first value of a header (full or compact name) in a raw message.
fn raw_header(raw: &str, full: &str, compact: &str) -> Option<String> {
    raw.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(compact))
            .then(|| value.trim().to_owned())
    })
}

#[test]
fn rfc4475_torture_messages_get_the_answers_the_rfc_expects() {
    let sw = Switch::start(
        "rfc4475",
        109,
        Route {
            sip_extra: "trusted = [\"127.0.4.0/24\"]",
            ..Route::default()
        },
    );
    let dir = common::repo().join("switch/sip/tests/rfc4475");
    let dir = dir.display();
    let index = std::fs::read_to_string(format!("{dir}/INDEX.tsv")).expect("INDEX.tsv");
    let mut wrong = Vec::new();
    let mut seen = 0;
    // Some messages share a top Via and method (unkscm and novelsc, cparam01 and cparam02...):
    // from one address the second would be a retransmission of the first (§17.2.3). Each is
    // sent as the RFC means it, a fresh request: from a source that did not send the first.
    let mut sources: std::collections::HashMap<String, u8> = Default::default();
    for row in index.lines().skip(1) {
        let f: Vec<&str> = row.split('\t').collect();
        let (file, name, rfc) = (f[0], f[2], f[4]);
        let want = RFC4475_ANSWERS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name}: no expected answer"))
            .1;
        seen += 1;
        let mut raw = std::fs::read(format!("{dir}/{file}")).expect("message");
        if name == "baddn" {
            raw.extend_from_slice(b"\r\n"); // its head's empty line, as the RFC intends
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        // Answers go to the source address and the top Via's port (5060 when none); bind it.
        let port = raw_header(&text, "Via", "v")
            .and_then(|v| {
                let sent_by = v.split(';').next()?.split_whitespace().last()?.to_owned();
                sent_by.rsplit_once(':')?.1.parse::<u16>().ok()
            })
            .unwrap_or(5060);
        let first_line = text.split("\r\n").next().unwrap_or("");
        let method = first_line.split(' ').next().unwrap_or("").to_owned();
        let via_key = format!(
            "{method} {}",
            raw_header(&text, "Via", "v").unwrap_or_default()
        );
        let n = sources.entry(via_key).or_insert(74);
        *n += 1;
        let sock = std::net::UdpSocket::bind((format!("127.0.4.{n}").as_str(), port))
            .expect("bind the sender");
        let key = raw_header(&text, "Call-ID", "i").unwrap_or_else(|| "z9hG4bKkdj.insuf".into());
        sock.send_to(&raw, ("127.0.0.1", sw.ports.sip)).unwrap();
        let wait = if want.is_some() { 5000 } else { 500 };
        let deadline = std::time::Instant::now() + Duration::from_millis(wait);
        let mut finals = Vec::new();
        let mut buf = vec![0u8; 65536];
        while std::time::Instant::now() < deadline {
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                if !finals.is_empty() {
                    break;
                }
                continue;
            };
            let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !resp.contains(&key) {
                continue; // a retransmission of an earlier message's answer
            }
            let status: u16 = resp.get(8..11).and_then(|s| s.parse().ok()).unwrap_or(0);
            if status >= 200 {
                finals.push((status, resp));
            }
        }
        let got = finals.first().map(|(s, _)| *s);
        if got != want {
            wrong.push(format!(
                "{name} (RFC: {rfc}): want {want:?}, got {got:?}\n{}",
                finals.first().map(|(_, r)| r.as_str()).unwrap_or("")
            ));
            continue;
        }
        let Some((status, resp)) = finals.first() else {
            continue;
        };
        // What each answer must carry besides its status.
        let has = |h: &str| resp.to_ascii_lowercase().contains(&h.to_ascii_lowercase());
        let ok = match (name, status) {
            ("bext01", _) => resp.contains("Unsupported: ") && has("nothingSupportsThis"),
            ("intmeth" | "esc02" | "mismatch02", _) => has("\r\nAllow: "),
            (_, 405) => has("\r\nAllow: ") && !resp.contains("REGISTER,"),
            // §3.1.1.8: one REGISTER answered, the INVITE-like tail never.
            ("dblreq", _) => finals.iter().all(|(s, _)| *s == 405),
            _ => true,
        };
        if !ok {
            wrong.push(format!(
                "{name}: the {status} lacks what it must carry\n{resp}"
            ));
        }
    }
    assert_eq!(
        seen,
        RFC4475_ANSWERS.len(),
        "every message of the table was sent"
    );
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    // Still up, and every unanswerable message counted.
    assert!(common::http_get(sw.ports.http, "/healthz").is_some());
    assert!(
        !sw.log().contains("panicked"),
        "{}",
        common::tail(&sw.log(), 40)
    );
    assert!(
        sw.metric("switchboard_sip_unanswerable_dropped_total{reason=\"not_a_request\"}") >= 2.0,
        "bigcode and scalarlg are counted"
    );
}

#[test]
fn a_refer_from_the_call_center_moves_the_caller_to_a_second_agent() {
    // Agents (3xxx) are at gw2; everything else goes to the call center at gw1.
    let sw = Switch::start(
        "refer",
        110,
        Route {
            extensions: "[[extension]]\nname = \"agents\"\nwhen.destination = '^(3\\d+)$'\nactions = [{ bridge = { targets = [\"gateway/gw2/$1\"] } }]\n",
            ..Route::default()
        },
    );
    let acd = sw.uas(0, "uas_refer.xml", 1, &[]);
    let agent = sw.uas(1, "uas_answer_any.xml", 1, &[]);
    // The caller talks for 3 s, then hangs up: its BYE must reach the second agent.
    let caller = sw.uac("uac_call.xml", "1000", 1, &["-d", "3000"]);
    sw.expect_ok(vec![caller, acd, agent]);
    let log = sw.log();
    // The agent was offered the media the caller already sends (no re-INVITE to the caller).
    let agent_msgs: String = std::fs::read_dir(sw.dir.join("uas1"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        agent_msgs.contains("INVITE sip:3001@") && agent_msgs.contains("m=audio "),
        "{agent_msgs}"
    );
    assert!(
        log.contains("transfer complete"),
        "{}",
        common::tail(&log, 40)
    );
    assert_eq!(sw.metric("switchboard_calls_total"), 1.0);
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"NORMAL_CLEARING\"}"),
        1.0
    );
}

#[test]
fn session_timers_refresh_leg_b_by_update_and_hang_up_a_caller_that_does_not_refresh() {
    let sw = Switch::start(
        "session-timer",
        112,
        Route {
            sip_extra: "session_expires = 90",
            // SIPp sends no RTP: the media timeout (60 s by default) must not win the race
            // with the session's expiry (also at ~60 s).
            media_extra: "rtp_timeout = 0",
            ..Route::default()
        },
    );
    let long = ["-timeout", "120s"];
    let uas = sw.uas(0, "uas_session_timer.xml", 1, &long);
    let started = std::time::Instant::now();
    let uac = sw.uac("uac_session_timer.xml", "1000", 1, &long);
    for p in [uac, uas] {
        let name = p.name.clone();
        let (st, errs) = p.wait(Duration::from_secs(110));
        assert!(
            st.is_some_and(|s| s.success()),
            "sipp {name}:\n{errs}\n{}",
            common::tail(&sw.log(), 40)
        );
    }
    // The caller was granted 90 s as refresher; it sent nothing, so it is hung up before
    // the interval ends — after leg B had the switch's refresh at half of it (45 s).
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(45) && took < Duration::from_secs(90),
        "{took:?}"
    );
    assert_eq!(
        sw.metric("switchboard_calls_ended_total{cause=\"RECOVERY_ON_TIMER_EXPIRE\"}"),
        1.0
    );
}

/// The README's demo as written, for two minutes: the shipped conf (copied, so its records
/// go to a scratch directory; its sounds are the repository's), the built-in SIPp UAS as the
/// call center on 127.0.0.1:5080, and the README's SIPp call at the start, after the first
/// minute and after the second (when gateway pings, had there been any, would have marked
/// the demo gateway down: SIPp's built-in UAS does not answer OPTIONS).
#[test]
fn the_readme_demo_keeps_working_for_two_minutes() {
    let root = &common::repo();
    let dir = std::env::temp_dir().join(format!("sb-readme-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("conf/dialplan")).unwrap();
    std::fs::create_dir_all(dir.join("sounds")).unwrap();
    for f in [
        "switchboard.toml",
        "dialplan/default.toml",
        "dialplan/web.toml",
    ] {
        std::fs::copy(root.join("conf").join(f), dir.join("conf").join(f)).unwrap();
    }
    std::os::unix::fs::symlink(root.join("sounds/en"), dir.join("sounds/en")).unwrap();
    let log = std::fs::File::create(dir.join("switchboard.log")).unwrap();
    /// What the test started, stopped (by its handle) however the test ends.
    struct Started(Vec<std::process::Child>);
    impl Drop for Started {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let switch = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--conf")
        .arg(dir.join("conf"))
        .env("NO_COLOR", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut started_procs = Started(vec![switch]);
    let read_log = || std::fs::read_to_string(dir.join("switchboard.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::http_get(8080, "/healthz").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no start:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sipp = |args: &[&str], timeout: &str| {
        std::process::Command::new("sipp")
            .args(args)
            .args(["-nostdin", "-timeout", timeout, "-timeout_error"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sipp")
    };
    started_procs.0.push(sipp(
        &["-sn", "uas", "-i", "127.0.0.1", "-p", "5080"],
        "200s",
    ));
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    for at in [0, 65, 125] {
        let wait = Duration::from_secs(at).saturating_sub(started.elapsed());
        std::thread::sleep(wait);
        let status = sipp(
            &[
                "-sn",
                "uac",
                "127.0.0.1:5060",
                "-s",
                "1000",
                "-i",
                "127.0.0.1",
                "-p",
                "5070",
                "-m",
                "1",
            ],
            "30s",
        )
        .wait()
        .unwrap();
        assert!(
            status.success(),
            "the README's call at {at} s failed:\n{}",
            common::tail(&read_log(), 40)
        );
    }
    // And the demo gateway is up, as ctl says.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--conf")
        .arg(dir.join("conf"))
        .args(["ctl", "gateways"])
        .output()
        .unwrap();
    let gateways = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success()
            && gateways.contains(r#""name":"demo""#)
            && gateways.contains(r#""up":true"#),
        "{gateways}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(started_procs);
    assert!(!read_log().contains("panicked"));
    let _ = std::fs::remove_dir_all(&dir);
}
