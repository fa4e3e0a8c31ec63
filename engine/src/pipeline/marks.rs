//! `running` marks written to the store only for actions that run long enough to be seen.
//!
//! A worker makes an execution's `running` mark durable in the journal before the action
//! starts (see `Engine::run_batch`); the store's copy is only what the API shows. Most actions
//! end within a millisecond, and writing their mark to the store just before their result costs
//! a transaction per batch and rewrites the same records. So marks wait here: those still
//! running after [`MARK_DELAY`] are written by this module's thread, and a worker whose action
//! ended first takes its marks back and writes the result alone.
//!
//! Order: the thread writes marks while it holds the lock, and a worker takes its marks back
//! under the same lock before it writes results, so a mark never lands after its result.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::model::Execution;
use crate::store::Store;

/// How long an action runs before the store shows it `running`.
pub(crate) const MARK_DELAY: Duration = Duration::from_millis(20);

#[derive(Default)]
pub(crate) struct RunningMarks {
    pending: Mutex<HashMap<String, (Instant, Execution)>>,
    wake: Condvar,
}

impl RunningMarks {
    /// Starts the thread that writes marks older than [`MARK_DELAY`]; it ends with the store.
    pub(crate) fn start_writer(self: &Arc<Self>, store: &Arc<Store>) -> std::io::Result<()> {
        let weak_marks = Arc::downgrade(self);
        let weak_store = Arc::downgrade(store);
        std::thread::Builder::new()
            .name("squall-marks".into())
            .spawn(move || writer(weak_marks, weak_store))?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Instant, Execution)>> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Marks these executions running (in the store after [`MARK_DELAY`] unless taken back).
    pub(crate) fn add(&self, list: &[Execution]) {
        let now = Instant::now();
        let mut pending = self.lock();
        let was_empty = pending.is_empty();
        for e in list {
            pending.insert(e.id.clone(), (now, e.clone()));
        }
        drop(pending);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Takes back the marks of these executions (their results follow); a mark already written
    /// is gone from here, and its write is complete.
    pub(crate) fn take<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut pending = self.lock();
        for id in ids {
            pending.remove(id);
        }
    }
}

fn writer(marks: Weak<RunningMarks>, store: Weak<Store>) {
    loop {
        let (Some(marks), Some(store)) = (marks.upgrade(), store.upgrade()) else {
            return;
        };
        let mut pending = marks.lock();
        let now = Instant::now();
        let due: Vec<String> = pending
            .iter()
            .filter(|(_, (at, _))| now.duration_since(*at) >= MARK_DELAY)
            .map(|(id, _)| id.clone())
            .collect();
        if !due.is_empty() {
            let list: Vec<Execution> = due
                .iter()
                .filter_map(|id| pending.remove(id).map(|(_, e)| e))
                .collect();
            // Under the lock: see the module's note on order.
            if let Err(err) = store.put_executions(&list) {
                tracing::error!(error = %err, "cannot record running executions in the store");
            }
        }
        let wait = pending
            .values()
            .map(|(at, _)| (*at + MARK_DELAY).saturating_duration_since(now))
            .min()
            // Nothing pending: wake now and then only to notice the store is gone.
            .unwrap_or(Duration::from_secs(1));
        drop(store);
        let _unused = marks.wake.wait_timeout(pending, wait);
    }
}
