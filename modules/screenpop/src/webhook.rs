//! Webhooks: a merchant's CRM gets a signed POST when its browser calls ring, are answered
//! and hang up. Deliveries run on the multi-threaded runtime, one ordered queue per call,
//! with retries and backoff; call setup never waits for them (a full queue drops and counts).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Attempts per event (the first and the retries), and the first backoff (doubling).
const ATTEMPTS: u32 = 6;
const BACKOFF: Duration = Duration::from_millis(500);
/// Connect + write + first line of the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where a merchant's events go.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host (name or IP).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query.
    pub path: String,
    /// HMAC key of the signature.
    pub secret: String,
    /// https: the client's TLS settings (None: plain http).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// TLS client settings: the public roots (Mozilla's, as webpki-roots ships them) and the
/// CA certificates of `ca` (a PEM file) if given.
pub fn client_config(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca {
        let mut n = 0;
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{}: no certificate in it", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One event of one call.
#[derive(Debug)]
pub struct Event {
    /// Leg A's Call-ID (the queue).
    pub call_id: String,
    /// `ringing`, `answered` or `hangup`.
    pub name: &'static str,
    /// JSON.
    pub body: String,
    /// Where.
    pub target: Arc<Target>,
    /// False: not one of the merchant's events (a `hangup` still ends the call's queue).
    pub deliver: bool,
}

/// Delivery counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Accepted by the CRM (2xx).
    pub delivered: AtomicU64,
    /// Given up after every attempt.
    pub failed: AtomicU64,
    /// Dropped: the queue was full.
    pub dropped: AtomicU64,
}

impl Counters {
    /// Prometheus lines.
    pub fn metrics(&self) -> String {
        format!(
            "# HELP switchboard_webhooks_total Webhook events, by outcome.\n# TYPE switchboard_webhooks_total counter\n\
             switchboard_webhooks_total{{outcome=\"delivered\"}} {}\nswitchboard_webhooks_total{{outcome=\"failed\"}} {}\n\
             switchboard_webhooks_total{{outcome=\"dropped\"}} {}\n",
            self.delivered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed)
        )
    }
}

/// The sending side, for the SIP thread: never blocks.
#[derive(Debug, Clone)]
pub struct Hooks {
    tx: mpsc::Sender<Event>,
    /// Outcomes.
    pub counters: Arc<Counters>,
}

impl Hooks {
    /// Starts the dispatcher on the current (multi-threaded) runtime.
    pub fn start() -> Hooks {
        let (tx, rx) = mpsc::channel(10_000);
        let counters = Arc::new(Counters::default());
        tokio::spawn(dispatch(rx, counters.clone()));
        Hooks { tx, counters }
    }

    /// Queues an event.
    pub fn send(&self, ev: Event) {
        if self.tx.try_send(ev).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            warn!("webhook queue full: event dropped");
        }
    }
}

async fn dispatch(mut rx: mpsc::Receiver<Event>, counters: Arc<Counters>) {
    // One ordered queue per call: `answered` never overtakes a `ringing` being retried.
    let mut queues: HashMap<String, mpsc::UnboundedSender<Event>> = HashMap::new();
    while let Some(ev) = rx.recv().await {
        let last = ev.name == "hangup";
        let call = ev.call_id.clone();
        let q = queues.entry(call.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(per_call(rx, counters.clone()));
            tx
        });
        let _ = q.send(ev);
        if last {
            // The call's task ends after delivering its hang-up.
            queues.remove(&call);
        }
    }
}

async fn per_call(mut rx: mpsc::UnboundedReceiver<Event>, counters: Arc<Counters>) {
    while let Some(ev) = rx.recv().await {
        let last = ev.name == "hangup";
        if !ev.deliver {
            if last {
                return;
            }
            continue;
        }
        if deliver(&ev).await {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        if last {
            return;
        }
    }
}

async fn deliver(ev: &Event) -> bool {
    let mut wait = BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let t = jiff::Timestamp::now().as_second().max(0) as u64;
        let sig = switchboard_webrtc::token::sign_webhook(ev.target.secret.as_bytes(), t, &ev.body);
        match tokio::time::timeout(TIMEOUT, post(&ev.target, ev.name, &sig, &ev.body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                debug!(call_id = %ev.call_id, event = ev.name, attempt, "webhook delivered");
                return true;
            }
            Ok(Ok(status)) => {
                info!(call_id = %ev.call_id, event = ev.name, attempt, status, "webhook refused; retrying")
            }
            Ok(Err(e)) => {
                info!(call_id = %ev.call_id, event = ev.name, attempt, error = %e, "webhook failed; retrying")
            }
            Err(_) => {
                info!(call_id = %ev.call_id, event = ev.name, attempt, "webhook timed out; retrying")
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    warn!(call_id = %ev.call_id, event = ev.name, host = %ev.target.host, "webhook given up after {ATTEMPTS} attempts");
    false
}

/// One HTTP/1.1 POST, over TLS for https; the status of the answer.
async fn post(t: &Target, event: &str, sig: &str, body: &str) -> std::io::Result<u16> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
    match &t.tls {
        None => exchange(tcp, t, event, sig, body).await,
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await?;
            exchange(tls, t, event, sig, body).await
        }
    }
}

async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    mut s: S,
    t: &Target,
    event: &str,
    sig: &str,
    body: &str,
) -> std::io::Result<u16> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Switchboard\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nX-Switchboard-Event: {event}\r\nX-Switchboard-Signature: {sig}\r\n\
         Connection: close\r\n\r\n{body}",
        path = t.path,
        host = t.host,
        len = body.len(),
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}
