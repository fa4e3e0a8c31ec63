//! Action aliases in the HTTP API, on st2's paths and in st2's shapes, for ChatOps clients
//! (hubot, `st2 action-alias`): the list and one alias (`/api/v1/actionalias`), which alias a
//! command matches (`/api/v1/actionalias/match`), the help strings
//! (`/api/v1/actionalias/help`), and running a command (`/api/v1/aliasexecution` and its
//! `match_and_execute`).
//!
//! Matching is `squall_rules::AliasIndex` (built once per load), as `squall alias match`. Only the alias
//! execution endpoints request executions, through the engine as `POST /executions` does (the
//! action's parameter checks apply); nothing here changes what is loaded.

use squall_actions::ParamType;
use squall_rules::{extract_parameters, AliasFormat, Operator};

use super::*;
use crate::packs::{Catalog, LoadedAlias};

/// One loaded alias with the pack it was loaded into and its file relative to that pack (st2's
/// `metadata_file`).
struct Listed<'a> {
    pack: &'a str,
    metadata_file: String,
    loaded: &'a LoadedAlias,
}

/// Every loaded alias, sorted by pack and name as st2 lists them.
fn all_aliases(catalog: &Catalog) -> Vec<Listed<'_>> {
    let mut out: Vec<Listed<'_>> = catalog
        .packs
        .iter()
        .flat_map(|p| {
            p.aliases.iter().map(move |a| Listed {
                pack: p.reference.as_str(),
                metadata_file: a
                    .file
                    .strip_prefix(&p.dir)
                    .unwrap_or(&a.file)
                    .to_string_lossy()
                    .into_owned(),
                loaded: a,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.pack, &a.loaded.alias.name).cmp(&(b.pack, &b.loaded.alias.name)));
    out
}

/// A format as its file wrote it: a string when it was one (its display is its only
/// representation), else `{display, representation}`.
fn format_json(f: &AliasFormat) -> Value {
    match (&f.display, f.representations.as_slice()) {
        (Some(d), [r]) if d == r => Value::String(d.clone()),
        (display, representations) => {
            let mut o = Map::new();
            if let Some(d) = display {
                o.insert("display".into(), Value::String(d.clone()));
            }
            if !representations.is_empty() {
                o.insert("representation".into(), json!(representations));
            }
            Value::Object(o)
        }
    }
}

/// An alias as st2's `ActionAliasAPI` shows it (`id` is its reference: squall has no database
/// ids). `ack` and `result` are left out when the file has none, as st2 leaves them out.
fn alias_json(a: &Listed<'_>) -> Value {
    let alias = &a.loaded.alias;
    let mut o = Map::new();
    o.insert("id".into(), json!(a.loaded.reference));
    o.insert("ref".into(), json!(a.loaded.reference));
    o.insert(
        "uid".into(),
        json!(format!("action_alias:{}:{}", a.pack, alias.name)),
    );
    o.insert("name".into(), json!(alias.name));
    o.insert("pack".into(), json!(a.pack));
    o.insert("description".into(), json!(alias.description));
    o.insert("enabled".into(), json!(alias.enabled));
    o.insert("action_ref".into(), json!(alias.action_ref));
    o.insert(
        "formats".into(),
        Value::Array(alias.formats.iter().map(format_json).collect()),
    );
    if let Some(ack) = &alias.ack {
        let mut v = json!({"enabled": ack.enabled, "append_url": ack.append_url});
        if let Some(f) = &ack.format {
            v["format"] = json!(f);
        }
        if !ack.extra.is_empty() {
            v["extra"] = Value::Object(ack.extra.clone());
        }
        o.insert("ack".into(), v);
    }
    if let Some(result) = &alias.result {
        let mut v = json!({"enabled": result.enabled});
        if let Some(f) = &result.format {
            v["format"] = json!(f);
        }
        if !result.extra.is_empty() {
            v["extra"] = Value::Object(result.extra.clone());
        }
        o.insert("result".into(), v);
    }
    o.insert("extra".into(), Value::Object(alias.extra.clone()));
    // squall's extension, shown only where it is used.
    if alias.allow != squall_rules::Allow::default() {
        o.insert(
            "allow".into(),
            json!({"users": alias.allow.users, "channels": alias.allow.channels}),
        );
    }
    o.insert("metadata_file".into(), json!(a.metadata_file));
    Value::Object(o)
}

#[derive(Deserialize)]
pub(super) struct AliasQuery {
    pack: Option<String>,
    name: Option<String>,
    #[serde(default, deserialize_with = "limit")]
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) async fn list_aliases(
    State(state): State<AppState>,
    Query(q): Query<AliasQuery>,
) -> Response {
    let loaded = state.engine.loaded();
    let list = all_aliases(&loaded.catalog)
        .iter()
        .filter(|a| q.pack.as_deref().is_none_or(|p| p == a.pack))
        .filter(|a| q.name.as_deref().is_none_or(|n| n == a.loaded.alias.name))
        .map(alias_json)
        .collect();
    listed(list, q.limit, q.offset)
}

pub(super) async fn get_alias(
    State(state): State<AppState>,
    Path(ref_or_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let loaded = state.engine.loaded();
    let all = all_aliases(&loaded.catalog);
    let a = all
        .iter()
        .find(|a| a.loaded.reference == ref_or_id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Resource with a reference or id \"{ref_or_id}\" not found"
            ))
        })?;
    Ok(Json(alias_json(a)))
}

#[derive(Deserialize)]
pub(super) struct MatchRequest {
    command: String,
}

/// st2's `POST /actionalias/match`: the one alias whose format takes the command, with that
/// format's display and representation; none or several is a 400 with st2's message.
pub(super) async fn match_alias(
    State(state): State<AppState>,
    Json(req): Json<MatchRequest>,
) -> ApiResult<Json<Value>> {
    let loaded = state.engine.loaded();
    let all = all_aliases(&loaded.catalog);
    let m = loaded
        .aliases
        .match_command(&req.command)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let a = all.get(m.index).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("alias match: index {} out of the list", m.index),
        )
    })?;
    Ok(Json(json!({
        "actionalias": alias_json(a),
        "display": m.display,
        "representation": m.representation,
    })))
}

/// st2's help request: `filter` a regular expression searched in each display, ignoring case.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct HelpRequest {
    filter: Option<String>,
    pack: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// st2's `GET /actionalias/help?filter=&pack=&limit=&offset=`.
pub(super) async fn alias_help_query(
    State(state): State<AppState>,
    Query(q): Query<HelpRequest>,
) -> ApiResult<Json<Value>> {
    Ok(Json(help(&state.engine.loaded().catalog, &q)?))
}

/// The same with the request in a JSON body.
pub(super) async fn alias_help_body(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    // hubot sends no body when it asks for everything.
    let q: HelpRequest = if body.iter().all(u8::is_ascii_whitespace) {
        HelpRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("help request body: {e}")))?
    };
    Ok(Json(help(&state.engine.loaded().catalog, &q)?))
}

/// st2's `generate_helpstring_result`: every display of every enabled alias (of `pack`, when
/// given) that `filter` finds, `available` counting them all and `helpstrings` holding the
/// page `offset`/`limit` select (0 meaning no bound).
fn help(catalog: &Catalog, q: &HelpRequest) -> ApiResult<Value> {
    let filter = Value::String(q.filter.clone().unwrap_or_default());
    let (limit, offset) = (q.limit.unwrap_or(0), q.offset.unwrap_or(0));
    let pack = q.pack.as_deref().filter(|p| !p.is_empty());
    let mut count = 0usize;
    let mut helpstrings = Vec::new();
    for a in all_aliases(catalog) {
        let alias = &a.loaded.alias;
        if !alias.enabled || pack.is_some_and(|p| p != a.pack) {
            continue;
        }
        for f in &alias.formats {
            let Some(display) = f.display.as_deref().filter(|d| !d.is_empty()) else {
                continue;
            };
            let found = Operator::IRegex
                .apply(Some(&json!(display)), &filter, None, Utc::now())
                .map_err(|e| ApiError::bad_request(format!("help filter: {e}")))?;
            if !found {
                continue;
            }
            let skip = match (offset, limit) {
                (0, l) if l > 0 => count >= l,
                (o, 0) if o > 0 => count < o,
                (o, l) if o > 0 && l > 0 => count < o || count >= o.saturating_add(l),
                _ => false,
            };
            if !skip {
                helpstrings.push(json!({
                    "pack": a.pack,
                    "display": display,
                    "description": alias.description,
                }));
            }
            count += 1;
        }
    }
    Ok(json!({"available": count, "helpstrings": helpstrings}))
}

/// st2's `AliasExecutionAPI` / `AliasMatchAndExecuteInputAPI`: the alias (by name, or
/// `pack.name`), the format the command matched (`format`), the command, and who typed it
/// where. The answer goes to `notification_route` (st2's `notification_channel` is its older
/// name; `chatops` when neither is given) with `source_context`.
#[derive(Deserialize)]
pub(super) struct AliasExecutionRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    source_channel: Option<String>,
    #[serde(default)]
    notification_route: Option<String>,
    #[serde(default)]
    notification_channel: Option<String>,
    #[serde(default)]
    source_context: Option<Value>,
}

/// st2's `POST /aliasexecution`: 201 with `{execution, actionalias, message}` (`message`, the
/// alias's `ack.format` rendered, only when it has one).
pub(super) async fn execute_alias(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: AliasExecutionRequest = parse_json(&body)?;
    let run = AliasRun::from_api(caller.as_deref(), &req)?;
    let result = run_alias(&state, run).await?;
    Ok((StatusCode::CREATED, Json(result)).into_response())
}

/// st2's `POST /aliasexecution/match_and_execute`: the command is matched against every alias
/// first (400 with st2's message when none or several take it); 201 with `{"results": [...]}`.
pub(super) async fn match_and_execute_alias(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut req: AliasExecutionRequest = parse_json(&body)?;
    let command = req
        .command
        .clone()
        .ok_or_else(|| ApiError::bad_request("match_and_execute needs a \"command\""))?;
    let (name, format) = match_one(&state, &command).map_err(ApiError::bad_request)?;
    req.name = Some(name);
    req.format = Some(format);
    let run = AliasRun::from_api(caller.as_deref(), &req)?;
    let result = run_alias(&state, run).await?;
    Ok((StatusCode::CREATED, Json(json!({"results": [result]}))).into_response())
}

/// The alias (its reference) and the format that take `command`, or st2's message saying
/// none or several do.
pub(crate) fn match_one(state: &AppState, command: &str) -> Result<(String, String), String> {
    let loaded = state.engine.loaded();
    let m = loaded
        .aliases
        .match_command(command)
        .map_err(|e| e.to_string())?;
    let reference = loaded
        .alias_refs
        .get(m.index)
        .ok_or_else(|| format!("alias match: index {} out of the list", m.index))?;
    Ok((reference.clone(), m.representation))
}

/// One alias execution to request: the command, who runs it (a squall user) and where it came
/// from, which is where its answer goes.
pub(crate) struct AliasRun {
    pub name: String,
    pub format: String,
    pub command: String,
    /// The squall user it runs as.
    pub user: String,
    /// Every name the person goes by (chat id and name), for the alias's `allow.users`.
    pub known_as: Vec<String>,
    /// Every name the channel goes by, for the alias's `allow.channels`.
    pub channels: Vec<String>,
    pub api_user: Option<String>,
    pub source_channel: Option<String>,
    pub source: Option<String>,
    pub source_context: Option<Value>,
    pub route: String,
}

impl AliasRun {
    fn from_api(caller: Option<&Caller>, req: &AliasExecutionRequest) -> ApiResult<AliasRun> {
        let user = acting_user(caller, None, "api")?;
        Ok(AliasRun {
            name: req.name.clone().unwrap_or_default(),
            format: req.format.clone().unwrap_or_default(),
            command: req.command.clone().unwrap_or_default(),
            known_as: [Some(user.clone()), req.user.clone()]
                .into_iter()
                .flatten()
                .collect(),
            user,
            channels: req.source_channel.iter().cloned().collect(),
            api_user: req.user.clone(),
            source_channel: req.source_channel.clone(),
            source: None,
            source_context: req.source_context.clone().filter(|c| !c.is_null()),
            route: req
                .notification_route
                .clone()
                .or_else(|| req.notification_channel.clone())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "chatops".to_string()),
        })
    }
}

/// st2's `ActionAliasExecutionController._post` for one execution: 201's body
/// `{execution, actionalias, message}`. A refusal by the alias's `allow` is a 403.
pub(crate) async fn run_alias(state: &AppState, run: AliasRun) -> ApiResult<Value> {
    let name = run.name.as_str();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "Alias execution \"name\" is required",
        ));
    }
    let loaded = state.engine.loaded();
    let all = all_aliases(&loaded.catalog);
    let a = all
        .iter()
        .find(|a| a.loaded.alias.name == name || a.loaded.reference == name)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Unable to identify action alias with name \"{name}\"."
            ))
        })?;
    let alias = &a.loaded.alias;
    if !alias.enabled {
        return Err(ApiError::bad_request(format!(
            "Action alias with name \"{name}\" is disabled."
        )));
    }
    let (format, command) = (run.format.as_str(), run.command.as_str());
    if !alias.patterns().iter().any(|(_, r)| *r == format) {
        return Err(ApiError::bad_request(format!(
            "Format string \"{format}\" is not available on the alias \"{}\"",
            alias.name
        )));
    }
    let known_as: Vec<&str> = run.known_as.iter().map(String::as_str).collect();
    let channels: Vec<&str> = run.channels.iter().map(String::as_str).collect();
    if let Some(why) = alias.allow.refuses(&known_as, &channels) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} refused {}: {why}.", a.loaded.reference, run.user),
        ));
    }
    let extracted =
        extract_parameters(format, command).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let action = loaded.catalog.action(&alias.action_ref).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Action with ref \"{}\" not found",
            alias.action_ref
        ))
    })?;
    // st2 casts the strings to the action's types, an array split on commas; the rest of the
    // casting is the engine's, as for any request.
    let mut params = Map::new();
    for (key, value) in extracted {
        let Some(value) = value else { continue };
        let is_array = action
            .meta
            .parameters
            .get(&key)
            .is_some_and(|spec| spec.ty == ParamType::Array);
        let value = if is_array {
            Value::Array(
                value
                    .split(',')
                    .map(|v| Value::String(v.trim().to_string()))
                    .collect(),
            )
        } else {
            Value::String(value)
        };
        params.insert(key, value);
    }
    let mut e = state
        .engine
        .new_execution(&loaded, &alias.action_ref, params)?;
    e.user = Some(run.user.clone());
    // st2's `_get_notify_field`: the answer goes to the route, with who asked and where.
    e.notify = Some(squall_actions::Notify {
        on_complete: Some(squall_actions::NotifySubSection {
            message: None,
            data: [
                ("user".to_string(), json!(run.api_user)),
                ("source_channel".to_string(), json!(run.source_channel)),
                (
                    "source_context".to_string(),
                    run.source_context.clone().unwrap_or_else(|| json!({})),
                ),
            ]
            .into_iter()
            .collect(),
            routes: vec![run.route.clone()],
        }),
        on_success: None,
        on_failure: None,
    });
    e.chat = Some(crate::model::ChatOrigin {
        action_alias_ref: a.loaded.reference.clone(),
        api_user: run.api_user,
        source_channel: run.source_channel,
        source: run.source,
        source_context: run.source_context,
    });
    let e = state.engine.request(e).await?;
    let mut result = json!({
        "execution": execution_json(&loaded, &e),
        "actionalias": alias_json(a),
    });
    if let Some(ack_format) = alias.ack.as_ref().and_then(|ack| ack.format.as_deref()) {
        result["message"] = Value::String(ack_message(ack_format, &result));
    }
    Ok(result)
}

/// The ack's `format` rendered with Jinja over `{execution, actionalias}`; one that cannot be
/// rendered gives st2's message saying so, not an error (the execution is already requested).
fn ack_message(format: &str, context: &Value) -> String {
    let env = squall_rules::template::environment();
    env.render_str(format, context).unwrap_or_else(|e| {
        format!(
            "Cannot render \"format\" in field \"ack\" for alias. {}",
            squall_rules::template::describe(&e)
        )
    })
}
