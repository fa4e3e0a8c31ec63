//! `GET /api/v1/stream`: server-sent events, as st2's stream serves them, with ids.
//!
//! - Without `console`: every event (or those `events=a,b` names), for st2's clients and
//!   scripts. The events waiting for a client go out in one write.
//! - `console=executions`: the console's list pages: the hub's shared feed, a batch every
//!   250 ms naming each execution that changed once (`EventHub::console_feed`).
//! - `console=execution&execution=ID`: an execution's page: its own events, its tasks' and its
//!   log lines.
//!
//! A client that lost its connection names the last event it had (`Last-Event-ID`, or
//! `last_event_id=`): the ones it missed come first, or `squall.gap` when they are no longer
//! kept. Every stream ends once squall has stopped its work.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::AppState;
use crate::pipeline::hub::{push_sse, Interest};
use crate::pipeline::StreamEvent;

/// A comment line every so often, so proxies and browsers keep an idle stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The most events one write carries.
const BATCH: usize = 512;

#[derive(Deserialize)]
pub(super) struct StreamQuery {
    last_event_id: Option<u64>,
    /// Only these events (st2's `events=`), comma-separated.
    events: Option<String>,
    /// `executions` or `execution` (with `execution=ID`): the console's streams.
    console: Option<String>,
    execution: Option<String>,
}

/// Which events a raw stream passes.
struct Filter {
    names: Option<Vec<String>>,
    /// An execution's id: its events, its tasks' (which name it as parent) and its log lines.
    execution: Option<String>,
}

impl Filter {
    fn passes(&self, ev: &StreamEvent) -> bool {
        if let Some(names) = &self.names {
            if !names.iter().any(|n| n == &*ev.event) {
                return false;
            }
        }
        match &self.execution {
            Some(id) => ev.event.starts_with("st2.execution") && ev.data.contains(id.as_str()),
            None => true,
        }
    }
}

pub(super) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.last_event_id);
    let hub = state.engine.events.clone();
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    let mut end = state.streams_end.clone();
    let ended = async move {
        while !*end.borrow_and_update() {
            if end.changed().await.is_err() {
                break;
            }
        }
    };

    if q.console.as_deref() == Some("executions") {
        // The feed's batches have ids of their own (`f<n>`).
        let after = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix('f'))
            .and_then(|v| v.parse::<u64>().ok());
        let (missed, gap, mut batches, guard) = hub.console_feed(after);
        tokio::spawn(async move {
            let _guard = guard;
            tokio::pin!(ended);
            if gap
                && tx
                    .send(Ok(Bytes::from_static(b"event: squall.gap\ndata: {}\n\n")))
                    .await
                    .is_err()
            {
                return;
            }
            for b in missed {
                if tx.send(Ok(b)).await.is_err() {
                    return;
                }
            }
            let mut tick = tokio::time::interval(KEEP_ALIVE);
            loop {
                let chunk = tokio::select! {
                    _ = &mut ended => return,
                    _ = tx.closed() => return,
                    _ = tick.tick() => Bytes::from_static(b": keep-alive\n\n"),
                    next = batches.recv() => match next {
                        Ok(b) => b,
                        Err(RecvError::Lagged(_)) => Bytes::from_static(b"event: squall.gap\ndata: {}\n\n"),
                        Err(RecvError::Closed) => return,
                    },
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        return sse_response(out);
    }

    let (interest, filter) = match (q.console.as_deref(), q.execution) {
        (Some("execution"), Some(id)) => (
            Interest::Output,
            Filter {
                names: None,
                execution: Some(id),
            },
        ),
        _ => (
            Interest::All,
            Filter {
                names: q.events.map(|e| {
                    e.split(',')
                        .map(|n| n.trim().to_string())
                        .filter(|n| !n.is_empty())
                        .collect()
                }),
                execution: None,
            },
        ),
    };
    let guard = hub.interest(interest);
    let (first, mut rx) = match last {
        Some(last) => {
            let r = hub.resume(last);
            let mut text = String::new();
            if r.gap {
                push_sse(
                    &mut text,
                    None,
                    "squall.gap",
                    &format!("{{\"after\":{last}}}"),
                );
            }
            for ev in r.missed.iter().filter(|e| filter.passes(e)) {
                push_sse(&mut text, Some(ev.id), &ev.event, &ev.data);
            }
            (text, r.live)
        }
        None => (String::new(), hub.subscribe()),
    };
    tokio::spawn(async move {
        let _guard = guard;
        tokio::pin!(ended);
        if !first.is_empty() && tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        loop {
            let mut text = String::new();
            tokio::select! {
                _ = &mut ended => return,
                _ = tx.closed() => return,
                _ = tick.tick() => text.push_str(": keep-alive\n\n"),
                next = rx.recv() => match next {
                    Ok(ev) => {
                        if filter.passes(&ev) {
                            push_sse(&mut text, Some(ev.id), &ev.event, &ev.data);
                        }
                        // What else is waiting goes in the same write.
                        for _ in 0..BATCH {
                            match rx.try_recv() {
                                Ok(ev) => {
                                    if filter.passes(&ev) {
                                        push_sse(&mut text, Some(ev.id), &ev.event, &ev.data);
                                    }
                                }
                                Err(TryRecvError::Lagged(n)) => {
                                    push_sse(&mut text, None, "squall.gap", &format!("{{\"missed\":{n}}}"));
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        push_sse(&mut text, None, "squall.gap", &format!("{{\"missed\":{n}}}"));
                    }
                    Err(RecvError::Closed) => return,
                },
            }
            if !text.is_empty() && tx.send(Ok(Bytes::from(text))).await.is_err() {
                return;
            }
        }
    });
    sse_response(out)
}

fn sse_response(
    out: tokio::sync::mpsc::Receiver<Result<Bytes, std::convert::Infallible>>,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out)),
    )
        .into_response()
}
