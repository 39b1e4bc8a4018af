//! A tiny throughput benchmark: creates per second from 64 concurrent
//! clients. Ignored by default; it prints, it never asserts on speed.
//!
//! cargo test --release -p skiff-store-sqlite --test bench -- --ignored --nocapture

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use skiff_store::Store;

const CLIENTS: usize = 64;
const PER_CLIENT: usize = 500;

async fn creates_per_second(value_size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(common::open(&dir.path().join("bench.db")));
    // Subscribe one watcher, as an API server would.
    let mut watch = store.watch("/bench/", 0).await.unwrap();
    let watcher = tokio::spawn(async move {
        use futures::StreamExt;
        let mut n = 0;
        while n < CLIENTS * PER_CLIENT {
            n += watch.next().await.unwrap().unwrap().events.len();
        }
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_CLIENT {
                store
                    .create(&format!("/bench/{c:02}/{i:05}"), vec![7; value_size])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    watcher.await.unwrap();
    let n = CLIENTS * PER_CLIENT;
    let stats = store.stats();
    println!(
        "{n} creates of {value_size} B from {CLIENTS} clients in {:.2} s: {:.0} creates/s, {} transactions ({:.1} writes per fsync)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        stats.transactions,
        stats.writes as f64 / stats.transactions.max(1) as f64
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_creates_64_clients() {
    creates_per_second(256).await;
    creates_per_second(1024).await;
    creates_per_second(4096).await;
}
