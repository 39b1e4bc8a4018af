//! The embedded [`Store`] backend of skiff, on SQLite (the role kine plays
//! for k3s, without kine's polling).
//!
//! Design:
//! - **One writer thread** owns the only writing connection. Callers send
//!   their write over a channel and await a oneshot. The thread drains
//!   whatever requests are queued (up to [`SqliteOptions::max_batch`]) and
//!   applies them in one `BEGIN IMMEDIATE` transaction, one fsync: group
//!   commit. Revisions are allocated and CAS checks made inside that
//!   transaction, so they are serialized; a failing check fails only its own
//!   request.
//! - **Durability**: WAL journal with `synchronous=FULL`: a write is answered
//!   only after its transaction's commit was fsynced.
//! - **Schema**: `log(rev PK, key, value, create_rev, prev_rev, deleted)` is
//!   the history (a delete is a tombstone row whose previous value is the row
//!   `prev_rev`); `kv(key PK, create_rev, mod_rev)` is the current state and
//!   points at the log row holding the value (no value is stored twice);
//!   `meta` holds the current and compacted revisions.
//! - **Reads** run on a small pool of read-only connections inside
//!   `spawn_blocking`; WAL lets them run alongside the writer and they see
//!   every committed (hence every acknowledged) write.
//! - **Watch**: the writer publishes each committed batch on a tokio
//!   broadcast channel after commit and before answering. A watch subscribes
//!   first, replays the log up to the current revision, then follows the
//!   broadcast, dropping what it already delivered (by revision). A watcher
//!   that lags behind the broadcast re-reads the missed part from the log (or
//!   ends with `Compacted` if it lagged past a compaction): it never skips.
//! - **Compaction** keeps, below the compaction revision, only the last row
//!   of each key that is not a tombstone (what the current state and the
//!   `prev` of later events need), deleting the rest in small transactions
//!   between write batches. The writer also compacts on a timer, runs
//!   `PRAGMA incremental_vacuum` and `wal_checkpoint(TRUNCATE)` so that the
//!   database and its WAL stay bounded under churn.
//! - One store per file: `open` takes an advisory lock on `<path>.lock`
//!   (released by the kernel if the process dies), since revisions are
//!   allocated by the writer thread.
//!
//! A watch from a revision above the current one waits for it (as etcd's
//! does). Progress notifications are off unless
//! [`SqliteOptions::progress_interval`] is set.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use skiff_store::{KeyValue, RangeResult, Store, StoreError, WatchStream};
use tokio::sync::{broadcast, oneshot};

mod read;
mod schema;
mod watch;
mod writer;

use read::Shared;
use writer::{Committed, Request, WriteOp, WriteOutcome};

/// Tuning of a [`SqliteStore`]. `SqliteOptions::default()` is what the API
/// server uses.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// At most this many requests are committed in one transaction.
    pub max_batch: usize,
    /// How often the store compacts itself; `None` disables automatic
    /// compaction (explicit [`Store::compact`] still works).
    pub compact_interval: Option<Duration>,
    /// Automatic compaction keeps at least this many revisions of history,
    /// and at least one `compact_interval` of it.
    pub compact_keep_revisions: i64,
    /// Log rows deleted per transaction while compacting (between write
    /// batches, so that a large compaction does not stall writers).
    pub compact_chunk: usize,
    /// How often the store runs `PRAGMA incremental_vacuum` and
    /// `PRAGMA wal_checkpoint(TRUNCATE)`; `None` disables it (SQLite's own
    /// passive auto-checkpoint still runs).
    pub checkpoint_interval: Option<Duration>,
    /// The WAL file is truncated to at most this many bytes after a
    /// checkpoint (`PRAGMA journal_size_limit`).
    pub journal_size_limit: i64,
    /// Committed batches buffered for watchers. A watcher further behind
    /// catches up from the log.
    pub watch_buffer: usize,
    /// When set, an idle watch sends a progress notification (an empty
    /// batch with the revision it has seen up to) at this interval.
    pub progress_interval: Option<Duration>,
    /// Read connections kept open for reuse.
    pub max_idle_readers: usize,
    /// How long a connection waits for a lock held by another connection.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_batch: 1024,
            compact_interval: Some(Duration::from_secs(300)),
            compact_keep_revisions: 10_000,
            compact_chunk: 5_000,
            checkpoint_interval: Some(Duration::from_secs(60)),
            journal_size_limit: 64 * 1024 * 1024,
            watch_buffer: 1024,
            progress_interval: None,
            max_idle_readers: 8,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of a [`SqliteStore`] (see [`SqliteStore::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Write transactions (group commits) run.
    pub transactions: u64,
    /// Write requests (create, update, delete) they answered:
    /// `writes / transactions` is the mean group-commit size.
    pub writes: u64,
}

/// Errors of opening a [`SqliteStore`].
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {reason}")]
    Schema { path: PathBuf, reason: String },
    #[error("cannot start the writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Another `SqliteStore` (in this process or another) has the file open.
    #[error("{0} is in use by another store")]
    Locked(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A [`Store`] in one SQLite file. See the crate documentation.
///
/// Dropping it stops the writer thread (after it committed the requests
/// already queued) and waits for it; open watches then end.
pub struct SqliteStore {
    requests: Option<mpsc::Sender<Request>>,
    events: broadcast::Sender<Arc<Committed>>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    progress_interval: Option<Duration>,
    /// Held (flock) for the life of the store: one writer per file, as the
    /// revisions are allocated in memory. Released after the writer stopped.
    _lock: std::fs::File,
}

impl SqliteStore {
    /// Opens (creating file and schema when needed) the store at `path` with
    /// default options. Blocks while it opens the file.
    pub fn open(path: &Path) -> Result<SqliteStore, SqliteError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens the store at `path` with `options`. Blocks while it opens the file.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore, SqliteError> {
        let lock = lock(path)?;
        make_private(path)?;
        let (conn, state) = schema::open_writer(path, &options)?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            current: state.revision.into(),
            compacted: state.compacted.into(),
            readers: Mutex::new(Vec::new()),
            transactions: 0.into(),
            writes: 0.into(),
            max_idle_readers: options.max_idle_readers,
            busy_timeout: options.busy_timeout,
        });
        // Check now that readers can open, rather than on the first read.
        let reader = shared.open_reader()?;
        shared.put_reader(reader);
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        let (requests, rx) = mpsc::channel();
        let progress_interval = options.progress_interval;
        let writer = writer::Writer::new(conn, rx, events.clone(), shared.clone(), state, options);
        let writer = std::thread::Builder::new()
            .name("skiff-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(SqliteError::Thread)?;
        tracing::info!(
            path = %path.display(),
            revision = state.revision,
            compacted = state.compacted,
            "sqlite store opened"
        );
        Ok(SqliteStore {
            requests: Some(requests),
            events,
            shared,
            writer: Some(writer),
            progress_interval,
            _lock: lock,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            transactions: self.shared.transactions.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
        }
    }

    /// Runs `PRAGMA incremental_vacuum` and `PRAGMA wal_checkpoint(TRUNCATE)`
    /// now (the writer also does it every `checkpoint_interval`): after a
    /// compaction, this gives the freed space back to the file system.
    pub async fn checkpoint(&self) -> skiff_store::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Checkpoint { reply })?;
        rx.await.map_err(|_| closed())?
    }

    fn send(&self, request: Request) -> skiff_store::Result<()> {
        match &self.requests {
            Some(tx) => tx.send(request).map_err(|_| closed()),
            None => Err(closed()),
        }
    }

    async fn write(&self, op: WriteOp) -> skiff_store::Result<WriteOutcome> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Write { op, reply })?;
        rx.await.map_err(|_| closed())?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel makes the writer finish the queued requests and exit.
        self.requests = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("sqlite writer thread panicked");
        }
    }
}

/// Every key under `prefix` of the store file at `path`, read in one read
/// transaction (so at one revision) without taking the store's lock: WAL lets
/// it run while a server owns the store. For backups. Blocks.
pub fn read_snapshot(path: &Path, prefix: &str) -> skiff_store::Result<RangeResult> {
    if !path.is_file() {
        return Err(StoreError::Backend(format!(
            "{}: no store there",
            path.display()
        )));
    }
    let mut conn = schema::open_reader(path, Duration::from_secs(5))
        .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
    read::range(&mut conn, prefix, None, 0)
}

/// The store holds every Secret: its file is created readable by its owner
/// only (0600) before SQLite opens it, which gives its `-wal` and `-shm`
/// files the same mode; files of an existing store are made so too.
fn make_private(path: &Path) -> Result<(), SqliteError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SqliteError::Io { path: p, source }
    };
    // An empty file is an empty database to SQLite.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&file)(e)),
        }
    }
    Ok(())
}

/// Takes the exclusive lock of the store at `path`: an advisory lock on
/// `<path>.lock`, released by the kernel if the process dies.
fn lock(path: &Path) -> Result<std::fs::File, SqliteError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let io = |source| SqliteError::Io {
        path: lock_path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SqliteError::Locked(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("sqlite store is closed".into())
}

fn unexpected(outcome: &WriteOutcome) -> StoreError {
    StoreError::Backend(format!("unexpected writer outcome {outcome:?}"))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> skiff_store::Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.shared.read(move |conn| read::get(conn, &key)).await
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> skiff_store::Result<RangeResult> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.shared
            .read(move |conn| read::range(conn, &prefix, start_after.as_deref(), limit))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> skiff_store::Result<KeyValue> {
        match self
            .write(WriteOp::Create {
                key: key.to_owned(),
                value,
            })
            .await?
        {
            WriteOutcome::Put(kv) => Ok(kv),
            other => Err(unexpected(&other)),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: i64,
    ) -> skiff_store::Result<KeyValue> {
        match self
            .write(WriteOp::Update {
                key: key.to_owned(),
                value,
                expected: expected_revision,
            })
            .await?
        {
            WriteOutcome::Put(kv) => Ok(kv),
            other => Err(unexpected(&other)),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected_revision: i64,
    ) -> skiff_store::Result<(KeyValue, i64)> {
        match self
            .write(WriteOp::Delete {
                key: key.to_owned(),
                expected: expected_revision,
            })
            .await?
        {
            WriteOutcome::Deleted(kv, revision) => Ok((kv, revision)),
            other => Err(unexpected(&other)),
        }
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> skiff_store::Result<WatchStream> {
        // Subscribe before anything else: every batch committed after this
        // point reaches the receiver (or makes it lag, which is detected).
        let events = self.events.subscribe();
        let compacted = self.shared.compacted();
        if from_revision > 0 && from_revision < compacted {
            return Err(StoreError::Compacted {
                requested: from_revision,
                compacted,
            });
        }
        if from_revision < 0 {
            return Err(StoreError::Backend(format!(
                "negative watch revision {from_revision}"
            )));
        }
        Ok(watch::start(
            self.shared.clone(),
            events,
            prefix.to_owned(),
            from_revision,
            self.progress_interval,
        ))
    }

    async fn current_revision(&self) -> skiff_store::Result<i64> {
        Ok(self.shared.current())
    }

    async fn compact(&self, revision: i64) -> skiff_store::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Compact { revision, reply })?;
        rx.await.map_err(|_| closed())?
    }

    async fn compacted_revision(&self) -> skiff_store::Result<i64> {
        Ok(self.shared.compacted())
    }
}
