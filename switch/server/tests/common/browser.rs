//! Headless Chromium driven over the DevTools protocol (CDP): the browser tests open a
//! page, click, and read state with `Runtime.evaluate`. A small client of our own instead of
//! `chromiumoxide` (whose generated protocol crate takes minutes to build on 2 cores): a
//! WebSocket and four CDP methods are all the tests need.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Debian's Chromium. The tests fail (never skip) when it is missing.
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next: u64,
    profile: PathBuf,
}

impl Browser {
    /// Starts Chromium with a fake microphone playing `wav` (16-bit PCM).
    pub fn launch(name: &str, wav: &std::path::Path) -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the test command installs Debian's chromium"
        );
        let profile =
            std::env::temp_dir().join(format!("sb-chromium-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                &format!("--use-file-for-fake-audio-capture={}", wav.display()),
                "--allow-loopback-in-peer-connection",
                // The HTTPS tests' certificates are their own (self-signed).
                "--ignore-certificate-errors",
                "--autoplay-policy=no-user-gesture-required",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            assert!(
                Instant::now() < deadline,
                "chromium gave no DevTools address"
            );
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(u) = l.strip_prefix("DevTools listening on ") {
                        break u.trim().to_owned();
                    }
                }
                _ => panic!("chromium exited before its DevTools came up"),
            }
        };
        // Keep draining Chromium's log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let (ws, _) = tungstenite::connect(&url).expect("connect to DevTools");
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next: 1,
            profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().expect("targetId").to_owned();
        let att = b.call(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        b.session = att["sessionId"].as_str().expect("sessionId").to_owned();
        b
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to DevTools");
        loop {
            let m = self.ws.read().expect("read from DevTools");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).expect("CDP JSON");
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(15),
        );
    }

    /// Evaluates `expr` in the page (promises awaited); its JSON value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            // As a user's action (a click may open the call window).
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true, "userGesture": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page.
    pub fn wait_for(&mut self, expr: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            // Not there yet (an undefined object) counts as false.
            let guarded = format!(
                "(() => {{ try {{ return !!({expr}); }} catch (e) {{ return false; }} }})()"
            );
            if self.eval(&guarded) == json!(true) {
                return;
            }
            if Instant::now() >= deadline {
                // What the page's calls went through, for the failure's message.
                let calls = self.eval(super::PAGE_CALLS);
                panic!("timed out waiting for: {expr}\n  the page's calls: {calls}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium's helper processes outlive it by a moment and may still write into the
        // profile: try again until it is gone (bounded), so no run leaves profiles behind.
        for _ in 0..20 {
            let _ = std::fs::remove_dir_all(&self.profile);
            if !self.profile.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
