//! The executions part of the HTTP API (st2's `/api/v1/executions`): list, get, request,
//! cancel, pause/resume/cancel through `PUT`, re-run, output and children.
//!
//! Handlers translate between HTTP and the engine; they never touch the store but through its
//! narrow interface, and every error goes through [`ApiError`].

use super::*;

#[derive(Deserialize)]
pub(super) struct ExecutionQuery {
    action: Option<String>,
    status: Option<String>,
    /// An execution's id, or st2's `null`: top-level executions only.
    parent: Option<String>,
    trigger_instance: Option<String>,
    rule: Option<String>,
    /// The user an execution runs as.
    user: Option<String>,
    /// Started after, before (st2's `timestamp_gt`, `timestamp_lt`).
    timestamp_gt: Option<String>,
    timestamp_lt: Option<String>,
    /// Oldest first (st2's `sort_asc=True`); newest first is the default (`sort_desc`).
    #[serde(default, deserialize_with = "st2::py_bool")]
    sort_asc: Option<bool>,
    #[serde(default, deserialize_with = "st2::py_bool", rename = "sort_desc")]
    _sort_desc: Option<bool>,
    #[serde(default, deserialize_with = "limit")]
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) async fn list_executions(
    State(state): State<AppState>,
    Query(q): Query<ExecutionQuery>,
) -> ApiResult<Response> {
    let status = match &q.status {
        Some(s) => Some(ExecutionStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status '{s}' is not one of: {}",
                ExecutionStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
        None => None,
    };
    // st2's `parent=null` (what `st2 execution list` asks by default): no parent.
    let top_level = q.parent.as_deref() == Some("null");
    let filter = ExecutionFilter {
        action: q.action,
        status,
        parent: q.parent.filter(|_| !top_level),
        trigger_instance: q.trigger_instance,
        rule: q.rule,
    };
    let window = st2::TimeWindow::parse(
        "timestamp",
        q.timestamp_gt.as_deref(),
        q.timestamp_lt.as_deref(),
    )?;
    let user = q.user;
    let keep =
        (top_level || user.is_some() || !window.is_open()).then_some(move |e: &Execution| {
            (!top_level || e.parent.is_none())
                && user.as_ref().is_none_or(|u| e.user.as_ref() == Some(u))
                && window.contains(&e.start_timestamp)
        });
    let oldest_first = q.sort_asc == Some(true);
    let (limit, offset) = page(q.limit, q.offset);
    off_runtime(move || {
        let store = &state.engine.store;
        let page = st2::scan(
            |limit, offset| store.list_executions(&filter, limit, offset),
            keep,
            offset,
            limit,
            oldest_first,
        )?;
        let loaded = state.engine.loaded();
        let list = page.items.iter().map(|e| execution_json(&loaded, e));
        Ok((Value::Array(list.collect()), page.total))
    })
    .await
}

pub(super) async fn get_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = state
        .engine
        .store
        .execution(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no execution {id}")))?;
    Ok(Json(execution_json(&state.engine.loaded(), &e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecutionRequest {
    action: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    user: Option<String>,
    /// st2's `delay`: milliseconds to wait before the execution is scheduled.
    #[serde(default)]
    delay: Option<u64>,
    /// With remote workers: the named queue to run it from (squall's own field).
    #[serde(default)]
    queue: Option<String>,
    /// st2's `context` (`st2 run --trace-tag`, `--trace-id`): accepted, not kept (a trace tag
    /// is a trigger instance's in squall).
    #[serde(default, rename = "context")]
    _context: Option<Value>,
}

/// When an execution asked to wait `delay` milliseconds may start.
pub(super) fn not_before(delay: Option<u64>) -> ApiResult<Option<chrono::DateTime<Utc>>> {
    let Some(ms) = delay else {
        return Ok(None);
    };
    i64::try_from(ms)
        .ok()
        .and_then(chrono::TimeDelta::try_milliseconds)
        .and_then(|d| Utc::now().checked_add_signed(d))
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("delay of {ms} ms is too large")))
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    check_nesting(body)?;
    // The error names the field it is about (`parameters.delay: number out of range ...`).
    let mut reader = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid request body: field '{path}': {inner}"))
        }
    })?;
    reader
        .end()
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    Ok(value)
}

/// How deep a request's JSON may nest. Records keep what a request carries a few levels down
/// (a webhook's body is an instance's `payload.body`), and what is stored must read back
/// (serde_json reads at most 128 levels), so deeper bodies are refused before anything is
/// accepted.
pub(super) const MAX_JSON_NESTING: usize = 100;

/// Refuses a JSON text nested deeper than [`MAX_JSON_NESTING`] (counted on the bytes, before
/// parsing).
pub(super) fn check_nesting(body: &[u8]) -> ApiResult<()> {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_JSON_NESTING {
        return Err(ApiError::bad_request(format!(
            "the body nests {deepest} levels deep: at most {MAX_JSON_NESTING} are accepted"
        )));
    }
    Ok(())
}

pub(super) async fn create_execution(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ExecutionRequest = parse_json(&body)?;
    let user = acting_user(caller.as_deref(), req.user, "api")?;
    let loaded = state.engine.loaded();
    let mut e = state
        .engine
        .new_execution(&loaded, &req.action, req.parameters)?;
    e.user = Some(user);
    e.not_before = not_before(req.delay)?;
    if let Some(q) = req.queue.filter(|q| !q.trim().is_empty()) {
        e.queue = Some(q.trim().to_string());
    }
    let e = state.engine.request(e).await?;
    Ok((StatusCode::CREATED, Json(execution_json(&loaded, &e))).into_response())
}

/// Cancels an execution: its JSON, canceling or canceled. One that ended otherwise is answered
/// as st2 answers it, 200 with only `faultstring` saying so (what st2's CLI prints).
pub(super) async fn cancel_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = state.engine.cancel(&id).await?;
    if e.status.is_terminal() && e.status != ExecutionStatus::Canceled {
        return Ok(Json(json!({
            "faultstring": format!(
                "Action cannot be canceled. State of action execution is {}.",
                e.status.as_str()
            )
        })));
    }
    Ok(Json(execution_json(&state.engine.loaded(), &e)))
}

/// `PUT /api/v1/executions/{id}` with `{status}`, as st2's `execution pause|resume`:
/// `pausing`/`paused` pauses a workflow, `resuming`/`running` resumes it, `canceling`/`canceled`
/// cancels any execution.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateExecution {
    status: String,
}

pub(super) async fn update_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: UpdateExecution = parse_json(&body)?;
    let control = match req.status.as_str() {
        "pausing" | "paused" => Control::Pause,
        "resuming" | "running" => Control::Resume,
        "canceling" | "canceled" => {
            let e = state.engine.cancel(&id).await?;
            return Ok(Json(execution_json(&state.engine.loaded(), &e)));
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "status: '{other}' cannot be asked for; use pausing, resuming or canceling"
            )))
        }
    };
    let e = state.engine.control_workflow(&id, control).await?;
    Ok(Json(execution_json(&state.engine.loaded(), &e)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RerunRequest {
    #[serde(default)]
    parameters: Map<String, Value>,
    /// For a workflow: run it again from these failed tasks, keeping what succeeded.
    #[serde(default)]
    tasks: Vec<String>,
    /// With-items tasks among `tasks` whose every item runs again (not only the failed ones).
    #[serde(default)]
    reset: Vec<String>,
    /// st2's `delay`: milliseconds to wait before the re-run is scheduled.
    #[serde(default)]
    delay: Option<u64>,
}

pub(super) async fn rerun_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: RerunRequest = if body.is_empty() {
        RerunRequest::default()
    } else {
        parse_json(&body)?
    };
    let old = state
        .engine
        .store
        .execution(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no execution {id}")))?;
    let loaded = state.engine.loaded();
    if !req.tasks.is_empty() {
        if !req.parameters.is_empty() {
            return Err(ApiError::bad_request(
                "a re-run from tasks keeps the workflow's parameters: give tasks or parameters, not both",
            ));
        }
        if !is_workflow(&loaded, &old) {
            return Err(EngineError::NotWorkflow(old.id).into());
        }
        let e = state
            .engine
            .rerun_workflow(&old, &req.tasks, &req.reset)
            .await?;
        return Ok((StatusCode::CREATED, Json(execution_json(&loaded, &e))).into_response());
    }
    if !req.reset.is_empty() {
        return Err(ApiError::bad_request(
            "reset names with-items tasks of a re-run from tasks: give it with tasks",
        ));
    }
    let mut params = old.parameters.clone();
    let meta = loaded.catalog.action(&old.action).map(|a| &a.meta);
    for (name, value) in req.parameters {
        // A secret sent back as shown (masked) keeps the value it had.
        if value == squall_actions::SECRET_MASK && meta.is_some_and(|m| m.is_secret(&name)) {
            continue;
        }
        params.insert(name, value);
    }
    let mut e: Execution = state.engine.new_execution(&loaded, &old.action, params)?;
    e.rerun_of = Some(old.id.clone());
    e.queue = old.queue.clone();
    e.not_before = not_before(req.delay)?;
    e.user = match caller {
        Some(axum::Extension(Caller(user))) => Some(user),
        None => old.user.clone(),
    };
    let e = state.engine.request(e).await?;
    Ok((StatusCode::CREATED, Json(execution_json(&loaded, &e))).into_response())
}

#[derive(Deserialize)]
pub(super) struct OutputQuery {
    /// st2's `output_type`: `stdout`, `stderr` or `all` (the default). A script's warnings and
    /// errors are its stderr, the rest its stdout.
    output_type: Option<String>,
}

/// st2's `GET /executions/{id}/output`: what the action wrote, as plain text, a line each.
pub(super) async fn execution_output(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<OutputQuery>,
) -> ApiResult<Response> {
    use squall_actions::LogLevel;
    let e = found(state.engine.store.execution(&id)?, "execution", &id)?;
    let stderr = |l: &squall_actions::LogLine| matches!(l.level, LogLevel::Warn | LogLevel::Error);
    let keep: fn(bool) -> bool = match q.output_type.as_deref().unwrap_or("all") {
        "all" => |_| true,
        "stderr" => |is_err| is_err,
        "stdout" => |is_err| !is_err,
        other => {
            return Err(ApiError::bad_request(format!(
                "output_type '{other}' is not one of: all, stdout, stderr"
            )))
        }
    };
    let mut text = String::new();
    for line in e.log.iter().filter(|l| keep(stderr(l))) {
        text.push_str(&line.message);
        text.push('\n');
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct ChildrenQuery {
    /// How many levels down: st2's default, -1, is every level.
    depth: Option<i64>,
}

/// A workflow's executions, as st2's `GET /executions/{id}/children`: its tasks' executions,
/// and theirs (every level unless `depth` says otherwise), parents before their children.
pub(super) async fn execution_children(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ChildrenQuery>,
) -> ApiResult<Json<Value>> {
    found(state.engine.store.execution(&id)?, "execution", &id)?;
    let depth = q.depth.unwrap_or(-1);
    let loaded = state.engine.loaded();
    let mut out = Vec::new();
    let mut level = vec![id];
    let mut down = 0i64;
    while !level.is_empty() && (depth < 0 || down < depth) {
        let mut next = Vec::new();
        for parent in level {
            let filter = ExecutionFilter {
                parent: Some(parent),
                ..ExecutionFilter::default()
            };
            let mut children = state.engine.store.list_executions(&filter, 10_000, 0)?;
            // Oldest first, as the workflow ran them.
            children.reverse();
            for c in children {
                next.push(c.id.clone());
                out.push(execution_json(&loaded, &c));
            }
        }
        level = next;
        down += 1;
    }
    Ok(Json(Value::Array(out)))
}
