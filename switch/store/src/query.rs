//! Reading records: a read-only connection per query, beside the writer (WAL).
//!
//! The SQL holds only the conditions asked for, so SQLite can pick an index for each look-up
//! (the `?n IS NULL OR ...` form makes it scan): the CRM look-ups by ANI, Call-ID or session
//! take a millisecond or two on 100k records (bench/crm.sh).

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, Row};

use crate::cdr::{CdrAction, CdrChat};
use crate::error::sqlite;
use crate::time::rfc3339;
use crate::{ActionRecord, Cdr, CdrFilter, ChatLine, StorageError};

/// Reads records (a read-only connection of its own).
pub fn query(path: &Path, f: &CdrFilter) -> Result<Vec<Cdr>, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite(path))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite(path))?;
    // A newer switch may have reshaped the records: say so rather than misread them.
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite(path))?;
    if found > crate::SCHEMA_VERSION {
        return Err(StorageError::TooNew {
            path: path.display().to_string(),
            found,
            known: crate::SCHEMA_VERSION,
        });
    }
    let (mut sql, args) = select(f);
    if found < 4 {
        // A file the switch has not migrated yet: no source column.
        sql = sql.replacen("c.source", "NULL", 1);
    }
    let mut stmt = conn.prepare(&sql).map_err(sqlite(path))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), cdr)
        .map_err(sqlite(path))?;
    let mut cdrs = rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(path))?;
    // A file the switch has not migrated yet (read by the CLI) has no actions.
    if found >= 2 {
        actions(&conn, &mut cdrs).map_err(sqlite(path))?;
    }
    if found >= 3 {
        chat(&conn, &mut cdrs).map_err(sqlite(path))?;
    }
    Ok(cdrs)
}

/// The records' chat messages, in order.
fn chat(conn: &Connection, cdrs: &mut [Cdr]) -> rusqlite::Result<()> {
    if cdrs.is_empty() {
        return Ok(());
    }
    let marks = vec!["?"; cdrs.len()].join(",");
    let mut stmt = conn.prepare(&format!(
        "SELECT cdr_id, at_ms, sender, agent, text FROM chat_message WHERE cdr_id IN ({marks}) ORDER BY id"
    ))?;
    let by_id: std::collections::HashMap<i64, usize> =
        cdrs.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(cdrs.iter().map(|c| c.id)))?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let Some(&i) = by_id.get(&id) else { continue };
        cdrs[i].chat.push(CdrChat {
            at: rfc3339(r.get(1)?),
            line: ChatLine {
                from: r.get(2)?,
                agent: r.get(3)?,
                text: r.get(4)?,
            },
        });
    }
    Ok(())
}

/// The records' actions, in the order they happened (one statement for all of them).
fn actions(conn: &Connection, cdrs: &mut [Cdr]) -> rusqlite::Result<()> {
    if cdrs.is_empty() {
        return Ok(());
    }
    let marks = vec!["?"; cdrs.len()].join(",");
    let mut stmt = conn.prepare(&format!(
        "SELECT cdr_id, at_ms, name, code, detail, ok, result FROM call_action WHERE cdr_id IN ({marks}) ORDER BY id"
    ))?;
    let ids = cdrs.iter().map(|c| c.id);
    let by_id: std::collections::HashMap<i64, usize> =
        cdrs.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(ids))?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let Some(&i) = by_id.get(&id) else { continue };
        cdrs[i].actions.push(CdrAction {
            at: rfc3339(r.get(1)?),
            action: ActionRecord {
                name: r.get(2)?,
                code: r.get(3)?,
                detail: r.get(4)?,
                ok: r.get(5)?,
                result: r.get(6)?,
            },
        });
    }
    Ok(())
}

/// The conditions the filter asks for, each with `?` for its value, and the values in order.
/// `?1x` stands for a value used twice.
fn conditions(f: &CdrFilter) -> (Vec<&'static str>, Vec<Value>) {
    let mut cond: Vec<&str> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut add = |c: &'static str, v: Value| {
        cond.push(c);
        args.push(v);
    };
    if let Some(v) = f.since_ms {
        add("c.started_ms >= ?", Value::Integer(v));
    }
    if let Some(v) = f.until_ms {
        add("c.started_ms < ?", Value::Integer(v));
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
            add(c, Value::Text(v.clone()));
        }
    }
    if let Some(v) = &f.call_id {
        // Two indexed look-ups (SQLite's OR optimisation), not a scan.
        add(
            "c.id IN (SELECT id FROM cdr WHERE call_id = ?1x UNION SELECT id FROM cdr WHERE b_call_id = ?1x)",
            Value::Text(v.clone()),
        );
    }
    if f.active {
        cond.push("c.ended_ms IS NULL");
    }
    (cond, args)
}

/// The join order, forced (CROSS JOIN; without ANALYZE statistics SQLite guesses wrong): a
/// session's calls from the context's index, then their records; a merchant's look-ups by
/// ANI, Call-ID or in progress from the records' indexes (partial for open calls), then
/// their context; everything else from the records, context optional.
fn join(f: &CdrFilter) -> &'static str {
    if f.session.is_some() {
        "web_context w CROSS JOIN cdr c ON c.call_id = w.call_id"
    } else if f.merchant.is_some() {
        "cdr c CROSS JOIN web_context w ON w.call_id = c.call_id"
    } else {
        "cdr c LEFT JOIN web_context w ON w.call_id = c.call_id"
    }
}

/// The statement for a filter and its positional parameters.
fn select(f: &CdrFilter) -> (String, Vec<Value>) {
    let (cond, mut args) = conditions(f);
    let mut sql = format!(
        "SELECT c.id, c.call_id, c.b_call_id, c.caller, c.destination, c.context, c.target, c.started_ms, c.ringing_ms,
                c.answered_ms, c.ended_ms, c.billable_secs, c.cause, c.b_cause, c.hangup_side, c.codec_a, c.codec_b,
                c.quality, c.ani, w.merchant, w.link, w.session, w.page_url, w.referrer, w.caller_ip, w.context,
                c.source
         FROM {}",
        join(f)
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
    args.push(Value::Integer(i64::from(f.limit.unwrap_or(1000))));
    sql.push_str(&format!(" ORDER BY c.id DESC LIMIT ?{}", n + 1));
    (sql, args)
}

/// A row of [`select`] as a record.
fn cdr(r: &Row<'_>) -> rusqlite::Result<Cdr> {
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
        actions: Vec::new(),
        chat: Vec::new(),
        source: r.get(26)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn where_clause(f: &CdrFilter) -> String {
        let (sql, _) = select(f);
        sql[sql.find(" FROM ").unwrap()..].to_owned()
    }

    #[test]
    fn a_call_id_look_up_numbers_its_one_value_once_for_both_legs() {
        let f = CdrFilter {
            merchant: Some("shop".into()),
            call_id: Some("x@h".into()),
            ..Default::default()
        };
        let (_, args) = select(&f);
        assert_eq!(
            where_clause(&f),
            " FROM cdr c CROSS JOIN web_context w ON w.call_id = c.call_id WHERE w.merchant = ?1 AND \
             c.id IN (SELECT id FROM cdr WHERE call_id = ?2 UNION SELECT id FROM cdr WHERE b_call_id = ?2) \
             ORDER BY c.id DESC LIMIT ?3"
        );
        assert_eq!(args.len(), 3);
        assert_eq!(args[2], Value::Integer(1000));
    }

    #[test]
    fn a_session_look_up_starts_from_the_browser_context() {
        let f = CdrFilter {
            session: Some("shopper-9".into()),
            active: true,
            limit: Some(5),
            ..Default::default()
        };
        let (_, args) = select(&f);
        assert_eq!(
            where_clause(&f),
            " FROM web_context w CROSS JOIN cdr c ON c.call_id = w.call_id WHERE w.session = ?1 AND \
             c.ended_ms IS NULL ORDER BY c.id DESC LIMIT ?2"
        );
        assert_eq!(
            args,
            vec![Value::Text("shopper-9".into()), Value::Integer(5)]
        );
    }

    #[test]
    fn no_filter_lists_every_record_with_its_context_if_any() {
        assert_eq!(
            where_clause(&CdrFilter::default()),
            " FROM cdr c LEFT JOIN web_context w ON w.call_id = c.call_id ORDER BY c.id DESC LIMIT ?1"
        );
    }

    #[test]
    fn reading_a_database_from_a_newer_switch_is_refused_in_words() {
        let db = crate::testing::TempDb::new("newer");
        let c = Connection::open(db.path()).unwrap();
        c.pragma_update(None, "user_version", crate::SCHEMA_VERSION + 1)
            .unwrap();
        drop(c);
        let err = query(db.path(), &CdrFilter::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("its schema is version"), "{err}");
    }
}
