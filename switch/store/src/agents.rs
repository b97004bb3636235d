//! The console's agents: read and written at once (a login waits for its answer), through a
//! connection of the caller's own, beside the writer (WAL). Passwords arrive hashed
//! (argon2id PHC strings from the agent module); this file never sees one in clear.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::StorageError;
use crate::error::sqlite;
use crate::sqlite::connect;

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentRow {
    /// Login ID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `agent`, `supervisor` or `admin`.
    pub role: String,
    /// Merchants whose calls they take.
    pub merchants: Vec<String>,
    /// Queues they answer.
    pub queues: Vec<String>,
    /// The password's argon2id PHC string.
    pub password: String,
}

fn open(path: &Path) -> Result<Connection, StorageError> {
    let conn = connect(path)?;
    crate::migrate::apply(&conn, path)?;
    Ok(conn)
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        merchants: list(&r.get::<_, String>(3)?),
        queues: list(&r.get::<_, String>(4)?),
        password: r.get(5)?,
    })
}

/// Adds or replaces an agent.
pub fn agent_put(path: &Path, a: &AgentRow, now_ms: i64) -> Result<(), StorageError> {
    let conn = open(path)?;
    conn.execute(
        "INSERT INTO agent (id, name, role, merchants, queues, password, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT(id) DO UPDATE SET name = ?2, role = ?3, merchants = ?4, queues = ?5,
           password = ?6, updated_ms = ?7",
        params![
            a.id,
            a.name,
            a.role,
            a.merchants.join(","),
            a.queues.join(","),
            a.password,
            now_ms
        ],
    )
    .map_err(sqlite(path))?;
    Ok(())
}

/// One agent.
pub fn agent_get(path: &Path, id: &str) -> Result<Option<AgentRow>, StorageError> {
    let conn = open(path)?;
    conn.query_row(
        "SELECT id, name, role, merchants, queues, password FROM agent WHERE id = ?1",
        params![id],
        row,
    )
    .optional()
    .map_err(sqlite(path))
}

/// Every agent, by ID.
pub fn agent_list(path: &Path) -> Result<Vec<AgentRow>, StorageError> {
    let conn = open(path)?;
    let mut stmt = conn
        .prepare("SELECT id, name, role, merchants, queues, password FROM agent ORDER BY id")
        .map_err(sqlite(path))?;
    let rows = stmt.query_map([], row).map_err(sqlite(path))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(path))
}

/// Removes an agent; false when there was none.
pub fn agent_remove(path: &Path, id: &str) -> Result<bool, StorageError> {
    let conn = open(path)?;
    let n = conn
        .execute("DELETE FROM agent WHERE id = ?1", params![id])
        .map_err(sqlite(path))?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_put_read_listed_and_removed() {
        let dir = std::env::temp_dir().join(format!("sb-agents-{}", std::process::id()));
        let path = dir.join("cdr.db");
        let alice = AgentRow {
            id: "alice".into(),
            name: "Alice".into(),
            role: "agent".into(),
            merchants: vec!["demo".into(), "acme".into()],
            queues: vec!["sales".into()],
            password: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
        };
        agent_put(&path, &alice, 1).unwrap();
        assert_eq!(agent_get(&path, "alice").unwrap(), Some(alice.clone()));
        let renamed = AgentRow {
            name: "Alice M.".into(),
            queues: vec![],
            ..alice
        };
        agent_put(&path, &renamed, 2).unwrap();
        assert_eq!(agent_list(&path).unwrap(), vec![renamed]);
        assert!(agent_remove(&path, "alice").unwrap());
        assert!(!agent_remove(&path, "alice").unwrap());
        assert_eq!(agent_get(&path, "alice").unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
