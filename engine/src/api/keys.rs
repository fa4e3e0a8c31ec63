//! The key-value store and API keys in the HTTP API (st2's `/api/v1/keys` and
//! `/api/v1/apikeys`).
//!
//! A key's 2xx is sent once the write is durable. It must never show a secret's value unless
//! asked to decrypt, nor let a non-admin key see or delete another user's API keys.

use super::*;

#[derive(Deserialize)]
pub(super) struct KeyQuery {
    prefix: Option<String>,
    #[serde(default)]
    decrypt: bool,
    /// st2's scope (`system`, `st2kv.system`, `user`, `st2kv.user`, `all` for lists): squall
    /// keeps the system scope only.
    scope: Option<String>,
    #[serde(default, deserialize_with = "limit")]
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) fn key_json(k: &crate::model::KeyValuePair, decrypted: bool) -> Value {
    json!({
        "name": k.name,
        "value": k.value,
        "secret": k.secret,
        "encrypted": k.secret && !decrypted,
        "expire_timestamp": k.expire_timestamp,
        "updated_at": k.updated_at,
        "scope": "st2kv.system",
    })
}

pub(super) async fn list_keys(
    State(state): State<AppState>,
    Query(q): Query<KeyQuery>,
) -> ApiResult<Response> {
    // st2's `key list` asks for every scope by default; user-scoped keys squall has none of.
    if st2::KeyScope::parse(q.scope.as_deref())? == st2::KeyScope::User {
        return Ok(listed(Vec::new(), q.limit, q.offset));
    }
    let list = state.engine.store.kv_list(q.prefix.as_deref(), q.decrypt)?;
    let list = list.iter().map(|k| key_json(k, q.decrypt)).collect();
    Ok(listed(list, q.limit, q.offset))
}

pub(super) async fn get_key(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<KeyQuery>,
) -> ApiResult<Json<Value>> {
    st2::KeyScope::parse(q.scope.as_deref())?.system_only(&name)?;
    let k = state
        .engine
        .store
        .kv_get(&name, q.decrypt)?
        .ok_or_else(|| ApiError::not_found(format!("no key {name}")))?;
    Ok(Json(key_json(&k, q.decrypt)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyRequest {
    value: Value,
    #[serde(default)]
    ttl: Option<u64>,
    /// Unset: a key that exists keeps whether it is secret (a new one is not).
    #[serde(default)]
    secret: Option<bool>,
    #[serde(default)]
    scope: Option<String>,
    // What `GET /keys/{name}` answers besides, so a pair read can be written back as it is.
    #[serde(default, rename = "name")]
    _name: Option<Value>,
    /// The value is encrypted as squall shows a secret (st2's `encrypted`): it is decrypted
    /// with the store's key, so a secret read can be written back as it is.
    #[serde(default)]
    encrypted: Option<bool>,
    /// As `GET` shows it: without `ttl`, the pair keeps expiring then.
    #[serde(default)]
    expire_timestamp: Option<String>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<Value>,
    // What st2's CLI sends besides (`st2 key set` and `key load`): its id for the pair, the user
    // it runs as, and a description, which squall does not keep.
    #[serde(default, rename = "id")]
    _id: Option<Value>,
    #[serde(default, rename = "user")]
    _user: Option<Value>,
    #[serde(default, rename = "description")]
    _description: Option<Value>,
}

pub(super) async fn put_key(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: KeyRequest = parse_json(&body)?;
    // st2's values are strings: a number or an object is refused rather than guessed at.
    let value = match req.value {
        Value::String(s) if req.encrypted == Some(true) => {
            state.engine.store.kv_decrypt(&name, &s).map_err(|e| {
                ApiError::bad_request(format!(
                    "field 'value' is marked encrypted but this squall's key does not decrypt it: {e}"
                ))
            })?
        }
        Value::String(s) => s,
        other => {
            return Err(ApiError::bad_request(format!(
                "field 'value' must be a string (st2 stores strings; send JSON as its text), not {other}"
            )))
        }
    };
    st2::KeyScope::parse(req.scope.as_deref())?.system_only(&name)?;
    if req.ttl == Some(0) {
        return Err(ApiError::bad_request("ttl must be at least 1 second"));
    }
    let ttl = match (req.ttl, req.expire_timestamp.as_deref()) {
        (Some(ttl), _) => Some(ttl),
        (None, None) => None,
        (None, Some(at)) => {
            let at = chrono::DateTime::parse_from_rfc3339(at).map_err(|e| {
                ApiError::bad_request(format!(
                    "field 'expire_timestamp': '{at}' is not an RFC 3339 time: {e}"
                ))
            })?;
            let left = (at.with_timezone(&Utc) - Utc::now()).num_seconds();
            if left < 1 {
                return Err(ApiError::bad_request(
                    "field 'expire_timestamp' is past: the pair would expire at once",
                ));
            }
            u64::try_from(left).ok()
        }
    };
    // Changing a secret's value without saying `secret` keeps it secret: it is never stored
    // in clear by omission.
    let secret = match req.secret {
        Some(secret) => secret,
        None if req.encrypted == Some(true) => true,
        None => state
            .engine
            .store
            .kv_get(&name, false)?
            .is_some_and(|k| k.secret),
    };
    let k = state
        .engine
        .store
        .kv_set(&name, &value, secret, ttl)
        .map_err(|e| match e {
            // A name or a ttl the store cannot take: the request's fault.
            crate::store::StoreError::Invalid(message) => ApiError::bad_request(message),
            other => other.into(),
        })?;
    state.engine.durable().await?;
    Ok(Json(key_json(&k, false)))
}

pub(super) async fn delete_key(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<KeyQuery>,
) -> ApiResult<StatusCode> {
    st2::KeyScope::parse(q.scope.as_deref())?.system_only(&name)?;
    if state.engine.store.kv_delete(&name)? {
        state.engine.durable().await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no key {name}")))
    }
}

/// Whether `caller` may see and delete the keys of `user`: admin's keys and requests without
/// authentication may, any other key only its own user's.
pub(super) fn may_manage_keys_of(caller: Option<&Caller>, user: &str) -> bool {
    match caller {
        None => true,
        Some(Caller(c)) => c == ADMIN || c == user,
    }
}

pub(super) async fn list_apikeys(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
) -> ApiResult<Json<Value>> {
    let list = state.engine.store.apikey_list()?;
    Ok(Json(Value::Array(
        list.iter()
            .filter(|k| may_manage_keys_of(caller.as_deref(), &k.user))
            .map(|k| json!({"id": k.id, "user": k.user, "created_at": k.created_at, "enabled": k.enabled}))
            .collect(),
    )))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiKeyRequest {
    #[serde(default)]
    user: Option<String>,
}

pub(super) async fn create_apikey(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ApiKeyRequest = if body.is_empty() {
        ApiKeyRequest::default()
    } else {
        parse_json(&body)?
    };
    // With authentication, a key for the caller's own user, or for anyone when the caller is
    // admin; the first key, made from loopback without one, is for the user named, else admin.
    let user = acting_user(caller.as_deref(), req.user, ADMIN)?;
    let (k, clear) = {
        // The first key, let through without one: checked again and made under one lock, so
        // two requests racing for it cannot both make one.
        static FIRST_KEY: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let first_key = (caller.is_none() && state.config.auth)
            .then(|| FIRST_KEY.lock().unwrap_or_else(|p| p.into_inner()));
        if first_key.is_some() && state.engine.store.apikey_count()? > 0 {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "an API key exists now: creating another needs one",
            ));
        }
        state.engine.store.apikey_create(&user)?
    };
    state.engine.durable().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": k.id, "user": k.user, "key": clear, "created_at": k.created_at})),
    )
        .into_response())
}

pub(super) async fn delete_apikey(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if let Some(Caller(user)) = caller.as_deref() {
        let owner = state
            .engine
            .store
            .apikey_list()?
            .into_iter()
            .find(|k| k.id == id)
            .map(|k| k.user);
        match owner {
            Some(owner) if !may_manage_keys_of(caller.as_deref(), &owner) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("the API key is user '{user}''s: it can delete only that user's keys (only {ADMIN}'s keys can delete others')"),
                ))
            }
            Some(_) => {}
            None => return Err(ApiError::not_found(format!("no API key {id}"))),
        }
    }
    if state.engine.store.apikey_delete(&id)? {
        state.engine.durable().await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no API key {id}")))
    }
}
