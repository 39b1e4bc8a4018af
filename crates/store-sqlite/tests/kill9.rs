//! A real `kill -9`: a child process (this very test binary, running only
//! `kill9_child`) writes as fast as it can and prints each acknowledged
//! write; the parent kills it with SIGKILL mid-flight, reopens the store
//! and checks that every acknowledged write is there.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use skiff_store::Store;
use skiff_store_sqlite::SqliteStore;

const CHILD_ENV: &str = "SKIFF_STORE_SQLITE_KILL9_DB";
const WRITERS: usize = 16;

/// The child: does nothing unless started by `kill9_loses_no_acknowledged_write`.
#[test]
fn kill9_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // Default options: background checkpoints and all.
        let store = Arc::new(SqliteStore::open(std::path::Path::new(&path)).unwrap());
        for w in 0..WRITERS {
            let store = store.clone();
            tokio::spawn(async move {
                let counter = format!("/kill9/{w:02}/counter");
                let mut rev = store
                    .create(&counter, b"0".to_vec())
                    .await
                    .unwrap()
                    .mod_revision;
                ack(&format!("C {counter} {rev}"));
                for i in 1.. {
                    let key = format!("/kill9/{w:02}/{i:06}");
                    let kv = store.create(&key, vec![w as u8; 512]).await.unwrap();
                    ack(&format!("C {key} {}", kv.mod_revision));
                    rev = store
                        .update(&counter, i.to_string().into_bytes(), rev)
                        .await
                        .unwrap()
                        .mod_revision;
                    ack(&format!("U {counter} {rev} {i}"));
                }
            });
        }
        std::future::pending::<()>().await;
    });
}

/// Prints one acknowledged write, bypassing the test harness's capture.
fn ack(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ACK {line}");
    let _ = out.flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiff.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill9_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acks = Vec::new();
    let mut line = String::new();
    // Let it write a while, then kill it in the middle of whatever it does.
    while acks.len() < 3_000 {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("child exited early: {:?}", child.wait());
        }
        if let Some(ack) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ACK ")) {
            acks.push(ack.to_owned());
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    // Lines printed before the kill are acknowledged writes too; a cut last line is not.
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(ack) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ACK ")) {
            acks.push(ack.to_owned());
        }
    }

    let store = common::open(&path);
    let mut max_rev = 0;
    let mut counters = std::collections::HashMap::new();
    for ack in &acks {
        let fields: Vec<&str> = ack.split(' ').collect();
        let rev: i64 = fields[2].parse().unwrap();
        max_rev = max_rev.max(rev);
        match fields[0] {
            "C" => {
                let kv = store.get(fields[1]).await.unwrap();
                let kv = kv.unwrap_or_else(|| {
                    panic!("acknowledged create of {} (revision {rev}) lost", fields[1])
                });
                if !fields[1].ends_with("counter") {
                    assert_eq!(kv.mod_revision, rev);
                }
            }
            "U" => {
                let n: u64 = fields[3].parse().unwrap();
                let c = counters.entry(fields[1]).or_insert(0);
                *c = n.max(*c);
            }
            other => panic!("bad ack {other}"),
        }
    }
    for (counter, n) in counters {
        let kv = store.get(counter).await.unwrap().unwrap();
        let value: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
        assert!(value >= n, "{counter}: acknowledged {n}, found {value}");
    }
    let current = store.current_revision().await.unwrap();
    assert!(
        current >= max_rev,
        "revision went back: {current} < acknowledged {max_rev}"
    );
    let next = store.create("/kill9/after", Vec::new()).await.unwrap();
    assert!(next.mod_revision > max_rev);
    println!(
        "{} acknowledged writes survived kill -9 (last acknowledged revision {max_rev}, recovered {current})",
        acks.len()
    );
}
