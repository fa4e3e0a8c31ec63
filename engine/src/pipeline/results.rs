//! Finishing a worker's batch: the scripts' key-value writes made durable, then the results
//! journaled, handed to the store, and announced (stream, `core.action_finished`, retries,
//! workflows).
//!
//! A batch whose scripts wrote to the key-value store (or read writes not yet on disk) needs a
//! sled flush before its results may be journaled. Rather than hold the worker for it, the
//! batch goes to one thread of its own, which takes every batch waiting, flushes once for all
//! of them and finishes them together, while the workers run what comes next. A batch that
//! needs no flush is finished by its worker at once, as before. This file must never journal,
//! store or announce a result before the writes its script made are durable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::{Engine, Loaded};
use crate::model::{Execution, ExecutionStatus};

/// Batches waiting for their key-value writes to reach disk.
pub(super) struct Results {
    tx: crossbeam_channel::Sender<Waiting>,
    rx: Mutex<Option<crossbeam_channel::Receiver<Waiting>>>,
    /// Executions handed over and not yet finished: shutdown waits for them.
    pending: AtomicUsize,
}

struct Waiting {
    loaded: Arc<Loaded>,
    finished: Vec<Execution>,
    kv_mark: u64,
}

impl Default for Results {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Results {
            tx,
            rx: Mutex::new(Some(rx)),
            pending: AtomicUsize::new(0),
        }
    }
}

impl Results {
    /// Executions whose results are not yet finished here.
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

impl Engine {
    /// Starts the thread that finishes batches waiting for a flush.
    pub(super) fn start_results(self: &Arc<Self>) -> std::io::Result<()> {
        let rx = match self.results.rx.lock() {
            Ok(mut rx) => rx.take(),
            Err(p) => p.into_inner().take(),
        };
        let Some(rx) = rx else {
            return Ok(());
        };
        let engine = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("squall-results".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let Some(engine) = engine.upgrade() else {
                        return;
                    };
                    let mut batches = vec![first];
                    batches.extend(rx.try_iter());
                    engine.finish_waiting(batches);
                }
            })
            .map(|_| ())
    }

    /// Finishes a worker's batch: at once when its scripts' key-value writes are on disk
    /// already (or there are none), otherwise on the results thread.
    pub(super) fn finish_batch(&self, loaded: Arc<Loaded>, finished: Vec<Execution>, kv_mark: u64) {
        if self.store.kv_covered(kv_mark) {
            self.complete_batch(&loaded, finished, 0);
            return;
        }
        let count = finished.len();
        self.results.pending.fetch_add(count, Ordering::SeqCst);
        let waiting = Waiting {
            loaded,
            finished,
            kv_mark,
        };
        if let Err(crossbeam_channel::SendError(w)) = self.results.tx.send(waiting) {
            // The results thread is gone: finish here, waiting for the flush.
            self.complete_batch(&w.loaded, w.finished, w.kv_mark);
            self.results.pending.fetch_sub(count, Ordering::SeqCst);
        }
    }

    /// One flush for every batch waiting, then one journal sync for all their results.
    fn finish_waiting(&self, batches: Vec<Waiting>) {
        let kv_mark = batches.iter().map(|b| b.kv_mark).max().unwrap_or(0);
        let count: usize = batches.iter().map(|b| b.finished.len()).sum();
        // The newest catalog announces them all, as it would had they ended a moment later.
        let Some(loaded) = batches.last().map(|b| b.loaded.clone()) else {
            return;
        };
        let finished: Vec<Execution> = batches.into_iter().flat_map(|b| b.finished).collect();
        self.complete_batch(&loaded, finished, kv_mark);
        self.results.pending.fetch_sub(count, Ordering::SeqCst);
    }

    /// Makes the writes up to `kv_mark` durable, then journals, stores and announces the
    /// results.
    pub(super) fn complete_batch(
        &self,
        loaded: &Loaded,
        mut finished: Vec<Execution>,
        kv_mark: u64,
    ) {
        // What the scripts wrote to the key-value store (and the writes they read) is on disk
        // before any of their results can be: a result in the journal comes back after a
        // crash, and must not come back without the writes it reports.
        if let Err(err) = self.store.kv_durable(kv_mark) {
            tracing::error!(error = %err, "key-value writes are not durable; their executions fail");
            for e in finished
                .iter_mut()
                .filter(|e| e.status == ExecutionStatus::Succeeded)
            {
                e.status = ExecutionStatus::Failed;
                e.result = json!({"error": format!("the action ran, but its key-value writes could not be made durable: {err}")});
            }
        }
        for e in &finished {
            self.metrics
                .execution_finished(e.status, e.elapsed_seconds().unwrap_or(0.0));
        }
        // Results are made durable by the journal (one group-committed sync of just these
        // records, cheaper than a store flush) and handed to the store's writer meanwhile; they
        // hold their journal segment until it has written them. A workflow's task needs no
        // sync: the workflow's next step writes after it and flushes before anything follows
        // from its result.
        let finished: Vec<Arc<Execution>> = finished.into_iter().map(Arc::new).collect();
        let top: Vec<Arc<Execution>> = finished
            .iter()
            .filter(|e| e.parent.is_none())
            .cloned()
            .collect();
        let ticket = Arc::new(crate::journal::Ticket::for_records(top.len() as u64));
        // What the results announce (st2's notifications: a chat command's answer) is journaled
        // with them, in the same write: a result on disk never lacks its answer.
        let notes: Vec<Arc<crate::model::TriggerInstance>> = top
            .iter()
            .flat_map(|e| self.notify_instances(loaded, e))
            .map(Arc::new)
            .collect();
        let mut notified = false;
        let sync = if top.is_empty() {
            None
        } else {
            match self
                .journal
                .submit_executions_and_instances(&top, ticket.clone(), notes)
            {
                Ok(sync) => {
                    notified = true;
                    Some(sync)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot journal results; flushing the store instead");
                    None
                }
            }
        };
        // After any `running` mark still waiting is dropped: those marks' segments, too, wait
        // for the results to be written.
        let marks = self.marks.take(finished.iter().map(|e| e.id.as_str()));
        let journal = self.journal.clone();
        let after: crate::store::AfterStored = Box::new(move || {
            ticket.stored(&journal);
            for seq in marks {
                journal.stored(seq);
            }
        });
        self.store
            .put_executions_later(finished.clone(), Some(after));
        match sync {
            Some(sync) => {
                if let Err(err) = sync.wait_blocking() {
                    tracing::warn!(error = %err, "cannot journal results; flushing the store instead");
                    self.durable_blocking();
                }
            }
            None if !top.is_empty() => self.durable_blocking(),
            None => {}
        }
        for e in &finished {
            self.announce_final_as(loaded, e, !(notified && e.parent.is_none()));
        }
    }
}
