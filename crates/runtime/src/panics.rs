//! Panics isolated to the work item that raised them (↔ client-go's
//! utilruntime.HandleCrash): a controller's reconcile, a scheduling cycle,
//! a kubelet pod sync. The panic is logged with the component and the
//! item, counted, and handed back as a message, so the caller retries the
//! item with backoff and every other item keeps being served.

use std::sync::atomic::{AtomicU64, Ordering};

static PANICS: AtomicU64 = AtomicU64::new(0);

/// How many work items have panicked since the process started.
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Run `work` (for `item` of `component`), a panic in it caught and
/// returned as its message. The future moves to the heap at once
/// (reconcile futures are large; two copies of one on a worker's stack
/// overflow it in debug builds).
pub fn catch<'a, T, K: std::fmt::Display + ?Sized>(
    component: &'a str,
    item: &'a K,
    work: impl Future<Output = T> + 'a,
) -> impl Future<Output = Result<T, String>> + 'a {
    use futures::FutureExt as _;
    let work = Box::pin(work);
    async move {
        match std::panic::AssertUnwindSafe(work).catch_unwind().await {
            Ok(v) => Ok(v),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                PANICS.fetch_add(1, Ordering::Relaxed);
                tracing::error!(component, item = %item, panic = %message, "panicked; retrying with backoff");
                Err(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_panic_is_caught_counted_and_told() {
        let before = super::count();
        let r: Result<(), String> = super::catch("test", "item", async { panic!("boom") }).await;
        assert_eq!(r, Err("boom".to_string()));
        assert_eq!(super::catch("test", "item", async { 7 }).await, Ok(7));
        assert!(super::count() > before);
    }
}
