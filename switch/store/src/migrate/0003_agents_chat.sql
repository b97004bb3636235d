-- Schema version 3: agents of the console (argon2id password hashes, never clear text) and
-- the chat between an agent and a caller, kept with the call's record.
CREATE TABLE agent (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    merchants  TEXT NOT NULL,
    queues     TEXT NOT NULL,
    password   TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE chat_message (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    cdr_id  INTEGER NOT NULL REFERENCES cdr(id),
    at_ms   INTEGER NOT NULL,
    sender  TEXT NOT NULL,
    agent   TEXT,
    text    TEXT NOT NULL
);
CREATE INDEX chat_message_cdr ON chat_message(cdr_id);
