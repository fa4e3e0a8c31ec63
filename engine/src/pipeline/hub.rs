//! The live event stream's hub: every event gets the next id, and the latest ones are kept so a
//! client that lost its connection resumes where it was (`Last-Event-ID`) without a gap or a
//! repeat. What is kept is bounded by count.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;

use super::StreamEvent;

/// Events kept for clients resuming.
const KEPT: usize = 2048;
/// The console feed's window: what happened to executions within it goes out as one batch.
const FEED_WINDOW: Duration = Duration::from_millis(250);
/// The most executions one batch of the console feed names; past it, a count of the others.
const FEED_CAP: usize = 100;

/// What a subscriber wants: every event, or (the console's pages) executions only, or an
/// execution's own events with its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    All,
    Executions,
    Output,
}

/// Counts a subscriber's interest while it is held.
pub struct InterestGuard {
    counts: Arc<[AtomicUsize; 3]>,
    kind: Interest,
}

impl Drop for InterestGuard {
    fn drop(&mut self) {
        self.counts[self.kind as usize].fetch_sub(1, Ordering::SeqCst);
    }
}

struct Inner {
    next_id: u64,
    kept: VecDeque<StreamEvent>,
}

/// Sends stream events to every subscriber, with ids.
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<StreamEvent>,
    inner: Arc<Mutex<Inner>>,
    /// Subscribers by [`Interest`]: an event nobody wants is not even serialized.
    counts: Arc<[AtomicUsize; 3]>,
    /// The console feed, while a console follows it.
    feed: Arc<Mutex<Option<Feed>>>,
    /// Whether the feed runs (looked at without the lock for every execution's change).
    feed_on: Arc<std::sync::atomic::AtomicBool>,
    /// Renders an execution as the stream shows it (set by the engine).
    render: Arc<Mutex<Option<Renderer>>>,
}

/// An execution's latest state as stream data, by id (`None`: no such execution).
pub type Renderer = Arc<dyn Fn(&str) -> Option<Arc<str>> + Send + Sync>;

/// The console feed's ends: executions touched go in, batches of SSE text come out, and the
/// latest batches are kept for consoles resuming.
struct Feed {
    touched: tokio::sync::mpsc::UnboundedSender<(String, bool)>,
    batches: broadcast::Sender<Bytes>,
    kept: Arc<Mutex<VecDeque<(u64, Bytes)>>>,
}

/// Feed batches kept for consoles resuming (a minute of them).
const FEED_KEPT: usize = 240;

/// What a resuming subscriber gets: the events it missed, whether some were no longer kept,
/// and the live ones after them.
pub struct Resumed {
    pub missed: Vec<StreamEvent>,
    /// Events between the client's last one and `missed` are gone: it must reload.
    pub gap: bool,
    pub live: broadcast::Receiver<StreamEvent>,
}

impl EventHub {
    pub fn new(capacity: usize) -> EventHub {
        let (tx, _) = broadcast::channel(capacity);
        EventHub {
            tx,
            inner: Arc::new(Mutex::new(Inner {
                next_id: 1,
                kept: VecDeque::with_capacity(KEPT),
            })),
            counts: Arc::new([
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            ]),
            feed: Arc::new(Mutex::new(None)),
            feed_on: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            render: Arc::new(Mutex::new(None)),
        }
    }

    /// Sends `event` with the next id (its `id` is set here); an event with no subscriber is
    /// still kept for a client about to resume.
    pub fn send(&self, mut event: StreamEvent) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        event.id = inner.next_id;
        inner.next_id += 1;
        if inner.kept.len() == KEPT {
            inner.kept.pop_front();
        }
        inner.kept.push_back(event.clone());
        // Sent under the lock, so a subscriber taking the kept events at the same time sees
        // each event once: in `missed` or live.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StreamEvent> {
        self.tx.subscribe()
    }

    /// How the console feed renders an execution.
    pub fn set_renderer(&self, render: Renderer) {
        *self.render.lock().unwrap_or_else(|p| p.into_inner()) = Some(render);
    }

    /// An execution was created or changed: the console feed (if one runs) notes its id; what
    /// it shows is read when its window closes.
    pub fn touched(&self, id: &str, created: bool) {
        if !self.feed_on.load(Ordering::Relaxed) {
            return;
        }
        let feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = feed.as_ref() {
            let _ = f.touched.send((id.to_string(), created));
        }
    }

    /// Holds a subscriber's interest (dropping the guard ends it).
    pub fn interest(&self, kind: Interest) -> InterestGuard {
        self.counts[kind as usize].fetch_add(1, Ordering::SeqCst);
        InterestGuard {
            counts: self.counts.clone(),
            kind,
        }
    }

    /// Whether some subscriber wants an event of this name: publishers skip serializing
    /// what nobody follows.
    pub fn wants(&self, event: &str) -> bool {
        let count = |k: Interest| self.counts[k as usize].load(Ordering::Relaxed) > 0;
        if count(Interest::All) {
            return true;
        }
        if event.starts_with("st2.execution__") {
            // The console feed reads what it shows itself (`touched`).
            return count(Interest::Output);
        }
        event == "st2.execution.output__create" && count(Interest::Output)
    }

    /// The console feed: every [`FEED_WINDOW`], one batch of SSE text naming each execution
    /// that changed in it once, in its state when the window closed (at most [`FEED_CAP`], the
    /// latest to change; then `squall.skipped` with how many others), formatted once for all
    /// the consoles following. What an execution goes through within a window costs squall an
    /// id sent on a channel; a human reads no faster, and consoles do not slow a busy squall.
    /// `after` resumes after batch `after` (the batches of the last minute are kept).
    pub fn console_feed(
        &self,
        after: Option<u64>,
    ) -> (Vec<Bytes>, bool, broadcast::Receiver<Bytes>, InterestGuard) {
        let guard = self.interest(Interest::Executions);
        let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        if feed.is_none() {
            let (touched, rx) = tokio::sync::mpsc::unbounded_channel();
            let (batches, _) = broadcast::channel(64);
            let kept = Arc::new(Mutex::new(VecDeque::with_capacity(FEED_KEPT)));
            *feed = Some(Feed {
                touched,
                batches: batches.clone(),
                kept: kept.clone(),
            });
            self.feed_on.store(true, Ordering::SeqCst);
            let hub = self.clone();
            tokio::spawn(async move { hub.run_feed(rx, batches, kept).await });
        }
        let f = feed.as_ref().expect("just set");
        let live = f.batches.subscribe();
        let kept = f.kept.lock().unwrap_or_else(|p| p.into_inner());
        let (missed, gap) = match after {
            Some(after) => {
                let oldest = kept.front().map(|(id, _)| *id);
                let missed = kept
                    .iter()
                    .filter(|(id, _)| *id > after)
                    .map(|(_, b)| b.clone())
                    .collect();
                (missed, oldest.is_some_and(|o| o > after + 1))
            }
            None => (Vec::new(), false),
        };
        (missed, gap, live, guard)
    }

    async fn run_feed(
        self,
        mut touched: tokio::sync::mpsc::UnboundedReceiver<(String, bool)>,
        out: broadcast::Sender<Bytes>,
        kept: Arc<Mutex<VecDeque<(u64, Bytes)>>>,
    ) {
        let mut seq = 0u64;
        loop {
            let deadline = tokio::time::Instant::now() + FEED_WINDOW;
            let mut order: Vec<String> = Vec::new();
            let mut created: HashMap<String, bool> = HashMap::new();
            loop {
                match tokio::time::timeout_at(deadline, touched.recv()).await {
                    Err(_) => break,
                    Ok(None) => return,
                    Ok(Some((id, is_create))) => match created.get_mut(&id) {
                        Some(c) => *c |= is_create,
                        None => {
                            order.push(id.clone());
                            created.insert(id, is_create);
                        }
                    },
                }
            }
            // Stops with its last console, under the lock a new console subscribes under.
            {
                let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
                if out.receiver_count() == 0 {
                    *feed = None;
                    self.feed_on.store(false, Ordering::SeqCst);
                    return;
                }
            }
            if order.is_empty() {
                continue;
            }
            let others = order.len().saturating_sub(FEED_CAP);
            let shown: Vec<(String, bool)> = order
                .into_iter()
                .skip(others)
                .map(|id| {
                    let c = created.get(&id).copied().unwrap_or(false);
                    (id, c)
                })
                .collect();
            let render = self
                .render
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some(render) = render else {
                continue;
            };
            seq += 1;
            let batch = seq;
            let text = tokio::task::spawn_blocking(move || {
                let mut text = String::new();
                for (id, is_create) in &shown {
                    if let Some(data) = render(id) {
                        let name = if *is_create {
                            "st2.execution__create"
                        } else {
                            "st2.execution__update"
                        };
                        push_sse_id(&mut text, &format!("f{batch}"), name, &data);
                    }
                }
                if others > 0 {
                    let data = format!("{{\"executions\":{others}}}");
                    push_sse_id(&mut text, &format!("f{batch}"), "squall.skipped", &data);
                }
                text
            })
            .await
            .unwrap_or_default();
            if text.is_empty() {
                continue;
            }
            let bytes = Bytes::from(text);
            {
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() == FEED_KEPT {
                    kept.pop_front();
                }
                kept.push_back((batch, bytes.clone()));
            }
            let _ = out.send(bytes);
        }
    }

    /// Subscribes after event `last_id`: the kept events since, then live ones.
    pub fn resume(&self, last_id: u64) -> Resumed {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = inner.kept.front().map_or(inner.next_id, |e| e.id);
        let missed: Vec<StreamEvent> = inner
            .kept
            .iter()
            .filter(|e| e.id > last_id)
            .cloned()
            .collect();
        Resumed {
            missed,
            gap: last_id + 1 < oldest && last_id < inner.next_id,
            live: self.tx.subscribe(),
        }
    }

    pub fn receiver_count(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// One server-sent event as text: `id:`, `event:`, one `data:` line per line of data.
pub fn push_sse(out: &mut String, id: Option<u64>, event: &str, data: &str) {
    match id {
        Some(id) => push_sse_id(out, &id.to_string(), event, data),
        None => push_sse_id(out, "", event, data),
    }
}

/// [`push_sse`] with an id given as text (none when empty).
pub fn push_sse_id(out: &mut String, id: &str, event: &str, data: &str) {
    use std::fmt::Write;
    if !id.is_empty() {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = writeln!(out, "event: {event}");
    for line in data.split('\n') {
        let _ = writeln!(out, "data: {line}");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &'static str) -> StreamEvent {
        StreamEvent {
            id: 0,
            event: name.into(),
            data: Arc::from("{}"),
        }
    }

    #[test]
    fn a_client_resumes_after_its_last_event() {
        let hub = EventHub::new(16);
        let mut first = hub.subscribe();
        hub.send(ev("a"));
        hub.send(ev("b"));
        let got = first.try_recv().expect("a");
        assert_eq!((got.id, &*got.event), (1, "a"));
        // The client drops after `a`, then resumes.
        drop(first);
        hub.send(ev("c"));
        let mut r = hub.resume(1);
        assert!(!r.gap);
        let ids: Vec<u64> = r.missed.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![2, 3]);
        hub.send(ev("d"));
        assert_eq!(r.live.try_recv().expect("d").id, 4);
    }

    #[test]
    fn a_client_too_far_behind_is_told_of_the_gap() {
        let hub = EventHub::new(16);
        for _ in 0..(KEPT + 10) {
            hub.send(ev("x"));
        }
        let r = hub.resume(3);
        assert!(r.gap);
        assert_eq!(r.missed.len(), KEPT);
        let r = hub.resume((KEPT + 10) as u64);
        assert!(!r.gap && r.missed.is_empty());
    }
}
