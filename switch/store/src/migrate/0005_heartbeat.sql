-- Schema version 5: the last moment the switch was known alive (its record writer writes it
-- every 2 s). Records a crash leaves open are closed at it on the next start, not at the
-- restart: a call is never billed for the downtime.
CREATE TABLE heartbeat (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  alive_ms INTEGER NOT NULL
);
