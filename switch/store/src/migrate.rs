//! Versioned schema migrations, applied when the database opens.
//!
//! The version lives in SQLite's own `PRAGMA user_version` (0 in a new file): no table of
//! our own to create first, and it is read and written in the same transaction as the
//! migration. Each migration runs once, in order, in one transaction with the version bump.
//! A database created before versions existed (user_version 0, tables present) is adopted
//! as version 1: migration 1 is today's first schema written with `IF NOT EXISTS`, so it
//! changes nothing there. A database newer than this build is refused, never downgraded.

use std::path::Path;

use rusqlite::Connection;
use tracing::info;

use crate::{StorageError, sqlite};

/// A schema change: its version, what it does in a line, its SQL.
struct Migration {
    version: u32,
    what: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    what: "call records, ANI leases, browser context",
    sql: SCHEMA_1,
}];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Brings the database to [`SCHEMA_VERSION`]; the version it found.
pub(crate) fn apply(conn: &Connection, path: &Path) -> Result<u32, StorageError> {
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite(path))?;
    if found > SCHEMA_VERSION {
        return Err(StorageError::TooNew {
            path: path.display().to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        let tx = conn.unchecked_transaction().map_err(sqlite(path))?;
        tx.execute_batch(m.sql).map_err(sqlite(path))?;
        tx.pragma_update(None, "user_version", m.version)
            .map_err(sqlite(path))?;
        tx.commit().map_err(sqlite(path))?;
        info!(
            version = m.version,
            what = m.what,
            "storage schema migrated"
        );
    }
    Ok(found)
}

const SCHEMA_1: &str = "
CREATE TABLE IF NOT EXISTS cdr (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id       TEXT NOT NULL,
    b_call_id     TEXT,
    caller        TEXT NOT NULL,
    destination   TEXT NOT NULL,
    context       TEXT NOT NULL,
    target        TEXT,
    merchant      TEXT,
    link          TEXT,
    session       TEXT,
    page_url      TEXT,
    ani           TEXT,
    started_ms    INTEGER NOT NULL,
    ringing_ms    INTEGER,
    answered_ms   INTEGER,
    ended_ms      INTEGER,
    billable_secs REAL,
    cause         TEXT,
    b_cause       TEXT,
    hangup_side   TEXT,
    codec_a       TEXT,
    codec_b       TEXT,
    quality       TEXT
);
CREATE INDEX IF NOT EXISTS cdr_started ON cdr(started_ms);
CREATE INDEX IF NOT EXISTS cdr_ani ON cdr(ani, started_ms);
CREATE TABLE IF NOT EXISTS ani_lease (
    gateway     TEXT NOT NULL,
    number      TEXT NOT NULL,
    call_id     TEXT,
    leased_ms   INTEGER NOT NULL,
    released_ms INTEGER,
    PRIMARY KEY (gateway, number)
);
CREATE INDEX IF NOT EXISTS cdr_call_id ON cdr(call_id);
CREATE TABLE IF NOT EXISTS web_context (
    call_id   TEXT PRIMARY KEY,
    merchant  TEXT NOT NULL,
    link      TEXT NOT NULL,
    session   TEXT,
    page_url  TEXT,
    referrer  TEXT,
    caller_ip TEXT,
    context   TEXT,
    at_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS web_context_session ON web_context(merchant, session);
CREATE INDEX IF NOT EXISTS cdr_open ON cdr(id) WHERE ended_ms IS NULL;
CREATE INDEX IF NOT EXISTS cdr_b_call_id ON cdr(b_call_id);
";

#[cfg(test)]
mod tests {
    use super::*;

    fn version(c: &Connection) -> u32 {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_database_gets_every_migration_and_a_reopened_one_none() {
        let c = Connection::open_in_memory().unwrap();
        assert_eq!(apply(&c, Path::new("t.db")).unwrap(), 0);
        assert_eq!(version(&c), SCHEMA_VERSION);
        assert_eq!(apply(&c, Path::new("t.db")).unwrap(), SCHEMA_VERSION);
        assert_eq!(version(&c), SCHEMA_VERSION);
    }

    #[test]
    fn a_database_from_before_versions_is_adopted_with_its_records() {
        let c = Connection::open_in_memory().unwrap();
        // What the switch created before migrations existed: the same tables, no version.
        c.execute_batch(SCHEMA_1).unwrap();
        c.execute(
            "INSERT INTO cdr (call_id, caller, destination, context, started_ms) VALUES ('x@h', '1', '2', 'default', 5)",
            [],
        )
        .unwrap();
        assert_eq!(version(&c), 0);
        apply(&c, Path::new("old.db")).unwrap();
        assert_eq!(version(&c), SCHEMA_VERSION);
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM cdr WHERE call_id = 'x@h'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_database_from_a_newer_switch_is_refused_in_plain_words() {
        let c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = apply(&c, Path::new("new.db")).unwrap_err().to_string();
        assert!(err.contains("new.db: its schema is version 2"), "{err}");
        assert!(err.contains("knows up to 1"), "{err}");
        assert_eq!(version(&c), SCHEMA_VERSION + 1);
    }
}
