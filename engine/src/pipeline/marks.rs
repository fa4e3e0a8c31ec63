//! `running` marks written to the store only for actions that run long enough to be seen.
//!
//! A worker makes an execution's `running` mark durable in the journal before the action
//! starts (see `Engine::run_batch`); the store's copy is only what the API shows. Most actions
//! end within a millisecond, and writing their mark to the store just before their result costs
//! a transaction per batch and rewrites the same records. So marks wait here: those still
//! running after [`MARK_DELAY`] are written by this module's thread, and a worker whose action
//! ended first takes its marks back and writes the result alone.
//!
//! Order: the thread hands marks to the store's writer while it holds the lock, and a worker
//! takes its marks back under the same lock before it hands over results; the store's writer
//! writes in order, so a mark never lands after its result.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::journal::Journal;
use crate::model::Execution;
use crate::store::Store;

/// How long an action runs before the store shows it `running`.
pub(crate) const MARK_DELAY: Duration = Duration::from_millis(20);

/// A mark waiting: since when, the execution, and the journal segment that holds it (which
/// is not released until the store has the mark or a later status).
type Waiting = (Instant, Arc<Execution>, Option<u64>);

#[derive(Default)]
pub(crate) struct RunningMarks {
    pending: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    marks: HashMap<String, Waiting>,
    /// The writer sleeps with a deadline no later than a new mark's: an added mark needs no
    /// wake-up (marks are added in time order, each due [`MARK_DELAY`] after it). Without
    /// this, every execution at a low rate would wake the writer once for nothing.
    armed: bool,
    /// How many times the writer woke up.
    #[cfg(test)]
    passes: usize,
}

impl RunningMarks {
    /// Starts the thread that writes marks older than [`MARK_DELAY`]; it ends with the store.
    pub(crate) fn start_writer(
        self: &Arc<Self>,
        store: &Arc<Store>,
        journal: &Arc<Journal>,
    ) -> std::io::Result<()> {
        let weak_marks = Arc::downgrade(self);
        let weak_store = Arc::downgrade(store);
        let weak_journal = Arc::downgrade(journal);
        std::thread::Builder::new()
            .name("squall-marks".into())
            .spawn(move || writer(weak_marks, weak_store, weak_journal))?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Marks these executions running (in the store after [`MARK_DELAY`] unless taken back);
    /// `segment` is where the journal holds the marks of those that are not idempotent.
    pub(crate) fn add(&self, list: &[Arc<Execution>], segment: Option<u64>) {
        self.add_at(list, segment, Instant::now());
    }

    fn add_at(&self, list: &[Arc<Execution>], segment: Option<u64>, now: Instant) {
        let mut pending = self.lock();
        for e in list {
            let seg = if e.idempotent { None } else { segment };
            pending.marks.insert(e.id.clone(), (now, e.clone(), seg));
        }
        let armed = pending.armed;
        drop(pending);
        if !armed {
            self.wake.notify_one();
        }
    }

    /// A running execution with the log lines it has written so far: the waiting mark becomes
    /// this copy, or, once the mark is written, the copy goes to the store's writer (under the
    /// lock, so it lands after the mark and before the result).
    pub(crate) fn running_log(&self, e: Arc<Execution>, store: &Store) {
        let mut pending = self.lock();
        if let Some(waiting) = pending.marks.get_mut(&e.id) {
            waiting.1 = e;
            return;
        }
        store.put_executions_later(vec![e], None);
    }

    /// Takes back the marks of these executions (their results follow); a mark already written
    /// is gone from here, and its write is complete. Returns the journal segments of the marks
    /// taken back: call [`Journal::stored`] for each once the store has what follows them.
    pub(crate) fn take<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Vec<u64> {
        let mut pending = self.lock();
        ids.into_iter()
            .filter_map(|id| pending.marks.remove(id).and_then(|(_, _, seg)| seg))
            .collect()
    }
}

fn writer(marks: Weak<RunningMarks>, store: Weak<Store>, journal: Weak<Journal>) {
    loop {
        let (Some(marks), Some(store), Some(journal)) =
            (marks.upgrade(), store.upgrade(), journal.upgrade())
        else {
            return;
        };
        let mut pending = marks.lock();
        #[cfg(test)]
        {
            pending.passes += 1;
        }
        let wait = write_due(&mut pending.marks, &store, &journal, Instant::now());
        // Marks left pending wake it by their deadline; with none, a new mark must.
        pending.armed = wait.is_some();
        drop(store);
        drop(journal);
        let _unused = marks
            .wake
            .wait_timeout(pending, wait.unwrap_or(Duration::from_secs(1)));
    }
}

/// Writes the marks due at `now` (under the caller's lock: see the module's note on order);
/// returns how long until the next one is due, if any is pending.
fn write_due(
    pending: &mut HashMap<String, Waiting>,
    store: &Store,
    journal: &Arc<Journal>,
    now: Instant,
) -> Option<Duration> {
    let due: Vec<String> = pending
        .iter()
        .filter(|(_, (at, _, _))| now.saturating_duration_since(*at) >= MARK_DELAY)
        .map(|(id, _)| id.clone())
        .collect();
    if !due.is_empty() {
        let (list, segments): (Vec<Arc<Execution>>, Vec<Option<u64>>) = due
            .iter()
            .filter_map(|id| pending.remove(id).map(|(_, e, seg)| (e, seg)))
            .unzip();
        // Queued under the caller's lock, so a result queued after it is written after it.
        let journal = journal.clone();
        let after: crate::store::AfterStored = Box::new(move || {
            for seg in segments.into_iter().flatten() {
                journal.stored(seg);
            }
        });
        store.put_executions_later(list, Some(after));
    }
    pending
        .values()
        .map(|(at, _, _)| (*at + MARK_DELAY).saturating_duration_since(now))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExecutionStatus;

    fn running(idempotent: bool) -> Arc<Execution> {
        let mut e = Execution::new("core.noop", serde_json::Map::new());
        e.idempotent = idempotent;
        e.status = ExecutionStatus::Running;
        Arc::new(e)
    }

    #[test]
    fn marks_reach_the_store_after_the_delay_unless_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), None).unwrap();
        let journal = Journal::open_with_segment_size(&dir.path().join("journal"), 1).unwrap();
        let marks = RunningMarks::default();
        let (quick, slow, safe) = (running(false), running(false), running(true));
        // The journal holds the marks of actions that are not idempotent.
        let seq = journal
            .append_executions_blocking(&[quick.clone(), slow.clone()])
            .unwrap();
        let t0 = Instant::now();
        marks.add_at(&[quick.clone(), slow.clone(), safe.clone()], Some(seq), t0);

        // Nothing is due yet: nothing written, and the next is due after the delay.
        let wait = write_due(&mut marks.lock().marks, &store, &journal, t0);
        assert_eq!(wait, Some(MARK_DELAY));
        assert!(store.execution(&slow.id).unwrap().is_none());

        // The quick one ended first: its mark comes back with its journal segment.
        assert_eq!(marks.take([quick.id.as_str()]), vec![seq]);
        assert!(
            marks.take([safe.id.as_str(), "unknown"]).is_empty(),
            "idempotent: none"
        );
        marks.add_at(std::slice::from_ref(&safe), None, t0);

        let wait = write_due(
            &mut marks.lock().marks,
            &store,
            &journal,
            t0 + MARK_DELAY * 2,
        );
        assert_eq!(wait, None, "nothing left pending");
        assert!(
            store.execution(&quick.id).unwrap().is_none(),
            "taken back: never written"
        );
        for e in [&slow, &safe] {
            let stored = store
                .execution(&e.id)
                .unwrap()
                .expect("written after the delay");
            assert_eq!(stored.status, ExecutionStatus::Running);
        }
        // Written marks are gone from the waiting list: a result cannot be overtaken by them.
        assert!(marks.take([slow.id.as_str(), safe.id.as_str()]).is_empty());

        // The segment is held by the quick one's mark until its result is stored (the slow
        // one's lets it go once the store's writer has written it).
        store.settle();
        journal
            .append_executions_blocking(&[running(false)])
            .unwrap();
        assert!(!journal.releasable().contains(&seq));
        journal.stored(seq);
        assert!(journal.releasable().contains(&seq));
    }

    #[test]
    fn an_armed_writer_is_not_woken_for_each_mark() {
        fn until(what: &str, done: impl Fn() -> bool) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done() {
                assert!(Instant::now() < deadline, "timed out waiting: {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let marks = Arc::new(RunningMarks::default());
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store"), None).unwrap());
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        marks.start_writer(&store, &journal).unwrap();
        let stored = |e: &Execution| store.execution(&e.id).unwrap().is_some();
        let (a, b, c) = (running(true), running(true), running(true));
        let t_a = Instant::now();
        marks.add(std::slice::from_ref(&a), None);
        until("the writer arms for a pending mark", || marks.lock().armed);
        // Armed until `a` would have been due, it is not woken by marks that come and go
        // before they are due (a low rate of short actions: each mark is added to an empty
        // list and taken back at once).
        let passes = marks.lock().passes;
        marks.take([a.id.as_str()]);
        for _ in 0..100 {
            let quick = running(true);
            marks.add(std::slice::from_ref(&quick), None);
            marks.take([quick.id.as_str()]);
        }
        // Past that deadline (a loaded machine), the writer woke and disarmed on its own, and
        // the count says nothing.
        if t_a.elapsed() < MARK_DELAY {
            let woken = marks.lock().passes - passes;
            assert!(woken <= 1, "woken {woken} times for 100 short marks");
        }
        marks.add(&[a.clone(), b.clone()], None);
        until("both marks written", || stored(&a) && stored(&b));
        until("the writer disarms with nothing pending", || {
            !marks.lock().armed
        });
        // Disarmed: the next mark wakes it.
        marks.add(std::slice::from_ref(&c), None);
        until("the mark after a quiet spell is written", || stored(&c));
    }
}
