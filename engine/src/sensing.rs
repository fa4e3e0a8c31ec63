//! Running the sensors packs declare. A pack's `sensors/*.yaml` names a built-in sensor kind
//! and its default settings; the deployment's `configs/<pack>.yaml` (checked against the pack's
//! `config.schema.yaml`) overrides them. Each sensor's events go through the engine's durable
//! ingest; its checkpoint lives in the store; its status is shown by `/api/v1/sensors` and
//! `/metrics`.
//!
//! A sensor that cannot be built (no Docker socket, no Mesos master configured) is listed with
//! the reason and not started; it never stops the others or the engine.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use squall_sensors::{
    builtin_sensors, Checkpoint, EmitError, Emitter, SensorContext, SensorEvent, SensorStatus,
};
use tokio::sync::watch;

use crate::model::TriggerInstance;
use crate::packs::{Catalog, Problem};
use crate::pipeline::Engine;

/// `sensors/<name>.yaml` in a pack.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeclaration {
    /// The built-in sensor kind (`docker`, `mesos`, `marathon`).
    sensor: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    settings: Map<String, Value>,
    /// st2's trigger type declarations (`name`, `description`, `parameters_schema`,
    /// `payload_schema`): read by [`declared_trigger_types`].
    #[serde(default)]
    #[allow(dead_code)]
    trigger_types: Vec<Value>,
}

fn yes() -> bool {
    true
}

/// A sensor a pack declares, with its settings resolved.
#[derive(Debug, Clone)]
pub struct SensorDeclaration {
    pub pack: String,
    pub name: String,
    pub kind: String,
    pub description: String,
    pub enabled: bool,
    pub settings: Map<String, Value>,
    pub file: PathBuf,
}

impl SensorDeclaration {
    pub fn reference(&self) -> String {
        format!("{}.{}", self.pack, self.name)
    }
}

/// Reads every pack's sensor declarations; problems (unknown kind, bad fields) are returned
/// with their file.
pub fn declarations(catalog: &Catalog) -> (Vec<SensorDeclaration>, Vec<Problem>) {
    let kinds: Vec<&'static str> = builtin_sensors().iter().map(|k| k.name).collect();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for pack in &catalog.packs {
        for (file, value) in pack.extras.get("sensors").into_iter().flatten() {
            if let (None, Some(class)) = (
                value.get("sensor"),
                value.get("class_name").and_then(Value::as_str),
            ) {
                // st2's Python sensor: its trigger types are registered (see
                // `declared_trigger_types`) but squall runs only its own sensor kinds.
                problems.push(Problem {
                    file: file.clone(),
                    line: squall_rules::line_of(
                        &std::fs::read_to_string(file).unwrap_or_default(),
                        "class_name",
                    ),
                    column: None,
                    message: format!(
                        "st2 Python sensor '{class}' does not run under squall, which runs its own sensor kinds ({}); its trigger types are registered, so rules on them load, and their instances can be sent to POST /api/v1/webhooks/st2",
                        kinds.join(", ")
                    ),
                });
                continue;
            }
            let raw: RawDeclaration = match serde_json::from_value(value.clone()) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(Problem {
                        file: file.clone(),
                        line: None,
                        column: None,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            if !kinds.contains(&raw.sensor.as_str()) {
                problems.push(Problem {
                    file: file.clone(),
                    line: squall_rules::line_of(
                        &std::fs::read_to_string(file).unwrap_or_default(),
                        "sensor",
                    ),
                    column: None,
                    message: format!(
                        "unknown sensor kind '{}'; squall has: {}",
                        raw.sensor,
                        kinds.join(", ")
                    ),
                });
                continue;
            }
            let mut settings = raw.settings;
            // The deployment's config wins over the pack's defaults.
            for (k, v) in &pack.config {
                if !pack.config_undeclared.contains(k) {
                    settings.insert(k.clone(), v.clone());
                }
            }
            let name = raw.name.unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| raw.sensor.clone())
            });
            // The name is the sensor's reference: its metrics' label and its checkpoint's key.
            if let Some(first) = out
                .iter()
                .find(|d: &&SensorDeclaration| d.pack == pack.reference && d.name == name)
            {
                problems.push(Problem {
                    file: file.clone(),
                    line: squall_rules::line_of(
                        &std::fs::read_to_string(file).unwrap_or_default(),
                        "name",
                    ),
                    column: None,
                    message: format!(
                        "sensor '{}.{name}' is also declared in {}; this one is not loaded",
                        pack.reference,
                        first.file.display()
                    ),
                });
                continue;
            }
            out.push(SensorDeclaration {
                pack: pack.reference.clone(),
                name,
                kind: raw.sensor,
                description: raw.description.unwrap_or_default(),
                enabled: raw.enabled,
                settings,
                file: file.clone(),
            });
        }
    }
    (out, problems)
}

/// A trigger type a pack's sensor file declares (st2's `trigger_types:` entries).
#[derive(Debug, Clone)]
pub struct DeclaredTriggerType {
    /// `pack.name` (the entry's own `pack` wins over the pack's).
    pub reference: String,
    /// The entry's `parameters_schema`, when it declares one: rules may then give the trigger
    /// parameters, checked against it.
    pub parameters_schema: Option<Value>,
    pub file: PathBuf,
}

/// Every trigger type the packs' sensor files declare, whatever runs them (st2 registers a
/// sensor's trigger types with the sensor).
pub fn declared_trigger_types(catalog: &Catalog) -> Vec<DeclaredTriggerType> {
    let mut out = Vec::new();
    for pack in &catalog.packs {
        for (file, value) in pack.extras.get("sensors").into_iter().flatten() {
            let entries = value.get("trigger_types").and_then(Value::as_array);
            for entry in entries.into_iter().flatten() {
                let Some(name) = entry.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let pack_ref = entry
                    .get("pack")
                    .and_then(Value::as_str)
                    .unwrap_or(&pack.reference);
                out.push(DeclaredTriggerType {
                    reference: format!("{pack_ref}.{name}"),
                    parameters_schema: entry
                        .get("parameters_schema")
                        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
                        .cloned(),
                    file: file.clone(),
                });
            }
        }
    }
    out
}

/// A sensor as the engine keeps it.
pub struct RunningSensor {
    pub declaration: SensorDeclaration,
    pub status: Arc<SensorStatus>,
    /// Why it is not running, when it is not.
    pub not_started: Option<String>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSensor {
    pub fn json(&self) -> Value {
        let view = self.status.view();
        json!({
            "ref": self.declaration.reference(),
            "pack": self.declaration.pack,
            "name": self.declaration.name,
            "kind": self.declaration.kind,
            "description": self.declaration.description,
            "enabled": self.declaration.enabled,
            "running": self.task.as_ref().is_some_and(|t| !t.is_finished()),
            "not_started": self.not_started,
            "connected": view.connected,
            "events": view.events,
            "reconnects": view.reconnects,
            "errors": view.errors,
            "last_event": view.last_event,
            "last_error": view.last_error,
        })
    }
}

impl Drop for RunningSensor {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

struct EngineEmitter {
    engine: Arc<Engine>,
    source: String,
}

impl Emitter for EngineEmitter {
    fn emit(
        &self,
        event: SensorEvent,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), EmitError>> + Send + '_>>
    {
        Box::pin(async move {
            let mut ti = TriggerInstance::new(&event.trigger, None, event.payload, &self.source);
            ti.occurrence_time = event.occurred_at;
            self.engine
                .ingest(ti)
                .await
                .map(|_| ())
                .map_err(|e| EmitError(e.to_string()))
        })
    }
}

/// This host's name (the `host` of what its own sensors see), read once.
pub fn host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".to_string())
    })
}

struct StoreCheckpoint {
    engine: Arc<Engine>,
    sensor: String,
}

impl Checkpoint for StoreCheckpoint {
    fn load(&self) -> Option<String> {
        self.engine.store.sensor_state(&self.sensor).ok().flatten()
    }
    fn save(&self, value: &str) -> Result<(), String> {
        // Durable with the next flush: emitting the next event flushes it.
        self.engine
            .store
            .set_sensor_state(&self.sensor, value)
            .map_err(|e| e.to_string())
    }
}

/// Builds and starts the declared sensors. Call on the async runtime.
pub fn start_sensors(
    engine: &Arc<Engine>,
    declarations: Vec<SensorDeclaration>,
    shutdown: watch::Receiver<bool>,
) -> Vec<RunningSensor> {
    start_sensors_with(declarations, shutdown, |decl| {
        (
            Arc::new(EngineEmitter {
                engine: engine.clone(),
                source: format!("sensor/{}", decl.reference()),
            }) as Arc<dyn Emitter>,
            Arc::new(StoreCheckpoint {
                engine: engine.clone(),
                sensor: decl.reference(),
            }) as Arc<dyn Checkpoint>,
        )
    })
}

/// Builds and starts the declared sensors, each with the emitter and checkpoint `wire` gives
/// it (the engine's, or a sensor host's). Call on the async runtime.
pub fn start_sensors_with(
    declarations: Vec<SensorDeclaration>,
    shutdown: watch::Receiver<bool>,
    wire: impl Fn(&SensorDeclaration) -> (Arc<dyn Emitter>, Arc<dyn Checkpoint>),
) -> Vec<RunningSensor> {
    let kinds = builtin_sensors();
    let mut running = Vec::new();
    for decl in declarations {
        let status = Arc::new(SensorStatus::default());
        let mut not_started = None;
        let mut task = None;
        if !decl.enabled {
            not_started = Some("disabled".to_string());
        } else if let Some(kind) = kinds.iter().find(|k| k.name == decl.kind) {
            match (kind.build)(&decl.settings) {
                Ok(sensor) => {
                    let (emitter, checkpoint) = wire(&decl);
                    let ctx = SensorContext {
                        emitter,
                        checkpoint,
                        status: status.clone(),
                        shutdown: shutdown.clone(),
                    };
                    tracing::info!(sensor = %decl.reference(), kind = %decl.kind, "sensor started");
                    task = Some(tokio::spawn(sensor.run(ctx)));
                }
                Err(e) => {
                    tracing::warn!(
                        sensor = %decl.reference(),
                        reason = %e,
                        settings = %format!("configs/{}.yaml (see the pack's config.schema.yaml)", decl.pack),
                        "sensor not started"
                    );
                    status.error(e.clone());
                    not_started = Some(e);
                }
            }
        }
        running.push(RunningSensor {
            declaration: decl,
            status,
            not_started,
            task,
        });
    }
    running
}

/// Every trigger type a built-in sensor or alert receiver emits.
pub fn sensor_trigger_types() -> Vec<Value> {
    let mut out = Vec::new();
    let mut add = |pack: &str, infos: Vec<squall_sensors::TriggerTypeInfo>| {
        for t in infos {
            let name = t
                .reference
                .split_once('.')
                .map(|(_, n)| n)
                .unwrap_or(t.reference);
            out.push(json!({
                "ref": t.reference,
                "pack": pack,
                "name": name,
                "description": t.description,
                "parameters_schema": {},
                "payload_schema": t.payload_schema,
            }));
        }
    };
    for kind in builtin_sensors() {
        add(kind.name, (kind.trigger_types)());
    }
    add(
        "alertmanager",
        squall_sensors::alertmanager::trigger_types(),
    );
    add("grafana", squall_sensors::grafana::trigger_types());
    out
}

/// Reads one counter of a sensor's status.
type StatusGetter = fn(&squall_sensors::SensorStatusView) -> u64;

/// Prometheus lines for the sensors' counters.
pub fn render_metrics(sensors: &[RunningSensor]) -> String {
    let mut out = String::new();
    let series: [(&str, &str, &str, StatusGetter); 4] = [
        (
            "squall_sensor_events_total",
            "counter",
            "Events a sensor turned into trigger instances.",
            |v| v.events,
        ),
        (
            "squall_sensor_reconnects_total",
            "counter",
            "Times a sensor reconnected to its source.",
            |v| v.reconnects,
        ),
        (
            "squall_sensor_errors_total",
            "counter",
            "Errors a sensor met.",
            |v| v.errors,
        ),
        (
            "squall_sensor_connected",
            "gauge",
            "1 when a sensor is connected to its source.",
            |v| u64::from(v.connected),
        ),
    ];
    for (name, kind, help, get) in series {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for s in sensors {
            let view = s.status.view();
            out.push_str(&format!(
                "{name}{{sensor=\"{}\"}} {}\n",
                crate::metrics::escape(&s.declaration.reference()),
                get(&view)
            ));
        }
    }
    out
}
