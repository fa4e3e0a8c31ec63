//! The console's pages: each reads what it shows through the API (`api_get`) or, for figures
//! the API has no list of, from the engine's own counters, and renders one template.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::graph::{workflow_svg, NodeInfo, NodeState};
use super::{api_call, api_get, error_page, render, same_origin, ApiFailure};
use crate::api::AppState;

/// Query-string text, escaped.
fn q(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn failed(state: &AppState, headers: &HeaderMap, f: ApiFailure) -> Response {
    error_page(state, headers, f.status, &f.message)
}

/// The figures the overview shows (also `GET /api/v1/overview`, which the page's script reads
/// to stay live).
pub fn overview_json(state: &AppState) -> Value {
    let engine = &state.engine;
    let stored: BTreeMap<&str, u64> = engine
        .store
        .count_executions_by_status()
        .unwrap_or_default()
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    let sensors: Vec<Value> = match engine.sensors.lock() {
        Ok(s) => s.iter().map(|s| s.json()).collect(),
        Err(p) => p.into_inner().iter().map(|s| s.json()).collect(),
    };
    let mut sensors = sensors;
    if let Some(remote) = engine.remote() {
        sensors.extend(remote.remote_sensors());
    }
    let mut figures = engine.metrics.snapshot();
    if let Value::Object(m) = &mut figures {
        m.insert("queue_depth".into(), json!(engine.queue.len()));
        m.insert("stored".into(), json!(stored));
        m.insert("sensors".into(), Value::Array(sensors));
    }
    figures
}

pub async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let s = state.clone();
    let figures = tokio::task::spawn_blocking(move || overview_json(&s))
        .await
        .unwrap_or(Value::Null);
    let recent = api_get(&state, "/api/v1/executions?limit=10&parent=null")
        .await
        .unwrap_or(Value::Array(Vec::new()));
    render(
        &state,
        &headers,
        "overview.html",
        "overview",
        "Overview",
        json!({"figures": figures, "recent": recent}),
    )
}

#[derive(Deserialize, Default)]
pub struct ExecutionFilters {
    action: Option<String>,
    status: Option<String>,
    rule: Option<String>,
    trigger_instance: Option<String>,
    user: Option<String>,
    /// Started after / before (RFC 3339, or a date).
    since: Option<String>,
    until: Option<String>,
    /// Top-level executions only (the default), or every one.
    all: Option<String>,
    page: Option<usize>,
}

const PAGE_SIZE: usize = 50;

fn filled(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

pub async fn executions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(f): Query<ExecutionFilters>,
) -> Response {
    let page = f.page.unwrap_or(0);
    // Each filter: its name in the page's URL, its name in the API's query, its value.
    let given: Vec<(&str, &str, &str)> = [
        ("action", "action", &f.action),
        ("status", "status", &f.status),
        ("rule", "rule", &f.rule),
        ("trigger_instance", "trigger_instance", &f.trigger_instance),
        ("user", "user", &f.user),
        ("since", "timestamp_gt", &f.since),
        ("until", "timestamp_lt", &f.until),
        ("all", "", &f.all),
    ]
    .into_iter()
    .filter_map(|(url, api, v)| filled(v).map(|v| (url, api, v)))
    .collect();
    let mut query = vec![
        format!("limit={}", PAGE_SIZE + 1),
        format!("offset={}", page * PAGE_SIZE),
    ];
    query.extend(
        given
            .iter()
            .filter(|(_, api, _)| !api.is_empty())
            .map(|(_, api, v)| format!("{api}={}", q(v))),
    );
    let all = filled(&f.all).is_some();
    if !all && filled(&f.trigger_instance).is_none() && filled(&f.rule).is_none() {
        query.push("parent=null".into());
    }
    let list = match api_get(&state, &format!("/api/v1/executions?{}", query.join("&"))).await {
        Ok(v) => v,
        Err(e) => return failed(&state, &headers, e),
    };
    let mut rows = list.as_array().cloned().unwrap_or_default();
    let more = rows.len() > PAGE_SIZE;
    rows.truncate(PAGE_SIZE);
    let loaded = state.engine.loaded();
    let actions: Vec<String> = loaded
        .catalog
        .actions()
        .map(|a| a.reference.clone())
        .collect();
    let rules: Vec<String> = loaded.catalog.rules().map(|r| r.rule.reference()).collect();
    let filters = json!({
        "action": filled(&f.action), "status": filled(&f.status), "rule": filled(&f.rule),
        "trigger_instance": filled(&f.trigger_instance), "user": filled(&f.user),
        "since": filled(&f.since), "until": filled(&f.until), "all": all,
    });
    // The same filters, for the previous and next pages' links.
    let kept: Vec<String> = given
        .iter()
        .map(|(url, _, v)| format!("{url}={}", q(v)))
        .collect();
    let link = |p: usize| {
        let mut parts = kept.clone();
        if p > 0 {
            parts.push(format!("page={p}"));
        }
        if parts.is_empty() {
            "/executions".to_string()
        } else {
            format!("/executions?{}", parts.join("&"))
        }
    };
    render(
        &state,
        &headers,
        "executions.html",
        "executions",
        "Executions",
        json!({
            "rows": rows,
            "filters": filters,
            "actions": actions,
            "rules": rules,
            "statuses": crate::model::ExecutionStatus::ALL,
            "page": page,
            "previous": (page > 0).then(|| link(page - 1)),
            "next": more.then(|| link(page + 1)),
        }),
    )
}

/// The workflow's graph for an execution, with its tasks' states from its children.
async fn graph_of(state: &AppState, e: &Value) -> Option<String> {
    if e["action"]["runner_type"] != "orquesta" {
        return None;
    }
    let action = e["action"]["ref"].as_str()?;
    let loaded = state.engine.loaded();
    let action = loaded.catalog.action(action)?;
    let source = action.source.clone()?;
    let wf = crate::workflow::Workflow::parse_for(action.meta.runner_type, &source).ok()?;
    let id = e["id"].as_str()?;
    let children = api_get(
        state,
        &format!(
            "/api/v1/executions?parent={}&limit=10000&sort_asc=true",
            q(id)
        ),
    )
    .await
    .ok()?;
    let mut states: HashMap<String, NodeInfo> = HashMap::new();
    let mut items: HashMap<String, (usize, usize, bool, bool)> = HashMap::new();
    for c in children.as_array().into_iter().flatten() {
        let Some(task) = c["task"].as_str() else {
            continue;
        };
        let status = c["status"].as_str().unwrap_or("");
        let done = crate::model::ExecutionStatus::parse(status).is_some_and(|s| s.is_terminal());
        let entry = items.entry(task.to_string()).or_default();
        entry.1 += 1;
        if done {
            entry.0 += 1;
        }
        entry.2 |= matches!(status, "failed" | "timeout" | "abandoned");
        entry.3 |= c["item"].is_number();
        let node_state = match status {
            "succeeded" => NodeState::Succeeded,
            "failed" | "timeout" | "abandoned" => NodeState::Failed,
            "canceled" | "canceling" => NodeState::Canceled,
            "requested" | "scheduled" | "delayed" => NodeState::Pending,
            _ => NodeState::Running,
        };
        let link = Some(format!("/executions/{}", c["id"].as_str().unwrap_or("")));
        states.insert(
            task.to_string(),
            NodeInfo {
                state: node_state,
                items_done: None,
                link,
            },
        );
    }
    for (task, (done, total, any_failed, is_items)) in items {
        if let Some(info) = states.get_mut(&task) {
            if is_items {
                info.items_done = Some((done, total));
                info.link = None;
                info.state = if any_failed {
                    NodeState::Failed
                } else if done < total {
                    NodeState::Running
                } else {
                    info.state
                };
            }
        }
    }
    Some(workflow_svg(&wf, &states))
}

pub async fn execution(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let e = match api_get(&state, &format!("/api/v1/executions/{}", q(&id))).await {
        Ok(v) => v,
        Err(err) => return failed(&state, &headers, err),
    };
    let children = api_get(
        &state,
        &format!(
            "/api/v1/executions?parent={}&limit=1000&sort_asc=true",
            q(&id)
        ),
    )
    .await
    .unwrap_or(Value::Array(Vec::new()));
    let graph = graph_of(&state, &e).await;
    let title = format!("{} {}", e["action"]["ref"].as_str().unwrap_or(""), id);
    render(
        &state,
        &headers,
        "execution.html",
        "executions",
        &title,
        json!({"e": e, "children": children, "graph": graph}),
    )
}

/// The graph alone (the page's script swaps it in as the tasks change).
pub async fn execution_graph(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match api_get(&state, &format!("/api/v1/executions/{}", q(&id))).await {
        Ok(e) => match graph_of(&state, &e).await {
            Some(svg) => ([("content-type", "image/svg+xml")], svg).into_response(),
            None => (StatusCode::NOT_FOUND, "not a workflow").into_response(),
        },
        Err(f) => (f.status, f.message).into_response(),
    }
}

/// Cancel, re-run, pause or resume, from a form on the list or the detail page.
pub async fn execution_command(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, command)): Path<(String, String)>,
) -> Response {
    if !same_origin(&headers) {
        return error_page(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            "a change must come from this console's own pages",
        );
    }
    let path = format!("/api/v1/executions/{}", q(&id));
    let outcome = match command.as_str() {
        "cancel" => api_call(&state, "DELETE", &path, None).await,
        "rerun" => api_call(&state, "POST", &format!("{path}/re_run"), Some(json!({}))).await,
        "pause" => api_call(&state, "PUT", &path, Some(json!({"status": "pausing"}))).await,
        "resume" => api_call(&state, "PUT", &path, Some(json!({"status": "resuming"}))).await,
        other => {
            return error_page(
                &state,
                &headers,
                StatusCode::NOT_FOUND,
                &format!(
                    "'{other}' is not something an execution does (cancel, rerun, pause, resume)"
                ),
            )
        }
    };
    match outcome {
        Ok(v) => {
            let to = if command == "rerun" {
                format!("/executions/{}", v["id"].as_str().unwrap_or(&id))
            } else {
                back(&headers, &format!("/executions/{id}"))
            };
            Redirect::to(&to).into_response()
        }
        Err(f) => failed(&state, &headers, f),
    }
}

/// The page the request came from (this site's), else `fallback`.
fn back(headers: &HeaderMap, fallback: &str) -> String {
    headers
        .get("referer")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| {
            let rest = r.split_once("://").map(|(_, rest)| rest).unwrap_or(r);
            rest.find('/').map(|i| rest[i..].to_string())
        })
        .unwrap_or_else(|| fallback.to_string())
}

/// A trigger instance and everything that followed from it: each rule's verdict on it, the
/// executions the matching ones requested, their children, and the `core.action_finished`
/// instances they fired, followed the same way (a few levels down).
pub async fn trace(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let root = match trace_instance(&state, &id, 0).await {
        Ok(v) => v,
        Err(f) => return failed(&state, &headers, f),
    };
    render(
        &state,
        &headers,
        "trace.html",
        "executions",
        &format!("Trace of {id}"),
        json!({"root": root}),
    )
}

/// How deep `core.action_finished` chains are followed.
const TRACE_DEPTH: usize = 3;

fn trace_instance<'a>(
    state: &'a AppState,
    id: &'a str,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, ApiFailure>> + Send + 'a>> {
    Box::pin(async move {
        let ti = api_get(state, &format!("/api/v1/triggerinstances/{}", q(id))).await?;
        let trigger = ti["trigger"].as_str().unwrap_or("").to_string();
        let canonical = squall_rules::canonical_trigger_ref(&trigger).to_string();
        let loaded = state.engine.loaded();
        let rules: Vec<(String, bool)> = loaded
            .catalog
            .rules()
            .filter(|r| squall_rules::canonical_trigger_ref(&r.rule.trigger_type) == canonical)
            .map(|r| (r.rule.reference(), r.rule.enabled))
            .collect();
        drop(loaded);
        let mut verdicts = Vec::new();
        for (rule, enabled) in rules {
            let test = api_call(
                state,
                "POST",
                &format!("/api/v1/rules/{}/test", q(&rule)),
                Some(json!({"trigger_instance_id": id})),
            )
            .await
            .unwrap_or_else(|f| json!({"matches": false, "reason": f.message}));
            let executions = if test["matches"] == true {
                api_get(
                    state,
                    &format!(
                        "/api/v1/executions?trigger_instance={}&rule={}&sort_asc=true",
                        q(id),
                        q(&rule)
                    ),
                )
                .await
                .unwrap_or(Value::Array(Vec::new()))
            } else {
                Value::Array(Vec::new())
            };
            let mut followed = Vec::new();
            for e in executions.as_array().into_iter().flatten() {
                followed.push(trace_execution(state, e.clone(), depth).await);
            }
            verdicts.push(json!({
                "rule": rule,
                "enabled": enabled,
                "test": test,
                "executions": followed,
            }));
        }
        Ok(json!({"instance": ti, "verdicts": verdicts}))
    })
}

async fn trace_execution(state: &AppState, e: Value, depth: usize) -> Value {
    let id = e["id"].as_str().unwrap_or("").to_string();
    let children = api_get(
        state,
        &format!(
            "/api/v1/executions?parent={}&sort_asc=true&limit=1000",
            q(&id)
        ),
    )
    .await
    .unwrap_or(Value::Array(Vec::new()));
    // The instances of `core.action_finished` this execution fired.
    let mut finished = Vec::new();
    if depth < TRACE_DEPTH {
        let list = api_get(
            state,
            "/api/v1/triggerinstances?trigger=core.st2.generic.actiontrigger&limit=200",
        )
        .await
        .unwrap_or(Value::Array(Vec::new()));
        for ti in list.as_array().into_iter().flatten() {
            if ti["payload"]["execution_id"] == id.as_str() {
                if let Some(tid) = ti["id"].as_str() {
                    if let Ok(t) = trace_instance(state, tid, depth + 1).await {
                        finished.push(t);
                    }
                }
            }
        }
    }
    json!({"e": e, "children": children, "finished": finished})
}

pub async fn rules(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let list = match api_get(&state, "/api/v1/rules").await {
        Ok(v) => v,
        Err(f) => return failed(&state, &headers, f),
    };
    let hits = state.engine.metrics.snapshot()["rule_matches"].clone();
    render(
        &state,
        &headers,
        "rules.html",
        "rules",
        "Rules",
        json!({"rules": list, "hits": hits}),
    )
}

#[derive(Deserialize, Default)]
pub struct RuleTestForm {
    trigger_instance_id: Option<String>,
}

async fn rule_page(
    state: &AppState,
    headers: &HeaderMap,
    rule_ref: &str,
    tested: Option<(String, Value)>,
) -> Response {
    let rule = match api_get(state, &format!("/api/v1/rules/{}", q(rule_ref))).await {
        Ok(v) => v,
        Err(f) => return failed(state, headers, f),
    };
    let enforcements = api_get(
        state,
        &format!("/api/v1/ruleenforcements?rule_ref={}&limit=20", q(rule_ref)),
    )
    .await
    .unwrap_or(Value::Array(Vec::new()));
    let trigger = rule["trigger"]["type"].as_str().unwrap_or("").to_string();
    let instances = api_get(
        state,
        &format!("/api/v1/triggerinstances?trigger={}&limit=20", q(&trigger)),
    )
    .await
    .unwrap_or(Value::Array(Vec::new()));
    let hits = state.engine.metrics.snapshot()["rule_matches"][rule_ref].clone();
    let throttled: Vec<Value> = state
        .engine
        .throttle_groups(rule_ref)
        .into_iter()
        .map(|(group, count, frees)| json!({"group": group, "count": count, "frees_at": frees.to_rfc3339()}))
        .collect();
    let (tested_id, test) = match tested {
        Some((id, t)) => (Some(id), t),
        None => (None, Value::Null),
    };
    render(
        state,
        headers,
        "rule.html",
        "rules",
        &format!("Rule {rule_ref}"),
        json!({
            "rule": rule,
            "enforcements": enforcements,
            "instances": instances,
            "hits": hits,
            "throttled": throttled,
            "tested_id": tested_id,
            "test": test,
        }),
    )
}

pub async fn rule(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(rule_ref): Path<String>,
) -> Response {
    rule_page(&state, &headers, &rule_ref, None).await
}

/// Tests the rule against a stored trigger instance, in the page.
pub async fn rule_test(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(rule_ref): Path<String>,
    Form(f): Form<RuleTestForm>,
) -> Response {
    if !same_origin(&headers) {
        return error_page(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            "a test must come from this console's own pages",
        );
    }
    let id = f.trigger_instance_id.unwrap_or_default().trim().to_string();
    let test = api_call(
        &state,
        "POST",
        &format!("/api/v1/rules/{}/test", q(&rule_ref)),
        Some(json!({"trigger_instance_id": id})),
    )
    .await
    .unwrap_or_else(|f| json!({"error": f.message}));
    rule_page(&state, &headers, &rule_ref, Some((id, test))).await
}

/// Success rate, durations and last results per action, from its latest executions.
fn action_stats(executions: &[Value]) -> Value {
    let finished: Vec<&Value> = executions
        .iter()
        .filter(|e| e["end_timestamp"].is_string())
        .collect();
    let ok = finished
        .iter()
        .filter(|e| e["status"] == "succeeded")
        .count();
    let mut durations: Vec<f64> = finished
        .iter()
        .filter_map(|e| e["elapsed_seconds"].as_f64())
        .collect();
    durations.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| -> Option<f64> {
        (!durations.is_empty())
            .then(|| durations[((durations.len() - 1) as f64 * q).round() as usize])
    };
    json!({
        "finished": finished.len(),
        "succeeded": ok,
        "success_rate": (!finished.is_empty()).then(|| (ok as f64 * 100.0 / finished.len() as f64).round()),
        "p50": pick(0.5),
        "p95": pick(0.95),
    })
}

pub async fn actions(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let list = match api_get(&state, "/api/v1/actions").await {
        Ok(v) => v,
        Err(f) => return failed(&state, &headers, f),
    };
    // The latest executions (top-level or not), grouped by action.
    let recent = api_get(&state, "/api/v1/executions?limit=2000")
        .await
        .unwrap_or(Value::Array(Vec::new()));
    let mut by_action: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in recent.as_array().into_iter().flatten() {
        if let Some(a) = e["action"]["ref"].as_str() {
            by_action.entry(a.to_string()).or_default().push(e.clone());
        }
    }
    let stats: Map<String, Value> = by_action
        .iter()
        .map(|(a, list)| (a.clone(), action_stats(list)))
        .collect();
    render(
        &state,
        &headers,
        "actions.html",
        "actions",
        "Actions",
        json!({"actions": list, "stats": stats}),
    )
}

async fn action_page(
    state: &AppState,
    headers: &HeaderMap,
    action_ref: &str,
    given: Value,
    error: Option<String>,
) -> Response {
    let action = match api_get(state, &format!("/api/v1/actions/{}", q(action_ref))).await {
        Ok(v) => v,
        Err(f) => return failed(state, headers, f),
    };
    let recent = api_get(
        state,
        &format!("/api/v1/executions?action={}&limit=20", q(action_ref)),
    )
    .await
    .unwrap_or(Value::Array(Vec::new()));
    let stats = action_stats(recent.as_array().map(Vec::as_slice).unwrap_or(&[]));
    let mut r = render(
        state,
        headers,
        "action.html",
        "actions",
        &format!("Action {action_ref}"),
        json!({"action": action, "recent": recent, "stats": stats, "given": given, "error": error}),
    );
    if error.is_some() {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    r
}

pub async fn action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(action_ref): Path<String>,
) -> Response {
    action_page(&state, &headers, &action_ref, json!({}), None).await
}

/// The run form: each field is a parameter, read as the API reads a CLI value (`3`, `true`,
/// `[1, 2]`, `{"a": 1}`), empty ones left out.
pub async fn action_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(action_ref): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !same_origin(&headers) {
        return error_page(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            "a run must come from this console's own pages",
        );
    }
    let types: HashMap<String, squall_actions::ParamType> = state
        .engine
        .loaded()
        .catalog
        .action(&action_ref)
        .map(|a| {
            a.meta
                .parameters
                .iter()
                .map(|(n, p)| (n.clone(), p.ty))
                .collect()
        })
        .unwrap_or_default();
    let mut params = Map::new();
    let mut given = Map::new();
    let mut bad = Vec::new();
    for (name, value) in form {
        let Some(name) = name.strip_prefix("param.") else {
            continue;
        };
        given.insert(name.to_string(), Value::String(value.clone()));
        if value.trim().is_empty() {
            continue;
        }
        let ty = types
            .get(name)
            .copied()
            .unwrap_or(squall_actions::ParamType::String);
        match squall_actions::parse_cli_value(ty, &value) {
            Ok(v) => {
                params.insert(name.to_string(), v);
            }
            Err(why) => bad.push(format!("{name}: {why}")),
        }
    }
    if !bad.is_empty() {
        return action_page(
            &state,
            &headers,
            &action_ref,
            Value::Object(given),
            Some(bad.join("; ")),
        )
        .await;
    }
    match api_call(
        &state,
        "POST",
        "/api/v1/executions",
        Some(json!({"action": action_ref, "parameters": params})),
    )
    .await
    {
        Ok(e) => {
            Redirect::to(&format!("/executions/{}", e["id"].as_str().unwrap_or(""))).into_response()
        }
        Err(f) => {
            action_page(
                &state,
                &headers,
                &action_ref,
                Value::Object(given),
                Some(f.message),
            )
            .await
        }
    }
}

pub async fn sensors(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let list = match api_get(&state, "/api/v1/sensors").await {
        Ok(v) => v,
        Err(f) => return failed(&state, &headers, f),
    };
    let workers = api_get(&state, "/api/v1/workers")
        .await
        .unwrap_or(Value::Array(Vec::new()));
    render(
        &state,
        &headers,
        "sensors.html",
        "sensors",
        "Sensors",
        json!({"sensors": list, "workers": workers}),
    )
}

pub async fn timers(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let now = chrono::Utc::now();
    let loaded = state.engine.loaded();
    let mut list = Vec::new();
    for r in loaded.catalog.rules() {
        let rule = &r.rule;
        if !crate::timers::TimerSpec::is_timer_type(&rule.trigger_type) {
            continue;
        }
        let (next, error) =
            match crate::timers::TimerSpec::parse(&rule.trigger_type, &rule.trigger_parameters) {
                Ok(spec) => {
                    let mut next = Vec::new();
                    let mut at = now;
                    while next.len() < 3 {
                        match spec.next_after(at) {
                            Some(t) => {
                                next.push(t.to_rfc3339());
                                at = t;
                            }
                            None => break,
                        }
                    }
                    (next, None)
                }
                Err(e) => (Vec::new(), Some(e)),
            };
        list.push(json!({
            "rule": rule.reference(),
            "enabled": rule.enabled,
            "type": squall_rules::canonical_trigger_ref(&rule.trigger_type),
            "parameters": rule.trigger_parameters,
            "action": rule.action_ref,
            "next": if rule.enabled { next } else { Vec::new() },
            "error": error,
        }));
    }
    drop(loaded);
    render(
        &state,
        &headers,
        "timers.html",
        "timers",
        "Timers",
        json!({"timers": list}),
    )
}

/// A page showing one of the API's lists: its template is `<page>.html`, the list under `page`.
async fn list_page(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    page: &str,
    title: &str,
) -> Response {
    match api_get(state, path).await {
        Ok(list) => {
            let mut ctx = Map::new();
            ctx.insert(page.to_string(), list);
            render(
                state,
                headers,
                &format!("{page}.html"),
                page,
                title,
                Value::Object(ctx),
            )
        }
        Err(f) => failed(state, headers, f),
    }
}

pub async fn keys(State(state): State<AppState>, headers: HeaderMap) -> Response {
    list_page(&state, &headers, "/api/v1/keys", "keys", "Keys").await
}

pub async fn packs(State(state): State<AppState>, headers: HeaderMap) -> Response {
    list_page(&state, &headers, "/api/v1/packs", "packs", "Packs").await
}

/// The platform's boards: apps by cluster (expected vs online, CPU, memory; those below target
/// first), Docker events per action and host, Mesos messages and offers, capacity alerts and
/// the scale-outs they caused.
pub async fn boards(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let capacity = crate::capacity::capacity_json(None);
    let mut apps = capacity["apps"].as_array().cloned().unwrap_or_default();
    let below = |a: &Value| {
        a["expected"]
            .as_u64()
            .is_some_and(|e| a["online"].as_u64().unwrap_or(0) < e)
    };
    apps.sort_by(|a, b| {
        below(b)
            .cmp(&below(a))
            .then_with(|| a["cluster"].as_str().cmp(&b["cluster"].as_str()))
            .then_with(|| a["app"].as_str().cmp(&b["app"].as_str()))
    });
    let apps: Vec<Value> = apps
        .into_iter()
        .map(|mut a| {
            let is_below = below(&a);
            if let Value::Object(m) = &mut a {
                m.insert("below".into(), json!(is_below));
                m.remove("containers");
            }
            a
        })
        .collect();
    let docker = state.engine.metrics.snapshot()["docker_events"].clone();
    let mesos = serde_json::to_value(squall_sensors::mesos_metrics::board().snapshot())
        .unwrap_or(Value::Null);
    let alerts = api_get(
        &state,
        "/api/v1/triggerinstances?trigger=capacity.threshold&limit=20",
    )
    .await
    .unwrap_or(Value::Array(Vec::new()));
    let mut alert_rows = Vec::new();
    for ti in alerts.as_array().into_iter().flatten() {
        let id = ti["id"].as_str().unwrap_or("");
        let caused = api_get(
            &state,
            &format!("/api/v1/executions?trigger_instance={}", q(id)),
        )
        .await
        .unwrap_or(Value::Array(Vec::new()));
        alert_rows.push(json!({"instance": ti, "executions": caused}));
    }
    render(
        &state,
        &headers,
        "boards.html",
        "boards",
        "Boards",
        json!({
            "capacity": {"collected_at": capacity["collected_at"], "error": capacity["error"], "interval_seconds": capacity["interval_seconds"]},
            "apps": apps,
            "docker": docker,
            "mesos": mesos,
            "alerts": alert_rows,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_executions() {
        let list = vec![
            json!({"status": "succeeded", "end_timestamp": "t", "elapsed_seconds": 1.0}),
            json!({"status": "failed", "end_timestamp": "t", "elapsed_seconds": 3.0}),
            json!({"status": "running", "end_timestamp": null}),
        ];
        let s = action_stats(&list);
        assert_eq!(s["finished"], 2);
        assert_eq!(s["success_rate"], 50.0);
        assert_eq!(s["p50"], 3.0);
    }

    #[test]
    fn back_stays_on_this_site() {
        let mut h = HeaderMap::new();
        h.insert(
            "referer",
            "http://127.0.0.1:9101/executions?status=running"
                .parse()
                .expect("header"),
        );
        assert_eq!(back(&h, "/x"), "/executions?status=running");
        assert_eq!(back(&HeaderMap::new(), "/x"), "/x");
    }
}
