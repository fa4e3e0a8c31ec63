//! Work that waits, on one thread: executions held back by a concurrency policy, tried again
//! every moment, retries waiting out their policy's delay, and running actions' log lines held
//! back between two writes. (A thread each would mean thousands of them under a burst held
//! back by a threshold of one.)

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::{Engine, WorkItem};
use crate::model::ExecutionStatus;

pub(crate) enum Job {
    /// Back to the work queue (a claim found the action at its threshold).
    Requeue(Box<WorkItem>),
    /// Dispatched as it then stands, if still waiting (a retry whose delay is over).
    Dispatch(String),
    /// Anything else that waits (a running action's held-back log lines).
    Run(Box<dyn FnOnce() + Send>),
}

#[derive(Default)]
pub(crate) struct Later {
    jobs: Mutex<Jobs>,
    wake: Condvar,
}

#[derive(Default)]
struct Jobs {
    due: BTreeMap<(Instant, u64), Job>,
    next_seq: u64,
}

impl Later {
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        match self.jobs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Runs `job` at `at`.
    pub(crate) fn add(&self, at: Instant, job: Job) {
        let mut jobs = self.lock();
        let seq = jobs.next_seq;
        jobs.next_seq += 1;
        let sooner = jobs.due.keys().next().is_none_or(|(first, _)| at < *first);
        jobs.due.insert((at, seq), job);
        drop(jobs);
        if sooner {
            self.wake.notify_one();
        }
    }

    /// Starts the thread that runs jobs when they are due; it ends with the engine.
    pub(crate) fn start(self: &Arc<Self>, engine: Weak<Engine>) -> std::io::Result<()> {
        let later = self.clone();
        std::thread::Builder::new()
            .name("squall-later".into())
            .spawn(move || later.run(engine))?;
        Ok(())
    }

    fn run(&self, engine: Weak<Engine>) {
        loop {
            let due = {
                let mut jobs = self.lock();
                loop {
                    let now = Instant::now();
                    let wait = match jobs.due.keys().next() {
                        Some((at, _)) if *at <= now => break,
                        Some((at, _)) => (*at - now).min(Duration::from_secs(1)),
                        None => Duration::from_secs(1),
                    };
                    jobs = match self.wake.wait_timeout(jobs, wait) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                    if engine.strong_count() == 0 {
                        return;
                    }
                }
                let now = Instant::now();
                let mut due = Vec::new();
                while let Some(entry) = jobs.due.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    due.push(entry.remove());
                }
                due
            };
            let Some(engine) = engine.upgrade() else {
                return;
            };
            for job in due {
                match job {
                    Job::Requeue(item) => engine.queue.push(*item),
                    Job::Run(run) => run(),
                    Job::Dispatch(id) => match engine.store.execution(&id) {
                        Ok(Some(e)) if e.status == ExecutionStatus::Delayed => {
                            engine.dispatch(&engine.loaded(), &e, None);
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::error!(execution = %id, error = %err, "cannot read a waiting execution")
                        }
                    },
                }
            }
        }
    }
}
