//! The Marathon sensor: follows Marathon's event bus (`GET /v2/events`, server-sent events) and
//! turns each event into a trigger instance.
//!
//! Trigger types:
//! - `marathon.status_update` for `status_update_event` (a task changed state);
//! - `marathon.deployment_success` and `marathon.deployment_failed`;
//! - `marathon.instance_changed` for `instance_changed_event`;
//! - `marathon.event` for every other event type, with `event_type` and the raw `data`.
//!
//! Typed payloads keep Marathon's own camelCase fields unchanged and add snake_case copies of the
//! common ones (`appId` and `app_id`), so rules written in st2's style and rules written against
//! Marathon's documentation both match.
//!
//! Marathon keeps no history of its event bus and cannot replay it, so this sensor has no
//! checkpoint: what happens while it is disconnected is not seen. It never drops an event it has
//! received: each is handed to the emitter again, with backoff, until the engine accepts it, and
//! is abandoned only when the sensor is told to shut down. This file must never block the async
//! runtime and never talk to anything but the configured Marathon.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use crate::{
    backoff_sleep, stopped, Sensor, SensorContext, SensorEvent, SensorKind, TriggerTypeInfo,
};

/// Reference of the trigger emitted for `status_update_event`.
pub const STATUS_UPDATE: &str = "marathon.status_update";
/// Reference of the trigger emitted for `deployment_success`.
pub const DEPLOYMENT_SUCCESS: &str = "marathon.deployment_success";
/// Reference of the trigger emitted for `deployment_failed`.
pub const DEPLOYMENT_FAILED: &str = "marathon.deployment_failed";
/// Reference of the trigger emitted for `instance_changed_event`.
pub const INSTANCE_CHANGED: &str = "marathon.instance_changed";
/// Reference of the trigger emitted for every other Marathon event.
pub const OTHER_EVENT: &str = "marathon.event";

const DEFAULT_RECONNECT_MAX_SECONDS: u64 = 30;
/// First reconnect delay; doubles per failed attempt up to `reconnect_max_seconds`.
const RECONNECT_BASE: Duration = Duration::from_millis(500);
/// First delay before handing an event to a failing emitter again.
const EMIT_RETRY_BASE: Duration = Duration::from_millis(100);
/// Marathon sends no heartbeats on its event stream, so a quiet cluster and a dead connection
/// look alike at the HTTP level; TCP keepalive lets the kernel notice a vanished peer instead.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest event accepted. Deployment events carry whole group definitions and can be large,
/// but a stream that never ends a line is broken, and buffering it forever would exhaust memory.
const MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

/// Task states after which a task never runs again. Marathon's event bus documentation names
/// FINISHED, FAILED, KILLED and LOST; the others are Mesos's newer terminal states, which
/// Marathon passes through unchanged.
const TERMINAL_TASK_STATES: &[&str] = &[
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
];

const SETTINGS: &[&str] = &[
    "url",
    "event_types",
    "username",
    "password",
    "reconnect_max_seconds",
];

/// The `marathon` sensor kind, as listed by [`crate::builtin_sensors`].
pub fn kind() -> SensorKind {
    SensorKind {
        name: "marathon",
        description: "Follows Marathon's event bus (GET /v2/events) and emits task status \
                      updates, deployment results, instance changes and every other event.",
        trigger_types,
        build: |settings| {
            let sensor = MarathonSensor::from_settings(settings)?;
            Ok(Box::new(sensor))
        },
    }
}

/// The trigger types this sensor emits, with their payload schemas.
pub fn trigger_types() -> Vec<TriggerTypeInfo> {
    let string = json!({"type": "string"});
    vec![
        TriggerTypeInfo {
            reference: STATUS_UPDATE,
            description: "A Marathon task changed state (status_update_event). Marathon's \
                          camelCase fields are kept; snake_case copies are added.",
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "event_type": string,
                    "eventType": string,
                    "app_id": string,
                    "appId": string,
                    "task_id": string,
                    "taskId": string,
                    "task_status": {"type": "string", "description": "TASK_RUNNING, TASK_FAILED, ..."},
                    "taskStatus": string,
                    "slave_id": string,
                    "slaveId": string,
                    "host": string,
                    "message": string,
                    "ports": {"type": "array", "items": {"type": "integer"}},
                    "ip_addresses": {"type": "array"},
                    "ipAddresses": {"type": "array"},
                    "version": string,
                    "timestamp": string,
                    "terminal": {"type": "boolean", "description": "the task will never run again"}
                },
                "required": ["event_type", "app_id", "task_id", "task_status", "terminal"]
            }),
        },
        TriggerTypeInfo {
            reference: DEPLOYMENT_SUCCESS,
            description: "A Marathon deployment finished (deployment_success).",
            payload_schema: deployment_schema(),
        },
        TriggerTypeInfo {
            reference: DEPLOYMENT_FAILED,
            description: "A Marathon deployment failed (deployment_failed).",
            payload_schema: deployment_schema(),
        },
        TriggerTypeInfo {
            reference: INSTANCE_CHANGED,
            description: "A Marathon instance changed condition (instance_changed_event). \
                          Marathon's camelCase fields are kept; snake_case copies are added.",
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "event_type": string,
                    "eventType": string,
                    "instance_id": string,
                    "instanceId": string,
                    "condition": {"type": "string", "description": "Created, Running, Failed, Killed, ..."},
                    "run_spec_id": string,
                    "runSpecId": string,
                    "app_id": {"type": "string", "description": "copy of runSpecId"},
                    "run_spec_version": string,
                    "runSpecVersion": string,
                    "agent_id": string,
                    "agentId": string,
                    "host": string,
                    "timestamp": string
                },
                "required": ["event_type", "instance_id", "condition", "run_spec_id"]
            }),
        },
        TriggerTypeInfo {
            reference: OTHER_EVENT,
            description: "Any other Marathon event (api_post_event, health checks, group \
                          changes, deployment steps, ...), with its type and raw data.",
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "event_type": string,
                    "timestamp": string,
                    "data": {"type": "object", "description": "the event as Marathon sent it"}
                },
                "required": ["event_type", "data"]
            }),
        },
    ]
}

fn deployment_schema() -> Value {
    let string = json!({"type": "string"});
    json!({
        "type": "object",
        "properties": {
            "event_type": string,
            "eventType": string,
            "deployment_id": string,
            "id": string,
            "plan": {"type": "object"},
            "affected_apps": {"type": "array", "items": {"type": "string"},
                              "description": "apps the deployment plan touches"},
            "timestamp": string
        },
        "required": ["event_type", "deployment_id", "affected_apps"]
    })
}

/// Turns one Marathon event into what the engine stores. `event_type` is the SSE `event:` name;
/// when the stream sent none (`message`), the data's own `eventType` is used.
///
/// Returns `None` when `data` is not a JSON object: Marathon documents every event as one, so
/// anything else did not come from Marathon's event bus (a proxy's page, a truncated line).
pub fn to_sensor_event(event_type: &str, data: &Value) -> Option<SensorEvent> {
    let fields = data.as_object()?;
    let event_type = match event_type {
        "" | "message" => fields
            .get("eventType")
            .and_then(Value::as_str)
            .unwrap_or(event_type),
        named => named,
    };
    let (trigger, payload) = match event_type {
        "status_update_event" => (STATUS_UPDATE, status_update_payload(fields)),
        "deployment_success" => (DEPLOYMENT_SUCCESS, deployment_payload(event_type, fields)),
        "deployment_failed" => (DEPLOYMENT_FAILED, deployment_payload(event_type, fields)),
        "instance_changed_event" => (INSTANCE_CHANGED, instance_changed_payload(fields)),
        other => {
            let mut payload = Map::new();
            payload.insert("event_type".into(), Value::String(other.to_string()));
            if let Some(ts) = fields.get("timestamp") {
                payload.insert("timestamp".into(), ts.clone());
            }
            payload.insert("data".into(), data.clone());
            (OTHER_EVENT, payload)
        }
    };
    let occurred_at = fields
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|ts| DateTime::parse_from_rfc3339(ts).ok())
        .map(|ts| ts.with_timezone(&Utc))
        // Marathon stamps every event; if one arrives without a readable stamp, the time it was
        // seen is the best estimate left.
        .unwrap_or_else(Utc::now);
    Some(SensorEvent {
        trigger: trigger.to_string(),
        payload: Value::Object(payload),
        occurred_at,
    })
}

/// Copies Marathon's fields and adds `snake` copies of the `camel` ones that are present.
fn with_snake_copies(
    event_type: &str,
    fields: &Map<String, Value>,
    copies: &[(&str, &str)],
) -> Map<String, Value> {
    let mut payload = fields.clone();
    payload.insert("event_type".into(), Value::String(event_type.to_string()));
    for (camel, snake) in copies {
        if let Some(value) = fields.get(*camel) {
            payload.insert((*snake).to_string(), value.clone());
        }
    }
    payload
}

fn status_update_payload(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut payload = with_snake_copies(
        "status_update_event",
        fields,
        &[
            ("appId", "app_id"),
            ("taskId", "task_id"),
            ("taskStatus", "task_status"),
            ("slaveId", "slave_id"),
            ("ipAddresses", "ip_addresses"),
        ],
    );
    let terminal = fields
        .get("taskStatus")
        .and_then(Value::as_str)
        .is_some_and(|status| TERMINAL_TASK_STATES.contains(&status));
    payload.insert("terminal".into(), Value::Bool(terminal));
    payload
}

fn instance_changed_payload(fields: &Map<String, Value>) -> Map<String, Value> {
    with_snake_copies(
        "instance_changed_event",
        fields,
        &[
            ("instanceId", "instance_id"),
            ("runSpecId", "run_spec_id"),
            // Rules about an app match `app_id` on status updates; the same key works here.
            ("runSpecId", "app_id"),
            ("runSpecVersion", "run_spec_version"),
            ("agentId", "agent_id"),
        ],
    )
}

fn deployment_payload(event_type: &str, fields: &Map<String, Value>) -> Map<String, Value> {
    let mut payload = with_snake_copies(event_type, fields, &[]);
    // Older Marathons send only `id`; newer ones also send the whole `plan`, whose id is the same.
    let deployment_id = fields
        .get("id")
        .or_else(|| fields.get("plan").and_then(|plan| plan.get("id")))
        .cloned()
        .unwrap_or(Value::Null);
    payload.insert("deployment_id".into(), deployment_id);
    let apps = fields.get("plan").map(affected_apps).unwrap_or_default();
    payload.insert(
        "affected_apps".into(),
        Value::Array(apps.into_iter().map(Value::String).collect()),
    );
    payload
}

/// The apps a deployment plan touches, in plan order, each once. Plans list their steps either
/// as `[{action, app}]` (Marathon 0.x) or as `[{actions: [{action, app}]}]` (1.x); some also
/// carry `affectedApps` as `/v2/deployments` does.
fn affected_apps(plan: &Value) -> Vec<String> {
    let mut apps: Vec<String> = Vec::new();
    let mut add = |app: Option<&Value>| {
        if let Some(app) = app.and_then(Value::as_str) {
            if !apps.iter().any(|known| known == app) {
                apps.push(app.to_string());
            }
        }
    };
    if let Some(listed) = plan.get("affectedApps").and_then(Value::as_array) {
        listed.iter().for_each(|app| add(Some(app)));
    }
    for step in plan
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(step.get("app"));
        for action in step
            .get("actions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(action.get("app"));
        }
    }
    apps
}

/// One server-sent event, as dispatched by [`SseParser`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when the event named none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen on the stream, if any.
    pub id: Option<String>,
}

/// Why a stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("server-sent event larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// An incremental parser of the `text/event-stream` format (WHATWG HTML, "Server-sent events"):
/// bytes go in as they arrive, split anywhere, and complete events come out. Lines end with CRLF,
/// LF or CR; an event ends at a blank line; an event cut off by the end of the stream is dropped,
/// as the standard says.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF at the start of the next one ends no second line.
    after_cr: bool,
    first_line: bool,
    event: String,
    data: String,
    last_id: Option<String>,
    limit: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that fails once one event (its pending line plus its data) exceeds `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            event: String::new(),
            data: String::new(),
            last_id: None,
            limit,
        }
    }

    /// Consumes the next bytes of the stream and returns the events they complete.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.extend_line(chunk)?;
                    break;
                }
                Some(end) => {
                    self.extend_line(&chunk[..end])?;
                    self.after_cr = chunk[end] == b'\r';
                    chunk = &chunk[end + 1..];
                    if let Some(event) = self.end_line() {
                        events.push(event);
                    }
                }
            }
        }
        Ok(events)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + bytes.len() > self.limit {
            return Err(SseError::TooLarge { limit: self.limit });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self) -> Option<SseEvent> {
        let raw = std::mem::take(&mut self.line);
        // Lines are only cut at CR or LF, which never occur inside a UTF-8 sequence, so a
        // character split across chunks is whole again here.
        let decoded = String::from_utf8_lossy(&raw);
        let mut line: &str = &decoded;
        // The standard lets a stream open with a byte order mark, which is not part of a field.
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            // `retry` asks for a reconnection delay; this sensor's backoff is its operator's
            // setting, so it is ignored like any unknown field.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        Some(SseEvent {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
        })
    }
}

/// A configured Marathon sensor.
#[derive(Debug)]
pub struct MarathonSensor {
    events_url: reqwest::Url,
    username: Option<String>,
    password: Option<String>,
    reconnect_max: Duration,
    client: reqwest::Client,
}

/// Why the sensor left a connection.
enum Disconnect {
    Stopped,
    Closed,
    Failed(String),
}

impl MarathonSensor {
    /// Builds the sensor from its settings; an error names the bad setting. Settings are read by
    /// hand rather than through serde so that a wrong type is reported with the setting's name.
    pub fn from_settings(settings: &Map<String, Value>) -> Result<Self, String> {
        if let Some(unknown) = settings.keys().find(|k| !SETTINGS.contains(&k.as_str())) {
            return Err(format!(
                "marathon sensor: unknown setting `{unknown}` (known: {})",
                SETTINGS.join(", ")
            ));
        }
        let present = |name: &str| settings.get(name).filter(|v| !v.is_null());
        let string = |name: &str| -> Result<Option<String>, String> {
            match present(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(format!(
                    "marathon sensor: setting `{name}` must be a string, got {other}"
                )),
            }
        };

        let url = string("url")?
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| {
                "marathon sensor: setting `url` is required (Marathon's base URL)".to_string()
            })?;
        let base = reqwest::Url::parse(url.trim()).map_err(|e| {
            format!("marathon sensor: setting `url` is not a valid URL ({e}): {url}")
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "marathon sensor: setting `url` must be http or https, got {url}"
            ));
        }
        // Keep any path prefix (Marathon behind a proxy at /marathon) and drop the query.
        let mut events_url = base.clone();
        events_url.set_query(None);
        events_url.set_fragment(None);
        let path = format!("{}/v2/events", base.path().trim_end_matches('/'));
        events_url.set_path(&path);

        let event_types = match present("event_types") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item.as_str() {
                    Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                    _ => Err(format!(
                        "marathon sensor: setting `event_types` must list event type names, \
                         got {item}"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(format!(
                    "marathon sensor: setting `event_types` must be a list of strings, got {other}"
                ))
            }
        };
        if !event_types.is_empty() {
            let mut query = events_url.query_pairs_mut();
            for event_type in &event_types {
                query.append_pair("event_type", event_type);
            }
        }

        let username = string("username")?;
        let password = string("password")?;
        if password.is_some() && username.is_none() {
            return Err(
                "marathon sensor: setting `password` is given without `username`".to_string(),
            );
        }

        let reconnect_max_seconds = match present("reconnect_max_seconds") {
            None => DEFAULT_RECONNECT_MAX_SECONDS,
            Some(value) => value.as_u64().filter(|s| *s > 0).ok_or_else(|| {
                format!(
                    "marathon sensor: setting `reconnect_max_seconds` must be a whole number \
                     of seconds above 0, got {value}"
                )
            })?,
        };

        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE)
            .build()
            .map_err(|e| format!("marathon sensor: cannot build the HTTP client: {e}"))?;

        Ok(Self {
            events_url,
            username,
            password,
            reconnect_max: Duration::from_secs(reconnect_max_seconds),
            client,
        })
    }

    /// The URL the sensor subscribes to, filters included.
    pub fn events_url(&self) -> &reqwest::Url {
        &self.events_url
    }

    async fn run_until_stopped(self, mut ctx: SensorContext) {
        let mut attempt: u32 = 0;
        let mut first_connection = true;
        loop {
            if *ctx.shutdown.borrow() {
                break;
            }
            if !first_connection {
                ctx.status.reconnect();
            }
            first_connection = false;
            let disconnect = self.follow_stream(&mut ctx, &mut attempt).await;
            ctx.status.set_connected(false);
            match disconnect {
                Disconnect::Stopped => break,
                Disconnect::Closed => {
                    tracing::warn!(url = %self.events_url, "Marathon closed the event stream; reconnecting");
                    ctx.status.error("Marathon closed the event stream");
                }
                Disconnect::Failed(message) => {
                    tracing::warn!(url = %self.events_url, error = %message, "Marathon event stream failed; reconnecting");
                    ctx.status.error(message);
                }
            }
            if !backoff_sleep(
                attempt,
                RECONNECT_BASE,
                self.reconnect_max,
                &mut ctx.shutdown,
            )
            .await
            {
                break;
            }
            attempt = attempt.saturating_add(1);
        }
        ctx.status.set_connected(false);
        tracing::info!(url = %self.events_url, "Marathon sensor stopped");
    }

    /// Connects once and emits events until the stream ends, fails or shutdown is signalled.
    /// `attempt` is reset once the connection delivers an event, so a Marathon that accepts
    /// connections only to drop them is still retried with growing delays.
    async fn follow_stream(&self, ctx: &mut SensorContext, attempt: &mut u32) -> Disconnect {
        let mut request = self
            .client
            .get(self.events_url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(username) = &self.username {
            request = request.basic_auth(username, self.password.as_ref());
        }
        let response = tokio::select! {
            biased;
            _ = stopped(&mut ctx.shutdown) => return Disconnect::Stopped,
            response = request.send() => response,
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => return Disconnect::Failed(format!("cannot reach Marathon: {e}")),
        };
        let status = response.status();
        if !status.is_success() {
            return Disconnect::Failed(format!("GET {} answered {status}", self.events_url.path()));
        }
        if let Some(content_type) = response.headers().get(reqwest::header::CONTENT_TYPE) {
            let content_type = content_type
                .to_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !content_type.starts_with("text/event-stream") {
                return Disconnect::Failed(format!(
                    "GET {} answered {content_type}, not text/event-stream",
                    self.events_url.path()
                ));
            }
        }
        ctx.status.set_connected(true);
        tracing::info!(url = %self.events_url, "connected to Marathon's event stream");

        let mut body = response.bytes_stream();
        let mut parser = SseParser::new();
        loop {
            let chunk = tokio::select! {
                biased;
                _ = stopped(&mut ctx.shutdown) => return Disconnect::Stopped,
                chunk = body.next() => chunk,
            };
            let chunk = match chunk {
                None => return Disconnect::Closed,
                Some(Err(e)) => {
                    return Disconnect::Failed(format!("reading Marathon's event stream: {e}"))
                }
                Some(Ok(chunk)) => chunk,
            };
            let events = match parser.feed(&chunk) {
                Ok(events) => events,
                Err(e) => return Disconnect::Failed(format!("Marathon's event stream: {e}")),
            };
            for sse in events {
                *attempt = 0;
                if !self.emit(ctx, &sse).await {
                    return Disconnect::Stopped;
                }
            }
        }
    }

    /// Emits one received event, retrying until the engine accepts it. Returns false when
    /// shutdown was signalled first.
    async fn emit(&self, ctx: &mut SensorContext, sse: &SseEvent) -> bool {
        let data = serde_json::from_str::<Value>(&sse.data)
            .unwrap_or_else(|_| Value::String(sse.data.clone()));
        let Some(event) = to_sensor_event(&sse.event, &data) else {
            let message = format!(
                "ignored a `{}` event whose data is not a JSON object: {:.200}",
                sse.event, sse.data
            );
            tracing::warn!(url = %self.events_url, "{message}");
            ctx.status.error(message);
            return true;
        };
        let mut retry: u32 = 0;
        loop {
            let emitted = tokio::select! {
                biased;
                _ = stopped(&mut ctx.shutdown) => return false,
                emitted = ctx.emitter.emit(event.clone()) => emitted,
            };
            match emitted {
                Ok(()) => {
                    ctx.status.event();
                    return true;
                }
                Err(e) => {
                    let message = format!("cannot emit {}: {e}", event.trigger);
                    tracing::warn!(url = %self.events_url, retry, "{message}; retrying");
                    ctx.status.error(message);
                }
            }
            if !backoff_sleep(
                retry,
                EMIT_RETRY_BASE,
                self.reconnect_max,
                &mut ctx.shutdown,
            )
            .await
            {
                return false;
            }
            retry = retry.saturating_add(1);
        }
    }
}

impl Sensor for MarathonSensor {
    fn run(self: Box<Self>, ctx: SensorContext) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.run_until_stopped(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// /work/shared/fixtures/marathon-events.sse, verbatim.
    const FIXTURE: &str = concat!(
        "event: event_stream_attached\n",
        "data: {\"remoteAddress\":\"10.0.0.5\",\"eventType\":\"event_stream_attached\",\"timestamp\":\"2026-11-25T10:00:00.000Z\"}\n",
        "\n",
        "event: status_update_event\n",
        "data: {\"eventType\":\"status_update_event\",\"timestamp\":\"2026-11-25T10:00:01.158Z\",\"slaveId\":\"c3946a13-S3\",\"taskId\":\"100008580_web.4f1c\",\"taskStatus\":\"TASK_RUNNING\",\"message\":\"\",\"appId\":\"/100008580/web\",\"host\":\"agent-3.dc1\",\"ipAddresses\":[{\"ipAddress\":\"10.2.25.27\",\"protocol\":\"IPv4\"}],\"ports\":[31372],\"version\":\"2026-11-25T09:59:00.000Z\"}\n",
        "\n",
        "event: status_update_event\n",
        "data: {\"eventType\":\"status_update_event\",\"timestamp\":\"2026-11-25T10:05:12.001Z\",\"slaveId\":\"c3946a13-S3\",\"taskId\":\"100008580_web.4f1c\",\"taskStatus\":\"TASK_FAILED\",\"message\":\"Command exited with status 137\",\"appId\":\"/100008580/web\",\"host\":\"agent-3.dc1\",\"ipAddresses\":[],\"ports\":[31372],\"version\":\"2026-11-25T09:59:00.000Z\"}\n",
        "\n",
        "event: deployment_success\n",
        "data: {\"eventType\":\"deployment_success\",\"timestamp\":\"2026-11-25T10:06:00.000Z\",\"id\":\"5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43\",\"plan\":{\"id\":\"5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43\"}}\n",
        "\n",
    );

    const FIXTURE_TYPES: [&str; 4] = [
        "event_stream_attached",
        "status_update_event",
        "status_update_event",
        "deployment_success",
    ];

    fn parse_whole(input: &[u8]) -> Vec<SseEvent> {
        SseParser::new().feed(input).unwrap()
    }

    fn parse_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([input.len()]) {
            events.extend(parser.feed(&input[start..cut]).unwrap());
            start = cut;
        }
        events
    }

    fn assert_fixture_events(events: &[SseEvent]) {
        let types: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(types, FIXTURE_TYPES);
        for event in events {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(data["eventType"], event.event.as_str());
        }
    }

    #[test]
    fn parses_the_fixture_whole() {
        assert_fixture_events(&parse_whole(FIXTURE.as_bytes()));
    }

    #[test]
    fn parses_the_fixture_one_byte_at_a_time() {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for byte in FIXTURE.as_bytes() {
            events.extend(parser.feed(std::slice::from_ref(byte)).unwrap());
        }
        assert_fixture_events(&events);
        assert_eq!(events, parse_whole(FIXTURE.as_bytes()));
    }

    #[test]
    fn parses_crlf_and_cr_line_endings_one_byte_at_a_time() {
        let expected = parse_whole(FIXTURE.as_bytes());
        for ending in ["\r\n", "\r"] {
            let input = FIXTURE.replace('\n', ending);
            let mut parser = SseParser::new();
            let mut events = Vec::new();
            for byte in input.as_bytes() {
                events.extend(parser.feed(std::slice::from_ref(byte)).unwrap());
            }
            assert_eq!(events, expected, "line ending {ending:?}");
        }
    }

    proptest! {
        #[test]
        fn parses_the_fixture_in_random_chunks(
            cuts in proptest::collection::vec(0usize..2000, 0..40),
            ending in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        ) {
            let input = FIXTURE.replace('\n', ending);
            let events = parse_in_pieces(input.as_bytes(), &cuts);
            prop_assert_eq!(events, parse_whole(FIXTURE.as_bytes()));
        }
    }

    #[test]
    fn joins_multi_line_data_and_skips_comments() {
        let input =
            b": keep-alive\n\nevent: x\ndata: {\"a\":\ndata:1}\n: comment inside\nid: 7\n\n";
        let events = parse_whole(input);
        assert_eq!(
            events,
            vec![SseEvent {
                event: "x".into(),
                data: "{\"a\":\n1}".into(),
                id: Some("7".into()),
            }]
        );
    }

    #[test]
    fn follows_the_standard_on_edge_cases() {
        // BOM at the start, a field without a colon, a value without the optional space,
        // an event without a name, an event with no data (not dispatched), unknown fields.
        let input = "\u{feff}data\n\nevent: ignored\n\ndata:x\nretry: 10\nfoo: bar\n\n";
        let events = parse_whole(input.as_bytes());
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "message".into(),
                    data: String::new(),
                    id: None
                },
                SseEvent {
                    event: "message".into(),
                    data: "x".into(),
                    id: None
                },
            ]
        );
    }

    #[test]
    fn keeps_multi_byte_characters_split_across_chunks() {
        let input = "data: {\"message\":\"tâche échouée ✓\"}\n\n".as_bytes();
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for byte in input {
            events.extend(parser.feed(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(events[0].data, "{\"message\":\"tâche échouée ✓\"}");
    }

    #[test]
    fn drops_an_event_cut_off_by_the_end_of_the_stream() {
        let cut = &FIXTURE.as_bytes()[..FIXTURE.len() - 1];
        assert_eq!(parse_whole(cut).len(), 3);
    }

    #[test]
    fn refuses_an_event_larger_than_its_limit() {
        let mut parser = SseParser::with_limit(16);
        assert!(parser.feed(b"data: 0123").unwrap().is_empty());
        assert_eq!(
            parser.feed(b"456789abcdef"),
            Err(SseError::TooLarge { limit: 16 })
        );
    }

    fn fixture_sensor_events() -> Vec<SensorEvent> {
        parse_whole(FIXTURE.as_bytes())
            .iter()
            .map(|sse| {
                let data: Value = serde_json::from_str(&sse.data).unwrap();
                to_sensor_event(&sse.event, &data).unwrap()
            })
            .collect()
    }

    #[test]
    fn maps_the_fixture_to_typed_triggers() {
        let events = fixture_sensor_events();
        let triggers: Vec<&str> = events.iter().map(|e| e.trigger.as_str()).collect();
        assert_eq!(
            triggers,
            [
                OTHER_EVENT,
                STATUS_UPDATE,
                STATUS_UPDATE,
                DEPLOYMENT_SUCCESS
            ]
        );

        let attached = &events[0].payload;
        assert_eq!(attached["event_type"], "event_stream_attached");
        assert_eq!(attached["data"]["remoteAddress"], "10.0.0.5");
        assert_eq!(attached["timestamp"], "2026-11-25T10:00:00.000Z");

        let running = &events[1].payload;
        for (snake, camel, value) in [
            ("app_id", "appId", json!("/100008580/web")),
            ("task_id", "taskId", json!("100008580_web.4f1c")),
            ("task_status", "taskStatus", json!("TASK_RUNNING")),
            ("slave_id", "slaveId", json!("c3946a13-S3")),
        ] {
            assert_eq!(running[snake], value, "{snake}");
            assert_eq!(running[camel], value, "{camel}");
        }
        assert_eq!(running["event_type"], "status_update_event");
        assert_eq!(running["host"], "agent-3.dc1");
        assert_eq!(running["message"], "");
        assert_eq!(running["ports"], json!([31372]));
        assert_eq!(running["version"], "2026-11-25T09:59:00.000Z");
        assert_eq!(running["ip_addresses"][0]["ipAddress"], "10.2.25.27");
        assert_eq!(running["terminal"], false);
        assert_eq!(
            events[1].occurred_at,
            DateTime::parse_from_rfc3339("2026-11-25T10:00:01.158Z").unwrap()
        );

        let failed = &events[2].payload;
        assert_eq!(failed["task_status"], "TASK_FAILED");
        assert_eq!(failed["message"], "Command exited with status 137");
        assert_eq!(failed["terminal"], true);

        let deployed = &events[3].payload;
        assert_eq!(
            deployed["deployment_id"],
            "5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43"
        );
        assert_eq!(deployed["id"], "5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43");
        assert_eq!(
            deployed["plan"]["id"],
            "5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43"
        );
        assert_eq!(deployed["affected_apps"], json!([]));
    }

    #[test]
    fn terminal_follows_marathons_task_states() {
        for (state, terminal) in [
            ("TASK_STAGING", false),
            ("TASK_STARTING", false),
            ("TASK_RUNNING", false),
            ("TASK_KILLING", false),
            ("TASK_UNREACHABLE", false),
            ("TASK_FINISHED", true),
            ("TASK_FAILED", true),
            ("TASK_KILLED", true),
            ("TASK_LOST", true),
            ("TASK_ERROR", true),
            ("TASK_GONE", true),
        ] {
            let data = json!({"eventType": "status_update_event", "taskStatus": state});
            let event = to_sensor_event("status_update_event", &data).unwrap();
            assert_eq!(event.payload["terminal"], terminal, "{state}");
        }
    }

    #[test]
    fn maps_a_failed_deployment_with_its_affected_apps() {
        // Marathon 1.x plan: steps hold actions.
        let data = json!({
            "eventType": "deployment_failed",
            "timestamp": "2014-03-01T23:29:30.158Z",
            "id": "867ed450",
            "plan": {
                "id": "867ed450",
                "steps": [
                    {"actions": [{"action": "StartApplication", "app": "/a"},
                                 {"action": "ScaleApplication", "app": "/b"}]},
                    {"actions": [{"action": "ScaleApplication", "app": "/a"}]}
                ]
            }
        });
        let event = to_sensor_event("deployment_failed", &data).unwrap();
        assert_eq!(event.trigger, DEPLOYMENT_FAILED);
        assert_eq!(event.payload["deployment_id"], "867ed450");
        assert_eq!(event.payload["affected_apps"], json!(["/a", "/b"]));

        // Marathon 0.x plan as in the event bus documentation: steps are actions.
        let data = json!({
            "eventType": "deployment_success",
            "plan": {"id": "p1", "steps": [{"action": "ScaleApplication", "app": "/my-app"}]}
        });
        let event = to_sensor_event("deployment_success", &data).unwrap();
        assert_eq!(event.payload["deployment_id"], "p1");
        assert_eq!(event.payload["affected_apps"], json!(["/my-app"]));
    }

    #[test]
    fn maps_an_instance_change() {
        let data = json!({
            "instanceId": "my-app.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c",
            "condition": "Killed",
            "runSpecId": "/my-app",
            "agentId": "20140909-054127-177048842-5050-1494-0",
            "host": "slave-1234.acme.org",
            "runSpecVersion": "2014-03-01T23:29:30.158Z",
            "timestamp": "2014-03-01T23:29:30.158Z",
            "eventType": "instance_changed_event"
        });
        let event = to_sensor_event("instance_changed_event", &data).unwrap();
        assert_eq!(event.trigger, INSTANCE_CHANGED);
        let p = &event.payload;
        assert_eq!(p["instance_id"], data["instanceId"]);
        assert_eq!(p["instanceId"], data["instanceId"]);
        assert_eq!(p["condition"], "Killed");
        assert_eq!(p["run_spec_id"], "/my-app");
        assert_eq!(p["app_id"], "/my-app");
        assert_eq!(p["agent_id"], data["agentId"]);
        assert_eq!(p["host"], "slave-1234.acme.org");
    }

    #[test]
    fn names_an_unnamed_event_by_its_data_and_refuses_non_objects() {
        let data = json!({"eventType": "api_post_event", "uri": "/v2/apps/my-app"});
        let event = to_sensor_event("message", &data).unwrap();
        assert_eq!(event.trigger, OTHER_EVENT);
        assert_eq!(event.payload["event_type"], "api_post_event");
        assert_eq!(event.payload["data"], data);

        let status = json!({"eventType": "status_update_event", "taskStatus": "TASK_KILLED"});
        assert_eq!(to_sensor_event("", &status).unwrap().trigger, STATUS_UPDATE);

        assert_eq!(
            to_sensor_event("status_update_event", &json!("<html>")),
            None
        );
        assert_eq!(to_sensor_event("message", &json!([1, 2])), None);
    }

    #[test]
    fn declares_a_schema_for_every_trigger_it_emits() {
        let declared: Vec<&str> = trigger_types().iter().map(|t| t.reference).collect();
        assert_eq!(
            declared,
            [
                STATUS_UPDATE,
                DEPLOYMENT_SUCCESS,
                DEPLOYMENT_FAILED,
                INSTANCE_CHANGED,
                OTHER_EVENT
            ]
        );
        for event in fixture_sensor_events() {
            let info = trigger_types()
                .into_iter()
                .find(|t| t.reference == event.trigger)
                .unwrap();
            for key in info.payload_schema["required"].as_array().unwrap() {
                let key = key.as_str().unwrap();
                assert!(
                    event.payload.get(key).is_some(),
                    "{} lacks {key}",
                    event.trigger
                );
            }
        }
    }

    fn settings(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn builds_the_events_url_from_its_settings() {
        let sensor = MarathonSensor::from_settings(&settings(json!({
            "url": "http://127.0.0.1:8080/marathon/",
            "event_types": ["status_update_event", "deployment_success"],
            "username": "ops",
            "password": null,
        })))
        .unwrap();
        assert_eq!(
            sensor.events_url().as_str(),
            "http://127.0.0.1:8080/marathon/v2/events?event_type=status_update_event&event_type=deployment_success"
        );
        assert_eq!(sensor.reconnect_max, Duration::from_secs(30));
    }

    #[test]
    fn bad_settings_are_errors_naming_the_setting() {
        for (value, names) in [
            (json!({"url": "http://127.0.0.1:8080", "urll": 1}), "`urll`"),
            (json!({}), "`url`"),
            (json!({"url": "not a url"}), "`url`"),
            (json!({"url": "ftp://127.0.0.1"}), "`url`"),
            (
                json!({"url": "http://127.0.0.1", "event_types": "x"}),
                "`event_types`",
            ),
            (
                json!({"url": "http://127.0.0.1", "event_types": [1]}),
                "`event_types`",
            ),
            (
                json!({"url": "http://127.0.0.1", "username": 5}),
                "`username`",
            ),
            (
                json!({"url": "http://127.0.0.1", "password": "p"}),
                "`password`",
            ),
            (
                json!({"url": "http://127.0.0.1", "reconnect_max_seconds": 0}),
                "`reconnect_max_seconds`",
            ),
            (
                json!({"url": "http://127.0.0.1", "reconnect_max_seconds": "5"}),
                "`reconnect_max_seconds`",
            ),
        ] {
            let err = MarathonSensor::from_settings(&settings(value.clone())).unwrap_err();
            assert!(err.contains(names), "{value}: {err}");
        }
    }
}
