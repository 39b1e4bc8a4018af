//! WATCH: a chunked stream of `{"type": ..., "object": ...}` lines from the
//! watch cache, with resourceVersion semantics, label/field selectors
//! (objects moving in and out of a selector become ADDED/DELETED),
//! bookmarks, `sendInitialEvents`, and `timeoutSeconds`.
//!
//! In protobuf (`application/vnd.kubernetes.protobuf;stream=watch`) each
//! event is a frame of a 4-byte big-endian length and a `metav1.WatchEvent`
//! message whose `object.raw` is the object's full protobuf body (`k8s\0` +
//! runtime.Unknown), built from the cache's per-object encoding.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cache::{CacheEvent, EventType};
use crate::handlers::{Filter, Req, name_of, scope_prefix};
use crate::output::{self, Output, Wire};
use crate::server::Body;
use crate::status::{ApiError, ApiResult};

const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

fn frame_raw(kind: &str, object: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(object.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(object);
    b.put_slice(b"}\n");
    b.freeze()
}

fn frame_value(kind: &str, object: &Value) -> Bytes {
    frame_raw(kind, &serde_json::to_vec(object).unwrap_or_default())
}

/// A protobuf watch frame for an object's full protobuf body.
fn frame_protobuf(kind: &str, body: &[u8]) -> Bytes {
    Bytes::from(skiff_api::protobuf::frame(
        &skiff_api::protobuf::watch_event(kind, body),
    ))
}

/// A frame for `object` in `wire`; an object without a protobuf form is
/// left out of a protobuf stream (it cannot be represented there).
fn frame_in(wire: Wire, kind: &str, object: &Value) -> Option<Bytes> {
    match wire {
        Wire::Json => Some(frame_value(kind, object)),
        Wire::Protobuf => match skiff_api::protobuf::encode(object) {
            Ok(body) => Some(frame_protobuf(kind, &body)),
            Err(e) => {
                tracing::warn!(error = %e, "watch event has no protobuf form, skipped");
                None
            }
        },
    }
}

struct Encoder {
    info: &'static skiff_api::registry::ResourceInfo,
    /// The definition of a custom resource (its printer columns).
    custom: Option<Arc<crate::crd::Served>>,
    api_version: String,
    output: Output,
    sent_columns: bool,
}

impl Encoder {
    fn encode(&mut self, kind: &str, ev: &CacheEvent) -> Option<Bytes> {
        Some(match self.output {
            Output::Json if self.info.custom => {
                match crate::crd::on_read(self.custom.as_deref(), &ev.object.value) {
                    std::borrow::Cow::Owned(v) => frame_in(Wire::Json, kind, &v)?,
                    std::borrow::Cow::Borrowed(_) => frame_raw(kind, &ev.object.bytes),
                }
            }
            Output::Json => frame_raw(kind, &ev.object.bytes),
            Output::Protobuf => match ev.object.protobuf() {
                Some(raw) => Bytes::from(skiff_api::protobuf::watch_frame(
                    kind,
                    &self.api_version,
                    self.info.kind,
                    raw,
                )),
                None => return frame_in(Wire::Protobuf, kind, &ev.object.value),
            },
            Output::PartialMetadata(wire) => {
                return frame_in(wire, kind, &output::partial_metadata(&ev.object.value));
            }
            Output::Table(inc) => {
                let rv = ev.revision.to_string();
                let t = output::table(
                    output::Printer::of(self.info, self.custom.as_deref()),
                    [&ev.object.value],
                    inc,
                    Some(&rv),
                    None,
                    !self.sent_columns,
                );
                self.sent_columns = true;
                frame_value(kind, &t)
            }
        })
    }

    fn bookmark(&self, revision: i64, initial_end: bool) -> Option<Bytes> {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = match self.output {
            Output::Table(_) => {
                json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": [], "rows": []})
            }
            Output::PartialMetadata(_) => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
            }
            Output::Json | Output::Protobuf => {
                json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta})
            }
        };
        frame_in(self.output.wire(), "BOOKMARK", &obj)
    }
}

/// Which event (if any) a watcher with `filter` sees for a cache event.
fn visible(filter: &Filter, name: Option<&str>, ev: &CacheEvent) -> Option<&'static str> {
    let pass = |v: &Value| name.is_none_or(|n| name_of(v) == n) && filter.matches(v);
    let now = pass(&ev.object.value);
    match ev.kind {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => now.then_some("DELETED"),
        EventType::Modified => {
            let before = ev.prev.as_ref().is_some_and(|p| pass(&p.value));
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

pub async fn serve(req: &Req<'_>, name: Option<String>) -> ApiResult<Response<Body>> {
    let filter = Filter::from_query(req)?;
    let name = name.or_else(|| filter.fields.name().map(str::to_string));
    let bookmarks = req.query.flag("allowWatchBookmarks");
    let send_initial = req.query.get("sendInitialEvents") == Some("true");
    let timeout = req
        .query
        .int("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let from = match req.query.get("resourceVersion") {
        None | Some("") => {
            req.server.cache.sync().await?;
            None
        }
        Some("0") => None,
        Some(rv) => {
            let rv: i64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            if send_initial {
                req.server.cache.wait_for(rv).await?;
                None
            } else {
                Some(rv)
            }
        }
    };
    let prefix = match (&name, req.info.namespaced, &req.namespace) {
        (Some(n), false, _) | (Some(n), true, Some(_)) => req.key(n),
        _ => scope_prefix(req),
    };
    let crate::cache::Subscription {
        initial,
        revision: start_revision,
        events: mut rx,
    } = match req.server.cache.watch(&prefix, from) {
        Ok(x) => x,
        Err(e) if e.code == 410 => {
            // As kube-apiserver: a 200 stream whose only event is an ERROR with the 410 Status.
            let body = match req.output.wire() {
                Wire::Json => frame_value("ERROR", &e.to_status()),
                Wire::Protobuf => match e.to_status_protobuf() {
                    Some(status) => frame_protobuf("ERROR", &status),
                    None => return Err(e),
                },
            };
            return Ok(stream_response(req, single(body)));
        }
        Err(e) => return Err(e),
    };
    let mut enc = Encoder {
        info: req.info,
        custom: req.server.resources.custom(req.info),
        api_version: req.info.api_version(),
        output: req.output,
        sent_columns: false,
    };
    let (tx, body_rx) = mpsc::channel::<Bytes>(256);
    let cache = req.server.cache.clone();
    let filter = Arc::new(filter);
    let name_c = name.clone();
    tokio::spawn(async move {
        let mut last_sent = from.unwrap_or(0);
        for ev in &initial {
            if let Some(kind) = visible(&filter, name_c.as_deref(), ev) {
                let kind = if from.is_none() { "ADDED" } else { kind };
                if let Some(frame) = enc.encode(kind, ev)
                    && tx.send(frame).await.is_err()
                {
                    return;
                }
            }
            last_sent = last_sent.max(ev.revision);
        }
        if send_initial
            && let Some(frame) = enc.bookmark(start_revision.max(last_sent), true)
            && tx.send(frame).await.is_err()
        {
            return;
        }
        // A timeout beyond what the clock holds is no timeout (security
        // review L2: `Instant + Duration` panicked near i64::MAX seconds).
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = ticker.tick(), if bookmarks => {
                    let rev = cache.revision().max(last_sent);
                    if let Some(frame) = enc.bookmark(rev, false)
                        && tx.send(frame).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
                () = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return,
                () = tx.closed() => return,
            };
            let Some(ev) = ev else {
                // Dropped by the cache (slow consumer or reload): end the stream; clients re-watch.
                return;
            };
            // Live events overlapping the replayed initial set are skipped.
            if ev.revision <= last_sent {
                continue;
            }
            last_sent = ev.revision;
            if let Some(kind) = visible(&filter, name_c.as_deref(), &ev)
                && let Some(frame) = enc.encode(kind, &ev)
                && tx.send(frame).await.is_err()
            {
                return;
            }
        }
    });
    Ok(stream_response(req, body_rx))
}

fn single(b: Bytes) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(b);
    rx
}

fn stream_response(req: &Req<'_>, rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    // As kube-apiserver: JSON keeps its media type, others get ";stream=watch".
    let content_type = match req.output.wire() {
        Wire::Json => "application/json",
        Wire::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}
