//! The SIPp runner: starts the real `switchboard` binary with a test conf on ports of its
//! own, starts SIPp far ends (UAS) on the gateway ports, drives SIPp callers (UAC), and
//! fails on any SIPp failure. Processes are ours, stopped by PID; loopback only.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod browser;
pub mod clients;
pub mod firefox;
pub mod pcap;
pub mod rtp;

/// What the page's calls went through (for a browser wait's failure message).
pub const PAGE_CALLS: &str = "(() => { try { return JSON.stringify((window.SwitchboardClient || {calls: []}).calls.map(c => ({state: c.state, events: c.events, status: c.status && c.status.textContent, resume: !!c.opts.resume, pc: c.pc && c.pc.connectionState}))) + ' at ' + location.pathname } catch (e) { return String(e) } })()";

/// A process's CPU time, ms (user + system, all threads), from `/proc`.
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks * 1000.0 / 100.0
}

/// Context switches of all a process's threads so far (voluntary and not): how often it
/// slept and was woken, for benchmarks that count wake-ups.
pub fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|st| {
            st.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The checkout the tests run in. Read when the test runs, not when it was built: a test
/// binary in a build cache shared by several checkouts may have been built in another one
/// (cargo does not rebuild for a new `CARGO_MANIFEST_DIR`), since moved or removed.
pub fn repo() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.join("../..")
}

pub fn scenarios() -> PathBuf {
    repo().join("tests/sipp")
}

/// Ports of one test: every test gets its own block so tests run in parallel.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub sip: u16,
    pub http: u16,
    pub gw: [u16; 2],
    pub uac: u16,
    pub rtp: (u16, u16),
    pub mp_gw: [u16; 2],
    pub mp_uac: u16,
}

impl Ports {
    pub fn for_test(idx: u16) -> Ports {
        let b = 21000 + idx * 20;
        let m = 40000 + idx * 100;
        Ports {
            sip: b,
            http: b + 1,
            gw: [b + 2, b + 3],
            uac: b + 4,
            rtp: (m, m + 39),
            mp_gw: [m + 40, m + 50],
            mp_uac: m + 60,
        }
    }
}

/// What the test's dialplan bridges to.
pub struct Route<'a> {
    pub targets: &'a [&'a str],
    pub strategy: &'a str,
    pub timeout: u32,
    pub transport: &'a str,
    /// Extra lines for `[gateway.gw1]` (credentials, registration).
    pub gw1_extra: &'a str,
    /// Extra lines for `[media]`.
    pub media_extra: &'a str,
    /// `[media] codecs`.
    pub codecs: &'a str,
    /// Extensions tried before the test's "route" extension.
    pub extensions: &'a str,
    /// Actions run before the bridge of the "route" extension.
    pub before_bridge: &'a str,
    /// Appended to switchboard.toml (`[webrtc]`, `[merchant.*]`).
    pub conf_extra: &'a str,
    /// The RTP port range instead of the test's block (benchmarks with many calls).
    pub rtp_range: Option<(u16, u16)>,
    /// The loopback address of the gateways (their SIPp far ends).
    pub gw_ip: &'a str,
    /// Extra lines for `[sip]` (`trusted`).
    pub sip_extra: &'a str,
    /// Extra lines for `[http]`.
    pub http_extra: &'a str,
}

impl Default for Route<'_> {
    fn default() -> Self {
        Route {
            targets: &["gateway/gw1/$1"],
            strategy: "sequence",
            timeout: 10,
            transport: "udp",
            gw1_extra: "",
            media_extra: "",
            codecs: r#"["PCMA", "PCMU", "telephone-event"]"#,
            extensions: "",
            before_bridge: "",
            conf_extra: "",
            rtp_range: None,
            gw_ip: "127.0.0.1",
            sip_extra: "",
            http_extra: "",
        }
    }
}

pub struct Switch {
    pub ports: Ports,
    pub dir: PathBuf,
    child: Option<Child>,
}

fn dialplan(route: &Route<'_>) -> String {
    let targets: Vec<String> = route.targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"
[[extension]]
name = "tag-merchant"
continue = true
when.header.X-Merchant = '^(?P<m>[a-z]+)$'
actions = [ {{ header_add = {{ X-Merchant = "${{m}}" }} }} ]
{}
[[extension]]
name = "route"
when.destination = '^(\d+)$'
actions = [
  {{ header_add = {{ X-Switchboard-Route = "test" }} }},{}
  {{ bridge = {{ targets = [{}], strategy = "{}", timeout = {} }} }},
]
"#,
        route.extensions,
        route.before_bridge,
        targets.join(", "),
        route.strategy,
        route.timeout
    )
}

impl Switch {
    /// Writes the test conf and starts the switch.
    pub fn start(name: &str, idx: u16, route: Route<'_>) -> Switch {
        let mut sw = Switch::prepare(name, idx, route);
        sw.launch();
        sw
    }

    /// Writes the test conf without starting the switch (start far ends first, then `launch`).
    pub fn prepare(name: &str, idx: u16, route: Route<'_>) -> Switch {
        let ports = Ports::for_test(idx);
        let dir =
            std::env::temp_dir().join(format!("switchboard-sipp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf/dialplan")).expect("test dir");
        let conf = format!(
            r#"
[sip]
udp = "127.0.0.1:{sip}"
tcp = "127.0.0.1:{sip}"
{sip_extra}
[media]
ip = "127.0.0.1"
rtp_port_min = {rlo}
rtp_port_max = {rhi}
codecs = {codecs}
sounds = "{sounds}"
{media_extra}
[http]
listen = "127.0.0.1:{http}"
token = "test-token"
{http_extra}
[log]
level = "debug"
[shutdown]
drain_secs = 3
[gateway.gw1]
address = "{gw_ip}:{g1}"
transport = "{t}"
{gw1_extra}
[gateway.gw2]
address = "{gw_ip}:{g2}"
transport = "{t}"
{conf_extra}
"#,
            conf_extra = route.conf_extra,
            sip_extra = route.sip_extra,
            http_extra = route.http_extra,
            gw_ip = route.gw_ip,
            sip = ports.sip,
            http = ports.http,
            rlo = route.rtp_range.map_or(ports.rtp.0, |r| r.0),
            rhi = route.rtp_range.map_or(ports.rtp.1, |r| r.1),
            g1 = ports.gw[0],
            g2 = ports.gw[1],
            t = route.transport,
            gw1_extra = route.gw1_extra,
            media_extra = route.media_extra,
            codecs = route.codecs,
            sounds = repo().join("sounds/en").display(),
        );
        std::fs::write(dir.join("conf/switchboard.toml"), conf).expect("write conf");
        std::fs::write(dir.join("conf/dialplan/test.toml"), dialplan(&route))
            .expect("write dialplan");
        Switch {
            ports,
            dir,
            child: None,
        }
    }

    /// Starts the switch on the prepared conf and waits until it answers HTTP.
    pub fn launch(&mut self) {
        let (dir, ports) = (self.dir.clone(), self.ports);
        let log = std::fs::File::create(dir.join("switchboard.log")).expect("log file");
        // SWITCHBOARD_BIN: another build of the switch, for a benchmark's A/B.
        let bin = std::env::var_os("SWITCHBOARD_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_switchboard").into());
        let child = Command::new(bin)
            .arg("--conf")
            .arg(dir.join("conf"))
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start switchboard");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(ports.http, "/healthz").is_none() {
            assert!(
                Instant::now() < deadline,
                "switchboard did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first ended call record (records are written by a thread of their own: polled).
    pub fn ended_record(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let body =
                http_get_auth(self.ports.http, "/api/v1/cdrs", "test-token").unwrap_or_default();
            let rows: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(r) = rows
                .as_array()
                .and_then(|r| r.iter().find(|r| r["ended"].is_string()))
            {
                return r.clone();
            }
            assert!(Instant::now() < deadline, "no record: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("switchboard.log")).unwrap_or_default()
    }

    /// Value of a Prometheus sample (`name` or `name{labels}`), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = http_get(self.ports.http, "/metrics").unwrap_or_default();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// The switch's process ID (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until `switchboard_calls_active` is `n`.
    pub fn wait_call_count(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.metric("switchboard_calls_active") != n as f64 {
            assert!(
                Instant::now() < deadline,
                "calls still active:\n{}",
                tail(&self.log(), 60)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a SIPp far end on gateway `n` (0 or 1).
    pub fn uas(&self, n: usize, scenario: &str, calls: u32, extra: &[&str]) -> Sipp {
        let mut args = vec![
            "-sf".to_owned(),
            scenarios().join(scenario).display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.ports.gw[n].to_string(),
            "-mi".into(),
            "127.0.0.1".into(),
            "-mp".into(),
            self.ports.mp_gw[n].to_string(),
            "-m".into(),
            calls.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Sipp::spawn(&self.dir, &format!("uas{n}"), args)
    }

    /// Runs a SIPp caller against the switch to completion.
    pub fn uac(&self, scenario: &str, service: &str, calls: u32, extra: &[&str]) -> Sipp {
        self.uac_n(0, scenario, service, calls, extra)
    }

    /// A second (third...) caller running beside the first: ports of its own.
    pub fn uac_n(&self, n: u16, scenario: &str, service: &str, calls: u32, extra: &[&str]) -> Sipp {
        let mut args = vec![
            format!("127.0.0.1:{}", self.ports.sip),
            "-sf".into(),
            scenarios().join(scenario).display().to_string(),
            "-s".into(),
            service.into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            (self.ports.uac + n * 5).to_string(),
            "-mi".into(),
            "127.0.0.1".into(),
            "-mp".into(),
            (self.ports.mp_uac + n * 10).to_string(),
            "-m".into(),
            calls.to_string(),
            "-r".into(),
            "10".into(),
            "-d".into(),
            "200".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Sipp::spawn(&self.dir, &format!("uac{n}"), args)
    }

    /// A flood: `count` requests of a send-only scenario at `rate` a second from `ip` (a
    /// loopback address other than 127.0.0.1, so not trusted), to `service`.
    pub fn flood(&self, ip: &str, scenario: &str, service: &str, count: u32, rate: u32) -> Sipp {
        let args = vec![
            format!("127.0.0.1:{}", self.ports.sip),
            "-sf".into(),
            scenarios().join(scenario).display().to_string(),
            "-s".into(),
            service.into(),
            "-i".into(),
            ip.into(),
            "-p".into(),
            (self.ports.uac + 15).to_string(),
            "-m".into(),
            count.to_string(),
            "-r".into(),
            rate.to_string(),
            "-l".into(),
            count.to_string(),
        ];
        Sipp::spawn_untraced(&self.dir, &format!("flood-{ip}"), args)
    }

    /// Asserts that every SIPp process succeeded (exit 0, no failed call), with logs if not.
    pub fn expect_ok(&self, procs: Vec<Sipp>) {
        let mut failures = Vec::new();
        for p in procs {
            let name = p.name.clone();
            let (status, errors) = p.wait(Duration::from_secs(60));
            if !status.is_some_and(|s| s.success()) {
                failures.push(format!("--- sipp {name}: {status:?}\n{errors}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{}\n--- switchboard log (tail):\n{}",
            failures.join("\n"),
            tail(&self.log(), 80)
        );
    }

    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec!["ctl"];
        all.extend_from_slice(args);
        self.ctl_cmd(&all)
    }

    /// Runs `switchboard --conf <test conf> ARGS...`: exit success and stdout+stderr.
    pub fn ctl_cmd(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--conf")
            .arg(self.dir.join("conf"))
            .args(args)
            .output()
            .expect("run switchboard");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Waits until a call is up with both legs' media negotiated; returns its `ctl calls`
    /// entry.
    pub fn wait_media_up(&self, within: Duration) -> serde_json::Value {
        self.wait_call(within, "up with media on both legs", |c| {
            c["state"] == "up"
                && c["media"]["a"]["codec"].is_string()
                && c["media"]["b"]["codec"].is_string()
        })
    }

    /// Waits until a call is answered on leg A (media negotiated there); its entry.
    pub fn wait_a_media(&self, within: Duration) -> serde_json::Value {
        self.wait_call(within, "with media on leg A", |c| {
            c["media"]["a"]["codec"].is_string()
        })
    }

    /// Polls `ctl calls` until an entry satisfies `ok`.
    fn wait_call(
        &self,
        within: Duration,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, out) = self.ctl(&["calls"]);
            if let Ok(serde_json::Value::Array(calls)) = serde_json::from_str(&out)
                && let Some(c) = calls.into_iter().find(|c| ok(c))
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "no call {what}: {out}\n{}",
                tail(&self.log(), 60)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Waits for the switch to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub struct Sipp {
    pub name: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Sipp {
    fn spawn(dir: &Path, name: &str, mut args: Vec<String>) -> Sipp {
        args.extend(["-trace_err", "-trace_msg"].map(String::from));
        Sipp::spawn_untraced(dir, name, args)
    }

    /// A SIPp that keeps no trace of its messages (a flood's would be megabytes).
    fn spawn_untraced(dir: &Path, name: &str, mut args: Vec<String>) -> Sipp {
        // A scenario that runs longer (session timers) passes its own -timeout.
        if !args.iter().any(|a| a == "-timeout") {
            args.extend(["-timeout", "40s"].map(String::from));
        }
        args.extend(["-nostdin", "-timeout_error", "-max_recv_loops", "1000"].map(String::from));
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).expect("sipp dir");
        let child = Command::new("sipp")
            .args(&args)
            .current_dir(&sub)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(sub.join("stderr.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("sipp must be installed (Debian package sip-tester)");
        // Let a UAS bind before anyone calls it.
        std::thread::sleep(Duration::from_millis(150));
        Sipp {
            name: name.to_owned(),
            dir: sub,
            child: Some(child),
        }
    }

    /// Waits for exit; returns the status and SIPp's error log.
    pub fn wait(mut self, within: Duration) -> (Option<ExitStatus>, String) {
        let deadline = Instant::now() + within;
        let mut status = None;
        if let Some(c) = self.child.as_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(s)) = c.try_wait() {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if status.is_some() {
            self.child = None;
        }
        (status, self.errors())
    }

    /// What SIPp received and sent (`-trace_msg`).
    pub fn messages(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with("_messages.log") {
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    pub fn errors(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                if n.contains("errors") || n == "stderr.log" || n.contains("messages") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    out.push_str(&format!("[{n}]\n{}\n", tail(&text, 60)));
                }
            }
        }
        out
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_with(port, path, "")
}

/// GET with the admin API's Bearer token.
pub fn http_get_auth(port: u16, path: &str, token: &str) -> Option<String> {
    http_get_with(port, path, &format!("Authorization: Bearer {token}\r\n"))
}

/// GET with a Bearer token: (status, body), whatever the status.
pub fn http_status(port: u16, path: &str, token: &str) -> (u16, String) {
    http_request(port, "GET", path, token, "")
}

/// POST a JSON body with a Bearer token: (status, body), whatever the status.
pub fn http_post_json(port: u16, path: &str, token: &str, body: &str) -> (u16, String) {
    http_request(port, "POST", path, token, body)
}

pub fn http_request(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let (status, _, body) = http_raw(
        port,
        method,
        path,
        &format!("Authorization: Bearer {token}\r\n"),
        body,
    );
    (status, body)
}

/// Any request with `headers` (each ending in CRLF) and a JSON body: (status, the response's
/// head, its body).
pub fn http_raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let content = if body.is_empty() {
        "Content-Length: 0\r\n".to_owned()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}{content}Connection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_owned(), body.to_owned())
}

fn http_get_with(port: u16, path: &str, extra: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then(|| {
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    })
}
