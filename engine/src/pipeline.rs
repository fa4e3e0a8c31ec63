//! The running engine: trigger instances in, rules loop, scheduler, worker pool, records out.
//!
//! Order of durability: a trigger instance is on disk before anyone is told it was accepted;
//! the rules loop writes enforcements and the executions they request in one transaction
//! (exactly once per instance and rule) before dispatching them; workers persist every status
//! change. Rhai runs on the worker pool's own threads, never on the async runtime's threads.
//! The bus between the rules loop and the workers is [`WorkQueue`]; a work item carries what a
//! worker needs, so another transport can replace the in-process one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Map, Value};
use squall_actions::{
    mask_secrets, validate_params, CancelToken, LogLine, RhaiRuntime, RunnerType, ScriptJob,
};
use squall_rules::{EvalEnv, RuleSet, ThrottleState};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::metrics::Metrics;
use crate::model::{
    Execution, ExecutionStatus, RuleEnforcement, TriggerInstance, TriggerInstanceStatus,
    SCHEMA_VERSION,
};
use crate::packs::Catalog;
use crate::policies::Policies;
use crate::store::{ScriptKv, Store, StoreError, StoreKv};

mod correlation;
mod http;
pub mod hub;
mod inquiries;
mod later;
mod live;
mod marks;
mod notify;
mod out;
mod python;
pub mod remote;
mod results;
mod shell;
mod workflows;

pub use correlation::CORRELATION_TICK;
pub use inquiries::{inquiry_json, INQUIRY_TRIGGER};
pub(crate) use live::outcome_status;
use live::LiveLog;
pub use out::{
    execution_json, is_workflow, trigger_instance_json, ExecutionOut, TriggerInstanceOut,
};
pub use workflows::Control;
use workflows::WorkflowEvent;

/// An event on the live stream (`GET /api/v1/stream`), st2's event names; its data is
/// serialized once, whoever follows the stream.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// Given by the hub as it sends the event (what callers set is replaced).
    pub id: u64,
    /// The engine's own names are static; an announcement's depends on its route.
    pub event: std::borrow::Cow<'static, str>,
    pub data: Arc<str>,
}

/// The most work items one worker takes at once when there is a backlog.
const MAX_WORKER_BATCH: usize = 64;

/// What a worker needs to run one execution.
#[derive(Clone)]
pub struct WorkItem {
    pub execution_id: String,
    pub action: String,
    pub runner: RunnerType,
    pub source: Option<Arc<str>>,
    pub parameters: Map<String, Value>,
    pub ctx: Value,
    pub timeout: Option<Duration>,
    /// Set when the action's pack config does not fit its schema: the action fails with it.
    pub config_error: Option<String>,
    /// With remote workers: the named queue it goes to (`None`: the shared one).
    pub queue: Option<String>,
}

/// A trigger instance on its way to the rules loop, with its journal ticket when it comes
/// straight from `Engine::ingest`.
pub type Accepted = (Arc<TriggerInstance>, Option<Arc<crate::journal::Ticket>>);

/// The bus between the scheduler and the workers.
pub trait WorkQueue: Send + Sync {
    fn push(&self, item: WorkItem);
    /// Waits up to `timeout` for an item.
    fn pop(&self, timeout: Duration) -> Option<WorkItem>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-process work queue.
pub struct LocalQueue {
    tx: crossbeam_channel::Sender<WorkItem>,
    rx: crossbeam_channel::Receiver<WorkItem>,
}

impl Default for LocalQueue {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        LocalQueue { tx, rx }
    }
}

impl WorkQueue for LocalQueue {
    fn push(&self, item: WorkItem) {
        // The receiver lives as long as the queue: a send cannot fail while `self` exists.
        let _ = self.tx.send(item);
    }
    fn pop(&self, timeout: Duration) -> Option<WorkItem> {
        self.rx.recv_timeout(timeout).ok()
    }
    fn len(&self) -> usize {
        self.rx.len()
    }
}

/// What is loaded from the packs: swapped as a whole on reload.
pub struct Loaded {
    pub catalog: Catalog,
    pub rules: RuleSet,
    /// Webhook urls some enabled rule listens to.
    pub webhooks: HashSet<String>,
    pub policies: Policies,
    /// Every alias's formats, compiled once for matching chat commands, and each indexed
    /// alias's reference (in the index's order: by pack, then name).
    pub aliases: squall_rules::AliasIndex,
    pub alias_refs: Vec<String>,
}

impl Loaded {
    pub fn new(catalog: Catalog) -> Loaded {
        // A rule that fails to compile was reported as a pack problem; the others still run.
        let (rules, _) = RuleSet::build(catalog.rules().map(|r| r.rule.clone()).collect());
        let is_hook = |t: &str| squall_rules::canonical_trigger_ref(t) == "core.webhook";
        let webhooks = rules
            .rules()
            .iter()
            .filter(|r| r.enabled)
            .flat_map(|r| {
                // A rule's own trigger, and its correlation parts' (a part may name its hook).
                let own = is_hook(&r.trigger_type).then_some(&r.trigger_parameters);
                let parts = r.correlate.iter().flat_map(|c| {
                    c.parts
                        .iter()
                        .chain(&c.none)
                        .filter(|p| is_hook(&p.trigger_type))
                        .map(|p| &p.parameters)
                });
                own.into_iter().chain(parts)
            })
            .filter_map(|params| params.get("url").and_then(Value::as_str))
            .map(|u| crate::model::hook_name(u).to_string())
            .collect();
        let policies = Policies::from_catalog(&catalog);
        let mut listed: Vec<(&str, &crate::packs::LoadedAlias)> = catalog
            .packs
            .iter()
            .flat_map(|p| p.aliases.iter().map(move |a| (p.reference.as_str(), a)))
            .collect();
        listed.sort_by(|a, b| (a.0, &a.1.alias.name).cmp(&(b.0, &b.1.alias.name)));
        let alias_refs = listed.iter().map(|(_, a)| a.reference.clone()).collect();
        let aliases: Vec<squall_rules::Alias> =
            listed.iter().map(|(_, a)| a.alias.clone()).collect();
        let aliases = squall_rules::AliasIndex::new(&aliases);
        Loaded {
            catalog,
            rules,
            webhooks,
            policies,
            aliases,
            alias_refs,
        }
    }
}

/// Why [`Engine::new_execution`] refused an execution, each invalid parameter named: what a
/// failed rule enforcement records, and what the post-mortem rule test shows.
pub fn refusal_reason(err: &EngineError) -> String {
    match err {
        EngineError::InvalidParameters { errors, .. } => format!(
            "{err}: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => other.to_string(),
    }
}

/// Group commit: callers that need their writes durable wait for the next flush, and one flush
/// serves everyone who asked before it started.
struct Flusher {
    waiting: Mutex<Vec<oneshot::Sender<Result<(), String>>>>,
    wake: Notify,
}

/// How the reason of an execution held back by a concurrency policy begins.
const DELAYED_BY_POLICY: &str = "delayed by policy";

/// The engine.
pub struct Engine {
    pub store: Arc<Store>,
    /// Makes accepted trigger instances durable before sled's (slower) flush does.
    journal: Arc<crate::journal::Journal>,
    loaded: RwLock<Arc<Loaded>>,
    pub runtime: Arc<RhaiRuntime>,
    pub events: hub::EventHub,
    pub metrics: Metrics,
    pub queue: Arc<dyn WorkQueue>,
    /// Work that waits (policy-delayed claims, retries' delays), on one thread.
    later: Arc<later::Later>,
    ti_tx: mpsc::UnboundedSender<Accepted>,
    cancels: Mutex<HashMap<String, CancelToken>>,
    throttle: Mutex<ThrottleState>,
    flusher: Flusher,
    running: AtomicUsize,
    stopping: AtomicBool,
    /// Set when a shutdown's grace period ran out and what still ran was canceled.
    grace_over: AtomicBool,
    workers: AtomicUsize,
    /// To the workflow driver (see `workflows`), which alone advances running workflows.
    wf_tx: crossbeam_channel::Sender<WorkflowEvent>,
    wf_rx: Mutex<Option<crossbeam_channel::Receiver<WorkflowEvent>>>,
    /// Workflows with a task waiting for an inquiry's answer (see `workflows`).
    waiting: Mutex<HashSet<String>>,
    /// Correlation rules' open groups (see `correlation`), the timer's "look now" flag (set
    /// when rules are loaded) and whether a window instance waits for the rules loop.
    correlations: Mutex<correlation::Correlations>,
    correlation_wake: AtomicBool,
    correlation_tick_pending: AtomicBool,
    /// The sensors packs declared, running or with the reason they are not.
    pub sensors: Mutex<Vec<crate::sensing::RunningSensor>>,
    /// `running` marks not yet in the store (see `marks`).
    marks: Arc<marks::RunningMarks>,
    /// Batches whose results wait for their scripts' key-value writes (see `results`).
    results: results::Results,
    /// With remote workers (`squall run --amqp`): their runs and the work to publish.
    remote: Option<Arc<remote::Remote>>,
    /// Squall's own chat (`chatops:` settings), where announcements are posted.
    pub chat: std::sync::OnceLock<Arc<crate::chatops::Chat>>,
    /// The runtime announcements post on, and the engine itself for the tasks that do.
    handle: std::sync::OnceLock<tokio::runtime::Handle>,
    this: std::sync::OnceLock<std::sync::Weak<Engine>>,
}

/// Errors the API turns into responses.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the store could not be flushed to disk: {0}")]
    Durability(String),
    #[error("no loaded pack provides action '{0}'")]
    UnknownAction(String),
    #[error("action '{0}' is disabled")]
    DisabledAction(String),
    #[error("invalid parameters for action '{action}'")]
    InvalidParameters {
        action: String,
        errors: Vec<squall_actions::ParamError>,
    },
    #[error("no execution {0}")]
    NoExecution(String),
    #[error("squall is shutting down")]
    ShuttingDown,
    #[error("execution {0} is not a workflow")]
    NotWorkflow(String),
    #[error("workflow: {0}")]
    Workflow(String),
    /// An inquiry that cannot take this response (answered, timed out, not valid).
    #[error("{0}")]
    InquiryRefused(String),
    /// A user the inquiry does not allow to respond.
    #[error("{0}")]
    InquiryForbidden(String),
}

impl Engine {
    /// Builds the engine and returns the receiver the rules loop consumes (see [`Engine::start`]).
    pub fn new(
        store: Arc<Store>,
        journal: Arc<crate::journal::Journal>,
        catalog: Catalog,
        runtime: Arc<RhaiRuntime>,
    ) -> (Arc<Engine>, mpsc::UnboundedReceiver<Accepted>) {
        Engine::with_workers(store, journal, catalog, runtime, None)
    }

    /// [`Engine::new`], with remote workers when `remote` is given: work items go to its
    /// outbox (published by `crate::amqp`) and no local worker runs.
    pub fn with_workers(
        store: Arc<Store>,
        journal: Arc<crate::journal::Journal>,
        catalog: Catalog,
        runtime: Arc<RhaiRuntime>,
        remote: Option<Arc<remote::Remote>>,
    ) -> (Arc<Engine>, mpsc::UnboundedReceiver<Accepted>) {
        let (ti_tx, ti_rx) = mpsc::unbounded_channel();
        let to_rules: mpsc::UnboundedSender<Accepted> = ti_tx.clone();
        journal.set_hand_on(Box::new(move |batch| {
            for (ti, ticket) in batch {
                let _ = to_rules.send((ti, Some(ticket)));
            }
        }));
        let events = hub::EventHub::new(4096);
        let (wf_tx, wf_rx) = crossbeam_channel::unbounded();
        let engine = Arc::new(Engine {
            store,
            journal,
            loaded: RwLock::new(Arc::new(Loaded::new(catalog))),
            runtime,
            events,
            metrics: Metrics::default(),
            queue: match &remote {
                Some(r) => Arc::new(remote::RemoteQueue(r.clone())),
                None => Arc::new(LocalQueue::default()),
            },
            later: Arc::default(),
            ti_tx,
            cancels: Mutex::new(HashMap::new()),
            throttle: Mutex::new(ThrottleState::default()),
            flusher: Flusher {
                waiting: Mutex::new(Vec::new()),
                wake: Notify::new(),
            },
            running: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            grace_over: AtomicBool::new(false),
            workers: AtomicUsize::new(1),
            wf_tx,
            wf_rx: Mutex::new(Some(wf_rx)),
            waiting: Mutex::new(HashSet::new()),
            correlations: Mutex::default(),
            correlation_wake: AtomicBool::new(false),
            correlation_tick_pending: AtomicBool::new(false),
            sensors: Mutex::new(Vec::new()),
            marks: Arc::default(),
            results: results::Results::default(),
            remote,
            chat: std::sync::OnceLock::new(),
            handle: std::sync::OnceLock::new(),
            this: std::sync::OnceLock::new(),
        });
        {
            // The console feed reads an execution's latest state when its window closes.
            let weak = Arc::downgrade(&engine);
            engine.events.set_renderer(Arc::new(move |id: &str| {
                let engine = weak.upgrade()?;
                let e = engine.store.execution(id).ok()??;
                let loaded = engine.loaded();
                serde_json::to_string(&ExecutionOut::new(&loaded, &e))
                    .ok()
                    .map(Arc::from)
            }));
        }
        let _ = engine.this.set(Arc::downgrade(&engine));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let _ = engine.handle.set(handle);
        }
        (engine, ti_rx)
    }

    pub fn loaded(&self) -> Arc<Loaded> {
        match self.loaded.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces what is loaded (pack reload).
    pub fn set_loaded(&self, catalog: Catalog) {
        let new = Arc::new(Loaded::new(catalog));
        for a in new.catalog.actions() {
            self.runtime.forget_script(&a.reference);
        }
        match self.loaded.write() {
            Ok(mut g) => *g = new.clone(),
            Err(poisoned) => *poisoned.into_inner() = new.clone(),
        }
        self.load_correlations(&new);
    }

    pub fn publish(&self, event: impl Into<std::borrow::Cow<'static, str>>, data: Value) {
        self.publish_serialized(event, &data);
    }

    /// [`Engine::publish`] of anything serializable, serialized once.
    fn publish_serialized(
        &self,
        event: impl Into<std::borrow::Cow<'static, str>>,
        data: &impl serde::Serialize,
    ) {
        let event = event.into();
        if !self.events.wants(&event) {
            return;
        }
        let data = match serde_json::to_string(data) {
            Ok(text) => Arc::from(text),
            Err(e) => {
                tracing::error!(event = %event, error = %e, "cannot serialize a stream event");
                return;
            }
        };
        // No subscriber is not an error: the stream is best effort for live viewers.
        self.events.send(StreamEvent { id: 0, event, data });
    }

    /// Publishes an execution's change (`st2.execution__create` or `__update`) when someone
    /// follows the stream.
    fn publish_execution(&self, event: &'static str, loaded: &Loaded, e: &Execution) {
        if self.events.wants(event) {
            self.publish_serialized(event, &ExecutionOut::new(loaded, e));
        }
        self.events.touched(&e.id, event == "st2.execution__create");
    }

    /// Why squall cannot accept trigger instances now, if it cannot (the journal failed).
    pub fn unhealthy(&self) -> Option<String> {
        self.journal
            .failure()
            .map(|e| format!("the ingest journal refuses writes after a failure: {e}"))
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Bytes the journal's segments take on disk.
    pub fn journal_size_on_disk(&self) -> u64 {
        self.journal.size_on_disk()
    }

    pub fn running_executions(&self) -> usize {
        self.running.load(Ordering::SeqCst) + self.results.pending()
    }

    /// Executions this process runs itself: a remote worker's go on while this server stops
    /// (their results are applied after it starts again).
    fn running_here(&self) -> usize {
        let remote = self.remote.as_ref().map_or(0, |r| r.counted_runs());
        self.running_executions().saturating_sub(remote)
    }

    /// Waits until everything written before the call is on disk.
    pub async fn durable(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        match self.flusher.waiting.lock() {
            Ok(mut w) => w.push(tx),
            Err(p) => p.into_inner().push(tx),
        }
        self.flusher.wake.notify_one();
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EngineError::Durability(e)),
            Err(_) => Err(EngineError::ShuttingDown),
        }
    }

    /// [`Engine::durable`] for worker threads.
    fn durable_blocking(&self) {
        if let Err(e) = self.store.flush_blocking() {
            tracing::error!(error = %e, "flushing the store failed");
        }
    }

    /// Ends unanswered inquiries when their `ttl` runs out (see `inquiries`).
    async fn inquiry_expiry_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(inquiries::EXPIRY_CHECK);
        loop {
            tick.tick().await;
            if self.is_stopping() {
                return;
            }
            let engine = self.clone();
            let _ = tokio::task::spawn_blocking(move || engine.expire_inquiries(Utc::now())).await;
        }
    }

    async fn flush_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let periodic = tokio::select! {
                _ = self.flusher.wake.notified() => false,
                _ = tick.tick() => true,
            };
            let batch: Vec<_> = match self.flusher.waiting.lock() {
                Ok(mut w) => std::mem::take(&mut *w),
                Err(p) => std::mem::take(&mut *p.into_inner()),
            };
            // Without waiters, flush once a second only to let closed journal segments go.
            if batch.is_empty() && (!periodic || self.journal.releasable().is_empty()) {
                continue;
            }
            // sled's synchronous flush on a blocking thread: measured several times faster
            // here than its flush_async under concurrent writers.
            let store = self.store.clone();
            // Journal segments whose records are all in the store are safe once this flush is.
            let releasable = self.journal.releasable();
            let result = match tokio::task::spawn_blocking(move || store.flush_blocking()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("flush task failed: {e}")),
            };
            match &result {
                Err(e) => tracing::error!(error = %e, "flushing the store failed"),
                Ok(()) => self.journal.release(&releasable),
            }
            for tx in batch {
                let _ = tx.send(result.clone());
            }
        }
    }

    /// Accepts a trigger instance: handed to the rules loop by the journal's writer as it
    /// takes it for writing, on disk when this returns Ok.
    pub async fn ingest(&self, ti: TriggerInstance) -> Result<Arc<TriggerInstance>, EngineError> {
        if self.is_stopping() {
            return Err(EngineError::ShuttingDown);
        }
        // The journal makes it durable; the rules loop puts it into the store. It goes to the
        // rules loop while its sync runs: whatever follows from it is made durable by later
        // journal records (a `running` mark, a result) or store flushes (a workflow's step),
        // and those cannot be durable unless it is (see `Journal::submit_and_hand_on`).
        // Published first: the journal's writer may hand it to the rules loop, which publishes
        // its executions, before `submit_and_hand_on` returns. (Should the append fail, which
        // only a failed disk or a stopping journal does, the stream has shown an instance the
        // caller is told was refused.)
        if ti.trigger == squall_sensors::docker::CONTAINER_EVENT {
            let action = ti.payload["action"].as_str().unwrap_or("?");
            let host = ti
                .context
                .as_ref()
                .and_then(|c| c["host"].as_str())
                .unwrap_or_else(|| crate::sensing::host_name());
            self.metrics.docker_event(action, host);
        }
        if self.events.wants("st2.trigger_instance__create") {
            self.publish_serialized(
                "st2.trigger_instance__create",
                &TriggerInstanceOut::from(&ti),
            );
        }
        let ti = Arc::new(ti);
        let synced = self
            .journal
            .submit_and_hand_on(ti.clone(), Arc::new(crate::journal::Ticket::default()))
            .map_err(|e| EngineError::Durability(e.to_string()))?;
        synced
            .wait()
            .await
            .map_err(|e| EngineError::Durability(e.to_string()))?;
        self.metrics.trigger_instance(&ti.trigger);
        Ok(ti)
    }

    /// Starts the flusher, the rules loop and `workers` worker threads, and recovers what a
    /// previous run left unfinished.
    pub fn start(
        self: &Arc<Self>,
        ti_rx: mpsc::UnboundedReceiver<Accepted>,
        workers: usize,
    ) -> Result<Vec<std::thread::JoinHandle<()>>, EngineError> {
        let _ = self.handle.set(tokio::runtime::Handle::current());
        tokio::spawn(self.clone().flush_loop());
        tokio::spawn(self.clone().inquiry_expiry_loop());
        let wf_rx = match self.wf_rx.lock() {
            Ok(mut rx) => rx.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(rx) = wf_rx {
            let engine = self.clone();
            std::thread::Builder::new()
                .name("squall-workflows".into())
                .spawn(move || engine.workflow_loop(rx))
                .map_err(|e| {
                    EngineError::Durability(format!("cannot start the workflow thread: {e}"))
                })?;
        }
        self.marks
            .start_writer(&self.store, &self.journal)
            .map_err(|e| {
                EngineError::Durability(format!("cannot start the running-marks thread: {e}"))
            })?;
        self.later.start(Arc::downgrade(self)).map_err(|e| {
            EngineError::Durability(format!("cannot start the thread for waiting work: {e}"))
        })?;
        self.start_results().map_err(|e| {
            EngineError::Durability(format!("cannot start the results thread: {e}"))
        })?;
        // Before the journal's instances are replayed: they feed the stored groups.
        self.load_correlations(&self.loaded());
        self.recover()?;
        tokio::spawn(self.clone().correlation_loop());
        let engine = self.clone();
        std::thread::Builder::new()
            .name("squall-rules".into())
            .spawn(move || engine.rules_loop(ti_rx))
            .map_err(|e| EngineError::Durability(format!("cannot start the rules loop: {e}")))?;
        let mut handles = Vec::new();
        if self.remote.is_some() {
            // Remote workers run the actions (see `remote`).
            return Ok(handles);
        }
        self.workers.store(workers.max(1), Ordering::SeqCst);
        for i in 0..workers.max(1) {
            let engine = self.clone();
            let handle = std::thread::Builder::new()
                .name(format!("squall-worker-{i}"))
                .stack_size(squall_actions::SCRIPT_THREAD_STACK_SIZE)
                .spawn(move || engine.worker_loop())
                .map_err(|e| {
                    EngineError::Durability(format!("cannot start a worker thread: {e}"))
                })?;
            handles.push(handle);
        }
        Ok(handles)
    }

    /// After a crash: re-process pending trigger instances (enforcement is exactly-once),
    /// re-dispatch queued executions, re-run in-flight idempotent ones and abandon the rest.
    fn recover(&self) -> Result<(), EngineError> {
        let pending = self.store.pending_trigger_instances()?;
        if !pending.is_empty() {
            tracing::info!(
                count = pending.len(),
                "re-processing trigger instances accepted before a restart"
            );
        }
        for ti in pending {
            let _ = self.ti_tx.send((Arc::new(ti), None));
        }
        let loaded = self.loaded();
        let mut abandoned_tasks = Vec::new();
        let mut abandoned = Vec::new();
        let mut workflows = Vec::new();
        for mut e in self.store.active_executions()? {
            if e.status == ExecutionStatus::Pending {
                // An inquiry waits for its answer (or its ttl): nothing runs again. Its
                // workflow is told, so it pauses if nothing else of it runs.
                if let Some(parent) = e.parent.clone() {
                    self.workflow_event(WorkflowEvent::ChildPending(parent));
                }
                continue;
            }
            // A started workflow is carried on by its tasks' results; its state is on disk.
            if e.workflow.is_some() && !e.status.is_terminal() {
                workflows.push(e);
                continue;
            }
            if self.remote.is_some()
                && e.claim.is_some()
                && matches!(
                    e.status,
                    ExecutionStatus::Running | ExecutionStatus::Canceling
                )
            {
                // A remote worker runs it (or the broker gives its item to another): its
                // result, or the item's next claim, decides.
                self.adopt_remote_run(&e);
                continue;
            }
            match e.status {
                ExecutionStatus::Running
                | ExecutionStatus::Canceling
                | ExecutionStatus::Pausing
                    if !e.idempotent =>
                {
                    e.status = ExecutionStatus::Abandoned;
                    e.end_timestamp = Some(Utc::now());
                    e.reason = Some(
                        "squall stopped while this execution was running and the action is not idempotent, so it was not run again".into(),
                    );
                    self.store.put_execution(&e)?;
                    self.metrics.execution_finished(e.status, 0.0);
                    tracing::warn!(execution = %e.id, action = %e.action, "abandoned after restart");
                    if e.parent.is_some() {
                        abandoned_tasks.push(e);
                    } else {
                        abandoned.push(e);
                    }
                }
                _ => {
                    if matches!(
                        e.status,
                        ExecutionStatus::Running | ExecutionStatus::Canceling
                    ) {
                        e.reason =
                            Some("run again after a restart (the action is idempotent)".into());
                    }
                    if e.not_before.is_some_and(|t| t > Utc::now()) {
                        // A retry still waiting for its delay: it keeps waiting.
                        self.dispatch_when_due(&e);
                        continue;
                    }
                    e.status = ExecutionStatus::Scheduled;
                    self.store.put_execution(&e)?;
                    self.dispatch(&loaded, &e, None);
                }
            }
        }
        self.store.flush_blocking()?;
        // Who asked hears of it (a chat command's answer says `abandoned`); at least once: a
        // crash before this flush abandons them again at the next start, and notifies again.
        let notes: Vec<TriggerInstance> = abandoned
            .iter()
            .flat_map(|e| self.notify_instances(&loaded, e))
            .collect();
        for ti in &notes {
            self.store.insert_trigger_instance(ti)?;
        }
        if !notes.is_empty() {
            self.store.flush_blocking()?;
            for ti in notes {
                let _ = self.ti_tx.send((Arc::new(ti), None));
            }
        }
        // Their workflows follow their failure paths.
        let reported: HashSet<String> = abandoned_tasks.iter().map(|e| e.id.clone()).collect();
        for e in abandoned_tasks {
            self.workflow_event(WorkflowEvent::TaskEnded(e));
        }
        self.reconcile_workflows(&workflows, &reported);
        Ok(())
    }

    /// The rules loop, on a thread of its own: sled can block for a while under load, and a
    /// thread that waits on the channel costs fewer wake-ups per batch than a task that hands
    /// each batch to the blocking pool.
    fn rules_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Accepted>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let loaded = self.loaded();
            let worked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.enforce_batch(&loaded, &batch)
            }));
            let Ok(to_dispatch) = worked else {
                tracing::error!("the rules loop's batch panicked; its instances stay pending");
                continue;
            };
            // No sync here: an action that is not idempotent starts only once its `running`
            // mark is journaled, and after a crash that mark comes back with its rule's
            // enforcement. One that never ran may be lost with its enforcement in a crash; its
            // instance is still in the journal or pending and is enforced again.
            let payloads: HashMap<&str, &Value> = batch
                .iter()
                .map(|(ti, _)| (ti.id.as_str(), &ti.payload))
                .collect();
            for e in to_dispatch {
                self.publish_execution("st2.execution__create", &loaded, &e);
                let trigger = e
                    .trigger_instance
                    .as_deref()
                    .and_then(|id| payloads.get(id).copied());
                self.schedule(&loaded, e, trigger);
            }
        }
    }

    /// Enforces a batch of instances. Those straight from the journal (the common case) are
    /// written with their outcomes in one transaction; the others (replayed after a restart,
    /// or stored before they came here) one by one, with the exactly-once check.
    fn enforce_batch(&self, loaded: &Loaded, batch: &[Accepted]) -> Vec<Execution> {
        self.metrics.rules_loop_done(batch.len());
        let mut fresh = Vec::new();
        let mut to_dispatch = Vec::new();
        for (ti, ticket) in batch {
            // One straight from `ingest` is new to the store: `TriggerInstance::new` gave it a
            // fresh id, and `ingest` takes it by value. Instances the journal held at start
            // were put into the store as pending and come here without a ticket.
            let new = ticket.is_some();
            let plan = match self.plan(loaded, ti, new) {
                Ok(plan) => plan,
                Err(e) => {
                    tracing::error!(trigger_instance = %ti.id, error = %e, "rules loop failed on an instance; it stays pending");
                    continue;
                }
            };
            if new {
                fresh.push((ti.clone(), plan, ticket.clone()));
                continue;
            }
            match self.store.complete_trigger_instance(
                &ti.id,
                plan.status,
                &plan.enforcements,
                &plan.executions,
                &plan.correlation,
            ) {
                Ok(written) => to_dispatch.extend(plan.written(&written)),
                Err(e) => {
                    tracing::error!(trigger_instance = %ti.id, error = %e, "rules loop failed on an instance; it stays pending");
                    continue;
                }
            }
        }
        if fresh.is_empty() {
            return to_dispatch;
        }
        // Handed to the store's writer, which writes them with the batches around them; their
        // journal records hold their segment until it has.
        let mut tickets = Vec::with_capacity(fresh.len());
        let mut list = Vec::with_capacity(fresh.len());
        let mut executions = Vec::new();
        for (ti, plan, ticket) in fresh {
            tickets.extend(ticket);
            list.push(crate::store::NewInstance {
                ti,
                status: plan.status,
                enforcements: plan.enforcements,
                executions: plan
                    .executions
                    .iter()
                    .map(|e| Arc::new(e.clone()))
                    .collect(),
                correlation: plan.correlation,
            });
            executions.extend(plan.executions);
        }
        let journal = self.journal.clone();
        let after: crate::store::AfterStored = Box::new(move || {
            for ticket in tickets {
                ticket.stored(&journal);
            }
        });
        match self.store.complete_new_later(list, Some(after)) {
            Ok(()) => to_dispatch.extend(executions),
            Err(e) => {
                // Left in the journal: replayed and enforced at the next start.
                tracing::error!(error = %e, "rules loop could not record a batch of instances; they stay in the journal");
            }
        }
        to_dispatch
    }

    /// Matches one instance and decides its outcome (nothing written). `fresh`: the instance
    /// is not in the store yet, so nothing can have been enforced for it.
    fn plan(
        &self,
        loaded: &Loaded,
        ti: &TriggerInstance,
        fresh: bool,
    ) -> Result<Plan, EngineError> {
        let env = EvalEnv {
            now: Utc::now(),
            kv: Arc::new(StoreKv(self.store.clone())),
        };
        let view = ti.rule_view();
        let eval = loaded.rules.evaluate(&view, &env);
        let already: HashSet<String> = if fresh {
            HashSet::new()
        } else {
            self.store.enforced_rules(&ti.id)?.into_iter().collect()
        };
        let mut enforcements = Vec::new();
        let mut executions = Vec::new();
        for (id, failure) in &eval.errors {
            let rule = loaded.rules.rule(*id);
            enforcements.push(enforcement(
                &rule.reference(),
                &ti.id,
                None,
                Some(format!("criteria could not be evaluated: {failure}")),
            ));
        }
        for &id in &eval.matched {
            let rule = loaded.rules.rule(id);
            let rule_ref = rule.reference();
            if already.contains(&rule_ref) {
                continue;
            }
            self.metrics.rule_matched(&rule_ref);
            let outcome = Enforced {
                rule_ref: &rule_ref,
                ti_id: &ti.id,
                now: env.now,
            };
            if !self.admitted(
                &outcome,
                rule.throttle.as_ref(),
                &ti.payload,
                &mut enforcements,
            ) {
                continue;
            }
            let request = loaded
                .rules
                .render_action(id, &ti.payload, ti.context.as_ref(), &env);
            self.request_action(
                loaded,
                &outcome,
                request,
                &mut enforcements,
                &mut executions,
            );
        }
        let correlation = if eval.correlated.is_empty() && ti.trigger != CORRELATION_TICK {
            Vec::new()
        } else {
            self.correlate(
                loaded,
                ti,
                &eval.correlated,
                &env,
                &mut enforcements,
                &mut executions,
            )
        };
        let status = if enforcements
            .iter()
            .any(|e| e.failure_reason.is_some() && e.execution_id.is_none())
            && executions.is_empty()
            && !eval.errors.is_empty()
        {
            TriggerInstanceStatus::ProcessingFailed
        } else {
            TriggerInstanceStatus::Processed
        };
        Ok(Plan {
            status,
            enforcements,
            executions,
            correlation,
        })
    }

    /// Whether a rule's `throttle` lets it through now (an enforcement saying why not, if not).
    fn admitted(
        &self,
        outcome: &Enforced<'_>,
        throttle: Option<&squall_rules::Throttle>,
        payload: &Value,
        enforcements: &mut Vec<RuleEnforcement>,
    ) -> bool {
        let Some(t) = throttle else {
            return true;
        };
        let key = ThrottleState::group_key(t, payload);
        let admitted = match self.throttle.lock() {
            Ok(mut s) => s.admit(outcome.rule_ref, t, &key, outcome.now),
            Err(p) => p.into_inner().admit(outcome.rule_ref, t, &key, outcome.now),
        };
        if !admitted {
            enforcements.push(enforcement(
                outcome.rule_ref,
                outcome.ti_id,
                None,
                Some(format!(
                    "throttled: at most {} per {} s for group {key}",
                    t.max,
                    t.window.as_secs()
                )),
            ));
        }
        admitted
    }

    /// A rule's rendered action as a requested execution and its enforcement, or the
    /// enforcement saying why it could not be requested.
    fn request_action(
        &self,
        loaded: &Loaded,
        outcome: &Enforced<'_>,
        request: Result<squall_rules::ActionRequest, String>,
        enforcements: &mut Vec<RuleEnforcement>,
        executions: &mut Vec<Execution>,
    ) {
        let (rule_ref, ti_id) = (outcome.rule_ref, outcome.ti_id);
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                enforcements.push(enforcement(rule_ref, ti_id, None, Some(e)));
                return;
            }
        };
        match self.new_execution(loaded, &request.action, request.parameters) {
            Ok(mut e) => {
                if request.queue.is_some() {
                    e.queue = request.queue;
                }
                e.rule = Some(rule_ref.to_string());
                e.trigger_instance = Some(ti_id.to_string());
                // Stored straight as scheduled (one write fewer) unless a concurrency
                // policy may hold it back.
                if loaded.policies.concurrency(&e.action).is_none() {
                    e.status = ExecutionStatus::Scheduled;
                }
                enforcements.push(enforcement(rule_ref, ti_id, Some(e.id.clone()), None));
                executions.push(e);
            }
            Err(err) => {
                let reason = refusal_reason(&err);
                enforcements.push(enforcement(rule_ref, ti_id, None, Some(reason)));
            }
        }
    }

    /// Validates parameters and builds a requested execution (not yet stored); a refusal says
    /// why with [`refusal_reason`].
    pub fn new_execution(
        &self,
        loaded: &Loaded,
        action_ref: &str,
        given: Map<String, Value>,
    ) -> Result<Execution, EngineError> {
        let action = loaded
            .catalog
            .action(action_ref)
            .ok_or_else(|| EngineError::UnknownAction(action_ref.to_string()))?;
        if !action.meta.enabled {
            return Err(EngineError::DisabledAction(action_ref.to_string()));
        }
        let params = validate_params(&action.meta, given).map_err(|errors| {
            EngineError::InvalidParameters {
                action: action_ref.to_string(),
                errors,
            }
        })?;
        let mut e = Execution::new(action_ref, params);
        e.idempotent = action.meta.idempotent;
        if let Some(template) = &action.meta.queue {
            e.queue = Some(render_queue(template, &e.parameters).map_err(|why| {
                EngineError::InvalidParameters {
                    action: action_ref.to_string(),
                    errors: vec![squall_actions::ParamError {
                        parameter: "queue".into(),
                        message: format!("the action's queue '{template}' does not render: {why}"),
                    }],
                }
            })?);
        }
        Ok(e)
    }

    /// Requests an execution from the API: stored, made durable, then scheduled.
    pub async fn request(&self, mut e: Execution) -> Result<Execution, EngineError> {
        if self.is_stopping() {
            return Err(EngineError::ShuttingDown);
        }
        e.v = SCHEMA_VERSION;
        // Asked to start later (st2's `delay`): it waits as a retry waits for its delay.
        let later = e.not_before.is_some_and(|t| t > Utc::now());
        if later {
            e.status = ExecutionStatus::Delayed;
        }
        self.store.put_execution(&e)?;
        self.durable().await?;
        let loaded = self.loaded();
        self.publish_execution("st2.execution__create", &loaded, &e);
        if later {
            self.dispatch_when_due(&e);
        } else {
            self.schedule(&loaded, e.clone(), None);
        }
        Ok(e)
    }

    /// Hands the execution to the workers (which apply its concurrency policy). `trigger`: the
    /// payload of its trigger instance when the caller has it (the rules loop), so the work item
    /// need not read it back from the store.
    fn schedule(&self, loaded: &Loaded, mut e: Execution, trigger: Option<&Value>) {
        // The concurrency policy is applied where a worker claims it (see `claim`).
        // Executions a rule requested were stored as scheduled already (see `enforce`).
        if e.status != ExecutionStatus::Scheduled {
            e.status = ExecutionStatus::Scheduled;
            if let Err(err) = self.store.put_execution(&e) {
                tracing::error!(error = %err, "could not record a scheduled execution");
            }
        }
        self.publish_execution("st2.execution__update", loaded, &e);
        self.dispatch(loaded, &e, trigger);
    }

    fn work_item(
        &self,
        loaded: &Loaded,
        e: &Execution,
        trigger: Option<&Value>,
    ) -> Option<WorkItem> {
        let trigger = match trigger {
            Some(payload) => Some(payload.clone()),
            None => e
                .trigger_instance
                .as_ref()
                .and_then(|id| self.store.trigger_instance(id).ok().flatten())
                .map(|t| t.payload),
        };
        let action = loaded.catalog.action(&e.action)?;
        let pack = loaded
            .catalog
            .packs
            .iter()
            .find(|p| p.reference == action.pack);
        let config = pack
            .map(|p| Value::Object(p.config.clone()))
            .unwrap_or(Value::Null);
        let config_error = pack.and_then(|p| p.config_error.clone());
        // Built by cloning the parts in: `json!` would copy each `Value` by serializing it.
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        let mut ctx = Map::with_capacity(8);
        ctx.insert("execution_id".into(), Value::String(e.id.clone()));
        ctx.insert("action".into(), Value::String(e.action.clone()));
        ctx.insert("rule".into(), text(&e.rule));
        ctx.insert("trigger_instance".into(), text(&e.trigger_instance));
        ctx.insert("user".into(), text(&e.user));
        ctx.insert("attempt".into(), Value::from(e.attempt));
        ctx.insert("config".into(), config);
        ctx.insert("trigger".into(), trigger.unwrap_or(Value::Null));
        Some(WorkItem {
            execution_id: e.id.clone(),
            action: e.action.clone(),
            runner: action.meta.runner_type,
            source: action.source.clone(),
            parameters: e.parameters.clone(),
            ctx: Value::Object(ctx),
            timeout: action.meta.timeout.map(Duration::from_secs),
            config_error,
            queue: e.queue.clone(),
        })
    }

    fn dispatch(&self, loaded: &Loaded, e: &Execution, trigger: Option<&Value>) {
        if let Some(action) = loaded.catalog.action(&e.action) {
            if action.meta.runner_type.is_workflow() {
                self.workflow_event(WorkflowEvent::Start(e.clone()));
                return;
            }
            if action.meta.runner_type == RunnerType::Inquirer {
                self.run_inquiry(loaded, e);
                return;
            }
            if action.meta.runner_type == RunnerType::Announcement {
                // The server announces, whichever workers run the rest: only it has the stream.
                if let Some(engine) = self.this.get().and_then(std::sync::Weak::upgrade) {
                    engine.run_announcement(e);
                }
                return;
            }
        }
        match self.work_item(loaded, e, trigger) {
            Some(item) => self.queue.push(item),
            None => {
                let mut e = e.clone();
                let result = json!({"error": format!("action '{}' is no longer loaded", e.action)});
                self.finish(loaded, &mut e, ExecutionStatus::Failed, result, Vec::new());
            }
        }
    }

    fn worker_loop(self: Arc<Self>) {
        loop {
            if self.is_stopping() && self.queue.is_empty() {
                return;
            }
            let Some(first) = self.queue.pop(Duration::from_millis(200)) else {
                continue;
            };
            if self.is_stopping() {
                // Left scheduled on disk: the next start dispatches it again.
                return;
            }
            // With a backlog, take several items at once so one flush covers their "running"
            // marks and one flush their results; without one, run items one by one so a long
            // action never holds a short one back.
            let mut batch = vec![first];
            let workers = self.workers.load(Ordering::SeqCst).max(1);
            while batch.len() < MAX_WORKER_BATCH && self.queue.len() > workers {
                match self.queue.pop(Duration::ZERO) {
                    Some(item) => batch.push(item),
                    None => break,
                }
            }
            self.run_batch(batch);
        }
    }

    fn run_batch(&self, batch: Vec<WorkItem>) {
        let loaded = self.loaded();
        let claimed: Vec<(WorkItem, Execution, CancelToken)> = batch
            .into_iter()
            .filter_map(|item| self.claim(&loaded, item))
            .collect();
        if claimed.is_empty() {
            return;
        }
        let running: Vec<Arc<Execution>> = claimed
            .iter()
            .map(|(_, e, _)| Arc::new(e.clone()))
            .collect();
        // An action that is not idempotent must be on record as running before it starts (so
        // that a crash abandons it rather than running it again): the journal makes the mark
        // durable, and after a crash puts it back with the rule's enforcement, so its trigger
        // instance is not enforced twice. An idempotent one may run again: no wait.
        let must: Vec<&Execution> = running
            .iter()
            .filter(|e| !e.idempotent)
            .map(|e| &**e)
            .collect();
        let Ok(segment) = self.marks_durable(&must) else {
            for (_, e, _) in &claimed {
                self.unclaim(&e.id, &e.action);
            }
            return;
        };
        // The store shows them running only if they still run after a moment (see `marks`).
        self.marks.add(&running, segment);
        for (_, e, _) in &claimed {
            self.publish_execution("st2.execution__update", &loaded, e);
        }
        let mut finished = Vec::with_capacity(claimed.len());
        let mut kv_mark = 0;
        for ((item, mut e, cancel), marked) in claimed.into_iter().zip(&running) {
            let kv = Arc::new(ScriptKv::new(self.store.clone(), &e.id));
            let (status, result, log) = self.execute(item, marked, &cancel, &kv);
            kv_mark = kv_mark.max(kv.seen());
            if let Ok(mut c) = self.cancels.lock() {
                c.remove(&e.id);
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.metrics.running_delta(&e.action, -1);
            e.status = status;
            e.result = result;
            e.log = log;
            e.end_timestamp = Some(Utc::now());
            finished.push(e);
        }
        self.finish_batch(loaded, finished, kv_mark);
    }

    /// Makes `running` marks durable before their actions start: journaled (the journal's
    /// segment, which holds them until the store has them), or else written to the store and
    /// flushed. `Err` when neither could be done: the executions stay queued.
    fn marks_durable(&self, must: &[&Execution]) -> Result<Option<u64>, ()> {
        if must.is_empty() {
            return Ok(None);
        }
        match self.journal.append_executions_blocking(must) {
            Ok(seq) => Ok(Some(seq)),
            Err(err) => {
                tracing::warn!(error = %err, "cannot journal running marks; writing them to the store and flushing it instead");
                let owned: Vec<Execution> = must.iter().map(|e| (*e).clone()).collect();
                if let Err(err) = self.store.put_executions(&owned) {
                    tracing::error!(error = %err, "cannot record running executions; they stay queued in the store");
                    return Err(());
                }
                self.durable_blocking();
                Ok(None)
            }
        }
    }

    /// Undoes a claim whose mark could not be recorded.
    fn unclaim(&self, id: &str, action: &str) {
        if let Ok(mut c) = self.cancels.lock() {
            c.remove(id);
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.metrics.running_delta(action, -1);
    }

    /// Checks an item can run and marks it running (not yet written: [`Engine::run_batch`]
    /// writes a batch's marks together).
    fn claim(&self, loaded: &Loaded, item: WorkItem) -> Option<(WorkItem, Execution, CancelToken)> {
        let mut e = match self.store.execution(&item.execution_id) {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(err) => {
                tracing::error!(execution = %item.execution_id, error = %err, "cannot read execution");
                return None;
            }
        };
        if e.status.is_terminal() {
            return None;
        }
        if e.status == ExecutionStatus::Canceling {
            self.finish(
                loaded,
                &mut e,
                ExecutionStatus::Canceled,
                json!({"error": "canceled before it started"}),
                Vec::new(),
            );
            return None;
        }
        // The concurrency policy is decided here, and only here, where an execution starts,
        // whatever its way in (requested, delayed, or dispatched again after a restart): at
        // request time the executions queued but not yet started cannot be counted.
        match loaded.policies.concurrency(&e.action) {
            Some(policy) if !self.metrics.try_running(&e.action, policy.threshold) => {
                if policy.cancel && e.status != ExecutionStatus::Delayed {
                    let result = json!({"error": format!(
                        "canceled by policy {}: {} executions of {} already running (threshold {})",
                        policy.name, self.running_of(&e.action), e.action, policy.threshold
                    )});
                    self.finish(
                        loaded,
                        &mut e,
                        ExecutionStatus::Canceled,
                        result,
                        Vec::new(),
                    );
                    return None;
                }
                if e.status != ExecutionStatus::Delayed {
                    e.status = ExecutionStatus::Delayed;
                    e.reason = Some(format!(
                        "{DELAYED_BY_POLICY} {}: threshold {} reached",
                        policy.name, policy.threshold
                    ));
                    if let Err(err) = self.store.put_execution(&e) {
                        tracing::error!(error = %err, "could not record a delayed execution");
                    }
                    self.publish_execution("st2.execution__update", loaded, &e);
                }
                self.later.add(
                    Instant::now() + Duration::from_millis(200),
                    later::Job::Requeue(Box::new(item)),
                );
                return None;
            }
            Some(_) => {}
            None => self.metrics.running_delta(&e.action, 1),
        }
        let cancel = CancelToken::default();
        if let Ok(mut c) = self.cancels.lock() {
            c.insert(e.id.clone(), cancel.clone());
        }
        if e.reason
            .as_deref()
            .is_some_and(|r| r.starts_with(DELAYED_BY_POLICY))
        {
            // Under its policy's threshold now: why it waited no longer applies (a retry's
            // or a restart's reason stays).
            e.reason = None;
        }
        // `start_timestamp` stays the request's time, as in st2: `elapsed_seconds` counts
        // the time an execution waited for a worker or a policy too.
        e.status = ExecutionStatus::Running;
        self.running.fetch_add(1, Ordering::SeqCst);
        Some((item, e, cancel))
    }

    /// Runs a claimed item to its final status. `e` is the execution as marked running.
    /// `kv` is the key-value store as its script sees it.
    fn execute(
        &self,
        item: WorkItem,
        e: &Arc<Execution>,
        cancel: &CancelToken,
        kv: &Arc<ScriptKv>,
    ) -> (ExecutionStatus, Value, Vec<LogLine>) {
        if let Some(why) = item.config_error {
            return (
                ExecutionStatus::Failed,
                json!({"error": format!("the action's pack config is not valid: {why}")}),
                Vec::new(),
            );
        }
        match (item.runner, item.source.clone()) {
            (RunnerType::Rhai, Some(source)) => {
                let (live, on_log) = self.live_log(e, cancel);
                let report = self.runtime.run(ScriptJob {
                    script_key: item.action,
                    source,
                    params: item.parameters,
                    ctx: item.ctx,
                    timeout: item.timeout,
                    cancel: cancel.clone(),
                    kv: kv.clone(),
                    on_log: Some(on_log),
                });
                // From here the result is what the store gets: no held-back line after it.
                live.finish();
                let (status, result) =
                    outcome_status(report.outcome, self.grace_over.load(Ordering::SeqCst));
                (status, result, report.log)
            }
            (RunnerType::LocalShellCmd | RunnerType::LocalShellScript, _) => {
                self.execute_shell(item, e, cancel)
            }
            (RunnerType::PythonScript, _) => self.execute_python(item, e, cancel, kv),
            (RunnerType::HttpRequest, _) => self.execute_http(item, e, cancel),
            // st2's noop runner: nothing runs, and the result says so in the local runner's
            // shape.
            (RunnerType::Noop, _) => (
                ExecutionStatus::Succeeded,
                json!({"failed": false, "succeeded": true, "return_code": 0}),
                Vec::new(),
            ),
            _ => (
                ExecutionStatus::Failed,
                json!({"error": format!("action '{}' has a runner this squall cannot run yet (workflows come with the workflow engine)", item.action)}),
                Vec::new(),
            ),
        }
    }

    /// A throttled rule's groups within their windows: key, enforcements, when one frees.
    pub fn throttle_groups(&self, rule_ref: &str) -> Vec<(String, usize, chrono::DateTime<Utc>)> {
        match self.throttle.lock() {
            Ok(t) => t.groups_of(rule_ref, Utc::now()),
            Err(p) => p.into_inner().groups_of(rule_ref, Utc::now()),
        }
    }

    fn running_of(&self, action: &str) -> usize {
        self.metrics.running_of(action)
    }

    /// Records a final status, fires `core.action_finished`, and applies the retry policy.
    fn finish(
        &self,
        loaded: &Loaded,
        e: &mut Execution,
        status: ExecutionStatus,
        result: Value,
        log: Vec<LogLine>,
    ) {
        self.record_final(e, status, result, log);
        self.durable_blocking();
        self.announce_final(loaded, e);
    }

    /// Stores a final status (durable with the next flush).
    fn record_final(
        &self,
        e: &mut Execution,
        status: ExecutionStatus,
        result: Value,
        log: Vec<LogLine>,
    ) {
        e.status = status;
        e.result = result;
        e.log = log;
        e.end_timestamp = Some(Utc::now());
        if let Err(err) = self.store.put_execution(e) {
            tracing::error!(execution = %e.id, error = %err, "cannot record the final status");
        }
        self.metrics
            .execution_finished(status, e.elapsed_seconds().unwrap_or(0.0));
    }

    /// Once a final status is durable: tells the stream, fires `core.action_finished`, and
    /// applies the retry policy.
    fn announce_final(&self, loaded: &Loaded, e: &Execution) {
        self.announce_final_as(loaded, e, true);
    }

    /// [`Engine::announce_final`]; `notify`: whether its notifications are still to fire (they
    /// were journaled with the result otherwise).
    fn announce_final_as(&self, loaded: &Loaded, e: &Execution, notify: bool) {
        let status = e.status;
        self.publish_execution("st2.execution__update", loaded, e);
        if notify {
            self.notify_final(loaded, e);
        }

        // Recorded only when a rule listens to it: storing one per execution nobody reads
        // would double the store's work per execution.
        if loaded
            .rules
            .trigger_types()
            .any(|t| t == "core.action_finished")
        {
            // st2's `core.st2.generic.actiontrigger` payload: `action_name` is the action's
            // ref too (st2 kept the old key), `runner_ref` its runner's name.
            let action = loaded.catalog.action(&e.action);
            let payload = json!({
                "execution_id": e.id,
                "status": status.as_str(),
                "start_timestamp": e.start_timestamp,
                "action_name": e.action,
                "action_ref": e.action,
                "runner_ref": action.map(|a| a.meta.runner_type.st2_name()),
                "parameters": action.map(|a| Value::Object(mask_secrets(&a.meta, &e.parameters))).unwrap_or(Value::Null),
                "result": e.result,
                "rule": e.rule,
                "trigger_instance": e.trigger_instance,
            });
            let ti = TriggerInstance::new("core.action_finished", None, payload, "squall");
            if let Err(err) = self.store.insert_trigger_instance(&ti) {
                tracing::error!(error = %err, "cannot record core.action_finished");
            } else {
                self.metrics.trigger_instance(&ti.trigger);
                let _ = self.ti_tx.send((Arc::new(ti), None));
            }
        }

        if e.parent.is_some() {
            // A workflow's task: the workflow decides what follows (its own `retry`).
            self.workflow_event(WorkflowEvent::TaskEnded(e.clone()));
            return;
        }
        if let Some(retry) = loaded.policies.retry(&e.action) {
            let wanted = match status {
                ExecutionStatus::Failed => retry.on_failure,
                ExecutionStatus::Timeout => retry.on_timeout,
                _ => false,
            };
            if wanted && e.attempt <= retry.max_retry_count {
                let mut next = Execution::new(&e.action, e.parameters.clone());
                next.attempt = e.attempt + 1;
                next.rule = e.rule.clone();
                next.trigger_instance = e.trigger_instance.clone();
                next.parent = e.parent.clone();
                next.user = e.user.clone();
                next.idempotent = e.idempotent;
                next.rerun_of = Some(e.id.clone());
                next.reason = Some(format!(
                    "retry {} of {} by policy {} after {}",
                    e.attempt,
                    retry.max_retry_count,
                    retry.name,
                    status.as_str()
                ));
                next.status = ExecutionStatus::Delayed;
                next.not_before = chrono::Duration::from_std(retry.delay)
                    .ok()
                    .and_then(|d| Utc::now().checked_add_signed(d));
                if let Err(err) = self.store.put_execution(&next) {
                    tracing::error!(error = %err, "cannot record a retry");
                    return;
                }
                // Durable before anything depends on it: a crash now must not lose the retry
                // (the failure it follows is durable already). Final statuses reach here on
                // worker threads, which may block.
                match self
                    .journal
                    .append_executions_blocking(std::slice::from_ref(&next))
                {
                    Ok(seq) => self.journal.stored(seq),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot journal a retry; flushing the store instead");
                        self.durable_blocking();
                    }
                }
                self.publish_execution("st2.execution__create", loaded, &next);
                // While stopping it stays `delayed`, recorded: the next start dispatches it.
                if !self.is_stopping() {
                    self.dispatch_when_due(&next);
                }
            }
        }
    }

    /// Dispatches an execution once its `not_before` has come (a retry's delay).
    fn dispatch_when_due(&self, e: &Execution) {
        let wait = e
            .not_before
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .unwrap_or_default();
        self.later
            .add(Instant::now() + wait, later::Job::Dispatch(e.id.clone()));
    }

    /// Cancels an execution: at once when it has not started, through its token when running.
    pub async fn cancel(&self, id: &str) -> Result<Execution, EngineError> {
        let e = self
            .store
            .execution(id)?
            .ok_or_else(|| EngineError::NoExecution(id.to_string()))?;
        if e.status.is_terminal() {
            return Ok(e);
        }
        let loaded = self.loaded();
        if is_workflow(&loaded, &e) {
            return self.control_workflow(id, Control::Cancel).await;
        }
        let (e, ended) = self.cancel_action(e)?;
        self.durable().await?;
        self.after_cancel(&loaded, &e, ended);
        Ok(e)
    }

    /// [`Engine::cancel`] of an action execution, for the workflow driver's thread.
    fn cancel_action_blocking(&self, loaded: &Loaded, id: &str) -> Result<(), EngineError> {
        let e = self
            .store
            .execution(id)?
            .ok_or_else(|| EngineError::NoExecution(id.to_string()))?;
        if e.status.is_terminal() {
            return Ok(());
        }
        let (e, ended) = self.cancel_action(e)?;
        self.durable_blocking();
        self.after_cancel(loaded, &e, ended);
        Ok(())
    }

    /// Cancels a running action through its token (its worker records the end), or one that
    /// has not started at once; true when it ended here.
    fn cancel_action(&self, mut e: Execution) -> Result<(Execution, bool), EngineError> {
        let token = self.cancels.lock().ok().and_then(|c| c.get(&e.id).cloned());
        match token {
            Some(t) => {
                e.status = ExecutionStatus::Canceling;
                // A `running` mark waiting to be written would come after this.
                let marks = self.marks.take([e.id.as_str()]);
                self.store.put_execution(&e)?;
                for seq in marks {
                    self.journal.stored(seq);
                }
                t.cancel();
                Ok((e, false))
            }
            None => {
                e.status = ExecutionStatus::Canceled;
                e.end_timestamp = Some(Utc::now());
                e.result = json!({"error": "canceled before it started"});
                // What it was waiting for (a policy, a retry's delay) is no longer why it ended.
                e.reason = Some("canceled before it started".into());
                self.store.put_execution(&e)?;
                self.metrics.execution_finished(e.status, 0.0);
                Ok((e, true))
            }
        }
    }

    fn after_cancel(&self, loaded: &Loaded, e: &Execution, ended: bool) {
        if ended {
            // Its workflow, if any, and `core.action_finished` hear of it.
            self.announce_final(loaded, e);
        } else {
            self.publish_execution("st2.execution__update", loaded, e);
        }
    }

    /// Stops taking work, lets running executions finish within `grace`, then returns.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        while self.running_here() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.running_here() > 0 {
            tracing::warn!(
                running = self.running_here(),
                "grace period over; canceling what still runs"
            );
            self.grace_over.store(true, Ordering::SeqCst);
            let remote = self
                .remote
                .as_ref()
                .map(|r| r.run_ids())
                .unwrap_or_default();
            if let Ok(c) = self.cancels.lock() {
                for (id, t) in c.iter() {
                    if !remote.contains(id) {
                        t.cancel();
                    }
                }
            }
            let hard = tokio::time::Instant::now() + Duration::from_secs(5);
            while self.running_here() > 0 && tokio::time::Instant::now() < hard {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// An action metadata's `queue` rendered over the execution's parameters (a plain name is
/// itself).
fn render_queue(template: &str, params: &Map<String, Value>) -> Result<String, String> {
    if !squall_rules::template::is_template(template) {
        return Ok(template.to_string());
    }
    let env = squall_rules::template::environment();
    let text = env
        .render_str(template, params)
        .map_err(|e| squall_rules::template::describe(&e))?;
    let text = text.trim();
    if text.is_empty() {
        return Err("it renders to an empty name".into());
    }
    Ok(text.to_string())
}

/// What the rules decided for one trigger instance, before it is written.
struct Plan {
    status: TriggerInstanceStatus,
    enforcements: Vec<RuleEnforcement>,
    executions: Vec<Execution>,
    /// Correlation rules' state changes, written with the instance's outcome.
    correlation: Vec<crate::store::CorrelationWrite>,
}

/// Who enforces what, when: a rule on a trigger instance.
struct Enforced<'a> {
    rule_ref: &'a str,
    ti_id: &'a str,
    now: chrono::DateTime<Utc>,
}

impl Plan {
    /// The executions to dispatch: those whose enforcement was written (not one enforced
    /// before a restart).
    fn written(self, written: &[RuleEnforcement]) -> Vec<Execution> {
        let ids: HashSet<&str> = written
            .iter()
            .filter_map(|e| e.execution_id.as_deref())
            .collect();
        self.executions
            .into_iter()
            .filter(|e| ids.contains(e.id.as_str()))
            .collect()
    }
}

fn enforcement(
    rule_ref: &str,
    ti_id: &str,
    execution_id: Option<String>,
    failure_reason: Option<String>,
) -> RuleEnforcement {
    RuleEnforcement {
        v: SCHEMA_VERSION,
        id: crate::model::new_id(),
        rule_ref: rule_ref.to_string(),
        trigger_instance_id: ti_id.to_string(),
        execution_id,
        enforced_at: Utc::now(),
        failure_reason,
    }
}
