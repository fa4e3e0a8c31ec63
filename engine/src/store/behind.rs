//! The store's writer: the pipeline's records (new trigger instances with their enforcements
//! and executions, executions' new statuses) are handed to one thread that writes them to sled
//! a few milliseconds later, many per transaction, and an execution created and ended within
//! that time is written once, in its final state.
//!
//! sled's cost is per write and per transaction (each clones the nodes it changes and seals a
//! log buffer that its I/O threads write out), whatever the size, so the fewer the better; at
//! low rates a transaction per record would wake sled's threads for every execution. What is
//! queued here is already durable elsewhere (the journal), or follows from records that are:
//! this module only decides when sled gets it. It must never drop a record it accepted, and
//! never let a later write of a record land before an earlier one.
//!
//! Readers see queued executions at once (`Store::execution` looks here first); every other
//! read of these trees, and every write that does not come through here, first waits until
//! what was queued before it is written ([`Behind::settle`]), so the store reads as if every
//! write were immediate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sled::transaction::Transactional;
use sled::Tree;

use super::markers::TxMarkers;
use super::pages::{self, Paged, TxPages};
use super::{
    encode, ensure_entry, tx_error, ExecTx, StoreResult, T_ENF_PAGES, T_EXEC_PAGES, T_TI_PAGES,
};
use crate::model::{Execution, RuleEnforcement, TriggerInstance, TriggerInstanceStatus};

/// How long the writer lets records gather before it writes them, unless someone waits.
const LINGER: Duration = Duration::from_millis(50);

/// The writer writes at once when this many records wait.
const MAX_RECORDS: usize = 1024;

/// A trigger instance new to the store (straight from the journal), with what the rules loop
/// decided for it.
pub struct NewInstance {
    pub ti: Arc<TriggerInstance>,
    /// Final: processed or processing_failed.
    pub status: TriggerInstanceStatus,
    pub enforcements: Vec<RuleEnforcement>,
    /// The executions its enforcements requested (fresh ids).
    pub executions: Vec<Arc<Execution>>,
    /// Correlation rules' state changes its outcome made.
    pub correlation: Vec<super::CorrelationWrite>,
}

/// What runs once queued records are in the store (not yet flushed): the journal lets their
/// segment go.
pub type AfterStored = Box<dyn FnOnce() + Send>;

enum Op {
    Instances(Vec<NewInstance>),
    Executions(Vec<Arc<Execution>>),
}

struct Queued {
    op: Op,
    after: Option<AfterStored>,
}

#[derive(Default)]
struct Queue {
    ops: Vec<Queued>,
    /// Records in `ops`.
    records: usize,
    /// Records the writer took and is writing.
    writing: usize,
    /// Operations queued since the start; the next one's number.
    queued: u64,
    /// Operations written (or given up on) so far: every one numbered below this.
    written: u64,
    /// Someone waits for the queue to be written: no lingering.
    urgent: bool,
    /// The writer waits for a first operation: queueing one must wake it.
    idle: bool,
    stopped: bool,
    /// The latest queued state of each execution not yet written, with its operation's number.
    overlay: HashMap<String, (u64, Arc<Execution>)>,
}

/// The queue between the store's callers and its writer thread.
#[derive(Default)]
pub(super) struct Behind {
    queue: Mutex<Queue>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes those waiting for writes.
    written: Condvar,
}

/// The trees the writer writes (handles share sled's trees).
#[derive(Clone)]
pub(super) struct HotTrees {
    pub tis: Paged,
    pub ti_by_trigger: Tree,
    pub enfs: Paged,
    pub enf_markers: Tree,
    pub enf_by_rule: Tree,
    pub live: Tree,
    pub exec_pages: Paged,
    pub exec_by_field: Tree,
    pub exec_counts: Tree,
    pub correlations: Tree,
}

impl Behind {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        match self.queue.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn push(&self, op: Op, after: Option<AfterStored>) {
        let mut q = self.lock();
        let seq = q.queued;
        q.queued += 1;
        let executions: Vec<&Arc<Execution>> = match &op {
            Op::Instances(list) => list.iter().flat_map(|n| &n.executions).collect(),
            Op::Executions(list) => list.iter().collect(),
        };
        let mut records = executions.len();
        if let Op::Instances(list) = &op {
            records += list.len() + list.iter().map(|n| n.enforcements.len()).sum::<usize>();
        }
        for e in executions {
            q.overlay.insert(e.id.clone(), (seq, e.clone()));
        }
        q.records += records;
        q.ops.push(Queued { op, after });
        let wake = q.idle || q.records >= MAX_RECORDS;
        drop(q);
        if wake {
            self.work.notify_one();
        }
    }

    pub fn push_instances(&self, list: Vec<NewInstance>, after: Option<AfterStored>) {
        self.push(Op::Instances(list), after);
    }

    pub fn push_executions(&self, list: Vec<Arc<Execution>>, after: Option<AfterStored>) {
        self.push(Op::Executions(list), after);
    }

    /// The latest queued state of an execution not yet written.
    pub fn execution(&self, id: &str) -> Option<Arc<Execution>> {
        self.lock().overlay.get(id).map(|(_, e)| e.clone())
    }

    /// Records queued and not yet written (those being written included).
    pub fn backlog(&self) -> usize {
        let q = self.lock();
        q.records + q.writing
    }

    /// Waits until everything queued before the call is written.
    pub fn settle(&self) {
        let mut q = self.lock();
        let target = q.queued;
        if q.written >= target {
            return;
        }
        q.urgent = true;
        self.work.notify_one();
        while q.written < target && !q.stopped {
            q = match self.written.wait(q) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
    }

    /// Stops the writer once it has written everything queued.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.work.notify_one();
    }

    /// The writer thread's loop: takes what was queued (after lingering unless someone waits)
    /// and writes it; returns once stopped and drained.
    pub fn run(&self, trees: &HotTrees) {
        loop {
            let mut q = self.lock();
            while q.ops.is_empty() && !q.stopped {
                q.idle = true;
                q = match self.work.wait(q) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
            q.idle = false;
            if q.ops.is_empty() {
                // Stopped, and nothing left.
                q.written = q.queued;
                self.written.notify_all();
                return;
            }
            let deadline = Instant::now() + LINGER;
            while !q.urgent && !q.stopped && q.records < MAX_RECORDS {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                q = match self.work.wait_timeout(q, left) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
            let ops = std::mem::take(&mut q.ops);
            q.writing = q.records;
            q.records = 0;
            q.urgent = false;
            let upto = q.queued;
            drop(q);

            let ids = write(trees, ops);

            let mut q = self.lock();
            for id in ids {
                if q.overlay.get(&id).is_some_and(|(seq, _)| *seq < upto) {
                    q.overlay.remove(&id);
                }
            }
            q.written = upto;
            q.writing = 0;
            drop(q);
            self.written.notify_all();
        }
    }
}

/// Writes queued operations, in one transaction when it succeeds (else one by one, so one that
/// cannot be written does not hold back the others), then runs their `after`s; returns the ids
/// of the executions they held.
fn write(trees: &HotTrees, ops: Vec<Queued>) -> Vec<String> {
    let ids = ops
        .iter()
        .flat_map(|q| match &q.op {
            Op::Instances(list) => list
                .iter()
                .flat_map(|n| n.executions.iter().map(|e| e.id.clone()))
                .collect::<Vec<_>>(),
            Op::Executions(list) => list.iter().map(|e| e.id.clone()).collect(),
        })
        .collect();
    let all: Vec<&Op> = ops.iter().map(|q| &q.op).collect();
    match trees.apply(&all) {
        Ok(()) => {
            for q in ops {
                if let Some(after) = q.after {
                    after();
                }
            }
        }
        Err(e) if ops.len() == 1 => {
            // Its records stay in the journal, which puts them back at the next start.
            tracing::error!(error = %e, "cannot write the pipeline's records to the store");
        }
        Err(_) => {
            for q in ops {
                match trees.apply(&[&q.op]) {
                    Ok(()) => {
                        if let Some(after) = q.after {
                            after();
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot write the pipeline's records to the store")
                    }
                }
            }
        }
    }
    ids
}

impl HotTrees {
    /// Writes operations in order in one transaction: each execution once, in the latest
    /// state they give it; instances and enforcements into their pages, each page written
    /// once.
    fn apply(&self, ops: &[&Op]) -> StoreResult<()> {
        /// An execution's latest state, and whether the store cannot have it yet.
        struct Latest<'a> {
            e: &'a Execution,
            new: bool,
        }
        let mut instances = Vec::new();
        let mut enforcements: Vec<&RuleEnforcement> = Vec::new();
        let mut latest: HashMap<&str, Latest<'_>> = HashMap::new();
        for op in ops {
            match op {
                Op::Instances(list) => {
                    for n in list {
                        instances.push(n);
                        enforcements.extend(&n.enforcements);
                        for e in &n.executions {
                            latest.insert(&e.id, Latest { e, new: true });
                        }
                    }
                }
                Op::Executions(list) => {
                    for e in list {
                        latest
                            .entry(&e.id)
                            .and_modify(|l| l.e = e)
                            .or_insert(Latest { e, new: false });
                    }
                }
            }
        }
        let instances_with_changes: Vec<&NewInstance> = instances
            .iter()
            .copied()
            .filter(|n| !n.correlation.is_empty())
            .collect();
        let instances = instances
            .into_iter()
            .map(|n| {
                let bytes = encode(T_TI_PAGES, &n.ti.id, &n.ti.with_status(n.status))?;
                Ok((&*n.ti, bytes))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let enforcements = enforcements
            .into_iter()
            .map(|enf| Ok((enf, encode(T_ENF_PAGES, &enf.id, enf)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let executions = latest
            .into_values()
            .map(|l| Ok((l.e, l.new, encode(T_EXEC_PAGES, &l.e.id, l.e)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        (
            &self.tis.tree,
            &self.ti_by_trigger,
            &self.enfs.tree,
            &self.enf_markers,
            &self.enf_by_rule,
            &self.live,
            &self.exec_pages.tree,
            &self.exec_by_field,
            &self.exec_counts,
            &self.correlations,
        )
            .transaction(
                |(
                    tis,
                    by_trigger,
                    enfs,
                    marker_tree,
                    by_rule,
                    live,
                    exec_pages,
                    by_field,
                    counts,
                    correlations,
                )| {
                    // Built afresh on each attempt: sled reruns this closure on conflict.
                    let mut ti_pages = TxPages::new(tis, T_TI_PAGES);
                    let mut enf_pages = TxPages::new(enfs, T_ENF_PAGES);
                    let mut markers = TxMarkers::new(marker_tree);
                    let mut indexed: HashSet<Vec<u8>> = HashSet::new();
                    let mut rule_indexed: HashSet<Vec<u8>> = HashSet::new();
                    for (ti, bytes) in &instances {
                        ti_pages.put_new(&ti.id, &ti.trigger, bytes)?;
                        let entry =
                            pages::index_key(ti.trigger.as_bytes(), pages::page_key(&ti.id));
                        if indexed.insert(entry.clone()) {
                            ensure_entry(by_trigger, entry)?;
                        }
                    }
                    for (enf, bytes) in &enforcements {
                        // New instances: nothing was enforced for them before.
                        markers.add(&enf.trigger_instance_id, &enf.rule_ref, &enf.id)?;
                        enf_pages.put_new(&enf.id, &enf.rule_ref, bytes)?;
                        let entry =
                            pages::index_key(enf.rule_ref.as_bytes(), pages::page_key(&enf.id));
                        if rule_indexed.insert(entry.clone()) {
                            ensure_entry(by_rule, entry)?;
                        }
                    }
                    let tx = ExecTx::new(live, exec_pages, by_field, counts);
                    for (e, new, bytes) in &executions {
                        if *new {
                            tx.put_new(e, bytes)?;
                        } else {
                            tx.put(e, bytes)?;
                        }
                    }
                    for n in &instances_with_changes {
                        super::write_correlation(correlations, &n.correlation)?;
                    }
                    ti_pages.write()?;
                    enf_pages.write()?;
                    markers.write()?;
                    tx.finish()?;
                    Ok(())
                },
            )
            .map_err(tx_error)
    }
}
