//! The read side: a pool of read connections used from `spawn_blocking`,
//! and the queries behind get, range and watch replay.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, ToSql};
use skiff_store::{Event, KeyValue, RangeResult, StoreError};

use crate::schema;

/// State shared by the store handle, the writer thread and the watches.
pub(crate) struct Shared {
    pub path: PathBuf,
    /// The last committed revision; set by the writer after each commit,
    /// before the batch is published and answered.
    pub current: AtomicI64,
    /// The compacted revision; set by the writer once it is committed.
    pub compacted: AtomicI64,
    pub readers: Mutex<Vec<Connection>>,
    /// Write transactions committed (or rolled back: every write failed its check).
    pub transactions: AtomicU64,
    /// Write requests answered by those transactions.
    pub writes: AtomicU64,
    pub max_idle_readers: usize,
    pub busy_timeout: Duration,
}

impl Shared {
    pub fn current(&self) -> i64 {
        self.current.load(Ordering::SeqCst)
    }

    pub fn compacted(&self) -> i64 {
        self.compacted.load(Ordering::SeqCst)
    }

    pub fn open_reader(&self) -> rusqlite::Result<Connection> {
        schema::open_reader(&self.path, self.busy_timeout)
    }

    pub fn put_reader(&self, conn: Connection) {
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle_readers {
            idle.push(conn);
        }
    }

    fn take_reader(&self) -> Result<Connection, StoreError> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.open_reader().map_err(sql_error),
        }
    }

    /// Runs `f` on a read connection on tokio's blocking pool.
    pub async fn read<T, F>(self: &std::sync::Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = shared.take_reader()?;
            let result = f(&mut conn);
            // A connection left inside a transaction (an error half-way) is not reused.
            if conn.is_autocommit() {
                shared.put_reader(conn);
            }
            result
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Backend(format!("read task failed: {e}"))),
        }
    }
}

pub(crate) fn sql_error(e: rusqlite::Error) -> StoreError {
    sql_error_ref(&e)
}

pub(crate) fn sql_error_ref(e: &rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!("sqlite: {e}"))
        }
        _ => StoreError::Backend(format!("sqlite: {e}")),
    }
}

fn key_string(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|e| StoreError::Backend(format!("key is not UTF-8: {e}")))
}

/// The smallest byte string above every string starting with `prefix`;
/// `None` when there is none (empty prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(crate) const GET_SQL: &str = "SELECT kv.create_rev, kv.mod_rev, log.value FROM kv JOIN log ON log.rev = kv.mod_rev WHERE kv.key = ?1";

pub(crate) fn get(conn: &mut Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    get_on(conn, key).map_err(sql_error)
}

/// The current value of `key` (used by the writer too, inside its transaction).
pub(crate) fn get_on(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    let mut stmt = conn.prepare_cached(GET_SQL)?;
    stmt.query_row([key.as_bytes()], |row| {
        Ok(KeyValue {
            key: key.to_owned(),
            create_revision: row.get(0)?,
            mod_revision: row.get(1)?,
            value: row.get(2)?,
        })
    })
    .optional()
}

fn meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    let mut stmt = conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")?;
    Ok(stmt
        .query_row([name], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

pub(crate) fn range(
    conn: &mut Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Result<RangeResult, StoreError> {
    let tx = conn.transaction().map_err(sql_error)?;
    let revision = meta(&tx, "rev").map_err(sql_error)?;
    let end = prefix_end(prefix.as_bytes());
    let mut sql = String::from(
        "SELECT kv.key, kv.create_rev, kv.mod_rev, log.value FROM kv JOIN log ON log.rev = kv.mod_rev \
         WHERE kv.key >= ?1",
    );
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(4);
    let prefix_bytes = prefix.as_bytes();
    params.push(&prefix_bytes);
    let after_bytes = start_after.map(str::as_bytes);
    if let Some(after) = &after_bytes {
        sql.push_str(&format!(" AND kv.key > ?{}", params.len() + 1));
        params.push(after);
    }
    if let Some(end) = &end {
        sql.push_str(&format!(" AND kv.key < ?{}", params.len() + 1));
        params.push(end);
    }
    // One more than asked, to know whether there is more.
    let fetch: i64 = if limit == 0 {
        -1
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1
    };
    sql.push_str(&format!(" ORDER BY kv.key LIMIT ?{}", params.len() + 1));
    params.push(&fetch);

    let mut kvs = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&sql).map_err(sql_error)?;
        let mut rows = stmt.query(params.as_slice()).map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let key: Vec<u8> = row.get(0).map_err(sql_error)?;
            if !key.starts_with(prefix_bytes) {
                continue;
            }
            kvs.push(KeyValue {
                key: key_string(key)?,
                create_revision: row.get(1).map_err(sql_error)?,
                mod_revision: row.get(2).map_err(sql_error)?,
                value: row.get(3).map_err(sql_error)?,
            });
        }
    }
    tx.commit().map_err(sql_error)?;
    let more = limit != 0 && kvs.len() > limit;
    kvs.truncate(if limit == 0 { kvs.len() } else { limit });
    Ok(RangeResult {
        kvs,
        revision,
        more,
    })
}

/// One page of a watch replay.
pub(crate) struct ReplayPage {
    pub events: Vec<Event>,
    /// The replay has covered every revision up to this one.
    pub covered: i64,
}

const REPLAY_SQL: &str = "SELECT l.rev, l.key, l.value, l.create_rev, l.prev_rev, l.deleted, p.value \
     FROM log l LEFT JOIN log p ON p.rev = l.prev_rev \
     WHERE l.rev >= ?1 AND l.rev <= ?2 AND l.key >= ?3";

/// The events of keys starting with `prefix` with revisions in
/// `from..=to`, at most `limit` of them, read in one snapshot that is
/// checked against the compacted revision.
pub(crate) fn replay_page(
    conn: &mut Connection,
    prefix: &str,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<ReplayPage, StoreError> {
    let tx = conn.transaction().map_err(sql_error)?;
    let compacted = meta(&tx, "compacted").map_err(sql_error)?;
    if from < compacted {
        return Err(StoreError::Compacted {
            requested: from,
            compacted,
        });
    }
    let prefix_bytes = prefix.as_bytes();
    let end = prefix_end(prefix_bytes);
    let limit_param = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut events = Vec::new();
    let mut last = from - 1;
    let mut rows_read = 0usize;
    {
        let mut stmt;
        let mut rows = match &end {
            Some(end) => {
                stmt = tx
                    .prepare_cached(&format!(
                        "{REPLAY_SQL} AND l.key < ?4 ORDER BY l.rev LIMIT ?5"
                    ))
                    .map_err(sql_error)?;
                stmt.query(rusqlite::params![from, to, prefix_bytes, end, limit_param])
                    .map_err(sql_error)?
            }
            None => {
                stmt = tx
                    .prepare_cached(&format!("{REPLAY_SQL} ORDER BY l.rev LIMIT ?4"))
                    .map_err(sql_error)?;
                stmt.query(rusqlite::params![from, to, prefix_bytes, limit_param])
                    .map_err(sql_error)?
            }
        };
        while let Some(row) = rows.next().map_err(sql_error)? {
            let rev: i64 = row.get(0).map_err(sql_error)?;
            last = rev;
            rows_read += 1;
            let key: Vec<u8> = row.get(1).map_err(sql_error)?;
            if !key.starts_with(prefix_bytes) {
                continue;
            }
            let key = key_string(key)?;
            let value: Vec<u8> = row.get(2).map_err(sql_error)?;
            let create_revision: i64 = row.get(3).map_err(sql_error)?;
            let prev_rev: i64 = row.get(4).map_err(sql_error)?;
            let deleted: bool = row.get(5).map_err(sql_error)?;
            let prev_value: Option<Vec<u8>> = row.get(6).map_err(sql_error)?;
            let prev = match (prev_rev, prev_value) {
                (0, _) => None,
                (mod_revision, Some(value)) => Some(KeyValue {
                    key: key.clone(),
                    value,
                    create_revision,
                    mod_revision,
                }),
                (mod_revision, None) => {
                    return Err(StoreError::Backend(format!(
                        "log row {rev} of {key}: previous row {mod_revision} is missing"
                    )));
                }
            };
            let event = if deleted {
                match prev {
                    Some(prev) => Event::Delete {
                        prev,
                        revision: rev,
                    },
                    None => {
                        return Err(StoreError::Backend(format!(
                            "tombstone {rev} of {key} has no previous row"
                        )));
                    }
                }
            } else {
                Event::Put {
                    kv: KeyValue {
                        key,
                        value,
                        create_revision,
                        mod_revision: rev,
                    },
                    prev,
                }
            };
            events.push(event);
        }
    }
    tx.commit().map_err(sql_error)?;
    // A short page covers everything up to `to`; a full one up to its last row.
    let covered = if rows_read < limit { to } else { last };
    Ok(ReplayPage { events, covered })
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(
            prefix_end(b"/registry/pods/"),
            Some(b"/registry/pods0".to_vec())
        );
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
