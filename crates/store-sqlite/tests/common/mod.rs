//! Shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::Path;

use skiff_store_sqlite::{SqliteOptions, SqliteStore};

/// Options for tests: no automatic compaction or checkpoint, so that
/// nothing happens behind a test's back.
pub fn quiet_options() -> SqliteOptions {
    SqliteOptions {
        compact_interval: None,
        checkpoint_interval: None,
        ..SqliteOptions::default()
    }
}

pub fn open(path: &Path) -> SqliteStore {
    SqliteStore::open_with(path, quiet_options()).expect("open store")
}

/// Size in bytes of the database file plus its WAL.
pub fn db_size(path: &Path) -> u64 {
    let wal = path.with_file_name(format!(
        "{}-wal",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    ));
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    size(path) + size(&wal)
}
