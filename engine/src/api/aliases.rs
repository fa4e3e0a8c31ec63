//! Action aliases in the HTTP API, on st2's paths and in st2's shapes, for ChatOps clients
//! (hubot, `st2 action-alias`): the list and one alias (`/api/v1/actionalias`), which alias a
//! command matches (`/api/v1/actionalias/match`) and the help strings
//! (`/api/v1/actionalias/help`).
//!
//! Matching is `squall_rules::match_command`, the same as `squall alias match`; these handlers
//! only read what is loaded. They must never run an action, nor change what is loaded.

use squall_rules::{match_command, Alias, AliasFormat, Operator};

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
    let aliases: Vec<Alias> = all.iter().map(|a| a.loaded.alias.clone()).collect();
    let m =
        match_command(&aliases, &req.command).map_err(|e| ApiError::bad_request(e.to_string()))?;
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
