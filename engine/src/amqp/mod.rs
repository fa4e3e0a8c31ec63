//! squall over RabbitMQ (lapin): a server (`squall run --amqp`), stateless workers
//! (`squall worker`) and sensor hosts (`squall sensors`) joined by a broker.
//!
//! Topology, declared by every role at connect (idempotent declarations):
//! - `squall.work` and `squall.work.<name>`: work items (an execution id), durable quorum
//!   queues with a delivery limit; an item whose deliveries all lost their worker is
//!   dead-lettered to `squall.dead`, which the server reads to fail its execution.
//! - `squall.server`: what workers tell the server, in order: claims, log lines, results. One
//!   queue, so a result a worker published before it was lost is applied before the claim of
//!   the item's next delivery.
//! - `squall.kv`: remote scripts' key-value calls (answered on the caller's reply queue).
//! - `squall.triggers`: trigger instances from sensor hosts.
//! - `squall.heartbeats`: workers' heartbeats (a classic queue whose messages expire).
//! - `squall.control` (fanout exchange): cancels, to every worker's own queue.
//!
//! Every message is JSON. Work, claims, results, log lines and trigger instances are published
//! with publisher confirms (and work with `mandatory`: an item no queue takes is an error, not
//! a silent drop); work and results are acknowledged only once what they caused is durable.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};

pub mod sensor_host;
pub mod server;
pub mod worker;

pub const WORK_QUEUE: &str = "squall.work";
pub const SERVER_QUEUE: &str = "squall.server";
pub const KV_QUEUE: &str = "squall.kv";
pub const TRIGGERS_QUEUE: &str = "squall.triggers";
pub const DEAD_QUEUE: &str = "squall.dead";
pub const HEARTBEATS_QUEUE: &str = "squall.heartbeats";
pub const CONTROL_EXCHANGE: &str = "squall.control";

/// Deliveries of one work item before the broker dead-letters it: the first, and two more
/// after a worker was lost with it.
pub const DELIVERY_LIMIT: i32 = 2;

/// How long a claim or key-value call waits for the server's answer before it is asked again.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// A role's connection failed; the message names the URL with its password masked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AmqpError(pub String);

/// The URL with its password replaced by `***`, for logs and errors.
pub fn mask(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

/// Checks a URL before any connection: its form (`amqp://` or `amqps://`, TLS with rustls).
pub fn check_url(url: &str) -> Result<(), AmqpError> {
    let parsed: Result<lapin::uri::AMQPUri, String> = url.parse();
    match parsed {
        Ok(_) => Ok(()),
        Err(e) => Err(AmqpError(format!("not an AMQP URL ({}): {e}", mask(url)))),
    }
}

/// The environment variable naming a PEM file of certificate authorities to trust for
/// `amqps://` besides the web PKI's (a broker with a private CA's certificate).
pub const CA_FILE_ENV: &str = "SQUALL_AMQP_CA_FILE";

/// Connects once, naming the connection after the role (shown in RabbitMQ's management).
pub async fn connect(url: &str, name: &str) -> Result<Connection, AmqpError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let failed =
        |e: lapin::Error| AmqpError(format!("cannot connect to RabbitMQ at {}: {e}", mask(url)));
    match std::env::var(CA_FILE_ENV).ok().filter(|f| !f.is_empty()) {
        Some(file) => {
            let pem = std::fs::read_to_string(&file)
                .map_err(|e| AmqpError(format!("{CA_FILE_ENV} {file}: {e}")))?;
            let runtime = lapin::runtime::default_runtime().map_err(failed)?;
            let tls = lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: Some(pem),
            };
            Connection::connect_with_config(url, props, tls, runtime)
                .await
                .map_err(failed)
        }
        None => Connection::connect(url, props).await.map_err(failed),
    }
}

/// Waits before the next connection attempt: 0.5 s, doubling up to 10 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(10))
}

fn quorum_args(dead_letter: bool) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if dead_letter {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DELIVERY_LIMIT),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(DEAD_QUEUE.into()),
        );
    }
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// The queue a work item for `name` goes to (`None`: the shared one).
pub fn work_queue(name: Option<&str>) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{WORK_QUEUE}.{n}"),
        _ => WORK_QUEUE.to_string(),
    }
}

/// Declares a work queue.
pub async fn declare_work_queue(ch: &Channel, queue: &str) -> Result<(), lapin::Error> {
    ch.queue_declare(queue.into(), durable(), quorum_args(true))
        .await
        .map(|_| ())
}

/// Declares everything every role uses.
pub async fn declare_topology(ch: &Channel) -> Result<(), lapin::Error> {
    declare_work_queue(ch, WORK_QUEUE).await?;
    for q in [SERVER_QUEUE, TRIGGERS_QUEUE, DEAD_QUEUE, KV_QUEUE] {
        ch.queue_declare(q.into(), durable(), quorum_args(false))
            .await?;
    }
    let mut ttl = FieldTable::default();
    ttl.insert("x-message-ttl".into(), AMQPValue::LongInt(30_000));
    ch.queue_declare(HEARTBEATS_QUEUE.into(), QueueDeclareOptions::default(), ttl)
        .await?;
    ch.exchange_declare(
        CONTROL_EXCHANGE.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// A channel with publisher confirms.
pub async fn confirmed_channel(conn: &Connection) -> Result<Channel, lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

/// Publishes JSON and waits for the broker's confirm; an unroutable `mandatory` message or a
/// nack is an error.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
    mandatory: bool,
) -> Result<(), String> {
    let confirm = ch
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions {
                mandatory,
                ..BasicPublishOptions::default()
            },
            body,
            props.with_delivery_mode(2),
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    match confirm {
        lapin::Confirmation::Ack(None) | lapin::Confirmation::NotRequested => Ok(()),
        lapin::Confirmation::Ack(Some(_)) => Err(format!(
            "no queue took the message (routing key {routing_key})"
        )),
        lapin::Confirmation::Nack(_) => Err("the broker refused the message (nack)".into()),
    }
}

/// What workers send the server on `squall.server`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToServer {
    /// Claims gathered by one worker; answered with their answers, in order, in one reply.
    Claims {
        claims: Vec<crate::pipeline::remote::Claim>,
    },
    Log {
        execution_id: String,
        claim: String,
        line: squall_actions::LogLine,
    },
    /// Results, in the order their runs ended.
    Results {
        results: Vec<crate::pipeline::remote::RemoteResult>,
    },
}

/// What the server sends workers on `squall.control`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    Cancel {
        execution_id: String,
        worker: String,
    },
}

/// A trigger instance a sensor host sensed.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoteTrigger {
    pub id: String,
    pub trigger: String,
    pub payload: serde_json::Value,
    pub occurrence_time: chrono::DateTime<chrono::Utc>,
    /// The sensor host and sensor: in the instance's `context`.
    pub host: String,
    pub sensor: String,
}

/// This machine's host name (the worker's or sensor host's default name).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_password_only() {
        assert_eq!(
            mask("amqp://squall:s3cret@mq.example:5672/%2f"),
            "amqp://squall:***@mq.example:5672/%2f"
        );
        assert_eq!(mask("amqp://mq:5672"), "amqp://mq:5672");
        assert_eq!(mask("amqp://guest@mq/"), "amqp://guest@mq/");
        assert_eq!(
            mask("amqps://u:p@ss@h/v?heartbeat=10"),
            "amqps://u:***@h/v?heartbeat=10"
        );
    }

    #[test]
    fn what_workers_send_round_trips_as_json() {
        use crate::pipeline::remote::{Claim, RemoteResult};
        let claims = ToServer::Claims {
            claims: vec![Claim {
                execution_id: "e1".into(),
                claim: "i.1.c".into(),
                worker: "w".into(),
                redelivered: false,
            }],
        };
        let results = ToServer::Results {
            results: vec![RemoteResult {
                execution_id: "e1".into(),
                claim: "i.1.c".into(),
                status: crate::model::ExecutionStatus::Succeeded,
                result: serde_json::json!({"ok": true}),
                log: Vec::new(),
            }],
        };
        for msg in [claims, results] {
            let bytes = serde_json::to_vec(&msg).expect("serializes");
            let back: ToServer = serde_json::from_slice(&bytes).expect("reads back");
            assert_eq!(
                serde_json::to_value(&back).expect("value"),
                serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")
            );
        }
    }

    #[test]
    fn backoff_grows_and_stops_growing() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(9), Duration::from_secs(10));
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(check_url("amqps://squall:pw@mq.example:5671/ops?heartbeat=10").is_ok());
        let err = check_url("http://x:secret@h/").unwrap_err().to_string();
        assert!(err.contains("x:***@h"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
