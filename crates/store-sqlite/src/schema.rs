//! Opening the database: pragmas, schema, and the revisions it holds.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{SqliteError, SqliteOptions};

pub(crate) const SCHEMA_VERSION: i64 = 1;

/// What the writer needs to know about the database it opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct State {
    /// The last committed revision.
    pub revision: i64,
    /// The oldest revision a watch may start from (0: nothing compacted).
    pub compacted: i64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev        INTEGER PRIMARY KEY,
    key        BLOB    NOT NULL,
    value      BLOB    NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev   INTEGER NOT NULL,
    deleted    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key        BLOB    PRIMARY KEY,
    create_rev INTEGER NOT NULL,
    mod_rev    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('rev', 0), ('compacted', 0);
";

fn schema_error(path: &Path, reason: impl Into<String>) -> SqliteError {
    SqliteError::Schema {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Opens the writer connection, creating the file and the schema when
/// needed, and reads the revisions.
pub(crate) fn open_writer(
    path: &Path,
    options: &SqliteOptions,
) -> Result<(Connection, State), SqliteError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(32);
    // auto_vacuum only takes effect before the first table is created.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(schema_error(
            path,
            format!("cannot switch to WAL journal (got {mode})"),
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "journal_size_limit", options.journal_size_limit)?;
    conn.pragma_update(None, "cache_size", -16_000)?;

    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    match version {
        0 => {
            let tables: i64 = tx.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |row| row.get(0),
            )?;
            if tables > 0 {
                return Err(schema_error(
                    path,
                    "not a skiff store (tables exist, no schema version)",
                ));
            }
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        SCHEMA_VERSION => {}
        other => {
            return Err(schema_error(
                path,
                format!("unsupported schema version {other}"),
            ));
        }
    }
    let meta = |name: &str| -> rusqlite::Result<i64> {
        tx.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()
        .map(|v| v.unwrap_or(0))
    };
    let meta_rev = meta("rev")?;
    let compacted = meta("compacted")?;
    let log_rev: i64 = tx.query_row("SELECT coalesce(max(rev), 0) FROM log", [], |row| {
        row.get(0)
    })?;
    tx.commit()?;
    let auto_vacuum: i64 = conn.pragma_query_value(None, "auto_vacuum", |row| row.get(0))?;
    if auto_vacuum != 2 {
        tracing::warn!(path = %path.display(), auto_vacuum, "database was created without auto_vacuum=INCREMENTAL; freed pages are reused but the file will not shrink");
    }
    // The revision never goes back, whatever compaction removed: the meta
    // row is written with every batch; the log is a second witness.
    let revision = meta_rev.max(log_rev).max(compacted);
    Ok((
        conn,
        State {
            revision,
            compacted,
        },
    ))
}

/// Opens a read connection on an existing store.
pub(crate) fn open_reader(
    path: &Path,
    busy_timeout: std::time::Duration,
) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(16);
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "cache_size", -8_000)?;
    Ok(conn)
}
