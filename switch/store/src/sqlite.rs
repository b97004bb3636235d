//! The embedded store: one SQLite file in WAL mode, its changes queued for a writer thread.
//!
//! Opening does, in order: make the directory, set WAL and `synchronous = NORMAL` (a crash
//! may lose the last batch, never corrupt the file), bring the schema up to date
//! (`migrate.rs`), close what a killed process left open, then start the writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, params};
use tracing::{error, info, warn};

use crate::error::sqlite;
use crate::{CallStore, Cdr, CdrFilter, CdrOp, StorageError, migrate, writer};

/// The embedded store: SQLite in WAL mode, written by a thread of its own.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    tx: mpsc::Sender<CdrOp>,
    path: PathBuf,
    /// Changes sent and not yet taken by the writer (the queue's bound; a `sync_channel`
    /// would allocate all of it up front: ~35 MiB).
    queued: Arc<AtomicUsize>,
    /// Changes the full queue refused.
    dropped: Arc<AtomicU64>,
}

/// Changes waiting for the writer: minutes of calls at thousands a second. When the disk is
/// that far behind, new changes are dropped (counted, logged), never queued without bound.
const QUEUE: usize = 262_144;

/// A pool number released recently: (gateway, number, released unix ms).
pub type Resting = (String, String, i64);

/// The cause written into records a killed process left open.
pub const INTERRUPTED: &str = "INTERRUPTED";

impl CallStore for SqliteStore {
    fn record(&self, op: CdrOp) {
        if self.queued.fetch_add(1, Ordering::Relaxed) < QUEUE {
            if self.tx.send(op).is_err() {
                self.queued.fetch_sub(1, Ordering::Relaxed);
            }
        } else {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                error!(
                    dropped = n + 1,
                    "call record queue full (the disk is far behind): changes dropped"
                );
            }
        }
    }

    fn query(&self, f: &CdrFilter) -> Result<Vec<Cdr>, StorageError> {
        crate::query(&self.path, f)
    }
}

impl SqliteStore {
    /// Opens (creating) the database, brings its schema to [`SCHEMA_VERSION`], closes the
    /// records a previous run left open, and starts the writer thread. Also returns the pool
    /// numbers released recently (gateway, number, released unix ms), leases left by a
    /// previous run counting as released now: they rest for their cool-down before reuse.
    ///
    /// [`SCHEMA_VERSION`]: crate::SCHEMA_VERSION
    pub fn open(path: &Path, now_ms: i64) -> Result<(SqliteStore, Vec<Resting>), StorageError> {
        SqliteStore::open_with(path, now_ms, crate::Retention::default())
    }

    /// [`SqliteStore::open`], deleting records past `retention` (at start, then hourly).
    pub fn open_with(
        path: &Path,
        now_ms: i64,
        retention: crate::Retention,
    ) -> Result<(SqliteStore, Vec<Resting>), StorageError> {
        let conn = connect(path)?;
        migrate::apply(&conn, path)?;
        close_interrupted(&conn, path, now_ms)?;
        let resting = reclaim_leases(&conn, path, now_ms)?;
        let (tx, rx) = mpsc::channel();
        let queued = Arc::<AtomicUsize>::default();
        let taken = queued.clone();
        let p = path.to_path_buf();
        std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || writer::run(conn, rx, &taken, &p, retention))
            .map_err(|source| StorageError::Io {
                path: path.display().to_string(),
                source,
            })?;
        info!(path = %path.display(), "call records in SQLite");
        let store = SqliteStore {
            tx,
            path: path.to_owned(),
            queued,
            dropped: Default::default(),
        };
        Ok((store, resting))
    }
}

/// The writer's connection: the directory made, WAL, a busy timeout for readers' locks.
pub(crate) fn connect(path: &Path) -> Result<Connection, StorageError> {
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
    // The call-id indexes take random keys: each record touches pages all over them, so the
    // writer keeps more of the file cached than SQLite's 2 MiB default (read back otherwise).
    conn.pragma_update(None, "cache_size", -16_384)
        .map_err(sqlite(path))?;
    // A checkpoint (copying the log into the file, with an fsync) every 16 MiB of log rather
    // than every 4: a busy switch rewrites the same pages, and each checkpoint writes a page
    // once however many commits changed it.
    conn.pragma_update(None, "wal_autocheckpoint", 4_000)
        .map_err(sqlite(path))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite(path))?;
    Ok(conn)
}

/// Records a killed process left open end as [`INTERRUPTED`] at the last moment the process
/// was known alive (its writer's heartbeat; now for a database without one), never before
/// they started or were answered; billable until then if they were answered.
fn close_interrupted(conn: &Connection, path: &Path, now_ms: i64) -> Result<(), StorageError> {
    let alive: Option<i64> = conn
        .query_row("SELECT alive_ms FROM heartbeat WHERE id = 1", [], |r| {
            r.get(0)
        })
        .ok();
    let end = alive.map_or(now_ms, |a| a.min(now_ms));
    let closed = conn
        .execute(
            "UPDATE cdr SET ended_ms = MAX(?1, started_ms, COALESCE(answered_ms, started_ms)), cause = ?2,
               billable_secs = CASE WHEN answered_ms IS NULL THEN 0
                 ELSE (MAX(?1, answered_ms) - answered_ms) / 1000.0 END
             WHERE ended_ms IS NULL",
            params![end, INTERRUPTED],
        )
        .map_err(sqlite(path))?;
    if closed > 0 {
        warn!(
            records = closed,
            "call records left open by a previous run closed as {INTERRUPTED}"
        );
    }
    Ok(())
}

/// Numbers leased by calls of a previous run are released now; the numbers released within
/// a day are returned to rest out their cool-down.
fn reclaim_leases(
    conn: &Connection,
    path: &Path,
    now_ms: i64,
) -> Result<Vec<Resting>, StorageError> {
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
    let mut st = conn
        .prepare("SELECT gateway, number, released_ms FROM ani_lease WHERE released_ms > ?1")
        .map_err(sqlite(path))?;
    // A day covers any sane cool-down; the engine applies each gateway's own.
    st.query_map(params![now_ms - 86_400_000], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .map_err(sqlite(path))?
    .collect::<Result<Vec<Resting>, _>>()
    .map_err(sqlite(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::TempDb;

    #[test]
    fn opening_closes_the_records_a_killed_run_left_open_and_rests_its_numbers() {
        let db = TempDb::new("killed");
        let conn = connect(db.path()).unwrap();
        migrate::apply(&conn, db.path()).unwrap();
        conn.execute_batch(
            "INSERT INTO cdr (call_id, caller, destination, context, started_ms, answered_ms)
               VALUES ('up@h', '1', '1000', 'default', 1000, 2000);
             INSERT INTO cdr (call_id, caller, destination, context, started_ms)
               VALUES ('ringing@h', '1', '1000', 'default', 1500);
             INSERT INTO ani_lease (gateway, number, call_id, leased_ms) VALUES ('gw1', '0309999', 'up@h', 1000);
             INSERT INTO ani_lease (gateway, number, leased_ms, released_ms) VALUES ('gw1', '0308888', 10, 20);",
        )
        .unwrap();
        drop(conn);
        let now = 86_400_000 + 6_000;
        let (store, resting) = SqliteStore::open(db.path(), now).unwrap();
        assert_eq!(resting, vec![("gw1".to_owned(), "0309999".to_owned(), now)]);
        let rows = store.query(&CdrFilter::default()).unwrap();
        let cause_and_billable: Vec<_> = rows
            .iter()
            .map(|r| (r.call_id.as_str(), r.cause.as_deref(), r.billable_secs))
            .collect();
        assert_eq!(
            cause_and_billable,
            vec![
                ("ringing@h", Some(INTERRUPTED), Some(0.0)),
                (
                    "up@h",
                    Some(INTERRUPTED),
                    Some((now - 2000) as f64 / 1000.0)
                ),
            ]
        );
    }

    #[test]
    fn records_a_crash_left_open_end_at_the_last_heartbeat_not_at_the_restart() {
        let db = TempDb::new("heartbeat");
        let conn = connect(db.path()).unwrap();
        migrate::apply(&conn, db.path()).unwrap();
        // Answered at 2 s, the process last seen alive at 5 s, restarted at 30 s; a call that
        // began after the last heartbeat (within its interval) ends where it began.
        conn.execute_batch(
            "INSERT INTO cdr (call_id, caller, destination, context, started_ms, answered_ms, b_call_id)
               VALUES ('up@h', '1', '1000', 'default', 1000, 2000, 'b-up@h');
             INSERT INTO cdr (call_id, caller, destination, context, started_ms, answered_ms)
               VALUES ('late@h', '1', '1000', 'default', 5500, 5600);
             INSERT INTO heartbeat (id, alive_ms) VALUES (1, 5000);",
        )
        .unwrap();
        drop(conn);
        let (store, _) = SqliteStore::open(db.path(), 30_000).unwrap();
        let rows = store.query(&CdrFilter::default()).unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.call_id.as_str(), r.ended.as_deref(), r.billable_secs))
            .collect();
        assert_eq!(
            got,
            vec![
                ("late@h", Some("1970-01-01T00:00:05.6Z"), Some(0.0)),
                ("up@h", Some("1970-01-01T00:00:05Z"), Some(3.0)),
            ]
        );
        assert_eq!(rows[1].b_call_id.as_deref(), Some("b-up@h"));
    }
}
