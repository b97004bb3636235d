//! Headless Firefox ESR driven over WebDriver BiDi: the Firefox side of the browser tests,
//! beside Chromium's CDP client (`browser.rs`). Firefox listens on
//! `ws://127.0.0.1:PORT/session`; a WebSocket and a handful of BiDi commands (`session.new`,
//! `browsingContext.getTree`, `browsingContext.navigate`, `script.evaluate`) are all the
//! tests need, so no WebDriver crate and no geckodriver.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Debian's Firefox ESR. The tests fail (never skip) when it is missing.
pub const FIREFOX: &str = "/usr/bin/firefox-esr";

/// The longest one BiDi command may take (a promise the page never settles, a hung browser).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The profile's `user.js`: a fake microphone without a prompt, WebRTC on loopback with its
/// addresses in the clear, audio that plays (and WebAudio that runs) headless, and none of
/// Firefox's own traffic (first run, updates, telemetry, remote settings, safe browsing,
/// plugins, push).
/// `{tone}` is the fake microphone's frequency in Hz.
const USER_JS: &str = r#"
// The call test fails without any one of these: a fake microphone, no prompt for it, the
// permission taken as granted (without it Firefox offers no loopback candidate), its tone
// (the default is 1 kHz, the ACD's own), and host candidates on 127.0.0.1 (the switch's one
// candidate is on loopback, and the kernel drops checks to it from any other address).
user_pref("media.navigator.streams.fake", true);
user_pref("media.navigator.permission.disabled", true);
user_pref("media.navigator.permission.fake", true);
user_pref("media.navigator.audio.fake_frequency", {tone});
user_pref("media.peerconnection.ice.loopback", true);
// WebAudio needs an audio device that keeps real time: Debian's build has no mock device
// (`media.cubeb.force_mock_context` is a test-build pref) and an AudioContext never leaves
// "suspended" without one, so each Firefox gets a private PulseAudio with a null sink
// (`Pulse` below).
// The call test passes without each of these today; kept so that a changed default does not
// hide or rename (mDNS) host candidates, or hold back the remote audio.
user_pref("media.peerconnection.ice.obfuscate_host_addresses", false);
user_pref("media.peerconnection.ice.no_host", false);
user_pref("media.peerconnection.ice.default_address_only", false);
user_pref("media.autoplay.default", 0);
user_pref("media.autoplay.blocking_policy", 0);
user_pref("media.autoplay.block-webaudio", false);
// None of Firefox's own traffic.
user_pref("media.gmp-manager.url", "");
user_pref("media.gmp-gmpopenh264.enabled", false);
user_pref("media.gmp-gmpopenh264.autoupdate", false);
user_pref("media.gmp-widevinecdm.enabled", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("browser.startup.page", 0);
user_pref("startup.homepage_welcome_url", "about:blank");
user_pref("browser.aboutwelcome.enabled", false);
user_pref("browser.sessionstore.resume_from_crash", false);
user_pref("toolkit.startup.max_resumed_crashes", -1);
user_pref("browser.tabs.warnOnClose", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("datareporting.usage.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("toolkit.telemetry.server", "");
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("app.update.disabledForTesting", true);
user_pref("app.update.auto", false);
user_pref("app.normandy.enabled", false);
user_pref("app.shield.optoutstudies.enabled", false);
user_pref("messaging-system.rsexperimentloader.enabled", false);
user_pref("services.settings.server", "data:,#remote-settings-dummy/v1");
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.blockedURIs.enabled", false);
user_pref("browser.safebrowsing.provider.google.updateURL", "");
user_pref("browser.safebrowsing.provider.google4.updateURL", "");
user_pref("browser.safebrowsing.provider.mozilla.updateURL", "");
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("extensions.blocklist.enabled", false);
user_pref("extensions.systemAddon.update.enabled", false);
user_pref("extensions.pocket.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.trr.mode", 5);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.prefetch-next", false);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("network.proxy.type", 0);
user_pref("dom.push.connection.enabled", false);
user_pref("dom.push.serverURL", "");
user_pref("identity.fxaccounts.enabled", false);
user_pref("browser.newtabpage.enabled", false);
user_pref("browser.newtabpage.activity-stream.feeds.telemetry", false);
user_pref("browser.newtabpage.activity-stream.feeds.section.topstories", false);
user_pref("browser.ping-centre.telemetry", false);
user_pref("browser.region.network.url", "");
user_pref("browser.region.update.enabled", false);
user_pref("browser.search.update", false);
user_pref("browser.topsites.contile.enabled", false);
user_pref("browser.discovery.enabled", false);
user_pref("browser.ml.enable", false);
user_pref("browser.translations.enable", false);
user_pref("geo.provider.network.url", "");
"#;

/// A private PulseAudio server with a null sink, for one Firefox: WebAudio runs at real time
/// and the remote audio of a call can be analysed. Its files live in a short temp dir (the
/// socket path must stay under ~108 bytes); it is stopped by its PID.
struct Pulse {
    child: Child,
    dir: PathBuf,
}

impl Pulse {
    fn start(name: &str) -> Pulse {
        let dir = PathBuf::from(format!("/tmp/sbpa-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("PulseAudio dir");
        let socket = dir.join("native");
        let child = Command::new("pulseaudio")
            .args([
                "--daemonize=no",
                "-n",
                "--use-pid-file=no",
                "--exit-idle-time=-1",
                "--realtime=no",
                "--high-priority=no",
                "--log-target=stderr",
                "-L",
                "module-null-sink",
                "-L",
            ])
            .arg(format!(
                "module-native-protocol-unix socket={} auth-anonymous=1",
                socket.display()
            ))
            .env("PULSE_RUNTIME_PATH", &dir)
            .env("PULSE_STATE_PATH", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pulseaudio: the test command installs it");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "pulseaudio did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Pulse { child, dir }
    }

    fn server(&self) -> String {
        format!("unix:{}", self.dir.join("native").display())
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Firefox {
    child: Child,
    /// Dropped after Firefox (fields drop in order).
    _pulse: Pulse,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    /// The top-level browsing context the tests drive.
    context: String,
    next: u64,
    profile: PathBuf,
}

impl Firefox {
    /// Starts headless Firefox ESR with a fake microphone playing a `tone_hz` sine (Firefox
    /// generates it: there is no file to play, unlike Chromium).
    pub fn launch(name: &str, tone_hz: u32) -> Firefox {
        assert!(
            std::path::Path::new(FIREFOX).exists(),
            "{FIREFOX} is missing: the test command installs Debian's firefox-esr"
        );
        let profile =
            std::env::temp_dir().join(format!("sb-firefox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("Firefox profile dir");
        std::fs::write(
            profile.join("user.js"),
            USER_JS.replace("{tone}", &tone_hz.to_string()),
        )
        .expect("write the profile's user.js");
        let pulse = Pulse::start(name);
        // Port 0: Firefox takes a free port and says which on stderr (no race for it).
        let mut child = Command::new(FIREFOX)
            .args(["--headless", "--remote-debugging-port=0", "--profile"])
            .arg(&profile)
            .args(["--no-remote", "about:blank"])
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .env("PULSE_SERVER", pulse.server())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start firefox-esr");
        // Firefox's log is read on a thread of its own (so the wait below has a deadline, and
        // Firefox never blocks on a full pipe); the lines before the address come back for
        // the panic message.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut early = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    if let Some(u) = l.strip_prefix("WebDriver BiDi listening on ") {
                        break u.trim().to_owned();
                    }
                    early.push(l);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = std::fs::remove_dir_all(&profile);
                    panic!(
                        "firefox-esr gave no WebDriver BiDi address within 30 s:\n{}",
                        early.join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.wait();
                    let _ = std::fs::remove_dir_all(&profile);
                    panic!(
                        "firefox-esr exited before its WebDriver BiDi came up:\n{}",
                        early.join("\n")
                    );
                }
            }
        };
        // From here on the log is only drained (the receiver goes; the thread reads on).
        drop(rx);
        let ws = match tungstenite::connect(format!("{url}/session")) {
            Ok((ws, _)) => ws,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&profile);
                panic!("could not connect to Firefox's WebDriver BiDi at {url}/session: {e}");
            }
        };
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(COMMAND_TIMEOUT))
                .expect("read timeout");
        }
        let mut f = Firefox {
            child,
            _pulse: pulse,
            ws,
            context: String::new(),
            next: 1,
            profile,
        };
        f.call("session.new", json!({"capabilities": {}}));
        let tree = f.call("browsingContext.getTree", json!({"maxDepth": 0}));
        f.context = match tree["contexts"][0]["context"].as_str() {
            Some(c) => c.to_owned(),
            None => {
                let c = f.call("browsingContext.create", json!({"type": "tab"}));
                c["context"]
                    .as_str()
                    .expect("a browsing context from Firefox")
                    .to_owned()
            }
        };
        f
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to Firefox's WebDriver BiDi");
        loop {
            let m = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!(
                        "{method}: Firefox gave no answer within {} s",
                        COMMAND_TIMEOUT.as_secs()
                    )
                }
                Err(e) => panic!("{method}: Firefox's WebDriver BiDi connection failed: {e}"),
            };
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).expect("BiDi JSON");
            // Events (none are subscribed to) and other commands' answers are passed over.
            if v["id"].as_u64() == Some(id) {
                assert!(v["type"] == "success", "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&mut self, url: &str) {
        let context = self.context.clone();
        self.call(
            "browsingContext.navigate",
            json!({"context": context, "url": url, "wait": "complete"}),
        );
    }

    /// Evaluates `expr` in the page (promises awaited); its JSON value. It runs as if the
    /// user had just clicked (audio may start, as after the shopper's click).
    pub fn eval(&mut self, expr: &str) -> Value {
        let context = self.context.clone();
        let r = self.call(
            "script.evaluate",
            json!({
                "expression": expr,
                "target": {"context": context},
                "awaitPromise": true,
                "resultOwnership": "none",
                "userActivation": true,
            }),
        );
        assert!(
            r["type"] == "success",
            "{expr}: {}\n{r}",
            r["exceptionDetails"]["text"]
                .as_str()
                .unwrap_or("an exception")
        );
        to_json(&r["result"])
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
                let calls = self.eval(super::PAGE_CALLS);
                panic!("timed out waiting for: {expr}\n  the page's calls: {calls}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A BiDi remote value as plain JSON (what CDP's `returnByValue` gives): primitives, arrays
/// and objects as themselves; undefined, NaN and the infinities as null; a bigint as its
/// digits; what JSON cannot hold (a node, a function, a window) as null.
fn to_json(v: &Value) -> Value {
    let value = &v["value"];
    match v["type"].as_str() {
        Some("string" | "boolean") => value.clone(),
        Some("number") => match value {
            Value::Number(_) => value.clone(),
            // "-0" is still zero; "NaN", "Infinity" and "-Infinity" are no JSON number.
            Value::String(s) if s == "-0" => json!(0),
            _ => Value::Null,
        },
        Some("bigint") => value.clone(),
        Some("array" | "set") => Value::Array(
            value
                .as_array()
                .map(|a| a.iter().map(to_json).collect())
                .unwrap_or_default(),
        ),
        Some("object" | "map") => {
            let mut out = Map::new();
            for pair in value.as_array().into_iter().flatten() {
                let key = match &pair[0] {
                    Value::String(k) => k.clone(),
                    k => match to_json(k) {
                        Value::String(k) => k,
                        other => other.to_string(),
                    },
                };
                out.insert(key, to_json(&pair[1]));
            }
            Value::Object(out)
        }
        _ => Value::Null,
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        // Only the process this started, by its PID (its content processes end with it).
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
