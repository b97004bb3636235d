-- Schema version 2: what the caller's browser was asked to do during a call (a page pushed
-- by the agent's *76, a volume change...), with its code and result, in order.
CREATE TABLE call_action (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    cdr_id  INTEGER NOT NULL REFERENCES cdr(id),
    at_ms   INTEGER NOT NULL,
    name    TEXT NOT NULL,
    code    TEXT,
    detail  TEXT,
    ok      INTEGER NOT NULL,
    result  TEXT NOT NULL
);
CREATE INDEX call_action_cdr ON call_action(cdr_id);
