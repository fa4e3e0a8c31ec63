//! The server's AMQP side (`squall run --amqp`): publishes work items, answers workers'
//! claims and key-value calls, applies their log lines and results, takes sensor hosts'
//! trigger instances, reads dead letters and heartbeats. Reconnects by itself, with backoff;
//! while the broker is away, webhooks are still accepted (the journal holds them) and work
//! waits in the outbox.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::{
    backoff, confirmed_channel, connect, declare_topology, declare_work_queue, mask,
    publish_confirmed, work_queue, AmqpError, Control, RemoteTrigger, ToServer, CONTROL_EXCHANGE,
    DEAD_QUEUE, HEARTBEATS_QUEUE, KV_QUEUE, SERVER_QUEUE, TRIGGERS_QUEUE,
};
use crate::model::TriggerInstance;
use crate::pipeline::remote::{ClaimAnswer, Heartbeat, KvCall, Outgoing};
use crate::pipeline::Engine;

/// Starts the server's AMQP side on the current tokio runtime.
pub fn start(engine: Arc<Engine>, url: String) {
    tokio::spawn(async move {
        let mut attempt = 0u32;
        let seen = Arc::new(Mutex::new(RecentIds::default()));
        loop {
            if engine.is_stopping() {
                return;
            }
            match session(&engine, &url, &seen).await {
                Ok(()) => {
                    attempt = 0;
                    tracing::warn!(url = %mask(&url), "lost the connection to RabbitMQ; reconnecting");
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = backoff(attempt).as_millis() as u64, "RabbitMQ is not reachable; webhooks are still accepted and work waits");
                }
            }
            if let Some(r) = engine.remote() {
                r.connected
                    .store(false, std::sync::atomic::Ordering::SeqCst);
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
    });
}

/// Trigger instance ids taken lately: a sensor host's instance delivered twice (the broker
/// was lost before our acknowledgement reached it) is taken once.
#[derive(Default)]
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    const KEEP: usize = 100_000;
    /// True when `id` is new.
    fn insert(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

fn err(e: lapin::Error) -> AmqpError {
    AmqpError(format!("RabbitMQ: {e}"))
}

async fn consumer(
    ch: &Channel,
    queue: &str,
    prefetch: u16,
    no_ack: bool,
) -> Result<lapin::Consumer, AmqpError> {
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(err)?;
    ch.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack,
            ..BasicConsumeOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(err)
}

async fn session(
    engine: &Arc<Engine>,
    url: &str,
    seen: &Arc<Mutex<RecentIds>>,
) -> Result<(), AmqpError> {
    let conn = connect(url, "squall server").await?;
    let publish = confirmed_channel(&conn).await.map_err(err)?;
    declare_topology(&publish).await.map_err(err)?;
    let replies = conn.create_channel().await.map_err(err)?;
    let from_workers = conn.create_channel().await.map_err(err)?;
    let kv = conn.create_channel().await.map_err(err)?;
    let triggers = conn.create_channel().await.map_err(err)?;
    let dead = conn.create_channel().await.map_err(err)?;
    let beats = conn.create_channel().await.map_err(err)?;
    let server_c = consumer(&from_workers, SERVER_QUEUE, 1024, false).await?;
    let kv_c = consumer(&kv, KV_QUEUE, 64, false).await?;
    let trig_c = consumer(&triggers, TRIGGERS_QUEUE, 256, false).await?;
    let dead_c = consumer(&dead, DEAD_QUEUE, 16, false).await?;
    let beat_c = consumer(&beats, HEARTBEATS_QUEUE, 256, true).await?;
    let Some(remote) = engine.remote().cloned() else {
        return Err(AmqpError("the engine has no remote workers".into()));
    };
    remote.restore_inflight();
    remote.mark_connected();
    tracing::info!(url = %mask(url), "connected to RabbitMQ: remote workers run the actions");
    // Work queued before (or while the broker was away) goes out now.
    remote.wake.notify_one();
    let result = tokio::select! {
        r = publish_work(engine, &publish) => r,
        r = serve_workers(engine, server_c, replies.clone()) => r,
        r = serve_kv(engine, kv_c, replies.clone()) => r,
        r = take_triggers(engine, trig_c, seen.clone()) => r,
        r = take_dead(engine, dead_c) => r,
        r = take_heartbeats(engine, beat_c) => r,
        r = send_cancels(engine, &replies) => r,
        r = watch_queues(engine, &conn) => r,
        r = reap_lost_runs(engine) => r,
    };
    let _ = conn.close(200, "reconnecting".into()).await;
    result
}

/// Publishes the outbox's work items, many at a time, each confirmed.
async fn publish_work(engine: &Arc<Engine>, ch: &Channel) -> Result<(), AmqpError> {
    let Some(remote) = engine.remote().cloned() else {
        return Ok(());
    };
    let mut declared: HashSet<String> = HashSet::new();
    loop {
        let batch = remote.take_outgoing(256);
        if batch.is_empty() {
            tokio::select! {
                _ = remote.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if ch.status().connected() {
                continue;
            }
            return Ok(());
        }
        for item in &batch {
            let queue = work_queue(item.queue.as_deref());
            if item.queue.is_some() && !declared.contains(&queue) {
                if let Err(e) = declare_work_queue(ch, &queue).await {
                    remote.put_back(batch);
                    return Err(err(e));
                }
                declared.insert(queue);
            }
        }
        let mut failed = Vec::new();
        let mut pending = Vec::with_capacity(batch.len());
        for item in batch {
            let body =
                serde_json::json!({"execution_id": item.execution_id, "action": item.action})
                    .to_string();
            let queue = work_queue(item.queue.as_deref());
            let props = BasicProperties::default()
                .with_message_id(item.execution_id.as_str().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2);
            match ch
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    lapin::options::BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body.as_bytes(),
                    props,
                )
                .await
            {
                Ok(confirm) => pending.push((item, confirm)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish a work item; it waits for the broker");
                    failed.push(item);
                }
            }
        }
        let mut lost = false;
        for (item, confirm) in pending {
            match confirm.await {
                Ok(lapin::Confirmation::Ack(None)) => remote.published(&item.execution_id),
                Ok(other) => {
                    tracing::warn!(execution = %item.execution_id, confirm = ?other.is_ack(), "a work item was not taken by its queue; publishing it again");
                    failed.push(item);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a work item's confirm was lost; publishing it again");
                    lost = true;
                    failed.push(item);
                }
            }
        }
        if !failed.is_empty() {
            remote.put_back(failed);
            if lost || !ch.status().connected() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn ack(d: &Delivery) -> impl std::future::Future<Output = ()> + Send + 'static {
    let acker = d.acker.clone();
    async move {
        if let Err(e) = acker.ack(BasicAckOptions::default()).await {
            tracing::warn!(error = %e, "cannot acknowledge a message; the broker will deliver it again");
        }
    }
}

fn reject(d: &Delivery) -> impl std::future::Future<Output = ()> + Send + 'static {
    let acker = d.acker.clone();
    async move {
        let _ = acker.reject(BasicRejectOptions { requeue: false }).await;
    }
}

async fn reply(ch: &Channel, d: &Delivery, body: &[u8]) {
    let (Some(to), Some(corr)) = (
        d.properties.reply_to().clone(),
        d.properties.correlation_id().clone(),
    ) else {
        return;
    };
    let props = BasicProperties::default().with_correlation_id(corr);
    if let Err(e) = ch
        .basic_publish(
            "".into(),
            to,
            lapin::options::BasicPublishOptions::default(),
            body,
            props,
        )
        .await
    {
        tracing::warn!(error = %e, "cannot answer a worker; it will ask again");
    }
}

/// Claims, log lines and results from workers, applied in the order they came, contiguous
/// claims and results in batches.
async fn serve_workers(
    engine: &Arc<Engine>,
    mut consumer: lapin::Consumer,
    replies: Channel,
) -> Result<(), AmqpError> {
    while let Some(first) = consumer.next().await {
        let mut batch = vec![first.map_err(err)?];
        while batch.len() < 512 {
            match futures_util::FutureExt::now_or_never(consumer.next()) {
                Some(Some(Ok(d))) => batch.push(d),
                Some(Some(Err(e))) => return Err(err(e)),
                _ => break,
            }
        }
        let engine = engine.clone();
        let parsed: Vec<(Delivery, Option<ToServer>)> = batch
            .into_iter()
            .map(|d| {
                let msg = serde_json::from_slice(&d.data).ok();
                (d, msg)
            })
            .collect();
        let done = tokio::task::spawn_blocking(move || apply_from_workers(&engine, parsed))
            .await
            .map_err(|e| AmqpError(format!("applying workers' messages failed: {e}")))?;
        // The answers go out together, then one acknowledgement covers the batch (the
        // deliveries of one channel, in order: everything before them is acknowledged).
        let last = done.last().map(|(d, _)| d.acker.clone());
        futures_util::future::join_all(
            done.iter()
                .filter_map(|(d, answer)| answer.as_ref().map(|body| reply(&replies, d, body))),
        )
        .await;
        if let Some(acker) = last {
            if let Err(e) = acker.ack(BasicAckOptions { multiple: true }).await {
                tracing::warn!(error = %e, "cannot acknowledge workers' messages; the broker will deliver them again");
            }
        }
    }
    Ok(())
}

/// Applies workers' messages in order; returns each delivery with the answer it gets.
fn apply_from_workers(
    engine: &Engine,
    batch: Vec<(Delivery, Option<ToServer>)>,
) -> Vec<(Delivery, Option<Vec<u8>>)> {
    let mut out = Vec::with_capacity(batch.len());
    let mut iter = batch.into_iter().peekable();
    while let Some((d, msg)) = iter.next() {
        match msg {
            None => {
                tracing::warn!(
                    "a message on {SERVER_QUEUE} that is not a claim, log line or result; dropped"
                );
                out.push((d, None));
            }
            Some(ToServer::Log {
                execution_id,
                claim,
                line,
            }) => {
                engine.remote_log(&execution_id, &claim, &line);
                out.push((d, None));
            }
            Some(ToServer::Claims { claims: first }) => {
                // Contiguous claim messages are answered together, each message with its own
                // answers.
                let mut messages = vec![(d, first.len())];
                let mut claims = first;
                while let Some((_, Some(ToServer::Claims { .. }))) = iter.peek() {
                    if let Some((d, Some(ToServer::Claims { claims: more }))) = iter.next() {
                        messages.push((d, more.len()));
                        claims.extend(more);
                    }
                }
                let mut answers = engine.remote_claims(claims).into_iter();
                for (d, n) in messages {
                    let mine: Vec<ClaimAnswer> = answers.by_ref().take(n).collect();
                    for a in &mine {
                        if let ClaimAnswer::Drop(why) | ClaimAnswer::Later(why) = a {
                            tracing::debug!(reason = %why, "a work item's claim was not answered with work");
                        }
                    }
                    out.push((d, serde_json::to_vec(&mine).ok()));
                }
            }
            Some(ToServer::Results { results: first }) => {
                let mut ds = vec![d];
                let mut results = first;
                while let Some((_, Some(ToServer::Results { .. }))) = iter.peek() {
                    if let Some((d, Some(ToServer::Results { results: more }))) = iter.next() {
                        ds.push(d);
                        results.extend(more);
                    }
                }
                engine.remote_results(results);
                out.extend(ds.into_iter().map(|d| (d, None)));
            }
        }
    }
    out
}

async fn serve_kv(
    engine: &Arc<Engine>,
    mut consumer: lapin::Consumer,
    replies: Channel,
) -> Result<(), AmqpError> {
    while let Some(d) = consumer.next().await {
        let d = d.map_err(err)?;
        let engine = engine.clone();
        let replies = replies.clone();
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<KvCall>(&d.data) {
                Ok(call) => tokio::task::spawn_blocking(move || engine.remote_kv(call))
                    .await
                    .unwrap_or_else(|e| Err(format!("the key-value call failed: {e}"))),
                Err(e) => Err(format!("not a key-value call: {e}")),
            };
            let body = match answer {
                Ok(v) => serde_json::json!({"ok": v}),
                Err(e) => serde_json::json!({"error": e}),
            };
            reply(&replies, &d, body.to_string().as_bytes()).await;
            ack(&d).await;
        });
    }
    Ok(())
}

async fn take_triggers(
    engine: &Arc<Engine>,
    mut consumer: lapin::Consumer,
    seen: Arc<Mutex<RecentIds>>,
) -> Result<(), AmqpError> {
    while let Some(d) = consumer.next().await {
        let d = d.map_err(err)?;
        let engine = engine.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let t: RemoteTrigger = match serde_json::from_slice(&d.data) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "a message on {TRIGGERS_QUEUE} is not a trigger instance; dropped");
                    reject(&d).await;
                    return;
                }
            };
            let fresh = seen.lock().map(|mut s| s.insert(&t.id)).unwrap_or(true);
            let stored = engine
                .store
                .trigger_instance(&t.id)
                .ok()
                .flatten()
                .is_some();
            if !fresh || stored {
                ack(&d).await;
                return;
            }
            let id = t.id.clone();
            let mut ti = TriggerInstance::new(
                &t.trigger,
                None,
                t.payload,
                &format!("sensor/{}/{}", t.host, t.sensor),
            );
            ti.context = Some(serde_json::json!({"host": t.host, "sensor": t.sensor}));
            ti.id = t.id;
            ti.occurrence_time = t.occurrence_time;
            match engine.ingest(ti).await {
                Ok(_) => ack(&d).await,
                Err(e) => {
                    // Left unacknowledged: the broker delivers it again after a reconnect.
                    tracing::error!(error = %e, "cannot take a sensor host's trigger instance");
                    if let Ok(mut s) = seen.lock() {
                        s.set.remove(&id);
                    }
                }
            }
        });
    }
    Ok(())
}

async fn take_dead(engine: &Arc<Engine>, mut consumer: lapin::Consumer) -> Result<(), AmqpError> {
    while let Some(d) = consumer.next().await {
        let d = d.map_err(err)?;
        let id = serde_json::from_slice::<serde_json::Value>(&d.data)
            .ok()
            .and_then(|v| v["execution_id"].as_str().map(str::to_string));
        // Dead-lettered at the delivery limit: delivered once more than the limit.
        let deliveries = Some(i64::from(super::DELIVERY_LIMIT) + 1);
        if let Some(id) = id {
            let engine = engine.clone();
            let _ = tokio::task::spawn_blocking(move || engine.remote_dead(&id, deliveries)).await;
        }
        ack(&d).await;
    }
    Ok(())
}

async fn take_heartbeats(
    engine: &Arc<Engine>,
    mut consumer: lapin::Consumer,
) -> Result<(), AmqpError> {
    while let Some(d) = consumer.next().await {
        let d = d.map_err(err)?;
        if let (Ok(beat), Some(remote)) = (
            serde_json::from_slice::<Heartbeat>(&d.data),
            engine.remote(),
        ) {
            remote.heartbeat(beat);
        }
    }
    Ok(())
}

/// Asks the broker every 5 s how many items wait in each work queue, for `/metrics`. A queue
/// that does not exist closes the channel it was asked on: a new one is opened next time.
async fn watch_queues(engine: &Arc<Engine>, conn: &lapin::Connection) -> Result<(), AmqpError> {
    let Some(remote) = engine.remote().cloned() else {
        return Ok(());
    };
    let mut ch: Option<Channel> = None;
    loop {
        if ch.as_ref().is_none_or(|c| !c.status().connected()) {
            ch = conn.create_channel().await.ok();
        }
        if let Some(c) = &ch {
            for q in remote.known_queues() {
                let passive = lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                match c
                    .queue_declare(q.as_str().into(), passive, FieldTable::default())
                    .await
                {
                    Ok(info) => remote.queue_stats(&q, info.message_count(), info.consumer_count()),
                    Err(_) => break,
                }
            }
        }
        if !conn.status().connected() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Every 2 s: runs whose worker is gone end or wait for another worker (see
/// `Engine::remote_reap`).
async fn reap_lost_runs(engine: &Arc<Engine>) -> Result<(), AmqpError> {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let engine = engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.remote_reap()).await;
    }
}

/// Tells workers to cancel the runs whose cancel was asked for.
async fn send_cancels(engine: &Arc<Engine>, ch: &Channel) -> Result<(), AmqpError> {
    let Some(remote) = engine.remote().cloned() else {
        return Ok(());
    };
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (execution_id, worker) in remote.cancels_due() {
            let body = serde_json::to_vec(&Control::Cancel {
                execution_id,
                worker,
            })
            .unwrap_or_default();
            if let Err(e) = publish_confirmed(
                ch,
                CONTROL_EXCHANGE,
                "",
                &body,
                BasicProperties::default(),
                false,
            )
            .await
            {
                tracing::warn!(error = %e, "cannot send a cancel to workers");
            }
        }
        if !ch.status().connected() {
            return Ok(());
        }
    }
}

impl Outgoing {
    /// For logs.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.execution_id, self.action)
    }
}
