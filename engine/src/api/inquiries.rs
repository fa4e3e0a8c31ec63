//! st2's inquiries API: `GET /api/v1/inquiries` (those waiting for an answer),
//! `GET /api/v1/inquiries/{id}` and `PUT /api/v1/inquiries/{id}` with `{"response": {...}}`
//! (what `st2 inquiry respond` sends), answered as st2 answers: `{id, response}`, 400 for an
//! inquiry that is answered, timed out or given a response its schema refuses, 403 for a user
//! it does not allow.
//!
//! The answer's 200 is sent once it is durable; the engine decides everything else
//! (`pipeline::inquiries`).

use super::*;

#[derive(Deserialize)]
pub(super) struct InquiryQuery {
    #[serde(default, deserialize_with = "limit")]
    limit: Option<usize>,
    offset: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InquiryResponse {
    /// st2's CLI repeats the inquiry's id in the body.
    #[serde(default)]
    id: Option<String>,
    response: Value,
}

pub(super) async fn list_inquiries(
    State(state): State<AppState>,
    Query(q): Query<InquiryQuery>,
) -> ApiResult<Response> {
    let engine = state.engine.clone();
    let list = tokio::task::spawn_blocking(move || engine.inquiries())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let list = list.iter().map(crate::pipeline::inquiry_json).collect();
    Ok(listed(list, q.limit, q.offset))
}

pub(super) async fn get_inquiry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = state.engine.inquiry(&id)?;
    Ok(Json(crate::pipeline::inquiry_json(&e)))
}

pub(super) async fn respond_inquiry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: InquiryResponse = executions::parse_json(&body)?;
    if let Some(other) = req.id.as_deref().filter(|other| *other != id) {
        return Err(ApiError::bad_request(format!(
            "the body is for inquiry {other}, the path for {id}"
        )));
    }
    let user = acting_user(caller.as_deref(), None, "api")?;
    let engine = state.engine.clone();
    let answered = id.clone();
    let response =
        tokio::task::spawn_blocking(move || engine.respond_inquiry(&answered, req.response, &user))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(json!({"id": id, "response": response})))
}
