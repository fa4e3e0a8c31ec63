//! The live event stream's hub: every event gets the next id, and the latest ones are kept so a
//! client that lost its connection resumes where it was (`Last-Event-ID`) without a gap or a
//! repeat. What is kept is bounded by count.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::StreamEvent;

/// Events kept for clients resuming.
const KEPT: usize = 2048;

struct Inner {
    next_id: u64,
    kept: VecDeque<StreamEvent>,
}

/// Sends stream events to every subscriber, with ids.
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<StreamEvent>,
    inner: Arc<Mutex<Inner>>,
}

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
