//! Real SIP clients as callers and call centers: baresip 1.0 (driven over its `ctrl_tcp`
//! module, events collected from it) and linphonec 5.1 (driven on its stdin), both headless,
//! playing a tone from a WAV file and (baresip) recording what they receive. Loopback only;
//! processes are ours, stopped by PID. The recipe and its pitfalls: `tests/interop/README.md`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writes a mono 16-bit WAV of a sine at `freq` Hz, `secs` long.
pub fn tone_wav(path: &Path, freq: f64, rate: u32, secs: u32) {
    let pcm = super::rtp::sine_at(freq, rate, (rate * secs) as usize, 8000.0);
    std::fs::write(path, switchboard_media::wav::Wav::write(rate, &pcm)).expect("write WAV");
}

/// Reads a 16-bit PCM WAV: (rate, channels, samples). Chunk sizes are not trusted (linphone's
/// recorder writes a wrong one): the data runs to the end of the file.
pub fn read_wav(path: &Path) -> (u32, u16, Vec<i16>) {
    let b = std::fs::read(path).expect("read WAV");
    assert!(
        b.len() >= 44 && &b[..4] == b"RIFF",
        "{} is not a WAV",
        path.display()
    );
    let mut at = 12;
    let (mut rate, mut channels) = (8000, 1);
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let len = u32::from_le_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]) as usize;
        if id == b"fmt " && at + 16 <= b.len() {
            channels = u16::from_le_bytes([b[at + 10], b[at + 11]]);
            rate = u32::from_le_bytes([b[at + 12], b[at + 13], b[at + 14], b[at + 15]]);
        }
        if id == b"data" {
            let samples = b[at + 8..]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return (rate, channels, samples);
        }
        at += 8 + len;
    }
    panic!("{}: no data chunk", path.display());
}

/// The share of the recorded signal's power at `freq`, over its middle (a second in from each
/// end), first channel.
pub fn tone_share(path: &Path, freq: f64) -> f64 {
    let (rate, channels, pcm) = read_wav(path);
    let mono: Vec<i16> = pcm
        .iter()
        .step_by(usize::from(channels.max(1)))
        .copied()
        .collect();
    let cut = rate as usize;
    assert!(
        mono.len() > 3 * cut,
        "{}: only {} samples recorded",
        path.display(),
        mono.len()
    );
    super::rtp::share_at_rate(&mono[cut..mono.len() - cut], freq, rate)
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            super::tail(&log(), 60)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn netstring(b: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.push(b',');
    out
}

/// Splits complete netstrings off the front of `buf`.
fn take_netstrings(buf: &mut Vec<u8>) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Some(colon) = buf.iter().position(|&c| c == b':') {
        let Some(n) = std::str::from_utf8(&buf[..colon])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            buf.clear();
            break;
        };
        if buf.len() < colon + 1 + n + 1 {
            break;
        }
        if let Ok(v) = serde_json::from_slice(&buf[colon + 1..colon + 1 + n]) {
            out.push(v);
        }
        buf.drain(..colon + n + 2);
    }
    out
}

/// A headless baresip: WAV source, no player, the `sndfile` filter recording what it receives.
pub struct Baresip {
    child: Option<Child>,
    pub dir: PathBuf,
    log: PathBuf,
    ctrl: u16,
    ctrl_conn: Option<TcpStream>,
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    responses: Arc<Mutex<Vec<serde_json::Value>>>,
}

/// How a baresip instance is set up.
pub struct BaresipConf<'a> {
    pub name: &'a str,
    pub sip: u16,
    pub ctrl: u16,
    pub rtp: (u16, u16),
    /// Its account's user (an incoming call's Request-URI user must match).
    pub user: &'a str,
    /// `audio_codecs` of the account (`pcmu`, `opus/48000/1`, ...).
    pub codecs: &'a str,
    /// The tone it sends.
    pub tone: f64,
    /// The account's `mediaenc` (`srtp`, `srtp-mand`; empty: plain RTP).
    pub mediaenc: &'a str,
}

impl Baresip {
    pub fn start(dir: &Path, c: BaresipConf<'_>) -> Baresip {
        let dir = dir.join(c.name);
        std::fs::create_dir_all(dir.join("rec")).expect("baresip dir");
        let rate = if c.codecs.starts_with("opus") {
            48000
        } else {
            8000
        };
        let wav = dir.join("tone.wav");
        tone_wav(&wav, c.tone, rate, 60);
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip}\ncall_local_timeout 30\ncall_max_calls 4\n\
             audio_path /usr/share/baresip\naudio_source aufile,{wav}\naudio_buffer 20-160\n\
             ausrc_format s16\nauplay_format s16\nauenc_format s16\naudec_format s16\n\
             rtp_ports {r0}-{r1}\nrtcp_mux no\njitter_buffer_delay 0-0\nrtp_stats yes\nrtp_timeout 0\n\
             net_interface 127.0.0.1\ndns_server 127.0.0.1:53\nmodule_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule opus.so\nmodule aufile.so\nmodule sndfile.so\n\
             module_tmp account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl}\nsnd_path {rec}\nopus_bitrate 32000\nopus_stereo no\n\
             opus_sprop_stereo no\nstatmode_default off\nringback_disabled yes\n{srtp}",
            srtp = if c.mediaenc.is_empty() {
                ""
            } else {
                "module srtp.so\n"
            },
            sip = c.sip,
            wav = wav.display(),
            r0 = c.rtp.0,
            r1 = c.rtp.1,
            ctrl = c.ctrl,
            rec = dir.join("rec").display(),
        );
        std::fs::write(dir.join("config"), config).expect("baresip config");
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{}@127.0.0.1>;regint=0;answermode=auto;audio_codecs={};ptime=20{}\n",
                c.user,
                c.codecs,
                if c.mediaenc.is_empty() {
                    String::new()
                } else {
                    format!(";mediaenc={}", c.mediaenc)
                }
            ),
        )
        .expect("baresip accounts");
        let log = dir.join("baresip.log");
        let child = Command::new("baresip")
            .arg("-4")
            .arg("-f")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log"),
            ))
            .spawn()
            .expect("baresip (apt-get install baresip)");
        let mut b = Baresip {
            child: Some(child),
            dir,
            log,
            ctrl: c.ctrl,
            ctrl_conn: None,
            events: Arc::default(),
            responses: Arc::default(),
        };
        b.wait_log("baresip is ready", Duration::from_secs(10));
        b.connect();
        b
    }

    /// Opens the ctrl_tcp connection (baresip 1.0 serves one at a time: the newest wins, so
    /// commands and events share it) and stores every event and response baresip sends on it.
    fn connect(&mut self) {
        let mut s = TcpStream::connect(("127.0.0.1", self.ctrl)).expect("baresip ctrl_tcp");
        self.ctrl_conn = Some(s.try_clone().expect("clone ctrl_tcp"));
        let (events, responses) = (self.events.clone(), self.responses.clone());
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                for v in take_netstrings(&mut buf) {
                    if v["event"] == true {
                        events.lock().unwrap().push(v);
                    } else if v["response"] == true {
                        responses.lock().unwrap().push(v);
                    }
                }
            }
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, text: &str, within: Duration) {
        wait_for(
            &format!("\"{text}\" from baresip {}", self.dir.display()),
            within,
            || self.log().contains(text),
            || self.log(),
        );
    }

    /// Runs a ctrl_tcp command and returns its response (panics on a refusal).
    pub fn command(&self, command: &str, params: &str) -> serde_json::Value {
        let token = format!("t{}", self.responses.lock().unwrap().len());
        let msg = serde_json::json!({"command": command, "params": params, "token": token});
        let mut conn = self.ctrl_conn.as_ref().expect("ctrl_tcp");
        conn.write_all(&netstring(msg.to_string().as_bytes()))
            .expect("baresip ctrl_tcp");
        let mut got = None;
        wait_for(
            &format!("baresip's answer to {command}"),
            Duration::from_secs(5),
            || {
                got = self
                    .responses
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|r| r["token"] == token.as_str())
                    .cloned();
                got.is_some()
            },
            || self.log(),
        );
        let r = got.unwrap_or_default();
        assert_eq!(r["ok"], true, "baresip refused {command} {params}: {r}");
        r
    }

    /// The events of `kind` (`CALL_DTMF_START`, `CALL_ESTABLISHED`, ...) so far.
    pub fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    /// The digits baresip has been told of (RFC 4733 or INFO), in order.
    pub fn digits(&self) -> String {
        self.events("CALL_DTMF_START")
            .iter()
            .filter_map(|e| e["param"].as_str().and_then(|p| p.chars().next()))
            .collect()
    }

    pub fn wait_digits(&self, n: usize, within: Duration) -> String {
        wait_for(
            &format!("{n} digits at baresip {}", self.dir.display()),
            within,
            || self.digits().chars().count() >= n,
            || format!("got {:?}\n{}", self.digits(), self.log()),
        );
        self.digits()
    }

    /// The WAV of what the last call received (the `sndfile` filter's `-dec.wav`).
    pub fn received(&self) -> PathBuf {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("rec"))
            .expect("rec dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        files.sort();
        files
            .pop()
            .unwrap_or_else(|| panic!("baresip recorded nothing:\n{}", self.log()))
    }

    /// Hangs up its call and waits until it is gone.
    pub fn hangup(&self) {
        self.command("hangup", "");
        self.wait_log("terminated", Duration::from_secs(10));
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A headless linphonec: files instead of a sound card, commands on its stdin.
pub struct Linphonec {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pub dir: PathBuf,
    log: PathBuf,
}

/// How a linphonec instance is set up.
pub struct LinphoneConf<'a> {
    pub name: &'a str,
    pub sip: u16,
    pub rtp: u16,
    pub user: &'a str,
    /// `pcmu` or `opus` (the one codec it enables).
    pub codec: &'a str,
    /// Digits as SIP INFO instead of RFC 4733.
    pub info: bool,
    /// Answers calls by itself (a call center).
    pub auto_answer: bool,
    pub tone: f64,
}

impl Linphonec {
    pub fn start(dir: &Path, c: LinphoneConf<'_>) -> Linphonec {
        let dir = dir.join(c.name);
        std::fs::create_dir_all(dir.join(".local/share/linphone")).expect("linphone dir");
        let (rate, opus) = if c.codec == "opus" {
            (48000, 1)
        } else {
            (8000, 0)
        };
        let wav = dir.join("tone.wav");
        tone_wav(&wav, c.tone, rate, 60);
        let mut rc = format!(
            "[sip]\nuse_ipv6=0\nipv6_migration_done=1\nsip_port={sip}\nsip_tcp_port=0\nsip_tls_port=0\n\
             bind_address=127.0.0.1\ncontact=sip:{user}@127.0.0.1:{sip}\nguess_hostname=0\n\
             default_proxy=-1\nuse_info={info}\nuse_rfc2833={rfc}\nmedia_encryption=none\ninc_timeout=30\n\
             [rtp]\nbind_address=127.0.0.1\naudio_rtp_port={rtp}\naudio_jitt_comp=60\n\
             [sound]\nechocancellation=0\n\
             [video]\nenabled=0\ncapture=0\ndisplay=0\nautomatically_initiate=0\nautomatically_accept=0\n\
             [storage]\nbackend=sqlite3\nuri={db}\n[misc]\nuuid=0\n",
            sip = c.sip,
            user = c.user,
            info = u8::from(c.info),
            rfc = u8::from(!c.info),
            rtp = c.rtp,
            db = dir.join("linphone.db").display(),
        );
        for (i, (mime, r, ch, on)) in [
            ("opus", 48000, 2, opus),
            ("PCMU", 8000, 1, 1 - opus),
            ("PCMA", 8000, 1, 0),
            ("speex", 16000, 1, 0),
            ("speex", 8000, 1, 0),
            ("G729", 8000, 1, 0),
            ("SILK", 16000, 1, 0),
        ]
        .iter()
        .enumerate()
        {
            rc.push_str(&format!(
                "[audio_codec_{i}]\nmime={mime}\nrate={r}\nchannels={ch}\nenabled={on}\n"
            ));
        }
        let conf = dir.join("linphonerc");
        std::fs::write(&conf, rc).expect("linphonerc");
        let log = dir.join("linphonec.log");
        let mut cmd = Command::new("linphonec");
        cmd.env("HOME", &dir)
            .arg("-c")
            .arg(&conf)
            .arg("-d")
            .arg("4")
            .arg("-l")
            .arg(dir.join("debug.log"));
        if c.auto_answer {
            cmd.arg("-a");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log"),
            ))
            .spawn()
            .expect("linphonec (apt-get install linphone-cli)");
        let stdin = child.stdin.take();
        let mut l = Linphonec {
            child: Some(child),
            stdin,
            dir,
            log,
        };
        l.wait_log("linphonec>", Duration::from_secs(15));
        l.say("soundcard use files");
        l.say(&format!("play {}", wav.display()));
        l.say(&format!("record {}", l.dir.join("received.wav").display()));
        l
    }

    /// One command line on its stdin.
    pub fn say(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, text: &str, within: Duration) {
        wait_for(
            &format!("\"{text}\" from linphonec {}", self.dir.display()),
            within,
            || self.log().contains(text),
            || self.log(),
        );
    }

    /// The digits linphonec says it received ("Receiving tone X"), in order.
    pub fn digits(&self) -> String {
        self.log()
            .lines()
            .filter_map(|l| {
                l.split("Receiving tone ")
                    .nth(1)
                    .and_then(|r| r.chars().next())
            })
            .collect()
    }

    pub fn wait_digits(&self, n: usize, within: Duration) -> String {
        wait_for(
            &format!("{n} digits at linphonec {}", self.dir.display()),
            within,
            || self.digits().chars().count() >= n,
            || format!("got {:?}\n{}", self.digits(), self.log()),
        );
        self.digits()
    }

    /// What it recorded of the call.
    pub fn received(&self) -> PathBuf {
        self.dir.join("received.wav")
    }
}

impl Drop for Linphonec {
    fn drop(&mut self) {
        self.say("quit");
        self.stdin.take();
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
