-- Schema version 1: the schema Switchboard created before schema versions existed, to the letter.
-- Written with IF NOT EXISTS so that it changes nothing in such a database (adoption).
-- Later migrations need not be idempotent: each runs once, recorded in PRAGMA user_version.
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
