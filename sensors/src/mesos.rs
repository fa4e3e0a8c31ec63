//! The `mesos` sensor: follows a Mesos master's v1 operator event stream and turns task, agent
//! and framework events into trigger instances (`mesos.task_update`, `mesos.task_added`,
//! `mesos.agent_added`, `mesos.agent_removed`, `mesos.framework_added`,
//! `mesos.framework_updated`, `mesos.framework_removed`).
//!
//! Wire protocol (Mesos docs/operator-http-api.md, master.proto): `POST <master>/api/v1` with
//! `{"type":"SUBSCRIBE"}` answers with an endless RecordIO stream of JSON `Event`s: SUBSCRIBED
//! first (a snapshot of the cluster and `heartbeat_interval_seconds`), then one event per
//! change, and a HEARTBEAT every interval. A master that is not the leader answers 307 with a
//! Location naming the leader, often scheme-relative (`//host:5050/api/v1`).
//!
//! Settings:
//! - `master`: the master's URL (`http://mesos-master:5050`), or a list of URLs; the next one is
//!   tried when a master cannot be reached.
//! - `heartbeat_timeout_factor` (default 5): the stream is declared dead after this many
//!   heartbeat intervals without a byte, and the sensor subscribes again.
//! - `principal` / `secret` (optional, together): HTTP basic authentication.
//!
//! Choices an operator should know:
//! - The SUBSCRIBED snapshot emits nothing: replaying every known task on each reconnect would
//!   fire rules for old news. Mesos keeps no event log, so changes that happen while the sensor
//!   is disconnected are not seen.
//! - Events are emitted in stream order, and an event the engine refuses is retried with
//!   backoff until stored (or the sensor stops); the stream waits meanwhile.
//!
//! This module must never drop an event the engine has not stored, never block the runtime,
//! and never log the secret.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::Url;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::recordio::{RecordIoDecoder, RecordIoError};
use crate::{
    backoff_sleep, stopped, Sensor, SensorContext, SensorEvent, SensorKind, TriggerTypeInfo,
};

/// Mesos' default when SUBSCRIBED does not say.
const DEFAULT_HEARTBEAT_INTERVAL_SECS: f64 = 15.0;
const DEFAULT_HEARTBEAT_TIMEOUT_FACTOR: f64 = 5.0;
/// A master announcing a longer interval is misconfigured; capping keeps the watchdog useful.
const MAX_HEARTBEAT_INTERVAL_SECS: f64 = 3600.0;
/// Leader changes chain at most a couple of hops; more means a redirect loop.
const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a master may take to answer SUBSCRIBE with headers (the body is watched by the
/// heartbeat watchdog instead).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ERROR_BODY_CHARS: usize = 300;
const RESUBSCRIBE_BASE: Duration = Duration::from_millis(500);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(30);
const EMIT_RETRY_BASE: Duration = Duration::from_millis(200);
const EMIT_RETRY_MAX: Duration = Duration::from_secs(30);
const SUBSCRIBE_BODY: &str = r#"{"type":"SUBSCRIBE"}"#;

const SETTINGS: &str = "master, heartbeat_timeout_factor, principal, secret";

/// The `mesos` sensor kind, for [`crate::builtin_sensors`].
pub fn kind() -> SensorKind {
    SensorKind {
        name: "mesos",
        description: "Follows a Mesos master's operator event stream (SUBSCRIBE): task updates, \
                      tasks added, agents and frameworks added, updated and removed.",
        trigger_types,
        build: |settings| Ok(Box::new(MesosSensor::from_settings(settings)?)),
    }
}

/// Why a subscription could not be made or kept. Each variant names the endpoint involved.
#[derive(Debug, thiserror::Error)]
enum MesosError {
    #[error("{url}: request failed: {detail}")]
    Request { url: String, detail: String },
    #[error("{url}: no response within {}s", .after.as_secs())]
    NoResponse { url: String, after: Duration },
    #[error("{url}: answered {status}: {body}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("{url}: answered {status} without a usable Location ({detail})")]
    BadRedirect {
        url: String,
        status: reqwest::StatusCode,
        detail: String,
    },
    #[error("{url}: more than {MAX_REDIRECTS} redirects, giving up")]
    TooManyRedirects { url: String },
    #[error("no master accepted the subscription: {0}")]
    NoMaster(String),
    #[error("{url}: event stream broke: {detail}")]
    Stream { url: String, detail: String },
    #[error("{url}: {source}")]
    Framing {
        url: String,
        #[source]
        source: RecordIoError,
    },
    #[error("{url}: nothing received for {:.1}s ({factor} heartbeat intervals); the stream is presumed dead", .waited.as_secs_f64())]
    HeartbeatTimeout {
        url: String,
        waited: Duration,
        factor: f64,
    },
    #[error("{url}: master closed the event stream{}", if *.mid_record { " in the middle of a record" } else { "" })]
    EndOfStream { url: String, mid_record: bool },
}

/// A configured `mesos` sensor.
struct MesosSensor {
    /// The configured masters' `/api/v1` endpoints, in the order given.
    masters: Vec<Url>,
    heartbeat_timeout_factor: f64,
    credentials: Option<Credentials>,
}

struct Credentials {
    principal: String,
    secret: String,
}

/// Where to subscribe next: the leader last seen (from a redirect), then the configured masters
/// starting with the one that worked last.
#[derive(Default)]
struct Route {
    leader: Option<Url>,
    preferred: usize,
}

impl MesosSensor {
    /// Reads the settings by hand rather than through serde so that every error names the
    /// setting and says what was expected (serde's untagged enums only say "did not match").
    fn from_settings(settings: &Map<String, Value>) -> Result<Self, String> {
        let mut masters = None;
        let mut heartbeat_timeout_factor = DEFAULT_HEARTBEAT_TIMEOUT_FACTOR;
        let mut principal = None;
        let mut secret = None;
        for (key, value) in settings {
            match key.as_str() {
                "master" => masters = Some(parse_masters(value)?),
                "heartbeat_timeout_factor" => {
                    heartbeat_timeout_factor = value
                        .as_f64()
                        .filter(|f| f.is_finite() && *f >= 1.0)
                        .ok_or_else(|| {
                            format!(
                                "setting `heartbeat_timeout_factor` must be a number of heartbeat intervals, at least 1 (got {value})"
                            )
                        })?;
                }
                "principal" => principal = Some(string_setting("principal", value)?),
                // The pack's config is shared with the `mesos_metrics` poller, which reads it.
                "metrics_interval" => {}
                // The value is never echoed: it is a password.
                "secret" => match value {
                    Value::String(s) => secret = Some(s.clone()),
                    _ => return Err("setting `secret` must be a string".to_string()),
                },
                other => {
                    return Err(format!(
                        "unknown setting `{other}` for the mesos sensor (known: {SETTINGS})"
                    ))
                }
            }
        }
        let masters = masters.ok_or_else(|| {
            "setting `master` is required: the Mesos master's URL, e.g. http://mesos-master:5050"
                .to_string()
        })?;
        let credentials = match (principal, secret) {
            (Some(principal), Some(secret)) => Some(Credentials { principal, secret }),
            (None, None) => None,
            (Some(_), None) => {
                return Err("setting `principal` needs `secret` as well".to_string());
            }
            (None, Some(_)) => {
                return Err("setting `secret` needs `principal` as well".to_string());
            }
        };
        Ok(Self {
            masters,
            heartbeat_timeout_factor,
            credentials,
        })
    }

    async fn run_until_stopped(self, ctx: SensorContext) {
        let mut shutdown = ctx.shutdown.clone();
        // Each subscription gets a fresh connection: an idle pooled connection to a master
        // that has since lost leadership (or died) is worth nothing. Redirects are followed by
        // hand because reqwest drops the Authorization header when the host changes, and the
        // leader is always another host.
        let client = match reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_keepalive(Duration::from_secs(30))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                let message = format!("cannot build an HTTP client: {}", error_chain(&e));
                tracing::error!(sensor = "mesos", "{message}");
                ctx.status.error(message);
                stopped(&mut shutdown).await;
                return;
            }
        };

        let mut route = Route::default();
        let mut attempt: u32 = 0;
        let mut first = true;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !first {
                ctx.status.reconnect();
            }
            first = false;

            let mut subscribed = false;
            let mut session_shutdown = ctx.shutdown.clone();
            let outcome = tokio::select! {
                outcome = self.follow_stream(&client, &ctx, &mut route, &mut subscribed, &mut session_shutdown) => outcome,
                _ = stopped(&mut shutdown) => break,
            };
            ctx.status.set_connected(false);
            let error = match outcome {
                Ok(()) => break,
                Err(error) => error,
            };
            tracing::warn!(sensor = "mesos", error = %error, "subscription lost; subscribing again");
            ctx.status.error(error.to_string());
            if subscribed {
                // The stream worked, so this is a fresh failure, not the latest of a series.
                attempt = 0;
            }
            if !backoff_sleep(attempt, RESUBSCRIBE_BASE, RESUBSCRIBE_MAX, &mut shutdown).await {
                break;
            }
            attempt = attempt.saturating_add(1);
        }
        ctx.status.set_connected(false);
    }

    /// Subscribes and emits events until the stream fails (`Err`) or shutdown interrupts an
    /// emit retry (`Ok`). Sets `subscribed` once SUBSCRIBED (or any first event) arrived.
    async fn follow_stream(
        &self,
        client: &reqwest::Client,
        ctx: &SensorContext,
        route: &mut Route,
        subscribed: &mut bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), MesosError> {
        let (response, url) = self.subscribe(client, route).await?;
        let url_text = url.to_string();
        tracing::info!(sensor = "mesos", master = %url_text, "subscribed; reading the event stream");

        let mut stream = response.bytes_stream();
        let mut decoder = RecordIoDecoder::new();
        let mut interval = Duration::from_secs_f64(DEFAULT_HEARTBEAT_INTERVAL_SECS);
        loop {
            // Any byte proves the connection alive: a large SUBSCRIBED snapshot on a slow link
            // must not be cut off for lack of a complete record. The timer restarts after each
            // chunk is processed, so time spent retrying an emit is not counted as silence.
            let waited = interval.mul_f64(self.heartbeat_timeout_factor);
            let chunk = match tokio::time::timeout(waited, stream.next()).await {
                Err(_) => {
                    return Err(MesosError::HeartbeatTimeout {
                        url: url_text,
                        waited,
                        factor: self.heartbeat_timeout_factor,
                    })
                }
                Ok(None) => {
                    return Err(MesosError::EndOfStream {
                        url: url_text,
                        mid_record: decoder.is_mid_record(),
                    })
                }
                Ok(Some(Err(e))) => {
                    return Err(MesosError::Stream {
                        url: url_text,
                        detail: error_chain(&e),
                    })
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            decoder.push(&chunk);
            while let Some(record) = decoder.next_record() {
                let record = record.map_err(|source| MesosError::Framing {
                    url: url_text.clone(),
                    source,
                })?;
                // Framing is by length, so one unreadable record does not desynchronise the
                // stream: report it and read on.
                let event: Value = match serde_json::from_slice(&record) {
                    Ok(event) => event,
                    Err(e) => {
                        let message = format!("{url_text}: skipped an event that is not JSON: {e}");
                        tracing::warn!(sensor = "mesos", "{message}");
                        ctx.status.error(message);
                        continue;
                    }
                };
                let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
                if !*subscribed {
                    *subscribed = true;
                    ctx.status.set_connected(true);
                    if event_type != "SUBSCRIBED" {
                        tracing::warn!(sensor = "mesos", master = %url_text, first = event_type, "the stream did not start with SUBSCRIBED");
                    }
                }
                if event_type == "SUBSCRIBED" {
                    interval = heartbeat_interval(&event);
                }
                for sensor_event in to_sensor_events(&event) {
                    if !emit_until_stored(ctx, sensor_event, shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Sends SUBSCRIBE to the leader last seen, then to each configured master in turn, and
    /// returns the first streaming response with the URL that gave it.
    async fn subscribe(
        &self,
        client: &reqwest::Client,
        route: &mut Route,
    ) -> Result<(reqwest::Response, Url), MesosError> {
        let count = self.masters.len();
        let mut candidates: Vec<(Option<usize>, Url)> = Vec::with_capacity(count + 1);
        if let Some(leader) = route.leader.take() {
            candidates.push((None, leader));
        }
        for offset in 0..count {
            let index = (route.preferred + offset) % count;
            if let Some(master) = self.masters.get(index) {
                if candidates.iter().all(|(_, url)| url != master) {
                    candidates.push((Some(index), master.clone()));
                }
            }
        }

        let mut failures = Vec::new();
        for (index, start) in candidates {
            match self.subscribe_at(client, start).await {
                Ok((response, url)) => {
                    if let Some(index) = index {
                        route.preferred = index;
                    }
                    if !self.masters.contains(&url) {
                        route.leader = Some(url.clone());
                    }
                    return Ok((response, url));
                }
                Err(error) => {
                    tracing::warn!(sensor = "mesos", error = %error, "cannot subscribe; trying the next master if any");
                    failures.push(error);
                }
            }
        }
        if failures.len() == 1 {
            if let Some(only) = failures.pop() {
                return Err(only);
            }
        }
        let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
        Err(MesosError::NoMaster(all.join("; ")))
    }

    /// SUBSCRIBE at one master, following redirects to the leader.
    async fn subscribe_at(
        &self,
        client: &reqwest::Client,
        mut url: Url,
    ) -> Result<(reqwest::Response, Url), MesosError> {
        for _ in 0..=MAX_REDIRECTS {
            let mut request = client
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json")
                .body(SUBSCRIBE_BODY);
            if let Some(credentials) = &self.credentials {
                request = request.basic_auth(&credentials.principal, Some(&credentials.secret));
            }
            let response = match tokio::time::timeout(RESPONSE_TIMEOUT, request.send()).await {
                Err(_) => {
                    return Err(MesosError::NoResponse {
                        url: url.to_string(),
                        after: RESPONSE_TIMEOUT,
                    })
                }
                Ok(Err(e)) => {
                    return Err(MesosError::Request {
                        url: url.to_string(),
                        detail: error_chain(&e),
                    })
                }
                Ok(Ok(response)) => response,
            };
            let status = response.status();
            if status.is_success() {
                return Ok((response, url));
            }
            if status.is_redirection() {
                // Mesos uses 307, which keeps the method and body; other 3xx codes are followed
                // the same way since SUBSCRIBE only makes sense as a POST.
                let next =
                    redirect_target(&url, &response).map_err(|detail| MesosError::BadRedirect {
                        url: url.to_string(),
                        status,
                        detail,
                    })?;
                tracing::info!(sensor = "mesos", from = %url, to = %next, "redirected to the leading master");
                url = next;
                continue;
            }
            return Err(MesosError::Status {
                url: url.to_string(),
                status,
                body: error_body(response).await,
            });
        }
        Err(MesosError::TooManyRedirects {
            url: url.to_string(),
        })
    }
}

impl Sensor for MesosSensor {
    fn run(
        self: Box<Self>,
        ctx: SensorContext,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(self.run_until_stopped(ctx))
    }
}

/// Emits `event`, retrying with backoff while the engine refuses it. False if shutdown came
/// first.
async fn emit_until_stored(
    ctx: &SensorContext,
    event: SensorEvent,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut attempt: u32 = 0;
    loop {
        match ctx.emitter.emit(event.clone()).await {
            Ok(()) => {
                ctx.status.event();
                return true;
            }
            Err(e) => {
                let message = format!("cannot store a {} event yet: {e}", event.trigger);
                tracing::warn!(sensor = "mesos", "{message}; retrying");
                ctx.status.error(message);
                if !backoff_sleep(attempt, EMIT_RETRY_BASE, EMIT_RETRY_MAX, shutdown).await {
                    return false;
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

fn string_setting(name: &str, value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("setting `{name}` must be a string (got {value})"))
}

fn parse_masters(value: &Value) -> Result<Vec<Url>, String> {
    master_texts(value)?.into_iter().map(api_endpoint).collect()
}

/// The `master` setting's URLs as written: one URL, or a non-empty list of them (shared with
/// the `mesos_metrics` poller, which reads the same pack config).
pub(crate) fn master_texts(value: &Value) -> Result<Vec<&str>, String> {
    let urls: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str().ok_or_else(|| {
                    format!("setting `master`: every entry must be a URL string (got {item})")
                })
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "setting `master` must be a URL or a list of URLs (got {other})"
            ))
        }
    };
    if urls.is_empty() {
        return Err("setting `master` lists no URL".to_string());
    }
    Ok(urls)
}

/// `http://host:5050` (or `.../api/v1`, or a proxy prefix such as `https://proxy/mesos`) →
/// the operator API endpoint.
fn api_endpoint(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text.trim()).map_err(|e| {
        format!("setting `master`: `{text}` is not a URL ({e}); write e.g. http://{text}")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "setting `master`: `{text}` must be an http:// or https:// URL with a host"
        ));
    }
    let path = url.path().trim_end_matches('/');
    let path = if path.ends_with("/api/v1") {
        path.to_string()
    } else {
        format!("{path}/api/v1")
    };
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// The leader's URL from a redirect. Location is resolved against the request URL, which turns
/// Mesos' scheme-relative `//host:port/api/v1` into a full URL with the same scheme.
fn redirect_target(from: &Url, response: &reqwest::Response) -> Result<Url, String> {
    let location = response
        .headers()
        .get(LOCATION)
        .ok_or_else(|| "no Location header".to_string())?
        .to_str()
        .map_err(|_| "Location is not ASCII".to_string())?;
    let next = from
        .join(location)
        .map_err(|e| format!("Location `{location}`: {e}"))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(format!("Location `{location}` is not an http(s) URL"));
    }
    Ok(next)
}

/// The start of an error response's body, for the error message; never waits long.
async fn error_body(response: reqwest::Response) -> String {
    match tokio::time::timeout(ERROR_BODY_TIMEOUT, response.text()).await {
        Ok(Ok(text)) => {
            let text = text.trim();
            if text.is_empty() {
                "(empty body)".to_string()
            } else {
                text.chars().take(MAX_ERROR_BODY_CHARS).collect()
            }
        }
        Ok(Err(e)) => format!("(body unreadable: {e})"),
        Err(_) => "(body not received)".to_string(),
    }
}

/// reqwest's Display stops at the outermost error ("error sending request"); the cause
/// ("connection refused") is what an operator needs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The heartbeat interval SUBSCRIBED announces, or Mesos' default of 15 s.
fn heartbeat_interval(subscribed: &Value) -> Duration {
    subscribed
        .pointer("/subscribed/heartbeat_interval_seconds")
        .and_then(Value::as_f64)
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map(|secs| secs.min(MAX_HEARTBEAT_INTERVAL_SECS))
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .unwrap_or(Duration::from_secs_f64(DEFAULT_HEARTBEAT_INTERVAL_SECS))
}

/// Turns one operator API event (a decoded RecordIO record) into the trigger instances it
/// stands for. Pure: no I/O, no state. SUBSCRIBED, HEARTBEAT and event types without a trigger
/// type give nothing. A malformed event of a known type still gives its trigger, with nulls
/// where fields are missing and the event itself under `raw`, so nothing is silently lost.
pub fn to_sensor_events(event: &Value) -> Vec<SensorEvent> {
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
    let built = match event_type {
        "TASK_UPDATED" => Some(task_updated(event)),
        "TASK_ADDED" => Some(task_added(event)),
        "AGENT_ADDED" => Some(agent_added(event)),
        "AGENT_REMOVED" => Some(agent_removed(event)),
        "FRAMEWORK_ADDED" => Some(framework_changed(
            event,
            "framework_added",
            "mesos.framework_added",
        )),
        "FRAMEWORK_UPDATED" => Some(framework_changed(
            event,
            "framework_updated",
            "mesos.framework_updated",
        )),
        "FRAMEWORK_REMOVED" => Some(framework_removed(event)),
        _ => None,
    };
    built.into_iter().collect()
}

/// Whether a task in `state` will never run again.
///
/// TASK_LOST is deliberately not terminal: since partition awareness (Mesos 1.1) the master
/// reports LOST for tasks on agents it cannot reach, and those tasks may come back RUNNING when
/// the agent reregisters; an auto-heal rule that replaced them would double the app.
/// TASK_UNREACHABLE is likewise temporary. TASK_GONE_BY_OPERATOR is GONE declared by an
/// operator (the agent was marked gone), so it is as final as GONE.
pub fn is_terminal_state(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_ERROR"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
    )
}

fn task_updated(event: &Value) -> SensorEvent {
    let body = event.get("task_updated").unwrap_or(&Value::Null);
    let status = body.get("status").unwrap_or(&Value::Null);
    // `state` is the task's latest state in the master; `status` is the update that caused
    // this event, and can be older when updates queue up. Rules care about where the task is.
    let state = body
        .get("state")
        .and_then(Value::as_str)
        .or_else(|| status.get("state").and_then(Value::as_str));
    let timestamp = status.get("timestamp").and_then(Value::as_f64);
    SensorEvent {
        trigger: "mesos.task_update".to_string(),
        payload: json!({
            "task_id": id_of(status.get("task_id")),
            "framework_id": id_of(body.get("framework_id")),
            "agent_id": id_of(status.get("agent_id")),
            "executor_id": id_of(status.get("executor_id")),
            "state": state,
            "reason": string_of(status.get("reason")),
            "source": string_of(status.get("source")),
            "message": string_of(status.get("message")),
            "healthy": status.get("healthy").and_then(Value::as_bool),
            "timestamp": timestamp,
            "terminal": state.is_some_and(is_terminal_state),
            "raw": event,
        }),
        occurred_at: timestamp.and_then(time_from_secs).unwrap_or_else(Utc::now),
    }
}

fn task_added(event: &Value) -> SensorEvent {
    let task = event.pointer("/task_added/task").unwrap_or(&Value::Null);
    SensorEvent {
        trigger: "mesos.task_added".to_string(),
        payload: json!({
            "task_id": id_of(task.get("task_id")),
            "name": string_of(task.get("name")),
            "framework_id": id_of(task.get("framework_id")),
            "agent_id": id_of(task.get("agent_id")),
            "executor_id": id_of(task.get("executor_id")),
            "state": string_of(task.get("state")),
            "labels": labels_of(task.get("labels")),
            "raw": event,
        }),
        occurred_at: Utc::now(),
    }
}

fn agent_added(event: &Value) -> SensorEvent {
    let agent = event.pointer("/agent_added/agent").unwrap_or(&Value::Null);
    let info = agent.get("agent_info").unwrap_or(&Value::Null);
    SensorEvent {
        trigger: "mesos.agent_added".to_string(),
        payload: json!({
            "agent_id": id_of(info.get("id")),
            "hostname": string_of(info.get("hostname")),
            "port": info.get("port").and_then(Value::as_u64),
            "active": agent.get("active").and_then(Value::as_bool),
            "version": string_of(agent.get("version")),
            "pid": string_of(agent.get("pid")),
            "raw": event,
        }),
        occurred_at: Utc::now(),
    }
}

fn agent_removed(event: &Value) -> SensorEvent {
    SensorEvent {
        trigger: "mesos.agent_removed".to_string(),
        payload: json!({
            "agent_id": id_of(event.pointer("/agent_removed/agent_id")),
            "raw": event,
        }),
        occurred_at: Utc::now(),
    }
}

/// FRAMEWORK_ADDED and FRAMEWORK_UPDATED both carry a `Response.GetFrameworks.Framework`.
fn framework_changed(event: &Value, body: &str, trigger: &str) -> SensorEvent {
    let framework = event
        .get(body)
        .and_then(|b| b.get("framework"))
        .unwrap_or(&Value::Null);
    let info = framework.get("framework_info").unwrap_or(&Value::Null);
    let mut payload = framework_info_fields(info);
    for flag in ["active", "connected", "recovered"] {
        payload.insert(
            flag.to_string(),
            json!(framework.get(flag).and_then(Value::as_bool)),
        );
    }
    payload.insert("raw".to_string(), event.clone());
    SensorEvent {
        trigger: trigger.to_string(),
        payload: Value::Object(payload),
        occurred_at: Utc::now(),
    }
}

/// FRAMEWORK_REMOVED carries only the `FrameworkInfo`.
fn framework_removed(event: &Value) -> SensorEvent {
    let info = event
        .pointer("/framework_removed/framework_info")
        .unwrap_or(&Value::Null);
    let mut payload = framework_info_fields(info);
    payload.insert("raw".to_string(), event.clone());
    SensorEvent {
        trigger: "mesos.framework_removed".to_string(),
        payload: Value::Object(payload),
        occurred_at: Utc::now(),
    }
}

fn framework_info_fields(info: &Value) -> Map<String, Value> {
    // Multi-role frameworks list `roles`; older ones set the deprecated single `role`.
    let mut roles: Vec<Value> = info
        .get("roles")
        .and_then(Value::as_array)
        .map(|roles| roles.iter().filter(|r| r.is_string()).cloned().collect())
        .unwrap_or_default();
    if roles.is_empty() {
        if let Some(role) = info.get("role").filter(|r| r.is_string()) {
            roles.push(role.clone());
        }
    }
    let mut fields = Map::new();
    fields.insert("framework_id".to_string(), id_of(info.get("id")));
    fields.insert("name".to_string(), string_of(info.get("name")));
    fields.insert("user".to_string(), string_of(info.get("user")));
    fields.insert("roles".to_string(), Value::Array(roles));
    fields.insert("principal".to_string(), string_of(info.get("principal")));
    fields.insert("hostname".to_string(), string_of(info.get("hostname")));
    fields.insert("webui_url".to_string(), string_of(info.get("webui_url")));
    fields.insert("labels".to_string(), labels_of(info.get("labels")));
    fields
}

/// Mesos wraps ids as `{"value": "..."}`; rules want the plain string.
fn id_of(value: Option<&Value>) -> Value {
    match value {
        Some(Value::Object(wrapper)) => string_of(wrapper.get("value")),
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::Null,
    }
}

fn string_of(value: Option<&Value>) -> Value {
    match value {
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::Null,
    }
}

/// Mesos `Labels` (`{"labels": [{"key": k, "value": v}]}`) as a plain object, so rules can
/// write `trigger.labels.app`.
fn labels_of(value: Option<&Value>) -> Value {
    let mut labels = Map::new();
    let entries = value
        .and_then(|v| v.get("labels"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for entry in entries {
        if let Some(key) = entry.get("key").and_then(Value::as_str) {
            labels.insert(key.to_string(), string_of(entry.get("value")));
        }
    }
    Value::Object(labels)
}

/// Mesos timestamps are seconds since the epoch as a double. A double near 1.7e9 holds about
/// 0.2 µs of precision, so it is rounded to the microsecond rather than read as noisy nanos.
fn time_from_secs(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() {
        return None;
    }
    // `as` saturates, and from_timestamp_micros rejects what is out of range.
    DateTime::from_timestamp_micros((secs * 1e6).round() as i64)
}

/// The trigger types the sensor emits, with their payload schemas.
pub fn trigger_types() -> Vec<TriggerTypeInfo> {
    let string = json!({"type": "string"});
    let opt_string = json!({"type": ["string", "null"]});
    let opt_bool = json!({"type": ["boolean", "null"]});
    let raw = json!({"type": "object", "description": "the operator API event as received"});
    let labels = json!({"type": "object", "additionalProperties": {"type": ["string", "null"]}});
    let framework_props = |extra: &[(&str, Value)]| {
        let mut props = Map::new();
        props.insert("framework_id".into(), opt_string.clone());
        props.insert("name".into(), opt_string.clone());
        props.insert("user".into(), opt_string.clone());
        props.insert(
            "roles".into(),
            json!({"type": "array", "items": {"type": "string"}}),
        );
        props.insert("principal".into(), opt_string.clone());
        props.insert("hostname".into(), opt_string.clone());
        props.insert("webui_url".into(), opt_string.clone());
        props.insert("labels".into(), labels.clone());
        for (name, schema) in extra {
            props.insert((*name).to_string(), schema.clone());
        }
        props.insert("raw".into(), raw.clone());
        json!({"type": "object", "properties": props, "required": ["framework_id", "raw"]})
    };
    vec![
        TriggerTypeInfo {
            reference: "mesos.task_update",
            description: "A task changed state (TASK_UPDATED). `terminal` is true for FINISHED, \
                          FAILED, KILLED, ERROR, DROPPED, GONE and GONE_BY_OPERATOR; LOST is not \
                          terminal since the task may come back.",
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "task_id": string,
                    "framework_id": opt_string,
                    "agent_id": opt_string,
                    "executor_id": opt_string,
                    "state": {"type": "string", "description": "e.g. TASK_RUNNING, TASK_FAILED"},
                    "reason": opt_string,
                    "source": opt_string,
                    "message": opt_string,
                    "healthy": opt_bool,
                    "timestamp": {"type": ["number", "null"], "description": "seconds since the epoch"},
                    "terminal": {"type": "boolean"},
                    "raw": raw,
                },
                "required": ["task_id", "state", "terminal", "raw"],
            }),
        },
        TriggerTypeInfo {
            reference: "mesos.task_added",
            description: "The master learned of a task (TASK_ADDED): a new launch, or a known \
                          task reported by an agent reregistering after a master failover.",
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "task_id": string,
                    "name": opt_string,
                    "framework_id": opt_string,
                    "agent_id": opt_string,
                    "executor_id": opt_string,
                    "state": opt_string,
                    "labels": labels,
                    "raw": raw,
                },
                "required": ["task_id", "raw"],
            }),
        },
        TriggerTypeInfo {
            reference: "mesos.agent_added",
            description: "An agent registered with the master (AGENT_ADDED).",
            payload_schema: json!({
                "type": "object",
                "properties": {
                    "agent_id": string,
                    "hostname": opt_string,
                    "port": {"type": ["integer", "null"]},
                    "active": opt_bool,
                    "version": opt_string,
                    "pid": opt_string,
                    "raw": raw,
                },
                "required": ["agent_id", "raw"],
            }),
        },
        TriggerTypeInfo {
            reference: "mesos.agent_removed",
            description: "An agent was removed from the cluster (AGENT_REMOVED).",
            payload_schema: json!({
                "type": "object",
                "properties": {"agent_id": string, "raw": raw},
                "required": ["agent_id", "raw"],
            }),
        },
        TriggerTypeInfo {
            reference: "mesos.framework_added",
            description: "A framework subscribed to the master (FRAMEWORK_ADDED).",
            payload_schema: framework_props(&[
                ("active", opt_bool.clone()),
                ("connected", opt_bool.clone()),
                ("recovered", opt_bool.clone()),
            ]),
        },
        TriggerTypeInfo {
            reference: "mesos.framework_updated",
            description: "A framework changed: resubscribed, disconnected, failed over \
                          (FRAMEWORK_UPDATED).",
            payload_schema: framework_props(&[
                ("active", opt_bool.clone()),
                ("connected", opt_bool.clone()),
                ("recovered", opt_bool.clone()),
            ]),
        },
        TriggerTypeInfo {
            reference: "mesos.framework_removed",
            description: "A framework was torn down (FRAMEWORK_REMOVED).",
            payload_schema: framework_props(&[]),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recordio::RecordIoDecoder;

    /// /work/shared/fixtures/mesos-operator-subscribe.recordio, byte for byte.
    const FIXTURE: &[u8] = b"169\n{\"type\":\"SUBSCRIBED\",\"subscribed\":{\"get_state\":{\"get_tasks\":{\"tasks\":[]},\"get_agents\":{\"agents\":[]},\"get_frameworks\":{\"frameworks\":[]}},\"heartbeat_interval_seconds\":15}}20\n{\"type\":\"HEARTBEAT\"}269\n{\"type\":\"TASK_ADDED\",\"task_added\":{\"task\":{\"name\":\"web\",\"task_id\":{\"value\":\"100008580_web.4f1c\"},\"framework_id\":{\"value\":\"49154f1b-8cf6-4421-bf13-8bd11dccd1f1-0001\"},\"agent_id\":{\"value\":\"c3946a13-1f2e-4a5b-9c8d-0e1f2a3b4c5d-S3\"},\"state\":\"TASK_STAGING\",\"resources\":[]}}}338\n{\"type\":\"TASK_UPDATED\",\"task_updated\":{\"framework_id\":{\"value\":\"49154f1b-8cf6-4421-bf13-8bd11dccd1f1-0001\"},\"status\":{\"task_id\":{\"value\":\"100008580_web.4f1c\"},\"state\":\"TASK_RUNNING\",\"source\":\"SOURCE_EXECUTOR\",\"agent_id\":{\"value\":\"c3946a13-1f2e-4a5b-9c8d-0e1f2a3b4c5d-S3\"},\"timestamp\":1764062400.12,\"healthy\":true},\"state\":\"TASK_RUNNING\"}}420\n{\"type\":\"TASK_UPDATED\",\"task_updated\":{\"framework_id\":{\"value\":\"49154f1b-8cf6-4421-bf13-8bd11dccd1f1-0001\"},\"status\":{\"task_id\":{\"value\":\"100008580_web.4f1c\"},\"state\":\"TASK_FAILED\",\"source\":\"SOURCE_EXECUTOR\",\"reason\":\"REASON_COMMAND_EXECUTOR_FAILED\",\"message\":\"Command exited with status 1\",\"agent_id\":{\"value\":\"c3946a13-1f2e-4a5b-9c8d-0e1f2a3b4c5d-S3\"},\"timestamp\":1764062470.83,\"healthy\":false},\"state\":\"TASK_FAILED\"}}105\n{\"type\":\"AGENT_REMOVED\",\"agent_removed\":{\"agent_id\":{\"value\":\"c3946a13-1f2e-4a5b-9c8d-0e1f2a3b4c5d-S3\"}}}20\n{\"type\":\"HEARTBEAT\"}";

    const FRAMEWORK: &str = "49154f1b-8cf6-4421-bf13-8bd11dccd1f1-0001";
    const AGENT: &str = "c3946a13-1f2e-4a5b-9c8d-0e1f2a3b4c5d-S3";
    const TASK: &str = "100008580_web.4f1c";

    fn fixture_events() -> Vec<Value> {
        let mut decoder = RecordIoDecoder::new();
        decoder.push(FIXTURE);
        decoder
            .records()
            .map(|r| serde_json::from_slice(&r.unwrap()).unwrap())
            .collect()
    }

    fn fixture_sensor_events() -> Vec<SensorEvent> {
        fixture_events().iter().flat_map(to_sensor_events).collect()
    }

    fn without_raw(payload: &Value) -> Value {
        let mut payload = payload.clone();
        if let Some(map) = payload.as_object_mut() {
            map.remove("raw");
        }
        payload
    }

    #[test]
    fn fixture_gives_one_trigger_per_change_and_none_for_subscribed_or_heartbeats() {
        let events = fixture_events();
        assert_eq!(events.len(), 7);
        let triggers: Vec<String> = fixture_sensor_events()
            .into_iter()
            .map(|e| e.trigger)
            .collect();
        assert_eq!(
            triggers,
            [
                "mesos.task_added",
                "mesos.task_update",
                "mesos.task_update",
                "mesos.agent_removed"
            ]
        );
        for (event, sensor_events) in events.iter().zip(events.iter().map(to_sensor_events)) {
            for sensor_event in sensor_events {
                assert_eq!(&sensor_event.payload["raw"], event);
            }
        }
    }

    #[test]
    fn task_updated_reads_status_not_the_documented_top_level_ids() {
        let events = fixture_sensor_events();
        let running = &events[1];
        assert_eq!(
            without_raw(&running.payload),
            json!({
                "task_id": TASK,
                "framework_id": FRAMEWORK,
                "agent_id": AGENT,
                "executor_id": null,
                "state": "TASK_RUNNING",
                "reason": null,
                "source": "SOURCE_EXECUTOR",
                "message": null,
                "healthy": true,
                "timestamp": 1764062400.12,
                "terminal": false,
            })
        );
        assert_eq!(
            running.occurred_at,
            DateTime::parse_from_rfc3339("2025-11-25T09:20:00.120Z").unwrap()
        );

        let failed = &events[2];
        assert_eq!(
            without_raw(&failed.payload),
            json!({
                "task_id": TASK,
                "framework_id": FRAMEWORK,
                "agent_id": AGENT,
                "executor_id": null,
                "state": "TASK_FAILED",
                "reason": "REASON_COMMAND_EXECUTOR_FAILED",
                "source": "SOURCE_EXECUTOR",
                "message": "Command exited with status 1",
                "healthy": false,
                "timestamp": 1764062470.83,
                "terminal": true,
            })
        );
    }

    #[test]
    fn task_added_and_agent_removed_have_plain_ids() {
        let events = fixture_sensor_events();
        assert_eq!(
            without_raw(&events[0].payload),
            json!({
                "task_id": TASK,
                "name": "web",
                "framework_id": FRAMEWORK,
                "agent_id": AGENT,
                "executor_id": null,
                "state": "TASK_STAGING",
                "labels": {},
            })
        );
        assert_eq!(without_raw(&events[3].payload), json!({"agent_id": AGENT}));
    }

    #[test]
    fn terminal_states() {
        for state in [
            "TASK_FINISHED",
            "TASK_FAILED",
            "TASK_KILLED",
            "TASK_ERROR",
            "TASK_DROPPED",
            "TASK_GONE",
            "TASK_GONE_BY_OPERATOR",
        ] {
            assert!(is_terminal_state(state), "{state}");
        }
        for state in [
            "TASK_LOST",
            "TASK_UNREACHABLE",
            "TASK_RUNNING",
            "TASK_STAGING",
            "TASK_STARTING",
            "TASK_KILLING",
            "TASK_UNKNOWN",
        ] {
            assert!(!is_terminal_state(state), "{state}");
        }
    }

    #[test]
    fn top_level_state_wins_over_the_status_state() {
        let event = json!({"type": "TASK_UPDATED", "task_updated": {
            "framework_id": {"value": "f"},
            "status": {"task_id": {"value": "t"}, "state": "TASK_RUNNING"},
            "state": "TASK_KILLED"}});
        let payload = &to_sensor_events(&event)[0].payload;
        assert_eq!(payload["state"], "TASK_KILLED");
        assert_eq!(payload["terminal"], true);
    }

    #[test]
    fn task_added_flattens_labels() {
        let event = json!({"type": "TASK_ADDED", "task_added": {"task": {
            "name": "api", "task_id": {"value": "api.1"}, "framework_id": {"value": "f"},
            "agent_id": {"value": "a"}, "state": "TASK_STAGING",
            "labels": {"labels": [{"key": "app", "value": "shop"}, {"key": "canary"}]}}}});
        let payload = &to_sensor_events(&event)[0].payload;
        assert_eq!(payload["labels"], json!({"app": "shop", "canary": null}));
    }

    #[test]
    fn agent_and_framework_events() {
        let agent = json!({"type": "AGENT_ADDED", "agent_added": {"agent": {
            "agent_info": {"hostname": "node-7", "port": 5051, "id": {"value": "S7"}},
            "active": true, "version": "1.11.0", "pid": "slave(1)@10.0.0.7:5051"}}});
        assert_eq!(
            without_raw(&to_sensor_events(&agent)[0].payload),
            json!({"agent_id": "S7", "hostname": "node-7", "port": 5051, "active": true,
                   "version": "1.11.0", "pid": "slave(1)@10.0.0.7:5051"})
        );

        let info = json!({"user": "root", "name": "marathon", "id": {"value": "F1"},
                          "role": "ops", "principal": "marathon", "hostname": "m1",
                          "webui_url": "http://m1:8080"});
        let expected_info = json!({"framework_id": "F1", "name": "marathon", "user": "root",
            "roles": ["ops"], "principal": "marathon", "hostname": "m1",
            "webui_url": "http://m1:8080", "labels": {}});
        for (event_type, body, trigger) in [
            (
                "FRAMEWORK_ADDED",
                "framework_added",
                "mesos.framework_added",
            ),
            (
                "FRAMEWORK_UPDATED",
                "framework_updated",
                "mesos.framework_updated",
            ),
        ] {
            let event = json!({"type": event_type, body: {"framework": {
                "framework_info": info, "active": true, "connected": false, "recovered": false}}});
            let sensor_event = &to_sensor_events(&event)[0];
            assert_eq!(sensor_event.trigger, trigger);
            let mut expected = expected_info.clone();
            expected["active"] = json!(true);
            expected["connected"] = json!(false);
            expected["recovered"] = json!(false);
            assert_eq!(without_raw(&sensor_event.payload), expected);
        }

        let removed = json!({"type": "FRAMEWORK_REMOVED", "framework_removed": {
            "framework_info": {"name": "spark", "id": {"value": "F2"}, "roles": ["a", "b"]}}});
        let payload = without_raw(&to_sensor_events(&removed)[0].payload);
        assert_eq!(payload["framework_id"], "F2");
        assert_eq!(payload["roles"], json!(["a", "b"]));
    }

    #[test]
    fn unknown_and_malformed_events() {
        assert!(to_sensor_events(&json!({"type": "HEARTBEAT"})).is_empty());
        assert!(to_sensor_events(&json!({"type": "OPERATION_UPDATED"})).is_empty());
        assert!(to_sensor_events(&json!("not an object")).is_empty());
        // A known type without its body is still reported, with nulls and the raw event.
        let events = to_sensor_events(&json!({"type": "TASK_UPDATED"}));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].payload["task_id"], Value::Null);
        assert_eq!(events[0].payload["terminal"], false);
    }

    #[test]
    fn odd_timestamps_do_not_panic() {
        for timestamp in [json!(-1e300), json!(1e300), json!(-0.5), json!("x")] {
            let event = json!({"type": "TASK_UPDATED", "task_updated": {
                "status": {"task_id": {"value": "t"}, "state": "TASK_RUNNING", "timestamp": timestamp}}});
            assert_eq!(to_sensor_events(&event).len(), 1);
        }
    }

    #[test]
    fn heartbeat_interval_from_subscribed() {
        let subscribed = |v: Value| json!({"type": "SUBSCRIBED", "subscribed": {"heartbeat_interval_seconds": v}});
        assert_eq!(
            heartbeat_interval(&subscribed(json!(0.2))),
            Duration::from_millis(200)
        );
        assert_eq!(
            heartbeat_interval(&json!({"type": "SUBSCRIBED", "subscribed": {}})),
            Duration::from_secs(15)
        );
        for bad in [json!(0), json!(-3), json!("15")] {
            assert_eq!(
                heartbeat_interval(&subscribed(bad)),
                Duration::from_secs(15)
            );
        }
        assert_eq!(
            heartbeat_interval(&subscribed(json!(1e20))),
            Duration::from_secs(3600)
        );
    }

    fn settings(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn build_error(value: Value) -> String {
        match MesosSensor::from_settings(&settings(value)) {
            Ok(_) => panic!("settings accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn settings_accept_one_or_several_masters() {
        let one =
            MesosSensor::from_settings(&settings(json!({"master": "http://m1:5050"}))).unwrap();
        assert_eq!(one.masters[0].as_str(), "http://m1:5050/api/v1");
        assert_eq!(one.heartbeat_timeout_factor, 5.0);
        assert!(one.credentials.is_none());

        let many = MesosSensor::from_settings(&settings(json!({
            "master": ["http://m1:5050/", "https://proxy/mesos", "http://m3:5050/api/v1"],
            "heartbeat_timeout_factor": 3,
            "principal": "ops", "secret": "s3cret",
        })))
        .unwrap();
        let urls: Vec<&str> = many.masters.iter().map(Url::as_str).collect();
        assert_eq!(
            urls,
            [
                "http://m1:5050/api/v1",
                "https://proxy/mesos/api/v1",
                "http://m3:5050/api/v1"
            ]
        );
        assert_eq!(many.heartbeat_timeout_factor, 3.0);
        assert!(many.credentials.is_some());
    }

    #[test]
    fn settings_errors_name_the_setting() {
        let cases = [
            (
                json!({"master": "http://m:5050", "mastre": "x"}),
                "`mastre`",
            ),
            (json!({}), "`master` is required"),
            (json!({"master": []}), "`master` lists no URL"),
            (json!({"master": 5050}), "`master` must be a URL"),
            (json!({"master": ["http://m", 1]}), "every entry"),
            (json!({"master": "m1:5050"}), "http:// or https://"),
            (json!({"master": "mesos-master"}), "is not a URL"),
            (
                json!({"master": "http://m", "heartbeat_timeout_factor": 0.5}),
                "`heartbeat_timeout_factor`",
            ),
            (
                json!({"master": "http://m", "heartbeat_timeout_factor": "5"}),
                "`heartbeat_timeout_factor`",
            ),
            (
                json!({"master": "http://m", "principal": "ops"}),
                "needs `secret`",
            ),
            (
                json!({"master": "http://m", "secret": "pw"}),
                "needs `principal`",
            ),
        ];
        for (value, expected) in cases {
            let error = build_error(value.clone());
            assert!(error.contains(expected), "{value}: {error}");
        }
        let error = build_error(json!({"master": "http://m", "secret": 12345}));
        assert!(!error.contains("12345"), "the secret leaked: {error}");
    }

    #[test]
    fn trigger_types_cover_every_emitted_trigger() {
        let types = trigger_types();
        let refs: Vec<&str> = types.iter().map(|t| t.reference).collect();
        for event in fixture_sensor_events() {
            assert!(refs.contains(&event.trigger.as_str()), "{}", event.trigger);
        }
        assert_eq!(refs.len(), 7);
        for info in &types {
            let properties = info.payload_schema["properties"].as_object().unwrap();
            assert!(properties.contains_key("raw"), "{}", info.reference);
        }
    }
}
