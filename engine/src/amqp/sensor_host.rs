//! `squall sensors`: runs the sensors of the packs given (Docker on this host, Mesos, Marathon)
//! and publishes their trigger instances to `squall.triggers` with publisher confirms. An
//! emit returns once the broker confirmed the instance, so a sensor's checkpoint (kept in a
//! file of this host's state dir) moves only past what the broker holds; while the server is
//! down the broker keeps them. An instance keeps its id across retries, so one published
//! twice is taken once. Its source names this host (`sensor/<host>/<sensor>`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use squall_actions::{Limits, RhaiRuntime};
use squall_sensors::{Checkpoint, EmitError, Emitter, SensorEvent};
use tokio::sync::watch;

use super::{
    backoff, confirmed_channel, connect, declare_topology, mask, publish_confirmed, AmqpError,
    RemoteTrigger, HEARTBEATS_QUEUE, TRIGGERS_QUEUE,
};
use crate::pipeline::remote::{Heartbeat, HEARTBEAT_EVERY};
use crate::sensing::{declarations, start_sensors_with, RunningSensor};

/// How a sensor host is started.
#[derive(Debug, Clone)]
pub struct SensorHostOptions {
    pub url: String,
    pub packs: Vec<PathBuf>,
    pub configs: PathBuf,
    pub name: String,
    /// Where sensors' checkpoints are kept.
    pub state_dir: PathBuf,
}

/// Runs the sensors until SIGTERM or SIGINT.
pub fn run(opts: SensorHostOptions) -> Result<(), AmqpError> {
    super::check_url(&opts.url)?;
    std::fs::create_dir_all(&opts.state_dir).map_err(|e| {
        AmqpError(format!(
            "cannot create the state dir {}: {e}",
            opts.state_dir.display()
        ))
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("squall-sensors")
        .build()
        .map_err(|e| AmqpError(format!("cannot start the runtime: {e}")))?;
    rt.block_on(main(opts))
}

type Link = watch::Sender<Option<lapin::Channel>>;

async fn main(opts: SensorHostOptions) -> Result<(), AmqpError> {
    let runtime = RhaiRuntime::new(Limits::default());
    let catalog = crate::packs::load_packs_with_configs(&opts.packs, &opts.configs, &runtime);
    for p in &catalog.problems {
        tracing::warn!(problem = %p, "pack problem");
    }
    let (decls, problems) = declarations(&catalog);
    for p in &problems {
        tracing::warn!(problem = %p, "sensor problem");
    }
    if decls.is_empty() {
        return Err(AmqpError(format!(
            "the packs given ({}) declare no sensor",
            opts.packs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (link, _) = watch::channel(None);
    let link = Arc::new(link);
    let stopping = Arc::new(AtomicBool::new(false));
    tokio::spawn(supervise(opts.url.clone(), link.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let host = opts.name.clone();
    let sensors = start_sensors_with(decls, shutdown_rx, |decl| {
        (
            Arc::new(BrokerEmitter {
                link: link.clone(),
                host: host.clone(),
                sensor: decl.reference(),
                stopping: stopping.clone(),
            }) as Arc<dyn Emitter>,
            Arc::new(FileCheckpoint {
                file: opts
                    .state_dir
                    .join(format!("{}.checkpoint", decl.reference())),
            }) as Arc<dyn Checkpoint>,
        )
    });
    let sensors = Arc::new(sensors);
    tokio::spawn(heartbeats(opts.name.clone(), link.clone(), sensors.clone()));
    wait_for_signal().await;
    stopping.store(true, Ordering::SeqCst);
    let _ = shutdown_tx.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn supervise(url: String, link: Arc<Link>) {
    let mut attempt = 0u32;
    loop {
        match connect(&url, "squall sensors").await {
            Ok(conn) => {
                let ready = async {
                    let ch = confirmed_channel(&conn).await?;
                    declare_topology(&ch).await?;
                    Ok::<_, lapin::Error>(ch)
                }
                .await;
                match ready {
                    Ok(ch) => {
                        attempt = 0;
                        tracing::info!(url = %mask(&url), "connected to RabbitMQ; publishing trigger instances");
                        link.send_replace(Some(ch.clone()));
                        while conn.status().connected() && ch.status().connected() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        link.send_replace(None);
                        tracing::warn!(url = %mask(&url), "lost the connection to RabbitMQ; reconnecting");
                    }
                    Err(e) => {
                        tracing::error!(url = %mask(&url), error = %e, "cannot set up the connection to RabbitMQ")
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = backoff(attempt).as_millis() as u64, "RabbitMQ is not reachable; sensors wait")
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

struct BrokerEmitter {
    link: Arc<Link>,
    host: String,
    sensor: String,
    stopping: Arc<AtomicBool>,
}

impl Emitter for BrokerEmitter {
    fn emit(
        &self,
        event: SensorEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EmitError>> + Send + '_>>
    {
        Box::pin(async move {
            let t = RemoteTrigger {
                id: crate::model::new_id(),
                trigger: event.trigger,
                payload: event.payload,
                occurrence_time: event.occurred_at,
                host: self.host.clone(),
                sensor: self.sensor.clone(),
            };
            let body = serde_json::to_vec(&t).map_err(|e| EmitError(e.to_string()))?;
            let props = BasicProperties::default().with_message_id(t.id.as_str().into());
            // The same id until the broker confirms it: the server takes it once.
            let mut rx = self.link.subscribe();
            loop {
                if self.stopping.load(Ordering::SeqCst) {
                    return Err(EmitError("squall sensors is stopping".into()));
                }
                let ch = rx.borrow_and_update().clone();
                if let Some(ch) = ch {
                    match publish_confirmed(&ch, "", TRIGGERS_QUEUE, &body, props.clone(), true)
                        .await
                    {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            tracing::warn!(error = %e, sensor = %self.sensor, "a trigger instance was not confirmed; publishing it again");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            }
        })
    }
}

/// A sensor's checkpoint in a file, replaced atomically.
struct FileCheckpoint {
    file: PathBuf,
}

impl Checkpoint for FileCheckpoint {
    fn load(&self) -> Option<String> {
        std::fs::read_to_string(&self.file).ok()
    }
    fn save(&self, value: &str) -> Result<(), String> {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, value).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.file).map_err(|e| format!("{}: {e}", self.file.display()))
    }
}

async fn heartbeats(name: String, link: Arc<Link>, sensors: Arc<Vec<RunningSensor>>) {
    let host = super::host_name();
    loop {
        let ch = link.borrow().clone();
        if let Some(ch) = ch {
            let beat = Heartbeat {
                name: name.clone(),
                host: host.clone(),
                queues: Vec::new(),
                concurrency: 0,
                running: Vec::new(),
                pid: std::process::id(),
                instance: String::new(),
                connection: 0,
                version: env!("CARGO_PKG_VERSION").into(),
                role: "sensors".into(),
                sensors: sensors.iter().map(RunningSensor::json).collect(),
            };
            if let Ok(body) = serde_json::to_vec(&beat) {
                let _ = ch
                    .basic_publish(
                        "".into(),
                        HEARTBEATS_QUEUE.into(),
                        lapin::options::BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default(),
                    )
                    .await;
            }
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}
