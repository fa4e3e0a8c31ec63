//! What StackStorm's own `st2` CLI (st2client) needs from squall's API beyond squall's routes:
//! st2's paths as the CLI writes them (a trailing slash, st2's `/v1` and `/stream/v1`
//! prefixes), `include_attributes`/`exclude_attributes`, Python's `True`/`False` in queries,
//! st2's list filters over stored lists, runner types, sensor types, the current user, a rule's
//! `PUT` (`st2 rule enable|disable`), key scopes, and an answer to `st2 login` saying that
//! squall uses API keys.
//!
//! It adapts requests and answers to st2's shapes. It must never decide what a rule or an
//! action does, and never let a request past authentication that the rest of the API would
//! refuse: only the token request, which issues nothing, is answered without a key.

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{listed, loaded_rule_json, rule_json, ApiError, ApiResult, AppState, Caller, ADMIN};
use crate::store::StoreResult;

// ---------------------------------------------------------------------------------------------
// Errors

/// The error as one line for st2's clients, which show `faultstring` only: the error, and its
/// detail when there is one (each invalid parameter, with its message).
pub(super) fn faultstring(error: &str, detail: &Value) -> String {
    let part = |d: &Value| match d {
        Value::Object(o) if o.contains_key("parameter") && o.contains_key("message") => format!(
            "{}: {}",
            o["parameter"].as_str().unwrap_or_default(),
            o["message"].as_str().unwrap_or_default()
        ),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match detail {
        Value::Null => error.to_string(),
        Value::Array(items) if items.is_empty() => error.to_string(),
        Value::Array(items) => format!(
            "{error}: {}",
            items.iter().map(part).collect::<Vec<_>>().join("; ")
        ),
        other => format!("{error}: {}", part(other)),
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

/// The path squall routes for `path` when it differs: a trailing slash dropped (st2's CLI asks
/// for `/api/v1/executions/`), st2's default API prefix `/v1/...` read as `/api/v1/...`, and
/// st2's stream path `/stream/v1/stream` as `/api/v1/stream`.
fn st2_path(path: &str) -> Option<String> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    if let Some(rest) = trimmed
        .strip_prefix("/v1")
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    {
        return Some(format!("/api/v1{rest}"));
    }
    if trimmed == "/stream/v1/stream" {
        return Some("/api/v1/stream".to_string());
    }
    (trimmed.len() != path.len()).then(|| trimmed.to_string())
}

/// Rewrites a request's path as [`st2_path`] says, before it is routed; its query stays.
pub(super) fn st2_paths(mut req: Request) -> Request {
    let Some(path) = st2_path(req.uri().path()) else {
        return req;
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    // The new path is the old one shortened or prefixed, so it parses; if it did not, the
    // request would simply be routed as sent.
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

// ---------------------------------------------------------------------------------------------
// include_attributes / exclude_attributes

/// Dotted attribute paths as a tree: `action.ref` and `action.runner_type` are `action` with
/// two parts below it; `whole` marks a path asked for to its end.
#[derive(Debug, Default, PartialEq)]
struct Paths {
    whole: bool,
    below: BTreeMap<String, Paths>,
}

impl Paths {
    fn add(&mut self, path: &str) {
        let mut node = self;
        for part in path.split('.') {
            if node.whole {
                // Asked for whole already: its parts are in it.
                return;
            }
            node = node.below.entry(part.to_string()).or_default();
        }
        node.whole = true;
        node.below.clear();
    }
}

/// Which attributes an answer keeps: st2's `include_attributes` or `exclude_attributes`.
#[derive(Debug, PartialEq)]
enum Attributes {
    Include(Paths),
    Exclude(Paths),
}

impl Attributes {
    /// Reads a query string's `include_attributes` and `exclude_attributes` (comma-separated,
    /// each given once or more); `None` when it has neither.
    fn from_query(query: &str) -> Option<ApiResult<Attributes>> {
        if !query.contains("_attributes=") {
            return None;
        }
        let (mut include, mut exclude) = (Vec::new(), Vec::new());
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let list = match name.as_ref() {
                "include_attributes" => &mut include,
                "exclude_attributes" => &mut exclude,
                _ => continue,
            };
            list.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            );
        }
        let tree = |paths: &[String]| {
            let mut tree = Paths::default();
            for p in paths {
                tree.add(p);
            }
            tree
        };
        match (include.is_empty(), exclude.is_empty()) {
            (true, true) => None,
            (false, false) => Some(Err(ApiError::bad_request(
                "include_attributes and exclude_attributes cannot be given together: give one",
            ))),
            (false, true) => {
                // As st2 answers: an object's id is always there.
                include.push("id".to_string());
                Some(Ok(Attributes::Include(tree(&include))))
            }
            (true, false) => Some(Ok(Attributes::Exclude(tree(&exclude)))),
        }
    }

    /// Applies to an object, or to each object of an array.
    fn apply(&self, value: &mut Value) {
        match self {
            Attributes::Include(paths) => keep(value, paths),
            Attributes::Exclude(paths) => drop(value, paths),
        }
    }
}

/// Keeps only `paths` of `value` (of each element, for an array), in their order.
fn keep(value: &mut Value, paths: &Paths) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| keep(v, paths)),
        Value::Object(object) => {
            object.retain(|name, v| match paths.below.get(name) {
                None => false,
                Some(below) if below.whole => true,
                // Part of it asked for: only an object (or objects) has parts.
                Some(below) => match v {
                    Value::Object(_) | Value::Array(_) => {
                        keep(v, below);
                        true
                    }
                    _ => false,
                },
            });
        }
        _ => {}
    }
}

/// Removes `paths` from `value` (from each element, for an array).
fn drop(value: &mut Value, paths: &Paths) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| drop(v, paths)),
        Value::Object(object) => {
            for (name, below) in &paths.below {
                if below.whole {
                    object.shift_remove(name);
                } else if let Some(v) = object.get_mut(name) {
                    drop(v, below);
                }
            }
        }
        _ => {}
    }
}

/// Applies a GET's `include_attributes` or `exclude_attributes` to its JSON answer.
pub(super) async fn attributes(req: Request, next: Next) -> Response {
    let wanted = match req.uri().query().and_then(Attributes::from_query) {
        Some(Ok(wanted)) if req.method() == Method::GET => wanted,
        Some(Err(e)) => return e.into_response(),
        _ => return next.run(req).await,
    };
    let response = next.run(req).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !response.status().is_success() || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the answer to filter its attributes: {e}"),
            )
            .into_response()
        }
    };
    // A long list is parsed and written again off the runtime's threads.
    let filtered = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        wanted.apply(&mut value);
        serde_json::to_vec(&value).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match filtered {
        Ok(out) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(out))
        }
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot filter the answer's attributes: {e}"),
        )
        .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Query values

/// A query's boolean as st2's clients write it: Python's `True`/`False` as well as `true`,
/// `false`, `1` and `0`.
pub(super) fn py_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use serde::de::Error;
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_bool(&s)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("'{s}' is not a boolean (true or false)"))),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" | "1" => Some(true),
        "false" | "False" | "FALSE" | "0" => Some(false),
        _ => None,
    }
}

/// st2's `*_gt` and `*_lt` bounds of a list, both exclusive.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TimeWindow {
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
}

impl TimeWindow {
    /// Reads `{name}_gt` and `{name}_lt`: RFC 3339 times, or without an offset, UTC
    /// (`2024-05-01T10:00:00.000Z`, `2024-05-01T10:00:00`).
    pub(super) fn parse(name: &str, gt: Option<&str>, lt: Option<&str>) -> ApiResult<TimeWindow> {
        let time = |suffix: &str, text: Option<&str>| -> ApiResult<Option<DateTime<Utc>>> {
            let Some(text) = text else {
                return Ok(None);
            };
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                        .or_else(|_| {
                            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                        })
                        .map(|t| t.and_utc())
                })
                .map(Some)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "{name}_{suffix}: '{text}' is not a time (give e.g. 2024-05-01T10:00:00Z)"
                    ))
                })
        };
        Ok(TimeWindow {
            after: time("gt", gt)?,
            before: time("lt", lt)?,
        })
    }

    pub(super) fn is_open(&self) -> bool {
        self.after.is_none() && self.before.is_none()
    }

    pub(super) fn contains(&self, t: &DateTime<Utc>) -> bool {
        self.after.is_none_or(|a| *t > a) && self.before.is_none_or(|b| *t < b)
    }
}

/// A key-value scope as st2 names it. squall keeps one scope, st2's system scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyScope {
    /// `system`, `st2kv.system`: squall's keys.
    System,
    /// `user`, `st2kv.user`: a user's own keys, which squall does not keep.
    User,
    /// `all` (listing only): every scope, which for squall is the system scope.
    All,
}

impl KeyScope {
    /// The scope a request names (`None`: the system scope, as st2 defaults).
    pub(super) fn parse(scope: Option<&str>) -> ApiResult<KeyScope> {
        match scope.unwrap_or("system") {
            "system" | "st2kv.system" => Ok(KeyScope::System),
            "user" | "st2kv.user" => Ok(KeyScope::User),
            "all" => Ok(KeyScope::All),
            other => Err(ApiError::bad_request(format!(
                "scope '{other}' is not one of: system, st2kv.system, user, st2kv.user, all"
            ))),
        }
    }

    /// Refuses a scope other than the system scope for reading or writing one key.
    pub(super) fn system_only(self, name: &str) -> ApiResult<()> {
        match self {
            KeyScope::System => Ok(()),
            KeyScope::User => Err(ApiError::bad_request(format!(
                "key '{name}': squall keeps the system scope only (st2kv.system), not user-scoped keys"
            ))),
            KeyScope::All => Err(ApiError::bad_request(format!(
                "key '{name}': scope 'all' names no one scope: give system (squall keeps the system scope only)"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stored lists, filtered where the store does not index

/// A page of a stored list, and st2's `X-Total-Count` for it.
pub(super) struct Page<T> {
    pub items: Vec<T>,
    /// Newest first: what came before the page and in it, plus one when more match after it
    /// (a page does not count a whole stored list). Oldest first: every record that matches
    /// (the list was read to its end to find its oldest).
    pub total: usize,
}

/// The most records read from the store at once while filtering.
const CHUNK: usize = 1000;

/// Reads a stored list newest first through `fetch(limit, offset)`, chunk by chunk, giving
/// `visit` each record `keep` accepts until `visit` says stop (returns false).
fn walk<T>(
    fetch: &impl Fn(usize, usize) -> StoreResult<Vec<T>>,
    keep: &impl Fn(&T) -> bool,
    mut visit: impl FnMut(T) -> bool,
) -> StoreResult<()> {
    let (mut at, mut chunk) = (0, CHUNK);
    loop {
        let records = fetch(chunk, at)?;
        let n = records.len();
        at += n;
        for r in records {
            if keep(&r) && !visit(r) {
                return Ok(());
            }
        }
        if n < chunk {
            return Ok(());
        }
        // Each read skips what came before again: larger reads keep that cost in proportion.
        chunk = (chunk * 2).min(super::MAX_PAGE);
    }
}

/// One page of a stored list that `fetch(limit, offset)` reads newest first, narrowed by `keep`
/// (`None`: the store's own filter is all), `offset` records skipped, at most `limit`, newest
/// or oldest first.
pub(super) fn scan<T>(
    fetch: impl Fn(usize, usize) -> StoreResult<Vec<T>>,
    keep: Option<impl Fn(&T) -> bool>,
    offset: usize,
    limit: usize,
    oldest_first: bool,
) -> StoreResult<Page<T>> {
    if oldest_first {
        let keep = |t: &T| keep.as_ref().is_none_or(|k| k(t));
        let mut total = 0usize;
        walk(&fetch, &keep, |_| {
            total += 1;
            true
        })?;
        // The oldest `offset + limit` are the last ones newest first.
        let take = total.saturating_sub(offset).min(limit);
        let skip = total.saturating_sub(offset).saturating_sub(take);
        let mut items = Vec::with_capacity(take);
        let mut seen = 0usize;
        walk(&fetch, &keep, |t| {
            seen += 1;
            if seen > skip {
                items.push(t);
            }
            items.len() < take
        })?;
        items.reverse();
        return Ok(Page { items, total });
    }
    let Some(keep) = keep else {
        let mut items = fetch(limit.saturating_add(1), offset)?;
        let more = items.len() > limit;
        items.truncate(limit);
        let total = offset + items.len() + usize::from(more);
        return Ok(Page { items, total });
    };
    let (mut items, mut skipped, mut more) = (Vec::new(), 0usize, false);
    walk(&fetch, &keep, |t| {
        if skipped < offset {
            skipped += 1;
        } else if items.len() < limit {
            items.push(t);
        } else {
            more = true;
            return false;
        }
        true
    })?;
    let total = skipped + items.len() + usize::from(more);
    Ok(Page { items, total })
}

// ---------------------------------------------------------------------------------------------
// Runner types and sensor types

/// squall's runners, as st2's runner types: what `st2 run` looks up before it sends an action's
/// parameters. Neither takes parameters of its own at run time (an action's timeout is in its
/// metadata), so `runner_parameters` is empty and every parameter given is the action's.
fn runner_types() -> Vec<Value> {
    [
        (
            "rhai",
            "Runs an action's Rhai script (entry_point) in squall's sandbox.",
        ),
        (
            "orquesta",
            "Runs an Orquesta workflow (entry_point), each task an execution of its own.",
        ),
        (
            "announcement",
            "Announces the parameters on the event stream and posts them to the chat they name.",
        ),
        (
            "local-shell-cmd",
            "Runs the `cmd` parameter with /bin/sh -c, as st2's core.local does.",
        ),
        (
            "local-shell-script",
            "Runs the action's script (entry_point) with st2's argument passing.",
        ),
        (
            "python-script",
            "Runs an st2 Python action class (entry_point) in the pack's virtualenv.",
        ),
    ]
    .into_iter()
    .map(|(name, description)| {
        json!({
            "id": name,
            "uid": format!("runner_type:{name}"),
            "name": name,
            "description": description,
            "enabled": true,
            "runner_parameters": {},
        })
    })
    .collect()
}

#[derive(Deserialize)]
pub(super) struct RunnerTypeQuery {
    name: Option<String>,
}

pub(super) async fn list_runner_types(Query(q): Query<RunnerTypeQuery>) -> Response {
    let mut list = runner_types();
    list.retain(|r| q.name.as_ref().is_none_or(|n| r["name"] == n.as_str()));
    listed(list, None, None)
}

pub(super) async fn get_runner_type(Path(name): Path<String>) -> ApiResult<Json<Value>> {
    runner_types()
        .into_iter()
        .find(|r| r["name"] == name.as_str())
        .map(Json)
        .ok_or_else(|| {
            let names: Vec<String> = runner_types()
                .iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect();
            ApiError::not_found(format!(
                "no runner type {name}: squall's runners are {}",
                names.join(", ")
            ))
        })
}

/// The sensors the loaded packs declare, as st2's sensor types.
fn sensor_types(state: &AppState) -> Vec<Value> {
    let json = |s: &crate::sensing::RunningSensor| {
        let mut v = s.json();
        if let Value::Object(o) = &mut v {
            let reference = o.get("ref").cloned().unwrap_or(Value::Null);
            let uid = format!(
                "sensor_type:{}:{}",
                o.get("pack").and_then(Value::as_str).unwrap_or_default(),
                o.get("name").and_then(Value::as_str).unwrap_or_default()
            );
            o.insert("id".into(), reference);
            o.insert("uid".into(), Value::String(uid));
        }
        v
    };
    match state.engine.sensors.lock() {
        Ok(s) => s.iter().map(json).collect(),
        Err(p) => p.into_inner().iter().map(json).collect(),
    }
}

#[derive(Deserialize)]
pub(super) struct SensorTypeQuery {
    pack: Option<String>,
}

pub(super) async fn list_sensor_types(
    State(state): State<AppState>,
    Query(q): Query<SensorTypeQuery>,
) -> Response {
    let mut list = sensor_types(&state);
    list.retain(|s| q.pack.as_ref().is_none_or(|p| s["pack"] == p.as_str()));
    listed(list, None, None)
}

pub(super) async fn get_sensor_type(
    State(state): State<AppState>,
    Path(reference): Path<String>,
) -> ApiResult<Json<Value>> {
    sensor_types(&state)
        .into_iter()
        .find(|s| s["ref"] == reference.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no sensor {reference}")))
}

// ---------------------------------------------------------------------------------------------
// Who is asking, and st2's tokens

/// st2's `GET /user` (`st2 whoami`): the user the request acts as.
pub(super) async fn current_user(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
) -> Json<Value> {
    let (username, method) = match caller.as_deref() {
        Some(Caller(user)) => (user.clone(), "api key"),
        // Without authentication a request acts as `api` unless it names a user.
        None => ("api".to_string(), "none (squall runs without --auth)"),
    };
    let admin = state.config.auth && username == ADMIN;
    Json(json!({
        "username": username,
        "authentication": {"method": method, "location": "header"},
        "rbac": {"enabled": false, "roles": [], "is_rbac_admin": admin},
    }))
}

/// What `st2 login` and `st2 auth` are told: squall issues no tokens.
pub(super) const NO_TOKENS: &str = "squall does not issue tokens: it uses API keys. Create one with `squall apikey create` (or POST /api/v1/apikeys) and set ST2_API_KEY to it.";

/// st2's `POST /auth/v1/tokens`, answered without a key: nothing is issued.
pub(super) async fn issue_token() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, NO_TOKENS)
}

// ---------------------------------------------------------------------------------------------
// A rule's PUT

/// What a rule's fields must say in a PUT to change only `enabled`: the fields the API shows
/// for the rule, but for its ids and `enabled`.
const RULE_FIELDS_KEPT: [&str; 8] = [
    "name",
    "pack",
    "description",
    "trigger",
    "criteria",
    "action",
    "type",
    "tags",
];

/// st2's `PUT /rules/{id}` (`st2 rule enable|disable` sends the rule as `GET` showed it, with
/// `enabled` changed). squall's rules come from pack files: only `enabled` changes through the
/// API, kept in the store (it outlasts restarts and reloads, over the file's `enabled`) and in
/// force at once. Fields squall does not show are accepted and ignored; a field that says
/// something else than the loaded rule does (its criteria, its action...) is refused, since
/// the file is where that changes.
pub(super) async fn put_rule(
    State(state): State<AppState>,
    Path(rule_ref): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body: Map<String, Value> = super::parse_json(&body)?;
    let loaded = state.engine.loaded();
    let id = loaded
        .rules
        .find(&rule_ref)
        .ok_or_else(|| ApiError::not_found(format!("no rule {rule_ref}")))?;
    let current = rule_json(loaded.rules.rule(id));
    for field in RULE_FIELDS_KEPT {
        if let Some(sent) = body.get(field) {
            if *sent != current[field] {
                return Err(ApiError::bad_request(format!(
                    "rule {rule_ref}: field '{field}' differs from the rule's file: squall's rules come from packs, only 'enabled' changes through the API (edit the rule's file and reload the packs for the rest)"
                )));
            }
        }
    }
    let enabled = match body.get("enabled") {
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "rule {rule_ref}: field 'enabled' must be true or false, not {other}"
            )))
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "rule {rule_ref}: field 'enabled' is required (it is the one field a PUT changes)"
            )))
        }
    };
    let set = state.config.set_rule_enabled.clone();
    let reference = rule_ref.clone();
    tokio::task::spawn_blocking(move || set(&reference, enabled))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rule {rule_ref}: changing it failed: {e}"),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("rule {rule_ref}: {e}"),
            )
        })?;
    state.engine.durable().await?;
    loaded_rule_json(&state, &rule_ref).map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn st2_paths_drop_a_trailing_slash_and_read_st2_prefixes() {
        assert_eq!(
            st2_path("/api/v1/executions/").as_deref(),
            Some("/api/v1/executions")
        );
        assert_eq!(
            st2_path("/api/v1/executions/01J/children/").as_deref(),
            Some("/api/v1/executions/01J/children")
        );
        assert_eq!(st2_path("/api/v1/keys//").as_deref(), Some("/api/v1/keys"));
        assert_eq!(st2_path("/v1/actions").as_deref(), Some("/api/v1/actions"));
        assert_eq!(st2_path("/v1/rules/").as_deref(), Some("/api/v1/rules"));
        assert_eq!(
            st2_path("/stream/v1/stream").as_deref(),
            Some("/api/v1/stream")
        );
        assert_eq!(
            st2_path("/stream/v1/stream/").as_deref(),
            Some("/api/v1/stream")
        );
        assert_eq!(
            st2_path("/auth/v1/tokens/").as_deref(),
            Some("/auth/v1/tokens")
        );
        // Paths squall routes as they are.
        for same in [
            "/",
            "/api/v1/executions",
            "/healthz",
            "/v1x/actions",
            "/v10/a",
        ] {
            assert_eq!(st2_path(same), None, "{same}");
        }
    }

    #[test]
    fn a_rewritten_request_keeps_its_query() {
        let req = Request::builder()
            .uri("/api/v1/executions/?limit=50&parent=null")
            .body(Body::empty())
            .expect("request");
        let req = st2_paths(req);
        assert_eq!(req.uri().path(), "/api/v1/executions");
        assert_eq!(req.uri().query(), Some("limit=50&parent=null"));
        let req = Request::builder()
            .uri("/api/v1/rules")
            .body(Body::empty())
            .expect("request");
        assert_eq!(st2_paths(req).uri(), "/api/v1/rules");
    }

    fn attributes(query: &str) -> Attributes {
        Attributes::from_query(query)
            .expect("attributes asked for")
            .expect("valid")
    }

    #[test]
    fn include_attributes_keeps_dotted_paths_nested_and_the_id() {
        let mut v = json!([
            {"id": "1", "action": {"ref": "a.b", "runner_type": "rhai"}, "status": "succeeded", "context": {"user": "ops", "x": 1}, "result": {"big": true}},
            {"id": "2", "action": "not an object", "status": "running"},
        ]);
        attributes("include_attributes=action.ref%2Ccontext.user,status&limit=50").apply(&mut v);
        assert_eq!(
            v,
            json!([
                {"id": "1", "action": {"ref": "a.b"}, "status": "succeeded", "context": {"user": "ops"}},
                {"id": "2", "status": "running"},
            ])
        );
        // A whole attribute asked for besides one of its parts: the whole of it.
        let mut v = json!({"id": "1", "action": {"ref": "a.b", "runner_type": "rhai"}, "log": []});
        attributes("include_attributes=action.ref,action&include_attributes=log").apply(&mut v);
        assert_eq!(
            v,
            json!({"id": "1", "action": {"ref": "a.b", "runner_type": "rhai"}, "log": []})
        );
        let mut v = json!({"id": "1", "action": {"ref": "a.b", "runner_type": "rhai"}});
        attributes("include_attributes=action,action.ref").apply(&mut v);
        assert_eq!(
            v,
            json!({"id": "1", "action": {"ref": "a.b", "runner_type": "rhai"}})
        );
    }

    #[test]
    fn exclude_attributes_drops_dotted_paths() {
        let mut v =
            json!({"id": "1", "result": {"stdout": "x", "code": 0}, "log": [1], "status": "ok"});
        attributes("exclude_attributes=log,result.stdout").apply(&mut v);
        assert_eq!(v, json!({"id": "1", "result": {"code": 0}, "status": "ok"}));
        let mut v = json!([{"id": "1", "result": 3}, {"id": "2"}]);
        attributes("exclude_attributes=result").apply(&mut v);
        assert_eq!(v, json!([{"id": "1"}, {"id": "2"}]));
    }

    #[test]
    fn attributes_are_asked_for_or_not() {
        assert!(Attributes::from_query("limit=5").is_none());
        assert!(Attributes::from_query("include_attributes=").is_none());
        let both = Attributes::from_query("include_attributes=a&exclude_attributes=b")
            .expect("asked for")
            .expect_err("both refused");
        assert!(
            both.error.contains("cannot be given together"),
            "{}",
            both.error
        );
    }

    #[test]
    fn faultstrings_carry_the_error_and_its_detail_in_one_line() {
        assert_eq!(faultstring("no rule x", &Value::Null), "no rule x");
        assert_eq!(
            faultstring(
                "invalid parameters for action 'examples.greet'",
                &json!([
                    {"parameter": "name", "message": "is required"},
                    {"parameter": "times", "message": "expected an integer"},
                ])
            ),
            "invalid parameters for action 'examples.greet': name: is required; times: expected an integer"
        );
        assert_eq!(
            faultstring("bad alert", &json!({"path": "$.alerts[0]"})),
            r#"bad alert: {"path":"$.alerts[0]"}"#
        );
        assert_eq!(faultstring("x", &json!("why")), "x: why");
    }

    #[test]
    fn python_booleans_read_as_booleans() {
        for (text, b) in [
            ("True", true),
            ("true", true),
            ("1", true),
            ("False", false),
            ("false", false),
            ("0", false),
        ] {
            assert_eq!(parse_bool(text), Some(b), "{text}");
        }
        assert_eq!(parse_bool("yes please"), None);
    }

    #[test]
    fn key_scopes_name_the_system_scope_or_refuse_clearly() {
        assert_eq!(KeyScope::parse(None).expect("default"), KeyScope::System);
        for s in ["system", "st2kv.system"] {
            assert_eq!(KeyScope::parse(Some(s)).expect(s), KeyScope::System);
            assert!(KeyScope::parse(Some(s)).expect(s).system_only("k").is_ok());
        }
        for s in ["user", "st2kv.user"] {
            let scope = KeyScope::parse(Some(s)).expect(s);
            assert_eq!(scope, KeyScope::User);
            let e = scope.system_only("k").expect_err(s);
            assert!(e.error.contains("system scope only"), "{}", e.error);
        }
        assert_eq!(KeyScope::parse(Some("all")).expect("all"), KeyScope::All);
        let e = KeyScope::parse(Some("galaxy")).expect_err("unknown scope");
        assert!(e.error.contains("'galaxy'"), "{}", e.error);
    }

    #[test]
    fn time_windows_read_st2_times_and_bound_exclusively() {
        let w = TimeWindow::parse(
            "timestamp",
            Some("2024-05-01T10:00:00.000Z"),
            Some("2024-05-01T11:00:00"),
        )
        .expect("valid");
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&Utc)
        };
        assert!(w.contains(&at("2024-05-01T10:30:00Z")));
        assert!(!w.contains(&at("2024-05-01T10:00:00Z")));
        assert!(!w.contains(&at("2024-05-01T11:00:00Z")));
        assert!(TimeWindow::parse("timestamp", None, None)
            .expect("open")
            .is_open());
        let e = TimeWindow::parse("enforced_at", Some("yesterday"), None).expect_err("not a time");
        assert!(e.error.contains("enforced_at_gt"), "{}", e.error);
    }

    #[test]
    fn stored_lists_filtered_page_by_page_newest_or_oldest_first() {
        // A stored list of 0..2500, newest (highest) first, as the store pages it.
        let stored: Vec<u32> = (0..2500).rev().collect();
        let fetch = |limit: usize, offset: usize| -> StoreResult<Vec<u32>> {
            Ok(stored.iter().skip(offset).take(limit).copied().collect())
        };
        let even = Some(|n: &u32| n.is_multiple_of(2));
        let page = scan(fetch, even, 3, 4, false).expect("scan");
        assert_eq!(page.items, [2492, 2490, 2488, 2486]);
        assert_eq!(page.total, 8, "3 skipped, 4 given, and more after");
        let page = scan(fetch, even, 1248, 10, false).expect("scan");
        assert_eq!(page.items, [2, 0]);
        assert_eq!(page.total, 1250, "the end reached: exact");
        let page = scan(fetch, even, 2, 3, true).expect("scan");
        assert_eq!(page.items, [4, 6, 8]);
        assert_eq!(page.total, 1250);
        let none: Option<fn(&u32) -> bool> = None;
        let page = scan(fetch, none, 0, 2, false).expect("scan");
        assert_eq!((page.items, page.total), (vec![2499, 2498], 3));
        let page = scan(fetch, none, 2498, 5, false).expect("scan");
        assert_eq!((page.items, page.total), (vec![1, 0], 2500));
    }
}
