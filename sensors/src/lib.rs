//! squall-sensors: one module per event source, each turning its source into trigger
//! instances. A sensor knows its source's wire format and nothing of rules, actions or storage:
//! it hands each event to an [`Emitter`] (the engine), which answers only once the event is on
//! disk, so a sensor may then move its [`Checkpoint`] forward.
//!
//! Every sensor kind is named in [`builtin_sensors`], the one explicit list. Sensors run on the
//! async runtime and must never block it; they stop when their shutdown signal turns true.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

pub mod alertmanager;
pub mod capacity;
pub mod cgroup;
pub mod docker;
pub mod grafana;
pub mod marathon;
pub mod mesos;
pub mod mesos_metrics;
pub mod recordio;

/// Something that happened, as a sensor saw it: the trigger type it is an instance of and the
/// payload rules match against.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorEvent {
    /// Trigger type reference, e.g. `docker.container_event`.
    pub trigger: String,
    pub payload: Value,
    /// When the source says it happened (the engine records when it was received).
    pub occurred_at: DateTime<Utc>,
}

/// Why an event could not be accepted. The sensor should retry later; nothing was stored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct EmitError(pub String);

/// Where sensors send events: the engine's durable ingest.
pub trait Emitter: Send + Sync {
    /// Stores the event; returns once it is durable.
    fn emit(
        &self,
        event: SensorEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EmitError>> + Send + '_>>;
}

/// A sensor's saved position in its source (Docker's `since`), kept by the engine across
/// restarts. Save only after the events before it were emitted.
pub trait Checkpoint: Send + Sync {
    fn load(&self) -> Option<String>;
    fn save(&self, value: &str) -> Result<(), String>;
}

/// A checkpoint in memory, for tests.
#[derive(Default)]
pub struct MemoryCheckpoint(Mutex<Option<String>>);

impl Checkpoint for MemoryCheckpoint {
    fn load(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
    fn save(&self, value: &str) -> Result<(), String> {
        match self.0.lock() {
            Ok(mut g) => *g = Some(value.to_string()),
            Err(p) => *p.into_inner() = Some(value.to_string()),
        }
        Ok(())
    }
}

/// What a running sensor reports about itself (`squall sensor list`, `/metrics`).
#[derive(Default)]
pub struct SensorStatus {
    connected: AtomicBool,
    events: AtomicU64,
    reconnects: AtomicU64,
    errors: AtomicU64,
    last_event: Mutex<Option<DateTime<Utc>>>,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`SensorStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct SensorStatusView {
    pub connected: bool,
    pub events: u64,
    pub reconnects: u64,
    pub errors: u64,
    pub last_event: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl SensorStatus {
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
    }
    pub fn event(&self) {
        self.events.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut g) = self.last_event.lock() {
            *g = Some(Utc::now());
        }
    }
    pub fn reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::SeqCst);
    }
    pub fn error(&self, message: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(message.into());
        }
    }
    pub fn view(&self) -> SensorStatusView {
        SensorStatusView {
            connected: self.connected.load(Ordering::SeqCst),
            events: self.events.load(Ordering::SeqCst),
            reconnects: self.reconnects.load(Ordering::SeqCst),
            errors: self.errors.load(Ordering::SeqCst),
            last_event: self.last_event.lock().ok().and_then(|g| *g),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
        }
    }
}

/// What a running sensor is given.
pub struct SensorContext {
    pub emitter: Arc<dyn Emitter>,
    pub checkpoint: Arc<dyn Checkpoint>,
    pub status: Arc<SensorStatus>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// A trigger type a sensor emits, with its payload schema (a JSON Schema subset).
#[derive(Debug, Clone, Serialize)]
pub struct TriggerTypeInfo {
    #[serde(rename = "ref")]
    pub reference: &'static str,
    pub description: &'static str,
    pub payload_schema: Value,
}

/// A sensor, configured and ready to run.
pub trait Sensor: Send {
    /// Runs until `ctx.shutdown` turns true, reconnecting with backoff on its own.
    fn run(
        self: Box<Self>,
        ctx: SensorContext,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

/// Builds a sensor from its settings; an error names the bad setting.
pub type BuildSensor = fn(&serde_json::Map<String, Value>) -> Result<Box<dyn Sensor>, String>;

/// A kind of sensor: its name, its trigger types, and how to build one from its settings
/// (the pack's `sensors/*.yaml` merged with the deployment's `configs/<pack>.yaml`).
pub struct SensorKind {
    pub name: &'static str,
    pub description: &'static str,
    pub trigger_types: fn() -> Vec<TriggerTypeInfo>,
    /// Builds the sensor; an error names the bad setting.
    pub build: BuildSensor,
}

/// Every built-in sensor kind, in one place.
pub fn builtin_sensors() -> Vec<SensorKind> {
    vec![
        docker::kind(),
        mesos::kind(),
        mesos_metrics::kind(),
        marathon::kind(),
        capacity::kind(),
    ]
}

/// Sleeps for a backoff step (doubling from `base` up to `max`), or returns false early when
/// shutdown is signalled.
pub async fn backoff_sleep(
    attempt: u32,
    base: std::time::Duration,
    max: std::time::Duration,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let factor = 2u32.saturating_pow(attempt.min(16));
    let delay = base.saturating_mul(factor).min(max);
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stopped(shutdown) => false,
    }
}

/// Resolves once shutdown is signalled (or its sender is gone).
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
