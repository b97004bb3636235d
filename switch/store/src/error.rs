//! Why storage failed: one enum for the crate, every variant naming the file.

use std::path::Path;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database was written by a newer Switchboard (its schema is ahead of this one's).
    #[error(
        "{path}: its schema is version {found}, this Switchboard knows up to {known}: run the newer version, or point [storage] path at another file"
    )]
    TooNew {
        /// The database file.
        path: String,
        /// Its version.
        found: u32,
        /// The newest this build knows.
        known: u32,
    },
    /// The database has no schema version and its tables are not those of version 1 (an
    /// early development build made it, or another program): adopting it could lose records.
    #[error(
        "{path}: it has no schema version and its table {table} is not the one Switchboard made ({differs}): move the file aside or point [storage] path at another file"
    )]
    Unrecognised {
        /// The database file.
        path: String,
        /// The first table that differs.
        table: String,
        /// How it differs (columns missing, unexpected or of another type).
        differs: String,
    },
    /// A migration failed; its transaction was rolled back, so the file is as it was.
    #[error(
        "{path}: schema migration {version} ({what}) failed, the database is left as it was: {source}"
    )]
    Migration {
        /// The database file.
        path: String,
        /// The migration's version.
        version: u32,
        /// What it does.
        what: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// SQLite said no.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// The directory could not be made, or the writer thread not started.
    #[error("{path}: {source}")]
    Io {
        /// The directory (or database file).
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// `map_err` for SQLite errors on the database at `path`.
pub(crate) fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |source| StorageError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}
