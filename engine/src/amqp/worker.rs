//! `squall worker`: a stateless worker. It takes work items from its queues, claims each with
//! the server (the answer carries the script and everything else it needs), runs it, and
//! publishes its log lines and result with publisher confirms; the item is acknowledged only
//! once its result is confirmed. A worker killed mid-action leaves its item unacknowledged: the
//! broker gives it to another worker, whose claim the server answers (run again, or abandoned).
//! Scripts run on the worker's own threads; `kv` calls go to the server (durable there before
//! they are answered); `docker` talks to this host's daemon.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::{json, Value};
use squall_actions::{CancelToken, KvStore, Limits, LogLine, RhaiRuntime, ScriptJob};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::{
    backoff, confirmed_channel, connect, declare_topology, declare_work_queue, mask, work_queue,
    AmqpError, Control, ToServer, CONTROL_EXCHANGE, HEARTBEATS_QUEUE, KV_QUEUE, RPC_TIMEOUT,
    SERVER_QUEUE,
};
use crate::model::ExecutionStatus;
use crate::pipeline::outcome_status;
use crate::pipeline::remote::{
    Claim, ClaimAnswer, Heartbeat, KvCall, KvOp, RemoteItem, RemoteResult, HEARTBEAT_EVERY,
};

/// How a worker is started.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub url: String,
    /// Named queues (`squall.work.<name>`) besides the shared one; `shared` says whether it
    /// serves the shared queue too.
    pub queues: Vec<String>,
    pub shared: bool,
    pub concurrency: usize,
    pub name: String,
    /// How long running actions get to finish after SIGTERM.
    pub grace: Duration,
}

/// The connection in use, if any.
#[derive(Clone)]
struct Session {
    ch: Channel,
    reply_to: String,
}

struct Shared {
    opts: WorkerOptions,
    session: watch::Sender<Option<Session>>,
    /// Answers awaited, by correlation id.
    pending: Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>,
    running: Mutex<HashMap<String, CancelToken>>,
    /// To the ordered publisher of log lines and results.
    outbox: mpsc::UnboundedSender<(ToServer, Option<oneshot::Sender<()>>)>,
    slots: Arc<Semaphore>,
    runtime: Arc<RhaiRuntime>,
    stopping: AtomicBool,
    host: String,
    /// Counts connections: a delivery belongs to the one it came on.
    generation: std::sync::atomic::AtomicU64,
    /// This process, in its claims and heartbeats (new at each start).
    instance: String,
    /// To the script threads.
    scripts: crossbeam_channel::Sender<Script>,
    /// To the claim gatherer: a claim, and where its answer goes (`None`: ask again).
    claims: mpsc::UnboundedSender<(Claim, oneshot::Sender<Option<ClaimAnswer>>)>,
}

/// A script to run, and where its end goes.
struct Script {
    item: RemoteItem,
    cancel: CancelToken,
    done: oneshot::Sender<(ExecutionStatus, Value, Vec<LogLine>)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a worker until SIGTERM or SIGINT. The broker may be away at start or later: the worker
/// says so, naming the URL (password masked), and retries.
pub fn run(opts: WorkerOptions) -> Result<(), AmqpError> {
    super::check_url(&opts.url)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("squall-worker-io")
        .build()
        .map_err(|e| AmqpError(format!("cannot start the worker's runtime: {e}")))?;
    rt.block_on(main(opts))
}

async fn main(opts: WorkerOptions) -> Result<(), AmqpError> {
    let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
    let (session, _) = watch::channel(None);
    let (scripts, script_rx) = crossbeam_channel::unbounded::<Script>();
    let (claims, claims_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        scripts,
        claims,
        slots: Arc::new(Semaphore::new(opts.concurrency.max(1))),
        opts,
        session,
        pending: Mutex::new(HashMap::new()),
        running: Mutex::new(HashMap::new()),
        outbox: outbox_tx,
        runtime: Arc::new(RhaiRuntime::new(Limits::default())),
        stopping: AtomicBool::new(false),
        host: super::host_name(),
        generation: Default::default(),
        instance: ulid::Ulid::new().to_string(),
    });
    // One script thread per slot.
    for i in 0..shared.opts.concurrency.max(1) {
        let rx = script_rx.clone();
        let runner = Arc::downgrade(&shared);
        let handle = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name(format!("squall-script-{i}"))
            .stack_size(squall_actions::SCRIPT_THREAD_STACK_SIZE)
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let Some(shared) = runner.upgrade() else {
                        return;
                    };
                    let _ = job
                        .done
                        .send(execute(&shared, &handle, job.item, job.cancel));
                }
            })
            .map_err(|e| AmqpError(format!("cannot start a script thread: {e}")))?;
    }
    drop(script_rx);
    tokio::spawn(publish_outbox(shared.clone(), outbox_rx));
    tokio::spawn(gather_claims(shared.clone(), claims_rx));
    tokio::spawn(heartbeats(shared.clone()));
    let supervisor = tokio::spawn(supervise(shared.clone()));
    wait_for_signal().await;
    tracing::info!(
        running = lock(&shared.running).len(),
        "stopping: no new work; running actions may finish"
    );
    shared.stopping.store(true, Ordering::SeqCst);
    // New deliveries are refused from now on (see `handle`); those running may end.
    let deadline = Instant::now() + shared.opts.grace;
    while !lock(&shared.running).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !lock(&shared.running).is_empty() {
        for t in lock(&shared.running).values() {
            t.cancel();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    supervisor.abort();
    let session = shared.session.borrow().clone();
    if let Some(s) = session {
        let _ = s.ch.close(200, "worker stopping".into()).await;
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn supervise(shared: Arc<Shared>) {
    let mut attempt = 0u32;
    loop {
        match session(&shared).await {
            Ok(()) => {
                attempt = 0;
                tracing::warn!(url = %mask(&shared.opts.url), "lost the connection to RabbitMQ; reconnecting");
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = backoff(attempt).as_millis() as u64, "RabbitMQ is not reachable");
            }
        }
        shared.session.send_replace(None);
        // Answers on the old reply queue will never come: their callers ask again.
        lock(&shared.pending).clear();
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

fn err(e: lapin::Error) -> AmqpError {
    AmqpError(format!("RabbitMQ: {e}"))
}

async fn session(shared: &Arc<Shared>) -> Result<(), AmqpError> {
    let opts = &shared.opts;
    let conn = connect(&opts.url, &format!("squall worker {}", opts.name)).await?;
    let ch = confirmed_channel(&conn).await.map_err(err)?;
    declare_topology(&ch).await.map_err(err)?;
    let mut queues: Vec<String> = opts.queues.iter().map(|q| work_queue(Some(q))).collect();
    if opts.shared {
        queues.insert(0, work_queue(None));
    }
    for q in &queues {
        declare_work_queue(&ch, q).await.map_err(err)?;
    }
    // Answers to this worker's claims and key-value calls.
    let rx = conn.create_channel().await.map_err(err)?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let reply_q = rx
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .map_err(err)?;
    let reply_to = reply_q.name().to_string();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let replies = rx
        .basic_consume(
            reply_to.as_str().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .map_err(err)?;
    // Cancels.
    let control_q = rx
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .map_err(err)?;
    rx.queue_bind(
        control_q.name().clone(),
        CONTROL_EXCHANGE.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(err)?;
    let control = rx
        .basic_consume(
            control_q.name().clone(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .map_err(err)?;
    // Work: one slot per item delivered, so an item is never held by a busy worker (a lost
    // worker's unstarted items would count against their delivery limit).
    let work = conn.create_channel().await.map_err(err)?;
    let prefetch = u16::try_from(opts.concurrency.max(1)).unwrap_or(u16::MAX);
    work.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(err)?;
    let mut consumers = Vec::new();
    for q in &queues {
        let c = work
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        consumers.push(c);
    }
    shared.generation.fetch_add(1, Ordering::SeqCst);
    shared.session.send_replace(Some(Session {
        ch: ch.clone(),
        reply_to,
    }));
    tracing::info!(url = %mask(&opts.url), worker = %opts.name, queues = ?queues, concurrency = opts.concurrency, "connected to RabbitMQ; taking work");
    let mut work_stream = futures_util::stream::select_all(consumers);
    let result = tokio::select! {
        r = async {
            while let Some(d) = work_stream.next().await {
                let d = d.map_err(err)?;
                tokio::spawn(handle(shared.clone(), d));
            }
            Ok(())
        } => r,
        r = take_replies(shared, replies) => r,
        r = take_control(shared, control) => r,
    };
    let _ = conn.close(200, "reconnecting".into()).await;
    result
}

async fn take_replies(shared: &Arc<Shared>, mut c: lapin::Consumer) -> Result<(), AmqpError> {
    while let Some(d) = c.next().await {
        let d = d.map_err(err)?;
        let Some(corr) = d.properties.correlation_id().clone() else {
            continue;
        };
        if let Some(tx) = lock(&shared.pending).remove(corr.as_str()) {
            let _ = tx.send(d.data);
        }
    }
    Ok(())
}

async fn take_control(shared: &Arc<Shared>, mut c: lapin::Consumer) -> Result<(), AmqpError> {
    while let Some(d) = c.next().await {
        let d = d.map_err(err)?;
        match serde_json::from_slice::<Control>(&d.data) {
            Ok(Control::Cancel { execution_id, .. }) => {
                if let Some(t) = lock(&shared.running).get(&execution_id) {
                    tracing::info!(execution = %execution_id, "canceled by the server");
                    t.cancel();
                }
            }
            Err(e) => tracing::warn!(error = %e, "an unknown control message; ignored"),
        }
    }
    Ok(())
}

/// The session in use, waiting for one when there is none.
async fn current(shared: &Shared) -> Session {
    let mut rx = shared.session.subscribe();
    loop {
        if let Some(s) = rx.borrow_and_update().clone() {
            return s;
        }
        if rx.changed().await.is_err() {
            // The sender lives in `shared`: not reached while it exists.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A call to the server, answered on this worker's reply queue; `None` after `RPC_TIMEOUT`.
async fn call(shared: &Shared, queue: &str, body: &[u8]) -> Option<Vec<u8>> {
    let s = current(shared).await;
    let corr = ulid::Ulid::new().to_string();
    let (tx, rx) = oneshot::channel();
    lock(&shared.pending).insert(corr.clone(), tx);
    let props = BasicProperties::default()
        .with_reply_to(s.reply_to.as_str().into())
        .with_correlation_id(corr.as_str().into())
        // A call nobody answered in time is asked again: the old one must not be applied late.
        .with_expiration(RPC_TIMEOUT.as_millis().to_string().as_str().into());
    let published =
        s.ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await;
    if published.is_err() {
        lock(&shared.pending).remove(&corr);
        tokio::time::sleep(Duration::from_millis(200)).await;
        return None;
    }
    let answer = tokio::time::timeout(RPC_TIMEOUT, rx).await;
    lock(&shared.pending).remove(&corr);
    answer.ok().and_then(Result::ok)
}

fn delivery_count(d: &Delivery) -> i64 {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => Some(n),
            AMQPValue::LongInt(n) => Some(i64::from(n)),
            _ => None,
        })
        .unwrap_or(0)
}

/// One delivery: claim, run, report, acknowledge.
async fn handle(shared: Arc<Shared>, d: Delivery) {
    let generation = shared.generation.load(Ordering::SeqCst);
    let Ok(permit) = shared.slots.clone().acquire_owned().await else {
        return;
    };
    if shared.stopping.load(Ordering::SeqCst) {
        // Not acknowledged: it goes back to the queue when this worker's connection closes.
        return;
    }
    let execution_id = serde_json::from_slice::<Value>(&d.data)
        .ok()
        .and_then(|v| v["execution_id"].as_str().map(str::to_string));
    let Some(execution_id) = execution_id else {
        tracing::warn!("a work item without an execution id; dropped");
        let _ = d.acker.ack(BasicAckOptions::default()).await;
        return;
    };
    let claim = Claim {
        execution_id: execution_id.clone(),
        // Names this process and its connection: the server tells a worker that never started
        // an item (its answer lost with the connection) from one that was lost with it.
        claim: format!("{}.{generation}.{}", shared.instance, ulid::Ulid::new()),
        worker: shared.opts.name.clone(),
        redelivered: d.redelivered || delivery_count(&d) > 0,
    };
    let answer = loop {
        let (tx, rx) = oneshot::channel();
        if shared.claims.send((claim.clone(), tx)).is_err() {
            return;
        }
        match rx.await {
            Ok(Some(ClaimAnswer::Later(why))) => {
                tracing::debug!(execution = %execution_id, reason = %why, "asked to claim again in a moment");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(Some(a)) => break a,
            _ => {}
        }
        if d.acker.poisoned()
            || shared.generation.load(Ordering::SeqCst) != generation
            || shared.stopping.load(Ordering::SeqCst)
        {
            // The item went back to its queue with this connection.
            return;
        }
    };
    let item = match answer {
        ClaimAnswer::Drop(why) => {
            tracing::info!(execution = %execution_id, reason = %why, "work item dropped");
            let _ = d.acker.ack(BasicAckOptions::default()).await;
            return;
        }
        ClaimAnswer::Run(item) => *item,
        ClaimAnswer::Later(_) => return,
    };
    let cancel = CancelToken::default();
    lock(&shared.running).insert(execution_id.clone(), cancel.clone());
    let claim = item.claim.clone();
    // On one of the script threads (a deep stack and a Rhai engine each, as local workers
    // have), never on the runtime's.
    let (tx, rx) = oneshot::channel();
    let ended = match shared.scripts.send(Script {
        item,
        cancel,
        done: tx,
    }) {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    let (status, result, log) = ended.unwrap_or_else(|| {
        (
            ExecutionStatus::Failed,
            json!({"error": "the worker could not run the script on a thread of its own"}),
            Vec::new(),
        )
    });
    // Still listed in heartbeats until its result is confirmed: the server waits for a result
    // a worker still holds.
    let (tx, rx) = oneshot::channel();
    let _ = shared.outbox.send((
        ToServer::Results {
            results: vec![RemoteResult {
                execution_id: execution_id.clone(),
                claim,
                status,
                result,
                log,
            }],
        },
        Some(tx),
    ));
    // Acknowledged once the result is confirmed: a worker lost before leaves the item to
    // another, whose claim the server answers knowing this one is gone.
    let confirmed = rx.await.is_ok();
    lock(&shared.running).remove(&execution_id);
    if confirmed {
        match d.acker.ack(BasicAckOptions::default()).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(execution = %execution_id, error = %e, "the result is confirmed but the item's acknowledgement failed; the server drops its next delivery");
            }
        }
    }
    drop(permit);
}

/// Runs one item on the current thread.
fn execute(
    shared: &Arc<Shared>,
    handle: &tokio::runtime::Handle,
    item: RemoteItem,
    cancel: CancelToken,
) -> (ExecutionStatus, Value, Vec<LogLine>) {
    if let Some(why) = item.error {
        return (ExecutionStatus::Failed, json!({"error": why}), Vec::new());
    }
    let outbox = shared.outbox.clone();
    let (id, claim) = (item.execution_id.clone(), item.claim.clone());
    let on_log: squall_actions::LogSink = Arc::new(move |line: &LogLine| {
        let _ = outbox.send((
            ToServer::Log {
                execution_id: id.clone(),
                claim: claim.clone(),
                line: line.clone(),
            },
            None,
        ));
    });
    if let Some(plan) = item.shell {
        return plan.run(&cancel, on_log);
    }
    if let Some(plan) = item.http {
        return plan.run(&cancel);
    }
    let Some(source) = item.source else {
        return (
            ExecutionStatus::Failed,
            json!({"error": "the work item has no script"}),
            Vec::new(),
        );
    };
    let kv = Arc::new(RemoteKv {
        shared: shared.clone(),
        handle: handle.clone(),
        execution_id: item.execution_id.clone(),
        claim: item.claim.clone(),
    });
    let report = shared.runtime.run(ScriptJob {
        script_key: item.action,
        source: Arc::from(source),
        params: item.parameters,
        ctx: item.ctx,
        timeout: item.timeout_ms.map(Duration::from_millis),
        cancel,
        kv,
        on_log: Some(on_log),
    });
    let (status, result) = outcome_status(report.outcome, shared.stopping.load(Ordering::SeqCst));
    (status, result, report.log)
}

/// Gathers the claims waiting into one message (at a low rate, each goes alone), answered in
/// one reply; a batch not answered in time is asked again by each of its claims.
async fn gather_claims(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<(Claim, oneshot::Sender<Option<ClaimAnswer>>)>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let (claims, waiters): (Vec<Claim>, Vec<_>) = batch.into_iter().unzip();
            let Ok(body) = serde_json::to_vec(&ToServer::Claims { claims }) else {
                return;
            };
            let answers = call(&shared, SERVER_QUEUE, &body)
                .await
                .and_then(|bytes| serde_json::from_slice::<Vec<ClaimAnswer>>(&bytes).ok())
                .filter(|a| a.len() == waiters.len());
            match answers {
                Some(answers) => {
                    for (tx, a) in waiters.into_iter().zip(answers) {
                        let _ = tx.send(Some(a));
                    }
                }
                None => {
                    for tx in waiters {
                        let _ = tx.send(None);
                    }
                }
            }
        });
    }
}

/// Publishes log lines and results in the order they came, each confirmed; what a lost
/// connection left unconfirmed is published again on the next one.
async fn publish_outbox(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<(ToServer, Option<oneshot::Sender<()>>)>,
) {
    // Each entry: one message, and who waits for its confirm.
    let mut queue: Vec<(Vec<u8>, Vec<oneshot::Sender<()>>)> = Vec::new();
    loop {
        let mut taken: Vec<(ToServer, Option<oneshot::Sender<()>>)> = Vec::new();
        if queue.is_empty() {
            match rx.recv().await {
                Some(m) => taken.push(m),
                None => return,
            }
        }
        while taken.len() < 256 {
            match rx.try_recv() {
                Ok(m) => taken.push(m),
                Err(_) => break,
            }
        }
        // Results that follow each other go in one message (their order kept, and after the
        // log lines before them).
        let mut results: Vec<RemoteResult> = Vec::new();
        let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
        let flush = |queue: &mut Vec<(Vec<u8>, Vec<oneshot::Sender<()>>)>,
                     results: &mut Vec<RemoteResult>,
                     waiting: &mut Vec<oneshot::Sender<()>>| {
            if !results.is_empty() {
                let body = serde_json::to_vec(&ToServer::Results {
                    results: std::mem::take(results),
                })
                .unwrap_or_default();
                queue.push((body, std::mem::take(waiting)));
            }
        };
        for (msg, done) in taken {
            match msg {
                ToServer::Results { results: rs } => {
                    results.extend(rs);
                    waiting.extend(done);
                }
                other => {
                    flush(&mut queue, &mut results, &mut waiting);
                    let body = serde_json::to_vec(&other).unwrap_or_default();
                    queue.push((body, done.into_iter().collect()));
                }
            }
        }
        flush(&mut queue, &mut results, &mut waiting);
        let s = current(&shared).await;
        let mut confirms = Vec::with_capacity(queue.len());
        let mut failed = false;
        for (body, _) in &queue {
            match s
                .ch
                .basic_publish(
                    "".into(),
                    SERVER_QUEUE.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
            {
                Ok(c) => confirms.push(c),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        // Confirmed in order: everything before the first failure is done.
        let mut done = 0;
        for c in confirms {
            match c.await {
                Ok(lapin::Confirmation::Ack(None)) => done += 1,
                _ => {
                    failed = true;
                    break;
                }
            }
        }
        for (_, txs) in queue.drain(..done) {
            for tx in txs {
                let _ = tx.send(());
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn heartbeats(shared: Arc<Shared>) {
    let mut connected = shared.session.subscribe();
    loop {
        let session = shared.session.borrow().clone();
        if let Some(s) = session {
            let beat = Heartbeat {
                name: shared.opts.name.clone(),
                host: shared.host.clone(),
                queues: {
                    let mut q: Vec<String> = shared
                        .opts
                        .queues
                        .iter()
                        .map(|q| work_queue(Some(q)))
                        .collect();
                    if shared.opts.shared {
                        q.insert(0, work_queue(None));
                    }
                    q
                },
                concurrency: shared.opts.concurrency,
                running: lock(&shared.running).keys().cloned().collect(),
                pid: std::process::id(),
                instance: shared.instance.clone(),
                connection: shared.generation.load(Ordering::SeqCst),
                version: env!("CARGO_PKG_VERSION").into(),
                role: "worker".into(),
                sensors: Vec::new(),
            };
            if let Ok(body) = serde_json::to_vec(&beat) {
                let _ =
                    s.ch.basic_publish(
                        "".into(),
                        HEARTBEATS_QUEUE.into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default(),
                    )
                    .await;
            }
        }
        // Every HEARTBEAT_EVERY, and at once on a new connection: the server knows a worker
        // before it runs anything there.
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = connected.changed() => {}
        }
    }
}

/// The key-value store as a remote script sees it: each call answered by the server once it
/// is durable there.
struct RemoteKv {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    execution_id: String,
    claim: String,
}

impl RemoteKv {
    fn call(&self, op: KvOp) -> Result<Value, String> {
        let body = serde_json::to_vec(&KvCall {
            execution_id: self.execution_id.clone(),
            claim: self.claim.clone(),
            op,
        })
        .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(bytes) = self.handle.block_on(call(&self.shared, KV_QUEUE, &body)) {
                let v: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("the server's key-value answer is not understood: {e}"))?;
                if let Some(e) = v.get("error").and_then(Value::as_str) {
                    return Err(e.to_string());
                }
                return Ok(v.get("ok").cloned().unwrap_or(Value::Null));
            }
            if Instant::now() > deadline {
                return Err("the server did not answer the key-value call within 30 s".into());
            }
        }
    }
}

impl KvStore for RemoteKv {
    fn get(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self
            .call(KvOp::Get { name: name.into() })?
            .as_str()
            .map(str::to_string))
    }
    fn set(&self, name: &str, value: &str, ttl_seconds: Option<u64>) -> Result<(), String> {
        self.call(KvOp::Set {
            name: name.into(),
            value: value.into(),
            ttl: ttl_seconds,
        })
        .map(|_| ())
    }
    fn delete(&self, name: &str) -> Result<bool, String> {
        Ok(self
            .call(KvOp::Delete { name: name.into() })?
            .as_bool()
            .unwrap_or(false))
    }
    fn claim(&self, name: &str, value: &str, ttl_seconds: Option<u64>) -> Result<bool, String> {
        Ok(self
            .call(KvOp::Claim {
                name: name.into(),
                value: value.into(),
                ttl: ttl_seconds,
            })?
            .as_bool()
            .unwrap_or(false))
    }
}
