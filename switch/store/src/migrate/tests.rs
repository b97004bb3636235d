#![allow(clippy::unwrap_used)]

use super::*;
use crate::testing::TempDb;
use crate::{CdrFilter, SqliteStore};

/// The schema as the switch created it before versions existed (switch/server/src/storage.rs
/// before b2a3528), copied here by hand so the adoption test does not lean on migration 1.
const BEFORE_VERSIONS: &str = "
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

fn version(c: &Connection) -> u32 {
    c.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

/// Every table and index with its SQL, as SQLite keeps them.
fn schema(c: &Connection) -> Vec<(String, String, Option<String>)> {
    let mut st = c
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn old_database(db: &TempDb, sql: &str) -> Connection {
    let c = Connection::open(db.path()).unwrap();
    c.execute_batch(sql).unwrap();
    c.execute(
        "INSERT INTO cdr (call_id, caller, destination, context, started_ms, ended_ms, cause)
         VALUES ('old@host', '0301234', '1000', 'default', 1000, 2000, 'NORMAL_CLEARING')",
        [],
    )
    .unwrap();
    c
}

#[test]
fn versions_count_up_from_one_and_the_last_is_the_schema_version() {
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version as usize, i + 1, "{}", m.what);
    }
    assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as u32);
}

#[test]
fn a_new_database_gets_every_migration_and_todays_schema() {
    let c = Connection::open_in_memory().unwrap();
    let m = apply(&c, Path::new("new.db")).unwrap();
    let all: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(
        m,
        Migrated {
            from: 0,
            adopted: false,
            applied: all
        }
    );
    assert_eq!(version(&c), SCHEMA_VERSION);
    let before = Connection::open_in_memory().unwrap();
    before.execute_batch(BEFORE_VERSIONS).unwrap();
    later_migrations(&before);
    assert_eq!(
        schema(&c),
        schema(&before),
        "migration 1 is the schema from before versions, the others add to it"
    );
}

/// Runs the migrations after the first (what a database adopted as version 1 gets next).
fn later_migrations(c: &Connection) {
    for m in &MIGRATIONS[1..] {
        c.execute_batch(m.sql).unwrap();
    }
}

#[test]
fn a_reopened_database_gets_no_migration() {
    let db = TempDb::new("reopen");
    drop(SqliteStore::open(db.path(), 0).unwrap());
    let c = Connection::open(db.path()).unwrap();
    let m = apply(&c, db.path()).unwrap();
    assert_eq!(
        m,
        Migrated {
            from: SCHEMA_VERSION,
            adopted: false,
            applied: vec![]
        }
    );
    assert_eq!(version(&c), SCHEMA_VERSION);
}

#[test]
fn a_database_from_before_versions_is_adopted_with_its_records() {
    let db = TempDb::new("adopt");
    let c = old_database(&db, BEFORE_VERSIONS);
    assert_eq!(version(&c), 0);
    drop(c);
    // What adoption then the later migrations make of it, done by hand on a copy.
    let copy = TempDb::new("adopt-copy");
    let c = old_database(&copy, BEFORE_VERSIONS);
    later_migrations(&c);
    let before = schema(&c);
    drop(c);

    let (store, _) = SqliteStore::open(db.path(), 5000).unwrap();
    let rows = crate::CallStore::query(&store, &CdrFilter::default()).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].call_id.as_str(), rows[0].caller.as_str()),
        ("old@host", "0301234")
    );
    assert_eq!(rows[0].cause.as_deref(), Some("NORMAL_CLEARING"));
    let c = Connection::open(db.path()).unwrap();
    assert_eq!(version(&c), SCHEMA_VERSION);
    assert_eq!(
        schema(&c),
        before,
        "adoption changes no table (only the later migrations add theirs)"
    );
}

#[test]
fn a_database_from_the_first_release_is_adopted_and_gets_the_tables_added_since() {
    // The schema of 5b110e3, the first with call records: the same cdr, two of its indexes,
    // no ANI leases or browser context yet.
    let cdr = BEFORE_VERSIONS
        .split("CREATE INDEX IF NOT EXISTS cdr_ani")
        .next()
        .unwrap();
    let first = format!("{cdr}CREATE INDEX IF NOT EXISTS cdr_call_id ON cdr(call_id);");
    let db = TempDb::new("first");
    drop(old_database(&db, &first));
    let c = Connection::open(db.path()).unwrap();
    let m = apply(&c, db.path()).unwrap();
    assert!(m.adopted && m.from == 0, "{m:?}");
    let fresh = Connection::open_in_memory().unwrap();
    apply(&fresh, Path::new("fresh.db")).unwrap();
    assert_eq!(schema(&c), schema(&fresh));
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM cdr", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_database_from_a_newer_switch_is_refused_in_plain_words_and_not_migrated() {
    let db = TempDb::new("newer");
    let c = Connection::open(db.path()).unwrap();
    c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(c);
    let err = SqliteStore::open(db.path(), 0).unwrap_err();
    assert!(matches!(err, StorageError::TooNew { .. }), "{err:?}");
    let msg = err.to_string();
    let path = db.path().display().to_string();
    assert!(
        msg.starts_with(&format!(
            "{path}: its schema is version {}, this Switchboard knows up to {SCHEMA_VERSION}",
            SCHEMA_VERSION + 1
        )),
        "{msg}"
    );
    let c = Connection::open(db.path()).unwrap();
    assert_eq!(version(&c), SCHEMA_VERSION + 1);
    assert!(schema(&c).is_empty(), "nothing created: {:?}", schema(&c));
}

#[test]
fn an_unversioned_database_with_other_tables_of_the_same_name_is_refused_not_adopted() {
    let db = TempDb::new("foreign");
    let c = Connection::open(db.path()).unwrap();
    c.execute_batch("CREATE TABLE cdr (id INTEGER PRIMARY KEY, call_id TEXT, started_ms TEXT)")
        .unwrap();
    let err = apply(&c, db.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StorageError::Unrecognised { .. }), "{err:?}");
    assert!(
        msg.contains("its table cdr is not the one Switchboard made"),
        "{msg}"
    );
    assert!(msg.contains("no column b_call_id, caller,"), "{msg}");
    assert!(msg.contains("started_ms is TEXT, not INTEGER"), "{msg}");
    assert_eq!(version(&c), 0);
    assert_eq!(schema(&c).len(), 1, "nothing created");
}

#[test]
fn a_migration_that_fails_leaves_the_database_as_it_was() {
    let c = Connection::open_in_memory().unwrap();
    apply(&c, Path::new("t.db")).unwrap();
    let before = schema(&c);
    let broken = [
        MIGRATIONS,
        &[Migration {
            version: SCHEMA_VERSION + 1,
            what: "half a change",
            sql: "CREATE TABLE extra (x INTEGER); ALTER TABLE no_such_table ADD COLUMN y TEXT;",
        }],
    ]
    .concat();
    let err = apply_list(&c, Path::new("t.db"), &broken).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "t.db: schema migration {} (half a change) failed, the database is left as it was: ",
            SCHEMA_VERSION + 1
        )),
        "{msg}"
    );
    assert!(msg.contains("no_such_table"), "{msg}");
    assert_eq!(version(&c), SCHEMA_VERSION);
    assert_eq!(
        schema(&c),
        before,
        "the table of the failed migration is gone"
    );
}
