//! # switchboard-store
//!
//! Where calls are recorded and looked up. The switch, the API and the CRM look-ups see only
//! the [`CallStore`] trait: the SIP thread [`record`](CallStore::record)s what happens to a
//! call as a [`CdrOp`] (never waiting on a disk), readers [`query`](CallStore::query) with a
//! [`CdrFilter`] and get [`Cdr`]s, newest first. [`SqliteStore`] is the embedded
//! implementation; a PostgreSQL store shared by several nodes implements the same two calls.
//!
//! ## The SQLite store
//!
//! One file in WAL mode, written by a thread of its own (`writer.rs`): the SIP thread queues
//! changes, the writer batches them into transactions. A record is inserted when the call
//! starts and completed when it ends, so a process killed mid-call (SIGKILL, power) leaves
//! open records; the next [`SqliteStore::open`] closes them with the cause [`INTERRUPTED`]
//! and gives the ANI numbers such calls held back to their pools. Reads ([`query`]: API, CLI)
//! open read-only connections of their own: WAL lets them run beside the writer.
//!
//! ## The schema
//!
//! The schema is versioned ([`SCHEMA_VERSION`], in SQLite's `PRAGMA user_version`): opening a
//! database applies, in one transaction, the migrations it lacks (`migrate.rs`). A database
//! made before versions existed is recognised by its tables and adopted as version 1; one
//! made by a newer Switchboard is refused ([`StorageError::TooNew`]), never downgraded.
//!
//! ## Files
//!
//! | file | what |
//! |---|---|
//! | `ops.rs` | [`CdrOp`]: what the switch tells the store; [`WebRecord`] of browser calls |
//! | `cdr.rs` | [`Cdr`] and [`CdrFilter`]: what readers get and ask for |
//! | `sqlite.rs` | [`SqliteStore`]: opening, recovery after a crash, the queue |
//! | `writer.rs` | the writer thread: batches, and the SQL of each change |
//! | `migrate.rs`, `migrate/` | the versioned schema |
//! | `query.rs`, `csv.rs`, `time.rs` | reading records, CSV export, time arguments |
//! | `agents.rs` | the console's agents (argon2id hashes from the caller; read and written at once, not queued) |

mod agents;
mod cdr;
mod csv;
mod error;
mod migrate;
mod ops;
mod query;
mod retention;
mod sqlite;
mod time;
mod writer;

#[cfg(test)]
mod testing;

pub use agents::{AgentRow, agent_get, agent_list, agent_put, agent_remove};
pub use cdr::{Cdr, CdrAction, CdrChat, CdrFilter};
pub use csv::to_csv;
pub use error::StorageError;
pub use migrate::SCHEMA_VERSION;
pub use ops::{ActionRecord, CallStart, CdrOp, ChatLine, WebCaller, WebRecord};
pub use query::query;
pub use retention::Retention;
pub use sqlite::{INTERRUPTED, Resting, SqliteStore};
pub use time::parse_time;

/// Where calls are recorded and looked up: the switch, the API and the CRM look-ups see
/// only this. SQLite (embedded, [`SqliteStore`]) today; a PostgreSQL store shared by several
/// nodes implements the same two calls.
pub trait CallStore: Send + Sync + std::fmt::Debug {
    /// Queues a change. Never blocks (it is called from the SIP thread).
    fn record(&self, op: CdrOp);
    /// Reads records, newest first. Blocking: call it from `spawn_blocking`.
    fn query(&self, f: &CdrFilter) -> Result<Vec<Cdr>, StorageError>;
}

/// The store the switch uses.
pub type Store = std::sync::Arc<dyn CallStore>;
