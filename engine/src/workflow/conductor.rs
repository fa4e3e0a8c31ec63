//! The workflow conductor: a deterministic state machine that says which action executions a
//! workflow needs next and folds their results back in, with Orquesta's semantics for
//! transitions, publish, join, with-items, retry, engine commands and fail-fast.
//!
//! The whole [`Conductor`] is `Serialize + Deserialize` and holds only plain data (the parsed
//! workflow, the context, the task runs), so the engine can persist it after every step and
//! resume it after a crash. It must never do I/O, read a clock or start anything itself: the
//! caller runs what [`Conductor::next_requests`] returns and reports back through
//! [`Conductor::on_task_result`].
//!
//! Choices where Orquesta is silent or where squall is simpler (stated so operators know):
//! - One workflow context: a publish is visible to every task started after it, not only to
//!   the branch that published it (Orquesta keeps per-branch contexts merged at joins).
//! - A result reported for a task that has several runs in flight (a task reached twice without
//!   `join`) is matched to the oldest one.
//! - Retry applies per action execution: for with-items, each item is retried on its own.
//! - A transition that commands `fail` still starts the tasks listed with it (Orquesta's own
//!   example logs the error, then fails); after that, nothing new starts.
//! - Routes (Orquesta's splits, see `Conductor::routes`) tell the runs of a task apart for
//!   `task(name)` and errors; the context stays the one shared context.
//! - A join that can no longer be satisfied (an inbound task took another path) simply never
//!   runs; it does not fail the workflow by itself.
//!
//! An ActionChain ([`super::chain`]) runs on the same machine: its nodes are tasks whose
//! transitions are their `on-success` and `on-failure` routes, so a failure with a route is
//! handled and the chain ends with its last node's status, as st2's runner does. What differs
//! is kept apart in a `ChainRun`: the parameters (any the action declares, not a declared
//! input), the names its templates see (`Conductor::chain_names`, rendered to text by
//! [`expr::render`]), the published variables and st2's result shape
//! (`Conductor::chain_output`).
//!
//! `task(name)` and `task()` read each task's state entry from the conductor (see
//! [`TaskStates`]); nothing of it is stored twice.
//!
//! Pause, resume, cancel and re-run, as Orquesta: [`Conductor::pause`] starts nothing new and
//! the workflow is `paused` once no execution is outstanding (results that arrive meanwhile are
//! folded in, and what they reach waits); [`Conductor::resume`] carries on. [`Conductor::cancel`]
//! drops what was reached but not started, lets outstanding executions end (the engine cancels
//! them) without following their transitions, and ends `canceled`. [`Conductor::rerun`] turns a
//! failed workflow back into a running one from its failed tasks (for with-items, the failed
//! items, or every item of the tasks named in `reset`), keeping the context and every task that
//! succeeded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use squall_rules::template::KeyValueLookup;

use super::expr::{self, Scope, TaskStates};
use super::model::{Count, Dialect, Join, Workflow};

/// Bound on task starts in one `next_requests` call (see there).
const MAX_STARTS_PER_CALL: usize = 100_000;

/// With-items runs over more items than this keep their items and each item's state out of
/// the conductor's own serialized form, as separate parts (see [`Conductor::take_parts`]), so
/// that saving a step costs what the step changed, not the size of the workflow.
pub const EXTERNAL_UNITS: usize = 64;

fn many_items(items: &Option<Vec<Value>>) -> bool {
    items.as_ref().is_some_and(|i| i.len() > EXTERNAL_UNITS)
}

// serde's skip_serializing_if hands the field itself.
#[allow(clippy::ptr_arg)]
fn many_units(units: &Vec<Unit>) -> bool {
    units.len() > EXTERNAL_UNITS
}

/// A part's key: the run's index, `i` (its items) or `u` and the item's index.
fn part_key(run: usize, unit: Option<usize>) -> Vec<u8> {
    let mut key = u32::try_from(run)
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    match unit {
        None => key.push(b'i'),
        Some(u) => {
            key.push(b'u');
            key.extend_from_slice(&u32::try_from(u).unwrap_or(u32::MAX).to_be_bytes());
        }
    }
    key
}

/// Why a workflow could not start or a result was not accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("workflow input must be a JSON object")]
    InputNotObject,
    #[error("workflow input '{0}' is not declared by the workflow")]
    UnknownInput(String),
    /// Orquesta's text alone (it names the expression); `what` says which entry it was.
    #[error("{message}")]
    Expression { what: String, message: String },
    #[error("no execution of task '{task}' (item {item:?}) is outstanding")]
    UnexpectedResult { task: String, item: Option<usize> },
    #[error("a {status} workflow cannot be {action}")]
    NotNow {
        status: &'static str,
        action: &'static str,
    },
    #[error("task '{0}' has not failed in this workflow, so it cannot be run again")]
    NotFailed(String),
}

/// An action execution the engine should start now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    pub task: String,
    /// The item's index, for a with-items task.
    pub item: Option<usize>,
    /// 0 for the first execution, then 1, 2... for retries.
    pub attempt: u32,
    pub action: String,
    pub input: Map<String, Value>,
    /// Seconds to wait before running it (the task's `delay`, or `retry.delay` for a retry).
    pub delay: Option<u64>,
    /// st2's `notify` for the execution (an ActionChain node's, unless the chain's
    /// `skip_notify` names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<squall_actions::Notify>,
}

/// How an action execution ended, as far as the workflow cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeStatus {
    Succeeded,
    Failed,
}

impl OutcomeStatus {
    fn as_str(self) -> &'static str {
        match self {
            OutcomeStatus::Succeeded => "succeeded",
            OutcomeStatus::Failed => "failed",
        }
    }
}

/// An action execution's end: its status and result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub status: OutcomeStatus,
    #[serde(default)]
    pub result: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowStatus {
    Running,
    /// Paused by request, waiting for outstanding executions to end.
    Pausing,
    Paused,
    /// Canceled by request, waiting for outstanding executions to end.
    Canceling,
    Canceled,
    Succeeded,
    Failed,
}

impl WorkflowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Pausing => "pausing",
            WorkflowStatus::Paused => "paused",
            WorkflowStatus::Canceling => "canceling",
            WorkflowStatus::Canceled => "canceled",
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::Failed => "failed",
        }
    }

    /// Succeeded, failed and canceled are final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkflowStatus::Succeeded | WorkflowStatus::Failed | WorkflowStatus::Canceled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum RunState {
    Staged,
    Running,
    Done,
}

/// One action execution's slot in a run: the only one, or one per item.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unit {
    attempt: u32,
    outstanding: bool,
    done: Option<TaskOutcome>,
}

/// One run of a task (a task without `join` reached twice runs twice).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskRun {
    name: String,
    state: RunState,
    /// The items, for a with-items task once it has started.
    #[serde(default, skip_serializing_if = "many_items")]
    items: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "many_units")]
    units: Vec<Unit>,
    /// Orquesta's route: 0, or the index of the split this run is on (see `Conductor::routes`).
    #[serde(default)]
    route: usize,
}

impl TaskRun {
    /// The task's status from its executions so far.
    fn status_of_units(&self) -> &'static str {
        let failed = self.units.iter().any(|u| {
            u.done
                .as_ref()
                .is_some_and(|d| d.status == OutcomeStatus::Failed)
        });
        if failed {
            "failed"
        } else if self.units.iter().all(|u| u.done.is_some()) {
            "succeeded"
        } else {
            "running"
        }
    }
}

/// A workflow in progress. See the module doc for how it is driven.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conductor {
    workflow: Workflow,
    ctx: Map<String, Value>,
    runs: Vec<TaskRun>,
    /// Runs waiting to start, in the order they were reached.
    staged: VecDeque<usize>,
    /// For each join task, the inbound tasks whose transition reached it.
    joins: BTreeMap<String, BTreeSet<String>>,
    fired_joins: BTreeSet<String>,
    /// The latest status of each task that has started, for `task_status()`.
    task_status: Map<String, Value>,
    /// Set once the workflow is bound to fail: nothing new starts, running work finishes.
    failing: bool,
    errors: Vec<Value>,
    status: WorkflowStatus,
    output: Map<String, Value>,
    /// Orquesta's routes: each a list of the transitions (`task__tN`) into split tasks taken
    /// to reach it; route 0 is the empty one. A split task (several transitions lead to it,
    /// no `join`, not in a loop) runs once per arrival, each on a new route, and so does
    /// everything after it; `task(name)` looks on the asking task's route.
    #[serde(default = "first_route")]
    routes: Vec<Vec<String>>,
    /// Parts changed since [`Conductor::take_parts`]: items' states, and runs' item lists.
    #[serde(skip)]
    dirty_units: BTreeSet<(usize, usize)>,
    #[serde(skip)]
    dirty_items: BTreeSet<usize>,
    /// What `st2kv()` reads; given again after the state is read back.
    #[serde(skip)]
    kv: Kv,
    /// An ActionChain's own state; `None` for Orquesta workflows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<ChainRun>,
}

/// What an ActionChain run keeps beside the context, which holds its variables (`vars` and
/// what nodes published: st2's chain vars).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChainRun {
    /// The action's parameters, as the chain's templates see them.
    params: Map<String, Value>,
    /// `action_context` in node parameters: `{parent: {execution_id, user}}`.
    action_context: Value,
    /// Every variable a node published, for the result's `published`.
    published: Map<String, Value>,
    /// The runner parameter `display_published` (st2's default: true).
    display_published: bool,
    /// The runner parameter `skip_notify`: nodes whose executions get no `notify`.
    skip_notify: Vec<String>,
    /// The chain's own error, st2's top-level `error` (a template that did not render), as
    /// opposed to a node's failure, which its task entry shows.
    error: Option<String>,
}

fn first_route() -> Vec<Vec<String>> {
    vec![Vec::new()]
}

/// Runner parameters of st2's `action-chain` runner: the runner's settings, not names the
/// chain's templates see.
const CHAIN_RUNNER_PARAMETERS: [&str; 2] = ["display_published", "skip_notify"];

/// The key-value store a conductor's expressions read, kept out of its saved state.
#[derive(Clone, Default)]
struct Kv(Option<Arc<dyn KeyValueLookup>>);

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<key-value store>")
    }
}

impl Conductor {
    /// Gives a conductor read back from its saved state the key-value store `st2kv()` reads.
    pub fn set_kv(&mut self, kv: Arc<dyn KeyValueLookup>) {
        self.kv = Kv(Some(kv));
    }

    /// Binds the input (defaults filled in, rendered in order), renders `vars`, and stages the
    /// tasks no transition leads to.
    pub fn new(workflow: Workflow, input: Value) -> Result<Conductor, Error> {
        Conductor::with_kv(workflow, input, None)
    }

    /// [`Conductor::new`] with the key-value store `st2kv()` reads (see also
    /// [`Conductor::set_kv`]: the store is not part of the saved state).
    pub fn with_kv(
        workflow: Workflow,
        input: Value,
        kv: Option<Arc<dyn KeyValueLookup>>,
    ) -> Result<Conductor, Error> {
        Conductor::with_context(workflow, input, kv, None)
    }

    /// [`Conductor::with_kv`] with st2's runtime context, seen by every expression as
    /// `ctx().st2` (`action_execution_id`, `workflow_execution_id`, `user`, `pack`, `action`,
    /// `runner`, `api_url`, as st2 gives them). An input named `st2` hides it.
    pub fn with_context(
        workflow: Workflow,
        input: Value,
        kv: Option<Arc<dyn KeyValueLookup>>,
        st2: Option<Value>,
    ) -> Result<Conductor, Error> {
        let Value::Object(mut given) = input else {
            return Err(Error::InputNotObject);
        };
        if workflow.dialect == Dialect::ActionChain {
            return Ok(Conductor::start_chain(workflow, given, kv, st2));
        }
        if let Some(unknown) = given
            .keys()
            .find(|k| !workflow.input.iter().any(|(n, _)| n == *k))
        {
            return Err(Error::UnknownInput(unknown.clone()));
        }
        let mut ctx = Map::new();
        if let Some(st2) = st2 {
            ctx.insert("st2".to_string(), st2);
        }
        for (name, default) in &workflow.input {
            let value = match (given.remove(name), default) {
                (Some(v), _) => v,
                (None, Some(d)) => render_setup(d, &ctx, kv.as_ref(), &format!("input '{name}'"))?,
                // Orquesta's `render_input`: an input neither given nor defaulted is null.
                (None, None) => Value::Null,
            };
            ctx.insert(name.clone(), value);
        }
        for (name, v) in &workflow.vars {
            let value = render_setup(v, &ctx, kv.as_ref(), &format!("vars '{name}'"))?;
            ctx.insert(name.clone(), value);
        }
        Ok(Conductor::assemble(workflow, ctx, kv, None))
    }

    /// An ActionChain's start: every parameter is input (the action's metadata declared
    /// them), the runner's parameters are set apart, `vars` are rendered with the parameters
    /// (each on its own, as st2 does), and the default node is staged. A `vars` entry that
    /// does not render fails the chain before any node runs, with st2's message.
    fn start_chain(
        workflow: Workflow,
        mut params: Map<String, Value>,
        kv: Option<Arc<dyn KeyValueLookup>>,
        st2: Option<Value>,
    ) -> Conductor {
        let display_published = !matches!(
            params.get(CHAIN_RUNNER_PARAMETERS[0]),
            Some(Value::Bool(false))
        );
        let skip_notify = params
            .get(CHAIN_RUNNER_PARAMETERS[1])
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        params.retain(|k, _| !CHAIN_RUNNER_PARAMETERS.contains(&k.as_str()));
        let st2 = st2.unwrap_or(Value::Null);
        let action_context = json!({
            "parent": {
                "execution_id": st2.get("action_execution_id").cloned().unwrap_or(Value::Null),
                "user": st2.get("user").cloned().unwrap_or(Value::Null),
            }
        });
        let mut vars = Map::new();
        let mut error = None;
        for (name, v) in &workflow.vars {
            let scope = Scope {
                kv: kv.as_ref(),
                names: Some(&params),
                ..Scope::default()
            };
            match expr::render(v, &scope) {
                Ok(value) => {
                    vars.insert(name.clone(), value);
                }
                Err(e) => {
                    error = Some(format!(
                        "Failed initializing ``vars`` in chain. Failed rendering value for vars \"{name}\": {e}"
                    ));
                    break;
                }
            }
        }
        let chain = ChainRun {
            params,
            action_context,
            published: Map::new(),
            display_published,
            skip_notify,
            error: error.clone(),
        };
        let mut conductor = Conductor::assemble(workflow, vars, kv, Some(chain));
        if let Some(message) = error {
            conductor
                .errors
                .push(json!({"type": "error", "message": message}));
            conductor.failing = true;
            conductor.staged.clear();
        }
        conductor
    }

    /// A conductor over `ctx` with the workflow's start tasks staged.
    fn assemble(
        workflow: Workflow,
        ctx: Map<String, Value>,
        kv: Option<Arc<dyn KeyValueLookup>>,
        chain: Option<ChainRun>,
    ) -> Conductor {
        let mut conductor = Conductor {
            ctx,
            runs: Vec::new(),
            staged: VecDeque::new(),
            joins: BTreeMap::new(),
            fired_joins: BTreeSet::new(),
            task_status: Map::new(),
            failing: false,
            errors: Vec::new(),
            status: WorkflowStatus::Running,
            output: Map::new(),
            routes: first_route(),
            dirty_units: BTreeSet::new(),
            dirty_items: BTreeSet::new(),
            kv: Kv(kv),
            chain,
            workflow,
        };
        for name in conductor.workflow.start_tasks() {
            conductor.stage(&name, 0);
        }
        conductor
    }

    pub fn status(&self) -> WorkflowStatus {
        self.status
    }

    /// The parts of large with-items runs changed since the last call, as `(key, bytes)`:
    /// the caller saves them with the conductor's serialized form, which leaves them out.
    pub fn take_parts(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut parts = Vec::new();
        for idx in std::mem::take(&mut self.dirty_items) {
            if let Some(items) = self.runs.get(idx).and_then(|r| r.items.as_ref()) {
                if items.len() > EXTERNAL_UNITS {
                    if let Ok(bytes) = serde_json::to_vec(items) {
                        parts.push((part_key(idx, None), bytes));
                    }
                }
            }
        }
        for (idx, u) in std::mem::take(&mut self.dirty_units) {
            let Some(run) = self.runs.get(idx) else {
                continue;
            };
            if let (true, Some(unit)) = (many_units(&run.units), run.units.get(u)) {
                if let Ok(bytes) = serde_json::to_vec(unit) {
                    parts.push((part_key(idx, Some(u)), bytes));
                }
            }
        }
        parts
    }

    /// Marks every part as changed: the state is being saved somewhere new (a re-run).
    pub fn mark_all_parts(&mut self) {
        for idx in 0..self.runs.len() {
            if many_items(&self.runs[idx].items) {
                self.dirty_items.insert(idx);
            }
            if many_units(&self.runs[idx].units) {
                self.dirty_units
                    .extend((0..self.runs[idx].units.len()).map(|u| (idx, u)));
            }
        }
    }

    /// Puts back the parts [`Conductor::take_parts`] gave, read back from where they were saved.
    pub fn restore_parts(&mut self, parts: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        let mut units: BTreeMap<usize, BTreeMap<usize, Unit>> = BTreeMap::new();
        for (key, bytes) in parts {
            let run = key
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(|b: [u8; 4]| u32::from_be_bytes(b) as usize)
                .ok_or("a workflow part has a malformed key")?;
            // Parts of a run that is small again (re-run with fewer items) are stale.
            let Some(r) = self.runs.get_mut(run) else {
                continue;
            };
            match key.get(4) {
                Some(b'i') if r.items.is_none() => {
                    r.items = Some(serde_json::from_slice(&bytes).map_err(|e| e.to_string())?);
                }
                Some(b'u') => {
                    let u = key
                        .get(5..9)
                        .and_then(|b| b.try_into().ok())
                        .map(|b: [u8; 4]| u32::from_be_bytes(b) as usize)
                        .ok_or("a workflow part has a malformed key")?;
                    let unit = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                    units.entry(run).or_default().insert(u, unit);
                }
                _ => {}
            }
        }
        for (run, list) in units {
            let r = &mut self.runs[run];
            let count = r.items.as_ref().map_or(0, Vec::len);
            if !r.units.is_empty() || count <= EXTERNAL_UNITS {
                continue;
            }
            if list.len() < count || list.keys().take(count).enumerate().any(|(i, k)| i != *k) {
                return Err(format!(
                    "task '{}': {} of its {count} items' states are missing",
                    r.name,
                    count.saturating_sub(list.len())
                ));
            }
            r.units = list.into_values().take(count).collect();
        }
        Ok(())
    }

    /// Records that an item's state changed, for a run whose items are kept as parts.
    fn touch(&mut self, idx: usize, u: usize) {
        if many_units(&self.runs[idx].units) {
            self.dirty_units.insert((idx, u));
        }
    }

    /// The action executions the workflow waits for: task, item and attempt of each.
    pub fn outstanding(&self) -> Vec<(String, Option<usize>, u32)> {
        self.runs
            .iter()
            .flat_map(|r| {
                let with_items = r.items.is_some();
                r.units
                    .iter()
                    .enumerate()
                    .filter(|(_, u)| u.outstanding)
                    .map(move |(i, u)| (r.name.clone(), with_items.then_some(i), u.attempt))
            })
            .collect()
    }

    /// Whether the workflow waits for this attempt of this task (and item).
    pub fn is_outstanding(&self, task: &str, item: Option<usize>, attempt: u32) -> bool {
        self.runs.iter().any(|r| {
            r.name == task
                && r.state == RunState::Running
                && r.items.is_some() == item.is_some()
                && r.units
                    .get(item.unwrap_or(0))
                    .is_some_and(|u| u.outstanding && u.attempt == attempt)
        })
    }

    fn has_outstanding(&self) -> bool {
        self.runs
            .iter()
            .any(|r| r.units.iter().any(|u| u.outstanding))
    }

    /// Starts nothing new from now on; `paused` once nothing is outstanding.
    pub fn pause(&mut self) -> Result<(), Error> {
        match self.status {
            WorkflowStatus::Running => {
                self.status = WorkflowStatus::Pausing;
                self.settle();
                Ok(())
            }
            WorkflowStatus::Pausing | WorkflowStatus::Paused => Ok(()),
            other => Err(Error::NotNow {
                status: other.as_str(),
                action: "paused",
            }),
        }
    }

    /// A pausing workflow whose outstanding executions are themselves paused (subworkflows)
    /// is paused: the engine, which knows their statuses, says so.
    pub fn mark_paused(&mut self) {
        if self.status == WorkflowStatus::Pausing {
            self.status = WorkflowStatus::Paused;
        }
    }

    /// Carries on a paused (or pausing) workflow; the next [`Conductor::next_requests`]
    /// starts what waited.
    pub fn resume(&mut self) -> Result<(), Error> {
        match self.status {
            WorkflowStatus::Pausing | WorkflowStatus::Paused => {
                self.status = WorkflowStatus::Running;
                self.settle();
                Ok(())
            }
            WorkflowStatus::Running => Ok(()),
            other => Err(Error::NotNow {
                status: other.as_str(),
                action: "resumed",
            }),
        }
    }

    /// Cancels the workflow: nothing new starts; `canceled` once nothing is outstanding.
    pub fn cancel(&mut self) -> Result<(), Error> {
        match self.status {
            WorkflowStatus::Canceling | WorkflowStatus::Canceled => Ok(()),
            WorkflowStatus::Succeeded | WorkflowStatus::Failed => Err(Error::NotNow {
                status: self.status.as_str(),
                action: "canceled",
            }),
            _ => {
                self.status = WorkflowStatus::Canceling;
                self.staged.clear();
                self.settle();
                Ok(())
            }
        }
    }

    /// Turns a failed workflow back into a running one from its failed tasks: `tasks` names
    /// them (empty: every failed task); for with-items tasks only the failed items run again,
    /// unless the task is named in `reset`. Tasks reached but never started because of the
    /// failure start again too.
    pub fn rerun(&mut self, tasks: &[String], reset: &[String]) -> Result<(), Error> {
        if self.status != WorkflowStatus::Failed {
            return Err(Error::NotNow {
                status: self.status.as_str(),
                action: "re-run from its failed tasks",
            });
        }
        let failed_run = |run: &TaskRun| {
            run.state == RunState::Done
                && (run.units.is_empty()
                    || run.units.iter().any(|u| {
                        u.done
                            .as_ref()
                            .is_none_or(|d| d.status == OutcomeStatus::Failed)
                    }))
        };
        // The latest run of each task that failed.
        let mut latest: BTreeMap<String, usize> = BTreeMap::new();
        for (idx, run) in self.runs.iter().enumerate() {
            if run.state != RunState::Staged {
                latest.insert(run.name.clone(), idx);
            }
        }
        latest.retain(|_, idx| failed_run(&self.runs[*idx]));
        let mut chosen = Vec::new();
        if tasks.is_empty() {
            chosen.extend(latest.values().copied());
        } else {
            for name in tasks {
                match latest.get(name) {
                    Some(idx) => chosen.push(*idx),
                    None => return Err(Error::NotFailed(name.clone())),
                }
            }
        }
        if chosen.is_empty() {
            return Err(Error::NotFailed("(any)".into()));
        }
        for idx in chosen {
            for u in 0..self.runs[idx].units.len() {
                self.touch(idx, u);
            }
            let name = self.runs[idx].name.clone();
            let run = &mut self.runs[idx];
            if run.items.is_some() && !run.units.is_empty() && !reset.contains(&name) {
                for unit in &mut run.units {
                    if unit
                        .done
                        .as_ref()
                        .is_none_or(|d| d.status == OutcomeStatus::Failed)
                    {
                        *unit = Unit {
                            attempt: 0,
                            outstanding: false,
                            done: None,
                        };
                    }
                }
                run.state = RunState::Running;
                self.task_status.insert(name, json!("running"));
            } else {
                run.state = RunState::Staged;
                run.items = None;
                run.units.clear();
                self.staged.push_back(idx);
            }
        }
        // What fail-fast dropped before it started.
        for idx in 0..self.runs.len() {
            if self.runs[idx].state == RunState::Staged && !self.staged.contains(&idx) {
                self.staged.push_back(idx);
            }
        }
        self.failing = false;
        self.errors.clear();
        self.output.clear();
        if let Some(chain) = &mut self.chain {
            chain.error = None;
        }
        self.status = WorkflowStatus::Running;
        Ok(())
    }

    /// The workflow execution's result: `{output: {...} or null}`, with `errors` when it failed;
    /// for an ActionChain, st2's `{tasks, published}` (see `Conductor::chain_output`).
    pub fn output(&self) -> Value {
        if let Some(chain) = &self.chain {
            return self.chain_output(chain);
        }
        // Orquesta gives no output (null) when none was rendered: a workflow without an
        // `output` section, or a failed one's.
        let output = if self.output.is_empty() {
            Value::Null
        } else {
            Value::Object(self.output.clone())
        };
        let mut result = json!({ "output": output });
        if self.status == WorkflowStatus::Failed {
            result["errors"] = Value::Array(self.errors.clone());
        }
        result
    }

    /// An ActionChain's result as st2's runner gives it: `tasks`, one entry per node execution
    /// in the order they ran (`id` and `name` the node's, `state`, `result`, `workflow: null`),
    /// `published` (every variable published so far; left out when the runner parameter
    /// `display_published` is false) and, when the chain itself failed (a template that did not
    /// render), `error`. st2's entries also carry `execution_id`, `liveaction_id`, `created_at`
    /// and `updated_at`, and its errors a Python `traceback`: the conductor knows no execution
    /// ids or clock, so they are left out (the execution's children, over the API, have them).
    /// A node whose parameters did not render never ran and has no entry, as in st2.
    fn chain_output(&self, chain: &ChainRun) -> Value {
        let tasks: Vec<Value> = self
            .runs
            .iter()
            .filter_map(|run| {
                let failed = run.units.iter().any(|u| {
                    u.done
                        .as_ref()
                        .is_some_and(|d| d.status == OutcomeStatus::Failed)
                });
                let result = run_result(run)?;
                Some(json!({
                    "id": run.name,
                    "name": run.name,
                    "state": if failed { "failed" } else { "succeeded" },
                    "result": result,
                    "workflow": null,
                }))
            })
            .collect();
        let mut out = json!({ "tasks": tasks });
        if chain.display_published {
            out["published"] = Value::Object(chain.published.clone());
        }
        if let Some(error) = &chain.error {
            out["error"] = json!(error);
        }
        out
    }

    /// Each task's latest finished run's result, by name.
    fn latest_results(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for run in &self.runs {
            if let Some(result) = run_result(run) {
                out.insert(run.name.clone(), result);
            }
        }
        out
    }

    /// The names an ActionChain's templates see, in st2's order (a later one hides an earlier
    /// one of the same name): the parameters, each node's latest result under the node's name,
    /// the chain's variables, `__results` (every node's result) and, in node parameters,
    /// `action_context`. `None` for an Orquesta workflow.
    fn chain_names(&self, action_context: bool) -> Option<Map<String, Value>> {
        let chain = self.chain.as_ref()?;
        let results = self.latest_results();
        let mut names = chain.params.clone();
        names.extend(results.iter().map(|(k, v)| (k.clone(), v.clone())));
        names.extend(self.ctx.iter().map(|(k, v)| (k.clone(), v.clone())));
        names.insert("__results".to_string(), Value::Object(results));
        if action_context {
            names.insert("action_context".to_string(), chain.action_context.clone());
        }
        Some(names)
    }

    /// The action executions to start now. Empty when the workflow is waiting on results or
    /// has ended.
    pub fn next_requests(&mut self) -> Vec<TaskRequest> {
        let mut out = Vec::new();
        // Action-less tasks complete as they start and may stage more; a cycle of them would
        // never yield, so the number of starts per call is bounded.
        let mut starts = 0usize;
        while self.status == WorkflowStatus::Running {
            while let Some(idx) = self.staged.pop_front() {
                starts += 1;
                if starts > MAX_STARTS_PER_CALL {
                    let name = self.runs[idx].name.clone();
                    self.fail_with(
                        &name,
                        format!("more than {MAX_STARTS_PER_CALL} tasks started without an action execution: the workflow loops"),
                        None,
                    );
                    break;
                }
                self.start(idx, &mut out);
            }
            for idx in 0..self.runs.len() {
                if self.runs[idx].state == RunState::Running {
                    self.dispatch(idx, &mut out, false);
                }
            }
            if self.staged.is_empty() {
                self.maybe_finish();
                break;
            }
        }
        out
    }

    /// Folds one action execution's end into the workflow.
    pub fn on_task_result(
        &mut self,
        task: &str,
        item: Option<usize>,
        outcome: TaskOutcome,
    ) -> Result<(), Error> {
        let unit_index = item.unwrap_or(0);
        let found = self.runs.iter().position(|r| {
            r.name == task
                && r.state == RunState::Running
                && r.items.is_some() == item.is_some()
                && r.units.get(unit_index).is_some_and(|u| u.outstanding)
        });
        let Some(idx) = found else {
            return Err(Error::UnexpectedResult {
                task: task.to_string(),
                item,
            });
        };
        let retry = self.workflow.tasks.get(task).and_then(|t| t.retry.clone());
        let attempt = self.runs[idx].units[unit_index].attempt;
        self.runs[idx].units[unit_index].outstanding = false;
        self.touch(idx, unit_index);
        let canceling = self.status == WorkflowStatus::Canceling;
        if let Some(retry) = retry.filter(|_| !self.failing && !canceling) {
            let item_value = self.item_value(idx, item);
            let scope = Scope {
                kv: self.kv.0.as_ref(),
                ctx: Some(&self.ctx),
                result: Some(&outcome.result),
                status: Some(outcome.status.as_str()),
                item: item_value.as_ref(),
                tasks: Some(&self.task_status),
                current: Some(task),
                route: self.runs[idx].route,
                states: Some(&*self),
                ..Scope::default()
            };
            let wanted = eval_count(&retry.count, &scope, "retry count").and_then(|count| {
                if u64::from(attempt) >= count {
                    return Ok(false);
                }
                match &retry.when {
                    None => Ok(outcome.status == OutcomeStatus::Failed),
                    Some(when) => {
                        expr::condition(when, &scope).map_err(|e| format!("retry when: {e}"))
                    }
                }
            });
            match wanted {
                Ok(true) => {
                    self.runs[idx].units[unit_index].attempt += 1;
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    let route = self.runs[idx].route;
                    self.fail_with(task, e, None);
                    self.mark_expression_error(route, None);
                }
            }
        }
        self.runs[idx].units[unit_index].done = Some(outcome);
        if canceling {
            // Nothing follows a canceled workflow's tasks.
            self.task_status
                .insert(task.to_string(), json!(self.runs[idx].status_of_units()));
        } else if self.runs[idx].units.iter().all(|u| u.done.is_some()) {
            self.complete_run(idx);
        }
        self.settle();
        Ok(())
    }

    /// Moves a pausing or canceling workflow on once its outstanding work has ended.
    fn settle(&mut self) {
        match self.status {
            WorkflowStatus::Running => self.maybe_finish(),
            WorkflowStatus::Pausing => {
                // A workflow with nothing left to do ends rather than pauses.
                self.status = WorkflowStatus::Running;
                self.maybe_finish();
                if self.status == WorkflowStatus::Running {
                    self.status = if self.has_outstanding() {
                        WorkflowStatus::Pausing
                    } else {
                        WorkflowStatus::Paused
                    };
                }
            }
            WorkflowStatus::Canceling if !self.has_outstanding() => {
                self.render_output();
                self.status = WorkflowStatus::Canceled;
            }
            _ => {}
        }
    }

    fn stage(&mut self, name: &str, route: usize) {
        self.runs.push(TaskRun {
            name: name.to_string(),
            state: RunState::Staged,
            items: None,
            units: Vec::new(),
            route,
        });
        self.staged.push_back(self.runs.len() - 1);
    }

    fn start(&mut self, idx: usize, out: &mut Vec<TaskRequest>) {
        let name = self.runs[idx].name.clone();
        let Some(task) = self.workflow.tasks.get(&name) else {
            return;
        };
        self.runs[idx].state = RunState::Running;
        self.task_status.insert(name.clone(), json!("running"));
        if task.action.is_none() {
            self.runs[idx].units.push(Unit {
                attempt: 0,
                outstanding: false,
                done: Some(TaskOutcome {
                    status: OutcomeStatus::Succeeded,
                    result: Value::Null,
                }),
            });
            self.complete_run(idx);
            return;
        }
        let units = match &task.with {
            None => 1,
            Some(with) => {
                let scope = Scope {
                    kv: self.kv.0.as_ref(),
                    ctx: Some(&self.ctx),
                    tasks: Some(&self.task_status),
                    route: self.runs[idx].route,
                    states: Some(&*self),
                    ..Scope::default()
                };
                let items = expr::single(&with.items)
                    .ok_or_else(|| "not an expression".to_string())
                    .and_then(|e| expr::eval_single(e, &scope));
                match items {
                    Ok(Value::Array(items)) => {
                        let n = items.len();
                        self.runs[idx].items = Some(items);
                        n
                    }
                    // Orquesta's `TypeError` for items that are not a list.
                    Ok(_) => {
                        let expr = expr::single_expression(&with.items).unwrap_or(&with.items);
                        self.fail_run(
                            idx,
                            format!("TypeError: The value of \"{expr}\" is not type of list."),
                        );
                        return;
                    }
                    Err(e) => {
                        self.fail_run(idx, e);
                        return;
                    }
                }
            }
        };
        self.runs[idx].units = vec![
            Unit {
                attempt: 0,
                outstanding: false,
                done: None,
            };
            units
        ];
        if units > EXTERNAL_UNITS {
            self.dirty_items.insert(idx);
            self.dirty_units.extend((0..units).map(|u| (idx, u)));
        }
        if units == 0 {
            // An empty item list: nothing to run, the task succeeds with an empty result.
            self.complete_run(idx);
            return;
        }
        // A run only starts while failing when a `fail` transition listed it: let it run.
        self.dispatch(idx, out, true);
    }

    /// Requests the run's pending executions, up to its concurrency. Once the workflow is
    /// failing, only a run's first requests go out (`starting`), never more items or retries.
    fn dispatch(&mut self, idx: usize, out: &mut Vec<TaskRequest>, starting: bool) {
        if self.failing && !starting {
            return;
        }
        let name = self.runs[idx].name.clone();
        let Some(task) = self.workflow.tasks.get(&name).cloned() else {
            return;
        };
        let limit = match task.with.as_ref().and_then(|w| w.concurrency.as_ref()) {
            None => usize::MAX,
            Some(c) => {
                let scope = Scope {
                    kv: self.kv.0.as_ref(),
                    ctx: Some(&self.ctx),
                    tasks: Some(&self.task_status),
                    states: Some(&*self),
                    ..Scope::default()
                };
                match eval_count(c, &scope, "with concurrency") {
                    Ok(n) => usize::try_from(n).unwrap_or(usize::MAX).max(1),
                    Err(e) => {
                        self.fail_run(idx, e);
                        return;
                    }
                }
            }
        };
        let with_items = self.runs[idx].items.is_some();
        let mut outstanding = self.runs[idx]
            .units
            .iter()
            .filter(|u| u.outstanding)
            .count();
        let names = self.chain_names(true);
        let notify = match &self.chain {
            Some(chain) if chain.skip_notify.contains(&name) => None,
            _ => task.notify.clone(),
        };
        for u in 0..self.runs[idx].units.len() {
            if outstanding >= limit {
                break;
            }
            let unit = &self.runs[idx].units[u];
            if unit.outstanding || unit.done.is_some() {
                continue;
            }
            let attempt = unit.attempt;
            let item = with_items.then_some(u);
            let item_value = self.item_value(idx, item);
            let scope = Scope {
                kv: self.kv.0.as_ref(),
                ctx: Some(&self.ctx),
                item: item_value.as_ref(),
                tasks: Some(&self.task_status),
                route: self.runs[idx].route,
                states: Some(&*self),
                names: names.as_ref(),
                ..Scope::default()
            };
            let action = task.action.clone().unwrap_or_default();
            let delay_spec = if attempt > 0 {
                task.retry.as_ref().and_then(|r| r.delay.as_ref())
            } else {
                task.delay.as_ref()
            };
            let what = if attempt > 0 { "retry delay" } else { "delay" };
            let rendered = expr::render(&Value::String(action), &scope).and_then(|a| {
                let input = match names {
                    None => match &task.input_expr {
                        // `input: <% expr %>`: the expression gives the whole input.
                        Some(source) => match expr::render(&Value::String(source.clone()), &scope)? {
                            Value::Object(m) => Value::Object(m),
                            other => {
                                return Err(format!(
                                    "TypeError: The input \"{source}\" gave {other}, which is not a map of the action's input."
                                ))
                            }
                        },
                        None => expr::render(&Value::Object(task.input.clone()), &scope)?,
                    },
                    Some(_) => Value::Object(render_chain_parameters(&name, &task.input, &scope)?),
                };
                let delay = delay_spec
                    .map(|d| eval_count(d, &scope, what))
                    .transpose()?;
                Ok((a, input, delay))
            });
            match rendered {
                Ok((Value::String(action), Value::Object(input), delay)) => {
                    self.runs[idx].units[u].outstanding = true;
                    self.touch(idx, u);
                    outstanding += 1;
                    out.push(TaskRequest {
                        task: name.clone(),
                        item,
                        attempt,
                        action,
                        input,
                        delay,
                        notify: notify.clone(),
                    });
                }
                Ok((action, _, _)) => {
                    self.fail_run(idx, format!("action must render to text, got {action}"));
                    return;
                }
                Err(e) => {
                    if let Some(chain) = &mut self.chain {
                        chain.error = Some(format!(
                            "Failed to run task \"{name}\". Parameter rendering failed: {e}"
                        ));
                    }
                    self.fail_run(idx, e);
                    return;
                }
            }
        }
    }

    fn item_value(&self, idx: usize, item: Option<usize>) -> Option<Value> {
        let (items, i) = (self.runs[idx].items.as_ref()?, item?);
        let value = items.get(i)?.clone();
        let names = &self
            .workflow
            .tasks
            .get(&self.runs[idx].name)?
            .with
            .as_ref()?
            .names;
        Some(match names.len() {
            0 => value,
            1 => json!({ names[0].clone(): value }),
            // `a, b in ...`: each item is a list unpacked by position.
            _ => Value::Object(
                names
                    .iter()
                    .enumerate()
                    .map(|(p, n)| (n.clone(), value.get(p).cloned().unwrap_or(Value::Null)))
                    .collect(),
            ),
        })
    }

    /// A run that could not even request its action (a template failed): it fails, and the
    /// workflow with it, as Orquesta fails on expression errors.
    fn fail_run(&mut self, idx: usize, message: String) {
        let name = self.runs[idx].name.clone();
        self.runs[idx].state = RunState::Done;
        self.runs[idx]
            .units
            .iter_mut()
            .for_each(|u| u.outstanding = false);
        for u in 0..self.runs[idx].units.len() {
            self.touch(idx, u);
        }
        self.task_status.insert(name.clone(), json!("failed"));
        let route = self.runs[idx].route;
        self.fail_with(&name, message, None);
        self.mark_expression_error(route, None);
    }

    fn fail_with(&mut self, task: &str, message: String, result: Option<&Value>) {
        self.log_error(task, message, result);
        self.fail_fast();
    }

    /// Records an error as Orquesta's `log_entry` does (`type`, `message`, `task_id`, and the
    /// task's `result` when it has one), without failing the workflow by itself: a task's
    /// failure is recorded even when a transition handles it, and shows if the workflow fails.
    fn log_error(&mut self, task: &str, message: String, result: Option<&Value>) {
        let mut error = json!({ "type": "error", "message": message, "task_id": task });
        if let Some(r) = result {
            error["result"] = r.clone();
        }
        self.errors.push(error);
    }

    /// Gives the last error the fields Orquesta gives an expression error: its route and, for
    /// an error in a transition, the transition's id (`<first target>__t<index of the
    /// transition>`, `continue` when it names none).
    fn mark_expression_error(&mut self, route: usize, transition: Option<String>) {
        if let Some(Value::Object(error)) = self.errors.last_mut() {
            error.insert("route".into(), json!(route));
            if let Some(id) = transition {
                error.insert("task_transition_id".into(), json!(id));
            }
        }
    }

    fn fail_fast(&mut self) {
        self.failing = true;
        // Fail-fast: what was reached but not started never starts.
        self.staged.clear();
    }

    /// A run's every execution has ended: its status and result are final; evaluate `next`.
    fn complete_run(&mut self, idx: usize) {
        let name = self.runs[idx].name.clone();
        let run = &mut self.runs[idx];
        run.state = RunState::Done;
        let failed = run.units.iter().any(|u| {
            u.done
                .as_ref()
                .is_some_and(|d| d.status == OutcomeStatus::Failed)
        });
        let results: Vec<Value> = run
            .units
            .iter()
            .map(|u| {
                u.done
                    .as_ref()
                    .map(|d| d.result.clone())
                    .unwrap_or_default()
            })
            .collect();
        let result = if run.items.is_some() {
            Value::Array(results)
        } else {
            results.into_iter().next().unwrap_or_default()
        };
        let status = if failed {
            OutcomeStatus::Failed
        } else {
            OutcomeStatus::Succeeded
        };
        self.task_status
            .insert(name.clone(), json!(status.as_str()));
        let Some(task) = self.workflow.tasks.get(&name).cloned() else {
            return;
        };
        let route = self.runs[idx].route;
        let mut handled = status == OutcomeStatus::Succeeded;
        if !handled && self.chain.is_none() {
            // Orquesta records every failed task, remediated or not; the workflow fails below
            // only when no transition handles it.
            self.log_error(
                &name,
                "Execution failed. See result for details.".to_string(),
                Some(&result),
            );
        }
        for (index, transition) in task.next.iter().enumerate() {
            let first = transition
                .targets
                .first()
                .map_or("continue", String::as_str);
            let transition_id = Some(format!("{first}__t{index}"));
            // An ActionChain's transitions are its on-success and on-failure routes: their
            // conditions see only the status, so no node or variable name can hide a function.
            let scope = Scope {
                kv: self.kv.0.as_ref(),
                ctx: Some(&self.ctx),
                result: Some(&result),
                status: Some(status.as_str()),
                tasks: Some(&self.task_status),
                current: Some(&name),
                route,
                states: Some(&*self),
                ..Scope::default()
            };
            let taken = match &transition.when {
                None => Ok(true),
                Some(when) => expr::condition(when, &scope),
            };
            match taken {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    self.fail_with(&name, e, None);
                    self.mark_expression_error(route, transition_id);
                    return;
                }
            }
            for (key, value) in &transition.publish {
                let names = self.chain_names(false);
                let scope = Scope {
                    kv: self.kv.0.as_ref(),
                    ctx: Some(&self.ctx),
                    result: Some(&result),
                    status: Some(status.as_str()),
                    tasks: Some(&self.task_status),
                    current: Some(&name),
                    route,
                    states: Some(&*self),
                    names: names.as_ref(),
                    ..Scope::default()
                };
                match expr::render(value, &scope) {
                    Ok(v) => {
                        if let Some(chain) = &mut self.chain {
                            chain.published.insert(key.clone(), v.clone());
                        }
                        self.ctx.insert(key.clone(), v);
                    }
                    Err(e) => {
                        let message = match &mut self.chain {
                            // st2's message; the chain fails with it and nothing more runs.
                            Some(chain) => {
                                let message = format!(
                                    "Failed rendering value for publish parameter \"{key}\" in task \"{name}\" (template string={}): {e}",
                                    template_text(value)
                                );
                                chain.error = Some(message.clone());
                                message
                            }
                            None => e,
                        };
                        self.fail_with(&name, message, None);
                        self.mark_expression_error(route, transition_id);
                        return;
                    }
                }
            }
            let commands_fail = transition.targets.iter().any(|t| t == "fail");
            if commands_fail {
                // Orquesta runs `fail` as a task of that name that fails the workflow.
                let message = "Execution failed. See result for details.".to_string();
                match self.chain {
                    None => {
                        self.errors
                            .push(json!({"type": "error", "message": message, "task_id": "fail"}));
                        self.fail_fast();
                    }
                    Some(_) => self.fail_with(&name, message, Some(&result)),
                }
            }
            for target in &transition.targets {
                match target.as_str() {
                    "noop" => handled = true,
                    "continue" | "fail" => {}
                    _ => {
                        handled = true;
                        if !self.failing || commands_fail {
                            self.route(&name, target, route, index);
                        }
                    }
                }
            }
        }
        if !handled {
            match self.chain {
                None => self.fail_fast(),
                Some(_) => self.fail_with(
                    &name,
                    "Execution failed. See result for details.".to_string(),
                    Some(&result),
                ),
            }
        }
    }

    /// The route a transition `from__tN` leads `target` on (Orquesta's `_evaluate_route`): a
    /// split task outside a loop gets the route extended by that transition.
    fn route_for(&mut self, from: &str, target: &str, route: usize, index: usize) -> usize {
        if !self.workflow.is_split(target) || self.workflow.in_cycle(target) {
            return route;
        }
        let mut details = self.routes.get(route).cloned().unwrap_or_default();
        let via = format!("{from}__t{index}");
        if details.contains(&via) {
            return route;
        }
        details.push(via);
        match self.routes.iter().position(|r| *r == details) {
            Some(existing) => existing,
            None => {
                self.routes.push(details);
                self.routes.len() - 1
            }
        }
    }

    fn route(&mut self, from: &str, target: &str, route: usize, index: usize) {
        let join = self.workflow.tasks.get(target).and_then(|t| t.join);
        match join {
            None => {
                let route = self.route_for(from, target, route, index);
                self.stage(target, route);
            }
            Some(join) => {
                let arrived = self.joins.entry(target.to_string()).or_default();
                arrived.insert(from.to_string());
                let satisfied = match join {
                    Join::All => self
                        .workflow
                        .inbound(target)
                        .iter()
                        .all(|t| arrived.contains(t)),
                    Join::Count(n) => arrived.len() >= n,
                };
                if satisfied && self.fired_joins.insert(target.to_string()) {
                    self.stage(target, route);
                }
            }
        }
    }

    fn maybe_finish(&mut self) {
        if self.status != WorkflowStatus::Running || !self.staged.is_empty() {
            return;
        }
        let outstanding = self
            .runs
            .iter()
            .any(|r| r.units.iter().any(|u| u.outstanding));
        // Without failure, a running run with pending items or retries still has work to request.
        let pending = !self.failing
            && self
                .runs
                .iter()
                .any(|r| r.state == RunState::Running && r.units.iter().any(|u| u.done.is_none()));
        if outstanding || pending {
            return;
        }
        self.render_output();
        self.status = if self.failing {
            WorkflowStatus::Failed
        } else {
            WorkflowStatus::Succeeded
        };
    }

    /// Renders the workflow's output as Orquesta's `render_output`: in order, each entry
    /// seeing the ones before it (`ctx().a` after `- a: ...`), whatever the workflow's end.
    /// An entry that does not render is left out and its error recorded; it fails a workflow
    /// that would have succeeded (not a canceled one). The context is the workflow's, or
    /// empty when no task ended (Orquesta renders over its terminal tasks' context, and a
    /// workflow whose first task could not even start has none).
    fn render_output(&mut self) {
        let canceled = self.status == WorkflowStatus::Canceling;
        let any_ended = self
            .runs
            .iter()
            .any(|r| r.units.iter().any(|u| u.done.is_some()));
        let mut rolling = if any_ended {
            self.ctx.clone()
        } else {
            Map::new()
        };
        for (name, value) in self.workflow.output.clone() {
            let scope = Scope {
                kv: self.kv.0.as_ref(),
                ctx: Some(&rolling),
                tasks: Some(&self.task_status),
                states: Some(&*self),
                ..Scope::default()
            };
            match expr::render(&value, &scope) {
                Ok(v) => {
                    rolling.insert(name.clone(), v.clone());
                    self.output.insert(name, v);
                }
                Err(e) => {
                    self.errors.push(json!({"type": "error", "message": e}));
                    if !canceled {
                        self.failing = true;
                    }
                }
            }
        }
    }
}

/// A `delay`, `retry` or `concurrency` value: the number, or its expression's value, which must
/// be a whole number (a task error otherwise, saying what it gave).
fn eval_count(count: &Count, scope: &Scope, what: &str) -> Result<u64, String> {
    let source = match count {
        Count::Fixed(n) => return Ok(*n),
        Count::Expression(source) => source,
    };
    let e =
        expr::single(source).ok_or_else(|| format!("{what}: '{source}' is not an expression"))?;
    let v = expr::eval_single(e, scope).map_err(|e| format!("{what}: {e}"))?;
    match &v {
        Value::Number(n) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or_default()),
        Value::String(s) if s.trim().parse::<u64>().is_ok() => {
            Ok(s.trim().parse().unwrap_or_default())
        }
        other => Err(format!(
            "{what}: '{source}' gave {other}, which is not a whole number of at least 0"
        )),
    }
}

/// A node's parameters rendered one by one, as st2 renders them, a failure naming the
/// parameter as st2's does.
fn render_chain_parameters(
    node: &str,
    params: &Map<String, Value>,
    scope: &Scope,
) -> Result<Map<String, Value>, String> {
    params
        .iter()
        .map(|(key, value)| match expr::render(value, scope) {
            Ok(v) => Ok((key.clone(), v)),
            Err(e) => Err(format!(
                "Failed rendering value for action parameter \"{key}\" in task \"{node}\" (template string={}): {e}",
                template_text(value)
            )),
        })
        .collect()
}

/// A template as st2 quotes it in an error: the text, or the JSON of a list or map.
fn template_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A run's result once every execution of it has ended: its one execution's result, or its
/// items' results in order.
fn run_result(run: &TaskRun) -> Option<Value> {
    if run.units.is_empty() {
        // A with-items run over no items succeeded with an empty list; a run that failed
        // before it could request anything has no result.
        return (run.state == RunState::Done && run.items.is_some()).then(|| json!([]));
    }
    let mut results = Vec::with_capacity(run.units.len());
    for unit in &run.units {
        results.push(unit.done.as_ref()?.result.clone());
    }
    Some(if run.items.is_some() {
        Value::Array(results)
    } else {
        results.into_iter().next().unwrap_or_default()
    })
}

/// A run's result as st2's task execution record holds it: a with-items run's is
/// `{items: [{status, result}, ...]}` (`null` for an item not ended), any other's its one
/// execution's result (`null` until it ends).
fn record_result(run: &TaskRun) -> Value {
    if run.items.is_some() {
        let items: Vec<Value> = run
            .units
            .iter()
            .map(|u| match &u.done {
                Some(d) => json!({"status": d.status.as_str(), "result": d.result}),
                None => Value::Null,
            })
            .collect();
        return json!({ "items": items });
    }
    run_result(run).unwrap_or(Value::Null)
}

impl Conductor {
    /// The latest started run of `task` on `route`, else on the routes it split from (the
    /// nearest first), as st2's `task()` looks.
    fn run_on_route(&self, task: &str, route: usize) -> Option<&TaskRun> {
        let on = |r: usize| {
            self.runs
                .iter()
                .rev()
                .find(|run| run.name == task && run.route == r && run.state != RunState::Staged)
        };
        if let Some(run) = on(route) {
            return Some(run);
        }
        let current = self.routes.get(route)?;
        (0..route)
            .rev()
            .filter(|r| {
                self.routes
                    .get(*r)
                    .is_some_and(|earlier| earlier.iter().all(|t| current.contains(t)))
            })
            .find_map(on)
    }

    fn entry_of(&self, run: &TaskRun) -> Value {
        let status = match run.state {
            RunState::Done => json!(run.status_of_units()),
            _ => self
                .task_status
                .get(&run.name)
                .cloned()
                .unwrap_or(json!("running")),
        };
        expr::task_entry_value(&run.name, run.route, &status, record_result(run))
    }
}

impl TaskStates for Conductor {
    fn task_state(&self, task: &str, route: usize) -> Option<Value> {
        self.run_on_route(task, route).map(|run| self.entry_of(run))
    }

    fn task_states(&self, route: usize) -> Map<String, Value> {
        let mut out = Map::new();
        for run in self.runs.iter().filter(|r| r.state != RunState::Staged) {
            out.insert(expr::route_key(&run.name, run.route), self.entry_of(run));
        }
        let names: BTreeSet<&str> = self.runs.iter().map(|r| r.name.as_str()).collect();
        for name in names {
            if let Some(entry) = self.task_state(name, route) {
                out.insert(name.to_string(), entry);
            }
        }
        out
    }
}

fn render_setup(
    v: &Value,
    ctx: &Map<String, Value>,
    kv: Option<&Arc<dyn KeyValueLookup>>,
    what: &str,
) -> Result<Value, Error> {
    let scope = Scope {
        kv,
        ctx: Some(ctx),
        ..Scope::default()
    };
    expr::render(v, &scope).map_err(|message| Error::Expression {
        what: what.to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json_mid_run() {
        let wf = Workflow::parse(
            "version: 1.0\ntasks:\n  a:\n    action: core.echo\n    next:\n      - publish: [x: \"{{ result() }}\"]\n        do: b\n  b:\n    action: core.echo\n    input: {v: \"{{ ctx().x }}\"}\noutput:\n  - x: \"{{ ctx().x }}\"\n",
        )
        .unwrap();
        let mut c = Conductor::new(wf, json!({})).unwrap();
        assert_eq!(c.next_requests().len(), 1);
        let ok = |r| TaskOutcome {
            status: OutcomeStatus::Succeeded,
            result: r,
        };
        c.on_task_result("a", None, ok(json!(7))).unwrap();
        let saved = serde_json::to_string(&c).unwrap();
        let mut c: Conductor = serde_json::from_str(&saved).unwrap();
        let reqs = c.next_requests();
        assert_eq!(reqs[0].input, json!({"v": 7}).as_object().cloned().unwrap());
        assert!(c.on_task_result("a", None, ok(json!(1))).is_err());
        c.on_task_result("b", None, ok(json!(null))).unwrap();
        assert_eq!(c.status(), WorkflowStatus::Succeeded);
        assert_eq!(c.output(), json!({"output": {"x": 7}}));
    }

    /// A large with-items run is saved as a small record plus parts; saved and restored at
    /// every step, it ends exactly as one that never left memory.
    #[test]
    fn large_with_items_state_round_trips_through_parts() {
        let wf = Workflow::parse(
            "version: 1.0\ntasks:\n  each:\n    with:\n      items: i in {{ range(200) | list }}\n      concurrency: 7\n    action: core.echo\n    input: {n: \"{{ item('i') }}\"}\n    next:\n      - publish: [all: \"{{ result() }}\"]\noutput:\n  - sum: \"{{ ctx().all | sum }}\"\n",
        )
        .unwrap();
        let mut c = Conductor::new(wf, json!({})).unwrap();
        let mut saved: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut pending = c.next_requests();
        while let Some(req) = pending.pop() {
            let n = req.input["n"].clone();
            c.on_task_result(
                &req.task,
                req.item,
                TaskOutcome {
                    status: if n == json!(13) && req.attempt == 0 {
                        OutcomeStatus::Failed
                    } else {
                        OutcomeStatus::Succeeded
                    },
                    result: n,
                },
            )
            .unwrap();
            pending.extend(c.next_requests());
            saved.extend(c.take_parts());
            let record = serde_json::to_string(&c).unwrap();
            assert!(
                record.len() < 4096,
                "the record stays small: {} bytes",
                record.len()
            );
            c = serde_json::from_str(&record).unwrap();
            c.restore_parts(saved.clone().into_iter().collect())
                .unwrap();
        }
        assert_eq!(c.status(), WorkflowStatus::Failed);
        c.rerun(&[], &[]).unwrap();
        let again = c.next_requests();
        assert_eq!(again.len(), 1);
        c.on_task_result(
            "each",
            again[0].item,
            TaskOutcome {
                status: OutcomeStatus::Succeeded,
                result: json!(13),
            },
        )
        .unwrap();
        assert_eq!(c.status(), WorkflowStatus::Succeeded);
        assert_eq!(c.output(), json!({"output": {"sum": 19900}}));
    }
}
