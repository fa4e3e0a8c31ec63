//! The HTTP side of capacity alerts: `POST /api/v1/webhooks/alertmanager` (Prometheus
//! Alertmanager's `webhook_configs`) and `POST /api/v1/webhooks/grafana` (Grafana alerting's
//! webhook contact point). Each request is authenticated the way its sender can authenticate
//! (bearer token, basic auth, or an HMAC signature), parsed into one event per alert by
//! `squall_sensors::{alertmanager, grafana}`, freed of repeat notifications, and stored as
//! trigger instances (`alertmanager.alert`, `grafana.alert`).
//!
//! It must never answer 2xx before every accepted alert is durable (Alertmanager treats 2xx as
//! delivered and 5xx as "retry"), never answer 4xx to a storage failure (4xx is not retried),
//! and never let a failed store mark an alert as seen (its retry would then be dropped as a
//! duplicate). Secrets never reach a log line or an error message.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use squall_sensors::SensorEvent;

use crate::api::{ApiError, AppState};
use crate::model::TriggerInstance;
use crate::pipeline::{Engine, EngineError};
use crate::signatures::SignatureCheck;

/// Five minutes: long enough to swallow the retries and group re-sends of one incident,
/// short enough that a still-firing alert is announced again as a reminder.
pub const DEFAULT_DEDUP_WINDOW_SECONDS: u64 = 300;

fn default_dedup_window() -> u64 {
    DEFAULT_DEDUP_WINDOW_SECONDS
}

/// How squall receives one alert sender's webhooks (`alertmanager:` or `grafana:` in the
/// settings file). Every field is optional; with no credentials configured the receiver is
/// guarded only by the API's own authentication.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertReceiverConfig {
    /// Require `Authorization: Bearer <token>` (Alertmanager: `http_config.authorization`;
    /// Grafana: the webhook's "Authorization Header - Credentials").
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Require HTTP basic auth (Alertmanager: `http_config.basic_auth`; Grafana: the webhook's
    /// username and password). With `bearer_token` too, either one is accepted.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
    /// Require a signature over the raw body, e.g. `{scheme: grafana, secret: ...}` for
    /// Grafana's HMAC. Checked in addition to the credentials above.
    #[serde(default)]
    pub signature: Option<SignatureCheck>,
    /// A notification of an alert already stored with the same status (same fingerprint and
    /// start) less than this many seconds ago makes no new trigger instance. 0 disables.
    #[serde(default = "default_dedup_window")]
    pub dedup_window_seconds: u64,
}

impl Default for AlertReceiverConfig {
    fn default() -> Self {
        AlertReceiverConfig {
            bearer_token: None,
            basic: None,
            signature: None,
            dedup_window_seconds: DEFAULT_DEDUP_WINDOW_SECONDS,
        }
    }
}

impl AlertReceiverConfig {
    /// Whether this receiver checks its sender itself (so the API key check may be skipped:
    /// Alertmanager and Grafana can send only one `Authorization` header).
    pub fn has_credentials(&self) -> bool {
        self.bearer_token.is_some() || self.basic.is_some() || self.signature.is_some()
    }

    /// Checks the settings: credentials anyone could give (an empty token, password or secret)
    /// are refused at start, since a receiver with credentials takes no API key.
    pub fn validate(&self) -> Result<(), String> {
        if self.bearer_token.as_deref().is_some_and(str::is_empty) {
            return Err("bearer_token is empty: anyone could send it".into());
        }
        if let Some(basic) = &self.basic {
            if basic.username.is_empty() || basic.password.is_empty() {
                return Err("basic needs a username and a password, neither empty".into());
            }
        }
        if let Some(signature) = &self.signature {
            signature
                .validate()
                .map_err(|e| format!("signature: {e}"))?;
        }
        Ok(())
    }
}

/// Written by hand so that tokens and passwords never reach a log line.
impl fmt::Debug for AlertReceiverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertReceiverConfig")
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| MASK))
            .field("basic", &self.basic)
            .field("signature", &self.signature)
            .field("dedup_window_seconds", &self.dedup_window_seconds)
            .finish()
    }
}

const MASK: &str = "********";

/// HTTP basic auth credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &MASK)
            .finish()
    }
}

/// The alerts squall stored recently, to recognise repeat notifications. Alertmanager re-sends
/// every firing alert of a group every `repeat_interval`, with every change to the group, and
/// on retries; Grafana does the same. Kept in memory: after a restart the first repeat of each
/// alert is stored again, which errs on the side of running a rule once more.
#[derive(Default)]
pub struct AlertDedup {
    seen: Mutex<HashMap<DedupKey, Seen>>,
}

/// One alert occurrence: the same fingerprint (labels) and start is the same incident.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DedupKey {
    source: String,
    fingerprint: String,
    starts_at: String,
}

/// The last status stored for an alert, and until when a repeat of it is a duplicate.
#[derive(Debug, Clone)]
struct Seen {
    status: String,
    until: Instant,
}

impl AlertDedup {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<DedupKey, Seen>) -> T) -> T {
        // A panic elsewhere while holding the lock leaves a consistent map (every change is a
        // single insert or remove), so a poisoned lock is still usable.
        match self.seen.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Decides whether an alert notification is new. A new one is recorded at once, so that
    /// a concurrent copy of the same notification counts as a duplicate; the caller must
    /// [`AlertDedup::release`] it with the returned previous record if storing fails. The
    /// window counts from the stored instance: duplicates do not extend it.
    fn admit(&self, key: &DedupKey, status: &str, now: Instant, window: Duration) -> Admission {
        self.with(|seen| match seen.get(key) {
            Some(s) if s.status == status && s.until > now => Admission::Duplicate,
            previous => {
                let previous = previous.cloned();
                seen.insert(
                    key.clone(),
                    Seen {
                        status: status.to_string(),
                        until: now + window,
                    },
                );
                Admission::New { previous }
            }
        })
    }

    /// Forgets alerts whose window has passed. Called once per notification rather than on a
    /// timer: the map changes only when notifications arrive, and a sweep costs less than one
    /// store write.
    fn sweep(&self, now: Instant) {
        self.with(|seen| seen.retain(|_, s| s.until > now));
    }

    /// Undoes [`AlertDedup::admit`] for an alert that could not be stored.
    fn release(&self, key: &DedupKey, previous: Option<Seen>) {
        self.with(|seen| match previous {
            Some(p) => {
                seen.insert(key.clone(), p);
            }
            None => {
                seen.remove(key);
            }
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.with(|seen| seen.len())
    }
}

#[derive(Debug)]
enum Admission {
    Duplicate,
    New { previous: Option<Seen> },
}

/// The process's memory of recent alerts. (A field of `AppState` would scope it to one API
/// instance; `squall run` has exactly one, so the two are the same there.)
fn process_dedup() -> &'static Arc<AlertDedup> {
    static DEDUP: OnceLock<Arc<AlertDedup>> = OnceLock::new();
    DEDUP.get_or_init(Arc::default)
}

/// Handles `POST /api/v1/webhooks/{source}` for `alertmanager` and `grafana`.
pub async fn handle(
    state: &AppState,
    source: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let config = state
        .config
        .alert_receivers
        .get(source)
        .cloned()
        .unwrap_or_default();
    handle_with(
        &state.engine,
        &config,
        process_dedup(),
        source,
        headers,
        body,
    )
    .await
}

/// [`handle`] with its collaborators given, so tests can use their own memory of alerts.
pub async fn handle_with(
    engine: &Arc<Engine>,
    config: &AlertReceiverConfig,
    dedup: &Arc<AlertDedup>,
    source: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let parse: fn(&Value) -> Result<Vec<SensorEvent>, String> = match source {
        "alertmanager" => squall_sensors::alertmanager::to_sensor_events,
        "grafana" => squall_sensors::grafana::to_sensor_events,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no alert receiver '{other}' (there are: alertmanager, grafana)"),
            ))
        }
    };
    authenticate(config, headers, body).map_err(|e| {
        tracing::warn!(source, error = %e, "alert webhook refused");
        ApiError::new(StatusCode::UNAUTHORIZED, e)
    })?;
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            // serde_json's message already names the line and column.
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let events = parse(&parsed).map_err(|e| malformed(source, &e))?;

    let window = Duration::from_secs(config.dedup_window_seconds);
    let now = Instant::now();
    let mut duplicates = 0usize;
    // Admitting and spawning happen without an await in between, and each task releases its
    // own reservation on failure: a dropped request cannot leave an alert marked as seen
    // without its trigger instance on disk.
    let mut tasks = Vec::new();
    dedup.sweep(now);
    for event in events {
        let reservation = if window.is_zero() {
            None
        } else {
            let key = dedup_key(source, &event.payload);
            let status = string_field(&event.payload, "status");
            match dedup.admit(&key, &status, now, window) {
                Admission::Duplicate => {
                    duplicates += 1;
                    continue;
                }
                Admission::New { previous } => Some((key, previous)),
            }
        };
        let mut ti = TriggerInstance::new(&event.trigger, None, event.payload, source);
        ti.occurrence_time = event.occurred_at;
        let engine = engine.clone();
        let dedup = dedup.clone();
        tasks.push(tokio::spawn(async move {
            let stored = engine.ingest(ti).await;
            if stored.is_err() {
                if let Some((key, previous)) = reservation {
                    dedup.release(&key, previous);
                }
            }
            stored
        }));
    }

    let mut ids = Vec::with_capacity(tasks.len());
    let mut failure: Option<ApiError> = None;
    for task in tasks {
        match task.await {
            Ok(Ok(ti)) => ids.push(Value::String(ti.id.clone())),
            Ok(Err(e)) => {
                failure.get_or_insert(store_failure(source, e));
            }
            Err(e) => {
                failure.get_or_insert(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("storing a {source} alert failed: {e}"),
                ));
            }
        }
    }
    if let Some(mut e) = failure {
        tracing::error!(source, stored = ids.len(), error = %e.error, "alert notification not fully stored");
        // The sender retries the whole notification; the alerts stored already will then be
        // recognised as duplicates, so saying which ones were stored helps only humans.
        e.detail = json!({"stored": ids, "duplicates": duplicates});
        return Err(e);
    }
    tracing::info!(
        source,
        accepted = ids.len(),
        duplicates,
        "alert notification stored"
    );
    Ok((
        StatusCode::OK,
        Json(json!({"accepted": ids.len(), "duplicates": duplicates, "trigger_instances": ids})),
    )
        .into_response())
}

/// A 400 naming the JSON path the parser reported (its errors read `<path>: <problem>`).
fn malformed(source: &str, error: &str) -> ApiError {
    let what = match source {
        "grafana" => "a Grafana alerting webhook notification (version 1)",
        _ => "an Alertmanager webhook notification (version 4)",
    };
    let (path, message) = error.split_once(": ").unwrap_or(("$", error));
    let mut e = ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("the body is not {what}: {error}"),
    );
    e.detail = json!({"path": path, "message": message});
    e
}

/// Any failure to store is a 5xx so that the sender retries: 503 when squall is stopping or
/// the disk would not flush (both pass), 500 otherwise.
fn store_failure(source: &str, e: EngineError) -> ApiError {
    let status = match e {
        EngineError::ShuttingDown | EngineError::Durability(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(
        status,
        format!("the {source} notification was not stored, retry it: {e}"),
    )
}

fn string_field(payload: &Value, key: &str) -> String {
    payload
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn dedup_key(source: &str, payload: &Value) -> DedupKey {
    DedupKey {
        source: source.to_string(),
        fingerprint: string_field(payload, "fingerprint"),
        starts_at: string_field(payload, "starts_at"),
    }
}

/// Checks the credentials and the signature a receiver requires. The error says what is
/// missing or wrong, never what was expected.
fn authenticate(
    config: &AlertReceiverConfig,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    if config.bearer_token.is_some() || config.basic.is_some() {
        check_authorization(config, headers)?;
    }
    if let Some(check) = &config.signature {
        let lower: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        check
            .verify(&lower, body, Utc::now())
            .map_err(|e| format!("signature check failed: {e}"))?;
    }
    Ok(())
}

fn check_authorization(config: &AlertReceiverConfig, headers: &HeaderMap) -> Result<(), String> {
    let wanted = match (&config.bearer_token, &config.basic) {
        (Some(_), Some(_)) => "Authorization: Bearer <token> or Basic <credentials>",
        (Some(_), None) => "Authorization: Bearer <token>",
        _ => "Authorization: Basic <credentials>",
    };
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("this receiver requires credentials: missing {wanted}"))?;
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if let Some(token) = &config.bearer_token {
            return if same_secret(credentials, token) {
                Ok(())
            } else {
                Err("the bearer token is wrong".to_string())
            };
        }
    } else if scheme.eq_ignore_ascii_case("basic") {
        if let Some(basic) = &config.basic {
            let decoded = BASE64
                .decode(credentials)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or("the basic credentials are not base64 of \"username:password\"")?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or("the basic credentials are not base64 of \"username:password\"")?;
            // Both are compared, whatever the first gives, so timing tells nothing.
            let user_ok = same_secret(user, &basic.username);
            let password_ok = same_secret(password, &basic.password);
            return if user_ok && password_ok {
                Ok(())
            } else {
                Err("the basic auth username or password is wrong".to_string())
            };
        }
    }
    Err(format!(
        "the Authorization scheme \"{scheme}\" is not accepted here: send {wanted}"
    ))
}

/// Compares in constant time; hashing first also hides the secret's length.
fn same_secret(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packs::Catalog;
    use crate::store::Store;
    use axum::http::HeaderValue;
    use squall_actions::{Limits, RhaiRuntime};

    const AM_FIXTURE: &str = include_str!("../../sensors/tests/fixtures/alertmanager-webhook.json");

    const GRAFANA_FIXTURE: &str = include_str!("../../sensors/tests/fixtures/grafana-webhook.json");

    /// Waits for the rules loop to put an accepted (journaled) instance into the store.
    async fn stored(engine: &Engine, id: &str) -> crate::model::TriggerInstance {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(ti) = engine.store.trigger_instance(id).unwrap() {
                return ti;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "instance {id} never reached the store"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A started engine on a temporary store (the flusher must run for ingest to return).
    fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let store = Arc::new(Store::open(dir, Some([7; 32])).unwrap());
        let runtime = Arc::new(RhaiRuntime::new(Limits::default()));
        let journal = crate::journal::Journal::open(&dir.join("journal")).unwrap();
        let (engine, rx) = Engine::new(store, journal, Catalog::default(), runtime);
        engine.start(rx, 1).unwrap();
        engine
    }

    async fn post(
        engine: &Arc<Engine>,
        config: &AlertReceiverConfig,
        dedup: &Arc<AlertDedup>,
        source: &str,
        headers: &HeaderMap,
        body: &str,
    ) -> (StatusCode, Value) {
        let r = match handle_with(
            engine,
            config,
            dedup,
            source,
            headers,
            &Bytes::from(body.to_string()),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stores_each_alert_and_drops_repeats_until_the_status_changes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let config = AlertReceiverConfig::default();
        let dedup = Arc::new(AlertDedup::default());
        let none = HeaderMap::new();

        let (status, body) =
            post(&engine, &config, &dedup, "alertmanager", &none, AM_FIXTURE).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["accepted"], 2);
        assert_eq!(body["duplicates"], 0);
        let ids = body["trigger_instances"].as_array().unwrap();
        let first = stored(&engine, ids[0].as_str().unwrap()).await;
        assert_eq!(first.trigger, "alertmanager.alert");
        assert_eq!(first.source, "alertmanager");
        assert_eq!(first.payload["alertname"], "ContainerCPUHigh");
        assert_eq!(first.payload["status"], "firing");
        assert_eq!(
            first.occurrence_time.to_rfc3339(),
            "2026-11-25T10:00:00+00:00"
        );
        let second = stored(&engine, ids[1].as_str().unwrap()).await;
        assert_eq!(
            second.occurrence_time.to_rfc3339(),
            "2026-11-25T09:58:00+00:00"
        );

        // Alertmanager's repeat: nothing new.
        let (status, body) =
            post(&engine, &config, &dedup, "alertmanager", &none, AM_FIXTURE).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["accepted"], 0);
        assert_eq!(body["duplicates"], 2);
        assert_eq!(body["trigger_instances"], json!([]));

        // The firing alert resolves: that one gets through, the other is still a repeat.
        let mut v: Value = serde_json::from_str(AM_FIXTURE).unwrap();
        v["alerts"][0]["status"] = json!("resolved");
        v["alerts"][0]["endsAt"] = json!("2026-11-25T10:30:00Z");
        let (_, body) = post(
            &engine,
            &config,
            &dedup,
            "alertmanager",
            &none,
            &v.to_string(),
        )
        .await;
        assert_eq!(body["accepted"], 1, "{body}");
        assert_eq!(body["duplicates"], 1);
        let resolved = stored(&engine, body["trigger_instances"][0].as_str().unwrap()).await;
        assert_eq!(resolved.payload["status"], "resolved");
        assert_eq!(
            resolved.occurrence_time.to_rfc3339(),
            "2026-11-25T10:30:00+00:00"
        );

        // Another source with the same fingerprints is remembered apart.
        let g = GRAFANA_FIXTURE.replace("5e2a1b0c9d8e7f6a", "c6eadffa33fcdf37");
        let (status, body) = post(&engine, &config, &dedup, "grafana", &none, &g).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["accepted"], 1);
        let ti = stored(&engine, body["trigger_instances"][0].as_str().unwrap()).await;
        assert_eq!(ti.trigger, "grafana.alert");
        assert_eq!(ti.payload["values"]["B"], 0.87);

        // With the window at 0 every notification is stored.
        let off = AlertReceiverConfig {
            dedup_window_seconds: 0,
            ..AlertReceiverConfig::default()
        };
        let (_, body) = post(&engine, &off, &dedup, "alertmanager", &none, AM_FIXTURE).await;
        assert_eq!(body["accepted"], 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn malformed_bodies_are_400_with_the_path_and_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let config = AlertReceiverConfig::default();
        let dedup = Arc::new(AlertDedup::default());
        let none = HeaderMap::new();

        let (status, body) =
            post(&engine, &config, &dedup, "alertmanager", &none, "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"].as_str().unwrap().contains("line 1 column 2"),
            "{body}"
        );

        let mut v: Value = serde_json::from_str(AM_FIXTURE).unwrap();
        v["alerts"][1].as_object_mut().unwrap().remove("labels");
        let (status, body) = post(
            &engine,
            &config,
            &dedup,
            "alertmanager",
            &none,
            &v.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["detail"]["path"], "$.alerts[1].labels");
        assert_eq!(body["detail"]["message"], "missing");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("not an Alertmanager webhook notification (version 4)"));

        // A Grafana body sent to the Alertmanager receiver says which version was expected.
        let (status, body) = post(
            &engine,
            &config,
            &dedup,
            "alertmanager",
            &none,
            GRAFANA_FIXTURE,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["detail"]["path"], "$.version");

        let (status, _) = post(&engine, &config, &dedup, "pagerduty", &none, AM_FIXTURE).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        assert_eq!(dedup.len(), 0);
        assert!(engine
            .store
            .list_trigger_instances(Some("alertmanager.alert"), 10, 0)
            .unwrap()
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_store_failure_is_5xx_and_the_retry_gets_through() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let config = AlertReceiverConfig::default();
        let dedup = Arc::new(AlertDedup::default());
        let none = HeaderMap::new();

        engine.shutdown(Duration::ZERO).await;
        let (status, body) =
            post(&engine, &config, &dedup, "alertmanager", &none, AM_FIXTURE).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body["error"].as_str().unwrap().contains("retry"), "{body}");
        // Nothing is remembered as seen, so Alertmanager's retry is not a duplicate.
        assert_eq!(dedup.len(), 0);

        let dir2 = tempfile::tempdir().unwrap();
        let engine2 = self::engine(dir2.path());
        let (status, body) =
            post(&engine2, &config, &dedup, "alertmanager", &none, AM_FIXTURE).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["accepted"], 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn credentials_are_checked_as_senders_send_them() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let dedup = Arc::new(AlertDedup::default());
        let config: AlertReceiverConfig = serde_json::from_value(json!({
            "bearer_token": "s3cret-token",
            "basic": {"username": "am", "password": "pa:ss"},
            "dedup_window_seconds": 0,
        }))
        .unwrap();

        #[allow(clippy::type_complexity)] // a table of (headers, expected status, expected text)
        let cases: [(&[(&str, &str)], StatusCode, &str); 7] = [
            (
                &[],
                StatusCode::UNAUTHORIZED,
                "missing Authorization: Bearer <token> or Basic <credentials>",
            ),
            (
                &[("Authorization", "Bearer s3cret-token")],
                StatusCode::OK,
                "",
            ),
            (
                &[("Authorization", "bearer   s3cret-token ")],
                StatusCode::OK,
                "",
            ),
            (
                &[("Authorization", "Bearer s3cret-tokeN")],
                StatusCode::UNAUTHORIZED,
                "the bearer token is wrong",
            ),
            // am:pa:ss (the password may hold colons; the username may not, as in RFC 7617).
            (
                &[("Authorization", "Basic YW06cGE6c3M=")],
                StatusCode::OK,
                "",
            ),
            (
                &[("Authorization", "Basic YW06cGFzcw==")],
                StatusCode::UNAUTHORIZED,
                "username or password is wrong",
            ),
            (
                &[("Authorization", "Digest abc")],
                StatusCode::UNAUTHORIZED,
                "scheme \"Digest\" is not accepted",
            ),
        ];
        for (h, expected, message) in cases {
            let (status, body) = post(
                &engine,
                &config,
                &dedup,
                "alertmanager",
                &headers(h),
                AM_FIXTURE,
            )
            .await;
            assert_eq!(status, expected, "{h:?}: {body}");
            if !message.is_empty() {
                let error = body["error"].as_str().unwrap();
                assert!(error.contains(message), "{h:?}: {error}");
                assert!(
                    !error.contains("s3cret") && !error.contains("pa:ss"),
                    "{error}"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn grafana_signature_is_required_when_configured() {
        use hmac::{Hmac, Mac};
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let dedup = Arc::new(AlertDedup::default());
        let config: AlertReceiverConfig = serde_json::from_value(json!({
            "signature": {"scheme": "grafana", "secret": "grafana-secret"},
        }))
        .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"grafana-secret").unwrap();
        mac.update(GRAFANA_FIXTURE.as_bytes());
        let sig: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();

        let (status, body) = post(
            &engine,
            &config,
            &dedup,
            "grafana",
            &HeaderMap::new(),
            GRAFANA_FIXTURE,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body["error"],
            "signature check failed: missing header X-Grafana-Alerting-Signature"
        );
        let signed = headers(&[("X-Grafana-Alerting-Signature", &sig)]);
        let altered = GRAFANA_FIXTURE.replace("0.87", "0.12");
        let (status, body) = post(&engine, &config, &dedup, "grafana", &signed, &altered).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"].as_str().unwrap().contains("does not match"));
        let (status, body) = post(
            &engine,
            &config,
            &dedup,
            "grafana",
            &signed,
            GRAFANA_FIXTURE,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["accepted"], 1);
    }

    #[test]
    fn dedup_window_expires_and_a_status_change_always_passes() {
        let d = AlertDedup::default();
        let key = DedupKey {
            source: "alertmanager".into(),
            fingerprint: "f".into(),
            starts_at: "2026-11-25T10:00:00Z".into(),
        };
        let w = Duration::from_secs(300);
        let t0 = Instant::now();
        assert!(matches!(
            d.admit(&key, "firing", t0, w),
            Admission::New { previous: None }
        ));
        assert!(matches!(
            d.admit(&key, "firing", t0 + Duration::from_secs(299), w),
            Admission::Duplicate
        ));
        // Duplicates do not extend the window: the reminder comes 300 s after the stored one.
        assert!(matches!(
            d.admit(&key, "firing", t0 + Duration::from_secs(300), w),
            Admission::New { .. }
        ));
        let t1 = t0 + Duration::from_secs(300);
        let Admission::New { previous } = d.admit(&key, "resolved", t1 + Duration::from_secs(1), w)
        else {
            panic!("a status change is never a duplicate");
        };
        assert_eq!(previous.unwrap().status, "firing");
        // A different start is a new incident of the same alert.
        let other = DedupKey {
            starts_at: "2026-11-25T11:00:00Z".into(),
            ..key.clone()
        };
        assert!(matches!(
            d.admit(&other, "resolved", t1, w),
            Admission::New { .. }
        ));
        // Old entries are swept.
        assert_eq!(d.len(), 2);
        d.sweep(t1 + Duration::from_secs(300));
        assert_eq!(d.len(), 1);
        d.sweep(t1 + Duration::from_secs(3600));
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn release_restores_what_admit_replaced() {
        let d = AlertDedup::default();
        let key = DedupKey {
            source: "grafana".into(),
            fingerprint: "f".into(),
            starts_at: "s".into(),
        };
        let w = Duration::from_secs(60);
        let t = Instant::now();
        let _ = d.admit(&key, "firing", t, w);
        let Admission::New { previous } = d.admit(&key, "resolved", t, w) else {
            panic!("status changed");
        };
        d.release(&key, previous);
        assert!(matches!(
            d.admit(&key, "firing", t, w),
            Admission::Duplicate
        ));
        let Admission::New { previous } = d.admit(
            &DedupKey {
                starts_at: "x".into(),
                ..key.clone()
            },
            "firing",
            t,
            w,
        ) else {
            panic!("new start");
        };
        d.release(
            &DedupKey {
                starts_at: "x".into(),
                ..key
            },
            previous,
        );
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn config_defaults_strictness_and_masking() {
        let c: AlertReceiverConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c.dedup_window_seconds, 300);
        assert!(!c.has_credentials());
        assert_eq!(AlertReceiverConfig::default().dedup_window_seconds, 300);
        let e = serde_yaml::from_str::<AlertReceiverConfig>("bearer: x").unwrap_err();
        assert!(e.to_string().contains("unknown field `bearer`"), "{e}");
        let e = serde_yaml::from_str::<AlertReceiverConfig>("basic: {username: a}").unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
        let c: AlertReceiverConfig = serde_yaml::from_str(
            "bearer_token: tok-123\nbasic: {username: am, password: pw-456}\nsignature: {scheme: grafana, secret: sec-789}\ndedup_window_seconds: 0",
        )
        .unwrap();
        assert!(c.has_credentials());
        assert_eq!(c.dedup_window_seconds, 0);
        let shown = format!("{c:?}");
        for secret in ["tok-123", "pw-456", "sec-789"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("am"), "{shown}");
    }
}
