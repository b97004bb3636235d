//! # switchboard-store
//!
//! Where calls are recorded and looked up: the [`CallStore`] trait, which the switch, the API
//! and the CRM look-ups see, and its embedded implementation [`SqliteStore`] (a PostgreSQL
//! store for several nodes implements the same trait). The schema is versioned: `migrate.rs`
//! applies what a database lacks when it opens.
//!
//! Call records (CDRs) in SQLite, written by a thread of their own so the SIP thread never
//! waits on a disk: the shell sends what happened, the writer batches it into transactions
//! (WAL mode). A record is inserted when the call starts and completed when it ends, so a
//! process killed mid-call (SIGKILL, power) leaves open records; the next start closes them
//! with the cause `INTERRUPTED`. Reads (API, CLI) open their own read-only connections: WAL
//! lets them run beside the writer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use tracing::{error, info, warn};

mod migrate;

pub use migrate::SCHEMA_VERSION;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database was written by a newer Switchboard (its schema is ahead of this one's).
    #[error(
        "{path}: its schema is version {found}, this Switchboard knows up to {known}: run the newer version, or point [storage] path at another file"
    )]
    TooNew {
        /// The database file.
        path: String,
        /// Its version.
        found: u32,
        /// The newest this build knows.
        known: u32,
    },
    /// SQLite said no.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// The directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Something that happened to a call, for its record.
#[derive(Debug)]
pub enum CdrOp {
    /// The call was accepted for routing.
    Start {
        /// Switch-local call id (unique while the process runs).
        call: u64,
        /// Leg A's Call-ID.
        call_id: String,
        /// Caller number.
        caller: String,
        /// Destination dialled.
        destination: String,
        /// Dialplan context.
        context: String,
        /// Unix ms.
        at: i64,
    },
    /// A browser call's facts and context (written by the browser leg, keyed by leg A's
    /// Call-ID: the record joins them).
    Web(Box<WebRecord>),
    /// Leg B rings.
    Ring {
        /// The call.
        call: u64,
        /// Unix ms.
        at: i64,
    },
    /// The caller was answered.
    Answer {
        /// The call.
        call: u64,
        /// The target that answered.
        target: Option<String>,
        /// Unix ms.
        at: i64,
    },
    /// The call ended.
    End {
        /// The call.
        call: u64,
        /// Unix ms.
        at: i64,
        /// What the engine knows about it.
        summary: std::sync::Arc<switchboard_core::CallSummary>,
    },
    /// A caller number was leased to the call.
    AniLeased {
        /// The call.
        call: u64,
        /// Gateway.
        gateway: String,
        /// Number.
        number: String,
        /// Unix ms.
        at: i64,
    },
    /// A leased number went back to its pool.
    AniReleased {
        /// Gateway.
        gateway: String,
        /// Number.
        number: String,
        /// Unix ms.
        at: i64,
    },
    /// Media quality at the end of the call (JSON), from its media session.
    Quality {
        /// The call.
        call: u64,
        /// JSON text.
        json: String,
    },
}

/// Where calls are recorded and looked up: the switch, the API and the CRM look-ups see
/// only this. SQLite (embedded, [`SqliteStore`]) today; a PostgreSQL store shared by several
/// nodes implements the same two calls.
pub trait CallStore: Send + Sync + std::fmt::Debug {
    /// Queues a change. Never blocks (it is called from the SIP thread).
    fn record(&self, op: CdrOp);
    /// Reads records, newest first. Blocking: call it from `spawn_blocking`.
    fn query(&self, f: &CdrFilter) -> Result<Vec<Cdr>, StorageError>;
}

/// The store the switch uses.
pub type Store = std::sync::Arc<dyn CallStore>;

/// The embedded store: SQLite in WAL mode, written by a thread of its own.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    tx: mpsc::Sender<CdrOp>,
    path: std::path::PathBuf,
    /// Changes sent and not yet taken by the writer (the queue's bound; a `sync_channel`
    /// would allocate all of it up front).
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Changes the full queue refused.
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Changes waiting for the writer: minutes of calls at thousands a second. When the disk is
/// that far behind, new changes are dropped (counted, logged), never queued without bound.
const QUEUE: usize = 262_144;

impl CallStore for SqliteStore {
    fn record(&self, op: CdrOp) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.queued.fetch_add(1, Relaxed) < QUEUE {
            if self.tx.send(op).is_err() {
                self.queued.fetch_sub(1, Relaxed);
            }
        } else {
            self.queued.fetch_sub(1, Relaxed);
            let n = self.dropped.fetch_add(1, Relaxed);
            if n.is_multiple_of(1000) {
                error!(
                    dropped = n + 1,
                    "call record queue full (the disk is far behind): changes dropped"
                );
            }
        }
    }

    fn query(&self, f: &CdrFilter) -> Result<Vec<Cdr>, StorageError> {
        query(&self.path, f)
    }
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |source| StorageError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

/// A pool number released recently: (gateway, number, released unix ms).
pub type Resting = (String, String, i64);

/// The cause written into records a killed process left open.
pub const INTERRUPTED: &str = "INTERRUPTED";

impl SqliteStore {
    /// Opens (creating) the database, closes the records a previous run left open, and
    /// starts the writer thread. Also returns the pool numbers released recently (gateway,
    /// number, released unix ms), leases left by a previous run counting as released now:
    /// they rest for their cool-down before reuse.
    pub fn open(path: &Path, now_ms: i64) -> Result<(SqliteStore, Vec<Resting>), StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(sqlite(path))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite(path))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite(path))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(sqlite(path))?;
        migrate::apply(&conn, path)?;
        let closed = conn
            .execute(
                "UPDATE cdr SET ended_ms = ?1, cause = ?2,
                   billable_secs = CASE WHEN answered_ms IS NULL THEN 0 ELSE (?1 - answered_ms) / 1000.0 END
                 WHERE ended_ms IS NULL",
                params![now_ms, INTERRUPTED],
            )
            .map_err(sqlite(path))?;
        if closed > 0 {
            warn!(
                records = closed,
                "call records left open by a previous run closed as {INTERRUPTED}"
            );
        }
        let reclaimed = conn
            .execute(
                "UPDATE ani_lease SET released_ms = ?1 WHERE released_ms IS NULL",
                params![now_ms],
            )
            .map_err(sqlite(path))?;
        if reclaimed > 0 {
            warn!(
                numbers = reclaimed,
                "caller numbers leased by calls of a previous run reclaimed (they rest first)"
            );
        }
        let resting = {
            let mut st = conn
                .prepare(
                    "SELECT gateway, number, released_ms FROM ani_lease WHERE released_ms > ?1",
                )
                .map_err(sqlite(path))?;
            // A day covers any sane cool-down; the engine applies each gateway's own.
            st.query_map(params![now_ms - 86_400_000], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(sqlite(path))?
            .collect::<Result<Vec<Resting>, _>>()
            .map_err(sqlite(path))?
        };
        let (tx, rx) = mpsc::channel();
        let queued = std::sync::Arc::<std::sync::atomic::AtomicUsize>::default();
        let taken = queued.clone();
        let p = path.to_path_buf();
        std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || writer(conn, rx, &taken, &p))
            .map_err(|source| StorageError::Io {
                path: path.display().to_string(),
                source,
            })?;
        info!(path = %path.display(), "call records in SQLite");
        Ok((
            SqliteStore {
                tx,
                path: path.to_owned(),
                queued,
                dropped: Default::default(),
            },
            resting,
        ))
    }
}

/// Ring and answer times not written yet: most calls of a busy switch end within a second,
/// and their times then go out with the end in one statement. Older ones are flushed after
/// [`HOLD`] so a record interrupted by a crash still has its answer time (its billing).
#[derive(Default)]
struct Pending {
    ring: Option<i64>,
    answer: Option<(i64, Option<String>)>,
    since: Option<std::time::Instant>,
}

const HOLD: Duration = Duration::from_millis(500);

/// How long changes gather before a commit (what a crash may lose at most).
const BATCH: Duration = Duration::from_millis(20);

fn writer(
    mut conn: Connection,
    rx: mpsc::Receiver<CdrOp>,
    queued: &std::sync::atomic::AtomicUsize,
    path: &Path,
) {
    // Switch-local call id -> row id, for the calls in progress.
    let mut rows: HashMap<u64, i64> = HashMap::new();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut ended: Ended = HashMap::new();
    loop {
        let first = if pending.is_empty() && ended.is_empty() {
            match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(HOLD / 2) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        let tx = match conn.transaction() {
            Ok(t) => t,
            Err(e) => {
                error!(path = %path.display(), error = %e, "call records: cannot write");
                continue;
            }
        };
        // A batch: what arrives within BATCH of the first change, up to a bound. One commit
        // per batch, not per change: at thousands of calls per second that is the difference
        // between a writer that keeps up and one that does not.
        let deadline = std::time::Instant::now() + BATCH;
        let mut op = first;
        let mut n = 0;
        while let Some(o) = op.take() {
            queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = apply(&tx, &mut rows, &mut pending, &mut ended, o) {
                error!(error = %e, "call record not written");
            }
            n += 1;
            if n < 5000 {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                op = rx.recv_timeout(left).ok();
            }
        }
        if let Err(e) = flush_old(&tx, &rows, &mut pending) {
            error!(error = %e, "call record times not written");
        }
        // Calls without media never send a quality: forget them after a while.
        ended.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(10));
        if let Err(e) = tx.commit() {
            error!(path = %path.display(), error = %e, "call records: commit failed");
        }
    }
}

fn write_times(tx: &rusqlite::Transaction<'_>, id: i64, p: &Pending) -> rusqlite::Result<()> {
    let (answered, target) = match &p.answer {
        Some((at, t)) => (Some(*at), t.clone()),
        None => (None, None),
    };
    tx.prepare_cached(
        "UPDATE cdr SET ringing_ms = COALESCE(ringing_ms, ?1), answered_ms = COALESCE(?2, answered_ms),
           target = COALESCE(?3, target) WHERE id = ?4",
    )?
    .execute(params![p.ring, answered, target, id])?;
    Ok(())
}

fn flush_old(
    tx: &rusqlite::Transaction<'_>,
    rows: &HashMap<u64, i64>,
    pending: &mut HashMap<u64, Pending>,
) -> rusqlite::Result<()> {
    let old: Vec<u64> = pending
        .iter()
        .filter(|(_, p)| p.since.is_some_and(|s| s.elapsed() >= HOLD))
        .map(|(c, _)| *c)
        .collect();
    for call in old {
        if let (Some(p), Some(id)) = (pending.remove(&call), rows.get(&call)) {
            write_times(tx, *id, &p)?;
        }
    }
    Ok(())
}

/// Ended calls whose media quality may still come (call -> row id, when it ended).
type Ended = HashMap<u64, (i64, std::time::Instant)>;

fn apply(
    tx: &rusqlite::Transaction<'_>,
    rows: &mut HashMap<u64, i64>,
    pending: &mut HashMap<u64, Pending>,
    ended: &mut Ended,
    op: CdrOp,
) -> rusqlite::Result<()> {
    match op {
        CdrOp::Start {
            call,
            call_id,
            caller,
            destination,
            context,
            at,
        } => {
            tx.prepare_cached(
                "INSERT INTO cdr (call_id, caller, destination, context, started_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![call_id, caller, destination, context, at])?;
            rows.insert(call, tx.last_insert_rowid());
        }
        CdrOp::Web(w) => {
            let f = &w.facts;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO web_context (call_id, merchant, link, session, page_url, referrer, caller_ip, context, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                w.call_id, f.merchant, f.link, f.session, f.page_url, f.referrer, f.caller_ip, w.context, w.at
            ])?;
        }
        CdrOp::Ring { call, at } => {
            let p = pending.entry(call).or_default();
            p.ring.get_or_insert(at);
            p.since.get_or_insert_with(std::time::Instant::now);
        }
        CdrOp::Answer { call, target, at } => {
            let p = pending.entry(call).or_default();
            p.answer = Some((at, target));
            p.since.get_or_insert_with(std::time::Instant::now);
        }
        CdrOp::End {
            call,
            at,
            summary: s,
        } => {
            let times = pending.remove(&call).unwrap_or_default();
            if let Some(id) = rows.remove(&call) {
                let (answered, answer_target) = match times.answer {
                    Some((a, t)) => (Some(a), t),
                    None => (None, None),
                };
                tx.prepare_cached(
                    "UPDATE cdr SET ended_ms = ?1, b_call_id = ?2, target = COALESCE(?3, ?4, target), billable_secs = ?5,
                       cause = ?6, b_cause = ?7, hangup_side = ?8, codec_a = ?9, codec_b = ?10,
                       ringing_ms = COALESCE(ringing_ms, ?11), answered_ms = COALESCE(answered_ms, ?12)
                     WHERE id = ?13",
                )?
                .execute(params![
                    at,
                    s.b_call_id,
                    answer_target,
                    s.target,
                    s.billable_secs,
                    s.cause.name(),
                    s.b_cause.map(|c| c.name()),
                    s.hangup_side
                        .map(|h| match h {
                            switchboard_core::Side::A => "caller",
                            switchboard_core::Side::B => "callee",
                        })
                        .unwrap_or("switch"),
                    s.codecs[0],
                    s.codecs[1],
                    times.ring,
                    answered,
                    id
                ])?;
                ended.insert(call, (id, std::time::Instant::now()));
            }
        }
        CdrOp::AniLeased {
            call,
            gateway,
            number,
            at,
        } => {
            let call_id: Option<String> = match rows.get(&call) {
                Some(id) => {
                    tx.prepare_cached("UPDATE cdr SET ani = ?1 WHERE id = ?2")?
                        .execute(params![number, id])?;
                    tx.query_row("SELECT call_id FROM cdr WHERE id = ?1", params![id], |r| {
                        r.get(0)
                    })
                    .ok()
                }
                None => None,
            };
            tx.prepare_cached(
                "INSERT INTO ani_lease (gateway, number, call_id, leased_ms, released_ms) VALUES (?1, ?2, ?3, ?4, NULL)
                 ON CONFLICT (gateway, number) DO UPDATE SET call_id = ?3, leased_ms = ?4, released_ms = NULL",
            )?
            .execute(params![gateway, number, call_id, at])?;
        }
        CdrOp::AniReleased {
            gateway,
            number,
            at,
        } => {
            tx.prepare_cached(
                "UPDATE ani_lease SET released_ms = ?1 WHERE gateway = ?2 AND number = ?3",
            )?
            .execute(params![at, gateway, number])?;
        }
        CdrOp::Quality { call, json } => {
            // The media session closes just after the call ends.
            if let Some(id) = ended
                .remove(&call)
                .map(|e| e.0)
                .or_else(|| rows.get(&call).copied())
            {
                tx.prepare_cached("UPDATE cdr SET quality = ?1 WHERE id = ?2")?
                    .execute(params![json, id])?;
            }
        }
    }
    Ok(())
}

/// Who a browser call is, as its record keeps it.
#[derive(Debug, Clone, Default)]
pub struct WebCaller {
    /// Merchant ID.
    pub merchant: String,
    /// Link ID (which button).
    pub link: String,
    /// Customer or session ID.
    pub session: String,
    /// The page the call started on.
    pub page_url: String,
    /// The page's referrer.
    pub referrer: String,
    /// The browser's address.
    pub caller_ip: String,
}

/// What a browser call tells the call center's CRM.
#[derive(Debug, Clone)]
pub struct WebRecord {
    /// Leg A's Call-ID.
    pub call_id: String,
    /// What the call was admitted with (merchant, link, session, page, referrer, address).
    pub facts: WebCaller,
    /// Trail, cookies and form fields (JSON).
    pub context: String,
    /// Unix ms.
    pub at: i64,
}

/// A record, as the API and the CLI show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cdr {
    /// Row id.
    pub id: i64,
    /// Leg A's Call-ID.
    pub call_id: String,
    /// Leg B's Call-ID.
    pub b_call_id: Option<String>,
    /// Caller number.
    pub caller: String,
    /// Destination.
    pub destination: String,
    /// Context.
    pub context: String,
    /// Target that answered (or was tried last).
    pub target: Option<String>,
    /// Caller number leased from the gateway's pool.
    pub ani: Option<String>,
    /// Start, RFC 3339.
    pub started: String,
    /// Ringing, RFC 3339.
    pub ringing: Option<String>,
    /// Answered, RFC 3339.
    pub answered: Option<String>,
    /// Ended, RFC 3339 (None: in progress).
    pub ended: Option<String>,
    /// Seconds from answer to end.
    pub billable_secs: Option<f64>,
    /// Hang-up cause (Q.850 name, or INTERRUPTED).
    pub cause: Option<String>,
    /// Leg B's cause.
    pub b_cause: Option<String>,
    /// Who hung up: caller, callee or switch.
    pub hangup_side: Option<String>,
    /// Leg A's codec.
    pub codec_a: Option<String>,
    /// Leg B's codec.
    pub codec_b: Option<String>,
    /// Media quality summary (JSON).
    pub quality: Option<serde_json::Value>,
    /// Browser calls: merchant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// Browser calls: link (button).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Browser calls: customer or session ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Browser calls: the page the call started on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_url: Option<String>,
    /// Browser calls: that page's referrer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// Browser calls: the browser's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_ip: Option<String>,
    /// Browser calls: trail, cookies and form fields the merchant opted in to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_context: Option<serde_json::Value>,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct CdrFilter {
    /// Started at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Started before (unix ms).
    pub until_ms: Option<i64>,
    /// Only this cause.
    pub cause: Option<String>,
    /// Only this caller number.
    pub caller: Option<String>,
    /// Only this destination.
    pub destination: Option<String>,
    /// Only calls that presented this pool number (a CRM looking up the caller by ANI).
    pub ani: Option<String>,
    /// Only this leg A or leg B Call-ID.
    pub call_id: Option<String>,
    /// Only browser calls of this merchant (a merchant's API key sees nothing else).
    pub merchant: Option<String>,
    /// Only browser calls of this customer/session ID.
    pub session: Option<String>,
    /// Only calls in progress.
    pub active: bool,
    /// At most this many, newest first (default 1000).
    pub limit: Option<u32>,
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// Reads records (a read-only connection of its own).
pub fn query(path: &Path, f: &CdrFilter) -> Result<Vec<Cdr>, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite(path))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite(path))?;
    // Only the conditions asked for, so SQLite can pick an index for each look-up (the
    // `?n IS NULL OR ...` form makes it scan).
    let mut cond: Vec<&str> = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut add = |c: &'static str, v: rusqlite::types::Value| {
        cond.push(c);
        args.push(v);
    };
    use rusqlite::types::Value as V;
    if let Some(v) = f.since_ms {
        add("c.started_ms >= ?", V::Integer(v));
    }
    if let Some(v) = f.until_ms {
        add("c.started_ms < ?", V::Integer(v));
    }
    for (c, v) in [
        ("c.cause = ?", &f.cause),
        ("c.caller = ?", &f.caller),
        ("c.destination = ?", &f.destination),
        ("c.ani = ?", &f.ani),
        ("w.merchant = ?", &f.merchant),
        ("w.session = ?", &f.session),
    ] {
        if let Some(v) = v {
            add(c, V::Text(v.clone()));
        }
    }
    if let Some(v) = &f.call_id {
        // Two indexed look-ups (SQLite's OR optimisation), not a scan.
        add(
            "c.id IN (SELECT id FROM cdr WHERE call_id = ?1x UNION SELECT id FROM cdr WHERE b_call_id = ?1x)",
            V::Text(v.clone()),
        );
    }
    if f.active {
        cond.push("c.ended_ms IS NULL");
    }
    // The join order, forced (CROSS JOIN; without ANALYZE statistics SQLite guesses wrong): a
    // session's calls from the context's index, then their records; a merchant's look-ups by
    // ANI, Call-ID or in progress from the records' indexes (partial for open calls), then
    // their context; everything else from the records, context optional.
    let join = if f.session.is_some() {
        "web_context w CROSS JOIN cdr c ON c.call_id = w.call_id"
    } else if f.merchant.is_some() {
        "cdr c CROSS JOIN web_context w ON w.call_id = c.call_id"
    } else {
        "cdr c LEFT JOIN web_context w ON w.call_id = c.call_id"
    };
    let mut sql = format!(
        "SELECT c.id, c.call_id, c.b_call_id, c.caller, c.destination, c.context, c.target, c.started_ms, c.ringing_ms,
                c.answered_ms, c.ended_ms, c.billable_secs, c.cause, c.b_cause, c.hangup_side, c.codec_a, c.codec_b,
                c.quality, c.ani, w.merchant, w.link, w.session, w.page_url, w.referrer, w.caller_ip, w.context
         FROM {join}"
    );
    // Positional parameters, in order (the Call-ID one is used twice).
    let mut n = 0;
    for (i, c) in cond.iter().enumerate() {
        sql.push_str(if i == 0 { " WHERE " } else { " AND " });
        let mut c = (*c).to_owned();
        if c.contains("?1x") {
            n += 1;
            c = c.replace("?1x", &format!("?{n}"));
        } else if c.contains('?') {
            n += 1;
            c = c.replace('?', &format!("?{n}"));
        }
        sql.push_str(&c);
    }
    args.push(V::Integer(i64::from(f.limit.unwrap_or(1000))));
    sql.push_str(&format!(" ORDER BY c.id DESC LIMIT ?{}", n + 1));
    let mut stmt = conn.prepare(&sql).map_err(sqlite(path))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            let quality: Option<String> = r.get(17)?;
            Ok(Cdr {
                id: r.get(0)?,
                call_id: r.get(1)?,
                b_call_id: r.get(2)?,
                caller: r.get(3)?,
                destination: r.get(4)?,
                context: r.get(5)?,
                target: r.get(6)?,
                started: rfc3339(r.get(7)?),
                ringing: r.get::<_, Option<i64>>(8)?.map(rfc3339),
                answered: r.get::<_, Option<i64>>(9)?.map(rfc3339),
                ended: r.get::<_, Option<i64>>(10)?.map(rfc3339),
                billable_secs: r.get(11)?,
                cause: r.get(12)?,
                b_cause: r.get(13)?,
                hangup_side: r.get(14)?,
                codec_a: r.get(15)?,
                codec_b: r.get(16)?,
                quality: quality.and_then(|q| serde_json::from_str(&q).ok()),
                ani: r.get(18)?,
                merchant: r.get(19)?,
                link: r.get(20)?,
                session: r.get(21)?,
                page_url: r.get(22)?,
                referrer: r.get(23)?,
                caller_ip: r.get(24)?,
                web_context: r
                    .get::<_, Option<String>>(25)?
                    .and_then(|c| serde_json::from_str(&c).ok()),
            })
        })
        .map_err(sqlite(path))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(path))
}

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
        "id,call_id,b_call_id,caller,destination,context,target,ani,started,ringing,answered,ended,billable_secs,cause,b_cause,hangup_side,codec_a,codec_b\r\n",
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

/// Parses `--since`/`since=`: RFC 3339 (`2026-11-28T10:00:00Z`) or a date (`2026-11-28`, UTC).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned_datetime(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp().as_millisecond());
    }
    Err(format!(
        "{s:?} is not a time: use 2026-11-28T10:00:00Z or 2026-11-28 (UTC)"
    ))
}
