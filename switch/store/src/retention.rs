//! How long records are kept (`[storage] keep_days`, `keep_unanswered_days`): the writer
//! deletes older ones in batches, at start and then hourly, so a flood of refused attempts
//! cannot fill the disk and a long-lived switch does not keep records past the operator's
//! policy.

use std::time::Duration;

use rusqlite::{Transaction, params};

/// Records older than these are deleted (None: kept forever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Every record (by start time).
    pub keep: Option<Duration>,
    /// Records of calls never answered (refused, failed, abandoned attempts).
    pub keep_unanswered: Option<Duration>,
}

/// Records deleted per transaction (the writer goes on with calls between batches).
pub(crate) const BATCH: i64 = 5000;

/// How often the writer looks for records to delete.
pub(crate) const EVERY: Duration = Duration::from_secs(3600);

impl Retention {
    /// Nothing is ever deleted.
    pub fn forever(&self) -> bool {
        self.keep.is_none() && self.keep_unanswered.is_none()
    }
}

/// Deletes one batch of ended records past `r` at `now_ms`, with their actions, chat and
/// browser context. How many records went (a full batch: call again).
pub(crate) fn prune(tx: &Transaction<'_>, r: &Retention, now_ms: i64) -> rusqlite::Result<i64> {
    let cutoff = |d: Option<Duration>| d.map_or(i64::MIN, |d| now_ms - d.as_millis() as i64);
    let (all, unanswered) = (cutoff(r.keep), cutoff(r.keep_unanswered));
    const WHO: &str =
        "ended_ms IS NOT NULL AND (started_ms < ?1 OR (answered_ms IS NULL AND started_ms < ?2))";
    // The batch is every matching record up to the BATCH-th matching id: the same set for
    // each statement of the transaction.
    let last: Option<i64> = tx
        .query_row(
            &format!("SELECT id FROM cdr WHERE {WHO} ORDER BY id LIMIT 1 OFFSET ?3"),
            params![all, unanswered, BATCH - 1],
            |row| row.get(0),
        )
        .ok();
    let last = last.unwrap_or(i64::MAX);
    let batch = format!("SELECT id FROM cdr WHERE {WHO} AND id <= ?3");
    for table in ["call_action", "chat_message"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE cdr_id IN ({batch})"),
            params![all, unanswered, last],
        )?;
    }
    tx.execute(
        &format!(
            "DELETE FROM web_context WHERE call_id IN (SELECT call_id FROM cdr WHERE {WHO} AND id <= ?3)"
        ),
        params![all, unanswered, last],
    )?;
    let n = tx.execute(
        &format!("DELETE FROM cdr WHERE {WHO} AND id <= ?3"),
        params![all, unanswered, last],
    )?;
    Ok(n as i64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::TempDb;

    #[test]
    fn old_records_go_with_what_hangs_off_them_and_unanswered_ones_sooner() {
        let db = TempDb::new("retention");
        let mut conn = crate::sqlite::connect(db.path()).unwrap();
        crate::migrate::apply(&conn, db.path()).unwrap();
        let day = 86_400_000i64;
        let now = 100 * day;
        // (call, started, answered, ended)
        let rows = [
            (
                "old-answered",
                now - 50 * day,
                Some(now - 50 * day),
                Some(now - 50 * day),
            ),
            (
                "recent-answered",
                now - 20 * day,
                Some(now - 20 * day),
                Some(now - 20 * day),
            ),
            ("old-refused", now - 10 * day, None, Some(now - 10 * day)),
            ("new-refused", now - day, None, Some(now - day)),
            ("in-progress", now - 60 * day, Some(now - 60 * day), None),
        ];
        for (id, s, a, e) in rows {
            conn.execute(
                "INSERT INTO cdr (call_id, caller, destination, context, started_ms, answered_ms, ended_ms) VALUES (?1, '1', '2', 'default', ?2, ?3, ?4)",
                params![id, s, a, e],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO call_action (cdr_id, at_ms, name, code, detail, ok, result) SELECT id, 0, 'push_page', '*76', '', 1, 'ok' FROM cdr;
             INSERT INTO web_context (call_id, merchant, link, at_ms) SELECT call_id, 'm', 'l', 0 FROM cdr;",
        )
        .unwrap();
        let r = Retention {
            keep: Some(Duration::from_secs(30 * 86_400)),
            keep_unanswered: Some(Duration::from_secs(7 * 86_400)),
        };
        let tx = conn.transaction().unwrap();
        assert_eq!(prune(&tx, &r, now).unwrap(), 2);
        assert_eq!(prune(&tx, &r, now).unwrap(), 0);
        tx.commit().unwrap();
        let left: Vec<String> = conn
            .prepare("SELECT call_id FROM cdr ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(left, ["recent-answered", "new-refused", "in-progress"]);
        let count = |t: &str| -> i64 {
            conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count("call_action"), 3);
        assert_eq!(count("web_context"), 3);
        assert!(Retention::default().forever());
    }
}
