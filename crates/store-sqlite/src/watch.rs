//! Watches: replay from the log, then follow the broadcast of committed
//! batches; catch up from the log again after lagging.

use std::sync::Arc;
use std::time::Duration;

use skiff_store::{Event, StoreError, WatchBatch, WatchStream};
use tokio::sync::{broadcast, mpsc};

use crate::read::{self, Shared};
use crate::writer::Committed;

/// Events read from the log per replay transaction.
const REPLAY_PAGE: usize = 1000;
/// Batches buffered between the watch task and its consumer.
const OUT_BUFFER: usize = 16;

type Out = mpsc::Sender<Result<WatchBatch, StoreError>>;

/// Starts the task feeding a watch. `events` must have been subscribed
/// before `from_revision` (or, for 0, the current revision) is resolved.
pub(crate) fn start(
    shared: Arc<Shared>,
    events: broadcast::Receiver<Arc<Committed>>,
    prefix: String,
    from_revision: i64,
    progress: Option<Duration>,
) -> WatchStream {
    let next = if from_revision == 0 {
        shared.current() + 1
    } else {
        from_revision
    };
    let (out, rx) = mpsc::channel(OUT_BUFFER);
    tokio::spawn(run(shared, events, prefix, next, progress, out));
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Feeds `out` with every event of `prefix` from revision `next` on, until
/// the consumer goes away, the store closes, or an error (sent as the last item).
async fn run(
    shared: Arc<Shared>,
    mut events: broadcast::Receiver<Arc<Committed>>,
    prefix: String,
    mut next: i64,
    progress: Option<Duration>,
    out: Out,
) {
    let mut ticker = progress.map(|period| {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    loop {
        match catch_up(&shared, &prefix, &mut next, &out).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        }
        match follow(&mut events, &prefix, &mut next, &out, &mut ticker).await {
            Follow::Lagged(missed) => {
                tracing::debug!(
                    prefix,
                    missed,
                    next,
                    "watch lagged behind; catching up from the log"
                );
            }
            Follow::Done => return,
        }
    }
}

/// Replays the log from `next` up to the current revision. `Ok(false)`
/// when the consumer went away.
async fn catch_up(
    shared: &Arc<Shared>,
    prefix: &str,
    next: &mut i64,
    out: &Out,
) -> Result<bool, StoreError> {
    let target = shared.current();
    while *next <= target {
        let (from, prefix) = (*next, prefix.to_owned());
        let page = shared
            .read(move |conn| read::replay_page(conn, &prefix, from, target, REPLAY_PAGE))
            .await?;
        *next = page.covered + 1;
        if !page.events.is_empty()
            && out
                .send(Ok(WatchBatch {
                    events: page.events,
                    revision: page.covered,
                }))
                .await
                .is_err()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

enum Follow {
    Lagged(u64),
    Done,
}

/// Follows the broadcast of committed batches, skipping what was delivered.
async fn follow(
    events: &mut broadcast::Receiver<Arc<Committed>>,
    prefix: &str,
    next: &mut i64,
    out: &Out,
    ticker: &mut Option<tokio::time::Interval>,
) -> Follow {
    let mut idle = true;
    loop {
        tokio::select! {
            _ = out.closed() => return Follow::Done,
            received = events.recv() => match received {
                Ok(batch) => {
                    if batch.revision < *next {
                        continue;
                    }
                    let matching: Vec<Event> = batch
                        .events
                        .iter()
                        .filter(|e| e.revision() >= *next && e.key().starts_with(prefix))
                        .cloned()
                        .collect();
                    *next = batch.revision + 1;
                    if !matching.is_empty() {
                        idle = false;
                        if out.send(Ok(WatchBatch { events: matching, revision: batch.revision })).await.is_err() {
                            return Follow::Done;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => return Follow::Lagged(missed),
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = out.send(Err(StoreError::Unavailable("sqlite store is closed".into()))).await;
                    return Follow::Done;
                }
            },
            _ = tick(ticker) => {
                if idle && out.send(Ok(WatchBatch { events: Vec::new(), revision: *next - 1 })).await.is_err() {
                    return Follow::Done;
                }
                idle = true;
            }
        }
    }
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}
