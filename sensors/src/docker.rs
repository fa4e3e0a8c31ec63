//! The Docker sensor: streams the daemon's `GET /events` (through bollard) and turns each event
//! into a trigger instance: `docker.container_event` for containers, `docker.event` for every
//! other object type (image, network, volume, daemon, plugin, service, node, secret, config,
//! builder).
//!
//! Settings (the pack's sensor declaration merged with `configs/docker.yaml`):
//! - `host`: `unix:///var/run/docker.sock` (default; a bare `/path` works too) or
//!   `tcp://HOST:PORT` (plain HTTP, as `DOCKER_HOST` spells it). TLS and SSH are not offered.
//! - `filters`: Docker's event filters as a map of lists (`{type: [container], label: [app]}`);
//!   a single string stands for a one-element list.
//!
//! Delivery: each event is handed to the [`Emitter`](crate::Emitter) and the checkpoint moves
//! only once the emitter says it is durable; a failed emit is retried (with backoff) rather than
//! dropped. The checkpoint holds the newest emitted `timeNano` plus the keys of the events
//! Docker could replay, so after a restart or a reconnect the sensor asks Docker for everything
//! `since` then (Docker takes whole seconds) and skips what it already emitted: no duplicates at
//! the seam, nothing lost while squall or the connection was down, within Docker's own limit:
//! the daemon replays only the last 256 events it keeps in memory, and none from before its own
//! restart. On its very first start the sensor begins at the daemon's clock, not at the start
//! of the daemon's buffer, as `docker events` does. One seam is at-least-once: shutdown does
//! not wait for an emit in flight, so that event may be stored and still be emitted again.
//!
//! This file must never block the runtime or read the Docker socket outside the sensor's task;
//! [`to_sensor_event`] is pure so it can be tested and benchmarked on its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bollard::query_parameters::EventsOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{
    backoff_sleep, stopped, Sensor, SensorContext, SensorEvent, SensorKind, TriggerTypeInfo,
};

// Re-exported so the engine (its benchmarks, its tests) can build Docker events without a
// bollard dependency of its own.
pub use bollard::models::{EventActor, EventMessage, EventMessageScopeEnum, EventMessageTypeEnum};

/// Trigger type of container events.
pub const CONTAINER_EVENT: &str = "docker.container_event";
/// Trigger type of every other Docker event.
pub const OTHER_EVENT: &str = "docker.event";

/// Where the sensor connects when `host` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// Seconds bollard waits for the daemon's response headers. Docker flushes the headers of
/// `/events` at once, so this bounds connecting, not how long the stream may stay quiet.
const REQUEST_TIMEOUT_SECS: u64 = 30;
const RECONNECT_BASE: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// A connection that lived this long was healthy: the next failure starts backing off afresh.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(30);
const EMIT_RETRY_BASE: Duration = Duration::from_millis(100);
const EMIT_RETRY_MAX: Duration = Duration::from_secs(5);

/// The Docker sensor kind, for [`crate::builtin_sensors`].
pub fn kind() -> SensorKind {
    SensorKind {
        name: "docker",
        description:
            "Streams the Docker daemon's events (GET /events) and resumes where it left off.",
        trigger_types,
        build,
    }
}

/// The trigger types the Docker sensor emits, with their payload schemas.
pub fn trigger_types() -> Vec<TriggerTypeInfo> {
    let string = |d: &str| json!({"type": "string", "description": d});
    let integer = |d: &str| json!({"type": "integer", "description": d});
    let strings = |d: &str| json!({"type": "object", "additionalProperties": {"type": "string"}, "description": d});
    vec![
        TriggerTypeInfo {
            reference: CONTAINER_EVENT,
            description: "Something happened to a container: create, start, die, kill, oom, \
                          health_status, exec_start, destroy...",
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "action": string("Docker's action, without what follows ':' (`health_status: healthy` is action `health_status`)."),
                    "id": string("The container's id."),
                    "name": string("The container's name."),
                    "image": string("The image the container runs."),
                    "labels": strings("The container's labels."),
                    "exit_code": integer("Exit code, on `die` and `exec_die` (absent otherwise)."),
                    "signal": integer("Signal sent, on `kill` (absent otherwise)."),
                    "health_status": string("`healthy`, `unhealthy` or `starting`, on `health_status` (absent otherwise)."),
                    "command": string("The command, on `exec_create` and `exec_start` (absent otherwise)."),
                    "attributes": strings("Every attribute Docker sent, labels included, as strings (exitCode, execDuration, signal...)."),
                    "time": integer("When it happened, Unix seconds."),
                    "time_nano": integer("When it happened, Unix nanoseconds."),
                },
                "required": ["action", "id", "labels", "attributes", "time", "time_nano"],
            }),
        },
        TriggerTypeInfo {
            reference: OTHER_EVENT,
            description: "Something happened to a Docker object other than a container: image, \
                          network, volume, daemon, plugin, service, node, secret, config, builder.",
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "type": string("The object type: image, network, volume, daemon, plugin, service, node, secret, config, builder."),
                    "action": string("Docker's action, e.g. pull, connect, mount, reload."),
                    "actor_id": string("The object's id (an image's reference, a network's id...)."),
                    "attributes": strings("Every attribute Docker sent, as strings."),
                    "scope": string("`local` for engine events, `swarm` for cluster events."),
                    "time": integer("When it happened, Unix seconds."),
                    "time_nano": integer("When it happened, Unix nanoseconds."),
                },
                "required": ["type", "action", "actor_id", "attributes", "time", "time_nano"],
            }),
        },
    ]
}

/// Turns one Docker event into the trigger instance squall stores. Pure: no I/O, no clock.
/// Returns `None` for what is not a Docker event: no type, no action, or no time at all.
pub fn to_sensor_event(msg: &EventMessage) -> Option<SensorEvent> {
    let typ = msg.typ.filter(|t| *t != EventMessageTypeEnum::EMPTY)?;
    let raw_action = msg.action.as_deref().filter(|a| !a.is_empty())?;
    let (time, time_nano) = event_times(msg)?;
    let occurred_at = DateTime::<Utc>::from_timestamp(
        time_nano.div_euclid(NANOS_PER_SECOND),
        // rem_euclid of a positive modulus fits in u32 and is below one second.
        u32::try_from(time_nano.rem_euclid(NANOS_PER_SECOND)).unwrap_or(0),
    )?;
    let actor = msg.actor.as_ref();
    let actor_id = actor.and_then(|a| a.id.as_deref()).unwrap_or("");
    let empty = HashMap::new();
    let attrs = actor.and_then(|a| a.attributes.as_ref()).unwrap_or(&empty);
    // Sorted, so payloads (and what rules and operators see) do not depend on hash order.
    let attributes: Map<String, Value> = attrs
        .iter()
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();

    if typ != EventMessageTypeEnum::CONTAINER {
        let scope = msg.scope.as_ref().map(|s| s.as_ref()).unwrap_or("");
        return Some(SensorEvent {
            trigger: OTHER_EVENT.to_string(),
            payload: json!({
                "type": typ.as_ref(),
                "action": raw_action,
                "actor_id": actor_id,
                "attributes": attributes,
                "scope": scope,
                "time": time,
                "time_nano": time_nano,
            }),
            occurred_at,
        });
    }

    let (action, detail) = split_action(raw_action);
    let labels: Map<String, Value> = attributes
        .iter()
        .filter(|(k, _)| !is_docker_attribute(action, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut payload = Map::new();
    payload.insert("action".into(), Value::from(action));
    payload.insert("id".into(), Value::from(actor_id));
    for key in ["name", "image"] {
        if let Some(v) = attrs.get(key) {
            payload.insert(key.into(), Value::from(v.as_str()));
        }
    }
    payload.insert("labels".into(), Value::Object(labels));
    if let Some(code) = attrs
        .get("exitCode")
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        payload.insert("exit_code".into(), Value::from(code));
    }
    if let Some(signal) = attrs
        .get("signal")
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        payload.insert("signal".into(), Value::from(signal));
    }
    match (action, detail) {
        ("health_status", Some(status)) => {
            payload.insert("health_status".into(), Value::from(status));
        }
        (a, Some(command)) if a.starts_with("exec_") => {
            payload.insert("command".into(), Value::from(command));
        }
        _ => {}
    }
    payload.insert("attributes".into(), Value::Object(attributes));
    payload.insert("time".into(), Value::from(time));
    payload.insert("time_nano".into(), Value::from(time_nano));
    Some(SensorEvent {
        trigger: CONTAINER_EVENT.to_string(),
        payload: Value::Object(payload),
        occurred_at,
    })
}

/// `health_status: healthy` -> (`health_status`, `healthy`); `exec_start: sh -c x` ->
/// (`exec_start`, `sh -c x`); `die` -> (`die`, none).
fn split_action(raw: &str) -> (&str, Option<&str>) {
    match raw.split_once(':') {
        Some((name, detail)) => (name.trim(), Some(detail.trim())),
        None => (raw, None),
    }
}

/// Whether `key` is one Docker adds to a container event itself rather than one of the
/// container's labels (Docker puts both, flat, in `Actor.Attributes`; see moby's
/// `daemon/events.go` and its callers). Keys that only some actions add are recognised only on
/// those actions, so a label that happens to share the name survives on the others.
fn is_docker_attribute(action: &str, key: &str) -> bool {
    match key {
        "name" | "image" => true,
        "exitCode" => matches!(action, "die" | "exec_die"),
        "execDuration" => action == "die",
        "signal" => action == "kill",
        "execID" => action.starts_with("exec_"),
        "oldName" => action == "rename",
        "height" | "width" => action == "resize",
        "path" => matches!(action, "archive-path" | "extract-to-dir"),
        "comment" | "imageID" | "imageRef" => action == "commit",
        _ => false,
    }
}

/// (Unix seconds, Unix nanoseconds) of an event; either is derived from the other when the
/// daemon sent only one (API versions before 1.22 had no `timeNano`).
fn event_times(msg: &EventMessage) -> Option<(i64, i64)> {
    match (msg.time, msg.time_nano) {
        (Some(t), Some(n)) => Some((t, n)),
        (None, Some(n)) => Some((n.div_euclid(NANOS_PER_SECOND), n)),
        (Some(t), None) => Some((t, t.checked_mul(NANOS_PER_SECOND)?)),
        (None, None) => None,
    }
}

/// What identifies an event within its nanosecond, for recognising Docker's replay at the seam.
/// It starts with the nanosecond so a saved key can be put back in order.
fn event_key(msg: &EventMessage) -> Option<(i64, String)> {
    let (_, nano) = event_times(msg)?;
    let typ = msg.typ.as_ref().map(|t| t.as_ref()).unwrap_or("");
    let id = msg
        .actor
        .as_ref()
        .and_then(|a| a.id.as_deref())
        .unwrap_or("");
    let (action, _) = split_action(msg.action.as_deref().unwrap_or(""));
    Some((nano, format!("{nano} {typ} {id} {action}")))
}

// ---- settings ----

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq)]
enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, spoken to in plain HTTP.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The daemon at `host` as the other sensors that read Docker name it (empty: `DOCKER_HOST`,
/// else the default socket), refused when its socket does not exist, as the Docker sensor's
/// `host` is: such a sensor is then listed as not started, rather than failing every interval.
pub(crate) fn checked_host(host: &str) -> Result<String, String> {
    let host = if host.trim().is_empty() {
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_string())
    } else {
        host.to_string()
    };
    if let Endpoint::Unix(path) = parse_host(&host)? {
        if !path.exists() {
            return Err(format!(
                "the Docker socket {} does not exist (is Docker installed and running here?)",
                path.display()
            ));
        }
    }
    Ok(host)
}

/// A client for the daemon at `host` (see [`checked_host`]).
pub(crate) fn connect_to(host: &str) -> Result<Docker, String> {
    let endpoint = parse_host(&checked_host(host)?)?;
    match &endpoint {
        Endpoint::Unix(path) => Docker::connect_with_unix(
            &path.to_string_lossy(),
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        ),
        Endpoint::Tcp(addr) => {
            Docker::connect_with_http(addr, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
        }
    }
    .map_err(|e| format!("cannot connect to Docker at {endpoint}: {e}"))
}

fn parse_host(host: &str) -> Result<Endpoint, String> {
    let host = host.trim();
    let unix = host
        .strip_prefix("unix://")
        .or_else(|| host.starts_with('/').then_some(host));
    if let Some(path) = unix {
        if path.is_empty() {
            return Err(
                "setting `host`: 'unix://' needs a socket path, e.g. unix:///var/run/docker.sock"
                    .into(),
            );
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    let tcp = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"));
    if let Some(addr) = tcp {
        let addr = addr.trim_end_matches('/');
        let valid = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !valid || addr.contains('/') {
            return Err(format!(
                "setting `host`: '{host}' is not HOST:PORT after tcp://, e.g. tcp://127.0.0.1:2375"
            ));
        }
        return Ok(Endpoint::Tcp(addr.to_string()));
    }
    Err(format!(
        "setting `host`: '{host}' is not a Docker host the docker sensor can reach; \
         use unix:///path/to/docker.sock or tcp://HOST:PORT (TLS and SSH are not supported)"
    ))
}

/// Docker's event filter names (`docker events --filter`); the daemon rejects any other.
const FILTER_NAMES: &[&str] = &[
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
    "volume",
];
/// Docker's object types, the values of the `type` filter.
const OBJECT_TYPES: &[&str] = &[
    "builder",
    "config",
    "container",
    "daemon",
    "image",
    "network",
    "node",
    "plugin",
    "secret",
    "service",
    "volume",
];

fn parse_filters(value: &Value) -> Result<HashMap<String, Vec<String>>, String> {
    let map = match value {
        Value::Null => return Ok(HashMap::new()),
        Value::Object(m) => m,
        other => {
            return Err(format!(
                "setting `filters`: expected a map of filter name to list of values, got {other}"
            ))
        }
    };
    let mut filters = HashMap::new();
    for (name, values) in map {
        if !FILTER_NAMES.contains(&name.as_str()) {
            return Err(format!(
                "setting `filters.{name}`: Docker has no such event filter; it has: {}",
                FILTER_NAMES.join(", ")
            ));
        }
        let list: Vec<String> = match values {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "setting `filters.{name}[{i}]`: expected a string, got {other}"
                    )),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(format!(
                    "setting `filters.{name}`: expected a string or a list of strings, got {other}"
                ))
            }
        };
        if name == "type" {
            if let Some(bad) = list.iter().find(|t| !OBJECT_TYPES.contains(&t.as_str())) {
                return Err(format!(
                    "setting `filters.type`: '{bad}' is not a Docker object type; use one of: {}",
                    OBJECT_TYPES.join(", ")
                ));
            }
        }
        filters.insert(name.clone(), list);
    }
    Ok(filters)
}

/// Builds a Docker sensor from its settings; the error names the setting that is wrong.
pub fn build(settings: &Map<String, Value>) -> Result<Box<dyn Sensor>, String> {
    Ok(Box::new(DockerSensor::from_settings(settings)?))
}

/// A configured Docker sensor.
#[derive(Debug, Clone)]
pub struct DockerSensor {
    endpoint: Endpoint,
    filters: HashMap<String, Vec<String>>,
}

impl DockerSensor {
    /// Reads and checks the settings. A unix socket that does not exist is an error: the engine
    /// starts the Docker sensor only where Docker runs.
    pub fn from_settings(settings: &Map<String, Value>) -> Result<DockerSensor, String> {
        let mut endpoint = None;
        let mut filters = HashMap::new();
        for (key, value) in settings {
            match key.as_str() {
                "host" => match value {
                    Value::Null => {}
                    Value::String(s) => endpoint = Some(parse_host(s)?),
                    other => return Err(format!("setting `host`: expected a string, got {other}")),
                },
                "filters" => filters = parse_filters(value)?,
                other => {
                    return Err(format!(
                    "unknown setting `{other}` for the docker sensor (it has `host` and `filters`)"
                ))
                }
            }
        }
        let endpoint = match endpoint {
            Some(e) => e,
            None => parse_host(DEFAULT_HOST)?,
        };
        if let Endpoint::Unix(path) = &endpoint {
            if !path.exists() {
                return Err(format!(
                    "setting `host`: the Docker socket {} does not exist (is Docker installed and running here?)",
                    path.display()
                ));
            }
        }
        Ok(DockerSensor { endpoint, filters })
    }

    fn connect(&self) -> Result<Docker, bollard::errors::Error> {
        match &self.endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            ),
            Endpoint::Tcp(addr) => {
                Docker::connect_with_http(addr, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
        }
    }
}

impl Sensor for DockerSensor {
    fn run(self: Box<Self>, ctx: SensorContext) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { self.run_until_shutdown(ctx).await })
    }
}

// ---- position (the checkpoint) ----

/// The last second of keys kept behind the newest event: Docker stamps an event before it
/// takes its lock, so events racing each other can reach the stream a little out of order.
const REORDER_MARGIN_NANOS: i64 = NANOS_PER_SECOND;
/// Keys kept at most; Docker replays no more than the 256 events it buffers anyway.
const SEEN_CAP: usize = 256;
const POSITION_VERSION: u32 = 1;

/// How far the sensor has got in the daemon's event stream.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    /// Events stamped before this (Unix ns) are done: emitted, or older than the first start.
    since_nano: i64,
    /// The newest event emitted (or the first start).
    last_nano: i64,
    /// Keys of the events emitted at or after `since_nano`, oldest first.
    seen: VecDeque<(i64, String)>,
}

/// The checkpoint as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPosition {
    v: u32,
    time_nano: i64,
    since_nano: i64,
    seen: Vec<String>,
}

impl Position {
    fn starting_at(nano: i64) -> Position {
        Position {
            since_nano: nano,
            last_nano: nano,
            seen: VecDeque::new(),
        }
    }

    /// Docker's `since`: whole Unix seconds, rounded down so nothing at `since_nano` is missed.
    fn since_seconds(&self) -> i64 {
        self.since_nano.div_euclid(NANOS_PER_SECOND)
    }

    fn is_new(&self, nano: i64, key: &str) -> bool {
        nano >= self.since_nano && !self.seen.iter().any(|(_, k)| k == key)
    }

    fn record(&mut self, nano: i64, key: String) {
        self.last_nano = self.last_nano.max(nano);
        self.seen.push_back((nano, key));
        // Docker replays from a whole second, so keep every key from the second that holds
        // (newest - margin) onwards; older events are behind the next `since` anyway.
        let floor =
            (self.last_nano - REORDER_MARGIN_NANOS).div_euclid(NANOS_PER_SECOND) * NANOS_PER_SECOND;
        let mut since = self.since_nano.max(floor);
        while self.seen.len() > SEEN_CAP {
            if let Some((n, _)) = self.seen.pop_front() {
                since = since.max(n.saturating_add(1));
            }
        }
        self.since_nano = since;
        self.seen.retain(|(n, _)| *n >= since);
    }

    fn encode(&self) -> String {
        let saved = SavedPosition {
            v: POSITION_VERSION,
            time_nano: self.last_nano,
            since_nano: self.since_nano,
            seen: self.seen.iter().map(|(_, k)| k.clone()).collect(),
        };
        // Serializing plain integers and strings cannot fail; an empty checkpoint would only
        // mean starting at the daemon's clock again.
        serde_json::to_string(&saved).unwrap_or_default()
    }

    fn decode(text: &str) -> Result<Position, String> {
        let saved: SavedPosition =
            serde_json::from_str(text).map_err(|e| format!("unreadable checkpoint: {e}"))?;
        if saved.v != POSITION_VERSION {
            return Err(format!(
                "checkpoint version {} is not {POSITION_VERSION}",
                saved.v
            ));
        }
        let mut seen = VecDeque::new();
        for key in saved.seen {
            let nano = key
                .split_once(' ')
                .and_then(|(n, _)| n.parse::<i64>().ok())
                .ok_or_else(|| format!("checkpoint key '{key}' does not start with a timeNano"))?;
            seen.push_back((nano, key));
        }
        Ok(Position {
            since_nano: saved.since_nano,
            last_nano: saved.time_nano,
            seen,
        })
    }
}

// ---- running ----

/// How a connection to the daemon ended.
enum SessionEnd {
    Shutdown,
    Failed {
        reason: String,
        /// The daemon sent an event bollard could not decode: it will send it again on replay.
        undecodable: bool,
        /// At least one new event was emitted on this connection.
        progressed: bool,
    },
}

impl DockerSensor {
    async fn run_until_shutdown(self, mut ctx: SensorContext) {
        let mut position = match ctx.checkpoint.load() {
            None => None,
            Some(text) => match Position::decode(&text) {
                Ok(p) => Some(p),
                Err(e) => {
                    let message =
                        format!("docker sensor: {e}; starting from the daemon's current time");
                    tracing::warn!("{message}");
                    ctx.status.error(message);
                    None
                }
            },
        };
        let mut attempt: u32 = 0;
        let mut undecodable_streak: u32 = 0;
        loop {
            if *ctx.shutdown.borrow() {
                break;
            }
            // The same undecodable event twice means replaying it will never get past it: only
            // starting again at the daemon's clock does (and loses what is in between).
            let skip_to_now = undecodable_streak >= 2;
            if skip_to_now {
                let message = "docker sensor: the daemon keeps sending an event squall cannot \
                               decode; skipping to the daemon's current time"
                    .to_string();
                tracing::error!("{message}");
                ctx.status.error(message);
                undecodable_streak = 0;
            }
            let connected_at = Instant::now();
            let end = self.session(&mut ctx, &mut position, skip_to_now).await;
            ctx.status.set_connected(false);
            match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Failed {
                    reason,
                    undecodable,
                    progressed,
                } => {
                    undecodable_streak = if undecodable {
                        undecodable_streak + 1
                    } else {
                        0
                    };
                    if progressed || connected_at.elapsed() >= HEALTHY_CONNECTION {
                        attempt = 0;
                    }
                    let message = format!("docker sensor ({}): {reason}", self.endpoint);
                    tracing::warn!(attempt, "{message}; reconnecting");
                    ctx.status.error(message);
                }
            }
            if !backoff_sleep(attempt, RECONNECT_BASE, RECONNECT_MAX, &mut ctx.shutdown).await {
                break;
            }
            attempt = attempt.saturating_add(1);
            ctx.status.reconnect();
        }
        ctx.status.set_connected(false);
        tracing::info!(host = %self.endpoint, "docker sensor stopped");
    }

    /// One connection: connect, settle where to start, stream until the stream fails or ends.
    async fn session(
        &self,
        ctx: &mut SensorContext,
        position: &mut Option<Position>,
        skip_to_now: bool,
    ) -> SessionEnd {
        let failed = |reason: String| SessionEnd::Failed {
            reason,
            undecodable: false,
            progressed: false,
        };
        let docker = match self.connect() {
            Ok(d) => d,
            Err(e) => return failed(format!("cannot connect: {e}")),
        };
        let docker = tokio::select! {
            r = docker.negotiate_version() => match r {
                Ok(d) => d,
                Err(e) => return failed(format!("cannot reach the daemon: {e}")),
            },
            _ = stopped(&mut ctx.shutdown) => return SessionEnd::Shutdown,
        };
        let mut pos = match position.take() {
            Some(p) if !skip_to_now => p,
            _ => {
                let now = tokio::select! {
                    n = daemon_now(&docker) => n,
                    _ = stopped(&mut ctx.shutdown) => return SessionEnd::Shutdown,
                };
                let p = Position::starting_at(now);
                save_position(ctx, &p);
                p
            }
        };
        let options = EventsOptions {
            since: Some(pos.since_seconds().to_string()),
            until: None,
            filters: (!self.filters.is_empty()).then(|| self.filters.clone()),
        };
        tracing::info!(host = %self.endpoint, since = pos.since_seconds(), "docker sensor streaming events");
        ctx.status.set_connected(true);
        let mut stream = docker.events(Some(options));
        let mut progressed = false;
        let end = loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = stopped(&mut ctx.shutdown) => break SessionEnd::Shutdown,
            };
            let msg = match item {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    break SessionEnd::Failed {
                        undecodable: matches!(e, bollard::errors::Error::JsonDataError { .. }),
                        reason: format!("event stream failed: {e}"),
                        progressed,
                    }
                }
                None => {
                    break SessionEnd::Failed {
                        reason: "the daemon closed the event stream".into(),
                        undecodable: false,
                        progressed,
                    }
                }
            };
            match self.handle(ctx, &mut pos, &msg).await {
                Handled::Emitted => progressed = true,
                Handled::Skipped => {}
                Handled::Shutdown => break SessionEnd::Shutdown,
            }
        };
        *position = Some(pos);
        end
    }

    /// Emits one event (retrying until the emitter takes it) unless it was emitted before,
    /// then moves the checkpoint.
    async fn handle(
        &self,
        ctx: &mut SensorContext,
        pos: &mut Position,
        msg: &EventMessage,
    ) -> Handled {
        let Some(event) = to_sensor_event(msg) else {
            let message = format!("docker sensor: ignoring an event that is not one: {msg:?}");
            tracing::warn!("{message}");
            ctx.status.error(message);
            return Handled::Skipped;
        };
        // to_sensor_event accepted it, so it has a time and a key.
        let Some((nano, key)) = event_key(msg) else {
            return Handled::Skipped;
        };
        if !pos.is_new(nano, &key) {
            tracing::debug!(%key, "docker sensor: skipping an event emitted before");
            return Handled::Skipped;
        }
        let mut failures: u32 = 0;
        loop {
            let result = tokio::select! {
                r = ctx.emitter.emit(event.clone()) => r,
                _ = stopped(&mut ctx.shutdown) => return Handled::Shutdown,
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    let message =
                        format!("docker sensor: could not store event {key}: {e}; retrying");
                    tracing::warn!("{message}");
                    ctx.status.error(message);
                    if !backoff_sleep(failures, EMIT_RETRY_BASE, EMIT_RETRY_MAX, &mut ctx.shutdown)
                        .await
                    {
                        return Handled::Shutdown;
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
        ctx.status.event();
        pos.record(nano, key);
        save_position(ctx, pos);
        Handled::Emitted
    }
}

enum Handled {
    Emitted,
    Skipped,
    Shutdown,
}

/// A checkpoint that cannot be saved costs at most duplicates after a restart (the event is
/// already stored), so it is reported, not retried.
fn save_position(ctx: &SensorContext, pos: &Position) {
    if let Err(e) = ctx.checkpoint.save(&pos.encode()) {
        let message = format!("docker sensor: cannot save checkpoint: {e}");
        tracing::warn!("{message}");
        ctx.status.error(message);
    }
}

/// The daemon's clock (from `GET /info`), so a first start on a remote daemon whose clock
/// differs from ours neither skips nor replays events; our clock if the daemon does not say.
async fn daemon_now(docker: &Docker) -> i64 {
    let local = || Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    match docker.info().await {
        Ok(info) => info
            .system_time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or_else(local),
        Err(e) => {
            tracing::debug!("docker sensor: GET /info failed ({e}); using the local clock");
            local()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The lines of fixtures/docker-events.jsonl (Docker Engine API EventMessage samples).
    const CREATE: &str = r#"{"Type":"container","Action":"create","Actor":{"ID":"9f3c1e2a7b4d","Attributes":{"image":"registry.local/web:1.4","name":"web-1","com.example.app":"100008580"}},"scope":"local","time":1764062400,"timeNano":1764062400100000000}"#;
    const START: &str = r#"{"Type":"container","Action":"start","Actor":{"ID":"9f3c1e2a7b4d","Attributes":{"image":"registry.local/web:1.4","name":"web-1","com.example.app":"100008580"}},"scope":"local","time":1764062400,"timeNano":1764062400350000000}"#;
    const UNHEALTHY: &str = r#"{"Type":"container","Action":"health_status: unhealthy","Actor":{"ID":"9f3c1e2a7b4d","Attributes":{"image":"registry.local/web:1.4","name":"web-1","com.example.app":"100008580"}},"scope":"local","time":1764062460,"timeNano":1764062460000000000}"#;
    const OOM: &str = r#"{"Type":"container","Action":"oom","Actor":{"ID":"9f3c1e2a7b4d","Attributes":{"image":"registry.local/web:1.4","name":"web-1","com.example.app":"100008580"}},"scope":"local","time":1764062470,"timeNano":1764062470000000000}"#;
    const DIE: &str = r#"{"Type":"container","Action":"die","Actor":{"ID":"9f3c1e2a7b4d","Attributes":{"exitCode":"137","execDuration":"70","image":"registry.local/web:1.4","name":"web-1","com.example.app":"100008580"}},"scope":"local","time":1764062470,"timeNano":1764062470200000000}"#;
    const EXEC_START: &str = r#"{"Type":"container","Action":"exec_start: /bin/sh -c curl -f localhost/health","Actor":{"ID":"77ab01","Attributes":{"execID":"e1","image":"busybox","name":"probe"}},"scope":"local","time":1764062480,"timeNano":1764062480000000000}"#;
    const NETWORK_CONNECT: &str = r#"{"Type":"network","Action":"connect","Actor":{"ID":"net01","Attributes":{"container":"9f3c1e2a7b4d","name":"bridge","type":"bridge"}},"scope":"local","time":1764062400,"timeNano":1764062400200000000}"#;
    const IMAGE_PULL: &str = r#"{"Type":"image","Action":"pull","Actor":{"ID":"registry.local/web:1.5","Attributes":{"name":"registry.local/web"}},"scope":"local","time":1764062500,"timeNano":1764062500000000000}"#;

    const FIXTURE: [&str; 8] = [
        CREATE,
        START,
        UNHEALTHY,
        OOM,
        DIE,
        EXEC_START,
        NETWORK_CONNECT,
        IMAGE_PULL,
    ];

    fn parse(line: &str) -> EventMessage {
        serde_json::from_str(line).expect("fixture line is an EventMessage")
    }

    fn convert(line: &str) -> SensorEvent {
        to_sensor_event(&parse(line)).expect("fixture line converts")
    }

    fn web_attributes() -> Value {
        json!({"com.example.app": "100008580", "image": "registry.local/web:1.4", "name": "web-1"})
    }

    #[test]
    fn every_fixture_line_converts_with_its_time() {
        for line in FIXTURE {
            let msg = parse(line);
            let event = to_sensor_event(&msg).expect("converts");
            let nano = msg.time_nano.expect("fixture has timeNano");
            assert_eq!(event.payload["time_nano"], json!(nano), "{line}");
            assert_eq!(
                event.payload["time"],
                json!(msg.time.expect("time")),
                "{line}"
            );
            assert_eq!(
                event.occurred_at.timestamp_nanos_opt(),
                Some(nano),
                "{line}"
            );
        }
    }

    #[test]
    fn create_and_start_are_container_events_with_labels() {
        let event = convert(CREATE);
        assert_eq!(event.trigger, CONTAINER_EVENT);
        assert_eq!(
            event.payload,
            json!({
                "action": "create",
                "id": "9f3c1e2a7b4d",
                "name": "web-1",
                "image": "registry.local/web:1.4",
                "labels": {"com.example.app": "100008580"},
                "attributes": web_attributes(),
                "time": 1764062400,
                "time_nano": 1764062400100000000_i64,
            })
        );
        let start = convert(START);
        assert_eq!(start.payload["action"], "start");
        assert_eq!(
            start.payload["labels"],
            json!({"com.example.app": "100008580"})
        );
        assert_eq!(
            start.occurred_at.to_rfc3339(),
            "2025-11-25T09:20:00.350+00:00"
        );
    }

    #[test]
    fn health_status_is_split_from_its_value() {
        let event = convert(UNHEALTHY);
        assert_eq!(event.trigger, CONTAINER_EVENT);
        assert_eq!(event.payload["action"], "health_status");
        assert_eq!(event.payload["health_status"], "unhealthy");
        assert_eq!(
            event.payload["labels"],
            json!({"com.example.app": "100008580"})
        );
        assert!(event.payload.get("exit_code").is_none());
    }

    #[test]
    fn oom_has_no_exit_code() {
        let event = convert(OOM);
        assert_eq!(event.payload["action"], "oom");
        assert!(event.payload.get("exit_code").is_none());
        assert!(event.payload.get("signal").is_none());
        assert!(event.payload.get("health_status").is_none());
    }

    #[test]
    fn die_carries_exit_code_as_integer_and_keeps_raw_attributes() {
        let event = convert(DIE);
        assert_eq!(
            event.payload,
            json!({
                "action": "die",
                "id": "9f3c1e2a7b4d",
                "name": "web-1",
                "image": "registry.local/web:1.4",
                "labels": {"com.example.app": "100008580"},
                "exit_code": 137,
                "attributes": {
                    "com.example.app": "100008580",
                    "execDuration": "70",
                    "exitCode": "137",
                    "image": "registry.local/web:1.4",
                    "name": "web-1",
                },
                "time": 1764062470,
                "time_nano": 1764062470200000000_i64,
            })
        );
    }

    #[test]
    fn exec_start_keeps_the_action_before_the_colon() {
        let event = convert(EXEC_START);
        assert_eq!(event.payload["action"], "exec_start");
        assert_eq!(
            event.payload["command"],
            "/bin/sh -c curl -f localhost/health"
        );
        assert_eq!(event.payload["id"], "77ab01");
        assert_eq!(event.payload["name"], "probe");
        assert_eq!(event.payload["image"], "busybox");
        // execID is Docker's, not a label.
        assert_eq!(event.payload["labels"], json!({}));
        assert_eq!(event.payload["attributes"]["execID"], "e1");
    }

    #[test]
    fn network_and_image_events_are_generic() {
        let net = convert(NETWORK_CONNECT);
        assert_eq!(net.trigger, OTHER_EVENT);
        assert_eq!(
            net.payload,
            json!({
                "type": "network",
                "action": "connect",
                "actor_id": "net01",
                "attributes": {"container": "9f3c1e2a7b4d", "name": "bridge", "type": "bridge"},
                "scope": "local",
                "time": 1764062400,
                "time_nano": 1764062400200000000_i64,
            })
        );
        let image = convert(IMAGE_PULL);
        assert_eq!(image.trigger, OTHER_EVENT);
        assert_eq!(image.payload["type"], "image");
        assert_eq!(image.payload["action"], "pull");
        assert_eq!(image.payload["actor_id"], "registry.local/web:1.5");
        assert_eq!(
            image.payload["attributes"],
            json!({"name": "registry.local/web"})
        );
    }

    #[test]
    fn kill_carries_the_signal_as_integer() {
        let event = convert(
            r#"{"Type":"container","Action":"kill","Actor":{"ID":"c1","Attributes":{"image":"busybox","name":"k","signal":"9","app":"x"}},"scope":"local","time":1,"timeNano":1000000001}"#,
        );
        assert_eq!(event.payload["signal"], 9);
        assert_eq!(event.payload["labels"], json!({"app": "x"}));
        assert!(event.payload.get("exit_code").is_none());
    }

    #[test]
    fn a_label_named_like_an_action_specific_attribute_survives_elsewhere() {
        let event = convert(
            r#"{"Type":"container","Action":"start","Actor":{"ID":"c1","Attributes":{"image":"i","name":"n","path":"/srv"}},"time":1,"timeNano":1000000000}"#,
        );
        assert_eq!(event.payload["labels"], json!({"path": "/srv"}));
    }

    #[test]
    fn missing_time_nano_is_derived_from_time_and_malformed_events_are_refused() {
        let event = convert(r#"{"Type":"volume","Action":"mount","Actor":{"ID":"v1"},"time":5}"#);
        assert_eq!(event.payload["time_nano"], json!(5_000_000_000_i64));
        assert_eq!(event.payload["attributes"], json!({}));
        assert_eq!(event.payload["scope"], "");
        assert!(to_sensor_event(&parse(r#"{"Action":"start","time":1}"#)).is_none());
        assert!(to_sensor_event(&parse(r#"{"Type":"container","time":1}"#)).is_none());
        assert!(to_sensor_event(&parse(r#"{"Type":"container","Action":"start"}"#)).is_none());
    }

    #[test]
    fn trigger_types_describe_both_triggers() {
        let types = trigger_types();
        let refs: Vec<_> = types.iter().map(|t| t.reference).collect();
        assert_eq!(refs, vec![CONTAINER_EVENT, OTHER_EVENT]);
        let container = &types[0].payload_schema["properties"];
        for key in [
            "action",
            "id",
            "name",
            "image",
            "labels",
            "exit_code",
            "signal",
            "health_status",
            "attributes",
            "time",
            "time_nano",
        ] {
            assert!(container.get(key).is_some(), "{key}");
        }
        // Every key a converted fixture event carries is in its trigger type's schema.
        for line in FIXTURE {
            let event = convert(line);
            let schema = &types
                .iter()
                .find(|t| t.reference == event.trigger)
                .expect("known trigger")
                .payload_schema["properties"];
            for key in event.payload.as_object().expect("object").keys() {
                assert!(schema.get(key).is_some(), "{} lacks {key}", event.trigger);
            }
        }
    }

    fn settings(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn settings_name_what_is_wrong() {
        let err =
            DockerSensor::from_settings(&settings(json!({"hots": "x"}))).expect_err("rejected");
        assert!(err.contains("`hots`"), "{err}");
        let err = DockerSensor::from_settings(&settings(
            json!({"host": "unix:///nonexistent/squall/docker.sock"}),
        ))
        .expect_err("rejected");
        assert!(
            err.contains("/nonexistent/squall/docker.sock") && err.contains("does not exist"),
            "{err}"
        );
        let err = DockerSensor::from_settings(&settings(json!({"host": "ssh://me@box"})))
            .expect_err("rejected");
        assert!(err.contains("`host`"), "{err}");
        let err = DockerSensor::from_settings(&settings(json!({"host": "tcp://127.0.0.1"})))
            .expect_err("rejected");
        assert!(err.contains("HOST:PORT"), "{err}");
        let err = DockerSensor::from_settings(&settings(json!({"filters": {"lable": ["a"]}})))
            .expect_err("rejected");
        assert!(err.contains("`filters.lable`"), "{err}");
        let err =
            DockerSensor::from_settings(&settings(json!({"filters": {"type": ["containers"]}})))
                .expect_err("rejected");
        assert!(
            err.contains("`filters.type`") && err.contains("containers"),
            "{err}"
        );
        let err = DockerSensor::from_settings(&settings(json!({"filters": {"label": [1]}})))
            .expect_err("rejected");
        assert!(err.contains("`filters.label[0]`"), "{err}");
    }

    #[test]
    fn tcp_hosts_and_filters_are_read() {
        let sensor = DockerSensor::from_settings(&settings(json!({
            "host": "tcp://127.0.0.1:2375",
            "filters": {"type": ["container"], "label": "squall.app"},
        })))
        .expect("valid");
        assert_eq!(sensor.endpoint, Endpoint::Tcp("127.0.0.1:2375".into()));
        assert_eq!(sensor.filters["type"], vec!["container".to_string()]);
        assert_eq!(sensor.filters["label"], vec!["squall.app".to_string()]);
        assert_eq!(
            parse_host("/var/run/docker.sock"),
            Ok(Endpoint::Unix(PathBuf::from("/var/run/docker.sock")))
        );
    }

    fn key_of(line: &str) -> (i64, String) {
        event_key(&parse(line)).expect("key")
    }

    #[test]
    fn position_skips_what_was_emitted_and_nothing_else() {
        let mut pos = Position::starting_at(1764062400000000000);
        // Everything in the fixture's container story, in stream order.
        for line in [CREATE, NETWORK_CONNECT, START] {
            let (nano, key) = key_of(line);
            assert!(pos.is_new(nano, &key));
            pos.record(nano, key);
        }
        // Docker's replay from the same second: all three were emitted.
        for line in [CREATE, NETWORK_CONNECT, START] {
            let (nano, key) = key_of(line);
            assert!(!pos.is_new(nano, &key), "{line}");
        }
        // An event stamped in the same nanosecond as START but a different action is new.
        let (nano, _) = key_of(START);
        assert!(pos.is_new(nano, &format!("{nano} container 9f3c1e2a7b4d attach")));
        // An event stamped a little before the newest one, never emitted, is new.
        assert!(pos.is_new(nano - 1, &format!("{} container other start", nano - 1)));
        // Before the first start: not ours.
        assert!(!pos.is_new(1764062399000000000, "1764062399000000000 container x start"));
    }

    #[test]
    fn position_survives_the_checkpoint_and_moves_since_forward() {
        let mut pos = Position::starting_at(1764062400000000000);
        for line in FIXTURE {
            let (nano, key) = key_of(line);
            if pos.is_new(nano, &key) {
                pos.record(nano, key);
            }
        }
        assert_eq!(pos.last_nano, 1764062500000000000);
        // Only the last second (and the margin) is kept; since is a whole second behind.
        assert_eq!(pos.since_nano, 1764062499000000000);
        assert_eq!(pos.since_seconds(), 1764062499);
        assert_eq!(pos.seen.len(), 1);
        let text = pos.encode();
        let back = Position::decode(&text).expect("decodes");
        assert_eq!(back, pos);
        let saved: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(saved["time_nano"], json!(1764062500000000000_i64));
        assert!(Position::decode("{").is_err());
        assert!(Position::decode(r#"{"v":2,"time_nano":1,"since_nano":1,"seen":[]}"#).is_err());
    }

    #[test]
    fn position_keeps_at_most_the_cap() {
        let mut pos = Position::starting_at(0);
        let base = 10 * NANOS_PER_SECOND;
        for i in 0..(SEEN_CAP as i64 + 10) {
            pos.record(base + i, format!("{} container c{i} start", base + i));
        }
        assert_eq!(pos.seen.len(), SEEN_CAP);
        assert_eq!(pos.since_nano, base + 10);
        assert!(!pos.is_new(base + 5, "anything"));
        assert!(!pos.is_new(base + 20, &format!("{} container c20 start", base + 20)));
    }

    proptest::proptest! {
        #[test]
        fn conversion_never_panics_and_keeps_every_attribute(
            typ in proptest::sample::select(OBJECT_TYPES),
            action in "[a-z_]{1,12}(: [ -~]{0,20})?",
            attrs in proptest::collection::hash_map("[a-zA-Z.]{1,10}", "[ -~]{0,10}", 0..6),
            nano in 0i64..4_000_000_000_000_000_000,
        ) {
            let msg: EventMessage = serde_json::from_value(json!({
                "Type": typ, "Action": action, "Actor": {"ID": "x", "Attributes": attrs},
                "timeNano": nano,
            })).expect("valid message");
            let event = to_sensor_event(&msg).expect("converts");
            let attributes = event.payload["attributes"].as_object().expect("object");
            proptest::prop_assert_eq!(attributes.len(), attrs.len());
            proptest::prop_assert_eq!(event.occurred_at.timestamp_nanos_opt(), Some(nano));
        }
    }
}
