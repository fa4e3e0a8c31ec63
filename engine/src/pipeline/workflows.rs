//! The workflow driver: one thread runs every workflow's steps, so a workflow's state is never
//! advanced by two threads at once and no lock is held across the engine's own calls.
//!
//! Events (a workflow to start, a task's execution that ended, pause/resume/cancel/re-run
//! requests) are taken in batches: every event of a batch is folded into the conductors kept in
//! memory, then the changed workflows and the child executions they request are written in one
//! transaction and made durable by one flush, and only then are children dispatched, the stream
//! told and callers answered. A batch costs one flush however many workflows and items it
//! advanced, so cost per item stays flat as with-items lists grow.
//!
//! The conductors in memory are the truth while squall runs (this thread is the only writer of
//! a running workflow's record); after a restart they are read back from the store, and
//! [`Engine::reconcile_workflows`] feeds in the results of tasks that ended just before the
//! crash.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::{Engine, EngineError, Loaded};
use crate::model::{Execution, ExecutionStatus};
use crate::store::ExecutionFilter;
use crate::workflow::{Conductor, OutcomeStatus, TaskOutcome, Workflow, WorkflowStatus};

/// The most events folded into one step.
const MAX_EVENTS_PER_STEP: usize = 4096;

/// What an operator asks of a running workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    Resume,
    Cancel,
}

impl Control {
    fn verb(self) -> &'static str {
        match self {
            Control::Pause => "paused",
            Control::Resume => "resumed",
            Control::Cancel => "canceled",
        }
    }
}

type Reply = oneshot::Sender<Result<Execution, EngineError>>;

/// An event for the workflow driver.
pub(crate) enum WorkflowEvent {
    /// A workflow execution to start (it is stored, scheduled, without state yet).
    Start(Execution),
    /// A workflow execution with its state already (a re-run from failed tasks).
    Adopt(Execution, Box<Conductor>, Option<Reply>),
    /// A task's execution reached a final status, durably.
    TaskEnded(Execution),
    Control(String, Control, Option<Reply>),
    /// A subworkflow paused: its parent may now be paused too.
    ChildPaused(String),
    /// A task's execution is waiting for an answer (an inquiry), or a subworkflow paused
    /// because of one: the workflow pauses once nothing else of it runs.
    ChildPending(String),
}

/// A running workflow: its record and its conductor.
struct Active {
    exec: Execution,
    conductor: Conductor,
}

/// What one step has to write and do once it is durable.
#[derive(Default)]
struct Step {
    touched: Vec<String>,
    touched_set: HashSet<String>,
    children: Vec<(Execution, Option<u64>)>,
    /// Action executions of canceled workflows, canceled once the step is durable.
    cancel: Vec<String>,
    replies: Vec<(String, Reply)>,
    /// Failures to answer without writing anything.
    refusals: Vec<(Reply, EngineError)>,
    /// Events the step itself raised (cascades to subworkflows), handled in the same step.
    follow: VecDeque<WorkflowEvent>,
}

impl Step {
    fn touch(&mut self, id: &str) {
        if self.touched_set.insert(id.to_string()) {
            self.touched.push(id.to_string());
        }
    }
}

impl Engine {
    /// Hands an event to the workflow driver.
    pub(crate) fn workflow_event(&self, event: WorkflowEvent) {
        // The driver holds the receiver as long as the engine lives.
        let _ = self.wf_tx.send(event);
    }

    /// Pauses, resumes or cancels a workflow execution (and its subworkflows).
    pub async fn control_workflow(
        &self,
        id: &str,
        control: Control,
    ) -> Result<Execution, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.workflow_event(WorkflowEvent::Control(id.to_string(), control, Some(tx)));
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Runs a failed workflow again from its failed tasks, as a new execution that keeps the
    /// old one's context and finished tasks.
    pub async fn rerun_workflow(
        &self,
        old: &Execution,
        tasks: &[String],
        reset: &[String],
    ) -> Result<Execution, EngineError> {
        if self.is_stopping() {
            return Err(EngineError::ShuttingDown);
        }
        if old.workflow.is_none() {
            return Err(EngineError::NotWorkflow(old.id.clone()));
        }
        let mut conductor = self
            .conductor_of(old)
            .map_err(|e| EngineError::Workflow(format!("its saved state cannot be read: {e}")))?;
        conductor
            .rerun(tasks, reset)
            .map_err(|e| EngineError::Workflow(e.to_string()))?;
        // Saved anew under the new execution.
        conductor.mark_all_parts();
        let mut e = Execution::new(&old.action, old.parameters.clone());
        e.idempotent = old.idempotent;
        e.user = old.user.clone();
        e.rerun_of = Some(old.id.clone());
        e.reason = Some(format!(
            "re-run of {} from task(s) {}",
            old.id,
            if tasks.is_empty() {
                "that failed".to_string()
            } else {
                tasks.join(", ")
            }
        ));
        e.status = ExecutionStatus::Running;
        let (tx, rx) = oneshot::channel();
        self.workflow_event(WorkflowEvent::Adopt(e, Box::new(conductor), Some(tx)));
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// The driver's loop; runs on its own thread for as long as the process.
    pub(crate) fn workflow_loop(self: Arc<Self>, rx: crossbeam_channel::Receiver<WorkflowEvent>) {
        let mut active: HashMap<String, Active> = HashMap::new();
        while let Ok(first) = rx.recv() {
            let loaded = self.loaded();
            let mut step = Step::default();
            let mut handled = 0usize;
            step.follow.push_back(first);
            loop {
                while let Some(event) = step.follow.pop_front() {
                    self.handle(&loaded, &mut active, event, &mut step);
                    handled += 1;
                }
                if handled >= MAX_EVENTS_PER_STEP {
                    break;
                }
                match rx.try_recv() {
                    Ok(event) => step.follow.push_back(event),
                    Err(_) => break,
                }
            }
            self.commit(&loaded, &mut active, step);
        }
    }

    fn handle(
        &self,
        loaded: &Loaded,
        active: &mut HashMap<String, Active>,
        event: WorkflowEvent,
        step: &mut Step,
    ) {
        match event {
            WorkflowEvent::Start(e) => self.start_workflow(loaded, active, e, step),
            WorkflowEvent::Adopt(e, conductor, reply) => {
                let id = e.id.clone();
                active.insert(
                    id.clone(),
                    Active {
                        exec: e,
                        conductor: *conductor,
                    },
                );
                self.advance(loaded, active, &id, step);
                if let Some(reply) = reply {
                    step.replies.push((id, reply));
                }
            }
            WorkflowEvent::TaskEnded(task) => self.task_ended(loaded, active, task, step),
            WorkflowEvent::Control(id, control, reply) => {
                match self.control(loaded, active, &id, control, step) {
                    Ok(()) => {
                        if let Some(reply) = reply {
                            step.replies.push((id, reply));
                        }
                    }
                    Err(err) => {
                        if let Some(reply) = reply {
                            step.refusals.push((reply, err));
                        }
                    }
                }
            }
            WorkflowEvent::ChildPaused(parent) => {
                if self.load(active, &parent) {
                    self.check_paused(active, &parent, step);
                }
            }
            WorkflowEvent::ChildPending(parent) => {
                if self.load(active, &parent) {
                    if let Ok(mut w) = self.waiting.lock() {
                        w.insert(parent.clone());
                    }
                    self.pause_if_only_waiting(active, &parent, step);
                }
            }
        }
    }

    /// Orquesta pauses a workflow whose only active tasks wait for answers (inquiries, or
    /// subworkflows paused for one); other branches carry on until then. Its parent is told,
    /// for the same check.
    fn pause_if_only_waiting(
        &self,
        active: &mut HashMap<String, Active>,
        id: &str,
        step: &mut Step,
    ) {
        let Some(a) = active.get(id) else {
            return;
        };
        if a.conductor.status() != WorkflowStatus::Running {
            return;
        }
        let outstanding = a.conductor.outstanding().len();
        let requested_now = step
            .children
            .iter()
            .any(|(c, _)| c.parent.as_deref() == Some(id));
        if outstanding == 0 || requested_now {
            return;
        }
        let open = self.open_children(id);
        let waiting = |c: &Execution| {
            c.status == ExecutionStatus::Pending
                || active
                    .get(&c.id)
                    .is_some_and(|a| a.conductor.status() == WorkflowStatus::Paused)
        };
        if !open.iter().any(|c| c.status == ExecutionStatus::Pending)
            && !open.iter().any(|c| active.contains_key(&c.id))
        {
            // Nothing of it waits any more.
            if let Ok(mut w) = self.waiting.lock() {
                w.remove(id);
            }
            return;
        }
        if open.len() != outstanding || !open.iter().all(waiting) {
            return;
        }
        let Some(a) = active.get_mut(id) else {
            return;
        };
        if a.conductor.pause().is_err() {
            return;
        }
        tracing::info!(workflow = %id, "paused: its tasks wait for responses to inquiries");
        self.check_paused(active, id, step);
        let parent = active.get(id).and_then(|a| {
            (a.conductor.status() == WorkflowStatus::Paused)
                .then(|| a.exec.parent.clone())
                .flatten()
        });
        if let Some(parent) = parent {
            step.follow.push_back(WorkflowEvent::ChildPending(parent));
        }
    }

    /// A workflow's conductor as saved: its record's state and the parts kept beside it.
    fn conductor_of(&self, e: &Execution) -> Result<Conductor, String> {
        let state = e.workflow.clone().ok_or("no saved state")?;
        let mut conductor: Conductor =
            serde_json::from_value(state).map_err(|err| err.to_string())?;
        let parts = self
            .store
            .workflow_parts(&e.id)
            .map_err(|err| err.to_string())?;
        conductor.restore_parts(parts)?;
        conductor.set_kv(self.workflow_kv());
        Ok(conductor)
    }

    /// The key-value store as workflows' `st2kv()` reads it.
    fn workflow_kv(&self) -> Arc<dyn squall_rules::KeyValueLookup> {
        Arc::new(WorkflowKv(self.store.clone()))
    }

    /// Makes sure the workflow is in memory; false when it is not a running workflow.
    fn load(&self, active: &mut HashMap<String, Active>, id: &str) -> bool {
        if active.contains_key(id) {
            return true;
        }
        let exec = match self.store.execution(id) {
            Ok(Some(e)) if !e.status.is_terminal() => e,
            Ok(_) => return false,
            Err(err) => {
                tracing::error!(workflow = %id, error = %err, "cannot read a workflow");
                return false;
            }
        };
        if exec.workflow.is_none() {
            return false;
        }
        match self.conductor_of(&exec) {
            Ok(conductor) => {
                active.insert(id.to_string(), Active { exec, conductor });
                true
            }
            Err(err) => {
                tracing::error!(workflow = %id, error = %err, "the workflow's saved state cannot be read");
                false
            }
        }
    }

    fn start_workflow(
        &self,
        loaded: &Loaded,
        active: &mut HashMap<String, Active>,
        e: Execution,
        step: &mut Step,
    ) {
        // Canceled before it started, or started already (a duplicate after a restart).
        match self.store.execution(&e.id) {
            Ok(Some(stored)) if stored.status.is_terminal() || stored.workflow.is_some() => return,
            Ok(_) => {}
            Err(err) => {
                tracing::error!(workflow = %e.id, error = %err, "cannot read a workflow to start");
                return;
            }
        }
        if active.contains_key(&e.id) {
            return;
        }
        let conductor = loaded
            .catalog
            .action(&e.action)
            .and_then(|a| Some((a.meta.runner_type, a.source.clone()?)))
            .ok_or_else(|| format!("workflow action '{}' is no longer loaded", e.action))
            .and_then(|(runner, text)| {
                Workflow::parse_for(runner, &text).map_err(|errs| {
                    errs.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            })
            .and_then(|wf| {
                Conductor::with_context(
                    wf,
                    Value::Object(e.parameters.clone()),
                    Some(self.workflow_kv()),
                    Some(st2_context(&e)),
                )
                .map_err(|err| err.to_string())
            });
        let mut e = e;
        match conductor {
            Ok(conductor) => {
                e.status = ExecutionStatus::Running;
                let id = e.id.clone();
                active.insert(id.clone(), Active { exec: e, conductor });
                self.advance(loaded, active, &id, step);
            }
            Err(message) => {
                let result =
                    json!({"output": null, "errors": [{"type": "error", "message": message}]});
                // Rare (a broken workflow file): written on its own, outside the step.
                self.finish(loaded, &mut e, ExecutionStatus::Failed, result, Vec::new());
            }
        }
    }

    fn task_ended(
        &self,
        loaded: &Loaded,
        active: &mut HashMap<String, Active>,
        task: Execution,
        step: &mut Step,
    ) {
        let (Some(parent_id), Some(name)) = (task.parent.clone(), task.task.clone()) else {
            return;
        };
        if !self.load(active, &parent_id) {
            return;
        }
        let Some(a) = active.get_mut(&parent_id) else {
            return;
        };
        let status = if task.status == ExecutionStatus::Succeeded {
            OutcomeStatus::Succeeded
        } else {
            OutcomeStatus::Failed
        };
        let attempt = task.attempt.saturating_sub(1);
        let expected = a.conductor.is_outstanding(&name, task.item, attempt);
        if !expected {
            // A result folded in already (reported again after a restart).
            tracing::debug!(workflow = %parent_id, task = %name, "task result not expected");
            return;
        }
        // A task canceled on its own cancels its workflow, as in Orquesta.
        let cancel_all = task.status == ExecutionStatus::Canceled && a.conductor.cancel().is_ok();
        let outcome = TaskOutcome {
            status,
            result: task.result.clone(),
        };
        if let Err(err) = a.conductor.on_task_result(&name, task.item, outcome) {
            tracing::warn!(workflow = %parent_id, task = %name, error = %err, "task result refused");
            return;
        }
        if cancel_all {
            self.cancel_children(active, &parent_id, step);
        }
        self.advance(loaded, active, &parent_id, step);
        self.check_paused(active, &parent_id, step);
        let waits = self
            .waiting
            .lock()
            .is_ok_and(|w| w.contains(parent_id.as_str()));
        if waits {
            self.pause_if_only_waiting(active, &parent_id, step);
        }
    }

    fn control(
        &self,
        loaded: &Loaded,
        active: &mut HashMap<String, Active>,
        id: &str,
        control: Control,
        step: &mut Step,
    ) -> Result<(), EngineError> {
        if !self.load(active, id) {
            let e = self
                .store
                .execution(id)?
                .ok_or_else(|| EngineError::NoExecution(id.to_string()))?;
            let is_workflow = loaded
                .catalog
                .action(&e.action)
                .is_some_and(|a| a.meta.runner_type.is_workflow());
            if !is_workflow {
                return Err(EngineError::NotWorkflow(id.to_string()));
            }
            if control == Control::Cancel && !e.status.is_terminal() {
                // Requested but not started yet: it never will.
                let mut e = e;
                let result = json!({"output": null});
                self.finish(
                    loaded,
                    &mut e,
                    ExecutionStatus::Canceled,
                    result,
                    Vec::new(),
                );
                return Ok(());
            }
            return Err(EngineError::Workflow(format!(
                "a {} workflow cannot be {}",
                e.status.as_str(),
                control.verb()
            )));
        }
        let Some(a) = active.get_mut(id) else {
            return Err(EngineError::NoExecution(id.to_string()));
        };
        let result = match control {
            Control::Pause => a.conductor.pause(),
            Control::Resume => a.conductor.resume(),
            Control::Cancel => a.conductor.cancel(),
        };
        result.map_err(|e| EngineError::Workflow(e.to_string()))?;
        match control {
            Control::Pause | Control::Resume => {
                for child in self.open_children(id) {
                    if child.workflow.is_some() || active.contains_key(&child.id) {
                        step.follow
                            .push_back(WorkflowEvent::Control(child.id, control, None));
                    }
                }
            }
            Control::Cancel => self.cancel_children(active, id, step),
        }
        self.advance(loaded, active, id, step);
        self.check_paused(active, id, step);
        // Resumed while one of its own questions is still unanswered: it waits again, as
        // Orquesta's does. (A subworkflow paused for one is being resumed in this same step;
        // it pauses again on its own, and tells this workflow.)
        let waits = control == Control::Resume
            && self.waiting.lock().is_ok_and(|w| w.contains(id))
            && self
                .open_children(id)
                .iter()
                .any(|c| c.status == ExecutionStatus::Pending);
        if waits {
            self.pause_if_only_waiting(active, id, step);
        }
        Ok(())
    }

    /// The workflow's children that have not ended.
    fn open_children(&self, id: &str) -> Vec<Execution> {
        let filter = ExecutionFilter {
            parent: Some(id.to_string()),
            ..ExecutionFilter::default()
        };
        match self.store.list_executions(&filter, usize::MAX, 0) {
            Ok(list) => list
                .into_iter()
                .filter(|e| !e.status.is_terminal())
                .collect(),
            Err(err) => {
                tracing::error!(workflow = %id, error = %err, "cannot list a workflow's tasks");
                Vec::new()
            }
        }
    }

    /// Cancels what a canceled workflow still waits for: subworkflows in this step, actions
    /// once the step is durable.
    fn cancel_children(&self, active: &HashMap<String, Active>, id: &str, step: &mut Step) {
        for child in self.open_children(id) {
            if child.workflow.is_some() || active.contains_key(&child.id) {
                step.follow
                    .push_back(WorkflowEvent::Control(child.id, Control::Cancel, None));
            } else {
                step.cancel.push(child.id);
            }
        }
    }

    /// A pausing workflow whose open children are all paused subworkflows or pending inquiries
    /// is paused; its parent, if any, is told.
    fn check_paused(&self, active: &mut HashMap<String, Active>, id: &str, step: &mut Step) {
        let pausing = active
            .get(id)
            .is_some_and(|a| a.conductor.status() == WorkflowStatus::Pausing);
        if pausing {
            // An inquiry waiting for its answer holds its workflow as a paused subworkflow does.
            let all_paused = self.open_children(id).iter().all(|c| {
                c.status == ExecutionStatus::Pending
                    || active
                        .get(&c.id)
                        .is_some_and(|a| a.conductor.status() == WorkflowStatus::Paused)
            });
            if all_paused {
                if let Some(a) = active.get_mut(id) {
                    a.conductor.mark_paused();
                }
            }
        }
        let Some(a) = active.get_mut(id) else {
            return;
        };
        let status = exec_status(a.conductor.status());
        if status != a.exec.status {
            a.exec.status = status;
            step.touch(id);
        }
        if status == ExecutionStatus::Paused {
            if let Some(parent) = a.exec.parent.clone() {
                step.follow.push_back(WorkflowEvent::ChildPaused(parent));
            }
        }
    }

    /// Requests what the conductor asks for and records the workflow's new status.
    fn advance(
        &self,
        loaded: &Loaded,
        active: &mut HashMap<String, Active>,
        id: &str,
        step: &mut Step,
    ) {
        let Some(a) = active.get_mut(id) else {
            return;
        };
        loop {
            let requests = a.conductor.next_requests();
            if requests.is_empty() {
                break;
            }
            for req in requests {
                match self.new_execution(loaded, &req.action, req.input.clone()) {
                    Ok(mut child) => {
                        child.parent = Some(a.exec.id.clone());
                        child.task = Some(req.task.clone());
                        child.item = req.item;
                        child.user = a.exec.user.clone();
                        child.attempt = req.attempt + 1;
                        child.notify = req.notify.clone();
                        if req.delay.is_some_and(|d| d > 0) {
                            child.status = ExecutionStatus::Delayed;
                        }
                        step.children.push((child, req.delay));
                    }
                    Err(err) => {
                        // The task fails without running: the workflow follows its failure path.
                        let result = match &err {
                            EngineError::InvalidParameters { errors, .. } => {
                                json!({"error": err.to_string(), "parameters": errors.iter().map(ToString::to_string).collect::<Vec<_>>()})
                            }
                            other => json!({"error": other.to_string()}),
                        };
                        let outcome = TaskOutcome {
                            status: OutcomeStatus::Failed,
                            result,
                        };
                        if let Err(e) = a.conductor.on_task_result(&req.task, req.item, outcome) {
                            tracing::error!(workflow = %id, error = %e, "the workflow refused a task's failure");
                        }
                    }
                }
            }
        }
        let status = a.conductor.status();
        let exec_status = exec_status(status);
        if status.is_terminal() && !a.exec.status.is_terminal() {
            a.exec.result = a.conductor.output();
            a.exec.end_timestamp = Some(Utc::now());
            self.metrics
                .execution_finished(exec_status, a.exec.elapsed_seconds().unwrap_or(0.0));
        }
        a.exec.status = exec_status;
        step.touch(id);
    }

    /// Writes the step in one transaction, makes it durable, then acts on it.
    fn commit(self: &Arc<Self>, loaded: &Loaded, active: &mut HashMap<String, Active>, step: Step) {
        let Step {
            touched,
            children,
            cancel,
            replies,
            refusals,
            ..
        } = step;
        for (reply, err) in refusals {
            let _ = reply.send(Err(err));
        }
        let mut batch = Vec::with_capacity(touched.len() + children.len());
        let mut parts = Vec::new();
        for id in &touched {
            if let Some(a) = active.get_mut(id) {
                a.exec.workflow = serde_json::to_value(&a.conductor).ok();
                batch.push(a.exec.clone());
                parts.extend(
                    a.conductor
                        .take_parts()
                        .into_iter()
                        .map(|(key, bytes)| (id.clone(), key, bytes)),
                );
            }
        }
        batch.extend(children.iter().map(|(c, _)| c.clone()));
        if !batch.is_empty() {
            if let Err(err) = self.store.put_workflow_step(&batch, &parts) {
                tracing::error!(error = %err, "cannot save a workflow step");
                for (_, reply) in replies {
                    let _ = reply.send(Err(EngineError::Durability(err.to_string())));
                }
                return;
            }
            self.durable_blocking();
        }
        let mut ended = Vec::new();
        for id in &touched {
            let Some(a) = active.get(id) else {
                continue;
            };
            if a.exec.status.is_terminal() {
                ended.push(id.clone());
            } else {
                self.publish_execution("st2.execution__update", loaded, &a.exec);
            }
        }
        for (id, reply) in replies {
            let e = active.get(&id).map(|a| a.exec.clone());
            let e = match e {
                Some(e) => Ok(e),
                None => self
                    .store
                    .execution(&id)
                    .map_err(EngineError::from)
                    .and_then(|e| e.ok_or(EngineError::NoExecution(id))),
            };
            let _ = reply.send(e);
        }
        for id in ended {
            if let Some(a) = active.remove(&id) {
                self.announce_final(loaded, &a.exec);
            }
        }
        for (child, delay) in children {
            self.publish_execution("st2.execution__create", loaded, &child);
            match delay.filter(|d| *d > 0) {
                Some(seconds) => {
                    let engine = self.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(seconds));
                        let loaded = engine.loaded();
                        engine.dispatch(&loaded, &child, None);
                    });
                }
                None => self.schedule(loaded, child, None),
            }
        }
        for id in cancel {
            if let Err(err) = self.cancel_action_blocking(loaded, &id) {
                tracing::error!(execution = %id, error = %err, "cannot cancel a canceled workflow's task");
            }
        }
    }

    /// After a restart: tasks whose executions ended just before the crash, before their
    /// workflow could take their results, are reported again. Results a workflow has folded in
    /// already are refused by its conductor, so a task is never counted twice.
    pub(crate) fn reconcile_workflows(&self, workflows: &[Execution], reported: &HashSet<String>) {
        for wf in workflows {
            let conductor = match self.conductor_of(wf) {
                Ok(c) => c,
                Err(err) => {
                    tracing::error!(workflow = %wf.id, error = %err, "the workflow's saved state cannot be read");
                    continue;
                }
            };
            let outstanding = conductor.outstanding();
            if outstanding.is_empty() {
                continue;
            }
            let filter = ExecutionFilter {
                parent: Some(wf.id.clone()),
                ..ExecutionFilter::default()
            };
            let children = match self.store.list_executions(&filter, usize::MAX, 0) {
                Ok(c) => c,
                Err(err) => {
                    tracing::error!(workflow = %wf.id, error = %err, "cannot list a workflow's tasks");
                    continue;
                }
            };
            for (task, item, attempt) in outstanding {
                let child = children.iter().find(|c| {
                    c.task.as_deref() == Some(task.as_str())
                        && c.item == item
                        && c.attempt == attempt + 1
                });
                match child {
                    Some(c) if c.status.is_terminal() && !reported.contains(&c.id) => {
                        self.workflow_event(WorkflowEvent::TaskEnded(c.clone()));
                    }
                    Some(_) => {}
                    None => {
                        tracing::error!(workflow = %wf.id, task = %task, "a task the workflow waits for has no execution");
                    }
                }
            }
        }
    }
}

/// `ctx().st2`, with st2's keys (st2's orquesta runner tests, `test_context.py`). squall keeps
/// one record per workflow run, so `workflow_execution_id` is the execution's id too;
/// `api_url` is the address `squall run` listens on.
fn st2_context(e: &Execution) -> Value {
    // st2's `api_url` is its API's `/v1` root (`http://host:9101/v1`); squall serves the
    // same paths there beside `/api/v1`, so workflows that build URLs from it reach squall.
    let api_url = crate::server::api_url();
    let api_url = match api_url.strip_suffix("/api/v1") {
        Some(base) => format!("{base}/v1"),
        None => api_url,
    };
    json!({
        "action_execution_id": e.id,
        "workflow_execution_id": e.id,
        "api_url": api_url,
        "user": e.user,
        "pack": e.action.split('.').next().unwrap_or_default(),
        "action": e.action,
        "runner": "orquesta",
    })
}

/// The key-value store as workflows' `st2kv()` reads it: clear text by default, and a
/// secret's stored ciphertext when asked without `decrypt=true`, as st2 gives it.
struct WorkflowKv(Arc<crate::store::Store>);

impl squall_rules::KeyValueLookup for WorkflowKv {
    fn get(&self, name: &str) -> Option<String> {
        self.get_stored(name, true)
    }

    fn get_stored(&self, name: &str, decrypt: bool) -> Option<String> {
        match self.0.kv_get(name, decrypt) {
            Ok(pair) => pair.map(|p| p.value),
            Err(e) => {
                tracing::warn!(key = name, error = %e, "key-value lookup failed");
                None
            }
        }
    }
}

fn exec_status(status: WorkflowStatus) -> ExecutionStatus {
    match status {
        WorkflowStatus::Running => ExecutionStatus::Running,
        WorkflowStatus::Pausing => ExecutionStatus::Pausing,
        WorkflowStatus::Paused => ExecutionStatus::Paused,
        WorkflowStatus::Canceling => ExecutionStatus::Canceling,
        WorkflowStatus::Canceled => ExecutionStatus::Canceled,
        WorkflowStatus::Succeeded => ExecutionStatus::Succeeded,
        WorkflowStatus::Failed => ExecutionStatus::Failed,
    }
}
