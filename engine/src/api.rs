//! The HTTP API: st2's paths and field names under `/api/v1`, plus `/healthz` and `/metrics`.
//!
//! Handlers translate between HTTP and the engine; they never touch sled directly except
//! through the store's narrow interface, and every error goes through [`ApiError`], which
//! answers `{"error": "...", "detail": ..., "faultstring": "..."}` with the right status
//! (`faultstring` is where st2's clients read the message). What st2's own CLI needs besides
//! is in `api/st2.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use squall_rules::{EvalEnv, NoMatch};

use crate::model::{Execution, ExecutionStatus, TriggerInstance};
use crate::pipeline::{
    execution_json, is_workflow, trigger_instance_json, Control, Engine, EngineError,
};
use crate::signatures::SignatureCheck;
use crate::store::{ExecutionFilter, StoreKv};

mod aliases;
mod body_limit;
mod executions;
mod inquiries;
mod keys;
use aliases::*;
use executions::*;
use keys::*;
mod chat;
mod st2;
mod stream;

/// What a pack reload reports.
pub type ReloadFn = Arc<dyn Fn() -> Value + Send + Sync>;

/// Enables or disables a rule by reference, kept in the store and in force at once (st2's
/// `PUT /rules/{id}`); the error says why not.
/// Installs packs (`SOURCE[@REF]` each) and reloads; answers what was installed or why not.
pub type InstallFn = Arc<dyn Fn(Vec<String>) -> Value + Send + Sync>;

pub type RuleEnabledFn = Arc<dyn Fn(&str, bool) -> Result<(), String> + Send + Sync>;

/// Settings the API needs.
pub struct ApiConfig {
    /// Require an API key on every request but `/healthz` and `/metrics`.
    pub auth: bool,
    /// Largest webhook body accepted, in bytes.
    pub body_limit: usize,
    /// Signature checks per webhook url.
    pub signatures: HashMap<String, SignatureCheck>,
    /// Settings of the Alertmanager and Grafana receivers, by source name.
    pub alert_receivers: HashMap<String, crate::alerts::AlertReceiverConfig>,
    pub reload: ReloadFn,
    pub set_rule_enabled: RuleEnabledFn,
    pub install: InstallFn,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Arc<ApiConfig>,
    /// Signed deliveries already accepted (see [`crate::signatures::Deliveries`]).
    pub deliveries: Arc<crate::signatures::Deliveries>,
    /// Becomes true once squall has stopped its work: event streams end then, so that open
    /// streams do not hold the shutdown back.
    pub streams_end: tokio::sync::watch::Receiver<bool>,
    /// The web console's templates and sessions.
    pub console: Arc<crate::console::ConsoleState>,
}

/// Every API error: a status and `{"error", "detail", "faultstring"}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub detail: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            detail: Value::Null,
        }
    }
    fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }
    fn bad_request(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let faultstring = st2::faultstring(&self.error, &self.detail);
        (
            self.status,
            Json(json!({"error": self.error, "detail": self.detail, "faultstring": faultstring})),
        )
            .into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::InvalidParameters { action, errors } => ApiError {
                status: StatusCode::BAD_REQUEST,
                error: format!("invalid parameters for action '{action}'"),
                detail: Value::Array(
                    errors
                        .iter()
                        .map(|p| json!({"parameter": p.parameter, "message": p.message}))
                        .collect(),
                ),
            },
            EngineError::UnknownAction(a) => {
                ApiError::bad_request(format!("no loaded pack provides action '{a}'"))
            }
            EngineError::DisabledAction(a) => {
                ApiError::bad_request(format!("action '{a}' is disabled"))
            }
            EngineError::NoExecution(id) => ApiError::not_found(format!("no execution {id}")),
            EngineError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "squall is shutting down")
            }
            EngineError::NotWorkflow(id) => ApiError::bad_request(format!(
                "execution {id} is not a workflow: only workflows can be paused, resumed or re-run from a task"
            )),
            EngineError::Workflow(message) => ApiError::new(StatusCode::CONFLICT, message),
            EngineError::InquiryRefused(message) => ApiError::bad_request(message),
            EngineError::InquiryForbidden(message) => ApiError::new(StatusCode::FORBIDDEN, message),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        // The error names the store already.
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The router, with authentication when configured.
pub fn router(state: AppState) -> Router {
    let hook_limit = state.config.body_limit;
    let api = Router::new()
        .route(
            "/api/v1/executions",
            get(list_executions).post(create_execution),
        )
        .route(
            "/api/v1/executions/{id}",
            get(get_execution)
                .put(update_execution)
                .delete(cancel_execution),
        )
        .route("/api/v1/executions/{id}/re_run", post(rerun_execution))
        .route("/api/v1/executions/{id}/children", get(execution_children))
        .route("/api/v1/executions/{id}/output", get(execution_output))
        .route("/api/v1/triggerinstances", get(list_trigger_instances))
        .route("/api/v1/triggerinstances/{id}", get(get_trigger_instance))
        .route("/api/v1/triggertypes", get(list_trigger_types))
        .route("/api/v1/triggertypes/{trigger_ref}", get(get_trigger_type))
        .route("/api/v1/rules", get(list_rules))
        .route("/api/v1/rules/{rule_ref}", get(get_rule).put(st2::put_rule))
        .route("/api/v1/rules/{rule_ref}/test", post(test_rule))
        .route("/api/v1/ruleenforcements", get(list_enforcements))
        .route("/api/v1/ruleenforcements/{id}", get(get_enforcement))
        .route("/api/v1/actions", get(list_actions))
        .route("/api/v1/actions/{action_ref}", get(get_action))
        .route("/api/v1/packs", get(list_packs))
        .route("/api/v1/packs/reload", post(reload_packs))
        .route("/api/v1/packs/install", post(install_packs))
        .route("/api/v1/packs/{pack_ref}", get(get_pack))
        .route("/api/v1/inquiries", get(inquiries::list_inquiries))
        .route(
            "/api/v1/inquiries/{id}",
            get(inquiries::get_inquiry).put(inquiries::respond_inquiry),
        )
        .route("/api/v1/keys", get(list_keys))
        .route(
            "/api/v1/keys/{name}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/api/v1/apikeys", get(list_apikeys).post(create_apikey))
        .route("/api/v1/apikeys/{id}", axum::routing::delete(delete_apikey))
        .route("/api/v1/sensors", get(list_sensors))
        .route("/api/v1/workers", get(list_workers))
        .route("/api/v1/capacity", get(capacity))
        .route("/api/v1/sensortypes", get(st2::list_sensor_types))
        .route(
            "/api/v1/sensortypes/{sensor_ref}",
            get(st2::get_sensor_type),
        )
        .route("/api/v1/runnertypes", get(st2::list_runner_types))
        .route("/api/v1/runnertypes/{name}", get(st2::get_runner_type))
        .route("/api/v1/actionalias", get(list_aliases))
        .route("/api/v1/actionalias/match", post(match_alias))
        .route(
            "/api/v1/actionalias/help",
            get(alias_help_query).post(alias_help_body),
        )
        .route("/api/v1/actionalias/{ref_or_id}", get(get_alias))
        .route("/api/v1/aliasexecution", post(execute_alias))
        .route(
            "/api/v1/aliasexecution/match_and_execute",
            post(match_and_execute_alias),
        )
        .route("/api/v1/user", get(st2::current_user))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/stream", get(stream::stream))
        // Before the webhook route is added: a webhook's answer is never filtered.
        .layer(axum::middleware::from_fn(st2::attributes))
        .route(
            "/api/v1/webhooks/{*url}",
            post(webhook)
                .layer(axum::extract::DefaultBodyLimit::max(
                    state.config.body_limit,
                ))
                .layer(axum::middleware::from_fn(move |req, next| {
                    body_limit::refuse_declared_over(hook_limit, None, req, next)
                }))
                .layer(axum::middleware::map_response(move |r: Response| {
                    json_errors(r, BodyLimit::Webhook(hook_limit))
                })),
        );
    // The console reads through these routes in process, after its own request passed the
    // authentication below.
    state.console.set_api(api.clone().with_state(state.clone()));
    let api = api.merge(crate::console::routes());
    // Without authentication the check is left out of the request's path altogether.
    let api = if state.config.auth {
        api.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
    } else {
        api
    };
    // The webhook route has its own limit (above), the setting's; the rest of the API this one.
    let api_limit = state.config.body_limit.max(API_BODY_LIMIT);
    let api = api
        .layer(axum::extract::DefaultBodyLimit::max(api_limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            body_limit::refuse_declared_over(api_limit, Some(WEBHOOKS), req, next)
        }));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        // st2's `login`: answered without a key, since it issues nothing.
        .route("/auth/v1/tokens", post(st2::issue_token))
        // Chat platforms sign their requests (or send a token) instead of an API key.
        .route("/api/v1/chatops/slack/commands", post(chat::slack_command))
        .route("/api/v1/chatops/slack/events", post(chat::slack_events))
        .route("/api/v1/chatops/mattermost", post(chat::mattermost_command))
        .merge(crate::console::public_routes())
        .merge(api)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::map_response(move |r: Response| {
            json_errors(r, BodyLimit::Api(api_limit))
        }))
        .with_state(state);
    // st2's CLI writes paths that squall routes otherwise (`/api/v1/executions/`, `/v1/...`):
    // they are rewritten before routing.
    Router::new().fallback_service(tower::ServiceExt::map_request(app, st2::st2_paths))
}

/// Where webhooks are posted: their route has a limit of its own.
const WEBHOOKS: &str = "/api/v1/webhooks/";

/// The largest body the API takes outside webhooks (or `webhook_body_limit`, if larger).
const API_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Which body limit a request was under, to say so in its 413.
#[derive(Clone, Copy)]
enum BodyLimit {
    Webhook(usize),
    Api(usize),
}

/// 200 "ok" once squall is ready and while it can accept work; 503 with the reason when it
/// cannot (its journal refuses writes after a disk failure).
async fn healthz(State(state): State<AppState>) -> Response {
    match state.engine.unhealthy() {
        None => "ok".into_response(),
        Some(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// Errors that axum itself answers (a body over the limit, a query string that does not
/// parse, a method a path does not take) in the API's own shape: `{"error", "detail",
/// "faultstring"}`.
async fn json_errors(response: Response, body_limit: BodyLimit) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json {
        // JSON already, or a console page saying what went wrong.
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        match body_limit {
            BodyLimit::Webhook(n) => format!(
                "the request body is larger than the limit of {n} bytes (setting webhook_body_limit)"
            ),
            BodyLimit::Api(n) => {
                format!("the request body is larger than the API's limit of {n} bytes")
            }
        }
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        match parts
            .headers
            .get(axum::http::header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
        {
            Some(allowed) => format!("this path does not take that method (it takes {allowed})"),
            None => "this path does not take that method".to_string(),
        }
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut out = ApiError::new(status, error).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// The user whose API key authenticated the request (only with authentication on).
#[derive(Clone)]
struct Caller(String);

/// The user whose keys may act for other users (as st2's admins may): the first key's,
/// unless it was made for someone else.
const ADMIN: &str = "admin";

/// Who a request acts as: its API key's user; without authentication, the user the request
/// names, else `fallback`. With a key, naming another user is refused unless the key is
/// [`ADMIN`]'s.
fn acting_user(
    caller: Option<&Caller>,
    named: Option<String>,
    fallback: &str,
) -> ApiResult<String> {
    match (caller, named) {
        (Some(Caller(user)), Some(named)) if named != *user && user != ADMIN => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("the API key is user '{user}''s: it cannot act as user '{named}' (only {ADMIN}'s keys can)"),
        )),
        (Some(_), Some(named)) => Ok(named),
        (Some(Caller(user)), _) => Ok(user.clone()),
        (None, named) => Ok(named.unwrap_or_else(|| fallback.to_string())),
    }
}

async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if alert_receiver_checks_itself(&state, &req) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "st2-api-key" || *k == "api_key")
            .map(|(_, v)| v.to_string())
    });
    let key = headers
        .get("st2-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().split_once(' '))
                // The scheme's name is case-insensitive (RFC 9110).
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim().to_string())
        })
        .or(from_query);
    let mut req = req;
    let Some(key) = key else {
        if bootstrap_allowed(&state, &req) {
            return next.run(req).await;
        }
        // The console's session cookie: a request that changes something must also come from
        // the console's own origin (the cookie alone is no proof of intent).
        if let Some(user) =
            crate::console::token_of(req.headers()).and_then(|t| state.console.sessions.user(&t))
        {
            let safe = matches!(
                *req.method(),
                axum::http::Method::GET | axum::http::Method::HEAD
            );
            if !safe && !crate::console::same_origin(req.headers()) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a request with the console's session must come from the console's own pages (its Origin)",
                )
                .into_response();
            }
            req.extensions_mut().insert(Caller(user));
            return next.run(req).await;
        }
        if crate::console::is_page(req.uri().path()) {
            let next_path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let to: String = form_urlencoded::byte_serialize(next_path.as_bytes()).collect();
            return axum::response::Redirect::to(&format!("/login?next={to}")).into_response();
        }
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "an API key is required: send it as St2-Api-Key (st2's CLI: set ST2_API_KEY) or Authorization: Bearer",
        )
        .into_response();
    };
    match state.engine.store.apikey_verify(&key) {
        Ok(Some(k)) => {
            req.extensions_mut().insert(Caller(k.user));
            next.run(req).await
        }
        Ok(None) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unknown or disabled API key").into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Alertmanager and Grafana send one Authorization header: a receiver with its own
/// credentials or signature is checked by `crate::alerts` instead of by API key.
fn alert_receiver_checks_itself(state: &AppState, req: &Request) -> bool {
    req.method() == axum::http::Method::POST
        && req
            .uri()
            .path()
            .strip_prefix("/api/v1/webhooks/")
            .map(crate::model::hook_name)
            .and_then(|source| state.config.alert_receivers.get(source))
            .is_some_and(|c| c.has_credentials())
}

/// With authentication on and no API key yet, the first key may be created from the machine
/// itself (a request from loopback to `POST /api/v1/apikeys`).
fn bootstrap_allowed(state: &AppState, req: &Request) -> bool {
    let from_loopback = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    from_loopback
        && req.method() == axum::http::Method::POST
        && req.uri().path() == "/api/v1/apikeys"
        && state.engine.store.apikey_count().is_ok_and(|n| n == 0)
}

async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let stored = state.engine.store.count_executions_by_status()?;
    let mut text = state
        .engine
        .metrics
        .render(state.engine.queue.len(), &stored);
    if let Ok(sensors) = state.engine.sensors.lock() {
        text.push_str(&crate::sensing::render_metrics(&sensors));
    }
    if let Some(remote) = state.engine.remote() {
        text.push_str(&remote.render_metrics());
    }
    text.push_str(&crate::capacity::render_metrics());
    text.push_str(
        &state
            .engine
            .render_correlation_metrics(&state.engine.loaded()),
    );
    text.push_str(&squall_sensors::mesos_metrics::render_metrics());
    let engine = state.engine.clone();
    let (store_bytes, journal_bytes) = tokio::task::spawn_blocking(move || {
        (
            engine.store.size_on_disk().unwrap_or(0),
            engine.journal_size_on_disk(),
        )
    })
    .await
    .unwrap_or((0, 0));
    text.push_str(&crate::metrics::render_resources(
        store_bytes,
        journal_bytes,
        state.engine.store.writer_backlog(),
    ));
    Ok(([("content-type", "text/plain; version=0.0.4")], text).into_response())
}

/// Header names as st2 (WSGI) presents them: `X-Github-Event`.
fn title_case(name: &str) -> String {
    // Header names are ASCII (the `http` crate refuses anything else).
    let mut out = String::with_capacity(name.len());
    let mut start = true;
    for c in name.chars() {
        out.push(if start {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        start = c == '-';
    }
    out
}

async fn webhook(
    State(state): State<AppState>,
    Path(url): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let url = crate::model::hook_name(&url).to_string();
    if url == "alertmanager" || url == "grafana" {
        return crate::alerts::handle(&state, &url, &headers, &body).await;
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    // st2's generic hook reads `{trigger, payload}` from JSON only.
    let parsed = webhook_body(content_type.as_deref().filter(|_| url != "st2"), &body)?;
    // Checked for every hook it is set for, `st2` included.
    let mut delivery = None;
    if let Some(check) = state.config.signatures.get(&url) {
        let lower: HashMap<String, String> = headers
            .iter()
            .map(|(name, value)| {
                let v = value.to_str().unwrap_or_default().to_string();
                (name.as_str().to_string(), v)
            })
            .collect();
        check.verify(&lower, &body, Utc::now()).map_err(|e| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("signature check failed: {e}"),
            )
        })?;
        delivery = check
            .delivery_id(&lower)
            .map(|(id, tolerance)| (url.clone(), id.to_string(), tolerance));
    }
    let ti = if url == "st2" {
        let trigger = parsed
            .get("trigger")
            .and_then(Value::as_str)
            .filter(|t| t.contains('.'))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "field 'trigger' must be a trigger type reference such as 'pack.name'",
                )
            })?;
        // As st2 does by default: an instance of a type nothing knows is refused, not stored
        // for nothing (a typo in a sender would otherwise go unnoticed).
        let canonical = squall_rules::canonical_trigger_ref(trigger);
        if !trigger_types(&state)
            .iter()
            .any(|t| t["ref"].as_str() == Some(canonical))
        {
            return Err(ApiError::bad_request(format!(
                "no trigger type '{trigger}': a trigger type is built in, comes from a sensor, or is named by a loaded rule (GET /api/v1/triggertypes lists them)"
            )));
        }
        let payload = parsed
            .get("payload")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        if !payload.is_object() {
            return Err(ApiError::bad_request("field 'payload' must be an object"));
        }
        let mut ti = TriggerInstance::new(trigger, None, payload, "api");
        ti.trace_tag = parsed
            .get("trace_tag")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| trace_tag(&headers));
        ti
    } else {
        if !state.engine.loaded().webhooks.contains(&url) {
            return Err(ApiError::not_found(format!(
                "no enabled rule listens to webhook '{url}'"
            )));
        }
        let mut header_map = Map::new();
        for (name, value) in headers.iter() {
            // Credentials are not the event's: they would be stored and shown to every reader
            // of trigger instances and of the stream (st2 leaves them out too).
            // st2's trace tag is the instance's, not its payload's.
            if CREDENTIAL_HEADERS.contains(&name.as_str()) || name.as_str() == TRACE_TAG_HEADER {
                continue;
            }
            // Bytes that are not UTF-8 become U+FFFD rather than emptying the value; a header
            // sent more than once is kept as one value joined with ", " (as WSGI does).
            let v = String::from_utf8_lossy(value.as_bytes());
            match header_map.entry(title_case(name.as_str())) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(Value::String(v.into_owned()));
                }
                serde_json::map::Entry::Occupied(mut slot) => {
                    if let Value::String(joined) = slot.get_mut() {
                        joined.push_str(", ");
                        joined.push_str(&v);
                    }
                }
            }
        }
        // Built by moving the parts in: `json!` would copy each `Value` by serializing it.
        let mut payload = Map::with_capacity(2);
        payload.insert("headers".into(), Value::Object(header_map));
        payload.insert("body".into(), parsed);
        let source = format!("webhook/{url}");
        let mut parameters = Map::with_capacity(1);
        parameters.insert("url".into(), Value::String(url));
        let mut ti = TriggerInstance::new(
            "core.webhook",
            Some(Value::Object(parameters)),
            Value::Object(payload),
            &source,
        );
        ti.trace_tag = trace_tag(&headers);
        ti
    };
    // A signed delivery retried (the same id, within its tolerance) gives no second instance,
    // whichever hook it went to.
    if let Some((url, id, tolerance)) = delivery {
        use crate::signatures::Delivery;
        match state
            .deliveries
            .first(&url, &id, tolerance, &ti.id, Utc::now())
        {
            // A retry of a delivery already accepted: answered as accepted, nothing new.
            Delivery::Accepted(first) => {
                return Ok((
                    StatusCode::ACCEPTED,
                    Json(json!({"id": first, "duplicate": true, "webhook_id": id})),
                )
                    .into_response())
            }
            // Its first try is still being made durable: the sender is to try again.
            Delivery::InFlight(first) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "delivery {id} is being accepted as trigger instance {first}: retry it"
                    ),
                ))
            }
            Delivery::New => {}
        }
        return match state.engine.ingest(ti).await {
            Ok(ti) => {
                state.deliveries.accepted(&url, &id);
                accepted(&body, &ti)
            }
            Err(e) => {
                state.deliveries.forget(&url, &id);
                Err(e.into())
            }
        };
    }
    let ti = state.engine.ingest(ti).await?;
    accepted(&body, &ti)
}

/// st2's header naming a trace an event belongs to (lowercase, as `http` names it).
const TRACE_TAG_HEADER: &str = "st2-trace-tag";

/// The trace tag a request carries, if any.
fn trace_tag(headers: &HeaderMap) -> Option<String> {
    headers
        .get(TRACE_TAG_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Headers a webhook's payload leaves out (lowercase, as `http` names them).
const CREDENTIAL_HEADERS: [&str; 5] = [
    "st2-api-key",
    "x-auth-token",
    "authorization",
    "cookie",
    "proxy-authorization",
];

/// A webhook's body as its payload's `body`, read by its content type as st2 reads it: JSON (any
/// other or no type), form fields (`application/x-www-form-urlencoded`: each name with the list
/// of its values, as Python's `parse_qs` gives them; a JSON body sent with that type, as `curl
/// -d` does by default, is read as JSON) or text (`text/plain`: a string). Empty is `{}`.
fn webhook_body(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let json = |body: &[u8]| -> ApiResult<Value> {
        check_nesting(body)?;
        serde_json::from_slice(body).map_err(|e| {
            // serde_json's message already names the line and column.
            ApiError::bad_request(format!("the body is not valid JSON: {e}"))
        })
    };
    match content_type {
        Some("application/x-www-form-urlencoded") => {
            if let Ok(v @ (Value::Object(_) | Value::Array(_))) = json(body) {
                return Ok(v);
            }
            let mut fields = Map::new();
            for (name, value) in form_urlencoded::parse(body) {
                // parse_qs leaves out fields without a value.
                if value.is_empty() {
                    continue;
                }
                let slot = fields
                    .entry(name.into_owned())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(values) = slot {
                    values.push(Value::String(value.into_owned()));
                }
            }
            Ok(Value::Object(fields))
        }
        Some("text/plain") => std::str::from_utf8(body)
            .map(|text| Value::String(text.to_string()))
            .map_err(|e| ApiError::bad_request(format!("the text body is not UTF-8: {e}"))),
        Some("multipart/form-data") => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "multipart/form-data bodies are not read: send JSON, application/x-www-form-urlencoded or text/plain",
        )),
        _ => json(body),
    }
}

/// A webhook's 202, with the instance it gave.
fn accepted(body: &[u8], ti: &TriggerInstance) -> ApiResult<Response> {
    // Serialized into a buffer sized for it (axum's `Json` starts at 128 bytes and regrows).
    let mut out = Vec::with_capacity(body.len() + 512);
    serde_json::to_writer(&mut out, &crate::pipeline::TriggerInstanceOut::from(ti))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response())
}

/// `limit` (default 50, at most [`MAX_PAGE`]) and `offset` of a list request. (serde's
/// `flatten` cannot carry numbers through a query string, so each query struct holds these two
/// fields.)
fn page(limit: Option<usize>, offset: Option<usize>) -> (usize, usize) {
    (limit.unwrap_or(50).min(MAX_PAGE), offset.unwrap_or(0))
}

/// The most records a stored list returns at once: pages past it are asked for with `offset`.
const MAX_PAGE: usize = 10_000;

/// Runs a store read and its serialization to JSON on a blocking thread: a long list must not
/// hold up the runtime's threads, which answer webhooks and `/healthz`. `work` gives the list
/// and its `X-Total-Count` (see [`st2::Page`]).
async fn off_runtime(
    work: impl FnOnce() -> ApiResult<(Value, usize)> + Send + 'static,
) -> ApiResult<Response> {
    let (bytes, total) = tokio::task::spawn_blocking(move || {
        let (value, total) = work()?;
        serde_json::to_vec(&value)
            .map(|bytes| (bytes, total))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a list request failed: {e}"),
        )
    })??;
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_string(),
            ),
            (
                axum::http::HeaderName::from_static("x-total-count"),
                total.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// A list's `limit`: a count, or st2's -1 for as many as a list gives (everything for the lists
/// held in memory; the most a stored list returns at once for the others).
fn limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    use serde::de::Error;
    match Option::<i64>::deserialize(d)? {
        None => Ok(None),
        Some(-1) => Ok(Some(usize::MAX)),
        Some(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| D::Error::custom(format!("limit {n}: give a count, or -1 for all"))),
    }
}

/// A list held in memory (rules, actions, packs, trigger types, keys), `offset` and `limit`
/// applied (everything when no `limit` is given: these lists are as long as the packs make
/// them), with st2's `X-Total-Count` header counting the whole list.
fn listed(items: Vec<Value>, limit: Option<usize>, offset: Option<usize>) -> Response {
    let total = items.len();
    let page: Vec<Value> = items
        .into_iter()
        .skip(offset.unwrap_or(0))
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    (
        [("x-total-count", total.to_string())],
        Json(Value::Array(page)),
    )
        .into_response()
}

#[derive(Deserialize)]
struct TriggerInstanceQuery {
    trigger: Option<String>,
    /// st2's `status`: `pending`, `processing`, `processed`, `processing_failed`.
    status: Option<String>,
    /// Occurred after, before (st2's `timestamp_gt`, `timestamp_lt`).
    timestamp_gt: Option<String>,
    timestamp_lt: Option<String>,
    #[serde(default, deserialize_with = "limit")]
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_trigger_instances(
    State(state): State<AppState>,
    Query(q): Query<TriggerInstanceQuery>,
) -> ApiResult<Response> {
    let trigger = q
        .trigger
        .as_deref()
        .map(|t| squall_rules::canonical_trigger_ref(t).to_string());
    let status = match q.status.as_deref() {
        Some(s) => Some(
            serde_json::from_value::<crate::model::TriggerInstanceStatus>(json!(s)).map_err(
                |_| {
                    ApiError::bad_request(format!(
                        "status '{s}' is not one of: pending, processing, processed, processing_failed"
                    ))
                },
            )?,
        ),
        None => None,
    };
    let window = st2::TimeWindow::parse(
        "timestamp",
        q.timestamp_gt.as_deref(),
        q.timestamp_lt.as_deref(),
    )?;
    let keep = (status.is_some() || !window.is_open()).then_some(move |ti: &TriggerInstance| {
        status.is_none_or(|s| ti.status == s) && window.contains(&ti.occurrence_time)
    });
    let (limit, offset) = page(q.limit, q.offset);
    off_runtime(move || {
        let store = &state.engine.store;
        let page = st2::scan(
            |limit, offset| store.list_trigger_instances(trigger.as_deref(), limit, offset),
            keep,
            offset,
            limit,
            false,
        )?;
        let list = page.items.iter().map(trigger_instance_json);
        Ok((Value::Array(list.collect()), page.total))
    })
    .await
}

async fn get_trigger_instance(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let ti = found(
        state.engine.store.trigger_instance(&id)?,
        "trigger instance",
        &id,
    )?;
    Ok(Json(trigger_instance_json(&ti)))
}

/// The trigger types squall itself provides.
pub fn builtin_trigger_types() -> Vec<Value> {
    vec![
        json!({"ref": "core.webhook", "pack": "core", "name": "webhook", "description": "A POST to /api/v1/webhooks/{url} (st2: core.st2.webhook).", "parameters_schema": {"type": "object", "properties": {"url": {"type": "string", "required": true}}}, "payload_schema": {"type": "object", "properties": {"headers": {"type": "object"}, "body": {}}}}),
        json!({"ref": "core.interval_timer", "pack": "core", "name": "interval_timer", "description": "Fires every delta units (st2: core.st2.IntervalTimer).", "parameters_schema": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["weeks", "days", "hours", "minutes", "seconds"]}, "delta": {"type": "integer"}, "timezone": {"type": "string"}}}, "payload_schema": {"type": "object", "properties": {"executed_at": {"type": "string"}, "schedule": {}}}}),
        json!({"ref": "core.cron_timer", "pack": "core", "name": "cron_timer", "description": "Fires on a cron schedule (st2: core.st2.CronTimer).", "parameters_schema": {"type": "object", "properties": {"timezone": {}, "year": {}, "month": {}, "day": {}, "week": {}, "day_of_week": {}, "hour": {}, "minute": {}, "second": {}}}, "payload_schema": {"type": "object", "properties": {"executed_at": {"type": "string"}, "schedule": {}}}}),
        json!({"ref": "core.date_timer", "pack": "core", "name": "date_timer", "description": "Fires once at a date (st2: core.st2.DateTimer).", "parameters_schema": {"type": "object", "properties": {"date": {"type": "string"}, "timezone": {"type": "string"}}}, "payload_schema": {"type": "object", "properties": {"executed_at": {"type": "string"}, "schedule": {}}}}),
        json!({"ref": "core.action_finished", "pack": "core", "name": "action_finished", "description": "An execution reached a final status (st2: core.st2.generic.actiontrigger).", "parameters_schema": {}, "payload_schema": {"type": "object", "properties": {"execution_id": {"type": "string"}, "status": {"type": "string"}, "action_ref": {"type": "string"}, "result": {}, "parameters": {"type": "object"}}}}),
        json!({"ref": "core.st2.generic.notifytrigger", "pack": "core", "name": "st2.generic.notifytrigger", "description": "An execution with notify settings ended: one instance per route.", "parameters_schema": {}, "payload_schema": {"type": "object", "properties": {"execution_id": {"type": "string"}, "status": {"type": "string"}, "start_timestamp": {"type": "string"}, "end_timestamp": {"type": "string"}, "action_ref": {"type": "string"}, "runner_ref": {"type": "string"}, "channel": {"type": "string"}, "route": {"type": "string"}, "message": {"type": "string"}, "data": {"type": "object"}}}}),
        json!({"ref": "core.correlation_window", "pack": "core", "name": "correlation_window", "description": "squall: correlation rules' windows closed at this time (recorded by the correlation timer).", "parameters_schema": {}, "payload_schema": {"type": "object", "properties": {"at": {"type": "string"}}}}),
        json!({"ref": "core.st2.generic.inquiry", "pack": "core", "name": "st2.generic.inquiry", "description": "An inquiry (core.ask) is waiting for a response.", "parameters_schema": {}, "payload_schema": {"type": "object", "properties": {"id": {"type": "string"}, "route": {"type": "string"}}}}),
    ]
}

async fn list_sensors(State(state): State<AppState>) -> Json<Value> {
    let mut list: Vec<Value> = match state.engine.sensors.lock() {
        Ok(s) => s.iter().map(|s| s.json()).collect(),
        Err(p) => p.into_inner().iter().map(|s| s.json()).collect(),
    };
    if let Some(remote) = state.engine.remote() {
        list.extend(remote.remote_sensors());
    }
    Json(Value::Array(list))
}

#[derive(Deserialize)]
struct CapacityQuery {
    app: Option<String>,
}

/// The capacity collector's last figures per app and cluster.
async fn capacity(Query(q): Query<CapacityQuery>) -> Json<Value> {
    Json(crate::capacity::capacity_json(q.app.as_deref()))
}

/// Remote workers and sensor hosts, from their heartbeats (none without `--amqp`).
async fn list_workers(State(state): State<AppState>) -> Json<Value> {
    Json(Value::Array(
        state
            .engine
            .remote()
            .map(|r| r.workers_json())
            .unwrap_or_default(),
    ))
}

async fn list_trigger_types(State(state): State<AppState>, Query(q): Query<PackQuery>) -> Response {
    let mut types = trigger_types(&state);
    types.retain(|t| q.pack.as_ref().is_none_or(|p| t["pack"] == p.as_str()));
    listed(types, q.limit, q.offset)
}

/// One trigger type, by squall's name or st2's (`core.st2.webhook`).
async fn get_trigger_type(
    State(state): State<AppState>,
    Path(trigger_ref): Path<String>,
) -> ApiResult<Json<Value>> {
    let wanted = squall_rules::canonical_trigger_ref(&trigger_ref);
    trigger_types(&state)
        .into_iter()
        .find(|t| t["ref"] == wanted)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no trigger type {trigger_ref}")))
}

/// Every trigger type: built in, from sensors, and any other a loaded rule names.
fn trigger_types(state: &AppState) -> Vec<Value> {
    let mut types = builtin_trigger_types();
    types.extend(crate::sensing::sensor_trigger_types());
    let known: std::collections::HashSet<String> = types
        .iter()
        .filter_map(|t| t["ref"].as_str().map(str::to_string))
        .collect();
    let loaded = state.engine.loaded();
    let mut extra: Vec<String> = loaded
        .rules
        .trigger_types()
        .filter(|t| !known.contains(*t))
        .map(str::to_string)
        .collect();
    extra.sort();
    for t in extra {
        let (pack, name) = t.split_once('.').unwrap_or(("", &t));
        types.push(json!({"ref": t, "pack": pack, "name": name, "description": "used by a loaded rule", "parameters_schema": {}, "payload_schema": {}}));
    }
    types
}

fn rule_json(r: &squall_rules::Rule) -> Value {
    let criteria = criteria_json(&r.criteria);
    let reference = r.reference();
    let mut json = json!({
        // st2's clients address a rule by its id: squall's is its reference.
        "id": reference,
        "uid": format!("rule:{}:{}", r.pack, r.name),
        "ref": reference,
        "name": r.name,
        "pack": r.pack,
        "description": r.description,
        "enabled": r.enabled,
        "trigger": {"type": r.trigger_type, "ref": r.trigger_type, "parameters": r.trigger_parameters},
        "criteria": criteria,
        "action": {"ref": r.action_ref, "parameters": r.action_parameters},
        "type": {"ref": match r.rule_type { squall_rules::RuleType::Standard => "standard", squall_rules::RuleType::Backstop => "backstop" }},
        "tags": r.tags.iter().map(|t| json!({"name": t.name, "value": t.value})).collect::<Vec<_>>(),
    });
    if let Some(c) = &r.correlate {
        json["correlate"] = correlation_json(c);
    }
    json
}

/// Criteria as st2 writes them: `{key: {type, pattern}}`.
fn criteria_json(criteria: &[squall_rules::Criterion]) -> Map<String, Value> {
    criteria
        .iter()
        .map(|c| {
            let pattern = match &c.pattern {
                squall_rules::model::PatternSource::Literal { value, .. } => value.clone(),
                squall_rules::model::PatternSource::Template { source, .. } => {
                    Value::String(source.clone())
                }
            };
            (
                c.key.clone(),
                json!({"type": c.operator_name, "pattern": pattern}),
            )
        })
        .collect()
}

#[derive(Deserialize)]
struct PackQuery {
    pack: Option<String>,
    #[serde(default, deserialize_with = "st2::py_bool")]
    enabled: Option<bool>,
    /// Rules: the action they run.
    action: Option<String>,
    /// Rules: their trigger type (st2's names too).
    trigger: Option<String>,
    #[serde(default, deserialize_with = "limit")]
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_rules(State(state): State<AppState>, Query(q): Query<PackQuery>) -> Response {
    let loaded = state.engine.loaded();
    let trigger = q
        .trigger
        .as_deref()
        .map(squall_rules::canonical_trigger_ref);
    let list = loaded
        .rules
        .rules()
        .iter()
        .filter(|r| q.pack.as_ref().is_none_or(|p| *p == r.pack))
        .filter(|r| q.enabled.is_none_or(|e| e == r.enabled))
        .filter(|r| q.action.as_ref().is_none_or(|a| *a == r.action_ref))
        .filter(|r| {
            trigger.is_none_or(|t| squall_rules::canonical_trigger_ref(&r.trigger_type) == t)
        })
        .map(rule_json)
        .collect();
    listed(list, q.limit, q.offset)
}

async fn get_rule(
    State(state): State<AppState>,
    Path(rule_ref): Path<String>,
) -> ApiResult<Json<Value>> {
    loaded_rule_json(&state, &rule_ref).map(Json)
}

/// A loaded rule as the API shows it, or a 404.
fn loaded_rule_json(state: &AppState, rule_ref: &str) -> ApiResult<Value> {
    let loaded = state.engine.loaded();
    let id = loaded
        .rules
        .find(rule_ref)
        .ok_or_else(|| ApiError::not_found(format!("no rule {rule_ref}")))?;
    let mut json = rule_json(loaded.rules.rule(id));
    if let Some(groups) = state.engine.open_groups(rule_ref) {
        json["correlate"]["open_groups"] = json!(groups);
    }
    Ok(json)
}

/// A rule's `correlate` block as the API shows it (squall's extension to st2's rules).
fn correlation_json(c: &squall_rules::Correlation) -> Value {
    let parts = |parts: &[squall_rules::Part]| -> Vec<Value> {
        parts
            .iter()
            .map(|p| {
                json!({
                    "trigger": p.trigger_type,
                    "parameters": p.parameters,
                    "criteria": criteria_json(&p.criteria),
                })
            })
            .collect()
    };
    let mode = match c.mode {
        squall_rules::CorrelationMode::All => "all",
        squall_rules::CorrelationMode::Sequence => "sequence",
        squall_rules::CorrelationMode::Any => "any",
        squall_rules::CorrelationMode::Absence => "none",
    };
    json!({
        "mode": mode,
        "within_seconds": c.within.as_secs_f64(),
        "group_by": c.group_by.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        "parts": parts(&c.parts),
        "none": parts(&c.none),
        "limit": c.limit,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTestRequest {
    trigger_instance_id: String,
}

/// st2-rule-tester's post-mortem mode: a stored rule against a stored trigger instance.
async fn test_rule(
    State(state): State<AppState>,
    Path(rule_ref): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: RuleTestRequest = parse_json(&body)?;
    let loaded = state.engine.loaded();
    let id = loaded
        .rules
        .find(&rule_ref)
        .ok_or_else(|| ApiError::not_found(format!("no rule {rule_ref}")))?;
    let ti = state
        .engine
        .store
        .trigger_instance(&req.trigger_instance_id)?
        .ok_or_else(|| {
            ApiError::not_found(format!("no trigger instance {}", req.trigger_instance_id))
        })?;
    let env = EvalEnv {
        now: Utc::now(),
        kv: Arc::new(StoreKv(state.engine.store.clone())),
    };
    let view = ti.rule_view();
    Ok(Json(match loaded.rules.check(id, &view, &env, false) {
        Ok(()) => match loaded
            .rules
            .render_action(id, &ti.payload, ti.context.as_ref(), &env)
        {
            Ok(req) => {
                // As the rules loop builds the execution: why it would not run (what the
                // enforcement records), if it would not.
                let (params, reason) =
                    match state
                        .engine
                        .new_execution(&loaded, &req.action, req.parameters.clone())
                    {
                        Ok(e) => (e.parameters, None),
                        Err(err) => (
                            req.parameters.clone(),
                            Some(format!(
                                "the action would be refused: {}",
                                crate::pipeline::refusal_reason(&err)
                            )),
                        ),
                    };
                let params = match loaded.catalog.action(&req.action) {
                    Some(a) => squall_actions::mask_secrets(&a.meta, &params),
                    None => params,
                };
                json!({"matches": true, "rule": rule_ref, "action": req.action, "parameters": params, "failure": null, "reason": reason})
            }
            Err(e) => {
                json!({"matches": true, "rule": rule_ref, "action": null, "parameters": null, "failure": null, "reason": format!("the action cannot be rendered: {e}")})
            }
        },
        Err(NoMatch::Criterion(f)) => {
            json!({"matches": false, "rule": rule_ref, "action": null, "parameters": null, "failure": f, "reason": null})
        }
        Err(other) => {
            json!({"matches": false, "rule": rule_ref, "action": null, "parameters": null, "failure": null, "reason": other.to_string()})
        }
    }))
}

#[derive(Deserialize)]
struct EnforcementQuery {
    rule_ref: Option<String>,
    trigger_instance: Option<String>,
    /// The execution an enforcement requested.
    execution: Option<String>,
    /// Enforced after, before (st2's `enforced_at_gt`, `enforced_at_lt`).
    enforced_at_gt: Option<String>,
    enforced_at_lt: Option<String>,
    #[serde(default, deserialize_with = "limit")]
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_enforcements(
    State(state): State<AppState>,
    Query(q): Query<EnforcementQuery>,
) -> ApiResult<Response> {
    let window = st2::TimeWindow::parse(
        "enforced_at",
        q.enforced_at_gt.as_deref(),
        q.enforced_at_lt.as_deref(),
    )?;
    let execution = q.execution;
    let keep = (execution.is_some() || !window.is_open()).then_some(
        move |e: &crate::model::RuleEnforcement| {
            execution
                .as_ref()
                .is_none_or(|x| e.execution_id.as_ref() == Some(x))
                && window.contains(&e.enforced_at)
        },
    );
    let (limit, offset) = page(q.limit, q.offset);
    let (rule_ref, trigger_instance) = (q.rule_ref, q.trigger_instance);
    off_runtime(move || {
        let store = &state.engine.store;
        let page = st2::scan(
            |limit, offset| {
                store.list_enforcements(
                    rule_ref.as_deref(),
                    trigger_instance.as_deref(),
                    limit,
                    offset,
                )
            },
            keep,
            offset,
            limit,
            false,
        )?;
        let list = page.items.iter().map(enforcement_json);
        Ok((Value::Array(list.collect()), page.total))
    })
    .await
}

fn enforcement_json(e: &crate::model::RuleEnforcement) -> Value {
    json!({
        "id": e.id,
        "rule": {"ref": e.rule_ref},
        "trigger_instance_id": e.trigger_instance_id,
        "execution_id": e.execution_id,
        "enforced_at": e.enforced_at,
        "failure_reason": e.failure_reason,
    })
}

async fn get_enforcement(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = found(
        state.engine.store.enforcement(&id)?,
        "rule enforcement",
        &id,
    )?;
    Ok(Json(enforcement_json(&e)))
}

/// A record looked up by id, or a 404 naming what was not found.
fn found<T>(record: Option<T>, what: &str, id: &str) -> ApiResult<T> {
    record.ok_or_else(|| ApiError::not_found(format!("no {what} {id}")))
}

fn action_json(a: &crate::packs::LoadedAction) -> Value {
    let params: Map<String, Value> = a
        .meta
        .parameters
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                json!({
                    "type": p.ty.name(),
                    "description": p.description,
                    "required": p.required,
                    "default": if p.secret { p.default.as_ref().map(|_| json!(squall_actions::SECRET_MASK)) } else { p.default.clone() },
                    "enum": p.enum_values,
                    "secret": p.secret,
                    "immutable": p.immutable,
                }),
            )
        })
        .collect();
    json!({
        "ref": a.reference,
        "pack": a.pack,
        "name": a.meta.name,
        "description": a.meta.description,
        "enabled": a.meta.enabled,
        "runner_type": a.meta.runner_type.st2_name(),
        "entry_point": a.meta.entry_point,
        "timeout": a.meta.timeout,
        "idempotent": a.meta.idempotent,
        "parameters": params,
        "notify": a.meta.notify.clone().unwrap_or_default(),
    })
}

async fn list_actions(State(state): State<AppState>, Query(q): Query<PackQuery>) -> Response {
    let loaded = state.engine.loaded();
    let list = loaded
        .catalog
        .actions()
        .filter(|a| q.pack.as_ref().is_none_or(|p| *p == a.pack))
        .filter(|a| q.enabled.is_none_or(|e| e == a.meta.enabled))
        .map(action_json)
        .collect();
    listed(list, q.limit, q.offset)
}

async fn get_action(
    State(state): State<AppState>,
    Path(action_ref): Path<String>,
) -> ApiResult<Json<Value>> {
    let loaded = state.engine.loaded();
    let a = loaded
        .catalog
        .action(&action_ref)
        .ok_or_else(|| ApiError::not_found(format!("no action {action_ref}")))?;
    Ok(Json(action_json(a)))
}

/// The packs and their problems, as `pack list` and `pack reload` show them.
pub fn packs_json(catalog: &crate::packs::Catalog) -> Value {
    // A problem is a pack's when its file is in the pack, or is the pack's config file
    // (`<configs>/<pack>.yaml`); the others (a pack that did not load, a folder that is not
    // there) are listed under the folder they concern, as packs not loaded.
    let in_pack = |pr: &crate::packs::Problem, p: &crate::packs::Pack| {
        pr.file.starts_with(&p.dir)
            || p.config_file
                .as_ref()
                .is_some_and(|f| pr.file == *f || pr.file == f.with_extension("yaml (missing)"))
    };
    let mut packs: Vec<Value> = catalog
        .packs
        .iter()
        .map(|p| {
            let problems: Vec<String> = catalog
                .problems
                .iter()
                .filter(|pr| in_pack(pr, p))
                .map(ToString::to_string)
                .collect();
            json!({
                "ref": p.reference,
                "name": p.meta.name,
                "description": p.meta.description,
                "version": p.meta.version,
                "author": p.meta.author,
                "path": p.dir,
                "loaded": true,
                "actions": p.actions.len(),
                "rules": p.rules.len(),
                "problems": problems,
                "install": crate::pack_install::read_record(&p.dir),
            })
        })
        .collect();
    let mut others: BTreeMap<std::path::PathBuf, Vec<String>> = BTreeMap::new();
    for pr in &catalog.problems {
        if catalog.packs.iter().any(|p| in_pack(pr, p)) {
            continue;
        }
        let folder = if pr.file.is_dir() || pr.file.extension().is_none() {
            pr.file.clone()
        } else {
            pr.file.parent().map(Into::into).unwrap_or_default()
        };
        others.entry(folder).or_default().push(pr.to_string());
    }
    for (folder, problems) in others {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        packs.push(json!({
            "ref": name,
            "path": folder,
            "loaded": false,
            "actions": 0,
            "rules": 0,
            "problems": problems,
        }));
    }
    Value::Array(packs)
}

async fn get_pack(
    State(state): State<AppState>,
    Path(pack_ref): Path<String>,
) -> ApiResult<Json<Value>> {
    let loaded = state.engine.loaded();
    let list = match packs_json(&loaded.catalog) {
        Value::Array(list) => list,
        _ => Vec::new(),
    };
    list.into_iter()
        .find(|p| p["ref"] == pack_ref.as_str() && p["loaded"] == true)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no pack {pack_ref}")))
}

async fn list_packs(State(state): State<AppState>, Query(q): Query<PackQuery>) -> Response {
    let loaded = state.engine.loaded();
    let list = match packs_json(&loaded.catalog) {
        Value::Array(list) => list,
        _ => Vec::new(),
    };
    listed(list, q.limit, q.offset)
}

async fn reload_packs(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let reload = state.config.reload.clone();
    let summary = tokio::task::spawn_blocking(move || reload())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload failed: {e}"),
            )
        })?;
    Ok(Json(summary))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    /// `SOURCE[@REF]` each, as `squall pack install` takes them.
    packs: Vec<String>,
}

async fn install_packs(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let request: InstallRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"packs\": [\"SOURCE[@REF]\", ...]}}: {e}"
        ))
    })?;
    if request.packs.is_empty() {
        return Err(ApiError::bad_request(
            "packs: name at least one SOURCE[@REF]",
        ));
    }
    let install = state.config.install.clone();
    let answer = tokio::task::spawn_blocking(move || install(request.packs))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("install failed: {e}"),
            )
        })?;
    if answer["failed"].is_null() {
        Ok(Json(answer))
    } else {
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            answer["failed"]["error"]
                .as_str()
                .unwrap_or("install failed")
                .to_string(),
        );
        err.detail = answer;
        Err(err)
    }
}

/// The console overview's figures: counters since start, executions stored per status, queue
/// depth, running, durations, sensors.
async fn overview(State(state): State<AppState>) -> Json<Value> {
    let s = state.clone();
    Json(
        tokio::task::spawn_blocking(move || crate::console::overview_json(&s))
            .await
            .unwrap_or(Value::Null),
    )
}

#[cfg(test)]
mod tests {
    use super::title_case;

    #[test]
    fn header_names_read_as_st2_shows_them() {
        assert_eq!(title_case("x-github-event"), "X-Github-Event");
        assert_eq!(title_case("content-type"), "Content-Type");
        assert_eq!(title_case("HOST"), "Host");
        assert_eq!(title_case("x--y"), "X--Y");
        assert_eq!(title_case(""), "");
    }
}
