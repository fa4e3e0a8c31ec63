//! The server's side of remote workers (`squall run --amqp`): what a worker asks of the engine
//! and what it reports, whatever carries it (see `crate::amqp`).
//!
//! The engine stays the one place that decides: a worker that took a work item from the broker
//! *claims* it here before it runs anything. The claim applies the concurrency policy and makes
//! the `running` mark durable (journal) exactly as a local worker does, and its answer carries
//! the whole work item (script, parameters, ctx), so a worker runs only what this server sent.
//! A claim names its delivery (`claim`, new for each delivery) and says whether the broker
//! delivered the item before:
//! - the same claim asked again (its answer was lost): the same answer;
//! - an item delivered again while its execution runs under another claim: the worker holding
//!   it was lost (the broker gives an item back only when its consumer is gone), so an
//!   idempotent action runs again and another is `abandoned`, never run twice;
//! - a first delivery of an execution that already runs elsewhere: a duplicate (published
//!   again after a restart), dropped.
//!
//! Results are applied only for the claim that runs the execution, once: a result delivered
//! twice, or from a run that was replaced, changes nothing. A result is durable (journal)
//! before the caller acknowledges its message. Key-value calls of a remote script are made
//! durable before they are answered, so a result can never be durable before the writes it
//! reports, whichever process crashes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use squall_actions::{CancelToken, KvStore, LogLine, LogSink, RunnerType};

use super::{Engine, LiveLog, WorkItem, WorkQueue};
use crate::model::{Execution, ExecutionStatus};
use crate::store::ScriptKv;

/// What a worker runs: everything it needs, from the server's answer to its claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteItem {
    pub execution_id: String,
    pub claim: String,
    pub action: String,
    /// The Rhai script.
    pub source: Option<String>,
    pub parameters: Map<String, Value>,
    pub ctx: Value,
    pub timeout_ms: Option<u64>,
    pub idempotent: bool,
    /// Set when the action cannot run (its pack config does not fit, a runner workers do not
    /// have): the worker reports it as the failure without running anything.
    pub error: Option<String>,
    /// A shell action (`local-shell-cmd`, `local-shell-script`): what to run, all decided.
    #[serde(default)]
    pub shell: Option<super::shell::ShellPlan>,
    /// An `http-request` action: the one request to make, all decided.
    #[serde(default)]
    pub http: Option<super::http::HttpPlan>,
}

/// A worker's claim of one delivery of a work item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub execution_id: String,
    /// New for each delivery.
    pub claim: String,
    pub worker: String,
    /// The broker delivered this item before (to a consumer that is gone).
    pub redelivered: bool,
}

/// The answer to a claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimAnswer {
    /// Run it.
    Run(Box<RemoteItem>),
    /// Acknowledge the item without running it, for this reason.
    Drop(String),
    /// Hold the item and ask again in a moment: the worker that ran it before may still
    /// report its result (it was cut off from the broker, not lost).
    Later(String),
}

/// A remote run's end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteResult {
    pub execution_id: String,
    pub claim: String,
    pub status: ExecutionStatus,
    pub result: Value,
    #[serde(default)]
    pub log: Vec<LogLine>,
}

/// A key-value call of a remote script.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvCall {
    pub execution_id: String,
    pub claim: String,
    #[serde(flatten)]
    pub op: KvOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum KvOp {
    Get {
        name: String,
    },
    Set {
        name: String,
        value: String,
        ttl: Option<u64>,
    },
    Delete {
        name: String,
    },
    Claim {
        name: String,
        value: String,
        ttl: Option<u64>,
    },
}

/// A worker as its heartbeats describe it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub name: String,
    pub host: String,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub running: Vec<String>,
    pub pid: u32,
    /// The worker process (new at each start) and its connection (counted from 1).
    #[serde(default)]
    pub instance: String,
    #[serde(default)]
    pub connection: u64,
    #[serde(default)]
    pub version: String,
    /// `worker`, or `sensors` for a sensor host.
    #[serde(default = "worker_role")]
    pub role: String,
    /// A sensor host's sensors, as `/api/v1/sensors` shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensors: Vec<Value>,
}

fn worker_role() -> String {
    "worker".into()
}

/// How often workers send a heartbeat; one silent for [`WORKER_GONE_AFTER`] is gone.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
pub const WORKER_GONE_AFTER: Duration = Duration::from_secs(6);

/// One execution a remote worker runs.
struct RemoteRun {
    claim: String,
    worker: String,
    kv: Arc<ScriptKv>,
    cancel: CancelToken,
    cancel_sent: bool,
    live: Arc<LiveLog>,
    on_log: LogSink,
    /// Counted in this process's running gauges (a run found after a restart is not).
    counted: bool,
}

/// The server's state of remote work.
#[derive(Default)]
pub struct Remote {
    runs: Mutex<HashMap<String, RemoteRun>>,
    /// Work items not yet claimed, by execution id: a claim answers with it.
    items: Mutex<HashMap<String, WorkItem>>,
    workers: Mutex<HashMap<String, (Heartbeat, Instant)>>,
    /// Items to publish, and a wake-up for the publisher.
    outbox: Mutex<std::collections::VecDeque<Outgoing>>,
    /// Items being published, not yet confirmed: back to the outbox if the connection ends.
    inflight: Mutex<HashMap<String, Outgoing>>,
    pub wake: tokio::sync::Notify,
    /// Connected to the broker now.
    pub connected: std::sync::atomic::AtomicBool,
    /// When this server last connected: a worker's silence counts from then at the earliest
    /// (heartbeats cannot reach a server cut off from the broker).
    connected_at: Mutex<Option<Instant>>,
    /// Messages waiting and consumers, by work queue, as the broker last said.
    queues: Mutex<std::collections::BTreeMap<String, (u32, u32)>>,
}

/// See [`Remote::holder_state`].
enum Holder {
    Holds,
    NeverStarted,
    Lost,
}

/// A work item to publish: its execution and the queue it goes to.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub execution_id: String,
    pub action: String,
    pub queue: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Remote {
    /// Takes up to `max` items to publish; they count as in flight until confirmed.
    pub fn take_outgoing(&self, max: usize) -> Vec<Outgoing> {
        let mut out = lock(&self.outbox);
        let n = out.len().min(max);
        let taken: Vec<Outgoing> = out.drain(..n).collect();
        let mut inflight = lock(&self.inflight);
        for item in &taken {
            inflight.insert(item.execution_id.clone(), item.clone());
        }
        taken
    }

    /// The broker confirmed an item.
    pub fn published(&self, execution_id: &str) {
        lock(&self.inflight).remove(execution_id);
    }

    /// Puts back items that could not be published, first in line.
    pub fn put_back(&self, items: Vec<Outgoing>) {
        let mut inflight = lock(&self.inflight);
        let mut out = lock(&self.outbox);
        for item in items.into_iter().rev() {
            inflight.remove(&item.execution_id);
            out.push_front(item);
        }
    }

    /// At a new connection: what was in flight on the last one goes out again (a second copy
    /// of an item the broker did take is dropped at its claim).
    pub fn restore_inflight(&self) {
        let items: Vec<Outgoing> = lock(&self.inflight).drain().map(|(_, v)| v).collect();
        let mut out = lock(&self.outbox);
        for item in items {
            out.push_front(item);
        }
    }

    pub fn outgoing_len(&self) -> usize {
        lock(&self.outbox).len() + lock(&self.inflight).len()
    }

    /// The server is connected (again).
    pub fn mark_connected(&self) {
        self.connected.store(true, Ordering::SeqCst);
        *lock(&self.connected_at) = Some(Instant::now());
    }

    /// What became of the worker `name` that claimed `execution` under `claim` (a claim id
    /// names the worker process and its connection: `<instance>.<connection>.<id>`), now that
    /// the broker gave the item back. Its heartbeats list what it holds (running, or a result
    /// not yet confirmed):
    /// - silent for `WORKER_GONE_AFTER` (counted from this server's connection at the
    ///   earliest), or another process under that name: lost;
    /// - the same process, listing the execution: it still holds it (cut off from the broker,
    ///   it will report);
    /// - the same process on a later connection, not listing it: it never started it (the
    ///   answer to its claim was lost with the connection; a result it published would be in
    ///   the queue ahead of this claim);
    /// - otherwise: wait for its next heartbeat.
    fn holder_state(&self, name: &str, execution: &str, claim: &str) -> Holder {
        let mut parts = claim.splitn(3, '.');
        let (instance, connection) = match (parts.next(), parts.next(), parts.next()) {
            (Some(i), Some(c), Some(_)) => (i, c.parse::<u64>().unwrap_or(0)),
            _ => return Holder::Lost,
        };
        let connected_at = *lock(&self.connected_at);
        let workers = lock(&self.workers);
        let beat = workers.get(name);
        let since = match (beat.map(|(_, at)| *at), connected_at) {
            (Some(b), Some(c)) => b.max(c),
            (Some(b), None) => b,
            (None, Some(c)) => c,
            (None, None) => return Holder::Lost,
        };
        if since.elapsed() > WORKER_GONE_AFTER {
            return Holder::Lost;
        }
        match beat {
            Some((b, at)) if connected_at.is_none_or(|c| *at >= c) => {
                if b.instance != instance {
                    Holder::Lost
                } else if b.running.iter().any(|r| r == execution) {
                    Holder::Holds
                } else if b.connection > connection {
                    Holder::NeverStarted
                } else {
                    Holder::Holds
                }
            }
            // No heartbeat since this server connected: wait for one.
            _ => Holder::Holds,
        }
    }

    /// The work queues to report: the shared one and those workers serve.
    pub fn known_queues(&self) -> Vec<String> {
        let mut names: std::collections::BTreeSet<String> =
            [crate::amqp::WORK_QUEUE.to_string()].into();
        for (b, _) in lock(&self.workers).values() {
            names.extend(b.queues.iter().cloned());
        }
        names.into_iter().collect()
    }

    /// What the broker says of a work queue: messages waiting, consumers.
    pub fn queue_stats(&self, queue: &str, messages: u32, consumers: u32) {
        lock(&self.queues).insert(queue.to_string(), (messages, consumers));
    }

    /// Records a heartbeat.
    pub fn heartbeat(&self, beat: Heartbeat) {
        lock(&self.workers).insert(beat.name.clone(), (beat, Instant::now()));
    }

    /// Workers seen, with whether each is gone (silent too long) and the seconds since its
    /// last heartbeat.
    pub fn workers(&self) -> Vec<(Heartbeat, bool, f64)> {
        let mut list: Vec<_> = lock(&self.workers)
            .values()
            .map(|(b, at)| {
                let age = at.elapsed();
                (b.clone(), age > WORKER_GONE_AFTER, age.as_secs_f64())
            })
            .collect();
        list.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        list
    }

    /// Executions whose cancel was asked for and not yet sent to their worker.
    pub fn cancels_due(&self) -> Vec<(String, String)> {
        let mut runs = lock(&self.runs);
        let mut due = Vec::new();
        for (id, run) in runs.iter_mut() {
            if run.cancel.is_canceled() && !run.cancel_sent {
                run.cancel_sent = true;
                due.push((id.clone(), run.worker.clone()));
            }
        }
        due
    }

    pub fn running(&self) -> usize {
        lock(&self.runs).len()
    }

    /// Remote runs counted in this process's running gauges.
    pub fn counted_runs(&self) -> usize {
        lock(&self.runs).values().filter(|r| r.counted).count()
    }

    /// The executions remote workers run.
    pub fn run_ids(&self) -> std::collections::HashSet<String> {
        lock(&self.runs).keys().cloned().collect()
    }

    /// Workers and sensor hosts as the API shows them.
    pub fn workers_json(&self) -> Vec<Value> {
        self.workers()
            .into_iter()
            .map(|(b, gone, age)| {
                json!({
                    "name": b.name,
                    "role": b.role,
                    "host": b.host,
                    "state": if gone { "gone" } else { "up" },
                    "queues": b.queues,
                    "concurrency": b.concurrency,
                    "running": b.running,
                    "pid": b.pid,
                    "version": b.version,
                    "last_heartbeat_seconds": (age * 10.0).round() / 10.0,
                })
            })
            .collect()
    }

    /// Sensor hosts' sensors, as `/api/v1/sensors` lists them, each with its host.
    pub fn remote_sensors(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for (b, gone, _) in self.workers() {
            for s in &b.sensors {
                let mut s = s.clone();
                if let Value::Object(m) = &mut s {
                    m.insert("host".into(), Value::String(b.name.clone()));
                    if gone {
                        m.insert("running".into(), Value::Bool(false));
                        m.insert(
                            "not_started".into(),
                            Value::String(format!("sensor host {} is gone (no heartbeat)", b.name)),
                        );
                    }
                }
                out.push(s);
            }
        }
        out
    }

    /// Prometheus lines: the broker link, the outbox, each worker.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(t, "# HELP squall_amqp_connected Whether the server is connected to RabbitMQ.\n# TYPE squall_amqp_connected gauge\nsquall_amqp_connected {}", u8::from(self.connected.load(Ordering::SeqCst)));
        let _ = writeln!(t, "# HELP squall_amqp_outbox Work items waiting to be published.\n# TYPE squall_amqp_outbox gauge\nsquall_amqp_outbox {}", self.outgoing_len());
        let _ = writeln!(t, "# HELP squall_remote_running Executions running on remote workers.\n# TYPE squall_remote_running gauge\nsquall_remote_running {}", self.running());
        let workers = self.workers();
        let esc = crate::metrics::escape;
        let _ = writeln!(t, "# HELP squall_worker_up Whether a worker or sensor host sends heartbeats.\n# TYPE squall_worker_up gauge");
        for (b, gone, _) in &workers {
            let _ = writeln!(
                t,
                "squall_worker_up{{worker=\"{}\",role=\"{}\"}} {}",
                esc(&b.name),
                esc(&b.role),
                u8::from(!gone)
            );
        }
        let _ = writeln!(t, "# HELP squall_worker_running Actions a worker runs now.\n# TYPE squall_worker_running gauge");
        for (b, _, _) in workers.iter().filter(|w| w.0.role == "worker") {
            let _ = writeln!(
                t,
                "squall_worker_running{{worker=\"{}\"}} {}",
                esc(&b.name),
                b.running.len()
            );
        }
        let _ = writeln!(t, "# HELP squall_worker_concurrency Actions a worker runs at most.\n# TYPE squall_worker_concurrency gauge");
        for (b, _, _) in workers.iter().filter(|w| w.0.role == "worker") {
            let _ = writeln!(
                t,
                "squall_worker_concurrency{{worker=\"{}\"}} {}",
                esc(&b.name),
                b.concurrency
            );
        }
        let mut per_queue: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
        for (b, gone, _) in workers.iter().filter(|w| w.0.role == "worker" && !w.1) {
            let _ = gone;
            for q in &b.queues {
                let e = per_queue.entry(q.as_str()).or_default();
                e.0 += 1;
                e.1 += b.concurrency;
            }
        }
        let _ = writeln!(t, "# HELP squall_queue_messages Work items waiting in a queue, as the broker last said (every 5 s).\n# TYPE squall_queue_messages gauge\n# TYPE squall_queue_consumers gauge");
        for (q, (messages, consumers)) in lock(&self.queues).iter() {
            let _ = writeln!(t, "squall_queue_messages{{queue=\"{}\"}} {messages}\nsquall_queue_consumers{{queue=\"{}\"}} {consumers}", esc(q), esc(q));
        }
        let _ = writeln!(t, "# HELP squall_queue_workers Workers serving a queue, and their slots.\n# TYPE squall_queue_workers gauge\n# TYPE squall_queue_slots gauge");
        for (q, (n, slots)) in per_queue {
            let _ = writeln!(t, "squall_queue_workers{{queue=\"{}\"}} {n}\nsquall_queue_slots{{queue=\"{}\"}} {slots}", esc(q), esc(q));
        }
        t
    }
}

/// The work queue of a server with remote workers: items wait in [`Remote`]'s outbox until
/// the AMQP publisher sends them.
pub struct RemoteQueue(pub Arc<Remote>);

impl WorkQueue for RemoteQueue {
    fn push(&self, item: WorkItem) {
        let out = Outgoing {
            execution_id: item.execution_id.clone(),
            action: item.action.clone(),
            queue: item.queue.clone(),
        };
        lock(&self.0.items).insert(item.execution_id.clone(), item);
        lock(&self.0.outbox).push_back(out);
        self.0.wake.notify_one();
    }
    fn pop(&self, _timeout: Duration) -> Option<WorkItem> {
        None
    }
    fn len(&self) -> usize {
        self.0.outgoing_len()
    }
}

impl Engine {
    /// The remote state, when this server's workers are remote.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        self.remote.as_ref()
    }

    /// Answers a batch of claims, in order; the `running` marks of those that run are durable
    /// before this returns.
    pub fn remote_claims(&self, claims: Vec<Claim>) -> Vec<ClaimAnswer> {
        let Some(remote) = self.remote.clone() else {
            return claims
                .iter()
                .map(|_| ClaimAnswer::Drop("this server runs its actions itself".into()))
                .collect();
        };
        let loaded = self.loaded();
        let mut answers: Vec<Option<ClaimAnswer>> = Vec::with_capacity(claims.len());
        let mut started: Vec<(usize, WorkItem, Execution, CancelToken)> = Vec::new();
        for (i, c) in claims.iter().enumerate() {
            match self.remote_claim_one(&remote, &loaded, c) {
                Ok(answer) => answers.push(Some(answer)),
                Err((item, e, cancel)) => {
                    answers.push(None);
                    started.push((i, item, e, cancel));
                }
            }
        }
        if started.is_empty() {
            return answers.into_iter().flatten().collect();
        }
        // Every remote run is on record as running (durable) before it starts, with its claim:
        // after a restart of this server the run is known (its key-value calls and result are
        // taken), and a second copy of its item is told apart from a lost worker's.
        let running: Vec<Arc<Execution>> = started
            .iter()
            .map(|(_, _, e, _)| Arc::new(e.clone()))
            .collect();
        let must: Vec<&Execution> = running.iter().map(|e| &**e).collect();
        let Ok(segment) = self.marks_durable(&must) else {
            for (i, _, e, _) in &started {
                self.unclaim(&e.id, &e.action);
                answers[*i] = Some(ClaimAnswer::Drop(
                    "the server cannot record it as running; it stays queued".into(),
                ));
            }
            return answers.into_iter().flatten().collect();
        };
        self.marks.add(&running, segment);
        for ((i, item, e, cancel), marked) in started.into_iter().zip(running) {
            self.publish_execution("st2.execution__update", &loaded, &e);
            let (live, on_log) = self.live_log(&marked, &cancel);
            let claim = claims[i].claim.clone();
            let answer =
                ClaimAnswer::Run(Box::new(remote_item(&loaded.catalog, &item, &e, &claim)));
            lock(&remote.runs).insert(
                e.id.clone(),
                RemoteRun {
                    claim,
                    worker: claims[i].worker.clone(),
                    kv: Arc::new(ScriptKv::new(self.store.clone(), &e.id)),
                    cancel,
                    cancel_sent: false,
                    live,
                    on_log,
                    counted: true,
                },
            );
            answers[i] = Some(answer);
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| ClaimAnswer::Drop("not claimed".into())))
            .collect()
    }

    /// One claim: an answer, or the item claimed (marked running, not yet written).
    #[allow(clippy::result_large_err)]
    fn remote_claim_one(
        &self,
        remote: &Arc<Remote>,
        loaded: &super::Loaded,
        c: &Claim,
    ) -> Result<ClaimAnswer, (WorkItem, Execution, CancelToken)> {
        let e = match self.store.execution(&c.execution_id) {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(ClaimAnswer::Drop("no such execution".into())),
            Err(err) => {
                return Ok(ClaimAnswer::Drop(format!(
                    "cannot read the execution: {err}"
                )))
            }
        };
        if e.status.is_terminal() {
            return Ok(ClaimAnswer::Drop(format!("already {}", e.status.as_str())));
        }
        // Who runs it: this server's record of the run (the store may not show its `running`
        // mark yet), or after a restart the store's.
        let held = lock(&remote.runs)
            .get(&e.id)
            .map(|r| (r.claim.clone(), r.worker.clone(), r.cancel.is_canceled()));
        let held = held.or_else(|| {
            let running = matches!(
                e.status,
                ExecutionStatus::Running | ExecutionStatus::Canceling | ExecutionStatus::Pausing
            );
            match (&e.claim, running) {
                (Some(claim), true) => Some((
                    claim.clone(),
                    e.worker.clone().unwrap_or_default(),
                    e.status == ExecutionStatus::Canceling,
                )),
                _ => None,
            }
        });
        if let Some((claim, worker, canceled)) = &held {
            if *claim == c.claim {
                // The answer to this claim was lost: the same answer.
                let item = lock(&remote.items)
                    .get(&e.id)
                    .cloned()
                    .or_else(|| self.work_item(loaded, &e, None));
                return Ok(match item {
                    Some(item) => ClaimAnswer::Run(Box::new(remote_item(
                        &loaded.catalog,
                        &item,
                        &e,
                        &c.claim,
                    ))),
                    None => ClaimAnswer::Drop(format!("action '{}' is no longer loaded", e.action)),
                });
            }
            if !c.redelivered {
                return Ok(ClaimAnswer::Drop(
                    "a second copy of a work item whose execution runs elsewhere".into(),
                ));
            }
            // The broker gave the item back: the worker that held it lost its connection. It
            // may still report (it was cut off, and reconnects): wait for that while it sends
            // heartbeats; once it is silent, it is gone.
            match remote.holder_state(worker, &e.id, claim) {
                Holder::Holds => {
                    return Ok(ClaimAnswer::Later(format!(
                        "worker {worker} may still report its result"
                    )))
                }
                Holder::NeverStarted => {
                    tracing::info!(execution = %e.id, worker = %worker, "the answer to a claim was lost before its worker started it; it runs now");
                    self.end_run(&e.id, &e.action);
                    return self.claim_fresh(remote, loaded, c, e, None);
                }
                Holder::Lost => {}
            }
            self.end_run(&e.id, &e.action);
            if !e.idempotent || *canceled {
                let mut e = e;
                e.claim = Some(claim.clone());
                e.worker = Some(worker.clone());
                let (status, why) = if *canceled {
                    (
                        ExecutionStatus::Canceled,
                        format!("canceled; the worker running it ({worker}) was lost"),
                    )
                } else {
                    (
                        ExecutionStatus::Abandoned,
                        format!("the worker running it ({worker}) was lost and the action is not idempotent, so it was not run again"),
                    )
                };
                e.reason = Some(why.clone());
                self.finish(loaded, &mut e, status, json!({"error": why}), Vec::new());
                return Ok(ClaimAnswer::Drop(why));
            }
        }
        let lost = held.map(|(_, worker, _)| worker);
        self.claim_fresh(remote, loaded, c, e, lost)
    }

    /// Claims an execution for `c` as a local worker would; `lost`: the worker that ran it
    /// before and was lost (an idempotent action runs again).
    #[allow(clippy::result_large_err)]
    fn claim_fresh(
        &self,
        remote: &Arc<Remote>,
        loaded: &super::Loaded,
        c: &Claim,
        e: Execution,
        lost: Option<String>,
    ) -> Result<ClaimAnswer, (WorkItem, Execution, CancelToken)> {
        let item = lock(&remote.items)
            .get(&e.id)
            .cloned()
            .or_else(|| self.work_item(loaded, &e, None));
        let Some(item) = item else {
            let mut e = e;
            let result = json!({"error": format!("action '{}' is no longer loaded", e.action)});
            self.finish(loaded, &mut e, ExecutionStatus::Failed, result, Vec::new());
            return Ok(ClaimAnswer::Drop("its action is no longer loaded".into()));
        };
        match self.claim(loaded, item) {
            Some((item, mut e, cancel)) => {
                lock(&remote.items).remove(&e.id);
                e.claim = Some(c.claim.clone());
                e.worker = Some(c.worker.clone());
                if let Some(lost) = lost {
                    e.reason = Some(format!(
                        "run again: the worker running it ({lost}) was lost and the action is idempotent"
                    ));
                }
                Err((item, e, cancel))
            }
            None => Ok(ClaimAnswer::Drop(
                "not runnable now (canceled, or held back by its policy)".into(),
            )),
        }
    }

    /// Forgets a remote run (it ended, or its worker is gone); the key-value count its script
    /// saw, when this process knew the run.
    fn end_run(&self, id: &str, action: &str) -> Option<(u64, String)> {
        let run = self
            .remote
            .as_ref()
            .and_then(|r| lock(&r.runs).remove(id))?;
        if let Ok(mut c) = self.cancels.lock() {
            c.remove(id);
        }
        run.live.finish();
        if run.counted {
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.metrics.running_delta(action, -1);
        }
        Some((run.kv.seen(), run.worker))
    }

    /// A log line of a remote run.
    pub fn remote_log(&self, execution_id: &str, claim: &str, line: &LogLine) {
        let Some(remote) = self.remote.as_ref() else {
            return;
        };
        let sink = lock(&remote.runs)
            .get(execution_id)
            .filter(|r| r.claim == claim)
            .map(|r| r.on_log.clone());
        if let Some(sink) = sink {
            sink(line);
        }
    }

    /// Applies a batch of results; they are durable when this returns.
    pub fn remote_results(&self, results: Vec<RemoteResult>) {
        let loaded = self.loaded();
        let mut finished = Vec::with_capacity(results.len());
        let mut kv_mark = 0;
        for r in results {
            let e = match self.store.execution(&r.execution_id) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    tracing::warn!(execution = %r.execution_id, "a result for an execution this server does not have; ignored");
                    continue;
                }
                Err(err) => {
                    tracing::error!(execution = %r.execution_id, error = %err, "cannot read the execution of a result; ignored");
                    continue;
                }
            };
            if e.status.is_terminal() {
                continue;
            }
            let current = self
                .remote
                .as_ref()
                .and_then(|rm| lock(&rm.runs).get(&e.id).map(|run| run.claim.clone()))
                .or_else(|| e.claim.clone());
            if current.is_some_and(|c| c != r.claim) {
                tracing::info!(execution = %e.id, "a result from a run that was replaced; ignored");
                continue;
            }
            if finished.iter().any(|f: &Execution| f.id == e.id) {
                continue;
            }
            let mut e = e;
            if let Some((seen, worker)) = self.end_run(&e.id, &e.action) {
                kv_mark = kv_mark.max(seen);
                e.worker = Some(worker);
            }
            e.claim = Some(r.claim);
            e.status = r.status;
            e.result = r.result;
            e.log = r.log;
            e.end_timestamp = Some(Utc::now());
            finished.push(e);
        }
        if !finished.is_empty() {
            self.complete_batch(&loaded, finished, kv_mark);
        }
    }

    /// Runs whose worker is gone (silent past `WORKER_GONE_AFTER`, or another process under its
    /// name) while no other worker took their item: nothing stays `running` for a worker that
    /// will not report. An action that is not idempotent is abandoned (its item, when a worker
    /// takes it, is dropped); an idempotent one is `scheduled` again and runs when a worker
    /// takes its item back from the broker.
    pub fn remote_reap(&self) {
        let Some(remote) = self.remote.clone() else {
            return;
        };
        if !remote.connected.load(Ordering::SeqCst) {
            return;
        }
        let runs: Vec<(String, String, String)> = lock(&remote.runs)
            .iter()
            .map(|(id, r)| (id.clone(), r.worker.clone(), r.claim.clone()))
            .collect();
        let loaded = self.loaded();
        for (id, worker, claim) in runs {
            if !matches!(remote.holder_state(&worker, &id, &claim), Holder::Lost) {
                continue;
            }
            let Ok(Some(mut e)) = self.store.execution(&id) else {
                continue;
            };
            if e.status.is_terminal() {
                continue;
            }
            let canceled = lock(&remote.runs)
                .get(&id)
                .is_some_and(|r| r.cancel.is_canceled());
            self.end_run(&id, &e.action);
            e.claim = Some(claim);
            e.worker = Some(worker.clone());
            if e.idempotent && !canceled {
                e.status = ExecutionStatus::Scheduled;
                e.reason = Some(format!(
                    "its worker ({worker}) stopped sending heartbeats; it runs again when a worker takes its work item"
                ));
                tracing::warn!(execution = %id, worker = %worker, "worker gone; the idempotent execution waits for another worker");
                if let Err(err) = self.store.put_execution(&e) {
                    tracing::error!(execution = %id, error = %err, "cannot record a lost run");
                }
                self.publish_execution("st2.execution__update", &loaded, &e);
                continue;
            }
            let (status, why) = if canceled {
                (
                    ExecutionStatus::Canceled,
                    format!("canceled; its worker ({worker}) stopped sending heartbeats"),
                )
            } else {
                (
                    ExecutionStatus::Abandoned,
                    format!("its worker ({worker}) stopped sending heartbeats and the action is not idempotent, so it was not run again"),
                )
            };
            tracing::warn!(execution = %id, worker = %worker, "worker gone; execution ended");
            e.reason = Some(why.clone());
            self.finish(&loaded, &mut e, status, json!({"error": why}), Vec::new());
        }
    }

    /// A work item the broker dead-lettered: its deliveries all ended with their worker gone.
    pub fn remote_dead(&self, execution_id: &str, deliveries: Option<i64>) {
        let loaded = self.loaded();
        let Ok(Some(mut e)) = self.store.execution(execution_id) else {
            return;
        };
        if e.status.is_terminal() {
            return;
        }
        self.end_run(&e.id, &e.action);
        let times = deliveries.map_or_else(String::new, |n| format!(" {n} times"));
        let why = format!(
            "its work item was delivered{times} and each time its worker was lost before it ended; the broker dead-lettered it (queue squall.dead) at the delivery limit"
        );
        e.reason = Some(why.clone());
        self.finish(
            &loaded,
            &mut e,
            ExecutionStatus::Failed,
            json!({"error": why}),
            Vec::new(),
        );
    }

    /// A key-value call of a remote script: applied, durable, answered.
    pub fn remote_kv(&self, call: KvCall) -> Result<Value, String> {
        let remote = self
            .remote
            .as_ref()
            .ok_or("this server runs its actions itself")?;
        let known = lock(&remote.runs)
            .get(&call.execution_id)
            .map(|r| (r.claim == call.claim, r.kv.clone()));
        let kv = match known {
            Some((true, kv)) => kv,
            Some((false, _)) => {
                return Err(format!(
                    "execution {} no longer runs under this worker's claim",
                    call.execution_id
                ))
            }
            None => {
                // After a restart of the server: the store says who runs it.
                match self.store.execution(&call.execution_id) {
                    Ok(Some(e))
                        if !e.status.is_terminal()
                            && e.claim.as_deref() == Some(call.claim.as_str()) =>
                    {
                        Arc::new(ScriptKv::new(self.store.clone(), &e.id))
                    }
                    _ => {
                        return Err(format!(
                            "execution {} does not run under this worker's claim",
                            call.execution_id
                        ))
                    }
                }
            }
        };
        let answer = match call.op {
            KvOp::Get { name } => kv.get(&name).map(|v| json!(v)),
            KvOp::Set { name, value, ttl } => kv.set(&name, &value, ttl).map(|()| Value::Null),
            KvOp::Delete { name } => kv.delete(&name).map(Value::Bool),
            KvOp::Claim { name, value, ttl } => kv.claim(&name, &value, ttl).map(Value::Bool),
        }?;
        // Durable before the script hears of it: the worker's result may be journaled by a
        // later start of this server, which would not know of writes still in memory.
        self.store
            .kv_durable(kv.seen())
            .map_err(|e| format!("the key-value store could not be made durable: {e}"))?;
        Ok(answer)
    }

    /// After a restart with remote workers: executions that run on a worker keep running
    /// (their results come through the broker), with a cancel token so they can be canceled.
    pub(super) fn adopt_remote_run(&self, e: &Execution) {
        let (Some(remote), Some(claim)) = (self.remote.as_ref(), e.claim.clone()) else {
            return;
        };
        let cancel = CancelToken::default();
        if let Ok(mut c) = self.cancels.lock() {
            c.insert(e.id.clone(), cancel.clone());
        }
        let marked = Arc::new(e.clone());
        let (live, on_log) = self.live_log(&marked, &cancel);
        lock(&remote.runs).insert(
            e.id.clone(),
            RemoteRun {
                claim,
                worker: e.worker.clone().unwrap_or_default(),
                kv: Arc::new(ScriptKv::new(self.store.clone(), &e.id)),
                cancel,
                cancel_sent: false,
                live,
                on_log,
                counted: false,
            },
        );
    }
}

fn remote_item(
    catalog: &crate::packs::Catalog,
    item: &WorkItem,
    e: &Execution,
    claim: &str,
) -> RemoteItem {
    let mut shell = None;
    let mut http = None;
    let error = item
        .config_error
        .as_ref()
        .map(|why| format!("the action's pack config is not valid: {why}"))
        .or_else(|| match (item.runner, &item.source) {
            (RunnerType::Rhai, Some(_)) => None,
            (RunnerType::LocalShellCmd | RunnerType::LocalShellScript, _) => {
                match super::shell::shell_plan(catalog, item).and_then(|p| p.for_worker()) {
                    Ok(plan) => {
                        shell = Some(plan);
                        None
                    }
                    Err(why) => Some(why),
                }
            }
            (RunnerType::HttpRequest, _) => match super::http::http_plan(item) {
                Ok(plan) => {
                    http = Some(plan);
                    None
                }
                Err(why) => Some(format!("action '{}': {why}", item.action)),
            },
            _ => Some(format!(
                "action '{}' has a runner remote workers cannot run (they run Rhai, shell and http-request actions)",
                item.action
            )),
        });
    RemoteItem {
        execution_id: e.id.clone(),
        claim: claim.to_string(),
        action: item.action.clone(),
        source: item.source.as_deref().map(str::to_string),
        parameters: item.parameters.clone(),
        ctx: item.ctx.clone(),
        timeout_ms: item.timeout.map(|t| t.as_millis() as u64),
        idempotent: e.idempotent,
        error,
        shell,
        http,
    }
}
