//! The writer thread: group commit, compaction, checkpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use skiff_store::{Event, KeyValue, StoreError};
use tokio::sync::{broadcast, oneshot};

use crate::SqliteOptions;
use crate::read::{Shared, get_on, sql_error, sql_error_ref};
use crate::schema::State;

pub(crate) enum Request {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
    },
    Compact {
        revision: i64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Checkpoint {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

pub(crate) enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: i64,
    },
    Delete {
        key: String,
        expected: i64,
    },
}

#[derive(Debug)]
pub(crate) enum WriteOutcome {
    Put(KeyValue),
    Deleted(KeyValue, i64),
}

/// A committed transaction, as published to watchers.
#[derive(Debug)]
pub(crate) struct Committed {
    /// Every event of the transaction, in revision order.
    pub events: Vec<Event>,
    /// The store's revision after the transaction.
    pub revision: i64,
}

/// The longest the writer waits to gather more writes into a batch.
const GATHER_WAIT: Duration = Duration::from_micros(200);
/// How soon a checkpoint that readers kept from truncating the WAL is retried.
const CHECKPOINT_RETRY: Duration = Duration::from_millis(20);

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A compaction whose log rows are being deleted, chunk by chunk.
struct Compaction {
    revision: i64,
    /// Revisions of the log rows to delete, ascending.
    rows: Vec<i64>,
    done: usize,
    waiters: Vec<Reply<()>>,
    started: Instant,
}

pub(crate) struct Writer {
    conn: Connection,
    requests: Receiver<Request>,
    events: broadcast::Sender<Arc<Committed>>,
    shared: Arc<Shared>,
    options: SqliteOptions,
    /// The last committed revision.
    revision: i64,
    compacted: i64,
    compaction: Option<Compaction>,
    next_auto_compaction: Option<Instant>,
    /// The revision at the previous automatic compaction tick.
    revision_at_last_tick: i64,
    next_checkpoint: Option<Instant>,
}

impl Writer {
    pub fn new(
        conn: Connection,
        requests: Receiver<Request>,
        events: broadcast::Sender<Arc<Committed>>,
        shared: Arc<Shared>,
        state: State,
        options: SqliteOptions,
    ) -> Writer {
        let now = Instant::now();
        Writer {
            conn,
            requests,
            events,
            shared,
            revision: state.revision,
            compacted: state.compacted,
            compaction: None,
            next_auto_compaction: options.compact_interval.map(|d| now + d),
            revision_at_last_tick: state.revision,
            next_checkpoint: options.checkpoint_interval.map(|d| now + d),
            options,
        }
    }

    pub fn run(mut self) {
        let max_batch = self.options.max_batch.max(1);
        let mut writes: Vec<(WriteOp, Reply<WriteOutcome>)> = Vec::with_capacity(max_batch);
        let mut others: Vec<Request> = Vec::new();
        let mut last_batch = 0;
        loop {
            let first = match self.wait_time() {
                None => self
                    .requests
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(wait) if wait.is_zero() => self.requests.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
                Some(wait) => self.requests.recv_timeout(wait),
            };
            match first {
                Ok(request) => {
                    sort(request, &mut writes, &mut others);
                    self.gather(&mut writes, &mut others, max_batch, last_batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !writes.is_empty() {
                last_batch = writes.len();
                self.commit(&mut writes);
            }
            for request in others.drain(..) {
                match request {
                    Request::Compact { revision, reply } => {
                        self.start_compaction(revision, Some(reply))
                    }
                    Request::Checkpoint { reply } => {
                        let _ = reply.send(self.checkpoint().map(|_| ()).map_err(sql_error));
                    }
                    Request::Write { .. } => {}
                }
            }
            self.background();
        }
        self.shutdown();
    }

    /// Adds the queued requests to the batch. When fewer writes are queued
    /// than the previous batch had, the clients answered by that batch are
    /// most likely about to send their next write: wait for them a little
    /// (at most [`GATHER_WAIT`] in all, less than an fsync) rather than pay an
    /// fsync for a handful of writes and leave the others for the next one.
    /// With a single client there is no wait (its previous batch had one).
    fn gather(
        &self,
        writes: &mut Vec<(WriteOp, Reply<WriteOutcome>)>,
        others: &mut Vec<Request>,
        max_batch: usize,
        last_batch: usize,
    ) {
        let mut deadline = None;
        while writes.len() + others.len() < max_batch {
            match self.requests.try_recv() {
                Ok(request) => {
                    sort(request, writes, others);
                    continue;
                }
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {}
            }
            if writes.len() >= last_batch || !others.is_empty() {
                return;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + GATHER_WAIT);
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.requests.recv_timeout(deadline - now) {
                Ok(request) => sort(request, writes, others),
                Err(_) => return,
            }
        }
    }

    /// How long to wait for requests before background work is due; `None`: forever.
    fn wait_time(&self) -> Option<Duration> {
        if self.compaction.is_some() {
            return Some(Duration::ZERO);
        }
        let next = match (self.next_auto_compaction, self.next_checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    /// Applies a batch of writes in one transaction and answers them.
    fn commit(&mut self, writes: &mut Vec<(WriteOp, Reply<WriteOutcome>)>) {
        let start = self.revision;
        match apply_batch(&mut self.conn, writes.iter().map(|(op, _)| op), start) {
            Ok((outcomes, events, revision)) => {
                self.shared.transactions.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .writes
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                if revision != start {
                    self.revision = revision;
                    self.shared.current.store(revision, Ordering::SeqCst);
                    // No receiver is fine: nobody watches.
                    let _ = self.events.send(Arc::new(Committed { events, revision }));
                }
                for ((_, reply), outcome) in writes.drain(..).zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = writes.len(), "sqlite write transaction failed");
                for (_, reply) in writes.drain(..) {
                    let _ = reply.send(Err(sql_error_ref(&e)));
                }
            }
        }
    }

    /// Records the compaction at `revision` and schedules the deletion of
    /// the log rows it makes useless; `reply` is answered once they are gone.
    fn start_compaction(&mut self, revision: i64, reply: Option<Reply<()>>) {
        let answer = |reply: Option<Reply<()>>, result| {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        };
        if revision > self.revision {
            return answer(reply, Err(StoreError::FutureRevision(revision)));
        }
        if revision <= self.compacted {
            return answer(
                reply,
                Err(StoreError::Compacted {
                    requested: revision,
                    compacted: self.compacted,
                }),
            );
        }
        let rows = match compaction_rows(&mut self.conn, revision) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, revision, "sqlite compaction failed");
                return answer(reply, Err(sql_error(e)));
            }
        };
        // From here on, watches from before `revision` fail (the meta row
        // was committed before any row is deleted).
        self.compacted = revision;
        self.shared.compacted.store(revision, Ordering::SeqCst);
        tracing::debug!(revision, rows = rows.len(), "sqlite compaction started");
        // A newer compaction deletes a superset of an unfinished older one's rows.
        let mut waiters: Vec<Reply<()>> = self
            .compaction
            .take()
            .map(|c| c.waiters)
            .unwrap_or_default();
        waiters.extend(reply);
        self.compaction = Some(Compaction {
            revision,
            rows,
            done: 0,
            waiters,
            started: Instant::now(),
        });
    }

    /// Deletes one chunk of the running compaction's rows.
    fn compaction_step(&mut self) {
        let Some(compaction) = &mut self.compaction else {
            return;
        };
        let end = (compaction.done + self.options.compact_chunk.max(1)).min(compaction.rows.len());
        let chunk = &compaction.rows[compaction.done..end];
        match delete_rows(&mut self.conn, chunk) {
            Ok(()) => compaction.done = end,
            Err(e) => {
                tracing::error!(error = %e, revision = compaction.revision, "sqlite compaction failed");
                if let Some(compaction) = self.compaction.take() {
                    for waiter in compaction.waiters {
                        let _ = waiter.send(Err(sql_error_ref(&e)));
                    }
                }
                return;
            }
        }
        if compaction.done == compaction.rows.len()
            && let Some(compaction) = self.compaction.take()
        {
            tracing::debug!(
                revision = compaction.revision,
                rows = compaction.rows.len(),
                elapsed = ?compaction.started.elapsed(),
                "sqlite compaction done"
            );
            for waiter in compaction.waiters {
                let _ = waiter.send(Ok(()));
            }
        }
    }

    /// Compaction chunks and timers, between write batches.
    fn background(&mut self) {
        self.compaction_step();
        let now = Instant::now();
        if let (Some(due), Some(interval)) =
            (self.next_auto_compaction, self.options.compact_interval)
            && now >= due
        {
            self.next_auto_compaction = Some(now + interval);
            // Keep both the last N revisions and everything since the previous tick.
            let target = (self.revision - self.options.compact_keep_revisions)
                .min(self.revision_at_last_tick);
            self.revision_at_last_tick = self.revision;
            if target > self.compacted {
                tracing::info!(revision = target, "sqlite automatic compaction");
                self.start_compaction(target, None);
            }
        }
        if let (Some(due), Some(interval)) =
            (self.next_checkpoint, self.options.checkpoint_interval)
            && now >= due
        {
            self.next_checkpoint = Some(now + interval);
            match self.checkpoint() {
                // Readers held the WAL: try again soon rather than let it
                // grow for a whole interval under a steady write load.
                Ok(false) => self.next_checkpoint = Some(now + interval.min(CHECKPOINT_RETRY)),
                Ok(true) => {}
                Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
            }
        }
    }

    /// Gives free pages back (incremental vacuum) and truncates the WAL.
    /// True when the WAL was truncated (no reader held it).
    fn checkpoint(&mut self) -> rusqlite::Result<bool> {
        {
            // Each step of this pragma frees pages: run it to the end.
            let mut stmt = self.conn.prepare_cached("PRAGMA incremental_vacuum")?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
        let (busy, wal_pages, checkpointed): (i64, i64, i64) =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?;
        if busy != 0 {
            tracing::debug!(
                wal_pages,
                checkpointed,
                "sqlite checkpoint could not truncate the WAL (readers active)"
            );
        } else {
            tracing::trace!(wal_pages, checkpointed, "sqlite checkpoint");
        }
        Ok(busy == 0)
    }

    fn shutdown(mut self) {
        // Finish a running compaction only if someone still waits for it;
        // otherwise the next compaction picks up the rows left.
        while self
            .compaction
            .as_ref()
            .is_some_and(|c| c.waiters.iter().any(|w| !w.is_closed()))
        {
            self.compaction_step();
        }
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::debug!(error = %e, "sqlite final checkpoint failed");
        }
        tracing::debug!(revision = self.revision, "sqlite writer stopped");
    }
}

fn sort(
    request: Request,
    writes: &mut Vec<(WriteOp, Reply<WriteOutcome>)>,
    others: &mut Vec<Request>,
) {
    match request {
        Request::Write { op, reply } => writes.push((op, reply)),
        other => others.push(other),
    }
}

type BatchResult = (Vec<Result<WriteOutcome, StoreError>>, Vec<Event>, i64);

/// Applies `ops` in one transaction starting after revision `start`.
/// Returns each op's outcome, the events and the new revision. A failed
/// check fails its op only; an SQL error fails the whole batch (rolled back).
fn apply_batch<'a>(
    conn: &mut Connection,
    ops: impl ExactSizeIterator<Item = &'a WriteOp>,
    start: i64,
) -> rusqlite::Result<BatchResult> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut revision = start;
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut events = Vec::with_capacity(ops.len());
    for op in ops {
        match apply(&tx, op, revision + 1)? {
            Ok((outcome, event)) => {
                revision += 1;
                outcomes.push(Ok(outcome));
                events.push(event);
            }
            Err(e) => outcomes.push(Err(e)),
        }
    }
    if revision != start {
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'rev'")?
            .execute([revision])?;
        tx.commit()?;
    } else {
        tx.rollback()?;
    }
    Ok((outcomes, events, revision))
}

const INSERT_LOG: &str = "INSERT INTO log (rev, key, value, create_rev, prev_rev, deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Applies one op at revision `rev`: the outer error is an SQL failure, the
/// inner one the op's own failure (nothing was written then).
fn apply(
    tx: &Transaction<'_>,
    op: &WriteOp,
    rev: i64,
) -> rusqlite::Result<Result<(WriteOutcome, Event), StoreError>> {
    let check = |key: &str, expected: i64| -> rusqlite::Result<Result<KeyValue, StoreError>> {
        Ok(match get_on(tx, key)? {
            None => Err(StoreError::NotFound(key.to_owned())),
            Some(kv) if expected != 0 && kv.mod_revision != expected => Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: kv.mod_revision,
            }),
            Some(kv) => Ok(kv),
        })
    };
    match op {
        WriteOp::Create { key, value } => {
            let inserted = tx
                .prepare_cached("INSERT INTO kv (key, create_rev, mod_rev) VALUES (?1, ?2, ?2) ON CONFLICT DO NOTHING")?
                .execute(rusqlite::params![key.as_bytes(), rev])?;
            if inserted == 0 {
                return Ok(Err(StoreError::AlreadyExists(key.clone())));
            }
            tx.prepare_cached(INSERT_LOG)?.execute(rusqlite::params![
                rev,
                key.as_bytes(),
                value,
                rev,
                0,
                false
            ])?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
            };
            Ok(Ok((
                WriteOutcome::Put(kv.clone()),
                Event::Put { kv, prev: None },
            )))
        }
        WriteOp::Update {
            key,
            value,
            expected,
        } => {
            let prev = match check(key, *expected)? {
                Ok(prev) => prev,
                Err(e) => return Ok(Err(e)),
            };
            tx.prepare_cached(INSERT_LOG)?.execute(rusqlite::params![
                rev,
                key.as_bytes(),
                value,
                prev.create_revision,
                prev.mod_revision,
                false
            ])?;
            tx.prepare_cached("UPDATE kv SET mod_rev = ?2 WHERE key = ?1")?
                .execute(rusqlite::params![key.as_bytes(), rev])?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: prev.create_revision,
                mod_revision: rev,
            };
            Ok(Ok((
                WriteOutcome::Put(kv.clone()),
                Event::Put {
                    kv,
                    prev: Some(prev),
                },
            )))
        }
        WriteOp::Delete { key, expected } => {
            let prev = match check(key, *expected)? {
                Ok(prev) => prev,
                Err(e) => return Ok(Err(e)),
            };
            tx.prepare_cached(INSERT_LOG)?.execute(rusqlite::params![
                rev,
                key.as_bytes(),
                &[] as &[u8],
                prev.create_revision,
                prev.mod_revision,
                true
            ])?;
            tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                .execute([key.as_bytes()])?;
            Ok(Ok((
                WriteOutcome::Deleted(prev.clone(), rev),
                Event::Delete {
                    prev,
                    revision: rev,
                },
            )))
        }
    }
}

/// Commits the compacted revision and returns the log rows it makes
/// useless: below `revision`, every row but the last one of each key, and
/// that one too when it is a tombstone. The rows kept are the current
/// values of keys not written since, and the `prev` of later events.
fn compaction_rows(conn: &mut Connection, revision: i64) -> rusqlite::Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
        [revision],
    )?;
    let rows = {
        let mut stmt = tx.prepare(
            "SELECT rev FROM log WHERE rev < ?1 AND (deleted != 0 OR rev NOT IN \
             (SELECT max(rev) FROM log WHERE rev < ?1 GROUP BY key)) ORDER BY rev",
        )?;
        let rows = stmt.query_map([revision], |row| row.get::<_, i64>(0))?;
        rows.collect::<rusqlite::Result<Vec<i64>>>()?
    };
    tx.commit()?;
    Ok(rows)
}

fn delete_rows(conn: &mut Connection, revs: &[i64]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached("DELETE FROM log WHERE rev = ?1")?;
        for rev in revs {
            stmt.execute([rev])?;
        }
    }
    tx.commit()
}
