//! The broker's own ceiling for squall over RabbitMQ: a bare lapin loop, nothing of squall's,
//! that moves N small JSON messages (~100 bytes, persistent) through a durable quorum queue of
//! its own (`ceiling.<pid>`) as squall moves work items through `squall.work`: published with
//! publisher confirms, many in flight (as a fair producer would, rather than one at a time),
//! and consumed at once on another connection with manual acks and a prefetch like a squall
//! worker's (its `--concurrency`). Prints messages/s end to end (first publish to last ack),
//! and the publishing rate alone (first publish to last confirm). Deletes its queue at the end.
//! `scripts/bench-amqp` runs it beside squall, so a run shows what the broker alone allows.
//!
//! Run: `cargo run --release -p squall-engine --example amqp_ceiling -- URL N [PREFETCH] [IN_FLIGHT]`
//! (defaults: PREFETCH 64, IN_FLIGHT 1024 unconfirmed publishes at most).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Notify;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    url: String,
    n: usize,
    prefetch: u16,
    in_flight: usize,
}

fn args() -> Result<Args, Error> {
    let usage = "usage: amqp_ceiling URL N [PREFETCH (64)] [IN_FLIGHT (1024)]";
    let mut it = std::env::args().skip(1);
    let url = it.next().ok_or(usage)?;
    let n: usize = it.next().ok_or(usage)?.parse()?;
    let prefetch: u16 = it.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let in_flight: usize = it.next().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    if n == 0 || prefetch == 0 || in_flight == 0 {
        return Err(format!("N, PREFETCH and IN_FLIGHT must be positive\n{usage}").into());
    }
    Ok(Args {
        url,
        n,
        prefetch,
        in_flight,
    })
}

fn main() -> Result<(), Error> {
    let args = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn connect(url: &str, name: &str) -> Result<Connection, Error> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, props).await?)
}

/// A message like a work item: an id, an action, a little more, about 100 bytes of JSON.
fn body(i: usize) -> Vec<u8> {
    format!(
        r#"{{"execution_id":"01JCEILING{i:016}","action":"bench.trivial","parameters":{{"n":{i}}},"pad":"xxxxxxxx"}}"#
    )
    .into_bytes()
}

async fn run(args: Args) -> Result<(), Error> {
    let queue = format!("ceiling.{}", std::process::id());
    let producer = connect(&args.url, "amqp_ceiling producer").await?;
    let consumer = connect(&args.url, "amqp_ceiling consumer").await?;
    let pub_ch = producer.create_channel().await?;
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    pub_ch
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum,
        )
        .await?;
    let outcome = measure(&args, &queue, &pub_ch, &consumer).await;
    // The queue goes whatever happened.
    let deleted = pub_ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = consumer.close(200, "done".into()).await;
    let _ = producer.close(200, "done".into()).await;
    let (end_to_end, published) = outcome?;
    deleted?;
    let n = args.n as f64;
    println!(
        "amqp ceiling: {} messages of ~{} bytes, persistent, quorum queue, confirms ({} in flight at most), manual acks (prefetch {})",
        args.n,
        body(args.n).len(),
        args.in_flight,
        args.prefetch
    );
    println!(
        "published and confirmed: {:.0} messages/s ({:.3} s)",
        n / published.as_secs_f64(),
        published.as_secs_f64()
    );
    println!(
        "end to end (first publish to last ack): {:.0} messages/s ({:.3} s)",
        n / end_to_end.as_secs_f64(),
        end_to_end.as_secs_f64()
    );
    Ok(())
}

/// Publishes and consumes N messages at once; returns the time to the last ack and the time
/// to the last confirm, both from the first publish.
async fn measure(
    args: &Args,
    queue: &str,
    pub_ch: &Channel,
    consumer: &Connection,
) -> Result<(Duration, Duration), Error> {
    let con_ch = consumer.create_channel().await?;
    con_ch
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let mut deliveries = con_ch
        .basic_consume(
            queue.into(),
            "amqp_ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let acked = Arc::new(AtomicUsize::new(0));
    let all_acked = Arc::new(Notify::new());
    let n = args.n;
    // Each delivery acknowledged on a task of its own, as a squall worker does.
    let consuming = tokio::spawn({
        let acked = acked.clone();
        let all_acked = all_acked.clone();
        async move {
            let mut taken = 0;
            while taken < n {
                let Some(d) = deliveries.next().await else {
                    return Err::<(), Error>("the consumer ended early".into());
                };
                let d = d?;
                taken += 1;
                let acked = acked.clone();
                let all_acked = all_acked.clone();
                tokio::spawn(async move {
                    if d.acker.ack(BasicAckOptions::default()).await.is_ok()
                        && acked.fetch_add(1, Ordering::SeqCst) + 1 == n
                    {
                        all_acked.notify_one();
                    }
                });
            }
            Ok(())
        }
    });

    let start = Instant::now();
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    // Up to IN_FLIGHT publishes at once, each done when the broker confirms it.
    let mut confirms = futures_util::stream::iter(0..n)
        .map(|i| {
            let props = props.clone();
            async move {
                let confirm = pub_ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &body(i),
                        props,
                    )
                    .await?;
                match confirm.await? {
                    Confirmation::Ack(None) => Ok(()),
                    other => Err::<(), Error>(format!("message {i} not taken: {other:?}").into()),
                }
            }
        })
        .buffer_unordered(args.in_flight);
    while let Some(r) = confirms.next().await {
        r?;
    }
    let published = start.elapsed();
    let wait = tokio::time::timeout(Duration::from_secs(600), all_acked.notified());
    if acked.load(Ordering::SeqCst) < n && wait.await.is_err() {
        return Err(format!(
            "only {} of {n} messages acknowledged within 600 s",
            acked.load(Ordering::SeqCst)
        )
        .into());
    }
    let end_to_end = start.elapsed();
    consuming.await??;
    Ok((end_to_end, published))
}
