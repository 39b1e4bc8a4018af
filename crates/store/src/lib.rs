//! The store contract of skiff: a revisioned key-value store with watch and
//! compaction, in the shape of etcd's v3 API.
//!
//! This crate deliberately depends on no backend (as tikv's `engine_traits`
//! does not depend on RocksDB). Backends live in their own crates
//! (`skiff-store-sqlite`, later `skiff-store-etcd`) and all pass the one
//! conformance suite in [`conformance`].
//!
//! Semantics, as etcd:
//! - every successful write gets a new, strictly increasing, cluster-wide
//!   revision; `mod_revision` of a key is the revision of its last write and
//!   `create_revision` the revision of the write that created it;
//! - a watch from revision `r` delivers every event with revision `>= r`, in
//!   revision order, without gaps, then follows live writes;
//! - after `compact(r)`, history before `r` is gone and a watch from an older
//!   revision fails with [`StoreError::Compacted`].

use std::pin::Pin;

use futures::Stream;

pub mod conformance;

/// One key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// What a watch delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A create or an update. `prev` is the value before an update.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A delete. `prev` is the last value; `revision` is the delete's revision.
    Delete { prev: KeyValue, revision: i64 },
}

impl Event {
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// A batch of events, all with revision >= the watch's start, in order.
/// A watch may also deliver a progress notification: an empty batch with the
/// store's current revision (as etcd's progress notify does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    /// The store revision this batch brings the watcher up to.
    pub revision: i64,
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch, StoreError>> + Send>>;

/// The result of a range read: the keys and the store revision it was read at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub revision: i64,
    /// True when `limit` cut the result short.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// The key's current mod_revision is not the one the caller expected.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: i64,
        actual: i64,
    },
    /// The requested revision was compacted away.
    #[error("revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    /// The requested revision is newer than the store's.
    #[error("revision {0} is in the future")]
    FutureRevision(i64),
    /// The store cannot serve now (lost quorum, closed, ...). Retryable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else from the backend.
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A revisioned key-value store with watch (etcd v3 shape).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// All keys starting with `prefix`, in key order, starting after
    /// `start_after` when given, at most `limit` of them when non-zero.
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<RangeResult>;

    /// Create `key`; fails with `AlreadyExists` when it exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;

    /// Replace `key`'s value if its mod_revision is `expected_revision`
    /// (or unconditionally when `expected_revision` is 0).
    async fn update(&self, key: &str, value: Vec<u8>, expected_revision: i64) -> Result<KeyValue>;

    /// Delete `key` if its mod_revision is `expected_revision` (or
    /// unconditionally when 0). Returns the last value and the delete revision.
    async fn delete(&self, key: &str, expected_revision: i64) -> Result<(KeyValue, i64)>;

    /// Watch keys with `prefix` from revision `from_revision` (inclusive).
    /// `from_revision == 0` means "from now on".
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<i64>;

    /// Forget history before `revision`.
    async fn compact(&self, revision: i64) -> Result<()>;

    /// The oldest revision a watch can still start from.
    async fn compacted_revision(&self) -> Result<i64>;
}
