//! Versioned schema migrations, applied when the database opens.
//!
//! [`MIGRATIONS`] is the ordered list of schema changes, each a version, a line saying what
//! it does and its SQL (`migrate/NNNN_*.sql`). Opening a database runs, in one `BEGIN
//! IMMEDIATE` transaction, the ones above the version it has and records the new version:
//! an upgrade that fails leaves the file as it was, and two processes opening the same file
//! cannot both migrate it.
//!
//! The version lives in SQLite's own `PRAGMA user_version` (0 in a new file) rather than in
//! a `schema_migrations` table: there is nothing to create before the first migration, it
//! is read and written inside the migration's transaction, and `sqlite3 FILE 'PRAGMA
//! user_version'` shows it. (PostgreSQL has no such header; a PostgreSQL store keeps its own
//! list and a table.)
//!
//! A database made before versions existed has version 0 and the tables already: it is
//! recognised by its tables having every column of version 1 and adopted as version 1
//! (migration 1 is written with `IF NOT EXISTS`, so it only adds an index such a file may
//! lack). One whose tables are not version 1's is refused rather than stamped with a version
//! it does not have ([`StorageError::Unrecognised`]). A database newer than this build is
//! refused, never downgraded ([`StorageError::TooNew`]).

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tracing::info;

use crate::StorageError;
use crate::error::sqlite;

/// A schema change: its version, what it does in a line, its SQL.
#[derive(Debug, Clone)]
struct Migration {
    version: u32,
    what: &'static str,
    sql: &'static str,
}

/// Every schema change, oldest first; versions count up from 1. Append, never edit: a
/// database records only the number of the last one it got.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "call records, ANI leases, browser context",
        sql: include_str!("migrate/0001_first.sql"),
    },
    Migration {
        version: 2,
        what: "actions in the caller's browser (pushed pages, volume, echo controls)",
        sql: include_str!("migrate/0002_actions.sql"),
    },
    Migration {
        version: 3,
        what: "agents of the console, chat transcripts",
        sql: include_str!("migrate/0003_agents_chat.sql"),
    },
    Migration {
        version: 4,
        what: "the source (transport, address) of each call",
        sql: include_str!("migrate/0004_source.sql"),
    },
    Migration {
        version: 5,
        what: "the writer's heartbeat (records a crash interrupts end at the last one)",
        sql: include_str!("migrate/0005_heartbeat.sql"),
    },
];

/// The schema version this build writes (the last migration's).
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// What opening did to the schema.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Migrated {
    /// The version the database had.
    pub from: u32,
    /// It had no version but version 1's tables.
    pub adopted: bool,
    /// The migrations run, in order.
    pub applied: Vec<u32>,
}

/// Brings the database to [`SCHEMA_VERSION`].
pub(crate) fn apply(conn: &Connection, path: &Path) -> Result<Migrated, StorageError> {
    apply_list(conn, path, MIGRATIONS)
}

/// [`apply`] with the list given (a test gives one that fails).
fn apply_list(
    conn: &Connection,
    path: &Path,
    list: &[Migration],
) -> Result<Migrated, StorageError> {
    let known = list.last().map_or(0, |m| m.version);
    // IMMEDIATE: the write lock before the version is read, so it cannot change under us.
    let tx =
        Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(sqlite(path))?;
    let from: u32 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite(path))?;
    if from > known {
        return Err(StorageError::TooNew {
            path: path.display().to_string(),
            found: from,
            known,
        });
    }
    let adopted = match list.first() {
        Some(first) if from == 0 => recognise(&tx, path, first)?,
        _ => false,
    };
    let mut applied = Vec::new();
    for m in list.iter().filter(|m| m.version > from) {
        tx.execute_batch(m.sql)
            .map_err(|source| StorageError::Migration {
                path: path.display().to_string(),
                version: m.version,
                what: m.what,
                source,
            })?;
        applied.push(m.version);
    }
    if !applied.is_empty() {
        tx.pragma_update(None, "user_version", known)
            .map_err(sqlite(path))?;
    }
    tx.commit().map_err(sqlite(path))?;
    report(path, list, adopted, &applied);
    Ok(Migrated {
        from,
        adopted,
        applied,
    })
}

fn report(path: &Path, list: &[Migration], adopted: bool, applied: &[u32]) {
    if adopted {
        info!(path = %path.display(), "a database from before schema versions adopted as version 1");
    }
    for m in list.iter().filter(|m| applied.contains(&m.version)) {
        info!(
            version = m.version,
            what = m.what,
            "storage schema migrated"
        );
    }
}

/// Whether an unversioned database is one made before versions (true: every table of
/// `first` it has has that table's columns) or a new one (false: none of those tables).
fn recognise(tx: &Connection, path: &Path, first: &Migration) -> Result<bool, StorageError> {
    let reference = Connection::open_in_memory().map_err(sqlite(path))?;
    reference.execute_batch(first.sql).map_err(sqlite(path))?;
    let mut found = false;
    for table in tables(&reference).map_err(sqlite(path))? {
        let have = columns(tx, &table).map_err(sqlite(path))?;
        if have.is_empty() {
            continue;
        }
        found = true;
        let want = columns(&reference, &table).map_err(sqlite(path))?;
        if let Some(differs) = differs(&have, &want) {
            return Err(StorageError::Unrecognised {
                path: path.display().to_string(),
                table,
                differs,
            });
        }
    }
    Ok(found)
}

/// The tables a connection has (not SQLite's own).
fn tables(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = c.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    st.query_map([], |r| r.get(0))?.collect()
}

/// A table's columns and their declared types (none: no such table).
fn columns(c: &Connection, table: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut st = c.prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")?;
    st.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// What an old table lacks of version 1's (columns of its own are left alone: they do
/// the switch no harm).
fn differs(have: &[(String, String)], want: &[(String, String)]) -> Option<String> {
    let mut missing = Vec::new();
    let mut retyped = Vec::new();
    for (name, ty) in want {
        match have.iter().find(|(n, _)| n == name) {
            None => missing.push(name.as_str()),
            Some((_, t)) if !t.eq_ignore_ascii_case(ty) => {
                retyped.push(format!("{name} is {t}, not {ty}"));
            }
            Some(_) => {}
        }
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("no column {}", missing.join(", ")));
    }
    parts.extend(retyped);
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests;
